//! Modules listed in the facility configuration, for resources without Lmod
//! or for software Lmod does not describe:
//! `modules = [{ name = "gcc", versions = ["12.2.0", "13.1.0"], default = "13.1.0", description = "GNU compilers" }]`.

use crate::capabilities::software::{Module, SoftwareError, SoftwareProvider};
use serde::Deserialize;

#[derive(Debug, Default)]
pub struct ConfiguredModules {
    modules: Vec<Module>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

impl ConfiguredModules {
    /// Reads `modules` of a `[resources.environment]` table; absent is none.
    pub fn from_table(table: &toml::Table) -> Result<Self, String> {
        let Some(value) = table.get("modules") else {
            return Ok(Self::default());
        };
        let entries: Vec<Entry> = value.clone().try_into().map_err(|e| {
            format!(
                "environment.modules must be a list of {{ name, versions, default, description }} tables: {e}"
            )
        })?;
        let mut modules = Vec::with_capacity(entries.len());
        for e in entries {
            if e.name.is_empty() {
                return Err("environment.modules: a module has an empty name".into());
            }
            if let Some(d) = &e.default {
                if !e.versions.contains(d) {
                    return Err(format!(
                        "environment.modules: default {d:?} of {:?} is not one of its versions {:?}",
                        e.name, e.versions
                    ));
                }
            }
            modules.push(Module {
                name: e.name,
                versions: e.versions,
                default_version: e.default,
                description: e.description,
            });
        }
        Ok(Self { modules })
    }
}

#[async_trait::async_trait]
impl SoftwareProvider for ConfiguredModules {
    async fn modules(&self) -> Result<Vec<Module>, SoftwareError> {
        Ok(self.modules.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[tokio::test]
    async fn reads_listed_modules() {
        let c = ConfiguredModules::from_table(&table(
            r#"modules = [{ name = "cmake", versions = ["3.27.9", "3.30.1"], default = "3.30.1" }]"#,
        ))
        .unwrap();
        let m = c.modules().await.unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "cmake");
        assert_eq!(m[0].default_version.as_deref(), Some("3.30.1"));
    }

    #[test]
    fn refuses_a_default_that_is_not_a_version() {
        let e = ConfiguredModules::from_table(&table(
            r#"modules = [{ name = "cmake", versions = ["3.27.9"], default = "4.0" }]"#,
        ))
        .unwrap_err();
        assert!(e.contains("not one of its versions"), "{e}");
    }

    #[test]
    fn refuses_unknown_keys() {
        assert!(ConfiguredModules::from_table(&table(
            r#"modules = [{ name = "x", version = "1" }]"#
        ))
        .is_err());
    }
}
