//! A test agent provider: real signing keys, a real JWKS server on
//! loopback that counts its requests and can misbehave, and ID-JAG minting.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authmd::Timestamp;
use authmd_jose::{Algorithm, SigningKey, b64};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

/// How the JWKS endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// More bytes than any cap.
    Oversized,
    /// A redirect to this URL.
    Redirect(String),
    Status(u16),
    /// Not JSON.
    Garbage,
}

#[derive(Debug)]
struct State {
    keys: Vec<Value>,
    cache_control: Option<String>,
    delay: Duration,
    mode: Mode,
}

/// A JWKS server on 127.0.0.1. `issuer()` is its base URL; the keys are at
/// `/.well-known/jwks.json`. Every request to any path is counted.
pub struct JwksServer {
    pub base: String,
    state: Arc<Mutex<State>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start() -> JwksServer {
        let state = Arc::new(Mutex::new(State {
            keys: Vec::new(),
            cache_control: Some("public, max-age=3600".into()),
            delay: Duration::ZERO,
            mode: Mode::Normal,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (Arc::clone(&state), Arc::clone(&hits));
        let app = Router::new().fallback(get(move |headers: HeaderMap| {
            let (s, h) = (Arc::clone(&s), Arc::clone(&h));
            async move { serve(&s, &h, &headers).await }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer {
            base,
            state,
            hits,
            task,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.base
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) {
        self.state.lock().expect("lock").keys = keys.iter().map(|k| k.public_jwk()).collect();
    }

    pub fn set_raw_keys(&self, keys: Vec<Value>) {
        self.state.lock().expect("lock").keys = keys;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("lock").delay = delay;
    }

    pub fn set_cache_control(&self, v: Option<&str>) {
        self.state.lock().expect("lock").cache_control = v.map(str::to_owned);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops answering: connections are refused from now on.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(state: &Mutex<State>, hits: &AtomicUsize, _headers: &HeaderMap) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let (keys, cc, delay, mode) = {
        let s = state.lock().expect("lock");
        (
            s.keys.clone(),
            s.cache_control.clone(),
            s.delay,
            s.mode.clone(),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match mode {
        Mode::Normal => {
            let mut r = (
                [(header::CONTENT_TYPE, "application/json")],
                json!({ "keys": keys }).to_string(),
            )
                .into_response();
            if let Some(cc) = cc
                && let Ok(v) = cc.parse()
            {
                r.headers_mut().insert(header::CACHE_CONTROL, v);
            }
            r
        }
        Mode::Oversized => {
            let pad = "x".repeat(2 * 1024 * 1024);
            json!({ "keys": keys, "pad": pad })
                .to_string()
                .into_response()
        }
        Mode::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Mode::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Mode::Garbage => "<html>not json</html>".into_response(),
    }
}

/// A signing key with a fixed kid.
pub fn key(alg: Algorithm, kid: &str) -> SigningKey {
    SigningKey::generate(alg).expect("generate").with_kid(kid)
}

pub fn now_secs() -> i64 {
    Timestamp::now().as_secs()
}

/// The claims of a good ID-JAG from `issuer` for the service `aud`.
pub fn claims(issuer: &str, aud: &str, sub: &str) -> Map<String, Value> {
    let now = now_secs();
    json!({
        "iss": issuer,
        "sub": sub,
        "aud": aud,
        "client_id": format!("{issuer}/agent"),
        "jti": authmd::token::new_id("jti_"),
        "iat": now,
        "exp": now + 300,
        "email": format!("{sub}@example.com"),
        "email_verified": true,
        "name": "Test User",
        "agent_platform": "test-platform",
        "agent_context_id": "ctx-1",
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

pub fn id_jag_header() -> Map<String, Value> {
    json!({"typ": "oauth-id-jag+jwt"})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Signs `claims` with `key` under the ID-JAG header (plus `extra` header members).
pub fn mint(
    key: &SigningKey,
    extra_header: &[(&str, Value)],
    claims: &Map<String, Value>,
) -> String {
    let mut header = id_jag_header();
    for (k, v) in extra_header {
        header.insert((*k).to_owned(), v.clone());
    }
    authmd_jose::jws::sign(key, &header, claims).expect("sign")
}

/// A token assembled from raw header and payload JSON text, with `sig` bytes.
pub fn raw_token(header: &str, payload: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64::encode(header),
        b64::encode(payload),
        b64::encode(sig)
    )
}

/// Signs arbitrary header and payload JSON text (to test duplicates etc.).
pub fn sign_raw(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig = key.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64::encode(sig))
}

/// The registration request body for an ID-JAG.
pub fn body(assertion: &str, credential_type: &str) -> String {
    json!({
        "type": "identity_assertion",
        "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
        "assertion": assertion,
        "requested_credential_type": credential_type,
    })
    .to_string()
}

/// Config text trusting `issuers` (each with default settings).
pub fn trusting(issuers: &[&str], extra: &str) -> String {
    let mut s = String::from(extra);
    for i in issuers {
        s.push_str(&format!("\n[[providers]]\nissuer = \"{i}\"\n"));
    }
    s
}
