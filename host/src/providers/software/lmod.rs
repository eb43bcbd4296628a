//! Lmod: the modules of a resource as Lmod's own `spider` finds them in the
//! resource's module path (`spider -o jsonSoftwarePage DIR:DIR`, the
//! report Lmod sites publish as their software page). A run takes tens of
//! milliseconds on a small tree and seconds on a large one, so its answer is
//! reused for `modules_cache_seconds` (60 by default).

use crate::capabilities::software::{Module, SoftwareError, SoftwareProvider, DEFAULT_CACHE};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::Mutex;

/// Where distributions and Lmod's own installer put the spider script.
const SPIDER_CANDIDATES: &[&str] = &[
    "/usr/share/lmod/lmod/libexec/spider",
    "/opt/apps/lmod/lmod/libexec/spider",
    "/usr/local/lmod/lmod/libexec/spider",
    "/opt/lmod/lmod/libexec/spider",
];

/// A spider run that takes longer than this is abandoned.
const SPIDER_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Lmod {
    spider: Option<PathBuf>,
    modulepath: Vec<PathBuf>,
    ttl: Duration,
    /// The last good answer and when it was read. Behind an async mutex, so
    /// concurrent requests wait for one spider run instead of starting many.
    cache: Mutex<Option<(Instant, Vec<Module>)>>,
}

impl Lmod {
    /// Reads `modulepath` (a directory or a list of them), `lmod_spider` and
    /// `modules_cache_seconds` of a `[resources.environment]` table. Without
    /// `modulepath` the resource has no Lmod: `None`.
    pub fn from_table(table: &toml::Table) -> Result<Option<Self>, String> {
        let modulepath: Vec<PathBuf> = match table.get("modulepath") {
            None => return Ok(None),
            Some(toml::Value::String(s)) => s
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(PathBuf::from))
                .collect::<Option<_>>()
                .ok_or("environment.modulepath must be a list of directories")?,
            Some(_) => return Err("environment.modulepath must be a list of directories".into()),
        };
        if modulepath.is_empty() {
            return Ok(None);
        }
        if let Some(p) = modulepath.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "environment.modulepath: {} is not an absolute path",
                p.display()
            ));
        }
        let spider = match table.get("lmod_spider") {
            None => None,
            Some(toml::Value::String(s)) => Some(PathBuf::from(s)),
            Some(_) => {
                return Err("environment.lmod_spider must be the path of Lmod's spider".into())
            }
        };
        let ttl = match table.get("modules_cache_seconds") {
            None => DEFAULT_CACHE,
            Some(toml::Value::Integer(n)) if *n >= 0 => Duration::from_secs(*n as u64),
            Some(_) => {
                return Err(
                    "environment.modules_cache_seconds must be a number of seconds >= 0".into(),
                )
            }
        };
        Ok(Some(Self::new(spider, modulepath, ttl)))
    }

    pub fn new(spider: Option<PathBuf>, modulepath: Vec<PathBuf>, ttl: Duration) -> Self {
        Self {
            spider,
            modulepath,
            ttl,
            cache: Mutex::new(None),
        }
    }

    pub async fn modules(&self) -> Result<Vec<Module>, SoftwareError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, modules)) = cache.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(modules.clone());
            }
        }
        let modules = self.spider().await?;
        *cache = Some((Instant::now(), modules.clone()));
        Ok(modules)
    }

    /// The spider script: the configured one, else `$LMOD_DIR/spider`, else
    /// the usual install places.
    fn spider_path(&self) -> Result<PathBuf, SoftwareError> {
        if let Some(p) = &self.spider {
            return if p.is_file() {
                Ok(p.clone())
            } else {
                Err(SoftwareError::Unavailable(format!(
                    "Lmod's spider is not at {} (environment.lmod_spider): install Lmod or fix the path",
                    p.display()
                )))
            };
        }
        let from_env = std::env::var_os("LMOD_DIR").map(|d| Path::new(&d).join("spider"));
        from_env
            .into_iter()
            .chain(SPIDER_CANDIDATES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                SoftwareError::Unavailable(format!(
                    "Lmod is not installed on this host (no spider in $LMOD_DIR or {}): install it \
                     (Debian: apt-get install lmod) or set environment.lmod_spider",
                    SPIDER_CANDIDATES.join(", ")
                ))
            })
    }

    async fn spider(&self) -> Result<Vec<Module>, SoftwareError> {
        let missing: Vec<String> = self
            .modulepath
            .iter()
            .filter(|p| !p.is_dir())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(SoftwareError::Unavailable(format!(
                "module path directory not found: {} (environment.modulepath): create it or fix the configuration",
                missing.join(", ")
            )));
        }
        let spider = self.spider_path()?;
        let joined = std::env::join_paths(&self.modulepath).map_err(|e| {
            SoftwareError::Unavailable(format!("environment.modulepath cannot be joined: {e}"))
        })?;
        let run = Command::new(&spider)
            .arg("-o")
            .arg("jsonSoftwarePage")
            .arg(&joined)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(SPIDER_TIMEOUT, run).await {
            Err(_) => {
                return Err(SoftwareError::Unavailable(format!(
                    "Lmod's spider ({}) took over {}s on {}: build Lmod's spider cache for it",
                    spider.display(),
                    SPIDER_TIMEOUT.as_secs(),
                    joined.to_string_lossy()
                )))
            }
            Ok(Err(e)) => {
                return Err(SoftwareError::Unavailable(format!(
                    "cannot run Lmod's spider {}: {e}",
                    spider.display()
                )))
            }
            Ok(Ok(o)) => o,
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(SoftwareError::Unavailable(format!(
                "Lmod's spider {} failed ({}) on {}: {}",
                spider.display(),
                output.status,
                joined.to_string_lossy(),
                stderr.trim().chars().take(500).collect::<String>()
            )));
        }
        parse_software_page(&output.stdout).map_err(|e| {
            SoftwareError::Unavailable(format!(
                "Lmod's spider {} wrote a software page this host cannot read: {e}",
                spider.display()
            ))
        })
    }
}

#[async_trait::async_trait]
impl SoftwareProvider for Lmod {
    async fn modules(&self) -> Result<Vec<Module>, SoftwareError> {
        Lmod::modules(self).await
    }
}

/// One package of the `jsonSoftwarePage` report.
#[derive(Deserialize)]
struct Package {
    package: String,
    #[serde(default, deserialize_with = "string_or_none")]
    description: Option<String>,
    /// A string, or `false` for a package without versions.
    #[serde(
        rename = "defaultVersionName",
        default,
        deserialize_with = "string_or_none"
    )]
    default_version_name: Option<String>,
    #[serde(default)]
    versions: Vec<Version>,
}

#[derive(Deserialize)]
struct Version {
    #[serde(rename = "versionName", default, deserialize_with = "string_or_none")]
    version_name: Option<String>,
    #[serde(rename = "markedDefault", default)]
    marked_default: bool,
    /// Zero-padded, so that comparing strings orders versions (12 > 9).
    #[serde(rename = "canonicalVersionString", default)]
    canonical: String,
    #[serde(default, deserialize_with = "string_or_none")]
    help: Option<String>,
}

/// Lmod writes `false` (Lua's nil-ish) where a string is missing.
fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// Reads spider's `jsonSoftwarePage`: versions oldest first, the default the
/// one marked default (a `default` link or `.version` file), else Lmod's own
/// choice (the highest).
pub fn parse_software_page(json: &[u8]) -> Result<Vec<Module>, serde_json::Error> {
    let packages: Vec<Package> = serde_json::from_slice(json)?;
    let mut modules: Vec<Module> = packages
        .into_iter()
        .map(|p| {
            let mut versions: Vec<&Version> = p
                .versions
                .iter()
                .filter(|v| v.version_name.is_some())
                .collect();
            versions.sort_by(|a, b| a.canonical.cmp(&b.canonical));
            let marked = versions
                .iter()
                .find(|v| v.marked_default)
                .and_then(|v| v.version_name.clone());
            let default_version = marked.or(p.default_version_name.clone()).filter(|d| {
                versions
                    .iter()
                    .any(|v| v.version_name.as_deref() == Some(d.as_str()))
            });
            let description = p
                .description
                .clone()
                .or_else(|| {
                    let d = default_version.as_deref();
                    p.versions
                        .iter()
                        .find(|v| v.version_name.as_deref() == d)
                        .and_then(|v| v.help.clone())
                })
                .and_then(|d| {
                    d.lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty())
                        .map(str::to_string)
                });
            let mut names: Vec<String> = Vec::new();
            for v in versions {
                let n = v.version_name.clone().unwrap_or_default();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            Module {
                name: p.package,
                versions: names,
                default_version,
                description,
            }
        })
        .collect();
    modules.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module tree as a site lays it out: two packages, two versions each,
    /// one with a `default` link.
    fn module_tree() -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        let write = |rel: &str, body: &str| {
            let p = dir.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        write("gcc/12.2.0.lua", "whatis(\"Description: GNU compilers\")\nprepend_path(\"PATH\", \"/opt/gcc/12.2.0/bin\")\n");
        write("gcc/13.1.0.lua", "whatis(\"Description: GNU compilers\")\nprepend_path(\"PATH\", \"/opt/gcc/13.1.0/bin\")\n");
        write("python/3.9.lua", "help([[Python, the language]])\n");
        write("python/3.11.lua", "help([[Python, the language]])\n");
        std::os::unix::fs::symlink("3.9.lua", dir.0.join("python/default")).unwrap();
        dir
    }

    /// A temporary directory removed on drop, without another dependency.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!("s3m-lmod-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn lmod_for(dir: &Path) -> Lmod {
        Lmod::new(None, vec![dir.to_path_buf()], Duration::from_secs(60))
    }

    #[tokio::test]
    async fn real_lmod_finds_versions_and_defaults() {
        let tree = module_tree();
        let modules = lmod_for(&tree.0)
            .modules()
            .await
            .expect("Lmod's spider must run: install Lmod (apt-get install lmod)");
        assert_eq!(
            modules,
            vec![
                Module {
                    name: "gcc".into(),
                    versions: vec!["12.2.0".into(), "13.1.0".into()],
                    // no marked default: Lmod picks the highest
                    default_version: Some("13.1.0".into()),
                    description: Some("GNU compilers".into()),
                },
                Module {
                    name: "python".into(),
                    // numeric order, not string order
                    versions: vec!["3.9".into(), "3.11".into()],
                    default_version: Some("3.9".into()),
                    description: Some("Python, the language".into()),
                },
            ]
        );
    }

    #[tokio::test]
    async fn reuses_the_answer_until_it_expires() {
        let tree = module_tree();
        let lmod = lmod_for(&tree.0);
        assert_eq!(lmod.modules().await.unwrap().len(), 2);
        std::fs::create_dir_all(tree.0.join("cmake")).unwrap();
        std::fs::write(tree.0.join("cmake/3.27.9.lua"), "").unwrap();
        assert_eq!(lmod.modules().await.unwrap().len(), 2, "cached");
        let fresh = Lmod::new(None, vec![tree.0.clone()], Duration::ZERO);
        assert_eq!(
            fresh.modules().await.unwrap().len(),
            3,
            "a zero TTL reads again"
        );
    }

    #[tokio::test]
    async fn a_missing_module_directory_says_so() {
        let lmod = lmod_for(Path::new("/nonexistent/modulefiles"));
        let SoftwareError::Unavailable(m) = lmod.modules().await.unwrap_err() else {
            panic!()
        };
        assert!(m.contains("/nonexistent/modulefiles"), "{m}");
    }

    #[tokio::test]
    async fn a_missing_spider_says_how_to_install_it() {
        let tree = module_tree();
        let lmod = Lmod::new(
            Some("/nonexistent/spider".into()),
            vec![tree.0.clone()],
            DEFAULT_CACHE,
        );
        let SoftwareError::Unavailable(m) = lmod.modules().await.unwrap_err() else {
            panic!()
        };
        assert!(m.contains("install Lmod"), "{m}");
    }

    /// Lmod ships modulefiles of its own without versions (`lmod`,
    /// `settarg`), for which spider writes `"defaultVersionName": false`.
    #[tokio::test]
    async fn real_lmod_reads_unversioned_modules() {
        let core = Path::new("/usr/share/lmod/lmod/modulefiles/Core");
        assert!(
            core.is_dir(),
            "Lmod's own modulefiles are missing: install Lmod (apt-get install lmod)"
        );
        let modules = lmod_for(core).modules().await.unwrap();
        let lmod = modules
            .iter()
            .find(|m| m.name == "lmod")
            .expect("the lmod module");
        assert!(lmod.versions.is_empty());
        assert_eq!(lmod.default_version, None);
        assert_eq!(
            lmod.description.as_deref(),
            Some("Lmod: An Environment Module System")
        );
    }

    #[test]
    fn parses_a_software_page() {
        let page = br#"[{"package":"x","defaultVersionName":false,"versions":[{"full":"x","wV":"M.*zfinal"}]},
                        {"package":"a","defaultVersionName":"2","versions":[
                          {"versionName":"10","canonicalVersionString":"000000010.*zfinal","markedDefault":false},
                          {"versionName":"2","canonicalVersionString":"000000002.*zfinal","markedDefault":false,"help":"\n  A tool\nmore"}]}]"#;
        let m = parse_software_page(page).unwrap();
        assert_eq!(m[0].name, "a");
        assert_eq!(m[0].versions, ["2", "10"]);
        assert_eq!(m[0].default_version.as_deref(), Some("2"));
        assert_eq!(m[0].description.as_deref(), Some("A tool"));
        assert_eq!(m[1].name, "x");
        assert!(m[1].versions.is_empty());
        assert!(parse_software_page(b"not json").is_err());
    }

    #[test]
    fn configuration_is_checked() {
        let t = |s: &str| toml::from_str::<toml::Table>(s).unwrap();
        assert!(Lmod::from_table(&t("")).unwrap().is_none());
        assert!(Lmod::from_table(&t(r#"modulepath = ["/sw/modulefiles"]"#))
            .unwrap()
            .is_some());
        assert!(Lmod::from_table(&t(r#"modulepath = "/a:/b""#))
            .unwrap()
            .is_some());
        assert!(Lmod::from_table(&t(r#"modulepath = ["relative"]"#)).is_err());
        assert!(Lmod::from_table(&t(r#"modulepath = 3"#)).is_err());
    }
}
