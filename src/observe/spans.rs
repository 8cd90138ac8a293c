//! Tracing spans around cache and store operations (feature `tracing`).
//!
//! Without the feature every type here is zero-sized and every method an
//! empty inline function, so the operations compile to what they were
//! before spans existed. With it, an operation nobody listens to costs the
//! `tracing` callsite check (a few loads) and a span that is never built:
//! fields are only computed for an enabled span.

use std::future::Future;
use std::time::Duration;

use super::{Observer, Tier};
use crate::{Result, StoreOp};
#[cfg(feature = "tracing")]
use {super::KeyMode, crate::Error};

/// The cache operations that get a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
    GetOrLoad,
    Delete,
    Clear,
    /// A background refresh (stale-while-revalidate or XFetch), of one
    /// key or of a batch's due keys.
    Refresh,
    GetMany,
    SetMany,
    DeleteMany,
    GetManyOrLoad,
    /// `invalidate_tags` (and `invalidate_tag`).
    InvalidateTags,
    /// A load waiting for another process's load of the key (distributed
    /// singleflight), inside its `get_or_load` span.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    LockWait,
}

/// The span of one cache operation: `None` inside when tracing is compiled
/// out or nobody listens, so that a quiet operation records nothing and
/// enters nothing (recording on a disabled `tracing::Span` still looks its
/// field up by name).
#[derive(Clone)]
pub(crate) struct OpSpan {
    #[cfg(feature = "tracing")]
    span: Option<tracing::Span>,
    #[cfg(feature = "tracing")]
    key_mode: KeyMode,
}

/// One `debug_span!` per operation: tracing needs the span name (and the
/// field names) to be literals at each callsite.
#[cfg(feature = "tracing")]
macro_rules! cache_span {
    ($name:literal, $op:literal, $cache:expr $(, $parent:expr)?) => {
        tracing::debug_span!(
            target: "cachex",
            $(parent: $parent,)?
            $name,
            "db.system.name" = "cachex",
            "db.operation.name" = $op,
            "cache.name" = $cache,
            "cache.key" = tracing::field::Empty,
            "cache.hit" = tracing::field::Empty,
            "cache.tier" = tracing::field::Empty,
            "cache.ttl_ms" = tracing::field::Empty,
            "cache.batch.size" = tracing::field::Empty,
            "cache.batch.hits" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        )
    };
}

/// Awaits `$future` inside `$span` when the span is live, and as it is
/// otherwise: the quiet path then pays for no `Instrumented` wrapper (a
/// span clone, an enter and exit per poll, a guarded drop).
macro_rules! traced {
    ($span:expr, $future:expr) => {
        match $span.live() {
            #[cfg(feature = "tracing")]
            Some(span) => tracing::Instrument::instrument($future, span.clone()).await,
            _ => $future.await,
        }
    };
}
pub(crate) use traced;

impl OpSpan {
    /// Opens the span of `op` on `key` (`None` for whole-cache operations).
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn new(observer: &Observer, op: Op, key: Option<&str>) -> Self {
        #[cfg(feature = "tracing")]
        {
            // The check `debug_span!` starts with (one load, one compare),
            // made here so that a quiet cache skips even building a disabled
            // span: no subscriber, or one at INFO, the usual production level.
            use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
            let debug = tracing::Level::DEBUG;
            let span = if debug <= STATIC_MAX_LEVEL && debug <= LevelFilter::current() {
                Self::open(observer, op, key)
            } else {
                None
            };
            OpSpan {
                span,
                key_mode: observer.key_mode,
            }
        }
        #[cfg(not(feature = "tracing"))]
        OpSpan {}
    }

    /// A span nobody listens to: records nothing.
    #[inline]
    pub(crate) fn quiet() -> Self {
        OpSpan {
            #[cfg(feature = "tracing")]
            span: None,
            #[cfg(feature = "tracing")]
            key_mode: KeyMode::Off,
        }
    }

    /// Builds the span, if the subscriber wants it.
    #[cfg(feature = "tracing")]
    #[inline(never)]
    fn open(observer: &Observer, op: Op, key: Option<&str>) -> Option<tracing::Span> {
        {
            let cache: &str = &observer.name;
            let span = match op {
                Op::Get => cache_span!("cache.get", "get", cache),
                Op::Set => cache_span!("cache.set", "set", cache),
                Op::GetOrLoad => cache_span!("cache.get_or_load", "get_or_load", cache),
                Op::Delete => cache_span!("cache.delete", "delete", cache),
                Op::Clear => cache_span!("cache.clear", "clear", cache),
                Op::GetMany => cache_span!("cache.get_many", "get_many", cache),
                Op::SetMany => cache_span!("cache.set_many", "set_many", cache),
                Op::DeleteMany => cache_span!("cache.delete_many", "delete_many", cache),
                Op::GetManyOrLoad => {
                    cache_span!("cache.get_many_or_load", "get_many_or_load", cache)
                }
                Op::InvalidateTags => {
                    cache_span!("cache.invalidate_tags", "invalidate_tags", cache)
                }
                Op::LockWait => cache_span!("cache.lock_wait", "lock_wait", cache),
                // A root span: it outlives the call that started it, which
                // it follows from rather than belongs to.
                Op::Refresh => {
                    let span = cache_span!("cache.refresh", "refresh", cache, None);
                    span.follows_from(tracing::Span::current());
                    span
                }
            };
            (!span.is_disabled()).then(|| {
                if let Some(key) = key.and_then(|key| observer.key_mode.render(key)) {
                    span.record("cache.key", key.as_str());
                }
                if let Some(tier) = observer.tier {
                    span.record("cache.tier", tier.as_str());
                }
                span
            })
        }
    }

    /// The live span, if any: always `None` without the `tracing` feature.
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn live(&self) -> Option<&tracing::Span> {
        self.span.as_ref()
    }

    /// The live span, if any: always `None` without the `tracing` feature.
    #[cfg(not(feature = "tracing"))]
    #[inline]
    pub(crate) fn live(&self) -> Option<&()> {
        None
    }

    /// Records whether the cache answered without a load.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn hit(&self, hit: bool) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("cache.hit", hit);
        }
    }

    /// Records the number of keys of a batch call.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn keys(&self, keys: usize) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("cache.batch.size", keys as u64);
        }
    }

    /// Records how many distinct keys of a batch the cache answered
    /// without a load.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn batch_hits(&self, hits: usize) {
        #[cfg(feature = "tracing")]
        if let Some(span) = &self.span {
            span.record("cache.batch.hits", hits as u64);
        }
    }

    /// Records a time-to-live: the one written, or the one left on a hit.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn ttl(&self, ttl: Option<Duration>) {
        #[cfg(feature = "tracing")]
        if let (Some(span), Some(ttl)) = (&self.span, ttl) {
            span.record("cache.ttl_ms", millis(ttl));
        }
    }

    /// Records the outcome: nothing on success; on failure the error's
    /// type, the OpenTelemetry error status, and a description (which names
    /// the key only in `KeyMode::Plain`).
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn finish<T>(&self, result: &Result<T>) {
        #[cfg(feature = "tracing")]
        if let (Some(span), Err(error)) = (&self.span, result) {
            record_error(span, error, self.key_mode == KeyMode::Plain);
        }
    }
}

/// Records the time-to-live a load wrote on the operation span it runs in.
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn record_loaded_ttl(ttl: Duration) {
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("cache.ttl_ms", millis(ttl));
}

#[cfg(feature = "tracing")]
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(feature = "tracing")]
fn record_error(span: &tracing::Span, error: &Error, with_key: bool) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", error.type_name());
    span.record("otel.status_code", "ERROR");
    let description = if with_key {
        error.to_string()
    } else {
        error.keyless_message()
    };
    span.record("otel.status_description", description.as_str());
}

/// The span of one operation of one tier of a [`Store`](crate::Store):
/// the helper a store uses so that its spans look like the cache's own.
///
/// A cache operation runs its store call inside its own span, so a store
/// span becomes that span's child: `cache.get` → `cache.store.get`. The
/// span is named `cache.store.<op>` and carries `db.system.name` (the
/// store's, e.g. `"redis"`), `db.operation.name`, `cache.tier`, `cache.hit`
/// (for reads, via [`hit`](Self::hit)), `otel.kind = "client"` for the
/// remote tier, and on failure `error.type`, `otel.status_code = "ERROR"`
/// and a description without the key (the store does not know the cache's
/// [`KeyMode`](crate::observe::KeyMode)). Without the `tracing` feature it is zero-sized and does
/// nothing, so stores call it unconditionally.
///
/// ```
/// use cachex::observe::{StoreSpan, Tier};
/// use cachex::StoreOp;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let span = StoreSpan::new(Tier::L2, "redis", StoreOp::Get);
/// let reply: cachex::Result<Option<u32>> = span.instrument(async { Ok(Some(7)) }).await;
/// span.hit(matches!(reply, Ok(Some(_))));
/// span.finish(&reply);
/// # });
/// ```
#[must_use = "a span records nothing unless its operation runs in it"]
#[derive(Clone, Debug)]
pub struct StoreSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

#[cfg(feature = "tracing")]
macro_rules! store_span {
    ($name:literal, $op:literal, $system:expr, $tier:expr) => {
        tracing::debug_span!(
            target: "cachex",
            $name,
            "db.system.name" = $system,
            "db.operation.name" = $op,
            "cache.tier" = $tier,
            "cache.hit" = tracing::field::Empty,
            "otel.kind" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        )
    };
}

impl StoreSpan {
    /// Opens the span of `op` on `tier` of a store of kind `system` (an
    /// OpenTelemetry `db.system.name`: `"redis"`, or `"cachex"` for the
    /// in-process tier).
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn new(tier: Tier, system: &'static str, op: StoreOp) -> Self {
        #[cfg(feature = "tracing")]
        {
            let tier_name = tier.as_str();
            let span = match op {
                StoreOp::Get => store_span!("cache.store.get", "get", system, tier_name),
                StoreOp::Set => store_span!("cache.store.set", "set", system, tier_name),
                StoreOp::Delete => store_span!("cache.store.delete", "delete", system, tier_name),
                StoreOp::Clear => store_span!("cache.store.clear", "clear", system, tier_name),
                StoreOp::RemainingTtl => store_span!(
                    "cache.store.remaining_ttl",
                    "remaining_ttl",
                    system,
                    tier_name
                ),
                StoreOp::Connect => {
                    store_span!("cache.store.connect", "connect", system, tier_name)
                }
                StoreOp::Lock => store_span!("cache.store.lock", "lock", system, tier_name),
                StoreOp::Tags => store_span!("cache.store.tags", "tags", system, tier_name),
            };
            if tier == Tier::L2 {
                span.record("otel.kind", "client");
            }
            StoreSpan { span }
        }
        #[cfg(not(feature = "tracing"))]
        StoreSpan {}
    }

    /// Runs `future` inside this span.
    #[inline]
    pub fn instrument<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        {
            tracing::Instrument::instrument(future, self.span.clone())
        }
        #[cfg(not(feature = "tracing"))]
        future
    }

    /// Records whether a read found a live entry.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn hit(&self, hit: bool) {
        #[cfg(feature = "tracing")]
        self.span.record("cache.hit", hit);
    }

    /// Records the outcome: on failure, the error's type and the
    /// OpenTelemetry error status.
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub fn finish<T>(&self, result: &Result<T>) {
        #[cfg(feature = "tracing")]
        if let Err(error) = result {
            record_error(&self.span, error, false);
        }
    }
}

/// Records on the current cache operation's span which tier answered it:
/// for a two-tier store, whose cache cannot tell. Call it from the store's
/// `get`, outside any [`StoreSpan`] (inside one it would land on that
/// span). A no-op without the `tracing` feature.
#[inline]
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub fn record_tier(tier: Tier) {
    #[cfg(feature = "tracing")]
    tracing::Span::current().record("cache.tier", tier.as_str());
}
