//! Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, no
//! whitespace, canonical trailing bits.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    ENGINE.encode(bytes)
}

/// Decodes, refusing padding, `+`, `/`, whitespace and non-canonical
/// encodings.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    ENGINE.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(decode(&encode(b"hello")), Some(b"hello".to_vec()));
        for bad in ["aGVsbG8=", "aGV sbG8", "a+b/", "aGVsbG9", "aGVsbG8\n"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        assert_eq!(decode(""), Some(Vec::new()));
    }
}
