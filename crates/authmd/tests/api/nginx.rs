//! Debian's nginx in front of an API with authmd as its auth service,
//! configured by the example the repository ships
//! (`deploy/nginx/authmd.conf`), and an agent that starts with nothing:
//! it meets the 401 through nginx, discovers, registers, calls the API and
//! ends its own key (RFC 7009, at the advertised revocation_endpoint)
//! through nginx.
//!
//! Needs nginx (`apt-get install nginx`); ignored with that reason without
//! it (`authmd_no_nginx`, see build.rs), unless `REQUIRE_NGINX` is set
//! (CI), where its absence fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authmd::Timestamp;

use crate::both_backends;
use crate::service_keys::verifies;
use crate::support::{Backend, TestApp, free_port, serve};
use crate::upstream::Upstream;

const EXAMPLE: &str = include_str!("../../../../deploy/nginx/authmd.conf");

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("this test needs nginx (apt-get install nginx)")
}

/// nginx in the foreground, one process, everything in `dir`.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// The shipped example with its three addresses replaced by the test's.
    fn start(binary: &Path, listen: u16, authmd: u16, api: u16) -> Nginx {
        let mut site = EXAMPLE.to_owned();
        for (from, to) in [
            (
                "server 127.0.0.1:8080;",
                format!("server 127.0.0.1:{authmd};"),
            ),
            ("server 127.0.0.1:3000;", format!("server 127.0.0.1:{api};")),
            ("listen 80;", format!("listen 127.0.0.1:{listen};")),
        ] {
            assert!(site.contains(from), "the example no longer has {from:?}");
            site = site.replace(from, &to);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        std::fs::write(dir.path().join("authmd.conf"), site).expect("write site");
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/authmd.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

both_backends! {
    unless authmd_no_nginx = "needs nginx (apt-get install nginx)";
    async fn an_agent_discovers_registers_and_calls_through_nginx(backend: Backend) {
        let binary = nginx_binary();
        let up = Upstream::start().await;
        let (listen, authmd_port) = (free_port(), free_port());
        let base = format!("http://127.0.0.1:{listen}");
        let toml = format!(
            "issuer = \"{base}\"\n[server]\ntrusted_proxies = [\"127.0.0.1\"]\n"
        );
        let t = TestApp::new(backend, &toml).await;
        serve(t.router.clone(), authmd_port).await;
        let nginx = Nginx::start(&binary, listen, authmd_port, up.port);
        let http = reqwest::Client::new();
        let api = format!("{base}/api/things");

        // A stranger: nginx answers with authmd's challenge and the
        // protocol's body; the API never sees the request.
        let r = http.get(&api).send().await.expect("through nginx");
        assert_eq!(r.status(), 401, "{}", nginx.log());
        let challenges: Vec<String> = r.headers().get_all("www-authenticate").iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned)).collect();
        assert_eq!(
            challenges,
            vec![format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/api\"")]
        );
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(up.hits(), 0);

        // The agent: from nothing, through nginx only.
        // The original dialect's register (the current one is tested
        // through nginx by the client's own tests).
        let client = authmd_client::Client::new()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_options(authmd_client::Options {
                dialect: Some(authmd_client::Dialect::Original),
                ..Default::default()
            });
        let service = client.discover(&api).await.unwrap_or_else(|e| panic!("{e}: {}", nginx.log()));
        assert_eq!(service.issuer, base);
        let registration = client
            .register(&service, &authmd_client::Method::Anonymous)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut credential = registration.credential(&service).unwrap_or_else(|e| panic!("{e}"));
        let r = client
            .call(&mut credential, reqwest::Method::GET, &format!("{api}?page=2"), |b| {
                b.header("x-authmd-email", "forged@example.com")
                    .header("x-authmd-registration", "reg_forged")
                    .header("x-authmd-assertion", "forged")
                    .header("x-authmd-anything", "forged")
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 201, "{}", nginx.log());
        let seen = up.last();
        assert_eq!(seen.uri, "/api/things?page=2");
        assert_eq!(seen.header("x-authmd-registration"), Some(credential.registration_id.as_str()));
        assert_eq!(seen.headers.get_all("x-authmd-registration").iter().count(), 1);
        assert_eq!(seen.header("x-authmd-scopes"), Some("api.read"));
        assert!(seen.header("x-authmd-email").is_none(), "a forged header reached the API");
        // Stock nginx removes only the nine names it sets; an unlisted
        // X-Authmd-* reaches the API as sent, which is what the example and
        // the README say (the API reads only the nine names). If this
        // fails, nginx now strips by prefix: update deploy/nginx/authmd.conf,
        // deploy/README.md and the README's "What your API receives".
        assert_eq!(seen.header("x-authmd-anything"), Some("forged"));
        assert!(seen.header("authorization").is_none(), "the credential reached the API");
        let assertion = seen.header("x-authmd-assertion").unwrap_or_default().to_owned();
        let jwks = http.get(format!("{base}/.well-known/jwks.json")).send().await
            .expect("JWKS through nginx").bytes().await.unwrap_or_default();
        assert!(verifies(&jwks, &assertion), "the assertion verifies against the JWKS nginx serves");

        // A write with a read-only key: 403 with the step-up challenge.
        let r = client.call(&mut credential, reqwest::Method::POST, &api, |b| b.body("x"))
            .await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("www-authenticate").and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("insufficient_scope") && c.contains("api.write")));
        let hits = up.hits();
        // The same write, the client saying it is a read of another path
        // (nginx passes the client's headers to authmd), or spelling the
        // path so that nginx and the API read it otherwise than the rules:
        // never let through.
        let r = http.post(&api).bearer_auth(&credential.secret)
            .header("x-forwarded-method", "GET").header("x-forwarded-uri", "/api/public")
            .header("x-original-method", "GET").header("x-original-uri", "/api/public")
            .body("x").send().await.expect("nginx");
        assert_eq!(r.status(), 403, "a forged original request was believed: {}", nginx.log());
        for path in ["//api/things", "/api/%74hings", "/api/x/..%2Fthings", "/api/x;y/../things"] {
            let r = http.post(format!("{base}{path}")).bearer_auth(&credential.secret)
                .body("x").send().await.expect("nginx");
            assert!(!r.status().is_success(), "{path} let through nginx: {}", r.status());
        }
        assert_eq!(up.hits(), hits, "a refused write reached the API");

        // An agent that is done ends its own key through nginx, at the
        // revocation_endpoint the metadata advertises under the issuer
        // (nginx); its next call through nginx is refused at once and never
        // reaches the API.
        let endpoint = service.metadata.revocation_endpoint.clone().unwrap_or_default();
        assert_eq!(endpoint, format!("{base}/oauth2/revoke"));
        let done = client
            .register(&service, &authmd_client::Method::Anonymous)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .credential(&service)
            .unwrap_or_else(|e| panic!("{e}"));
        let r = http.get(&api).bearer_auth(&done.secret).send().await.expect("nginx");
        assert_eq!(r.status(), 201);
        // What the client's revoke sends, so that nginx's own status is
        // seen: the client maps only a 200 to success.
        let form = |token: &str| {
            url::form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish()
        };
        let r = http.post(&endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&done.secret))
            .send().await.expect("nginx");
        assert_eq!(r.status(), 200, "POST /oauth2/revoke through nginx: {}", nginx.log());
        let before = up.hits();
        let r = http.get(&api).bearer_auth(&done.secret).send().await.expect("nginx");
        assert_eq!(r.status(), 401, "a self-revoked key was let through nginx");
        assert_eq!(up.hits(), before, "a self-revoked key reached the API");
        // And with authmd-client's own method, on the agent's credential
        // from above (which the admin revocation below then finds revoked
        // too: revoking twice changes nothing).
        let other = client
            .register(&service, &authmd_client::Method::Anonymous)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .credential(&service)
            .unwrap_or_else(|e| panic!("{e}"));
        client.revoke(&service, &other).await.unwrap_or_else(|e| panic!("{e}: {}", nginx.log()));
        let r = http.get(&api).bearer_auth(&other.secret).send().await.expect("nginx");
        assert_eq!(r.status(), 401, "revoked with Client::revoke, still let through nginx");
        // Introspection is routed too (no client is configured here, so
        // authmd itself answers 401 invalid_client, not nginx's 404).
        let r = http.post(format!("{base}/oauth2/introspect"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&done.secret))
            .send().await.expect("nginx");
        assert_eq!(r.status(), 401, "POST /oauth2/introspect through nginx");
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or_default();
        assert_eq!(body["error"], "invalid_client");

        // Revoked: refused through nginx within a second.
        authmd::admin::Admin::new(std::sync::Arc::clone(t.app.store()))
            .revoke(authmd::store::RevokeTarget::Registration(credential.registration_id.clone()),
                    "ops", None, &Default::default(), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            let r = http.get(&api).bearer_auth(&credential.secret).send().await.expect("nginx");
            if r.status() == 401 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(1), "still let through after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = up.hits();
        let r = http.get(&api).bearer_auth(&credential.secret).send().await.expect("nginx");
        assert_eq!(r.status(), 401);
        assert_eq!(up.hits(), before, "a refused request reached the API");
        assert!(before >= hits);
    }
}
