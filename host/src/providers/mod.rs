//! Backends behind the capabilities, one module per capability and one file
//! per backend.

pub mod brokers;
pub mod key_value;
pub mod scheduler;
pub mod software;
