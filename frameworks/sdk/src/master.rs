//! Finding the leading master.
//!
//! The master is given as an address (`host:port` or `http://host:port`) or
//! as a ZooKeeper path (`zk://host:port,.../path`) under which the masters
//! elect their leader. The driver asks "where is the leader now?" before each
//! connection attempt, and with ZooKeeper it also learns when the leader
//! changes, to leave a master that no longer leads and to cut a backoff
//! short. A master that does not lead refuses `subscribe` naming the leader
//! (`agora-leader` metadata); the next attempt goes there.

use std::fmt;
use std::time::Duration;

use agora_coord::{Detector, ZkDetector, ZkUrl};
use agora_proto::v1::MasterInfo;
use tokio::sync::watch;

use crate::SchedulerError;

/// The gRPC metadata key in which a master that does not lead names the
/// leader (`host:port`).
pub(crate) const LEADER_METADATA: &str = "agora-leader";

/// How long a connection attempt waits for ZooKeeper to name a leader.
const WAIT_FOR_LEADER: Duration = Duration::from_secs(5);

/// Where to find the leading master. Parsed once, when the driver starts.
pub(crate) enum MasterDetector {
    /// A fixed address, as a URI tonic can connect to (`http://host:port`).
    Static {
        uri: String,
        /// A leader named by a refusing master, for the next attempt.
        redirect: Option<String>,
    },
    /// The leader ZooKeeper names.
    ZooKeeper {
        url: ZkUrl,
        /// Started on first use (inside the driver's runtime).
        follower: Option<Follower>,
        redirect: Option<String>,
    },
}

pub(crate) struct Follower {
    leader: watch::Receiver<Option<MasterInfo>>,
    _detector: ZkDetector,
}

impl fmt::Debug for MasterDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterDetector::Static { uri, .. } => write!(f, "Static({uri})"),
            MasterDetector::ZooKeeper { url, .. } => write!(f, "ZooKeeper({url})"),
        }
    }
}

/// `http://host:port` of a master.
fn uri_of(info: &MasterInfo) -> String {
    format!("http://{}", agora_coord::address_of(info))
}

impl MasterDetector {
    /// Reads a `--master` value.
    pub(crate) fn parse(address: &str) -> Result<MasterDetector, SchedulerError> {
        let invalid = |reason: &str| SchedulerError::InvalidMaster {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = address.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty; give the leading master as host:port"));
        }
        if ZkUrl::is_zk(trimmed) {
            let url = ZkUrl::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
            return Ok(MasterDetector::ZooKeeper {
                url,
                follower: None,
                redirect: None,
            });
        }
        Ok(MasterDetector::Static {
            uri: static_uri(trimmed).map_err(|reason| invalid(&reason))?,
            redirect: None,
        })
    }

    /// The URI of the master to connect to now.
    pub(crate) async fn leader(&mut self) -> Result<String, String> {
        match self {
            MasterDetector::Static { uri, redirect } => Ok(redirect.take().unwrap_or(uri.clone())),
            MasterDetector::ZooKeeper {
                url,
                follower,
                redirect,
            } => {
                if let Some(r) = redirect.take() {
                    return Ok(r);
                }
                let follower = follower.get_or_insert_with(|| {
                    tracing::info!(zk = %url, "finding the leading master through ZooKeeper");
                    let detector = ZkDetector::start(url, agora_coord::zk::DEFAULT_SESSION_TIMEOUT);
                    Follower {
                        leader: detector.leader(),
                        _detector: detector,
                    }
                });
                let found = tokio::time::timeout(
                    WAIT_FOR_LEADER,
                    follower.leader.wait_for(|l| l.is_some()),
                )
                .await;
                match found {
                    Ok(Ok(leader)) => Ok(uri_of(leader.as_ref().expect("some"))),
                    _ => Err(format!(
                        "no master leads at the moment (ZooKeeper at {url} names none)"
                    )),
                }
            }
        }
    }

    /// A master that does not lead named `leader` (`host:port`): the next
    /// attempt goes there.
    pub(crate) fn redirect(&mut self, leader: &str) -> Option<String> {
        let uri = static_uri(leader).ok()?;
        match self {
            MasterDetector::Static { redirect, .. }
            | MasterDetector::ZooKeeper { redirect, .. } => *redirect = Some(uri.clone()),
        }
        Some(uri)
    }

    /// Resolves when ZooKeeper names a leader other than `uri` (never for a
    /// fixed address).
    pub(crate) async fn leader_other_than(&mut self, uri: &str) {
        let MasterDetector::ZooKeeper {
            follower: Some(follower),
            ..
        } = self
        else {
            return std::future::pending().await;
        };
        loop {
            let now = follower.leader.borrow_and_update().as_ref().map(uri_of);
            if now.as_deref().is_some_and(|now| now != uri) {
                return;
            }
            if follower.leader.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// `http://host:port` from `host:port` or `http://host:port`.
fn static_uri(trimmed: &str) -> Result<String, String> {
    let uri = if let Some(rest) = trimmed.strip_prefix("http://") {
        rest.trim_end_matches('/').to_string()
    } else if trimmed.starts_with("https://") {
        return Err("TLS is not supported; use host:port or http://host:port".into());
    } else if trimmed.contains("://") {
        return Err(
            "unknown scheme; use host:port, http://host:port or zk://host:port/path".into(),
        );
    } else {
        trimmed.trim_end_matches('/').to_string()
    };
    if uri.contains('/') {
        return Err("a master address has no path; use host:port".into());
    }
    let Some((host, port)) = uri.rsplit_once(':') else {
        return Err("no port; use host:port, e.g. 127.0.0.1:5050".into());
    };
    if host.is_empty() {
        return Err("no host; use host:port, e.g. 127.0.0.1:5050".into());
    }
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("the port must be a number from 1 to 65535".into());
    }
    let uri = format!("http://{uri}");
    uri.parse::<tonic::transport::Uri>()
        .map_err(|e| format!("not a valid address ({e})"))?;
    Ok(uri)
}

/// The leader a refusing master named, if any (`host:port`).
pub(crate) fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)?
        .to_str()
        .ok()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> String {
        match MasterDetector::parse(s).unwrap() {
            MasterDetector::Static { uri, .. } => uri,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_host_port_and_http_urls() {
        assert_eq!(uri("127.0.0.1:5050"), "http://127.0.0.1:5050");
        assert_eq!(uri(" master.example:5050 "), "http://master.example:5050");
        assert_eq!(uri("http://127.0.0.1:5050/"), "http://127.0.0.1:5050");
        assert_eq!(uri("[::1]:5050"), "http://[::1]:5050");
    }

    #[test]
    fn accepts_zookeeper_paths() {
        match MasterDetector::parse("zk://z1:2181,z2:2181/agora").unwrap() {
            MasterDetector::ZooKeeper { url, .. } => {
                assert_eq!(url.to_string(), "zk://z1:2181,z2:2181/agora")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_cannot_work_and_says_why() {
        for (bad, why) in [
            ("", "empty"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "port"),
            ("127.0.0.1:99999", "port"),
            (":5050", "no host"),
            ("zk://z1:2181", "no path"),
            ("zk://z1:0/agora", "port"),
            ("https://m:5050", "TLS"),
            ("ftp://m:5050", "scheme"),
            ("m:5050/api", "path"),
        ] {
            let err = MasterDetector::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_named_leader_is_tried_next_once() {
        let mut d = MasterDetector::parse("127.0.0.1:5050").unwrap();
        assert_eq!(
            d.redirect("127.0.0.1:5051").as_deref(),
            Some("http://127.0.0.1:5051")
        );
        assert_eq!(d.leader().await.unwrap(), "http://127.0.0.1:5051");
        assert_eq!(d.leader().await.unwrap(), "http://127.0.0.1:5050");
        assert_eq!(d.redirect("not an address"), None);

        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.2:5050".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.2:5050"));
        assert_eq!(leader_hint(&tonic::Status::unavailable("x")), None);
    }
}
