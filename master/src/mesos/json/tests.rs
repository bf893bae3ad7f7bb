use super::*;

fn parse(v: Value) -> Result<MesosCall, Refusal> {
    parse_call(v.to_string().as_bytes())
}

fn core_call(v: Value) -> (String, call::Call) {
    match parse(v).expect("the call parses") {
        MesosCall::Core { framework_id, call } => (framework_id, call),
        other => panic!("not a core call: {other:?}"),
    }
}

fn refusal(v: Value) -> String {
    let r = parse(v).expect_err("the call is refused");
    assert_eq!(r.status, 400, "{r:?}");
    r.message
}

#[test]
fn subscribe_reads_the_framework_info() {
    let c = parse(json!({
        "type": "SUBSCRIBE",
        "framework_id": {"value": "m-0001"},
        "subscribe": {"framework_info": {
            "user": "root", "name": "pyfw", "id": {"value": "m-0001"},
            "failover_timeout": 100, "checkpoint": true, "hostname": "h1",
            "principal": "p", "webui_url": "http://h1:8080",
            "roles": ["web", "batch"],
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "GPU_RESOURCES"}],
            "labels": {"labels": [{"key": "team", "value": "data"}]},
            "some_future_field": 1
        }}
    }))
    .unwrap();
    let MesosCall::Subscribe {
        subscribe,
        multi_role,
    } = c
    else {
        panic!("not a subscribe")
    };
    assert!(multi_role);
    let info = subscribe.framework_info.unwrap();
    assert_eq!(info.id, "m-0001");
    assert_eq!(info.name, "pyfw");
    assert_eq!(info.user, "root");
    assert_eq!(info.roles, ["web", "batch"]);
    assert_eq!(info.failover_timeout, 100.0);
    assert!(info.checkpoint);
    assert_eq!(info.hostname, "h1");
    assert_eq!(info.webui_url, "http://h1:8080");
    assert_eq!(info.labels[0].key, "team");

    // The old single role, without MULTI_ROLE.
    let MesosCall::Subscribe {
        subscribe,
        multi_role,
    } = parse(json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
        {"user": "u", "name": "n", "role": "web"}}}))
    .unwrap()
    else {
        panic!()
    };
    assert!(!multi_role);
    let info = subscribe.framework_info.unwrap();
    assert_eq!(info.roles, ["web"]);
    assert!(info.id.is_empty());
}

#[test]
fn a_subscribe_whose_ids_differ_is_refused() {
    let m = refusal(json!({"type": "SUBSCRIBE", "framework_id": {"value": "a"},
        "subscribe": {"framework_info": {"user": "u", "name": "n", "id": {"value": "b"}}}}));
    assert!(m.contains("differs"), "{m}");
    let m = refusal(json!({"type": "SUBSCRIBE"}));
    assert!(m.contains("'subscribe'"), "{m}");
}

#[test]
fn accept_with_launch_becomes_the_cores_accept() {
    let (fw, c) = core_call(json!({
        "type": "ACCEPT",
        "framework_id": {"value": "f1"},
        "accept": {
            "offer_ids": [{"value": "m-O1"}, {"value": "m-O2"}],
            "filters": {"refuse_seconds": 30.0},
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "m-S0"},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, "role": "*"},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 64},
                     "allocation_info": {"role": "web"}, "role": "web"},
                    {"name": "ports", "type": "RANGES",
                     "ranges": {"range": [{"begin": 31000, "end": 31001}]}},
                    {"name": "disks", "type": "SET", "set": {"item": ["a", "b"]},
                     "reservations": [{"type": "STATIC", "role": "data"}]}
                ],
                "command": {"value": "echo hi", "environment":
                    {"variables": [{"name": "A", "value": "1"}]}},
                "kill_policy": {"grace_period": {"nanoseconds": 2500000000i64}},
                "labels": {"labels": [{"key": "k", "value": "v"}]},
                "health_check": {"type": "HTTP", "http": {"port": 8080, "path": "/ok"},
                    "interval_seconds": 5}
            }]}}]
        }
    }));
    assert_eq!(fw, "f1");
    let call::Call::Accept(a) = c else {
        panic!("not an accept")
    };
    assert_eq!(a.offer_ids, ["m-O1", "m-O2"]);
    assert_eq!(a.filters.unwrap().refuse_seconds, Some(30.0));
    let Some(v1::operation::Operation::Launch(l)) = &a.operations[0].operation else {
        panic!("not a launch")
    };
    let t = &l.task_infos[0];
    assert_eq!((t.task_id.as_str(), t.agent_id.as_str()), ("t1", "m-S0"));
    let r = agora_proto::Resources::from_proto(&t.resources).expect("valid resources");
    let want =
        agora_proto::Resources::parse("cpus:0.5;mem(web):64;ports:[31000-31001];disks(data):{a,b}")
            .unwrap();
    assert_eq!(r, want);
    let cmd = t.command.as_ref().unwrap();
    assert_eq!(cmd.shell, Some(true), "shell defaults to true");
    assert_eq!(cmd.value, "echo hi");
    assert_eq!(cmd.environment.as_ref().unwrap().variables[0].name, "A");
    assert_eq!(t.kill_policy.unwrap().grace_period, Some(2.5));
    assert_eq!(t.labels[0].value, "v");
    let hc = &t.health_checks[0];
    assert_eq!(hc.r#type(), v1::health_check::Type::Http);
    assert_eq!(hc.http.as_ref().unwrap().port, Some(8080));
    assert_eq!(hc.interval_seconds, Some(5.0));
}

#[test]
fn a_docker_task_reads_its_container() {
    let (_, c) = core_call(json!({
        "type": "ACCEPT", "framework_id": {"value": "f"},
        "accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH",
            "launch": {"task_infos": [{"name": "d", "task_id": {"value": "d1"},
                "agent_id": {"value": "a"}, "resources": [],
                "command": {"shell": false, "value": "sleep", "arguments": ["sleep", "1"]},
                "container": {"type": "DOCKER", "docker": {
                    "image": "busybox", "network": "BRIDGE",
                    "port_mappings": [{"host_port": 31000, "container_port": 80, "protocol": "tcp"}],
                    "parameters": [{"key": "label", "value": "x=y"}]},
                    "volumes": [{"container_path": "/data", "host_path": "/tmp", "mode": "RO"}]}
            }]}}]}
    }));
    let call::Call::Accept(a) = c else { panic!() };
    let Some(v1::operation::Operation::Launch(l)) = &a.operations[0].operation else {
        panic!()
    };
    let t = &l.task_infos[0];
    assert_eq!(t.command.as_ref().unwrap().shell, Some(false));
    let c = t.container.as_ref().unwrap();
    assert_eq!(c.r#type(), v1::container_info::Type::Docker);
    let d = c.docker.as_ref().unwrap();
    assert_eq!(d.image, "busybox");
    assert_eq!(
        d.network(),
        v1::container_info::docker_info::Network::Bridge
    );
    assert_eq!(d.port_mappings[0].container_port, 80);
    assert_eq!(c.volumes[0].mode(), v1::volume::Mode::Ro);
}

#[test]
fn what_agora_cannot_do_is_refused_with_the_reason() {
    let launch = |task: Value| {
        json!({"type": "ACCEPT", "framework_id": {"value": "f"},
            "accept": {"offer_ids": [{"value": "o"}],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}]}})
    };
    let m = refusal(launch(json!({"name": "x", "task_id": {"value": "x"},
        "executor": {"executor_id": {"value": "e"}}})));
    assert!(
        m.contains("executors") && m.contains("task_infos[0]"),
        "{m}"
    );
    let m = refusal(launch(json!({"name": "x", "task_id": {"value": "x"},
        "command": {"value": "x", "uris": [{"value": "http://x/y.tgz"}]}})));
    assert!(m.contains("uris"), "{m}");
    let m = refusal(launch(json!({"name": "x", "task_id": {"value": "x"},
        "resources": [{"name": "cpus", "type": "SCALAR"}]})));
    assert!(m.contains("scalar"), "{m}");
    let m = refusal(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
        "accept": {"offer_ids": [], "operations": [{"type": "LAUNCH_GROUP",
            "launch_group": {}}]}}));
    assert!(
        m.contains("LAUNCH_GROUP") && m.contains("task groups"),
        "{m}"
    );
    let m = refusal(json!({"type": "ACCEPT", "framework_id": {"value": "f"},
        "accept": {"offer_ids": [], "operations": [{"type": "RESERVE"}]}}));
    assert!(m.contains("RESERVE"), "{m}");
    let m = refusal(json!({"type": "ACCEPT_INVERSE_OFFERS", "framework_id": {"value": "f"}}));
    assert!(m.contains("not supported"), "{m}");
}

#[test]
fn malformed_calls_are_refused_naming_the_problem() {
    let r = parse_call(b"{not json").unwrap_err();
    assert_eq!(r.status, 400);
    assert!(r.message.contains("Failed to parse"), "{}", r.message);
    let m = refusal(json!({"framework_id": {"value": "f"}}));
    assert!(m.contains("'type'"), "{m}");
    let m = refusal(json!({"type": "FLY", "framework_id": {"value": "f"}}));
    assert!(m.contains("Unknown call type 'FLY'"), "{m}");
    let m = refusal(json!({"type": "DECLINE", "decline": {"offer_ids": []}}));
    assert!(m.contains("'framework_id'"), "{m}");
    let m = refusal(json!({"type": "KILL", "framework_id": {"value": "f"}}));
    assert!(m.contains("'kill'"), "{m}");
    // A field of the wrong type names its path.
    let m = refusal(json!({"type": "KILL", "framework_id": {"value": "f"},
        "kill": {"task_id": {"value": 7}}}));
    assert!(m.contains("kill.task_id.value"), "{m}");
    let m = refusal(
        json!({"type": "ACKNOWLEDGE", "framework_id": {"value": "f"},
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"},
            "uuid": "not base64!"}}),
    );
    assert!(m.contains("base64"), "{m}");
}

#[test]
fn the_other_calls_become_the_cores_calls() {
    let fw = json!({"value": "f"});
    let (_, c) = core_call(json!({"type": "DECLINE", "framework_id": fw,
        "decline": {"offer_ids": [{"value": "o1"}], "filters": {"refuse_seconds": 60}}}));
    assert_eq!(
        c,
        call::Call::Decline(v1::Decline {
            offer_ids: vec!["o1".into()],
            filters: Some(v1::Filters {
                refuse_seconds: Some(60.0)
            }),
        })
    );
    let (_, c) = core_call(json!({"type": "REVIVE", "framework_id": fw}));
    assert_eq!(c, call::Call::Revive(v1::Revive { roles: vec![] }));
    let (_, c) = core_call(json!({"type": "SUPPRESS", "framework_id": fw,
        "suppress": {"roles": ["web"]}}));
    assert_eq!(
        c,
        call::Call::Suppress(v1::Suppress {
            roles: vec!["web".into()]
        })
    );
    let (_, c) = core_call(json!({"type": "KILL", "framework_id": fw,
        "kill": {"task_id": {"value": "t1"}}}));
    assert_eq!(
        c,
        call::Call::Kill(v1::Kill {
            task_id: "t1".into(),
            agent_id: String::new(),
            kill_policy: None
        })
    );
    let (_, c) = core_call(json!({"type": "SHUTDOWN", "framework_id": fw,
        "shutdown": {"executor_id": {"value": "t2"}, "agent_id": {"value": "a"}}}));
    assert_eq!(
        c,
        call::Call::Kill(v1::Kill {
            task_id: "t2".into(),
            agent_id: "a".into(),
            kill_policy: None
        })
    );
    let uuid = [7u8; 16];
    let (_, c) = core_call(json!({"type": "ACKNOWLEDGE", "framework_id": fw,
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"},
            "uuid": BASE64.encode(uuid)}}));
    assert_eq!(
        c,
        call::Call::Acknowledge(v1::Acknowledge {
            acks: vec![v1::TaskAcknowledgement {
                agent_id: "a".into(),
                task_id: "t".into(),
                uuid: uuid.to_vec()
            }]
        })
    );
    let (_, c) = core_call(json!({"type": "RECONCILE", "framework_id": fw,
        "reconcile": {"tasks": [{"task_id": {"value": "t"}}]}}));
    assert_eq!(
        c,
        call::Call::Reconcile(v1::Reconcile {
            tasks: vec![v1::reconcile::TaskRef {
                task_id: "t".into(),
                agent_id: String::new()
            }]
        })
    );
    let (_, c) = core_call(json!({"type": "TEARDOWN", "framework_id": fw}));
    assert_eq!(c, call::Call::Teardown(v1::Teardown {}));
    for kind in ["MESSAGE", "REQUEST"] {
        let c = parse(json!({"type": kind, "framework_id": fw})).unwrap();
        assert!(matches!(c, MesosCall::Ignored { .. }), "{c:?}");
        assert_eq!(c.framework_id(), Some("f"));
    }
}

#[test]
fn updates_are_one_event_each_with_agent_id_and_base64_uuid() {
    let uuid = vec![1u8, 2, 3, 250, 251, 252, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1];
    let status = v1::TaskStatus {
        task_id: "t1".into(),
        state: v1::TaskState::TaskRunning as i32,
        source: v1::StatusSource::SourceAgent as i32,
        agent_id: "m-S0".into(),
        uuid: uuid.clone(),
        timestamp: 12.5,
        healthy: Some(true),
        ..Default::default()
    };
    let master_made = v1::TaskStatus {
        task_id: "t2".into(),
        state: v1::TaskState::TaskLost as i32,
        source: v1::StatusSource::SourceMaster as i32,
        reason: v1::StatusReason::ReasonReconciliation as i32,
        message: "gone".into(),
        ..Default::default()
    };
    let ev = v1::Event {
        event: Some(event::Event::Updates(v1::Updates {
            statuses: vec![status, master_made],
        })),
    };
    let out = events_json(&ev, StreamOptions::default());
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0],
        json!({"type": "UPDATE", "update": {"status": {
            "task_id": {"value": "t1"}, "state": "TASK_RUNNING", "source": "SOURCE_AGENT",
            "agent_id": {"value": "m-S0"}, "uuid": BASE64.encode(&uuid),
            "timestamp": 12.5, "healthy": true}}})
    );
    let s = &out[1]["update"]["status"];
    assert!(s.get("uuid").is_none(), "no uuid, no acknowledgement: {s}");
    assert_eq!(s["agent_id"], json!({"value": ""}));
    assert_eq!(s["reason"], "REASON_RECONCILIATION");
    assert_eq!(s["message"], "gone");
    // The uuid decodes back to the bytes, as an ACKNOWLEDGE sends it.
    let back = BASE64.decode(out[0]["update"]["status"]["uuid"].as_str().unwrap());
    assert_eq!(back.unwrap(), uuid);
}

#[test]
fn offers_are_written_as_mesos_writes_them() {
    let offer = v1::Offer {
        id: "m-O3".into(),
        framework_id: "m-0000".into(),
        agent_id: "m-S1".into(),
        hostname: "h1".into(),
        resources: agora_proto::Resources::parse("cpus:2;ports:[31000-31009];mem(web):128")
            .unwrap()
            .to_proto(),
        attributes: agora_proto::parse_attributes("rack:r1;level:2").unwrap(),
        role: "web".into(),
        agent_http_address: "127.0.0.1:5051".into(),
    };
    let ev = v1::Event {
        event: Some(event::Event::Offers(v1::Offers {
            offers: vec![offer],
        })),
    };
    let out = events_json(&ev, StreamOptions::default());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "OFFERS");
    let o = &out[0]["offers"]["offers"][0];
    assert_eq!(o["id"], json!({"value": "m-O3"}));
    assert_eq!(o["framework_id"], json!({"value": "m-0000"}));
    assert_eq!(o["agent_id"], json!({"value": "m-S1"}));
    assert_eq!(o["hostname"], "h1");
    let res = o["resources"].as_array().unwrap();
    assert!(res.contains(&json!({"name": "cpus", "type": "SCALAR",
        "scalar": {"value": 2.0}, "role": "*"})));
    assert!(res.contains(&json!({"name": "mem", "type": "SCALAR",
        "scalar": {"value": 128.0}, "role": "web"})));
    assert!(res.contains(&json!({"name": "ports", "type": "RANGES",
        "ranges": {"range": [{"begin": 31000, "end": 31009}]}, "role": "*"})));
    let attrs = o["attributes"].as_array().unwrap();
    assert!(attrs.contains(&json!({"name": "rack", "type": "TEXT", "text": {"value": "r1"}})));
    assert!(attrs.contains(&json!({"name": "level", "type": "SCALAR", "scalar": {"value": 2.0}})));
    assert!(o.get("allocation_info").is_none());

    // MULTI_ROLE frameworks learn the role of each offer and resource.
    let out = events_json(&ev, StreamOptions { multi_role: true });
    let o = &out[0]["offers"]["offers"][0];
    assert_eq!(o["allocation_info"], json!({"role": "web"}));
    assert_eq!(o["resources"][0]["allocation_info"], json!({"role": "web"}));

    // What an offer says, a launch can use as it is.
    let back: Vec<v1::Resource> = o["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| resource(serde_json::from_value(r.clone()).unwrap()).unwrap())
        .collect();
    assert_eq!(
        agora_proto::Resources::from_proto(&back).unwrap(),
        agora_proto::Resources::parse("cpus:2;ports:[31000-31009];mem(web):128").unwrap()
    );
}

#[test]
fn the_other_events() {
    let e = |ev| events_json(&v1::Event { event: Some(ev) }, StreamOptions::default());
    let out = e(event::Event::Subscribed(v1::Subscribed {
        framework_id: "m-0001".into(),
        heartbeat_interval_seconds: 15.0,
        master_info: Some(v1::MasterInfo {
            id: "m".into(),
            hostname: "localhost".into(),
            ip: "127.0.0.1".into(),
            port: 5050,
            version: "0.1.0".into(),
        }),
    }));
    assert_eq!(out[0]["type"], "SUBSCRIBED");
    let s = &out[0]["subscribed"];
    assert_eq!(s["framework_id"], json!({"value": "m-0001"}));
    assert_eq!(s["heartbeat_interval_seconds"], 15.0);
    assert_eq!(s["master_info"]["ip"], 16777343);
    assert_eq!(s["master_info"]["address"]["ip"], "127.0.0.1");
    assert_eq!(s["master_info"]["port"], 5050);

    let out = e(event::Event::Rescind(v1::Rescind {
        offer_ids: vec!["a".into(), "b".into()],
    }));
    assert_eq!(
        out,
        [
            json!({"type": "RESCIND", "rescind": {"offer_id": {"value": "a"}}}),
            json!({"type": "RESCIND", "rescind": {"offer_id": {"value": "b"}}}),
        ]
    );
    assert_eq!(
        e(event::Event::Heartbeat(v1::Heartbeat {})),
        [json!({"type": "HEARTBEAT"})]
    );
    assert_eq!(
        e(event::Event::Error(v1::Error {
            message: "no".into()
        })),
        [json!({"type": "ERROR", "error": {"message": "no"}})]
    );
    assert_eq!(
        e(event::Event::Failure(v1::Failure {
            agent_id: "s".into()
        })),
        [json!({"type": "FAILURE", "failure": {"agent_id": {"value": "s"}}})]
    );
}

#[test]
fn records_are_length_prefixed() {
    let v = json!({"type": "HEARTBEAT", "x": "é"});
    let r = record(&v);
    let text = String::from_utf8(r).unwrap();
    let (len, body) = text.split_once('\n').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), body.len());
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), v);
}
