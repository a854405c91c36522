//! ID-JAG verification, step by step (docs/protocol.md §3.3).
//!
//! The steps run in the order of the table, and the first failure decides
//! the code. Nothing in the token is trusted before step 4 has verified its
//! signature with a key found by `kid` in the configured JWKS of the
//! provider named by `iss`: no other header (`jku`, `jwk`, `x5u`, `x5c`) is
//! ever used to find a key, and `alg` only selects among the algorithms the
//! provider is allowed and the key is vetted for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use authmd_jose::{Algorithm, Compact};
use serde_json::{Map, Value};

use crate::config::{Config, ProviderConfig};
use crate::error::ProtocolError;
use crate::jwks::KeySource;
use crate::time::Timestamp;

/// Largest accepted assertion (docs/protocol.md §3).
pub const MAX_ASSERTION: usize = 16 * 1024;
/// Longest `sub` or `jti` accepted (attacker-chosen strings bound for the
/// database and the audit trail).
pub const MAX_IDENTIFIER: usize = 255;
/// Longest `client_id` accepted.
pub const MAX_CLIENT_ID: usize = 2048;

/// A used `jti` is kept at least until `exp + REPLAY_RETENTION_SKEWS *
/// clock_skew`.
///
/// Invariant: step 5 accepts an assertion while `now < exp + skew` on the
/// clock of the replica that sees it, and replica clocks may differ by up to
/// `skew`. So the last moment any replica could accept the assertion is
/// `exp + 2 * skew` on the clock of the replica that purges: at least 2
/// skews of retention are needed, and 2 suffice. Lowering this below 2
/// reopens a replay window; `assertions.max_lifetime` bounds how long the
/// record lives in total (`max_lifetime + 3 * skew`), see
/// [`Verifier::remember_jti_until`].
pub const REPLAY_RETENTION_SKEWS: u32 = 2;

/// A trusted provider: its policy and its keys.
#[derive(Debug)]
pub struct Provider {
    pub config: ProviderConfig,
    pub algorithms: Vec<Algorithm>,
    pub keys: Arc<dyn KeySource>,
    /// `scheme://host[:port]/` of the issuer, for step 9.
    origin_prefix: String,
}

/// A verified assertion: every field below passed the table.
#[derive(Debug, Clone)]
pub struct VerifiedIdJag {
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub client_id: String,
    /// The audience it was accepted for.
    pub aud: String,
    pub iat: Timestamp,
    pub exp: Timestamp,
    pub email: Option<String>,
    pub email_verified: bool,
    pub phone_number: Option<String>,
    pub phone_number_verified: bool,
    pub name: Option<String>,
    pub agent_platform: Option<String>,
    pub agent_context_id: Option<String>,
    /// When the user last signed in at the provider (`auth_time`), if
    /// given as a NumericDate.
    pub auth_time: Option<Timestamp>,
    /// The authorization the provider bound the grant to (ID-JAG draft
    /// §4.4.1): `scope` (RFC 6749 §3.3) and `resource` (RFC 8707), as sent
    /// (bounded by the assertion's size). The token endpoint grants no
    /// more than they allow (`grant.rs`); registration does not read them
    /// (the original dialect's contract: the post-claim scopes).
    pub scope: Option<Value>,
    pub resource: Option<Value>,
    pub provider: Arc<Provider>,
}

/// The verifier: the service's identity, its tolerances, its trust list.
#[derive(Debug)]
pub struct Verifier {
    audiences: Vec<String>,
    skew: Duration,
    max_lifetime: Duration,
    providers: HashMap<String, Arc<Provider>>,
}

impl Verifier {
    /// `keys` gives the key source of each configured provider.
    pub fn new(
        config: &Config,
        mut keys: impl FnMut(&ProviderConfig) -> Arc<dyn KeySource>,
    ) -> Self {
        let mut audiences = vec![config.issuer().to_owned()];
        audiences.extend(config.assertions.extra_audiences.iter().cloned());
        let providers = config
            .providers
            .iter()
            .map(|p| {
                let origin = url::Url::parse(&p.issuer)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default();
                let provider = Provider {
                    algorithms: p.allowed_algorithms(),
                    keys: keys(p),
                    config: p.clone(),
                    origin_prefix: format!("{origin}/"),
                };
                (p.issuer.clone(), Arc::new(provider))
            })
            .collect();
        Verifier {
            audiences,
            skew: config.assertions.clock_skew.get(),
            max_lifetime: config.assertions.max_lifetime.get(),
            providers,
        }
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    /// How long a `jti` accepted at `now` is remembered: until `now +
    /// max_lifetime + 3 * skew`, which is never before `exp` plus
    /// [`REPLAY_RETENTION_SKEWS`] times the clock skew.
    ///
    /// Invariant: an assertion is accepted only while `now < exp + skew`
    /// (step 5), on any replica; replica clocks are assumed to agree within
    /// `skew` too. A `jti` remembered until `exp + 2 * skew` is therefore
    /// remembered, by every replica's clock, for as long as any replica
    /// could still accept its assertion, and it can be purged after that.
    /// Step 6 bounds `exp` (`exp - iat <= max_lifetime` and `iat <= now +
    /// skew`), so `exp + 2 * skew <= now + max_lifetime + 3 * skew`: the
    /// later bound keeps every record long enough. It is the one used
    /// because it grows with `now`, the order records are written in, so
    /// the replay table is appended to at the end of its expiry order
    /// (SQLite's is clustered by it; PostgreSQL's has an index on it) instead
    /// of written at a random place per registration (the assertions of one
    /// second share an `exp`, and would be ordered by their random key).
    /// The `max` keeps the first bound whatever `now` a caller passes.
    pub fn remember_jti_until(&self, exp: Timestamp, now: Timestamp) -> Timestamp {
        let by_exp = exp.plus(self.skew * REPLAY_RETENTION_SKEWS);
        let by_now = now.plus(self.max_lifetime + self.skew * (REPLAY_RETENTION_SKEWS + 1));
        by_exp.max(by_now)
    }

    /// Runs steps 1 to 11. Steps 12 (replay) and 13 (credential type) need
    /// the store and the request; `register.rs` runs them.
    pub async fn verify(
        &self,
        assertion: &str,
        now: Timestamp,
    ) -> Result<VerifiedIdJag, ProtocolError> {
        // 1. A compact JWS, at most 16 KiB, JSON objects without duplicates.
        let token = unverified_parse(assertion)?;

        // 2. Explicit typing (RFC 8725 §3.11).
        let typ = token
            .header_str("typ")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ != "oauth-id-jag+jwt" && typ != "application/oauth-id-jag+jwt" {
            return Err(ProtocolError::invalid_request(
                "the assertion's typ header must be oauth-id-jag+jwt",
            ));
        }

        // 3. The (still unverified) issuer must be on the trust list.
        let provider = token
            .claim_str("iss")
            .and_then(|iss| self.providers.get(iss))
            .ok_or(ProtocolError::InvalidIssuer)?;

        // 4. Algorithm, key, signature.
        self.check_signature(&token, provider).await?;
        let claims = &token.claims;

        // 5. Not expired (with skew); a missing exp fails here.
        let exp = numeric_date(claims.get("exp")).ok_or(ProtocolError::Expired)?;
        if exp.plus(self.skew) <= now {
            return Err(ProtocolError::Expired);
        }

        // 6. Issued, valid from, lifetime.
        let iat = numeric_date(claims.get("iat"))
            .ok_or_else(|| ProtocolError::invalid_request("the assertion has no numeric iat"))?;
        if iat > now.plus(self.skew) {
            return Err(ProtocolError::invalid_request(
                "the assertion's iat is in the future",
            ));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(Some(nbf)).ok_or_else(|| {
                ProtocolError::invalid_request("the assertion's nbf is not a number")
            })?;
            if nbf > now.plus(self.skew) {
                return Err(ProtocolError::invalid_request(
                    "the assertion is not valid yet (nbf)",
                ));
            }
        }
        if exp < iat || iat.until(exp) > self.max_lifetime {
            return Err(ProtocolError::invalid_request(format!(
                "the assertion lives longer than {} (exp - iat)",
                crate::config::duration_words(self.max_lifetime)
            )));
        }

        // 7. Audience: this issuer, as a string or a one-element array.
        let aud = self.audience(claims)?;

        // 8. Identifiers.
        let sub = identifier(claims, "sub", MAX_IDENTIFIER)?;
        let jti = identifier(claims, "jti", MAX_IDENTIFIER)?;
        let client_id = identifier(claims, "client_id", MAX_CLIENT_ID)?;
        let iss = provider.config.issuer.as_str();

        // 9. The client belongs to the provider.
        if !client_matches(provider, client_id) {
            return Err(ProtocolError::InvalidClientId);
        }

        // 10. Somebody verified something (JSON true, not "true").
        let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
        let phone_number_verified = claims.get("phone_number_verified") == Some(&Value::Bool(true));
        if !email_verified && !phone_number_verified {
            return Err(ProtocolError::MissingVerifiedEmail);
        }

        // 11. The provider's authentication policy.
        check_authentication(&provider.config, claims, now, self.skew)?;

        // Beyond the table: a sender-constrained assertion (`cnf`) demands a
        // proof of possession this endpoint cannot check (ID-JAG draft
        // §8.6); issuing a bearer credential for it would drop the
        // constraint, so it is refused.
        if claims.contains_key("cnf") {
            return Err(ProtocolError::invalid_request(
                "sender-constrained assertions (cnf) are not supported here",
            ));
        }

        let text = |name: &str, max: usize| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control))
                .map(str::to_owned)
        };
        Ok(VerifiedIdJag {
            iss: iss.to_owned(),
            sub: sub.to_owned(),
            jti: jti.to_owned(),
            client_id: client_id.to_owned(),
            aud: aud.to_owned(),
            iat,
            exp,
            email: text("email", 320),
            email_verified,
            phone_number: text("phone_number", 64),
            phone_number_verified,
            name: text("name", 256),
            agent_platform: text("agent_platform", 256),
            agent_context_id: text("agent_context_id", 256),
            auth_time: numeric_date(claims.get("auth_time")),
            scope: claims.get("scope").cloned(),
            resource: claims.get("resource").cloned(),
            provider: Arc::clone(provider),
        })
    }

    /// The trusted provider named `iss`, if any.
    pub(crate) fn provider(&self, iss: &str) -> Option<&Arc<Provider>> {
        self.providers.get(iss)
    }

    pub(crate) fn skew(&self) -> Duration {
        self.skew
    }

    pub(crate) fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// `aud` is this issuer (or an extra accepted audience): a string, or an
    /// array with exactly one element (ID-JAG draft §4.4.1).
    pub(crate) fn audience<'a>(
        &self,
        claims: &'a Map<String, Value>,
    ) -> Result<&'a str, ProtocolError> {
        match claims.get("aud") {
            Some(Value::String(a)) => Some(a.as_str()),
            Some(Value::Array(list)) if list.len() == 1 => list[0].as_str(),
            _ => None,
        }
        .filter(|a| self.audiences.iter().any(|ours| ours == a))
        .ok_or_else(|| {
            ProtocolError::InvalidAudience(format!("aud must be exactly {:?}", self.audiences[0]))
        })
    }

    /// Step 4, shared with logout tokens: `alg` allowed for the provider,
    /// no `crit`, a `kid` found in the provider's JWKS, a key vetted for
    /// `alg`, a signature that verifies. No other header locates a key.
    pub(crate) async fn check_signature(
        &self,
        token: &Compact,
        provider: &Provider,
    ) -> Result<(), ProtocolError> {
        let refuse = |why: &str| Err(ProtocolError::InvalidSignature(why.to_owned()));
        let Some(alg) = token.header_str("alg").and_then(Algorithm::from_name) else {
            return refuse("the assertion's alg is not an accepted asymmetric algorithm");
        };
        if !provider.algorithms.contains(&alg) {
            return refuse("this provider does not sign with the assertion's alg");
        }
        // RFC 7515 §4.1.11: no extension is understood here, so any `crit`
        // (including an empty or a misused one) is refused.
        if token.header.contains_key("crit") {
            return refuse("the assertion's crit header names an unsupported extension");
        }
        let Some(kid) = token
            .header_str("kid")
            .filter(|k| !k.is_empty() && k.len() <= 256)
        else {
            return refuse("the assertion has no usable kid");
        };
        let Some(key) = provider.keys.key(kid).await else {
            if provider.keys.expired() {
                return refuse(
                    "the provider's keys could not be refreshed for longer than jwks.cache_max; \
                     try again once the provider's JWKS is reachable",
                );
            }
            return refuse("no key with the assertion's kid in the provider's JWKS");
        };
        if !key.supports(alg) {
            return refuse("the key named by kid is not for the assertion's alg");
        }
        if !key.verify(alg, token.signing_input(), &token.signature) {
            return refuse("the signature does not verify");
        }
        Ok(())
    }
}

/// Parses the assertion WITHOUT verifying anything. Every value it returns
/// is attacker-controlled until `check_signature` has passed; only `iss`
/// (to choose the provider) and the header are read before that.
pub(crate) fn unverified_parse(assertion: &str) -> Result<Compact, ProtocolError> {
    if assertion.len() > MAX_ASSERTION {
        return Err(ProtocolError::invalid_request(format!(
            "the assertion is longer than {MAX_ASSERTION} bytes"
        )));
    }
    Compact::parse(assertion, MAX_ASSERTION).map_err(|e| {
        ProtocolError::invalid_request(format!("the assertion is not a compact JWS: {e}"))
    })
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds, not a string.
pub(crate) fn numeric_date(v: Option<&Value>) -> Option<Timestamp> {
    let secs = v?.as_f64()?;
    // Far beyond any real date: treated as a value, bounded, not overflowed.
    let ms = (secs * 1000.0).clamp(-1e15, 1e15);
    Some(Timestamp::from_millis(ms as i64))
}

fn identifier<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<&'a str, ProtocolError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control))
        .ok_or_else(|| {
            ProtocolError::invalid_request(format!(
                "the assertion's {name} must be a non-empty string of at most {max} bytes"
            ))
        })
}

/// Step 9: configured client ids, or the issuer itself, or a URL on the
/// issuer's origin (same scheme, host and port, compared as text: a
/// `client_id` spelled differently, with an explicit default port or an
/// upper-case host, is not recognized).
fn client_matches(provider: &Provider, client_id: &str) -> bool {
    let config = &provider.config;
    if !config.client_ids.is_empty() {
        return config.client_ids.iter().any(|c| c == client_id);
    }
    client_id == config.issuer
        || (client_id.starts_with(&provider.origin_prefix) && !client_id.contains(['#', '\\']))
}

/// Step 11: `require_amr` and `max_auth_age`.
fn check_authentication(
    provider: &ProviderConfig,
    claims: &Map<String, Value>,
    now: Timestamp,
    skew: Duration,
) -> Result<(), ProtocolError> {
    if !provider.require_amr.is_empty() {
        let amr: Vec<&str> = claims
            .get("amr")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = provider
            .require_amr
            .iter()
            .find(|r| !amr.contains(&r.as_str()))
        {
            return Err(ProtocolError::InsufficientUserAuthentication(format!(
                "this service requires the user to have authenticated with {missing:?} (amr)"
            )));
        }
    }
    if let Some(max_age) = provider.max_auth_age {
        let fresh = numeric_date(claims.get("auth_time"))
            .is_some_and(|t| t <= now.plus(skew) && t.until(now) <= max_age.get() + skew);
        if !fresh {
            return Err(ProtocolError::InsufficientUserAuthentication(format!(
                "this service requires a sign-in within the last {} (auth_time)",
                crate::config::duration_words(max_age.get())
            )));
        }
    }
    Ok(())
}
