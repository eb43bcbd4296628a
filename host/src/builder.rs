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
            eprintln!("component {}: no [component.{}.build] command; skipped", c.id, c.id);
        }
        c.build.is_some()
    });
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
            bail!("component {}: `{}` failed in {}{hint}", c.id, b.command, workdir.display());
        }
        bar.inc(1);
    }
    bar.finish_with_message("components built");
    Ok(())
}
