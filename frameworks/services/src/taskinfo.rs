//! From an app and a placement to the task the agent runs. Pure.
//!
//! Environment (Marathon's names, and Agora's beside them): `PORT0..n`,
//! `PORT` (= `PORT0`), `PORTS` (comma-separated), `PORT_<NAME>` for named
//! ports, `HOST`, `MARATHON_APP_ID`, `MARATHON_APP_VERSION`,
//! `MARATHON_APP_LABELS` and `MARATHON_APP_LABEL_<KEY>`, `MESOS_TASK_ID`;
//! `AGORA_APP_ID`, `AGORA_APP_VERSION`, `AGORA_TASK_ID`, `AGORA_HOST`,
//! `AGORA_PORTS`. The app's own `env` wins over all of them.

use agora_proto::v1::{
    self, CommandInfo, ContainerInfo, Environment, KillPolicy, Label, TaskInfo, container_info,
    environment,
};

use crate::app::{AppDefinition, NetworkMode, StoredApp};
use crate::time;

/// Where an instance goes (from the offer matcher).
pub struct Slot<'a> {
    pub task_id: &'a str,
    pub agent_id: &'a str,
    pub hostname: &'a str,
    pub resources: Vec<v1::Resource>,
    pub ports: &'a [u64],
}

fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The environment of an instance.
pub fn environment(app: &StoredApp, slot: &Slot<'_>) -> Vec<(String, String)> {
    let def = &app.definition;
    let mut env: Vec<(String, String)> = Vec::new();
    let version = time::format(app.version);
    let ports: Vec<String> = slot.ports.iter().map(u64::to_string).collect();
    for (i, p) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), p.clone()));
    }
    if let Some(p) = ports.first() {
        env.push(("PORT".into(), p.clone()));
    }
    let names = def
        .port_definitions()
        .iter()
        .map(|p| p.name.clone())
        .chain(def.port_mappings().iter().map(|m| m.name.clone()));
    for (name, port) in names.zip(ports.iter()) {
        if let Some(name) = name {
            env.push((format!("PORT_{}", env_name(&name)), port.clone()));
        }
    }
    for (m, port) in def.port_mappings().iter().zip(ports.iter()) {
        if m.container_port != 0 {
            env.push((format!("PORT_{}", m.container_port), port.clone()));
        }
    }
    env.push(("PORTS".into(), ports.join(",")));
    env.push(("HOST".into(), slot.hostname.into()));
    env.push(("MARATHON_APP_ID".into(), def.id.clone()));
    env.push(("MARATHON_APP_VERSION".into(), version.clone()));
    env.push(("MESOS_TASK_ID".into(), slot.task_id.into()));
    let label_keys: Vec<String> = def.labels.keys().map(|k| env_name(k)).collect();
    env.push(("MARATHON_APP_LABELS".into(), label_keys.join(" ")));
    for (k, v) in &def.labels {
        env.push((format!("MARATHON_APP_LABEL_{}", env_name(k)), v.clone()));
    }
    env.push(("AGORA_APP_ID".into(), def.id.clone()));
    env.push(("AGORA_APP_VERSION".into(), version));
    env.push(("AGORA_TASK_ID".into(), slot.task_id.into()));
    env.push(("AGORA_HOST".into(), slot.hostname.into()));
    env.push(("AGORA_PORTS".into(), ports.join(",")));
    for (k, v) in &def.env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

fn command(def: &AppDefinition, env: Vec<(String, String)>) -> CommandInfo {
    let environment = Some(Environment {
        variables: env
            .into_iter()
            .map(|(name, value)| environment::Variable { name, value })
            .collect(),
    });
    let user = def.user.clone().unwrap_or_default();
    match (&def.cmd, &def.args) {
        (Some(cmd), _) => CommandInfo {
            shell: Some(true),
            value: cmd.clone(),
            environment,
            user,
            ..Default::default()
        },
        (None, Some(args)) if !args.is_empty() => {
            if def.docker_image().is_some() {
                // Arguments to the image's entrypoint.
                CommandInfo {
                    shell: Some(false),
                    value: String::new(),
                    arguments: args.clone(),
                    environment,
                    user,
                }
            } else {
                CommandInfo {
                    shell: Some(false),
                    value: args[0].clone(),
                    arguments: args.clone(),
                    environment,
                    user,
                }
            }
        }
        // The image's own command.
        _ => CommandInfo {
            shell: Some(false),
            environment,
            user,
            ..Default::default()
        },
    }
}

fn container(def: &AppDefinition, ports: &[u64]) -> Option<ContainerInfo> {
    let c = def.container.as_ref()?;
    let d = c.docker.as_ref()?;
    use container_info::docker_info::{Network, Parameter, PortMapping};
    let network = match def.network_mode() {
        NetworkMode::Host => Network::Host,
        NetworkMode::Bridge => Network::Bridge,
        NetworkMode::None => Network::None,
    };
    let port_mappings = def
        .port_mappings()
        .iter()
        .zip(ports.iter())
        .map(|(m, host)| PortMapping {
            host_port: *host as u32,
            container_port: if m.container_port == 0 {
                *host as u32
            } else {
                m.container_port as u32
            },
            protocol: m.protocol.clone(),
        })
        .collect();
    Some(ContainerInfo {
        r#type: container_info::Type::Docker as i32,
        volumes: c
            .volumes
            .iter()
            .map(|v| v1::Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone().unwrap_or_default(),
                mode: if v.mode == "RO" {
                    v1::volume::Mode::Ro
                } else {
                    v1::volume::Mode::Rw
                } as i32,
            })
            .collect(),
        docker: Some(container_info::DockerInfo {
            image: d.image.clone(),
            network: network as i32,
            port_mappings,
            privileged: d.privileged,
            parameters: d
                .parameters
                .iter()
                .map(|p| Parameter {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect(),
            force_pull_image: d.force_pull_image,
        }),
        hostname: String::new(),
    })
}

/// The app's `healthChecks` as the agent runs them, ports resolved to the
/// instance's host ports (`portIndex` into them, as `PORT0..n`).
/// `maxConsecutiveFailures: 0` means "never kill" (Marathon's rule).
pub fn health_checks(def: &AppDefinition, ports: &[u64]) -> Vec<v1::HealthCheck> {
    use v1::health_check::{HttpCheckInfo, TcpCheckInfo, Type};
    let port_of = |hc: &crate::app::HealthCheck| -> Option<u32> {
        match hc.port {
            Some(p) if p > 0 => Some(p as u32),
            _ => ports
                .get(hc.port_index.unwrap_or(0).max(0) as usize)
                .map(|p| *p as u32),
        }
    };
    def.health_checks
        .iter()
        .map(|hc| {
            let mut check = v1::HealthCheck {
                delay_seconds: Some(hc.delay_seconds as f64),
                interval_seconds: Some(hc.interval_seconds as f64),
                timeout_seconds: Some(hc.timeout_seconds as f64),
                grace_period_seconds: Some(hc.grace_period_seconds as f64),
                consecutive_failures: Some(hc.max_consecutive_failures.max(1) as u32),
                kill_on_failure: Some(hc.max_consecutive_failures > 0),
                ..Default::default()
            };
            match hc.protocol.as_str() {
                "TCP" | "MESOS_TCP" => {
                    check.r#type = Type::Tcp as i32;
                    check.tcp = Some(TcpCheckInfo {
                        port: port_of(hc),
                        port_index: None,
                    });
                }
                "COMMAND" => {
                    check.r#type = Type::Command as i32;
                    check.command = Some(CommandInfo {
                        shell: Some(true),
                        value: hc
                            .command
                            .as_ref()
                            .map(|c| c.value.clone())
                            .unwrap_or_default(),
                        ..Default::default()
                    });
                }
                protocol => {
                    check.r#type = Type::Http as i32;
                    check.http = Some(HttpCheckInfo {
                        scheme: if protocol.ends_with("HTTPS") {
                            "https".into()
                        } else {
                            "http".into()
                        },
                        port: port_of(hc),
                        port_index: None,
                        path: hc.path.clone().unwrap_or_else(|| "/".into()),
                        statuses: Vec::new(),
                    });
                }
            }
            check
        })
        .collect()
}

/// The app's `readinessChecks`, each on the host port of the port named
/// `portName`.
pub fn readiness_checks(def: &AppDefinition, ports: &[u64]) -> Vec<v1::ReadinessCheck> {
    let names: Vec<Option<&str>> = def
        .port_definitions()
        .iter()
        .map(|p| p.name.as_deref())
        .chain(def.port_mappings().iter().map(|m| m.name.as_deref()))
        .collect();
    def.readiness_checks
        .iter()
        .map(|rc| {
            let index = names
                .iter()
                .position(|n| *n == Some(rc.port_name.as_str()))
                .unwrap_or(0);
            v1::ReadinessCheck {
                http: Some(v1::health_check::HttpCheckInfo {
                    scheme: if rc.protocol == "HTTPS" {
                        "https".into()
                    } else {
                        "http".into()
                    },
                    port: ports.get(index).map(|p| *p as u32),
                    port_index: None,
                    path: rc.path.clone(),
                    statuses: rc
                        .http_status_codes_for_ready
                        .iter()
                        .map(|c| *c as u32)
                        .collect(),
                }),
                interval_seconds: Some(rc.interval_seconds as f64),
                timeout_seconds: Some(rc.timeout_seconds as f64),
            }
        })
        .collect()
}

/// The task to launch for one instance of `app`.
pub fn task_info(app: &StoredApp, slot: Slot<'_>) -> TaskInfo {
    let def = &app.definition;
    let env = environment(app, &slot);
    TaskInfo {
        name: def.id.trim_start_matches('/').replace('/', "."),
        task_id: slot.task_id.to_string(),
        agent_id: slot.agent_id.to_string(),
        command: Some(command(def, env)),
        container: container(def, slot.ports),
        kill_policy: def.task_kill_grace_period_seconds.map(|g| KillPolicy {
            grace_period: Some(g as f64),
        }),
        labels: def
            .labels
            .iter()
            .map(|(k, v)| Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        health_checks: health_checks(def, slot.ports),
        readiness_checks: readiness_checks(def, slot.ports),
        resources: slot.resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path_id::PathId;
    use crate::validation::{Context, parse_app};

    fn stored(v: serde_json::Value) -> StoredApp {
        let definition = parse_app(
            v,
            &PathId::root(),
            &Context {
                roles: vec!["*".into()],
            },
        )
        .unwrap();
        StoredApp {
            definition,
            version: 0,
            last_scaling_at: 0,
            last_config_change_at: 0,
        }
    }

    fn slot<'a>(ports: &'a [u64]) -> Slot<'a> {
        Slot {
            task_id: "web.1",
            agent_id: "a1",
            hostname: "host1",
            resources: vec![],
            ports,
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn ports_and_ids_in_the_environment() {
        let app = stored(serde_json::json!({"id": "/team/web", "cmd": "x",
            "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0}],
            "labels": {"tier": "front"}, "env": {"HOST": "mine"}}));
        let env = environment(&app, &slot(&[31000, 31001]));
        assert_eq!(get(&env, "PORT0"), Some("31000"));
        assert_eq!(get(&env, "PORT1"), Some("31001"));
        assert_eq!(get(&env, "PORT"), Some("31000"));
        assert_eq!(get(&env, "PORTS"), Some("31000,31001"));
        assert_eq!(get(&env, "PORT_HTTP"), Some("31000"));
        assert_eq!(get(&env, "HOST"), Some("mine"), "the app's env wins");
        assert_eq!(get(&env, "AGORA_HOST"), Some("host1"));
        assert_eq!(get(&env, "MARATHON_APP_ID"), Some("/team/web"));
        assert_eq!(get(&env, "AGORA_APP_ID"), Some("/team/web"));
        assert_eq!(get(&env, "MESOS_TASK_ID"), Some("web.1"));
        assert_eq!(get(&env, "MARATHON_APP_LABEL_TIER"), Some("front"));
    }

    #[test]
    fn docker_bridge_maps_ports() {
        let app = stored(
            serde_json::json!({"id": "/web", "container": {"type": "DOCKER",
            "docker": {"image": "busybox", "network": "BRIDGE"},
            "portMappings": [{"containerPort": 80}, {"containerPort": 0}]}, "args": ["httpd"]}),
        );
        let t = task_info(&app, slot(&[31000, 31001]));
        let d = t.container.unwrap().docker.unwrap();
        assert_eq!(d.image, "busybox");
        assert_eq!(d.port_mappings[0].container_port, 80);
        assert_eq!(d.port_mappings[1].container_port, 31001);
        let cmd = t.command.unwrap();
        assert_eq!(cmd.shell, Some(false));
        assert_eq!(cmd.arguments, ["httpd"]);
    }

    #[test]
    fn health_and_readiness_checks_use_the_instance_ports() {
        let app = stored(serde_json::json!({"id": "/web", "cmd": "x",
            "portDefinitions": [{"port": 0, "name": "admin"}, {"port": 0, "name": "http"}],
            "healthChecks": [
                {"protocol": "HTTP", "path": "/health", "portIndex": 1, "maxConsecutiveFailures": 0},
                {"protocol": "TCP"},
                {"protocol": "COMMAND", "command": {"value": "true"}, "intervalSeconds": 5}
            ],
            "readinessChecks": [{"portName": "http", "path": "/ready"}]}));
        let t = task_info(&app, slot(&[31000, 31001]));
        let http = &t.health_checks[0];
        assert_eq!(http.http.as_ref().unwrap().port, Some(31001));
        assert_eq!(http.http.as_ref().unwrap().path, "/health");
        assert_eq!(http.kill_on_failure, Some(false), "0 failures: never kill");
        assert_eq!(http.grace_period_seconds, Some(300.0));
        assert_eq!(t.health_checks[1].tcp.as_ref().unwrap().port, Some(31000));
        assert_eq!(t.health_checks[1].kill_on_failure, Some(true));
        assert_eq!(t.health_checks[2].command.as_ref().unwrap().value, "true");
        assert_eq!(t.health_checks[2].interval_seconds, Some(5.0));
        let ready = &t.readiness_checks[0];
        assert_eq!(ready.http.as_ref().unwrap().port, Some(31001));
        assert_eq!(ready.http.as_ref().unwrap().statuses, [200]);
        // The checks pass the rules the master and the agents apply.
        agora_proto::health::task_checks(&t).unwrap();
    }

    #[test]
    fn shell_commands() {
        let app = stored(
            serde_json::json!({"id": "/web", "cmd": "sleep 1", "taskKillGracePeriodSeconds": 7}),
        );
        let t = task_info(&app, slot(&[1]));
        assert_eq!(t.command.as_ref().unwrap().shell, Some(true));
        assert_eq!(t.command.as_ref().unwrap().value, "sleep 1");
        assert!(t.container.is_none());
        assert_eq!(t.kill_policy.unwrap().grace_period, Some(7.0));
        assert_eq!(t.name, "web");
    }
}
