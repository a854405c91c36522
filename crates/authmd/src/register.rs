//! `POST /agent/auth` (docs/protocol.md §3): the body's `type` selects the flow.
//!
//! Anonymous start (§3.1), email required (§3.2, with the ceremony in
//! `claim.rs`) and agent verified (§3.3, the ID-JAG checks in `id_jag.rs`).

use serde::{Deserialize, Serialize};

use crate::AuthMd;
use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::credential::{CredentialSource, CredentialType};
use crate::error::{Error, ProtocolError};
use crate::rate_limit::{RateLimit, client_key};
use crate::store::{
    AgentRegistered as StoreOutcome, NewAgentRegistration, NewAnonymousRegistration,
};
use crate::time::Timestamp;
use crate::token::{PlainSecret, SecretKind, new_id};
use crate::users::{ProvidedIdentity, jti_key};
pub use crate::vocab::{
    ID_JAG_ASSERTION_TYPE, RegistrationStatus, RegistrationType, VERIFIED_EMAIL_ASSERTION_TYPE,
};

/// The request body. Every field is optional here so that a missing one is
/// our `invalid_request` with a clear message, not a parser error.
#[derive(Clone, Default, Deserialize)]
pub struct RegisterRequest {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub requested_credential_type: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
}

redacted_debug!(RegisterRequest {
    show: [kind, requested_credential_type, assertion_type],
    hide: [assertion]
});

/// §3.1 response.
#[derive(Debug, Clone, Serialize)]
pub struct AnonymousRegistered {
    pub registration_id: String,
    pub registration_type: RegistrationType,
    pub credential_type: CredentialType,
    /// The API key, shown this once.
    pub credential: String,
    pub credential_expires: Option<String>,
    pub scopes: Vec<String>,
    pub claim_url: String,
    pub claim_token: String,
    pub claim_token_expires: String,
    pub post_claim_scopes: Vec<String>,
}

/// §3.3 response. No refresh token, ever: the agent presents a fresh ID-JAG.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRegistered {
    pub registration_id: String,
    pub registration_type: RegistrationType,
    pub credential_type: CredentialType,
    /// Shown this once.
    pub credential: String,
    pub credential_expires: Option<String>,
    pub scopes: Vec<String>,
    /// For an `api_key`: how many of this delegation's keys stay live;
    /// presenting more ID-JAGs for keys revokes the oldest past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_api_keys: Option<u32>,
}

/// §3.2 response.
#[derive(Debug, Clone, Serialize)]
pub struct EmailRegistered {
    pub registration_id: String,
    pub registration_type: RegistrationType,
    pub claim_url: String,
    pub claim_token: String,
    pub claim_token_expires: String,
    pub post_claim_scopes: Vec<String>,
}

/// A successful `POST /agent/auth`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Registered {
    Anonymous(AnonymousRegistered),
    Agent(AgentRegistered),
    Email(EmailRegistered),
}

impl Registered {
    pub fn registration_id(&self) -> &str {
        match self {
            Registered::Anonymous(r) => &r.registration_id,
            Registered::Agent(r) => &r.registration_id,
            Registered::Email(r) => &r.registration_id,
        }
    }
}

impl AuthMd {
    /// `POST /agent/auth`. `request` is the parsed body, or the reason it
    /// could not be parsed: every refusal, including a malformed body, is
    /// counted for `registration.rejected` (per client network, code and
    /// flow, written periodically: see `refusals.rs`).
    pub async fn register(
        &self,
        request: Result<RegisterRequest, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Registered, Error> {
        // Which flow a refusal belongs to, for the audit trail (only the
        // known values, never client text).
        let flow = request.as_ref().ok().and_then(|r| {
            match (r.kind.as_deref(), r.assertion_type.as_deref()) {
                (Some("anonymous"), _) => Some("anonymous"),
                (Some("identity_assertion"), Some(ID_JAG_ASSERTION_TYPE)) => {
                    Some(ID_JAG_ASSERTION_TYPE)
                }
                (Some("identity_assertion"), Some(VERIFIED_EMAIL_ASSERTION_TYPE)) => {
                    Some(VERIFIED_EMAIL_ASSERTION_TYPE)
                }
                _ => None,
            }
        });
        let result = match request {
            Ok(req) => self.register_parsed(req, meta, now).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(_) => crate::metrics::registration(flow, "created"),
            Err(Error::Protocol(e)) => {
                tracing::debug!(code = e.code(), flow, ip = ?meta.ip, reason = %e, "registration refused");
                self.refusals().count(meta, e.code(), flow, now);
                crate::metrics::registration(flow, e.code());
            }
            Err(Error::Internal(_)) => crate::metrics::registration(flow, "server_error"),
        }
        result
    }

    async fn register_parsed(
        &self,
        req: RegisterRequest,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Registered, Error> {
        match req.kind.as_deref() {
            Some("anonymous") => self.register_anonymous(&req, meta, now).await,
            Some("identity_assertion") => match req.assertion_type.as_deref() {
                Some(ID_JAG_ASSERTION_TYPE) => self.register_id_jag(&req, meta, now).await,
                Some(VERIFIED_EMAIL_ASSERTION_TYPE) => self.register_email(&req, meta, now).await,
                Some(other) => Err(ProtocolError::invalid_request(format!(
                    "unknown assertion_type {}",
                    quoted(other)
                ))
                .into()),
                None => Err(ProtocolError::invalid_request("assertion_type is required").into()),
            },
            Some(other) => Err(ProtocolError::invalid_request(format!(
                "unknown type {}; expected \"anonymous\" or \"identity_assertion\"",
                quoted(other)
            ))
            .into()),
            None => Err(ProtocolError::invalid_request("type is required").into()),
        }
    }

    /// §3.1: a registration with an API key limited to the pre-claim scopes,
    /// and a claim token for the user to take ownership later.
    async fn register_anonymous(
        &self,
        req: &RegisterRequest,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Registered, Error> {
        let config = self.config();
        if !crate::discovery::Flows::of(config).anonymous {
            return Err(ProtocolError::AnonymousNotEnabled.into());
        }
        match req
            .requested_credential_type
            .as_deref()
            .map(CredentialType::parse)
        {
            None => {
                return Err(ProtocolError::invalid_request(
                    "requested_credential_type is required (\"api_key\")",
                )
                .into());
            }
            Some(Some(CredentialType::ApiKey)) => {}
            Some(Some(CredentialType::AccessToken)) => {
                return Err(ProtocolError::UnsupportedCredentialType(
                    "anonymous registrations receive an api_key; access_token is not offered"
                        .into(),
                )
                .into());
            }
            Some(None) => {
                return Err(ProtocolError::UnsupportedCredentialType(
                    "requested_credential_type must be \"api_key\"".into(),
                )
                .into());
            }
        }

        let registration_id = new_id("reg_");
        let credential_id = new_id("crd_");
        let key = PlainSecret::generate(SecretKind::ApiKey, &credential_id);
        let claim_token = PlainSecret::generate(SecretKind::ClaimToken, &registration_id);
        let expires_at = now.plus(config.ttl.registration.get());
        let scopes = config.resource.pre_claim_scopes.clone();

        let created = AuditEvent::new(EventKind::RegistrationCreated, now, meta)
            .registration(&registration_id)
            .with("registration_type", RegistrationType::Anonymous.as_str());
        let issued = AuditEvent::new(EventKind::CredentialIssued, now, meta)
            .registration(&registration_id)
            .with("credential_id", credential_id.as_str())
            .with("credential_type", CredentialType::ApiKey.as_str())
            .with("source", CredentialSource::Anonymous.as_str())
            .with("scopes", scopes.clone());
        let new = NewAnonymousRegistration {
            registration_id: registration_id.clone(),
            claim_token: claim_token.hash(),
            credential_id,
            credential: key.hash(),
            scopes: scopes.clone(),
            created_at: now,
            expires_at,
            events: vec![created.clone(), issued.clone()],
        };
        let limits = self.anonymous_limits(meta);
        if let Err(limited) = self
            .store()
            .create_anonymous_registration(new, limits)
            .await?
        {
            return Err(ProtocolError::RateLimited {
                retry_after: limited.retry_after,
            }
            .into());
        }
        created.log();
        issued.log();

        Ok(Registered::Anonymous(AnonymousRegistered {
            registration_id,
            registration_type: RegistrationType::Anonymous,
            credential_type: CredentialType::ApiKey,
            credential: key.expose().to_owned(),
            credential_expires: None,
            scopes,
            claim_url: self.urls().claim.clone(),
            claim_token: claim_token.expose().to_owned(),
            claim_token_expires: expires_at.to_rfc3339(),
            post_claim_scopes: config.resource.post_claim_scopes.clone(),
        }))
    }

    /// §3.3: verify the ID-JAG (steps 1 to 11), then atomically refuse a
    /// replay (12), match the user (§6), record the delegation and issue.
    async fn register_id_jag(
        &self,
        req: &RegisterRequest,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Registered, Error> {
        let config = self.config();
        // Off, or on without any trusted provider: not offered, so refused
        // with the flow's code.
        if !crate::discovery::Flows::of(config).id_jag {
            return Err(ProtocolError::IdentityAssertionNotEnabled.into());
        }
        let assertion = req
            .assertion
            .as_deref()
            .ok_or_else(|| ProtocolError::invalid_request("assertion is required (the ID-JAG)"))?;
        let requested = req.requested_credential_type.as_deref().ok_or_else(|| {
            ProtocolError::invalid_request(
                "requested_credential_type is required (\"access_token\" or \"api_key\")",
            )
        })?;
        let verified = self.verifier().verify(assertion, now).await?;
        let jti_key = jti_key(&verified.iss, &verified.jti);

        // 13 after 12: an unknown credential type is reported only for an
        // assertion that is not a replay (and then its jti is not spent).
        let Some(credential_type) = CredentialType::parse(requested) else {
            if self.store().jti_used(jti_key).await? {
                return Err(ProtocolError::ReplayDetected.into());
            }
            return Err(ProtocolError::UnsupportedCredentialType(
                "requested_credential_type must be \"access_token\" or \"api_key\"".into(),
            )
            .into());
        };

        let (reg, secret) = self.agent_registration(&verified, credential_type, meta, now);
        let (scopes, expires_at) = (reg.scopes.clone(), reg.expires_at);
        let limits = self.limits(
            "identity_assertion",
            meta,
            config.rate_limits.identity_assertion_per_ip_per_hour,
            config.rate_limits.identity_assertion_per_hour,
        );
        // The store records the events; they are built again here only if
        // the structured log would show them.
        let for_log = AuditEvent::logged().then(|| reg.clone());
        let outcome = self.store().register_agent(reg, limits).await?;
        match outcome {
            StoreOutcome::Issued {
                registration_id,
                user_id,
                user_provisioned,
                linked_by,
            } => {
                if let Some(reg) = &for_log {
                    for e in reg.events(&registration_id, &user_id, user_provisioned) {
                        e.log();
                    }
                    if let Some(how) = linked_by {
                        reg.linked_event(&registration_id, &user_id, how).log();
                    }
                }
                Ok(Registered::Agent(AgentRegistered {
                    registration_id,
                    registration_type: RegistrationType::AgentProvider,
                    credential_type,
                    credential: secret.expose().to_owned(),
                    credential_expires: expires_at.map(Timestamp::to_rfc3339),
                    scopes,
                    max_live_api_keys: (credential_type == CredentialType::ApiKey)
                        .then_some(config.registration.max_api_keys_per_delegation),
                }))
            }
            StoreOutcome::Replay => Err(ProtocolError::ReplayDetected.into()),
            StoreOutcome::NotProvisioned => Err(ProtocolError::UserNotProvisioned.into()),
            // Minted before the user's consent was withdrawn: a fresh
            // assertion registers again.
            StoreOutcome::IssuedBeforeRevocation => Err(ProtocolError::Expired.into()),
            StoreOutcome::Blocked => Err(ProtocolError::Blocked.into()),
            // Only in a mode that asks for confirmation (not this dialect's).
            StoreOutcome::NeedsConfirmation { .. } => {
                Err(ProtocolError::InteractionRequired.into())
            }
            StoreOutcome::Limited(l) => Err(ProtocolError::RateLimited {
                retry_after: l.retry_after,
            }
            .into()),
        }
    }

    /// What registering a verified ID-JAG writes (§3.3 step 12 on, §6),
    /// with a fresh credential of `credential_type` (issued or not, as the
    /// store's [`crate::store::AgentMode`] says): shared by both dialects
    /// and the token endpoint.
    pub(crate) fn agent_registration(
        &self,
        verified: &crate::id_jag::VerifiedIdJag,
        credential_type: CredentialType,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> (NewAgentRegistration, PlainSecret) {
        let config = self.config();
        let credential_id = new_id("crd_");
        let (kind, expires_at) = match credential_type {
            CredentialType::AccessToken => (
                SecretKind::AccessToken,
                Some(now.plus(config.ttl.access_token.get())),
            ),
            CredentialType::ApiKey => (SecretKind::ApiKey, None),
        };
        let secret = PlainSecret::generate(kind, &credential_id);
        let scopes = config.resource.post_claim_scopes.clone();
        let mut audit = serde_json::Map::new();
        for (k, v) in [
            ("agent_platform", &verified.agent_platform),
            ("agent_context_id", &verified.agent_context_id),
        ] {
            audit.insert(
                k.into(),
                v.clone().map_or(serde_json::Value::Null, Into::into),
            );
        }
        let reg = NewAgentRegistration {
            iss: verified.iss.clone(),
            sub: verified.sub.clone(),
            aud: verified.aud.clone(),
            jti_key: jti_key(&verified.iss, &verified.jti),
            jti_until: self.verifier().remember_jti_until(verified.exp, now),
            issued_at: verified.iat,
            identity: ProvidedIdentity {
                email: verified.email.clone(),
                email_verified: verified.email_verified,
                phone_number: verified.phone_number.clone(),
                phone_number_verified: verified.phone_number_verified,
                name: verified.name.clone(),
            },
            link_by_verified: verified.provider.config.link_by_verified_email,
            link_email_domains: verified.provider.config.email_domains.clone(),
            jit_provisioning: config.registration.jit_provisioning,
            new_registration_id: new_id("reg_"),
            new_user_id: new_id("usr_"),
            credential_id,
            credential: secret.hash(),
            credential_type,
            scopes: scopes.clone(),
            expires_at,
            max_api_keys: config.registration.max_api_keys_per_delegation,
            now,
            meta: meta.clone(),
            audit,
        };
        (reg, secret)
    }

    /// §9 for anonymous registration.
    fn anonymous_limits(&self, meta: &RequestMeta) -> Vec<RateLimit> {
        let rl = &self.config().rate_limits;
        self.limits(
            "anonymous",
            meta,
            rl.anonymous_per_ip_per_hour,
            rl.anonymous_per_hour,
        )
    }

    /// §9: per client IP, then service-wide, for one kind of request.
    pub(crate) fn limits(
        &self,
        kind: &str,
        meta: &RequestMeta,
        per_ip: u32,
        total: u32,
    ) -> Vec<RateLimit> {
        if !self.config().rate_limits.enabled {
            return Vec::new();
        }
        let mut limits = Vec::with_capacity(2);
        if let Some(ip) = meta.ip {
            limits.push(RateLimit::per_hour(
                format!("{kind}:ip:{}", client_key(ip)),
                per_ip,
            ));
        }
        limits.push(RateLimit::per_hour(format!("{kind}:all"), total));
        limits
    }
}

/// Quotes client-supplied text for an error message, cut to a sane length.
pub(crate) fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    format!("{cut:?}")
}
