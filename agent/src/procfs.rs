//! What `/proc/<pid>/stat` says about a process: whether it still lives, and
//! when it started (so a reused pid is not mistaken for the process the agent
//! started).

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

/// A process named by pid and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessIdentity {
    /// The identity of a running process, read from `/proc`.
    pub fn of(pid: i32) -> Option<ProcessIdentity> {
        read_stat(pid).map(|s| ProcessIdentity {
            pid,
            start_time: s.start_time,
        })
    }

    /// Whether this very process still runs: the pid exists, has the same
    /// start time, and is not a zombie.
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start_time == self.start_time && !s.has_ended())
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
            ..me
        };
        assert!(!other.is_alive());
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
        if let Some(id) = id {
            assert!(!id.is_alive(), "a zombie counts as dead");
        }
        child.wait().unwrap();
        assert!(read_stat(pid).is_none_or(|s| s.start_time != id.map_or(0, |i| i.start_time)));
    }
}
