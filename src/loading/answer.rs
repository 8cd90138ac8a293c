//! The two shapes of a load's result.

/// What one flavour of `get_or_load` returns: `V` for
/// [`get_or_load`](crate::Cache::get_or_load), where only a value answers
/// the caller, or `Option<V>` for
/// [`get_or_load_optional`](crate::Cache::get_or_load_optional), where "not
/// found" is an answer too.
///
/// Entries and flights are shared between both flavours, so each converts
/// to and from the shared form, `Option<V>` (`None`: not found).
pub(crate) trait Answer<V>: Sized {
    /// Whether a cached "not found" answers this caller (only
    /// `get_or_load_optional`'s do); see [`Lookup`](crate::cache::Lookup).
    const ACCEPTS_NOT_FOUND: bool;

    /// Reads a shared answer (a cached entry, or another caller's load);
    /// `None` if it does not answer this caller, that is a "not found" for a
    /// caller that needs a value, who then loads for itself.
    fn from_shared(shared: Option<V>) -> Option<Self>;

    /// This caller's own answer, in the form other callers share.
    fn to_shared(&self) -> Option<V>;

    /// A value as this caller's answer (a stale value fail-safe serves).
    fn from_value(value: V) -> Self;
}

impl<V: Clone> Answer<V> for V {
    const ACCEPTS_NOT_FOUND: bool = false;

    fn from_shared(shared: Option<V>) -> Option<V> {
        shared
    }

    fn to_shared(&self) -> Option<V> {
        Some(self.clone())
    }

    fn from_value(value: V) -> V {
        value
    }
}

impl<V: Clone> Answer<V> for Option<V> {
    const ACCEPTS_NOT_FOUND: bool = true;

    fn from_shared(shared: Option<V>) -> Option<Option<V>> {
        Some(shared)
    }

    fn to_shared(&self) -> Option<V> {
        self.clone()
    }

    fn from_value(value: V) -> Option<V> {
        Some(value)
    }
}
