//! The layout of the agent's work directory, and the rule that keeps ids from
//! escaping it.
//!
//! ```text
//! <work_dir>/
//!   agent.lock                                 held (flock) while an agent uses the dir
//!   meta/agent.json                            {"agent_id": ...}
//!   meta/frameworks/<fid>/framework.pb         FrameworkInfo (protobuf)
//!   meta/frameworks/<fid>/tasks/<tid>/task.pb  LaunchTask: framework id, TaskInfo, role
//!   meta/frameworks/<fid>/tasks/<tid>/container.json  container id, containerizer, launch facts, kill request
//!   meta/frameworks/<fid>/tasks/<tid>/updates.json    the task's status-update stream (sent / acknowledged)
//!   meta/frameworks/<fid>/tasks/<tid>/health.json     when it started to run, which health checks passed
//!   containers/<container_id>/                 the process containerizer's run dir:
//!       spec.json supervisor.json status.json supervisor.log
//!   sandboxes/<fid>/<tid>/<container_id>/      the task's working directory: stdout, stderr, its files
//! ```

use std::path::{Path, PathBuf};

use crate::error::AgentError;

/// Checks that `id` is safe as one path component: 1..=255 characters of
/// `[A-Za-z0-9._-]`, and not `.` or `..`. The master enforces the same rule;
/// the agent checks again because a path built from a bad id could point
/// anywhere.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AgentError::InvalidId {
            what,
            id: id.to_string(),
        })
    }
}

/// The paths of one work directory. Callers validate ids with
/// [`validate_id`] before building paths from them.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("agent.lock")
    }

    pub fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }

    pub fn agent_file(&self) -> PathBuf {
        self.meta_dir().join("agent.json")
    }

    pub fn frameworks_dir(&self) -> PathBuf {
        self.meta_dir().join("frameworks")
    }

    pub fn framework_dir(&self, framework_id: &str) -> PathBuf {
        self.frameworks_dir().join(framework_id)
    }

    pub fn framework_file(&self, framework_id: &str) -> PathBuf {
        self.framework_dir(framework_id).join("framework.pb")
    }

    pub fn tasks_dir(&self, framework_id: &str) -> PathBuf {
        self.framework_dir(framework_id).join("tasks")
    }

    pub fn task_dir(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.tasks_dir(framework_id).join(task_id)
    }

    pub fn task_file(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.task_dir(framework_id, task_id).join("task.pb")
    }

    pub fn container_file(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.task_dir(framework_id, task_id).join("container.json")
    }

    pub fn updates_file(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.task_dir(framework_id, task_id).join("updates.json")
    }

    pub fn health_file(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.task_dir(framework_id, task_id).join("health.json")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    pub fn sandbox_dir(&self, framework_id: &str, task_id: &str, container_id: &str) -> PathBuf {
        self.sandboxes_dir()
            .join(framework_id)
            .join(task_id)
            .join(container_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_ids_the_master_makes() {
        for id in [
            "a",
            "web.1",
            "2f0c-S1",
            "my_task-3.x",
            "..a",
            "a..",
            &"x".repeat(255),
        ] {
            validate_id("task id", id).unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }

    #[test]
    fn refuses_ids_that_could_escape_the_work_dir() {
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "/abs",
            "a\\b",
            "a b",
            "nul\0",
            "é",
            "x\n",
            &"x".repeat(256),
        ] {
            let err = validate_id("task id", id).unwrap_err().to_string();
            assert!(err.contains("invalid task id"), "{id:?}: {err}");
        }
    }

    #[test]
    fn layout_keeps_everything_under_the_root() {
        let l = Layout::new("/w");
        assert_eq!(
            l.updates_file("f1", "t1"),
            PathBuf::from("/w/meta/frameworks/f1/tasks/t1/updates.json")
        );
        assert_eq!(
            l.sandbox_dir("f1", "t1", "c1"),
            PathBuf::from("/w/sandboxes/f1/t1/c1")
        );
        assert_eq!(l.agent_file(), PathBuf::from("/w/meta/agent.json"));
    }
}
