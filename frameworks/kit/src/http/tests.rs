use super::*;
use http_body_util::BodyExt;

fn routes(
    role: watch::Receiver<Role>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let ping = warp::path!("ping").map(|| "pong".into_response());
    let apps = warp::path!("v2" / "apps")
        .and(warp::post())
        .and(json_body::<serde_json::Value>())
        .map(|v: serde_json::Value| warp::reply::json(&v).into_response());
    let list = warp::path!("v2" / "apps")
        .and(warp::get())
        .and(warp::query::<std::collections::HashMap<String, u32>>())
        .map(|_| "apps".into_response());
    ping.or(leader_only(role).and(apps.or(list).unify()))
        .unify()
        .recover(handle_rejection)
        .unify()
}

async fn body(r: Response) -> (StatusCode, Option<String>, serde_json::Value) {
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, location, v)
}

#[tokio::test]
async fn standbys_redirect_to_the_leader_and_the_leader_serves() {
    let (tx, rx) = watch::channel(Role::Starting);
    let api = routes(rx);
    let get = |path: &str| warp::test::request().method("GET").path(path).reply(&api);

    // Before the election answers: 503, but /ping is served.
    let (status, _, v) = body(get("/v2/apps").await.into_response()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["message"].as_str().unwrap().contains("no instance leads"));
    assert_eq!(get("/ping").await.body(), "pong");

    tx.send_replace(Role::Standby {
        leader: Some("10.0.0.2:8080".into()),
    });
    let r = warp::test::request()
        .method("GET")
        .path("/v2/apps?embed=apps.tasks")
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        "http://10.0.0.2:8080/v2/apps?embed=apps.tasks"
    );
    assert!(
        std::str::from_utf8(r.body())
            .unwrap()
            .contains("the leader is at 10.0.0.2:8080")
    );
    // Even an unknown path goes to the leader, which knows what to say.
    assert_eq!(get("/nope").await.status(), StatusCode::TEMPORARY_REDIRECT);

    tx.send_replace(Role::Leading);
    let r = get("/v2/apps").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.body(), "apps");
    assert_eq!(get("/nope").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_json_message() {
    let (_tx, rx) = watch::channel(Role::Leading);
    let api = routes(rx);
    let post = |body: &'static [u8]| {
        warp::test::request()
            .method("POST")
            .path("/v2/apps")
            .header("content-type", "application/json")
            .body(body)
            .reply(&api)
    };
    let r = post(b"{\"id\": 1}").await;
    assert_eq!(r.status(), StatusCode::OK);

    for (bad, status, says) in [
        (
            &b"{not json"[..],
            StatusCode::BAD_REQUEST,
            "invalid JSON body",
        ),
        (&b""[..], StatusCode::BAD_REQUEST, "invalid JSON body"),
    ] {
        let (got, _, v) = body(post(bad).await.into_response()).await;
        assert_eq!(got, status, "{v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    let big = vec![b' '; (MAX_JSON_BODY + 1) as usize];
    let r = warp::test::request()
        .method("POST")
        .path("/v2/apps")
        .body(big)
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = warp::test::request()
        .method("GET")
        .path("/v2/apps?count=-1")
        .reply(&api)
        .await;
    let (status, _, v) = body(r.into_response()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("invalid query"),
        "{v}"
    );

    let r = warp::test::request()
        .method("DELETE")
        .path("/v2/apps")
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = warp::test::request().path("/v2/other").reply(&api).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

async fn sse_text(reply: impl Reply) -> String {
    let r = reply.into_response();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[derive(Serialize)]
struct Ev {
    #[serde(rename = "eventType")]
    event_type: String,
    n: u32,
}

#[tokio::test]
async fn the_event_bus_streams_server_sent_events() {
    let bus: EventBus<Ev> = EventBus::new(16);
    assert_eq!(
        bus.publish(
            "lost",
            &Ev {
                event_type: "lost".into(),
                n: 0
            }
        ),
        0
    );
    let reply = bus.reply_with(vec![(
        "event_stream_attached".into(),
        Ev {
            event_type: "event_stream_attached".into(),
            n: 0,
        },
    )]);
    assert_eq!(bus.subscribers(), 1);
    for n in 1..=2 {
        assert_eq!(
            bus.publish(
                "status_update_event",
                &Ev {
                    event_type: "status_update_event".into(),
                    n
                }
            ),
            1
        );
    }
    // The stream ends when the bus goes away.
    drop(bus);
    let text = sse_text(reply).await;
    assert_eq!(
        text,
        "event:event_stream_attached\ndata:{\"eventType\":\"event_stream_attached\",\"n\":0}\n\n\
         event:status_update_event\ndata:{\"eventType\":\"status_update_event\",\"n\":1}\n\n\
         event:status_update_event\ndata:{\"eventType\":\"status_update_event\",\"n\":2}\n\n"
    );
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_dropped_not_waited_for() {
    let bus: EventBus<u32> = EventBus::new(2);
    let slow = bus.reply();
    // Publishing never waits for the slow stream.
    for n in 0..10 {
        assert_eq!(bus.publish("n", &n), 1);
    }
    let text = sse_text(slow).await;
    assert!(
        text.starts_with(":this stream fell 8 events behind and ends; reconnect"),
        "{text}"
    );
    assert!(!text.contains("data:"), "{text}");
    // Later subscribers are unaffected.
    let fresh = bus.reply();
    bus.publish("n", &42);
    drop(bus);
    assert_eq!(sse_text(fresh).await, "event:n\ndata:42\n\n");
}

/// A leader on a real socket: echoes the method, path, query, a header and
/// the body; `/events` streams two chunks.
async fn echo_leader() -> std::net::SocketAddr {
    let echo = warp::path!("v2" / "apps")
        .and(warp::method())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("x-client"))
        .and(warp::header::optional::<String>(FORWARDED_BY))
        .and(warp::body::bytes())
        .map(
            |m: warp::http::Method,
             q: String,
             client: Option<String>,
             via: Option<String>,
             body: bytes::Bytes| {
                let reply = warp::reply::json(&serde_json::json!({
                    "method": m.as_str(), "query": q, "client": client, "via": via,
                    "body": String::from_utf8_lossy(&body),
                }));
                warp::reply::with_header(
                    warp::reply::with_status(reply, StatusCode::CREATED),
                    "location",
                    "/v2/apps/web",
                )
                .into_response()
            },
        );
    let events = warp::path!("events").map(|| {
        let chunks = futures::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from("event: a\n\n")),
            Ok(bytes::Bytes::from("event: b\n\n")),
        ]);
        warp::reply::stream(chunks).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(echo.or(events)).incoming(listener).run());
    addr
}

#[tokio::test]
async fn standbys_forward_to_the_leader() {
    let leader = echo_leader().await;
    let (tx, rx) = watch::channel(Role::Standby {
        leader: Some(leader.to_string()),
    });
    let local = warp::path!("v2" / "apps").map(|| "served here".into_response());
    let api = warp::path!("ping")
        .map(|| "pong".into_response())
        .or(proxy_to_leader(
            rx,
            reqwest::Client::new(),
            "10.0.0.9:8080".into(),
            1024,
        ))
        .unify()
        .or(local)
        .unify()
        .recover(handle_rejection)
        .unify();

    // Forwarded: method, query, headers and body there; status and headers back.
    let r = warp::test::request()
        .method("POST")
        .path("/v2/apps?force=true")
        .header("x-client", "cli")
        .header("content-length", "7")
        .body("{\"a\":1}")
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], "/v2/apps/web");
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["query"], "force=true");
    assert_eq!(v["client"], "cli");
    assert_eq!(v["via"], "10.0.0.9:8080");
    assert_eq!(v["body"], "{\"a\":1}");
    // A GET without a body, and a streamed answer.
    let r = warp::test::request()
        .method("GET")
        .path("/v2/apps")
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = warp::test::request().path("/events").reply(&api).await;
    assert_eq!(r.body(), "event: a\n\nevent: b\n\n");
    // What a standby answers itself.
    assert_eq!(
        warp::test::request().path("/ping").reply(&api).await.body(),
        "pong"
    );
    // Too large a body.
    let r = warp::test::request()
        .method("POST")
        .path("/v2/apps")
        .header("content-length", "4096")
        .body(vec![b'x'; 4096])
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Never forwarded twice.
    let r = warp::test::request()
        .path("/v2/apps")
        .header(FORWARDED_BY, "10.0.0.8:8080")
        .reply(&api)
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Nobody leads: 503.
    tx.send_replace(Role::Standby { leader: None });
    let r = warp::test::request().path("/v2/apps").reply(&api).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The leader serves itself.
    tx.send_replace(Role::Leading);
    let r = warp::test::request().path("/v2/apps").reply(&api).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.body(), "served here");
}

#[tokio::test]
async fn event_streams_can_be_filtered_by_kind() {
    let bus: EventBus<serde_json::Value> = EventBus::new(16);
    let reply = bus
        .reply_filtered(
            vec![
                ("attached".into(), serde_json::json!({"n": 0})),
                ("other".into(), serde_json::json!({"n": -1})),
            ],
            |kind| kind != "other",
        )
        .into_response();
    bus.publish("other", &serde_json::json!({"n": 1}));
    bus.publish("wanted", &serde_json::json!({"n": 2}));
    let mut body = reply.into_body();
    let mut text = String::new();
    while !text.contains("wanted") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("event:attached"), "{text}");
    assert!(!text.contains("other"), "{text}");
    assert!(text.contains("{\"n\":2}"), "{text}");
}
