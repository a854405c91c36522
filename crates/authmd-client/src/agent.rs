//! One API for both dialects, over the credential store: what `authmd
//! agent` and its MCP server call.
//!
//! - [`Agent::authenticate`]: reuse what is kept, or register (ID-JAG,
//!   email, or anonymous, from what the service advertises and what the
//!   caller holds); with an email and an anonymous registration, start the
//!   claim (the agent-started direction of the ceremony; an email-required
//!   registration or an ID-JAG step-up starts it from the service's side).
//! - [`Agent::complete_claim`]: the code the user read from the page.
//! - [`Agent::fetch`]: a call with the kept credential, renewed on the way
//!   (access token, then assertion, then refresh token, then
//!   re-registration where no user is needed) and once more after a 401.
//! - [`Agent::revoke`], [`Agent::status`], [`Agent::forget`].
//!
//! Every one-time secret (a claim token, a refresh token, a credential) is
//! written to the store before it is used, under the store's lock, so a
//! crash or a second process never loses or double-spends one.
//!
//! ```no_run
//! use authmd_client::agent::{Agent, Authenticate};
//! use authmd_client::{Client, ClientError, store::Store};
//!
//! async fn agent() -> Result<(), ClientError> {
//!     let agent = Agent::new(Client::new()?, Store::new(Store::default_path()?));
//!     let api = "https://api.example.com/v1/items";
//!     let out = agent.authenticate(Authenticate { target: api.into(), ..Default::default() }).await?;
//!     println!("{}", out.instructions); // what to do next, in a sentence
//!     let fetched = agent.fetch(api, reqwest::Method::GET, |r| r).await?; // renewed as needed
//!     println!("{}", fetched.response.status());
//!     // For wider scopes: start the claim with the user's email, then the code they read back.
//!     let out = agent.start_claim(Some(api), "you@example.com").await?;
//!     println!("{}", out.instructions);
//!     agent.complete_claim(Some(api), "123456").await?;
//!     Ok(())
//! }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::current::{IdentityRequest, IdentityResponse};
use crate::store::{Store, StoreLock};
use crate::{
    Client, ClientError, Credential, CredentialType, Dialect, Method, MethodKind, Registration,
    Service, assertion_audience, same_origin,
};

/// A token is renewed this long before it expires.
pub const MARGIN_SECS: i64 = 30;

/// A secret and when it stops working (Unix seconds; `None`: not said).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Secret {
    fn new(value: String, expires_at: Option<&str>) -> Secret {
        Secret {
            value,
            expires_at: expires_at.and_then(parse_time),
        }
    }

    fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now + MARGIN_SECS)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("value", &"(hidden)")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A claim in flight: its one-time token and where the user was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingClaim {
    pub token: Secret,
    /// `claim_url` / `claim.url` as the service sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The user it was started for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Current dialect: the page the user opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_expires_at: Option<i64>,
    /// Whether the user has been reached (an email sent, an attempt made).
    #[serde(default)]
    pub started: bool,
}

/// What is kept per issuer. Holds secrets: Debug hides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub service: Service,
    pub registration_id: String,
    #[serde(default)]
    pub registration_type: Option<String>,
    pub method: MethodKind,
    /// The command that mints a fresh ID-JAG, for re-registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_jag_command: Option<String>,
    /// Bound to a user (claimed, or an ID-JAG's user): never silently
    /// replaced by an unclaimed registration.
    #[serde(default)]
    pub claimed: bool,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub post_claim_scopes: Vec<String>,
    /// RFC 8707 resource asked for at the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The bearer credential: the original dialect's key or token, the
    /// current dialect's access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<String>,
    /// Current dialect: the identity assertion (reusable until it expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<Secret>,
    /// Current dialect: the rotating refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<PendingClaim>,
}

impl Record {
    /// The credential for [`Client::call`]: sent under the resource only.
    pub fn credential(&self) -> Option<Credential> {
        self.access.as_ref().map(|a| Credential {
            secret: a.value.clone(),
            resource: self.service.resource.resource.clone(),
            issuer: self.service.issuer.clone(),
            registration_id: self.registration_id.clone(),
            worked: true,
        })
    }

    fn usable(&self) -> bool {
        self.access.is_some() || self.assertion.is_some() || self.refresh_token.is_some()
    }
}

/// What [`Agent::authenticate`] is given.
#[derive(Debug, Clone, Default)]
pub struct Authenticate {
    /// The service: its issuer, or any URL of its API (a 401 leads on).
    pub target: String,
    /// The user's email: registers email-required where offered, else
    /// starts the claim of an anonymous registration.
    pub email: Option<String>,
    /// A provider-signed ID-JAG for this service.
    pub id_jag: Option<String>,
    /// A command printing a fresh ID-JAG (run again to re-register).
    pub id_jag_command: Option<String>,
    /// Insist on an anonymous registration.
    pub anonymous: bool,
    /// RFC 8707 resource for the token endpoint (current dialect).
    pub resource: Option<String>,
    /// Register again even if something is kept.
    pub force_reregister: bool,
    /// The original dialect's credential type (default `api_key`).
    pub credential_type: Option<CredentialType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// A credential is held: calls can be made.
    Authenticated,
    /// Nothing until the user completes the claim.
    ClaimRequired,
}

/// The claim as the agent shows it to its user (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub started: bool,
}

/// The result of a step, for a person or a model: no secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: OutcomeStatus,
    pub issuer: String,
    pub dialect: Dialect,
    pub registration_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_type: Option<String>,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_claim_scopes: Vec<String>,
    pub claimed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimView>,
    /// What to do next, in a sentence.
    pub instructions: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One kept registration, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub issuer: String,
    pub dialect: Dialect,
    pub resource: String,
    pub registration_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_type: Option<String>,
    pub method: MethodKind,
    pub claimed: bool,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_claim_scopes: Vec<String>,
    pub has_access_token: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<String>,
    pub has_assertion: bool,
    pub has_refresh_token: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimView>,
    pub renewable_alone: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A response and how it was obtained.
#[derive(Debug)]
pub struct Fetched {
    pub response: reqwest::Response,
    pub issuer: String,
    /// Set when the credential was renewed on the way: how.
    pub renewed: Option<Renewed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Renewed {
    /// A new access token from the kept assertion.
    Exchanged,
    /// A new assertion (and refresh token) from the refresh token.
    Refreshed,
    /// A new registration.
    Reregistered,
}

/// The agent: a [`Client`] and a [`Store`].
#[derive(Debug, Clone)]
pub struct Agent {
    client: Client,
    store: Store,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn show_time(t: Option<i64>) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(t?).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn trim(issuer: &str) -> &str {
    issuer.trim_end_matches('/')
}

/// The kept issuer for `target`: the issuer itself, or a URL under a kept
/// service's resource; `None` picks the only one.
pub fn find(all: &BTreeMap<String, Record>, target: Option<&str>) -> Result<String, ClientError> {
    match target {
        Some(t) => {
            let t = t.trim();
            all.iter()
                .find(|(issuer, _)| trim(issuer) == trim(t))
                .or_else(|| all.iter().find(|(_, r)| r.service.covers(t)))
                .map(|(i, _)| i.clone())
                .ok_or_else(|| {
                    ClientError::Reauthenticate(format!(
                        "no registration kept for {t}: authenticate with it first"
                    ))
                })
        }
        None => match all.len() {
            0 => Err(ClientError::Reauthenticate(
                "no registration kept: authenticate with a service first".into(),
            )),
            1 => Ok(all.keys().next().cloned().unwrap_or_default()),
            _ => Err(ClientError::Reauthenticate(
                "several services are kept: say which (its issuer or an API URL)".into(),
            )),
        },
    }
}

impl Agent {
    pub fn new(client: Client, store: Store) -> Agent {
        Agent { client, store }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every kept record (secrets included: for the caller's eyes only).
    pub fn records(&self) -> Result<BTreeMap<String, Record>, ClientError> {
        Ok(self.store.read()?)
    }

    /// Reuses what is kept for the service, or registers; see the module
    /// documentation.
    pub async fn authenticate(&self, req: Authenticate) -> Result<Outcome, ClientError> {
        let lock = self.store.lock().await?;
        let all: BTreeMap<String, Record> = lock.read()?;
        let kept = find(&all, Some(&req.target))
            .ok()
            .and_then(|i| all.get(&i).cloned());
        let fresh_identity = req.id_jag.is_some() || req.id_jag_command.is_some();
        if let Some(mut rec) = kept.clone()
            && !req.force_reregister
            && !fresh_identity
        {
            let claim_open = rec.claim.is_some() && !rec.claimed;
            match &req.email {
                Some(email) if claim_open => {
                    return self.start_claim_locked(&lock, rec, email).await;
                }
                _ if rec.usable() => {
                    let mut warnings = rec.service.warnings.clone();
                    match self.ensure_access(&lock, &mut rec, &mut warnings).await {
                        Ok(_) => return Ok(outcome(&rec, warnings)),
                        Err(e @ ClientError::Reauthenticate(_)) if rec.claimed => return Err(e),
                        Err(ClientError::Reauthenticate(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ if claim_open && !req.anonymous => {
                    return Ok(outcome(&rec, rec.service.warnings.clone()));
                }
                _ => {}
            }
        }
        let service = match &kept {
            Some(r) if !req.force_reregister => r.service.clone(),
            _ => self.client.discover(&req.target).await?,
        };
        let (method, assertion) = choose(&service, &req)?;
        let mut rec = self
            .register(&lock, &service, method, assertion.as_deref(), &req)
            .await?;
        let mut warnings = service.warnings.clone();
        // An email with an anonymous start: the agent starts the claim.
        if let Some(email) = &req.email
            && method == MethodKind::Anonymous
            && rec.claim.is_some()
        {
            return self.start_claim_locked(&lock, rec, email).await;
        }
        if rec.usable() {
            self.ensure_access(&lock, &mut rec, &mut warnings).await?;
        }
        Ok(outcome(&rec, warnings))
    }

    async fn register(
        &self,
        lock: &StoreLock,
        service: &Service,
        method: MethodKind,
        assertion: Option<&str>,
        req: &Authenticate,
    ) -> Result<Record, ClientError> {
        if let Some(a) = assertion {
            // A live assertion is a credential for the service it names:
            // never hand it to another.
            let aud = assertion_audience(a);
            if aud.as_deref().map(trim) != Some(trim(&service.issuer)) {
                return Err(ClientError::Unsupported(format!(
                    "the ID-JAG is for {}, not for {}: it is not sent",
                    aud.as_deref().unwrap_or("(no readable aud)"),
                    service.issuer
                )));
            }
        }
        let rec = match service.dialect {
            Dialect::Original => {
                let ct = req.credential_type.unwrap_or(CredentialType::ApiKey);
                let m = match method {
                    MethodKind::Anonymous => Method::Anonymous,
                    MethodKind::Email => Method::Email {
                        address: req.email.clone().unwrap_or_default(),
                        credential_type: ct,
                    },
                    MethodKind::IdJag => Method::IdJag {
                        assertion: assertion.unwrap_or_default().to_owned(),
                        credential_type: ct,
                    },
                };
                let r = self.client.register(service, &m).await?;
                original_record(service, method, r, req)
            }
            Dialect::Current => {
                let request = match method {
                    MethodKind::Anonymous => IdentityRequest::Anonymous,
                    MethodKind::Email => IdentityRequest::ServiceAuth {
                        login_hint: req.email.as_deref().unwrap_or_default(),
                    },
                    MethodKind::IdJag => IdentityRequest::IdJag {
                        assertion: assertion.unwrap_or_default(),
                    },
                };
                let r = self.client.identity(service, request).await?;
                current_record(service, method, r, req)?
            }
        };
        // Kept before anything in it is used (the claim token is shown
        // once; the credential is the only copy).
        save(lock, &rec)?;
        Ok(rec)
    }

    /// Makes `rec.access` live: the kept one, else (current dialect) an
    /// exchange of the kept assertion, else a refresh, else a new
    /// registration where no user is needed. Each new secret is saved
    /// before it is used.
    async fn ensure_access(
        &self,
        lock: &StoreLock,
        rec: &mut Record,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Renewed>, ClientError> {
        let t = now();
        if rec.access.as_ref().is_some_and(|a| a.live(t)) {
            return Ok(None);
        }
        if rec.service.dialect == Dialect::Current {
            if let Some(a) = rec.assertion.clone().filter(|a| a.live(t)) {
                match self.exchange(lock, rec, &a.value).await {
                    Ok(()) => return Ok(Some(Renewed::Exchanged)),
                    Err(ClientError::Protocol { code, warning, .. }) if code == "invalid_grant" => {
                        warnings.extend(warning);
                        rec.assertion = None;
                        save(lock, rec)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(r) = rec.refresh_token.clone().filter(|r| r.live(t)) {
                match self
                    .client
                    .identity(
                        &rec.service,
                        IdentityRequest::Refresh {
                            refresh_token: &r.value,
                        },
                    )
                    .await
                {
                    Ok(resp) => {
                        let identity = resp.identity.ok_or_else(|| {
                            ClientError::InvalidResponse("a refresh without an identity".into())
                        })?;
                        rec.assertion = Some(Secret::new(
                            identity.assertion.clone(),
                            identity.expires_at.as_deref(),
                        ));
                        // The old token is spent: the new one is kept
                        // before the assertion is used.
                        rec.refresh_token = identity
                            .refresh_token
                            .map(|r| Secret::new(r.value, r.expires_at.as_deref()));
                        save(lock, rec)?;
                        self.exchange(lock, rec, &identity.assertion).await?;
                        return Ok(Some(Renewed::Refreshed));
                    }
                    Err(ClientError::Protocol { code, warning, .. })
                        if code == "invalid_refresh_token" =>
                    {
                        warnings.extend(warning);
                        rec.refresh_token = None;
                        save(lock, rec)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // A new registration, where no user is needed.
        let assertion = match (rec.method, &rec.id_jag_command) {
            (MethodKind::IdJag, Some(cmd)) => Some(run_minter(cmd)?),
            (MethodKind::Anonymous, _) if !rec.claimed => None,
            (MethodKind::Anonymous, _) => {
                return Err(ClientError::Reauthenticate(
                    "a user had claimed this registration and its credential no longer works: authenticate again (anonymously) and have the user claim it".into(),
                ));
            }
            (MethodKind::IdJag, None) => {
                return Err(ClientError::Reauthenticate(
                    "an ID-JAG is single-use: authenticate again with a fresh one (or give a command that mints one)".into(),
                ));
            }
            (MethodKind::Email, _) => {
                return Err(ClientError::Reauthenticate(format!(
                    "an email-required registration needs its user: authenticate again with the email{}",
                    if rec.claim.is_some() {
                        ", or complete the claim in flight"
                    } else {
                        ""
                    }
                )));
            }
        };
        let req = Authenticate {
            target: rec.service.issuer.clone(),
            id_jag_command: rec.id_jag_command.clone(),
            resource: rec.resource.clone(),
            credential_type: rec.credential_type.as_deref().and_then(|c| match c {
                "access_token" => Some(CredentialType::AccessToken),
                "api_key" => Some(CredentialType::ApiKey),
                _ => None,
            }),
            ..Authenticate::default()
        };
        let service = rec.service.clone();
        let mut fresh = self
            .register(lock, &service, rec.method, assertion.as_deref(), &req)
            .await?;
        warnings.push(format!(
            "registered again with {}: registration {} replaces {}",
            service.issuer, fresh.registration_id, rec.registration_id
        ));
        if fresh.access.is_none() && fresh.assertion.is_some() {
            let a = fresh.assertion.clone().map(|a| a.value).unwrap_or_default();
            self.exchange(lock, &mut fresh, &a).await?;
        }
        *rec = fresh;
        Ok(Some(Renewed::Reregistered))
    }

    async fn exchange(
        &self,
        lock: &StoreLock,
        rec: &mut Record,
        assertion: &str,
    ) -> Result<(), ClientError> {
        let t = self
            .client
            .exchange(&rec.service, assertion, rec.resource.as_deref())
            .await?;
        rec.access = Some(Secret {
            value: t.access_token,
            expires_at: t
                .expires_in
                .map(|s| now() + s.min(i64::MAX as u64 / 2) as i64),
        });
        rec.credential_type = Some("access_token".into());
        if let Some(scope) = t.scope {
            rec.scopes = scope.split_whitespace().map(str::to_owned).collect();
        }
        save(lock, rec)
    }

    /// Starts (or restarts) the claim for `email`: the original dialect
    /// emails the user a link; the current one returns a
    /// `verification_uri` to hand to the user.
    pub async fn start_claim(
        &self,
        target: Option<&str>,
        email: &str,
    ) -> Result<Outcome, ClientError> {
        let lock = self.store.lock().await?;
        let all: BTreeMap<String, Record> = lock.read()?;
        let issuer = find(&all, target)?;
        let rec = all.get(&issuer).cloned().ok_or_else(gone)?;
        self.start_claim_locked(&lock, rec, email).await
    }

    async fn start_claim_locked(
        &self,
        lock: &StoreLock,
        mut rec: Record,
        email: &str,
    ) -> Result<Outcome, ClientError> {
        let mut warnings = rec.service.warnings.clone();
        let claim = rec.claim.clone().ok_or_else(|| {
            ClientError::Unsupported(if rec.claimed {
                "this registration is already claimed".into()
            } else {
                "this registration has no claim token: it cannot be claimed".into()
            })
        })?;
        match rec.service.dialect {
            Dialect::Original => {
                let reg = as_registration(&rec, &claim);
                self.client.start_claim(&rec.service, &reg, email).await?;
                rec.claim = Some(PendingClaim {
                    email: Some(email.to_owned()),
                    started: true,
                    ..claim
                });
            }
            Dialect::Current => {
                let url = claim_url(&rec.service, &claim, &mut warnings)?;
                let r = self
                    .client
                    .start_attempt(&rec.service, &url, &claim.token.value, email)
                    .await?;
                let attempt = r.attempt.ok_or_else(|| {
                    ClientError::InvalidResponse("the claim endpoint returned no attempt".into())
                })?;
                rec.claim = Some(PendingClaim {
                    email: Some(email.to_owned()),
                    verification_uri: Some(attempt.verification_uri),
                    attempt_expires_at: attempt.expires_at.as_deref().and_then(parse_time),
                    started: true,
                    ..claim
                });
            }
        }
        save(lock, &rec)?;
        Ok(outcome(&rec, warnings))
    }

    /// Completes the claim in flight with the code the user read from the
    /// page, then holds the credential it brings.
    pub async fn complete_claim(
        &self,
        target: Option<&str>,
        code: &str,
    ) -> Result<Outcome, ClientError> {
        self.complete_claim_for(target, code, None).await
    }

    /// [`Agent::complete_claim`], binding the new access token to
    /// `resource` (RFC 8707, current dialect) from now on.
    pub async fn complete_claim_for(
        &self,
        target: Option<&str>,
        code: &str,
        resource: Option<&str>,
    ) -> Result<Outcome, ClientError> {
        let code = code.trim();
        let lock = self.store.lock().await?;
        let all: BTreeMap<String, Record> = lock.read()?;
        let issuer = find(&all, target)?;
        let mut rec = all.get(&issuer).cloned().ok_or_else(gone)?;
        let mut warnings = rec.service.warnings.clone();
        let claim = rec.claim.clone().ok_or_else(|| {
            ClientError::Unsupported(if rec.claimed {
                "this registration is already claimed".into()
            } else {
                "no claim in flight: authenticate with the user's email first".into()
            })
        })?;
        match rec.service.dialect {
            Dialect::Original => {
                let reg = as_registration(&rec, &claim);
                let done = self.client.complete_claim(&rec.service, &reg, code).await?;
                if let Some(c) = done.credential {
                    rec.access = Some(Secret::new(c, done.credential_expires.as_deref()));
                    rec.credential_type = done.credential_type;
                }
                rec.scopes = if !done.scopes.is_empty() {
                    done.scopes
                } else if !rec.post_claim_scopes.is_empty() {
                    rec.post_claim_scopes.clone()
                } else {
                    rec.scopes.clone()
                };
                rec.claimed = true;
                rec.claim = None;
                save(&lock, &rec)?;
            }
            Dialect::Current => {
                let url = claim_url(&rec.service, &claim, &mut warnings)?;
                let done = self
                    .client
                    .complete_attempt(&rec.service, &url, &claim.token.value, code)
                    .await?;
                let identity = done.identity.ok_or_else(|| {
                    ClientError::InvalidResponse("the completion carries no identity".into())
                })?;
                // Pre-claim access tokens are revoked by the claim; the
                // new assertion and the first refresh token are kept
                // before they are used.
                rec.access = None;
                rec.assertion = Some(Secret::new(
                    identity.assertion.clone(),
                    identity.expires_at.as_deref(),
                ));
                rec.refresh_token = identity
                    .refresh_token
                    .map(|r| Secret::new(r.value, r.expires_at.as_deref()));
                if !rec.post_claim_scopes.is_empty() {
                    rec.scopes = rec.post_claim_scopes.clone();
                }
                rec.claimed = true;
                rec.claim = None;
                if let Some(r) = resource {
                    rec.resource = Some(r.to_owned());
                }
                save(&lock, &rec)?;
                self.exchange(&lock, &mut rec, &identity.assertion).await?;
            }
        }
        Ok(outcome(&rec, warnings))
    }

    /// The live credential for the service of `target`, renewed if needed.
    pub async fn credential(&self, target: Option<&str>) -> Result<Credential, ClientError> {
        let lock = self.store.lock().await?;
        let all: BTreeMap<String, Record> = lock.read()?;
        let issuer = find(&all, target)?;
        let mut rec = all.get(&issuer).cloned().ok_or_else(gone)?;
        self.ensure_access(&lock, &mut rec, &mut vec![]).await?;
        rec.credential().ok_or_else(no_credential)
    }

    /// Sends a request with the credential kept for the service whose
    /// resource covers `url` (and only that one). A 401 drops the
    /// credential, renews it and sends the request once more.
    pub async fn fetch(
        &self,
        url: &str,
        method: reqwest::Method,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Fetched, ClientError> {
        let parsed =
            Url::parse(url).map_err(|e| ClientError::Unsupported(format!("{url:?}: {e}")))?;
        self.client.check_scheme(&parsed)?;
        let (issuer, mut credential, mut renewed) = {
            let lock = self.store.lock().await?;
            let all: BTreeMap<String, Record> = lock.read()?;
            let issuer = all
                .iter()
                .find(|(_, r)| r.service.covers(url))
                .map(|(i, _)| i.clone())
                .ok_or_else(|| {
                    ClientError::Reauthenticate(format!(
                        "no registration kept for {url}: a credential is only sent under the resource it was issued for; authenticate with this service first"
                    ))
                })?;
            let mut rec = all.get(&issuer).cloned().ok_or_else(gone)?;
            if !rec.usable() && rec.claim.is_some() {
                return Err(ClientError::Reauthenticate(
                    "no credential yet: complete the claim first".into(),
                ));
            }
            let renewed = self.ensure_access(&lock, &mut rec, &mut vec![]).await?;
            (issuer, rec.credential().ok_or_else(no_credential)?, renewed)
        };
        let first = self
            .client
            .call(&mut credential, method.clone(), url, &build)
            .await?;
        if first.status() != reqwest::StatusCode::UNAUTHORIZED || !stopped_working(&first) {
            return Ok(Fetched {
                response: first,
                issuer,
                renewed,
            });
        }
        // Revoked or expired: dropped, renewed, sent once more.
        {
            let lock = self.store.lock().await?;
            let all: BTreeMap<String, Record> = lock.read()?;
            let mut rec = all.get(&issuer).cloned().ok_or_else(gone)?;
            if rec.access.as_ref().map(|a| &a.value) == Some(&credential.secret) {
                rec.access = None;
                save(&lock, &rec)?;
            }
            renewed = self.ensure_access(&lock, &mut rec, &mut vec![]).await?;
            credential = rec.credential().ok_or_else(no_credential)?;
        }
        let second = self
            .client
            .call(&mut credential, method, url, &build)
            .await?;
        Ok(Fetched {
            response: second,
            issuer,
            renewed,
        })
    }

    /// Ends the kept credential at the issuer's `revocation_endpoint` (RFC
    /// 7009), offers it the refresh token too, and forgets the
    /// registration. Returns its id.
    pub async fn revoke(&self, target: Option<&str>) -> Result<String, ClientError> {
        let lock = self.store.lock().await?;
        let mut all: BTreeMap<String, Record> = lock.read()?;
        let issuer = find(&all, target)?;
        let mut rec = all.get(&issuer).cloned().ok_or_else(gone)?;
        let credential = rec.credential().ok_or_else(|| {
            ClientError::Reauthenticate(format!(
                "no credential kept for {issuer}: nothing to revoke (forget drops the registration)"
            ))
        })?;
        if rec.service.metadata.revocation_endpoint.is_none() {
            // Kept before the service published one: read its metadata again.
            rec.service.metadata = self.client.authorization_server(&issuer).await?;
        }
        self.client.revoke(&rec.service, &credential).await?;
        // The refresh token too (RFC 7009 §2.1 lets a service take any of
        // its tokens), best effort: services of the reference's line end
        // only access tokens there (dialect-latest.md §3.6) and answer 200
        // for what they ignore; it is forgotten here either way.
        if let Some(refresh) = &rec.refresh_token {
            let refresh = Credential {
                secret: refresh.value.clone(),
                ..credential
            };
            let _ = self.client.revoke(&rec.service, &refresh).await;
        }
        all.remove(&issuer);
        lock.write(&all)?;
        Ok(rec.registration_id)
    }

    /// Forgets a service's registration (or all), without telling it.
    pub async fn forget(&self, target: Option<&str>, every: bool) -> Result<usize, ClientError> {
        let lock = self.store.lock().await?;
        let mut all: BTreeMap<String, Record> = lock.read()?;
        let n = if every {
            let n = all.len();
            all.clear();
            n
        } else {
            let issuer = find(&all, target)?;
            all.remove(&issuer);
            1
        };
        lock.write(&all)?;
        Ok(n)
    }

    /// What is kept, per issuer, never the secrets.
    pub fn status(&self) -> Result<Vec<StatusEntry>, ClientError> {
        let all: BTreeMap<String, Record> = self.store.read()?;
        Ok(all
            .into_iter()
            .map(|(issuer, r)| StatusEntry {
                issuer,
                dialect: r.service.dialect,
                resource: r.service.resource.resource.clone(),
                registration_id: r.registration_id.clone(),
                registration_type: r.registration_type.clone(),
                method: r.method,
                claimed: r.claimed,
                scopes: r.scopes.clone(),
                post_claim_scopes: r.post_claim_scopes.clone(),
                has_access_token: r.access.is_some(),
                access_expires_at: show_time(r.access.as_ref().and_then(|a| a.expires_at)),
                has_assertion: r.assertion.is_some(),
                has_refresh_token: r.refresh_token.is_some(),
                refresh_expires_at: show_time(r.refresh_token.as_ref().and_then(|a| a.expires_at)),
                claim: r.claim.as_ref().map(claim_view),
                renewable_alone: match r.method {
                    MethodKind::Anonymous => !r.claimed || r.refresh_token.is_some(),
                    MethodKind::IdJag => r.id_jag_command.is_some() || r.refresh_token.is_some(),
                    MethodKind::Email => r.refresh_token.is_some(),
                },
                warnings: r.service.warnings.clone(),
            })
            .collect())
    }
}

/// Whether a 401 says the credential stopped working (RFC 6750 §3.1
/// `invalid_token`, or a challenge that says less), rather than that the
/// request needs something else.
fn stopped_working(r: &reqwest::Response) -> bool {
    !r.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(crate::challenge::parse)
        .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .any(|c| c.param("error").is_some_and(|e| e != "invalid_token"))
}

fn gone() -> ClientError {
    ClientError::Reauthenticate("the registration was forgotten meanwhile".into())
}

fn no_credential() -> ClientError {
    ClientError::Reauthenticate("no credential yet: complete the claim first".into())
}

fn save(lock: &StoreLock, rec: &Record) -> Result<(), ClientError> {
    let issuer = rec.service.issuer.clone();
    lock.modify(&issuer, |slot: &mut Option<Record>| {
        *slot = Some(rec.clone())
    })?;
    Ok(())
}

/// The method: an ID-JAG if one is held, an email where the service takes
/// one at registration, else anonymous.
fn choose(
    service: &Service,
    req: &Authenticate,
) -> Result<(MethodKind, Option<String>), ClientError> {
    let offered = |k| service.supports(k);
    if req.id_jag.is_some() || req.id_jag_command.is_some() {
        if !offered(MethodKind::IdJag) {
            return Err(ClientError::Unsupported(format!(
                "{} does not take ID-JAGs (unsupported_identity_type)",
                service.issuer
            )));
        }
        // One of the two is given (checked above).
        let assertion = match &req.id_jag {
            Some(a) => a.trim().to_owned(),
            None => run_minter(req.id_jag_command.as_deref().unwrap_or_default())?,
        };
        return Ok((MethodKind::IdJag, Some(assertion)));
    }
    if req.anonymous {
        return if offered(MethodKind::Anonymous) {
            Ok((MethodKind::Anonymous, None))
        } else {
            Err(ClientError::Unsupported(format!(
                "{} offers no anonymous registration",
                service.issuer
            )))
        };
    }
    if req.email.is_some() && offered(MethodKind::Email) {
        return Ok((MethodKind::Email, None));
    }
    if offered(MethodKind::Anonymous) {
        return Ok((MethodKind::Anonymous, None));
    }
    Err(ClientError::Unsupported(format!(
        "no applicable method: {} offers {} and {}",
        service.issuer,
        [MethodKind::Anonymous, MethodKind::Email, MethodKind::IdJag]
            .into_iter()
            .filter(|k| offered(*k))
            .map(|k| format!("{k:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        if req.email.is_some() {
            "an email was given"
        } else {
            "nothing was given (an email or an ID-JAG is needed)"
        }
    )))
}

fn original_record(
    service: &Service,
    method: MethodKind,
    r: Registration,
    req: &Authenticate,
) -> Record {
    let claim = r.claim_token.clone().map(|t| PendingClaim {
        token: Secret::new(t, r.claim_token_expires.as_deref()),
        url: r.claim_url.clone(),
        email: (method == MethodKind::Email)
            .then(|| req.email.clone())
            .flatten(),
        verification_uri: None,
        attempt_expires_at: None,
        // Email required: the service has already sent the claim email.
        started: method == MethodKind::Email,
    });
    Record {
        service: service.clone(),
        registration_id: r.registration_id.clone(),
        registration_type: r.registration_type.clone(),
        method,
        id_jag_command: req.id_jag_command.clone(),
        claimed: method == MethodKind::IdJag,
        scopes: r.scopes.clone(),
        post_claim_scopes: r.post_claim_scopes.clone(),
        resource: req.resource.clone(),
        access: r
            .credential
            .clone()
            .map(|c| Secret::new(c, r.credential_expires.as_deref())),
        credential_type: r.credential_type.clone(),
        assertion: None,
        refresh_token: None,
        claim,
    }
}

fn current_record(
    service: &Service,
    method: MethodKind,
    r: IdentityResponse,
    req: &Authenticate,
) -> Result<Record, ClientError> {
    if r.id.is_empty() {
        return Err(ClientError::InvalidResponse(
            "the identity endpoint's answer has no id".into(),
        ));
    }
    let (pre, post) = r.scopes.as_ref().map(|s| s.split()).unwrap_or_default();
    let attempt = r.claim.as_ref().and_then(|c| c.attempt.clone());
    let claim = r.claim.clone().map(|c| PendingClaim {
        token: Secret::new(c.token, c.expires_at.as_deref()),
        url: c.url,
        email: req.email.clone().filter(|_| attempt.is_some()),
        verification_uri: attempt.as_ref().map(|a| a.verification_uri.clone()),
        attempt_expires_at: attempt
            .as_ref()
            .and_then(|a| a.expires_at.as_deref())
            .and_then(parse_time),
        started: attempt.is_some(),
    });
    if r.identity.is_none() && claim.is_none() {
        return Err(ClientError::InvalidResponse(
            "the identity endpoint's answer has neither an identity nor a claim".into(),
        ));
    }
    let bound = method == MethodKind::IdJag && r.identity.is_some();
    Ok(Record {
        service: service.clone(),
        registration_id: r.id,
        registration_type: r.kind,
        method,
        id_jag_command: req.id_jag_command.clone(),
        claimed: bound,
        scopes: if r.identity.is_some() { pre } else { vec![] },
        post_claim_scopes: post,
        resource: req.resource.clone(),
        access: None,
        credential_type: None,
        assertion: r
            .identity
            .as_ref()
            .map(|i| Secret::new(i.assertion.clone(), i.expires_at.as_deref())),
        refresh_token: r
            .identity
            .and_then(|i| i.refresh_token)
            .map(|t| Secret::new(t.value, t.expires_at.as_deref())),
        claim,
    })
}

fn as_registration(rec: &Record, claim: &PendingClaim) -> Registration {
    Registration {
        registration_id: rec.registration_id.clone(),
        claim_url: claim.url.clone(),
        claim_token: Some(claim.token.value.clone()),
        ..Registration::default()
    }
}

/// Where the current dialect's claim goes: the metadata's `claim_endpoint`.
/// A `claim.url` that names something else (hosted services send the
/// user-facing page there, dialect-latest.md §8.4) is not followed, with a
/// warning; without `claim_endpoint`, `claim.url` is used if it is on the
/// issuer's origin.
fn claim_url(
    service: &Service,
    claim: &PendingClaim,
    warnings: &mut Vec<String>,
) -> Result<Url, ClientError> {
    let parse = |u: &str| {
        Url::parse(u).map_err(|e| ClientError::InvalidResponse(format!("claim url {u:?}: {e}")))
    };
    let url = match (&service.agent_auth().claim_endpoint, &claim.url) {
        (Some(ce), Some(u)) if trim(ce) != trim(u) => {
            warnings.push(format!(
                "claim.url is {u}, not the claim endpoint {ce} (a page, as hosted services send it): the claim endpoint is used"
            ));
            parse(ce)?
        }
        (Some(ce), _) => parse(ce)?,
        (None, Some(u)) => parse(u)?,
        (None, None) => {
            return Err(ClientError::Unsupported(format!(
                "{} names no claim endpoint",
                service.issuer
            )));
        }
    };
    same_origin(&url, &service.issuer, "the claim endpoint")?;
    Ok(url)
}

fn claim_view(c: &PendingClaim) -> ClaimView {
    ClaimView {
        verification_uri: c.verification_uri.clone(),
        email: c.email.clone(),
        expires_at: show_time(c.attempt_expires_at.or(c.token.expires_at)),
        started: c.started,
    }
}

fn outcome(rec: &Record, warnings: Vec<String>) -> Outcome {
    let authenticated = rec.access.is_some();
    let scopes = rec.scopes.join(" ");
    let post = rec.post_claim_scopes.join(" ");
    let claim_sentence = rec.claim.as_ref().filter(|c| c.started).map(|c| {
        match (&c.verification_uri, &c.email) {
            (Some(uri), email) => format!(
                "Give the user this link: {uri} . They sign in{} and confirm; the page then shows a 6-digit code. Ask them for it and call authmd_complete_claim with it (user_code).",
                email.as_deref().map(|e| format!(" as {e}")).unwrap_or_default()
            ),
            (None, Some(email)) => format!(
                "The service emailed {email} a claim link. Ask the user to open it, press \"Show my code\" and tell you the 6-digit code; then call authmd_complete_claim with it (user_code)."
            ),
            (None, None) => "Ask the user for the 6-digit code the claim page shows; then call authmd_complete_claim with it.".to_owned(),
        }
    });
    let instructions = match (authenticated, claim_sentence) {
        (true, Some(c)) => format!(
            "Authenticated with {scopes}: authmd_fetch works now under {}. For {post}, the user must claim this registration. {c}",
            rec.service.resource.resource
        ),
        (false, Some(c)) => format!("No credential until the user claims this registration. {c}"),
        (true, None) if rec.claim.is_some() && !post.is_empty() && post != scopes => format!(
            "Authenticated with {scopes}: authmd_fetch works now under {}. For {post}, call authmd_authenticate again with the user's email to start a claim.",
            rec.service.resource.resource
        ),
        (true, None) => format!(
            "Authenticated with {scopes}: call authmd_fetch with URLs under {}.",
            rec.service.resource.resource
        ),
        (false, None) => {
            "No credential and no claim in flight: call authmd_authenticate again.".to_owned()
        }
    };
    Outcome {
        status: if authenticated {
            OutcomeStatus::Authenticated
        } else {
            OutcomeStatus::ClaimRequired
        },
        issuer: rec.service.issuer.clone(),
        dialect: rec.service.dialect,
        registration_id: rec.registration_id.clone(),
        registration_type: rec.registration_type.clone(),
        scopes: rec.scopes.clone(),
        post_claim_scopes: rec.post_claim_scopes.clone(),
        claimed: rec.claimed,
        claim: rec.claim.as_ref().map(claim_view),
        instructions,
        warnings,
    }
}

/// Runs `command` in a shell and returns what it printed, trimmed: a fresh
/// ID-JAG.
pub fn run_minter(command: &str) -> Result<String, ClientError> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| ClientError::Reauthenticate(format!("cannot run the ID-JAG command: {e}")))?;
    if !out.status.success() {
        return Err(ClientError::Reauthenticate(format!(
            "the ID-JAG command failed ({})",
            out.status
        )));
    }
    let assertion = String::from_utf8(out.stdout)
        .map_err(|_| ClientError::Reauthenticate("the ID-JAG command printed non-text".into()))?
        .trim()
        .to_owned();
    if assertion.is_empty() {
        return Err(ClientError::Reauthenticate(
            "the ID-JAG command printed nothing".into(),
        ));
    }
    Ok(assertion)
}

/// A sentence an AI model (or a person) can act on, for a failure.
pub fn advice(e: &ClientError) -> String {
    let what = match e.code() {
        Some("otp_invalid" | "invalid_user_code") => {
            "The code is wrong: ask the user to read the 6-digit code shown on the page again, then retry authmd_complete_claim."
        }
        Some("claim_not_confirmed") => {
            "The user has not confirmed yet: ask them to open the link, sign in, press confirm and read you the 6-digit code the page then shows; retry with it."
        }
        Some("otp_expired" | "user_code_expired") => {
            "The code expired: call authmd_authenticate again with the user's email to start a new attempt, then ask for the new code."
        }
        Some("otp_not_generated") => {
            "No code exists yet: ask the user to open the link in the claim email and press \"Show my code\"."
        }
        Some("claim_expired" | "claim_superseded" | "invalid_claim" | "invalid_claim_token") => {
            "This claim can no longer be completed: call authmd_authenticate with force_reregister and the user's email to start over."
        }
        Some("already_claimed" | "claimed_or_in_flight" | "claim_completed") => {
            "The registration is already claimed (or a claim is in flight): call authmd_status, then authmd_fetch."
        }
        Some("rate_limited" | "rate_limit_exceeded" | "too_many_attempts") => {
            "The service is rate limiting: wait before retrying."
        }
        Some("interaction_required") => {
            "The user must confirm at the service: give them the link and ask for the code it shows."
        }
        Some("login_required") => {
            "The ID-JAG is too old: get a fresh one from the provider and retry."
        }
        Some("invalid_grant") => {
            "The service no longer accepts this identity: call authmd_authenticate with force_reregister."
        }
        Some("replay_detected") => "This ID-JAG was used already: get a fresh one and retry.",
        Some(_) => "The service refused: the code and message say why.",
        None => match e {
            ClientError::Discovery(_) => {
                "Discovery failed: check the issuer or URL (https, or http on loopback), or that the service is auth.md-ready."
            }
            ClientError::Unsupported(_) => "The service does not offer this: see the message.",
            ClientError::Reauthenticate(_) => "See the message for what to do.",
            ClientError::Store(_) => {
                "The local credential store failed: nothing was used that could not be kept."
            }
            ClientError::Http(_) => "The service could not be reached: retry later.",
            _ => "The service answered something unexpected.",
        },
    };
    what.to_owned()
}
