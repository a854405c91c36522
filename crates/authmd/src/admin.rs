//! Operator controls: one implementation behind the admin HTTP API
//! (`http::admin_router`) and the CLI (`authmd registrations …`, `authmd
//! audit …`), so the two answer alike. It needs only the store: the CLI
//! works on the configured database without a running server.
//!
//! Revocations are recorded as `registration.revoked` for each registration
//! and one `operator.action` naming the action, the operator and the
//! reason; so are blocks (`block`, `unblock`); listings change nothing and
//! record nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditRecord, EventFilter, EventKind, RequestMeta};
use crate::store::listing::{MAX_PAGE, comma_list};
use crate::store::{
    BlockChange, BlockRecord, BlockTarget, CredentialSummary, DelegationFilter, DelegationRecord,
    OperatorRevocation, RegistrationFilter, RegistrationSummary, RevokeReport, RevokeTarget, Store,
    StoreError, TailCursor, UserFilter, UserRecord,
};
use crate::time::Timestamp;
use crate::vocab::{RegistrationStatus, RegistrationType};

/// Longest operator name and revocation reason kept.
pub const MAX_OPERATOR: usize = 64;
pub const MAX_REASON: usize = 500;
/// How often a live tail reads the trail.
pub const TAIL_POLL: Duration = Duration::from_millis(200);

/// Why an operator request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A filter or argument the operator can fix.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of a listing; `next` is the cursor of the following page
/// (pass it as `after`), absent on the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    fn of(items: Vec<T>, limit: Option<u32>, cursor: impl Fn(&T) -> String) -> Page<T> {
        let full = items.len() >= page_size(limit) as usize;
        let next = if full { items.last().map(cursor) } else { None };
        Page { items, next }
    }
}

fn page_size(limit: Option<u32>) -> u32 {
    limit.unwrap_or(100).clamp(1, MAX_PAGE)
}

/// A registration with its credentials and its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistrationDetail {
    pub registration: RegistrationSummary,
    pub credentials: Vec<CredentialSummary>,
    /// Its first [`MAX_PAGE`] events.
    pub events: Vec<AuditRecord>,
}

/// Which events to list, as a query string or CLI flags give it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Event names (comma-separated in a query string).
    #[serde(default, deserialize_with = "comma_list")]
    pub event: Vec<String>,
    #[serde(default)]
    pub registration: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// The provider's issuer (`iss`).
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub since: Option<Timestamp>,
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// The cursor: events after this id.
    #[serde(default)]
    pub after: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl EventQuery {
    /// The store filter, after checking the event names and the IP.
    pub fn filter(&self) -> Result<EventFilter, AdminError> {
        for e in &self.event {
            if EventKind::parse(e).is_none() {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(AdminError::Invalid(format!(
                    "unknown event {e:?}; known events: {}",
                    known.join(", ")
                )));
            }
        }
        let ip = match &self.ip {
            Some(ip) => Some(
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| AdminError::Invalid(format!("{ip:?} is not an IP address")))?
                    .to_string(),
            ),
            None => None,
        };
        Ok(EventFilter {
            events: self.event.clone(),
            since: self.since,
            until: self.until,
            registration_id: self.registration.clone(),
            user_id: self.user.clone(),
            provider: self.provider.clone(),
            ip,
            after_id: self.after,
            limit: page_size(self.limit),
        })
    }
}

/// Who revokes, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The operator controls over one store.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
}

impl Admin {
    pub fn new(store: Arc<dyn Store>) -> Admin {
        Admin { store }
    }

    pub async fn registrations(
        &self,
        filter: &RegistrationFilter,
        now: Timestamp,
    ) -> Result<Page<RegistrationSummary>, AdminError> {
        for s in &filter.status {
            if RegistrationStatus::parse(s).is_none() {
                return Err(AdminError::Invalid(format!(
                    "unknown status {s:?} (unclaimed, pending_claim, claimed, active, expired, revoked)"
                )));
            }
        }
        if let Some(t) = &filter.kind
            && RegistrationType::parse(t).is_none()
        {
            return Err(AdminError::Invalid(format!(
                "unknown type {t:?} (anonymous, email-verification, agent-provider)"
            )));
        }
        let items = self.store.list_registrations(filter, now).await?;
        Ok(Page::of(items, filter.limit, |r| r.id.clone()))
    }

    pub async fn registration(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<RegistrationDetail, AdminError> {
        let filter = RegistrationFilter {
            id: Some(id.to_owned()),
            ..RegistrationFilter::default()
        };
        let registration = self
            .store
            .list_registrations(&filter, now)
            .await?
            .pop()
            .ok_or_else(|| AdminError::NotFound(format!("no registration {id:?}")))?;
        let credentials = self.store.registration_credentials(id).await?;
        let events = self
            .store
            .list_events(&EventFilter {
                registration_id: Some(id.to_owned()),
                limit: MAX_PAGE,
                ..EventFilter::default()
            })
            .await?;
        Ok(RegistrationDetail {
            registration,
            credentials,
            events,
        })
    }

    pub async fn users(&self, filter: &UserFilter) -> Result<Page<UserRecord>, AdminError> {
        let items = self.store.list_users(filter).await?;
        Ok(Page::of(items, filter.limit, |u| u.id.clone()))
    }

    pub async fn delegations(
        &self,
        filter: &DelegationFilter,
    ) -> Result<Page<DelegationRecord>, AdminError> {
        filter.check().map_err(AdminError::Invalid)?;
        let items = self.store.list_delegations(filter).await?;
        Ok(Page::of(items, filter.limit, |d| d.cursor.clone()))
    }

    pub async fn events(&self, query: &EventQuery) -> Result<Page<AuditRecord>, AdminError> {
        let filter = query.filter()?;
        let items = self.store.list_events(&filter).await?;
        Ok(Page::of(items, query.limit, |e| e.id.to_string()))
    }

    /// Every event matching `query` from its cursor on (its `limit` is the
    /// page size read at a time), oldest first: the export.
    pub fn export(
        &self,
        query: &EventQuery,
    ) -> Result<impl Stream<Item = Result<AuditRecord, StoreError>> + Send + use<>, AdminError>
    {
        let filter = EventFilter {
            limit: MAX_PAGE,
            ..query.filter()?
        };
        let store = Arc::clone(&self.store);
        let state = (store, filter, VecDeque::new(), false);
        Ok(futures_util::stream::unfold(
            state,
            |(store, mut filter, mut buffer, mut done)| async move {
                loop {
                    if let Some(e) = buffer.pop_front() {
                        return Some((Ok(e), (store, filter, buffer, done)));
                    }
                    if done {
                        return None;
                    }
                    match store.list_events(&filter).await {
                        Ok(page) => {
                            done = page.len() < filter.limit as usize;
                            filter.after_id = page.last().map(|e| e.id).or(filter.after_id);
                            buffer.extend(page);
                        }
                        Err(e) => return Some((Err(e), (store, filter, buffer, true))),
                    }
                }
            },
        ))
    }

    /// The end of the trail now, where a live tail starts.
    pub async fn tail_position(&self) -> Result<TailCursor, AdminError> {
        Ok(self.store.tail_position().await?)
    }

    /// Events recorded after `from` (on any replica sharing the store),
    /// as they commit, forever: the live tail. Each comes with the cursor
    /// to resume after it.
    pub fn tail(
        &self,
        from: TailCursor,
        query: &EventQuery,
    ) -> Result<
        impl Stream<Item = Result<(TailCursor, AuditRecord), StoreError>> + Send + use<>,
        AdminError,
    > {
        let filter = query.filter()?;
        let store = Arc::clone(&self.store);
        let state = (store, filter, from, VecDeque::new(), false);
        Ok(futures_util::stream::unfold(
            state,
            |(store, filter, mut cursor, mut buffer, mut wait)| async move {
                loop {
                    if let Some(item) = buffer.pop_front() {
                        return Some((Ok(item), (store, filter, cursor, buffer, wait)));
                    }
                    if wait {
                        tokio::time::sleep(TAIL_POLL).await;
                    }
                    match store.tail_events(cursor, &filter).await {
                        Ok((found, next)) => {
                            wait = found.is_empty();
                            cursor = next;
                            buffer.extend(found);
                        }
                        Err(e) => {
                            return Some((Err(e), (store, filter, cursor, buffer, true)));
                        }
                    }
                }
            },
        ))
    }

    /// Revokes `target`, recording who and why. An unknown registration or
    /// user is `NotFound`; one already ended revokes nothing.
    pub async fn revoke(
        &self,
        target: RevokeTarget,
        operator: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<RevokeReport, AdminError> {
        let operator = clean("operator", operator, MAX_OPERATOR)?;
        let reason = reason
            .map(|r| clean("reason", &r, MAX_REASON))
            .transpose()?;
        match &target {
            RevokeTarget::Registration(id) => {
                let filter = RegistrationFilter {
                    id: Some(id.clone()),
                    ..RegistrationFilter::default()
                };
                if self
                    .store
                    .list_registrations(&filter, now)
                    .await?
                    .is_empty()
                {
                    return Err(AdminError::NotFound(format!("no registration {id:?}")));
                }
            }
            RevokeTarget::User(id) => {
                let filter = UserFilter {
                    id: Some(id.clone()),
                    ..UserFilter::default()
                };
                if self.store.list_users(&filter).await?.is_empty() {
                    return Err(AdminError::NotFound(format!("no user {id:?}")));
                }
            }
            RevokeTarget::Provider(iss) => {
                clean("provider", iss, 2048)?;
            }
            RevokeTarget::All => {}
        }
        let report = self
            .store
            .revoke(OperatorRevocation {
                target,
                operator,
                reason,
                now,
                meta: meta.clone(),
            })
            .await?;
        crate::metrics::revocations("operator", report.credentials);
        Ok(report)
    }
}

/// What to block or unblock, as the admin API's body or the CLI's
/// arguments give it: `{"kind": "subject", "iss", "sub"}`, `{"kind":
/// "user", "user"}` or `{"kind": "email", "email"}`, with an optional
/// `reason`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl BlockRequest {
    /// The target, after checking that exactly its fields are given.
    pub fn target(&self) -> Result<BlockTarget, AdminError> {
        let only = |given: &[&Option<String>]| {
            let all = [&self.iss, &self.sub, &self.user, &self.email];
            let extra = all.iter().filter(|f| f.is_some()).count() != given.len();
            if given.iter().any(|f| f.is_none()) || extra {
                Err(AdminError::Invalid(
                    "a block names {\"kind\": \"subject\", \"iss\", \"sub\"}, \
                     {\"kind\": \"user\", \"user\"} or {\"kind\": \"email\", \"email\"}"
                        .into(),
                ))
            } else {
                Ok(())
            }
        };
        let text = |what: &str, v: &Option<String>| clean(what, v.as_deref().unwrap_or(""), 2048);
        match self.kind.as_deref() {
            Some("subject") => {
                only(&[&self.iss, &self.sub])?;
                Ok(BlockTarget::Subject {
                    iss: text("iss", &self.iss)?,
                    sub: text("sub", &self.sub)?,
                })
            }
            Some("user") => {
                only(&[&self.user])?;
                Ok(BlockTarget::User(text("user", &self.user)?))
            }
            Some("email") => {
                only(&[&self.email])?;
                let email = text("email", &self.email)?;
                if !crate::claim::valid_email(&email) {
                    return Err(AdminError::Invalid(format!(
                        "{email:?} is not an email address"
                    )));
                }
                Ok(BlockTarget::Email(email))
            }
            _ => Err(AdminError::Invalid(
                "kind must be \"subject\", \"user\" or \"email\"".into(),
            )),
        }
    }
}

/// What a block or unblock did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockResult {
    pub kind: &'static str,
    /// `false`: it was already so (nothing recorded).
    pub changed: bool,
}

impl Admin {
    /// Stops `target` from registering again (it does not revoke what it
    /// holds: revoke that too). Recorded as `operator.action` `block`. An
    /// unknown user is `NotFound`.
    pub async fn block(
        &self,
        target: BlockTarget,
        operator: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<BlockResult, AdminError> {
        if let BlockTarget::User(id) = &target {
            let filter = UserFilter {
                id: Some(id.clone()),
                ..UserFilter::default()
            };
            if self.store.list_users(&filter).await?.is_empty() {
                return Err(AdminError::NotFound(format!("no user {id:?}")));
            }
        }
        let change = self.change(target, operator, reason, meta, now)?;
        let kind = change.target.kind();
        let changed = self.store.block(change).await?;
        Ok(BlockResult { kind, changed })
    }

    /// Lifts a block. Recorded as `operator.action` `unblock`.
    pub async fn unblock(
        &self,
        target: BlockTarget,
        operator: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<BlockResult, AdminError> {
        let change = self.change(target, operator, reason, meta, now)?;
        let kind = change.target.kind();
        let changed = self.store.unblock(change).await?;
        Ok(BlockResult { kind, changed })
    }

    /// The blocks in force, oldest first.
    pub async fn blocks(&self) -> Result<Page<BlockRecord>, AdminError> {
        Ok(Page {
            items: self.store.list_blocks().await?,
            next: None,
        })
    }

    fn change(
        &self,
        target: BlockTarget,
        operator: &str,
        reason: Option<String>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<BlockChange, AdminError> {
        Ok(BlockChange {
            target,
            operator: clean("operator", operator, MAX_OPERATOR)?,
            reason: reason
                .map(|r| clean("reason", &r, MAX_REASON))
                .transpose()?,
            now,
            meta: meta.clone(),
        })
    }
}

/// Operator-supplied text headed for the audit trail: non-empty, printable,
/// bounded.
fn clean(what: &str, s: &str, max: usize) -> Result<String, AdminError> {
    let s = s.trim();
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "{what} must be 1 to {max} printable characters"
        )));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_their_successor_only_when_full() {
        let p = Page::of(vec![1, 2], Some(2), |n| n.to_string());
        assert_eq!(p.next.as_deref(), Some("2"));
        let p = Page::of(vec![1], Some(2), |n| n.to_string());
        assert_eq!(p.next, None);
    }

    #[test]
    fn event_queries_refuse_unknown_events_and_bad_ips() {
        let q = EventQuery {
            event: vec!["no.such".into()],
            ..EventQuery::default()
        };
        assert!(matches!(q.filter(), Err(AdminError::Invalid(_))));
        let q = EventQuery {
            ip: Some("10.0.0.300".into()),
            ..EventQuery::default()
        };
        assert!(matches!(q.filter(), Err(AdminError::Invalid(_))));
    }

    #[test]
    fn operator_text_is_bounded_and_printable() {
        assert!(clean("reason", "leaked in a log", MAX_REASON).is_ok());
        assert!(clean("reason", "a\nb", MAX_REASON).is_err());
        assert!(clean("reason", " ", MAX_REASON).is_err());
        assert!(clean("operator", &"x".repeat(65), MAX_OPERATOR).is_err());
    }
}
