//! The agent API in the current dialect, against the stand-in service of
//! `standin/mod.rs` (dialect-latest.md §2–§3 shapes exactly): detection,
//! both directions of the claim, the renewal chain, the step-up, the
//! defects of real services, and what is refused.

use authmd_client::agent::{Agent, Authenticate, OutcomeStatus, Renewed, advice};
use authmd_client::store::Store;
use authmd_client::{Client, ClientError, Dialect, Options};
use base64::Engine;
use serde_json::{Value, json};

mod standin;
use standin::{Defects, StandIn};

fn agent(dir: &tempfile::TempDir) -> Agent {
    Agent::new(
        Client::new().expect("client"),
        Store::new(dir.path().join("credentials.json")),
    )
}

async fn get(agent: &Agent, url: &str) -> (u16, Value, Option<Renewed>) {
    let f = agent
        .fetch(url, reqwest::Method::GET, |r| r)
        .await
        .expect("fetch");
    let status = f.response.status().as_u16();
    let body = f.response.json().await.unwrap_or(Value::Null);
    (status, body, f.renewed)
}

fn kept(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("credentials.json")).expect("store")
}

fn id_jag(iss: &str, sub: &str, aud: &str, email: &str) -> String {
    let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.sig",
        b(json!({"alg": "ES256", "typ": "oauth-id-jag+jwt"})),
        b(json!({"iss": iss, "sub": sub, "aud": aud, "email": email, "email_verified": true}))
    )
}

#[tokio::test]
async fn the_dialect_is_detected_from_discovery_and_can_be_forced() {
    let s = StandIn::start().await;
    let client = Client::new().expect("client");
    let service = client
        .discover(&s.api())
        .await
        .expect("discover from a 401");
    assert_eq!(service.dialect, Dialect::Current);
    assert_eq!(service.issuer, s.base);
    assert!(service.warnings.is_empty(), "{:?}", service.warnings);
    // Forced to the original dialect, which this service does not speak.
    let forced = Client::new().expect("client").with_options(Options {
        dialect: Some(Dialect::Original),
        ..Options::default()
    });
    match forced.discover(&s.api()).await {
        Err(ClientError::Unsupported(m)) => assert!(m.contains("register_uri"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Plain http off loopback is refused before any request is made.
    match client
        .discover("http://auth.example.com/api/resource")
        .await
    {
        Err(ClientError::Discovery(m)) => assert!(m.contains("not https"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn anonymous_then_the_agent_starts_the_claim_then_renewal_runs_the_whole_chain() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);

    let out = a
        .authenticate(Authenticate {
            target: s.api(),
            ..Authenticate::default()
        })
        .await
        .expect("anonymous");
    assert_eq!(out.status, OutcomeStatus::Authenticated);
    assert_eq!(out.dialect, Dialect::Current);
    assert_eq!(out.scopes, ["api.read"]);
    assert!(out.instructions.contains("email"), "{}", out.instructions);
    let (status, body, _) = get(&a, &s.api()).await;
    assert_eq!(status, 200);
    assert_eq!(body["scopes"], json!(["api.read"]));
    // The claim token was kept before anything used it.
    assert!(kept(&dir).contains("clm_"), "the claim token is kept");

    // A second authenticate reuses what is kept: no new registration.
    let again = a
        .authenticate(Authenticate {
            target: s.base.clone(),
            ..Authenticate::default()
        })
        .await
        .expect("reuse");
    assert_eq!(again.registration_id, out.registration_id);

    // The agent starts the claim: a link for the user, no code yet.
    let started = a
        .authenticate(Authenticate {
            target: s.base.clone(),
            email: Some("ines@example.com".into()),
            ..Authenticate::default()
        })
        .await
        .expect("claim start");
    assert_eq!(
        started.status,
        OutcomeStatus::Authenticated,
        "pre-claim scopes still work"
    );
    let uri = started
        .claim
        .as_ref()
        .and_then(|c| c.verification_uri.clone())
        .expect("verification_uri");
    assert!(
        started.instructions.contains(&uri),
        "{}",
        started.instructions
    );
    // Before the user confirms: the protocol's code, and a sentence.
    let early = a
        .complete_claim(None, "123456")
        .await
        .expect_err("not confirmed");
    assert_eq!(early.code(), Some("claim_not_confirmed"));
    assert!(advice(&early).contains("confirm"), "{}", advice(&early));

    let code = s.user_confirms(&uri, "ines@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let e = a.complete_claim(None, wrong).await.expect_err("wrong code");
    assert_eq!(e.code(), Some("invalid_user_code"));
    assert!(advice(&e).contains("6-digit"), "{}", advice(&e));
    let done = a.complete_claim(None, &code).await.expect("complete");
    assert!(done.claimed);
    assert_eq!(done.scopes, ["api.read", "api.write"]);
    let (status, body, _) = get(&a, &s.api()).await;
    assert_eq!(status, 200);
    assert_eq!(body["scopes"], json!(["api.read", "api.write"]));
    assert_eq!(body["email"], "ines@example.com");
    let store = kept(&dir);
    assert!(store.contains("art_"), "the refresh token is kept");
    assert!(!store.contains("clm_"), "the spent claim token is not");

    // Status shows no secret.
    let status = serde_json::to_string(&a.status().expect("status")).expect("json");
    for secret in ["art_", "at_0", "clm_", "eyJ"] {
        assert!(!status.contains(secret), "{secret} in {status}");
    }

    // The chain: access token gone -> the kept assertion is exchanged.
    s.with(|w| w.drop_access_tokens());
    let (status, _, renewed) = get(&a, &s.api()).await;
    assert_eq!((status, renewed), (200, Some(Renewed::Exchanged)));
    // Assertion gone too -> the refresh token (rotated, kept first).
    let before = kept(&dir);
    s.with(|w| {
        w.drop_access_tokens();
        w.drop_assertions();
    });
    let (status, body, renewed) = get(&a, &s.api()).await;
    assert_eq!((status, renewed), (200, Some(Renewed::Refreshed)));
    assert_eq!(body["scopes"], json!(["api.read", "api.write"]));
    let old_refresh = before
        .split("\"art_")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("old refresh token");
    assert!(
        !kept(&dir).contains(old_refresh),
        "the spent refresh token is replaced"
    );
    // Everything gone: a claimed registration is not silently replaced.
    s.with(|w| {
        w.drop_access_tokens();
        w.drop_assertions();
        w.drop_refresh_tokens();
    });
    let e = a
        .fetch(&s.api(), reqwest::Method::GET, |r| r)
        .await
        .expect_err("needs the user");
    assert!(e.to_string().contains("had claimed"), "{e}");

    // Self-revocation: the token stops working, the record is forgotten.
    let fresh = a
        .authenticate(Authenticate {
            target: s.api(),
            anonymous: true,
            force_reregister: true,
            ..Authenticate::default()
        })
        .await
        .expect("fresh");
    assert_eq!(fresh.status, OutcomeStatus::Authenticated);
    let live = s.with(|w| w.live_access_tokens());
    a.revoke(None).await.expect("revoke");
    assert_eq!(s.with(|w| w.live_access_tokens()), live - 1);
    assert!(a.status().expect("status").is_empty());
}

#[tokio::test]
async fn an_unclaimed_anonymous_registration_renews_itself() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);
    let first = a
        .authenticate(Authenticate {
            target: s.api(),
            ..Authenticate::default()
        })
        .await
        .expect("anonymous");
    s.with(|w| {
        w.drop_access_tokens();
        w.drop_assertions();
    });
    let (status, body, renewed) = get(&a, &s.api()).await;
    assert_eq!((status, renewed), (200, Some(Renewed::Reregistered)));
    assert_ne!(body["registration"], json!(first.registration_id));
}

#[tokio::test]
async fn email_required_the_service_starts_the_claim() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);
    let out = a
        .authenticate(Authenticate {
            target: s.base.clone(),
            email: Some("olu@example.com".into()),
            ..Authenticate::default()
        })
        .await
        .expect("service_auth");
    assert_eq!(out.status, OutcomeStatus::ClaimRequired);
    assert_eq!(out.registration_type.as_deref(), Some("service_auth"));
    let uri = out.claim.and_then(|c| c.verification_uri).expect("uri");
    let e = a
        .fetch(&s.api(), reqwest::Method::GET, |r| r)
        .await
        .expect_err("nothing before the claim");
    assert!(e.to_string().contains("complete the claim"), "{e}");
    let code = s.user_confirms(&uri, "olu@example.com").await;
    let done = a
        .complete_claim(Some(&s.base), &code)
        .await
        .expect("complete");
    assert_eq!(done.status, OutcomeStatus::Authenticated);
    let (status, body, _) = get(&a, &s.api()).await;
    assert_eq!(status, 200);
    assert_eq!(body["email"], "olu@example.com");
    assert_eq!(body["scopes"], json!(["api.read", "api.write"]));
}

#[tokio::test]
async fn an_id_jag_binds_at_once_or_steps_up_through_the_claim() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);
    // Clean match: a credential at once, flat scopes.
    let out = a
        .authenticate(Authenticate {
            target: s.api(),
            id_jag: Some(id_jag(
                "https://idp.example",
                "u-ada",
                &s.base,
                "ada@example.com",
            )),
            ..Authenticate::default()
        })
        .await
        .expect("id-jag");
    assert_eq!(out.status, OutcomeStatus::Authenticated);
    assert_eq!(out.scopes, ["api.read", "api.write"]);
    // An ID-JAG for another audience is never sent.
    let e = a
        .authenticate(Authenticate {
            target: s.api(),
            id_jag: Some(id_jag(
                "https://idp.example",
                "u-x",
                "https://other.example",
                "x@example.com",
            )),
            ..Authenticate::default()
        })
        .await
        .expect_err("another audience");
    assert!(e.to_string().contains("not sent"), "{e}");

    // Step-up: the email names an existing account.
    s.with(|w| w.add_account("bo@example.com"));
    let dir2 = tempfile::tempdir().expect("tempdir");
    let b = agent(&dir2);
    let out = b
        .authenticate(Authenticate {
            target: s.api(),
            id_jag: Some(id_jag(
                "https://idp.example",
                "u-bo",
                &s.base,
                "bo@example.com",
            )),
            ..Authenticate::default()
        })
        .await
        .expect("interaction_required is an answer");
    assert_eq!(out.status, OutcomeStatus::ClaimRequired);
    let uri = out.claim.and_then(|c| c.verification_uri).expect("uri");
    let code = s.user_confirms(&uri, "bo@example.com").await;
    let done = b.complete_claim(None, &code).await.expect("complete");
    assert_eq!(done.status, OutcomeStatus::Authenticated);
    let (status, body, _) = get(&b, &s.api()).await;
    assert_eq!(
        (status, body["email"].clone()),
        (200, json!("bo@example.com"))
    );
}

#[tokio::test]
async fn defects_of_real_services_are_warnings_not_failures() {
    let s = StandIn::start_with(Defects {
        no_issuer: true,
        code_envelope: true,
        claim_url_is_a_page: true,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);
    let out = a
        .authenticate(Authenticate {
            target: s.api(),
            ..Authenticate::default()
        })
        .await
        .expect("anonymous");
    assert!(
        out.warnings.iter().any(|w| w.contains("no issuer")),
        "{:?}",
        out.warnings
    );
    // claim.url names a page: the claim endpoint is used, with a warning.
    let started = a
        .start_claim(None, "ines@example.com")
        .await
        .expect("claim start");
    assert!(
        started.warnings.iter().any(|w| w.contains("claim.url")),
        "{:?}",
        started.warnings
    );
    assert!(s.with(|w| w.seen.iter().any(|r| r == "POST /agent/identity/claim")));
    // A `{code, message}` refusal still carries its code, with a warning
    // saying what was accepted.
    let e = a
        .complete_claim(None, "123456")
        .await
        .expect_err("not confirmed");
    assert_eq!(e.code(), Some("claim_not_confirmed"), "{e}");
    let warning = e.warning().unwrap_or_default();
    assert!(
        warning.contains("{code, message}") && warning.contains("claim_not_confirmed"),
        "{e:?}"
    );
    assert_eq!(
        advice(&e),
        advice(&confirmed_first()),
        "acted on as the code says"
    );
    // An issuer named by the resource is required when the AS metadata
    // is read directly.
    let client = Client::new().expect("client");
    assert!(client.authorization_server(&s.base).await.is_err());
}

/// The refusal a service of the protocol's envelope gives before the user
/// confirmed.
fn confirmed_first() -> ClientError {
    ClientError::Protocol {
        status: 409,
        code: "claim_not_confirmed".into(),
        message: String::new(),
        retry_after: None,
        warning: None,
    }
}

/// The protocol's own envelope gives no warning.
#[tokio::test]
async fn the_protocols_error_envelope_gives_no_warning() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);
    a.authenticate(Authenticate {
        target: s.api(),
        ..Authenticate::default()
    })
    .await
    .expect("anonymous");
    a.start_claim(None, "ines@example.com")
        .await
        .expect("claim start");
    let e = a
        .complete_claim(None, "123456")
        .await
        .expect_err("not confirmed");
    assert_eq!(
        (e.code(), e.warning()),
        (Some("claim_not_confirmed"), None),
        "{e:?}"
    );
}

/// Self-revocation of a claimed registration: the access token is ended,
/// and the refresh token is offered too (RFC 7009 lets a service take it;
/// this one, as the reference, ignores it), then both are forgotten.
#[tokio::test]
async fn self_revocation_offers_the_refresh_token_too() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = agent(&dir);
    a.authenticate(Authenticate {
        target: s.api(),
        ..Authenticate::default()
    })
    .await
    .expect("anonymous");
    let started = a
        .start_claim(None, "ines@example.com")
        .await
        .expect("claim start");
    let uri = started
        .claim
        .and_then(|c| c.verification_uri)
        .expect("verification_uri");
    let code = s.user_confirms(&uri, "ines@example.com").await;
    a.complete_claim(None, &code).await.expect("claimed");
    let store: Value = serde_json::from_str(&kept(&dir)).expect("JSON");
    let record = &store["issuers"][&s.base];
    let secret = |k: &str| record[k]["value"].as_str().expect(k).to_owned();
    let (access, refresh) = (secret("access"), secret("refresh_token"));

    a.revoke(None).await.expect("revoke");
    assert_eq!(s.with(|w| w.revocations.clone()), [access, refresh]);
    assert!(a.status().expect("status").is_empty());
}

/// A one-time secret is kept before it is used: when the store cannot be
/// written, the assertion (and the claim token beside it) is never used.
#[tokio::test]
async fn nothing_is_used_that_could_not_be_kept() {
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The store's temporary file cannot be created: every write fails.
    std::fs::create_dir_all(
        dir.path()
            .join(format!(".credentials.json.{}.tmp", std::process::id())),
    )
    .expect("block the write");
    let a = agent(&dir);
    let e = a
        .authenticate(Authenticate {
            target: s.api(),
            ..Authenticate::default()
        })
        .await
        .expect_err("the store cannot be written");
    assert!(matches!(e, ClientError::Store(_)), "{e:?}");
    assert!(s.with(|w| w.seen.iter().any(|r| r == "POST /agent/identity")));
    assert!(
        !s.with(|w| w.seen.iter().any(|r| r == "POST /oauth2/token")),
        "the assertion was not exchanged"
    );
}
