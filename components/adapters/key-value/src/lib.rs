//! Exports Spin's `fermyon:spin/key-value@2.0.0` and
//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` through the key-value
//! routes of the s3m host's capability gateway (docs/gateway.md), for hosts
//! without a key-value store of their own (`wasmtime serve`, jco).
//!
//! A store or bucket handle is only its label: every operation is one call
//! naming the store (`{"store": "default", ...}`), and the host checks the
//! component's grant of that store each time. The batch functions are one
//! call per key, as the native host does them (not atomic as a whole).

mod bindings {
    wit_bindgen::generate!({
        world: "s3m:adapters/key-value-adapter",
        path: ["../../../wit", "../wit/adapters.wit"],
        with: { "fermyon:spin/variables@2.0.0": gateway_call::variables },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        additional_derives_ignore: ["cas-error"],
    });
}

use bindings::exports::fermyon::spin::key_value as spin;
use bindings::exports::wasi::keyvalue::{atomics, batch, store};
use gateway_call::Failure;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Value};

struct Adapter;
bindings::export!(Adapter with_types_in bindings);

/// An error type of a key-value interface, and what a call that brought no
/// answer is in it: `access-denied` when the gateway refused the component
/// (401/403), `other` else.
trait KvError: DeserializeOwned {
    fn access_denied() -> Self;
    fn other(message: String) -> Self;

    fn from_failure(failure: Failure) -> Self {
        match failure {
            Failure::Refused(m) => {
                // access-denied has no message: leave the reason where an
                // operator looks.
                eprintln!("key-value adapter: {m}");
                Self::access_denied()
            }
            Failure::Unavailable(m) => Self::other(m),
        }
    }
}

impl KvError for spin::Error {
    fn access_denied() -> Self {
        spin::Error::AccessDenied
    }
    fn other(message: String) -> Self {
        spin::Error::Other(message)
    }
}

impl KvError for store::Error {
    fn access_denied() -> Self {
        store::Error::AccessDenied
    }
    fn other(message: String) -> Self {
        store::Error::Other(message)
    }
}

/// Calls a key-value route that answers `result<T, E>`.
fn call<T: DeserializeOwned, E: KvError>(
    interface: &str,
    function: &str,
    body: Value,
) -> Result<T, E> {
    gateway_call::call(interface, function, &body, &[]).unwrap_or_else(|f| Err(E::from_failure(f)))
}

/// `fermyon:spin/key-value` routes.
fn spin_call<T: DeserializeOwned>(function: &str, body: Value) -> Result<T, spin::Error> {
    call("key-value", function, body)
}

/// `wasi:keyvalue` routes.
fn wasi_call<T: DeserializeOwned>(function: &str, body: Value) -> Result<T, store::Error> {
    call("wasi-keyvalue", function, body)
}

/// A Spin store: its label.
pub struct SpinStore {
    label: String,
}

impl spin::Guest for Adapter {
    type Store = SpinStore;
}

impl spin::GuestStore for SpinStore {
    fn open(label: String) -> Result<spin::Store, spin::Error> {
        spin_call::<IgnoredAny>("open", json!({ "store": label }))?;
        Ok(spin::Store::new(SpinStore { label }))
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, spin::Error> {
        spin_call("get", json!({ "store": self.label, "key": key }))
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), spin::Error> {
        spin_call(
            "set",
            json!({ "store": self.label, "key": key, "value": value }),
        )
    }

    fn delete(&self, key: String) -> Result<(), spin::Error> {
        spin_call("delete", json!({ "store": self.label, "key": key }))
    }

    fn exists(&self, key: String) -> Result<bool, spin::Error> {
        spin_call("exists", json!({ "store": self.label, "key": key }))
    }

    fn get_keys(&self) -> Result<Vec<String>, spin::Error> {
        spin_call("get-keys", json!({ "store": self.label }))
    }
}

/// A wasi:keyvalue bucket: its store's label.
pub struct Bucket {
    label: String,
}

impl store::Guest for Adapter {
    type Bucket = Bucket;

    fn open(identifier: String) -> Result<store::Bucket, store::Error> {
        wasi_call::<IgnoredAny>("open", json!({ "store": identifier }))?;
        Ok(store::Bucket::new(Bucket { label: identifier }))
    }
}

impl store::GuestBucket for Bucket {
    fn get(&self, key: String) -> Result<Option<Vec<u8>>, store::Error> {
        wasi_call("get", json!({ "store": self.label, "key": key }))
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), store::Error> {
        wasi_call(
            "set",
            json!({ "store": self.label, "key": key, "value": value }),
        )
    }

    fn delete(&self, key: String) -> Result<(), store::Error> {
        wasi_call("delete", json!({ "store": self.label, "key": key }))
    }

    fn exists(&self, key: String) -> Result<bool, store::Error> {
        wasi_call("exists", json!({ "store": self.label, "key": key }))
    }

    fn list_keys(&self, cursor: Option<String>) -> Result<store::KeyResponse, store::Error> {
        wasi_call(
            "list-keys",
            json!({ "store": self.label, "cursor": cursor }),
        )
    }
}

/// A compare-and-swap handle: the value of a key as `cas-current` read it.
pub struct Cas {
    label: String,
    key: String,
    current: Option<Vec<u8>>,
}

impl Cas {
    /// Reads the key's value now.
    fn read(label: String, key: String) -> Result<Cas, store::Error> {
        let current = wasi_call("cas-current", json!({ "store": label, "key": key }))?;
        Ok(Cas {
            label,
            key,
            current,
        })
    }
}

/// The error of `swap` as the gateway writes it.
#[derive(Deserialize)]
enum SwapError {
    /// The key no longer holds what the handle read.
    CasFailed,
    StoreError(store::Error),
}

impl atomics::GuestCas for Cas {
    fn new(bucket: store::BucketBorrow<'_>, key: String) -> Result<atomics::Cas, store::Error> {
        let label = bucket.get::<Bucket>().label.clone();
        Ok(atomics::Cas::new(Cas::read(label, key)?))
    }

    fn current(&self) -> Result<Option<Vec<u8>>, store::Error> {
        Ok(self.current.clone())
    }
}

impl atomics::Guest for Adapter {
    type Cas = Cas;

    fn increment(
        bucket: store::BucketBorrow<'_>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        let label = &bucket.get::<Bucket>().label;
        wasi_call(
            "increment",
            json!({ "store": label, "key": key, "delta": delta }),
        )
    }

    /// On `cas-failed`, hands back a handle that has read the key again, so
    /// the caller can retry with `current`.
    fn swap(cas: atomics::Cas, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let Cas {
            label,
            key,
            current,
        } = cas.into_inner::<Cas>();
        let body = json!({ "store": label, "key": key, "old": current, "value": value });
        let answer: Result<(), SwapError> = gateway_call::call("wasi-keyvalue", "swap", &body, &[])
            .unwrap_or_else(|f| Err(SwapError::StoreError(store::Error::from_failure(f))));
        match answer {
            Ok(()) => Ok(()),
            Err(SwapError::StoreError(e)) => Err(atomics::CasError::StoreError(e)),
            Err(SwapError::CasFailed) => match Cas::read(label, key) {
                Ok(cas) => Err(atomics::CasError::CasFailed(atomics::Cas::new(cas))),
                Err(e) => Err(atomics::CasError::StoreError(e)),
            },
        }
    }
}

impl batch::Guest for Adapter {
    fn get_many(
        bucket: store::BucketBorrow<'_>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, store::Error> {
        let bucket = bucket.get::<Bucket>();
        keys.into_iter()
            .map(|key| {
                let value = store::GuestBucket::get(bucket, key.clone())?;
                Ok((key, value))
            })
            .collect()
    }

    fn set_many(
        bucket: store::BucketBorrow<'_>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        let bucket = bucket.get::<Bucket>();
        key_values
            .into_iter()
            .try_for_each(|(key, value)| store::GuestBucket::set(bucket, key, value))
    }

    fn delete_many(bucket: store::BucketBorrow<'_>, keys: Vec<String>) -> Result<(), store::Error> {
        let bucket = bucket.get::<Bucket>();
        keys.into_iter()
            .try_for_each(|key| store::GuestBucket::delete(bucket, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_the_wit_values() {
        let err: Result<Option<Vec<u8>>, spin::Error> =
            gateway_call::interpret("key-value/get", 404, br#"{"Err": "NoSuchStore"}"#).unwrap();
        assert_eq!(err, Err(spin::Error::NoSuchStore));
        let got: Result<Option<Vec<u8>>, store::Error> =
            gateway_call::interpret("wasi-keyvalue/get", 200, br#"{"Ok": [1, 2, 3]}"#).unwrap();
        assert_eq!(got, Ok(Some(vec![1, 2, 3])));
        let keys: Result<store::KeyResponse, store::Error> = gateway_call::interpret(
            "wasi-keyvalue/list-keys",
            200,
            br#"{"Ok": {"keys": ["a"], "cursor": null}}"#,
        )
        .unwrap();
        assert_eq!(keys.unwrap().keys, ["a"]);
        let other: Result<(), store::Error> =
            gateway_call::interpret("wasi-keyvalue/set", 503, br#"{"Err": {"Other": "down"}}"#)
                .unwrap();
        assert_eq!(other, Err(store::Error::Other("down".into())));
        for (body, failed) in [
            (r#"{"Err": "CasFailed"}"#, true),
            (r#"{"Err": {"StoreError": "AccessDenied"}}"#, false),
        ] {
            let swap: Result<(), SwapError> =
                gateway_call::interpret("wasi-keyvalue/swap", 409, body.as_bytes()).unwrap();
            assert_eq!(matches!(swap, Err(SwapError::CasFailed)), failed);
        }
        let open: Result<IgnoredAny, spin::Error> =
            gateway_call::interpret("key-value/open", 200, br#"{"Ok": null}"#).unwrap();
        assert!(open.is_ok());
    }

    #[test]
    fn failures() {
        assert_eq!(
            spin::Error::from_failure(Failure::Refused("not granted".into())),
            spin::Error::AccessDenied
        );
        assert_eq!(
            store::Error::from_failure(Failure::Unavailable("down".into())),
            store::Error::Other("down".into())
        );
    }
}
