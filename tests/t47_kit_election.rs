//! Leader election among a framework's instances (agora-framework-kit's
//! `election`) on a real ZooKeeper: one leads, the others stand by knowing
//! its HTTP address; dropping or SIGKILLing the leader hands over; a deposed
//! leader's fenced writes are refused.

mod common;

use std::process::Stdio;
use std::time::Duration;

use agora_coord::zk::ZkUrl;
use agora_coord::{CoordError, Expected};
use agora_framework_kit::KitError;
use agora_framework_kit::election::{Election, Elector, Role, Term};
use agora_framework_kit::store::{FrameworkStore, StoreBackend};
use common::DEADLINE;
use common::zk::ZkServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const SESSION: Duration = Duration::from_secs(2);

fn election(zk: &ZkServer) -> (Election, StoreBackend) {
    let url = ZkUrl::parse(&zk.url("/fw")).unwrap();
    (
        Election::Zk {
            url: url.clone(),
            session_timeout: SESSION,
        },
        StoreBackend::Zk {
            url,
            session_timeout: SESSION,
        },
    )
}

async fn wait_role(role: &mut watch::Receiver<Role>, want: Role) {
    let what = format!("{want:?}");
    let reached = matches!(
        tokio::time::timeout(DEADLINE, role.wait_for(|r| *r == want)).await,
        Ok(Ok(_))
    );
    if !reached {
        panic!(
            "timed out waiting for role {what}; it is {:?}",
            *role.borrow()
        );
    }
}

async fn next_term(elector: &mut Elector) -> Term {
    tokio::time::timeout(DEADLINE, elector.next_term())
        .await
        .expect("a term in time")
        .expect("the elector runs")
}

/// An instance advertising `127.0.0.1:<port>`.
fn instance(election: &Election, port: u16, shutdown: CancellationToken) -> Elector {
    Elector::start(election.clone(), ([127, 0, 0, 1], port).into(), shutdown)
}

fn is_fenced(e: &KitError) -> bool {
    matches!(e, KitError::Store(CoordError::Fenced { .. }))
}

#[tokio::test]
async fn t47_one_leads_the_other_stands_by_knowing_its_address_and_takes_over_when_it_goes() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let (election, backend) = election(&zk);
    let base = FrameworkStore::open(&backend).unwrap();

    let mut a = instance(&election, 18080, CancellationToken::new());
    wait_role(&mut a.role(), Role::Leading).await;
    let term_a = next_term(&mut a).await;
    assert_eq!(term_a.number(), 1);
    assert!(term_a.fence().unwrap().starts_with("/fw/json.info_"));

    let shutdown_b = CancellationToken::new();
    let mut b = instance(&election, 18081, shutdown_b.clone());
    wait_role(
        &mut b.role(),
        Role::Standby {
            leader: Some("127.0.0.1:18080".into()),
        },
    )
    .await;

    let store_a = term_a.store(&base);
    store_a
        .put("apps/web", &"v1", Expected::Absent)
        .await
        .unwrap();
    let mut batch = store_a.batch();
    batch.put("instances/web.1", &1, Expected::Absent).unwrap();
    batch.put("instances/web.2", &2, Expected::Absent).unwrap();
    batch.commit().await.unwrap();

    // The leader goes (dropped: it resigns): the standby leads at once.
    drop(a);
    tokio::time::timeout(DEADLINE, term_a.lost())
        .await
        .expect("the old term ends");
    let term_b = next_term(&mut b).await;
    wait_role(&mut b.role(), Role::Leading).await;
    // The old leader's fenced store can write no more; the new one can.
    let err = store_a
        .put("apps/web", &"v2", Expected::Any)
        .await
        .unwrap_err();
    assert!(is_fenced(&err), "{err}");
    let store_b = term_b.store(&base);
    assert_eq!(
        store_b
            .get::<String>("apps/web")
            .await
            .unwrap()
            .unwrap()
            .value,
        "v1"
    );
    store_b
        .put("apps/web", &"v2", Expected::Version(1))
        .await
        .unwrap();
    assert_eq!(store_b.list("instances/").await.unwrap().len(), 2);

    shutdown_b.cancel();
    tokio::time::timeout(DEADLINE, term_b.lost())
        .await
        .expect("shutdown ends the term");
    assert!(b.next_term().await.is_none());
}

#[tokio::test]
async fn t47_a_deposed_leaders_fenced_writes_are_refused_and_it_stands_by() {
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let (election, backend) = election(&zk);
    let base = FrameworkStore::open(&backend).unwrap();
    let mut a = instance(&election, 18080, CancellationToken::new());
    let term_a = next_term(&mut a).await;
    let mut b = instance(&election, 18081, CancellationToken::new());
    wait_role(
        &mut b.role(),
        Role::Standby {
            leader: Some("127.0.0.1:18080".into()),
        },
    )
    .await;
    let store_a = term_a.store(&base);
    store_a.put("k", &0, Expected::Any).await.unwrap();

    // A's leader node disappears (as when ZooKeeper expires its session).
    // Its writes are refused from that moment, whatever A believes.
    zk.client()
        .await
        .delete(term_a.fence().unwrap(), None)
        .await
        .unwrap();
    let err = store_a.put("k", &1, Expected::Any).await.unwrap_err();
    assert!(is_fenced(&err), "{err}");
    let mut batch = store_a.batch();
    batch.put("k", &2, Expected::Any).unwrap();
    assert!(is_fenced(&batch.commit().await.unwrap_err()));
    assert_eq!(base.get::<i32>("k").await.unwrap().unwrap().value, 0);

    // A notices and steps down; B leads; A stands by, pointing at B.
    tokio::time::timeout(DEADLINE, term_a.lost())
        .await
        .expect("the deposed leader's term ends");
    let term_b = next_term(&mut b).await;
    wait_role(
        &mut a.role(),
        Role::Standby {
            leader: Some("127.0.0.1:18081".into()),
        },
    )
    .await;
    term_b
        .store(&base)
        .put("k", &3, Expected::Any)
        .await
        .unwrap();
}

/// The name of the test below, which also plays the leader in a child
/// process when `KIT_ELECTOR_CHILD` is set.
const SIGKILL_TEST: &str = "t47_a_sigkilled_leader_is_replaced_once_its_session_expires";

#[tokio::test]
async fn t47_a_sigkilled_leader_is_replaced_once_its_session_expires() {
    if let Ok(zk_url) = std::env::var("KIT_ELECTOR_CHILD") {
        // The child: lead, say so, and hold on until killed.
        let url = ZkUrl::parse(&zk_url).unwrap();
        let mut elector = Elector::start(
            Election::Zk {
                url,
                session_timeout: SESSION,
            },
            "127.0.0.1:18090".parse().unwrap(),
            CancellationToken::new(),
        );
        let term = elector.next_term().await.unwrap();
        println!("KIT-CHILD LEADING {}", term.fence().unwrap());
        std::future::pending::<()>().await;
    }
    common::init_logs();
    let Some(zk) = ZkServer::start().await else {
        return;
    };
    let (election, _) = election(&zk);
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            SIGKILL_TEST,
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("KIT_ELECTOR_CHILD", zk.url("/fw"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let leading = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("KIT-CHILD LEADING") {
                return line;
            }
        }
        panic!("the child ended before leading");
    })
    .await
    .expect("the child leads in time");
    assert!(leading.contains("/fw/json.info_"), "{leading}");

    let mut b = instance(&election, 18091, CancellationToken::new());
    wait_role(
        &mut b.role(),
        Role::Standby {
            leader: Some("127.0.0.1:18090".into()),
        },
    )
    .await;

    // SIGKILL: no resignation; ZooKeeper expires the session, then b leads.
    child.kill().await.unwrap();
    let term = next_term(&mut b).await;
    assert_eq!(term.number(), 1);
    wait_role(&mut b.role(), Role::Leading).await;
}
