//! Running tasks: states, exit codes, environment, sandbox, launch errors.

use agora_proto::v1::{
    CommandInfo, ContainerInfo, Environment, StatusReason, StatusSource, TaskState, container_info,
    environment::Variable,
};

use crate::common::*;

#[tokio::test]
async fn a_task_goes_starting_running_finished() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    let agent_id = agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task("t1", "echo hello; echo oops >&2")],
    );
    let finished = master.wait_update("t1", TaskState::TaskFinished).await;
    assert_eq!(finished.exit_code, Some(0));

    let updates = updates_of(&master.seen(), "t1");
    let states: Vec<TaskState> = updates.iter().map(|s| s.state()).collect();
    assert_eq!(
        states,
        [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFinished
        ]
    );
    let mut uuids: Vec<&[u8]> = updates.iter().map(|s| s.uuid.as_slice()).collect();
    assert!(uuids.iter().all(|u| u.len() == 16), "16-byte uuids");
    uuids.dedup();
    assert_eq!(uuids.len(), 3, "a fresh uuid for every update");
    for s in &updates {
        assert_eq!(s.agent_id, agent_id);
        assert_eq!(s.framework_id, "f1");
        assert_eq!(s.source(), StatusSource::SourceAgent);
        assert!(s.timestamp > 0.0);
    }

    // The output is in the sandbox.
    let t = eventually("the task in completed_tasks", async || {
        agent.state().await["completed_tasks"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == "t1")
            .cloned()
    })
    .await;
    assert_eq!(t["state"], "TASK_FINISHED");
    let sandbox = std::path::PathBuf::from(t["sandbox"].as_str().unwrap());
    assert!(sandbox.starts_with(dir.path().join("sandboxes/f1/t1")));
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.join("stderr")).unwrap(),
        "oops\n"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_failing_task_reports_its_exit_code() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.launch(&framework("f1"), vec![shell_task("t3", "exit 3")]);
    let failed = master.wait_update("t3", TaskState::TaskFailed).await;
    assert!(failed.message.contains("exit code 3"), "{}", failed.message);
    assert_eq!(failed.exit_code, Some(3));

    master.launch(&framework("f1"), vec![shell_task("sig", "kill -USR1 $$")]);
    let failed = master.wait_update("sig", TaskState::TaskFailed).await;
    assert!(failed.message.contains("SIGUSR1"), "{}", failed.message);
    assert_eq!(failed.exit_code, Some(128 + 10));
    agent.stop().await;
}

#[tokio::test]
async fn the_task_sees_its_environment_and_runs_in_its_sandbox() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    let agent_id = agent.wait_id().await;
    let mut task = shell_task("env-task", "env > env.txt; pwd -P > pwd.txt");
    task.resources =
        agora_proto::Resources::parse("cpus:0.1;mem:32;ports:[31001-31002,31007-31007]")
            .unwrap()
            .to_proto();
    task.command.as_mut().unwrap().environment = Some(Environment {
        variables: vec![Variable {
            name: "GREETING".into(),
            value: "hello world".into(),
        }],
    });
    master.launch(&framework("f1"), vec![task]);
    master
        .wait_update("env-task", TaskState::TaskFinished)
        .await;

    let sandbox = eventually("the sandbox", async || {
        let state = agent.state().await;
        let t = state["completed_tasks"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == "env-task")?
            .clone();
        Some(std::path::PathBuf::from(t["sandbox"].as_str()?))
    })
    .await;
    let env = std::fs::read_to_string(sandbox.join("env.txt")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let real_sandbox = sandbox.canonicalize().unwrap();
    assert_eq!(
        std::fs::read_to_string(sandbox.join("pwd.txt"))
            .unwrap()
            .trim(),
        real_sandbox.to_str().unwrap()
    );
    assert_eq!(var("AGORA_SANDBOX").as_deref(), sandbox.to_str());
    assert_eq!(var("MESOS_SANDBOX").as_deref(), sandbox.to_str());
    assert_eq!(var("AGORA_TASK_ID").as_deref(), Some("env-task"));
    assert_eq!(var("AGORA_FRAMEWORK_ID").as_deref(), Some("f1"));
    assert_eq!(var("AGORA_AGENT_ID"), Some(agent_id));
    assert_eq!(var("PORTS").as_deref(), Some("31001,31002,31007"));
    assert_eq!(var("PORT0").as_deref(), Some("31001"));
    assert_eq!(var("PORT1").as_deref(), Some("31002"));
    assert_eq!(var("PORT2").as_deref(), Some("31007"));
    assert_eq!(var("PORT").as_deref(), Some("31001"));
    assert_eq!(var("HOST").as_deref(), Some("agent-under-test"));
    assert_eq!(var("GREETING").as_deref(), Some("hello world"));
    assert!(var("PATH").is_some());
    assert_eq!(
        var("CARGO_PKG_NAME"),
        None,
        "the agent's environment is not passed on"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_command_without_a_shell_gets_its_argv() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut task = shell_task("argv", "");
    task.command = Some(CommandInfo {
        shell: Some(false),
        value: "/bin/sh".into(),
        arguments: vec![
            "sh".into(),
            "-c".into(),
            "echo \"$0|$1\"; exit 4".into(),
            "zero".into(),
            "one two".into(),
        ],
        ..Default::default()
    });
    master.launch(&framework("f1"), vec![task]);
    let failed = master.wait_update("argv", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(4));
    let body = reqwest::get(agent.url("/tasks/argv/logs?stream=stdout"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "zero|one two\n");
    agent.stop().await;
}

#[tokio::test]
async fn a_task_that_cannot_start_fails_with_the_reason() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut missing = shell_task("missing", "");
    missing.command = Some(CommandInfo {
        shell: Some(false),
        value: "/nonexistent/program".into(),
        ..Default::default()
    });
    let mut docker = shell_task("docker", "true");
    docker.container = Some(ContainerInfo {
        r#type: container_info::Type::Docker as i32,
        ..Default::default()
    });
    master.launch(&framework("f1"), vec![missing, docker]);

    let failed = master.wait_update("missing", TaskState::TaskFailed).await;
    assert_eq!(failed.reason(), StatusReason::ReasonContainerLaunchFailed);
    assert!(
        failed.message.contains("/nonexistent/program"),
        "{}",
        failed.message
    );

    let failed = master.wait_update("docker", TaskState::TaskFailed).await;
    assert_eq!(failed.reason(), StatusReason::ReasonContainerLaunchFailed);
    assert!(failed.message.contains("Docker"), "{}", failed.message);
    agent.stop().await;
}

#[tokio::test]
async fn a_duplicate_launch_is_ignored() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let task = shell_task("dup", RUN_UNTIL_SANDBOX_GONE);
    master.launch(&framework("f1"), vec![task.clone()]);
    master.wait_update("dup", TaskState::TaskRunning).await;
    let before = agent.task_state("dup").await.unwrap();
    master.launch(&framework("f1"), vec![task, shell_task("other", "true")]);
    // `other` was launched after the duplicate, in the same message: once
    // it has finished, the duplicate has been handled.
    master.wait_update("other", TaskState::TaskFinished).await;
    let starts = updates_of(&master.seen(), "dup")
        .iter()
        .filter(|s| s.state() == TaskState::TaskStarting)
        .count();
    assert_eq!(starts, 1);
    let after = agent.task_state("dup").await.unwrap();
    assert_eq!(after["container_id"], before["container_id"]);
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(after["state"], "TASK_RUNNING");
    agent.stop().await;
}
