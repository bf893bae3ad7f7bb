//! Agents: registration, reregistration and reconciliation of their tasks,
//! heartbeats, status updates, disconnection and unreachability.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use agora_proto::v1::{
    self, FrameworkInfo, RegisterAgent, StatusReason, TaskState, TaskStatus, agent_message, event,
    master_to_agent,
};
use agora_proto::{Resources, is_terminal, transition};

use super::validation::{
    failover_duration, validate_attributes, validate_id, validate_reported_framework,
    validate_reported_task,
};
use super::{Agent, AgentStatus, ConnId, Framework, Map, MasterCore, Now, RegistryOp, Task};

impl MasterCore {
    /// An agent opened a session with `register`.
    pub fn agent_register(&mut self, conn: ConnId, register: RegisterAgent, now: Now) {
        let mut info = register.info.unwrap_or_default();
        let total = match Resources::from_proto(&info.resources) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => return self.refuse_agent(conn, "the agent offers no resources"),
            Err(e) => return self.refuse_agent(conn, &format!("invalid agent resources: {e}")),
        };
        if !info.id.is_empty()
            && let Err(e) = validate_id("agent", &info.id)
        {
            return self.refuse_agent(conn, &e);
        }
        if let Err(e) = validate_attributes(&info.attributes) {
            return self.refuse_agent(conn, &e);
        }
        // What the agent reports of its frameworks and tasks is checked
        // before anything is changed: a bad number here would otherwise
        // reach the core's arithmetic (a NaN failover timeout, say).
        for f in register.frameworks.iter().filter(|f| !f.id.is_empty()) {
            if let Err(e) = validate_reported_framework(f) {
                return self.refuse_agent(conn, &format!("invalid reregistration: {e}"));
            }
        }
        for t in &register.tasks {
            if let Err(e) = validate_reported_task(t) {
                return self.refuse_agent(conn, &format!("invalid reregistration: {e}"));
            }
        }
        if info.id.is_empty() {
            info.id = self.new_agent_id();
        }
        let id = info.id.clone();
        let _span = tracing::info_span!("agent_register", agent_id = %id).entered();

        // A second session from the same agent replaces the first.
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn)
            && old != conn
        {
            self.agent_conns.remove(&old);
            self.outbox.close.push(old);
        }
        // Outstanding offers on the agent are void: its resources are counted
        // afresh from what it reports.
        for seq in self.offers_on(&id) {
            self.remove_offer(seq, None, true, now);
        }
        let was = self.agents.get(&id).map(|a| a.status);
        if self.agents.get(&id).is_some_and(|a| a.in_allocator()) {
            self.drop_hot_agent(&id);
            self.allocator.remove_agent(&id);
        }

        let known_frameworks: HashMap<String, FrameworkInfo> = register
            .frameworks
            .into_iter()
            .filter(|f| !f.id.is_empty())
            .map(|f| (f.id.clone(), f))
            .collect();

        let agent = self.agents.entry(id.clone()).or_insert_with(|| Agent {
            info: info.clone(),
            total: total.clone(),
            conn: None,
            status: AgentStatus::Connected,
            last_seen: now.instant,
            recover_deadline: None,
            registered_at: now.unix,
            tasks: BTreeSet::new(),
        });
        agent.info = info.clone();
        agent.total = total.clone();
        agent.conn = Some(conn);
        agent.status = AgentStatus::Connected;
        agent.last_seen = now.instant;
        agent.recover_deadline = None;
        self.agent_conns.insert(conn, id.clone());

        // Reconcile: what the agent reports is the truth.
        // The agent's id as its known tasks share it (a fresh one otherwise).
        let shared_id: Arc<str> = self.agents[&id]
            .tasks
            .iter()
            .find_map(|(f, t)| self.frameworks.get(&**f)?.tasks.get(t))
            .map(|t| t.agent_id.clone())
            .unwrap_or_else(|| id.as_str().into());
        let mut reported: HashSet<(String, String)> = HashSet::new();
        let mut shutdown: BTreeSet<String> = BTreeSet::new();
        for t in register.tasks {
            let fw_id = t.framework_id.clone();
            if self.removed_framework_ids.contains(&fw_id) {
                shutdown.insert(fw_id);
                continue;
            }
            if !self.frameworks.contains_key(&fw_id) {
                let info = known_frameworks
                    .get(&fw_id)
                    .cloned()
                    .unwrap_or_else(|| FrameworkInfo {
                        id: fw_id.clone(),
                        name: format!("unknown framework {fw_id}"),
                        ..Default::default()
                    });
                self.add_recovered_framework(info, now);
            }
            reported.insert((fw_id.clone(), t.task_id.clone()));
            self.reconcile_reported_task(&shared_id, t, was, now);
        }
        for fw_id in shutdown {
            tracing::info!(framework_id = %fw_id, "agent runs tasks of a removed framework; shutting them down");
            self.outbox.to_agent(
                conn,
                master_to_agent::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: fw_id,
                }),
            );
        }
        // Tasks the master placed on this agent that the agent does not know.
        let missing: Vec<(String, String)> = self.agents[&id]
            .tasks
            .iter()
            .map(|(f, t)| (f.to_string(), t.clone()))
            .filter(|k| !reported.contains(k))
            .collect();
        for (fw_id, task_id) in missing {
            self.lose_unreported_task(&fw_id, &task_id, now);
        }

        // The allocator learns the agent with what its tasks use.
        let mut used: Vec<(String, String, Resources)> = Vec::new();
        for (fw_id, task_id) in &self.agents[&id].tasks {
            if let Some(t) = self
                .frameworks
                .get(&**fw_id)
                .and_then(|f| f.tasks.get(task_id))
                && !t.released
            {
                used.push((fw_id.to_string(), t.role.to_string(), t.resources.clone()));
            }
        }
        self.allocator.add_agent(&id, total, &used);
        self.allocator.set_agent_active(&id, true);
        self.refresh_hot_agent(&id);
        self.want_allocation();

        // Kills asked for while the agent was away.
        let mut kills = Vec::new();
        for (fw_id, task_id) in &self.agents[&id].tasks {
            if let Some(t) = self
                .frameworks
                .get_mut(&**fw_id)
                .and_then(|f| f.tasks.get_mut(task_id))
                && let Some(policy) = t.kill_pending.take()
            {
                kills.push(v1::KillTask {
                    framework_id: fw_id.to_string(),
                    task_id: task_id.clone(),
                    kill_policy: policy,
                });
            }
        }
        if !kills.is_empty() {
            self.outbox.to_agent(
                conn,
                master_to_agent::Message::KillTasks(v1::KillTasks { kills }),
            );
        }

        tracing::info!(
            agent_id = %id,
            hostname = %info.hostname,
            resources = %self.agents[&id].total,
            reregistered = was.is_some(),
            "agent registered"
        );
        self.outbox.registry.push(RegistryOp::PutAgent(info));
        self.outbox.to_agent(
            conn,
            master_to_agent::Message::Registered(v1::AgentRegistered {
                agent_id: id,
                master: Some(self.info.clone()),
                heartbeat_interval_seconds: self.config.agent_heartbeat_interval.as_secs_f64(),
            }),
        );
    }

    fn refuse_agent(&mut self, conn: ConnId, message: &str) {
        tracing::warn!(%message, "refusing agent");
        self.outbox.to_agent(
            conn,
            master_to_agent::Message::Refused(v1::AgentRefused {
                message: message.to_string(),
            }),
        );
        self.outbox.close.push(conn);
    }

    /// A task an (re)registering agent reports: update the master's record,
    /// or learn it.
    fn reconcile_reported_task(
        &mut self,
        agent_id: &Arc<str>,
        reported: v1::Task,
        was: Option<AgentStatus>,
        now: Now,
    ) {
        let state = reported.state();
        let fw_id = reported.framework_id.clone();
        let task_id = reported.task_id.clone();
        let Some(fw) = self.frameworks.get_mut(&fw_id) else {
            return;
        };
        // The framework's id as its tasks share it (a fresh one for its first).
        let shared_fw: Arc<str> = fw
            .tasks
            .values()
            .next()
            .map(|t| t.framework_id.clone())
            .unwrap_or_else(|| fw_id.as_str().into());
        match fw.tasks.get_mut(&task_id) {
            Some(task) => {
                let previous = task.state;
                if *task.agent_id != **agent_id {
                    tracing::warn!(task_id = %task_id, "task reported by another agent than the master placed it on");
                }
                if let Ok(next) = transition(previous, state) {
                    task.state = next;
                }
                // It may have ended while the agent was away (its final
                // update, with a uuid, follows separately). The allocator
                // learns the agent afresh below, so no recover is needed.
                if is_terminal(state) {
                    task.released = true;
                }
                if let Some(status) = reported.status.clone() {
                    task.set_status(status);
                }
                if previous == TaskState::TaskUnreachable && state != previous {
                    let mut status = MasterCore::master_status(
                        task,
                        state,
                        StatusReason::ReasonAgentReregistered,
                        "the agent reregistered",
                        now,
                    );
                    if let Some(s) = task.status_fields() {
                        status.exit_code = s.exit_code;
                        status.healthy = s.healthy;
                        status.ready = s.ready;
                    }
                    self.send_updates(&fw_id, vec![status]);
                }
            }
            None => {
                // A task the master did not know: after a master failover, or
                // a task that outlived the master's memory of it.
                let resources = Resources::from_proto(&reported.resources).unwrap_or_default();
                let role = if reported.role.is_empty() {
                    fw.roles.first().cloned().unwrap_or_else(|| "*".into())
                } else {
                    reported.role.clone()
                };
                tracing::info!(task_id = %task_id, framework_id = %fw_id, state = state.as_str_name(),
                    ?was, "learned task from agent");
                fw.tasks.insert(
                    task_id.clone(),
                    Box::new(Task {
                        id: task_id.clone(),
                        framework_id: shared_fw.clone(),
                        agent_id: agent_id.clone(),
                        name: reported.name.clone(),
                        role: role.into(),
                        resources,
                        state,
                        last_status: reported.status.clone().map(Task::without_ids),
                        pending_ack: None,
                        released: is_terminal(state),
                        kill_pending: None,
                        container: reported.container.clone().map(Box::new),
                        labels: reported.labels.clone(),
                        staged_at: now.unix,
                    }),
                );
            }
        }
        if let Some(agent) = self.agents.get_mut(&**agent_id) {
            agent.tasks.insert((shared_fw, task_id));
        }
    }

    /// A task the master placed on an agent that reregistered without it.
    fn lose_unreported_task(&mut self, fw_id: &str, task_id: &str, now: Now) {
        let Some(task) = self
            .frameworks
            .get_mut(fw_id)
            .and_then(|f| f.tasks.get_mut(task_id))
        else {
            return;
        };
        if is_terminal(task.state) {
            // The agent settled it (its final update was acknowledged).
            task.pending_ack = None;
            self.complete_task(fw_id, task_id);
            return;
        }
        task.state = TaskState::TaskLost;
        task.released = true;
        task.pending_ack = None;
        let status = MasterCore::master_status(
            task,
            TaskState::TaskLost,
            StatusReason::ReasonTaskUnknown,
            "the agent reregistered without this task",
            now,
        );
        task.set_status(status.clone());
        self.send_updates(fw_id, vec![status]);
        self.complete_task(fw_id, task_id);
    }

    /// A framework the master knows only from an agent's report or from the
    /// registry: it waits for its scheduler to resubscribe.
    pub(crate) fn add_recovered_framework(&mut self, info: FrameworkInfo, now: Now) {
        let id = info.id.clone();
        let roles = if info.roles.is_empty() {
            vec!["*".to_string()]
        } else {
            info.roles.clone()
        };
        let wait =
            failover_duration(info.failover_timeout).max(self.config.agent_reregister_timeout);
        tracing::info!(framework_id = %id, "recovered framework; waiting for it to resubscribe");
        self.allocator.add_framework(&id, &roles, false);
        let offer_field = super::wire::framework_offer_field(&id);
        self.frameworks.insert(
            id.clone(),
            Framework {
                info,
                roles,
                conn: None,
                failover_deadline: Some(now.instant + wait),
                registered_at: now.unix,
                disconnected_at: Some(now.unix),
                tasks: Map::default(),
                completed: Default::default(),
                next_heartbeat: now.instant,
                offer_field,
            },
        );
        self.refresh_hot_framework(&id);
    }

    /// A message on an agent's session, after `register`.
    pub fn agent_message(&mut self, conn: ConnId, msg: agent_message::Message, now: Now) {
        let Some(agent_id) = self.agent_conns.get(&conn).cloned() else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.last_seen = now.instant;
        }
        match msg {
            agent_message::Message::Heartbeat(_) => {}
            agent_message::Message::Updates(u) => self.status_updates(&agent_id, u.statuses, now),
            agent_message::Message::Register(_) => {
                // A session registers once; a new registration opens a new one.
                tracing::warn!(agent_id = %agent_id, "agent sent register twice on one session; ignored");
            }
        }
    }

    /// Status updates from an agent: record them and forward them to their
    /// frameworks.
    fn status_updates(&mut self, agent_id: &str, statuses: Vec<TaskStatus>, now: Now) {
        // By framework, in order of first appearance. An agent's batch
        // rarely spans more than a few frameworks: a short list beats a map.
        let mut forward: Vec<(String, Vec<TaskStatus>)> = Vec::new();
        let mut self_acks = Vec::new();
        for mut s in statuses {
            if s.agent_id != agent_id {
                s.agent_id = agent_id.to_string();
            }
            if self.removed_framework_ids.contains(&s.framework_id) {
                // Nobody is left to acknowledge it: the master does.
                if !s.uuid.is_empty() {
                    self_acks.push(v1::Acknowledgement {
                        framework_id: s.framework_id,
                        task_id: s.task_id,
                        uuid: s.uuid,
                    });
                }
                continue;
            }
            let Some(fw) = self.frameworks.get_mut(&s.framework_id) else {
                tracing::debug!(framework_id = %s.framework_id, task_id = %s.task_id,
                    "update for an unknown framework; the agent will resend it");
                continue;
            };
            let state = s.state();
            if let Some(task) = fw.tasks.get_mut(&s.task_id) {
                match transition(task.state, state) {
                    Ok(next) => task.state = next,
                    Err(e) => tracing::debug!(task_id = %s.task_id, "{e}; forwarding anyway"),
                }
                task.pending_ack = (!s.uuid.is_empty()).then(|| s.uuid.clone());
                task.set_status(s.clone());
                // The task's resources are free once the agent says it
                // ended: this update, or a later one that waits behind it
                // at the agent (`latest_state`), whatever the framework has
                // acknowledged.
                let ended = is_terminal(state)
                    || s.latest_state
                        .is_some_and(|_| is_terminal(s.latest_state()));
                if ended && !task.released {
                    task.released = true;
                    let (role, resources) = (task.role.clone(), task.resources.clone());
                    self.allocator.recover(
                        &s.framework_id,
                        &role,
                        agent_id,
                        &resources,
                        None,
                        now.instant,
                    );
                    self.want_allocation();
                }
                let settled = is_terminal(state) && s.uuid.is_empty();
                if settled {
                    self.complete_task(&s.framework_id, &s.task_id);
                }
            }
            match forward.iter_mut().rev().find(|(f, _)| *f == s.framework_id) {
                Some((_, list)) => list.push(s),
                None => forward.push((s.framework_id.clone(), vec![s])),
            }
        }
        if !self_acks.is_empty() {
            self.send_to_agent(
                agent_id,
                master_to_agent::Message::Acknowledge(v1::AcknowledgeUpdates { acks: self_acks }),
            );
        }
        for (fw_id, statuses) in forward {
            self.send_updates(&fw_id, statuses);
        }
    }

    /// An agent's session stream ended.
    pub fn agent_closed(&mut self, conn: ConnId, now: Now) {
        let Some(agent_id) = self.agent_conns.remove(&conn) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(&agent_id) else {
            return;
        };
        if agent.conn != Some(conn) {
            return;
        }
        agent.conn = None;
        if agent.status == AgentStatus::Connected {
            agent.status = AgentStatus::Disconnected;
            self.allocator.set_agent_active(&agent_id, false);
        }
        tracing::info!(agent_id = %agent_id, "agent disconnected; rescinding its offers");
        for id in self.offers_on(&agent_id) {
            self.remove_offer(id, None, true, now);
        }
    }

    /// Agents not heard from within the agent timeout become unreachable;
    /// agents from the registry that did not come back too.
    pub(crate) fn expire_agents(&mut self, now: Now) {
        let timeout = self.config.agent_timeout;
        let expired: Vec<String> = self
            .agents
            .values()
            .filter(|a| match a.status {
                AgentStatus::Connected | AgentStatus::Disconnected => {
                    now.instant >= a.last_seen + timeout
                }
                AgentStatus::Recovering => a.recover_deadline.is_some_and(|d| now.instant >= d),
                AgentStatus::Unreachable => false,
            })
            .map(|a| a.info.id.clone())
            .collect();
        for id in expired {
            self.mark_unreachable(&id, now);
        }
    }

    fn mark_unreachable(&mut self, agent_id: &str, now: Now) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        let _span = tracing::warn_span!("agent_unreachable", agent_id = %agent_id).entered();
        tracing::warn!("agent not heard from within the agent timeout; it is unreachable");
        let in_allocator = agent.in_allocator();
        if let Some(conn) = agent.conn.take() {
            self.agent_conns.remove(&conn);
            self.outbox.close.push(conn);
        }
        agent.status = AgentStatus::Unreachable;
        let tasks: Vec<(String, String)> = agent
            .tasks
            .iter()
            .map(|(f, t)| (f.to_string(), t.clone()))
            .collect();
        for id in self.offers_on(agent_id) {
            self.remove_offer(id, None, true, now);
        }
        if in_allocator {
            self.drop_hot_agent(agent_id);
            self.allocator.remove_agent(agent_id);
        }
        let mut by_framework: HashMap<String, Vec<TaskStatus>> = HashMap::new();
        for (fw_id, task_id) in tasks {
            let Some(task) = self
                .frameworks
                .get_mut(&fw_id)
                .and_then(|f| f.tasks.get_mut(&task_id))
            else {
                continue;
            };
            if is_terminal(task.state) {
                continue;
            }
            task.state = TaskState::TaskUnreachable;
            let status = MasterCore::master_status(
                task,
                TaskState::TaskUnreachable,
                StatusReason::ReasonAgentDisconnected,
                "the agent is unreachable",
                now,
            );
            task.set_status(status.clone());
            task.pending_ack = None;
            by_framework.entry(fw_id).or_default().push(status);
        }
        let conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
        for conn in conns {
            self.outbox.to_framework(
                conn,
                event::Event::Failure(v1::Failure {
                    agent_id: agent_id.to_string(),
                }),
            );
        }
        for (fw_id, statuses) in by_framework {
            self.send_updates(&fw_id, statuses);
        }
    }
}
