//! ZooKeeper backends, for several masters of which one leads.
//!
//! Layout (compatible with Apache Mesos, so its tools can read it):
//!
//! ```text
//! <path>/json.info_0000000007     ephemeral sequential, one per master: its
//! <path>/json.info_0000000008     MasterInfo as JSON; the lowest number leads
//! <path>-registry/<bucket>/<key>  the registry (frameworks, agents), beside
//!                                 <path> so that nothing else is written there
//! ```
//!
//! * [`ZkContender`]: creates this master's `json.info_` node and waits until
//!   it is the lowest; the leadership ends at once when the session is lost
//!   (expired, or disconnected for a third of the session timeout: before
//!   ZooKeeper can expire it and let another master lead).
//! * [`ZkDetector`]: follows the lowest `json.info_` node: who leads.
//! * [`ZkStore`]: the registry, with writes fenced on the leader's node.
//!
//! Every part reconnects by itself (jittered backoff, a warning per failed
//! attempt) and opens a new session when ZooKeeper expired the old one.

mod contender;
mod detector;
mod info;
mod store;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use zookeeper_client::{Client, SessionState, StateWatcher};

pub use contender::ZkContender;
pub use detector::{ZkDetector, find_leader};
pub use info::{master_info_from_json, master_info_to_json};
pub use store::ZkStore;

use crate::CoordError;

/// Mesos's default ZooKeeper session timeout.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The name prefix of the masters' nodes (Mesos's JSON layout).
pub const LEADER_PREFIX: &str = "json.info_";

/// The port of a ZooKeeper server given without one.
const DEFAULT_PORT: u16 = 2181;

/// A `zk://host:port[,host:port...]/path` address: the ensemble and the
/// path under which masters elect their leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    servers: Vec<String>,
    path: String,
}

impl ZkUrl {
    /// Whether `s` is meant as a ZooKeeper address (and must then parse).
    pub fn is_zk(s: &str) -> bool {
        s.trim().starts_with("zk://")
    }

    /// Reads `zk://h1:2181,h2:2181/agora`. The port defaults to 2181; the
    /// path is required.
    pub fn parse(url: &str) -> Result<ZkUrl, CoordError> {
        let bad = |reason: &str| CoordError::InvalidZkUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = url.trim();
        let rest = trimmed
            .strip_prefix("zk://")
            .ok_or_else(|| bad("it must start with zk://, e.g. zk://127.0.0.1:2181/agora"))?;
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if hosts.contains('@') {
            return Err(bad(
                "credentials in the address are not supported; give zk://host:port/path",
            ));
        }
        if hosts.is_empty() {
            return Err(bad(
                "it names no ZooKeeper server; give zk://host:port/path",
            ));
        }
        let mut servers = Vec::new();
        for server in hosts.split(',') {
            let server = server.trim();
            if server.is_empty() {
                return Err(bad("it has an empty server between commas"));
            }
            servers.push(parse_server(server).map_err(|why| bad(&why))?);
        }
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return Err(bad(
                "it has no path; give the path the masters share, e.g. zk://127.0.0.1:2181/agora",
            ));
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(bad(&format!(
                    "its path `{path}` has an empty, `.` or `..` segment"
                )));
            }
            if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(&format!(
                    "its path `{path}` has spaces or control characters"
                )));
            }
        }
        if path == "/zookeeper" || path.starts_with("/zookeeper/") {
            return Err(bad("/zookeeper is ZooKeeper's own; choose another path"));
        }
        Ok(ZkUrl {
            servers,
            path: path.to_string(),
        })
    }

    /// The ensemble, as ZooKeeper clients take it: `h1:2181,h2:2181`.
    pub fn servers(&self) -> String {
        self.servers.join(",")
    }

    /// The path of the masters' nodes, e.g. `/agora`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the registry lives: beside [`path`](Self::path), e.g.
    /// `/agora-registry`.
    pub fn registry_path(&self) -> String {
        format!("{}-registry", self.path)
    }
}

fn parse_server(server: &str) -> Result<String, String> {
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        // [v6]:port
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("server `{server}` has an unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("server `{server}` is not host:port")),
        };
        (format!("[{host}]"), port)
    } else {
        match server.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (server.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains(['/', ' ', ':']) && !host.starts_with('[') {
        return Err(format!("server `{server}` has no valid host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("server `{server}` has no valid port (1-65535)")),
        },
    };
    Ok(format!("{host}:{port}"))
}

impl FromStr for ZkUrl {
    type Err = CoordError;

    fn from_str(s: &str) -> Result<ZkUrl, CoordError> {
        ZkUrl::parse(s)
    }
}

impl fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zk://{}{}", self.servers(), self.path)
    }
}

/// Opens sessions with one ensemble.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    servers: String,
    session_timeout: Duration,
    /// Who connects, for the logs ("leader election", "leader detection",
    /// "registry").
    purpose: &'static str,
}

impl Connector {
    pub(crate) fn new(url: &ZkUrl, session_timeout: Duration, purpose: &'static str) -> Connector {
        Connector {
            servers: url.servers(),
            session_timeout,
            purpose,
        }
    }

    /// One attempt to open a session (tries each server once).
    pub(crate) async fn connect_once(&self) -> Result<Client, CoordError> {
        let attempt = Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_fail_eagerly()
            .connect(&self.servers);
        // A server that swallows packets: give up after a session timeout.
        match tokio::time::timeout(self.session_timeout.max(Duration::from_secs(1)), attempt).await
        {
            Ok(Ok(client)) => {
                tracing::debug!(
                    servers = %self.servers,
                    session = ?client.session_id(),
                    negotiated_timeout = ?client.session_timeout(),
                    purpose = self.purpose,
                    "ZooKeeper session open"
                );
                Ok(client)
            }
            Ok(Err(source)) => Err(self.error("cannot open a session", source)),
            Err(_) => Err(self.error("cannot open a session", zookeeper_client::Error::Timeout)),
        }
    }

    /// Opens a session, retrying with jittered backoff (and a warning per
    /// failed attempt) until it succeeds.
    pub(crate) async fn connect(&self) -> Client {
        let mut backoff = Backoff::new();
        loop {
            match self.connect_once().await {
                Ok(client) => return client,
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(purpose = self.purpose, retry_in = ?delay, "{e}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    pub(crate) fn error(&self, what: &str, source: zookeeper_client::Error) -> CoordError {
        CoordError::ZooKeeper {
            servers: self.servers.clone(),
            what: what.to_string(),
            source,
        }
    }
}

/// Resolves when the session ends for good (expired, closed, refused).
pub(crate) async fn session_ended(state: &mut StateWatcher) -> zookeeper_client::Error {
    loop {
        let s = state.changed().await;
        match s {
            SessionState::Expired => return zookeeper_client::Error::SessionExpired,
            SessionState::Closed => return zookeeper_client::Error::ClientClosed,
            SessionState::AuthFailed => return zookeeper_client::Error::AuthFailed,
            _ => {}
        }
    }
}

/// The masters' nodes among `children`, lowest sequence first.
pub(crate) fn contenders(mut children: Vec<String>) -> Vec<String> {
    children.retain(|c| {
        c.strip_prefix(LEADER_PREFIX)
            .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
    });
    children.sort_by_key(|c| c[LEADER_PREFIX.len()..].parse::<u64>().unwrap_or(u64::MAX));
    children
}

/// Jittered exponential backoff for reconnecting: `[d/2, d]`, `d` doubling
/// from 250 ms to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Backoff {
        Backoff { step: Self::MIN }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(Self::MAX);
        step / 2 + step.mul_f64(fastrand::f64()) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ensembles_and_paths() {
        let u = ZkUrl::parse("zk://h1:2181,h2:2182/agora").unwrap();
        assert_eq!(u.servers(), "h1:2181,h2:2182");
        assert_eq!(u.path(), "/agora");
        assert_eq!(u.registry_path(), "/agora-registry");
        assert_eq!(u.to_string(), "zk://h1:2181,h2:2182/agora");

        let u = ZkUrl::parse(" zk://10.0.0.1/a/b/ ").unwrap();
        assert_eq!(u.servers(), "10.0.0.1:2181");
        assert_eq!(u.path(), "/a/b");
        let u: ZkUrl = "zk://[::1]:2181,[::2]/x".parse().unwrap();
        assert_eq!(u.servers(), "[::1]:2181,[::2]:2181");
        assert!(ZkUrl::is_zk("zk://x/y"));
        assert!(!ZkUrl::is_zk("127.0.0.1:5050"));
    }

    #[test]
    fn refuses_bad_addresses_and_says_why() {
        for (bad, why) in [
            ("127.0.0.1:2181/agora", "zk://"),
            ("zk:///agora", "no ZooKeeper server"),
            ("zk://h1:2181", "no path"),
            ("zk://h1:2181/", "no path"),
            ("zk://h1:0/agora", "port"),
            ("zk://h1:99999/agora", "port"),
            ("zk://h1:x/agora", "port"),
            ("zk://h1,,h2/agora", "empty server"),
            ("zk://u:p@h1/agora", "credentials"),
            ("zk://h1/a//b", "segment"),
            ("zk://h1/a/../b", "segment"),
            ("zk://h1/zookeeper", "ZooKeeper's own"),
            ("zk://:2181/agora", "host"),
        ] {
            let err = ZkUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn contenders_sort_by_sequence_and_skip_others() {
        let got = contenders(vec![
            "json.info_0000000010".into(),
            "info_0000000001".into(),
            "json.info_0000000002".into(),
            "json.info_".into(),
            "json.info_x".into(),
        ]);
        assert_eq!(got, vec!["json.info_0000000002", "json.info_0000000010"]);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= Duration::from_millis(125) && first <= Duration::from_millis(250));
        for _ in 0..10 {
            b.next();
        }
        let late = b.next();
        assert!(late >= Duration::from_millis(2500) && late <= Duration::from_secs(5));
    }
}
