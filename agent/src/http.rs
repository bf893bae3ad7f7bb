//! The agent's HTTP endpoints:
//!
//! * `GET /health` -> `200 ok`; `503` with the reason while checkpoint
//!   writes fail
//! * `GET /metrics` -> Prometheus text format (tasks by state, pending
//!   status updates, checkpoint writes and failures, containerizer errors,
//!   launch latency)
//! * `GET /state` -> the agent, its frameworks and tasks as JSON
//! * `GET /tasks/{id}/logs?stream=stdout|stderr[&framework_id=F][&offset=N]`
//!   -> the task's output from byte `offset` on (at most 8 MiB per
//!   request), as `text/plain`; headers `X-Agora-Log-Offset` (where this
//!   chunk starts) and `X-Agora-Log-Size` (the file's size) let a client
//!   follow the file.
//!
//! Errors are JSON `{"message": "..."}`: 400 for bad parameters, 404 for an
//! unknown task or path, 503 while the agent shuts down. Errors are mapped to
//! HTTP replies here and nowhere else.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use warp::http::{StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::core::{CoreHandle, SandboxLookupError};
use crate::metrics::AgentMetrics;

/// The most a single logs request returns.
const MAX_LOG_CHUNK: u64 = 8 * 1024 * 1024;

/// An HTTP error reply.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response {
        let body = warp::reply::json(&serde_json::json!({ "message": self.message }));
        warp::reply::with_status(body, self.status).into_response()
    }
}

fn stopped() -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is shutting down",
    )
}

/// All routes.
pub(crate) fn routes(
    core: CoreHandle,
    metrics: AgentMetrics,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_core = warp::any().map(move || core.clone());
    let with_metrics = warp::any().map(move || metrics.clone());

    let health = warp::path!("health")
        .and(warp::get())
        .and(with_metrics.clone())
        .map(|metrics: AgentMetrics| match metrics.checkpoint_error() {
            None => {
                warp::reply::with_header("ok", header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .into_response()
            }
            Some(reason) => HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: checkpoint writes fail: {reason}"),
            )
            .into_response(),
        });

    let metrics_route = warp::path!("metrics")
        .and(warp::get())
        .and(with_metrics)
        .and(with_core.clone())
        .then(|metrics: AgentMetrics, core: CoreHandle| async move {
            match core.counts().await {
                Ok(counts) => warp::reply::with_header(
                    metrics.render(&counts),
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .into_response(),
                Err(_) => stopped().into_response(),
            }
        });

    let state = warp::path!("state")
        .and(warp::get())
        .and(with_core.clone())
        .then(|core: CoreHandle| async move {
            match core.state().await {
                Ok(view) => warp::reply::json(&view).into_response(),
                Err(_) => stopped().into_response(),
            }
        });

    let logs = warp::path!("tasks" / String / "logs")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_core)
        .then(
            |task_id: String, query: HashMap<String, String>, core: CoreHandle| async move {
                task_logs(core, task_id, query)
                    .await
                    .unwrap_or_else(HttpError::into_response)
            },
        );

    health
        .or(metrics_route)
        .unify()
        .or(state)
        .unify()
        .or(logs)
        .unify()
        .recover(rejection)
        .unify()
}

async fn rejection(r: Rejection) -> Result<Response, Infallible> {
    let e = if r.is_not_found() {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "no such endpoint: try /health, /state, /metrics or /tasks/{id}/logs",
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        HttpError::new(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here")
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        HttpError::new(StatusCode::BAD_REQUEST, "the query string does not parse")
    } else {
        HttpError::new(StatusCode::BAD_REQUEST, format!("bad request: {r:?}"))
    };
    Ok(e.into_response())
}

async fn task_logs(
    core: CoreHandle,
    task_id: String,
    query: HashMap<String, String>,
) -> Result<Response, HttpError> {
    let stream = match query.get("stream").map(String::as_str) {
        None | Some("stdout") => "stdout",
        Some("stderr") => "stderr",
        Some(other) => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                format!("stream must be `stdout` or `stderr`, not `{other}`"),
            ));
        }
    };
    let offset: u64 = match query.get("offset") {
        None => 0,
        Some(o) => o.parse().map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                format!("offset must be a byte offset (a whole number >= 0), not `{o}`"),
            )
        })?,
    };
    let framework_id = query.get("framework_id").cloned();
    let sandbox: PathBuf = match core.sandbox(task_id.clone(), framework_id.clone()).await {
        Err(_) => return Err(stopped()),
        Ok(Ok(p)) => p,
        Ok(Err(SandboxLookupError::Unknown)) => {
            let of = framework_id
                .map(|f| format!(" of framework `{f}`"))
                .unwrap_or_default();
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                format!("this agent has no task `{task_id}`{of}"),
            ));
        }
        Ok(Err(SandboxLookupError::Ambiguous(frameworks))) => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "task `{task_id}` exists in several frameworks ({}): add framework_id=...",
                    frameworks.join(", ")
                ),
            ));
        }
    };
    let path = sandbox.join(stream);
    let (size, body) = read_chunk(&path, offset).await.map_err(|e| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            format!("the task's {stream} cannot be read: {e} (its sandbox may have been removed)"),
        )
    })?;
    let mut resp = Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-agora-log-offset", offset.min(size).into());
    h.insert("x-agora-log-size", size.into());
    Ok(resp)
}

/// Reads from `offset` to the end (or `MAX_LOG_CHUNK` bytes); a file not yet
/// created reads as empty.
async fn read_chunk(path: &std::path::Path, offset: u64) -> std::io::Result<(u64, Vec<u8>)> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.parent().is_some_and(|p| p.is_dir()) {
                return Ok((0, Vec::new()));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let size = f.metadata().await?.len();
    if offset >= size {
        return Ok((size, Vec::new()));
    }
    f.seek(SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    f.take(MAX_LOG_CHUNK).read_to_end(&mut buf).await?;
    Ok((size, buf))
}
