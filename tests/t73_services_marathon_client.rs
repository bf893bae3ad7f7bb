//! The Python `marathon` client (0.13, from the Python package registry)
//! drives the main flows of the services framework: it refuses any response
//! key it does not know, so this checks the API's shapes as Marathon's own
//! users meet them. `scripts/test` installs the client in a virtualenv and
//! names its interpreter in `AGORA_TEST_MARATHON_PYTHON`.

mod common;

use std::process::Stdio;

use common::services::Services;
use common::{Cluster, DEADLINE, linger};

#[tokio::test]
async fn the_python_marathon_client_drives_the_main_flows() {
    let Some(python) = common::python_with(
        "marathon",
        "AGORA_TEST_MARATHON_PYTHON",
        "the Python client `marathon` is not installed: \
               python3 -m venv /tmp/v && /tmp/v/bin/pip install marathon==0.13.0, \
               then AGORA_TEST_MARATHON_PYTHON=/tmp/v/bin/python (scripts/test does this)",
    ) else {
        return;
    };
    let cluster = Cluster::start(
        common::master_config(),
        &["cpus:4;mem:1024;ports:[31000-31099]"],
    )
    .await;
    let svc = Services::start(&cluster.addr()).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/marathon_flows.py"
    );
    let child = tokio::process::Command::new(&python)
        .args([script, &svc.url, &linger(cluster.dir.path())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let out = tokio::time::timeout(DEADLINE * 4, child.wait_with_output())
        .await
        .expect("the flows finish in time")
        .unwrap();
    let status = out.status;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "the marathon client failed:\n{text}");
    assert!(text.contains("ok"), "{text}");
}
