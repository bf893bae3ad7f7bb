//! `agora bench health` at a small scale: a real master and agent in this
//! process, simulated task endpoints on loopback, the agent's real HTTP
//! checks. Checks behaviour only; no figure decides the test.

use std::time::Duration;

use agora_bench::health::{HealthArgs, run};

/// A free block of `n` loopback ports (bound and released; another process
/// could take one meanwhile, which would fail the run with a clear error).
fn free_ports(n: u16) -> u16 {
    'search: for first in (20000u16..60000).step_by(997) {
        let mut held = Vec::new();
        for p in first..first + n {
            match std::net::TcpListener::bind(("127.0.0.1", p)) {
                Ok(l) => held.push(l),
                Err(_) => continue 'search,
            }
        }
        return first;
    }
    panic!("no block of {n} free loopback ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_is_checked_and_healthy() {
    let tasks = 20;
    let args = HealthArgs {
        tasks,
        interval: 0.5,
        seconds: Duration::from_secs(3),
        concurrency: 8,
        first_port: free_ports(tasks as u16),
        timeout: Duration::from_secs(120),
    };
    let report = run(&args).await.expect("the bench runs");
    assert_eq!(report.tasks, tasks);
    assert_eq!(report.checks_failed, 0, "{:?}", report);
    // 20 tasks checked every 0.5 s: about 40 checks a second; the bound is
    // loose (a busy machine delays checks) but proves they keep running.
    assert!(report.checks_per_s > 10.0, "{:?}", report);
    assert!(
        report.agent_cpu_cores > 0.0,
        "the agent's threads were found: {report:?}"
    );
    assert!(
        report.lateness_max_ms >= report.lateness_p50_ms,
        "{report:?}"
    );
}
