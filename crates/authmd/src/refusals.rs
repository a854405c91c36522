//! Refused registrations, counted instead of written one by one.
//!
//! Anyone can send `POST /agent/auth` a malformed body, or keep asking
//! after a `429`; if each refusal were an audit row, a flood of garbage
//! would fill the disk and queue behind the single SQLite writer, ahead of
//! claims and revocations. So a refusal is counted in memory, per client
//! network (the address for IPv4, the /64 for IPv6, as rate limits count),
//! code and flow, and each interval ([`FLUSH_INTERVAL`]) the counts are
//! written in one transaction as one `registration.rejected` event per
//! group, with `count`, `network`, `first_at` and `last_at`. An interval
//! holds at most [`MAX_GROUPS`] networks; refusals from further networks
//! are counted under `network: "other"`. The cost of a flood is therefore
//! at most `MAX_GROUPS` rows (plus one per code and flow) per interval and
//! replica, whatever its rate or spread.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::rate_limit::client_key;
use crate::time::Timestamp;

/// How often counted refusals are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);
/// Client networks counted apart per interval.
pub const MAX_GROUPS: usize = 100;
/// The network of refusals beyond [`MAX_GROUPS`] networks.
pub const OTHER_NETWORK: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Group {
    network: String,
    code: &'static str,
    flow: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Tally {
    count: u64,
    first_at: Timestamp,
    last_at: Timestamp,
    /// The first refused request's address and user agent.
    meta: RequestMeta,
}

/// The refusals counted since the last flush.
#[derive(Debug, Default)]
pub struct Refusals {
    groups: Mutex<HashMap<Group, Tally>>,
}

/// Counts taken out for writing; put back if the write fails.
#[derive(Debug)]
pub struct Taken(Vec<(Group, Tally)>);

impl Refusals {
    /// Counts one refusal.
    pub fn count(
        &self,
        meta: &RequestMeta,
        code: &'static str,
        flow: Option<&'static str>,
        now: Timestamp,
    ) {
        let network = meta.ip.map_or_else(|| "unknown".to_owned(), client_key);
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut group = Group {
            network,
            code,
            flow,
        };
        let distinct = groups.len() >= MAX_GROUPS && !groups.contains_key(&group);
        let mut meta = meta.clone();
        // One event stands for many requests: it names none of them.
        meta.request_id = None;
        if distinct {
            group.network = OTHER_NETWORK.to_owned();
            meta = RequestMeta::default();
        }
        groups
            .entry(group)
            .and_modify(|t| {
                t.count += 1;
                t.last_at = t.last_at.max(now);
            })
            .or_insert(Tally {
                count: 1,
                first_at: now,
                last_at: now,
                meta,
            });
    }

    /// Takes every count out, leaving none.
    pub fn take(&self) -> Taken {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        Taken(std::mem::take(&mut *groups).into_iter().collect())
    }

    /// Puts counts back (their write failed), merged with newer ones.
    pub fn restore(&self, taken: Taken) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for (group, tally) in taken.0 {
            groups
                .entry(group)
                .and_modify(|t| {
                    t.count += tally.count;
                    t.first_at = t.first_at.min(tally.first_at);
                    t.last_at = t.last_at.max(tally.last_at);
                })
                .or_insert(tally);
        }
    }
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One `registration.rejected` per group, at its last refusal.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.0
            .iter()
            .map(|(g, t)| {
                let mut e = AuditEvent::new(EventKind::RegistrationRejected, t.last_at, &t.meta)
                    .with("code", g.code)
                    .with("count", t.count)
                    .with("network", g.network.as_str())
                    .with("first_at", t.first_at.to_rfc3339())
                    .with("last_at", t.last_at.to_rfc3339());
                if let Some(flow) = g.flow {
                    e = e.with("flow", flow);
                }
                e
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_grouped_and_bounded() {
        let r = Refusals::default();
        let now = Timestamp::from_secs(1_800_000_000);
        let meta = |i: u32| RequestMeta::new(Some([10, 0, (i >> 8) as u8, i as u8].into()), None);
        for i in 0..(MAX_GROUPS as u32 + 50) {
            r.count(&meta(i), "invalid_request", None, now);
            r.count(
                &meta(i),
                "invalid_request",
                None,
                now.plus(Duration::from_secs(5)),
            );
        }
        let taken = r.take();
        let events = taken.events();
        assert_eq!(events.len(), MAX_GROUPS + 1);
        let other = events
            .iter()
            .find(|e| e.data["network"] == OTHER_NETWORK)
            .map(|e| e.data["count"].clone());
        assert_eq!(other, Some(100.into()));
        assert!(r.take().is_empty());
        r.count(&meta(1), "invalid_request", None, now);
        r.restore(taken);
        assert_eq!(r.take().events().len(), MAX_GROUPS + 1);
    }
}
