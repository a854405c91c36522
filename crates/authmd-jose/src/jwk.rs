//! Public JWKs, vetted before use (RFC 7517, RFC 7518 §6, RFC 8037).
//!
//! A key is usable for exactly one family: an EC P-256 key for ES256, an
//! OKP Ed25519 key for EdDSA, an RSA key (2048 to 8192 bits) for RS256 and
//! PS256. Key type, curve and the JWK's own `alg` must agree; symmetric
//! (`oct`) keys, keys carrying private members, keys whose `use` or
//! `key_ops` exclude verification are refused. The key material is parsed
//! once, here, and each verification afterwards is only the signature check.

use aws_lc_rs::signature::ParsedPublicKey;
use serde_json::{Map, Value};

use crate::{Algorithm, b64};

/// Why a JWK is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("no kid")]
    NoKid,
    #[error("unsupported key type {0:?}")]
    UnsupportedKty(String),
    #[error("symmetric keys are never accepted")]
    Symmetric,
    #[error("the JWK holds private key members")]
    Private,
    #[error("the key is not for signature verification")]
    NotForVerification,
    #[error("curve {0:?} does not fit key type {1}")]
    Curve(String, &'static str),
    #[error("the JWK's alg {0:?} does not fit its key type")]
    AlgMismatch(String),
    #[error("invalid key material: {0}")]
    Material(&'static str),
}

/// A vetted public key from a JWKS.
pub struct VerifyingKey {
    pub kid: String,
    /// The algorithms this key may verify (its family, narrowed by the JWK's
    /// own `alg` when present).
    algorithms: Vec<(Algorithm, ParsedPublicKey)>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<&str> = self.algorithms.iter().map(|(a, _)| a.name()).collect();
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &algs)
            .finish()
    }
}

impl VerifyingKey {
    /// Vets one JWK (a JSON object).
    pub fn from_jwk(jwk: &Map<String, Value>) -> Result<VerifyingKey, JwkError> {
        let s = |name: &str| jwk.get(name).and_then(Value::as_str);
        let kid = s("kid").filter(|k| !k.is_empty()).ok_or(JwkError::NoKid)?;
        let kty = s("kty").unwrap_or_default();
        if kty == "oct" {
            return Err(JwkError::Symmetric);
        }
        if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
            .iter()
            .any(|m| jwk.contains_key(*m))
        {
            return Err(JwkError::Private);
        }
        if s("use").is_some_and(|u| u != "sig") {
            return Err(JwkError::NotForVerification);
        }
        if let Some(ops) = jwk.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
            if !verifies {
                return Err(JwkError::NotForVerification);
            }
        }
        let bytes = |name: &'static str| {
            s(name)
                .and_then(b64::decode)
                .ok_or(JwkError::Material(name))
        };
        let (family, material): (&[Algorithm], Vec<u8>) = match kty {
            "EC" => {
                if s("crv") != Some("P-256") {
                    return Err(JwkError::Curve(s("crv").unwrap_or_default().into(), "EC"));
                }
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JwkError::Material("P-256 coordinates are 32 bytes"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (&[Algorithm::Es256], point)
            }
            "OKP" => {
                if s("crv") != Some("Ed25519") {
                    return Err(JwkError::Curve(s("crv").unwrap_or_default().into(), "OKP"));
                }
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err(JwkError::Material("Ed25519 keys are 32 bytes"));
                }
                (&[Algorithm::EdDsa], x)
            }
            "RSA" => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                (
                    &[Algorithm::Rs256, Algorithm::Ps256],
                    rsa_public_key_der(&n, &e)?,
                )
            }
            other => return Err(JwkError::UnsupportedKty(other.to_owned())),
        };
        let allowed: Vec<Algorithm> = match s("alg") {
            None => family.to_vec(),
            Some(name) => match Algorithm::from_name(name).filter(|a| family.contains(a)) {
                Some(a) => vec![a],
                None => return Err(JwkError::AlgMismatch(name.to_owned())),
            },
        };
        let mut algorithms = Vec::with_capacity(allowed.len());
        for alg in allowed {
            let parsed = ParsedPublicKey::new(alg.verification(), &material)
                .map_err(|_| JwkError::Material("rejected by the crypto library"))?;
            algorithms.push((alg, parsed));
        }
        Ok(VerifyingKey {
            kid: kid.to_owned(),
            algorithms,
        })
    }

    /// Whether this key may verify `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.algorithms.iter().any(|(a, _)| *a == alg)
    }

    /// Verifies `signature` over `message` with `alg` (false if this key is
    /// not for `alg`).
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.algorithms
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, k)| k.verify_sig(message, signature).is_ok())
    }
}

/// What a JWKS document yielded: usable keys, and what was skipped and why.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
    pub skipped: Vec<(Option<String>, JwkError)>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that fail vetting
    /// are skipped, not fatal (RFC 7517 §5); a `kid` that appears twice is
    /// ambiguous and both are dropped.
    pub fn parse(document: &[u8]) -> Result<KeySet, String> {
        let doc = crate::json::parse_object(document)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("a JWKS has a \"keys\" array")?;
        let mut set = KeySet::default();
        for k in keys {
            let Some(obj) = k.as_object() else {
                set.skipped
                    .push((None, JwkError::Material("not an object")));
                continue;
            };
            let kid = obj.get("kid").and_then(Value::as_str).map(str::to_owned);
            match VerifyingKey::from_jwk(obj) {
                Ok(key) => set.keys.push(key),
                Err(e) => set.skipped.push((kid, e)),
            }
        }
        let mut counts = std::collections::HashMap::new();
        for k in &set.keys {
            *counts.entry(k.kid.clone()).or_insert(0usize) += 1;
        }
        set.keys.retain(|k| {
            let dup = counts.get(&k.kid).copied().unwrap_or(0) > 1;
            if dup {
                set.skipped
                    .push((Some(k.kid.clone()), JwkError::Material("kid listed twice")));
            }
            !dup
        });
        Ok(set)
    }
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// (RFC 8017 A.1.1) from the JWK's big-endian `n` and `e`.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, JwkError> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    if n.len() * 8 < 2048 || n.len() > 1024 {
        return Err(JwkError::Material("RSA modulus must be 2048 to 8192 bits"));
    }
    if e.is_empty() || e.len() > 8 {
        return Err(JwkError::Material("RSA exponent"));
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    der_integer(&mut body, n);
    der_integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    Ok(out)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

fn der_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    out.push(0x02);
    let pad = magnitude.first().is_some_and(|&b| b & 0x80 != 0);
    der_len(out, magnitude.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(magnitude);
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
}
