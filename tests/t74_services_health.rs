//! Health checks through the services framework, end to end: apps whose
//! tasks serve HTTP (the host's busybox `httpd`, as real processes), checks
//! the agents run, and what services makes of them: replacing an instance
//! its agent killed for failing, a TCP check that follows its listener, a
//! grace period that holds a slow starter, a rolling upgrade to a version
//! that never becomes healthy (capacity kept, then rolled back), and checks
//! that go on across an agent SIGKILL and restart.
//!
//! Every test waits on conditions: a negative assertion ("not killed", "not
//! healthy") is made only once the agent has run (and failed) the checks
//! that would have changed it.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::services::{Services, running, task_ids};
use common::{Cluster, DEADLINE, eventually, get_json, linger};
use serde_json::{Value, json};

/// What an agent offers: ports nothing listens on now, its own (tests run
/// at the same time, and their tasks serve on these ports: a shared range
/// would let one test's check reach another test's server).
fn resources() -> String {
    let listeners: Vec<std::net::TcpListener> = (0..8)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| {
            let p = l.local_addr().unwrap().port();
            format!("{p}-{p}")
        })
        .collect();
    format!("cpus:4;mem:1024;ports:[{}]", ports.join(","))
}

/// A cluster of one agent (in this process) and a services framework.
async fn cluster() -> (Cluster, Services) {
    let cluster = Cluster::start(common::master_config(), &[&resources()]).await;
    let services = Services::start(&cluster.addr()).await;
    (cluster, services)
}

/// A task command that serves `dir/www` over HTTP on `$PORT0` (busybox
/// `httpd`, `/health` answers 200) while the shell condition `down` is
/// false (starting it again should it die), and stops serving (the task
/// keeps running) while it is true. It ends when the test's directory goes
/// (see [`linger`]).
fn server_cmd(dir: &Path, down: &str) -> String {
    // Creates the linger marker; its loop is written out below.
    linger(dir);
    let marker = dir.join(".tasks-may-run");
    let www = dir.join("www");
    format!(
        "w='{www}'; mkdir -p \"$w\"; echo ok > \"$w/health\"; srv=; \
         while [ -e '{marker}' ]; do \
           if {down}; then \
             if [ -n \"$srv\" ]; then kill $srv; wait $srv; srv=; fi; \
           elif [ -z \"$srv\" ] || ! kill -0 $srv 2>/dev/null; then \
             busybox httpd -f -p 127.0.0.1:$PORT0 -h \"$w\" & srv=$!; \
           fi; \
           sleep 0.1; \
         done; \
         if [ -n \"$srv\" ]; then kill $srv; fi",
        www = www.display(),
        marker = marker.display(),
    )
}

/// The condition under which a task of [`server_cmd`] stops serving: the
/// file `down-<its task id>` exists in `dir`.
fn down_file(dir: &Path) -> String {
    format!("[ -e '{}/down-'\"$MESOS_TASK_ID\" ]", dir.display())
}

fn stop_serving(dir: &Path, task: &str) {
    std::fs::write(dir.join(format!("down-{task}")), b"").unwrap();
}

/// A quick check: every second from the start, a one-second timeout.
fn check(protocol: &str, path: Option<&str>, failures: u32, grace: u32) -> Value {
    let mut c = json!({
        "protocol": protocol, "portIndex": 0,
        "delaySeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1,
        "gracePeriodSeconds": grace, "maxConsecutiveFailures": failures
    });
    if let Some(p) = path {
        c["path"] = json!(p);
    }
    c
}

fn app(id: &str, cmd: &str, instances: u32, checks: Value) -> Value {
    json!({
        "id": id, "cmd": cmd, "cpus": 0.1, "mem": 16, "instances": instances,
        "healthChecks": checks, "backoffSeconds": 1
    })
}

/// Whether every task of the app runs and its checks passed.
fn all_healthy(a: &Value, n: usize) -> bool {
    let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
    tasks.len() == n
        && running(a).len() == n
        && a["tasksHealthy"] == n
        && tasks
            .iter()
            .all(|t| t["healthCheckResults"][0]["alive"] == true)
}

fn no_deployment(a: &Value) -> bool {
    a["deployments"].as_array().is_some_and(|d| d.is_empty())
}

fn task<'a>(a: &'a Value, id: &str) -> Option<&'a Value> {
    a["tasks"].as_array()?.iter().find(|t| t["id"] == id)
}

/// The agent's health check counters (`/state` `health_checks`).
async fn agent_checks(agent_http: &str) -> Value {
    get_json(&format!("http://{agent_http}/state")).await["health_checks"].clone()
}

/// Runs `agora ARGS...` against `svc`; panics unless it exits 0.
async fn agora(svc: &Services, args: &[&str]) -> String {
    let mut p = common::Proc::spawn(args, &[("AGORA_SERVICES", svc.url.as_str())]);
    let code = p.exit_code().await;
    let out = p.text();
    assert_eq!(code, 0, "agora {args:?}: {out}");
    out
}

/// The row of a table that starts with `task`.
fn task_row(table: &str, task: &str) -> String {
    table
        .lines()
        .find(|l| l.trim_start().starts_with(task))
        .unwrap_or_else(|| panic!("no row for {task} in:\n{table}"))
        .to_string()
}

/// The services framework's event stream, collected from when it opened.
struct Events {
    text: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Events {
    async fn open(svc: &Services) -> Events {
        let mut stream = reqwest::get(format!("{}/v2/events", svc.url))
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(chunk)) = stream.chunk().await {
                t.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        let events = Events { text, reader };
        events
            .wait("the stream to attach", |kind, _| {
                kind == "event_stream_attached"
            })
            .await;
        events
    }

    /// Every complete event so far: its type and its data.
    fn all(&self) -> Vec<(String, Value)> {
        let text = self.text.lock().unwrap().replace("\r\n", "\n");
        let mut out = Vec::new();
        let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
        for block in complete.split("\n\n") {
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = Some(k.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = serde_json::from_str(d.trim()).ok();
                }
            }
            if let (Some(k), Some(d)) = (kind, data) {
                out.push((k, d));
            }
        }
        out
    }

    /// Waits for an event that `check` accepts; returns its data.
    async fn wait(&self, what: &str, check: impl Fn(&str, &Value) -> bool) -> Value {
        eventually(what, DEADLINE, || async {
            self.all()
                .into_iter()
                .find(|(k, d)| check(k, d))
                .map(|(_, d)| d)
        })
        .await
    }

    fn count(&self, check: impl Fn(&str, &Value) -> bool) -> usize {
        self.all().iter().filter(|(k, d)| check(k, d)).count()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn killed_by_health(kind: &str, d: &Value) -> bool {
    kind == "status_update_event"
        && d["taskStatus"] == "TASK_KILLED"
        && d["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Task killed because its health check"))
}

/// Samples an app over the API until stopped: the fewest healthy
/// instances (`tasksHealthy`) and the most tasks alive at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(u64, usize, usize)>,
}

impl Sampler {
    fn start(svc: &Services, id: &str) -> Sampler {
        let svc = Services::at(&svc.url);
        let path = format!("/v2/apps{id}");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let (mut min_healthy, mut max_alive, mut samples) = (u64::MAX, 0, 0);
            while !s.load(Ordering::SeqCst) {
                let (status, v) = svc.call("GET", &path, None).await;
                if status == 200 {
                    let a = &v["app"];
                    min_healthy = min_healthy.min(a["tasksHealthy"].as_u64().unwrap());
                    max_alive = max_alive.max(a["tasks"].as_array().map_or(0, |t| t.len()));
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (min_healthy, max_alive, samples)
        });
        Sampler { stop, handle }
    }

    /// Stops it: (fewest healthy, most alive).
    async fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let (min_healthy, max_alive, samples) = self.handle.await.unwrap();
        assert!(samples > 10, "the sampler took only {samples} samples");
        (min_healthy, max_alive)
    }
}

#[tokio::test]
async fn an_instance_whose_server_stops_is_killed_by_its_agent_and_replaced() {
    let (cluster, svc) = cluster().await;
    let dir = cluster.dir.path();
    let def = app(
        "/web",
        &server_cmd(dir, &down_file(dir)),
        1,
        json!([check("HTTP", Some("/health"), 2, 30)]),
    );
    svc.create(&def.to_string()).await;
    let a = svc
        .wait_app("the instance healthy, the deployment done", "/web", |a| {
            all_healthy(a, 1) && no_deployment(a)
        })
        .await;
    let old = task_ids(&a)[0].clone();
    assert_eq!(a["tasksUnhealthy"], 0, "{a}");
    let results = &task(&a, &old).unwrap()["healthCheckResults"][0];
    assert_eq!(results["taskId"], old.as_str(), "{a}");

    let events = Events::open(&svc).await;
    let sampler = Sampler::start(&svc, "/web");
    stop_serving(dir, &old);
    events
        .wait("the instance reported unhealthy", |kind, d| {
            kind == "health_status_changed_event" && d["taskId"] == old && d["alive"] == false
        })
        .await;
    let killed = events
        .wait("the agent to kill it for its health check", |kind, d| {
            killed_by_health(kind, d) && d["taskId"] == old
        })
        .await;
    let message = killed["message"].as_str().unwrap();
    assert!(
        message.contains("failed 2 times in a row") && message.contains("/health"),
        "{message}"
    );
    let a = svc
        .wait_app("a healthy replacement", "/web", |a| {
            all_healthy(a, 1) && !task_ids(a).contains(&old)
        })
        .await;
    let (_, max_alive) = sampler.finish().await;
    assert!(max_alive <= 1, "{max_alive} tasks at once for 1 instance");
    assert_eq!(a["instances"], 1);
    assert_eq!(a["tasksUnhealthy"], 0, "{a}");
    // A kill for failing health is a failure of the app: it is the last
    // one, and the replacement waited out the launch backoff.
    let failure = &a["lastTaskFailure"];
    assert_eq!(failure["taskId"], old.as_str(), "{a}");
    assert_eq!(failure["state"], "TASK_KILLED", "{a}");
    assert!(
        failure["message"]
            .as_str()
            .is_some_and(|m| m.contains("health check")),
        "{a}"
    );
    // The master saw the same: the old task ended killed, unhealthy.
    let state = cluster.state().await;
    let ended = state["frameworks"][0]["completed_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == old)
        .cloned()
        .unwrap_or_else(|| panic!("{old} not among the master's completed tasks: {state}"));
    assert_eq!(ended["state"], "TASK_KILLED", "{ended}");
    assert_eq!(ended["healthy"], false, "{ended}");
}

#[tokio::test]
async fn a_tcp_check_follows_the_listener_and_zero_failures_never_kills() {
    let (cluster, svc) = cluster().await;
    let dir = cluster.dir.path();
    let agent_http = cluster.agents[0].http_addr().to_string();
    // maxConsecutiveFailures 0: report, never kill (Marathon's rule).
    let def = app(
        "/tcp",
        &server_cmd(dir, &down_file(dir)),
        1,
        json!([check("TCP", None, 0, 30)]),
    );
    svc.create(&def.to_string()).await;
    let a = svc
        .wait_app("the instance healthy", "/tcp", |a| {
            all_healthy(a, 1) && no_deployment(a)
        })
        .await;
    let id = task_ids(&a)[0].clone();

    stop_serving(dir, &id);
    let a = svc
        .wait_app("the instance unhealthy", "/tcp", |a| {
            a["tasksUnhealthy"] == 1
                && a["tasksHealthy"] == 0
                && task(a, &id).is_some_and(|t| t["healthCheckResults"][0]["alive"] == false)
        })
        .await;
    assert_eq!(running(&a).len(), 1, "{a}");
    let port = a["tasks"][0]["ports"][0].as_u64().unwrap();
    let cause = task(&a, &id).unwrap()["healthCheckResults"][0]["lastFailureCause"].clone();
    assert!(
        cause
            .as_str()
            .is_some_and(|c| c.contains(&format!("(TCP 127.0.0.1:{port}) failed"))),
        "the agent's reason: {a}"
    );
    // Three more failed checks: with a limit of 0 the task still runs.
    let failed = agent_checks(&agent_http).await["checks_failed"]
        .as_u64()
        .unwrap();
    eventually("three more failed checks", DEADLINE, || async {
        let now = agent_checks(&agent_http).await["checks_failed"].as_u64()?;
        (now >= failed + 3).then_some(())
    })
    .await;
    let a = svc.app("/tcp").await;
    assert_eq!(task_ids(&a), vec![id.clone()], "not killed: {a}");
    assert_eq!(running(&a).len(), 1, "{a}");
    assert_eq!(a["tasksUnhealthy"], 1, "{a}");
    // The CLI shows it: the app's counts, and the task's row.
    let out = agora(&svc, &["apps", "show", "/tcp"]).await;
    assert!(out.contains("0 healthy, 1 unhealthy"), "{out}");
    assert!(task_row(&out, &id).contains(" unhealthy "), "{out}");
    let out = agora(&svc, &["apps", "tasks", "/tcp"]).await;
    assert!(out.lines().next().unwrap().contains("HEALTH"), "{out}");
    assert!(task_row(&out, &id).contains(" unhealthy "), "{out}");

    // Listening again: healthy again, the same task.
    std::fs::remove_file(dir.join(format!("down-{id}"))).unwrap();
    let a = svc
        .wait_app("the instance healthy again", "/tcp", |a| all_healthy(a, 1))
        .await;
    assert_eq!(task_ids(&a), vec![id.clone()]);
    let out = agora(&svc, &["apps", "tasks", "/tcp"]).await;
    assert!(task_row(&out, &id).contains(" healthy "), "{out}");
}

#[tokio::test]
async fn the_grace_period_holds_a_slow_starter() {
    let (cluster, svc) = cluster().await;
    let dir = cluster.dir.path();
    let agent_http = cluster.agents[0].http_addr().to_string();
    let up = dir.join("up");
    // Serves only once `up` exists. One failure outside the grace period
    // would kill it.
    let def = app(
        "/slow",
        &server_cmd(dir, &format!("[ ! -e '{}' ]", up.display())),
        1,
        json!([check("HTTP", Some("/health"), 1, 120)]),
    );
    svc.create(&def.to_string()).await;
    let a = svc
        .wait_app("the instance running", "/slow", |a| running(a).len() == 1)
        .await;
    let id = task_ids(&a)[0].clone();
    eventually(
        "three failed checks in the grace period",
        DEADLINE,
        || async {
            let c = agent_checks(&agent_http).await;
            (c["checks_failed"].as_u64()? >= 3).then_some(())
        },
    )
    .await;
    let a = svc.app("/slow").await;
    assert_eq!(task_ids(&a), vec![id.clone()], "not killed: {a}");
    assert_eq!(running(&a).len(), 1, "{a}");
    assert_eq!(
        task(&a, &id).unwrap()["healthCheckResults"],
        json!([]),
        "no verdict in the grace period: {a}"
    );
    assert_eq!(a["tasksHealthy"], 0, "{a}");
    assert_eq!(a["tasksUnhealthy"], 0, "{a}");
    assert_eq!(
        a["deployments"].as_array().map(Vec::len),
        Some(1),
        "the deployment waits for health: {a}"
    );

    std::fs::write(&up, b"").unwrap();
    let a = svc
        .wait_app(
            "the slow starter healthy, the deployment done",
            "/slow",
            |a| all_healthy(a, 1) && no_deployment(a),
        )
        .await;
    assert_eq!(task_ids(&a), vec![id], "the same task");
    assert!(a["lastTaskFailure"].is_null(), "{a}");
}

#[tokio::test]
async fn an_upgrade_that_never_gets_healthy_keeps_capacity_and_rolls_back() {
    let (cluster, svc) = cluster().await;
    let dir = cluster.dir.path();
    let mut def = app(
        "/up",
        &server_cmd(dir, "false"),
        3,
        json!([check("HTTP", Some("/health"), 3, 30)]),
    );
    // minHealthy 2, maxCapacity 3: one old instance may go to make room.
    def["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0});
    svc.create(&def.to_string()).await;
    let first = svc
        .wait_app("three healthy instances", "/up", |a| {
            all_healthy(a, 3) && no_deployment(a)
        })
        .await;
    let v1 = first["versionInfo"]["lastConfigChangeAt"].clone();
    let old = task_ids(&first);

    let events = Events::open(&svc).await;
    let sampler = Sampler::start(&svc, "/up");
    // The new version checks a path httpd does not serve (404): it fails
    // at once, and is killed at its first failure.
    let deployment = svc
        .update(
            "/up",
            &json!({"healthChecks": [check("HTTP", Some("/missing"), 1, 0)]}).to_string(),
        )
        .await;
    let is_new_killed = |kind: &str, d: &Value| {
        killed_by_health(kind, d)
            && !old.iter().any(|o| d["taskId"] == o.as_str())
            && d["message"].as_str().unwrap().contains("/missing")
    };
    eventually(
        "two instances of the new version killed by their check",
        DEADLINE * 2,
        || async { (events.count(is_new_killed) >= 2).then_some(()) },
    )
    .await;
    let a = svc.app("/up").await;
    assert_eq!(a["deployments"][0]["id"], deployment.as_str(), "{a}");
    let kept: Vec<String> = task_ids(&a)
        .into_iter()
        .filter(|t| old.contains(t))
        .collect();
    assert_eq!(kept.len(), 2, "two old instances kept: {a}");
    assert_eq!(a["lastTaskFailure"]["state"], "TASK_KILLED", "{a}");

    // Roll the deployment back: the app as it was, its old instances kept.
    let (status, v) = svc
        .call("DELETE", &format!("/v2/deployments/{deployment}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let back = svc
        .wait_app("the rollback done, three healthy", "/up", |a| {
            all_healthy(a, 3) && no_deployment(a) && a["healthChecks"][0]["path"] == "/health"
        })
        .await;
    let (min_healthy, max_alive) = sampler.finish().await;
    assert!(
        min_healthy >= 2,
        "healthy instances dropped to {min_healthy}"
    );
    assert!(
        max_alive <= 3,
        "{max_alive} tasks at once, above maxCapacity"
    );
    let now = task_ids(&back);
    assert!(
        kept.iter().all(|t| now.contains(t)),
        "the rollback kept the old instances {kept:?}: {back}"
    );
    assert_eq!(back["versionInfo"]["lastConfigChangeAt"], v1, "{back}");
    assert_eq!(svc.get("/v2/deployments").await, json!([]));
}

#[tokio::test]
async fn checks_go_on_across_an_agent_sigkill_and_restart() {
    let cluster = Cluster::start(common::master_config(), &[]).await;
    let dir = cluster.dir.path();
    let work = dir.join("agent");
    let res = resources();
    let agent = common::spawn_agent(&cluster.addr(), &work, &res).await;
    cluster.wait_agents(1).await;
    let svc = Services::start(&cluster.addr()).await;
    let def = app(
        "/keep",
        &server_cmd(dir, &down_file(dir)),
        1,
        json!([check("HTTP", Some("/health"), 2, 30)]),
    );
    svc.create(&def.to_string()).await;
    let a = svc
        .wait_app("the instance healthy", "/keep", |a| {
            all_healthy(a, 1) && no_deployment(a)
        })
        .await;
    let id = task_ids(&a)[0].clone();

    let mut agent = agent;
    agent.kill9().await;
    let agent = common::spawn_agent(&cluster.addr(), &work, &res).await;
    let agent_http = agent.wait_field("starting the agent", "http").await;
    // The new agent process checks the recovered task: passes, and no
    // new verdict (it was healthy and stays so).
    eventually(
        "the restarted agent to pass two checks",
        DEADLINE,
        || async {
            let c = agent_checks(&agent_http).await;
            (c["tasks"] == 1 && c["checks_passed"].as_u64()? >= 2).then_some(())
        },
    )
    .await;
    let a = svc.app("/keep").await;
    assert!(all_healthy(&a, 1), "{a}");
    assert_eq!(task_ids(&a), vec![id.clone()], "nothing relaunched: {a}");

    // The resumed checks still kill and services still replaces.
    stop_serving(dir, &id);
    let a = svc
        .wait_app("a healthy replacement", "/keep", |a| {
            all_healthy(a, 1) && !task_ids(a).contains(&id)
        })
        .await;
    assert_eq!(a["lastTaskFailure"]["taskId"], id.as_str(), "{a}");
    assert!(
        a["lastTaskFailure"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Task killed because its health check")),
        "{a}"
    );
    drop(agent);
}

#[tokio::test]
async fn a_readiness_check_holds_an_upgrade_until_the_new_instance_is_ready() {
    let (cluster, svc) = cluster().await;
    let dir = cluster.dir.path();
    let agent_http = cluster.agents[0].http_addr().to_string();
    // `/ready` answers 200 while the file exists, 404 otherwise; `/health`
    // always passes.
    let ready = dir.join("www").join("ready");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(&ready, b"ok").unwrap();
    let mut def = app(
        "/rdy",
        &server_cmd(dir, "false"),
        1,
        json!([check("HTTP", Some("/health"), 3, 30)]),
    );
    def["portDefinitions"] = json!([{"port": 0, "name": "http"}]);
    def["readinessChecks"] = json!([{
        "portName": "http", "path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1
    }]);
    svc.create(&def.to_string()).await;
    let first = svc
        .wait_app("the first instance healthy and ready", "/rdy", |a| {
            all_healthy(a, 1) && no_deployment(a)
        })
        .await;
    let old = task_ids(&first)[0].clone();

    // The new version's instance is healthy at once, but not ready.
    std::fs::remove_file(&ready).unwrap();
    let deployment = svc
        .update("/rdy", &json!({"env": {"V": "2"}}).to_string())
        .await;
    let a = svc
        .wait_app("the new instance healthy", "/rdy", |a| {
            a["tasksHealthy"] == 2 && running(a).len() == 2
        })
        .await;
    let new = task_ids(&a).into_iter().find(|t| *t != old).unwrap();
    // Two failed readiness checks (the health checks all pass).
    let failed = agent_checks(&agent_http).await["checks_failed"]
        .as_u64()
        .unwrap();
    eventually("two failed readiness checks", DEADLINE, || async {
        let now = agent_checks(&agent_http).await["checks_failed"].as_u64()?;
        (now >= failed + 2).then_some(())
    })
    .await;
    let a = svc.app("/rdy").await;
    assert_eq!(task_ids(&a).len(), 2, "the old instance stays: {a}");
    assert!(task(&a, &old).is_some(), "{a}");
    assert_eq!(a["deployments"][0]["id"], deployment.as_str(), "{a}");

    // Ready: the upgrade completes, the old instance goes.
    std::fs::write(&ready, b"ok").unwrap();
    let a = svc
        .wait_app("the upgrade done", "/rdy", |a| {
            all_healthy(a, 1) && no_deployment(a)
        })
        .await;
    assert_eq!(task_ids(&a), vec![new]);
}

#[tokio::test]
async fn a_bridged_docker_app_is_checked_through_its_host_port_and_inside_its_container() {
    let Some(_docker) = common::docker::docker_or_skip(
        "a_bridged_docker_app_is_checked_through_its_host_port_and_inside_its_container",
    )
    .await
    else {
        return;
    };
    let (cluster, _guard) = common::docker::docker_cluster(&resources(), |_| {}).await;
    let svc = Services::start(&cluster.addr()).await;
    // httpd on the container's port 80, published on a host port; the
    // COMMAND check looks for a file that exists only in the container.
    let def = json!({
        "id": "/boxed", "cpus": 0.1, "mem": 32, "instances": 1,
        "cmd": "mkdir -p /www && echo ok > /www/health && touch /tmp/inside && \
                exec httpd -f -p 80 -h /www",
        "container": {
            "type": "DOCKER",
            "docker": {"image": common::docker::TEST_IMAGE, "network": "BRIDGE"},
            "portMappings": [{"containerPort": 80, "hostPort": 0}]
        },
        "healthChecks": [
            check("HTTP", Some("/health"), 3, 60),
            {
                "protocol": "COMMAND", "command": {"value": "test -f /tmp/inside"},
                "delaySeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5,
                "gracePeriodSeconds": 60, "maxConsecutiveFailures": 3
            }
        ]
    });
    assert!(
        !Path::new("/tmp/inside").exists(),
        "the check's file must not exist on the host for this test to mean anything"
    );
    svc.create(&def.to_string()).await;
    let a = svc
        .wait_app(
            "the container healthy, the deployment done",
            "/boxed",
            |a| all_healthy(a, 1) && no_deployment(a),
        )
        .await;
    let port = a["tasks"][0]["ports"][0].as_u64().unwrap();
    assert_ne!(port, 80, "a host port: {a}");
    let (status, v) = svc.call("DELETE", "/v2/apps/boxed", None).await;
    assert_eq!(status, 200, "{v}");
    svc.wait_no_deployments().await;
}
