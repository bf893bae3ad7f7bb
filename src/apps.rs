//! `agora apps ...` and `agora deployments ...`: the services framework's
//! REST API (Marathon's) from the command line. Tables by default,
//! `--json` for the API's own answers. A command that starts a deployment
//! follows it (a progress bar on a terminal) and exits 0 when it
//! succeeds, 1 when it fails or is rolled back; `--detach` returns at once.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::Table;
use serde_json::{Value, json};

use crate::rest::{Client, print_json, read_json, table, text, time};

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List apps with their instances and deployments.
    List(AppsCommon),
    /// Show one app: its definition's main fields and its tasks.
    Show {
        id: String,
        #[command(flatten)]
        common: AppsCommon,
    },
    /// Create an app from a JSON file (`-` for stdin) and follow its deployment.
    Deploy {
        file: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Change an app from a JSON file (its fields replace the app's) and
    /// follow the deployment.
    Update {
        id: String,
        file: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Scale an app to N instances.
    Scale {
        id: String,
        instances: u32,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Replace every instance of an app (rolling, by its upgradeStrategy).
    Restart {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Go back to an earlier version of an app (default: the one before the
    /// current one).
    Rollback {
        id: String,
        version: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Stop every instance of an app and remove it.
    Delete {
        id: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// List an app's tasks.
    Tasks {
        id: String,
        #[command(flatten)]
        common: AppsCommon,
    },
    /// Kill a task (replaced, unless --scale lowers the app's instances).
    Kill {
        task: String,
        /// Lower the app's instance count instead of replacing the task.
        #[arg(long)]
        scale: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// List running deployments.
    List(AppsCommon),
    /// Roll a deployment back (with --force: stop it where it is).
    Cancel {
        id: String,
        /// Stop the deployment without rolling back.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: AppsCommon,
    },
}

#[derive(Debug, Args)]
pub struct AppsCommon {
    /// The services framework's REST API (any instance: standbys forward).
    #[arg(long, env = "AGORA_SERVICES", default_value = "http://127.0.0.1:8080")]
    pub services: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, env = "AGORA_JSON")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    /// Replace a deployment that holds the app.
    #[arg(long)]
    pub force: bool,
    /// Return once the change is accepted; do not follow the deployment.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub common: AppsCommon,
}

fn client(common: &AppsCommon) -> anyhow::Result<Client> {
    Client::new(
        &common.services,
        "the services framework",
        "--services or AGORA_SERVICES",
    )
}

/// An app id as the API takes it in a path: `/team/web` or `team/web`.
fn app_path(id: &str) -> String {
    format!("/{}", id.trim_matches('/'))
}

fn force_query(force: bool) -> &'static str {
    if force { "?force=true" } else { "" }
}

/// How an app runs: its command, or its image.
fn what_runs(app: &Value) -> String {
    if let Some(image) = app["container"]["docker"]["image"].as_str() {
        return format!("docker {image}");
    }
    if let Some(cmd) = app["cmd"].as_str() {
        return cmd.to_string();
    }
    app["args"]
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A number as people write it: `64`, `0.1`.
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => text(v),
    }
}

/// At most `n` characters, with `...` when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}...",
            s.chars().take(n.saturating_sub(3)).collect::<String>()
        )
    }
}

/// A task's health: `healthy`, `unhealthy`, or `-` (no checks, or no
/// verdict yet).
fn health(task: &Value) -> &'static str {
    match task["healthCheckResults"][0]["alive"].as_bool() {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "-",
    }
}

fn tasks_table(tasks: &[Value]) -> Table {
    let mut t = table(&[
        "TASK", "STATE", "HEALTH", "HOST", "PORTS", "VERSION", "STARTED",
    ]);
    for task in tasks {
        let ports: Vec<String> = task["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        t.add_row(vec![
            text(&task["id"]),
            text(&task["state"]),
            health(task).to_string(),
            text(&task["host"]),
            if ports.is_empty() {
                "-".into()
            } else {
                ports.join(",")
            },
            time(&task["version"]),
            time(&task["startedAt"]),
        ]);
    }
    t
}

fn deployments_table(list: &[Value]) -> Table {
    let mut t = table(&["DEPLOYMENT", "APPS", "STEP", "CURRENT ACTIONS", "VERSION"]);
    for d in list {
        let apps: Vec<String> = d["affectedApps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        t.add_row(vec![
            text(&d["id"]),
            apps.join(","),
            format!("{}/{}", text(&d["currentStep"]), text(&d["totalSteps"])),
            actions_text(d),
            time(&d["version"]),
        ]);
    }
    t
}

fn actions_text(d: &Value) -> String {
    let actions: Vec<String> = d["currentActions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{} {}", text(&a["action"]), text(&a["app"])))
        .collect();
    if actions.is_empty() {
        "-".into()
    } else {
        actions.join(", ")
    }
}

/// Runs `agora apps ...`.
pub async fn run(cmd: AppsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AppsCommand::List(common) => {
            let c = client(&common)?;
            let apps = c
                .get("/v2/apps?embed=apps.counts&embed=apps.deployments")
                .await?;
            if common.json {
                print_json(&apps)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(&[
                "ID",
                "INSTANCES",
                "RUNNING",
                "HEALTHY",
                "CPUS",
                "MEM",
                "DEPLOYING",
                "VERSION",
                "RUNS",
            ]);
            for a in apps["apps"].as_array().into_iter().flatten() {
                let deploying = a["deployments"].as_array().is_some_and(|d| !d.is_empty());
                t.add_row(vec![
                    text(&a["id"]),
                    text(&a["instances"]),
                    text(&a["tasksRunning"]),
                    if a["healthChecks"].as_array().is_some_and(|h| !h.is_empty()) {
                        text(&a["tasksHealthy"])
                    } else {
                        "-".into()
                    },
                    num(&a["cpus"]),
                    num(&a["mem"]),
                    if deploying { "yes" } else { "-" }.to_string(),
                    time(&a["version"]),
                    clip(&what_runs(a), 48),
                ]);
            }
            println!("{t}");
        }
        AppsCommand::Show { id, common } => {
            let c = client(&common)?;
            let v = c.get(&format!("/v2/apps{}", app_path(&id))).await?;
            if common.json {
                print_json(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            let a = &v["app"];
            println!("App:         {}", text(&a["id"]));
            println!("Runs:        {}", what_runs(a));
            println!(
                "Instances:   {} ({} running, {} staged)",
                text(&a["instances"]),
                text(&a["tasksRunning"]),
                text(&a["tasksStaged"])
            );
            if a["healthChecks"].as_array().is_some_and(|h| !h.is_empty()) {
                println!(
                    "Health:      {} healthy, {} unhealthy",
                    text(&a["tasksHealthy"]),
                    text(&a["tasksUnhealthy"])
                );
            }
            println!(
                "Resources:   cpus {} mem {} disk {}",
                num(&a["cpus"]),
                num(&a["mem"]),
                num(&a["disk"])
            );
            println!("Version:     {}", time(&a["version"]));
            println!(
                "Config from: {}",
                time(&a["versionInfo"]["lastConfigChangeAt"])
            );
            let constraints = a["constraints"].to_string();
            if constraints != "[]" {
                println!("Constraints: {constraints}");
            }
            let deployments: Vec<String> = a["deployments"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| text(&d["id"]))
                .collect();
            if !deployments.is_empty() {
                println!("Deploying:   {}", deployments.join(", "));
            }
            if let Some(f) = a.get("lastTaskFailure").filter(|f| f.is_object()) {
                println!(
                    "Last failure: {} {} on {}: {}",
                    time(&f["timestamp"]),
                    text(&f["state"]),
                    text(&f["host"]),
                    text(&f["message"])
                );
            }
            let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
            if !tasks.is_empty() {
                println!();
                println!("{}", tasks_table(&tasks));
            }
        }
        AppsCommand::Deploy { file, change } => {
            let app = read_json(&file)?;
            let id = app["id"]
                .as_str()
                .context("the app definition needs an \"id\"")?
                .to_string();
            let c = client(&change.common)?;
            let follow = Follower::start(&c, &change).await?;
            let url = format!("{}/v2/apps{}", c.base, force_query(change.force));
            let resp = c
                .send(c.http.post(&url).json(&app), "POST /v2/apps")
                .await?;
            let deployment = resp
                .headers()
                .get("marathon-deployment-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if change.common.json {
                print_json(&body)?;
            } else {
                println!("Created app {id}");
            }
            return finish(follow, deployment, &change).await;
        }
        AppsCommand::Update { id, file, change } => {
            let body = read_json(&file)?;
            return put_app(&id, body, &change).await;
        }
        AppsCommand::Scale {
            id,
            instances,
            change,
        } => {
            return put_app(&id, json!({ "instances": instances }), &change).await;
        }
        AppsCommand::Restart { id, change } => {
            let c = client(&change.common)?;
            let follow = Follower::start(&c, &change).await?;
            let path = format!(
                "/v2/apps{}/restart{}",
                app_path(&id),
                force_query(change.force)
            );
            let v = c.send_json(reqwest::Method::POST, &path, None).await?;
            return answer(follow, v, &change).await;
        }
        AppsCommand::Rollback {
            id,
            version,
            change,
        } => {
            let c = client(&change.common)?;
            let version = match version {
                Some(v) => v,
                None => {
                    let v = c
                        .get(&format!("/v2/apps{}/versions", app_path(&id)))
                        .await?;
                    let list = v["versions"].as_array().cloned().unwrap_or_default();
                    match list.get(1).and_then(Value::as_str) {
                        Some(v) => v.to_string(),
                        None => bail!("{id} has no earlier version to roll back to"),
                    }
                }
            };
            if !change.common.json {
                println!("Rolling {id} back to version {version}");
            }
            return put_app(&id, json!({ "version": version }), &change).await;
        }
        AppsCommand::Delete { id, change } => {
            let c = client(&change.common)?;
            let follow = Follower::start(&c, &change).await?;
            let path = format!("/v2/apps{}{}", app_path(&id), force_query(change.force));
            let v = c.send_json(reqwest::Method::DELETE, &path, None).await?;
            return answer(follow, v, &change).await;
        }
        AppsCommand::Tasks { id, common } => {
            let c = client(&common)?;
            let v = c.get(&format!("/v2/apps{}/tasks", app_path(&id))).await?;
            if common.json {
                print_json(&v)?;
            } else {
                let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
                println!("{}", tasks_table(&tasks));
            }
        }
        AppsCommand::Kill {
            task,
            scale,
            change,
        } => {
            let c = client(&change.common)?;
            let follow = if scale {
                Follower::start(&c, &change).await?
            } else {
                None
            };
            let mut query = vec![];
            if scale {
                query.push("scale=true");
            }
            if change.force {
                query.push("force=true");
            }
            let path = if query.is_empty() {
                "/v2/tasks/delete".to_string()
            } else {
                format!("/v2/tasks/delete?{}", query.join("&"))
            };
            let v = c
                .send_json(reqwest::Method::POST, &path, Some(json!({ "ids": [task] })))
                .await?;
            if !scale {
                if change.common.json {
                    print_json(&v)?;
                } else {
                    println!("Killing task {task} (it is replaced)");
                }
                return Ok(ExitCode::SUCCESS);
            }
            return answer(follow, v, &change).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `agora deployments ...`.
pub async fn run_deployments(cmd: DeploymentsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeploymentsCommand::List(common) => {
            let c = client(&common)?;
            let v = c.get("/v2/deployments").await?;
            if common.json {
                print_json(&v)?;
            } else {
                println!(
                    "{}",
                    deployments_table(v.as_array().map(Vec::as_slice).unwrap_or(&[]))
                );
            }
        }
        DeploymentsCommand::Cancel { id, force, common } => {
            let c = client(&common)?;
            let v = c
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/v2/deployments/{id}{}", force_query(force)),
                    None,
                )
                .await?;
            if common.json {
                print_json(&v)?;
            } else if force {
                println!("Stopped deployment {id} where it was");
            } else {
                println!(
                    "Rolling deployment {id} back (deployment {})",
                    text(&v["deploymentId"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `PUT /v2/apps/{id}` with `body`, followed.
async fn put_app(id: &str, body: Value, change: &ChangeArgs) -> anyhow::Result<ExitCode> {
    let c = client(&change.common)?;
    let follow = Follower::start(&c, change).await?;
    let path = format!("/v2/apps{}{}", app_path(id), force_query(change.force));
    let v = c.send_json(reqwest::Method::PUT, &path, Some(body)).await?;
    answer(follow, v, change).await
}

/// Prints the API's answer (`{"deploymentId", "version"}`) and follows the
/// deployment.
async fn answer(
    follow: Option<Follower>,
    v: Value,
    change: &ChangeArgs,
) -> anyhow::Result<ExitCode> {
    if change.common.json {
        print_json(&v)?;
    }
    let deployment = v["deploymentId"].as_str().map(str::to_string);
    finish(follow, deployment, change).await
}

async fn finish(
    follow: Option<Follower>,
    deployment: Option<String>,
    change: &ChangeArgs,
) -> anyhow::Result<ExitCode> {
    let Some(id) = deployment else {
        return Ok(ExitCode::SUCCESS);
    };
    let Some(follow) = follow else {
        if !change.common.json {
            println!("Deployment {id} started");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let quiet = change.common.json;
    match follow.wait(&id, quiet).await? {
        Outcome::Succeeded => {
            if !quiet {
                println!("Deployment {id} succeeded");
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Failed => {
            eprintln!("Deployment {id} failed or was rolled back");
            Ok(ExitCode::FAILURE)
        }
    }
}

enum Outcome {
    Succeeded,
    Failed,
}

/// Follows a deployment: the event stream (opened before the change is
/// sent, so its end cannot be missed) says how it ended; `/v2/deployments`
/// shows how far it got.
struct Follower {
    client: Client,
    events: reqwest::Response,
}

impl Follower {
    /// `None` with `--detach`.
    async fn start(c: &Client, change: &ChangeArgs) -> anyhow::Result<Option<Follower>> {
        if change.detach {
            return Ok(None);
        }
        let url = format!(
            "{}/v2/events?event_type=deployment_success&event_type=deployment_failed&event_type=deployment_step_success",
            c.base
        );
        // The stream has no timeout of its own (it stays open).
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let events = c.send(http.get(&url), "GET /v2/events").await?;
        Ok(Some(Follower {
            client: Client::new(&c.base, "the services framework", "--services")?,
            events,
        }))
    }

    async fn wait(mut self, id: &str, quiet: bool) -> anyhow::Result<Outcome> {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(1);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} deployment {prefix} [{bar:20}] step {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(id.chars().take(8).collect::<String>());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        };
        let mut buffer = String::new();
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        // Gone from /v2/deployments without an event: ended (the stream
        // may have broken); the last polls decide.
        let mut gone = 0;
        loop {
            tokio::select! {
                chunk = self.events.chunk() => {
                    let Some(chunk) = chunk.ok().flatten() else {
                        // The stream ended (e.g. a failover): polling goes on.
                        self.events = self.reopen().await?;
                        continue;
                    };
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find("\n\n") {
                        let event: String = buffer.drain(..end + 2).collect();
                        if let Some(outcome) = outcome_of(&event, id) {
                            bar.finish_and_clear();
                            return Ok(outcome);
                        }
                    }
                }
                _ = poll.tick() => {
                    let list = self.client.get("/v2/deployments").await.unwrap_or(Value::Null);
                    match list.as_array().and_then(|l| l.iter().find(|d| d["id"] == id)) {
                        Some(d) => {
                            gone = 0;
                            bar.set_length(d["totalSteps"].as_u64().unwrap_or(1).max(1));
                            bar.set_position(d["currentStep"].as_u64().unwrap_or(0));
                            bar.set_message(actions_text(d));
                        }
                        None if list.is_array() => {
                            gone += 1;
                            if gone >= 4 {
                                bar.finish_and_clear();
                                return Ok(Outcome::Succeeded);
                            }
                        }
                        None => {}
                    }
                }
            }
        }
    }

    async fn reopen(&self) -> anyhow::Result<reqwest::Response> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = format!(
            "{}/v2/events?event_type=deployment_success&event_type=deployment_failed",
            self.client.base
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        self.client.send(http.get(&url), "GET /v2/events").await
    }
}

/// What an SSE event says about deployment `id`'s end, if anything.
fn outcome_of(event: &str, id: &str) -> Option<Outcome> {
    let mut kind = "";
    let mut data = String::new();
    for line in event.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim());
        }
    }
    let v: Value = serde_json::from_str(&data).ok()?;
    let of = v["id"].as_str().or_else(|| v["plan"]["id"].as_str());
    if of != Some(id) {
        return None;
    }
    match kind {
        "deployment_success" => Some(Outcome::Succeeded),
        "deployment_failed" => Some(Outcome::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_events() {
        let ok = "event:deployment_success\ndata:{\"id\":\"d1\",\"plan\":{\"id\":\"d1\"}}\n\n";
        assert!(matches!(outcome_of(ok, "d1"), Some(Outcome::Succeeded)));
        assert!(outcome_of(ok, "d2").is_none());
        let failed = "event: deployment_failed\ndata: {\"id\":\"d1\"}\n\n";
        assert!(matches!(outcome_of(failed, "d1"), Some(Outcome::Failed)));
        let step = "event:deployment_step_success\ndata:{\"plan\":{\"id\":\"d1\"}}\n\n";
        assert!(outcome_of(step, "d1").is_none());
    }

    #[test]
    fn numbers_and_clipping() {
        assert_eq!(num(&json!(64.0)), "64");
        assert_eq!(num(&json!(0.1)), "0.1");
        assert_eq!(clip("abcdef", 5), "ab...");
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(
            health(&json!({"healthCheckResults": [{"alive": false}]})),
            "unhealthy"
        );
        assert_eq!(health(&json!({"healthCheckResults": []})), "-");
    }

    #[test]
    fn app_paths() {
        assert_eq!(app_path("team/web"), "/team/web");
        assert_eq!(app_path("/web/"), "/web");
    }
}
