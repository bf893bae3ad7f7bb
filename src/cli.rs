//! The command line: every flag can also come from an `AGORA_<FLAG>`
//! environment variable (e.g. `--agent-timeout` from `AGORA_AGENT_TIMEOUT`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agora",
    version,
    about = "Agora: a two-level resource-offer cluster platform",
    long_about = "Agora pools the resources of many agents and offers them to frameworks.\n\
                  Run `agora dev` for a one-process cluster, or `agora master` and `agora agent` on your hosts."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole platform in one process (no ZooKeeper needed): a
    /// master, an agent, the services and batch frameworks, and the web UI.
    Dev(DevArgs),
    /// Run a master.
    Master(MasterArgs),
    /// Run an agent.
    Agent(AgentArgs),
    /// Run one task on the cluster and follow it to its end (like mesos-execute).
    Execute(ExecuteArgs),
    /// List the agents the master knows.
    Agents(ListArgs),
    /// List the frameworks the master knows.
    Frameworks(ListArgs),
    /// List tasks.
    Tasks(TasksArgs),
    /// Run the services framework (long-running apps, Marathon's REST API).
    Services(ServicesArgs),
    /// Manage apps of the services framework: list, show, deploy, update, scale, restart, rollback, delete, tasks, kill.
    #[command(subcommand)]
    Apps(crate::apps::AppsCommand),
    /// The services framework's deployments: list, cancel (roll back).
    #[command(subcommand)]
    Deployments(crate::apps::DeploymentsCommand),
    /// Run the batch framework (one-off and cron jobs, REST API in Metronome's shape).
    Batch(BatchArgs),
    /// Manage batch jobs: list, show, create, update, run, runs, logs, stop, delete.
    #[command(subcommand)]
    Jobs(crate::jobs::JobsCommand),
    /// Measure: allocation cycles, launch throughput, Docker launches, failover, health checks.
    #[command(subcommand)]
    Bench(agora_bench::BenchCommand),
    /// Internal: the supervisor process of one task (started by the agent).
    #[command(hide = true, name = "task-supervisor")]
    TaskSupervisor {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

use agora_proto::parse_duration;

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// Address for gRPC and HTTP (agents, frameworks, CLI and UI use this one address).
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Hostname the master advertises (default: the listen IP).
    #[arg(long, env = "AGORA_HOSTNAME")]
    pub hostname: Option<String>,
    /// An agent not heard from for this long is unreachable.
    #[arg(long, env = "AGORA_AGENT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub agent_timeout: Duration,
    /// Time between periodic allocation cycles.
    #[arg(long, env = "AGORA_ALLOCATION_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub allocation_interval: Duration,
    /// Rescind offers outstanding this long (default: never).
    #[arg(long, env = "AGORA_OFFER_TIMEOUT", value_parser = parse_duration)]
    pub offer_timeout: Option<Duration>,
    /// Role weights for fair sharing, e.g. `web=3,batch=1` (default weight 1).
    #[arg(long, env = "AGORA_WEIGHTS", default_value = "")]
    pub weights: String,
    /// Keep the registry (frameworks and agents) in this directory so a
    /// restarted master remembers them (default: in memory).
    #[arg(long, env = "AGORA_REGISTRY_DIR", conflicts_with = "zk")]
    pub registry_dir: Option<PathBuf>,
    /// Run as one of several masters that elect a leader through ZooKeeper,
    /// e.g. `zk://h1:2181,h2:2181/agora` (the registry then lives there too).
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// ZooKeeper session timeout: a leader cut off from ZooKeeper this long
    /// is replaced (it steps down after a third of it).
    #[arg(long, env = "AGORA_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The master: host:port, or zk://host:port,.../path to follow the
    /// leading master through ZooKeeper.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Address of the agent's HTTP server (state, task logs).
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Resources to offer, e.g. `cpus:4;mem:8192;disk:10000;ports:[31000-32000]`
    /// (default: detected from this host).
    #[arg(long, env = "AGORA_RESOURCES")]
    pub resources: Option<String>,
    /// Attributes, e.g. `rack:r1;zone:a`.
    #[arg(long, env = "AGORA_ATTRIBUTES", default_value = "")]
    pub attributes: String,
    /// Where the agent keeps its state and the tasks' sandboxes.
    #[arg(long, env = "AGORA_WORK_DIR", default_value = "/var/lib/agora/agent")]
    pub work_dir: PathBuf,
    /// Hostname the agent advertises (default: this host's name).
    #[arg(long, env = "AGORA_HOSTNAME")]
    pub hostname: Option<String>,
    /// Time between SIGTERM and SIGKILL when a task is killed and does not say.
    #[arg(long, env = "AGORA_KILL_GRACE", default_value = "3s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// How many tasks' health and readiness checks may run at once (more
    /// that are due start late).
    #[arg(long, env = "AGORA_HEALTH_CHECK_CONCURRENCY", default_value_t = agora_agent::config::DEFAULT_HEALTH_CHECK_CONCURRENCY)]
    pub health_check_concurrency: usize,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// What runs tasks, and how Docker tasks run (agent and dev).
#[derive(Debug, Args)]
pub struct DockerArgs {
    /// Containerizers, in the order each task is offered to them:
    /// `docker,process`, `process` or `docker` (default: `docker,process`
    /// when a Docker daemon answers, else `process`).
    #[arg(long, env = "AGORA_CONTAINERIZERS")]
    pub containerizers: Option<String>,
    /// The Docker daemon: a socket path, unix:///path or tcp://host:port
    /// (default: $DOCKER_HOST, else /var/run/docker.sock).
    #[arg(long, env = "AGORA_DOCKER_SOCKET")]
    pub docker_socket: Option<String>,
    /// Host directories Docker tasks may mount as volumes, comma-separated
    /// (default: none; paths relative to the sandbox are always allowed).
    #[arg(
        long,
        env = "AGORA_DOCKER_VOLUME_ROOTS",
        value_delimiter = ',',
        value_name = "DIR,..."
    )]
    pub docker_volume_roots: Vec<PathBuf>,
    /// Let Docker tasks run privileged containers.
    #[arg(long, env = "AGORA_DOCKER_ALLOW_PRIVILEGED")]
    pub docker_allow_privileged: bool,
    /// How long an ended task's container (and `docker logs` of it) is kept
    /// after its final status was acknowledged.
    #[arg(long, env = "AGORA_DOCKER_REMOVE_DELAY", default_value = "1h", value_parser = parse_duration)]
    pub docker_remove_delay: Duration,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the master's registry and the agent's state live.
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "./.agora")]
    pub data_dir: PathBuf,
    /// The master's address (gRPC and HTTP).
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// The agent's HTTP address.
    #[arg(long, env = "AGORA_AGENT_LISTEN", default_value = "127.0.0.1:5051")]
    pub agent_listen: SocketAddr,
    /// The services framework's REST API (Marathon's; port 0: any free port).
    #[arg(long, env = "AGORA_SERVICES_LISTEN", default_value = "127.0.0.1:8080")]
    pub services_listen: SocketAddr,
    /// The batch framework's REST API.
    #[arg(long, env = "AGORA_BATCH_LISTEN", default_value = "127.0.0.1:9000")]
    pub batch_listen: SocketAddr,
    /// Resources the agent offers (default: detected from this host).
    #[arg(long, env = "AGORA_RESOURCES")]
    pub resources: Option<String>,
    /// The agent's attributes.
    #[arg(long, env = "AGORA_ATTRIBUTES", default_value = "")]
    pub attributes: String,
    #[command(flatten)]
    pub docker: DockerArgs,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// The master: host:port, or zk://host:port,.../path to follow the
    /// leading master through ZooKeeper.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// The task's name.
    #[arg(long, env = "AGORA_NAME")]
    pub name: String,
    /// The shell command to run.
    #[arg(long, env = "AGORA_COMMAND")]
    pub command: String,
    /// Resources for the task.
    #[arg(long, env = "AGORA_RESOURCES", default_value = "cpus:0.1;mem:32")]
    pub resources: String,
    /// Environment variables for the task, `K=V` (repeatable; in
    /// `AGORA_ENV`, separated by commas).
    #[arg(
        long = "env",
        value_name = "K=V",
        env = "AGORA_ENV",
        value_delimiter = ','
    )]
    pub env: Vec<String>,
    /// The role to run in.
    #[arg(long, env = "AGORA_ROLE", default_value = "*")]
    pub role: String,
    /// Run the task in this Docker image.
    #[arg(long, env = "AGORA_DOCKER_IMAGE")]
    pub docker_image: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The master: host:port, http://host:port, or zk://host:port,.../path
    /// to ask the leading master.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Print JSON instead of a table.
    #[arg(long, env = "AGORA_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// The master: host:port, or zk://host:port,.../path to follow the
    /// leading master through ZooKeeper.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Address of the REST API (port 0: any free port).
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Run as one of several instances electing a leader through ZooKeeper,
    /// e.g. `zk://h1:2181,h2:2181/agora-services`; apps, deployments and
    /// instances then live in ZooKeeper (`<path>-registry`).
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// ZooKeeper session timeout: a dead leader is replaced after about this long.
    #[arg(long, env = "AGORA_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// Without --zk: where the store (`services/store.redb`) is kept.
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "/var/lib/agora")]
    pub data_dir: PathBuf,
    /// The role whose resources apps use (besides unreserved ones).
    #[arg(long, env = "AGORA_ROLE", default_value = "*")]
    pub role: String,
    /// How long the master keeps the framework's tasks while no instance is connected.
    #[arg(long, env = "AGORA_FAILOVER_TIMEOUT", default_value = "168h", value_parser = parse_duration)]
    pub failover_timeout: Duration,
    /// How often every task's state is asked of the master, to heal a missed update.
    #[arg(long, env = "AGORA_RECONCILIATION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub reconciliation_interval: Duration,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The master: host:port, or zk://host:port,.../path to follow the
    /// leading master through ZooKeeper.
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Address of the REST API (port 0: any free port).
    #[arg(long, env = "AGORA_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Run as one of several instances electing a leader through ZooKeeper,
    /// e.g. `zk://h1:2181,h2:2181/agora-batch`; jobs and runs then live in
    /// ZooKeeper (`<path>-registry`).
    #[arg(long, env = "AGORA_ZK")]
    pub zk: Option<String>,
    /// ZooKeeper session timeout: a dead leader is replaced after about this long.
    #[arg(long, env = "AGORA_ZK_SESSION_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub zk_session_timeout: Duration,
    /// Without --zk: where the store (a redb file) is kept.
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "/var/lib/agora/batch")]
    pub data_dir: PathBuf,
    /// The role whose resources runs use.
    #[arg(long, env = "AGORA_ROLE", default_value = "*")]
    pub role: String,
    /// Ended runs kept per job (the newest).
    #[arg(long, env = "AGORA_HISTORY_COUNT", default_value_t = 10)]
    pub history_count: usize,
    /// Ended runs older than this are removed.
    #[arg(long, env = "AGORA_HISTORY_AGE", default_value = "168h", value_parser = parse_duration)]
    pub history_age: Duration,
    /// How long the master keeps the framework's tasks while no instance is connected.
    #[arg(long, env = "AGORA_FAILOVER_TIMEOUT", default_value = "168h", value_parser = parse_duration)]
    pub failover_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Also list ended tasks.
    #[arg(long, env = "AGORA_ALL")]
    pub all: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
