//! Frameworks: subscription, failover, calls (accept, decline, revive,
//! suppress, kill, acknowledge, reconcile, teardown) and removal.

use std::collections::HashSet;
use std::time::Duration;

use agora_proto::v1::{
    self, Accept, StatusReason, Subscribe, TaskState, TaskStatus, call, event, master_to_agent,
    operation,
};
use agora_proto::{Resources, is_terminal};

use super::validation::{
    failover_duration, validate_framework, validate_kill_policy, validate_task,
};
use super::{ConnId, Framework, Map, MasterCore, Now, RegistryOp, RemovedFramework, Task};

/// The longest refuse filter (about 31 years): longer ones, infinity
/// included, are shortened to it.
const MAX_REFUSE_SECS: f64 = 1e9;

/// How a refuse filter is read from a call: the given seconds (0 or less:
/// none; longer than [`MAX_REFUSE_SECS`]: that), else the default. NaN is
/// refused: the caller gets the default filter and an error saying so.
fn refuse(filters: Option<&v1::Filters>, default: Duration) -> Result<Option<Duration>, String> {
    let Some(secs) = filters.and_then(|f| f.refuse_seconds) else {
        return Ok((!default.is_zero()).then_some(default));
    };
    if secs.is_nan() {
        return Err(format!(
            "filters.refuse_seconds is {secs}; it must be a number of seconds \
             (the default of {default:?} was used)"
        ));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_REFUSE_SECS))))
}

impl MasterCore {
    /// A framework opened a stream with `subscribe`.
    pub fn framework_subscribe(&mut self, conn: ConnId, subscribe: Subscribe, now: Now) {
        let mut info = subscribe.framework_info.unwrap_or_default();
        let roles = match validate_framework(&info) {
            Ok(roles) => roles,
            Err(e) => return self.refuse_framework(conn, &format!("invalid subscribe: {e}")),
        };
        if !info.id.is_empty() && self.removed_framework_ids.contains(&info.id) {
            let msg = format!(
                "framework {} was removed (torn down, or its failover timeout expired); \
                 subscribe without an id to start anew",
                info.id
            );
            return self.refuse_framework(conn, &msg);
        }
        let resubscribed = !info.id.is_empty();
        if info.id.is_empty() {
            info.id = self.new_framework_id();
        }
        let id = info.id.clone();
        let _span = tracing::info_span!("framework_subscribe", framework_id = %id).entered();

        match self.frameworks.get_mut(&id) {
            Some(fw) => {
                if let Some(old) = fw.conn.take()
                    && old != conn
                {
                    self.framework_conns.remove(&old);
                    self.outbox.to_framework(
                        old,
                        event::Event::Error(v1::Error {
                            message: "framework failed over to a new subscription".into(),
                        }),
                    );
                    self.outbox.close.push(old);
                }
                fw.info = info.clone();
                fw.roles = roles.clone();
                fw.conn = Some(conn);
                fw.failover_deadline = None;
                fw.disconnected_at = None;
            }
            None => {
                self.frameworks.insert(
                    id.clone(),
                    Framework {
                        info: info.clone(),
                        roles: roles.clone(),
                        conn: Some(conn),
                        failover_deadline: None,
                        registered_at: now.unix,
                        disconnected_at: None,
                        tasks: Map::default(),
                        completed: Default::default(),
                        next_heartbeat: now.instant,
                        offer_field: super::wire::framework_offer_field(&id),
                    },
                );
            }
        }
        self.framework_conns.insert(conn, id.clone());
        self.allocator.add_framework(&id, &roles, true);
        self.allocator.set_framework_active(&id, true);
        self.refresh_hot_framework(&id);
        self.want_allocation();
        let fw = self.frameworks.get_mut(&id).expect("just inserted");
        fw.next_heartbeat = now.instant + self.config.framework_heartbeat_interval;
        tracing::info!(name = %info.name, ?roles, resubscribed, "framework subscribed");
        self.outbox.registry.push(RegistryOp::PutFramework(info));
        self.outbox.to_framework(
            conn,
            event::Event::Subscribed(v1::Subscribed {
                framework_id: id.clone(),
                heartbeat_interval_seconds: self.config.framework_heartbeat_interval.as_secs_f64(),
                master_info: Some(self.info.clone()),
            }),
        );
        // Updates the framework has not acknowledged yet, again.
        let pending: Vec<TaskStatus> = self.frameworks[&id]
            .tasks
            .values()
            .filter(|t| t.pending_ack.is_some())
            .filter_map(|t| t.status())
            .collect();
        self.send_updates(&id, pending);
    }

    fn refuse_framework(&mut self, conn: ConnId, message: &str) {
        tracing::warn!(%message, "refusing framework");
        self.outbox.to_framework(
            conn,
            event::Event::Error(v1::Error {
                message: message.to_string(),
            }),
        );
        self.outbox.close.push(conn);
    }

    /// A call on a subscribed framework's stream.
    pub fn framework_call(&mut self, conn: ConnId, call: call::Call, now: Now) {
        let Some(fw_id) = self.framework_conns.get(&conn).cloned() else {
            return;
        };
        let _span = tracing::debug_span!("framework_call", framework_id = %fw_id).entered();
        match call {
            call::Call::Subscribe(_) => self.call_error(
                conn,
                "already subscribed on this stream; open a new stream to resubscribe",
            ),
            call::Call::Accept(accept) => {
                let refuse = self.refuse_filter(conn, accept.filters.as_ref());
                self.accept(&fw_id, accept, refuse, now)
            }
            call::Call::Decline(decline) => {
                let refuse = self.refuse_filter(conn, decline.filters.as_ref());
                for offer_id in decline.offer_ids {
                    if let Some(seq) = self.parse_offer_id(&offer_id)
                        && self
                            .offers
                            .get(&seq)
                            .is_some_and(|o| *o.framework_id == *fw_id)
                    {
                        self.remove_offer(seq, refuse, false, now);
                    }
                }
            }
            call::Call::Revive(revive) => {
                self.allocator.revive(&fw_id, &revive.roles);
                self.want_allocation();
            }
            call::Call::Suppress(suppress) => {
                self.allocator.suppress(&fw_id, &suppress.roles);
            }
            call::Call::Kill(kill) => match validate_kill_policy(kill.kill_policy.as_ref()) {
                Ok(()) => self.kill(&fw_id, kill, now),
                Err(e) => self.call_error(conn, &format!("invalid kill of {}: {e}", kill.task_id)),
            },
            call::Call::Acknowledge(ack) => self.acknowledge(&fw_id, ack),
            call::Call::Reconcile(reconcile) => self.reconcile(&fw_id, reconcile, now),
            call::Call::Teardown(_) => {
                self.remove_framework(&fw_id, "the framework tore itself down", now);
            }
        }
    }

    /// The refuse filter of a decline or accept; a bad one is answered with
    /// an error event, and the default is used.
    fn refuse_filter(&mut self, conn: ConnId, filters: Option<&v1::Filters>) -> Option<Duration> {
        let default = self.config.default_refuse;
        refuse(filters, default).unwrap_or_else(|e| {
            self.call_error(conn, &e);
            Some(default)
        })
    }

    fn call_error(&mut self, conn: ConnId, message: &str) {
        self.outbox.to_framework(
            conn,
            event::Event::Error(v1::Error {
                message: message.to_string(),
            }),
        );
    }

    /// Accept: validate the offers, then each task; launch the valid ones.
    fn accept(&mut self, fw_id: &str, accept: Accept, refuse: Option<Duration>, now: Now) {
        let task_infos: Vec<v1::TaskInfo> = accept
            .operations
            .into_iter()
            .filter_map(|op| match op.operation {
                Some(operation::Operation::Launch(l)) => Some(l.task_infos),
                None => None,
            })
            .flatten()
            .collect();

        // The offers: all must be valid, of this framework, one agent, one role.
        let mut problem: Option<String> = None;
        let mut seqs = Vec::with_capacity(accept.offer_ids.len());
        for offer_id in &accept.offer_ids {
            let seq = self.parse_offer_id(offer_id);
            match seq.and_then(|seq| self.offers.get(&seq)) {
                Some(o) if *o.framework_id == *fw_id => seqs.push(o.seq),
                Some(_) => problem = Some(format!("offer {offer_id} belongs to another framework")),
                None => {
                    problem = Some(format!(
                        "offer {offer_id} is no longer valid (rescinded, declined or used)"
                    ))
                }
            }
        }
        // Offers are used up by an accept either way.
        let offers: Vec<super::Offer> = seqs
            .into_iter()
            .filter_map(|seq| self.take_offer(seq))
            .collect();
        if accept.offer_ids.is_empty() {
            problem = Some("the accept names no offers".into());
        }
        if let Some(first) = offers.first() {
            if offers.iter().any(|o| o.agent_id != first.agent_id) {
                problem = Some("the accepted offers are on several agents".into());
            } else if offers.iter().any(|o| o.role != first.role) {
                problem = Some("the accepted offers are allocated to several roles".into());
            }
        }
        if let Some(problem) = problem {
            for o in &offers {
                self.allocator.recover(
                    fw_id,
                    &o.role,
                    &o.agent_id,
                    &o.resources,
                    None,
                    now.instant,
                );
            }
            self.want_allocation();
            let statuses = task_infos
                .iter()
                .map(|t| {
                    invalid_status(
                        fw_id,
                        t,
                        TaskState::TaskLost,
                        StatusReason::ReasonInvalidOffers,
                        &problem,
                        now,
                    )
                })
                .collect();
            self.send_updates(fw_id, statuses);
            return;
        }

        let shared_framework_id = offers[0].framework_id.clone();
        let shared_agent_id = offers[0].agent_id.clone();
        let shared_role = offers[0].role.clone();
        let agent_id = shared_agent_id.to_string();
        let role = shared_role.to_string();
        let mut remaining = Resources::new();
        for o in &offers {
            remaining.add(&o.resources);
        }
        let framework_info = self.frameworks[fw_id].info.clone();
        let mut errors = Vec::new();
        let mut launches = Vec::new();
        let mut batch = HashSet::new();
        for mut t in task_infos {
            let fw = &self.frameworks[fw_id];
            let active = |id: &str| fw.tasks.contains_key(id);
            match validate_task(&t, &agent_id, active, &batch, &remaining) {
                Err(e) => errors.push(invalid_status(
                    fw_id,
                    &t,
                    TaskState::TaskError,
                    StatusReason::ReasonTaskInvalid,
                    &e,
                    now,
                )),
                Ok(resources) => {
                    remaining.subtract(&resources);
                    batch.insert(t.task_id.clone());
                    t.agent_id = agent_id.clone();
                    let task = Task {
                        id: t.task_id.clone(),
                        framework_id: shared_framework_id.clone(),
                        agent_id: shared_agent_id.clone(),
                        name: t.name.clone(),
                        role: shared_role.clone(),
                        resources,
                        state: TaskState::TaskStaging,
                        last_status: None,
                        pending_ack: None,
                        released: false,
                        kill_pending: None,
                        container: t.container.clone().map(Box::new),
                        labels: t.labels.clone(),
                        staged_at: now.unix,
                    };
                    let key = (shared_framework_id.clone(), t.task_id.clone());
                    if let Some(agent) = self.agents.get_mut(&agent_id) {
                        agent.tasks.insert(key);
                    }
                    self.frameworks
                        .get_mut(fw_id)
                        .expect("framework exists")
                        .tasks
                        .insert(t.task_id.clone(), Box::new(task));
                    launches.push(v1::LaunchTask {
                        framework_id: fw_id.to_string(),
                        task: Some(t),
                        role: role.clone(),
                    });
                }
            }
        }
        if !remaining.is_empty() {
            self.allocator
                .recover(fw_id, &role, &agent_id, &remaining, refuse, now.instant);
            self.want_allocation();
        }
        if !launches.is_empty() {
            tracing::debug!(agent_id = %agent_id, tasks = launches.len(), "launching tasks");
            let sent = self.send_to_agent(
                &agent_id,
                master_to_agent::Message::RunTasks(v1::RunTasks {
                    frameworks: vec![framework_info],
                    launches,
                }),
            );
            // Offers on agents without a session are rescinded, so the agent
            // is connected here; if not, reregistration reports the tasks lost.
            debug_assert!(sent, "accepted offers on a disconnected agent");
        }
        self.send_updates(fw_id, errors);
    }

    fn kill(&mut self, fw_id: &str, kill: v1::Kill, now: Now) {
        let Some(task) = self
            .frameworks
            .get_mut(fw_id)
            .and_then(|f| f.tasks.get_mut(&kill.task_id))
        else {
            let fake = Task::placeholder(fw_id, &kill.task_id, &kill.agent_id);
            let status = MasterCore::master_status(
                &fake,
                TaskState::TaskLost,
                StatusReason::ReasonReconciliation,
                "the master does not know this task",
                now,
            );
            self.send_updates(fw_id, vec![status]);
            return;
        };
        if is_terminal(task.state) {
            return;
        }
        let agent_id = task.agent_id.clone();
        let msg = master_to_agent::Message::KillTasks(v1::KillTasks {
            kills: vec![v1::KillTask {
                framework_id: fw_id.to_string(),
                task_id: kill.task_id.clone(),
                kill_policy: kill.kill_policy,
            }],
        });
        let policy = kill.kill_policy;
        if !self.send_to_agent(&agent_id, msg)
            && let Some(task) = self
                .frameworks
                .get_mut(fw_id)
                .and_then(|f| f.tasks.get_mut(&kill.task_id))
        {
            tracing::info!(task_id = %kill.task_id, "agent not connected; the kill is sent when it reregisters");
            task.kill_pending = Some(policy);
        }
    }

    fn acknowledge(&mut self, fw_id: &str, ack: v1::Acknowledge) {
        // By agent, in order of first appearance; a framework's batch comes
        // from few agents at a time, mostly in runs of one agent.
        let mut by_agent: Vec<(String, Vec<v1::Acknowledgement>)> = Vec::new();
        let mut index: Map<String, usize> = Map::default();
        let mut settled = Vec::new();
        if let Some(fw) = self.frameworks.get_mut(fw_id) {
            for a in ack.acks {
                if a.uuid.is_empty() {
                    continue;
                }
                if let Some(task) = fw.tasks.get_mut(&a.task_id)
                    && task.pending_ack.as_deref() == Some(a.uuid.as_slice())
                {
                    task.pending_ack = None;
                    if is_terminal(task.state) {
                        settled.push(a.task_id.clone());
                    }
                }
                let ack = v1::Acknowledgement {
                    framework_id: fw_id.to_string(),
                    task_id: a.task_id,
                    uuid: a.uuid,
                };
                let i = match by_agent.last() {
                    Some((last, _)) if *last == a.agent_id => by_agent.len() - 1,
                    _ => *index.entry(a.agent_id).or_insert_with_key(|id| {
                        by_agent.push((id.clone(), Vec::new()));
                        by_agent.len() - 1
                    }),
                };
                by_agent[i].1.push(ack);
            }
        }
        for task_id in settled {
            self.complete_task(fw_id, &task_id);
        }
        for (agent_id, acks) in by_agent {
            // Not connected: the agent resends the update, the framework
            // acknowledges it again.
            self.send_to_agent(
                &agent_id,
                master_to_agent::Message::Acknowledge(v1::AcknowledgeUpdates { acks }),
            );
        }
    }

    fn reconcile(&mut self, fw_id: &str, reconcile: v1::Reconcile, now: Now) {
        let Some(fw) = self.frameworks.get(fw_id) else {
            return;
        };
        let reconciled = |t: &Task| {
            let mut s = t.status().unwrap_or_else(|| {
                MasterCore::master_status(t, t.state, StatusReason::ReasonReconciliation, "", now)
            });
            s.state = t.state as i32;
            s.source = v1::StatusSource::SourceMaster as i32;
            s.reason = StatusReason::ReasonReconciliation as i32;
            s.uuid = Vec::new();
            s.timestamp = now.unix;
            s
        };
        let statuses: Vec<TaskStatus> = if reconcile.tasks.is_empty() {
            fw.tasks.values().map(|t| reconciled(t)).collect()
        } else {
            reconcile
                .tasks
                .iter()
                .map(|r| {
                    if let Some(t) = fw.tasks.get(&r.task_id) {
                        return reconciled(t);
                    }
                    if let Some(t) = fw.completed.iter().rev().find(|t| t.id == r.task_id) {
                        return reconciled(t);
                    }
                    let unreachable = self
                        .agents
                        .get(&r.agent_id)
                        .is_some_and(|a| a.status == super::AgentStatus::Unreachable);
                    let fake = Task::placeholder(fw_id, &r.task_id, &r.agent_id);
                    let state = if unreachable {
                        TaskState::TaskUnreachable
                    } else {
                        TaskState::TaskUnknown
                    };
                    MasterCore::master_status(
                        &fake,
                        state,
                        StatusReason::ReasonReconciliation,
                        "the master does not know this task",
                        now,
                    )
                })
                .collect()
        };
        // After a failover, a task the master does not know may be on an
        // agent that has not reregistered yet: say nothing about it (as
        // Mesos does); the agent's report settles it.
        let recovering = |agent_id: &str| {
            let is = |a: &super::Agent| a.status == super::AgentStatus::Recovering;
            if agent_id.is_empty() {
                self.agents.values().any(is)
            } else {
                self.agents.get(agent_id).is_some_and(is)
            }
        };
        let mut statuses = statuses;
        statuses.retain(|s| s.state() != TaskState::TaskUnknown || !recovering(&s.agent_id));
        self.send_updates(fw_id, statuses);
    }

    /// A framework's stream ended: it has its failover timeout to come back.
    pub fn framework_closed(&mut self, conn: ConnId, now: Now) {
        let Some(fw_id) = self.framework_conns.remove(&conn) else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(&fw_id) else {
            return;
        };
        if fw.conn != Some(conn) {
            return;
        }
        fw.conn = None;
        fw.disconnected_at = Some(now.unix);
        let timeout = failover_duration(fw.info.failover_timeout);
        fw.failover_deadline = Some(now.instant + timeout);
        tracing::info!(framework_id = %fw_id, failover_timeout = ?timeout, "framework disconnected");
        self.allocator.set_framework_active(&fw_id, false);
        self.refresh_hot_framework(&fw_id);
        for seq in self.offers_of(&fw_id) {
            self.remove_offer(seq, None, false, now);
        }
        if timeout.is_zero() {
            self.remove_framework(
                &fw_id,
                "the framework disconnected (failover timeout 0)",
                now,
            );
        }
    }

    /// Disconnected frameworks whose failover timeout passed are removed.
    pub(crate) fn expire_frameworks(&mut self, now: Now) {
        let expired: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_none() && f.failover_deadline.is_some_and(|d| now.instant >= d))
            .map(|f| f.info.id.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, "its failover timeout expired", now);
        }
    }

    /// Removes a framework: its offers go, its tasks are killed.
    pub(crate) fn remove_framework(&mut self, fw_id: &str, reason: &str, now: Now) {
        let Some(mut fw) = self.frameworks.remove(fw_id) else {
            return;
        };
        tracing::info!(framework_id = %fw_id, %reason, "removing framework");
        for seq in self.offers_of(fw_id) {
            self.take_offer(seq);
        }
        // The allocator releases everything the framework held (the cycle's
        // table entry goes with it first).
        self.refresh_hot_framework(fw_id);
        self.allocator.remove_framework(fw_id);
        self.want_allocation();
        let mut agents_to_tell: HashSet<String> = HashSet::new();
        let mut tasks = Vec::new();
        for (_, mut task) in fw.tasks.drain() {
            if let Some(agent) = self.agents.get_mut(&*task.agent_id) {
                agent
                    .tasks
                    .remove(&(std::sync::Arc::clone(&task.framework_id), task.id.clone()));
            }
            if !is_terminal(task.state) {
                agents_to_tell.insert(task.agent_id.to_string());
                task.state = TaskState::TaskKilled;
                let status = MasterCore::master_status(
                    &task,
                    TaskState::TaskKilled,
                    StatusReason::ReasonFrameworkRemoved,
                    format!("framework removed: {reason}"),
                    now,
                );
                task.set_status(status);
            }
            tasks.push(*task);
        }
        tasks.extend(fw.completed.drain(..).map(|t| *t));
        for agent_id in agents_to_tell {
            self.send_to_agent(
                &agent_id,
                master_to_agent::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: fw_id.to_string(),
                }),
            );
        }
        if let Some(conn) = fw.conn.take() {
            self.framework_conns.remove(&conn);
            self.outbox.close.push(conn);
        }
        self.removed_framework_ids.insert(fw_id.to_string());
        self.outbox
            .registry
            .push(RegistryOp::RemoveFramework(fw_id.to_string()));
        self.removed_frameworks.push_back(RemovedFramework {
            info: fw.info,
            removed_at: now.unix,
            reason: reason.to_string(),
            tasks,
        });
        while self.removed_frameworks.len() > self.config.max_completed_frameworks {
            self.removed_frameworks.pop_front();
        }
    }
}

impl Task {
    /// A stand-in for a task the master does not know, to answer about it.
    fn placeholder(fw_id: &str, task_id: &str, agent_id: &str) -> Task {
        Task {
            id: task_id.to_string(),
            framework_id: fw_id.into(),
            agent_id: agent_id.into(),
            name: String::new(),
            role: "".into(),
            resources: Resources::new(),
            state: TaskState::TaskUnknown,
            last_status: None,
            pending_ack: None,
            released: true,
            kill_pending: None,
            container: None,
            labels: Vec::new(),
            staged_at: 0.0,
        }
    }
}

/// The status of a task the master refuses to launch.
fn invalid_status(
    fw_id: &str,
    t: &v1::TaskInfo,
    state: TaskState,
    reason: StatusReason,
    message: &str,
    now: Now,
) -> TaskStatus {
    TaskStatus {
        task_id: t.task_id.clone(),
        state: state as i32,
        message: message.to_string(),
        source: v1::StatusSource::SourceMaster as i32,
        reason: reason as i32,
        agent_id: t.agent_id.clone(),
        framework_id: fw_id.to_string(),
        uuid: Vec::new(),
        timestamp: now.unix,
        healthy: None,
        exit_code: None,
        ready: None,
        latest_state: None,
    }
}
