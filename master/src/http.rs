//! The master's HTTP endpoints: `/health`, `/version`, `/state`, `/metrics`,
//! and the web UI (`/`, `/ui/...`).
//! Every error is JSON `{"message": "..."}` with a 4xx/5xx status.
//!
//! Any master answers `/health`, `/version`, `/state` (which says who leads:
//! `elected`, `leader`) and `/metrics` (`agora_master_elected`). A master that
//! does not lead answers every other path with `307` to the leader
//! (`Location: //host:port/path`, as Mesos does), or `503` while nobody
//! leads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agora_proto::v1::MasterInfo;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::{Filter, Rejection};

use crate::actor::Input;
use crate::core::view::{FrameworkRef, TaskLookupError, TaskQuery, WebUiLookupError};
use crate::grpc::address_of;
use crate::leadership::{self, NotLeading, Role, Term};
use crate::metrics::Metrics;
use crate::proxy::{Forward, Proxy, Upstream, gateway_error, wants_html};

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct HttpContext {
    pub role: watch::Receiver<Role>,
    pub metrics: Metrics,
    /// This master (the id of its first term).
    pub me: MasterInfo,
    /// `host:port` of this master.
    pub address: String,
    /// Forwards to frameworks' web UIs and agents' task logs.
    pub proxy: Proxy,
    /// The latest `/state-summary`, for the UI's event streams.
    pub feed: SummaryFeed,
    /// Ends long-lived answers (event streams, followed logs) on shutdown.
    pub shutdown: CancellationToken,
    /// Why the master is stopping by itself (a part of it failed): `/health`
    /// then answers 503 with it.
    pub fatal: Arc<OnceLock<String>>,
    /// Whether the test-only fault hooks are served.
    pub fault_hooks: bool,
    /// Every master contending in ZooKeeper, the leader first (empty for
    /// a standalone master).
    pub masters: watch::Receiver<Vec<MasterInfo>>,
    /// The Mesos scheduler API's subscriptions.
    pub mesos: crate::mesos::MesosApi,
}

/// How often the summary streamed to the UI is refreshed while someone
/// watches it.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// How often a followed task log is read again while it does not grow.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The summary that `/state-summary/events` streams: computed once per
/// [`SUMMARY_EVERY`] for all watchers, and only while someone watches.
#[derive(Clone)]
pub(crate) struct SummaryFeed {
    latest: watch::Sender<Option<Arc<String>>>,
    wake: Arc<Notify>,
}

impl SummaryFeed {
    pub(crate) fn new() -> SummaryFeed {
        SummaryFeed {
            latest: watch::channel(None).0,
            wake: Arc::new(Notify::new()),
        }
    }

    fn subscribe(&self) -> watch::Receiver<Option<Arc<String>>> {
        let rx = self.latest.subscribe();
        self.wake.notify_one();
        rx
    }
}

/// Keeps the summary feed fresh while anyone watches; runs until shutdown.
pub(crate) async fn run_summary_feed(ctx: HttpContext) {
    let feed = ctx.feed.clone();
    loop {
        if feed.latest.receiver_count() == 0 {
            feed.latest.send_replace(None);
            tokio::select! {
                _ = feed.wake.notified() => {}
                _ = ctx.shutdown.cancelled() => return,
            }
            continue;
        }
        let summary = match leadership::current_term(&ctx.role).await {
            Ok(term) => ask(&term, Input::Summary).await.ok(),
            Err(not) => Some(standby_state(&ctx, &not)),
        };
        if let Some(v) = summary {
            let text = with_standbys(&ctx, v).to_string();
            feed.latest.send_if_modified(|old| {
                if old.as_deref().map(String::as_str) == Some(text.as_str()) {
                    false
                } else {
                    *old = Some(Arc::new(text));
                    true
                }
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(SUMMARY_EVERY) => {}
            _ = ctx.shutdown.cancelled() => return,
        }
    }
}

/// A JSON error reply.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply::with_status(reply::json(&json!({ "message": message.into() })), status).into_response()
}

async fn ask<T>(
    term: &Term,
    make: impl FnOnce(oneshot::Sender<T>) -> Input,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master stepped down or is shutting down; ask the leading master",
        )
    };
    term.actor.send(make(tx)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

/// The leader's `host:port`, as `/state` shows it.
fn leader_json(leader: &MasterInfo) -> serde_json::Value {
    json!({
        "id": leader.id,
        "hostname": leader.hostname,
        "address": address_of(leader),
    })
}

/// Adds `standbys` to a summary: the masters contending in ZooKeeper
/// after the leader, as the detector last saw them.
fn with_standbys(ctx: &HttpContext, mut summary: serde_json::Value) -> serde_json::Value {
    let standbys: Vec<serde_json::Value> = ctx
        .masters
        .borrow()
        .iter()
        .skip(1)
        .map(leader_json)
        .collect();
    summary["standbys"] = standbys.into();
    summary
}

/// `/state` of a master that does not lead: who it is and who leads.
fn standby_state(ctx: &HttpContext, not: &NotLeading) -> serde_json::Value {
    json!({
        "version": agora_proto::VERSION,
        "id": ctx.me.id,
        "hostname": ctx.me.hostname,
        "address": ctx.address,
        "elected": false,
        "leader": not.leader.as_ref().map(leader_json),
        "agents": [],
        "frameworks": [],
        "completed_frameworks": [],
    })
}

/// `307` to the leader, or `503` while nobody leads.
pub(crate) fn redirect(not: &NotLeading, path: &str, query: Option<&str>) -> Response {
    match &not.leader {
        Some(leader) => {
            let location = match query {
                Some(q) if !q.is_empty() => format!("//{}{path}?{q}", address_of(leader)),
                _ => format!("//{}{path}", address_of(leader)),
            };
            let mut r = error(
                StatusCode::TEMPORARY_REDIRECT,
                format!(
                    "this master is not the leader; the leading master is at {}",
                    address_of(leader)
                ),
            );
            if let Ok(v) = warp::http::HeaderValue::from_str(&location) {
                r.headers_mut().insert(warp::http::header::LOCATION, v);
            }
            r
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no master leads at the moment (an election is under way); retry shortly",
        ),
    }
}

/// Whether this master is alive: not stopping after a failure, and, while
/// it leads, with its core's actor running. `Err` says what is wrong.
fn health(ctx: &HttpContext) -> Result<(), String> {
    if let Some(reason) = ctx.fatal.get() {
        return Err(format!("the master is stopping: {reason}"));
    }
    if let Role::Leading(term) = &*ctx.role.borrow()
        && !term.cancel.is_cancelled()
        && term.actor.is_closed()
    {
        return Err("the master's core stopped; the master is about to resign".into());
    }
    Ok(())
}

/// Paths every master answers itself.
const ANSWERED_BY_ANY_MASTER: [&str; 6] = [
    "/health",
    "/version",
    "/state",
    "/state-summary",
    "/state-summary/events",
    "/metrics",
];

pub(crate) fn routes(
    ctx: HttpContext,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with = move || {
        let ctx = ctx.clone();
        warp::any().map(move || ctx.clone())
    };
    // A standby sends everything else to the leader.
    let standby = warp::path::full()
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(with())
        .and_then(
            |path: warp::path::FullPath, query: Option<String>, ctx: HttpContext| async move {
                if ANSWERED_BY_ANY_MASTER.contains(&path.as_str()) {
                    return Err(warp::reject::not_found());
                }
                match leadership::current_term(&ctx.role).await {
                    Ok(_) => Err(warp::reject::not_found()),
                    Err(not) => Ok(redirect(&not, path.as_str(), query.as_deref())),
                }
            },
        );
    let health = warp::path!("health")
        .and(warp::get())
        .and(with())
        .map(|ctx: HttpContext| match health(&ctx) {
            Ok(()) => reply::with_header("ok", "content-type", "text/plain").into_response(),
            Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason),
        });
    let fault_hooks = warp::path!("debug" / "faults" / "panic-core")
        .and(warp::post())
        .and(with())
        .and_then(|ctx: HttpContext| async move {
            if !ctx.fault_hooks {
                return Err(warp::reject::not_found());
            }
            Ok(match leadership::current_term(&ctx.role).await {
                Ok(term) => {
                    let _ = term.actor.send(Input::Panic).await;
                    reply::with_status("the core was asked to panic", StatusCode::ACCEPTED)
                        .into_response()
                }
                Err(_) => error(StatusCode::CONFLICT, "this master does not lead"),
            })
        });
    let version = warp::path!("version")
        .and(warp::get())
        .map(|| reply::json(&json!({ "version": agora_proto::VERSION })).into_response());
    let state =
        warp::path!("state")
            .and(warp::get())
            .and(with())
            .then(|ctx: HttpContext| async move {
                match leadership::current_term(&ctx.role).await {
                    Ok(term) => match ask(&term, Input::State).await {
                        Ok(v) => reply::json(&v).into_response(),
                        Err(r) => r,
                    },
                    Err(not) => reply::json(&standby_state(&ctx, &not)).into_response(),
                }
            });
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(with())
            .then(|ctx: HttpContext| async move {
                let text = match leadership::current_term(&ctx.role).await {
                    Ok(term) => match ask(&term, Input::Counts).await {
                        Ok(counts) => with_elected(ctx.metrics.render(&counts), true),
                        Err(r) => return r,
                    },
                    Err(_) => with_elected("# EOF\n".to_string(), false),
                };
                reply::with_header(
                    text,
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .into_response()
            });
    let summary = warp::path!("state-summary")
        .and(warp::get())
        .and(with())
        .then(|ctx: HttpContext| async move {
            match leadership::current_term(&ctx.role).await {
                Ok(term) => match ask(&term, Input::Summary).await {
                    Ok(v) => reply::json(&with_standbys(&ctx, v)).into_response(),
                    Err(r) => r,
                },
                Err(not) => {
                    reply::json(&with_standbys(&ctx, standby_state(&ctx, &not))).into_response()
                }
            }
        });
    let summary_events = warp::path!("state-summary" / "events")
        .and(warp::get())
        .and(with())
        .map(summary_stream);
    let tasks = warp::path!("tasks")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with())
        .then(list_tasks);
    let task_logs = warp::path!("tasks" / String / "logs")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(with())
        .then(task_logs);
    let proxied = warp::path::full()
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .and(with())
        .and_then(
            |path: warp::path::FullPath,
             query: Option<String>,
             method: warp::http::Method,
             headers: warp::http::HeaderMap,
             remote: Option<std::net::SocketAddr>,
             body,
             ctx: HttpContext| async move {
                let Some((key, mount, rest)) = proxied_path(path.as_str()) else {
                    return Err(warp::reject::not_found());
                };
                let body = match read_body(body).await {
                    Ok(b) => b,
                    Err(r) => return Ok(r),
                };
                let req = Forward {
                    method,
                    headers,
                    body,
                    remote,
                };
                Ok::<_, Rejection>(proxy_to_framework(ctx, key, mount, rest, query, req).await)
            },
        );
    let mesos_scheduler = warp::path!("api" / "v1" / "scheduler")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with())
        .then(
            |headers: warp::http::HeaderMap, body, ctx: HttpContext| async move {
                match read_body(body).await {
                    Ok(body) => {
                        crate::mesos::scheduler(ctx.mesos.clone(), ctx.role.clone(), headers, body)
                            .await
                    }
                    Err(r) => r,
                }
            },
        );
    // Mesos's names for `/state`, for tools that read a Mesos master.
    let mesos_state = warp::path!("master" / "state")
        .or(warp::path!("state.json"))
        .unify()
        .and(warp::get())
        .and(with())
        .then(|ctx: HttpContext| async move {
            match leadership::current_term(&ctx.role).await {
                Ok(term) => match ask(&term, Input::State).await {
                    Ok(v) => reply::json(&crate::mesos::state::master_state(&v)).into_response(),
                    Err(r) => r,
                },
                Err(not) => redirect(&not, "/master/state", None),
            }
        });
    let page = warp::path::end()
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|etag: Option<String>| crate::ui::file("index.html", etag.as_deref()));
    let assets = warp::path("ui")
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|tail: warp::path::Tail, etag: Option<String>| {
            crate::ui::file(tail.as_str(), etag.as_deref())
        });
    standby
        .or(page)
        .unify()
        .or(assets)
        .unify()
        .or(health)
        .unify()
        .or(fault_hooks)
        .unify()
        .or(version)
        .unify()
        .or(state)
        .unify()
        .or(metrics)
        .unify()
        .or(summary)
        .unify()
        .or(summary_events)
        .unify()
        .or(task_logs)
        .unify()
        .or(tasks)
        .unify()
        .or(mesos_scheduler)
        .unify()
        .or(mesos_state)
        .unify()
        .or(proxied)
        .unify()
        .recover(rejection)
        .unify()
}

/// `/state-summary/events`: Server-Sent Events, one `summary` event with
/// the whole summary whenever it changes (at most once per
/// [`SUMMARY_EVERY`]); the first at once. On a standby the summary says
/// who leads (`elected: false`, `leader`), so that the UI can follow.
fn summary_stream(ctx: HttpContext) -> Response {
    let mut rx = ctx.feed.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<warp::sse::Event, Infallible>>(4);
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let current = rx.borrow_and_update().clone();
            if let Some(text) = current {
                let ev = warp::sse::Event::default()
                    .event("summary")
                    .data(text.as_str());
                if tx.send(Ok(ev)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out);
    let mut r = warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response();
    r.headers_mut().insert(
        "x-accel-buffering",
        warp::http::HeaderValue::from_static("no"),
    );
    r
}

/// A query parameter that must be a whole number.
// The error is the reply itself, returned at once by the handler.
#[allow(clippy::result_large_err)]
fn number(q: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, Response> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("{key} must be a whole number >= 0, not `{v}`"),
            )
        }),
    }
}

/// The most tasks `/tasks` lists at once.
const MAX_TASKS_LISTED: u64 = 10_000;

/// `/tasks?state=&framework_id=&agent_id=&limit=&offset=`: tasks, active
/// ones first, newest first: `{"total": n, "tasks": [...]}`.
async fn list_tasks(q: HashMap<String, String>, ctx: HttpContext) -> Response {
    let limit = match number(&q, "limit", 100) {
        Ok(n) if n <= MAX_TASKS_LISTED => n as usize,
        Ok(n) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit may be at most {MAX_TASKS_LISTED}, not {n}"),
            );
        }
        Err(r) => return r,
    };
    let offset = match number(&q, "offset", 0) {
        Ok(n) => n as usize,
        Err(r) => return r,
    };
    let state = q.get("state").filter(|s| !s.is_empty()).cloned();
    if let Some(s) = &state
        && agora_proto::v1::TaskState::from_str_name(s).is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("state `{s}` is not a task state (TASK_RUNNING, TASK_FINISHED, ...)"),
        );
    }
    let query = TaskQuery {
        state,
        framework_id: q.get("framework_id").filter(|s| !s.is_empty()).cloned(),
        agent_id: q.get("agent_id").filter(|s| !s.is_empty()).cloned(),
        limit,
        offset,
    };
    let term = match leadership::current_term(&ctx.role).await {
        Ok(t) => t,
        Err(not) => return redirect(&not, "/tasks", None),
    };
    match ask(&term, |tx| Input::Tasks(query, tx)).await {
        Ok(v) => reply::json(&v).into_response(),
        Err(r) => r,
    }
}

/// `/tasks/{id}/logs?stream=stdout|stderr&framework_id=&offset=&follow=`:
/// the task's output from its agent, wherever it runs. With
/// `follow=true` the answer goes on as the output grows, and ends once
/// the task has ended and everything it wrote was sent.
async fn task_logs(
    task_id: String,
    q: HashMap<String, String>,
    headers: warp::http::HeaderMap,
    ctx: HttpContext,
) -> Response {
    let html = wants_html(&headers);
    let stream = match q.get("stream").map(String::as_str) {
        None | Some("stdout") => "stdout",
        Some("stderr") => "stderr",
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("stream must be `stdout` or `stderr`, not `{other}`"),
            );
        }
    };
    let offset = match number(&q, "offset", 0) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let follow = match q.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("follow must be `true` or `false`, not `{other}`"),
            );
        }
    };
    let framework_id = q.get("framework_id").filter(|s| !s.is_empty()).cloned();
    let locate = {
        let ctx = ctx.clone();
        let task_id = task_id.clone();
        let framework_id = framework_id.clone();
        move || {
            let ctx = ctx.clone();
            let task_id = task_id.clone();
            let framework_id = framework_id.clone();
            async move {
                let term = match leadership::current_term(&ctx.role).await {
                    Ok(t) => t,
                    Err(not) => return Err(redirect(&not, "/tasks", None)),
                };
                let found = ask(&term, |reply| Input::TaskLocation {
                    task_id: task_id.clone(),
                    framework_id,
                    reply,
                })
                .await?;
                found.map_err(|e| match e {
                    TaskLookupError::Unknown => error(
                        StatusCode::NOT_FOUND,
                        format!("the master knows no task `{task_id}`"),
                    ),
                    TaskLookupError::Ambiguous(ids) => error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "task `{task_id}` exists in several frameworks ({}): add \
                             framework_id=...",
                            ids.join(", ")
                        ),
                    ),
                    TaskLookupError::AgentGone(agent) => error(
                        StatusCode::NOT_FOUND,
                        format!(
                            "task `{task_id}` ran on agent {agent}, which the master no longer \
                             knows; its logs are gone with it"
                        ),
                    ),
                })
            }
        }
    };
    let at = match locate().await {
        Ok(at) => at,
        Err(r) => return r,
    };
    if at.agent_http_address.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "agent {} serves no HTTP endpoint, so task `{task_id}`'s logs cannot be read",
                at.agent_id
            ),
        );
    }
    let base = format!(
        "http://{}/tasks/{}/logs?stream={stream}&framework_id={}",
        at.agent_http_address,
        encode(&task_id),
        encode(&at.framework_id)
    );
    let url_at = move |offset: u64| format!("{base}&offset={offset}");
    let what = format!("agent {} ({})", at.agent_id, at.agent_http_address);
    if !follow {
        return match ctx.proxy.get(&url_at(offset)).await {
            Ok((status, h, body)) => {
                let mut r = Response::new(body.into());
                *r.status_mut() = status;
                for name in ["content-type", "x-agora-log-offset", "x-agora-log-size"] {
                    if let Some(v) = h.get(name) {
                        r.headers_mut().insert(name, v.clone());
                    }
                }
                r
            }
            Err(why) => gateway_error(
                StatusCode::BAD_GATEWAY,
                &format!("{what} does not answer ({why}); it may be down"),
                html,
            ),
        };
    }
    // Follow: the first read decides the status; then read on.
    let (status, h, first) = match ctx.proxy.get(&url_at(offset)).await {
        Ok(x) => x,
        Err(why) => {
            return gateway_error(
                StatusCode::BAD_GATEWAY,
                &format!("{what} does not answer ({why}); it may be down"),
                html,
            );
        }
    };
    if !status.is_success() {
        let mut r = Response::new(first.into());
        *r.status_mut() = status;
        if let Some(v) = h.get("content-type") {
            r.headers_mut().insert("content-type", v.clone());
        }
        return r;
    }
    let start = h
        .get("x-agora-log-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(offset);
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let proxy = ctx.proxy.clone();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        let mut next = start + first.len() as u64;
        if !first.is_empty() && tx.send(Ok(first)).await.is_err() {
            return;
        }
        // After the task ended, one more read takes what it wrote last.
        let mut ended = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            }
            let was_ended = ended;
            if !ended {
                ended = match locate().await {
                    Ok(at) => at.ended,
                    Err(_) => true,
                };
            }
            let chunk = match proxy.get(&url_at(next)).await {
                Ok((s, _, b)) if s.is_success() => b,
                // The sandbox is gone or the agent is down: nothing more.
                _ => return,
            };
            if chunk.is_empty() {
                if was_ended {
                    return;
                }
                continue;
            }
            next += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let mut r =
        warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(out)).into_response();
    let hs = r.headers_mut();
    hs.insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    hs.insert("x-agora-log-offset", start.into());
    hs.insert(
        "x-accel-buffering",
        warp::http::HeaderValue::from_static("no"),
    );
    hs.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request body of at most [`crate::proxy::MAX_BODY`] bytes.
async fn read_body<S, B>(body: S) -> Result<Bytes, Response>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            )
        })?;
        if out.len() + chunk.remaining() > crate::proxy::MAX_BODY as usize {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes",
                    crate::proxy::MAX_BODY
                ),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// The framework a proxied path is for, its mount point, and the rest of
/// the path (starting with `/`).
fn proxied_path(path: &str) -> Option<(FrameworkRef, String, String)> {
    let split = |rest: &str| {
        if rest.is_empty() {
            Some("/".to_string())
        } else if rest.starts_with('/') {
            Some(rest.to_string())
        } else {
            None
        }
    };
    for (short, name) in [("/services", "agora-services"), ("/batch", "agora-batch")] {
        if let Some(rest) = path.strip_prefix(short) {
            return Some((
                FrameworkRef::Name(name.to_string()),
                short.to_string(),
                split(rest)?,
            ));
        }
    }
    let rest = path.strip_prefix("/frameworks/")?;
    let (id, rest) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if id.is_empty() {
        return None;
    }
    Some((
        FrameworkRef::Id(id.to_string()),
        format!("/frameworks/{id}"),
        split(rest)?,
    ))
}

async fn proxy_to_framework(
    ctx: HttpContext,
    key: FrameworkRef,
    mount: String,
    rest: String,
    query: Option<String>,
    req: Forward,
) -> Response {
    let html = wants_html(&req.headers);
    let term = match leadership::current_term(&ctx.role).await {
        Ok(t) => t,
        Err(not) => return redirect(&not, &format!("{mount}{rest}"), query.as_deref()),
    };
    let target = match ask(&term, |tx| Input::WebUi(key.clone(), tx)).await {
        Ok(Ok(t)) => t,
        Ok(Err(WebUiLookupError::Unknown(k))) => {
            let what = match k {
                FrameworkRef::Id(id) => format!("no framework with id `{id}` is known"),
                FrameworkRef::Name(name) => format!(
                    "no framework named `{name}` is subscribed; start it (it announces its \
                     web address when it subscribes)"
                ),
            };
            return gateway_error(StatusCode::NOT_FOUND, &what, html);
        }
        Ok(Err(WebUiLookupError::NoWebUi { framework_id, name })) => {
            return gateway_error(
                StatusCode::NOT_FOUND,
                &format!("framework {name} ({framework_id}) announced no web address (webui_url)"),
                html,
            );
        }
        Err(r) => return r,
    };
    let what = if target.connected {
        format!("framework {} ({})", target.name, target.framework_id)
    } else {
        format!(
            "framework {} ({}, disconnected from the master)",
            target.name, target.framework_id
        )
    };
    let upstream = Upstream {
        url: target.url.join(&rest, query.as_deref()),
        base: target.url.join("", None),
        mount,
        what,
    };
    ctx.proxy.forward(&upstream, req).await
}

/// Adds `agora_master_elected` (1 while this master leads) to metrics text.
fn with_elected(text: String, elected: bool) -> String {
    let gauge = format!(
        "# HELP agora_master_elected Whether this master leads (1) or stands by (0).\n\
         # TYPE agora_master_elected gauge\nagora_master_elected {}\n",
        u8::from(elected)
    );
    match text.rfind("# EOF") {
        Some(i) => format!("{}{gauge}{}", &text[..i], &text[i..]),
        None => text + &gauge,
    }
}

/// Turns warp's rejections into JSON errors.
pub(crate) async fn rejection(r: Rejection) -> Result<Response, Infallible> {
    let reply = if r.is_not_found() {
        error(StatusCode::NOT_FOUND, "no such endpoint")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint",
        )
    } else if let Some(e) = r.find::<warp::filters::body::BodyDeserializeError>() {
        error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        error(StatusCode::BAD_REQUEST, format!("invalid query: {e}"))
    } else {
        error(StatusCode::BAD_REQUEST, format!("bad request: {r:?}"))
    };
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standbys_redirect_like_mesos_or_say_nobody_leads() {
        let leader = MasterInfo {
            id: "m1".into(),
            hostname: "m1".into(),
            ip: "10.0.0.1".into(),
            port: 5050,
            version: String::new(),
        };
        let r = redirect(
            &NotLeading {
                leader: Some(leader),
            },
            "/api/v1/scheduler",
            Some("a=1"),
        );
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            r.headers()["location"],
            "//10.0.0.1:5050/api/v1/scheduler?a=1"
        );
        let r = redirect(&NotLeading { leader: None }, "/x", None);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_elected_gauge_goes_before_the_end_marker() {
        let t = with_elected("a 1\n# EOF\n".into(), true);
        assert!(t.ends_with("agora_master_elected 1\n# EOF\n"), "{t}");
        let t = with_elected(String::new(), false);
        assert!(t.contains("agora_master_elected 0"));
    }
}
