//! The web UI and the master's proxy, with real processes: the master
//! forwards `/batch/...` and `/frameworks/{id}/...` to the framework's
//! announced address (streams too), answers a quick 502 when the framework
//! is down, and serves task logs from any agent; and, in headless
//! Chromium against `agora dev`, the pages work end to end.

mod common;

use std::time::{Duration, Instant};

use common::ui::{Dev, browser_or_skip, click, console_problems, paste, wait_text};
use common::{DEADLINE, Proc, eventually, get_json, spawn_agent, spawn_master};
use fantoccini::Locator;
use serde_json::Value;

/// `agora batch` on a free port against `master`; returns it and its URL.
async fn spawn_batch(master: &str, data_dir: &std::path::Path) -> (Proc, String) {
    let p = Proc::spawn(
        &[
            "batch",
            "--master",
            master,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    );
    let addr = p.wait_field("batch framework API listening", "addr").await;
    (p, format!("http://{addr}"))
}

async fn call(method: &str, url: &str, body: Option<&str>, accept: &str) -> (u16, String, String) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
        .header("accept", accept);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_master_proxies_to_frameworks_and_agents_and_says_when_a_framework_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_master, addr) = spawn_master(&[]).await;
    let master = format!("http://{addr}");
    let _agent = spawn_agent(&addr, &dir.path().join("agent"), "cpus:2;mem:1024").await;
    let (mut batch, batch_url) = spawn_batch(&addr, &dir.path().join("batch")).await;

    // The framework announced its address when it subscribed.
    let fw = eventually("the batch framework in the summary", DEADLINE, || {
        let url = format!("{master}/state-summary");
        async move {
            let s = get_json(&url).await;
            s["frameworks"]
                .as_array()?
                .iter()
                .find(|f| f["name"] == "agora-batch" && f["connected"] == true)
                .cloned()
        }
    })
    .await;
    assert_eq!(fw["webui_url"], batch_url.as_str());
    let fw_id = fw["id"].as_str().unwrap().to_string();

    // Through the short name and through the id, every method.
    let (status, _, body) = call("GET", &format!("{master}/batch/v1/jobs"), None, "*/*").await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let job = r#"{"id":"proxied","run":{"cmd":"echo out-through-the-master; echo err-line >&2","cpus":0.1,"mem":32}}"#;
    let (status, _, body) =
        call("POST", &format!("{master}/batch/v1/jobs"), Some(job), "*/*").await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = call(
        "GET",
        &format!("{master}/frameworks/{fw_id}/v1/jobs/proxied"),
        None,
        "*/*",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The framework's own errors pass through unchanged.
    let (status, _, body) = call(
        "POST",
        &format!("{master}/batch/v1/jobs"),
        Some(r#"{"id":"Bad Id","run":{"cmd":"true"}}"#),
        "*/*",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let details: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(details["details"][0]["path"], "/id", "{body}");

    // Event streams flow through as they happen.
    let events = reqwest::get(format!("{master}/batch/v1/events"))
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = events;
    let (status, _, body) = call(
        "POST",
        &format!("{master}/batch/v1/jobs/proxied/runs"),
        None,
        "*/*",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("run_update") {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no run_update through the proxy; got:\n{seen}"));
    drop(events);

    // The run's task logs, through the master from the agent.
    let run = eventually("the run to succeed", DEADLINE, || {
        let url = format!("{master}/batch/v1/jobs/proxied/runs");
        async move {
            let runs = get_json(&url).await;
            runs.as_array()?
                .iter()
                .find(|r| r["status"] == "SUCCESS")
                .cloned()
        }
    })
    .await;
    let task = run["tasks"][0]["id"].as_str().unwrap();
    let (status, _, body) = call("GET", &format!("{master}/tasks/{task}/logs"), None, "*/*").await;
    assert_eq!((status, body.as_str()), (200, "out-through-the-master\n"));
    // Followed: the whole output, then the answer ends (the task ended).
    let (status, _, body) = call(
        "GET",
        &format!("{master}/tasks/{task}/logs?stream=stderr&follow=true"),
        None,
        "*/*",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "err-line\n"));
    let (status, _, body) = call("GET", &format!("{master}/tasks/nope/logs"), None, "*/*").await;
    assert_eq!(status, 404, "{body}");

    // The framework dies: a clear 502 at once, not a hang.
    batch.kill9().await;
    let started = Instant::now();
    let (status, ctype, body) = call(
        "GET",
        &format!("{master}/batch/v1/jobs"),
        None,
        "application/json",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(ctype, "application/json");
    assert!(body.contains("does not answer"), "{body}");
    assert!(body.contains(&batch_url), "says where it tried: {body}");
    assert!(
        took < Duration::from_secs(5),
        "a down framework is answered quickly, took {took:?}"
    );
    // A browser navigating there gets a page that says so.
    let (status, ctype, body) = call(
        "GET",
        &format!("{master}/frameworks/{fw_id}/"),
        None,
        "text/html,application/xhtml+xml",
    )
    .await;
    assert_eq!(status, 502);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(
        body.contains("502 Bad Gateway") && body.contains("agora-batch"),
        "{body}"
    );
    // Unknown frameworks are not found.
    let (status, _, body) = call("GET", &format!("{master}/frameworks/nope/x"), None, "*/*").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = call("GET", &format!("{master}/services/v2/apps"), None, "*/*").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("agora-services"), "{body}");
}

#[tokio::test]
async fn a_framework_that_accepts_but_never_answers_gets_a_504_not_a_hang() {
    let (_master, addr) = spawn_master(&[]).await;
    let master = format!("http://{addr}");
    // A web address that accepts connections and reads, but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let mut config = agora_scheduler::SchedulerConfig::new(&addr, "silent-framework");
    config.framework.webui_url = format!("http://{silent_addr}");
    let fw = common::TestFramework::start_with(config).await;
    let id = fw.id();
    let started = Instant::now();
    let (status, ctype, body) = call(
        "GET",
        &format!("{master}/frameworks/{id}/anything"),
        None,
        "application/json",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(ctype, "application/json");
    assert!(
        body.contains("did not answer within 15 s") && body.contains(&silent_addr.to_string()),
        "says what and where: {body}"
    );
    assert!(
        took >= Duration::from_secs(15),
        "the framework is given its 15 s, took {took:?}"
    );
    // A browser navigating there gets a page, too.
    let (status, ctype, body) = call(
        "GET",
        &format!("{master}/frameworks/{id}/"),
        None,
        "text/html,application/xhtml+xml",
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(body.contains("504 Gateway Timeout"), "{body}");
    // The master still answers everything else.
    let s = get_json(&format!("{master}/state-summary")).await;
    assert_eq!(s["elected"], true, "{s}");
}

#[tokio::test]
async fn the_dashboard_lists_the_agent_and_updates_live() {
    let Some(browser) = browser_or_skip("the_dashboard_lists_the_agent_and_updates_live").await
    else {
        return;
    };
    let dev = Dev::start("cpus:2;mem:1024").await;
    let summary = get_json(&format!("{}/state-summary", dev.url)).await;
    let agent = summary["agents"][0]["id"].as_str().unwrap().to_string();
    let c = browser.client();
    c.goto(&format!("{}/", dev.url)).await.unwrap();
    wait_text(&browser, "#conn", "Live").await;
    wait_text(&browser, "#agents-h + .table-wrap", &agent).await;
    wait_text(&browser, "#fw-h + .table-wrap", "agora-batch").await;
    // A new task shows up without reloading the page.
    let mut exec = Proc::spawn(
        &[
            "execute",
            "--master",
            dev.url.trim_start_matches("http://"),
            "--name",
            "ui-sleeper",
            "--command",
            &common::linger(dev.dir.path()),
        ],
        &[],
    );
    wait_text(&browser, "#tasks-h + .chips", "RUNNING").await;
    exec.child.start_kill().unwrap();
    // On a narrow screen the page does not overflow sideways (wide tables
    // scroll inside their own box) and the navigation stays reachable.
    c.set_window_size(400, 800).await.unwrap();
    eventually("the page to fit a narrow screen", DEADLINE, || async {
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .ok()?;
        (fits == serde_json::json!(true)).then_some(())
    })
    .await;
    let nav = c.find(Locator::Css("nav a[href='#/apps']")).await.unwrap();
    assert!(nav.is_displayed().await.unwrap());
    c.set_window_size(1280, 900).await.unwrap();
    // The agent's page.
    click(&browser, &format!("a[href='#/agents/{agent}']")).await;
    wait_text(&browser, "main", "Tasks on this agent").await;
    let problems = console_problems(&browser, &[]).await;
    assert!(problems.is_empty(), "console: {problems:#?}");
    let title = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(title, "Agent");
    browser.close().await;
}

#[tokio::test]
async fn a_job_runs_from_the_jobs_page_and_shows_its_result_and_logs() {
    let Some(browser) =
        browser_or_skip("a_job_runs_from_the_jobs_page_and_shows_its_result_and_logs").await
    else {
        return;
    };
    let dev = Dev::start("cpus:2;mem:1024").await;
    let batch = common::batch::Batch::at(&dev.batch);
    let c = browser.client();
    // Created from its JSON on the page; the API's errors show at the field.
    c.goto(&format!("{}/#/jobs", dev.url)).await.unwrap();
    click(&browser, "a[href='#/jobs-new']").await;
    let job = serde_json::json!({
        "id": "nightly-report", "description": "Sums up the day",
        "run": {"cmd": "echo report line one; echo report line two; echo warned >&2; exit 3",
                "cpus": 0.1, "mem": 32},
        "schedules": [{"id": "nightly", "cron": "0 2 * * *", "timezone": "UTC"}]
    });
    let mut bad = job.clone();
    bad["run"]["mem"] = serde_json::json!(-1);
    paste(&browser, "#job-json", &bad.to_string()).await;
    click(&browser, "main form button[type=submit]").await;
    let err = wait_text(&browser, "[data-field-error='/run/mem']", "/run/mem").await;
    assert!(err.len() > "/run/mem: ".len(), "a message: {err}");
    assert!(
        batch.get("/v1/jobs").await.as_array().unwrap().is_empty(),
        "nothing is stored from a refused request"
    );
    paste(&browser, "#job-json", &job.to_string()).await;
    click(&browser, "main form button[type=submit]").await;
    wait_text(&browser, "h1", "nightly-report").await;
    click(&browser, "a[href='#/jobs']").await;
    let row = wait_text(&browser, "main table", "nightly-report").await;
    assert!(
        row.contains("0 2 * * *") && row.contains("never ran"),
        "{row}"
    );
    // The next run is shown (02:00 UTC, within a day).
    assert!(row.contains("in "), "a next run time: {row}");
    click(&browser, "button[aria-label='Run nightly-report now']").await;
    // The list shows the run's result.
    wait_text(&browser, "main table", "FAILED").await;
    // The job's page lists the run with its exit code.
    click(&browser, "a[href='#/jobs/nightly-report']").await;
    let runs = wait_text(&browser, "main table", "FAILED").await;
    assert!(runs.contains("manual"), "{runs}");
    let run = batch.runs("nightly-report").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_text(&browser, "main table", &run).await;
    click(
        &browser,
        &format!("a[href='#/jobs/nightly-report/runs/{run}']"),
    )
    .await;
    wait_text(&browser, "#run-status", "FAILED").await;
    wait_text(&browser, "#run-exit-code", "3").await;
    // Its logs: stdout, then stderr.
    let out = wait_text(&browser, "pre.log", "report line two").await;
    assert!(out.contains("report line one"), "{out}");
    wait_text(&browser, ".log-status", "End of the log").await;
    click(&browser, "button[data-stream='stderr']").await;
    wait_text(&browser, "pre.log", "warned").await;
    // But the 422 of the refused definition, no errors.
    let problems = console_problems(&browser, &["422"]).await;
    assert!(problems.is_empty(), "console: {problems:#?}");
    browser.close().await;
}

/// Submits the open dialog and waits for it to close; an error it shows
/// fails the test with the API's message.
async fn submit_dialog(b: &agora_bench::browser::Browser) {
    click(b, "dialog button[type=submit]").await;
    let c = b.client();
    let until = Instant::now() + DEADLINE;
    loop {
        let state = c
            .execute(
                "const d = document.querySelector('dialog'); \
                 return d ? d.querySelector('.form-error').textContent : null;",
                vec![],
            )
            .await
            .unwrap();
        match state.as_str() {
            None => {
                let toasts = c
                    .execute(
                        "return document.getElementById('toasts').innerText;",
                        vec![],
                    )
                    .await
                    .unwrap();
                assert!(
                    !toasts.as_str().unwrap_or_default().is_empty(),
                    "no message after the dialog"
                );
                return;
            }
            Some(err) => assert!(err.is_empty(), "the dialog says: {err}"),
        }
        assert!(Instant::now() < until, "the dialog did not close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn apps_are_created_scaled_killed_and_rolled_back_from_the_browser() {
    let Some(browser) =
        browser_or_skip("apps_are_created_scaled_killed_and_rolled_back_from_the_browser").await
    else {
        return;
    };
    let dev = Dev::start("cpus:4;mem:2048").await;
    let c = browser.client();
    let cmd = common::linger(dev.dir.path());
    c.goto(&format!("{}/#/apps-new", dev.url)).await.unwrap();
    // Invalid: the API's error shows at the field.
    let bad = serde_json::json!({"id": "/web", "cmd": cmd, "cpus": 0, "mem": 32, "instances": 1});
    paste(&browser, "#app-json", &bad.to_string()).await;
    click(&browser, "main form button[type=submit]").await;
    let err = wait_text(&browser, "[data-field-error='/cpus']", "/cpus").await;
    assert!(
        err.len() > "/cpus: ".len(),
        "a message with the path: {err}"
    );
    let invalid = c
        .find(Locator::Css("#app-json"))
        .await
        .unwrap()
        .attr("aria-invalid")
        .await
        .unwrap();
    assert_eq!(invalid.as_deref(), Some("true"));
    // Fixed, it is created and runs.
    let good = serde_json::json!({"id": "/web", "cmd": cmd, "cpus": 0.1, "mem": 32, "instances": 1,
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"},
            "delaySeconds": 0, "intervalSeconds": 1, "gracePeriodSeconds": 0}]});
    paste(&browser, "#app-json", &good.to_string()).await;
    click(&browser, "main form button[type=submit]").await;
    wait_text(&browser, "#app-running", "1 / 1").await;
    // Its health: the app's counts, and the task's row.
    wait_text(&browser, "#app-health", "1 healthy, 0 unhealthy").await;
    wait_text(&browser, "[data-task] td:nth-child(4)", "healthy").await;
    let first_version = get_json(&format!("{}/v2/apps/web", dev.services)).await["app"]
        ["versionInfo"]["lastConfigChangeAt"]
        .as_str()
        .unwrap()
        .to_string();

    // Scale with the dialog (once the first deployment is done); the
    // running count follows.
    wait_text(&browser, "#app-status", "Running").await;
    click(&browser, "button[aria-label='Scale /web']").await;
    paste(&browser, "#scale-instances", "3").await;
    submit_dialog(&browser).await;
    wait_text(&browser, "#app-running", "3 / 3").await;
    wait_text(&browser, "#app-status", "Running").await;

    // Kill a task: it is replaced.
    let tasks = get_json(&format!("{}/v2/apps/web/tasks", dev.services)).await;
    let victim = tasks["tasks"][0]["id"].as_str().unwrap().to_string();
    wait_text(&browser, "main table", &victim).await;
    click(
        &browser,
        &format!("button[aria-label='Kill task {victim}']"),
    )
    .await;
    submit_dialog(&browser).await;
    eventually("the killed task to be replaced", DEADLINE, || {
        let url = format!("{}/v2/apps/web/tasks", dev.services);
        let victim = victim.clone();
        async move {
            let t = get_json(&url).await;
            let ids: Vec<String> = t["tasks"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect();
            (ids.len() == 3 && !ids.contains(&victim)).then_some(())
        }
    })
    .await;
    wait_text(&browser, "#app-running", "3 / 3").await;

    // A new configuration, then back to the first one from the versions list.
    let (status, _, body) = call(
        "PUT",
        &format!("{}/services/v2/apps/web", dev.url),
        Some(r#"{"env":{"COLOR":"blue"}}"#),
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_text(&browser, "#app-status", "Running").await;
    let apply = format!("button[aria-label='Apply version {first_version}']");
    click(&browser, &apply).await;
    submit_dialog(&browser).await;
    eventually("the rollback to the first configuration", DEADLINE, || {
        let url = format!("{}/v2/apps/web", dev.services);
        async move {
            let app = get_json(&url).await;
            let env = app["app"]["env"].as_object()?;
            (!env.contains_key("COLOR") && app["app"]["deployments"] == serde_json::json!([]))
                .then_some(())
        }
    })
    .await;
    // The first configuration had one instance.
    wait_text(&browser, "#app-running", "1 / 1").await;
    // Only the 422 asked for above shows in the console.
    let problems = console_problems(&browser, &["422"]).await;
    assert!(problems.is_empty(), "console: {problems:#?}");
    browser.close().await;
}

#[tokio::test]
async fn a_standby_masters_ui_sends_the_browser_to_the_leader() {
    let Some(browser) =
        browser_or_skip("a_standby_masters_ui_sends_the_browser_to_the_leader").await
    else {
        return;
    };
    let Some(zk) = common::zk::ZkServer::start().await else {
        return;
    };
    let zk_url = zk.url("/agora");
    let (_a, a) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    let (_b, b) = common::zk::spawn_zk_master(&zk_url, &[]).await;
    let leader = common::zk::wait_one_leader(&[a.clone(), b.clone()], DEADLINE).await;
    let standby = if leader == a { b } else { a };
    // The standby's summary (and its stream) say who leads.
    eventually("the standby to know the leader", DEADLINE, || {
        let url = format!("http://{standby}/state-summary");
        let leader = leader.clone();
        async move {
            let s = get_json(&url).await;
            (s["elected"] == false && s["leader"]["address"] == leader.as_str()).then_some(())
        }
    })
    .await;
    // The leader lists the standby (from ZooKeeper), and so does its page.
    eventually("the leader to list the standby", DEADLINE, || {
        let url = format!("http://{leader}/state-summary");
        let standby = standby.clone();
        async move {
            let s = get_json(&url).await;
            let listed = s["standbys"].as_array()?;
            (listed.len() == 1 && listed[0]["address"] == standby.as_str()).then_some(())
        }
    })
    .await;
    // The page itself is the leader's: the standby redirects it there.
    let c = browser.client();
    c.goto(&format!("http://{standby}/#/agents")).await.unwrap();
    eventually("the browser on the leader's UI", DEADLINE, || async {
        let url = c.current_url().await.ok()?;
        (url.host_str() == Some("127.0.0.1")
            && url.port().map(|p| p.to_string())
                == leader.rsplit_once(':').map(|x| x.1.to_string()))
        .then_some(())
    })
    .await;
    wait_text(&browser, "#conn", "Live").await;
    wait_text(&browser, "h1", "Agents").await;
    c.goto(&format!("http://{leader}/#/")).await.unwrap();
    wait_text(&browser, "section[aria-labelledby=masters-h]", &standby).await;
    let problems = console_problems(&browser, &[]).await;
    assert!(problems.is_empty(), "console: {problems:#?}");
    browser.close().await;
}
