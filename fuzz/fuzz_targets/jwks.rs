//! Any bytes as a JWKS document: vetting must never panic, and every key it
//! keeps must have a kid.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = authmd_jose::jwk::KeySet::parse(data) {
        for k in &set.keys {
            assert!(!k.kid.is_empty());
        }
    }
});
