//! The one mapping from errors to HTTP answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, ProtocolError, retry_after_secs};

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
}

/// The status of each protocol error (docs/protocol.md §10).
pub fn status(e: &ProtocolError) -> StatusCode {
    match e {
        ProtocolError::InvalidRequest(_)
        | ProtocolError::AnonymousNotEnabled
        | ProtocolError::VerifiedEmailNotEnabled
        | ProtocolError::IdentityAssertionNotEnabled
        | ProtocolError::UnsupportedCredentialType(_)
        | ProtocolError::InvalidIssuer
        | ProtocolError::InvalidSignature(_)
        | ProtocolError::Expired
        | ProtocolError::InvalidAudience(_)
        | ProtocolError::InvalidClientId
        | ProtocolError::MissingVerifiedEmail
        | ProtocolError::InsufficientUserAuthentication(_)
        | ProtocolError::ReplayDetected
        | ProtocolError::InvalidLogoutToken(_) => StatusCode::BAD_REQUEST,
        ProtocolError::UserNotProvisioned | ProtocolError::Blocked => StatusCode::FORBIDDEN,
        ProtocolError::OtpNotGenerated => StatusCode::BAD_REQUEST,
        ProtocolError::InvalidClaimToken | ProtocolError::OtpInvalid => StatusCode::UNAUTHORIZED,
        ProtocolError::ClaimedOrInFlight
        | ProtocolError::ClaimCompleted
        | ProtocolError::PreviouslyClaimed => StatusCode::CONFLICT,
        ProtocolError::ClaimExpired
        | ProtocolError::ClaimSuperseded
        | ProtocolError::OtpExpired => StatusCode::GONE,
        ProtocolError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        ProtocolError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ProtocolError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ProtocolError::InvalidToken | ProtocolError::InvalidClient => StatusCode::UNAUTHORIZED,
        ProtocolError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
        ProtocolError::NotFound => StatusCode::NOT_FOUND,
        ProtocolError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ProtocolError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
        ProtocolError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        ProtocolError::InvalidGrant(_)
        | ProtocolError::UnsupportedGrantType
        | ProtocolError::InvalidTarget
        | ProtocolError::InvalidScope(_) => StatusCode::BAD_REQUEST,
        ProtocolError::LoginRequired { .. } | ProtocolError::InteractionRequired => {
            StatusCode::UNAUTHORIZED
        }
        ProtocolError::InvalidLoginHint(_)
        | ProtocolError::InvalidClaim
        | ProtocolError::InvalidRefreshToken => StatusCode::BAD_REQUEST,
        ProtocolError::ClaimNotConfirmed => StatusCode::CONFLICT,
    }
}

impl IntoResponse for ProtocolError {
    fn into_response(self) -> Response {
        crate::metrics::refusal(self.code());
        let mut response = (
            status(&self),
            axum::Json(Body {
                error: self.code(),
                message: self.to_string(),
            }),
        )
            .into_response();
        if let ProtocolError::RateLimited { retry_after } = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
        }
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Protocol(p) => p.into_response(),
            Error::Internal(e) => {
                if let Some(crate::store::StoreError::Unavailable(why)) =
                    e.downcast_ref::<crate::store::StoreError>()
                {
                    tracing::warn!(error = %why, "database unavailable; answered 503");
                    return unavailable();
                }
                // The cause chain goes to the log, never to the client.
                let mut chain = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::error!(error = %chain, "internal error");
                crate::metrics::refusal("server_error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(serde_json::json!({ "error": "server_error" })),
                )
                    .into_response()
            }
        }
    }
}

/// Seconds a client is told to wait when the database is unreachable.
pub const UNAVAILABLE_RETRY_AFTER: u32 = 1;

/// `503 {"error": "temporarily_unavailable"}` with `Retry-After`: the
/// database cannot be reached; nothing was decided (docs/protocol.md §22).
pub fn unavailable() -> Response {
    crate::metrics::refusal("temporarily_unavailable");
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({
            "error": "temporarily_unavailable",
            "message": "the service cannot reach its database; try again shortly",
        })),
    )
        .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every protocol error has the status and code of docs/protocol.md §10.
    #[test]
    fn every_error_has_its_table_status_and_code() {
        let cases = [
            (ProtocolError::invalid_request("x"), 400, "invalid_request"),
            (
                ProtocolError::PayloadTooLarge(65536),
                413,
                "invalid_request",
            ),
            (
                ProtocolError::AnonymousNotEnabled,
                400,
                "anonymous_not_enabled",
            ),
            (
                ProtocolError::VerifiedEmailNotEnabled,
                400,
                "verified_email_not_enabled",
            ),
            (
                ProtocolError::IdentityAssertionNotEnabled,
                400,
                "identity_assertion_not_enabled",
            ),
            (
                ProtocolError::UnsupportedCredentialType("x".into()),
                400,
                "unsupported_credential_type",
            ),
            (
                ProtocolError::RateLimited {
                    retry_after: Duration::from_secs(3),
                },
                429,
                "rate_limited",
            ),
            (ProtocolError::InvalidIssuer, 400, "invalid_issuer"),
            (
                ProtocolError::InvalidSignature("x".into()),
                400,
                "invalid_signature",
            ),
            (ProtocolError::Expired, 400, "expired"),
            (
                ProtocolError::InvalidAudience("x".into()),
                400,
                "invalid_audience",
            ),
            (ProtocolError::InvalidClientId, 400, "invalid_client_id"),
            (
                ProtocolError::MissingVerifiedEmail,
                400,
                "missing_verified_email",
            ),
            (
                ProtocolError::InsufficientUserAuthentication("x".into()),
                400,
                "insufficient_user_authentication",
            ),
            (ProtocolError::ReplayDetected, 400, "replay_detected"),
            (
                ProtocolError::InvalidLogoutToken("x".into()),
                400,
                "invalid_logout_token",
            ),
            (
                ProtocolError::UserNotProvisioned,
                403,
                "user_not_provisioned",
            ),
            (ProtocolError::InvalidClaimToken, 401, "invalid_claim_token"),
            (
                ProtocolError::ClaimedOrInFlight,
                409,
                "claimed_or_in_flight",
            ),
            (ProtocolError::ClaimExpired, 410, "claim_expired"),
            (ProtocolError::ClaimSuperseded, 410, "claim_superseded"),
            (ProtocolError::ClaimCompleted, 409, "claim_completed"),
            (ProtocolError::OtpNotGenerated, 400, "otp_not_generated"),
            (ProtocolError::OtpExpired, 410, "otp_expired"),
            (ProtocolError::OtpInvalid, 401, "otp_invalid"),
            (
                ProtocolError::TooManyAttempts("x".into()),
                429,
                "too_many_attempts",
            ),
            (ProtocolError::PreviouslyClaimed, 409, "previously_claimed"),
            (ProtocolError::InvalidToken, 401, "invalid_token"),
            (ProtocolError::InvalidClient, 401, "invalid_client"),
            (
                ProtocolError::UpstreamUnavailable,
                502,
                "upstream_unavailable",
            ),
            (ProtocolError::UpstreamTimeout, 504, "upstream_timeout"),
            (
                ProtocolError::InvalidGrant("x".into()),
                400,
                "invalid_grant",
            ),
            (
                ProtocolError::UnsupportedGrantType,
                400,
                "unsupported_grant_type",
            ),
            (ProtocolError::InvalidTarget, 400, "invalid_target"),
            (
                ProtocolError::InvalidScope("x".into()),
                400,
                "invalid_scope",
            ),
            (
                ProtocolError::LoginRequired { max_age: 3600 },
                401,
                "login_required",
            ),
            (
                ProtocolError::InteractionRequired,
                401,
                "interaction_required",
            ),
            (
                ProtocolError::InvalidLoginHint("x".into()),
                400,
                "invalid_login_hint",
            ),
            (ProtocolError::InvalidClaim, 400, "invalid_claim"),
            (ProtocolError::ClaimNotConfirmed, 409, "claim_not_confirmed"),
            (
                ProtocolError::InvalidRefreshToken,
                400,
                "invalid_refresh_token",
            ),
            (
                ProtocolError::InsufficientScope { needed: vec![] },
                403,
                "insufficient_scope",
            ),
        ];
        // The table itself: each code has its row, with this status.
        let doc = include_str!("../../../../docs/protocol.md");
        let table = doc
            .split("\n## 10. Error codes")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        for (e, st, code) in cases {
            assert_eq!(status(&e).as_u16(), st, "{e:?}");
            assert_eq!(e.code(), code);
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| `{code}` |")))
                .unwrap_or_else(|| panic!("docs/protocol.md §10 has no row for {code}"));
            let status_cell = row.split('|').nth(2).unwrap_or_default();
            assert!(
                status_cell.contains(&st.to_string()),
                "§10 gives {code} as {status_cell:?}, not {st}"
            );
        }
    }

    #[test]
    fn internal_errors_reveal_nothing() {
        let e = Error::internal(std::io::Error::other("disk /var/secret full"));
        let r = e.into_response();
        assert_eq!(r.status(), 500);
    }
}
