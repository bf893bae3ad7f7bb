//! Standalone election: one master, which always leads.

use agora_proto::v1::MasterInfo;
use tokio::sync::watch;

use crate::{Contender, CoordError, Detector, Leadership};

/// Leads at once and never loses leadership.
pub struct StandaloneContender {
    // The "leadership lost" flag, never set: a standalone master leads until
    // it stops.
    never_lost: watch::Sender<bool>,
}

impl Default for StandaloneContender {
    fn default() -> Self {
        StandaloneContender {
            never_lost: watch::channel(false).0,
        }
    }
}

impl StandaloneContender {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl Contender for StandaloneContender {
    async fn contend(&self, _info: MasterInfo) -> Result<Leadership, CoordError> {
        Ok(Leadership::new(self.never_lost.subscribe(), None))
    }
}

/// Always answers with the one configured master.
pub struct StandaloneDetector {
    leader: watch::Sender<Option<MasterInfo>>,
}

impl StandaloneDetector {
    pub fn new(leader: Option<MasterInfo>) -> Self {
        StandaloneDetector {
            leader: watch::channel(leader).0,
        }
    }

    /// Points the detector at another master (e.g. once its address is known).
    pub fn set(&self, leader: Option<MasterInfo>) {
        self.leader.send_replace(leader);
    }
}

impl Detector for StandaloneDetector {
    fn leader(&self) -> watch::Receiver<Option<MasterInfo>> {
        self.leader.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_leads_at_once_and_keeps_leading() {
        let c = StandaloneContender::new();
        let mut l = c.contend(MasterInfo::default()).await.unwrap();
        assert!(!l.is_lost());
        let lost = tokio::time::timeout(std::time::Duration::from_millis(50), l.lost()).await;
        assert!(lost.is_err(), "standalone leadership must not end");

        let d = StandaloneDetector::new(None);
        let rx = d.leader();
        assert!(rx.borrow().is_none());
        d.set(Some(MasterInfo {
            id: "m".into(),
            ..Default::default()
        }));
        assert_eq!(rx.borrow().as_ref().unwrap().id, "m");
    }
}
