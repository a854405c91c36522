//! Statements sent back to back in one round trip.
//!
//! tokio-postgres pipelines requests issued concurrently on one connection,
//! and the server runs them in the order they were sent. A transaction's
//! writes that do not depend on each other's results (a registration, its
//! credential and its audit events) therefore cost one round trip instead
//! of one each. Under load that matters more than the round trip's few
//! tens of microseconds: a transaction holds its pooled connection (and its
//! row and advisory locks) for every round trip it makes, so fewer round
//! trips mean more transactions per connection and shorter lock waits.
//!
//! Order is kept: the futures are polled in the order pushed, and each
//! sends its request on its first poll (statements are prepared first, so
//! every request is ready to go). If one statement fails the transaction
//! is aborted, the statements after it fail too, and the first error is
//! returned; the caller drops the transaction.

use deadpool_postgres::Transaction;
use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;

use super::pg;
use crate::audit::AuditEvent;
use crate::store::StoreError;

/// An argument owned by the pipeline.
pub(super) type Arg = Box<dyn ToSql + Sync + Send>;

/// Writes to send together (see the module doc).
#[derive(Default)]
pub(super) struct Pipeline {
    statements: Vec<(&'static str, Vec<Arg>)>,
}

impl Pipeline {
    pub(super) fn push(&mut self, sql: &'static str, args: Vec<Arg>) -> &mut Self {
        self.statements.push((sql, args));
        self
    }

    /// Appends one statement that inserts every event (nothing when there
    /// are none).
    pub(super) fn events(&mut self, events: &[AuditEvent]) -> &mut Self {
        if events.is_empty() {
            return self;
        }
        let at: Vec<i64> = events.iter().map(|e| e.at.as_millis()).collect();
        let kind: Vec<&'static str> = events.iter().map(|e| e.kind.as_str()).collect();
        let reg: Vec<Option<String>> = events.iter().map(|e| e.registration_id.clone()).collect();
        let user: Vec<Option<String>> = events.iter().map(|e| e.user_id.clone()).collect();
        let ip: Vec<Option<String>> = events.iter().map(|e| e.meta.ip_text()).collect();
        let ua: Vec<Option<String>> = events.iter().map(|e| e.meta.user_agent.clone()).collect();
        let data: Vec<String> = events.iter().map(AuditEvent::data_json).collect();
        let provider: Vec<Option<String>> = events
            .iter()
            .map(|e| e.provider().map(str::to_owned))
            .collect();
        self.push(
            "INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
             SELECT a, e, r, u, i, ua, d::jsonb, p
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[]) AS t(a, e, r, u, i, ua, d, p)",
            vec![
                Box::new(at),
                Box::new(kind),
                Box::new(reg),
                Box::new(user),
                Box::new(ip),
                Box::new(ua),
                Box::new(data),
                Box::new(provider),
            ],
        )
    }

    /// Sends every statement, in order, without waiting between them;
    /// returns the rows each changed.
    pub(super) async fn run(&self, tx: &Transaction<'_>) -> Result<Vec<u64>, StoreError> {
        let mut changed = Vec::with_capacity(self.statements.len());
        // `try_join_all` polls its futures in order (so sends in order) only
        // for up to 30 of them; a longer pipeline goes in chunks.
        for chunk in self.statements.chunks(30) {
            let prepared = try_join_all(chunk.iter().map(|(sql, _)| tx.prepare_cached(sql)))
                .await
                .map_err(pg)?;
            let args: Vec<Vec<&(dyn ToSql + Sync)>> = chunk
                .iter()
                .map(|(_, args)| {
                    args.iter()
                        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                        .collect()
                })
                .collect();
            changed.extend(
                try_join_all(
                    prepared
                        .iter()
                        .zip(&args)
                        .map(|(statement, args)| tx.execute(statement, args)),
                )
                .await
                .map_err(pg)?,
            );
        }
        Ok(changed)
    }
}
