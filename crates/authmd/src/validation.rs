//! Validation of presented bearer credentials: the API's hot path.
//!
//! A presented string is first *recognized* (prefix, length, checksum; see
//! `token.rs`), which refuses garbage without touching the store. A
//! recognized one names its credential's id; the record is read by id and
//! kept only if its stored hash equals the presented secret's (constant-time
//! comparison). The answer is cached in memory, bounded, per replica, under
//! the presented secret's hash: records in one cache, absences in another,
//! smaller one. The checksum is public, so well-formed unknown tokens are
//! free to make; each is a store read and an absence to remember, and if
//! absences shared the records' cache a flood of them would push out the
//! credentials agents are using. The record's own times decide expiry at
//! every request, so caching never extends a credential's life.
//!
//! What caching could delay is a *change* made elsewhere: a revocation, an
//! expiry sweep, a claim that upgrades scopes. Every such change appends the
//! credential's hash to the store's invalidation log in the same
//! transaction; each replica polls the log (`server.revocation_poll`, at
//! most 1 s) and drops those entries. A cached entry is also re-read after
//! `server.credential_cache_ttl` whatever happens (at most
//! [`crate::config::MAX_CREDENTIAL_CACHE_TTL`], well within the log's
//! retention). A replica that finds a gap in the log (entries it had not
//! read were purged: it could not read the log for longer than it is kept)
//! drops its whole cache.
//!
//! One race remains to close: a request reads a record just before a change
//! commits, and caches it just after the poller has dropped that hash. The
//! generation counter closes it: the poller bumps the generation *before*
//! dropping entries, and a reader that inserts an entry re-checks the
//! generation *after* inserting; if it moved, it removes what it inserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::credential::{CredentialRecord, Refusal};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;
use crate::token::{SecretHash, SecretKind, recognize};
pub use crate::vocab::FLUSH_ALL;

/// How long the invalidation log is kept. A replica that could not read it
/// for longer may have missed entries: it finds that out
/// ([`Store::purged_invalidations`], or the time since its last read) and
/// starts over with an empty cache.
pub const INVALIDATION_RETENTION: Duration = Duration::from_secs(3600);

// A cached entry must be re-read long before the log forgets a change to it.
const _: () = assert!(
    crate::config::MAX_CREDENTIAL_CACHE_TTL.as_secs() * 6 <= INVALIDATION_RETENTION.as_secs()
);

/// Unknown tokens remembered per replica: this share of
/// `server.credential_cache_capacity`, in a cache of their own.
pub const NEGATIVE_CACHE_SHARE: usize = 10;

/// The kinds of secret accepted as bearer credentials at the resource.
pub const BEARER_KINDS: [SecretKind; 2] = [SecretKind::ApiKey, SecretKind::AccessToken];

/// The outcome of validating a request's credential.
#[derive(Debug, Clone)]
pub enum Validation {
    /// No credential was presented.
    Missing,
    /// A credential was presented and is not valid; the reason is for logs.
    Invalid(Refusal),
    Valid(Arc<CredentialRecord>),
}

#[derive(Clone)]
struct Entry {
    record: Arc<CredentialRecord>,
    loaded: Instant,
}

/// How long after the last successful read of the invalidation log cached
/// entries may still be used. If the log cannot be read (the database is
/// unreachable), the cache stops answering after this long and every
/// request goes to the store: a revocation is honoured within this bound
/// even when the poller is failing.
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

/// The per-replica credential cache and the state of its invalidation poller.
pub struct Validator {
    store: Arc<dyn Store>,
    /// Records of credentials that exist.
    cache: Cache<SecretHash, Entry>,
    /// Tokens that name no credential, and when that was read.
    absent: Cache<SecretHash, Instant>,
    ttl: Duration,
    generation: AtomicU64,
    /// The last invalidation `seq` processed.
    watermark: AtomicI64,
    started: Instant,
    /// Milliseconds after `started` of the last successful poll.
    last_poll_ok: AtomicU64,
    /// One more than the milliseconds after `started` of the last
    /// [`Validator::distrust`]: the cache answers only after a poll that
    /// started in a later millisecond succeeded (0: never distrusted).
    distrusted: AtomicU64,
    /// Answers from the cache (records or absences), for metrics.
    hits: AtomicU64,
    /// Answers read from the store, for metrics.
    misses: AtomicU64,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("cached", &self.cache.len())
            .field("absent", &self.absent.len())
            .field("watermark", &self.watermark.load(Ordering::Relaxed))
            .finish()
    }
}

impl Validator {
    /// `poll` is the invalidation poll interval; it must leave room for a
    /// poll within [`MAX_STALENESS`].
    pub fn new(store: Arc<dyn Store>, capacity: usize, ttl: Duration, poll: Duration) -> Self {
        debug_assert!(poll < MAX_STALENESS);
        Validator {
            store,
            cache: Cache::new(capacity),
            absent: Cache::new((capacity / NEGATIVE_CACHE_SHARE).max(1)),
            ttl,
            generation: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MAX),
            started: Instant::now(),
            last_poll_ok: AtomicU64::new(0),
            distrusted: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the cache may answer at `at`: the log was read recently enough.
    fn cache_trusted(&self, at: Instant) -> bool {
        let elapsed =
            u64::try_from(at.duration_since(self.started).as_millis()).unwrap_or(u64::MAX);
        let last = self.last_poll_ok.load(Ordering::Relaxed);
        last >= self.distrusted.load(Ordering::Relaxed)
            && elapsed.saturating_sub(last) < MAX_STALENESS.as_millis() as u64
    }

    /// Stops the cache from answering until a poll that starts after this
    /// call succeeds: for a change committed here whose invalidation could
    /// not be read back at once (the log is unreachable), so that this
    /// replica asks the store instead of serving what it cached before the
    /// change.
    pub fn distrust(&self) {
        self.distrusted
            .fetch_max(self.elapsed_ms().saturating_add(1), Ordering::SeqCst);
    }

    /// Validates the token of an `Authorization: Bearer` header (`None` when
    /// the request had none).
    pub async fn validate(
        &self,
        bearer: Option<&str>,
        now: Timestamp,
    ) -> Result<Validation, StoreError> {
        let Some(presented) = bearer else {
            return Ok(Validation::Missing);
        };
        let Some(presented) = recognize(presented, &BEARER_KINDS) else {
            return Ok(Validation::Invalid(Refusal::Unknown));
        };
        let hash = presented.hash;
        let at = Instant::now();
        let fresh = |loaded: Instant| at.duration_since(loaded) < self.ttl;
        let cached = if !self.cache_trusted(at) {
            None
        } else if let Some(entry) = self.cache.get(&hash).filter(|e| fresh(e.loaded)) {
            Some(Some(entry.record))
        } else if self.absent.get(&hash).is_some_and(fresh) {
            Some(None)
        } else {
            None
        };
        let record = match cached {
            Some(answer) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                answer
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.load(&presented.id(), hash).await?
            }
        };
        Ok(match record {
            None => Validation::Invalid(Refusal::Unknown),
            Some(r) => match r.check(now) {
                Ok(()) => Validation::Valid(r),
                Err(refusal) => Validation::Invalid(refusal),
            },
        })
    }

    /// Reads the credential `id` names and keeps it if its stored hash is
    /// the presented one (compared in constant time); caches the answer
    /// under the presented hash either way (an absence apart from records).
    async fn load(
        &self,
        id: &str,
        hash: SecretHash,
    ) -> Result<Option<Arc<CredentialRecord>>, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let record = self
            .store
            .find_credential(id)
            .await?
            .filter(|r| r.secret_hash == hash)
            .map(Arc::new);
        let Some(record) = record else {
            // Nothing is invalidated into existence: an absence needs no
            // generation check.
            self.absent.insert(hash, Instant::now());
            return Ok(None);
        };
        self.cache.insert(
            hash,
            Entry {
                record: Arc::clone(&record),
                loaded: Instant::now(),
            },
        );
        if self.generation.load(Ordering::SeqCst) != generation {
            // An invalidation pass ran while we were reading: what we read
            // may predate it. Use it for this request only.
            self.cache.remove(&hash);
        }
        Ok(Some(record))
    }

    /// Drops every cached answer.
    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
        self.absent.clear();
    }

    /// Drops the cached entry for one credential (after a local change).
    pub fn forget(&self, hash: &SecretHash) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.remove(hash);
    }

    /// Reads the invalidation log from the last position and drops every
    /// credential it names. The first call finds the position and drops the
    /// whole cache: nothing read before the log had a position is trusted.
    /// So does a poll that finds a gap: entries after the last position
    /// were purged before they were read, or the last successful read is
    /// older than half the log's retention.
    pub async fn poll_invalidations(&self) -> Result<usize, StoreError> {
        let mut watermark = self.watermark.load(Ordering::SeqCst);
        if watermark == i64::MAX {
            watermark = self.store.latest_invalidation().await?;
            self.clear();
            self.watermark.store(watermark, Ordering::SeqCst);
            self.last_poll_ok
                .store(self.elapsed_ms(), Ordering::Relaxed);
            return Ok(0);
        }
        let started = self.elapsed_ms();
        let from = watermark;
        let mut dropped = 0;
        loop {
            let batch = self.store.invalidations_after(watermark, 1000).await?;
            let Some(last) = batch.last().map(|i| i.seq) else {
                break;
            };
            self.generation.fetch_add(1, Ordering::SeqCst);
            for inv in &batch {
                if inv.credential == FLUSH_ALL {
                    self.clear();
                } else {
                    self.cache.remove(&inv.credential);
                }
            }
            dropped += batch.len();
            watermark = last;
            self.watermark.store(watermark, Ordering::SeqCst);
            if batch.len() < 1000 {
                break;
            }
        }
        // Read after the entries: a purge that ran before they were read
        // is seen here, so a missed entry is never mistaken for none.
        let purged = self.store.purged_invalidations().await?;
        let previous = self.last_poll_ok.load(Ordering::Relaxed);
        let retention_ms = INVALIDATION_RETENTION.as_millis() as u64;
        if purged > from || started.saturating_sub(previous) > retention_ms / 2 {
            tracing::warn!(
                position = from,
                purged_through = purged,
                "the invalidation log has a gap for this replica (entries it had not read were purged, \
                 or it could not read the log for a long time); dropping the whole credential cache"
            );
            self.clear();
        }
        // What was read reflects the log as of when this poll started.
        self.last_poll_ok.fetch_max(started, Ordering::Relaxed);
        Ok(dropped)
    }

    /// Number of cached entries, records and absences (for metrics and
    /// tests).
    pub fn cached(&self) -> usize {
        self.cache.len() + self.absent.len()
    }

    /// For metrics: answers from the cache and from the store so far, and
    /// the entries now cached (records, absences).
    pub fn cache_stats(&self) -> (u64, u64, usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.cache.len(),
            self.absent.len(),
        )
    }

    /// How long ago the invalidation log was last read successfully (the
    /// time a revocation made elsewhere may still be unseen here).
    pub fn invalidation_lag(&self) -> Duration {
        let last = self.last_poll_ok.load(Ordering::Relaxed);
        Duration::from_millis(self.elapsed_ms().saturating_sub(last))
    }
}
