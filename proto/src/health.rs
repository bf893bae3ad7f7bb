//! Health and readiness checks of a task: their defaults and their rules.
//!
//! [`task_checks`] reads a [`TaskInfo`]'s `health_checks` and
//! `readiness_checks`, fills in the defaults (Marathon's: grace period 300 s,
//! interval 60 s, timeout 20 s, 3 failures in a row, first check after 15 s;
//! readiness every 30 s with a 10 s timeout), resolves port indexes against
//! the task's own ports, and refuses what cannot work with a message that
//! names the field. The master validates launches with it; the agent runs
//! what it returns. Pure: no I/O.

use std::fmt;
use std::time::Duration;

use crate::Resources;
use crate::v1::{CommandInfo, HealthCheck, ReadinessCheck, TaskInfo, health_check};

/// Marathon's `gracePeriodSeconds`.
pub const DEFAULT_GRACE_PERIOD_SECONDS: f64 = 300.0;
/// Marathon's `intervalSeconds`.
pub const DEFAULT_INTERVAL_SECONDS: f64 = 60.0;
/// Marathon's `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 20.0;
/// Marathon's `maxConsecutiveFailures`.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 3;
/// Marathon's `delaySeconds` (and Mesos's `delay_seconds`).
pub const DEFAULT_DELAY_SECONDS: f64 = 15.0;
/// Marathon's readiness `intervalSeconds`.
pub const DEFAULT_READINESS_INTERVAL_SECONDS: f64 = 30.0;
/// Marathon's readiness `timeoutSeconds`.
pub const DEFAULT_READINESS_TIMEOUT_SECONDS: f64 = 10.0;
/// The most health (or readiness) checks one task may have.
pub const MAX_CHECKS: usize = 16;
/// The longest any of a check's durations may be (a week).
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;
/// The longest HTTP path a check may ask for.
pub const MAX_PATH_LEN: usize = 2048;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Which status codes count as success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statuses {
    /// 200-399 (health checks without `statuses`).
    Success,
    /// Exactly these.
    Listed(Vec<u16>),
}

impl Statuses {
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            Statuses::Success => (200..400).contains(&status),
            Statuses::Listed(codes) => codes.contains(&status),
        }
    }
}

/// An HTTP GET to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    pub scheme: Scheme,
    pub port: u16,
    pub path: String,
    pub statuses: Statuses,
}

/// What one check does.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Http(HttpProbe),
    Tcp { port: u16 },
    Command(CommandInfo),
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Http(h) => write!(
                f,
                "GET {}://127.0.0.1:{}{}",
                h.scheme.as_str(),
                h.port,
                h.path
            ),
            Probe::Tcp { port } => write!(f, "TCP 127.0.0.1:{port}"),
            Probe::Command(c) => write!(f, "command `{}`", c.value),
        }
    }
}

/// A health check with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedHealthCheck {
    pub probe: Probe,
    pub delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub grace_period: Duration,
    pub consecutive_failures: u32,
    pub kill_on_failure: bool,
}

/// A readiness check with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedReadinessCheck {
    pub probe: HttpProbe,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A task's checks, resolved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskChecks {
    pub health: Vec<ResolvedHealthCheck>,
    pub readiness: Vec<ResolvedReadinessCheck>,
}

impl TaskChecks {
    pub fn is_empty(&self) -> bool {
        self.health.is_empty() && self.readiness.is_empty()
    }
}

/// Reads, checks and resolves the task's health and readiness checks.
/// Errors name the field: `health_checks[0].http.port_index: ...`.
pub fn task_checks(task: &TaskInfo) -> Result<TaskChecks, String> {
    if task.health_checks.is_empty() && task.readiness_checks.is_empty() {
        return Ok(TaskChecks::default());
    }
    for (what, n) in [
        ("health_checks", task.health_checks.len()),
        ("readiness_checks", task.readiness_checks.len()),
    ] {
        if n > MAX_CHECKS {
            return Err(format!(
                "{what}: the task has {n}; at most {MAX_CHECKS} are allowed"
            ));
        }
    }
    let ports = task_ports(task)?;
    let health = task
        .health_checks
        .iter()
        .enumerate()
        .map(|(i, c)| health_check(c, &ports).map_err(|e| format!("health_checks[{i}].{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let readiness = task
        .readiness_checks
        .iter()
        .enumerate()
        .map(|(i, c)| readiness_check(c, &ports).map_err(|e| format!("readiness_checks[{i}].{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TaskChecks { health, readiness })
}

/// The task's host ports in order (`PORT0`, `PORT1`, ...).
fn task_ports(task: &TaskInfo) -> Result<Vec<u64>, String> {
    let resources = Resources::from_proto(&task.resources).map_err(|e| e.to_string())?;
    Ok(resources
        .ports()
        .ranges()
        .iter()
        .flat_map(|&(b, e)| b..=e)
        .take(65_536)
        .collect())
}

fn health_check(c: &HealthCheck, ports: &[u64]) -> Result<ResolvedHealthCheck, String> {
    use health_check::Type;
    let has = |set: bool, field: &str, kind: &str| {
        if set {
            Err(format!(
                "{field}: the check is {kind}; set only the field its type names"
            ))
        } else {
            Ok(())
        }
    };
    let probe = match c.r#type() {
        Type::Unknown => {
            return Err("type: not set; say HTTP, TCP or COMMAND".into());
        }
        Type::Http => {
            has(c.tcp.is_some(), "tcp", "HTTP")?;
            has(c.command.is_some(), "command", "HTTP")?;
            let http = c.http.clone().unwrap_or_default();
            Probe::Http(
                http_probe(&http, ports, Statuses::Success).map_err(|e| format!("http.{e}"))?,
            )
        }
        Type::Tcp => {
            has(c.http.is_some(), "http", "TCP")?;
            has(c.command.is_some(), "command", "TCP")?;
            let tcp = c.tcp.unwrap_or_default();
            Probe::Tcp {
                port: port(tcp.port, tcp.port_index, ports).map_err(|e| format!("tcp.{e}"))?,
            }
        }
        Type::Command => {
            has(c.http.is_some(), "http", "COMMAND")?;
            has(c.tcp.is_some(), "tcp", "COMMAND")?;
            let command = c
                .command
                .clone()
                .ok_or("command: a COMMAND check needs a command")?;
            if command.value.trim().is_empty() {
                return Err("command.value: empty; give a shell command or an executable".into());
            }
            if let Some(env) = &command.environment {
                for v in &env.variables {
                    if v.name.is_empty() || v.name.contains('=') || v.name.contains('\0') {
                        return Err(format!(
                            "command.environment: `{}` is not a variable name",
                            v.name
                        ));
                    }
                }
            }
            Probe::Command(command)
        }
    };
    let consecutive_failures = c
        .consecutive_failures
        .unwrap_or(DEFAULT_CONSECUTIVE_FAILURES);
    if consecutive_failures == 0 {
        return Err(
            "consecutive_failures: 0; it must be at least 1 (to never kill the task, set \
             kill_on_failure to false)"
                .into(),
        );
    }
    Ok(ResolvedHealthCheck {
        probe,
        delay: seconds(
            "delay_seconds",
            c.delay_seconds,
            DEFAULT_DELAY_SECONDS,
            true,
        )?,
        interval: seconds(
            "interval_seconds",
            c.interval_seconds,
            DEFAULT_INTERVAL_SECONDS,
            false,
        )?,
        timeout: seconds(
            "timeout_seconds",
            c.timeout_seconds,
            DEFAULT_TIMEOUT_SECONDS,
            false,
        )?,
        grace_period: seconds(
            "grace_period_seconds",
            c.grace_period_seconds,
            DEFAULT_GRACE_PERIOD_SECONDS,
            true,
        )?,
        consecutive_failures,
        kill_on_failure: c.kill_on_failure.unwrap_or(true),
    })
}

fn readiness_check(c: &ReadinessCheck, ports: &[u64]) -> Result<ResolvedReadinessCheck, String> {
    let http = c.http.clone().unwrap_or_default();
    Ok(ResolvedReadinessCheck {
        probe: http_probe(&http, ports, Statuses::Listed(vec![200]))
            .map_err(|e| format!("http.{e}"))?,
        interval: seconds(
            "interval_seconds",
            c.interval_seconds,
            DEFAULT_READINESS_INTERVAL_SECONDS,
            false,
        )?,
        timeout: seconds(
            "timeout_seconds",
            c.timeout_seconds,
            DEFAULT_READINESS_TIMEOUT_SECONDS,
            false,
        )?,
    })
}

fn http_probe(
    http: &health_check::HttpCheckInfo,
    ports: &[u64],
    default_statuses: Statuses,
) -> Result<HttpProbe, String> {
    let scheme = match http.scheme.to_ascii_lowercase().as_str() {
        "" | "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "scheme: `{other}` is not supported; use http or https"
            ));
        }
    };
    let path = if http.path.is_empty() {
        "/".to_string()
    } else {
        http.path.clone()
    };
    if !path.starts_with('/') {
        return Err(format!("path: `{path}` must start with /"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "path: {} characters long; at most {MAX_PATH_LEN} are allowed",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "path: contains {c:?}; use printable ASCII without spaces (percent-encode the rest)"
        ));
    }
    let statuses = if http.statuses.is_empty() {
        default_statuses
    } else {
        let mut codes = Vec::with_capacity(http.statuses.len());
        for &s in &http.statuses {
            if !(100..=599).contains(&s) {
                return Err(format!(
                    "statuses: {s} is not an HTTP status code (100-599)"
                ));
            }
            codes.push(s as u16);
        }
        Statuses::Listed(codes)
    };
    Ok(HttpProbe {
        scheme,
        port: port(http.port, http.port_index, ports)?,
        path,
        statuses,
    })
}

/// The port a check talks to: `port`, or the task's port at `index` (index
/// 0 when neither is given).
fn port(port: Option<u32>, index: Option<u32>, ports: &[u64]) -> Result<u16, String> {
    match (port, index) {
        (Some(_), Some(_)) => Err("port, port_index: give one of them, not both".into()),
        (Some(p), None) => match u16::try_from(p) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("port: {p} is not a port number (1-65535)")),
        },
        (None, index) => {
            let i = index.unwrap_or(0);
            let field = if index.is_some() {
                "port_index"
            } else {
                "port_index (unset: 0)"
            };
            match ports.get(i as usize) {
                Some(&p) => u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{field}: the task's port {p} is not a port number")),
                None if ports.is_empty() => Err(format!(
                    "{field}: the task has no ports; give it a ports resource or name a port \
                     with `port`"
                )),
                None => Err(format!(
                    "{field}: {i} is out of range; the task has {} port{} ({})",
                    ports.len(),
                    if ports.len() == 1 { "" } else { "s" },
                    ports
                        .iter()
                        .take(8)
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )),
            }
        }
    }
}

/// A number of seconds: finite, not negative, at most [`MAX_SECONDS`], and
/// above 0 unless `zero_ok`.
fn seconds(
    field: &str,
    value: Option<f64>,
    default: f64,
    zero_ok: bool,
) -> Result<Duration, String> {
    let v = value.unwrap_or(default);
    let ok = v.is_finite() && v <= MAX_SECONDS && if zero_ok { v >= 0.0 } else { v > 0.0 };
    if !ok {
        let want = if zero_ok { ">= 0" } else { "> 0" };
        return Err(format!(
            "{field}: {v} is not a number of seconds {want} and at most {MAX_SECONDS}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::health_check::{HttpCheckInfo, TcpCheckInfo, Type};

    fn task(resources: &str, health: Vec<HealthCheck>, readiness: Vec<ReadinessCheck>) -> TaskInfo {
        TaskInfo {
            task_id: "t".into(),
            resources: Resources::parse(resources).unwrap().to_proto(),
            health_checks: health,
            readiness_checks: readiness,
            ..Default::default()
        }
    }

    fn http(path: &str) -> HealthCheck {
        HealthCheck {
            r#type: Type::Http as i32,
            http: Some(HttpCheckInfo {
                path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const RES: &str = "cpus:1;ports:[31000-31001]";

    #[test]
    fn defaults_are_marathons() {
        let checks =
            task_checks(&task(RES, vec![http("")], vec![ReadinessCheck::default()])).unwrap();
        let h = &checks.health[0];
        assert_eq!(h.grace_period, Duration::from_secs(300));
        assert_eq!(h.interval, Duration::from_secs(60));
        assert_eq!(h.timeout, Duration::from_secs(20));
        assert_eq!(h.delay, Duration::from_secs(15));
        assert_eq!(h.consecutive_failures, 3);
        assert!(h.kill_on_failure);
        assert_eq!(
            h.probe,
            Probe::Http(HttpProbe {
                scheme: Scheme::Http,
                port: 31000,
                path: "/".into(),
                statuses: Statuses::Success,
            })
        );
        assert_eq!(h.probe.to_string(), "GET http://127.0.0.1:31000/");
        let r = &checks.readiness[0];
        assert_eq!(r.interval, Duration::from_secs(30));
        assert_eq!(r.timeout, Duration::from_secs(10));
        assert_eq!(r.probe.statuses, Statuses::Listed(vec![200]));
        assert!(Statuses::Success.accepts(399) && !Statuses::Success.accepts(400));
        assert!(!Statuses::Success.accepts(199));
        assert!(
            task_checks(&task("cpus:1", vec![], vec![]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn ports_come_from_the_task_or_the_check() {
        let mut c = http("/health");
        c.http.as_mut().unwrap().port_index = Some(1);
        c.http.as_mut().unwrap().scheme = "HTTPS".into();
        c.http.as_mut().unwrap().statuses = vec![204];
        let got = task_checks(&task(RES, vec![c], vec![])).unwrap();
        let Probe::Http(h) = &got.health[0].probe else {
            panic!()
        };
        assert_eq!((h.port, h.scheme), (31001, Scheme::Https));
        assert!(h.statuses.accepts(204) && !h.statuses.accepts(200));

        let tcp = HealthCheck {
            r#type: Type::Tcp as i32,
            tcp: Some(TcpCheckInfo {
                port: Some(8080),
                port_index: None,
            }),
            ..Default::default()
        };
        let got = task_checks(&task("cpus:1", vec![tcp], vec![])).unwrap();
        assert_eq!(got.health[0].probe, Probe::Tcp { port: 8080 });
    }

    fn refused(health: Vec<HealthCheck>, readiness: Vec<ReadinessCheck>) -> String {
        task_checks(&task(RES, health, readiness)).unwrap_err()
    }

    #[test]
    fn bad_checks_are_refused_with_the_field() {
        let mut c = http("/");
        c.http.as_mut().unwrap().port_index = Some(2);
        let e = refused(vec![c], vec![]);
        assert!(
            e.starts_with("health_checks[0].http.port_index: 2 is out of range"),
            "{e}"
        );
        assert!(e.contains("2 ports (31000,31001)"), "{e}");

        let e = task_checks(&task("cpus:1", vec![http("/")], vec![])).unwrap_err();
        assert!(e.contains("the task has no ports"), "{e}");

        let mut c = http("/");
        c.http.as_mut().unwrap().port = Some(70_000);
        assert!(refused(vec![c], vec![]).contains("70000 is not a port number"));
        let mut c = http("/");
        c.http.as_mut().unwrap().port = Some(1);
        c.http.as_mut().unwrap().port_index = Some(0);
        assert!(refused(vec![c], vec![]).contains("not both"));

        for (field, set) in [
            (
                "interval_seconds",
                (|c: &mut HealthCheck, v| c.interval_seconds = Some(v))
                    as fn(&mut HealthCheck, f64),
            ),
            ("timeout_seconds", |c, v| c.timeout_seconds = Some(v)),
            ("grace_period_seconds", |c, v| {
                c.grace_period_seconds = Some(v)
            }),
            ("delay_seconds", |c, v| c.delay_seconds = Some(v)),
        ] {
            for v in [f64::NAN, f64::INFINITY, -1.0, 1e12] {
                let mut c = http("/");
                set(&mut c, v);
                let e = refused(vec![c], vec![]);
                assert!(e.starts_with(&format!("health_checks[0].{field}: ")), "{e}");
            }
        }
        let mut c = http("/");
        c.interval_seconds = Some(0.0);
        assert!(refused(vec![c], vec![]).contains("interval_seconds: 0"));
        let mut c = http("/");
        c.grace_period_seconds = Some(0.0);
        c.delay_seconds = Some(0.0);
        assert!(task_checks(&task(RES, vec![c], vec![])).is_ok());

        let mut c = http("/");
        c.consecutive_failures = Some(0);
        assert!(refused(vec![c], vec![]).contains("kill_on_failure"));

        assert!(refused(vec![http("health")], vec![]).contains("must start with /"));
        assert!(refused(vec![http("/a b")], vec![]).contains("' '"));
        let mut c = http("/");
        c.http.as_mut().unwrap().statuses = vec![200, 999];
        assert!(refused(vec![c], vec![]).contains("999"));
        let mut c = http("/");
        c.http.as_mut().unwrap().scheme = "ftp".into();
        assert!(refused(vec![c], vec![]).contains("ftp"));

        let e = refused(vec![HealthCheck::default()], vec![]);
        assert!(e.contains("type: not set"), "{e}");
        let mut c = http("/");
        c.tcp = Some(TcpCheckInfo::default());
        assert!(refused(vec![c], vec![]).contains("health_checks[0].tcp"));
        let cmd = HealthCheck {
            r#type: Type::Command as i32,
            ..Default::default()
        };
        assert!(refused(vec![cmd], vec![]).contains("needs a command"));
        let cmd = HealthCheck {
            r#type: Type::Command as i32,
            command: Some(CommandInfo {
                value: " ".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(refused(vec![cmd], vec![]).contains("command.value"));

        let r = ReadinessCheck {
            timeout_seconds: Some(-2.0),
            ..Default::default()
        };
        assert!(refused(vec![], vec![r]).starts_with("readiness_checks[0].timeout_seconds"));
        let e = refused(vec![http("/"); MAX_CHECKS + 1], vec![]);
        assert!(e.contains("at most 16"), "{e}");
    }
}
