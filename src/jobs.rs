//! `agora jobs ...`: the batch framework's REST API from the command line.
//! Tables by default, `--json` for the API's own answers.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::Table;
use serde_json::Value;

use crate::rest::{Client, print_json, read_json, table, text, time};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs with their schedules and latest outcome.
    List(JobsCommon),
    /// Show one job (spec, schedules, active runs, history summary).
    Show {
        id: String,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// Create a job from a JSON file (`-` for stdin).
    Create {
        file: String,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// Replace a job from a JSON file (`-` for stdin).
    Update {
        id: String,
        file: String,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// Start a run now; with --wait, follow it and exit with its status.
    Run {
        id: String,
        /// Follow the run to its end; exit 0 on SUCCESS, else the task's
        /// exit code (1 when it has none).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// List a job's runs, newest first.
    Runs {
        id: String,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// Print a run's output (`JOB/RUN`), from its agent.
    Logs {
        /// The run, as `JOB/RUN` (as `agora jobs runs` and `run` print it).
        run: String,
        /// Keep printing new output until the run ends.
        #[arg(long)]
        follow: bool,
        /// `stdout` or `stderr`.
        #[arg(long, default_value = "stdout")]
        stream: String,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// Stop a run (`JOB/RUN`): its task is killed.
    Stop {
        run: String,
        #[command(flatten)]
        common: JobsCommon,
    },
    /// Delete a job, its schedules and its history.
    Delete {
        id: String,
        /// Stop its active runs first (otherwise a job with active runs is
        /// not deleted).
        #[arg(long)]
        stop_runs: bool,
        #[command(flatten)]
        common: JobsCommon,
    },
}

#[derive(Debug, Args)]
pub struct JobsCommon {
    /// The batch framework's REST API (any instance: standbys redirect).
    #[arg(long, env = "AGORA_BATCH", default_value = "http://127.0.0.1:9000")]
    pub batch: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, env = "AGORA_JSON")]
    pub json: bool,
}

/// `JOB/RUN` into its parts.
fn split_run(run: &str) -> anyhow::Result<(&str, &str)> {
    match run.split_once('/') {
        Some((j, r)) if !j.is_empty() && !r.is_empty() => Ok((j, r)),
        _ => bail!("`{run}`: name a run as JOB/RUN, e.g. nightly/20250301020000"),
    }
}

fn schedules_text(job: &Value) -> String {
    let s: Vec<String> = job["schedules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let tz = s["timezone"].as_str().unwrap_or("UTC");
            let off = if s["enabled"] == Value::Bool(false) {
                " (disabled)"
            } else {
                ""
            };
            format!("{} {}{off}", s["cron"].as_str().unwrap_or("?"), tz)
        })
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(", ")
    }
}

fn runs_table(runs: &[Value]) -> Table {
    let mut t = table(&[
        "RUN",
        "STATUS",
        "TRIGGER",
        "SCHEDULED",
        "STARTED",
        "FINISHED",
        "EXIT",
        "REASON",
    ]);
    for r in runs {
        let trigger = match r["trigger"]["kind"].as_str() {
            Some("schedule") => format!("schedule {}", text(&r["trigger"]["schedule"])),
            Some(k) => k.to_string(),
            None => "-".into(),
        };
        t.add_row(vec![
            format!("{}/{}", text(&r["jobId"]), text(&r["id"])),
            text(&r["status"]),
            trigger,
            time(&r["scheduledAt"]),
            time(&r["startedAt"]),
            time(&r["completedAt"]),
            text(&r["exitCode"]),
            r["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    t
}

/// Runs `agora jobs ...`.
pub async fn run(cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobsCommand::List(common) => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let jobs = c
                .get("/v1/jobs?embed=schedules,activeRuns,historySummary")
                .await?;
            if common.json {
                print_json(&jobs)?;
            } else {
                let mut t = table(&[
                    "ID",
                    "SCHEDULES",
                    "ACTIVE",
                    "LAST SUCCESS",
                    "LAST FAILURE",
                    "DESCRIPTION",
                ]);
                for j in jobs.as_array().into_iter().flatten() {
                    t.add_row(vec![
                        text(&j["id"]),
                        schedules_text(j),
                        j["activeRuns"].as_array().map_or(0, Vec::len).to_string(),
                        time(&j["historySummary"]["lastSuccessAt"]),
                        time(&j["historySummary"]["lastFailureAt"]),
                        j["description"].as_str().unwrap_or("").to_string(),
                    ]);
                }
                println!("{t}");
            }
        }
        JobsCommand::Show { id, common } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let job = c
                .get(&format!(
                    "/v1/jobs/{id}?embed=schedules,activeRuns,historySummary"
                ))
                .await?;
            if common.json {
                print_json(&job)?;
            } else {
                let run = &job["run"];
                let command = run["cmd"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        run["args"]
                            .as_array()
                            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(" "))
                    })
                    .unwrap_or_else(|| "(the image's command)".into());
                println!("Job:          {}", text(&job["id"]));
                if let Some(d) = job["description"].as_str() {
                    println!("Description:  {d}");
                }
                println!("Command:      {command}");
                if let Some(image) = run["docker"]["image"].as_str() {
                    println!("Image:        {image}");
                }
                println!(
                    "Resources:    cpus {} mem {} disk {}",
                    text(&run["cpus"]),
                    text(&run["mem"]),
                    text(&run["disk"])
                );
                println!(
                    "Restart:      {}{}",
                    text(&run["restart"]["policy"]),
                    run["restart"]["activeDeadlineSeconds"]
                        .as_u64()
                        .map(|d| format!(", activeDeadlineSeconds {d}"))
                        .unwrap_or_default()
                );
                let deps: Vec<String> = job["dependencies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| text(&d["id"]))
                    .collect();
                if !deps.is_empty() {
                    println!("Runs after:   {}", deps.join(", "));
                }
                println!("Schedules:    {}", schedules_text(&job));
                let h = &job["historySummary"];
                println!(
                    "History:      {} succeeded, {} failed; last success {}, last failure {}",
                    text(&h["successCount"]),
                    text(&h["failureCount"]),
                    time(&h["lastSuccessAt"]),
                    time(&h["lastFailureAt"])
                );
                let active = job["activeRuns"].as_array().cloned().unwrap_or_default();
                if !active.is_empty() {
                    println!("Active runs:");
                    println!("{}", runs_table(&active));
                }
            }
        }
        JobsCommand::Create { file, common } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let job = c
                .send_json(reqwest::Method::POST, "/v1/jobs", Some(read_json(&file)?))
                .await?;
            if common.json {
                print_json(&job)?;
            } else {
                println!(
                    "Created job {} (schedules: {})",
                    text(&job["id"]),
                    schedules_text(&job)
                );
            }
        }
        JobsCommand::Update { id, file, common } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let job = c
                .send_json(
                    reqwest::Method::PUT,
                    &format!("/v1/jobs/{id}"),
                    Some(read_json(&file)?),
                )
                .await?;
            if common.json {
                print_json(&job)?;
            } else {
                println!(
                    "Updated job {} (schedules: {})",
                    text(&job["id"]),
                    schedules_text(&job)
                );
            }
        }
        JobsCommand::Run { id, wait, common } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let run = c
                .send_json(reqwest::Method::POST, &format!("/v1/jobs/{id}/runs"), None)
                .await?;
            let run_id = text(&run["id"]);
            if common.json && !wait {
                print_json(&run)?;
            } else if !common.json {
                println!("Started run {id}/{run_id}");
            }
            if wait {
                return wait_for(&c, &id, &run_id, common.json).await;
            }
        }
        JobsCommand::Runs { id, common } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let runs = c.get(&format!("/v1/jobs/{id}/runs")).await?;
            if common.json {
                print_json(&runs)?;
            } else {
                println!(
                    "{}",
                    runs_table(runs.as_array().map_or(&[][..], Vec::as_slice))
                );
            }
        }
        JobsCommand::Logs {
            run,
            follow,
            stream,
            common,
        } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let (job, run_id) = split_run(&run)?;
            logs(&c, job, run_id, &stream, follow).await?;
        }
        JobsCommand::Stop { run, common } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let (job, run_id) = split_run(&run)?;
            let r = c
                .send_json(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{job}/runs/{run_id}/actions/stop"),
                    None,
                )
                .await?;
            if common.json {
                print_json(&r)?;
            } else {
                println!("Stopping run {job}/{run_id} ({})", text(&r["status"]));
            }
        }
        JobsCommand::Delete {
            id,
            stop_runs,
            common,
        } => {
            let c = Client::new(&common.batch, "the batch framework", "--batch")?;
            let path = if stop_runs {
                format!("/v1/jobs/{id}?stopCurrentJobRuns=true")
            } else {
                format!("/v1/jobs/{id}")
            };
            c.send_json(reqwest::Method::DELETE, &path, None).await?;
            if !common.json {
                println!("Deleted job {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a run to its end, printing each status once; the exit code
/// says how it ended.
async fn wait_for(c: &Client, job: &str, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/jobs/{job}/runs/{run}");
    let mut last = String::new();
    loop {
        let r = match c.get(&path).await {
            Ok(r) => r,
            Err(e) => {
                // A failover of the batch framework: ask again.
                eprintln!("warning: {e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let status = text(&r["status"]);
        if status != last && !json {
            let reason = r["reason"]
                .as_str()
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            println!("{job}/{run} {status}{reason}");
            last = status.clone();
        }
        if !matches!(status.as_str(), "INITIAL" | "STARTING" | "ACTIVE") {
            if json {
                print_json(&r)?;
            }
            return Ok(match status.as_str() {
                "SUCCESS" => ExitCode::SUCCESS,
                _ => {
                    let code = r["exitCode"].as_i64().filter(|c| *c != 0).unwrap_or(1);
                    ExitCode::from(code.clamp(1, 255) as u8)
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Prints a run's output; with `follow`, until the run has ended and all
/// of its output is printed.
async fn logs(c: &Client, job: &str, run: &str, stream: &str, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut offset: u64 = 0;
    let mut task = String::new();
    loop {
        let ended = if follow {
            let r = c.get(&format!("/v1/jobs/{job}/runs/{run}")).await?;
            !matches!(
                r["status"].as_str(),
                Some("INITIAL" | "STARTING" | "ACTIVE")
            )
        } else {
            true
        };
        let url = format!(
            "{}/v1/jobs/{job}/runs/{run}/logs?stream={stream}&offset={offset}",
            c.base
        );
        let resp = c.http.get(&url).send().await;
        match resp {
            Ok(resp) if resp.status().is_success() => {
                let this_task = resp
                    .headers()
                    .get("x-agora-task-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if this_task != task {
                    // A retry's new attempt: its output starts at 0.
                    if !task.is_empty() {
                        offset = 0;
                        task = this_task;
                        continue;
                    }
                    task = this_task;
                }
                let bytes = resp.bytes().await?;
                offset += bytes.len() as u64;
                std::io::stdout().write_all(&bytes)?;
                std::io::stdout().flush()?;
                if ended && (bytes.is_empty() || !follow) {
                    return Ok(());
                }
                if !bytes.is_empty() {
                    continue;
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or(body);
                if !follow || ended {
                    bail!("logs of {job}/{run}: {status}: {message}");
                }
            }
            Err(e) => {
                if !follow {
                    return Err(e)
                        .context(format!("cannot reach the batch framework at {}", c.base));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names() {
        assert_eq!(split_run("a.b/2025").unwrap(), ("a.b", "2025"));
        assert!(split_run("a.b").is_err());
        assert!(split_run("/x").is_err());
    }
}
