//! Workflows: the Argo Server's REST API over Argo `Workflow` documents,
//! `{namespace}` = the token's project (another project's namespace reads
//! 404), permission `workflows` plus each task's own.
//!
//! This component checks and stores what users ask, in key-value store
//! `workflows` (the layout is s3m_workflow::store); the s3m host's engine
//! runs the workflows and writes their status there. Under a host without
//! the engine (stock Spin, wasmtime serve), workflows are accepted and wait
//! for an s3m host that shares the store.
//!
//! Routes (also under `/olcf/open/v1alpha/workflows`, where `GET
//! .../templates` lists the built-in templates):
//! - `POST /api/v1/workflows/{ns}` `{"workflow": {...}, "serverDryRun": bool}`
//! - `GET /api/v1/workflows/{ns}`, `GET|DELETE /api/v1/workflows/{ns}/{name}`
//! - `PUT /api/v1/workflows/{ns}/{name}/{stop|terminate|suspend|resume|retry|resubmit}`
//! - `POST /api/v1/workflows/{ns}/lint`, `POST /api/v1/workflows/{ns}/submit`
//! - `POST|GET /api/v1/workflow-templates/{ns}`, `GET|PUT|DELETE .../{name}`

use s3m_guest::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use s3m_guest::{authenticate, json, route_path, ApiError, Principal};
use s3m_workflow::model::{phase, Workflow, WorkflowStatus, WorkflowTemplate};
use s3m_workflow::store::{self, Control, Doc, Run, Submitter};
use s3m_workflow::{builtins, parse};
use serde_json::{json, Value};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;

const PERMISSION: &str = "workflows";
const OLCF: &str = "/olcf/open/v1alpha/workflows";
/// The most workflows (or templates) one project keeps.
const MAX_PER_PROJECT: usize = 10_000;

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    s3m_guest::http::serve(req, out, route);
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = route_path(req);
    if path == format!("{OLCF}/templates") {
        return match req.method() {
            Method::Get => {
                let p = authenticate(req)?;
                p.require(PERMISSION)?;
                Ok(json(&json!({ "templates": builtins::all() })))
            }
            m => Err(ApiError::wrong_method(m, &path, &["GET"])),
        };
    }
    let rest = if let Some(r) = path.strip_prefix("/api/v1/workflows/") {
        ("workflows", r)
    } else if let Some(r) = path.strip_prefix("/api/v1/workflow-templates/") {
        ("templates", r)
    } else if let Some(r) = path.strip_prefix(&format!("{OLCF}/workflow-templates/")) {
        ("templates", r)
    } else if let Some(r) = path.strip_prefix(&format!("{OLCF}/")) {
        ("workflows", r)
    } else {
        return Err(ApiError::no_route(&path));
    };
    let parts: Vec<&str> = rest.1.split('/').collect();
    let p = authenticate(req)?;
    p.require(PERMISSION)?;
    let ns = parts[0];
    // Another project's namespace reads exactly like one that is not there.
    if !ns.eq_ignore_ascii_case(&p.project) {
        return Err(ApiError::not_found(format!(
            "namespace {:?} not found",
            s3m_guest::cut(ns)
        )));
    }
    let ns = p.project.to_lowercase();
    let m = req.method();
    match (rest.0, &parts[1..], m) {
        ("workflows", [], Method::Post) => create(req, &p, &ns),
        ("workflows", [], Method::Get) => list(&ns),
        ("workflows", ["lint"], Method::Post) => lint(req, &p, &ns),
        ("workflows", ["submit"], Method::Post) => submit(req, &p, &ns),
        ("workflows", [name], Method::Get) => Ok(json(&get(&ns, name)?)),
        ("workflows", [name], Method::Delete) => delete(&ns, name),
        ("workflows", [name, action], Method::Put) => act(req, &p, &ns, name, action),
        ("workflows", [] | ["lint" | "submit"] | [_] | [_, _], m) => Err(ApiError::wrong_method(
            m,
            &path,
            match parts.len() {
                1 => &["GET", "POST"],
                3 => &["PUT"],
                _ if matches!(parts[1], "lint" | "submit") => &["POST"],
                _ => &["GET", "DELETE"],
            },
        )),
        ("templates", [], Method::Post) => template_create(req, &ns),
        ("templates", [], Method::Get) => template_list(&ns),
        ("templates", [name], Method::Get) => Ok(json(&template_get(&ns, name)?)),
        ("templates", [name], Method::Put) => template_update(req, &ns, name),
        ("templates", [name], Method::Delete) => template_delete(&ns, name),
        ("templates", [] | [_], m) => Err(ApiError::wrong_method(
            m,
            &path,
            if parts.len() == 1 {
                &["GET", "POST"]
            } else {
                &["GET", "PUT", "DELETE"]
            },
        )),
        _ => Err(ApiError::no_route(&path)),
    }
}

// ---- key-value ---------------------------------------------------------

fn kv() -> Result<Store, ApiError> {
    Store::open(store::LABEL).map_err(|e| {
        ApiError::unavailable(format!(
            "key-value store {:?} unavailable: {e}; add [key_value_store.{}] to the runtime config",
            store::LABEL,
            store::LABEL
        ))
    })
}

fn kv_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("key-value store {:?}: {e}", store::LABEL))
}

fn read<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, ApiError> {
    match kv()?.get(key).map_err(kv_err)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ApiError::internal(format!("the stored record {key} is unreadable: {e}"))),
    }
}

fn write<T: serde::Serialize>(key: &str, value: &T) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))?;
    kv()?.set(key, &bytes).map_err(kv_err)
}

/// Writes `value` only where nothing is yet: false when the key exists.
fn create_only<T: serde::Serialize>(key: &str, value: &T) -> Result<bool, ApiError> {
    use spin_sdk::wit::wasi::keyvalue::{atomics, store as wstore};
    let bytes = serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))?;
    let bucket = wstore::open(store::LABEL).map_err(|e| kv_err(format!("{e:?}")))?;
    let cas = atomics::Cas::new(&bucket, key).map_err(|e| kv_err(format!("{e:?}")))?;
    if cas
        .current()
        .map_err(|e| kv_err(format!("{e:?}")))?
        .is_some()
    {
        return Ok(false);
    }
    match atomics::swap(cas, &bytes) {
        Ok(()) => Ok(true),
        Err(atomics::CasError::CasFailed(_)) => Ok(false),
        Err(atomics::CasError::StoreError(e)) => Err(kv_err(format!("{e:?}"))),
    }
}

/// Tells the engine to look at `ns/name` now.
fn wake(ns: &str, name: &str) -> Result<(), ApiError> {
    use spin_sdk::wit::wasi::keyvalue::{atomics, store as wstore};
    kv()?
        .set(&store::wake_key(ns, name), b"1")
        .map_err(kv_err)?;
    let bucket = wstore::open(store::LABEL).map_err(|e| kv_err(format!("{e:?}")))?;
    atomics::increment(&bucket, store::EVENTS, 1).map_err(|e| kv_err(format!("{e:?}")))?;
    Ok(())
}

fn keys_under(prefix: &str) -> Result<Vec<String>, ApiError> {
    let mut keys: Vec<String> = kv()?
        .get_keys()
        .map_err(kv_err)?
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    Ok(keys)
}

// ---- bodies ------------------------------------------------------------

fn body_value(req: &Request) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(req.body())
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: send {\"workflow\": {...}} as JSON or YAML",
        ));
    }
    parse::value(text).map_err(ApiError::bad_request)
}

/// `{"workflow": ...}` of create and lint; other keys are Argo's request
/// fields.
fn workflow_of(req: &Request, key: &str, allowed: &[&str]) -> Result<(Value, Value), ApiError> {
    let body = body_value(req)?;
    let Value::Object(map) = &body else {
        return Err(ApiError::bad_request(format!(
            "the body must be an object {{\"{key}\": {{...}}}}"
        )));
    };
    for k in map.keys() {
        if k != key && !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{k}: not a field of this request; the fields are {key}, {}",
                allowed.join(", ")
            )));
        }
    }
    let doc = map.get(key).cloned().ok_or_else(|| {
        ApiError::bad_request(format!("{key}: missing; send {{\"{key}\": {{...}}}}"))
    })?;
    Ok((doc, body))
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    let _ = getrandom::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn uuid() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now() -> String {
    s3m_guest::time::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// The permissions a workflow's tasks need besides `workflows`: refused
/// at submission rather than halfway through a run.
fn check_task_permissions(wf: &Workflow, p: &Principal) -> Result<(), ApiError> {
    let has = |want: &[&str]| want.iter().any(|w| p.permissions.iter().any(|q| q == w));
    for (i, t) in wf.spec.templates.iter().enumerate() {
        if (t.container.is_some() || t.script.is_some()) && !has(&["compute-ace"]) {
            return Err(ApiError::permission_denied(format!(
                "spec.templates[{i}] ({}) runs a batch job: the token needs compute-ace",
                t.name
            )));
        }
        let refs = t
            .dag
            .iter()
            .flat_map(|d| d.tasks.iter().filter_map(|x| x.template_ref.clone()))
            .chain(
                t.steps
                    .iter()
                    .flatten()
                    .flatten()
                    .filter_map(|s| s.template_ref.clone()),
            );
        for r in refs {
            if let Some(b) = builtins::find(&r.template) {
                let needs: Vec<&str> = match b.name {
                    "wait-job" | "check-job-status" => vec!["compute-ace", "compute-ace-readonly"],
                    _ => b.permission.into_iter().collect(),
                };
                if !needs.is_empty() && !has(&needs) {
                    return Err(ApiError::permission_denied(format!(
                        "spec.templates[{i}] ({}) uses the built-in {}: the token needs {}",
                        t.name,
                        b.name,
                        needs.join(" or ")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// A parsed, named, checked workflow for `ns`, ready to store.
fn prepare(doc: Value, p: &Principal, ns: &str) -> Result<Workflow, ApiError> {
    let mut wf: Workflow = parse::typed(doc, "workflow").map_err(bad)?;
    wf.status = None;
    if let Some(n) = &wf.metadata.namespace {
        if !n.eq_ignore_ascii_case(ns) {
            return Err(ApiError::bad_request(format!(
                "workflow.metadata.namespace {:?} differs from the namespace of the path ({ns})",
                s3m_guest::cut(n)
            )));
        }
    }
    s3m_workflow::validate(&wf).map_err(|e| bad(format!("workflow.{e}")))?;
    check_task_permissions(&wf, p)?;
    if wf.metadata.name.is_none() {
        let prefix = wf.metadata.generate_name.clone().unwrap_or_default();
        wf.metadata.name = Some(format!("{prefix}{}", random_suffix()));
    }
    wf.metadata.namespace = Some(ns.to_string());
    wf.metadata.uid = Some(uuid());
    wf.metadata.creation_timestamp = Some(now());
    wf.metadata.resource_version = Some("1".into());
    wf.api_version = Some("argoproj.io/v1alpha1".into());
    wf.kind = Some("Workflow".into());
    Ok(wf)
}

fn store_new(wf: Workflow, p: &Principal, ns: &str) -> Result<Response, ApiError> {
    let name = wf.metadata.name.clone().unwrap_or_default();
    if keys_under(&format!("{}{ns}/", store::DOC_PREFIX))?.len() >= MAX_PER_PROJECT {
        return Err(ApiError::resource_exhausted(format!(
            "project {ns} keeps {MAX_PER_PROJECT} workflows already: delete some first"
        )));
    }
    let doc = Doc {
        workflow: wf.clone(),
        submitter: Submitter {
            project: p.project.clone(),
            token_id: p.jti.clone(),
            permissions: p.permissions.clone(),
        },
        control: Control::default(),
    };
    if !create_only(&store::doc_key(ns, &name), &doc)? {
        return Err(ApiError::already_exists(format!(
            "workflows.argoproj.io {name:?} already exists"
        )));
    }
    wake(ns, &name)?;
    Ok(json(&wf))
}

// ---- workflows ---------------------------------------------------------

fn create(req: &Request, p: &Principal, ns: &str) -> Result<Response, ApiError> {
    let (doc, body) = workflow_of(
        req,
        "workflow",
        &["serverDryRun", "namespace", "instanceID", "createOptions"],
    )?;
    let dry = match body.get("serverDryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("serverDryRun: must be true or false")),
    };
    if let Some(Value::String(n)) = body.get("namespace") {
        if !n.is_empty() && !n.eq_ignore_ascii_case(ns) {
            return Err(ApiError::bad_request(
                "namespace: differs from the namespace of the path",
            ));
        }
    }
    let wf = prepare(doc, p, ns)?;
    if dry {
        return Ok(json(&wf));
    }
    store_new(wf, p, ns)
}

fn lint(req: &Request, p: &Principal, ns: &str) -> Result<Response, ApiError> {
    let (doc, _) = workflow_of(req, "workflow", &["namespace"])?;
    let wf = prepare(doc, p, ns)?;
    Ok(json(&wf))
}

/// The stored workflow with its status, as Argo shows it.
fn get(ns: &str, name: &str) -> Result<Value, ApiError> {
    let doc: Doc = read(&store::doc_key(ns, name))?
        .filter(|d: &Doc| !d.control.deleting)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "workflows.argoproj.io {:?} not found",
                s3m_guest::cut(name)
            ))
        })?;
    let run: Run = read(&store::run_key(ns, name))?.unwrap_or_default();
    Ok(shown(doc, run.status))
}

fn shown(doc: Doc, mut status: WorkflowStatus) -> Value {
    if status.phase.is_empty() {
        status.phase = phase::PENDING.into();
    }
    let mut v = serde_json::to_value(&doc.workflow).unwrap_or_default();
    v["status"] = serde_json::to_value(&status).unwrap_or_default();
    v
}

fn list(ns: &str) -> Result<Response, ApiError> {
    let mut items = Vec::new();
    for key in keys_under(&format!("{}{ns}/", store::DOC_PREFIX))? {
        let name = &key[store::DOC_PREFIX.len() + ns.len() + 1..];
        match get(ns, name) {
            Ok(v) => items.push(v),
            Err(e) if e.status == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json(
        &json!({ "metadata": {"resourceVersion": "1"}, "items": items }),
    ))
}

fn delete(ns: &str, name: &str) -> Result<Response, ApiError> {
    let mut doc: Doc = read(&store::doc_key(ns, name))?
        .filter(|d: &Doc| !d.control.deleting)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "workflows.argoproj.io {:?} not found",
                s3m_guest::cut(name)
            ))
        })?;
    doc.control.deleting = true;
    write(&store::doc_key(ns, name), &doc)?;
    wake(ns, name)?;
    Ok(json(&json!({})))
}

fn act(
    req: &Request,
    p: &Principal,
    ns: &str,
    name: &str,
    action: &str,
) -> Result<Response, ApiError> {
    let key = store::doc_key(ns, name);
    let mut doc: Doc = read(&key)?
        .filter(|d: &Doc| !d.control.deleting)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "workflows.argoproj.io {:?} not found",
                s3m_guest::cut(name)
            ))
        })?;
    let run: Run = read(&store::run_key(ns, name))?.unwrap_or_default();
    let done = phase::fulfilled(&run.status.phase);
    let conflict = |what: &str| {
        ApiError::aborted(format!(
            "workflow {name:?} is {}: cannot {what} it",
            run.status.phase
        ))
    };
    match action {
        "stop" | "terminate" => {
            if done {
                return Err(conflict(action));
            }
            doc.workflow.spec.shutdown = Some(if action == "stop" { "Stop" } else { "Terminate" }.into());
        }
        "suspend" => {
            if done {
                return Err(conflict(action));
            }
            doc.workflow.spec.suspend = Some(true);
        }
        "resume" => {
            if done {
                return Err(conflict(action));
            }
            doc.workflow.spec.suspend = None;
            doc.control.resumes += 1;
        }
        "retry" => {
            if !phase::failed_or_error(&run.status.phase) {
                return Err(ApiError::aborted(format!(
                    "workflow {name:?} is {}: only a Failed or Error workflow can be retried",
                    if run.status.phase.is_empty() { "Pending" } else { &run.status.phase }
                )));
            }
            doc.workflow.spec.shutdown = None;
            doc.control.retries += 1;
        }
        "resubmit" => {
            let mut wf = doc.workflow.clone();
            wf.metadata = s3m_workflow::model::Metadata {
                generate_name: Some(format!("{name}-")),
                labels: wf.metadata.labels.clone(),
                annotations: wf.metadata.annotations.clone(),
                ..Default::default()
            };
            wf.spec.shutdown = None;
            wf.spec.suspend = None;
            let _ = req;
            let wf = prepare(serde_json::to_value(&wf).map_err(|e| ApiError::internal(e.to_string()))?, p, ns)?;
            return store_new(wf, p, ns);
        }
        other => {
            return Err(ApiError::no_route(&format!(
                "/api/v1/workflows/{ns}/{name}/{other} (the actions are stop, terminate, suspend, resume, retry, resubmit)"
            )))
        }
    }
    write(&key, &doc)?;
    wake(ns, name)?;
    Ok(json(&shown(doc, run.status)))
}

/// `POST .../submit`: a workflow from a stored WorkflowTemplate.
fn submit(req: &Request, p: &Principal, ns: &str) -> Result<Response, ApiError> {
    let body = body_value(req)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be an object"))?;
    for k in obj.keys() {
        if !["resourceKind", "resourceName", "submitOptions", "namespace"].contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{k}: not a field of submit; the fields are resourceKind, resourceName, submitOptions"
            )));
        }
    }
    match obj.get("resourceKind").and_then(Value::as_str) {
        Some("WorkflowTemplate") => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "resourceKind {:?}: only WorkflowTemplate is supported",
                s3m_guest::cut(k)
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "resourceKind: missing (WorkflowTemplate)",
            ))
        }
    }
    let tname = obj
        .get("resourceName")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("resourceName: missing"))?;
    let template = template_get(ns, tname)?;
    let t: WorkflowTemplate =
        parse::typed(template, "template").map_err(|e| ApiError::internal(e.to_string()))?;
    let opts = obj.get("submitOptions").cloned().unwrap_or(json!({}));
    let opts = opts
        .as_object()
        .ok_or_else(|| ApiError::bad_request("submitOptions: must be an object"))?;
    let mut wf = Workflow {
        metadata: s3m_workflow::model::Metadata {
            generate_name: Some(format!("{tname}-")),
            ..Default::default()
        },
        spec: t.spec.clone(),
        ..Default::default()
    };
    for (k, v) in opts {
        match (k.as_str(), v) {
            ("parameters", Value::Array(items)) => {
                for item in items {
                    let s = item.as_str().unwrap_or_default();
                    let Some((pk, pv)) = s.split_once('=') else {
                        return Err(ApiError::bad_request(format!("submitOptions.parameters: {:?} is not name=value", s3m_guest::cut(s))));
                    };
                    let Some(param) = wf.spec.arguments.parameters.iter_mut().find(|p| p.name == pk) else {
                        return Err(ApiError::bad_request(format!("submitOptions.parameters: the template has no argument {:?}", s3m_guest::cut(pk))));
                    };
                    param.value = Some(Value::String(pv.to_string()));
                }
            }
            ("entryPoint", Value::String(e)) => wf.spec.entrypoint = Some(e.clone()),
            ("generateName", Value::String(g)) => wf.metadata.generate_name = Some(g.clone()),
            ("name", Value::String(n)) => wf.metadata.name = Some(n.clone()),
            ("labels", Value::String(l)) => {
                for pair in l.split(',').filter(|s| !s.is_empty()) {
                    let (lk, lv) = pair.split_once('=').ok_or_else(|| ApiError::bad_request("submitOptions.labels: use a=b,c=d"))?;
                    wf.metadata.labels.insert(lk.into(), lv.into());
                }
            }
            ("serverDryRun" | "dryRun", Value::Bool(_)) => {}
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "submitOptions.{other}: not supported (parameters, entryPoint, generateName, name, labels, serverDryRun)"
                )))
            }
        }
    }
    wf.metadata.labels.insert(
        "workflows.argoproj.io/workflow-template".into(),
        tname.into(),
    );
    let wf = prepare(
        serde_json::to_value(&wf).map_err(|e| ApiError::internal(e.to_string()))?,
        p,
        ns,
    )?;
    if opts.get("serverDryRun").and_then(Value::as_bool) == Some(true) {
        return Ok(json(&wf));
    }
    store_new(wf, p, ns)
}

// ---- workflow templates -----------------------------------------------

fn prepare_template(doc: Value, ns: &str) -> Result<WorkflowTemplate, ApiError> {
    let mut t: WorkflowTemplate = parse::typed(doc, "template").map_err(bad)?;
    s3m_workflow::validate::validate_template(&t).map_err(|e| bad(format!("template.{e}")))?;
    t.metadata.namespace = Some(ns.to_string());
    t.metadata.uid.get_or_insert_with(uuid);
    t.metadata.creation_timestamp.get_or_insert_with(now);
    t.api_version = Some("argoproj.io/v1alpha1".into());
    t.kind = Some("WorkflowTemplate".into());
    Ok(t)
}

fn template_create(req: &Request, ns: &str) -> Result<Response, ApiError> {
    let (doc, _) = workflow_of(req, "template", &["namespace", "createOptions"])?;
    let t = prepare_template(doc, ns)?;
    let name = t.metadata.name.clone().unwrap_or_default();
    if keys_under(&format!("{}{ns}/", store::TEMPLATE_PREFIX))?.len() >= MAX_PER_PROJECT {
        return Err(ApiError::resource_exhausted(format!(
            "project {ns} keeps {MAX_PER_PROJECT} templates already"
        )));
    }
    if !create_only(&store::template_key(ns, &name), &t)? {
        return Err(ApiError::already_exists(format!(
            "workflowtemplates.argoproj.io {name:?} already exists"
        )));
    }
    Ok(json(&t))
}

fn template_get(ns: &str, name: &str) -> Result<Value, ApiError> {
    read::<Value>(&store::template_key(ns, name))?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workflowtemplates.argoproj.io {:?} not found",
            s3m_guest::cut(name)
        ))
    })
}

fn template_list(ns: &str) -> Result<Response, ApiError> {
    let mut items = Vec::new();
    for key in keys_under(&format!("{}{ns}/", store::TEMPLATE_PREFIX))? {
        if let Some(v) = read::<Value>(&key)? {
            items.push(v);
        }
    }
    Ok(json(
        &json!({ "metadata": {"resourceVersion": "1"}, "items": items }),
    ))
}

fn template_update(req: &Request, ns: &str, name: &str) -> Result<Response, ApiError> {
    template_get(ns, name)?;
    let (doc, _) = workflow_of(req, "template", &["namespace", "name"])?;
    let t = prepare_template(doc, ns)?;
    if t.metadata.name.as_deref() != Some(name) {
        return Err(ApiError::bad_request(
            "template.metadata.name differs from the name in the path",
        ));
    }
    write(&store::template_key(ns, name), &t)?;
    Ok(json(&t))
}

fn template_delete(ns: &str, name: &str) -> Result<Response, ApiError> {
    template_get(ns, name)?;
    kv()?
        .delete(&store::template_key(ns, name))
        .map_err(kv_err)?;
    Ok(json(&json!({})))
}
