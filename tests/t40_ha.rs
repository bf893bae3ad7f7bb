//! High availability with a real ZooKeeper server: election, detection and
//! the registry (agora-coord's ZooKeeper backends), then whole clusters of
//! three masters, agents and a framework that lose their leader.

mod common;

use std::time::Duration;

use agora_coord::zk::{ZkContender, ZkDetector, ZkStore, ZkUrl};
use agora_coord::{Contender, CoordError, Detector, Expected, Store};
use agora_proto::v1::MasterInfo;
use common::zk::{ZkProxy, ZkServer};
use common::{DEADLINE, eventually};

/// Session timeout of everything in these tests (the server allows 1 s).
const SESSION: Duration = Duration::from_secs(2);

fn info(id: &str, port: u32) -> MasterInfo {
    MasterInfo {
        id: id.into(),
        hostname: "localhost".into(),
        ip: "127.0.0.1".into(),
        port,
        version: agora_proto::VERSION.into(),
    }
}

#[tokio::test]
async fn t40_contenders_elect_the_lowest_node_and_the_detector_follows() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let url = ZkUrl::parse(&zk.url("/agora")).unwrap();
    let detector = ZkDetector::start(&url, SESSION);
    let mut leader = detector.leader();

    let a = ZkContender::new(&url, SESSION);
    let b = ZkContender::new(&url, SESSION);
    let la = a.contend(info("a", 1)).await.expect("a leads");
    assert!(la.fence().unwrap().starts_with("/agora/json.info_"));
    let b_contends = tokio::spawn(async move { b.contend(info("b", 2)).await });
    leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.id == "a"))
        .await
        .unwrap();

    // b waits in line while a leads.
    let client = zk.client().await;
    eventually("two masters in line", DEADLINE, || {
        let client = client.clone();
        async move {
            let c = client.list_children("/agora").await.ok()?;
            (c.len() == 2).then_some(())
        }
    })
    .await;
    assert!(!b_contends.is_finished(), "b must not lead while a does");
    // Nothing but the masters' nodes under the path.
    for child in client.list_children("/agora").await.unwrap() {
        assert!(child.starts_with("json.info_"), "{child}");
    }

    // a withdraws: b leads, and the detector says so.
    drop(la);
    let lb = tokio::time::timeout(DEADLINE, b_contends)
        .await
        .expect("b leads after a withdrew")
        .unwrap()
        .unwrap();
    assert!(!lb.is_lost());
    leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.id == "b"))
        .await
        .unwrap();
    drop(lb);
    leader.wait_for(|l| l.is_none()).await.unwrap();
}

#[tokio::test]
async fn t40_registry_in_zookeeper_compares_and_sets_and_is_fenced() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let url = ZkUrl::parse(&zk.url("/reg")).unwrap();
    let store = ZkStore::new(&url, SESSION);

    assert_eq!(store.get("frameworks/a").await.unwrap(), None);
    assert_eq!(
        store
            .set("frameworks/a", b"x".to_vec(), Expected::Absent)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store
            .set("frameworks/a", b"y".to_vec(), Expected::Absent)
            .await,
        Err(CoordError::Conflict { found: Some(1), .. })
    ));
    assert!(matches!(
        store
            .set("frameworks/a", b"y".to_vec(), Expected::Version(7))
            .await,
        Err(CoordError::Conflict { found: Some(1), .. })
    ));
    assert_eq!(
        store
            .set("frameworks/a", b"y".to_vec(), Expected::Version(1))
            .await
            .unwrap(),
        2
    );
    store
        .set("frameworks/b.c", b"z".to_vec(), Expected::Any)
        .await
        .unwrap();
    store
        .set("agents/s0", b"w".to_vec(), Expected::Any)
        .await
        .unwrap();
    store
        .set("top", b"t".to_vec(), Expected::Any)
        .await
        .unwrap();
    assert_eq!(
        store.list("frameworks/").await.unwrap(),
        vec!["frameworks/a", "frameworks/b.c"]
    );
    assert_eq!(
        store.list("").await.unwrap(),
        vec!["agents/s0", "frameworks/a", "frameworks/b.c", "top"]
    );
    let e = store.get("frameworks/a").await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"y"[..], 2));
    assert!(
        store
            .delete("frameworks/a", Expected::Version(1))
            .await
            .is_err()
    );
    store
        .delete("frameworks/a", Expected::Version(2))
        .await
        .unwrap();
    store.delete("missing/x", Expected::Any).await.unwrap();

    // The registry sits beside the masters' path, not under it.
    let client = zk.client().await;
    assert!(
        client
            .check_stat("/reg-registry/frameworks")
            .await
            .unwrap()
            .is_some()
    );
    assert!(client.check_stat("/reg").await.unwrap().is_none());

    // Fenced on a leader's node: writes stop once the node is gone.
    let contender = ZkContender::new(&url, SESSION);
    let leadership = contender.contend(info("m", 1)).await.unwrap();
    let fence = leadership.fence().unwrap().to_string();
    let fenced = store.fenced(&fence);
    fenced
        .set("agents/s1", b"1".to_vec(), Expected::Any)
        .await
        .unwrap();
    client.delete(&fence, None).await.unwrap();
    let err = fenced
        .set("agents/s2", b"2".to_vec(), Expected::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("no longer leads"), "{err}");
    assert_eq!(store.get("agents/s2").await.unwrap(), None);
    let mut leadership = leadership;
    tokio::time::timeout(DEADLINE, leadership.lost())
        .await
        .expect("a leader whose node was deleted loses leadership");
}

#[tokio::test]
async fn t40_a_leader_cut_off_from_zookeeper_steps_down_before_another_leads() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let proxy = ZkProxy::start(format!("127.0.0.1:{}", zk.port).parse().unwrap()).await;
    let cut_url = ZkUrl::parse(&proxy.url("/agora")).unwrap();
    let url = ZkUrl::parse(&zk.url("/agora")).unwrap();

    let mut cut_off = ZkContender::new(&cut_url, SESSION)
        .contend(info("cut", 1))
        .await
        .unwrap();
    let other = ZkContender::new(&url, SESSION);
    let mut other_leads = tokio::spawn(async move { other.contend(info("other", 2)).await });

    let cut_at = tokio::time::Instant::now();
    proxy.cut();
    tokio::time::timeout(DEADLINE, cut_off.lost())
        .await
        .expect("the cut-off leader steps down");
    let stepped_down = cut_at.elapsed();
    assert!(
        !other_leads.is_finished(),
        "the other master must not lead before the cut-off one stepped down"
    );
    let leadership = tokio::time::timeout(DEADLINE, &mut other_leads)
        .await
        .expect("another master leads once the session expired")
        .unwrap()
        .unwrap();
    let elected = cut_at.elapsed();
    assert!(
        stepped_down < elected,
        "stepped down after {stepped_down:?}, other elected after {elected:?}"
    );
    assert!(
        stepped_down < SESSION,
        "a leader steps down within its session timeout (took {stepped_down:?})"
    );
    drop(leadership);
}

/// Tasks of the failover test: some run on, some end during the failover.
fn waiting_task(id: &str, dir: &std::path::Path) -> agora_proto::v1::TaskInfo {
    // Ends (exit 0) once the test creates `<dir>/go`; ends anyway when the
    // test's directory is gone.
    let go = dir.join("go");
    common::shell_task(
        id,
        &format!(
            "while [ ! -e '{}' ] && [ -d '{}' ]; do sleep 0.1; done",
            go.display(),
            dir.display()
        ),
        "cpus:0.1;mem:16",
    )
}

/// The task ids an agent runs, with their containers.
async fn agent_tasks(agent_http: &str) -> Vec<(String, String, String)> {
    let s = common::get_json(&format!("http://{agent_http}/state")).await;
    s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["container_id"].as_str().unwrap_or("").to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn t40_the_leader_dies_a_standby_takes_over_and_nothing_running_stops() {
    use agora_proto::v1::TaskState;
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let mut masters = Vec::new();
    for _ in 0..3 {
        masters.push(common::zk::spawn_zk_master(&zk_url, &[]).await);
    }
    let addrs: Vec<String> = masters.iter().map(|(_, a)| a.clone()).collect();
    let leader = common::zk::wait_one_leader(&addrs, DEADLINE).await;

    // The leader's node reads as MasterInfo with a plain ZooKeeper client.
    let client = zk.client().await;
    let children = eventually("three masters in line", DEADLINE, || {
        let client = client.clone();
        async move {
            let mut c = client.list_children("/agora").await.ok()?;
            c.sort();
            (c.len() == 3).then_some(c)
        }
    })
    .await;
    assert!(
        children.iter().all(|c| c.starts_with("json.info_")),
        "{children:?}"
    );
    let (data, _) = client
        .get_data(&format!("/agora/{}", children[0]))
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let (ip, port) = leader.rsplit_once(':').unwrap();
    assert_eq!(json["address"]["ip"], ip, "{json}");
    assert_eq!(json["address"]["port"].as_u64().unwrap().to_string(), port);
    assert_eq!(json["ip"], 16777343, "127.0.0.1 as Mesos stores it: {json}");
    assert_eq!(json["pid"], format!("master@{leader}"));
    let leader_state = common::zk::try_state(&leader).await.unwrap();
    assert_eq!(json["id"], leader_state["id"]);
    let info = agora_coord::zk::master_info_from_json(&data).unwrap();
    assert_eq!(agora_coord::address_of(&info), leader);

    // Two agents and a framework, all finding the leader through ZooKeeper.
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for i in 0..2 {
        let work = dir.path().join(format!("agent{i}"));
        agents.push(common::spawn_agent(&zk_url, &work, "cpus:2;mem:1024").await);
    }
    let mut config = agora_scheduler::SchedulerConfig::new(&zk_url, "ha-test");
    config.framework.failover_timeout = 3600.0;
    let fw = common::TestFramework::start_with(config).await;
    let framework_id = fw.id();

    // Per agent: two tasks that run on, one that ends during the failover.
    let work = dir.path().join("tasks");
    std::fs::create_dir_all(&work).unwrap();
    let mut running = Vec::new();
    let mut ending = Vec::new();
    let mut agent_ids = std::collections::BTreeSet::new();
    for n in 0..2 {
        let offer = fw.take_offer().await;
        agent_ids.insert(offer.agent_id.clone());
        let ids = [
            format!("run-{n}-a"),
            format!("run-{n}-b"),
            format!("end-{n}"),
        ];
        let tasks = vec![
            common::shell_task(&ids[0], &common::linger(dir.path()), "cpus:0.1;mem:16"),
            common::shell_task(&ids[1], &common::linger(dir.path()), "cpus:0.1;mem:16"),
            waiting_task(&ids[2], &work),
        ];
        fw.launch(&offer, tasks);
        running.extend(ids[..2].iter().cloned());
        ending.push(ids[2].clone());
    }
    assert_eq!(agent_ids.len(), 2, "one offer from each agent");
    for id in running.iter().chain(&ending) {
        fw.wait_state(id, TaskState::TaskRunning).await;
    }
    let agent_http: Vec<String> = {
        let s = common::zk::try_state(&leader).await.unwrap();
        s["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["http_address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(agent_http.len(), 2);
    let mut containers_before = Vec::new();
    for a in &agent_http {
        containers_before.extend(agent_tasks(a).await);
    }
    let subscribed_before = fw.seen.lock().unwrap().subscribed;

    // SIGKILL the leader; the waiting tasks end while nobody leads.
    let idx = addrs.iter().position(|a| *a == leader).unwrap();
    let (mut dead, _) = masters.remove(idx);
    let killed_at = tokio::time::Instant::now();
    dead.kill9().await;
    std::fs::write(work.join("go"), b"").unwrap();
    let standbys: Vec<String> = addrs.iter().filter(|a| **a != leader).cloned().collect();
    let new_leader = common::zk::wait_one_leader(&standbys, DEADLINE).await;
    let elected_after = killed_at.elapsed();
    assert!(
        elected_after < SESSION + Duration::from_secs(3),
        "a standby leads within the session timeout plus a little: took {elected_after:?}"
    );

    // The framework keeps its id and gets offers again.
    fw.wait("resubscribed", |s| {
        (s.subscribed > subscribed_before).then_some(())
    })
    .await;
    assert_eq!(fw.id(), framework_id);
    eprintln!(
        "leader killed: new leader after {elected_after:?}, framework resubscribed after {:?}",
        killed_at.elapsed()
    );
    let new_state = common::zk::try_state(&new_leader).await.unwrap();
    let new_master_id = new_state["id"].as_str().unwrap().to_string();
    fw.wait("an offer from the new leader", |s| {
        s.offers
            .iter()
            .any(|o| o.id.starts_with(&new_master_id))
            .then_some(())
    })
    .await;

    // The updates sent during the failover arrived.
    for id in &ending {
        fw.wait_state(id, TaskState::TaskFinished).await;
    }
    // Both agents reregistered with the new leader, with their ids.
    eventually("both agents back with the new leader", DEADLINE, || {
        let new_leader = new_leader.clone();
        let agent_ids = agent_ids.clone();
        async move {
            let s = common::zk::try_state(&new_leader).await?;
            let back: std::collections::BTreeSet<String> = s["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["status"] == "connected")
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect();
            (back == agent_ids).then_some(())
        }
    })
    .await;
    // Every running task still runs, in the same container, never relaunched.
    let mut containers_after = Vec::new();
    for a in &agent_http {
        containers_after.extend(agent_tasks(a).await);
    }
    for id in &running {
        let before = containers_before.iter().find(|t| t.0 == *id).unwrap();
        let after = containers_after
            .iter()
            .find(|t| t.0 == *id)
            .unwrap_or_else(|| panic!("{id} gone from its agent: {containers_after:?}"));
        assert_eq!(before.1, after.1, "{id} runs in the same container");
        assert_eq!(after.2, "TASK_RUNNING", "{id}");
    }
    let updates = fw.seen.lock().unwrap().updates.clone();
    for id in &running {
        let states: Vec<TaskState> = updates
            .iter()
            .filter(|u| u.task_id == *id)
            .map(|u| u.state())
            .collect();
        assert!(
            states.iter().all(|s| matches!(
                s,
                TaskState::TaskStaging | TaskState::TaskStarting | TaskState::TaskRunning
            )),
            "{id}: {states:?}"
        );
        assert!(
            states
                .iter()
                .filter(|s| **s == TaskState::TaskStarting)
                .count()
                <= 1,
            "{id} was started once: {states:?}"
        );
    }
    let tasks = eventually("the new leader knows every running task", DEADLINE, || {
        let new_leader = new_leader.clone();
        let running = running.clone();
        async move {
            let s = common::zk::try_state(&new_leader).await?;
            let n = s["frameworks"]
                .as_array()?
                .iter()
                .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
                .filter(|t| {
                    t["state"] == "TASK_RUNNING"
                        && running.contains(&t["id"].as_str().unwrap_or("").to_string())
                })
                .count();
            (n == running.len()).then_some(n)
        }
    })
    .await;
    assert_eq!(tasks, 4);

    // The CLI finds the leader through ZooKeeper too.
    let mut cli = common::Proc::spawn(
        &["agents", "--master", &zk_url, "--json"],
        &[("RUST_LOG", "error")],
    );
    assert_eq!(cli.exit_code().await, 0, "{}", cli.text());
    let listed: serde_json::Value =
        serde_json::from_str(&cli.output.lock().unwrap().join("\n")).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Done: the framework goes, and its tasks with it.
    fw.scheduler.teardown().await.unwrap();
    for a in &agent_http {
        let a = a.clone();
        eventually("the agent's tasks killed", DEADLINE, || {
            let a = a.clone();
            async move { agent_tasks(&a).await.is_empty().then_some(()) }
        })
        .await;
    }
}

#[tokio::test]
async fn t40_a_master_cut_off_from_zookeeper_stops_leading_and_stands_by() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let proxy = ZkProxy::start(format!("127.0.0.1:{}", zk.port).parse().unwrap()).await;
    let zk_url = zk.url("/agora");
    // The first master reaches ZooKeeper through the proxy, and leads.
    let (mut cut_off, cut_addr) = common::zk::spawn_zk_master(&proxy.url("/agora"), &[]).await;
    common::zk::wait_one_leader(std::slice::from_ref(&cut_addr), DEADLINE).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(common::zk::spawn_zk_master(&zk_url, &[]).await);
    }
    let mut all = vec![cut_addr.clone()];
    all.extend(others.iter().map(|(_, a)| a.clone()));
    assert_eq!(common::zk::wait_one_leader(&all, DEADLINE).await, cut_addr);

    let dir = tempfile::tempdir().unwrap();
    let _agent = common::spawn_agent(&zk_url, &dir.path().join("agent"), "cpus:1;mem:256").await;
    let mut config = agora_scheduler::SchedulerConfig::new(&zk_url, "ha-cut");
    config.framework.failover_timeout = 3600.0;
    let fw = common::TestFramework::start_with(config).await;
    let framework_id = fw.id();
    fw.take_offer().await;

    // Cut it off, and watch who says it leads until another master does.
    let cut_at = tokio::time::Instant::now();
    proxy.cut();
    let stepped_down = std::sync::Arc::new(std::sync::Mutex::new(None));
    let elected = eventually("another master leads", DEADLINE, || {
        let all = all.clone();
        let cut_addr = cut_addr.clone();
        let stepped_down = stepped_down.clone();
        async move {
            let mut leading = Vec::new();
            for m in &all {
                if common::zk::try_state(m)
                    .await
                    .is_some_and(|s| s["elected"] == true)
                {
                    leading.push(m.clone());
                }
            }
            assert!(leading.len() <= 1, "two masters lead at once: {leading:?}");
            let mut down = stepped_down.lock().unwrap();
            if !leading.contains(&cut_addr) && down.is_none() {
                *down = Some(cut_at.elapsed());
            }
            match leading.first() {
                Some(l) if *l != cut_addr => Some(cut_at.elapsed()),
                _ => None,
            }
        }
    })
    .await;
    let stepped_down = stepped_down.lock().unwrap().expect("seen stepping down");
    assert!(
        stepped_down < SESSION,
        "the cut-off leader stops leading within its session timeout: took {stepped_down:?}"
    );
    assert!(
        elected < SESSION + Duration::from_secs(3),
        "a new leader within the session timeout plus a little: took {elected:?}"
    );
    cut_off.wait_line("lost leadership").await;
    // It lives on as a standby (no exit, no crash loop).
    assert!(
        cut_off.child.try_wait().unwrap().is_none(),
        "{}",
        cut_off.text()
    );
    let s = common::zk::try_state(&cut_addr).await.unwrap();
    assert_eq!(s["elected"], false, "{s}");

    // Agents and frameworks followed the new leader.
    let new_leader = common::zk::wait_one_leader(&all[1..], DEADLINE).await;
    fw.wait("resubscribed", |s| (s.subscribed >= 2).then_some(()))
        .await;
    assert_eq!(fw.id(), framework_id);
    eventually("the agent with the new leader", DEADLINE, || {
        let new_leader = new_leader.clone();
        async move {
            let s = common::zk::try_state(&new_leader).await?;
            (s["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["status"] == "connected")
                .count()
                == 1)
                .then_some(())
        }
    })
    .await;

    // Back in touch with ZooKeeper, it stands by behind the new leader.
    proxy.heal();
    assert_eq!(
        common::zk::wait_one_leader(&all, DEADLINE).await,
        new_leader
    );
    assert!(
        cut_off.child.try_wait().unwrap().is_none(),
        "{}",
        cut_off.text()
    );
}

#[tokio::test]
async fn t40_standbys_redirect_http_and_refuse_grpc_naming_the_leader() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let (mut m1, a1) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    let leader = common::zk::wait_one_leader(std::slice::from_ref(&a1), DEADLINE).await;
    let (_m2, standby) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    common::zk::wait_one_leader(&[a1.clone(), standby.clone()], DEADLINE).await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, location) in [
        ("/api/v1/scheduler", format!("//{leader}/api/v1/scheduler")),
        ("/nope?x=1&y=2", format!("//{leader}/nope?x=1&y=2")),
    ] {
        let r = http
            .get(format!("http://{standby}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 307, "{path}");
        assert_eq!(r.headers()["location"], location.as_str());
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains(&leader),
            "{body}"
        );
    }
    // A client that follows redirects reaches the leader.
    let followed = reqwest::get(format!("http://{standby}/no-such-endpoint"))
        .await
        .unwrap();
    assert_eq!(followed.status(), 404);
    assert_eq!(followed.url().authority(), leader);

    let s = common::zk::try_state(&standby).await.unwrap();
    assert_eq!(
        (s["elected"].clone(), s["leader"]["address"].clone()),
        (false.into(), leader.clone().into())
    );
    let l = common::zk::try_state(&leader).await.unwrap();
    assert_eq!(
        (l["elected"].clone(), l["leader"]["address"].clone()),
        (true.into(), leader.clone().into())
    );
    let metrics = |addr: String| async move {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(
        metrics(standby.clone())
            .await
            .contains("agora_master_elected 0")
    );
    assert!(
        metrics(leader.clone())
            .await
            .contains("agora_master_elected 1")
    );
    assert_eq!(
        reqwest::get(format!("http://{standby}/health"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Given the standby's address, an agent and a framework are sent to the
    // leader (UNAVAILABLE naming it in `agora-leader`).
    let dir = tempfile::tempdir().unwrap();
    let _agent = common::spawn_agent(&standby, &dir.path().join("agent"), "cpus:1;mem:256").await;
    let fw = common::TestFramework::start(&standby, "via-standby", &["*"], 60.0).await;
    let offer = fw.take_offer().await;
    assert!(
        offer.id.starts_with(l["id"].as_str().unwrap()),
        "{}",
        offer.id
    );

    // `agora execute` finds the leader through ZooKeeper (once the framework
    // above has gone and left the agent's resources free).
    fw.scheduler.teardown().await.unwrap();
    let mut exec = common::Proc::spawn(
        &[
            "execute",
            "--master",
            &zk_url,
            "--name",
            "hi",
            "--command",
            "echo hi from ha",
        ],
        &[("RUST_LOG", "error")],
    );
    assert_eq!(exec.exit_code().await, 0, "{}", exec.text());
    assert!(exec.text().contains("TASK_FINISHED"), "{}", exec.text());

    // A leader stopped gracefully gives its place up at once: the standby
    // leads well before a session timeout could pass.
    let stopped_at = tokio::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m1.child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    common::zk::wait_one_leader(std::slice::from_ref(&standby), DEADLINE).await;
    assert!(
        stopped_at.elapsed() < SESSION,
        "took {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(m1.exit_code().await, 0, "{}", m1.text());
}

#[tokio::test]
async fn t40_unreachable_zookeeper_and_bad_addresses_are_reported_not_fatal() {
    common::init_logs();
    // Nothing listens on this port: the master stands by, says so, retries.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let zk_url = format!("zk://127.0.0.1:{closed}/agora");
    let (mut master, addr) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    master.wait_line("cannot open a session").await;
    let s = common::zk::try_state(&addr).await.unwrap();
    assert_eq!(s["elected"], false);
    assert!(s["leader"].is_null(), "{s}");
    let r = reqwest::get(format!("http://{addr}/anything"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no master leads"),
        "{body}"
    );
    assert!(
        master.child.try_wait().unwrap().is_none(),
        "{}",
        master.text()
    );
    // It stops cleanly while still trying.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(master.exit_code().await, 0, "{}", master.text());

    // Bad addresses are usage errors, before anything is bound.
    for args in [
        vec!["master", "--zk", "zk://127.0.0.1:2181"],
        vec!["master", "--zk", "127.0.0.1:2181/agora"],
        vec![
            "master",
            "--zk",
            "zk://127.0.0.1:2181/a",
            "--zk-session-timeout",
            "10ms",
        ],
        vec![
            "master",
            "--zk",
            "zk://127.0.0.1:2181/a",
            "--registry-dir",
            "/tmp/x",
        ],
        vec![
            "agent",
            "--master",
            "zk://127.0.0.1:0/agora",
            "--work-dir",
            "/tmp/nope",
        ],
        vec![
            "execute",
            "--master",
            "zk://",
            "--name",
            "x",
            "--command",
            "true",
        ],
        vec!["agents", "--master", "zk://h1:2181"],
    ] {
        let mut p = common::Proc::spawn(&args, &[]);
        assert_eq!(p.exit_code().await, 64, "{args:?}: {}", p.text());
    }
}
