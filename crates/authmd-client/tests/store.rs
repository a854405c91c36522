//! The credential store: private, atomic, and shared safely by processes
//! writing at the same time.

use std::collections::BTreeMap;
use std::time::Duration;

use authmd_client::store::{Store, StoreError};

const WRITER: &str = "AUTHMD_STORE_TEST_WRITER";

/// Not a test on its own: the body of each writer process spawned by
/// `two_processes_writing_at_once_lose_nothing` (it re-runs this binary).
#[tokio::test]
async fn child_writer() {
    let Ok(spec) = std::env::var(WRITER) else {
        return;
    };
    let (path, who) = spec.split_once('|').expect("path|who");
    let store = Store::new(path);
    for i in 0..40 {
        store
            .update(|all: &mut BTreeMap<String, serde_json::Value>| {
                all.insert(
                    format!("https://{who}-{i}.example"),
                    serde_json::json!({"n": i}),
                );
            })
            .await
            .expect("update");
    }
}

#[tokio::test]
async fn two_processes_writing_at_once_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("home").join("credentials.json");
    let spawn = |who: &str| {
        std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "child_writer", "--nocapture"])
            .env(WRITER, format!("{}|{who}", path.display()))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn writer")
    };
    let mut a = spawn("a");
    let mut b = spawn("b");
    assert!(a.wait().expect("wait a").success());
    assert!(b.wait().expect("wait b").success());
    let all: BTreeMap<String, serde_json::Value> = Store::new(&path).read().expect("read");
    assert_eq!(all.len(), 80, "every write of both processes is kept");
    for who in ["a", "b"] {
        for i in 0..40 {
            assert_eq!(all[&format!("https://{who}-{i}.example")]["n"], i);
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
    }
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(path.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[tokio::test]
async fn a_held_lock_makes_others_wait_and_a_damaged_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = Store::new(&path);
    assert!(
        store
            .read::<serde_json::Value>()
            .expect("missing is empty")
            .is_empty()
    );

    let held = store.lock().await.expect("lock");
    let other = store.clone();
    let waiter = tokio::spawn(async move {
        other
            .update(|all: &mut BTreeMap<String, u32>| {
                all.insert("https://b.example".into(), 2);
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !waiter.is_finished(),
        "the second writer waits for the lock"
    );
    held.modify("https://a.example", |v: &mut Option<u32>| *v = Some(1))
        .expect("write under the lock");
    drop(held);
    waiter.await.expect("join").expect("update");
    let all: BTreeMap<String, u32> = store.read().expect("read");
    assert_eq!(all.len(), 2, "{all:?}");

    std::fs::write(&path, b"{not json").expect("damage");
    match store.read::<u32>() {
        Err(StoreError::Damaged { .. }) => {}
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, br#"{"version": 99, "issuers": {}}"#).expect("newer");
    let e = store.read::<u32>().expect_err("newer format");
    assert!(e.to_string().contains("newer version"), "{e}");
}
