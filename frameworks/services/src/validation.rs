//! Reading and checking app definitions.
//!
//! [`parse_app`] turns a request body into a normalised [`AppDefinition`] or
//! says exactly what is wrong: malformed JSON is a [`Rejection::BadJson`]
//! (HTTP 400); anything else, from a wrong type to a broken rule, is a
//! [`Rejection::Invalid`] with one [`Violation`] per path (HTTP 422,
//! Marathon's `{"message":"Object is not valid","details":[...]}`).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::app::{AppDefinition, PortDefinition, PortMapping, READ_ONLY_KEYS};
use crate::constraint::parse_constraint;
use crate::path_id::PathId;

/// One wrong field: its JSON path (`/container/docker/image`) and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Violation {
    pub path: String,
    pub errors: Vec<String>,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON at all (400).
    BadJson(String),
    /// JSON, but not a valid definition (422).
    Invalid(Vec<Violation>),
}

impl Rejection {
    pub fn at(path: &str, error: impl Into<String>) -> Rejection {
        Rejection::Invalid(vec![Violation {
            path: path.into(),
            errors: vec![error.into()],
        }])
    }
}

/// What validation needs to know about this framework.
#[derive(Debug, Clone)]
pub struct Context {
    /// Roles the framework subscribes with; `acceptedResourceRoles` and
    /// `role` may name these and `*`.
    pub roles: Vec<String>,
}

/// Most instances one app may ask for.
pub const MAX_INSTANCES: i64 = 1_000_000;

static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_]*$").expect("env pattern"));
static PORT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("port name pattern"));

/// Parses a body into JSON (400 when it is not JSON).
pub fn parse_json(body: &[u8]) -> Result<Value, Rejection> {
    serde_json::from_slice(body).map_err(|e| Rejection::BadJson(format!("Invalid JSON: {e}")))
}

/// `a.b[0].c` (serde_path_to_error) as `/a/b/0/c`.
fn json_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        use serde_path_to_error::Segment;
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{key}")),
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => {}
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

/// Deserialises `value` (an object with the read-only keys already gone)
/// into `T`, turning serde's complaints into a violation at their path.
pub fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: Value,
    prefix: &str,
) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = json_path(e.path());
        let mut message = e.inner().to_string();
        // (The path already ends with the unknown key.)
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((name, _)) = rest.split_once('`')
        {
            message =
                format!("unknown field `{name}` (see docs/services.md for the fields Agora reads)");
        }
        let path = if prefix.is_empty() || prefix == "/" {
            path
        } else if path == "/" {
            prefix.to_string()
        } else {
            format!("{prefix}{path}")
        };
        Rejection::at(&path, message)
    })
}

/// Reads a full app definition from JSON, relative ids resolved against
/// `base`, then normalises and validates it.
pub fn parse_app(value: Value, base: &PathId, ctx: &Context) -> Result<AppDefinition, Rejection> {
    let value = strip_read_only(value)?;
    let mut app: AppDefinition = deserialize_at(value, "")?;
    normalise(&mut app, base)?;
    let violations = validate(&app, ctx);
    if violations.is_empty() {
        Ok(app)
    } else {
        Err(Rejection::Invalid(violations))
    }
}

/// The object without Marathon's read-only keys; 422 if not an object.
pub fn strip_read_only(value: Value) -> Result<Value, Rejection> {
    match value {
        Value::Object(mut map) => {
            for key in READ_ONLY_KEYS {
                map.remove(*key);
            }
            Ok(Value::Object(map))
        }
        other => Err(Rejection::at(
            "/",
            format!("expected a JSON object, found {}", kind_of(&other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Fills Marathon's derived defaults: the absolute id, `ports` as
/// `portDefinitions`, one default port, port mappings in their current
/// place.
fn normalise(app: &mut AppDefinition, base: &PathId) -> Result<(), Rejection> {
    if app.id.trim().is_empty() {
        return Err(Rejection::at(
            "/id",
            "an app needs an id, e.g. \"/team/web\"",
        ));
    }
    let id = PathId::parse_in(&app.id, base).map_err(|e| Rejection::at("/id", e))?;
    if id.is_root() {
        return Err(Rejection::at("/id", "the root group '/' cannot be an app"));
    }
    app.id = id.to_string();
    if let Some(ports) = app.ports.take()
        && app.port_definitions.is_none()
    {
        app.port_definitions = Some(
            ports
                .into_iter()
                .map(|port| PortDefinition {
                    port,
                    protocol: "tcp".into(),
                    name: None,
                    labels: Default::default(),
                })
                .collect(),
        );
    }
    if let Some(container) = app.container.as_mut()
        && let Some(docker) = container.docker.as_mut()
        && let Some(mappings) = docker.port_mappings.take()
        && container.port_mappings.is_none()
    {
        container.port_mappings = Some(mappings);
    }
    match app.network_mode() {
        crate::app::NetworkMode::Host => {
            if app.port_definitions.is_none() {
                app.port_definitions = Some(vec![PortDefinition {
                    port: 0,
                    protocol: "tcp".into(),
                    name: Some("default".into()),
                    labels: Default::default(),
                }]);
            }
        }
        crate::app::NetworkMode::Bridge => {
            if let Some(c) = app.container.as_mut()
                && c.port_mappings.is_none()
            {
                c.port_mappings = Some(vec![PortMapping {
                    container_port: 0,
                    host_port: Some(0),
                    service_port: 0,
                    protocol: "tcp".into(),
                    name: Some("default".into()),
                    labels: Default::default(),
                }]);
            }
        }
        crate::app::NetworkMode::None => {}
    }
    let parent = id.parent();
    for (i, dep) in app.dependencies.iter_mut().enumerate() {
        let resolved = PathId::parse_in(dep, &parent)
            .map_err(|e| Rejection::at(&format!("/dependencies/{i}"), e))?;
        *dep = resolved.to_string();
    }
    Ok(())
}

/// Collects violations per path.
#[derive(Default)]
struct Report(Vec<Violation>);

impl Report {
    fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        if let Some(v) = self.0.iter_mut().find(|v| v.path == path) {
            v.errors.push(error);
        } else {
            self.0.push(Violation {
                path,
                errors: vec![error],
            });
        }
    }

    fn check(&mut self, ok: bool, path: &str, error: impl FnOnce() -> String) {
        if !ok {
            self.add(path, error());
        }
    }
}

const UNSUPPORTED: &str = "is not supported by Agora (see docs/services.md)";

/// Every rule of a (normalised) definition; empty when it is valid.
pub fn validate(app: &AppDefinition, ctx: &Context) -> Vec<Violation> {
    let mut r = Report::default();
    let has_cmd = app.cmd.is_some();
    let has_args = app.args.as_ref().is_some_and(|a| !a.is_empty());
    if has_cmd && has_args {
        r.add("/", "AppDefinition must not contain both 'cmd' and 'args'");
    }
    if !has_cmd && !has_args && app.docker_image().is_none() {
        r.add(
            "/",
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container' with a Docker image",
        );
    }
    if let Some(cmd) = &app.cmd {
        r.check(!cmd.trim().is_empty(), "/cmd", || {
            "must not be empty".into()
        });
    }
    r.check(
        (0..=MAX_INSTANCES).contains(&app.instances),
        "/instances",
        || format!("must be between 0 and {MAX_INSTANCES}"),
    );
    r.check(app.cpus >= 0.001, "/cpus", || {
        "must be at least 0.001".into()
    });
    r.check(app.mem >= 0.0, "/mem", || "must not be negative".into());
    r.check(app.disk >= 0.0, "/disk", || "must not be negative".into());
    r.check(app.gpus >= 0, "/gpus", || "must not be negative".into());
    r.check(app.backoff_seconds >= 0, "/backoffSeconds", || {
        "must not be negative".into()
    });
    r.check(app.backoff_factor >= 1.0, "/backoffFactor", || {
        "must be at least 1.0".into()
    });
    r.check(
        app.max_launch_delay_seconds >= 0,
        "/maxLaunchDelaySeconds",
        || "must not be negative".into(),
    );
    if let Some(g) = app.task_kill_grace_period_seconds {
        r.check(g >= 0, "/taskKillGracePeriodSeconds", || {
            "must not be negative".into()
        });
    }
    let us = app.upgrade_strategy;
    r.check(
        (0.0..=1.0).contains(&us.minimum_health_capacity),
        "/upgradeStrategy/minimumHealthCapacity",
        || "must be between 0.0 and 1.0".into(),
    );
    r.check(
        (0.0..=1.0).contains(&us.maximum_over_capacity),
        "/upgradeStrategy/maximumOverCapacity",
        || "must be between 0.0 and 1.0".into(),
    );
    if let Some((inactive, expunge)) = app.unreachable_waits() {
        r.check(
            inactive >= 1000,
            "/unreachableStrategy/inactiveAfterSeconds",
            || "must be at least 1".into(),
        );
        r.check(
            expunge > inactive,
            "/unreachableStrategy/expungeAfterSeconds",
            || "must be greater than inactiveAfterSeconds".into(),
        );
    }
    for key in app.env.keys() {
        r.check(ENV_NAME.is_match(key), &format!("/env/{key}"), || {
            "an environment variable name must match ^[a-zA-Z_][a-zA-Z0-9_]*$".into()
        });
    }
    for (i, c) in app.constraints.iter().enumerate() {
        if let Err(e) = parse_constraint(c) {
            r.add(format!("/constraints/{i}"), e);
        }
    }
    let roles_ok = |role: &str| role == "*" || ctx.roles.iter().any(|r| r == role);
    if let Some(roles) = &app.accepted_resource_roles {
        r.check(!roles.is_empty(), "/acceptedResourceRoles", || {
            "must not be empty when given (leave it out to accept every role)".into()
        });
        let mut seen = BTreeSet::new();
        for (i, role) in roles.iter().enumerate() {
            r.check(
                seen.insert(role),
                &format!("/acceptedResourceRoles/{i}"),
                || format!("role '{role}' is listed twice"),
            );
            r.check(
                roles_ok(role),
                &format!("/acceptedResourceRoles/{i}"),
                || {
                    format!(
                        "role '{role}' is neither '*' nor a role of this framework ({})",
                        ctx.roles.join(", ")
                    )
                },
            );
        }
    }
    if let Some(role) = &app.role {
        r.check(roles_ok(role), "/role", || {
            format!(
                "role '{role}' is not a role of this framework ({})",
                ctx.roles.join(", ")
            )
        });
    }
    for (i, dep) in app.dependencies.iter().enumerate() {
        r.check(*dep != app.id, &format!("/dependencies/{i}"), || {
            "an app cannot depend on itself".into()
        });
    }
    if !(app.executor.is_empty() || app.executor == "//cmd") {
        r.add(
            "/executor",
            format!("custom executors {UNSUPPORTED}; use \"\" or \"//cmd\""),
        );
    }
    if !app.uris.is_empty() || !app.fetch.is_empty() || !app.store_urls.is_empty() {
        let path = if !app.uris.is_empty() {
            "/uris"
        } else if !app.fetch.is_empty() {
            "/fetch"
        } else {
            "/storeUrls"
        };
        r.add(
            path,
            format!("fetching artifacts {UNSUPPORTED}; bake them into a Docker image"),
        );
    }
    if app.residency.is_some() {
        r.add("/residency", format!("resident apps {UNSUPPORTED}"));
    }
    if app.ip_address.is_some() {
        r.add(
            "/ipAddress",
            format!("IP-per-task {UNSUPPORTED}; use networks"),
        );
    }
    if !app.secrets.is_empty() {
        r.add("/secrets", format!("secrets {UNSUPPORTED}"));
    }
    validate_networks(app, &mut r);
    validate_ports(app, &mut r);
    validate_container(app, &mut r);
    validate_checks(app, &mut r);
    r.0
}

fn validate_networks(app: &AppDefinition, r: &mut Report) {
    let Some(networks) = &app.networks else {
        return;
    };
    r.check(networks.len() <= 1, "/networks", || {
        "Agora runs an app on one network: give at most one".into()
    });
    for (i, n) in networks.iter().enumerate() {
        match n.mode.as_str() {
            "host" | "container/bridge" => {}
            "container" => r.add(
                format!("/networks/{i}/mode"),
                format!("named container networks {UNSUPPORTED}; use host or container/bridge"),
            ),
            other => r.add(
                format!("/networks/{i}/mode"),
                format!("'{other}' is not one of host, container/bridge, container"),
            ),
        }
    }
    if networks.iter().any(|n| n.mode == "container/bridge") && app.docker_image().is_none() {
        r.add("/networks", "bridge networking needs a Docker container");
    }
}

fn check_protocol(protocol: &str, path: &str, r: &mut Report) {
    r.check(
        matches!(protocol, "tcp" | "udp" | "udp,tcp" | "tcp,udp"),
        path,
        || format!("protocol '{protocol}' is not one of tcp, udp, udp,tcp"),
    );
}

fn validate_ports(app: &AppDefinition, r: &mut Report) {
    let defs = app.port_definitions.as_deref().unwrap_or(&[]);
    let mut names = BTreeSet::new();
    let mut fixed = BTreeSet::new();
    for (i, p) in defs.iter().enumerate() {
        let path = format!("/portDefinitions/{i}");
        r.check(
            (0..=65535).contains(&p.port),
            &format!("{path}/port"),
            || "must be between 0 and 65535".into(),
        );
        check_protocol(&p.protocol, &format!("{path}/protocol"), r);
        if let Some(name) = &p.name {
            r.check(PORT_NAME.is_match(name), &format!("{path}/name"), || {
                "a port name is lower-case letters, digits and inner dashes".into()
            });
            r.check(names.insert(name.clone()), &format!("{path}/name"), || {
                format!("port name '{name}' is used twice")
            });
        }
        if app.require_ports {
            r.check(p.port != 0, &format!("{path}/port"), || {
                "with requirePorts every port must be given (not 0)".into()
            });
        }
        if p.port != 0 {
            r.check(fixed.insert(p.port), &format!("{path}/port"), || {
                format!("port {} is listed twice", p.port)
            });
        }
    }
    if app.network_mode() != crate::app::NetworkMode::Host
        && app.port_definitions.as_ref().is_some_and(|d| !d.is_empty())
    {
        r.add(
            "/portDefinitions",
            "portDefinitions are for host networking; a bridged container uses container.portMappings",
        );
    }
}

fn validate_container(app: &AppDefinition, r: &mut Report) {
    let Some(c) = &app.container else {
        return;
    };
    match c.kind.as_str() {
        "DOCKER" => match &c.docker {
            None => r.add("/container/docker", "a DOCKER container needs docker.image"),
            Some(d) => {
                r.check(
                    !d.image.trim().is_empty(),
                    "/container/docker/image",
                    || "must not be empty".into(),
                );
                if let Some(n) = &d.network {
                    match n.as_str() {
                        "HOST" | "BRIDGE" | "NONE" => {}
                        "USER" => r.add(
                            "/container/docker/network",
                            format!("USER networks {UNSUPPORTED}"),
                        ),
                        other => r.add(
                            "/container/docker/network",
                            format!("'{other}' is not one of BRIDGE, HOST, NONE, USER"),
                        ),
                    }
                }
                if d.credential.is_some() {
                    r.add(
                        "/container/docker/credential",
                        format!("registry credentials {UNSUPPORTED}"),
                    );
                }
                for (i, p) in d.parameters.iter().enumerate() {
                    r.check(
                        !p.key.is_empty(),
                        &format!("/container/docker/parameters/{i}/key"),
                        || "must not be empty".into(),
                    );
                }
            }
        },
        "MESOS" => {
            if c.docker.is_some() {
                r.add(
                    "/container/type",
                    format!("MESOS containers with images {UNSUPPORTED}; use type DOCKER"),
                );
            }
        }
        other => r.add(
            "/container/type",
            format!("'{other}' is not one of DOCKER, MESOS"),
        ),
    }
    for (i, v) in c.volumes.iter().enumerate() {
        let path = format!("/container/volumes/{i}");
        r.check(
            !v.container_path.is_empty(),
            &format!("{path}/containerPath"),
            || "must not be empty".into(),
        );
        r.check(
            matches!(v.mode.as_str(), "RO" | "RW"),
            &format!("{path}/mode"),
            || format!("'{}' is not one of RO, RW", v.mode),
        );
        if v.persistent.is_some() || v.external.is_some() {
            r.add(
                path.clone(),
                format!("persistent and external volumes {UNSUPPORTED}"),
            );
        } else {
            r.check(
                v.host_path.as_ref().is_some_and(|h| !h.is_empty()),
                &format!("{path}/hostPath"),
                || "a volume needs a hostPath".into(),
            );
        }
    }
    if let Some(mappings) = &c.port_mappings {
        let bridged = app.network_mode() == crate::app::NetworkMode::Bridge;
        if !bridged && !mappings.is_empty() {
            r.add(
                "/container/portMappings",
                "portMappings need bridge networking (docker.network BRIDGE or networks [{\"mode\":\"container/bridge\"}])",
            );
        }
        let mut names = BTreeSet::new();
        for (i, m) in mappings.iter().enumerate() {
            let path = format!("/container/portMappings/{i}");
            r.check(
                (0..=65535).contains(&m.container_port),
                &format!("{path}/containerPort"),
                || "must be between 0 and 65535".into(),
            );
            r.check(
                (0..=65535).contains(&m.host_port.unwrap_or(0)),
                &format!("{path}/hostPort"),
                || "must be between 0 and 65535".into(),
            );
            r.check(
                (0..=65535).contains(&m.service_port),
                &format!("{path}/servicePort"),
                || "must be between 0 and 65535".into(),
            );
            check_protocol(&m.protocol, &format!("{path}/protocol"), r);
            if let Some(name) = &m.name {
                r.check(names.insert(name.clone()), &format!("{path}/name"), || {
                    format!("port name '{name}' is used twice")
                });
            }
        }
    }
}

fn validate_checks(app: &AppDefinition, r: &mut Report) {
    let ports = app.host_port_count() as i64;
    for (i, hc) in app.health_checks.iter().enumerate() {
        let path = format!("/healthChecks/{i}");
        let proto = hc.protocol.as_str();
        r.check(
            matches!(
                proto,
                "HTTP" | "HTTPS" | "TCP" | "COMMAND" | "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP"
            ),
            &format!("{path}/protocol"),
            || format!("'{proto}' is not one of HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP"),
        );
        if proto == "COMMAND" {
            r.check(hc.command.is_some(), &format!("{path}/command"), || {
                "a COMMAND health check needs a command".into()
            });
        } else if hc.port.is_none() {
            let index = hc.port_index.unwrap_or(0);
            r.check(
                index >= 0 && index < ports.max(0),
                &format!("{path}/portIndex"),
                || format!("the app has {ports} port(s); portIndex {index} names none of them"),
            );
        }
        if let Some(p) = &hc.path {
            r.check(p.starts_with('/'), &format!("{path}/path"), || {
                "must start with '/'".into()
            });
        }
        for (field, v) in [
            ("gracePeriodSeconds", hc.grace_period_seconds),
            ("intervalSeconds", hc.interval_seconds),
            ("timeoutSeconds", hc.timeout_seconds),
            ("maxConsecutiveFailures", hc.max_consecutive_failures),
            ("delaySeconds", hc.delay_seconds),
        ] {
            r.check(v >= 0, &format!("{path}/{field}"), || {
                "must not be negative".into()
            });
        }
        for (field, v) in [
            ("intervalSeconds", hc.interval_seconds),
            ("timeoutSeconds", hc.timeout_seconds),
        ] {
            r.check(v != 0, &format!("{path}/{field}"), || {
                "must be positive".into()
            });
        }
        for (field, v) in [
            ("gracePeriodSeconds", hc.grace_period_seconds),
            ("intervalSeconds", hc.interval_seconds),
            ("timeoutSeconds", hc.timeout_seconds),
            ("delaySeconds", hc.delay_seconds),
        ] {
            r.check(
                v as f64 <= agora_proto::health::MAX_SECONDS,
                &format!("{path}/{field}"),
                || {
                    format!(
                        "must be at most {} (a week)",
                        agora_proto::health::MAX_SECONDS
                    )
                },
            );
        }
    }
    let port_names: BTreeSet<&str> = app
        .port_definitions()
        .iter()
        .filter_map(|p| p.name.as_deref())
        .chain(app.port_mappings().iter().filter_map(|m| m.name.as_deref()))
        .collect();
    for (i, rc) in app.readiness_checks.iter().enumerate() {
        let path = format!("/readinessChecks/{i}");
        r.check(
            matches!(rc.protocol.as_str(), "HTTP" | "HTTPS"),
            &format!("{path}/protocol"),
            || format!("'{}' is not one of HTTP, HTTPS", rc.protocol),
        );
        r.check(
            port_names.contains(rc.port_name.as_str()),
            &format!("{path}/portName"),
            || format!("no port of the app is named '{}'", rc.port_name),
        );
        r.check(
            rc.interval_seconds > 0,
            &format!("{path}/intervalSeconds"),
            || "must be positive".into(),
        );
        r.check(
            rc.timeout_seconds >= 0 && rc.timeout_seconds < rc.interval_seconds,
            &format!("{path}/timeoutSeconds"),
            || "must be smaller than intervalSeconds".into(),
        );
        for (j, code) in rc.http_status_codes_for_ready.iter().enumerate() {
            r.check(
                (100..=999).contains(code),
                &format!("{path}/httpStatusCodesForReady/{j}"),
                || "must be between 100 and 999".into(),
            );
        }
    }
    let checked = |v: &Violation| {
        v.path.starts_with("/healthChecks") || v.path.starts_with("/readinessChecks")
    };
    if !r.0.iter().any(checked) {
        agent_rules(app, r);
    }
}

/// The checks as the agents get them, through the rules the master and the
/// agents apply (`agora_proto::health::task_checks`): what passes here is
/// never refused at launch (`TASK_ERROR` for every instance).
fn agent_rules(app: &AppDefinition, r: &mut Report) {
    if app.health_checks.is_empty() && app.readiness_checks.is_empty() {
        return;
    }
    let n = app.host_port_count() as u64;
    let ports: Vec<u64> = (0..n).map(|i| 31_000 + i).collect();
    let mut task = agora_proto::v1::TaskInfo {
        health_checks: crate::taskinfo::health_checks(app, &ports),
        readiness_checks: crate::taskinfo::readiness_checks(app, &ports),
        ..Default::default()
    };
    if n > 0
        && let Ok(res) = agora_proto::Resources::parse(&format!("ports:[31000-{}]", 31_000 + n - 1))
    {
        task.resources = res.to_proto();
    }
    if let Err(e) = agora_proto::health::task_checks(&task) {
        let (kind, rest) = match e.strip_prefix("health_checks[") {
            Some(rest) => ("healthChecks", rest),
            None => (
                "readinessChecks",
                e.strip_prefix("readiness_checks[").unwrap_or_default(),
            ),
        };
        let index = rest.split(']').next().unwrap_or("0");
        r.add(
            format!("/{kind}/{index}"),
            format!("the agents would refuse it: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            roles: vec!["*".into()],
        }
    }

    fn parse(v: Value) -> Result<AppDefinition, Rejection> {
        parse_app(v, &PathId::root(), &ctx())
    }

    fn paths(r: Rejection) -> Vec<String> {
        match r {
            Rejection::Invalid(v) => v.into_iter().map(|v| v.path).collect(),
            Rejection::BadJson(m) => panic!("expected 422, got 400 {m}"),
        }
    }

    #[test]
    fn a_minimal_app_is_valid_and_normalised() {
        let app = parse(json!({"id": "web", "cmd": "sleep 10"})).unwrap();
        assert_eq!(app.id, "/web");
        let defs = app.port_definitions.unwrap();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].port, 0);
    }

    #[test]
    fn read_only_keys_are_ignored() {
        let app = parse(
            json!({"id": "/web", "cmd": "x", "version": "2020-01-01T00:00:00.000Z",
                               "tasksRunning": 3, "deployments": [], "tasks": []}),
        )
        .unwrap();
        assert_eq!(app.id, "/web");
    }

    #[test]
    fn bad_json_is_400() {
        assert!(matches!(
            parse_json(b"{\"id\": "),
            Err(Rejection::BadJson(_))
        ));
    }

    #[test]
    fn wrong_types_and_unknown_fields_name_their_path() {
        assert_eq!(
            paths(parse(json!({"id": "/a", "cmd": "x", "cpus": "two"})).unwrap_err()),
            ["/cpus"]
        );
        assert_eq!(
            paths(
                parse(json!({"id": "/a", "cmd": "x", "container": {"docker": {"image": 3}}}))
                    .unwrap_err()
            ),
            ["/container/docker/image"]
        );
        assert_eq!(
            paths(parse(json!({"id": "/a", "cmd": "x", "healthcheck": []})).unwrap_err()),
            ["/healthcheck"]
        );
        assert_eq!(
            paths(
                parse(json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"minimum": 1}}))
                    .unwrap_err()
            ),
            ["/upgradeStrategy/minimum"]
        );
        assert_eq!(paths(parse(json!([1, 2])).unwrap_err()), ["/"]);
    }

    #[test]
    fn rules_name_their_path() {
        let cases = [
            (json!({"cmd": "x"}), "/id"),
            (json!({"id": "/Web", "cmd": "x"}), "/id"),
            (json!({"id": "/a"}), "/"),
            (json!({"id": "/a", "cmd": "x", "args": ["y"]}), "/"),
            (
                json!({"id": "/a", "cmd": "x", "instances": -1}),
                "/instances",
            ),
            (json!({"id": "/a", "cmd": "x", "cpus": 0}), "/cpus"),
            (json!({"id": "/a", "cmd": "x", "mem": -1}), "/mem"),
            (
                json!({"id": "/a", "cmd": "x", "backoffFactor": 0.5}),
                "/backoffFactor",
            ),
            (
                json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}}),
                "/upgradeStrategy/minimumHealthCapacity",
            ),
            (
                json!({"id": "/a", "cmd": "x", "constraints": [["hostname", "BOGUS"]]}),
                "/constraints/0",
            ),
            (
                json!({"id": "/a", "cmd": "x", "constraints": [["hostname", "MAX_PER", "zero"]]}),
                "/constraints/0",
            ),
            (
                json!({"id": "/a", "cmd": "x", "env": {"1BAD": "v"}}),
                "/env/1BAD",
            ),
            (
                json!({"id": "/a", "cmd": "x", "acceptedResourceRoles": ["nope"]}),
                "/acceptedResourceRoles/0",
            ),
            (
                json!({"id": "/a", "cmd": "x", "portDefinitions": [{"port": 70000}]}),
                "/portDefinitions/0/port",
            ),
            (
                json!({"id": "/a", "cmd": "x", "requirePorts": true, "portDefinitions": [{"port": 0}]}),
                "/portDefinitions/0/port",
            ),
            (
                json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": ""}}}),
                "/container/docker/image",
            ),
            (
                json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "x", "network": "USER"}}}),
                "/container/docker/network",
            ),
            (
                json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "x"}, "portMappings": [{"containerPort": 80}]}}),
                "/container/portMappings",
            ),
            (
                json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "x"}, "volumes": [{"containerPath": "/d", "mode": "RW"}]}}),
                "/container/volumes/0/hostPath",
            ),
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "HTTP", "portIndex": 3}]}),
                "/healthChecks/0/portIndex",
            ),
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "COMMAND"}]}),
                "/healthChecks/0/command",
            ),
            (
                json!({"id": "/a", "cmd": "x", "readinessChecks": [{"portName": "none"}]}),
                "/readinessChecks/0/portName",
            ),
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"intervalSeconds": 0}]}),
                "/healthChecks/0/intervalSeconds",
            ),
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"gracePeriodSeconds": 9_000_000}]}),
                "/healthChecks/0/gracePeriodSeconds",
            ),
            // What only the agents' rules catch: said at once, not as a
            // TASK_ERROR of every instance.
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "HTTP", "path": "/a b"}]}),
                "/healthChecks/0",
            ),
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "TCP"}, {"protocol": "HTTP", "port": 70000}]}),
                "/healthChecks/1",
            ),
            (
                json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "COMMAND", "command": {"value": ""}}]}),
                "/healthChecks/0",
            ),
            (
                json!({"id": "/a", "cmd": "x", "portDefinitions": [{"port": 0, "name": "http-api"}],
                    "readinessChecks": [{"timeoutSeconds": 0}]}),
                "/readinessChecks/0",
            ),
            (
                json!({"id": "/a", "cmd": "x", "unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5}}),
                "/unreachableStrategy/expungeAfterSeconds",
            ),
            (
                json!({"id": "/a", "cmd": "x", "uris": ["http://x/y.tgz"]}),
                "/uris",
            ),
            (
                json!({"id": "/a", "cmd": "x", "networks": [{"mode": "container", "name": "n"}]}),
                "/networks/0/mode",
            ),
            (
                json!({"id": "/a", "cmd": "x", "killSelection": "RANDOM"}),
                "/killSelection",
            ),
        ];
        for (body, path) in cases {
            let got = paths(parse(body.clone()).unwrap_err());
            assert!(
                got.iter().any(|p| p == path),
                "{body}: expected a violation at {path}, got {got:?}"
            );
        }
    }

    #[test]
    fn docker_bridge_gets_a_default_mapping_and_moves_legacy_mappings() {
        let app = parse(json!({"id": "/a", "container": {"type": "DOCKER",
            "docker": {"image": "x", "network": "BRIDGE"}}}))
        .unwrap();
        assert_eq!(app.port_mappings().len(), 1);
        assert!(app.port_definitions().is_empty());
        let app = parse(json!({"id": "/a", "container": {"type": "DOCKER",
            "docker": {"image": "x", "network": "BRIDGE", "portMappings": [{"containerPort": 80}, {"containerPort": 81}]}}}))
        .unwrap();
        assert_eq!(app.port_mappings().len(), 2);
    }

    #[test]
    fn legacy_ports_become_port_definitions() {
        let app = parse(json!({"id": "/a", "cmd": "x", "ports": [0, 0]})).unwrap();
        assert_eq!(app.port_definitions().len(), 2);
        let app = parse(json!({"id": "/a", "cmd": "x", "portDefinitions": []})).unwrap();
        assert_eq!(app.host_port_count(), 0);
    }
}
