//! Choosing an offer and describing the task: pure functions.

use agora_proto::Resources;
use agora_proto::v1::{
    CommandInfo, ContainerInfo, Environment, Offer, TaskInfo, container_info, environment,
};

use crate::ExecuteConfig;

/// Whether `offer` holds `wanted`, counting only what the framework may use
/// in `role` (unreserved resources and those reserved for `role`), role by
/// role: `cpus:1` needs unreserved cpus, `cpus(web):1` needs cpus reserved
/// for `web`.
pub fn offer_fits(offer: &Offer, wanted: &Resources, role: &str) -> bool {
    match Resources::from_proto(&offer.resources) {
        Ok(offered) => offered.allocatable_to(role).contains(wanted),
        Err(e) => {
            tracing::warn!(offer_id = %offer.id, error = %e, "offer with invalid resources");
            false
        }
    }
}

/// A fresh task id: the name, a dash and eight hex digits.
pub fn new_task_id(name: &str) -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}-{}", &uuid[..8])
}

/// The task to launch on `agent_id`: the command through the shell, the
/// environment, exactly the requested resources, and a Docker container
/// when an image is given.
pub fn task_info(config: &ExecuteConfig, task_id: &str, agent_id: &str) -> TaskInfo {
    let environment = (!config.env.is_empty()).then(|| Environment {
        variables: config
            .env
            .iter()
            .map(|(name, value)| environment::Variable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    });
    let container = config.docker_image.as_ref().map(|image| {
        let mut container = ContainerInfo {
            docker: Some(container_info::DockerInfo {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        container.set_type(container_info::Type::Docker);
        container
    });
    TaskInfo {
        name: config.name.clone(),
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        resources: config.resources.to_proto(),
        command: Some(CommandInfo {
            shell: Some(true),
            value: config.command.clone(),
            environment,
            ..Default::default()
        }),
        container,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(resources: &str) -> Offer {
        Offer {
            id: "o1".into(),
            agent_id: "a1".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            ..Default::default()
        }
    }

    #[test]
    fn fits_counts_only_what_the_role_may_use() {
        let wanted = Resources::parse("cpus:0.1;mem:32").unwrap();
        assert!(offer_fits(&offer("cpus:0.1;mem:32"), &wanted, "*"));
        assert!(offer_fits(
            &offer("cpus:4;mem:1024;ports:[31000-32000]"),
            &wanted,
            "*"
        ));
        assert!(!offer_fits(&offer("cpus:0.05;mem:1024"), &wanted, "*"));
        assert!(!offer_fits(&offer("cpus:4"), &wanted, "*"));
        // Reserved for another role: not usable.
        assert!(!offer_fits(&offer("cpus(web):4;mem(web):64"), &wanted, "*"));
        let reserved = Resources::parse("cpus(web):0.1;mem:32").unwrap();
        assert!(offer_fits(&offer("cpus(web):4;mem:64"), &reserved, "web"));
        assert!(!offer_fits(&offer("cpus:4;mem:64"), &reserved, "web"));
    }

    #[test]
    fn task_is_exactly_what_was_asked() {
        let mut config = ExecuteConfig::new("m:5050", "hello", "echo $GREETING");
        config.env = vec![("GREETING".into(), "hi".into())];
        let task = task_info(&config, "hello-1234abcd", "a1");
        assert_eq!(task.name, "hello");
        assert_eq!(task.task_id, "hello-1234abcd");
        assert_eq!(task.agent_id, "a1");
        assert_eq!(
            Resources::from_proto(&task.resources).unwrap(),
            config.resources
        );
        let command = task.command.unwrap();
        assert_eq!(command.shell, Some(true));
        assert_eq!(command.value, "echo $GREETING");
        let vars = command.environment.unwrap().variables;
        assert_eq!(
            (vars[0].name.as_str(), vars[0].value.as_str()),
            ("GREETING", "hi")
        );
        assert!(task.container.is_none());

        config.docker_image = Some("alpine:3".into());
        config.env.clear();
        let task = task_info(&config, "t", "a1");
        let container = task.container.unwrap();
        assert_eq!(container.r#type(), container_info::Type::Docker);
        assert_eq!(container.docker.unwrap().image, "alpine:3");
        assert!(task.command.unwrap().environment.is_none());
    }

    #[test]
    fn task_ids_are_the_name_and_a_short_suffix() {
        let a = new_task_id("hello");
        let b = new_task_id("hello");
        assert_ne!(a, b);
        assert!(a.starts_with("hello-"));
        assert_eq!(a.len(), "hello-".len() + 8);
    }
}
