//! Docker tasks against the real Docker daemon: output and exit codes, the
//! environment, the memory limit, kills with a grace period, port mappings,
//! volumes, images that cannot be pulled, container removal, an agent killed
//! with SIGKILL and restarted, `agora execute --docker-image`, and the CLI.
//!
//! The tests run the image `agora-test-busybox:1`, built offline from
//! Debian's static busybox (see `tests/common/docker.rs`). Without a Docker
//! daemon they fail under `AGORA_TEST_STRICT=1` (CI) and otherwise say how
//! to run them.

mod common;

use std::time::Duration;

use agora_proto::v1::container_info::docker_info::{Network, PortMapping};
use agora_proto::v1::{
    Environment, KillPolicy, Label, StatusReason, TaskState, Volume, environment::Variable, volume,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, StartContainerOptions,
};
use common::docker::*;
use common::*;

fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
    )
}

#[tokio::test]
async fn output_and_exit_codes_come_back() {
    let Some(docker) = docker_or_skip("output_and_exit_codes_come_back").await else {
        return;
    };
    let (cluster, _guard) = docker_cluster("cpus:2;mem:1024", |_| {}).await;
    let http = cluster.agents[0].http_addr().to_string();
    let fw = TestFramework::start(&cluster.addr(), "docker-echo", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![
            docker_task(
                "hello",
                Some("echo hello from docker; echo oops >&2"),
                "cpus:0.1;mem:32",
            ),
            docker_task("three", Some("exit 3"), "cpus:0.1;mem:32"),
            docker_task("own-command", None, "cpus:0.1;mem:32"),
        ],
    );

    let starting = fw.wait_state("hello", TaskState::TaskStarting).await;
    let running = fw.wait_state("hello", TaskState::TaskRunning).await;
    assert!(starting.timestamp <= running.timestamp);
    let done = fw.wait_state("hello", TaskState::TaskFinished).await;
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(
        task_log(&http, "hello", "stdout").await,
        "hello from docker\n"
    );
    assert_eq!(task_log(&http, "hello", "stderr").await, "oops\n");

    let failed = fw.wait_state("three", TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));
    assert!(failed.message.contains("exit code 3"), "{}", failed.message);

    // No command: the image's own command runs.
    fw.wait_state("own-command", TaskState::TaskFinished).await;
    assert_eq!(
        task_log(&http, "own-command", "stdout").await,
        format!("{IMAGE_GREETING}\n")
    );

    let task = agent_task(&http, "hello").await.unwrap();
    assert_eq!(task["containerizer"], "docker");

    // The agent removes each container once its final status is
    // acknowledged (the test agent keeps none); the logs stay readable.
    eventually("the ended containers removed", DEADLINE, || {
        let docker = docker.clone();
        async move {
            let mut left = 0;
            for t in ["hello", "three", "own-command"] {
                left += usize::from(container_of(&docker, t).await.is_some());
            }
            (left == 0).then_some(())
        }
    })
    .await;
    assert_eq!(
        task_log(&http, "hello", "stdout").await,
        "hello from docker\n"
    );
}

#[tokio::test]
async fn environment_labels_and_sandbox_reach_the_container() {
    let Some(docker) = docker_or_skip("environment_labels_and_sandbox_reach_the_container").await
    else {
        return;
    };
    let (cluster, _guard) = docker_cluster("cpus:2;mem:1024;ports:[31000-31009]", |c| {
        c.docker_remove_delay = Duration::from_secs(3600);
    })
    .await;
    let http = cluster.agents[0].http_addr().to_string();
    let fw = TestFramework::start(&cluster.addr(), "docker-env", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    let mut task = docker_task(
        "env",
        Some(
            "echo \"greeting=$GREETING task=$AGORA_TASK_ID port=$PORT0 sandbox=$MESOS_SANDBOX\"; \
             echo written-inside > $MESOS_SANDBOX/made-in-container",
        ),
        "cpus:0.5;mem:64;ports:[31005-31005]",
    );
    task.command.as_mut().unwrap().environment = Some(Environment {
        variables: vec![Variable {
            name: "GREETING".into(),
            value: "hi there".into(),
        }],
    });
    task.labels = vec![Label {
        key: "team".into(),
        value: "web".into(),
    }];
    fw.launch(&offer, vec![task]);
    let done = fw.wait_state("env", TaskState::TaskFinished).await;
    assert_eq!(
        task_log(&http, "env", "stdout").await,
        "greeting=hi there task=env port=31005 sandbox=/mnt/mesos/sandbox\n"
    );
    let view = agent_task(&http, "env").await.unwrap();
    let sandbox = std::path::PathBuf::from(view["sandbox"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(sandbox.join("made-in-container")).unwrap(),
        "written-inside\n"
    );

    // The stopped container is kept (remove delay of an hour) and labelled.
    let c = container_of(&docker, "env")
        .await
        .expect("the container is kept");
    let labels = c.labels.unwrap();
    assert_eq!(labels["agora.task_id"], "env");
    assert_eq!(labels["agora.framework_id"], fw.id());
    assert_eq!(labels["agora.agent_id"], done.agent_id);
    assert_eq!(labels["team"], "web");
    let inspect = docker
        .inspect_container(c.id.as_deref().unwrap(), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.cpu_shares, Some(512));
    assert_eq!(host.cpu_quota, Some(50_000));
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed() {
    let Some(_docker) = docker_or_skip("a_container_over_its_memory_limit_is_oom_killed").await
    else {
        return;
    };
    let (cluster, _guard) = docker_cluster("cpus:2;mem:1024", |_| {}).await;
    let fw = TestFramework::start(&cluster.addr(), "docker-oom", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    // Doubles a shell variable until it no longer fits in 16 MB.
    fw.launch(
        &offer,
        vec![docker_task(
            "hog",
            Some("x=0123456789; while true; do x=\"$x$x\"; done"),
            "cpus:0.5;mem:16",
        )],
    );
    let failed = fw.wait_state("hog", TaskState::TaskFailed).await;
    assert_eq!(
        failed.reason(),
        StatusReason::ReasonContainerLimitationMemory
    );
    assert!(failed.message.contains("OOM killed"), "{}", failed.message);
    assert_eq!(failed.exit_code, Some(137));
}

#[tokio::test]
async fn kill_sends_sigterm_then_sigkill_after_the_grace_period() {
    let Some(_docker) =
        docker_or_skip("kill_sends_sigterm_then_sigkill_after_the_grace_period").await
    else {
        return;
    };
    let (cluster, _guard) = docker_cluster("cpus:2;mem:1024", |_| {}).await;
    let http = cluster.agents[0].http_addr().to_string();
    let fw = TestFramework::start(&cluster.addr(), "docker-kill", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    // The shell is the container's PID 1: without a trap the kernel drops
    // SIGTERM for it, so only SIGKILL ends `stubborn`.
    let polite = docker_task(
        "polite",
        Some("trap 'echo got SIGTERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"),
        "cpus:0.1;mem:32",
    );
    let mut stubborn = docker_task(
        "stubborn",
        Some("echo ready; while true; do sleep 0.1; done"),
        "cpus:0.1;mem:32",
    );
    stubborn.kill_policy = Some(KillPolicy {
        grace_period: Some(1.0),
    });
    fw.launch(&offer, vec![polite, stubborn]);
    let running = fw.wait_state("polite", TaskState::TaskRunning).await;
    fw.wait_state("stubborn", TaskState::TaskRunning).await;
    wait_log(&http, "polite", "stdout", "ready").await;
    wait_log(&http, "stubborn", "stdout", "ready").await;

    fw.scheduler
        .kill("polite", &running.agent_id, Some(Duration::from_secs(20)))
        .unwrap();
    let killed = fw.wait_state("polite", TaskState::TaskKilled).await;
    assert!(
        killed.message.contains("after SIGTERM"),
        "{}",
        killed.message
    );
    assert_eq!(killed.exit_code, Some(0), "it exited by itself on SIGTERM");
    wait_log(&http, "polite", "stdout", "got SIGTERM").await;

    let asked = tokio::time::Instant::now();
    fw.scheduler
        .kill("stubborn", &running.agent_id, None)
        .unwrap();
    let killed = fw.wait_state("stubborn", TaskState::TaskKilled).await;
    assert!(killed.message.contains("SIGKILL"), "{}", killed.message);
    assert_eq!(killed.exit_code, Some(137));
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "SIGKILL came before the task's grace period of 1s"
    );
}

#[tokio::test]
async fn a_bridge_port_mapping_is_reachable_from_the_host() {
    let Some(_docker) = docker_or_skip("a_bridge_port_mapping_is_reachable_from_the_host").await
    else {
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (cluster, _guard) =
        docker_cluster(&format!("cpus:2;mem:1024;ports:[{port}-{port}]"), |_| {}).await;
    let fw = TestFramework::start(&cluster.addr(), "docker-ports", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    let mut web = docker_task(
        "web",
        Some(
            "mkdir -p /tmp/www && echo \"served from a container on $PORT0\" > /tmp/www/index.html \
             && exec httpd -f -p 8080 -h /tmp/www",
        ),
        &format!("cpus:0.2;mem:32;ports:[{port}-{port}]"),
    );
    let docker = web.container.as_mut().unwrap().docker.as_mut().unwrap();
    docker.set_network(Network::Bridge);
    docker.port_mappings = vec![PortMapping {
        host_port: u32::from(port),
        container_port: 8080,
        protocol: "tcp".into(),
    }];
    fw.launch(&offer, vec![web]);
    let running = fw.wait_state("web", TaskState::TaskRunning).await;
    let url = format!("http://127.0.0.1:{port}/index.html");
    let body = eventually(
        "the container's web server on the host port",
        DEADLINE,
        || {
            let url = url.clone();
            async move {
                let resp = reqwest::get(&url).await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                resp.text().await.ok()
            }
        },
    )
    .await;
    assert_eq!(body, format!("served from a container on {port}\n"));
    fw.scheduler.kill("web", &running.agent_id, None).unwrap();
    fw.wait_state("web", TaskState::TaskKilled).await;
}

#[tokio::test]
async fn volumes_outside_the_allowed_roots_are_refused() {
    let Some(_docker) = docker_or_skip("volumes_outside_the_allowed_roots_are_refused").await
    else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "from the host\n").unwrap();
    let root = data.path().to_path_buf();
    let (cluster, _guard) = docker_cluster("cpus:2;mem:1024", move |c| {
        c.docker_volume_roots = vec![root];
    })
    .await;
    let http = cluster.agents[0].http_addr().to_string();
    let fw = TestFramework::start(&cluster.addr(), "docker-volumes", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    let volume = |host: &str, container: &str| {
        let mut v = Volume {
            host_path: host.into(),
            container_path: container.into(),
            ..Default::default()
        };
        v.set_mode(volume::Mode::Ro);
        v
    };
    let mut allowed = docker_task("allowed", Some("cat /data/hello.txt"), "cpus:0.1;mem:32");
    allowed.container.as_mut().unwrap().volumes =
        vec![volume(data.path().to_str().unwrap(), "/data")];
    let mut refused = docker_task("refused", Some("cat /host-etc/hostname"), "cpus:0.1;mem:32");
    refused.container.as_mut().unwrap().volumes = vec![volume("/etc", "/host-etc")];
    let mut privileged = docker_task("privileged", Some("true"), "cpus:0.1;mem:32");
    privileged
        .container
        .as_mut()
        .unwrap()
        .docker
        .as_mut()
        .unwrap()
        .privileged = true;
    fw.launch(&offer, vec![allowed, refused, privileged]);

    fw.wait_state("allowed", TaskState::TaskFinished).await;
    assert_eq!(
        task_log(&http, "allowed", "stdout").await,
        "from the host\n"
    );

    let error = fw.wait_state("refused", TaskState::TaskError).await;
    assert_eq!(error.reason(), StatusReason::ReasonTaskInvalid);
    assert!(
        error.message.contains("/etc") && error.message.contains("--docker-volume-roots"),
        "{}",
        error.message
    );
    let error = fw.wait_state("privileged", TaskState::TaskError).await;
    assert!(
        error.message.contains("--docker-allow-privileged"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_fast_and_blocks_no_other_launch() {
    let Some(_docker) =
        docker_or_skip("an_image_that_cannot_be_pulled_fails_fast_and_blocks_no_other_launch")
            .await
    else {
        return;
    };
    let (cluster, _guard) = docker_cluster("cpus:4;mem:2048", |_| {}).await;
    let fw = TestFramework::start(&cluster.addr(), "docker-pull", &["*"], 0.0).await;

    // A registry that accepts connections and never answers: its pull
    // hangs for as long as the connections stay open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = {
        let held = held.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                held.lock().unwrap().push(conn);
            }
        })
    };
    let image_task = |id: &str, image: String| {
        let mut t = docker_task(id, Some("echo should not run"), "cpus:0.1;mem:32");
        t.container.as_mut().unwrap().docker.as_mut().unwrap().image = image;
        t
    };
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![
            image_task("hung", format!("127.0.0.1:{hang_port}/agora/hung:1")),
            // Nothing listens on port 1: the daemon's answer comes at once.
            image_task("missing", "127.0.0.1:1/agora/missing:1".into()),
        ],
    );
    let failed = fw
        .wait_for(
            "the missing image's TASK_FAILED",
            Duration::from_secs(20),
            |s| {
                s.latest("missing")
                    .filter(|u| is_terminal(u.state()))
                    .cloned()
            },
        )
        .await;
    assert_eq!(failed.state(), TaskState::TaskFailed);
    assert_eq!(failed.reason(), StatusReason::ReasonContainerLaunchFailed);
    assert!(
        failed
            .message
            .contains("cannot pull the image `127.0.0.1:1/agora/missing:1`")
            && failed.message.contains("connection refused"),
        "the daemon's reason is in the message: {}",
        failed.message
    );

    // While `hung` still waits for its registry, other tasks launch.
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![docker_task(
            "meanwhile",
            Some("echo fine"),
            "cpus:0.1;mem:32",
        )],
    );
    fw.wait_state("meanwhile", TaskState::TaskFinished).await;
    let hung = fw.seen.lock().unwrap().latest("hung").cloned();
    assert_eq!(
        hung.map(|u| u.state()),
        Some(TaskState::TaskStarting),
        "the hung pull is still going"
    );

    // The registry goes away: the pull fails with the daemon's reason.
    holder.abort();
    held.lock().unwrap().clear();
    let failed = fw.wait_state("hung", TaskState::TaskFailed).await;
    assert!(
        failed.message.contains("cannot pull the image"),
        "{}",
        failed.message
    );
}

#[tokio::test]
async fn an_agent_killed_and_restarted_keeps_running_containers_and_reports_ended_ones() {
    let Some(docker) = docker_or_skip(
        "an_agent_killed_and_restarted_keeps_running_containers_and_reports_ended_ones",
    )
    .await
    else {
        return;
    };
    init_logs();
    let (_master, addr) = spawn_master(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let _guard = ContainerGuard::new(dir.path());
    let work = dir.path().join("agent");
    let agent_args = |work: &str| {
        vec![
            "agent".to_string(),
            "--master".into(),
            addr.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--work-dir".into(),
            work.to_string(),
            "--resources".into(),
            "cpus:4;mem:2048".into(),
            "--kill-grace".into(),
            "1s".into(),
            "--containerizers".into(),
            "docker,process".into(),
            "--docker-remove-delay".into(),
            "0s".into(),
        ]
    };
    let args = agent_args(work.to_str().unwrap());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Proc::spawn(&argv, &[]);
    agent.wait_line("the master accepted the agent").await;
    let http = agent.wait_field("starting the agent", "http").await;

    let fw = TestFramework::start(&addr, "docker-restart", &["*"], 60.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![
            docker_task(
                "keeps-running",
                Some("echo up; while true; do sleep 0.1; done"),
                "cpus:0.1;mem:32",
            ),
            docker_task(
                "ends-meanwhile",
                Some(
                    "while [ ! -f $MESOS_SANDBOX/stop ]; do sleep 0.1; done; \
                     echo ended while the agent was away; exit 7",
                ),
                "cpus:0.1;mem:32",
            ),
        ],
    );
    let running = fw.wait_state("keeps-running", TaskState::TaskRunning).await;
    fw.wait_state("ends-meanwhile", TaskState::TaskRunning)
        .await;
    wait_log(&http, "keeps-running", "stdout", "up").await;
    let keeps_id = container_of(&docker, "keeps-running").await.unwrap().id;
    let sandbox = agent_task(&http, "ends-meanwhile").await.unwrap()["sandbox"]
        .as_str()
        .unwrap()
        .to_string();

    agent.kill9().await;

    // While the agent is down: one task ends, and a container of this
    // agent appears that no task owns.
    std::fs::write(std::path::Path::new(&sandbox).join("stop"), "").unwrap();
    eventually("ends-meanwhile's container stopped", DEADLINE, || {
        let docker = docker.clone();
        async move {
            let c = container_of(&docker, "ends-meanwhile").await?;
            (c.state != Some(bollard::models::ContainerSummaryStateEnum::RUNNING)).then_some(())
        }
    })
    .await;
    let orphan = format!(
        "agora-orphan-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let canonical = std::fs::canonicalize(&work).unwrap();
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(orphan.clone()),
                ..Default::default()
            }),
            bollard::models::ContainerCreateBody {
                image: Some(TEST_IMAGE.into()),
                cmd: Some(vec!["sleep".into(), "600".into()]),
                labels: Some(
                    [
                        (
                            "agora.work_dir".to_string(),
                            canonical.to_string_lossy().into_owned(),
                        ),
                        (
                            "agora.container_id".to_string(),
                            orphan.trim_start_matches("agora-").to_string(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker
        .start_container(&orphan, None::<StartContainerOptions>)
        .await
        .unwrap();
    assert!(
        fw.seen
            .lock()
            .unwrap()
            .latest("ends-meanwhile")
            .unwrap()
            .state()
            == TaskState::TaskRunning,
        "nobody reported the end while the agent was down"
    );

    let agent = Proc::spawn(&argv, &[]);
    agent.wait_line("the master accepted the agent").await;
    let http = agent.wait_field("starting the agent", "http").await;

    let ended = fw.wait_state("ends-meanwhile", TaskState::TaskFailed).await;
    assert_eq!(ended.exit_code, Some(7), "{}", ended.message);
    wait_log(
        &http,
        "ends-meanwhile",
        "stdout",
        "ended while the agent was away",
    )
    .await;

    // The running container is the same one, watched again.
    let still = container_of(&docker, "keeps-running").await.unwrap();
    assert_eq!(still.id, keeps_id);
    assert_eq!(
        still.state,
        Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
    );
    assert_eq!(
        agent_task(&http, "keeps-running").await.unwrap()["state"],
        "TASK_RUNNING"
    );
    // The orphan is killed and removed.
    eventually("the orphan container removed", DEADLINE, || {
        let docker = docker.clone();
        let orphan = orphan.clone();
        async move {
            docker
                .inspect_container(&orphan, None::<InspectContainerOptions>)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    // Its log goes on in the same file, without repeating what was copied.
    assert_eq!(task_log(&http, "keeps-running", "stdout").await, "up\n");

    fw.scheduler
        .kill("keeps-running", &running.agent_id, None)
        .unwrap();
    fw.wait_state("keeps-running", TaskState::TaskKilled).await;
    let states: Vec<TaskState> = fw
        .seen
        .lock()
        .unwrap()
        .updates
        .iter()
        .filter(|u| u.task_id == "keeps-running")
        .map(|u| u.state())
        .filter(|s| is_terminal(*s))
        .collect();
    assert_eq!(states, [TaskState::TaskKilled]);
}

#[tokio::test]
async fn execute_runs_its_task_in_a_container() {
    let Some(docker) = docker_or_skip("execute_runs_its_task_in_a_container").await else {
        return;
    };
    init_logs();
    let (_master, addr) = spawn_master(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let _guard = ContainerGuard::new(dir.path());
    let work = dir.path().join("agent");
    let _agent = Proc::spawn(
        &[
            "agent",
            "--master",
            &addr,
            "--listen",
            "127.0.0.1:0",
            "--work-dir",
            work.to_str().unwrap(),
            "--resources",
            "cpus:2;mem:1024",
            "--docker-remove-delay",
            "1h",
        ],
        &[],
    );
    _agent.wait_line("the master accepted the agent").await;
    let line = _agent.wait_line("containerizers=").await;
    assert!(line.contains("containerizers=docker,process"), "{line}");

    let mut run = Proc::spawn(
        &[
            "execute",
            "--master",
            &addr,
            "--name",
            "in-docker",
            "--docker-image",
            TEST_IMAGE,
            "--command",
            "test \"$MESOS_SANDBOX\" = /mnt/mesos/sandbox && exit 4",
        ],
        &[],
    );
    assert_eq!(run.exit_code().await, 4, "{}", run.text());
    let out = run.text();
    assert!(
        out.contains("TASK_RUNNING") && out.contains("TASK_FAILED"),
        "{out}"
    );
    let task_id = out
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("in-docker-")))
        .expect("the task id in the output")
        .to_string();
    let c = container_of(&docker, &task_id)
        .await
        .expect("its container");
    assert_eq!(c.image.as_deref(), Some(TEST_IMAGE));
}

#[tokio::test]
async fn bad_containerizer_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("agent");
    let mut p = Proc::spawn(
        &[
            "agent",
            "--work-dir",
            work.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--containerizers",
            "docker,rkt",
        ],
        &[],
    );
    assert_eq!(p.exit_code().await, 64, "{}", p.text());
    assert!(
        p.text().contains("`rkt` is not a containerizer"),
        "{}",
        p.text()
    );

    let mut p = Proc::spawn(
        &[
            "agent",
            "--work-dir",
            work.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--docker-volume-roots",
            "relative/dir",
        ],
        &[],
    );
    assert_eq!(p.exit_code().await, 64, "{}", p.text());

    // Docker asked for, but no daemon there: a clear error, not a hang.
    let mut p = Proc::spawn(
        &[
            "agent",
            "--work-dir",
            work.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--containerizers",
            "docker",
            "--docker-socket",
            dir.path().join("no-daemon.sock").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(p.exit_code().await, 1, "{}", p.text());
    assert!(
        p.text().contains("cannot reach the Docker daemon"),
        "{}",
        p.text()
    );
}

#[tokio::test]
async fn dev_says_which_containerizers_it_uses() {
    let Some(_docker) = docker_or_skip("dev_says_which_containerizers_it_uses").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _guard = ContainerGuard::new(dir.path());
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    for (name, extra, says) in [
        ("auto", None, "docker,process (Docker at "),
        ("plain", Some("process"), "process (no Docker daemon"),
    ] {
        let data = dir.path().join(name);
        let (master, agent) = (free_port(), free_port());
        let mut args = vec![
            "dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &master,
            "--agent-listen",
            &agent,
            "--batch-listen",
            "127.0.0.1:0",
            "--services-listen",
            "127.0.0.1:0",
        ];
        if let Some(c) = extra {
            args.extend(["--containerizers", c]);
        }
        let p = Proc::spawn(&args, &[]);
        let line = p.wait_line("containerizers:").await;
        assert!(line.contains(says), "{line}");
    }
}

/// A process task still runs beside Docker tasks, and `/state` says which
/// containerizer runs each.
#[tokio::test]
async fn plain_commands_still_run_as_processes() {
    let Some(_docker) = docker_or_skip("plain_commands_still_run_as_processes").await else {
        return;
    };
    let (cluster, _guard) = docker_cluster("cpus:2;mem:1024", |_| {}).await;
    let http = cluster.agents[0].http_addr().to_string();
    let fw = TestFramework::start(&cluster.addr(), "mixed", &["*"], 0.0).await;
    let offer = fw.take_offer().await;
    fw.launch(
        &offer,
        vec![
            shell_task("plain", "echo as a process", "cpus:0.1;mem:32"),
            docker_task("boxed", Some("echo in a container"), "cpus:0.1;mem:32"),
        ],
    );
    fw.wait_state("plain", TaskState::TaskFinished).await;
    fw.wait_state("boxed", TaskState::TaskFinished).await;
    assert_eq!(
        agent_task(&http, "plain").await.unwrap()["containerizer"],
        "process"
    );
    assert_eq!(
        agent_task(&http, "boxed").await.unwrap()["containerizer"],
        "docker"
    );
    assert_eq!(task_log(&http, "plain", "stdout").await, "as a process\n");
    assert_eq!(task_log(&http, "boxed", "stdout").await, "in a container\n");
}
