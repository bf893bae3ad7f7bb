//! The batch framework through failures: its own leader SIGKILLed (real
//! `agora batch` processes electing a leader in a real ZooKeeper), and the
//! master's leader SIGKILLed during a run. Each run appends its id to a
//! file: no scheduled time may be lost, none may run twice.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::batch::{Batch, ended};
use common::zk::ZkServer;
use common::{Cluster, DEADLINE, Proc, eventually};

/// `agora batch` with ZooKeeper election, on a free port.
async fn spawn_batch(master: &str, zk: &str) -> (Proc, Batch) {
    let p = Proc::spawn(
        &[
            "batch",
            "--master",
            master,
            "--listen",
            "127.0.0.1:0",
            "--zk",
            zk,
            "--zk-session-timeout",
            "2s",
            "--history-count",
            "1000",
        ],
        &[],
    );
    let addr = p.wait_field("batch framework API listening", "addr").await;
    (p, Batch::at(&format!("http://{addr}")))
}

async fn wait_leading(b: &Batch, what: &str) {
    eventually(what, DEADLINE, || async {
        (b.leading().await == Some(true)).then_some(())
    })
    .await;
}

/// Run ids in the file the runs write, each checked to appear once.
fn ran(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut seen = BTreeSet::new();
    for id in text.lines() {
        assert!(seen.insert(id.to_string()), "run {id} ran twice:\n{text}");
    }
    seen
}

/// Every even second from the first scheduled run to the last successful
/// one has a run, and each successful run ran exactly once.
fn check_exactly_once(runs: &[serde_json::Value], file: &Path) -> usize {
    let ran = ran(file);
    let scheduled: BTreeSet<i64> = runs
        .iter()
        .filter(|r| r["trigger"]["kind"] == "schedule")
        .map(|r| common::batch::secs(&r["scheduledAt"]) as i64)
        .collect();
    let last_success = runs
        .iter()
        .filter(|r| r["status"] == "SUCCESS")
        .map(|r| common::batch::secs(&r["scheduledAt"]) as i64)
        .max()
        .expect("successful runs");
    let first = *scheduled.first().unwrap();
    for t in (first..=last_success).step_by(2) {
        assert!(
            scheduled.contains(&t),
            "no run for the scheduled time {t}: {runs:?}"
        );
    }
    for r in runs.iter().filter(|r| r["status"] == "SUCCESS") {
        let id = r["id"].as_str().unwrap();
        assert!(ran.contains(id), "run {id} succeeded but did not run: {r}");
        assert_eq!(r["tasks"].as_array().unwrap().len(), 1, "one task: {r}");
    }
    for r in runs {
        assert_ne!(r["status"], "MISSED", "{r}");
    }
    ((last_success - first) / 2 + 1) as usize
}

#[tokio::test]
async fn a_batch_leader_killed_between_the_scheduled_time_and_the_launch_neither_loses_nor_doubles()
{
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    // A master without agents: scheduled runs are recorded but cannot launch.
    let mut cluster = Cluster::start(common::master_config(), &[]).await;
    let zk_url = zk.url("/agora-batch");
    let (mut a, api_a) = spawn_batch(&cluster.addr(), &zk_url).await;
    wait_leading(&api_a, "the first batch instance to lead").await;
    let (mut b, api_b) = spawn_batch(&cluster.addr(), &zk_url).await;
    eventually("the second instance to stand by", DEADLINE, || async {
        (api_b.leading().await == Some(false)).then_some(())
    })
    .await;

    let file = cluster.dir.path().join("ran.log");
    api_a
        .create(&format!(
            r#"{{"id": "every2s", "run": {{"cmd": "echo $AGORA_RUN_ID >> {}; sleep 1.5", "cpus": 0.1, "mem": 32}},
                "schedules": [{{"id": "s", "cron": "*/2 * * * * *", "startingDeadlineSeconds": 120}}]}}"#,
            file.display()
        ))
        .await;
    // A scheduled time has come and its run is stored, not launched.
    let waiting = api_a
        .wait_run("a run waiting for an offer", "every2s", |r| {
            r["status"] == "INITIAL"
        })
        .await;
    let waiting_id = waiting["id"].as_str().unwrap().to_string();
    a.kill9().await;
    wait_leading(&api_b, "the standby to take over").await;
    // Offers arrive: every waiting time launches, once.
    cluster.add_agent("cpus:4;mem:2048;disk:1000").await;
    api_b
        .wait_run(
            "the run that waited through the failover to succeed",
            "every2s",
            |r| r["id"] == waiting_id && r["status"] == "SUCCESS",
        )
        .await;

    // Now kill the leader while a run is active.
    let (_a2, api_a2) = spawn_batch(&cluster.addr(), &zk_url).await;
    eventually("the restarted instance to stand by", DEADLINE, || async {
        (api_a2.leading().await == Some(false)).then_some(())
    })
    .await;
    let active = api_b
        .wait_run("an active run", "every2s", |r| r["status"] == "ACTIVE")
        .await;
    let active_id = active["id"].as_str().unwrap().to_string();
    b.kill9().await;
    wait_leading(&api_a2, "the restarted instance to take over").await;
    let run = api_a2
        .wait_run(
            "the run active through the failover to end",
            "every2s",
            |r| r["id"] == active_id && ended(r),
        )
        .await;
    assert_eq!(run["status"], "SUCCESS", "{run}");
    // A few more times after the failover.
    let after = common::batch::secs(&run["scheduledAt"]) as i64 + 6;
    let runs = api_a2
        .wait_runs("runs after the second failover", "every2s", |runs| {
            runs.iter()
                .any(|r| {
                    r["status"] == "SUCCESS"
                        && common::batch::secs(&r["scheduledAt"]) as i64 >= after
                })
                .then(|| runs.to_vec())
        })
        .await;
    let n = check_exactly_once(&runs, &file);
    assert!(n >= 4, "{n} scheduled times checked");
    api_a2
        .call("DELETE", "/v1/jobs/every2s?stopCurrentJobRuns=true", None)
        .await;
    cluster.shutdown.cancel();
}

#[tokio::test]
async fn a_master_failover_during_a_run_loses_nothing() {
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let mut masters = Vec::new();
    for _ in 0..2 {
        masters.push(common::zk::spawn_zk_master(&zk_url, &[]).await);
    }
    let addrs: Vec<String> = masters.iter().map(|(_, a)| a.clone()).collect();
    let leader = common::zk::wait_one_leader(&addrs, DEADLINE).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = common::spawn_agent(&zk_url, &dir.path().join("agent"), "cpus:2;mem:1024").await;
    let b = Batch::start(&zk_url).await;
    let file = dir.path().join("ran.log");
    b.create(&format!(
        r#"{{"id": "long", "run": {{"cmd": "echo $AGORA_RUN_ID >> {}; sleep 6", "cpus": 0.1, "mem": 32}}}}"#,
        file.display()
    ))
    .await;
    let id = b.run_now("long").await;
    b.wait_run("the run to be active", "long", |r| {
        r["id"] == id && r["status"] == "ACTIVE"
    })
    .await;
    let (mut old, _) = masters
        .iter_mut()
        .position(|(_, a)| *a == leader)
        .map(|i| masters.remove(i))
        .unwrap();
    old.kill9().await;
    let standbys: Vec<String> = masters.iter().map(|(_, a)| a.clone()).collect();
    common::zk::wait_one_leader(&standbys, DEADLINE).await;
    let run = b
        .wait_run("the run to end", "long", |r| r["id"] == id && ended(r))
        .await;
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["tasks"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(ran(&file), BTreeSet::from([id.clone()]));
    // And the framework goes on with the new master.
    let again = b.run_now("long").await;
    let run = b
        .wait_run("a run through the new master", "long", |r| {
            r["id"] == again && ended(r)
        })
        .await;
    assert_eq!(run["status"], "SUCCESS", "{run}");
}
