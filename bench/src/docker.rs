//! `agora bench docker`: how close Agora comes to the Docker daemon's own
//! speed at starting containers.
//!
//! In one run, on one daemon, with one image and one command:
//!
//! * **agora**: a master and an agent (Docker containerizer) in this
//!   process, and a framework (the scheduler SDK) that launches
//!   `--containers` Docker tasks in one accept. Measured from the accept to
//!   the last `TASK_RUNNING` update reaching the framework.
//! * **docker run**: the same number of `docker run -d --network NETWORK
//!   IMAGE COMMAND` at once, through the Engine API (create, then start: what
//!   `docker run -d` does), measured until the last start returns. This is
//!   the daemon's own ceiling: no scheduler can start containers faster than
//!   the daemon. Both sides use the same network mode (`--network`, host by
//!   default): a bridge network costs the daemon much more per container.
//!
//! The image is made present first (pulled if needed) and one container is
//! run and removed before measuring, so neither side pays for a cold cache.
//! Each of `--rounds` rounds measures both (alternating which goes first);
//! the medians are reported, with `ratio` = agora / docker run. Every
//! container is removed between rounds and at the end.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::{self, TaskState, container_info};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// `agora bench docker`.
#[derive(Debug, Clone, clap::Args)]
pub struct DockerArgs {
    /// Containers to start, at once, on each side.
    #[arg(long, env = "AGORA_CONTAINERS", default_value_t = 50)]
    pub containers: usize,
    /// The image both sides run (pulled first when it is not present).
    #[arg(long, env = "AGORA_IMAGE")]
    pub image: String,
    /// The command each container runs (split on spaces, passed as argv to
    /// the image's entrypoint, as `docker run -d IMAGE COMMAND` does).
    #[arg(long, env = "AGORA_COMMAND", default_value = "sleep 3600")]
    pub command: String,
    /// The containers' network, on both sides: `host` (Agora's default, as
    /// in Mesos) or `bridge` (`docker run`'s default).
    #[arg(long, env = "AGORA_NETWORK", default_value = "host", value_parser = ["host", "bridge"])]
    pub network: String,
    /// Rounds; the medians are reported.
    #[arg(long, env = "AGORA_ROUNDS", default_value_t = 3)]
    pub rounds: usize,
    /// The Docker daemon (default: $DOCKER_HOST, else /var/run/docker.sock).
    #[arg(long, env = "AGORA_DOCKER_SOCKET")]
    pub docker_socket: Option<String>,
}

/// Label on the baseline's containers, so they can be cleaned up.
const BASELINE_LABEL: &str = "agora.bench";

/// What one run measured.
#[derive(Debug, Clone)]
pub struct DockerReport {
    pub containers: usize,
    pub network: String,
    /// Median seconds from the accept to the last TASK_RUNNING.
    pub agora_s: f64,
    /// Median seconds for the parallel `docker run -d`s.
    pub docker_run_s: f64,
}

impl DockerReport {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "containers": self.containers,
            "network": self.network,
            "agora_s": round3(self.agora_s),
            "docker_run_s": round3(self.docker_run_s),
            "ratio": round3(self.agora_s / self.docker_run_s),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs the benchmark.
pub async fn run(args: &DockerArgs) -> anyhow::Result<DockerReport> {
    anyhow::ensure!(args.containers > 0, "--containers must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let argv: Vec<String> = args.command.split_whitespace().map(String::from).collect();
    anyhow::ensure!(!argv.is_empty(), "--command is empty");
    let host = args
        .docker_socket
        .clone()
        .unwrap_or_else(agora_agent::containerizer::default_docker_host);
    let docker = agora_agent::containerizer::connect_docker(&host).await?;
    ensure_image(&docker, &args.image).await?;

    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let result = measure(args, &argv, &host, &docker, dir.path(), &shutdown).await;
    shutdown.cancel();
    // Whatever happened, leave no container behind.
    remove_labelled(&docker, BASELINE_LABEL).await;
    remove_labelled(&docker, agora_agent::containerizer::LABEL_WORK_DIR).await;
    result
}

async fn measure(
    args: &DockerArgs,
    argv: &[String],
    host: &str,
    docker: &Docker,
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<DockerReport> {
    let n = args.containers;
    let master = agora_master::start(
        agora_master::MasterConfig {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        shutdown.child_token(),
    )
    .await?;
    let mut agent = agora_agent::AgentConfig::new(master.addr().to_string(), dir.join("agent"));
    agent.listen = "127.0.0.1:0".parse()?;
    agent.resources = Some(Resources::parse(&format!(
        "cpus:{};mem:{};disk:1000;ports:[31000-32000]",
        n + 1,
        n * 32 + 1024
    ))?);
    agent.containerizers = Some(vec![agora_agent::ContainerizerKind::Docker]);
    agent.docker_host = Some(host.to_string());
    agent.docker_remove_delay = Duration::ZERO;
    let agent = agora_agent::start(agent, shutdown.child_token()).await?;
    let work_dir = std::fs::canonicalize(dir.join("agent"))?;

    let (scheduler, events) = Scheduler::start(SchedulerConfig::new(
        master.addr().to_string(),
        "bench-docker",
    ))?;
    let mut framework = Framework::new(scheduler, events);

    // Warm up both paths once (not measured).
    let network = args.network.as_str();
    docker_run(docker, &args.image, argv, network, 1).await?;
    remove_labelled(docker, BASELINE_LABEL).await;
    framework
        .run_round(&args.image, argv, network, 1, "warmup")
        .await?;
    framework.kill_all().await?;
    wait_removed(docker, &work_dir).await;

    let (mut agora, mut baseline) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                eprintln!("round {}: {n} containers through agora", round + 1);
                let t = framework
                    .run_round(&args.image, argv, network, n, &format!("r{round}"))
                    .await?;
                agora.push(t);
                framework.kill_all().await?;
                wait_removed(docker, &work_dir).await;
            } else {
                eprintln!("round {}: {n} parallel docker run -d", round + 1);
                baseline.push(docker_run(docker, &args.image, argv, network, n).await?);
                remove_labelled(docker, BASELINE_LABEL).await;
            }
        }
    }
    drop(agent);
    Ok(DockerReport {
        containers: n,
        network: args.network.clone(),
        agora_s: median(agora),
        docker_run_s: median(baseline),
    })
}

/// Pulls the image unless it is present.
async fn ensure_image(docker: &Docker, image: &str) -> anyhow::Result<()> {
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    eprintln!("pulling {image}");
    let (from_image, tag) = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    };
    let mut pull = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(from_image),
            tag: Some(tag),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(step) = pull.next().await {
        step.map_err(|e| anyhow::anyhow!("cannot pull {image}: {e}"))?;
    }
    Ok(())
}

/// `n` parallel `docker run -d --network NETWORK IMAGE ARGV...`; seconds
/// until all started.
async fn docker_run(
    docker: &Docker,
    image: &str,
    argv: &[String],
    network: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let runs = (0..n).map(|_| {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(argv.to_vec()),
            labels: Some(HashMap::from([(
                BASELINE_LABEL.to_string(),
                "1".to_string(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some(network.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            let c = docker.create_container(None, body).await?;
            docker.start_container(&c.id, None).await
        }
    });
    for r in futures::future::join_all(runs).await {
        r?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Force-removes every container that carries `label`.
async fn remove_labelled(docker: &Docker, label: &str) {
    let Ok(list) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    let removals = list.into_iter().filter_map(|c| c.id).map(|id| async move {
        let _ = docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    });
    futures::future::join_all(removals).await;
}

/// Waits until the agent has removed its containers (after their final
/// updates were acknowledged).
async fn wait_removed(docker: &Docker, work_dir: &std::path::Path) {
    let label = format!(
        "{}={}",
        agora_agent::containerizer::LABEL_WORK_DIR,
        work_dir.display()
    );
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let left = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), vec![label.clone()])])),
                ..Default::default()
            }))
            .await
            .map(|l| l.len())
            .unwrap_or(0);
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The benchmark's framework.
struct Framework {
    scheduler: Scheduler,
    events: mpsc::UnboundedReceiver<Event>,
    /// Tasks running now, with their agents.
    running: HashMap<String, String>,
    /// Offers not used yet (all from the one agent).
    offers: Vec<v1::Offer>,
}

impl Framework {
    fn new(scheduler: Scheduler, events: mpsc::UnboundedReceiver<Event>) -> Framework {
        Framework {
            scheduler,
            events,
            running: HashMap::new(),
            offers: Vec::new(),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Event> {
        let e = tokio::time::timeout(Duration::from_secs(120), self.events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("nothing happened for 120s"))?
            .ok_or_else(|| anyhow::anyhow!("the scheduler stopped"))?;
        match &e {
            Event::Updates(u) => self.scheduler.acknowledge(u)?,
            Event::Offers(o) => self.offers.extend(o.iter().cloned()),
            Event::Rescind(ids) => self.offers.retain(|o| !ids.contains(&o.id)),
            _ => {}
        }
        Ok(e)
    }

    /// Launches `n` Docker tasks in one accept; seconds from the accept to
    /// the last TASK_RUNNING.
    async fn run_round(
        &mut self,
        image: &str,
        argv: &[String],
        network: &str,
        n: usize,
        round: &str,
    ) -> anyhow::Result<f64> {
        // Wait until the outstanding offers hold all n tasks (resources of
        // the previous round come back as offers of their own).
        let need = Resources::parse(&format!("cpus:{};mem:{}", n as f64 * 0.1, n * 32))?;
        loop {
            let mut have = Resources::new();
            for o in &self.offers {
                have.add(&Resources::from_proto(&o.resources)?);
            }
            if have.contains(&need) {
                break;
            }
            self.next().await?;
        }
        let offer_ids: Vec<String> = self.offers.drain(..).map(|o| o.id).collect();
        let tasks: Vec<v1::TaskInfo> = (0..n)
            .map(|i| docker_task(&format!("{round}-{i}"), image, argv, network))
            .collect();
        let mut waiting: HashSet<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        let started = Instant::now();
        self.scheduler.accept(offer_ids, tasks, Some(0.0))?;
        while !waiting.is_empty() {
            if let Event::Updates(updates) = self.next().await? {
                for u in updates {
                    match u.state() {
                        TaskState::TaskRunning => {
                            if waiting.remove(&u.task_id) {
                                self.running.insert(u.task_id.clone(), u.agent_id.clone());
                            }
                        }
                        TaskState::TaskStarting | TaskState::TaskStaging => {}
                        other => anyhow::bail!(
                            "task {} ended {}: {}",
                            u.task_id,
                            other.as_str_name(),
                            u.message
                        ),
                    }
                }
            }
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Kills every running task (no grace) and waits for their ends.
    async fn kill_all(&mut self) -> anyhow::Result<()> {
        for (task, agent) in &self.running {
            self.scheduler.kill(task, agent, Some(Duration::ZERO))?;
        }
        while !self.running.is_empty() {
            if let Event::Updates(updates) = self.next().await? {
                for u in updates {
                    if agora_proto::is_terminal(u.state()) {
                        self.running.remove(&u.task_id);
                    }
                }
            }
        }
        Ok(())
    }
}

fn docker_task(id: &str, image: &str, argv: &[String], network: &str) -> v1::TaskInfo {
    let mut docker = container_info::DockerInfo {
        image: image.to_string(),
        ..Default::default()
    };
    docker.set_network(if network == "bridge" {
        container_info::docker_info::Network::Bridge
    } else {
        container_info::docker_info::Network::Host
    });
    let mut container = v1::ContainerInfo {
        docker: Some(docker),
        ..Default::default()
    };
    container.set_type(container_info::Type::Docker);
    v1::TaskInfo {
        name: id.to_string(),
        task_id: id.to_string(),
        resources: Resources::parse("cpus:0.1;mem:32")
            .expect("valid resources")
            .to_proto(),
        // No shell: argv goes to the image's entrypoint, as with docker run.
        command: Some(v1::CommandInfo {
            shell: Some(false),
            value: argv[0].clone(),
            arguments: argv[1..].to_vec(),
            ..Default::default()
        }),
        container: Some(container),
        ..Default::default()
    }
}
