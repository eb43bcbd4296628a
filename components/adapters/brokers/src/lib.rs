//! Exports `s3m:facility/brokers@0.1.0` and implements each function with a
//! `POST <s3m_gateway_url>/gateway/v1/brokers/<function>` to the s3m host's
//! capability gateway (docs/gateway.md).

mod bindings {
    wit_bindgen::generate!({
        world: "s3m:adapters/brokers-adapter",
        path: ["../../../wit", "../wit/adapters.wit"],
        with: { "fermyon:spin/variables@2.0.0": gateway_call::variables },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

use bindings::exports::s3m::facility::brokers::*;
use bindings::exports::s3m::facility::types::Caller;
use gateway_call::Failure;
use serde::de::DeserializeOwned;
use serde_json::json;

struct Adapter;
bindings::export!(Adapter with_types_in bindings);

/// The function's own error for a call that brought no answer.
fn error(failure: Failure) -> BrokerError {
    match failure {
        Failure::Refused(m) => BrokerError::Permission(m),
        Failure::Unavailable(m) => BrokerError::Unavailable(m),
    }
}

/// Calls a function that returns `result<T, broker-error>` for `caller`.
fn call<T: DeserializeOwned>(
    function: &str,
    body: serde_json::Value,
    caller: &Caller,
) -> Result<T, BrokerError> {
    gateway_call::call("brokers", function, &body, &[&caller.token])
        .unwrap_or_else(|f| Err(error(f)))
}

impl Guest for Adapter {
    /// An empty list when the gateway does not answer, as the native host
    /// answers a caller it refuses.
    fn backends(caller: Caller) -> Vec<Backend> {
        gateway_call::call(
            "brokers",
            "backends",
            &json!({ "caller": caller }),
            &[&caller.token],
        )
        .unwrap_or_default()
    }

    fn provision(caller: Caller, spec: ClusterSpec) -> Result<Credentials, BrokerError> {
        call(
            "provision",
            json!({ "caller": caller, "spec": spec }),
            &caller,
        )
    }

    fn list(caller: Caller, engine: Engine) -> Result<Vec<ClusterSummary>, BrokerError> {
        call(
            "list",
            json!({ "caller": caller, "engine": engine }),
            &caller,
        )
    }

    fn get(caller: Caller, engine: Engine, name: String) -> Result<Cluster, BrokerError> {
        let body = json!({ "caller": caller, "engine": engine, "name": name });
        call("get", body, &caller)
    }

    fn delete(caller: Caller, engine: Engine, name: String) -> Result<(), BrokerError> {
        let body = json!({ "caller": caller, "engine": engine, "name": name });
        call("delete", body, &caller)
    }

    fn extend(caller: Caller, engine: Engine, name: String) -> Result<Lifetime, BrokerError> {
        let body = json!({ "caller": caller, "engine": engine, "name": name });
        call("extend", body, &caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_the_wit_values() {
        let answer: Result<Credentials, BrokerError> = gateway_call::interpret(
            "brokers/provision",
            409,
            br#"{"Err": {"AlreadyExists": "redis q1"}}"#,
        )
        .unwrap();
        assert_eq!(answer, Err(BrokerError::AlreadyExists("redis q1".into())));
        let spec = ClusterSpec {
            engine: Engine::Rabbitmq,
            kind: "single".into(),
            name: "q1".into(),
            resource_settings: vec![ResourceSetting {
                key: "ram-gbs".into(),
                value: 4,
            }],
            feature_flags: vec![],
        };
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"engine": "Rabbitmq", "kind": "single", "name": "q1",
                   "resource_settings": [{"key": "ram-gbs", "value": 4}], "feature_flags": []})
        );
        let c: Result<Credentials, BrokerError> = gateway_call::interpret(
            "brokers/provision",
            200,
            br#"{"Ok": {"username": "u", "password": "p", "url": "redis://u:p@h:1", "mgmt_url": null}}"#,
        )
        .unwrap();
        assert_eq!(c.unwrap().mgmt_url, None);
    }

    #[test]
    fn failures() {
        assert_eq!(
            error(Failure::Refused("no".into())),
            BrokerError::Permission("no".into())
        );
        assert_eq!(
            error(Failure::Unavailable("down".into())),
            BrokerError::Unavailable("down".into())
        );
    }
}
