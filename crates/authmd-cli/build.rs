//! Tells the integration tests whether PostgreSQL is there to test
//! against (as `crates/authmd/build.rs` does for the library's tests):
//! `authmd_no_postgres` when `TEST_POSTGRES_URL` is unset or empty, unless
//! `REQUIRE_POSTGRES=1` (`.ci/run`), which turns a missing server into a
//! failure instead of an ignored test.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(authmd_no_postgres)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=REQUIRE_POSTGRES");
    let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0");
    if !set("TEST_POSTGRES_URL") && !set("REQUIRE_POSTGRES") {
        println!("cargo::rustc-cfg=authmd_no_postgres");
    }
}
