//! The command line: `s3m up`, `s3m build`, `s3m token ...`.

use crate::admin::{keys, tokens};
use crate::engine::{self, App, Limits};
use crate::manifest::Manifest;
use crate::runtime_config::RuntimeConfig;
use crate::state::Services;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// S3M: a secure facility API for HPC centres.
///
/// Serves the WebAssembly components of spin.toml over HTTP and gives them
/// key-value, variables, outbound HTTP, a batch scheduler and message brokers.
/// Project access tokens are minted here, by the operator.
#[derive(Parser)]
#[command(name = "s3m", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Global {
    /// The application manifest.
    #[arg(long, global = true, env = "S3M_MANIFEST", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Where the host keeps its state: key pair, key-value file, broker and job data.
    /// Default: .s3m beside the manifest.
    #[arg(long, global = true, env = "S3M_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Spin-format runtime config choosing key-value backends (e.g. Redis).
    #[arg(long, global = true, env = "S3M_RUNTIME_CONFIG")]
    runtime_config_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application (builds the components first with --build).
    Up(UpArgs),
    /// Build every component (or those named) with the manifest's build commands.
    Build {
        /// Build only this component (repeatable).
        #[arg(long = "component", short = 'c')]
        components: Vec<String>,
        /// Then compose each component with its [component.x.dependencies] and
        /// the key-value and variables adapters into one self-contained
        /// component, target/composed/<id>.wasm, importing only wasi:*.
        #[arg(long)]
        compose: bool,
        /// With --compose: compose what is built already, running no build command.
        #[arg(long, requires = "compose")]
        no_build: bool,
    },
    /// Mint, list and revoke project access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The capability gateway: what a component needs to reach it.
    #[command(subcommand)]
    Gateway(GatewayCommand),
}

#[derive(Subcommand)]
enum GatewayCommand {
    /// Print, as NAME=value lines for a shell or `wasmtime serve --env`, the
    /// variables through which a component's adapters reach the gateway:
    /// SPIN_VARIABLE_S3M_GATEWAY_URL and SPIN_VARIABLE_S3M_GATEWAY_CREDENTIAL.
    /// The credential is a secret: it lets the component use what spin.toml
    /// grants it.
    Env {
        /// The component (a spin.toml component id).
        #[arg(long, short = 'c')]
        component: String,
        /// The gateway's URL; default: the one the running `s3m up` wrote to
        /// <state>/gateway.url, else http://127.0.0.1:3001.
        #[arg(long)]
        url: Option<String>,
        /// Print the names stock Spin reads for this component's application
        /// variables (SPIN_VARIABLE_S3M_GATEWAY_CREDENTIAL_<COMPONENT>).
        #[arg(long)]
        spin: bool,
    },
}

#[derive(Args)]
struct UpArgs {
    /// Address to listen on; port 0 picks a free one (the "Serving" line tells which).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Run the manifest's build commands before serving.
    #[arg(long)]
    build: bool,
    /// Set an application variable (name=value), over its default and SPIN_VARIABLE_<NAME>.
    #[arg(long = "variable", value_parser = parse_key_value)]
    variables: Vec<(String, String)>,
    /// Memory a component instance may use per request.
    #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
    memory_limit: usize,
    /// Wall-clock limit of one request inside a component (e.g. 60s).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Component instances alive at once; more concurrent requests wait for one
    /// (up to --request-timeout, then 503).
    #[arg(long, default_value_t = 256)]
    max_instances: u32,
    /// Largest request body on any route (e.g. 10MiB); a larger one is answered 413,
    /// a too large Content-Length before its body is read.
    #[arg(long, default_value = "10MiB", value_parser = parse_bytes)]
    max_body_size: usize,
    /// Client connections open at once; one more is answered 503 (Retry-After) and closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Requests handled at once, across connections; one more is answered 503 (Retry-After).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: u32,
    /// Time a client has to send a request's line and headers (e.g. 10s); past it the
    /// connection is closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Where the capability gateway listens (docs/gateway.md): the facility
    /// capabilities over HTTP, for components that stock Spin, `wasmtime serve`
    /// or jco run through the adapters. Loopback by default; port 0 picks a free
    /// one; `off` serves none.
    #[arg(long, default_value = "127.0.0.1:3001")]
    gateway_listen: String,
    /// Where the operator listener serves Prometheus metrics (GET /metrics);
    /// never on --listen. Loopback by default; port 0 picks a free one (written
    /// to <state>/operator.url); `off` serves none.
    #[arg(long, default_value = "127.0.0.1:9300")]
    operator_listen: String,
    /// How long compute remembers an Idempotency-Key: within it the same key
    /// returns the first job; after it, the key submits anew.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    idempotency_ttl: Duration,
    /// How often the host removes expired key-value entries (idempotency
    /// records past --idempotency-ttl, one-time-token markers of tokens that
    /// can no longer work).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    sweep_interval: Duration,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a token; prints only the token, for `Authorization: <token>`.
    Create {
        /// The project, e.g. STF040; the token acts as user <project>_auser.
        #[arg(long)]
        project: String,
        /// A permission the token carries (repeatable): compute-ace, compute-ace-readonly, data-streaming, workflows.
        #[arg(long = "permission", short = 'p', required = true)]
        permissions: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Who asked for it (ownerName).
        #[arg(long, default_value_t = default_owner())]
        owner: String,
        /// Lifetime from its start, e.g. 30d, 12h, 90s.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires_in: Duration,
        /// The token works exactly once.
        #[arg(long)]
        one_time: bool,
        /// The token starts working only after this delay, e.g. 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<Duration>,
        /// Print the record as JSON too (on stderr).
        #[arg(long)]
        verbose: bool,
    },
    /// List token records as JSON (never the tokens themselves).
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Revoke a token by its jti; every later use is refused at once.
    Revoke { jti: String },
}

/// The Unix user running the CLI, for the audit log.
fn default_operator() -> String {
    default_owner()
}

fn default_owner() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "operator".into())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: write name=value"))
}

pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1usize << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?}: write a size like 128MiB"))
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    crate::logging::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if crate::logging::is_json() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

struct Context_ {
    manifest: Manifest,
    state_dir: PathBuf,
    runtime_config: RuntimeConfig,
    runtime_config_dir: Option<PathBuf>,
}

fn context(g: &Global) -> anyhow::Result<Context_> {
    let manifest = Manifest::load(&g.manifest)?;
    let state_dir = g
        .state_dir
        .clone()
        .unwrap_or_else(|| manifest.dir.join(".s3m"));
    let (runtime_config, runtime_config_dir) =
        RuntimeConfig::load(g.runtime_config_file.as_deref())?;
    Ok(Context_ {
        manifest,
        state_dir,
        runtime_config,
        runtime_config_dir,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = context(&cli.global)?;
    match cli.command {
        Command::Build {
            components,
            compose,
            no_build,
        } => {
            if !no_build {
                crate::builder::build(&ctx.manifest, &components)?;
            }
            if compose {
                crate::builder::compose(&ctx.manifest, &components, !no_build)?;
            }
            Ok(())
        }
        Command::Up(args) => up(ctx, args).await,
        Command::Token(cmd) => token(ctx, cmd).await,
        Command::Gateway(cmd) => gateway(ctx, cmd),
    }
}

fn gateway(ctx: Context_, cmd: GatewayCommand) -> anyhow::Result<()> {
    match cmd {
        GatewayCommand::Env {
            component,
            url,
            spin,
        } => {
            if !ctx.manifest.components.contains_key(&component) {
                anyhow::bail!(
                    "{} has no component {component:?}; its components: {}",
                    ctx.manifest.dir.join("spin.toml").display(),
                    ctx.manifest
                        .components
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let url = match url {
                Some(u) => u,
                None => std::fs::read_to_string(ctx.state_dir.join("gateway.url"))
                    .map(|u| u.trim().to_string())
                    .unwrap_or_else(|_| "http://127.0.0.1:3001".into()),
            };
            let key = crate::gateway::load_or_create_key(&ctx.state_dir)?;
            let credential = crate::gateway::credential(&key, &component);
            println!("SPIN_VARIABLE_S3M_GATEWAY_URL={url}");
            if spin {
                println!(
                    "SPIN_VARIABLE_S3M_GATEWAY_CREDENTIAL_{}={credential}",
                    component.to_ascii_uppercase().replace('-', "_")
                );
            } else {
                println!("SPIN_VARIABLE_S3M_GATEWAY_CREDENTIAL={credential}");
            }
            Ok(())
        }
    }
}

async fn up(ctx: Context_, args: UpArgs) -> anyhow::Result<()> {
    if args.build {
        crate::builder::build(&ctx.manifest, &[])?;
    }
    let started = std::time::Instant::now();
    let key = keys::load_or_create(&ctx.state_dir)?;
    crate::audit::open(&ctx.state_dir)?;
    let host_values =
        BTreeMap::from([("facility_public_key".to_string(), key.public_key().to_pem())]);
    let cli_values: BTreeMap<String, String> = args.variables.into_iter().collect();
    let variables = engine::resolve_variables(&ctx.manifest, &host_values, &cli_values)?;

    let facility_path = ctx.manifest.dir.join("config/facility.toml");
    let facility = crate::facility::load(&facility_path)?;
    let key_value = ctx
        .runtime_config
        .key_value_stores(ctx.runtime_config_dir.as_deref(), &ctx.state_dir)
        .await?;
    if let Ok(store) = key_value.get("default") {
        crate::sweeper::spawn(
            store,
            args.sweep_interval.max(Duration::from_millis(100)),
            args.idempotency_ttl,
        );
    }
    let schedulers = crate::wiring::schedulers(&facility, &ctx.state_dir).await?;
    let records_store = key_value.get("default").map_err(|_| {
        anyhow::anyhow!(
            "the runtime config has no key-value store `default`: the broker records and tokens live there"
        )
    })?;
    let brokers = crate::wiring::brokers(&facility, &ctx.state_dir, records_store).await?;
    crate::wiring::software(&facility);
    let services = Arc::new(Services {
        key_value,
        schedulers,
        brokers,
    });

    let router = crate::routes::Router::build(
        ctx.manifest
            .triggers
            .iter()
            .map(|t| (t.route.as_str(), t.component.as_str())),
    )?;
    let limits = Limits {
        memory_bytes: args.memory_limit,
        request_timeout: args.request_timeout,
        max_instances: args.max_instances,
    };
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(120));
    let manifest = ctx.manifest.clone();
    let app = tokio::task::spawn_blocking(move || {
        App::load(&manifest, &variables, services, limits, &progress)
            .inspect(|_| progress.finish_and_clear())
    })
    .await??;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another s3m running? pass --listen ADDR",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    tracing::info!(
        app = %ctx.manifest.name,
        version = ctx.manifest.version.as_deref().unwrap_or("-"),
        components = app.components.len(),
        ready_ms = started.elapsed().as_millis() as u64,
        state_dir = %ctx.state_dir.display(),
        "ready"
    );
    let app = Arc::new(app);
    // The workflow engine drives what the workflows component stores.
    if let Some(component) = app.components.get("workflows") {
        let store = app
            .services
            .key_value
            .get(s3m_workflow::store::LABEL)
            .map_err(|e| {
                anyhow::anyhow!("key-value store {:?}: {e}", s3m_workflow::store::LABEL)
            })?;
        let written = app.services.key_value.written(s3m_workflow::store::LABEL)?;
        let tokens = app
            .services
            .key_value
            .get(crate::admin::principal::TOKEN_STORE)?;
        let default_resource = facility
            .resources
            .iter()
            .find(|r| r.compute.is_some())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        crate::workflows::Engine::start(
            store,
            written,
            tokens,
            app.services.clone(),
            component.outbound.clone(),
            default_resource,
        );
    }
    let gateway = match args.gateway_listen.as_str() {
        "off" => None,
        addr => {
            let key = crate::gateway::load_or_create_key(&ctx.state_dir)?;
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for the capability gateway: pass --gateway-listen ADDR (or off)")
            })?;
            let url = format!("http://{}", listener.local_addr()?);
            std::fs::write(ctx.state_dir.join("gateway.url"), &url)?;
            crate::logging::say(&format!(
                "Capability gateway: {url}{} (docs/gateway.md)",
                crate::gateway::PREFIX
            ));
            Some(crate::gateway::Gateway::new(app.clone(), key).serve(listener))
        }
    };
    let gateway = async move {
        match gateway {
            Some(g) => g.await,
            None => std::future::pending().await,
        }
    };
    let operator = match args.operator_listen.as_str() {
        "off" => None,
        addr => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for the operator listener (metrics): pass --operator-listen ADDR (or off)")
            })?;
            let url = format!("http://{}", listener.local_addr()?);
            std::fs::write(ctx.state_dir.join("operator.url"), &url)?;
            crate::logging::say(&format!("Operator listener: {url}/metrics"));
            Some(crate::metrics::serve_operator(app.clone(), listener))
        }
    };
    let operator = async move {
        match operator {
            Some(o) => o.await,
            None => std::future::pending().await,
        }
    };
    // Made before the Serving line, so that the first scrape sees its pools.
    let http_limits = crate::server::HttpLimits {
        max_body_size: args.max_body_size as u64,
        max_connections: args.max_connections as usize,
        max_concurrent_requests: args.max_concurrent_requests as usize,
        header_read_timeout: args.header_read_timeout,
    };
    let server = crate::server::Server::new(app, router, http_limits);
    print_routes(&ctx.manifest, addr);
    println!("Serving http://{addr}");
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = server.serve(listener) => r,
        r = gateway => r,
        r = operator => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("stopping (SIGINT)");
            Ok(())
        }
        _ = terminate.recv() => {
            tracing::info!("stopping (SIGTERM)");
            Ok(())
        }
    }
}

fn print_routes(manifest: &Manifest, addr: std::net::SocketAddr) {
    use crate::logging::say;
    if let Some(d) = &manifest.description {
        say(&format!("{}: {d}", manifest.name));
    }
    say("Available routes:");
    for t in &manifest.triggers {
        say(&format!("  {}: http://{addr}{}", t.component, t.route));
    }
}

async fn token(ctx: Context_, cmd: TokenCommand) -> anyhow::Result<()> {
    let stores = ctx
        .runtime_config
        .key_value_stores(ctx.runtime_config_dir.as_deref(), &ctx.state_dir)
        .await?;
    let store = stores.get("default").map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::audit::open(&ctx.state_dir)?;
    let operator = default_operator();
    match cmd {
        TokenCommand::Create {
            project,
            permissions,
            description,
            owner,
            expires_in,
            one_time,
            delay,
            verbose,
        } => {
            let key = keys::load_or_create(&ctx.state_dir)?;
            let variables =
                engine::resolve_variables(&ctx.manifest, &BTreeMap::new(), &BTreeMap::new())?;
            let audience = variables
                .get("token_audience")
                .cloned()
                .unwrap_or_else(|| "s3m".into());
            let asked = project.clone();
            let created = tokens::create(
                store.as_ref(),
                &key,
                tokens::NewToken {
                    project,
                    permissions: permissions.clone(),
                    description,
                    owner: owner.clone(),
                    expires_in,
                    one_time,
                    delay,
                    audience,
                    enclave: "open".into(),
                },
            )
            .await;
            crate::audit::record(
                "token.create",
                if created.is_ok() { "ok" } else { "error" },
                &[
                    ("operator", operator.as_str().into()),
                    ("owner", owner.as_str().into()),
                    (
                        "project",
                        created
                            .as_ref()
                            .map(|(_, r)| r.project.as_str())
                            .unwrap_or(asked.as_str())
                            .into(),
                    ),
                    (
                        "object",
                        crate::audit::opt(created.as_ref().ok().map(|(_, r)| r.jti.as_str())),
                    ),
                    ("permissions", serde_json::json!(permissions)),
                    (
                        "reason",
                        crate::audit::opt(
                            created.as_ref().err().map(|e| format!("{e:#}")).as_deref(),
                        ),
                    ),
                ],
            );
            let (token, record) = created?;
            // Counted beside the tokens, for the host's s3m_tokens_minted_total.
            if let Err(e) = store.increment(crate::metrics::MINTED_KEY, 1).await {
                tracing::warn!("cannot count the minted token for the metrics: {e}");
            }
            if verbose {
                let mut shown = record.clone();
                shown.token_sha256.clear();
                eprintln!("{}", serde_json::to_string_pretty(&shown)?);
            }
            println!("{token}");
        }
        TokenCommand::List { project } => {
            let records = tokens::list(store.as_ref(), project.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&records)?);
        }
        TokenCommand::Revoke { jti } => {
            let revoked = tokens::revoke(store.as_ref(), &jti).await;
            crate::audit::record(
                "token.revoke",
                if revoked.is_ok() { "ok" } else { "error" },
                &[
                    ("operator", operator.as_str().into()),
                    (
                        "project",
                        crate::audit::opt(revoked.as_ref().ok().map(|r| r.project.as_str())),
                    ),
                    ("object", jti.as_str().into()),
                    (
                        "reason",
                        crate::audit::opt(
                            revoked.as_ref().err().map(|e| format!("{e:#}")).as_deref(),
                        ),
                    ),
                ],
            );
            let record = revoked?;
            eprintln!(
                "revoked {} (project {}, {})",
                record.jti, record.project, record.description
            );
        }
    }
    Ok(())
}
