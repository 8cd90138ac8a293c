//! The eviction and admission policy: adaptive W-TinyLFU.
//!
//! - `sketch.rs`: the count-min frequency sketch TinyLFU consults.
//! - `climber.rs`: hill climbing that sizes the admission window.
//! - `tinylfu.rs`: the window / probation / protected segments and the
//!   admission decision.
//!
//! The policy works on slot indices through [`PolicyArena`]; it owns no
//! entries, so the engine's storage layout can change independently.

mod climber;
mod sketch;
mod tinylfu;

pub(crate) use sketch::FrequencySketch;
pub(crate) use tinylfu::{PolicyArena, Segment, TinyLfu};
