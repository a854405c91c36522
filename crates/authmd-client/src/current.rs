//! The current dialect's wire (dialect-latest.md §3): `POST
//! identity_endpoint` (anonymous, service_auth, identity_assertion,
//! refresh), the claim attempt and its completion, and the RFC 7523
//! exchange at `token_endpoint`. Shapes only; what to do with them is in
//! [`crate::agent`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::{Client, ClientError, ID_JAG, Service, read_capped, refusal, retry_after, same_origin};

/// The RFC 7523 grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// `identity{assertion, expires_at, refresh_token?}`. Secrets: Debug hides them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub assertion: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub value: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `scopes`: `{pre_claim, post_claim}`, or a flat array (an ID-JAG's clean
/// match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scopes {
    Flat(Vec<String>),
    Split {
        #[serde(default)]
        pre_claim: Vec<String>,
        #[serde(default)]
        post_claim: Vec<String>,
    },
}

impl Scopes {
    /// (now, after a claim).
    pub fn split(&self) -> (Vec<String>, Vec<String>) {
        match self {
            Scopes::Flat(v) => (v.clone(), v.clone()),
            Scopes::Split {
                pre_claim,
                post_claim,
            } => (pre_claim.clone(), post_claim.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub verification_uri: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `claim{token, expires_at, url, attempt?}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimHandle {
    pub token: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub attempt: Option<Attempt>,
}

/// Every answer of the identity and claim endpoints, absent members
/// `None`: a registration, a refresh, a step-up (`401
/// interaction_required`), an attempt, a completion.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub scopes: Option<Scopes>,
    #[serde(default)]
    pub claim: Option<ClaimHandle>,
    #[serde(default)]
    pub attempt: Option<Attempt>,
    /// Set on a step-up: `interaction_required`.
    #[serde(default)]
    pub error: Option<String>,
}

/// RFC 6749 §5.1.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("assertion", &"(hidden)")
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .finish()
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("value", &"(hidden)")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for ClaimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimHandle")
            .field("token", &"(hidden)")
            .field("expires_at", &self.expires_at)
            .field("url", &self.url)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl std::fmt::Debug for IdentityResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityResponse")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("identity", &self.identity)
            .field("scopes", &self.scopes)
            .field("claim", &self.claim)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"(hidden)")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// What to register with, in the current dialect.
#[derive(Clone, Copy)]
pub enum IdentityRequest<'a> {
    Anonymous,
    ServiceAuth { login_hint: &'a str },
    IdJag { assertion: &'a str },
    Refresh { refresh_token: &'a str },
}

impl std::fmt::Debug for IdentityRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentityRequest::Anonymous => "Anonymous",
            IdentityRequest::ServiceAuth { .. } => "ServiceAuth",
            IdentityRequest::IdJag { .. } => "IdJag",
            IdentityRequest::Refresh { .. } => "Refresh",
        })
    }
}

impl Client {
    fn endpoint(&self, service: &Service, name: &str, u: &str) -> Result<Url, ClientError> {
        let url =
            Url::parse(u).map_err(|e| ClientError::Discovery(format!("{name} {u:?}: {e}")))?;
        self.check_scheme(&url)?;
        same_origin(&url, &service.issuer, name)?;
        Ok(url)
    }

    /// `POST identity_endpoint`. A `401 interaction_required` (an ID-JAG
    /// that matches an existing account) is an answer, not a failure: it
    /// carries the claim to complete.
    pub async fn identity(
        &self,
        service: &Service,
        request: IdentityRequest<'_>,
    ) -> Result<IdentityResponse, ClientError> {
        let endpoint = service
            .agent_auth()
            .identity_endpoint
            .as_deref()
            .ok_or_else(|| {
                ClientError::Unsupported(format!(
                    "{} publishes no identity_endpoint",
                    service.issuer
                ))
            })?;
        let url = self.endpoint(service, "identity_endpoint", endpoint)?;
        let body = match request {
            IdentityRequest::Anonymous => json!({"type": "anonymous"}),
            IdentityRequest::ServiceAuth { login_hint } => {
                json!({"type": "service_auth", "login_hint": login_hint})
            }
            IdentityRequest::IdJag { assertion } => json!({
                "type": "identity_assertion",
                "assertion_type": ID_JAG,
                "assertion": assertion,
            }),
            IdentityRequest::Refresh { refresh_token } => {
                json!({"type": "refresh", "refresh_token": refresh_token})
            }
        };
        let (status, retry, bytes) = self.send_json(url.clone(), &body).await?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if v["error"] == "interaction_required" && v["claim"].is_object() {
                return parse(&url, &bytes);
            }
        }
        if !status.is_success() {
            return Err(refusal(status, retry, &bytes));
        }
        parse(&url, &bytes)
    }

    /// `POST <claim endpoint> {type: "service_auth", claim_token,
    /// login_hint}`: a new attempt (the old link and code stop working).
    pub async fn start_attempt(
        &self,
        service: &Service,
        claim_url: &Url,
        claim_token: &str,
        login_hint: &str,
    ) -> Result<IdentityResponse, ClientError> {
        let url = self.endpoint(service, "the claim endpoint", claim_url.as_str())?;
        let body =
            json!({"type": "service_auth", "claim_token": claim_token, "login_hint": login_hint});
        let (status, retry, bytes) = self.send_json(url.clone(), &body).await?;
        if !status.is_success() {
            return Err(refusal(status, retry, &bytes));
        }
        parse(&url, &bytes)
    }

    /// `POST <claim endpoint>/complete {claim_token, user_code}`.
    pub async fn complete_attempt(
        &self,
        service: &Service,
        claim_url: &Url,
        claim_token: &str,
        user_code: &str,
    ) -> Result<IdentityResponse, ClientError> {
        let mut url = self.endpoint(service, "the claim endpoint", claim_url.as_str())?;
        let path = format!("{}/complete", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let body = json!({"claim_token": claim_token, "user_code": user_code.trim()});
        let (status, retry, bytes) = self.send_json(url.clone(), &body).await?;
        if !status.is_success() {
            return Err(refusal(status, retry, &bytes));
        }
        parse(&url, &bytes)
    }

    /// RFC 7523 at `token_endpoint`: the assertion for an access token
    /// (`resource`, RFC 8707, when given).
    pub async fn exchange(
        &self,
        service: &Service,
        assertion: &str,
        resource: Option<&str>,
    ) -> Result<TokenResponse, ClientError> {
        let endpoint = service.metadata.token_endpoint.as_deref().ok_or_else(|| {
            ClientError::Unsupported(format!("{} publishes no token_endpoint", service.issuer))
        })?;
        let url = self.endpoint(service, "token_endpoint", endpoint)?;
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", JWT_BEARER)
                .append_pair("assertion", assertion);
            if let Some(r) = resource {
                form.append_pair("resource", r);
            }
            form.finish()
        };
        let r = self
            .http()
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let retry = retry_after(r.headers());
        let bytes = read_capped(r).await?;
        if !status.is_success() {
            return Err(refusal(status, retry, &bytes));
        }
        let t: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::InvalidResponse(format!("{url}: {e}")))?;
        if !t
            .token_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(ClientError::InvalidResponse(format!(
                "{url} issued a {:?} token; only bearer tokens are used",
                t.token_type
            )));
        }
        Ok(t)
    }

    async fn send_json(
        &self,
        url: Url,
        body: &Value,
    ) -> Result<(reqwest::StatusCode, Option<std::time::Duration>, Vec<u8>), ClientError> {
        let r = self
            .http()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        let retry = retry_after(r.headers());
        let bytes = read_capped(r).await?;
        Ok((status, retry, bytes))
    }
}

fn parse(url: &Url, bytes: &[u8]) -> Result<IdentityResponse, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::InvalidResponse(format!("{url}: {e}")))
}
