//! `/health`, `/state` and task logs.

use agora_proto::v1::TaskState;

use crate::common::*;

#[tokio::test]
async fn health_and_state() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    let health = reqwest::get(agent.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let id = agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task("web", RUN_UNTIL_SANDBOX_GONE)],
    );
    master.wait_update("web", TaskState::TaskRunning).await;
    let state = eventually("the task to show as running", async || {
        let s = agent.state().await;
        (s["tasks"][0]["state"] == "TASK_RUNNING").then_some(s)
    })
    .await;
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["hostname"], "agent-under-test");
    assert_eq!(state["http_address"], agent.http.to_string());
    assert_eq!(state["master"], master.addr.to_string());
    assert_eq!(state["connected"], true);
    assert_eq!(
        state["resources"],
        "cpus:2;disk:2048;mem:1024;ports:[1024-65535]"
    );
    assert_eq!(state["attributes"], "rack:r1;level:3");
    assert_eq!(state["version"], agora_proto::VERSION);
    assert_eq!(state["frameworks"][0]["id"], "f1");
    assert_eq!(state["frameworks"][0]["checkpoint"], true);
    let task = &state["tasks"][0];
    assert_eq!(task["id"], "web");
    assert_eq!(task["framework_id"], "f1");
    assert_eq!(task["name"], "web-name");
    assert_eq!(task["containerizer"], "process");
    assert!(task["pid"].as_i64().unwrap() > 1);
    assert_eq!(task["resources"], "cpus:0.1;mem:32");
    assert!(
        task["sandbox"]
            .as_str()
            .unwrap()
            .starts_with(dir.path().to_str().unwrap())
    );
    agent.stop().await;
}

#[tokio::test]
async fn task_logs() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![shell_task("talker", "echo out-line; echo err-line >&2")],
    );
    master.wait_update("talker", TaskState::TaskFinished).await;

    let get = |path: &str| reqwest::get(agent.url(path));
    let r = get("/tasks/talker/logs?stream=stdout").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.headers()["x-agora-log-size"], "9");
    assert_eq!(r.text().await.unwrap(), "out-line\n");
    let r = get("/tasks/talker/logs?stream=stderr&framework_id=f1")
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "err-line\n");
    let r = get("/tasks/talker/logs?offset=4").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "line\n", "stdout from byte 4");
    let r = get("/tasks/talker/logs?offset=100").await.unwrap();
    assert_eq!(r.text().await.unwrap(), "");

    let r = get("/tasks/talker/logs?stream=bogus").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("stdout") && msg.contains("stderr"), "{msg}");

    let r = get("/tasks/talker/logs?offset=-1").await.unwrap();
    assert_eq!(r.status(), 400);

    let r = get("/tasks/nobody/logs?stream=stdout").await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("nobody"));

    let r = get("/tasks/talker/logs?framework_id=other").await.unwrap();
    assert_eq!(r.status(), 404);

    let r = get("/nowhere").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<serde_json::Value>().await.unwrap()["message"].is_string());
    agent.stop().await;
}
