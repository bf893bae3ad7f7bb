//! The Mesos v1 scheduler HTTP API (`POST /api/v1/scheduler`), spoken with
//! plain HTTP (reqwest) to a real `agora master` process with a real
//! `agora agent`: the offer cycle end to end, and every way a call is
//! refused.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use serde_json::{Value, json};

/// A subscription's event stream, read in the background.
struct Stream {
    stream_id: String,
    framework_id: String,
    events: Arc<Mutex<Vec<Value>>>,
    ended: Arc<AtomicBool>,
}

impl Stream {
    /// Waits for an event that `check` picks, among those from `from` on.
    async fn wait<T>(&self, what: &str, from: usize, check: impl Fn(&Value) -> Option<T>) -> T {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            {
                let events = self.events.lock().unwrap();
                if let Some(found) = events[from.min(events.len())..].iter().find_map(&check) {
                    return found;
                }
                if tokio::time::Instant::now() >= until {
                    panic!(
                        "timed out after {DEADLINE:?} waiting for {what}; events from {from} on: \
                         {:#?}",
                        &events[from.min(events.len())..]
                    );
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    fn all(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// The first UPDATE of `task` in `state`, from event `from` on.
    async fn update(&self, from: usize, task: &str, state: &str) -> Value {
        self.wait(&format!("UPDATE {task} {state}"), from, |e| {
            let s = &e["update"]["status"];
            (e["type"] == "UPDATE" && s["task_id"]["value"] == task && s["state"] == state)
                .then(|| s.clone())
        })
        .await
    }

    /// The first OFFERS event from event `from` on: its first offer.
    async fn offer(&self, from: usize) -> Value {
        self.wait("an OFFERS event", from, |e| {
            (e["type"] == "OFFERS").then(|| e["offers"]["offers"][0].clone())
        })
        .await
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(master: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            url: format!("http://{master}/api/v1/scheduler"),
        }
    }

    /// POSTs a body with the given headers: status and text.
    async fn post(&self, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.http.post(&self.url).body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("POST /api/v1/scheduler");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// A call on a subscription: status and text.
    async fn call(&self, s: &Stream, call: Value) -> (u16, String) {
        self.post(
            &call.to_string(),
            &[
                ("content-type", "application/json"),
                ("mesos-stream-id", &s.stream_id),
            ],
        )
        .await
    }

    /// A call that must be accepted (202).
    async fn accepted(&self, s: &Stream, call: Value) {
        let (status, text) = self.call(s, call.clone()).await;
        assert_eq!(status, 202, "{call} -> {text}");
    }

    /// SUBSCRIBE, and the stream read until SUBSCRIBED.
    async fn subscribe(&self, framework_info: Value) -> Stream {
        let body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}});
        let mut resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("SUBSCRIBE");
        assert_eq!(resp.status(), 200, "SUBSCRIBE answered {}", resp.status());
        assert_eq!(resp.headers()["content-type"], "application/json");
        let stream_id = resp.headers()["mesos-stream-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(!stream_id.is_empty());
        let events = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (ev, end) = (events.clone(), ended.clone());
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.extend_from_slice(&chunk);
                // RecordIO: "<length>\n<json>" repeated.
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let len: usize = std::str::from_utf8(&buf[..nl])
                        .unwrap()
                        .parse()
                        .expect("a record length");
                    if buf.len() < nl + 1 + len {
                        break;
                    }
                    let record: Value =
                        serde_json::from_slice(&buf[nl + 1..nl + 1 + len]).expect("JSON record");
                    ev.lock().unwrap().push(record);
                    buf.drain(..nl + 1 + len);
                }
            }
            assert!(buf.is_empty(), "a partial record at the end");
            end.store(true, Ordering::SeqCst);
        });
        let mut s = Stream {
            stream_id,
            framework_id: String::new(),
            events,
            ended,
        };
        let subscribed = s
            .wait("SUBSCRIBED", 0, |e| {
                (e["type"] == "SUBSCRIBED").then(|| e["subscribed"].clone())
            })
            .await;
        assert_eq!(
            s.all()[0]["type"],
            "SUBSCRIBED",
            "SUBSCRIBED comes first: {:?}",
            s.all()
        );
        assert_eq!(subscribed["heartbeat_interval_seconds"], 15.0);
        assert!(subscribed["master_info"]["address"]["port"].is_u64());
        s.framework_id = subscribed["framework_id"]["value"]
            .as_str()
            .unwrap()
            .to_string();
        s
    }
}

fn fw_id(s: &Stream) -> Value {
    json!({ "value": s.framework_id })
}

fn scalar(name: &str, v: f64) -> Value {
    json!({"name": name, "type": "SCALAR", "scalar": {"value": v}, "role": "*"})
}

fn command_task(id: &str, agent: &Value, cmd: &str) -> Value {
    json!({
        "name": id,
        "task_id": {"value": id},
        "agent_id": agent,
        "resources": [scalar("cpus", 0.5), scalar("mem", 64.0)],
        "command": {"value": cmd},
    })
}

/// ACKNOWLEDGE of an update, as pymesos sends it.
fn ack(s: &Stream, status: &Value) -> Value {
    json!({
        "type": "ACKNOWLEDGE",
        "framework_id": fw_id(s),
        "acknowledge": {
            "agent_id": status["agent_id"],
            "task_id": status["task_id"],
            "uuid": status["uuid"],
        }
    })
}

async fn allocation_cycles(master: &str) -> u64 {
    let text = reqwest::get(format!("http://{master}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("agora_master_allocation_cycle_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no allocation cycle count in:\n{text}"))
}

#[tokio::test]
async fn t90_a_mesos_framework_runs_a_task_over_http() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (mut master_proc, master) = spawn_master(&[]).await;
    let _agent = spawn_agent(&master, &dir.path().join("agent"), "cpus:2;mem:512").await;
    let client = Client::new(&master);
    let s = client
        .subscribe(json!({"user": "root", "name": "mesos-http", "failover_timeout": 60}))
        .await;

    // An offer, in Mesos's JSON.
    let offer = s.offer(0).await;
    assert_eq!(offer["framework_id"], fw_id(&s));
    let agent_id = offer["agent_id"].clone();
    assert!(agent_id["value"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(
        offer["resources"]
            .as_array()
            .unwrap()
            .contains(&scalar("cpus", 2.0)),
        "{offer}"
    );

    // LAUNCH a command task: its updates carry the agent and a base64 uuid.
    let from = s.count();
    client
        .accepted(
            &s,
            json!({
                "type": "ACCEPT",
                "framework_id": fw_id(&s),
                "accept": {
                    "offer_ids": [offer["id"]],
                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                        command_task("t1", &agent_id, &linger(dir.path()))
                    ]}}],
                    "filters": {"refuse_seconds": 1},
                }
            }),
        )
        .await;
    // The agent sends the next update once the last one is acknowledged.
    let starting = s.update(from, "t1", "TASK_STARTING").await;
    assert_eq!(starting["agent_id"], agent_id);
    let uuid = BASE64
        .decode(starting["uuid"].as_str().expect("a uuid"))
        .expect("base64");
    assert_eq!(uuid.len(), 16);
    client.accepted(&s, ack(&s, &starting)).await;
    let running = s.update(from, "t1", "TASK_RUNNING").await;
    assert_eq!(running["agent_id"], agent_id);
    assert_ne!(running["uuid"], starting["uuid"]);
    client.accepted(&s, ack(&s, &running)).await;
    let url = format!("http://{master}");
    eventually("t1 running and acknowledged in /state", DEADLINE, || {
        let url = url.clone();
        let fw = s.framework_id.clone();
        async move {
            let st = get_json(&format!("{url}/state")).await;
            let f = st["frameworks"]
                .as_array()?
                .iter()
                .find(|f| f["id"] == fw.as_str())?
                .clone();
            let t = f["tasks"].as_array()?.first()?.clone();
            (f["name"] == "mesos-http" && t["id"] == "t1" && t["state"] == "TASK_RUNNING")
                .then_some(())
        }
    })
    .await;

    // The master's state with Mesos's names, at both of Mesos's paths.
    for path in ["master/state", "state.json"] {
        let m = get_json(&format!("{url}/{path}")).await;
        assert_eq!(m["slaves"][0]["id"], agent_id["value"], "{path}: {m}");
        assert_eq!(m["activated_slaves"], 1, "{path}");
        let f = &m["frameworks"][0];
        assert_eq!(f["id"], s.framework_id.as_str(), "{path}");
        assert_eq!(f["name"], "mesos-http");
        assert_eq!(f["tasks"][0]["id"], "t1");
        assert_eq!(f["tasks"][0]["slave_id"], agent_id["value"]);
        assert_eq!(f["tasks"][0]["state"], "TASK_RUNNING");
        assert!(m["leader"].as_str().unwrap().starts_with("master@"), "{m}");
    }

    // RECONCILE (explicit): the master answers, with no uuid to acknowledge.
    let from = s.count();
    client
        .accepted(
            &s,
            json!({"type": "RECONCILE", "framework_id": fw_id(&s),
                "reconcile": {"tasks": [{"task_id": {"value": "t1"}, "agent_id": agent_id}]}}),
        )
        .await;
    let r = s.update(from, "t1", "TASK_RUNNING").await;
    assert_eq!(r["reason"], "REASON_RECONCILIATION");
    assert_eq!(r["source"], "SOURCE_MASTER");
    assert!(r.get("uuid").is_none(), "{r}");
    // Implicit reconciliation: every task the master knows.
    let from = s.count();
    client
        .accepted(
            &s,
            json!({"type": "RECONCILE", "framework_id": fw_id(&s), "reconcile": {}}),
        )
        .await;
    s.update(from, "t1", "TASK_RUNNING").await;
    // A task the master does not know.
    let from = s.count();
    client
        .accepted(
            &s,
            json!({"type": "RECONCILE", "framework_id": fw_id(&s),
                "reconcile": {"tasks": [{"task_id": {"value": "nope"}}]}}),
        )
        .await;
    s.update(from, "nope", "TASK_UNKNOWN").await;

    // KILL: TASK_KILLED, acknowledged.
    let from = s.count();
    client
        .accepted(
            &s,
            json!({"type": "KILL", "framework_id": fw_id(&s),
                "kill": {"task_id": {"value": "t1"}, "agent_id": agent_id}}),
        )
        .await;
    let killed = s.update(from, "t1", "TASK_KILLED").await;
    assert_eq!(killed["agent_id"], agent_id);
    client.accepted(&s, ack(&s, &killed)).await;
    eventually("t1 among the completed tasks", DEADLINE, || {
        let url = url.clone();
        async move {
            let st = get_json(&format!("{url}/state")).await;
            let done = &st["frameworks"][0]["completed_tasks"];
            (done[0]["id"] == "t1" && done[0]["state"] == "TASK_KILLED").then_some(())
        }
    })
    .await;

    // DECLINE with a long filter: the agent's resources are not offered
    // again, even after the default filter (5 s) would have passed, until
    // REVIVE clears the filter. (Offers already on their way when a round
    // of declines goes out are declined in the next round.)
    let mut declined: Vec<Value> = Vec::new();
    let mut quiet = false;
    for _ in 0..5 {
        let fresh: Vec<Value> = s
            .all()
            .iter()
            .filter(|e| e["type"] == "OFFERS")
            .flat_map(|e| e["offers"]["offers"].as_array().unwrap().clone())
            .map(|o| o["id"].clone())
            .filter(|id| !declined.contains(id))
            .collect();
        let mark = s.count();
        client
            .accepted(
                &s,
                json!({"type": "DECLINE", "framework_id": fw_id(&s),
                    "decline": {"offer_ids": fresh, "filters": {"refuse_seconds": 3600}}}),
            )
            .await;
        declined.extend(fresh);
        let cycles = allocation_cycles(&master).await;
        let since = tokio::time::Instant::now();
        eventually(
            "6 s and three allocation cycles after the decline",
            DEADLINE,
            || {
                let master = master.clone();
                async move {
                    (since.elapsed() >= std::time::Duration::from_secs(6)
                        && allocation_cycles(&master).await >= cycles + 3)
                        .then_some(())
                }
            },
        )
        .await;
        if !s.all()[mark..].iter().any(|e| e["type"] == "OFFERS") {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "offered again despite the filters: {:?}", s.all());
    // SUPPRESS and REVIVE are accepted; REVIVE brings the offer back.
    client
        .accepted(&s, json!({"type": "SUPPRESS", "framework_id": fw_id(&s)}))
        .await;
    let from = s.count();
    client
        .accepted(&s, json!({"type": "REVIVE", "framework_id": fw_id(&s)}))
        .await;
    let again = s.offer(from).await;
    assert_eq!(again["agent_id"], agent_id);

    // MESSAGE and REQUEST are accepted (nothing to deliver them to).
    client
        .accepted(
            &s,
            json!({"type": "MESSAGE", "framework_id": fw_id(&s), "message": {
                "agent_id": agent_id, "executor_id": {"value": "e"}, "data": "aGk="}}),
        )
        .await;
    client
        .accepted(
            &s,
            json!({"type": "REQUEST", "framework_id": fw_id(&s), "request": {"requests": []}}),
        )
        .await;

    // A task the core refuses: TASK_ERROR, with the agent id.
    let from = s.count();
    client
        .accepted(
            &s,
            json!({"type": "ACCEPT", "framework_id": fw_id(&s), "accept": {
            "offer_ids": [again["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
                {"name": "big", "task_id": {"value": "big"}, "agent_id": agent_id,
                 "resources": [scalar("cpus", 64.0)], "command": {"value": "true"}}
            ]}}]}}),
        )
        .await;
    let err = s.update(from, "big", "TASK_ERROR").await;
    assert_eq!(err["reason"], "REASON_TASK_INVALID");
    assert_eq!(err["agent_id"], agent_id);

    // TEARDOWN: the stream ends, the framework is gone.
    client
        .accepted(&s, json!({"type": "TEARDOWN", "framework_id": fw_id(&s)}))
        .await;
    eventually("the event stream ends", DEADLINE, || {
        let ended = s.ended.load(Ordering::SeqCst);
        async move { ended.then_some(()) }
    })
    .await;
    let st = get_json(&format!("{url}/state")).await;
    assert_eq!(st["frameworks"], json!([]), "{st}");
    assert_eq!(st["completed_frameworks"][0]["id"], s.framework_id.as_str());
    // Its calls are refused now.
    let (status, _) = client
        .call(&s, json!({"type": "REVIVE", "framework_id": fw_id(&s)}))
        .await;
    assert_eq!(status, 403);
    assert!(master_proc.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn t90_bad_calls_get_4xx_with_a_reason_and_the_master_keeps_running() {
    init_logs();
    let (mut master_proc, master) = spawn_master(&[]).await;
    let client = Client::new(&master);
    let json_ct = ("content-type", "application/json");
    let s = client
        .subscribe(json!({"user": "u", "name": "one", "failover_timeout": 60}))
        .await;
    let other = client.subscribe(json!({"user": "u", "name": "two"})).await;

    let expect = |status: u16, text: &str, want_status: u16, needle: &str| {
        assert_eq!(status, want_status, "{text}");
        assert!(text.contains(needle), "`{needle}` not in: {text}");
    };
    // Bodies that are not calls.
    let (st, t) = client.post("{not json", &[json_ct]).await;
    expect(st, &t, 400, "Failed to parse");
    let (st, t) = client.post(r#"{"type": "FLY"}"#, &[json_ct]).await;
    expect(st, &t, 400, "Unknown call type 'FLY'");
    let (st, t) = client
        .post(
            r#"{"type": "KILL", "framework_id": {"value": 1}}"#,
            &[json_ct],
        )
        .await;
    expect(st, &t, 400, "framework_id.value");
    // Not JSON.
    let (st, t) = client.post("{}", &[]).await;
    expect(st, &t, 415, "Content-Type");
    let (st, t) = client
        .post("\x08\x01", &[("content-type", "application/x-protobuf")])
        .await;
    expect(st, &t, 415, "application/json only");
    let (st, t) = client
        .post("{}", &[json_ct, ("accept", "application/x-protobuf")])
        .await;
    expect(st, &t, 406, "application/json only");
    // SUBSCRIBE that cannot be.
    let (st, t) = client
        .post(
            &json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": ""}}})
                .to_string(),
            &[json_ct],
        )
        .await;
    expect(st, &t, 400, "name is empty");
    let (st, t) = client
        .post(
            &json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "x"}}})
                .to_string(),
            &[json_ct, ("mesos-stream-id", &s.stream_id)],
        )
        .await;
    expect(st, &t, 400, "should not include");
    // Calls without a stream id, for nobody, with the wrong stream.
    let revive = |fw: &Stream| json!({"type": "REVIVE", "framework_id": fw_id(fw)});
    let (st, t) = client.post(&revive(&s).to_string(), &[json_ct]).await;
    expect(st, &t, 400, "Mesos-Stream-Id");
    let (st, t) = client
        .call(
            &s,
            json!({"type": "REVIVE", "framework_id": {"value": "no-such-framework"}}),
        )
        .await;
    expect(st, &t, 403, "not subscribed");
    // Another framework's id with this stream, and this framework's id with
    // another stream.
    let (st, t) = client.call(&s, revive(&other)).await;
    expect(st, &t, 403, "stream ID");
    let (st, t) = client.call(&other, revive(&s)).await;
    expect(st, &t, 403, "stream ID");
    // What Agora does not do.
    let (st, t) = client
        .call(
            &s,
            json!({"type": "ACCEPT", "framework_id": fw_id(&s), "accept": {
                "offer_ids": [], "operations": [{"type": "LAUNCH_GROUP", "launch_group": {}}]}}),
        )
        .await;
    expect(st, &t, 400, "LAUNCH_GROUP is not supported");
    let (st, t) = client
        .call(
            &s,
            json!({"type": "UPDATE_FRAMEWORK", "framework_id": fw_id(&s)}),
        )
        .await;
    expect(st, &t, 400, "not supported");
    // The wrong method.
    let r = reqwest::get(format!("http://{master}/api/v1/scheduler"))
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // A removed framework cannot come back.
    client
        .accepted(
            &other,
            json!({"type": "TEARDOWN", "framework_id": fw_id(&other)}),
        )
        .await;
    let (st, t) = client
        .post(
            &json!({"type": "SUBSCRIBE", "framework_id": fw_id(&other), "subscribe": {
                "framework_info": {"user": "u", "name": "two", "id": fw_id(&other)}}})
            .to_string(),
            &[json_ct],
        )
        .await;
    expect(st, &t, 403, "was removed");

    // Through all that the master ran on, and the first framework with it.
    assert!(master_proc.child.try_wait().unwrap().is_none());
    client.accepted(&s, revive(&s)).await;
    let st = get_json(&format!("http://{master}/state")).await;
    assert_eq!(st["frameworks"][0]["name"], "one", "{st}");
    assert!(!s.ended.load(Ordering::SeqCst));

    // Resubscribing with its id (failover) moves the framework to the new
    // stream: the old stream ends, the old stream id is refused.
    let again = client
        .subscribe(json!({"user": "u", "name": "one", "id": fw_id(&s), "failover_timeout": 60}))
        .await;
    assert_eq!(again.framework_id, s.framework_id);
    eventually("the old stream ends", DEADLINE, || {
        let ended = s.ended.load(Ordering::SeqCst);
        async move { ended.then_some(()) }
    })
    .await;
    let (st, t) = client.call(&s, revive(&s)).await;
    expect(st, &t, 403, "stream ID");
    client.accepted(&again, revive(&again)).await;
}

#[tokio::test]
async fn t90_a_standby_redirects_to_the_leader_and_without_one_answers_503() {
    init_logs();
    let Some(zk) = common::zk::ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let (_m1, a1) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    let leader = common::zk::wait_one_leader(std::slice::from_ref(&a1), DEADLINE).await;
    let (_m2, standby) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    common::zk::wait_one_leader(&[a1.clone(), standby.clone()], DEADLINE).await;
    let subscribe = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
        {"user": "u", "name": "redirected"}}})
    .to_string();
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://{standby}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .body(subscribe.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("//{leader}/api/v1/scheduler").as_str()
    );
    // Following it subscribes at the leader.
    let s = Client::new(&leader)
        .subscribe(json!({"user": "u", "name": "redirected"}))
        .await;
    assert!(!s.framework_id.is_empty());

    // A master that finds no leader answers 503.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (lonely_proc, lonely) =
        common::zk::spawn_zk_master(&format!("zk://127.0.0.1:{closed}/agora"), &[]).await;
    lonely_proc.wait_line("cannot open a session").await;
    let (st, t) = Client::new(&lonely)
        .post(&subscribe, &[("content-type", "application/json")])
        .await;
    assert_eq!(st, 503, "{t}");
    assert!(t.contains("no master leads"), "{t}");
}
