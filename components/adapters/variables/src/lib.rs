//! Exports Spin's `fermyon:spin/variables@2.0.0` from the environment
//! (`wasi:cli/environment`), as Spin's own environment provider reads it:
//! variable `x_y` is `SPIN_VARIABLE_X_Y`. With it a component (and the
//! gateway adapters) reads its variables under `wasmtime serve --env ...`.

mod bindings {
    wit_bindgen::generate!({
        world: "s3m:adapters/variables-adapter",
        path: ["../../../wit", "../wit/adapters.wit"],
        additional_derives: [PartialEq],
    });
}

use bindings::exports::fermyon::spin::variables::{Error, Guest};

struct Adapter;
bindings::export!(Adapter with_types_in bindings);

/// The s3m host's (and Spin's) rule for a variable name: lower-case ASCII
/// letters, digits and underscores, starting with a letter.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The environment variable that holds variable `name`.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Variable `name`, from the environment `lookup` gives.
fn get(name: String, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Error> {
    if !is_valid_name(&name) {
        return Err(Error::InvalidName(format!(
            "{name:?} is not a variable name: lower-case letters, digits and underscores, \
             starting with a letter"
        )));
    }
    let env = env_name(&name);
    lookup(&env).ok_or_else(|| {
        Error::Undefined(format!(
            "the component has no variable named {name:?} (set {env})"
        ))
    })
}

impl Guest for Adapter {
    fn get(name: String) -> Result<String, Error> {
        // Not UTF-8 reads as unset: the environment cannot hold a variable's value then.
        get(name, |env| std::env::var(env).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let env = |k: &str| (k == "SPIN_VARIABLE_S3M_GATEWAY_URL").then(|| "http://x".to_string());
        assert_eq!(get("s3m_gateway_url".into(), env), Ok("http://x".into()));
        assert!(matches!(
            get("s3m_gateway_key".into(), env),
            Err(Error::Undefined(_))
        ));
        for bad in ["", "S3M", "1a", "a-b", "_a", "a.b"] {
            assert!(
                matches!(get(bad.into(), env), Err(Error::InvalidName(_))),
                "{bad}"
            );
        }
        assert_eq!(env_name("a_1"), "SPIN_VARIABLE_A_1");
    }
}
