//! Rate limits (docs/protocol.md §9) as GCRA, the generic cell rate algorithm.
//!
//! Each key keeps one number in the store, its theoretical arrival time
//! (TAT). A limit of `n` per `window` admits a burst of `n`, then one request
//! every `window / n`, and always knows exactly when the next one will be
//! admitted (the `Retry-After`). The decision is this pure function; the
//! store reads and writes the TAT in the same transaction as the state change
//! it guards, so every replica shares the limit.

use std::net::IpAddr;
use std::time::Duration;

use crate::time::Timestamp;

/// One limit to check: at most `limit` requests per `window` for `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub key: String,
    pub limit: u32,
    pub window: Duration,
}

/// A request refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
}

impl RateLimit {
    pub fn per_hour(key: impl Into<String>, limit: u32) -> Self {
        RateLimit {
            key: key.into(),
            limit,
            window: Duration::from_secs(3600),
        }
    }

    pub fn per_day(key: impl Into<String>, limit: u32) -> Self {
        RateLimit {
            key: key.into(),
            limit,
            window: Duration::from_secs(86_400),
        }
    }

    /// Decides one request. `tat` is the stored theoretical arrival time
    /// (milliseconds), if any. Returns the new TAT to store, or the refusal.
    pub fn decide(&self, tat: Option<i64>, now: Timestamp) -> Result<i64, RateLimited> {
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        if self.limit == 0 {
            return Err(RateLimited {
                retry_after: self.window,
            });
        }
        let interval = (window / i64::from(self.limit)).max(1);
        let now = now.as_millis();
        let start = tat.unwrap_or(now).max(now);
        let new_tat = start.saturating_add(interval);
        if new_tat - now > window {
            let wait = new_tat - window - now;
            Err(RateLimited {
                retry_after: Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
            })
        } else {
            Ok(new_tat)
        }
    }
}

/// The part of a client address that a limit counts: the address itself for
/// IPv4, the /64 network for IPv6 (one subscriber usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limit: &RateLimit, tat: &mut Option<i64>, now: Timestamp) -> Result<(), RateLimited> {
        limit.decide(*tat, now).map(|t| *tat = Some(t))
    }

    #[test]
    fn admits_a_burst_of_the_limit_then_refuses() {
        let l = RateLimit::per_hour("k", 5);
        let now = Timestamp::from_secs(1_000_000);
        let mut tat = None;
        for _ in 0..5 {
            assert!(run(&l, &mut tat, now).is_ok());
        }
        let refused = run(&l, &mut tat, now).err();
        // The next slot opens one interval (12 minutes) later.
        assert_eq!(
            refused.map(|r| r.retry_after),
            Some(Duration::from_secs(720))
        );
        assert!(run(&l, &mut tat, now.plus(Duration::from_secs(719))).is_err());
        assert!(run(&l, &mut tat, now.plus(Duration::from_secs(720))).is_ok());
    }

    #[test]
    fn refills_completely_after_a_window() {
        let l = RateLimit::per_hour("k", 3);
        let now = Timestamp::from_secs(1_000_000);
        let mut tat = None;
        for _ in 0..3 {
            assert!(run(&l, &mut tat, now).is_ok());
        }
        let later = now.plus(Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(run(&l, &mut tat, later).is_ok());
        }
        assert!(run(&l, &mut tat, later).is_err());
    }

    #[test]
    fn zero_refuses_everything() {
        let l = RateLimit::per_hour("k", 0);
        assert!(l.decide(None, Timestamp::from_secs(5)).is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:bbbb::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(client_key(a), client_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(client_key(mapped), "192.0.2.7");
    }
}
