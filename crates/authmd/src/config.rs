//! Typed configuration, validated at startup.
//!
//! A TOML file (every key optional), overridden key by key by `AUTHMD_*`
//! environment variables, with secrets also readable from files (`…_FILE`).
//! [`load`] does the layering; [`Config::validate`] checks every value and
//! fills in the defaults that derive from other keys (the resource identifier
//! from the issuer, for example). An unknown key or an invalid value is a
//! [`ConfigError`] naming the key, and the server does not start.

mod dev;
mod duration;
mod introspection;
mod load;
mod ops;
mod production;
mod providers;
mod upstream;
mod warnings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

pub use duration::{HumanDuration, parse as parse_duration, words as duration_words};
pub use introspection::{CorsConfig, IntrospectionClient, IntrospectionConfig, MIN_CLIENT_SECRET};
pub use load::{ENV_PREFIX, KEYS, KeyKind, load, load_str};
pub use ops::{LogConfig, MetricsConfig};
pub use providers::{AssertionConfig, JwksConfig, ProviderConfig};
pub use upstream::UpstreamConfig;
pub use warnings::looks_like_placeholder;

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A configuration string that must never reach a log: `Debug` prints only
/// that it is set.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public base URL, the RFC 8414 issuer. Default: `http://<listen>`.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub resource: ResourceConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub dialects: DialectsConfig,
    #[serde(default)]
    pub ttl: TtlConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub assertions: AssertionConfig,
    #[serde(default)]
    pub jwks: JwksConfig,
    #[serde(default)]
    pub mail: MailConfig,
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub introspection: IntrospectionConfig,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    /// Gateway mode: the API behind authmd. Absent: authmd serves only its
    /// own resource (`whoami`).
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// authmd's own signing keys (`service_keys.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The algorithm of keys generated from now on: `ES256` (default),
    /// `EdDSA`, `RS256` or `PS256`. Existing keys keep theirs until
    /// rotated.
    #[serde(default = "default_signing_algorithm")]
    pub algorithm: String,
}

fn default_signing_algorithm() -> String {
    "ES256".into()
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            algorithm: default_signing_algorithm(),
        }
    }
}

impl SigningConfig {
    /// The algorithm (checked by [`Config::validate`]).
    pub fn algorithm(&self) -> authmd_jose::Algorithm {
        authmd_jose::Algorithm::from_name(&self.algorithm).unwrap_or(authmd_jose::Algorithm::Es256)
    }
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// How long events are kept; the sweep deletes older ones. Keep more
    /// by exporting (`authmd audit export --after <last id>`).
    #[serde(default = "d400d")]
    pub retention: HumanDuration,
}

fn d400d() -> HumanDuration {
    HumanDuration::secs(400 * 86_400)
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention: d400d() }
    }
}

/// The admin API (operator controls): off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens, apart from the public listener. Keep it
    /// on a private interface.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The admin API's bearer token: at least 32 characters (e.g.
    /// `openssl rand -hex 32`). Required with `listen`.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// TLS for the admin listener (PEM files, reloaded on SIGHUP).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Serve the admin API over plain HTTP on a non-loopback address. Off:
    /// such a bind is refused unless TLS is configured for it, because the
    /// bearer token would cross the network in the clear.
    #[serde(default)]
    pub allow_insecure_remote: bool,
}

/// Longest `server.credential_cache_ttl` accepted: a sixth of the hour the
/// invalidation log is kept (`validation::INVALIDATION_RETENTION`). An entry
/// cached before a change must be re-read long before the log forgets the
/// change, whatever a replica's poller, clock or sweep timing did; the
/// margin is 50 minutes.
pub const MAX_CREDENTIAL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 32;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for Config {
    fn default() -> Self {
        let mut c = Config {
            issuer: None,
            listen: default_listen(),
            database: DatabaseConfig::default(),
            resource: ResourceConfig::default(),
            registration: RegistrationConfig::default(),
            dialects: DialectsConfig::default(),
            ttl: TtlConfig::default(),
            providers: Vec::new(),
            assertions: AssertionConfig::default(),
            jwks: JwksConfig::default(),
            mail: MailConfig::default(),
            rate_limits: RateLimitConfig::default(),
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            introspection: IntrospectionConfig::default(),
            cors: CorsConfig::default(),
            signing: SigningConfig::default(),
            upstream: None,
            audit: AuditConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
        };
        // The defaults are valid by construction; `validate` fills in the
        // derived values (issuer, resource identifier, rules).
        if let Err(e) = c.validate() {
            unreachable!("default configuration is invalid: {e}");
        }
        c
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://data/authmd.db` (relative to the working directory),
    /// `sqlite:///abs/path.db`, `sqlite::memory:`, or `postgres://…`.
    /// Treated as a secret because a PostgreSQL URL may hold a password.
    #[serde(default = "default_database_url")]
    pub url: SecretString,
    /// PostgreSQL pool size; SQLite read connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_database_url() -> SecretString {
    SecretString::new("sqlite://data/authmd.db")
}
fn default_max_connections() -> usize {
    8
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The protected resource (PRM `resource`). Default: `<issuer>/api/`.
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default = "default_resource_name")]
    pub name: String,
    #[serde(default)]
    pub logo_uri: Option<String>,
    #[serde(default = "default_pre_claim")]
    pub pre_claim_scopes: Vec<String>,
    #[serde(default = "default_post_claim")]
    pub post_claim_scopes: Vec<String>,
    /// Every scope the API understands, with a one-line description.
    #[serde(default = "default_scopes")]
    pub scopes: BTreeMap<String, String>,
    /// Scope rules, first match wins. Default: writes under the resource
    /// path need `api.write` (when that scope exists).
    #[serde(default)]
    pub rules: Option<Vec<ScopeRule>>,
}

fn default_resource_name() -> String {
    "Example API".into()
}
fn default_pre_claim() -> Vec<String> {
    vec!["api.read".into()]
}
fn default_post_claim() -> Vec<String> {
    vec!["api.read".into(), "api.write".into()]
}
fn default_scopes() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("api.read".into(), "Read your data".into()),
        ("api.write".into(), "Create and change your data".into()),
    ])
}

impl Default for ResourceConfig {
    fn default() -> Self {
        ResourceConfig {
            identifier: None,
            name: default_resource_name(),
            logo_uri: None,
            pre_claim_scopes: default_pre_claim(),
            post_claim_scopes: default_post_claim(),
            scopes: default_scopes(),
            rules: None,
        }
    }
}

/// A rule of the protected resource: requests whose method is in `methods`
/// (any method when empty) and whose path starts with `path_prefix` need
/// every scope in `scopes`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    #[serde(default)]
    pub methods: Vec<String>,
    pub path_prefix: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    #[serde(default = "yes")]
    pub anonymous: bool,
    #[serde(default = "yes")]
    pub verified_email: bool,
    #[serde(default = "yes")]
    pub identity_assertion: bool,
    /// Provision users just in time (§6); when off, an unknown user is
    /// refused with `user_not_provisioned`.
    #[serde(default = "yes")]
    pub jit_provisioning: bool,
    /// Issue a new API key when an anonymous registration is claimed (and
    /// revoke the old one) instead of upgrading the key in place.
    #[serde(default)]
    pub rotate_key_on_claim: bool,
    /// Live API keys per delegation `(iss, sub)`: each ID-JAG presented for
    /// an `api_key` adds a key that never expires, so past this many the
    /// oldest is revoked.
    #[serde(default = "n10")]
    pub max_api_keys_per_delegation: u32,
}

fn yes() -> bool {
    true
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            anonymous: true,
            verified_email: true,
            identity_assertion: true,
            jit_provisioning: true,
            rotate_key_on_claim: false,
            max_api_keys_per_delegation: n10(),
        }
    }
}

/// Which wire dialect offers which flow. A flow is offered in a dialect
/// when it is on in `[registration]` (the core) and in the dialect's table
/// here: `[registration]` switches a flow off everywhere, this per dialect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectsConfig {
    /// The dialect as first published: `POST /agent/auth`
    /// (docs/protocol.md §3).
    #[serde(default)]
    pub original: OriginalDialectConfig,
    /// The current dialect: `POST /agent/identity`, `POST /oauth2/token`
    /// (docs/protocol.md §20).
    #[serde(default)]
    pub current: CurrentDialectConfig,
}

/// `[dialects.original]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalDialectConfig {
    /// Off: nothing of the original dialect is published or accepted.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub anonymous: bool,
    #[serde(default = "yes")]
    pub verified_email: bool,
    #[serde(default = "yes")]
    pub identity_assertion: bool,
}

impl Default for OriginalDialectConfig {
    fn default() -> Self {
        OriginalDialectConfig {
            enabled: true,
            anonymous: true,
            verified_email: true,
            identity_assertion: true,
        }
    }
}

/// `[dialects.current]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentDialectConfig {
    /// Off: nothing of the current dialect is published or accepted.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub anonymous: bool,
    /// `service_auth` (a `login_hint` the user confirms): the current
    /// dialect's email flow.
    #[serde(default = "yes")]
    pub service_auth: bool,
    #[serde(default = "yes")]
    pub identity_assertion: bool,
    /// An ID-JAG whose `auth_time` is missing or older than this (plus the
    /// clock skew) is refused with `login_required`.
    #[serde(default = "d1h")]
    pub max_auth_age: HumanDuration,
}

impl Default for CurrentDialectConfig {
    fn default() -> Self {
        CurrentDialectConfig {
            enabled: true,
            anonymous: true,
            service_auth: true,
            identity_assertion: true,
            max_auth_age: d1h(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlConfig {
    /// How long an anonymous or email registration may stay unclaimed.
    #[serde(default = "d24h")]
    pub registration: HumanDuration,
    #[serde(default = "d10m")]
    pub claim_link: HumanDuration,
    #[serde(default = "d10m")]
    pub otp: HumanDuration,
    #[serde(default = "d1h")]
    pub access_token: HumanDuration,
    /// The current dialect's refresh tokens (each use issues the next).
    #[serde(default = "d30d")]
    pub refresh_token: HumanDuration,
}

fn d30d() -> HumanDuration {
    HumanDuration::secs(30 * 86_400)
}
fn d24h() -> HumanDuration {
    HumanDuration::secs(86_400)
}
fn d10m() -> HumanDuration {
    HumanDuration::secs(600)
}
fn d1h() -> HumanDuration {
    HumanDuration::secs(3600)
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            registration: d24h(),
            claim_link: d10m(),
            otp: d10m(),
            access_token: d1h(),
            refresh_token: d30d(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://host:port` (plain: loopback and development only),
    /// `smtp://host:587?tls=required` (STARTTLS) or `smtps://host:465`
    /// (implicit TLS). Absent: messages are written to `outbox`.
    #[serde(default)]
    pub smtp_url: Option<SecretString>,
    #[serde(default)]
    pub smtp_username: Option<String>,
    #[serde(default)]
    pub smtp_password: Option<SecretString>,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    /// How long a message is retried before it is given up.
    #[serde(default = "default_mail_retry")]
    pub retry_for: HumanDuration,
}

fn default_mail_retry() -> HumanDuration {
    HumanDuration::secs(300)
}

fn default_from() -> String {
    "authmd@localhost".into()
}
fn default_outbox() -> PathBuf {
    PathBuf::from("data/outbox")
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            smtp_username: None,
            smtp_password: None,
            from: default_from(),
            outbox: default_outbox(),
            retry_for: default_mail_retry(),
        }
    }
}

/// docs/protocol.md §9. Each `*_per_*` value is a number of requests per hour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "n5")]
    pub anonymous_per_ip_per_hour: u32,
    #[serde(default = "n100")]
    pub anonymous_per_hour: u32,
    #[serde(default = "n60")]
    pub identity_assertion_per_ip_per_hour: u32,
    #[serde(default = "n1000")]
    pub identity_assertion_per_hour: u32,
    /// Email-required registrations (§3.2): buckets of their own, so that
    /// they never use up the agent-verified budget.
    #[serde(default = "n5")]
    pub verified_email_per_ip_per_hour: u32,
    #[serde(default = "n100")]
    pub verified_email_per_hour: u32,
    #[serde(default = "n3")]
    pub claim_emails_per_registration_per_hour: u32,
    /// Claim emails to one mailbox (case and `+tag` ignored), across every
    /// registration and flow.
    #[serde(default = "n5")]
    pub claim_emails_per_address_per_hour: u32,
    #[serde(default = "n10")]
    pub claim_emails_per_address_per_day: u32,
    /// Access tokens one registration may get for authmd's own assertions
    /// at the token endpoint: each is a credential written, and an
    /// assertion exchanges for as long as it lives.
    #[serde(default = "n120")]
    pub token_exchanges_per_registration_per_hour: u32,
}

fn n120() -> u32 {
    120
}

fn n10() -> u32 {
    10
}

fn n3() -> u32 {
    3
}

fn n60() -> u32 {
    60
}
fn n1000() -> u32 {
    1000
}

fn n5() -> u32 {
    5
}
fn n100() -> u32 {
    100
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            anonymous_per_ip_per_hour: n5(),
            anonymous_per_hour: n100(),
            identity_assertion_per_ip_per_hour: n60(),
            identity_assertion_per_hour: n1000(),
            verified_email_per_ip_per_hour: n5(),
            verified_email_per_hour: n100(),
            claim_emails_per_registration_per_hour: n3(),
            claim_emails_per_address_per_hour: n5(),
            claim_emails_per_address_per_day: n10(),
            token_exchanges_per_registration_per_hour: n120(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Peers whose `X-Forwarded-For` is believed (CIDR or address).
    #[serde(default, deserialize_with = "ip_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Worker threads; 0 = the CPUs this process may run on.
    #[serde(default)]
    pub workers: usize,
    /// Deprecated: `log.format`, which wins when both are set.
    #[serde(default)]
    pub log_format: Option<String>,
    /// Validated credentials kept in memory per replica.
    #[serde(default = "default_cache_capacity")]
    pub credential_cache_capacity: usize,
    /// Upper bound on how long a cached validation is reused before it is
    /// read again from the store (revocations arrive sooner, see
    /// `revocation_poll`). At most [`MAX_CREDENTIAL_CACHE_TTL`].
    #[serde(default = "default_cache_ttl")]
    pub credential_cache_ttl: HumanDuration,
    /// How often each replica reads the store's invalidation log.
    #[serde(default = "default_revocation_poll")]
    pub revocation_poll: HumanDuration,
    /// How often expired registrations are swept.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: HumanDuration,
    /// Time allowed for a whole request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Key of the keyed hashes of one-time codes: at least 32 bytes,
    /// hex or base64. Absent: one is generated at first start and kept in
    /// the database (shared by replicas; set one from a file so that a
    /// database copy alone reveals nothing about live codes).
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// A connection must deliver a complete request head within this time
    /// of being opened, or of sending its first byte after an idle spell.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// How long a keep-alive connection may wait for its next request.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Open connections on the public listener; more wait (idle
    /// keep-alive connections are closed to make room).
    #[serde(default = "default_server_max_connections")]
    pub max_connections: usize,
    /// After SIGINT/SIGTERM, requests in flight get this long to finish;
    /// then every remaining connection is closed.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
    /// TLS for the public listener (PEM files, reloaded on SIGHUP).
    /// Absent: plain HTTP (behind a TLS-terminating proxy).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

fn default_header_read_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_server_max_connections() -> usize {
    10_000
}
fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// Networks written as CIDR (`10.0.0.0/8`) or single addresses (`10.0.0.1`).
fn ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{s:?} is not an address or CIDR network"))
                })
        })
        .collect()
}

fn default_cache_capacity() -> usize {
    100_000
}
fn default_cache_ttl() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_revocation_poll() -> HumanDuration {
    HumanDuration::millis(250)
}
fn default_sweep_interval() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            trusted_proxies: Vec::new(),
            workers: 0,
            log_format: None,
            credential_cache_capacity: default_cache_capacity(),
            credential_cache_ttl: default_cache_ttl(),
            revocation_poll: default_revocation_poll(),
            sweep_interval: default_sweep_interval(),
            request_timeout: default_request_timeout(),
            secret_key: None,
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_server_max_connections(),
            shutdown_timeout: default_shutdown_timeout(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Config {
    /// The issuer (set by [`Config::validate`]).
    pub fn issuer(&self) -> &str {
        self.issuer.as_deref().unwrap_or_default()
    }

    /// The resource identifier (set by [`Config::validate`]).
    pub fn resource_identifier(&self) -> &str {
        self.resource.identifier.as_deref().unwrap_or_default()
    }

    /// The scope rules in force (set by [`Config::validate`]).
    pub fn rules(&self) -> &[ScopeRule] {
        self.resource.rules.as_deref().unwrap_or_default()
    }

    /// Checks every value and fills in derived defaults. Idempotent.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let issuer = match &self.issuer {
            Some(i) => i.clone(),
            None => {
                let ip = match self.listen.ip() {
                    ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
                    ip => ip,
                };
                format!("http://{}", SocketAddr::new(ip, self.listen.port()))
            }
        };
        let issuer_url = check_url("issuer", &issuer)?;
        if issuer_url.path() != "/" || issuer.ends_with('/') {
            return Err(ConfigError::new(
                "issuer",
                "must be an origin without a path or trailing slash, e.g. https://auth.example.com",
            ));
        }
        self.issuer = Some(issuer.clone());

        let identifier = self
            .resource
            .identifier
            .clone()
            .unwrap_or_else(|| format!("{issuer}/api/"));
        let id_url = check_url("resource.identifier", &identifier)?;
        let path = id_url.path();
        if path == "/" || path.starts_with("/.well-known") || path.starts_with("/agent/") {
            return Err(ConfigError::new(
                "resource.identifier",
                "must have a path of its own such as /api/ (discovery and registration live at the root)",
            ));
        }
        self.resource.identifier = Some(identifier);

        if self.resource.name.trim().is_empty() || self.resource.name.contains('\n') {
            return Err(ConfigError::new(
                "resource.name",
                "must be one non-empty line",
            ));
        }
        if let Some(logo) = &self.resource.logo_uri {
            check_url("resource.logo_uri", logo)?;
        }
        if self.resource.scopes.is_empty() {
            return Err(ConfigError::new(
                "resource.scopes",
                "must list at least one scope",
            ));
        }
        for (scope, description) in &self.resource.scopes {
            if !is_scope_token(scope) {
                return Err(ConfigError::new(
                    format!("resource.scopes.\"{scope}\""),
                    "is not a valid OAuth scope name (printable ASCII, no spaces, quotes or backslashes)",
                ));
            }
            if description.trim().is_empty() || description.contains('\n') {
                return Err(ConfigError::new(
                    format!("resource.scopes.\"{scope}\""),
                    "needs a one-line description",
                ));
            }
        }
        let known = |key: &str, list: &[String]| -> Result<(), ConfigError> {
            for s in list {
                if !self.resource.scopes.contains_key(s) {
                    return Err(ConfigError::new(
                        key,
                        format!("scope {s:?} is not listed in [resource.scopes]"),
                    ));
                }
            }
            Ok(())
        };
        known("resource.pre_claim_scopes", &self.resource.pre_claim_scopes)?;
        known(
            "resource.post_claim_scopes",
            &self.resource.post_claim_scopes,
        )?;
        if self.resource.post_claim_scopes.is_empty() {
            return Err(ConfigError::new(
                "resource.post_claim_scopes",
                "must not be empty",
            ));
        }
        if let Some(s) = self
            .resource
            .pre_claim_scopes
            .iter()
            .find(|s| !self.resource.post_claim_scopes.contains(s))
        {
            return Err(ConfigError::new(
                "resource.pre_claim_scopes",
                format!(
                    "scope {s:?} is not in post_claim_scopes: claiming must not take scopes away"
                ),
            ));
        }
        dedup(&mut self.resource.pre_claim_scopes);
        dedup(&mut self.resource.post_claim_scopes);

        let rules = match self.resource.rules.take() {
            Some(rules) => rules,
            None if self.resource.scopes.contains_key("api.write") => vec![ScopeRule {
                methods: ["POST", "PUT", "PATCH", "DELETE"]
                    .map(String::from)
                    .to_vec(),
                path_prefix: id_url.path().to_owned(),
                scopes: vec!["api.write".into()],
            }],
            None => Vec::new(),
        };
        let mut checked = Vec::with_capacity(rules.len());
        for (i, mut rule) in rules.into_iter().enumerate() {
            let key = format!("resource.rules[{i}]");
            for m in &mut rule.methods {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(ConfigError::new(
                        format!("{key}.methods"),
                        format!("{m:?} is not an HTTP method"),
                    ));
                }
                m.make_ascii_uppercase();
            }
            if !rule.path_prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{key}.path_prefix"),
                    "must start with /",
                ));
            }
            if rule.scopes.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.scopes"),
                    "must not be empty",
                ));
            }
            known(&format!("{key}.scopes"), &rule.scopes)?;
            checked.push(rule);
        }
        self.resource.rules = Some(checked);

        for (key, d) in [
            ("ttl.registration", self.ttl.registration),
            ("ttl.claim_link", self.ttl.claim_link),
            ("ttl.otp", self.ttl.otp),
            ("ttl.refresh_token", self.ttl.refresh_token),
            ("ttl.access_token", self.ttl.access_token),
            (
                "server.credential_cache_ttl",
                self.server.credential_cache_ttl,
            ),
            ("server.revocation_poll", self.server.revocation_poll),
            ("server.sweep_interval", self.server.sweep_interval),
            ("server.request_timeout", self.server.request_timeout),
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.shutdown_timeout", self.server.shutdown_timeout),
            ("assertions.clock_skew", self.assertions.clock_skew),
            ("assertions.max_lifetime", self.assertions.max_lifetime),
            ("jwks.cache_min", self.jwks.cache_min),
            ("jwks.refetch_interval", self.jwks.refetch_interval),
            ("jwks.timeout", self.jwks.timeout),
        ] {
            if d.get().is_zero() {
                return Err(ConfigError::new(key, "must be longer than zero"));
            }
        }
        if !(1..=1000).contains(&self.registration.max_api_keys_per_delegation) {
            return Err(ConfigError::new(
                "registration.max_api_keys_per_delegation",
                "must be between 1 and 1000",
            ));
        }
        if self.audit.retention.get() < std::time::Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "audit.retention",
                "must be at least 1d (export events to keep them elsewhere, not to keep fewer)",
            ));
        }
        if self.server.credential_cache_ttl.get() > MAX_CREDENTIAL_CACHE_TTL {
            return Err(ConfigError::new(
                "server.credential_cache_ttl",
                format!(
                    "must be at most {}: cached credentials must be re-read well within \
                     the hour the invalidation log is kept",
                    duration_words(MAX_CREDENTIAL_CACHE_TTL)
                ),
            ));
        }
        if self.server.revocation_poll.get() > std::time::Duration::from_millis(500) {
            return Err(ConfigError::new(
                "server.revocation_poll",
                "must be at most 500ms: revocations must reach every replica within a second",
            ));
        }

        if self.jwks.cache_max < self.jwks.cache_min {
            return Err(ConfigError::new(
                "jwks.cache_max",
                "must not be shorter than jwks.cache_min",
            ));
        }
        if self.jwks.max_bytes < 1024 || self.jwks.max_bytes > 1024 * 1024 {
            return Err(ConfigError::new(
                "jwks.max_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        for (i, a) in self.assertions.extra_audiences.iter().enumerate() {
            if a.is_empty() {
                return Err(ConfigError::new(
                    format!("assertions.extra_audiences[{i}]"),
                    "must not be empty",
                ));
            }
        }
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "database.url",
                "must start with sqlite: or postgres:// (the value is not shown: it may hold a password)",
            ));
        }
        if self.database.max_connections == 0 || self.database.max_connections > 512 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be between 1 and 512",
            ));
        }

        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.providers.iter_mut().enumerate() {
            p.validate(i, &issuer)?;
        }
        for (i, p) in self.providers.iter().enumerate() {
            if !seen.insert(p.issuer.as_str()) {
                return Err(ConfigError::new(
                    format!("providers[{i}].issuer"),
                    "is listed twice",
                ));
            }
        }

        if let Some(smtp) = &self.mail.smtp_url {
            // The value is not echoed: it may hold credentials.
            let u = url::Url::parse(smtp.expose()).map_err(|_| {
                ConfigError::new(
                    "mail.smtp_url",
                    "is not a URL (smtp://host:port or smtps://host:port)",
                )
            })?;
            if !matches!(u.scheme(), "smtp" | "smtps") || u.host_str().is_none() {
                return Err(ConfigError::new(
                    "mail.smtp_url",
                    "must be smtp://host:port[?tls=required] or smtps://host:port",
                ));
            }
            let tls = u.scheme() == "smtps"
                || u.query_pairs().any(|(k, v)| k == "tls" && v == "required");
            if !tls && !is_loopback_host(&u) {
                return Err(ConfigError::new(
                    "mail.smtp_url",
                    "plain smtp:// is accepted only for loopback hosts; use smtps:// or ?tls=required",
                ));
            }
        }
        if self.mail.smtp_password.is_some() && self.mail.smtp_username.is_none() {
            return Err(ConfigError::new(
                "mail.smtp_username",
                "is required with mail.smtp_password",
            ));
        }
        if !self.mail.from.contains('@') || self.mail.from.contains(['\r', '\n']) {
            return Err(ConfigError::new("mail.from", "must be an email address"));
        }

        if let Some(key) = &self.server.secret_key
            && decode_key(key.expose()).is_none()
        {
            return Err(ConfigError::new(
                "server.secret_key",
                "must be at least 32 bytes, hex or base64 (e.g. `openssl rand -hex 32`)",
            ));
        }
        if let Some(upstream) = &self.upstream {
            upstream.validate()?;
        }
        if authmd_jose::Algorithm::from_name(&self.signing.algorithm).is_none() {
            return Err(ConfigError::new(
                "signing.algorithm",
                "must be ES256, EdDSA, RS256 or PS256",
            ));
        }
        self.log.validate(self.server.log_format.as_deref())?;
        if self.server.workers > 1024 {
            return Err(ConfigError::new("server.workers", "must be at most 1024"));
        }
        if self.server.credential_cache_capacity == 0 {
            return Err(ConfigError::new(
                "server.credential_cache_capacity",
                "must be at least 1",
            ));
        }
        if self.server.max_connections == 0 || self.server.max_connections > 1_000_000 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        check_tls_pair(
            "server",
            &self.server.tls_cert_file,
            &self.server.tls_key_file,
        )?;
        check_tls_pair("admin", &self.admin.tls_cert_file, &self.admin.tls_key_file)?;
        if let Some(listen) = self.admin.listen
            && !listen.ip().is_loopback()
            && self.admin.tls_cert_file.is_none()
            && !self.admin.allow_insecure_remote
        {
            return Err(ConfigError::new(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address: the admin token would cross the network \
                     in the clear; set admin.tls_cert_file and admin.tls_key_file, or \
                     admin.allow_insecure_remote = true if the network is private"
                ),
            ));
        }
        self.introspection.validate()?;
        self.cors.validate()?;
        match (&self.admin.listen, &self.admin.token) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "admin.token",
                    "is required with admin.listen (or set AUTHMD_ADMIN_TOKEN_FILE)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "admin.listen",
                    "is required with admin.token (the admin API listens apart from the public one)",
                ));
            }
            (Some(listen), Some(token)) => {
                if token.expose().trim().chars().count() < MIN_ADMIN_TOKEN
                    || token
                        .expose()
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ConfigError::new(
                        "admin.token",
                        format!(
                            "must be at least {MIN_ADMIN_TOKEN} characters without spaces \
                             (e.g. `openssl rand -hex 32`)"
                        ),
                    ));
                }
                if *listen == self.listen {
                    return Err(ConfigError::new(
                        "admin.listen",
                        "must differ from listen: the admin API has a listener of its own",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A certificate chain and its key come together.
fn check_tls_pair(
    section: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    match (cert, key) {
        (Some(_), None) => Err(ConfigError::new(
            format!("{section}.tls_key_file"),
            format!("is required with {section}.tls_cert_file"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            format!("{section}.tls_cert_file"),
            format!("is required with {section}.tls_key_file"),
        )),
        _ => Ok(()),
    }
}

/// An absolute http(s) URL without fragment or query; plain `http` only for
/// loopback hosts.
pub(crate) fn check_url(key: &str, s: &str) -> Result<url::Url, ConfigError> {
    let u = url::Url::parse(s).map_err(|e| ConfigError::new(key, format!("{s:?}: {e}")))?;
    if u.fragment().is_some() || u.query().is_some() || !u.username().is_empty() {
        return Err(ConfigError::new(
            key,
            "must not have a query, fragment or user information",
        ));
    }
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback_host(&u) => Ok(u),
        "http" => Err(ConfigError::new(
            key,
            "plain http is accepted only for loopback hosts; use https",
        )),
        _ => Err(ConfigError::new(key, "must be an http(s) URL")),
    }
}

/// A secret key written as hex or base64 (standard or URL-safe, padded or
/// not), at least 32 bytes.
pub fn decode_key(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let s = s.trim();
    let hex = (s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect::<Vec<u8>>()
    });
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let bytes = hex
        .or_else(|| {
            GeneralPurpose::new(&base64::alphabet::STANDARD, lenient)
                .decode(s)
                .ok()
        })
        .or_else(|| {
            GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient)
                .decode(s)
                .ok()
        })?;
    (bytes.len() >= 32).then_some(bytes)
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        // Non-special schemes (smtp://) keep IPv4 literals as text.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ).
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        load_str(toml, &Default::default())
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.issuer(), "http://127.0.0.1:8080");
        assert_eq!(c.resource_identifier(), "http://127.0.0.1:8080/api/");
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(c.database.url.expose(), "sqlite://data/authmd.db");
        assert_eq!(c.rules().len(), 1);
        assert_eq!(c.rules()[0].path_prefix, "/api/");
        assert!(c.registration.anonymous);
        assert_eq!(c.mail.outbox, PathBuf::from("data/outbox"));
    }

    #[test]
    fn issuer_follows_listen_when_unset() {
        let c = parse("listen = \"0.0.0.0:9000\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.issuer(), "http://127.0.0.1:9000");
        assert_eq!(c.resource_identifier(), "http://127.0.0.1:9000/api/");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("issuer = \"http://auth.example.com\"", "issuer"),
            ("issuer = \"https://auth.example.com/\"", "issuer"),
            (
                "[resource]\nidentifier = \"https://x.example/\"",
                "resource.identifier",
            ),
            (
                "[resource]\npre_claim_scopes = [\"nope\"]",
                "resource.pre_claim_scopes",
            ),
            ("[ttl]\notp = \"0s\"", "ttl.otp"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            (
                "[[resource.rules]]\npath_prefix = \"api\"\nscopes = [\"api.read\"]",
                "resource.rules[0].path_prefix",
            ),
            (
                "[[resource.rules]]\nmethods = [\"P O\"]\npath_prefix = \"/\"\nscopes = [\"api.read\"]",
                "resource.rules[0].methods",
            ),
            (
                "[server]\nrevocation_poll = \"5s\"",
                "server.revocation_poll",
            ),
            (
                "[server]\ncredential_cache_ttl = \"2h\"",
                "server.credential_cache_ttl",
            ),
            (
                "[server]\ncredential_cache_ttl = \"11m\"",
                "server.credential_cache_ttl",
            ),
            (
                "[[providers]]\nissuer = \"http://provider.example\"",
                "providers[0].issuer",
            ),
        ];
        for (toml, key) in cases {
            match parse(toml) {
                Err(e) => assert_eq!(e.key, key, "{toml}: {e}"),
                Ok(_) => panic!("{toml} should be refused"),
            }
        }
    }

    #[test]
    fn database_url_is_not_echoed_in_errors_or_debug() {
        let err = parse("[database]\nurl = \"mysql://root:hunter2@db\"").err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!err.contains("hunter2"), "{err}");
        let c = parse("[database]\nurl = \"postgres://u:hunter2@db/x\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod key_tests {
    use super::decode_key;

    #[test]
    fn keys_decode_from_hex_and_base64() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert_eq!(decode_key(hex).map(|k| k.len()), Some(32));
        assert_eq!(
            decode_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").map(|k| k[31]),
            Some(31)
        );
        assert_eq!(
            decode_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").map(|k| k[1]),
            Some(1)
        );
        assert_eq!(decode_key("too short"), None);
        assert_eq!(decode_key("00ff"), None);
    }
}
