//! Layering: TOML file, then `AUTHMD_*` environment variables, then
//! `…_FILE` secrets, then typed deserialization and validation.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Config, ConfigError};

/// Prefix of every environment variable that configures authmd.
pub const ENV_PREFIX: &str = "AUTHMD_";

/// Environment variables with the prefix that are not configuration keys
/// (the config file's path, the log filter, and the agent and provider
/// tools' directories).
const ENV_NOT_KEYS: &[&str] = &[
    "AUTHMD_CONFIG",
    "AUTHMD_LOG",
    "AUTHMD_AGENT_HOME",
    "AUTHMD_PROVIDER_DIR",
    "AUTHMD_PROVIDER_ISSUER",
];

/// How an environment variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Str,
    Bool,
    Int,
    /// Comma-separated (`a,b`) or a TOML array (`["a", "b"]`).
    List,
    /// A TOML inline value: `[{issuer = "https://p.example"}]`.
    Toml,
    /// A string that may also come from a file: `AUTHMD_X_FILE=/run/secrets/x`
    /// in the environment, or `x_file = "/run/secrets/x"` in the TOML file.
    Secret,
}

/// Every configuration key. The environment variable for a key is
/// `AUTHMD_` + the key with dots as underscores, upper-cased
/// (`ttl.access_token` → `AUTHMD_TTL_ACCESS_TOKEN`).
pub const KEYS: &[(&str, KeyKind)] = {
    use KeyKind::*;
    &[
        ("issuer", Str),
        ("listen", Str),
        ("database.url", Secret),
        ("database.max_connections", Int),
        ("resource.identifier", Str),
        ("resource.name", Str),
        ("resource.logo_uri", Str),
        ("resource.pre_claim_scopes", List),
        ("resource.post_claim_scopes", List),
        ("resource.scopes", Toml),
        ("resource.rules", Toml),
        ("registration.anonymous", Bool),
        ("registration.verified_email", Bool),
        ("registration.identity_assertion", Bool),
        ("registration.jit_provisioning", Bool),
        ("registration.rotate_key_on_claim", Bool),
        ("registration.max_api_keys_per_delegation", Int),
        ("dialects.original.enabled", Bool),
        ("dialects.original.anonymous", Bool),
        ("dialects.original.verified_email", Bool),
        ("dialects.original.identity_assertion", Bool),
        ("dialects.current.enabled", Bool),
        ("dialects.current.anonymous", Bool),
        ("dialects.current.service_auth", Bool),
        ("dialects.current.identity_assertion", Bool),
        ("dialects.current.max_auth_age", Str),
        ("ttl.registration", Str),
        ("ttl.claim_link", Str),
        ("ttl.otp", Str),
        ("ttl.access_token", Str),
        ("ttl.refresh_token", Str),
        ("providers", Toml),
        ("assertions.clock_skew", Str),
        ("assertions.max_lifetime", Str),
        ("assertions.extra_audiences", List),
        ("jwks.cache_min", Str),
        ("jwks.cache_max", Str),
        ("jwks.refetch_interval", Str),
        ("jwks.timeout", Str),
        ("jwks.max_bytes", Int),
        ("mail.smtp_url", Secret),
        ("mail.smtp_username", Str),
        ("mail.smtp_password", Secret),
        ("mail.from", Str),
        ("mail.outbox", Str),
        ("mail.retry_for", Str),
        ("rate_limits.enabled", Bool),
        ("rate_limits.anonymous_per_ip_per_hour", Int),
        ("rate_limits.anonymous_per_hour", Int),
        ("rate_limits.identity_assertion_per_ip_per_hour", Int),
        ("rate_limits.identity_assertion_per_hour", Int),
        ("rate_limits.verified_email_per_ip_per_hour", Int),
        ("rate_limits.verified_email_per_hour", Int),
        ("rate_limits.claim_emails_per_registration_per_hour", Int),
        ("rate_limits.claim_emails_per_address_per_hour", Int),
        ("rate_limits.claim_emails_per_address_per_day", Int),
        ("rate_limits.token_exchanges_per_registration_per_hour", Int),
        ("server.trusted_proxies", List),
        ("server.workers", Int),
        ("server.log_format", Str),
        ("server.credential_cache_capacity", Int),
        ("server.credential_cache_ttl", Str),
        ("server.revocation_poll", Str),
        ("server.sweep_interval", Str),
        ("server.request_timeout", Str),
        ("server.secret_key", Secret),
        ("server.header_read_timeout", Str),
        ("server.idle_timeout", Str),
        ("server.max_connections", Int),
        ("server.shutdown_timeout", Str),
        ("server.tls_cert_file", Str),
        ("server.tls_key_file", Str),
        ("admin.listen", Str),
        ("admin.token", Secret),
        ("admin.tls_cert_file", Str),
        ("admin.tls_key_file", Str),
        ("admin.allow_insecure_remote", Bool),
        ("introspection.clients", Toml),
        ("introspection.failures_per_ip_per_hour", Int),
        ("cors.allowed_origins", List),
        ("signing.algorithm", Str),
        ("upstream.url", Str),
        ("upstream.strip_prefix", Bool),
        ("upstream.connect_timeout", Str),
        ("upstream.timeout", Str),
        ("upstream.forward_authorization", Bool),
        ("upstream.assertion_header", Bool),
        ("upstream.preserve_host", Bool),
        ("upstream.max_idle_connections", Int),
        ("upstream.idle_timeout", Str),
        ("audit.retention", Str),
        ("log.format", Str),
        ("log.level", Str),
        ("metrics.listen", Str),
    ]
};

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Loads the configuration from an optional TOML file and the given
/// environment (pass `std::env::vars().collect()`).
pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigError::new("(file)", format!("cannot read {}: {e}", p.display())))?,
        None => String::new(),
    };
    load_str(&text, env)
}

/// Like [`load`], from TOML text.
pub fn load_str(text: &str, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::new("(syntax)", e.to_string().trim().to_owned())
    })?;
    apply_env(&mut table, env)?;
    resolve_secret_files(&mut table)?;
    super::introspection::resolve_client_secrets(&mut table)?;
    let value = toml::Value::Table(table);
    let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut key = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports an unknown field at its parent; name the field itself.
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            key = if key == "." || key.is_empty() {
                name.to_owned()
            } else if key.ends_with(name) {
                key
            } else {
                format!("{key}.{name}")
            };
        }
        ConfigError::new(key, message)
    })?;
    config.validate()?;
    Ok(config)
}

fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut known: BTreeMap<String, (&str, KeyKind)> = BTreeMap::new();
    for &(key, kind) in KEYS {
        known.insert(env_name(key), (key, kind));
        if kind == KeyKind::Secret {
            known.insert(format!("{}_FILE", env_name(key)), (key, kind));
        }
    }
    for (name, raw) in env {
        if !name.starts_with(ENV_PREFIX) || ENV_NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let Some(&(key, kind)) = known.get(name) else {
            return Err(ConfigError::new(
                name.clone(),
                "is not a configuration variable (see the configuration reference)",
            ));
        };
        let value = if name.ends_with("_FILE") && kind == KeyKind::Secret {
            if env.contains_key(&env_name(key)) {
                return Err(ConfigError::new(
                    key,
                    format!("set both by {} and {name}; choose one", env_name(key)),
                ));
            }
            toml::Value::String(read_secret_file(key, raw)?)
        } else {
            env_value(name, kind, raw)?
        };
        set_path(table, key, value)?;
    }
    Ok(())
}

fn env_value(name: &str, kind: KeyKind, raw: &str) -> Result<toml::Value, ConfigError> {
    let parse_toml = |s: &str| -> Result<toml::Value, ConfigError> {
        let t: toml::Table = format!("v = {s}")
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new(name, e.message().to_owned()))?;
        t.get("v")
            .cloned()
            .ok_or_else(|| ConfigError::new(name, "empty value"))
    };
    Ok(match kind {
        KeyKind::Str | KeyKind::Secret => toml::Value::String(raw.to_owned()),
        KeyKind::Bool => match raw {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(ConfigError::new(name, "must be true or false")),
        },
        KeyKind::Int => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| ConfigError::new(name, "must be an integer"))?,
        ),
        KeyKind::List if raw.trim_start().starts_with('[') => parse_toml(raw)?,
        KeyKind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        KeyKind::Toml => parse_toml(raw)?,
    })
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().unwrap_or(key);
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::new(p, "must be a table"))?;
    }
    t.insert(leaf.to_owned(), value);
    Ok(())
}

/// `url_file = "/run/secrets/db"` in the TOML file stands for `url = <contents>`.
fn resolve_secret_files(table: &mut toml::Table) -> Result<(), ConfigError> {
    for &(key, kind) in KEYS {
        if kind != KeyKind::Secret {
            continue;
        }
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().unwrap_or(key);
        let Some(t) = table_at(table, &parts) else {
            continue;
        };
        let file_key = format!("{leaf}_file");
        if let Some(path) = t.remove(&file_key) {
            let full = format!("{key}_file");
            let path = path
                .as_str()
                .ok_or_else(|| ConfigError::new(&full, "must be a file path"))?
                .to_owned();
            if t.contains_key(leaf) {
                return Err(ConfigError::new(
                    key,
                    format!("set both by {key} and {full}; choose one"),
                ));
            }
            t.insert(
                leaf.to_owned(),
                toml::Value::String(read_secret_file(key, &path)?),
            );
        }
    }
    Ok(())
}

/// The sub-table at `path`, if every step exists and is a table.
fn table_at<'a>(table: &'a mut toml::Table, path: &[&str]) -> Option<&'a mut toml::Table> {
    match path.split_first() {
        None => Some(table),
        Some((first, rest)) => table_at(table.get_mut(*first)?.as_table_mut()?, rest),
    }
}

pub(super) fn read_secret_file(key: &str, path: &str) -> Result<String, ConfigError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read secret file {path}: {e}")))?;
    Ok(s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s)
        .to_owned())
}

// `Deserialize` is used through serde_path_to_error.
const _: fn() = || {
    fn assert_deserialize<'de, T: Deserialize<'de>>() {}
    assert_deserialize::<Config>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_names_are_unique() {
        let names: BTreeSet<String> = KEYS.iter().map(|(k, _)| env_name(k)).collect();
        assert_eq!(names.len(), KEYS.len());
    }

    /// Whether the example documents `key`: its section (a table header,
    /// commented out or not) holds `leaf = …` or `leaf_file = …`
    /// (commented out or not), or `key` is itself a table's header.
    fn documented(example: &str, key: &str) -> bool {
        let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let mut current = String::new();
        for line in example.lines() {
            let l = line.trim_start_matches('#').trim();
            if l.starts_with('[') {
                let header = l.split(']').next().unwrap_or_default();
                current = header.trim_start_matches('[').trim().to_owned();
                if current == key {
                    return true;
                }
                continue;
            }
            let name = l.split('=').next().unwrap_or_default().trim();
            if current == section && (name == leaf || name == format!("{leaf}_file")) {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_example_file_documents_every_key_and_changes_nothing() {
        // The example file is the configuration reference users copy from:
        // it names every key, and as shipped it is exactly the defaults
        // (anything else is commented out), so running with it enables
        // nothing by surprise (an admin API, SMTP, a fixed key).
        let example = include_str!("../../../../authmd.example.toml");
        for (key, _) in KEYS {
            assert!(documented(example, key), "the example lacks {key}");
        }
        let loaded = load_str(example, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{loaded:?}"),
            format!("{:?}", Config::default()),
            "an uncommented value in authmd.example.toml is not the default"
        );
        // Every commented-out setting is valid TOML once uncommented.
        for line in example.lines() {
            let Some(setting) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((name, _)) = setting.split_once(" = ") else {
                continue;
            };
            if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                setting
                    .parse::<toml::Table>()
                    .unwrap_or_else(|e| panic!("{line:?} does not parse once uncommented: {e}"));
            }
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_str(
            "[ttl]\naccess_token = \"2h\"\n[resource]\nname = \"From file\"",
            &env(&[
                ("AUTHMD_TTL_ACCESS_TOKEN", "30m"),
                ("AUTHMD_RESOURCE_PRE_CLAIM_SCOPES", "api.read"),
                ("AUTHMD_RATE_LIMITS_ENABLED", "false"),
                ("AUTHMD_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
                ("AUTHMD_PROVIDERS", "[{issuer = \"https://p.example\"}]"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ttl.access_token.get().as_secs(), 1800);
        assert_eq!(c.resource.name, "From file");
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert_eq!(c.providers[0].issuer, "https://p.example");
    }

    #[test]
    fn unknown_keys_stop_the_server_naming_the_key() {
        let e = load_str("[resource]\nnmae = \"x\"", &BTreeMap::new()).err();
        assert_eq!(e.map(|e| e.key), Some("resource.nmae".into()));
        let e = load_str("isuer = \"x\"", &BTreeMap::new()).err();
        assert_eq!(e.map(|e| e.key), Some("isuer".into()));
        let e = load_str("", &env(&[("AUTHMD_TTL_ACESS_TOKEN", "1h")])).err();
        assert_eq!(e.map(|e| e.key), Some("AUTHMD_TTL_ACESS_TOKEN".into()));
        let e = load_str("[ttl]\notp = \"ten minutes\"", &BTreeMap::new()).err();
        assert_eq!(e.map(|e| e.key), Some("ttl.otp".into()));
        let e = load_str("", &env(&[("AUTHMD_SERVER_WORKERS", "many")])).err();
        assert_eq!(e.map(|e| e.key), Some("AUTHMD_SERVER_WORKERS".into()));
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = std::env::temp_dir().join(format!("authmd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let f = dir.join("db");
        std::fs::write(&f, "postgres://u:pw@db/x\n").unwrap_or_else(|e| panic!("{e}"));
        let path = f.to_string_lossy().into_owned();

        let c = load_str("", &env(&[("AUTHMD_DATABASE_URL_FILE", &path)]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.database.url.expose(), "postgres://u:pw@db/x");

        let c = load_str(
            &format!("[database]\nurl_file = {path:?}"),
            &BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.database.url.expose(), "postgres://u:pw@db/x");

        let both = load_str(
            "",
            &env(&[
                ("AUTHMD_DATABASE_URL_FILE", &path),
                ("AUTHMD_DATABASE_URL", "sqlite::memory:"),
            ]),
        );
        assert_eq!(both.err().map(|e| e.key), Some("database.url".into()));
        let missing = load_str("", &env(&[("AUTHMD_DATABASE_URL_FILE", "/nonexistent/x")]));
        assert_eq!(missing.err().map(|e| e.key), Some("database.url".into()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
