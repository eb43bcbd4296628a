//! Kubernetes brokers: a RabbitMQ cluster is a `RabbitmqCluster` of the
//! RabbitMQ cluster operator (credentials from a Secret we write, given to
//! the operator as its external default-user secret); a Redis cluster is a
//! Secret, a StatefulSet and a Service. Objects are named
//! `s3m-<engine>-<project>-<name>` and labelled with project and cluster.
//!
//! Rendering is pure and unit-tested. Applying is server-side apply through
//! `[streaming.kubernetes] api_url` (e.g. `kubectl proxy`'s
//! http://127.0.0.1:8001, or an API server with `token_file`); without it the
//! rendered objects are written to `<state>/brokers/kubernetes/<id>.json` for
//! an operator to apply, and the cluster stays `provisioning`.
//!
//! The API is reached over HTTPS with rustls (or plain HTTP, for `kubectl
//! proxy` on loopback), verified against `ca_file` (else the system's
//! roots), with a bearer token (`token_file`, read at each call) or a
//! kubeconfig's current context (server, CA, token or client certificate).
//!
//! Why not kube-rs: this provider makes a handful of REST calls (server-side
//! apply, GET, DELETE) on four object kinds; kube-rs with k8s-openapi would
//! add about a hundred crates and minutes of build on the 2-core CI for
//! types we never use. What we give up is its kubeconfig inference beyond
//! the fields read here (exec and auth-provider plugins): such a context
//! is refused with a message naming the fields that work.

use crate::capabilities::brokers::registry::{
    Backend, ClusterRecord, Engine, FeatureFlag, ResourceOption,
};
use crate::capabilities::brokers::{BrokerProvider, Health};
use anyhow::{bail, Context};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KubernetesConfig {
    /// Base URL of the Kubernetes API; none: render to files only.
    pub api_url: Option<String>,
    /// A bearer token for the API, read at each call.
    pub token_file: Option<PathBuf>,
    /// PEM bundle of the CAs the API server's certificate must chain to;
    /// none: the system's roots (or the kubeconfig's CA).
    pub ca_file: Option<PathBuf>,
    /// A kubeconfig whose current context gives the server, its CA and the
    /// credentials; `api_url`, `ca_file` and `token_file` override it.
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    /// `LoadBalancer` by default: clients sit outside the cluster.
    pub service_type: String,
    /// The DNS suffix clients reach services by; default `<namespace>.svc`.
    pub domain: Option<String>,
    pub redis_image: String,
    pub rabbitmq_image: String,
    pub storage_class: Option<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            api_url: None,
            token_file: None,
            ca_file: None,
            kubeconfig: None,
            namespace: "s3m-streaming".into(),
            service_type: "LoadBalancer".into(),
            domain: None,
            redis_image: "redis:7.2".into(),
            rabbitmq_image: "rabbitmq:3.13-management".into(),
            storage_class: None,
        }
    }
}

pub struct KubernetesBrokers {
    config: KubernetesConfig,
    render_dir: PathBuf,
    http: reqwest::Client,
    /// A kubeconfig's static token, when no `token_file` is set.
    token: Option<String>,
}

/// What a kubeconfig's current context gives.
#[derive(Default)]
struct KubeContext {
    server: Option<String>,
    ca_pem: Option<Vec<u8>>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    /// Client certificate and key, PEM, concatenated.
    identity_pem: Option<Vec<u8>>,
}

/// Reads the current context of a kubeconfig: its cluster's server and CA
/// (inline or a file, relative to the kubeconfig), its user's token, token
/// file or client certificate and key.
fn read_kubeconfig(path: &std::path::Path) -> anyhow::Result<KubeContext> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("the kubeconfig {} is not YAML", path.display()))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let named = |list: &str, name: &str, field: &str| -> Option<serde_yaml::Value> {
        doc.get(list)?
            .as_sequence()?
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name))?
            .get(field)
            .cloned()
    };
    let current = doc
        .get("current-context")
        .and_then(|c| c.as_str())
        .with_context(|| format!("the kubeconfig {} has no current-context", path.display()))?;
    let context = named("contexts", current, "context")
        .with_context(|| format!("the kubeconfig has no context {current:?}"))?;
    let field =
        |v: &serde_yaml::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let file = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let data =
        |v: &serde_yaml::Value, inline: &str, path: &str| -> anyhow::Result<Option<Vec<u8>>> {
            if let Some(b64) = field(v, inline) {
                return Ok(Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .with_context(|| format!("kubeconfig {inline} is not base64"))?,
                ));
            }
            match field(v, path) {
                Some(p) => {
                    let p = file(p);
                    Ok(Some(
                        std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
                    ))
                }
                None => Ok(None),
            }
        };
    let mut out = KubeContext::default();
    if let Some(cluster) = field(&context, "cluster").and_then(|c| named("clusters", &c, "cluster"))
    {
        if cluster
            .get("insecure-skip-tls-verify")
            .and_then(|v| v.as_bool())
            == Some(true)
        {
            anyhow::bail!("the kubeconfig's cluster skips TLS verification; give it its CA (certificate-authority-data) instead");
        }
        out.server = field(&cluster, "server");
        out.ca_pem = data(
            &cluster,
            "certificate-authority-data",
            "certificate-authority",
        )?;
    }
    if let Some(user) = field(&context, "user").and_then(|u| named("users", &u, "user")) {
        if user.get("exec").is_some() || user.get("auth-provider").is_some() {
            anyhow::bail!(
                "the kubeconfig's user authenticates through a plugin (exec or auth-provider), which s3m does not run; \
                 give it a token, tokenFile, or client-certificate(-data) and client-key(-data)"
            );
        }
        out.token = field(&user, "token");
        out.token_file = field(&user, "tokenFile").map(file);
        let cert = data(&user, "client-certificate-data", "client-certificate")?;
        let key = data(&user, "client-key-data", "client-key")?;
        if let (Some(mut cert), Some(key)) = (cert, key) {
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            out.identity_pem = Some(cert);
        }
    }
    Ok(out)
}

/// One object to apply: its API path (without name) and body.
#[derive(Debug, Clone)]
pub struct Object {
    pub collection: String,
    pub name: String,
    pub body: Value,
}

fn dns_part(s: &str) -> String {
    s.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// `s3m-<engine>-<project>-<name>`, cut to a 63-character DNS label.
pub fn object_name(r: &ClusterRecord) -> String {
    let mut n = format!(
        "s3m-{}-{}-{}",
        r.engine.as_str(),
        dns_part(&r.project),
        r.name
    );
    if n.len() > 52 {
        // Room for the operator's own suffixes; the id keeps it unique.
        n = format!("s3m-{}", &r.id[r.id.len() - 12..]);
    }
    n.trim_end_matches('-').to_string()
}

pub fn labels(r: &ClusterRecord) -> Value {
    json!({
        "app.kubernetes.io/name": r.engine.as_str(),
        "app.kubernetes.io/instance": object_name(r),
        "app.kubernetes.io/managed-by": "s3m",
        "s3m.olcf.ornl.gov/project": dns_part(&r.project),
        "s3m.olcf.ornl.gov/cluster": r.name,
        "s3m.olcf.ornl.gov/id": r.id,
    })
}

fn resources(r: &ClusterRecord) -> Value {
    let cpu = r.setting("cpus").to_string();
    let mem = format!("{}Gi", r.setting("ram-gbs"));
    json!({ "requests": { "cpu": cpu, "memory": mem }, "limits": { "cpu": cpu, "memory": mem } })
}

/// The objects a cluster is made of, in apply order.
pub fn render(config: &KubernetesConfig, r: &ClusterRecord) -> Vec<Object> {
    let name = object_name(r);
    let ns = &config.namespace;
    let meta = |n: &str| json!({ "name": n, "namespace": ns, "labels": labels(r) });
    let secret_name = format!("{name}-credentials");
    let core = format!("/api/v1/namespaces/{ns}");
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": meta(&secret_name), "type": "Opaque",
        "stringData": { "username": r.username, "password": r.password },
    });
    match r.engine {
        Engine::Rabbitmq => {
            // The operator's default-user secret format.
            secret["stringData"]["default_user.conf"] = json!(format!(
                "default_user = {}\ndefault_pass = {}\n",
                r.username, r.password
            ));
            secret["stringData"]["provider"] = json!("rabbitmq");
            secret["stringData"]["type"] = json!("rabbitmq");
            let mut persistence =
                json!({ "storage": format!("{}Gi", r.setting("ram-gbs").max(1) * 2) });
            if let Some(sc) = &config.storage_class {
                persistence["storageClassName"] = json!(sc);
            }
            let cluster = json!({
                "apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster", "metadata": meta(&name),
                "spec": {
                    "replicas": r.setting("nodes"),
                    "image": config.rabbitmq_image,
                    "resources": resources(r),
                    "service": { "type": config.service_type },
                    "persistence": persistence,
                    "secretBackend": { "externalSecret": { "name": secret_name } },
                    "rabbitmq": { "additionalPlugins": if r.flag("management") { json!(["rabbitmq_management"]) } else { json!([]) } },
                },
            });
            vec![
                Object {
                    collection: format!("{core}/secrets"),
                    name: secret_name,
                    body: secret,
                },
                Object {
                    collection: format!(
                        "/apis/rabbitmq.com/v1beta1/namespaces/{ns}/rabbitmqclusters"
                    ),
                    name,
                    body: cluster,
                },
            ]
        }
        Engine::Redis => {
            let selector = json!({ "app.kubernetes.io/instance": name });
            let mut args = vec![
                json!("--user"),
                json!("default"),
                json!("off"),
                json!("--user"),
                json!(r.username),
                json!("on"),
                json!("$(REDIS_ACL_PASSWORD)"),
                json!("~*"),
                json!("&*"),
                json!("+@all"),
                json!("--maxmemory"),
                json!(format!("{}gb", r.setting("ram-gbs"))),
                json!("--maxmemory-policy"),
                json!("noeviction"),
            ];
            if r.flag("persistence") {
                args.extend([
                    json!("--appendonly"),
                    json!("yes"),
                    json!("--dir"),
                    json!("/data"),
                ]);
            } else {
                args.extend([json!("--save"), json!("")]);
            }
            let mut statefulset = json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(&name),
                "spec": {
                    "serviceName": name, "replicas": 1,
                    "selector": { "matchLabels": selector },
                    "template": {
                        "metadata": { "labels": labels(r) },
                        "spec": { "containers": [{
                            "name": "redis", "image": config.redis_image,
                            "command": ["redis-server"], "args": args,
                            "env": [{ "name": "REDIS_ACL_PASSWORD", "valueFrom": {
                                "secretKeyRef": { "name": secret_name, "key": "acl-password" } } }],
                            "ports": [{ "name": "redis", "containerPort": 6379 }],
                            "resources": resources(r),
                            "readinessProbe": { "tcpSocket": { "port": 6379 }, "periodSeconds": 2 },
                        }] },
                    },
                },
            });
            if r.flag("persistence") {
                let mut claim = json!({ "metadata": { "name": "data" }, "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": format!("{}Gi", r.setting("ram-gbs") * 2) } } } });
                if let Some(sc) = &config.storage_class {
                    claim["spec"]["storageClassName"] = json!(sc);
                }
                statefulset["spec"]["volumeClaimTemplates"] = json!([claim]);
                statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
                    json!([{ "name": "data", "mountPath": "/data" }]);
            }
            secret["stringData"]["acl-password"] = json!(format!(">{}", r.password));
            let service = json!({
                "apiVersion": "v1", "kind": "Service", "metadata": meta(&name),
                "spec": { "type": config.service_type, "selector": selector,
                          "ports": [{ "name": "redis", "port": 6379, "targetPort": 6379 }] },
            });
            vec![
                Object {
                    collection: format!("{core}/secrets"),
                    name: secret_name,
                    body: secret,
                },
                Object {
                    collection: format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
                    name: name.clone(),
                    body: statefulset,
                },
                Object {
                    collection: format!("{core}/services"),
                    name,
                    body: service,
                },
            ]
        }
    }
}

impl KubernetesBrokers {
    pub fn new(mut config: KubernetesConfig, render_dir: PathBuf) -> anyhow::Result<Self> {
        let context = match &config.kubeconfig {
            Some(path) => read_kubeconfig(path)?,
            None => KubeContext::default(),
        };
        if config.api_url.is_none() {
            config.api_url = context.server.clone();
        }
        if config.token_file.is_none() {
            config.token_file = context.token_file.clone();
        }
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        let ca_pem = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("reading [streaming.kubernetes] ca_file {}", path.display())
            })?),
            None => context.ca_pem.clone(),
        };
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .context("the Kubernetes CA bundle is not PEM")?;
            if certs.is_empty() {
                anyhow::bail!("the Kubernetes CA bundle holds no certificate");
            }
            // Only these CAs: the API server's certificate is the cluster's own.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &context.identity_pem {
            builder = builder.identity(
                reqwest::Identity::from_pem(pem)
                    .context("the kubeconfig's client certificate and key are not PEM")?,
            );
        }
        let http = builder
            .build()
            .context("building the Kubernetes API client")?;
        Ok(Self {
            config,
            render_dir,
            http,
            token: context.token,
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let base = self
            .config
            .api_url
            .as_deref()
            .context("no [streaming.kubernetes] api_url")?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", base.trim_end_matches('/')));
        if let Some(file) = &self.config.token_file {
            let token = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            req = req.bearer_auth(token.trim());
        } else if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        Ok(req.timeout(Duration::from_secs(10)))
    }

    fn host(&self, r: &ClusterRecord) -> String {
        let domain = self
            .config
            .domain
            .clone()
            .unwrap_or_else(|| format!("{}.svc", self.config.namespace));
        format!("{}.{domain}", object_name(r))
    }
}

#[async_trait]
impl BrokerProvider for KubernetesBrokers {
    fn backends(&self) -> Vec<Backend> {
        let opt = |key, description: &str, max, default| ResourceOption {
            key,
            description: description.into(),
            min: 1,
            max,
            default,
        };
        vec![
            Backend {
                engine: Engine::Redis,
                kind: "general".into(),
                description: "A Redis StatefulSet with its own user and password".into(),
                resource_options: vec![
                    opt("cpus", "CPU cores", 16, 1),
                    opt("ram-gbs", "Memory in GiB", 64, 2),
                ],
                feature_flags: vec![FeatureFlag {
                    key: "persistence",
                    description: "Append-only file on a volume".into(),
                    default: false,
                }],
            },
            Backend {
                engine: Engine::Rabbitmq,
                kind: "general".into(),
                description: "A RabbitmqCluster of the RabbitMQ cluster operator".into(),
                resource_options: vec![
                    opt("cpus", "CPU cores per node", 16, 1),
                    opt("ram-gbs", "Memory per node in GiB", 64, 2),
                    opt("nodes", "RabbitMQ nodes", 5, 1),
                ],
                feature_flags: vec![FeatureFlag {
                    key: "management",
                    description: "Management UI at mgmtUrl".into(),
                    default: true,
                }],
            },
        ]
    }

    async fn start(&self, r: &mut ClusterRecord) -> anyhow::Result<()> {
        let objects = render(&self.config, r);
        let host = self.host(r);
        match r.engine {
            Engine::Redis => r.url = format!("redis://{}:{}@{host}:6379", r.username, r.password),
            Engine::Rabbitmq => {
                r.url = format!("amqp://{}:{}@{host}:5672", r.username, r.password);
                r.mgmt_url = r
                    .flag("management")
                    .then(|| format!("http://{host}:15672/"));
            }
        }
        r.endpoint = json!({ "objects": objects.iter().map(|o| format!("{}/{}", o.collection, o.name)).collect::<Vec<_>>() });
        if self.config.api_url.is_none() {
            std::fs::create_dir_all(&self.render_dir)?;
            let path = self.render_dir.join(format!("{}.json", r.id));
            let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects.iter().map(|o| &o.body).collect::<Vec<_>>() });
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            std::io::Write::write_all(&mut f, serde_json::to_string_pretty(&list)?.as_bytes())?;
            return Ok(());
        }
        for o in &objects {
            let resp = self
                .request(
                    reqwest::Method::PATCH,
                    &format!("{}/{}?fieldManager=s3m&force=true", o.collection, o.name),
                )?
                .header("Content-Type", "application/apply-patch+yaml")
                .body(serde_json::to_vec(&o.body)?)
                .send()
                .await
                .map_err(|e| {
                    let mut why = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(inner) = source {
                        why.push_str(&inner.to_string());
                        source = inner.source();
                    }
                    let hint = if why.contains("certificate") {
                        " (its certificate is not trusted: set [streaming.kubernetes] ca_file, or a kubeconfig with its CA)"
                    } else {
                        ""
                    };
                    anyhow::Error::new(e).context(format!("the Kubernetes API did not answer{hint}"))
                })?;
            if !resp.status().is_success() {
                bail!(
                    "applying {}/{}: Kubernetes answered {}",
                    o.collection,
                    o.name,
                    resp.status()
                );
            }
        }
        Ok(())
    }

    async fn health(&self, r: &ClusterRecord) -> Health {
        if self.config.api_url.is_none() {
            return Health::Starting;
        }
        let name = object_name(r);
        let ns = &self.config.namespace;
        let path = match r.engine {
            Engine::Redis => format!("/apis/apps/v1/namespaces/{ns}/statefulsets/{name}"),
            Engine::Rabbitmq => {
                format!("/apis/rabbitmq.com/v1beta1/namespaces/{ns}/rabbitmqclusters/{name}")
            }
        };
        let Ok(req) = self.request(reqwest::Method::GET, &path) else {
            return Health::Starting;
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(_) => return Health::Unhealthy("the Kubernetes API did not answer".into()),
        };
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Health::Gone;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return Health::Unhealthy("bad answer".into());
        };
        ready(r.engine, &body)
    }

    async fn stop(&self, r: &ClusterRecord) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.render_dir.join(format!("{}.json", r.id)));
        if self.config.api_url.is_none() {
            return Ok(());
        }
        for o in render(&self.config, r).iter().rev() {
            let resp = self
                .request(
                    reqwest::Method::DELETE,
                    &format!("{}/{}", o.collection, o.name),
                )?
                .send()
                .await?;
            if !resp.status().is_success() && resp.status() != reqwest::StatusCode::NOT_FOUND {
                bail!(
                    "deleting {}/{}: Kubernetes answered {}",
                    o.collection,
                    o.name,
                    resp.status()
                );
            }
        }
        Ok(())
    }

    /// Kubernetes keeps its objects across host restarts: everything recorded is adopted.
    async fn reconcile(&self, records: &[ClusterRecord]) -> anyhow::Result<Vec<String>> {
        Ok(records.iter().map(|r| r.id.clone()).collect())
    }

    fn start_timeout(&self, _engine: Engine) -> Duration {
        Duration::from_secs(600)
    }
}

/// Reads readiness from a StatefulSet's or RabbitmqCluster's status.
pub fn ready(engine: Engine, body: &Value) -> Health {
    match engine {
        Engine::Redis => {
            let want = body["spec"]["replicas"].as_u64().unwrap_or(1);
            let have = body["status"]["readyReplicas"].as_u64().unwrap_or(0);
            if have >= want {
                Health::Healthy
            } else {
                Health::Starting
            }
        }
        Engine::Rabbitmq => {
            let all_ready = body["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "AllReplicasReady" && c["status"] == "True")
            });
            if all_ready {
                Health::Healthy
            } else {
                Health::Starting
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::brokers::registry::{HealthStatus, SyncStatus};
    use std::collections::BTreeMap;

    fn record(engine: Engine, project: &str, name: &str) -> ClusterRecord {
        ClusterRecord {
            id: format!("{}-0123456789abcdef0123456789abcdef", engine.as_str()),
            project: project.into(),
            engine,
            kind: "general".into(),
            name: name.into(),
            resource_settings: BTreeMap::from([
                ("cpus".into(), 2),
                ("ram-gbs".into(), 4),
                ("nodes".into(), 3),
            ]),
            feature_flags: BTreeMap::from([
                ("management".into(), true),
                ("persistence".into(), true),
            ]),
            username: format!("s3m-{name}"),
            password: "p4ss".into(),
            url: String::new(),
            mgmt_url: None,
            endpoint: Value::Null,
            provisioned_at: chrono::Utc::now(),
            extended_at: None,
            lifetime_seconds: 60,
            sync_status: SyncStatus::Provisioning,
            health_status: HealthStatus::Provisioning,
            runner: None,
        }
    }

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn rabbitmq_is_a_rabbitmqcluster_with_our_secret() {
        let cfg = KubernetesConfig::default();
        let objs = render(&cfg, &record(Engine::Rabbitmq, "STF040", "events"));
        assert_eq!(objs.len(), 2);
        let (secret, cluster) = (&objs[0].body, &objs[1].body);
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(cluster["apiVersion"], "rabbitmq.com/v1beta1");
        assert_eq!(cluster["kind"], "RabbitmqCluster");
        assert_eq!(cluster["metadata"]["name"], "s3m-rabbitmq-stf040-events");
        assert_eq!(cluster["metadata"]["namespace"], "s3m-streaming");
        assert_eq!(cluster["spec"]["replicas"], 3);
        assert_eq!(cluster["spec"]["resources"]["limits"]["memory"], "4Gi");
        assert_eq!(cluster["spec"]["resources"]["requests"]["cpu"], "2");
        assert_eq!(
            cluster["spec"]["secretBackend"]["externalSecret"]["name"],
            secret["metadata"]["name"]
        );
        assert_eq!(secret["stringData"]["username"], "s3m-events");
        assert!(secret["stringData"]["default_user.conf"]
            .as_str()
            .unwrap()
            .contains("default_pass = p4ss"));
        // The password lives only in the Secret.
        assert!(!cluster.to_string().contains("p4ss"));
        for o in &objs {
            let name = o.body["metadata"]["name"].as_str().unwrap();
            assert!(is_dns_label(name), "{name}");
            assert_eq!(o.name, name);
            assert_eq!(
                o.body["metadata"]["labels"]["s3m.olcf.ornl.gov/project"],
                "stf040"
            );
            assert_eq!(
                o.body["metadata"]["labels"]["s3m.olcf.ornl.gov/cluster"],
                "events"
            );
            assert!(
                o.collection.starts_with('/')
                    && o.collection.contains("/namespaces/s3m-streaming/")
            );
        }
    }

    #[test]
    fn redis_is_a_secret_a_statefulset_and_a_service() {
        let cfg = KubernetesConfig {
            storage_class: Some("fast".into()),
            ..Default::default()
        };
        let objs = render(&cfg, &record(Engine::Redis, "STF040", "cache"));
        let kinds: Vec<&str> = objs
            .iter()
            .map(|o| o.body["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Secret", "StatefulSet", "Service"]);
        let sts = &objs[1].body;
        let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
        for (k, v) in sts["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                &pod_labels[k], v,
                "the selector must match the pod template"
            );
            assert_eq!(
                &objs[2].body["spec"]["selector"][k], v,
                "the service must select the pods"
            );
        }
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["memory"], "4Gi");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(args.windows(2).any(|w| w == ["--maxmemory", "4gb"]));
        assert!(args.contains(&"s3m-cache"));
        assert!(
            !sts.to_string().contains("p4ss"),
            "the password comes from the Secret"
        );
        assert_eq!(
            c["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            objs[0].body["metadata"]["name"]
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
            "fast"
        );
        assert_eq!(objs[2].body["spec"]["ports"][0]["port"], 6379);
        assert_eq!(
            objs[2].body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "s3m"
        );
    }

    #[test]
    fn projects_get_distinct_names_and_long_names_stay_labels() {
        let a = object_name(&record(Engine::Redis, "STF040", "cache"));
        let b = object_name(&record(Engine::Redis, "ABC123", "cache"));
        assert_ne!(a, b);
        let long = object_name(&record(
            Engine::Rabbitmq,
            "VERYLONGPROJECT01",
            &"x".repeat(40),
        ));
        assert!(is_dns_label(&long) && long.len() <= 52, "{long}");
    }

    #[test]
    fn readiness_from_status() {
        let sts = json!({ "spec": { "replicas": 1 }, "status": { "readyReplicas": 1 } });
        assert_eq!(ready(Engine::Redis, &sts), Health::Healthy);
        assert_eq!(
            ready(
                Engine::Redis,
                &json!({ "spec": { "replicas": 1 }, "status": {} })
            ),
            Health::Starting
        );
        let rmq = json!({ "status": { "conditions": [{ "type": "AllReplicasReady", "status": "True" }] } });
        assert_eq!(ready(Engine::Rabbitmq, &rmq), Health::Healthy);
        assert_eq!(
            ready(Engine::Rabbitmq, &json!({ "status": {} })),
            Health::Starting
        );
    }

    /// What the fake API saw: method, path, content type, body, authorization.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Value, String)>>>;

    /// A fake Kubernetes API (no Kubernetes runs here): records each
    /// request, answers 200 with a ready StatefulSet for GETs and `{}`
    /// otherwise. One request per connection. With `tls`, it serves HTTPS
    /// with a certificate for 127.0.0.1 from that CA.
    async fn fake_kubernetes_api_on(
        tls: Option<&crate::providers::brokers::tls::FacilityCa>,
    ) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let acceptor = tls.map(|ca| {
            use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
            let server = ca.issue("127.0.0.1", "fake-kubernetes").unwrap();
            let certs = vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
            let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(
                std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()),
            )
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
        });
        let seen: Seen = Default::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                match &acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(sock).await {
                            fake_answer(tls, &log).await;
                        }
                    }
                    None => fake_answer(sock, &log).await,
                }
            }
        });
        (url, seen)
    }

    async fn fake_kubernetes_api() -> (String, Seen) {
        fake_kubernetes_api_on(None).await
    }

    async fn fake_answer(
        mut sock: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        log: &Seen,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head, body) = loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break (String::new(), Vec::new());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = header(&head, "content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                break (head, buf[end + 4..].to_vec());
            }
        };
        let mut first = head.lines().next().unwrap_or_default().split(' ');
        let (method, path) = (
            first.next().unwrap_or_default().to_string(),
            first.next().unwrap_or_default().to_string(),
        );
        let content_type = header(&head, "content-type").unwrap_or_default();
        let auth = header(&head, "authorization").unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer = if method == "GET" {
            json!({ "spec": { "replicas": 1 }, "status": { "readyReplicas": 1 } }).to_string()
        } else {
            "{}".to_string()
        };
        log.lock()
            .unwrap()
            .push((method, path, content_type, body, auth));
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    }

    fn header(head: &str, name: &str) -> Option<String> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// Over HTTPS, verified against the CA of `ca_file`, with the bearer
    /// token of `token_file`; and refused without that CA.
    #[tokio::test]
    async fn speaks_tls_with_a_ca_bundle_and_a_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::providers::brokers::tls::FacilityCa::load_or_create(&dir.path().join("ca"))
            .unwrap();
        let (url, seen) = fake_kubernetes_api_on(Some(&ca)).await;
        std::fs::write(dir.path().join("token"), "s3cr3t-token\n").unwrap();
        let cfg = KubernetesConfig {
            api_url: Some(url.clone()),
            ca_file: Some(ca.cert_path().to_path_buf()),
            token_file: Some(dir.path().join("token")),
            ..Default::default()
        };
        let provider = KubernetesBrokers::new(cfg, dir.path().join("unused")).unwrap();
        let mut r = record(Engine::Redis, "STF040", "cache");
        provider.start(&mut r).await.unwrap();
        assert_eq!(provider.health(&r).await, Health::Healthy);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen.iter().all(|(.., auth)| auth == "Bearer s3cr3t-token"));

        // The system's roots do not know this CA: refused.
        let plain = KubernetesConfig {
            api_url: Some(url),
            ..Default::default()
        };
        let provider = KubernetesBrokers::new(plain, dir.path().join("unused")).unwrap();
        let mut r = record(Engine::Redis, "STF040", "other");
        let err = provider.start(&mut r).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("invalid peer certificate") && err.contains("ca_file"),
            "{err}"
        );
    }

    /// A kubeconfig's current context: server, inline CA, static token.
    /// Plugin authentication and skipped verification are refused by name.
    #[tokio::test]
    async fn reads_a_kubeconfigs_current_context() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::providers::brokers::tls::FacilityCa::load_or_create(&dir.path().join("ca"))
            .unwrap();
        let (url, seen) = fake_kubernetes_api_on(Some(&ca)).await;
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
        let kubeconfig = dir.path().join("config");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: hpc\n\
                 clusters:\n- name: other\n  cluster:\n    server: https://10.0.0.1\n\
                 - name: fake\n  cluster:\n    server: {url}\n    certificate-authority-data: {b64}\n\
                 users:\n- name: s3m\n  user:\n    token: kube-token\n\
                 contexts:\n- name: hpc\n  context:\n    cluster: fake\n    user: s3m\n"
            ),
        )
        .unwrap();
        let cfg = KubernetesConfig {
            kubeconfig: Some(kubeconfig.clone()),
            ..Default::default()
        };
        let provider = KubernetesBrokers::new(cfg, dir.path().join("unused")).unwrap();
        let mut r = record(Engine::Redis, "STF040", "cache");
        provider.start(&mut r).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|(.., auth)| auth == "Bearer kube-token"),
            "{seen:?}"
        );

        for (user, says) in [
            ("    exec:\n      command: aws\n", "plugin"),
            ("    auth-provider:\n      name: oidc\n", "plugin"),
        ] {
            std::fs::write(
                &kubeconfig,
                format!(
                    "current-context: c\nclusters:\n- name: k\n  cluster:\n    server: {url}\n\
                     users:\n- name: u\n  user:\n{user}contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n"
                ),
            )
            .unwrap();
            let cfg = KubernetesConfig {
                kubeconfig: Some(kubeconfig.clone()),
                ..Default::default()
            };
            let err = KubernetesBrokers::new(cfg, dir.path().join("unused"))
                .err()
                .expect("refused");
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
        std::fs::write(
            &kubeconfig,
            format!("current-context: c\nclusters:\n- name: k\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: k\n"),
        )
        .unwrap();
        let cfg = KubernetesConfig {
            kubeconfig: Some(kubeconfig),
            ..Default::default()
        };
        let err = KubernetesBrokers::new(cfg, dir.path().join("unused"))
            .err()
            .expect("refused");
        assert!(
            format!("{err:#}").contains("certificate-authority-data"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn applies_checks_and_deletes_through_a_fake_kubernetes_api() {
        let (url, seen) = fake_kubernetes_api().await;
        let cfg = KubernetesConfig {
            api_url: Some(url),
            ..Default::default()
        };
        let provider =
            KubernetesBrokers::new(cfg, std::env::temp_dir().join("s3m-k8s-unused")).unwrap();
        let mut r = record(Engine::Redis, "STF040", "cache");
        provider.start(&mut r).await.unwrap();
        assert_eq!(
            r.url,
            "redis://s3m-cache:p4ss@s3m-redis-stf040-cache.s3m-streaming.svc:6379"
        );
        assert_eq!(provider.health(&r).await, Health::Healthy);
        provider.stop(&r).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        let calls: Vec<(&str, &str)> = seen
            .iter()
            .map(|(m, p, ..)| (m.as_str(), p.as_str()))
            .collect();
        let ns = "/namespaces/s3m-streaming";
        assert_eq!(calls, [
            ("PATCH", &*format!("/api/v1{ns}/secrets/s3m-redis-stf040-cache-credentials?fieldManager=s3m&force=true")),
            ("PATCH", &*format!("/apis/apps/v1{ns}/statefulsets/s3m-redis-stf040-cache?fieldManager=s3m&force=true")),
            ("PATCH", &*format!("/api/v1{ns}/services/s3m-redis-stf040-cache?fieldManager=s3m&force=true")),
            ("GET", &*format!("/apis/apps/v1{ns}/statefulsets/s3m-redis-stf040-cache")),
            ("DELETE", &*format!("/api/v1{ns}/services/s3m-redis-stf040-cache")),
            ("DELETE", &*format!("/apis/apps/v1{ns}/statefulsets/s3m-redis-stf040-cache")),
            ("DELETE", &*format!("/api/v1{ns}/secrets/s3m-redis-stf040-cache-credentials")),
        ]);
        for (method, _, content_type, body, _) in &seen {
            if method == "PATCH" {
                assert_eq!(content_type, "application/apply-patch+yaml");
                assert!(
                    body["apiVersion"].is_string() && body["kind"].is_string(),
                    "{body}"
                );
            }
        }
    }

    #[tokio::test]
    async fn without_an_api_the_objects_are_written_for_an_operator() {
        let dir = std::env::temp_dir().join(format!("s3m-k8s-render-{}", std::process::id()));
        let provider = KubernetesBrokers::new(KubernetesConfig::default(), dir.clone()).unwrap();
        let mut r = record(Engine::Rabbitmq, "STF040", "events");
        provider.start(&mut r).await.unwrap();
        let path = dir.join(format!("{}.json", r.id));
        let list: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][1]["kind"], "RabbitmqCluster");
        assert_eq!(provider.health(&r).await, Health::Starting);
        provider.stop(&r).await.unwrap();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
