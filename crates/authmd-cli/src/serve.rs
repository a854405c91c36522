//! `authmd serve`.

use std::net::SocketAddr;

use anyhow::Context;
use authmd::{AuthMd, Config};

pub fn run(config: Config) -> anyhow::Result<()> {
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    crate::init_logging(&config.server.log_format);
    let rt = crate::runtime(workers)?;
    rt.block_on(serve(config, workers))
}

async fn serve(config: Config, workers: usize) -> anyhow::Result<()> {
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
    let router = authmd::http::router(app.clone());
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
    // Refused registrations counted since the last flush.
    if let Err(e) = app.flush_refusals().await {
        tracing::warn!(error = %e, "cannot record the last refused registrations");
    }
    tracing::info!("authmd stopped");
    Ok(())
}

async fn shutdown() {
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
