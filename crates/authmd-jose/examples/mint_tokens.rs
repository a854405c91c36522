//! Load-test material for agent-verified registration: a provider key, its
//! JWKS, and N distinct ID-JAG registration bodies (one JSON per line).
//!
//! cargo run --release -p authmd-jose --example mint_tokens -- \
//!     N PROVIDER_ISSUER SERVICE_ISSUER OUT_DIR [ALG] [USERS]
//!
//! Writes OUT_DIR/.well-known/jwks.json (serve OUT_DIR at PROVIDER_ISSUER)
//! and OUT_DIR/bodies.txt. ALG is ES256 (default), RS256, PS256 or EdDSA.
//! Subjects cycle through USERS users (default 1000), so the run exercises
//! repeat delegations as well as new jti values; USERS = N makes every
//! registration a new user.

use std::io::Write;

use authmd_jose::{Algorithm, SigningKey, jws};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: mint_tokens N PROVIDER_ISSUER SERVICE_ISSUER OUT_DIR [ALG] [USERS]";
    let (n, provider, service, out, rest) = match args.as_slice() {
        [_, n, provider, service, out, rest @ ..] if rest.len() <= 2 => {
            (n, provider, service, out, rest)
        }
        _ => return Err(usage.into()),
    };
    let n: usize = n.parse()?;
    let alg = match rest.first() {
        Some(name) => Algorithm::from_name(name).ok_or(usage)?,
        None => Algorithm::Es256,
    };
    let users: usize = rest.get(1).map_or(Ok(1000), |u| u.parse())?.max(1);
    let key = SigningKey::generate(alg)?.with_kid("load-1");
    let dir = std::path::Path::new(out);
    std::fs::create_dir_all(dir.join(".well-known"))?;
    std::fs::write(
        dir.join(".well-known/jwks.json"),
        json!({"keys": [key.public_jwk()]}).to_string(),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = json!({"typ": "oauth-id-jag+jwt"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("bodies.txt"))?);
    for i in 0..n {
        let user = i % users;
        let claims = json!({
            "iss": provider, "sub": format!("user-{user}"), "aud": service,
            "client_id": format!("{provider}/agent"), "jti": format!("load-{now}-{i}"),
            "iat": now, "exp": now + 600, "auth_time": now,
            "email": format!("user-{user}@example.com"), "email_verified": true,
        });
        let token = jws::sign(
            &key,
            &header,
            claims.as_object().unwrap_or(&Default::default()),
        )?;
        let body = json!({
            "type": "identity_assertion",
            "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
            "assertion": token,
            "requested_credential_type": "access_token",
        });
        writeln!(out, "{body}")?;
    }
    out.flush()?;
    Ok(())
}
