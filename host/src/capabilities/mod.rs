//! Capabilities the host gives the components: one module per capability,
//! each holding its WIT binding and the trait its providers implement. The
//! engine and router know nothing of what is behind them.

pub mod brokers;
pub mod key_value;
pub mod outbound_http;
pub mod scheduler;
pub mod software;
pub mod variables;

use crate::state::HostState;
use wasmtime::component::Linker;

/// Adds every capability's WIT imports to the linker.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    key_value::add_to_linker(linker)?;
    variables::add_to_linker(linker)?;
    scheduler::add_to_linker(linker)?;
    brokers::add_to_linker(linker)?;
    software::add_to_linker(linker)?;
    Ok(())
}
