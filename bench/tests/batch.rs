//! The batch benchmarks at a tiny scale: `agora bench batch-lateness`
//! (in this process) and `agora bench batch-chaos` (real processes and a
//! real ZooKeeper). They check the shape of the JSON line and that no
//! scheduled time ran twice; no figure decides a test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_bench::batch::{LatenessArgs, run as run_lateness};
use agora_bench::batch_chaos::{ChaosArgs, run as run_chaos};

fn strict() -> bool {
    std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1")
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lateness_reports_every_run_once() {
    let args = LatenessArgs {
        jobs: 20,
        agents: 5,
        minutes: 0.1,
        period: Duration::from_secs(2),
        task_duration: Duration::from_millis(200),
        concurrency: 8,
        timeout: Duration::from_secs(240),
    };
    let report = run_lateness(&args).await.expect("the benchmark runs");
    let v = report.json();
    assert_eq!(
        keys(&v),
        [
            "agents",
            "create_s",
            "jobs",
            "lateness_ms_max",
            "lateness_ms_p50",
            "lateness_ms_p99",
            "minutes",
            "period_s",
            "runs_duplicated",
            "runs_expected",
            "runs_missed",
            "runs_started",
            "store"
        ],
        "{v}"
    );
    // 6 seconds of a 2-second schedule: 3 times per job.
    assert_eq!(v["runs_expected"], 60, "{v}");
    assert_eq!(v["runs_duplicated"], 0, "{v}");
    assert!(v["runs_started"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["runs_started"].as_u64().unwrap() + v["runs_missed"].as_u64().unwrap(),
        60,
        "{v}"
    );
    for q in ["lateness_ms_p50", "lateness_ms_p99", "lateness_ms_max"] {
        assert!(v[q].is_number(), "{q}: {v}");
    }
}

/// The `agora` binary beside this test's (the workspace's target
/// directory), built if it is not there yet.
fn agora_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/agora
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("agora");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--bin", "agora"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --bin agora");
        assert!(status.success(), "cargo build --bin agora failed");
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_chaos_reports_no_duplicates() {
    if !Path::new("/usr/share/java/zookeeper.jar").exists() {
        let how =
            "ZooKeeper is not installed: `apt-get install -y --no-install-recommends zookeeper`";
        assert!(!strict(), "{how} (AGORA_TEST_STRICT=1: this test needs it)");
        eprintln!("skipping: {how}");
        return;
    }
    let args = ChaosArgs {
        minutes: 0.4,
        jobs: 2,
        seed: 7,
        period: Duration::from_secs(2),
        starting_deadline: 60,
        masters: 2,
        agents: 2,
        zk_session_timeout: Duration::from_secs(2),
        bin: Some(agora_bin()),
        timeout: Duration::from_secs(300),
    };
    let report = run_chaos(&args).await.expect("the checker runs");
    let v = report.json();
    for k in [
        "seed",
        "expected",
        "met",
        "missed",
        "late",
        "duplicated",
        "missed_reasons",
        "faults",
        "met_pct",
    ] {
        assert!(v.get(k).is_some(), "no {k}: {v}");
    }
    assert_eq!(v["seed"], 7, "{v}");
    assert!(v["expected"].as_u64().unwrap() >= 2 * 10, "{v}");
    assert_eq!(
        v["met"].as_u64().unwrap() + v["missed"].as_u64().unwrap(),
        v["expected"].as_u64().unwrap(),
        "{v}"
    );
    assert!(v["missed_reasons"].is_array(), "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
}
