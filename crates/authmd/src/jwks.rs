//! Provider keys: fetching, caching, rotation (docs/protocol.md §12).
//!
//! Each trusted provider has a [`KeySource`]. The HTTP one fetches the
//! provider's configured `jwks_uri` through [`Outbound`] (never a URL from a
//! token header), keeps the vetted keys for the `Cache-Control: max-age`
//! clamped to `[jwks.cache_min, jwks.cache_max]`, and on an unknown `kid`
//! refetches once, at most once per `jwks.refetch_interval` (the first fetch
//! of a provider does not count). A provider that is down does not take the
//! service down: the keys it published last keep working, failed fetches
//! are logged and counted, and retried at most once per interval. But only
//! up to `jwks.cache_max` after they were fetched: a key the provider has
//! rotated out (perhaps compromised) must not verify forever because an
//! attacker also keeps the provider's endpoint unreachable. Past that the
//! provider's assertions are refused (`invalid_signature`, the code of §3.3
//! step 4 "key found in the provider's JWKS", with a message naming the
//! cause) until a fetch succeeds again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use authmd_jose::VerifyingKey;
use authmd_jose::jwk::KeySet;
use tokio::sync::Mutex;

use crate::config::JwksConfig;
use crate::outbound::{FetchError, Outbound};

/// Where the keys of one provider come from.
#[async_trait]
pub trait KeySource: Send + Sync + std::fmt::Debug + 'static {
    /// The vetted key with this `kid`, or `None` if the provider has none.
    async fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>>;

    /// Counters, for operators and tests.
    fn stats(&self) -> KeyStats {
        KeyStats::default()
    }

    /// Whether the keys held are too old to use (not refreshed for longer
    /// than `jwks.cache_max`): why [`KeySource::key`] found nothing.
    fn expired(&self) -> bool {
        false
    }
}

/// Fixed keys (tests, and providers whose keys are pinned).
#[derive(Debug, Default)]
pub struct StaticKeySource {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl StaticKeySource {
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        StaticKeySource {
            keys: keys
                .into_iter()
                .map(|k| (k.kid.clone(), Arc::new(k)))
                .collect(),
        }
    }
}

#[async_trait]
impl KeySource for StaticKeySource {
    async fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.get(kid).cloned()
    }
}

/// What a key source has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyStats {
    pub fetches: u64,
    pub failures: u64,
    pub unknown_kid_refetches: u64,
    pub keys: u64,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<VerifyingKey>>,
    /// Until when the keys are fresh; `None` before the first success.
    fresh_until: Option<Instant>,
    /// When the keys were last fetched successfully.
    fetched_at: Option<Instant>,
    /// Whether the refusal of keys older than `cache_max` was logged since.
    expiry_logged: bool,
    /// When the last fetch was attempted (success or not).
    last_attempt: Option<Instant>,
    /// When the last refetch for an unknown `kid` happened.
    last_unknown_refetch: Option<Instant>,
}

/// The keys of one provider, fetched over HTTP.
pub struct HttpKeySource {
    issuer: String,
    url: String,
    settings: JwksConfig,
    outbound: Outbound,
    state: RwLock<State>,
    /// One fetch at a time per provider (no stampede).
    fetching: Mutex<()>,
    fetches: AtomicU64,
    failures: AtomicU64,
    unknown_refetches: AtomicU64,
}

impl std::fmt::Debug for HttpKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpKeySource")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl HttpKeySource {
    pub fn new(issuer: &str, url: &str, settings: JwksConfig, outbound: Outbound) -> Self {
        HttpKeySource {
            issuer: issuer.to_owned(),
            url: url.to_owned(),
            settings,
            outbound,
            state: RwLock::new(State::default()),
            fetching: Mutex::new(()),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            unknown_refetches: AtomicU64::new(0),
        }
    }

    fn lookup(&self, kid: &str) -> (Option<Arc<VerifyingKey>>, bool) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let fresh = state.fresh_until.is_some_and(|t| Instant::now() < t);
        (state.keys.get(kid).cloned(), fresh)
    }

    /// Whether a fetch may start now. A refresh of stale keys waits
    /// `refetch_interval` after the previous attempt (so a provider that is
    /// down is asked once per interval); a refetch for an unknown `kid` waits
    /// `refetch_interval` after the previous such refetch. The first fetch of
    /// a provider is always allowed and does not count.
    fn may_fetch(&self, unknown_kid: bool) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let interval = self.settings.refetch_interval.get();
        let long_ago = |t: Option<Instant>| t.is_none_or(|t| t.elapsed() >= interval);
        if state.last_attempt.is_none() {
            return true;
        }
        if unknown_kid {
            long_ago(state.last_unknown_refetch)
        } else {
            long_ago(state.last_attempt)
        }
    }

    /// Whether the keys held are fresh.
    fn fresh(&self) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.fresh_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether the keys held were fetched longer than `cache_max` ago.
    fn too_old(&self) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .fetched_at
            .is_some_and(|t| t.elapsed() > self.settings.cache_max.get())
    }

    /// Logs (once until the next successful fetch) that the keys are no
    /// longer used.
    fn log_expiry(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !state.expiry_logged {
            state.expiry_logged = true;
            tracing::error!(issuer = %self.issuer, url = %self.url,
                age = ?state.fetched_at.map(|t| t.elapsed()),
                "provider keys could not be refreshed for longer than jwks.cache_max; \
                 its assertions and logout tokens are refused until a fetch succeeds");
        }
    }

    async fn fetch(&self, unknown_kid: bool) {
        let _one = self.fetching.lock().await;
        // Another task may have fetched while we waited.
        if !self.may_fetch(unknown_kid) {
            return;
        }
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let first = state.last_attempt.is_none();
            state.last_attempt = Some(Instant::now());
            if unknown_kid && !first {
                state.last_unknown_refetch = Some(Instant::now());
                self.unknown_refetches.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let downloaded = self.download().await;
        crate::metrics::jwks_fetch(&self.issuer, downloaded.is_ok());
        match downloaded {
            Ok((set, ttl)) => {
                for (kid, why) in &set.skipped {
                    tracing::warn!(issuer = %self.issuer, kid = ?kid, reason = %why, "provider key skipped");
                }
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                state.keys = set
                    .keys
                    .into_iter()
                    .map(|k| (k.kid.clone(), Arc::new(k)))
                    .collect();
                state.fresh_until = Some(Instant::now() + ttl);
                state.fetched_at = Some(Instant::now());
                state.expiry_logged = false;
                tracing::info!(issuer = %self.issuer, keys = state.keys.len(), ttl = ?ttl, "provider keys fetched");
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                // Keep the known keys; mark them stale so the next fetch
                // waits for the interval.
                if state.fresh_until.is_some() {
                    state.fresh_until = Some(Instant::now());
                }
                tracing::warn!(issuer = %self.issuer, url = %self.url, error = %e,
                    known_keys = state.keys.len(), "cannot fetch provider keys; known keys stay in use");
            }
        }
    }

    async fn download(&self) -> Result<(KeySet, Duration), String> {
        let fetched = self
            .outbound
            .get(&self.url, self.settings.max_bytes)
            .await
            .map_err(|e: FetchError| e.to_string())?;
        let set = KeySet::parse(&fetched.body)?;
        let ttl = cache_ttl(
            fetched.cache_control.as_deref(),
            self.settings.cache_min.get(),
            self.settings.cache_max.get(),
        );
        Ok((set, ttl))
    }
}

#[async_trait]
impl KeySource for HttpKeySource {
    async fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let (key, fresh) = self.lookup(kid);
        if fresh && key.is_some() {
            return key;
        }
        // Stale keys are refreshed; an unknown kid triggers a refetch.
        let unknown_kid = key.is_none();
        if self.may_fetch(unknown_kid) {
            self.fetch(unknown_kid).await;
        }
        if !self.fresh() && self.too_old() {
            // The provider has been unreachable for longer than cache_max.
            self.log_expiry();
            return None;
        }
        // Refreshed: a key the provider removed is gone. Or the provider is
        // down: what it published last stays, up to cache_max.
        self.lookup(kid).0
    }

    fn expired(&self) -> bool {
        !self.fresh() && self.too_old()
    }

    fn stats(&self) -> KeyStats {
        let keys = self.state.read().map(|s| s.keys.len() as u64).unwrap_or(0);
        KeyStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            unknown_kid_refetches: self.unknown_refetches.load(Ordering::Relaxed),
            keys,
        }
    }
}

/// The cache lifetime from a `Cache-Control` header: `max-age` clamped to
/// `[min, max]`; `no-store`, `no-cache` or no `max-age` mean `min`.
pub fn cache_ttl(header: Option<&str>, min: Duration, max: Duration) -> Duration {
    let Some(header) = header else { return min };
    let mut ttl = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return min;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            ttl = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    ttl.unwrap_or(min).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_clamped() {
        let (min, max) = (Duration::from_secs(600), Duration::from_secs(86_400));
        assert_eq!(cache_ttl(None, min, max), min);
        assert_eq!(
            cache_ttl(Some("public, max-age=3600"), min, max),
            Duration::from_secs(3600)
        );
        assert_eq!(cache_ttl(Some("max-age=5"), min, max), min);
        assert_eq!(cache_ttl(Some("max-age=99999999"), min, max), max);
        assert_eq!(cache_ttl(Some("no-store, max-age=3600"), min, max), min);
        assert_eq!(cache_ttl(Some("max-age=garbage"), min, max), min);
    }
}
