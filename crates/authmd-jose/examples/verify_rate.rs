//! The raw signature verification rate of this machine's core with the
//! library authmd verifies with (aws-lc, through `VerifyingKey`): one key,
//! one token, verified over and over. The load scripts print it beside
//! `openssl speed`, whose figure is a different implementation's and has
//! been seen to move by half between days on the same kind of machine.
//!
//! cargo run --release -p authmd-jose --example verify_rate -- [SECONDS] [ALG]
//!
//! Prints verifications per second. ALG is ES256 (default), RS256, PS256 or
//! EdDSA; SECONDS (more than 0, at most 3600) defaults to 2.

use std::time::{Duration, Instant};

use authmd_jose::{Algorithm, Compact, SigningKey, VerifyingKey, jws};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: verify_rate [SECONDS] [ALG]";
    let secs: f64 = args.get(1).map_or(Ok(2.0), |s| s.parse())?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(usage.into());
    }
    let alg = match args.get(2) {
        Some(name) => Algorithm::from_name(name).ok_or(usage)?,
        None => Algorithm::Es256,
    };
    let key = SigningKey::generate(alg)?.with_kid("rate");
    let header = json!({"typ": "oauth-id-jag+jwt"});
    let claims = json!({"iss": "https://provider.example", "sub": "user-1", "jti": "j-1"});
    let token = jws::sign(
        &key,
        header.as_object().ok_or(usage)?,
        claims.as_object().ok_or(usage)?,
    )?;
    let parsed = Compact::parse(&token, 16 * 1024)?;
    let public = key.public_jwk();
    let vk = VerifyingKey::from_jwk(public.as_object().ok_or(usage)?)?;
    let until = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < until {
        for _ in 0..64 {
            if !vk.verify(alg, parsed.signing_input(), &parsed.signature) {
                return Err("a valid signature did not verify".into());
            }
        }
        n += 64;
    }
    println!("{:.1}", n as f64 / start.elapsed().as_secs_f64());
    Ok(())
}
