//! The master's HTTP endpoints: `/health`, `/version`, `/state`, `/metrics`.
//! Every error is JSON `{"message": "..."}` with a 4xx/5xx status.
//!
//! Any master answers `/health`, `/version`, `/state` (which says who leads:
//! `elected`, `leader`) and `/metrics` (`agora_master_elected`). A master that
//! does not lead answers every other path with `307` to the leader
//! (`Location: //host:port/path`, as Mesos does), or `503` while nobody
//! leads.

use std::convert::Infallible;

use agora_proto::v1::MasterInfo;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::{Filter, Rejection};

use crate::actor::Input;
use crate::grpc::address_of;
use crate::leadership::{self, NotLeading, Role, Term};
use crate::metrics::Metrics;

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct HttpContext {
    pub role: watch::Receiver<Role>,
    pub metrics: Metrics,
    /// This master (the id of its first term).
    pub me: MasterInfo,
    /// `host:port` of this master.
    pub address: String,
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
fn redirect(not: &NotLeading, path: &str, query: Option<&str>) -> Response {
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

/// Paths every master answers itself.
const ANSWERED_BY_ANY_MASTER: [&str; 4] = ["/health", "/version", "/state", "/metrics"];

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
        .map(|| reply::with_header("ok", "content-type", "text/plain").into_response());
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
    standby
        .or(health)
        .unify()
        .or(version)
        .unify()
        .or(state)
        .unify()
        .or(metrics)
        .unify()
        .recover(rejection)
        .unify()
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
