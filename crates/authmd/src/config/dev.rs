//! Development mode (`authmd serve --dev`): the configuration a developer
//! wants on their own machine, refused anywhere else.
//!
//! It turns rate limits off (a developer's tenth anonymous registration in
//! an hour is not an attack) and sends mail to the outbox instead of SMTP
//! (no real user is emailed). Both are unsafe for a reachable server, so
//! every listener must be on a loopback address: a development server is
//! reachable from this machine only.

use super::{Config, ConfigError};

impl Config {
    /// Applies development mode. Refuses a listener (public or admin) that
    /// is not on a loopback address. Returns what it changed, for the log.
    pub fn development_mode(&mut self) -> Result<Vec<String>, ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "listen",
                format!(
                    "{} is not a loopback address; --dev (rate limits off) serves only this \
                     machine: use 127.0.0.1 or [::1], or run without --dev",
                    self.listen
                ),
            ));
        }
        if let Some(admin) = self.admin.listen
            && !admin.ip().is_loopback()
        {
            return Err(ConfigError::new(
                "admin.listen",
                format!("{admin} is not a loopback address; --dev serves only this machine"),
            ));
        }
        let mut changed = Vec::new();
        if self.rate_limits.enabled {
            self.rate_limits.enabled = false;
            changed.push("rate limits off".to_owned());
        }
        if self.mail.smtp_url.take().is_some() {
            self.mail.smtp_username = None;
            self.mail.smtp_password = None;
            changed.push("mail.smtp_url ignored".to_owned());
        }
        let outbox = std::path::absolute(&self.mail.outbox).unwrap_or(self.mail.outbox.clone());
        changed.push(format!("claim emails go to {}", outbox.display()));
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn load(env: &[(&str, &str)]) -> Config {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        super::super::load_str("", &env).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn development_mode_turns_limits_off_and_mail_to_the_outbox() {
        let mut c = load(&[("AUTHMD_MAIL_SMTP_URL", "smtp://127.0.0.1:2525")]);
        let changed = c.development_mode().unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.rate_limits.enabled);
        assert!(c.mail.smtp_url.is_none());
        assert!(changed.iter().any(|c| c.contains("outbox")), "{changed:?}");
    }

    #[test]
    fn development_mode_refuses_a_listener_others_can_reach() {
        let public = [
            ("AUTHMD_LISTEN", "192.0.2.10:8080"),
            ("AUTHMD_ISSUER", "https://auth.example.com"),
        ];
        for env in [
            &[("AUTHMD_LISTEN", "0.0.0.0:8080")][..],
            &[("AUTHMD_LISTEN", "[::]:8080")],
            &public,
        ] {
            let mut c = load(env);
            let e = c.development_mode().err();
            assert_eq!(e.map(|e| e.key), Some("listen".to_owned()), "{env:?}");
            assert!(c.rate_limits.enabled, "nothing changes when refused");
        }
        let mut c = load(&[
            ("AUTHMD_ADMIN_LISTEN", "0.0.0.0:8081"),
            ("AUTHMD_ADMIN_ALLOW_INSECURE_REMOTE", "true"),
            (
                "AUTHMD_ADMIN_TOKEN",
                "a-token-of-at-least-32-characters-xyz",
            ),
        ]);
        assert_eq!(
            c.development_mode().err().map(|e| e.key),
            Some("admin.listen".to_owned())
        );
        let mut c = load(&[("AUTHMD_LISTEN", "[::1]:8080")]);
        assert!(c.development_mode().is_ok());
    }
}
