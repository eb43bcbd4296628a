//! Operator tasks that run outside the request path: the facility key pair
//! and project access tokens.

pub mod keys;
pub mod principal;
pub mod tokens;
