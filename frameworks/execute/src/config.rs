//! What to run, where, and with what.

use agora_proto::Resources;
use agora_scheduler::SchedulerConfig;

use crate::ExecuteError;

/// The resources a task gets when none are asked for.
pub const DEFAULT_RESOURCES: &str = "cpus:0.1;mem:32";

/// One task to run, as `agora execute` takes it from its flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteConfig {
    /// The leading master, `host:port` (`--master`).
    pub master: String,
    /// The task's name; its id is the name and a short random suffix
    /// (`--name`).
    pub name: String,
    /// The shell command to run, through `/bin/sh -c` (`--command`).
    pub command: String,
    /// What the task gets, exactly (`--resources`, Mesos text form). Needs
    /// `cpus` and `mem`; ports only when asked for, e.g. `ports:[31000-31000]`.
    pub resources: Resources,
    /// Environment variables of the task (`--env K=V`, repeatable).
    pub env: Vec<(String, String)>,
    /// The role to get offers for (`--role`, default `*`). Resources
    /// reserved for this role are written `cpus(role):1`.
    pub role: String,
    /// Run the command in this Docker image (`TaskInfo.container`) instead of
    /// directly on the agent.
    pub docker_image: Option<String>,
}

impl ExecuteConfig {
    /// A task named `name` running `command`, with [`DEFAULT_RESOURCES`],
    /// no environment, role `*`, no container.
    pub fn new(
        master: impl Into<String>,
        name: impl Into<String>,
        command: impl Into<String>,
    ) -> ExecuteConfig {
        ExecuteConfig {
            master: master.into(),
            name: name.into(),
            command: command.into(),
            resources: Resources::parse(DEFAULT_RESOURCES).unwrap_or_default(),
            env: Vec::new(),
            role: agora_proto::UNRESERVED.to_string(),
            docker_image: None,
        }
    }

    /// Checks everything that can be checked before talking to the master.
    pub fn validate(&self) -> Result<(), ExecuteError> {
        let invalid = |field: &'static str, problem: String| {
            Err(ExecuteError::InvalidConfig { field, problem })
        };
        if self.name.trim().is_empty() {
            return invalid("name", "the task needs a name, e.g. --name hello".into());
        }
        if self
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return invalid(
                "name",
                format!(
                    "`{}` cannot be part of a task id: use letters, digits, '-', '_' and '.'",
                    self.name
                ),
            );
        }
        if self.command.trim().is_empty() {
            return invalid(
                "command",
                "the command is empty: give the shell command to run, e.g. --command 'echo hi'"
                    .into(),
            );
        }
        if let Err(e) = agora_proto::resources::validate_role(&self.role) {
            return invalid("role", e.to_string());
        }
        for (name, amount) in [
            ("cpus", self.resources.cpus()),
            ("mem", self.resources.mem()),
        ] {
            if amount.is_zero() {
                return invalid(
                    "resources",
                    format!(
                        "`{}` has no {name}: a task needs cpus and mem, e.g. {DEFAULT_RESOURCES}",
                        self.resources
                    ),
                );
            }
        }
        if let Some(foreign) = self
            .resources
            .iter()
            .find(|r| !r.is_unreserved() && r.role != self.role)
        {
            return invalid(
                "resources",
                format!(
                    "`{}` is reserved for role `{}`, but the task runs in role `{}`: \
                     add --role {} or drop the reservation",
                    foreign.name, foreign.role, self.role, foreign.role
                ),
            );
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return invalid(
                    "env",
                    format!("`{key}` is not a variable name: write --env NAME=value"),
                );
            }
            if value.contains('\0') {
                return invalid("env", format!("the value of `{key}` contains a NUL byte"));
            }
        }
        if let Some(image) = &self.docker_image
            && image.trim().is_empty()
        {
            return invalid(
                "docker-image",
                "the image name is empty: give one, e.g. alpine:3".into(),
            );
        }
        // What is left to check is the master's address.
        if let Err(e) = self.scheduler_config().validate() {
            return invalid("master", e.to_string());
        }
        Ok(())
    }

    /// The framework `agora execute` subscribes as: named `agora-execute`,
    /// in `role`, checkpointing, and with no failover timeout, so the master
    /// kills the task as soon as `agora execute` goes away.
    pub fn scheduler_config(&self) -> SchedulerConfig {
        let mut config = SchedulerConfig::new(&self.master, "agora-execute");
        config.framework.roles = vec![self.role.clone()];
        config.framework.failover_timeout = 0.0;
        config.framework.checkpoint = true;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> ExecuteConfig {
        ExecuteConfig::new("127.0.0.1:5050", "hello", "echo hi")
    }

    #[test]
    fn defaults_are_valid() {
        ok().validate().unwrap();
        assert_eq!(ok().resources.to_string(), DEFAULT_RESOURCES);
        let s = ok().scheduler_config();
        assert_eq!(s.framework.name, "agora-execute");
        assert_eq!(s.framework.failover_timeout, 0.0);
        assert!(s.framework.checkpoint);
        assert_eq!(s.framework.roles, ["*"]);
    }

    #[test]
    fn refuses_what_cannot_run_and_names_the_flag() {
        let res = |s: &str| Resources::parse(s).unwrap();
        let cases: Vec<(ExecuteConfig, &str, &str)> = vec![
            (
                ExecuteConfig {
                    command: "  ".into(),
                    ..ok()
                },
                "command",
                "empty",
            ),
            (
                ExecuteConfig {
                    name: "".into(),
                    ..ok()
                },
                "name",
                "needs a name",
            ),
            (
                ExecuteConfig {
                    name: "a b".into(),
                    ..ok()
                },
                "name",
                "task id",
            ),
            (
                ExecuteConfig {
                    resources: res("mem:32"),
                    ..ok()
                },
                "resources",
                "no cpus",
            ),
            (
                ExecuteConfig {
                    resources: res("cpus:1"),
                    ..ok()
                },
                "resources",
                "no mem",
            ),
            (
                ExecuteConfig {
                    resources: res("cpus(web):1;mem:32"),
                    ..ok()
                },
                "resources",
                "reserved for role `web`",
            ),
            (
                ExecuteConfig {
                    role: "a b".into(),
                    ..ok()
                },
                "role",
                "invalid role",
            ),
            (
                ExecuteConfig {
                    env: vec![("".into(), "x".into())],
                    ..ok()
                },
                "env",
                "NAME=value",
            ),
            (
                ExecuteConfig {
                    master: "".into(),
                    ..ok()
                },
                "master",
                "empty",
            ),
            (
                ExecuteConfig {
                    docker_image: Some("".into()),
                    ..ok()
                },
                "docker-image",
                "empty",
            ),
        ];
        for (config, flag, why) in cases {
            let err = config.validate().unwrap_err();
            let ExecuteError::InvalidConfig { field, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*field, flag, "{err}");
            assert!(err.to_string().contains(why), "{flag}: {err}");
            assert_eq!(err.exit_code(), 64);
        }
        // A reservation for the task's own role is fine.
        ExecuteConfig {
            resources: res("cpus(web):1;mem:32"),
            role: "web".into(),
            ..ok()
        }
        .validate()
        .unwrap();
    }
}
