//! The gRPC services: each stream gets a connection id, its first message is
//! checked, and everything else is forwarded to the actor of the current
//! term.
//!
//! A master that does not lead refuses streams with `UNAVAILABLE`, naming the
//! leader in the message and in the `agora-leader: host:port` metadata. When
//! a term ends (leadership lost, or shutdown) every stream of it ends with
//! `UNAVAILABLE` and no `error` event, so agents and frameworks look for the
//! leader and come back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_proto::v1::agent_service_server::AgentService;
use agora_proto::v1::{AgentMessage, Call, MasterInfo, MasterToAgent, agent_message, call};
use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::actor::Input;
use crate::core::{ConnId, OutEvent};
use crate::leadership::{self, Role};
use crate::outbound::{OutRx, OutTx, Queued, Queues};

/// The metadata key that names the leading master in a refusal.
pub const LEADER_METADATA: &str = "agora-leader";

/// How long a new stream may take to send its first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Shared by both services.
#[derive(Clone)]
pub(crate) struct Services {
    pub role: watch::Receiver<Role>,
    pub next_conn: Arc<AtomicU64>,
    pub shutdown: CancellationToken,
}

impl Services {
    fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Why a stream of an ended term ends.
    fn ended(&self) -> Status {
        if self.shutdown.is_cancelled() {
            Status::unavailable("the master is shutting down; connect to the leading master")
        } else {
            Status::unavailable("the master stepped down; connect to the new leading master")
        }
    }
}

/// `host:port` of a master, as clients dial it.
pub(crate) fn address_of(info: &MasterInfo) -> String {
    agora_coord::address_of(info)
}

/// The refusal of a master that does not lead.
pub(crate) fn not_leading(leader: Option<&MasterInfo>) -> Status {
    match leader {
        Some(leader) => {
            let addr = address_of(leader);
            let mut status = Status::unavailable(format!(
                "this master is not the leader; the leading master is at {addr}"
            ));
            if let Ok(value) = MetadataValue::try_from(addr.as_str()) {
                status.metadata_mut().insert(LEADER_METADATA, value);
            }
            status
        }
        None => Status::unavailable(
            "no master leads at the moment (an election is under way); retry shortly",
        ),
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
    type Out: Queued + Send + 'static;
    type First;
    /// A bounded queue for what the actor sends on the stream.
    fn queue(queues: &Queues) -> (OutTx<Self::Out>, OutRx<Self::Out>);
    /// The first message, or why the stream is refused.
    fn first(msg: Self::In) -> Result<Self::First, Status>;
    fn opened(
        conn: ConnId,
        first: Self::First,
        tx: OutTx<Self::Out>,
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

    fn queue(queues: &Queues) -> (OutTx<MasterToAgent>, OutRx<MasterToAgent>) {
        queues.agent()
    }

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
        tx: OutTx<MasterToAgent>,
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
    type Out = OutEvent;
    type First = agora_proto::v1::Subscribe;

    fn queue(queues: &Queues) -> (OutTx<OutEvent>, OutRx<OutEvent>) {
        queues.framework()
    }

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
        tx: OutTx<OutEvent>,
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
    /// Opens a stream: checks that this master leads and the first message,
    /// hands it to the term's actor, forwards the rest until the stream ends
    /// or the actor closes it, and returns the stream the actor writes to.
    async fn open<K: StreamKind>(
        &self,
        request: Request<Streaming<K::In>>,
    ) -> Result<Response<BoxStream<K::Out>>, Status> {
        let term = leadership::current_term(&self.role)
            .await
            .map_err(|n| not_leading(n.leader.as_ref()))?;
        let mut inbound = request.into_inner();
        let first = K::first(first_message(&mut inbound).await?)?;
        if term.cancel.is_cancelled() {
            return Err(self.ended());
        }
        let conn = self.conn_id();
        let (tx, rx) = K::queue(&term.queues);
        let cancel = term.cancel.child_token();
        term.actor
            .send(K::opened(conn, first, tx, cancel.clone()))
            .await
            .map_err(|_| self.ended())?;
        let actor = term.actor.clone();
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
        Ok(Response::new(Box::pin(outbound(
            rx,
            term.cancel,
            self.clone(),
        ))))
    }
}

/// What the actor writes to a stream, until it closes the stream (a clean
/// end) or the term ends (`UNAVAILABLE`, after what was already queued).
fn outbound<T: Queued + Send + 'static>(
    rx: OutRx<T>,
    term: CancellationToken,
    services: Services,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    futures::stream::unfold(Some((rx, term, services)), |state| async move {
        let (mut rx, term, services) = state?;
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                // A failure (the peer was too slow) is the stream's last item.
                Some(Err(status)) => Some((Err(status), None)),
                Some(m) => Some((m, Some((rx, term, services)))),
                None if term.is_cancelled() => Some((Err(services.ended()), None)),
                None => None,
            },
            _ = term.cancelled() => {
                // Deliver what is already queued, then say why it ends.
                match rx.try_recv() {
                    Some(Ok(m)) => Some((Ok(m), Some((rx, term, services)))),
                    Some(Err(status)) => Some((Err(status), None)),
                    None => Some((Err(services.ended()), None)),
                }
            }
        }
    })
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

/// The scheduler service (`agora.v1.SchedulerService`), served by hand
/// rather than through the generated server so that its events go out
/// through [`EventCodec`]: offers the core already encoded are written as
/// they are, everything else is encoded by prost. Clients see exactly the
/// generated `Event` stream.
#[derive(Clone)]
pub(crate) struct SchedulerServer {
    pub services: Services,
    pub max_message: usize,
}

impl tonic::server::NamedService for SchedulerServer {
    const NAME: &'static str = "agora.v1.SchedulerService";
}

impl<B> tower::Service<http::Request<B>> for SchedulerServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/agora.v1.SchedulerService/Subscribe" {
            return Box::pin(async move {
                let (parts, ()) = Status::unimplemented("no such method")
                    .into_http::<()>()
                    .into_parts();
                Ok(http::Response::from_parts(
                    parts,
                    tonic::body::Body::empty(),
                ))
            });
        }
        let method = SubscribeMethod(self.services.clone());
        let max = self.max_message;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EventCodec)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct SubscribeMethod(Services);

impl tonic::server::StreamingService<Call> for SubscribeMethod {
    type Response = OutEvent;
    type ResponseStream = BoxStream<OutEvent>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Call>>) -> Self::Future {
        let services = self.0.clone();
        Box::pin(async move { services.open::<SchedulerStream>(request).await })
    }
}

/// Decodes calls with prost; encodes events with [`OutEvent::encode`].
struct EventCodec;

impl tonic::codec::Codec for EventCodec {
    type Encode = OutEvent;
    type Decode = Call;
    type Encoder = EventEncoder;
    type Decoder = tonic_prost::ProstDecoder<Call>;

    fn encoder(&mut self) -> Self::Encoder {
        EventEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct EventEncoder;

impl tonic::codec::Encoder for EventEncoder {
    type Item = OutEvent;
    type Error = Status;

    fn encode(
        &mut self,
        item: OutEvent,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode an event: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_names_the_leader_in_its_refusal() {
        let leader = MasterInfo {
            id: "m2".into(),
            hostname: "m2.example".into(),
            ip: "10.0.0.2".into(),
            port: 5050,
            version: String::new(),
        };
        let s = not_leading(Some(&leader));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("10.0.0.2:5050"), "{}", s.message());
        assert_eq!(s.metadata().get(LEADER_METADATA).unwrap(), "10.0.0.2:5050");

        let s = not_leading(None);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.metadata().get(LEADER_METADATA).is_none());
        assert!(s.message().contains("no master leads"));
    }
}
