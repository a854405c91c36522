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
    /// The path has a `.` or `..` segment (also percent-encoded): 400. The
    /// rules match path prefixes; an upstream that resolves dot segments
    /// would serve another path than the one the rules saw.
    DotSegments,
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
        if has_dot_segments(path) {
            return Ok(Access::DotSegments);
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

/// Whether a raw path has a `.` or `..` segment, written plainly or
/// percent-encoded (`%2e`, RFC 3986 §2.3: an unreserved character that a
/// normalizer decodes).
pub fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let mut dots = 0;
        let mut rest = segment;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                rest = r;
            } else if let Some(r) = rest
                .strip_prefix("%2e")
                .or_else(|| rest.strip_prefix("%2E"))
            {
                rest = r;
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for p in [
            "/api/..",
            "/api/../admin",
            "/api/./x",
            "/api/public/%2e%2e/admin",
            "/api/%2E./x",
            "/api/.%2e",
            "/./",
        ] {
            assert!(has_dot_segments(p), "{p}");
        }
        for p in [
            "/api/",
            "/api/x",
            "/api/.well",
            "/api/...",
            "/api/a..b",
            "/api/%2e%2e%2e",
            "/api/file.json",
            "/api/%2ex",
        ] {
            assert!(!has_dot_segments(p), "{p}");
        }
    }
}
