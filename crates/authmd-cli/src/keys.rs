//! `authmd keys`: authmd's own signing keys (`authmd::service_keys`), on
//! the configured database. A running server reads them again within
//! `service_keys::RELOAD` (10 s).

use anyhow::Context;
use authmd::service_keys::{PUBLISH_AHEAD, ServiceKeys, server_secret};
use authmd::{Config, Timestamp};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// List the published keys (never private material).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a new signing key. It is published at once and signs after 10
    /// minutes (every replica and every verifier's JWKS cache has it by
    /// then); the keys it replaces stay published until what they signed
    /// has expired.
    Rotate {
        /// Sign with the new key at once (a suspected leak). Verifiers that
        /// cache the JWKS and do not refetch on an unknown kid may refuse
        /// new assertions until their cache expires (5 minutes).
        #[arg(long)]
        now: bool,
        /// Your name in the audit trail (default: $USER).
        #[arg(long)]
        operator: Option<String>,
        /// Print the new key as JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: KeysCommand, config: Config) -> anyhow::Result<()> {
    let store = crate::admin::open(&config).await?;
    let secret = server_secret(&config, store.as_ref())
        .await
        .context("cannot read the server secret")?;
    let now = Timestamp::now();
    let keys = ServiceKeys::open(store, &secret, config.signing.algorithm(), now)
        .await
        .context("cannot open the signing keys")?;
    match cmd {
        KeysCommand::List { json } => {
            let list = keys.list(now).await?;
            if json {
                return crate::admin::print_json(&list);
            }
            let rows = list
                .into_iter()
                .map(|k| {
                    let state = match (k.published_until, k.signs_from <= now) {
                        (Some(_), _) => "replaced",
                        (None, true) => "signing",
                        (None, false) => "next",
                    };
                    vec![
                        k.kid,
                        k.alg,
                        state.to_owned(),
                        k.signs_from.to_rfc3339(),
                        k.published_until
                            .map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339),
                        if k.opens { "yes" } else { "no (other secret)" }.to_owned(),
                    ]
                })
                .collect();
            crate::admin::table(
                &[
                    "KID",
                    "ALG",
                    "STATE",
                    "SIGNS FROM",
                    "PUBLISHED UNTIL",
                    "USABLE",
                ],
                rows,
            )
        }
        KeysCommand::Rotate {
            now: immediate,
            operator,
            json,
        } => {
            let operator = operator.unwrap_or_else(|| {
                let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
                format!("{user} (cli)")
            });
            let rotated = keys
                .rotate(now, immediate, &operator, &crate::admin::meta())
                .await?;
            if json {
                return crate::admin::print_json(&rotated);
            }
            println!("new key {} ({})", rotated.kid, keys.algorithm().name());
            if immediate {
                println!("signs from now");
            } else {
                println!(
                    "published now; signs from {} ({} minutes)",
                    rotated.signs_from.to_rfc3339(),
                    PUBLISH_AHEAD.as_secs() / 60
                );
            }
            println!(
                "the keys it replaces stay published until {}",
                rotated.replaced_until.to_rfc3339()
            );
            Ok(())
        }
    }
}
