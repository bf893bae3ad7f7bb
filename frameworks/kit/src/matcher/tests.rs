use super::*;
use proptest::prelude::*;

fn offer(id: &str, agent: &str, role: &str, resources: &str, attrs: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        framework_id: "fw".into(),
        agent_id: agent.into(),
        hostname: format!("host-{agent}"),
        resources: Resources::parse(resources).unwrap().to_proto(),
        attributes: agora_proto::parse_attributes(attrs).unwrap(),
        role: role.into(),
        agent_http_address: String::new(),
    }
}

fn req(key: &str, group: &str, resources: &str) -> TaskRequest {
    TaskRequest {
        key: key.into(),
        group: group.into(),
        resources: Resources::parse(resources).unwrap(),
        ports: PortRequest::None,
        accepted_roles: Vec::new(),
        constraints: Vec::new(),
    }
}

fn constraint(parts: &[&str]) -> Constraint {
    Constraint::parse(parts).unwrap()
}

/// (key, agent) of every placement, in launch order.
fn where_(result: &MatchResult) -> Vec<(String, String)> {
    result
        .launches
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| (p.key.clone(), p.agent_id.clone())))
        .collect()
}

fn res(p: &Placement) -> String {
    Resources::from_proto(&p.resources).unwrap().to_string()
}

#[test]
fn packs_several_tasks_into_one_offer_first_fit() {
    let offers = [
        offer("o1", "a1", "*", "cpus:2;mem:1024", ""),
        offer("o2", "a2", "*", "cpus:2;mem:1024", ""),
    ];
    let reqs: Vec<TaskRequest> = (0..5)
        .map(|i| req(&format!("t{i}"), "app", "cpus:0.5;mem:128"))
        .collect();
    let r = match_offers(&offers, &reqs, &PlacedIndex::new());
    assert_eq!(
        where_(&r),
        [
            ("t0", "a1"),
            ("t1", "a1"),
            ("t2", "a1"),
            ("t3", "a1"),
            ("t4", "a2")
        ]
        .map(|(k, a)| (k.to_string(), a.to_string()))
    );
    assert_eq!(r.launches.len(), 2);
    assert_eq!(r.launches[0].0, vec!["o1"]);
    assert_eq!(res(&r.launches[0].1[0]), "cpus:0.5;mem:128");
    assert!(r.unplaced.is_empty() && r.unused_offers.is_empty());
}

#[test]
fn reports_what_does_not_fit_and_unused_offers() {
    let offers = [
        offer("o1", "a1", "*", "cpus:1;mem:256", ""),
        offer("o2", "a2", "*", "cpus:0.1;mem:32", ""),
    ];
    let reqs = [
        req("big", "app", "cpus:4;mem:128"),
        req("ok", "app", "cpus:1;mem:256"),
    ];
    let r = match_offers(&offers, &reqs, &PlacedIndex::new());
    assert_eq!(where_(&r), vec![("ok".to_string(), "a1".to_string())]);
    assert_eq!(r.unused_offers, vec!["o2"]);
    assert_eq!(r.unplaced.len(), 1);
    assert_eq!(r.unplaced[0].0, "big");
    assert_eq!(
        r.unplaced[0].1,
        "no offer has enough resources for cpus:4;mem:128"
    );
    let none = match_offers(&[], &reqs, &PlacedIndex::new());
    assert_eq!(none.unplaced[0].1, "no offers");
}

#[test]
fn host_ports_come_from_the_offered_ranges() {
    let offers = [offer(
        "o1",
        "a1",
        "*",
        "cpus:4;mem:4096;ports:[31000-31002, 31005-31010]",
        "",
    )];
    let mut any = req("any", "app", "cpus:1;mem:128");
    any.ports = PortRequest::Any(2);
    let mut exact = req("exact", "app", "cpus:1;mem:128");
    exact.ports = PortRequest::Exact(vec![0, 31007]);
    let mut taken = req("taken", "app", "cpus:1;mem:128");
    taken.ports = PortRequest::Exact(vec![31007]);
    let mut too_many = req("too-many", "app", "cpus:0.1;mem:1");
    too_many.ports = PortRequest::Any(20);
    let r = match_offers(&offers, &[any, exact, taken, too_many], &PlacedIndex::new());
    let ps = &r.launches[0].1;
    assert_eq!(ps[0].ports, vec![31000, 31001]);
    assert_eq!(res(&ps[0]), "cpus:1;mem:128;ports:[31000-31001]");
    // The numbered port first, then the lowest free one for the 0.
    assert_eq!(ps[1].ports, vec![31002, 31007]);
    assert_eq!(ps.len(), 2);
    let why: HashMap<_, _> = r.unplaced.iter().cloned().collect();
    assert_eq!(
        why["taken"],
        "no offer with enough resources has the host ports [31007] free"
    );
    assert_eq!(
        why["too-many"],
        "no offer with enough resources has 20 free host ports"
    );
}

#[test]
fn roles_reserved_first_and_only_where_accepted() {
    let offers = [offer(
        "o1",
        "a1",
        "web",
        "cpus(web):1;cpus:4;mem:1024;ports(web):[8000-8000];ports:[31000-31000]",
        "",
    )];
    // Any role: reserved cpus go first, then unreserved.
    let r = match_offers(
        &offers,
        &[req("t", "app", "cpus:1.5;mem:10")],
        &PlacedIndex::new(),
    );
    assert_eq!(res(&r.launches[0].1[0]), "cpus:0.5;cpus(web):1;mem:10");
    // Only unreserved resources.
    let mut star = req("star", "app", "cpus:4.5;mem:10");
    star.accepted_roles = vec!["*".into()];
    let mut star_ok = req("star-ok", "app", "cpus:2;mem:10");
    star_ok.accepted_roles = vec!["*".into()];
    star_ok.ports = PortRequest::Any(1);
    let mut web = req("web", "app", "cpus:1;mem:10");
    web.accepted_roles = vec!["web".into()];
    let r = match_offers(&offers, &[star, star_ok, web], &PlacedIndex::new());
    let why: HashMap<_, _> = r.unplaced.iter().cloned().collect();
    assert_eq!(
        why["star"],
        "no offer has enough resources for cpus:4.5;mem:10 in roles [*]"
    );
    // No mem is reserved for web.
    assert!(why["web"].contains("in roles [web]"), "{}", why["web"]);
    let ps = &r.launches[0].1;
    assert_eq!(ps[0].key, "star-ok");
    assert_eq!(res(&ps[0]), "cpus:2;mem:10;ports:[31000-31000]");
    assert_eq!(ps[0].ports, vec![31000]);
}

#[test]
fn offers_of_one_agent_and_role_are_pooled() {
    let offers = [
        offer("o1", "a1", "*", "cpus:1;mem:512", ""),
        offer("o2", "a2", "*", "cpus:1;mem:512", ""),
        offer("o3", "a1", "*", "cpus:1;mem:512", ""),
        offer("o4", "a1", "other", "cpus:8;mem:8192", ""),
    ];
    let mut accepted = req("t", "app", "cpus:2;mem:1024");
    accepted.accepted_roles = vec!["*".into()];
    let r = match_offers(&offers, &[accepted], &PlacedIndex::new());
    assert_eq!(r.launches.len(), 1);
    assert_eq!(r.launches[0].0, vec!["o1", "o3"]);
    assert_eq!(r.launches[0].1[0].offer_id, "o1");
    // The pool of role "other" holds only unreserved resources too, but it is
    // a separate offer of another role: one accept cannot mix them.
    assert_eq!(r.unused_offers, vec!["o2", "o4"]);
}

#[test]
fn constraints_spread_and_explain() {
    let offers: Vec<v1::Offer> = (0..3)
        .map(|i| {
            offer(
                &format!("o{i}"),
                &format!("a{i}"),
                "*",
                "cpus:8;mem:8192",
                &format!("rack:r{}", i % 2),
            )
        })
        .collect();
    let mut placed = PlacedIndex::new();
    placed.add("web", AgentFacts::from_offer(&offers[1]));
    let reqs: Vec<TaskRequest> = (0..4)
        .map(|i| {
            let mut r = req(&format!("w{i}"), "web", "cpus:1;mem:64");
            r.constraints = vec![constraint(&["hostname", "UNIQUE"])];
            r
        })
        .collect();
    let r = match_offers(&offers, &reqs, &placed);
    // a1 already runs one instance of web.
    assert_eq!(
        where_(&r),
        vec![
            ("w0".to_string(), "a0".to_string()),
            ("w1".to_string(), "a2".to_string())
        ]
    );
    assert_eq!(r.unplaced.len(), 2);
    assert_eq!(
        r.unplaced[0].1,
        "constraint hostname:UNIQUE not satisfied by any offer"
    );
    // Another group is not affected by web's instances.
    let mut other = req("x", "other", "cpus:1;mem:64");
    other.constraints = vec![constraint(&["hostname", "UNIQUE"])];
    let r = match_offers(&offers, &[other], &placed);
    assert_eq!(where_(&r), vec![("x".to_string(), "a0".to_string())]);
}

#[test]
fn a_group_counts_its_unconstrained_placements_too() {
    let offers: Vec<v1::Offer> = (0..2)
        .map(|i| {
            offer(
                &format!("o{i}"),
                &format!("a{i}"),
                "*",
                "cpus:8;mem:8192",
                "",
            )
        })
        .collect();
    let free = req("free", "web", "cpus:1;mem:1");
    let mut unique = req("unique", "web", "cpus:1;mem:1");
    unique.constraints = vec![constraint(&["hostname", "UNIQUE"])];
    let r = match_offers(&offers, &[free, unique], &PlacedIndex::new());
    assert_eq!(
        where_(&r),
        vec![
            ("free".to_string(), "a0".to_string()),
            ("unique".to_string(), "a1".to_string())
        ]
    );
}

#[test]
fn group_by_balances_within_one_call() {
    let offers: Vec<v1::Offer> = (0..4)
        .map(|i| {
            offer(
                &format!("o{i}"),
                &format!("a{i}"),
                "*",
                "cpus:100;mem:100000",
                &format!("rack:r{}", i % 2),
            )
        })
        .collect();
    let reqs: Vec<TaskRequest> = (0..10)
        .map(|i| {
            let mut r = req(&format!("t{i}"), "g", "cpus:1;mem:1");
            r.constraints = vec![constraint(&["rack", "GROUP_BY", "2"])];
            r
        })
        .collect();
    let r = match_offers(&offers, &reqs, &PlacedIndex::new());
    assert!(r.unplaced.is_empty());
    let on_r0 = where_(&r)
        .iter()
        .filter(|(_, a)| a == "a0" || a == "a2")
        .count();
    assert_eq!(on_r0, 5);
}

#[test]
fn placed_index_adds_and_removes() {
    let mut idx = PlacedIndex::new();
    let a = AgentFacts {
        agent_id: "a".into(),
        hostname: "h".into(),
        attributes: Vec::new(),
    };
    idx.add("g", a.clone());
    idx.add("g", a.clone());
    assert_eq!(idx.count("g"), 2);
    assert_eq!(idx.placed("g").len(), 2);
    assert_eq!(idx.counts("g", "hostname").count(Some("h")), 2);
    idx.remove("g", "a");
    assert_eq!(idx.count("g"), 1);
    idx.remove("g", "a");
    idx.remove("g", "a");
    assert_eq!(idx.count("g"), 0);
    idx.add("g", a);
    idx.clear_group("g");
    assert_eq!(idx.count("g"), 0);
}

/// The figure the services framework lives by: 10,000 requests against
/// 1,000 offers per cycle. Measured in fit checks (no clocks): about one
/// per request plus one per offer, not requests x offers.
#[test]
fn large_cycles_cost_linear_work() {
    let offers: Vec<v1::Offer> = (0..1000)
        .map(|i| {
            offer(
                &format!("o{i}"),
                &format!("a{i}"),
                "*",
                "cpus:8;mem:16384;ports:[31000-32000]",
                &format!("rack:r{}", i % 10),
            )
        })
        .collect();
    let requests = |constraints: Vec<Constraint>| -> Vec<TaskRequest> {
        (0..10_000)
            .map(|i| {
                let mut r = req(&format!("t{i}"), "app", "cpus:0.5;mem:512");
                r.ports = PortRequest::Any(1);
                r.constraints = constraints.clone();
                r
            })
            .collect()
    };
    let budget = 3 * (10_000 + 1000);

    let r = match_offers(&offers, &requests(Vec::new()), &PlacedIndex::new());
    // 16 instances fit on each agent (8 cpus / 0.5).
    assert_eq!(where_(&r).len(), 10_000);
    assert!(r.stats.fit_checks <= budget, "{:?}", r.stats);

    let r = match_offers(
        &offers,
        &requests(vec![constraint(&["hostname", "UNIQUE"])]),
        &PlacedIndex::new(),
    );
    assert_eq!(where_(&r).len(), 1000);
    assert_eq!(r.unplaced.len(), 9000);
    assert!(r.stats.fit_checks <= budget, "{:?}", r.stats);

    let r = match_offers(
        &offers,
        &requests(vec![constraint(&["rack", "MAX_PER", "100"])]),
        &PlacedIndex::new(),
    );
    assert_eq!(where_(&r).len(), 1000);
    assert!(r.stats.fit_checks <= budget, "{:?}", r.stats);
}

/// The batch framework's figure: 10,000 requests of as many groups (one
/// cron job each) without constraints against 1,000 offers share one
/// cursor, so the work stays linear too.
#[test]
fn many_groups_without_constraints_cost_linear_work() {
    let offers: Vec<v1::Offer> = (0..1000)
        .map(|i| {
            offer(
                &format!("o{i}"),
                &format!("a{i}"),
                "*",
                "cpus:4;mem:4096",
                "",
            )
        })
        .collect();
    let requests: Vec<TaskRequest> = (0..10_000)
        .map(|i| req(&format!("t{i}"), &format!("job-{i}"), "cpus:0.1;mem:32"))
        .collect();
    let r = match_offers(&offers, &requests, &PlacedIndex::new());
    assert_eq!(where_(&r).len(), 10_000);
    assert!(r.stats.fit_checks <= 3 * (10_000 + 1000), "{:?}", r.stats);
}

// ---------------------------------------------------------------------------
// Property tests: the fast matcher decides exactly as a plain first fit.
// ---------------------------------------------------------------------------

/// First fit over pools in order, constraints checked against every
/// instance by a scan: no cursors, no counts.
fn reference(
    offers: &[v1::Offer],
    requests: &[TaskRequest],
    placed: &PlacedIndex,
) -> Vec<Option<(String, Vec<u64>, String)>> {
    let mut pools: Vec<Pool> = Vec::new();
    for o in offers {
        let resources = Resources::from_proto(&o.resources).unwrap();
        match pools.iter_mut().find(|p| {
            p.facts.agent_id == o.agent_id
                && offers.iter().find(|x| x.id == p.offer_ids[0]).unwrap().role == o.role
        }) {
            Some(p) => p.absorb(o, &resources),
            None => pools.push(Pool::new(o, &resources)),
        }
    }
    let mut now: Vec<(String, AgentFacts)> = Vec::new();
    let mut out = Vec::new();
    for req in requests {
        let mut chosen = None;
        for (i, pool) in pools.iter().enumerate() {
            if fits(req, pool).is_err() {
                continue;
            }
            let mut group: Vec<&AgentFacts> = placed.placed(&req.group);
            group.extend(now.iter().filter(|(g, _)| *g == req.group).map(|(_, f)| f));
            if req
                .constraints
                .iter()
                .all(|c| c.allows(&pool.facts, &group))
            {
                chosen = Some(i);
                break;
            }
        }
        out.push(chosen.map(|i| {
            let (resources, ports) = take(req, &mut pools[i]);
            now.push((req.group.clone(), pools[i].facts.clone()));
            (
                pools[i].facts.agent_id.clone(),
                ports,
                Resources::from_proto(&resources).unwrap().to_string(),
            )
        }));
    }
    out
}

fn arb_offers() -> impl Strategy<Value = Vec<v1::Offer>> {
    proptest::collection::vec((0u8..5, 0u8..2, 1u32..6, 0u32..3, 0u64..4, 0u8..3), 0..8).prop_map(
        |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (agent, role, cpus, reserved, nports, rack))| {
                    let role = ["*", "web"][role as usize];
                    let mut text = format!("cpus:{cpus};mem:{}", cpus * 256);
                    if role == "web" && reserved > 0 {
                        text.push_str(&format!(";cpus(web):{reserved}"));
                    }
                    if nports > 0 {
                        let base = 31000 + u64::from(agent) * 100 + i as u64 * 10;
                        text.push_str(&format!(";ports:[{base}-{}]", base + nports - 1));
                    }
                    offer(
                        &format!("o{i}"),
                        &format!("a{agent}"),
                        role,
                        &text,
                        &format!("rack:r{rack}"),
                    )
                })
                .collect()
        },
    )
}

fn arb_requests() -> impl Strategy<Value = Vec<TaskRequest>> {
    let one = (
        0u8..2,
        1u32..4,
        0usize..3,
        prop_oneof![
            Just(vec![]),
            Just(vec!["hostname", "UNIQUE"]),
            Just(vec!["rack", "GROUP_BY"]),
            Just(vec!["rack", "MAX_PER", "2"]),
            Just(vec!["rack", "CLUSTER"]),
            Just(vec!["hostname", "LIKE", "host-a[0-2]"]),
        ],
        prop_oneof![
            Just(vec![]),
            Just(vec!["*".to_string()]),
            Just(vec!["web".to_string()])
        ],
    );
    proptest::collection::vec(one, 0..25).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (group, halves, ports, con, roles))| {
                let mut r = req(
                    &format!("t{i}"),
                    ["g0", "g1"][group as usize],
                    &format!("cpus:{};mem:{}", f64::from(halves) * 0.5, halves * 64),
                );
                r.ports = PortRequest::Any(ports);
                if !con.is_empty() {
                    r.constraints = vec![Constraint::parse(&con).unwrap()];
                }
                r.accepted_roles = roles;
                r
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fast_matching_equals_plain_first_fit(offers in arb_offers(), requests in arb_requests(), pre in proptest::collection::vec((0u8..2, 0u8..5, 0u8..3), 0..4)) {
        let mut placed = PlacedIndex::new();
        for (g, a, rack) in pre {
            placed.add(["g0", "g1"][g as usize], AgentFacts {
                agent_id: format!("a{a}"),
                hostname: format!("host-a{a}"),
                attributes: agora_proto::parse_attributes(&format!("rack:r{rack}")).unwrap(),
            });
        }
        let fast = match_offers(&offers, &requests, &placed);
        let want = reference(&offers, &requests, &placed);
        let mut got: HashMap<String, (String, Vec<u64>, String)> = HashMap::new();
        for (ids, ps) in &fast.launches {
            prop_assert!(!ids.is_empty());
            for p in ps {
                prop_assert_eq!(&p.offer_id, &ids[0]);
                got.insert(p.key.clone(), (p.agent_id.clone(), p.ports.clone(), res(p)));
            }
        }
        let unplaced: std::collections::HashSet<&String> = fast.unplaced.iter().map(|(k, _)| k).collect();
        for (req, want) in requests.iter().zip(want) {
            match want {
                Some(w) => prop_assert_eq!(got.get(&req.key), Some(&w), "request {}", req.key),
                None => prop_assert!(unplaced.contains(&req.key), "request {} should be unplaced", req.key),
            }
        }
        prop_assert_eq!(got.len() + unplaced.len(), requests.len());
        // Every offer is either launched on or unused, once.
        let mut all: Vec<String> = fast.launches.iter().flat_map(|(ids, _)| ids.clone()).collect();
        all.extend(fast.unused_offers.clone());
        all.sort();
        let mut ids: Vec<String> = offers.iter().map(|o| o.id.clone()).collect();
        ids.sort();
        prop_assert_eq!(all, ids);
    }

    /// What goes on an agent never exceeds what its offers hold, and no host
    /// port is given twice.
    #[test]
    fn placements_stay_within_the_offers(offers in arb_offers(), requests in arb_requests()) {
        let r = match_offers(&offers, &requests, &PlacedIndex::new());
        for (ids, ps) in &r.launches {
            let mut offered = Resources::new();
            for o in offers.iter().filter(|o| ids.contains(&o.id)) {
                offered.add(&Resources::from_proto(&o.resources).unwrap());
            }
            let mut used = Resources::new();
            for p in ps {
                let mine = Resources::from_proto(&p.resources).unwrap();
                prop_assert_eq!(mine.ports().count() as usize, p.ports.len());
                for port in &p.ports {
                    prop_assert!(mine.ports().contains_value(*port));
                }
                // Ports are disjoint between tasks of one agent.
                prop_assert!(used.ports().ranges().iter().all(|&(b, e)| !p.ports.iter().any(|x| (b..=e).contains(x))));
                used.add(&mine);
            }
            prop_assert!(offered.contains(&used), "{offered} does not hold {used}");
        }
    }
}
