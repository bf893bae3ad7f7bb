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
    /// Run a master and an agent in one process (no ZooKeeper needed).
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
    /// Measure: allocation cycles, launch throughput, Docker launches, failover.
    #[command(subcommand)]
    Bench(agora_bench::BenchCommand),
    /// Internal: the supervisor process of one task (started by the agent).
    #[command(hide = true, name = "task-supervisor")]
    TaskSupervisor {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Reads a duration: `15s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 15s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; use ms, s, m or h")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

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
    #[arg(long, env = "AGORA_REGISTRY_DIR")]
    pub registry_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The master's address (host:port).
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
    /// Resources the agent offers (default: detected from this host).
    #[arg(long, env = "AGORA_RESOURCES")]
    pub resources: Option<String>,
    /// The agent's attributes.
    #[arg(long, env = "AGORA_ATTRIBUTES", default_value = "")]
    pub attributes: String,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// The master's address (host:port).
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
    /// The master's address (host:port or http://host:port).
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Print JSON instead of a table.
    #[arg(long, env = "AGORA_JSON")]
    pub json: bool,
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
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
