//! `agora bench services-failover` at a tiny scale, with the built `agora`
//! binary as the two services processes and a real ZooKeeper: its JSON
//! line has every figure, and the failover relaunched nothing. Behaviour
//! only; no timing decides anything here.

mod common;

use std::time::Duration;

use agora_bench::services_failover::{ServicesFailoverArgs, run};
use common::zk::ZkServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_bench_failover_relaunches_nothing() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let args = ServicesFailoverArgs {
        agents: 3,
        instances: 20,
        zk_session_timeout: Duration::from_secs(2),
        settle: Duration::from_millis(500),
        zk: Some(format!("zk://{}", zk.servers())),
        services_bin: Some(common::agora_bin()),
        timeout: Duration::from_secs(120),
    };
    let v = run(&args).await.expect("the bench runs").json();
    assert_eq!(v["agents"], 3);
    assert_eq!(v["instances"], 20);
    assert_eq!(v["relaunched"], 0, "{v}");
    assert_eq!(v["killed"], 0, "{v}");
    assert_eq!(v["running_after"], 20, "{v}");
    let elected = v["elected_ms"].as_f64().expect("elected_ms");
    let served = v["served_ms"].as_f64().expect("served_ms");
    assert!(0.0 < elected && elected <= served, "{v}");
    assert_eq!(v["zk_session_timeout_ms"], 2000.0);
}
