//! The plumbing the capability-gateway adapters share (docs/gateway.md):
//! one JSON `POST <s3m_gateway_url>/gateway/v1/<interface>/<function>` with
//! the component credential, over `wasi:http/outgoing-handler`, and what its
//! answer means.
//!
//! The adapter gets back either the JSON of the function's return value
//! (whatever the status: a `result` holding an error comes with the error's
//! status) or a [`Failure`]: the gateway refused the call (401/403), or it
//! could not be reached or answered something that is not the function's
//! answer. The adapter turns a failure into the function's own error.
//! Messages never hold the credential nor any secret the caller names.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod http;

/// The bindings of `fermyon:spin/variables@2.0.0`, the one import the
/// adapters have besides wasi. Adapters map their world's import here with
/// wit-bindgen's `with` option.
pub mod bindings {
    wit_bindgen::generate!({
        world: "s3m:adapters/gateway-call",
        path: ["../../../wit", "../wit/adapters.wit"],
        generate_all,
    });
}
pub use bindings::fermyon::spin::variables;

/// The component variable holding the gateway's base URL.
pub const URL_VARIABLE: &str = "s3m_gateway_url";
/// The component variable holding the component credential.
pub const CREDENTIAL_VARIABLE: &str = "s3m_gateway_credential";
/// The most an answer may weigh; a larger one is refused, unread.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Why a call brought no answer of the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The gateway refused the component (401: no or unknown credential;
    /// 403: no grant of the capability or store). Maps to `permission` /
    /// `access-denied`.
    Refused(String),
    /// The gateway could not be reached, or answered with anything but the
    /// function's answer. Maps to `unavailable` / `other`.
    Unavailable(String),
}

impl Failure {
    /// The message, whichever the kind.
    pub fn message(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Unavailable(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Where the gateway is and how to prove who calls it.
#[derive(Clone, PartialEq, Eq)]
pub struct Gateway {
    /// `http` or `https`.
    pub https: bool,
    /// `host:port`.
    pub authority: String,
    /// The path before `/gateway/v1/`, without a trailing slash (usually empty).
    pub prefix: String,
    credential: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("https", &self.https)
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway of the component variables `s3m_gateway_url` and
    /// `s3m_gateway_credential`.
    pub fn from_variables() -> Result<Gateway, Failure> {
        let url = variable(URL_VARIABLE)?;
        let credential = variable(CREDENTIAL_VARIABLE)?;
        Gateway::new(&url, credential)
    }

    /// The gateway at `url` (`http[s]://host:port[/prefix]`).
    pub fn new(url: &str, credential: String) -> Result<Gateway, Failure> {
        let bad = |why: &str| {
            Failure::Unavailable(format!(
                "the component variable {URL_VARIABLE} ({url:?}) is not a gateway URL: {why}; \
                 `s3m gateway env --component <id>` prints the right one"
            ))
        };
        let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("it must name host:port, without user information"));
        }
        if prefix.contains(['?', '#']) {
            return Err(bad("it must not have a query or fragment"));
        }
        if credential.trim().is_empty() {
            return Err(Failure::Unavailable(format!(
                "the component variable {CREDENTIAL_VARIABLE} is empty; \
                 `s3m gateway env --component <id>` prints it"
            )));
        }
        Ok(Gateway {
            https,
            authority: authority.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            credential,
        })
    }

    /// The path of a function's route.
    pub fn path(&self, interface: &str, function: &str) -> String {
        format!("{}/gateway/v1/{interface}/{function}", self.prefix)
    }

    /// Calls `interface`/`function` with `body` and reads its answer as `R`.
    /// `secrets` (e.g. the caller's token) are kept out of every message,
    /// as the credential is.
    pub fn call<R: DeserializeOwned>(
        &self,
        interface: &str,
        function: &str,
        body: &impl Serialize,
        secrets: &[&str],
    ) -> Result<R, Failure> {
        let what = format!("{interface}/{function}");
        let result = serde_json::to_vec(body)
            .map_err(|e| Failure::Unavailable(format!("cannot write the body of {what}: {e}")))
            .and_then(|body| {
                let url = format!(
                    "{}://{}{}",
                    if self.https { "https" } else { "http" },
                    self.authority,
                    self.path(interface, function)
                );
                http::post(self, &self.path(interface, function), &body).map_err(|e| {
                    Failure::Unavailable(format!("the capability gateway at {url}: {e}"))
                })
            })
            .and_then(|(status, answer)| interpret(&what, status, &answer));
        result.map_err(|f| self.scrub(f, secrets))
    }

    /// Takes the credential and `secrets` out of a failure's message.
    fn scrub(&self, failure: Failure, secrets: &[&str]) -> Failure {
        let clean = |m: String| {
            std::iter::once(self.credential.as_str())
                .chain(secrets.iter().copied())
                .filter(|s| !s.is_empty())
                .fold(m, |m, s| m.replace(s, "<redacted>"))
        };
        match failure {
            Failure::Refused(m) => Failure::Refused(clean(m)),
            Failure::Unavailable(m) => Failure::Unavailable(clean(m)),
        }
    }
}

/// One call with the gateway of the component variables: [`Gateway::call`].
pub fn call<R: DeserializeOwned>(
    interface: &str,
    function: &str,
    body: &impl Serialize,
    secrets: &[&str],
) -> Result<R, Failure> {
    Gateway::from_variables()?.call(interface, function, body, secrets)
}

/// A component variable, or why there is none.
fn variable(name: &str) -> Result<String, Failure> {
    use variables::Error;
    variables::get(name).map_err(|e| {
        let why = match e {
            Error::Undefined(_) => "is not set".to_string(),
            Error::InvalidName(m) | Error::Provider(m) | Error::Other(m) => {
                format!("cannot be read: {m}")
            }
        };
        Failure::Unavailable(format!(
            "the component variable {name} {why}: declare it in the component's variables and \
             set SPIN_VARIABLE_{} (`s3m gateway env --component <id>` prints it)",
            name.to_ascii_uppercase()
        ))
    })
}

/// An error of the gateway itself, before any function ran.
#[derive(Deserialize)]
struct GatewayError {
    gateway_error: String,
}

/// What an answer of `what` with `status` and `body` means.
pub fn interpret<R: DeserializeOwned>(what: &str, status: u16, body: &[u8]) -> Result<R, Failure> {
    if let Ok(GatewayError { gateway_error }) = serde_json::from_slice(body) {
        let message = format!("the capability gateway refused {what} ({status}): {gateway_error}");
        return Err(match status {
            401 | 403 => Failure::Refused(message),
            _ => Failure::Unavailable(message),
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        let kind = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            "JSON that is not the function's answer"
        } else {
            "a body that is not JSON"
        };
        let message =
            format!("the capability gateway answered {what} with {status} and {kind} ({e})");
        match status {
            401 | 403 => Failure::Refused(message),
            _ => Failure::Unavailable(message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let g = Gateway::new("http://127.0.0.1:3001", "c".into()).unwrap();
        assert_eq!((g.https, g.authority.as_str()), (false, "127.0.0.1:3001"));
        assert_eq!(
            g.path("scheduler", "list-jobs"),
            "/gateway/v1/scheduler/list-jobs"
        );
        let g = Gateway::new("https://gw.example:8443/s3m/", "c".into()).unwrap();
        assert!(g.https);
        assert_eq!(g.path("brokers", "get"), "/s3m/gateway/v1/brokers/get");
        for bad in [
            "127.0.0.1:3001",
            "ftp://x",
            "http://",
            "http://u:p@x",
            "http://x/?q",
        ] {
            assert!(
                matches!(Gateway::new(bad, "c".into()), Err(Failure::Unavailable(_))),
                "{bad}"
            );
        }
        assert!(Gateway::new("http://x", " ".into()).is_err());
        let debug = format!(
            "{:?}",
            Gateway::new("http://x", "s3m-gw1.a.SECRET".into()).unwrap()
        );
        assert!(!debug.contains("SECRET"), "{debug}");
    }

    #[test]
    fn answers() {
        type R = Result<u32, String>;
        assert_eq!(interpret::<R>("f", 200, br#"{"Ok": 3}"#), Ok(Ok(3)));
        // A result holding an error comes with the error's status.
        assert_eq!(
            interpret::<R>("f", 404, br#"{"Err": "no"}"#),
            Ok(Err("no".into()))
        );
        let refused = interpret::<R>("s/f", 401, br#"{"gateway_error": "no credential"}"#);
        assert_eq!(
            refused,
            Err(Failure::Refused(
                "the capability gateway refused s/f (401): no credential".into()
            ))
        );
        assert!(matches!(
            interpret::<R>("f", 403, br#"{"gateway_error": "not granted"}"#),
            Err(Failure::Refused(_))
        ));
        for status in [400, 404, 405, 413] {
            assert!(matches!(
                interpret::<R>("f", status, br#"{"gateway_error": "x"}"#),
                Err(Failure::Unavailable(_))
            ));
        }
        let Err(Failure::Unavailable(m)) = interpret::<R>("f", 502, b"<html>Bad gateway</html>")
        else {
            panic!()
        };
        assert!(m.contains("not JSON") && m.contains("502"), "{m}");
        let Err(Failure::Unavailable(m)) = interpret::<R>("f", 200, br#"{"Ok": "three"}"#) else {
            panic!()
        };
        assert!(m.contains("not the function's answer"), "{m}");
    }

    #[test]
    fn scrubbed() {
        let g = Gateway::new("http://x", "s3m-gw1.c.MAC".into()).unwrap();
        let f = Failure::Unavailable("saw s3m-gw1.c.MAC and tok3n".into());
        assert_eq!(
            g.scrub(f, &["tok3n", ""]).message(),
            "saw <redacted> and <redacted>"
        );
    }
}
