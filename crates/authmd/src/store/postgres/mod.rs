//! PostgreSQL backend, for deployments with several replicas.
//!
//! Every operation is one transaction on a pooled connection. Correctness
//! across replicas comes from the database: unique keys, row locks
//! (`FOR UPDATE SKIP LOCKED` in the sweep), and a transaction-level advisory
//! lock that serializes appends to the invalidation log so that its `seq`
//! order is its commit order.

mod claims;
mod current;
mod governance;
mod keys;
mod outbox;
mod pipeline;

pub mod tls;

use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::types::ToSql;

use pipeline::Pipeline;

use super::current::{AssertionExchange, Created, Exchanged, NewIdentityRegistration};
use super::migrate::POSTGRES;
use super::{AgentMode, SelfRevocation, SelfRevoked};
use super::{
    AgentRegistered, Invalidation, NewAgentRegistration, NewAnonymousRegistration, RawCredential,
    STATS_QUERY, SigningKeyRow, Stats, Store, StoreError, SweepReport, credential_columns,
    join_scopes,
};
use super::{
    AttemptAction, AttemptProof, AttemptView, ClaimRequest, ClaimStarted, CompleteClaim, Completed,
    NewEmailRegistration, RefreshRotation, Rotated, SignInRequest, SignInStarted,
};
use super::{
    BlockChange, BlockRecord, CredentialSummary, DelegationFilter, DelegationRecord,
    OperatorRevocation, RegistrationFilter, RegistrationSummary, RevokeReport, SubjectRevocation,
    SubjectRevoked, TailCursor, UserFilter, UserRecord, listing,
};
use crate::audit::{AuditEvent, AuditRecord, EventFilter, EventKind, RequestMeta};
use crate::credential::{CredentialRecord, CredentialType};
use crate::rate_limit::{RateLimit, RateLimited};
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::users::LinkedBy;

const CREDENTIAL_QUERY: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM credentials c JOIN registrations r ON r.id = c.registration_id
      LEFT JOIN users u ON u.id = c.user_id WHERE c.id = $1"
);

/// Advisory lock keys (arbitrary, fixed).
const MIGRATION_LOCK: i64 = 0x6175_7468_6d64_0001;
const INVALIDATION_LOCK: i64 = 0x6175_7468_6d64_0002;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        // Class 57P: the server is shutting down or not accepting yet; 08:
        // the connection failed; 53: out of connections or memory.
        Some(d)
            if ["57P", "08", "53"]
                .iter()
                .any(|c| d.code().code().starts_with(c)) =>
        {
            StoreError::Unavailable(format!("{} ({})", d.message(), d.code().code()))
        }
        Some(d) => StoreError::Database(format!("{} ({})", d.message(), d.code().code())),
        None => {
            // With the cause: "error performing TLS handshake: invalid peer
            // certificate: NotValidForName", "… connection refused".
            let mut m = e.to_string();

            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                m.push_str(": ");
                m.push_str(&s.to_string());
                source = s.source();
            }
            // Without a database error, tokio-postgres failed at the
            // connection (refused, lost, closed, timed out, an unexpected
            // message): the database is unreachable, not the statement
            // wrong. A certificate that does not verify is configuration,
            // and a value that does not convert is a bug.
            let ours = m.starts_with("error performing TLS handshake")
                || m.starts_with("error serializing")
                || m.starts_with("error deserializing")
                || m.starts_with("invalid configuration");
            if !ours {
                StoreError::Unavailable(m)
            } else {
                StoreError::Database(m)
            }
        }
    }
}

/// How long a request waits for a pooled connection, a new connection or
/// the check of an idle one before it is answered 503.
const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        deadpool_postgres::PoolError::Timeout(t) => StoreError::Unavailable(format!(
            "no database connection within the pool's timeout ({t:?})"
        )),
        other => StoreError::Database(other.to_string()),
    }
}

impl PostgresStore {
    /// Connects a pool to a `postgres://` URL (the first connection is made
    /// here, so a wrong URL fails at startup).
    pub async fn connect(url: &str, max_connections: usize) -> Result<PostgresStore, StoreError> {
        let tls = tls::settings(url)?;
        let config = tokio_postgres::Config::from_str(&tls.url)
            .map_err(|e| StoreError::Url(format!("PostgreSQL URL: {e}")))?;
        let mode = tls.mode;
        let manager = Manager::from_config(
            config,
            tls.connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Bounded waits: a request never hangs on an unreachable database.
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let store = PostgresStore { pool };
        store.ping().await.map_err(|e| match e {
            StoreError::Database(m) => {
                StoreError::Database(format!("cannot connect (sslmode={}): {m}", mode.as_str()))
            }
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("cannot connect (sslmode={}): {m}", mode.as_str()))
            }
            e => e,
        })?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}

/// Ends a transaction: commits it, or rolls it back now. A refusal must
/// not leave its row locks to the rollback that dropping a transaction
/// sends, which the server may process after the caller has answered
/// (seen: the sweep's `SKIP LOCKED` passed over a registration whose
/// refused claim completion had already been answered).
async fn finish(tx: Transaction<'_>, commit: bool) -> Result<(), StoreError> {
    if commit {
        tx.commit().await
    } else {
        tx.rollback().await
    }
    .map_err(pg)
}

async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.execute(&stmt, args).await.map_err(pg)
}

async fn insert_event(tx: &Transaction<'_>, e: &AuditEvent) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)",
        &[
            &e.at.as_millis(),
            &e.kind.as_str(),
            &e.registration_id,
            &e.user_id,
            &e.meta.ip_text(),
            &e.meta.user_agent,
            &e.data_json(),
            &e.provider(),
        ],
    )
    .await?;
    Ok(())
}

/// Checks every limit in order (locking each counter row); writes the new
/// state only if all admit. Two round trips whatever the number of limits:
/// each counter is read and locked by one upsert (`DO UPDATE` locks the
/// row as `FOR UPDATE` would, and creates it the first time), all sent
/// together in the limits' order, so two replicas counting the same keys
/// lock them in the same order and serialize; then the new states, also
/// together.
async fn admit(
    tx: &Transaction<'_>,
    limits: &[RateLimit],
    now: Timestamp,
) -> Result<Result<(), RateLimited>, StoreError> {
    if limits.is_empty() {
        return Ok(Ok(()));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO rate_limits (key, tat) VALUES ($1, 0)
             ON CONFLICT (key) DO UPDATE SET tat = rate_limits.tat RETURNING tat",
        )
        .await
        .map_err(pg)?;
    let keys: Vec<[&(dyn ToSql + Sync); 1]> = limits.iter().map(|l| [&l.key as _]).collect();
    let tats = futures_util::future::try_join_all(keys.iter().map(|k| tx.query_one(&stmt, k)))
        .await
        .map_err(pg)?;
    let mut updates = Pipeline::default();
    for (limit, row) in limits.iter().zip(&tats) {
        match limit.decide(Some(row.get(0)), now) {
            Ok(new_tat) => updates.push(
                "UPDATE rate_limits SET tat = $2 WHERE key = $1",
                vec![Box::new(limit.key.clone()), Box::new(new_tat)],
            ),
            Err(refused) => return Ok(Err(refused)),
        };
    }
    updates.run(tx).await?;
    Ok(Ok(()))
}

/// Appends to the invalidation log. Takes the log's advisory lock first;
/// call it last in a transaction, after every row lock it needs.
async fn log_invalidations(
    tx: &Transaction<'_>,
    hashes: Vec<Vec<u8>>,
    now: Timestamp,
) -> Result<(), StoreError> {
    if hashes.is_empty() {
        return Ok(());
    }
    let hashes = super::invalidation_entries(hashes);
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await
        .map_err(pg)?;
    tx.execute(&stmt, &[&INVALIDATION_LOCK]).await.map_err(pg)?;
    exec(
        tx,
        "INSERT INTO invalidations (token_hash, at) SELECT h, $2 FROM UNNEST($1::bytea[]) AS t(h)",
        &[&hashes, &now.as_millis()],
    )
    .await?;
    Ok(())
}

/// Serializes transactions that share `what` (a subject, an email) across
/// replicas until commit. Taken first in a transaction, before any row lock,
/// and never more than one of each kind, so the locks cannot deadlock.
async fn lock(tx: &Transaction<'_>, what: &str) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .await
        .map_err(pg)?;
    tx.execute(&stmt, &[&what]).await.map_err(pg)?;
    Ok(())
}

async fn first_id(
    tx: &Transaction<'_>,
    sql: &str,
    value: &str,
) -> Result<Option<String>, StoreError> {
    let stmt = tx.prepare_cached(sql).await.map_err(pg)?;
    Ok(tx
        .query_opt(&stmt, &[&value])
        .await
        .map_err(pg)?
        .map(|r| r.get(0)))
}

/// §3.3/§6 in one transaction. The `jti` is inserted first: a concurrent
/// transaction with the same key waits on it and then finds the conflict,
/// so exactly one of them registers. Any refusal drops the transaction.
async fn register_agent_tx(
    tx: &Transaction<'_>,
    reg: &NewAgentRegistration,
    limits: &[RateLimit],
    mode: &AgentMode,
) -> Result<AgentRegistered, StoreError> {
    let now = reg.now.as_millis();
    let link_email = reg.link_email();
    // One round trip, in this order: the jti (a concurrent replay waits on
    // this row, then finds it), the subject's and the address's locks, the
    // delegation, and whether the subject or the address is blocked.
    let subject_lock = format!("subject {} {}", reg.iss, reg.sub);
    let email_lock = link_email.as_ref().map(|e| format!("email {e}"));
    let delegation_stmt = tx
        .prepare_cached(
            // FOR SHARE: an operator revoking this registration (FOR
            // UPDATE) and this issuance into it take turns; whoever is
            // second sees the other.
            // The user's block key is `user_block(id)`: its prefix is $3.
            "SELECT d.user_id, d.registration_id, r.status, d.revoked_before,
                    EXISTS (SELECT 1 FROM blocks b WHERE b.key = $3 || d.user_id)
             FROM delegations d JOIN registrations r ON r.id = d.registration_id
             WHERE d.iss = $1 AND d.sub = $2 FOR SHARE OF r",
        )
        .await
        .map_err(pg)?;
    let user_block_prefix = super::user_block("");
    let [subject_key, _, email_key] = reg.block_keys(None);
    let (inserted, (), (), delegation, blocked) = futures_util::future::try_join5(
        exec(
            tx,
            "INSERT INTO jti_seen (key, expires_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&&reg.jti_key[..], &reg.jti_until.as_millis()],
        ),
        lock(tx, &subject_lock),
        async {
            match &email_lock {
                Some(l) => lock(tx, l).await,
                None => Ok(()),
            }
        },
        async {
            tx.query_opt(&delegation_stmt, &[&reg.iss, &reg.sub, &user_block_prefix])
                .await
                .map_err(pg)
        },
        governance::is_blocked(tx, &[subject_key, None, email_key]),
    )
    .await?;
    if inserted == 0 {
        return Ok(AgentRegistered::Replay);
    }
    let delegation: Option<(String, String, String)> = match delegation {
        Some(r) if reg.issued_before_revocation(r.get(3)) => {
            return Ok(AgentRegistered::IssuedBeforeRevocation);
        }
        Some(r) if r.get::<_, bool>(4) => return Ok(AgentRegistered::Blocked),
        Some(r) => Some((r.get(0), r.get(1), r.get(2))),
        None => None,
    };
    let mut existing_user = delegation.as_ref().map(|d| d.0.clone());
    let mut linked_by = None;
    if existing_user.is_none() {
        if let Some(email) = &link_email {
            existing_user = first_id(
                tx,
                "SELECT id FROM users WHERE email_normalized = $1 AND email_verified
                 ORDER BY created_at LIMIT 1",
                email,
            )
            .await?;
            linked_by = existing_user.as_ref().map(|_| LinkedBy::Email);
        }
        if existing_user.is_none()
            && let Some(phone) = reg.link_phone()
        {
            existing_user = first_id(
                tx,
                "SELECT id FROM users WHERE phone_normalized = $1 AND phone_verified
                 ORDER BY created_at LIMIT 1",
                &phone,
            )
            .await?;
            linked_by = existing_user.as_ref().map(|_| LinkedBy::Phone);
        }
    }
    // An operator's block on the subject, the user or the address.
    if blocked {
        return Ok(AgentRegistered::Blocked);
    }
    // A user found by email or phone (the delegation's own user was
    // checked with the delegation).
    if let Some(user) = existing_user.as_ref().filter(|_| linked_by.is_some()) {
        let [_, user_key, _] = reg.block_keys(Some(user));
        if governance::is_blocked(tx, &[None, user_key, None]).await? {
            return Ok(AgentRegistered::Blocked);
        }
    }
    if mode.confirm_links
        && let (Some(user_id), Some(how)) = (&existing_user, linked_by)
    {
        return Ok(AgentRegistered::NeedsConfirmation {
            user_id: user_id.clone(),
            email: (how == LinkedBy::Email).then(|| reg.link_email()).flatten(),
        });
    }
    if existing_user.is_none() && !reg.jit_provisioning {
        return Ok(AgentRegistered::NotProvisioned);
    }
    if let Err(refused) = admit(tx, limits, reg.now).await? {
        return Ok(AgentRegistered::Limited(refused));
    }
    // The writes, in one round trip.
    let mut writes = Pipeline::default();
    let provisioned = existing_user.is_none();
    let user_id = match existing_user {
        Some(u) => u,
        None => {
            let id = &reg.identity;
            writes.push(
                "INSERT INTO users (id, email, email_normalized, email_verified, phone_number,
                                    phone_normalized, phone_verified, name, created_by_agent, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9)",
                vec![
                    Box::new(reg.new_user_id.clone()),
                    Box::new(id.email.clone()),
                    Box::new(id.email.as_deref().and_then(crate::users::normalize_email)),
                    Box::new(id.email_verified),
                    Box::new(id.phone_number.clone()),
                    Box::new(id.phone_number.as_deref().and_then(crate::users::normalize_phone)),
                    Box::new(id.phone_number_verified),
                    Box::new(id.name.clone()),
                    Box::new(now),
                ],
            );
            reg.new_user_id.clone()
        }
    };
    let registration_id = match &delegation {
        Some((_, registration, status)) if status == "active" => registration.clone(),
        _ => {
            writes
                .push(
                    "INSERT INTO registrations (id, type, status, created_at, updated_at, user_id,
                                                created_by_agent, iss, sub, dialect)
                     VALUES ($1, 'agent-provider', 'active', $2, $2, $3, TRUE, $4, $5, $6)",
                    vec![
                        Box::new(reg.new_registration_id.clone()),
                        Box::new(now),
                        Box::new(user_id.clone()),
                        Box::new(reg.iss.clone()),
                        Box::new(reg.sub.clone()),
                        Box::new(mode.dialect.as_str()),
                    ],
                )
                .push(
                    "INSERT INTO delegations (iss, sub, user_id, registration_id, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     ON CONFLICT (iss, sub) DO UPDATE SET
                         registration_id = excluded.registration_id, updated_at = excluded.updated_at,
                         revoked_at = NULL",
                    vec![
                        Box::new(reg.iss.clone()),
                        Box::new(reg.sub.clone()),
                        Box::new(user_id.clone()),
                        Box::new(reg.new_registration_id.clone()),
                        Box::new(now),
                    ],
                );
            reg.new_registration_id.clone()
        }
    };
    if mode.issue {
        writes.push(
        "INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes,
                                  issued_at, expires_at, iss, sub, aud, assertion_iat)
         VALUES ($1, $2, $3, $4, $5, 'provider', $6, $7, $8, $9, $10, $11, $12)",
        vec![
            Box::new(reg.credential_id.clone()),
            Box::new(reg.credential.as_bytes().to_vec()),
            Box::new(registration_id.clone()),
            Box::new(user_id.clone()),
            Box::new(reg.credential_type.as_str()),
            Box::new(join_scopes(&reg.scopes)),
            Box::new(now),
            Box::new(reg.expires_at.map(Timestamp::as_millis)),
            Box::new(reg.iss.clone()),
            Box::new(reg.sub.clone()),
            Box::new(reg.aud.clone()),
            Box::new(reg.issued_at.as_millis()),
        ],
        );
    }
    let mut events = reg.events_as(&registration_id, &user_id, provisioned, mode);
    if let Some(how) = linked_by {
        events.push(reg.linked_event(&registration_id, &user_id, how));
    }
    writes.events(&events).run(tx).await?;
    if mode.issue && reg.credential_type == CredentialType::ApiKey {
        // Past the cap, the oldest live keys of the delegation end (ids
        // are time-ordered). Issuances for one subject take turns (its
        // advisory lock), so each sees the keys of the one before.
        let stmt = tx
            .prepare_cached(
                "UPDATE credentials SET revoked_at = $1 WHERE id IN
                     (SELECT id FROM credentials
                      WHERE registration_id = $2 AND type = 'api_key' AND source = 'provider'
                        AND revoked_at IS NULL
                      ORDER BY id DESC OFFSET $3)
                 RETURNING id, token_hash",
            )
            .await
            .map_err(pg)?;
        let capped = tx
            .query(
                &stmt,
                &[&now, &registration_id, &i64::from(reg.max_api_keys)],
            )
            .await
            .map_err(pg)?;
        let mut hashes = Vec::with_capacity(capped.len());
        let mut events = Vec::with_capacity(capped.len());
        for row in &capped {
            let id: String = row.get(0);
            events.push(reg.capped_event(&registration_id, &user_id, &id));
            hashes.push(row.get::<_, Vec<u8>>(1));
        }
        for e in &events {
            insert_event(tx, e).await?;
            e.log();
        }
        log_invalidations(tx, hashes, reg.now).await?;
    }
    Ok(AgentRegistered::Issued {
        registration_id,
        user_id,
        user_provisioned: provisioned,
        linked_by,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn take_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<super::OutboxMail>, StoreError> {
        outbox::take(self, now, lease_until, limit).await
    }

    async fn mail_done(
        &self,
        id: &str,
        now: Timestamp,
        outcome: super::MailOutcome,
    ) -> Result<(), StoreError> {
        outbox::done(self, id, now, outcome).await
    }

    async fn purge_mail(&self, now: Timestamp, done_before: Timestamp) -> Result<u64, StoreError> {
        outbox::purge(self, now, done_before).await
    }

    async fn mail_status(&self) -> Result<super::MailStatus, StoreError> {
        outbox::status(self).await
    }

    fn pool_status(&self) -> Option<super::PoolStatus> {
        let s = self.pool.status();
        Some(super::PoolStatus {
            in_use: s.size.saturating_sub(s.available),
            idle: s.available,
            max: s.max_size,
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let result = async {
            // Created only when missing (under the lock): `CREATE TABLE IF
            // NOT EXISTS` would send a NOTICE to the log at every start.
            let exists: bool = client
                .query_one(
                    "SELECT to_regclass('authmd_migrations') IS NOT NULL",
                    &[],
                )
                .await
                .map_err(pg)?
                .get(0);
            if !exists {
                client
                    .batch_execute(
                        "CREATE TABLE authmd_migrations (
                             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
                    )
                    .await
                    .map_err(pg)?;
            }
            let current: i64 = client
                .query_one("SELECT COALESCE(MAX(version), 0) FROM authmd_migrations", &[])
                .await
                .map_err(pg)?
                .get(0);
            let known = POSTGRES.last().map_or(0, |m| m.version);
            if current > known {
                return Err(StoreError::Migration(format!(
                    "the database is at schema version {current}, newer than this authmd ({known}); upgrade authmd"
                )));
            }
            for m in POSTGRES.iter().filter(|m| m.version > current) {
                let tx = client.transaction().await.map_err(pg)?;
                tx.batch_execute(m.sql)
                    .await
                    .map_err(|e| StoreError::Migration(format!("{} {}: {}", m.version, m.name, pg(e))))?;
                tx.execute(
                    "INSERT INTO authmd_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &Timestamp::now().as_millis()],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
            }
            Ok(())
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        result
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(pg)
    }

    async fn create_anonymous_registration(
        &self,
        reg: NewAnonymousRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Err(refused) = admit(&tx, &limits, reg.created_at).await? {
            // Nothing was written; dropping the transaction rolls it back.
            return Ok(Err(refused));
        }
        let created = reg.created_at.as_millis();
        Pipeline::default()
            .push(
                "INSERT INTO registrations
                     (id, type, status, created_at, updated_at, expires_at, created_by_agent, claim_token_hash)
                 VALUES ($1, 'anonymous', 'unclaimed', $2, $2, $3, TRUE, $4)",
                vec![
                    Box::new(reg.registration_id.clone()),
                    Box::new(created),
                    Box::new(reg.expires_at.as_millis()),
                    Box::new(reg.claim_token.as_bytes().to_vec()),
                ],
            )
            .push(
                "INSERT INTO credentials (id, token_hash, registration_id, type, source, scopes, issued_at)
                 VALUES ($1, $2, $3, 'api_key', 'anonymous', $4, $5)",
                vec![
                    Box::new(reg.credential_id.clone()),
                    Box::new(reg.credential.as_bytes().to_vec()),
                    Box::new(reg.registration_id.clone()),
                    Box::new(join_scopes(&reg.scopes)),
                    Box::new(created),
                ],
            )
            .events(&reg.events)
            .run(&tx)
            .await?;
        tx.commit().await.map_err(pg)?;
        Ok(Ok(()))
    }

    async fn register_agent(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<AgentRegistered, StoreError> {
        self.register_agent_as(reg, limits, AgentMode::ORIGINAL)
            .await
    }

    async fn register_agent_as(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
        mode: AgentMode,
    ) -> Result<AgentRegistered, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = register_agent_tx(&tx, &reg, &limits, &mode).await?;
        finish(tx, matches!(outcome, AgentRegistered::Issued { .. })).await?;
        Ok(outcome)
    }

    async fn create_identity_registration(
        &self,
        reg: NewIdentityRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Created, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let created = current::create_identity_registration(&tx, &reg, &limits).await?;
        finish(tx, created.is_ok()).await?;
        Ok(created)
    }

    async fn exchange_assertion(&self, x: AssertionExchange) -> Result<Exchanged, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = current::exchange_assertion(&tx, &x).await?;
        finish(tx, matches!(outcome, Exchanged::Issued { .. })).await?;
        Ok(outcome)
    }

    async fn block(&self, b: BlockChange) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = governance::block(&tx, &b).await?;
        tx.commit().await.map_err(pg)?;
        Ok(changed)
    }

    async fn unblock(&self, b: BlockChange) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = governance::unblock(&tx, &b).await?;
        tx.commit().await.map_err(pg)?;
        Ok(changed)
    }

    async fn list_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        governance::blocks(&self.client().await?).await
    }

    async fn blocked(&self, keys: [Option<String>; 3]) -> Result<bool, StoreError> {
        governance::is_blocked(&self.client().await?, &keys).await
    }

    async fn jti_used(&self, key: [u8; 16]) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM jti_seen WHERE key = $1)")
            .await
            .map_err(pg)?;
        Ok(client
            .query_one(&stmt, &[&&key[..]])
            .await
            .map_err(pg)?
            .get(0))
    }

    async fn create_email_registration(
        &self,
        reg: NewEmailRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = claims::create_email_registration(&tx, &reg, &limits).await?;
        finish(tx, outcome.is_ok()).await?;
        Ok(outcome)
    }

    async fn start_claim(
        &self,
        req: ClaimRequest,
        limits: Vec<RateLimit>,
    ) -> Result<ClaimStarted, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = claims::start_claim(&tx, &req, &limits).await?;
        finish(tx, matches!(outcome, ClaimStarted::Started { .. })).await?;
        Ok(outcome)
    }

    async fn attempt(
        &self,
        attempt_id: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptView>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        claims::attempt(&tx, attempt_id, now, false).await
    }

    async fn mint_otp(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        otp: SecretHash,
        otp_expires_at: Timestamp,
        now: Timestamp,
        meta: RequestMeta,
    ) -> Result<AttemptAction, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome =
            claims::mint_otp(&tx, attempt_id, &proof, &otp, otp_expires_at, now, &meta).await?;
        finish(tx, matches!(outcome, AttemptAction::Done { .. })).await?;
        Ok(outcome)
    }

    async fn deny_attempt(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        now: Timestamp,
        meta: RequestMeta,
    ) -> Result<AttemptAction, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = claims::deny_attempt(&tx, attempt_id, &proof, now, &meta).await?;
        finish(tx, matches!(outcome, AttemptAction::Done { .. })).await?;
        Ok(outcome)
    }

    async fn complete_claim(&self, req: CompleteClaim) -> Result<Completed, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let (outcome, commit) = claims::complete_claim(&tx, &req).await?;
        finish(tx, commit).await?;
        Ok(outcome)
    }

    async fn start_sign_in(
        &self,
        req: SignInRequest,
        limits: Vec<RateLimit>,
    ) -> Result<SignInStarted, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = claims::start_sign_in(&tx, &req, &limits).await?;
        finish(tx, outcome == SignInStarted::Sent).await?;
        Ok(outcome)
    }

    async fn rotate_refresh(&self, r: RefreshRotation) -> Result<Rotated, StoreError> {
        let mut client = self.client().await?;
        if let Some(rotated) = current::rotate_refresh(&client, &r).await? {
            return Ok(rotated);
        }
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = current::refused(&tx, &r).await?;
        finish(tx, !matches!(outcome, Rotated::Invalid)).await?;
        Ok(outcome)
    }

    async fn secret_key(&self) -> Result<Vec<u8>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let key = claims::secret_key(&tx).await?;
        tx.commit().await.map_err(pg)?;
        Ok(key)
    }

    async fn record_event(&self, event: AuditEvent) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        insert_event(&tx, &event).await?;
        tx.commit().await.map_err(pg)
    }

    async fn count_request(
        &self,
        limits: Vec<RateLimit>,
        now: Timestamp,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = admit(&tx, &limits, now).await?;
        finish(tx, outcome.is_ok()).await?;
        Ok(outcome)
    }

    async fn signing_keys(&self, now: Timestamp) -> Result<Vec<SigningKeyRow>, StoreError> {
        let client = self.client().await?;
        keys::published(&client, now).await
    }

    async fn add_first_signing_key(&self, key: SigningKeyRow) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let added = keys::add_first(&tx, &key).await?;
        tx.commit().await.map_err(pg)?;
        Ok(added)
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRow,
        retire_until: Timestamp,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        keys::rotate(&tx, &key, retire_until, &event).await?;
        tx.commit().await.map_err(pg)
    }

    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        governance::insert_events(&tx, &events).await?;
        tx.commit().await.map_err(pg)
    }

    async fn purge_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        // SKIP LOCKED: replicas sweeping at once delete disjoint batches.
        // The newest event stays, as on SQLite (where it keeps ids from
        // being given twice): one contract for both.
        self.client()
            .await?
            .execute(
                "DELETE FROM audit_events WHERE id IN
                     (SELECT id FROM audit_events
                      WHERE at < $1 AND id < (SELECT MAX(id) FROM audit_events)
                      ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&before.as_millis(), &i64::from(limit)],
            )
            .await
            .map_err(pg)
    }

    async fn find_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(CREDENTIAL_QUERY).await.map_err(pg)?;
        let Some(r) = client.query_opt(&stmt, &[&id]).await.map_err(pg)? else {
            return Ok(None);
        };
        let raw = RawCredential {
            credential_id: r.try_get(0).map_err(pg)?,
            credential_type: r.try_get(1).map_err(pg)?,
            source: r.try_get(2).map_err(pg)?,
            scopes: r.try_get(3).map_err(pg)?,
            issued_at: r.try_get(4).map_err(pg)?,
            expires_at: r.try_get(5).map_err(pg)?,
            revoked_at: r.try_get(6).map_err(pg)?,
            iss: r.try_get(7).map_err(pg)?,
            sub: r.try_get(8).map_err(pg)?,
            registration_id: r.try_get(9).map_err(pg)?,
            registration_type: r.try_get(10).map_err(pg)?,
            registration_status: r.try_get(11).map_err(pg)?,
            registration_expires_at: r.try_get(12).map_err(pg)?,
            user_id: r.try_get(13).map_err(pg)?,
            user_email: r.try_get(14).map_err(pg)?,
            user_name: r.try_get(15).map_err(pg)?,
            token_hash: r.try_get(16).map_err(pg)?,
            user_email_verified: r.try_get(17).map_err(pg)?,
        };
        raw.into_record().map(Some)
    }

    async fn invalidations_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Invalidation>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, token_hash FROM invalidations WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(pg)?;
        let rows = client
            .query(&stmt, &[&seq, &i64::from(limit)])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let hash: Vec<u8> = r.get(1);
                Ok(Invalidation {
                    seq: r.get(0),
                    credential: SecretHash::from_slice(&hash)
                        .ok_or_else(|| StoreError::Corrupt("invalidation hash length".into()))?,
                })
            })
            .collect()
    }

    async fn latest_invalidation(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM invalidations),
                                 (SELECT through_seq FROM invalidations_purged))",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn purged_invalidations(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT through_seq FROM invalidations_purged")
            .await
            .map_err(pg)?;
        Ok(client.query_one(&stmt, &[]).await.map_err(pg)?.get(0))
    }

    async fn expire_registrations(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<SweepReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // SKIP LOCKED: replicas sweeping at once take disjoint rows.
        let stmt = tx
            .prepare_cached(
                "SELECT id FROM registrations
                 WHERE status IN ('unclaimed', 'pending_claim') AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2
                 FOR UPDATE SKIP LOCKED",
            )
            .await
            .map_err(pg)?;
        let ids: Vec<String> = tx
            .query(&stmt, &[&now.as_millis(), &i64::from(limit)])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut report = SweepReport::default();
        let mut hashes_all = Vec::new();
        let mut events = Vec::new();
        for id in ids {
            exec(
                &tx,
                "UPDATE registrations SET status = 'expired', updated_at = $1 WHERE id = $2",
                &[&now.as_millis(), &id],
            )
            .await?;
            let stmt = tx
                .prepare_cached(
                    "UPDATE credentials SET revoked_at = $1
                     WHERE registration_id = $2 AND revoked_at IS NULL
                     RETURNING token_hash",
                )
                .await
                .map_err(pg)?;
            let hashes: Vec<Vec<u8>> = tx
                .query(&stmt, &[&now.as_millis(), &id])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            events.push(
                AuditEvent::new(EventKind::RegistrationExpired, now, &RequestMeta::default())
                    .registration(&id)
                    .with("credentials_revoked", hashes.len()),
            );
            report.revoked_credentials += hashes.len();
            report.expired_registrations.push(id);
            hashes_all.extend(hashes);
        }
        for e in &events {
            insert_event(&tx, e).await?;
        }
        log_invalidations(&tx, hashes_all, now).await?;
        tx.commit().await.map_err(pg)?;
        for e in &events {
            e.log();
        }
        Ok(report)
    }

    async fn purge(
        &self,
        now: Timestamp,
        keep_invalidations_since: Timestamp,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let a = client
            .execute(
                "DELETE FROM rate_limits WHERE tat < $1",
                &[&now.as_millis()],
            )
            .await
            .map_err(pg)?;
        // The marker first, then exactly the entries it covers (seq order is
        // commit order, so nothing below it commits later).
        let through: i64 = client
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM invalidations WHERE at < $1",
                &[&keep_invalidations_since.as_millis()],
            )
            .await
            .map_err(pg)?
            .get(0);
        client
            .execute(
                "UPDATE invalidations_purged SET through_seq = GREATEST(through_seq, $1)",
                &[&through],
            )
            .await
            .map_err(pg)?;
        let b = client
            .execute("DELETE FROM invalidations WHERE seq <= $1", &[&through])
            .await
            .map_err(pg)?;
        let j = client
            .execute(
                "DELETE FROM jti_seen WHERE expires_at < $1",
                &[&now.as_millis()],
            )
            .await
            .map_err(pg)?;
        // Expired refresh tokens can no longer rotate, nor be detected as
        // reused: an expired one is refused as such.
        let r = client
            .execute(
                "DELETE FROM refresh_tokens WHERE expires_at < $1",
                &[&now.as_millis()],
            )
            .await
            .map_err(pg)?
            + client
                .execute(
                    "DELETE FROM refresh_families WHERE purge_after < $1",
                    &[&now.as_millis()],
                )
                .await
                .map_err(pg)?;
        let k = client
            .execute(
                "DELETE FROM signing_keys WHERE published_until <= $1",
                &[&now.as_millis()],
            )
            .await
            .map_err(pg)?;
        Ok(a + b + j + k + r)
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(STATS_QUERY, &[])
            .await
            .map_err(pg)?;
        let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(Stats {
            registrations: count(0),
            credentials: count(1),
            audit_events: count(2),
        })
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<AuditRecord>, StoreError> {
        governance::events(&self.client().await?, filter).await
    }

    async fn revoke_subject(&self, r: SubjectRevocation) -> Result<SubjectRevoked, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = governance::revoke_subject(&tx, &r).await?;
        finish(tx, matches!(outcome, SubjectRevoked::Done(_))).await?;
        Ok(outcome)
    }

    async fn revoke(&self, r: OperatorRevocation) -> Result<RevokeReport, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let report = governance::revoke(&tx, &r).await?;
        tx.commit().await.map_err(pg)?;
        Ok(report)
    }

    async fn revoke_credential(&self, r: SelfRevocation) -> Result<SelfRevoked, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let outcome = governance::revoke_credential(&tx, &r).await?;
        finish(tx, outcome != SelfRevoked::Nothing).await?;
        Ok(outcome)
    }

    async fn list_registrations(
        &self,
        filter: &RegistrationFilter,
        now: Timestamp,
    ) -> Result<Vec<RegistrationSummary>, StoreError> {
        let q = listing::registrations(filter, now);
        governance::rows(&self.client().await?, &q.postgres(), &q, |r| {
            listing::registration_summary(r)
        })
        .await
    }

    async fn registration_credentials(
        &self,
        registration_id: &str,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        let q = listing::credentials_of(registration_id);
        governance::rows(&self.client().await?, &q.postgres(), &q, |r| {
            listing::credential_summary(r)
        })
        .await
    }

    async fn list_users(&self, filter: &UserFilter) -> Result<Vec<UserRecord>, StoreError> {
        let q = listing::users(filter);
        governance::rows(&self.client().await?, &q.postgres(), &q, |r| {
            listing::user_record(r)
        })
        .await
    }

    async fn list_delegations(
        &self,
        filter: &DelegationFilter,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        let q = listing::delegations(filter);
        governance::rows(&self.client().await?, &q.postgres(), &q, |r| {
            listing::delegation_record(r)
        })
        .await
    }

    async fn tail_position(&self) -> Result<TailCursor, StoreError> {
        governance::tail_position(&self.client().await?).await
    }

    async fn tail_events(
        &self,
        after: TailCursor,
        filter: &EventFilter,
    ) -> Result<(Vec<(TailCursor, AuditRecord)>, TailCursor), StoreError> {
        governance::tail_events(&self.client().await?, after, filter).await
    }
}
