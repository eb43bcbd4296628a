//! The facility configuration (config/facility.toml): one shape and one
//! reader, shared with the components, in the `s3m-wire` crate. The host
//! reads it at start and refuses to start when it is missing or not valid
//! (the error names the file and the fix); the host's readers (the wiring of
//! the providers) take the sections they need from it.

pub use s3m_wire::facility::FacilityConfig;
