//! What Argo checks when a workflow is submitted, for the subset S3M runs.
//! Everything is refused here rather than while the workflow runs: a
//! missing template, `depends` with `dependencies`, a reference to a task
//! that is not an ancestor, a parameter nobody supplies. Each error names
//! its field (`spec.templates[1].dag.tasks[0].depends`).

use crate::builtins::{self, BUILTIN_REF_NAMES};
use crate::expr;
use crate::model::*;
use crate::vars;
use std::collections::{BTreeMap, BTreeSet};

/// A refusal: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn bad<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        field: field.into(),
        message: message.into(),
    })
}

/// The node-selector key that names a compute resource.
pub const RESOURCE_KEY: &str = "s3m.olcf/resource";

/// The longest workflow name (it becomes part of job names and node ids).
pub const MAX_NAME: usize = 63;

/// An RFC 1123 subdomain-ish name: lowercase letters, digits, `-` and `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Task and step names: letters, digits, `-` and `_`, starting with a letter
/// or digit (they appear in node names and in `depends`).
fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// `workflow.*` names any template may use.
const WORKFLOW_VARS: &[&str] = &[
    "workflow.name",
    "workflow.namespace",
    "workflow.uid",
    "workflow.creationTimestamp",
    "workflow.serviceAccountName",
];

/// Checks a workflow's metadata and spec (after a `workflowTemplateRef`
/// was resolved). `kind` is `Workflow` or `WorkflowTemplate`.
pub fn validate(wf: &Workflow) -> Result<(), Invalid> {
    check_head(wf.api_version.as_deref(), wf.kind.as_deref(), "Workflow")?;
    check_metadata(&wf.metadata)?;
    check_spec(&wf.spec)
}

pub fn validate_template(t: &WorkflowTemplate) -> Result<(), Invalid> {
    check_head(
        t.api_version.as_deref(),
        t.kind.as_deref(),
        "WorkflowTemplate",
    )?;
    match t.metadata.name.as_deref() {
        Some(n) if valid_name(n) => {}
        Some(n) => return bad("metadata.name", format!("{n:?} is not a valid name (lowercase letters, digits, '-' and '.', at most {MAX_NAME})")),
        None => return bad("metadata.name", "a WorkflowTemplate needs a name"),
    }
    check_spec(&t.spec)
}

fn check_head(api_version: Option<&str>, kind: Option<&str>, want: &str) -> Result<(), Invalid> {
    if let Some(v) = api_version {
        if v != "argoproj.io/v1alpha1" {
            return bad(
                "apiVersion",
                format!("{v:?}: only argoproj.io/v1alpha1 is accepted"),
            );
        }
    }
    if let Some(k) = kind {
        if k != want {
            return bad("kind", format!("{k:?}: expected {want}"));
        }
    }
    Ok(())
}

fn check_metadata(m: &Metadata) -> Result<(), Invalid> {
    match (&m.name, &m.generate_name) {
        (Some(n), _) if !valid_name(n) => bad(
            "metadata.name",
            format!("{n:?} is not a valid name (lowercase letters, digits, '-' and '.', at most {MAX_NAME})"),
        ),
        (None, Some(g)) if g.is_empty() || g.len() > MAX_NAME - 5 || !valid_name(&format!("{g}x")) => bad(
            "metadata.generateName",
            format!("{g:?} is not a valid name prefix (lowercase letters, digits, '-' and '.', at most {})", MAX_NAME - 5),
        ),
        (None, None) => bad("metadata", "give metadata.name or metadata.generateName"),
        _ => Ok(()),
    }
}

/// What a template's text may refer to.
#[derive(Default, Clone)]
struct Scope {
    inputs: BTreeSet<String>,
    workflow_params: BTreeSet<String>,
    /// `tasks.X` / `steps.X` prefixes allowed, with the outputs X has.
    siblings: BTreeMap<String, Outs>,
    /// `tasks` or `steps`.
    sibling_kind: &'static str,
    item: bool,
}

#[derive(Default, Clone)]
struct Outs {
    parameters: Option<BTreeSet<String>>,
}

impl Scope {
    fn check(&self, text: &str, field: &str) -> Result<(), Invalid> {
        let refs = vars::references(text).or_else(|e| bad(field, e))?;
        for r in refs {
            let r = vars::canonical(&r).into_owned();
            self.check_ref(&r).or_else(|m| bad(field, m))?;
        }
        Ok(())
    }

    fn check_ref(&self, r: &str) -> Result<(), String> {
        if WORKFLOW_VARS.contains(&r) || r == "workflow.status" || r == "workflow.duration" {
            return Ok(());
        }
        if let Some(p) = r.strip_prefix("workflow.parameters.") {
            return if self.workflow_params.contains(p) {
                Ok(())
            } else {
                Err(format!(
                    "{{{{{r}}}}}: spec.arguments.parameters has no {p:?}"
                ))
            };
        }
        if let Some(p) = r.strip_prefix("inputs.parameters.") {
            return if self.inputs.contains(p) {
                Ok(())
            } else {
                Err(format!(
                    "{{{{{r}}}}}: the template's inputs.parameters has no {p:?}"
                ))
            };
        }
        if r == "item" || r.starts_with("item.") {
            return if self.item {
                Ok(())
            } else {
                Err(format!(
                    "{{{{{r}}}}} is only defined in a task or step with withItems or withParam"
                ))
            };
        }
        for kind in ["tasks", "steps"] {
            if let Some(rest) = r.strip_prefix(kind).and_then(|s| s.strip_prefix('.')) {
                if kind != self.sibling_kind {
                    return Err(format!("{{{{{r}}}}}: {kind}.* is not defined here"));
                }
                let (name, tail) = match rest.split_once('.') {
                    Some((n, t)) => (n, t),
                    None => (rest, ""),
                };
                let Some(outs) = self.siblings.get(name) else {
                    return Err(if kind == "tasks" {
                        format!("{{{{{r}}}}}: task {name:?} is not an ancestor of this task (add it to depends or dependencies)")
                    } else {
                        format!("{{{{{r}}}}}: step {name:?} is not in an earlier step group")
                    });
                };
                return match tail {
                    "status" | "id" | "startedAt" | "finishedAt" | "exitCode"
                    | "outputs.result" | "outputs.exitCode" => Ok(()),
                    t if t.starts_with("outputs.parameters.") => {
                        let p = &t["outputs.parameters.".len()..];
                        match &outs.parameters {
                            Some(known) if !known.contains(p) => Err(format!(
                                "{{{{{r}}}}}: {name:?} has no output parameter {p:?} (it has {})",
                                known.iter().cloned().collect::<Vec<_>>().join(", ")
                            )),
                            _ => Ok(()),
                        }
                    }
                    _ => Err(format!("{{{{{r}}}}} is not a variable S3M knows")),
                };
            }
        }
        Err(format!("{{{{{r}}}}} is not a variable S3M knows"))
    }
}

fn check_spec(spec: &Spec) -> Result<(), Invalid> {
    if spec.workflow_template_ref.is_some() {
        return bad("spec.workflowTemplateRef", "submit from a WorkflowTemplate through POST .../workflows/{namespace}/submit; a stored reference is not resolved");
    }
    let Some(entry) = spec.entrypoint.as_deref() else {
        return bad(
            "spec.entrypoint",
            "a workflow needs an entrypoint: the name of its first template",
        );
    };
    if spec.templates.is_empty() {
        return bad("spec.templates", "a workflow needs at least one template");
    }
    let mut by_name: BTreeMap<&str, (usize, &Template)> = BTreeMap::new();
    for (i, t) in spec.templates.iter().enumerate() {
        if !valid_task_name(&t.name) {
            return bad(
                format!("spec.templates[{i}].name"),
                format!(
                    "{:?} is not a valid template name (letters, digits, '-' and '_')",
                    t.name
                ),
            );
        }
        if by_name.insert(&t.name, (i, t)).is_some() {
            return bad(
                format!("spec.templates[{i}].name"),
                format!("two templates are named {:?}", t.name),
            );
        }
    }
    if !by_name.contains_key(entry) {
        return bad("spec.entrypoint", format!("no template is named {entry:?}"));
    }
    let mut workflow_params = BTreeSet::new();
    for (i, p) in spec.arguments.parameters.iter().enumerate() {
        let field = format!("spec.arguments.parameters[{i}]");
        if p.value_from.is_some() {
            return bad(
                format!("{field}.valueFrom"),
                "workflow arguments take a value",
            );
        }
        if p.value.is_none() && p.default.is_none() {
            return bad(
                format!("{field}.value"),
                format!("parameter {:?} has no value", p.name),
            );
        }
        check_enum(p, &field)?;
        if !workflow_params.insert(p.name.clone()) {
            return bad(field, format!("two arguments are named {:?}", p.name));
        }
    }
    check_selector(&spec.node_selector, "spec.nodeSelector")?;
    if let Some(s) = &spec.shutdown {
        if s != "Stop" && s != "Terminate" {
            return bad("spec.shutdown", format!("{s:?}: use Stop or Terminate"));
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            return bad(
                "spec.activeDeadlineSeconds",
                "must be a positive number of seconds",
            );
        }
    }
    let exit = exit_template(spec).map_err(|m| Invalid {
        field: "spec.hooks".into(),
        message: m,
    })?;
    if let Some(name) = exit {
        if !by_name.contains_key(name.as_str()) {
            return bad("spec.onExit", format!("no template is named {name:?}"));
        }
    }
    for (i, t) in spec.templates.iter().enumerate() {
        check_template(t, i, &by_name, &workflow_params)?;
    }
    Ok(())
}

/// The exit handler's template: `spec.onExit` or `spec.hooks.exit.template`.
pub fn exit_template(spec: &Spec) -> Result<Option<String>, String> {
    for key in spec.hooks.keys() {
        if key != "exit" {
            return Err(format!("hook {key:?}: only the exit hook is supported"));
        }
    }
    let hook = match spec.hooks.get("exit") {
        Some(h) => {
            if h.template_ref.is_some() || !h.arguments.is_empty() {
                return Err("hooks.exit: give a template name only".into());
            }
            Some(h.template.clone().ok_or("hooks.exit needs a template")?)
        }
        None => None,
    };
    match (&spec.on_exit, hook) {
        (Some(_), Some(_)) => Err("give spec.onExit or spec.hooks.exit, not both".into()),
        (Some(t), None) => Ok(Some(t.clone())),
        (None, h) => Ok(h),
    }
}

fn check_selector(sel: &BTreeMap<String, String>, field: &str) -> Result<(), Invalid> {
    for k in sel.keys() {
        if k != RESOURCE_KEY {
            return bad(
                format!("{field}.{k}"),
                format!("only {RESOURCE_KEY:?} is understood: the compute resource to run on"),
            );
        }
    }
    Ok(())
}

fn check_enum(p: &Parameter, field: &str) -> Result<(), Invalid> {
    if p.enum_values.is_empty() {
        return Ok(());
    }
    if let Some(v) = p.value.as_ref().or(p.default.as_ref()) {
        let v = text(v);
        if !p.enum_values.iter().any(|e| text(e) == v) {
            return bad(
                format!("{field}.value"),
                format!("{v:?} is not one of the parameter's enum"),
            );
        }
    }
    Ok(())
}

/// Whether a `templateRef` means the built-ins.
pub fn is_builtin_ref(r: &TemplateRef) -> bool {
    r.name
        .as_deref()
        .is_none_or(|n| BUILTIN_REF_NAMES.contains(&n))
        && !r.cluster_scope
}

fn check_template(
    t: &Template,
    i: usize,
    by_name: &BTreeMap<&str, (usize, &Template)>,
    workflow_params: &BTreeSet<String>,
) -> Result<(), Invalid> {
    let field = format!("spec.templates[{i}]");
    let kinds = [
        t.dag.is_some(),
        t.steps.is_some(),
        t.container.is_some(),
        t.script.is_some(),
        t.suspend.is_some(),
    ];
    match kinds.iter().filter(|k| **k).count() {
        1 => {}
        0 => {
            return bad(
                &field,
                format!(
                    "template {:?} needs one of dag, steps, container, script or suspend",
                    t.name
                ),
            )
        }
        _ => {
            return bad(
                &field,
                format!(
                    "template {:?} has more than one of dag, steps, container, script and suspend",
                    t.name
                ),
            )
        }
    }
    let mut inputs = BTreeSet::new();
    for (j, p) in t.inputs.parameters.iter().enumerate() {
        if p.value_from.is_some() {
            return bad(
                format!("{field}.inputs.parameters[{j}].valueFrom"),
                "inputs take value or default",
            );
        }
        check_enum(p, &format!("{field}.inputs.parameters[{j}]"))?;
        if !inputs.insert(p.name.clone()) {
            return bad(
                format!("{field}.inputs.parameters[{j}]"),
                format!("two inputs are named {:?}", p.name),
            );
        }
    }
    let scope = Scope {
        inputs,
        workflow_params: workflow_params.clone(),
        ..Default::default()
    };
    check_selector(&t.node_selector, &format!("{field}.nodeSelector"))?;
    if let Some(r) = &t.retry_strategy {
        let f = format!("{field}.retryStrategy");
        if let Some(l) = &r.limit {
            let n: i64 = text(l).parse().map_err(|_| Invalid {
                field: format!("{f}.limit"),
                message: format!("{l} is not a number"),
            })?;
            if !(0..=100).contains(&n) {
                return bad(format!("{f}.limit"), "must be between 0 and 100");
            }
        }
        if let Some(p) = &r.retry_policy {
            if !["Always", "OnFailure", "OnError", "OnTransientError"].contains(&p.as_str()) {
                return bad(
                    format!("{f}.retryPolicy"),
                    format!("{p:?}: use Always, OnFailure, OnError or OnTransientError"),
                );
            }
        }
        if let Some(b) = &r.backoff {
            for (name, v) in [("duration", &b.duration), ("maxDuration", &b.max_duration)] {
                if let Some(v) = v {
                    parse_duration(v).map_err(|m| Invalid {
                        field: format!("{f}.backoff.{name}"),
                        message: m,
                    })?;
                }
            }
            if let Some(v) = &b.factor {
                text(v)
                    .parse::<f64>()
                    .ok()
                    .filter(|x| *x >= 1.0)
                    .ok_or_else(|| Invalid {
                        field: format!("{f}.backoff.factor"),
                        message: format!("{v} is not a number >= 1"),
                    })?;
            }
        }
    }
    if let Some(d) = &t.active_deadline_seconds {
        text(d)
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Invalid {
                field: format!("{field}.activeDeadlineSeconds"),
                message: format!("{d} is not a positive number of seconds"),
            })?;
    }
    if let Some(d) = &t.timeout {
        parse_duration(&serde_json::Value::String(d.clone())).map_err(|m| Invalid {
            field: format!("{field}.timeout"),
            message: m,
        })?;
    }
    if let Some(s) = &t.suspend {
        if let Some(d) = &s.duration {
            parse_duration(d).map_err(|m| Invalid {
                field: format!("{field}.suspend.duration"),
                message: m,
            })?;
        }
    }
    let leaf = t.container.is_some() || t.script.is_some();
    for (j, p) in t.outputs.parameters.iter().enumerate() {
        let f = format!("{field}.outputs.parameters[{j}]");
        match (&p.value, &p.value_from) {
            (Some(v), None) => scope.check(&text(v), &format!("{f}.value"))?,
            (None, Some(vf)) => {
                let set = [
                    vf.path.is_some(),
                    vf.expression.is_some(),
                    vf.parameter.is_some(),
                ];
                if set.iter().filter(|x| **x).count() != 1 {
                    return bad(
                        format!("{f}.valueFrom"),
                        "give exactly one of path, expression or parameter",
                    );
                }
                if vf.path.is_some() && !leaf {
                    return bad(
                        format!("{f}.valueFrom.path"),
                        "only container and script templates write files",
                    );
                }
                if (vf.expression.is_some() || vf.parameter.is_some()) && leaf {
                    return bad(
                        format!("{f}.valueFrom"),
                        "a container or script template's outputs come from valueFrom.path",
                    );
                }
            }
            _ => return bad(&f, format!("output {:?} needs value or valueFrom", p.name)),
        }
    }
    if let Some(c) = &t.container {
        if c.command.is_empty() && c.args.is_empty() {
            return bad(
                format!("{field}.container.command"),
                "give command (and args): there is no image entrypoint to fall back on",
            );
        }
        for (j, s) in c.command.iter().chain(&c.args).enumerate() {
            scope.check(s, &format!("{field}.container.command/args[{j}]"))?;
        }
        for (j, e) in c.env.iter().enumerate() {
            check_env_name(&e.name, &format!("{field}.container.env[{j}].name"))?;
            scope.check(&e.value, &format!("{field}.container.env[{j}].value"))?;
        }
        check_workdir(
            c.working_dir.as_deref(),
            &format!("{field}.container.workingDir"),
        )?;
    }
    if let Some(s) = &t.script {
        scope.check(&s.source, &format!("{field}.script.source"))?;
        for (j, a) in s.command.iter().chain(&s.args).enumerate() {
            scope.check(a, &format!("{field}.script.command/args[{j}]"))?;
        }
        for (j, e) in s.env.iter().enumerate() {
            check_env_name(&e.name, &format!("{field}.script.env[{j}].name"))?;
            scope.check(&e.value, &format!("{field}.script.env[{j}].value"))?;
        }
        check_workdir(
            s.working_dir.as_deref(),
            &format!("{field}.script.workingDir"),
        )?;
    }
    if let Some(dag) = &t.dag {
        check_dag(dag, &field, &scope, by_name)?;
    }
    if let Some(steps) = &t.steps {
        check_steps(steps, &field, &scope, by_name)?;
    }
    Ok(())
}

fn check_env_name(name: &str, field: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        bad(
            field,
            format!("{name:?} is not an environment variable name"),
        )
    }
}

fn check_workdir(dir: Option<&str>, field: &str) -> Result<(), Invalid> {
    match dir {
        Some(d) if !d.starts_with('/') || d.split('/').any(|c| c == "..") => bad(
            field,
            format!("{d:?} must be an absolute path without '..'"),
        ),
        _ => Ok(()),
    }
}

/// What a called template takes and gives, for argument and output checks.
struct Callee {
    required: BTreeSet<String>,
    known: BTreeSet<String>,
    outputs: Option<BTreeSet<String>>,
}

fn callee(
    template: Option<&str>,
    template_ref: Option<&TemplateRef>,
    field: &str,
    by_name: &BTreeMap<&str, (usize, &Template)>,
) -> Result<Callee, Invalid> {
    match (template, template_ref) {
        (Some(_), Some(_)) => bad(field, "give template or templateRef, not both"),
        (None, None) => bad(field, "needs a template or a templateRef"),
        (Some(name), None) => {
            let Some((_, t)) = by_name.get(name) else {
                return bad(
                    format!("{field}.template"),
                    format!("no template is named {name:?}"),
                );
            };
            let known = t.inputs.parameters.iter().map(|p| p.name.clone()).collect();
            let required = t
                .inputs
                .parameters
                .iter()
                .filter(|p| p.value.is_none() && p.default.is_none())
                .map(|p| p.name.clone())
                .collect();
            let mut outputs: BTreeSet<String> = t
                .outputs
                .parameters
                .iter()
                .map(|p| p.name.clone())
                .collect();
            if t.container.is_some() || t.script.is_some() {
                outputs.insert("exitCode".into());
            }
            Ok(Callee {
                required,
                known,
                outputs: Some(outputs),
            })
        }
        (None, Some(r)) => {
            if !is_builtin_ref(r) {
                return bad(
                    format!("{field}.templateRef.name"),
                    format!(
                        "{:?}: only the built-in templates are reachable by templateRef (leave name out); GET .../workflows/templates lists them",
                        r.name.as_deref().unwrap_or_default()
                    ),
                );
            }
            let Some(b) = builtins::find(&r.template) else {
                let names: Vec<_> = builtins::all().iter().map(|b| b.name).collect();
                return bad(
                    format!("{field}.templateRef.template"),
                    format!(
                        "{:?} is not a built-in template; they are {}",
                        r.template,
                        names.join(", ")
                    ),
                );
            };
            Ok(Callee {
                required: b
                    .inputs
                    .iter()
                    .filter(|p| p.default.is_none())
                    .map(|p| p.name.to_string())
                    .collect(),
                known: b.inputs.iter().map(|p| p.name.to_string()).collect(),
                outputs: Some(b.outputs.iter().map(|p| p.name.to_string()).collect()),
            })
        }
    }
}

fn check_arguments(
    args: &Arguments,
    c: &Callee,
    field: &str,
    scope: &Scope,
) -> Result<(), Invalid> {
    let mut given = BTreeSet::new();
    for (k, p) in args.parameters.iter().enumerate() {
        let f = format!("{field}.arguments.parameters[{k}]");
        if !c.known.contains(&p.name) {
            return bad(
                &f,
                format!(
                    "the template takes no parameter {:?} (it takes {})",
                    p.name,
                    c.known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if p.value_from.is_some() {
            return bad(format!("{f}.valueFrom"), "arguments take a value");
        }
        let Some(v) = &p.value else {
            return bad(
                format!("{f}.value"),
                format!("argument {:?} has no value", p.name),
            );
        };
        scope.check(&text(v), &format!("{f}.value"))?;
        given.insert(p.name.clone());
    }
    if let Some(missing) = c.required.iter().find(|r| !given.contains(*r)) {
        return bad(
            format!("{field}.arguments"),
            format!("inputs.parameters.{missing} was not supplied"),
        );
    }
    Ok(())
}

/// Every task's dependencies, `dependencies` or the tasks `depends` names.
fn task_deps(task: &DagTask, f: &str, names: &BTreeSet<&str>) -> Result<Vec<String>, Invalid> {
    let deps = match (&task.dependencies, &task.depends) {
        (Some(_), Some(_)) => return bad(f, "use depends or dependencies, not both"),
        (Some(d), None) => d.clone(),
        (None, Some(expr)) => expr::depends_tasks(expr).map_err(|m| Invalid {
            field: format!("{f}.depends"),
            message: m,
        })?,
        (None, None) => vec![],
    };
    for d in &deps {
        if !names.contains(d.as_str()) {
            return bad(
                f,
                format!("depends on {d:?}, which is not a task of this DAG"),
            );
        }
        if d == &task.name {
            return bad(f, format!("task {d:?} depends on itself"));
        }
    }
    Ok(deps)
}

fn check_dag(
    dag: &Dag,
    field: &str,
    scope: &Scope,
    by_name: &BTreeMap<&str, (usize, &Template)>,
) -> Result<(), Invalid> {
    if dag.tasks.is_empty() {
        return bad(
            format!("{field}.dag.tasks"),
            "a DAG needs at least one task",
        );
    }
    let mut names = BTreeSet::new();
    for (j, task) in dag.tasks.iter().enumerate() {
        if !valid_task_name(&task.name) {
            return bad(
                format!("{field}.dag.tasks[{j}].name"),
                format!(
                    "{:?} is not a valid task name (letters, digits, '-' and '_')",
                    task.name
                ),
            );
        }
        if !names.insert(task.name.as_str()) {
            return bad(
                format!("{field}.dag.tasks[{j}].name"),
                format!("two tasks are named {:?}", task.name),
            );
        }
    }
    let mut deps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (j, task) in dag.tasks.iter().enumerate() {
        deps.insert(
            &task.name,
            task_deps(task, &format!("{field}.dag.tasks[{j}]"), &names)?,
        );
    }
    // Cycles, and each task's ancestors.
    let mut ancestors: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    fn walk<'a>(
        t: &'a str,
        deps: &BTreeMap<&'a str, Vec<String>>,
        ancestors: &mut BTreeMap<&'a str, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
    ) -> Result<(), String> {
        if ancestors.contains_key(t) {
            return Ok(());
        }
        if stack.contains(&t) {
            return Err(format!(
                "the dependencies form a cycle: {} -> {t}",
                stack.join(" -> ")
            ));
        }
        stack.push(t);
        let mut all = BTreeSet::new();
        for d in &deps[t] {
            let (key, _) = deps.get_key_value(d.as_str()).expect("checked");
            walk(key, deps, ancestors, stack)?;
            all.insert(d.clone());
            all.extend(ancestors[key].iter().cloned());
        }
        stack.pop();
        ancestors.insert(t, all);
        Ok(())
    }
    for task in &dag.tasks {
        walk(&task.name, &deps, &mut ancestors, &mut Vec::new()).map_err(|m| Invalid {
            field: format!("{field}.dag.tasks"),
            message: m,
        })?;
    }
    if let Some(target) = &dag.target {
        for t in target.split_whitespace() {
            if !names.contains(t) {
                return bad(
                    format!("{field}.dag.target"),
                    format!("{t:?} is not a task of this DAG"),
                );
            }
        }
    }
    let mut callees = BTreeMap::new();
    for (j, task) in dag.tasks.iter().enumerate() {
        let f = format!("{field}.dag.tasks[{j}]");
        callees.insert(
            task.name.as_str(),
            callee(
                task.template.as_deref(),
                task.template_ref.as_ref(),
                &f,
                by_name,
            )?,
        );
    }
    for (j, task) in dag.tasks.iter().enumerate() {
        let f = format!("{field}.dag.tasks[{j}]");
        let mut s = scope.clone();
        s.sibling_kind = "tasks";
        s.item = task.with_items.is_some() || task.with_param.is_some();
        for a in &ancestors[task.name.as_str()] {
            s.siblings.insert(
                a.clone(),
                Outs {
                    parameters: callees[a.as_str()].outputs.clone(),
                },
            );
        }
        if task.with_items.is_some() && task.with_param.is_some() {
            return bad(&f, "use withItems or withParam, not both");
        }
        if let Some(w) = &task.with_param {
            let mut s2 = s.clone();
            s2.item = false;
            s2.check(w, &format!("{f}.withParam"))?;
        }
        if let Some(w) = &task.when {
            s.check(w, &format!("{f}.when"))?;
        }
        check_arguments(&task.arguments, &callees[task.name.as_str()], &f, &s)?;
    }
    // A DAG's outputs come from its tasks.
    let mut s = scope.clone();
    s.sibling_kind = "tasks";
    for task in &dag.tasks {
        s.siblings.insert(
            task.name.clone(),
            Outs {
                parameters: callees[task.name.as_str()].outputs.clone(),
            },
        );
    }
    check_outputs_from(&by_name, field, &s)
}

fn check_outputs_from(
    by_name: &&BTreeMap<&str, (usize, &Template)>,
    field: &str,
    s: &Scope,
) -> Result<(), Invalid> {
    let idx: usize = field
        .trim_start_matches("spec.templates[")
        .trim_end_matches(']')
        .parse()
        .unwrap_or(usize::MAX);
    let Some((_, t)) = by_name.values().find(|(i, _)| *i == idx) else {
        return Ok(());
    };
    for (j, p) in t.outputs.parameters.iter().enumerate() {
        let f = format!("{field}.outputs.parameters[{j}].valueFrom");
        if let Some(vf) = &p.value_from {
            if let Some(param) = &vf.parameter {
                s.check(param, &format!("{f}.parameter"))?;
            }
            if let Some(e) = &vf.expression {
                for word in e
                    .split(|c: char| c.is_whitespace() || "()!&|=<>".contains(c))
                    .filter(|w| w.starts_with("tasks.") || w.starts_with("steps."))
                {
                    s.check(&format!("{{{{{word}}}}}"), &format!("{f}.expression"))?;
                }
            }
        }
    }
    Ok(())
}

fn check_steps(
    groups: &[Vec<Step>],
    field: &str,
    scope: &Scope,
    by_name: &BTreeMap<&str, (usize, &Template)>,
) -> Result<(), Invalid> {
    if groups.is_empty() {
        return bad(
            format!("{field}.steps"),
            "a steps template needs at least one group",
        );
    }
    let mut s = scope.clone();
    s.sibling_kind = "steps";
    let mut seen = BTreeSet::new();
    for (g, group) in groups.iter().enumerate() {
        if group.is_empty() {
            return bad(format!("{field}.steps[{g}]"), "an empty step group");
        }
        let mut added = Vec::new();
        for (k, step) in group.iter().enumerate() {
            let f = format!("{field}.steps[{g}][{k}]");
            if !valid_task_name(&step.name) {
                return bad(
                    format!("{f}.name"),
                    format!(
                        "{:?} is not a valid step name (letters, digits, '-' and '_')",
                        step.name
                    ),
                );
            }
            if !seen.insert(step.name.clone()) {
                return bad(
                    format!("{f}.name"),
                    format!("two steps are named {:?}", step.name),
                );
            }
            let c = callee(
                step.template.as_deref(),
                step.template_ref.as_ref(),
                &f,
                by_name,
            )?;
            let mut s2 = s.clone();
            s2.item = step.with_items.is_some() || step.with_param.is_some();
            if step.with_items.is_some() && step.with_param.is_some() {
                return bad(&f, "use withItems or withParam, not both");
            }
            if let Some(w) = &step.with_param {
                s.check(w, &format!("{f}.withParam"))?;
            }
            if let Some(w) = &step.when {
                s2.check(w, &format!("{f}.when"))?;
            }
            check_arguments(&step.arguments, &c, &f, &s2)?;
            added.push((step.name.clone(), c.outputs));
        }
        for (n, o) in added {
            s.siblings.insert(n, Outs { parameters: o });
        }
    }
    check_outputs_from(&by_name, field, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn wf(yaml: &str) -> Result<(), String> {
        let v = parse::value(yaml)?;
        let w: Workflow = parse::typed(v, "workflow")?;
        validate(&w).map_err(|e| e.to_string())
    }

    const DIAMOND: &str = r#"
metadata: {generateName: dag-diamond-}
spec:
  entrypoint: diamond
  templates:
  - name: echo
    inputs: {parameters: [{name: message}]}
    container: {image: alpine:3.7, command: [echo, "{{inputs.parameters.message}}"]}
  - name: diamond
    dag:
      tasks:
      - {name: A, template: echo, arguments: {parameters: [{name: message, value: A}]}}
      - {name: B, depends: A, template: echo, arguments: {parameters: [{name: message, value: "{{tasks.A.outputs.result}}"}]}}
      - {name: C, dependencies: [A], template: echo, arguments: {parameters: [{name: message, value: C}]}}
      - {name: D, depends: "B && C.Succeeded", template: echo, arguments: {parameters: [{name: message, value: D}]}}
"#;

    #[test]
    fn accepts_the_diamond() {
        wf(DIAMOND).unwrap();
    }

    #[test]
    fn refusals_name_the_field() {
        let e = wf(&DIAMOND.replace("depends: A,", "depends: A, dependencies: [A],")).unwrap_err();
        assert!(e.contains("dag.tasks[1]") && e.contains("not both"), "{e}");
        let e = wf(&DIAMOND.replace("value: C}", "value: \"{{tasks.B.outputs.result}}\"}"))
            .unwrap_err();
        assert!(e.contains("not an ancestor"), "{e}");
        let e = wf(&DIAMOND.replace("image: alpine:3.7,", "image: alpine:3.7, volumeMounts: [],"))
            .unwrap_err();
        assert!(
            e.contains("volumeMounts") && e.contains("spec.templates[0].container"),
            "{e}"
        );
        let e = wf(&DIAMOND.replace(
            "template: echo, arguments: {parameters: [{name: message, value: D}]}",
            "template: echo",
        ))
        .unwrap_err();
        assert!(
            e.contains("inputs.parameters.message was not supplied"),
            "{e}"
        );
        let e = wf(&DIAMOND.replace("depends: \"B && C.Succeeded\"", "depends: \"B && Z\""))
            .unwrap_err();
        assert!(e.contains("\"Z\""), "{e}");
        let e = wf(&DIAMOND
            .replace("dependencies: [A]", "dependencies: [D]")
            .replace("depends: \"B && C.Succeeded\"", "depends: \"B && C\""))
        .unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        let e = wf(&DIAMOND.replace("entrypoint: diamond", "entrypoint: nope")).unwrap_err();
        assert!(e.contains("spec.entrypoint"), "{e}");
    }

    #[test]
    fn builtins_and_the_papers_alias() {
        wf(r##"
metadata: {generateName: listing2-}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: deploy
        templateRef: {template: deploy-streaming}
        arguments: {parameters: [{name: name, value: mycluster}]}
      - name: submit-job
        depends: deploy
        templateRef: {template: submit-job}
        arguments: {parameters: [{name: script, value: "#!/bin/sh\necho {{tasks.deploy.outputs.parameters.host}}"}]}
      - name: check
        depends: submit-job
        templateRef: {template: check-job-status}
        arguments: {parameters: [{name: JOB_ID, value: "{{tasks.submit-job.outputs.params.JOB_ID}}"}]}
"##)
        .unwrap();
        let e = wf(r#"
metadata: {name: x}
spec:
  entrypoint: main
  templates:
  - name: main
    dag: {tasks: [{name: a, templateRef: {name: other, template: t}}]}
"#)
        .unwrap_err();
        assert!(e.contains("templateRef.name"), "{e}");
    }
}
