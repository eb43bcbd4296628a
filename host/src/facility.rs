//! The facility configuration (config/facility.toml): one shape and one
//! reader, shared with the components, in the `s3m-wire` crate. The host
//! reads it at start; the wiring (wiring.rs) takes the sections its
//! providers need from it.

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
pub use s3m_wire::facility::{Digests, FacilityConfig, DIGEST_ENV, SUMMARY_DIGEST_ENV};
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

/// The [`FacilityConfig::digests`] of one facility.toml, handed to every
/// request of a component that mounts it (in [`DIGEST_ENV`] and
/// [`SUMMARY_DIGEST_ENV`]), so that the component reads JSON instead of
/// parsing TOML. An edit, a rename over the
/// file or a new file is read at the next request, as when the component
/// read the file itself.
///
/// How a request knows the file is unchanged: the directory is watched
/// (inotify), and a request first reads the watch without waiting. The
/// kernel queues a change before the write or rename that made it returns,
/// so a request that starts after it sees it; no change costs one `read`
/// that finds nothing, where checking the file's metadata (`statx`) cost
/// about 4 µs of each request (issue 13). On a change, or where a watch
/// cannot follow the file (a symlink in its path, the directory itself
/// moved or deleted, no inotify), the metadata is checked as before: size,
/// modification and change times, inode.
pub struct FacilityDigest {
    path: PathBuf,
    /// Held while a request checks and, on a change, reads the file: a
    /// request that comes while another reads waits for its result rather
    /// than answering from the old one.
    state: Mutex<State>,
}

struct State {
    /// `None`: check the metadata on every request.
    watch: Option<Inotify>,
    cached: Option<(Stamp, Option<Arc<Digests>>)>,
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

/// What in the watched directory counts as a change (any file: an editor
/// that writes a new file and renames it over facility.toml shows as a
/// rename), and the directory itself going away.
fn watched_events() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
        | AddWatchFlags::IN_ONLYDIR
}

/// A watch of `dir` that sees every change to `dir`/facility.toml, or
/// `None` where one cannot: a symlink anywhere in the path (its target may
/// change where no watch of `dir` sees it), or no inotify.
fn watch(dir: &Path, file: &Path) -> Option<Inotify> {
    let absolute = std::path::absolute(dir).ok()?;
    if std::fs::canonicalize(dir).ok()? != absolute {
        return None;
    }
    if std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink()) {
        return None;
    }
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify.add_watch(&absolute, watched_events()).ok()?;
    Some(inotify)
}

/// What a look at the watch found.
enum Seen {
    Nothing,
    Changes,
    /// The watch can no longer follow the file.
    Lost,
}

fn look(watch: &Inotify) -> Seen {
    match watch.read_events() {
        Err(Errno::EAGAIN) => Seen::Nothing,
        Err(_) => Seen::Lost,
        Ok(events) => {
            let lost = AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_IGNORED
                | AddWatchFlags::IN_UNMOUNT;
            if events.iter().any(|e| e.mask.intersects(lost)) {
                Seen::Lost
            } else {
                // Including IN_Q_OVERFLOW: changes were dropped.
                Seen::Changes
            }
        }
    }
}

impl FacilityDigest {
    /// The digest of `dir`/facility.toml, for components that mount `dir`
    /// at [`GUEST_DIR`].
    pub fn new(dir: &Path) -> Arc<Self> {
        let path = dir.join("facility.toml");
        let watch = watch(dir, &path);
        if watch.is_none() {
            tracing::debug!(
                "{}: no inotify watch (a symlink in the path, or no inotify); its metadata is checked on every request",
                path.display()
            );
        }
        Arc::new(Self {
            path,
            state: Mutex::new(State {
                watch,
                cached: None,
            }),
        })
    }

    /// The digests of the file as it is now; `None` when there is no file
    /// or it is not a valid configuration (the component then reads the file
    /// and answers the error that names the problem).
    pub fn current(&self) -> Option<Arc<Digests>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        if let (Some(watch), Some((_, digest))) = (&state.watch, &state.cached) {
            match look(watch) {
                Seen::Nothing => return digest.clone(),
                Seen::Changes => {}
                Seen::Lost => state.watch = None,
            }
        }
        // A file renamed in may be a symlink, whose target no watch of the
        // directory follows.
        if state.watch.is_some()
            && std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_symlink())
        {
            state.watch = None;
        }
        // The stamp is taken before the text is read, so a write between
        // the two shows as a changed stamp at the next request.
        let Some(stamp) = Stamp::of(&self.path) else {
            state.cached = None;
            return None;
        };
        if let Some((seen, digest)) = &state.cached {
            if *seen == stamp {
                return digest.clone();
            }
        }
        let digest = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| FacilityConfig::digests(&text))
            .map(Arc::new);
        state.cached = Some((stamp, digest.clone()));
        digest
    }

    /// Whether requests are answered from the watch (for tests).
    #[cfg(test)]
    fn watched(&self) -> bool {
        self.state.lock().unwrap().watch.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = FacilityDigest::new(dir.path());
        assert!(d.watched(), "a plain directory is watched");
        assert_eq!(d.current(), None, "no file, no digest");
        let file = dir.path().join("facility.toml");
        std::fs::write(&file, "[[resources]]\nname = \"a\"\n").unwrap();
        let first = d.current().expect("a digest of a valid file");
        assert!(first.whole.contains("\"a\""));
        assert!(
            Arc::ptr_eq(&first, &d.current().unwrap()),
            "unchanged file, same digest"
        );
        // Same length, rewritten in place.
        std::fs::write(&file, "[[resources]]\nname = \"b\"\n").unwrap();
        assert!(d.current().unwrap().whole.contains("\"b\""));
        // Replaced by a rename.
        let other = dir.path().join("new.toml");
        std::fs::write(&other, "[[resources]]\nname = \"c\"\n").unwrap();
        std::fs::rename(&other, &file).unwrap();
        assert!(d.current().unwrap().whole.contains("\"c\""));
        std::fs::write(&file, "[[resources]\n").unwrap();
        assert_eq!(d.current(), None, "an invalid file has no digest");
        // Fixed again, then the file deleted.
        std::fs::write(&file, "[[resources]]\nname = \"d\"\n").unwrap();
        assert!(d.current().unwrap().whole.contains("\"d\""));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(d.current(), None, "a deleted file has no digest");
        assert!(d.watched());
        // A symlink renamed in: its target changes where no watch of the
        // directory sees it, so the metadata is checked from then on.
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("real.toml");
        std::fs::write(&target, "[[resources]]\nname = \"e\"\n").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::fs::rename(&link, &file).unwrap();
        assert!(d.current().unwrap().whole.contains("\"e\""));
        assert!(!d.watched(), "a symlinked file is not left to the watch");
        std::fs::write(&target, "[[resources]]\nname = \"f\"\n").unwrap();
        assert!(d.current().unwrap().whole.contains("\"f\""));
    }

    #[test]
    fn a_symlinked_file_or_a_moved_directory_is_checked_on_every_request() {
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("real.toml");
        std::fs::write(&target, "[[resources]]\nname = \"a\"\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("facility.toml")).unwrap();
        let d = FacilityDigest::new(dir.path());
        assert!(!d.watched());
        assert!(d.current().unwrap().whole.contains("\"a\""));
        std::fs::write(&target, "[[resources]]\nname = \"b\"\n").unwrap();
        assert!(d.current().unwrap().whole.contains("\"b\""));

        // The watched directory moved away, another put in its place.
        let parent = tempfile::tempdir().unwrap();
        let config = parent.path().join("config");
        std::fs::create_dir(&config).unwrap();
        std::fs::write(
            config.join("facility.toml"),
            "[[resources]]\nname = \"c\"\n",
        )
        .unwrap();
        let d = FacilityDigest::new(&config);
        assert!(d.watched());
        assert!(d.current().unwrap().whole.contains("\"c\""));
        std::fs::rename(&config, parent.path().join("old")).unwrap();
        std::fs::create_dir(&config).unwrap();
        std::fs::write(
            config.join("facility.toml"),
            "[[resources]]\nname = \"dd\"\n",
        )
        .unwrap();
        assert!(d.current().unwrap().whole.contains("\"dd\""));
        assert!(!d.watched(), "a watch of the old directory is dropped");
        std::fs::write(
            config.join("facility.toml"),
            "[[resources]]\nname = \"e\"\n",
        )
        .unwrap();
        assert!(d.current().unwrap().whole.contains("\"e\""));
    }
}
