//! `[component.<id>.dependencies]` of spin.toml, read by Spin's rules
//! (spin-manifest's schema v2, spin-serde's `DependencyName`, spin-compose's
//! `matches_import`), so that a manifest means the same to both hosts.

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A dependency's name, the key of `[component.x.dependencies]`:
/// `ns:pkg`, `ns:pkg@1.2.3`, `ns:pkg/iface`, `ns:pkg/iface@1.2.3`, or a plain
/// kebab-case import name `foo-bar`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DependencyName {
    Plain(String),
    Package(PackageName),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageName {
    /// `ns:pkg`
    pub package: String,
    pub interface: Option<String>,
    pub version: Option<semver::Version>,
}

impl fmt::Display for DependencyName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Plain(p) => write!(f, "{p}"),
            Self::Package(p) => {
                write!(f, "{}", p.package)?;
                if let Some(i) = &p.interface {
                    write!(f, "/{i}")?;
                }
                if let Some(v) = &p.version {
                    write!(f, "@{v}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for DependencyName {
    type Err = anyhow::Error;

    /// As spin-serde: a name with `:` or `/` is a package name (version after
    /// `@`, interface after `/`), anything else a plain kebab-case name.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if !s.contains([':', '/']) {
            kebab_id(s).map_err(|e| anyhow!("dependency name {s:?}: {e}"))?;
            return Ok(Self::Plain(s.to_string()));
        }
        let (name, version) = match s.split_once('@') {
            Some((name, version)) => (
                name,
                Some(
                    semver::Version::parse(version)
                        .with_context(|| format!("dependency name {s:?}: version {version:?}"))?,
                ),
            ),
            None => (s, None),
        };
        let (package, interface) = match name.split_once('/') {
            Some((package, interface)) => {
                kebab_id(interface)
                    .map_err(|e| anyhow!("dependency name {s:?}: interface: {e}"))?;
                (package, Some(interface.to_string()))
            }
            None => (name, None),
        };
        package_ref(package).map_err(|e| anyhow!("dependency name {s:?}: package: {e}"))?;
        Ok(Self::Package(PackageName {
            package: package.to_string(),
            interface,
            version,
        }))
    }
}

/// spin-serde's `KebabId`: `-`-separated words, each starting with an ASCII
/// letter, alphanumeric, all lower-case or all upper-case.
fn kebab_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".into());
    }
    if id.contains('_') {
        return Err("words must be separated with '-', not '_'".into());
    }
    for word in id.split('-') {
        let mut chars = word.chars();
        let Some(first) = chars.next() else {
            return Err("'-'-separated words must not be empty".into());
        };
        if !first.is_ascii_alphabetic() {
            return Err(format!(
                "'-'-separated words must start with an ASCII letter; got {first:?}"
            ));
        }
        let upper = first.is_ascii_uppercase();
        for ch in chars {
            if ch.is_ascii_digit() {
                continue;
            }
            if !ch.is_ascii_alphanumeric() {
                return Err(format!(
                    "'-'-separated words may only contain alphanumeric ASCII; got {ch:?}"
                ));
            }
            if ch.is_ascii_uppercase() != upper {
                return Err(format!(
                    "'-'-separated words must be all lowercase or all UPPERCASE; got {word:?}"
                ));
            }
        }
    }
    Ok(())
}

/// A package reference `namespace:name` (wasm-pkg-common's `PackageRef`):
/// two kebab-case labels.
fn package_ref(s: &str) -> Result<(), String> {
    let (ns, name) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not namespace:name"))?;
    for label in [ns, name] {
        if label.is_empty()
            || label.split('-').any(|w| {
                !w.starts_with(|c: char| c.is_ascii_lowercase())
                    || !w
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
        {
            return Err(format!(
                "{label:?} in {s:?} is not a kebab-case label (lower-case words separated by '-')"
            ));
        }
    }
    Ok(())
}

/// spin-compose's `matches_import`: whether a dependency name satisfies an
/// import of the component. Plain names match equal plain imports; a package
/// name matches an interface import of that package, of its interface if it
/// names one, of exactly its version if it names one.
pub fn matches_import(name: &DependencyName, import: &str) -> bool {
    let import_is_package = import.contains([':', '/']);
    match name {
        DependencyName::Plain(p) => !import_is_package && p == import,
        DependencyName::Package(dep) => {
            if !import_is_package {
                return false;
            }
            let Some((package, rest)) = import.split_once('/') else {
                // Spin fails to parse such an import name; nothing matches it.
                return false;
            };
            let (interface, version) = match rest.split_once('@') {
                Some((i, v)) => match semver::Version::parse(v) {
                    Ok(v) => (i, Some(v)),
                    Err(_) => return false,
                },
                None => (rest, None),
            };
            package == dep.package
                && dep.interface.as_deref().is_none_or(|i| i == interface)
                && dep
                    .version
                    .as_ref()
                    .is_none_or(|v| Some(v) == version.as_ref())
        }
    }
}

/// What a dependency inherits of its component's configuration (Spin's
/// `inherit_configuration`): `true` everything, `false` or absent nothing, a
/// list those configuration keys (`allowed_outbound_hosts`, `variables`,
/// `key_value_stores`, `environment`, `files`, `sqlite_databases`,
/// `ai_models`). What is not inherited is denied by Spin's deny-all adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inherit {
    All,
    Some(Vec<String>),
}

/// One dependency, resolved to a local component file.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: DependencyName,
    pub path: PathBuf,
    pub export: Option<String>,
    pub inherit: Inherit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawInherit {
    All(bool),
    Some(Vec<String>),
}

/// Spin's `ComponentDependency`, variant for variant, in Spin's order (serde
/// takes the first that fits; unknown keys fit none).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum RawDependency {
    Version(String),
    Package {
        version: String,
        #[allow(dead_code)]
        registry: Option<String>,
        package: Option<String>,
        export: Option<String>,
        inherit_configuration: Option<RawInherit>,
    },
    Local {
        path: PathBuf,
        export: Option<String>,
        inherit_configuration: Option<RawInherit>,
    },
    Http {
        url: String,
        #[allow(dead_code)]
        digest: String,
        export: Option<String>,
        inherit_configuration: Option<RawInherit>,
    },
    AppComponent {
        component: String,
        export: Option<String>,
        inherit_configuration: Option<RawInherit>,
    },
}

impl RawDependency {
    fn export(&self) -> Option<&String> {
        match self {
            Self::Version(_) => None,
            Self::Package { export, .. }
            | Self::Local { export, .. }
            | Self::Http { export, .. }
            | Self::AppComponent { export, .. } => export.as_ref(),
        }
    }

    fn inherit_configuration(&self) -> Option<&RawInherit> {
        match self {
            Self::Version(_) => None,
            Self::Package {
                inherit_configuration,
                ..
            }
            | Self::Local {
                inherit_configuration,
                ..
            }
            | Self::Http {
                inherit_configuration,
                ..
            }
            | Self::AppComponent {
                inherit_configuration,
                ..
            } => inherit_configuration.as_ref(),
        }
    }
}

/// Reads `[component.<id>.dependencies]` and `dependencies_inherit_configuration`,
/// validated as Spin validates them (normalize.rs, then
/// `ComponentDependencies::validate`), then refuses the forms this host does
/// not fetch (registry, URL, another component).
pub fn parse(
    id: &str,
    raw: &BTreeMap<String, toml::Value>,
    inherit_all: Option<bool>,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Dependency>> {
    let mut deps = Vec::new();
    for (key, value) in raw {
        let name: DependencyName = key.parse().with_context(|| format!("component {id}"))?;
        let dep = RawDependency::deserialize(value.clone()).map_err(|_| {
            anyhow!(
                "component {id}: dependency {key:?} = {value}: not a dependency Spin knows; write \
                 {{ path = \"file.wasm\" }} (optionally with export = \"...\" and \
                 inherit_configuration = true | false | [\"key\", ...]), and no other keys"
            )
        })?;
        deps.push((name, dep));
    }
    // normalize.rs: the component-wide flag and per-dependency settings
    // exclude each other.
    if inherit_all.is_some()
        && deps
            .iter()
            .any(|(_, d)| d.inherit_configuration().is_some())
    {
        bail!(
            "Component `{id}` specifies both `dependencies_inherit_configuration` and \
             per-dependency `inherit_configuration`. These are mutually exclusive; use one or the other."
        );
    }
    validate(&deps).with_context(|| format!("component {id:?} has invalid dependencies"))?;
    let mut out = Vec::new();
    for (name, dep) in deps {
        let inherit = match (inherit_all, dep.inherit_configuration()) {
            (Some(true), _) | (_, Some(RawInherit::All(true))) => Inherit::All,
            (_, Some(RawInherit::Some(keys))) => Inherit::Some(keys.clone()),
            _ => Inherit::Some(vec![]),
        };
        let unsupported = match &dep {
            RawDependency::Local { path, export, .. } => {
                out.push(Dependency {
                    name,
                    path: dir.join(path),
                    export: export.clone(),
                    inherit,
                });
                continue;
            }
            RawDependency::Version(v) => format!("a registry package (version {v:?})"),
            RawDependency::Package { version, .. } => {
                format!("a registry package ({{ version = {version:?}, ... }})")
            }
            RawDependency::Http { url, .. } => format!("a download ({{ url = {url:?}, ... }})"),
            RawDependency::AppComponent { component, .. } => {
                format!("another component of the application ({{ component = {component:?} }})")
            }
        };
        bail!(
            "component {id}: dependency \"{name}\" is {unsupported}, which the s3m host does not \
             support: build the dependency locally and write {{ path = \"file.wasm\" }}"
        );
    }
    Ok(out)
}

/// spin-manifest's `ComponentDependencies::validate`.
fn validate(deps: &[(DependencyName, RawDependency)]) -> anyhow::Result<()> {
    // Plain names must name the package that satisfies them.
    for (name, dep) in deps {
        if let DependencyName::Plain(plain) = name {
            if matches!(
                dep,
                RawDependency::Version(_) | RawDependency::Package { package: None, .. }
            ) {
                bail!("dependency {plain:?} must specify a package name");
            }
        }
    }
    // A whole-package name cannot be satisfied by one named export.
    for (name, dep) in deps {
        if let DependencyName::Package(p) = name {
            if p.interface.is_none()
                && matches!(
                    dep,
                    RawDependency::Package { .. } | RawDependency::Local { .. }
                )
                && dep.export().is_some()
            {
                bail!(
                    "using an export to satisfy the package dependency \"{name}\" is not currently permitted"
                );
            }
        }
    }
    // Two names of one package must differ in (semver-compatible) version or interface.
    for (i, (a, _)) in deps.iter().enumerate() {
        for (b, _) in &deps[i + 1..] {
            let (DependencyName::Package(a), DependencyName::Package(b)) = (a, b) else {
                continue;
            };
            if a.package != b.package {
                continue;
            }
            if let (Some(va), Some(vb)) = (&a.version, &b.version) {
                if compatible(va) != compatible(vb) {
                    continue;
                }
            }
            if let (Some(ia), Some(ib)) = (&a.interface, &b.interface) {
                if ia != ib {
                    continue;
                }
            }
            bail!(
                "\"{}\" dependency conflicts with \"{}\"",
                DependencyName::Package(a.clone()),
                DependencyName::Package(b.clone())
            );
        }
    }
    Ok(())
}

/// The version a version is compatible with, by semver's rules (Spin's
/// `normalize_compatible_version`).
fn compatible(v: &semver::Version) -> semver::Version {
    let mut v = v.clone();
    v.build = semver::BuildMetadata::EMPTY;
    if v.pre != semver::Prerelease::EMPTY {
        return v;
    }
    if v.major > 0 {
        v.minor = 0;
        v.patch = 0;
    } else if v.minor > 0 {
        v.patch = 0;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(text: &str, inherit: Option<bool>) -> anyhow::Result<Vec<Dependency>> {
        let table: BTreeMap<String, toml::Value> = toml::from_str(text).unwrap();
        parse("c", &table, inherit, std::path::Path::new("/app"))
    }

    #[test]
    fn names() {
        for ok in [
            "foo:bar",
            "foo:bar@0.1.0",
            "foo:bar/baz",
            "foo:bar/baz@0.1.0",
            "s3m:facility/scheduler@0.1.0",
            "foo-bar",
            "wasi:keyvalue/store@0.2.0-draft2",
        ] {
            let n: DependencyName = ok.parse().unwrap();
            assert_eq!(n.to_string(), ok);
        }
        for bad in [
            "foo_bar",
            "foo:bar@1",
            "foo:bar/baz_qux",
            "Foo:bar",
            "foo/bar",
            ":bar",
            "1foo",
        ] {
            assert!(bad.parse::<DependencyName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_spin() {
        // spin-compose's own test cases.
        for (dep, imports) in [
            ("foo:bar/baz@0.1.0", vec!["foo:bar/baz@0.1.0"]),
            ("foo:bar/baz", vec!["foo:bar/baz@0.1.0", "foo:bar/baz"]),
            ("foo:bar", vec!["foo:bar/baz@0.1.0", "foo:bar/baz"]),
            ("foo:bar@0.1.0", vec!["foo:bar/baz@0.1.0"]),
            ("foo-bar", vec!["foo-bar"]),
        ] {
            let n: DependencyName = dep.parse().unwrap();
            for i in imports {
                assert!(matches_import(&n, i), "{dep} should match {i}");
            }
        }
        for (dep, imports) in [
            (
                "foo:bar/baz@0.1.0",
                vec!["foo:bar/baz", "foo:bar/baz@0.1.1"],
            ),
            ("foo:bar/baz", vec!["foo:bar/bub", "foo:bar/bub@0.1.0"]),
            ("foo:bar", vec!["foo:bub/bib"]),
            ("foo:bar@0.1.0", vec!["foo:bar/baz"]),
            ("foo:bar/baz", vec!["foo:bar/baz-bub", "foo-bar"]),
        ] {
            let n: DependencyName = dep.parse().unwrap();
            for i in imports {
                assert!(!matches_import(&n, i), "{dep} should not match {i}");
            }
        }
    }

    #[test]
    fn local_dependencies_and_inheritance() {
        let d = deps(
            r#""s3m:facility/scheduler@0.1.0" = { path = "a.wasm" }
               "foo:bar/baz" = { path = "b.wasm", export = "x:y/z@1.0.0" }"#,
            Some(true),
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|d| d.inherit == Inherit::All));
        let d = deps(r#""foo:bar" = { path = "a.wasm" }"#, None).unwrap();
        assert_eq!(d[0].inherit, Inherit::Some(vec![]));
        assert_eq!(d[0].path, std::path::Path::new("/app/a.wasm"));
        let d = deps(
            r#""foo:bar" = { path = "a.wasm", inherit_configuration = ["variables"] }
               "foo:baz" = { path = "a.wasm", inherit_configuration = true }"#,
            None,
        )
        .unwrap();
        assert_eq!(d[0].inherit, Inherit::Some(vec!["variables".into()]));
        assert_eq!(d[1].inherit, Inherit::All);
        // dependencies_inherit_configuration = false still excludes per-dependency settings.
        let e = deps(
            r#""foo:bar" = { path = "a.wasm", inherit_configuration = true }"#,
            Some(false),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mutually exclusive"), "{e}");
    }

    #[test]
    fn invalid_tables() {
        let err = |t: &str| format!("{:#}", deps(t, None).unwrap_err());
        // Spin's validation.
        assert!(err(r#""plain-name" = "0.1.0""#).contains("must specify a package name"));
        assert!(err(r#""plain-name" = { version = "0.1.0" }"#).contains("package name"));
        assert!(
            err(r#""foo:baz@0.1.0" = { path = "f.wasm", export = "foo" }"#)
                .contains("not currently permitted")
        );
        assert!(err(r#""foo:bar@0.2.1" = { path = "a.wasm" }
                       "foo:bar@0.2.2" = { path = "b.wasm" }"#)
        .contains("conflicts"));
        assert!(err(r#""foo:bar@0.1.0" = { path = "a.wasm" }
                       "foo:bar" = { path = "b.wasm" }"#)
        .contains("conflicts"));
        // Disjoint versions or interfaces are fine.
        deps(
            r#""foo:bar@0.1.0" = { path = "a.wasm" }
               "foo:bar@0.2.0" = { path = "b.wasm" }
               "foo:bar/baz@1.0.0" = { path = "c.wasm" }
               "foo:bar/qux@1.0.0" = { path = "d.wasm" }"#,
            None,
        )
        .unwrap();
        deps(
            r#""foo:bar/baz@0.1.0" = { path = "a.wasm" }
               "foo:bar/baz@0.2.0" = { path = "b.wasm" }"#,
            None,
        )
        .unwrap();
        // Unknown keys and malformed values.
        assert!(err(r#""foo:bar" = { path = "a.wasm", bogus = 1 }"#).contains("no other keys"));
        assert!(
            err(r#""foo:bar" = { path = "a.wasm", inherit_configuration = "yes" }"#)
                .contains("no other keys")
        );
        // Forms this host does not fetch, named.
        assert!(err(r#""foo:bar" = "^1.0""#).contains("registry package"));
        assert!(err(r#""foo:bar" = { version = "1.0", registry = "r.io" }"#)
            .contains("registry package"));
        assert!(
            err(r#""foo:bar" = { url = "https://x/a.wasm", digest = "sha256:00" }"#)
                .contains("download")
        );
        assert!(err(r#""foo:bar" = { component = "other" }"#).contains("another component"));
        // A URL without its digest is no dependency at all, as in Spin.
        assert!(err(r#""foo:bar" = { url = "https://x/a.wasm" }"#).contains("no other keys"));
    }
}
