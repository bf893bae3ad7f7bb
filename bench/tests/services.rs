//! `agora bench services` at a tiny scale: every figure of its JSON line is
//! there and sane. Behaviour only; no timing decides anything here.

use std::path::Path;
use std::time::Duration;

use agora_bench::services::{ServicesBenchArgs, Stores, run};

/// Both stores when ZooKeeper is installed (it must be under
/// `AGORA_TEST_STRICT=1`), the embedded one otherwise.
fn stores() -> Stores {
    if Path::new("/usr/share/java/zookeeper.jar").exists() {
        return Stores::Both;
    }
    assert!(
        std::env::var("AGORA_TEST_STRICT").as_deref() != Ok("1"),
        "ZooKeeper is not installed (AGORA_TEST_STRICT=1: this test needs it)"
    );
    eprintln!("ZooKeeper is not installed: the embedded store only");
    Stores::Embedded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_bench_reports_scale_restart_and_list() {
    let stores = stores();
    let args = ServicesBenchArgs {
        agents: 3,
        instances: 30,
        restart_instances: 10,
        apps: 3,
        tasks_per_app: 2,
        requests: 3,
        stores,
        zk: None,
        timeout: Duration::from_secs(120),
    };
    let v = run(&args).await.expect("the bench runs").json();
    assert_eq!(v["agents"], 3);
    assert_eq!(v["instances"], 30);
    let scale = v["scale"].as_array().expect("scale figures");
    let names: Vec<&str> = scale.iter().filter_map(|s| s["store"].as_str()).collect();
    match stores {
        Stores::Both => assert_eq!(names, ["redb", "zookeeper"]),
        _ => assert_eq!(names, ["redb"]),
    }
    for s in scale {
        assert!(s["scale_s"].as_f64().is_some_and(|x| x > 0.0), "{s}");
        assert!(
            s["instances_per_s"].as_f64().is_some_and(|x| x > 0.0),
            "{s}"
        );
        // Batched: the 30 instances took fewer store batches than instances.
        let batches = s["store_batches"].as_u64().expect("store_batches");
        assert!((1..30).contains(&batches), "{s}");
        assert!(s["store_writes"].as_u64().is_some_and(|w| w >= 1), "{s}");
    }
    assert_eq!(v["restart_instances"], 10);
    assert!(v["restart_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    // minimumHealthCapacity 0.9 of 10: never fewer than 9 running.
    let min = v["restart_min_running"]
        .as_u64()
        .expect("restart_min_running");
    assert!((9..=11).contains(&min), "{v}");
    assert_eq!(v["apps"], 3);
    assert_eq!(v["tasks_listed"], 6, "every task of every app listed");
    let (p50, p99, max) = (
        v["list_ms_p50"].as_f64().unwrap(),
        v["list_ms_p99"].as_f64().unwrap(),
        v["list_ms_max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{v}");
}
