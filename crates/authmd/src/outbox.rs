//! The durable mail queue: delivering the outbox.
//!
//! A claim email is written to the `mail_outbox` table in the same
//! transaction as the claim attempt it belongs to (the store's
//! `insert_attempt`), so the request that committed the attempt has also
//! committed its message: a crash between the commit and the SMTP server
//! loses nothing. Every replica runs one [`Outbox`] task that takes due
//! messages in batches (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: the
//! single writer), each taken message moved forward by [`LEASE`] so no
//! other replica takes it meanwhile, and sends them through the configured
//! [`Mailer`]. The task wakes at once when this replica commits a message
//! ([`Outbox::wake`]) and otherwise looks every [`POLL`].
//!
//! - Accepted by the SMTP server: marked `sent` and its body cleared at
//!   once. A message is sent again only if that acceptance is never
//!   recorded: the process dies between the server's answer and the
//!   update (the lease then ends and the message is taken again), or the
//!   connection drops after the message was transmitted and before the
//!   server answered (lettre reports a failure, and it is retried): the
//!   recipient may then get it twice, never zero times.
//! - Refused for good (an address the message cannot be built for): `failed`.
//! - Any other failure: retried with backoff (1 s, 2 s, 4 s … at most 60 s
//!   apart) until `mail.retry_for` has passed since it was written, or
//!   until the next try would come after its link expired: then `failed`.
//! - The sweep fails what is still pending when its link expires, so the
//!   body holding the link is never kept longer than the link is valid,
//!   and deletes `sent` and `failed` rows (which no longer hold a body)
//!   after [`DONE_RETENTION`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::mail::{MailError, Mailer};
use crate::store::{MailOutcome, OutboxMail, Store};
use crate::time::Timestamp;

/// How long a taken message is left to the replica that took it. Longer
/// than a delivery can take (the SMTP client gives up after 15 s).
pub const LEASE: Duration = Duration::from_secs(60);
/// How often each replica looks for due messages without being woken.
pub const POLL: Duration = Duration::from_secs(1);
/// Sent and failed messages (without their bodies) are kept this long.
pub const DONE_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Messages taken at once, and delivered concurrently.
const BATCH: u32 = 16;
/// The longest wait between two tries of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long the outcome of a delivery is retried when the database cannot
/// record it (within the lease, so the message is not taken again meanwhile).
const RECORD_FOR: Duration = Duration::from_secs(30);

/// This replica's delivery counters.
#[derive(Debug, Default)]
pub struct OutboxStats {
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub failed: AtomicU64,
}

/// This replica's delivery task; it stops when the handle is dropped.
#[derive(Debug)]
pub struct Outbox {
    wake: Arc<Notify>,
    stats: Arc<OutboxStats>,
    task: tokio::task::AbortHandle,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Outbox {
    /// Starts delivering (on the current Tokio runtime).
    pub fn start(store: Arc<dyn Store>, mailer: Arc<dyn Mailer>, retry_for: Duration) -> Outbox {
        let wake = Arc::new(Notify::new());
        let stats = Arc::new(OutboxStats::default());
        let task = tokio::spawn(run(
            store,
            mailer,
            retry_for,
            Arc::clone(&wake),
            Arc::clone(&stats),
        ))
        .abort_handle();
        Outbox { wake, stats, task }
    }

    /// A message was committed: look now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn stats(&self) -> &OutboxStats {
        &self.stats
    }
}

async fn run(
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    retry_for: Duration,
    wake: Arc<Notify>,
    stats: Arc<OutboxStats>,
) {
    let mut failing = false;
    loop {
        let now = Timestamp::now();
        match store.take_mail(now, now.plus(LEASE), BATCH).await {
            Ok(batch) => {
                failing = false;
                let full = batch.len() == BATCH as usize;
                let deliveries = batch
                    .into_iter()
                    .map(|m| deliver(store.as_ref(), mailer.as_ref(), m, retry_for, &stats));
                futures_util::future::join_all(deliveries).await;
                if full {
                    continue;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the mail outbox; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The wait before try `attempts + 1`.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

async fn deliver(
    store: &dyn Store,
    mailer: &dyn Mailer,
    m: OutboxMail,
    retry_for: Duration,
    stats: &OutboxStats,
) {
    let result = mailer.send(&m.email).await;
    let now = Timestamp::now();
    let outcome = match result {
        Ok(()) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            MailOutcome::Sent
        }
        // An address the message cannot even be built for will not get better.
        Err(e @ (MailError::Address(_) | MailError::Build(_))) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id = %m.id, to = %m.email.to, error = %e, "mail not sent");
            MailOutcome::Failed {
                error: e.to_string(),
            }
        }
        Err(e) => {
            let at = now.plus(backoff(m.attempts));
            let deadline = m.created_at.plus(retry_for);
            if at >= m.expires_at || at > deadline {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(id = %m.id, to = %m.email.to, error = %e, attempts = m.attempts,
                    "mail given up (its link expires, or mail.retry_for has passed)");
                MailOutcome::Failed {
                    error: e.to_string(),
                }
            } else {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %m.id, to = %m.email.to, error = %e, attempts = m.attempts,
                    "mail delivery failed; will retry");
                MailOutcome::Retry {
                    at,
                    error: e.to_string(),
                }
            }
        }
    };
    // The outcome must be recorded: a `sent` that is lost means the
    // message goes out again when the lease ends.
    let started = tokio::time::Instant::now();
    loop {
        match store.mail_done(&m.id, now, outcome.clone()).await {
            Ok(()) => return,
            Err(e) if started.elapsed() < RECORD_FOR => {
                tracing::warn!(id = %m.id, error = %e, "cannot record a delivery; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(id = %m.id, error = %e,
                    "cannot record a delivery; the message will be tried again when its lease ends");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
