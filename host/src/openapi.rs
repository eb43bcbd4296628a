//! `GET /openapi.json`: the OpenAPI 3.1 document of the API
//! (`openapi/s3m.json`, embedded at build time so that the binary always
//! serves the document of its own source tree). The server asks here only
//! for a path that no component route matches, so the document never
//! shadows a route of spin.toml.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

/// The document, as written in the repository.
pub const DOCUMENT: &str = include_str!("../../openapi/s3m.json");

/// The answer to `method` on `path` when `path` is the document's, else
/// `None` (the caller answers its usual 404).
pub fn answer(method: &http::Method, path: &str) -> Option<hyper::Response<HyperOutgoingBody>> {
    if path != PATH {
        return None;
    }
    if let Some(refused) = crate::server::get_only(method, PATH) {
        return Some(refused);
    }
    Some(
        hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from_static(DOCUMENT.as_bytes()))
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .expect("a static response is valid"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi/s3m.json is JSON")
    }

    /// Every `$ref` of the document names something the document defines.
    fn check_refs(doc: &Value, v: &Value, at: &str) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let pointer = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("{at}: $ref {r} is not local"));
                    assert!(
                        doc.pointer(pointer).is_some(),
                        "{at}: $ref {r} names nothing"
                    );
                }
                for (k, v) in m {
                    check_refs(doc, v, &format!("{at}/{k}"));
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    check_refs(doc, v, &format!("{at}/{i}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_its_refs_resolve() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        assert!(doc["paths"][PATH]["get"].is_object());
        check_refs(&doc, &doc, "#");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["token"]["type"], "apiKey");
        assert_eq!(schemes["token"]["in"], "header");
        assert_eq!(schemes["token"]["name"], "Authorization");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
    }

    /// Every `[[trigger.http]]` route of the repository's spin.toml has paths
    /// in the document, and every path of the document is under one of them
    /// (or is this module's own).
    #[test]
    fn every_route_of_spin_toml_is_documented() {
        let doc = document();
        let manifest: toml::Value = toml::from_str(include_str!("../../spin.toml")).unwrap();
        let prefixes: Vec<String> = manifest["trigger"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let route = t["route"].as_str().unwrap();
                route.strip_suffix("/...").unwrap_or(route).to_string()
            })
            .collect();
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        for prefix in &prefixes {
            assert!(
                paths.iter().any(|p| p.starts_with(prefix.as_str())),
                "route {prefix}/... of spin.toml has no path in openapi/s3m.json"
            );
        }
        for path in paths {
            assert!(
                path == PATH || prefixes.iter().any(|p| path.starts_with(p.as_str())),
                "{path} of openapi/s3m.json is under no route of spin.toml"
            );
        }
        // No component route may serve the document's own path.
        assert!(!prefixes
            .iter()
            .any(|p| p.is_empty() || PATH.starts_with(&format!("{p}/"))));
    }

    /// A legacy path answers exactly as its current one: same methods,
    /// parameters, bodies and answers (only the operation's id, summary and
    /// `deprecated` differ).
    #[test]
    fn legacy_paths_match_their_current_ones() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let pairs = [
            ("/olcf/v1alpha/streaming/", "/olcf/open/v1alpha/streaming/"),
            ("/slurm/v0.0.42/", "/slurm/open/{version}/"),
        ];
        let mut compared = 0;
        for (legacy, current) in pairs {
            for (path, item) in paths.iter().filter(|(p, _)| p.starts_with(legacy)) {
                let twin = format!("{current}{}", &path[legacy.len()..]);
                let other = paths
                    .get(&twin)
                    .unwrap_or_else(|| panic!("{path} has no {twin}"));
                let strip = |item: &Value| {
                    let mut item = item.clone();
                    let m = item.as_object_mut().unwrap();
                    if let Some(Value::Array(ps)) = m.get_mut("parameters") {
                        ps.retain(|p| p["$ref"] != "#/components/parameters/SlurmVersion");
                    }
                    for (_, op) in m.iter_mut().filter(|(k, _)| *k != "parameters") {
                        let op = op.as_object_mut().unwrap();
                        for k in ["operationId", "summary", "deprecated"] {
                            op.remove(k);
                        }
                    }
                    item
                };
                assert_eq!(strip(item), strip(other), "{path} differs from {twin}");
                compared += 1;
            }
        }
        assert!(compared >= 13, "{compared}");
    }
}
