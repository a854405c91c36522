//! Any string as an ID-JAG: parsing and steps 1-4 must refuse it cleanly
//! (no panic, no hang), whatever it is.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = common::fixture();
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = f.runtime.block_on(f.verifier.verify(s, authmd::Timestamp::now()));
    }
});
