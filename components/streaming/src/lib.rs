//! Streaming: Redis and RabbitMQ clusters provisioned for a project, under
//! `/olcf/open/v1alpha/streaming` (and the legacy `/olcf/v1alpha/streaming`).
//! Every route needs the `data-streaming` permission; a project sees only
//! its own clusters (another project's reads 404).
//!
//! This room checks the request against what `list_backends` offers and
//! shapes the JSON; the `brokers` capability of the host starts, checks,
//! times and stops the clusters (and checks the settings once more).
//! Passwords appear only in the answers of provision and get.

use std::collections::BTreeMap;

use s3m_guest::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use s3m_guest::{authenticate, cut, json, route_path, ApiError};
use serde::Serialize;
use serde_json::Value;
use spin_sdk::http_component;

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        world: "s3m:facility/streaming",
        path: "../../wit",
        runtime_path: "spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

use bindings::s3m::facility::brokers::{
    self, Backend, BrokerError, Cluster, ClusterSpec, ClusterSummary, Engine, FeatureFlagSetting,
    HealthStatus, Lifetime, ResourceSetting, SyncStatus,
};
use bindings::s3m::facility::types::Caller;

const BASES: [&str; 2] = ["/olcf/open/v1alpha/streaming", "/olcf/v1alpha/streaming"];
const PERMISSION: &str = "data-streaming";

// ---- routes ----

enum Route<'a> {
    ListBackends,
    Provision(Engine),
    ListClusters(Engine),
    Cluster(Engine, &'a str),
    Extend(Engine, &'a str),
}

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    s3m_guest::http::serve(req, out, route);
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = route_path(req);
    let rest = BASES
        .iter()
        .find_map(|b| {
            path.strip_prefix(b)
                .filter(|r| r.is_empty() || r.starts_with('/'))
        })
        .ok_or_else(|| ApiError::no_route(&path))?;
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let (route, methods): (Route, &[&str]) = match parts.as_slice() {
        ["list_backends"] => (Route::ListBackends, &["GET"]),
        [engine, "provision_cluster"] => (Route::Provision(engine_of(engine, &path)?), &["POST"]),
        [engine, "list_clusters"] => (Route::ListClusters(engine_of(engine, &path)?), &["GET"]),
        [engine, "cluster", name] => (
            Route::Cluster(engine_of(engine, &path)?, name),
            &["GET", "DELETE"],
        ),
        [engine, "extend", name] => (Route::Extend(engine_of(engine, &path)?, name), &["POST"]),
        _ => return Err(ApiError::no_route(&path)),
    };
    let method = req.method().to_string();
    if !methods.contains(&method.as_str()) {
        return Err(ApiError::wrong_method(req.method(), &path, methods));
    }
    let principal = authenticate(req)?;
    principal.require(PERMISSION)?;
    let caller = Caller {
        project: principal.project.clone(),
        username: principal.username.clone(),
        token: principal.token.clone(),
    };
    match route {
        Route::ListBackends => Ok(json(&BackendsAnswer {
            backends: brokers::backends(&caller)
                .iter()
                .map(backend_json)
                .collect(),
        })),
        Route::Provision(engine) => provision(&caller, engine, req.body()),
        Route::ListClusters(engine) => {
            let clusters = brokers::list(&caller, engine).map_err(broker_error)?;
            Ok(json(&ClustersAnswer {
                clusters: clusters.iter().map(summary_json).collect(),
            }))
        }
        Route::Cluster(engine, name) => {
            check_name(name)?;
            if *req.method() == Method::Delete {
                brokers::delete(&caller, engine, name).map_err(broker_error)?;
                Ok(json(&SuccessAnswer { success: true }))
            } else {
                let cluster = brokers::get(&caller, engine, name).map_err(broker_error)?;
                Ok(json(&ClusterAnswer {
                    cluster: cluster_json(&cluster),
                }))
            }
        }
        Route::Extend(engine, name) => {
            check_name(name)?;
            let lifetime = brokers::extend(&caller, engine, name).map_err(broker_error)?;
            Ok(json(&LifetimeAnswer {
                lifetime: lifetime_json(&lifetime),
            }))
        }
    }
}

fn engine_of(s: &str, path: &str) -> Result<Engine, ApiError> {
    match s {
        "redis" => Ok(Engine::Redis),
        "rabbitmq" => Ok(Engine::Rabbitmq),
        other => Err(ApiError::not_found(format!(
            "no endpoint at {}: the engine {:?} is not offered; use redis or rabbitmq",
            cut(path),
            cut(other)
        ))),
    }
}

fn engine_name(e: Engine) -> &'static str {
    match e {
        Engine::Redis => "redis",
        Engine::Rabbitmq => "rabbitmq",
    }
}

fn broker_error(e: BrokerError) -> ApiError {
    match e {
        BrokerError::InvalidSettings(m) => ApiError::bad_request(m),
        BrokerError::AlreadyExists(m) => ApiError::already_exists(m),
        BrokerError::NotFound(m) => ApiError::not_found(m),
        BrokerError::Unavailable(m) => ApiError::unavailable(m),
        BrokerError::Permission(m) => ApiError::permission_denied(m),
    }
}

/// An RFC 1123 label of at most 40 characters.
fn check_name(name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 40
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "name: {:?} is not an RFC 1123 label of at most 40 characters \
             (lower-case letters, digits and '-', starting and ending with a letter or digit)",
            cut(name)
        )))
    }
}

// ---- provision ----

/// Checks the body against the backends offered, then asks the host.
fn provision(caller: &Caller, engine: Engine, body: &[u8]) -> Result<Response, ApiError> {
    let spec = parse_spec(engine, body, &brokers::backends(caller))?;
    let credentials = brokers::provision(caller, &spec).map_err(broker_error)?;
    Ok(match engine {
        Engine::Redis => json(&RedisCredentials {
            username: credentials.username,
            password: credentials.password,
            url: credentials.url,
        }),
        Engine::Rabbitmq => json(&RabbitmqCredentials {
            username: credentials.username,
            password: credentials.password,
            amqps_url: credentials.url,
            mgmt_url: credentials.mgmt_url,
        }),
    })
}

fn parse_spec(engine: Engine, body: &[u8], backends: &[Backend]) -> Result<ClusterSpec, ApiError> {
    let e = engine_name(engine);
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request(format!(
            "body: not valid JSON ({err}); send {{\"kind\": \"general\", \"name\": \"mycluster\", \
             \"resourceSettings\": {{}}, \"featureFlags\": {{}}}}"
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request("body: must be a JSON object"));
    };
    for key in fields.keys() {
        if !["kind", "name", "resourceSettings", "featureFlags"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{}: unknown field; the fields are kind, name, resourceSettings, featureFlags",
                cut(key)
            )));
        }
    }
    let offered: Vec<&Backend> = backends.iter().filter(|b| b.engine == engine).collect();
    let kinds: Vec<&str> = offered.iter().map(|b| b.kind.as_str()).collect();
    let kind = match fields.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(format!(
                "kind: required; {e} offers {kinds:?}"
            )))
        }
        Some(_) => return Err(ApiError::bad_request("kind: must be a string")),
    };
    let Some(backend) = offered.iter().find(|b| b.kind == kind) else {
        return Err(ApiError::bad_request(format!(
            "kind: {:?} is not offered for {e}; GET list_backends offers {kinds:?}",
            cut(kind)
        )));
    };
    let name = match fields.get("name") {
        Some(Value::String(n)) => n.as_str(),
        None | Some(Value::Null) => return Err(ApiError::bad_request("name: required")),
        Some(_) => return Err(ApiError::bad_request("name: must be a string")),
    };
    check_name(name)?;
    let mut resource_settings = Vec::new();
    match fields.get("resourceSettings") {
        None | Some(Value::Null) => {}
        Some(Value::Object(settings)) => {
            for (key, value) in settings {
                let field = format!("resourceSettings.{}", cut(key));
                if e == "redis"
                    && key == "nodes"
                    && !backend.resource_options.iter().any(|o| o.key == "nodes")
                {
                    // OLCF's documentation: Redis is one node; more is
                    // refused in its words.
                    if value.as_u64() == Some(1) {
                        continue;
                    }
                    return Err(ApiError::bad_request(format!(
                        "{field}: Multi-node Redis clusters are not currently supported."
                    )));
                }
                let Some(option) = backend.resource_options.iter().find(|o| &o.key == key) else {
                    let keys: Vec<&str> = backend
                        .resource_options
                        .iter()
                        .map(|o| o.key.as_str())
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{field}: {e} {kind} takes only {keys:?}"
                    )));
                };
                let number = value.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::bad_request(format!("{field}: must be a whole number greater than 0"))
                })?;
                if number < u64::from(option.min) || number > u64::from(option.max) {
                    return Err(ApiError::bad_request(format!(
                        "{field}: {number} is outside {}..{}",
                        option.min, option.max
                    )));
                }
                resource_settings.push(ResourceSetting {
                    key: key.clone(),
                    value: number as u32,
                });
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "resourceSettings: must be an object, e.g. {\"cpus\": 1}",
            ))
        }
    }
    let mut feature_flags = Vec::new();
    match fields.get("featureFlags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(flags)) => {
            for (key, value) in flags {
                let field = format!("featureFlags.{}", cut(key));
                if !backend.feature_flags.iter().any(|f| &f.key == key) {
                    let keys: Vec<&str> = backend
                        .feature_flags
                        .iter()
                        .map(|f| f.key.as_str())
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{field}: {e} {kind} takes only {keys:?}"
                    )));
                }
                let enabled = value.as_bool().ok_or_else(|| {
                    ApiError::bad_request(format!("{field}: must be true or false"))
                })?;
                feature_flags.push(FeatureFlagSetting {
                    key: key.clone(),
                    enabled,
                });
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "featureFlags: must be an object, e.g. {}",
            ))
        }
    }
    Ok(ClusterSpec {
        engine,
        kind: kind.to_string(),
        name: name.to_string(),
        resource_settings,
        feature_flags,
    })
}

// ---- wire shapes ----

#[derive(Serialize)]
struct BackendsAnswer {
    backends: Vec<BackendJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackendJson {
    engine: &'static str,
    kind: String,
    description: String,
    resource_options: Vec<ResourceOptionJson>,
    feature_flags: Vec<FeatureFlagJson>,
}

#[derive(Serialize)]
struct ResourceOptionJson {
    key: String,
    description: String,
    min: u32,
    max: u32,
    default: u32,
}

#[derive(Serialize)]
struct FeatureFlagJson {
    key: String,
    description: String,
    default: bool,
}

#[derive(Serialize)]
struct RedisCredentials {
    username: String,
    password: String,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RabbitmqCredentials {
    username: String,
    password: String,
    amqps_url: String,
    mgmt_url: Option<String>,
}

#[derive(Serialize)]
struct ClustersAnswer {
    clusters: Vec<SummaryJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryJson {
    kind: String,
    name: String,
    sync_status: &'static str,
    health_status: &'static str,
    lifetime: LifetimeJson,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LifetimeJson {
    provisioned_at: String,
    extended_at: Option<String>,
    seconds_lifetime: u64,
    seconds_remaining: u64,
}

#[derive(Serialize)]
struct ClusterAnswer {
    cluster: ClusterJson,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterJson {
    #[serde(flatten)]
    summary: SummaryJson,
    resource_settings: BTreeMap<String, u32>,
    username: String,
    password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    amqps_url: Option<String>,
    /// Written for RabbitMQ clusters only (null without the management plugin).
    #[serde(skip_serializing_if = "Option::is_none")]
    mgmt_url: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    /// Redis: where the server listens, in the structured form S3M's
    /// published Python client reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<EndpointsJson>,
    /// RabbitMQ: the same for the broker (and its management API).
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_endpoints: Option<EndpointsJson>,
    feature_flags: BTreeMap<String, bool>,
}

#[derive(Serialize)]
struct EndpointsJson {
    addresses: Vec<String>,
    ports: BTreeMap<String, u16>,
}

fn endpoints(url: &str, name: &str, mgmt: Option<&str>) -> Option<EndpointsJson> {
    let (host, port) = s3m_wire::url::host_port(url)?;
    let mut ports = BTreeMap::from([(name.to_string(), port)]);
    if let Some((_, p)) = mgmt.and_then(s3m_wire::url::host_port) {
        ports.insert("management".into(), p);
    }
    Some(EndpointsJson {
        addresses: vec![host],
        ports,
    })
}

#[derive(Serialize)]
struct SuccessAnswer {
    success: bool,
}

#[derive(Serialize)]
struct LifetimeAnswer {
    lifetime: LifetimeJson,
}

fn backend_json(b: &Backend) -> BackendJson {
    BackendJson {
        engine: engine_name(b.engine),
        kind: b.kind.clone(),
        description: b.description.clone(),
        resource_options: b
            .resource_options
            .iter()
            .map(|o| ResourceOptionJson {
                key: o.key.clone(),
                description: o.description.clone(),
                min: o.min,
                max: o.max,
                default: o.default,
            })
            .collect(),
        feature_flags: b
            .feature_flags
            .iter()
            .map(|f| FeatureFlagJson {
                key: f.key.clone(),
                description: f.description.clone(),
                default: f.default,
            })
            .collect(),
    }
}

fn lifetime_json(l: &Lifetime) -> LifetimeJson {
    LifetimeJson {
        provisioned_at: l.provisioned_at.clone(),
        extended_at: l.extended_at.clone(),
        seconds_lifetime: l.seconds_lifetime,
        seconds_remaining: l.seconds_remaining,
    }
}

fn summary_json(s: &ClusterSummary) -> SummaryJson {
    SummaryJson {
        kind: s.kind.clone(),
        name: s.name.clone(),
        sync_status: match s.sync_status {
            SyncStatus::Provisioning => "provisioning",
            SyncStatus::Synced => "synced",
            SyncStatus::Failed => "failed",
        },
        health_status: match s.health_status {
            HealthStatus::Provisioning => "provisioning",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        },
        lifetime: lifetime_json(&s.lifetime),
    }
}

fn cluster_json(c: &Cluster) -> ClusterJson {
    let rabbit = c.summary.engine == Engine::Rabbitmq;
    ClusterJson {
        summary: summary_json(&c.summary),
        resource_settings: c
            .resource_settings
            .iter()
            .map(|s| (s.key.clone(), s.value))
            .collect(),
        username: c.credentials.username.clone(),
        password: c.credentials.password.clone(),
        amqps_url: rabbit.then(|| c.credentials.url.clone()),
        mgmt_url: rabbit.then(|| c.credentials.mgmt_url.clone()),
        redis_url: (!rabbit).then(|| c.credentials.url.clone()),
        endpoints: if rabbit {
            None
        } else {
            endpoints(&c.credentials.url, "redis", None)
        },
        broker_endpoints: if rabbit {
            endpoints(
                &c.credentials.url,
                "amqp",
                c.credentials.mgmt_url.as_deref(),
            )
        } else {
            None
        },
        feature_flags: c
            .feature_flags
            .iter()
            .map(|f| (f.key.clone(), f.enabled))
            .collect(),
    }
}
