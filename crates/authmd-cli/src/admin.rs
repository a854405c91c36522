//! Operator commands on the configured database: the twins of the admin
//! API (`authmd::http::admin_router`). Both call `authmd::admin::Admin`;
//! with `--json` a command prints exactly what its API twin answers.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use authmd::admin::{Admin, AdminError, Page};
use authmd::audit::RequestMeta;
use authmd::store::{
    DelegationFilter, RegistrationFilter, RevokeReport, RevokeTarget, Store, UserFilter,
};
use authmd::{Config, Timestamp};
use clap::{Args, Subcommand};
use serde::Serialize;

#[derive(Subcommand)]
pub enum RegistrationsCommand {
    /// List registrations, oldest first.
    List(RegistrationListArgs),
    /// Show one registration with its credentials and events.
    Show {
        /// The registration id (reg_…).
        id: String,
        /// Print exactly what the admin API answers (JSON), not text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one registration and all its credentials.
    Revoke {
        /// The registration id (reg_…).
        id: String,
        #[command(flatten)]
        who: Who,
        /// Print exactly what the admin API answers (JSON).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RegistrationListArgs {
    /// unclaimed, pending_claim, claimed, active, expired or revoked (repeatable).
    #[arg(long)]
    status: Vec<String>,
    /// anonymous, email-verification or agent-provider.
    #[arg(long = "type")]
    kind: Option<String>,
    /// A user id.
    #[arg(long)]
    user: Option<String>,
    /// The user's or the claim's email.
    #[arg(long)]
    email: Option<String>,
    /// A provider's issuer.
    #[arg(long)]
    provider: Option<String>,
    /// Created from: RFC 3339, or a duration ago (`24h`).
    #[arg(long)]
    created_after: Option<String>,
    /// Created before: RFC 3339, or a duration ago (`24h`).
    #[arg(long)]
    created_before: Option<String>,
    /// Claim deadline from (RFC 3339, or a duration ago).
    #[arg(long)]
    expires_after: Option<String>,
    /// Claim deadline before (RFC 3339, or a duration ago).
    #[arg(long)]
    expires_before: Option<String>,
    /// Continue after this registration id (the `next` of a listing).
    #[arg(long)]
    after: Option<String>,
    /// Rows per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print exactly what the admin API answers (JSON), not a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List users.
    List {
        /// Only the user with this email (domain compared in any case).
        #[arg(long)]
        email: Option<String>,
        /// Continue after this user id (the `next` of a listing).
        #[arg(long)]
        after: Option<String>,
        /// Rows per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print exactly what the admin API answers (JSON), not a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every registration of a user.
    Revoke {
        /// The user id (usr_…).
        user_id: String,
        #[command(flatten)]
        who: Who,
        /// Print exactly what the admin API answers (JSON).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DelegationsCommand {
    /// List delegations: providers' subjects bound to users here.
    List {
        /// Only this provider's (its issuer).
        #[arg(long)]
        provider: Option<String>,
        /// Only this subject at the provider (`sub`).
        #[arg(long)]
        sub: Option<String>,
        /// Only this user's (usr_…).
        #[arg(long)]
        user: Option<String>,
        /// active or revoked.
        #[arg(long)]
        state: Option<String>,
        /// Continue after this cursor (the `next` of a listing).
        #[arg(long)]
        after: Option<String>,
        /// Rows per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print exactly what the admin API answers (JSON), not a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ProvidersCommand {
    /// Revoke everything issued through one provider (asks first).
    Revoke {
        /// The provider's issuer, as configured.
        iss: String,
        #[command(flatten)]
        who: Who,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print exactly what the admin API answers (JSON).
        #[arg(long)]
        json: bool,
    },
}

/// Revoke every live registration and credential: incident response.
#[derive(Args)]
pub struct RevokeAllArgs {
    #[command(flatten)]
    who: Who,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Print exactly what the admin API answers (JSON).
    #[arg(long)]
    json: bool,
}

/// Who acts, and why (recorded in the audit trail).
#[derive(Args)]
pub struct Who {
    /// Why (recorded with the revocation or block).
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Your name in the audit trail (default: $USER).
    #[arg(long)]
    operator: Option<String>,
}

impl Who {
    pub(crate) fn operator(&self) -> String {
        self.operator.clone().unwrap_or_else(|| {
            let user = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into());
            format!("{user} (cli)")
        })
    }
}

/// Opens the configured database (applying pending migrations).
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = authmd::store::open(config.database.url.expose(), 2)
        .await
        .context("cannot open the database")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

pub(crate) fn meta() -> RequestMeta {
    RequestMeta::new(
        None,
        Some(concat!("authmd-cli/", env!("CARGO_PKG_VERSION"))),
    )
}

pub(crate) fn admin_error(e: AdminError) -> anyhow::Error {
    match e {
        AdminError::Store(e) => anyhow::Error::new(e),
        other => anyhow::anyhow!("{other}"),
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Prints rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |out: &mut std::io::StdoutLock<'_>, cells: Vec<String>| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut out, header.iter().map(|h| (*h).to_owned()).collect())?;
    for row in rows {
        line(&mut out, row)?;
    }
    Ok(())
}

fn page_footer<T>(page: &Page<T>) {
    if let Some(next) = &page.next {
        eprintln!("more: --after {next}");
    }
}

pub(crate) fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

fn time(s: Option<&String>, now: Timestamp) -> anyhow::Result<Option<Timestamp>> {
    s.map(|s| crate::audit::parse_time(s, now)).transpose()
}

pub async fn registrations(cmd: RegistrationsCommand, config: Config) -> anyhow::Result<()> {
    let admin = Admin::new(open(&config).await?);
    let now = Timestamp::now();
    match cmd {
        RegistrationsCommand::List(a) => {
            let filter = RegistrationFilter {
                id: None,
                status: a.status,
                kind: a.kind,
                user: a.user,
                email: a.email,
                provider: a.provider,
                created_after: time(a.created_after.as_ref(), now)?,
                created_before: time(a.created_before.as_ref(), now)?,
                expires_after: time(a.expires_after.as_ref(), now)?,
                expires_before: time(a.expires_before.as_ref(), now)?,
                after: a.after,
                limit: Some(a.limit),
            };
            let page = admin
                .registrations(&filter, now)
                .await
                .map_err(admin_error)?;
            if a.json {
                return print_json(&page);
            }
            let rows = page
                .items
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.kind.clone(),
                        r.dialect.clone(),
                        r.status.clone(),
                        r.created_at.to_human(),
                        or_dash(r.user_email.as_deref().or(r.claim_email.as_deref())),
                        or_dash(r.iss.as_deref()),
                        r.live_credentials.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID", "TYPE", "DIALECT", "STATUS", "CREATED", "EMAIL", "PROVIDER", "LIVE",
                ],
                rows,
            )?;
            page_footer(&page);
            Ok(())
        }
        RegistrationsCommand::Show { id, json } => {
            let detail = admin.registration(&id, now).await.map_err(admin_error)?;
            if json {
                return print_json(&detail);
            }
            let r = &detail.registration;
            println!("registration  {}", r.id);
            println!("type          {}", r.kind);
            println!("status        {}", r.status);
            println!("created       {}", r.created_at.to_human());
            if let Some(t) = r.expires_at {
                println!("claim by      {}", t.to_human());
            }
            println!(
                "user          {} {}",
                or_dash(r.user_id.as_deref()),
                r.user_email.as_deref().unwrap_or_default()
            );
            if let (Some(iss), Some(sub)) = (&r.iss, &r.sub) {
                println!("provider      {iss} (sub {sub})");
            }
            println!("\ncredentials:");
            let rows = detail
                .credentials
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        c.kind.clone(),
                        c.scopes.join(" "),
                        c.issued_at.to_human(),
                        c.expires_at.map_or("-".into(), Timestamp::to_human),
                        c.revoked_at.map_or("-".into(), Timestamp::to_human),
                    ]
                })
                .collect();
            table(
                &["ID", "TYPE", "SCOPES", "ISSUED", "EXPIRES", "REVOKED"],
                rows,
            )?;
            println!("\nevents:");
            for e in &detail.events {
                println!("  {}  {}  {}", e.at.to_human(), e.event, e.data);
            }
            Ok(())
        }
        RegistrationsCommand::Revoke { id, who, json } => {
            revoke(&admin, RevokeTarget::Registration(id), &who, json).await
        }
    }
}

async fn revoke(admin: &Admin, target: RevokeTarget, who: &Who, json: bool) -> anyhow::Result<()> {
    let report: RevokeReport = admin
        .revoke(
            target,
            &who.operator(),
            who.reason.clone(),
            &meta(),
            Timestamp::now(),
        )
        .await
        .map_err(admin_error)?;
    if json {
        return print_json(&report);
    }
    println!(
        "revoked {} registration(s) and {} credential(s); running servers refuse them within a second",
        report.registrations, report.credentials
    );
    Ok(())
}

pub async fn users(cmd: UsersCommand, config: Config) -> anyhow::Result<()> {
    let admin = Admin::new(open(&config).await?);
    match cmd {
        UsersCommand::List {
            email,
            after,
            limit,
            json,
        } => {
            let filter = UserFilter {
                id: None,
                email,
                after,
                limit: Some(limit),
            };
            let page = admin.users(&filter).await.map_err(admin_error)?;
            if json {
                return print_json(&page);
            }
            let rows = page
                .items
                .iter()
                .map(|u| {
                    vec![
                        u.id.clone(),
                        or_dash(u.email.as_deref()),
                        if u.email_verified { "yes" } else { "no" }.to_owned(),
                        or_dash(u.name.as_deref()),
                        u.created_at.to_human(),
                        u.live_registrations.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "EMAIL",
                    "VERIFIED",
                    "NAME",
                    "CREATED",
                    "LIVE REGISTRATIONS",
                ],
                rows,
            )?;
            page_footer(&page);
            Ok(())
        }
        UsersCommand::Revoke { user_id, who, json } => {
            revoke(&admin, RevokeTarget::User(user_id), &who, json).await
        }
    }
}

pub async fn delegations(cmd: DelegationsCommand, config: Config) -> anyhow::Result<()> {
    let admin = Admin::new(open(&config).await?);
    let DelegationsCommand::List {
        provider,
        sub,
        user,
        state,
        after,
        limit,
        json,
    } = cmd;
    let filter = DelegationFilter {
        provider,
        sub,
        user,
        state,
        after,
        limit: Some(limit),
    };
    let page = admin.delegations(&filter).await.map_err(admin_error)?;
    if json {
        return print_json(&page);
    }
    let rows = page
        .items
        .iter()
        .map(|d| {
            vec![
                d.iss.clone(),
                d.sub.clone(),
                d.user_id.clone(),
                d.registration_id.clone(),
                d.state.to_owned(),
                d.updated_at.to_human(),
            ]
        })
        .collect();
    table(
        &[
            "PROVIDER",
            "SUB",
            "USER",
            "REGISTRATION",
            "STATE",
            "UPDATED",
        ],
        rows,
    )?;
    page_footer(&page);
    Ok(())
}

pub async fn providers(cmd: ProvidersCommand, config: Config) -> anyhow::Result<()> {
    let ProvidersCommand::Revoke {
        iss,
        who,
        yes,
        json,
    } = cmd;
    confirm(
        yes,
        &format!("This revokes every registration and credential issued through {iss}."),
        "revoke",
    )?;
    let admin = Admin::new(open(&config).await?);
    revoke(&admin, RevokeTarget::Provider(iss), &who, json).await
}

pub async fn revoke_all(args: RevokeAllArgs, config: Config) -> anyhow::Result<()> {
    confirm(
        args.yes,
        "This revokes EVERY live agent registration and credential on this service.",
        authmd::http::REVOKE_ALL_CONFIRMATION,
    )?;
    let admin = Admin::new(open(&config).await?);
    revoke(&admin, RevokeTarget::All, &args.who, args.json).await
}

/// Asks on the terminal for `word`, unless `yes`. Without a terminal and
/// without `--yes` it refuses.
fn confirm(yes: bool, what: &str, word: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{what} Refusing without --yes (no terminal to confirm on).");
    }
    eprint!("{what}\nType {word:?} to continue: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != word {
        bail!("not confirmed; nothing was revoked");
    }
    Ok(())
}
