//! A PostgreSQL cluster of a test's own (initdb, pg_ctl), for what the
//! shared server cannot be used for: TLS with a generated certificate, and
//! stopping the database under load. Started as the `postgres` user when
//! the tests run as root (PostgreSQL refuses to run as root); its port is
//! in 25000-25999; removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A free port in 25000-25999 (this project's range for fixed ports).
fn port() -> u16 {
    // Clusters started by one process (tests run in parallel) take
    // different ports even before either server has bound its own.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let taken = NEXT.fetch_add(37, std::sync::atomic::Ordering::Relaxed);
    let start = 25_000 + (std::process::id() % 500) as u16 + taken % 500;
    (0..1000)
        .map(|i| 25_000 + (start - 25_000 + i * 7) % 1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 25000-25999")
}

impl Cluster {
    /// Creates and starts a cluster; with `tls`, `(certificate PEM, key PEM)`
    /// and `ssl = on`.
    pub fn start(tls: Option<(&str, &str)>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("authmd-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let cluster = Cluster {
            dir,
            bin: bin_dir(),
            port: port(),
        };
        let data = cluster.data();
        if is_root() {
            run(Command::new("chown")
                .arg("postgres:")
                .arg(cluster.dir.path()));
        }
        run(cluster
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data));
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 60\n",
            cluster.port,
            cluster.dir.path().display()
        );
        if let Some((cert, key)) = tls {
            write(&data.join("server.crt"), cert);
            write(&data.join("server.key"), key);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("postgresql.conf");
        text.push_str(&conf);
        write(&path, &text);
        if is_root() {
            run(Command::new("chown").arg("-R").arg("postgres:").arg(&data));
        }
        cluster.pg_ctl("start");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn pg_ctl(&self, action: &str) {
        let log = self.dir.path().join("server.log");
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-l"])
            .arg(&log);
        match action {
            "start" => c.arg("start"),
            _ => c.args(["-m", "immediate", "stop"]),
        };
        let out = c.output().expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (`-m immediate`: like a crash or a cut
    /// network, no goodbye to clients).
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts it again after [`Cluster::stop`].
    pub fn restart(&self) {
        self.pg_ctl("start");
    }

    /// A URL to the `postgres` database at `host`, with `query`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

fn run(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
