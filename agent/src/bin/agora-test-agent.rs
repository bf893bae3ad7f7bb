//! An agent as a process of its own, for this crate's tests that kill it
//! with SIGKILL (the `agora` binary is the real command line).
//!
//! `agora-test-agent MASTER WORK_DIR SUPERVISOR` runs until SIGTERM or
//! SIGINT, with short retry and reconnect delays.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [master, work_dir, supervisor] = args.as_slice() else {
        eprintln!("usage: agora-test-agent MASTER WORK_DIR SUPERVISOR");
        std::process::exit(64);
    };
    let mut config = agora_agent::AgentConfig::new(master.as_str(), work_dir.as_str());
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config.hostname = "agent-under-test".into();
    config.resources =
        agora_proto::Resources::parse("cpus:2;mem:1024;disk:2048;ports:[1024-65535]").ok();
    config.supervisor_command = vec![supervisor.into()];
    config.status_retry_min = Duration::from_millis(100);
    config.status_retry_max = Duration::from_millis(400);
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        token.cancel();
    });
    if let Err(e) = agora_agent::run(config, shutdown).await {
        eprintln!("agora-test-agent: {e}");
        std::process::exit(1);
    }
}
