//! authmd: the service side of the auth.md protocol.
//!
//! [`AuthMd`] is the handle everything goes through: the HTTP routes in
//! [`http`], the [`middleware`] that protects an API, the CLI and the tests.
//! It holds the configuration, the store, the mailer and the per-replica
//! credential cache; there is no global state.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = authmd::config::load(None, &std::env::vars().collect())?;
//! let app = authmd::AuthMd::open(config).await?;
//! let router = authmd::http::router(app.clone());
//! # Ok(()) }
//! ```

/// `Debug` for a type whose fields include secrets: the `show` fields
/// print as they are, the `hide` ones (each an `Option`) only as present
/// (`"***"`) or absent, so no `Debug` print of a request body reveals a
/// credential, assertion, claim token or code.
macro_rules! redacted_debug {
    ($t:ident { show: [$($shown:ident),*], hide: [$($hidden:ident),*] }) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    $(.field(stringify!($shown), &self.$shown))*
                    $(.field(stringify!($hidden), &self.$hidden.as_ref().map(|_| "***")))*
                    .finish()
            }
        }
    };
}

pub mod access;
pub mod admin;
pub mod assertion;
pub mod audit;
pub mod claim;
pub mod claim_page;
pub mod config;
pub mod credential;
pub mod current;
pub mod current_claim;
pub mod discovery;
pub mod error;
pub mod grant;
pub mod http;
pub mod id_jag;
pub mod identity;
pub mod introspect;
pub mod jwks;
pub mod mail;
pub mod metrics;
pub mod middleware;
pub mod outbound;
pub mod outbox;
pub mod rate_limit;
pub mod refusals;
pub mod register;
pub mod revoke;
pub mod self_revoke;
pub mod service_keys;
pub mod store;
pub mod time;
pub mod token;
pub mod users;
pub mod validation;
pub mod vocab;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use config::Config;
pub use error::{Error, ProtocolError};
pub use middleware::{Agent, RequireCredentialLayer};
pub use time::Timestamp;

use audit::AuditEvent;
use discovery::{Documents, Urls};
use jwks::{HttpKeySource, KeySource};
use mail::{Mailer, OutboxMailer};
use outbound::Outbound;
use store::{Store, StoreError};
use validation::{Validation, Validator};

/// Registrations expired per sweep transaction.
const SWEEP_BATCH: u32 = 500;
/// Audit events deleted per sweep transaction.
const AUDIT_PURGE_BATCH: u32 = 5000;

/// The authmd handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthMd {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    urls: Urls,
    documents: Documents,
    challenges: middleware::Challenges,
    store: Arc<dyn Store>,
    mailer: Arc<dyn Mailer>,
    validator: Validator,
    verifier: id_jag::Verifier,
    /// Delivers the mail outbox.
    outbox: outbox::Outbox,
    otp_key: claim::OtpKey,
    introspectors: introspect::Introspectors,
    service_keys: service_keys::ServiceKeys,
    assertions: identity::Assertions,
    recent_assertions: assertion::Recent,
    /// Refused registrations counted since the last flush.
    refusals: refusals::Refusals,
    /// The poller, the sweeper, the key reload and the refusal flush,
    /// aborted when the handle is dropped.
    background: std::sync::OnceLock<Vec<tokio::task::AbortHandle>>,
}

/// Why [`AuthMd::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the outbound HTTP client: {0}")]
    Outbound(#[from] outbound::FetchError),
    #[error("cannot set up mail: {0}")]
    Mail(#[from] mail::MailError),
    #[error("cannot set up the signing keys: {0}")]
    Keys(#[from] service_keys::KeysError),
}

impl AuthMd {
    /// Opens the configured database, applies migrations and builds the
    /// configured mailer.
    pub async fn open(mut config: Config) -> Result<AuthMd, OpenError> {
        config.validate()?;
        let store = store::open(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await?;
        store.migrate().await?;
        let mailer: Arc<dyn Mailer> = match &config.mail.smtp_url {
            Some(url) => Arc::new(mail::SmtpMailer::new(
                url.expose(),
                config.mail.smtp_username.clone().map(|u| {
                    let password = config
                        .mail
                        .smtp_password
                        .as_ref()
                        .map(|p| p.expose().to_owned());
                    (u, password.unwrap_or_default())
                }),
                &config.mail.from,
            )?),
            None => Arc::new(OutboxMailer::new(&config.mail.outbox, &config.mail.from)),
        };
        AuthMd::new(config, store, mailer).await
    }

    /// Builds the handle from parts (tests, embedders). The store must be
    /// migrated. Starts the background tasks (the invalidation poller and the
    /// expiry sweep) on the current Tokio runtime; they stop when the last
    /// clone of the handle is dropped.
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
    ) -> Result<AuthMd, OpenError> {
        AuthMd::with_key_sources(config, store, mailer, HashMap::new()).await
    }

    /// Like [`AuthMd::new`], with the key sources of some providers given
    /// (by issuer) instead of fetched from their `jwks_uri`.
    pub async fn with_key_sources(
        mut config: Config,
        store: Arc<dyn Store>,
        mailer: Arc<dyn Mailer>,
        mut key_sources: HashMap<String, Arc<dyn KeySource>>,
    ) -> Result<AuthMd, OpenError> {
        config.validate()?;
        let outbound = Outbound::new(config.jwks.timeout.get())?;
        let verifier = id_jag::Verifier::new(&config, |p| {
            key_sources.remove(&p.issuer).unwrap_or_else(|| {
                Arc::new(HttpKeySource::new(
                    &p.issuer,
                    p.jwks_uri(),
                    config.jwks.clone(),
                    outbound.clone(),
                ))
            })
        });
        let urls = Urls::new(&config);
        let documents = Documents::render(&config, &urls);
        let urls_prm = urls.prm.clone();
        let validator = Validator::new(
            Arc::clone(&store),
            config.server.credential_cache_capacity,
            config.server.credential_cache_ttl.get(),
            config.server.revocation_poll.get(),
        );
        // Position the invalidation log before the first request is served.
        validator.poll_invalidations().await?;
        let secret = service_keys::server_secret(&config, store.as_ref()).await?;
        let otp_key = claim::OtpKey::new(&secret);
        let service_keys = service_keys::ServiceKeys::open(
            Arc::clone(&store),
            &secret,
            config.signing.algorithm(),
            Timestamp::now(),
        )
        .await?;
        let introspectors = introspect::Introspectors::new(&config);
        let outbox = outbox::Outbox::start(
            Arc::clone(&store),
            Arc::clone(&mailer),
            config.mail.retry_for.get(),
        );
        let app = AuthMd {
            inner: Arc::new(Inner {
                config,
                urls,
                documents,
                challenges: middleware::Challenges::new(&urls_prm),
                store,
                mailer,
                validator,
                verifier,
                outbox,
                otp_key,
                introspectors,
                service_keys,
                assertions: identity::Assertions::default(),
                recent_assertions: assertion::Recent::default(),
                refusals: refusals::Refusals::default(),
                background: std::sync::OnceLock::new(),
            }),
        };
        let _ = app.inner.background.set(app.start_background());
        Ok(app)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn urls(&self) -> &Urls {
        &self.inner.urls
    }

    pub fn documents(&self) -> &Documents {
        &self.inner.documents
    }

    pub(crate) fn challenges(&self) -> &middleware::Challenges {
        &self.inner.challenges
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn mailer(&self) -> &Arc<dyn Mailer> {
        &self.inner.mailer
    }

    /// The ID-JAG verifier and the trusted providers.
    pub fn verifier(&self) -> &id_jag::Verifier {
        &self.inner.verifier
    }

    /// This replica's delivery of the mail outbox.
    pub fn outbox(&self) -> &outbox::Outbox {
        &self.inner.outbox
    }

    pub(crate) fn otp_key(&self) -> &claim::OtpKey {
        &self.inner.otp_key
    }

    /// The callers of the introspection endpoint.
    pub fn introspectors(&self) -> &introspect::Introspectors {
        &self.inner.introspectors
    }

    /// authmd's own signing keys: signing, the JWKS, rotation.
    pub fn service_keys(&self) -> &service_keys::ServiceKeys {
        &self.inner.service_keys
    }

    pub(crate) fn assertions(&self) -> &identity::Assertions {
        &self.inner.assertions
    }

    /// The assertions this replica signed lately (`assertion::Recent`).
    pub(crate) fn recent_assertions(&self) -> &assertion::Recent {
        &self.inner.recent_assertions
    }

    pub(crate) fn refusals(&self) -> &refusals::Refusals {
        &self.inner.refusals
    }

    /// Writes the refusals counted since the last flush, one
    /// `registration.rejected` per client network, code and flow, in one
    /// transaction; returns how many events were written. Runs every
    /// [`refusals::FLUSH_INTERVAL`] and should run at shutdown. If the
    /// write fails, the counts are kept for the next flush.
    pub async fn flush_refusals(&self) -> Result<usize, StoreError> {
        let taken = self.inner.refusals.take();
        if taken.is_empty() {
            return Ok(0);
        }
        let events = taken.events();
        let n = events.len();
        let logged = AuditEvent::logged().then(|| events.clone());
        match self.store().record_events(events).await {
            Ok(()) => {
                for e in logged.iter().flatten() {
                    e.log();
                }
                Ok(n)
            }
            Err(e) => {
                self.inner.refusals.restore(taken);
                Err(e)
            }
        }
    }

    pub fn validator(&self) -> &Validator {
        &self.inner.validator
    }

    /// Validates a presented bearer credential (the token after `Bearer `).
    pub async fn validate(
        &self,
        bearer: Option<&str>,
        now: Timestamp,
    ) -> Result<Validation, Error> {
        Ok(self.inner.validator.validate(bearer, now).await?)
    }

    /// After a commit that changed credentials: drops them from this
    /// replica's cache at once (the others drop them at their next poll of
    /// the invalidation log). Never fails, because the change is committed
    /// and the request must get its committed result: if the log cannot be
    /// read, the failure is logged, this replica's cache stops answering
    /// until a later poll succeeds, and the poller retries every
    /// `server.revocation_poll`.
    pub async fn refresh_after_commit(&self) {
        if let Err(e) = self.inner.validator.poll_invalidations().await {
            tracing::warn!(error = %e,
                "cannot read the invalidation log after a change; the credential cache is bypassed until it can");
            self.inner.validator.distrust();
        }
    }

    /// Expires what is due and purges stale bookkeeping; what the periodic
    /// sweep runs. Returns the number of registrations expired.
    pub async fn sweep(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut expired = 0;
        loop {
            let report = self.store().expire_registrations(now, SWEEP_BATCH).await?;
            expired += report.expired_registrations.len();
            metrics::revocations("expiry", report.revoked_credentials as u64);
            if report.expired_registrations.len() < SWEEP_BATCH as usize {
                break;
            }
        }
        self.store()
            .purge(now, now.minus(validation::INVALIDATION_RETENTION))
            .await?;
        // [audit] retention, in batches (on SQLite each is one short job
        // for the writer, between other writes).
        let keep_since = now.minus(self.config().audit.retention.get());
        let mut purged = 0;
        loop {
            let n = self
                .store()
                .purge_audit(keep_since, AUDIT_PURGE_BATCH)
                .await?;
            purged += n;
            if n < u64::from(AUDIT_PURGE_BATCH) {
                break;
            }
        }
        if purged > 0 {
            tracing::info!(
                events = purged,
                "audit events past [audit] retention deleted"
            );
        }
        // Claim emails: no body past its link's expiry; done ones go after
        // a week.
        self.store()
            .purge_mail(now, now.minus(outbox::DONE_RETENTION))
            .await?;
        if expired > 0 {
            // Drop local cache entries at once rather than at the next poll.
            self.inner.validator.poll_invalidations().await?;
        }
        Ok(expired)
    }

    /// Starts the background tasks: the invalidation poller and the expiry
    /// sweep. They hold only a weak reference and stop with the handle.
    fn start_background(&self) -> Vec<tokio::task::AbortHandle> {
        let poll = self.config().server.revocation_poll.get();
        let sweep = self.config().server.sweep_interval.get();
        let poller = every(Arc::downgrade(&self.inner), poll, |app| async move {
            if let Err(e) = app.inner.validator.poll_invalidations().await {
                tracing::warn!(error = %e, "cannot read the invalidation log");
            }
        });
        let sweeper = every(Arc::downgrade(&self.inner), sweep, |app| async move {
            match app.sweep(Timestamp::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired unclaimed registrations"),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        });
        let keys = every(
            Arc::downgrade(&self.inner),
            service_keys::RELOAD,
            |app| async move {
                if let Err(e) = app.service_keys().reload(Timestamp::now()).await {
                    tracing::warn!(error = %e, "cannot read the signing keys");
                }
            },
        );
        let flusher = every(
            Arc::downgrade(&self.inner),
            refusals::FLUSH_INTERVAL,
            |app| async move {
                if let Err(e) = app.flush_refusals().await {
                    tracing::warn!(error = %e, "cannot record refused registrations; kept for the next flush");
                }
            },
        );
        vec![poller, sweeper, keys, flusher]
    }
}

/// Runs `f` every `period` while the handle behind `weak` lives.
fn every<F, Fut>(weak: Weak<Inner>, period: Duration, f: F) -> tokio::task::AbortHandle
where
    F: Fn(AuthMd) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            f(AuthMd { inner }).await;
        }
    })
    .abort_handle()
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.background.get().into_iter().flatten() {
            t.abort();
        }
    }
}
