//! The engine: compiles each component once (cached on disk by content),
//! links the capabilities, checks every import at start-up, pre-instantiates,
//! and makes a fresh Store per request with its limits.

use crate::capabilities::{
    self,
    outbound_http::{AllowedHost, OutboundHooks},
};
use crate::manifest::{ComponentDecl, Manifest};
use crate::state::{ComponentGrants, HostState, Services};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
};
use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::{FsPerms, WasiCtx};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpCtx;

/// How often the epoch ticks: a running guest yields this often, and its
/// time limit is checked this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each linear memory and table slot kept resident between
/// instances (see `new_engine`).
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
const KEEP_RESIDENT_TABLE: usize = 1 << 20;

/// The keep-resident sizes: the defaults above, or
/// `S3M_POOL_KEEP_RESIDENT=<bytes>` for both (0 releases every slot with
/// madvise as wasmtime does by default; `bench_compare` runs the no-op that
/// way too, to show the difference in the same run).
fn keep_resident() -> (usize, usize) {
    match std::env::var("S3M_POOL_KEEP_RESIDENT") {
        Err(_) => (KEEP_RESIDENT_MEMORY, KEEP_RESIDENT_TABLE),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) => (n, n.min(KEEP_RESIDENT_TABLE)),
            Err(_) => {
                tracing::warn!(
                    "S3M_POOL_KEEP_RESIDENT={v:?} is not a number of bytes: keeping the defaults"
                );
                (KEEP_RESIDENT_MEMORY, KEEP_RESIDENT_TABLE)
            }
        },
    }
}

/// Limits applied to every request's Store.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub request_timeout: Duration,
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            request_timeout: Duration::from_secs(60),
            max_instances: 256,
        }
    }
}

/// The interfaces this host links natively besides WASI (see
/// `capabilities::add_to_linker`): a `[component.x.dependencies]` entry that
/// names only these is not composed (no HTTP hop through an adapter).
pub const NATIVE_INTERFACES: &[&str] = &[
    "s3m:facility/types@0.1.0",
    "s3m:facility/scheduler@0.1.0",
    "s3m:facility/brokers@0.1.0",
    "s3m:facility/software@0.1.0",
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
];

pub fn is_native(import: &str) -> bool {
    NATIVE_INTERFACES.contains(&import)
}

/// A component's bytes with its non-native dependencies composed in.
pub fn component_bytes(decl: &ComponentDecl) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(&decl.source).map_err(|e| {
        let hint = match &decl.build {
            Some(b) => format!("build it with `s3m build` (runs: {})", b.command),
            None => "build it first".into(),
        };
        anyhow::anyhow!(
            "component {}: cannot read {}: {e}; {hint}",
            decl.id,
            decl.source.display()
        )
    })?;
    if decl.dependencies.is_empty() {
        return Ok(bytes);
    }
    let composed = crate::compose::compose(
        &decl.id,
        &bytes,
        &decl.dependencies,
        &read_dependency,
        &is_native,
        &[],
    )
    .with_context(|| format!("component {}: composing its dependencies", decl.id))?;
    Ok(match composed {
        Some(c) => {
            for w in &c.wiring {
                tracing::info!("component {}: {} <- {}", decl.id, w.import, w.by);
            }
            c.bytes
        }
        None => bytes,
    })
}

pub fn read_dependency(dep: &crate::dependencies::Dependency) -> anyhow::Result<Vec<u8>> {
    std::fs::read(&dep.path).map_err(|e| {
        anyhow::anyhow!(
            "dependency {}: cannot read {}: {e}",
            dep.name,
            dep.path.display()
        )
    })
}

/// One component, ready to serve.
pub struct LoadedComponent {
    pub pre: ProxyPre<HostState>,
    pub grants: Arc<ComponentGrants>,
    pub outbound: OutboundHooks,
    /// Its `files` mounts, each directory opened once when the host
    /// starts (as a container's bind mount is): every instance gets the same
    /// read-only handles, not a fresh `open` and `close` of each directory.
    /// Files inside are opened by path at each access, so edits show at once.
    pub mounts: WasiFilesystemCtx,
    pub environment: Vec<(String, String)>,
    /// The facility.toml this component mounts at /config, handed over parsed.
    pub facility: Option<Arc<crate::facility::FacilityDigest>>,
}

pub struct App {
    pub engine: Engine,
    pub components: HashMap<String, LoadedComponent>,
    pub services: Arc<Services>,
    pub limits: Limits,
    /// Which Stores are alive, for the epoch thread ([`App::start_epoch_ticker`]).
    pub epoch: Arc<EpochUse>,
}

/// The Stores alive at a moment, so that the epoch thread ticks only while
/// a guest may run. A tick every [`EPOCH_TICK`] whether or not anything ran
/// cost an idle host 27 µs of CPU per tick on the development VM (2.7 ms a
/// second, a hundred wake-ups), for nothing: an epoch deadline concerns only
/// a Store that is running a guest.
#[derive(Default)]
pub struct EpochUse {
    live: std::sync::atomic::AtomicUsize,
    /// True while the epoch thread waits for a Store to come alive.
    parked: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

/// One live Store's hold on the epoch thread: it ticks while any is held.
pub struct LiveStore(Arc<EpochUse>);

impl Drop for LiveStore {
    fn drop(&mut self) {
        self.0
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl EpochUse {
    /// Marks one more Store alive until the returned hold is dropped; wakes
    /// the epoch thread if it was waiting for one.
    pub fn enter(self: &Arc<Self>) -> LiveStore {
        if self.live.fetch_add(1, std::sync::atomic::Ordering::AcqRel) == 0 {
            // Under the lock: the thread either has not yet looked at
            // `live` (and will see this Store) or is waiting (and is woken).
            let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            if *parked {
                self.wake.notify_one();
            }
        }
        LiveStore(self.clone())
    }

    /// Calls `tick` every `period` while any Store is alive, waiting without
    /// ticking while none is. Never returns.
    fn run(&self, period: Duration, mut tick: impl FnMut()) -> ! {
        loop {
            {
                let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
                while self.live.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    *parked = true;
                    parked = self.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
                }
                *parked = false;
            }
            std::thread::sleep(period);
            tick();
        }
    }
}

pub fn new_engine(limits: &Limits) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // `S3M_PROFILER=perfmap` names the guests' compiled functions for
    // `perf` (in /tmp/perf-<pid>.map), so that a profile of the host shows
    // which guest code a request's time goes to (README, Performance).
    match std::env::var("S3M_PROFILER").as_deref() {
        Err(_) | Ok("") | Ok("none") => {}
        Ok("perfmap") => {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        Ok(other) => anyhow::bail!(
            "S3M_PROFILER={other:?} is not a profiler this host knows: use perfmap (or none)"
        ),
    }
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.max_instances);
    pool.total_core_instances(limits.max_instances * 4);
    pool.total_memories(limits.max_instances * 2);
    pool.total_tables(limits.max_instances * 4);
    pool.max_memory_size(limits.memory_bytes);
    pool.total_stacks(limits.max_instances);
    // A slot given back is reset in place instead of released, up to these
    // sizes: releasing it with madvise cost three madvise calls per request,
    // each a TLB shootdown across the cores, and the page faults to bring
    // the pages back. Where the kernel has PAGEMAP_SCAN (Linux 6.7+), only
    // the pages the request dirtied are reset (copied back from the image or
    // zeroed); elsewhere the whole kept size is (bench_compare, README).
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    let (memory, table) = keep_resident();
    pool.linear_memory_keep_resident(memory);
    pool.table_keep_resident(table);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&config)?)
}

/// Resolves the application variables: declared default, then values the
/// host supplies (the facility public key), then `SPIN_VARIABLE_<NAME>` from
/// the environment, then `--variable name=value`.
pub fn resolve_variables(
    manifest: &Manifest,
    host_values: &BTreeMap<String, String>,
    cli_values: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, decl) in &manifest.variables {
        let env = std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())).ok();
        let value = cli_values
            .get(name)
            .cloned()
            .or(env)
            .or_else(|| host_values.get(name).cloned())
            .or_else(|| decl.default.clone());
        match value {
            Some(v) => {
                out.insert(name.clone(), v);
            }
            None if decl.required => bail!(
                "variable {name} is required: set SPIN_VARIABLE_{} or pass --variable {name}=VALUE",
                name.to_ascii_uppercase()
            ),
            None => {}
        }
    }
    for name in cli_values.keys() {
        if !manifest.variables.contains_key(name) {
            bail!("--variable {name}: the manifest's [variables] does not declare it");
        }
    }
    Ok(out)
}

impl App {
    pub fn load(
        manifest: &Manifest,
        variables: &BTreeMap<String, String>,
        services: Arc<Services>,
        limits: Limits,
        progress: &indicatif::ProgressBar,
    ) -> anyhow::Result<Self> {
        let engine = new_engine(&limits)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        capabilities::add_to_linker(&mut linker)?;

        let mut components = HashMap::new();
        // One digest per mounted directory, shared by the components that mount it.
        let mut digests: HashMap<PathBuf, Arc<crate::facility::FacilityDigest>> = HashMap::new();
        for decl in manifest.components.values() {
            progress.set_message(format!("compiling {}", decl.id));
            let component = compile_cached(&engine, decl)?;
            let pre = linker.instantiate_pre(&component).map_err(|e| {
                anyhow::anyhow!(
                    "component {} ({}) imports something this host does not provide: {e:#}. \
                     The s3m host provides WASI 0.2, wasi:http, fermyon:spin/key-value@2.0.0, \
                     fermyon:spin/variables@2.0.0, wasi:keyvalue@0.2.0-draft2 and the s3m:facility interfaces",
                    decl.id,
                    decl.source.display()
                )
            })?;
            let pre = ProxyPre::new(pre).map_err(anyhow::Error::from).with_context(|| {
                format!(
                    "component {} does not export wasi:http/incoming-handler@0.2.x: build it as an HTTP component (spin-sdk #[http_component])",
                    decl.id
                )
            })?;
            let mut vars = HashMap::new();
            for (name, template) in &decl.variables {
                let value = crate::manifest::render_template(template, variables)
                    .with_context(|| format!("component {} variable {name}", decl.id))?;
                vars.insert(name.clone(), value);
            }
            let mut allowed = Vec::new();
            for h in &decl.allowed_outbound_hosts {
                if !h.contains("{{") {
                    allowed.push(AllowedHost::parse(h)?);
                    continue;
                }
                // As Spin: a template of application variables; one that
                // renders empty (or to a bare scheme) allows nothing.
                let rendered = crate::manifest::render_template(h, variables)
                    .with_context(|| format!("component {} allowed_outbound_hosts", decl.id))?;
                if rendered.is_empty() || rendered == "http://" || rendered == "https://" {
                    continue;
                }
                allowed.push(AllowedHost::parse(&rendered).with_context(|| {
                    format!(
                        "component {}: allowed_outbound_hosts {h:?} renders as {rendered:?}",
                        decl.id
                    )
                })?);
            }
            for label in &decl.key_value_stores {
                if services.key_value.get(label).is_err() {
                    bail!(
                        "component {} uses key-value store {label:?}, which the runtime config does not define: add [key_value_store.{label}] to runtime-config.toml",
                        decl.id
                    );
                }
            }
            let mut mounts = WasiCtx::builder();
            // As for every instance's context (host_state): the guests read
            // small local files on their own thread.
            mounts.allow_blocking_current_thread(true);
            let mut facility = None;
            for m in &decl.files {
                if m.guest_path.trim_end_matches('/') == crate::facility::GUEST_DIR {
                    facility = Some(
                        digests
                            .entry(m.host_dir.clone())
                            .or_insert_with(|| crate::facility::FacilityDigest::new(&m.host_dir))
                            .clone(),
                    );
                }
                if !m.host_dir.is_dir() {
                    bail!(
                        "component {}: files source {} is not a directory",
                        decl.id,
                        m.host_dir.display()
                    );
                }
                mounts
                    .preopened_dir(&m.host_dir, &m.guest_path, FsPerms::ReadOnly)
                    .map_err(anyhow::Error::from)
                    .with_context(|| {
                        format!(
                            "component {}: cannot open files source {}",
                            decl.id,
                            m.host_dir.display()
                        )
                    })?;
            }
            components.insert(
                decl.id.clone(),
                LoadedComponent {
                    pre,
                    grants: Arc::new(ComponentGrants {
                        key_value_stores: decl.key_value_stores.iter().cloned().collect(),
                        variables: vars,
                        capabilities: decl.capabilities.iter().cloned().collect(),
                        component: decl.id.clone(),
                        max_body_size: decl.max_body_size,
                    }),
                    outbound: OutboundHooks {
                        allowed: Arc::new(allowed),
                    },
                    mounts: mounts.build().filesystem().clone(),
                    environment: decl
                        .environment
                        .iter()
                        .filter(|(k, _)| {
                            // The host's own: a manifest's value would shadow the file.
                            let ours = [
                                crate::facility::DIGEST_ENV,
                                crate::facility::SUMMARY_DIGEST_ENV,
                            ]
                            .contains(&k.as_str());
                            if ours {
                                tracing::warn!(component = %decl.id,
                                    "spin.toml sets {k} in the component's environment; the host sets it, from facility.toml, and ignores this value");
                            }
                            !ours
                        })
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    facility,
                },
            );
        }
        Ok(Self {
            engine,
            components,
            services,
            limits,
            epoch: Arc::default(),
        })
    }

    /// The data of a fresh Store for `component`: its grants, its files,
    /// its variables. `request_token` is the `Authorization` value of the
    /// HTTP request it serves, if any (the capability gateway serves calls,
    /// not requests: there, each call's `caller.token` alone speaks).
    pub fn host_state(
        &self,
        component: &LoadedComponent,
        request_token: Option<String>,
    ) -> anyhow::Result<HostState> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr();
        // Guests read only small local files (the facility configuration):
        // doing that on this thread beats a hop to tokio's blocking pool per
        // file operation, which costs more than the read itself.
        wasi.allow_blocking_current_thread(true);
        wasi.envs(&component.environment);
        if let Some(digests) = component.facility.as_ref().and_then(|f| f.current()) {
            wasi.env(crate::facility::DIGEST_ENV, &digests.whole);
            wasi.env(crate::facility::SUMMARY_DIGEST_ENV, &digests.summary);
        }
        let mut wasi = wasi.build();
        *wasi.filesystem() = component.mounts.clone();
        Ok(HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(64)
                .build(),
            outbound: component.outbound.clone(),
            grants: component.grants.clone(),
            services: self.services.clone(),
            request_token,
            principal: None,
            request_id: None,
            _live: self.epoch.enter(),
        })
    }

    /// A fresh Store for one request to `component`.
    pub fn new_store(&self, component: &LoadedComponent) -> anyhow::Result<Store<HostState>> {
        let state = self.host_state(component, None)?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // At every epoch tick a running guest yields to the executor, so a
        // guest that computes for long cannot starve the other requests of a
        // worker thread; past the request's time limit it is stopped.
        let deadline = std::time::Instant::now() + self.limits.request_timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if std::time::Instant::now() >= deadline {
                Ok(wasmtime::UpdateDeadline::Interrupt)
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }

    /// Advances the epoch every [`EPOCH_TICK`] while any Store is alive,
    /// so that deadlines fire; waits, without waking, while none is.
    pub fn start_epoch_ticker(&self) {
        let engine = self.engine.clone();
        let epoch = self.epoch.clone();
        std::thread::Builder::new()
            .name("s3m-epoch".into())
            .spawn(move || epoch.run(EPOCH_TICK, || engine.increment_epoch()))
            .expect("spawning the epoch thread");
    }
}

/// Compiles a component, or loads the machine code compiled for the same
/// bytes by the same engine settings before.
fn compile_cached(engine: &Engine, decl: &ComponentDecl) -> anyhow::Result<Component> {
    let bytes = component_bytes(decl)?;
    let mut hasher = Sha256::new();
    hasher.update(&bytes);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hasher),
    );
    let key = hex::encode(hasher.finalize());
    let cache = cache_dir().map(|d| d.join(format!("{key}.cwasm")));
    if let Some(path) = &cache {
        if path.exists() {
            // SAFETY: the file was written by Component::serialize of this
            // same engine configuration (the key covers it) into our own
            // cache directory.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!("ignoring stale compiled cache {}: {e}", path.display()),
            }
        }
    }
    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "component {}: {} is not a valid WebAssembly component",
                decl.id,
                decl.source.display()
            )
        })?;
    if let Some(path) = cache {
        if let Ok(serialized) = component.serialize() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, serialized).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
    Ok(component)
}

/// `$S3M_CACHE_DIR`, else `$XDG_CACHE_HOME/s3m`, else `~/.cache/s3m`.
fn cache_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("S3M_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| Path::new(&d).join("s3m")))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/s3m")))?;
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Instant;

    /// Waits until `ticks` reaches `n`, failing after 5 s.
    fn await_ticks(ticks: &AtomicUsize, n: usize, why: &str) {
        let start = Instant::now();
        while ticks.load(SeqCst) < n {
            assert!(start.elapsed() < Duration::from_secs(5), "{why}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_epoch_ticks_while_a_store_is_alive_and_only_then() {
        let epoch = Arc::new(EpochUse::default());
        let ticks = Arc::new(AtomicUsize::new(0));
        {
            let (epoch, ticks) = (epoch.clone(), ticks.clone());
            std::thread::spawn(move || {
                epoch.run(Duration::from_millis(2), || {
                    ticks.fetch_add(1, SeqCst);
                })
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ticks.load(SeqCst), 0, "no Store alive: no tick");

        let first = epoch.enter();
        await_ticks(&ticks, 3, "a live Store must make the epoch tick");
        // A second Store, then the first gone: still ticking.
        let second = epoch.enter();
        drop(first);
        let now = ticks.load(SeqCst);
        await_ticks(
            &ticks,
            now + 3,
            "one Store still alive: the epoch must go on",
        );
        drop(second);
        // A tick already under way may land; then none.
        std::thread::sleep(Duration::from_millis(20));
        let parked_at = ticks.load(SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            ticks.load(SeqCst),
            parked_at,
            "no Store alive: the thread must wait"
        );

        // From waiting, a new Store wakes it.
        let _again = epoch.enter();
        await_ticks(
            &ticks,
            parked_at + 3,
            "a Store coming alive must wake the epoch thread",
        );
    }
}
