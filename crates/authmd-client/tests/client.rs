//! The client against a service on loopback whose documents each test
//! writes: what it accepts, and what it refuses before using anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use authmd_client::{Client, ClientError, CredentialType, Method, MethodKind, Registration};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One canned answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(v: Value) -> Answer {
    Answer {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: v.to_string(),
    }
}

#[derive(Default)]
struct State {
    /// "METHOD /path" → answer.
    answers: HashMap<String, Answer>,
    /// The bearer the API accepts.
    live_secret: Option<String>,
    /// Request bodies received, by path.
    bodies: Vec<(String, String)>,
}

struct Fake {
    base: String,
    state: Arc<Mutex<State>>,
}

impl Fake {
    async fn start() -> Fake {
        let state = Arc::new(Mutex::new(State::default()));
        let s = Arc::clone(&state);
        let app = Router::new().fallback(
            move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = Arc::clone(&s);
                async move { answer(&s, &method, &uri, &headers, &body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { base, state }
    }

    fn set(&self, key: &str, a: Answer) {
        self.state
            .lock()
            .expect("lock")
            .answers
            .insert(key.to_owned(), a);
    }

    /// A consistent service: PRM for `<base>/api/`, AS metadata, a 401
    /// challenge on the API.
    fn well_formed(&self) {
        let b = &self.base;
        self.set(
            "GET /.well-known/oauth-protected-resource/api",
            ok(
                json!({"resource": format!("{b}/api/"), "authorization_servers": [b],
                      "scopes_supported": ["api.read"], "bearer_methods_supported": ["header"]}),
            ),
        );
        self.set(
            "GET /.well-known/oauth-authorization-server",
            ok(self.asm()),
        );
    }

    fn asm(&self) -> Value {
        let b = &self.base;
        json!({
            "issuer": b,
            "response_types_supported": [],
            "agent_auth": {
                "skill": format!("{b}/auth.md"),
                "register_uri": format!("{b}/agent/auth"),
                "claim_uri": format!("{b}/agent/auth/claim"),
                "revocation_uri": format!("{b}/agent/auth/revoke"),
                "identity_types_supported": ["anonymous", "identity_assertion"],
                "anonymous": {"credential_types_supported": ["api_key"]},
                "identity_assertion": {
                    "assertion_types_supported": ["verified_email", "urn:ietf:params:oauth:token-type:id-jag"],
                    "credential_types_supported": ["api_key", "access_token"]
                }
            }
        })
    }

    fn live(&self, secret: Option<&str>) {
        self.state.lock().expect("lock").live_secret = secret.map(str::to_owned);
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.state
            .lock()
            .expect("lock")
            .bodies
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
            .collect()
    }
}

impl Fake {
    /// Request bodies received at `path`, as sent.
    fn raw_bodies(&self, path: &str) -> Vec<String> {
        self.state
            .lock()
            .expect("lock")
            .bodies
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

fn answer(
    s: &Mutex<State>,
    method: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut st = s.lock().expect("lock");
    st.bodies.push((
        uri.path().to_owned(),
        String::from_utf8_lossy(body).into_owned(),
    ));
    if uri.path().starts_with("/api/") {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some() && bearer == st.live_secret.as_deref() {
            return (StatusCode::OK, "{\"hello\":true}").into_response();
        }
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        return (
            StatusCode::UNAUTHORIZED,
            [(
                "www-authenticate",
                format!(
                    "Bearer error=\"invalid_token\", resource_metadata=\"http://{host}/.well-known/oauth-protected-resource/api\""
                ),
            )],
        )
            .into_response();
    }
    match st.answers.get(&format!("{method} {}", uri.path())) {
        Some(a) => {
            let mut r = (
                StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK),
                a.body.clone(),
            )
                .into_response();
            for (k, v) in &a.headers {
                if let Ok(v) = v.parse() {
                    r.headers_mut().insert(*k, v);
                }
            }
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn client() -> Client {
    Client::new().expect("client")
}

fn discovery_error(r: Result<authmd_client::Service, ClientError>) -> String {
    match r {
        Err(ClientError::Discovery(m)) => m,
        other => panic!("expected a discovery error, got {other:?}"),
    }
}

#[tokio::test]
async fn discovers_from_a_401_challenge_and_from_the_issuer() {
    let f = Fake::start().await;
    f.well_formed();
    let from_api = client()
        .discover(&format!("{}/api/notes/7", f.base))
        .await
        .expect("from the API's 401");
    assert_eq!(from_api.issuer, f.base);
    assert_eq!(from_api.resource.resource, format!("{}/api/", f.base));
    assert!(from_api.supports(MethodKind::Anonymous));
    assert!(from_api.supports(MethodKind::Email));
    assert!(from_api.supports(MethodKind::IdJag));
    assert_eq!(
        from_api.choose(&[MethodKind::IdJag, MethodKind::Email]),
        Some(MethodKind::IdJag)
    );
    assert!(from_api.covers(&format!("{}/api/x", f.base)));
    assert!(!from_api.covers(&format!("{}/apix", f.base)));

    // The issuer alone: its metadata names the resource.
    let mut asm = f.asm();
    asm["resource"] = json!(format!("{}/api/", f.base));
    f.set("GET /.well-known/oauth-authorization-server", ok(asm));
    let from_issuer = client().discover(&f.base).await.expect("from the issuer");
    assert_eq!(from_issuer.issuer, from_api.issuer);
}

#[tokio::test]
async fn metadata_for_another_resource_is_refused() {
    let f = Fake::start().await;
    f.well_formed();
    f.set(
        "GET /.well-known/oauth-protected-resource/api",
        ok(json!({"resource": "https://bank.example/api/", "authorization_servers": [f.base]})),
    );
    let m = discovery_error(client().discover(&format!("{}/api/x", f.base)).await);
    assert!(m.contains("bank.example"), "{m}");
}

#[tokio::test]
async fn an_issuer_that_differs_by_a_byte_is_refused() {
    let f = Fake::start().await;
    f.well_formed();
    let mut asm = f.asm();
    asm["issuer"] = json!(format!("{}/", f.base));
    f.set("GET /.well-known/oauth-authorization-server", ok(asm));
    let m = discovery_error(client().discover(&format!("{}/api/x", f.base)).await);
    assert!(m.contains("names issuer"), "{m}");
}

#[tokio::test]
async fn endpoints_on_another_origin_are_refused() {
    for field in ["register_uri", "claim_uri", "revocation_uri"] {
        let f = Fake::start().await;
        f.well_formed();
        let mut asm = f.asm();
        asm["agent_auth"][field] = json!("https://collector.example/agent/auth");
        f.set("GET /.well-known/oauth-authorization-server", ok(asm));
        let m = discovery_error(client().discover(&format!("{}/api/x", f.base)).await);
        assert!(m.contains(field), "{field}: {m}");
    }
}

/// The same for the current dialect's endpoints: a credential, an
/// assertion or a claim token is never sent off the issuer's origin.
#[tokio::test]
async fn current_dialect_endpoints_on_another_origin_are_refused() {
    for (block, field) in [
        ("agent_auth", "identity_endpoint"),
        ("agent_auth", "claim_endpoint"),
        ("agent_auth", "events_endpoint"),
        ("", "token_endpoint"),
        ("", "revocation_endpoint"),
    ] {
        let f = Fake::start().await;
        f.well_formed();
        let mut asm = f.asm();
        let b = f.base.clone();
        asm["agent_auth"]["identity_endpoint"] = json!(format!("{b}/agent/identity"));
        asm["token_endpoint"] = json!(format!("{b}/oauth2/token"));
        let evil = json!("https://collector.example/x");
        if block.is_empty() {
            asm[field] = evil;
        } else {
            asm[block][field] = evil;
        }
        f.set("GET /.well-known/oauth-authorization-server", ok(asm));
        let m = discovery_error(client().discover(&format!("{}/api/x", f.base)).await);
        assert!(m.contains(field), "{field}: {m}");
    }
}

#[tokio::test]
async fn redirects_oversized_and_malformed_documents_are_refused() {
    let f = Fake::start().await;
    f.well_formed();
    f.set(
        "GET /.well-known/oauth-authorization-server",
        Answer {
            status: 302,
            headers: vec![("location", "https://elsewhere.example/".into())],
            body: String::new(),
        },
    );
    discovery_error(client().discover(&format!("{}/api/x", f.base)).await);

    f.set(
        "GET /.well-known/oauth-authorization-server",
        ok(json!({"issuer": f.base, "pad": "x".repeat(300 * 1024)})),
    );
    let r = client().discover(&format!("{}/api/x", f.base)).await;
    assert!(
        matches!(r, Err(ClientError::InvalidResponse(ref m)) if m.contains("larger")),
        "{r:?}"
    );

    f.set(
        "GET /.well-known/oauth-authorization-server",
        ok(json!({"issuer": f.base})),
    );
    let m = discovery_error(client().discover(&format!("{}/api/x", f.base)).await);
    assert!(m.contains("agent_auth"), "{m}");
}

#[tokio::test]
async fn refusals_carry_the_protocol_code_and_retry_after() {
    let f = Fake::start().await;
    f.well_formed();
    let service = client()
        .discover(&format!("{}/api/x", f.base))
        .await
        .expect("discover");
    f.set(
        "POST /agent/auth",
        Answer {
            status: 429,
            headers: vec![("retry-after", "120".into())],
            body: json!({"error": "rate_limited", "message": "slow down"}).to_string(),
        },
    );
    let e = client()
        .register(&service, &Method::Anonymous)
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Some("rate_limited"));
    match e {
        ClientError::Protocol {
            status,
            retry_after,
            message,
            ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(120)));
            assert_eq!(message, "slow down");
        }
        other => panic!("{other:?}"),
    }
    // An ID-JAG for another service is not sent (it would be a live
    // credential for that service in this one's hands).
    let jwt = |aud: Value| {
        use base64::Engine;
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            e(json!({"typ": "oauth-id-jag+jwt"})),
            e(json!({"aud": aud}))
        )
    };
    for aud in [
        json!("https://bank.example"),
        json!([f.base, "https://bank.example"]),
        json!(null),
    ] {
        let e = client()
            .register(
                &service,
                &Method::IdJag {
                    assertion: jwt(aud.clone()),
                    credential_type: CredentialType::AccessToken,
                },
            )
            .await
            .expect_err("not sent");
        assert!(matches!(e, ClientError::Unsupported(_)), "{aud}: {e:?}");
    }
    assert_eq!(f.bodies("/agent/auth").len(), 1);
    for aud in [json!(f.base), json!([f.base])] {
        let e = client()
            .register(
                &service,
                &Method::IdJag {
                    assertion: jwt(aud),
                    credential_type: CredentialType::AccessToken,
                },
            )
            .await
            .expect_err("rate limited, but sent");
        assert_eq!(e.code(), Some("rate_limited"));
    }
    assert_eq!(f.bodies("/agent/auth").len(), 3);
}

#[tokio::test]
async fn relative_and_absolute_claim_urls_are_followed_on_the_issuers_origin_only() {
    let f = Fake::start().await;
    f.well_formed();
    let service = client()
        .discover(&format!("{}/api/x", f.base))
        .await
        .expect("discover");
    let mut reg = Registration {
        registration_id: "reg_1".into(),
        claim_token: Some("clm_secret".into()),
        ..Registration::default()
    };
    for (claim_url, expected) in [
        (None, format!("{}/agent/auth/claim", f.base)),
        (
            Some("/agent/auth/claim".to_owned()),
            format!("{}/agent/auth/claim", f.base),
        ),
        (Some("claim".to_owned()), format!("{}/agent/claim", f.base)),
        (
            Some(format!("{}/agent/auth/claim", f.base)),
            format!("{}/agent/auth/claim", f.base),
        ),
    ] {
        reg.claim_url = claim_url;
        assert_eq!(
            reg.claim_endpoint(&service).map(|u| u.to_string()).ok(),
            Some(expected)
        );
    }
    // The claim token never leaves the issuer's origin.
    reg.claim_url = Some("https://collector.example/claim".into());
    assert!(reg.claim_endpoint(&service).is_err());
    // Refused before anything is sent (sending would fail as Http).
    let e = client()
        .start_claim(&service, &reg, "a@example.com")
        .await
        .expect_err("refused");
    assert!(matches!(e, ClientError::Discovery(_)), "{e:?}");

    // The whole claim, a wrong code asked again.
    reg.claim_url = Some("/agent/auth/claim".into());
    reg.post_claim_scopes = vec!["api.read".into(), "api.write".into()];
    f.set(
        "POST /agent/auth/claim",
        ok(json!({"registration_id": "reg_1", "claim_attempt_id": "cla_1", "status": "initiated"})),
    );
    let mut codes = vec!["111111", "222222"].into_iter();
    f.set(
        "POST /agent/auth/claim/complete",
        Answer {
            status: 401,
            headers: vec![],
            body: json!({"error": "otp_invalid", "message": "wrong"}).to_string(),
        },
    );
    let state = Arc::clone(&f.state);
    let done = client()
        .claim(&service, &mut reg, "a@example.com", 3, |_| {
            let code = codes.next();
            if code == Some("222222") {
                state.lock().expect("lock").answers.insert(
                    "POST /agent/auth/claim/complete".into(),
                    ok(json!({"registration_id": "reg_1", "status": "claimed"})),
                );
            }
            async move { code.map(str::to_owned) }
        })
        .await
        .expect("claimed on the second code");
    assert_eq!(done.status, "claimed");
    assert_eq!(reg.scopes, ["api.read", "api.write"]);
    let sent = f.bodies("/agent/auth/claim/complete");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["claim_token"], "clm_secret");
    assert_eq!(sent[1]["otp"], "222222");
}

#[tokio::test]
async fn a_revoked_credential_is_renewed_once_and_a_never_working_one_is_not() {
    let f = Fake::start().await;
    f.well_formed();
    let api = format!("{}/api/x", f.base);
    let service = client().discover(&api).await.expect("discover");
    let reg = Registration {
        registration_id: "reg_1".into(),
        credential: Some("old".into()),
        ..Registration::default()
    };
    let mut credential = reg.credential(&service).expect("credential");
    f.live(Some("old"));
    let r = client()
        .call(&mut credential, reqwest::Method::GET, &api, |r| r)
        .await
        .expect("call");
    assert_eq!(r.status(), 200);
    assert!(credential.worked);

    // Revoked: the 401 leads to rediscovery and one renewal.
    f.live(Some("new"));
    let renewals = std::cell::Cell::new(0);
    let (r, rediscovered) = client()
        .call_or_renew(
            &mut credential,
            reqwest::Method::GET,
            &api,
            |r| r,
            |s| {
                renewals.set(renewals.get() + 1);
                let c = Registration {
                    registration_id: "reg_2".into(),
                    credential: Some("new".into()),
                    ..Registration::default()
                }
                .credential(&s);
                async move { c }
            },
        )
        .await
        .expect("renewed");
    assert_eq!(r.status(), 200);
    assert_eq!(renewals.get(), 1);
    assert_eq!(credential.secret, "new");
    assert_eq!(rediscovered.map(|s| s.issuer), Some(f.base.clone()));

    // The credential goes to URLs under its resource only.
    let e = client()
        .call(
            &mut credential,
            reqwest::Method::GET,
            &format!("{}/admin", f.base),
            |r| r,
        )
        .await
        .expect_err("not sent");
    assert!(matches!(e, ClientError::Unsupported(_)), "{e:?}");

    // Revoked again, and the API's metadata now names another issuer: no
    // renewal there.
    let other = Fake::start().await;
    other.well_formed();
    f.set(
        "GET /.well-known/oauth-protected-resource/api",
        ok(json!({"resource": format!("{}/api/", f.base), "authorization_servers": [other.base]})),
    );
    f.live(Some("newer"));
    let e = client()
        .call_or_renew(
            &mut credential,
            reqwest::Method::GET,
            &api,
            |r| r,
            |_| async { panic!("not renewed at another issuer") },
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(e, ClientError::Discovery(ref m) if m.contains("not renewed")),
        "{e:?}"
    );
    assert!(other.bodies("/agent/auth").is_empty());

    // A credential that never worked: its 401 is the answer, no renewal.
    let mut never = reg.credential(&service).expect("credential");
    let (r, rediscovered) = client()
        .call_or_renew(
            &mut never,
            reqwest::Method::GET,
            &api,
            |r| r,
            |_| async { panic!("not renewed") },
        )
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert!(rediscovered.is_none());
}

/// RFC 7009: `revoke` posts the credential as `token=` to the service's
/// `revocation_endpoint`, only for the issuer it came from and only on
/// that issuer's origin; a refusal carries the OAuth error code.
#[tokio::test]
async fn a_credential_is_revoked_at_its_issuers_revocation_endpoint_only() {
    let f = Fake::start().await;
    f.well_formed();
    let mut asm = f.asm();
    asm["revocation_endpoint"] = json!(format!("{}/oauth2/revoke", f.base));
    f.set(
        "GET /.well-known/oauth-authorization-server",
        ok(asm.clone()),
    );
    f.set(
        "POST /oauth2/revoke",
        Answer {
            status: 200,
            headers: vec![],
            body: String::new(),
        },
    );
    let service = client()
        .discover(&format!("{}/api/x", f.base))
        .await
        .expect("discover");
    let credential = authmd_client::Credential {
        secret: "amd_sk_a+b/c=".into(),
        resource: format!("{}/api/", f.base),
        issuer: f.base.clone(),
        registration_id: "reg_1".into(),
        worked: true,
    };
    client()
        .revoke(&service, &credential)
        .await
        .expect("revoke");
    assert_eq!(
        f.raw_bodies("/oauth2/revoke"),
        ["token=amd_sk_a%2Bb%2Fc%3D"]
    );

    // A credential of another issuer is never sent.
    let foreign = authmd_client::Credential {
        issuer: "https://other.example".into(),
        ..credential.clone()
    };
    let r = client().revoke(&service, &foreign).await;
    assert!(matches!(r, Err(ClientError::Unsupported(_))), "{r:?}");
    assert_eq!(f.raw_bodies("/oauth2/revoke").len(), 1);

    // An OAuth error answer keeps its code and description.
    f.set(
        "POST /oauth2/revoke",
        Answer {
            status: 400,
            headers: vec![("content-type", "application/json".into())],
            body: json!({"error": "invalid_request", "error_description": "token is required"})
                .to_string(),
        },
    );
    match client().revoke(&service, &credential).await {
        Err(ClientError::Protocol {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!(
                (status, code.as_str(), message.as_str()),
                (400, "invalid_request", "token is required")
            );
        }
        other => panic!("{other:?}"),
    }

    // A revocation_endpoint on another origin is refused at discovery; a
    // service without one cannot revoke.
    asm["revocation_endpoint"] = json!("https://collector.example/oauth2/revoke");
    f.set(
        "GET /.well-known/oauth-authorization-server",
        ok(asm.clone()),
    );
    let m = discovery_error(client().discover(&format!("{}/api/x", f.base)).await);
    assert!(m.contains("revocation_endpoint"), "{m}");
    f.well_formed();
    let plain = client()
        .discover(&format!("{}/api/x", f.base))
        .await
        .expect("discover");
    let r = client().revoke(&plain, &credential).await;
    assert!(matches!(r, Err(ClientError::Unsupported(_))), "{r:?}");
}
