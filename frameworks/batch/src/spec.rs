//! What users write: job and schedule specifications in Metronome's JSON
//! shape, and their validation.
//!
//! Parsing refuses unknown fields and wrong types (with the path of the
//! offending field); [`JobSpec::validate`] and [`ScheduleSpec::validate`]
//! then check values and answer with every problem at once, each with its
//! JSON path, as Metronome's 422 bodies do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cron::{CronSchedule, DEFAULT_TIMEZONE};

/// Metronome's defaults for what a job may leave out.
pub const DEFAULT_CPUS: f64 = 1.0;
pub const DEFAULT_MEM: f64 = 128.0;
pub const DEFAULT_DISK: f64 = 0.0;
pub const DEFAULT_MAX_LAUNCH_DELAY: u64 = 3600;
/// How late a scheduled run may still start when a schedule does not say.
pub const DEFAULT_STARTING_DEADLINE: u64 = 900;
pub const MIN_CPUS: f64 = 0.01;
pub const MIN_MEM: f64 = 32.0;

/// A job: what to run, and (optionally) when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// Dot-separated names of lowercase letters, digits and dashes.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub run: RunSpec,
    /// Schedules given with the job when it is created (or replaced);
    /// answered separately under `/v1/jobs/{id}/schedules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<ScheduleSpec>>,
    /// Jobs whose successful run for a scheduled time this job's run for the
    /// same time waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
}

/// One job this job runs after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub id: String,
}

/// How each run of a job is run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunSpec {
    /// A shell command (`/bin/sh -c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// An argv instead of `cmd` (with `docker`: arguments to the image's
    /// entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSpec>,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default = "default_disk")]
    pub disk: f64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub placement: Placement,
    /// Seconds a run may wait for a launch before it fails.
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay: u64,
    #[serde(default)]
    pub restart: Restart,
    /// The user the task runs as on the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SIGTERM to SIGKILL when a run's task is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    /// Accepted for Metronome compatibility only when empty: agents fetch
    /// no URIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
}

fn default_cpus() -> f64 {
    DEFAULT_CPUS
}
fn default_mem() -> f64 {
    DEFAULT_MEM
}
fn default_disk() -> f64 {
    DEFAULT_DISK
}
fn default_max_launch_delay() -> u64 {
    DEFAULT_MAX_LAUNCH_DELAY
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerSpec {
    pub image: String,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<DockerParameter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSpec {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default)]
    pub mode: VolumeMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum VolumeMode {
    #[default]
    RW,
    RO,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<ConstraintSpec>,
}

/// Metronome's placement constraint: `attribute` is `hostname` or an agent
/// attribute's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConstraintSpec {
    pub attribute: String,
    pub operator: ConstraintOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Metronome's operators; `EQ` is `IS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConstraintOperator {
    IS,
    EQ,
    LIKE,
    UNLIKE,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restart {
    #[serde(default)]
    pub policy: RestartPolicy,
    /// Seconds a run may take from its first launch, retries included;
    /// past it the run's task is killed and the run fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
}

/// When a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    pub id: String,
    /// Five fields, or six with seconds first.
    pub cron: String,
    /// An IANA time zone (`timeZone` is read too, as Metronome's schema
    /// spells it).
    #[serde(default = "default_timezone", alias = "timeZone")]
    pub timezone: String,
    /// How late a scheduled run may still start; later it is recorded as
    /// missed.
    #[serde(default = "default_starting_deadline")]
    pub starting_deadline_seconds: u64,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_string()
}
fn default_starting_deadline() -> u64 {
    DEFAULT_STARTING_DEADLINE
}
fn default_enabled() -> bool {
    true
}

/// What a schedule does when a run of the job is still active at a new
/// scheduled time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyPolicy {
    /// Start the new run beside it.
    #[default]
    Allow,
    /// Skip the new run, recording why.
    Forbid,
    /// Stop the active runs, then start the new one.
    Replace,
}

/// One problem with a request, at a JSON path (`/run/mem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub path: String,
    pub errors: Vec<String>,
}

/// Collects problems, one entry per path.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, error: impl Into<String>) {
        let path = path.into();
        let error = error.into();
        match self.0.iter_mut().find(|p| p.path == path) {
            Some(p) => p.errors.push(error),
            None => self.0.push(FieldError {
                path,
                errors: vec![error],
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Whether `name` is a lowercase name: letters, digits and inner dashes.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a job id: dot-separated names (`prod.reports.nightly`).
pub fn check_job_id(id: &str) -> Result<(), String> {
    if id.len() > 200 {
        return Err("must be at most 200 characters long".into());
    }
    if id.split('.').all(is_name) {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a job id: write dot-separated names of lowercase letters, digits and dashes (not at a name's start or end), e.g. `prod.reports.nightly`"
        ))
    }
}

/// Checks a schedule id: one name.
pub fn check_schedule_id(id: &str) -> Result<(), String> {
    if id.len() <= 100 && is_name(id) {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a schedule id: write lowercase letters, digits and dashes (not at the start or end), e.g. `nightly`"
        ))
    }
}

fn check_finite_min(problems: &mut Problems, path: &str, value: f64, min: f64) {
    if !value.is_finite() {
        problems.add(path, "must be a finite number");
    } else if value < min {
        problems.add(path, format!("is less than {min}"));
    }
}

impl JobSpec {
    /// Every problem with the job's values (ids, resources, command,
    /// schedules); dependencies on other jobs are checked against the other
    /// jobs by [`crate::graph`].
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut p = Problems::default();
        if let Err(e) = check_job_id(&self.id) {
            p.add("/id", e);
        }
        self.run.check(&mut p);
        for (i, dep) in self.dependencies.iter().enumerate() {
            if let Err(e) = check_job_id(&dep.id) {
                p.add(format!("/dependencies/{i}/id"), e);
            } else if dep.id == self.id {
                p.add(
                    format!("/dependencies/{i}/id"),
                    "a job cannot depend on itself",
                );
            }
            if self.dependencies[..i].iter().any(|d| d.id == dep.id) {
                p.add(
                    format!("/dependencies/{i}/id"),
                    format!("`{}` is listed twice", dep.id),
                );
            }
        }
        if let Some(schedules) = &self.schedules {
            if !schedules.is_empty() && !self.dependencies.is_empty() {
                p.add(
                    "/schedules",
                    "a job with dependencies runs after them, for their scheduled times: give the schedule to the jobs it depends on",
                );
            }
            for (i, s) in schedules.iter().enumerate() {
                s.check(&mut p, &format!("/schedules/{i}"));
                if schedules[..i].iter().any(|o| o.id == s.id) {
                    p.add(
                        format!("/schedules/{i}/id"),
                        format!("schedule `{}` is listed twice", s.id),
                    );
                }
            }
        }
        p.into_result()
    }
}

impl RunSpec {
    fn check(&self, p: &mut Problems) {
        match (&self.cmd, &self.args) {
            (Some(_), Some(_)) => p.add("/run", "give either `cmd` or `args`, not both"),
            (None, None) if self.docker.is_none() => p.add(
                "/run",
                "give `cmd` (a shell command) or `args` (an argv), or a `docker` image to run its own command",
            ),
            (Some(cmd), None) if cmd.trim().is_empty() => p.add("/run/cmd", "must not be empty"),
            (None, Some(args)) if args.is_empty() && self.docker.is_none() => {
                p.add("/run/args", "must not be empty")
            }
            _ => {}
        }
        check_finite_min(p, "/run/cpus", self.cpus, MIN_CPUS);
        check_finite_min(p, "/run/mem", self.mem, MIN_MEM);
        check_finite_min(p, "/run/disk", self.disk, 0.0);
        if self.max_launch_delay == 0 {
            p.add("/run/maxLaunchDelay", "is less than 1");
        }
        if let Some(d) = &self.docker
            && d.image.trim().is_empty()
        {
            p.add("/run/docker/image", "must not be empty");
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                p.add(
                    format!("/run/env/{name}"),
                    "is not an environment variable name",
                );
            }
        }
        for (i, c) in self.placement.constraints.iter().enumerate() {
            if c.attribute.trim().is_empty() {
                p.add(
                    format!("/run/placement/constraints/{i}/attribute"),
                    "must not be empty",
                );
            }
        }
        if let Err((i, e)) = crate::launch::constraints(self) {
            p.add(format!("/run/placement/constraints/{i}"), e);
        }
        if let Some(d) = self.restart.active_deadline_seconds
            && d == 0
        {
            p.add("/run/restart/activeDeadlineSeconds", "is less than 1");
        }
        if let Some(g) = self.task_kill_grace_period_seconds
            && !(g.is_finite() && g >= 0.0)
        {
            p.add(
                "/run/taskKillGracePeriodSeconds",
                "must be a finite number of seconds, at least 0",
            );
        }
        if !self.artifacts.is_empty() {
            p.add(
                "/run/artifacts",
                "is not supported: agents fetch no URIs; put what the job needs into its image or command",
            );
        }
        for (i, v) in self.volumes.iter().enumerate() {
            if v.container_path.trim().is_empty() {
                p.add(
                    format!("/run/volumes/{i}/containerPath"),
                    "must not be empty",
                );
            }
            if self.docker.is_none() {
                p.add(
                    format!("/run/volumes/{i}"),
                    "volumes need a `docker` image (plain commands run in their sandbox)",
                );
            }
        }
    }
}

impl ScheduleSpec {
    /// Every problem with the schedule's values.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut p = Problems::default();
        self.check(&mut p, "");
        p.into_result()
    }

    fn check(&self, p: &mut Problems, at: &str) {
        if let Err(e) = check_schedule_id(&self.id) {
            p.add(format!("{at}/id"), e);
        }
        if let Err(e) = CronSchedule::parse(&self.cron, &self.timezone) {
            let field = match e {
                crate::cron::CronError::TimeZone { .. } => "timezone",
                _ => "cron",
            };
            p.add(format!("{at}/{field}"), e.to_string());
        }
        if self.starting_deadline_seconds == 0 {
            p.add(format!("{at}/startingDeadlineSeconds"), "is less than 1");
        }
    }

    /// The parsed expression (call after [`ScheduleSpec::validate`]).
    pub fn cron_schedule(&self) -> Result<CronSchedule, crate::cron::CronError> {
        CronSchedule::parse(&self.cron, &self.timezone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(json: &str) -> JobSpec {
        serde_json::from_str(json).unwrap()
    }

    fn paths(r: Result<(), Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn metronome_job_with_defaults() {
        let j = job(r#"{"id": "prod.reports.nightly", "run": {"cmd": "echo hi"}}"#);
        assert_eq!(j.run.cpus, DEFAULT_CPUS);
        assert_eq!(j.run.mem, DEFAULT_MEM);
        assert_eq!(j.run.max_launch_delay, 3600);
        assert_eq!(j.run.restart.policy, RestartPolicy::Never);
        j.validate().unwrap();
        // Serialized back in the same shape.
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["run"]["maxLaunchDelay"], 3600);
        assert_eq!(v["run"]["restart"]["policy"], "NEVER");
    }

    #[test]
    fn the_metronome_example_parses() {
        let j = job(r#"{
          "description": "Example Application", "id": "prod.example.app",
          "labels": {"location": "olympus", "owner": "zeus"},
          "run": {
            "artifacts": [], "cmd": "nuke --dry --master local",
            "cpus": 1.5, "mem": 32, "disk": 128,
            "docker": {"image": "foo/bla:test"},
            "env": {"MON": "test", "CONNECT": "direct"},
            "maxLaunchDelay": 3600,
            "placement": {"constraints": [{"attribute": "rack", "operator": "EQ", "value": "rack-2"}]},
            "restart": {"activeDeadlineSeconds": 120, "policy": "NEVER"},
            "user": "root",
            "volumes": [{"containerPath": "/mnt/test", "hostPath": "/etc/guest", "mode": "RW"}]
          }
        }"#);
        j.validate().unwrap();
        assert_eq!(j.run.restart.active_deadline_seconds, Some(120));
        assert_eq!(
            j.run.placement.constraints[0].operator,
            ConstraintOperator::EQ
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<JobSpec>(r#"{"id": "a", "run": {"cmd": "x", "cpu": 1}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `cpu`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let j = job(
            r#"{"id": "Bad_Id", "run": {"cmd": "x", "args": ["y"], "cpus": 0, "mem": 8,
                "disk": -1, "maxLaunchDelay": 0,
                "placement": {"constraints": [{"attribute": "rack", "operator": "IS"}]},
                "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 0},
                "artifacts": [{"uri": "http://x"}]},
              "schedules": [{"id": "-x", "cron": "* * *", "timezone": "Nowhere/City",
                             "startingDeadlineSeconds": 0}]}"#,
        );
        assert_eq!(
            paths(j.validate()),
            [
                "/id",
                "/run",
                "/run/cpus",
                "/run/mem",
                "/run/disk",
                "/run/maxLaunchDelay",
                "/run/placement/constraints/0",
                "/run/restart/activeDeadlineSeconds",
                "/run/artifacts",
                "/schedules/0/id",
                "/schedules/0/timezone",
                "/schedules/0/startingDeadlineSeconds",
            ]
        );
    }

    #[test]
    fn a_command_is_needed_unless_an_image_has_one() {
        assert_eq!(paths(job(r#"{"id": "a", "run": {}}"#).validate()), ["/run"]);
        job(r#"{"id": "a", "run": {"docker": {"image": "busybox"}}}"#)
            .validate()
            .unwrap();
        assert_eq!(
            paths(job(r#"{"id": "a", "run": {"cmd": "  "}}"#).validate()),
            ["/run/cmd"]
        );
    }

    #[test]
    fn job_ids() {
        for ok in ["a", "a1", "prod.reports.nightly", "a-b.c-d", "0"] {
            check_job_id(ok).unwrap();
        }
        for bad in [
            "", "A", "a_b", "-a", "a-", "a..b", ".a", "a.", "a--b", "a b", "ä",
        ] {
            assert!(check_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dependencies_are_checked_for_shape_and_clash_with_schedules() {
        let j = job(
            r#"{"id": "b", "run": {"cmd": "x"}, "dependencies": [{"id": "b"}, {"id": "a"}, {"id": "a"}],
               "schedules": [{"id": "s", "cron": "* * * * *"}]}"#,
        );
        assert_eq!(
            paths(j.validate()),
            ["/dependencies/0/id", "/dependencies/2/id", "/schedules"]
        );
    }

    #[test]
    fn schedules_default_and_accept_either_time_zone_spelling() {
        let s: ScheduleSpec =
            serde_json::from_str(r#"{"id": "every-minute", "cron": "* * * * *"}"#).unwrap();
        assert_eq!(s.timezone, "UTC");
        assert_eq!(s.starting_deadline_seconds, DEFAULT_STARTING_DEADLINE);
        assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Allow);
        assert!(s.enabled);
        let s: ScheduleSpec = serde_json::from_str(
            r#"{"id": "x1", "cron": "0 2 * * *", "timeZone": "Europe/Berlin", "concurrencyPolicy": "FORBID"}"#,
        )
        .unwrap();
        assert_eq!(s.timezone, "Europe/Berlin");
        assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Forbid);
        s.validate().unwrap();
        assert!(
            serde_json::from_str::<ScheduleSpec>(
                r#"{"id": "x", "cron": "* * * * *", "concurrencyPolicy": "SOMETIMES"}"#
            )
            .is_err()
        );
    }
}
