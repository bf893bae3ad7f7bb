//! The container a Docker task asks for, as plain data: what the agent sends
//! the Docker daemon to create it, or why the task is refused. No I/O but
//! looking at volume paths on disk, so every rule is unit-tested.
//!
//! The rules follow Mesos's Docker containerizer (and so what Marathon users
//! expect):
//!
//! * command: `shell` unset or true runs `/bin/sh -c value` (the image's
//!   entrypoint is replaced); `shell: false` passes `value` (when set) and
//!   `arguments` to the image's own entrypoint; no command (or an empty one)
//!   runs the image's own entrypoint and command;
//! * the sandbox is mounted at `/mnt/mesos/sandbox` (`MESOS_SANDBOX`);
//! * `cpus` gives CPU shares (1024 per CPU) and a CFS quota (a hard limit),
//!   `mem` a memory limit without swap;
//! * networks HOST (the default), BRIDGE (with port mappings from the task's
//!   `ports`) and NONE;
//! * host volumes only under the agent's allowed roots (or relative to the
//!   sandbox); privileged mode only where the agent allows it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use agora_proto::Resources;
use agora_proto::v1::container_info::{DockerInfo, docker_info::Network};
use agora_proto::v1::{ContainerInfo, container_info, volume};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, PortMap};

use super::super::{LaunchRequest, agora_environment};

/// Where a Docker task finds its sandbox (Mesos's path, so images written
/// for Mesos work unchanged).
pub const SANDBOX_IN_CONTAINER: &str = "/mnt/mesos/sandbox";

/// Labels every container of the agent carries.
pub const LABEL_TASK_ID: &str = "agora.task_id";
pub const LABEL_FRAMEWORK_ID: &str = "agora.framework_id";
pub const LABEL_AGENT_ID: &str = "agora.agent_id";
pub const LABEL_CONTAINER_ID: &str = "agora.container_id";
/// The work directory of the agent that runs the container: an agent
/// recovers (and kills as orphans) only its own containers, so several
/// agents can share one Docker daemon.
pub const LABEL_WORK_DIR: &str = "agora.work_dir";

/// Docker parameters (`DockerInfo.parameters`) the agent understands.
const PARAMETERS: &[&str] = &["env", "label", "user", "workdir"];

/// What the spec needs to know about the agent.
#[derive(Clone, Debug)]
pub struct SpecRules {
    /// Host directories volumes may come from (canonical paths).
    pub volume_roots: Vec<PathBuf>,
    pub allow_privileged: bool,
    /// The agent's work directory (for [`LABEL_WORK_DIR`]).
    pub work_dir: String,
}

/// A container to create.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// `agora-<container id>`.
    pub name: String,
    pub image: String,
    pub force_pull: bool,
    pub body: ContainerCreateBody,
}

/// The name of the container that runs `container_id`.
pub fn container_name(container_id: &str) -> String {
    format!("agora-{container_id}")
}

/// The container for `request`, or why the task is refused (the message
/// says what is wrong and what to do).
pub fn container_spec(request: &LaunchRequest, rules: &SpecRules) -> Result<ContainerSpec, String> {
    let task = &request.task;
    let container = task
        .container
        .as_ref()
        .filter(|c| c.r#type() == container_info::Type::Docker)
        .ok_or("the task has no Docker container (container.type DOCKER)")?;
    let docker = container
        .docker
        .as_ref()
        .filter(|d| !d.image.trim().is_empty())
        .ok_or("the task's Docker container has no image (container.docker.image)")?;
    let image = docker.image.trim().to_string();
    let resources = Resources::from_proto(&task.resources)
        .map_err(|e| format!("the task's resources are invalid: {e}"))?;

    let (entrypoint, cmd) = command(request);
    let params = parameters(docker)?;

    let mut env: Vec<String> = agora_environment(request, SANDBOX_IN_CONTAINER)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.extend(params.env);

    let mut labels: HashMap<String, String> = task
        .labels
        .iter()
        .filter(|l| !l.key.is_empty())
        .map(|l| (l.key.clone(), l.value.clone()))
        .collect();
    labels.extend(params.labels);
    labels.insert(LABEL_TASK_ID.into(), task.task_id.clone());
    labels.insert(LABEL_FRAMEWORK_ID.into(), request.framework_id.clone());
    labels.insert(LABEL_AGENT_ID.into(), request.agent_id.clone());
    labels.insert(
        LABEL_CONTAINER_ID.into(),
        request.container_id.as_str().to_string(),
    );
    labels.insert(LABEL_WORK_DIR.into(), rules.work_dir.clone());

    if docker.privileged && !rules.allow_privileged {
        return Err(
            "privileged containers are not allowed on this agent (an operator can allow them \
             with the agent's --docker-allow-privileged)"
                .into(),
        );
    }

    let (network_mode, port_bindings) = network(docker, &resources)?;
    let mut binds = vec![format!(
        "{}:{SANDBOX_IN_CONTAINER}:rw",
        bind_path(&request.sandbox, "the sandbox")?
    )];
    for v in &container.volumes {
        binds.push(volume_bind(v, &request.sandbox, rules)?);
    }

    let mut host = HostConfig {
        binds: Some(binds),
        network_mode: Some(network_mode.into()),
        privileged: Some(docker.privileged),
        ..Default::default()
    };
    let cpus = resources.cpus().as_f64();
    if cpus > 0.0 {
        host.cpu_shares = Some(((cpus * 1024.0).round() as i64).max(2));
        host.cpu_period = Some(100_000);
        host.cpu_quota = Some(((cpus * 100_000.0).round() as i64).max(1000));
    }
    let mem = resources.mem().as_f64();
    if mem > 0.0 {
        let bytes = (mem * 1024.0 * 1024.0).round() as i64;
        host.memory = Some(bytes);
        host.memory_swap = Some(bytes);
    }
    let exposed: Vec<String> = port_bindings.keys().cloned().collect();
    if !port_bindings.is_empty() {
        host.port_bindings = Some(port_bindings);
    }
    let hostname = (!container.hostname.is_empty() && network_mode != "host")
        .then(|| container.hostname.clone());

    Ok(ContainerSpec {
        name: container_name(request.container_id.as_str()),
        image: image.clone(),
        force_pull: docker.force_pull_image,
        body: ContainerCreateBody {
            image: Some(image),
            entrypoint,
            cmd,
            env: Some(env),
            labels: Some(labels),
            hostname,
            user: params.user,
            working_dir: params.workdir,
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host),
            ..Default::default()
        },
    })
}

/// `(entrypoint, cmd)`: `None` keeps the image's own.
fn command(request: &LaunchRequest) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let Some(c) = request.task.command.as_ref() else {
        return (None, None);
    };
    if c.shell.unwrap_or(true) {
        if c.value.trim().is_empty() {
            return (None, None);
        }
        return (
            Some(vec!["/bin/sh".into(), "-c".into()]),
            Some(vec![c.value.clone()]),
        );
    }
    let mut argv = Vec::new();
    if !c.value.is_empty() {
        argv.push(c.value.clone());
    }
    argv.extend(c.arguments.iter().cloned());
    (None, (!argv.is_empty()).then_some(argv))
}

#[derive(Default)]
struct Parameters {
    env: Vec<String>,
    labels: Vec<(String, String)>,
    user: Option<String>,
    workdir: Option<String>,
}

fn parameters(docker: &DockerInfo) -> Result<Parameters, String> {
    let mut out = Parameters::default();
    for p in &docker.parameters {
        match p.key.as_str() {
            "env" | "e" => {
                if !p.value.contains('=') || p.value.starts_with('=') {
                    return Err(format!(
                        "docker parameter env={}: write it as NAME=VALUE",
                        p.value
                    ));
                }
                out.env.push(p.value.clone());
            }
            "label" | "l" => {
                let (k, v) = p.value.split_once('=').unwrap_or((p.value.as_str(), ""));
                if k.is_empty() {
                    return Err(format!(
                        "docker parameter label={}: write it as KEY=VALUE",
                        p.value
                    ));
                }
                out.labels.push((k.to_string(), v.to_string()));
            }
            "user" | "u" => out.user = Some(p.value.clone()),
            "workdir" | "w" => {
                if !p.value.starts_with('/') {
                    return Err(format!(
                        "docker parameter workdir={}: give an absolute path",
                        p.value
                    ));
                }
                out.workdir = Some(p.value.clone());
            }
            other => {
                return Err(format!(
                    "docker parameter `{other}` is not supported by this agent (supported: {})",
                    PARAMETERS.join(", ")
                ));
            }
        }
    }
    Ok(out)
}

/// The network mode and the port bindings.
fn network(docker: &DockerInfo, resources: &Resources) -> Result<(&'static str, PortMap), String> {
    let mode = match docker.network() {
        Network::Host => "host",
        Network::Bridge => "bridge",
        Network::None => "none",
        Network::User => {
            return Err(
                "docker network USER is not supported by this agent: use HOST, BRIDGE or NONE"
                    .into(),
            );
        }
    };
    let mut bindings = PortMap::new();
    if docker.port_mappings.is_empty() {
        return Ok((mode, bindings));
    }
    if mode != "bridge" {
        return Err(format!(
            "port mappings need network BRIDGE (the task's network is {}): with HOST the task \
             listens on its ports directly ($PORT0 ...)",
            docker.network().as_str_name()
        ));
    }
    let ports = resources.ports();
    let mut used = Vec::new();
    for m in &docker.port_mappings {
        if m.host_port == 0 || !ports.contains_value(u64::from(m.host_port)) {
            let have = if ports.is_empty() {
                "none".to_string()
            } else {
                ports
                    .ranges()
                    .iter()
                    .map(|(b, e)| format!("{b}-{e}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(format!(
                "port mapping {}->{}: the host port must be one of the task's ports ({have})",
                m.host_port, m.container_port
            ));
        }
        if m.container_port == 0 || m.container_port > 65535 {
            return Err(format!(
                "port mapping {}->{}: the container port must be 1-65535",
                m.host_port, m.container_port
            ));
        }
        let protocols = if m.protocol.trim().is_empty() {
            "tcp".to_string()
        } else {
            m.protocol.to_ascii_lowercase()
        };
        for proto in protocols.split(',').map(str::trim) {
            if !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(format!(
                    "port mapping {}->{}: protocol `{proto}` is not one of tcp, udp, sctp",
                    m.host_port, m.container_port
                ));
            }
            if used.contains(&(m.host_port, proto.to_string())) {
                return Err(format!(
                    "host port {} ({proto}) is mapped twice",
                    m.host_port
                ));
            }
            used.push((m.host_port, proto.to_string()));
            bindings
                .entry(format!("{}/{proto}", m.container_port))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: None,
                    host_port: Some(m.host_port.to_string()),
                });
        }
    }
    Ok((mode, bindings))
}

/// A path as Docker's `host:container:mode` bind syntax can carry it.
fn bind_path(path: &Path, what: &str) -> Result<String, String> {
    let s = path
        .to_str()
        .ok_or_else(|| format!("{what} path {} is not UTF-8", path.display()))?;
    if s.contains(':') || s.contains(',') {
        return Err(format!(
            "{what} path `{s}` contains ':' or ',', which Docker binds cannot carry"
        ));
    }
    Ok(s.to_string())
}

/// The bind of one volume, or why it is refused.
fn volume_bind(
    v: &agora_proto::v1::Volume,
    sandbox: &Path,
    rules: &SpecRules,
) -> Result<String, String> {
    let container_path = Path::new(&v.container_path);
    if !container_path.is_absolute() || has_parent_dirs(container_path) {
        return Err(format!(
            "volume container_path `{}` must be an absolute path without `..`",
            v.container_path
        ));
    }
    if container_path.starts_with(SANDBOX_IN_CONTAINER) {
        return Err(format!(
            "volume container_path `{}` is inside {SANDBOX_IN_CONTAINER}, where the sandbox is \
             mounted",
            v.container_path
        ));
    }
    if v.host_path.is_empty() {
        return Err(format!(
            "volume for `{}` has no host_path: give a directory under the agent's \
             --docker-volume-roots, or one relative to the sandbox",
            v.container_path
        ));
    }
    let host = Path::new(&v.host_path);
    if has_parent_dirs(host) {
        return Err(format!(
            "volume host_path `{}` must not contain `..`",
            v.host_path
        ));
    }
    let host: PathBuf = if host.is_absolute() {
        let allowed = |p: &Path| rules.volume_roots.iter().any(|root| p.starts_with(root));
        // The path as written, and where it really leads (symlinks
        // resolved) when it exists, must both be under an allowed root.
        let resolved = std::fs::canonicalize(host).ok();
        if !allowed(host) || resolved.as_deref().is_some_and(|r| !allowed(r)) {
            return Err(if rules.volume_roots.is_empty() {
                format!(
                    "volume host_path `{}` is refused: this agent allows no host volumes (an \
                     operator can allow directories with the agent's --docker-volume-roots); a \
                     host_path relative to the sandbox is always allowed",
                    v.host_path
                )
            } else {
                format!(
                    "volume host_path `{}` is refused: it is not under the directories this \
                     agent allows ({}; see the agent's --docker-volume-roots)",
                    v.host_path,
                    rules
                        .volume_roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        resolved.unwrap_or_else(|| host.to_path_buf())
    } else {
        // Relative: inside the task's own sandbox (Mesos's rule).
        sandbox.join(host)
    };
    let mode = match v.mode() {
        volume::Mode::Ro => "ro",
        volume::Mode::Rw => "rw",
    };
    Ok(format!(
        "{}:{}:{mode}",
        bind_path(&host, "volume host")?,
        bind_path(container_path, "volume container")?
    ))
}

fn has_parent_dirs(p: &Path) -> bool {
    p.components().any(|c| matches!(c, Component::ParentDir))
}

/// The image reference to pull: `(image, tag)`. An image without a tag or
/// digest means `latest` (Docker would otherwise pull every tag).
pub fn pull_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => {
            let repo = &image[..image.len() - tag.len() - 1];
            (repo.to_string(), Some(tag.to_string()))
        }
        None => (image.to_string(), Some("latest".into())),
    }
}

/// Whether `container` asks for Docker with an image.
pub fn is_docker_task(container: Option<&ContainerInfo>) -> bool {
    container.is_some_and(|c| {
        c.r#type() == container_info::Type::Docker
            && c.docker
                .as_ref()
                .is_some_and(|d| !d.image.trim().is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::ContainerId;
    use agora_proto::v1::container_info::docker_info::{Parameter, PortMapping};
    use agora_proto::v1::{
        CommandInfo, Environment, Label, TaskInfo, Volume, environment::Variable,
    };

    fn rules(roots: &[&Path]) -> SpecRules {
        SpecRules {
            volume_roots: roots.iter().map(|p| p.to_path_buf()).collect(),
            allow_privileged: false,
            work_dir: "/var/lib/agora/agent".into(),
        }
    }

    fn request(command: Option<CommandInfo>, docker: DockerInfo, resources: &str) -> LaunchRequest {
        let mut container = ContainerInfo {
            docker: Some(docker),
            ..Default::default()
        };
        container.set_type(container_info::Type::Docker);
        LaunchRequest {
            container_id: ContainerId::parse("c1").unwrap(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            hostname: "node1".into(),
            task: TaskInfo {
                task_id: "t1".into(),
                name: "t1".into(),
                resources: Resources::parse(resources).unwrap().to_proto(),
                command,
                container: Some(container),
                labels: vec![Label {
                    key: "team".into(),
                    value: "web".into(),
                }],
                ..Default::default()
            },
            sandbox: PathBuf::from("/w/sandboxes/f1/t1/c1"),
        }
    }

    fn image(name: &str) -> DockerInfo {
        DockerInfo {
            image: name.into(),
            ..Default::default()
        }
    }

    fn shell(cmd: &str) -> Option<CommandInfo> {
        Some(CommandInfo {
            value: cmd.into(),
            ..Default::default()
        })
    }

    #[test]
    fn commands_follow_mesos_docker_rules() {
        let r = rules(&[]);
        let s = container_spec(&request(shell("echo hi"), image("busybox"), "cpus:1"), &r).unwrap();
        assert_eq!(s.body.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(s.body.cmd.unwrap(), ["echo hi"]);

        let argv = Some(CommandInfo {
            shell: Some(false),
            arguments: vec!["serve".into(), "--port=80".into()],
            ..Default::default()
        });
        let s = container_spec(&request(argv, image("busybox"), "cpus:1"), &r).unwrap();
        assert_eq!(s.body.entrypoint, None, "the image's entrypoint runs");
        assert_eq!(s.body.cmd.unwrap(), ["serve", "--port=80"]);

        let argv = Some(CommandInfo {
            shell: Some(false),
            value: "sleep".into(),
            arguments: vec!["10".into()],
            ..Default::default()
        });
        let s = container_spec(&request(argv, image("busybox"), "cpus:1"), &r).unwrap();
        assert_eq!(s.body.cmd.unwrap(), ["sleep", "10"]);

        for none in [None, shell("  ")] {
            let s = container_spec(&request(none, image("busybox"), "cpus:1"), &r).unwrap();
            assert_eq!((s.body.entrypoint, s.body.cmd), (None, None));
        }
    }

    #[test]
    fn environment_labels_limits_and_sandbox() {
        let mut cmd = shell("env").unwrap();
        cmd.environment = Some(Environment {
            variables: vec![Variable {
                name: "GREETING".into(),
                value: "hi".into(),
            }],
        });
        let s = container_spec(
            &request(
                Some(cmd),
                image("busybox:1.36"),
                "cpus:0.5;mem:64;ports:[31000-31001]",
            ),
            &rules(&[]),
        )
        .unwrap();
        assert_eq!(s.name, "agora-c1");
        assert_eq!(s.image, "busybox:1.36");
        let env = s.body.env.unwrap();
        for want in [
            "GREETING=hi",
            "MESOS_SANDBOX=/mnt/mesos/sandbox",
            "AGORA_TASK_ID=t1",
            "AGORA_FRAMEWORK_ID=f1",
            "AGORA_AGENT_ID=a1",
            "HOST=node1",
            "PORT0=31000",
            "PORTS=31000,31001",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
        }
        assert!(
            !env.iter().any(|e| e.starts_with("PATH=")),
            "the image's PATH is kept"
        );
        let labels = s.body.labels.unwrap();
        assert_eq!(labels["team"], "web");
        assert_eq!(labels[LABEL_TASK_ID], "t1");
        assert_eq!(labels[LABEL_FRAMEWORK_ID], "f1");
        assert_eq!(labels[LABEL_AGENT_ID], "a1");
        assert_eq!(labels[LABEL_CONTAINER_ID], "c1");
        assert_eq!(labels[LABEL_WORK_DIR], "/var/lib/agora/agent");
        let host = s.body.host_config.unwrap();
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.cpu_quota, Some(50_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20), "no swap beyond the limit");
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(
            host.binds.unwrap(),
            ["/w/sandboxes/f1/t1/c1:/mnt/mesos/sandbox:rw"]
        );
        assert_eq!(host.privileged, Some(false));
    }

    #[test]
    fn bridge_port_mappings_must_use_the_tasks_ports() {
        let mut d = image("busybox");
        d.set_network(Network::Bridge);
        d.port_mappings = vec![PortMapping {
            host_port: 31001,
            container_port: 8080,
            protocol: String::new(),
        }];
        let s = container_spec(
            &request(shell("httpd"), d.clone(), "ports:[31000-31001]"),
            &rules(&[]),
        )
        .unwrap();
        let host = s.body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        let b = &host.port_bindings.unwrap()["8080/tcp"];
        assert_eq!(b.as_ref().unwrap()[0].host_port.as_deref(), Some("31001"));
        assert_eq!(s.body.exposed_ports.unwrap(), ["8080/tcp"]);

        let e = container_spec(
            &request(shell("httpd"), d.clone(), "ports:[31000-31000]"),
            &rules(&[]),
        )
        .unwrap_err();
        assert!(e.contains("must be one of the task's ports"), "{e}");

        let mut host_net = d.clone();
        host_net.set_network(Network::Host);
        let e = container_spec(
            &request(shell("x"), host_net, "ports:[31001-31001]"),
            &rules(&[]),
        )
        .unwrap_err();
        assert!(e.contains("BRIDGE"), "{e}");

        let mut bad_proto = d.clone();
        bad_proto.port_mappings[0].protocol = "icmp".into();
        let e = container_spec(
            &request(shell("x"), bad_proto, "ports:[31001-31001]"),
            &rules(&[]),
        )
        .unwrap_err();
        assert!(e.contains("icmp"), "{e}");

        let mut user = d;
        user.set_network(Network::User);
        assert!(
            container_spec(&request(shell("x"), user, "cpus:1"), &rules(&[]))
                .unwrap_err()
                .contains("USER")
        );
    }

    #[test]
    fn volumes_only_under_allowed_roots() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), data.join("escape")).unwrap();
        let canonical_root = std::fs::canonicalize(root.path()).unwrap();
        let r = rules(&[canonical_root.as_path()]);
        let with = |host: &str, container: &str, mode: volume::Mode| {
            let mut req = request(shell("ls"), image("busybox"), "cpus:1");
            let mut v = Volume {
                host_path: host.into(),
                container_path: container.into(),
                ..Default::default()
            };
            v.set_mode(mode);
            req.task.container.as_mut().unwrap().volumes = vec![v];
            container_spec(&req, &r).map(|s| s.body.host_config.unwrap().binds.unwrap())
        };
        let data_s = std::fs::canonicalize(&data).unwrap();
        let binds = with(data_s.to_str().unwrap(), "/data", volume::Mode::Ro).unwrap();
        assert_eq!(binds[1], format!("{}:/data:ro", data_s.display()));
        let binds = with("cache", "/cache", volume::Mode::Rw).unwrap();
        assert_eq!(binds[1], "/w/sandboxes/f1/t1/c1/cache:/cache:rw");

        for (host, container, needle) in [
            (
                "/etc",
                "/etc2",
                "not under the directories this agent allows",
            ),
            (
                data.join("escape").to_str().unwrap(),
                "/x",
                "not under the directories",
            ),
            ("../up", "/x", "`..`"),
            ("", "/x", "no host_path"),
            (data_s.to_str().unwrap(), "relative", "absolute path"),
            (data_s.to_str().unwrap(), "/mnt/mesos/sandbox/x", "sandbox"),
        ] {
            let e = with(host, container, volume::Mode::Rw).unwrap_err();
            assert!(e.contains(needle), "{host} -> {container}: {e}");
        }
        let none = rules(&[]);
        let mut req = request(shell("ls"), image("busybox"), "cpus:1");
        req.task.container.as_mut().unwrap().volumes = vec![Volume {
            host_path: "/srv".into(),
            container_path: "/srv".into(),
            ..Default::default()
        }];
        let e = container_spec(&req, &none).unwrap_err();
        assert!(e.contains("allows no host volumes"), "{e}");
    }

    #[test]
    fn privileged_and_parameters() {
        let mut d = image("busybox");
        d.privileged = true;
        let e = container_spec(&request(shell("x"), d.clone(), "cpus:1"), &rules(&[])).unwrap_err();
        assert!(e.contains("--docker-allow-privileged"), "{e}");
        let mut allow = rules(&[]);
        allow.allow_privileged = true;
        let s = container_spec(&request(shell("x"), d, "cpus:1"), &allow).unwrap();
        assert_eq!(s.body.host_config.unwrap().privileged, Some(true));

        let mut d = image("busybox");
        d.parameters = vec![
            Parameter {
                key: "label".into(),
                value: "tier=front".into(),
            },
            Parameter {
                key: "env".into(),
                value: "X=1".into(),
            },
            Parameter {
                key: "user".into(),
                value: "1000".into(),
            },
        ];
        let s = container_spec(&request(shell("x"), d.clone(), "cpus:1"), &rules(&[])).unwrap();
        assert_eq!(s.body.labels.unwrap()["tier"], "front");
        assert!(s.body.env.unwrap().contains(&"X=1".to_string()));
        assert_eq!(s.body.user.as_deref(), Some("1000"));
        d.parameters.push(Parameter {
            key: "log-driver".into(),
            value: "syslog".into(),
        });
        let e = container_spec(&request(shell("x"), d, "cpus:1"), &rules(&[])).unwrap_err();
        assert!(e.contains("log-driver") && e.contains("supported"), "{e}");
    }

    #[test]
    fn image_references() {
        assert_eq!(
            pull_reference("busybox"),
            ("busybox".into(), Some("latest".into()))
        );
        assert_eq!(
            pull_reference("busybox:1.36"),
            ("busybox".into(), Some("1.36".into()))
        );
        assert_eq!(
            pull_reference("localhost:5000/team/app"),
            ("localhost:5000/team/app".into(), Some("latest".into()))
        );
        assert_eq!(
            pull_reference("localhost:5000/app:v2"),
            ("localhost:5000/app".into(), Some("v2".into()))
        );
        assert_eq!(
            pull_reference("app@sha256:abc"),
            ("app@sha256:abc".into(), None)
        );
        assert!(is_docker_task(
            request(None, image("x"), "cpus:1").task.container.as_ref()
        ));
        assert!(!is_docker_task(
            request(None, image(" "), "cpus:1").task.container.as_ref()
        ));
        assert!(!is_docker_task(None));
    }
}
