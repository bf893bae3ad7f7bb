//! `agora bench allocator`: times the master's allocation cycle on a large
//! cluster held in memory.
//!
//! The state is built through [`MasterCore`]'s public API, as the actor
//! would build it: `agent_register` for every agent (all fully available),
//! `framework_subscribe` for every framework (each in its own role), and a
//! refuse filter on about 10% of the (framework, agent) pairs, as earlier
//! declines leave them ([`MasterCore::install_refuse_filter`]: reaching that
//! state with one decline per filter would take `frameworks / 10` cycles of
//! offers). Which pairs are filtered is a deterministic hash coin, so runs
//! compare.
//!
//! A cycle is what the actor does when an allocation is due: `allocate` (the
//! allocator's decisions, the offer records, the offer messages in the
//! outbox) and `take_outbox`, after which the offers are ready to send.
//! Between cycles (untimed) every framework declines its offers without a
//! filter, so that the next cycle has the whole cluster to offer again.

use std::time::{Duration, Instant};

use agora_allocator::AllocatorConfig;
use agora_master::core::{CoreConfig, MasterCore, Now};
use agora_proto::Resources;
use agora_proto::v1::{self, call, event};
use serde_json::json;

use crate::BenchError;

/// `agora bench allocator`.
#[derive(Debug, Clone, clap::Args)]
pub struct AllocatorArgs {
    /// Agents in the cluster.
    #[arg(long, env = "AGORA_AGENTS", default_value = "10000", value_parser = crate::at_least_one)]
    pub agents: usize,
    /// Frameworks, each in its own role.
    #[arg(long, env = "AGORA_FRAMEWORKS", default_value = "1000", value_parser = crate::at_least_one)]
    pub frameworks: usize,
    /// Timed allocation cycles.
    #[arg(long, env = "AGORA_CYCLES", default_value = "20", value_parser = crate::at_least_one)]
    pub cycles: usize,
    /// Percentage of (framework, agent) pairs with a refuse filter.
    #[arg(long, env = "AGORA_FILTERED_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub filtered_percent: u8,
    /// Each agent's resources.
    #[arg(
        long,
        env = "AGORA_AGENT_RESOURCES",
        default_value = "cpus:32;mem:131072;disk:1000000;ports:[31000-32000]",
        value_parser = crate::resources
    )]
    pub agent_resources: Resources,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct AllocatorReport {
    pub agents: usize,
    pub frameworks: usize,
    /// Milliseconds per cycle (wall clock), in the order they ran.
    pub cycles_ms: Vec<f64>,
    /// Milliseconds the thread spent on a CPU per cycle (from
    /// `/proc/thread-self/schedstat`; empty where it cannot be read). On a
    /// busy machine this leaves out the time other processes took the core.
    pub cycles_cpu_ms: Vec<f64>,
    /// Offers made per cycle (the same every cycle).
    pub offers_per_cycle: usize,
    pub filters: usize,
    pub setup_s: f64,
}

impl AllocatorReport {
    /// The benchmark's JSON line.
    pub fn json(&self) -> serde_json::Value {
        let pick = |times: &[f64], q: f64| {
            let mut sorted = times.to_vec();
            sorted.sort_by(f64::total_cmp);
            if sorted.is_empty() {
                return serde_json::Value::Null;
            }
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            json!(round3(sorted[i]))
        };
        let wall = &self.cycles_ms;
        let cpu = &self.cycles_cpu_ms;
        json!({
            "agents": self.agents,
            "frameworks": self.frameworks,
            "cycle_ms_p50": pick(wall, 0.5),
            "cycle_ms_max": pick(wall, 1.0),
            "cycle_ms_min": pick(wall, 0.0),
            "cycle_cpu_ms_p50": pick(cpu, 0.5),
            "cycle_cpu_ms_max": pick(cpu, 1.0),
            "cycles": self.cycles_ms.len(),
            "offers_per_cycle": self.offers_per_cycle,
            "filters": self.filters,
            "setup_s": round3(self.setup_s),
        })
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A deterministic "is this pair filtered" coin with `percent`% heads (the
/// same coin as the allocator's own `alloc_cycle` example).
pub fn filtered(agent: usize, framework: usize, percent: u8) -> bool {
    let mut x = ((agent as u64) << 32) | framework as u64;
    x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (x ^ (x >> 33)) % 100 < u64::from(percent)
}

/// Connection ids: agents from 1, frameworks from here.
const FRAMEWORK_CONN_BASE: u64 = 1 << 40;

/// Builds the cluster, runs the cycles, returns what they took.
pub fn run(args: &AllocatorArgs) -> anyhow::Result<AllocatorReport> {
    let total = args.agent_resources.clone();
    if total.is_empty() || args.agents == 0 || args.frameworks == 0 || args.cycles == 0 {
        return Err(BenchError::Config(
            "--agents, --frameworks and --cycles must be at least 1, and the agents need resources"
                .into(),
        )
        .into());
    }

    let setup = Instant::now();
    let mut now = Now {
        instant: Instant::now(),
        unix: 1_700_000_000.0,
    };
    let info = v1::MasterInfo {
        id: "bench".into(),
        hostname: "bench".into(),
        ip: "127.0.0.1".into(),
        port: 5050,
        version: agora_proto::VERSION.into(),
    };
    let config = CoreConfig {
        // Nothing may expire while the cycles run.
        agent_timeout: Duration::from_secs(1_000_000),
        ..CoreConfig::default()
    };
    let mut core = MasterCore::new(info, config, AllocatorConfig::default(), now);
    let resources = total.to_proto();
    let mut agent_ids = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let conn = i as u64 + 1;
        core.agent_register(
            conn,
            v1::RegisterAgent {
                info: Some(v1::AgentInfo {
                    hostname: format!("host-{i:06}"),
                    resources: resources.clone(),
                    attributes: vec![v1::Attribute {
                        name: "rack".into(),
                        value: Some(v1::attribute::Value::Text(format!("r{}", i % 40))),
                    }],
                    http_address: format!("10.{}.{}.{}:5051", i >> 16, (i >> 8) & 255, i & 255),
                    ..Default::default()
                }),
                ..Default::default()
            },
            now,
        );
        let out = core.take_outbox();
        let id = out
            .agents
            .get(&conn)
            .and_then(|msgs| msgs.first())
            .and_then(|m| match &m.message {
                Some(v1::master_to_agent::Message::Registered(r)) => Some(r.agent_id.clone()),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("agent {i} was not registered"))?;
        agent_ids.push(id);
    }
    let mut framework_ids = Vec::with_capacity(args.frameworks);
    for f in 0..args.frameworks {
        let conn = FRAMEWORK_CONN_BASE + f as u64;
        core.framework_subscribe(
            conn,
            v1::Subscribe {
                framework_info: Some(v1::FrameworkInfo {
                    name: format!("bench-{f}"),
                    roles: vec![format!("role-{f:05}")],
                    failover_timeout: 1e6,
                    checkpoint: true,
                    ..Default::default()
                }),
            },
            now,
        );
        let out = core.take_outbox();
        let id = out
            .frameworks
            .get(&conn)
            .and_then(|events| events.first())
            .and_then(|e| match e.to_event().event {
                Some(event::Event::Subscribed(s)) => Some(s.framework_id),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("framework {f} was not subscribed"))?;
        framework_ids.push(id);
    }
    let refuse = Duration::from_secs(24 * 3600);
    let mut filters = 0;
    for (a, agent_id) in agent_ids.iter().enumerate() {
        for (f, framework_id) in framework_ids.iter().enumerate() {
            if filtered(a, f, args.filtered_percent) {
                core.install_refuse_filter(framework_id, agent_id, refuse, now);
                filters += 1;
            }
        }
    }
    let _ = core.take_outbox();
    let setup_s = setup.elapsed().as_secs_f64();
    tracing::info!(setup_s, filters, "cluster built");

    // One untimed cycle first: it pays for growing the tables once.
    let mut cycles_ms = Vec::with_capacity(args.cycles);
    let mut cycles_cpu_ms = Vec::with_capacity(args.cycles);
    let mut offers_per_cycle = 0;
    for cycle in 0..=args.cycles {
        now = now.after(Duration::from_millis(1));
        let cpu_before = thread_cpu_ns();
        let started = Instant::now();
        let made = core.allocate(now);
        let outbox = core.take_outbox();
        let took = started.elapsed();
        let cpu_after = thread_cpu_ns();
        if cycle > 0 {
            cycles_ms.push(took.as_secs_f64() * 1e3);
            if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
                cycles_cpu_ms.push(b.saturating_sub(a) as f64 / 1e6);
            }
        }
        offers_per_cycle = made;
        decline_all(&mut core, outbox, now);
    }
    Ok(AllocatorReport {
        agents: args.agents,
        frameworks: args.frameworks,
        cycles_ms,
        cycles_cpu_ms,
        offers_per_cycle,
        filters,
        setup_s,
    })
}

/// Nanoseconds this thread has run on a CPU (Linux), from
/// `/proc/thread-self/schedstat` ("on-cpu waiting timeslices").
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Every framework declines the offers it got, without a filter.
fn decline_all(core: &mut MasterCore, outbox: agora_master::core::Outbox, now: Now) {
    for (conn, events) in outbox.frameworks {
        let offer_ids: Vec<String> = events
            .into_iter()
            .filter_map(|e| match e {
                agora_master::core::OutEvent::Offers(o) => Some(o.decode()),
                _ => None,
            })
            .flatten()
            .map(|o| o.id)
            .collect();
        if offer_ids.is_empty() {
            continue;
        }
        core.framework_call(
            conn,
            call::Call::Decline(v1::Decline {
                offer_ids,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.0),
                }),
            }),
            now,
        );
    }
    let _ = core.take_outbox();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coin_is_about_the_percentage() {
        let heads = (0..100)
            .flat_map(|a| (0..100).map(move |f| (a, f)))
            .filter(|&(a, f)| filtered(a, f, 10))
            .count();
        assert!((800..1200).contains(&heads), "{heads}");
        assert!(!(0..50).any(|a| filtered(a, 3, 0)));
        assert!((0..50).all(|a| filtered(a, 3, 100)));
    }

    #[test]
    fn small_cluster_offers_every_agent_each_cycle() {
        let args = AllocatorArgs {
            agents: 200,
            frameworks: 20,
            cycles: 3,
            filtered_percent: 10,
            agent_resources: Resources::parse("cpus:4;mem:4096;ports:[31000-31100]").unwrap(),
        };
        let report = run(&args).unwrap();
        assert_eq!(report.cycles_ms.len(), 3);
        assert_eq!(report.offers_per_cycle, 200, "every agent offered once");
        assert!(report.filters > 0);
        let line = report.json();
        for key in ["agents", "frameworks", "cycle_ms_p50", "cycle_ms_max"] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["agents"], 200);
    }
}
