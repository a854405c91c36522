//! `authmd backup`: a consistent copy of a SQLite database, taken while the
//! server runs.
//!
//! `VACUUM INTO` reads the database in one read transaction (a snapshot:
//! WAL readers never block the writer, and the writer never changes what
//! the snapshot sees) and writes a compacted copy. The copy goes to
//! `<FILE>.partial`, is fsynced, checked (`PRAGMA quick_check`) and only
//! then renamed to `FILE`, so a backup that fails or is interrupted never
//! leaves a file that looks complete. PostgreSQL is backed up with its own
//! tools (`pg_dump`, see the README).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub source: PathBuf,
    pub bytes: u64,
}

/// The file a `sqlite:` URL names (not `:memory:`).
pub fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url.strip_prefix("sqlite:").ok_or_else(|| {
        StoreError::Url(
            "authmd backup copies a SQLite database; back PostgreSQL up with pg_dump (see the README)"
                .into(),
        )
    })?;
    if rest == ":memory:" || rest == "//:memory:" {
        return Err(StoreError::Url(
            "an in-memory database has nothing to back up".into(),
        ));
    }
    if rest.contains('?') {
        return Err(StoreError::Url(
            "sqlite URLs take no query parameters".into(),
        ));
    }
    let path = PathBuf::from(rest.strip_prefix("//").unwrap_or(rest));
    if path.as_os_str().is_empty() {
        return Err(StoreError::Url("sqlite URL names no file".into()));
    }
    Ok(path)
}

/// Copies the database `url` names to `to`, consistently, while other
/// processes read and write it. Refuses to overwrite `to`.
pub fn backup_sqlite(url: &str, to: &Path) -> Result<BackupReport, StoreError> {
    let source = sqlite_path(url)?;
    let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::Database(format!("{what}: {e}"));
    if !source.exists() {
        return Err(StoreError::Database(format!(
            "no database at {}",
            source.display()
        )));
    }
    if to.exists() {
        return Err(StoreError::Database(format!(
            "{} exists; choose a new file (a backup never overwrites)",
            to.display()
        )));
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let target = partial
        .to_str()
        .ok_or_else(|| StoreError::Database("the backup path is not UTF-8".into()))?
        .to_owned();
    let copied = (|| {
        // Read-write (WAL needs its shared memory), never created.
        let conn = Connection::open_with_flags(
            &source,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail(&format!("cannot open {}", source.display()), &e))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| fail("busy_timeout", &e))?;
        conn.execute("VACUUM INTO ?1", [&target])
            .map_err(|e| fail("VACUUM INTO", &e))?;
        drop(conn);
        let file = std::fs::File::open(&partial).map_err(|e| fail("cannot open the copy", &e))?;
        file.sync_all()
            .map_err(|e| fail("cannot sync the copy", &e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let check = Connection::open_with_flags(&partial, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail("cannot open the copy", &e))?;
        let verdict: String = check
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| fail("cannot check the copy", &e))?;
        if verdict != "ok" {
            return Err(StoreError::Corrupt(format!(
                "the copy fails quick_check: {verdict}"
            )));
        }
        Ok(bytes)
    })();
    let bytes = match copied {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, to).map_err(|e| fail("cannot rename the copy", &e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(BackupReport { source, bytes })
}
