//! The JOSE that authmd needs, and nothing that it does not.
//!
//! - [`jws::Compact::parse`]: a compact JWS, strictly: three base64url
//!   segments without padding, header and payload UTF-8 JSON objects with no
//!   duplicate member names at any depth, within a size cap. It decodes only;
//!   it verifies nothing.
//! - [`jwk::VerifyingKey`]: a public JWK vetted for one algorithm (key type,
//!   curve and `alg` must agree; symmetric and private keys are refused),
//!   parsed once so that each verification costs only the signature check.
//! - [`key::SigningKey`]: generation, PKCS#8 storage, public JWK and compact
//!   JWS signing, for providers and tests.
//!
//! Algorithms: ES256, RS256, PS256, EdDSA (Ed25519). There is no `none` and
//! no HMAC here at all, so no header can ask for them.

pub mod alg;
pub mod b64;
pub mod json;
pub mod jwk;
pub mod jws;
pub mod key;

pub use alg::Algorithm;
pub use jwk::{JwkError, VerifyingKey};
pub use jws::{Compact, ParseError};
pub use key::SigningKey;
