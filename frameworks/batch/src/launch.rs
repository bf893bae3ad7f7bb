//! From a job's run spec to what the offer matcher places and what the
//! master launches.

use agora_framework_kit::constraints::Constraint;
use agora_framework_kit::matcher::{PortRequest, TaskRequest};
use agora_proto::Resources;
use agora_proto::v1;

use crate::spec::{JobSpec, RunSpec, VolumeMode};

/// The job's placement constraints in the kit's form; the error names the
/// constraint that cannot be used.
pub fn constraints(run: &RunSpec) -> Result<Vec<Constraint>, (usize, String)> {
    run.placement
        .constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let op = format!("{:?}", c.operator);
            let mut parts = vec![c.attribute.clone(), op];
            parts.extend(c.value.clone());
            Constraint::parse(&parts).map_err(|e| (i, e))
        })
        .collect()
}

/// The scalar resources a run's task asks for.
pub fn resources(run: &RunSpec) -> Resources {
    let mut r = Resources::new();
    for (name, value) in [("cpus", run.cpus), ("mem", run.mem), ("disk", run.disk)] {
        if value > 0.0 {
            // Validated finite and in range before it was stored.
            let _ = r.try_add_resource(agora_proto::Resource::scalar(name, value));
        }
    }
    r
}

/// What the matcher is asked to place for one attempt.
pub fn request(
    job: &JobSpec,
    key: String,
    role: &str,
    constraints: Vec<Constraint>,
) -> TaskRequest {
    TaskRequest {
        key,
        group: job.id.clone(),
        resources: resources(&job.run),
        ports: PortRequest::None,
        accepted_roles: vec![role.to_string()],
        constraints,
    }
}

/// The task the master launches for one attempt.
pub fn task_info(
    job: &JobSpec,
    run_id: &str,
    scheduled_at: jiff::Timestamp,
    task_id: &str,
    agent_id: &str,
    resources: Vec<v1::Resource>,
) -> v1::TaskInfo {
    let spec = &job.run;
    let mut variables: Vec<v1::environment::Variable> = spec
        .env
        .iter()
        .map(|(name, value)| v1::environment::Variable {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    // Who the task is, for scripts that record or name their output.
    let attempt = crate::run::parse_task_id(task_id).map_or(0, |(_, _, a)| a);
    for (name, value) in [
        ("AGORA_JOB_ID", job.id.clone()),
        ("AGORA_RUN_ID", run_id.to_string()),
        ("AGORA_RUN_SCHEDULED_AT", scheduled_at.to_string()),
        ("AGORA_RUN_ATTEMPT", attempt.to_string()),
    ] {
        if !spec.env.contains_key(name) {
            variables.push(v1::environment::Variable {
                name: name.into(),
                value,
            });
        }
    }
    let environment = v1::Environment { variables };
    let command = match (&spec.cmd, &spec.args) {
        (Some(cmd), _) => v1::CommandInfo {
            shell: Some(true),
            value: cmd.clone(),
            arguments: Vec::new(),
            environment: Some(environment),
            user: spec.user.clone().unwrap_or_default(),
        },
        (None, Some(args)) if spec.docker.is_some() => v1::CommandInfo {
            // Arguments to the image's entrypoint.
            shell: Some(false),
            value: String::new(),
            arguments: args.clone(),
            environment: Some(environment),
            user: spec.user.clone().unwrap_or_default(),
        },
        (None, Some(args)) => v1::CommandInfo {
            shell: Some(false),
            value: args.first().cloned().unwrap_or_default(),
            arguments: args.clone(),
            environment: Some(environment),
            user: spec.user.clone().unwrap_or_default(),
        },
        // The image's own command.
        (None, None) => v1::CommandInfo {
            shell: Some(false),
            value: String::new(),
            arguments: Vec::new(),
            environment: Some(environment),
            user: spec.user.clone().unwrap_or_default(),
        },
    };
    let container = spec.docker.as_ref().map(|d| v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        volumes: spec
            .volumes
            .iter()
            .map(|v| v1::Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone().unwrap_or_default(),
                mode: match v.mode {
                    VolumeMode::RW => v1::volume::Mode::Rw as i32,
                    VolumeMode::RO => v1::volume::Mode::Ro as i32,
                },
            })
            .collect(),
        docker: Some(v1::container_info::DockerInfo {
            image: d.image.clone(),
            network: v1::container_info::docker_info::Network::Host as i32,
            privileged: d.privileged,
            force_pull_image: d.force_pull_image,
            parameters: d
                .parameters
                .iter()
                .map(|p| v1::container_info::docker_info::Parameter {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut labels: Vec<v1::Label> = job
        .labels
        .iter()
        .map(|(k, v)| v1::Label {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    labels.push(v1::Label {
        key: "agora-batch/job".into(),
        value: job.id.clone(),
    });
    labels.push(v1::Label {
        key: "agora-batch/run".into(),
        value: run_id.to_string(),
    });
    v1::TaskInfo {
        name: job.id.clone(),
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        resources,
        command: Some(command),
        container,
        kill_policy: spec.task_kill_grace_period_seconds.map(|g| v1::KillPolicy {
            grace_period: Some(g),
        }),
        labels,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(json: &str) -> JobSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_shell_command() {
        let j = job(
            r#"{"id": "a", "run": {"cmd": "echo $X", "env": {"X": "1"}, "cpus": 0.5, "mem": 64}}"#,
        );
        assert_eq!(
            resources(&j.run),
            Resources::parse("cpus:0.5;mem:64").unwrap()
        );
        let t = task_info(
            &j,
            "r1",
            jiff::Timestamp::UNIX_EPOCH,
            "a_r1.1",
            "ag",
            vec![],
        );
        let c = t.command.unwrap();
        assert_eq!(c.shell, Some(true));
        assert_eq!(c.value, "echo $X");
        let vars = c.environment.unwrap().variables;
        assert_eq!(vars[0].name, "X");
        assert!(
            vars.iter()
                .any(|v| v.name == "AGORA_RUN_ID" && v.value == "r1")
        );
        assert!(
            vars.iter()
                .any(|v| v.name == "AGORA_RUN_ATTEMPT" && v.value == "1")
        );
        assert!(t.container.is_none());
        assert!(
            t.labels
                .iter()
                .any(|l| l.key == "agora-batch/run" && l.value == "r1")
        );
    }

    #[test]
    fn args_with_and_without_an_image() {
        let j = job(r#"{"id": "a", "run": {"args": ["/bin/echo", "hi"]}}"#);
        let c = task_info(&j, "r", jiff::Timestamp::UNIX_EPOCH, "t", "ag", vec![])
            .command
            .unwrap();
        assert_eq!((c.shell, c.value.as_str()), (Some(false), "/bin/echo"));
        assert_eq!(c.arguments, ["/bin/echo", "hi"]);
        let j = job(
            r#"{"id": "a", "run": {"args": ["--x"], "docker": {"image": "busybox"}, "taskKillGracePeriodSeconds": 2}}"#,
        );
        let t = task_info(&j, "r", jiff::Timestamp::UNIX_EPOCH, "t", "ag", vec![]);
        let c = t.command.unwrap();
        assert_eq!((c.shell, c.value.as_str()), (Some(false), ""));
        assert_eq!(c.arguments, ["--x"]);
        let container = t.container.unwrap();
        assert_eq!(container.r#type, v1::container_info::Type::Docker as i32);
        assert_eq!(container.docker.unwrap().image, "busybox");
        assert_eq!(t.kill_policy.unwrap().grace_period, Some(2.0));
    }

    #[test]
    fn metronome_constraints_map_onto_the_kit() {
        let j = job(
            r#"{"id": "a", "run": {"cmd": "x", "placement": {"constraints": [
                {"attribute": "rack", "operator": "EQ", "value": "r1"},
                {"attribute": "hostname", "operator": "LIKE", "value": "node-[0-9]+"}]}}}"#,
        );
        let cs = constraints(&j.run).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].op(), agora_framework_kit::constraints::Operator::Is);
        let bad = job(
            r#"{"id": "a", "run": {"cmd": "x", "placement": {"constraints": [
                {"attribute": "rack", "operator": "LIKE", "value": "r[1"}]}}}"#,
        );
        assert_eq!(constraints(&bad.run).unwrap_err().0, 0);
    }
}
