//! `s3m-wire`: the records the S3M host and its WebAssembly components
//! share, defined once so that the two sides cannot drift. It builds for the
//! host (native) and for the components (wasm32-wasip2), and depends on
//! nothing but serde, serde_json and toml.
//!
//! - [`token`]: the token record under `token/{jti}` in key-value, which
//!   `s3m token create` writes and the components read (and revoke).
//! - [`facility`]: the facility configuration, `config/facility.toml`,
//!   which the host reads at start and the components on every request.
//! - [`url`]: broker URLs taken apart (host, port, without the password).

pub mod facility;
pub mod token;
pub mod url;

pub use facility::{FacilityConfig, FacilityError};
pub use token::TokenRecord;
