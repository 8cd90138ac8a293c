//! The machinery behind [`Cache::get_or_load`](crate::Cache::get_or_load),
//! one mechanism per file:
//!
//! - `singleflight`: one load per key at a time; everyone else waits for it.
//! - `panic`: turning a loader's panic into an error for its waiters.
//! - `answer`: the two shapes of a load's result (value, or maybe a value).
//! - `refresh`: when a hit should start a background refresh
//!   (stale-while-revalidate's window, XFetch's early draw in `xfetch`).
//! - `jitter` and `random`: spreading the TTLs the cache chooses itself.
//! - `tasks`: the background refreshes a cache owns and stops on close.
//! - `fail_safe`: expired values kept, hidden, as the fallback of a
//!   failed or slow load, and the load timeouts.

mod answer;
mod fail_safe;
mod jitter;
mod panic;
mod random;
mod refresh;
mod singleflight;
mod tasks;
mod xfetch;

pub(crate) use answer::Answer;
pub(crate) use fail_safe::{FailSafe, Freshness, LoadTimeouts, Stale};
pub(crate) use jitter::jittered;
pub(crate) use panic::catch_unwind;
pub(crate) use random::Random;
pub(crate) use refresh::RefreshPolicy;
pub(crate) use singleflight::{Endings, Flights, Leader, Outcome, Role, Waiter};
pub(crate) use tasks::Background;
