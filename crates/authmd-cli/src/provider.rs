//! `authmd provider`: a development agent provider. It keeps signing keys
//! in a directory (`$AUTHMD_PROVIDER_DIR`, default `./authmd-provider`),
//! publishes them (`serve`), mints ID-JAGs (`mint`) and revokes a user's
//! consent at a service (`revoke`).
//!
//! Rotation: `keys generate` adds a key, which becomes the signing key at
//! once; the one it replaces stays in the JWKS for the grace period (so
//! assertions it signed, and services' cached key sets, keep working),
//! then drops out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use authmd::Timestamp;
use authmd_jose::{Algorithm, SigningKey, b64, jws};
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The event a provider sends when the user withdraws consent.
pub const REVOKED_EVENT: &str =
    "https://schemas.workos.com/events/agent/auth/identity/assertion/revoked";

#[derive(Args)]
pub struct ProviderArgs {
    /// Where the keys are kept.
    #[arg(
        long,
        global = true,
        env = "AUTHMD_PROVIDER_DIR",
        default_value = "authmd-provider"
    )]
    dir: PathBuf,
    /// The provider's issuer: the `iss` of what it signs, and the base URL
    /// `serve` publishes under.
    #[arg(
        long,
        global = true,
        env = "AUTHMD_PROVIDER_ISSUER",
        default_value = "http://127.0.0.1:9090"
    )]
    issuer: String,
    #[command(subcommand)]
    command: ProviderCommand,
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Publish the JWKS (`/.well-known/jwks.json`) and the client ID
    /// metadata document (`/agent-auth.json`).
    Serve {
        /// Address to listen on; default: the issuer's host and port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// How long a replaced key stays published.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// The name in the client ID metadata document.
        #[arg(long, default_value = "authmd development provider")]
        name: String,
        /// Once it accepts connections, write the issuer to FILE (removed
        /// at shutdown): scripts wait for FILE instead of sleeping.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
    /// Print an ID-JAG for a user and a service (docs/protocol.md §3.3).
    Mint(MintArgs),
    /// Tell a service that the user withdrew consent: every credential it
    /// issued for the subject is revoked (docs/protocol.md §5).
    Revoke {
        /// The user at the provider whose consent is withdrawn.
        #[arg(long)]
        sub: String,
        /// The service: an API URL or its issuer. `revocation_uri` and the
        /// audience come from its published metadata.
        #[arg(long)]
        service: String,
        /// Where to post the logout token when the service publishes no
        /// `revocation_uri`; it must be on the service's issuer origin. A
        /// published one always wins (a different value here is refused).
        #[arg(long)]
        revocation_uri: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a signing key; it signs from now on, the previous one stays
    /// published for the grace period.
    Generate {
        /// ES256, EdDSA or RS256.
        #[arg(long, default_value = "ES256")]
        alg: String,
    },
    /// Show the keys, newest first.
    List,
}

#[derive(Args)]
struct MintArgs {
    /// The user at the provider (stable, opaque).
    #[arg(long)]
    sub: String,
    /// The user's email, asserted as verified.
    #[arg(long)]
    email: String,
    /// The service's issuer (the `aud`).
    #[arg(long)]
    aud: String,
    /// agent_platform, for the service's audit trail.
    #[arg(long)]
    platform: Option<String>,
    /// agent_context_id, for the service's audit trail.
    #[arg(long)]
    context: Option<String>,
    /// Authentication methods (repeatable), e.g. --amr mfa.
    #[arg(long)]
    amr: Vec<String>,
    /// Sets `auth_time` this long before now (e.g. `2h`), to test a
    /// service's `max_auth_age`; by default the user signed in now (the
    /// current dialect refuses an ID-JAG without `auth_time`).
    #[arg(long)]
    auth_age: Option<String>,
    /// Lifetime (services accept at most 10 minutes by default).
    #[arg(long, default_value = "5m")]
    ttl: String,
    /// Print the registration request body instead of the bare assertion.
    #[arg(long)]
    request: bool,
}

/// A key as kept on disk.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    alg: String,
    kid: String,
    /// Unix milliseconds (orders keys, also within one second).
    created_at: i64,
    /// PKCS#8 DER, base64url.
    pkcs8: String,
}

struct Key {
    key: SigningKey,
    created_at: i64,
}

pub async fn run(args: ProviderArgs) -> anyhow::Result<()> {
    let issuer = issuer(&args.issuer)?;
    let dir = args.dir;
    match args.command {
        ProviderCommand::Keys(KeysCommand::Generate { alg }) => {
            let alg = match alg.as_str() {
                "ES256" => Algorithm::Es256,
                "EdDSA" => Algorithm::EdDsa,
                "RS256" => Algorithm::Rs256,
                other => bail!("--alg must be ES256, EdDSA or RS256, not {other:?}"),
            };
            let key = SigningKey::generate(alg)?;
            let path = save_key(&dir, &key)?;
            println!(
                "{} key {} written to {}",
                alg.name(),
                key.kid().unwrap_or_default(),
                path.display()
            );
            Ok(())
        }
        ProviderCommand::Keys(KeysCommand::List) => {
            let keys = load_keys(&dir)?;
            if keys.is_empty() {
                println!("no keys in {}", dir.display());
            }
            for (i, k) in keys.iter().enumerate().rev() {
                let state = if i + 1 == keys.len() {
                    "signing"
                } else {
                    "replaced"
                };
                println!(
                    "{}  {:6}  {}  {state}",
                    Timestamp::from_millis(k.created_at).to_rfc3339(),
                    k.key.algorithm().name(),
                    k.key.kid().unwrap_or_default()
                );
            }
            Ok(())
        }
        ProviderCommand::Serve {
            listen,
            grace,
            name,
            ready_file,
        } => {
            let grace =
                authmd::config::parse_duration(&grace).map_err(|e| anyhow!("--grace: {e}"))?;
            let listen = match listen {
                Some(l) => l,
                None => issuer_addr(&issuer)?,
            };
            // Fail now, not at the first request.
            signing_key(&dir)?;
            if let Some(f) = &ready_file {
                crate::serve::remove_ready_file(f)?;
            }
            let result = serve(dir, issuer, listen, grace, name, ready_file.as_deref()).await;
            if let Some(f) = &ready_file {
                let _ = std::fs::remove_file(f);
            }
            result
        }
        ProviderCommand::Mint(m) => {
            let key = signing_key(&dir)?;
            let ttl = authmd::config::parse_duration(&m.ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
            let auth_age = m
                .auth_age
                .as_deref()
                .map(authmd::config::parse_duration)
                .transpose()
                .map_err(|e| anyhow!("--auth-age: {e}"))?;
            let token = mint(&key, &issuer, &m, ttl, auth_age)?;
            if m.request {
                let body = json!({
                    "type": "identity_assertion",
                    "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
                    "assertion": token,
                    "requested_credential_type": "access_token",
                });
                println!("{body}");
            } else {
                println!("{token}");
            }
            Ok(())
        }
        ProviderCommand::Revoke {
            sub,
            service,
            revocation_uri,
        } => {
            let key = signing_key(&dir)?;
            revoke(&key, &issuer, &sub, &service, revocation_uri.as_deref()).await
        }
    }
}

/// An issuer is an origin: http(s), no path, query or fragment.
fn issuer(s: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(s).map_err(|e| anyhow!("--issuer {s:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host().is_none()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
    {
        bail!("--issuer {s:?} must be an origin such as http://127.0.0.1:9090");
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn issuer_addr(issuer: &str) -> anyhow::Result<SocketAddr> {
    let u = url::Url::parse(issuer)?;
    let host = u.host_str().unwrap_or_default();
    let port = u.port_or_known_default().unwrap_or(80);
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{}:{port}", host.trim_matches(['[', ']']))
        .parse()
        .or_else(|_| format!("[{}]:{port}", host.trim_matches(['[', ']'])).parse())
        .map_err(|_| anyhow!("cannot listen on the issuer's host {host:?}; pass --listen"))
}

fn now() -> i64 {
    Timestamp::now().as_secs()
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

fn keys_dir(dir: &Path) -> PathBuf {
    dir.join("keys")
}

fn save_key(dir: &Path, key: &SigningKey) -> anyhow::Result<PathBuf> {
    let keys = keys_dir(dir);
    let created_at = now_ms();
    let kid = key.kid().unwrap_or_default().to_owned();
    let stored = StoredKey {
        alg: key.algorithm().name().to_owned(),
        kid: kid.clone(),
        created_at,
        pkcs8: b64::encode(key.to_pkcs8()?),
    };
    let path = keys.join(format!("{created_at:015}-{kid}.json"));
    crate::private::write(&path, &serde_json::to_vec_pretty(&stored)?)?;
    Ok(path)
}

/// Every kept key, oldest first.
fn load_keys(dir: &Path) -> anyhow::Result<Vec<Key>> {
    let keys = keys_dir(dir);
    let entries = match std::fs::read_dir(&keys) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", keys.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let stored: StoredKey = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a key file", path.display()))?;
        let alg = Algorithm::from_name(&stored.alg)
            .ok_or_else(|| anyhow!("{}: unknown alg {:?}", path.display(), stored.alg))?;
        let der = b64::decode(&stored.pkcs8)
            .ok_or_else(|| anyhow!("{}: pkcs8 is not base64url", path.display()))?;
        let key = SigningKey::from_pkcs8(alg, &der)
            .with_context(|| format!("{}: damaged key", path.display()))?
            .with_kid(stored.kid);
        out.push(Key {
            key,
            created_at: stored.created_at,
        });
    }
    out.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.key.kid().cmp(&b.key.kid()))
    });
    Ok(out)
}

fn signing_key(dir: &Path) -> anyhow::Result<SigningKey> {
    load_keys(dir)?.pop().map(|k| k.key).ok_or_else(|| {
        anyhow!(
            "no signing key in {}; run `authmd provider keys generate` first",
            dir.display()
        )
    })
}

/// The published keys at `at`: the signing key, and each replaced key
/// until `grace` after its replacement.
fn published(keys: &[Key], at: i64, grace: Duration) -> Vec<Value> {
    let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    keys.iter()
        .enumerate()
        .filter(|(i, _)| match keys.get(i + 1) {
            None => true,
            Some(next) => at < next.created_at.saturating_add(grace),
        })
        .map(|(_, k)| k.key.public_jwk())
        .rev()
        .collect()
}

fn header(typ: &str) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("typ".into(), typ.into());
    h
}

fn jti() -> String {
    use rand::Rng;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b64::encode(b)
}

fn mint(
    key: &SigningKey,
    issuer: &str,
    m: &MintArgs,
    ttl: Duration,
    auth_age: Option<Duration>,
) -> anyhow::Result<String> {
    let iat = now();
    let exp = iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(600));
    let mut claims = json!({
        "iss": issuer,
        "sub": m.sub,
        "aud": m.aud,
        "client_id": format!("{issuer}/agent-auth.json"),
        "jti": jti(),
        "iat": iat,
        "exp": exp,
        "email": m.email,
        "email_verified": true,
    });
    if let Some(p) = &m.platform {
        claims["agent_platform"] = p.clone().into();
    }
    if let Some(c) = &m.context {
        claims["agent_context_id"] = c.clone().into();
    }
    let age = auth_age.map_or(0, |a| i64::try_from(a.as_secs()).unwrap_or(i64::MAX));
    claims["auth_time"] = iat.saturating_sub(age).into();
    if !m.amr.is_empty() {
        claims["amr"] = m.amr.clone().into();
    }
    let claims = claims.as_object().cloned().unwrap_or_default();
    Ok(jws::sign(key, &header("oauth-id-jag+jwt"), &claims)?)
}

/// The logout token of docs/protocol.md §5 for `sub` at the service `aud`.
fn logout_token(key: &SigningKey, issuer: &str, sub: &str, aud: &str) -> anyhow::Result<String> {
    let iat = now();
    let claims = json!({
        "iss": issuer,
        "sub": sub,
        "aud": aud,
        "jti": jti(),
        "iat": iat,
        "exp": iat + 300,
        "events": { REVOKED_EVENT: {} },
    });
    let claims = claims.as_object().cloned().unwrap_or_default();
    Ok(jws::sign(key, &header("logout+jwt"), &claims)?)
}

async fn revoke(
    key: &SigningKey,
    issuer: &str,
    sub: &str,
    service: &str,
    revocation_uri: Option<&str>,
) -> anyhow::Result<()> {
    let client = authmd_client::Client::new()?;
    let svc = client
        .discover(service)
        .await
        .map_err(|e| anyhow!("cannot discover {service}: {e}"))?;
    for w in &svc.warnings {
        eprintln!("authmd: warning: {w}");
    }
    let uri = revocation_endpoint(&svc, revocation_uri)?;
    // The service named is the one revoked at: its metadata may not send
    // the logout token (and the user's consent) to another issuer.
    let named = url::Url::parse(service).map_err(|e| anyhow!("--service {service:?}: {e}"))?;
    let found =
        url::Url::parse(&svc.issuer).map_err(|e| anyhow!("issuer {:?}: {e}", svc.issuer))?;
    if named.origin() != found.origin() {
        bail!(
            "{service} names issuer {}, on another origin: not revoking there",
            svc.issuer
        );
    }
    let token = logout_token(key, issuer, sub, &svc.issuer)?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let response = http
        .post(&uri)
        .header(header::CONTENT_TYPE.as_str(), "application/logout+jwt")
        .body(token)
        .send()
        .await
        .with_context(|| format!("POST {uri}"))?;
    let status = response.status();
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > 64 * 1024 {
            bail!("{uri} answered with more than 64 KiB");
        }
        bytes.extend_from_slice(&chunk);
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text = |v: &Value| -> String {
        v.as_str()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .collect()
    };
    if !status.is_success() {
        bail!(
            "{uri} refused: {status} {}: {}",
            text(&body["error"]),
            text(&body["message"])
        );
    }
    println!(
        "{}: revoked {} credential(s) of {sub}",
        svc.issuer,
        body["revoked"].as_u64().unwrap_or(0)
    );
    Ok(())
}

/// Where the logout token goes: the service's published `revocation_uri`
/// (the client has checked it is on the issuer's origin), else the
/// operator's `--revocation-uri`, held to the same origin: the token is
/// a statement about the service's users and goes nowhere else.
fn revocation_endpoint(
    svc: &authmd_client::Service,
    given: Option<&str>,
) -> anyhow::Result<String> {
    let published = svc.agent_auth().revocation_uri.as_deref();
    match (published, given) {
        (Some(p), Some(g)) if p != g => bail!(
            "{} publishes revocation_uri {p}; --revocation-uri {g} differs: not sending there",
            svc.issuer
        ),
        (Some(p), _) => Ok(p.to_owned()),
        (None, None) => bail!(
            "{} publishes no revocation_uri: pass --revocation-uri if it accepts logout tokens elsewhere",
            svc.issuer
        ),
        (None, Some(g)) => {
            let u = url::Url::parse(g).map_err(|e| anyhow!("--revocation-uri {g:?}: {e}"))?;
            let own = url::Url::parse(&svc.issuer)
                .map_err(|e| anyhow!("issuer {:?}: {e}", svc.issuer))?;
            if u.origin() != own.origin() {
                bail!(
                    "--revocation-uri {g} is not on the origin of {}, the service's issuer",
                    svc.issuer
                );
            }
            Ok(g.to_owned())
        }
    }
}

async fn serve(
    dir: PathBuf,
    issuer: String,
    listen: SocketAddr,
    grace: Duration,
    name: String,
    ready_file: Option<&Path>,
) -> anyhow::Result<()> {
    let jwks_dir = dir.clone();
    let cimd = json!({
        "client_id": format!("{issuer}/agent-auth.json"),
        "client_name": name,
        "client_uri": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "scope": "openid email profile",
    });
    let app = Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || {
                let dir = jwks_dir.clone();
                async move {
                    // Read per request: a key generated while serving is
                    // published at once.
                    match load_keys(&dir) {
                        Ok(keys) => (
                            [
                                (header::CONTENT_TYPE, "application/jwk-set+json"),
                                (header::CACHE_CONTROL, "public, max-age=300"),
                            ],
                            json!({"keys": published(&keys, now_ms(), grace)}).to_string(),
                        )
                            .into_response(),
                        Err(e) => {
                            tracing::error!("cannot read keys: {e:#}");
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/agent-auth.json",
            get(move || {
                let cimd = cimd.to_string();
                async move { ([(header::CONTENT_TYPE, "application/json")], cimd) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!(
        "authmd provider: {issuer} on {listen}: keys at {issuer}/.well-known/jwks.json, client metadata at {issuer}/agent-auth.json"
    );
    if let Some(f) = ready_file {
        crate::serve::write_ready_file(f, &issuer)?;
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::serve::shutdown())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_at(created_at: i64) -> Key {
        Key {
            key: SigningKey::generate(Algorithm::Es256).unwrap_or_else(|e| panic!("{e}")),
            created_at,
        }
    }

    #[test]
    fn a_replaced_key_stays_published_for_the_grace_period_only() {
        // Milliseconds.
        let keys = vec![key_at(1000), key_at(2000), key_at(5000)];
        let kid = |i: usize| keys[i].key.public_jwk()["kid"].clone();
        let grace = Duration::from_millis(600);
        let kids = |at| -> Vec<Value> {
            published(&keys, at, grace)
                .into_iter()
                .map(|j| j["kid"].clone())
                .collect()
        };
        // Newest first; the first key was replaced at 2000, the second at 5000.
        assert_eq!(kids(2100), vec![kid(2), kid(1), kid(0)]);
        assert_eq!(kids(2600), vec![kid(2), kid(1)]);
        assert_eq!(kids(5599), vec![kid(2), kid(1)]);
        assert_eq!(kids(5600), vec![kid(2)]);
    }

    #[test]
    fn issuers_are_origins() {
        assert_eq!(
            issuer("http://127.0.0.1:9090/").ok().as_deref(),
            Some("http://127.0.0.1:9090")
        );
        assert!(issuer("http://127.0.0.1:9090/p").is_err());
        assert!(issuer("ftp://x").is_err());
        assert_eq!(
            issuer_addr("http://127.0.0.1:9090").ok(),
            "127.0.0.1:9090".parse().ok()
        );
        assert_eq!(
            issuer_addr("http://localhost:4000").ok(),
            "127.0.0.1:4000".parse().ok()
        );
    }
}
