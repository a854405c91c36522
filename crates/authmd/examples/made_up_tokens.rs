//! Prints well-formed API keys that were never issued, one a line: the
//! garbage of `scripts/load-unknown.sh`. The checksum is public, so anyone
//! can make these; each passes recognition and costs a lookup.
//!
//! ```sh
//! cargo run --release -p authmd --example made_up_tokens -- 100000 > junk.txt
//! ```

use authmd::token::{PlainSecret, SecretKind, new_id};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut out = String::with_capacity(n * 70);
    for _ in 0..n {
        out.push_str(PlainSecret::generate(SecretKind::ApiKey, &new_id("crd_")).expose());
        out.push('\n');
    }
    print!("{out}");
}
