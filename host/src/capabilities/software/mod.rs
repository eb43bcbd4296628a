//! The `s3m:facility/software` capability: which software modules a job on
//! a resource can load. Components cannot run programs, so the host asks the
//! module system for them. Its providers (host/src/providers/software/) are
//! Lmod's spider over the resource's module path, and the facility
//! configuration's own module list; the wiring (host/src/wiring.rs) builds
//! them at start and installs them here.
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
    /// Each resource's module sources, in order of precedence.
    pub fn new(resources: HashMap<String, Vec<Box<dyn SoftwareProvider>>>) -> Self {
        Self {
            resources: resources
                .into_iter()
                .map(|(name, providers)| (name, Resource { providers }))
                .collect(),
        }
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

/// What the wiring built at start, or why it could not (a malformed
/// `[resources.environment]`, which then answers Unavailable); one host
/// process serves one application, so the capability needs no field of its
/// own in `Services`.
static SOFTWARE: OnceLock<Result<Software, String>> = OnceLock::new();

/// Installs what the wiring built; once per process.
pub fn install(built: Result<Software, String>) {
    if SOFTWARE.set(built).is_err() {
        tracing::warn!("the software capability was installed twice; the first one stays");
    }
}

fn software() -> Result<&'static Software, SoftwareError> {
    match SOFTWARE.get() {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(SoftwareError::Unavailable(e.clone())),
        None => Err(SoftwareError::Unavailable(
            "the software capability was not set up at start".into(),
        )),
    }
}

/// How long a spider run is reused unless the resource says otherwise.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(60);

impl wit::Host for HostState {
    async fn modules(
        &mut self,
        resource: String,
    ) -> wasmtime::Result<Result<wit::ModuleList, wit::SoftwareError>> {
        let call = crate::metrics::Call::start("software", "modules");
        if let Err(why) = self.authorize("software", None, &[]).await {
            call.finish("refused");
            return Ok(Err(wit::SoftwareError::Unavailable(why)));
        }
        let result = match software() {
            Ok(software) => software.modules(&resource).await,
            Err(e) => Err(e),
        };
        call.finish(if result.is_ok() { "ok" } else { "error" });
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
