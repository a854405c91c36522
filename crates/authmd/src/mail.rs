//! Outgoing mail: one small trait, where messages go, and a queue that
//! retries.
//!
//! [`SmtpMailer`] speaks SMTP through lettre (`smtp://` plain for loopback,
//! `?tls=required` for STARTTLS, `smtps://` for implicit TLS). With no
//! `[mail] smtp_url`, messages are written to the outbox directory, one
//! `.eml` file per message (open it with any mail client), and the path is
//! logged. [`MemoryMailer`] keeps them for tests. [`MailQueue`] sits in
//! front of any of them: a request only queues its message, and delivery is
//! retried with backoff for `mail.retry_for`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lettre::AsyncTransport;
use tokio::sync::{Semaphore, mpsc};

/// A message to one recipient, with a plain-text and an HTML part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot build the message: {0}")]
    Build(String),
    #[error("cannot deliver the message: {0}")]
    Delivery(String),
}

/// Sends mail. Implementations must not log message bodies (they carry
/// single-use links).
#[async_trait]
pub trait Mailer: Send + Sync + std::fmt::Debug + 'static {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// Builds the RFC 5322 message (multipart/alternative, text then HTML).
pub fn build_message(from: &str, email: &Email) -> Result<lettre::Message, MailError> {
    use lettre::message::{Mailbox, MultiPart};
    let from: Mailbox = from
        .parse()
        .map_err(|_| MailError::Address(from.to_owned()))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|_| MailError::Address(email.to.clone()))?;
    lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| MailError::Build(e.to_string()))
}

/// Sends through an SMTP server.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URL: it may carry credentials.
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// `url`: `smtp://host:port`, `smtp://host:port?tls=required`,
    /// `smtps://host:port`; credentials may be in the URL or given here.
    pub fn new(
        url: &str,
        credentials: Option<(String, String)>,
        from: impl Into<String>,
    ) -> Result<SmtpMailer, MailError> {
        let mut builder = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|_| MailError::Delivery("invalid mail.smtp_url".into()))?
            .timeout(Some(Duration::from_secs(15)));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(
                lettre::transport::smtp::authentication::Credentials::new(user, password),
            );
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from: from.into(),
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Delivery(e.to_string()))
    }
}

/// Counters of a [`MailQueue`].
#[derive(Debug, Default)]
pub struct MailStats {
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub given_up: AtomicU64,
    /// Messages waiting for room in a full queue.
    pub waiting: AtomicU64,
}

/// Accepts messages at once and delivers them in the background, retrying
/// failures with exponential backoff (1 s, 2 s, 4 s … at most 60 s apart)
/// for `retry_for`. At most 16 deliveries run at a time; at most 10 000
/// messages wait in the queue, and when it is full at most 1 000 more wait
/// (each up to `retry_for`) for room in it.
///
/// Submitting never fails: a message is queued after the transaction that
/// wants it committed, and the request gets its committed result whatever
/// happens to the mail (a message that cannot be kept is logged).
#[derive(Debug, Clone)]
pub struct MailQueue {
    tx: mpsc::Sender<Email>,
    stats: Arc<MailStats>,
    retry_for: Duration,
}

const QUEUE_CAPACITY: usize = 10_000;
const CONCURRENT_DELIVERIES: usize = 16;
/// Messages waiting for room in a full queue.
const MAX_WAITING: u64 = 1_000;

impl MailQueue {
    /// Starts the delivery task (on the current Tokio runtime). It stops
    /// when every clone of the queue is dropped.
    pub fn start(mailer: Arc<dyn Mailer>, retry_for: Duration) -> MailQueue {
        let (tx, mut rx) = mpsc::channel::<Email>(QUEUE_CAPACITY);
        let stats = Arc::new(MailStats::default());
        let worker_stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
            while let Some(email) = rx.recv().await {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let (mailer, stats) = (Arc::clone(&mailer), Arc::clone(&worker_stats));
                tokio::spawn(async move {
                    deliver(mailer.as_ref(), &email, retry_for, &stats).await;
                    drop(slot);
                });
            }
        });
        MailQueue {
            tx,
            stats,
            retry_for,
        }
    }

    /// Queues a message. If the queue is full, the message waits for room
    /// (up to `retry_for`, at most [`MAX_WAITING`] of them); a message that
    /// cannot be kept is counted as given up and logged.
    pub fn submit(&self, email: Email) {
        let email = match self.tx.try_send(email) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Full(email)) => email,
            Err(mpsc::error::TrySendError::Closed(email)) => {
                self.give_up(&email, "the mail queue has stopped");
                return;
            }
        };
        let waiting = self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if waiting < MAX_WAITING => runtime,
            _ => {
                self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
                self.give_up(&email, "the mail queue is full");
                return;
            }
        };
        tracing::warn!(to = %email.to, "the mail queue is full; the message waits for room");
        let queue = self.clone();
        runtime.spawn(async move {
            match tokio::time::timeout(queue.retry_for, queue.tx.send(email)).await {
                Ok(Ok(())) => {
                    queue.stats.queued.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(mpsc::error::SendError(email))) => {
                    queue.give_up(&email, "the mail queue has stopped");
                }
                Err(_) => {
                    queue.stats.given_up.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("mail given up: the queue stayed full for mail.retry_for");
                }
            }
            queue.stats.waiting.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn give_up(&self, email: &Email, why: &str) {
        self.stats.given_up.fetch_add(1, Ordering::Relaxed);
        tracing::error!(to = %email.to, reason = why, "mail not sent");
    }

    pub fn stats(&self) -> &MailStats {
        &self.stats
    }
}

async fn deliver(mailer: &dyn Mailer, email: &Email, retry_for: Duration, stats: &MailStats) {
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_secs(1);
    loop {
        match mailer.send(email).await {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // An address the message cannot even be built for will not get better.
            Err(e @ (MailError::Address(_) | MailError::Build(_))) => {
                stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(to = %email.to, error = %e, "mail not sent");
                return;
            }
            Err(e) if started.elapsed() + wait > retry_for => {
                stats.given_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(to = %email.to, error = %e, "mail given up after retries");
                return;
            }
            Err(e) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(to = %email.to, error = %e, retry_in = ?wait, "mail delivery failed; will retry");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Writes each message to `<dir>/<time>-<random>.eml`.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: String,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>, from: impl Into<String>) -> Self {
        OutboxMailer {
            dir: dir.into(),
            from: from.into(),
        }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| MailError::Delivery(format!("{}: {e}", self.dir.display())))?;
        let name = format!(
            "{}-{}.eml",
            crate::time::Timestamp::now().as_millis(),
            crate::token::new_id("")
        );
        let path = self.dir.join(name);
        tokio::fs::write(&path, message.formatted())
            .await
            .map_err(|e| MailError::Delivery(format!("{}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), to = %email.to, "mail written to the outbox");
        Ok(())
    }
}

/// Keeps messages in memory, for tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryMailer {
    sent: Arc<Mutex<Vec<Email>>>,
}

impl MemoryMailer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        build_message("authmd@localhost", email)?;
        if let Ok(mut v) = self.sent.lock() {
            v.push(email.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            to: "user@example.com".into(),
            subject: "Hello".into(),
            text: "plain body".into(),
            html: "<p>html body</p>".into(),
        }
    }

    #[tokio::test]
    async fn outbox_writes_one_eml_per_message() {
        let dir = std::env::temp_dir().join(format!("authmd-outbox-{}", crate::token::new_id("")));
        let m = OutboxMailer::new(&dir, "authmd@example.com");
        m.send(&email()).await.unwrap_or_else(|e| panic!("{e}"));
        m.send(&email()).await.unwrap_or_else(|e| panic!("{e}"));
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .collect();
        assert_eq!(files.len(), 2);
        let text = std::fs::read_to_string(files[0].path()).unwrap_or_default();
        assert!(text.contains("To: user@example.com"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("plain body"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Fails the first `n` sends.
    #[derive(Debug)]
    struct Flaky {
        failures: std::sync::atomic::AtomicUsize,
        inner: MemoryMailer,
    }

    #[async_trait]
    impl Mailer for Flaky {
        async fn send(&self, email: &Email) -> Result<(), MailError> {
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(MailError::Delivery("try later".into()));
            }
            self.inner.send(email).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_retries_until_delivered_or_given_up() {
        let inner = MemoryMailer::new();
        let flaky = Arc::new(Flaky {
            failures: std::sync::atomic::AtomicUsize::new(3),
            inner: inner.clone(),
        });
        let queue = MailQueue::start(flaky, Duration::from_secs(60));
        queue.submit(email());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(inner.sent().len(), 1);
        assert_eq!(queue.stats().retries.load(Ordering::Relaxed), 3);

        let never = Arc::new(Flaky {
            failures: std::sync::atomic::AtomicUsize::new(usize::MAX),
            inner: MemoryMailer::new(),
        });
        let queue = MailQueue::start(never, Duration::from_secs(10));
        queue.submit(email());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(queue.stats().given_up.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn bad_addresses_are_refused() {
        let mut e = email();
        e.to = "not an address".into();
        assert!(matches!(
            MemoryMailer::new().send(&e).await,
            Err(MailError::Address(_))
        ));
    }
}
