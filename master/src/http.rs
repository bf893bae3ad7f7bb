//! The master's HTTP endpoints: `/health`, `/version`, `/state`, `/metrics`.
//! Every error is JSON `{"message": "..."}` with a 4xx/5xx status.

use std::convert::Infallible;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::{Filter, Rejection};

use crate::actor::Input;
use crate::metrics::Metrics;

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct HttpContext {
    pub actor: mpsc::Sender<Input>,
    pub metrics: Metrics,
}

/// A JSON error reply.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply::with_status(reply::json(&json!({ "message": message.into() })), status).into_response()
}

async fn ask<T>(
    ctx: &HttpContext,
    make: impl FnOnce(oneshot::Sender<T>) -> Input,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        )
    };
    ctx.actor.send(make(tx)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

pub(crate) fn routes(
    ctx: HttpContext,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with = move || {
        let ctx = ctx.clone();
        warp::any().map(move || ctx.clone())
    };
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| reply::with_header("ok", "content-type", "text/plain").into_response());
    let version = warp::path!("version")
        .and(warp::get())
        .map(|| reply::json(&json!({ "version": agora_proto::VERSION })).into_response());
    let state =
        warp::path!("state")
            .and(warp::get())
            .and(with())
            .then(|ctx: HttpContext| async move {
                match ask(&ctx, Input::State).await {
                    Ok(v) => reply::json(&v).into_response(),
                    Err(r) => r,
                }
            });
    let metrics =
        warp::path!("metrics")
            .and(warp::get())
            .and(with())
            .then(|ctx: HttpContext| async move {
                match ask(&ctx, Input::Counts).await {
                    Ok(counts) => reply::with_header(
                        ctx.metrics.render(&counts),
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .into_response(),
                    Err(r) => r,
                }
            });
    health
        .or(version)
        .unify()
        .or(state)
        .unify()
        .or(metrics)
        .unify()
        .recover(rejection)
        .unify()
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
