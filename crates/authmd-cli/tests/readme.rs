//! The README's walk-throughs, run as a newcomer pastes them.
//!
//! **Which blocks run.** Every fenced block whose info string is exactly
//! `sh` is a walk-through: it must work pasted whole into a shell from a
//! clean clone, in any order, and this test runs it. Blocks of any other
//! language never run: `console` (commands shown with a `$` prompt that
//! cannot run here, such as the server in the foreground, the test suite
//! itself, fuzzing), `text`, `toml`, `http`, `rust`, … So a command that is
//! meant to be pasted but cannot run unattended goes in a `console` block.
//!
//! **How they run.** In README order, one `bash -e -o pipefail` per block
//! (so a failing command fails the block, as it would be visible to a
//! reader), all in one fresh directory standing in for the clone (it holds
//! `.gitignore` and `authmd.example.toml`, committed to a fresh git
//! repository), with a clean environment and:
//!
//! - `cargo` on `PATH` is a stand-in: `cargo build …` does nothing (the
//!   binary under test is built already) and `cargo run … -- ARGS` runs
//!   `authmd ARGS`; any other use fails. `CARGO_TARGET_DIR` names a
//!   directory whose `debug/authmd` is the binary under test, so a block's
//!   `export PATH="${CARGO_TARGET_DIR:-$PWD/target}/debug:$PATH"` finds it;
//! - every `127.0.0.1:PORT` in a block is rewritten to a free port (one per
//!   distinct number), and `AUTHMD_LISTEN` / `AUTHMD_PROVIDER_ISSUER` pin
//!   the defaults (8080, 9090) to free ports too, so the blocks never meet
//!   a server someone else runs on this machine;
//! - each block runs in a process group of its own, with a time limit. A
//!   block must stop what it started: processes still running a few
//!   seconds after it ends fail the test (and are killed).
//!
//! Afterwards `git status` in the directory must show nothing: whatever the
//! walk-throughs leave behind is covered by `.gitignore`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod common;
use common::free_port;

/// Longest a walk-through may take.
const BLOCK_TIME_LIMIT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `sh` blocks of a markdown text, with the line each starts on.
fn sh_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```") => {
                let info = fence.trim_start_matches('`').trim().to_owned();
                current = Some((i + 1, info, String::new()));
            }
            None => {}
            Some((start, info, body)) => {
                if fence.starts_with("```") {
                    if info == "sh" {
                        blocks.push((*start, std::mem::take(body)));
                    }
                    current = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "README.md has an unclosed code block");
    blocks
}

/// Rewrites every `127.0.0.1:PORT` through `ports`, choosing a free port
/// for each number not seen yet.
fn rewrite_ports(block: &str, ports: &mut BTreeMap<u16, u16>) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::with_capacity(block.len());
    let mut rest = block;
    while let Some(at) = rest.find(HOST) {
        out.push_str(&rest[..at + HOST.len()]);
        rest = &rest[at + HOST.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(port) = rest[..digits].parse::<u16>() {
            let free = *ports.entry(port).or_insert_with(free_port);
            out.push_str(&free.to_string());
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

/// The stand-in for `cargo` (see the module doc).
const CARGO_SHIM: &str = r#"#!/bin/sh
# The README test's cargo: the binary under test is already built.
case "$1" in
  build) exit 0 ;;
  run)
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
    [ "$#" -gt 0 ] && shift
    exec authmd "$@" ;;
  *) echo "README test: \`cargo $*\` is not available to walk-throughs" >&2; exit 1 ;;
esac
"#;

/// Runs `git` in `dir`, returning its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=readme",
            "-c",
            "user.email=readme@localhost",
        ])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .unwrap_or_else(|e| panic!("the README test needs git: {e}"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether any process of group `pgid` is alive.
fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The last lines of every `*.log` in `dir`, for a failure message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("\n--- {} (tail) ---\n{tail}\n", path.display()));
        }
    }
    out
}

#[test]
fn every_sh_block_of_the_readme_runs_as_pasted() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 4, "the README lost its walk-throughs");

    let root = tempfile::tempdir().expect("tempdir");
    let clone = root.path().join("clone");
    let tmp = root.path().join("tmp");
    let bin = root.path().join("bin");
    let target = root.path().join("target");
    for d in [&clone, &tmp, &bin, &target.join("debug")] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let authmd = PathBuf::from(env!("CARGO_BIN_EXE_authmd"));
    std::os::unix::fs::symlink(&authmd, bin.join("authmd")).expect("link authmd");
    std::os::unix::fs::symlink(&authmd, target.join("debug/authmd")).expect("link authmd");
    std::fs::write(bin.join("cargo"), CARGO_SHIM).expect("cargo shim");
    let mut perms = std::fs::metadata(bin.join("cargo"))
        .expect("shim")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(bin.join("cargo"), perms).expect("chmod");

    for file in [".gitignore", "authmd.example.toml"] {
        std::fs::copy(repo().join(file), clone.join(file)).expect("copy into the clone");
    }
    git(&clone, &["init", "-q"]);
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-qm", "clone"]);

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (line, block) in blocks {
        let mut ports = BTreeMap::new();
        let script = rewrite_ports(&block, &mut ports);
        let listen = *ports.entry(8080).or_insert_with(free_port);
        let provider = *ports.entry(9090).or_insert_with(free_port);
        let started = Instant::now();
        let mut child = Command::new("bash")
            .args([
                "--noprofile",
                "--norc",
                "-e",
                "-o",
                "pipefail",
                "-c",
                &script,
            ])
            .current_dir(&clone)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", root.path())
            .env("TMPDIR", &tmp)
            .env("LANG", "C.UTF-8")
            .env("CARGO_TARGET_DIR", &target)
            .env("AUTHMD_LISTEN", format!("127.0.0.1:{listen}"))
            .env(
                "AUTHMD_PROVIDER_ISSUER",
                format!("http://127.0.0.1:{provider}"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("bash");
        let pgid = child.id();
        // Read the output on threads so a chatty block cannot fill a pipe.
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            if started.elapsed() > BLOCK_TIME_LIMIT {
                kill_group(pgid);
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // What the block started must stop with it (`kill $SERVER` lets a
        // server finish gracefully, so give it a moment).
        let ended = Instant::now();
        let mut left_running = false;
        while group_alive(pgid) {
            if ended.elapsed() > Duration::from_secs(10) {
                left_running = true;
                kill_group(pgid);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The pipes close once every process of the group is gone.
        let (stdout, stderr) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        let report = || {
            format!(
                "README.md line {line}, as run (ports rewritten {ports:?}):\n{script}\n\
                 --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}{}",
                logs(&clone)
            )
        };
        match status {
            None => panic!(
                "the walk-through did not finish within {BLOCK_TIME_LIMIT:?}\n{}",
                report()
            ),
            Some(s) if !s.success() => panic!("the walk-through failed ({s})\n{}", report()),
            Some(_) => {}
        }
        assert!(
            !left_running,
            "the walk-through left processes running (it must stop what it starts)\n{}",
            report()
        );
        eprintln!(
            "README.md line {line}: ran in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let status = git(&clone, &["status", "--porcelain", "--untracked-files=all"]);
    assert!(
        status.is_empty(),
        "the walk-throughs left files that git would show (add them to .gitignore, or do not \
         leave them):\n{status}"
    );
}

#[test]
fn only_sh_blocks_are_walk_throughs() {
    let md = "text\n```sh\necho one\n```\n```console\n$ cargo test\n```\n\
              ```toml\nx = 1\n```\n  ```sh\necho two\n  ```\n";
    let blocks = sh_blocks(md);
    assert_eq!(
        blocks,
        vec![(2, "echo one\n".to_owned()), (11, "echo two\n".to_owned())]
    );
}

#[test]
fn ports_are_rewritten_consistently() {
    let mut ports = BTreeMap::new();
    let out = rewrite_ports(
        "curl http://127.0.0.1:8080/a http://127.0.0.1:8080/b 127.0.0.1:9100 127.0.0.1:x",
        &mut ports,
    );
    let (a, b) = (ports[&8080], ports[&9100]);
    assert_eq!(
        out,
        format!("curl http://127.0.0.1:{a}/a http://127.0.0.1:{a}/b 127.0.0.1:{b} 127.0.0.1:x")
    );
}

/// The anchors of a markdown file's headings, as GitHub renders them.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Every `docs/protocol.md#…` link in the README and in the protocol's own
/// table of contents names a heading that exists.
#[test]
fn links_into_the_protocol_reference_resolve() {
    let protocol = std::fs::read_to_string(repo().join("docs/protocol.md")).expect("protocol");
    let known = anchors(&protocol);
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let mut checked = 0;
    for (text, prefix) in [(&readme, "](docs/protocol.md#"), (&protocol, "](#")] {
        for (at, _) in text.match_indices(prefix) {
            let anchor: String = text[at + prefix.len()..]
                .chars()
                .take_while(|c| *c != ')')
                .collect();
            assert!(known.contains(&anchor), "no heading for #{anchor}");
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} links checked");
}

/// The repository documents itself: nothing in it cites the protocol text
/// or references that live outside it (`../shared`, `PROTOCOL.md`).
#[test]
fn nothing_cites_documents_outside_the_repository() {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | ".git" | "data" | "artifacts" | "corpus"
                ) {
                    walk(&path, found);
                }
            } else if [".rs", ".md", ".toml", ".sh", ".sql", "run"]
                .iter()
                .any(|e| name.ends_with(e))
            {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for (i, line) in text.lines().enumerate() {
                    // This test names what it looks for.
                    if path.ends_with("tests/readme.rs") {
                        continue;
                    }
                    if line.contains("../shared") || line.contains("PROTOCOL.md") {
                        found.push(format!("{}:{}: {line}", path.display(), i + 1));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo(), &mut found);
    assert!(
        found.is_empty(),
        "cite docs/protocol.md instead:\n{}",
        found.join("\n")
    );
}
