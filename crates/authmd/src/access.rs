//! The decision for one request to the protected resource: is the
//! credential valid (docs/protocol.md §2.1, §7), and do its scopes satisfy the
//! `[[resource.rules]]` for this method and path? One function, used by the
//! tower layer (and so by the gateway) and by forward auth, so that the ways
//! in cannot disagree. It comes before any routing: a stranger's request is
//! a 401 whatever the method or path.

use std::sync::Arc;

use crate::AuthMd;
use crate::credential::{CredentialRecord, Refusal};
use crate::error::Error;
use crate::time::Timestamp;
use crate::validation::Validation;

/// The outcome, most decisive first.
#[derive(Debug, Clone)]
pub enum Access {
    /// No credential was presented: 401 with the discovery challenge.
    Missing,
    /// A credential was presented and is not valid: 401 `invalid_token`.
    /// The reason is for logs only.
    Invalid(Refusal),
    /// The path is not in the one form that the scope rules, a proxy in
    /// front and the API behind all read alike (see [`abnormal_path`]):
    /// 400, saying what was found. The rules match path prefixes as
    /// written; an API that decodes `%61` or resolves `..` would serve
    /// another path than the one the rules judged.
    AbnormalPath(&'static str),
    /// Valid, without the scopes the first matching rule needs: 403.
    Forbidden(Vec<String>),
    Granted(Arc<CredentialRecord>),
}

impl AuthMd {
    /// Decides a request with `bearer` (the token of `Authorization:
    /// Bearer`, `None` without one) for `method` and the raw `path` (no
    /// query).
    pub async fn authorize(
        &self,
        bearer: Option<&str>,
        method: &str,
        path: &str,
        now: Timestamp,
    ) -> Result<Access, Error> {
        let record = match self.validate(bearer, now).await? {
            Validation::Missing => return Ok(Access::Missing),
            Validation::Invalid(reason) => return Ok(Access::Invalid(reason)),
            Validation::Valid(record) => record,
        };
        if let Some(what) = abnormal_path(path) {
            return Ok(Access::AbnormalPath(what));
        }
        if let Some(needed) = self.scopes_for(method, path)
            && !record.has_scopes(needed)
        {
            return Ok(Access::Forbidden(needed.to_vec()));
        }
        Ok(Access::Granted(record))
    }

    /// Scopes a request needs: the first matching rule's, if any.
    pub fn scopes_for(&self, method: &str, path: &str) -> Option<&[String]> {
        self.config()
            .rules()
            .iter()
            .find(|r| {
                path.starts_with(&r.path_prefix)
                    && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
            })
            .map(|r| r.scopes.as_slice())
    }
}

/// What keeps a raw path from its normal form, if anything: the spellings
/// that a proxy or the API behind authmd may read as another path than
/// the one written, so that a scope rule written for `/api/admin` would
/// not see `/api/%61dmin`, `/api//admin`, `/api/x/../admin`,
/// `/api%2Fadmin` or `/api;x/admin` (which nginx merges, frameworks
/// decode, resolve or strip: RFC 3986 §5.2.4, §6.2.2.2). Refused rather
/// than normalized: authmd forwards the path unchanged, so the path it
/// judged is the path the API gets.
///
/// - a `.` or `..` segment;
/// - an empty segment (`//`);
/// - a percent-encoded unreserved character (letters, digits, `-._~`),
///   `/`, `\`, `;` or control character, or a `%` not followed by two hex
///   digits;
/// - a `\` or a `;` (a path parameter, which some servers strip).
pub fn abnormal_path(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
                    _ => None,
                };
                let Some(b) = decoded.and_then(|d| u8::try_from(d).ok()) else {
                    return Some("a % that is not followed by two hex digits");
                };
                if b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';')
                    || b.is_ascii_control()
                {
                    return Some(
                        "a percent-encoded letter, digit, -, ., _, ~, /, \\, ; or control character",
                    );
                }
                i += 3;
            }
            b'\\' => return Some("a backslash"),
            b';' => return Some("a ; (path parameter)"),
            _ => i += 1,
        }
    }
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Some("an empty segment (//)");
        }
        if segment == "." || segment == ".." {
            return Some("a . or .. segment");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_another_reader_could_read_otherwise_are_found() {
        for p in [
            "/api/..",
            "/api/../admin",
            "/api/./x",
            "/./",
            "/api/public/%2e%2e/admin",
            "/api/%2E./x",
            "/api/.%2e",
            "/api/%61dmin",
            "/api/%41",
            "/api/%7e",
            "/api/x%2Fy",
            "/api%2fadmin",
            "/api/x%5C..%5Cadmin",
            "/api/x%3By",
            "/api/x%00",
            "/api/x%0a",
            "/api/%zz",
            "/api/%2",
            "/api/x%",
            "//api/x",
            "/api//x",
            "/api/x\\y",
            "/api;x/admin",
            "/api/admin;jsessionid=1",
        ] {
            assert!(abnormal_path(p).is_some(), "{p}");
        }
        for p in [
            "/",
            "/api/",
            "/api/x",
            "/api/x/",
            "/api/.well",
            "/api/...",
            "/api/a..b",
            "/api/file.json",
            "/api/caf%C3%A9",
            "/api/a%20b",
            "/api/%3Fq",
            "/api/%25",
            "/api/x%2B1",
        ] {
            assert_eq!(abnormal_path(p), None, "{p}");
        }
    }
}
