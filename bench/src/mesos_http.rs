//! A small client of the Mesos v1 scheduler HTTP API (`POST
//! /api/v1/scheduler`, JSON), as a Mesos framework speaks it: for
//! `agora bench launch --api mesos`.
//!
//! * SUBSCRIBE answers a chunked RecordIO stream (`<length>\n<JSON event>`
//!   repeated) and a `Mesos-Stream-Id`; a reader task splits the records and
//!   hands the events it knows ([`MesosEvent`]) to the caller's channel.
//! * Every other call is its own `POST` carrying the stream id, answered
//!   `202`. Calls are queued and sent by a dispatcher over a pool of
//!   keep-alive connections, [`CONCURRENCY`] at a time (as a framework with
//!   an HTTP connection pool does); the first refusal is kept and reported
//!   by [`MesosScheduler::failure`].
//!
//! Mesos acknowledges one update per call, so every `TASK_RUNNING` costs an
//! `ACKNOWLEDGE` request of its own (the gRPC driver batches them).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

/// Calls in flight at once.
pub const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Deserialize)]
pub struct IdJson {
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScalarJson {
    pub value: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceJson {
    pub name: String,
    #[serde(default)]
    pub scalar: Option<ScalarJson>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OfferJson {
    pub id: IdJson,
    pub agent_id: IdJson,
    #[serde(default)]
    pub resources: Vec<ResourceJson>,
}

impl OfferJson {
    /// The sum of a scalar resource in the offer.
    pub fn scalar(&self, name: &str) -> f64 {
        self.resources
            .iter()
            .filter(|r| r.name == name)
            .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
            .sum()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusJson {
    pub task_id: IdJson,
    pub state: String,
    #[serde(default)]
    pub agent_id: Option<IdJson>,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EventJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subscribed: Option<SubscribedJson>,
    #[serde(default)]
    offers: Option<OffersJson>,
    #[serde(default)]
    update: Option<UpdateJson>,
    #[serde(default)]
    error: Option<ErrorJson>,
}

#[derive(Debug, Deserialize)]
struct SubscribedJson {
    framework_id: IdJson,
}

#[derive(Debug, Deserialize)]
struct OffersJson {
    #[serde(default)]
    offers: Vec<OfferJson>,
}

#[derive(Debug, Deserialize)]
struct UpdateJson {
    status: StatusJson,
}

#[derive(Debug, Deserialize)]
struct ErrorJson {
    #[serde(default)]
    message: String,
}

/// What the event stream brings (the events the benchmark uses).
#[derive(Debug)]
pub enum MesosEvent {
    Subscribed {
        framework_id: String,
    },
    Offers(Vec<OfferJson>),
    Update(StatusJson),
    /// An ERROR event.
    Error(String),
    /// The stream ended or broke, or a record was not an event.
    Ended(String),
}

/// Splits RecordIO records off the front of `buf`; returns the records
/// and leaves an incomplete one in `buf`. `Err`: a length that is not one.
pub fn split_records(buf: &mut Vec<u8>) -> Result<Vec<Bytes>, String> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
        let digits = &buf[at..at + nl];
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                format!(
                    "not a RecordIO length: {:?}",
                    String::from_utf8_lossy(digits)
                )
            })?;
        let start = at + nl + 1;
        if buf.len() < start + len {
            break;
        }
        records.push(Bytes::copy_from_slice(&buf[start..start + len]));
        at = start + len;
    }
    buf.drain(..at);
    Ok(records)
}

fn event(record: &[u8]) -> Option<MesosEvent> {
    let e: EventJson = match serde_json::from_slice(record) {
        Ok(e) => e,
        Err(e) => return Some(MesosEvent::Ended(format!("a record is not an event: {e}"))),
    };
    match e.kind.as_str() {
        "SUBSCRIBED" => e.subscribed.map(|s| MesosEvent::Subscribed {
            framework_id: s.framework_id.value,
        }),
        "OFFERS" => e.offers.map(|o| MesosEvent::Offers(o.offers)),
        "UPDATE" => e.update.map(|u| MesosEvent::Update(u.status)),
        "ERROR" => Some(MesosEvent::Error(
            e.error.map(|e| e.message).unwrap_or_default(),
        )),
        _ => None,
    }
}

/// A subscribed framework.
pub struct MesosScheduler {
    pub framework_id: String,
    calls: Option<mpsc::UnboundedSender<Bytes>>,
    failure: Arc<Mutex<Option<String>>>,
    reader: JoinHandle<()>,
    dispatcher: Option<JoinHandle<()>>,
}

impl MesosScheduler {
    /// Subscribes `framework_info` (Mesos JSON) at `address` (`host:port`);
    /// returns once SUBSCRIBED arrived, with the channel of the events that
    /// follow.
    pub async fn subscribe(
        address: &str,
        framework_info: Value,
    ) -> anyhow::Result<(MesosScheduler, mpsc::UnboundedReceiver<MesosEvent>)> {
        let url = format!("http://{address}/api/v1/scheduler");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()?;
        let body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}});
        let mut resp = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::OK {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::bail!("SUBSCRIBE answered {status}: {text}");
        }
        let stream_id = resp
            .headers()
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow::anyhow!("SUBSCRIBE answered no Mesos-Stream-Id"))?
            .to_string();
        let (tx, mut events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            let why = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        match split_records(&mut buf) {
                            Ok(records) => {
                                for r in records {
                                    if let Some(e) = event(&r)
                                        && tx.send(e).is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                            Err(e) => break e,
                        }
                    }
                    Ok(None) => break "the master ended the event stream".to_string(),
                    Err(e) => break format!("the event stream broke: {e}"),
                }
            };
            let _ = tx.send(MesosEvent::Ended(why));
        });
        let framework_id = match events.recv().await {
            Some(MesosEvent::Subscribed { framework_id }) => framework_id,
            other => {
                reader.abort();
                anyhow::bail!("expected SUBSCRIBED first, got {other:?}");
            }
        };
        let (calls, queue) = mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        let dispatcher = tokio::spawn(dispatch(client, url, stream_id, queue, failure.clone()));
        Ok((
            MesosScheduler {
                framework_id,
                calls: Some(calls),
                failure,
                reader,
                dispatcher: Some(dispatcher),
            },
            events,
        ))
    }

    /// The first call the master refused (or that failed), if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// Queues a call of this framework: `kind` and its body under the
    /// call's field (`accept`, `decline`, ...).
    pub fn call(&self, kind: &str, field: Option<(&str, Value)>) {
        let mut body = json!({"type": kind, "framework_id": {"value": self.framework_id}});
        if let Some((name, value)) = field {
            body[name] = value;
        }
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("a call serializes"));
        if let Some(calls) = &self.calls {
            let _ = calls.send(bytes);
        }
    }

    /// ACCEPT one offer with LAUNCH of `tasks` (TaskInfo JSON).
    pub fn launch(&self, offer_id: &str, tasks: Vec<Value>, refuse_seconds: f64) {
        self.call(
            "ACCEPT",
            Some((
                "accept",
                json!({
                    "offer_ids": [{"value": offer_id}],
                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                    "filters": {"refuse_seconds": refuse_seconds},
                }),
            )),
        );
    }

    pub fn decline(&self, offer_ids: &[&str], refuse_seconds: f64) {
        let ids: Vec<Value> = offer_ids.iter().map(|i| json!({"value": i})).collect();
        self.call(
            "DECLINE",
            Some((
                "decline",
                json!({"offer_ids": ids, "filters": {"refuse_seconds": refuse_seconds}}),
            )),
        );
    }

    pub fn suppress(&self) {
        self.call("SUPPRESS", None);
    }

    /// ACKNOWLEDGE one update (those without a uuid need none).
    pub fn acknowledge(&self, status: &StatusJson) {
        let (Some(uuid), Some(agent)) = (&status.uuid, &status.agent_id) else {
            return;
        };
        self.call(
            "ACKNOWLEDGE",
            Some((
                "acknowledge",
                json!({
                    "agent_id": {"value": agent.value},
                    "task_id": {"value": status.task_id.value},
                    "uuid": uuid,
                }),
            )),
        );
    }

    /// Sends what is queued, then closes the event stream (the framework
    /// disconnects; the master keeps it for its failover timeout).
    pub async fn close(mut self) {
        self.calls = None;
        if let Some(d) = self.dispatcher.take() {
            let _ = d.await;
        }
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }
}

impl Drop for MesosScheduler {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(d) = &self.dispatcher {
            d.abort();
        }
    }
}

/// Sends the queued calls, [`CONCURRENCY`] at a time; keeps the first
/// failure.
async fn dispatch(
    client: reqwest::Client,
    url: String,
    stream_id: String,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut inflight = JoinSet::new();
    while let Some(body) = queue.recv().await {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("mesos-stream-id", &stream_id)
            .body(body);
        let failure = failure.clone();
        inflight.spawn(async move {
            let why = match request.send().await {
                Ok(resp) if resp.status() == reqwest::StatusCode::ACCEPTED => None,
                Ok(resp) => {
                    let status = resp.status();
                    Some(format!(
                        "a call answered {status}: {}",
                        resp.text().await.unwrap_or_default()
                    ))
                }
                Err(e) => Some(format!("a call failed: {e}")),
            };
            if let Some(why) = why {
                failure.lock().expect("failure lock").get_or_insert(why);
            }
            drop(permit);
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_across_chunks() {
        let mut buf = b"5\nhello3\nab".to_vec();
        let r = split_records(&mut buf).unwrap();
        assert_eq!(r, vec![Bytes::from_static(b"hello")]);
        assert_eq!(buf, b"3\nab");
        buf.extend_from_slice(b"c12\n{\"type\":\"X\"}");
        let r = split_records(&mut buf).unwrap();
        assert_eq!(
            r,
            vec![
                Bytes::from_static(b"abc"),
                Bytes::from_static(b"{\"type\":\"X\"}")
            ]
        );
        assert!(buf.is_empty());
        let mut bad = b"x\n".to_vec();
        assert!(split_records(&mut bad).is_err());
    }

    #[test]
    fn events_read_as_mesos_writes_them() {
        let offers = br#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"o1"},
            "framework_id":{"value":"f"},"agent_id":{"value":"a1"},"hostname":"h",
            "resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":2.0},"role":"*"},
            {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":1,"end":2}]},"role":"*"}]}]}}"#;
        let Some(MesosEvent::Offers(o)) = event(offers) else {
            panic!("not offers")
        };
        assert_eq!(o[0].scalar("cpus"), 2.0);
        let update = br#"{"type":"UPDATE","update":{"status":{"task_id":{"value":"t"},
            "state":"TASK_RUNNING","source":"SOURCE_EXECUTOR","agent_id":{"value":"a1"},
            "uuid":"AAEC","timestamp":1.5}}}"#;
        let Some(MesosEvent::Update(s)) = event(update) else {
            panic!("not an update")
        };
        assert_eq!(
            (s.state.as_str(), s.uuid.as_deref()),
            ("TASK_RUNNING", Some("AAEC"))
        );
        assert!(event(br#"{"type":"HEARTBEAT"}"#).is_none());
        assert!(matches!(event(b"nope"), Some(MesosEvent::Ended(_))));
    }
}
