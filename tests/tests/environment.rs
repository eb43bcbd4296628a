//! The environment endpoints over HTTP against the real s3m host: partitions
//! as the real Slurm of the test cluster has them (with their limits),
//! modules as a real Lmod finds them in a module tree of the test's own,
//! runtimes, filesystems and variables from the facility configuration, and
//! the refusals (no token, unknown resource, wrong method).
//!
//! Needs Slurm (slurm-wlm, slurmrestd, munge) and Lmod (lmod):
//! `apt-get install slurm-wlm slurmrestd munge lmod`. Missing, the tests fail
//! saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use s3m_tests::lmod::module_tree;
use s3m_tests::{expect_error, expect_json, keys, slurm, AppOptions, TestApp};
use serde_json::{json, Value};

const BASE: &str = "/olcf/v1alpha/environment";
/// The `[resources.environment]` body shared by the tests.
fn environment_table(modulepath: &Path) -> String {
    format!(
        r#"modulepath = ["{}"]
modules = [{{ name = "site-tools", versions = ["1.0"], default = "1.0", description = "Configured, not in Lmod" }}]
container_runtimes = [{{ name = "apptainer", version = "1.3.4", command = "apptainer", description = "Rootless containers" }}]
filesystems = [
  {{ name = "home", mount_path = "/ccs/home", purpose = "source code and small files", purge_policy = "never" }},
  {{ name = "scratch", mount_path = "/lustre/scratch", purpose = "job I/O", purge_policy = "files unused for 90 days" }},
]
variables = {{ OMP_NUM_THREADS = "1", SCRATCH = "/lustre/scratch" }}
"#,
        modulepath.display()
    )
}

/// A facility with `basalt` on the test Slurm cluster (with the module tree),
/// and `shale-archive`, which runs no jobs.
fn facility(compute: &str, modulepath: &Path) -> String {
    format!(
        "[facility]\nname = \"Test facility\"\norganization = \"TEST\"\n\n\
         [[resources]]\nname = \"basalt\"\ndescription = \"Basalt cluster\"\n\
         [resources.compute]\n{compute}\n\
         [resources.environment]\n{}\n\
         [[resources]]\nname = \"shale-archive\"\ndescription = \"Tape archive\"\n",
        environment_table(modulepath)
    )
}

/// `scontrol show partition -o` as name -> field -> value.
fn slurm_partitions(
    cluster: &slurm::SlurmCluster,
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let out = cluster
        .command("scontrol")
        .args(["show", "partition", "-o"])
        .output()?;
    if !out.status.success() {
        bail!(
            "scontrol show partition failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut partitions = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let fields: BTreeMap<String, String> = line
            .split_whitespace()
            .filter_map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        partitions.insert(fields["PartitionName"].clone(), fields);
    }
    Ok(partitions)
}

/// Slurm's time limit ("UNLIMITED", "NONE", "MM", "HH:MM:SS", "D-HH:MM:SS")
/// as the API writes it: minutes, or null for none.
fn minutes(slurm: &str) -> Value {
    if slurm == "UNLIMITED" || slurm == "NONE" {
        return Value::Null;
    }
    let (days, rest) = match slurm.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().unwrap(), r),
        None => (0, slurm),
    };
    let parts: Vec<u64> = rest.split(':').map(|p| p.parse().unwrap()).collect();
    let m = match parts.as_slice() {
        [m] => *m,
        [m, _s] => *m,
        [h, m, _s] => h * 60 + m,
        _ => panic!("time {slurm:?}"),
    };
    json!(days * 24 * 60 + m)
}

fn count_or_null(slurm: &str) -> Value {
    if slurm == "UNLIMITED" {
        Value::Null
    } else {
        json!(slurm.parse::<u64>().unwrap())
    }
}

/// Adds a second partition to the test cluster (one per test binary), with
/// limits unlike the first one's.
fn add_long_partition(cluster: &slurm::SlurmCluster) -> Result<()> {
    // Tests run in parallel threads: one of them creates it.
    static CREATED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
    if *created {
        return Ok(());
    }
    let out = cluster
        .command("scontrol")
        .args([
            "create",
            "PartitionName=envlong",
            "Nodes=ALL",
            "MaxTime=2-00:00:00",
            "DefaultTime=90",
            "MaxNodes=1",
            "PriorityTier=3",
            "State=UP",
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "scontrol create partition failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *created = true;
    Ok(())
}

fn slurm_version(cluster: &slurm::SlurmCluster) -> Result<String> {
    let out = cluster.command("sinfo").arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .context("sinfo --version printed no version")
}

/// The environment component, and tokens for revoking.
fn serving() -> AppOptions {
    AppOptions::only(&["environment", "tokens"])
}

struct SlurmApp {
    app: TestApp,
    token: String,
    _tree: tempfile::TempDir,
    modulepath: PathBuf,
}

fn start_on_slurm() -> Result<SlurmApp> {
    let cluster = slurm::shared();
    add_long_partition(cluster)?;
    let tree = module_tree()?;
    let modulepath = tree.path().to_path_buf();
    let app = TestApp::start(serving().with_facility(facility(
        &cluster.compute_config(&cluster.restd_url),
        &modulepath,
    )))?;
    // A token with no compute permission: the environment needs none.
    let token = app.token(&["data-streaming"], "STF040")?;
    Ok(SlurmApp {
        app,
        token,
        _tree: tree,
        modulepath,
    })
}

#[tokio::test]
async fn partitions_are_the_ones_slurm_has_with_their_limits() -> Result<()> {
    let s = start_on_slurm()?;
    let cluster = slurm::shared();
    let env = expect_json(s.app.get(&format!("{BASE}/basalt"), Some(&s.token)).await?).await?;

    let scheduler = &env["scheduler"];
    assert_eq!(scheduler["kind"], "slurm", "{env:#}");
    assert_eq!(scheduler["version"], slurm_version(cluster)?, "{env:#}");
    // (`cluster` is what the scheduler provider reports; slurmrestd 0.0.38 does not name it.)
    assert!(scheduler["cluster"].is_string(), "{env:#}");
    assert_eq!(scheduler["reachable"], true, "{env:#}");

    let want = slurm_partitions(cluster)?;
    let got: BTreeMap<String, &Value> = env["partitions"]
        .as_array()
        .context("partitions is a list")?
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{env:#}"
    );
    assert!(got.contains_key("envlong") && got.contains_key(&cluster.partition));
    for (name, fields) in &want {
        let p = got[name];
        assert_eq!(
            p["maxTimeMinutes"],
            minutes(&fields["MaxTime"]),
            "{name}: {p}"
        );
        assert_eq!(
            p["defaultTimeMinutes"],
            minutes(&fields["DefaultTime"]),
            "{name}: {p}"
        );
        assert_eq!(
            p["maxNodes"],
            count_or_null(&fields["MaxNodes"]),
            "{name}: {p}"
        );
        assert_eq!(
            p["minNodes"],
            json!(fields["MinNodes"].parse::<u64>()?),
            "{name}: {p}"
        );
        assert_eq!(
            p["totalNodes"],
            json!(fields["TotalNodes"].parse::<u64>()?),
            "{name}: {p}"
        );
        assert_eq!(
            p["totalCpus"],
            json!(fields["TotalCPUs"].parse::<u64>()?),
            "{name}: {p}"
        );
        assert_eq!(
            p["isDefault"],
            json!(fields["Default"] == "YES"),
            "{name}: {p}"
        );
        assert_eq!(p["state"], fields["State"].as_str(), "{name}: {p}");
        assert_eq!(
            p["priorityTier"],
            json!(fields["PriorityTier"].parse::<u64>()?),
            "{name}: {p}"
        );
    }
    // The limits set above, spelled out, so a parser bug on both sides cannot hide.
    assert_eq!(got["envlong"]["maxTimeMinutes"], 2 * 24 * 60);
    assert_eq!(got["envlong"]["defaultTimeMinutes"], 90);
    assert_eq!(got["envlong"]["maxNodes"], 1);
    assert_eq!(got["debug"]["maxTimeMinutes"], 60);
    assert_eq!(got["debug"]["defaultTimeMinutes"], 10);
    assert_eq!(got["debug"]["maxNodes"], Value::Null);
    assert_eq!(env["warnings"], json!([]), "{env:#}");
    Ok(())
}

#[tokio::test]
async fn modules_are_what_lmod_finds_plus_the_configured_ones() -> Result<()> {
    let s = start_on_slurm()?;
    let env = expect_json(s.app.get(&format!("{BASE}/basalt"), Some(&s.token)).await?).await?;
    assert_eq!(
        env["modules"],
        json!([
            {"name": "gcc", "versions": ["12.2.0", "13.1.0"], "defaultVersion": "13.1.0",
             "description": "GNU Compiler Collection"},
            {"name": "python", "versions": ["3.9", "3.11"], "defaultVersion": "3.9",
             "description": "Python interpreter"},
            {"name": "site-tools", "versions": ["1.0"], "defaultVersion": "1.0",
             "description": "Configured, not in Lmod"},
        ]),
        "{env:#}"
    );

    // Lmod is asked again once its answer expires (60 s by default), not on
    // every request: a module installed now shows up no sooner.
    std::fs::create_dir_all(s.modulepath.join("cmake"))?;
    std::fs::write(
        s.modulepath.join("cmake/3.27.9.lua"),
        "whatis(\"Description: CMake\")\n",
    )?;
    let again = expect_json(s.app.get(&format!("{BASE}/basalt"), Some(&s.token)).await?).await?;
    assert_eq!(again["modules"], env["modules"], "cached");
    Ok(())
}

#[tokio::test]
async fn runtimes_filesystems_and_variables_come_from_the_configuration() -> Result<()> {
    let s = start_on_slurm()?;
    let env = expect_json(s.app.get(&format!("{BASE}/basalt"), Some(&s.token)).await?).await?;
    assert_eq!(
        keys(&env).into_iter().collect::<Vec<_>>(),
        [
            "containerRuntimes",
            "description",
            "filesystems",
            "modules",
            "name",
            "partitions",
            "retrievedAt",
            "scheduler",
            "variables",
            "warnings"
        ]
    );
    assert_eq!(env["name"], "basalt");
    assert_eq!(env["description"], "Basalt cluster");
    assert_eq!(
        env["containerRuntimes"],
        json!([{"name": "apptainer", "version": "1.3.4", "command": "apptainer", "description": "Rootless containers"}])
    );
    assert_eq!(
        env["filesystems"],
        json!([
            {"name": "home", "mountPath": "/ccs/home", "purpose": "source code and small files", "purgePolicy": "never"},
            {"name": "scratch", "mountPath": "/lustre/scratch", "purpose": "job I/O", "purgePolicy": "files unused for 90 days"},
        ])
    );
    assert_eq!(
        env["variables"],
        json!({"OMP_NUM_THREADS": "1", "SCRATCH": "/lustre/scratch"})
    );
    assert!(
        env["retrievedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{env}"
    );
    Ok(())
}

#[tokio::test]
async fn the_list_has_every_resource_and_one_that_runs_no_jobs_has_no_scheduler() -> Result<()> {
    let s = start_on_slurm()?;
    let all = expect_json(s.app.get(BASE, Some(&s.token)).await?).await?;
    assert_eq!(keys(&all).into_iter().collect::<Vec<_>>(), ["environments"]);
    let envs = all["environments"]
        .as_array()
        .context("environments is a list")?;
    let names: Vec<&str> = envs
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["basalt", "shale-archive"]);
    assert_eq!(envs[0]["scheduler"]["kind"], "slurm");
    assert!(!envs[0]["partitions"].as_array().unwrap().is_empty());
    let archive = &envs[1];
    assert_eq!(archive["scheduler"], Value::Null, "{archive}");
    assert_eq!(archive["partitions"], json!([]));
    assert_eq!(archive["modules"], json!([]));
    assert_eq!(archive["containerRuntimes"], json!([]));
    assert_eq!(archive["filesystems"], json!([]));
    assert_eq!(archive["variables"], json!({}));
    assert_eq!(archive["warnings"], json!([]));
    // The one-resource answer is the list's entry.
    let one = expect_json(
        s.app
            .get(&format!("{BASE}/shale-archive"), Some(&s.token))
            .await?,
    )
    .await?;
    assert_eq!(one["name"], "shale-archive");
    assert_eq!(one["scheduler"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn refusals_are_the_apis_errors() -> Result<()> {
    let s = start_on_slurm()?;
    // No token, or a token that is not one: 401, for the list and for one resource.
    for path in [BASE.to_string(), format!("{BASE}/basalt")] {
        let body = expect_error(s.app.get(&path, None).await?, 401).await?;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("token"),
            "{body}"
        );
        expect_error(s.app.get(&path, Some("not-a-token")).await?, 401).await?;
    }
    // An unknown resource: 404 saying where the list is. Checked after auth:
    // without a token it is 401, so names cannot be probed.
    let body = expect_error(
        s.app.get(&format!("{BASE}/nosuch"), Some(&s.token)).await?,
        404,
    )
    .await?;
    assert!(
        body["message"].as_str().unwrap().contains("nosuch"),
        "{body}"
    );
    expect_error(s.app.get(&format!("{BASE}/nosuch"), None).await?, 401).await?;
    // Deeper paths are no route; other methods are refused.
    expect_error(
        s.app
            .get(&format!("{BASE}/basalt/extra"), Some(&s.token))
            .await?,
        404,
    )
    .await?;
    let res = s
        .app
        .client()
        .post(s.app.url(&format!("{BASE}/basalt")))
        .header("Authorization", &s.token)
        .send()
        .await?;
    expect_error(res, 405).await?;
    // A revoked token is refused as well.
    let res = s
        .app
        .client()
        .delete(s.app.url("/olcf/v1/token/ctls/revoke"))
        .header("Authorization", &s.token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    expect_error(
        s.app.get(&format!("{BASE}/basalt"), Some(&s.token)).await?,
        401,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_scheduler_or_lmod_that_fails_is_a_warning_not_an_error() -> Result<()> {
    let cluster = slurm::shared();
    let tree = module_tree()?;
    // slurmrestd stopped: the scheduler is unreachable. The module path is
    // missing: Lmod cannot read it. The rest of the environment still reads.
    let mut restd = cluster.start_restd()?;
    let compute = cluster.compute_config(&restd.url);
    restd.stop();
    let missing = tree.path().join("no-such-dir");
    let app = TestApp::start(serving().with_facility(facility(&compute, &missing)))?;
    let token = app.token(&["compute-ace-readonly"], "STF040")?;
    let env = expect_json(app.get(&format!("{BASE}/basalt"), Some(&token)).await?).await?;
    assert_eq!(env["scheduler"]["reachable"], false, "{env:#}");
    assert_eq!(env["partitions"], json!([]), "{env:#}");
    let warnings: Vec<&str> = env["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("scheduler")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("no-such-dir")),
        "the module warning names the directory: {warnings:?}"
    );
    // The configured modules still show.
    assert_eq!(env["modules"][0]["name"], "site-tools", "{env:#}");
    assert_eq!(env["filesystems"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn the_local_scheduler_is_reported_too() -> Result<()> {
    let tree = module_tree()?;
    let app =
        TestApp::start(serving().with_facility(facility("scheduler = \"local\"", tree.path())))?;
    let token = app.token(&["data-streaming"], "STF040")?;
    let env = expect_json(app.get(&format!("{BASE}/basalt"), Some(&token)).await?).await?;
    assert_eq!(env["scheduler"]["kind"], "local", "{env:#}");
    assert_eq!(env["scheduler"]["reachable"], true, "{env:#}");
    assert!(!env["partitions"].as_array().unwrap().is_empty(), "{env:#}");
    assert_eq!(env["modules"].as_array().map(Vec::len), Some(3), "{env:#}");
    Ok(())
}

/// A slurmrestd that accepts connections and never answers must not take
/// the environment list down: every scheduler is asked at once under one
/// deadline, and the hung one is reported unreachable while the others read.
#[tokio::test]
async fn a_hung_scheduler_is_reported_unreachable_and_holds_up_nobody() -> Result<()> {
    let tree = module_tree()?;
    // Accepts (the kernel's backlog) and never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let key = tree.path().join("jwt.key");
    std::fs::write(&key, [7u8; 32])?;
    let mut text = String::new();
    for name in ["hung-a", "hung-b"] {
        text.push_str(&format!(
            "[[resources]]\nname = \"{name}\"\ndescription = \"hung\"\n[resources.compute]\n\
             scheduler = \"slurm\"\nslurmrestd = \"http://{}\"\njwt_key = \"{}\"\n",
            silent.local_addr()?,
            key.display()
        ));
    }
    text.push_str(&facility("scheduler = \"local\"", tree.path()));
    let app = TestApp::start(serving().with_facility(text))?;
    let token = app.token(&["compute-ace-readonly"], "STF040")?;
    let started = std::time::Instant::now();
    let list = expect_json(app.get(BASE, Some(&token)).await?).await?;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(15),
        "two hung schedulers held the list for {took:?}"
    );
    let envs = list["environments"].as_array().context("environments")?;
    for name in ["hung-a", "hung-b"] {
        let e = envs.iter().find(|e| e["name"] == name).context(name)?;
        assert_eq!(e["scheduler"]["reachable"], false, "{e:#}");
        assert!(
            e["warnings"].as_array().is_some_and(|w| !w.is_empty()),
            "{e:#}"
        );
    }
    let basalt = envs
        .iter()
        .find(|e| e["name"] == "basalt")
        .context("basalt")?;
    assert_eq!(basalt["scheduler"]["reachable"], true, "{basalt:#}");
    assert!(!basalt["partitions"].as_array().unwrap().is_empty());
    drop(silent);
    Ok(())
}
