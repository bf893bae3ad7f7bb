//! The services framework on a real cluster (master and agents in this
//! process, tasks as real processes, Docker where a daemon answers), over
//! its Marathon-shaped REST API: deploy, scale, kill and replace, rolling
//! upgrades that keep capacity, restart, rollback, delete, validation,
//! constraints, the queue.

mod common;

use std::time::Duration;

use common::services::{Services, running, task_ids};
use common::{Cluster, DEADLINE, eventually, linger};
use serde_json::{Value, json};

/// What each agent offers.
const RES: &str = "cpus:4;mem:1024;ports:[31000-31099]";

/// A cluster of `n` agents named `host0`, `host1` ..., and a services
/// framework on it.
async fn cluster(n: usize) -> (Cluster, Services) {
    let mut cluster = Cluster::start(common::master_config(), &[]).await;
    for i in 0..n {
        let work = cluster.dir.path().join(format!("agent{i}"));
        let mut config = common::agent_config(&cluster.addr(), &work, RES);
        config.hostname = format!("host{i}");
        let agent = agora_agent::start(config, cluster.shutdown.child_token())
            .await
            .expect("agent starts");
        cluster.agents.push(agent);
    }
    cluster.wait_agents(n).await;
    let services = Services::start(&cluster.addr()).await;
    (cluster, services)
}

fn app(id: &str, cmd: &str, instances: u32) -> Value {
    json!({"id": id, "cmd": cmd, "cpus": 0.1, "mem": 16, "instances": instances})
}

/// The master's tasks of the services framework, as `(id, state)`,
/// ended ones included.
async fn master_tasks(cluster: &Cluster) -> Vec<(String, String)> {
    let state = cluster.state().await;
    let mut out = Vec::new();
    for f in state["frameworks"].as_array().unwrap() {
        if f["name"] != "agora-services" {
            continue;
        }
        for key in ["tasks", "completed_tasks"] {
            for t in f[key].as_array().into_iter().flatten() {
                out.push((
                    t["id"].as_str().unwrap_or_default().to_string(),
                    t["state"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn an_app_is_deployed_scaled_healed_and_killed() {
    let (cluster, svc) = cluster(1).await;
    let cmd = linger(cluster.dir.path());
    let (status, v, headers) = svc
        .request(
            "POST",
            "/v2/apps",
            Some(&app("/team/web", &cmd, 2).to_string()),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(headers["location"], "/v2/apps/team/web");
    assert!(
        headers.contains_key("marathon-deployment-id"),
        "{headers:?}"
    );
    assert_eq!(v["id"], "/team/web");
    assert_eq!(v["instances"], 2);
    let version = v["version"].as_str().unwrap().to_string();

    let a = svc.wait_running("/team/web", 2).await;
    for t in a["tasks"].as_array().unwrap() {
        assert_eq!(t["appId"], "/team/web");
        assert_eq!(t["host"], "host0");
        assert_eq!(t["version"], version.as_str());
        let port = t["ports"][0].as_u64().expect("a host port");
        assert!((31000..=31099).contains(&port), "{t}");
        assert!(t["id"].as_str().unwrap().starts_with("team_web."), "{t}");
    }
    assert_eq!(a["tasksRunning"], 2);
    let two = task_ids(&a);
    // The group the id implies.
    let groups = svc.get("/v2/groups").await;
    assert_eq!(groups["groups"][0]["id"], "/team", "{groups}");

    // Scale up: the two keep running, two more start.
    svc.update("/team/web", r#"{"instances": 4}"#).await;
    let a = svc.wait_running("/team/web", 4).await;
    let four = task_ids(&a);
    assert!(two.iter().all(|t| four.contains(t)), "{two:?} / {four:?}");
    assert!(a["version"].as_str().unwrap() > version.as_str());
    assert_eq!(a["versionInfo"]["lastConfigChangeAt"], version.as_str());

    // Scale down: youngest first, the first two stay.
    svc.update("/team/web", r#"{"instances": 2}"#).await;
    let a = svc.wait_running("/team/web", 2).await;
    assert_eq!(task_ids(&a), two);

    // A killed task is replaced.
    let victim = two[0].clone();
    let (status, v) = svc
        .call("DELETE", &format!("/v2/apps/team/web/tasks/{victim}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["task"]["id"], victim.as_str());
    let a = svc
        .wait_app("a replacement for the killed task", "/team/web", |a| {
            running(a).len() == 2 && !task_ids(a).contains(&victim)
        })
        .await;
    assert_eq!(a["instances"], 2, "a kill without scale keeps the count");

    // Killed with scale=true: not replaced, the count goes down.
    let last = task_ids(&a)[0].clone();
    let (status, v) = svc
        .call(
            "DELETE",
            &format!("/v2/apps/team/web/tasks/{last}?scale=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["deploymentId"].is_string(), "{v}");
    let a = svc.wait_running("/team/web", 1).await;
    assert_eq!(a["instances"], 1);
    assert!(!task_ids(&a).contains(&last));

    // What the master saw: each task ended once, killed.
    let tasks = master_tasks(&cluster).await;
    assert!(
        tasks
            .iter()
            .any(|(id, state)| *id == victim && state == "TASK_KILLED"),
        "{tasks:?}"
    );
}

#[tokio::test]
async fn a_rolling_upgrade_never_drops_below_minimum_health_capacity() {
    let (cluster, svc) = cluster(1).await;
    let cmd = linger(cluster.dir.path());
    let mut def = app("/roll", &cmd, 4);
    def["env"] = json!({"V": "1"});
    // minHealthy = 2, maxCapacity = 4: old instances must go before new
    // ones start.
    def["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0});
    svc.create(&def.to_string()).await;
    let first = svc.wait_running("/roll", 4).await;
    let v1 = first["version"].as_str().unwrap().to_string();
    let old = task_ids(&first);

    // Watch capacity continuously while the upgrade runs.
    let watcher = {
        let svc = Services::at(&svc.url);
        tokio::spawn(async move {
            let mut min_running = usize::MAX;
            let mut max_alive = 0;
            loop {
                let (status, v) = svc.call("GET", "/v2/apps/roll", None).await;
                if status == 200 {
                    let a = &v["app"];
                    min_running = min_running.min(running(a).len());
                    max_alive = max_alive.max(a["tasks"].as_array().map_or(0, |t| t.len()));
                    let done = a["deployments"].as_array().is_some_and(|d| d.is_empty())
                        && a["env"]["V"] == "2"
                        && running(a).len() == 4
                        && running(a).iter().all(|t| t["version"] == a["version"]);
                    if done {
                        return (min_running, max_alive);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    svc.update("/roll", r#"{"env": {"V": "2"}}"#).await;
    let (min_running, max_alive) = tokio::time::timeout(DEADLINE * 3, watcher)
        .await
        .expect("the upgrade finishes")
        .unwrap();
    assert!(
        min_running >= 2,
        "running instances dropped to {min_running}"
    );
    assert!(
        max_alive <= 4,
        "{max_alive} tasks at once, above maxCapacity"
    );
    let upgraded = svc.wait_running("/roll", 4).await;
    let v2 = upgraded["version"].as_str().unwrap().to_string();
    assert!(v2 > v1);
    assert_eq!(upgraded["versionInfo"]["lastConfigChangeAt"], v2.as_str());
    let new = task_ids(&upgraded);
    assert!(new.iter().all(|t| !old.contains(t)), "every task replaced");

    // Restart: every task replaced again, same definition.
    let (status, v) = svc.call("POST", "/v2/apps/roll/restart", None).await;
    assert_eq!(status, 200, "{v}");
    let restarted = svc
        .wait_app("every task replaced by the restart", "/roll", |a| {
            running(a).len() == 4
                && a["deployments"].as_array().is_some_and(|d| d.is_empty())
                && task_ids(a).iter().all(|t| !new.contains(t))
        })
        .await;
    assert_eq!(restarted["env"]["V"], "2");

    // Versions, newest first; the first one can be read back.
    let versions = svc.get("/v2/apps/roll/versions").await;
    let list: Vec<String> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(list.last(), Some(&v1), "{versions}");
    assert!(list.contains(&v2), "{versions}");
    let old_def = svc.get(&format!("/v2/apps/roll/versions/{v1}")).await;
    assert_eq!(old_def["env"]["V"], "1", "{old_def}");

    // Rollback to the first version: a new version with the old definition.
    let deployment = svc
        .update("/roll", &json!({"version": v1}).to_string())
        .await;
    assert!(!deployment.is_empty());
    let back = svc
        .wait_app("the rollback to finish", "/roll", |a| {
            a["env"]["V"] == "1"
                && running(a).len() == 4
                && a["deployments"].as_array().is_some_and(|d| d.is_empty())
                && running(a).iter().all(|t| t["version"] == a["version"])
        })
        .await;
    assert!(back["version"].as_str().unwrap() > v2.as_str());

    // Delete: gone from the API, every task killed.
    let (status, v) = svc.call("DELETE", "/v2/apps/roll", None).await;
    assert_eq!(status, 200, "{v}");
    svc.wait_no_deployments().await;
    let (status, v) = svc.call("GET", "/v2/apps/roll", None).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["message"], "App '/roll' does not exist");
    eventually("every task of /roll to end", DEADLINE, || async {
        let tasks = master_tasks(&cluster).await;
        tasks
            .iter()
            .all(|(_, s)| s != "TASK_RUNNING" && s != "TASK_STAGING" && s != "TASK_STARTING")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deployment_that_cannot_finish_waits_in_the_queue_and_rolls_back() {
    let (cluster, svc) = cluster(1).await;
    let cmd = linger(cluster.dir.path());
    svc.create(&app("/q", &cmd, 1).to_string()).await;
    svc.wait_running("/q", 1).await;
    // Three instances need 3 GB: one agent has 1 GB.
    let mut big = app("/q", &cmd, 3);
    big["mem"] = json!(400);
    let deployment = svc.update("/q", &big.to_string()).await;
    let queued = eventually(
        "/q to wait in the queue with a reason",
        DEADLINE,
        || async {
            let q = svc.get("/v2/queue").await;
            let item = q["queue"].as_array()?.first()?.clone();
            let reasons = item["processedOffersSummary"]["rejectSummaryLastOffers"].clone();
            (item["app"]["id"] == "/q" && reasons.as_array().is_some_and(|r| !r.is_empty()))
                .then_some(item)
        },
    )
    .await;
    assert!(queued["count"].as_u64().unwrap() >= 1, "{queued}");
    // Another change is refused while the deployment holds the app ...
    let (status, v) = svc
        .call("PUT", "/v2/apps/q", Some(r#"{"instances": 2}"#))
        .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["deployments"][0]["id"], deployment.as_str(), "{v}");
    // ... and the deployment is listed with its steps.
    let list = svc.get("/v2/deployments").await;
    assert_eq!(list[0]["id"], deployment.as_str(), "{list}");
    assert_eq!(list[0]["affectedApps"], json!(["/q"]));
    // Rolling it back restores the app as it was.
    let (status, v) = svc
        .call("DELETE", &format!("/v2/deployments/{deployment}"), None)
        .await;
    assert_eq!(status, 200, "{v}");
    let back = svc
        .wait_app("the rollback to finish", "/q", |a| {
            a["mem"].as_f64() == Some(16.0)
                && a["instances"] == 1
                && running(a).len() == 1
                && a["deployments"].as_array().is_some_and(|d| d.is_empty())
        })
        .await;
    assert_eq!(back["tasks"].as_array().unwrap().len(), 1, "{back}");
    let q = svc.get("/v2/queue").await;
    assert_eq!(q["queue"], json!([]), "{q}");
    // An unknown deployment: 404.
    let (status, _) = svc.call("DELETE", "/v2/deployments/nope", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_input_is_refused_with_marathons_errors_and_nothing_is_stored() {
    let (cluster, svc) = cluster(1).await;
    let cmd = linger(cluster.dir.path());
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not JSON", "{\"id\": ".to_string(), 400, ""),
        (
            "an id with upper case",
            app("/Web", &cmd, 1).to_string(),
            422,
            "/id",
        ),
        (
            "negative cpus",
            {
                let mut a = app("/w", &cmd, 1);
                a["cpus"] = json!(-1);
                a.to_string()
            },
            422,
            "/cpus",
        ),
        (
            "negative instances",
            app("/w", &cmd, 1)
                .to_string()
                .replace("\"instances\":1", "\"instances\":-2"),
            422,
            "/instances",
        ),
        (
            "an unknown operator",
            {
                let mut a = app("/w", &cmd, 1);
                a["constraints"] = json!([["hostname", "NEAR"]]);
                a.to_string()
            },
            422,
            "/constraints",
        ),
        (
            "an unknown field",
            {
                let mut a = app("/w", &cmd, 1);
                a["healthcheck"] = json!([]);
                a.to_string()
            },
            422,
            "",
        ),
        (
            "neither cmd, args nor image",
            json!({"id": "/w"}).to_string(),
            422,
            "",
        ),
    ];
    for (what, body, status, path) in cases {
        let (got, v) = svc.call("POST", "/v2/apps", Some(&body)).await;
        assert_eq!(got, status, "{what}: {v}");
        assert!(v["message"].is_string(), "{what}: {v}");
        if status == 422 {
            assert_eq!(v["message"], "Object is not valid", "{what}: {v}");
            let details = v["details"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: {v}"));
            assert!(!details.is_empty(), "{what}: {v}");
            assert!(details[0]["errors"][0].is_string(), "{what}: {v}");
            assert!(
                details
                    .iter()
                    .any(|d| d["path"].as_str().unwrap().starts_with(path)),
                "{what}: {v}"
            );
        }
    }
    assert_eq!(
        svc.get("/v2/apps").await,
        json!({"apps": []}),
        "nothing stored"
    );
    assert_eq!(svc.get("/v2/deployments").await, json!([]));

    svc.create(&app("/w", &cmd, 1).to_string()).await;
    let w = svc.wait_running("/w", 1).await;
    // The id is taken.
    let (status, v) = svc
        .call("POST", "/v2/apps", Some(&app("/w", &cmd, 1).to_string()))
        .await;
    assert_eq!(status, 409, "{v}");
    // A bad partial update changes nothing.
    let (status, v) = svc
        .call("PUT", "/v2/apps/w", Some(r#"{"mem": "lots"}"#))
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["details"][0]["path"], "/mem", "{v}");
    assert_eq!(svc.app("/w").await["version"], w["version"]);
    // Unknown things: 404.
    for path in [
        "/v2/apps/nope",
        "/v2/apps/nope/tasks",
        "/v2/apps/w/tasks/nope",
    ] {
        let (status, v) = svc.call("GET", path, None).await;
        assert_eq!(status, 404, "{path}: {v}");
    }
    let (_, v) = svc.call("GET", "/v2/apps/nope", None).await;
    assert_eq!(v, json!({"message": "App '/nope' does not exist"}));
    // A malformed flag.
    let (status, _) = svc
        .call("PUT", "/v2/apps/w?force=maybe", Some(r#"{"instances": 2}"#))
        .await;
    assert_eq!(status, 400);
    assert_eq!(svc.app("/w").await["instances"], 1);
    // The info a client reads first.
    let info = svc.get("/v2/info").await;
    assert_eq!(info["name"], "agora-services");
    assert_eq!(info["elected"], true);
    assert!(info["frameworkId"].is_string(), "{info}");
    let leader = svc.get("/v2/leader").await;
    assert_eq!(
        leader["leader"],
        svc.url.trim_start_matches("http://"),
        "{leader}"
    );
}

#[tokio::test]
async fn unique_hostname_spreads_instances_and_an_unsatisfiable_one_waits() {
    let (cluster, svc) = cluster(3).await;
    let cmd = linger(cluster.dir.path());
    let mut def = app("/spread", &cmd, 3);
    def["constraints"] = json!([["hostname", "UNIQUE"]]);
    svc.create(&def.to_string()).await;
    let a = svc.wait_running("/spread", 3).await;
    let mut hosts: Vec<String> = a["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap().to_string())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["host0", "host1", "host2"]);

    // A fourth instance has nowhere to go: it waits, and the queue says why.
    svc.update("/spread", r#"{"instances": 4}"#).await;
    let item = eventually(
        "the fourth instance to wait with a reason",
        DEADLINE,
        || async {
            let q = svc.get("/v2/queue").await;
            let item = q["queue"].as_array()?.first()?.clone();
            let text = item["processedOffersSummary"].to_string();
            text.contains("UNIQUE").then_some(item)
        },
    )
    .await;
    assert_eq!(item["count"], 1, "{item}");
    assert_eq!(running(&svc.app("/spread").await).len(), 3);

    // LIKE pins instances to matching hosts.
    let mut def = app("/pinned", &cmd, 2);
    def["constraints"] = json!([["hostname", "LIKE", "host[1]"]]);
    svc.create(&def.to_string()).await;
    let a = svc.wait_running("/pinned", 2).await;
    assert!(
        a["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["host"] == "host1"),
        "{a}"
    );
}

#[tokio::test]
async fn the_event_stream_tells_what_happens() {
    let (cluster, svc) = cluster(1).await;
    let cmd = linger(cluster.dir.path());
    let mut stream = reqwest::get(format!("{}/v2/events", svc.url))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    svc.create(&app("/ev", &cmd, 1).to_string()).await;
    let mut text = String::new();
    // `event:` may be followed by a space or not (both are SSE).
    let wanted = [
        "event:event_stream_attached",
        "event:api_post_event",
        "event:deployment_info",
        "event:status_update_event",
        "event:deployment_success",
    ];
    tokio::time::timeout(DEADLINE, async {
        while !wanted.iter().all(|w| text.contains(w)) {
            let chunk = stream.chunk().await.unwrap().expect("the stream goes on");
            text.push_str(&String::from_utf8_lossy(&chunk).replace("event: ", "event:"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("events missing; got:\n{text}"));
    assert_eq!(
        text.matches("event:event_stream_attached").count(),
        1,
        "attached once: {text}"
    );
    let running_update = text
        .split("\n\n")
        .find(|e| e.contains("status_update_event") && e.contains("TASK_RUNNING"))
        .unwrap_or_else(|| panic!("no TASK_RUNNING update in:\n{text}"));
    let data: Value = serde_json::from_str(
        running_update
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(data["eventType"], "status_update_event");
    assert_eq!(data["appId"], "/ev");
    assert!(data["timestamp"].as_str().unwrap().ends_with('Z'), "{data}");
}

#[tokio::test]
async fn a_docker_app_runs_with_mapped_ports() {
    let Some(_docker) = common::docker::docker_or_skip("a_docker_app_runs_with_mapped_ports").await
    else {
        return;
    };
    let (cluster, _guard) = common::docker::docker_cluster(RES, |_| {}).await;
    let svc = Services::start(&cluster.addr()).await;
    let def = json!({
        "id": "/box",
        "cmd": "sleep 600",
        "cpus": 0.1, "mem": 32, "instances": 2,
        "container": {
            "type": "DOCKER",
            "docker": {"image": common::docker::TEST_IMAGE, "network": "BRIDGE"},
            "portMappings": [{"containerPort": 80, "hostPort": 0}]
        }
    });
    svc.create(&def.to_string()).await;
    let a = svc.wait_running("/box", 2).await;
    let mut ports = Vec::new();
    for t in a["tasks"].as_array().unwrap() {
        let port = t["ports"][0].as_u64().expect("a host port");
        assert!((31000..=31099).contains(&port), "{t}");
        ports.push(port);
    }
    assert_ne!(ports[0], ports[1], "each instance its own host port");
    assert_eq!(
        a["container"]["docker"]["image"],
        common::docker::TEST_IMAGE
    );
    let (status, _) = svc.call("DELETE", "/v2/apps/box", None).await;
    assert_eq!(status, 200);
    svc.wait_no_deployments().await;
}

#[tokio::test]
async fn health_checks_gate_deployments_and_show_in_the_task() {
    let (cluster, svc) = cluster(1).await;
    let cmd = linger(cluster.dir.path());
    let marker = cluster.dir.path().join("healthy");
    // No grace period: a failing check is reported at once (unhealthy), so
    // the test can wait for the check to have failed before it says what a
    // failure did not change; `maxConsecutiveFailures: 0` never kills.
    let check = |path: &std::path::Path| {
        json!([{
            "protocol": "COMMAND", "command": {"value": format!("test -e {}", path.display())},
            "delaySeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 1,
            "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0
        }])
    };
    let alive = |a: &Value, task: &str| {
        a["tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == task))
            .map(|t| t["healthCheckResults"][0]["alive"].clone())
            .unwrap_or(Value::Null)
    };
    let mut def = app("/hc", &cmd, 1);
    def["healthChecks"] = check(&marker);
    let (status, _, headers) = svc
        .request("POST", "/v2/apps", Some(&def.to_string()))
        .await;
    assert_eq!(status, 201);
    let deployment = headers["marathon-deployment-id"]
        .to_str()
        .unwrap()
        .to_string();
    // Running, its check failing: unhealthy, and the deployment waits.
    let a = svc
        .wait_app("the task running, its check failed", "/hc", |a| {
            running(a).len() == 1 && a["tasks"][0]["healthCheckResults"][0]["alive"] == false
        })
        .await;
    assert_eq!(a["tasksHealthy"], 0, "{a}");
    assert_eq!(a["tasksUnhealthy"], 1, "{a}");
    assert_eq!(a["deployments"][0]["id"], deployment.as_str(), "{a}");
    // The check passes: healthy, and the deployment is done.
    std::fs::write(&marker, b"").unwrap();
    let a = svc
        .wait_app("the task healthy and the deployment done", "/hc", |a| {
            a["tasksHealthy"] == 1 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
        })
        .await;
    let results = &a["tasks"][0]["healthCheckResults"];
    assert_eq!(results[0]["alive"], true, "{a}");
    assert_eq!(a["tasksUnhealthy"], 0, "{a}");
    // An upgrade whose new instance never becomes healthy keeps the old one.
    let old = task_ids(&a);
    let never = cluster.dir.path().join("never");
    svc.update("/hc", &json!({"healthChecks": check(&never)}).to_string())
        .await;
    let a = svc
        .wait_app("the new instance running, its check failed", "/hc", |a| {
            running(a).len() == 2
                && task_ids(a)
                    .iter()
                    .any(|t| *t != old[0] && alive(a, t) == false)
        })
        .await;
    assert!(
        task_ids(&a).contains(&old[0]),
        "the old instance stays: {a}"
    );
    assert_eq!(alive(&a, &old[0]), true, "{a}");
    assert_eq!(a["tasksHealthy"], 1, "{a}");
    assert_eq!(a["tasksUnhealthy"], 1, "{a}");
    assert_eq!(a["deployments"].as_array().unwrap().len(), 1, "{a}");
    // The old instance's check fails once the marker is gone: an old
    // instance that is not healthy is the first to go in an upgrade.
    std::fs::remove_file(&marker).unwrap();
    svc.wait_app("the old, now unhealthy, instance killed", "/hc", |a| {
        !task_ids(a).contains(&old[0])
    })
    .await;
    let ended = eventually(
        "the master to see the old instance end",
        DEADLINE,
        || async {
            let state = cluster.state().await;
            state["frameworks"][0]["completed_tasks"]
                .as_array()?
                .iter()
                .find(|t| t["id"] == old[0].as_str())
                .cloned()
        },
    )
    .await;
    assert_eq!(ended["state"], "TASK_KILLED", "{ended}");
    assert_eq!(ended["healthy"], false, "it ended unhealthy: {ended}");
    let a = svc.app("/hc").await;
    assert_eq!(a["deployments"].as_array().unwrap().len(), 1, "{a}");
}
