//! The agent against a fake master: one test binary, modules by theme.

mod common;
mod t10_session;
mod t20_tasks;
mod t30_kill;
mod t40_status_updates;
mod t50_recovery;
mod t60_http;
mod t70_sigkill;
mod t80_health;
mod t90_faults;
