//! The agent's configuration, validated before anything is bound or started.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::Attribute;
use nix::sys::statvfs::statvfs;

use crate::error::AgentError;

/// Default HTTP address of an agent (Mesos's agent port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5051";

/// Everything an agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The master: `host:port` or `http://host:port`, or
    /// `zk://host:port,.../path` to find and follow the leading master
    /// through ZooKeeper.
    pub master: String,
    /// Where the HTTP server (`/health`, `/state`, task logs) listens; port 0
    /// picks a free port.
    pub listen: SocketAddr,
    /// What the agent offers. `None`: detect (see [`detect_resources`]);
    /// given: these, with cpus, mem, disk and ports detected for any of them
    /// left out (as Mesos does).
    pub resources: Option<Resources>,
    /// Attributes, for placement constraints.
    pub attributes: Vec<Attribute>,
    /// Checkpoints, sandboxes and task supervisors' files. Keep it across
    /// restarts: it is how a restarted agent finds its tasks.
    pub work_dir: PathBuf,
    /// The name this agent is known by (offers, `/state`, `HOST` of tasks).
    pub hostname: String,
    /// The argv prefix that starts a task supervisor; the agent appends
    /// `--run-dir DIR`. The `agora` binary uses `[itself, "task-supervisor"]`.
    pub supervisor_command: Vec<OsString>,
    /// SIGTERM to SIGKILL, for tasks without a kill policy.
    pub default_kill_grace: Duration,
    /// First and longest wait before an unacknowledged status update is sent
    /// again (doubling in between).
    pub status_retry_min: Duration,
    pub status_retry_max: Duration,
    /// First and longest wait before reconnecting to the master (doubling,
    /// jittered).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long a finished task's sandbox (its files and logs) is kept after
    /// its final update was acknowledged.
    pub sandbox_gc_delay: Duration,
    /// What runs tasks, in the order each is asked whether it can run a
    /// task. `None`: `docker,process` when a Docker daemon answers at start,
    /// else `process` alone.
    pub containerizers: Option<Vec<ContainerizerKind>>,
    /// The Docker daemon: `unix:///var/run/docker.sock`, a socket path, or
    /// `tcp://host:port`. `None`: `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
    /// Host directories Docker tasks may mount as volumes (anything else is
    /// refused; paths relative to the sandbox are always allowed).
    pub docker_volume_roots: Vec<PathBuf>,
    /// Whether Docker tasks may run privileged containers.
    pub docker_allow_privileged: bool,
    /// How long an ended Docker container (and so `docker logs` of it) is
    /// kept after its task's final status was acknowledged. Its stdout and
    /// stderr stay in the sandbox for `sandbox_gc_delay` either way.
    pub docker_remove_delay: Duration,
    /// How long a Docker launch (image pull included) may take before it is
    /// given up (`TASK_FAILED`, and the container removed).
    pub docker_launch_timeout: Duration,
    /// With `containerizers` naming `docker`: how long the agent waits at
    /// start for a Docker daemon that does not answer (trying again) before
    /// it gives up starting.
    pub docker_wait: Duration,
    /// How many health and readiness checks may run at once on this agent
    /// (more that are due wait, and start late).
    pub health_check_concurrency: usize,
}

/// The default of [`AgentConfig::health_check_concurrency`].
pub const DEFAULT_HEALTH_CHECK_CONCURRENCY: usize = 256;
/// The most [`AgentConfig::health_check_concurrency`] may be.
pub const MAX_HEALTH_CHECK_CONCURRENCY: usize = 65_536;

/// A kind of containerizer (`--containerizers docker,process`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerizerKind {
    /// Tasks with a Docker container, through the Docker daemon.
    Docker,
    /// Plain commands, each under a detached supervisor.
    Process,
}

impl ContainerizerKind {
    pub fn name(self) -> &'static str {
        match self {
            ContainerizerKind::Docker => "docker",
            ContainerizerKind::Process => "process",
        }
    }
}

/// Reads `docker,process` (in the order the containerizers are asked).
pub fn parse_containerizers(text: &str) -> Result<Vec<ContainerizerKind>, AgentError> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = match name {
            "docker" => ContainerizerKind::Docker,
            "process" => ContainerizerKind::Process,
            other => {
                return Err(AgentError::config(
                    "containerizers",
                    format!(
                        "`{other}` is not a containerizer: use docker, process or both (docker,process)"
                    ),
                ));
            }
        };
        if out.contains(&kind) {
            return Err(AgentError::config(
                "containerizers",
                format!("`{name}` is given twice"),
            ));
        }
        out.push(kind);
    }
    if out.is_empty() {
        return Err(AgentError::config(
            "containerizers",
            "is empty: give docker, process or both (docker,process)",
        ));
    }
    Ok(out)
}

impl AgentConfig {
    /// A configuration with the defaults: listen on 127.0.0.1:5051, detected
    /// resources, no attributes, this host's name, the supervisor started as
    /// `<this executable> task-supervisor`, a 3 s kill grace, status updates
    /// resent after 10 s doubling up to 10 min, reconnects after 1 s doubling
    /// up to 30 s, sandboxes kept 1 h, at most 256 health checks at once.
    pub fn new(master: impl Into<String>, work_dir: impl Into<PathBuf>) -> AgentConfig {
        let exe = std::env::current_exe()
            .map(PathBuf::into_os_string)
            .unwrap_or_else(|_| OsString::from("agora"));
        AgentConfig {
            master: master.into(),
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            resources: None,
            attributes: Vec::new(),
            work_dir: work_dir.into(),
            hostname: default_hostname(),
            supervisor_command: vec![exe, OsString::from("task-supervisor")],
            default_kill_grace: Duration::from_secs(3),
            status_retry_min: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            sandbox_gc_delay: Duration::from_secs(3600),
            containerizers: None,
            docker_host: None,
            docker_volume_roots: Vec::new(),
            docker_allow_privileged: false,
            docker_remove_delay: Duration::from_secs(3600),
            docker_launch_timeout: Duration::from_secs(600),
            docker_wait: Duration::from_secs(30),
            health_check_concurrency: DEFAULT_HEALTH_CHECK_CONCURRENCY,
        }
    }

    /// Checks the configuration; called before binding anything.
    pub fn validate(&self) -> Result<(), AgentError> {
        master_url(&self.master)?;
        if self.work_dir.as_os_str().is_empty() {
            return Err(AgentError::config(
                "work_dir",
                "is empty: give a directory for checkpoints and sandboxes, e.g. /var/lib/agora/agent",
            ));
        }
        if self.hostname.trim().is_empty() {
            return Err(AgentError::config(
                "hostname",
                "is empty: give the name of this host",
            ));
        }
        if self.supervisor_command.is_empty() || self.supervisor_command[0].is_empty() {
            return Err(AgentError::config(
                "supervisor_command",
                "is empty: give the command that starts a task supervisor, e.g. `agora task-supervisor`",
            ));
        }
        for (field, min, max) in [
            (
                "status_retry_min/max",
                self.status_retry_min,
                self.status_retry_max,
            ),
            ("reconnect_min/max", self.reconnect_min, self.reconnect_max),
        ] {
            if min.is_zero() || min > max {
                return Err(AgentError::config(
                    field,
                    format!("need 0 < min <= max, got {min:?} and {max:?}"),
                ));
            }
        }
        if let Some(r) = &self.resources {
            for res in r.iter() {
                crate::paths::validate_id("resource name", &res.name).map_err(|_| {
                    AgentError::config(
                        "resources",
                        format!("`{}` is not a valid resource name", res.name),
                    )
                })?;
            }
        }
        if !(1..=MAX_HEALTH_CHECK_CONCURRENCY).contains(&self.health_check_concurrency) {
            return Err(AgentError::config(
                "health_check_concurrency",
                format!(
                    "is {}; give a number of checks from 1 to {MAX_HEALTH_CHECK_CONCURRENCY}",
                    self.health_check_concurrency
                ),
            ));
        }
        for a in &self.attributes {
            if a.name.is_empty() || a.value.is_none() {
                return Err(AgentError::config(
                    "attributes",
                    format!("attribute {a:?} needs a name and a value, e.g. rack:r1"),
                ));
            }
        }
        self.validate_docker()
    }

    fn validate_docker(&self) -> Result<(), AgentError> {
        if let Some(kinds) = &self.containerizers {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            parse_containerizers(&names.join(","))?;
        }
        if let Some(host) = &self.docker_host {
            let h = host.trim();
            let ok = h.starts_with('/')
                || ["unix://", "tcp://", "http://"]
                    .iter()
                    .any(|scheme| h.len() > scheme.len() && h.starts_with(scheme));
            if !ok {
                return Err(AgentError::config(
                    "docker_host",
                    format!(
                        "`{host}` is not a Docker daemon address: give a socket path \
                         (/var/run/docker.sock), unix:///path or tcp://host:port"
                    ),
                ));
            }
        }
        for root in &self.docker_volume_roots {
            if !root.is_absolute() || root.parent().is_none() {
                return Err(AgentError::config(
                    "docker_volume_roots",
                    format!(
                        "`{}` must be an absolute directory other than /, e.g. /srv/data",
                        root.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The master's address as a URL tonic can dial (`http://host:port`), or a
/// checked `zk://host:port,.../path` to find the leader through ZooKeeper.
pub fn master_url(master: &str) -> Result<String, AgentError> {
    let m = master.trim();
    let bad = |why: &str| AgentError::config("master", format!("`{master}` {why}"));
    if m.is_empty() {
        return Err(bad(
            "is empty: give the master as host:port, e.g. 127.0.0.1:5050",
        ));
    }
    if agora_coord::ZkUrl::is_zk(m) {
        // The leader is found (and followed) through ZooKeeper.
        return agora_coord::ZkUrl::parse(m)
            .map(|u| u.to_string())
            .map_err(|e| AgentError::config("master", e.to_string()));
    }
    if m.starts_with("https://") {
        return Err(bad(
            "uses https, which the agent does not speak yet: use host:port",
        ));
    }
    let rest = m.strip_prefix("http://").unwrap_or(m).trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("has no port: write it as host:port, e.g. 127.0.0.1:5050"))?;
    if host.is_empty() || host.contains('/') || host.contains(' ') {
        return Err(bad(
            "has no valid host: write it as host:port, e.g. 127.0.0.1:5050",
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(format!("http://{host}:{port}")),
        _ => Err(bad(
            "has no valid port: write it as host:port, e.g. 127.0.0.1:5050",
        )),
    }
}

/// This host's name, or `localhost`.
pub fn default_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The default port range an agent offers (Mesos's).
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// This host's resources, as Mesos computes them: every CPU the agent may
/// use; memory less what the system needs (1 GiB, or half of it below
/// 2 GiB); the disk of the work directory's filesystem less 5 GiB (or half
/// of it below 10 GiB); ports 31000-32000. Memory and disk are in MB.
pub fn detect_resources(work_dir: &Path) -> Resources {
    const GB: f64 = 1024.0;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mem_total = total_memory_mb();
    let mem = if mem_total >= 2.0 * GB {
        mem_total - GB
    } else {
        mem_total / 2.0
    };
    // The work dir may not exist yet; measure the closest existing parent.
    let mut probe = work_dir.to_path_buf();
    while !probe.exists() && probe.pop() {}
    let disk_total = statvfs(if probe.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &probe
    })
    .map(|s| s.blocks() as f64 * s.fragment_size() as f64 / (1024.0 * 1024.0))
    .unwrap_or(0.0);
    let disk = if disk_total >= 10.0 * GB {
        disk_total - 5.0 * GB
    } else {
        disk_total / 2.0
    };
    let text = format!(
        "cpus:{cpus};mem:{};disk:{};ports:[{}-{}]",
        mem.floor(),
        disk.floor(),
        DEFAULT_PORTS.0,
        DEFAULT_PORTS.1
    );
    Resources::parse(&text).unwrap_or_default()
}

fn total_memory_mb() -> f64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total() as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

/// The resources to offer: the configured ones, with cpus, mem, disk and
/// ports detected when not given.
pub fn effective_resources(configured: Option<&Resources>, work_dir: &Path) -> Resources {
    let detected = detect_resources(work_dir);
    let Some(configured) = configured else {
        return detected;
    };
    let mut out = configured.clone();
    for r in detected.iter() {
        if !configured.iter().any(|c| c.name == r.name) {
            let _ = out.try_add_resource(r.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses() {
        assert_eq!(
            master_url("127.0.0.1:5050").unwrap(),
            "http://127.0.0.1:5050"
        );
        assert_eq!(master_url(" http://m1:5050/ ").unwrap(), "http://m1:5050");
        assert_eq!(master_url("[::1]:5050").unwrap(), "http://[::1]:5050");
        assert_eq!(
            master_url(" zk://z1:2181,z2/agora ").unwrap(),
            "zk://z1:2181,z2:2181/agora"
        );
        for (bad, needle) in [
            ("", "empty"),
            ("m1", "no port"),
            ("m1:x", "valid port"),
            ("m1:0", "valid port"),
            (":5050", "valid host"),
            ("zk://z1:2181", "ZooKeeper address"),
            ("zk://z1:99999/agora", "port"),
            ("https://m1:5050", "https"),
        ] {
            let e = master_url(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_says_what_is_wrong() {
        let ok = AgentConfig::new("127.0.0.1:5050", "/tmp/w");
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.status_retry_min = Duration::from_secs(5);
        c.status_retry_max = Duration::from_secs(1);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("status_retry")
        );
        let mut c = ok.clone();
        c.supervisor_command.clear();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("supervisor_command")
        );
        let mut c = ok.clone();
        c.work_dir = PathBuf::new();
        assert!(c.validate().unwrap_err().to_string().contains("work_dir"));
        let mut c = ok;
        c.master = "nowhere".into();
        assert!(c.validate().unwrap_err().to_string().contains("host:port"));
    }

    #[test]
    fn containerizers_and_docker_settings() {
        use ContainerizerKind::*;
        assert_eq!(
            parse_containerizers("docker,process").unwrap(),
            [Docker, Process]
        );
        assert_eq!(parse_containerizers(" process ").unwrap(), [Process]);
        for (bad, needle) in [
            ("", "empty"),
            ("docker,mesos", "`mesos` is not a containerizer"),
            ("process,process", "twice"),
        ] {
            let e = parse_containerizers(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let ok = AgentConfig::new("127.0.0.1:5050", "/tmp/w");
        assert_eq!(ok.containerizers, None, "auto-detected by default");
        let mut c = ok.clone();
        c.docker_host = Some("/var/run/docker.sock".into());
        c.validate().unwrap();
        c.docker_host = Some("tcp://10.0.0.1:2375".into());
        c.validate().unwrap();
        c.docker_host = Some("docker.example".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("docker_host")
        );
        let mut c = ok.clone();
        c.docker_volume_roots = vec![PathBuf::from("data")];
        assert!(c.validate().unwrap_err().to_string().contains("absolute"));
        c.docker_volume_roots = vec![PathBuf::from("/")];
        assert!(c.validate().is_err());
        let mut c = ok;
        c.containerizers = Some(vec![Docker, Docker]);
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn detects_this_hosts_resources() {
        let dir = tempfile::tempdir().unwrap();
        let r = detect_resources(&dir.path().join("not/yet/there"));
        assert!(r.cpus().as_f64() >= 1.0);
        assert!(r.mem().as_f64() > 0.0);
        assert!(r.disk().as_f64() > 0.0);
        assert_eq!(r.ports().ranges(), &[(31000, 32000)]);
    }

    #[test]
    fn configured_resources_win_and_the_rest_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let given = Resources::parse("cpus:2;gpus:1;ports:[5000-5001]").unwrap();
        let r = effective_resources(Some(&given), dir.path());
        assert_eq!(r.cpus().as_f64(), 2.0);
        assert_eq!(r.gpus().as_f64(), 1.0);
        assert_eq!(r.ports().ranges(), &[(5000, 5001)]);
        assert!(r.mem().as_f64() > 0.0);
    }
}
