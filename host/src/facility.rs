//! The facility configuration (config/facility.toml): one shape and one
//! reader, shared with the components, in the `s3m-wire` crate. The host
//! reads it at start; the wiring (wiring.rs) takes the sections its
//! providers need from it.

pub use s3m_wire::facility::{FacilityConfig, DIGEST_ENV};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reads facility.toml for `s3m up`. A file that cannot be read or is not
/// valid stops start-up, naming the file and the problem. A missing file
/// is no resources: the host needs it only for the providers it
/// configures, and every component that reads it answers 503 naming it;
/// the same message goes to the log here.
pub fn load(path: &Path) -> anyhow::Result<FacilityConfig> {
    let (facility, missing) = FacilityConfig::load_or_empty(path)?;
    if let Some(why) = missing {
        tracing::warn!("{why}; starting with no resources");
    }
    Ok(facility)
}

/// Where components find facility.toml: the directory mounted here.
pub const GUEST_DIR: &str = "/config";

/// The [`FacilityConfig::digest`] of one facility.toml, handed to every
/// request of a component that mounts it (in [`DIGEST_ENV`]), so that the
/// component reads JSON instead of parsing TOML. Each request first checks
/// the file's metadata (size, modification and change times, inode): an
/// edit, a rename over it or a new file is read at the next request, as
/// when the component read the file itself.
pub struct FacilityDigest {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, Option<Arc<str>>)>>,
}

/// What tells one version of the file from another.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            len: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        })
    }
}

impl FacilityDigest {
    /// The digest of `dir`/facility.toml, for components that mount `dir`
    /// at [`GUEST_DIR`].
    pub fn new(dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: dir.join("facility.toml"),
            cached: Mutex::new(None),
        })
    }

    /// The digest of the file as it is now; `None` when there is no file or
    /// it is not a valid configuration (the component then reads the file
    /// and answers the error that names the problem).
    pub fn current(&self) -> Option<Arc<str>> {
        // The stamp is taken before the text is read, so a write between
        // the two shows as a changed stamp at the next request.
        let stamp = Stamp::of(&self.path)?;
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, digest)) = cached.as_ref() {
            if *seen == stamp {
                return digest.clone();
            }
        }
        let digest = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| FacilityConfig::digest(&text))
            .map(Arc::from);
        *cached = Some((stamp, digest.clone()));
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = FacilityDigest::new(dir.path());
        assert_eq!(d.current(), None, "no file, no digest");
        let file = dir.path().join("facility.toml");
        std::fs::write(&file, "[[resources]]\nname = \"a\"\n").unwrap();
        let first = d.current().expect("a digest of a valid file");
        assert!(first.contains("\"a\""));
        assert!(
            Arc::ptr_eq(&first, &d.current().unwrap()),
            "unchanged file, same digest"
        );
        // Same length, rewritten in place.
        std::fs::write(&file, "[[resources]]\nname = \"b\"\n").unwrap();
        assert!(d.current().unwrap().contains("\"b\""));
        // Replaced by a rename.
        let other = dir.path().join("new.toml");
        std::fs::write(&other, "[[resources]]\nname = \"c\"\n").unwrap();
        std::fs::rename(&other, &file).unwrap();
        assert!(d.current().unwrap().contains("\"c\""));
        std::fs::write(&file, "[[resources]\n").unwrap();
        assert_eq!(d.current(), None, "an invalid file has no digest");
    }
}
