//! Tells the integration tests which real components they cannot reach
//! here, so that a test that cannot run is reported by `cargo test` as
//! ignored, with its reason, instead of passing without having run.
//!
//! - `authmd_no_postgres`: `TEST_POSTGRES_URL` is unset or empty. The
//!   PostgreSQL half of every `both_backends!` test is then ignored.
//! - `authmd_no_browser`: `/usr/bin/chromium` or `/usr/bin/chromedriver`
//!   is missing. The claim-page browser tests are then ignored.
//! - `authmd_no_nginx`: no nginx binary. The test that runs the shipped
//!   nginx configuration is then ignored.
//!
//! `REQUIRE_POSTGRES=1`, `REQUIRE_BROWSER=1` and `REQUIRE_NGINX=1` (set by
//! `.ci/run`) keep the
//! tests in: a missing component is then a failure, never a skip. The lib
//! itself never reads these cfgs.

use std::path::Path;

const BROWSER: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
/// Where nginx is looked for (`tests/api/nginx.rs` uses the first found).
const NGINX: [&str; 3] = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(authmd_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(authmd_no_browser)");
    println!("cargo::rustc-check-cfg=cfg(authmd_no_nginx)");
    println!("cargo::rerun-if-changed=build.rs");
    for var in [
        "TEST_POSTGRES_URL",
        "REQUIRE_POSTGRES",
        "REQUIRE_BROWSER",
        "REQUIRE_NGINX",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let required = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0");
    let postgres = std::env::var_os("TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty());
    if !postgres && !required("REQUIRE_POSTGRES") {
        println!("cargo::rustc-cfg=authmd_no_postgres");
    }

    let browser = Path::new(BROWSER).exists() && Path::new(DRIVER).exists();
    if browser {
        // Rerun if either is removed (a missing file counts as changed).
        println!("cargo::rerun-if-changed={BROWSER}");
        println!("cargo::rerun-if-changed={DRIVER}");
    } else {
        // Watching a missing file would rerun this script on every build;
        // the directory they are installed into changes when they are.
        println!("cargo::rerun-if-changed=/usr/bin");
        if !required("REQUIRE_BROWSER") {
            println!("cargo::rustc-cfg=authmd_no_browser");
        }
    }

    if !NGINX.iter().any(|p| Path::new(p).exists()) {
        println!("cargo::rerun-if-changed=/usr/sbin");
        if !required("REQUIRE_NGINX") {
            println!("cargo::rustc-cfg=authmd_no_nginx");
        }
    }
}
