//! Status: the facility's resources and their downtimes, as operators write them in the
//! facility configuration (`/config/facility.toml`, read on every request so edits show at
//! once). No token is needed.
//!
//! This room reads only `[facility]`, `[[resources]]` and `[[downtimes]]`; every other key
//! (such as `[resources.compute]`) belongs to other components and is ignored here.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use s3m_guest::facility::{self, DowntimeConfig};
use s3m_guest::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use s3m_guest::time::{now, parse_rfc3339, rfc3339, rfc3339_micros};
use s3m_guest::{json, route_path, ApiError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use spin_sdk::http_component;

const BASE: &str = "/olcf/v1alpha/status";
/// How far ahead "upcoming" downtimes reach.
const UPCOMING_DAYS: i64 = 10;

mod page;

// ---- routes ----

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    s3m_guest::http::serve(req, out, route);
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = route_path(req);
    let endpoint = if path == "/" || path == "/status" {
        Endpoint::Page
    } else {
        let Some(rest) = path.strip_prefix(BASE) else {
            return Err(ApiError::no_route(&path));
        };
        match rest {
            "" => Endpoint::Resources,
            // `downtimes` wins over a resource of that name.
            "/downtimes" => Endpoint::CurrentDowntimes,
            "/downtimes/upcoming" => Endpoint::UpcomingDowntimes,
            name if name.starts_with('/') && !name[1..].contains('/') => {
                Endpoint::Resource(&name[1..])
            }
            _ => return Err(ApiError::no_route(&path)),
        }
    };
    if *req.method() != Method::Get {
        return Err(ApiError::wrong_method(req.method(), &path, &["GET"]));
    }
    // The summary's JSON, which the loaded facility borrows its text from.
    let json_text = facility::summary_json()?;
    let written;
    let summary = match Summary::read(&json_text) {
        Some(summary) => summary,
        None => {
            written = facility::written_summary()?;
            Summary::read(&written)
                .ok_or_else(|| ApiError::internal("the facility summary could not be read back"))?
        }
    };
    let facility = Facility::checked(summary)?;
    let now = now();
    let retrieved_at = rfc3339_micros(&now);
    Ok(match endpoint {
        Endpoint::Page => page::render(&facility, now),
        Endpoint::Resources => json(&ResourcesAnswer {
            resources: facility.resources(now, &retrieved_at),
        }),
        Endpoint::Resource(name) => json(&facility.resource(name, now, &retrieved_at)?),
        Endpoint::CurrentDowntimes => json(&DowntimesAnswer {
            downtimes: facility.current_downtimes(now),
        }),
        Endpoint::UpcomingDowntimes => json(&DowntimesAnswer {
            downtimes: facility.upcoming_downtimes(now, None),
        }),
    })
}

enum Endpoint<'a> {
    /// The HTML page of `GET /` and `GET /status`.
    Page,
    Resources,
    Resource(&'a str),
    CurrentDowntimes,
    UpcomingDowntimes,
}

// ---- wire shapes ----

// They borrow their text from the loaded configuration: an answer is written once and
// dropped, so nothing is copied for it. What the configuration's JSON holds as a string or
// a table that the answer only repeats (descriptions, annotations, ...) is written as the
// JSON text it was read from ([`RawValue`]): neither unescaped on reading nor escaped
// again on writing.

#[derive(Serialize)]
struct ResourcesAnswer<'a> {
    resources: Vec<Resource<'a>>,
}

#[derive(Serialize)]
struct DowntimesAnswer<'a> {
    downtimes: Vec<Downtime<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Resource<'a> {
    name: &'a str,
    description: &'a RawValue,
    system_type: &'static str,
    security_enclave: &'a RawValue,
    organization: &'a RawValue,
    status: &'a str,
    annotations: &'a RawValue,
    downtime_schedule_available: bool,
    upcoming_downtimes: Vec<Downtime<'a>>,
    /// One time for the whole answer, written once.
    retrieved_at: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Downtime<'a> {
    resource_name: &'a str,
    status: &'static str,
    start: String,
    end: String,
    description: &'a str,
    attributes: DowntimeAttributes,
    updated_at: String,
}

#[derive(Serialize)]
struct DowntimeAttributes {
    scheduled: bool,
    reboot: bool,
}

// ---- the facility configuration ----

const STATUSES: [&str; 3] = ["OPERATIONAL", "UNAVAILABLE", "UNSPECIFIED"];

/// The summary of the facility configuration as this component reads it: from its JSON,
/// borrowing the text. The host hands it over in that form
/// ([`facility::SUMMARY_DIGEST_ENV`]); read from the file, it is written in the same form
/// first ([`facility::written_summary`]), so that both give the same answer byte for byte.
#[derive(Deserialize)]
struct Summary<'a> {
    #[serde(borrow)]
    facility: InfoView<'a>,
    #[serde(borrow)]
    resources: Vec<ResourceView<'a>>,
    downtimes: Vec<DowntimeConfig>,
}

/// `[facility]`, its strings as their JSON.
#[derive(Deserialize)]
struct InfoView<'a> {
    #[serde(borrow)]
    name: &'a RawValue,
    #[serde(borrow)]
    organization: &'a RawValue,
    #[serde(borrow)]
    security_enclave: &'a RawValue,
}

/// One `[[resources]]` entry: what routes compare as text, the rest as its JSON.
#[derive(Deserialize)]
struct ResourceView<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    description: &'a RawValue,
    #[serde(borrow, default)]
    organization: Option<&'a RawValue>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(default)]
    downtime_schedule_available: Option<bool>,
    #[serde(borrow)]
    annotations: &'a RawValue,
}

impl<'a> Summary<'a> {
    /// `None` when `json` is not a summary in the host's form.
    fn read(json: &'a str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}

/// The text of a JSON string (the page shows it, HTML-escaped).
fn text(json: &RawValue) -> Cow<'_, str> {
    serde_json::from_str(json.get()).unwrap_or_default()
}

/// The configuration, checked: times parsed, statuses known, downtimes on known resources.
struct Facility<'a> {
    name: &'a RawValue,
    organization: &'a RawValue,
    security_enclave: &'a RawValue,
    resources: Vec<ResourceView<'a>>,
    downtimes: Vec<ScheduledDowntime>,
}

struct ScheduledDowntime {
    resource: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    description: String,
    scheduled: bool,
    reboot: bool,
    updated_at: DateTime<Utc>,
}

fn config_error(problem: impl std::fmt::Display) -> ApiError {
    facility::invalid(problem)
}

/// A time written as a TOML string ("2026-01-01T00:00:00Z") or a bare TOML datetime.
/// `what` names the key in an error; it is only called for one.
fn config_time(value: &toml::Value, what: impl Fn() -> String) -> Result<DateTime<Utc>, ApiError> {
    let text = match value {
        toml::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        toml::Value::Datetime(d) => std::borrow::Cow::Owned(d.to_string()),
        other => {
            return Err(config_error(format!(
                "{} must be an RFC 3339 time, not {other}",
                what()
            )))
        }
    };
    parse_rfc3339(&text).ok_or_else(|| {
        config_error(format!(
            "{} = {text:?} is not an RFC 3339 time with an offset (e.g. 2026-01-01T00:00:00Z)",
            what()
        ))
    })
}

impl<'a> Facility<'a> {
    /// The facility of a facility.toml's text, as status reads it from the file (tests:
    /// the text outlives the test).
    #[cfg(test)]
    fn parse(text: &str) -> Result<Facility<'static>, ApiError> {
        let path = std::path::Path::new(facility::CONFIG_FILE);
        let summary = facility::FacilitySummary::parse(text, path).map_err(facility::error)?;
        let json = serde_json::to_string(&summary).expect("a summary writes");
        let json: &'static str = Box::leak(json.into_boxed_str());
        Facility::checked(Summary::read(json).expect("a summary reads back"))
    }

    /// Checks what the shape leaves to this room: statuses, and downtimes'
    /// resources and times.
    fn checked(file: Summary<'a>) -> Result<Self, ApiError> {
        for r in &file.resources {
            if let Some(status) = &r.status {
                if !STATUSES.contains(&status.as_ref()) {
                    return Err(config_error(format!(
                        "resource {:?} has status {status:?}; use one of {}",
                        r.name,
                        STATUSES.join(", ")
                    )));
                }
            }
        }
        let mut downtimes = Vec::with_capacity(file.downtimes.len());
        for (i, d) in file.downtimes.into_iter().enumerate() {
            let what = |field: &str| format!("downtimes[{i}].{field}");
            if !file.resources.iter().any(|r| r.name == d.resource) {
                return Err(config_error(format!(
                    "{} names resource {:?}, which no [[resources]] entry defines",
                    what("resource"),
                    d.resource
                )));
            }
            let start = config_time(&d.start, || what("start"))?;
            let end = config_time(&d.end, || what("end"))?;
            if end <= start {
                return Err(config_error(format!(
                    "{} ends before it starts",
                    what("end")
                )));
            }
            let updated_at = match &d.updated_at {
                Some(v) => config_time(v, || what("updated_at"))?,
                None => start,
            };
            downtimes.push(ScheduledDowntime {
                resource: d.resource,
                start,
                end,
                description: d.description,
                scheduled: d.scheduled.unwrap_or(true),
                reboot: d.reboot.unwrap_or(false),
                updated_at,
            });
        }
        downtimes.sort_by_key(|d| d.start);
        Ok(Facility {
            name: file.facility.name,
            organization: file.facility.organization,
            security_enclave: file.facility.security_enclave,
            resources: file.resources,
            downtimes,
        })
    }

    fn current_downtimes(&self, now: DateTime<Utc>) -> Vec<Downtime<'_>> {
        self.downtimes
            .iter()
            .filter(|d| d.start <= now && now < d.end)
            .map(Downtime::from)
            .collect()
    }

    /// Downtimes starting within the next [`UPCOMING_DAYS`], of one resource or all.
    fn upcoming_downtimes(&self, now: DateTime<Utc>, resource: Option<&str>) -> Vec<Downtime<'_>> {
        let horizon = now + Duration::days(UPCOMING_DAYS);
        self.downtimes
            .iter()
            .filter(|d| d.start > now && d.start <= horizon)
            .filter(|d| resource.is_none_or(|r| d.resource == r))
            .map(Downtime::from)
            .collect()
    }

    fn resources<'b>(&'b self, now: DateTime<Utc>, retrieved_at: &'b str) -> Vec<Resource<'b>> {
        self.resources
            .iter()
            .map(|r| self.describe(r, now, retrieved_at))
            .collect()
    }

    fn resource<'b>(
        &'b self,
        name: &str,
        now: DateTime<Utc>,
        retrieved_at: &'b str,
    ) -> Result<Resource<'b>, ApiError> {
        self.resources
            .iter()
            .find(|r| r.name == name)
            .map(|r| self.describe(r, now, retrieved_at))
            .ok_or_else(|| {
                ApiError::not_found(format!("no resource named {name:?}; GET {BASE} lists them"))
            })
    }

    fn describe<'b>(
        &'b self,
        r: &'b ResourceView<'a>,
        now: DateTime<Utc>,
        retrieved_at: &'b str,
    ) -> Resource<'b> {
        let down = self
            .downtimes
            .iter()
            .any(|d| d.resource == r.name && d.start <= now && now < d.end);
        let status = if down {
            "UNAVAILABLE"
        } else {
            r.status.as_deref().unwrap_or("OPERATIONAL")
        };
        Resource {
            name: &r.name,
            description: r.description,
            system_type: "resource",
            security_enclave: self.security_enclave,
            organization: r.organization.unwrap_or(self.organization),
            status,
            annotations: r.annotations,
            downtime_schedule_available: r.downtime_schedule_available.unwrap_or(true),
            upcoming_downtimes: self.upcoming_downtimes(now, Some(&r.name)),
            retrieved_at,
        }
    }
}

impl<'a> From<&'a ScheduledDowntime> for Downtime<'a> {
    fn from(d: &'a ScheduledDowntime) -> Self {
        Downtime {
            resource_name: &d.resource,
            status: "UNAVAILABLE",
            start: rfc3339(&d.start),
            end: rfc3339(&d.end),
            description: &d.description,
            attributes: DowntimeAttributes {
                scheduled: d.scheduled,
                reboot: d.reboot,
            },
            updated_at: rfc3339(&d.updated_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../config/facility.toml");

    fn t(s: &str) -> DateTime<Utc> {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_sample_parses_and_ignores_other_components_keys() {
        let f = Facility::parse(SAMPLE).unwrap();
        let names: Vec<_> = f.resources.iter().map(|r| r.name.as_ref()).collect();
        assert_eq!(names, ["basalt", "granite", "quartz-dtn", "shale-archive"]);
        let now = t("2026-11-22T00:00:00Z");
        assert!(f.current_downtimes(now).is_empty());
        assert!(f
            .resources(now, "")
            .iter()
            .all(|r| r.status == "OPERATIONAL" && r.organization.get() == r#""CRCF""#));
    }

    #[test]
    fn current_downtime_makes_a_resource_unavailable() {
        let f = Facility::parse(
            r#"
            [facility]
            organization = "X"
            new_key = 1
            [[resources]]
            name = "a"
            status = "UNSPECIFIED"
            [resources.compute]
            scheduler = "local"
            [[downtimes]]
            resource = "a"
            start = 2026-01-01T00:00:00Z
            end = "2026-01-01T08:00:00Z"
            [[downtimes]]
            resource = "a"
            start = "2026-01-05T00:00:00Z"
            end = "2026-01-05T08:00:00Z"
            updated_at = "2025-12-01T00:00:00Z"
            [[downtimes]]
            resource = "a"
            start = "2026-01-20T00:00:00Z"
            end = "2026-01-20T08:00:00Z"
            "#,
        )
        .unwrap();
        let during = t("2026-01-01T01:00:00Z");
        assert_eq!(f.resource("a", during, "").unwrap().status, "UNAVAILABLE");
        assert_eq!(f.current_downtimes(during).len(), 1);
        let up = f.upcoming_downtimes(during, None);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].start, "2026-01-05T00:00:00Z");
        assert_eq!(up[0].updated_at, "2025-12-01T00:00:00Z");
        // The end is exclusive.
        let after = t("2026-01-01T08:00:00Z");
        assert_eq!(f.resource("a", after, "").unwrap().status, "UNSPECIFIED");
        assert!(f.resource("b", after, "").is_err_and(|e| e.status == 404));
    }

    /// Strings that JSON escapes (quotes, backslashes, control characters, non-ASCII) come
    /// out of the answer as they were written in the file, and the host's summary gives the
    /// same answer, byte for byte, as the file read here.
    #[test]
    fn text_is_written_back_as_the_file_holds_it_from_either_reading() {
        let toml_text = r#"
            [facility]
            name = "Quote \" and \\ backslash"
            organization = "Org é ✓"
            [[resources]]
            name = "r\"1"
            description = "tab\there, newline\nthere, <b>bold</b> & \u0001"
            annotations = { "z key" = "last", "a\"key" = "first" }
            organization = "Own org"
        "#;
        let from_file = Facility::parse(toml_text).unwrap();
        let now = t("2026-11-22T00:00:00Z");
        let answer = serde_json::to_string(&from_file.resources(now, "T")).unwrap();
        let value: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let r = &value[0];
        assert_eq!(r["name"], "r\"1");
        assert_eq!(
            r["description"],
            "tab\there, newline\nthere, <b>bold</b> & \u{1}"
        );
        assert_eq!(r["organization"], "Own org");
        assert_eq!(r["securityEnclave"], "open");
        assert_eq!(
            r["annotations"],
            serde_json::json!({"a\"key": "first", "z key": "last"})
        );

        let digests = s3m_guest::facility::FacilityConfig::digests(toml_text).unwrap();
        let from_host = Facility::checked(Summary::read(&digests.summary).unwrap()).unwrap();
        assert_eq!(
            serde_json::to_string(&from_host.resources(now, "T")).unwrap(),
            answer
        );
        assert_eq!(text(from_host.name), "Quote \" and \\ backslash");
        assert_eq!(text(from_host.organization), "Org é ✓");
    }

    #[test]
    fn bad_configurations_are_503_naming_the_problem() {
        for (text, needle) in [
            ("[facility", "not valid"),
            ("[[resources]]\nname = \"a\"\nstatus = \"BROKEN\"", "BROKEN"),
            ("[[resources]]\nname = \"a\"\n[[downtimes]]\nresource = \"b\"\nstart = \"2026-01-01T00:00:00Z\"\nend = \"2026-01-02T00:00:00Z\"", "\"b\""),
            ("[[resources]]\nname = \"a\"\n[[downtimes]]\nresource = \"a\"\nstart = \"yesterday\"\nend = \"2026-01-02T00:00:00Z\"", "yesterday"),
            ("[[resources]]\nname = \"a\"\n[[downtimes]]\nresource = \"a\"\nstart = \"2026-01-03T00:00:00Z\"\nend = \"2026-01-02T00:00:00Z\"", "ends before"),
        ] {
            let e = Facility::parse(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert_eq!((e.status, e.code), (503, 14));
            assert!(e.message.contains("facility.toml") && e.message.contains(needle), "{}", e.message);
        }
    }
}
