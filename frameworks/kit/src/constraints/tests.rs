use super::*;
use proptest::prelude::*;

fn text(name: &str, value: &str) -> v1::Attribute {
    v1::Attribute {
        name: name.into(),
        value: Some(v1::attribute::Value::Text(value.into())),
    }
}

fn scalar(name: &str, value: f64) -> v1::Attribute {
    v1::Attribute {
        name: name.into(),
        value: Some(v1::attribute::Value::Scalar(value)),
    }
}

fn agent(host: &str, attrs: &[(&str, &str)]) -> AgentFacts {
    AgentFacts {
        agent_id: format!("a-{host}"),
        hostname: host.into(),
        attributes: attrs.iter().map(|(k, v)| text(k, v)).collect(),
    }
}

fn c(parts: &[&str]) -> Constraint {
    Constraint::parse(parts).unwrap_or_else(|e| panic!("{parts:?}: {e}"))
}

#[test]
fn hostname_operators() {
    let (h1, h2, h3) = (agent("h1", &[]), agent("h2", &[]), agent("h3", &[]));
    let unique = c(&["hostname", "UNIQUE"]);
    assert!(unique.allows(&h1, &[]));
    assert!(!unique.allows(&h1, &[&h1]));
    assert!(unique.allows(&h2, &[&h1]));

    let cluster = c(&["hostname", "CLUSTER", "h2"]);
    assert!(!cluster.allows(&h1, &[]));
    assert!(cluster.allows(&h2, &[&h2, &h2]));
    // Empty value: the first placement pins the host.
    let pin = c(&["hostname", "CLUSTER"]);
    assert!(pin.allows(&h1, &[]) && pin.allows(&h3, &[]));
    assert!(pin.allows(&h1, &[&h1]));
    assert!(!pin.allows(&h3, &[&h1]));

    let max = c(&["hostname", "MAX_PER", "2"]);
    assert!(max.allows(&h1, &[&h1, &h2]));
    assert!(!max.allows(&h1, &[&h1, &h1]));

    let like = c(&["hostname", "LIKE", "h[12]"]);
    assert!(like.allows(&h1, &[]) && like.allows(&h2, &[]) && !like.allows(&h3, &[]));
    // The whole value must match, not a part of it.
    assert!(!c(&["hostname", "LIKE", "h"]).allows(&h1, &[]));
    assert!(c(&["hostname", "UNLIKE", "h"]).allows(&h1, &[]));
    assert!(!c(&["hostname", "UNLIKE", "h.*"]).allows(&h1, &[]));

    assert!(c(&["hostname", "IS", "h3"]).allows(&h3, &[]));
    assert!(!c(&["hostname", "IS", "h3"]).allows(&h1, &[]));
    assert!(c(&["hostname", "EQ", "h3"]).allows(&h3, &[]));
}

#[test]
fn group_by_spreads_over_values_as_marathon_does() {
    let a = agent("h1", &[("rack", "a")]);
    let b = agent("h2", &[("rack", "b")]);
    let a2 = agent("h3", &[("rack", "a")]);
    let g = c(&["rack", "GROUP_BY"]);
    // A value not used yet is always allowed.
    assert!(g.allows(&a, &[]) && g.allows(&b, &[&a]));
    // A used value only when it has the fewest instances.
    assert!(g.allows(&a2, &[&a, &b]));
    assert!(!g.allows(&a2, &[&a, &a2, &b]));
    assert!(g.allows(&b, &[&a, &a2, &b]));
    // With a count, used values wait until that many values are used.
    let g3 = c(&["rack", "GROUP_BY", "3"]);
    assert!(!g3.allows(&a2, &[&a, &b]));
    assert!(g3.allows(&agent("h4", &[("rack", "c")]), &[&a, &b]));
    // Agents without the attribute form a group of their own among the
    // placed, and cannot take an instance themselves.
    let bare = agent("h5", &[]);
    assert!(!g.allows(&bare, &[]));
    assert!(g.allows(&a2, &[&a, &bare, &bare]));
    assert!(!g.allows(&a2, &[&a, &a2, &bare]));
    assert!(g.allows(&b, &[&a, &bare]));
}

#[test]
fn attributes_and_agents_without_them() {
    let a = agent("h1", &[("rack", "r1"), ("zone", "z1")]);
    let bare = agent("h2", &[]);
    for (parts, on_a) in [
        (&["rack", "UNIQUE"][..], true),
        (&["rack", "CLUSTER", "r1"][..], true),
        (&["rack", "CLUSTER"][..], true),
        (&["rack", "GROUP_BY"][..], true),
        (&["rack", "MAX_PER", "1"][..], true),
        (&["rack", "LIKE", "r[0-9]"][..], true),
        (&["rack", "UNLIKE", "r[0-9]"][..], false),
        (&["rack", "IS", "r1"][..], true),
        (&["rack", "IS", "r2"][..], false),
    ] {
        let con = c(parts);
        assert_eq!(con.allows(&a, &[]), on_a, "{con} on an agent with rack:r1");
        // Lacking the attribute fails everything but UNLIKE.
        assert_eq!(
            con.allows(&bare, &[]),
            con.op() == Operator::Unlike,
            "{con} on an agent without rack"
        );
    }
}

#[test]
fn scalar_attributes_compare_as_numbers() {
    let gpu = AgentFacts {
        agent_id: "a".into(),
        hostname: "h".into(),
        attributes: vec![scalar("level", 3.0), scalar("ratio", 2.5)],
    };
    assert!(c(&["level", "IS", "3"]).allows(&gpu, &[]));
    assert!(c(&["level", "IS", "3.0"]).allows(&gpu, &[]));
    assert!(!c(&["level", "IS", "4"]).allows(&gpu, &[]));
    assert!(c(&["ratio", "LIKE", "2\\.5"]).allows(&gpu, &[]));
    assert!(!c(&["level", "UNIQUE"]).allows(&gpu, &[&gpu]));
}

#[test]
fn parse_errors_say_what_is_wrong() {
    for (parts, says) in [
        (&["hostname"][..], "[field, operator]"),
        (&["hostname", "UNIQUE", "a", "b"][..], "4 elements"),
        (&["", "UNIQUE"][..], "field is empty"),
        (
            &["hostname", "unique"][..],
            "unknown constraint operator `unique`",
        ),
        (&["hostname", "NEAR"][..], "UNIQUE, CLUSTER, GROUP_BY"),
        (&["hostname", "UNIQUE", "x"][..], "UNIQUE takes no value"),
        (
            &["rack", "GROUP_BY", "two"][..],
            "GROUP_BY takes an optional whole number",
        ),
        (&["rack", "GROUP_BY", "-1"][..], "not `-1`"),
        (&["rack", "MAX_PER"][..], "MAX_PER needs a value"),
        (&["rack", "MAX_PER", "0"][..], "at least 1"),
        (&["rack", "MAX_PER", "x"][..], "not `x`"),
        (
            &["rack", "LIKE"][..],
            "LIKE needs a value: a regular expression",
        ),
        (&["rack", "UNLIKE", ""][..], "must not match"),
        (
            &["rack", "LIKE", "r[1"][..],
            "`r[1` is not a valid regular expression",
        ),
        (&["rack", "IS"][..], "IS needs a value"),
        (&["rack", "EQ"][..], "IS needs a value"),
    ] {
        let err = Constraint::parse(parts).unwrap_err();
        assert!(err.contains(says), "{parts:?}: {err}");
    }
    // The value may be empty where it is optional.
    assert_eq!(c(&["hostname", "UNIQUE", ""]).value(), None);
    assert_eq!(c(&["rack", "CLUSTER", ""]).value(), None);
    assert_eq!(c(&["rack", "EQ", "a"]).op(), Operator::Is);
    assert_eq!(c(&["rack", "GROUP_BY", "3"]).explain(), "rack:GROUP_BY:3");
    assert_eq!(c(&["hostname", "UNIQUE"]).to_string(), "hostname:UNIQUE");
}

#[test]
fn serializes_as_marathon_arrays() {
    let con = c(&["rack", "MAX_PER", "2"]);
    assert_eq!(
        serde_json::to_string(&con).unwrap(),
        r#"["rack","MAX_PER","2"]"#
    );
    let back: Constraint = serde_json::from_str(r#"["rack","MAX_PER","2"]"#).unwrap();
    assert_eq!(back, con);
    let err = serde_json::from_str::<Constraint>(r#"["rack","MAX_PER"]"#).unwrap_err();
    assert!(err.to_string().contains("MAX_PER needs a value"), "{err}");
}

#[test]
fn value_counts_track_the_smallest_group() {
    let mut v = ValueCounts::default();
    assert_eq!((v.groups(), v.min(), v.total()), (0, None, 0));
    v.add(Some("a"));
    v.add(Some("a"));
    v.add(Some("b"));
    v.add(None);
    assert_eq!((v.groups(), v.min(), v.total()), (3, Some(1), 4));
    v.remove(Some("b"));
    v.remove(None);
    assert_eq!((v.groups(), v.min(), v.count(Some("a"))), (1, Some(2), 2));
    v.remove(Some("zzz"));
    v.remove(None);
    assert_eq!(v.total(), 2);
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// Marathon's semantics written the plain way, as the reference: scans of
/// the placed instances, no counting structure.
fn reference(con: &Constraint, candidate: &AgentFacts, placed: &[&AgentFacts]) -> bool {
    let field = con.field();
    let value_of = |a: &AgentFacts| a.value_of(field).map(|v| v.into_owned());
    let Some(value) = value_of(candidate) else {
        return con.op() == Operator::Unlike;
    };
    let same = placed
        .iter()
        .filter(|p| value_of(p).as_deref() == Some(value.as_str()))
        .count();
    match con.op() {
        Operator::Unique => same == 0,
        Operator::Cluster => {
            con.value().is_none_or(|w| w == value)
                && placed
                    .iter()
                    .all(|p| value_of(p).as_deref() == Some(value.as_str()))
        }
        Operator::GroupBy => {
            let mut groups: Vec<(Option<String>, usize)> = Vec::new();
            for p in placed {
                let v = value_of(p);
                match groups.iter_mut().find(|(g, _)| *g == v) {
                    Some((_, n)) => *n += 1,
                    None => groups.push((v, 1)),
                }
            }
            let minimum: usize = con.value().map_or(0, |v| v.parse().unwrap());
            let min_count = groups.iter().map(|(_, n)| *n).min().unwrap_or(0);
            match groups
                .iter()
                .find(|(g, _)| g.as_deref() == Some(value.as_str()))
            {
                None => true,
                Some((_, n)) => groups.len() >= minimum && *n == min_count,
            }
        }
        Operator::MaxPer => same < con.value().unwrap().parse::<usize>().unwrap(),
        Operator::Like => Regex::new(&format!("^(?:{})$", con.value().unwrap()))
            .unwrap()
            .is_match(&value),
        Operator::Unlike => !Regex::new(&format!("^(?:{})$", con.value().unwrap()))
            .unwrap()
            .is_match(&value),
        Operator::Is => con.value() == Some(value.as_str()),
    }
}

/// Agents over a few hosts and racks; some lack the rack attribute.
fn arb_agent() -> impl Strategy<Value = AgentFacts> {
    (0u8..6, proptest::option::weighted(0.8, 0u8..4)).prop_map(|(h, rack)| AgentFacts {
        agent_id: format!("a{h}"),
        hostname: format!("h{h}"),
        attributes: rack
            .map(|r| vec![text("rack", &format!("r{r}"))])
            .unwrap_or_default(),
    })
}

fn arb_constraint() -> impl Strategy<Value = Constraint> {
    let field = prop_oneof![Just("hostname"), Just("rack")];
    let op = prop_oneof![
        Just(vec!["UNIQUE".to_string()]),
        Just(vec!["CLUSTER".to_string()]),
        (0u8..4).prop_map(|r| vec!["CLUSTER".to_string(), format!("r{r}")]),
        (0u8..6).prop_map(|h| vec!["CLUSTER".to_string(), format!("h{h}")]),
        Just(vec!["GROUP_BY".to_string()]),
        (0usize..5).prop_map(|n| vec!["GROUP_BY".to_string(), n.to_string()]),
        (1usize..4).prop_map(|n| vec!["MAX_PER".to_string(), n.to_string()]),
        Just(vec!["LIKE".to_string(), "[hr][0-2]".to_string()]),
        Just(vec!["UNLIKE".to_string(), "[hr][0-2]".to_string()]),
        (0u8..4).prop_map(|r| vec!["IS".to_string(), format!("r{r}")]),
        (0u8..6).prop_map(|h| vec!["IS".to_string(), format!("h{h}")]),
    ];
    (field, op).prop_map(|(field, op)| {
        let mut parts = vec![field.to_string()];
        parts.extend(op);
        Constraint::parse(&parts).unwrap()
    })
}

/// Places `n` instances one by one, each on the first allowed agent of the
/// agents taken from a varying starting point (`starts`); returns where
/// they went.
fn place(con: &Constraint, agents: &[AgentFacts], starts: &[usize], n: usize) -> Vec<AgentFacts> {
    let mut placed: Vec<AgentFacts> = Vec::new();
    for step in 0..n {
        let refs: Vec<&AgentFacts> = placed.iter().collect();
        let start = starts[step % starts.len()];
        let pick = (0..agents.len())
            .map(|i| &agents[(start + i) % agents.len()])
            .find(|a| con.allows(a, &refs))
            .cloned();
        match pick {
            Some(a) => placed.push(a),
            None => break,
        }
    }
    placed
}

fn count_by(placed: &[AgentFacts], field: &str) -> HashMap<Option<String>, usize> {
    let mut m = HashMap::new();
    for p in placed {
        *m.entry(p.value_of(field).map(|v| v.into_owned()))
            .or_insert(0) += 1;
    }
    m
}

proptest! {
    /// The counting implementation answers exactly as the plain reference.
    #[test]
    fn counted_answers_match_the_reference(
        con in arb_constraint(),
        candidate in arb_agent(),
        placed in proptest::collection::vec(arb_agent(), 0..12),
    ) {
        let refs: Vec<&AgentFacts> = placed.iter().collect();
        prop_assert_eq!(con.allows(&candidate, &refs), reference(&con, &candidate, &refs));
    }

    /// Counts kept by adding and removing equal counts made from scratch.
    #[test]
    fn value_counts_stay_exact(ops in proptest::collection::vec((any::<bool>(), proptest::option::of(0u8..4)), 0..60)) {
        let mut counts = ValueCounts::default();
        let mut model: HashMap<Option<String>, usize> = HashMap::new();
        for (add, v) in ops {
            let v = v.map(|x| format!("v{x}"));
            if add {
                counts.add(v.as_deref());
                *model.entry(v).or_insert(0) += 1;
            } else {
                counts.remove(v.as_deref());
                if let Some(n) = model.get_mut(&v) {
                    *n -= 1;
                    if *n == 0 { model.remove(&v); }
                }
            }
            prop_assert_eq!(counts.groups(), model.len());
            prop_assert_eq!(counts.min(), model.values().min().copied());
            prop_assert_eq!(counts.total(), model.values().sum::<usize>());
            for (k, n) in &model {
                prop_assert_eq!(counts.count(k.as_deref()), *n);
            }
        }
    }

    /// UNIQUE never puts two instances on one value, and stops only when
    /// every value that agents offer is used.
    #[test]
    fn unique_places_one_per_value(
        agents in proptest::collection::vec(arb_agent(), 1..10),
        order in proptest::collection::vec(0usize..10, 1..10),
        field in prop_oneof![Just("hostname"), Just("rack")],
        n in 0usize..12,
    ) {
        let con = Constraint::parse(&[field, "UNIQUE"]).unwrap();
        let placed = place(&con, &agents, &order, n);
        let counts = count_by(&placed, field);
        prop_assert!(counts.values().all(|&c| c == 1), "{counts:?}");
        let offered: std::collections::HashSet<_> =
            agents.iter().filter_map(|a| a.value_of(field).map(|v| v.into_owned())).collect();
        prop_assert_eq!(placed.len(), n.min(offered.len()));
    }

    /// MAX_PER k: at most k per value, and every value is filled to k
    /// before placement stops.
    #[test]
    fn max_per_caps_each_value(
        agents in proptest::collection::vec(arb_agent(), 1..10),
        order in proptest::collection::vec(0usize..10, 1..10),
        k in 1usize..4,
        n in 0usize..30,
    ) {
        let con = Constraint::parse(&["rack".to_string(), "MAX_PER".into(), k.to_string()]).unwrap();
        let placed = place(&con, &agents, &order, n);
        let counts = count_by(&placed, "rack");
        prop_assert!(counts.values().all(|&c| c <= k), "{counts:?}");
        prop_assert!(!counts.contains_key(&None));
        let offered: std::collections::HashSet<_> =
            agents.iter().filter_map(|a| a.value_of("rack").map(|v| v.into_owned())).collect();
        prop_assert_eq!(placed.len(), n.min(offered.len() * k));
    }

    /// CLUSTER: every instance on one value, the given one if any.
    #[test]
    fn cluster_keeps_one_value(
        agents in proptest::collection::vec(arb_agent(), 1..10),
        order in proptest::collection::vec(0usize..10, 1..10),
        pinned in proptest::option::of(0u8..4),
        n in 0usize..10,
    ) {
        let mut parts = vec!["rack".to_string(), "CLUSTER".to_string()];
        if let Some(p) = pinned { parts.push(format!("r{p}")); }
        let con = Constraint::parse(&parts).unwrap();
        let placed = place(&con, &agents, &order, n);
        let counts = count_by(&placed, "rack");
        prop_assert!(counts.len() <= 1, "{counts:?}");
        if let (Some(p), Some(v)) = (pinned, counts.keys().next()) {
            prop_assert_eq!(v.clone(), Some(format!("r{p}")));
        }
        // It keeps placing as long as an agent has that value.
        if !placed.is_empty() {
            prop_assert_eq!(placed.len(), n);
        }
    }

    /// GROUP_BY with a count of k over k offered values: the first k
    /// instances use k different values, and the spread never differs by
    /// more than one instance.
    #[test]
    fn group_by_with_a_count_spreads_evenly(
        k in 1u8..5,
        extra in 0u8..3,
        order in proptest::collection::vec(0usize..12, 1..12),
        n in 0usize..25,
    ) {
        let mut agents = Vec::new();
        for r in 0..k {
            for copy in 0..=extra {
                agents.push(agent(&format!("h{r}-{copy}"), &[("rack", &format!("r{r}"))]));
            }
        }
        let con = Constraint::parse(&["rack".to_string(), "GROUP_BY".into(), k.to_string()]).unwrap();
        let placed = place(&con, &agents, &order, n);
        prop_assert_eq!(placed.len(), n, "GROUP_BY never gets stuck while values remain");
        let counts = count_by(&placed, "rack");
        let max = counts.values().max().copied().unwrap_or(0);
        let min = if counts.len() < k as usize { 0 } else { counts.values().min().copied().unwrap_or(0) };
        prop_assert!(max - min <= 1, "{counts:?}");
    }

    /// LIKE and UNLIKE are each other's opposite on agents that have the
    /// attribute; both read the whole value.
    #[test]
    fn like_and_unlike_are_opposites(a in arb_agent(), pattern in prop_oneof![Just("r[0-1]"), Just("h.*"), Just("r"), Just(".*")]) {
        for field in ["hostname", "rack"] {
            let like = Constraint::parse(&[field, "LIKE", pattern]).unwrap();
            let unlike = Constraint::parse(&[field, "UNLIKE", pattern]).unwrap();
            if a.value_of(field).is_some() {
                prop_assert_ne!(like.allows(&a, &[]), unlike.allows(&a, &[]));
            } else {
                prop_assert!(!like.allows(&a, &[]) && unlike.allows(&a, &[]));
            }
        }
    }

    /// Parsing never panics; what parses prints back to what parses the same.
    #[test]
    fn parse_round_trips_and_never_panics(parts in proptest::collection::vec(".{0,12}", 0..5)) {
        match Constraint::parse(&parts) {
            Ok(con) => prop_assert_eq!(Constraint::parse(&con.to_parts()).unwrap(), con),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }
}
