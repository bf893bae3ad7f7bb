//! The Mesos v1 scheduler HTTP API: `POST /api/v1/scheduler`, a thin
//! adapter over the same core as the gRPC scheduler service.
//!
//! A SUBSCRIBE opens a subscription exactly as a gRPC stream does (a new
//! connection id, [`Input::FrameworkOpened`]); the core's events for that
//! connection are written as Mesos JSON in a chunked RecordIO answer. Every
//! other call names its framework and carries the subscription's
//! `Mesos-Stream-Id`; it is translated and handed to the core as
//! [`Input::FrameworkCall`] on the subscription's connection, so validation
//! and state live in the core alone. When the answer ends (the client went
//! away, the core closed the subscription, the term ended) the core hears
//! [`Input::FrameworkClosed`], as for a gRPC stream.
//!
//! Status codes as Mesos answers them: `200` (SUBSCRIBE), `202` (other
//! calls), `400` (bad body), `403` (not subscribed, or a stream id that is
//! not the framework's), `415`/`406` (not JSON); a standby answers `307` to
//! the leader and `503` while nobody leads (the routes' standby filter).
//! Refusals are plain text, as Mesos's are.

pub mod json;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto::v1::{Event, event};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use crate::actor::Input;
use crate::core::validation::validate_framework;
use crate::core::{ConnId, OutEvent};
use crate::leadership::{self, Role};
use json::{MesosCall, Refusal, StreamOptions};

/// The header that ties calls to their subscription.
pub const STREAM_ID_HEADER: &str = "mesos-stream-id";

/// How long a SUBSCRIBE waits for the core's answer.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// One open subscription over HTTP.
#[derive(Clone)]
struct Subscription {
    stream_id: String,
    conn: ConnId,
    actor: mpsc::Sender<Input>,
    /// Cancelled when the subscription's stream ends (or its term does).
    cancel: CancellationToken,
}

/// The subscriptions open over HTTP, by framework id; shared by the
/// handlers.
#[derive(Clone)]
pub(crate) struct MesosApi {
    /// Connection ids, shared with the gRPC services (one id space).
    next_conn: Arc<AtomicU64>,
    subscriptions: Arc<Mutex<HashMap<String, Subscription>>>,
}

impl MesosApi {
    pub(crate) fn new(next_conn: Arc<AtomicU64>) -> MesosApi {
        MesosApi {
            next_conn,
            subscriptions: Arc::default(),
        }
    }

    fn lookup(&self, framework_id: &str) -> Option<Subscription> {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .get(framework_id)
            .cloned()
    }

    fn register(&self, framework_id: &str, sub: Subscription) {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .insert(framework_id.to_string(), sub);
    }

    /// Forgets a subscription, unless a newer one replaced it.
    fn unregister(&self, framework_id: &str, conn: ConnId) {
        let mut subs = self.subscriptions.lock().expect("subscriptions lock");
        if subs.get(framework_id).is_some_and(|s| s.conn == conn) {
            subs.remove(framework_id);
        }
    }
}

/// A plain-text answer.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = warp::reply::with_status(message.into(), status).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn refused(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    text(status, r.message)
}

/// The media types: JSON in, JSON out. `Some`: the refusal.
fn check_media(headers: &HeaderMap) -> Option<Response> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        None => {
            return Some(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expecting 'Content-Type' to be present (application/json)",
            ));
        }
        Some("application/json") => {}
        Some(other) => {
            return Some(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {other} is not supported: Agora's scheduler API reads \
                     application/json only (no protobuf)"
                ),
            ));
        }
    }
    if let Some(accept) = headers.get("accept").and_then(|v| v.to_str().ok()) {
        let ok = accept.split(',').any(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t == "application/json" || t == "application/*" || t == "*/*" || t.is_empty()
        });
        if !ok {
            return Some(text(
                StatusCode::NOT_ACCEPTABLE,
                format!("Agora's scheduler API answers application/json only, not {accept}"),
            ));
        }
    }
    None
}

/// `POST /api/v1/scheduler`.
pub(crate) async fn scheduler(
    api: MesosApi,
    role: tokio::sync::watch::Receiver<Role>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_media(&headers) {
        return r;
    }
    let call = match json::parse_call(&body) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let stream_id = match headers.get(STREAM_ID_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(s)) => Some(s.to_string()),
        Some(Err(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "the 'Mesos-Stream-Id' header is not text",
            );
        }
    };
    if let MesosCall::Subscribe {
        subscribe,
        multi_role,
    } = call
    {
        if stream_id.is_some() {
            return text(
                StatusCode::BAD_REQUEST,
                "Subscribe calls should not include the 'Mesos-Stream-Id' header",
            );
        }
        return subscribe_stream(api, role, subscribe, multi_role).await;
    }
    let framework_id = call.framework_id().unwrap_or_default().to_string();
    let Some(stream_id) = stream_id else {
        return text(
            StatusCode::BAD_REQUEST,
            "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
        );
    };
    let sub = match api.lookup(&framework_id) {
        Some(s) if !s.cancel.is_cancelled() => s,
        _ => {
            return text(
                StatusCode::FORBIDDEN,
                format!("Framework {framework_id} is not subscribed (SUBSCRIBE first)"),
            );
        }
    };
    if sub.stream_id != stream_id {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "The stream ID '{stream_id}' included in this request is not the stream ID \
                 of framework {framework_id}'s subscription"
            ),
        );
    }
    match call {
        MesosCall::Core { call, .. } => {
            if sub
                .actor
                .send(Input::FrameworkCall {
                    conn: sub.conn,
                    call,
                })
                .await
                .is_err()
            {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the master stepped down or is shutting down; subscribe to the leading \
                     master",
                );
            }
        }
        MesosCall::Ignored { kind, .. } => {
            tracing::debug!(framework_id, kind, "call accepted without effect");
        }
        MesosCall::Subscribe { .. } => unreachable!("handled above"),
    }
    warp::reply::with_status(warp::reply(), StatusCode::ACCEPTED).into_response()
}

/// SUBSCRIBE: opens the subscription with the core, waits for its answer,
/// and streams its events.
async fn subscribe_stream(
    api: MesosApi,
    role: tokio::sync::watch::Receiver<Role>,
    subscribe: agora_proto::v1::Subscribe,
    multi_role: bool,
) -> Response {
    if let Err(e) = validate_framework(subscribe.framework_info.as_ref().expect("set by parse")) {
        return text(StatusCode::BAD_REQUEST, format!("invalid subscribe: {e}"));
    }
    let term = match leadership::current_term(&role).await {
        Ok(t) => t,
        Err(not) => return crate::http::redirect(&not, "/api/v1/scheduler", None),
    };
    let conn = api.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = term.queues.framework();
    let cancel = term.cancel.child_token();
    if term
        .actor
        .send(Input::FrameworkOpened {
            conn,
            subscribe,
            tx,
            cancel: cancel.clone(),
        })
        .await
        .is_err()
    {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master stepped down or is shutting down; subscribe to the leading master",
        );
    }
    let closed = Closed {
        actor: term.actor.clone(),
        conn,
    };
    // The core answers with SUBSCRIBED, or with an error and the end.
    let first = tokio::select! {
        m = rx.recv() => m,
        _ = tokio::time::sleep(SUBSCRIBE_TIMEOUT) => None,
    };
    let subscribed = match first {
        Some(Ok(OutEvent::Event(Event {
            event: Some(event::Event::Subscribed(s)),
        }))) => s,
        Some(Ok(OutEvent::Event(Event {
            event: Some(event::Event::Error(e)),
        }))) => {
            closed.send().await;
            return text(StatusCode::FORBIDDEN, e.message);
        }
        _ => {
            closed.send().await;
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the master did not answer the subscription; retry",
            );
        }
    };
    let framework_id = subscribed.framework_id.clone();
    let stream_id = uuid::Uuid::new_v4().to_string();
    api.register(
        &framework_id,
        Subscription {
            stream_id: stream_id.clone(),
            conn,
            actor: term.actor.clone(),
            cancel: cancel.clone(),
        },
    );
    let opts = StreamOptions { multi_role };
    let (out, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let first = Event {
        event: Some(event::Event::Subscribed(subscribed)),
    };
    let _ = out.try_send(Ok(records(&OutEvent::Event(first), opts)));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                m = rx.recv() => match m {
                    Some(Ok(ev)) => {
                        let bytes = records(&ev, opts);
                        // Bounded: a client that stops reading leaves its
                        // events in the master's queue, which is bounded.
                        if !bytes.is_empty() {
                            tokio::select! {
                                sent = out.send(Ok(bytes)) => if sent.is_err() { break },
                                _ = cancel.cancelled() => break,
                            }
                        }
                    }
                    Some(Err(_)) | None => break,
                },
                _ = out.closed() => break,
                _ = cancel.cancelled() => {
                    // What is already queued goes out, then the answer ends.
                    while let Some(Ok(ev)) = rx.try_recv() {
                        let bytes = records(&ev, opts);
                        if !bytes.is_empty() {
                            let _ = out.try_send(Ok(bytes));
                        }
                    }
                    break;
                }
            }
        }
        cancel.cancel();
        api.unregister(&framework_id, conn);
        closed.send().await;
    });
    let mut r =
        warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(body)).into_response();
    let hs = r.headers_mut();
    hs.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&stream_id) {
        hs.insert("Mesos-Stream-Id", v);
    }
    hs.insert("cache-control", HeaderValue::from_static("no-cache"));
    hs.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// Tells the core that a subscription's connection ended.
struct Closed {
    actor: mpsc::Sender<Input>,
    conn: ConnId,
}

impl Closed {
    async fn send(&self) {
        let _ = self
            .actor
            .send(Input::FrameworkClosed { conn: self.conn })
            .await;
    }
}

/// A core event as RecordIO records of Mesos events.
fn records(ev: &OutEvent, opts: StreamOptions) -> Bytes {
    let event = ev.to_event();
    let mut out = Vec::new();
    for e in json::events_json(&event, opts) {
        out.extend_from_slice(&json::record(&e));
    }
    Bytes::from(out)
}
