//! The agent side of the auth.md protocol.
//!
//! ```no_run
//! use authmd_client::{Client, ClientError, Method};
//!
//! async fn agent() -> Result<(), ClientError> {
//!     let client = Client::new()?;
//!     // 401 -> protected resource metadata -> authorization server metadata.
//!     let api = "http://127.0.0.1:8080/api/whoami";
//!     let service = client.discover(api).await?;
//!     let mut registration = client.register(&service, &Method::Anonymous).await?;
//!     let mut credential = registration.credential(&service)?;
//!     let response = client.call(&mut credential, reqwest::Method::GET, api, |r| r).await?;
//!     println!("{}", response.status());
//!     // The claim; the callback asks the user for the code (3 tries).
//!     client
//!         .claim(&service, &mut registration, "you@example.com", 3, |_started| async {
//!             ask_the_user_for_the_code().await
//!         })
//!         .await?;
//!     Ok(())
//! }
//! # async fn ask_the_user_for_the_code() -> Option<String> { None }
//! ```
//!
//! Discovery follows docs/protocol.md §2: the `WWW-Authenticate` challenge of a
//! 401 names the protected resource metadata (RFC 9728), whose
//! `authorization_servers` names the issuer, whose metadata (RFC 8414)
//! carries the `agent_auth` block. Each document is checked against what was
//! asked for (RFC 9728 §3.3, RFC 8414 §3.3) before anything in it is used.
//! Errors are typed; a refusal by the service carries its protocol code.
//!
//! Two wire dialects are spoken ([`Dialect`]): the original one of
//! docs/protocol.md, and the current one (`identity_endpoint`, an identity
//! assertion exchanged at `token_endpoint`, rotating refresh tokens, a claim
//! the user confirms at the service before the page shows the code).
//! Discovery picks one per service ([`Service::dialect`]; [`Options`]
//! overrides). The functions of this module are the original dialect's
//! steps; [`current`] has the current dialect's; [`agent::Agent`] is one
//! API over both, with the credential store of [`store`], and is what most
//! agents want.

pub mod agent;
pub mod challenge;
pub mod current;
mod metadata;
pub mod store;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

pub use metadata::{
    AgentAuth, AuthorizationServerMetadata, CredentialTypes, IdentityAssertion,
    ProtectedResourceMetadata,
};

/// The assertion type of an ID-JAG.
pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// The assertion type of the email-required flow.
pub const VERIFIED_EMAIL: &str = "verified_email";
/// Largest metadata document or response read.
pub const MAX_RESPONSE: usize = 256 * 1024;

/// Everything that can go wrong, by kind.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service refused with a protocol error (docs/protocol.md §10).
    #[error("{status} {code}: {message}")]
    Protocol {
        status: u16,
        code: String,
        message: String,
        /// From `Retry-After`, on 429.
        retry_after: Option<Duration>,
        /// Set when the body was not the protocol's `{error, message}`
        /// but a defect of real services that still names the code
        /// (`{code, message}`, dialect-latest.md §6, §8.4): what was
        /// accepted, to show beside the refusal.
        warning: Option<String>,
    },
    /// The service's metadata is missing, inconsistent or not for this
    /// resource; nothing in it was used.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The service does not offer what was asked for.
    #[error("not supported by this service: {0}")]
    Unsupported(String),
    /// A response that is not what the protocol says.
    #[error("unexpected response: {0}")]
    InvalidResponse(String),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The credential store could not be read or written; nothing that
    /// could not be kept was used.
    #[error("credential store: {0}")]
    Store(#[from] store::StoreError),
    /// What is kept cannot be renewed without the user or a new input (a
    /// claimed registration, an ID-JAG that was single-use).
    #[error("{0}")]
    Reauthenticate(String),
}

impl ClientError {
    /// The protocol code of a refusal (`invalid_token`, `otp_invalid`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Protocol { code, .. } => Some(code),
            _ => None,
        }
    }

    /// What was accepted from a service that does not follow the protocol
    /// to the letter, in a sentence (a `{code, message}` refusal).
    pub fn warning(&self) -> Option<&str> {
        match self {
            ClientError::Protocol { warning, .. } => warning.as_deref(),
            _ => None,
        }
    }
}

/// The two wire dialects of auth.md an agent meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// docs/protocol.md: `register_uri` (`POST /agent/auth`) hands out the
    /// credential; the claim sends the user an email whose page shows the
    /// code.
    #[default]
    Original,
    /// dialect-latest.md §2–§3: `identity_endpoint` hands out an identity
    /// assertion exchanged at `token_endpoint`; the claim gives the agent a
    /// `verification_uri` whose page, after the user signs in and confirms,
    /// shows the code; refresh tokens rotate.
    Current,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Original => "original",
            Dialect::Current => "current",
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Dialect, String> {
        match s {
            "original" | "d0" => Ok(Dialect::Original),
            "current" | "latest" | "d2" => Ok(Dialect::Current),
            other => Err(format!("{other:?} is not a dialect (original or current)")),
        }
    }
}

/// How a [`Client`] treats what discovery finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Speak this dialect whatever the metadata suggests (the service must
    /// still publish the endpoints it needs).
    pub dialect: Option<Dialect>,
    /// Accept plain http to hosts other than loopback (never needed in
    /// production; the credential then crosses the network in clear).
    pub allow_http: bool,
}

/// A discovered service: its resource, its issuer and how agents register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Where the protected resource metadata was read.
    pub resource_metadata_url: String,
    pub resource: ProtectedResourceMetadata,
    pub issuer: String,
    pub metadata: AuthorizationServerMetadata,
    /// Which dialect is spoken with it: the current one when the metadata
    /// publishes `identity_endpoint`, else the original (overridable with
    /// [`Options::dialect`]).
    #[serde(default)]
    pub dialect: Dialect,
    /// What discovery accepted with a reservation (metadata without
    /// `issuer`, as services built from the reference implementation
    /// publish it); a tool shows these to its user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Service {
    pub fn agent_auth(&self) -> &AgentAuth {
        &self.metadata.agent_auth
    }

    /// Whether the service offers a method.
    pub fn supports(&self, kind: MethodKind) -> bool {
        let a = self.agent_auth();
        let assertion_types = a
            .identity_assertion
            .as_ref()
            .map(|i| i.assertion_types_supported.as_slice())
            .unwrap_or_default();
        let listed = |t: &str| a.identity_types_supported.iter().any(|x| x == t);
        match (self.dialect, kind) {
            (Dialect::Original, MethodKind::Anonymous) => {
                listed("anonymous") || a.anonymous.is_some()
            }
            (Dialect::Original, MethodKind::Email) => {
                assertion_types.iter().any(|t| t == VERIFIED_EMAIL)
            }
            (Dialect::Original, MethodKind::IdJag) => assertion_types.iter().any(|t| t == ID_JAG),
            // dialect-latest.md §2.3: the types are listed; an ID-JAG also
            // needs its assertion type.
            (Dialect::Current, MethodKind::Anonymous) => listed("anonymous"),
            (Dialect::Current, MethodKind::Email) => listed("service_auth"),
            (Dialect::Current, MethodKind::IdJag) => {
                listed("identity_assertion") && assertion_types.iter().any(|t| t == ID_JAG)
            }
        }
    }

    /// The endpoint registrations go to in this service's dialect.
    pub fn registration_endpoint(&self) -> Result<&str, ClientError> {
        let a = self.agent_auth();
        match self.dialect {
            Dialect::Original => a.register_uri.as_deref(),
            Dialect::Current => a.identity_endpoint.as_deref(),
        }
        .ok_or_else(|| {
            ClientError::Unsupported(format!(
                "{} publishes no {} (the {} dialect's registration endpoint)",
                self.issuer,
                match self.dialect {
                    Dialect::Original => "register_uri",
                    Dialect::Current => "agent_auth.identity_endpoint",
                },
                self.dialect.as_str()
            ))
        })
    }

    /// The first of `preferences` the service offers.
    pub fn choose(&self, preferences: &[MethodKind]) -> Option<MethodKind> {
        preferences.iter().copied().find(|k| self.supports(*k))
    }

    /// Whether `url` is the protected resource or under it.
    pub fn covers(&self, url: &str) -> bool {
        under(url, &self.resource.resource)
    }
}

/// A way to register, without its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    Anonymous,
    Email,
    IdJag,
}

/// A way to register, with its inputs.
#[derive(Clone, PartialEq, Eq)]
pub enum Method {
    /// §3.1: an API key at once, with the pre-claim scopes.
    Anonymous,
    /// §3.2: nothing until the user completes the claim.
    Email {
        address: String,
        credential_type: CredentialType,
    },
    /// §3.3: a credential at once for a provider-signed ID-JAG.
    IdJag {
        assertion: String,
        credential_type: CredentialType,
    },
}

impl Method {
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Anonymous => MethodKind::Anonymous,
            Method::Email { .. } => MethodKind::Email,
            Method::IdJag { .. } => MethodKind::IdJag,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    ApiKey,
    AccessToken,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::AccessToken => "access_token",
        }
    }
}

/// The answer of `POST /agent/auth` (every flow's fields, absent ones
/// `None`). Holds secrets: keep it private.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub registration_id: String,
    #[serde(default)]
    pub registration_type: Option<String>,
    #[serde(default)]
    pub credential_type: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub credential_expires: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claim_url: Option<String>,
    #[serde(default)]
    pub claim_token: Option<String>,
    #[serde(default)]
    pub claim_token_expires: Option<String>,
    #[serde(default)]
    pub post_claim_scopes: Vec<String>,
}

impl Registration {
    /// Takes a completed claim into the registration: the credential it
    /// carries (an email-required registration's first one, or a rotated
    /// key) and the scopes it now holds.
    pub fn absorb(&mut self, done: &ClaimCompleted) {
        if let Some(c) = &done.credential {
            self.credential = Some(c.clone());
            self.credential_type = done.credential_type.clone();
            self.credential_expires = done.credential_expires.clone();
        }
        if !done.scopes.is_empty() {
            self.scopes = done.scopes.clone();
        } else if !self.post_claim_scopes.is_empty() {
            self.scopes = self.post_claim_scopes.clone();
        }
    }

    /// The credential to call the API with, if one was issued.
    pub fn credential(&self, service: &Service) -> Result<Credential, ClientError> {
        let secret = self.credential.clone().ok_or_else(|| {
            ClientError::InvalidResponse("no credential yet: complete the claim first".into())
        })?;
        Ok(Credential {
            secret,
            resource: service.resource.resource.clone(),
            issuer: service.issuer.clone(),
            registration_id: self.registration_id.clone(),
            worked: false,
        })
    }

    /// Where the claim is started: `claim_url` as sent (absolute, or
    /// relative to the registration endpoint, as services in the wild send
    /// either), else the metadata's `claim_uri`. It must be on the issuer's
    /// origin: the claim token is not sent anywhere else.
    pub fn claim_endpoint(&self, service: &Service) -> Result<Url, ClientError> {
        let base = Url::parse(service.registration_endpoint()?)
            .map_err(|e| ClientError::Discovery(format!("register_uri: {e}")))?;
        let url = match (&self.claim_url, &service.agent_auth().claim_uri) {
            (Some(u), _) => base
                .join(u)
                .map_err(|e| ClientError::InvalidResponse(format!("claim_url {u:?}: {e}")))?,
            (None, Some(u)) => Url::parse(u)
                .map_err(|e| ClientError::Discovery(format!("claim_uri {u:?}: {e}")))?,
            (None, None) => {
                return Err(ClientError::Unsupported(
                    "the service names no claim endpoint".into(),
                ));
            }
        };
        same_origin(&url, &service.issuer, "the claim endpoint")?;
        Ok(url)
    }
}

/// A bearer credential and whether it has worked (a 401 for one that used
/// to work means it was revoked or expired).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub secret: String,
    /// The resource it is for: it is sent to URLs under it only.
    pub resource: String,
    /// The issuer that issued it: a renewal goes to the same one only.
    #[serde(default)]
    pub issuer: String,
    pub registration_id: String,
    #[serde(default)]
    pub worked: bool,
}

/// `POST /agent/auth/claim`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimStarted {
    pub registration_id: String,
    pub claim_attempt_id: String,
    pub status: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `POST /agent/auth/claim/complete`'s answer (the credential fields for
/// an email-required registration, or a rotated key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimCompleted {
    pub registration_id: String,
    pub status: String,
    #[serde(default)]
    pub credential_type: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub credential_expires: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

// Debug never shows a secret (credentials, claim tokens, assertions):
// these values end up in logs and panic messages.
fn hidden<T>(v: &Option<T>) -> &'static str {
    if v.is_some() { "(hidden)" } else { "None" }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Anonymous => f.write_str("Anonymous"),
            Method::Email {
                address,
                credential_type,
            } => f
                .debug_struct("Email")
                .field("address", address)
                .field("credential_type", credential_type)
                .finish(),
            Method::IdJag {
                credential_type, ..
            } => f
                .debug_struct("IdJag")
                .field("assertion", &"(hidden)")
                .field("credential_type", credential_type)
                .finish(),
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("registration_id", &self.registration_id)
            .field("registration_type", &self.registration_type)
            .field("credential_type", &self.credential_type)
            .field("credential", &hidden(&self.credential))
            .field("credential_expires", &self.credential_expires)
            .field("scopes", &self.scopes)
            .field("claim_url", &self.claim_url)
            .field("claim_token", &hidden(&self.claim_token))
            .field("claim_token_expires", &self.claim_token_expires)
            .field("post_claim_scopes", &self.post_claim_scopes)
            .finish()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret", &"(hidden)")
            .field("resource", &self.resource)
            .field("issuer", &self.issuer)
            .field("registration_id", &self.registration_id)
            .field("worked", &self.worked)
            .finish()
    }
}

impl std::fmt::Debug for ClaimCompleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimCompleted")
            .field("registration_id", &self.registration_id)
            .field("status", &self.status)
            .field("credential_type", &self.credential_type)
            .field("credential", &hidden(&self.credential))
            .field("credential_expires", &self.credential_expires)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// An HTTP client for agents.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    options: Options,
}

impl Client {
    pub fn new() -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("authmd-client/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            options: Options::default(),
        })
    }

    /// With an HTTP client of the caller's (proxies, TLS roots, timeouts).
    pub fn with_http(http: reqwest::Client) -> Client {
        Client {
            http,
            options: Options::default(),
        }
    }

    /// The same client with other [`Options`].
    pub fn with_options(mut self, options: Options) -> Client {
        self.options = options;
        self
    }

    pub fn options(&self) -> Options {
        self.options
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// https, or http for loopback hosts (or anywhere with
    /// [`Options::allow_http`]).
    pub(crate) fn check_scheme(&self, u: &Url) -> Result<(), ClientError> {
        if self.options.allow_http && u.scheme() == "http" {
            return Ok(());
        }
        check_scheme(u)
    }

    fn well_known(&self, identifier: &str, name: &str) -> Result<String, ClientError> {
        let u = Url::parse(identifier)
            .map_err(|e| ClientError::Discovery(format!("{identifier:?}: {e}")))?;
        self.check_scheme(&u)?;
        let path = u.path().trim_end_matches('/');
        Ok(format!(
            "{}/.well-known/{name}{path}",
            u.origin().ascii_serialization()
        ))
    }

    /// Discovers the service behind `url`: an API URL (its 401 names the
    /// metadata), a resource identifier, or the service's issuer.
    pub async fn discover(&self, url: &str) -> Result<Service, ClientError> {
        let target =
            Url::parse(url).map_err(|e| ClientError::Discovery(format!("{url:?}: {e}")))?;
        self.check_scheme(&target)?;
        let probe = self.http.get(target.clone()).send().await?;
        if probe.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(prm) = probe
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(challenge::resource_metadata)
        {
            return self.discover_from_metadata(&prm, target.as_str()).await;
        }
        // No challenge: RFC 9728 §3.1 well-known locations for the URL as a
        // resource identifier, then the URL as an issuer.
        let path = target.path().trim_end_matches('/');
        let origin = target.origin().ascii_serialization();
        let mut candidates = vec![format!(
            "{origin}/.well-known/oauth-protected-resource{path}"
        )];
        if !path.is_empty() {
            candidates.push(format!("{origin}/.well-known/oauth-protected-resource"));
        }
        for prm in candidates {
            match self.discover_from_metadata(&prm, target.as_str()).await {
                Ok(s) => return Ok(s),
                Err(ClientError::Http(e)) => return Err(ClientError::Http(e)),
                Err(_) => continue,
            }
        }
        // Only a pointer to the resource: what is used is read again below,
        // through the protected resource metadata.
        let issuer = target.as_str().trim_end_matches('/').to_owned();
        let (metadata, _) = self.metadata_of(&issuer, true).await?;
        let resource_url = metadata.resource.clone().ok_or_else(|| {
            ClientError::Discovery(format!("{url} has no protected resource metadata"))
        })?;
        let prm_url = self.well_known(&resource_url, "oauth-protected-resource")?;
        match self.discover_from_metadata(&prm_url, &resource_url).await {
            Err(ClientError::Discovery(e)) => {
                // The root form, where the reference implementation
                // serves it whatever the resource's path.
                let root = Url::parse(&resource_url)
                    .map_err(|e| ClientError::Discovery(format!("resource: {e}")))?;
                let root = self.well_known(
                    &root.origin().ascii_serialization(),
                    "oauth-protected-resource",
                )?;
                if root == prm_url {
                    return Err(ClientError::Discovery(e));
                }
                self.discover_from_metadata(&root, &resource_url).await
            }
            other => other,
        }
    }

    /// Reads the protected resource metadata at `prm_url` for a request to
    /// `requested`, then its authorization server's metadata.
    pub async fn discover_from_metadata(
        &self,
        prm_url: &str,
        requested: &str,
    ) -> Result<Service, ClientError> {
        let prm_url_parsed =
            Url::parse(prm_url).map_err(|e| ClientError::Discovery(format!("{prm_url:?}: {e}")))?;
        self.check_scheme(&prm_url_parsed)?;
        let resource: ProtectedResourceMetadata = self.document(prm_url).await?;
        // RFC 9728 §3.3: the metadata must be for what was asked. Strictly,
        // `resource` is the URL requested; an API has many URLs under one
        // identifier, so a URL under the identifier (same origin, path
        // prefix at a segment boundary) is accepted too.
        let resource_url = Url::parse(&resource.resource).map_err(|e| {
            ClientError::Discovery(format!("resource {:?}: {e}", resource.resource))
        })?;
        self.check_scheme(&resource_url)?;
        if !under(requested, &resource.resource) {
            return Err(ClientError::Discovery(format!(
                "the metadata at {prm_url} is for {:?}, not for {requested}",
                resource.resource
            )));
        }
        let issuer = resource
            .authorization_servers
            .first()
            .cloned()
            .ok_or_else(|| ClientError::Discovery("no authorization_servers".into()))?;
        let (metadata, warning) = self.metadata_of(&issuer, true).await?;
        let dialect = self.dialect_of(&issuer, &metadata)?;
        Ok(Service {
            resource_metadata_url: prm_url.to_owned(),
            resource,
            issuer,
            metadata,
            dialect,
            warnings: warning.into_iter().collect(),
        })
    }

    /// The current dialect when `identity_endpoint` is published, else the
    /// original; [`Options::dialect`] overrides, if the service publishes
    /// what that dialect needs.
    fn dialect_of(
        &self,
        issuer: &str,
        metadata: &AuthorizationServerMetadata,
    ) -> Result<Dialect, ClientError> {
        let a = &metadata.agent_auth;
        let detected = if a.identity_endpoint.is_some() {
            Dialect::Current
        } else {
            Dialect::Original
        };
        let dialect = self.options.dialect.unwrap_or(detected);
        let missing = match dialect {
            Dialect::Original if a.register_uri.is_none() => Some("register_uri"),
            Dialect::Current if a.identity_endpoint.is_none() => Some("identity_endpoint"),
            Dialect::Current if metadata.token_endpoint.is_none() => Some("token_endpoint"),
            _ => None,
        };
        match missing {
            Some(m) => Err(ClientError::Unsupported(format!(
                "{issuer} does not speak the {} dialect: its metadata has no {m}",
                dialect.as_str()
            ))),
            None => Ok(dialect),
        }
    }

    /// RFC 8414 metadata of `issuer`, with its `issuer` checked byte for
    /// byte (§3.3) and its `agent_auth` block required.
    pub async fn authorization_server(
        &self,
        issuer: &str,
    ) -> Result<AuthorizationServerMetadata, ClientError> {
        self.metadata_of(issuer, false).await.map(|(m, _)| m)
    }

    /// RFC 8414 metadata of `issuer`. A present `issuer` member must match
    /// byte for byte (§3.3: this is what stops one service impersonating
    /// another). An absent one is accepted only with `missing_ok`, for an
    /// issuer named by the protected resource metadata: the document was
    /// then fetched from the well-known URL derived from that name, which
    /// is all the §3.3 comparison would establish. Services built from the
    /// reference implementation publish no `issuer`; without this, no
    /// agent could talk to them. The reservation is returned as a warning.
    async fn metadata_of(
        &self,
        issuer: &str,
        missing_ok: bool,
    ) -> Result<(AuthorizationServerMetadata, Option<String>), ClientError> {
        let url = self.well_known(issuer, "oauth-authorization-server")?;
        let metadata: AuthorizationServerMetadata = self.document(&url).await?;
        let warning = match &metadata.issuer {
            Some(named) if named == issuer => None,
            Some(named) => {
                return Err(ClientError::Discovery(format!(
                    "the metadata at {url} names issuer {named:?}, not {issuer:?}"
                )));
            }
            None if missing_ok => Some(format!(
                "the metadata at {url} has no issuer (RFC 8414 requires one); \
                 accepted as {issuer}'s, the authorization server the resource names"
            )),
            None => {
                return Err(ClientError::Discovery(format!(
                    "the metadata at {url} has no issuer"
                )));
            }
        };
        let a = &metadata.agent_auth;
        for (name, u) in [
            ("register_uri", a.register_uri.as_ref()),
            ("identity_endpoint", a.identity_endpoint.as_ref()),
            ("claim_uri", a.claim_uri.as_ref()),
            ("claim_endpoint", a.claim_endpoint.as_ref()),
            ("revocation_uri", a.revocation_uri.as_ref()),
            ("events_endpoint", a.events_endpoint.as_ref()),
            ("revocation_endpoint", metadata.revocation_endpoint.as_ref()),
            ("token_endpoint", metadata.token_endpoint.as_ref()),
        ] {
            if let Some(u) = u {
                let parsed = Url::parse(u)
                    .map_err(|e| ClientError::Discovery(format!("{name} {u:?}: {e}")))?;
                same_origin(&parsed, issuer, name)?;
            }
        }
        Ok((metadata, warning))
    }

    pub(crate) async fn document<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, ClientError> {
        let r = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(ClientError::Discovery(format!(
                "{url} answered {}",
                r.status()
            )));
        }
        let bytes = read_capped(r).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Discovery(format!("{url} is not the expected JSON: {e}")))
    }

    /// Registers with `method`, which the service must offer.
    pub async fn register(
        &self,
        service: &Service,
        method: &Method,
    ) -> Result<Registration, ClientError> {
        if service.dialect != Dialect::Original {
            return Err(ClientError::Unsupported(
                "register speaks the original dialect; use authmd_client::agent::Agent, or Client::identity, for the current one".into(),
            ));
        }
        if !service.supports(method.kind()) {
            return Err(ClientError::Unsupported(format!(
                "{:?} registration is not offered by {}",
                method.kind(),
                service.issuer
            )));
        }
        if let Method::IdJag { assertion, .. } = method {
            // A live assertion is a credential for the service it names:
            // never hand it to another.
            let aud = assertion_audience(assertion);
            if aud.as_deref() != Some(service.issuer.as_str()) {
                return Err(ClientError::Unsupported(format!(
                    "the ID-JAG is for {}, not for {}: it is not sent",
                    aud.as_deref().unwrap_or("(no readable aud)"),
                    service.issuer
                )));
            }
        }
        let body = match method {
            Method::Anonymous => serde_json::json!({
                "type": "anonymous",
                "requested_credential_type": "api_key",
            }),
            Method::Email {
                address,
                credential_type,
            } => serde_json::json!({
                "type": "identity_assertion",
                "assertion_type": VERIFIED_EMAIL,
                "assertion": address,
                "requested_credential_type": credential_type.as_str(),
            }),
            Method::IdJag {
                assertion,
                credential_type,
            } => serde_json::json!({
                "type": "identity_assertion",
                "assertion_type": ID_JAG,
                "assertion": assertion,
                "requested_credential_type": credential_type.as_str(),
            }),
        };
        self.post_json(service.registration_endpoint()?, &body)
            .await
    }

    /// Starts the claim of an anonymous registration (or re-sends the
    /// email of an email-required one): the user gets an email.
    pub async fn start_claim(
        &self,
        service: &Service,
        registration: &Registration,
        email: &str,
    ) -> Result<ClaimStarted, ClientError> {
        let token = claim_token(registration)?;
        let url = registration.claim_endpoint(service)?;
        self.post_json(
            url.as_str(),
            &serde_json::json!({"claim_token": token, "email": email}),
        )
        .await
    }

    /// Completes the claim with the code the user read from the claim page.
    pub async fn complete_claim(
        &self,
        service: &Service,
        registration: &Registration,
        otp: &str,
    ) -> Result<ClaimCompleted, ClientError> {
        let token = claim_token(registration)?;
        let mut url = registration.claim_endpoint(service)?;
        let path = format!("{}/complete", url.path().trim_end_matches('/'));
        url.set_path(&path);
        self.post_json(
            url.as_str(),
            &serde_json::json!({"claim_token": token, "otp": otp.trim()}),
        )
        .await
    }

    /// The whole claim: starts it for `email`, asks `code` for the code the
    /// user reads from the claim page, completes it. A wrong code is asked
    /// again (up to `attempts` times in all).
    pub async fn claim<F, Fut>(
        &self,
        service: &Service,
        registration: &mut Registration,
        email: &str,
        attempts: usize,
        mut code: F,
    ) -> Result<ClaimCompleted, ClientError>
    where
        F: FnMut(&ClaimStarted) -> Fut,
        Fut: std::future::Future<Output = Option<String>>,
    {
        let started = self.start_claim(service, registration, email).await?;
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let Some(otp) = code(&started).await else {
                break;
            };
            match self.complete_claim(service, registration, &otp).await {
                Ok(done) => {
                    registration.absorb(&done);
                    return Ok(done);
                }
                Err(e) if e.code() == Some("otp_invalid") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidResponse("no code was given".into())))
    }

    /// Sends a request with the credential. A 2xx marks it as working. A
    /// 401 for a credential that used to work means it was revoked or
    /// expired: the answer is returned as is and `credential.worked` stays
    /// true, see [`Client::call_or_renew`] to recover.
    pub async fn call(
        &self,
        credential: &mut Credential,
        method: reqwest::Method,
        url: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if !under(url, &credential.resource) {
            return Err(ClientError::Unsupported(format!(
                "{url} is not under {}: the credential is not sent there",
                credential.resource
            )));
        }
        let request = build(
            self.http
                .request(method, url)
                .bearer_auth(&credential.secret),
        );
        let response = request.send().await?;
        if response.status().is_success() {
            credential.worked = true;
        }
        Ok(response)
    }

    /// Like [`Client::call`]; on a 401 for a credential that used to work,
    /// drops it, rediscovers the service from the challenge, obtains a new
    /// credential from `renew` and sends the request once more. `build`
    /// adds what the request carries (headers, body) each time.
    pub async fn call_or_renew<B, R, Fut>(
        &self,
        credential: &mut Credential,
        method: reqwest::Method,
        url: &str,
        build: B,
        renew: R,
    ) -> Result<(reqwest::Response, Option<Service>), ClientError>
    where
        B: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        R: FnOnce(Service) -> Fut,
        Fut: std::future::Future<Output = Result<Credential, ClientError>>,
    {
        let first = self.call(credential, method.clone(), url, &build).await?;
        if first.status() != reqwest::StatusCode::UNAUTHORIZED || !credential.worked {
            return Ok((first, None));
        }
        let challenges: Vec<challenge::Challenge> = first
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
            .collect();
        // RFC 6750 §3.1: a credential that stopped working is
        // `invalid_token` (or, from services that say less, no code).
        if challenges
            .iter()
            .any(|c| c.param("error").is_some_and(|e| e != "invalid_token"))
        {
            return Ok((first, None));
        }
        let prm = challenges
            .iter()
            .find_map(|c| c.param("resource_metadata").map(str::to_owned));
        let service = match prm {
            Some(prm) => self.discover_from_metadata(&prm, url).await?,
            None => self.discover(url).await?,
        };
        // Whatever the API's metadata says now, a renewal goes to the
        // issuer the credential came from (an assertion minted for it, or
        // a new registration, is never handed to another).
        if !credential.issuer.is_empty() && service.issuer != credential.issuer {
            return Err(ClientError::Discovery(format!(
                "{url} now names issuer {:?}, not {:?}: not renewed there",
                service.issuer, credential.issuer
            )));
        }
        *credential = renew(service.clone()).await?;
        let second = self.call(credential, method, url, &build).await?;
        Ok((second, Some(service)))
    }

    /// Ends `credential` at the service (RFC 7009 `revocation_endpoint`):
    /// the token authenticates itself. The credential is only ever sent to
    /// the issuer it came from, at an endpoint on that issuer's origin.
    /// `Ok` means the service answered 200, which RFC 7009 §2.2 also says
    /// for a token it did not know.
    pub async fn revoke(
        &self,
        service: &Service,
        credential: &Credential,
    ) -> Result<(), ClientError> {
        let endpoint = service
            .metadata
            .revocation_endpoint
            .as_deref()
            .ok_or_else(|| {
                ClientError::Unsupported(format!(
                    "{} publishes no revocation_endpoint",
                    service.issuer
                ))
            })?;
        if !credential.issuer.is_empty() && credential.issuer != service.issuer {
            return Err(ClientError::Unsupported(format!(
                "the credential is from {}, not {}: it is not sent",
                credential.issuer, service.issuer
            )));
        }
        let url = Url::parse(endpoint).map_err(|e| {
            ClientError::Discovery(format!("revocation_endpoint {endpoint:?}: {e}"))
        })?;
        same_origin(&url, &service.issuer, "revocation_endpoint")?;
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &credential.secret)
            .finish();
        let r = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let retry_after = retry_after(r.headers());
        let bytes = read_capped(r).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(refusal(status, retry_after, &bytes))
        }
    }

    pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        let r = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        let retry_after = retry_after(r.headers());
        let bytes = read_capped(r).await?;
        if !status.is_success() {
            return Err(refusal(status, retry_after, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::InvalidResponse(format!("{url}: {e}")))
    }
}

/// `Retry-After` in seconds, if the answer has one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A refusal with the protocol's code: `{"error", "message"}`, the OAuth
/// shape `{"error", "error_description"}`, or the `{"code", "message"}`
/// envelope some hosted services send (dialect-latest.md §7), read as the
/// same thing rather than as an unknown error.
pub(crate) fn refusal(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ClientError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let clean =
        |s: &str, n: usize| -> String { s.chars().filter(|c| !c.is_control()).take(n).collect() };
    // `{error, …}` is the protocol's envelope (and RFC 6749's, RFC 6750's);
    // `{err, description}` is the current dialect's for security events.
    // `{code, message}` is neither: a defect of real services (hosted
    // AuthKit), read for its code with a warning rather than surfacing as
    // `unknown`.
    let (code, warning) = match (v["error"].as_str(), v["code"].as_str(), v["err"].as_str()) {
        (Some(e), _, _) => (e, None),
        (None, Some(c), _) => (
            c,
            Some(format!(
                "the service answered a {} refusal as {{code, message}} instead of the protocol's {{error, message}}: code {:?} was read as the error code",
                status.as_u16(),
                clean(c, 100)
            )),
        ),
        (None, None, Some(e)) => (e, None),
        (None, None, None) => ("unknown", None),
    };
    ClientError::Protocol {
        status: status.as_u16(),
        code: clean(code, 100),
        message: clean(
            v["message"]
                .as_str()
                .or(v["error_description"].as_str())
                .or(v["description"].as_str())
                .unwrap_or_default(),
            1000,
        ),
        retry_after,
        warning,
    }
}

fn claim_token(registration: &Registration) -> Result<&str, ClientError> {
    registration
        .claim_token
        .as_deref()
        .ok_or_else(|| ClientError::Unsupported("this registration has no claim token".into()))
}

pub(crate) async fn read_capped(mut r: reqwest::Response) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        if out.len() + chunk.len() > MAX_RESPONSE {
            return Err(ClientError::InvalidResponse(format!(
                "the response is larger than {MAX_RESPONSE} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The `aud` of a compact JWS's payload, read without verifying anything
/// (the service verifies): a string, or an array of exactly one.
pub fn assertion_audience(assertion: &str) -> Option<String> {
    use base64::Engine;
    let payload = assertion.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    match &claims["aud"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.len() == 1 => a[0].as_str().map(str::to_owned),
        _ => None,
    }
}

/// RFC 8414 §3 / RFC 9728 §3.1: the well-known segment goes between the
/// host and the path.
pub fn well_known(identifier: &str, name: &str) -> Result<String, ClientError> {
    let u = Url::parse(identifier)
        .map_err(|e| ClientError::Discovery(format!("{identifier:?}: {e}")))?;
    check_scheme(&u)?;
    let path = u.path().trim_end_matches('/');
    Ok(format!(
        "{}/.well-known/{name}{path}",
        u.origin().ascii_serialization()
    ))
}

/// https, or http for loopback hosts only.
fn check_scheme(u: &Url) -> Result<(), ClientError> {
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(ClientError::Discovery(format!(
            "{u} is not https (plain http is accepted for loopback only)"
        ))),
    }
}

pub(crate) fn same_origin(u: &Url, issuer: &str, what: &str) -> Result<(), ClientError> {
    let issuer = Url::parse(issuer).map_err(|e| ClientError::Discovery(format!("issuer: {e}")))?;
    if u.origin() != issuer.origin() {
        return Err(ClientError::Discovery(format!(
            "{what} {u} is not on the issuer's origin {}",
            issuer.origin().ascii_serialization()
        )));
    }
    Ok(())
}

/// `url` is `resource`, or under it: same origin, and the resource's path
/// is a prefix of the URL's at a segment boundary.
pub(crate) fn under(url: &str, resource: &str) -> bool {
    let (Ok(u), Ok(r)) = (Url::parse(url), Url::parse(resource)) else {
        return false;
    };
    if u.origin() != r.origin() {
        return false;
    }
    if url == resource {
        return true;
    }
    let base = r.path().trim_end_matches('/');
    let path = u.path();
    path == base || path.starts_with(&format!("{base}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_insert_the_segment_before_the_path() {
        assert_eq!(
            well_known("http://127.0.0.1:8080", "oauth-authorization-server")
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:8080/.well-known/oauth-authorization-server")
        );
        assert_eq!(
            well_known("https://a.example/api/", "oauth-protected-resource")
                .ok()
                .as_deref(),
            Some("https://a.example/.well-known/oauth-protected-resource/api")
        );
        assert!(
            well_known("http://a.example/", "x").is_err(),
            "plain http off loopback"
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let r = Registration {
            registration_id: "reg_1".into(),
            credential: Some("amd_sk_SECRET".into()),
            claim_token: Some("clm_SECRET".into()),
            ..Registration::default()
        };
        let c = Credential {
            secret: "amd_sk_SECRET".into(),
            resource: "http://127.0.0.1:8080/api/".into(),
            issuer: "http://127.0.0.1:8080".into(),
            registration_id: "reg_1".into(),
            worked: true,
        };
        let done = ClaimCompleted {
            registration_id: "reg_1".into(),
            status: "claimed".into(),
            credential_type: None,
            credential: Some("amd_sk_SECRET".into()),
            credential_expires: None,
            scopes: vec![],
        };
        let m = Method::IdJag {
            assertion: "eyJ.SECRET.sig".into(),
            credential_type: CredentialType::ApiKey,
        };
        for shown in [
            format!("{r:?}"),
            format!("{c:?}"),
            format!("{done:?}"),
            format!("{m:?}"),
        ] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(shown.contains("(hidden)"), "{shown}");
        }
        assert!(format!("{r:?}").contains("reg_1"));
    }

    #[test]
    fn urls_under_a_resource() {
        let r = "http://127.0.0.1:8080/api/";
        assert!(under("http://127.0.0.1:8080/api/whoami", r));
        assert!(under("http://127.0.0.1:8080/api", r));
        assert!(!under("http://127.0.0.1:8080/apix", r));
        assert!(!under("http://127.0.0.1:8081/api/whoami", r));
        assert!(!under("https://127.0.0.1:8080/api/whoami", r));
        assert!(under(
            "http://127.0.0.1:8080/anything",
            "http://127.0.0.1:8080/"
        ));
    }
}
