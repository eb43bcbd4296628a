//! Scheduler backends: Slurm through slurmrestd (`slurm.rs`), and local
//! processes (`local.rs`, the embedded default). Each implements
//! `capabilities::scheduler::SchedulerProvider`; the facility configuration
//! picks one per compute resource.

pub mod local;
pub mod sandbox;
pub mod slurm;
