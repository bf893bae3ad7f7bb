//! The agent's session with the master: one bidirectional gRPC stream,
//! opened with `register`, kept alive with heartbeats, reopened with
//! jittered exponential backoff whenever it breaks.
//!
//! ```text
//!   Connecting --connected--> Registering --registered--> Registered
//!       ^                          |                          |
//!       +------- backoff <---------+--- refused / error / end-+
//! ```

use std::time::Duration;

use agora_proto::v1::agent_service_client::AgentServiceClient;
use agora_proto::v1::{AgentHeartbeat, AgentMessage, agent_message, master_to_agent};
use tokio::sync::mpsc;
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

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Failed(String),
}

/// Keeps a session with the master open until `shutdown`.
pub(crate) async fn run(
    master_url: String,
    core: CoreHandle,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    let mut session: u64 = 0;
    loop {
        session += 1;
        let end = one_session(session, &master_url, &core, &mut backoff, &shutdown).await;
        let _ = core.send(Command::Disconnected { session }).await;
        match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Failed(why) => {
                let delay = backoff.next_delay();
                warn!(master = %master_url, retry_in = ?delay, "{why}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
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
            Err(status) => return Failed(format!("the master did not open a session: {status}")),
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
                        let cmd = Command::Registered { session, registered: r, outbound: tx.clone() };
                        if core.send(cmd).await.is_err() {
                            return Shutdown;
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
    fn heartbeat_interval_is_sane() {
        assert_eq!(heartbeat_interval(5.0), Duration::from_secs(5));
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e-9), Duration::from_millis(10));
        assert_eq!(heartbeat_interval(1e9), Duration::from_secs(3600));
    }
}
