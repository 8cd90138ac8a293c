//! A real service on a real database: an axum HTTP server over SQLite,
//! reading through a [`cachex::Cache`], and a load generator that measures
//! it with the cache on and off.
//!
//! ```sh
//! cargo run --release -p cachex-service --bin service                # http://127.0.0.1:8080
//! cargo run --release -p cachex-service --bin service -- --no-cache  # straight from SQLite
//! cargo run --release -p cachex-service --bin load                   # both, side by side
//! ```
//!
//! The binaries are thin: the database is [`db`], the routes are [`app`],
//! the load generator's HTTP client is [`client`], and [`process`] starts
//! the service as a child process (for the load generator and the tests).

pub mod app;
pub mod client;
pub mod db;
pub mod process;
