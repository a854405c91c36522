//! `authmd agent`: an agent's side of auth.md from the command line, in
//! either dialect, over `authmd_client::agent::Agent`. Credentials are
//! kept per service (by issuer) in the client's store
//! (`$AUTHMD_AGENT_HOME/credentials.json`, default
//! `~/.config/authmd/agent/`), shared with `authmd agent mcp`; secrets are
//! printed only with `--show-secrets`.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use authmd_client::agent::{Agent, Authenticate, Outcome, OutcomeStatus, Renewed};
use authmd_client::store::Store;
use authmd_client::{Client, ClientError, CredentialType, Dialect, MethodKind, Options};
use clap::{Args, Subcommand};

// The MCP server lives beside this file; declared here, as part of the
// agent role.
#[path = "mcp.rs"]
mod mcp;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Discover a service from an API URL or its issuer and show how agents
    /// register there, and in which dialect (docs/protocol.md §2).
    Discover {
        /// An API URL of the service (its 401 leads to the metadata), or its issuer.
        url: String,
        /// Print the discovered documents as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        options: ClientArgs,
    },
    /// Register with a service and keep the credential (docs/protocol.md §3).
    Register(RegisterArgs),
    /// Start the claim of an anonymous registration: the original dialect
    /// emails the user; the current one prints a link to give them
    /// (docs/protocol.md §4).
    Claim {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// Which service (its issuer or an API URL); needed when several are kept.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        options: ClientArgs,
    },
    /// Complete the claim with the code the user reads from the claim page
    /// (docs/protocol.md §4.4).
    Complete {
        /// The code; without it, asked for on the terminal.
        #[arg(long, alias = "code", alias = "user-code")]
        otp: Option<String>,
        /// Which service (its issuer or an API URL); needed when several are kept.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        options: ClientArgs,
    },
    /// Call the API with the kept credential (curl-like). The credential is
    /// renewed on the way (access token, assertion, refresh token, or a new
    /// registration where no user is needed), and once more after a 401.
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
        #[command(flatten)]
        options: ClientArgs,
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
    /// Serve the agent side as an MCP server over stdio (tools
    /// authmd_authenticate, authmd_complete_claim, authmd_fetch,
    /// authmd_status, authmd_revoke), for any MCP host.
    Mcp {
        #[command(flatten)]
        options: ClientArgs,
    },
}

/// How the client treats services.
#[derive(Args, Clone, Default)]
pub struct ClientArgs {
    /// Speak this dialect (original or current) whatever discovery
    /// suggests; by default the current one where `identity_endpoint` is
    /// published.
    #[arg(long, env = "AUTHMD_AGENT_DIALECT", value_name = "DIALECT")]
    dialect: Option<String>,
    /// Accept plain http to hosts other than loopback (credentials then
    /// cross the network in clear; never in production).
    #[arg(long, env = "AUTHMD_AGENT_ALLOW_HTTP")]
    allow_http: bool,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// An API URL of the service, or its issuer.
    url: String,
    /// Anonymous start: a credential now, claimed by a user later.
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
    /// api_key or access_token (original dialect, email and ID-JAG flows).
    #[arg(long, default_value = "api_key")]
    credential_type: String,
    /// RFC 8707 resource the access token is bound to (current dialect).
    #[arg(long)]
    resource: Option<String>,
    /// Print the credential.
    #[arg(long)]
    show_secrets: bool,
    #[command(flatten)]
    options: ClientArgs,
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
    #[command(flatten)]
    options: ClientArgs,
}

/// Text from a service, safe to print: control characters (terminal
/// escapes) dropped.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Protocol {
            status,
            code,
            message,
            retry_after,
            ..
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
        ClientError::Http(e) => format!("cannot reach the service: {}", clean(&e.to_string())),
        other => clean(&other.to_string()),
    }
}

/// The refusal as the error of the command; what was accepted on the way
/// (a `{code, message}` body) as a warning on stderr, as for every other
/// defect of real services.
fn fail(e: ClientError) -> anyhow::Error {
    if let Some(w) = e.warning() {
        eprintln!("authmd: warning: {}", clean(w));
    }
    anyhow!(describe(&e))
}

fn agent(options: &ClientArgs) -> anyhow::Result<Agent> {
    let dialect = options
        .dialect
        .as_deref()
        .map(|d| d.parse::<Dialect>().map_err(|e| anyhow!(e)))
        .transpose()?;
    let client = Client::new()?.with_options(Options {
        dialect,
        allow_http: options.allow_http,
    });
    Ok(Agent::new(client, Store::new(Store::default_path()?)))
}

fn prefix(secret: &str) -> String {
    secret.chars().take(7).collect::<String>() + "…"
}

fn warn(o: &Outcome) {
    for w in &o.warnings {
        eprintln!("authmd: warning: {}", clean(w));
    }
}

/// What a claim asks of the user, for a person at a terminal.
fn claim_lines(o: &Outcome) {
    let Some(c) = &o.claim else { return };
    if !c.started {
        return;
    }
    match (&c.verification_uri, &c.email) {
        (Some(uri), email) => {
            println!(
                "give the user this link: {}{}",
                clean(uri),
                email
                    .as_deref()
                    .map(|e| format!(" (they sign in as {})", clean(e)))
                    .unwrap_or_default()
            );
            println!(
                "they confirm, the page shows a 6-digit code; once they read it to you: authmd agent complete"
            );
        }
        (None, Some(email)) => {
            println!(
                "a claim email went to {} (valid until {}).",
                clean(email),
                c.expires_at.as_deref().unwrap_or("?")
            );
            println!(
                "Ask the user to open it, press \"Show my code\", and tell you the code; then run `authmd agent complete`."
            );
        }
        (None, None) => {}
    }
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Discover { url, json, options } => {
            let agent = agent(&options)?;
            let service = agent.client().discover(&url).await.map_err(fail)?;
            for w in &service.warnings {
                eprintln!("authmd: warning: {}", clean(w));
            }
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
            println!("dialect:       {}", service.dialect.as_str());
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
                clean(service.registration_endpoint().unwrap_or("?")),
                methods.join(", ")
            );
            let claim = match service.dialect {
                Dialect::Original => a.claim_uri.as_ref(),
                Dialect::Current => a.claim_endpoint.as_ref(),
            };
            if let Some(c) = claim {
                println!("claim:         {}", clean(c));
            }
            if let Some(t) = &service.metadata.token_endpoint {
                println!("token:         {}", clean(t));
            }
            if let Some(r) = &service.metadata.revocation_endpoint {
                println!("revocation:    {}", clean(r));
            }
            if let Some(s) = &a.skill {
                println!("instructions:  {}", clean(s));
            }
            Ok(())
        }
        AgentCommand::Register(args) => register(args).await,
        AgentCommand::Claim {
            email,
            service,
            options,
        } => {
            let o = agent(&options)?
                .start_claim(service.as_deref(), &email)
                .await
                .map_err(fail)?;
            warn(&o);
            claim_lines(&o);
            Ok(())
        }
        AgentCommand::Complete {
            otp,
            service,
            options,
        } => {
            let agent = agent(&options)?;
            let otp = match otp {
                Some(o) => o,
                None => prompt_code()?,
            };
            let o = agent
                .complete_claim(service.as_deref(), &otp)
                .await
                .map_err(fail)?;
            warn(&o);
            println!(
                "claimed: registration {} now holds {}",
                clean(&o.registration_id),
                clean(&o.scopes.join(" "))
            );
            Ok(())
        }
        AgentCommand::Call(args) => call(args).await,
        AgentCommand::Status { show_secrets, json } => status(show_secrets, json),
        AgentCommand::Revoke { service, options } => {
            let agent = agent(&options)?;
            let which = service.as_deref();
            let id = agent.revoke(which).await.map_err(fail)?;
            println!(
                "revoked: the credential of registration {} no longer works at {}; forgotten",
                clean(&id),
                which.unwrap_or("the service")
            );
            Ok(())
        }
        AgentCommand::Forget { service, all } => {
            agent(&ClientArgs::default())?
                .forget(service.as_deref(), all)
                .await
                .map_err(fail)?;
            println!("forgotten");
            Ok(())
        }
        AgentCommand::Mcp { options } => mcp::serve(agent(&options)?).await,
    }
}

fn status(show_secrets: bool, json: bool) -> anyhow::Result<()> {
    let agent = agent(&ClientArgs::default())?;
    if show_secrets {
        let all = agent.records().map_err(fail)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&all)?);
            return Ok(());
        }
        for (issuer, r) in &all {
            println!("{issuer}");
            if let Some(a) = &r.access {
                println!("  credential:    {}", a.value);
            }
            if let Some(a) = &r.refresh_token {
                println!("  refresh token: {}", a.value);
            }
            if let Some(c) = &r.claim {
                println!("  claim token:   {}", c.token.value);
            }
        }
        return Ok(());
    }
    let entries = agent.status().map_err(fail)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("no registrations kept ({})", agent.store().path().display());
    }
    for e in &entries {
        println!("{}", e.issuer);
        println!("  dialect:       {}", e.dialect.as_str());
        println!("  resource:      {}", clean(&e.resource));
        println!(
            "  registration:  {} ({})",
            clean(&e.registration_id),
            clean(e.registration_type.as_deref().unwrap_or("?"))
        );
        println!("  scopes:        {}", clean(&e.scopes.join(" ")));
        println!(
            "  credential:    {}",
            match (e.has_access_token, &e.access_expires_at) {
                (true, Some(x)) => format!("kept (hidden), expires {x}"),
                (true, None) => "kept (hidden)".into(),
                (false, _) if e.has_assertion || e.has_refresh_token => {
                    "renewable (an assertion or refresh token is kept)".into()
                }
                (false, _) => "none yet (complete the claim)".into(),
            }
        );
        if let Some(c) = &e.claim {
            if let Some(u) = &c.verification_uri {
                println!("  claim link:    {}", clean(u));
            }
            if let Some(m) = &c.email {
                println!("  claim for:     {}", clean(m));
            }
            if let Some(x) = &c.expires_at {
                println!("  claim by:      {x}");
            }
        }
    }
    Ok(())
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

fn read_assertion(source: &str) -> anyhow::Result<String> {
    let mut s = String::new();
    if source == "-" {
        std::io::stdin().read_to_string(&mut s)?;
    } else {
        s = std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?;
    }
    Ok(s.trim().to_owned())
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let agent = agent(&args.options)?;
    let credential_type = match args.credential_type.as_str() {
        "api_key" => CredentialType::ApiKey,
        "access_token" => CredentialType::AccessToken,
        other => bail!("--credential-type must be api_key or access_token, not {other:?}"),
    };
    let id_jag = args.id_jag.as_deref().map(read_assertion).transpose()?;
    let o = agent
        .authenticate(Authenticate {
            target: args.url.clone(),
            email: args.email.clone(),
            id_jag,
            id_jag_command: args.id_jag_command.clone(),
            anonymous: args.anonymous,
            resource: args.resource.clone(),
            force_reregister: true,
            credential_type: Some(credential_type),
        })
        .await
        .map_err(fail)?;
    warn(&o);
    println!(
        "registered with {} in {} ms: registration {} ({}, {} dialect)",
        o.issuer,
        started.elapsed().as_millis(),
        clean(&o.registration_id),
        clean(o.registration_type.as_deref().unwrap_or("?")),
        o.dialect.as_str()
    );
    match o.status {
        OutcomeStatus::Authenticated => {
            let shown = agent
                .records()
                .ok()
                .and_then(|all| all.get(&o.issuer).and_then(|r| r.access.clone()))
                .map(|a| {
                    if args.show_secrets {
                        a.value
                    } else {
                        format!("{} (kept; --show-secrets to print)", prefix(&a.value))
                    }
                })
                .unwrap_or_else(|| "(kept)".into());
            println!("credential: {shown}");
            println!("scopes: {}", clean(&o.scopes.join(" ")));
            if o.claim.as_ref().is_some_and(|c| !c.started) && !o.claimed {
                println!(
                    "to upgrade to {}, have a user claim it: authmd agent claim --email ADDRESS",
                    clean(&o.post_claim_scopes.join(" "))
                );
            }
        }
        OutcomeStatus::ClaimRequired => {
            println!("no credential yet: the user must claim it");
        }
    }
    claim_lines(&o);
    Ok(())
}

async fn call(args: CallArgs) -> anyhow::Result<()> {
    let agent = agent(&args.options)?;
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
    let fetched = agent.fetch(&args.url, method, build).await.map_err(fail)?;
    match fetched.renewed {
        Some(Renewed::Reregistered) => eprintln!(
            "authmd agent: the credential stopped working; registering again with {} (done)",
            fetched.issuer
        ),
        Some(Renewed::Refreshed) => {
            eprintln!("authmd agent: renewed the credential with the refresh token")
        }
        Some(Renewed::Exchanged) | None => {}
    }
    let response = fetched.response;
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
