//! `s3m build`: runs each component's `[component.x.build] command`, with a
//! progress display, and shows the command's output only when it fails.

use crate::manifest::Manifest;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::Stdio;
use std::time::Duration;

pub fn build(manifest: &Manifest, only: &[String]) -> anyhow::Result<()> {
    let mut todo: Vec<_> = manifest
        .components
        .values()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .collect();
    for id in only {
        if !manifest.components.contains_key(id) {
            bail!("no component {id} in the manifest");
        }
    }
    todo.retain(|c| {
        if c.build.is_none() {
            eprintln!(
                "component {}: no [component.{}.build] command; skipped",
                c.id, c.id
            );
        }
        c.build.is_some()
    });
    if todo.iter().any(|c| {
        c.build
            .as_ref()
            .is_some_and(|b| b.command.contains("wasm32-wasip2"))
    }) {
        ensure_wasm_target()?;
    }
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    for c in todo {
        let b = c.build.as_ref().expect("kept only components with a build");
        let workdir = match &b.workdir {
            Some(w) => manifest.dir.join(w),
            None => manifest.dir.clone(),
        };
        bar.set_message(format!("building {}: {}", c.id, b.command));
        if bar.is_hidden() {
            // Not a terminal (CI, a log file): plain lines instead of a spinner.
            eprintln!("building {}: {}", c.id, b.command);
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&b.command)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bar.abandon_with_message(format!("building {} failed", c.id));
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            let hint = if String::from_utf8_lossy(&out.stderr).contains("wasm32-wasip2") {
                " (install the target: rustup target add wasm32-wasip2)"
            } else {
                ""
            };
            bail!(
                "component {}: `{}` failed in {}{hint}",
                c.id,
                b.command,
                workdir.display()
            );
        }
        bar.inc(1);
    }
    bar.finish_with_message("components built");
    if bar.is_hidden() {
        eprintln!("components built in {:.1} s", bar.elapsed().as_secs_f64());
    }
    merge_facility_adapter(manifest)
}

/// The facility adapters stock Spin composes into a component importing
/// more than one s3m:facility interface (environment: scheduler and
/// software), as one component: Spin accepts one dependency per package.
pub const FACILITY_ADAPTER: &str = "target/adapters/facility.wasm";
const FACILITY_PARTS: &[&str] = &[
    "target/wasm32-wasip2/release/scheduler_adapter.wasm",
    "target/wasm32-wasip2/release/brokers_adapter.wasm",
    "target/wasm32-wasip2/release/software_adapter.wasm",
];

/// Makes FACILITY_ADAPTER from the three facility adapters, once they are
/// built; says what it exports.
fn merge_facility_adapter(manifest: &Manifest) -> anyhow::Result<()> {
    let mut parts = Vec::new();
    for p in FACILITY_PARTS {
        let path = manifest.dir.join(p);
        match std::fs::read(&path) {
            Ok(bytes) => parts.push(crate::compose::Part {
                label: file_name(&path),
                bytes,
            }),
            // Not every build builds the adapters (`s3m build -c status`).
            Err(_) => return Ok(()),
        }
    }
    let (bytes, wiring) = crate::compose::merge_exports(&parts).context(
        "composing the facility adapter from the scheduler, brokers and software adapters",
    )?;
    let out = manifest.dir.join(FACILITY_ADAPTER);
    std::fs::create_dir_all(out.parent().expect("a parent"))?;
    std::fs::write(&out, &bytes)?;
    eprintln!(
        "facility adapter {FACILITY_ADAPTER}: {}",
        wiring
            .iter()
            .map(|w| format!("{} from {}", w.import, w.by))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Components build for wasm32-wasip2: add the target through rustup when
/// the toolchain lacks it, so the first `s3m up --build` on a new machine works.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2") =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("adding the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
            let status = std::process::Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .status()?;
            if !status.success() {
                bail!("`rustup target add wasm32-wasip2` failed; components cannot be built without it");
            }
            Ok(())
        }
        // No rustup: the toolchain is managed some other way; let cargo say
        // what is missing.
        Err(_) => Ok(()),
    }
}

/// Where `s3m build --compose` finds the key-value adapter when
/// `[application.tool.s3m] key_value_adapter` does not say.
pub const DEFAULT_KEY_VALUE_ADAPTER: &str = "target/wasm32-wasip2/release/key_value_adapter.wasm";
/// Where `s3m build --compose` finds the variables adapter when
/// `[application.tool.s3m] variables_adapter` does not say.
pub const DEFAULT_VARIABLES_ADAPTER: &str = "target/wasm32-wasip2/release/variables_adapter.wasm";

/// `s3m build --compose`: runs `[application.tool.s3m] adapters_build` (unless
/// `run_build` is false), then makes of each component one self-contained
/// component, target/composed/<id>.wasm: its `[component.x.dependencies]`
/// composed in (by Spin's rules), then the key-value and variables adapters
/// for whatever still imports their interfaces (the component or what was
/// composed into it). Fails naming every import left that is not `wasi:*`.
pub fn compose(manifest: &Manifest, only: &[String], run_build: bool) -> anyhow::Result<()> {
    if run_build {
        if let Some(cmd) = &manifest.s3m.adapters_build {
            eprintln!("building the adapters: {cmd}");
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&manifest.dir)
                .stdin(Stdio::null())
                .output()?;
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                bail!("[application.tool.s3m] adapters_build `{cmd}` failed");
            }
        }
    }
    let mut pool = Vec::new();
    let mut missing = Vec::new();
    for (what, configured, default) in [
        (
            "key_value_adapter",
            &manifest.s3m.key_value_adapter,
            DEFAULT_KEY_VALUE_ADAPTER,
        ),
        (
            "variables_adapter",
            &manifest.s3m.variables_adapter,
            DEFAULT_VARIABLES_ADAPTER,
        ),
    ] {
        let path = manifest.dir.join(configured.as_deref().unwrap_or(default));
        match std::fs::read(&path) {
            Ok(bytes) => pool.push(crate::compose::Part {
                label: file_name(&path),
                bytes,
            }),
            Err(e) => missing.push(format!(
                "{what} {}: {e}",
                path.strip_prefix(&manifest.dir).unwrap_or(&path).display()
            )),
        }
    }
    let out_dir = manifest.dir.join("target/composed");
    std::fs::create_dir_all(&out_dir)?;
    let mut failed = Vec::new();
    for decl in manifest.components.values() {
        if !only.is_empty() && !only.contains(&decl.id) {
            continue;
        }
        let bytes = std::fs::read(&decl.source).map_err(|e| {
            anyhow::anyhow!(
                "component {}: cannot read {}: {e}; run `s3m build` first",
                decl.id,
                decl.source.display()
            )
        })?;
        let composed = crate::compose::compose(
            &decl.id,
            &bytes,
            &decl.dependencies,
            &crate::engine::read_dependency,
            &|_| false,
            &pool,
        )
        .with_context(|| format!("component {}: composing", decl.id))?;
        let (bytes, wiring) = match composed {
            Some(c) => (c.bytes, c.wiring),
            None => (bytes, Vec::new()),
        };
        let (imports, exports) = crate::compose::interface_names(&bytes)
            .with_context(|| format!("component {}: reading the composition", decl.id))?;
        let left: Vec<&String> = imports.iter().filter(|i| !i.starts_with("wasi:")).collect();
        if !exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2"))
        {
            failed.push(format!(
                "{}: exports no wasi:http/incoming-handler@0.2.x (exports: {})",
                decl.id,
                exports.join(", ")
            ));
        }
        if !left.is_empty() {
            failed.push(format!(
                "{}: imports {} (not wasi:*): add a [component.{}.dependencies] entry exporting it",
                decl.id,
                left.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                decl.id
            ));
            continue;
        }
        let out = out_dir.join(format!("{}.wasm", decl.id));
        std::fs::write(&out, &bytes)?;
        println!(
            "composed {:<12} {} ({:.1} MiB, {} imports, all wasi:*)",
            decl.id,
            out.strip_prefix(&manifest.dir).unwrap_or(&out).display(),
            bytes.len() as f64 / (1 << 20) as f64,
            imports.len()
        );
        for w in &wiring {
            println!("    {} import {} <- {}", w.importer, w.import, w.by);
        }
    }
    if !failed.is_empty() {
        let hint = if missing.is_empty() {
            String::new()
        } else {
            format!(
                "\n(adapters not found: {}; build them, or set [application.tool.s3m] key_value_adapter / variables_adapter)",
                missing.join("; ")
            )
        };
        bail!(
            "not composed into self-contained components:\n  {}{hint}",
            failed.join("\n  ")
        );
    }
    Ok(())
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
