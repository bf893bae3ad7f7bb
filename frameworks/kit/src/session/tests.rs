use std::sync::Arc;

use agora_coord::{Entry, MemoryStore, Op, Store};
use agora_proto::v1::call;
use agora_scheduler::testing::FakeMaster;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn config(master: &FakeMaster) -> SessionConfig {
    let mut scheduler = SchedulerConfig::new(master.address(), "kit-test");
    scheduler.reconnect_min = Duration::from_millis(50);
    scheduler.reconnect_max = Duration::from_millis(200);
    SessionConfig::new(scheduler)
}

async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the session goes on")
}

async fn stored_id(store: &FrameworkStore) -> Option<String> {
    store
        .get::<String>(DEFAULT_ID_KEY)
        .await
        .unwrap()
        .map(|v| v.value)
}

#[tokio::test]
async fn a_new_id_is_stored_before_subscribed_is_passed_on_and_reused() {
    let master = FakeMaster::start().await;
    let store = FrameworkStore::memory();
    let (scheduler, mut events) = start_session(config(&master), &store).await.unwrap();
    let Event::Subscribed {
        framework_id,
        resubscribed,
        ..
    } = next(&mut events).await
    else {
        panic!("Subscribed first");
    };
    assert!(!resubscribed);
    // Already stored when the framework hears of it.
    assert_eq!(
        stored_id(&store).await.as_deref(),
        Some(framework_id.as_str())
    );
    scheduler.stop().await;

    // A restart subscribes with the stored id and keeps it.
    let (scheduler, mut events) = start_session(config(&master), &store).await.unwrap();
    let Event::Subscribed {
        framework_id: again,
        resubscribed,
        ..
    } = next(&mut events).await
    else {
        panic!("Subscribed first");
    };
    assert_eq!(again, framework_id);
    assert!(resubscribed);
    assert_eq!(master.subscriptions().last().unwrap().id, framework_id);
    assert_eq!(
        scheduler.framework_id().as_deref(),
        Some(framework_id.as_str())
    );
    // The id was not written again.
    assert_eq!(
        store
            .get::<String>(DEFAULT_ID_KEY)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    scheduler.stop().await;
}

#[tokio::test]
async fn a_refused_stored_id_is_dropped_and_the_framework_starts_anew() {
    let master = FakeMaster::start().await;
    let store = FrameworkStore::memory();
    store
        .put(DEFAULT_ID_KEY, "fake-0099", Expected::Absent)
        .await
        .unwrap();
    let (scheduler, mut events) = start_session(config(&master), &store).await.unwrap();
    let Event::Error(message) = next(&mut events).await else {
        panic!("an Error about the refused id first");
    };
    assert!(message.contains("fake-0099"), "{message}");
    assert!(
        message.contains("subscribing as a new framework"),
        "{message}"
    );
    let Event::Subscribed { framework_id, .. } = next(&mut events).await else {
        panic!("then Subscribed");
    };
    assert_ne!(framework_id, "fake-0099");
    assert_eq!(
        stored_id(&store).await.as_deref(),
        Some(framework_id.as_str())
    );
    assert_eq!(
        scheduler.framework_id().as_deref(),
        Some(framework_id.as_str())
    );
    let subs = master.subscriptions();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].id, "fake-0099");
    assert_eq!(subs[1].id, "");
    scheduler.stop().await;
}

/// A store whose writes are refused as a deposed leader's are.
struct DeposedStore(MemoryStore);

#[async_trait::async_trait]
impl Store for DeposedStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, CoordError> {
        self.0.get(key).await
    }
    async fn set(&self, _: &str, _: Vec<u8>, _: Expected) -> Result<u64, CoordError> {
        Err(CoordError::Fenced {
            fence: "/fw/json.info_0000000001".into(),
        })
    }
    async fn delete(&self, _: &str, _: Expected) -> Result<(), CoordError> {
        Err(CoordError::Fenced {
            fence: "/fw/json.info_0000000001".into(),
        })
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, CoordError> {
        self.0.list(prefix).await
    }
    async fn apply(&self, _: Vec<Op>) -> Result<Vec<Option<u64>>, CoordError> {
        Err(CoordError::Fenced {
            fence: "/fw/json.info_0000000001".into(),
        })
    }
    fn max_batch_bytes(&self) -> usize {
        self.0.max_batch_bytes()
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, CoordError> {
        self.0.get_many(keys).await
    }
}

#[tokio::test]
async fn an_id_that_cannot_be_stored_is_torn_down_and_never_announced() {
    let master = FakeMaster::start().await;
    let store = FrameworkStore::new(Arc::new(DeposedStore(MemoryStore::new())));
    let (_scheduler, mut events) = start_session(config(&master), &store).await.unwrap();
    let Event::Error(message) = next(&mut events).await else {
        panic!("an Error first");
    };
    assert!(
        message.contains("cannot store the framework id"),
        "{message}"
    );
    assert!(matches!(next(&mut events).await, Event::Stopped { .. }));
    // The new framework has no tasks: it was torn down.
    master
        .wait_for_call("teardown", |c| {
            matches!(c, call::Call::Teardown(_)).then_some(())
        })
        .await;
}
