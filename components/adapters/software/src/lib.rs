//! Exports `s3m:facility/software@0.1.0`: `modules` is a
//! `POST <s3m_gateway_url>/gateway/v1/software/modules` to the s3m host's
//! capability gateway (docs/gateway.md).

mod bindings {
    wit_bindgen::generate!({
        world: "s3m:adapters/software-adapter",
        path: ["../../../wit", "../wit/adapters.wit"],
        with: { "fermyon:spin/variables@2.0.0": gateway_call::variables },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

use bindings::exports::s3m::facility::software::*;
use gateway_call::Failure;
use serde_json::json;

struct Adapter;
bindings::export!(Adapter with_types_in bindings);

/// The function's own error for a call that brought no answer. The
/// interface has no `permission` case: a refusal is `unavailable` too, its
/// message saying the gateway refused the component.
fn error(failure: Failure) -> SoftwareError {
    SoftwareError::Unavailable(failure.message().to_string())
}

impl Guest for Adapter {
    fn modules(resource: String) -> Result<ModuleList, SoftwareError> {
        gateway_call::call("software", "modules", &json!({ "resource": resource }), &[])
            .unwrap_or_else(|f| Err(error(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_the_wit_values() {
        let answer: Result<ModuleList, SoftwareError> = gateway_call::interpret(
            "software/modules",
            200,
            br#"{"Ok": {"modules": [{"name": "gcc", "versions": ["12.2.0"],
                 "default_version": "12.2.0", "description": null}], "warnings": []}}"#,
        )
        .unwrap();
        assert_eq!(
            answer.unwrap().modules[0].default_version.as_deref(),
            Some("12.2.0")
        );
        let answer: Result<ModuleList, SoftwareError> =
            gateway_call::interpret("software/modules", 404, br#"{"Err": {"NotFound": "x"}}"#)
                .unwrap();
        assert_eq!(answer, Err(SoftwareError::NotFound("x".into())));
        assert_eq!(
            error(Failure::Refused("refused".into())),
            SoftwareError::Unavailable("refused".into())
        );
    }
}
