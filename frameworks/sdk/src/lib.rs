//! `agora-scheduler`: the scheduler driver every Agora framework uses.
//!
//! A framework is a program that receives resource offers from the Agora
//! master and decides which tasks to launch on them. This crate holds its
//! connection to the master: it connects, subscribes (the master gives the
//! framework its id), delivers what the master says as [`Event`]s, sends the
//! framework's calls (accept, decline, kill, acknowledge, reconcile, ...),
//! and after a disconnection reconnects with jittered exponential backoff
//! and resubscribes with the same framework id, so the framework keeps its
//! tasks. The wire protocol is described in `docs/protocol.md` ("Framework
//! session"); this crate's guide is `docs/scheduler-sdk.md`.
//!
//! # Usage
//!
//! ```no_run
//! use agora_scheduler::{Event, Scheduler, SchedulerConfig};
//! use agora_proto::v1::{CommandInfo, TaskInfo};
//! use agora_proto::{Resources, is_terminal};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SchedulerConfig::new("127.0.0.1:5050", "hello");
//! let (scheduler, mut events) = Scheduler::start(config)?;
//! let wanted = Resources::parse("cpus:0.1;mem:32")?;
//! let mut launched = false;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Subscribed { framework_id, .. } => println!("subscribed as {framework_id}"),
//!         Event::Offers(offers) => {
//!             for offer in offers {
//!                 let offered = Resources::from_proto(&offer.resources)?;
//!                 if launched || !offered.contains(&wanted) {
//!                     scheduler.decline(vec![offer.id], None)?;
//!                     continue;
//!                 }
//!                 let task = TaskInfo {
//!                     name: "hello".into(),
//!                     task_id: "hello-1".into(),
//!                     agent_id: offer.agent_id.clone(),
//!                     resources: wanted.to_proto(),
//!                     command: Some(CommandInfo {
//!                         value: "echo hello".into(),
//!                         ..Default::default()
//!                     }),
//!                     ..Default::default()
//!                 };
//!                 scheduler.accept(vec![offer.id], vec![task], None)?;
//!                 launched = true;
//!             }
//!         }
//!         Event::Updates(statuses) => {
//!             // Acknowledge every update, or the agent keeps resending it.
//!             scheduler.acknowledge(&statuses)?;
//!             if statuses.iter().any(|s| is_terminal(s.state())) {
//!                 scheduler.teardown().await?;
//!             }
//!         }
//!         Event::Disconnected { reason, .. } => eprintln!("disconnected: {reason}"),
//!         Event::Stopped { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A complete example framework is `examples/hello.rs` in this crate
//! (`cargo run -p agora-scheduler --example hello -- --master 127.0.0.1:5050`).
//!
//! # What the driver guarantees
//!
//! * Events arrive in the order the master sent them. [`Event::Stopped`] is
//!   always the last one.
//! * Calls are only sent while subscribed; otherwise they fail at once with
//!   [`SchedulerError::NotConnected`]. Offers received before a reconnection
//!   are void; unacknowledged updates are sent again by the master after the
//!   resubscription, so a lost acknowledgement costs nothing.
//! * A broken stream, a failed connection attempt, or `missed_heartbeats`
//!   heartbeat intervals of silence each give one [`Event::Disconnected`],
//!   then a new attempt after a jittered, growing delay. Once subscribed
//!   again the driver emits [`Event::Subscribed`] with `resubscribed: true`
//!   and the same framework id, and suppresses again the roles the framework
//!   had suppressed.
//! * When the master refuses the subscription (it answers `error`, e.g. for a
//!   framework id it removed), or ends the stream right after an `error`
//!   (e.g. "framework failed over" when another instance took the id over),
//!   the driver emits [`Event::Error`] then [`Event::Stopped`] and stops:
//!   trying again cannot help.

mod backoff;
mod calls;
mod config;
mod driver;
mod error;
mod event;
mod handle;
mod master;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::SchedulerConfig;
pub use error::SchedulerError;
pub use event::Event;
pub use handle::Scheduler;
