//! The `agora` binary: parses the command line and dispatches to the
//! libraries. Bad flags or configuration exit with status 64 (EX_USAGE)
//! before any port is bound.

// The master's HTTP routes are one deep warp filter type; an optimised
// build needs a higher limit to evaluate it (E0275 in release only).
#![recursion_limit = "256"]

mod apps;
mod cli;
mod jobs;
mod rest;
mod tables;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cli::{
    AgentArgs, BatchArgs, Cli, Command, DevArgs, DockerArgs, ExecuteArgs, MasterArgs, ServicesArgs,
};

/// mimalloc: the master allocates and frees many small objects per offer,
/// launch and status update; glibc's malloc takes several times longer and
/// fragments more (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE: the command was used incorrectly.
const EX_USAGE: u8 = 64;

/// A mistake in how agora was called: reported with exit status 64.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.to_string()))
}

/// An error and its causes on one line, each cause once: errors that
/// already print their source in their own message (`cannot listen on ...:
/// Address already in use`) do not get it repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EX_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Command::TaskSupervisor { args } = cli.command {
        // A plain process: no runtime, no logging setup.
        let code = agora_agent::supervisor::main(args);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // Servers log what they do; client commands only warnings, so their
    // own output stays readable.
    let server = matches!(
        cli.command,
        Command::Master(_)
            | Command::Agent(_)
            | Command::Dev(_)
            | Command::Batch(_)
            | Command::Services(_)
    );
    init_logging(if server { "info" } else { "warn" });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            if e.downcast_ref::<UsageError>().is_some()
                || matches!(
                    e.downcast_ref::<agora_bench::BenchError>(),
                    Some(agora_bench::BenchError::Config(_))
                )
            {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Master(args) => {
            let config = master_config(&args)?;
            let shutdown = shutdown_on_signals();
            agora_master::run(config, shutdown).await?;
        }
        Command::Agent(args) => {
            let config = agent_config(&args)?;
            let shutdown = shutdown_on_signals();
            agora_agent::run(config, shutdown).await?;
        }
        Command::Dev(args) => dev(args).await?,
        Command::Execute(args) => return execute(args).await,
        Command::Agents(args) => {
            let state = tables::fetch_state(checked_master(&args.master)?).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&state["agents"])?);
            } else {
                println!("{}", tables::agents(&state));
            }
        }
        Command::Frameworks(args) => {
            let state = tables::fetch_state(checked_master(&args.master)?).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&state["frameworks"])?);
            } else {
                println!("{}", tables::frameworks(&state));
            }
        }
        Command::Tasks(args) => {
            let state = tables::fetch_state(checked_master(&args.list.master)?).await?;
            let tasks = tables::task_list(&state, args.all);
            if args.list.json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
            } else {
                println!("{}", tables::tasks(&tasks));
            }
        }
        Command::Services(args) => {
            let config = services_config(&args)?;
            let shutdown = shutdown_on_signals();
            agora_services::run(config, shutdown).await?;
        }
        Command::Batch(args) => {
            let config = batch_config(&args)?;
            let shutdown = shutdown_on_signals();
            agora_batch::run(config, shutdown).await?;
        }
        Command::Jobs(cmd) => return jobs::run(cmd).await,
        Command::Apps(cmd) => return apps::run(cmd).await,
        Command::Deployments(cmd) => return apps::run_deployments(cmd).await,
        Command::Bench(bench) => agora_bench::run(bench).await?,
        Command::TaskSupervisor { .. } => unreachable!("handled before the runtime starts"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--master` of the list commands: a `zk://` address must be valid.
fn checked_master(master: &str) -> anyhow::Result<&str> {
    if agora_coord::ZkUrl::is_zk(master) {
        agora_coord::ZkUrl::parse(master).map_err(|e| usage(format!("--master: {e}")))?;
    }
    Ok(master)
}

fn master_config(args: &MasterArgs) -> anyhow::Result<agora_master::MasterConfig> {
    let weights = if args.weights.trim().is_empty() {
        Default::default()
    } else {
        agora_allocator::parse_weights(&args.weights)
            .map_err(|e| usage(format!("--weights: {e}")))?
    };
    let mut config = agora_master::MasterConfig {
        listen: args.listen,
        hostname: args.hostname.clone(),
        weights,
        registry: match &args.registry_dir {
            Some(dir) => agora_master::RegistryBackend::File(dir.join("registry.redb")),
            None => agora_master::RegistryBackend::Memory,
        },
        zk: match &args.zk {
            Some(url) => Some(agora_master::ZkConfig {
                url: agora_coord::ZkUrl::parse(url).map_err(|e| usage(format!("--zk: {e}")))?,
                session_timeout: args.zk_session_timeout,
            }),
            None => None,
        },
        ..Default::default()
    };
    // A hidden switch for tests of the master's supervision (see
    // `MasterConfig::fault_hooks`).
    config.fault_hooks = std::env::var("AGORA_TEST_FAULT_HOOKS").is_ok_and(|v| v == "1");
    config.core.agent_timeout = args.agent_timeout;
    // Agents heartbeat five times per timeout, at most every 5 s.
    config.core.agent_heartbeat_interval = (args.agent_timeout / 5).min(Duration::from_secs(5));
    config.core.agent_reregister_timeout = args.agent_timeout;
    config.core.allocation_interval = args.allocation_interval;
    config.core.offer_timeout = args.offer_timeout;
    config.validate().map_err(usage)?;
    Ok(config)
}

fn services_config(args: &ServicesArgs) -> anyhow::Result<agora_services::ServicesConfig> {
    if agora_coord::ZkUrl::is_zk(&args.master) {
        agora_coord::ZkUrl::parse(&args.master).map_err(|e| usage(format!("--master: {e}")))?;
    }
    let mut config = agora_services::ServicesConfig::new(&args.master, args.listen);
    let dir = args.data_dir.join("services");
    match &args.zk {
        Some(url) => {
            let url = agora_coord::ZkUrl::parse(url).map_err(|e| usage(format!("--zk: {e}")))?;
            config.store = agora_framework_kit::store::StoreBackend::Zk {
                url: url.clone(),
                session_timeout: args.zk_session_timeout,
            };
            config.election = agora_framework_kit::election::Election::Zk {
                url,
                session_timeout: args.zk_session_timeout,
            };
        }
        None => {
            config.store = agora_framework_kit::store::StoreBackend::File(dir.join("store.redb"));
        }
    }
    config.role = args.role.clone();
    config.failover_timeout = args.failover_timeout;
    config.controller.tracker.periodic_reconcile = args.reconciliation_interval;
    config.validate().map_err(usage)?;
    if args.zk.is_none() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(config)
}

fn batch_config(args: &BatchArgs) -> anyhow::Result<agora_batch::BatchConfig> {
    if agora_coord::ZkUrl::is_zk(&args.master) {
        agora_coord::ZkUrl::parse(&args.master).map_err(|e| usage(format!("--master: {e}")))?;
    }
    let mut config = agora_batch::BatchConfig::new(&args.master, args.listen);
    match &args.zk {
        Some(url) => {
            let url = agora_coord::ZkUrl::parse(url).map_err(|e| usage(format!("--zk: {e}")))?;
            config.store = agora_framework_kit::store::StoreBackend::Zk {
                url: url.clone(),
                session_timeout: args.zk_session_timeout,
            };
            config.election = agora_framework_kit::election::Election::Zk {
                url,
                session_timeout: args.zk_session_timeout,
            };
        }
        None => {
            config.store =
                agora_framework_kit::store::StoreBackend::File(args.data_dir.join("store.redb"));
        }
    }
    config.core.role = args.role.clone();
    config.core.history_count = args.history_count;
    config.core.history_age = args.history_age;
    config.failover_timeout = args.failover_timeout;
    config.validate().map_err(usage)?;
    if args.zk.is_none() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    }
    Ok(config)
}

fn parse_attributes(text: &str) -> anyhow::Result<Vec<agora_proto::v1::Attribute>> {
    agora_proto::parse_attributes(text).map_err(|e| usage(format!("--attributes: {e}")))
}

fn parse_resources(text: &Option<String>) -> anyhow::Result<Option<agora_proto::Resources>> {
    text.as_deref()
        .map(|r| agora_proto::Resources::parse(r).map_err(|e| usage(format!("--resources: {e}"))))
        .transpose()
}

fn agent_config(args: &AgentArgs) -> anyhow::Result<agora_agent::AgentConfig> {
    let mut config = agora_agent::AgentConfig::new(&args.master, &args.work_dir);
    config.listen = args.listen;
    config.resources = parse_resources(&args.resources)?;
    config.attributes = parse_attributes(&args.attributes)?;
    if let Some(h) = &args.hostname {
        config.hostname = h.clone();
    }
    config.default_kill_grace = args.kill_grace;
    config.health_check_concurrency = args.health_check_concurrency;
    apply_docker_args(&mut config, &args.docker)?;
    config.validate().map_err(usage)?;
    Ok(config)
}

/// The containerizer and Docker flags, shared by `agent` and `dev`.
fn apply_docker_args(
    config: &mut agora_agent::AgentConfig,
    args: &DockerArgs,
) -> anyhow::Result<()> {
    if let Some(c) = &args.containerizers {
        config.containerizers = Some(
            agora_agent::parse_containerizers(c)
                .map_err(|e| usage(format!("--containerizers: {e}")))?,
        );
    }
    config.docker_host = args.docker_socket.clone().filter(|s| !s.trim().is_empty());
    config.docker_volume_roots = args.docker_volume_roots.clone();
    config.docker_allow_privileged = args.docker_allow_privileged;
    config.docker_remove_delay = args.docker_remove_delay;
    Ok(())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let mut master = agora_master::MasterConfig {
        listen: args.listen,
        registry: agora_master::RegistryBackend::File(
            args.data_dir.join("master").join("registry.redb"),
        ),
        ..Default::default()
    };
    master.core.agent_heartbeat_interval = Duration::from_secs(3);
    master.validate().map_err(usage)?;
    // The agent's master is the address the master binds, known once it
    // runs (`--listen` may ask for any free port with `:0`). Until then the
    // agent's flags are checked against a stand-in with a port, so that bad
    // ones still exit 64 before anything binds.
    let stand_in = std::net::SocketAddr::new(args.listen.ip(), args.listen.port().max(1));
    let mut agent =
        agora_agent::AgentConfig::new(stand_in.to_string(), args.data_dir.join("agent"));
    agent.listen = args.agent_listen;
    agent.resources = parse_resources(&args.resources)?;
    agent.attributes = parse_attributes(&args.attributes)?;
    apply_docker_args(&mut agent, &args.docker)?;
    agent.validate().map_err(usage)?;
    let mut batch = agora_batch::BatchConfig::new(stand_in.to_string(), args.batch_listen);
    batch.store = agora_framework_kit::store::StoreBackend::File(
        args.data_dir.join("batch").join("store.redb"),
    );
    batch.validate().map_err(usage)?;
    let mut services =
        agora_services::ServicesConfig::new(stand_in.to_string(), args.services_listen);
    services.store = agora_framework_kit::store::StoreBackend::File(
        args.data_dir.join("services").join("store.redb"),
    );
    services.validate().map_err(usage)?;
    std::fs::create_dir_all(args.data_dir.join("services"))
        .with_context(|| format!("cannot create {}", args.data_dir.join("services").display()))?;
    std::fs::create_dir_all(args.data_dir.join("batch"))
        .with_context(|| format!("cannot create {}", args.data_dir.join("batch").display()))?;

    let shutdown = shutdown_on_signals();
    let master = agora_master::start(master, shutdown.clone())
        .await
        .context("starting the master")?;
    let addr = master.addr();
    agent.master = addr.to_string();
    let agent = agora_agent::start(agent, shutdown.clone())
        .await
        .context("starting the agent")?;
    services.master = addr.to_string();
    let services = agora_services::start(services, shutdown.clone())
        .await
        .context("starting the services framework")?;
    batch.master = addr.to_string();
    let batch = agora_batch::start(batch, shutdown.clone())
        .await
        .context("starting the batch framework")?;
    println!(
        "Agora dev cluster is up (data in {}).",
        args.data_dir.display()
    );
    println!("  web UI:               http://{addr}/");
    println!("  master (gRPC + HTTP): http://{addr}   state: http://{addr}/state");
    println!("  agent:                http://{}", agent.http_addr());
    println!(
        "  services (apps):      {}   API: {}/v2/apps",
        services.url(),
        services.url()
    );
    println!(
        "  batch (jobs):         {}   API: {}/v1/jobs",
        batch.url(),
        batch.url()
    );
    match agent.docker_host() {
        Some(docker) => println!(
            "  containerizers:       {} (Docker at {docker})",
            agent.containerizers().join(",")
        ),
        None => println!(
            "  containerizers:       {} (no Docker daemon: plain commands only)",
            agent.containerizers().join(",")
        ),
    }
    println!("Try:");
    println!("  agora execute --master {addr} --name hello --command 'echo hello from agora'");
    println!("  agora tasks --master {addr} --all");
    println!("  agora apps list --services {}", services.url());
    println!("  agora jobs list --batch {}", batch.url());
    println!(
        "Press Ctrl-C to stop (running tasks keep running and are recovered on the next start)."
    );
    // A master that fails stops the whole dev cluster (and the process
    // exits non-zero with the reason).
    let master = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let result = master.wait().await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    });
    let agent_result = agent.wait().await;
    services.wait().await;
    batch.wait().await;
    let master_result = master.await.context("the master")?;
    agent_result.context("the agent")?;
    master_result.context("the master")?;
    Ok(())
}

async fn execute(args: ExecuteArgs) -> anyhow::Result<ExitCode> {
    let resources = agora_proto::Resources::parse(&args.resources)
        .map_err(|e| usage(format!("--resources: {e}")))?;
    let mut env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--env {kv}: write it as KEY=VALUE")))?;
        env.push((k.to_string(), v.to_string()));
    }
    let config = agora_execute::ExecuteConfig {
        master: args.master,
        name: args.name,
        command: args.command,
        resources,
        env,
        role: args.role,
        docker_image: args.docker_image,
    };
    config.validate().map_err(usage)?;
    let cancel = shutdown_on_signals();
    let mut out = std::io::stdout();
    match agora_execute::run_with_cancel(config, &mut out, cancel).await {
        Ok(outcome) => Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8)),
        Err(e) => {
            // A cancellation was already reported on stdout.
            if !matches!(e, agora_execute::ExecuteError::Cancelled { .. }) {
                eprintln!("error: {e}");
            }
            Ok(ExitCode::from(e.exit_code().clamp(0, 255) as u8))
        }
    }
}

#[cfg(test)]
mod describe_tests {
    use super::describe;
    use anyhow::Context;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let bind = agora_master::MasterError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io,
        };
        let e = Err::<(), _>(bind)
            .context("starting the master")
            .unwrap_err();
        assert_eq!(
            describe(&e),
            "starting the master: cannot listen on 127.0.0.1:1: Address already in use \
             (is another process using the port?)"
        );
        let plain = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing the store")
            .unwrap_err();
        assert_eq!(describe(&plain), "writing the store: disk full");
    }
}
