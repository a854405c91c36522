//! ID-JAG verification per algorithm, next to the raw signature check.
//!
//! `cargo bench -p authmd --bench id_jag`
//!
//! - `raw/<alg>`: only the signature verification with a parsed public key
//!   (the floor: what the crypto library costs);
//! - `verify/<alg>`: steps 1 to 11 of docs/protocol.md §3.3 (parsing, typ,
//!   trust list, key lookup, signature, every claim check).

use std::collections::HashMap;
use std::sync::Arc;

use authmd::Timestamp;
use authmd::id_jag::Verifier;
use authmd::jwks::{KeySource, StaticKeySource};
use authmd_jose::{Algorithm, Compact, SigningKey, VerifyingKey, jws};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const PROVIDER: &str = "https://provider.example";

fn bench(c: &mut Criterion) {
    let config = authmd::config::load_str(
        &format!("[[providers]]\nissuer = \"{PROVIDER}\"\n"),
        &Default::default(),
    )
    .expect("config");
    let keys: HashMap<Algorithm, SigningKey> = Algorithm::ALL
        .into_iter()
        .map(|a| (a, SigningKey::generate(a).expect("key").with_kid(a.name())))
        .collect();
    let public = || {
        keys.values()
            .map(|k| {
                VerifyingKey::from_jwk(k.public_jwk().as_object().expect("jwk")).expect("vetted")
            })
            .collect::<Vec<_>>()
    };
    let verifier = Verifier::new(&config, |_| {
        Arc::new(StaticKeySource::new(public())) as Arc<dyn KeySource>
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let now = Timestamp::now();
    for alg in Algorithm::ALL {
        let key = &keys[&alg];
        let claims = json!({
            "iss": PROVIDER, "sub": "user-1", "aud": "http://127.0.0.1:8080",
            "client_id": format!("{PROVIDER}/agent"), "jti": "j-1",
            "iat": now.as_secs(), "exp": now.as_secs() + 600,
            "email": "user@example.com", "email_verified": true,
        });
        let token = jws::sign(
            key,
            json!({"typ": "oauth-id-jag+jwt"})
                .as_object()
                .expect("header"),
            claims.as_object().expect("claims"),
        )
        .expect("sign");
        let parsed = Compact::parse(&token, 16 * 1024).expect("parse");
        let vk =
            VerifyingKey::from_jwk(key.public_jwk().as_object().expect("jwk")).expect("vetted");
        c.bench_function(&format!("raw/{alg}"), |b| {
            b.iter(|| assert!(vk.verify(alg, parsed.signing_input(), &parsed.signature)))
        });
        c.bench_function(&format!("verify/{alg}"), |b| {
            b.iter(|| rt.block_on(verifier.verify(&token, now)).expect("valid"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
