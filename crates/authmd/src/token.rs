//! Secret formats: generation, recognition and hashing (docs/protocol.md §7).
//!
//! A secret is `<prefix><selector><verifier><checksum>`:
//!
//! - the **prefix** (`amd_sk_`, `amd_at_`, `clm_`, `cvt_`) lets secret
//!   scanners find leaked credentials;
//! - the **selector** (22 base62 characters) is the body of the public,
//!   time-ordered id of the row the secret belongs to (`crd_<selector>`
//!   for a credential, `reg_<selector>` for a claim token), so the row is
//!   found through its primary key;
//! - the **verifier** (32 base62 characters, 190 bits from a CSPRNG)
//!   is the secret part;
//! - the **checksum** (CRC-32 in 6 base62 characters) lets validation refuse
//!   mistyped or made-up strings without touching the database.
//!
//! Only the SHA-256 of the whole string is stored, and it is compared in
//! constant time with the hash of what was presented. Random 190-bit
//! secrets need no salt or slow hash (NIST SP 800-63B §5.1.2.2). Finding the
//! row by its time-ordered id rather than by a random hash keeps every
//! index append-only, so issuing a credential costs the same whether the
//! database holds a thousand or a hundred million ("split token" design).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters in the body of an id, and in a selector.
pub const SELECTOR_LEN: usize = 22;
const VERIFIER_LEN: usize = 32;
const CHECK_LEN: usize = 6;

/// The kinds of secret authmd issues, each with its own prefix and the id
/// prefix of the row its selector names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A long-lived API key (`amd_sk_…`), selector of a `crd_` id.
    ApiKey,
    /// An expiring access token (`amd_at_…`), selector of a `crd_` id.
    AccessToken,
    /// An anonymous agent's claim token (`clm_…`), selector of a `reg_` id.
    ClaimToken,
    /// The single-use link token in a claim email (`cvt_…`), selector of a
    /// `cla_` id.
    ClaimLink,
    /// The current dialect's emailed sign-in link (`sgn_…`), selector of
    /// the `cla_` id of the attempt it signs in for.
    SignIn,
    /// A current-dialect refresh token (`amd_rt_…`), selector of an
    /// `rft_` id.
    RefreshToken,
}

impl SecretKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "amd_sk_",
            SecretKind::AccessToken => "amd_at_",
            SecretKind::ClaimToken => "clm_",
            SecretKind::ClaimLink => "cvt_",
            SecretKind::SignIn => "sgn_",
            SecretKind::RefreshToken => "amd_rt_",
        }
    }

    /// Prefix of the id whose body is the selector.
    pub const fn id_prefix(self) -> &'static str {
        match self {
            SecretKind::ApiKey | SecretKind::AccessToken => "crd_",
            SecretKind::ClaimToken => "reg_",
            SecretKind::ClaimLink | SecretKind::SignIn => "cla_",
            SecretKind::RefreshToken => "rft_",
        }
    }

    const fn len(self) -> usize {
        self.prefix().len() + SELECTOR_LEN + VERIFIER_LEN + CHECK_LEN
    }
}

/// A freshly generated secret, returned to its holder exactly once. `Debug`
/// shows only its kind.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainSecret {
    kind: SecretKind,
    value: String,
}

impl PlainSecret {
    /// A secret for the row with id `id` (which must carry the kind's id
    /// prefix and a body made by [`new_id`]).
    pub fn generate(kind: SecretKind, id: &str) -> PlainSecret {
        let selector = id.strip_prefix(kind.id_prefix()).unwrap_or(id);
        debug_assert_eq!(
            selector.len(),
            SELECTOR_LEN,
            "{id} is not an id of {kind:?}"
        );
        let mut value = String::with_capacity(kind.len());
        value.push_str(kind.prefix());
        value.push_str(selector);
        random_base62(&mut value, VERIFIER_LEN);
        let crc = crc32fast::hash(value.as_bytes());
        push_base62_fixed(&mut value, u64::from(crc), CHECK_LEN);
        PlainSecret { kind, value }
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The secret itself, to put in a response body. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.value)
    }
}

impl fmt::Debug for PlainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainSecret({:?}, ***)", self.kind)
    }
}

/// SHA-256 of a secret: what the store keeps.
#[derive(Clone, Copy)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(secret: &str) -> SecretHash {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(b: &[u8]) -> Option<SecretHash> {
        <[u8; 32]>::try_from(b).ok().map(SecretHash)
    }
}

/// Constant time: comparing a stored hash with a presented one must not
/// reveal how many leading bytes matched.
impl PartialEq for SecretHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretHash {}

/// For cache keys; consistent with the byte equality above.
impl std::hash::Hash for SecretHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not the secret, but there is no reason to print it whole.
        write!(f, "SecretHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A presented secret that authmd could have issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented<'a> {
    pub kind: SecretKind,
    /// The selector: the body of the id of the row the secret names.
    pub selector: &'a str,
    pub hash: SecretHash,
}

impl Presented<'_> {
    /// The id of the row the secret claims to belong to.
    pub fn id(&self) -> String {
        format!("{}{}", self.kind.id_prefix(), self.selector)
    }
}

/// Recognizes a presented secret of one of `kinds`: right prefix, length,
/// alphabet and checksum. Returns the row id it names and its hash, or
/// `None` for anything authmd cannot have issued. No lookup.
pub fn recognize<'a>(presented: &'a str, kinds: &[SecretKind]) -> Option<Presented<'a>> {
    let kind = *kinds
        .iter()
        .find(|k| presented.len() == k.len() && presented.starts_with(k.prefix()))?;
    let bytes = presented.as_bytes();
    let body = &bytes[kind.prefix().len()..];
    if !body.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let (signed, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    let mut expected = [0u8; CHECK_LEN];
    fill_base62_fixed(&mut expected, u64::from(crc32fast::hash(signed)));
    if expected != check {
        return None;
    }
    let selector = &presented[kind.prefix().len()..kind.prefix().len() + SELECTOR_LEN];
    Some(Presented {
        kind,
        selector,
        hash: SecretHash::of(presented),
    })
}

/// A public identifier with a prefix, such as `reg_…` or `crd_…`: 8 base62
/// characters of the creation time in milliseconds, then 14 random ones (83
/// bits). Identifiers sort by creation time (the base62 alphabet is in ASCII
/// order), which keeps the database's id indexes append-mostly instead of
/// scattering every insert over random pages, and are still unguessable.
pub fn new_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + SELECTOR_LEN);
    s.push_str(prefix);
    let ms = u64::try_from(crate::time::Timestamp::now().as_millis()).unwrap_or(0);
    push_base62_fixed(&mut s, ms, 8);
    random_base62(&mut s, SELECTOR_LEN - 8);
    s
}

fn random_base62(out: &mut String, n: usize) {
    // Rejection sampling: bytes >= 248 (= 4 * 62) are dropped so that every
    // letter is equally likely.
    let mut buf = [0u8; 64];
    let mut written = 0;
    while written < n {
        fill_random(&mut buf);
        for &b in &buf {
            if b < 248 && written < n {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
                written += 1;
            }
        }
    }
}

/// Fills `buf` from a cryptographically secure generator: `rand`'s
/// thread-local ChaCha12, seeded from the operating system and reseeded
/// periodically. The same quality as asking the kernel each time, without a
/// system call per secret.
pub fn fill_random(buf: &mut [u8]) {
    use rand::Rng;
    rand::rng().fill_bytes(buf);
}

fn fill_base62_fixed(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(v % 62).unwrap_or(0)];
        v /= 62;
    }
}

fn push_base62_fixed(out: &mut String, v: u64, n: usize) {
    let mut buf = [0u8; 11];
    let slice = &mut buf[..n.min(11)];
    fill_base62_fixed(slice, v);
    out.extend(slice.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [SecretKind; 4] = [
        SecretKind::ApiKey,
        SecretKind::AccessToken,
        SecretKind::ClaimToken,
        SecretKind::ClaimLink,
    ];

    #[test]
    fn generated_secrets_are_recognized_with_their_row() {
        for kind in KINDS {
            let id = new_id(kind.id_prefix());
            let s = PlainSecret::generate(kind, &id);
            assert!(s.expose().starts_with(kind.prefix()));
            let p = recognize(s.expose(), &[kind]).unwrap_or_else(|| panic!("{kind:?}"));
            assert_eq!(p.kind, kind);
            assert_eq!(p.id(), id);
            assert_eq!(p.hash, s.hash());
        }
    }

    #[test]
    fn secrets_of_one_row_differ() {
        let id = new_id("crd_");
        let a = PlainSecret::generate(SecretKind::ApiKey, &id);
        let b = PlainSecret::generate(SecretKind::ApiKey, &id);
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn mistyped_or_foreign_secrets_are_not_recognized() {
        let s = PlainSecret::generate(SecretKind::ApiKey, &new_id("crd_"));
        let v = s.expose();
        // One character changed: the checksum catches it.
        let mut chars: Vec<char> = v.chars().collect();
        chars[40] = if chars[40] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(recognize(&typo, &[SecretKind::ApiKey]).is_none());
        // Wrong kind, truncated, extended, non-alphanumeric.
        assert!(recognize(v, &[SecretKind::AccessToken]).is_none());
        assert!(recognize(&v[..v.len() - 1], &[SecretKind::ApiKey]).is_none());
        assert!(recognize(&format!("{v}x"), &[SecretKind::ApiKey]).is_none());
        assert!(recognize(&v.replace(&v[8..9], "-"), &[SecretKind::ApiKey]).is_none());
        assert!(recognize("", &[SecretKind::ApiKey]).is_none());
        assert!(recognize("amd_sk_é", &[SecretKind::ApiKey]).is_none());
    }

    #[test]
    fn enough_entropy_in_the_verifier() {
        // 32 characters of a 62-letter alphabet: log2(62) * 32 ≈ 190 bits ≥ 160.
        assert!((62f64).log2() * VERIFIER_LEN as f64 >= 160.0);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = PlainSecret::generate(SecretKind::ApiKey, &new_id("crd_"));
        let verifier = &s.expose()[7 + SELECTOR_LEN..];
        assert!(!format!("{s:?}").contains(verifier));
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id("reg_");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("reg_");
        assert!(a < b, "{a} !< {b}");
        assert_eq!(a.len(), 4 + SELECTOR_LEN);
        assert_ne!(new_id("x"), new_id("x"));
    }

    #[test]
    fn letters_are_uniform_enough() {
        // 62 letters, 62_000 draws: each letter should appear ~1000 times.
        let mut s = String::new();
        random_base62(&mut s, 62_000);
        let mut counts = [0u32; 128];
        for b in s.bytes() {
            counts[usize::from(b)] += 1;
        }
        for &c in ALPHABET {
            let n = counts[usize::from(c)];
            assert!(
                (800..1200).contains(&n),
                "{} appeared {n} times",
                char::from(c)
            );
        }
    }
}
