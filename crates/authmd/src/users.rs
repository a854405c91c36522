//! Users and delegations (docs/protocol.md §6): what a provider says about its
//! user, and how authmd compares it with the users it knows.

use sha2::{Digest, Sha256};

/// What a verified ID-JAG says about the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvidedIdentity {
    pub email: Option<String>,
    pub email_verified: bool,
    pub phone_number: Option<String>,
    pub phone_number_verified: bool,
    pub name: Option<String>,
}

impl ProvidedIdentity {
    /// The normalized email, if the provider verified it.
    pub fn verified_email(&self) -> Option<String> {
        self.email
            .as_deref()
            .filter(|_| self.email_verified)
            .and_then(normalize_email)
    }

    /// The normalized phone number, if the provider verified it.
    pub fn verified_phone(&self) -> Option<String> {
        self.phone_number
            .as_deref()
            .filter(|_| self.phone_number_verified)
            .and_then(normalize_phone)
    }
}

/// How an agent's user was found among existing users on a delegation's
/// first registration (docs/protocol.md §6 steps 2 and 3): recorded as
/// `delegation.linked`, because this is where a provider that asserts an
/// address it does not own takes over that address's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkedBy {
    Email,
    Phone,
}

impl LinkedBy {
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkedBy::Email => "verified_email",
            LinkedBy::Phone => "verified_phone",
        }
    }
}

/// Whether a normalized email's domain is one of `domains` (lower-case,
/// compared whole: `example.com` does not admit `sub.example.com` or
/// `notexample.com`).
pub fn email_in_domains(email: &str, domains: &[String]) -> bool {
    email
        .rsplit_once('@')
        .is_some_and(|(_, d)| domains.iter().any(|allowed| allowed == d))
}

/// Emails compare exactly on the local part and case-insensitively on the
/// domain (docs/protocol.md §6; RFC 5321 §2.4). `None` if it is not an address.
pub fn normalize_email(email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains(char::is_whitespace) {
        return None;
    }
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The mailbox an address delivers to, as far as limits and blocks are
/// concerned: lower-cased, and a `+tag` in the local part dropped. Mail
/// servers commonly ignore both, so `Victim+1@Example.com` and
/// `victim@example.com` are one recipient; erring toward "the same" only
/// makes a limit or a block stricter. (User matching keeps §6's rule.)
pub fn mailbox_key(email: &str) -> String {
    let email = email.to_lowercase();
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let local = local.split_once('+').map_or(local, |(l, _)| l);
            format!("{local}@{domain}")
        }
        None => email,
    }
}

/// Phone numbers compare on `+` and digits only (`+1 (555) 010-0000` and
/// `+15550100000` are one number). `None` if fewer than 5 digits remain.
pub fn normalize_phone(phone: &str) -> Option<String> {
    let kept: String = phone
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    (kept.chars().filter(char::is_ascii_digit).count() >= 5).then_some(kept)
}

/// The replay-table key of an assertion: the first 16 bytes of
/// SHA-256(iss NUL jti). Scoped by issuer (two providers may both use a
/// `jti`), fixed-size whatever the attacker sends, and 128 bits leave no
/// room for accidental collisions.
pub fn jti_key(iss: &str, jti: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(iss.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The replay-table key of a logout token: like [`jti_key`], in a domain
/// of its own, so that an ID-JAG and a logout token of one provider never
/// spend each other's `jti`.
pub fn logout_jti_key(iss: &str, jti: &str) -> [u8; 16] {
    jti_key(&format!("logout+jwt\0{iss}"), jti)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_compare_on_exact_local_part_and_any_case_domain() {
        assert_eq!(
            normalize_email("Alice@Example.COM").as_deref(),
            Some("Alice@example.com")
        );
        assert_ne!(
            normalize_email("Alice@example.com"),
            normalize_email("alice@example.com")
        );
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("@example.com"), None);
    }

    #[test]
    fn email_domains_compare_whole_and_case_insensitively() {
        let domains = vec!["example.com".to_owned()];
        let n = |e: &str| normalize_email(e).unwrap_or_default();
        assert!(email_in_domains(&n("a@Example.COM"), &domains));
        assert!(!email_in_domains(&n("a@sub.example.com"), &domains));
        assert!(!email_in_domains(&n("a@notexample.com"), &domains));
        assert!(!email_in_domains(&n("example.com@evil.example"), &domains));
    }

    #[test]
    fn phones_compare_on_digits() {
        assert_eq!(
            normalize_phone("+1 (555) 010-0000"),
            normalize_phone("+15550100000")
        );
        assert_eq!(normalize_phone("12"), None);
    }

    #[test]
    fn jti_keys_are_scoped_by_issuer() {
        assert_ne!(jti_key("https://a", "1"), jti_key("https://b", "1"));
        assert_eq!(jti_key("https://a", "1"), jti_key("https://a", "1"));
        assert_ne!(logout_jti_key("https://a", "1"), jti_key("https://a", "1"));
    }
}
