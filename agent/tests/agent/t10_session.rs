//! Registration, heartbeats, reconnection, refusal.

use agora_proto::v1::TaskState;

use crate::common::*;

#[tokio::test]
async fn registers_gets_an_id_and_heartbeats() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;

    let reg = master.wait_registration(1).await;
    let info = reg.info.unwrap();
    assert_eq!(info.id, "", "a new agent has no id yet");
    assert_eq!(info.hostname, "agent-under-test");
    assert_eq!(info.http_address, agent.http.to_string());
    assert_eq!(info.version, agora_proto::VERSION);
    let resources = agora_proto::Resources::from_proto(&info.resources).unwrap();
    assert_eq!(
        resources.to_string(),
        "cpus:2;disk:2048;mem:1024;ports:[1024-65535]"
    );
    assert_eq!(
        agora_proto::format_attributes(&info.attributes),
        "rack:r1;level:3"
    );
    assert!(reg.tasks.is_empty());

    assert_eq!(agent.wait_id().await, "fake-S1");
    // The id is checkpointed.
    let saved = std::fs::read_to_string(dir.path().join("meta/agent.json")).unwrap();
    assert!(saved.contains("fake-S1"), "{saved}");

    // Heartbeats at the master's interval (50 ms here).
    master
        .wait_for("three heartbeats", |seen| {
            (seen.iter().filter(|s| matches!(s, Seen::Heartbeat)).count() >= 3).then_some(())
        })
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn reconnects_and_reregisters_with_its_id_and_tasks() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    let id = agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task("t1", RUN_UNTIL_SANDBOX_GONE)],
    );
    master.wait_update("t1", TaskState::TaskRunning).await;

    master.drop_session();
    let reg = master.wait_registration(2).await;
    assert_eq!(reg.info.as_ref().unwrap().id, id);
    assert_eq!(reg.tasks.len(), 1);
    let task = &reg.tasks[0];
    assert_eq!(
        (task.task_id.as_str(), task.framework_id.as_str()),
        ("t1", "f1")
    );
    assert_eq!(task.state(), TaskState::TaskRunning);
    assert_eq!(task.agent_id, id);
    assert_eq!(task.role, "*");
    assert_eq!(task.name, "t1-name");
    assert_eq!(reg.frameworks.len(), 1);
    assert_eq!(reg.frameworks[0].id, "f1");
    assert!(reg.frameworks[0].checkpoint);
    agent.stop().await;
}

#[tokio::test]
async fn keeps_trying_while_the_master_is_down() {
    // A port with nobody behind it: the agent retries with backoff.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&master, dir.path());
    cfg.master = format!("http://{addr}");
    let agent = TestAgent::start(cfg).await;
    // It serves HTTP meanwhile, without an id.
    let state = agent.state().await;
    assert_eq!(state["id"], serde_json::Value::Null);
    assert_eq!(state["connected"], false);
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_the_master_removed_registers_anew_and_kills_its_tasks() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    assert_eq!(agent.wait_id().await, "fake-S1");
    master.launch(
        &framework("f1"),
        vec![shell_task("t1", "echo $$ > pid; exec sleep 30")],
    );
    master.wait_update("t1", TaskState::TaskRunning).await;
    let sandbox = agent.sandbox("t1").await;
    let pid: i32 = eventually("the task's pid file", async || {
        std::fs::read_to_string(sandbox.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;

    master.refuse_next("agent fake-S1 was removed");
    master.drop_session();
    let reg = master.wait_registration(3).await;
    assert_eq!(reg.info.unwrap().id, "", "registers as a new agent");
    assert!(reg.tasks.is_empty());
    let mut w = agent.running.as_ref().unwrap().agent_id_watch();
    tokio::time::timeout(DEADLINE, w.wait_for(|id| id.as_deref() == Some("fake-S2")))
        .await
        .unwrap()
        .unwrap();
    eventually("the removed agent's task to be killed", async || {
        (!process_alive(pid)).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn a_refusal_for_another_reason_keeps_the_id() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    let id = agent.wait_id().await;
    master.refuse_next("this master does not lead");
    master.drop_session();
    let reg = master.wait_registration(3).await;
    assert_eq!(reg.info.unwrap().id, id);
    agent.stop().await;
}

#[tokio::test]
async fn a_second_agent_cannot_use_the_same_work_dir() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    let err = match agora_agent::start(
        config(&master, dir.path()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    {
        Ok(_) => panic!("two agents on one work dir"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("in use by another agent"), "{err}");
    agent.stop().await;
}

#[tokio::test]
async fn bad_configuration_is_refused_before_anything_starts() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&master, dir.path());
    cfg.master = "zk://zk1:2181".into();
    let err = agora_agent::start(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ZooKeeper"), "{err}");
    assert!(
        !dir.path().join("agent.lock").exists(),
        "nothing was created"
    );
}
