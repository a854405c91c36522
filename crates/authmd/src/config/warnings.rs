//! Warnings about a configuration that is valid but probably not meant:
//! secrets that look like placeholders copied from an example. `authmd
//! check-config` prints them; `authmd serve` logs them at startup.

use super::{Config, SecretString, decode_key};

/// Words that mark a value as a placeholder rather than a secret (long
/// enough that a random token contains one about once in a million).
const PLACEHOLDER_WORDS: &[&str] = &[
    "change",
    "replace",
    "placeholder",
    "example",
    "dummy",
    "insecure",
    "secret",
    "password",
];

impl Config {
    /// Every warning about this configuration, one line each, naming the key.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut secret = |key: &str, value: Option<&SecretString>, is_key: bool| {
            if let Some(value) = value
                && looks_like_placeholder(value.expose(), is_key)
            {
                warnings.push(format!(
                    "{key} looks like a placeholder, not a secret: generate one \
                     (`openssl rand -hex 32`) and set it from a file ({}_FILE)",
                    super::load::env_name(key)
                ));
            }
        };
        secret("admin.token", self.admin.token.as_ref(), false);
        secret("server.secret_key", self.server.secret_key.as_ref(), true);
        secret(
            "mail.smtp_password",
            self.mail.smtp_password.as_ref(),
            false,
        );
        warnings
    }
}

/// A value a person typed or copied rather than generated: it names itself
/// a placeholder, or it has too little variety to be random. `is_key`: the
/// value is a key whose decoded bytes are checked too (a counting or
/// repeating byte pattern, as in `000102…1f`).
pub fn looks_like_placeholder(value: &str, is_key: bool) -> bool {
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) {
        return true;
    }
    let distinct = |bytes: &[u8]| {
        let mut seen = [false; 256];
        bytes.iter().for_each(|b| seen[usize::from(*b)] = true);
        seen.iter().filter(|s| **s).count()
    };
    // 32 random hex digits show about 14 distinct characters; fewer than 8
    // happens by chance about once in 10^8.
    if value.len() >= 16 && distinct(value.as_bytes()) < 8 {
        return true;
    }
    if is_key && let Some(bytes) = decode_key(value) {
        let step = bytes[1].wrapping_sub(bytes[0]);
        let counting = bytes.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step);
        // 32 random bytes are about 30 distinct values.
        if counting || distinct(&bytes) < 16 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn placeholders_are_recognized() {
        for (value, is_key) in [
            ("replace-me-with-openssl-rand-hex-32-output-0000", false),
            ("change-me", false),
            ("CHANGEME-CHANGEME-CHANGEME-CHANGEME", false),
            ("00000000000000000000000000000000", false),
            ("abababababababababababababababababab", false),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                true,
            ),
            (
                "1111111111111111111111111111111111111111111111111111111111111111",
                true,
            ),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                true,
            ),
        ] {
            assert!(looks_like_placeholder(value, is_key), "{value}");
        }
    }

    #[test]
    fn generated_secrets_are_not_placeholders() {
        for (value, is_key) in [
            // openssl rand -hex 32
            (
                "9f2c4e71b08a5d3e6c1f7a29d4b80e56c3a17f9e2d5b6084c1e7a39f0d2b5c68",
                true,
            ),
            // openssl rand -base64 32
            ("q8Zf3nV1xT7rK0pLm2Yw9sBc4HdG6jUe5aRtQyNvXo0=", true),
            ("k3J9x2Lq8RzT5vW1nB7mC4yH6pD0sF", false),
        ] {
            assert!(!looks_like_placeholder(value, is_key), "{value}");
        }
    }

    #[test]
    fn warnings_name_the_key() {
        let env: BTreeMap<String, String> = [
            ("AUTHMD_ADMIN_LISTEN", "127.0.0.1:8081"),
            (
                "AUTHMD_ADMIN_TOKEN",
                "replace-me-with-openssl-rand-hex-32-output-0000",
            ),
            (
                "AUTHMD_SERVER_SECRET_KEY",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            ),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let c = super::super::load_str("", &env).unwrap_or_else(|e| panic!("{e}"));
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("admin.token "), "{w:?}");
        assert!(w[1].starts_with("server.secret_key "), "{w:?}");
        assert!(super::super::Config::default().warnings().is_empty());
    }
}
