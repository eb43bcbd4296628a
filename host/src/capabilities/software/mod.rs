//! The `s3m:facility/software` capability: which software modules a job on
//! a resource can load. Components cannot run programs, so the host asks the
//! module system for them. Its providers (host/src/providers/software/) are
//! Lmod's spider over the resource's module path, and the facility
//! configuration's own module list.
//!
//! Configuration, per resource, in `[resources.environment]` of
//! config/facility.toml:
//!
//! ```toml
//! [[resources]]
//! name = "frontier"
//! [resources.environment]
//! modulepath = ["/sw/frontier/modulefiles"]   # Lmod's spider reads these
//! lmod_spider = "/usr/share/lmod/lmod/libexec/spider"  # optional
//! modules_cache_seconds = 60                  # optional, how long a spider run is reused
//! modules = [{ name = "cmake", versions = ["3.27.9"], default = "3.27.9" }]
//! ```
//!
//! Without `modulepath`, `modules` is the whole list; with it, the modules
//! Lmod finds come first and configured ones Lmod does not know are added.

use crate::facility::FacilityConfig;
use crate::providers::software::{config::ConfiguredModules, lmod::Lmod};
use crate::state::HostState;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};

wasmtime::component::bindgen!({
    world: "s3m:facility/software-host",
    path: "../wit",
    imports: { default: async | trappable },
    // The capability gateway carries these values as JSON (docs/gateway.md).
    additional_derives: [serde::Serialize, serde::Deserialize],
});

use s3m::facility::software as wit;

/// One package as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Oldest first.
    pub versions: Vec<String>,
    pub default_version: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoftwareError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A source of a resource's modules.
#[async_trait::async_trait]
pub trait SoftwareProvider: Send + Sync {
    async fn modules(&self) -> Result<Vec<Module>, SoftwareError>;
}

/// Every resource's module source, built once from the facility configuration.
#[derive(Default)]
pub struct Software {
    resources: HashMap<String, Resource>,
}

/// A resource's module sources, in order of precedence: a module name the
/// first one reports hides the same name in later ones.
struct Resource {
    providers: Vec<Box<dyn SoftwareProvider>>,
}

impl Software {
    /// Reads `[resources.environment]` of every resource. A malformed table
    /// is a start-up error that names the resource and the key.
    pub fn from_facility(facility: &FacilityConfig) -> anyhow::Result<Self> {
        let mut resources = HashMap::new();
        for resource in &facility.resources {
            let empty = toml::Table::new();
            let table = resource.environment.as_ref().unwrap_or(&empty);
            let configured = ConfiguredModules::from_table(table)
                .map_err(|e| anyhow::anyhow!("facility.toml, resource {:?}: {e}", resource.name))?;
            let lmod = Lmod::from_table(table)
                .map_err(|e| anyhow::anyhow!("facility.toml, resource {:?}: {e}", resource.name))?;
            let mut providers: Vec<Box<dyn SoftwareProvider>> = Vec::new();
            if let Some(lmod) = lmod {
                providers.push(Box::new(lmod));
            }
            providers.push(Box::new(configured));
            resources.insert(resource.name.clone(), Resource { providers });
        }
        Ok(Self { resources })
    }

    /// The modules of `resource`, sorted by name, and what each failing
    /// source said: one failing source (Lmod down) does not hide what the
    /// others know.
    pub async fn modules(
        &self,
        resource: &str,
    ) -> Result<(Vec<Module>, Vec<String>), SoftwareError> {
        let Some(r) = self.resources.get(resource) else {
            return Err(SoftwareError::NotFound(format!(
                "no resource named {resource:?} in the facility configuration"
            )));
        };
        let mut modules: Vec<Module> = Vec::new();
        let mut warnings = Vec::new();
        for provider in &r.providers {
            match provider.modules().await {
                Ok(found) => {
                    for m in found {
                        if !modules.iter().any(|have| have.name == m.name) {
                            modules.push(m);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%resource, error = %e, "a software module source failed");
                    warnings.push(e.to_string());
                }
            }
        }
        modules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((modules, warnings))
    }
}

/// Built on first use from the facility configuration the services hold, so
/// that the capability needs no field of its own in `Services`; one host
/// process serves one application.
fn software(facility: &FacilityConfig) -> Result<&'static Software, SoftwareError> {
    static SOFTWARE: OnceLock<Result<Software, String>> = OnceLock::new();
    let built =
        SOFTWARE.get_or_init(|| Software::from_facility(facility).map_err(|e| format!("{e:#}")));
    match built {
        Ok(s) => Ok(s),
        Err(e) => Err(SoftwareError::Unavailable(e.clone())),
    }
}

/// How long a spider run is reused unless the resource says otherwise.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(60);

impl wit::Host for HostState {
    async fn modules(
        &mut self,
        resource: String,
    ) -> wasmtime::Result<Result<wit::ModuleList, wit::SoftwareError>> {
        if let Err(why) = self.authorize("software", None, &[]).await {
            return Ok(Err(wit::SoftwareError::Unavailable(why)));
        }
        let result = match software(&self.services.facility) {
            Ok(software) => software.modules(&resource).await,
            Err(e) => Err(e),
        };
        Ok(result
            .map(|(modules, warnings)| wit::ModuleList {
                modules: modules
                    .into_iter()
                    .map(|m| wit::SoftwareModule {
                        name: m.name,
                        versions: m.versions,
                        default_version: m.default_version,
                        description: m.description,
                    })
                    .collect(),
                warnings,
            })
            .map_err(|e| match e {
                SoftwareError::NotFound(m) => wit::SoftwareError::NotFound(m),
                SoftwareError::Unavailable(m) => wit::SoftwareError::Unavailable(m),
            }))
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    wit::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn software(text: &str) -> anyhow::Result<Software> {
        Software::from_facility(&toml::from_str::<FacilityConfig>(text)?)
    }

    #[tokio::test]
    async fn a_failing_lmod_leaves_the_configured_modules_and_says_why() {
        let s = software(
            r#"
            [[resources]]
            name = "basalt"
            [resources.environment]
            modulepath = ["/nonexistent/modulefiles"]
            modules = [{ name = "cmake", versions = ["3.27.9"] }]
            "#,
        )
        .unwrap();
        let (modules, warnings) = s.modules("basalt").await.unwrap();
        assert_eq!(
            modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["cmake"]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("/nonexistent/modulefiles"),
            "{warnings:?}"
        );
    }

    #[tokio::test]
    async fn an_unknown_resource_is_not_found_and_one_without_a_table_has_none() {
        let s = software("[[resources]]\nname = \"shale\"\n").unwrap();
        assert!(matches!(
            s.modules("nosuch").await,
            Err(SoftwareError::NotFound(_))
        ));
        assert_eq!(s.modules("shale").await.unwrap(), (vec![], vec![]));
    }

    #[test]
    fn a_broken_table_names_the_resource() {
        let e =
            software("[[resources]]\nname = \"basalt\"\n[resources.environment]\nmodulepath = 3\n")
                .err()
                .unwrap();
        assert!(format!("{e}").contains("basalt"), "{e}");
    }
}
