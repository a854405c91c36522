//! The production guard: settings that are right on a laptop and wrong on
//! a public issuer. `authmd serve` logs each as a warning at start when the
//! issuer is not a loopback address; `authmd check-config --production`
//! fails on them.

use super::{Config, ConfigError, is_loopback_host};

impl Config {
    /// Whether the issuer is a loopback address (a development setup).
    pub fn issuer_is_loopback(&self) -> bool {
        url::Url::parse(self.issuer()).is_ok_and(|u| is_loopback_host(&u))
    }

    /// Every way this configuration falls short of serving the public, each
    /// naming the key to change. A loopback issuer is one of them.
    pub fn production_findings(&self) -> Vec<ConfigError> {
        let mut found = Vec::new();
        if self.issuer_is_loopback() {
            found.push(ConfigError::new(
                "issuer",
                format!(
                    "{} is a loopback address: agents elsewhere cannot reach it; set the public https URL",
                    self.issuer()
                ),
            ));
        }
        // A public issuer is https (validation), so https is absent when
        // neither this process nor a proxy it knows terminates TLS.
        if self.server.tls_cert_file.is_none() && self.server.trusted_proxies.is_empty() {
            found.push(ConfigError::new(
                "server.tls_cert_file",
                format!(
                    "https is absent: {} serves plain HTTP and no server.trusted_proxies is set, so \
                     nothing is known to terminate TLS for {}; set server.tls_cert_file and \
                     server.tls_key_file, or list the TLS-terminating proxy in server.trusted_proxies",
                    self.listen,
                    self.issuer()
                ),
            ));
        }
        if self.mail.smtp_url.is_none() {
            found.push(ConfigError::new(
                "mail.smtp_url",
                format!(
                    "mail goes to the outbox directory {}: users never receive claim emails; \
                     set mail.smtp_url",
                    self.mail.outbox.display()
                ),
            ));
        }
        if !self.rate_limits.enabled {
            found.push(ConfigError::new(
                "rate_limits.enabled",
                "rate limits are off: anyone can register without bound and flood claim emails",
            ));
        }
        if let Some(listen) = self.admin.listen
            && !listen.ip().is_loopback()
            && self.admin.tls_cert_file.is_none()
        {
            found.push(ConfigError::new(
                "admin.allow_insecure_remote",
                format!(
                    "the admin API listens on {listen} over plain HTTP: its token crosses the network \
                     in the clear; set admin.tls_cert_file and admin.tls_key_file"
                ),
            ));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_str;

    fn keys(toml: &str) -> Vec<String> {
        load_str(toml, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .production_findings()
            .into_iter()
            .map(|f| f.key)
            .collect()
    }

    #[test]
    fn each_shortfall_is_named_by_its_key() {
        assert_eq!(
            keys("issuer = \"https://auth.example.com\"\n[rate_limits]\nenabled = false"),
            [
                "server.tls_cert_file",
                "mail.smtp_url",
                "rate_limits.enabled"
            ]
        );
        assert_eq!(
            keys(
                "[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"0123456789abcdef0123456789abcdef\"\nallow_insecure_remote = true"
            ),
            [
                "issuer",
                "server.tls_cert_file",
                "mail.smtp_url",
                "admin.allow_insecure_remote"
            ]
        );
        let ready = "issuer = \"https://auth.example.com\"\n\
                     [server]\ntrusted_proxies = [\"10.0.0.1\"]\n\
                     [mail]\nsmtp_url = \"smtps://smtp.example.com:465\"";
        assert!(keys(ready).is_empty(), "{:?}", keys(ready));
        let tls = "issuer = \"https://auth.example.com\"\n\
                   [server]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n\
                   [mail]\nsmtp_url = \"smtps://smtp.example.com:465\"";
        assert!(keys(tls).is_empty());
    }
}
