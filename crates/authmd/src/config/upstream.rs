//! `[upstream]`: the API behind authmd in gateway mode (`http/gateway.rs`).
//! The first six key names are fixed: tools outside this repository write
//! them.

use serde::Deserialize;

use super::{ConfigError, HumanDuration};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`, optionally with a base
    /// path; the request's path is appended unchanged.
    pub url: String,
    /// Remove the resource identifier's path first: with `/api/`,
    /// `/api/v1/x` goes to `<url>/v1/x`.
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default = "d5s")]
    pub connect_timeout: HumanDuration,
    /// Until the response head arrives (a body may stream for longer).
    #[serde(default = "d60s")]
    pub timeout: HumanDuration,
    /// Pass the agent's credential on in `Authorization`; removed unless
    /// true (the upstream gets identity headers instead).
    #[serde(default)]
    pub forward_authorization: bool,
    /// Add `X-Authmd-Assertion`, a short-lived JWT signed by authmd.
    #[serde(default = "yes")]
    pub assertion_header: bool,
    /// Send the client's `Host` instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Idle connections kept open to the upstream.
    #[serde(default = "n256")]
    pub max_idle_connections: usize,
    /// How long an idle pooled connection is kept.
    #[serde(default = "d90s")]
    pub idle_timeout: HumanDuration,
}

fn yes() -> bool {
    true
}
fn d5s() -> HumanDuration {
    HumanDuration::secs(5)
}
fn d60s() -> HumanDuration {
    HumanDuration::secs(60)
}
fn d90s() -> HumanDuration {
    HumanDuration::secs(90)
}
fn n256() -> usize {
    256
}

impl UpstreamConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        // The value may hold a password: not echoed.
        let u = url::Url::parse(&self.url)
            .map_err(|_| ConfigError::new("upstream.url", "is not a URL (http://host:port)"))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(ConfigError::new(
                "upstream.url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            return Err(ConfigError::new(
                "upstream.url",
                "must not have a query, fragment or user information",
            ));
        }
        for (key, d) in [
            ("upstream.connect_timeout", self.connect_timeout),
            ("upstream.timeout", self.timeout),
            ("upstream.idle_timeout", self.idle_timeout),
        ] {
            if d.get().is_zero() {
                return Err(ConfigError::new(key, "must be longer than zero"));
            }
        }
        if self.max_idle_connections > 65_536 {
            return Err(ConfigError::new(
                "upstream.max_idle_connections",
                "must be at most 65536",
            ));
        }
        Ok(())
    }
}
