//! `authmd agent`: an agent's side of auth.md from the command line, over
//! `authmd-client`. Credentials are kept per service (by issuer) in one
//! file readable only by the user (`$AUTHMD_AGENT_HOME/credentials.json`,
//! default `~/.config/authmd/agent/`); secrets are printed only with
//! `--show-secrets`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use authmd_client::{
    Client, ClientError, Credential, CredentialType, Method, MethodKind, Registration, Service,
    store::{Store, StoreLock},
};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Discover a service from an API URL or its issuer and show how agents
    /// register there (docs/protocol.md §2).
    Discover {
        /// An API URL of the service (its 401 leads to the metadata), or its issuer.
        url: String,
        /// Print the discovered documents as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register with a service and keep the credential (docs/protocol.md §3).
    Register(RegisterArgs),
    /// Start the claim of an anonymous registration: the user gets an email
    /// (docs/protocol.md §4).
    Claim {
        /// The user's email address: the claim link is sent there.
        #[arg(long)]
        email: String,
        /// Which service (its issuer or an API URL); needed when several are kept.
        #[arg(long)]
        service: Option<String>,
    },
    /// Complete the claim with the code the user reads from the claim page
    /// (docs/protocol.md §4.4).
    Complete {
        /// The code; without it, asked for on the terminal.
        #[arg(long)]
        otp: Option<String>,
        /// Which service (its issuer or an API URL); needed when several are kept.
        #[arg(long)]
        service: Option<String>,
    },
    /// Call the API with the kept credential (curl-like). A credential that
    /// stopped working is dropped, the service rediscovered and the agent
    /// registered again where it can do so alone.
    Call(CallArgs),
    /// Show the kept registrations.
    Status {
        /// Print credentials and claim tokens too.
        #[arg(long)]
        show_secrets: bool,
        /// Print the kept registrations as JSON (secrets hidden unless --show-secrets).
        #[arg(long)]
        json: bool,
    },
    /// End the kept credential at the service (RFC 7009: it stops working
    /// everywhere within a second), then forget the registration.
    Revoke {
        /// Which service (its issuer or an API URL); needed when several are kept.
        #[arg(long)]
        service: Option<String>,
    },
    /// Forget a service's credentials (or all).
    Forget {
        /// Which service (its issuer or an API URL); needed when several are kept.
        #[arg(long)]
        service: Option<String>,
        /// Forget every service's credentials.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args)]
pub struct RegisterArgs {
    /// An API URL of the service, or its issuer.
    url: String,
    /// Anonymous start: an API key now, claimed by a user later.
    #[arg(long, group = "how")]
    anonymous: bool,
    /// Email required: no credential until the user at ADDRESS claims it.
    #[arg(long, group = "how", value_name = "ADDRESS")]
    email: Option<String>,
    /// Agent verified: an ID-JAG from a file, or `-` for standard input.
    #[arg(long, group = "how", value_name = "FILE")]
    id_jag: Option<String>,
    /// Agent verified: a command that prints a fresh ID-JAG (run again to
    /// register again after a revocation).
    #[arg(long, group = "how", value_name = "COMMAND")]
    id_jag_command: Option<String>,
    /// api_key or access_token (email and ID-JAG flows).
    #[arg(long, default_value = "api_key")]
    credential_type: String,
    /// Print the credential.
    #[arg(long)]
    show_secrets: bool,
}

#[derive(Args)]
pub struct CallArgs {
    /// The URL to call: under the resource of a service a credential is kept for.
    url: String,
    /// The method (default GET, or POST with --data).
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// A header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// A body; `@FILE` reads a file, `@-` standard input.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Print the status line and headers too.
    #[arg(short = 'i', long)]
    include: bool,
    /// Exit with status 22 on an HTTP error (as curl -f).
    #[arg(short = 'f', long)]
    fail: bool,
}

/// How a kept registration can be renewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Renewal {
    Anonymous,
    Email {
        address: String,
        credential_type: CredentialType,
    },
    IdJag {
        credential_type: CredentialType,
        /// The command that mints a fresh assertion, if one was given.
        command: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    service: Service,
    renewal: Renewal,
    registration: Registration,
    credential: Option<Credential>,
    /// The email a claim was started for.
    #[serde(default)]
    claim_email: Option<String>,
    /// Whether a user claimed it (then it is never silently replaced by a
    /// new, unclaimed registration).
    #[serde(default)]
    claimed: bool,
}

#[derive(Debug, Default)]
struct Kept {
    services: BTreeMap<String, Entry>,
}

/// The store's lock, held by the command from start to end: two `authmd
/// agent` processes never overwrite each other's registrations.
static HELD: std::sync::OnceLock<StoreLock> = std::sync::OnceLock::new();

fn store() -> anyhow::Result<Store> {
    Ok(Store::new(Store::default_path()?))
}

impl Kept {
    fn path() -> anyhow::Result<PathBuf> {
        Ok(store()?.path().to_owned())
    }

    fn load() -> anyhow::Result<Kept> {
        Ok(Kept {
            services: store()?.read()?,
        })
    }

    /// Writes atomically, readable only by the user, under the command's lock.
    fn save(&self) -> anyhow::Result<()> {
        let lock = HELD
            .get()
            .ok_or_else(|| anyhow!("the credential store is not locked"))?;
        lock.write(&self.services)?;
        Ok(())
    }

    /// The service whose resource covers `url`: the only one whose
    /// credential may be sent there.
    fn for_url(&self, url: &str) -> anyhow::Result<String> {
        self.services
            .iter()
            .find(|(_, e)| e.service.covers(url))
            .map(|(i, _)| i.clone())
            .ok_or_else(|| {
                anyhow!("no registration kept for {url}; run `authmd agent register` first")
            })
    }

    /// The entry for `which` (an issuer or a URL under a service's
    /// resource), or the only one.
    fn find(&self, which: Option<&str>) -> anyhow::Result<String> {
        match which {
            Some(w) => {
                let w = w.trim_end_matches('/');
                self.services
                    .iter()
                    .find(|(issuer, e)| issuer.as_str() == w || e.service.covers(w))
                    .map(|(i, _)| i.clone())
                    .ok_or_else(|| {
                        anyhow!("no registration kept for {w}; run `authmd agent register` first")
                    })
            }
            None => match self.services.len() {
                0 => bail!("no registration kept; run `authmd agent register URL` first"),
                1 => Ok(self.services.keys().next().cloned().unwrap_or_default()),
                _ => bail!("several services are kept; say which with --service"),
            },
        }
    }
}

/// Text from a service, safe to print: control characters (terminal
/// escapes) dropped.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn credential_type(s: &str) -> anyhow::Result<CredentialType> {
    match s {
        "api_key" => Ok(CredentialType::ApiKey),
        "access_token" => Ok(CredentialType::AccessToken),
        other => bail!("--credential-type must be api_key or access_token, not {other:?}"),
    }
}

/// Runs `command` in a shell and returns its output, trimmed: a fresh ID-JAG.
fn run_minter(command: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed ({})", out.status);
    }
    let assertion = String::from_utf8(out.stdout)
        .context("the ID-JAG command printed something that is not text")?
        .trim()
        .to_owned();
    if assertion.is_empty() {
        bail!("{command:?} printed no ID-JAG");
    }
    Ok(assertion)
}

fn read_assertion(source: &str) -> anyhow::Result<String> {
    let mut s = String::new();
    if source == "-" {
        std::io::stdin().read_to_string(&mut s)?;
    } else {
        s = std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?;
    }
    Ok(s.trim().to_owned())
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Protocol {
            status,
            code,
            message,
            retry_after,
        } => {
            let retry = retry_after
                .map(|d| format!(" (retry after {} s)", d.as_secs()))
                .unwrap_or_default();
            format!(
                "the service refused: {status} {}: {}{retry}",
                clean(code),
                clean(message)
            )
        }
        other => clean(&other.to_string()),
    }
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    let client = Client::new()?;
    if !matches!(cmd, AgentCommand::Discover { .. }) {
        let lock = store()?.lock().await?;
        let _ = HELD.set(lock);
    }
    match cmd {
        AgentCommand::Discover { url, json } => {
            let service = discover(&client, &url).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&service)?);
                return Ok(());
            }
            let a = service.agent_auth();
            println!("resource:      {}", clean(&service.resource.resource));
            if let Some(name) = &service.resource.resource_name {
                println!("name:          {}", clean(name));
            }
            println!("issuer:        {}", service.issuer);
            println!(
                "scopes:        {}",
                clean(&service.resource.scopes_supported.join(" "))
            );
            let methods: Vec<&str> = [
                (MethodKind::Anonymous, "anonymous"),
                (MethodKind::Email, "email"),
                (MethodKind::IdJag, "id-jag"),
            ]
            .into_iter()
            .filter(|(k, _)| service.supports(*k))
            .map(|(_, n)| n)
            .collect();
            println!(
                "registration:  {} ({})",
                clean(&a.register_uri),
                methods.join(", ")
            );
            if let Some(c) = &a.claim_uri {
                println!("claim:         {}", clean(c));
            }
            if let Some(r) = &a.revocation_uri {
                println!("revocation:    {}", clean(r));
            }
            if let Some(s) = &a.skill {
                println!("instructions:  {}", clean(s));
            }
            Ok(())
        }
        AgentCommand::Register(args) => register(&client, args).await,
        AgentCommand::Claim { email, service } => {
            let mut kept = Kept::load()?;
            let issuer = kept.find(service.as_deref())?;
            let entry = kept
                .services
                .get_mut(&issuer)
                .ok_or_else(|| anyhow!("gone"))?;
            let started = client
                .start_claim(&entry.service, &entry.registration, &email)
                .await
                .map_err(|e| anyhow!(describe(&e)))?;
            entry.claim_email = Some(email.clone());
            kept.save()?;
            println!(
                "a claim email went to {email} (attempt {}, link valid until {}).",
                clean(&started.claim_attempt_id),
                started.expires_at.as_deref().unwrap_or("?")
            );
            println!(
                "Ask the user to open it, press \"Show my code\", and tell you the code; then run `authmd agent complete`."
            );
            Ok(())
        }
        AgentCommand::Complete { otp, service } => {
            let mut kept = Kept::load()?;
            let issuer = kept.find(service.as_deref())?;
            let entry = kept
                .services
                .get_mut(&issuer)
                .ok_or_else(|| anyhow!("gone"))?;
            let otp = match otp {
                Some(o) => o,
                None => prompt_code()?,
            };
            let done = client
                .complete_claim(&entry.service, &entry.registration, &otp)
                .await
                .map_err(|e| anyhow!(describe(&e)))?;
            entry.registration.absorb(&done);
            entry.claimed = true;
            if done.credential.is_some() {
                entry.credential = Some(entry.registration.credential(&entry.service)?);
            }
            let scopes = clean(&entry.registration.scopes.join(" "));
            kept.save()?;
            println!(
                "claimed: registration {} now holds {scopes}",
                clean(&done.registration_id)
            );
            Ok(())
        }
        AgentCommand::Call(args) => call(&client, args).await,
        AgentCommand::Status { show_secrets, json } => {
            let kept = Kept::load()?;
            if json {
                let mut v = serde_json::to_value(&kept.services)?;
                if !show_secrets {
                    redact(&mut v);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if kept.services.is_empty() {
                println!("no registrations kept ({})", Kept::path()?.display());
            }
            for (issuer, e) in &kept.services {
                let r = &e.registration;
                println!("{issuer}");
                println!("  resource:      {}", e.service.resource.resource);
                println!(
                    "  registration:  {} ({})",
                    clean(&r.registration_id),
                    r.registration_type.as_deref().unwrap_or("?")
                );
                println!("  scopes:        {}", clean(&r.scopes.join(" ")));
                match (&e.credential, show_secrets) {
                    (Some(c), true) => println!("  credential:    {}", c.secret),
                    (Some(c), false) => println!("  credential:    {} (hidden)", prefix(&c.secret)),
                    (None, _) => println!("  credential:    none yet (complete the claim)"),
                }
                if let Some(t) = &r.claim_token {
                    if show_secrets {
                        println!("  claim token:   {t}");
                    }
                    if let Some(x) = &r.claim_token_expires {
                        println!("  claim by:      {x}");
                    }
                }
            }
            Ok(())
        }
        AgentCommand::Revoke { service } => revoke(&client, service.as_deref()).await,
        AgentCommand::Forget { service, all } => {
            let mut kept = Kept::load()?;
            if all {
                kept.services.clear();
            } else {
                let issuer = kept.find(service.as_deref())?;
                kept.services.remove(&issuer);
            }
            kept.save()?;
            println!("forgotten");
            Ok(())
        }
    }
}

fn prefix(secret: &str) -> String {
    secret.chars().take(7).collect::<String>() + "…"
}

fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if matches!(k.as_str(), "secret" | "credential" | "claim_token") && v.is_string() {
                    *v = "(hidden)".into();
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

fn prompt_code() -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no code: pass --otp CODE (there is no terminal to ask on)");
    }
    eprint!("The code the user read from the claim page: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

async fn revoke(client: &Client, which: Option<&str>) -> anyhow::Result<()> {
    let mut kept = Kept::load()?;
    let issuer = kept.find(which)?;
    let entry = kept
        .services
        .get_mut(&issuer)
        .ok_or_else(|| anyhow!("gone"))?;
    let credential = entry.credential.clone().ok_or_else(|| {
        anyhow!("no credential kept for {issuer}: nothing to revoke (`authmd agent forget` drops the registration)")
    })?;
    if entry.service.metadata.revocation_endpoint.is_none() {
        // Kept before the service published one: read its metadata again.
        entry.service.metadata = client
            .authorization_server(&issuer)
            .await
            .map_err(|e| anyhow!(describe(&e)))?;
    }
    client
        .revoke(&entry.service, &credential)
        .await
        .map_err(|e| anyhow!(describe(&e)))?;
    let registration = clean(&entry.registration.registration_id);
    kept.services.remove(&issuer);
    kept.save()?;
    println!(
        "revoked: the credential of registration {registration} no longer works at {issuer}; forgotten"
    );
    Ok(())
}

/// Discovery, with what it accepted under reservation shown on stderr.
async fn discover(client: &Client, url: &str) -> anyhow::Result<authmd_client::Service> {
    let service = client
        .discover(url)
        .await
        .map_err(|e| anyhow!(describe(&e)))?;
    for w in &service.warnings {
        eprintln!("authmd: warning: {}", clean(w));
    }
    Ok(service)
}

async fn register(client: &Client, args: RegisterArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let service = discover(client, &args.url).await?;
    let ct = credential_type(&args.credential_type)?;
    let (method, renewal) = if args.anonymous {
        (Method::Anonymous, Renewal::Anonymous)
    } else if let Some(address) = args.email {
        (
            Method::Email {
                address: address.clone(),
                credential_type: ct,
            },
            Renewal::Email {
                address,
                credential_type: ct,
            },
        )
    } else if let Some(source) = args.id_jag {
        (
            Method::IdJag {
                assertion: read_assertion(&source)?,
                credential_type: ct,
            },
            Renewal::IdJag {
                credential_type: ct,
                command: None,
            },
        )
    } else if let Some(command) = args.id_jag_command {
        (
            Method::IdJag {
                assertion: run_minter(&command)?,
                credential_type: ct,
            },
            Renewal::IdJag {
                credential_type: ct,
                command: Some(command),
            },
        )
    } else {
        // No choice made: the first the service offers that needs no input.
        match service.choose(&[MethodKind::Anonymous]) {
            Some(_) => (Method::Anonymous, Renewal::Anonymous),
            None => bail!(
                "say how to register: --anonymous, --email ADDRESS, --id-jag FILE or --id-jag-command CMD"
            ),
        }
    };
    // Read before registering: a credential is never obtained that could
    // not be kept.
    let mut kept = Kept::load()?;
    let registration = client
        .register(&service, &method)
        .await
        .map_err(|e| anyhow!(describe(&e)))?;
    let credential = registration.credential(&service).ok();
    let entry = Entry {
        service: service.clone(),
        renewal,
        registration: registration.clone(),
        credential: credential.clone(),
        claim_email: None,
        claimed: false,
    };
    kept.services.insert(service.issuer.clone(), entry);
    if let Err(e) = kept.save() {
        if let Some(c) = &credential {
            eprintln!(
                "authmd agent: the credential could not be kept; here it is: {}",
                c.secret
            );
        }
        return Err(e);
    }
    println!(
        "registered with {} in {} ms: registration {} ({})",
        service.issuer,
        started.elapsed().as_millis(),
        clean(&registration.registration_id),
        registration.registration_type.as_deref().unwrap_or("?")
    );
    match &credential {
        Some(c) => {
            println!(
                "credential: {}",
                if args.show_secrets {
                    c.secret.clone()
                } else {
                    format!("{} (kept; --show-secrets to print)", prefix(&c.secret))
                }
            );
            println!("scopes: {}", clean(&registration.scopes.join(" ")));
        }
        None => println!("no credential yet: the user must claim it (a claim email was sent)"),
    }
    if registration.claim_token.is_some() && credential.is_some() {
        println!(
            "to upgrade to {}, have a user claim it: authmd agent claim --email ADDRESS",
            registration.post_claim_scopes.join(" ")
        );
    } else if credential.is_none() {
        println!("once the user reads you the code from the claim page: authmd agent complete");
    }
    Ok(())
}

async fn call(client: &Client, args: CallArgs) -> anyhow::Result<()> {
    let mut kept = Kept::load()?;
    // Only the credential for the service whose resource covers the URL:
    // a credential is never sent anywhere else.
    let issuer = kept.for_url(&args.url)?;
    let entry = kept
        .services
        .get(&issuer)
        .cloned()
        .ok_or_else(|| anyhow!("gone"))?;
    let mut credential = entry.credential.clone().ok_or_else(|| {
        anyhow!("no credential for {issuer} yet: complete the claim first (authmd agent complete)")
    })?;
    let method = match &args.method {
        Some(m) => reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| anyhow!("{m:?} is not an HTTP method"))?,
        None if args.data.is_some() => reqwest::Method::POST,
        None => reqwest::Method::GET,
    };
    let body = match &args.data {
        Some(d) if d == "@-" => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            Some(b)
        }
        Some(d) if d.starts_with('@') => {
            Some(std::fs::read(&d[1..]).with_context(|| format!("cannot read {}", &d[1..]))?)
        }
        Some(d) => Some(d.clone().into_bytes()),
        None => None,
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("header {h:?} is not `Name: value`"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let build = |mut r: reqwest::RequestBuilder| {
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        if let Some(b) = &body {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                r = r.header("content-type", "application/json");
            }
            r = r.body(b.clone());
        }
        r
    };
    let renewal = entry.renewal.clone();
    let claimed = entry.claimed;
    let renew = |service: Service| async move {
        eprintln!(
            "authmd agent: the credential stopped working; registering again with {}",
            service.issuer
        );
        let method = match &renewal {
            Renewal::Anonymous if claimed => {
                return Err(ClientError::Unsupported(
                    "a user had claimed this registration: register again and have them claim it (authmd agent register --anonymous, then claim)".into(),
                ));
            }
            Renewal::Anonymous => Method::Anonymous,
            Renewal::IdJag {
                credential_type,
                command: Some(cmd),
            } => Method::IdJag {
                assertion: run_minter(cmd).map_err(|e| ClientError::Unsupported(e.to_string()))?,
                credential_type: *credential_type,
            },
            Renewal::IdJag { command: None, .. } => {
                return Err(ClientError::Unsupported(
                    "an ID-JAG is single-use: register again with a fresh one (or use --id-jag-command)".into(),
                ));
            }
            Renewal::Email { .. } => {
                return Err(ClientError::Unsupported(
                    "an email-required registration needs its user: run `authmd agent register --email` again".into(),
                ));
            }
        };
        let registration = client.register(&service, &method).await?;
        let credential = registration.credential(&service)?;
        Ok::<_, ClientError>((credential, registration, service))
    };
    let renewed = std::sync::Mutex::new(None);
    let outcome = client
        .call_or_renew(&mut credential, method, &args.url, build, |service| async {
            let (c, r, s) = renew(service).await?;
            if let Ok(mut slot) = renewed.lock() {
                *slot = Some((r, s));
            }
            Ok(c)
        })
        .await;
    // Keep what changed whatever happened next: a new registration, or the
    // credential's state. A credential that was refused and could not be
    // renewed is dropped, so the next step is a fresh registration.
    let fresh = renewed.into_inner().ok().flatten();
    let renewed_now = fresh.is_some();
    if let Some(e) = kept.services.get_mut(&issuer) {
        if let Some((registration, service)) = fresh {
            e.registration = registration;
            e.service = service;
            e.claimed = false;
            e.claim_email = None;
        }
        let dead = matches!(&outcome, Err(err) if !matches!(err, ClientError::Http(_)));
        e.credential = if dead && !renewed_now {
            None
        } else {
            Some(credential)
        };
    }
    kept.save()?;
    let response = match outcome {
        Ok((r, _)) => r,
        Err(ClientError::Http(e)) => bail!("cannot reach the service: {}", clean(&e.to_string())),
        Err(e) => bail!(describe(&e)),
    };
    let status = response.status();
    let mut out = std::io::stdout().lock();
    if args.include {
        writeln!(out, "HTTP/1.1 {status}")?;
        for (k, v) in response.headers() {
            writeln!(out, "{k}: {}", v.to_str().unwrap_or("(binary)"))?;
        }
        writeln!(out)?;
    }
    let bytes = response.bytes().await?;
    out.write_all(&bytes)?;
    if !bytes.ends_with(b"\n") && std::io::stdout().is_terminal() {
        writeln!(out)?;
    }
    out.flush()?;
    if args.fail && (status.is_client_error() || status.is_server_error()) {
        std::process::exit(22);
    }
    Ok(())
}
