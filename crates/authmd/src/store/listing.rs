//! What operators list: registrations, credentials, users, delegations and
//! audit events. Each listing is written once, as a [`Query`] both backends
//! run (only the placeholder syntax differs), and its rows are read by one
//! mapper through [`ReadRow`].
//!
//! Every listing pages with a cursor over a key that never changes (ids are
//! time-ordered, so id order is creation order) and is capped at
//! [`MAX_PAGE`] rows.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::audit::{AuditRecord, EventFilter};
use crate::time::Timestamp;

/// Most rows one listing call returns.
pub const MAX_PAGE: u32 = 1000;

/// A bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// SQL with `#` for each argument, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    sql: String,
    pub args: Vec<Arg>,
}

impl Query {
    pub fn new(sql: &str) -> Query {
        Query {
            sql: sql.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends `clause`; its `#` marks take `args` in order.
    pub fn push(&mut self, clause: &str, args: impl IntoIterator<Item = Arg>) -> &mut Self {
        self.sql.push_str(clause);
        self.args.extend(args);
        debug_assert_eq!(self.sql.matches('#').count(), self.args.len());
        self
    }

    /// Appends `clause` if `value` is set (one `#`).
    pub fn push_text(&mut self, clause: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.push(clause, [Arg::Text(v.to_owned())]);
        }
        self
    }

    /// Appends `clause` if `value` is set (one `#`, a time in milliseconds).
    pub fn push_time(&mut self, clause: &str, value: Option<Timestamp>) -> &mut Self {
        if let Some(v) = value {
            self.push(clause, [Arg::Int(v.as_millis())]);
        }
        self
    }

    /// `<prefix> IN (#, #, …)` for a non-empty list.
    pub fn push_in(&mut self, prefix: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            let marks = vec!["#"; values.len()].join(", ");
            self.push(
                &format!("{prefix} IN ({marks})"),
                values.iter().cloned().map(Arg::Text),
            );
        }
        self
    }

    /// The SQL for SQLite (`?1`, `?2`, …).
    pub fn sqlite(&self) -> String {
        self.render("?")
    }

    /// The SQL for PostgreSQL (`$1`, `$2`, …).
    pub fn postgres(&self) -> String {
        self.render("$")
    }

    fn render(&self, mark: &str) -> String {
        let mut out = String::with_capacity(self.sql.len() + 16);
        let mut n = 0;
        for c in self.sql.chars() {
            if c == '#' {
                n += 1;
                out.push_str(mark);
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Reads a column of either backend's row.
pub(crate) trait ReadRow {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn boolean(&self, i: usize) -> Result<bool, StoreError>;

    fn time(&self, i: usize) -> Result<Timestamp, StoreError> {
        self.int(i).map(Timestamp::from_millis)
    }

    fn opt_time(&self, i: usize) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.opt_int(i)?.map(Timestamp::from_millis))
    }
}

/// Which registrations to list. Every field narrows the listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationFilter {
    /// Exactly this registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Any of `unclaimed`, `pending_claim`, `claimed`, `active`, `expired`,
    /// `revoked` (comma-separated in a query string).
    #[serde(
        default,
        deserialize_with = "comma_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub status: Vec<String>,
    /// `anonymous`, `email-verification`, `agent-provider`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The user's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's or the claim's email (domain compared in any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The provider's issuer (`iss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_before: Option<Timestamp>,
    /// Claim deadline at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<Timestamp>,
    /// Claim deadline before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_before: Option<Timestamp>,
    /// The cursor: registrations after this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A registration as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrationSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The claim deadline (unclaimed and email-required registrations).
    pub expires_at: Option<Timestamp>,
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    /// The address a claim was requested for.
    pub claim_email: Option<String>,
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// Credentials neither revoked nor expired.
    pub live_credentials: i64,
    /// The wire dialect it was made in: `original` or `current`
    /// (docs/protocol.md §20).
    pub dialect: String,
}

/// A credential as operators see it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub scopes: Vec<String>,
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<String>,
}

/// Which users to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    /// Exactly this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub phone_number: Option<String>,
    pub phone_verified: bool,
    pub name: Option<String>,
    pub created_by_agent: bool,
    pub created_at: Timestamp,
    /// Registrations bound to this user that are still live.
    pub live_registrations: i64,
}

/// Which delegations to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `active` or `revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The cursor: the `cursor` of the last delegation seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A provider's `(iss, sub)` bound to a user here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegationRecord {
    pub iss: String,
    pub sub: String,
    pub user_id: String,
    /// The registration its ID-JAGs land in.
    pub registration_id: String,
    pub state: &'static str,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// Opaque; pass as `after` to continue.
    pub cursor: String,
}

/// A list written as one comma-separated string (a query string has no
/// lists), or as a list.
pub fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Either::Many(v) => v,
    })
}

/// Statuses in which a registration's credentials may be in use.
pub(crate) const LIVE_STATUSES: [&str; 4] = ["unclaimed", "pending_claim", "claimed", "active"];

fn limit(l: Option<u32>) -> i64 {
    i64::from(l.unwrap_or(100).clamp(1, MAX_PAGE))
}

fn live_statuses() -> Vec<String> {
    LIVE_STATUSES.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) fn registrations(f: &RegistrationFilter, now: Timestamp) -> Query {
    let mut q = Query::new(
        "SELECT r.id, r.type, r.status, r.created_at, r.updated_at, r.expires_at, r.user_id,
                u.email, r.email, r.iss, r.sub,
                (SELECT COUNT(*) FROM credentials c WHERE c.registration_id = r.id
                   AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > #)),
                r.dialect
         FROM registrations r LEFT JOIN users u ON u.id = r.user_id WHERE 1 = 1",
    );
    q.args.push(Arg::Int(now.as_millis()));
    q.push_text(" AND r.id = #", f.id.as_deref())
        .push_in(" AND r.status", &f.status)
        .push_text(" AND r.type = #", f.kind.as_deref())
        .push_text(" AND r.user_id = #", f.user.as_deref())
        .push_text(" AND r.iss = #", f.provider.as_deref())
        .push_time(" AND r.created_at >= #", f.created_after)
        .push_time(" AND r.created_at < #", f.created_before)
        .push_time(" AND r.expires_at >= #", f.expires_after)
        .push_time(" AND r.expires_at < #", f.expires_before)
        .push_text(" AND r.id > #", f.after.as_deref());
    if let Some(email) = &f.email {
        let normalized = crate::users::normalize_email(email).unwrap_or_else(|| email.clone());
        q.push(
            " AND (r.email = # OR r.user_id IN (SELECT id FROM users WHERE email_normalized = #))",
            [Arg::Text(email.clone()), Arg::Text(normalized)],
        );
    }
    q.push(" ORDER BY r.id LIMIT #", [Arg::Int(limit(f.limit))]);
    q
}

pub(crate) fn registration_summary(r: &impl ReadRow) -> Result<RegistrationSummary, StoreError> {
    Ok(RegistrationSummary {
        id: r.text(0)?,
        kind: r.text(1)?,
        status: r.text(2)?,
        created_at: r.time(3)?,
        updated_at: r.time(4)?,
        expires_at: r.opt_time(5)?,
        user_id: r.opt_text(6)?,
        user_email: r.opt_text(7)?,
        claim_email: r.opt_text(8)?,
        iss: r.opt_text(9)?,
        sub: r.opt_text(10)?,
        live_credentials: r.int(11)?,
        dialect: r.text(12)?,
    })
}

pub(crate) fn credentials_of(registration_id: &str) -> Query {
    let mut q = Query::new(
        "SELECT id, type, source, scopes, issued_at, expires_at, revoked_at, iss, sub, aud
         FROM credentials WHERE registration_id = #",
    );
    q.args.push(Arg::Text(registration_id.to_owned()));
    q.push(" ORDER BY id LIMIT #", [Arg::Int(i64::from(MAX_PAGE))]);
    q
}

pub(crate) fn credential_summary(r: &impl ReadRow) -> Result<CredentialSummary, StoreError> {
    Ok(CredentialSummary {
        id: r.text(0)?,
        kind: r.text(1)?,
        source: r.text(2)?,
        scopes: super::split_scopes(&r.text(3)?),
        issued_at: r.time(4)?,
        expires_at: r.opt_time(5)?,
        revoked_at: r.opt_time(6)?,
        iss: r.opt_text(7)?,
        sub: r.opt_text(8)?,
        aud: r.opt_text(9)?,
    })
}

pub(crate) fn users(f: &UserFilter) -> Query {
    let mut q = Query::new(
        "SELECT u.id, u.email, u.email_verified, u.phone_number, u.phone_verified, u.name,
                u.created_by_agent, u.created_at,
                (SELECT COUNT(*) FROM registrations r WHERE r.user_id = u.id",
    );
    q.push_in(" AND r.status", &live_statuses());
    q.push(") FROM users u WHERE 1 = 1", []);
    if let Some(email) = &f.email {
        let normalized = crate::users::normalize_email(email).unwrap_or_else(|| email.clone());
        q.push(" AND u.email_normalized = #", [Arg::Text(normalized)]);
    }
    q.push_text(" AND u.id = #", f.id.as_deref())
        .push_text(" AND u.id > #", f.after.as_deref())
        .push(" ORDER BY u.id LIMIT #", [Arg::Int(limit(f.limit))]);
    q
}

pub(crate) fn user_record(r: &impl ReadRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.text(0)?,
        email: r.opt_text(1)?,
        email_verified: r.boolean(2)?,
        phone_number: r.opt_text(3)?,
        phone_verified: r.boolean(4)?,
        name: r.opt_text(5)?,
        created_by_agent: r.boolean(6)?,
        created_at: r.time(7)?,
        live_registrations: r.int(8)?,
    })
}

/// The delegation cursor: `iss` and `sub` joined by a NUL (neither may
/// hold control characters), base64url-encoded so it travels in a URL.
fn delegation_cursor(iss: &str, sub: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{iss}\0{sub}"))
}

fn parse_delegation_cursor(cursor: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (iss, sub) = text.split_once('\0')?;
    Some((iss.to_owned(), sub.to_owned()))
}

impl DelegationFilter {
    /// Refuses a `state` or a cursor this listing does not know.
    pub fn check(&self) -> Result<(), String> {
        if let Some(s) = &self.state
            && s != "active"
            && s != "revoked"
        {
            return Err("state must be active or revoked".into());
        }
        if let Some(c) = &self.after
            && parse_delegation_cursor(c).is_none()
        {
            return Err("after is not a delegation cursor".into());
        }
        Ok(())
    }
}

/// Delegations matching `f` (checked with [`DelegationFilter::check`]; an
/// unknown state or cursor matches nothing).
pub(crate) fn delegations(f: &DelegationFilter) -> Query {
    let mut q = Query::new(
        "SELECT iss, sub, user_id, registration_id, created_at, updated_at, revoked_at
         FROM delegations WHERE 1 = 1",
    );
    q.push_text(" AND iss = #", f.provider.as_deref())
        .push_text(" AND sub = #", f.sub.as_deref())
        .push_text(" AND user_id = #", f.user.as_deref());
    match f.state.as_deref() {
        None => {}
        Some("active") => {
            q.push(" AND revoked_at IS NULL", []);
        }
        Some("revoked") => {
            q.push(" AND revoked_at IS NOT NULL", []);
        }
        Some(_) => {
            q.push(" AND 1 = 0", []);
        }
    }
    if let Some(cursor) = &f.after {
        match parse_delegation_cursor(cursor) {
            Some((iss, sub)) => q.push(
                " AND (iss > # OR (iss = # AND sub > #))",
                [Arg::Text(iss.clone()), Arg::Text(iss), Arg::Text(sub)],
            ),
            None => q.push(" AND 1 = 0", []),
        };
    }
    q.push(" ORDER BY iss, sub LIMIT #", [Arg::Int(limit(f.limit))]);
    q
}

pub(crate) fn delegation_record(r: &impl ReadRow) -> Result<DelegationRecord, StoreError> {
    let iss = r.text(0)?;
    let sub = r.text(1)?;
    let revoked_at = r.opt_time(6)?;
    Ok(DelegationRecord {
        cursor: delegation_cursor(&iss, &sub),
        iss,
        sub,
        user_id: r.text(2)?,
        registration_id: r.text(3)?,
        state: if revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
        created_at: r.time(4)?,
        updated_at: r.time(5)?,
        revoked_at,
    })
}

/// The live registrations an operator's target names.
pub(crate) fn revoke_targets(target: &super::RevokeTarget) -> Query {
    let live = live_statuses();
    let mut q = Query::new("SELECT id, user_id, iss, sub FROM registrations WHERE 1 = 1");
    q.push_in(" AND status", &live);
    match target {
        super::RevokeTarget::Registration(id) => q.push(" AND id = #", [Arg::Text(id.clone())]),
        super::RevokeTarget::User(id) => q.push(" AND user_id = #", [Arg::Text(id.clone())]),
        super::RevokeTarget::Provider(iss) => q.push(" AND iss = #", [Arg::Text(iss.clone())]),
        super::RevokeTarget::All => &mut q,
    };
    q.push(" ORDER BY id", []);
    q
}

/// The columns every event listing reads, in [`event_record`]'s order.
pub(crate) const EVENT_COLUMNS: &str =
    "id, at, event, registration_id, user_id, ip, user_agent, data";

/// How a backend finds the audit events of a registration or of a kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EventIndex {
    /// Indexes on `registration_id` and on `(event, id)` (PostgreSQL).
    Column,
    /// SQLite (migrations 0015 and 0016): `audit_events_by_registration`
    /// and `audit_events_by_kind`, which the writer fills about once a
    /// second up to its mark in `audit_events_indexed`, and after that
    /// point the events themselves, by id.
    Deferred,
}

/// The `WHERE` conditions of an event filter other than its registration,
/// its kinds and its cursor (column names that the deferred index tables
/// do not share, so they need no table name beside them).
fn event_filters(q: &mut Query, f: &EventFilter) {
    q.push_time(" AND at >= #", f.since)
        .push_time(" AND at < #", f.until)
        .push_text(" AND user_id = #", f.user_id.as_deref())
        .push_text(" AND provider = #", f.provider.as_deref())
        .push_text(" AND ip = #", f.ip.as_deref());
}

/// The `WHERE` conditions of an event filter (without the cursor), where
/// `registration_id` and `event` are indexed (`EventIndex::Column`).
pub(crate) fn event_conditions(q: &mut Query, f: &EventFilter) {
    q.push_text(" AND registration_id = #", f.registration_id.as_deref())
        .push_in(" AND event", &f.events);
    event_filters(q, f);
}

/// Most arms of a listing's indexed half: one per kind named (there are
/// fewer kinds than this), far below SQLite's 500 arms per statement.
const MAX_ARMS: usize = 64;

/// One of SQLite's deferred index tables, and the condition on it that a
/// filter asks for: its key column, the `audit_events` column it copies,
/// and the values; and the kinds still to match on the event itself (a
/// registration's listing may name kinds too).
struct Deferred<'a> {
    table: &'static str,
    /// The column of `audit_events_indexed` that says how far it goes.
    mark: &'static str,
    key: &'static str,
    column: &'static str,
    values: &'a [String],
    kinds: &'a [String],
}

impl<'a> Deferred<'a> {
    /// The table that narrows `f` most: its registration, else its kinds;
    /// `None` when it names neither.
    fn of(f: &'a EventFilter) -> Option<Deferred<'a>> {
        if let Some(registration) = &f.registration_id {
            Some(Deferred {
                table: "audit_events_by_registration",
                mark: "through",
                key: "registration_id",
                column: "registration_id",
                values: std::slice::from_ref(registration),
                kinds: &f.events,
            })
        } else if !f.events.is_empty() {
            Some(Deferred {
                table: "audit_events_by_kind",
                mark: "kinds_through",
                key: "kind",
                column: "event",
                values: &f.events,
                kinds: &[],
            })
        } else {
            None
        }
    }
}

/// Events matching `f` with an id above `after` (and at most `upto`),
/// oldest first, at most `limit`. `data` is `data` as text (PostgreSQL
/// stores JSONB: `data_column` casts it).
///
/// A registration's events, or a kind's, on SQLite (`EventIndex::Deferred`)
/// are two halves, each in id order and each with every condition: those
/// in the deferred index table, walked by its key from `after`, and those
/// after the point it covers, by id. SQLite merges the two and stops at
/// `limit`, so a page of one registration or one kind costs what it
/// returns, however many events there are.
pub(crate) fn events_between(
    f: &EventFilter,
    after: i64,
    upto: Option<i64>,
    limit: i64,
    data_column: &str,
    index: EventIndex,
) -> Query {
    let columns = EVENT_COLUMNS.replace("data", data_column);
    match (index, Deferred::of(f)) {
        (EventIndex::Deferred, Some(d)) => {
            // `x.event_id` (equal to `e.id`) first: SQLite then sees that
            // the key's order is the order asked for, and sorts nothing.
            let qualified: Vec<String> = columns
                .split(", ")
                .map(|c| match c {
                    "id" => "x.event_id".to_owned(),
                    c => format!("e.{c}"),
                })
                .collect();
            // One arm per value (kinds named twice count once): each is in
            // id order, so SQLite merges the arms and sorts nothing, where
            // an `IN` list sorts every match before the first row (157 ms
            // against 0.6 ms for a page of two kinds among 124,000 events).
            // Past `MAX_ARMS` values, one arm with the list.
            let mut values: Vec<String> = d.values.to_vec();
            values.sort();
            values.dedup();
            let arms: Vec<&[String]> = if values.len() <= MAX_ARMS {
                values.iter().map(std::slice::from_ref).collect()
            } else {
                vec![&values]
            };
            let mut q = Query::default();
            for (i, arm) in arms.into_iter().enumerate() {
                q.push(
                    &format!(
                        "{}SELECT {} FROM {} x JOIN audit_events e ON e.id = x.event_id
                         WHERE x.event_id > #",
                        if i == 0 { "" } else { " UNION ALL " },
                        qualified.join(", "),
                        d.table,
                    ),
                    [Arg::Int(after)],
                );
                q.push_in(&format!(" AND x.{}", d.key), arm);
                if let Some(upto) = upto {
                    q.push(" AND x.event_id <= #", [Arg::Int(upto)]);
                }
                q.push_in(" AND e.event", d.kinds);
                event_filters(&mut q, f);
            }
            q.push(
                // By id only (`NOT INDEXED`: no index but the rowid): these
                // are the events after the mark, about the last second's,
                // where a time window would have SQLite walk `at` through
                // every event in the window and sort them.
                &format!(
                    " UNION ALL SELECT {columns} FROM audit_events NOT INDEXED
                     WHERE id > MAX(#, (SELECT {} FROM audit_events_indexed))",
                    d.mark
                ),
                [Arg::Int(after)],
            );
            q.push_in(&format!(" AND {}", d.column), &values);
            if let Some(upto) = upto {
                q.push(" AND id <= #", [Arg::Int(upto)]);
            }
            q.push_in(" AND event", d.kinds);
            event_filters(&mut q, f);
            q.push(" ORDER BY 1 LIMIT #", [Arg::Int(limit)]);
            q
        }
        _ => {
            // No cursor, no `id` condition: the planner may then start from
            // another index (`at` for a time window), as before.
            let mut q = Query::new(&format!("SELECT {columns} FROM audit_events WHERE 1 = 1"));
            if after > 0 {
                q.push(" AND id > #", [Arg::Int(after)]);
            }
            if let Some(upto) = upto {
                q.push(" AND id <= #", [Arg::Int(upto)]);
            }
            event_conditions(&mut q, f);
            q.push(" ORDER BY id LIMIT #", [Arg::Int(limit)]);
            q
        }
    }
}

/// Events matching `f`, oldest first, from `f.after_id`.
pub(crate) fn events(f: &EventFilter, data_column: &str, index: EventIndex) -> Query {
    events_between(
        f,
        f.after_id.unwrap_or(0),
        None,
        i64::from(f.limit.clamp(1, MAX_PAGE)),
        data_column,
        index,
    )
}

pub(crate) fn event_record(r: &impl ReadRow) -> Result<AuditRecord, StoreError> {
    let data = r.text(7)?;
    Ok(AuditRecord {
        id: r.int(0)?,
        at: r.time(1)?,
        event: r.text(2)?,
        registration_id: r.opt_text(3)?,
        user_id: r.opt_text(4)?,
        ip: r.opt_text(5)?,
        user_agent: r.opt_text(6)?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_per_backend() {
        let mut q = Query::new("SELECT 1 WHERE a = #");
        q.args.push(Arg::Int(1));
        q.push_in(" AND b", &["x".into(), "y".into()]);
        assert_eq!(q.sqlite(), "SELECT 1 WHERE a = ?1 AND b IN (?2, ?3)");
        assert_eq!(q.postgres(), "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(q.args.len(), 3);
    }

    #[test]
    fn delegation_cursors_round_trip() {
        let c = delegation_cursor("https://idp.example", "user 1");
        assert_eq!(
            parse_delegation_cursor(&c),
            Some(("https://idp.example".into(), "user 1".into()))
        );
        assert_eq!(parse_delegation_cursor("!!"), None);
    }
}
