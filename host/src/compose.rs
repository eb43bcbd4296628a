//! Composing a component with its dependencies, by spin-compose's algorithm
//! and with the same library (wac-graph): dependency names are matched to the
//! component's imports, conflicts refused, each dependency's export (its
//! `export`, else the import's own name) checked to be a subtype of the import
//! and aliased into it; a dependency that does not inherit its component's
//! configuration gets Spin's deny-all adapter over what it does not inherit.
//!
//! Beyond Spin, `s3m build --compose` may give a pool of adapters: each import
//! still open after the manifest's dependencies (of the component or of any
//! component composed in) that an adapter of the pool exports by the same name
//! is satisfied by that adapter, instantiated once.

use crate::dependencies::{matches_import, Dependency, Inherit};
use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use wac_graph::types::{are_semver_compatible, Package, SubtypeChecker, WorldId};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

/// A component with its bytes, ready to be composed in.
pub struct Part {
    /// How reports name it: the dependency name, or the adapter's file name.
    pub label: String,
    pub bytes: Vec<u8>,
}

/// What satisfied one import.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Whose import: the component's id or a part's label.
    pub importer: String,
    pub import: String,
    pub by: String,
}

pub struct Composed {
    pub bytes: Vec<u8>,
    pub wiring: Vec<Wiring>,
}

/// Composes `root` (component `id`) with its manifest `dependencies` (their
/// bytes read by `load`), skipping imports `native` says the host provides,
/// then with the adapters of `pool`. Returns None when nothing was composed.
pub fn compose(
    id: &str,
    root: &[u8],
    dependencies: &[Dependency],
    load: &dyn Fn(&Dependency) -> anyhow::Result<Vec<u8>>,
    native: &dyn Fn(&str) -> bool,
    pool: &[Part],
) -> anyhow::Result<Option<Composed>> {
    let mut graph = CompositionGraph::new();
    let (root_world, root_inst) = register(&mut graph, id, root.to_vec())
        .with_context(|| format!("component {id} is not a valid component"))?;
    let imports: Vec<String> = graph.types()[root_world].imports.keys().cloned().collect();

    // Prepare: match each dependency to the imports it names.
    let mut by_import: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut used = Vec::new();
    for (i, dep) in dependencies.iter().enumerate() {
        let matched: Vec<&String> = imports
            .iter()
            .filter(|import| matches_import(&dep.name, import))
            .collect();
        if matched.is_empty() {
            bail!(
                "dependency '{}' doesn't match any imports of component '{id}'",
                dep.name
            );
        }
        let open: Vec<&String> = matched.into_iter().filter(|i| !native(i)).collect();
        if open.is_empty() {
            // Every import it names is one this host provides itself.
            tracing::debug!(
                "component {id}: dependency {} is provided natively",
                dep.name
            );
            continue;
        }
        for import in open {
            by_import.entry(import.clone()).or_default().push(i);
        }
        used.push(i);
    }
    let conflicts: Vec<String> = by_import
        .iter()
        .filter(|(_, deps)| deps.len() > 1)
        .map(|(import, deps)| {
            format!(
                "import '{import}' satisfied by dependencies: '{}'",
                deps.iter()
                    .map(|&d| dependencies[d].name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    if !conflicts.is_empty() {
        bail!(
            "component '{id}' has dependency conflicts: {}",
            conflicts.join("; ")
        );
    }
    if used.is_empty() && pool.is_empty() {
        return Ok(None);
    }

    let mut cache = Default::default();
    let mut wiring = Vec::new();
    let mut instances: BTreeMap<usize, (WorldId, NodeId)> = BTreeMap::new();
    for &i in &used {
        let dep = &dependencies[i];
        let bytes = load(dep)?;
        let bytes = apply_deny_adapter(&bytes, &dep.inherit).with_context(|| {
            format!(
                "component {id}: dependency {} ({}): applying the deny-all adapter",
                dep.name,
                dep.path.display()
            )
        })?;
        let name = package_name(&dep.name);
        // Spin registers a dependency under its package's name, so that two
        // dependencies of one package (`ns:pkg/a`, `ns:pkg/b`) fail there with
        // "package `ns:pkg` has already been registered in the graph". This
        // host registers the second under its full dependency name instead.
        let taken = instances
            .keys()
            .any(|&j| package_name(&dependencies[j].name) == name);
        let name = if taken { dep.name.to_string() } else { name };
        let node = register(&mut graph, &name, bytes).with_context(|| {
            format!(
                "component {id}: dependency {} ({}) is not a valid component",
                dep.name,
                dep.path.display()
            )
        })?;
        instances.insert(i, node);
    }
    // Instantiation arguments of the component.
    let mut satisfied: Vec<(NodeId, String)> = Vec::new();
    for (import, deps) in &by_import {
        let dep = &dependencies[deps[0]];
        let (dep_world, dep_inst) = instances[&deps[0]];
        let export = dep.export.clone().unwrap_or_else(|| import.clone());
        let Some(&export_ty) = graph.types()[dep_world].exports.get(&export) else {
            bail!(
                "dependency '{}' doesn't export '{export}' to satisfy import '{import}'",
                dep.name
            );
        };
        let import_ty = graph.types()[root_world].imports[import];
        SubtypeChecker::new(&mut cache)
            .is_subtype(export_ty, graph.types(), import_ty, graph.types())
            .with_context(|| {
                format!(
                    "dependency '{}' exports '{export}' which is not compatible with import '{import}'",
                    dep.name
                )
            })?;
        let node = graph.alias_instance_export(dep_inst, &export)?;
        graph.set_instantiation_argument(root_inst, import, node)?;
        satisfied.push((root_inst, import.clone()));
        wiring.push(Wiring {
            importer: id.to_string(),
            import: import.clone(),
            by: format!("{} ({})", dep.name, file_name(&dep.path)),
        });
    }

    // The pool: every open import, of the component and of all it composes,
    // that a pool adapter exports.
    let mut pool_nodes: BTreeMap<usize, (WorldId, NodeId)> = BTreeMap::new();
    let mut todo: Vec<(String, WorldId, NodeId, Option<usize>)> =
        vec![(id.to_string(), root_world, root_inst, None)];
    for &i in &used {
        let (w, n) = instances[&i];
        todo.push((dependencies[i].name.to_string(), w, n, None));
    }
    while let Some((importer, world, inst, from_pool)) = todo.pop() {
        let open: Vec<String> = graph.types()[world]
            .imports
            .keys()
            .filter(|i| !satisfied.iter().any(|(n, s)| *n == inst && s == *i))
            .cloned()
            .collect();
        for import in open {
            let Some(p) = pool.iter().enumerate().position(|(pi, part)| {
                Some(pi) != from_pool && part_exports(&graph, &pool_nodes, pi, part, &import)
            }) else {
                continue;
            };
            let (p_world, p_inst) = match pool_nodes.get(&p) {
                Some(&n) => n,
                None => {
                    let n = register(&mut graph, &pool[p].label, pool[p].bytes.clone())
                        .with_context(|| format!("{} is not a valid component", pool[p].label))?;
                    pool_nodes.insert(p, n);
                    todo.push((pool[p].label.clone(), n.0, n.1, Some(p)));
                    n
                }
            };
            let export_ty = graph.types()[p_world].exports[&import];
            let import_ty = graph.types()[world].imports[&import];
            SubtypeChecker::new(&mut cache)
                .is_subtype(export_ty, graph.types(), import_ty, graph.types())
                .with_context(|| {
                    format!(
                        "{} exports '{import}', which is not compatible with the import of {importer}",
                        pool[p].label
                    )
                })?;
            let node = graph.alias_instance_export(p_inst, &import)?;
            graph.set_instantiation_argument(inst, &import, node)?;
            satisfied.push((inst, import.clone()));
            wiring.push(Wiring {
                importer: importer.clone(),
                import,
                by: pool[p].label.clone(),
            });
        }
    }
    if wiring.is_empty() {
        return Ok(None);
    }

    // Export all the component exports.
    for name in graph.types()[root_world]
        .exports
        .keys()
        .cloned()
        .collect::<Vec<_>>()
    {
        let node = graph.alias_instance_export(root_inst, &name)?;
        graph.export(node, &name)?;
    }
    let bytes = graph
        .encode(EncodeOptions::default())
        .map_err(|e| anyhow!("failed to encode composition graph: {e:#}"))?;
    Ok(Some(Composed { bytes, wiring }))
}

fn package_name(name: &crate::dependencies::DependencyName) -> String {
    match name {
        crate::dependencies::DependencyName::Package(p) => p.package.clone(),
        crate::dependencies::DependencyName::Plain(p) => p.clone(),
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Whether pool adapter `pi` exports `import` (read from its bytes once; a
/// parse of a part that fails here fails again, with context, when it is
/// registered).
fn part_exports(
    graph: &CompositionGraph,
    nodes: &BTreeMap<usize, (WorldId, NodeId)>,
    pi: usize,
    part: &Part,
    import: &str,
) -> bool {
    if let Some((w, _)) = nodes.get(&pi) {
        return graph.types()[*w].exports.contains_key(import);
    }
    let mut scratch = CompositionGraph::new();
    match Package::from_bytes(&part.label, None, part.bytes.clone(), scratch.types_mut()) {
        Ok(p) => scratch.types()[p.ty()].exports.contains_key(import),
        Err(_) => false,
    }
}

fn register(
    graph: &mut CompositionGraph,
    name: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<(WorldId, NodeId)> {
    let package = Package::from_bytes(name, None, bytes, graph.types_mut())?;
    let world = package.ty();
    let id = graph.register_package(package)?;
    Ok((world, graph.instantiate(id)))
}

/// The imports and exports of a component's bytes.
pub fn interface_names(bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut graph = CompositionGraph::new();
    let p = Package::from_bytes("component", None, bytes.to_vec(), graph.types_mut())?;
    let w = &graph.types()[p.ty()];
    Ok((
        w.imports.keys().cloned().collect(),
        w.exports.keys().cloned().collect(),
    ))
}

/// The interfaces of each configuration key a dependency may inherit
/// (spin-capabilities' `CAPABILITY_SETS`).
const CAPABILITY_SETS: &[(&str, &[&str])] = &[
    ("ai_models", &["fermyon:spin/llm", "fermyon:spin/llm@2.0.0"]),
    (
        "allowed_outbound_hosts",
        &[
            "fermyon:spin/http",
            "fermyon:spin/mysql",
            "fermyon:spin/postgres",
            "fermyon:spin/redis",
            "fermyon:spin/mqtt@2.0.0",
            "fermyon:spin/mysql@2.0.0",
            "fermyon:spin/postgres@2.0.0",
            "fermyon:spin/redis@2.0.0",
            "spin:mqtt/mqtt@3.0.0",
            "spin:mysql/mysql@3.0.0",
            "spin:postgres/postgres@3.0.0",
            "spin:postgres/postgres@4.2.0",
            "spin:redis/redis@3.0.0",
            "wasi:http/client@0.3.0",
            "wasi:http/client@0.3.0-rc-2026-03-15",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:sockets/ip-name-lookup@0.2.6",
            "wasi:sockets/ip-name-lookup@0.3.0",
            "wasi:sockets/ip-name-lookup@0.3.0-rc-2026-03-15",
            "wasi:sockets/tcp-create-socket@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "wasi:sockets/udp-create-socket@0.2.6",
            "wasi:sockets/udp@0.2.6",
        ],
    ),
    (
        "environment",
        &[
            "wasi:cli/environment@0.2.6",
            "wasi:cli/environment@0.3.0",
            "wasi:cli/environment@0.3.0-rc-2026-03-15",
        ],
    ),
    (
        "files",
        &[
            "wasi:filesystem/preopens@0.2.6",
            "wasi:filesystem/preopens@0.3.0",
            "wasi:filesystem/preopens@0.3.0-rc-2026-03-15",
        ],
    ),
    (
        "key_value_stores",
        &[
            "fermyon:spin/key-value",
            "fermyon:spin/key-value@2.0.0",
            "spin:key-value/key-value@3.0.0",
            "wasi:keyvalue/store@0.2.0-draft2",
        ],
    ),
    (
        "sqlite_databases",
        &[
            "fermyon:spin/sqlite",
            "fermyon:spin/sqlite@2.0.0",
            "spin:sqlite/sqlite@3.1.0",
        ],
    ),
    (
        "variables",
        &[
            "fermyon:spin/config",
            "fermyon:spin/variables@2.0.0",
            "spin:variables/variables@3.0.0",
            "wasi:config/store@0.2.0-draft-2024-09-27",
        ],
    ),
];

/// What Spin's deny-all adapter does for a dependency that does not inherit
/// all of the component's configuration, as a check: Spin plugs each host
/// interface of a configuration key the dependency does not inherit with an
/// interface that always fails. The s3m host carries no such adapter; it
/// refuses a dependency that imports one of those interfaces, naming it, and
/// passes any other through unchanged (as Spin's adapter leaves a dependency
/// with nothing to plug).
pub fn apply_deny_adapter(source: &[u8], inherit: &Inherit) -> anyhow::Result<Vec<u8>> {
    let allow: Vec<&str> = match inherit {
        Inherit::All => return Ok(source.to_vec()),
        Inherit::Some(keys) => CAPABILITY_SETS
            .iter()
            .filter(|(k, _)| keys.iter().any(|key| key == k))
            .flat_map(|(_, set)| set.iter().copied())
            .collect(),
    };
    let mut graph = CompositionGraph::new();
    let dep = Package::from_bytes("dependency", None, source.to_vec(), graph.types_mut())?;
    let dep_id = graph.register_package(dep)?;
    let imports = &graph.types()[graph[dep_id].ty()].imports;
    for (key, set) in CAPABILITY_SETS {
        for name in set.iter().filter(|n| !allow.contains(n)) {
            if let Some(import) = imports
                .keys()
                .find(|import| import.as_str() == *name || are_semver_compatible(name, import))
            {
                bail!(
                    "it imports {import}, which Spin denies a dependency that does not inherit `{key}`; \
                     the s3m host does not deny interfaces one by one: let it inherit the component's \
                     configuration (dependencies_inherit_configuration = true, or inherit_configuration = [\"{key}\", ...])"
                );
            }
        }
    }
    Ok(source.to_vec())
}

/// One component exporting everything `parts` export (the first part to
/// export a name gives it), its parts' imports shared: how several adapters
/// of one package become the single dependency stock Spin accepts for a
/// component importing more than one of its interfaces (Spin registers
/// every dependency under its package's name, so two dependencies of
/// `s3m:facility` cannot both be composed into one component there).
pub fn merge_exports(parts: &[Part]) -> anyhow::Result<(Vec<u8>, Vec<Wiring>)> {
    let mut graph = CompositionGraph::new();
    let mut exported = std::collections::BTreeSet::new();
    let mut wiring = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let (world, instance) =
            register(&mut graph, &format!("s3m:part{i}"), part.bytes.clone())
                .with_context(|| format!("{} is not a valid component", part.label))?;
        let names: Vec<String> = graph.types()[world].exports.keys().cloned().collect();
        for name in names {
            if !exported.insert(name.clone()) {
                continue;
            }
            let export = graph.alias_instance_export(instance, &name)?;
            graph.export(export, &name)?;
            wiring.push(Wiring {
                importer: "facility adapter".into(),
                import: name,
                by: part.label.clone(),
            });
        }
    }
    Ok((graph.encode(EncodeOptions::default())?, wiring))
}
