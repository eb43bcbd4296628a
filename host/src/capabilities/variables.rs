//! `fermyon:spin/variables@2.0.0`: component variables, rendered once at
//! start-up from the application's `[variables]` (defaults, SPIN_VARIABLE_*
//! environment, `--variable` on the command line).

use crate::state::HostState;
use wasmtime::component::{HasSelf, Linker};

wasmtime::component::bindgen!({
    world: "s3m:facility/spin-variables-host",
    path: "../wit",
    imports: { default: async | trappable },
});

use fermyon::spin::variables::{self, Error};

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if !is_valid_name(&name) {
            return Ok(Err(Error::InvalidName(name)));
        }
        Ok(match self.grants.variables.get(&name) {
            Some(v) => Ok(v.clone()),
            None => Err(Error::Undefined(format!(
                "the component has no variable named {name:?}"
            ))),
        })
    }
}

/// Spin's rule: lower-case letters, digits and underscores, starting with a letter.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    Ok(variables::add_to_linker::<HostState, HasSelf<HostState>>(
        linker,
        |s| s,
    )?)
}
