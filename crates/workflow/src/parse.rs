//! Documents arrive as JSON or YAML; both become a `serde_json::Value`
//! first, then the typed model, so that an error names the field by its
//! path (`spec.templates[0].container.volumeMounts`).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Text to a JSON value: JSON when it parses as JSON, else YAML (which is
/// a superset; the JSON attempt keeps JSON errors readable).
pub fn value(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(text).map_err(|e| format!("the body is not valid JSON: {e}"));
    }
    let v: Value = serde_yaml::from_str(text)
        .map_err(|e| format!("the body is neither JSON nor valid YAML: {e}"))?;
    Ok(v)
}

/// A JSON value to `T`, with the failing field's path in the error.
pub fn typed<T: DeserializeOwned>(value: Value, root: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.replace("unknown field", "field").replace(
            ", expected one of",
            " is not in the subset S3M runs; the fields here are",
        );
        if path == "." || path.is_empty() {
            format!("{root}: {inner}")
        } else {
            format!("{root}.{path}: {inner}")
        }
    })
}
