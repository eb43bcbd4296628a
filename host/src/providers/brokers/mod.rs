//! Broker backends: local redis-server / rabbitmq-server processes
//! (`local`, the default), and Kubernetes objects (`kubernetes`). Each
//! implements `capabilities::brokers::BrokerProvider` and deserialises its
//! own part of `[streaming]`; `probe` holds the protocol-level health checks
//! they share. The wiring (host/src/wiring.rs) picks one.

pub mod kubernetes;
pub mod local;
pub mod probe;
pub mod tls;
