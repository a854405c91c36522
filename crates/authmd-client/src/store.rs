//! The agent's credential store: one JSON file,
//! `{"version": 1, "issuers": {"<issuer>": <record>}}`, mode 0600 in a 0700
//! directory, replaced atomically (a temporary file beside it, synced, then
//! renamed) under an exclusive lock on `<file>.lock`, so two processes
//! (two `authmd agent` commands, an MCP server and a terminal) never lose
//! each other's records. A reader without the lock sees the old file or the
//! new one, never half of one.
//!
//! The record type is the caller's (`T`); the store only keys it by issuer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format's version, written in the file.
pub const VERSION: u32 = 1;
/// Largest store file read.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// How long [`Store::lock`] waits for another process.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("{0} is locked by another process (waited {1:?})")]
    Busy(PathBuf, Duration),
    #[error("no place to keep credentials: set AUTHMD_AGENT_HOME (there is no HOME)")]
    NoHome,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A store file; cheap to clone, holds no descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    path: PathBuf,
}

/// The file's shape.
#[derive(serde::Deserialize)]
struct FileIn<T> {
    #[serde(default)]
    version: u32,
    #[serde(default = "BTreeMap::new")]
    issuers: BTreeMap<String, T>,
}

#[derive(Serialize)]
struct FileOut<'a, T> {
    version: u32,
    issuers: &'a BTreeMap<String, T>,
}

/// The exclusive lock on a store, held until dropped. Reads and writes
/// through it are the read-modify-write of one step.
#[derive(Debug)]
pub struct StoreLock {
    store: Store,
    _file: File,
}

impl Store {
    pub fn new(path: impl Into<PathBuf>) -> Store {
        Store { path: path.into() }
    }

    /// `$AUTHMD_AGENT_HOME/credentials.json`, else
    /// `$XDG_CONFIG_HOME/authmd/agent/credentials.json`, else
    /// `~/.config/authmd/agent/credentials.json`.
    pub fn default_path() -> Result<PathBuf, StoreError> {
        if let Some(h) = std::env::var_os("AUTHMD_AGENT_HOME") {
            return Ok(PathBuf::from(h).join("credentials.json"));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or(StoreError::NoHome)?;
        Ok(config.join("authmd").join("agent").join("credentials.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        self.path.with_file_name(name)
    }

    /// Every record, read without the lock (a consistent snapshot: the
    /// file is only ever replaced whole). A missing file is an empty store.
    pub fn read<T: DeserializeOwned>(&self) -> Result<BTreeMap<String, T>, StoreError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE + 1), &mut bytes)
            .map_err(io(&self.path))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(StoreError::Damaged {
                path: self.path.clone(),
                message: format!("larger than {MAX_FILE} bytes"),
            });
        }
        let parsed: FileIn<T> =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Damaged {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        if parsed.version > VERSION {
            return Err(StoreError::Damaged {
                path: self.path.clone(),
                message: format!(
                    "written by a newer version (format {}, this one reads {VERSION})",
                    parsed.version
                ),
            });
        }
        Ok(parsed.issuers)
    }

    /// Takes the exclusive lock, waiting up to [`LOCK_WAIT`] for another
    /// holder (without blocking the async runtime).
    pub async fn lock(&self) -> Result<StoreLock, StoreError> {
        let started = Instant::now();
        let file = self.open_lock_file()?;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(StoreLock {
                        store: self.clone(),
                        _file: file,
                    });
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    if started.elapsed() > LOCK_WAIT {
                        return Err(StoreError::Busy(self.lock_path(), LOCK_WAIT));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&self.lock_path())(e)),
            }
        }
    }

    /// The same, blocking the thread (for synchronous callers).
    pub fn lock_blocking(&self) -> Result<StoreLock, StoreError> {
        let file = self.open_lock_file()?;
        file.lock().map_err(io(&self.lock_path()))?;
        Ok(StoreLock {
            store: self.clone(),
            _file: file,
        })
    }

    fn open_lock_file(&self) -> Result<File, StoreError> {
        private_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        let path = self.lock_path();
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path).map_err(io(&path))
    }

    /// Read, change and write under the lock: `f`'s changes are kept
    /// whatever other processes do meanwhile.
    pub async fn update<T, R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, T>) -> R,
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        let lock = self.lock().await?;
        let mut all = lock.read()?;
        let r = f(&mut all);
        lock.write(&all)?;
        Ok(r)
    }
}

impl StoreLock {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn read<T: DeserializeOwned>(&self) -> Result<BTreeMap<String, T>, StoreError> {
        self.store.read()
    }

    /// Replaces the file atomically, mode 0600.
    pub fn write<T: Serialize>(&self, all: &BTreeMap<String, T>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(&FileOut {
            version: VERSION,
            issuers: all,
        })
        .map_err(|e| StoreError::Damaged {
            path: self.store.path.clone(),
            message: e.to_string(),
        })?;
        write_private(&self.store.path, &bytes)
    }

    /// One record, changed under this lock.
    pub fn modify<T, R>(
        &self,
        issuer: &str,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> Result<R, StoreError>
    where
        T: Serialize + DeserializeOwned,
    {
        let mut all: BTreeMap<String, T> = self.read()?;
        let mut one = all.remove(issuer);
        let r = f(&mut one);
        if let Some(v) = one {
            all.insert(issuer.to_owned(), v);
        }
        self.write(&all)?;
        Ok(r)
    }
}

/// Creates `dir` (and its missing parents) readable only by the user; an
/// existing directory is left as it is.
pub fn private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, synced,
/// then renamed), mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    private_dir(parent)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(io(&tmp))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    // The rename itself survives a crash once the directory is synced.
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}
