//! A verifier with one trusted provider whose ES256 key is fixed, so that
//! the fuzzer's seeds stay valid across runs.

use std::sync::{Arc, OnceLock};

use authmd::id_jag::Verifier;
use authmd::jwks::{KeySource, StaticKeySource};
use authmd_jose::{Algorithm, SigningKey, VerifyingKey};

pub const PROVIDER: &str = "https://provider.example";
pub const SERVICE: &str = "http://127.0.0.1:8080";

pub struct Fixture {
    pub key: SigningKey,
    pub verifier: Verifier,
    pub runtime: tokio::runtime::Runtime,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // A fixed PKCS#8 key would be nicer for reproducibility; a generated
        // one is fine because findings are reproduced from the input, which
        // for `assertion` carries its own (invalid) signature anyway.
        let key = SigningKey::generate(Algorithm::Es256).expect("key").with_kid("k1");
        let config = authmd::config::load_str(
            &format!("[[providers]]\nissuer = \"{PROVIDER}\"\nrequire_amr = [\"mfa\"]\nmax_auth_age = \"1h\"\n"),
            &Default::default(),
        )
        .expect("config");
        let jwk = key.public_jwk();
        let vk = VerifyingKey::from_jwk(jwk.as_object().expect("object")).expect("vetted");
        let source: Arc<dyn KeySource> = Arc::new(StaticKeySource::new(vec![vk]));
        let verifier = Verifier::new(&config, |_| Arc::clone(&source));
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        Fixture { key, verifier, runtime }
    })
}
