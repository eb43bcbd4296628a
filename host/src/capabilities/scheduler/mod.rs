//! The `s3m:facility/scheduler` capability: its WIT binding and the trait
//! that scheduler providers (host/src/providers/scheduler/) implement.
//!
//! Each compute resource of the facility configuration names its scheduler
//! in `[resources.compute]`:
//!
//! ```toml
//! [resources.compute]
//! scheduler = "slurm"                     # or "local" (the default)
//! slurmrestd = "http://127.0.0.1:6820"    # slurm: where slurmrestd listens
//! jwt_key = "/etc/slurm/jwt_hs256.key"    # slurm: the cluster's AuthAltParameters jwt_key
//! ```
//!
//! The keys of each backend are documented in its provider, which reads
//! them; the wiring (host/src/wiring.rs) builds the providers. This room
//! knows nothing of Slurm or processes: it routes a call to the resource's
//! provider.

use crate::metrics::Call;
use crate::state::HostState;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

wasmtime::component::bindgen!({
    world: "s3m:facility/scheduler-host",
    path: "../wit",
    imports: { default: async | trappable },
    // The capability gateway carries these values as JSON (docs/gateway.md).
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use s3m::facility::scheduler::{
    Diagnostics, JobDescription, JobInfo, JobList, JobState, NodeInfo, PartitionInfo,
    PartitionState, PingInfo, ReservationInfo, SchedulerAbout, SchedulerError, Submitted,
};
pub use s3m::facility::types::Caller;

pub type SchedulerResult<T> = Result<T, SchedulerError>;

/// A scheduler backend for one compute resource.
#[async_trait::async_trait]
pub trait SchedulerProvider: Send + Sync {
    async fn about(&self) -> SchedulerResult<SchedulerAbout>;
    async fn submit(
        &self,
        caller: &Caller,
        job: JobDescription,
        script: String,
    ) -> SchedulerResult<Submitted>;
    /// A job of the caller's project; any other job is `NotFound`.
    async fn get(&self, caller: &Caller, job_id: u32) -> SchedulerResult<JobInfo>;
    /// The caller's project's jobs only.
    async fn list_jobs(&self, caller: &Caller) -> SchedulerResult<JobList>;
    async fn cancel(&self, caller: &Caller, job_id: u32, signal: u32) -> SchedulerResult<()>;
    async fn ping(&self) -> SchedulerResult<Vec<PingInfo>>;
    async fn diag(&self) -> SchedulerResult<Diagnostics>;
    async fn nodes(&self) -> SchedulerResult<Vec<NodeInfo>>;
    async fn partitions(&self) -> SchedulerResult<Vec<PartitionInfo>>;
    async fn reservations(&self) -> SchedulerResult<Vec<ReservationInfo>>;

    /// Host-side only (not in WIT): the ids of jobs as they end, where the
    /// backend can tell at once; `None` means poll.
    fn ended(&self) -> Option<tokio::sync::broadcast::Receiver<u32>> {
        None
    }

    /// Host-side only: at most `limit` bytes of a file of a caller's job,
    /// read as the job's user: `path` empty means its standard output; a
    /// relative path is taken from its working directory.
    async fn read_output(
        &self,
        caller: &Caller,
        job_id: u32,
        path: &str,
        limit: u64,
    ) -> SchedulerResult<Vec<u8>> {
        let _ = (caller, job_id, path, limit);
        Err(SchedulerError::Unavailable(
            "this scheduler cannot read job files".into(),
        ))
    }

    /// How many jobs it knows by state, when it can tell without asking
    /// anyone (for `s3m_jobs`); None: it cannot.
    fn job_counts(&self) -> Option<Vec<(String, u64)>> {
        None
    }
}

/// The scheduler of a resource whose provider could not start: every call
/// answers Unavailable, and the host's log says why (not the caller).
pub struct NotStarted {
    resource: String,
}

impl NotStarted {
    pub fn new(resource: &str) -> Self {
        Self {
            resource: resource.to_string(),
        }
    }

    fn err<T>(&self) -> SchedulerResult<T> {
        Err(SchedulerError::Unavailable(format!(
            "the scheduler of resource `{}` is not running; the facility's operators have the reason in the host's log",
            self.resource
        )))
    }
}

#[async_trait::async_trait]
impl SchedulerProvider for NotStarted {
    async fn about(&self) -> SchedulerResult<SchedulerAbout> {
        self.err()
    }
    async fn submit(&self, _: &Caller, _: JobDescription, _: String) -> SchedulerResult<Submitted> {
        self.err()
    }
    async fn get(&self, _: &Caller, _: u32) -> SchedulerResult<JobInfo> {
        self.err()
    }
    async fn list_jobs(&self, _: &Caller) -> SchedulerResult<JobList> {
        self.err()
    }
    async fn cancel(&self, _: &Caller, _: u32, _: u32) -> SchedulerResult<()> {
        self.err()
    }
    async fn ping(&self) -> SchedulerResult<Vec<PingInfo>> {
        self.err()
    }
    async fn diag(&self) -> SchedulerResult<Diagnostics> {
        self.err()
    }
    async fn nodes(&self) -> SchedulerResult<Vec<NodeInfo>> {
        self.err()
    }
    async fn partitions(&self) -> SchedulerResult<Vec<PartitionInfo>> {
        self.err()
    }
    async fn reservations(&self) -> SchedulerResult<Vec<ReservationInfo>> {
        self.err()
    }
}

/// Every compute resource's scheduler, chosen by the facility configuration.
#[derive(Default)]
pub struct Schedulers {
    by_resource: HashMap<String, Arc<dyn SchedulerProvider>>,
}

impl Schedulers {
    /// Routes each named compute resource to its provider.
    pub fn new(by_resource: HashMap<String, Arc<dyn SchedulerProvider>>) -> Self {
        Self { by_resource }
    }

    /// Every compute resource and its provider.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn SchedulerProvider>)> {
        self.by_resource.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The provider of a compute resource.
    pub fn get(&self, resource: &str) -> SchedulerResult<Arc<dyn SchedulerProvider>> {
        self.by_resource.get(resource).cloned().ok_or_else(|| {
            SchedulerError::NotFound(format!(
                "no compute resource named `{resource}` in this facility"
            ))
        })
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    // The world's: `types` (no functions, but components import it) and `scheduler`.
    SchedulerHost::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

type R<T> = wasmtime::Result<SchedulerResult<T>>;

/// The permissions a capability call needs of the request's token.
const READ: &[&str] = &["compute-ace", "compute-ace-readonly"];
const WRITE: &[&str] = &["compute-ace"];

impl HostState {
    fn scheduler(&self, resource: &str) -> SchedulerResult<Arc<dyn SchedulerProvider>> {
        self.services.schedulers.get(resource)
    }

    /// The resource's scheduler, once the host has allowed the call: a
    /// component granted `scheduler-read` only reads; a call for a project
    /// needs this request's token to be that project's.
    async fn allowed(
        &mut self,
        resource: &str,
        write: bool,
        caller: Option<&Caller>,
    ) -> SchedulerResult<Arc<dyn SchedulerProvider>> {
        let (capability, permissions) = if write {
            ("scheduler", WRITE)
        } else {
            ("scheduler-read", READ)
        };
        self.authorize(
            capability,
            caller.map(|c| crate::state::Acting {
                project: &c.project,
                token: &c.token,
            }),
            permissions,
        )
        .await
        .map_err(SchedulerError::Permission)?;
        self.scheduler(resource)
    }

    /// A scheduler's answer, its Unavailable details kept for the log.
    fn told<T>(&self, resource: &str, r: SchedulerResult<T>) -> SchedulerResult<T> {
        r.map_err(|e| match e {
            SchedulerError::Unavailable(detail) => SchedulerError::Unavailable(self.conceal(
                &format!("the scheduler of resource `{resource}` is unavailable"),
                &detail,
            )),
            other => other,
        })
    }
}

impl s3m::facility::types::Host for HostState {}

impl crate::metrics::CallError for SchedulerError {
    fn case(&self) -> &'static str {
        match self {
            SchedulerError::InvalidJob(_) => "InvalidJob",
            SchedulerError::NotFound(_) => "NotFound",
            SchedulerError::Unavailable(_) => "Unavailable",
            SchedulerError::Permission(_) => "Permission",
        }
    }
    fn message(&self) -> &str {
        match self {
            SchedulerError::InvalidJob(m)
            | SchedulerError::NotFound(m)
            | SchedulerError::Unavailable(m)
            | SchedulerError::Permission(m) => m,
        }
    }
}

impl HostState {
    /// A scheduler call's answer (`told`), counted, and audited when it
    /// acted for `caller`'s project.
    fn answered<T>(
        &self,
        call: Call,
        resource: &str,
        caller: Option<&Caller>,
        object: Option<String>,
        r: SchedulerResult<T>,
    ) -> R<T> {
        let r = self.told(resource, r);
        self.finish_call(
            &call,
            caller.map(|c| c.project.as_str()),
            Some(resource),
            object.as_deref(),
            &r,
        );
        Ok(r)
    }
}

/// `f`, or Unavailable once `deadline` has passed.
async fn within<T>(
    deadline: std::time::Duration,
    f: impl std::future::Future<Output = SchedulerResult<T>>,
) -> SchedulerResult<T> {
    tokio::time::timeout(deadline, f).await.unwrap_or_else(|_| {
        Err(SchedulerError::Unavailable(format!(
            "the scheduler did not answer within {} ms",
            deadline.as_millis()
        )))
    })
}

/// The longest `overviews` waits, whatever the component asks.
const MAX_OVERVIEW_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

impl s3m::facility::scheduler::Host for HostState {
    async fn overviews(
        &mut self,
        resources: Vec<String>,
        deadline_ms: u32,
    ) -> wasmtime::Result<Vec<s3m::facility::scheduler::SchedulerOverview>> {
        use s3m::facility::scheduler::SchedulerOverview;
        let call = Call::start("scheduler", "overviews");
        let deadline =
            std::time::Duration::from_millis(deadline_ms.max(1) as u64).min(MAX_OVERVIEW_DEADLINE);
        if let Err(why) = self.authorize("scheduler-read", None, &[]).await {
            call.finish("refused");
            return Ok(resources
                .into_iter()
                .map(|resource| SchedulerOverview {
                    resource,
                    about: Err(SchedulerError::Permission(why.clone())),
                    reachable: Err(SchedulerError::Permission(why.clone())),
                    partitions: Err(SchedulerError::Permission(why.clone())),
                })
                .collect());
        }
        let asks = resources.into_iter().map(|resource| {
            let provider = self.scheduler(&resource);
            async move {
                let provider = match provider {
                    Ok(p) => p,
                    Err(e) => {
                        return SchedulerOverview {
                            resource,
                            about: Err(e.clone()),
                            reachable: Err(e.clone()),
                            partitions: Err(e),
                        }
                    }
                };
                let (about, ping, partitions) = tokio::join!(
                    within(deadline, provider.about()),
                    within(deadline, provider.ping()),
                    within(deadline, provider.partitions()),
                );
                SchedulerOverview {
                    resource,
                    about,
                    reachable: ping
                        .map(|pings| pings.iter().any(|p| p.pinged.eq_ignore_ascii_case("UP"))),
                    partitions,
                }
            }
        });
        let overviews = futures::future::join_all(asks).await;
        call.finish("ok");
        Ok(overviews
            .into_iter()
            .map(|o| SchedulerOverview {
                about: self.told(&o.resource, o.about),
                reachable: self.told(&o.resource, o.reachable),
                partitions: self.told(&o.resource, o.partitions),
                resource: o.resource,
            })
            .collect())
    }

    async fn about(&mut self, resource: String) -> R<SchedulerAbout> {
        let call = Call::start("scheduler", "about");
        let r = match self.allowed(&resource, false, None).await {
            Ok(p) => p.about().await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, None, None, r)
    }

    async fn submit(
        &mut self,
        resource: String,
        caller: Caller,
        job: JobDescription,
        script: String,
    ) -> R<Submitted> {
        let call = Call::start("scheduler", "submit");
        let r = match self.allowed(&resource, true, Some(&caller)).await {
            Ok(p) => p.submit(&caller, job, script).await,
            Err(e) => Err(e),
        };
        self.answered(
            call,
            &resource,
            Some(&caller),
            r.as_ref().ok().map(|s| s.job_id.to_string()),
            r,
        )
    }

    async fn get(&mut self, resource: String, caller: Caller, job_id: u32) -> R<JobInfo> {
        let call = Call::start("scheduler", "get");
        let r = match self.allowed(&resource, false, Some(&caller)).await {
            Ok(p) => p.get(&caller, job_id).await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, Some(&caller), Some(job_id.to_string()), r)
    }

    async fn list_jobs(&mut self, resource: String, caller: Caller) -> R<JobList> {
        let call = Call::start("scheduler", "list-jobs");
        let r = match self.allowed(&resource, false, Some(&caller)).await {
            Ok(p) => p.list_jobs(&caller).await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, Some(&caller), None, r)
    }

    async fn cancel(
        &mut self,
        resource: String,
        caller: Caller,
        job_id: u32,
        signal: u32,
    ) -> R<()> {
        let call = Call::start("scheduler", "cancel");
        let r = match self.allowed(&resource, true, Some(&caller)).await {
            Ok(p) => p.cancel(&caller, job_id, signal).await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, Some(&caller), Some(job_id.to_string()), r)
    }

    async fn ping(&mut self, resource: String) -> R<Vec<PingInfo>> {
        let call = Call::start("scheduler", "ping");
        let r = match self.allowed(&resource, false, None).await {
            Ok(p) => p.ping().await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, None, None, r)
    }

    async fn diag(&mut self, resource: String) -> R<Diagnostics> {
        let call = Call::start("scheduler", "diag");
        let r = match self.allowed(&resource, false, None).await {
            Ok(p) => p.diag().await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, None, None, r)
    }

    async fn nodes(&mut self, resource: String) -> R<Vec<NodeInfo>> {
        let call = Call::start("scheduler", "nodes");
        let r = match self.allowed(&resource, false, None).await {
            Ok(p) => p.nodes().await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, None, None, r)
    }

    async fn partitions(&mut self, resource: String) -> R<Vec<PartitionInfo>> {
        let call = Call::start("scheduler", "partitions");
        let r = match self.allowed(&resource, false, None).await {
            Ok(p) => p.partitions().await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, None, None, r)
    }

    async fn reservations(&mut self, resource: String) -> R<Vec<ReservationInfo>> {
        let call = Call::start("scheduler", "reservations");
        let r = match self.allowed(&resource, false, None).await {
            Ok(p) => p.reservations().await,
            Err(e) => Err(e),
        };
        self.answered(call, &resource, None, None, r)
    }
}
