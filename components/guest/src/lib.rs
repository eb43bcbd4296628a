//! The one shared guest library of the S3M components.
//!
//! Every endpoint component uses it for the same three things, so that there is one way to
//! do each: the error shape ([`ApiError`]), JSON answers ([`json`]), and the token check
//! ([`authenticate`] -> [`Principal`]); and it reads the facility configuration
//! ([`facility::load`]). It holds no endpoint logic and no state.

pub mod auth;
pub mod error;
pub mod facility;
pub mod http;
pub mod response;
pub mod time;

pub use auth::{authenticate, Principal, TokenRecord};
pub use error::ApiError;
pub use response::{cut, json, json_with_status, route_path};
