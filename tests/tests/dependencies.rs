//! Spin-style component dependencies (`[component.<id>.dependencies]` of
//! spin.toml) that the host does not link natively: `s3m up` composes them
//! into their component when it loads it (host/src/dependencies.rs,
//! host/src/compose.rs), or refuses to start, naming why.
//!
//! The fixtures: tests/components/greeted, an HTTP component importing the
//! test-only interface `s3m-test:greeting/greet@0.1.0` (no host provides
//! it), and tests/components/greeter, a library component exporting it
//! (tests/components/wit/greeting.wit).

use anyhow::Result;
use s3m_tests::{component_wasm, AppOptions, TestApp};
use std::path::PathBuf;

const GREET: &str = "s3m-test:greeting/greet@0.1.0";

/// A fixture's wasm, failing with the command that builds it.
fn fixture(krate: &str) -> PathBuf {
    let wasm = component_wasm(&krate.replace('-', "_"));
    assert!(
        wasm.is_file(),
        "{} is missing: build it with `cargo build --target wasm32-wasip2 --release -p {krate}` (scripts/test does)",
        wasm.display()
    );
    wasm
}

/// A TOML basic string of `p`.
fn toml_path(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// The greeted component routed under /greeted/, with `dependencies` (TOML
/// lines of `[component.greeted.dependencies]`; none when empty), as more
/// spin.toml for `AppOptions::extra_manifest`.
fn greeted_manifest(dependencies: &str) -> String {
    let mut text = format!(
        "\n[[trigger.http]]\nroute = \"/greeted/...\"\ncomponent = \"greeted\"\n\
         [component.greeted]\nsource = {}\n",
        toml_path(&fixture("test-greeted"))
    );
    if !dependencies.is_empty() {
        text.push_str("[component.greeted.dependencies]\n");
        text.push_str(dependencies);
        text.push('\n');
    }
    text
}

/// A dependency on the greeter, with `more` keys (e.g. `inherit_configuration = true`).
fn greeter(name: &str, more: &str) -> String {
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(", {more}")
    };
    format!(
        "{:?} = {{ path = {}{more} }}",
        name,
        toml_path(&fixture("test-greeter"))
    )
}

fn start(dependencies: &str) -> Result<TestApp> {
    TestApp::start(AppOptions {
        components: vec!["status".into()],
        extra_manifest: Some(greeted_manifest(dependencies)),
        ..Default::default()
    })
}

/// Starts the app on a manifest `s3m up` must refuse; returns why (the
/// harness's error, with `s3m up`'s stderr).
fn refused(dependencies: &str) -> String {
    match start(dependencies) {
        Ok(app) => panic!(
            "s3m up started on a manifest it should refuse; its stderr:\n{}",
            app.stderr()
        ),
        Err(e) => format!("{e:#}"),
    }
}

async fn greet(app: &TestApp, name: &str) -> Result<(u16, String)> {
    let res = app.get(&format!("/greeted/{name}"), None).await?;
    Ok((res.status().as_u16(), res.text().await?))
}

#[tokio::test]
async fn a_dependency_the_host_does_not_link_is_composed_into_its_component() -> Result<()> {
    let app = start(&greeter(GREET, "inherit_configuration = true"))?;
    assert_eq!(
        greet(&app, "world").await?,
        (200, "hello, world".to_string())
    );
    assert_eq!(greet(&app, "ada").await?, (200, "hello, ada".to_string()));
    // The rest of the app is served as before.
    let res = app.get("/olcf/v1alpha/status", None).await?;
    assert_eq!(res.status().as_u16(), 200);
    Ok(())
}

#[tokio::test]
async fn a_dependency_named_by_its_package_or_inheriting_only_what_it_imports_is_composed(
) -> Result<()> {
    // `ns:pkg` (no interface, no version) matches every import of the
    // package; the greeter imports wasi:cli/environment, which it may have
    // by inheriting only `environment`.
    let app = start(&greeter(
        "s3m-test:greeting",
        "inherit_configuration = [\"environment\"]",
    ))?;
    assert_eq!(
        greet(&app, "world").await?,
        (200, "hello, world".to_string())
    );
    Ok(())
}

#[test]
fn without_its_dependency_a_component_is_refused_naming_the_import() {
    let e = refused("");
    assert!(e.contains(GREET), "{e}");
}

#[test]
fn a_dependency_that_matches_no_import_is_refused() {
    // Spin's message (spin-compose): "dependency '...' doesn't match any imports of component '...'".
    let deps = format!(
        "{}\n{}",
        greeter(GREET, "inherit_configuration = true"),
        greeter("s3m-test:other/greet@0.1.0", "inherit_configuration = true")
    );
    let e = refused(&deps);
    assert!(
        e.contains("dependency 's3m-test:other/greet@0.1.0' doesn't match any imports of component 'greeted'"),
        "{e}"
    );
    // Another version of the imported interface does not match it either.
    let e = refused(&greeter(
        "s3m-test:greeting/greet@0.2.0",
        "inherit_configuration = true",
    ));
    assert!(e.contains("doesn't match any imports"), "{e}");
}

#[test]
fn a_dependency_that_does_not_export_what_it_should_is_refused() {
    let e = refused(&greeter(
        GREET,
        "inherit_configuration = true, export = \"s3m-test:greeting/nope@0.1.0\"",
    ));
    assert!(
        e.contains("doesn't export 's3m-test:greeting/nope@0.1.0'") && e.contains(GREET),
        "{e}"
    );
}

#[test]
fn a_dependency_that_does_not_inherit_an_interface_it_imports_is_refused_naming_it() {
    // The greeter (Rust's std on wasm32-wasip2) imports wasi:cli/environment,
    // which Spin's deny-all adapter would plug for a dependency that does not
    // inherit `environment`; the s3m host carries no such adapter and refuses
    // it instead, naming it (host/src/compose.rs, `apply_deny_adapter`).
    // Inheriting nothing is also the default (no `inherit_configuration`).
    for inherit in [
        "",
        "inherit_configuration = false",
        "inherit_configuration = [\"variables\"]",
    ] {
        let e = refused(&greeter(GREET, inherit));
        assert!(
            e.contains("wasi:cli/environment@0.2") && e.contains("`environment`"),
            "{inherit}: {e}"
        );
    }
}
