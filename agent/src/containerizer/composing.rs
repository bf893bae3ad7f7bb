//! A containerizer made of others: each task goes to the first member that
//! supports it (`docker,process`: Docker tasks to Docker, plain commands to
//! processes), and everything about a container afterwards to the member
//! that runs it.
//!
//! The agent checkpoints the member's name with each task
//! ([`Containerizer::name_for`]), so after a restart each recovered
//! container goes back to its member, and every member gets to recover (and
//! to clean up its orphans) even when it has no known container.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{CommandInfo, TaskInfo};
use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    CheckExit, ContainerId, Containerizer, KnownContainer, LaunchRequest, Launched, Recovered,
    Termination, Usage,
};
use crate::error::AgentError;

/// Routes tasks to member containerizers.
pub struct ComposingContainerizer {
    /// In the order they are asked.
    members: Vec<Arc<dyn Containerizer>>,
    /// Which member runs each container.
    owners: Mutex<HashMap<ContainerId, usize>>,
}

impl ComposingContainerizer {
    pub fn new(members: Vec<Arc<dyn Containerizer>>) -> ComposingContainerizer {
        ComposingContainerizer {
            members,
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// The members' names, in order (`docker,process`).
    pub fn names(&self) -> Vec<&'static str> {
        self.members.iter().map(|m| m.name()).collect()
    }

    fn member_for(&self, task: &TaskInfo) -> Option<usize> {
        self.members.iter().position(|m| m.supports(task))
    }

    fn owner(&self, id: &ContainerId) -> Result<&Arc<dyn Containerizer>, AgentError> {
        let i = self
            .owners
            .lock()
            .get(id)
            .copied()
            .ok_or_else(|| AgentError::UnknownContainer(id.to_string()))?;
        Ok(&self.members[i])
    }
}

#[async_trait]
impl Containerizer for ComposingContainerizer {
    fn name(&self) -> &'static str {
        "composing"
    }

    fn supports(&self, task: &TaskInfo) -> bool {
        self.member_for(task).is_some()
    }

    fn name_for(&self, task: &TaskInfo) -> &'static str {
        match self.member_for(task) {
            Some(i) => self.members[i].name_for(task),
            None => self.name(),
        }
    }

    fn recovers(&self, containerizer: &str) -> bool {
        self.members.iter().any(|m| m.recovers(containerizer))
    }

    async fn recover(&self, known: Vec<KnownContainer>) -> Result<Vec<Recovered>, AgentError> {
        let mut out: Vec<Option<Recovered>> = vec![None; known.len()];
        let mut claimed = vec![false; known.len()];
        for (m, member) in self.members.iter().enumerate() {
            let mut mine = Vec::new();
            let mut at = Vec::new();
            for (i, k) in known.iter().enumerate() {
                if !claimed[i] && member.recovers(&k.containerizer) {
                    claimed[i] = true;
                    mine.push(k.clone());
                    at.push(i);
                }
            }
            // Every member recovers, even with nothing known: that is when
            // it kills its orphans.
            let found = member.recover(mine).await?;
            let mut owners = self.owners.lock();
            for (i, r) in at.into_iter().zip(found) {
                if matches!(r, Recovered::Running(_)) {
                    owners.insert(known[i].container_id.clone(), m);
                }
                out[i] = Some(r);
            }
        }
        Ok(known
            .iter()
            .zip(out)
            .map(|(k, r)| {
                r.unwrap_or_else(|| {
                    Recovered::Ended(Termination::Vanished {
                        message: format!(
                            "it ran in a `{}` container, which this agent cannot run",
                            k.containerizer
                        ),
                    })
                })
            })
            .collect())
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Launched, AgentError> {
        let i = self.member_for(&request.task).ok_or_else(|| {
            AgentError::Launch(format!(
                "none of this agent's containerizers ({}) can run this task",
                self.names().join(",")
            ))
        })?;
        self.owners.lock().insert(request.container_id.clone(), i);
        self.members[i].launch(request).await
    }

    async fn wait(&self, id: &ContainerId) -> Result<Termination, AgentError> {
        let member = self.owner(id)?.clone();
        member.wait(id).await
    }

    async fn kill(&self, id: &ContainerId, grace: Duration) -> Result<(), AgentError> {
        let member = self.owner(id)?.clone();
        member.kill(id, grace).await
    }

    async fn usage(&self, id: &ContainerId) -> Result<Usage, AgentError> {
        let member = self.owner(id)?.clone();
        member.usage(id).await
    }

    async fn run_check(
        &self,
        id: &ContainerId,
        command: &CommandInfo,
        timeout: Duration,
    ) -> Result<CheckExit, AgentError> {
        let member = self.owner(id)?.clone();
        member.run_check(id, command, timeout).await
    }

    async fn containers(&self) -> Vec<ContainerId> {
        let mut ids = Vec::new();
        for m in &self.members {
            ids.extend(m.containers().await);
        }
        ids.sort();
        ids
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), AgentError> {
        let owner = self.owners.lock().remove(id);
        match owner {
            Some(i) => self.members[i].remove(id).await,
            // Not known since the agent started (a sandbox left from before):
            // each member frees whatever it may still keep.
            None => {
                let mut first_error = None;
                for m in &self.members {
                    if let Err(e) = m.remove(id).await {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }

    async fn released(&self, id: &ContainerId) {
        let owner = self.owners.lock().get(id).copied();
        match owner {
            Some(i) => self.members[i].released(id).await,
            None => {
                for m in &self.members {
                    m.released(id).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::v1::{CommandInfo, ContainerInfo, container_info};

    /// A member that runs tasks whose name starts with its own name.
    struct Fake {
        name: &'static str,
        recovered: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl Containerizer for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn supports(&self, task: &TaskInfo) -> bool {
            task.name.starts_with(self.name)
        }
        async fn recover(&self, known: Vec<KnownContainer>) -> Result<Vec<Recovered>, AgentError> {
            self.recovered
                .lock()
                .push(known.iter().map(|k| k.container_id.to_string()).collect());
            Ok(known
                .iter()
                .map(|_| {
                    Recovered::Running(Launched {
                        pid: None,
                        checkpoint: serde_json::Value::Null,
                    })
                })
                .collect())
        }
        async fn launch(&self, _: LaunchRequest) -> Result<Launched, AgentError> {
            Ok(Launched {
                pid: Some(1),
                checkpoint: serde_json::json!(self.name),
            })
        }
        async fn wait(&self, _: &ContainerId) -> Result<Termination, AgentError> {
            Ok(Termination::Exited { code: 0 })
        }
        async fn kill(&self, _: &ContainerId, _: Duration) -> Result<(), AgentError> {
            Ok(())
        }
        async fn usage(&self, _: &ContainerId) -> Result<Usage, AgentError> {
            Ok(Usage::default())
        }
        async fn containers(&self) -> Vec<ContainerId> {
            Vec::new()
        }
        async fn remove(&self, _: &ContainerId) -> Result<(), AgentError> {
            Ok(())
        }
    }

    fn fake(name: &'static str) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            recovered: Mutex::new(Vec::new()),
        })
    }

    fn task(name: &str) -> TaskInfo {
        TaskInfo {
            name: name.into(),
            command: Some(CommandInfo::default()),
            container: Some(ContainerInfo {
                r#type: container_info::Type::Mesos as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn known(id: &str, by: &str) -> KnownContainer {
        KnownContainer {
            container_id: ContainerId::parse(id).unwrap(),
            containerizer: by.into(),
            sandbox: "/s".into(),
            checkpoint: None,
        }
    }

    #[tokio::test]
    async fn tasks_go_to_the_first_member_that_supports_them() {
        let (docker, process) = (fake("docker"), fake("process"));
        let c = ComposingContainerizer::new(vec![docker.clone(), process.clone()]);
        assert_eq!(c.names(), ["docker", "process"]);
        assert_eq!(c.name_for(&task("docker-web")), "docker");
        assert_eq!(c.name_for(&task("process-job")), "process");
        assert!(!c.supports(&task("other")));
        assert!(c.recovers("docker") && c.recovers("process") && !c.recovers("mesos"));

        let id = ContainerId::random();
        let launched = c
            .launch(LaunchRequest {
                container_id: id.clone(),
                framework_id: "f".into(),
                agent_id: "a".into(),
                hostname: "h".into(),
                task: task("process-job"),
                sandbox: "/s".into(),
            })
            .await
            .unwrap();
        assert_eq!(launched.checkpoint, serde_json::json!("process"));
        assert_eq!(c.wait(&id).await.unwrap(), Termination::Exited { code: 0 });
        assert!(matches!(
            c.wait(&ContainerId::random()).await,
            Err(AgentError::UnknownContainer(_))
        ));
    }

    #[tokio::test]
    async fn recovery_hands_each_container_back_to_its_member() {
        let (docker, process) = (fake("docker"), fake("process"));
        let c = ComposingContainerizer::new(vec![docker.clone(), process.clone()]);
        let found = c
            .recover(vec![
                known("p1", "process"),
                known("d1", "docker"),
                known("x1", "mesos"),
                known("p2", "process"),
            ])
            .await
            .unwrap();
        assert_eq!(*docker.recovered.lock(), vec![vec!["d1".to_string()]]);
        assert_eq!(
            *process.recovered.lock(),
            vec![vec!["p1".to_string(), "p2".to_string()]]
        );
        assert!(matches!(found[0], Recovered::Running(_)));
        assert!(matches!(found[1], Recovered::Running(_)));
        assert!(
            matches!(&found[2], Recovered::Ended(Termination::Vanished { message }) if message.contains("mesos"))
        );
        // Recovered containers are routed afterwards.
        c.kill(&ContainerId::parse("d1").unwrap(), Duration::ZERO)
            .await
            .unwrap();

        // A member with nothing to recover still gets asked (for orphans).
        let (docker, process) = (fake("docker"), fake("process"));
        let c = ComposingContainerizer::new(vec![docker.clone(), process.clone()]);
        c.recover(vec![known("p1", "process")]).await.unwrap();
        assert_eq!(*docker.recovered.lock(), vec![Vec::<String>::new()]);
    }
}
