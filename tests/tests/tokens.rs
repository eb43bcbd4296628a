//! Tokens over HTTP against the real s3m host: introspect, revoke, and every way a token can
//! be refused.

use std::collections::{BTreeSet, HashSet};

use anyhow::Result;
use jwt_simple::prelude::*;
use s3m_tests::{b64url, expect_error, expect_json, jwt_claims, jwt_id, keys, TestApp};
use serde_json::Value;

const INTROSPECT: &str = "/olcf/v1/token/ctls/introspect";
const REVOKE: &str = "/olcf/v1/token/ctls/revoke";

/// Introspect with `Authorization: <value>`.
async fn introspect(app: &TestApp, authorization: &str) -> Result<reqwest::Response> {
    Ok(app
        .client()
        .get(app.url(INTROSPECT))
        .header("Authorization", authorization)
        .send()
        .await?)
}

/// Expects a 401 error JSON that does not echo `token`; returns its message.
async fn refused(app: &TestApp, token: &str) -> Result<String> {
    let res = introspect(app, token).await?;
    let body = expect_error(res, 401).await?;
    let text = body.to_string();
    if token.len() >= 8 {
        assert!(!text.contains(token), "the error echoes the token: {text}");
        // Nor any of its segments.
        for part in token.split('.').filter(|p| p.len() >= 16) {
            assert!(
                !text.contains(part),
                "the error echoes part of the token: {text}"
            );
        }
    }
    Ok(body["message"].as_str().unwrap_or_default().to_string())
}

#[derive(Serialize, Deserialize)]
struct Opat {
    description: String,
    #[serde(rename = "type")]
    kind: String,
}

/// A JWT with `claims_of`'s claims (type, aud, nbf, iat, jti, description) signed with a key
/// that is not the facility's; `kind` and `aud` override the type and audience.
fn forge(claims_of: &Value, kind: &str, aud: &str) -> String {
    let key = Ed25519KeyPair::generate();
    let mut claims = Claims::with_custom_claims(
        Opat {
            description: claims_of["description"].as_str().unwrap_or_default().into(),
            kind: kind.into(),
        },
        Duration::from_hours(1),
    )
    .with_audience(aud)
    .with_jwt_id(claims_of["jti"].as_str().expect("jti"));
    claims.expires_at = None;
    claims.invalid_before = claims_of["nbf"].as_u64().map(Duration::from_secs);
    claims.issued_at = claims_of["iat"].as_u64().map(Duration::from_secs);
    key.sign(claims).expect("signing")
}

#[tokio::test]
async fn introspect_shows_the_exact_record() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.mint(
        "STF040",
        &["compute-ace", "data-streaming"],
        &["--description", "docs-example-01", "--owner", "jdoe"],
    )?;
    let body = expect_json(introspect(&app, &token).await?).await?;
    assert_eq!(keys(&body), BTreeSet::from(["token".to_string()]), "{body}");
    let t = &body["token"];
    let expected: BTreeSet<String> = [
        "username",
        "project",
        "permissions",
        "plannedExpiration",
        "securityEnclave",
        "description",
        "oneTimeToken",
        "delayedStart",
        "delayDate",
        "delayDuration",
        "ownerName",
        "grpcPermissions",
        "extensions",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keys(t), expected, "{t}");
    assert_eq!(t["username"], "stf040_auser");
    assert_eq!(t["project"], "STF040");
    let perms: HashSet<&str> = t["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(perms, HashSet::from(["compute-ace", "data-streaming"]));
    assert_eq!(t["description"], "docs-example-01");
    assert_eq!(t["ownerName"], "jdoe");
    assert_eq!(t["securityEnclave"], "open");
    assert_eq!(t["oneTimeToken"], false);
    assert_eq!(t["delayedStart"], false);
    assert_eq!(t["delayDate"], Value::Null);
    assert_eq!(t["delayDuration"], "");
    assert_eq!(t["grpcPermissions"], serde_json::json!([]));
    assert_eq!(t["extensions"], 0);
    // RFC 3339 UTC with microseconds and Z, about 30 days ahead (the default lifetime).
    let exp = t["plannedExpiration"].as_str().unwrap();
    assert!(
        exp.ends_with('Z') && exp.len() == "2024-11-08T14:45:38.756330Z".len(),
        "{exp}"
    );
    assert!(
        !body.to_string().contains(&token),
        "introspect must not echo the token"
    );

    // The JWT itself: OLCF's claims.
    let claims = jwt_claims(&token)?;
    assert_eq!(claims["type"], "opat");
    assert!(
        claims["aud"] == "s3m" || claims["aud"] == serde_json::json!(["s3m"]),
        "{claims}"
    );
    assert!(
        claims["jti"].is_string() && claims["nbf"].is_u64() && claims["iat"].is_u64(),
        "{claims}"
    );
    Ok(())
}

#[tokio::test]
async fn bearer_and_raw_forms_both_work() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.token(&["compute-ace"], "STF040")?;
    for auth in [
        token.clone(),
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
    ] {
        let res = introspect(&app, &auth).await?;
        assert_eq!(
            res.status(),
            200,
            "Authorization form {:?}",
            auth.split(' ').next()
        );
    }
    Ok(())
}

#[tokio::test]
async fn revoke_ends_the_token() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let res = app
        .client()
        .delete(app.url(REVOKE))
        .header("Authorization", &token)
        .send()
        .await?;
    let body = expect_json(res).await?;
    assert_eq!(body, serde_json::json!({}));
    let message = refused(&app, &token).await?;
    assert!(message.contains("revoked"), "{message}");
    // A second revoke is refused too: the token is dead.
    let res = app
        .client()
        .delete(app.url(REVOKE))
        .header("Authorization", &token)
        .send()
        .await?;
    expect_error(res, 401).await?;
    // Other tokens are untouched.
    let other = app.token(&["compute-ace"], "STF040")?;
    assert_eq!(introspect(&app, &other).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn cli_revoke_while_serving_takes_effect_at_once() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.token(&["compute-ace"], "STF040")?;
    assert_eq!(introspect(&app, &token).await?.status(), 200);
    let jti = jwt_id(&token)?;
    app.cli_ok(&["token", "revoke", &jti])?;
    let message = refused(&app, &token).await?;
    assert!(message.contains("revoked"), "{message}");
    Ok(())
}

#[tokio::test]
async fn token_minted_while_serving_works_at_once_and_is_listed() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    // The app is already serving; this token did not exist when it started.
    let token = app.mint("GEN123", &["workflows"], &["--description", "minted-live"])?;
    let body = expect_json(introspect(&app, &token).await?).await?;
    assert_eq!(body["token"]["project"], "GEN123");
    assert_eq!(body["token"]["username"], "gen123_auser");

    let out = app.cli_ok(&["token", "list", "--project", "GEN123"])?;
    let list: Value = serde_json::from_str(out.stdout.trim())?;
    let records = list.as_array().expect("token list prints a JSON array");
    let jti = jwt_id(&token)?;
    assert!(records.iter().any(|r| r["jti"] == jti.as_str()), "{list}");
    assert!(
        !out.stdout.contains(&token),
        "token list must not print tokens"
    );
    for r in records {
        assert!(
            r.get("tokenSha256").is_none(),
            "token list must not print hashes: {r}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn expired_token_is_refused() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.mint("STF040", &["compute-ace"], &["--expires-in", "1s"])?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let message = refused(&app, &token).await?;
    assert!(message.contains("expired"), "{message}");
    Ok(())
}

#[tokio::test]
async fn delayed_token_is_refused_until_its_start() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.mint("STF040", &["compute-ace"], &["--delay", "1h"])?;
    let message = refused(&app, &token).await?;
    // The JWT's nbf or the record's delayDate, whichever is checked first, refuses it.
    assert!(
        message.contains("not active until") || message.contains("not yet valid"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn delayed_token_works_from_its_start_and_says_its_delay() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.mint("STF040", &["compute-ace"], &["--delay", "2s"])?;
    refused(&app, &token).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let body = expect_json(introspect(&app, &token).await?).await?;
    let t = &body["token"];
    assert_eq!(t["delayedStart"], true, "{t}");
    assert_eq!(t["delayDuration"], "2s", "{t}");
    let date = t["delayDate"].as_str().unwrap_or_default();
    assert!(date.ends_with('Z') && date.len() == 27, "{t}");
    Ok(())
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_refused() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let claims = jwt_claims(&token)?;
    let aud = "s3m";

    // Same claims, real jti, another Ed25519 key.
    let forged = forge(&claims, "opat", aud);
    assert_ne!(forged, token);
    refused(&app, &forged).await?;

    // alg: none, real claims, empty signature.
    let parts: Vec<&str> = token.split('.').collect();
    let none = format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    refused(&app, &none).await?;

    // Wrong type, re-signed.
    let message = refused(&app, &forge(&claims, "xyz", aud)).await?;
    assert!(message.contains("type"), "{message}");

    // Wrong audience, re-signed.
    let message = refused(&app, &forge(&claims, "opat", "someone-else")).await?;
    assert!(message.contains("audience"), "{message}");

    // Payload altered (description), original header and signature kept.
    let mut altered_claims = claims.clone();
    altered_claims["description"] = Value::String("altered".into());
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(altered_claims.to_string().as_bytes()),
        parts[2]
    );
    refused(&app, &altered).await?;

    // Truncated signature, garbage, and structurally broken tokens.
    refused(&app, &token[..token.len() - 6]).await?;
    refused(&app, &format!("{}.{}", parts[0], parts[1])).await?;
    refused(&app, "garbage-not-a-token-at-all").await?;
    refused(&app, "a.b.c").await?;
    refused(&app, &format!("{token}.{}", parts[2])).await?;

    // The genuine token still works after all that.
    assert_eq!(introspect(&app, &token).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn missing_or_empty_authorization_is_refused() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let body = expect_error(app.get(INTROSPECT, None).await?, 401).await?;
    assert!(
        body["message"].as_str().unwrap().contains("missing token"),
        "{body}"
    );
    expect_error(introspect(&app, "").await?, 401).await?;
    expect_error(introspect(&app, "Bearer ").await?, 401).await?;
    expect_error(introspect(&app, "Bearer").await?, 401).await?;
    let res = app.client().delete(app.url(REVOKE)).send().await?;
    expect_error(res, 401).await?;
    Ok(())
}

#[tokio::test]
async fn one_time_token_works_exactly_once_under_concurrency() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.mint("STF040", &["compute-ace"], &["--one-time"])?;
    let requests = (0..20).map(|_| introspect(&app, &token));
    let results = futures::future::join_all(requests).await;
    let mut ok = 0;
    let mut refused_count = 0;
    for res in results {
        let res = res?;
        match res.status().as_u16() {
            200 => ok += 1,
            401 => {
                let body = expect_error(res, 401).await?;
                assert!(
                    body["message"].as_str().unwrap().contains("already used"),
                    "{body}"
                );
                refused_count += 1;
            }
            other => panic!("unexpected status {other}: {}", res.text().await?),
        }
    }
    assert_eq!(
        (ok, refused_count),
        (1, 19),
        "exactly one of 20 concurrent uses may succeed"
    );
    refused(&app, &token).await?;
    Ok(())
}

/// The marker that a one-time token was used stays while the token could
/// still be presented, and is swept from key-value once it expired.
#[tokio::test]
async fn a_used_one_time_tokens_marker_goes_when_the_token_expires() -> Result<()> {
    let mut opts = s3m_tests::AppOptions::only(&["tokens"]);
    opts.up_args = vec!["--sweep-interval".into(), "200ms".into()];
    let app = TestApp::start(opts)?;
    let token = app.mint(
        "STF040",
        &["compute-ace"],
        &["--one-time", "--expires-in", "2s"],
    )?;
    let lasting = app.mint("STF040", &["compute-ace"], &["--one-time"])?;
    expect_json(introspect(&app, &token).await?).await?;
    expect_json(introspect(&app, &lasting).await?).await?;
    let markers = || -> Result<Vec<String>> {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; [print(k) for (k,) in sqlite3.connect(sys.argv[1]).execute(\"SELECT key FROM spin_key_value WHERE key LIKE 'token-used/%' ORDER BY key\")]")
            .arg(app.state_dir.join("key-value.db"))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect())
    };
    let (short, long) = (
        format!("token-used/{}", jwt_id(&token)?),
        format!("token-used/{}", jwt_id(&lasting)?),
    );
    let mut both = vec![short.clone(), long.clone()];
    both.sort();
    assert_eq!(markers()?, both);
    refused(&app, &token).await?;
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    assert_eq!(
        markers()?,
        vec![long],
        "only the expired token's marker goes"
    );
    // Expired, it stays refused.
    let message = refused(&app, &token).await?;
    assert!(message.contains("expired"), "{message}");
    refused(&app, &lasting).await?;
    Ok(())
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let res = app
        .client()
        .get(app.url("/olcf/v1/token/ctls/nothing"))
        .header("Authorization", &token)
        .send()
        .await?;
    expect_error(res, 404).await?;
    let res = app
        .client()
        .post(app.url(INTROSPECT))
        .header("Authorization", &token)
        .send()
        .await?;
    expect_error(res, 405).await?;
    let res = app
        .client()
        .get(app.url(REVOKE))
        .header("Authorization", &token)
        .send()
        .await?;
    expect_error(res, 405).await?;
    // The wrong method revoked nothing.
    assert_eq!(introspect(&app, &token).await?.status(), 200);
    Ok(())
}

/// Who holds a lock on the `-shm` file's DMS byte, as `(l_type, l_pid)`:
/// SQLite's unix VFS keeps a read lock there for as long as a process has
/// the wal-index open, and a connection that finds no lock on it takes
/// itself for the file's first user and resets the wal-index (truncating
/// the file to 3 bytes, then rebuilding it). Asked from this process, so
/// the answer is about other processes' locks.
fn wal_index_lock(shm: &std::path::Path) -> Result<(i32, i32)> {
    use std::os::fd::AsRawFd;
    /// SQLite's UNIX_SHM_DMS: UNIX_SHM_BASE ((22 + 8) * 4) + SQLITE_SHM_NLOCK (8).
    const DMS: i64 = 128;
    let file = std::fs::File::open(shm)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", shm.display()))?;
    // SAFETY: a plain C struct, all zeroes is valid; fcntl fills it in.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = DMS as _;
    lock.l_len = 1;
    // SAFETY: F_GETLK with a valid descriptor and a flock to fill in.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    anyhow::ensure!(
        rc == 0,
        "fcntl(F_GETLK) on {}: {}",
        shm.display(),
        std::io::Error::last_os_error()
    );
    Ok((lock.l_type as i32, lock.l_pid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_while_serving_under_load_keeps_the_host_and_its_sqlite_locks() -> Result<()> {
    let app = TestApp::start_only(&["tokens"])?;
    let shm = app.state_dir.join("key-value.db-shm");
    let token = app.token(&["compute-ace"], "STF041")?;
    assert_eq!(introspect(&app, &token).await?.status(), 200);
    let held = |when: &str| -> Result<()> {
        let (kind, pid) = wal_index_lock(&shm)?;
        anyhow::ensure!(
            kind == libc::F_RDLCK && pid == app.pid() as i32,
            "{when}: the serving host (pid {}) must hold SQLite's read lock on {}'s DMS byte; \
             found lock type {kind} held by pid {pid} (F_UNLCK is {}): without it the token CLI \
             resets the wal-index under the host",
            app.pid(),
            shm.display(),
            libc::F_UNLCK
        );
        Ok(())
    };
    held("after the first request")?;

    // Token checks run all through the mints, each a separate CLI process
    // that opens, writes and closes the same file.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url, token, stop) = (
            app.client().clone(),
            app.url(INTROSPECT),
            token.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut answers = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = client
                    .get(&url)
                    .header("Authorization", &token)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 200 => answers += 1,
                    Ok(r) => anyhow::bail!("introspect during the mints: HTTP {}", r.status()),
                    Err(e) => anyhow::bail!("introspect during the mints: {e}"),
                }
            }
            Ok(answers)
        }));
    }
    let mut minted = Vec::new();
    for i in 0..8 {
        let app = &app;
        minted.push(tokio::task::block_in_place(|| {
            app.mint(
                "STF041",
                &["compute-ace"],
                &["--description", &format!("live {i}")],
            )
        })?);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = 0;
    for task in load {
        answers += task.await??;
    }
    assert!(answers > 0, "no token check ran during the mints");
    for t in &minted {
        assert_eq!(introspect(&app, t).await?.status(), 200);
    }
    held("after eight mints")?;
    Ok(())
}
