//! `authmd audit`: the audit trail, read directly from the configured
//! database (the twin of the admin API's `/admin/events…`).

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use authmd::admin::{Admin, EventQuery};
use authmd::audit::AuditRecord;
use authmd::{Config, Timestamp};
use clap::{Args, Subcommand};
use futures_util::StreamExt;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print events as JSON lines, oldest first (a page at a time).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only events after this id (the cursor of a previous listing).
        #[arg(long)]
        after: Option<i64>,
        /// At most this many events; 0 = all.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Print every matching event as JSON lines: ship the trail to a SIEM.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only events after this id (resume an earlier export).
        #[arg(long)]
        after: Option<i64>,
    },
    /// Print the events of the last 10 minutes (or since --since), and with
    /// --follow every new one as it is recorded (by any server sharing the
    /// database).
    Tail {
        #[command(flatten)]
        filter: FilterArgs,
        /// Keep printing new events until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
}

/// Which events.
#[derive(Args)]
pub struct FilterArgs {
    /// Only these events (repeatable), e.g. registration.revoked.
    #[arg(long = "event")]
    events: Vec<String>,
    /// Only events of this registration.
    #[arg(long)]
    registration: Option<String>,
    /// Only events of this user.
    #[arg(long)]
    user: Option<String>,
    /// Only events about this provider (its issuer).
    #[arg(long)]
    provider: Option<String>,
    /// Only events from this client IP.
    #[arg(long)]
    ip: Option<String>,
    /// From this time: RFC 3339, or a duration ago such as 1h.
    #[arg(long)]
    since: Option<String>,
    /// Before this time: RFC 3339, or a duration ago.
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn query(self, now: Timestamp) -> anyhow::Result<EventQuery> {
        Ok(EventQuery {
            event: self.events,
            registration: self.registration,
            user: self.user,
            provider: self.provider,
            ip: self.ip,
            since: self
                .since
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|s| parse_time(s, now))
                .transpose()?,
            after: None,
            limit: None,
        })
    }
}

fn line(out: &mut impl Write, record: &AuditRecord) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")?;
    Ok(())
}

pub async fn run(cmd: AuditCommand, config: Config) -> anyhow::Result<()> {
    let admin = Admin::new(crate::admin::open(&config).await?);
    let now = Timestamp::now();
    let fail = |e: authmd::admin::AdminError| anyhow::anyhow!("{e}");
    match cmd {
        AuditCommand::List {
            filter,
            after,
            limit,
        } => {
            let mut query = filter.query(now)?;
            query.after = after;
            let mut remaining = if limit == 0 {
                u64::MAX
            } else {
                u64::from(limit)
            };
            let mut out = std::io::stdout().lock();
            while remaining > 0 {
                query.limit = Some(u32::try_from(remaining.min(1000)).unwrap_or(1000));
                let page = admin.events(&query).await.map_err(fail)?;
                for record in &page.items {
                    line(&mut out, record)?;
                }
                remaining = remaining.saturating_sub(page.items.len() as u64);
                match page.next {
                    Some(next) => query.after = next.parse().ok(),
                    None => break,
                }
            }
            Ok(())
        }
        AuditCommand::Export { filter, after } => {
            let mut query = filter.query(now)?;
            query.after = after;
            let mut records = Box::pin(admin.export(&query).map_err(fail)?);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            while let Some(record) = records.next().await {
                line(&mut out, &record.context("cannot read the audit trail")?)?;
            }
            out.flush()?;
            Ok(())
        }
        AuditCommand::Tail { filter, follow } => {
            let mut query = filter.query(now)?;
            let since = query
                .since
                .unwrap_or_else(|| now.minus(Duration::from_secs(600)));
            // Where following starts, taken before the recent events are
            // listed: an event recorded in between is shown once.
            let position = admin.tail_position().await.map_err(fail)?;
            query.since = Some(since);
            let mut shown = HashSet::new();
            {
                let mut out = std::io::stdout().lock();
                let mut page_query = query.clone();
                loop {
                    let page = admin.events(&page_query).await.map_err(fail)?;
                    for record in &page.items {
                        shown.insert(record.id);
                        line(&mut out, record)?;
                    }
                    match page.next {
                        Some(next) => page_query.after = next.parse().ok(),
                        None => break,
                    }
                }
                out.flush()?;
            }
            if !follow {
                return Ok(());
            }
            query.since = None;
            let mut tail = Box::pin(admin.tail(position, &query).map_err(fail)?);
            while let Some(item) = tail.next().await {
                match item {
                    Ok((_, record)) => {
                        if shown.remove(&record.id) {
                            continue;
                        }
                        let mut out = std::io::stdout().lock();
                        line(&mut out, &record)?;
                        out.flush()?;
                    }
                    Err(e) => {
                        eprintln!("authmd: cannot read the audit trail ({e}); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            Ok(())
        }
    }
}

/// RFC 3339, or a duration before `now` (`90m`, `24h`).
pub fn parse_time(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let ago: Duration = authmd::config::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("{s:?} is neither an RFC 3339 time nor a duration: {e}"))?;
    Ok(now.minus(ago))
}
