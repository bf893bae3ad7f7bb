//! Docker for the integration tests: the daemon (or how to get one), the
//! test image built offline from Debian's static busybox, clusters whose
//! agent runs Docker tasks, and cleanup of every container a test started.
//!
//! Under `AGORA_TEST_STRICT=1` (set by `scripts/test`, so in CI) a missing
//! daemon fails the test; run by hand without one, a test says how to get
//! it and returns.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::Resources;
use agora_proto::v1::{self, ContainerInfo, container_info};
use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, ListContainersOptions, RemoveContainerOptions};
use futures::StreamExt;

use super::{Cluster, DEADLINE, agent_config, eventually, master_config};

/// The image the tests run: `FROM scratch` with the static busybox and a
/// link per applet; its own command prints "hello from the image". Bump the
/// tag when the recipe changes (scripts/test builds the same one).
pub const TEST_IMAGE: &str = "agora-test-busybox:1";

/// What the image's own command prints.
pub const IMAGE_GREETING: &str = "hello from the image";

const BUSYBOX: &str = "/bin/busybox";

fn strict() -> bool {
    std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// A client for the local Docker daemon with the test image built, or
/// `None` (after saying how to get Docker) when there is no daemon and the
/// run is not strict. Under `AGORA_TEST_STRICT=1` a missing daemon or
/// busybox fails the test.
pub async fn docker_or_skip(test: &str) -> Option<Docker> {
    match connect().await {
        Ok(docker) => {
            if let Err(e) = ensure_test_image(&docker).await {
                if strict() {
                    panic!("{test}: cannot build the test image {TEST_IMAGE}: {e}");
                }
                eprintln!(
                    "SKIPPED {test}: cannot build the test image {TEST_IMAGE}: {e}\n  \
                     install the static busybox (apt-get install -y --no-install-recommends \
                     busybox-static), or run scripts/test, which does"
                );
                return None;
            }
            Some(docker)
        }
        Err(e) => {
            if strict() {
                panic!(
                    "{test}: no Docker daemon answers ({e}), and AGORA_TEST_STRICT=1 requires \
                     one: start Docker (e.g. `service docker start`, or `dockerd &`)"
                );
            }
            eprintln!(
                "SKIPPED {test}: no Docker daemon answers ({e}).\n  To run the Docker tests: \
                 apt-get install -y docker.io busybox-static, start the daemon (`service docker \
                 start`), then run them again (scripts/test does all of this)."
            );
            None
        }
    }
}

async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version()).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the daemon did not answer within 5s".into()),
    }
}

/// Builds [`TEST_IMAGE`] unless it is there: a build context made in
/// memory (no network, no registry).
pub async fn ensure_test_image(docker: &Docker) -> Result<(), String> {
    if docker.inspect_image(TEST_IMAGE).await.is_ok() {
        return Ok(());
    }
    // Test processes run in parallel: one builds, the others wait for it.
    let lock_path = std::env::temp_dir().join("agora-test-image.lock");
    let _lock = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    if docker.inspect_image(TEST_IMAGE).await.is_ok() {
        return Ok(());
    }
    let context = build_context()?;
    let mut build = docker.build_image(
        BuildImageOptions {
            t: Some(TEST_IMAGE.to_string()),
            rm: true,
            forcerm: true,
            ..Default::default()
        },
        None,
        Some(bollard::body_full(context.into())),
    );
    while let Some(step) = build.next().await {
        step.map_err(|e| format!("docker build: {e}"))?;
    }
    docker
        .inspect_image(TEST_IMAGE)
        .await
        .map(|_| ())
        .map_err(|e| format!("the build ended but {TEST_IMAGE} is not there: {e}"))
}

/// The build context: a Dockerfile and `rootfs/` with `/bin/busybox`, a link
/// per applet, and `/tmp`.
fn build_context() -> Result<Vec<u8>, String> {
    let mut busybox = Vec::new();
    std::fs::File::open(BUSYBOX)
        .and_then(|mut f| f.read_to_end(&mut busybox))
        .map_err(|e| format!("cannot read {BUSYBOX}: {e}"))?;
    if !is_static_elf(&busybox) {
        return Err(format!(
            "{BUSYBOX} is not statically linked (Debian's busybox-static package has a static one)"
        ));
    }
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| format!("cannot run {BUSYBOX} --list: {e}"))?;
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect();
    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"echo\", \"{IMAGE_GREETING}\"]\n"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        if let Some(target) = link {
            h.set_link_name(target).map_err(|e| e.to_string())?;
        }
        h.set_cksum();
        tar.append_data(&mut h, path, data)
            .map_err(|e| format!("tar {path}: {e}"))
    };
    add(
        "Dockerfile",
        0o644,
        tar::EntryType::Regular,
        dockerfile.as_bytes(),
        None,
    )?;
    add("rootfs/bin/", 0o755, tar::EntryType::Directory, &[], None)?;
    add("rootfs/tmp/", 0o1777, tar::EntryType::Directory, &[], None)?;
    add(
        "rootfs/bin/busybox",
        0o755,
        tar::EntryType::Regular,
        &busybox,
        None,
    )?;
    for a in &applets {
        add(
            &format!("rootfs/bin/{a}"),
            0o777,
            tar::EntryType::Symlink,
            &[],
            Some("busybox"),
        )?;
    }
    tar.into_inner().map_err(|e| e.to_string())
}

/// Whether an ELF file has no program interpreter (is statically linked).
fn is_static_elf(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        // PT_INTERP = 3
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// An agent config that runs Docker tasks (and plain ones), removing ended
/// containers as soon as their final status is acknowledged.
pub fn docker_agent_config(
    master: &str,
    work_dir: &Path,
    resources: &str,
) -> agora_agent::AgentConfig {
    let mut c = agent_config(master, work_dir, resources);
    c.containerizers = Some(vec![
        agora_agent::ContainerizerKind::Docker,
        agora_agent::ContainerizerKind::Process,
    ]);
    c.docker_remove_delay = Duration::ZERO;
    c
}

/// A master and one Docker agent in this process; `tweak` adjusts the
/// agent's config. Containers the agent started are removed when the
/// returned guard drops.
pub async fn docker_cluster(
    resources: &str,
    tweak: impl FnOnce(&mut agora_agent::AgentConfig),
) -> (Cluster, ContainerGuard) {
    let mut cluster = Cluster::start(master_config(), &[]).await;
    let work = cluster.dir.path().join("agent0");
    let mut config = docker_agent_config(&cluster.addr(), &work, resources);
    tweak(&mut config);
    let agent = agora_agent::start(config, cluster.shutdown.child_token())
        .await
        .expect("the Docker agent starts");
    assert_eq!(agent.containerizers(), ["docker", "process"]);
    cluster.agents.push(agent);
    cluster.wait_agents(1).await;
    let guard = ContainerGuard::new(cluster.dir.path());
    (cluster, guard)
}

/// A Docker task running `cmd` with `/bin/sh -c` in the test image.
pub fn docker_task(id: &str, cmd: Option<&str>, resources: &str) -> v1::TaskInfo {
    let mut container = ContainerInfo {
        docker: Some(container_info::DockerInfo {
            image: TEST_IMAGE.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    container.set_type(container_info::Type::Docker);
    v1::TaskInfo {
        name: id.into(),
        task_id: id.into(),
        resources: Resources::parse(resources).unwrap().to_proto(),
        command: cmd.map(|c| v1::CommandInfo {
            value: c.into(),
            ..Default::default()
        }),
        container: Some(container),
        ..Default::default()
    }
}

/// The agent's view of a task (`/state`, live or completed).
pub async fn agent_task(agent_http: &str, task_id: &str) -> Option<serde_json::Value> {
    let state = super::get_json(&format!("http://{agent_http}/state")).await;
    state["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(state["completed_tasks"].as_array().into_iter().flatten())
        .find(|t| t["id"] == task_id)
        .cloned()
}

/// A task's stdout or stderr from the agent.
pub async fn task_log(agent_http: &str, task_id: &str, stream: &str) -> String {
    let url = format!("http://{agent_http}/tasks/{task_id}/logs?stream={stream}");
    let resp = reqwest::get(&url).await.unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.text().await.unwrap()
}

/// Waits until a task's log holds `needle`.
pub async fn wait_log(agent_http: &str, task_id: &str, stream: &str, needle: &str) -> String {
    eventually(
        &format!("`{needle}` in the {stream} of {task_id}"),
        DEADLINE,
        || async move {
            let text = task_log(agent_http, task_id, stream).await;
            text.contains(needle).then_some(text)
        },
    )
    .await
}

/// The container that runs a task (by the labels the agent sets).
pub async fn container_of(
    docker: &Docker,
    task_id: &str,
) -> Option<bollard::models::ContainerSummary> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!(
            "{}={task_id}",
            agora_agent::containerizer::LABEL_TASK_ID
        )],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_iter()
        .next()
}

/// Removes, when dropped, every container of agents whose work directory
/// is under `root` (a test's temporary directory): agents leave their
/// containers running when they stop, by design.
pub struct ContainerGuard {
    root: PathBuf,
}

impl ContainerGuard {
    pub fn new(root: &Path) -> ContainerGuard {
        ContainerGuard {
            root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    /// Removes the containers now.
    pub async fn clean(&self) {
        remove_containers_under(&self.root).await;
    }
}

/// Removes every container of agents whose work directory is under `root`.
pub async fn remove_containers_under(root: &Path) {
    let Ok(docker) = connect().await else {
        return;
    };
    let label = agora_agent::containerizer::LABEL_WORK_DIR;
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let Ok(list) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    for c in list {
        let ours = c
            .labels
            .as_ref()
            .and_then(|l| l.get(label))
            .is_some_and(|dir| Path::new(dir).starts_with(root));
        if let (true, Some(id)) = (ours, c.id) {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let root = self.root.clone();
        // Drop cannot await: clean up on a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(remove_containers_under(&root));
            }
        })
        .join();
    }
}
