//! `[[providers]]`, `[assertions]` and `[jwks]`: who may vouch for users,
//! and how their assertions and keys are judged.

use serde::Deserialize;

use super::{ConfigError, HumanDuration, check_url};
use authmd_jose::Algorithm;

/// A trusted agent provider (docs/protocol.md §3.3). Never published.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Compared with the assertion's `iss` byte for byte.
    pub issuer: String,
    /// Default: `<issuer>/.well-known/jwks.json`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Allowed `alg` values. Default: ES256, RS256, PS256, EdDSA.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Accepted `client_id` values; empty: the issuer itself or a URL on its
    /// origin.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Match an existing user by the asserted verified email (or phone).
    #[serde(default = "yes")]
    pub link_by_verified_email: bool,
    /// With linking on: only a verified email in one of these domains
    /// links to an existing user, and a phone number never does. A provider
    /// that asserts `email_verified` for an address it does not control
    /// would otherwise take over the user of that address ("nOAuth").
    /// Lower-cased by validation.
    #[serde(default)]
    pub email_domains: Option<Vec<String>>,
    /// Every value here must appear in the assertion's `amr`.
    #[serde(default)]
    pub require_amr: Vec<String>,
    /// The user must have authenticated (`auth_time`) at most this long ago.
    #[serde(default)]
    pub max_auth_age: Option<HumanDuration>,
}

fn yes() -> bool {
    true
}

impl ProviderConfig {
    /// The JWKS URL (set by validation).
    pub fn jwks_uri(&self) -> &str {
        self.jwks_uri.as_deref().unwrap_or_default()
    }

    /// The allowed algorithms (validated names).
    pub fn allowed_algorithms(&self) -> Vec<Algorithm> {
        match &self.algorithms {
            Some(names) => names
                .iter()
                .filter_map(|n| Algorithm::from_name(n))
                .collect(),
            None => Algorithm::ALL.to_vec(),
        }
    }

    pub(super) fn validate(&mut self, i: usize, own_issuer: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("providers[{i}].{k}");
        check_url(&key("issuer"), &self.issuer)?;
        if self.issuer == own_issuer {
            return Err(ConfigError::new(
                key("issuer"),
                "is this service's own issuer: an ID-JAG must come from someone else (ID-JAG draft §8.3)",
            ));
        }
        let jwks = self.jwks_uri.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/jwks.json",
                self.issuer.trim_end_matches('/')
            )
        });
        check_url(&key("jwks_uri"), &jwks)?;
        self.jwks_uri = Some(jwks);
        if let Some(names) = &self.algorithms {
            if names.is_empty() {
                return Err(ConfigError::new(key("algorithms"), "must not be empty"));
            }
            for n in names {
                if Algorithm::from_name(n).is_none() {
                    return Err(ConfigError::new(
                        key("algorithms"),
                        format!("{n:?} is not one of ES256, RS256, PS256, EdDSA"),
                    ));
                }
            }
        }
        if self.client_ids.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                key("client_ids"),
                "must not contain empty strings",
            ));
        }
        if let Some(domains) = &mut self.email_domains {
            if !self.link_by_verified_email {
                return Err(ConfigError::new(
                    key("email_domains"),
                    "has no effect with link_by_verified_email = false",
                ));
            }
            if domains.is_empty() {
                return Err(ConfigError::new(
                    key("email_domains"),
                    "must not be empty (to link by no email, set link_by_verified_email = false)",
                ));
            }
            for d in domains.iter_mut() {
                let valid = !d.is_empty()
                    && !d.starts_with('.')
                    && !d.ends_with('.')
                    && d.chars()
                        .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
                if !valid {
                    return Err(ConfigError::new(
                        key("email_domains"),
                        format!("{d:?} is not a domain name (e.g. \"example.com\")"),
                    ));
                }
                d.make_ascii_lowercase();
            }
        }
        if self.max_auth_age.is_some_and(|d| d.get().is_zero()) {
            return Err(ConfigError::new(
                key("max_auth_age"),
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// How ID-JAGs (and logout tokens) are judged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// Tolerated clock difference with providers (and between replicas).
    #[serde(default = "d60s")]
    pub clock_skew: HumanDuration,
    /// Longest accepted `exp - iat`.
    #[serde(default = "d10m")]
    pub max_lifetime: HumanDuration,
    /// Audiences accepted besides the issuer.
    #[serde(default)]
    pub extra_audiences: Vec<String>,
}

fn d60s() -> HumanDuration {
    HumanDuration::secs(60)
}
fn d10m() -> HumanDuration {
    HumanDuration::secs(600)
}

impl Default for AssertionConfig {
    fn default() -> Self {
        AssertionConfig {
            clock_skew: d60s(),
            max_lifetime: d10m(),
            extra_audiences: Vec::new(),
        }
    }
}

/// Fetching and caching provider keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// Floor of the cache lifetime (`Cache-Control: max-age` is clamped).
    #[serde(default = "d10m")]
    pub cache_min: HumanDuration,
    /// Ceiling of the cache lifetime, and the longest a key set that cannot
    /// be refreshed (the provider is unreachable) is still used after it was
    /// fetched; then the provider's tokens are refused (`invalid_signature`).
    #[serde(default = "d24h")]
    pub cache_max: HumanDuration,
    /// At most one refetch per provider this often for an unknown `kid`
    /// (and after a failed fetch).
    #[serde(default = "d1m")]
    pub refetch_interval: HumanDuration,
    /// Whole-request timeout of a fetch.
    #[serde(default = "d5s")]
    pub timeout: HumanDuration,
    /// Largest JWKS document read.
    #[serde(default = "n64k")]
    pub max_bytes: usize,
}

fn d24h() -> HumanDuration {
    HumanDuration::secs(86_400)
}
fn d1m() -> HumanDuration {
    HumanDuration::secs(60)
}
fn d5s() -> HumanDuration {
    HumanDuration::secs(5)
}
fn n64k() -> usize {
    64 * 1024
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            cache_min: d10m(),
            cache_max: d24h(),
            refetch_interval: d1m(),
            timeout: d5s(),
            max_bytes: n64k(),
        }
    }
}
