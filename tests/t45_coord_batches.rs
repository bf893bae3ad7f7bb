//! Atomic batched writes and pipelined reads of the ZooKeeper store
//! (agora-coord's `Store::apply` / `get_many`), against a real ZooKeeper.

mod common;

use std::time::Duration;

use agora_coord::zk::{ZkContender, ZkStore, ZkUrl};
use agora_coord::{Contender, CoordError, Expected, Op, Store};
use agora_proto::v1::MasterInfo;
use common::zk::ZkServer;

const SESSION: Duration = Duration::from_secs(2);

fn set(key: &str, value: &str, expected: Expected) -> Op {
    Op::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expected,
    }
}

fn del(key: &str, expected: Expected) -> Op {
    Op::Delete {
        key: key.into(),
        expected,
    }
}

#[tokio::test]
async fn t45_zookeeper_batches_are_all_or_nothing_and_fenced() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let url = ZkUrl::parse(&zk.url("/fw")).unwrap();
    let store = ZkStore::new(&url, SESSION);

    // New buckets are created as needed, inside one batch.
    let v = store
        .apply(vec![
            set("instances/a.1", "1", Expected::Absent),
            set("instances/a.2", "2", Expected::Any),
            set("apps/team/web", "w", Expected::Absent),
            set("framework-id", "fw-1", Expected::Any),
        ])
        .await
        .unwrap();
    assert_eq!(v, vec![Some(1), Some(1), Some(1), Some(1)]);
    assert_eq!(
        store.list("").await.unwrap(),
        vec![
            "apps/team/web",
            "framework-id",
            "instances/a.1",
            "instances/a.2"
        ]
    );

    // One failed condition: nothing is written; the error names the key.
    let err = store
        .apply(vec![
            set("instances/a.1", "1b", Expected::Version(1)),
            set("instances/a.3", "3", Expected::Absent),
            set("instances/a.2", "2b", Expected::Version(9)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CoordError::Conflict { key, found: Some(1), .. } if key == "instances/a.2"),
        "{err}"
    );
    assert_eq!(
        store.get("instances/a.1").await.unwrap().unwrap().value,
        b"1"
    );
    assert_eq!(store.get("instances/a.3").await.unwrap(), None);
    let err = store
        .apply(vec![
            set("instances/a.4", "4", Expected::Absent),
            set("instances/a.1", "x", Expected::Absent),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::Conflict { .. }), "{err}");
    assert_eq!(store.get("instances/a.4").await.unwrap(), None);

    // Every kind of op in one batch.
    let v = store
        .apply(vec![
            set("instances/a.1", "1b", Expected::Version(1)),
            set("instances/a.2", "2b", Expected::Any),
            del("apps/team/web", Expected::Version(1)),
            del("instances/missing", Expected::Any),
            del("instances/also-missing", Expected::Absent),
            set("instances/a.3", "3", Expected::Any),
        ])
        .await
        .unwrap();
    assert_eq!(v, vec![Some(2), Some(2), None, None, None, Some(1)]);
    assert!(
        store
            .apply(vec![del("instances/a.3", Expected::Absent)])
            .await
            .is_err()
    );

    let keys: Vec<String> = ["instances/a.1", "nope/x", "instances/a.3", "framework-id"]
        .map(String::from)
        .to_vec();
    let got: Vec<Option<(Vec<u8>, u64)>> = store
        .get_many(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.map(|e| (e.value, e.version)))
        .collect();
    assert_eq!(
        got,
        vec![
            Some((b"1b".to_vec(), 2)),
            None,
            Some((b"3".to_vec(), 1)),
            Some((b"fw-1".to_vec(), 1))
        ]
    );

    // Fenced on a leader's node: a batch applies while it exists, and is
    // refused whole once it is gone.
    let contender = ZkContender::new(&url, SESSION);
    let leadership = contender
        .contend(MasterInfo {
            id: "i1".into(),
            ip: "127.0.0.1".into(),
            port: 8080,
            ..Default::default()
        })
        .await
        .unwrap();
    let fence = leadership.fence().unwrap().to_string();
    let fenced = store.fenced(&fence);
    fenced
        .apply(vec![
            set("instances/b.1", "1", Expected::Absent),
            set("instances/b.2", "2", Expected::Absent),
        ])
        .await
        .unwrap();
    zk.client().await.delete(&fence, None).await.unwrap();
    let err = fenced
        .apply(vec![
            set("instances/b.3", "3", Expected::Absent),
            del("instances/b.1", Expected::Any),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::Fenced { .. }), "{err}");
    assert_eq!(store.get("instances/b.3").await.unwrap(), None);
    assert!(store.get("instances/b.1").await.unwrap().is_some());
    drop(leadership);
}

#[tokio::test]
async fn t45_zookeeper_large_batches_fit_one_request_or_are_refused_whole() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let url = ZkUrl::parse(&zk.url("/big")).unwrap();
    let store = ZkStore::new(&url, SESSION);
    let record = "x".repeat(200);
    let ops = |range: std::ops::Range<usize>| -> Vec<Op> {
        range
            .map(|i| set(&format!("instances/app.{i:05}"), &record, Expected::Absent))
            .collect()
    };
    // As many records as the limit allows go in one multi.
    let per_op = store.op_bytes(&ops(0..1)[0]);
    let fit = store.max_batch_bytes() / per_op;
    assert!(fit >= 500, "{fit} records of 200 bytes per batch");
    let versions = store.apply(ops(0..fit)).await.unwrap();
    assert_eq!(versions.len(), fit);
    assert!(versions.iter().all(|v| *v == Some(1)));

    // One more than fits is refused before anything is sent.
    let err = store.apply(ops(fit..2 * fit + 1)).await.unwrap_err();
    assert!(matches!(err, CoordError::BatchTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("split it"), "{err}");
    assert_eq!(
        store.get(&format!("instances/app.{fit:05}")).await.unwrap(),
        None
    );

    // Everything reads back, in order, through the pipeline.
    let keys: Vec<String> = (0..fit).map(|i| format!("instances/app.{i:05}")).collect();
    let got = store.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), fit);
    assert!(
        got.iter()
            .all(|e| e.as_ref().is_some_and(|e| e.value == record.as_bytes()))
    );
    assert_eq!(store.list("instances/").await.unwrap(), keys);
}
