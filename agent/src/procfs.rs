//! What `/proc/<pid>/stat` says about a process: whether it still lives, and
//! when it started (so a reused pid is not mistaken for the process the agent
//! started); and which boot of the machine this is (start times count from
//! the boot, so they name a process only within one boot).

use serde::{Deserialize, Serialize};

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time after boot, in clock ticks: with the pid, it names one
    /// process for the life of the machine.
    pub start_time: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// A zombie or dead process has ended, even though its pid still shows.
    pub fn has_ended(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// A process named by pid, start time and boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when the process was seen (absent
    /// in records written before the agent recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), read once.
pub fn boot_id() -> Option<String> {
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .clone()
}

impl ProcessIdentity {
    /// The identity of a running process, read from `/proc`.
    pub fn of(pid: i32) -> Option<ProcessIdentity> {
        read_stat(pid).map(|s| ProcessIdentity {
            pid,
            start_time: s.start_time,
            boot_id: boot_id(),
        })
    }

    /// Whether the record is of this boot (a record without a boot id is
    /// taken to be).
    pub fn this_boot(&self, current: Option<&str>) -> bool {
        match (&self.boot_id, current) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        }
    }

    /// Whether this very process still runs: same boot, the pid exists,
    /// has the same start time, and is not a zombie.
    pub fn is_alive(&self) -> bool {
        self.this_boot(boot_id().as_deref())
            && read_stat(self.pid)
                .is_some_and(|s| s.start_time == self.start_time && !s.has_ended())
    }
}

/// Whether the agent may signal the process group of a task it recorded
/// as `task`: only when that group is provably the task's.
///
/// * another boot: never (pids and start times start over);
/// * the leader (pid = pgid) runs with the recorded start time: yes;
/// * a process with that pid runs with another start time: no, the pid was
///   reused;
/// * no process has that pid but the group still has members: yes, they
///   are what the task left (Linux does not give a pid that is still some
///   group's id to a new process, so the group cannot be another's);
/// * nothing there: nothing to signal.
pub fn may_signal_group(
    task: &ProcessIdentity,
    current_boot: Option<&str>,
    leader: Option<&ProcStat>,
    group_has_members: bool,
) -> bool {
    if !task.this_boot(current_boot) || task.pid <= 1 {
        return false;
    }
    match leader {
        Some(s) => s.start_time == task.start_time && !s.has_ended(),
        None => group_has_members,
    }
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        utime: num(14)?,
        stime: num(15)?,
        start_time: num(22)?,
        rss_pages: num(24)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    7 3 0 0 20 0 1 0 987654 1000000 250 18446744073709551615";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgrp), (1, 1234));
        assert_eq!((s.utime, s.stime), (7, 3));
        assert_eq!(s.start_time, 987654);
        assert_eq!(s.rss_pages, 250);
        assert!(!s.has_ended());
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) Z 1").is_none());
    }

    #[test]
    fn knows_this_process_and_refuses_a_wrong_start_time() {
        let me = ProcessIdentity::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let other = ProcessIdentity {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!other.is_alive());
        let other_boot = ProcessIdentity {
            boot_id: Some("another-boot".into()),
            ..me.clone()
        };
        assert!(
            !other_boot.is_alive(),
            "a record of another boot is not this process"
        );
        let unknown_boot = ProcessIdentity {
            boot_id: None,
            ..me.clone()
        };
        assert!(unknown_boot.is_alive(), "an old record without a boot id");
        assert_eq!(me.boot_id, boot_id());
        assert!(read_stat(-1).is_none());
    }

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_has_ended() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        let id = ProcessIdentity::of(pid);
        // Not yet reaped: once it has exited, it shows as a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match read_stat(pid) {
                Some(s) if s.has_ended() => break,
                _ if std::time::Instant::now() > deadline => panic!("child never became a zombie"),
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        if let Some(id) = &id {
            assert!(!id.is_alive(), "a zombie counts as dead");
        }
        child.wait().unwrap();
        assert!(
            read_stat(pid).is_none_or(|s| s.start_time != id.as_ref().map_or(0, |i| i.start_time))
        );
    }

    fn stat(start_time: u64, state: char) -> ProcStat {
        ProcStat {
            state,
            ppid: 1,
            pgrp: 500,
            utime: 0,
            stime: 0,
            start_time,
            rss_pages: 0,
        }
    }

    #[test]
    fn only_a_provably_own_group_is_signalled() {
        let task = ProcessIdentity {
            pid: 500,
            start_time: 1000,
            boot_id: Some("b1".into()),
        };
        let boot = Some("b1");
        // The task itself.
        assert!(may_signal_group(&task, boot, Some(&stat(1000, 'S')), true));
        // Its pid reused by another process, with or without a group.
        assert!(!may_signal_group(&task, boot, Some(&stat(2000, 'S')), true));
        assert!(!may_signal_group(
            &task,
            boot,
            Some(&stat(2000, 'S')),
            false
        ));
        // The leader is gone, what it left in its group is the task's.
        assert!(may_signal_group(&task, boot, None, true));
        assert!(!may_signal_group(&task, boot, None, false));
        // The leader is a zombie: nothing of it runs.
        assert!(!may_signal_group(&task, boot, Some(&stat(1000, 'Z')), true));
        // Another boot: never, whatever runs with these numbers now.
        assert!(!may_signal_group(
            &task,
            Some("b2"),
            Some(&stat(1000, 'S')),
            true
        ));
        assert!(!may_signal_group(&task, Some("b2"), None, true));
        // Never pid 1 or below.
        let init = ProcessIdentity {
            pid: 1,
            ..task.clone()
        };
        assert!(!may_signal_group(&init, boot, None, true));
    }
}
