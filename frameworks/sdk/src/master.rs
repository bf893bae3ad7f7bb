//! Finding the leading master.
//!
//! Today the master is given as an address (`host:port` or
//! `http://host:port`). Leader discovery through ZooKeeper (`zk://...`) comes
//! later as another [`MasterDetector`] variant: the driver only ever asks
//! "where is the leader now?" before each connection attempt.

use crate::SchedulerError;

/// Where to find the leading master. Parsed once, when the driver starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MasterDetector {
    /// A fixed address, as a URI tonic can connect to (`http://host:port`).
    Static(String),
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
        if trimmed.starts_with("zk://") {
            return Err(invalid(
                "ZooKeeper discovery is not supported yet; give the leading master as host:port",
            ));
        }
        let uri = if let Some(rest) = trimmed.strip_prefix("http://") {
            rest.trim_end_matches('/').to_string()
        } else if trimmed.starts_with("https://") {
            return Err(invalid(
                "TLS is not supported; use host:port or http://host:port",
            ));
        } else if trimmed.contains("://") {
            return Err(invalid("unknown scheme; use host:port or http://host:port"));
        } else {
            trimmed.trim_end_matches('/').to_string()
        };
        if uri.contains('/') {
            return Err(invalid("a master address has no path; use host:port"));
        }
        let Some((host, port)) = uri.rsplit_once(':') else {
            return Err(invalid("no port; use host:port, e.g. 127.0.0.1:5050"));
        };
        if host.is_empty() {
            return Err(invalid("no host; use host:port, e.g. 127.0.0.1:5050"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        let uri = format!("http://{uri}");
        uri.parse::<tonic::transport::Uri>()
            .map_err(|e| invalid(&format!("not a valid address ({e})")))?;
        Ok(MasterDetector::Static(uri))
    }

    /// The URI of the master to connect to now.
    pub(crate) async fn leader(&mut self) -> Result<String, String> {
        match self {
            MasterDetector::Static(uri) => Ok(uri.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> String {
        match MasterDetector::parse(s).unwrap() {
            MasterDetector::Static(u) => u,
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
    fn refuses_what_cannot_work_and_says_why() {
        for (bad, why) in [
            ("", "empty"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "port"),
            ("127.0.0.1:99999", "port"),
            (":5050", "no host"),
            ("zk://z1:2181/agora", "ZooKeeper"),
            ("https://m:5050", "TLS"),
            ("ftp://m:5050", "scheme"),
            ("m:5050/api", "path"),
        ] {
            let err = MasterDetector::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
