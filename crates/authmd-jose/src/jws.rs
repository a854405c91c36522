//! Compact JWS (RFC 7515 §7.1): parsing, strictly, and signing.

use serde_json::{Map, Value};

use crate::{b64, json};

/// Why a string is not a compact JWS authmd will look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the token is longer than {0} bytes")]
    TooLarge(usize),
    #[error("a compact JWS has three base64url segments separated by dots")]
    Segments,
    #[error("the {0} is not base64url without padding")]
    Base64(&'static str),
    #[error("the {0} is not a UTF-8 JSON object without duplicate members: {1}")]
    Json(&'static str, String),
}

/// A decoded, unverified compact JWS. Nothing in it is trusted until a
/// signature over [`Compact::signing_input`] has been verified.
#[derive(Debug, Clone)]
pub struct Compact {
    token: String,
    /// Length of `header.payload`, the signing input.
    input_len: usize,
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub signature: Vec<u8>,
}

impl Compact {
    /// Parses `token` (at most `max_len` bytes). JWE (five segments), the
    /// JSON serializations, stray whitespace or padding are all refused.
    pub fn parse(token: &str, max_len: usize) -> Result<Compact, ParseError> {
        if token.len() > max_len {
            return Err(ParseError::TooLarge(max_len));
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(ParseError::Segments);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::Segments);
        };
        let header_bytes = b64::decode(h).ok_or(ParseError::Base64("header"))?;
        let claims_bytes = b64::decode(p).ok_or(ParseError::Base64("payload"))?;
        let signature = b64::decode(s).ok_or(ParseError::Base64("signature"))?;
        let header =
            json::parse_object(&header_bytes).map_err(|e| ParseError::Json("header", e))?;
        let claims =
            json::parse_object(&claims_bytes).map_err(|e| ParseError::Json("payload", e))?;
        Ok(Compact {
            input_len: h.len() + 1 + p.len(),
            token: token.to_owned(),
            header,
            claims,
            signature,
        })
    }

    /// The token as presented.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, what was signed.
    pub fn signing_input(&self) -> &[u8] {
        &self.token.as_bytes()[..self.input_len]
    }

    /// A string member of the header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Encodes and signs a compact JWS with `key`; `header` gets `alg` (and
/// `kid`, if the key has one) unless already present.
pub fn sign(
    key: &crate::SigningKey,
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
) -> Result<String, crate::key::KeyError> {
    let mut header = header.clone();
    header
        .entry("alg")
        .or_insert_with(|| Value::String(key.algorithm().name().to_owned()));
    if let Some(kid) = key.kid() {
        header
            .entry("kid")
            .or_insert_with(|| Value::String(kid.to_owned()));
    }
    let mut out = b64::encode(Value::Object(header).to_string());
    out.push('.');
    out.push_str(&b64::encode(Value::Object(claims.clone()).to_string()));
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64::encode(signature));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(json: &str) -> String {
        b64::encode(json)
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = format!(
            "{}.{}.{}",
            seg(r#"{"alg":"ES256"}"#),
            seg(r#"{"sub":"u"}"#),
            b64::encode([1, 2, 3])
        );
        let c = Compact::parse(&t, 16 * 1024).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.header_str("alg"), Some("ES256"));
        assert_eq!(c.claim_str("sub"), Some("u"));
        assert_eq!(c.signature, vec![1, 2, 3]);
        assert_eq!(
            c.signing_input(),
            t.rsplit_once('.')
                .map(|x| x.0)
                .unwrap_or_default()
                .as_bytes()
        );
    }

    #[test]
    fn empty_signature_parses_and_cannot_verify_later() {
        let t = format!("{}.{}.", seg(r#"{"alg":"none"}"#), seg("{}"));
        assert!(Compact::parse(&t, 1024).is_ok_and(|c| c.signature.is_empty()));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let h = seg(r#"{"alg":"ES256"}"#);
        let p = seg("{}");
        let cases = [
            format!("{h}.{p}"),
            format!("{h}.{p}.s.x"),
            format!("{h}.{p}.s.x.y"),
            format!("{h}.{p}.AA."),
            format!(" {h}.{p}.AA"),
            format!("{h}.{p}.AA\n"),
            format!("{h}=.{p}.AA"),
            format!("{h}.{p}.A+/A"),
            format!("{}.{p}.AA", seg(r#"{"alg":"ES256","alg":"none"}"#)),
            format!("{h}.{}.AA", seg(r#"{"sub":"a","sub":"b"}"#)),
            format!("{}.{p}.AA", seg("[]")),
            format!("{h}.{}.AA", b64::encode([0xc3, 0x28])),
            format!("{h}.{}.AA", seg("{} trailing")),
            format!(".{p}.AA"),
            r#"{"payload":"x","signatures":[]}"#.to_owned(),
            "%7B.%7D.AA".to_owned(),
        ];
        for t in &cases {
            assert!(Compact::parse(t, 16 * 1024).is_err(), "{t:?}");
        }
        let big = format!(
            "{h}.{}.AA",
            seg(&format!("{{\"x\":\"{}\"}}", "a".repeat(20_000)))
        );
        assert_eq!(
            Compact::parse(&big, 16 * 1024).err(),
            Some(ParseError::TooLarge(16 * 1024))
        );
    }
}
