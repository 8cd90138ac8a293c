//! Where a lock lives in Redis: its key, its channel and the keys beside
//! it, all in one hash slot.
//!
//! For the lock `name` of a store with prefix `p`:
//!
//! | what | name |
//! |---|---|
//! | the lock (value: the holder's token) | `p:__cachex_lock:{name}` |
//! | its release channel | the same string as the lock key |
//! | "someone waits" marker | `p:__cachex_lock:{name}:w` |
//! | last fencing token (public API only) | `p:__cachex_lock:{name}:fence` |
//! | last refresh-ahead window | `p:__cachex_lock:{name}:refresh` |
//!
//! Every name starts with the lock key and the lock key ends with the
//! `}` that closes its hash tag, so Redis Cluster hashes all of them by
//! the same text (the part between the first `{` and the first `}` after
//! it): one slot, as a script touching several of them requires. That
//! holds whatever the name contains, with two exceptions refused up
//! front, where the hash tag would be empty (`{}`) and Redis would hash
//! each whole name instead: a name starting with `}`, and a prefix whose
//! first `{` is directly followed by `}`.

use crate::store::redis::ConfigError;

/// What every lock key of a store starts with, after the store's prefix.
pub(crate) const NAMESPACE: &str = "__cachex_lock:";

/// The Redis names of one lock.
#[derive(Debug)]
pub(crate) struct Names {
    /// The lock's own name, as the caller gave it.
    pub(crate) name: Box<str>,
    /// The lock key, which is also the channel its release is published on.
    pub(crate) lock: String,
    pub(crate) marker: String,
    pub(crate) fence: String,
    pub(crate) window: String,
}

impl Names {
    /// The names of lock `name` under `prefix` (`"<prefix>:"`, or empty).
    pub(crate) fn new(prefix: &str, name: &str) -> Result<Names, ConfigError> {
        if name.is_empty() {
            return Err(ConfigError("a lock name cannot be empty".into()));
        }
        if name.starts_with('}') && !prefix.contains('{') {
            return Err(ConfigError(format!(
                "the lock name `{name}` starts with `}}`: its hash tag would be empty, \
                 and on a Redis Cluster its keys would land in different slots"
            )));
        }
        let lock = format!("{prefix}{NAMESPACE}{{{name}}}");
        let with = |suffix: &str| format!("{lock}{suffix}");
        Ok(Names {
            name: name.into(),
            marker: with(":w"),
            fence: with(":fence"),
            window: with(":refresh"),
            lock,
        })
    }
}

/// Refuses a store prefix (`"<prefix>:"`) under which lock keys would not
/// share a slot with the keys beside them.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    match prefix.find('{') {
        Some(open) if prefix[open + 1..].starts_with('}') => Err(ConfigError(format!(
            "the store prefix `{}` holds an empty hash tag (`{{}}`): lock keys under it \
             would not share a hash slot on a Redis Cluster; use another prefix for locks",
            prefix.trim_end_matches(':')
        ))),
        _ => Ok(()),
    }
}

/// The part of `key` Redis Cluster hashes to find its slot.
#[cfg(test)]
fn hashed_part(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_slot(names: &Names) {
        let tag = hashed_part(&names.lock);
        assert!(!tag.is_empty());
        for other in [&names.marker, &names.fence, &names.window] {
            assert_eq!(hashed_part(other), tag, "{other} vs {}", names.lock);
        }
    }

    #[test]
    fn every_name_of_a_lock_hashes_alike() {
        for prefix in ["", "app:", "{app}:", "a{b:", "a}b:", "{x:"] {
            check_prefix(prefix).unwrap();
            for name in ["k", "user:7", "a}b", "{x}", "{", "x{}", "}"] {
                match Names::new(prefix, name) {
                    Ok(names) => same_slot(&names),
                    Err(_) => assert!(name.starts_with('}') && !prefix.contains('{')),
                }
            }
        }
        assert_eq!(
            Names::new("app:", "user:7").unwrap().lock,
            "app:__cachex_lock:{user:7}"
        );
        assert_eq!(hashed_part(&Names::new("", "k").unwrap().marker), "k");
    }

    #[test]
    fn empty_tags_are_refused() {
        assert!(Names::new("app:", "").is_err());
        assert!(Names::new("app:", "}x").is_err());
        assert!(check_prefix("a{}b:").is_err());
        assert!(check_prefix("a}{b}:").is_ok());
    }
}
