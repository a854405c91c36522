//! A small stand-in for a service of the current dialect, serving the
//! shapes of the reference notes dialect-latest.md §2–§3 exactly (the
//! reference's D2 line, which hosted AuthKit also documents): the 401
//! challenge, the two metadata documents, `POST /agent/identity` (four
//! bodies), the claim attempt and its completion, the RFC 7523 token
//! endpoint, RFC 7009 revocation, and the user's pages (`/login`, `/claim`,
//! `/claim/confirm` revealing the `user_code`). It keeps no secret hashed
//! and verifies no signature: it exists to pin the client to the shapes,
//! not to be a server. Shared by the client's and the CLI's tests
//! (`#[path]`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Real-world defects the stand-in can show (dialect-latest.md §7–§8).
#[derive(Debug, Clone, Copy, Default)]
pub struct Defects {
    /// Authorization server metadata without `issuer`.
    pub no_issuer: bool,
    /// Errors as `{code, message}` instead of `{error, message}`.
    pub code_envelope: bool,
    /// `claim.url` names the user-facing page, not the claim endpoint.
    pub claim_url_is_a_page: bool,
}

#[derive(Debug, Clone)]
struct Attempt {
    view_token: String,
    user_code: String,
    login_hint: String,
    confirmed_by: Option<String>,
}

#[derive(Debug, Clone)]
struct Reg {
    kind: String,
    claimed: bool,
    email: Option<String>,
    claim_token: Option<String>,
    attempt: Option<Attempt>,
}

#[derive(Default)]
pub struct World {
    regs: HashMap<String, Reg>,
    /// assertion → registration.
    assertions: HashMap<String, String>,
    /// access token → (registration, scopes).
    access: HashMap<String, (String, Vec<String>)>,
    /// refresh token → (registration, spent).
    refresh: HashMap<String, (String, bool)>,
    /// session cookie → email.
    sessions: HashMap<String, String>,
    /// Accounts that exist at the service (email).
    accounts: Vec<String>,
    /// (iss, sub) → email, bound delegations.
    delegations: HashMap<(String, String), String>,
    counter: u64,
    /// Every request, "METHOD /path".
    pub seen: Vec<String>,
    /// Every `token` presented at the revocation endpoint.
    pub revocations: Vec<String>,
}

pub struct StandIn {
    pub base: String,
    pub world: Arc<Mutex<World>>,
    pub defects: Defects,
}

type Shared = (String, Arc<Mutex<World>>, Defects);

const PRE: &[&str] = &["api.read"];
const POST: &[&str] = &["api.read", "api.write"];

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn iso(in_secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(in_secs))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl World {
    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let n = self.counter;
        format!("{prefix}{n:06}{}", &"f3a9c1d2e4b5a6c7d8e9f0a1"[..16])
    }

    /// A JWT-shaped assertion (not signed: the stand-in never checks it).
    fn assertion(&mut self, base: &str, reg: &str, email: Option<&str>) -> String {
        use base64::Engine;
        let b = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        self.counter += 1;
        let mut claims =
            json!({"iss": base, "sub": reg, "aud": base, "jti": format!("jti_{}", self.counter)});
        if let Some(e) = email {
            claims["email"] = json!(e);
            claims["email_verified"] = json!(true);
        }
        let a = format!(
            "{}.{}.c2ln",
            b(json!({"alg": "ES256", "kid": "k1", "typ": "oauth-id-jag+jwt"})),
            b(claims)
        );
        self.assertions.insert(a.clone(), reg.to_owned());
        a
    }

    fn refresh_token(&mut self, reg: &str) -> Value {
        let t = self.next("art_");
        self.refresh.insert(t.clone(), (reg.to_owned(), false));
        json!({"value": t, "expires_at": iso(30 * 86400)})
    }

    fn attempt(&mut self, base: &str, reg: &str, hint: &str) -> Value {
        let view = self.next("cvt_");
        self.counter += 1;
        let code = format!("{:06}", (self.counter * 7919 + 123_457) % 1_000_000);
        if let Some(r) = self.regs.get_mut(reg) {
            r.attempt = Some(Attempt {
                view_token: view.clone(),
                user_code: code,
                login_hint: hint.to_owned(),
                confirmed_by: None,
            });
        }
        let return_to = format!("/claim?claim_attempt_token={view}");
        let uri = format!(
            "{base}/login?return_to={}",
            url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
        );
        json!({"verification_uri": uri, "expires_at": iso(600)})
    }

    // ---- knobs for tests ----

    /// Every access token stops working (as after their expiry).
    pub fn drop_access_tokens(&mut self) {
        self.access.clear();
    }

    /// Every assertion stops being exchangeable.
    pub fn drop_assertions(&mut self) {
        self.assertions.clear();
    }

    /// Every refresh token stops working.
    pub fn drop_refresh_tokens(&mut self) {
        self.refresh.clear();
    }

    pub fn add_account(&mut self, email: &str) {
        self.accounts.push(email.to_owned());
    }

    pub fn live_access_tokens(&self) -> usize {
        self.access.len()
    }
}

fn json_ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn refuse(d: Defects, status: StatusCode, code: &str, message: &str) -> Response {
    let body = if d.code_envelope {
        json!({"code": code, "message": message})
    } else {
        json!({"error": code, "message": message})
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn token_error(code: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        json!({"error": code, "error_description": description}).to_string(),
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn session(headers: &HeaderMap, w: &World) -> Option<String> {
    let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
    let sid = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("sid="))?;
    w.sessions.get(sid).cloned()
}

impl StandIn {
    pub async fn start() -> StandIn {
        StandIn::start_with(Defects::default()).await
    }

    pub async fn start_with(defects: Defects) -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let world = Arc::new(Mutex::new(World::default()));
        let state: Shared = (base.clone(), Arc::clone(&world), defects);
        let app = Router::new()
            .route("/.well-known/oauth-protected-resource", get(prm))
            .route("/.well-known/oauth-authorization-server", get(asm))
            .route("/api/resource", get(resource))
            .route("/agent/identity", post(identity))
            .route("/agent/identity/claim", post(claim))
            .route("/agent/identity/claim/complete", post(complete))
            .route("/oauth2/token", post(token))
            .route("/oauth2/revoke", post(revoke))
            .route("/login", get(login_page).post(login))
            .route("/claim", get(claim_page))
            .route("/claim/confirm", post(confirm))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&world),
                |State(w): State<Arc<Mutex<World>>>,
                 req: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    if let Ok(mut w) = w.lock() {
                        w.seen
                            .push(format!("{} {}", req.method(), req.uri().path()));
                    }
                    next.run(req).await
                },
            ))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn {
            base,
            world,
            defects,
        }
    }

    pub fn api(&self) -> String {
        format!("{}/api/resource", self.base)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.world.lock().expect("lock"))
    }

    /// Plays the user: opens `verification_uri`, signs in as `email`,
    /// confirms, and reads the code the page reveals.
    pub async fn user_confirms(&self, verification_uri: &str, email: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http");
        let page = http.get(verification_uri).send().await.expect("open link");
        assert_eq!(page.status(), 200, "the link opens the sign-in page");
        let return_to = url::Url::parse(verification_uri)
            .expect("uri")
            .query_pairs()
            .find(|(k, _)| k == "return_to")
            .map(|(_, v)| v.into_owned())
            .expect("return_to");
        let login = http
            .post(format!("{}/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("email", email)
                    .append_pair("return_to", &return_to)
                    .finish(),
            )
            .send()
            .await
            .expect("sign in");
        assert_eq!(login.status(), 302);
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let claim_page = http
            .get(format!("{}{return_to}", self.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("claim page");
        assert_eq!(claim_page.status(), 200, "the claim page");
        let view = return_to
            .split("claim_attempt_token=")
            .nth(1)
            .expect("view token")
            .to_owned();
        let shown = http
            .post(format!("{}/claim/confirm", self.base))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("claim_attempt_token={view}"))
            .send()
            .await
            .expect("confirm")
            .text()
            .await
            .expect("page");
        let from = shown.find("id=\"user_code\">").expect("a code on the page") + 15;
        shown[from..from + 6].to_owned()
    }
}

async fn prm(State((b, _, _)): State<Shared>) -> Response {
    let mut r = json_ok(json!({
        "resource": format!("{b}/api/"),
        "resource_name": "Agent Auth Consumer",
        "resource_logo_uri": format!("{b}/logo.png"),
        "authorization_servers": [b],
        "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"],
    }));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn asm(State((b, _, d)): State<Shared>) -> Response {
    let mut v = json!({
        "resource": format!("{b}/api/"),
        "authorization_servers": [b],
        "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"],
        "issuer": b,
        "token_endpoint": format!("{b}/oauth2/token"),
        "revocation_endpoint": format!("{b}/oauth2/revoke"),
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "agent_auth": {
            "skill": format!("{b}/auth.md"),
            "identity_endpoint": format!("{b}/agent/identity"),
            "claim_endpoint": format!("{b}/agent/identity/claim"),
            "events_endpoint": format!("{b}/agent/event/notify"),
            "identity_types_supported": ["anonymous", "identity_assertion", "service_auth"],
            "identity_assertion": {"assertion_types_supported": ["urn:ietf:params:oauth:token-type:id-jag"]},
            "events_supported": ["https://schemas.workos.com/events/agent/auth/identity/assertion/revoked"],
        }
    });
    if d.no_issuer
        && let Some(o) = v.as_object_mut()
    {
        o.remove("issuer");
    }
    let mut r = json_ok(v);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn resource(State((b, w, _)): State<Shared>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let challenge =
        format!("Bearer resource_metadata=\"{b}/.well-known/oauth-protected-resource\"");
    let unauthorized = |message: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, challenge.clone()),
                (header::CONTENT_TYPE, "application/json".to_owned()),
            ],
            json!({"error": "unauthorized", "message": message}).to_string(),
        )
            .into_response()
    };
    let Some(token) = bearer else {
        return unauthorized("Missing Bearer credential.");
    };
    let w = w.lock().expect("lock");
    match w.access.get(token) {
        Some((reg, scopes)) => {
            let email = w.regs.get(reg).and_then(|r| r.email.clone());
            json_ok(json!({"ok": true, "registration": reg, "scopes": scopes, "email": email}))
        }
        None => unauthorized("Invalid, expired, or revoked credential."),
    }
}

async fn identity(State((b, w, d)): State<Shared>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return refuse(
            d,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
        );
    };
    let mut w = w.lock().expect("lock");
    let nonempty = |k: &str| v[k].as_str().filter(|s| !s.is_empty());
    match v["type"].as_str() {
        Some("anonymous") => {
            let id = w.next("reg_");
            let token = w.next("clm_");
            w.regs.insert(
                id.clone(),
                Reg {
                    kind: "anonymous".into(),
                    claimed: false,
                    email: None,
                    claim_token: Some(token.clone()),
                    attempt: None,
                },
            );
            let assertion = w.assertion(&b, &id, None);
            let url = if d.claim_url_is_a_page {
                format!("{b}/claim")
            } else {
                format!("{b}/agent/identity/claim")
            };
            json_ok(json!({
                "id": id, "type": "anonymous",
                "identity": {"assertion": assertion, "expires_at": iso(3600)},
                "scopes": {"pre_claim": PRE, "post_claim": POST},
                "claim": {"token": token, "expires_at": iso(86400), "url": url},
            }))
        }
        Some("service_auth") => {
            let Some(hint) = nonempty("login_hint") else {
                return refuse(
                    d,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "login_hint: Required",
                );
            };
            if !hint.contains('@') || hint.contains(' ') {
                return refuse(
                    d,
                    StatusCode::BAD_REQUEST,
                    "invalid_login_hint",
                    "login_hint must be an email address.",
                );
            }
            let id = w.next("reg_");
            let token = w.next("clm_");
            w.regs.insert(
                id.clone(),
                Reg {
                    kind: "service_auth".into(),
                    claimed: false,
                    email: None,
                    claim_token: Some(token.clone()),
                    attempt: None,
                },
            );
            let attempt = w.attempt(&b, &id, hint);
            json_ok(json!({
                "id": id, "type": "service_auth",
                "scopes": {"post_claim": POST},
                "claim": {"token": token, "expires_at": iso(86400), "url": format!("{b}/agent/identity/claim"), "attempt": attempt},
            }))
        }
        Some("identity_assertion") => {
            if v["assertion_type"] != "urn:ietf:params:oauth:token-type:id-jag" {
                return refuse(
                    d,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "assertion_type: Invalid literal value",
                );
            }
            let Some(a) = nonempty("assertion") else {
                return refuse(
                    d,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "assertion: Required",
                );
            };
            // Unverified read of the claims (a stand-in).
            use base64::Engine;
            let claims: Value = a
                .split('.')
                .nth(1)
                .and_then(|p| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p)
                        .ok()
                })
                .and_then(|p| serde_json::from_slice(&p).ok())
                .unwrap_or(Value::Null);
            let (Some(iss), Some(sub)) = (claims["iss"].as_str(), claims["sub"].as_str()) else {
                return refuse(d, StatusCode::BAD_REQUEST, "invalid_request", "missing sub");
            };
            let email = claims["email"].as_str().unwrap_or_default().to_owned();
            let key = (iss.to_owned(), sub.to_owned());
            let id = format!("reg_{:0>22}", sub.len() * 31 + iss.len());
            let bound = w.delegations.contains_key(&key);
            if !bound && w.accounts.contains(&email) {
                // Step-up: an existing account, no delegation yet.
                let token = w.next("clm_");
                w.regs.insert(
                    id.clone(),
                    Reg {
                        kind: "identity_assertion".into(),
                        claimed: false,
                        email: None,
                        claim_token: Some(token.clone()),
                        attempt: None,
                    },
                );
                let attempt = w.attempt(&b, &id, &email);
                let description = "ID-JAG matches existing account; user confirmation required to bind delegation";
                return (
                    StatusCode::UNAUTHORIZED,
                    [
                        (header::WWW_AUTHENTICATE, format!("AgentAuth error=\"interaction_required\", error_description=\"{description}\"")),
                        (header::CONTENT_TYPE, "application/json".to_owned()),
                    ],
                    json!({
                        "error": "interaction_required", "error_description": description,
                        "id": id, "type": "identity_assertion",
                        "scopes": {"post_claim": POST},
                        "claim": {"token": token, "expires_at": iso(86400), "url": format!("{b}/agent/identity/claim"), "attempt": attempt},
                    })
                    .to_string(),
                )
                    .into_response();
            }
            w.delegations.insert(key, email.clone());
            if !w.accounts.contains(&email) {
                w.accounts.push(email.clone());
            }
            w.regs.insert(
                id.clone(),
                Reg {
                    kind: "identity_assertion".into(),
                    claimed: true,
                    email: Some(email.clone()),
                    claim_token: None,
                    attempt: None,
                },
            );
            let assertion = w.assertion(&b, &id, Some(&email));
            json_ok(json!({
                "id": id, "type": "identity_assertion",
                "identity": {"assertion": assertion, "expires_at": iso(3600)},
                "scopes": POST,
            }))
        }
        Some("refresh") => {
            let Some(t) = nonempty("refresh_token") else {
                return refuse(
                    d,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token: Required",
                );
            };
            let reg = match w.refresh.get_mut(t) {
                Some((reg, spent)) if !*spent => {
                    *spent = true;
                    reg.clone()
                }
                _ => {
                    return refuse(
                        d,
                        StatusCode::BAD_REQUEST,
                        "invalid_refresh_token",
                        "The refresh token is invalid, expired, or already used.",
                    );
                }
            };
            let email = w.regs.get(&reg).and_then(|r| r.email.clone());
            let assertion = w.assertion(&b, &reg, email.as_deref());
            let rt = w.refresh_token(&reg);
            json_ok(json!({
                "id": reg, "type": "refresh",
                "identity": {"assertion": assertion, "expires_at": iso(3600), "refresh_token": rt},
            }))
        }
        _ => refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "type: Invalid discriminator value",
        ),
    }
}

fn reg_of_claim(w: &World, token: &str) -> Option<String> {
    w.regs
        .iter()
        .find(|(_, r)| r.claim_token.as_deref() == Some(token))
        .map(|(id, _)| id.clone())
}

async fn claim(State((b, w, d)): State<Shared>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some("service_auth"), Some(token), Some(hint)) = (
        v["type"].as_str(),
        v["claim_token"].as_str(),
        v["login_hint"].as_str(),
    ) else {
        return refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid input",
        );
    };
    if v.as_object().is_some_and(|o| o.len() != 3) || !hint.contains('@') {
        return refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid input",
        );
    }
    let mut w = w.lock().expect("lock");
    let Some(id) = reg_of_claim(&w, token) else {
        return refuse(
            d,
            StatusCode::UNAUTHORIZED,
            "invalid_claim_token",
            "Unknown claim token.",
        );
    };
    if w.regs.get(&id).is_some_and(|r| r.claimed) {
        return refuse(
            d,
            StatusCode::CONFLICT,
            "already_claimed",
            "Already claimed.",
        );
    }
    let attempt = w.attempt(&b, &id, hint);
    json_ok(json!({"id": id, "type": "service_auth", "attempt": attempt}))
}

async fn complete(State((b, w, d)): State<Shared>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(token), Some(code)) = (v["claim_token"].as_str(), v["user_code"].as_str()) else {
        return refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid input",
        );
    };
    if code.len() != 6 || !code.bytes().all(|c| c.is_ascii_digit()) {
        return refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "user_code: must be 6 digits",
        );
    }
    let mut w = w.lock().expect("lock");
    let Some(id) = reg_of_claim(&w, token) else {
        return refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_claim",
            "Unknown claim.",
        );
    };
    let Some(reg) = w.regs.get(&id).cloned() else {
        return refuse(
            d,
            StatusCode::BAD_REQUEST,
            "invalid_claim",
            "Unknown claim.",
        );
    };
    if reg.claimed {
        return refuse(
            d,
            StatusCode::CONFLICT,
            "already_claimed",
            "Already claimed.",
        );
    }
    let Some(attempt) = reg.attempt else {
        return refuse(d, StatusCode::GONE, "claim_expired", "No active attempt.");
    };
    let Some(user) = attempt.confirmed_by else {
        return refuse(
            d,
            StatusCode::CONFLICT,
            "claim_not_confirmed",
            "The user has not confirmed yet. Wait and retry.",
        );
    };
    if attempt.user_code != code {
        return refuse(
            d,
            StatusCode::UNAUTHORIZED,
            "invalid_user_code",
            "The code does not match.",
        );
    }
    if let Some(r) = w.regs.get_mut(&id) {
        r.claimed = true;
        r.email = Some(user.clone());
        r.attempt = None;
    }
    // Anonymous: every pre-claim access token is revoked.
    w.access.retain(|_, (r, _)| r != &id);
    let assertion = w.assertion(&b, &id, Some(&user));
    let rt = w.refresh_token(&id);
    json_ok(json!({
        "id": id, "status": "claimed",
        "identity": {"assertion": assertion, "expires_at": iso(3600), "refresh_token": rt},
    }))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn token(State((_, w, _)): State<Shared>, body: Bytes) -> Response {
    let f = form(&body);
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return token_error("unsupported_grant_type", "Unsupported grant type.");
    }
    let Some(a) = f.get("assertion") else {
        return token_error("invalid_request", "assertion is required");
    };
    let mut w = w.lock().expect("lock");
    let Some(reg) = w.assertions.get(a).cloned() else {
        return token_error("invalid_grant", "The assertion is invalid.");
    };
    let claimed = w.regs.get(&reg).is_some_and(|r| r.claimed);
    let scopes = strs(if claimed { POST } else { PRE });
    let t = w.next("at_");
    w.access.insert(t.clone(), (reg, scopes.clone()));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        json!({"access_token": t, "token_type": "Bearer", "expires_in": 3600, "scope": scopes.join(" ")}).to_string(),
    )
        .into_response()
}

async fn revoke(State((_, w, _)): State<Shared>, body: Bytes) -> Response {
    let f = form(&body);
    if let Some(h) = f.get("token_type_hint")
        && h != "access_token"
    {
        return token_error("invalid_request", "Unsupported token_type_hint.");
    }
    let Some(t) = f.get("token") else {
        return token_error("invalid_request", "token is required");
    };
    let mut w = w.lock().expect("lock");
    w.revocations.push(t.clone());
    // Access tokens only, as the reference (dialect-latest.md §3.6).
    w.access.remove(t);
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

async fn login_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let return_to = q.get("return_to").cloned().unwrap_or_default();
    html(
        StatusCode::OK,
        format!(
            "<form method=post action=/login><input name=email><input type=hidden name=return_to value=\"{return_to}\"><button>Sign in</button></form>"
        ),
    )
}

async fn login(State((_, w, _)): State<Shared>, body: Bytes) -> Response {
    let f = form(&body);
    let (Some(email), Some(return_to)) = (f.get("email"), f.get("return_to")) else {
        return html(StatusCode::BAD_REQUEST, "missing".into());
    };
    if !return_to.starts_with('/') || return_to.starts_with("//") {
        return html(StatusCode::BAD_REQUEST, "bad return_to".into());
    }
    let mut w = w.lock().expect("lock");
    let sid = w.next("sess_");
    w.sessions.insert(sid.clone(), email.to_lowercase());
    if !w.accounts.contains(email) {
        w.accounts.push(email.clone());
    }
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, return_to.clone()),
            (
                header::SET_COOKIE,
                format!("sid={sid}; HttpOnly; SameSite=Lax; Path=/"),
            ),
        ],
    )
        .into_response()
}

#[allow(clippy::result_large_err)] // a test helper; the refusal is the page
/// The gates of `/claim` and `/claim/confirm`: the attempt, the session,
/// the account.
fn gate(w: &World, headers: &HeaderMap, view: &str) -> Result<(String, String), Response> {
    let Some((id, reg)) = w
        .regs
        .iter()
        .find(|(_, r)| r.attempt.as_ref().is_some_and(|a| a.view_token == view))
    else {
        return Err(html(StatusCode::NOT_FOUND, "Link invalid".into()));
    };
    let Some(user) = session(headers, w) else {
        return Err((
            StatusCode::FOUND,
            [(
                header::LOCATION,
                format!("/login?return_to=/claim?claim_attempt_token={view}"),
            )],
        )
            .into_response());
    };
    if reg.claimed {
        return Err(html(StatusCode::OK, "Already claimed".into()));
    }
    let hint = reg
        .attempt
        .as_ref()
        .map(|a| a.login_hint.to_lowercase())
        .unwrap_or_default();
    if hint != user {
        return Err(html(StatusCode::FORBIDDEN, "Wrong account".into()));
    }
    Ok((id.clone(), user))
}

async fn claim_page(
    State((_, w, _)): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let view = q.get("claim_attempt_token").cloned().unwrap_or_default();
    let w = w.lock().expect("lock");
    match gate(&w, &headers, &view) {
        Err(r) => r,
        Ok(_) => html(
            StatusCode::OK,
            format!(
                "<h1>Authorize this agent?</h1><form method=post action=/claim/confirm><input type=hidden name=claim_attempt_token value=\"{view}\"><button>Confirm</button></form>"
            ),
        ),
    }
}

async fn confirm(State((_, w, _)): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let view = f.get("claim_attempt_token").cloned().unwrap_or_default();
    let mut w = w.lock().expect("lock");
    let (id, user) = match gate(&w, &headers, &view) {
        Err(r) => return r,
        Ok(x) => x,
    };
    let Some(attempt) = w.regs.get_mut(&id).and_then(|r| r.attempt.as_mut()) else {
        return html(StatusCode::GONE, "Expired".into());
    };
    attempt.confirmed_by = Some(user);
    let code = attempt.user_code.clone();
    html(
        StatusCode::OK,
        format!("<p>Read this code back to the agent:</p><p id=\"user_code\">{code}</p>"),
    )
}
