//! One pass over a workflow, as Argo's controller operates one: from the
//! entrypoint down, it creates the nodes whose turn has come, decides
//! Skipped (a false `when`) and Omitted (an unmet `depends`), and derives
//! every DAG, steps, retry and task-group phase from its children. It does
//! no I/O: a new container, script or built-in task becomes a [`Leaf`] in
//! the engine state, which `leaves.rs` launches and polls. Passes repeat
//! until nothing changes, so a task's end starts its dependents at once.

use super::state::{Action, EngineState, Leaf};
use s3m_workflow::builtins;
use s3m_workflow::expr;
use s3m_workflow::model::{
    phase, text, Arguments, ContinueOn, NodeIo, NodeParameter, NodeStatus, Parameter, Template,
    TemplateRef, Workflow, WorkflowStatus,
};
use s3m_workflow::validate::{is_builtin_ref, RESOURCE_KEY};
use s3m_workflow::vars;
use std::collections::{BTreeMap, BTreeSet};

/// How deep templates may call templates (recursion is allowed, as in Argo).
const MAX_DEPTH: usize = 30;

/// The start of a node's message when its arguments used the paper's
/// `outputs.params` spelling.
pub const ALIAS_NOTE: &str = "outputs.params read as outputs.parameters";

/// The text shown in status for a value derived from a secret output.
pub const SECRET: &str = "(secret)";

/// What a pass may read about the world.
pub struct Context<'a> {
    pub wf: &'a Workflow,
    pub name: &'a str,
    pub project: &'a str,
    pub uid: &'a str,
    pub created: &'a str,
    pub now_ms: i64,
    /// `Stop` or `Terminate` (or a deadline, which acts as Stop).
    pub shutdown: Option<String>,
    pub suspended: bool,
    /// The compute resource of tasks that name none.
    pub default_resource: &'a str,
}

pub struct Walk<'a> {
    pub cx: &'a Context<'a>,
    pub status: &'a mut WorkflowStatus,
    pub engine: &'a mut EngineState,
    /// The earliest time something must be looked at again (ms).
    pub wake_at: Option<i64>,
    pub changed: bool,
    exit_handler: bool,
    /// The next exec_template call is a retry node's attempt.
    attempt: bool,
    /// The arguments of the node being made used `outputs.params`.
    alias: bool,
}

/// Values visible to `{{...}}` in one place, and which of them are secret.
#[derive(Clone, Default)]
struct Scope {
    vars: BTreeMap<String, String>,
    secret: BTreeSet<String>,
}

impl Scope {
    fn get(&self, name: &str) -> Option<String> {
        self.vars.get(vars::canonical(name).as_ref()).cloned()
    }

    /// Substitutes `text`; the bool says whether a secret went into it.
    fn resolve(&self, text: &str) -> Result<(String, bool), String> {
        let refs = vars::references(text)?;
        let secret = refs
            .iter()
            .any(|r| self.secret.contains(vars::canonical(r).as_ref()));
        Ok((vars::substitute(text, |n| self.get(n))?, secret))
    }
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_time(s: &Option<String>) -> Option<i64> {
    s.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

/// What a task or step calls.
enum Callee<'t> {
    Local(&'t Template),
    Builtin(String),
}

impl<'a> Walk<'a> {
    pub fn new(
        cx: &'a Context<'a>,
        status: &'a mut WorkflowStatus,
        engine: &'a mut EngineState,
    ) -> Self {
        Self {
            cx,
            status,
            engine,
            wake_at: None,
            changed: false,
            exit_handler: false,
            attempt: false,
            alias: false,
        }
    }

    fn wake(&mut self, at: i64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn id(&self, node_name: &str) -> String {
        s3m_workflow::model::node_id(self.cx.name, node_name)
    }

    fn node(&self, node_name: &str) -> Option<&NodeStatus> {
        self.status.nodes.get(&self.id(node_name))
    }

    fn phase(&self, node_name: &str) -> Option<String> {
        self.node(node_name).map(|n| n.phase.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        node_name: &str,
        display: &str,
        node_type: &str,
        template: &str,
        template_ref: Option<TemplateRef>,
        boundary: &str,
        phase_now: &str,
        message: &str,
    ) -> String {
        let id = self.id(node_name);
        let fulfilled = phase::fulfilled(phase_now);
        let message = if std::mem::take(&mut self.alias) && message.is_empty() {
            ALIAS_NOTE
        } else {
            message
        };
        let now = rfc3339(self.cx.now_ms);
        self.status.nodes.insert(
            id.clone(),
            NodeStatus {
                id: id.clone(),
                name: node_name.to_string(),
                display_name: display.to_string(),
                node_type: node_type.to_string(),
                template_name: template.to_string(),
                template_ref,
                phase: phase_now.to_string(),
                boundary_id: boundary.to_string(),
                message: message.to_string(),
                started_at: Some(now.clone()),
                finished_at: fulfilled.then_some(now),
                ..Default::default()
            },
        );
        self.changed = true;
        id
    }

    fn add_child(&mut self, parent_name: &str, child_name: &str) {
        let parent = self.id(parent_name);
        let child = self.id(child_name);
        if let Some(p) = self.status.nodes.get_mut(&parent) {
            if !p.children.contains(&child) {
                p.children.push(child);
                self.changed = true;
            }
        }
    }

    pub fn mark(&mut self, node_name: &str, to: &str, message: Option<&str>) {
        let id = self.id(node_name);
        let now = rfc3339(self.cx.now_ms);
        if let Some(n) = self.status.nodes.get_mut(&id) {
            if n.phase != to {
                n.phase = to.to_string();
                if phase::fulfilled(to) {
                    n.finished_at = Some(now);
                }
                self.changed = true;
            }
            if let Some(m) = message {
                if n.message != m {
                    n.message = m.to_string();
                    self.changed = true;
                }
            }
        }
    }

    fn globals(&self) -> Scope {
        let mut s = Scope::default();
        let cx = self.cx;
        for (k, v) in [
            ("workflow.name", cx.name),
            ("workflow.namespace", cx.project),
            ("workflow.uid", cx.uid),
            ("workflow.creationTimestamp", cx.created),
            (
                "workflow.serviceAccountName",
                cx.wf
                    .spec
                    .service_account_name
                    .as_deref()
                    .unwrap_or("default"),
            ),
        ] {
            s.vars.insert(k.into(), v.into());
        }
        for p in &cx.wf.spec.arguments.parameters {
            if let Some(v) = p.value.as_ref().or(p.default.as_ref()) {
                s.vars
                    .insert(format!("workflow.parameters.{}", p.name), text(v));
            }
        }
        if let Some(started) = parse_time(&self.status.started_at) {
            s.vars.insert(
                "workflow.duration".into(),
                format!("{:.3}", (cx.now_ms - started) as f64 / 1000.0),
            );
        }
        s
    }

    fn template(&self, name: &str) -> Option<&'a Template> {
        self.cx.wf.spec.templates.iter().find(|t| t.name == name)
    }

    /// The whole pass: the entrypoint, then the exit handler. Returns the
    /// workflow phase once it is decided.
    pub fn run(&mut self) -> Option<(String, String)> {
        let root = self.cx.name.to_string();
        let entry = self.cx.wf.spec.entrypoint.clone().unwrap_or_default();
        let globals = self.globals();
        let Some(t) = self.template(&entry) else {
            return Some((
                phase::ERROR.into(),
                format!("no template is named {entry:?}"),
            ));
        };
        let main = self.exec_template(
            &root,
            &root,
            Callee::Local(t),
            &Arguments::default(),
            &globals,
            "",
            0,
        );
        if !phase::fulfilled(&main) {
            return None;
        }
        let mut message = String::new();
        if phase::failed_or_error(&main) {
            message = self.failure_message(&root);
        }
        let exit = s3m_workflow::validate::exit_template(&self.cx.wf.spec)
            .ok()
            .flatten();
        let mut exit_phase = None;
        if let Some(exit) = exit {
            if self.cx.shutdown.as_deref() != Some("Terminate") {
                let Some(t) = self.template(&exit) else {
                    return Some((
                        phase::ERROR.into(),
                        format!("no template is named {exit:?}"),
                    ));
                };
                let mut g = globals.clone();
                let status = match main.as_str() {
                    phase::SUCCEEDED | phase::SKIPPED | phase::OMITTED => "Succeeded",
                    p => p,
                };
                g.vars.insert("workflow.status".into(), status.into());
                g.vars.insert("workflow.failures".into(), "[]".into());
                self.exit_handler = true;
                let name = format!("{root}.onExit");
                let p = self.exec_template(
                    &name,
                    "onExit",
                    Callee::Local(t),
                    &Arguments::default(),
                    &g,
                    "",
                    0,
                );
                self.exit_handler = false;
                if !phase::fulfilled(&p) {
                    return None;
                }
                exit_phase = Some(p);
            }
        }
        if let Some(s) = &self.cx.shutdown {
            let m = if s == "Deadline" {
                "Max duration limit exceeded".to_string()
            } else {
                format!("Stopped with strategy '{s}'")
            };
            return Some((phase::FAILED.into(), m));
        }
        if phase::failed_or_error(&main) {
            return Some((main, message));
        }
        if let Some(p) = exit_phase {
            if phase::failed_or_error(&p) {
                let m = self.failure_message(&format!("{root}.onExit"));
                return Some((phase::FAILED.into(), format!("exit handler failed: {m}")));
            }
        }
        Some((phase::SUCCEEDED.into(), String::new()))
    }

    /// The first failed leaf under a node, as Argo's "child ... failed".
    fn failure_message(&self, node_name: &str) -> String {
        let mut queue = vec![self.id(node_name)];
        let mut seen = BTreeSet::new();
        while let Some(id) = queue.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(n) = self.status.nodes.get(&id) else {
                continue;
            };
            let container = matches!(
                n.node_type.as_str(),
                "DAG" | "Steps" | "StepGroup" | "TaskGroup" | "Retry"
            );
            if phase::failed_or_error(&n.phase) && !container {
                let what = if n.message.is_empty() {
                    n.phase.to_lowercase()
                } else {
                    n.message.clone()
                };
                return format!(
                    "task {:?} {}: {}",
                    n.display_name,
                    n.phase.to_lowercase(),
                    what
                );
            }
            queue.extend(n.children.iter().rev().cloned());
        }
        "a child failed".into()
    }

    fn shutting_down(&self) -> bool {
        match self.cx.shutdown.as_deref() {
            None => false,
            Some("Terminate") => true,
            Some(_) => !self.exit_handler,
        }
    }

    /// Runs (or looks at) the node `node_name` of template `callee` with
    /// `args`. Returns the node's phase.
    #[allow(clippy::too_many_arguments)]
    fn exec_template(
        &mut self,
        node_name: &str,
        display: &str,
        callee: Callee<'a>,
        args: &Arguments,
        outer: &Scope,
        boundary: &str,
        depth: usize,
    ) -> String {
        // An attempt of a retry node runs the template without its retry
        // strategy.
        let attempt = std::mem::take(&mut self.attempt);
        if let Some(p) = self.phase(node_name) {
            if phase::fulfilled(&p) {
                return p;
            }
        } else {
            if self.shutting_down() {
                let m = match self.cx.shutdown.as_deref() {
                    Some("Deadline") => {
                        "node skipped: the workflow's activeDeadlineSeconds passed".to_string()
                    }
                    Some(s) => format!("node skipped due to shutdown: {s}"),
                    None => String::new(),
                };
                self.create(
                    node_name,
                    display,
                    "Skipped",
                    "",
                    None,
                    boundary,
                    phase::SKIPPED,
                    &m,
                );
                return phase::SKIPPED.into();
            }
            if self.cx.suspended {
                return phase::PENDING.into();
            }
            if depth > MAX_DEPTH {
                self.errored(
                    node_name,
                    display,
                    boundary,
                    &format!("templates call each other more than {MAX_DEPTH} deep"),
                );
                return phase::ERROR.into();
            }
        }
        let (tmpl_name, tref, retry) = match &callee {
            Callee::Local(t) => (t.name.clone(), None, t.retry_strategy.clone()),
            Callee::Builtin(b) => (
                String::new(),
                Some(TemplateRef {
                    name: None,
                    template: b.clone(),
                    cluster_scope: false,
                }),
                None,
            ),
        };
        // Inputs: arguments over defaults.
        let (inputs, shown, secret_inputs) = match self.inputs(&callee, args) {
            Ok(i) => i,
            Err(m) => {
                if self.node(node_name).is_none() {
                    self.create(
                        node_name,
                        display,
                        "Skipped",
                        &tmpl_name,
                        tref,
                        boundary,
                        phase::ERROR,
                        &m,
                    );
                }
                return phase::ERROR.into();
            }
        };
        if let Some(retry) = retry.filter(|_| !attempt) {
            return self.exec_retry(
                node_name, display, callee, &retry, args, outer, boundary, depth, &tmpl_name,
            );
        }
        let mut scope = outer.clone();
        scope.vars.retain(|k, _| k.starts_with("workflow."));
        scope.secret.retain(|k| k.starts_with("workflow."));
        for (k, v) in &inputs {
            let key = format!("inputs.parameters.{k}");
            if secret_inputs.contains(k) {
                scope.secret.insert(key.clone());
            }
            scope.vars.insert(key, v.clone());
        }
        match callee {
            Callee::Builtin(b) => self.exec_leaf(
                node_name,
                display,
                &tmpl_name,
                tref,
                boundary,
                Action::Builtin {
                    name: b.clone(),
                    params: inputs,
                },
                shown,
                None,
            ),
            Callee::Local(t) => {
                if t.dag.is_some() {
                    self.exec_dag(node_name, display, t, &scope, shown, boundary, depth)
                } else if t.steps.is_some() {
                    self.exec_steps(node_name, display, t, &scope, shown, boundary, depth)
                } else if let Some(s) = &t.suspend {
                    let until = s
                        .duration
                        .as_ref()
                        .and_then(|d| s3m_workflow::model::parse_duration(d).ok())
                        .map(|d| self.cx.now_ms + d.as_millis() as i64);
                    self.exec_leaf(
                        node_name,
                        display,
                        &tmpl_name,
                        None,
                        boundary,
                        Action::Suspend { until },
                        shown,
                        None,
                    )
                } else {
                    match self.job_action(t, &scope) {
                        Ok(action) => self.exec_leaf(
                            node_name,
                            display,
                            &tmpl_name,
                            None,
                            boundary,
                            action,
                            shown,
                            Some(t),
                        ),
                        Err(m) => {
                            if self.node(node_name).is_none() {
                                self.create(
                                    node_name,
                                    display,
                                    "Pod",
                                    &tmpl_name,
                                    None,
                                    boundary,
                                    phase::ERROR,
                                    &m,
                                );
                            }
                            phase::ERROR.into()
                        }
                    }
                }
            }
        }
    }

    /// The template's inputs from `args`: (values, as shown in status,
    /// names whose value came from a secret).
    #[allow(clippy::type_complexity)]
    fn inputs(
        &self,
        callee: &Callee<'a>,
        args: &Arguments,
    ) -> Result<
        (
            BTreeMap<String, String>,
            Vec<NodeParameter>,
            BTreeSet<String>,
        ),
        String,
    > {
        let given: BTreeMap<&str, &Parameter> = args
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        let mut values = BTreeMap::new();
        let mut shown = Vec::new();
        let mut secret = BTreeSet::new();
        let declared: Vec<(String, Option<String>)> = match callee {
            Callee::Local(t) => t
                .inputs
                .parameters
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.value.as_ref().or(p.default.as_ref()).map(text),
                    )
                })
                .collect(),
            Callee::Builtin(b) => builtins::find(b)
                .map(|b| {
                    b.inputs
                        .iter()
                        .map(|p| (p.name.to_string(), p.default.map(str::to_string)))
                        .collect()
                })
                .unwrap_or_default(),
        };
        for (name, default) in declared {
            let (value, is_secret) = match given.get(name.as_str()) {
                // Arguments were resolved by the caller: `value` is final.
                Some(p) => (
                    p.value.as_ref().map(text).unwrap_or_default(),
                    p.description.as_deref() == Some(SECRET),
                ),
                None => match default {
                    Some(d) => (d, false),
                    None => return Err(format!("inputs.parameters.{name} was not supplied")),
                },
            };
            shown.push(NodeParameter {
                name: name.clone(),
                value: if is_secret {
                    SECRET.into()
                } else {
                    value.clone()
                },
            });
            if is_secret {
                secret.insert(name.clone());
            }
            values.insert(name, value);
        }
        Ok((values, shown, secret))
    }

    /// Resolves a task's arguments in `scope`; a value made from a secret
    /// is flagged (in `description`, which arguments otherwise never carry
    /// past this point).
    fn resolve_args(&mut self, args: &Arguments, scope: &Scope) -> Result<Arguments, String> {
        let mut out = Arguments::default();
        for p in &args.parameters {
            let raw = p.value.as_ref().map(text).unwrap_or_default();
            if raw.contains(".outputs.params.") {
                self.alias = true;
            }
            let (v, secret) = scope.resolve(&raw)?;
            out.parameters.push(Parameter {
                name: p.name.clone(),
                value: Some(serde_json::Value::String(v)),
                description: secret.then(|| SECRET.to_string()),
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// A container or script template as the batch job it becomes.
    fn job_action(&self, t: &Template, scope: &Scope) -> Result<Action, String> {
        let sub = |s: &str| scope.resolve(s).map(|(v, _)| v);
        let (image, command, args, env, workdir, source) = if let Some(c) = &t.container {
            (&c.image, &c.command, &c.args, &c.env, &c.working_dir, None)
        } else if let Some(s) = &t.script {
            (
                &s.image,
                &s.command,
                &s.args,
                &s.env,
                &s.working_dir,
                Some(sub(&s.source)?),
            )
        } else {
            return Err("not a container or script template".into());
        };
        let mut argv = Vec::new();
        for a in command.iter().chain(args.iter()) {
            argv.push(sub(a)?);
        }
        if source.is_some() && argv.is_empty() {
            argv.push("sh".into());
        }
        let mut environment = Vec::new();
        for e in env {
            environment.push(format!("{}={}", e.name, sub(&e.value)?));
        }
        let resource = t
            .node_selector
            .get(RESOURCE_KEY)
            .or(self.cx.wf.spec.node_selector.get(RESOURCE_KEY))
            .cloned()
            .unwrap_or_else(|| self.cx.default_resource.to_string());
        let deadline_s = t
            .active_deadline_seconds
            .as_ref()
            .and_then(|d| text(d).parse::<u64>().ok())
            .or_else(|| {
                t.timeout
                    .as_ref()
                    .and_then(|d| {
                        s3m_workflow::model::parse_duration(&serde_json::Value::String(d.clone()))
                            .ok()
                    })
                    .map(|d| d.as_secs().max(1))
            });
        let outputs = t
            .outputs
            .parameters
            .iter()
            .filter_map(|p| {
                let vf = p.value_from.as_ref()?;
                Some((
                    p.name.clone(),
                    vf.path.clone()?,
                    vf.default.as_ref().map(text),
                ))
            })
            .collect();
        Ok(Action::Job {
            resource,
            image: image.clone(),
            argv,
            source,
            environment,
            working_dir: workdir.clone(),
            outputs,
            deadline_s,
            submit_only: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_leaf(
        &mut self,
        node_name: &str,
        display: &str,
        tmpl_name: &str,
        tref: Option<TemplateRef>,
        boundary: &str,
        action: Action,
        shown: Vec<NodeParameter>,
        _t: Option<&Template>,
    ) -> String {
        if let Some(n) = self.node(node_name) {
            let p = n.phase.clone();
            if let Some(leaf) = self.engine.leaves.get(&n.id) {
                if let Action::Suspend { until: Some(until) } = leaf.action {
                    if p == phase::RUNNING {
                        if self.cx.now_ms >= until {
                            self.mark(node_name, phase::SUCCEEDED, None);
                            return phase::SUCCEEDED.into();
                        }
                        self.wake(until);
                    }
                }
            }
            return p;
        }
        let (node_type, action) = match action {
            Action::Builtin { name, params } if name == "submit-job" => {
                // submit-job is a job that the node does not wait for.
                let resource = params
                    .get("resource")
                    .filter(|r| !r.is_empty())
                    .cloned()
                    .unwrap_or_else(|| self.cx.default_resource.to_string());
                (
                    "Pod",
                    Action::Job {
                        resource,
                        image: String::new(),
                        argv: vec![],
                        source: Some(params.get("script").cloned().unwrap_or_default()),
                        environment: params
                            .get("environment")
                            .map(|e| {
                                e.lines()
                                    .map(str::trim)
                                    .filter(|l| !l.is_empty())
                                    .map(String::from)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        working_dir: params
                            .get("current-working-directory")
                            .filter(|d| !d.is_empty())
                            .cloned(),
                        outputs: vec![],
                        deadline_s: params
                            .get("time-limit")
                            .and_then(|m| m.parse::<u64>().ok())
                            .map(|m| m * 60),
                        submit_only: true,
                    },
                )
            }
            Action::Builtin { name, params } => (
                if name == "http" { "HTTP" } else { "Plugin" },
                Action::Builtin { name, params },
            ),
            a @ Action::Suspend { .. } => ("Suspend", a),
            a @ Action::Job { .. } => ("Pod", a),
        };
        let start_phase = match &action {
            Action::Suspend { until } => {
                if let Some(u) = until {
                    self.wake(*u);
                }
                phase::RUNNING
            }
            _ => phase::PENDING,
        };
        let id = self.create(
            node_name,
            display,
            node_type,
            tmpl_name,
            tref,
            boundary,
            start_phase,
            "",
        );
        if !shown.is_empty() {
            if let Some(n) = self.status.nodes.get_mut(&id) {
                n.inputs = Some(NodeIo {
                    parameters: shown,
                    ..Default::default()
                });
            }
        }
        self.engine.leaves.insert(
            id,
            Leaf {
                action,
                ..Default::default()
            },
        );
        start_phase.into()
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_retry(
        &mut self,
        node_name: &str,
        display: &str,
        callee: Callee<'a>,
        retry: &s3m_workflow::model::RetryStrategy,
        args: &Arguments,
        outer: &Scope,
        boundary: &str,
        depth: usize,
        tmpl_name: &str,
    ) -> String {
        if self.node(node_name).is_none() {
            self.create(
                node_name,
                display,
                "Retry",
                tmpl_name,
                None,
                boundary,
                phase::RUNNING,
                "",
            );
        }
        let limit: u32 = retry
            .limit
            .as_ref()
            .and_then(|l| text(l).parse().ok())
            .unwrap_or(0);
        let policy = retry.retry_policy.as_deref().unwrap_or("OnFailure");
        let children = self
            .node(node_name)
            .map(|n| n.children.clone())
            .unwrap_or_default();
        let attempts = children.len() as u32;
        let last = children
            .last()
            .and_then(|id| self.status.nodes.get(id))
            .cloned();
        let next = match &last {
            None => Some(0),
            Some(l) if !phase::fulfilled(&l.phase) => None,
            Some(l) if l.phase == phase::SUCCEEDED => {
                let outputs = l.outputs.clone();
                let id = self.id(node_name);
                if let Some(n) = self.status.nodes.get_mut(&id) {
                    n.outputs = outputs;
                }
                self.mark(node_name, phase::SUCCEEDED, None);
                return phase::SUCCEEDED.into();
            }
            Some(l) => {
                let retryable = match policy {
                    "Always" => true,
                    "OnError" => l.phase == phase::ERROR,
                    "OnTransientError" => false,
                    _ => l.phase == phase::FAILED,
                };
                if retryable && attempts <= limit && self.cx.shutdown.is_none() {
                    let backoff = retry.backoff.as_ref();
                    let base = backoff
                        .and_then(|b| b.duration.as_ref())
                        .and_then(|d| s3m_workflow::model::parse_duration(d).ok())
                        .map(|d| d.as_millis() as f64)
                        .unwrap_or(0.0);
                    let factor = backoff
                        .and_then(|b| b.factor.as_ref())
                        .and_then(|f| text(f).parse::<f64>().ok())
                        .unwrap_or(1.0);
                    let mut wait = base * factor.powi(attempts as i32 - 1);
                    if let Some(max) = backoff
                        .and_then(|b| b.max_duration.as_ref())
                        .and_then(|d| s3m_workflow::model::parse_duration(d).ok())
                    {
                        wait = wait.min(max.as_millis() as f64);
                    }
                    let ended = parse_time(&l.finished_at).unwrap_or(self.cx.now_ms);
                    let at = ended + wait as i64;
                    if self.cx.now_ms < at {
                        self.wake(at);
                        None
                    } else {
                        Some(attempts)
                    }
                } else {
                    let (p, m) = (
                        l.phase.clone(),
                        format!("No more retries left: {}", l.message),
                    );
                    self.mark(node_name, &p, Some(&m));
                    return p;
                }
            }
        };
        if let Some(n) = next {
            let child = format!("{node_name}({n})");
            let child_display = format!("{display}({n})");
            self.attempt = true;
            self.exec_template(
                &child,
                &child_display,
                callee,
                args,
                outer,
                boundary,
                depth + 1,
            );
            self.add_child(node_name, &child);
        }
        phase::RUNNING.into()
    }

    /// The scope a DAG's tasks see: the DAG's inputs, the workflow, and
    /// every task node made so far (validation already refused references
    /// to non-ancestors).
    fn task_scope(&self, base: &Scope, dag_name: &str, prefix: &str, names: &[String]) -> Scope {
        let mut s = base.clone();
        for t in names {
            let node_name = format!("{dag_name}.{t}");
            let Some(n) = self.node(&node_name).cloned() else {
                continue;
            };
            let key = format!("{prefix}.{t}");
            s.vars.insert(format!("{key}.status"), n.phase.clone());
            s.vars.insert(format!("{key}.id"), n.id.clone());
            if let Some(at) = &n.started_at {
                s.vars.insert(format!("{key}.startedAt"), at.clone());
            }
            if let Some(at) = &n.finished_at {
                s.vars.insert(format!("{key}.finishedAt"), at.clone());
            }
            if n.node_type == "TaskGroup" {
                // Aggregated outputs: JSON lists over the items, in order.
                let mut results = Vec::new();
                let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for c in &n.children {
                    if let Some(child) = self.status.nodes.get(c) {
                        if let Some(o) = &child.outputs {
                            if let Some(r) = &o.result {
                                results.push(r.clone());
                            }
                            for p in &o.parameters {
                                params
                                    .entry(p.name.clone())
                                    .or_default()
                                    .push(p.value.clone());
                            }
                        }
                    }
                }
                s.vars.insert(
                    format!("{key}.outputs.result"),
                    serde_json::to_string(&results).unwrap_or_default(),
                );
                for (p, v) in params {
                    s.vars.insert(
                        format!("{key}.outputs.parameters.{p}"),
                        serde_json::to_string(&v).unwrap_or_default(),
                    );
                }
                continue;
            }
            if let Some(o) = &n.outputs {
                if let Some(r) = &o.result {
                    s.vars.insert(format!("{key}.outputs.result"), r.clone());
                }
                if let Some(c) = &o.exit_code {
                    s.vars.insert(format!("{key}.outputs.exitCode"), c.clone());
                    s.vars.insert(format!("{key}.exitCode"), c.clone());
                }
                for p in &o.parameters {
                    s.vars.insert(
                        format!("{key}.outputs.parameters.{}", p.name),
                        p.value.clone(),
                    );
                }
            }
            // Secrets (the password of deploy-streaming): only for tasks
            // that ask, never in status.
            let leaf_id = self.leaf_of(&n.id);
            if let Some(secrets) = self.engine.secrets.get(&leaf_id) {
                for (p, v) in secrets {
                    let k = format!("{key}.outputs.parameters.{p}");
                    s.vars.insert(k.clone(), v.clone());
                    s.secret.insert(k);
                }
            }
        }
        s
    }

    /// A retry node's successful attempt (where its secrets are), else the
    /// node itself.
    fn leaf_of(&self, id: &str) -> String {
        match self.status.nodes.get(id) {
            Some(n) if n.node_type == "Retry" => {
                n.children.last().cloned().unwrap_or_else(|| id.to_string())
            }
            _ => id.to_string(),
        }
    }

    fn set_outputs(&mut self, node_name: &str, t: &Template, scope: &Scope) -> Result<(), String> {
        let mut params = Vec::new();
        for p in &t.outputs.parameters {
            let value = if let Some(v) = &p.value {
                scope.resolve(&text(v))?.0
            } else if let Some(vf) = &p.value_from {
                let got = if let Some(param) = &vf.parameter {
                    scope.resolve(param).map(|(v, _)| v)
                } else if let Some(e) = &vf.expression {
                    let e = e.trim();
                    match scope.get(e) {
                        Some(v) => Ok(v),
                        None => expr::eval(e, |w| {
                            Ok(scope
                                .get(w)
                                .map(expr::Val::Str)
                                .unwrap_or_else(|| expr::Val::Str(w.to_string())))
                        })
                        .map(|v| match v {
                            expr::Val::Bool(b) => b.to_string(),
                            expr::Val::Num(n) => n.to_string(),
                            expr::Val::Str(s) => s,
                        }),
                    }
                } else {
                    Err("no valueFrom source".into())
                };
                match (got, &vf.default) {
                    (Ok(v), _) => v,
                    (Err(_), Some(d)) => text(d),
                    (Err(e), None) => return Err(format!("output {:?}: {e}", p.name)),
                }
            } else {
                continue;
            };
            params.push(NodeParameter {
                name: p.name.clone(),
                value,
            });
        }
        if !params.is_empty() {
            let id = self.id(node_name);
            if let Some(n) = self.status.nodes.get_mut(&id) {
                n.outputs = Some(NodeIo {
                    parameters: params,
                    ..Default::default()
                });
                self.changed = true;
            }
        }
        Ok(())
    }

    fn finish_container(
        &mut self,
        node_name: &str,
        t: &Template,
        scope: &Scope,
        p: &str,
    ) -> String {
        if p == phase::SUCCEEDED {
            if let Err(m) = self.set_outputs(node_name, t, scope) {
                self.mark(node_name, phase::ERROR, Some(&m));
                return phase::ERROR.into();
            }
        }
        self.mark(node_name, p, None);
        p.to_string()
    }

    /// A node that could not run (a bad `when`, an unresolved argument, a
    /// missing template): Argo's Skipped type in phase Error.
    fn errored(&mut self, node_name: &str, display: &str, boundary: &str, message: &str) {
        self.create(
            node_name,
            display,
            "Skipped",
            "",
            None,
            boundary,
            phase::ERROR,
            message,
        );
    }

    /// A DAG or steps node, made Running the first time; its id.
    fn container_node(
        &mut self,
        node_name: &str,
        display: &str,
        node_type: &str,
        t: &Template,
        boundary: &str,
        shown: Vec<NodeParameter>,
    ) -> String {
        if self.node(node_name).is_none() {
            self.create(
                node_name,
                display,
                node_type,
                &t.name,
                None,
                boundary,
                phase::RUNNING,
                "",
            );
            self.set_inputs(node_name, shown);
        }
        self.id(node_name)
    }

    fn set_inputs(&mut self, node_name: &str, shown: Vec<NodeParameter>) {
        if shown.is_empty() {
            return;
        }
        let id = self.id(node_name);
        if let Some(n) = self.status.nodes.get_mut(&id) {
            if n.inputs.is_none() {
                n.inputs = Some(NodeIo {
                    parameters: shown,
                    ..Default::default()
                });
            }
        }
    }

    fn callee_of(
        &self,
        template: &Option<String>,
        tref: &Option<TemplateRef>,
    ) -> Option<Callee<'a>> {
        match (template, tref) {
            (Some(name), _) => self.template(name).map(Callee::Local),
            (None, Some(r)) if is_builtin_ref(r) => Some(Callee::Builtin(r.template.clone())),
            _ => None,
        }
    }

    /// Items of `withItems` / `withParam`, each with its label (`0:foo`).
    fn items(
        &self,
        with_items: &Option<Vec<serde_json::Value>>,
        with_param: &Option<String>,
        scope: &Scope,
    ) -> Result<Option<Vec<(String, serde_json::Value)>>, String> {
        let list = match (with_items, with_param) {
            (Some(items), _) => items.clone(),
            (None, Some(p)) => {
                let (text_, _) = scope.resolve(p)?;
                serde_json::from_str::<Vec<serde_json::Value>>(&text_).map_err(|_| {
                    format!(
                        "withParam value {} is not a JSON list",
                        crate::text::cut(&text_)
                    )
                })?
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(
            list.into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let label = match &v {
                        serde_json::Value::Object(m) => m
                            .iter()
                            .map(|(k, v)| format!("{k}:{}", text(v)))
                            .collect::<Vec<_>>()
                            .join(","),
                        other => text(other),
                    };
                    (format!("{i}:{label}"), v)
                })
                .collect(),
        ))
    }

    fn item_scope(scope: &Scope, item: &serde_json::Value) -> Scope {
        let mut s = scope.clone();
        s.vars.insert("item".into(), text(item));
        if let serde_json::Value::Object(m) = item {
            for (k, v) in m {
                s.vars.insert(format!("item.{k}"), text(v));
            }
        }
        s
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_dag(
        &mut self,
        node_name: &str,
        display: &str,
        t: &'a Template,
        scope: &Scope,
        shown: Vec<NodeParameter>,
        boundary: &str,
        depth: usize,
    ) -> String {
        let dag = t.dag.as_ref().expect("a dag template");
        let my_id = self.container_node(node_name, display, "DAG", t, boundary, shown);
        let names: Vec<String> = dag.tasks.iter().map(|t| t.name.clone()).collect();
        let deps: BTreeMap<String, Vec<String>> = dag
            .tasks
            .iter()
            .map(|task| {
                let d = match (&task.dependencies, &task.depends) {
                    (Some(d), _) => d.clone(),
                    (None, Some(e)) => expr::depends_tasks(e).unwrap_or_default(),
                    _ => vec![],
                };
                (task.name.clone(), d)
            })
            .collect();
        let targets: Vec<String> = match &dag.target {
            Some(t) => t.split_whitespace().map(String::from).collect(),
            None => names
                .iter()
                .filter(|n| !deps.values().any(|d| d.contains(n)))
                .cloned()
                .collect(),
        };
        let continue_on: BTreeMap<String, ContinueOn> = dag
            .tasks
            .iter()
            .map(|t| (t.name.clone(), t.continue_on.unwrap_or_default()))
            .collect();
        let mut visited = BTreeSet::new();
        for target in &targets {
            self.exec_task(
                node_name,
                &my_id,
                dag,
                target,
                &deps,
                &continue_on,
                scope,
                &mut visited,
                depth,
            );
        }
        // Argo's assessDAGPhase: a branch's phase flows down to omitted and
        // skipped tasks; targets decide.
        let mut branch: BTreeMap<String, String> = BTreeMap::new();
        let mut running = false;
        for name in topological(&names, &deps) {
            let Some(n) = self.node(&format!("{node_name}.{name}")) else {
                continue;
            };
            if !phase::fulfilled(&n.phase) {
                running = true;
                continue;
            }
            let b = if phase::completed(&n.phase) {
                n.phase.clone()
            } else {
                deps[&name]
                    .iter()
                    .filter_map(|d| branch.get(d))
                    .find(|p| phase::failed_or_error(p))
                    .cloned()
                    .unwrap_or_else(|| phase::SUCCEEDED.into())
            };
            branch.insert(name, b);
        }
        if running {
            return phase::RUNNING.into();
        }
        let fail_fast = dag.fail_fast.unwrap_or(true);
        let mut result = phase::SUCCEEDED.to_string();
        for target in &targets {
            match branch.get(target) {
                None => {
                    result = phase::RUNNING.into();
                    if !fail_fast {
                        break;
                    }
                }
                Some(p) if phase::failed_or_error(p) => {
                    let c = continue_on[target];
                    if (p == phase::FAILED && c.failed) || (p == phase::ERROR && c.error) {
                        continue;
                    }
                    result = p.clone();
                    if fail_fast {
                        break;
                    }
                }
                _ => {}
            }
        }
        if result == phase::RUNNING {
            return result;
        }
        let full = self.task_scope(scope, node_name, "tasks", &names);
        self.finish_container(node_name, t, &full, &result)
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_task(
        &mut self,
        dag_name: &str,
        dag_id: &str,
        dag: &'a s3m_workflow::model::Dag,
        task_name: &str,
        deps: &BTreeMap<String, Vec<String>>,
        continue_on: &BTreeMap<String, ContinueOn>,
        scope: &Scope,
        visited: &mut BTreeSet<String>,
        depth: usize,
    ) {
        if !visited.insert(task_name.to_string()) {
            return;
        }
        let node_name = format!("{dag_name}.{task_name}");
        let task = dag
            .tasks
            .iter()
            .find(|t| t.name == task_name)
            .expect("validated");
        let my_deps = &deps[task_name];
        let connect = |w: &mut Self, child: &str| {
            if my_deps.is_empty() {
                w.add_child(dag_name, child);
            } else {
                for d in my_deps {
                    w.add_child(&format!("{dag_name}.{d}"), child);
                }
            }
        };
        if let Some(n) = self.node(&node_name) {
            if phase::fulfilled(&n.phase) {
                // Linked again: a retry rebuilds the nodes above kept ones.
                if n.node_type != "TaskGroup" && !node_name.ends_with(')') {
                    connect(self, &node_name);
                }
                return;
            }
        }
        if !my_deps.is_empty() && self.node(&node_name).is_none() {
            for d in my_deps {
                self.exec_task(
                    dag_name,
                    dag_id,
                    dag,
                    d,
                    deps,
                    continue_on,
                    scope,
                    visited,
                    depth,
                );
            }
            // Wait until every dependency is fulfilled.
            let mut phases: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for d in my_deps {
                let Some(n) = self.node(&format!("{dag_name}.{d}")) else {
                    return;
                };
                if !phase::fulfilled(&n.phase) {
                    return;
                }
                let mut v = vec![n.phase.clone()];
                if n.node_type == "TaskGroup" {
                    v.extend(
                        n.children
                            .iter()
                            .filter_map(|c| self.status.nodes.get(c))
                            .map(|c| c.phase.clone()),
                    );
                }
                phases.insert(d.clone(), v);
            }
            let bare = |t: &str, p: &str| {
                let c = continue_on.get(t).copied().unwrap_or_default();
                p == phase::SUCCEEDED
                    || p == phase::SKIPPED
                    || (c.failed && p == phase::FAILED)
                    || (c.error && p == phase::ERROR)
            };
            let go = match &task.depends {
                Some(e) => expr::depends(e, |t| phases.get(t).cloned(), bare),
                None => Ok(my_deps.iter().all(|d| bare(d, &phases[d][0]))),
            };
            match go {
                Ok(true) => {}
                Ok(false) => {
                    self.create(
                        &node_name,
                        task_name,
                        "Skipped",
                        task.template.as_deref().unwrap_or(""),
                        task.template_ref.clone(),
                        dag_id,
                        phase::OMITTED,
                        "omitted: depends condition not met",
                    );
                    connect(self, &node_name);
                    return;
                }
                Err(m) => {
                    self.errored(&node_name, task_name, dag_id, &m);
                    connect(self, &node_name);
                    return;
                }
            }
        }
        let names: Vec<String> = dag.tasks.iter().map(|t| t.name.clone()).collect();
        let tscope = self.task_scope(scope, dag_name, "tasks", &names);
        let Some(callee_probe) = self.callee_of(&task.template, &task.template_ref) else {
            if self.node(&node_name).is_none() {
                self.errored(
                    &node_name,
                    task_name,
                    dag_id,
                    "the task's template does not exist",
                );
                connect(self, &node_name);
            }
            return;
        };
        drop(callee_probe);
        let items = match self.items(&task.with_items, &task.with_param, &tscope) {
            Ok(i) => i,
            Err(m) => {
                if self.node(&node_name).is_none() {
                    self.errored(&node_name, task_name, dag_id, &m);
                    connect(self, &node_name);
                }
                return;
            }
        };
        let expanded: Vec<(String, String, Scope)> = match &items {
            None => vec![(node_name.clone(), task_name.to_string(), tscope.clone())],
            Some(list) => {
                if self.node(&node_name).is_none() {
                    self.create(
                        &node_name,
                        task_name,
                        "TaskGroup",
                        task.template.as_deref().unwrap_or(""),
                        task.template_ref.clone(),
                        dag_id,
                        phase::RUNNING,
                        "",
                    );
                    connect(self, &node_name);
                }
                list.iter()
                    .map(|(label, item)| {
                        (
                            format!("{node_name}({label})"),
                            format!("{task_name}({label})"),
                            Self::item_scope(&tscope, item),
                        )
                    })
                    .collect()
            }
        };
        for (child_name, child_display, s) in &expanded {
            let fresh = self.node(child_name).is_none();
            if fresh {
                if let Some(w) = &task.when {
                    let decided = s.resolve(w).and_then(|(w, _)| expr::when(&w));
                    match decided {
                        Ok(true) => {}
                        Ok(false) => {
                            self.create(
                                child_name,
                                child_display,
                                "Skipped",
                                task.template.as_deref().unwrap_or(""),
                                task.template_ref.clone(),
                                dag_id,
                                phase::SKIPPED,
                                &format!("when '{w}' evaluated false"),
                            );
                            if items.is_some() {
                                self.add_child(&node_name, child_name)
                            } else {
                                connect(self, child_name)
                            }
                            continue;
                        }
                        Err(m) => {
                            self.errored(child_name, child_display, dag_id, &format!("when: {m}"));
                            if items.is_some() {
                                self.add_child(&node_name, child_name)
                            } else {
                                connect(self, child_name)
                            }
                            continue;
                        }
                    }
                }
            }
            let args = match self.resolve_args(&task.arguments, s) {
                Ok(a) => a,
                Err(m) => {
                    if fresh {
                        self.errored(child_name, child_display, dag_id, &m);
                        if items.is_some() {
                            self.add_child(&node_name, child_name)
                        } else {
                            connect(self, child_name)
                        }
                    }
                    continue;
                }
            };
            let callee = self
                .callee_of(&task.template, &task.template_ref)
                .expect("checked above");
            self.exec_template(
                child_name,
                child_display,
                callee,
                &args,
                s,
                dag_id,
                depth + 1,
            );
            self.alias = false;
            // Linked every pass: a retry rebuilds the nodes above kept ones.
            if items.is_some() {
                self.add_child(&node_name, child_name)
            } else {
                connect(self, child_name)
            }
        }
        if items.is_some() {
            let mut group = phase::SUCCEEDED;
            for (child_name, _, _) in &expanded {
                match self.node(child_name) {
                    Some(n) if phase::fulfilled(&n.phase) => {
                        if phase::failed_or_error(&n.phase) {
                            group = if n.phase == phase::ERROR {
                                phase::ERROR
                            } else {
                                phase::FAILED
                            };
                        }
                    }
                    _ => return,
                }
            }
            self.mark(&node_name, group, None);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_steps(
        &mut self,
        node_name: &str,
        display: &str,
        t: &'a Template,
        scope: &Scope,
        shown: Vec<NodeParameter>,
        boundary: &str,
        depth: usize,
    ) -> String {
        let groups = t.steps.as_ref().expect("a steps template");
        let my_id = self.container_node(node_name, display, "Steps", t, boundary, shown);
        let mut sscope = scope.clone();
        let mut previous: Vec<String> = vec![node_name.to_string()];
        for (g, group) in groups.iter().enumerate() {
            let gname = format!("{node_name}[{g}]");
            if self.node(&gname).is_none() {
                self.create(
                    &gname,
                    &format!("[{g}]"),
                    "StepGroup",
                    &t.name,
                    None,
                    &my_id,
                    phase::RUNNING,
                    "",
                );
                for p in &previous {
                    self.add_child(p, &gname);
                }
            }
            let mut members: Vec<(String, ContinueOn)> = Vec::new();
            for step in group {
                let sname = format!("{gname}.{}", step.name);
                let items = match self.items(&step.with_items, &step.with_param, &sscope) {
                    Ok(i) => i,
                    Err(m) => {
                        if self.node(&sname).is_none() {
                            self.errored(&sname, &step.name, &my_id, &m);
                            self.add_child(&gname, &sname);
                        }
                        members.push((sname, step.continue_on.unwrap_or_default()));
                        continue;
                    }
                };
                let expanded: Vec<(String, String, Scope)> = match &items {
                    None => vec![(sname.clone(), step.name.clone(), sscope.clone())],
                    Some(list) => list
                        .iter()
                        .map(|(label, item)| {
                            (
                                format!("{sname}({label})"),
                                format!("{}({label})", step.name),
                                Self::item_scope(&sscope, item),
                            )
                        })
                        .collect(),
                };
                for (child, child_display, s) in expanded {
                    members.push((child.clone(), step.continue_on.unwrap_or_default()));
                    let fresh = self.node(&child).is_none();
                    if fresh {
                        if let Some(w) = &step.when {
                            match s.resolve(w).and_then(|(w, _)| expr::when(&w)) {
                                Ok(true) => {}
                                Ok(false) => {
                                    self.create(
                                        &child,
                                        &child_display,
                                        "Skipped",
                                        step.template.as_deref().unwrap_or(""),
                                        step.template_ref.clone(),
                                        &my_id,
                                        phase::SKIPPED,
                                        &format!("when '{w}' evaluated false"),
                                    );
                                    self.add_child(&gname, &child);
                                    continue;
                                }
                                Err(m) => {
                                    self.errored(
                                        &child,
                                        &child_display,
                                        &my_id,
                                        &format!("when: {m}"),
                                    );
                                    self.add_child(&gname, &child);
                                    continue;
                                }
                            }
                        }
                    }
                    let args = match self.resolve_args(&step.arguments, &s) {
                        Ok(a) => a,
                        Err(m) => {
                            if fresh {
                                self.errored(&child, &child_display, &my_id, &m);
                                self.add_child(&gname, &child);
                            }
                            continue;
                        }
                    };
                    let Some(callee) = self.callee_of(&step.template, &step.template_ref) else {
                        continue;
                    };
                    self.exec_template(
                        &child,
                        &child_display,
                        callee,
                        &args,
                        &s,
                        &my_id,
                        depth + 1,
                    );
                    self.alias = false;
                    self.add_child(&gname, &child);
                }
            }
            // The group's phase.
            let mut done = true;
            let mut failed: Option<String> = None;
            for (m, c) in &members {
                match self.node(m) {
                    Some(n) if phase::fulfilled(&n.phase) => {
                        if phase::failed_or_error(&n.phase) {
                            let ok = (n.phase == phase::FAILED && c.failed)
                                || (n.phase == phase::ERROR && c.error);
                            if !ok {
                                failed = Some(n.phase.clone());
                            }
                        }
                    }
                    _ => done = false,
                }
            }
            if !done {
                return phase::RUNNING.into();
            }
            if let Some(p) = failed {
                self.mark(&gname, &p, None);
                let m = self.failure_message(&gname);
                self.mark(node_name, &p, Some(&m));
                return p;
            }
            self.mark(&gname, phase::SUCCEEDED, None);
            // Later groups see this group's steps.
            let step_names: Vec<String> = group.iter().map(|s| s.name.clone()).collect();
            let with = self.task_scope(&sscope, &gname, "steps", &step_names);
            sscope = with;
            previous = members.iter().map(|(m, _)| m.clone()).collect();
        }
        self.finish_container(node_name, t, &sscope, phase::SUCCEEDED)
    }
}

/// Task names in an order where every task follows its dependencies.
fn topological(names: &[String], deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut placed = BTreeSet::new();
    while out.len() < names.len() {
        let before = out.len();
        for n in names {
            if !placed.contains(n) && deps[n].iter().all(|d| placed.contains(d)) {
                placed.insert(n.clone());
                out.push(n.clone());
            }
        }
        if out.len() == before {
            break; // a cycle; validation refuses those
        }
    }
    out
}
