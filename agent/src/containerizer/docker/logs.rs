//! A Docker task's stdout and stderr, copied from the daemon into the files
//! `stdout` and `stderr` of its sandbox, where the agent's
//! `/tasks/{id}/logs` reads them (as for process tasks), and where they stay
//! after the container is removed.
//!
//! The copy follows the container's log with timestamps. It remembers (in
//! `<state dir>/logs.json`) the timestamp of the last line it wrote and the
//! files' lengths then, so a copy that starts again after an agent restart
//! cuts the files back to that point and asks the daemon only for what came
//! after: nothing is lost or written twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::write_atomic;
use crate::error::AgentError;

const POSITION_FILE: &str = "logs.json";

/// How often the position is saved while lines arrive.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A log line's time: seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// Reads Docker's RFC 3339 UTC timestamps (`2026-11-21T21:56:22.968262524Z`).
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let m: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(year, month, day);
    Some(Timestamp {
        secs: days * 86_400 + h * 3600 + m * 60 + sec,
        nanos,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits `<timestamp> <payload>` as the daemon sends each log message.
fn split_line(message: &[u8]) -> (Option<Timestamp>, &[u8]) {
    let head = &message[..message.len().min(40)];
    match head.iter().position(|&b| b == b' ') {
        Some(i) => match std::str::from_utf8(&message[..i])
            .ok()
            .and_then(parse_timestamp)
        {
            Some(ts) => (Some(ts), &message[i + 1..]),
            None => (None, message),
        },
        None => (None, message),
    }
}

/// How far the copy got.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Position {
    /// The time of the last line written.
    last: Option<Timestamp>,
    /// The files' lengths right after it was written.
    stdout: u64,
    stderr: u64,
}

/// Copies one container's logs into its sandbox.
pub struct LogCopy {
    pub docker: Docker,
    /// The container's name.
    pub name: String,
    pub sandbox: PathBuf,
    /// Where the position is kept.
    pub state_dir: PathBuf,
}

impl LogCopy {
    /// Copies what the container has written so far and, with `follow`,
    /// what it writes until it ends. Returns when the container's log ends
    /// (it stopped), or at `cancel`.
    pub async fn run(&self, follow: bool, cancel: &CancellationToken) -> Result<(), AgentError> {
        // The copy is the only writer of these files: whatever they hold
        // past the saved position (all of it, when none was saved yet) is
        // copied again.
        let mut pos = self.read_position();
        let mut stdout = open_at(&self.sandbox.join("stdout"), pos.stdout).await?;
        let mut stderr = open_at(&self.sandbox.join("stderr"), pos.stderr).await?;
        let mut attempts = 0u32;
        loop {
            let since = pos
                .last
                .map_or(0, |t| t.secs.clamp(0, i64::from(i32::MAX)) as i32);
            let mut stream = self.docker.logs(
                &self.name,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    timestamps: true,
                    since,
                    ..Default::default()
                }),
            );
            let mut saved = pos.clone();
            let mut last_save = Instant::now();
            let outcome: Result<bool, bollard::errors::Error> = loop {
                let dirty = saved != pos;
                tokio::select! {
                    _ = cancel.cancelled() => break Ok(true),
                    _ = tokio::time::sleep_until(last_save + SAVE_EVERY), if dirty => {
                        self.save_position(&pos);
                        saved = pos.clone();
                        last_save = Instant::now();
                    }
                    item = stream.next() => match item {
                        None => break Ok(true),
                        Some(Err(e)) => break Err(e),
                        Some(Ok(output)) => {
                            let (to_stderr, message) = match &output {
                                LogOutput::StdErr { message } => (true, message),
                                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                                    (false, message)
                                }
                                LogOutput::StdIn { .. } => continue,
                            };
                            let (ts, payload) = split_line(message);
                            if let (Some(ts), Some(last)) = (ts, pos.last)
                                && ts <= last
                            {
                                continue; // written before the copy restarted
                            }
                            let (file, len) = if to_stderr {
                                (&mut stderr, &mut pos.stderr)
                            } else {
                                (&mut stdout, &mut pos.stdout)
                            };
                            file.write_all(payload).await.map_err(|e| {
                                AgentError::io("cannot write the task's log", &self.sandbox, e)
                            })?;
                            *len += payload.len() as u64;
                            if ts.is_some() {
                                pos.last = ts;
                            }
                        }
                    }
                }
            };
            let _ = stdout.flush().await;
            let _ = stderr.flush().await;
            self.save_position(&pos);
            match outcome {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if !follow || attempts >= 100 => {
                    return Err(AgentError::Docker {
                        action: format!("reading the logs of {}", self.name),
                        source: e,
                    });
                }
                Err(e) => {
                    attempts += 1;
                    tracing::debug!(container = %self.name, error = %e, "the log stream broke; following it again");
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    fn read_position(&self) -> Position {
        std::fs::read(self.state_dir.join(POSITION_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_position(&self, pos: &Position) {
        let bytes = serde_json::to_vec(pos).unwrap_or_default();
        if let Err(e) = std::fs::create_dir_all(&self.state_dir)
            .and_then(|()| write_atomic(&self.state_dir.join(POSITION_FILE), &bytes))
        {
            tracing::warn!(container = %self.name, error = %e, "cannot save how far the task's logs were copied");
        }
    }
}

/// Opens a log file for appending, cut back to `len` (what was written up
/// to the saved position).
async fn open_at(path: &Path, len: u64) -> Result<tokio::fs::File, AgentError> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(|e| AgentError::io("cannot open the task's log", path, e))?;
    if file
        .metadata()
        .await
        .map(|m| m.len() > len)
        .unwrap_or(false)
    {
        file.set_len(len)
            .await
            .map_err(|e| AgentError::io("cannot cut back the task's log", path, e))?;
    }
    Ok(file)
}

pub(super) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_order() {
        let t = parse_timestamp("1970-01-01T00:00:01.5Z").unwrap();
        assert_eq!(
            t,
            Timestamp {
                secs: 1,
                nanos: 500_000_000
            }
        );
        let a = parse_timestamp("2026-11-21T21:56:22.968262524Z").unwrap();
        assert_eq!(a.secs, 1_795_298_182);
        assert_eq!(a.nanos, 968_262_524);
        let b = parse_timestamp("2026-11-21T21:56:23Z").unwrap();
        assert!(a < b);
        assert_eq!(
            parse_timestamp("2000-03-01T00:00:00Z").unwrap().secs,
            951_868_800
        );
        for bad in [
            "",
            "2026-11-21 21:56:22Z",
            "2026-13-01T00:00:00Z",
            "x",
            "2026-11-21T21:56:22+01:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_split_into_time_and_payload() {
        let (ts, payload) = split_line(b"2026-11-21T21:56:22.968262524Z hello world\n");
        assert_eq!(ts.unwrap().nanos, 968_262_524);
        assert_eq!(payload, b"hello world\n");
        let (ts, payload) = split_line(b"no time here\n");
        assert_eq!((ts, payload), (None, &b"no time here\n"[..]));
    }
}
