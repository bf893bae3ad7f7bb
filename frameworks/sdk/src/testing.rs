//! A fake master for the tests of frameworks (feature `testing`).
//!
//! [`FakeMaster`] serves `agora.v1.SchedulerService` on `127.0.0.1:0` inside
//! the test. It answers `subscribe` as the protocol says (a new id for a new
//! framework, `error` for an unknown one, "framework failed over" to the old
//! stream of a framework that subscribes again), records every call, and lets
//! the test push events, break or close streams, and stop and restart the
//! whole master on the same address. It decides nothing else: a test plays
//! the agents and the allocator by sending offers and updates itself.
//!
//! Every `wait_*` method waits for a condition with a deadline
//! ([`FakeMaster::WAIT`]) and panics with what it saw when the deadline
//! passes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{
    self, Call, Event, FrameworkInfo, MasterInfo, Offer, TaskState, TaskStatus, call, event,
    scheduler_service_server::{SchedulerService, SchedulerServiceServer},
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// The fake master's id; framework ids are `<id>-0001`, `<id>-0002`, ...
pub const FAKE_MASTER_ID: &str = "fake";

type EventSender = mpsc::UnboundedSender<Result<Event, Status>>;

/// A scriptable in-process master. Dropping it stops the server.
pub struct FakeMaster {
    shared: Arc<FakeShared>,
    address: SocketAddr,
    server: Option<Server>,
}

struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct FakeShared {
    state: Mutex<FakeState>,
    /// Bumped on every change, so waiters wake up.
    version: watch::Sender<u64>,
}

#[derive(Default)]
struct FakeState {
    next_framework: u32,
    next_stream: u64,
    /// Frameworks the master keeps (not torn down or forgotten).
    frameworks: BTreeMap<String, FrameworkInfo>,
    /// The open stream of each connected framework.
    streams: BTreeMap<String, OpenStream>,
    /// The `FrameworkInfo` of every `subscribe`, in order.
    subscriptions: Vec<FrameworkInfo>,
    /// Every other call, in order, with the framework that sent it.
    calls: Vec<(String, Call)>,
    heartbeat_interval: f64,
    send_heartbeats: bool,
    /// When set, every `subscribe` gets `error` with this message.
    refusal: Option<String>,
    /// Heartbeats sent so far, to every framework.
    heartbeats: u64,
}

struct OpenStream {
    id: u64,
    events: EventSender,
}

impl FakeShared {
    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

impl FakeMaster {
    /// How long the `wait_*` methods wait before they panic.
    pub const WAIT: Duration = Duration::from_secs(10);

    /// Starts a fake master on a free port of 127.0.0.1. It announces a
    /// heartbeat interval of 15 s and sends heartbeats at that interval.
    pub async fn start() -> FakeMaster {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let shared = Arc::new(FakeShared {
            state: Mutex::new(FakeState {
                heartbeat_interval: 15.0,
                send_heartbeats: true,
                ..FakeState::default()
            }),
            version: watch::Sender::new(0),
        });
        let server = Some(serve(shared.clone(), listener));
        FakeMaster {
            shared,
            address,
            server,
        }
    }

    /// `host:port`, for [`SchedulerConfig::master`](crate::SchedulerConfig::master).
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// The heartbeat interval announced in `subscribed` from now on, and
    /// whether the master actually sends heartbeats (`false` plays a master
    /// gone silent on a half-open connection).
    pub fn set_heartbeats(&self, interval_seconds: f64, send: bool) {
        let mut state = self.shared.state.lock();
        state.heartbeat_interval = interval_seconds;
        state.send_heartbeats = send;
    }

    /// From now on, answer every `subscribe` with `error(message)` and close
    /// the stream (`None` goes back to normal).
    pub fn refuse_subscriptions(&self, message: Option<&str>) {
        self.shared.state.lock().refusal = message.map(str::to_string);
    }

    /// Forgets a framework, as after its failover timeout: a resubscription
    /// with its id gets `error`. Its open stream, if any, stays open.
    pub fn forget_framework(&self, framework_id: &str) {
        self.shared.state.lock().frameworks.remove(framework_id);
        self.shared.changed();
    }

    /// Sends `event` to every connected framework; returns how many got it.
    pub fn send(&self, event: event::Event) -> usize {
        let state = self.shared.state.lock();
        state
            .streams
            .values()
            .filter(|s| {
                s.events
                    .send(Ok(Event {
                        event: Some(event.clone()),
                    }))
                    .is_ok()
            })
            .count()
    }

    /// Sends offers to every connected framework.
    pub fn send_offers(&self, offers: Vec<Offer>) -> usize {
        self.send(event::Event::Offers(v1::Offers { offers }))
    }

    /// Sends status updates to every connected framework.
    pub fn send_updates(&self, statuses: Vec<TaskStatus>) -> usize {
        self.send(event::Event::Updates(v1::Updates { statuses }))
    }

    /// Ends every framework stream with a gRPC error, as a crashing master or
    /// a broken connection would.
    pub fn break_streams(&self) {
        let mut state = self.shared.state.lock();
        for (_, stream) in std::mem::take(&mut state.streams) {
            let _ = stream
                .events
                .send(Err(Status::unavailable("fake master: stream broken")));
        }
        drop(state);
        self.shared.changed();
    }

    /// Ends every framework stream cleanly, without an error before it.
    pub fn close_streams(&self) {
        std::mem::take(&mut self.shared.state.lock().streams);
        self.shared.changed();
    }

    /// Stops serving: breaks every stream and frees the port. The state
    /// (known frameworks, recorded calls) is kept for [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        self.break_streams();
        if let Some(server) = self.server.take() {
            let _ = server.shutdown.send(());
            let mut task = server.task;
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Serves again on the same address, with the same state.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Self::WAIT;
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "rebinding the fake master");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {} again: {e}", self.address),
            }
        };
        self.server = Some(serve(self.shared.clone(), listener));
    }

    /// The ids of the connected frameworks.
    pub fn connected(&self) -> BTreeSet<String> {
        self.shared.state.lock().streams.keys().cloned().collect()
    }

    /// The `FrameworkInfo` of every `subscribe` so far, in order.
    pub fn subscriptions(&self) -> Vec<FrameworkInfo> {
        self.shared.state.lock().subscriptions.clone()
    }

    /// Every call other than `subscribe` so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .state
            .lock()
            .calls
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Waits until at least `n` subscriptions were made; returns them all.
    pub async fn wait_for_subscriptions(&self, n: usize) -> Vec<FrameworkInfo> {
        self.wait_until(&format!("{n} subscriptions"), |s| {
            (s.subscriptions.len() >= n).then(|| s.subscriptions.clone())
        })
        .await
    }

    /// Waits until the master has sent at least `n` heartbeats in all.
    pub async fn wait_for_heartbeats(&self, n: u64) {
        self.wait_until(&format!("{n} heartbeats"), |s| {
            (s.heartbeats >= n).then_some(())
        })
        .await
    }

    /// Waits until `framework_id` has an open stream (or, with `None`, until
    /// no framework has one).
    pub async fn wait_for_connected(&self, framework_id: Option<&str>) {
        self.wait_until(&format!("framework {framework_id:?} connected"), |s| {
            match framework_id {
                Some(id) => s.streams.contains_key(id),
                None => s.streams.is_empty(),
            }
            .then_some(())
        })
        .await
    }

    /// Waits for the first recorded call (in order) that `pick` maps to a
    /// value, and returns that value.
    pub async fn wait_for_call<T>(&self, what: &str, pick: impl Fn(&call::Call) -> Option<T>) -> T {
        self.wait_until(what, |s| {
            s.calls
                .iter()
                .find_map(|(_, c)| c.call.as_ref().and_then(&pick))
        })
        .await
    }

    /// Waits until `count` recorded calls match `pick`; returns their values.
    pub async fn wait_for_calls<T>(
        &self,
        what: &str,
        count: usize,
        pick: impl Fn(&call::Call) -> Option<T>,
    ) -> Vec<T> {
        self.wait_until(what, |s| {
            let found: Vec<T> = s
                .calls
                .iter()
                .filter_map(|(_, c)| c.call.as_ref().and_then(&pick))
                .collect();
            (found.len() >= count).then_some(found)
        })
        .await
    }

    async fn wait_until<T>(&self, what: &str, check: impl Fn(&FakeState) -> Option<T>) -> T {
        let mut version = self.shared.version.subscribe();
        let deadline = tokio::time::Instant::now() + Self::WAIT;
        loop {
            if let Some(found) = check(&self.shared.state.lock()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, version.changed())
                .await
                .is_err()
            {
                let state = self.shared.state.lock();
                panic!(
                    "fake master: no {what} within {:?}; subscriptions: {:?}; calls: {:?}",
                    Self::WAIT,
                    state.subscriptions,
                    state.calls
                );
            }
        }
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.task.abort();
        }
    }
}

fn serve(shared: Arc<FakeShared>, listener: TcpListener) -> Server {
    let (shutdown, signal) = oneshot::channel::<()>();
    let service = SchedulerServiceServer::new(FakeService { shared });
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = signal.await;
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "fake master stopped");
        }
    });
    Server { shutdown, task }
}

struct FakeService {
    shared: Arc<FakeShared>,
}

fn error_event(message: &str) -> Result<Event, Status> {
    Ok(Event {
        event: Some(event::Event::Error(v1::Error {
            message: message.to_string(),
        })),
    })
}

#[tonic::async_trait]
impl SchedulerService for FakeService {
    type SubscribeStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<Event, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<Call>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let framework = match inbound.message().await? {
            Some(Call {
                call: Some(call::Call::Subscribe(s)),
            }) => s.framework_info.unwrap_or_default(),
            _ => return Err(Status::invalid_argument("the first call must be subscribe")),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let response = |rx| -> Result<Response<Self::SubscribeStream>, Status> {
            Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
        };
        let (framework_id, stream_id, heartbeat) = {
            let mut state = self.shared.state.lock();
            state.subscriptions.push(framework.clone());
            if let Some(message) = state.refusal.clone() {
                let _ = tx.send(error_event(&message));
                drop(state);
                self.shared.changed();
                return response(rx);
            }
            let framework_id = if framework.id.is_empty() {
                state.next_framework += 1;
                format!("{FAKE_MASTER_ID}-{:04}", state.next_framework)
            } else if state.frameworks.contains_key(&framework.id) {
                framework.id.clone()
            } else {
                let _ = tx.send(error_event(&format!(
                    "framework {} is unknown or was removed: subscribe without an id",
                    framework.id
                )));
                drop(state);
                self.shared.changed();
                return response(rx);
            };
            state.frameworks.insert(
                framework_id.clone(),
                FrameworkInfo {
                    id: framework_id.clone(),
                    ..framework
                },
            );
            if let Some(old) = state.streams.remove(&framework_id) {
                let _ = old.events.send(error_event("framework failed over"));
            }
            let _ = tx.send(Ok(Event {
                event: Some(event::Event::Subscribed(v1::Subscribed {
                    framework_id: framework_id.clone(),
                    heartbeat_interval_seconds: state.heartbeat_interval,
                    master_info: Some(MasterInfo {
                        id: FAKE_MASTER_ID.into(),
                        hostname: "localhost".into(),
                        ip: "127.0.0.1".into(),
                        port: 0,
                        version: agora_proto::VERSION.into(),
                    }),
                })),
            }));
            state.next_stream += 1;
            let stream_id = state.next_stream;
            state.streams.insert(
                framework_id.clone(),
                OpenStream {
                    id: stream_id,
                    events: tx.clone(),
                },
            );
            let heartbeat = (state.send_heartbeats
                && state.heartbeat_interval.is_finite()
                && state.heartbeat_interval > 0.0)
                .then(|| Duration::from_secs_f64(state.heartbeat_interval));
            (framework_id, stream_id, heartbeat)
        };
        self.shared.changed();
        if let Some(every) = heartbeat {
            // A weak sender: the heartbeats must not keep a closed stream open.
            let weak = tx.downgrade();
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    ticks.tick().await;
                    let Some(tx) = weak.upgrade() else { break };
                    let beat = Event {
                        event: Some(event::Event::Heartbeat(v1::Heartbeat {})),
                    };
                    if tx.send(Ok(beat)).is_err() {
                        break;
                    }
                    shared.state.lock().heartbeats += 1;
                    shared.changed();
                }
            });
        }
        drop(tx);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let call = match inbound.message().await {
                    Ok(Some(call)) => call,
                    Ok(None) | Err(_) => break,
                };
                let teardown = matches!(call.call, Some(call::Call::Teardown(_)));
                {
                    let mut state = shared.state.lock();
                    state.calls.push((framework_id.clone(), call));
                    if teardown {
                        state.frameworks.remove(&framework_id);
                        // Dropping the sender ends the stream cleanly: the
                        // framework's confirmation.
                        state.streams.remove(&framework_id);
                    }
                }
                shared.changed();
                if teardown {
                    break;
                }
            }
            let mut state = shared.state.lock();
            if state
                .streams
                .get(&framework_id)
                .is_some_and(|s| s.id == stream_id)
            {
                state.streams.remove(&framework_id);
            }
            drop(state);
            shared.changed();
        });
        response(rx)
    }
}

/// An offer of `resources` (Mesos text form, e.g. `cpus:1;mem:128`) on
/// `agent_id`, for role `*`.
pub fn offer(id: &str, agent_id: &str, hostname: &str, resources: &str) -> Offer {
    Offer {
        id: id.into(),
        agent_id: agent_id.into(),
        hostname: hostname.into(),
        resources: agora_proto::Resources::parse(resources)
            .expect("test offer resources")
            .to_proto(),
        role: agora_proto::UNRESERVED.into(),
        ..Default::default()
    }
}

/// An update from an agent: `state` for `task_id` on `agent_id`, with a
/// uuid made of `uuid_byte` (empty when `uuid_byte` is `None`, as the
/// master's own updates).
pub fn update(
    task_id: &str,
    agent_id: &str,
    state: TaskState,
    uuid_byte: Option<u8>,
    message: &str,
) -> TaskStatus {
    let mut status = TaskStatus {
        task_id: task_id.into(),
        agent_id: agent_id.into(),
        message: message.into(),
        uuid: uuid_byte.map(|b| vec![b; 16]).unwrap_or_default(),
        ..Default::default()
    };
    status.set_state(state);
    status.set_source(if uuid_byte.is_some() {
        v1::StatusSource::SourceAgent
    } else {
        v1::StatusSource::SourceMaster
    });
    status
}
