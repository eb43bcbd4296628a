//! How the local scheduler starts a job so that it can touch only what its
//! project's user could touch on a real cluster.
//!
//! `isolation = "sandbox"` (the default): the host (root) starts `bwrap`
//! (Debian's bubblewrap) with new PID, IPC and UTS namespaces, every
//! capability dropped but the two that switching users needs, and a root of
//! its own in which only `/usr`, `/etc` (read-only), a fresh `/proc`, `/dev`
//! and `/tmp`, the project's own directory and the operator's
//! `shared_directories` exist. The host's state directory (the facility key,
//! key-value, broker records), other projects' directories and the rest of
//! the host do not. Inside, `setpriv` becomes the project's user (its own
//! groups, no capabilities, no new privileges) before anything of the job's
//! runs.
//!
//! `isolation = "none"`: no sandbox; jobs run as the host's user or, with
//! `run_as = "project-user"`, as the project's. For a one-user laptop only.
//!
//! In both modes:
//! - the job's `standard_input`, `standard_output` and `standard_error` are
//!   opened by the job's own user (a shell inside the sandbox redirects and
//!   then execs the script), never by the host;
//! - the job's `environment` reaches only the job: the privileged helpers
//!   are run by absolute path with an empty environment, and the job's
//!   variables are applied by the last unprivileged step (`bwrap --setenv`,
//!   or `env -i`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const SETPRIV: &str = "/usr/bin/setpriv";
pub const BWRAP: &str = "/usr/bin/bwrap";
const ENV: &str = "/usr/bin/env";
const SH: &str = "/bin/sh";
/// Where the job's script appears inside the sandbox.
const SCRIPT_IN_SANDBOX: &str = "/run/s3m/job";
/// The environment of the privileged helpers: nothing of the job's.
const HELPER_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone)]
pub enum Isolation {
    /// bubblewrap, as the project's user.
    Sandbox { shared: Vec<PathBuf> },
    /// No sandbox; as the project's user (`true`) or the host's.
    None { as_project_user: bool },
}

/// A project's Unix user, looked up in the system's user database.
#[derive(Debug, Clone)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
}

impl JobUser {
    pub fn lookup(name: &str) -> Option<Self> {
        let user = nix::unistd::User::from_name(name).ok()??;
        Some(Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// What one launch needs.
pub struct Launch<'a> {
    pub user: Option<&'a JobUser>,
    pub script: &'a Path,
    /// Writable, bound into the sandbox: the project's own directory.
    pub project_dir: Option<&'a Path>,
    pub cwd: &'a str,
    pub stdin: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
    /// NAME=value pairs, applied to the job only.
    pub env: Vec<(String, String)>,
}

/// The shell that, as the job's user, enters the working directory, opens
/// the job's files and runs the script. `$1` working directory, `$2`
/// script, `$3` stdin, `$4` stdout, `$5` stderr.
fn wrapper(same_out_err: bool) -> &'static str {
    if same_out_err {
        "cd -- \"$1\" || exit 1; exec \"$2\" <\"$3\" >>\"$4\" 2>&1"
    } else {
        "cd -- \"$1\" || exit 1; exec \"$2\" <\"$3\" >>\"$4\" 2>>\"$5\""
    }
}

/// Checks at start that this host can isolate jobs; the error says why not
/// and what to do.
pub fn probe() -> Result<(), String> {
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "the host runs as uid {euid}, not root, so it cannot run jobs as their projects' users; \
             run s3m as root, use the Slurm scheduler, or set isolation = \"none\" for a one-user machine"
        ));
    }
    for (tool, package) in [(BWRAP, "bubblewrap"), (SETPRIV, "util-linux")] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} is not installed: install it with `apt-get install {package}`"
            ));
        }
    }
    let nobody = JobUser::lookup("nobody").unwrap_or(JobUser {
        uid: 65534,
        gid: 65534,
    });
    let mut cmd = std::process::Command::new(BWRAP);
    cmd.args(bwrap_base_args())
        .arg("--")
        .arg(SETPRIV)
        .args(setpriv_args(&nobody, false))
        .arg("/bin/true")
        .env_clear()
        .env("PATH", HELPER_PATH)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {SETPRIV}: {e}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "bubblewrap cannot make a sandbox here ({}): it needs mount and PID namespaces \
             (a container may forbid them)",
            text.trim()
        ));
    }
    Ok(())
}

fn setpriv_args(user: &JobUser, init_groups: bool) -> Vec<String> {
    let mut args = vec![
        format!("--reuid={}", user.uid),
        format!("--regid={}", user.gid),
    ];
    if init_groups {
        args.push("--init-groups".into());
    } else {
        args.push("--clear-groups".into());
    }
    args.extend(
        ["--no-new-privs", "--inh-caps=-all", "--"]
            .iter()
            .map(|s| s.to_string()),
    );
    args
}

/// In a sandboxed job's launch, between fork and exec: ignore every signal
/// that a cancel, a time limit or `scancel --signal` can send, other than
/// SIGKILL and SIGSTOP (which cannot be ignored), SIGCONT and SIGCHLD.
///
/// Signals go to the job's whole process group, and the process s3m
/// waits on is bwrap's monitor in that group, not the job. Left to their
/// defaults, a SIGTERM or a SIGUSR1 ended the monitor at once: the job was
/// booked as ended and its slot freed while its processes, under the
/// sandbox's init (which no signal but SIGKILL reaches from outside), ran
/// on without a time limit. Ignored here, the dispositions pass through
/// bwrap and setpriv to `env --default-signal`, which gives the job its
/// defaults back; the monitor then lives until the job's processes end, or
/// until SIGKILL ends the monitor and the sandbox's init with them.
///
/// Only `signal(2)` in a loop: safe to call in the forked child.
pub fn ignore_signals() {
    for sig in 1..=64 {
        if matches!(
            sig,
            libc::SIGKILL
                | libc::SIGSTOP
                | libc::SIGCONT
                | libc::SIGCHLD
                // Faults, not sent by anyone here: ignoring them would hide
                // a crash of the launch itself.
                | libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGFPE
                | libc::SIGILL
                // The C library's own (thread cancellation, setxid), which
                // `env --default-signal` cannot give back.
                | 32
                | 33
        ) {
            continue;
        }
        // Numbers the C library keeps for itself refuse; that is fine.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// The sandbox's root: the system read-only, fresh /proc, /dev and /tmp;
/// no capabilities but those `setpriv` needs to become the job's user.
fn bwrap_base_args() -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for a in [
        // The job ends with the host, as its record says (NODE_FAIL after
        // a restart): SIGKILL to the sandbox when the thread that started
        // it ends, a tokio worker, which lives as long as the host's
        // runtime. Without it a job outlived its host, unaccounted.
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_SETUID",
        "--cap-add",
        "CAP_SETGID",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/etc",
        "/etc",
    ] {
        args.push(a.into());
    }
    // Merged-/usr systems have these as symlinks; others as directories.
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        let path = Path::new(top);
        match std::fs::read_link(path) {
            Ok(target) => {
                args.push("--symlink".into());
                args.push(target.into_os_string());
                args.push(top.into());
            }
            Err(_) if path.is_dir() => {
                for a in ["--ro-bind", top, top] {
                    args.push(a.into());
                }
            }
            Err(_) => {}
        }
    }
    for a in [
        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--perms",
        "0755", "--dir", "/var", "--perms", "1777", "--tmpfs", "/var/tmp", "--perms", "0755",
        "--tmpfs", "/run", "--perms", "0755", "--dir", "/run/s3m",
    ] {
        args.push(a.into());
    }
    args
}

/// Binds `dir` read-write at the same path, its missing ancestors made
/// traversable (bwrap would make them 0700 root).
fn bind_dir(cmd: &mut tokio::process::Command, dir: &Path) {
    let base = [
        "/", "/tmp", "/var", "/var/tmp", "/run", "/usr", "/etc", "/proc", "/dev",
    ];
    let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
    ancestors.reverse();
    for a in ancestors {
        if !base.iter().any(|b| Path::new(b) == a) {
            cmd.args(["--perms", "0755", "--dir"]).arg(a);
        }
    }
    cmd.arg("--bind").arg(dir).arg(dir);
}

/// The command that runs one job, ready to spawn (its stdio and process
/// group are the caller's to set).
pub fn command(isolation: &Isolation, launch: &Launch) -> tokio::process::Command {
    let stdin = if launch.stdin.is_empty() {
        "/dev/null"
    } else {
        launch.stdin
    };
    let same = launch.stdout == launch.stderr;
    let mut cmd;
    match isolation {
        Isolation::Sandbox { shared } => {
            let user = launch.user.expect("a sandboxed job has a user");
            cmd = tokio::process::Command::new(BWRAP);
            cmd.args(bwrap_base_args());
            if let Some(dir) = launch.project_dir {
                bind_dir(&mut cmd, dir);
            }
            for dir in shared {
                if dir.is_dir() {
                    bind_dir(&mut cmd, dir);
                }
            }
            cmd.arg("--ro-bind")
                .arg(launch.script)
                .arg(SCRIPT_IN_SANDBOX)
                .args(["--clearenv", "--setenv", "PATH", HELPER_PATH, "--", SETPRIV])
                .args(setpriv_args(user, true))
                // The job gets back the signals the launch ignored
                // (see [`ignore_signals`]).
                .args([ENV, "--default-signal", "-i", "--"]);
            for (k, v) in &launch.env {
                cmd.arg(format!("{k}={v}"));
            }
            cmd.args([
                SH,
                "-c",
                wrapper(same),
                "s3m-job",
                launch.cwd,
                SCRIPT_IN_SANDBOX,
            ]);
        }
        Isolation::None { .. } => {
            match launch.user {
                Some(user) => {
                    cmd = tokio::process::Command::new(SETPRIV);
                    cmd.args(setpriv_args(user, true)).arg(ENV);
                }
                None => cmd = tokio::process::Command::new(ENV),
            }
            cmd.args(["-i", "--"]);
            for (k, v) in &launch.env {
                cmd.arg(format!("{k}={v}"));
            }
            cmd.args([SH, "-c", wrapper(same), "s3m-job", launch.cwd])
                .arg(launch.script);
        }
    }
    cmd.args([stdin, launch.stdout, launch.stderr]);
    // The helpers get nothing of the host's or the job's environment.
    cmd.env_clear().env("PATH", HELPER_PATH);
    cmd
}

/// `path` with `.` removed; `None` when it is relative or climbs with `..`.
pub fn normalized(path: &str) -> Option<PathBuf> {
    use std::path::Component;
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_refuses_climbing_and_relative_paths() {
        assert_eq!(normalized("/a/./b/"), Some(PathBuf::from("/a/b")));
        assert_eq!(normalized("/a/../b"), None);
        assert_eq!(normalized("a/b"), None);
    }

    #[test]
    fn helpers_get_no_job_environment() {
        let user = JobUser {
            uid: 1000,
            gid: 1000,
        };
        let launch = Launch {
            user: Some(&user),
            script: Path::new("/s/1.sh"),
            project_dir: Some(Path::new("/w/p")),
            cwd: "/w/p",
            stdin: "",
            stdout: "/w/p/o",
            stderr: "/w/p/o",
            env: vec![
                ("PATH".into(), "/evil".into()),
                ("LD_PRELOAD".into(), "/evil.so".into()),
            ],
        };
        let cmd = command(&Isolation::Sandbox { shared: vec![] }, &launch);
        let std = cmd.as_std();
        assert_eq!(std.get_program(), BWRAP);
        let envs: Vec<_> = std.get_envs().collect();
        assert!(envs.iter().all(|(k, _)| *k == "PATH"), "{envs:?}");
        assert!(envs
            .iter()
            .all(|(_, v)| v.map(|v| v == HELPER_PATH).unwrap_or(true)));
        let args: Vec<_> = std
            .get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        // The job's variables come after the user switch, given to `env -i`.
        let setpriv = args.iter().position(|a| a == SETPRIV).unwrap();
        let evil = args.iter().position(|a| a == "PATH=/evil").unwrap();
        assert!(evil > setpriv, "{args:?}");
        assert!(args.iter().any(|a| a == "LD_PRELOAD=/evil.so"));
        assert_eq!(args.iter().filter(|a| a.contains("/evil")).count(), 2);
    }
}
