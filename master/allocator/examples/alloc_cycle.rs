//! Times one `allocate()` cycle on a large synthetic cluster, to check the
//! allocator's design against its targets (release build: 10,000 agents x
//! 1,000 frameworks within 2 ms, 50,000 x 2,000 within 15 ms, 100,000 x
//! 5,000 within 60 ms).
//!
//! Every agent is fully available (`cpus:32;mem:131072;disk:1000000;
//! ports:[31000-32000]`), each framework is alone in its own role, and about
//! 10% of (framework, agent) pairs carry a refuse filter covering the whole
//! agent. Each round allocates everything, then recovers it all (untimed, but
//! reported) so the next round starts from the same state. The figures are
//! wall-clock: on a shared machine, where other processes take the cores and
//! the cache, read the minimum.
//!
//! ```text
//! cargo run --release -p agora-allocator --example alloc_cycle               # 10k x 1k, then 50k x 2k
//! cargo run --release -p agora-allocator --example alloc_cycle -- 100000 5000 [ROUNDS]
//! ```
//!
//! `ALLOC_CYCLE_FILTERED=N` sets the filtered percentage, `ALLOC_CYCLE_ROLES=N`
//! spreads the frameworks over N roles instead of one role each, and
//! `ALLOC_CYCLE_VERBOSE=1` prints every round.

use std::time::{Duration, Instant};

use agora_allocator::{Allocation, Allocator, AllocatorConfig};
use agora_proto::Resources;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| match a.parse() {
            Ok(n) => n,
            Err(_) => usage(),
        })
        .collect();
    match args.as_slice() {
        [] => {
            run(10_000, 1_000, 21);
            run(50_000, 2_000, 9);
        }
        [agents, frameworks] => run(*agents, *frameworks, 7),
        [agents, frameworks, rounds] if *rounds > 0 => run(*agents, *frameworks, *rounds),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: alloc_cycle [AGENTS FRAMEWORKS [ROUNDS]]");
    std::process::exit(64);
}

/// A deterministic "is this pair filtered" coin with `percent`% heads.
fn filtered(agent: usize, framework: usize, percent: u64) -> bool {
    let mut x = ((agent as u64) << 32) | framework as u64;
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (x ^ (x >> 33)) % 100 < percent
}

/// Times `f` by the wall clock.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn run(agents: usize, frameworks: usize, rounds: usize) {
    let total = Resources::parse("cpus:32;mem:131072;disk:1000000;ports:[31000-32000]").unwrap();
    let percent = std::env::var("ALLOC_CYCLE_FILTERED")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(10);
    let now = Instant::now();
    let setup = Instant::now();
    let mut alloc = Allocator::new(AllocatorConfig::default());
    let agent_ids: Vec<String> = (0..agents).map(|i| format!("agent-{i:06}")).collect();
    let fw_ids: Vec<String> = (0..frameworks)
        .map(|i| format!("framework-{i:05}"))
        .collect();
    let role_count = std::env::var("ALLOC_CYCLE_ROLES")
        .ok()
        .and_then(|p| p.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(frameworks);
    let role_names: Vec<String> = (0..frameworks)
        .map(|i| format!("role-{:05}", i % role_count))
        .collect();
    for id in &agent_ids {
        alloc.add_agent(id, total.clone(), &[]);
    }
    for (id, role) in fw_ids.iter().zip(&role_names) {
        alloc.add_framework(id, std::slice::from_ref(role), true);
    }
    let refuse = Some(Duration::from_secs(3600));
    for (a, agent) in agent_ids.iter().enumerate() {
        for (f, fw) in fw_ids.iter().enumerate() {
            if filtered(a, f, percent) {
                alloc.recover(fw, &role_names[f], agent, &total, refuse, now);
            }
        }
    }
    println!(
        "{agents} agents x {frameworks} frameworks in {role_count} roles, {} filters: set up in {:.2?}",
        alloc.filter_count(),
        setup.elapsed()
    );

    let recover_all = |alloc: &mut Allocator, out: &[Allocation]| {
        for a in out {
            alloc.recover(
                &a.framework_id,
                &a.role,
                &a.agent_id,
                &a.resources,
                None,
                now,
            );
        }
    };
    let mut times = Vec::new();
    let mut into_times = Vec::new();
    let mut recover_times = Vec::new();
    let mut buffer = Vec::new();
    for _ in 0..rounds {
        let (out, wall) = timed(|| alloc.allocate(now));
        times.push(wall);
        assert_eq!(out.len(), agents, "every agent is offered once");
        let t = Instant::now();
        recover_all(&mut alloc, &out);
        recover_times.push(t.elapsed());
        drop(out);

        buffer.clear();
        let ((), wall) = timed(|| alloc.allocate_into(now, &mut buffer));
        into_times.push(wall);
        recover_all(&mut alloc, &buffer);
    }
    if std::env::var_os("ALLOC_CYCLE_VERBOSE").is_some() {
        println!("  allocate() each round: {times:.2?}");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let report = |what: &str, times: &mut Vec<Duration>| {
        if times.is_empty() {
            return;
        }
        times.sort();
        let n = times.len();
        println!(
            "  {what}: min {:.2} ms, median {:.2} ms, max {:.2} ms over {n} rounds ({:.0} ns per agent at the median)",
            ms(times[0]),
            ms(times[n / 2]),
            ms(times[n - 1]),
            times[n / 2].as_nanos() as f64 / agents as f64,
        );
    };
    report("allocate(), wall clock", &mut times);
    report("allocate_into(kept buffer), wall clock", &mut into_times);
    recover_times.sort();
    println!(
        "  recover() of every offer: median {:.2} ms ({:.0} ns each)",
        ms(recover_times[rounds / 2]),
        recover_times[rounds / 2].as_nanos() as f64 / agents as f64
    );
}
