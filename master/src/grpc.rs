//! The gRPC services: each stream gets a connection id, its first message is
//! checked, and everything else is forwarded to the actor.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_proto::v1::agent_service_server::AgentService;
use agora_proto::v1::scheduler_service_server::SchedulerService;
use agora_proto::v1::{AgentMessage, Call, Event, MasterToAgent, agent_message, call};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::actor::Input;
use crate::core::ConnId;

/// How long a new stream may take to send its first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Shared by both services.
#[derive(Clone)]
pub(crate) struct Services {
    pub actor: mpsc::Sender<Input>,
    pub next_conn: Arc<AtomicU64>,
    pub shutdown: CancellationToken,
}

impl Services {
    fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    async fn send(&self, input: Input) -> Result<(), Status> {
        self.actor
            .send(input)
            .await
            .map_err(|_| Status::unavailable("the master is shutting down"))
    }
}

async fn first_message<T>(inbound: &mut Streaming<T>) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
        Err(_) => Err(Status::deadline_exceeded(
            "no first message within 30 s of opening the stream",
        )),
        Ok(Err(status)) => Err(status),
        Ok(Ok(None)) => Err(Status::invalid_argument(
            "the stream ended before its first message",
        )),
        Ok(Ok(Some(m))) => Ok(m),
    }
}

/// What a stream type needs to be opened: how to read its first message
/// and how to wrap its messages for the actor.
trait StreamKind: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    type First;
    /// The first message, or why the stream is refused.
    fn first(msg: Self::In) -> Result<Self::First, Status>;
    fn opened(
        conn: ConnId,
        first: Self::First,
        tx: mpsc::UnboundedSender<Result<Self::Out, Status>>,
        cancel: CancellationToken,
    ) -> Input;
    fn message(conn: ConnId, msg: Self::In) -> Option<Input>;
    fn closed(conn: ConnId) -> Input;
}

struct AgentStream;

impl StreamKind for AgentStream {
    type In = AgentMessage;
    type Out = MasterToAgent;
    type First = agora_proto::v1::RegisterAgent;

    fn first(msg: AgentMessage) -> Result<Self::First, Status> {
        match msg.message {
            Some(agent_message::Message::Register(r)) => Ok(r),
            _ => Err(Status::invalid_argument(
                "the first message of an agent session must be `register`",
            )),
        }
    }

    fn opened(
        conn: ConnId,
        register: Self::First,
        tx: mpsc::UnboundedSender<Result<MasterToAgent, Status>>,
        cancel: CancellationToken,
    ) -> Input {
        Input::AgentOpened {
            conn,
            register,
            tx,
            cancel,
        }
    }

    fn message(conn: ConnId, m: AgentMessage) -> Option<Input> {
        m.message.map(|msg| Input::AgentMessage { conn, msg })
    }

    fn closed(conn: ConnId) -> Input {
        Input::AgentClosed { conn }
    }
}

struct SchedulerStream;

impl StreamKind for SchedulerStream {
    type In = Call;
    type Out = Event;
    type First = agora_proto::v1::Subscribe;

    fn first(msg: Call) -> Result<Self::First, Status> {
        match msg.call {
            Some(call::Call::Subscribe(s)) => Ok(s),
            _ => Err(Status::invalid_argument(
                "the first call of a scheduler stream must be `subscribe`",
            )),
        }
    }

    fn opened(
        conn: ConnId,
        subscribe: Self::First,
        tx: mpsc::UnboundedSender<Result<Event, Status>>,
        cancel: CancellationToken,
    ) -> Input {
        Input::FrameworkOpened {
            conn,
            subscribe,
            tx,
            cancel,
        }
    }

    fn message(conn: ConnId, c: Call) -> Option<Input> {
        c.call.map(|call| Input::FrameworkCall { conn, call })
    }

    fn closed(conn: ConnId) -> Input {
        Input::FrameworkClosed { conn }
    }
}

impl Services {
    /// Opens a stream: checks its first message, hands it to the actor,
    /// forwards the rest until the stream ends or the actor closes it, and
    /// returns the stream the actor writes to.
    async fn open<K: StreamKind>(
        &self,
        request: Request<Streaming<K::In>>,
    ) -> Result<Response<BoxStream<K::Out>>, Status> {
        let mut inbound = request.into_inner();
        let first = K::first(first_message(&mut inbound).await?)?;
        let conn = self.conn_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = self.shutdown.child_token();
        self.send(K::opened(conn, first, tx, cancel.clone()))
            .await?;
        let actor = self.actor.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    m = inbound.message() => match m {
                        Ok(Some(m)) => {
                            if let Some(input) = K::message(conn, m)
                                && actor.send(input).await.is_err()
                            {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(%status, "stream error");
                            break;
                        }
                    },
                }
            }
            let _ = actor.send(K::closed(conn)).await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

pub(crate) struct AgentSvc(pub Services);

#[tonic::async_trait]
impl AgentService for AgentSvc {
    type SessionStream = BoxStream<MasterToAgent>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.0.open::<AgentStream>(request).await
    }
}

pub(crate) struct SchedulerSvc(pub Services);

#[tonic::async_trait]
impl SchedulerService for SchedulerSvc {
    type SubscribeStream = BoxStream<Event>;

    async fn subscribe(
        &self,
        request: Request<Streaming<Call>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.0.open::<SchedulerStream>(request).await
    }
}
