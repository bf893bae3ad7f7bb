//! A fake master (a tonic `AgentService` on 127.0.0.1:0) that records what
//! agents send and lets a test drive them, and helpers to run agents on
//! temporary work directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agora_agent::{AgentConfig, RunningAgent};
use agora_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use agora_proto::v1::{
    AcknowledgeUpdates, Acknowledgement, AgentMessage, AgentRefused, AgentRegistered, CommandInfo,
    FrameworkInfo, KillPolicy, KillTask, KillTasks, LaunchTask, MasterInfo, MasterToAgent,
    RegisterAgent, RunTasks, TaskInfo, TaskState, TaskStatus, agent_message, master_to_agent,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// What the fake master saw.
#[derive(Clone, Debug)]
pub enum Seen {
    Register {
        register: RegisterAgent,
    },
    Heartbeat,
    Updates {
        session: usize,
        statuses: Vec<TaskStatus>,
    },
    Closed,
}

type Outbound = mpsc::UnboundedSender<Result<MasterToAgent, Status>>;

struct Shared {
    seen: Mutex<Vec<Seen>>,
    changed: Notify,
    auto_ack: AtomicBool,
    sessions: AtomicUsize,
    agents_registered: AtomicUsize,
    current: Mutex<Option<(usize, Outbound)>>,
    refuse_next: Mutex<Option<String>>,
    heartbeat_seconds: f64,
}

impl Shared {
    fn record(&self, s: Seen) {
        self.seen.lock().push(s);
        self.changed.notify_waiters();
    }
}

#[derive(Clone)]
struct Service(Arc<Shared>);

#[tonic::async_trait]
impl AgentService for Service {
    type SessionStream = UnboundedReceiverStream<Result<MasterToAgent, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let shared = self.0.clone();
        let session = shared.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let first = match inbound.message().await {
                Ok(Some(AgentMessage {
                    message: Some(agent_message::Message::Register(r)),
                })) => r,
                _ => {
                    let _ = tx.send(Err(Status::invalid_argument("register first")));
                    return;
                }
            };
            let sent_id = first
                .info
                .as_ref()
                .map(|i| i.id.clone())
                .unwrap_or_default();
            shared.record(Seen::Register { register: first });
            if let Some(message) = shared.refuse_next.lock().take() {
                let _ = tx.send(Ok(MasterToAgent {
                    message: Some(master_to_agent::Message::Refused(AgentRefused { message })),
                }));
                shared.record(Seen::Closed);
                return;
            }
            let agent_id = if sent_id.is_empty() {
                let n = shared.agents_registered.fetch_add(1, Ordering::SeqCst) + 1;
                format!("fake-S{n}")
            } else {
                sent_id
            };
            let _ = tx.send(Ok(MasterToAgent {
                message: Some(master_to_agent::Message::Registered(AgentRegistered {
                    agent_id,
                    master: Some(MasterInfo {
                        id: "fake".into(),
                        hostname: "127.0.0.1".into(),
                        port: 5050,
                        ..Default::default()
                    }),
                    heartbeat_interval_seconds: shared.heartbeat_seconds,
                })),
            }));
            *shared.current.lock() = Some((session, tx.clone()));
            while let Ok(Some(m)) = inbound.message().await {
                match m.message {
                    Some(agent_message::Message::Heartbeat(_)) => shared.record(Seen::Heartbeat),
                    Some(agent_message::Message::Updates(u)) => {
                        if shared.auto_ack.load(Ordering::SeqCst) {
                            let _ = tx.send(Ok(ack_message(&u.statuses)));
                        }
                        shared.record(Seen::Updates {
                            session,
                            statuses: u.statuses,
                        });
                    }
                    _ => {}
                }
            }
            shared.record(Seen::Closed);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

fn ack_message(statuses: &[TaskStatus]) -> MasterToAgent {
    MasterToAgent {
        message: Some(master_to_agent::Message::Acknowledge(AcknowledgeUpdates {
            acks: statuses
                .iter()
                .map(|s| Acknowledgement {
                    framework_id: s.framework_id.clone(),
                    task_id: s.task_id.clone(),
                    uuid: s.uuid.clone(),
                })
                .collect(),
        })),
    }
}

/// The fake master.
pub struct FakeMaster {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeMaster {
    /// Starts a fake master that acknowledges every update at once and
    /// wants heartbeats every 50 ms.
    pub async fn start() -> FakeMaster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            changed: Notify::new(),
            auto_ack: AtomicBool::new(true),
            sessions: AtomicUsize::new(0),
            agents_registered: AtomicUsize::new(0),
            current: Mutex::new(None),
            refuse_next: Mutex::new(None),
            heartbeat_seconds: 0.05,
        });
        let stop = CancellationToken::new();
        let svc = AgentServiceServer::new(Service(shared.clone()));
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    token.cancelled_owned(),
                )
                .await;
        });
        FakeMaster { addr, shared, stop }
    }

    pub fn set_auto_ack(&self, on: bool) {
        self.shared.auto_ack.store(on, Ordering::SeqCst);
    }

    /// The next registration is answered with `refused`.
    pub fn refuse_next(&self, message: &str) {
        *self.shared.refuse_next.lock() = Some(message.to_string());
    }

    /// Ends the current session from the master's side.
    pub fn drop_session(&self) {
        if let Some((_, tx)) = self.shared.current.lock().take() {
            let _ = tx.send(Err(Status::unavailable(
                "the fake master drops the session",
            )));
        }
    }

    pub fn send(&self, message: master_to_agent::Message) {
        let current = self.shared.current.lock();
        let (_, tx) = current.as_ref().expect("an agent is connected");
        tx.send(Ok(MasterToAgent {
            message: Some(message),
        }))
        .expect("the session is open");
    }

    pub fn launch(&self, framework: &FrameworkInfo, tasks: Vec<TaskInfo>) {
        self.send(master_to_agent::Message::RunTasks(RunTasks {
            frameworks: vec![framework.clone()],
            launches: tasks
                .into_iter()
                .map(|t| LaunchTask {
                    framework_id: framework.id.clone(),
                    task: Some(t),
                    role: "*".into(),
                })
                .collect(),
        }));
    }

    pub fn kill(&self, framework_id: &str, task_id: &str, grace: Option<f64>) {
        self.send(master_to_agent::Message::KillTasks(KillTasks {
            kills: vec![KillTask {
                framework_id: framework_id.into(),
                task_id: task_id.into(),
                kill_policy: grace.map(|g| KillPolicy {
                    grace_period: Some(g),
                }),
            }],
        }));
    }

    pub fn acknowledge(&self, status: &TaskStatus) {
        let msg = ack_message(std::slice::from_ref(status));
        self.send(msg.message.unwrap());
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }

    /// Waits until `f` finds what it looks for in what the master saw.
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn(&[Seen]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.shared.changed.notified();
            if let Some(t) = f(&self.shared.seen.lock()) {
                return t;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("timed out waiting for {what}; the master saw: {:#?}", self.seen())
                }
            }
        }
    }

    /// Waits for an update of `task_id` in `state`.
    pub async fn wait_update(&self, task_id: &str, state: TaskState) -> TaskStatus {
        self.wait_for(
            &format!("{task_id} to reach {}", state.as_str_name()),
            |seen| {
                updates_of(seen, task_id)
                    .into_iter()
                    .find(|s| s.state() == state)
            },
        )
        .await
    }

    /// Waits for the `n`th registration (1-based).
    pub async fn wait_registration(&self, n: usize) -> RegisterAgent {
        self.wait_for(&format!("registration #{n}"), |seen| {
            seen.iter()
                .filter_map(|s| match s {
                    Seen::Register { register, .. } => Some(register.clone()),
                    _ => None,
                })
                .nth(n - 1)
        })
        .await
    }
}

/// The updates of one task in `seen`, in order, each once (a resend of an
/// update whose acknowledgement was still on its way is dropped).
pub fn updates_of(seen: &[Seen], task_id: &str) -> Vec<TaskStatus> {
    let mut out: Vec<TaskStatus> = Vec::new();
    for s in seen.iter().flat_map(|s| match s {
        Seen::Updates { statuses, .. } => statuses.clone(),
        _ => Vec::new(),
    }) {
        if s.task_id == task_id && !out.iter().any(|o| o.uuid == s.uuid) {
            out.push(s);
        }
    }
    out
}

/// A framework that checkpoints (its tasks survive agent restarts).
pub fn framework(id: &str) -> FrameworkInfo {
    FrameworkInfo {
        id: id.into(),
        name: format!("{id}-name"),
        user: "tester".into(),
        roles: vec!["*".into()],
        checkpoint: true,
        ..Default::default()
    }
}

/// A shell task.
pub fn shell_task(id: &str, command: &str) -> TaskInfo {
    TaskInfo {
        name: format!("{id}-name"),
        task_id: id.into(),
        resources: agora_proto::Resources::parse("cpus:0.1;mem:32")
            .unwrap()
            .to_proto(),
        command: Some(CommandInfo {
            value: command.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A shell command that runs until its sandbox is removed (the test's
/// temporary directory going away ends it), after writing `ready` to stdout.
pub const RUN_UNTIL_SANDBOX_GONE: &str =
    "echo ready; while [ -e \"$AGORA_SANDBOX\" ]; do sleep 0.05; done";

/// One agent on a work directory.
pub struct TestAgent {
    pub running: Option<RunningAgent>,
    pub shutdown: CancellationToken,
    pub http: SocketAddr,
}

pub fn config(master: &FakeMaster, work_dir: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(master.addr.to_string(), work_dir);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.hostname = "agent-under-test".into();
    c.resources = Some(
        agora_proto::Resources::parse("cpus:2;mem:1024;disk:2048;ports:[1024-65535]").unwrap(),
    );
    c.attributes = agora_proto::parse_attributes("rack:r1;level:3").unwrap();
    c.supervisor_command = vec![env!("CARGO_BIN_EXE_agora-task-supervisor").into()];
    c.default_kill_grace = Duration::from_secs(2);
    c.status_retry_min = Duration::from_millis(100);
    c.status_retry_max = Duration::from_millis(400);
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c
}

impl TestAgent {
    pub async fn start(config: AgentConfig) -> TestAgent {
        let shutdown = CancellationToken::new();
        let running = agora_agent::start(config, shutdown.clone())
            .await
            .expect("the agent starts");
        TestAgent {
            http: running.http_addr(),
            running: Some(running),
            shutdown,
        }
    }

    /// Waits until the agent has an id.
    pub async fn wait_id(&self) -> String {
        let mut w = self.running.as_ref().unwrap().agent_id_watch();
        let got = tokio::time::timeout(DEADLINE, w.wait_for(|id| id.is_some()))
            .await
            .expect("the agent registers in time")
            .expect("the agent runs");
        got.clone().unwrap()
    }

    /// Shuts the agent down (its tasks keep running) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().unwrap();
        tokio::time::timeout(DEADLINE, running.wait())
            .await
            .expect("the agent stops in time")
            .expect("the agent stops cleanly");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub async fn state(&self) -> serde_json::Value {
        reqwest::get(self.url("/state"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A task's entry in `/state` (live tasks).
    pub async fn task_state(&self, task_id: &str) -> Option<serde_json::Value> {
        self.state().await["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task_id)
            .cloned()
    }

    /// The sandbox of a live task.
    pub async fn sandbox(&self, task_id: &str) -> PathBuf {
        let t = self.task_state(task_id).await.expect("the task is known");
        PathBuf::from(t["sandbox"].as_str().unwrap())
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until `f` returns `Some`, polling.
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a process still runs (not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => {
            let state = text[text.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next();
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}
