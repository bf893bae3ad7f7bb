//! `hello`: the smallest complete Agora framework.
//!
//! It launches N `echo` tasks on the offers it gets (as many per offer as
//! fit), acknowledges every status update, and exits when every task has
//! ended: 0 when all finished, 1 otherwise. Ctrl-C tears the framework down
//! (which kills its tasks).
//!
//! ```text
//! cargo run -p agora-scheduler --example hello -- --master 127.0.0.1:5050 --tasks 3
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;

use agora_proto::v1::{CommandInfo, Offer, StatusReason, TaskInfo, TaskState};
use agora_proto::{Resources, is_terminal};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};

/// What each task asks for.
const TASK_RESOURCES: &str = "cpus:0.1;mem:32";

struct Args {
    master: String,
    tasks: usize,
    role: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        master: "127.0.0.1:5050".into(),
        tasks: 3,
        role: "*".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--master" => args.master = value()?,
            "--tasks" => args.tasks = value()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--role" => args.role = value()?,
            "-h" | "--help" => {
                return Err("usage: hello [--master HOST:PORT] [--tasks N] [--role ROLE]".into());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(args)
}

/// Where each task stands, as far as the framework knows.
#[derive(Debug, Clone, PartialEq)]
enum Progress {
    /// Not launched yet.
    Pending,
    /// Launched on an agent; the latest state we heard of.
    Launched { agent_id: String, state: TaskState },
    /// Ended in this state.
    Ended(TaskState),
}

struct Hello {
    scheduler: Scheduler,
    role: String,
    wanted: Resources,
    tasks: BTreeMap<String, Progress>,
}

impl Hello {
    fn pending(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, p)| **p == Progress::Pending)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn all_ended(&self) -> bool {
        self.tasks.values().all(|p| matches!(p, Progress::Ended(_)))
    }

    /// Launches as many pending tasks as fit in each offer; declines the rest.
    fn offers(&mut self, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = match Resources::from_proto(&offer.resources) {
                Ok(r) => r.allocatable_to(&self.role),
                Err(e) => {
                    eprintln!("offer {} has invalid resources: {e}", offer.id);
                    Resources::new()
                }
            };
            let mut launch = Vec::new();
            for task_id in self.pending() {
                let Some(rest) = left.checked_sub(&self.wanted) else {
                    break;
                };
                left = rest;
                launch.push(TaskInfo {
                    name: task_id.clone(),
                    task_id: task_id.clone(),
                    agent_id: offer.agent_id.clone(),
                    resources: self.wanted.to_proto(),
                    command: Some(CommandInfo {
                        shell: Some(true),
                        value: format!("echo 'hello from {task_id}'"),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            let result = if launch.is_empty() {
                self.scheduler.decline(vec![offer.id.clone()], Some(5.0))
            } else {
                for task in &launch {
                    println!(
                        "launching {} on {} ({})",
                        task.task_id, offer.agent_id, offer.hostname
                    );
                    self.tasks.insert(
                        task.task_id.clone(),
                        Progress::Launched {
                            agent_id: offer.agent_id.clone(),
                            state: TaskState::TaskStaging,
                        },
                    );
                }
                self.scheduler.accept(vec![offer.id.clone()], launch, None)
            };
            if let Err(e) = result {
                // Disconnected: the offer is void anyway, and tasks launched
                // with it are settled by reconciliation after resubscribing.
                eprintln!("cannot answer offer {}: {e}", offer.id);
            }
        }
        if self.pending().is_empty() {
            // Everything launched: no more offers, please.
            let _ = self.scheduler.suppress(vec![]);
        }
    }

    fn updates(&mut self, statuses: &[agora_proto::v1::TaskStatus]) {
        let mut relaunch = false;
        for status in statuses {
            let state = status.state();
            let Some(progress) = self.tasks.get_mut(&status.task_id) else {
                continue;
            };
            if matches!(progress, Progress::Ended(_)) {
                continue;
            }
            println!(
                "{} {}{}",
                status.task_id,
                state.as_str_name(),
                if status.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", status.message)
                }
            );
            *progress = if state == TaskState::TaskLost
                && status.reason() == StatusReason::ReasonInvalidOffers
            {
                // The offer was gone before the launch: launch it again on
                // another one.
                relaunch = true;
                Progress::Pending
            } else if is_terminal(state) {
                Progress::Ended(state)
            } else {
                Progress::Launched {
                    agent_id: status.agent_id.clone(),
                    state,
                }
            };
        }
        // Acknowledge after recording, so the agent stops resending them.
        if let Err(e) = self.scheduler.acknowledge(statuses) {
            eprintln!("cannot acknowledge (the agent will resend): {e}");
        }
        if relaunch {
            let _ = self.scheduler.revive(vec![]);
        }
    }

    /// After a reconnection: ask for the state of every launched task, in
    /// case an update was missed.
    fn reconcile(&self) {
        let launched: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter_map(|(id, p)| match p {
                Progress::Launched { agent_id, .. } => Some((id.clone(), agent_id.clone())),
                _ => None,
            })
            .collect();
        if !launched.is_empty() {
            let _ = self.scheduler.reconcile(launched);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(64);
        }
    };
    let mut config = SchedulerConfig::new(&args.master, "hello");
    config.framework.roles = vec![args.role.clone()];
    // Long enough to ride out a reconnection, short enough that the master
    // cleans up a minute after hello is gone.
    config.framework.failover_timeout = 60.0;
    let (scheduler, mut events) = match Scheduler::start(config) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let mut hello = Hello {
        scheduler: scheduler.clone(),
        role: args.role,
        wanted: Resources::parse(TASK_RESOURCES).expect("valid resources"),
        tasks: (1..=args.tasks)
            .map(|i| (format!("hello-{i}"), Progress::Pending))
            .collect(),
    };
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: tearing the framework down");
                let _ = scheduler.teardown().await;
                return ExitCode::from(130);
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Subscribed {
                framework_id,
                resubscribed,
                ..
            } => {
                println!("subscribed as framework {framework_id}");
                if resubscribed {
                    hello.reconcile();
                }
            }
            Event::Offers(offers) => hello.offers(offers),
            Event::Updates(statuses) => {
                hello.updates(&statuses);
                if hello.all_ended() {
                    let failed = hello
                        .tasks
                        .values()
                        .filter(|p| **p != Progress::Ended(TaskState::TaskFinished))
                        .count();
                    println!(
                        "all {} tasks ended, {failed} did not finish",
                        hello.tasks.len()
                    );
                    if let Err(e) = scheduler.teardown().await {
                        eprintln!("teardown: {e}");
                    }
                    return if failed == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    };
                }
            }
            Event::Rescind(_) | Event::Failure { .. } => {}
            Event::Error(message) => eprintln!("the master says: {message}"),
            Event::Disconnected { reason, retry_in } => {
                eprintln!("disconnected ({reason}); retrying in {retry_in:.1?}")
            }
            Event::Stopped { reason } => {
                eprintln!("stopped: {reason}");
                break;
            }
        }
    }
    ExitCode::FAILURE
}
