//! authmd's own signing keys: what it signs with (identity assertions for
//! upstream APIs, and any token it issues later), and the JWKS that
//! verifies them (`/.well-known/jwks.json`). No HTTP here.
//!
//! Keys live in the store, so replicas share them and a restart keeps
//! them; private keys are sealed (`seal.rs`). The first start on an empty
//! database creates one (ES256 by default, `signing.algorithm`). Each
//! replica keeps the published keys in memory and reads them again every
//! [`RELOAD`], and at once when asked for a `kid` it does not know.
//!
//! Rotation (`authmd keys rotate`) adds a key that is *published at once
//! but signs only from `signs_from`*, [`PUBLISH_AHEAD`] later: by then every
//! replica has read it, and verifiers that cache the JWKS (for up to its
//! `max-age`) have seen it, before the first token signed with it exists.
//! The keys it replaces stay published until everything they can still
//! sign has expired: `signs_from` + [`RELOAD`] (a replica that has not read
//! the new key yet) + [`MAX_LIFETIME`] + [`RETIRE_MARGIN`]. An immediate
//! rotation (`--now`, for a suspected leak) skips the wait.

mod seal;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use authmd_jose::{Algorithm, SigningKey, VerifyingKey};
use bytes::Bytes;
use serde_json::{Map, Value, json};

pub use seal::{SealError, Sealer};

use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::config::Config;
use crate::store::{SigningKeyRow, Store, StoreError};
use crate::time::Timestamp;

/// The longest life of anything signed with these keys (`exp - now`).
/// Sets how long a replaced key stays published. An hour: service-signed
/// identity assertions of the latest dialect live that long.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How often each replica reads the keys again.
pub const RELOAD: Duration = Duration::from_secs(10);
/// How long after a rotation the new key starts signing: longer than
/// [`RELOAD`] plus the JWKS document's `max-age` ([`JWKS_MAX_AGE`]).
pub const PUBLISH_AHEAD: Duration = Duration::from_secs(600);
/// `Cache-Control: max-age` of the JWKS document.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Slack for clocks and slow reloads when a replaced key is retired.
pub const RETIRE_MARGIN: Duration = Duration::from_secs(60);
/// A replica that has not read the keys for this long stops signing: it
/// could be signing with a key that another replica retired, past the
/// time that key stays published.
const STALE_AFTER: Duration = Duration::from_secs(RELOAD.as_secs() + RETIRE_MARGIN.as_secs());
/// At most one store read per this interval on behalf of unknown `kid`s.
const MISS_COOLDOWN: Duration = Duration::from_secs(1);

/// Why keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("cannot generate a signing key: {0}")]
    Generate(authmd_jose::key::KeyError),
}

/// Why a token was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("claims need an integer exp at most {} s ahead", MAX_LIFETIME.as_secs())]
    Lifetime,
    #[error("no signing key can sign a token living until {0}")]
    NoKey(Timestamp),
    #[error("the signing keys were not read for too long")]
    Stale,
    #[error("signing failed: {0}")]
    Key(authmd_jose::key::KeyError),
}

/// One published key, parsed once.
struct Loaded {
    kid: String,
    signs_from: Timestamp,
    published_until: Option<Timestamp>,
    /// `None` when the private key does not open under this replica's
    /// secret (it is still published).
    signing: Option<SigningKey>,
    verifying: Arc<VerifyingKey>,
}

/// The keys as last read: newest `signs_from` first.
struct Ring {
    keys: Vec<Loaded>,
    jwks: Bytes,
    loaded: Instant,
}

impl Ring {
    fn new(rows: Vec<SigningKeyRow>, sealer: &Sealer) -> Ring {
        let mut keys = Vec::with_capacity(rows.len());
        let mut public = Vec::with_capacity(rows.len());
        for row in rows {
            let jwk: Option<Map<String, Value>> = serde_json::from_str(&row.public_jwk).ok();
            let verifying = jwk.as_ref().map(VerifyingKey::from_jwk);
            let (Some(jwk), Some(Ok(verifying))) = (jwk.clone(), verifying) else {
                tracing::error!(kid = %row.kid, "a stored signing key has an unusable public JWK; skipped");
                continue;
            };
            let signing = Algorithm::from_name(&row.alg).and_then(|alg| {
                let der = sealer.open(&row.kid, &row.private_key)?;
                SigningKey::from_pkcs8(alg, &der)
                    .ok()
                    .map(|k| k.with_kid(row.kid.clone()))
            });
            public.push(Value::Object(jwk));
            keys.push(Loaded {
                kid: row.kid,
                signs_from: row.signs_from,
                published_until: row.published_until,
                signing,
                verifying: Arc::new(verifying),
            });
        }
        let jwks = serde_json::to_vec(&json!({ "keys": public }))
            .unwrap_or_default()
            .into();
        Ring {
            keys,
            jwks,
            loaded: Instant::now(),
        }
    }

    /// The key that signs at `now` a token living until `exp`: the newest
    /// one whose time has come, that this replica can open, and that stays
    /// published past `exp`.
    fn signer(&self, now: Timestamp, exp: Timestamp) -> Option<&SigningKey> {
        self.keys
            .iter()
            .filter(|k| k.signs_from <= now)
            .filter(|k| k.published_until.is_none_or(|until| exp < until))
            .find_map(|k| k.signing.as_ref())
    }

    /// Whether every current key (not yet replaced) opens here.
    fn current_keys_open(&self) -> bool {
        self.keys
            .iter()
            .filter(|k| k.published_until.is_none())
            .all(|k| k.signing.is_some())
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotated {
    pub kid: String,
    pub signs_from: Timestamp,
    /// Until when the replaced keys stay published.
    pub replaced_until: Timestamp,
}

/// A key as `authmd keys list` shows it (never private material).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub created_at: Timestamp,
    pub signs_from: Timestamp,
    pub published_until: Option<Timestamp>,
    /// Whether the private key opens under the configured secret.
    pub opens: bool,
}

/// authmd's signing keys on this replica.
pub struct ServiceKeys {
    store: Arc<dyn Store>,
    sealer: Sealer,
    algorithm: Algorithm,
    ring: RwLock<Arc<Ring>>,
    last_miss: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ring = self.ring();
        let kids: Vec<&str> = ring.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("ServiceKeys")
            .field("algorithm", &self.algorithm)
            .field("kids", &kids)
            .finish()
    }
}

/// The server's secret: `server.secret_key`, or the one generated at first
/// start and kept in the database.
pub async fn server_secret(config: &Config, store: &dyn Store) -> Result<Vec<u8>, StoreError> {
    match config
        .server
        .secret_key
        .as_ref()
        .and_then(|k| crate::config::decode_key(k.expose()))
    {
        Some(k) => Ok(k),
        None => store.secret_key().await,
    }
}

impl ServiceKeys {
    /// Reads the keys, creating the first one on an empty database. If a
    /// current key does not open under `secret` (the secret was changed),
    /// rotates at once: the old keys stay published for what they signed.
    pub async fn open(
        store: Arc<dyn Store>,
        secret: &[u8],
        algorithm: Algorithm,
        now: Timestamp,
    ) -> Result<ServiceKeys, KeysError> {
        let sealer = Sealer::new(secret)?;
        let empty = Ring::new(Vec::new(), &sealer);
        let keys = ServiceKeys {
            store,
            sealer,
            algorithm,
            ring: RwLock::new(Arc::new(empty)),
            last_miss: Mutex::new(None),
        };
        let mut rows = keys.store.signing_keys(now).await?;
        if rows.iter().all(|r| r.published_until.is_some()) {
            let row = keys.new_row(now, now)?;
            let kid = row.kid.clone();
            if keys.store.add_first_signing_key(row).await? {
                tracing::info!(kid = %kid, alg = algorithm.name(), "created the first signing key");
            }
            rows = keys.store.signing_keys(now).await?;
        }
        let ring = Ring::new(rows, &keys.sealer);
        let opens = ring.current_keys_open();
        keys.set(ring);
        if !opens {
            tracing::warn!(
                "the current signing key was sealed under another server.secret_key; \
                 rotating to a new key now (the old one stays published for what it signed)"
            );
            keys.rotate(
                now,
                true,
                "authmd (server.secret_key changed)",
                &RequestMeta::default(),
            )
            .await?;
        }
        Ok(keys)
    }

    fn ring(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn set(&self, ring: Ring) {
        let ring = Arc::new(ring);
        match self.ring.write() {
            Ok(mut r) => *r = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
    }

    /// The algorithm new keys are generated for.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Reads the published keys again (every [`RELOAD`], and on demand).
    pub async fn reload(&self, now: Timestamp) -> Result<(), StoreError> {
        let rows = self.store.signing_keys(now).await?;
        self.set(Ring::new(rows, &self.sealer));
        Ok(())
    }

    /// Signs `claims` as a compact JWS with header `typ`. `claims` must
    /// hold an integer `exp` at most [`MAX_LIFETIME`] after `now`. Costs one
    /// signature and no I/O.
    pub fn sign(
        &self,
        typ: &str,
        claims: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<String, SignError> {
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .filter(|exp| *exp <= now.plus(MAX_LIFETIME).as_secs())
            .ok_or(SignError::Lifetime)?;
        let exp = Timestamp::from_secs(exp);
        let ring = self.ring();
        if ring.loaded.elapsed() > STALE_AFTER {
            return Err(SignError::Stale);
        }
        let key = ring.signer(now, exp).ok_or(SignError::NoKey(exp))?;
        let mut header = Map::new();
        header.insert("typ".into(), Value::String(typ.to_owned()));
        authmd_jose::jws::sign(key, &header, claims).map_err(SignError::Key)
    }

    /// The `kid` that signs at `now` (for tests and operators).
    pub fn current_kid(&self, now: Timestamp) -> Option<String> {
        let ring = self.ring();
        ring.signer(now, now)
            .and_then(|k| k.kid().map(str::to_owned))
    }

    /// The JWKS document: every published key's public JWK.
    pub fn jwks(&self) -> Bytes {
        self.ring().jwks.clone()
    }

    /// The public key with this `kid`, reading the store again (at most
    /// once a second) when it is not known here: another replica may have
    /// rotated.
    pub async fn verifying_key(&self, kid: &str, now: Timestamp) -> Option<Arc<VerifyingKey>> {
        let find = |ring: &Ring| {
            ring.keys
                .iter()
                .find(|k| k.kid == kid)
                .map(|k| Arc::clone(&k.verifying))
        };
        if let Some(k) = find(&self.ring()) {
            return Some(k);
        }
        let due = match self.last_miss.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= MISS_COOLDOWN);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due && let Err(e) = self.reload(now).await {
            tracing::warn!(error = %e, "cannot read the signing keys");
        }
        find(&self.ring())
    }

    /// Adds a new key. It is published at once and signs from `now +`
    /// [`PUBLISH_AHEAD`] (`immediate`: from `now`); the keys it replaces
    /// stay published until what they signed has expired. Recorded as an
    /// `operator.action` (`rotate_signing_key`).
    pub async fn rotate(
        &self,
        now: Timestamp,
        immediate: bool,
        operator: &str,
        meta: &RequestMeta,
    ) -> Result<Rotated, KeysError> {
        let signs_from = if immediate {
            now
        } else {
            now.plus(PUBLISH_AHEAD)
        };
        let replaced_until = signs_from
            .plus(RELOAD)
            .plus(MAX_LIFETIME)
            .plus(RETIRE_MARGIN);
        let row = self.new_row(now, signs_from)?;
        let kid = row.kid.clone();
        let event = AuditEvent::new(EventKind::OperatorAction, now, meta)
            .with("action", "rotate_signing_key")
            .with("operator", operator)
            .with("kid", kid.as_str())
            .with("alg", self.algorithm.name())
            .with("signs_from", signs_from.to_rfc3339())
            .with("replaced_until", replaced_until.to_rfc3339());
        self.store
            .rotate_signing_key(row, replaced_until, event.clone())
            .await?;
        event.log();
        self.reload(now).await?;
        Ok(Rotated {
            kid,
            signs_from,
            replaced_until,
        })
    }

    /// The published keys, for operators.
    pub async fn list(&self, now: Timestamp) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = self.store.signing_keys(now).await?;
        Ok(rows
            .into_iter()
            .map(|r| KeyInfo {
                opens: self.sealer.open(&r.kid, &r.private_key).is_some(),
                kid: r.kid,
                alg: r.alg,
                created_at: r.created_at,
                signs_from: r.signs_from,
                published_until: r.published_until,
            })
            .collect())
    }

    /// A fresh key of the configured algorithm, sealed, as a row.
    fn new_row(&self, now: Timestamp, signs_from: Timestamp) -> Result<SigningKeyRow, KeysError> {
        let key = SigningKey::generate(self.algorithm).map_err(KeysError::Generate)?;
        let kid = key.thumbprint();
        let der = key.to_pkcs8().map_err(KeysError::Generate)?;
        Ok(SigningKeyRow {
            private_key: self.sealer.seal(&kid, &der)?,
            public_jwk: key.public_jwk().to_string(),
            alg: self.algorithm.name().to_owned(),
            kid,
            created_at: now,
            signs_from,
            published_until: None,
        })
    }
}
