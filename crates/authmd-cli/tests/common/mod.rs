//! What `cli.rs` and `e2e.rs` share: a free port, and the binary.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The binary, run in `dir`, with a clean environment (no AUTHMD_* from the
/// caller).
pub fn authmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_authmd"));
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTHMD_") {
            c.env_remove(k);
        }
    }
    c
}
