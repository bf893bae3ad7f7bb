//! Bounded outbound queues: what the actor has decided to send on one
//! stream (to an agent or a framework) and the stream has not yet taken.
//!
//! A peer that stops reading stops the stream's task from taking from its
//! queue (HTTP/2 flow control), so the queue is where a stuck peer's
//! backlog would grow. Each queue is bounded in messages and in bytes
//! ([`QueueLimits`]); a push that would pass a bound fails with
//! [`Overflow`], and the actor then ends the stream with the reason and
//! treats the peer as disconnected (its resources are recovered as for any
//! disconnection).
//!
//! Offers of one allocation cycle share one buffer (see
//! [`crate::core::EncodedOffers`]). A batch that waits in the queue of a
//! peer that is behind would keep that whole buffer alive, so whenever a
//! queue is not empty when something is pushed (its peer did not take the
//! last flush), every batch in it gets its own copy of its offers
//! ([`Queued::detach`]): one slow reader then pins nothing but its own,
//! bounded, backlog.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;
use futures::task::AtomicWaker;
use tonic::Status;

/// The bounds of one stream's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages waiting at most.
    pub messages: usize,
    /// Bytes (encoded) waiting at most.
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            messages: 50_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

/// What a queue holds: it knows its encoded size, and may share memory
/// with others until detached.
pub(crate) trait Queued {
    /// Bytes on the wire.
    fn size(&self) -> usize;
    /// Stops sharing memory with other messages (a copy of what it
    /// shares). Whether it shared any before.
    fn detach(&mut self) -> bool {
        false
    }
}

/// A push refused: the queue is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overflow {
    pub messages: usize,
    pub bytes: usize,
    pub limits: QueueLimits,
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the peer does not read its stream: {} messages ({} bytes) wait to be sent, over \
             the limit of {} messages or {} bytes",
            self.messages, self.bytes, self.limits.messages, self.limits.bytes
        )
    }
}

/// Counts over every queue of one kind (agent or framework streams), for
/// `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct QueueGauges {
    pub messages: AtomicUsize,
    pub bytes: AtomicUsize,
    /// The most bytes that one queue ever held.
    pub peak_bytes: AtomicUsize,
}

/// Makes the queues of a term's streams (with its limits, counted in its
/// metrics).
#[derive(Clone)]
pub(crate) struct Queues {
    pub limits: QueueLimits,
    pub agents: Arc<QueueGauges>,
    pub frameworks: Arc<QueueGauges>,
}

impl Queues {
    /// A queue for an agent's session.
    pub fn agent(
        &self,
    ) -> (
        OutTx<agora_proto::v1::MasterToAgent>,
        OutRx<agora_proto::v1::MasterToAgent>,
    ) {
        queue(self.limits, self.agents.clone())
    }

    /// A queue for a framework's subscription.
    pub fn framework(&self) -> (OutTx<crate::core::OutEvent>, OutRx<crate::core::OutEvent>) {
        queue(self.limits, self.frameworks.clone())
    }
}

enum End {
    /// The stream ends once what is queued went out.
    Close,
    /// The stream ends at once with this status (what was queued is dropped).
    Fail(Status),
}

struct State<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    end: Option<End>,
    /// Whether items may share memory with other messages (see
    /// [`Queued::detach`]).
    shared: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    waker: AtomicWaker,
    gauges: Arc<QueueGauges>,
}

/// The actor's end of a queue. Dropping it ends the stream once the queue
/// is drained.
pub(crate) struct OutTx<T: Queued> {
    shared: Arc<Shared<T>>,
    limits: QueueLimits,
}

/// The stream's end: yields what was pushed, then (if the queue failed) the
/// failure, then ends.
pub(crate) struct OutRx<T: Queued> {
    shared: Arc<Shared<T>>,
    done: bool,
}

/// A new queue.
pub(crate) fn queue<T: Queued>(
    limits: QueueLimits,
    gauges: Arc<QueueGauges>,
) -> (OutTx<T>, OutRx<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bytes: 0,
            end: None,
            shared: false,
        }),
        waker: AtomicWaker::new(),
        gauges,
    });
    (
        OutTx {
            shared: shared.clone(),
            limits,
        },
        OutRx {
            shared,
            done: false,
        },
    )
}

impl<T: Queued> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic elsewhere while holding it leaves consistent counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, messages: usize, bytes: usize) {
        self.gauges.messages.fetch_sub(messages, Ordering::Relaxed);
        self.gauges.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl<T: Queued> OutTx<T> {
    /// Queues `item`, or refuses it when the queue would pass a bound (an
    /// empty queue takes any one message, however large).
    pub fn push(&self, mut item: T) -> Result<(), Overflow> {
        let size = item.size();
        let mut st = self.shared.lock();
        if st.end.is_some() {
            // Ended: nobody will read it.
            return Ok(());
        }
        let (messages, bytes) = (st.items.len() + 1, st.bytes + size);
        if !st.items.is_empty() && (messages > self.limits.messages || bytes > self.limits.bytes) {
            return Err(Overflow {
                messages,
                bytes,
                limits: self.limits,
            });
        }
        if st.items.is_empty() {
            // The peer took everything: this may share memory until it is
            // taken.
            st.shared = true;
        } else {
            // The peer is behind: nothing waiting here may keep memory
            // that others share alive.
            if st.shared {
                for (queued, _) in st.items.iter_mut() {
                    queued.detach();
                }
                st.shared = false;
            }
            item.detach();
        }
        st.items.push_back((item, size));
        st.bytes = bytes;
        drop(st);
        let g = &self.shared.gauges;
        g.messages.fetch_add(1, Ordering::Relaxed);
        g.bytes.fetch_add(size, Ordering::Relaxed);
        g.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
        self.shared.waker.wake();
        Ok(())
    }

    /// Ends the stream at once with `status`, dropping what waits.
    pub fn fail(&self, status: Status) {
        let mut st = self.shared.lock();
        let (n, bytes) = (st.items.len(), st.bytes);
        st.items.clear();
        st.bytes = 0;
        st.end = Some(End::Fail(status));
        drop(st);
        self.shared.forget(n, bytes);
        self.shared.waker.wake();
    }

    /// Messages and bytes waiting.
    #[cfg(test)]
    pub fn queued(&self) -> (usize, usize) {
        let st = self.shared.lock();
        (st.items.len(), st.bytes)
    }
}

impl<T: Queued> Drop for OutTx<T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.end.is_none() {
            st.end = Some(End::Close);
        }
        drop(st);
        self.shared.waker.wake();
    }
}

impl<T: Queued> OutRx<T> {
    fn poll_next_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut registered = false;
        loop {
            let mut st = self.shared.lock();
            if let Some((item, size)) = st.items.pop_front() {
                st.bytes -= size;
                drop(st);
                self.shared.forget(1, size);
                return Poll::Ready(Some(Ok(item)));
            }
            match st.end.take() {
                Some(End::Fail(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Some(End::Close) => {
                    st.end = Some(End::Close);
                    self.done = true;
                    return Poll::Ready(None);
                }
                None => {}
            }
            drop(st);
            if registered {
                return Poll::Pending;
            }
            // Register, then look again (a push may have come in between).
            self.shared.waker.register(cx.waker());
            registered = true;
        }
    }

    /// The next item (for tasks that read the queue by hand).
    pub async fn recv(&mut self) -> Option<Result<T, Status>> {
        std::future::poll_fn(|cx| self.poll_next_item(cx)).await
    }

    /// The next item if one waits now.
    pub fn try_recv(&mut self) -> Option<Result<T, Status>> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self.poll_next_item(&mut cx) {
            Poll::Ready(x) => x,
            Poll::Pending => None,
        }
    }
}

impl<T: Queued> Stream for OutRx<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_item(cx)
    }
}

impl<T: Queued> Drop for OutRx<T> {
    fn drop(&mut self) {
        // Whatever is left is dropped with the queue: take it off the counts.
        let mut st = self.shared.lock();
        let (n, bytes) = (st.items.len(), st.bytes);
        st.items.clear();
        st.bytes = 0;
        if st.end.is_none() {
            st.end = Some(End::Close);
        }
        drop(st);
        self.shared.forget(n, bytes);
    }
}

#[cfg(test)]
impl<T: Queued> OutTx<T> {
    /// Whether the stream's end is gone (nobody reads the queue any more).
    pub fn is_closed(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl Queued for agora_proto::v1::MasterToAgent {
    fn size(&self) -> usize {
        prost::Message::encoded_len(self)
    }
}

impl Queued for crate::core::OutEvent {
    fn size(&self) -> usize {
        self.encoded_len()
    }

    fn detach(&mut self) -> bool {
        match self {
            crate::core::OutEvent::Offers(o) => o.detach(),
            crate::core::OutEvent::Event(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[derive(Debug, PartialEq)]
    struct Msg(usize, bool);

    impl Queued for Msg {
        fn size(&self) -> usize {
            self.0
        }
        fn detach(&mut self) -> bool {
            std::mem::replace(&mut self.1, false)
        }
    }

    fn limits(messages: usize, bytes: usize) -> QueueLimits {
        QueueLimits { messages, bytes }
    }

    #[tokio::test]
    async fn a_queue_refuses_what_passes_its_bounds_and_counts_what_waits() {
        let gauges = Arc::new(QueueGauges::default());
        let (tx, mut rx) = queue::<Msg>(limits(3, 100), gauges.clone());
        // One message larger than the bound still goes when nothing waits.
        tx.push(Msg(150, false)).unwrap();
        assert_eq!(
            tx.push(Msg(1, false)),
            Err(Overflow {
                messages: 2,
                bytes: 151,
                limits: limits(3, 100)
            })
        );
        assert_eq!(rx.next().await.unwrap().unwrap(), Msg(150, false));
        for _ in 0..3 {
            tx.push(Msg(10, false)).unwrap();
        }
        assert!(tx.push(Msg(10, false)).unwrap_err().messages == 4);
        assert_eq!(tx.queued(), (3, 30));
        assert_eq!(gauges.messages.load(Ordering::Relaxed), 3);
        assert_eq!(gauges.bytes.load(Ordering::Relaxed), 30);
        assert_eq!(gauges.peak_bytes.load(Ordering::Relaxed), 150);
        rx.next().await.unwrap().unwrap();
        assert_eq!(gauges.bytes.load(Ordering::Relaxed), 20);
        // Failing drops what waits and ends with the status.
        tx.fail(Status::resource_exhausted("too slow"));
        assert_eq!(gauges.messages.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.bytes.load(Ordering::Relaxed), 0);
        let end = rx.next().await.unwrap().unwrap_err();
        assert_eq!(end.message(), "too slow");
        assert!(rx.next().await.is_none());
        // Pushing to an ended queue is a no-op.
        tx.push(Msg(1, false)).unwrap();
    }

    #[tokio::test]
    async fn a_dropped_sender_ends_the_stream_after_what_waits() {
        let gauges = Arc::new(QueueGauges::default());
        let (tx, rx) = queue::<Msg>(limits(10, 1000), gauges.clone());
        let reader = tokio::spawn(rx.collect::<Vec<_>>());
        tx.push(Msg(1, false)).unwrap();
        tx.push(Msg(2, false)).unwrap();
        drop(tx);
        let got = reader.await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|m| m.is_ok()));
        assert_eq!(gauges.bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_queue_behind_its_peer_holds_no_shared_memory() {
        let gauges = Arc::new(QueueGauges::default());
        let (tx, mut rx) = queue::<Msg>(limits(10, 1000), gauges);
        // Taken at once: may stay shared while it waits alone.
        tx.push(Msg(1, true)).unwrap();
        // A second push finds the first still there: both are detached.
        tx.push(Msg(1, true)).unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap(), Msg(1, false));
        assert_eq!(rx.try_recv().unwrap().unwrap(), Msg(1, false));
        assert!(rx.try_recv().is_none());
        tx.push(Msg(1, true)).unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap(), Msg(1, true));
    }

    #[test]
    fn a_dropped_reader_forgets_what_waited() {
        let gauges = Arc::new(QueueGauges::default());
        let (tx, rx) = queue::<Msg>(limits(10, 1000), gauges.clone());
        tx.push(Msg(5, false)).unwrap();
        tx.push(Msg(5, false)).unwrap();
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(gauges.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.messages.load(Ordering::Relaxed), 0);
    }
}
