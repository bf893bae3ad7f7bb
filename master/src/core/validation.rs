//! What a framework may ask of the master: pure checks over plain data.

use std::collections::HashSet;

use agora_proto::Resources;
use agora_proto::resources::validate_role;
use agora_proto::v1::{self, FrameworkInfo, TaskInfo};

/// The longest id the master accepts (task, framework and agent ids).
pub const MAX_ID_LEN: usize = 200;

/// Whether `id` is a valid id: 1..=200 characters of `[A-Za-z0-9._-]`, and not
/// `.` or `..` (ids name directories on agents).
pub fn validate_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} id is empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "{what} id is {} characters long; at most {MAX_ID_LEN} are allowed",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("{what} id `{id}` is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} id `{id}` contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The longest failover timeout the master keeps (about 31 years): longer
/// ones are shortened to it, so that a deadline never overflows the clock.
pub const MAX_FAILOVER_TIMEOUT_SECS: f64 = 1e9;

/// Checks a number of seconds from the network (a failover timeout, a grace
/// period): a finite number >= 0.
pub fn validate_seconds(field: &str, secs: f64) -> Result<(), String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "{field} is {secs}; it must be a number of seconds >= 0"
        ));
    }
    Ok(())
}

/// A failover timeout as a duration: never panics, whatever the number
/// (anything not a number >= 0 counts as 0; the longest is
/// [`MAX_FAILOVER_TIMEOUT_SECS`]). The values that reach it were validated;
/// this keeps a bad one from ever taking the master down.
pub fn failover_duration(secs: f64) -> std::time::Duration {
    if secs.is_nan() || secs <= 0.0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::from_secs_f64(secs.min(MAX_FAILOVER_TIMEOUT_SECS))
}

/// Checks what an agent's (re)registration says of a framework it runs
/// tasks of (a FrameworkInfo the agent kept from a launch). The agent is
/// refused when it is wrong: the master would otherwise recover a framework
/// from it.
pub fn validate_reported_framework(info: &FrameworkInfo) -> Result<(), String> {
    validate_id("framework", &info.id)?;
    validate_seconds(
        &format!("framework {}: failover_timeout", info.id),
        info.failover_timeout,
    )?;
    for role in &info.roles {
        validate_role(role).map_err(|e| format!("framework {}: {e}", info.id))?;
    }
    Ok(())
}

/// Checks a task an agent's (re)registration reports: its ids, role and
/// resources. Returns the task's resources.
pub fn validate_reported_task(task: &v1::Task) -> Result<Resources, String> {
    validate_id("task", &task.task_id)?;
    validate_id("framework", &task.framework_id)
        .map_err(|e| format!("task {}: {e}", task.task_id))?;
    if !task.role.is_empty() {
        validate_role(&task.role).map_err(|e| format!("task {}: {e}", task.task_id))?;
    }
    Resources::from_proto(&task.resources)
        .map_err(|e| format!("task {}: invalid resources: {e}", task.task_id))
}

/// Checks an agent's attributes: each named, scalars finite (frameworks
/// compare them in their constraints).
pub fn validate_attributes(attributes: &[v1::Attribute]) -> Result<(), String> {
    for a in attributes {
        if a.name.trim().is_empty() {
            return Err("an agent attribute has no name".into());
        }
        if let Some(v1::attribute::Value::Scalar(x)) = a.value
            && !x.is_finite()
        {
            return Err(format!(
                "agent attribute {} is {x}; a scalar attribute must be a finite number",
                a.name
            ));
        }
    }
    Ok(())
}

/// Checks a kill policy (of a launch or a kill call).
pub fn validate_kill_policy(policy: Option<&v1::KillPolicy>) -> Result<(), String> {
    match policy.and_then(|k| k.grace_period) {
        Some(grace) => validate_seconds("kill_policy.grace_period", grace),
        None => Ok(()),
    }
}

/// Checks a subscribing framework's info. Returns the roles it acts in
/// (`["*"]` when none is given).
pub fn validate_framework(info: &FrameworkInfo) -> Result<Vec<String>, String> {
    if info.name.trim().is_empty() {
        return Err("framework_info.name is empty: give the framework a name".into());
    }
    if !info.id.is_empty() {
        validate_id("framework", &info.id)?;
    }
    validate_seconds("framework_info.failover_timeout", info.failover_timeout)?;
    agora_proto::parse_webui_url(&info.webui_url)?;
    let mut roles: Vec<String> = Vec::new();
    for role in &info.roles {
        validate_role(role).map_err(|e| e.to_string())?;
        if roles.contains(role) {
            return Err(format!(
                "role `{role}` is listed twice in framework_info.roles"
            ));
        }
        roles.push(role.clone());
    }
    if roles.is_empty() {
        roles.push(agora_proto::UNRESERVED.to_string());
    }
    Ok(roles)
}

/// Checks one task of an accept against what is left of the accepted offers.
/// `active` says whether the framework already has an active task with that
/// id; `batch` holds the ids launched earlier in the same accept. Returns the
/// task's resources.
pub fn validate_task(
    task: &TaskInfo,
    agent_id: &str,
    active: impl Fn(&str) -> bool,
    batch: &HashSet<String>,
    remaining: &Resources,
) -> Result<Resources, String> {
    validate_id("task", &task.task_id)?;
    if active(&task.task_id) || batch.contains(&task.task_id) {
        return Err(format!(
            "task id `{}` is already in use by an active task of this framework",
            task.task_id
        ));
    }
    if task.name.trim().is_empty() {
        return Err("task name is empty".into());
    }
    if !task.agent_id.is_empty() && task.agent_id != agent_id {
        return Err(format!(
            "task is for agent `{}` but the offers are on agent `{agent_id}`",
            task.agent_id
        ));
    }
    let has_command = task
        .command
        .as_ref()
        .is_some_and(|c| !c.value.trim().is_empty());
    let has_container = task.container.as_ref().is_some_and(|c| {
        c.r#type() == v1::container_info::Type::Docker
            && c.docker.as_ref().is_some_and(|d| !d.image.is_empty())
    });
    if !has_command && !has_container {
        return Err(
            "task has neither a command (command.value) nor a Docker container (container.docker.image)"
                .into(),
        );
    }
    validate_kill_policy(task.kill_policy.as_ref())?;
    let resources = Resources::from_proto(&task.resources).map_err(|e| e.to_string())?;
    agora_proto::health::task_checks(task)?;
    if resources.cpus().is_zero() && resources.mem().is_zero() {
        return Err("task asks for no cpus and no mem; give it at least one of them".into());
    }
    if !remaining.contains(&resources) {
        return Err(format!(
            "task asks for {resources} but the accepted offers have only {remaining} left"
        ));
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, res: &str) -> TaskInfo {
        TaskInfo {
            name: "t".into(),
            task_id: id.into(),
            resources: Resources::parse(res).unwrap().to_proto(),
            command: Some(v1::CommandInfo {
                value: "true".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("task", "web.1_a-b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(validate_id("task", bad).is_err(), "{bad}");
        }
        assert!(validate_id("task", &"a".repeat(201)).is_err());
    }

    #[test]
    fn task_checks() {
        let offer = Resources::parse("cpus:1;mem:128;ports:[31000-31010]").unwrap();
        let none = |_: &str| false;
        let batch = HashSet::new();
        assert!(validate_task(&task("a", "cpus:0.5;mem:64"), "S1", none, &batch, &offer).is_ok());
        let err =
            validate_task(&task("a", "cpus:2;mem:64"), "S1", none, &batch, &offer).unwrap_err();
        assert!(err.contains("only"), "{err}");
        let err = validate_task(
            &task("a", "cpus:0.5;ports:[40000-40000]"),
            "S1",
            none,
            &batch,
            &offer,
        )
        .unwrap_err();
        assert!(err.contains("only"), "{err}");
        let err =
            validate_task(&task("a", "cpus:0.5"), "S1", |_| true, &batch, &offer).unwrap_err();
        assert!(err.contains("already in use"), "{err}");
        let batch: HashSet<String> = ["a".to_string()].into();
        assert!(validate_task(&task("a", "cpus:0.5"), "S1", none, &batch, &offer).is_err());
        let mut t = task("b", "cpus:0.5");
        t.command = None;
        let err = validate_task(&t, "S1", none, &HashSet::new(), &offer).unwrap_err();
        assert!(err.contains("neither a command"), "{err}");
        let mut t = task("b", "cpus:0.5");
        t.agent_id = "S2".into();
        assert!(validate_task(&t, "S1", none, &HashSet::new(), &offer).is_err());
        let err =
            validate_task(&task("b", "disk:1"), "S1", none, &HashSet::new(), &offer).unwrap_err();
        assert!(err.contains("no cpus and no mem"), "{err}");
    }

    #[test]
    fn health_checks_are_validated() {
        use v1::health_check::{HttpCheckInfo, Type};
        let offer = Resources::parse("cpus:1;mem:128;ports:[31000-31010]").unwrap();
        let none = |_: &str| false;
        let mut t = task("h", "cpus:0.5;ports:[31000-31000]");
        t.health_checks = vec![v1::HealthCheck {
            r#type: Type::Http as i32,
            http: Some(HttpCheckInfo {
                port_index: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }];
        assert!(validate_task(&t, "S1", none, &HashSet::new(), &offer).is_ok());
        t.health_checks[0].http.as_mut().unwrap().port_index = Some(1);
        let err = validate_task(&t, "S1", none, &HashSet::new(), &offer).unwrap_err();
        assert!(
            err.contains("health_checks[0].http.port_index: 1 is out of range"),
            "{err}"
        );
        t.health_checks[0].http.as_mut().unwrap().port_index = Some(0);
        t.health_checks[0].interval_seconds = Some(f64::NAN);
        let err = validate_task(&t, "S1", none, &HashSet::new(), &offer).unwrap_err();
        assert!(err.contains("interval_seconds: NaN"), "{err}");
    }

    #[test]
    fn failover_durations_never_panic() {
        use std::time::Duration;
        for bad in [f64::NAN, -1.0, f64::NEG_INFINITY, -0.0, 0.0] {
            assert_eq!(failover_duration(bad), Duration::ZERO, "{bad}");
        }
        for huge in [f64::INFINITY, 1e300, f64::MAX] {
            assert_eq!(failover_duration(huge), Duration::from_secs(1_000_000_000));
        }
        assert_eq!(failover_duration(2.5), Duration::from_millis(2500));
    }

    #[test]
    fn reported_frameworks_and_tasks() {
        let mut info = FrameworkInfo {
            id: "F1".into(),
            name: "f".into(),
            failover_timeout: 60.0,
            ..Default::default()
        };
        assert!(validate_reported_framework(&info).is_ok());
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            info.failover_timeout = bad;
            let err = validate_reported_framework(&info).unwrap_err();
            assert!(err.contains("framework F1: failover_timeout is"), "{err}");
        }
        info.failover_timeout = 1.0;
        info.id = "../x".into();
        assert!(validate_reported_framework(&info).is_err());
        info.id = "F1".into();
        info.roles = vec!["bad role".into()];
        assert!(validate_reported_framework(&info).is_err());

        let mut t = v1::Task {
            task_id: "t1".into(),
            framework_id: "F1".into(),
            resources: Resources::parse("cpus:1").unwrap().to_proto(),
            ..Default::default()
        };
        assert!(validate_reported_task(&t).is_ok());
        t.resources[0].scalar = f64::NAN;
        let err = validate_reported_task(&t).unwrap_err();
        assert!(err.contains("task t1: invalid resources"), "{err}");
        t.resources = vec![];
        t.framework_id = String::new();
        assert!(validate_reported_task(&t).is_err());
        t.framework_id = "F1".into();
        t.task_id = "a/b".into();
        assert!(validate_reported_task(&t).is_err());
    }

    #[test]
    fn attributes() {
        let a = |name: &str, x: f64| v1::Attribute {
            name: name.into(),
            value: Some(v1::attribute::Value::Scalar(x)),
        };
        assert!(validate_attributes(&[a("rack", 1.0)]).is_ok());
        let err = validate_attributes(&[a("rack", f64::NAN)]).unwrap_err();
        assert!(err.contains("agent attribute rack is NaN"), "{err}");
        assert!(validate_attributes(&[a(" ", 1.0)]).is_err());
    }

    #[test]
    fn kill_policies() {
        let p = |g: f64| v1::KillPolicy {
            grace_period: Some(g),
        };
        assert!(validate_kill_policy(None).is_ok());
        assert!(validate_kill_policy(Some(&p(3.0))).is_ok());
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let err = validate_kill_policy(Some(&p(bad))).unwrap_err();
            assert!(err.contains("kill_policy.grace_period"), "{err}");
        }
    }

    #[test]
    fn framework_checks() {
        let mut info = FrameworkInfo {
            name: "f".into(),
            ..Default::default()
        };
        assert_eq!(validate_framework(&info).unwrap(), vec!["*"]);
        info.roles = vec!["web".into(), "web".into()];
        assert!(validate_framework(&info).is_err());
        info.roles = vec!["bad role".into()];
        assert!(validate_framework(&info).is_err());
        info.roles = vec![];
        info.failover_timeout = -1.0;
        assert!(validate_framework(&info).is_err());
        info.failover_timeout = 0.0;
        info.webui_url = "https://secure:443".into();
        assert!(validate_framework(&info).unwrap_err().contains("http://"));
        info.webui_url = "http://127.0.0.1:8080".into();
        assert!(validate_framework(&info).is_ok());
        info.name = " ".into();
        assert!(validate_framework(&info).is_err());
    }
}
