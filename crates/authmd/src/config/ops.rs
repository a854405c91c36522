//! What an operator watches: `[log]` and `[metrics]`.

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// `[log]`: where the server's log goes is stderr; this says how it looks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json` (one object per line, for a log shipper).
    /// Colour only when stderr is a terminal.
    #[serde(default)]
    pub format: Option<String>,
    /// The filter: a level (`info`, the default) or per-target directives
    /// (`info,authmd::access=warn`). The environment variable `AUTHMD_LOG`,
    /// when set, wins.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: None,
            level: default_level(),
        }
    }
}

/// Longest `log.level` accepted.
const MAX_LEVEL: usize = 1024;

impl LogConfig {
    pub(super) fn validate(&self, legacy: Option<&str>) -> Result<(), ConfigError> {
        for (key, format) in [
            ("log.format", self.format.as_deref()),
            ("server.log_format", legacy),
        ] {
            if let Some(f) = format
                && !matches!(f, "text" | "json")
            {
                return Err(ConfigError::new(key, "must be \"text\" or \"json\""));
            }
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || "_:=,.-".contains(c);
        if self.level.is_empty() || self.level.len() > MAX_LEVEL || !self.level.chars().all(ok) {
            return Err(ConfigError::new(
                "log.level",
                "must be a level (trace, debug, info, warn, error) or directives like \"info,authmd::access=warn\"",
            ));
        }
        Ok(())
    }
}

/// `[metrics]`: Prometheus exposition. `/metrics` is always on the admin
/// listener (behind its token); `listen` serves it alone on a listener of
/// its own, without a token, for deployments without an admin API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` is served without authentication. Keep it
    /// private (a loopback or cluster-internal address).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

impl super::Config {
    /// The log format in force: `log.format`, else the deprecated
    /// `server.log_format`, else `text`.
    pub fn log_format(&self) -> &str {
        self.log
            .format
            .as_deref()
            .or(self.server.log_format.as_deref())
            .unwrap_or("text")
    }
}
