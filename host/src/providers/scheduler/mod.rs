//! Scheduler backends: Slurm through slurmrestd (`slurm.rs`), and local
//! processes (`local.rs`, the embedded default). Each implements
//! `capabilities::scheduler::SchedulerProvider` and reads its own typed
//! `[resources.compute]` table; `common.rs` holds what both use. The wiring
//! (host/src/wiring.rs) picks one per compute resource.

pub mod common;
pub mod local;
pub mod sandbox;
pub mod slurm;
