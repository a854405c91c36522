//! The closed vocabulary of audit events (docs/protocol.md §8).
//!
//! Events are written by the store in the same transaction as the state
//! change they record. Each also goes to the structured log (target
//! `authmd::audit`) when it is recorded.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// Every event authmd records. The wire names are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    RegistrationCreated,
    RegistrationRejected,
    RegistrationExpired,
    RegistrationRevoked,
    CredentialIssued,
    CredentialRevoked,
    ClaimRequested,
    ClaimConfirmed,
    ClaimDenied,
    ClaimLocked,
    OtpGenerated,
    OtpFailed,
    /// An operator revoked something (CLI or admin API); `action` names it.
    OperatorAction,
    /// A provider subject's first registration was linked to an existing
    /// user by a verified email or phone (`matched_by`), docs/protocol.md §6.
    DelegationLinked,
    /// The current dialect signed an identity assertion (`jti`,
    /// `expires_at`).
    AssertionIssued,
    /// The token endpoint issued an access token for an assertion.
    TokenExchanged,
    /// An ID-JAG matched an existing account by a verified address: the
    /// user must confirm through the claim ceremony (current dialect).
    StepUpRequired,
    /// The current dialect's claim page emailed a sign-in link.
    SignInRequested,
    /// A refresh token was spent and its successor issued.
    RefreshRotated,
    /// A spent refresh token was presented again: its family is revoked.
    RefreshReused,
}

impl EventKind {
    pub const ALL: [EventKind; 20] = [
        EventKind::RegistrationCreated,
        EventKind::RegistrationRejected,
        EventKind::RegistrationExpired,
        EventKind::RegistrationRevoked,
        EventKind::CredentialIssued,
        EventKind::CredentialRevoked,
        EventKind::ClaimRequested,
        EventKind::ClaimConfirmed,
        EventKind::ClaimDenied,
        EventKind::ClaimLocked,
        EventKind::OtpGenerated,
        EventKind::OtpFailed,
        EventKind::OperatorAction,
        EventKind::DelegationLinked,
        EventKind::AssertionIssued,
        EventKind::TokenExchanged,
        EventKind::StepUpRequired,
        EventKind::SignInRequested,
        EventKind::RefreshRotated,
        EventKind::RefreshReused,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::RegistrationCreated => "registration.created",
            EventKind::RegistrationRejected => "registration.rejected",
            EventKind::RegistrationExpired => "registration.expired",
            EventKind::RegistrationRevoked => "registration.revoked",
            EventKind::CredentialIssued => "credential.issued",
            EventKind::CredentialRevoked => "credential.revoked",
            EventKind::ClaimRequested => "claim.requested",
            EventKind::ClaimConfirmed => "claim.confirmed",
            EventKind::ClaimDenied => "claim.denied",
            EventKind::ClaimLocked => "claim.locked",
            EventKind::OtpGenerated => "otp.generated",
            EventKind::OtpFailed => "otp.failed",
            EventKind::OperatorAction => "operator.action",
            EventKind::DelegationLinked => "delegation.linked",
            EventKind::AssertionIssued => "assertion.issued",
            EventKind::TokenExchanged => "token.exchanged",
            EventKind::StepUpRequired => "step_up.required",
            EventKind::SignInRequested => "claim.sign_in_requested",
            EventKind::RefreshRotated => "refresh.rotated",
            EventKind::RefreshReused => "refresh.reused",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who sent the request that caused an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The request's id (`X-Request-Id`, kept or generated), recorded in
    /// each event's data as `request_id`.
    pub request_id: Option<String>,
}

impl RequestMeta {
    /// Longest user agent kept; the rest is cut.
    pub const MAX_USER_AGENT: usize = 256;

    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        RequestMeta {
            ip,
            user_agent: user_agent.map(clean_user_agent),
            request_id: None,
        }
    }

    /// The same, naming the request (an id from `http::observe`, already
    /// sanitised).
    pub fn with_request_id(mut self, id: Option<&str>) -> Self {
        self.request_id = id.map(str::to_owned);
        self
    }

    /// The client's address as the audit trail stores it.
    pub fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| {
            let mut s = String::with_capacity(15);
            push_ip(&mut s, ip);
            s
        })
    }
}

/// Appends `ip` as text, as `Display` writes it: an IPv4 address without
/// the formatting machinery (a third of the gateway's `X-Forwarded-For`
/// work, and a thousand instructions per audit event), an IPv6 one through
/// it.
#[inline]
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Printable ASCII only, at most [`RequestMeta::MAX_USER_AGENT`] bytes: a
/// user agent is attacker-chosen text headed for logs and terminals.
fn clean_user_agent(ua: &str) -> String {
    ua.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(RequestMeta::MAX_USER_AGENT)
        .collect()
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub kind: EventKind,
    pub at: Timestamp,
    pub registration_id: Option<String>,
    pub user_id: Option<String>,
    pub meta: RequestMeta,
    /// Event-specific fields (`registration_type`, `code`, `iss`, …).
    pub data: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(kind: EventKind, at: Timestamp, meta: &RequestMeta) -> Self {
        let mut data = Map::new();
        if let Some(id) = &meta.request_id {
            data.insert("request_id".into(), Value::String(id.clone()));
        }
        AuditEvent {
            kind,
            at,
            registration_id: None,
            user_id: None,
            meta: meta.clone(),
            data,
        }
    }

    pub fn registration(mut self, id: &str) -> Self {
        self.registration_id = Some(id.to_owned());
        self.data
            .insert("registration_id".into(), Value::String(id.to_owned()));
        self
    }

    pub fn user(mut self, id: &str) -> Self {
        self.user_id = Some(id.to_owned());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// The provider the event concerns (its `iss` field), for filtering.
    pub fn provider(&self) -> Option<&str> {
        self.data.get("iss").and_then(Value::as_str)
    }

    /// The `data` column as JSON text.
    pub fn data_json(&self) -> String {
        // A map with string keys always serializes; the fallback is still
        // a JSON object.
        serde_json::to_string(&self.data).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Whether [`AuditEvent::log`] writes anything: false when the
    /// structured log is off or filters `authmd::audit` above `info`. A
    /// caller that would build events only to log them asks first.
    pub fn logged() -> bool {
        tracing::enabled!(target: "authmd::audit", tracing::Level::INFO)
    }

    /// Writes the event to the structured log.
    pub fn log(&self) {
        tracing::info!(
            target: "authmd::audit",
            event = self.kind.as_str(),
            registration_id = self.registration_id.as_deref(),
            user_id = self.user_id.as_deref(),
            ip = self.meta.ip_text(),
            data = %self.data_json(),
            "audit"
        );
    }
}

/// A recorded event, as listed and exported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Monotonic per store; the cursor for listing.
    pub id: i64,
    pub at: Timestamp,
    pub event: String,
    pub registration_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub data: Value,
}

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Event names; empty = all.
    pub events: Vec<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub registration_id: Option<String>,
    pub user_id: Option<String>,
    /// The provider's issuer (`iss`) the event concerns.
    pub provider: Option<String>,
    /// The client IP, as recorded.
    pub ip: Option<String>,
    /// Only events with an id greater than this (the cursor).
    pub after_id: Option<i64>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        let cases: [IpAddr; 6] = [
            IpAddr::from([0, 0, 0, 0]),
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([10, 20, 100, 255]),
            IpAddr::from([192, 168, 9, 99]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0x8a2e, 0x370, 0x7334]),
        ];
        for ip in cases {
            let mut s = String::from("x, ");
            push_ip(&mut s, ip);
            assert_eq!(s, format!("x, {ip}"));
            assert_eq!(
                RequestMeta::new(Some(ip), None).ip_text(),
                Some(ip.to_string())
            );
        }
        assert_eq!(RequestMeta::new(None, None).ip_text(), None);
        for a in 0..=255u8 {
            let ip = IpAddr::from([a, 255 - a, a / 3, 7]);
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }

    /// Event names are part of the contract: each has its row in
    /// docs/protocol.md §8, and so do the `by` values and operator actions
    /// the code records.
    #[test]
    fn every_event_and_operator_action_is_documented() {
        let doc = include_str!("../../../docs/protocol.md");
        let table = doc
            .split("\n## 8. Audit events")
            .nth(1)
            .and_then(|rest| rest.split("\n### ").next())
            .unwrap_or_default();
        for k in EventKind::ALL {
            let row = format!("| `{}` |", k.as_str());
            assert!(table.contains(&row), "§8 has no row for {}", k.as_str());
        }
        for word in [
            "`self`",
            "`cap`",
            "`max_api_keys_per_delegation`",
            "`revoke_registration`",
            "`revoke_user`",
            "`revoke_provider`",
            "`revoke_all`",
            "`block`",
            "`unblock`",
            "`rotate_signing_key`",
        ] {
            assert!(table.contains(word), "§8 does not mention {word}");
        }
    }

    #[test]
    fn user_agents_are_cleaned_and_capped() {
        let m = RequestMeta::new(None, Some("evil\u{1b}[31m\nagent"));
        assert_eq!(m.user_agent.as_deref(), Some("evil?[31m?agent"));
        let long = "a".repeat(10_000);
        let m = RequestMeta::new(None, Some(&long));
        assert_eq!(
            m.user_agent.map(|u| u.len()),
            Some(RequestMeta::MAX_USER_AGENT)
        );
    }
}
