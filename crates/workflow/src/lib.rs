//! Argo `Workflow` documents, the subset S3M runs (issue 11, DESIGN.md
//! "Workflows"). This crate has no I/O: the workflows component parses and
//! validates with it, and the host's engine (host/src/workflows/) reads the
//! same types, re-validates what it loads, and evaluates `depends`, `when`
//! and `{{...}}` with it.
//!
//! - [`model`]: the document as serde types; a field outside the subset is
//!   refused by name (`deny_unknown_fields` + the path to it).
//! - [`parse`]: YAML or JSON text to a [`model::Workflow`].
//! - [`validate`]: what Argo checks at submission (entrypoint, template
//!   names, depends vs dependencies, references to non-ancestors, ...).
//! - [`expr`]: Argo's `depends` logic and `when` conditions.
//! - [`vars`]: `{{...}}` substitution.
//! - [`builtins`]: the built-in templates a `templateRef` reaches.

pub mod builtins;
pub mod expr;
pub mod model;
pub mod parse;
pub mod store;
pub mod validate;
pub mod vars;

pub use model::{Workflow, WorkflowTemplate};
pub use validate::{validate, Invalid};
