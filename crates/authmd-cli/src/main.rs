//! The `authmd` binary: `serve`, `migrate`, `check-config`, and the
//! operator commands (`audit`, `registrations`, `users`, `delegations`,
//! `providers`, `revoke-all`, `block`, `unblock`), and the other two roles of the protocol:
//! `agent` (an agent's client) and `provider` (a development agent
//! provider).

mod admin;
mod agent;
mod audit;
mod blocks;
mod private;
mod provider;
mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: measurably cheaper than the system allocator on the request
/// path (many small, short-lived allocations per request).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "authmd",
    version,
    about = "The auth.md server: makes an API agent-ready"
)]
struct Cli {
    /// Configuration file (TOML). Every key can also be set with an
    /// AUTHMD_* environment variable.
    #[arg(long, global = true, env = "AUTHMD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration and print the resolved discovery URLs.
    CheckConfig,
    /// The audit trail: list, export, tail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Agent registrations: list, show, revoke.
    #[command(subcommand)]
    Registrations(admin::RegistrationsCommand),
    /// Users: list, revoke all of one user's registrations.
    #[command(subcommand)]
    Users(admin::UsersCommand),
    /// Delegations: which provider subject is which user.
    #[command(subcommand)]
    Delegations(admin::DelegationsCommand),
    /// Providers: revoke everything one provider issued.
    #[command(subcommand)]
    Providers(admin::ProvidersCommand),
    /// Revoke every live agent registration and credential (incident
    /// response; asks for confirmation unless --yes).
    RevokeAll(admin::RevokeAllArgs),
    /// Stop a provider subject, a user or an email address from
    /// registering again; list the blocks in force.
    #[command(subcommand)]
    Block(blocks::BlockCommand),
    /// Lift a block.
    #[command(subcommand)]
    Unblock(blocks::UnblockCommand),
    /// Be an agent: discover a service, register, claim, call its API.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Be a development agent provider: keys, JWKS, ID-JAGs, revocation.
    Provider(provider::ProviderArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent and the provider are clients of a server, not servers:
    // they read no server configuration.
    let result = match cli.command {
        Command::Agent(cmd) => runtime(1).and_then(|rt| rt.block_on(agent::run(cmd))),
        Command::Provider(args) => runtime(1).and_then(|rt| {
            init_logging("text");
            rt.block_on(provider::run(args))
        }),
        command => {
            let env: BTreeMap<String, String> = std::env::vars().collect();
            match authmd::config::load(cli.config.as_deref(), &env) {
                Ok(config) => server_command(command, config),
                Err(e) => {
                    eprintln!("authmd: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authmd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The commands that act on the server's own database or configuration.
fn server_command(command: Command, config: authmd::Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve::run(config),
        Command::Migrate => runtime(1).and_then(|rt| {
            rt.block_on(async {
                init_logging("text");
                authmd::AuthMd::open(config).await?;
                eprintln!("authmd: migrations applied");
                Ok(())
            })
        }),
        Command::CheckConfig => {
            let urls = authmd::discovery::Urls::new(&config);
            println!("configuration is valid");
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
        Command::Audit(cmd) => runtime(1).and_then(|rt| rt.block_on(audit::run(cmd, config))),
        Command::Registrations(cmd) => {
            runtime(1).and_then(|rt| rt.block_on(admin::registrations(cmd, config)))
        }
        Command::Users(cmd) => runtime(1).and_then(|rt| rt.block_on(admin::users(cmd, config))),
        Command::Delegations(cmd) => {
            runtime(1).and_then(|rt| rt.block_on(admin::delegations(cmd, config)))
        }
        Command::Providers(cmd) => {
            runtime(1).and_then(|rt| rt.block_on(admin::providers(cmd, config)))
        }
        Command::RevokeAll(args) => {
            runtime(1).and_then(|rt| rt.block_on(admin::revoke_all(args, config)))
        }
        Command::Block(cmd) => runtime(1).and_then(|rt| rt.block_on(blocks::block(cmd, config))),
        Command::Unblock(cmd) => {
            runtime(1).and_then(|rt| rt.block_on(blocks::unblock(cmd, config)))
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

/// Logs to stderr; `AUTHMD_LOG` sets the filter (default `info`).
fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AUTHMD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
