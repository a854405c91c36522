//! Arbitrary header and payload bytes, correctly signed by the trusted
//! provider's key: every step after the signature (times, audience,
//! identifiers, client, verified email, amr/auth_time) sees fuzzed input.
//! Input: header bytes, 0xFF, payload bytes.
#![no_main]

#[path = "common.rs"]
mod common;

use authmd_jose::b64;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    let (header, payload) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&br#"{"typ":"oauth-id-jag+jwt","alg":"ES256","kid":"k1"}"#[..], data),
    };
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let Ok(sig) = f.key.sign(input.as_bytes()) else { return };
    let token = format!("{input}.{}", b64::encode(sig));
    if let Ok(v) = f.runtime.block_on(f.verifier.verify(&token, authmd::Timestamp::now())) {
        // Whatever passed must satisfy the table's invariants.
        assert_eq!(v.iss, common::PROVIDER);
        assert_eq!(v.aud, common::SERVICE);
        assert!(!v.sub.is_empty() && v.sub.len() <= 255);
        assert!(!v.jti.is_empty() && v.jti.len() <= 255);
        assert!(v.email_verified || v.phone_number_verified);
    }
});
