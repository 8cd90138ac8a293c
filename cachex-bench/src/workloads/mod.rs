//! The benchmark commands, one module each.

pub mod asyncget;
pub mod batch;
pub mod hitratio;
pub mod hybrid;
pub mod memory;
pub mod outage;
pub mod redis;
mod redis_bench;
pub mod simulate;
pub mod soak;
pub mod stampede;
pub mod tags;
pub mod throughput;
