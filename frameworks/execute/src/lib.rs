//! `agora-execute`: the logic of `agora execute`, Agora's `mesos-execute`.
//!
//! `agora execute --master ADDR --name NAME --command CMD [--resources
//! 'cpus:0.1;mem:32'] [--env K=V]... [--role R]` registers as its own
//! framework (`agora-execute`, no failover timeout), waits for an offer that
//! holds the requested resources (declining the others), launches one task
//! with exactly those resources, prints each state change as it happens,
//! and tears the framework down when the task has ended.
//!
//! The binary only parses flags and calls [`run`] (or [`run_with_cancel`]
//! to handle Ctrl-C), then exits with [`Outcome::exit_code`] or
//! [`ExecuteError::exit_code`]:
//!
//! ```no_run
//! use agora_execute::{ExecuteConfig, run_with_cancel};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn cli() -> i32 {
//! let config = ExecuteConfig::new("127.0.0.1:5050", "hello", "echo hello");
//! let cancel = CancellationToken::new();
//! let on_ctrl_c = cancel.clone();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     on_ctrl_c.cancel();
//! });
//! match run_with_cancel(config, &mut std::io::stdout(), cancel).await {
//!     Ok(outcome) => outcome.exit_code,
//!     Err(e) => {
//!         eprintln!("agora execute: {e}");
//!         e.exit_code()
//!     }
//! }
//! # }
//! ```
//!
//! What it prints, for a task that runs and finishes:
//!
//! ```text
//! Subscribed as framework 3f1c...-0001
//! Waiting for an offer with cpus:0.1;mem:32 ...        (only when the first offers do not fit)
//! Launching task hello-1a2b3c4d with cpus:0.1;mem:32 on agent 3f1c...-S0 (node1)
//! hello-1a2b3c4d TASK_STAGING
//! hello-1a2b3c4d TASK_STARTING
//! hello-1a2b3c4d TASK_RUNNING on agent 3f1c...-S0 (node1)
//! hello-1a2b3c4d TASK_FINISHED: Command exited with status 0
//! ```

mod config;
mod error;
mod launch;
mod progress;
mod run;

pub use config::{DEFAULT_RESOURCES, ExecuteConfig};
pub use error::ExecuteError;
pub use launch::{new_task_id, offer_fits, task_info};
pub use progress::Outcome;
pub use run::{run, run_with_cancel};
