//! The agent's session with the master: one bidirectional gRPC stream,
//! opened with `register`, kept alive with heartbeats, reopened with
//! jittered exponential backoff whenever it breaks.
//!
//! ```text
//!   Connecting --connected--> Registering --registered--> Registered
//!       ^  ^                       |                          |
//!       |  +-- standby named ------+                          |
//!       |      the leader          |                          |
//!       +------- backoff <---------+--- refused / error / end-+
//!                   (cut short when the leader changes)       |
//!       ^                                                     |
//!       +------------ the leader changed (ZooKeeper) ---------+
//! ```
//!
//! With `--master zk://...` the master to dial is the leader ZooKeeper names,
//! and a session with a master that is no longer the leader is left at once.
//! A master that does not lead refuses the session naming the leader
//! (`agora-leader` metadata), which the next attempt dials straight away.

use std::time::Duration;

use agora_coord::{Detector, ZkDetector, ZkUrl};
use agora_proto::v1::agent_service_client::AgentServiceClient;
use agora_proto::v1::{AgentHeartbeat, AgentMessage, MasterInfo, agent_message, master_to_agent};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::core::{Command, CoreHandle};

/// How long the master may take to answer `register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// The heartbeat interval when the master gives none (Mesos's 15 s).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The gRPC metadata key in which a master that does not lead names the
/// leader (`host:port`).
const LEADER_METADATA: &str = "agora-leader";
/// Redirects followed in a row before backing off (two standbys that name
/// each other must not make the agent spin).
const MAX_REDIRECTS: u32 = 3;
/// Longest random wait before dialing a new leader, so that the agents of a
/// cluster do not all arrive in the same millisecond.
const NEW_LEADER_JITTER: Duration = Duration::from_millis(200);

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Failed(String),
    /// A master that does not lead named the leader (`host:port`).
    Redirect(String),
}

/// Where the session finds the master.
enum MasterSource {
    /// One address, `http://host:port`.
    Fixed(String),
    /// The leader ZooKeeper names.
    ZooKeeper {
        leader: watch::Receiver<Option<MasterInfo>>,
        _detector: ZkDetector,
    },
}

impl MasterSource {
    fn new(master_url: &str) -> MasterSource {
        match ZkUrl::parse(master_url) {
            Ok(url) if ZkUrl::is_zk(master_url) => {
                info!(zk = %url, "following the leading master through ZooKeeper");
                let detector = ZkDetector::start(&url, agora_coord::zk::DEFAULT_SESSION_TIMEOUT);
                MasterSource::ZooKeeper {
                    leader: detector.leader(),
                    _detector: detector,
                }
            }
            _ => MasterSource::Fixed(master_url.to_string()),
        }
    }

    /// The URL to dial now (`None`: ZooKeeper knows no leader). Marks the
    /// current leader as seen.
    fn current(&mut self) -> Option<String> {
        match self {
            MasterSource::Fixed(url) => Some(url.clone()),
            MasterSource::ZooKeeper { leader, .. } => leader
                .borrow_and_update()
                .as_ref()
                .map(|l| format!("http://{}", agora_coord::address_of(l))),
        }
    }

    /// Resolves when ZooKeeper names a leader other than `url` (never for a
    /// fixed address).
    async fn leader_other_than(&mut self, url: Option<&str>) {
        let MasterSource::ZooKeeper { leader, .. } = self else {
            return std::future::pending().await;
        };
        loop {
            if leader.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = leader
                .borrow_and_update()
                .as_ref()
                .map(|l| format!("http://{}", agora_coord::address_of(l)));
            if now.is_some() && now.as_deref() != url {
                return;
            }
        }
    }
}

/// The leader a refusing master named, if any.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
    crate::config::master_url(value).ok()
}

/// Keeps a session with the master open until `shutdown`.
pub(crate) async fn run(
    master_url: String,
    core: CoreHandle,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    let mut source = MasterSource::new(&master_url);
    let mut session: u64 = 0;
    let mut redirect: Option<String> = None;
    let mut redirects = 0u32;
    loop {
        session += 1;
        let target = redirect.take().or_else(|| source.current());
        let end = match &target {
            None => {
                SessionEnd::Failed("no master leads at the moment (ZooKeeper names none)".into())
            }
            Some(url) => {
                tokio::select! {
                    end = one_session(session, url, &core, &mut backoff, &shutdown) => end,
                    _ = source.leader_other_than(Some(url)) => {
                        SessionEnd::Failed(format!("the leading master changed; leaving {url}"))
                    }
                }
            }
        };
        let _ = core.send(Command::Disconnected { session }).await;
        let master = target.as_deref().unwrap_or(master_url.as_str());
        match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Redirect(leader) if redirects < MAX_REDIRECTS => {
                redirects += 1;
                info!(%master, %leader, "that master does not lead; going to the leader it named");
                redirect = Some(leader);
            }
            SessionEnd::Redirect(leader) => {
                redirects = 0;
                let delay = backoff.next_delay();
                warn!(%master, %leader, retry_in = ?delay, "masters keep naming other leaders; backing off");
                if sleep_or_new_leader(&mut source, target.as_deref(), delay, &shutdown).await {
                    return;
                }
            }
            SessionEnd::Failed(why) => {
                redirects = 0;
                let delay = backoff.next_delay();
                warn!(%master, retry_in = ?delay, "{why}");
                if sleep_or_new_leader(&mut source, target.as_deref(), delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Waits `delay` before the next attempt, or less when ZooKeeper names a new
/// leader meanwhile. Returns true on shutdown.
async fn sleep_or_new_leader(
    source: &mut MasterSource,
    tried: Option<&str>,
    delay: Duration,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => return true,
        _ = tokio::time::sleep(delay) => return false,
        _ = source.leader_other_than(tried) => {}
    }
    let jitter = NEW_LEADER_JITTER.mul_f64(fastrand::f64());
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(jitter) => false,
    }
}

async fn one_session(
    session: u64,
    url: &str,
    core: &CoreHandle,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> SessionEnd {
    use SessionEnd::{Failed, Shutdown};
    let endpoint = match Endpoint::from_shared(url.to_string()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true),
        Err(e) => return Failed(format!("bad master address {url}: {e}")),
    };
    let channel = tokio::select! {
        _ = shutdown.cancelled() => return Shutdown,
        c = endpoint.connect() => match c {
            Ok(c) => c,
            Err(e) => return Failed(format!("cannot connect to the master: {e}")),
        },
    };
    let register = match core.registration().await {
        Ok(r) => r,
        Err(_) => return Shutdown,
    };
    let reregistering = register.info.as_ref().is_some_and(|i| !i.id.is_empty());
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(AgentMessage {
        message: Some(agent_message::Message::Register(register)),
    });
    let mut client = AgentServiceClient::new(channel);
    let response = tokio::select! {
        _ = shutdown.cancelled() => return Shutdown,
        r = client.session(UnboundedReceiverStream::new(rx)) => match r {
            Ok(r) => r,
            Err(status) => {
                if let Some(leader) = leader_hint(&status) {
                    return SessionEnd::Redirect(leader);
                }
                return Failed(format!("the master did not open a session: {status}"));
            }
        },
    };
    debug!(
        reregistering,
        "session open; waiting for the master's answer"
    );
    let mut inbound = response.into_inner();
    let register_deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut heartbeat: Option<tokio::time::Interval> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Shutdown,
            _ = tokio::time::sleep_until(register_deadline), if heartbeat.is_none() => {
                return Failed(format!(
                    "the master did not answer the registration within {}s",
                    REGISTER_TIMEOUT.as_secs()
                ));
            }
            _ = tick(&mut heartbeat) => {
                let hb = AgentMessage { message: Some(agent_message::Message::Heartbeat(AgentHeartbeat {})) };
                if tx.send(hb).is_err() {
                    return Failed("the session's outbound stream closed".into());
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match m.message {
                    Some(master_to_agent::Message::Registered(r)) => {
                        let every = heartbeat_interval(r.heartbeat_interval_seconds);
                        info!(agent_id = %r.agent_id, heartbeat = ?every, reregistering, "the master accepted the agent");
                        let mut iv = tokio::time::interval_at(Instant::now() + every, every);
                        iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        heartbeat = Some(iv);
                        backoff.reset();
                        let (accepted, answer) = tokio::sync::oneshot::channel();
                        let cmd = Command::Registered { session, registered: r, outbound: tx.clone(), accepted };
                        if core.send(cmd).await.is_err() {
                            return Shutdown;
                        }
                        match answer.await {
                            Ok(Ok(())) => {}
                            Ok(Err(why)) => {
                                return Failed(format!("the agent cannot take the registration: {why}"));
                            }
                            Err(_) => return Shutdown,
                        }
                    }
                    Some(master_to_agent::Message::Refused(r)) => {
                        let _ = core.send(Command::Refused { session, message: r.message.clone() }).await;
                        return Failed(format!("the master refused the agent: {}", r.message));
                    }
                    Some(other) => {
                        if core.send(Command::Master(other)).await.is_err() {
                            return Shutdown;
                        }
                    }
                    None => debug!("ignoring an empty message from the master"),
                },
                Ok(None) => return Failed("the master closed the session".into()),
                Err(status) => return Failed(format!("the session with the master broke: {status}")),
            },
        }
    }
}

/// The master's heartbeat interval, sanitised (10 ms to 1 h; 15 s if none).
fn heartbeat_interval(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds.clamp(0.01, 3600.0))
    } else {
        DEFAULT_HEARTBEAT
    }
}

async fn tick(iv: &mut Option<tokio::time::Interval>) {
    match iv {
        Some(iv) => {
            iv.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_naming_the_leader_is_followed() {
        let mut s = tonic::Status::unavailable("this master is not the leader");
        s.metadata_mut()
            .insert(LEADER_METADATA, "127.0.0.1:5052".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("http://127.0.0.1:5052"));
        assert_eq!(leader_hint(&tonic::Status::unavailable("no leader")), None);
        let mut junk = tonic::Status::unavailable("x");
        junk.metadata_mut()
            .insert(LEADER_METADATA, "zk://nope".parse().unwrap());
        assert_eq!(leader_hint(&junk), None);
    }

    #[test]
    fn heartbeat_interval_is_sane() {
        assert_eq!(heartbeat_interval(5.0), Duration::from_secs(5));
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e-9), Duration::from_millis(10));
        assert_eq!(heartbeat_interval(1e9), Duration::from_secs(3600));
    }
}
