//! `[introspection]` (the RFC 7662 endpoint's callers) and `[cors]` (which
//! browser origins may read the agent endpoints and the API).

use serde::Deserialize;

use super::ConfigError;
use crate::token::SecretHash;

/// `[introspection]`: the resource servers allowed to ask
/// `POST /oauth2/introspect` about a credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// `[[introspection.clients]]`: each with `id` and `secret_sha256`
    /// (or `secret_file`, hashed when the configuration is loaded).
    #[serde(default)]
    pub clients: Vec<IntrospectionClient>,
    /// Failed client authentications allowed from one client network per
    /// hour (RFC 7662 §4: the endpoint must not let anyone fish for
    /// tokens). Over it, the network is answered `429` until a slot frees.
    #[serde(default = "default_failures")]
    pub failures_per_ip_per_hour: u32,
}

fn default_failures() -> u32 {
    30
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        IntrospectionConfig {
            clients: Vec::new(),
            failures_per_ip_per_hour: default_failures(),
        }
    }
}

/// One caller of the introspection endpoint (HTTP Basic, RFC 6749 §2.3.1).
/// Only the SHA-256 of its secret is kept: the configuration holds either
/// that hash or the path of a file holding the secret (read and hashed at
/// load, never kept).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClient {
    pub id: String,
    /// Hex SHA-256 of the secret (`printf %s "$SECRET" | sha256sum`).
    pub secret_sha256: String,
}

/// Shortest secret accepted from a `secret_file` (a hash cannot be checked).
pub const MIN_CLIENT_SECRET: usize = 32;

impl IntrospectionClient {
    /// The secret's hash (set by [`IntrospectionConfig::validate`]).
    pub fn secret_hash(&self) -> SecretHash {
        decode_hash(&self.secret_sha256).unwrap_or(SecretHash([0; 32]))
    }
}

fn decode_hash(hex: &str) -> Option<SecretHash> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(SecretHash(out))
}

impl IntrospectionConfig {
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let key = format!("introspection.clients[{i}]");
            // RFC 7617 §2: a user-id cannot hold a colon; keep ids printable.
            if c.id.is_empty()
                || c.id.len() > 255
                || !c
                    .id
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
            {
                return Err(ConfigError::new(
                    format!("{key}.id"),
                    "must be 1-255 printable ASCII characters without spaces or colons",
                ));
            }
            if !seen.insert(c.id.clone()) {
                return Err(ConfigError::new(format!("{key}.id"), "is listed twice"));
            }
            match decode_hash(&c.secret_sha256) {
                None => {
                    return Err(ConfigError::new(
                        format!("{key}.secret_sha256"),
                        "must be 64 hex digits: the SHA-256 of the secret (or set secret_file)",
                    ));
                }
                // `Basic base64("id:")` would authenticate.
                Some(hash) if hash == SecretHash::of("") => {
                    return Err(ConfigError::new(
                        format!("{key}.secret_sha256"),
                        "is the SHA-256 of an empty secret",
                    ));
                }
                Some(_) => {}
            }
            c.secret_sha256 = c.secret_sha256.trim().to_ascii_lowercase();
        }
        Ok(())
    }
}

/// `secret_file = "/run/secrets/x"` in a `[[introspection.clients]]` entry
/// stands for `secret_sha256 = <SHA-256 of the file's contents>`: the
/// secret itself never enters the configuration. Runs on the TOML table,
/// after the environment is applied, before deserialization.
pub(super) fn resolve_client_secrets(table: &mut toml::Table) -> Result<(), ConfigError> {
    let Some(clients) = table
        .get_mut("introspection")
        .and_then(toml::Value::as_table_mut)
        .and_then(|t| t.get_mut("clients"))
        .and_then(toml::Value::as_array_mut)
    else {
        return Ok(());
    };
    for (i, client) in clients.iter_mut().enumerate() {
        let Some(client) = client.as_table_mut() else {
            continue;
        };
        let Some(path) = client.remove("secret_file") else {
            continue;
        };
        let key = format!("introspection.clients[{i}].secret_file");
        let path = path
            .as_str()
            .ok_or_else(|| ConfigError::new(&key, "must be a file path"))?
            .to_owned();
        if client.contains_key("secret_sha256") {
            return Err(ConfigError::new(
                &key,
                "set both with secret_sha256; choose one",
            ));
        }
        let secret = super::load::read_secret_file(&key, &path)?;
        if secret.chars().count() < MIN_CLIENT_SECRET || secret.chars().any(char::is_control) {
            return Err(ConfigError::new(
                &key,
                format!(
                    "the secret must be at least {MIN_CLIENT_SECRET} characters on one line \
                     (e.g. `openssl rand -hex 32`)"
                ),
            ));
        }
        let hash = SecretHash::of(&secret);
        let hex: String = hash.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        client.insert("secret_sha256".into(), toml::Value::String(hex));
    }
    Ok(())
}

/// `[cors]`: which web origins may read the agent endpoints and the
/// protected resource from a browser. The discovery documents and
/// `/auth.md` are readable from any origin regardless.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`, `http://localhost:3000`).
    /// Empty by default: no browser origin may call them.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl CorsConfig {
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        for (i, o) in self.allowed_origins.iter_mut().enumerate() {
            let key = format!("cors.allowed_origins[{i}]");
            if o == "*" || o == "null" {
                return Err(ConfigError::new(
                    key,
                    format!("{o:?} is not accepted: list each origin that may call the API"),
                ));
            }
            let u =
                url::Url::parse(o).map_err(|e| ConfigError::new(&key, format!("{o:?}: {e}")))?;
            let bare = (u.path() == "/" && !o.ends_with('/'))
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none();
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || !bare {
                return Err(ConfigError::new(
                    key,
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
            // Browsers send the serialized origin: lower-case, default port
            // omitted. Compare against that form.
            *o = u.origin().ascii_serialization();
        }
        self.allowed_origins.dedup();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_and_paths_refused() {
        let mut c = CorsConfig {
            allowed_origins: vec!["HTTPS://App.Example.com:443".into()],
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.allowed_origins, ["https://app.example.com"]);
        for bad in [
            "*",
            "null",
            "https://a.example/",
            "https://a.example/x",
            "ftp://a.example",
            "https://u@a.example",
        ] {
            let mut c = CorsConfig {
                allowed_origins: vec![bad.into()],
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ids_and_hashes_are_checked() {
        let ok = "a".repeat(64);
        for (id, hash, good) in [
            ("kong", ok.as_str(), true),
            ("has:colon", ok.as_str(), false),
            ("has space", ok.as_str(), false),
            ("", ok.as_str(), false),
            ("kong", "abc", false),
            (
                "kong",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                false,
            ),
        ] {
            let mut c = IntrospectionConfig {
                clients: vec![IntrospectionClient {
                    id: id.into(),
                    secret_sha256: hash.into(),
                }],
                ..Default::default()
            };
            assert_eq!(c.validate().is_ok(), good, "{id} {hash}");
        }
    }
}
