//! How to reach the master, and who the framework is.

use std::time::Duration;

use agora_proto::v1::FrameworkInfo;

use crate::SchedulerError;

/// Everything the driver needs. Build it with [`SchedulerConfig::new`] and
/// adjust the fields; [`Scheduler::start`](crate::Scheduler::start) checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// The leading master, as `host:port` or `http://host:port`, or
    /// `zk://host:port,.../path` to find and follow it through ZooKeeper.
    pub master: String,
    /// Who the framework is. Leave `id` empty for a new framework; set it to
    /// fail over to a framework the master still keeps (within its
    /// `failover_timeout`). Empty `roles` means `["*"]`.
    pub framework: FrameworkInfo,
    /// The first delay before reconnecting after a disconnection.
    pub reconnect_min: Duration,
    /// The longest delay between two connection attempts.
    pub reconnect_max: Duration,
    /// Reconnect after this many heartbeat intervals without hearing from the
    /// master (a half-open TCP connection otherwise looks alive forever).
    pub missed_heartbeats: u32,
    /// How long one attempt may take to connect and get the master's answer
    /// to `subscribe`.
    pub connect_timeout: Duration,
    /// How long [`Scheduler::teardown`](crate::Scheduler::teardown) waits for
    /// the master to confirm (by closing the stream).
    pub teardown_timeout: Duration,
}

impl SchedulerConfig {
    /// A new framework called `name` with Agora's defaults: role `*`,
    /// `checkpoint: true` (its tasks survive agent restarts), a failover
    /// timeout of one week (as Marathon uses), reconnecting after 0.5 s to at
    /// most 15 s, after 3 missed heartbeats.
    pub fn new(master: impl Into<String>, name: impl Into<String>) -> SchedulerConfig {
        SchedulerConfig {
            master: master.into(),
            framework: FrameworkInfo {
                name: name.into(),
                roles: vec![agora_proto::UNRESERVED.to_string()],
                failover_timeout: 7.0 * 24.0 * 3600.0,
                checkpoint: true,
                ..Default::default()
            },
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(15),
            missed_heartbeats: 3,
            connect_timeout: Duration::from_secs(10),
            teardown_timeout: Duration::from_secs(5),
        }
    }

    /// Checks what the driver cannot work with.
    pub fn validate(&self) -> Result<(), SchedulerError> {
        crate::master::MasterDetector::parse(&self.master)?;
        let invalid = |what: String| Err(SchedulerError::InvalidConfig(what));
        if self.framework.name.trim().is_empty() {
            return invalid("the framework needs a name (FrameworkInfo.name)".into());
        }
        for role in &self.framework.roles {
            if let Err(e) = agora_proto::resources::validate_role(role) {
                return invalid(e.to_string());
            }
        }
        if let Err(e) = agora_proto::parse_webui_url(&self.framework.webui_url) {
            return invalid(e);
        }
        if !(self.framework.failover_timeout.is_finite() && self.framework.failover_timeout >= 0.0)
        {
            return invalid(format!(
                "failover_timeout must be a number of seconds >= 0, not {}",
                self.framework.failover_timeout
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return invalid(format!(
                "reconnect_min ({:?}) must be above zero and at most reconnect_max ({:?})",
                self.reconnect_min, self.reconnect_max
            ));
        }
        if self.missed_heartbeats == 0 {
            return invalid("missed_heartbeats must be at least 1".into());
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout must be above zero".into());
        }
        Ok(())
    }

    /// The roles the framework acts in (`["*"]` when none are given).
    pub(crate) fn roles(&self) -> Vec<String> {
        if self.framework.roles.is_empty() {
            vec![agora_proto::UNRESERVED.to_string()]
        } else {
            self.framework.roles.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_checkpoint() {
        let c = SchedulerConfig::new("127.0.0.1:5050", "hello");
        c.validate().unwrap();
        assert!(c.framework.checkpoint);
        assert!(c.framework.id.is_empty());
        assert_eq!(c.roles(), vec!["*"]);
    }

    #[test]
    fn refuses_unworkable_settings() {
        let ok = SchedulerConfig::new("127.0.0.1:5050", "hello");
        let cases: Vec<(SchedulerConfig, &str)> = vec![
            (
                SchedulerConfig {
                    master: "zk://z:2181".into(),
                    ..ok.clone()
                },
                "ZooKeeper",
            ),
            (
                SchedulerConfig {
                    reconnect_min: Duration::from_secs(20),
                    ..ok.clone()
                },
                "reconnect_min",
            ),
            (
                SchedulerConfig {
                    missed_heartbeats: 0,
                    ..ok.clone()
                },
                "missed_heartbeats",
            ),
            (
                SchedulerConfig {
                    framework: FrameworkInfo {
                        name: " ".into(),
                        ..ok.framework.clone()
                    },
                    ..ok.clone()
                },
                "name",
            ),
            (
                SchedulerConfig {
                    framework: FrameworkInfo {
                        roles: vec!["a b".into()],
                        ..ok.framework.clone()
                    },
                    ..ok.clone()
                },
                "role",
            ),
            (
                SchedulerConfig {
                    framework: FrameworkInfo {
                        failover_timeout: -1.0,
                        ..ok.framework.clone()
                    },
                    ..ok.clone()
                },
                "failover_timeout",
            ),
            (
                SchedulerConfig {
                    framework: FrameworkInfo {
                        webui_url: "localhost:8080".into(),
                        ..ok.framework.clone()
                    },
                    ..ok.clone()
                },
                "webui_url",
            ),
        ];
        for (config, why) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
