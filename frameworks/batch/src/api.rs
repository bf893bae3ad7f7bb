//! The REST API, in Metronome's shape (warp).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/jobs[?embed=activeRuns,schedules,history,historySummary]` | every job |
//! | `POST /v1/jobs` | create a job (schedules may come with it) |
//! | `GET/PUT/DELETE /v1/jobs/{id}` | one job (`DELETE ?stopCurrentJobRuns=true` stops its runs) |
//! | `GET/POST /v1/jobs/{id}/schedules`, `GET/PUT/DELETE .../schedules/{sid}` | schedules |
//! | `GET /v1/jobs/{id}/runs`, `POST` (run now) | runs |
//! | `GET /v1/jobs/{id}/runs/{run}` | one run with every attempt |
//! | `POST /v1/jobs/{id}/runs/{run}/actions/stop` | stop a run |
//! | `GET /v1/jobs/{id}/runs/{run}/logs?stream=stdout\|stderr&offset=N&attempt=N` | the task's output, from its agent |
//! | `GET /v1/events` | Server-Sent Events: `job_created`, `job_updated`, `job_deleted`, `run_update` |
//! | `GET /metrics`, `/openapi.json`, `/ping`, `/v1/leader` | any instance |
//!
//! Everything under `/v1` but `/v1/leader` is served by the leader; a
//! standby answers 307 to it. Errors are JSON: 400 for a body that is not
//! JSON, 422 (`{"message", "details": [{"path", "errors"}]}`) for values
//! that are not valid, 404 for unknown jobs, schedules and runs, 409 for
//! conflicts; nothing of a refused request is stored.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use agora_framework_kit::election::Role;
use agora_framework_kit::http::{EventBus, handle_rejection, json_error, leader_only};
use bytes::Bytes;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::core::{Answer, Command, Core, JobState, Refusal};
use crate::metrics::Metrics;
use crate::run::{Run, RunStatus};
use crate::runtime::{ActorHandle, ApiFailure};
use crate::spec::{FieldError, JobSpec, ScheduleSpec};

/// The largest request body.
const MAX_BODY: u64 = 1024 * 1024;

#[derive(Clone)]
pub(crate) struct ApiState {
    pub actor: ActorHandle,
    pub role: watch::Receiver<Role>,
    pub metrics: Arc<Metrics>,
    pub events: EventBus<Value>,
    pub framework_id: Arc<RwLock<Option<String>>>,
    pub http: reqwest::Client,
}

/// Serves the API on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) {
    let routes = routes(state);
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await })
        .run()
        .await;
}

fn with<T: Clone + Send>(t: T) -> impl Filter<Extract = (T,), Error = Infallible> + Clone {
    warp::any().map(move || t.clone())
}

fn body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY).and(warp::body::bytes())
}

fn query() -> impl Filter<Extract = (Vec<(String, String)>,), Error = Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|q: String| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
}

/// Percent-decoding of a query part (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let s = with(state.clone());
    let ping = warp::path!("ping")
        .and(warp::get())
        .map(|| "pong".into_response());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(s.clone())
        .map(|s: ApiState| {
            let mut r = Response::new(s.metrics.encode().into());
            r.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        });
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| warp::reply::json(&crate::openapi::document()).into_response());
    let leader = warp::path!("v1" / "leader")
        .and(warp::get())
        .and(s.clone())
        .map(|s: ApiState| {
            let role = s.role.borrow().clone();
            let body = match role {
                Role::Leading => json!({"leading": true}),
                Role::Standby { leader } => json!({"leading": false, "leader": leader}),
                Role::Starting => json!({"leading": false, "leader": null}),
            };
            warp::reply::json(&body).into_response()
        });

    let jobs_get = warp::path!("v1" / "jobs")
        .and(warp::get())
        .and(query())
        .and(s.clone())
        .then(list_jobs);
    let jobs_post = warp::path!("v1" / "jobs")
        .and(warp::post())
        .and(body())
        .and(s.clone())
        .then(create_job);
    let job_get = warp::path!("v1" / "jobs" / String)
        .and(warp::get())
        .and(query())
        .and(s.clone())
        .then(get_job);
    let job_put = warp::path!("v1" / "jobs" / String)
        .and(warp::put())
        .and(body())
        .and(s.clone())
        .then(replace_job);
    let job_delete = warp::path!("v1" / "jobs" / String)
        .and(warp::delete())
        .and(query())
        .and(s.clone())
        .then(delete_job);
    let schedules_get = warp::path!("v1" / "jobs" / String / "schedules")
        .and(warp::get())
        .and(s.clone())
        .then(list_schedules);
    let schedules_post = warp::path!("v1" / "jobs" / String / "schedules")
        .and(warp::post())
        .and(body())
        .and(s.clone())
        .then(add_schedule);
    let schedule_get = warp::path!("v1" / "jobs" / String / "schedules" / String)
        .and(warp::get())
        .and(s.clone())
        .then(get_schedule);
    let schedule_put = warp::path!("v1" / "jobs" / String / "schedules" / String)
        .and(warp::put())
        .and(body())
        .and(s.clone())
        .then(replace_schedule);
    let schedule_delete = warp::path!("v1" / "jobs" / String / "schedules" / String)
        .and(warp::delete())
        .and(s.clone())
        .then(delete_schedule);
    let runs_get = warp::path!("v1" / "jobs" / String / "runs")
        .and(warp::get())
        .and(s.clone())
        .then(list_runs);
    let runs_post = warp::path!("v1" / "jobs" / String / "runs")
        .and(warp::post())
        .and(s.clone())
        .then(start_run);
    let run_get = warp::path!("v1" / "jobs" / String / "runs" / String)
        .and(warp::get())
        .and(s.clone())
        .then(get_run);
    let run_stop = warp::path!("v1" / "jobs" / String / "runs" / String / "actions" / "stop")
        .or(warp::path!(
            "v1" / "jobs" / String / "runs" / String / "action" / "stop"
        ))
        .unify()
        .and(warp::post())
        .and(s.clone())
        .then(stop_run);
    let run_logs = warp::path!("v1" / "jobs" / String / "runs" / String / "logs")
        .and(warp::get())
        .and(query())
        .and(s.clone())
        .then(run_logs);
    let events = warp::path!("v1" / "events")
        .and(warp::get())
        .and(s.clone())
        .map(|s: ApiState| s.events.reply().into_response());

    let v1 = jobs_get
        .or(jobs_post)
        .unify()
        .or(job_get)
        .unify()
        .or(job_put)
        .unify()
        .or(job_delete)
        .unify()
        .or(schedules_get)
        .unify()
        .or(schedules_post)
        .unify()
        .or(schedule_get)
        .unify()
        .or(schedule_put)
        .unify()
        .or(schedule_delete)
        .unify()
        .or(runs_get)
        .unify()
        .or(runs_post)
        .unify()
        .or(run_get)
        .unify()
        .or(run_stop)
        .unify()
        .or(run_logs)
        .unify()
        .or(events)
        .unify();
    let led = leader_only(state.role.clone()).and(v1);

    ping.or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .or(leader)
        .unify()
        .or(led)
        .unify()
        .recover(handle_rejection)
        .unify()
}

// ----------------------------------------------------------------------------
// Replies
// ----------------------------------------------------------------------------

fn reply(status: StatusCode, body: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn invalid(details: Vec<FieldError>) -> Response {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({"message": "Object is not valid", "details": details}),
    )
}

fn refusal(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    if r.details.is_empty() {
        json_error(status, r.message)
    } else {
        reply(status, &json!({"message": r.message, "details": r.details}))
    }
}

fn failure(f: ApiFailure) -> Response {
    match f {
        ApiFailure::Refused(r) => refusal(r),
        ApiFailure::Unavailable(why) => json_error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn not_serving() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this instance is not serving yet (it is starting, loading, or standing by); retry shortly",
    )
}

/// Parses a JSON body: 400 when it is not JSON, 422 (with the path) when
/// it is JSON of the wrong shape.
// The error is the reply itself, returned at once by the handler.
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "/".to_string()
        } else {
            format!("/{}", path.replace('.', "/"))
        };
        invalid(vec![FieldError {
            path,
            errors: vec![e.inner().to_string()],
        }])
    })
}

/// A job as JSON, with the asked-for embeds.
pub(crate) fn job_json(j: &JobState, embeds: &[String]) -> Value {
    let mut v = serde_json::to_value(&j.record.spec).unwrap_or_default();
    let has = |e: &str| embeds.iter().any(|x| x == e);
    if has("schedules") {
        v["schedules"] = schedules_json(&j.record.schedules, jiff::Timestamp::now());
    }
    if has("activeRuns") {
        let active: Vec<&Run> = j.active_runs().collect();
        v["activeRuns"] = serde_json::to_value(active).unwrap_or_default();
    }
    if has("history") || has("historySummary") {
        let ended: Vec<&Run> = j.runs.values().filter(|r| r.status.is_terminal()).collect();
        let last = |s: RunStatus| {
            ended
                .iter()
                .filter(|r| r.status == s)
                .filter_map(|r| r.completed_at)
                .max()
        };
        let count =
            |pred: &dyn Fn(RunStatus) -> bool| ended.iter().filter(|r| pred(r.status)).count();
        let last_failure = [RunStatus::Failed, RunStatus::Missed, RunStatus::Skipped]
            .into_iter()
            .filter_map(last)
            .max();
        let mut h = json!({
            "successCount": count(&|s| s == RunStatus::Success),
            "failureCount": count(&|s| s != RunStatus::Success),
            "lastSuccessAt": last(RunStatus::Success),
            "lastFailureAt": last_failure,
        });
        if has("history") {
            let brief = |r: &&Run| {
                json!({"id": r.id, "status": r.status, "createdAt": r.created_at,
                       "finishedAt": r.completed_at, "reason": r.reason})
            };
            h["successfulFinishedRuns"] = ended
                .iter()
                .filter(|r| r.status == RunStatus::Success)
                .map(brief)
                .collect();
            h["failedFinishedRuns"] = ended
                .iter()
                .filter(|r| r.status != RunStatus::Success)
                .map(brief)
                .collect();
            v["history"] = h;
        } else {
            v["historySummary"] = h;
        }
    }
    v
}

/// Schedules as JSON, each enabled one with `nextRunAt` (the first time
/// it fires after `now`, as Metronome shows it).
pub(crate) fn schedules_json(schedules: &[ScheduleSpec], now: jiff::Timestamp) -> Value {
    Value::Array(
        schedules
            .iter()
            .map(|sc| {
                let mut v = serde_json::to_value(sc).unwrap_or_default();
                if sc.enabled
                    && let Ok(cron) = crate::cron::CronSchedule::parse(&sc.cron, &sc.timezone)
                    && let Some(next) = cron.next_after(now)
                {
                    v["nextRunAt"] = json!(next);
                }
                v
            })
            .collect(),
    )
}

/// A run as JSON; a waiting run says what it waits for.
pub(crate) fn run_json(core: &Core, r: &Run) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if r.status == RunStatus::Initial
        && r.reason.is_none()
        && let Some(why) = core.waiting_reason(&r.job_id, &r.id)
    {
        v["reason"] = json!(format!("waiting for an offer: {why}"));
    }
    v
}

fn embeds(q: &[(String, String)]) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == "embed")
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
        .collect()
}

const EMBEDS: [&str; 4] = ["activeRuns", "schedules", "history", "historySummary"];

// The error is the reply itself, returned at once by the handler.
#[allow(clippy::result_large_err)]
fn check_embeds(embeds: &[String]) -> Result<(), Response> {
    match embeds.iter().find(|e| !EMBEDS.contains(&e.as_str())) {
        Some(e) => Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("unknown embed `{e}`: use {}", EMBEDS.join(", ")),
        )),
        None => Ok(()),
    }
}

fn no_job(id: &str) -> Response {
    json_error(StatusCode::NOT_FOUND, format!("Job '{id}' does not exist"))
}

// ----------------------------------------------------------------------------
// Handlers
// ----------------------------------------------------------------------------

async fn list_jobs(q: Vec<(String, String)>, s: ApiState) -> Response {
    let embeds = embeds(&q);
    if let Err(r) = check_embeds(&embeds) {
        return r;
    }
    match s
        .actor
        .query(move |core| {
            core.jobs
                .values()
                .map(|j| job_json(j, &embeds))
                .collect::<Vec<_>>()
        })
        .await
    {
        Some(jobs) => reply(StatusCode::OK, &Value::Array(jobs)),
        None => not_serving(),
    }
}

async fn get_job(id: String, q: Vec<(String, String)>, s: ApiState) -> Response {
    let embeds = embeds(&q);
    if let Err(r) = check_embeds(&embeds) {
        return r;
    }
    let idc = id.clone();
    match s
        .actor
        .query(move |core| core.jobs.get(&idc).map(|j| job_json(j, &embeds)))
        .await
    {
        Some(Some(job)) => reply(StatusCode::OK, &job),
        Some(None) => no_job(&id),
        None => not_serving(),
    }
}

async fn create_job(body: Bytes, s: ApiState) -> Response {
    let spec: JobSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(r) => return r,
    };
    if let Err(details) = spec.validate() {
        return invalid(details);
    }
    match s.actor.command(Command::CreateJob(spec)).await {
        Ok(Answer::Job(record)) => {
            let mut v = serde_json::to_value(&record.spec).unwrap_or_default();
            v["schedules"] = serde_json::to_value(&record.schedules).unwrap_or_default();
            reply(StatusCode::CREATED, &v)
        }
        Ok(_) => reply(StatusCode::CREATED, &json!({})),
        Err(f) => failure(f),
    }
}

async fn replace_job(id: String, body: Bytes, s: ApiState) -> Response {
    let spec: JobSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(r) => return r,
    };
    if let Err(details) = spec.validate() {
        return invalid(details);
    }
    match s.actor.command(Command::ReplaceJob(id, spec)).await {
        Ok(Answer::Job(record)) => {
            let mut v = serde_json::to_value(&record.spec).unwrap_or_default();
            v["schedules"] = serde_json::to_value(&record.schedules).unwrap_or_default();
            reply(StatusCode::OK, &v)
        }
        Ok(_) => reply(StatusCode::OK, &json!({})),
        Err(f) => failure(f),
    }
}

async fn delete_job(id: String, q: Vec<(String, String)>, s: ApiState) -> Response {
    let stop_runs = match q.iter().find(|(k, _)| k == "stopCurrentJobRuns") {
        None => false,
        Some((_, v)) if v == "true" => true,
        Some((_, v)) if v == "false" => false,
        Some((_, v)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("stopCurrentJobRuns must be `true` or `false`, not `{v}`"),
            );
        }
    };
    match s
        .actor
        .command(Command::DeleteJob { job: id, stop_runs })
        .await
    {
        Ok(_) => reply(StatusCode::OK, &json!({})),
        Err(f) => failure(f),
    }
}

async fn list_schedules(id: String, s: ApiState) -> Response {
    let idc = id.clone();
    match s
        .actor
        .query(move |core| {
            core.jobs
                .get(&idc)
                .map(|j| schedules_json(&j.record.schedules, jiff::Timestamp::now()))
        })
        .await
    {
        Some(Some(schedules)) => reply(StatusCode::OK, &schedules),
        Some(None) => no_job(&id),
        None => not_serving(),
    }
}

async fn get_schedule(id: String, sid: String, s: ApiState) -> Response {
    let (idc, sidc) = (id.clone(), sid.clone());
    match s
        .actor
        .query(move |core| {
            core.jobs
                .get(&idc)
                .map(|j| j.record.schedules.iter().find(|x| x.id == sidc).cloned())
        })
        .await
    {
        Some(Some(Some(schedule))) => reply(StatusCode::OK, &json!(schedule)),
        Some(Some(None)) => json_error(
            StatusCode::NOT_FOUND,
            format!("Schedule '{sid}' of Job '{id}' does not exist"),
        ),
        Some(None) => no_job(&id),
        None => not_serving(),
    }
}

// The error is the reply itself, returned at once by the handler.
#[allow(clippy::result_large_err)]
fn parse_schedule(body: &[u8]) -> Result<ScheduleSpec, Response> {
    let spec: ScheduleSpec = parse(body)?;
    spec.validate().map_err(invalid)?;
    Ok(spec)
}

async fn add_schedule(id: String, body: Bytes, s: ApiState) -> Response {
    let spec = match parse_schedule(&body) {
        Ok(spec) => spec,
        Err(r) => return r,
    };
    match s.actor.command(Command::AddSchedule(id, spec)).await {
        Ok(Answer::Schedule(spec)) => reply(StatusCode::CREATED, &json!(spec)),
        Ok(_) => reply(StatusCode::CREATED, &json!({})),
        Err(f) => failure(f),
    }
}

async fn replace_schedule(id: String, sid: String, body: Bytes, s: ApiState) -> Response {
    let spec = match parse_schedule(&body) {
        Ok(spec) => spec,
        Err(r) => return r,
    };
    match s
        .actor
        .command(Command::ReplaceSchedule(id, sid, spec))
        .await
    {
        Ok(Answer::Schedule(spec)) => reply(StatusCode::OK, &json!(spec)),
        Ok(_) => reply(StatusCode::OK, &json!({})),
        Err(f) => failure(f),
    }
}

async fn delete_schedule(id: String, sid: String, s: ApiState) -> Response {
    match s.actor.command(Command::DeleteSchedule(id, sid)).await {
        Ok(_) => reply(StatusCode::OK, &json!({})),
        Err(f) => failure(f),
    }
}

async fn list_runs(id: String, s: ApiState) -> Response {
    let idc = id.clone();
    match s
        .actor
        .query(move |core| {
            core.jobs.get(&idc).map(|j| {
                let mut runs: Vec<Value> = j.runs.values().map(|r| run_json(core, r)).collect();
                // Newest first, as Metronome lists them.
                runs.reverse();
                runs
            })
        })
        .await
    {
        Some(Some(runs)) => reply(StatusCode::OK, &Value::Array(runs)),
        Some(None) => no_job(&id),
        None => not_serving(),
    }
}

async fn get_run(id: String, run: String, s: ApiState) -> Response {
    let (idc, runc) = (id.clone(), run.clone());
    match s
        .actor
        .query(move |core| {
            core.jobs
                .get(&idc)
                .map(|j| j.runs.get(&runc).map(|r| run_json(core, r)))
        })
        .await
    {
        Some(Some(Some(r))) => reply(StatusCode::OK, &r),
        Some(Some(None)) => json_error(
            StatusCode::NOT_FOUND,
            format!("JobRun '{run}' of Job '{id}' does not exist"),
        ),
        Some(None) => no_job(&id),
        None => not_serving(),
    }
}

async fn start_run(id: String, s: ApiState) -> Response {
    let suffix = random_suffix();
    match s.actor.command(Command::StartRun { job: id, suffix }).await {
        Ok(Answer::Run(r)) => reply(StatusCode::CREATED, &json!(r)),
        Ok(_) => reply(StatusCode::CREATED, &json!({})),
        Err(f) => failure(f),
    }
}

async fn stop_run(id: String, run: String, s: ApiState) -> Response {
    match s.actor.command(Command::StopRun { job: id, run }).await {
        Ok(Answer::Run(r)) => reply(StatusCode::OK, &json!(r)),
        Ok(_) => reply(StatusCode::OK, &json!({})),
        Err(f) => failure(f),
    }
}

/// Five random lowercase letters and digits (Metronome's run id suffix).
fn random_suffix() -> String {
    let u = uuid::Uuid::new_v4();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    u.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// The task's output, read from its agent while its sandbox exists.
async fn run_logs(id: String, run: String, q: Vec<(String, String)>, s: ApiState) -> Response {
    let params: HashMap<String, String> = q.into_iter().collect();
    let stream = params.get("stream").map(String::as_str).unwrap_or("stdout");
    if stream != "stdout" && stream != "stderr" {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!("stream must be `stdout` or `stderr`, not `{stream}`"),
        );
    }
    let offset: u64 = match params.get("offset").map(|o| o.parse::<u64>()) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "offset must be a byte offset (a whole number >= 0)",
            );
        }
    };
    let attempt: Option<u32> = match params.get("attempt").map(|a| a.parse::<u32>()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "attempt must be a whole number >= 1",
            );
        }
    };
    let (idc, runc) = (id.clone(), run.clone());
    let found = s
        .actor
        .query(move |core| {
            let j = core.jobs.get(&idc)?;
            Some(j.runs.get(&runc).map(|r| {
                let t = match attempt {
                    Some(a) => r.tasks.iter().find(|t| t.attempt == a),
                    None => r.tasks.last(),
                };
                (r.status, t.cloned())
            }))
        })
        .await;
    let task = match found {
        None => return not_serving(),
        Some(None) => return no_job(&id),
        Some(Some(None)) => {
            return json_error(
                StatusCode::NOT_FOUND,
                format!("JobRun '{run}' of Job '{id}' does not exist"),
            );
        }
        Some(Some(Some((status, None)))) => {
            let which = attempt.map_or("any task".to_string(), |a| format!("an attempt {a}"));
            return json_error(
                StatusCode::NOT_FOUND,
                format!(
                    "JobRun '{run}' of Job '{id}' has no {which} (it is {status}): no output yet"
                ),
            );
        }
        Some(Some(Some((_, Some(t))))) => t,
    };
    if task.agent_http_address.is_empty() {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("task {} has no known agent address", task.id),
        );
    }
    let framework = s.framework_id.read().clone().unwrap_or_default();
    let url = format!(
        "http://{}/tasks/{}/logs?stream={stream}&offset={offset}&framework_id={framework}",
        task.agent_http_address, task.id
    );
    let resp = match s.http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the agent of task {} ({}) cannot be reached: {e}",
                    task.id, task.agent_http_address
                ),
            );
        }
    };
    let status = resp.status().as_u16();
    let mut headers = Vec::new();
    for h in ["x-agora-log-offset", "x-agora-log-size", "content-type"] {
        if let Some(v) = resp.headers().get(h) {
            headers.push((h, v.as_bytes().to_vec()));
        }
    }
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_GATEWAY,
                format!("reading the logs of task {} from its agent: {e}", task.id),
            );
        }
    };
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in headers {
        if let Ok(v) = warp::http::HeaderValue::from_bytes(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    if let Ok(v) = warp::http::HeaderValue::from_str(&task.id) {
        r.headers_mut().insert("x-agora-task-id", v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(decode("a%20b+c"), "a b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%é1"), "%é1");
    }

    #[test]
    fn bodies_that_are_not_json_are_400_and_wrong_shapes_422_with_the_path() {
        let r = parse::<JobSpec>(b"{not json").unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r =
            parse::<JobSpec>(br#"{"id": "a", "run": {"cmd": "x", "cpus": "many"}}"#).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = parse::<JobSpec>(br#"{"id": "a", "run": {"cmd": "x", "colour": 1}}"#).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r =
            parse::<JobSpec>(br#"{"id": "a", "run": {"cmd": "x", "cpus": 1e999}}"#).unwrap_err();
        assert!(r.status().is_client_error());
    }

    #[test]
    fn run_suffixes_are_five_safe_characters() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
