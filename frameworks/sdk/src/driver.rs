//! The driver task: one loop that connects, subscribes, reads the master's
//! events, and reconnects.
//!
//! ```text
//!            +-----------+  subscribed   +------------+
//!  start --> | Connecting| ------------> | Subscribed |
//!            +-----------+               +------------+
//!              ^   |  refused (error)       |  stream broke, closed,
//!              |   v                        |  or heartbeats missed
//!              |  Stopped <-- stop/teardown-+
//!              |                            v
//!              +------- backoff --------- Disconnected
//! ```
//!
//! The driver alone owns the connection. Handles send calls straight into the
//! request stream of the current session (through [`Link`]), so a call never
//! waits for the driver task.

use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{
    self, Call, FrameworkInfo, event, scheduler_service_client::SchedulerServiceClient,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use crate::backoff::Backoff;
use crate::handle::{Command, Shared};
use crate::master::{MasterDetector, leader_hint};
use crate::{Event, SchedulerConfig, SchedulerError, calls};

/// The largest message the driver reads or writes: a batch of offers from a
/// large cluster is far above gRPC's default of 4 MiB.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The heartbeat interval assumed when the master does not give one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Redirects (a standby naming the leader) followed in a row without
/// backing off.
const MAX_REDIRECTS: u32 = 3;

/// Longest random wait before dialing a new leader, so that the frameworks
/// of a cluster do not all arrive in the same millisecond.
const NEW_LEADER_JITTER: Duration = Duration::from_millis(200);

pub(crate) struct Driver {
    config: SchedulerConfig,
    detector: MasterDetector,
    backoff: Backoff,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    span: tracing::Span,
}

/// A subscribed session.
struct Session {
    /// The request stream; dropping every sender half-closes it.
    calls: mpsc::UnboundedSender<Call>,
    inbound: Streaming<v1::Event>,
    subscribed: v1::Subscribed,
    /// The master this session is with (`http://host:port`).
    uri: String,
    /// Keeps the connection's service alive for as long as the session.
    _client: SchedulerServiceClient<Channel>,
}

/// Why an attempt to subscribe failed.
enum ConnectError {
    /// Worth retrying: the master is unreachable, slow, or not leading.
    Transient(String),
    /// The master does not lead and named the leader: try it at once.
    Redirect(String),
    /// The master refused the framework; resubscribing cannot help.
    Refused(String),
}

/// Why the driver stops.
enum Stop {
    /// `Scheduler::stop`.
    Asked(oneshot::Sender<()>),
    /// `Scheduler::teardown`, with its outcome.
    TornDown(
        oneshot::Sender<Result<(), SchedulerError>>,
        Result<(), SchedulerError>,
    ),
    /// The master refused the framework.
    Refused(String),
    /// Nobody can call the driver any more.
    HandlesDropped,
    /// Nobody listens to the driver any more.
    ReceiverDropped,
}

/// How a session ended.
enum SessionEnd {
    Reconnect(String),
    Stop(Stop),
}

impl Driver {
    pub(crate) fn new(
        config: SchedulerConfig,
        detector: MasterDetector,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<Event>,
        span: tracing::Span,
    ) -> Driver {
        Driver {
            backoff: Backoff::new(config.reconnect_min, config.reconnect_max),
            config,
            detector,
            shared,
            commands,
            events,
            span,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        let mut redirects = 0u32;
        let mut tried = String::new();
        let stop = loop {
            let framework = self.framework_info();
            let resubscribing = !framework.id.is_empty();
            let connected = {
                let connecting = connect(
                    &mut self.detector,
                    framework,
                    self.config.connect_timeout,
                    &mut tried,
                );
                tokio::pin!(connecting);
                loop {
                    tokio::select! {
                        biased;
                        command = self.commands.recv() => {
                            if let Some(stop) = refuse_while_disconnected(command) {
                                break Err(stop);
                            }
                        }
                        result = &mut connecting => break Ok(result),
                        _ = self.events.closed() => break Err(Stop::ReceiverDropped),
                    }
                }
            };
            let reason = match connected {
                Err(stop) => break stop,
                Ok(Err(ConnectError::Refused(message))) => {
                    tracing::warn!(%message, "the master refused the subscription");
                    let _ = self.events.send(Event::Error(message.clone()));
                    break Stop::Refused(message);
                }
                Ok(Err(ConnectError::Redirect(reason))) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    tracing::info!(%reason, "going to the leading master");
                    continue;
                }
                Ok(Err(ConnectError::Redirect(reason) | ConnectError::Transient(reason))) => {
                    redirects = 0;
                    reason
                }
                Ok(Ok(session)) => {
                    attempt = 0;
                    redirects = 0;
                    match self.run_session(session, resubscribing).await {
                        SessionEnd::Stop(stop) => break stop,
                        SessionEnd::Reconnect(reason) => reason,
                    }
                }
            };
            let retry_in = self.backoff.random_delay(attempt);
            attempt = attempt.saturating_add(1);
            tracing::info!(%reason, ?retry_in, "disconnected from the master");
            if self
                .events
                .send(Event::Disconnected { reason, retry_in })
                .is_err()
            {
                break Stop::ReceiverDropped;
            }
            if let Some(stop) = self.wait(retry_in, &tried).await {
                break stop;
            }
        };
        self.finish(stop);
    }

    /// The `FrameworkInfo` to subscribe with: the configured one, with the id
    /// the master gave once it gave one.
    fn framework_info(&self) -> FrameworkInfo {
        let mut framework = self.config.framework.clone();
        if let Some(id) = &self.shared.link.lock().framework_id {
            framework.id = id.clone();
        }
        framework
    }

    /// Sleeps between two connection attempts, answering commands. A new
    /// leader (other than `tried`) cuts the sleep short, to a random
    /// fraction of a second.
    async fn wait(&mut self, delay: Duration, tried: &str) -> Option<Stop> {
        let mut until = Instant::now() + delay;
        let mut new_leader = false;
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    if let Some(stop) = refuse_while_disconnected(command) {
                        return Some(stop);
                    }
                }
                _ = tokio::time::sleep_until(until) => return None,
                _ = self.events.closed() => return Some(Stop::ReceiverDropped),
                _ = self.detector.leader_other_than(tried), if !new_leader => {
                    new_leader = true;
                    let jitter = NEW_LEADER_JITTER.mul_f64(rand::random::<f64>());
                    until = until.min(Instant::now() + jitter);
                }
            }
        }
    }

    async fn run_session(&mut self, mut session: Session, resubscribing: bool) -> SessionEnd {
        let framework_id = session.subscribed.framework_id.clone();
        let master = session.subscribed.master_info.clone().unwrap_or_default();
        let heartbeat = heartbeat_interval(session.subscribed.heartbeat_interval_seconds);
        let silence = heartbeat.saturating_mul(self.config.missed_heartbeats);
        self.span.record("framework_id", framework_id.as_str());
        {
            let mut link = self.shared.link.lock();
            if let Some(previous) = &link.framework_id
                && *previous != framework_id
            {
                tracing::warn!(%previous, "the master gave a different framework id");
            }
            link.framework_id = Some(framework_id.clone());
            link.offers.clear();
            // Suppression survives the reconnection: say it again before any
            // other call can be sent.
            if resubscribing && !link.suppressed.is_empty() {
                let roles = link.suppressed.iter().cloned().collect();
                let _ = session.calls.send(calls::suppress(roles));
            }
            link.calls = Some(session.calls.clone());
        }
        tracing::info!(
            master = %master.id,
            resubscribed = resubscribing,
            ?heartbeat,
            "subscribed"
        );
        let end = if self
            .events
            .send(Event::Subscribed {
                framework_id,
                master,
                resubscribed: resubscribing,
            })
            .is_err()
        {
            SessionEnd::Stop(Stop::ReceiverDropped)
        } else {
            self.read_events(&mut session, silence).await
        };
        {
            let mut link = self.shared.link.lock();
            link.calls = None;
            link.offers.clear();
        }
        end
    }

    /// Delivers the master's events until the session ends.
    async fn read_events(&mut self, session: &mut Session, silence: Duration) -> SessionEnd {
        let mut deadline = Instant::now() + silence;
        let uri = session.uri.clone();
        // The master closes a stream on purpose, with no hope of coming back,
        // by sending `error` and then ending the stream.
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                // The framework's commands first, so that a stop or teardown
                // is never overtaken by a busy stream or a dropped receiver.
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Stop { done }) => return SessionEnd::Stop(Stop::Asked(done)),
                    Some(Command::Teardown { done }) => {
                        let result = self.teardown(session).await;
                        return SessionEnd::Stop(Stop::TornDown(done, result));
                    }
                    None => return SessionEnd::Stop(Stop::HandlesDropped),
                },
                message = session.inbound.message() => match message {
                    Ok(Some(message)) => {
                        deadline = Instant::now() + silence;
                        last_error = None;
                        let Some(event) = message.event else { continue };
                        if let event::Event::Error(e) = &event {
                            last_error = Some(e.message.clone());
                        }
                        if let Err(stop) = self.deliver(event) {
                            return SessionEnd::Stop(stop);
                        }
                    }
                    Ok(None) => {
                        return match last_error {
                            Some(message) => SessionEnd::Stop(Stop::Refused(message)),
                            None => SessionEnd::Reconnect("the master closed the stream".into()),
                        };
                    }
                    Err(status) => {
                        return SessionEnd::Reconnect(format!(
                            "the stream to the master broke: {}",
                            describe_status(&status)
                        ));
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return SessionEnd::Reconnect(format!(
                        "no word from the master for {:.1} s ({} heartbeat intervals)",
                        silence.as_secs_f64(),
                        self.config.missed_heartbeats
                    ));
                }
                _ = self.detector.leader_other_than(&uri) => {
                    return SessionEnd::Reconnect(format!(
                        "the leading master changed; leaving {uri}"
                    ));
                }
                _ = self.events.closed() => return SessionEnd::Stop(Stop::ReceiverDropped),
            }
        }
    }

    /// Turns one event of the master into an [`Event`] for the framework.
    fn deliver(&self, event: event::Event) -> Result<(), Stop> {
        let event = match event {
            event::Event::Heartbeat(_) => return Ok(()),
            event::Event::Subscribed(s) => {
                tracing::warn!(framework_id = %s.framework_id, "ignoring a second `subscribed`");
                return Ok(());
            }
            event::Event::Offers(o) => {
                let mut link = self.shared.link.lock();
                for offer in &o.offers {
                    link.offers.insert(offer.id.clone(), offer.agent_id.clone());
                }
                tracing::debug!(count = o.offers.len(), "offers");
                Event::Offers(o.offers)
            }
            event::Event::Rescind(r) => {
                let mut link = self.shared.link.lock();
                for id in &r.offer_ids {
                    link.offers.remove(id);
                }
                Event::Rescind(r.offer_ids)
            }
            event::Event::Updates(u) => {
                for s in &u.statuses {
                    tracing::debug!(
                        task_id = %s.task_id,
                        agent_id = %s.agent_id,
                        state = s.state().as_str_name(),
                        "status update"
                    );
                }
                Event::Updates(u.statuses)
            }
            event::Event::Error(e) => {
                tracing::warn!(message = %e.message, "the master refused a call");
                Event::Error(e.message)
            }
            event::Event::Failure(f) => Event::Failure {
                agent_id: f.agent_id,
            },
        };
        self.events.send(event).map_err(|_| Stop::ReceiverDropped)
    }

    /// Sends `teardown`, half-closes the request stream, and waits for the
    /// master to end the response stream, which confirms the teardown.
    async fn teardown(&mut self, session: &mut Session) -> Result<(), SchedulerError> {
        let sent = session.calls.send(calls::teardown());
        {
            // No call may follow the teardown; dropping the last sender
            // half-closes the request stream.
            let mut link = self.shared.link.lock();
            link.calls = None;
        }
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut session.calls, closed));
        if sent.is_err() {
            return Err(SchedulerError::NotConnected);
        }
        let timeout = self.config.teardown_timeout;
        let drained = tokio::time::timeout(timeout, async {
            loop {
                match session.inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(status = %describe_status(&status), "stream ended after teardown");
                        break;
                    }
                }
            }
        })
        .await;
        match drained {
            Ok(()) => {
                tracing::info!("framework torn down");
                Ok(())
            }
            Err(_) => Err(SchedulerError::TeardownUnconfirmed { waited: timeout }),
        }
    }

    /// Marks the driver stopped, tells the framework why, and answers whoever
    /// asked for the stop.
    fn finish(self, stop: Stop) {
        {
            let mut link = self.shared.link.lock();
            link.stopped = true;
            link.calls = None;
            link.offers.clear();
        }
        let reason = match &stop {
            Stop::Asked(_) => "stopped by the framework".to_string(),
            Stop::TornDown(_, Ok(())) => "the framework was torn down".to_string(),
            Stop::TornDown(_, Err(e)) => format!("the framework was torn down: {e}"),
            Stop::Refused(message) => format!("the master refused the framework: {message}"),
            Stop::HandlesDropped => "every Scheduler handle was dropped".to_string(),
            Stop::ReceiverDropped => "the event receiver was dropped".to_string(),
        };
        tracing::info!(%reason, "scheduler driver stopped");
        let _ = self.events.send(Event::Stopped { reason });
        match stop {
            Stop::Asked(done) => {
                let _ = done.send(());
            }
            Stop::TornDown(done, result) => {
                let _ = done.send(result);
            }
            Stop::Refused(_) | Stop::HandlesDropped | Stop::ReceiverDropped => {}
        }
    }
}

/// What a command means while there is no session: a teardown cannot be sent
/// (the framework may retry once subscribed), a stop stops.
fn refuse_while_disconnected(command: Option<Command>) -> Option<Stop> {
    match command {
        Some(Command::Teardown { done }) => {
            let _ = done.send(Err(SchedulerError::NotConnected));
            None
        }
        Some(Command::Stop { done }) => Some(Stop::Asked(done)),
        None => Some(Stop::HandlesDropped),
    }
}

/// One attempt: connect to the leading master, send `subscribe`, and wait for
/// its answer.
async fn connect(
    detector: &mut MasterDetector,
    framework: FrameworkInfo,
    timeout: Duration,
    tried: &mut String,
) -> Result<Session, ConnectError> {
    let uri = detector.leader().await.map_err(ConnectError::Transient)?;
    tried.clone_from(&uri);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| ConnectError::Transient(format!("bad master address {uri}: {e}")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| {
        ConnectError::Transient(format!(
            "cannot connect to the master at {uri}: {}",
            describe_error(&e)
        ))
    })?;
    let mut client = SchedulerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    let _ = calls_tx.send(calls::subscribe(framework));
    let answer = async {
        let mut inbound = client
            .subscribe(UnboundedReceiverStream::new(calls_rx))
            .await?
            .into_inner();
        loop {
            match inbound.message().await? {
                Some(v1::Event {
                    event: Some(event::Event::Heartbeat(_)),
                }) => continue,
                first => return Ok::<_, Status>((first, inbound)),
            }
        }
    };
    let (first, inbound) = match tokio::time::timeout(timeout, answer).await {
        Err(_) => {
            return Err(ConnectError::Transient(format!(
                "the master at {uri} did not answer subscribe within {:.1} s",
                timeout.as_secs_f64()
            )));
        }
        Ok(Err(status)) => {
            let what = format!(
                "the master at {uri} refused subscribe: {}",
                describe_status(&status)
            );
            if status.code() == Code::Unavailable
                && let Some(leader) = leader_hint(&status)
                && detector.redirect(&leader).is_some_and(|next| next != uri)
            {
                return Err(ConnectError::Redirect(what));
            }
            return Err(match status.code() {
                Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated => {
                    ConnectError::Refused(what)
                }
                _ => ConnectError::Transient(what),
            });
        }
        Ok(Ok(answer)) => answer,
    };
    match first.and_then(|e| e.event) {
        Some(event::Event::Subscribed(subscribed)) => Ok(Session {
            calls: calls_tx,
            inbound,
            subscribed,
            uri,
            _client: client,
        }),
        Some(event::Event::Error(e)) => Err(ConnectError::Refused(e.message)),
        Some(other) => Err(ConnectError::Transient(format!(
            "the master at {uri} answered subscribe with {other:?} instead of `subscribed`"
        ))),
        None => Err(ConnectError::Transient(format!(
            "the master at {uri} closed the stream without answering subscribe"
        ))),
    }
}

fn heartbeat_interval(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds.clamp(0.01, 24.0 * 3600.0))
    } else {
        DEFAULT_HEARTBEAT
    }
}

/// An error and its causes, e.g. "transport error: tcp connect error:
/// Connection refused (os error 111)".
fn describe_error(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn describe_status(status: &Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(" (");
        text.push_str(&describe_error(source));
        text.push(')');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_interval_defaults_and_bounds() {
        assert_eq!(heartbeat_interval(15.0), Duration::from_secs(15));
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(0.0001), Duration::from_millis(10));
    }
}
