//! Containerizers: what runs a task, behind one interface.
//!
//! The agent's core decides *what* happens to a task (launch, kill, which
//! status to report); a [`Containerizer`] does it for one kind of container.
//! Implementations: [`ProcessContainerizer`] (plain processes, each under a
//! detached supervisor that outlives the agent), [`DockerContainerizer`]
//! (Docker containers through the Engine API), and
//! [`ComposingContainerizer`], which hands each task to the first of its
//! members that [`supports`](Containerizer::supports) it. The agent records
//! which containerizer runs each task ([`Containerizer::name_for`]) so that
//! recovery goes back to the same one.

mod composing;
mod docker;
mod process;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::{CommandInfo, TaskInfo};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

pub use composing::ComposingContainerizer;
pub use docker::{
    DockerContainerizer, DockerSettings, LABEL_AGENT_ID, LABEL_CONTAINER_ID, LABEL_FRAMEWORK_ID,
    LABEL_TASK_ID, LABEL_WORK_DIR, SANDBOX_IN_CONTAINER, connect_docker, container_name,
    default_docker_host,
};
pub use process::ProcessContainerizer;

/// Names one run of one task; fresh for every launch (uuid v4), so that a
/// task id used again later gets a new container and a new sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn random() -> ContainerId {
        ContainerId(uuid::Uuid::new_v4().to_string())
    }

    /// A container id read back from a checkpoint; it must be a safe path
    /// component.
    pub fn parse(id: &str) -> Result<ContainerId, AgentError> {
        crate::paths::validate_id("container id", id)?;
        Ok(ContainerId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a containerizer needs to start a task.
#[derive(Clone, Debug)]
pub struct LaunchRequest {
    pub container_id: ContainerId,
    pub framework_id: String,
    pub agent_id: String,
    /// The agent's hostname (exported to the task as `HOST`).
    pub hostname: String,
    pub task: TaskInfo,
    /// The task's working directory; it exists when `launch` is called.
    pub sandbox: PathBuf,
}

/// A container that runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    /// The pid of the task's main process, where there is one to show.
    pub pid: Option<i32>,
    /// Facts the containerizer wants checkpointed with the task (shown in
    /// `/state`, handed back to `recover`).
    pub checkpoint: serde_json::Value,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Termination {
    /// The task's process exited with this code.
    Exited { code: i32 },
    /// The task's process was killed by this signal.
    Signaled { signal: i32 },
    /// The task could not be started.
    LaunchFailed { message: String },
    /// The container disappeared without leaving an exit status.
    Vanished { message: String },
    /// The container's main process was killed by the kernel because the
    /// container used more memory than its limit (the exit code is what the
    /// container runtime reported, usually 137).
    OomKilled { code: i32 },
    /// The agent cannot follow the container (its runtime does not answer,
    /// or is not there); it may still run. Reported `TASK_LOST`, never
    /// `TASK_FAILED`.
    Lost { message: String },
    /// The containerizer refused to run the task as asked (a volume outside
    /// the allowed roots, privileged mode where it is not allowed, ...): the
    /// task itself is wrong, and reported `TASK_ERROR`.
    Refused { message: String },
}

/// What `recover` found of a container the agent had checkpointed.
#[derive(Clone, Debug, PartialEq)]
pub enum Recovered {
    /// It still runs; the agent waits for it again.
    Running(Launched),
    /// It ended while the agent was away.
    Ended(Termination),
}

/// A container the agent knew before it restarted.
#[derive(Clone, Debug)]
pub struct KnownContainer {
    pub container_id: ContainerId,
    /// The containerizer recorded for it (what
    /// [`Containerizer::name_for`] said at launch), so that a composing
    /// containerizer hands it back to the member that ran it.
    pub containerizer: String,
    pub sandbox: PathBuf,
    /// What `launch` returned as `checkpoint`, when the agent got to save it.
    pub checkpoint: Option<serde_json::Value>,
}

/// How a health-check command run beside (or inside) a task's container
/// ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckExit {
    /// It exited with this code; `output` is the end of what it wrote.
    Exited { code: i32, output: String },
    /// A signal ended it.
    Signaled { signal: i32, output: String },
    /// It did not end within its timeout (and was killed where that is
    /// possible).
    TimedOut,
}

/// How much of a check command's output is kept (its last bytes).
pub const CHECK_OUTPUT_KEPT: usize = 1024;

/// The end of `bytes` (at most [`CHECK_OUTPUT_KEPT`]), as trimmed text.
pub fn output_tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(CHECK_OUTPUT_KEPT);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// Resource usage of a running container (best effort).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Runs tasks of one kind. All methods may be called concurrently.
#[async_trait]
pub trait Containerizer: Send + Sync + 'static {
    /// A short stable name (`process`, `docker`), checkpointed with each task.
    fn name(&self) -> &'static str;

    /// Whether this containerizer can run `task` (a composing containerizer
    /// asks its members in order).
    fn supports(&self, task: &TaskInfo) -> bool;

    /// The name checkpointed with a task this containerizer launches: its
    /// own name, or for a composing containerizer the name of the member
    /// that runs the task.
    fn name_for(&self, _task: &TaskInfo) -> &'static str {
        self.name()
    }

    /// Whether this containerizer can recover a container that was recorded
    /// as run by `containerizer` (its own name, or one of its members').
    fn recovers(&self, containerizer: &str) -> bool {
        containerizer == self.name()
    }

    /// After an agent restart: finds each known container again. Every
    /// known container gets an answer (in the same order); containers this
    /// containerizer finds that nobody knows any more are killed.
    async fn recover(&self, known: Vec<KnownContainer>) -> Result<Vec<Recovered>, AgentError>;

    /// Starts the task; returns once it runs (or could not start).
    async fn launch(&self, request: LaunchRequest) -> Result<Launched, AgentError>;

    /// Waits until the container has ended.
    async fn wait(&self, id: &ContainerId) -> Result<Termination, AgentError>;

    /// Asks the task to stop (SIGTERM), and forces it (SIGKILL) after
    /// `grace`. Returns once the task has ended or the forced kill was sent.
    async fn kill(&self, id: &ContainerId, grace: Duration) -> Result<(), AgentError>;

    /// Current resource usage.
    async fn usage(&self, id: &ContainerId) -> Result<Usage, AgentError>;

    /// Runs a health-check command beside the container's task (a process
    /// task: in its sandbox, with its environment) or inside it (a Docker
    /// task), and waits for it at most `timeout`.
    async fn run_check(
        &self,
        id: &ContainerId,
        command: &CommandInfo,
        timeout: Duration,
    ) -> Result<CheckExit, AgentError> {
        let _ = (command, timeout);
        Err(AgentError::Check(format!(
            "the `{}` containerizer cannot run check commands (container {id})",
            self.name()
        )))
    }

    /// The containers this containerizer currently watches.
    async fn containers(&self) -> Vec<ContainerId>;

    /// Forgets an ended container and frees what it keeps on disk (not the
    /// sandbox, which the agent owns).
    async fn remove(&self, id: &ContainerId) -> Result<(), AgentError>;

    /// The final status of the container's task was acknowledged: the agent
    /// will not ask about this container again (its sandbox stays until the
    /// sandbox GC, which then calls [`remove`](Containerizer::remove)).
    /// Returns at once; a containerizer that keeps something for a while
    /// after this (the Docker one keeps the stopped container for
    /// `docker_remove_delay`) schedules that itself.
    async fn released(&self, _id: &ContainerId) {}
}

/// The argv of a task's command. Shell commands (`shell` unset or true, as in
/// Mesos) run as `/bin/sh -c value`; otherwise `value` is the executable and
/// `arguments` its argv (Mesos's convention: `arguments[0]` is argv[0]; with
/// no arguments, argv is `[value]`). Returns `(program, argv)`.
pub fn command_argv(command: &CommandInfo) -> Result<(String, Vec<String>), String> {
    if command.value.is_empty() {
        return Err(
            "the task's command has no value: give a shell command or an executable".into(),
        );
    }
    if command.shell.unwrap_or(true) {
        Ok((
            "/bin/sh".into(),
            vec!["sh".into(), "-c".into(), command.value.clone()],
        ))
    } else if command.arguments.is_empty() {
        Ok((command.value.clone(), vec![command.value.clone()]))
    } else {
        Ok((command.value.clone(), command.arguments.clone()))
    }
}

/// Variables of the agent's own environment a task inherits (everything else
/// of the agent's environment is not passed on).
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of a task: a few variables of the agent's environment
/// (`PATH`, `HOME`, `LANG`, ...), then `AGORA_SANDBOX` and `MESOS_SANDBOX`,
/// `AGORA_TASK_ID`, `AGORA_FRAMEWORK_ID`, `AGORA_AGENT_ID`, `HOST`, and for the
/// task's `ports` resource `PORTS` (comma-separated), `PORT0..PORTn` and
/// `PORT` (= `PORT0`); then the task's own variables, which win.
pub fn task_environment(
    request: &LaunchRequest,
    inherited: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for name in INHERITED_ENV {
        if let Some(v) = inherited(name) {
            set_var(&mut env, name, v);
        }
    }
    if inherited("PATH").is_none() {
        set_var(&mut env, "PATH", DEFAULT_PATH.into());
    }
    let sandbox = request.sandbox.to_string_lossy().into_owned();
    for (k, v) in agora_environment(request, &sandbox) {
        set_var(&mut env, &k, v);
    }
    env
}

/// Sets `k` in `env`, in place when it is already there.
pub(crate) fn set_var(env: &mut Vec<(String, String)>, k: &str, v: String) {
    if let Some(slot) = env.iter_mut().find(|(key, _)| key == k) {
        slot.1 = v;
    } else {
        env.push((k.to_string(), v));
    }
}

/// The variables Agora gives every task, whatever runs it: `AGORA_SANDBOX`
/// and `MESOS_SANDBOX` (= `sandbox`, as the task sees it), the ids, `HOST`,
/// the ports, then the task's own variables (which win).
pub fn agora_environment(request: &LaunchRequest, sandbox: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| set_var(&mut env, k, v);
    let sandbox = sandbox.to_string();
    set("AGORA_SANDBOX", sandbox.clone());
    set("MESOS_SANDBOX", sandbox);
    set("AGORA_TASK_ID", request.task.task_id.clone());
    set("AGORA_FRAMEWORK_ID", request.framework_id.clone());
    set("AGORA_AGENT_ID", request.agent_id.clone());
    set("HOST", request.hostname.clone());
    let ports: Vec<u64> = Resources::from_proto(&request.task.resources)
        .map(|r| {
            r.ports()
                .ranges()
                .iter()
                .flat_map(|&(b, e)| b..=e)
                .take(4096)
                .collect()
        })
        .unwrap_or_default();
    if !ports.is_empty() {
        set(
            "PORTS",
            ports
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        set("PORT", ports[0].to_string());
        for (i, p) in ports.iter().enumerate() {
            set(&format!("PORT{i}"), p.to_string());
        }
    }
    if let Some(vars) = request
        .task
        .command
        .as_ref()
        .and_then(|c| c.environment.as_ref())
    {
        for v in &vars.variables {
            if !v.name.is_empty() && !v.name.contains('=') && !v.name.contains('\0') {
                set(&v.name, v.value.clone());
            }
        }
    }
    env
}

/// The name of a signal (`SIGKILL`), or its number.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::{Environment, environment::Variable};

    fn request(resources: &str) -> LaunchRequest {
        LaunchRequest {
            container_id: ContainerId::random(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            hostname: "node1".into(),
            task: TaskInfo {
                task_id: "t1".into(),
                resources: Resources::parse(resources).unwrap().to_proto(),
                command: Some(CommandInfo {
                    value: "true".into(),
                    environment: Some(Environment {
                        variables: vec![
                            Variable {
                                name: "GREETING".into(),
                                value: "hi".into(),
                            },
                            Variable {
                                name: "PATH".into(),
                                value: "/opt/bin".into(),
                            },
                            Variable {
                                name: "BAD=NAME".into(),
                                value: "x".into(),
                            },
                        ],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            sandbox: PathBuf::from("/w/sandboxes/f1/t1/c1"),
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn environment_has_ids_sandbox_ports_and_the_tasks_variables() {
        let env = task_environment(&request("cpus:1;ports:[31000-31001,31005-31005]"), |k| {
            (k == "HOME").then(|| "/root".to_string())
        });
        assert_eq!(get(&env, "AGORA_SANDBOX"), Some("/w/sandboxes/f1/t1/c1"));
        assert_eq!(get(&env, "MESOS_SANDBOX"), Some("/w/sandboxes/f1/t1/c1"));
        assert_eq!(get(&env, "AGORA_TASK_ID"), Some("t1"));
        assert_eq!(get(&env, "AGORA_FRAMEWORK_ID"), Some("f1"));
        assert_eq!(get(&env, "AGORA_AGENT_ID"), Some("a1"));
        assert_eq!(get(&env, "HOST"), Some("node1"));
        assert_eq!(get(&env, "PORTS"), Some("31000,31001,31005"));
        assert_eq!(get(&env, "PORT"), Some("31000"));
        assert_eq!(get(&env, "PORT2"), Some("31005"));
        assert_eq!(get(&env, "PORT3"), None);
        assert_eq!(get(&env, "GREETING"), Some("hi"));
        assert_eq!(
            get(&env, "PATH"),
            Some("/opt/bin"),
            "the task's variables win"
        );
        assert_eq!(get(&env, "HOME"), Some("/root"));
        assert_eq!(get(&env, "BAD=NAME"), None);
        let names: Vec<_> = env.iter().map(|(k, _)| k).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len(), "each variable once");

        let mut bare = request("cpus:1");
        bare.task.command = None;
        let env = task_environment(&bare, |_| None);
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env, "PORTS"), None);
    }

    #[test]
    fn argv_follows_mesos_shell_rules() {
        let mut c = CommandInfo {
            value: "echo hi".into(),
            ..Default::default()
        };
        assert_eq!(
            command_argv(&c).unwrap(),
            (
                "/bin/sh".into(),
                vec!["sh".into(), "-c".into(), "echo hi".into()]
            )
        );
        c.shell = Some(false);
        c.value = "/bin/echo".into();
        assert_eq!(
            command_argv(&c).unwrap(),
            ("/bin/echo".into(), vec!["/bin/echo".into()])
        );
        c.arguments = vec!["echo".into(), "a b".into()];
        assert_eq!(command_argv(&c).unwrap().1, ["echo", "a b"]);
        c.value.clear();
        assert!(command_argv(&c).unwrap_err().contains("no value"));
    }

    #[test]
    fn container_ids_are_safe_path_components() {
        let id = ContainerId::random();
        assert_eq!(ContainerId::parse(id.as_str()).unwrap(), id);
        assert!(ContainerId::parse("../x").is_err());
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(999), "signal 999");
    }
}
