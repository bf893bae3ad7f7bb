//! Rebuilds the master when a file of the web UI (`ui/`, embedded with
//! rust-embed) is added, changed or removed.

fn main() {
    println!("cargo:rerun-if-changed=../ui");
}
