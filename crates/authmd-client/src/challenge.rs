//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1).
//!
//! A header holds one or more challenges: `scheme`, then either a token68
//! or comma-separated `name=value` parameters whose values are tokens or
//! quoted strings with backslash escapes. Several challenges are separated
//! by commas too; a new one starts where a token is not followed by `=`.

/// One challenge: its scheme and its parameters (names lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a header value; malformed parts end the parse (what was read
/// before them is kept).
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        p.skip_separators();
        let Some(token) = p.token() else { break };
        // A parameter of the current challenge, or a new challenge?
        let save = p.i;
        p.skip_spaces();
        if p.peek() == Some(b'=') && !out.is_empty() && p.peek_at(1) != Some(b'=') {
            p.i += 1;
            p.skip_spaces();
            let Some(value) = p.value() else { break };
            if let Some(c) = out.last_mut() {
                c.params.push((token.to_ascii_lowercase(), value));
            }
            continue;
        }
        p.i = save;
        out.push(Challenge {
            scheme: token,
            params: Vec::new(),
        });
        // The first parameter follows the scheme after a space.
        p.skip_spaces();
        let start = p.i;
        if let Some(name) = p.token() {
            p.skip_spaces();
            if p.peek() == Some(b'=') && p.peek_at(1) != Some(b'=') {
                p.i += 1;
                p.skip_spaces();
                let Some(value) = p.value() else { break };
                if let Some(c) = out.last_mut() {
                    c.params.push((name.to_ascii_lowercase(), value));
                }
            } else {
                // A token68 (or a new challenge): not a parameter.
                p.i = start;
                let _ = p.token68();
            }
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.i + n).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn token68(&mut self) -> Option<String> {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c))
        {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self) -> Option<String> {
        if self.peek() != Some(b'"') {
            return self.token();
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    out.push(self.peek_at(1)?);
                    self.i += 2;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

/// The `resource_metadata` URL of the first `Bearer` challenge that has one.
pub fn resource_metadata(header: &str) -> Option<String> {
    parse(header)
        .into_iter()
        .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .find_map(|c| c.param("resource_metadata").map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authmds_challenge() {
        let h = r#"Bearer realm="authmd", error="invalid_token", resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/api""#;
        let c = parse(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "Bearer");
        assert_eq!(c[0].param("error"), Some("invalid_token"));
        assert_eq!(
            resource_metadata(h).as_deref(),
            Some("http://127.0.0.1:8080/.well-known/oauth-protected-resource/api")
        );
    }

    #[test]
    fn parses_several_challenges_escapes_and_tokens() {
        let h = r#"Basic realm="x", Bearer error=invalid_token, resource_metadata="https://a.example/q\"uote", DPoP algs="ES256""#;
        let c = parse(h);
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        assert_eq!(
            c[1].param("RESOURCE_METADATA"),
            Some("https://a.example/q\"uote")
        );
        assert_eq!(c[2].scheme, "DPoP");
        let c = parse("Negotiate abc123==, Bearer resource_metadata=\"u\"");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(
            resource_metadata("Negotiate abc123==, Bearer resource_metadata=\"u\"").as_deref(),
            Some("u")
        );
    }

    #[test]
    fn survives_garbage() {
        for h in [
            "",
            ",,,",
            "Bearer",
            "Bearer x=\"unterminated",
            "=\"\"",
            "Bearer a=b=c",
            "\u{1F600}",
        ] {
            let _ = parse(h);
        }
        assert_eq!(resource_metadata("Basic resource_metadata=\"u\""), None);
    }
}
