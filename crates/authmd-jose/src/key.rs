//! Signing keys, for agent providers (and tests): generation, PKCS#8
//! storage, the public JWK, signatures.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Map, Value, json};

use crate::{Algorithm, b64};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a key")]
    Generate,
    #[error("not a PKCS#8 key for {0}")]
    Pkcs8(&'static str),
    #[error("signing failed")]
    Sign,
}

enum Inner {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair, Algorithm),
}

/// A private key and the algorithm it signs with.
pub struct SigningKey {
    inner: Inner,
    kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key for `alg` (RSA keys are 2048 bits). Its `kid` is the
    /// RFC 7638 thumbprint of its public JWK.
    pub fn generate(alg: Algorithm) -> Result<SigningKey, KeyError> {
        let inner = match alg {
            Algorithm::Es256 => Inner::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Generate)?,
            ),
            Algorithm::EdDsa => {
                Inner::Ed(Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?)
            }
            Algorithm::Rs256 | Algorithm::Ps256 => Inner::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?,
                alg,
            ),
        };
        Ok(SigningKey { inner, kid: None }.with_thumbprint_kid())
    }

    /// Loads a PKCS#8 (DER) private key for `alg`.
    pub fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<SigningKey, KeyError> {
        let inner = match alg {
            Algorithm::Es256 => Inner::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| KeyError::Pkcs8("ES256"))?,
            ),
            Algorithm::EdDsa => {
                Inner::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(|_| KeyError::Pkcs8("EdDSA"))?)
            }
            Algorithm::Rs256 | Algorithm::Ps256 => Inner::Rsa(
                RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::Pkcs8("RSA"))?,
                alg,
            ),
        };
        Ok(SigningKey { inner, kid: None }.with_thumbprint_kid())
    }

    /// The PKCS#8 (DER) private key, to store (with care).
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match &self.inner {
            Inner::Ec(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Inner::Ed(k) => k.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
            Inner::Rsa(k, _) => k.as_der().map(|d| d.as_ref().to_vec()),
        };
        doc.map_err(|_| KeyError::Generate)
    }

    /// Replaces the `kid`.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    fn with_thumbprint_kid(self) -> Self {
        let kid = self.thumbprint();
        self.with_kid(kid)
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn algorithm(&self) -> Algorithm {
        match &self.inner {
            Inner::Ec(_) => Algorithm::Es256,
            Inner::Ed(_) => Algorithm::EdDsa,
            Inner::Rsa(_, alg) => *alg,
        }
    }

    /// The required members of the public JWK, in RFC 7638 order.
    fn required_members(&self) -> Map<String, Value> {
        let v = match &self.inner {
            Inner::Ec(k) => {
                let point = k.public_key().as_ref();
                json!({"crv": "P-256", "kty": "EC",
                       "x": b64::encode(&point[1..33]), "y": b64::encode(&point[33..65])})
            }
            Inner::Ed(k) => {
                json!({"crv": "Ed25519", "kty": "OKP", "x": b64::encode(k.public_key().as_ref())})
            }
            Inner::Rsa(k, _) => {
                let p = k.public_key();
                json!({"e": b64::encode(p.exponent().big_endian_without_leading_zero()),
                       "kty": "RSA",
                       "n": b64::encode(p.modulus().big_endian_without_leading_zero())})
            }
        };
        v.as_object().cloned().unwrap_or_default()
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        // serde_json's Map keeps keys sorted, which is the canonical order.
        let canonical = Value::Object(self.required_members()).to_string();
        b64::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    /// The public JWK, with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Value {
        let mut m = self.required_members();
        if let Some(kid) = &self.kid {
            m.insert("kid".into(), kid.clone().into());
        }
        m.insert("alg".into(), self.algorithm().name().into());
        m.insert("use".into(), "sig".into());
        Value::Object(m)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            Inner::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Inner::Rsa(k, alg) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::{KeySet, VerifyingKey};
    use crate::jws::{Compact, sign};

    #[test]
    fn every_algorithm_round_trips_through_jwk_and_jws() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg).unwrap_or_else(|e| panic!("{alg}: {e}"));
            let jwk = key.public_jwk();
            let vk = VerifyingKey::from_jwk(jwk.as_object().unwrap_or(&Map::new()))
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            let token = sign(
                &key,
                &Map::new(),
                &json!({"sub": "u"}).as_object().cloned().unwrap_or_default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let c = Compact::parse(&token, 16 * 1024).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.header_str("alg"), Some(alg.name()));
            assert_eq!(c.header_str("kid"), key.kid());
            assert!(vk.verify(alg, c.signing_input(), &c.signature), "{alg}");
            let mut tampered = c.signature.clone();
            tampered[5] ^= 1;
            assert!(!vk.verify(alg, c.signing_input(), &tampered), "{alg}");
            // PKCS#8 round trip keeps the key (same thumbprint).
            let der = key.to_pkcs8().unwrap_or_default();
            let again = SigningKey::from_pkcs8(alg, &der).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(again.thumbprint(), key.thumbprint());
        }
    }

    #[test]
    fn keys_are_refused_when_type_curve_and_alg_disagree() {
        let ec = SigningKey::generate(Algorithm::Es256).unwrap_or_else(|e| panic!("{e}"));
        let base = ec.public_jwk().as_object().cloned().unwrap_or_default();
        let with = |k: &str, v: Value| {
            let mut m = base.clone();
            m.insert(k.into(), v);
            VerifyingKey::from_jwk(&m).err()
        };
        assert!(matches!(
            with("crv", "P-384".into()),
            Some(JwkErr::Curve(..))
        ));
        assert!(matches!(
            with("alg", "RS256".into()),
            Some(JwkErr::AlgMismatch(_))
        ));
        assert!(matches!(
            with("alg", "HS256".into()),
            Some(JwkErr::AlgMismatch(_))
        ));
        assert!(matches!(with("kty", "oct".into()), Some(JwkErr::Symmetric)));
        assert!(matches!(with("d", "AAAA".into()), Some(JwkErr::Private)));
        assert!(matches!(
            with("use", "enc".into()),
            Some(JwkErr::NotForVerification)
        ));
        assert!(matches!(
            with("key_ops", json!(["sign"])),
            Some(JwkErr::NotForVerification)
        ));
        assert!(matches!(with("kid", "".into()), Some(JwkErr::NoKid)));
        // The EC key cannot verify RS256 signatures even when asked.
        let vk = VerifyingKey::from_jwk(&base).unwrap_or_else(|e| panic!("{e}"));
        assert!(!vk.supports(Algorithm::Rs256));
        assert!(!vk.verify(Algorithm::Rs256, b"m", b"s"));
    }

    use crate::jwk::JwkError as JwkErr;

    #[test]
    fn a_keyset_skips_what_it_cannot_use() {
        let good = SigningKey::generate(Algorithm::EdDsa)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_kid("good");
        let dup1 = SigningKey::generate(Algorithm::Es256)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_kid("dup");
        let dup2 = SigningKey::generate(Algorithm::Es256)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_kid("dup");
        let doc = json!({"keys": [
            good.public_jwk(),
            {"kty": "XYZ", "kid": "weird"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            dup1.public_jwk(),
            dup2.public_jwk(),
            "not an object",
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            set.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["good"]
        );
        assert_eq!(set.skipped.len(), 5);
        assert!(KeySet::parse(b"{\"nokeys\":1}").is_err());
    }

    #[test]
    fn short_rsa_moduli_are_refused() {
        let jwk = json!({"kty": "RSA", "kid": "k", "n": b64::encode([0xff; 128]), "e": "AQAB"});
        assert!(VerifyingKey::from_jwk(jwk.as_object().unwrap_or(&Map::new())).is_err());
    }
}
