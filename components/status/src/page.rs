//! The status page people look at: `GET /` and `GET /status` render the
//! same data as the status API (the facility's resources, their state,
//! current and upcoming downtimes) as one HTML page. No JavaScript, no
//! external resource (the Content-Security-Policy forbids both), readable
//! on a phone. Every value from the configuration is escaped.

use super::{text, Facility, ScheduledDowntime};
use chrono::{DateTime, Utc};
use s3m_guest::http::Response;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:1rem 1.25rem}\
header h1{margin:0;font-size:1.35rem}header p{margin:.25rem 0 0;opacity:.8;font-size:.9rem}\
main{max-width:48rem;margin:0 auto;padding:1rem}\
.summary{font-weight:600;margin:.5rem 0 1rem}\
.resource{background:#fff;border-radius:.5rem;padding:.85rem 1rem;margin:0 0 .75rem;box-shadow:0 1px 2px rgba(0,0,0,.08)}\
.resource h2{font-size:1.1rem;margin:0 0 .25rem;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}\
.resource p{margin:.25rem 0;font-size:.95rem}\
.state{font-size:.8rem;font-weight:700;padding:.15rem .55rem;border-radius:1rem;white-space:nowrap}\
.OPERATIONAL{background:#d8f5df;color:#11602a}.UNAVAILABLE{background:#fde0df;color:#8c1d18}.UNSPECIFIED{background:#e6e8ec;color:#3c4352}\
.down{border-left:.35rem solid #c62828}\
ul{margin:.35rem 0 0;padding-left:1.1rem;font-size:.9rem}\
footer{font-size:.8rem;color:#5b6270;text-align:center;padding:1rem}";

/// The page for `now`.
pub(crate) fn render(f: &Facility, now: DateTime<Utc>) -> Response {
    let mut body = String::new();
    let down_now: Vec<&ScheduledDowntime> = f
        .downtimes
        .iter()
        .filter(|d| d.start <= now && now < d.end)
        .collect();
    let unavailable = f
        .resources
        .iter()
        .filter(|r| f.describe(r, now, "").status == "UNAVAILABLE")
        .count();
    body.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    body.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    body.push_str(&format!(
        "<title>{} status</title><style>{STYLE}</style></head><body>",
        esc(&text(f.name))
    ));
    body.push_str(&format!(
        "<header><h1>{} status</h1><p>{} · {} enclave</p></header><main>",
        esc(&text(f.name)),
        esc(&text(f.organization)),
        esc(&text(f.security_enclave))
    ));
    body.push_str(&format!(
        "<p class=\"summary\">{}</p>",
        match unavailable {
            0 => "All resources are available.".to_string(),
            1 => "1 resource is unavailable.".to_string(),
            n => format!("{n} resources are unavailable."),
        }
    ));
    for r in &f.resources {
        let d = f.describe(r, now, "");
        let current: Vec<&&ScheduledDowntime> =
            down_now.iter().filter(|x| x.resource == r.name).collect();
        let upcoming: Vec<&ScheduledDowntime> = f
            .downtimes
            .iter()
            .filter(|x| x.resource == r.name && x.start > now)
            .collect();
        let label = match (d.status, current.is_empty()) {
            ("UNAVAILABLE", false) => "In downtime",
            ("UNAVAILABLE", true) => "Unavailable",
            ("OPERATIONAL", _) => "Operational",
            _ => "Unknown",
        };
        let class = if current.is_empty() {
            "resource"
        } else {
            "resource down"
        };
        body.push_str(&format!(
            "<section class=\"{class}\" id=\"{}\"><h2>{} <span class=\"state {}\">{label}</span></h2>",
            esc(&r.name),
            esc(&r.name),
            esc(d.status)
        ));
        let description = text(r.description);
        if !description.is_empty() {
            body.push_str(&format!("<p>{}</p>", esc(&description)));
        }
        for c in &current {
            body.push_str(&format!(
                "<p><strong>Down now</strong> until {}: {}</p>",
                when(&c.end),
                esc(&c.description)
            ));
        }
        if !upcoming.is_empty() {
            body.push_str("<p>Upcoming downtimes:</p><ul>");
            for u in &upcoming {
                body.push_str(&format!(
                    "<li>{} to {}: {}{}</li>",
                    when(&u.start),
                    when(&u.end),
                    esc(&u.description),
                    if u.reboot { " (reboot)" } else { "" }
                ));
            }
            body.push_str("</ul>");
        }
        body.push_str("</section>");
    }
    body.push_str(&format!(
        "</main><footer>As of {}. The same data as <a href=\"/olcf/v1alpha/status\">/olcf/v1alpha/status</a>.</footer></body></html>",
        when(&now)
    ));
    Response::new(200, "text/html; charset=utf-8", body.into_bytes())
        .with_header(
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        )
        .with_header("cache-control", "no-store")
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_escaped() {
        assert_eq!(
            super::esc("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
