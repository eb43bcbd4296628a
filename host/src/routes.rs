//! HTTP route matching with Spin's rules:
//! - `/a/b` matches exactly that path (a trailing slash on the request is
//!   tolerated);
//! - `/a/:name` matches one segment and captures it as `name`;
//! - a trailing `/...` matches the prefix itself and anything under it;
//! - when several routes match, the most specific wins: more fixed segments
//!   first, then literal segments over `:name` ones, left to right, then an
//!   exact route over a wildcard one.
//!
//! Two routes with the same pattern are refused at start-up.

use anyhow::bail;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
struct Route {
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
    component: String,
}

/// What a request matched: the component and what Spin tells it in headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch<'a> {
    pub component: &'a str,
    /// The route as written in spin.toml (`spin-matched-route`).
    pub raw_route: &'a str,
    /// The route without its trailing `/...` (`spin-component-route`).
    pub component_route: String,
    /// The part of the path under a wildcard (`spin-path-info`).
    pub path_info: String,
    /// `:name` captures (`spin-path-match-<name>`).
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

impl Router {
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> anyhow::Result<Self> {
        let mut out: Vec<Route> = Vec::new();
        for (raw, component) in routes {
            if !raw.starts_with('/') {
                bail!("route {raw:?} must start with '/'");
            }
            let (body, wildcard) = match raw.strip_suffix("/...") {
                Some(b) => (b, true),
                None if raw == "/..." => ("", true),
                None => (raw, false),
            };
            let mut segments = Vec::new();
            for s in split(body) {
                if s == "..." {
                    bail!("route {raw:?}: `...` may only end a route, as `/...`");
                }
                if s.contains('*') || s.contains('{') || s.contains('}') {
                    bail!("route {raw:?}: unknown route syntax {s:?}; use `:name` for a segment and a trailing `/...` for a prefix");
                }
                match s.strip_prefix(':') {
                    Some("") => bail!("route {raw:?}: `:` needs a name"),
                    Some(name) => segments.push(Segment::Param(name.to_string())),
                    None => segments.push(Segment::Literal(s.to_string())),
                }
            }
            let route = Route {
                raw: raw.to_string(),
                segments,
                wildcard,
                component: component.to_string(),
            };
            if let Some(dup) = out.iter().find(|r| {
                shape(&r.segments) == shape(&route.segments) && r.wildcard == route.wildcard
            }) {
                bail!(
                    "duplicate route {raw:?} (component {component}) and {:?} (component {})",
                    dup.raw,
                    dup.component
                );
            }
            out.push(route);
        }
        // Most specific first, so the first match wins.
        out.sort_by_key(|r| std::cmp::Reverse(specificity(r)));
        Ok(Self { routes: out })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let parts = split(path);
        'routes: for r in &self.routes {
            let n = r.segments.len();
            if parts.len() < n || (!r.wildcard && parts.len() != n) {
                continue;
            }
            let mut params = Vec::new();
            for (seg, part) in r.segments.iter().zip(&parts) {
                match seg {
                    Segment::Literal(l) if l == part => {}
                    Segment::Literal(_) => continue 'routes,
                    Segment::Param(name) => params.push((name.clone(), part.to_string())),
                }
            }
            let path_info = if r.wildcard {
                let rest = parts[n..].join("/");
                if rest.is_empty() {
                    String::new()
                } else if path.ends_with('/') {
                    format!("/{rest}/")
                } else {
                    format!("/{rest}")
                }
            } else {
                String::new()
            };
            return Some(RouteMatch {
                component: &r.component,
                raw_route: &r.raw,
                component_route: r.raw.strip_suffix("/...").unwrap_or(&r.raw).to_string(),
                path_info,
                params,
            });
        }
        None
    }
}

/// A route's pattern with parameter names left out.
fn shape(segments: &[Segment]) -> Vec<Option<&str>> {
    segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => Some(l.as_str()),
            Segment::Param(_) => None,
        })
        .collect()
}

fn specificity(r: &Route) -> (usize, Vec<u8>, bool) {
    (
        r.segments.len(),
        r.segments
            .iter()
            .map(|s| matches!(s, Segment::Literal(_)) as u8)
            .collect(),
        !r.wildcard,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[(&str, &str)] = &[
        ("/...", "fallback"),
        ("/olcf/v1alpha/status/...", "status"),
        ("/olcf/v1alpha/status/downtimes", "downtimes-exact"),
        ("/slurm/open/:version/:resource/...", "compute"),
        ("/slurm/open/v0.0.42/special/...", "special"),
        ("/users/:id", "user"),
        ("/users/me", "me"),
        ("/a/b/c", "abc"),
    ];

    /// (request path, component, path-info, params)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );
    const CASES: &[Case] = &[
        ("/", "fallback", "", &[]),
        ("/anything/else", "fallback", "/anything/else", &[]),
        ("/olcf/v1alpha/status", "status", "", &[]),
        ("/olcf/v1alpha/status/", "status", "", &[]),
        ("/olcf/v1alpha/status/basalt", "status", "/basalt", &[]),
        ("/olcf/v1alpha/status/downtimes", "downtimes-exact", "", &[]),
        (
            "/olcf/v1alpha/status/downtimes/upcoming",
            "status",
            "/downtimes/upcoming",
            &[],
        ),
        (
            "/olcf/v1alpha/statusx",
            "fallback",
            "/olcf/v1alpha/statusx",
            &[],
        ),
        (
            "/slurm/open/v0.0.43/basalt/jobs",
            "compute",
            "/jobs",
            &[("version", "v0.0.43"), ("resource", "basalt")],
        ),
        ("/slurm/open/v0.0.42/special/jobs", "special", "/jobs", &[]),
        (
            "/slurm/open/v0.0.42",
            "fallback",
            "/slurm/open/v0.0.42",
            &[],
        ),
        ("/users/42", "user", "", &[("id", "42")]),
        ("/users/me", "me", "", &[]),
        ("/users/42/more", "fallback", "/users/42/more", &[]),
        ("/a/b/c", "abc", "", &[]),
        ("/a/b/c/", "abc", "", &[]),
        ("/a/b", "fallback", "/a/b", &[]),
    ];

    #[test]
    fn spin_matching_rules() {
        let router = Router::build(ROUTES.iter().copied()).unwrap();
        for (path, component, info, params) in CASES {
            let m = router
                .route(path)
                .unwrap_or_else(|| panic!("{path} matched nothing"));
            assert_eq!(m.component, *component, "path {path}");
            assert_eq!(m.path_info, *info, "path-info of {path}");
            let want: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(m.params, want, "params of {path}");
        }
    }

    #[test]
    fn no_fallback_means_no_match() {
        let router = Router::build([("/olcf/v1/token/...", "tokens")]).unwrap();
        assert!(router.route("/").is_none());
        assert!(router.route("/olcf/v1").is_none());
        let m = router.route("/olcf/v1/token/ctls/introspect").unwrap();
        assert_eq!(m.component_route, "/olcf/v1/token");
        assert_eq!(m.path_info, "/ctls/introspect");
    }

    #[test]
    fn refuses_bad_routes() {
        for bad in ["olcf", "/a/*", "/a/{id}", "/a/.../b", "/a/:"] {
            assert!(
                Router::build([(bad, "x")]).is_err(),
                "{bad} should be refused"
            );
        }
        let e = Router::build([("/a/...", "x"), ("/a/...", "y")]).unwrap_err();
        assert!(e.to_string().contains("duplicate route"));
        // Different parameter names are still the same pattern.
        assert!(Router::build([("/a/:x", "x"), ("/a/:y", "y")]).is_err());
    }
}
