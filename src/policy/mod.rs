//! The eviction and admission policy: adaptive W-TinyLFU.
//!
//! - `sketch.rs`: the count-min frequency sketch TinyLFU consults.
//! - `history.rs`: recently evicted keys, whose return sizes the window.
//! - `tinylfu.rs`: the window / probation / protected segments and the
//!   admission decision.
//!
//! The policy works on slot indices through [`PolicyArena`]; it owns no
//! entries, so the engine's storage layout can change independently.

mod history;
mod sketch;
mod tinylfu;

pub(crate) use sketch::FrequencySketch;
pub(crate) use tinylfu::{PolicyArena, Segment, TinyLfu};
