//! Streaming API over HTTP against the real s3m binary, with real
//! redis-server and rabbitmq-server processes behind it, reached by real
//! clients (the `redis` crate, lapin) with the URLs and credentials handed out.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use s3m_tests::streaming::{self as st, Api, BrokerReaper, BASE, LEGACY_BASE};
use s3m_tests::{AppOptions, TestApp};
use serde_json::{json, Value};

const PROJECT: &str = "STF040";

fn app(streaming_toml: &str) -> Result<TestApp> {
    TestApp::start(AppOptions::only(&["streaming"]).with_facility(st::facility(streaming_toml)))
}

async fn plain_redis_set_get(url: &str) -> Result<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("PING").query_async::<String>(&mut con).await?)
}

fn error_code(body: &Value) -> i64 {
    body["code"].as_i64().unwrap_or(-1)
}

async fn redis_set_get(url: &str, ca: &str) -> Result<String> {
    let client = st::redis_client(url, ca)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg("greeting")
        .arg("hello from s3m")
        .query_async::<()>(&mut con)
        .await?;
    Ok(redis::cmd("GET")
        .arg("greeting")
        .query_async::<String>(&mut con)
        .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_serves_a_real_client_and_only_its_project() -> Result<()> {
    st::require_servers(false)?;
    let app = app("")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], PROJECT)?);
    let other = Api::of(&app, &app.token(&["data-streaming"], "ABC123")?);

    let body = json!({"kind": "general", "name": "cache", "resourceSettings": {"cpus": 1, "ram-gbs": 1}, "featureFlags": {}});
    let (status, creds) = api.provision("redis", &body).await?;
    assert_eq!(status, 200, "{creds}");
    let url = creds["url"].as_str().context("url")?.to_string();
    let password = creds["password"].as_str().context("password")?.to_string();
    assert!(
        password.len() >= 32,
        "at least 128 bits of password: {password:?}"
    );
    assert_eq!(creds["username"], "s3m-cache");
    assert!(
        url.starts_with("rediss://s3m-cache:") && url.contains(&password),
        "TLS, as the docs' brokers: {url}"
    );
    let ca = st::broker_ca(&app.host_base_url).await?;

    // Not usable at once, but soon.
    let cluster = api
        .wait_healthy("redis", "cache", Duration::from_secs(30))
        .await?;
    assert_eq!(cluster["syncStatus"], "synced");
    assert_eq!(cluster["redisUrl"], url.as_str());
    assert_eq!(cluster["password"], password.as_str());
    assert_eq!(
        cluster["resourceSettings"],
        json!({"cpus": 1, "ram-gbs": 1})
    );
    assert_eq!(cluster["featureFlags"], json!({"persistence": false}));
    assert_eq!(cluster["lifetime"]["secondsLifetime"], 7 * 24 * 3600);

    // A real client with exactly those credentials, verifying the
    // broker's certificate against the facility's CA.
    assert_eq!(redis_set_get(&url, &ca).await?, "hello from s3m");
    let wrong = url.replace(&password, "0123456789abcdef0123456789abcdef");
    let refused = redis_set_get(&wrong, &ca).await;
    assert!(refused.is_err(), "a wrong password must be refused");
    let no_password = format!("rediss://127.0.0.1:{}", st::url_port(&url)?);
    assert!(
        redis_set_get(&no_password, &ca).await.is_err(),
        "no password must be refused"
    );
    // Plain text does not reach the broker, and a client that trusts
    // another CA refuses the broker's certificate.
    let plain = url.replacen("rediss://", "redis://", 1);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), plain_redis_set_get(&plain))
            .await
            .map_or(true, |r| r.is_err()),
        "plain text must not reach the broker"
    );
    assert!(
        redis_set_get(&url, &foreign_ca_pem()).await.is_err(),
        "a certificate that does not chain to the trusted CA must be refused"
    );

    // Listed, without credentials.
    let (status, list) = api.list("redis").await?;
    assert_eq!(status, 200);
    let clusters = list["clusters"].as_array().context("clusters")?;
    assert_eq!(clusters.len(), 1);
    assert_eq!(clusters[0]["name"], "cache");
    assert_eq!(clusters[0]["healthStatus"], "healthy");
    assert!(clusters[0].get("password").is_none());
    assert!(
        list["clusters"][0]["lifetime"]["secondsRemaining"]
            .as_u64()
            .unwrap()
            > 7 * 24 * 3600 - 60
    );
    // Same answer on the legacy path.
    let legacy = app
        .client()
        .get(app.url(&format!("{LEGACY_BASE}/redis/list_clusters")))
        .header("Authorization", &api.token)
        .send()
        .await?;
    assert_eq!(legacy.status(), 200);
    // The same name again in the same project is refused.
    let (status, err) = api.provision("redis", &body).await?;
    assert_eq!((status, error_code(&err)), (409, 6), "{err}");
    // The engine is part of the key: a list of rabbitmq clusters is empty.
    assert_eq!(api.list("rabbitmq").await?.1["clusters"], json!([]));

    // Another project sees nothing of it, and cannot touch it.
    assert_eq!(other.list("redis").await?.1["clusters"], json!([]));
    for (status, err) in [
        other.get_cluster("redis", "cache").await?,
        other.delete("redis", "cache").await?,
        other.extend("redis", "cache").await?,
    ] {
        assert_eq!((status, error_code(&err)), (404, 5), "{err}");
    }
    // ... and may use the same name for its own.
    let (status, _) = other.provision("redis", &body).await?;
    assert_eq!(status, 200);
    other
        .wait_healthy("redis", "cache", Duration::from_secs(30))
        .await?;
    assert_eq!(
        redis_set_get(&url, &ca).await?,
        "hello from s3m",
        "the first one still works"
    );

    // Delete: the process is gone and the port closed.
    let records = st::records(&app.state_dir)?;
    let mine = records
        .iter()
        .find(|r| r["project"] == PROJECT)
        .context("record")?;
    let id = mine["id"].as_str().context("id")?.to_string();
    let (dir, pid) = st::cluster_process(&app.state_dir, &id)?;
    assert!(st::alive(pid));
    let (status, answer) = api.delete("redis", "cache").await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"success": true}));
    st::wait_gone(&dir, pid, st::url_port(&url)?, Duration::from_secs(5))?;
    assert!(!dir.exists(), "the cluster's data directory is removed");
    let (status, _) = api.get_cluster("redis", "cache").await?;
    assert_eq!(status, 404);
    assert_eq!(
        other.list("redis").await?.1["clusters"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    other.delete("redis", "cache").await?;

    // Passwords never reach the host's logs.
    let logs = app.stderr();
    assert!(
        !logs.contains(&password),
        "the password is in the host's logs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_cluster_carries_a_message_through_lapin() -> Result<()> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    use lapin::BasicProperties;

    st::require_servers(true)?;
    let app = app("")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], PROJECT)?);

    let (status, creds) = api
        .provision(
            "rabbitmq",
            &json!({"kind": "general", "name": "events", "resourceSettings": {"ram-gbs": 1}}),
        )
        .await?;
    assert_eq!(status, 200, "{creds}");
    let url = creds["amqpsUrl"].as_str().context("amqpsUrl")?.to_string();
    let password = creds["password"].as_str().context("password")?.to_string();
    assert!(
        url.contains(&password) && url.starts_with("amqps://s3m-events:"),
        "TLS, as the docs' amqpsUrl: {url}"
    );
    let ca = st::broker_ca(&app.host_base_url).await?;
    // host:port and nothing after it (the docs' shape): a client that
    // splits the authority gets a port, not "port/%2f".
    let authority = url.rsplit_once('@').map(|(_, a)| a).unwrap_or_default();
    assert!(
        !authority.contains('/')
            && authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
        "{url}"
    );

    let cluster = api
        .wait_healthy("rabbitmq", "events", Duration::from_secs(120))
        .await?;
    assert_eq!(cluster["amqpsUrl"], url.as_str());
    assert_eq!(cluster["resourceSettings"]["nodes"], 1);
    // The broker's address, structured as S3M's Python client reads it.
    assert_eq!(
        cluster["brokerEndpoints"]["ports"]["amqp"],
        st::url_port(&url)?,
        "{cluster}"
    );
    assert_eq!(cluster["brokerEndpoints"]["addresses"][0], "127.0.0.1");
    assert!(cluster.get("endpoints").is_none());

    let conn = st::amqp_connect(&url, &ca).await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            "s3m-test".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            "s3m-test".into(),
            "tester".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_publish(
            "".into(),
            "s3m-test".into(),
            BasicPublishOptions::default(),
            b"hello through amqp",
            BasicProperties::default(),
        )
        .await?
        .await?;
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .context("no message within 10 s")?
        .context("consumer ended")??;
    assert_eq!(delivery.data, b"hello through amqp");
    delivery.ack(BasicAckOptions::default()).await?;
    conn.close(200, "bye".into()).await?;

    // A wrong password is refused; so is a client that trusts another CA.
    let wrong = url.replace(&password, "0123456789abcdef0123456789abcdef");
    assert!(st::amqp_connect(&wrong, &ca).await.is_err());
    assert!(st::amqp_connect(&url, &foreign_ca_pem()).await.is_err());
    // Plain AMQP is not served.
    let plain = url.replacen("amqps://", "amqp://", 1);
    assert!(tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(&plain, lapin::ConnectionProperties::default())
    )
    .await
    .map_or(true, |r| r.is_err()));

    // The management API answers over HTTPS with the same credentials.
    {
        let mgmt = creds["mgmtUrl"]
            .as_str()
            .context("no mgmtUrl: Debian's rabbitmq-server ships the management plugin")?;
        assert!(mgmt.starts_with("https://"), "{mgmt}");
        let overview = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
            .build()?
            .get(format!("{mgmt}api/overview"))
            .basic_auth("s3m-events", Some(&password))
            .send()
            .await?;
        assert_eq!(overview.status(), 200);
    }

    // The host crashes and comes back: the broker was adopted, not restarted.
    let id = st::cluster_id(&app.state_dir, "events")?;
    let (dir, pid) = st::cluster_process(&app.state_dir, &id)?;
    st::kill_host(&app.state_dir)?;
    let host = st::Host::start(&app.manifest, &app.state_dir, app.dir.path())?;
    let api = Api::new(&host.base_url, &api.token);
    let cluster = api
        .wait_healthy("rabbitmq", "events", Duration::from_secs(30))
        .await?;
    assert_eq!(cluster["amqpsUrl"], url.as_str());
    assert_eq!(
        st::cluster_process(&app.state_dir, &id)?.1,
        pid,
        "the same broker process"
    );
    let conn = st::amqp_connect(&url, &ca).await?;
    let channel = conn.create_channel().await?;
    let q = channel
        .queue_declare(
            "s3m-test".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    assert_eq!(q.message_count(), 0);
    conn.close(200, "bye".into()).await?;

    let (status, _) = api.delete("rabbitmq", "events").await?;
    assert_eq!(status, 200);
    st::wait_gone(&dir, pid, st::url_port(&url)?, Duration::from_secs(10))?;
    assert!(!dir.exists());
    assert!(
        !app.stderr().contains(&password),
        "the password is in the host's logs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_checked_and_errors_name_the_field() -> Result<()> {
    let app = app("")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], PROJECT)?);

    // Token and permission.
    let none = app.get(&format!("{BASE}/list_backends"), None).await?;
    assert_eq!(none.status(), 401);
    let compute = app.token(&["compute-ace"], PROJECT)?;
    let res = app
        .get(&format!("{BASE}/list_backends"), Some(&compute))
        .await?;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(&res.json().await?), 7);

    // Backends as API.md shows them.
    let (status, backends) = api
        .call(reqwest::Method::GET, "/list_backends", None)
        .await?;
    assert_eq!(status, 200);
    let list = backends["backends"].as_array().context("backends")?;
    let redis = list
        .iter()
        .find(|b| b["engine"] == "redis")
        .context("redis backend")?;
    let rabbit = list
        .iter()
        .find(|b| b["engine"] == "rabbitmq")
        .context("rabbitmq backend")?;
    assert_eq!(redis["kind"], "general");
    for b in [redis, rabbit] {
        for o in b["resourceOptions"].as_array().unwrap() {
            for k in ["key", "description", "min", "max", "default"] {
                assert!(o.get(k).is_some(), "resourceOptions.{k} in {o}");
            }
        }
        assert!(b["featureFlags"].is_array());
    }
    assert!(redis["resourceOptions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["key"] != "nodes"));

    let cases: Vec<(&str, Value, &str)> = vec![
        ("redis", json!({"name": "a"}), "kind"),
        ("redis", json!({"kind": "huge", "name": "a"}), "kind"),
        ("redis", json!({"kind": "general"}), "name"),
        (
            "redis",
            json!({"kind": "general", "name": "Bad_Name"}),
            "name",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "x".repeat(41)}),
            "name",
        ),
        ("redis", json!({"kind": "general", "name": "-a"}), "name"),
        // A huge bad name is not echoed back whole (it was, 10 MB for 10 MB).
        (
            "redis",
            json!({"kind": "general", "name": "y".repeat(1_000_000)}),
            "name",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": {"nodes": 2}}),
            "resourceSettings.nodes",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": {"ram-gbs": 0}}),
            "resourceSettings.ram-gbs",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": {"ram-gbs": -1}}),
            "resourceSettings.ram-gbs",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": {"ram-gbs": 1.5}}),
            "resourceSettings.ram-gbs",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": {"ram-gbs": 100000}}),
            "resourceSettings.ram-gbs",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": {"cpus": "2"}}),
            "resourceSettings.cpus",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "resourceSettings": [1]}),
            "resourceSettings",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "featureFlags": {"warp": true}}),
            "featureFlags.warp",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "featureFlags": {"persistence": "yes"}}),
            "featureFlags.persistence",
        ),
        (
            "redis",
            json!({"kind": "general", "name": "a", "colour": "red"}),
            "colour",
        ),
        (
            "rabbitmq",
            json!({"kind": "general", "name": "a", "resourceSettings": {"nodes": 0}}),
            "resourceSettings.nodes",
        ),
        // Beyond `rabbitmq_max_nodes` (3 by default).
        (
            "rabbitmq",
            json!({"kind": "general", "name": "a", "resourceSettings": {"nodes": 4}}),
            "resourceSettings.nodes",
        ),
        ("redis", json!([1, 2]), "body"),
    ];
    for (engine, body, field) in cases {
        let (status, err) = api.provision(engine, &body).await?;
        assert_eq!((status, error_code(&err)), (400, 3), "{body} -> {err}");
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{body:.200}: the message should name {field}: {message}"
        );
        assert!(message.len() < 1000, "a 400 echoed {} bytes", message.len());
        assert_eq!(err["details"], json!([]));
    }
    let bad_json = app
        .client()
        .post(app.url(&format!("{BASE}/redis/provision_cluster")))
        .header("Authorization", &api.token)
        .body("{not json")
        .send()
        .await?;
    assert_eq!(bad_json.status(), 400);

    // Unknown engines and paths are 404, wrong methods 405, bad names 400.
    let (status, _) = api.list("kafka").await?;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(reqwest::Method::GET, "/redis/provision_cluster", None)
        .await?;
    assert_eq!(status, 405);
    let (status, err) = api.get_cluster("redis", "Not_A_Label").await?;
    assert_eq!(status, 400, "{err}");
    let (status, _) = api.get_cluster("redis", "missing").await?;
    assert_eq!(status, 404);
    // Nothing was provisioned by any of it.
    assert_eq!(api.list("redis").await?.1["clusters"], json!([]));
    assert!(st::processes_under(&app.state_dir.join("brokers")).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_resets_the_countdown_and_expired_clusters_are_deleted() -> Result<()> {
    st::require_servers(false)?;
    let app = app("lifetime_seconds = 6\ncheck_interval_ms = 200")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], PROJECT)?);
    let (status, creds) = api
        .provision("redis", &json!({"kind": "general", "name": "short"}))
        .await?;
    assert_eq!(status, 200, "{creds}");
    api.wait_healthy("redis", "short", Duration::from_secs(5))
        .await?;
    let id = st::cluster_id(&app.state_dir, "short")?;
    let (dir, pid) = st::cluster_process(&app.state_dir, &id)?;

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, list) = api.list("redis").await?;
    let before = list["clusters"][0]["lifetime"]["secondsRemaining"]
        .as_u64()
        .context("remaining")?;
    assert!(before <= 4, "{before}");
    let (status, extended) = api.extend("redis", "short").await?;
    assert_eq!(status, 200, "{extended}");
    let after = extended["lifetime"]["secondsRemaining"]
        .as_u64()
        .context("remaining")?;
    assert!(
        after >= 5 && after > before,
        "extend moves secondsRemaining back up: {before} -> {after}"
    );
    assert_eq!(extended["lifetime"]["secondsLifetime"], 6);
    assert!(extended["lifetime"]["extendedAt"].is_string());

    // Then it expires: deleted for good, its process gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, list) = api.list("redis").await?;
        if list["clusters"] == json!([]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reaped: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    st::wait_gone(
        &dir,
        pid,
        st::url_port(creds["url"].as_str().unwrap())?,
        Duration::from_secs(5),
    )?;
    let (status, _) = api.get_cluster("redis", "short").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_host_comes_back_with_its_clusters_and_no_orphans() -> Result<()> {
    st::require_servers(false)?;
    let app = app("")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let token = app.token(&["data-streaming"], PROJECT)?;
    let api = Api::of(&app, &token);
    let mut urls = Vec::new();
    for name in ["kept", "dropped"] {
        let (status, creds) = api
            .provision("redis", &json!({"kind": "general", "name": name}))
            .await?;
        assert_eq!(status, 200, "{creds}");
        api.wait_healthy("redis", name, Duration::from_secs(30))
            .await?;
        urls.push(creds["url"].as_str().unwrap().to_string());
    }
    let ca = st::broker_ca(&app.host_base_url).await?;
    assert_eq!(redis_set_get(&urls[0], &ca).await?, "hello from s3m");
    let dropped_id = st::cluster_id(&app.state_dir, "dropped")?;
    let (dropped_dir, dropped_pid) = st::cluster_process(&app.state_dir, &dropped_id)?;

    // Crash the host; while it is down, the record of one cluster is deleted.
    st::kill_host(&app.state_dir)?;
    st::forget_record(&app.state_dir, &dropped_id)?;
    assert!(st::alive(dropped_pid), "brokers outlive a crashed host");

    let host = st::Host::start(&app.manifest, &app.state_dir, app.dir.path())?;
    let api = Api::new(&host.base_url, &token);
    let (status, list) = api.list("redis").await?;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept"]);
    let cluster = api
        .wait_healthy("redis", "kept", Duration::from_secs(10))
        .await?;
    assert_eq!(cluster["redisUrl"], urls[0].as_str());
    assert_eq!(
        redis_set_get(&urls[0], &ca).await?,
        "hello from s3m",
        "still reachable with the same URL"
    );

    // The unclaimed one leaves nothing behind.
    st::wait_gone(
        &dropped_dir,
        dropped_pid,
        st::url_port(&urls[1])?,
        Duration::from_secs(5),
    )?;
    assert!(!dropped_dir.exists());
    api.delete("redis", "kept").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_cluster_whose_process_died_is_started_again() -> Result<()> {
    st::require_servers(false)?;
    let app = app("check_interval_ms = 200")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let token = app.token(&["data-streaming"], PROJECT)?;
    let api = Api::of(&app, &token);
    let (status, creds) = api
        .provision("redis", &json!({"kind": "general", "name": "phoenix"}))
        .await?;
    assert_eq!(status, 200);
    api.wait_healthy("redis", "phoenix", Duration::from_secs(30))
        .await?;
    let url = creds["url"].as_str().unwrap().to_string();
    let ca_before = st::broker_ca(&app.host_base_url).await?;
    let id = st::cluster_id(&app.state_dir, "phoenix")?;
    let (_, pid) = st::cluster_process(&app.state_dir, &id)?;
    // Host and broker both die (a reboot, say).
    st::kill_host(&app.state_dir)?;
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while st::alive(pid) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = st::Host::start(&app.manifest, &app.state_dir, app.dir.path())?;
    let api = Api::new(&host.base_url, &token);
    api.wait_healthy("redis", "phoenix", Duration::from_secs(10))
        .await?;
    let (_, new_pid) = st::cluster_process(&app.state_dir, &id)?;
    assert_ne!(new_pid, pid);
    // The same CA after the restart: clients keep the one they fetched.
    let ca = st::broker_ca(&host.base_url).await?;
    assert_eq!(ca, ca_before, "the CA survives a host restart");
    assert_eq!(
        redis_set_get(&url, &ca).await?,
        "hello from s3m",
        "the same URL and credentials work again"
    );
    api.delete("redis", "phoenix").await?;
    Ok(())
}

/// A broker whose process exits before it ever answered is started again
/// (and works, with the credentials handed out); one that never starts is
/// given up as failed after a few launches, at once, not at the start timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_exits_while_it_starts_is_started_again() -> Result<()> {
    st::require_servers(false)?;
    let scripts = tempfile::tempdir()?;
    let flaky = app(&st::failing_redis_server(scripts.path(), 1)?)?;
    let _reaper = BrokerReaper::new(&flaky.state_dir);
    let token = flaky.token(&["data-streaming"], PROJECT)?;
    let api = Api::of(&flaky, &token);
    let (status, creds) = api
        .provision("redis", &json!({"kind": "general", "name": "second-try"}))
        .await?;
    assert_eq!(status, 200, "{creds}");
    api.wait_healthy("redis", "second-try", Duration::from_secs(30))
        .await?;
    let ca = st::broker_ca(&flaky.host_base_url).await?;
    assert_eq!(
        redis_set_get(creds["url"].as_str().unwrap(), &ca).await?,
        "hello from s3m"
    );
    let log = flaky.stderr_with_line(|l| l.contains("exited while it started"));
    assert!(log.contains("exited while it started"), "{log}");
    let (status, deleted) = api.delete("redis", "second-try").await?;
    assert_eq!(status, 200, "{deleted}");

    let never = tempfile::tempdir()?;
    let never_app = app(&format!(
        "{}\nredis_start_timeout_seconds = 600",
        st::failing_redis_server(never.path(), 1000)?
    ))?;
    let _never_reaper = BrokerReaper::new(&never_app.state_dir);
    let token = never_app.token(&["data-streaming"], PROJECT)?;
    let api = Api::of(&never_app, &token);
    let (status, body) = api
        .provision("redis", &json!({"kind": "general", "name": "never"}))
        .await?;
    assert_eq!(status, 200, "{body}");
    let started = std::time::Instant::now();
    let err = api
        .wait_healthy("redis", "never", Duration::from_secs(60))
        .await
        .expect_err("a broker that never starts became healthy");
    assert!(err.to_string().contains("failed"), "{err:#}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "given up only after {:?}",
        started.elapsed()
    );
    let launches: u32 = std::fs::read_to_string(never.path().join("launches"))?
        .trim()
        .parse()?;
    assert_eq!(launches, 3, "the first launch and two more");
    Ok(())
}

/// OLCF's documentation (streaming-redis.rst) provisions Redis with
/// `"kind": "dragonfly-general"` on the legacy path: its curl example
/// verbatim, then a real client on the URL it hands out, and the broker's
/// address in the structured form S3M's Python client reads.
#[tokio::test(flavor = "multi_thread")]
async fn the_documentations_redis_example_works_as_written() -> Result<()> {
    st::require_servers(false)?;
    let app = app("")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let token = app.token(&["data-streaming"], PROJECT)?;
    // As the docs write it: `-H @.env` (Authorization: <token>), JSON body.
    let res = app
        .client()
        .post(app.url(&format!("{LEGACY_BASE}/redis/provision_cluster")))
        .header("Authorization", &token)
        .header("Content-Type", "application/json")
        .body(
            r#"{
               "kind": "dragonfly-general",
               "name": "mycluster",
               "resourceSettings": {
                 "cpus": 2,
                 "ram-gbs": 4
               }
             }"#,
        )
        .send()
        .await?;
    let status = res.status().as_u16();
    let creds: serde_json::Value = res.json().await?;
    assert_eq!(status, 200, "{creds}");
    let url = creds["url"].as_str().context("url")?.to_string();
    assert!(
        url.starts_with("rediss://") && url.contains(creds["password"].as_str().unwrap()),
        "{url}"
    );
    let ca = st::broker_ca(&app.host_base_url).await?;
    let api = Api::of(&app, &token);
    let cluster = api
        .wait_healthy("redis", "mycluster", Duration::from_secs(30))
        .await?;
    assert_eq!(cluster["kind"], "dragonfly-general");
    assert_eq!(
        cluster["resourceSettings"],
        json!({"cpus": 2, "ram-gbs": 4})
    );
    assert_eq!(redis_set_get(&url, &ca).await?, "hello from s3m");
    let port = st::url_port(&url)?;
    assert_eq!(cluster["endpoints"]["ports"]["redis"], port, "{cluster}");
    assert_eq!(
        cluster["endpoints"]["addresses"][0], "127.0.0.1",
        "{cluster}"
    );
    assert!(cluster.get("brokerEndpoints").is_none());
    let (s, _) = api.delete("redis", "mycluster").await?;
    assert_eq!(s, 200);
    // More than one node is refused in the documentation's words.
    let (s, v) = api
        .provision(
            "redis",
            &json!({"kind": "dragonfly-general", "name": "many", "resourceSettings": {"nodes": 2}}),
        )
        .await?;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Multi-node Redis clusters are not currently supported."),
        "{v}"
    );
    Ok(())
}

/// The CA certificate of some other facility.
fn foreign_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("certificate").pem()
}

/// `[streaming] tls = false`, the operator's option: plain Redis for a
/// facility that terminates TLS elsewhere, and no CA to hand out.
#[tokio::test(flavor = "multi_thread")]
async fn plain_text_brokers_are_an_operator_option() -> Result<()> {
    st::require_servers(false)?;
    let app = app("tls = false")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], PROJECT)?);
    let body = json!({"kind": "general", "name": "plain", "resourceSettings": {}});
    let (status, creds) = api.provision("redis", &body).await?;
    assert_eq!(status, 200, "{creds}");
    let url = creds["url"].as_str().context("url")?.to_string();
    assert!(url.starts_with("redis://s3m-plain:"), "{url}");
    api.wait_healthy("redis", "plain", Duration::from_secs(30))
        .await?;
    assert_eq!(plain_redis_set_get(&url).await?, "PONG");
    let ca = reqwest::get(format!(
        "{}/.well-known/s3m/broker-ca.pem",
        app.host_base_url
    ))
    .await?;
    assert_eq!(ca.status(), 404);
    let (status, _) = api.delete("redis", "plain").await?;
    assert_eq!(status, 200);
    Ok(())
}

/// The documentation's RabbitMQ example asks for `"nodes": 2`: two real
/// RabbitMQ nodes that share an Erlang cookie and form one cluster. The
/// handed-out URL reaches it; each node is reached with the same
/// credentials and CA, and a queue declared on one node carries messages
/// published on the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_two_node_rabbitmq_cluster_serves_one_queue_from_both_nodes() -> Result<()> {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::BasicProperties;

    st::require_servers(true)?;
    let app = app("")?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], PROJECT)?);
    let (status, creds) = api
        .provision(
            "rabbitmq",
            &json!({"kind": "general", "name": "mycluster",
                    "resourceSettings": {"cpus": 2, "ram-gbs": 4, "nodes": 2}, "featureFlags": {}}),
        )
        .await?;
    assert_eq!(status, 200, "{creds}");
    let url = creds["amqpsUrl"].as_str().context("amqpsUrl")?.to_string();
    let cluster = api
        .wait_healthy("rabbitmq", "mycluster", Duration::from_secs(240))
        .await?;
    assert_eq!(cluster["resourceSettings"]["nodes"], 2, "{cluster}");
    let ca = st::broker_ca(&app.host_base_url).await?;

    // The second node's port, from the provider's record.
    let record = st::records(&app.state_dir)?
        .into_iter()
        .find(|r| r["name"] == "mycluster")
        .context("record")?;
    let port1 = record["endpoint"]["extraNodes"][0]["port"]
        .as_u64()
        .context(format!("a second node in {record}"))?;
    let port0 = st::url_port(&url)?;
    assert_ne!(u64::from(port0), port1);
    let url1 = url.replace(&format!(":{port0}"), &format!(":{port1}"));

    let node0 = st::amqp_connect(&url, &ca).await?;
    let node1 = st::amqp_connect(&url1, &ca).await?;
    let (ch0, ch1) = (node0.create_channel().await?, node1.create_channel().await?);
    // Declared on node 0, published through node 1, read on node 0; and the
    // other way round.
    for (declare, publish, read, queue) in [
        (&ch0, &ch1, &ch0, "declared-on-0"),
        (&ch1, &ch0, &ch1, "declared-on-1"),
    ] {
        declare
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        publish
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                queue.as_bytes(),
                BasicProperties::default(),
            )
            .await?
            .await?;
        let mut got = None;
        for _ in 0..100 {
            got = read
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await?;
            if got.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let msg = got.context(format!(
            "no message in {queue}: the nodes are not one cluster"
        ))?;
        assert_eq!(msg.delivery.data, queue.as_bytes());
    }
    node0.close(200, "bye".into()).await?;
    node1.close(200, "bye".into()).await?;

    // The management API sees both nodes running.
    {
        let mgmt = creds["mgmtUrl"]
            .as_str()
            .context("no mgmtUrl: Debian's rabbitmq-server ships the management plugin")?;
        let nodes: Value = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
            .build()?
            .get(format!("{mgmt}api/nodes"))
            .basic_auth("s3m-mycluster", Some(creds["password"].as_str().unwrap()))
            .send()
            .await?
            .json()
            .await?;
        let running = nodes
            .as_array()
            .context(format!("{nodes}"))?
            .iter()
            .filter(|n| n["running"] == true)
            .count();
        assert_eq!(running, 2, "{nodes}");
    }

    // Delete: both nodes go.
    let id = st::cluster_id(&app.state_dir, "mycluster")?;
    let (dir, pid) = st::cluster_process(&app.state_dir, &id)?;
    let (status, _) = api.delete("rabbitmq", "mycluster").await?;
    assert_eq!(status, 200);
    st::wait_gone(&dir, pid, port0, Duration::from_secs(15))?;
    assert!(!st::port_open(port1 as u16), "node 1 still listens");
    Ok(())
}

/// Two hosts behind one load balancer share one redis-server for
/// key-value: a cluster provisioned through A is listed, read, used (with
/// the CA either host serves), extended and deleted through B; a name taken
/// on one is taken on both; and when A is killed, B takes the cluster over
/// (its processes, on this machine, are adopted rather than orphaned).
#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_on_one_store_manage_each_others_clusters() -> Result<()> {
    st::require_servers(false)?;
    let redis = s3m_tests::redis_server::RedisServer::start()?;
    let opts = AppOptions {
        components: vec!["streaming".into()],
        runtime_config: Some(format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        )),
        ..Default::default()
    }
    .with_facility(st::facility("check_interval_ms = 200"));
    let a = TestApp::start(opts.clone())?;
    let b = TestApp::start(opts)?;
    let _reapers = (
        BrokerReaper::new(&a.state_dir),
        BrokerReaper::new(&b.state_dir),
    );
    let token = a.token(&["data-streaming"], PROJECT)?;
    let (api_a, api_b) = (Api::of(&a, &token), Api::of(&b, &token));

    let body = json!({"kind": "general", "name": "shared"});
    let (status, creds) = api_a.provision("redis", &body).await?;
    assert_eq!(status, 200, "{creds}");
    let url = creds["url"].as_str().context("url")?.to_string();
    api_a
        .wait_healthy("redis", "shared", Duration::from_secs(30))
        .await?;
    // The name is taken on B too.
    let (status, err) = api_b.provision("redis", &body).await?;
    assert_eq!((status, error_code(&err)), (409, 6), "{err}");
    // B lists it and hands out the same URL and password.
    let (_, list) = api_b.list("redis").await?;
    assert_eq!(list["clusters"][0]["name"], "shared", "{list}");
    let (status, got) = api_b.get_cluster("redis", "shared").await?;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["cluster"]["redisUrl"], url.as_str());
    assert_eq!(got["cluster"]["password"], creds["password"]);
    // Both hosts serve one CA, and it verifies the broker.
    let ca = st::broker_ca(&b.host_base_url).await?;
    assert_eq!(ca, st::broker_ca(&a.host_base_url).await?);
    assert_eq!(redis_set_get(&url, &ca).await?, "hello from s3m");
    // Extended through B, seen through A.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, ext) = api_b.extend("redis", "shared").await?;
    assert_eq!(status, 200, "{ext}");
    let (_, again) = api_a.get_cluster("redis", "shared").await?;
    assert_eq!(
        again["cluster"]["lifetime"]["extendedAt"], ext["lifetime"]["extendedAt"],
        "{again}"
    );
    assert!(!again["cluster"]["lifetime"]["extendedAt"].is_null());

    // A dies. Its broker runs on; B takes it over within a few checks.
    let id = st::cluster_id_in(&redis_records(&redis).await?, "shared")?;
    let (dir, pid) = st::cluster_process(&a.state_dir, &id)?;
    st::kill_host(&a.state_dir)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let b_id = std::fs::read_to_string(b.state_dir.join("host-id"))?;
    loop {
        let records = redis_records(&redis).await?;
        let r = records
            .iter()
            .find(|r| r["name"] == "shared")
            .context("record")?;
        if r["runner"] == b_id.trim() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B did not take the cluster over: {r}\n{}",
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = b.stderr_with_line(|l| l.contains("adopted a running cluster whose host is gone"));
    assert!(
        log.contains("adopted a running cluster whose host is gone"),
        "{log}"
    );
    assert_eq!(
        st::cluster_process(&a.state_dir, &id)?.1,
        pid,
        "adopted, not started again"
    );
    let (_, got) = api_b.get_cluster("redis", "shared").await?;
    assert_eq!(got["cluster"]["healthStatus"], "healthy", "{got}");
    assert_eq!(redis_set_get(&url, &ca).await?, "hello from s3m");

    // Deleted through B: the process that A started is gone.
    let (status, _) = api_b.delete("redis", "shared").await?;
    assert_eq!(status, 200);
    st::wait_gone(&dir, pid, st::url_port(&url)?, Duration::from_secs(10))?;
    let (status, _) = api_b.get_cluster("redis", "shared").await?;
    assert_eq!(status, 404);
    assert!(!b.stderr().contains(creds["password"].as_str().unwrap()));
    Ok(())
}

/// The broker records in the shared redis-server (key-value's Redis store).
async fn redis_records(redis: &s3m_tests::redis_server::RedisServer) -> Result<Vec<Value>> {
    let client = redis::Client::open(redis.url())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*brokers/cluster/*")
        .query_async(&mut con)
        .await?;
    let mut out = Vec::new();
    for k in keys {
        let v: Vec<u8> = redis::cmd("GET").arg(&k).query_async(&mut con).await?;
        out.push(serde_json::from_slice(&v)?);
    }
    Ok(out)
}
