//! Faults of the agent's own machine: a checkpoint directory that fills up.
//!
//! The work directory is a small tmpfs mounted by the test (the tests run as
//! root); without the right to mount, the test says so and passes, or fails
//! under `AGORA_TEST_STRICT=1`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::v1::TaskState;

use crate::common::*;

/// A tmpfs mounted on a temporary directory; unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`4m`), or `None` when this process may
    /// not mount (a panic under `AGORA_TEST_STRICT=1`).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                let how = format!("cannot mount a tmpfs ({why}): run the tests as root");
                if std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1") {
                    panic!("{how} (AGORA_TEST_STRICT=1: this test needs it)");
                }
                eprintln!("skipping: {how}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the file system up; returns the file that does it.
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, not {e}");
                    break;
                }
            }
        }
        // The last partial page too.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of a metric line (`name{labels} value`) in `/metrics`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_launch_that_cannot_be_checkpointed_fails_and_the_agent_turns_unhealthy() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let master = FakeMaster::start().await;
    let work = fs.path().join("agent");
    let agent = TestAgent::start(config(&master, &work)).await;
    agent.wait_id().await;
    assert_eq!(get(agent.url("/health")).await, (200, "ok".into()));

    let filler = fs.fill();
    master.launch(
        &framework("f1"),
        vec![shell_task("unrecorded", RUN_UNTIL_SANDBOX_GONE)],
    );
    let failed = master
        .wait_update("unrecorded", TaskState::TaskFailed)
        .await;
    assert!(
        failed.message.contains("cannot checkpoint the task")
            && failed.message.contains("No space left on device"),
        "{}",
        failed.message
    );
    let updates = updates_of(&master.seen(), "unrecorded");
    assert!(
        !updates.iter().any(|s| s.state() == TaskState::TaskRunning),
        "the task never ran: {updates:?}"
    );
    let containers: Vec<_> = std::fs::read_dir(work.join("containers"))
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert!(
        containers.is_empty(),
        "no supervisor started: {containers:?}"
    );

    let (status, body) = get(agent.url("/health")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("checkpoint writes fail") && body.contains("No space left"),
        "{body}"
    );
    let (_, text) = get(agent.url("/metrics")).await;
    assert!(
        metric(&text, "agora_agent_checkpoint_failures_total").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        agent
            .running
            .as_ref()
            .unwrap()
            .metrics()
            .checkpoint_error()
            .is_some()
    );

    // With room again, launches work and the agent is healthy.
    std::fs::remove_file(&filler).unwrap();
    master.launch(
        &framework("f1"),
        vec![shell_task("recorded", RUN_UNTIL_SANDBOX_GONE)],
    );
    master.wait_update("recorded", TaskState::TaskRunning).await;
    eventually("the agent to be healthy again", async || {
        (get(agent.url("/health")).await.0 == 200).then_some(())
    })
    .await;
    let (_, text) = get(agent.url("/metrics")).await;
    assert_eq!(
        metric(&text, "agora_agent_tasks{state=\"TASK_RUNNING\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "agora_agent_launch_seconds_count").unwrap() >= 1.0,
        "{text}"
    );
    master.kill("f1", "recorded", Some(0.0));
    master.wait_update("recorded", TaskState::TaskKilled).await;
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_that_cannot_checkpoint_its_id_does_not_register() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let master = FakeMaster::start().await;
    let work = fs.path().join("agent");
    std::fs::create_dir_all(&work).unwrap();
    let filler = fs.fill();
    let agent = TestAgent::start(config(&master, &work)).await;
    // The master accepts it, but the agent cannot record the id: it does
    // not take it, and tries again.
    master.wait_registration(2).await;
    assert!(agent.running.as_ref().unwrap().agent_id().is_none());
    let (status, body) = get(agent.url("/health")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("agent id"), "{body}");
    assert!(!work.join("meta/agent.json").exists());

    std::fs::remove_file(&filler).unwrap();
    let id = tokio::time::timeout(Duration::from_secs(30), agent.wait_id())
        .await
        .unwrap();
    let saved = std::fs::read_to_string(work.join("meta/agent.json")).unwrap();
    assert!(saved.contains(&id), "{saved}");
    assert_eq!(get(agent.url("/health")).await.0, 200);
    agent.stop().await;
}

/// The run directory of a task's only container (`containers/<id>`).
fn run_dir_of(work: &Path, sandbox: &Path) -> PathBuf {
    work.join("containers").join(sandbox.file_name().unwrap())
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn start_time_of(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = text[text.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    f[19].parse().unwrap()
}

/// A process of its own group that is none of the agent's.
fn bystander() -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn recovery_does_not_signal_a_process_that_reused_a_recorded_pid() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = TestAgent::start(config(&master, dir.path())).await;
    first.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![
            shell_task("reused", RUN_UNTIL_SANDBOX_GONE),
            shell_task("rebooted", RUN_UNTIL_SANDBOX_GONE),
        ],
    );
    master.wait_update("reused", TaskState::TaskRunning).await;
    master.wait_update("rebooted", TaskState::TaskRunning).await;
    let mut runs = Vec::new();
    for t in ["reused", "rebooted"] {
        runs.push(run_dir_of(dir.path(), &first.sandbox(t).await));
    }
    first.stop().await;

    // Both tasks and their supervisors die without a word (as in a crash),
    // and their pids now name processes that are not the agent's.
    let mut others = Vec::new();
    for run in &runs {
        let rec = read_json(&run.join("supervisor.json"));
        assert!(
            rec["task"]["boot_id"]
                .as_str()
                .is_some_and(|b| !b.is_empty()),
            "the boot id is recorded: {rec}"
        );
        let sup = rec["supervisor"]["pid"].as_i64().unwrap() as i32;
        let task = rec["task"]["pid"].as_i64().unwrap() as i32;
        for pid in [sup, -task] {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
                .unwrap();
        }
        eventually("the task and its supervisor to be gone", async || {
            (!process_alive(sup) && !process_alive(task)).then_some(())
        })
        .await;
        others.push(bystander());
    }
    let mut wrote = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let pid = others[i].id() as i32;
        let mut rec = read_json(&run.join("supervisor.json"));
        if i == 0 {
            // Same boot, the pid reused: another start time.
            rec["task"]["pid"] = pid.into();
            rec["task"]["start_time"] = (start_time_of(pid) + 1).into();
        } else {
            // The very pid and start time, but recorded in another boot.
            rec["task"]["pid"] = pid.into();
            rec["task"]["start_time"] = start_time_of(pid).into();
            rec["task"]["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
            rec["supervisor"]["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
        }
        std::fs::write(run.join("supervisor.json"), rec.to_string()).unwrap();
        wrote.push(pid);
    }

    let second = TestAgent::start(config(&master, dir.path())).await;
    for t in ["reused", "rebooted"] {
        let failed = master.wait_update(t, TaskState::TaskFailed).await;
        assert!(failed.message.contains("supervisor"), "{}", failed.message);
    }
    for (mut other, pid) in others.into_iter().zip(wrote) {
        assert!(
            process_alive(pid),
            "the agent signalled process {pid}, which is not its own"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
    second.stop().await;
}

/// The sandbox and run directory of a task's only container.
fn dirs_of(work: &Path, framework_id: &str, task_id: &str) -> (PathBuf, PathBuf) {
    let tasks = work.join("sandboxes").join(framework_id).join(task_id);
    let cid = std::fs::read_dir(&tasks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    (tasks.join(&cid), work.join("containers").join(&cid))
}

#[tokio::test]
async fn damaged_checkpoint_files_do_not_kill_running_tasks() {
    use crate::t70_sigkill::spawn_agent;
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut first = spawn_agent(&master, work);
    master.wait_registration(1).await;
    master
        .wait_for("the agent to be registered", |seen| {
            seen.iter()
                .any(|s| matches!(s, Seen::Heartbeat))
                .then_some(())
        })
        .await;
    master.launch(
        &framework("f1"),
        vec![
            shell_task("bad-updates", RUN_UNTIL_SANDBOX_GONE),
            shell_task("bad-container", RUN_UNTIL_SANDBOX_GONE),
        ],
    );
    master.launch(
        &framework("f2"),
        vec![shell_task("bad-framework", RUN_UNTIL_SANDBOX_GONE)],
    );
    let tasks = [
        ("f1", "bad-updates"),
        ("f1", "bad-container"),
        ("f2", "bad-framework"),
    ];
    let mut pids = Vec::new();
    for (f, t) in tasks {
        master.wait_update(t, TaskState::TaskRunning).await;
        let (_, run) = dirs_of(work, f, t);
        let rec = eventually("the task's supervisor record", async || {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(run.join("supervisor.json")).ok()?).ok()?;
            r["task"]["pid"].as_i64().map(|p| p as i32)
        })
        .await;
        pids.push(rec);
    }
    let meta = work.join("meta/frameworks");
    // Every checkpoint is written before the kill.
    eventually("the checkpoints to be written", async || {
        tasks
            .iter()
            .all(|(f, t)| {
                let d = meta.join(f).join("tasks").join(t);
                d.join("updates.json").exists() && d.join("container.json").exists()
            })
            .then_some(())
    })
    .await;

    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    std::fs::write(
        meta.join("f1/tasks/bad-updates/updates.json"),
        b"{\"updates\": [{\"status\": \"%%%\"",
    )
    .unwrap();
    std::fs::write(
        meta.join("f1/tasks/bad-container/container.json"),
        b"\0\0garbage",
    )
    .unwrap();
    std::fs::write(meta.join("f2/framework.pb"), b"\xff\xff\xff\xff").unwrap();

    let mut second = spawn_agent(&master, work);
    let reg = master.wait_registration(2).await;
    let mut reported: Vec<&str> = reg.tasks.iter().map(|t| t.task_id.as_str()).collect();
    reported.sort();
    assert_eq!(
        reported,
        ["bad-container", "bad-framework", "bad-updates"],
        "every task is reported"
    );
    assert!(
        reg.tasks
            .iter()
            .all(|t| t.state() == TaskState::TaskRunning),
        "{:?}",
        reg.tasks
    );
    assert!(second.try_wait().unwrap().is_none(), "the agent runs");
    for (pid, (_, t)) in pids.iter().zip(tasks) {
        assert!(process_alive(*pid), "{t} (pid {pid}) still runs");
    }
    let corrupt: Vec<String> = std::fs::read_dir(work.join("meta/corrupt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in [
        "frameworks.f1.tasks.bad-updates.updates.json.corrupt-",
        "frameworks.f1.tasks.bad-container.container.json.corrupt-",
        "frameworks.f2.framework.pb.corrupt-",
    ] {
        assert!(
            corrupt.iter().any(|c| c.starts_with(name)),
            "{name}* in {corrupt:?}"
        );
    }
    // The container record is written anew.
    let rebuilt: serde_json::Value = serde_json::from_slice(
        &std::fs::read(meta.join("f1/tasks/bad-container/container.json")).unwrap(),
    )
    .unwrap();
    let (sandbox, _) = dirs_of(work, "f1", "bad-container");
    assert_eq!(
        rebuilt["container_id"].as_str(),
        sandbox.file_name().and_then(|n| n.to_str())
    );

    // Every task is still under the agent's control.
    for (f, t) in tasks {
        master.kill(f, t, Some(0.0));
        master.wait_update(t, TaskState::TaskKilled).await;
    }
    for pid in pids {
        eventually("the task to be gone", async || {
            (!process_alive(pid)).then_some(())
        })
        .await;
    }
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

#[tokio::test]
async fn a_process_task_over_its_memory_limit_is_killed_and_reported_so() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    // 32 MB allowed; `tail` keeps the whole zero-filled "line" in memory.
    let hog = shell_task("hog", "head -c 400m /dev/zero | tail | sleep 600");
    master.launch(&framework("f1"), vec![hog]);
    let failed = master.wait_update("hog", TaskState::TaskFailed).await;
    assert_eq!(
        failed.reason(),
        agora_proto::v1::StatusReason::ReasonContainerLimitationMemory,
        "{failed:?}"
    );
    assert!(
        failed.message.contains("Memory limit"),
        "{}",
        failed.message
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_launch_beyond_the_agents_free_resources_is_refused() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut big = shell_task("big", RUN_UNTIL_SANDBOX_GONE);
    big.resources = agora_proto::Resources::parse("cpus:1.5;mem:64")
        .unwrap()
        .to_proto();
    let mut second = big.clone();
    second.task_id = "second".into();
    master.launch(&framework("f1"), vec![big]);
    master.wait_update("big", TaskState::TaskRunning).await;
    master.launch(&framework("f1"), vec![second]);
    let refused = master.wait_update("second", TaskState::TaskError).await;
    assert_eq!(
        refused.reason(),
        agora_proto::v1::StatusReason::ReasonTaskInvalid
    );
    assert!(
        refused.message.contains("asks for cpus:1.5;mem:64")
            && refused.message.contains("cpus:0.5"),
        "{}",
        refused.message
    );
    assert!(
        !dir.path().join("meta/frameworks/f1/tasks/second").exists(),
        "nothing of a refused launch is recorded"
    );
    // Once the first has ended, there is room again.
    master.kill("f1", "big", Some(0.0));
    master.wait_update("big", TaskState::TaskKilled).await;
    let mut third = shell_task("third", "true");
    third.resources = agora_proto::Resources::parse("cpus:1.5;mem:64")
        .unwrap()
        .to_proto();
    master.launch(&framework("f1"), vec![third]);
    master.wait_update("third", TaskState::TaskFinished).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_task_runs_as_its_user_when_the_agent_is_root() {
    if !nix::unistd::geteuid().is_root() {
        let how = "the agent is not root here: tasks cannot switch users";
        if std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("{how} (AGORA_TEST_STRICT=1: this test needs it)");
        }
        eprintln!("skipping: {how}");
        return;
    }
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The user must be able to reach its sandbox.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agent = TestAgent::start(config(&master, dir.path())).await;
    agent.wait_id().await;
    let mut mine = shell_task("mine", "id -un; touch made-here");
    mine.command.as_mut().unwrap().user = "nobody".into();
    let mut unknown = shell_task("unknown", "true");
    unknown.command.as_mut().unwrap().user = "no-such-user-here".into();
    master.launch(&framework("f1"), vec![mine, unknown]);
    master.wait_update("mine", TaskState::TaskFinished).await;
    let out = reqwest::get(agent.url("/tasks/mine/logs?stream=stdout"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(out.trim(), "nobody");
    let error = master.wait_update("unknown", TaskState::TaskError).await;
    assert!(
        error.message.contains("`no-such-user-here` does not exist"),
        "{}",
        error.message
    );
    agent.stop().await;
}

/// A Docker daemon that answers what an agent asks at start, says it has no
/// images, and never answers a pull: a hanging registry, at the Docker
/// client seam (the real daemon is left alone).
/// Container inspections fail with 500 (and are counted in `inspects`).
async fn hanging_docker(socket: &Path) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let inspects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = inspects.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: its head, then its body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let line = head.lines().next().unwrap_or("").to_string();
                    let path = line.split(' ').nth(1).unwrap_or("");
                    let (status, body) = if path.contains("/images/create") {
                        // The pull that never ends.
                        std::future::pending::<()>().await;
                        unreachable!()
                    } else if path.ends_with("/version") {
                        (
                            "200 OK",
                            r#"{"ApiVersion":"1.43","Version":"24.0.0","MinAPIVersion":"1.12"}"#,
                        )
                    } else if path.contains("/_ping") {
                        ("200 OK", "OK")
                    } else if path.contains("/containers/json") {
                        ("200 OK", "[]")
                    } else if path.contains("/containers/") && path.contains("/json") {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        (
                            "500 Internal Server Error",
                            r#"{"message":"the daemon is having a bad day"}"#,
                        )
                    } else {
                        ("404 Not Found", r#"{"message":"no such thing here"}"#)
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    inspects
}

fn pulling_task(id: &str) -> agora_proto::v1::TaskInfo {
    use agora_proto::v1::{ContainerInfo, container_info};
    let mut container = ContainerInfo {
        docker: Some(container_info::DockerInfo {
            image: "agora-test/never-pulled:1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    container.set_type(container_info::Type::Docker);
    let mut t = shell_task(id, "true");
    t.container = Some(container);
    t
}

#[tokio::test]
async fn a_docker_launch_that_hangs_is_cancelled_by_a_kill_and_given_up_at_its_deadline() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    hanging_docker(&socket).await;
    let mut cfg = config(&master, &dir.path().join("work"));
    cfg.containerizers = Some(vec![
        agora_agent::ContainerizerKind::Docker,
        agora_agent::ContainerizerKind::Process,
    ]);
    cfg.docker_host = Some(format!("unix://{}", socket.display()));
    cfg.docker_launch_timeout = Duration::from_secs(3);
    let agent = TestAgent::start(cfg).await;
    agent.wait_id().await;
    master.launch(
        &framework("f1"),
        vec![pulling_task("killed"), pulling_task("too-slow")],
    );
    master.wait_update("killed", TaskState::TaskStarting).await;
    master.kill("f1", "killed", Some(0.0));
    let killed = master.wait_update("killed", TaskState::TaskKilled).await;
    assert_eq!(
        killed.reason(),
        agora_proto::v1::StatusReason::ReasonTaskKilledDuringLaunch,
        "{killed:?}"
    );
    let failed = master.wait_update("too-slow", TaskState::TaskFailed).await;
    assert!(
        failed.message.contains("did not start within 3s"),
        "{}",
        failed.message
    );
    agent.stop().await;
}

/// A checkpoint of a Docker task that runs (as an agent would have left it).
fn checkpointed_docker_task(work: &Path, task_id: &str) {
    use prost::Message;
    let meta = work.join("meta");
    std::fs::create_dir_all(meta.join("frameworks/f1/tasks").join(task_id)).unwrap();
    std::fs::write(meta.join("agent.json"), br#"{"agent_id": "fake-S7"}"#).unwrap();
    std::fs::write(
        meta.join("frameworks/f1/framework.pb"),
        framework("f1").encode_to_vec(),
    )
    .unwrap();
    let launch = agora_proto::v1::LaunchTask {
        framework_id: "f1".into(),
        task: Some(pulling_task(task_id)),
        role: "*".into(),
    };
    let dir = meta.join("frameworks/f1/tasks").join(task_id);
    std::fs::write(dir.join("task.pb"), launch.encode_to_vec()).unwrap();
    let cid = "0b5c6c0e-52a6-4c1e-9a53-3d3f5d1f0a11";
    std::fs::write(
        dir.join("container.json"),
        format!(r#"{{"container_id": "{cid}", "containerizer": "docker"}}"#),
    )
    .unwrap();
    std::fs::create_dir_all(work.join("sandboxes/f1").join(task_id).join(cid)).unwrap();
}

#[tokio::test]
async fn docker_tasks_are_lost_not_failed_when_docker_is_unavailable_at_a_restart() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    checkpointed_docker_task(&work, "boxed");
    // Nothing answers there: the agent starts with the process
    // containerizer alone.
    let mut cfg = config(&master, &work);
    cfg.docker_host = Some(format!(
        "unix://{}",
        dir.path().join("nothing.sock").display()
    ));
    let agent = TestAgent::start(cfg).await;
    let lost = master.wait_update("boxed", TaskState::TaskLost).await;
    assert!(
        lost.message.contains("Docker is not available") && lost.message.contains("may still run"),
        "{}",
        lost.message
    );
    assert!(
        !updates_of(&master.seen(), "boxed")
            .iter()
            .any(|s| s.state() == TaskState::TaskFailed)
    );
    agent.stop().await;
}

#[tokio::test]
async fn docker_errors_at_recovery_are_retried_then_the_task_is_lost_not_failed() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let inspects = hanging_docker(&socket).await;
    let work = dir.path().join("work");
    checkpointed_docker_task(&work, "boxed");
    let mut cfg = config(&master, &work);
    cfg.containerizers = Some(vec![
        agora_agent::ContainerizerKind::Docker,
        agora_agent::ContainerizerKind::Process,
    ]);
    cfg.docker_host = Some(format!("unix://{}", socket.display()));
    let agent = TestAgent::start(cfg).await;
    let lost = master.wait_update("boxed", TaskState::TaskLost).await;
    assert!(
        lost.message.contains("cannot inspect its Docker container")
            && lost.message.contains("bad day"),
        "{}",
        lost.message
    );
    assert!(
        inspects.load(std::sync::atomic::Ordering::SeqCst) >= 6,
        "the inspection was tried again"
    );
    agent.stop().await;
}

#[tokio::test]
async fn an_agent_told_to_use_docker_waits_for_it_then_says_why_it_cannot_start() {
    let master = FakeMaster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&master, &dir.path().join("work"));
    cfg.containerizers = Some(vec![agora_agent::ContainerizerKind::Docker]);
    cfg.docker_host = Some(format!(
        "unix://{}",
        dir.path().join("nothing.sock").display()
    ));
    cfg.docker_wait = Duration::from_secs(1);
    let err = match agora_agent::start(cfg, tokio_util::sync::CancellationToken::new()).await {
        Ok(_) => panic!("the agent started without Docker"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("cannot reach the Docker daemon") && err.contains("waited 1s"),
        "{err}"
    );
}
