//! `/authz/forward-auth` in-process, in each proxy's dialect; the real
//! nginx in front of it is `nginx.rs`.

use std::time::{Duration, Instant};

use authmd::Timestamp;
use axum::body::Body;
use axum::http::{Method, Request};

use crate::both_backends;
use crate::gateway::anon;
use crate::service_keys::verifies;
use crate::support::{Backend, TestApp, TestResponse};

const CHALLENGE: &str =
    "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/api\"";

async fn ask(
    t: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> TestResponse {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(k) = bearer {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    t.send(b.body(Body::empty()).unwrap_or_default()).await
}

both_backends! {
    async fn forward_auth_answers_every_proxy(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let (key, reg) = anon(&t).await;
        let fa = "/authz/forward-auth";

        // Traefik / Caddy: X-Forwarded-*. A stranger gets the challenge.
        let r = ask(&t, Method::GET, fa, None, &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/api/x?y=1")]).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
        assert_eq!(r.code(), "invalid_token");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let r = ask(&t, Method::GET, fa, Some("amd_sk_nope"), &[("x-forwarded-uri", "/api/x")]).await;
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").is_some_and(|c| c.contains("invalid_token")));

        // nginx: X-Original-*. A valid key: 200 with its identity and proof.
        let r = ask(&t, Method::GET, fa, Some(&key), &[
            ("x-original-method", "GET"), ("x-original-uri", "/api/things"),
            ("x-authmd-email", "forged@example.com"),
        ]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-authmd-registration"), Some(reg.as_str()));
        assert_eq!(r.header("x-authmd-registration-type"), Some("anonymous"));
        assert_eq!(r.header("x-authmd-scopes"), Some("api.read"));
        assert_eq!(r.header("x-authmd-credential-type"), Some("api_key"));
        // Every identity header, empty when unknown; nothing echoed.
        for empty in ["x-authmd-email", "x-authmd-user", "x-authmd-provider", "x-authmd-subject"] {
            assert_eq!(r.header(empty), Some(""), "{empty}");
        }
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let assertion = r.header("x-authmd-assertion").unwrap_or_default().to_owned();
        let jwks = t.get("/.well-known/jwks.json", None).await.body;
        assert!(verifies(&jwks, &assertion));

        // The scope rules apply to the original method and path.
        let r = ask(&t, Method::GET, fa, Some(&key), &[("x-forwarded-method", "POST"), ("x-forwarded-uri", "/api/things")]).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_scope".into()));
        assert!(r.header("www-authenticate").is_some_and(|c| c.contains("scope=\"api.write\"")));
        assert!(r.header("x-authmd-registration").is_none());

        // Envoy: the original method, and the path after the prefix.
        let r = ask(&t, Method::POST, "/authz/forward-auth/api/things", Some(&key), &[]).await;
        assert_eq!(r.status, 403);
        let r = ask(&t, Method::DELETE, "/authz/forward-auth/api/things?x=1", None, &[]).await;
        assert_eq!((r.status.as_u16(), r.header("www-authenticate")), (401, Some(CHALLENGE)));
        let r = ask(&t, Method::GET, "/authz/forward-auth/api/things?x=1", Some(&key), &[]).await;
        assert_eq!(r.status, 200);

        // A path not in its normal form, or no original URI at all: 400
        // (the proxy is told).
        for path in ["/api/public/../admin", "/api/%61dmin", "//api/things", "/api%2Fthings"] {
            let r = ask(&t, Method::GET, fa, Some(&key), &[("x-forwarded-uri", path)]).await;
            assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_request".into()), "{path}");
        }
        let r = ask(&t, Method::GET, fa, Some(&key), &[]).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_request".into()));
    }
}

both_backends! {
    /// A proxy sets one pair of the original method and URI and passes the
    /// client's own headers on: a client that adds the other pair, or a
    /// second value, must not choose what the scope rules judge.
    async fn a_client_cannot_choose_the_original_request(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let (key, _) = anon(&t).await;
        let fa = "/authz/forward-auth";
        // The proxy says POST /api/things (a write the key may not make);
        // the client adds a read of another path.
        let proxy = [("x-original-method", "POST"), ("x-original-uri", "/api/things")];
        let forged = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/api/public")];
        for both in [
            vec![proxy[0], proxy[1], forged[0], forged[1]],
            vec![forged[0], forged[1], proxy[0], proxy[1]],
            vec![proxy[0], proxy[1], forged[1]],
            vec![proxy[0], proxy[1], ("x-original-method", "GET")],
            vec![("x-forwarded-uri", "/api/things"), ("x-forwarded-uri", "/api/public"), proxy[0]],
        ] {
            let r = ask(&t, Method::GET, fa, Some(&key), &both).await;
            assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_request".into()), "{both:?}");
            assert!(r.header("x-authmd-registration").is_none());
        }
        // A value that cannot be read does not leave the other to decide.
        let mut req = Request::builder().method(Method::GET).uri(fa)
            .header("authorization", format!("Bearer {key}"))
            .header("x-forwarded-method", "GET").header("x-forwarded-uri", "/api/public")
            .body(Body::empty()).unwrap_or_default();
        req.headers_mut().insert("x-original-uri",
            axum::http::HeaderValue::from_bytes(b"/api/th\xffings").unwrap_or(axum::http::HeaderValue::from_static("")));
        let r = t.send(req).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_request".into()));
        // Both pairs saying the same thing (the nginx example): decided.
        let r = ask(&t, Method::GET, fa, Some(&key), &[
            proxy[0], proxy[1], ("x-forwarded-method", "POST"), ("x-forwarded-uri", "/api/things"),
        ]).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_scope".into()));
        let r = ask(&t, Method::GET, fa, Some(&key), &[
            ("x-original-method", "GET"), ("x-original-uri", "/api/things"),
            ("x-forwarded-method", "GET"), ("x-forwarded-uri", "/api/things"),
        ]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

both_backends! {
    async fn a_revoked_credential_is_refused_by_forward_auth_within_a_second(backend: Backend) {
        let a = TestApp::new(backend, "").await;
        let b = a.replica("").await;
        let (key, reg) = anon(&a).await;
        let headers = [("x-forwarded-uri", "/api/x")];
        assert_eq!(ask(&b, Method::GET, "/authz/forward-auth", Some(&key), &headers).await.status, 200);
        authmd::admin::Admin::new(std::sync::Arc::clone(a.app.store()))
            .revoke(authmd::store::RevokeTarget::Registration(reg), "ops", None, &Default::default(), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        while ask(&b, Method::GET, "/authz/forward-auth", Some(&key), &headers).await.status != 401 {
            assert!(start.elapsed() < Duration::from_secs(1), "still allowed after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
