//! The hostile-input catalogue for the ID-JAG endpoint (standards checklist
//! §2.1, J1–J64): each input gets the exact code of docs/protocol.md §3.3, never
//! a 5xx, creates nothing, and no header ever makes authmd fetch a URL.

use authmd_jose::{Algorithm, b64};
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint, now_secs, raw_token, sign_raw};
use crate::support::{Backend, TestApp};

const AUD: &str = "http://127.0.0.1:8080";

fn with(mut c: Map<String, Value>, k: &str, v: Value) -> Map<String, Value> {
    c.insert(k.to_owned(), v);
    c
}

fn without(mut c: Map<String, Value>, k: &str) -> Map<String, Value> {
    c.remove(k);
    c
}

fn j(v: &Map<String, Value>) -> String {
    Value::Object(v.clone()).to_string()
}

both_backends! {
    async fn hostile_assertions_get_their_code_and_create_nothing(backend: Backend) {
        // Provider A: an ES256 key and an RSA key. Provider B reuses A's kid
        // with its own key. Provider C allows ES256 only but publishes an RSA key.
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let c = JwksServer::start().await;
        let attacker = JwksServer::start().await; // not trusted
        let canary = JwksServer::start().await; // must never be asked anything
        let ka = key(Algorithm::Es256, "k1");
        let ka_rsa = key(Algorithm::Rs256, "rsa1");
        let kb = key(Algorithm::Es256, "k1");
        let kc_rsa = key(Algorithm::Rs256, "rsa-c");
        let evil = key(Algorithm::Es256, "k1");
        a.set_keys(&[&ka, &ka_rsa]);
        b.set_keys(&[&kb]);
        c.set_keys(&[&kc_rsa]);
        attacker.set_keys(&[&evil]);
        canary.set_keys(&[&evil]);
        let toml = format!(
            "[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\nalgorithms = [\"ES256\"]\n",
            a.issuer(), b.issuer(), c.issuer()
        );
        let t = TestApp::new(backend, &toml).await;
        let ia = a.issuer().to_owned();
        let good = || claims(&ia, AUD, "victim");
        let sign = |header: &[(&str, Value)], cl: &Map<String, Value>| mint(&ka, header, cl);
        let now = now_secs();
        let header_a = |extra: &str| format!(r#"{{"typ":"oauth-id-jag+jwt","alg":"ES256","kid":"k1"{extra}}}"#);
        let valid = sign(&[], &good());
        let (vh, vp, vs) = {
            let mut it = valid.split('.');
            (it.next().unwrap_or_default().to_owned(), it.next().unwrap_or_default().to_owned(), it.next().unwrap_or_default().to_owned())
        };
        let hmac_with_public_key = {
            let header = r#"{"typ":"oauth-id-jag+jwt","alg":"HS256","kid":"k1"}"#;
            let input = format!("{}.{}", b64::encode(header), b64::encode(j(&good())));
            let secret = ka.public_jwk().to_string();
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
            format!("{input}.{}", b64::encode(aws_lc_rs::hmac::sign(&k, input.as_bytes())))
        };
        let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d".to_owned();

        let s400 = 400u16;
        let mut cases: Vec<(&str, String, u16, &str)> = vec![
            ("J1 alg none", raw_token(r#"{"typ":"oauth-id-jag+jwt","alg":"none","kid":"k1"}"#, &j(&good()), b""), s400, "invalid_signature"),
            ("J2 alg None", sign(&[("alg", "None".into())], &good()), s400, "invalid_signature"),
            ("J2 alg NONE", sign(&[("alg", "NONE".into())], &good()), s400, "invalid_signature"),
            ("J2 alg nOnE", sign(&[("alg", "nOnE".into())], &good()), s400, "invalid_signature"),
            ("J3 no alg", sign_raw(&ka, r#"{"typ":"oauth-id-jag+jwt","kid":"k1"}"#, &j(&good())), s400, "invalid_signature"),
            ("J4 HS256 keyed with the public key", hmac_with_public_key, s400, "invalid_signature"),
            ("J5 RS256 where only ES256 is allowed", mint(&kc_rsa, &[], &claims(c.issuer(), AUD, "v")), s400, "invalid_signature"),
            ("J6 ES256 naming an RSA key", sign_raw(&ka, r#"{"typ":"oauth-id-jag+jwt","alg":"ES256","kid":"rsa1"}"#, &j(&good())), s400, "invalid_signature"),
            ("J7 iss A signed with B's key (same kid)", mint(&kb, &[], &good()), s400, "invalid_signature"),
            ("J8 flipped signature byte", {
                let mut sig = b64::decode(&vs).unwrap_or_default();
                sig[10] ^= 0x01;
                format!("{vh}.{vp}.{}", b64::encode(sig))
            }, s400, "invalid_signature"),
            ("J8 truncated signature", format!("{vh}.{vp}.{}", &vs[..20]), s400, "invalid_signature"),
            ("J8 empty signature", format!("{vh}.{vp}."), s400, "invalid_signature"),
            ("J9 payload changed after signing", format!("{vh}.{}.{vs}", b64::encode(j(&with(good(), "sub", "admin".into())))), s400, "invalid_signature"),
            ("J10 typ missing", sign_raw(&ka, r#"{"alg":"ES256","kid":"k1"}"#, &j(&good())), s400, "invalid_request"),
            ("J11 typ JWT", sign(&[("typ", "JWT".into())], &good()), s400, "invalid_request"),
            ("J12 typ at+jwt", sign(&[("typ", "at+jwt".into())], &good()), s400, "invalid_request"),
            ("J12 typ logout+jwt", sign(&[("typ", "logout+jwt".into())], &good()), s400, "invalid_request"),
            ("J12 typ secevent+jwt", sign(&[("typ", "secevent+jwt".into())], &good()), s400, "invalid_request"),
            ("J12 typ dpop+jwt", sign(&[("typ", "dpop+jwt".into())], &good()), s400, "invalid_request"),
            ("J13 an ID token", sign_raw(&ka, r#"{"alg":"ES256","kid":"k1"}"#, &j(&with(with(good(), "aud", "client-1".into()), "nonce", "n".into()))), s400, "invalid_request"),
            ("J14 typ with trailing space", sign(&[("typ", "oauth-id-jag+jwt ".into())], &good()), s400, "invalid_request"),
            ("J14 typ with parameter", sign(&[("typ", "oauth-id-jag+jwt;v=1".into())], &good()), s400, "invalid_request"),
            ("J14 typ prefixed", sign(&[("typ", "x-oauth-id-jag+jwt".into())], &good()), s400, "invalid_request"),
            ("J15 expired beyond skew", sign(&[], &with(with(good(), "iat", (now - 600).into()), "exp", (now - 120).into())), s400, "expired"),
            ("J16 exp missing", sign(&[], &without(good(), "exp")), s400, "expired"),
            ("J17 exp as a string", sign(&[], &with(good(), "exp", "4102444800".into())), s400, "expired"),
            ("J17 exp negative", sign(&[], &with(good(), "exp", (-1).into())), s400, "expired"),
            ("J17 exp an object", sign(&[], &with(good(), "exp", json!({"t": 1}))), s400, "expired"),
            ("J17 exp 1e400", sign_raw(&ka, &header_a(""), &j(&good()).replacen("\"exp\":", "\"exp\":1e400,\"x\":", 1)), s400, "invalid_request"),
            ("J18 exp a year away", sign(&[], &with(good(), "exp", (now + 365 * 86_400).into())), s400, "invalid_request"),
            ("J19 nbf in the future", sign(&[], &with(good(), "nbf", (now + 600).into())), s400, "invalid_request"),
            ("J19 nbf not a number", sign(&[], &with(good(), "nbf", "soon".into())), s400, "invalid_request"),
            ("J20 iat in the future", sign(&[], &with(with(good(), "iat", (now + 3600).into()), "exp", (now + 3700).into())), s400, "invalid_request"),
            ("J21 iat missing", sign(&[], &without(good(), "iat")), s400, "invalid_request"),
            ("J22 aud another AS", sign(&[], &with(good(), "aud", "https://other.example".into())), s400, "invalid_audience"),
            ("J23 aud ours plus another", sign(&[], &with(good(), "aud", json!([AUD, "https://other.example"]))), s400, "invalid_audience"),
            ("J24 aud [other]", sign(&[], &with(good(), "aud", json!(["https://other.example"]))), s400, "invalid_audience"),
            ("J24 aud []", sign(&[], &with(good(), "aud", json!([]))), s400, "invalid_audience"),
            ("J24 aud null", sign(&[], &with(good(), "aud", Value::Null)), s400, "invalid_audience"),
            ("J24 aud 123", sign(&[], &with(good(), "aud", 123.into())), s400, "invalid_audience"),
            ("J25 aud with trailing slash", sign(&[], &with(good(), "aud", format!("{AUD}/").into())), s400, "invalid_audience"),
            ("J25 aud upper-case scheme", sign(&[], &with(good(), "aud", "HTTP://127.0.0.1:8080".into())), s400, "invalid_audience"),
            ("J25 aud https", sign(&[], &with(good(), "aud", "https://127.0.0.1:8080".into())), s400, "invalid_audience"),
            ("J25 aud without port", sign(&[], &with(good(), "aud", "http://127.0.0.1".into())), s400, "invalid_audience"),
            ("J26 aud the resource", sign(&[], &with(good(), "aud", "http://127.0.0.1:8080/api/".into())), s400, "invalid_audience"),
            ("J26 aud the endpoint", sign(&[], &with(good(), "aud", "http://127.0.0.1:8080/agent/auth".into())), s400, "invalid_audience"),
            ("J27 aud missing", sign(&[], &without(good(), "aud")), s400, "invalid_audience"),
            ("J28 untrusted issuer with a reachable JWKS", mint(&evil, &[], &claims(attacker.issuer(), AUD, "v")), s400, "invalid_issuer"),
            ("J29 iss with trailing slash", sign(&[], &with(good(), "iss", format!("{ia}/").into())), s400, "invalid_issuer"),
            ("J29 iss in other case", sign(&[], &with(good(), "iss", ia.to_uppercase().into())), s400, "invalid_issuer"),
            ("J30 iss is this service", sign(&[], &with(good(), "iss", AUD.into())), s400, "invalid_issuer"),
            ("J31 sub missing", sign(&[], &without(good(), "sub")), s400, "invalid_request"),
            ("J31 sub empty", sign(&[], &with(good(), "sub", "".into())), s400, "invalid_request"),
            ("J31 sub a number", sign(&[], &with(good(), "sub", 42.into())), s400, "invalid_request"),
            ("J31 sub an object", sign(&[], &with(good(), "sub", json!({"id": 1}))), s400, "invalid_request"),
            ("J31 sub 256 bytes", sign(&[], &with(good(), "sub", "s".repeat(256).into())), s400, "invalid_request"),
            ("J31 sub with a control character", sign(&[], &with(good(), "sub", "a\u{1b}[2Jb".into())), s400, "invalid_request"),
            ("J32 client_id missing", sign(&[], &without(good(), "client_id")), s400, "invalid_request"),
            ("J33 client_id of another origin", sign(&[], &with(good(), "client_id", "https://evil.example/agent".into())), s400, "invalid_client_id"),
            ("J33 client_id on another port", sign(&[], &with(good(), "client_id", "http://127.0.0.1:1/agent".into())), s400, "invalid_client_id"),
            ("J34 jti missing", sign(&[], &without(good(), "jti")), s400, "invalid_request"),
            ("J37 kid path traversal", sign(&[("kid", "../../../../dev/null".into())], &good()), s400, "invalid_signature"),
            ("J37 kid SQL", sign(&[("kid", "' OR '1'='1".into())], &good()), s400, "invalid_signature"),
            ("J37 kid NUL", sign(&[("kid", "\u{0}".into())], &good()), s400, "invalid_signature"),
            ("J37 kid 10 KB", sign(&[("kid", "k".repeat(10_000).into())], &good()), s400, "invalid_signature"),
            ("J37 kid empty", sign(&[("kid", "".into())], &good()), s400, "invalid_signature"),
            ("J37 kid missing", sign_raw(&ka, r#"{"typ":"oauth-id-jag+jwt","alg":"ES256"}"#, &j(&good())), s400, "invalid_signature"),
            ("J38 jku to an attacker JWKS", mint(&evil, &[("jku", format!("{}/.well-known/jwks.json", canary.issuer()).into())], &good()), s400, "invalid_signature"),
            ("J39 x5u to localhost", mint(&evil, &[("x5u", format!("{}/cert.pem", canary.issuer()).into())], &good()), s400, "invalid_signature"),
            ("J39 jku to the metadata service", mint(&evil, &[("jku", "http://169.254.169.254/latest/jwks".into())], &good()), s400, "invalid_signature"),
            ("J40 embedded jwk", mint(&evil, &[("jwk", evil.public_jwk())], &good()), s400, "invalid_signature"),
            ("J41 x5c self-signed", mint(&evil, &[("x5c", json!(["MIIBszCCAVmgAwIBAgIUJ"]))], &good()), s400, "invalid_signature"),
            ("J42 crit unknown", sign(&[("crit", json!(["http://example.invalid/UNDEFINED"])), ("http://example.invalid/UNDEFINED", true.into())], &good()), s400, "invalid_signature"),
            ("J42 crit empty", sign(&[("crit", json!([]))], &good()), s400, "invalid_signature"),
            ("J42 crit registered name", sign(&[("crit", json!(["exp"]))], &good()), s400, "invalid_signature"),
            ("J43 duplicate alg", sign_raw(&ka, r#"{"typ":"oauth-id-jag+jwt","alg":"ES256","kid":"k1","alg":"none"}"#, &j(&good())), s400, "invalid_request"),
            ("J43 duplicate typ", sign_raw(&ka, r#"{"typ":"oauth-id-jag+jwt","alg":"ES256","kid":"k1","typ":"JWT"}"#, &j(&good())), s400, "invalid_request"),
            ("J44 duplicate aud", sign_raw(&ka, &header_a(""), &j(&good()).replacen('{', "{\"aud\":\"https://other.example\",", 1)), s400, "invalid_request"),
            ("J44 duplicate sub", sign_raw(&ka, &header_a(""), &j(&good()).replacen('{', "{\"sub\":\"admin\",", 1)), s400, "invalid_request"),
            ("J45 JWE", jwe, s400, "invalid_request"),
            ("J46 JSON serialization", json!({"payload": vp, "signatures": [{"protected": vh, "signature": vs}]}).to_string(), s400, "invalid_request"),
            ("J46 flattened JSON", json!({"payload": vp, "protected": vh, "signature": vs}).to_string(), s400, "invalid_request"),
            ("J47 two segments", format!("{vh}.{vp}"), s400, "invalid_request"),
            ("J47 four segments", format!("{vh}.{vp}.{vs}.x"), s400, "invalid_request"),
            ("J47 trailing dot", format!("{valid}."), s400, "invalid_request"),
            ("J47 leading space", format!(" {valid}"), s400, "invalid_request"),
            ("J47 trailing newline", format!("{valid}\n"), s400, "invalid_request"),
            ("J47 embedded newline", format!("{vh}.\n{vp}.{vs}"), s400, "invalid_request"),
            ("J47 padding", format!("{vh}=.{vp}.{vs}"), s400, "invalid_request"),
            ("J47 standard alphabet", format!("{vh}.{vp}.{}", vs.replace('-', "+").replace('_', "/")), if vs.contains(['-', '_']) { s400 } else { 0 }, "invalid_request"),
            ("J47 percent-encoded", valid.replace('.', "%2E"), s400, "invalid_request"),
            ("J48 payload not UTF-8", format!("{vh}.{}.{vs}", b64::encode([0xc3, 0x28])), s400, "invalid_request"),
            ("J48 UTF-16 header", format!("{}.{vp}.{vs}", b64::encode(header_a("").encode_utf16().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>())), s400, "invalid_request"),
            ("J48 BOM", format!("{}.{vp}.{vs}", b64::encode([&[0xef, 0xbb, 0xbf][..], header_a("").as_bytes()].concat())), s400, "invalid_request"),
            ("J49 trailing garbage", sign_raw(&ka, &header_a(""), &format!("{}x", j(&good()))), s400, "invalid_request"),
            ("J49 top-level array", sign_raw(&ka, &header_a(""), "[1,2]"), s400, "invalid_request"),
            ("J49 top-level string", sign_raw(&ka, &header_a(""), "\"claims\""), s400, "invalid_request"),
            ("J49 comments", sign_raw(&ka, &header_a(""), &j(&good()).replacen('{', "{/*x*/", 1)), s400, "invalid_request"),
            ("J50 17 KiB assertion", sign(&[], &with(good(), "pad", "p".repeat(17 * 1024).into())), s400, "invalid_request"),
            ("J51 deep nesting", sign_raw(&ka, &header_a(""), &j(&good()).replacen('{', &format!("{{\"deep\":{}1{},", "[".repeat(3000), "]".repeat(3000)), 1)), s400, "invalid_request"),
            ("J51 huge aud array", sign(&[], &with(good(), "aud", Value::Array(vec![AUD.into(); 300]))), s400, "invalid_audience"),
            ("J52 email_verified \"true\"", sign(&[], &with(good(), "email_verified", "true".into())), s400, "missing_verified_email"),
            ("J52 email_verified \"yes\"", sign(&[], &with(good(), "email_verified", "yes".into())), s400, "missing_verified_email"),
            ("J52 email_verified 1", sign(&[], &with(good(), "email_verified", 1.into())), s400, "missing_verified_email"),
            ("J52 email_verified false", sign(&[], &with(good(), "email_verified", false.into())), s400, "missing_verified_email"),
            ("J55 cnf without proof of possession", sign(&[], &with(good(), "cnf", json!({"jkt": "abc"}))), s400, "invalid_request"),
            ("J64 iss with U+202E", sign(&[], &with(good(), "iss", format!("{ia}\u{202e}").into())), s400, "invalid_issuer"),
            ("J64 aud with NUL", sign(&[], &with(good(), "aud", format!("{AUD}\u{0}").into())), s400, "invalid_audience"),
            ("J64 aud NFD look-alike", sign(&[], &with(good(), "aud", "http://127.0.0.1:8080\u{301}".into())), s400, "invalid_audience"),
        ];
        cases.retain(|c| c.2 != 0);
        assert!(cases.len() > 100, "the catalogue shrank");
        for (name, assertion, status, code) in &cases {
            let r = t.post_json("/agent/auth", &body(assertion, "api_key")).await;
            assert!(r.status.as_u16() < 500, "{name}: {} {}", r.status, r.text());
            assert_eq!((r.status.as_u16(), r.code().as_str()), (*status, *code), "{name}: {}", r.text());
            let s = t.stats().await;
            assert_eq!((s.registrations, s.credentials), (0, 0), "{name} created something");
        }
        // No header ever made authmd fetch anything.
        assert_eq!(canary.hits(), 0, "jku/x5u/jwk were followed");
        assert_eq!(attacker.hits(), 0, "an untrusted issuer's JWKS was fetched");
        assert_eq!(t.rejected_count().await, cases.len() as u64);

        // Non-string and missing fields of the request itself.
        for req in [
            json!({"type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag", "requested_credential_type": "api_key"}),
            json!({"type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag", "assertion": valid}),
            json!({"type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag", "assertion": 7, "requested_credential_type": "api_key"}),
        ] {
            let r = t.post_json("/agent/auth", &req.to_string()).await;
            assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_request".into()), "{req}");
        }
        // J50: a huge request body is refused before parsing.
        let huge = body(&"a".repeat(1 << 20), "api_key");
        assert_eq!(t.post_json("/agent/auth", &huge).await.status, 413);
        // And the good one still works afterwards: nothing was spent.
        assert_eq!(t.post_json("/agent/auth", &body(&valid, "api_key")).await.status, 200);
    }
}
