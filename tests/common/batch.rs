//! The batch framework in a test: in this process against a test cluster,
//! and its REST API over real HTTP.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, eventually};

/// A batch framework in this process.
pub struct Batch {
    pub url: String,
    pub shutdown: CancellationToken,
    pub running: Option<agora_batch::RunningBatch>,
    http: reqwest::Client,
}

impl Batch {
    /// Standalone, in memory, on a free port, against `master`.
    pub async fn start(master: &str) -> Batch {
        let config = agora_batch::BatchConfig::new(master, "127.0.0.1:0".parse().unwrap());
        Batch::start_with(config).await
    }

    pub async fn start_with(config: agora_batch::BatchConfig) -> Batch {
        let shutdown = CancellationToken::new();
        let running = agora_batch::start(config, shutdown.child_token())
            .await
            .expect("the batch framework starts");
        let b = Batch {
            url: running.url(),
            shutdown,
            running: Some(running),
            http: reqwest::Client::new(),
        };
        // Serving once the job list answers.
        let url = format!("{}/v1/jobs", b.url);
        let http = b.http.clone();
        eventually("the batch API to serve", DEADLINE, || {
            let (url, http) = (url.clone(), http.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        b
    }

    /// The API of a batch framework running elsewhere (an `agora batch`
    /// process).
    pub fn at(url: &str) -> Batch {
        Batch {
            url: url.to_string(),
            shutdown: CancellationToken::new(),
            running: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    /// Whether this instance leads (None: it does not answer).
    pub async fn leading(&self) -> Option<bool> {
        let r = self
            .http
            .get(format!("{}/v1/leader", self.url))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["leading"].as_bool()
    }

    /// Stops it and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            r.wait().await;
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
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
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Creates a job; panics unless 201.
    pub async fn create(&self, json: &str) -> Value {
        let (status, v) = self.call("POST", "/v1/jobs", Some(json)).await;
        assert_eq!(status, 201, "creating {json}: {v}");
        v
    }

    /// Starts a run now; returns its id.
    pub async fn run_now(&self, job: &str) -> String {
        let (status, v) = self
            .call("POST", &format!("/v1/jobs/{job}/runs"), None)
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn runs(&self, job: &str) -> Vec<Value> {
        self.get(&format!("/v1/jobs/{job}/runs"))
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits for a run of `job` for which `check` says yes.
    pub async fn wait_run(&self, what: &str, job: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_runs(what, job, |runs| runs.iter().find(|r| check(r)).cloned())
            .await
    }

    /// Waits until `check` finds what it wants in `job`'s runs.
    pub async fn wait_runs<T>(
        &self,
        what: &str,
        job: &str,
        check: impl Fn(&[Value]) -> Option<T>,
    ) -> T {
        let deadline = DEADLINE + Duration::from_secs(30);
        let until = tokio::time::Instant::now() + deadline;
        let mut last = Vec::new();
        loop {
            let (status, v) = self
                .call("GET", &format!("/v1/jobs/{job}/runs"), None)
                .await;
            if status == 200 {
                let runs = v.as_array().cloned().unwrap_or_default();
                if let Some(t) = check(&runs) {
                    return t;
                }
                last = runs;
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "timed out after {deadline:?} waiting for: {what}; runs of {job}: {}",
                    serde_json::to_string_pretty(&last).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The run ended (any terminal status).
pub fn ended(r: &Value) -> bool {
    !matches!(
        r["status"].as_str(),
        Some("INITIAL" | "STARTING" | "ACTIVE")
    )
}

/// A timestamp field in seconds since the epoch.
pub fn secs(v: &Value) -> f64 {
    let t: jiff::Timestamp = v.as_str().expect("a timestamp").parse().unwrap();
    t.as_millisecond() as f64 / 1000.0
}
