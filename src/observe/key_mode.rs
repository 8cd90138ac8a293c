//! How a key appears in telemetry.

use std::hash::BuildHasher;

/// What the `cache.key` field of a tracing span holds.
///
/// Cache keys often carry personal data (`user:alice@example.com`,
/// `session:<token>`), and spans leave the process for a tracing backend
/// that more people can read than the database. So the default is
/// [`Off`](Self::Off): nothing about the key is recorded unless asked for.
///
/// - [`Hashed`](Self::Hashed) records a 16-hex-digit hash, enough to see
///   that two spans touched the same key, or which key is hot. It is
///   pseudonymous, not anonymous: the hash is not cryptographic and not
///   salted, so anyone who can guess a key (`user:7`) can hash the guess
///   and compare. It is stable within one build of a program on one
///   platform, not across cachex versions.
/// - [`Plain`](Self::Plain) records the key itself, for keys known to hold
///   nothing sensitive. In this mode only, an error's full message (which
///   names the key) also goes on the span.
///
/// ```
/// use cachex::observe::KeyMode;
///
/// assert_eq!(KeyMode::default(), KeyMode::Off);
/// assert_eq!(KeyMode::Off.render("user:7"), None);
/// assert_eq!(KeyMode::Plain.render("user:7").as_deref(), Some("user:7"));
/// let hashed = KeyMode::Hashed.render("user:7").unwrap();
/// assert_eq!(hashed.len(), 16);
/// assert_eq!(KeyMode::Hashed.render("user:7"), Some(hashed));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyMode {
    /// No key field.
    #[default]
    Off,
    /// A hash of the key, as 16 lowercase hex digits.
    Hashed,
    /// The key as it is.
    Plain,
}

/// Fixed, so that a key hashes the same in every cache and every process
/// of one build; changing it changes every recorded hash.
const SEED: u64 = 0x6361_6368_6578_6b65; // "cachexke"

impl KeyMode {
    /// The value of the key field for `key`, or `None` in [`Off`](Self::Off)
    /// mode.
    pub fn render(self, key: &str) -> Option<String> {
        match self {
            KeyMode::Off => None,
            KeyMode::Hashed => Some(format!("{:016x}", hash(key))),
            KeyMode::Plain => Some(key.to_owned()),
        }
    }
}

fn hash(key: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(SEED).hash_one(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_differ_by_key_and_never_show_it() {
        let a = KeyMode::Hashed.render("user:alice").unwrap();
        let b = KeyMode::Hashed.render("user:bob").unwrap();
        assert_ne!(a, b);
        assert!(!a.contains("alice"));
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
