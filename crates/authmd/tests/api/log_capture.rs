//! Every log line the API tests produce, checked against every secret they
//! were issued (issue 17: "a test greps every log line produced by the
//! whole API test suite for the secrets it issued and finds none").
//!
//! The harness installs one process-wide subscriber (`init`, called by
//! `TestDb::new` and every request), at `info` and `authmd=trace`, that
//! hands each formatted line here. Secrets are learnt from what the server
//! answers through the harness (`TestApp::send_from`) and from the mail it
//! sends (`TestApp::mails`): every `amd_sk_`, `amd_at_`, `clm_` and `cvt_`
//! token in a body, a header or a message. A line and a secret are compared
//! by every 32-character window of their letters-and-digits runs (a secret's
//! body is 60 such characters, of which 32 are the random verifier; no id
//! is longer than 22), so a secret logged whole, in part, or inside other
//! text is found, whichever came first: the line or the response. A leak
//! fails the next request or mail check of whatever test runs then, naming
//! the line; `every_log_line_of_the_suite_is_free_of_issued_secrets` also
//! checks at the end of its own flows.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Characters compared at once.
const WINDOW: usize = 32;

/// The prefixes of the secrets authmd issues (`token.rs`).
const SECRET_PREFIXES: [&str; 6] = ["amd_sk_", "amd_at_", "clm_", "cvt_", "sgn_", "amd_rt_"];

#[derive(Default)]
struct State {
    /// Windows of issued secrets.
    secrets: HashSet<String>,
    /// Windows seen in log lines, with the line they came from.
    logged: std::collections::HashMap<String, usize>,
    lines: Vec<String>,
    leaks: Vec<String>,
    installed: bool,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The windows of `text`: every `WINDOW`-long slice of each run of ASCII
/// letters and digits at least that long.
fn windows(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| run.len() >= WINDOW)
        .flat_map(|run| (0..=run.len() - WINDOW).map(move |i| &run[i..i + WINDOW]))
}

/// Installs the capturing subscriber (once per process).
pub fn init() {
    {
        let mut s = state();
        if s.installed {
            return;
        }
        s.installed = true;
    }
    let filter = tracing_subscriber::EnvFilter::new("info,authmd=trace");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| Line(Vec::new()))
        .try_init();
}

/// One formatted event; examined when the formatter drops it.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0).into_owned();
        if std::env::var_os("AUTHMD_TEST_LOG").is_some() {
            eprint!("{text}");
        }
        let mut s = state();
        let n = s.lines.len();
        let mut leaked = false;
        for w in windows(&text) {
            leaked |= s.secrets.contains(w);
            s.logged.entry(w.to_owned()).or_insert(n);
        }
        if leaked {
            s.leaks.push(text.clone());
        }
        s.lines.push(text);
    }
}

/// Learns the secrets in `text` (a response or a message).
pub fn issued(text: &str) {
    if !SECRET_PREFIXES.iter().any(|p| text.contains(p)) {
        return;
    }
    let mut s = state();
    for prefix in SECRET_PREFIXES {
        for (at, _) in text.match_indices(prefix) {
            let body: String = text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            for w in windows(&body) {
                if let Some(&line) = s.logged.get(w) {
                    let leak = s.lines[line].clone();
                    s.leaks.push(leak);
                }
                s.secrets.insert(w.to_owned());
            }
        }
    }
}

/// Fails if any line logged so far carries a secret issued so far.
pub fn assert_no_leak() {
    let s = state();
    assert!(
        s.leaks.is_empty(),
        "an issued secret was logged:\n{}",
        s.leaks.join("\n")
    );
}

/// Every captured line containing `needle`.
pub fn lines_with(needle: &str) -> Vec<String> {
    state()
        .lines
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// How many lines and secrets were compared so far.
pub fn counts() -> (usize, usize) {
    let s = state();
    (s.lines.len(), s.secrets.len())
}

#[tokio::test]
async fn every_log_line_of_the_suite_is_free_of_issued_secrets() {
    use crate::support::{Backend, TestApp};
    init();
    // The detector detects: a line carrying a secret is caught whether it
    // comes before or after the secret is learnt.
    let fake = format!("amd_sk_{}", "Ab1".repeat(20));
    issued(&format!("{{\"credential\":\"{fake}\"}}"));
    assert!(windows(&format!("x {fake} y")).any(|w| state().secrets.contains(w)));
    // A full flow of this test's own: every kind of secret, logged at trace.
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t.register_anonymous().await;
    let key = r["credential"].as_str().unwrap_or_default().to_owned();
    assert!(key.starts_with("amd_sk_"));
    let who = t.get("/api/whoami", Some(&key)).await;
    assert_eq!(who.status, 200);
    let bad = t.get("/api/whoami", Some(&format!("{key}x"))).await;
    assert_eq!(bad.status, 401);
    let (lines, secrets) = counts();
    assert!(
        lines > 0 && secrets > 0,
        "{lines} lines, {secrets} secret windows"
    );
    assert_no_leak();
}
