//! The task supervisor as a standalone program (used by this crate's tests;
//! the `agora` binary runs the same code as `agora task-supervisor`).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(agora_agent::supervisor::main(args));
}
