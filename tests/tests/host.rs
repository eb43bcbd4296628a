//! The host itself, over HTTP against the real `s3m` binary: per-request
//! limits, the outbound allow-list, start-up refusals that name the problem,
//! variables, and state shared between hosts through a real Redis.

use anyhow::Result;
use s3m_tests::redis_server::RedisServer;
use s3m_tests::{
    component_wasm, expect_error, expect_json, looper_manifest, s3m_bin, AppOptions, TestApp,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

fn app_with_looper(up_args: &[&str], allowed_outbound: &[String]) -> Result<TestApp> {
    TestApp::start(AppOptions {
        components: vec!["tokens".into()],
        extra_manifest: Some(looper_manifest(allowed_outbound)),
        up_args: up_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_looping_component_gets_a_5xx_and_the_host_goes_on_serving() -> Result<()> {
    let app = app_with_looper(&["--request-timeout", "2s"], &[])?;
    let spin = {
        let (client, url) = (app.client().clone(), app.url("/looper/spin"));
        tokio::spawn(async move { client.get(url).send().await })
    };
    // While one request spins, others are served at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let ok = app.client().get(app.url("/looper/ok")).send().await?;
    assert_eq!(ok.status(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a spinning request held up another one"
    );

    let res = spin.await??;
    let body = expect_error(res, 504).await?;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("time limit"),
        "{body}"
    );
    let ok = app.client().get(app.url("/looper/ok")).send().await?;
    assert_eq!(ok.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_component_that_eats_memory_is_stopped_at_its_limit() -> Result<()> {
    let app = app_with_looper(&["--memory-limit", "32MiB"], &[])?;
    let res = app.client().get(app.url("/looper/grow")).send().await?;
    expect_error(res, 500).await?;
    let ok = app.client().get(app.url("/looper/ok")).send().await?;
    assert_eq!(ok.status(), 200);
    Ok(())
}

/// A one-request HTTP server; returns its port and whether it was called.
/// A fresh instance per request, also now that the host resets a pool slot
/// in place instead of releasing it: what one request left in its memory (a
/// zero-initialised static and one from the data image) is gone for the
/// next, which runs in the same slot (one instance at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_sees_what_an_earlier_one_left_in_memory() -> Result<()> {
    let app = app_with_looper(&["--max-instances", "1"], &[])?;
    for round in 0..20 {
        let left = app.client().get(app.url("/looper/leave")).send().await?;
        assert_eq!(left.status(), 200);
        // The check sees the marker within the request that wrote it.
        assert_eq!(left.text().await?, "zeroed=false imaged=false");
        let peek = app.client().get(app.url("/looper/peek")).send().await?;
        assert_eq!(peek.status(), 200);
        assert_eq!(
            peek.text().await?,
            "zeroed=true imaged=true",
            "round {round}: a request saw what the one before it left in memory"
        );
    }
    Ok(())
}

fn tiny_server() -> Result<(u16, std::sync::mpsc::Receiver<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = tx.send(());
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi");
        }
    });
    Ok((port, rx))
}

#[tokio::test]
async fn outbound_http_reaches_only_the_allowed_hosts() -> Result<()> {
    let (allowed_port, allowed_hits) = tiny_server()?;
    let (other_port, other_hits) = tiny_server()?;
    let app = app_with_looper(&[], &[format!("http://127.0.0.1:{allowed_port}")])?;

    let url = app.url(&format!(
        "/looper/outbound?url=http://127.0.0.1:{allowed_port}/"
    ));
    let text = app.client().get(url).send().await?.text().await?;
    assert_eq!(text, "sent: 200");
    assert!(
        allowed_hits.try_recv().is_ok(),
        "the allowed server saw no request"
    );

    let url = app.url(&format!(
        "/looper/outbound?url=http://127.0.0.1:{other_port}/"
    ));
    let text = app.client().get(url).send().await?.text().await?;
    assert!(text.starts_with("refused"), "{text}");
    assert!(text.contains("HttpRequestDenied"), "{text}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        other_hits.try_recv().is_err(),
        "a host outside allowed_outbound_hosts was contacted"
    );
    Ok(())
}

/// The host still answers the looper's no-op after what a test did to it.
async fn serves_on(app: &TestApp) -> Result<()> {
    let ok = app.client().get(app.url("/looper/ok")).send().await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await?, "ok");
    Ok(())
}

#[tokio::test]
async fn a_guest_whose_client_went_away_still_runs_to_its_end() -> Result<()> {
    let (port, hits) = tiny_server()?;
    let app = app_with_looper(&[], &[format!("http://127.0.0.1:{port}")])?;
    // The client gives up after 100 ms; the guest waits 600 ms and then
    // makes its outbound call, which must still happen.
    let url = app.url(&format!(
        "/looper/later?ms=600&url=http://127.0.0.1:{port}/"
    ));
    let gave_up = app
        .client()
        .get(url)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err(), "the guest answered before it waited");
    assert!(
        hits.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the guest was stopped when its client went away: its outbound call never came"
    );
    serves_on(&app).await
}

#[tokio::test]
async fn a_guest_that_fails_mid_answer_cuts_it_short_and_the_log_says_so() -> Result<()> {
    let app = app_with_looper(&[], &[])?;
    // Whether the head went out before the trap (hyper sends it with the
    // first bytes of the body) or not, the client must not get the answer
    // as if whole: either the connection closes with no answer, or the body
    // stops short of the 1000 bytes promised.
    let half = app
        .client()
        .get(app.url("/looper/half"))
        .header("x-request-id", "half-answer-1");
    match half.send().await {
        Err(_) => {}
        Ok(res) => {
            assert_eq!(res.status(), 200);
            assert_eq!(res.content_length(), Some(1000));
            let body = res.bytes().await;
            assert!(
                body.as_ref().map_or(true, |b| b.len() < 1000),
                "a cut answer arrived whole: {:?}",
                body.map(|b| b.len())
            );
        }
    }
    let log = app.stderr_with_line(|l| l.contains("component failed while sending its answer"));
    let line = log
        .lines()
        .find(|l| l.contains("component failed while sending its answer"))
        .unwrap_or_default();
    // The guest's end may be logged by a task of its own: the line still
    // names the request. (The error's backtrace spans lines; the fields
    // follow it.)
    assert!(
        line.contains("request_id=half-answer-1")
            && log.contains("component=looper")
            && log.contains("on purpose"),
        "the host's log does not say why the answer was cut, or for which request:\n{log}"
    );
    serves_on(&app).await
}

/// A `files` directory is opened once, when the host starts, and every instance shares that
/// handle: each must still read files as they are now, write nothing, and reach nothing
/// outside the directory.
#[tokio::test]
async fn a_files_mount_reads_fresh_writes_nothing_and_stays_inside() -> Result<()> {
    let outside = tempfile::tempdir()?;
    let mounted = outside.path().join("mounted");
    std::fs::create_dir(&mounted)?;
    std::fs::write(mounted.join("hello.txt"), "first")?;
    std::fs::write(outside.path().join("secret.txt"), "outside the mount")?;
    let manifest = format!(
        "{}files = [{{ source = \"{}\", destination = \"/data\" }}]\n",
        looper_manifest(&[]),
        mounted.display()
    );
    let app = TestApp::start(AppOptions {
        components: vec!["tokens".into()],
        extra_manifest: Some(manifest),
        ..Default::default()
    })?;
    let get = |path: String| {
        let (client, url) = (app.client().clone(), app.url(&path));
        async move { client.get(url).send().await?.text().await }
    };
    assert_eq!(
        get("/looper/read?path=/data/hello.txt".into()).await?,
        "read: first"
    );
    // Edited in place, then replaced by a rename: the next request reads each.
    std::fs::write(mounted.join("hello.txt"), "second")?;
    assert_eq!(
        get("/looper/read?path=/data/hello.txt".into()).await?,
        "read: second"
    );
    std::fs::write(mounted.join("next.txt"), "renamed in")?;
    std::fs::rename(mounted.join("next.txt"), mounted.join("hello.txt"))?;
    assert_eq!(
        get("/looper/read?path=/data/hello.txt".into()).await?,
        "read: renamed in"
    );
    // Read-only, and no way out of the directory.
    for target in ["/data/new.txt", "/data/hello.txt"] {
        let text = get(format!("/looper/write?path={target}")).await?;
        assert!(text.starts_with("refused"), "{target}: {text}");
    }
    assert!(
        !mounted.join("new.txt").exists(),
        "a guest created a file in its mount"
    );
    assert_eq!(
        std::fs::read_to_string(mounted.join("hello.txt"))?,
        "renamed in"
    );
    for escape in [
        "/data/../secret.txt",
        "/secret.txt",
        "/data/../mounted/../secret.txt",
    ] {
        let text = get(format!("/looper/read?path={escape}")).await?;
        assert!(text.starts_with("refused"), "{escape}: {text}");
        assert!(!text.contains("outside the mount"), "{escape}: {text}");
    }
    Ok(())
}

/// Runs `s3m up` on a manifest that must be refused; returns its stderr.
fn refused(manifest: &str) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest)?;
    let out = Command::new(s3m_bin()?)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--operator-listen",
            "127.0.0.1:0",
            "--manifest",
        ])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()?;
    assert!(
        !out.status.success(),
        "s3m up started on a manifest it should refuse"
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

const APP: &str = "spin_manifest_version = 2\n[application]\nname = \"t\"\n";

#[test]
fn refuses_to_start_and_names_the_problem() -> Result<()> {
    let tokens = component_wasm("tokens");
    let e = refused(&format!(
        "{APP}[[trigger.http]]\nroute = \"/a/*\"\ncomponent = \"c\"\n[component.c]\nsource = \"{}\"\n",
        tokens.display()
    ))?;
    assert!(e.contains("unknown route syntax"), "{e}");

    let e = refused(&format!(
        "{APP}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"missing.wasm\"\n[component.c.build]\ncommand = \"cargo build -p c\"\n"
    ))?;
    assert!(
        e.contains("missing.wasm") && e.contains("s3m build") && e.contains("cargo build -p c"),
        "{e}"
    );

    // A component importing an interface this host does not give.
    let dir = tempfile::tempdir()?;
    let wat = dir.path().join("llm.wasm");
    std::fs::write(
        &wat,
        "(component (import \"fermyon:spin/llm@2.0.0\" (instance (export \"infer\" (func)))))",
    )?;
    let e = refused(&format!(
        "{APP}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"{}\"\n",
        wat.display()
    ))?;
    assert!(e.contains("fermyon:spin/llm@2.0.0"), "{e}");

    let e = refused(&format!(
        "{APP}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"{}\"\nkey_value_stores = [\"other\"]\n",
        tokens.display()
    ))?;
    assert!(e.contains("key_value_store.other"), "{e}");
    Ok(())
}

#[tokio::test]
async fn variables_reach_components_from_the_command_line() -> Result<()> {
    // The tokens component checks the audience it is given: a host told to
    // expect another audience refuses tokens minted for the default one.
    let app = TestApp::start(AppOptions {
        components: vec!["tokens".into()],
        up_args: vec!["--variable".into(), "token_audience=elsewhere".into()],
        ..Default::default()
    })?;
    let token = app.token(&["compute-ace"], "AUD001")?;
    let res = app
        .get("/olcf/v1/token/ctls/introspect", Some(&token))
        .await?;
    let body = expect_error(res, 401).await?;
    assert!(
        body["message"].as_str().unwrap_or("").contains("audience"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn two_hosts_on_one_redis_share_tokens() -> Result<()> {
    let redis = RedisServer::start()?;
    let runtime_config = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    );
    let opts = AppOptions {
        components: vec!["tokens".into()],
        runtime_config: Some(runtime_config),
        ..Default::default()
    };
    let first = TestApp::start(opts.clone())?;
    let second = TestApp::start(opts)?;
    assert_ne!(first.state_dir, second.state_dir);

    // Minted through the first host's CLI, usable on the second.
    let token = first.token(&["data-streaming"], "RED001")?;
    let res = second
        .get("/olcf/v1/token/ctls/introspect", Some(&token))
        .await?;
    let body = expect_json(res).await?;
    assert_eq!(body["token"]["project"], "RED001");

    // Revoked through the second, refused by the first.
    let res = second
        .client()
        .delete(second.url("/olcf/v1/token/ctls/revoke"))
        .header("authorization", &token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let res = first
        .get("/olcf/v1/token/ctls/introspect", Some(&token))
        .await?;
    expect_error(res, 401).await?;

    // A one-time token raced on both hosts works exactly once.
    let once = first.mint("RED001", &["compute-ace"], &["--one-time"])?;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = if i % 2 == 0 { &first } else { &second };
        let (client, url, once) = (
            app.client().clone(),
            app.url("/olcf/v1/token/ctls/introspect"),
            once.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .header("authorization", once)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await?? {
            200 => ok += 1,
            401 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "a one-time token worked {ok} times across two hosts");
    Ok(())
}
