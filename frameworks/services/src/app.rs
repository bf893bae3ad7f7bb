//! The app definition: Marathon's JSON names and defaults.
//!
//! [`AppDefinition`] is what a user writes (POST/PUT bodies). Unknown fields
//! are refused (Marathon ignores them silently; Agora reports them so a typo
//! such as `healthcheck` does not pass unnoticed), except the read-only keys
//! Marathon itself returns ([`READ_ONLY_KEYS`]), so a definition fetched with
//! GET can be sent back as it is. [`StoredApp`] is a definition with its
//! version, as kept in the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::time::Millis;

/// Keys Marathon returns with an app that a client may send back; they are
/// ignored on input.
pub const READ_ONLY_KEYS: &[&str] = &[
    "version",
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

fn one() -> i64 {
    1
}
fn default_cpus() -> f64 {
    1.0
}
fn default_mem() -> f64 {
    128.0
}
fn default_backoff_factor() -> f64 {
    1.15
}
fn default_max_launch_delay() -> i64 {
    300
}
fn default_tcp() -> String {
    "tcp".into()
}

/// An app definition as users write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppDefinition {
    /// `/team/web`; relative ids are read as absolute.
    #[serde(default)]
    pub id: String,
    /// Run through `/bin/sh -c`. Either `cmd` or `args` (or a Docker image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// argv, run without a shell (Docker: arguments to the image's entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub instances: i64,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub gpus: i64,
    #[serde(default)]
    pub executor: String,
    /// `[[field, OPERATOR, value?], ...]`.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub uris: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub fetch: Vec<serde_json::Value>,
    #[serde(default)]
    pub store_urls: Vec<String>,
    #[serde(default = "one")]
    pub backoff_seconds: i64,
    #[serde(default = "default_backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ip_address: Option<serde_json::Value>,
    /// Deprecated form of `portDefinitions` (input only).
    #[serde(default, skip_serializing)]
    pub ports: Option<Vec<i64>>,
    /// Host ports; `None` on input means Marathon's default (one port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    #[serde(default)]
    pub require_ports: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub kill_selection: KillSelection,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub residency: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub secrets: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// `DOCKER` (default) or `MESOS`.
    #[serde(default = "default_container_type", rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// `None`: one default mapping in BRIDGE mode, none in HOST mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

fn default_container_type() -> String {
    "DOCKER".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Docker {
    #[serde(default)]
    pub image: String,
    /// Deprecated in Marathon for app-level `networks`; both are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Deprecated location of `container.portMappings` (input only).
    #[serde(default, skip_serializing)]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<DockerParameter>,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub credential: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    #[serde(default = "default_rw")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub persistent: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub external: Option<serde_json::Value>,
}

fn default_rw() -> String {
    "RW".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    /// `None` or 0: a port taken from the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default = "default_tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortDefinition {
    /// 0: any host port, and a service port is assigned. With
    /// `requirePorts`: exactly this host port.
    #[serde(default)]
    pub port: i64,
    #[serde(default = "default_tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// `host`, `container/bridge` or `container`.
    #[serde(default = "default_network_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_network_mode() -> String {
    "container".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS, MESOS_TCP.
    #[serde(default = "default_http")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "default_grace")]
    pub grace_period_seconds: i64,
    #[serde(default = "default_interval")]
    pub interval_seconds: i64,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: i64,
    #[serde(default = "default_failures")]
    pub max_consecutive_failures: i64,
    #[serde(default)]
    pub ignore_http1xx: bool,
    #[serde(default = "default_delay")]
    pub delay_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol: Option<String>,
}

fn default_http() -> String {
    "HTTP".into()
}
fn default_grace() -> i64 {
    300
}
fn default_interval() -> i64 {
    60
}
fn default_timeout() -> i64 {
    20
}
fn default_failures() -> i64 {
    3
}
fn default_delay() -> i64 {
    15
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessCheck {
    #[serde(default = "default_readiness_name")]
    pub name: String,
    #[serde(default = "default_http")]
    pub protocol: String,
    #[serde(default = "default_slash")]
    pub path: String,
    #[serde(default = "default_port_name")]
    pub port_name: String,
    #[serde(default = "default_readiness_interval")]
    pub interval_seconds: i64,
    #[serde(default = "default_readiness_timeout")]
    pub timeout_seconds: i64,
    #[serde(default = "default_ready_codes")]
    pub http_status_codes_for_ready: Vec<i64>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

fn default_readiness_name() -> String {
    "readinessCheck".into()
}
fn default_slash() -> String {
    "/".into()
}
fn default_port_name() -> String {
    "http-api".into()
}
fn default_readiness_interval() -> i64 {
    30
}
fn default_readiness_timeout() -> i64 {
    10
}
fn default_ready_codes() -> Vec<i64> {
    vec![200]
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeStrategy {
    #[serde(default = "default_capacity")]
    pub minimum_health_capacity: f64,
    #[serde(default = "default_capacity")]
    pub maximum_over_capacity: f64,
}

fn default_capacity() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// Which instances go first when an app has too many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

/// What happens to an instance whose agent stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Enabled(UnreachableEnabled),
    /// `"disabled"`: never replaced while unreachable.
    Disabled(UnreachableDisabled),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnreachableDisabled {
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnreachableEnabled {
    /// Replaced after this long unreachable.
    #[serde(default = "default_inactive")]
    pub inactive_after_seconds: i64,
    /// Forgotten (and killed if it comes back) after this long.
    #[serde(default = "default_expunge")]
    pub expunge_after_seconds: i64,
}

fn default_inactive() -> i64 {
    300
}
fn default_expunge() -> i64 {
    600
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled(UnreachableEnabled {
            inactive_after_seconds: default_inactive(),
            expunge_after_seconds: default_expunge(),
        })
    }
}

/// How an app's tasks reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Host,
    Bridge,
    None,
}

impl AppDefinition {
    /// The Docker image, when this is a Docker app.
    pub fn docker_image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
            .filter(|i| !i.is_empty())
    }

    /// The network mode, from `networks` or the deprecated `docker.network`
    /// (validation refuses the combinations Agora cannot run).
    pub fn network_mode(&self) -> NetworkMode {
        if let Some(n) = self.networks.as_ref().and_then(|n| n.first()) {
            return match n.mode.as_str() {
                "container/bridge" => NetworkMode::Bridge,
                _ => NetworkMode::Host,
            };
        }
        match self
            .container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .and_then(|d| d.network.as_deref())
        {
            Some("BRIDGE") => NetworkMode::Bridge,
            Some("NONE") => NetworkMode::None,
            _ => NetworkMode::Host,
        }
    }

    /// The port mappings of a bridged Docker app (empty otherwise).
    pub fn port_mappings(&self) -> &[PortMapping] {
        if self.network_mode() != NetworkMode::Bridge {
            return &[];
        }
        self.container
            .as_ref()
            .and_then(|c| c.port_mappings.as_deref())
            .unwrap_or(&[])
    }

    /// The port definitions of a host-network app (empty otherwise).
    pub fn port_definitions(&self) -> &[PortDefinition] {
        if self.network_mode() != NetworkMode::Host {
            return &[];
        }
        self.port_definitions.as_deref().unwrap_or(&[])
    }

    /// How many host ports each instance takes from an offer.
    pub fn host_port_count(&self) -> usize {
        self.port_definitions().len() + self.port_mappings().len()
    }

    /// The inactive/expunge waits in milliseconds; `None` when disabled.
    pub fn unreachable_waits(&self) -> Option<(Millis, Millis)> {
        match self.unreachable_strategy {
            UnreachableStrategy::Enabled(e) => Some((
                e.inactive_after_seconds.saturating_mul(1000),
                e.expunge_after_seconds.saturating_mul(1000),
            )),
            UnreachableStrategy::Disabled(_) => None,
        }
    }

    /// Whether `other` differs from `self` only in `instances` (a scale,
    /// which replaces no instance).
    pub fn is_only_scale_of(&self, other: &AppDefinition) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        &a == other
    }
}

/// A definition with its version, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredApp {
    pub definition: AppDefinition,
    /// This version's timestamp (milliseconds).
    pub version: Millis,
    /// When the instance count last changed (or a restart was asked).
    pub last_scaling_at: Millis,
    /// When anything but the instance count last changed: instances
    /// launched for an older configuration are replaced by a restart.
    pub last_config_change_at: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_definition_gets_marathons_defaults() {
        let app: AppDefinition =
            serde_json::from_str(r#"{"id":"/web","cmd":"sleep 100"}"#).unwrap();
        assert_eq!(app.instances, 1);
        assert_eq!(app.cpus, 1.0);
        assert_eq!(app.mem, 128.0);
        assert_eq!(app.backoff_seconds, 1);
        assert_eq!(app.backoff_factor, 1.15);
        assert_eq!(app.max_launch_delay_seconds, 300);
        assert_eq!(app.upgrade_strategy, UpgradeStrategy::default());
        assert_eq!(app.kill_selection, KillSelection::YoungestFirst);
        assert_eq!(app.unreachable_strategy, UnreachableStrategy::default());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e =
            serde_json::from_str::<AppDefinition>(r#"{"id":"/web","healthcheck":[]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `healthcheck`"), "{e}");
    }

    #[test]
    fn unreachable_strategy_reads_both_forms() {
        let a: AppDefinition =
            serde_json::from_str(r#"{"unreachableStrategy":"disabled"}"#).unwrap();
        assert_eq!(a.unreachable_waits(), None);
        let a: AppDefinition = serde_json::from_str(
            r#"{"unreachableStrategy":{"inactiveAfterSeconds":1,"expungeAfterSeconds":5}}"#,
        )
        .unwrap();
        assert_eq!(a.unreachable_waits(), Some((1000, 5000)));
        assert_eq!(
            serde_json::to_value(a.unreachable_strategy).unwrap(),
            serde_json::json!({"inactiveAfterSeconds":1,"expungeAfterSeconds":5})
        );
    }

    #[test]
    fn network_modes() {
        let a: AppDefinition = serde_json::from_str(
            r#"{"container":{"type":"DOCKER","docker":{"image":"x","network":"BRIDGE"}}}"#,
        )
        .unwrap();
        assert_eq!(a.network_mode(), NetworkMode::Bridge);
        let a: AppDefinition =
            serde_json::from_str(r#"{"networks":[{"mode":"container/bridge"}]}"#).unwrap();
        assert_eq!(a.network_mode(), NetworkMode::Bridge);
        let a: AppDefinition = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(a.network_mode(), NetworkMode::Host);
    }

    #[test]
    fn scale_only_changes() {
        let a: AppDefinition = serde_json::from_str(r#"{"id":"/a","instances":2}"#).unwrap();
        let mut b = a.clone();
        b.instances = 5;
        assert!(a.is_only_scale_of(&b));
        b.cpus = 2.0;
        assert!(!a.is_only_scale_of(&b));
    }
}
