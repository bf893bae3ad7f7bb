//! `agora bench ...`: the benchmarks behind the figures in the README's
//! Performance section. Each prints its result as one JSON line on stdout
//! (progress goes to stderr), so runs can be compared and collected.
//!
//! Benchmarks never decide whether a test passes; they measure.

use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {}

/// Runs one benchmark and prints its JSON line.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {}
}

/// Prints a benchmark's result: one JSON line on stdout.
pub fn report(value: &serde_json::Value) {
    println!("{value}");
}
