//! CORS for browser-based agents: the discovery documents and `/auth.md`
//! answer any origin; the agent endpoints and the protected resource only
//! `[cors] allowed_origins`, with preflights answered before any
//! credential is asked for and `WWW-Authenticate` exposed to scripts;
//! credentials mode is never granted.

use axum::http::Method;

use crate::support::{Backend, TestApp, TestResponse, request};

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

fn toml() -> String {
    format!("[cors]\nallowed_origins = [\"{APP}\", \"http://localhost:3000\"]\n")
}

async fn from(
    t: &TestApp,
    method: Method,
    path: &str,
    origin: &str,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut req = request(method, path, None, None);
    req.headers_mut()
        .insert("origin", origin.parse().expect("origin"));
    for (k, v) in headers {
        req.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("header value"),
        );
    }
    t.send(req).await
}

async fn preflight(t: &TestApp, path: &str, origin: &str, method: &str) -> TestResponse {
    from(
        t,
        Method::OPTIONS,
        path,
        origin,
        &[
            ("access-control-request-method", method),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    )
    .await
}

fn assert_no_cors(r: &TestResponse, what: &str) {
    for h in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
    ] {
        assert!(r.header(h).is_none(), "{what}: {h} = {:?}", r.header(h));
    }
}

fn vary_has_origin(r: &TestResponse) -> bool {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("origin"))
        })
}

/// The discovery documents and `/auth.md` are public: any origin, even
/// with no origin configured, and their preflights too.
#[tokio::test]
async fn discovery_documents_answer_any_origin() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/api",
        "/auth.md",
        "/.well-known/jwks.json",
    ] {
        let r = from(&t, Method::GET, path, EVIL, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        assert!(r.header("access-control-allow-credentials").is_none());
        let p = preflight(&t, path, EVIL, "GET").await;
        assert_eq!(p.status, 204, "{path}");
        assert_eq!(p.header("access-control-allow-origin"), Some("*"), "{path}");
        assert_eq!(
            p.header("access-control-allow-methods"),
            Some("GET, HEAD, OPTIONS")
        );
    }
    // A request without Origin gets no CORS headers at all.
    let r = t.get("/auth.md", None).await;
    assert!(r.header("access-control-allow-origin").is_none());
}

/// An allowed origin reads the API, and above all its 401: the challenge
/// an agent discovers from must be readable by its script.
#[tokio::test]
async fn an_allowed_origin_reads_the_api_and_its_challenge() {
    let t = TestApp::new(Backend::Sqlite, &toml()).await;
    let k = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let auth = format!("Bearer {k}");
    let r = from(
        &t,
        Method::GET,
        "/api/whoami",
        APP,
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(vary_has_origin(&r));
    assert!(r.header("access-control-allow-credentials").is_none());

    let r = from(&t, Method::GET, "/api/whoami", APP, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(exposed.contains("WWW-Authenticate"), "{exposed}");
    assert!(r.header("www-authenticate").is_some());

    // A 403 (scope) and a 429 carry their headers to the script as well.
    let r = from(
        &t,
        Method::POST,
        "/api/whoami",
        APP,
        &[("authorization", &auth)],
    )
    .await;
    assert!(r.status == 403 || r.status == 405, "{}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    // Origins are compared in their serialized form.
    let r = from(&t, Method::GET, "/api/whoami", "http://localhost:3000", &[]).await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    // The agent endpoints likewise.
    let mut req = crate::support::json_request(
        "/agent/auth",
        r#"{"type":"anonymous","requested_credential_type":"api_key"}"#,
    );
    req.headers_mut()
        .insert("origin", APP.parse().expect("origin"));
    let r = t.send(req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
}

/// An origin not listed gets no CORS headers (its script cannot read the
/// answer), never an echo of itself; the answer varies by Origin for
/// caches. With the default (empty) list no origin is allowed.
#[tokio::test]
async fn other_origins_are_not_allowed() {
    let t = TestApp::new(Backend::Sqlite, &toml()).await;
    for origin in [
        EVIL,
        "null",
        "https://app.example.evil.example",
        "http://app.example",
    ] {
        let r = from(&t, Method::GET, "/api/whoami", origin, &[]).await;
        assert_eq!(r.status, 401);
        assert_no_cors(&r, origin);
        assert!(vary_has_origin(&r), "{origin}");
        let p = preflight(&t, "/api/whoami", origin, "GET").await;
        assert_eq!(p.status, 204, "{origin}");
        assert_no_cors(&p, origin);
    }
    let bare = TestApp::new(Backend::Sqlite, "").await;
    let r = from(&bare, Method::GET, "/api/whoami", APP, &[]).await;
    assert_no_cors(&r, "default configuration");
    let r = from(
        &bare,
        Method::POST,
        "/agent/auth",
        APP,
        &[("content-type", "application/json")],
    )
    .await;
    assert_no_cors(&r, "default configuration, agent endpoint");
}

/// A preflight under the protected resource is answered before any
/// credential check (a browser never sends credentials with it), for any
/// method the API may serve, with the asked headers allowed.
#[tokio::test]
async fn preflight_under_the_resource_needs_no_credential() {
    let t = TestApp::new(Backend::Sqlite, &toml()).await;
    for (path, method) in [
        ("/api/whoami", "GET"),
        ("/api/notes/42", "DELETE"),
        ("/api/", "POST"),
        ("/agent/auth", "POST"),
        ("/agent/auth/claim/complete", "POST"),
        ("/oauth2/revoke", "POST"),
    ] {
        let p = preflight(&t, path, APP, method).await;
        assert_eq!(p.status, 204, "{path}: {}", p.text());
        assert!(
            p.header("www-authenticate").is_none(),
            "{path}: no challenge to a preflight"
        );
        assert_eq!(p.header("access-control-allow-origin"), Some(APP), "{path}");
        let methods = p.header("access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains(method), "{path}: {methods}");
        assert_eq!(
            p.header("access-control-allow-headers"),
            Some("authorization, content-type"),
            "{path}"
        );
        assert!(p.header("access-control-max-age").is_some());
        assert!(p.header("access-control-allow-credentials").is_none());
    }
    // A malformed list of headers is not echoed.
    let p = from(
        &t,
        Method::OPTIONS,
        "/api/whoami",
        APP,
        &[
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "bad header, x"),
        ],
    )
    .await;
    assert!(p.header("access-control-allow-headers").is_none());
    // OPTIONS that is not a preflight is an ordinary request for the API,
    // not answered by CORS.
    let r = from(&t, Method::OPTIONS, "/api/whoami", APP, &[]).await;
    assert_ne!(r.status, 204);
    assert!(r.header("access-control-allow-methods").is_none());
}

/// The claim page (for people) and introspection (server to server) are
/// never readable cross-origin, even for a listed origin.
#[tokio::test]
async fn the_claim_page_and_introspection_are_not_cross_origin() {
    let t = TestApp::new(Backend::Sqlite, &toml()).await;
    for path in [
        "/agent/auth/claim/view?token=x",
        "/oauth2/introspect",
        "/healthz",
    ] {
        let r = from(&t, Method::GET, path, APP, &[]).await;
        assert_no_cors(&r, path);
        let p = preflight(&t, path, APP, "POST").await;
        assert_no_cors(&p, path);
    }
}

/// The same, as a browser enforces it: a script on a listed origin (a real
/// headless Chromium) discovers from the 401 challenge, registers, calls
/// the API with its key (each a preflighted request), and ends the key; a
/// script on another origin can read the public documents and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    authmd_no_browser,
    ignore = "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
)]
async fn a_browser_agent_on_a_listed_origin_works_and_others_are_refused() {
    use crate::support::{free_port, serve};
    use serde_json::{Value, json};
    let (client, _driver) = crate::claim_browser::browser().await;
    let (port, listed, other) = (free_port(), free_port(), free_port());
    let toml = format!(
        "issuer = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n\
         [cors]\nallowed_origins = [\"http://127.0.0.1:{listed}\"]\n"
    );
    let t = TestApp::new(Backend::Sqlite, &toml).await;
    let base = serve(authmd::http::router(t.app.clone()), port).await;
    let page = || {
        axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                axum::response::Html("<!doctype html><title>agent</title>")
            }),
        )
    };
    let listed_origin = serve(page(), listed).await;
    let other_origin = serve(page(), other).await;

    const AGENT: &str = r#"
        const [base, done] = arguments;
        (async () => {
          const out = {};
          let r = await fetch(base + "/api/whoami");
          out.status = r.status;
          out.challenge = r.headers.get("www-authenticate");
          r = await fetch(base + "/.well-known/oauth-authorization-server");
          out.issuer = (await r.json()).issuer;
          r = await fetch(base + "/agent/auth", {method: "POST",
            headers: {"content-type": "application/json"},
            body: JSON.stringify({type: "anonymous", requested_credential_type: "api_key"})});
          const reg = await r.json();
          r = await fetch(base + "/api/whoami", {headers: {authorization: "Bearer " + reg.credential}});
          out.same = (await r.json()).registration_id === reg.registration_id;
          r = await fetch(base + "/oauth2/revoke", {method: "POST",
            body: new URLSearchParams({token: reg.credential})});
          out.revoked = r.status;
          r = await fetch(base + "/api/whoami", {headers: {authorization: "Bearer " + reg.credential}});
          out.after = r.status;
          return out;
        })().then(done, e => done({error: String(e)}));
    "#;
    client
        .goto(&format!("{listed_origin}/"))
        .await
        .expect("open the page");
    let out = client
        .execute_async(AGENT, vec![json!(base)])
        .await
        .expect("script");
    assert_eq!(out["status"], 401, "{out}");
    let challenge = out["challenge"].as_str().unwrap_or_default();
    assert!(
        challenge.contains("resource_metadata="),
        "the challenge reached the script: {out}"
    );
    assert_eq!(out["issuer"], Value::String(base.clone()));
    assert_eq!(out["same"], true, "{out}");
    assert_eq!(out["revoked"], 200, "{out}");
    assert_eq!(out["after"], 401, "{out}");

    const STRANGER: &str = r#"
        const [base, done] = arguments;
        (async () => {
          const out = {};
          out.authMd = (await fetch(base + "/auth.md")).status;
          try { await fetch(base + "/api/whoami"); out.api = "read"; }
          catch (e) { out.api = "refused"; }
          try { await fetch(base + "/agent/auth", {method: "POST",
              headers: {"content-type": "application/json"}, body: "{}"}); out.register = "read"; }
          catch (e) { out.register = "refused"; }
          return out;
        })().then(done, e => done({error: String(e)}));
    "#;
    client
        .goto(&format!("{other_origin}/"))
        .await
        .expect("open the page");
    let out = client
        .execute_async(STRANGER, vec![json!(base)])
        .await
        .expect("script");
    assert_eq!(
        out,
        json!({"authMd": 200, "api": "refused", "register": "refused"})
    );
    let _ = client.close().await;
}
