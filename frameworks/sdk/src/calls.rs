//! The calls a framework sends, built from plain arguments. Pure functions,
//! so what goes on the wire is tested without a master.

use std::time::Duration;

use agora_proto::v1::{
    self, Call, Filters, KillPolicy, TaskAcknowledgement, TaskInfo, TaskStatus, call,
};

use crate::SchedulerError;

fn wrap(c: call::Call) -> Call {
    Call { call: Some(c) }
}

fn filters(refuse_seconds: Option<f64>) -> Result<Option<Filters>, SchedulerError> {
    match refuse_seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Filters {
            refuse_seconds: Some(s),
        })),
        Some(s) => Err(SchedulerError::InvalidCall(format!(
            "refuse_seconds must be a number of seconds >= 0, not {s}"
        ))),
    }
}

fn check_offer_ids(what: &str, offer_ids: &[String]) -> Result<(), SchedulerError> {
    if offer_ids.is_empty() {
        return Err(SchedulerError::InvalidCall(format!(
            "{what} needs at least one offer id"
        )));
    }
    if offer_ids.iter().any(|id| id.is_empty()) {
        return Err(SchedulerError::InvalidCall(format!(
            "{what}: an offer id is empty"
        )));
    }
    Ok(())
}

pub(crate) fn subscribe(framework: v1::FrameworkInfo) -> Call {
    wrap(call::Call::Subscribe(v1::Subscribe {
        framework_info: Some(framework),
    }))
}

/// `accept` with one `launch` of `tasks` (none: the offers are just used up,
/// which is a decline with a filter).
pub(crate) fn accept(
    offer_ids: Vec<String>,
    tasks: Vec<TaskInfo>,
    refuse_seconds: Option<f64>,
) -> Result<Call, SchedulerError> {
    check_offer_ids("accept", &offer_ids)?;
    let operations = if tasks.is_empty() {
        Vec::new()
    } else {
        vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                task_infos: tasks,
            })),
        }]
    };
    Ok(wrap(call::Call::Accept(v1::Accept {
        offer_ids,
        operations,
        filters: filters(refuse_seconds)?,
    })))
}

pub(crate) fn decline(
    offer_ids: Vec<String>,
    refuse_seconds: Option<f64>,
) -> Result<Call, SchedulerError> {
    check_offer_ids("decline", &offer_ids)?;
    Ok(wrap(call::Call::Decline(v1::Decline {
        offer_ids,
        filters: filters(refuse_seconds)?,
    })))
}

pub(crate) fn revive(roles: Vec<String>) -> Call {
    wrap(call::Call::Revive(v1::Revive { roles }))
}

pub(crate) fn suppress(roles: Vec<String>) -> Call {
    wrap(call::Call::Suppress(v1::Suppress { roles }))
}

pub(crate) fn kill(
    task_id: &str,
    agent_id: &str,
    grace: Option<Duration>,
) -> Result<Call, SchedulerError> {
    if task_id.is_empty() {
        return Err(SchedulerError::InvalidCall("kill needs a task id".into()));
    }
    Ok(wrap(call::Call::Kill(v1::Kill {
        task_id: task_id.to_string(),
        agent_id: agent_id.to_string(),
        kill_policy: grace.map(|g| KillPolicy {
            grace_period: Some(g.as_secs_f64()),
        }),
    })))
}

/// One batched `acknowledge` for the updates that carry a uuid (the others,
/// made up by the master, need none); `None` when there is nothing to send.
pub(crate) fn acknowledge(statuses: &[TaskStatus]) -> Option<Call> {
    let acks: Vec<TaskAcknowledgement> = statuses
        .iter()
        .filter(|s| !s.uuid.is_empty())
        .map(|s| TaskAcknowledgement {
            agent_id: s.agent_id.clone(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
        })
        .collect();
    if acks.is_empty() {
        None
    } else {
        Some(wrap(call::Call::Acknowledge(v1::Acknowledge { acks })))
    }
}

pub(crate) fn reconcile(tasks: Vec<(String, String)>) -> Call {
    wrap(call::Call::Reconcile(v1::Reconcile {
        tasks: tasks
            .into_iter()
            .map(|(task_id, agent_id)| v1::reconcile::TaskRef { task_id, agent_id })
            .collect(),
    }))
}

pub(crate) fn teardown() -> Call {
    wrap(call::Call::Teardown(v1::Teardown {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(task: &str, uuid: &[u8]) -> TaskStatus {
        TaskStatus {
            task_id: task.into(),
            agent_id: "a1".into(),
            uuid: uuid.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn acknowledge_batches_only_updates_with_a_uuid() {
        let call = acknowledge(&[
            status("t1", &[1; 16]),
            status("t2", &[]),
            status("t3", &[3; 16]),
        ])
        .unwrap();
        let Some(call::Call::Acknowledge(a)) = call.call else {
            panic!("{call:?}")
        };
        let tasks: Vec<_> = a.acks.iter().map(|a| a.task_id.as_str()).collect();
        assert_eq!(tasks, ["t1", "t3"]);
        assert_eq!(a.acks[1].uuid, vec![3; 16]);
        assert_eq!(a.acks[0].agent_id, "a1");
        assert!(acknowledge(&[status("t2", &[])]).is_none());
        assert!(acknowledge(&[]).is_none());
    }

    #[test]
    fn accept_launches_tasks_with_a_filter() {
        let task = TaskInfo {
            task_id: "t".into(),
            ..Default::default()
        };
        let call = accept(vec!["o1".into()], vec![task.clone()], Some(10.0)).unwrap();
        let Some(call::Call::Accept(a)) = call.call else {
            panic!()
        };
        assert_eq!(a.offer_ids, ["o1"]);
        assert_eq!(a.filters.unwrap().refuse_seconds, Some(10.0));
        let Some(v1::operation::Operation::Launch(l)) = &a.operations[0].operation else {
            panic!()
        };
        assert_eq!(l.task_infos, [task]);
        // No tasks: no operation at all.
        let call = accept(vec!["o1".into()], vec![], None).unwrap();
        let Some(call::Call::Accept(a)) = call.call else {
            panic!()
        };
        assert!(a.operations.is_empty() && a.filters.is_none());
    }

    #[test]
    fn malformed_calls_are_refused() {
        assert!(accept(vec![], vec![], None).is_err());
        assert!(decline(vec!["".into()], None).is_err());
        assert!(decline(vec!["o".into()], Some(-1.0)).is_err());
        assert!(decline(vec!["o".into()], Some(f64::NAN)).is_err());
        assert!(kill("", "a", None).is_err());
    }

    #[test]
    fn kill_carries_the_grace_period() {
        let Some(call::Call::Kill(k)) = kill("t", "a", Some(Duration::from_millis(1500)))
            .unwrap()
            .call
        else {
            panic!()
        };
        assert_eq!(k.kill_policy.unwrap().grace_period, Some(1.5));
        let Some(call::Call::Kill(k)) = kill("t", "a", None).unwrap().call else {
            panic!()
        };
        assert!(k.kill_policy.is_none());
    }
}
