//! HTTP pieces every framework API needs (warp).
//!
//! * [`leader_only`]: passes on the leader; on a standby, rejects so that
//!   [`handle_rejection`] answers `307` to the same path and query on the
//!   leader (`503` while nobody leads).
//! * [`EventBus`]: events broadcast to Server-Sent-Event subscribers.
//! * [`json_error`] and [`handle_rejection`]: every error is JSON
//!   `{"message": ...}`; bad input is a 4xx, never a 5xx.
//!
//! ```no_run
//! # use agora_framework_kit::{election::Role, http};
//! # use warp::Filter;
//! # fn routes(role: tokio::sync::watch::Receiver<Role>) {
//! let ping = warp::path!("ping").map(|| "pong");
//! let apps = warp::path!("v2" / "apps").map(|| warp::reply::json(&serde_json::json!({"apps": []})));
//! let api = ping
//!     .or(http::leader_only(role).and(apps))
//!     .recover(http::handle_rejection);
//! # }
//! ```

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::election::Role;

/// The largest JSON body [`json_body`] reads.
pub const MAX_JSON_BODY: u64 = 1024 * 1024;

/// How often an idle event stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A JSON error reply: `{"message": message}` with `status`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    warp::reply::with_status(
        warp::reply::json(&json!({ "message": message.into() })),
        status,
    )
    .into_response()
}

/// Why a standby did not serve a request (rendered by
/// [`handle_rejection`]).
#[derive(Debug)]
pub struct NotLeader {
    /// `host:port` of the leader, when one is known.
    pub leader: Option<String>,
    /// The request's path and query, to redirect to.
    pub path_and_query: String,
}

impl warp::reject::Reject for NotLeader {}

/// Passes requests on the leader; on a standby (or before the election
/// answered) rejects with [`NotLeader`], which [`handle_rejection`] turns
/// into `307` to the leader or `503`. Wrap every route but those a standby
/// answers itself (`/ping`, `/v2/leader`, `/v2/info` ...).
pub fn leader_only(
    role: watch::Receiver<Role>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::path::full()
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and_then(move |path: warp::path::FullPath, query: Option<String>| {
            let role = role.borrow().clone();
            async move {
                let leader = match role {
                    Role::Leading => return Ok(()),
                    Role::Standby { leader } => leader,
                    Role::Starting => None,
                };
                let path_and_query = match query {
                    Some(q) if !q.is_empty() => format!("{}?{q}", path.as_str()),
                    _ => path.as_str().to_string(),
                };
                Err(warp::reject::custom(NotLeader {
                    leader,
                    path_and_query,
                }))
            }
        })
        .untuple_one()
}

/// A JSON body of at most [`MAX_JSON_BODY`] bytes; a malformed one is
/// rejected so that [`handle_rejection`] answers `400` saying why.
pub fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_JSON_BODY).and(warp::body::json())
}

/// Turns rejections into JSON errors: [`NotLeader`] into `307`/`503`,
/// warp's own into the 4xx they stand for (a body that is not valid JSON
/// for the route: `400` with serde's message). A rejection nobody handled
/// is a bug of the service: `500`, logged.
pub async fn handle_rejection(r: Rejection) -> Result<Response, Infallible> {
    use warp::reject;
    if let Some(not) = r.find::<NotLeader>() {
        return Ok(match &not.leader {
            Some(leader) => {
                let mut reply = json_error(
                    StatusCode::TEMPORARY_REDIRECT,
                    format!("this instance is not the leader; the leader is at {leader}"),
                );
                let location = format!("http://{leader}{}", not.path_and_query);
                if let Ok(v) = warp::http::HeaderValue::from_str(&location) {
                    reply.headers_mut().insert(warp::http::header::LOCATION, v);
                }
                reply
            }
            None => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no instance leads at the moment (an election is under way); retry shortly",
            ),
        });
    }
    let reply = if r.is_not_found() {
        json_error(StatusCode::NOT_FOUND, "no such endpoint")
    } else if let Some(e) = r.find::<warp::filters::body::BodyDeserializeError>() {
        json_error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
    } else if let Some(e) = r.find::<reject::InvalidQuery>() {
        json_error(StatusCode::BAD_REQUEST, format!("invalid query: {e}"))
    } else if r.find::<reject::PayloadTooLarge>().is_some() {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_JSON_BODY} bytes"),
        )
    } else if r.find::<reject::LengthRequired>().is_some() {
        json_error(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required",
        )
    } else if let Some(e) = r.find::<reject::UnsupportedMediaType>() {
        json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string())
    } else if let Some(e) = r.find::<reject::MissingHeader>() {
        json_error(StatusCode::BAD_REQUEST, e.to_string())
    } else if let Some(e) = r.find::<reject::InvalidHeader>() {
        json_error(StatusCode::BAD_REQUEST, e.to_string())
    } else if r.find::<reject::MethodNotAllowed>().is_some() {
        json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint",
        )
    } else {
        tracing::error!(rejection = ?r, "unhandled rejection");
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unhandled rejection: {r:?}"),
        )
    };
    Ok(reply)
}

/// One event, serialized once for every subscriber.
#[derive(Debug)]
struct Published {
    kind: String,
    data: String,
}

/// Events broadcast to any number of Server-Sent-Event streams
/// (`event: <kind>` / `data: <json>`). Publishing never waits: a
/// subscriber that falls more than `capacity` events behind gets a final
/// comment and its stream ends (the client reconnects) instead of holding
/// the others up. Cheap to clone.
pub struct EventBus<T> {
    tx: broadcast::Sender<Arc<Published>>,
    _events: PhantomData<fn(T)>,
}

impl<T> Clone for EventBus<T> {
    fn clone(&self) -> Self {
        EventBus {
            tx: self.tx.clone(),
            _events: PhantomData,
        }
    }
}

impl<T: Serialize> EventBus<T> {
    /// A bus keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> EventBus<T> {
        EventBus {
            tx: broadcast::channel(capacity.max(1)).0,
            _events: PhantomData,
        }
    }

    /// Sends `event` as `kind` to every current subscriber; returns how
    /// many there are.
    pub fn publish(&self, kind: &str, event: &T) -> usize {
        if self.tx.receiver_count() == 0 {
            return 0;
        }
        let data = match serde_json::to_string(event) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(kind, "an event cannot be written as JSON: {e}");
                return 0;
            }
        };
        self.tx
            .send(Arc::new(Published {
                kind: kind.to_string(),
                data,
            }))
            .unwrap_or(0)
    }

    /// How many streams are open.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A new SSE stream of every event published from now on.
    pub fn reply(&self) -> impl Reply + use<T> {
        self.reply_with(Vec::new())
    }

    /// Like [`reply`](Self::reply), with `first` sent to this subscriber
    /// only before anything else (e.g. Marathon's `event_stream_attached`).
    pub fn reply_with(&self, first: Vec<(String, T)>) -> impl Reply + use<T> {
        let rx = self.tx.subscribe();
        let first: Vec<Result<warp::sse::Event, Infallible>> = first
            .into_iter()
            .filter_map(|(kind, event)| {
                let data = serde_json::to_string(&event).ok()?;
                Some(Ok(warp::sse::Event::default().event(kind).data(data)))
            })
            .collect();
        let live = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(p) => Some((
                    Ok(warp::sse::Event::default()
                        .event(p.kind.clone())
                        .data(p.data.clone())),
                    Some(rx),
                )),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((
                    Ok(warp::sse::Event::default().comment(format!(
                        "this stream fell {n} events behind and ends; reconnect"
                    ))),
                    None,
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        let stream = futures::StreamExt::chain(futures::stream::iter(first), live);
        warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(stream))
    }
}

#[cfg(test)]
mod tests;
