//! `agora apps` and `agora deployments` against a real services framework:
//! tables, `--json`, deployments followed to their end, the exit status
//! saying how they ended.

mod common;

use common::services::{Services, running, task_ids};
use common::{Cluster, Proc, linger};
use serde_json::{Value, json};

/// Runs `agora ARGS...` against `svc`; its exit code and output.
async fn agora(svc: &Services, args: &[&str]) -> (i32, String) {
    let mut p = Proc::spawn(args, &[("AGORA_SERVICES", svc.url.as_str())]);
    let code = p.exit_code().await;
    (code, p.text())
}

async fn setup() -> (Cluster, Services) {
    let cluster = Cluster::start(
        common::master_config(),
        &["cpus:4;mem:1024;ports:[31000-31099]"],
    )
    .await;
    let svc = Services::start(&cluster.addr()).await;
    (cluster, svc)
}

#[tokio::test]
async fn apps_are_deployed_scaled_rolled_back_and_deleted_from_the_cli() {
    let (cluster, svc) = setup().await;
    let file = cluster.dir.path().join("web.json");
    std::fs::write(
        &file,
        json!({"id": "/team/web", "cmd": linger(cluster.dir.path()), "cpus": 0.1, "mem": 16, "instances": 2})
            .to_string(),
    )
    .unwrap();
    let (code, out) = agora(&svc, &["apps", "deploy", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Created app /team/web"), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    // The deployment was followed to its end: the tasks run now.
    assert_eq!(running(&svc.app("/team/web").await).len(), 2);

    let (code, out) = agora(&svc, &["apps", "list"]).await;
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("/team/web"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.split_whitespace().nth(1) == Some("2"), "{out}");
    assert!(out.contains("INSTANCES"), "{out}");

    let (code, out) = agora(&svc, &["apps", "scale", "team/web", "3"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(running(&svc.app("/team/web").await).len(), 3);

    let (code, out) = agora(&svc, &["apps", "tasks", "/team/web"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("TASK_RUNNING").count(), 3, "{out}");

    let (code, out) = agora(&svc, &["apps", "show", "/team/web", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(shown["app"]["instances"], 3);

    // A change of configuration, then back to the version before it.
    let update = cluster.dir.path().join("env.json");
    std::fs::write(&update, r#"{"env": {"MODE": "b"}}"#).unwrap();
    let (code, out) = agora(
        &svc,
        &["apps", "update", "/team/web", update.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(svc.app("/team/web").await["env"]["MODE"], "b");
    let (code, out) = agora(&svc, &["apps", "rollback", "/team/web"]).await;
    assert_eq!(code, 0, "{out}");
    let back = svc.app("/team/web").await;
    assert_eq!(back["env"], json!({}), "{back}");
    assert_eq!(running(&back).len(), 3);

    let (code, out) = agora(&svc, &["apps", "restart", "/team/web"]).await;
    assert_eq!(code, 0, "{out}");
    let restarted = svc.app("/team/web").await;
    assert!(
        task_ids(&restarted)
            .iter()
            .all(|t| !task_ids(&back).contains(t))
    );

    // Kill one task with --scale: two left.
    let victim = task_ids(&restarted)[0].clone();
    let (code, out) = agora(&svc, &["apps", "kill", &victim, "--scale"]).await;
    assert_eq!(code, 0, "{out}");
    let a = svc.app("/team/web").await;
    assert_eq!(a["instances"], 2);
    assert!(!task_ids(&a).contains(&victim));

    let (code, out) = agora(&svc, &["deployments", "list"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("DEPLOYMENT"), "{out}");

    let (code, out) = agora(&svc, &["apps", "delete", "/team/web"]).await;
    assert_eq!(code, 0, "{out}");
    let (status, _) = svc.call("GET", "/v2/apps/team/web", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_rolled_back_deployment_exits_nonzero_and_bad_input_says_why() {
    let (cluster, svc) = setup().await;
    let cmd = linger(cluster.dir.path());
    svc.create(&json!({"id": "/big", "cmd": cmd, "cpus": 0.1, "mem": 16}).to_string())
        .await;
    svc.wait_running("/big", 1).await;
    // Ten instances of 400 MB cannot fit: the deployment waits until it is
    // rolled back by someone else.
    let file = cluster.dir.path().join("big.json");
    std::fs::write(&file, r#"{"instances": 10, "mem": 400}"#).unwrap();
    let mut follower = Proc::spawn(
        &["apps", "update", "/big", file.to_str().unwrap()],
        &[("AGORA_SERVICES", svc.url.as_str())],
    );
    let deployment =
        common::eventually("the deployment to be listed", common::DEADLINE, || async {
            let list = svc.get("/v2/deployments").await;
            list.as_array()?.first()?["id"].as_str().map(str::to_string)
        })
        .await;
    let (code, out) = agora(&svc, &["deployments", "cancel", &deployment]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Rolling deployment"), "{out}");
    let code = follower.exit_code().await;
    assert_eq!(code, 1, "{}", follower.text());
    assert!(
        follower.text().contains("rolled back"),
        "{}",
        follower.text()
    );

    // Bad input: the API's reasons, and a failure exit.
    let bad = cluster.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"id": "/bad", "cmd": "x", "cpus": -1}"#).unwrap();
    let (code, out) = agora(&svc, &["apps", "deploy", bad.to_str().unwrap()]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("422"), "{out}");
    assert!(out.contains("/cpus"), "{out}");
    let (code, out) = agora(&svc, &["apps", "show", "/nope"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("App '/nope' does not exist"), "{out}");
}
