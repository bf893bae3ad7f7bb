//! Mesos v1 scheduler JSON <-> the core's calls and events, as pure
//! functions.
//!
//! Calls are read into typed structs (unknown fields are ignored, as a newer
//! client may send them; wrong types and missing required fields are
//! errors that name the field), then turned into the core's
//! [`call::Call`]s. Events are written as `serde_json::Value`s in Mesos's
//! layout: ids as `{"value": ...}`, enums as their names, bytes as base64.

use agora_proto::v1::{self, call, event};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Why a call is refused: the reply's status and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// 400, 403, 415 ...
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            message: message.into(),
        }
    }
}

/// A call, read and translated.
#[derive(Debug, Clone, PartialEq)]
pub enum MesosCall {
    /// SUBSCRIBE: opens the event stream.
    Subscribe {
        subscribe: v1::Subscribe,
        /// Whether the framework declared the `MULTI_ROLE` capability
        /// (its offers then carry `allocation_info`).
        multi_role: bool,
    },
    /// A call the core handles, for a subscribed framework.
    Core {
        framework_id: String,
        call: call::Call,
    },
    /// A call that is accepted and has no effect on Agora (MESSAGE and
    /// REQUEST: Agora runs no executors, and its allocator takes no
    /// requests; Mesos's does not either).
    Ignored {
        framework_id: String,
        kind: &'static str,
    },
}

impl MesosCall {
    /// The framework the call is for (SUBSCRIBE: none).
    pub fn framework_id(&self) -> Option<&str> {
        match self {
            MesosCall::Subscribe { .. } => None,
            MesosCall::Core { framework_id, .. } | MesosCall::Ignored { framework_id, .. } => {
                Some(framework_id)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Calls (JSON in)
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Id {
    value: String,
}

#[derive(Debug, Deserialize)]
struct CallJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    framework_id: Option<Id>,
    subscribe: Option<SubscribeJson>,
    accept: Option<AcceptJson>,
    decline: Option<DeclineJson>,
    revive: Option<RolesJson>,
    suppress: Option<RolesJson>,
    kill: Option<KillJson>,
    shutdown: Option<ShutdownJson>,
    acknowledge: Option<AckJson>,
    reconcile: Option<ReconcileJson>,
}

#[derive(Debug, Deserialize)]
struct SubscribeJson {
    framework_info: FrameworkInfoJson,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FrameworkInfoJson {
    user: String,
    name: String,
    id: Option<Id>,
    failover_timeout: Option<f64>,
    checkpoint: bool,
    role: Option<String>,
    roles: Vec<String>,
    hostname: String,
    principal: String,
    webui_url: String,
    capabilities: Vec<CapabilityJson>,
    labels: Option<LabelsJson>,
}

#[derive(Debug, Deserialize)]
struct CapabilityJson {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LabelsJson {
    labels: Vec<LabelJson>,
}

#[derive(Debug, Deserialize)]
struct LabelJson {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FiltersJson {
    refuse_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct AcceptJson {
    #[serde(default)]
    offer_ids: Vec<Id>,
    #[serde(default)]
    operations: Vec<OperationJson>,
    filters: Option<FiltersJson>,
}

#[derive(Debug, Deserialize)]
struct OperationJson {
    #[serde(rename = "type")]
    kind: String,
    launch: Option<LaunchJson>,
}

#[derive(Debug, Deserialize)]
struct LaunchJson {
    #[serde(default)]
    task_infos: Vec<TaskInfoJson>,
}

#[derive(Debug, Deserialize)]
struct DeclineJson {
    #[serde(default)]
    offer_ids: Vec<Id>,
    filters: Option<FiltersJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RolesJson {
    roles: Vec<String>,
    role: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KillJson {
    task_id: Id,
    agent_id: Option<Id>,
    kill_policy: Option<KillPolicyJson>,
}

#[derive(Debug, Deserialize)]
struct ShutdownJson {
    executor_id: Id,
    #[allow(dead_code)]
    agent_id: Option<Id>,
}

#[derive(Debug, Deserialize)]
struct AckJson {
    agent_id: Id,
    task_id: Id,
    uuid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReconcileJson {
    tasks: Vec<ReconcileTaskJson>,
}

#[derive(Debug, Deserialize)]
struct ReconcileTaskJson {
    task_id: Id,
    agent_id: Option<Id>,
}

#[derive(Debug, Deserialize)]
struct KillPolicyJson {
    grace_period: Option<DurationJson>,
}

#[derive(Debug, Deserialize)]
struct DurationJson {
    nanoseconds: i64,
}

#[derive(Debug, Deserialize)]
struct TaskInfoJson {
    #[serde(default)]
    name: String,
    task_id: Id,
    agent_id: Option<Id>,
    #[serde(default)]
    resources: Vec<ResourceJson>,
    command: Option<CommandJson>,
    container: Option<ContainerJson>,
    executor: Option<Value>,
    kill_policy: Option<KillPolicyJson>,
    labels: Option<LabelsJson>,
    health_check: Option<HealthCheckJson>,
}

#[derive(Debug, Deserialize)]
struct ResourceJson {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    scalar: Option<ScalarJson>,
    ranges: Option<RangesJson>,
    set: Option<SetJson>,
    role: Option<String>,
    #[serde(default)]
    reservations: Vec<ReservationJson>,
}

#[derive(Debug, Deserialize)]
struct ScalarJson {
    value: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangesJson {
    range: Vec<RangeJson>,
}

#[derive(Debug, Deserialize)]
struct RangeJson {
    begin: u64,
    end: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SetJson {
    item: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ReservationJson {
    role: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CommandJson {
    shell: Option<bool>,
    value: String,
    arguments: Vec<String>,
    environment: Option<EnvironmentJson>,
    user: String,
    uris: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EnvironmentJson {
    variables: Vec<VariableJson>,
}

#[derive(Debug, Deserialize)]
struct VariableJson {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct ContainerJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    volumes: Vec<VolumeJson>,
    docker: Option<DockerJson>,
    mesos: Option<Value>,
    #[serde(default)]
    hostname: String,
}

#[derive(Debug, Deserialize)]
struct VolumeJson {
    container_path: String,
    #[serde(default)]
    host_path: String,
    mode: Option<String>,
    image: Option<Value>,
    source: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct DockerJson {
    image: String,
    network: Option<String>,
    #[serde(default)]
    port_mappings: Vec<PortMappingJson>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    parameters: Vec<ParameterJson>,
    #[serde(default)]
    force_pull_image: bool,
}

#[derive(Debug, Deserialize)]
struct PortMappingJson {
    host_port: u32,
    container_port: u32,
    #[serde(default)]
    protocol: String,
}

#[derive(Debug, Deserialize)]
struct ParameterJson {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct HealthCheckJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    command: Option<CommandJson>,
    http: Option<HttpCheckJson>,
    tcp: Option<TcpCheckJson>,
    delay_seconds: Option<f64>,
    interval_seconds: Option<f64>,
    timeout_seconds: Option<f64>,
    consecutive_failures: Option<u32>,
    grace_period_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct HttpCheckJson {
    scheme: Option<String>,
    port: u32,
    path: Option<String>,
    #[serde(default)]
    statuses: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct TcpCheckJson {
    port: u32,
}

/// The Mesos call types Agora does not serve, and why.
fn unsupported_call(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" => {
            "Agora makes no inverse offers (it has no maintenance schedules)"
        }
        "ACKNOWLEDGE_OPERATION_STATUS" | "RECONCILE_OPERATIONS" => {
            "Agora supports no offer operations but LAUNCH, so there are no operation statuses"
        }
        "UPDATE_FRAMEWORK" => {
            "Agora does not support UPDATE_FRAMEWORK; SUBSCRIBE again with the framework id \
             to change the framework info"
        }
        _ => return None,
    })
}

/// Reads a call's JSON body.
pub fn parse_call(body: &[u8]) -> Result<MesosCall, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let c: CallJson = serde_path_to_error::deserialize(de)
        .map_err(|e| Refusal::bad_request(format!("Failed to parse body into Call: {e}")))?;
    let kind = c
        .kind
        .ok_or_else(|| Refusal::bad_request("Expecting 'type' to be present"))?;
    if kind == "SUBSCRIBE" {
        let s = c
            .subscribe
            .ok_or_else(|| Refusal::bad_request("Expecting 'subscribe' to be present"))?;
        let top = c.framework_id.map(|i| i.value);
        let (info, multi_role) = framework_info(s.framework_info)?;
        if let Some(top) = &top
            && *top != info.id
        {
            return Err(Refusal::bad_request(format!(
                "'framework_id' ({top}) differs from 'subscribe.framework_info.id' ({})",
                info.id
            )));
        }
        return Ok(MesosCall::Subscribe {
            subscribe: v1::Subscribe {
                framework_info: Some(info),
            },
            multi_role,
        });
    }
    if let Some(why) = unsupported_call(&kind) {
        return Err(Refusal::bad_request(format!(
            "{kind} is not supported: {why}"
        )));
    }
    let known = [
        "TEARDOWN",
        "ACCEPT",
        "DECLINE",
        "REVIVE",
        "SUPPRESS",
        "KILL",
        "SHUTDOWN",
        "ACKNOWLEDGE",
        "RECONCILE",
        "MESSAGE",
        "REQUEST",
    ];
    if !known.contains(&kind.as_str()) {
        return Err(Refusal::bad_request(format!(
            "Unknown call type '{kind}'; expected one of SUBSCRIBE, {}",
            known.join(", ")
        )));
    }
    let framework_id = c
        .framework_id
        .map(|i| i.value)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refusal::bad_request(format!("Expecting 'framework_id' in {kind}")))?;
    let missing = |field: &str| Refusal::bad_request(format!("Expecting '{field}' to be present"));
    let call = match kind.as_str() {
        "TEARDOWN" => call::Call::Teardown(v1::Teardown {}),
        "ACCEPT" => {
            let a = c.accept.ok_or_else(|| missing("accept"))?;
            call::Call::Accept(accept(a)?)
        }
        "DECLINE" => {
            let d = c.decline.ok_or_else(|| missing("decline"))?;
            call::Call::Decline(v1::Decline {
                offer_ids: d.offer_ids.into_iter().map(|i| i.value).collect(),
                filters: d.filters.map(filters),
            })
        }
        "REVIVE" => call::Call::Revive(v1::Revive {
            roles: roles(c.revive),
        }),
        "SUPPRESS" => call::Call::Suppress(v1::Suppress {
            roles: roles(c.suppress),
        }),
        "KILL" => {
            let k = c.kill.ok_or_else(|| missing("kill"))?;
            call::Call::Kill(v1::Kill {
                task_id: k.task_id.value,
                agent_id: k.agent_id.map(|i| i.value).unwrap_or_default(),
                kill_policy: k.kill_policy.map(kill_policy),
            })
        }
        // A command task's executor has the task's id in Mesos: shutting
        // it down kills the task.
        "SHUTDOWN" => {
            let s = c.shutdown.ok_or_else(|| missing("shutdown"))?;
            call::Call::Kill(v1::Kill {
                task_id: s.executor_id.value,
                agent_id: s.agent_id.map(|i| i.value).unwrap_or_default(),
                kill_policy: None,
            })
        }
        "ACKNOWLEDGE" => {
            let a = c.acknowledge.ok_or_else(|| missing("acknowledge"))?;
            let uuid = BASE64.decode(a.uuid.as_bytes()).map_err(|e| {
                Refusal::bad_request(format!(
                    "'acknowledge.uuid' is not base64 ({e}): `{}`",
                    a.uuid
                ))
            })?;
            if uuid.is_empty() {
                return Err(Refusal::bad_request("'acknowledge.uuid' is empty"));
            }
            call::Call::Acknowledge(v1::Acknowledge {
                acks: vec![v1::TaskAcknowledgement {
                    agent_id: a.agent_id.value,
                    task_id: a.task_id.value,
                    uuid,
                }],
            })
        }
        "RECONCILE" => {
            let r = c.reconcile.unwrap_or_default();
            call::Call::Reconcile(v1::Reconcile {
                tasks: r
                    .tasks
                    .into_iter()
                    .map(|t| v1::reconcile::TaskRef {
                        task_id: t.task_id.value,
                        agent_id: t.agent_id.map(|i| i.value).unwrap_or_default(),
                    })
                    .collect(),
            })
        }
        "MESSAGE" => {
            return Ok(MesosCall::Ignored {
                framework_id,
                kind: "MESSAGE",
            });
        }
        "REQUEST" => {
            return Ok(MesosCall::Ignored {
                framework_id,
                kind: "REQUEST",
            });
        }
        _ => unreachable!("checked against the known types above"),
    };
    Ok(MesosCall::Core { framework_id, call })
}

fn roles(r: Option<RolesJson>) -> Vec<String> {
    let Some(r) = r else {
        return Vec::new();
    };
    let mut roles = r.roles;
    if let Some(role) = r.role
        && !roles.contains(&role)
    {
        roles.push(role);
    }
    roles
}

fn filters(f: FiltersJson) -> v1::Filters {
    v1::Filters {
        refuse_seconds: f.refuse_seconds,
    }
}

fn kill_policy(k: KillPolicyJson) -> v1::KillPolicy {
    v1::KillPolicy {
        grace_period: k.grace_period.map(|d| d.nanoseconds as f64 / 1e9),
    }
}

fn labels(l: Option<LabelsJson>) -> Vec<v1::Label> {
    l.map(|l| {
        l.labels
            .into_iter()
            .map(|l| v1::Label {
                key: l.key,
                value: l.value,
            })
            .collect()
    })
    .unwrap_or_default()
}

fn framework_info(f: FrameworkInfoJson) -> Result<(v1::FrameworkInfo, bool), Refusal> {
    let multi_role = f.capabilities.iter().any(|c| c.kind == "MULTI_ROLE");
    let mut roles = f.roles;
    if roles.is_empty()
        && let Some(role) = f.role
    {
        roles.push(role);
    }
    if let Some(t) = f.failover_timeout
        && !t.is_finite()
    {
        return Err(Refusal::bad_request(format!(
            "'framework_info.failover_timeout' is {t}; it must be a number of seconds"
        )));
    }
    Ok((
        v1::FrameworkInfo {
            id: f.id.map(|i| i.value).unwrap_or_default(),
            name: f.name,
            user: f.user,
            roles,
            failover_timeout: f.failover_timeout.unwrap_or(0.0),
            checkpoint: f.checkpoint,
            hostname: f.hostname,
            principal: f.principal,
            labels: labels(f.labels),
            webui_url: f.webui_url,
        },
        multi_role,
    ))
}

fn accept(a: AcceptJson) -> Result<v1::Accept, Refusal> {
    let mut operations = Vec::with_capacity(a.operations.len());
    for (i, op) in a.operations.into_iter().enumerate() {
        match op.kind.as_str() {
            "LAUNCH" => {
                let launch = op.launch.ok_or_else(|| {
                    Refusal::bad_request(format!(
                        "Expecting 'accept.operations[{i}].launch' to be present"
                    ))
                })?;
                let mut task_infos = Vec::with_capacity(launch.task_infos.len());
                for (j, t) in launch.task_infos.into_iter().enumerate() {
                    task_infos.push(task_info(t).map_err(|e| {
                        Refusal::bad_request(format!(
                            "accept.operations[{i}].launch.task_infos[{j}]: {e}"
                        ))
                    })?);
                }
                operations.push(v1::Operation {
                    operation: Some(v1::operation::Operation::Launch(v1::Launch { task_infos })),
                });
            }
            "LAUNCH_GROUP" => {
                return Err(Refusal::bad_request(
                    "LAUNCH_GROUP is not supported: Agora has no task groups (pods) nor \
                     default executor; LAUNCH the tasks one by one",
                ));
            }
            other => {
                return Err(Refusal::bad_request(format!(
                    "offer operation {other} is not supported: Agora supports LAUNCH only \
                     (no reservations or volumes)"
                )));
            }
        }
    }
    Ok(v1::Accept {
        offer_ids: a.offer_ids.into_iter().map(|i| i.value).collect(),
        operations,
        filters: a.filters.map(filters),
    })
}

fn resource(r: ResourceJson) -> Result<v1::Resource, String> {
    use v1::resource::Type;
    let kind = match r.kind.as_deref() {
        Some("SCALAR") => Type::Scalar,
        Some("RANGES") => Type::Ranges,
        Some("SET") => Type::Set,
        Some(other) => {
            return Err(format!(
                "resource {}: type {other} is not SCALAR, RANGES or SET",
                r.name
            ));
        }
        None if r.ranges.is_some() => Type::Ranges,
        None if r.set.is_some() => Type::Set,
        None => Type::Scalar,
    };
    let scalar = match (kind, &r.scalar) {
        (Type::Scalar, Some(s)) => s.value,
        (Type::Scalar, None) => {
            return Err(format!(
                "resource {} is SCALAR but has no 'scalar.value'",
                r.name
            ));
        }
        _ => 0.0,
    };
    // The reservation: the innermost (last) of `reservations`, else `role`.
    let role = r
        .reservations
        .iter()
        .rev()
        .find_map(|x| x.role.clone())
        .or(r.role)
        .unwrap_or_else(|| agora_proto::UNRESERVED.to_string());
    Ok(v1::Resource {
        name: r.name,
        r#type: kind as i32,
        scalar,
        ranges: r
            .ranges
            .unwrap_or_default()
            .range
            .into_iter()
            .map(|x| v1::Range {
                begin: x.begin,
                end: x.end,
            })
            .collect(),
        set: r.set.unwrap_or_default().item,
        role,
    })
}

fn command(c: CommandJson) -> Result<v1::CommandInfo, String> {
    if !c.uris.is_empty() {
        return Err(
            "'command.uris' is not supported: Agora's agents fetch nothing; put what the \
             task needs in its image or on the agents"
                .into(),
        );
    }
    Ok(v1::CommandInfo {
        shell: Some(c.shell.unwrap_or(true)),
        value: c.value,
        arguments: c.arguments,
        environment: c.environment.map(|e| v1::Environment {
            variables: e
                .variables
                .into_iter()
                .map(|v| v1::environment::Variable {
                    name: v.name,
                    value: v.value,
                })
                .collect(),
        }),
        user: c.user,
    })
}

fn container(c: ContainerJson) -> Result<v1::ContainerInfo, String> {
    use v1::container_info::{DockerInfo, Type, docker_info};
    let kind = match c.kind.as_deref() {
        Some("DOCKER") => Type::Docker,
        Some("MESOS") | None => Type::Mesos,
        Some(other) => {
            return Err(format!(
                "container type {other} is not supported (DOCKER or MESOS)"
            ));
        }
    };
    if kind == Type::Mesos && c.mesos.as_ref().is_some_and(|m| m.get("image").is_some()) {
        return Err(
            "container images with the MESOS containerizer are not supported; use a \
             DOCKER container"
                .into(),
        );
    }
    let mut volumes = Vec::with_capacity(c.volumes.len());
    for v in c.volumes {
        if v.image.is_some() || v.source.is_some() {
            return Err(format!(
                "volume {}: only host-path volumes (host_path) are supported",
                v.container_path
            ));
        }
        let mode = match v.mode.as_deref() {
            Some("RW") | None => v1::volume::Mode::Rw,
            Some("RO") => v1::volume::Mode::Ro,
            Some(other) => return Err(format!("volume mode {other} is not RW or RO")),
        };
        volumes.push(v1::Volume {
            container_path: v.container_path,
            host_path: v.host_path,
            mode: mode as i32,
        });
    }
    let docker = match c.docker {
        Some(d) => {
            let network = match d.network.as_deref() {
                Some("HOST") | None => docker_info::Network::Host,
                Some("BRIDGE") => docker_info::Network::Bridge,
                Some("NONE") => docker_info::Network::None,
                Some("USER") => docker_info::Network::User,
                Some(other) => return Err(format!("docker network {other} is not known")),
            };
            Some(DockerInfo {
                image: d.image,
                network: network as i32,
                port_mappings: d
                    .port_mappings
                    .into_iter()
                    .map(|p| docker_info::PortMapping {
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: p.protocol,
                    })
                    .collect(),
                privileged: d.privileged,
                parameters: d
                    .parameters
                    .into_iter()
                    .map(|p| docker_info::Parameter {
                        key: p.key,
                        value: p.value,
                    })
                    .collect(),
                force_pull_image: d.force_pull_image,
            })
        }
        None if kind == Type::Docker => {
            return Err("a DOCKER container needs 'container.docker.image'".into());
        }
        None => None,
    };
    Ok(v1::ContainerInfo {
        r#type: kind as i32,
        volumes,
        docker,
        hostname: c.hostname,
    })
}

fn health_check(h: HealthCheckJson) -> Result<v1::HealthCheck, String> {
    use v1::health_check::{HttpCheckInfo, TcpCheckInfo, Type};
    let kind = match h.kind.as_deref() {
        Some("COMMAND") => Type::Command,
        Some("HTTP") => Type::Http,
        Some("TCP") => Type::Tcp,
        // Mesos before 1.2 had no type: whichever check is set.
        None if h.http.is_some() => Type::Http,
        None if h.tcp.is_some() => Type::Tcp,
        None if h.command.is_some() => Type::Command,
        Some(other) => return Err(format!("health check type {other} is not supported")),
        None => return Err("the health check has no type".into()),
    };
    Ok(v1::HealthCheck {
        r#type: kind as i32,
        http: h.http.map(|x| HttpCheckInfo {
            scheme: x.scheme.unwrap_or_default(),
            port: Some(x.port),
            port_index: None,
            path: x.path.unwrap_or_default(),
            statuses: x.statuses,
        }),
        tcp: h.tcp.map(|x| TcpCheckInfo {
            port: Some(x.port),
            port_index: None,
        }),
        command: h.command.map(command).transpose()?,
        delay_seconds: h.delay_seconds,
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        consecutive_failures: h.consecutive_failures,
        grace_period_seconds: h.grace_period_seconds,
        kill_on_failure: None,
    })
}

fn task_info(t: TaskInfoJson) -> Result<v1::TaskInfo, String> {
    if t.executor.is_some() {
        return Err(
            "custom executors ('executor') are not supported: give the task a 'command' \
             (Agora runs it as Mesos's command executor would)"
                .into(),
        );
    }
    let resources = t
        .resources
        .into_iter()
        .map(resource)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(v1::TaskInfo {
        name: t.name,
        task_id: t.task_id.value,
        agent_id: t.agent_id.map(|i| i.value).unwrap_or_default(),
        resources,
        command: t.command.map(command).transpose()?,
        container: t.container.map(container).transpose()?,
        kill_policy: t.kill_policy.map(kill_policy),
        labels: labels(t.labels),
        health_checks: t
            .health_check
            .map(health_check)
            .transpose()?
            .into_iter()
            .collect(),
        readiness_checks: Vec::new(),
    })
}

// ---------------------------------------------------------------------------
// Events (JSON out)
// ---------------------------------------------------------------------------

fn id(value: &str) -> Value {
    json!({ "value": value })
}

/// What the events of one subscription depend on.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    /// The framework declared `MULTI_ROLE`: offers and their resources
    /// carry `allocation_info`.
    pub multi_role: bool,
}

/// A resource as Mesos writes it.
pub fn resource_json(r: &v1::Resource, allocated_to: Option<&str>) -> Value {
    use v1::resource::Type;
    let mut m = Map::new();
    m.insert("name".into(), json!(r.name));
    let role = if r.role.is_empty() {
        agora_proto::UNRESERVED
    } else {
        &r.role
    };
    match r.r#type() {
        Type::Scalar => {
            m.insert("type".into(), json!("SCALAR"));
            m.insert("scalar".into(), json!({ "value": r.scalar }));
        }
        Type::Ranges => {
            m.insert("type".into(), json!("RANGES"));
            let range: Vec<Value> = r
                .ranges
                .iter()
                .map(|x| json!({"begin": x.begin, "end": x.end}))
                .collect();
            m.insert("ranges".into(), json!({ "range": range }));
        }
        Type::Set => {
            m.insert("type".into(), json!("SET"));
            m.insert("set".into(), json!({ "item": r.set }));
        }
    }
    m.insert("role".into(), json!(role));
    if let Some(a) = allocated_to {
        m.insert("allocation_info".into(), json!({ "role": a }));
    }
    Value::Object(m)
}

/// An agent attribute as Mesos writes it.
pub fn attribute_json(a: &v1::Attribute) -> Value {
    match &a.value {
        Some(v1::attribute::Value::Scalar(x)) => {
            json!({"name": a.name, "type": "SCALAR", "scalar": {"value": x}})
        }
        Some(v1::attribute::Value::Text(t)) => {
            json!({"name": a.name, "type": "TEXT", "text": {"value": t}})
        }
        None => json!({"name": a.name, "type": "TEXT", "text": {"value": ""}}),
    }
}

/// An offer as Mesos writes it.
pub fn offer_json(o: &v1::Offer, opts: StreamOptions) -> Value {
    let alloc = opts.multi_role.then_some(o.role.as_str());
    let mut v = json!({
        "id": id(&o.id),
        "framework_id": id(&o.framework_id),
        "agent_id": id(&o.agent_id),
        "hostname": o.hostname,
        "resources": o.resources.iter().map(|r| resource_json(r, alloc)).collect::<Vec<_>>(),
        "attributes": o.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
    });
    if let Some(role) = alloc {
        v["allocation_info"] = json!({ "role": role });
    }
    v
}

/// A task status as Mesos writes it. `agent_id` is always there (pymesos
/// acknowledges with it), `uuid` only on updates that need an
/// acknowledgement.
pub fn status_json(s: &v1::TaskStatus) -> Value {
    let mut m = Map::new();
    m.insert("task_id".into(), id(&s.task_id));
    m.insert("state".into(), json!(s.state().as_str_name()));
    m.insert("source".into(), json!(s.source().as_str_name()));
    if s.reason() != v1::StatusReason::ReasonNone {
        m.insert("reason".into(), json!(s.reason().as_str_name()));
    }
    if !s.message.is_empty() {
        m.insert("message".into(), json!(s.message));
    }
    m.insert("agent_id".into(), id(&s.agent_id));
    if !s.uuid.is_empty() {
        m.insert("uuid".into(), json!(BASE64.encode(&s.uuid)));
    }
    m.insert("timestamp".into(), json!(s.timestamp));
    if let Some(h) = s.healthy {
        m.insert("healthy".into(), json!(h));
    }
    Value::Object(m)
}

/// Mesos's MasterInfo, as its SUBSCRIBED event and ZooKeeper carry it.
pub fn master_info_json(info: &v1::MasterInfo) -> Value {
    serde_json::from_slice(&agora_coord::zk::master_info_to_json(info))
        .unwrap_or_else(|_| json!({}))
}

/// The Mesos events of one core event: Agora batches updates and rescinds,
/// Mesos sends one event each.
pub fn events_json(e: &v1::Event, opts: StreamOptions) -> Vec<Value> {
    let Some(e) = &e.event else {
        return Vec::new();
    };
    match e {
        event::Event::Subscribed(s) => vec![json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id(&s.framework_id),
                "heartbeat_interval_seconds": s.heartbeat_interval_seconds,
                "master_info": s.master_info.as_ref().map(master_info_json),
            }
        })],
        event::Event::Offers(o) => vec![json!({
            "type": "OFFERS",
            "offers": {
                "offers": o.offers.iter().map(|o| offer_json(o, opts)).collect::<Vec<_>>(),
            }
        })],
        event::Event::Rescind(r) => r
            .offer_ids
            .iter()
            .map(|o| json!({"type": "RESCIND", "rescind": {"offer_id": id(o)}}))
            .collect(),
        event::Event::Updates(u) => u
            .statuses
            .iter()
            .map(|s| json!({"type": "UPDATE", "update": {"status": status_json(s)}}))
            .collect(),
        event::Event::Heartbeat(_) => vec![json!({"type": "HEARTBEAT"})],
        event::Event::Error(err) => vec![json!({
            "type": "ERROR",
            "error": {"message": err.message},
        })],
        event::Event::Failure(f) => vec![json!({
            "type": "FAILURE",
            "failure": {"agent_id": id(&f.agent_id)},
        })],
    }
}

/// One RecordIO record: the JSON's length in bytes, a newline, the JSON.
pub fn record(v: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(v).expect("a JSON value serializes");
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests;
