//! The services framework in a test: in this process against a test
//! cluster, or an `agora services` process, and its REST API over real
//! HTTP.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, eventually};

/// A services framework (in this process, or elsewhere by its URL).
pub struct Services {
    pub url: String,
    pub shutdown: CancellationToken,
    pub running: Option<agora_services::RunningServices>,
    http: reqwest::Client,
}

/// A quick controller for tests: reconciles and stores often.
pub fn config(master: &str) -> agora_services::ServicesConfig {
    let mut c = agora_services::ServicesConfig::new(master, "127.0.0.1:0".parse().unwrap());
    c.controller.tracker.kill_retry_min = Duration::from_millis(500);
    c.controller.refuse_seconds = 1.0;
    c
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Services {
    /// Standalone, in memory, on a free port, against `master`.
    pub async fn start(master: &str) -> Services {
        Services::start_with(config(master)).await
    }

    pub async fn start_with(config: agora_services::ServicesConfig) -> Services {
        let shutdown = CancellationToken::new();
        let running = agora_services::start(config, shutdown.child_token())
            .await
            .expect("the services framework starts");
        let s = Services {
            url: running.url(),
            shutdown,
            running: Some(running),
            http: client(),
        };
        s.wait_serving().await;
        s
    }

    /// The API of a services framework running elsewhere.
    pub fn at(url: &str) -> Services {
        Services {
            url: url.to_string(),
            shutdown: CancellationToken::new(),
            running: None,
            http: client(),
        }
    }

    /// Waits until the app list answers 200.
    pub async fn wait_serving(&self) {
        let url = format!("{}/v2/apps", self.url);
        let http = self.http.clone();
        eventually("the services API to serve", DEADLINE, || {
            let (url, http) = (url.clone(), http.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// Stops it and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            r.wait().await;
        }
    }

    /// A request; the status, the JSON answer (or its text), the headers.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = format!("{}{path}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, v, _) = self.request(method, path, body).await;
        (status, v)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Creates an app; panics unless 201.
    pub async fn create(&self, json: &str) -> Value {
        let (status, v) = self.call("POST", "/v2/apps", Some(json)).await;
        assert_eq!(status, 201, "creating {json}: {v}");
        v
    }

    /// `PUT /v2/apps{id}` (a partial update); the deployment id.
    pub async fn update(&self, id: &str, json: &str) -> String {
        let (status, v) = self.call("PUT", &format!("/v2/apps{id}"), Some(json)).await;
        assert!(status == 200 || status == 201, "PUT {id} {json}: {v}");
        v["deploymentId"].as_str().unwrap().to_string()
    }

    pub async fn app(&self, id: &str) -> Value {
        self.get(&format!("/v2/apps{id}")).await["app"].clone()
    }

    /// Waits until `check` says yes about the app (as `GET /v2/apps/{id}`
    /// shows it, tasks included); returns it.
    pub async fn wait_app(&self, what: &str, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_app_for(what, id, DEADLINE + Duration::from_secs(30), check)
            .await
    }

    pub async fn wait_app_for(
        &self,
        what: &str,
        id: &str,
        deadline: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = tokio::time::Instant::now() + deadline;
        let mut last = Value::Null;
        loop {
            let (status, v) = self.call("GET", &format!("/v2/apps{id}"), None).await;
            if status == 200 {
                if check(&v["app"]) {
                    return v["app"].clone();
                }
                last = v["app"].clone();
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "timed out after {deadline:?} waiting for: {what}; the app: {}",
                    serde_json::to_string_pretty(&last).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the app runs `n` tasks and no deployment holds it.
    pub async fn wait_running(&self, id: &str, n: usize) -> Value {
        self.wait_app(&format!("{id} to run {n} tasks"), id, |a| {
            running(a).len() == n
                && a["tasks"].as_array().is_some_and(|t| t.len() == n)
                && a["deployments"].as_array().is_some_and(|d| d.is_empty())
        })
        .await
    }

    /// Waits until no deployment is left.
    pub async fn wait_no_deployments(&self) {
        let url = format!("{}/v2/deployments", self.url);
        let http = self.http.clone();
        eventually(
            "every deployment to finish",
            DEADLINE + Duration::from_secs(30),
            || {
                let (url, http) = (url.clone(), http.clone());
                async move {
                    let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                    v.as_array().is_some_and(|d| d.is_empty()).then_some(())
                }
            },
        )
        .await;
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The app's tasks in TASK_RUNNING.
pub fn running(app: &Value) -> Vec<Value> {
    app["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of the app's tasks, sorted.
pub fn task_ids(app: &Value) -> Vec<String> {
    let mut ids: Vec<String> = app["tasks"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}
