//! The `authmd` binary: `serve`, `migrate`, `backup`, `check-config`, and the
//! operator commands (`audit`, `registrations`, `users`, `delegations`,
//! `providers`, `keys`, `revoke-all`, `block`, `unblock`), and the other two roles of the protocol:
//! `agent` (an agent's client) and `provider` (a development agent
//! provider).

mod admin;
mod agent;
mod audit;
mod blocks;
#[cfg(test)]
mod help_tests;
mod keys;
mod listen;
mod private;
mod provider;
mod serve;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc: measurably cheaper than the system allocator on the request
/// path (many small, short-lived allocations per request).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "authmd",
    version,
    about = "The auth.md server: makes an API agent-ready",
    long_about = "The auth.md server: makes an API agent-ready.\n\n\
        The protocol as authmd implements it: docs/protocol.md. \
        Configuration: authmd.example.toml and the README."
)]
struct Cli {
    /// Configuration file (TOML) of the server and operator commands; may
    /// also follow the command (`authmd serve --config FILE`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// `--config` of the commands that read the server's configuration.
#[derive(Args)]
pub(crate) struct ConfigFile {
    /// Configuration file (TOML); default: $AUTHMD_CONFIG, else none. Every
    /// key can also be set with an AUTHMD_* environment variable (see
    /// authmd.example.toml).
    #[arg(long = "config", global = true, value_name = "FILE")]
    file: Option<PathBuf>,
}

/// `check-config`.
#[derive(Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// Also fail on what is wrong for serving the public: a loopback
    /// issuer, no TLS (neither here nor a trusted proxy), mail to the
    /// outbox, rate limits off, a plain-HTTP admin API off loopback.
    #[arg(long)]
    production: bool,
}

/// `backup`.
#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// The file to write: a complete SQLite database (it must not exist).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
}

/// A group of operator commands, all reading the server's configuration.
#[derive(Args)]
struct Operator<C: Subcommand> {
    #[command(flatten)]
    config: ConfigFile,
    #[command(subcommand)]
    command: C,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (applies pending migrations first).
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(ConfigFile),
    /// Copy the SQLite database to a new file, consistently, while the
    /// server runs (PostgreSQL: use pg_dump).
    Backup(BackupArgs),
    /// Validate the configuration, print the resolved discovery URLs and
    /// warn about placeholder secrets.
    CheckConfig(CheckConfigArgs),
    /// The audit trail: list, export, tail.
    Audit(Operator<audit::AuditCommand>),
    /// Agent registrations: list, show, revoke.
    Registrations(Operator<admin::RegistrationsCommand>),
    /// Users: list, revoke all of one user's registrations.
    Users(Operator<admin::UsersCommand>),
    /// Delegations: which provider subject is which user.
    Delegations(Operator<admin::DelegationsCommand>),
    /// Providers: revoke everything one provider issued (asks for
    /// confirmation unless --yes).
    Providers(Operator<admin::ProvidersCommand>),
    /// authmd's own signing keys: list, rotate.
    Keys(Operator<keys::KeysCommand>),
    /// Revoke every live agent registration and credential (incident
    /// response; asks for confirmation unless --yes).
    RevokeAll {
        #[command(flatten)]
        config: ConfigFile,
        #[command(flatten)]
        args: admin::RevokeAllArgs,
    },
    /// Stop a provider subject, a user or an email address from
    /// registering again; list the blocks in force.
    Block(Operator<blocks::BlockCommand>),
    /// Lift a block.
    Unblock(Operator<blocks::UnblockCommand>),
    /// Be an agent: discover a service, register, claim, call its API.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Be a development agent provider: keys, JWKS, ID-JAGs, revocation.
    Provider(provider::ProviderArgs),
}

impl Command {
    /// The `--config` of a command that reads the server's configuration.
    fn config_file(&self) -> Option<&ConfigFile> {
        match self {
            Command::Serve(a) => Some(&a.config),
            Command::Migrate(c) => Some(c),
            Command::Backup(a) => Some(&a.config),
            Command::CheckConfig(a) => Some(&a.config),
            Command::Audit(o) => Some(&o.config),
            Command::Registrations(o) => Some(&o.config),
            Command::Users(o) => Some(&o.config),
            Command::Delegations(o) => Some(&o.config),
            Command::Providers(o) => Some(&o.config),
            Command::Keys(o) => Some(&o.config),
            Command::Block(o) => Some(&o.config),
            Command::Unblock(o) => Some(&o.config),
            Command::RevokeAll { config, .. } => Some(config),
            Command::Agent(_) | Command::Provider(_) => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent and the provider are clients of a server, not servers:
    // they read no server configuration.
    let Some(file) = cli.command.config_file() else {
        if cli.config.is_some() {
            eprintln!("authmd: --config configures the server; `agent` and `provider` read none");
            return ExitCode::from(2);
        }
        let result = match cli.command {
            Command::Agent(cmd) => runtime(1).and_then(|rt| rt.block_on(agent::run(cmd))),
            Command::Provider(args) => runtime(1).and_then(|rt| {
                init_logging("text", "info");
                rt.block_on(provider::run(args))
            }),
            _ => unreachable!("every other command reads the configuration"),
        };
        return exit(result);
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let path = (file.file.clone()).or(cli.config.clone()).or_else(|| {
        env.get("AUTHMD_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let mut config = match authmd::config::load(path.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("authmd: {e}");
            return ExitCode::from(2);
        }
    };
    // Development mode is part of the configuration: refused like it.
    let mut dev = None;
    if let Command::Serve(args) = &cli.command
        && args.dev
    {
        match config.development_mode() {
            Ok(changed) => dev = Some(changed),
            Err(e) => {
                eprintln!("authmd: serve --dev: {e}");
                return ExitCode::from(2);
            }
        }
    }
    exit(server_command(cli.command, config, dev))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authmd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The commands that act on the server's own database or configuration.
fn server_command(
    command: Command,
    config: authmd::Config,
    dev: Option<Vec<String>>,
) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(config, args, dev),
        Command::Migrate(_) => runtime(1).and_then(|rt| {
            rt.block_on(async {
                init_logging(config.log_format(), &config.log.level);
                authmd::AuthMd::open(config).await?;
                eprintln!("authmd: migrations applied");
                Ok(())
            })
        }),
        Command::Backup(BackupArgs { to, .. }) => {
            let report = authmd::store::backup::backup_sqlite(config.database.url.expose(), &to)?;
            eprintln!(
                "authmd: {} copied to {} ({} bytes)",
                report.source.display(),
                to.display(),
                report.bytes
            );
            Ok(())
        }
        Command::CheckConfig(CheckConfigArgs { production, .. }) => {
            // The certificate files are read as `serve` would read them.
            tls::from_config(
                "server",
                &config.server.tls_cert_file,
                &config.server.tls_key_file,
            )?;
            tls::from_config(
                "admin",
                &config.admin.tls_cert_file,
                &config.admin.tls_key_file,
            )?;
            if production {
                let findings = config.production_findings();
                if !findings.is_empty() {
                    for f in &findings {
                        eprintln!("authmd: not ready for production: {f}");
                    }
                    anyhow::bail!("{} production check(s) failed (see above)", findings.len());
                }
            }
            let urls = authmd::discovery::Urls::new(&config);
            let warnings = config.warnings();
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            match warnings.len() {
                0 => println!("configuration is valid"),
                n => println!("configuration is valid, with {n} warning(s) (above)"),
            }
            println!("issuer:                   {}", urls.issuer);
            println!("resource:                 {}", urls.resource);
            println!("protected resource metadata: {}", urls.prm);
            println!("authorization server metadata: {}", urls.as_metadata);
            println!("auth.md:                  {}", urls.auth_md);
            println!(
                "database:                 {}",
                serve::describe_database(config.database.url.expose())
            );
            Ok(())
        }
        Command::Audit(o) => runtime(1).and_then(|rt| rt.block_on(audit::run(o.command, config))),
        Command::Registrations(o) => {
            runtime(1).and_then(|rt| rt.block_on(admin::registrations(o.command, config)))
        }
        Command::Users(o) => runtime(1).and_then(|rt| rt.block_on(admin::users(o.command, config))),
        Command::Delegations(o) => {
            runtime(1).and_then(|rt| rt.block_on(admin::delegations(o.command, config)))
        }
        Command::Providers(o) => {
            runtime(1).and_then(|rt| rt.block_on(admin::providers(o.command, config)))
        }
        Command::Keys(o) => runtime(1).and_then(|rt| rt.block_on(keys::run(o.command, config))),
        Command::RevokeAll { args, .. } => {
            runtime(1).and_then(|rt| rt.block_on(admin::revoke_all(args, config)))
        }
        Command::Block(o) => {
            runtime(1).and_then(|rt| rt.block_on(blocks::block(o.command, config)))
        }
        Command::Unblock(o) => {
            runtime(1).and_then(|rt| rt.block_on(blocks::unblock(o.command, config)))
        }
        Command::Agent(_) | Command::Provider(_) => unreachable!("handled by main"),
    }
}

/// One worker: a current-thread runtime (no work-stealing machinery, the
/// fastest choice on one core). More: the multi-threaded scheduler.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    Ok(builder.enable_all().build()?)
}

/// Logs to stderr in `format` (`text` or `json`), filtered by `AUTHMD_LOG`
/// when set, else by `level` (`log.level`: a level or directives).
fn init_logging(format: &str, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTHMD_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|e| {
            eprintln!("authmd: log.level {level:?} is not a filter ({e}); logging at info");
            EnvFilter::new("info")
        });
    // Colours only on a terminal: a log redirected to a file stays greppable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
