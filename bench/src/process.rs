//! Masters the benchmarks start as separate processes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Starts `bin master --listen 127.0.0.1:<free port> <extra...>` (logging
/// warnings only) and waits until it accepts connections. Returns its
/// address and the process, which is killed when dropped.
pub(crate) async fn spawn_master(bin: &Path, extra: &[String]) -> anyhow::Result<(String, Child)> {
    // A free port: bind, read it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin)
        .arg("master")
        .arg("--listen")
        .arg(&address)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&address).await.is_err() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the master ({}) exited: {status}", bin.display());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the master did not listen on {address} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((address, child))
}
