//! Limits of process tasks, and the agent's own bookkeeping of what it runs.
//!
//! * Room: the agent refuses a launch that does not fit in what its tasks
//!   leave free of its resources ([`check_room`]).
//! * Memory: the task supervisor watches the resident memory of the task's
//!   processes (its process group, followed through `/proc`) and kills them
//!   all with SIGKILL once they use more than the task's `mem`; the task is
//!   reported as a Docker task killed by the kernel's OOM killer is
//!   (`TASK_FAILED`, `REASON_CONTAINER_LIMITATION_MEMORY`).
//! * CPU: not limited for process tasks (that needs cgroups v2, which the
//!   agent does not use yet).
//! * User: a task whose command names a `user` runs as that user when the
//!   agent runs as root.

use std::collections::BTreeSet;

use agora_proto::Resources;

/// How often the supervisor looks at a task's memory.
pub const MEMORY_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The memory limit of a task (its `mem`, in MB), in bytes.
pub fn memory_limit_bytes(resources: &Resources) -> Option<u64> {
    let mb = resources.mem().as_f64();
    (mb.is_finite() && mb > 0.0).then_some((mb * 1024.0 * 1024.0) as u64)
}

/// Whether `task` fits in what `running` leaves of `total` (reservations
/// aside); the error says what is missing.
pub fn check_room(
    total: &Resources,
    running: &[Resources],
    task: &Resources,
) -> Result<(), String> {
    let mut free = total.flatten();
    for r in running {
        free.subtract(&r.flatten());
    }
    let wanted = task.flatten();
    if free.contains(&wanted) {
        Ok(())
    } else {
        let free_text = if free.is_empty() {
            "nothing".to_string()
        } else {
            free.to_string()
        };
        Err(format!(
            "the task asks for {wanted}, but {free_text} of the agent's {} is free",
            total.flatten()
        ))
    }
}

/// What the agent says at start about how it limits process tasks.
pub fn describe() -> String {
    let cgroup2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let why = if cgroup2 {
        "cgroups v2 is mounted, but the agent does not use it yet"
    } else {
        "no cgroups v2 here"
    };
    format!(
        "process tasks: memory limited by the task supervisor's watch of their resident \
         memory (SIGKILL above their `mem`), cpu not limited ({why}); tasks run as their \
         `user` when the agent runs as root"
    )
}

/// The pids of `root` and all its descendants (through
/// `/proc/<pid>/task/<tid>/children`; when the kernel has no such files, every
/// process of `root`'s process group instead).
pub fn descendants(root: i32) -> Vec<i32> {
    let children_file = format!("/proc/{root}/task/{root}/children");
    if !std::path::Path::new(&children_file).exists() {
        return group_members(root);
    }
    let mut seen: BTreeSet<i32> = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) || seen.len() > 100_000 {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            if let Ok(text) = std::fs::read_to_string(path) {
                todo.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    seen.into_iter().collect()
}

/// Every process whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| crate::procfs::read_stat(pid).is_some_and(|s| s.pgrp == pgid))
        .collect()
}

/// The resident memory of `root` and its descendants, in bytes.
pub fn resident_bytes(root: i32) -> u64 {
    descendants(root)
        .into_iter()
        .filter_map(crate::procfs::read_stat)
        .filter(|s| !s.has_ended())
        .map(|s| s.rss_pages * page_size())
        .sum()
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> Resources {
        Resources::parse(text).unwrap()
    }

    #[test]
    fn a_task_fits_only_in_what_is_free() {
        let total = r("cpus:2;mem:1024;ports:[31000-31010]");
        let running = [
            r("cpus:1;mem:512"),
            r("cpus:0.5;mem:256;ports:[31000-31000]"),
        ];
        check_room(&total, &running, &r("cpus:0.5;mem:256")).unwrap();
        check_room(&total, &running, &r("cpus:0.5;ports:[31001-31001]")).unwrap();
        let err = check_room(&total, &running, &r("cpus:0.6;mem:1")).unwrap_err();
        assert!(err.contains("asks for cpus:0.6;mem:1"), "{err}");
        assert!(
            err.contains("but cpus:0.5;mem:256;ports:[31001-31010] of the agent's"),
            "{err}"
        );
        let err = check_room(&total, &running, &r("ports:[31000-31000]")).unwrap_err();
        assert!(err.contains("ports"), "{err}");
        // Reserved resources count as the agent's, whatever their role.
        let reserved = Resources::parse("cpus(web):0.5").unwrap();
        check_room(&total, &running, &reserved).unwrap();
        let full = [r("cpus:2;mem:1024;ports:[31000-31010]")];
        let err = check_room(&total, &full, &r("cpus:0.1")).unwrap_err();
        assert!(err.contains("but nothing of the agent's"), "{err}");
    }

    #[test]
    fn memory_limits_come_from_mem() {
        assert_eq!(memory_limit_bytes(&r("cpus:1;mem:32")), Some(32 << 20));
        assert_eq!(memory_limit_bytes(&r("cpus:1")), None);
    }

    #[test]
    fn this_process_and_its_children_use_memory() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = descendants(me);
        assert!(
            kids.contains(&me) && kids.contains(&(child.id() as i32)),
            "{kids:?}"
        );
        assert!(resident_bytes(me) > 1 << 20);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
