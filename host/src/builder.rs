//! `s3m build`: runs each component's `[component.x.build] command`, with a
//! progress display, and shows the command's output only when it fails.

use crate::manifest::Manifest;
use anyhow::bail;
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
