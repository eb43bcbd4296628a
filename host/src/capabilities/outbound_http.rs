//! Outbound `wasi:http`: a component may reach only the hosts its manifest
//! lists in `allowed_outbound_hosts`; everything else is refused before any
//! connection is made.

use std::sync::Arc;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

/// One entry of `allowed_outbound_hosts`, e.g. `http://127.0.0.1:6820`,
/// `https://*.example.org`, `http://localhost:*`, `*://*:*`.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: String,
    host: String,
    port: String,
}

impl AllowedHost {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            anyhow::anyhow!(
                "allowed_outbound_hosts entry {s:?} needs a scheme, e.g. \"https://{s}\""
            )
        })?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (h.to_string(), p.to_string()),
            _ => (
                rest.to_string(),
                match scheme {
                    "http" => "80".into(),
                    "https" => "443".into(),
                    _ => "*".into(),
                },
            ),
        };
        if host.is_empty() || rest.contains('/') {
            anyhow::bail!("allowed_outbound_hosts entry {s:?} is not scheme://host[:port]");
        }
        Ok(Self {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let host_ok = self.host == "*"
            || self.host.eq_ignore_ascii_case(host)
            || self
                .host
                .strip_prefix("*.")
                .is_some_and(|suffix| host.to_ascii_lowercase().ends_with(&format!(".{suffix}")));
        let port_ok = self.port == "*" || self.port == port.to_string();
        scheme_ok && host_ok && port_ok
    }
}

/// The per-request wasi:http hooks: the allow-list check, then the default
/// sender.
#[derive(Clone, Default)]
pub struct OutboundHooks {
    pub allowed: Arc<Vec<AllowedHost>>,
}

impl OutboundHooks {
    pub fn is_allowed(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let Some(host) = uri.host() else { return false };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.allowed.iter().any(|a| a.allows(scheme, host, port))
    }
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        if !self.is_allowed(request.uri()) {
            tracing::warn!(uri = %request.uri(), "outbound request refused: host not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(entries: &[&str]) -> OutboundHooks {
        OutboundHooks {
            allowed: Arc::new(
                entries
                    .iter()
                    .map(|e| AllowedHost::parse(e).unwrap())
                    .collect(),
            ),
        }
    }

    #[test]
    fn allow_list() {
        let h = hooks(&["http://127.0.0.1:6820", "https://*.example.org"]);
        assert!(h.is_allowed(&"http://127.0.0.1:6820/slurm".parse().unwrap()));
        assert!(!h.is_allowed(&"http://127.0.0.1:6821/".parse().unwrap()));
        assert!(!h.is_allowed(&"https://127.0.0.1:6820/".parse().unwrap()));
        assert!(h.is_allowed(&"https://api.example.org/x".parse().unwrap()));
        assert!(!h.is_allowed(&"https://example.org.evil.com/".parse().unwrap()));
        assert!(!hooks(&[]).is_allowed(&"http://localhost/".parse().unwrap()));
        assert!(hooks(&["http://localhost:*"]).is_allowed(&"http://localhost:9/".parse().unwrap()));
        assert!(AllowedHost::parse("127.0.0.1").is_err());
    }
}
