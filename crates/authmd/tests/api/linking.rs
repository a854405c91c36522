//! Linking a provider's subject to an existing user by verified email or
//! phone (docs/protocol.md §6): the per-provider `email_domains` allowlist that
//! keeps one provider from taking over another's users ("nOAuth"), and the
//! `delegation.linked` event recorded for each such first link.

use authmd_jose::{Algorithm, SigningKey};
use serde_json::{Map, Value};

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint};
use crate::support::{Backend, TestApp};

const AUD: &str = "http://127.0.0.1:8080";

struct Provider {
    server: JwksServer,
    key: SigningKey,
}

impl Provider {
    async fn start(kid: &str) -> Provider {
        let server = JwksServer::start().await;
        let key = key(Algorithm::Es256, kid);
        server.set_keys(&[&key]);
        Provider { server, key }
    }

    fn claims(&self, sub: &str, fields: &[(&str, Value)]) -> Map<String, Value> {
        let mut c = claims(self.server.issuer(), AUD, sub);
        for (k, v) in fields {
            c.insert((*k).to_owned(), v.clone());
        }
        c
    }

    /// Registers and answers the user id the credential is bound to.
    async fn user_of(&self, t: &TestApp, claims: &Map<String, Value>) -> String {
        let r = t
            .post_json(
                "/agent/auth",
                &body(&mint(&self.key, &[], claims), "api_key"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let key = r.json()["credential"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let who = t.get("/api/whoami", Some(&key)).await.json();
        who["user"]["id"].as_str().unwrap_or_default().to_owned()
    }
}

both_backends! {
    /// A provider limited to `email_domains` links only addresses in those
    /// domains, and never by phone; one that is not limited links any
    /// verified address. Each first link is its own audit event, naming
    /// how the user was matched; later registrations of the same subject
    /// follow the delegation and record none.
    async fn email_domains_limit_which_addresses_link_and_each_first_link_is_audited(backend: Backend) {
        let home = Provider::start("home").await;
        let corp = Provider::start("corp").await;
        let open = Provider::start("open").await;
        let toml = format!(
            "[[providers]]\nissuer = \"{}\"\n\
             [[providers]]\nissuer = \"{}\"\nemail_domains = [\"Corp.Example\"]\n\
             [[providers]]\nissuer = \"{}\"\n",
            home.server.issuer(),
            corp.server.issuer(),
            open.server.issuer(),
        );
        let t = TestApp::new(backend, &toml).await;

        // Existing users: one by email, one by phone.
        let grace = home.user_of(&t, &home.claims("h-1", &[("email", "grace@example.com".into())])).await;
        let ada = home.user_of(&t, &home.claims("h-2", &[("email", "ada@corp.example".into())])).await;
        let phone = [
            ("phone_number", Value::from("+15550100000")),
            ("phone_number_verified", Value::from(true)),
        ];
        let mut by_phone = home.claims("h-3", &phone);
        by_phone.insert("email_verified".into(), false.into());
        let lin = home.user_of(&t, &by_phone).await;
        assert!(t.events("delegation.linked").await.is_empty(), "all provisioned");

        // corp may not vouch for example.com: its subject gets a user of its own.
        let other = corp.user_of(&t, &corp.claims("c-1", &[("email", "grace@example.com".into())])).await;
        assert_ne!(other, grace, "an address outside email_domains does not link");
        // ... nor link by phone.
        let mut corp_phone = corp.claims("c-2", &phone);
        corp_phone.insert("email_verified".into(), false.into());
        assert_ne!(corp.user_of(&t, &corp_phone).await, lin, "a limited provider never links by phone");
        assert!(t.events("delegation.linked").await.is_empty());

        // Its own domain (any case) links.
        let c3 = corp.claims("c-3", &[("email", "ada@CORP.example".into())]);
        assert_eq!(corp.user_of(&t, &c3).await, ada);
        // An unlimited provider links by email and by phone.
        assert_eq!(open.user_of(&t, &open.claims("o-1", &[("email", "grace@example.com".into())])).await, grace);
        let mut open_phone = open.claims("o-2", &phone);
        open_phone.insert("email_verified".into(), false.into());
        assert_eq!(open.user_of(&t, &open_phone).await, lin);

        let linked = t.events("delegation.linked").await;
        let seen: Vec<(String, String, String, String)> = linked
            .iter()
            .map(|e| {
                (
                    e.data["iss"].as_str().unwrap_or_default().to_owned(),
                    e.data["sub"].as_str().unwrap_or_default().to_owned(),
                    e.data["matched_by"].as_str().unwrap_or_default().to_owned(),
                    e.user_id.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (corp.server.issuer().to_owned(), "c-3".into(), "verified_email".into(), ada.clone()),
                (open.server.issuer().to_owned(), "o-1".into(), "verified_email".into(), grace.clone()),
                (open.server.issuer().to_owned(), "o-2".into(), "verified_phone".into(), lin.clone()),
            ]
        );
        assert!(linked.iter().all(|e| e.registration_id.is_some()));

        // The same subject again follows its delegation: no second event.
        let again = open.claims("o-1", &[("email", "grace@example.com".into())]);
        assert_eq!(open.user_of(&t, &again).await, grace);
        assert_eq!(t.events("delegation.linked").await.len(), 3);
    }
}

#[test]
fn email_domains_are_validated() {
    let refused = |extra: &str, needle: &str| {
        let toml = format!("[[providers]]\nissuer = \"https://p.example\"\n{extra}");
        match authmd::config::load_str(&toml, &Default::default()) {
            Err(e) => {
                assert_eq!(e.key, "providers[0].email_domains", "{extra}: {e}");
                assert!(e.message.contains(needle), "{extra}: {e}");
            }
            Ok(_) => panic!("{extra} should be refused"),
        }
    };
    refused("email_domains = []", "must not be empty");
    refused("email_domains = [\"@example.com\"]", "not a domain");
    refused("email_domains = [\".example.com\"]", "not a domain");
    refused(
        "email_domains = [\"example.com\"]\nlink_by_verified_email = false",
        "no effect",
    );
    let c = authmd::config::load_str(
        "[[providers]]\nissuer = \"https://p.example\"\nemail_domains = [\"Example.COM\"]",
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.providers[0].email_domains.as_deref(),
        Some(&["example.com".to_owned()][..])
    );
}
