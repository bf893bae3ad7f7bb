//! A real ZooKeeper server for tests (Debian's `zookeeper` package), started
//! per test with a fresh data directory on a free loopback port, and a TCP
//! proxy in front of it that a test can cut to take a master off ZooKeeper.
//!
//! Without ZooKeeper installed, [`ZkServer::start`] returns `None` after
//! saying how to get it, and the test returns without asserting anything;
//! under `AGORA_TEST_STRICT=1` (scripts/test, CI) it panics instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Where Debian's package puts the server and its configuration.
const DEBIAN_CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";
const DEBIAN_JAR: &str = "/usr/share/java/zookeeper.jar";

const HOW_TO_GET_IT: &str = "ZooKeeper is not installed: `apt-get install -y --no-install-recommends zookeeper` \
     (Debian's package, with Java), or set AGORA_TEST_ZK_CLASSPATH to a ZooKeeper classpath";

fn strict() -> bool {
    std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// A ZooKeeper server process, killed when dropped.
pub struct ZkServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl ZkServer {
    /// Starts a standalone server with `tickTime=500` (so 1-2 s sessions
    /// work). `None` when ZooKeeper is not installed and the run is not
    /// strict.
    pub async fn start() -> Option<ZkServer> {
        let classpath = match std::env::var("AGORA_TEST_ZK_CLASSPATH") {
            Ok(cp) => cp,
            Err(_) if Path::new(DEBIAN_JAR).exists() => DEBIAN_CLASSPATH.to_string(),
            Err(_) => {
                if strict() {
                    panic!("{HOW_TO_GET_IT} (AGORA_TEST_STRICT=1: this test needs it)");
                }
                eprintln!("skipping: {HOW_TO_GET_IT}");
                return None;
            }
        };
        let java = std::env::var("JAVA").unwrap_or_else(|_| "java".into());
        let has_java = Command::new(&java)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_java {
            if strict() {
                panic!("{HOW_TO_GET_IT}: no `{java}` (AGORA_TEST_STRICT=1: this test needs it)");
            }
            eprintln!("skipping: {HOW_TO_GET_IT}: no `{java}`");
            return None;
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&java, &classpath).await {
                Ok(server) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        panic!("ZooKeeper did not start: {last_error}");
    }

    async fn try_start(java: &str, classpath: &str) -> Result<ZkServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=60000\n\
                 initLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr\nmaxClientCnxns=0\n",
                data.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("zookeeper.log")).map_err(|e| e.to_string())?;
        let child = Command::new(java)
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp", classpath])
            .arg("-Dzookeeper.log.dir=".to_string() + &dir.path().display().to_string())
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {java}: {e} ({HOW_TO_GET_IT})"))?;
        let mut server = ZkServer { child, port, dir };
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if serving(port) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "the server exited ({status}):\n{}",
                    server.log_tail()
                ));
            }
            if Instant::now() >= until {
                return Err(format!(
                    "the server did not answer within 60 s:\n{}",
                    server.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:port`.
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:port<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.servers())
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A plain ZooKeeper client session with this server.
    pub async fn client(&self) -> zookeeper_client::Client {
        zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(5))
            .connect(&self.servers())
            .await
            .expect("connect to the test ZooKeeper")
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server serves clients (the `srvr` four-letter command names
/// its mode only then; `ruok` answers earlier).
fn serving(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.contains("Mode: ")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy to ZooKeeper that a test can cut: [`ZkProxy::cut`] drops
/// every open connection and leaves new ones hanging in silence, as a
/// network partition would.
pub struct ZkProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// The token of the current connections: cancelled (and replaced) on cut.
    conns: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl ZkProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target`.
    pub async fn start(target: SocketAddr) -> ZkProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = ZkProxy {
            port: listener.local_addr().unwrap().port(),
            cut: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(CancellationToken::new())),
            stop: CancellationToken::new(),
        };
        let (cut, conns, stop) = (proxy.cut.clone(), proxy.conns.clone(), proxy.stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let stop = stop.clone();
                if cut.load(Ordering::SeqCst) {
                    // A partition: hold the connection open, say nothing.
                    tokio::spawn(async move {
                        stop.cancelled().await;
                        let _ = inbound.shutdown().await;
                    });
                    continue;
                }
                let token = conns.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        proxy
    }

    /// `127.0.0.1:port`.
    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:port<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.servers())
    }

    /// Cuts the link: open connections drop, new ones hang.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut conns = self.conns.lock().unwrap();
        conns.cancel();
        *conns = CancellationToken::new();
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for ZkProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The ZooKeeper session timeout of the masters in these tests.
pub const SESSION_TIMEOUT: &str = "2s";

/// Starts `agora master --zk <zk_url>` on a free port; returns it with its
/// address once it listens (as a standby or a leader).
pub async fn spawn_zk_master(zk_url: &str, extra: &[&str]) -> (super::Proc, String) {
    let mut args = vec![
        "master",
        "--listen",
        "127.0.0.1:0",
        "--zk",
        zk_url,
        "--zk-session-timeout",
        SESSION_TIMEOUT,
    ];
    args.extend_from_slice(extra);
    let p = super::Proc::spawn(&args, &[]);
    let addr = p.wait_field("master listening", "address").await;
    (p, addr)
}

/// A master's `/state`, or `None` when it does not answer.
pub async fn try_state(addr: &str) -> Option<serde_json::Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("http://{addr}/state"))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

/// Waits until exactly one of `masters` leads and every other one names it
/// as the leader; returns the leader's address.
pub async fn wait_one_leader(masters: &[String], deadline: Duration) -> String {
    let masters = masters.to_vec();
    super::eventually("exactly one leading master, known to all", deadline, || {
        let masters = masters.clone();
        async move {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for m in &masters {
                let s = try_state(m).await?;
                if s["elected"] == true {
                    leaders.push(m.clone());
                }
                named.push(s["leader"]["address"].as_str()?.to_string());
            }
            if leaders.len() != 1 {
                return None;
            }
            named
                .iter()
                .all(|n| *n == leaders[0])
                .then(|| leaders[0].clone())
        }
    })
    .await
}
