//! HTTP pieces every framework API needs (warp).
//!
//! * [`leader_only`]: passes on the leader; on a standby, rejects so that
//!   [`handle_rejection`] answers `307` to the same path and query on the
//!   leader (`503` while nobody leads).
//! * [`proxy_to_leader`]: on a standby, forwards the request to the leader
//!   and streams its answer back (`503` while nobody leads), so clients
//!   may talk to any instance.
//! * [`body_bytes`]: a request body of bounded size, with or without a
//!   `Content-Length`.
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
use tokio::sync::{broadcast, mpsc, watch};
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
    } else if let Some(e) = r.find::<BodyTooLarge>() {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", e.limit),
        )
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

/// Set on a request a standby forwards to the leader. An instance that gets
/// a forwarded request never forwards it again (two instances that each
/// think the other leads answer `503` instead of bouncing it).
pub const FORWARDED_BY: &str = "x-agora-forwarded-by";

/// Headers not passed through a proxy (RFC 9110, 7.6.1), plus the length,
/// which the proxy's own client sets.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// A body larger than [`body_bytes`] takes (rendered `413` by
/// [`handle_rejection`]).
#[derive(Debug)]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl warp::reject::Reject for BodyTooLarge {}

/// A request body of at most `limit` bytes: `413` when the declared
/// `Content-Length` is larger. Unlike warp's `content_length_limit`, a
/// request without a `Content-Length` (a GET) passes with an empty body.
pub fn body_bytes(limit: u64) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |length: Option<u64>| async move {
            match length {
                Some(n) if n > limit => Err(warp::reject::custom(BodyTooLarge { limit })),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::bytes())
}

/// On the leader: rejects (not found), so that the routes after it (`.or`)
/// serve the request. On a standby: forwards the request (method, path,
/// query, headers, body of at most `max_body` bytes) to the leader and
/// streams the leader's answer back, Server-Sent Events included; `503`
/// while nobody leads, or when the leader cannot be reached. `me` is this
/// instance's address, sent in [`FORWARDED_BY`].
///
/// ```no_run
/// # use agora_framework_kit::{election::Role, http};
/// # use warp::Filter;
/// # fn routes(role: tokio::sync::watch::Receiver<Role>) {
/// let ping = warp::path!("ping").map(|| "pong");
/// let apps = warp::path!("v2" / "apps").map(|| "the leader's apps");
/// let api = ping
///     .or(http::proxy_to_leader(role, reqwest::Client::new(), "10.0.0.1:8080".into(), 1 << 20))
///     .or(apps)
///     .recover(http::handle_rejection);
/// # }
/// ```
pub fn proxy_to_leader(
    role: watch::Receiver<Role>,
    client: reqwest::Client,
    me: String,
    max_body: u64,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let not_leading = warp::any().and_then(move || {
        let role = role.borrow().clone();
        async move {
            match role {
                Role::Leading => Err(warp::reject::not_found()),
                Role::Standby { leader } => Ok(leader),
                Role::Starting => Ok(None),
            }
        }
    });
    not_leading
        .and(warp::method())
        .and(warp::path::full())
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |leader: Option<String>,
                  method: warp::http::Method,
                  path: warp::path::FullPath,
                  query: Option<String>,
                  headers: warp::http::HeaderMap,
                  body| {
                let client = client.clone();
                let me = me.clone();
                async move {
                    // Once not leading, every answer comes from here (a
                    // rejection would let the leader's routes serve).
                    let Some(body) = read_at_most(body, max_body).await else {
                        return json_error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("the body is larger than {max_body} bytes"),
                        );
                    };
                    let Some(leader) = leader else {
                        return json_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no instance leads at the moment (an election is under way); retry shortly",
                        );
                    };
                    if headers.contains_key(FORWARDED_BY) {
                        return json_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "this instance does not lead either (it takes {leader} for the leader); retry shortly"
                            ),
                        );
                    }
                    let url = match query {
                        Some(q) if !q.is_empty() => format!("http://{leader}{}?{q}", path.as_str()),
                        _ => format!("http://{leader}{}", path.as_str()),
                    };
                    forward(&client, method, url, headers, body, &me, &leader).await
                }
            },
        )
}

/// The whole body, or `None` once it is larger than `limit` bytes (or
/// cannot be read).
async fn read_at_most<S, B>(body: S, limit: u64) -> Option<bytes::Bytes>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.ok()?;
        if (out.len() + chunk.remaining()) as u64 > limit {
            return None;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Some(out.freeze())
}

/// Sends the request on to the leader and streams its answer back.
async fn forward(
    client: &reqwest::Client,
    method: warp::http::Method,
    url: String,
    headers: warp::http::HeaderMap,
    body: bytes::Bytes,
    me: &str,
    leader: &str,
) -> Response {
    let mut request = client.request(method, &url);
    for (name, value) in headers.iter() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    request = request.header(FORWARDED_BY, me);
    if !body.is_empty() {
        request = request.body(body);
    }
    let mut answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%url, "cannot forward a request to the leader: {e}");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the leader at {leader} cannot be reached ({e}); retry shortly"),
            );
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    // The answer's body streams through a channel: an event stream never
    // ends, and the client's hang-up ends the copy.
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    let mut reply =
        warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
    *reply.status_mut() = status;
    for (name, value) in answer_headers.iter() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            reply.headers_mut().append(name, value.clone());
        }
    }
    reply
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
        self.reply_filtered(first, |_| true)
    }

    /// Like [`reply_with`](Self::reply_with), sending only the events whose
    /// kind `wanted` accepts (e.g. Marathon's `?event_type=` filter).
    pub fn reply_filtered<F>(&self, first: Vec<(String, T)>, wanted: F) -> impl Reply + use<T, F>
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        let rx = self.tx.subscribe();
        let wanted = Arc::new(wanted);
        let first: Vec<Result<warp::sse::Event, Infallible>> = first
            .into_iter()
            .filter(|(kind, _)| wanted(kind))
            .filter_map(|(kind, event)| {
                let data = serde_json::to_string(&event).ok()?;
                Some(Ok(warp::sse::Event::default().event(kind).data(data)))
            })
            .collect();
        let live = futures::stream::unfold(Some(rx), move |rx| {
            let wanted = wanted.clone();
            async move {
                let mut rx = rx?;
                loop {
                    return match rx.recv().await {
                        Ok(p) if !wanted(&p.kind) => continue,
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
                    };
                }
            }
        });
        let stream = futures::StreamExt::chain(futures::stream::iter(first), live);
        warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(stream))
    }
}

#[cfg(test)]
mod tests;
