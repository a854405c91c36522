//! `authmd serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use authmd::{AuthMd, Config};
use clap::Args;

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
    crate::init_logging(&config.server.log_format);
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
        "authmd is serving; discovery at {}",
        app.urls().as_metadata
    );
    let admin = match authmd::http::admin_router(app.clone()) {
        Some(router) => {
            let addr = app.config().admin.listen.unwrap_or(listen);
            let admin_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
            tracing::info!(listen = %admin_listener.local_addr().unwrap_or(addr), "admin API is serving");
            // Not drained at shutdown: its event streams never end.
            Some(tokio::spawn(async move {
                axum::serve(
                    admin_listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
            }))
        }
        None => None,
    };
    if let Some(f) = ready_file {
        let addr = listener.local_addr().unwrap_or(listen);
        write_ready_file(f, &format!("http://{addr}"))?;
    }
    let router = authmd::http::router(app);
    // Small request/response exchanges: send each response at once.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .context("server failed")?;
    if let Some(admin) = admin {
        admin.abort();
    }
    tracing::info!("authmd stopped");
    Ok(())
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
