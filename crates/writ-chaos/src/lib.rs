//! writ's chaos run and soak (issue 7): the worker and the ingress run as
//! separate processes on a real broker and PostgreSQL while the harness kills,
//! restarts and scales them, breaks the master, sends duplicates and poison,
//! and then checks — from the master's own history table, the status topic and
//! the DLQ — that nothing was lost, nothing applied twice and order was kept.
//!
//! The binary `writ-chaos` drives it (`run`, `soak`); the integration test
//! `tests/chaos.rs` runs the CI-size versions.

#![warn(missing_docs)]

pub mod binaries;
pub mod error;
pub mod gaps;
pub mod master;
pub mod observe;
pub mod plan;
pub mod procs;
pub mod run;
pub mod soak;
pub mod traffic;
pub mod verify;
pub mod world;

pub use error::ChaosError;
pub use run::{run, RunConfig, RunReport};
pub use soak::{soak, SoakConfig, SoakReport};
