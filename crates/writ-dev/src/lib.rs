//! `writ dev` and `writ demo`.
//!
//! `writ dev` runs the whole stack in one process with nothing to install: an
//! embedded Kafka-protocol broker (librdkafka's mock cluster), SQLite as the
//! master and as every local store, the ingress (with drafts), an interactive
//! and a bulk worker and the edge service — the same components, wired the
//! same way, as a production deployment; only the broker and the databases
//! are swapped. `writ demo` drives the six patterns over HTTP against such a
//! stack (or any deployment) and prints what happened.

pub mod demo;
pub mod mock;
pub mod stack;

pub use demo::{DemoRow, DemoTarget};
pub use stack::{DevOptions, DevStack};
