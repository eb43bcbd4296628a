//! The status page (issue 14): `GET /` renders the facility's resources,
//! their state and downtimes as HTML, and a real browser (Debian's
//! headless Chromium) shows it: the test takes a phone-sized screenshot and
//! checks the text Chromium rendered.

use anyhow::{ensure, Context, Result};
use s3m_tests::{AppOptions, TestApp};
use std::process::Command;

fn chromium() -> Result<&'static str> {
    let ok = Command::new("chromium")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ensure!(ok, "chromium is missing: apt-get install -y --no-install-recommends chromium (scripts/test installs it)");
    Ok("chromium")
}

fn headless(url: &str, extra: &[&str]) -> Result<std::process::Output> {
    let profile = tempfile::tempdir()?;
    let out = Command::new(chromium()?)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=412,915",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()?;
    Ok(out)
}

/// The width and height in a PNG's IHDR.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

#[tokio::test]
async fn a_browser_shows_the_facility_with_a_resource_in_downtime() -> Result<()> {
    let now = chrono::Utc::now();
    let facility = format!(
        "[facility]\nname = \"Cedar Ridge Computing Facility\"\norganization = \"CRCF\"\n\n\
         [[resources]]\nname = \"basalt\"\ndescription = \"CPU cluster\"\n\n\
         [[resources]]\nname = \"granite\"\ndescription = \"GPU cluster <b>new</b>\"\n\n\
         [[resources]]\nname = \"shale-archive\"\ndescription = \"Tape archive\"\n\n\
         [[downtimes]]\nresource = \"granite\"\nstart = \"{}\"\nend = \"{}\"\ndescription = \"Cooling repair\"\n\n\
         [[downtimes]]\nresource = \"shale-archive\"\nstart = \"2036-03-01T14:00:00Z\"\nend = \"2036-03-01T22:00:00Z\"\ndescription = \"Tape library firmware upgrade\"\n",
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        (now + chrono::Duration::hours(3)).to_rfc3339()
    );
    let app = TestApp::start(AppOptions::only(&["status"]).with_facility(facility))?;
    let res = app.client().get(app.url("/")).send().await?;
    assert_eq!(res.status(), 200);
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let csp = res
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'"),
        "no script may run: {csp}"
    );
    let html = res.text().await?;
    assert!(
        !html.contains("<script"),
        "no JavaScript is needed to read it"
    );
    assert!(
        html.contains("GPU cluster &lt;b&gt;new&lt;/b&gt;"),
        "configuration text is escaped"
    );
    assert!(html.contains("width=device-width"), "readable on a phone");
    // The same page at /status, and the API agrees about granite.
    assert_eq!(
        app.client().get(app.url("/status")).send().await?.status(),
        200
    );
    let api: serde_json::Value = app
        .client()
        .get(app.url("/olcf/v1alpha/status/granite"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(api["status"], "UNAVAILABLE");

    // A phone-sized screenshot in a real browser.
    let shot = tempfile::tempdir()?;
    let png = shot.path().join("status.png");
    let out = headless(&app.url("/"), &[&format!("--screenshot={}", png.display())])?;
    let bytes = std::fs::read(&png).with_context(|| {
        format!(
            "chromium wrote no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let (w, h) = png_size(&bytes).context("the screenshot is not a PNG")?;
    assert!(
        w >= 400 && h >= 800 && bytes.len() > 10_000,
        "a {w}x{h} screenshot of {} bytes",
        bytes.len()
    );
    // The text the browser rendered.
    let out = headless(&app.url("/"), &["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        dom.contains("</html>"),
        "chromium rendered nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = dom.replace('\n', " ");
    assert!(
        text.contains("Cedar Ridge Computing Facility status"),
        "{text}"
    );
    assert!(text.contains("1 resource is unavailable."), "{text}");
    let granite = text
        .split("id=\"granite\"")
        .nth(1)
        .context("granite's section")?;
    let granite = granite.split("</section>").next().unwrap_or_default();
    assert!(
        granite.contains("In downtime") && granite.contains("Cooling repair"),
        "{granite}"
    );
    let basalt = text
        .split("id=\"basalt\"")
        .nth(1)
        .unwrap_or_default()
        .split("</section>")
        .next()
        .unwrap_or_default();
    assert!(basalt.contains("Operational"), "{basalt}");
    let shale = text
        .split("id=\"shale-archive\"")
        .nth(1)
        .unwrap_or_default()
        .split("</section>")
        .next()
        .unwrap_or_default();
    assert!(
        shale.contains("Upcoming downtimes") && shale.contains("2036-03-01 14:00 UTC"),
        "{shale}"
    );
    Ok(())
}
