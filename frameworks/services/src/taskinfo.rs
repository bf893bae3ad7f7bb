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
        resources: slot.resources,
        ..Default::default()
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
