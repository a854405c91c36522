//! `authmd block …` and `authmd unblock …`: stop a provider subject, a user
//! or an email address from registering again, and undo it. The twins of
//! `POST /admin/blocks` and `POST /admin/blocks/remove`; both call
//! `authmd::admin::Admin`.

use authmd::admin::{Admin, BlockRequest};
use authmd::{Config, Timestamp};
use clap::Subcommand;

use crate::admin::{Who, admin_error, meta, open, or_dash, print_json, table};

#[derive(Subcommand)]
pub enum BlockCommand {
    /// A provider's subject: its ID-JAGs no longer register.
    Subject {
        /// The provider's issuer (`iss`).
        iss: String,
        /// The subject (`sub`).
        sub: String,
        #[command(flatten)]
        who: Who,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A user: no registration is bound to it any more.
    User {
        /// The user id (`usr_…`).
        user: String,
        #[command(flatten)]
        who: Who,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An address: no email registration, claim or ID-JAG with it, and no
    /// claim email to it (case and `+tag` ignored).
    Email {
        /// The email address.
        email: String,
        #[command(flatten)]
        who: Who,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The blocks in force.
    List {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum UnblockCommand {
    /// A provider's subject.
    Subject {
        /// The provider's issuer (`iss`).
        iss: String,
        /// The subject (`sub`).
        sub: String,
        #[command(flatten)]
        who: Who,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A user.
    User {
        /// The user id (`usr_…`).
        user: String,
        #[command(flatten)]
        who: Who,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An address.
    Email {
        /// The email address.
        email: String,
        #[command(flatten)]
        who: Who,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The request, the operator and `--json` of a block or unblock.
fn request(kind: &str, values: [Option<String>; 4], who: &Who) -> BlockRequest {
    let [iss, sub, user, email] = values;
    BlockRequest {
        kind: Some(kind.to_owned()),
        iss,
        sub,
        user,
        email,
        reason: who.reason.clone(),
    }
}

pub async fn block(cmd: BlockCommand, config: Config) -> anyhow::Result<()> {
    let admin = Admin::new(open(&config).await?);
    let (req, who, json) = match cmd {
        BlockCommand::List { json } => return list(&admin, json).await,
        BlockCommand::Subject {
            iss,
            sub,
            who,
            json,
        } => (
            request("subject", [Some(iss), Some(sub), None, None], &who),
            who,
            json,
        ),
        BlockCommand::User { user, who, json } => (
            request("user", [None, None, Some(user), None], &who),
            who,
            json,
        ),
        BlockCommand::Email { email, who, json } => (
            request("email", [None, None, None, Some(email)], &who),
            who,
            json,
        ),
    };
    let target = req.target().map_err(admin_error)?;
    let result = admin
        .block(
            target,
            &who.operator(),
            req.reason,
            &meta(),
            Timestamp::now(),
        )
        .await
        .map_err(admin_error)?;
    if json {
        return print_json(&result);
    }
    if result.changed {
        println!(
            "blocked: it can no longer register (what it holds now still works: revoke it with \
             `authmd registrations revoke`, `authmd users revoke` or a logout)"
        );
    } else {
        println!("already blocked; nothing changed");
    }
    Ok(())
}

pub async fn unblock(cmd: UnblockCommand, config: Config) -> anyhow::Result<()> {
    let admin = Admin::new(open(&config).await?);
    let (req, who, json) = match cmd {
        UnblockCommand::Subject {
            iss,
            sub,
            who,
            json,
        } => (
            request("subject", [Some(iss), Some(sub), None, None], &who),
            who,
            json,
        ),
        UnblockCommand::User { user, who, json } => (
            request("user", [None, None, Some(user), None], &who),
            who,
            json,
        ),
        UnblockCommand::Email { email, who, json } => (
            request("email", [None, None, None, Some(email)], &who),
            who,
            json,
        ),
    };
    let target = req.target().map_err(admin_error)?;
    let result = admin
        .unblock(
            target,
            &who.operator(),
            req.reason,
            &meta(),
            Timestamp::now(),
        )
        .await
        .map_err(admin_error)?;
    if json {
        return print_json(&result);
    }
    if result.changed {
        println!("unblocked: it may register again");
    } else {
        println!("not blocked; nothing changed");
    }
    Ok(())
}

async fn list(admin: &Admin, json: bool) -> anyhow::Result<()> {
    let page = admin.blocks().await.map_err(admin_error)?;
    if json {
        return print_json(&page);
    }
    let rows = page
        .items
        .iter()
        .map(|b| {
            let what = match b.kind.as_str() {
                "subject" => format!(
                    "{} {}",
                    b.iss.as_deref().unwrap_or_default(),
                    b.sub.as_deref().unwrap_or_default()
                ),
                "user" => or_dash(b.user_id.as_deref()),
                _ => or_dash(b.email.as_deref()),
            };
            vec![
                b.kind.clone(),
                what,
                b.created_at.to_human(),
                b.operator.clone(),
                or_dash(b.reason.as_deref()),
            ]
        })
        .collect();
    table(&["KIND", "BLOCKED", "SINCE", "OPERATOR", "REASON"], rows)
}
