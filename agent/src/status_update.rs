//! The status-update stream of one task: ordered, reliable delivery.
//!
//! Pure state, no I/O and no clock of its own (time comes in as an
//! argument): the agent's core persists the records after each change and
//! sends what [`UpdateStream::due`] says is due.
//!
//! Rules (protocol, "Agent session" 5):
//! * every update carries a fresh uuid and is checkpointed before it is sent;
//! * only the oldest unacknowledged update is in flight; the next one waits
//!   for its acknowledgement;
//! * the head is resent with exponential backoff until an acknowledgement
//!   with its uuid arrives, and at once after every (re)registration;
//! * an acknowledgement with any other uuid is ignored;
//! * of the acknowledged updates only the latest is kept.

use std::time::Duration;

use agora_proto::is_terminal;
use agora_proto::v1::{TaskState, TaskStatus};
use tokio::time::Instant;

use crate::checkpoint::UpdateRecord;

/// How often an unacknowledged update is resent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
}

/// What an acknowledgement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// It acknowledged the head; `terminal` when that update was the task's
    /// terminal one (the stream is then complete).
    Acknowledged { terminal: bool },
    /// It named no update in flight (a duplicate, or a stale uuid).
    Ignored,
}

/// One task's stream of status updates.
#[derive(Clone, Debug)]
pub struct UpdateStream {
    records: Vec<UpdateRecord>,
    /// Index of the oldest unacknowledged record (== len when all are).
    head: usize,
    /// When the head is next sent; `None`: as soon as there is a master.
    next_send: Option<Instant>,
    /// The wait after the next send.
    backoff: Duration,
    policy: RetryPolicy,
    /// How many updates were ever pushed to this stream (read back from a
    /// checkpoint: as many as it held).
    pushed: u64,
    /// How many of those are known to be checkpointed: an update is sent
    /// only once it is.
    durable: u64,
}

impl UpdateStream {
    pub fn new(policy: RetryPolicy) -> UpdateStream {
        UpdateStream::from_records(Vec::new(), policy)
    }

    /// Rebuilds a stream from its checkpoint. Acknowledgements arrive in
    /// order, so the acknowledged records come first; anything after the
    /// first unacknowledged one is pending.
    pub fn from_records(records: Vec<UpdateRecord>, policy: RetryPolicy) -> UpdateStream {
        let head = records
            .iter()
            .position(|r| !r.acknowledged)
            .unwrap_or(records.len());
        let n = records.len() as u64;
        UpdateStream {
            records,
            head,
            next_send: None,
            backoff: policy.min,
            policy,
            pushed: n,
            durable: n,
        }
    }

    /// How many updates were ever pushed: a checkpoint of the records
    /// taken now makes that many durable ([`UpdateStream::mark_durable`]).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The first `upto` updates ever pushed are checkpointed.
    pub fn mark_durable(&mut self, upto: u64) {
        self.durable = self.durable.max(upto.min(self.pushed));
    }

    /// Whether every update is checkpointed.
    pub fn is_durable(&self) -> bool {
        self.durable == self.pushed
    }

    /// Whether the head (the update to send next) is checkpointed.
    fn head_is_durable(&self) -> bool {
        let behind = (self.records.len() - self.head) as u64;
        self.pushed - behind < self.durable
    }

    pub fn records(&self) -> &[UpdateRecord] {
        &self.records
    }

    /// Appends an update (the caller checkpoints the records before sending).
    pub fn push(&mut self, status: TaskStatus) {
        self.records.push(UpdateRecord {
            status,
            acknowledged: false,
        });
        self.pushed += 1;
    }

    /// The latest update of the task, sent or not.
    pub fn latest(&self) -> Option<&TaskStatus> {
        self.records.last().map(|r| &r.status)
    }

    /// The latest state of the task, as far as the agent knows.
    pub fn latest_state(&self) -> Option<TaskState> {
        self.latest().map(|s| s.state())
    }

    /// The update in flight (the oldest unacknowledged one).
    pub fn head(&self) -> Option<&TaskStatus> {
        self.records.get(self.head).map(|r| &r.status)
    }

    /// How many updates wait for an acknowledgement.
    pub fn pending(&self) -> usize {
        self.records.len() - self.head
    }

    /// Whether the head should be sent now (it is checkpointed, and its
    /// retry is due).
    pub fn due(&self, now: Instant) -> Option<&TaskStatus> {
        let head = self.head()?;
        if !self.head_is_durable() {
            return None;
        }
        match self.next_send {
            Some(at) if at > now => None,
            _ => Some(head),
        }
    }

    /// The head as it is sent: when later updates wait behind it, it says
    /// the task's latest state (`latest_state`), so that the master frees
    /// the resources of a task that ended without waiting for the framework
    /// to acknowledge the earlier updates.
    pub fn outgoing(&self, now: Instant) -> Option<TaskStatus> {
        let mut head = self.due(now)?.clone();
        head.latest_state = (self.pending() > 1)
            .then(|| self.latest_state())
            .flatten()
            .map(|s| s as i32);
        Some(head)
    }

    /// Appends an update that ends the task; if an earlier update is still in
    /// flight, the head is resent at once so that the master hears of the
    /// end (through `latest_state`) without waiting for the retry.
    pub fn push_and_hurry_if_terminal(&mut self, status: TaskStatus) {
        let terminal = is_terminal(status.state());
        self.push(status);
        if terminal && self.pending() > 1 {
            self.resend_now();
        }
    }

    /// Records that the head was sent at `now`; it is resent after the
    /// current backoff, which then doubles (up to the policy's max).
    pub fn mark_sent(&mut self, now: Instant) {
        self.next_send = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.policy.max.max(self.policy.min));
    }

    /// When the head is next due, if it waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.head()?;
        if !self.head_is_durable() {
            return None;
        }
        self.next_send
    }

    /// Sends the head again at once, with the backoff from the start (after
    /// a (re)registration).
    pub fn resend_now(&mut self) {
        self.next_send = None;
        self.backoff = self.policy.min;
    }

    /// Applies an acknowledgement.
    pub fn acknowledge(&mut self, uuid: &[u8]) -> AckOutcome {
        let Some(rec) = self.records.get_mut(self.head) else {
            return AckOutcome::Ignored;
        };
        if uuid.is_empty() || rec.status.uuid != uuid {
            return AckOutcome::Ignored;
        }
        rec.acknowledged = true;
        let terminal = is_terminal(rec.status.state());
        self.head += 1;
        // Only the latest acknowledged update is needed (it is the task's
        // latest state once nothing waits): a task whose health flaps for
        // days must not grow its checkpoint without end.
        if self.head > 1 {
            self.records.drain(..self.head - 1);
            self.head = 1;
        }
        self.resend_now();
        AckOutcome::Acknowledged { terminal }
    }

    /// Whether the task's terminal update has been acknowledged: nothing is
    /// left to deliver and the task may be forgotten.
    pub fn is_complete(&self) -> bool {
        self.pending() == 0 && self.latest_state().is_some_and(is_terminal)
    }

    /// Whether a terminal update has been generated (delivered or not).
    pub fn has_terminal(&self) -> bool {
        self.records.iter().any(|r| is_terminal(r.status.state()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        min: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };

    fn status(state: TaskState) -> TaskStatus {
        let mut s = TaskStatus {
            task_id: "t".into(),
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            ..Default::default()
        };
        s.set_state(state);
        s
    }

    #[test]
    fn the_head_carries_the_latest_state_and_a_terminal_update_hurries_it() {
        let t0 = Instant::now();
        let mut s = UpdateStream::new(POLICY);
        s.push_and_hurry_if_terminal(status(TaskState::TaskRunning));
        s.mark_durable(s.pushed());
        // Alone in the stream: no latest state to tell.
        assert_eq!(s.outgoing(t0).unwrap().latest_state, None);
        s.mark_sent(t0);
        assert!(s.outgoing(t0).is_none(), "waits for its backoff");
        s.push_and_hurry_if_terminal(status(TaskState::TaskFinished));
        s.mark_durable(s.pushed());
        // Due again at once, still RUNNING, saying the task finished.
        let head = s.outgoing(t0).expect("resent at once");
        assert_eq!(head.state(), TaskState::TaskRunning);
        assert_eq!(head.latest_state, Some(TaskState::TaskFinished as i32));
        // Once RUNNING is acknowledged, FINISHED goes out as itself.
        let uuid = head.uuid.clone();
        s.mark_sent(t0);
        s.acknowledge(&uuid);
        let next = s.outgoing(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(next.state(), TaskState::TaskFinished);
        assert_eq!(next.latest_state, None);
    }

    #[test]
    fn one_update_in_flight_resent_with_backoff_until_acknowledged() {
        let t0 = Instant::now();
        let mut s = UpdateStream::new(POLICY);
        assert!(s.due(t0).is_none());
        s.push(status(TaskState::TaskStarting));
        s.mark_durable(s.pushed());
        s.push(status(TaskState::TaskRunning));
        s.mark_durable(s.pushed());
        let starting = s.due(t0).unwrap().uuid.clone();
        s.mark_sent(t0);
        // Not due again before the backoff; RUNNING waits behind STARTING.
        assert!(s.due(t0 + Duration::from_millis(999)).is_none());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
        // Resent with the same uuid, backoff doubling up to the cap.
        let mut at = t0;
        for wait in [1, 2, 4, 4] {
            at += Duration::from_secs(wait);
            assert_eq!(s.due(at).unwrap().uuid, starting);
            s.mark_sent(at);
        }
        // A stale uuid changes nothing.
        assert_eq!(s.acknowledge(b"other"), AckOutcome::Ignored);
        assert_eq!(s.acknowledge(&[]), AckOutcome::Ignored);
        assert_eq!(s.pending(), 2);
        assert_eq!(
            s.acknowledge(&starting),
            AckOutcome::Acknowledged { terminal: false }
        );
        // The next one is due at once, and a repeated ack is ignored.
        assert_eq!(s.due(at).unwrap().state(), TaskState::TaskRunning);
        assert_eq!(s.acknowledge(&starting), AckOutcome::Ignored);
        assert!(!s.is_complete());
    }

    #[test]
    fn only_the_latest_acknowledged_update_is_kept() {
        let mut s = UpdateStream::new(POLICY);
        for _ in 0..100 {
            s.push(status(TaskState::TaskRunning));
            s.mark_durable(s.pushed());
            let uuid = s.head().unwrap().uuid.clone();
            s.acknowledge(&uuid);
        }
        assert_eq!(s.records().len(), 1);
        s.push(status(TaskState::TaskRunning));
        s.mark_durable(s.pushed());
        s.push(status(TaskState::TaskKilled));
        s.mark_durable(s.pushed());
        assert_eq!(s.records().len(), 3);
        assert_eq!(s.pending(), 2);
        let uuid = s.head().unwrap().uuid.clone();
        s.acknowledge(&uuid);
        assert_eq!((s.records().len(), s.pending()), (2, 1));
        let back = UpdateStream::from_records(s.records().to_vec(), POLICY);
        assert_eq!(back.head().unwrap().state(), TaskState::TaskKilled);
        assert_eq!(back.latest_state(), Some(TaskState::TaskKilled));
    }

    #[test]
    fn reregistration_resends_at_once_and_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = UpdateStream::new(POLICY);
        s.push(status(TaskState::TaskRunning));
        s.mark_durable(s.pushed());
        s.mark_sent(t0);
        s.mark_sent(t0);
        s.resend_now();
        assert!(s.due(t0).is_some());
        s.mark_sent(t0);
        assert_eq!(s.next_deadline(), Some(t0 + POLICY.min));
    }

    #[test]
    fn terminal_acknowledgement_completes_the_stream_and_survives_a_checkpoint() {
        let mut s = UpdateStream::new(POLICY);
        s.push(status(TaskState::TaskStarting));
        s.mark_durable(s.pushed());
        s.push(status(TaskState::TaskFinished));
        s.mark_durable(s.pushed());
        let a = s.head().unwrap().uuid.clone();
        s.acknowledge(&a);
        assert!(s.has_terminal() && !s.is_complete());

        // Rebuilt from its records, the stream resumes at the same head.
        let back = UpdateStream::from_records(s.records().to_vec(), POLICY);
        assert_eq!(back.pending(), 1);
        assert_eq!(back.head().unwrap().state(), TaskState::TaskFinished);

        let b = s.head().unwrap().uuid.clone();
        assert_eq!(
            s.acknowledge(&b),
            AckOutcome::Acknowledged { terminal: true }
        );
        assert!(s.is_complete());
        assert!(s.due(Instant::now()).is_none());
        assert!(s.next_deadline().is_none());
        assert_eq!(s.latest_state(), Some(TaskState::TaskFinished));
    }

    #[test]
    fn an_update_is_sent_only_once_it_is_checkpointed() {
        let t0 = Instant::now();
        let mut s = UpdateStream::new(POLICY);
        s.push(status(TaskState::TaskStarting));
        assert!(s.due(t0).is_none(), "not checkpointed yet");
        assert!(s.next_deadline().is_none());
        assert!(!s.is_durable());
        let upto = s.pushed();
        s.push(status(TaskState::TaskRunning));
        s.mark_durable(upto);
        let starting = s.due(t0).expect("the first is durable").uuid.clone();
        s.mark_sent(t0);
        assert_eq!(
            s.acknowledge(&starting),
            AckOutcome::Acknowledged { terminal: false }
        );
        assert!(s.due(t0).is_none(), "RUNNING is not checkpointed yet");
        s.mark_durable(u64::MAX);
        assert!(s.is_durable());
        assert_eq!(s.due(t0).unwrap().state(), TaskState::TaskRunning);
        // A stream read back from its checkpoint is durable.
        let back = UpdateStream::from_records(s.records().to_vec(), POLICY);
        assert!(back.is_durable());
        assert!(back.due(t0).is_some());
    }
}
