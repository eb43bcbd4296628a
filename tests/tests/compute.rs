//! Compute ("Slurm indirect") over HTTP against the real `s3m` binary, once
//! with a real Slurm cluster behind it (munged, slurmctld, slurmd and
//! slurmrestd started by `s3m_tests::slurm`) and once with the embedded
//! `local` scheduler: every scenario is written once and run per provider
//! (`<scenario>::slurm` and `<scenario>::local`).

use anyhow::{bail, Context, Result};
use s3m_tests::{expect_error, slurm, AppOptions, TestApp};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const RESOURCE: &str = "cedar";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Provider {
    Slurm,
    Local,
}

/// One s3m serving the compute component over one provider.
struct Env {
    app: TestApp,
    provider: Provider,
    /// Where job output may be written (readable by the test, writable by the job's user).
    out_dir: PathBuf,
    /// The local provider's output directory, removed on drop.
    _tmp: Option<tempfile::TempDir>,
}

fn facility(compute: &str) -> String {
    format!(
        "[[resources]]\nname = \"{RESOURCE}\"\ndescription = \"test cluster\"\n[resources.compute]\n{compute}\n\
         [[resources]]\nname = \"tape\"\ndescription = \"no compute here\"\n"
    )
}

fn start(provider: Provider, projects: &[&str]) -> Result<Env> {
    start_with(provider, projects, &[])
}

/// As `start`, with more `s3m up` arguments.
fn start_with(provider: Provider, projects: &[&str], up_args: &[&str]) -> Result<Env> {
    let mut tmp = None;
    let (compute, out_dir) = match provider {
        Provider::Slurm => {
            let cluster = slurm::shared();
            for p in projects {
                slurm::ensure_project_user(p)?;
            }
            (
                cluster.compute_config(&cluster.restd_url),
                cluster.work_dir.clone(),
            )
        }
        Provider::Local => {
            // Jobs run sandboxed as the project's user: like Slurm's work
            // directory, the output directory is shared (1777) and bound
            // into every sandbox.
            for p in projects {
                slurm::ensure_project_user(p)?;
            }
            let dir = tempfile::Builder::new()
                .prefix("s3m-compute-local-")
                .tempdir()?;
            let path = dir.path().to_path_buf();
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777))?;
            }
            tmp = Some(dir);
            (
                format!(
                    "scheduler = \"local\"\nslots = 64\nshared_directories = [\"{}\"]\n",
                    path.display()
                ),
                path,
            )
        }
    };
    let mut opts = AppOptions::only(&["compute"]).with_facility(facility(&compute));
    opts.up_args.extend(up_args.iter().map(|a| a.to_string()));
    let app = TestApp::start(opts)?;
    Ok(Env {
        app,
        provider,
        out_dir,
        _tmp: tmp,
    })
}

impl Env {
    fn path(&self, version: &str, rest: &str) -> String {
        if version == "legacy" {
            format!("/slurm/v0.0.42/{RESOURCE}/{rest}")
        } else {
            format!("/slurm/open/{version}/{RESOURCE}/{rest}")
        }
    }

    async fn get(&self, token: &str, version: &str, rest: &str) -> Result<reqwest::Response> {
        Ok(self
            .app
            .client()
            .get(self.app.url(&self.path(version, rest)))
            .header("Authorization", token)
            .send()
            .await?)
    }

    async fn delete(&self, token: &str, rest: &str) -> Result<reqwest::Response> {
        Ok(self
            .app
            .client()
            .delete(self.app.url(&self.path("v0.0.43", rest)))
            .header("Authorization", token)
            .send()
            .await?)
    }

    async fn post(
        &self,
        token: &str,
        version: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .app
            .client()
            .post(self.app.url(&self.path(version, "job/submit")))
            .header("Authorization", token)
            .json(body);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        Ok(req.send().await?)
    }

    async fn post_raw(&self, token: &str, body: &str) -> Result<reqwest::Response> {
        Ok(self
            .app
            .client()
            .post(self.app.url(&self.path("v0.0.43", "job/submit")))
            .header("Authorization", token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?)
    }

    /// Submits and returns the job id.
    async fn submit(&self, token: &str, job: Value) -> Result<u64> {
        let res = self
            .post(token, "v0.0.43", &json!({ "job": job }), None)
            .await?;
        let body = ok_json(res).await?;
        for key in [
            "meta",
            "errors",
            "warnings",
            "job_id",
            "step_id",
            "job_submit_user_msg",
        ] {
            if body.get(key).is_none() {
                bail!("submit answer lacks `{key}`: {body}");
            }
        }
        assert_eq!(body["step_id"], "batch");
        body["job_id"]
            .as_u64()
            .with_context(|| format!("job_id is not a number: {body}"))
    }

    async fn job(&self, token: &str, id: u64) -> Result<Value> {
        let body = ok_json(self.get(token, "v0.0.43", &format!("job/{id}")).await?).await?;
        let jobs = body["jobs"].as_array().context("no jobs array")?;
        if jobs.len() != 1 {
            bail!("GET job/{id} should hold exactly that job: {body}");
        }
        Ok(jobs[0].clone())
    }

    /// Polls the job until its state is one of `states`.
    async fn wait_state(
        &self,
        token: &str,
        id: u64,
        states: &[&str],
        timeout: Duration,
    ) -> Result<Value> {
        let start = Instant::now();
        loop {
            let job = self.job(token, id).await?;
            let state = job["job_state"][0].as_str().unwrap_or_default().to_string();
            if states.contains(&state.as_str()) {
                return Ok(job);
            }
            if start.elapsed() > timeout {
                bail!("job {id} is {state} after {timeout:?}, not one of {states:?}: {job}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls the job until its state carries no flag (COMPLETING).
    async fn wait_flags_gone(&self, token: &str, id: u64) -> Result<Value> {
        let start = Instant::now();
        loop {
            let job = self.job(token, id).await?;
            if job["job_state"].as_array().is_some_and(|s| s.len() == 1) {
                return Ok(job);
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("job {id} still completing after 60 s: {job}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn job_ids(&self, token: &str, version: &str) -> Result<Vec<u64>> {
        let body = ok_json(self.get(token, version, "jobs").await?).await?;
        for key in [
            "jobs",
            "last_backfill",
            "last_update",
            "meta",
            "errors",
            "warnings",
        ] {
            if body.get(key).is_none() {
                bail!("jobs answer lacks `{key}`: {body}");
            }
        }
        Ok(body["jobs"]
            .as_array()
            .context("jobs is not an array")?
            .iter()
            .filter_map(|j| j["job_id"].as_u64())
            .collect())
    }
}

async fn ok_json(res: reqwest::Response) -> Result<Value> {
    let status = res.status();
    let text = res.text().await?;
    if status != 200 {
        bail!("expected HTTP 200, got {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("answer is not JSON: {text}"))
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), s3m_tests::free_port())
}

macro_rules! per_provider {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn slurm() -> anyhow::Result<()> {
                super::$scenario(super::Provider::Slurm).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn local() -> anyhow::Result<()> {
                super::$scenario(super::Provider::Local).await
            }
        }
    )*};
}

per_provider!(
    job_runs_to_completion_with_its_output,
    sleeping_job_is_cancelled,
    a_cancelled_job_reads_cancelled_at_once,
    projects_see_only_their_own_jobs,
    readonly_token_reads_but_cannot_submit_or_cancel,
    unknown_resource_is_404,
    bad_bodies_and_job_ids_are_400,
    cluster_endpoints_answer_in_each_version,
    idempotency_key_submits_once_under_concurrency,
    job_over_its_time_limit_times_out,
    jobs_cannot_reach_the_host_or_other_projects,
);

/// An Idempotency-Key is remembered for `--idempotency-ttl`: within it the
/// same key returns the first job, after it the key submits a new one, and
/// key-value keeps nothing of the old record.
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_is_forgotten_after_its_ttl() -> Result<()> {
    let project = "IDM051";
    let env = start_with(
        Provider::Local,
        &[project],
        &["--idempotency-ttl", "2s", "--sweep-interval", "200ms"],
    )?;
    let token = env.app.token(&["compute-ace"], project)?;
    let job = json!({"job": {"name": "ttl", "script": "#!/bin/bash\ntrue\n", "current_working_directory": env.out_dir,
                              "standard_output": env.out_dir.join("ttl-%j.out")}});
    let key = unique("ttl");
    let first = ok_json(env.post(&token, "v0.0.43", &job, Some(&key)).await?).await?;
    let again = ok_json(env.post(&token, "v0.0.43", &job, Some(&key)).await?).await?;
    assert_eq!(
        first["job_id"], again["job_id"],
        "within the TTL: the same job"
    );
    let records = || -> Result<usize> {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM spin_key_value WHERE key LIKE 'compute/idempotency/%'\").fetchone()[0])")
            .arg(env.app.state_dir.join("key-value.db"))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    assert_eq!(records()?, 3, "claim, job and when it was claimed");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(records()?, 0, "the expired record is swept from key-value");
    let later = ok_json(env.post(&token, "v0.0.43", &job, Some(&key)).await?).await?;
    assert_ne!(
        first["job_id"], later["job_id"],
        "after the TTL the key submits a new job"
    );
    Ok(())
}

/// A `compute-ace` token must never become the host. A job of STF040 tries
/// to read the host's state directory (the facility key, key-value with
/// every token record), another project's private output, a root-only file
/// through `standard_input`, to write into a root-only directory through
/// `standard_output`, and to get root through `environment` (a PATH of fake
/// helpers, LD_PRELOAD). Every attempt fails, on both schedulers.
async fn jobs_cannot_reach_the_host_or_other_projects(provider: Provider) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let env = start(provider, &["STF040", "PRJ101"])?;
    // As a real deployment might have it: the app's directory is not
    // private; the host's own modes must protect what is inside.
    std::fs::set_permissions(env.app.dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let state = env.app.state_dir.clone();
    let victim = env.app.token(&["compute-ace"], "PRJ101")?;
    let attacker = env.app.token(&["compute-ace"], "STF040")?;
    let terminal = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"];
    let wait = Duration::from_secs(60);

    // PRJ101 keeps a secret in a private directory, and in its job's output.
    let private = env.out_dir.join(unique("prj101-private"));
    let id = env
        .submit(
            &victim,
            json!({"script": format!("#!/bin/bash\nmkdir -m 700 -p {p}\necho prj101-secret > {p}/secret\necho prj101-secret\n", p = private.display()),
                   "current_working_directory": env.out_dir,
                   "standard_output": env.out_dir.join(format!("{}-%j.out", unique("victim")))}),
        )
        .await?;
    let job = env.wait_state(&victim, id, &terminal, wait).await?;
    assert_eq!(job["job_state"][0], "COMPLETED", "{job}");
    let victim_output = job["standard_output"]
        .as_str()
        .context("standard_output")?
        .to_string();
    // The output is the project's own: make it private as a careful user would.
    std::fs::set_permissions(&victim_output, std::fs::Permissions::from_mode(0o600))?;

    // Root-only things on the host.
    let root_dir = tempfile::Builder::new()
        .prefix("s3m-root-only-")
        .tempdir()?;
    std::fs::set_permissions(root_dir.path(), std::fs::Permissions::from_mode(0o700))?;
    let root_secret = root_dir.path().join("secret");
    std::fs::write(&root_secret, "root-secret\n")?;
    std::fs::set_permissions(&root_secret, std::fs::Permissions::from_mode(0o600))?;
    // Fake helpers a root process would run if it looked them up in the
    // job's PATH; world-writable place, visible to the job.
    let fake_bin = env.out_dir.join(unique("fakebin"));
    std::fs::create_dir_all(&fake_bin)?;
    std::fs::set_permissions(&fake_bin, std::fs::Permissions::from_mode(0o755))?;
    let marker = env.out_dir.join(unique("ran-as"));
    for tool in [
        "setpriv", "bwrap", "env", "sh", "bash", "id", "cat", "mkdir", "kill",
    ] {
        let path = fake_bin.join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\n/usr/bin/id -u >> {}\n", marker.display()),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }

    let targets = [
        state.join("facility-key.pem").display().to_string(),
        state.join("key-value.db").display().to_string(),
        private.join("secret").display().to_string(),
        victim_output.clone(),
        root_secret.display().to_string(),
    ];
    let mut script = String::from("#!/bin/bash\n");
    for t in &targets {
        script.push_str(&format!(
            "if /usr/bin/cat '{t}' >/dev/null 2>&1; then echo 'READ {t}'; else echo 'denied {t}'; fi\n"
        ));
    }
    script.push_str(&format!(
        "/usr/bin/ls -A '{s}' 2>/dev/null | /usr/bin/grep -q facility-key && echo 'LISTED {s}'\n\
         /usr/bin/touch '{r}/pwned' 2>/dev/null && echo 'WROTE {r}'\n\
         echo \"uid=$(/usr/bin/id -u)\"\n",
        s = state.display(),
        r = root_dir.path().display()
    ));
    let out = env.out_dir.join(format!("{}-%j.out", unique("attack")));
    let id = env
        .submit(
            &attacker,
            json!({"script": script, "current_working_directory": env.out_dir,
                   "environment": [format!("PATH={}", fake_bin.display()), "LD_PRELOAD=/nonexistent/evil.so"],
                   "standard_output": out}),
        )
        .await?;
    let job = env.wait_state(&attacker, id, &terminal, wait).await?;
    assert_eq!(
        job["job_state"][0], "COMPLETED",
        "the attack job itself runs: {job}"
    );
    let text =
        std::fs::read_to_string(job["standard_output"].as_str().context("standard_output")?)?;
    assert!(
        !text.contains("READ ") && !text.contains("LISTED ") && !text.contains("WROTE "),
        "a job reached what it must not:\n{text}"
    );
    let uid = text
        .lines()
        .find_map(|l| l.strip_prefix("uid="))
        .context("no uid line")?
        .trim()
        .to_string();
    assert_ne!(uid, "0", "the job ran as root:\n{text}");
    assert!(
        !text.contains("prj101-secret") && !text.contains("root-secret"),
        "{text}"
    );
    if let Ok(ran) = std::fs::read_to_string(&marker) {
        assert!(
            !ran.lines().any(|l| l.trim() == "0"),
            "a helper from the job's PATH ran as root: {ran}"
        );
    }

    // A root-only file through standard_input; an output in a root-only directory.
    let id = env
        .submit(
            &attacker,
            json!({"script": "#!/bin/bash\n/usr/bin/cat\n", "current_working_directory": env.out_dir,
                   "standard_input": root_secret, "standard_output": env.out_dir.join(format!("{}-%j.out", unique("stdin")))}),
        )
        .await?;
    let job = env.wait_state(&attacker, id, &terminal, wait).await?;
    assert_ne!(
        job["job_state"][0], "COMPLETED",
        "a job read a root-only file as its input: {job}"
    );
    if let Some(p) = job["standard_output"].as_str() {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        assert!(!text.contains("root-secret"), "{text}");
    }
    let id = env
        .submit(
            &attacker,
            json!({"script": "#!/bin/bash\necho pwned\n", "current_working_directory": env.out_dir,
                   "standard_output": root_dir.path().join("pwned-%j.out")}),
        )
        .await?;
    env.wait_state(&attacker, id, &terminal, wait).await?;
    let made: Vec<_> = std::fs::read_dir(root_dir.path())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        made.len(),
        1,
        "a job created files in a root-only directory: {made:?}"
    );

    // The host's own files are private whatever the job could reach.
    for f in ["facility-key.pem", "key-value.db"] {
        let mode = std::fs::metadata(state.join(f))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} is {mode:o}");
    }
    Ok(())
}

async fn job_runs_to_completion_with_its_output(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    let out = env.out_dir.join(format!("{}-%j.out", unique("hello")));
    let id = env
        .submit(
            &token,
            json!({
                "name": "hello",
                "account": "STF040",
                "tasks": 1,
                "minimum_nodes": 1,
                "time_limit": {"number": 5, "set": true},
                "current_working_directory": env.out_dir,
                "environment": ["PATH=/usr/bin:/bin", "GREETING=hello from s3m"],
                "standard_output": out,
                "script": "#!/bin/bash\necho \"$GREETING\"\necho second line\n",
            }),
        )
        .await?;
    let job = env
        .wait_state(
            &token,
            id,
            &["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"],
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(job["job_state"][0], "COMPLETED", "{job}");
    assert_eq!(job["state"]["current"][0], "COMPLETED", "{job}");
    assert_eq!(job["exit_code"]["return_code"]["number"], 0, "{job}");
    assert_eq!(job["exit_code"]["status"][0], "SUCCESS", "{job}");
    assert_eq!(job["name"], "hello");
    assert!(
        job["account"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("STF040"),
        "{job}"
    );
    if provider == Provider::Slurm {
        assert_eq!(
            job["user_name"], "stf040_auser",
            "jobs run as the project's user: {job}"
        );
    }
    let path = out.to_string_lossy().replace("%j", &id.to_string());
    assert_eq!(job["standard_output"], path.as_str(), "{job}");
    // The output file may land a moment after the state flips.
    let start = Instant::now();
    let text = loop {
        match std::fs::read_to_string(&path) {
            Ok(t) if t.contains("second line") => break t,
            _ if start.elapsed() > Duration::from_secs(10) => bail!("no complete output in {path}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(text, "hello from s3m\nsecond line\n");

    // A failing script reads FAILED with its exit code.
    let id = env
        .submit(
            &token,
            json!({"script": "#!/bin/bash\nexit 3\n", "current_working_directory": env.out_dir,
                               "standard_output": env.out_dir.join("fail-%j.out")}),
        )
        .await?;
    let job = env
        .wait_state(
            &token,
            id,
            &["COMPLETED", "FAILED"],
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(job["job_state"][0], "FAILED", "{job}");
    assert_eq!(job["exit_code"]["return_code"]["number"], 3, "{job}");
    Ok(())
}

/// Slurm counts time limits in minutes: this scenario takes a minute or two.
async fn job_over_its_time_limit_times_out(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    let id = env
        .submit(
            &token,
            json!({"name": "overtime", "script": "#!/bin/bash\nsleep 600\n", "time_limit": 1,
                               "current_working_directory": env.out_dir,
                               "standard_output": env.out_dir.join("overtime-%j.out")}),
        )
        .await?;
    let job = env
        .wait_state(
            &token,
            id,
            &["TIMEOUT", "FAILED", "CANCELLED", "COMPLETED"],
            Duration::from_secs(240),
        )
        .await?;
    assert_eq!(job["job_state"][0], "TIMEOUT", "{job}");
    assert_eq!(job["time_limit"]["number"], 1, "{job}");
    Ok(())
}

/// Waits until the job's output file `out` holds `text` (a job says where
/// it has got to), up to `timeout`; the file's contents.
async fn wait_for_output(
    out: &std::path::Path,
    text: &str,
    id: u64,
    timeout: Duration,
) -> Result<String> {
    let start = Instant::now();
    loop {
        let now = std::fs::read_to_string(out).unwrap_or_default();
        if now.contains(text) {
            return Ok(now);
        }
        if start.elapsed() > timeout {
            bail!("job {id} did not write {text:?} within {timeout:?}; its output: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The processes on this machine whose command line holds `marker` (a job
/// names its own with `exec -a`), as `pgrep -f` lists them.
fn processes_of(marker: &str) -> Result<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whoever cancels a job reads it as cancelled from the cancel's answer on,
/// as Slurm shows it (CANCELLED, with the COMPLETING flag while its
/// processes end), even when the job ignores SIGTERM and so lives on until
/// the SIGKILL that follows. A workflow's terminate relies on this: it
/// reports its job cancelled as soon as it has asked.
async fn a_cancelled_job_reads_cancelled_at_once(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    // A name of its own for the job's sleep, to look for it among processes.
    let marker = unique("stubborn");
    let out = env.out_dir.join(format!("{marker}.out"));
    let script = format!("#!/bin/bash\ntrap '' TERM\necho ready\nexec -a {marker} sleep 300\n");
    let id = env
        .submit(
            &token,
            json!({"name": "stubborn", "script": script,
                   "current_working_directory": env.out_dir,
                   "standard_output": out}),
        )
        .await?;
    // Running, and past its trap (a SIGTERM before it would end it at once).
    wait_for_output(&out, "ready", id, Duration::from_secs(60)).await?;
    ok_json(env.delete(&token, &format!("job/{id}")).await?).await?;
    let job = env.job(&token, id).await?;
    if provider == Provider::Slurm {
        // slurmrestd 22.05 names only the flag of a job that is ending
        // (`job_state_string`), so its base state is not to be seen.
        let state = job["job_state"].to_string();
        assert!(
            state.contains("CANCELLED") || state.contains("COMPLETING"),
            "right after the cancel: {job}"
        );
    } else {
        // SIGTERM is ignored, SIGKILL comes kill_wait (2 s) later.
        assert_eq!(
            job["job_state"],
            json!(["CANCELLED", "COMPLETING"]),
            "while the job's processes live on: {job}"
        );
    }
    // Then its processes end, and with them the flag.
    let job = env.wait_flags_gone(&token, id).await?;
    assert_eq!(job["job_state"], json!(["CANCELLED"]), "{job}");
    // Nothing of the job runs on, on this machine (Slurm's jobs and the
    // local scheduler's run here).
    let left = processes_of(&marker)?;
    assert!(
        left.is_empty(),
        "job {id} is over but its processes run on: pgrep -f {marker} finds {left}"
    );
    Ok(())
}

/// A signal the job catches reaches the job and nothing else: the job runs
/// on, still counted against its slot and its time limit. (A signal once
/// ended the sandbox's monitor, booking the job as ended while it ran on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signal_the_job_catches_leaves_it_running_in_its_slot() -> Result<()> {
    let env = start(Provider::Local, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    let marker = unique("catcher");
    let out = env.out_dir.join(format!("{marker}.out"));
    let script = "#!/bin/bash\ngrep SigIgn /proc/self/status\nfor s in HUP INT QUIT USR1 USR2 ALRM TERM URG XCPU; do trap \"echo got-$s\" $s; done\necho ready\nwhile true; do sleep 0.1; done\n";
    let id = env
        .submit(
            &token,
            json!({"name": "catcher", "script": script,
                   "current_working_directory": env.out_dir, "standard_output": out}),
        )
        .await?;
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    // The job's own processes start with none of the signals a user can
    // send ignored, as under Slurm (the launch's ignoring stops before the
    // job). Only those: a host inherits others from whatever started it.
    let text = wait_for_output(&out, "ready", id, Duration::from_secs(60)).await?;
    let ignored = text
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .with_context(|| format!("no SigIgn line in the job's output: {text}"))?;
    for (name, number) in [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ABRT", 6),
        ("USR1", 10),
        ("USR2", 12),
        ("ALRM", 14),
        ("TERM", 15),
        ("TSTP", 20),
        ("URG", 23),
        ("XCPU", 24),
    ] {
        assert_eq!(
            ignored & (1 << (number - 1)),
            0,
            "the job started with SIG{name} ignored: {text}"
        );
    }
    for sig in ["HUP", "INT", "QUIT", "USR1", "USR2", "ALRM", "URG", "XCPU"] {
        ok_json(
            env.delete(&token, &format!("job/{id}?signal=SIG{sig}"))
                .await?,
        )
        .await?;
        // The job writes got-SIG when its trap runs.
        wait_for_output(&out, &format!("got-{sig}"), id, Duration::from_secs(10)).await?;
        let job = env.job(&token, id).await?;
        assert_eq!(
            job["job_state"],
            json!(["RUNNING"]),
            "after SIG{sig}: {job}"
        );
    }
    // A cancel still ends it, trap and all: SIGTERM, which it catches and
    // outlives, then SIGKILL.
    ok_json(env.delete(&token, &format!("job/{id}")).await?).await?;
    let job = env.wait_flags_gone(&token, id).await?;
    assert_eq!(job["job_state"], json!(["CANCELLED"]), "{job}");
    assert!(
        read().contains("got-TERM"),
        "the cancel's SIGTERM reached the job first: {}",
        read()
    );
    Ok(())
}

async fn sleeping_job_is_cancelled(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    let id = env
        .submit(
            &token,
            json!({"name": "sleeper", "script": "#!/bin/bash\nsleep 300\n",
                               "current_working_directory": env.out_dir,
                               "standard_output": env.out_dir.join("sleeper-%j.out")}),
        )
        .await?;
    env.wait_state(&token, id, &["RUNNING"], Duration::from_secs(60))
        .await?;
    let body = ok_json(
        env.delete(&token, &format!("job/{id}?signal=SIGTERM"))
            .await?,
    )
    .await?;
    assert!(body["status"].is_array(), "{body}");
    let job = env
        .wait_state(
            &token,
            id,
            &["CANCELLED", "FAILED", "COMPLETED"],
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(job["job_state"][0], "CANCELLED", "{job}");
    // Its processes end too: the COMPLETING flag goes.
    env.wait_flags_gone(&token, id).await?;
    if provider == Provider::Slurm {
        let state = slurm::shared().job_state(id)?;
        assert_eq!(
            state, "CANCELLED",
            "Slurm itself (scontrol) reports job {id} as {state}"
        );
    }
    // Cancelling an ended job is refused, not a 500.
    expect_error(env.delete(&token, &format!("job/{id}")).await?, 400).await?;
    // A signal that does not exist.
    let res = env
        .delete(&token, &format!("job/{id}?signal=SIGNOPE"))
        .await?;
    let err = expect_error(res, 400).await?;
    assert!(
        err["message"].as_str().unwrap().contains("SIGNOPE"),
        "{err}"
    );
    Ok(())
}

async fn projects_see_only_their_own_jobs(provider: Provider) -> Result<()> {
    let env = start(provider, &["PRJ101", "PRJ202"])?;
    let a = env.app.token(&["compute-ace"], "PRJ101")?;
    let b = env.app.token(&["compute-ace"], "PRJ202")?;
    let job = |name: &str| {
        json!({"name": name, "script": "#!/bin/bash\nsleep 120\n", "current_working_directory": env.out_dir,
               "standard_output": env.out_dir.join(format!("{name}-%j.out"))})
    };
    let ja = env.submit(&a, job("mine")).await?;
    let jb = env.submit(&b, job("theirs")).await?;
    for version in ["v0.0.42", "v0.0.43", "v0.0.44", "legacy"] {
        let ids_a = env.job_ids(&a, version).await?;
        assert!(
            ids_a.contains(&ja),
            "{version}: project A's list lacks its job {ja}: {ids_a:?}"
        );
        assert!(
            !ids_a.contains(&jb),
            "{version}: project A's list shows B's job {jb}: {ids_a:?}"
        );
        let ids_b = env.job_ids(&b, version).await?;
        assert!(
            ids_b.contains(&jb) && !ids_b.contains(&ja),
            "{version}: B's list {ids_b:?}"
        );
    }
    // Another project's job reads as missing, and cannot be cancelled.
    expect_error(env.get(&a, "v0.0.43", &format!("job/{jb}")).await?, 404).await?;
    expect_error(env.delete(&a, &format!("job/{jb}")).await?, 404).await?;
    env.wait_state(&b, jb, &["PENDING", "RUNNING"], Duration::from_secs(5))
        .await?;
    // A job cannot be submitted under another project's account.
    let res = env
        .post(
            &a,
            "v0.0.43",
            &json!({"job": {"account": "PRJ202", "script": "#!/bin/bash\ntrue\n"}}),
            None,
        )
        .await?;
    expect_error(res, 403).await?;
    for (t, id) in [(&a, ja), (&b, jb)] {
        ok_json(env.delete(t, &format!("job/{id}")).await?).await?;
    }
    Ok(())
}

async fn readonly_token_reads_but_cannot_submit_or_cancel(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let full = env.app.token(&["compute-ace"], "STF040")?;
    let ro = env.app.token(&["compute-ace-readonly"], "STF040")?;
    let other = env.app.token(&["data-streaming"], "STF040")?;
    let id = env
        .submit(
            &full,
            json!({"script": "#!/bin/bash\nsleep 60\n", "current_working_directory": env.out_dir,
                              "standard_output": env.out_dir.join("ro-%j.out")}),
        )
        .await?;
    assert!(env.job_ids(&ro, "v0.0.43").await?.contains(&id));
    env.job(&ro, id).await?;
    let err = expect_error(
        env.post(
            &ro,
            "v0.0.43",
            &json!({"job": {"script": "#!/bin/bash\ntrue\n"}}),
            None,
        )
        .await?,
        403,
    )
    .await?;
    assert!(
        err["message"].as_str().unwrap().contains("compute-ace"),
        "{err}"
    );
    expect_error(env.delete(&ro, &format!("job/{id}")).await?, 403).await?;
    expect_error(env.get(&other, "v0.0.43", "jobs").await?, 403).await?;
    expect_error(env.app.get(&env.path("v0.0.43", "jobs"), None).await?, 401).await?;
    expect_error(
        env.app
            .get(&env.path("v0.0.43", "jobs"), Some("garbage"))
            .await?,
        401,
    )
    .await?;
    ok_json(env.delete(&full, &format!("job/{id}")).await?).await?;
    Ok(())
}

async fn unknown_resource_is_404(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    for path in [
        "/slurm/open/v0.0.43/nosuch/jobs",
        "/slurm/v0.0.42/nosuch/ping",
        "/slurm/open/v0.0.44/tape/partitions",
        "/slurm/open/v0.0.41/cedar/jobs",
        "/slurm/open/v0.0.43/cedar/nothing",
    ] {
        let res = env.app.get(path, Some(&token)).await?;
        expect_error(res, 404)
            .await
            .with_context(|| path.to_string())?;
    }
    let res = env
        .app
        .get("/slurm/open/v0.0.43/nosuch/jobs", Some(&token))
        .await?;
    let err = expect_error(res, 404).await?;
    assert!(
        err["message"].as_str().unwrap().contains("cedar"),
        "the 404 names the resources there are: {err}"
    );
    Ok(())
}

async fn bad_bodies_and_job_ids_are_400(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace"], "STF040")?;
    let before = env.job_ids(&token, "v0.0.43").await?.len();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "rm_rf": true}}),
            "rm_rf",
        ),
        (json!({"job": {"name": "no script"}}), "script"),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "tasks": "two"}}),
            "tasks",
        ),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "time_limit": -5}}),
            "time_limit",
        ),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "environment": "PATH=/bin"}}),
            "environment",
        ),
        (json!({"job": {"script": 42}}), "script"),
        (json!({"job": "echo hi"}), "job"),
        (json!({"script": "#!/bin/bash\ntrue\n"}), "job"),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n"}, "extra": 1}),
            "extra",
        ),
        (json!({"jobs": [{"script": "#!/bin/bash\ntrue\n"}]}), "jobs"),
        (
            json!({"job": {"script": "echo no interpreter line"}}),
            "script",
        ),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "nodes": "lots"}}),
            "nodes",
        ),
        // A NUL byte can reach no process: refused, not a job that fails at launch.
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "name": "a\u{0}b"}}),
            "NUL",
        ),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "environment": ["A=b\u{0}c"]}}),
            "NUL",
        ),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "standard_output": "/tmp/x\u{0}y"}}),
            "NUL",
        ),
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "environment": {"A\u{0}": "b"}}}),
            "NUL",
        ),
        // A huge bad value is not echoed back whole.
        (
            json!({"job": {"script": "#!/bin/bash\ntrue\n", "environment": ["x".repeat(100_000)]}}),
            "environment",
        ),
    ];
    for (body, needle) in cases {
        let res = env.post(&token, "v0.0.43", &body, None).await?;
        let err = expect_error(res, 400)
            .await
            .with_context(|| format!("body {body}"))?;
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "the 400 for {body} should name `{needle}`: {message}"
        );
        assert!(
            message.len() < 1000,
            "a 400 echoed a huge value: {} bytes",
            message.len()
        );
    }
    // v0.0.44 takes `jobs`, but not both forms at once, and one job only.
    let res = env.post(&token, "v0.0.44", &json!({"job": {"script": "#!/bin/bash\ntrue\n"}, "jobs": [{}], "script": "#!/bin/bash\ntrue\n"}), None).await?;
    expect_error(res, 400).await?;
    let res = env
        .post(
            &token,
            "v0.0.44",
            &json!({"jobs": [{}, {}], "script": "#!/bin/bash\ntrue\n"}),
            None,
        )
        .await?;
    expect_error(res, 400).await?;
    for raw in ["", "{not json", "[1,2]", "null"] {
        expect_error(env.post_raw(&token, raw).await?, 400)
            .await
            .with_context(|| format!("raw body {raw:?}"))?;
    }
    for id in ["abc", "12345678901", "1234567890", "-1", "1.5", "0x10"] {
        let err = expect_error(env.get(&token, "v0.0.43", &format!("job/{id}")).await?, 400)
            .await
            .with_context(|| id.to_string())?;
        assert!(err["message"].as_str().unwrap().contains("job_id"), "{err}");
        expect_error(env.delete(&token, &format!("job/{id}")).await?, 400)
            .await
            .with_context(|| id.to_string())?;
    }
    // A well-formed id that no job has.
    expect_error(env.get(&token, "v0.0.43", "job/999999999").await?, 404).await?;
    let res = env
        .app
        .client()
        .put(env.app.url(&env.path("v0.0.43", "jobs")))
        .header("Authorization", &token)
        .send()
        .await?;
    expect_error(res, 405).await?;
    assert_eq!(
        env.job_ids(&token, "v0.0.43").await?.len(),
        before,
        "a refused body must submit nothing"
    );
    Ok(())
}

async fn cluster_endpoints_answer_in_each_version(provider: Provider) -> Result<()> {
    let env = start(provider, &["STF040"])?;
    let token = env.app.token(&["compute-ace-readonly"], "STF040")?;
    for version in ["v0.0.42", "v0.0.43", "v0.0.44", "legacy"] {
        let ping = ok_json(env.get(&token, version, "ping").await?).await?;
        assert_eq!(ping["pings"][0]["pinged"], "UP", "{ping}");
        assert!(
            ping["meta"].is_object()
                && ping["errors"] == json!([])
                && ping["warnings"] == json!([]),
            "{ping}"
        );
        let diag = ok_json(env.get(&token, version, "diag").await?).await?;
        assert!(diag["statistics"]["jobs_submitted"].is_u64(), "{diag}");
        let nodes = ok_json(env.get(&token, version, "nodes").await?).await?;
        assert!(!nodes["nodes"].as_array().unwrap().is_empty(), "{nodes}");
        assert!(nodes["nodes"][0]["cpus"].as_u64().unwrap() > 0, "{nodes}");
        let res = ok_json(env.get(&token, version, "reservations").await?).await?;
        assert!(res["reservations"].is_array(), "{res}");
        let parts = ok_json(env.get(&token, version, "partitions").await?).await?;
        let p = &parts["partitions"][0];
        assert!(
            p["name"].is_string() && p["nodes"]["total"].as_u64().unwrap() >= 1,
            "{parts}"
        );
        assert!(
            p["defaults"]["time"]["number"].as_u64().unwrap() > 0,
            "{parts}"
        );
        assert_eq!(p["cluster"], RESOURCE);
        if version == "v0.0.44" {
            assert!(
                p["nodes"].get("allowed_allocation").is_some() && p.get("topology").is_some(),
                "{parts}"
            );
            assert!(p["nodes"].get("allowed_configuration").is_none(), "{parts}");
        } else {
            assert!(
                p["nodes"].get("allowed_configuration").is_some() && p.get("topology").is_none(),
                "{parts}"
            );
        }
    }
    if provider == Provider::Slurm {
        let parts = ok_json(env.get(&token, "v0.0.43", "partitions").await?).await?;
        assert_eq!(
            parts["partitions"][0]["name"],
            slurm::shared().partition.as_str()
        );
        assert_eq!(
            parts["partitions"][0]["maximums"]["time"]["number"], 60,
            "{parts}"
        );
    }
    Ok(())
}

async fn idempotency_key_submits_once_under_concurrency(provider: Provider) -> Result<()> {
    let project = "IDM050";
    let env = std::sync::Arc::new(start(provider, &[project])?);
    let token = env.app.token(&["compute-ace"], project)?;
    let job = json!({"job": {"name": "idem", "script": "#!/bin/bash\ntrue\n", "current_working_directory": env.out_dir,
                              "standard_output": env.out_dir.join("idem-%j.out")}});
    let before: std::collections::HashSet<u64> =
        env.job_ids(&token, "v0.0.43").await?.into_iter().collect();

    let submit_all = |keys: Vec<String>| {
        let env = env.clone();
        let token = token.clone();
        let job = job.clone();
        async move {
            let tasks: Vec<_> = keys
                .into_iter()
                .map(|key| {
                    let env = env.clone();
                    let token = token.clone();
                    let job = job.clone();
                    tokio::spawn(async move {
                        let body =
                            ok_json(env.post(&token, "v0.0.43", &job, Some(&key)).await?).await?;
                        body["job_id"].as_u64().context("no job_id")
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await??);
            }
            anyhow::Ok(ids)
        }
    };

    let run = unique("idem");
    let distinct = submit_all((0..50).map(|i| format!("{run}-{i}")).collect()).await?;
    let distinct_set: std::collections::HashSet<u64> = distinct.iter().copied().collect();
    assert_eq!(
        distinct_set.len(),
        50,
        "50 distinct keys must make 50 jobs: {distinct:?}"
    );

    let same = submit_all(vec![format!("{run}-same"); 50]).await?;
    let same_set: std::collections::HashSet<u64> = same.iter().copied().collect();
    assert_eq!(
        same_set.len(),
        1,
        "50 submits with one key must all return one job: {same:?}"
    );
    // A later repeat still returns it.
    let again = ok_json(
        env.post(&token, "v0.0.43", &job, Some(&format!("{run}-same")))
            .await?,
    )
    .await?;
    assert_eq!(again["job_id"].as_u64(), same.first().copied());

    let after: std::collections::HashSet<u64> =
        env.job_ids(&token, "v0.0.43").await?.into_iter().collect();
    let new: Vec<u64> = after.difference(&before).copied().collect();
    assert_eq!(
        new.len(),
        51,
        "the scheduler must hold exactly 50 + 1 new jobs, got {}",
        new.len()
    );
    // The same key in another project is another job.
    let other = env.app.token(&["compute-ace"], "STF040")?;
    if env.provider == Provider::Slurm {
        slurm::ensure_project_user("STF040")?;
    }
    let theirs = ok_json(
        env.post(&other, "v0.0.43", &job, Some(&format!("{run}-same")))
            .await?,
    )
    .await?;
    assert!(
        !same_set.contains(&theirs["job_id"].as_u64().unwrap()),
        "keys are per project"
    );
    // A bad key is refused.
    expect_error(env.post(&token, "v0.0.43", &job, Some("")).await?, 400).await?;
    Ok(())
}

/// slurmrestd stopped: the API answers 503 and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurmrestd_stopped_is_503() -> Result<()> {
    let cluster = slurm::shared();
    slurm::ensure_project_user("STF040")?;
    let mut restd = cluster.start_restd()?;
    let app = TestApp::start(
        AppOptions::only(&["compute"]).with_facility(facility(&cluster.compute_config(&restd.url))),
    )?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let ping = format!("/slurm/open/v0.0.43/{RESOURCE}/ping");
    ok_json(app.get(&ping, Some(&token)).await?).await?;
    restd.stop();
    for path in [
        ping.clone(),
        format!("/slurm/open/v0.0.43/{RESOURCE}/jobs"),
        format!("/slurm/open/v0.0.43/{RESOURCE}/job/1"),
    ] {
        let err = expect_error(app.get(&path, Some(&token)).await?, 503)
            .await
            .with_context(|| path.clone())?;
        // The user learns what is down and a request id; the operator
        // internals (slurmrestd's address) go to the log under that id.
        let message = err["message"].as_str().unwrap();
        let address = restd.url.replace("http://", "");
        assert!(!message.contains(&address), "{message}");
        assert!(
            message.contains(RESOURCE) && message.contains("unavailable"),
            "{message}"
        );
        let id = message
            .split("request ")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .with_context(|| format!("no request id in {message}"))?;
        let log = app.stderr_with_line(|l| l.contains(id) && l.contains(&address));
        assert!(
            log.lines().any(|l| l.contains(id) && l.contains(&address)),
            "the log lacks the details under request {id}:\n{log}"
        );
    }
    let res = app
        .client()
        .post(app.url(&format!("/slurm/open/v0.0.43/{RESOURCE}/job/submit")))
        .header("Authorization", &token)
        .json(&json!({"job": {"script": "#!/bin/bash\ntrue\n"}}))
        .send()
        .await?;
    expect_error(res, 503).await?;
    Ok(())
}

/// Submits `#!/bin/bash\ntrue` on v0.0.43 and returns the job id.
async fn submit_true(app: &TestApp, token: &str) -> Result<u64> {
    let res = app
        .client()
        .post(app.url(&format!("/slurm/open/v0.0.43/{RESOURCE}/job/submit")))
        .header("Authorization", token)
        .json(&json!({"job": {"script": "#!/bin/bash\ntrue\n"}}))
        .send()
        .await?;
    ok_json(res).await?["job_id"].as_u64().context("job_id")
}

/// The local scheduler keeps its jobs across a host restart: a second host
/// on the same scheduler state sees the first one's job, and new ids go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_jobs_survive_a_host_restart() -> Result<()> {
    slurm::ensure_project_user("STF040")?;
    let dir = tempfile::tempdir()?;
    let compute = format!(
        "scheduler = \"local\"\nslots = 4\nstate_dir = \"{}\"\ndefault_working_directory = \"{}\"\n",
        dir.path().join("scheduler").display(),
        dir.path().join("projects").display()
    );
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let id = submit_true(&app, &token).await?;
    let job_path = format!("/slurm/open/v0.0.43/{RESOURCE}/job/{id}");
    let start = Instant::now();
    loop {
        let body = ok_json(app.get(&job_path, Some(&token)).await?).await?;
        if body["jobs"][0]["job_state"][0] == "COMPLETED" {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("job {id} did not complete: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(app);

    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let body = ok_json(app.get(&job_path, Some(&token)).await?).await?;
    assert_eq!(body["jobs"][0]["job_state"][0], "COMPLETED", "{body}");
    assert_eq!(
        body["jobs"][0]["exit_code"]["return_code"]["number"], 0,
        "{body}"
    );
    let next = submit_true(&app, &token).await?;
    assert!(next > id, "new jobs must not reuse ids: {next} after {id}");
    Ok(())
}

/// A job that runs when its host stops ends with it: the restarted host
/// reads it NODE_FAIL, and nothing of it runs on unaccounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_job_ends_with_its_host() -> Result<()> {
    use anyhow::ensure;
    use std::os::unix::fs::PermissionsExt;
    slurm::ensure_project_user("STF040")?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir)?;
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o1777))?;
    let compute = format!(
        "scheduler = \"local\"\nslots = 2\nstate_dir = \"{}\"\ndefault_working_directory = \"{}\"\nshared_directories = [\"{}\"]\n",
        dir.path().join("scheduler").display(),
        dir.path().join("projects").display(),
        out_dir.display()
    );
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let marker = unique("outlive");
    let out = out_dir.join(format!("{marker}.out"));
    let job = json!({"job": {"name": "outlive",
        "script": format!("#!/bin/bash\necho ready\nexec -a {marker} sleep 300\n"),
        "current_working_directory": out_dir, "standard_output": out}});
    let res = app
        .client()
        .post(app.url(&format!("/slurm/open/v0.0.43/{RESOURCE}/job/submit")))
        .header("Authorization", &token)
        .json(&job)
        .send()
        .await?;
    let id = ok_json(res).await?["job_id"].as_u64().context("job_id")?;
    wait_for_output(&out, "ready", id, Duration::from_secs(60)).await?;
    drop(app);

    let start = Instant::now();
    loop {
        let left = processes_of(&marker)?;
        if left.is_empty() {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "job {id} runs on 10 s after its host stopped: pgrep -f {marker} finds {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let path = format!("/slurm/open/v0.0.43/{RESOURCE}/job/{id}");
    let body = ok_json(app.get(&path, Some(&token)).await?).await?;
    assert_eq!(body["jobs"][0]["job_state"][0], "NODE_FAIL", "{body}");
    Ok(())
}

/// `isolation = "none"` with `run_as = "project-user"`: the local scheduler
/// runs each job as the project's Unix user, as Slurm does, unsandboxed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_jobs_can_run_as_the_project_user() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    slurm::ensure_project_user("STF040")?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))?;
    let compute = format!(
        "scheduler = \"local\"\nisolation = \"none\"\nrun_as = \"project-user\"\nstate_dir = \"{}\"\ndefault_working_directory = \"{}\"\n",
        dir.path().join("scheduler").display(),
        dir.path().display()
    );
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let env = Env {
        app,
        provider: Provider::Local,
        out_dir: dir.path().to_path_buf(),
        _tmp: None,
    };
    let token = env.app.token(&["compute-ace"], "STF040")?;
    let id = env
        .submit(&token, json!({"script": "#!/bin/bash\nid -un\n", "standard_output": dir.path().join("who-%j.out")}))
        .await?;
    let job = env
        .wait_state(
            &token,
            id,
            &["COMPLETED", "FAILED"],
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(job["job_state"][0], "COMPLETED", "{job}");
    let text = std::fs::read_to_string(dir.path().join(format!("who-{id}.out")))?;
    assert_eq!(text.trim(), "stf040_auser");
    assert_eq!(env.provider, Provider::Local);
    Ok(())
}

/// The local scheduler forgets ended jobs after `min_job_age`, as Slurm
/// does after MinJobAge, so that a long-running host does not grow for ever;
/// their ids are never given again, even after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_ended_jobs_are_purged_after_min_job_age_and_ids_never_return() -> Result<()> {
    slurm::ensure_project_user("STF040")?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("scheduler");
    let compute = format!(
        "scheduler = \"local\"\nslots = 2\nmin_job_age = 1\nstate_dir = \"{}\"\ndefault_working_directory = \"{}\"\n",
        state.display(),
        dir.path().join("projects").display()
    );
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let id = submit_true(&app, &token).await?;
    let job_path = format!("/slurm/open/v0.0.43/{RESOURCE}/job/{id}");
    let record = state.join("jobs").join(format!("{id}.json"));
    let start = Instant::now();
    loop {
        let res = app.get(&job_path, Some(&token)).await?;
        if res.status() == 404 {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("job {id} was not purged: {}", res.text().await?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!record.exists(), "the purged job's record is still on disk");
    drop(app);
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let next = submit_true(&app, &token).await?;
    assert!(next > id, "a purged job's id came back: {next} after {id}");
    Ok(())
}
