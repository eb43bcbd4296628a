//! spin.toml (Spin manifest version 2), parsed once into plain data that the
//! rest of the host reads. Keys Spin defines but this host does not support
//! are refused by name rather than ignored.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    authors: Vec<String>,
    /// `[application.tool.<name>]`: settings of other tools, which Spin
    /// ignores; the s3m host reads `[application.tool.s3m]`.
    #[serde(default)]
    tool: BTreeMap<String, toml::Table>,
}

/// `[application.tool.s3m]`: what `s3m build --compose` uses beyond Spin's
/// settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3mAppTool {
    /// The component exporting `fermyon:spin/key-value@2.0.0` and
    /// `wasi:keyvalue/*@0.2.0-draft2`, composed into components importing them.
    #[serde(default)]
    pub key_value_adapter: Option<String>,
    /// The component exporting `fermyon:spin/variables@2.0.0`, composed into
    /// components (and their dependencies) importing it.
    #[serde(default)]
    pub variables_adapter: Option<String>,
    /// The command building those adapters, run by `s3m build --compose`.
    #[serde(default)]
    pub adapters_build: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    #[serde(default)]
    id: Option<String>,
    route: toml::Value,
    component: String,
    #[serde(default)]
    executor: Option<toml::Table>,
}

/// An application variable of `[variables]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Spin's flag for values that must not be shown; the host shows no
    /// variable values at all, so it changes nothing here.
    #[serde(default)]
    #[allow(dead_code)]
    pub secret: bool,
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    files: Vec<RawFileMount>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    build: Option<BuildDecl>,
    /// `[component.x.tool.<name>]`: settings of other tools, which Spin
    /// ignores; the s3m host reads `[component.x.tool.s3m]`.
    #[serde(default)]
    tool: BTreeMap<String, toml::Table>,
    /// Spin's `dependencies_inherit_configuration`.
    #[serde(default)]
    dependencies_inherit_configuration: Option<bool>,
    /// Spin's `[component.x.dependencies]`: import name -> the component
    /// satisfying it.
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
}

/// `[component.x.tool.s3m]`: what the s3m host grants the component beyond
/// Spin's own grants.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3mTool {
    /// Facility capabilities: "scheduler", "scheduler-read", "brokers", "software".
    #[serde(default)]
    capabilities: Vec<String>,
    /// Largest request body for the component's routes, e.g. "1MiB" (Spin's
    /// trigger table refuses unknown keys, so the limit lives here).
    #[serde(default)]
    max_body_size: Option<String>,
}

/// The facility capabilities a component may be granted.
pub const CAPABILITIES: &[&str] = &["scheduler", "scheduler-read", "brokers", "software"];

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFileMount {
    Pattern(String),
    Mapping { source: String, destination: String },
}

/// `[component.x.build]`: how `s3m build` makes the component's .wasm.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildDecl {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub watch: Vec<String>,
}

/// A directory of the application mounted read-only into the guest.
#[derive(Debug, Clone)]
pub struct FileMount {
    pub host_dir: PathBuf,
    pub guest_path: String,
}

#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub id: String,
    pub source: PathBuf,
    pub files: Vec<FileMount>,
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// Component variable name -> template (e.g. "{{ token_audience }}").
    pub variables: BTreeMap<String, String>,
    pub build: Option<BuildDecl>,
    /// Facility capabilities granted by `[component.x.tool.s3m]`.
    pub capabilities: Vec<String>,
    /// `[component.x.tool.s3m] max_body_size`, in bytes.
    pub max_body_size: Option<u64>,
    /// `[component.x.dependencies]`, validated as Spin validates them.
    pub dependencies: Vec<crate::dependencies::Dependency>,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

/// The whole application, as spin.toml describes it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory holding spin.toml: relative paths start here.
    pub dir: PathBuf,
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub variables: BTreeMap<String, VariableDecl>,
    pub triggers: Vec<HttpTrigger>,
    pub components: BTreeMap<String, ComponentDecl>,
    /// `[application.tool.s3m]`.
    pub s3m: S3mAppTool,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the manifest {}: run s3m from the repository, or pass --manifest PATH",
                path.display()
            )
        })?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .canonicalize()?;
        Self::parse(&text, &dir).with_context(|| format!("in manifest {}", path.display()))
    }

    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version = {} is not supported: write a version 2 manifest",
                raw.spin_manifest_version
            );
        }
        for name in raw.variables.keys() {
            if !crate::capabilities::variables::is_valid_name(name) {
                bail!("variable name {name:?}: use lower-case letters, digits and underscores");
            }
        }
        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let source = match c.source {
                toml::Value::String(s) => dir.join(s),
                _ => bail!(
                    "component {id}: only a local file `source = \"path.wasm\"` is supported; build the component locally"
                ),
            };
            let mut files = Vec::new();
            for f in c.files {
                let (source, destination) = match f {
                    RawFileMount::Mapping {
                        source,
                        destination,
                    } => (source, destination),
                    RawFileMount::Pattern(p) => {
                        (p.clone(), format!("/{}", p.trim_start_matches("./")))
                    }
                };
                let host_dir = dir.join(&source);
                if host_dir.exists() && !host_dir.is_dir() {
                    bail!(
                        "component {id}: files entry {source:?} is a file; mount its directory with {{ source = \"dir\", destination = \"/dir\" }}"
                    );
                }
                files.push(FileMount {
                    host_dir,
                    guest_path: destination,
                });
            }
            for v in c.variables.keys() {
                if !crate::capabilities::variables::is_valid_name(v) {
                    bail!("component {id}: variable name {v:?} is not valid");
                }
            }
            for h in &c.allowed_outbound_hosts {
                if h.contains("{{") {
                    // A template of application variables, as Spin allows:
                    // parsed once the variables have values.
                    let names: BTreeMap<String, String> = raw
                        .variables
                        .keys()
                        .map(|k| (k.clone(), String::new()))
                        .collect();
                    render_template(h, &names)
                        .with_context(|| format!("component {id}: allowed_outbound_hosts"))?;
                    continue;
                }
                crate::capabilities::outbound_http::AllowedHost::parse(h)
                    .with_context(|| format!("component {id}"))?;
            }
            let dependencies = crate::dependencies::parse(
                &id,
                &c.dependencies,
                c.dependencies_inherit_configuration,
                dir,
            )?;
            let s3m: S3mTool = match c.tool.get("s3m") {
                None => S3mTool::default(),
                Some(t) => t
                    .clone()
                    .try_into()
                    .with_context(|| format!("component {id}: [component.{id}.tool.s3m]"))?,
            };
            for cap in &s3m.capabilities {
                if !CAPABILITIES.contains(&cap.as_str()) {
                    bail!(
                        "component {id}: [component.{id}.tool.s3m] capabilities: unknown {cap:?}; use {}",
                        CAPABILITIES.join(", ")
                    );
                }
            }
            let max_body_size = match &s3m.max_body_size {
                None => None,
                Some(text) => Some(crate::cli::parse_bytes(text).map_err(|e| {
                    anyhow::anyhow!("component {id}: [component.{id}.tool.s3m] max_body_size: {e}")
                })? as u64),
            };
            components.insert(
                id.clone(),
                ComponentDecl {
                    id,
                    source,
                    files,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    key_value_stores: c.key_value_stores,
                    environment: c.environment,
                    variables: c.variables,
                    build: c.build,
                    capabilities: s3m.capabilities,
                    max_body_size,
                    dependencies,
                },
            );
        }
        let s3m_app: S3mAppTool = match raw.application.tool.get("s3m") {
            None => S3mAppTool::default(),
            Some(t) => t.clone().try_into().context("[application.tool.s3m]")?,
        };
        let mut triggers = Vec::new();
        for t in raw.trigger.http {
            let who = t.id.clone().unwrap_or_else(|| t.component.clone());
            if t.executor.is_some() {
                bail!("trigger {who}: only the default (wasi:http) executor is supported");
            }
            let route = match t.route {
                toml::Value::String(r) => r,
                _ => bail!("trigger {who}: private routes are not supported; give a route string"),
            };
            if !components.contains_key(&t.component) {
                bail!(
                    "trigger for route {route:?} names component {:?}, which has no [component.{}] table",
                    t.component,
                    t.component
                );
            }
            triggers.push(HttpTrigger {
                route,
                component: t.component,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            name: raw.application.name,
            version: raw.application.version,
            description: raw.application.description,
            variables: raw.variables,
            triggers,
            components,
            s3m: s3m_app,
        })
    }
}

/// Renders a component variable template: `{{ name }}` becomes the value of
/// the application variable `name`; other text stays as written.
pub fn render_template(
    template: &str,
    values: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow::anyhow!("unclosed {{{{ in {template:?}"))?;
        let name = after[..end].trim();
        let value = values.get(name).ok_or_else(|| {
            anyhow::anyhow!(
                "{template:?} uses variable {name:?}, which [variables] does not declare"
            )
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_repository_manifest() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let m = Manifest::load(&dir.join("spin.toml")).unwrap();
        assert!(m.components.contains_key("tokens"));
        assert!(m.triggers.iter().any(|t| t.component == "status"));
        // The adapters, as Spin dependencies, each on interfaces the host
        // links natively.
        let env = &m.components["environment"];
        assert_eq!(
            env.dependencies.len(),
            1,
            "one dependency for the whole s3m:facility package"
        );
        assert!(env
            .dependencies
            .iter()
            .all(|d| d.inherit == crate::dependencies::Inherit::All));
        for d in m.components.values().flat_map(|c| &c.dependencies) {
            assert!(
                crate::engine::NATIVE_INTERFACES
                    .iter()
                    .any(|i| crate::dependencies::matches_import(&d.name, i)),
                "{}",
                d.name
            );
        }
        assert_eq!(
            m.components["compute"].allowed_outbound_hosts,
            ["{{ s3m_gateway_url }}"]
        );
    }

    #[test]
    fn dependencies_and_templated_hosts() {
        let base = "spin_manifest_version = 2\n[application]\nname = \"a\"\n[variables]\nh = { default = \"http://x:1\" }\n[component.x]\nsource = \"x.wasm\"\n";
        let d = Path::new("/tmp");
        let m = Manifest::parse(
            &format!("{base}allowed_outbound_hosts = [\"{{{{ h }}}}\"]\ndependencies_inherit_configuration = true\n[component.x.dependencies]\n\"a:b/c@1.0.0\" = {{ path = \"c.wasm\" }}\n"),
            d,
        )
        .unwrap();
        assert_eq!(m.components["x"].dependencies.len(), 1);
        // A template naming an undeclared variable is refused at parse.
        let e = Manifest::parse(
            &format!("{base}allowed_outbound_hosts = [\"{{{{ nope }}}}\"]\n"),
            d,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        // dependencies_inherit_configuration must be a bool.
        assert!(Manifest::parse(
            &format!("{base}dependencies_inherit_configuration = \"yes\"\n"),
            d
        )
        .is_err());
        // Registry forms are refused by name.
        let e = Manifest::parse(
            &format!("{base}[component.x.dependencies]\n\"a:b\" = \"1.0\"\n"),
            d,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("registry package"), "{e:#}");
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let base = "spin_manifest_version = 2\n[application]\nname = \"a\"\n";
        let d = Path::new("/tmp");
        let e = Manifest::parse(
            &format!("{base}[[trigger.http]]\nroute = \"/\"\ncomponent = \"x\"\n"),
            d,
        )
        .unwrap_err();
        assert!(e.to_string().contains("[component.x]"), "{e}");
        let e = Manifest::parse(
            &format!("{base}[component.x]\nsource = {{ url = \"https://x\", digest = \"d\" }}\n"),
            d,
        )
        .unwrap_err();
        assert!(e.to_string().contains("local file"), "{e}");
        let e = Manifest::parse(
            &format!("{base}[component.x]\nsource = \"x.wasm\"\nbogus = 1\n"),
            d,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        assert!(Manifest::parse(
            "spin_manifest_version = 1\n[application]\nname = \"a\"\n",
            d
        )
        .is_err());
    }

    #[test]
    fn templates() {
        let vals = BTreeMap::from([("a".to_string(), "x".to_string())]);
        assert_eq!(render_template("{{ a }}-{{a}}", &vals).unwrap(), "x-x");
        assert!(render_template("{{ b }}", &vals).is_err());
    }
}
