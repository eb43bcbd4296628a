//! A small Lmod module tree for tests and benchmarks: real lua modulefiles
//! in a temporary directory, read by the real Lmod the host runs.
//!
//! Needs Debian's `lmod` package (`apt-get install lmod`); without it
//! [`module_tree`] fails saying so.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where Debian's lmod package puts the spider the host runs.
pub const SPIDER: &str = "/usr/share/lmod/lmod/libexec/spider";

/// A module tree as a site lays it out: gcc 12.2.0 and 13.1.0 (no marked
/// default, so Lmod's default is the highest) and python 3.9 and 3.11 (a
/// `default` link to 3.9), each with a `Description:` whatis line.
pub fn module_tree() -> Result<tempfile::TempDir> {
    if !Path::new(SPIDER).is_file() {
        bail!("Lmod is not installed (no {SPIDER}): install it with `apt-get install lmod`");
    }
    let dir = tempfile::Builder::new().prefix("s3m-modules-").tempdir()?;
    let write = |rel: &str, body: &str| -> Result<()> {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent"))?;
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))
    };
    for (package, description, versions) in [
        ("gcc", "GNU Compiler Collection", ["12.2.0", "13.1.0"]),
        ("python", "Python interpreter", ["3.9", "3.11"]),
    ] {
        for v in versions {
            write(
                &format!("{package}/{v}.lua"),
                &format!("whatis(\"Description: {description}\")\nprepend_path(\"PATH\", \"/opt/{package}/{v}/bin\")\n"),
            )?;
        }
    }
    std::os::unix::fs::symlink("3.9.lua", dir.path().join("python/default"))?;
    Ok(dir)
}
