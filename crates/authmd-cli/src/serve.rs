//! `authmd serve`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use authmd::{AuthMd, Config};
use clap::Args;

use crate::listen::{self, Limits};
use crate::tls;

/// Connections the admin API serves at once (operators and collectors).
const ADMIN_MAX_CONNECTIONS: usize = 256;
/// File descriptors kept for everything but client connections (database,
/// provider keys, mail, logs).
const RESERVED_FILES: usize = 256;

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) config: crate::ConfigFile,
    /// Development mode, for your own machine: refuses a listener other
    /// machines can reach (loopback only), turns rate limits off and writes
    /// mail to the outbox directory (mail.outbox), logging each message's
    /// path.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Once the server accepts connections, write its URL to FILE (and
    /// remove FILE at shutdown): scripts wait for FILE instead of sleeping.
    #[arg(long, value_name = "FILE")]
    pub(crate) ready_file: Option<PathBuf>,
}

/// `dev`: what development mode changed, when it is on (applied by the
/// caller, with the configuration).
pub(crate) fn run(config: Config, args: ServeArgs, dev: Option<Vec<String>>) -> anyhow::Result<()> {
    // A stale file from an earlier run must not announce this one.
    if let Some(f) = &args.ready_file {
        remove_ready_file(f)?;
    }
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    crate::init_logging(config.log_format(), &config.log.level);
    if let Some(changed) = dev {
        tracing::warn!("development mode (loopback only): {}", changed.join("; "));
    }
    for w in config.warnings() {
        tracing::warn!("configuration: {w}");
    }
    let rt = crate::runtime(workers)?;
    let result = rt.block_on(serve(config, workers, args.ready_file.as_deref()));
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    result
}

pub(crate) fn remove_ready_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the ready file {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes `url` to `path` in one step (a reader never sees half of it).
pub(crate) fn write_ready_file(path: &Path, url: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{url}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the ready file {}", path.display()))
}

async fn serve(config: Config, workers: usize, ready_file: Option<&Path>) -> anyhow::Result<()> {
    let listen = config.listen;
    let database = describe_database(config.database.url.expose());
    let outbox = config.mail.outbox.clone();
    let smtp = config.mail.smtp_url.is_some();
    if !config.issuer_is_loopback() {
        for f in config.production_findings() {
            tracing::warn!(key = %f.key, "not ready for production: {}", f.message);
        }
    }
    let public_tls = tls::from_config(
        "server",
        &config.server.tls_cert_file,
        &config.server.tls_key_file,
    )?;
    let admin_tls = tls::from_config(
        "admin",
        &config.admin.tls_cert_file,
        &config.admin.tls_key_file,
    )?;
    let limits = file_limited(
        Limits::from_config(&config.server),
        config.admin.listen.is_some(),
    );
    // Metrics are recorded only where they can be read: with an admin API
    // or a metrics listener (the recorder is process-wide).
    if config.admin.listen.is_some() || config.metrics.listen.is_some() {
        authmd::metrics::install();
    }
    let app = AuthMd::open(config).await.context("cannot open authmd")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(listen),
        issuer = %app.urls().issuer,
        resource = %app.urls().resource,
        database = %database,
        mail = %if smtp { "smtp".to_owned() } else { format!("outbox {}", outbox.display()) },
        workers,
        tls = public_tls.is_some(),
        max_connections = limits.max_connections,
        "authmd is serving; discovery at {}",
        app.urls().as_metadata
    );
    // The admin listener is never told to drain: its event streams never
    // end. It stops when the public listener has drained.
    let (_admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
    let admin = match authmd::http::admin_router(app.clone()) {
        Some(router) => {
            let addr = app.config().admin.listen.unwrap_or(listen);
            let admin_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
            tracing::info!(
                listen = %admin_listener.local_addr().unwrap_or(addr),
                tls = admin_tls.is_some(),
                "admin API is serving"
            );
            let admin_limits = Limits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..limits
            };
            let tls = admin_tls.clone();
            Some(tokio::spawn(listen::serve(
                admin_listener,
                router,
                admin_limits,
                tls,
                admin_stop_rx,
            )))
        }
        None => None,
    };
    // Like the admin listener, stopped when the public one has drained.
    let (_metrics_stop, metrics_stop_rx) = tokio::sync::watch::channel(false);
    let metrics = match app.config().metrics.listen {
        Some(addr) => {
            let metrics_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            tracing::info!(
                listen = %metrics_listener.local_addr().unwrap_or(addr),
                "metrics are serving at /metrics"
            );
            let metrics_limits = Limits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..limits
            };
            Some(tokio::spawn(listen::serve(
                metrics_listener,
                authmd::http::metrics_router(app.clone()),
                metrics_limits,
                None,
                metrics_stop_rx,
            )))
        }
        None => None,
    };
    reload_on_hangup(
        [public_tls.clone(), admin_tls]
            .into_iter()
            .flatten()
            .collect(),
    );
    if let Some(f) = ready_file {
        let addr = listener.local_addr().unwrap_or(listen);
        let scheme = if public_tls.is_some() {
            "https"
        } else {
            "http"
        };
        write_ready_file(f, &format!("{scheme}://{addr}"))?;
    }
    let router = authmd::http::router(app.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown().await;
        let _ = stop.send(true);
    });
    listen::serve(listener, router, limits, public_tls, stop_rx).await;
    for task in [admin, metrics].into_iter().flatten() {
        task.abort();
    }
    // Refused registrations counted since the last flush.
    if let Err(e) = app.flush_refusals().await {
        tracing::warn!(error = %e, "cannot record the last refused registrations");
    }
    tracing::info!("authmd stopped");
    Ok(())
}

/// SIGHUP reads every listener's certificate files again (and, without
/// TLS, does no harm: a reload signal must not stop the server).
fn reload_on_hangup(tls: Vec<std::sync::Arc<tls::Tls>>) {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tls.is_empty() {
                            tracing::info!("SIGHUP: no TLS certificate to reload");
                        }
                        for t in &tls {
                            t.reload();
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch SIGHUP: certificates are not reloaded")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Every open connection is a file descriptor: raises the soft limit on
/// open files as far as needed (and the hard limit allows), and lowers the
/// connection limit to what fits if it must.
fn file_limited(mut limits: Limits, admin: bool) -> Limits {
    let wanted =
        limits.max_connections + if admin { ADMIN_MAX_CONNECTIONS } else { 0 } + RESERVED_FILES;
    let Some(available) = open_file_limit(wanted) else {
        return limits;
    };
    if available < wanted {
        let fits = available
            .saturating_sub(RESERVED_FILES + if admin { ADMIN_MAX_CONNECTIONS } else { 0 })
            .max(16);
        tracing::warn!(
            open_file_limit = available,
            max_connections = limits.max_connections,
            serving = fits,
            "the open-file limit is too low for server.max_connections: raise it (ulimit -n, LimitNOFILE=)"
        );
        limits.max_connections = fits;
    }
    limits
}

/// The soft limit on open files after raising it towards `wanted`.
#[cfg(unix)]
fn open_file_limit(wanted: usize) -> Option<usize> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
    let current = limit.current?;
    if current < wanted {
        let raised = limit.maximum.map_or(wanted, |max| max.min(wanted));
        if raised > current {
            let _ = setrlimit(
                Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(raised),
                    maximum: limit.maximum,
                },
            );
        }
    }
    let now = getrlimit(Resource::Nofile).current?;
    Some(usize::try_from(now).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit(_wanted: usize) -> Option<usize> {
    None
}

/// Ctrl-C or SIGTERM (`kill PID`): stop accepting, finish what is in flight.
pub(crate) async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The database URL without any password, for logs.
pub fn describe_database(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.scheme().starts_with("postgres") => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
