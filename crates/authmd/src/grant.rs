//! The current dialect's token endpoint (docs/protocol.md §20.4): RFC 6749
//! §5 answers for the RFC 7523 jwt-bearer grant, with two kinds of
//! assertion through the existing verifiers:
//!
//! - authmd's own identity assertion (`assertion.rs`), exchanged while the
//!   registration is still in the state it was issued for;
//! - a provider's ID-JAG presented directly (the Identity Assertion
//!   Authorization Grant draft, MCP's enterprise-managed authorization):
//!   the same trust list, §3.3 checks, replay protection and user matching
//!   as registration, issuing an access token.
//!
//! `resource` (RFC 8707), when present, must be this service's resource
//! identifier, byte for byte (`invalid_target`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AuthMd;
use crate::assertion;
use crate::audit::RequestMeta;
use crate::credential::CredentialType;
use crate::discovery::CurrentFlows;
use crate::error::{Error, ProtocolError};
use crate::store::current::{AssertionExchange, Exchanged};
use crate::store::{AgentMode, AgentRegistered, split_scopes};
use crate::time::Timestamp;
use crate::token::{PlainSecret, SecretKind, new_id};
use crate::vocab::{Dialect, JWT_BEARER_GRANT, RegistrationStatus};

/// The form of `POST /oauth2/token`.
#[derive(Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub assertion: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

redacted_debug!(TokenRequest {
    show: [grant_type, resource, scope],
    hide: [assertion]
});

/// RFC 6749 §5.1.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
}

impl AuthMd {
    /// `POST /oauth2/token`. Errors are `invalid_request`, `invalid_grant`
    /// (any assertion that does not verify, or whose registration is gone
    /// or changed: the reason goes to the log), `unsupported_grant_type`
    /// and `invalid_target`.
    pub async fn token(
        &self,
        request: Result<TokenRequest, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<TokenResponse, Error> {
        let req = request?;
        if !CurrentFlows::of(self.config()).any() {
            return Err(ProtocolError::UnsupportedGrantType.into());
        }
        match req.grant_type.as_deref() {
            Some(JWT_BEARER_GRANT) => {}
            Some(_) => return Err(ProtocolError::UnsupportedGrantType.into()),
            None => return Err(ProtocolError::invalid_request("grant_type is required").into()),
        }
        if let Some(resource) = &req.resource
            && *resource != self.urls().resource
        {
            return Err(ProtocolError::InvalidTarget.into());
        }
        // RFC 6749 §3.3: a client may ask for less than the grant allows;
        // what it gets is said in the answer's `scope`.
        let asked = req.scope.as_deref().map(split_scopes);
        let Some(assertion) = req.assertion.as_deref().filter(|a| !a.is_empty()) else {
            return Err(ProtocolError::invalid_request("assertion is required").into());
        };
        let token = crate::id_jag::unverified_parse(assertion)
            .map_err(|e| ProtocolError::InvalidGrant(e.to_string()))?;
        if assertion::is_ours(&token, &self.urls().issuer) {
            self.exchange_own(&token, asked.as_deref(), meta, now).await
        } else {
            self.exchange_id_jag(assertion, asked.as_deref(), meta, now)
                .await
        }
    }

    /// §9: the access tokens one registration may get for authmd's own
    /// assertions. An assertion exchanges for its whole hour, each time a
    /// credential written: without a bound, one holder could write as fast
    /// as it can send.
    fn exchange_limits(&self, registration_id: &str) -> Vec<crate::rate_limit::RateLimit> {
        let limits = &self.config().rate_limits;
        if !limits.enabled {
            return Vec::new();
        }
        vec![crate::rate_limit::RateLimit::per_hour(
            format!("token_exchange:registration:{registration_id}"),
            limits.token_exchanges_per_registration_per_hour,
        )]
    }

    /// authmd's own assertion: one signature check, then one transaction
    /// that issues only while the registration is in the assertion's state.
    async fn exchange_own(
        &self,
        token: &authmd_jose::Compact,
        asked: Option<&[String]>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<TokenResponse, Error> {
        let verified = self.verify_assertion(token, now).await?;
        let config = self.config();
        let scopes = match verified.status {
            RegistrationStatus::Unclaimed => config.resource.pre_claim_scopes.clone(),
            RegistrationStatus::Claimed | RegistrationStatus::Active => {
                config.resource.post_claim_scopes.clone()
            }
            _ => {
                return Err(ProtocolError::InvalidGrant(
                    "the assertion names a state that exchanges nothing".into(),
                )
                .into());
            }
        };
        let scopes = narrowed(scopes, asked, "the requested scope")?;
        let credential_id = new_id("crd_");
        let secret = PlainSecret::generate(SecretKind::AccessToken, &credential_id);
        let lifetime = config.ttl.access_token.get();
        let x = AssertionExchange {
            limits: self.exchange_limits(&verified.registration_id),
            registration_id: verified.registration_id,
            status: verified.status,
            family: verified.family,
            credential_id,
            credential: secret.hash(),
            scopes: scopes.clone(),
            expires_at: now.plus(lifetime),
            now,
            meta: meta.clone(),
            assertion_jti: verified.jti,
        };
        let for_log = crate::audit::AuditEvent::logged().then(|| x.clone());
        match self.store().exchange_assertion(x).await? {
            Exchanged::Issued { user_id, .. } => {
                if let Some(x) = for_log {
                    x.event(user_id.as_deref()).log();
                }
                Ok(TokenResponse {
                    access_token: secret.expose().to_owned(),
                    token_type: "Bearer",
                    expires_in: lifetime.as_secs(),
                    scope: scopes.join(" "),
                })
            }
            Exchanged::Limited(l) => Err(ProtocolError::RateLimited {
                retry_after: l.retry_after,
            }
            .into()),
            Exchanged::NotLive => Err(ProtocolError::InvalidGrant(
                "the registration is gone, expired, revoked, or no longer in the state this assertion was issued for"
                    .into(),
            )
            .into()),
        }
    }

    /// A provider's ID-JAG presented directly: registration's checks and
    /// matching, an access token instead of an assertion. A first link to
    /// an existing account needs the user, which a token endpoint cannot
    /// ask: `invalid_grant`, register at the identity endpoint instead.
    async fn exchange_id_jag(
        &self,
        assertion: &str,
        asked: Option<&[String]>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<TokenResponse, Error> {
        let config = self.config();
        let grant = |e: ProtocolError| match e {
            ProtocolError::RateLimited { .. } => e,
            other => ProtocolError::InvalidGrant(format!("{}: {other}", other.code())),
        };
        if !CurrentFlows::of(config).id_jag {
            return Err(grant(ProtocolError::IdentityAssertionNotEnabled).into());
        }
        let verified = self
            .verifier()
            .verify(assertion, now)
            .await
            .map_err(grant)?;
        self.check_auth_time(&verified, now).map_err(grant)?;
        if let Some(resource) = &verified.resource
            && !names_resource(resource, &self.urls().resource)
        {
            return Err(ProtocolError::InvalidTarget.into());
        }
        let granted = granted_scopes(verified.scope.as_ref(), &config.resource.post_claim_scopes)?;
        let granted = narrowed(granted, asked, "the requested scope")?;
        let (mut reg, secret) =
            self.agent_registration(&verified, CredentialType::AccessToken, meta, now);
        reg.scopes = granted;
        let scopes = reg.scopes.clone();
        let limits = self.limits(
            "identity_assertion",
            meta,
            config.rate_limits.identity_assertion_per_ip_per_hour,
            config.rate_limits.identity_assertion_per_hour,
        );
        let mode = AgentMode {
            issue: true,
            confirm_links: true,
            dialect: Dialect::Current,
            assertion: None,
        };
        let for_log = crate::audit::AuditEvent::logged().then(|| reg.clone());
        let outcome = self.store().register_agent_as(reg, limits, mode).await?;
        let refused = match outcome {
            AgentRegistered::Issued {
                registration_id,
                user_id,
                user_provisioned,
                ..
            } => {
                if let Some(reg) = &for_log {
                    for e in reg.events(&registration_id, &user_id, user_provisioned) {
                        e.log();
                    }
                }
                return Ok(TokenResponse {
                    access_token: secret.expose().to_owned(),
                    token_type: "Bearer",
                    expires_in: config.ttl.access_token.get().as_secs(),
                    scope: scopes.join(" "),
                });
            }
            AgentRegistered::NeedsConfirmation { .. } => ProtocolError::InteractionRequired,
            AgentRegistered::Replay => ProtocolError::ReplayDetected,
            AgentRegistered::NotProvisioned => ProtocolError::UserNotProvisioned,
            AgentRegistered::IssuedBeforeRevocation => ProtocolError::Expired,
            AgentRegistered::Blocked => ProtocolError::Blocked,
            AgentRegistered::Limited(l) => ProtocolError::RateLimited {
                retry_after: l.retry_after,
            },
        };
        Err(grant(refused).into())
    }
}

/// Whether an ID-JAG's `resource` claim (RFC 8707: a URI, or an array of
/// them) names this service's resource identifier, byte for byte.
fn names_resource(claim: &Value, ours: &str) -> bool {
    match claim {
        Value::String(r) => r == ours,
        Value::Array(all) => all.iter().any(|r| r.as_str() == Some(ours)),
        _ => false,
    }
}

/// The scopes an ID-JAG presented at the token endpoint is granted: the
/// post-claim scopes, narrowed to the ID-JAG's `scope` claim when it has
/// one (ID-JAG draft §4.4.1: the grant may be a subset of what the
/// provider authorized, never more; RFC 6749 §3.3). None left, or a
/// `scope` that is not a space-separated string: `invalid_scope`.
fn granted_scopes(claim: Option<&Value>, post_claim: &[String]) -> Result<Vec<String>, Error> {
    let asked = match claim {
        None => None,
        Some(Value::String(s)) => Some(split_scopes(s)),
        Some(_) => {
            return Err(ProtocolError::InvalidScope(
                "the ID-JAG's scope must be a space-separated string".into(),
            )
            .into());
        }
    };
    narrowed(post_claim.to_vec(), asked.as_deref(), "the ID-JAG's scope")
}

/// `scopes`, keeping only those `asked` names (all when nothing is
/// asked); none left is `invalid_scope`, naming `what` asked.
fn narrowed(
    scopes: Vec<String>,
    asked: Option<&[String]>,
    what: &str,
) -> Result<Vec<String>, Error> {
    let Some(asked) = asked else {
        return Ok(scopes);
    };
    let kept: Vec<String> = scopes.into_iter().filter(|s| asked.contains(s)).collect();
    if kept.is_empty() {
        return Err(ProtocolError::InvalidScope(format!(
            "{what} allows none of the scopes this grant carries"
        ))
        .into());
    }
    Ok(kept)
}
