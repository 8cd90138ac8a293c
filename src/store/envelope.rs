//! What a store keeps under a key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tag::TagStamps;

/// A stored entry: a value, or the cached answer "not found", plus how long
/// the load that produced it took.
///
/// - The negative form is what makes negative caching work on every
///   backend: a store only ever sees envelopes, so "this row does not exist"
///   is stored, expires and is replicated exactly like a value.
/// - The load time is XFetch's `delta` (see
///   [`CacheBuilder::xfetch`](crate::CacheBuilder::xfetch)): how long
///   recomputing this entry costs, which tells how early to refresh it. It is
///   zero for values written with [`Cache::set`](crate::Cache::set).
///
/// It implements serde's `Serialize` and `Deserialize` (whenever `V` does),
/// unconditionally, so that a backend storing bytes (Redis) can encode it with
/// the codec of its choice. The field names are part of that encoding.
///
/// ```
/// use std::time::Duration;
/// use cachex::Envelope;
///
/// let hit = Envelope::found("alice").with_load_time(Duration::from_millis(3));
/// assert_eq!(hit.value(), Some(&"alice"));
/// assert_eq!(hit.load_time(), Duration::from_millis(3));
///
/// let miss = Envelope::<&str>::not_found();
/// assert!(miss.is_not_found());
/// assert_eq!(miss.into_value(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope<V> {
    value: Option<V>,
    /// Defaulted so that entries written without it still decode.
    #[serde(default)]
    load_time: Duration,
    /// The tags it was written with and their versions then (see
    /// [`tag`](crate::tag)). Not part of the serde encoding: a store that
    /// serializes envelopes itself does not support tags, and the cache
    /// refuses tagged writes to it.
    #[serde(skip)]
    tags: Option<TagStamps>,
}

impl<V> Envelope<V> {
    /// An envelope holding `value`.
    pub fn found(value: V) -> Self {
        Envelope {
            value: Some(value),
            load_time: Duration::ZERO,
            tags: None,
        }
    }

    /// An envelope recording that the value does not exist.
    pub fn not_found() -> Self {
        Envelope {
            value: None,
            load_time: Duration::ZERO,
            tags: None,
        }
    }

    /// An envelope holding `value` if there is one, "not found" otherwise.
    pub fn from_option(value: Option<V>) -> Self {
        Envelope {
            value,
            load_time: Duration::ZERO,
            tags: None,
        }
    }

    /// Records how long the load that produced this entry took.
    #[must_use]
    pub fn with_load_time(mut self, load_time: Duration) -> Self {
        self.load_time = load_time;
        self
    }

    /// Records the tags the entry is written with, and their versions (see
    /// [`Store::tag_stamps`](crate::Store::tag_stamps)).
    #[must_use]
    pub fn with_tags(mut self, tags: TagStamps) -> Self {
        self.tags = Some(tags);
        self
    }

    /// The tags the entry was written with, and their versions then.
    pub fn tags(&self) -> Option<&TagStamps> {
        self.tags.as_ref()
    }

    /// Whether the entry's tags are all still at the versions it recorded,
    /// by what this process knows of them (true for an untagged entry):
    /// what an in-process tier checks on a hit.
    #[inline(always)]
    pub(crate) fn tags_current(&self) -> bool {
        match &self.tags {
            None => true,
            Some(tags) => tags.are_current(),
        }
    }

    /// A copy without the tags: what a hit answers from, once the tags
    /// were checked, without touching their shared list's count.
    #[inline(always)]
    pub(crate) fn clone_untagged(&self) -> Self
    where
        V: Clone,
    {
        Envelope {
            value: self.value.clone(),
            load_time: self.load_time,
            tags: None,
        }
    }

    /// A copy, with the tags if `keep_tags`, once they were checked.
    #[inline(always)]
    pub(crate) fn clone_checked(&self, keep_tags: bool) -> Self
    where
        V: Clone,
    {
        if keep_tags {
            self.clone()
        } else {
            self.clone_untagged()
        }
    }

    /// Replaces the recorded tags (a copy bound to another registry's
    /// cells).
    pub(crate) fn set_tags(&mut self, tags: Option<TagStamps>) {
        self.tags = tags;
    }

    /// The value, or `None` for a "not found" entry.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// Takes the value out, or `None` for a "not found" entry.
    pub fn into_value(self) -> Option<V> {
        self.value
    }

    /// Whether this entry records that the value does not exist.
    pub fn is_not_found(&self) -> bool {
        self.value.is_none()
    }

    /// How long the load that produced this entry took (zero if it was
    /// written directly).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}
