//! A service that protects its own API with authmd.
//!
//! ```sh
//! cargo run -p authmd --example protected_api
//! # in another terminal:
//! curl -s http://127.0.0.1:3000/api/notes            # 401 + discovery challenge
//! KEY=$(curl -s -X POST http://127.0.0.1:3000/agent/auth \
//!        -H 'content-type: application/json' \
//!        -d '{"type":"anonymous","requested_credential_type":"api_key"}' | jq -r .credential)
//! curl -s http://127.0.0.1:3000/api/notes -H "authorization: Bearer $KEY"          # 200
//! curl -s -X POST http://127.0.0.1:3000/api/notes -H "authorization: Bearer $KEY"  # 403: needs api.write
//! ```
//!
//! authmd serves discovery and registration (`agent_router`); the service's
//! own routes sit behind `require_credential()`, and handlers receive the
//! validated [`Agent`].

use std::net::SocketAddr;
use std::sync::Arc;

use authmd::{Agent, AuthMd};
use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

async fn list_notes(agent: Agent) -> Json<Value> {
    Json(json!({
        "notes": [],
        "for_registration": agent.registration_id,
        "scopes": agent.scopes,
    }))
}

async fn create_note(agent: Agent) -> Json<Value> {
    // Only reached with api.write: the configured rule checked it.
    Json(json!({ "created": true, "by": agent.registration_id }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = authmd::config::load_str(
        r#"
        issuer = "http://127.0.0.1:3000"
        listen = "127.0.0.1:3000"
        [database]
        url = "sqlite://data/example.db"
        [resource]
        identifier = "http://127.0.0.1:3000/api/"
        name = "Notes (example)"
        "#,
        &std::env::vars().collect(),
    )?;
    let listen = config.listen;
    let store = authmd::store::open(config.database.url.expose(), 4).await?;
    store.migrate().await?;
    let mailer = Arc::new(authmd::mail::OutboxMailer::new(
        "data/outbox",
        "notes@localhost",
    ));
    let app = AuthMd::new(config, store, mailer).await?;

    let api = Router::new()
        .route("/api/notes", get(list_notes).post(create_note))
        .layer(app.require_credential());
    let router = authmd::http::agent_router(app.clone()).merge(api);

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "notes example on http://{listen}; discovery at {}",
        app.urls().as_metadata
    );
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
