//! The batch framework on a real cluster in this process (master, agent
//! running real processes), over its REST API.

mod common;

use common::Cluster;
use common::batch::{Batch, ended, secs};

const AGENT: &str = "cpus:4;mem:4096;disk:1000";

async fn cluster() -> (Cluster, Batch) {
    let cluster = Cluster::start(common::master_config(), &[AGENT]).await;
    let batch = Batch::start(&cluster.addr()).await;
    (cluster, batch)
}

#[tokio::test]
async fn a_seconds_cron_fires_on_time_once_per_scheduled_time() {
    let (_c, b) = cluster().await;
    b.create(
        r#"{"id": "tick", "run": {"cmd": "echo tick", "cpus": 0.1, "mem": 32},
            "schedules": [{"id": "s", "cron": "*/2 * * * * *", "timezone": "Europe/Berlin"}]}"#,
    )
    .await;
    let runs = b
        .wait_runs("three successful scheduled runs", "tick", |runs| {
            let ok: Vec<_> = runs
                .iter()
                .filter(|r| r["status"] == "SUCCESS")
                .cloned()
                .collect();
            (ok.len() >= 3).then_some(ok)
        })
        .await;
    for r in &runs {
        let scheduled = secs(&r["scheduledAt"]);
        // On an even second, named by it, launched within moments of it.
        assert_eq!(scheduled as i64 % 2, 0, "{r}");
        let id = r["id"].as_str().unwrap();
        assert_eq!(id.len(), 14, "{r}");
        let late = secs(&r["startedAt"]) - scheduled;
        assert!(
            (0.0..3.0).contains(&late),
            "launched {late} s after its time: {r}"
        );
        assert_eq!(r["trigger"]["kind"], "schedule");
        assert_eq!(r["tasks"].as_array().unwrap().len(), 1);
    }
    // Never two runs for one time.
    let all = b.runs("tick").await;
    let mut ids: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
}

#[tokio::test]
async fn on_failure_retries_then_succeeds_and_logs_come_from_the_agent() {
    let (c, b) = cluster().await;
    let marker = c.dir.path().join("failed-once");
    b.create(&format!(
        r#"{{"id": "flaky", "run": {{"cmd": "echo attempt; test -f {m} || {{ touch {m}; echo oops >&2; exit 3; }}",
            "cpus": 0.1, "mem": 32, "restart": {{"policy": "ON_FAILURE"}}}}}}"#,
        m = marker.display()
    ))
    .await;
    let id = b.run_now("flaky").await;
    let run = b
        .wait_run("the run to succeed", "flaky", |r| r["id"] == id && ended(r))
        .await;
    assert_eq!(run["status"], "SUCCESS", "{run}");
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{run}");
    assert_eq!(tasks[0]["status"], "TASK_FAILED");
    assert_eq!(tasks[0]["exitCode"], 3);
    assert_eq!(tasks[0]["id"], format!("flaky_{id}.1"));
    assert_eq!(tasks[1]["id"], format!("flaky_{id}.2"));
    // Each attempt's output, from its agent's sandbox.
    let (status, out) = b
        .call(
            "GET",
            &format!("/v1/jobs/flaky/runs/{id}/logs?attempt=1&stream=stderr"),
            None,
        )
        .await;
    assert_eq!((status, out.as_str()), (200, Some("oops\n")));
    let (status, out) = b
        .call("GET", &format!("/v1/jobs/flaky/runs/{id}/logs"), None)
        .await;
    assert_eq!((status, out.as_str()), (200, Some("attempt\n")));
}

#[tokio::test]
async fn forbid_skips_an_overlapping_run_and_says_why() {
    let (_c, b) = cluster().await;
    b.create(
        r#"{"id": "long", "run": {"cmd": "sleep 30", "cpus": 0.1, "mem": 32},
            "schedules": [{"id": "s", "cron": "*/2 * * * * *", "concurrencyPolicy": "FORBID"}]}"#,
    )
    .await;
    let skipped = b
        .wait_run("a skipped run", "long", |r| r["status"] == "SKIPPED")
        .await;
    let reason = skipped["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("concurrencyPolicy FORBID: run "),
        "{reason}"
    );
    assert!(reason.ends_with(" is still active"), "{reason}");
    let runs = b.runs("long").await;
    let active = runs.iter().filter(|r| !ended(r)).count();
    assert_eq!(active, 1, "{runs:?}");
    b.call("DELETE", "/v1/jobs/long?stopCurrentJobRuns=true", None)
        .await;
}

#[tokio::test]
async fn replace_stops_the_old_run() {
    let (_c, b) = cluster().await;
    b.create(
        r#"{"id": "rep", "run": {"cmd": "sleep 30", "cpus": 0.1, "mem": 32},
            "schedules": [{"id": "s", "cron": "*/3 * * * * *", "concurrencyPolicy": "REPLACE"}]}"#,
    )
    .await;
    let old = b
        .wait_run("a replaced run", "rep", |r| {
            r["status"] == "FAILED"
                && r["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("(concurrencyPolicy REPLACE)"))
        })
        .await;
    assert_eq!(old["tasks"][0]["status"], "TASK_KILLED", "{old}");
    let reason = old["reason"].as_str().unwrap();
    let newer = reason
        .strip_prefix("replaced by run ")
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .to_string();
    assert!(newer.as_str() > old["id"].as_str().unwrap());
    b.call("DELETE", "/v1/jobs/rep?stopCurrentJobRuns=true", None)
        .await;
}

#[tokio::test]
async fn active_deadline_kills_an_overrunning_run() {
    let (_c, b) = cluster().await;
    b.create(
        r#"{"id": "slow", "run": {"cmd": "sleep 60", "cpus": 0.1, "mem": 32,
            "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 2}}}"#,
    )
    .await;
    let id = b.run_now("slow").await;
    let run = b
        .wait_run("the run to end", "slow", |r| r["id"] == id && ended(r))
        .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(
        run["reason"],
        "exceeded activeDeadlineSeconds (2 s); its task was killed"
    );
    assert_eq!(
        run["tasks"].as_array().unwrap().len(),
        1,
        "not retried: {run}"
    );
    assert_eq!(run["tasks"][0]["status"], "TASK_KILLED");
    let took = secs(&run["completedAt"]) - secs(&run["startedAt"]);
    assert!(took >= 2.0, "{run}");
}

#[tokio::test]
async fn dependencies_run_in_order_for_the_same_scheduled_time() {
    let (c, b) = cluster().await;
    let log = c.dir.path().join("order.log");
    let job = |id: &str, extra: &str| {
        format!(
            r#"{{"id": "{id}", "run": {{"cmd": "echo $AGORA_RUN_ID $AGORA_JOB_ID >> {log}; sleep 0.2", "cpus": 0.1, "mem": 32}}{extra}}}"#,
            log = log.display()
        )
    };
    b.create(&job(
        "extract",
        r#", "schedules": [{"id": "s", "cron": "*/3 * * * * *"}]"#,
    ))
    .await;
    b.create(&job(
        "transform",
        r#", "dependencies": [{"id": "extract"}]"#,
    ))
    .await;
    b.create(&job("load", r#", "dependencies": [{"id": "transform"}]"#))
        .await;
    let load = b
        .wait_run("a load run", "load", |r| r["status"] == "SUCCESS")
        .await;
    let id = load["id"].as_str().unwrap();
    assert_eq!(load["trigger"]["kind"], "dependencies");
    let extract = b.get(&format!("/v1/jobs/extract/runs/{id}")).await;
    let transform = b.get(&format!("/v1/jobs/transform/runs/{id}")).await;
    assert_eq!(extract["status"], "SUCCESS");
    assert_eq!(transform["status"], "SUCCESS");
    assert_eq!(load["scheduledAt"], extract["scheduledAt"]);
    assert!(secs(&transform["startedAt"]) >= secs(&extract["completedAt"]));
    assert!(secs(&load["startedAt"]) >= secs(&transform["completedAt"]));
    // The runs' own record of when they ran agrees.
    let text = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{id} ")))
        .collect();
    assert_eq!(order, ["extract", "transform", "load"], "{text}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_what_is_wrong_and_nothing_is_stored() {
    let (_c, b) = cluster().await;
    let (s, v) = b.call("POST", "/v1/jobs", Some("{not json")).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("not valid JSON"));
    let (s, v) = b
        .call(
            "POST",
            "/v1/jobs",
            Some(r#"{"id": "a", "run": {"cmd": "x", "cpu": 1}}"#),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["details"][0]["path"], "/run/cpu");
    assert!(
        v["details"][0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown field `cpu`")
    );
    let (s, v) = b
        .call(
            "POST",
            "/v1/jobs",
            Some(r#"{"id": "a", "run": {"cmd": "x", "mem": 8}, "schedules": [{"id": "s", "cron": "61 * * * *", "timezone": "Nowhere/X"}]}"#),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let paths: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/run/mem", "/schedules/0/timezone"]);
    let (s, _) = b.call("GET", "/v1/jobs/a", None).await;
    assert_eq!(s, 404, "nothing of the refused job was stored");

    b.create(r#"{"id": "a", "run": {"cmd": "true"}}"#).await;
    b.create(r#"{"id": "b", "run": {"cmd": "true"}, "dependencies": [{"id": "a"}]}"#)
        .await;
    let (s, v) = b
        .call(
            "PUT",
            "/v1/jobs/a",
            Some(r#"{"id": "a", "run": {"cmd": "true"}, "dependencies": [{"id": "b"}]}"#),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(
        v["details"][0]["errors"][0],
        "the dependencies would form a cycle: a -> b -> a"
    );
    let a = b.get("/v1/jobs/a").await;
    assert!(
        a.get("dependencies").is_none(),
        "the cycle was not stored: {a}"
    );
    let (s, v) = b
        .call(
            "POST",
            "/v1/jobs",
            Some(r#"{"id": "a", "run": {"cmd": "x"}}"#),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = b.call("DELETE", "/v1/jobs/a", None).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v["message"],
        "job b depends on Job 'a': change or delete it first"
    );
    let (s, _) = b.call("POST", "/v1/jobs/nope/runs", None).await;
    assert_eq!(s, 404);
    let (s, _) = b.call("GET", "/v1/jobs/a/runs/nope", None).await;
    assert_eq!(s, 404);
    let (s, v) = b.call("GET", "/v1/jobs?embed=everything", None).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = b
        .call("GET", "/v1/jobs/a/runs/x/logs?stream=stdin", None)
        .await;
    assert_eq!(s, 400, "{v}");
    // The API describes itself.
    let doc = b.get("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/jobs/{id}/runs/{runId}/actions/stop"].is_object());
    let (s, metrics) = b.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    assert!(metrics.as_str().unwrap().contains("agora_batch_leader 1"));
}
