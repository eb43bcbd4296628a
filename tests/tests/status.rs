//! Status over HTTP against the real s3m host: resources and downtimes from the facility
//! configuration, no token needed.

use std::collections::BTreeSet;

use anyhow::Result;
use s3m_tests::{expect_error, expect_json, keys, AppOptions, TestApp};
use serde_json::Value;

const STATUS: &str = "/olcf/v1alpha/status";

fn resource_fields() -> BTreeSet<String> {
    [
        "name",
        "description",
        "systemType",
        "securityEnclave",
        "organization",
        "status",
        "annotations",
        "downtimeScheduleAvailable",
        "upcomingDowntimes",
        "retrievedAt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn downtime_fields() -> BTreeSet<String> {
    [
        "resourceName",
        "status",
        "start",
        "end",
        "description",
        "attributes",
        "updatedAt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn check_downtime(d: &Value) {
    assert_eq!(keys(d), downtime_fields(), "{d}");
    assert_eq!(d["status"], "UNAVAILABLE", "{d}");
    assert_eq!(
        keys(&d["attributes"]),
        BTreeSet::from(["scheduled".to_string(), "reboot".to_string()]),
        "{d}"
    );
    for t in ["start", "end", "updatedAt"] {
        let s = d[t].as_str().unwrap_or_default();
        assert!(chrono_like(s), "{t} is not RFC 3339 UTC: {d}");
    }
}

fn check_resource(r: &Value) {
    assert_eq!(keys(r), resource_fields(), "{r}");
    assert_eq!(r["systemType"], "resource");
    assert_eq!(r["securityEnclave"], "open");
    assert!(
        ["OPERATIONAL", "UNAVAILABLE", "UNSPECIFIED"]
            .contains(&r["status"].as_str().unwrap_or_default()),
        "{r}"
    );
    assert!(r["annotations"].is_object(), "{r}");
    assert!(r["downtimeScheduleAvailable"].is_boolean(), "{r}");
    assert!(
        chrono_like(r["retrievedAt"].as_str().unwrap_or_default()),
        "{r}"
    );
    for d in r["upcomingDowntimes"]
        .as_array()
        .expect("upcomingDowntimes is a list")
    {
        check_downtime(d);
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn chrono_like(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() >= 20
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 3339 `now + secs`, computed from the system clock.
fn at(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = now + secs;
    let (days, rem) = (t.div_euclid(86400), t.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const HOUR: i64 = 3600;
const DAY: i64 = 86400;

/// A facility with a current downtime on basalt, one in 2 days on granite, one in 20 days
/// on granite, and a resource literally named "downtimes".
fn facility_with_downtimes() -> String {
    format!(
        r#"
[facility]
name = "Test Facility"
organization = "TF"
security_enclave = "open"
some_future_key = "ignored"

[[resources]]
name = "basalt"
description = "Basalt cluster"
status = "OPERATIONAL"
[resources.compute]
scheduler = "local"

[[resources]]
name = "granite"
description = "Granite cluster"
organization = "GRANITE-ORG"
annotations = {{ site = "east" }}

[[resources]]
name = "downtimes"
description = "A resource whose name collides with the endpoint"
status = "UNSPECIFIED"

[[downtimes]]
resource = "basalt"
start = "{now_minus_1h}"
end = "{now_plus_1h}"
description = "emergency maintenance"
reboot = true

[[downtimes]]
resource = "granite"
start = "{in_2_days}"
end = "{in_2_days_4h}"
description = "filesystem upgrade"
scheduled = true

[[downtimes]]
resource = "granite"
start = "{in_20_days}"
end = "{in_20_days_4h}"
description = "far away"
"#,
        now_minus_1h = at(-HOUR),
        now_plus_1h = at(HOUR),
        in_2_days = at(2 * DAY),
        in_2_days_4h = at(2 * DAY + 4 * HOUR),
        in_20_days = at(20 * DAY),
        in_20_days_4h = at(20 * DAY + 4 * HOUR),
    )
}

#[tokio::test]
async fn lists_the_sample_resources_without_a_token() -> Result<()> {
    let app = TestApp::start_only(&["status"])?;
    let body = expect_json(app.get(STATUS, None).await?).await?;
    assert_eq!(
        keys(&body),
        BTreeSet::from(["resources".to_string()]),
        "{body}"
    );
    let list = &body["resources"];
    let got = names(list);
    for expected in ["basalt", "granite", "quartz-dtn", "shale-archive"] {
        assert!(
            got.iter().any(|n| n == expected),
            "{expected} missing from {got:?}"
        );
    }
    for r in list.as_array().unwrap() {
        check_resource(r);
        assert_eq!(r["organization"], "CRCF", "{r}");
        // The sample holds no current downtime.
        assert_eq!(r["status"], "OPERATIONAL", "{r}");
    }
    // Trailing slash tolerated.
    let again = expect_json(app.get(&format!("{STATUS}/"), None).await?).await?;
    assert_eq!(names(&again["resources"]), got);
    Ok(())
}

#[tokio::test]
async fn one_resource_by_name_and_unknown_is_404() -> Result<()> {
    let app = TestApp::start_only(&["status"])?;
    let r = expect_json(app.get(&format!("{STATUS}/basalt"), None).await?).await?;
    check_resource(&r);
    assert_eq!(r["name"], "basalt");
    assert!(
        r["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{r}"
    );
    let r = expect_json(app.get(&format!("{STATUS}/granite/"), None).await?).await?;
    assert_eq!(r["name"], "granite");

    let body = expect_error(
        app.get(&format!("{STATUS}/no-such-system"), None).await?,
        404,
    )
    .await?;
    assert!(
        body["message"].as_str().unwrap().contains("no-such-system"),
        "{body}"
    );
    expect_error(app.get(&format!("{STATUS}/basalt/extra"), None).await?, 404).await?;
    let res = app.client().post(app.url(STATUS)).send().await?;
    expect_error(res, 405).await?;
    // A token is not needed, and one does not hurt.
    let res = app
        .get(&format!("{STATUS}/basalt"), Some("garbage"))
        .await?;
    assert_eq!(res.status(), 200);
    Ok(())
}

#[tokio::test]
async fn sample_has_no_current_downtime() -> Result<()> {
    let app = TestApp::start_only(&["status"])?;
    let body = expect_json(app.get(&format!("{STATUS}/downtimes"), None).await?).await?;
    assert_eq!(body, serde_json::json!({"downtimes": []}));
    let body = expect_json(
        app.get(&format!("{STATUS}/downtimes/upcoming"), None)
            .await?,
    )
    .await?;
    assert!(body["downtimes"].is_array(), "{body}");
    Ok(())
}

#[tokio::test]
async fn downtimes_current_and_upcoming() -> Result<()> {
    let app =
        TestApp::start(AppOptions::only(&["status"]).with_facility(facility_with_downtimes()))?;

    // basalt is in a current downtime: UNAVAILABLE whatever its configured status.
    let basalt = expect_json(app.get(&format!("{STATUS}/basalt"), None).await?).await?;
    check_resource(&basalt);
    assert_eq!(basalt["status"], "UNAVAILABLE", "{basalt}");
    let granite = expect_json(app.get(&format!("{STATUS}/granite"), None).await?).await?;
    check_resource(&granite);
    assert_eq!(granite["status"], "OPERATIONAL", "{granite}");
    assert_eq!(granite["organization"], "GRANITE-ORG");
    assert_eq!(granite["annotations"], serde_json::json!({"site": "east"}));
    let upcoming = granite["upcomingDowntimes"].as_array().unwrap();
    assert_eq!(
        upcoming.len(),
        1,
        "only the downtime in 2 days is upcoming: {granite}"
    );
    assert_eq!(upcoming[0]["description"], "filesystem upgrade");
    let basalt_in_list = expect_json(app.get(STATUS, None).await?).await?;
    let b = basalt_in_list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "basalt")
        .cloned()
        .unwrap();
    assert_eq!(b["status"], "UNAVAILABLE");

    // Current downtimes: basalt's only.
    let current = expect_json(app.get(&format!("{STATUS}/downtimes"), None).await?).await?;
    assert_eq!(
        keys(&current),
        BTreeSet::from(["downtimes".to_string()]),
        "{current}"
    );
    let list = current["downtimes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{current}");
    check_downtime(&list[0]);
    assert_eq!(list[0]["resourceName"], "basalt");
    assert_eq!(
        list[0]["attributes"],
        serde_json::json!({"scheduled": true, "reboot": true})
    );
    assert_eq!(
        list[0]["updatedAt"], list[0]["start"],
        "updatedAt defaults to start"
    );

    // Upcoming: the one in 2 days, not the one in 20 days, not the current one.
    let upcoming = expect_json(
        app.get(&format!("{STATUS}/downtimes/upcoming/"), None)
            .await?,
    )
    .await?;
    let list = upcoming["downtimes"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{upcoming}");
    check_downtime(&list[0]);
    assert_eq!(list[0]["resourceName"], "granite");
    assert_eq!(list[0]["description"], "filesystem upgrade");
    assert_eq!(
        list[0]["attributes"],
        serde_json::json!({"scheduled": true, "reboot": false})
    );
    Ok(())
}

#[tokio::test]
async fn downtimes_endpoint_wins_over_a_resource_named_downtimes() -> Result<()> {
    let app =
        TestApp::start(AppOptions::only(&["status"]).with_facility(facility_with_downtimes()))?;
    let body = expect_json(app.get(&format!("{STATUS}/downtimes"), None).await?).await?;
    assert_eq!(
        keys(&body),
        BTreeSet::from(["downtimes".to_string()]),
        "the endpoint, not the resource: {body}"
    );
    // The resource is still listed.
    let all = expect_json(app.get(STATUS, None).await?).await?;
    assert!(names(&all["resources"]).iter().any(|n| n == "downtimes"));
    Ok(())
}

#[tokio::test]
async fn configuration_edits_show_at_once_and_a_broken_file_is_503() -> Result<()> {
    let app = TestApp::start_only(&["status"])?;
    let file = app.dir.path().join("config/facility.toml");
    let mut text = std::fs::read_to_string(&file)?;
    text.push_str("\n[[resources]]\nname = \"obsidian\"\ndescription = \"added while serving\"\n");
    std::fs::write(&file, &text)?;
    let r = expect_json(app.get(&format!("{STATUS}/obsidian"), None).await?).await?;
    assert_eq!(r["description"], "added while serving");

    // The host checks the file at start; an operator may still break it while it serves.
    std::fs::write(&file, "[facility\nname = ")?;
    let body = expect_error(app.get(STATUS, None).await?, 503).await?;
    assert!(
        body["message"].as_str().unwrap().contains("facility.toml"),
        "{body}"
    );
    expect_error(app.get(&format!("{STATUS}/downtimes"), None).await?, 503).await?;
    expect_error(app.get(&format!("{STATUS}/basalt"), None).await?, 503).await?;
    Ok(())
}

/// `s3m up` hands components facility.toml already parsed (as JSON, kept
/// current by a watch of its directory): an edit that keeps the
/// file's size, made within the same second as the previous request, must
/// still show at once, and a file replaced by a rename too.
#[tokio::test]
async fn same_size_edits_and_renamed_files_show_at_once() -> Result<()> {
    let app = TestApp::start_only(&["status"])?;
    let file = app.dir.path().join("config/facility.toml");
    let base = std::fs::read_to_string(&file)?;
    let with = |word: &str| {
        format!("{base}\n[[resources]]\nname = \"obsidian\"\ndescription = \"{word}\"\n")
    };
    for word in ["first", "twice", "third"] {
        std::fs::write(&file, with(word))?;
        let r = expect_json(app.get(&format!("{STATUS}/obsidian"), None).await?).await?;
        assert_eq!(r["description"], word, "after writing {word:?} in place");
    }
    let fresh = app.dir.path().join("config/facility.toml.new");
    std::fs::write(&fresh, with("moved"))?;
    std::fs::rename(&fresh, &file)?;
    let r = expect_json(app.get(&format!("{STATUS}/obsidian"), None).await?).await?;
    assert_eq!(r["description"], "moved");
    Ok(())
}

/// A downtime's times may be TOML date-times or strings; both read the same,
/// whichever way the host hands the file over.
#[tokio::test]
async fn bare_toml_datetimes_read_as_quoted_ones() -> Result<()> {
    let (start, end) = (at(-3600), at(3600));
    let facility = format!(
        "[facility]\nname = \"F\"\norganization = \"O\"\n\
         [[resources]]\nname = \"bare\"\n[[resources]]\nname = \"quoted\"\n\
         [[downtimes]]\nresource = \"bare\"\nstart = {start}\nend = {end}\ndescription = \"d\"\n\
         [[downtimes]]\nresource = \"quoted\"\nstart = \"{start}\"\nend = \"{end}\"\ndescription = \"d\"\n"
    );
    let app = TestApp::start(AppOptions::only(&["status"]).with_facility(facility))?;
    let now = expect_json(app.get(&format!("{STATUS}/downtimes"), None).await?).await?;
    let list = now["downtimes"].as_array().expect("downtimes");
    assert_eq!(list.len(), 2, "{now}");
    let field = |name: &str, key: &str| {
        list.iter()
            .find(|d| d["resourceName"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {now}"))[key]
            .clone()
    };
    for key in ["start", "end", "updatedAt"] {
        assert_eq!(field("bare", key), field("quoted", key), "{key}");
    }
    for name in ["bare", "quoted"] {
        let r = expect_json(app.get(&format!("{STATUS}/{name}"), None).await?).await?;
        assert_eq!(r["status"], "UNAVAILABLE", "{r}");
    }
    Ok(())
}
