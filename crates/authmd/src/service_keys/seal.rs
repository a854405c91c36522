//! Private keys at rest: sealed with AES-256-GCM under a key derived
//! (HKDF-SHA-256) from `server.secret_key`, with the `kid` as associated
//! data, so that a sealed key moved to another row does not open.
//!
//! Why sealed: a database copy (a backup, a replica, a dump attached to a
//! ticket) must not let its holder sign identity assertions that upstream
//! APIs believe. That holds when `server.secret_key` comes from outside
//! the database (a file, the environment). Without it, the secret is
//! generated once and kept in the database itself, and sealing protects
//! nothing beyond making the two cases one code path; the README says so.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

/// First byte of every sealed value: the format (this module's).
const VERSION: u8 = 1;
/// HKDF `info`: separates this key from every other use of the secret
/// (the one-time codes' keyed hash uses the secret itself).
const INFO: &[u8] = b"authmd signing-key seal v1";

/// Seals and opens private keys under one secret.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

/// The secret could not be turned into a key (does not happen for the
/// 32+ byte secrets authmd uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot derive the sealing key")]
pub struct SealError;

impl Sealer {
    pub fn new(secret: &[u8]) -> Result<Sealer, SealError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(secret);
        let okm = prk.expand(&[INFO], &AES_256_GCM).map_err(|_| SealError)?;
        Ok(Sealer {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        })
    }

    /// `VERSION || nonce || ciphertext || tag`. The nonce is random: keys
    /// are sealed rarely (96 random bits never repeat at that rate).
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError)?;
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext, or `None` if `sealed` was sealed under another
    /// secret, for another `kid`, or changed.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(kid.as_bytes()),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_under_their_secret_and_kid() {
        let a = Sealer::new(&[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        let b = Sealer::new(&[2; 32]).unwrap_or_else(|e| panic!("{e}"));
        let sealed = a.seal("k1", b"private").unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(a.open("k1", &sealed).as_deref(), Some(&b"private"[..]));
        assert_eq!(b.open("k1", &sealed), None, "another secret");
        assert_eq!(a.open("k2", &sealed), None, "another kid");
        let mut changed = sealed.clone();
        changed[20] ^= 1;
        assert_eq!(a.open("k1", &changed), None, "a changed byte");
        assert_eq!(a.open("k1", &sealed[..10]), None, "truncated");
        assert_ne!(
            a.seal("k1", b"private").unwrap_or_default(),
            sealed,
            "fresh nonce"
        );
    }
}
