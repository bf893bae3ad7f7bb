//! The REST API: Marathon's v2 routes over warp.
//!
//! Reads take the state's read lock and render; changes are sent to the
//! controller (the one writer), which stores them before it answers.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use warp::Filter;
use warp::reply::Response;

use agora_framework_kit::election::Role;
use agora_framework_kit::http::{body_bytes, handle_rejection, proxy_to_leader};

use crate::command::Command;
use crate::events::{Event, EventBus};
use crate::metrics::Metrics;
use crate::path_id::PathId;
use crate::refusal::Refusal;
use crate::render::{self, Embed};
use crate::state::{AppChange, State};
use crate::store::Records;
use crate::time;
use crate::validation::{self, Context};

/// Static facts for `/v2/info`.
#[derive(Debug, Clone)]
pub struct Info {
    /// This instance's `host:port`.
    pub advertise: String,
    pub master: String,
    pub zk: Option<String>,
    pub zk_session_timeout_ms: u64,
    pub roles: Vec<String>,
    pub failover_timeout_s: f64,
    pub http_port: u16,
}

/// What every handler holds.
#[derive(Clone)]
pub struct Handle {
    pub state: Arc<RwLock<State>>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub records: Records,
    pub events: EventBus,
    pub info: Arc<Info>,
    pub ctx: Context,
    pub metrics: Arc<Metrics>,
    /// This instance's role in the election.
    pub role: watch::Receiver<Role>,
    /// True while this instance leads and has loaded its state: the
    /// leader's routes are served only then.
    pub serving: watch::Receiver<bool>,
    /// Forwards a standby's requests to the leader.
    pub proxy: reqwest::Client,
    /// Apps' JSON rendered once per version (the lists are written from it).
    pub render: Arc<render::RenderCache>,
}

/// Most bytes a request body may have.
const MAX_BODY: u64 = 8 * 1024 * 1024;

fn response() -> warp::http::response::Builder {
    warp::http::Response::builder()
}

/// A response body (warp's body type is built from bytes).
fn body_of<B: From<Bytes>>(bytes: impl Into<Bytes>) -> B {
    B::from(bytes.into())
}

pub(crate) fn json_reply(status: u16, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    response()
        .status(status)
        .header("content-type", "application/json")
        .body(body_of(bytes))
        .expect("response")
}

/// A JSON body written already.
fn json_bytes(status: u16, bytes: Vec<u8>) -> Response {
    response()
        .status(status)
        .header("content-type", "application/json")
        .body(body_of(bytes))
        .expect("response")
}

fn refusal(r: Refusal) -> Response {
    json_reply(r.status, &r.body)
}

/// Reads a boolean query flag as Marathon's clients send it (`true`,
/// `True`, `1`); anything else is a 400.
fn flag(query: &[(String, String)], name: &str) -> Result<bool, Refusal> {
    match query.iter().rev().find(|(k, _)| k == name) {
        None => Ok(false),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(Refusal::bad_request(format!(
                "query parameter {name}={other}: expected true or false"
            ))),
        },
    }
}

/// `scale` of a kill, with `wipe` read and checked beside it: Marathon
/// refuses both together. Without resident tasks (local volumes) there is
/// nothing to wipe, so `wipe=true` kills as a plain kill does (the instance
/// is replaced).
fn scale_flag(query: &[(String, String)]) -> Result<bool, Refusal> {
    let scale = flag(query, "scale")?;
    if scale && flag(query, "wipe")? {
        return Err(Refusal::bad_request(
            "You cannot use scale and wipe at the same time.",
        ));
    }
    flag(query, "wipe")?;
    Ok(scale)
}

fn values<'a>(query: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query
        .iter()
        .filter(move |(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
}

impl Handle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Refusal>>) -> Command,
    ) -> Result<T, Refusal> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| Refusal::unavailable("the services framework is stopping"))?;
        rx.await.map_err(|_| {
            Refusal::unavailable(
                "the services framework stopped leading before the change was made; try again",
            )
        })?
    }

    pub(crate) async fn ask_deploy(
        &self,
        changes: Vec<AppChange>,
        force: bool,
    ) -> Result<(String, time::Millis), Refusal> {
        self.ask(|reply| Command::Deploy {
            changes,
            force,
            reply,
        })
        .await
    }
}

/// Every route. `remote` is the peer (for event-stream attachment events).
pub fn routes(h: Handle) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    // A standby forwards what it does not answer itself to the leader.
    let forward = proxy_to_leader(
        h.role.clone(),
        h.proxy.clone(),
        h.info.advertise.clone(),
        MAX_BODY,
    );
    let with = warp::any().map(move || h.clone());
    let query = warp::query::<Vec<(String, String)>>()
        .or(warp::any().map(Vec::new))
        .unify();
    let body = body_bytes(MAX_BODY);

    let ping = warp::path!("ping").and(warp::get()).map(|| {
        response()
            .header("content-type", "text/plain")
            .body(body_of("pong"))
            .expect("response")
    });
    let info = warp::path!("v2" / "info")
        .and(warp::get())
        .and(with.clone())
        .map(|h: Handle| json_reply(200, &info_json(&h)));
    let leader = warp::path!("v2" / "leader")
        .and(warp::get())
        .and(with.clone())
        .map(|h: Handle| match &*h.role.borrow() {
            Role::Leading => json_reply(200, &json!({"leader": h.info.advertise})),
            Role::Standby { leader: Some(l) } => json_reply(200, &json!({"leader": l})),
            _ => refusal(Refusal::not_found("There is no leader")),
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with.clone())
        .map(|h: Handle| {
            let text = h.metrics.render(&h.state.read());
            response()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(body_of(text))
                .expect("response")
        });
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| json_reply(200, &crate::openapi::document()));

    // Everything below is the leader's.
    let apps = warp::path("v2")
        .and(warp::path("apps"))
        .and(warp::path::tail())
        .and(warp::method())
        .and(query)
        .and(body.clone())
        .and(warp::header::optional::<String>("x-forwarded-for"))
        .and(warp::addr::remote())
        .and(with.clone())
        .then(
            |tail: warp::path::Tail,
             method,
             q: Vec<(String, String)>,
             body: Bytes,
             fwd: Option<String>,
             remote: Option<SocketAddr>,
             h: Handle| async move {
                let client = fwd
                    .or(remote.map(|r| r.ip().to_string()))
                    .unwrap_or_default();
                match apps_route(&h, tail.as_str(), &method, &q, body, &client).await {
                    Ok(r) => r,
                    Err(r) => refusal(r),
                }
            },
        );
    let tasks = warp::path!("v2" / "tasks")
        .and(warp::get())
        .and(query)
        .and(with.clone())
        .map(|q: Vec<(String, String)>, h: Handle| {
            let wanted: BTreeSet<String> = values(&q, "status").map(|s| s.to_lowercase()).collect();
            let state = h.state.read();
            let mut out = h.render.buffer();
            out.extend_from_slice(b"{\"tasks\":[");
            let mut first = true;
            for a in state.visible_apps() {
                let shared = render::TaskShared::of(&a.current.definition);
                for i in render::tasks_of(a)
                    .filter(|i| wanted.is_empty() || wanted.contains(condition(i)))
                {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    render::write_task(&mut out, i, &shared);
                }
            }
            drop(state);
            out.extend_from_slice(b"]}");
            h.render.wrote(out.len());
            json_bytes(200, out)
        });
    let tasks_delete = warp::path!("v2" / "tasks" / "delete")
        .and(warp::post())
        .and(query)
        .and(body.clone())
        .and(with.clone())
        .then(
            |q: Vec<(String, String)>, body: Bytes, h: Handle| async move {
                match tasks_delete(&h, &q, body).await {
                    Ok(r) => r,
                    Err(r) => refusal(r),
                }
            },
        );
    let deployments = warp::path!("v2" / "deployments")
        .and(warp::get())
        .and(with.clone())
        .map(|h: Handle| {
            let state = h.state.read();
            let list: Vec<Value> = state
                .deployments
                .values()
                .map(|d| render::deployment(&state, d))
                .collect();
            json_reply(200, &list)
        });
    let deployment_delete = warp::path!("v2" / "deployments" / String)
        .and(warp::delete())
        .and(query)
        .and(with.clone())
        .then(
            |id: String, q: Vec<(String, String)>, h: Handle| async move {
                let force = match flag(&q, "force") {
                    Ok(f) => f,
                    Err(r) => return refusal(r),
                };
                match h
                    .ask(|reply| Command::CancelDeployment { id, force, reply })
                    .await
                {
                    Ok(None) => response()
                        .status(202)
                        .body(body_of(Vec::new()))
                        .expect("response"),
                    Ok(Some((id, version))) => json_reply(
                        200,
                        &json!({"deploymentId": id, "version": time::format(version)}),
                    ),
                    Err(r) => refusal(r),
                }
            },
        );
    let groups =
        warp::path("v2")
            .and(warp::path("groups"))
            .and(warp::path::tail())
            .and(warp::method())
            .and(query)
            .and(body.clone())
            .and(with.clone())
            .then(
                |tail: warp::path::Tail,
                 method,
                 q: Vec<(String, String)>,
                 body: Bytes,
                 h: Handle| async move {
                    match crate::groups::route(&h, tail.as_str(), &method, &q, body).await {
                        Ok(r) => r,
                        Err(r) => refusal(r),
                    }
                },
            );
    let queue = warp::path!("v2" / "queue")
        .and(warp::get())
        .and(query)
        .and(with.clone())
        .map(|q: Vec<(String, String)>, h: Handle| {
            let embed_offers = values(&q, "embed").any(|e| e == "lastUnusedOffers");
            json_reply(
                200,
                &crate::queue::render(&h.state.read(), embed_offers, time::now_millis()),
            )
        });
    let queue_delay = warp::path!("v2" / "queue" / ..)
        .and(warp::path::tail())
        .and(warp::delete())
        .and(with.clone())
        .then(|tail: warp::path::Tail, h: Handle| async move {
            let Some(app) = tail
                .as_str()
                .strip_suffix("/delay")
                .or_else(|| tail.as_str().strip_suffix("delay"))
            else {
                return refusal(Refusal::not_found("expected /v2/queue/{app id}/delay"));
            };
            let app = match PathId::parse(app) {
                Ok(p) => p.to_string(),
                Err(e) => return refusal(Refusal::invalid_at("/id", e)),
            };
            match h.ask(|reply| Command::ResetDelay { app, reply }).await {
                Ok(()) => response()
                    .status(204)
                    .body(body_of(Vec::new()))
                    .expect("response"),
                Err(r) => refusal(r),
            }
        });
    let events = warp::path!("v2" / "events")
        .and(warp::get())
        .and(query)
        .and(warp::addr::remote())
        .and(with.clone())
        .map(
            |q: Vec<(String, String)>, remote: Option<SocketAddr>, h: Handle| {
                let types: BTreeSet<String> =
                    values(&q, "event_type").map(str::to_string).collect();
                event_stream(&h, types, remote)
            },
        );

    let standby_safe = ping
        .or(info)
        .unify()
        .or(leader)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify();
    let leader_only = apps
        .or(tasks_delete)
        .unify()
        .or(tasks)
        .unify()
        .or(deployments)
        .unify()
        .or(deployment_delete)
        .unify()
        .or(groups)
        .unify()
        .or(queue_delay)
        .unify()
        .or(queue)
        .unify()
        .or(events)
        .unify();
    // The leader serves once it has loaded its state.
    let loading = with.clone().and_then(|h: Handle| async move {
        if *h.serving.borrow() {
            Err(warp::reject::not_found())
        } else {
            Ok::<_, warp::Rejection>(refusal(Refusal::unavailable(
                "this instance has just been elected and is loading its state; retry shortly",
            )))
        }
    });
    standby_safe
        .or(forward)
        .unify()
        .or(loading)
        .unify()
        .or(leader_only)
        .unify()
        .recover(handle_rejection)
        .unify()
        .map(|r: Response| r)
}

/// `running` / `staging` as Marathon's `status` filter names them.
fn condition(i: &crate::instance::Instance) -> &'static str {
    if i.is_launching() {
        "staging"
    } else {
        "running"
    }
}

fn info_json(h: &Handle) -> Value {
    let state = h.state.read();
    let (elected, leader) = match &*h.role.borrow() {
        Role::Leading => (true, Some(h.info.advertise.clone())),
        Role::Standby { leader } => (false, leader.clone()),
        Role::Starting => (false, None),
    };
    let i = &h.info;
    json!({
        "name": "agora-services",
        "version": agora_proto::VERSION,
        "buildref": "",
        "elected": elected,
        "leader": leader,
        "frameworkId": state.framework_id,
        "marathon_config": {
            "master": i.master,
            "failover_timeout": i.failover_timeout_s as i64,
            "framework_name": "agora-services",
            "ha": i.zk.is_some(),
            "checkpoint": true,
            "local_port_min": *crate::state::SERVICE_PORTS.start(),
            "local_port_max": *crate::state::SERVICE_PORTS.end(),
            "executor": "//cmd",
            "hostname": i.advertise.rsplit_once(':').map(|(h, _)| h).unwrap_or(&i.advertise),
            "webui_url": format!("http://{}", i.advertise),
            "mesos_role": i.roles.first().cloned().unwrap_or_else(|| "*".into()),
            "task_launch_timeout": 300000,
            "reconciliation_initial_delay": 0,
            "reconciliation_interval": 300000,
            "mesos_user": Value::Null,
            "leader_proxy_connection_timeout_ms": 5000,
            "leader_proxy_read_timeout_ms": 10000,
            "mesos_leader_ui_url": Value::Null,
            "features": [],
        },
        "zookeeper_config": {
            "zk": i.zk,
            "zk_timeout": i.zk_session_timeout_ms,
            "zk_connection_timeout": i.zk_session_timeout_ms,
            "zk_session_timeout": i.zk_session_timeout_ms,
            "zk_max_versions": crate::store::MAX_VERSIONS,
        },
        "http_config": { "http_port": i.http_port, "https_port": 0 },
    })
}

/// Splits `/v2/apps/<tail>` into the app id and what is asked of it.
enum AppRoute {
    List,
    App(String),
    Restart(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
}

fn parse_app_route(tail: &str, state: &State) -> AppRoute {
    let segs: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    if segs.is_empty() {
        return AppRoute::List;
    }
    let whole = format!("/{}", segs.join("/"));
    if state.app(&whole).is_some() {
        return AppRoute::App(whole);
    }
    let id = |n: usize| format!("/{}", segs[..n].join("/"));
    let n = segs.len();
    match (segs.get(n.wrapping_sub(2)).copied(), segs[n - 1]) {
        (_, "restart") if n > 1 => AppRoute::Restart(id(n - 1)),
        (_, "tasks") if n > 1 => AppRoute::Tasks(id(n - 1)),
        (_, "versions") if n > 1 => AppRoute::Versions(id(n - 1)),
        (Some("tasks"), task) if n > 2 => AppRoute::Task(id(n - 2), task.to_string()),
        (Some("versions"), v) if n > 2 => AppRoute::Version(id(n - 2), v.to_string()),
        _ => AppRoute::App(whole),
    }
}

fn normalise_id(id: &str) -> Result<String, Refusal> {
    PathId::parse(id)
        .map(|p| p.to_string())
        .map_err(|e| Refusal::invalid_at("/id", e))
}

fn deployment_result(id: String, version: time::Millis) -> Value {
    json!({"deploymentId": id, "version": time::format(version)})
}

async fn apps_route(
    h: &Handle,
    tail: &str,
    method: &warp::http::Method,
    q: &[(String, String)],
    body: Bytes,
    client: &str,
) -> Result<Response, Refusal> {
    use warp::http::Method;
    let route = parse_app_route(tail, &h.state.read());
    let force = flag(q, "force")?;
    match (route, method) {
        (AppRoute::List, &Method::GET) => {
            let embed = Embed::parse(values(q, "embed"));
            let cmd = q.iter().find(|(k, _)| k == "cmd").map(|(_, v)| v.as_str());
            let id_filter = q.iter().find(|(k, _)| k == "id").map(|(_, v)| v.as_str());
            let label = q
                .iter()
                .find(|(k, _)| k == "label")
                .map(|(_, v)| v.as_str());
            let state = h.state.read();
            let apps = state
                .visible_apps()
                .filter(|a| {
                    cmd.is_none_or(|c| {
                        a.current
                            .definition
                            .cmd
                            .as_deref()
                            .is_some_and(|x| x.contains(c))
                    })
                })
                .filter(|a| id_filter.is_none_or(|f| a.id().contains(f)))
                .filter(|a| label.is_none_or(|l| label_matches(&a.current.definition.labels, l)));
            let mut out = h.render.buffer();
            render::write_apps(&mut out, &h.render, &state, apps, embed);
            drop(state);
            h.render.wrote(out.len());
            Ok(json_bytes(200, out))
        }
        (AppRoute::List, &Method::POST) => {
            let value = validation::parse_json(&body)?;
            let def = validation::parse_app(value, &PathId::root(), &h.ctx)?;
            let id = def.id.clone();
            let (deployment, _) = h.ask_deploy(vec![AppChange::Create(def)], force).await?;
            let state = h.state.read();
            let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
            let rendered = serde_json::to_value(render::app(&state, app, Embed::default()))
                .unwrap_or(Value::Null);
            h.events
                .publish(Event::api_post(client, "/v2/apps", rendered.clone()));
            let bytes = serde_json::to_vec(&rendered).unwrap_or_default();
            Ok(response()
                .status(201)
                .header("content-type", "application/json")
                .header("location", format!("/v2/apps{id}"))
                .header("marathon-deployment-id", deployment)
                .body(body_of(bytes))
                .expect("response"))
        }
        (AppRoute::List, &Method::PUT) => {
            let value = validation::parse_json(&body)?;
            let Value::Array(items) = value else {
                return Err(Refusal::invalid_at(
                    "/",
                    "expected a JSON array of app updates",
                ));
            };
            let mut changes = Vec::new();
            for (n, item) in items.into_iter().enumerate() {
                let id = item.get("id").and_then(Value::as_str).ok_or_else(|| {
                    Refusal::invalid_at(&format!("/{n}/id"), "each update needs an id")
                })?;
                let id = normalise_id(id)?;
                changes.push(AppChange::Patch { id, body: item });
            }
            let (d, v) = h.ask_deploy(changes, force).await?;
            Ok(json_reply(200, &deployment_result(d, v)))
        }
        (AppRoute::App(id), &Method::GET) => {
            let id = normalise_id(&id)?;
            let state = h.state.read();
            let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
            let mut out = Vec::with_capacity(4096 + 512 * app.instances.len());
            out.extend_from_slice(b"{\"app\":");
            render::write_app(&mut out, &h.render, &state, app, Embed::all());
            out.push(b'}');
            Ok(json_bytes(200, out))
        }
        (AppRoute::App(id), &Method::PUT) => {
            let id = normalise_id(&id)?;
            let value = validation::parse_json(&body)?;
            let existed = h.state.read().app(&id).is_some();
            let change = match value.get("version").and_then(Value::as_str) {
                Some(v) if value.as_object().is_some_and(|m| m.len() == 1) => {
                    let version = time::parse(v)
                        .ok_or_else(|| Refusal::invalid_at("/version", "not a timestamp"))?;
                    if !existed {
                        return Err(Refusal::app_not_found(&id));
                    }
                    let to = h
                        .records
                        .version(&id, version)
                        .await
                        .map_err(|e| Refusal::unavailable(e.to_string()))?
                        .ok_or_else(|| {
                            Refusal::not_found(format!("App '{id}' does not exist in version {v}"))
                        })?;
                    AppChange::Rollback {
                        id: id.clone(),
                        to: Box::new(to),
                    }
                }
                _ => AppChange::Patch {
                    id: id.clone(),
                    body: value.clone(),
                },
            };
            let (d, v) = h.ask_deploy(vec![change], force).await?;
            h.events
                .publish(Event::api_post(client, &format!("/v2/apps{id}"), value));
            Ok(json_reply(
                if existed { 200 } else { 201 },
                &deployment_result(d, v),
            ))
        }
        (AppRoute::App(id), &Method::DELETE) => {
            let id = normalise_id(&id)?;
            let (d, v) = h.ask_deploy(vec![AppChange::Remove(id)], force).await?;
            Ok(json_reply(200, &deployment_result(d, v)))
        }
        (AppRoute::Restart(id), &Method::POST) => {
            let id = normalise_id(&id)?;
            let (d, v) = h.ask_deploy(vec![AppChange::Restart(id)], force).await?;
            Ok(json_reply(200, &deployment_result(d, v)))
        }
        (AppRoute::Tasks(id), &Method::GET) => {
            let id = normalise_id(&id)?;
            let state = h.state.read();
            let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
            let shared = render::TaskShared::of(&app.current.definition);
            let mut out = Vec::with_capacity(64 + 512 * app.instances.len());
            out.extend_from_slice(b"{\"tasks\":[");
            for (k, i) in render::tasks_of(app).enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                render::write_task(&mut out, i, &shared);
            }
            out.extend_from_slice(b"]}");
            Ok(json_bytes(200, out))
        }
        (AppRoute::Tasks(id), &Method::DELETE) => {
            let id = normalise_id(&id)?;
            let host = q.iter().find(|(k, _)| k == "host").map(|(_, v)| v.clone());
            let ids: Vec<String> = {
                let state = h.state.read();
                let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
                render::tasks_of(app)
                    .filter(|i| host.as_ref().is_none_or(|h| &i.host == h))
                    .map(|i| i.task_id.clone())
                    .collect()
            };
            kill(h, &id, ids, scale_flag(q)?, force, false).await
        }
        (AppRoute::Task(id, task), &Method::GET) => {
            let id = normalise_id(&id)?;
            let state = h.state.read();
            let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
            let i = app
                .instances
                .get(&task)
                .filter(|i| i.is_active())
                .ok_or_else(|| Refusal::not_found(format!("Task '{task}' does not exist")))?;
            Ok(json_reply(
                200,
                &json!({ "task": render::task(i, &app.current.definition) }),
            ))
        }
        (AppRoute::Task(id, task), &Method::DELETE) => {
            let id = normalise_id(&id)?;
            {
                let state = h.state.read();
                let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
                if !app.instances.get(&task).is_some_and(|i| i.is_active()) {
                    return Err(Refusal::not_found(format!("Task '{task}' does not exist")));
                }
            }
            kill(h, &id, vec![task], scale_flag(q)?, force, true).await
        }
        (AppRoute::Versions(id), &Method::GET) => {
            let id = normalise_id(&id)?;
            let state = h.state.read();
            let app = state.app(&id).ok_or_else(|| Refusal::app_not_found(&id))?;
            let versions: Vec<String> = app
                .versions
                .iter()
                .rev()
                .map(|v| time::format(*v))
                .collect();
            Ok(json_reply(200, &json!({ "versions": versions })))
        }
        (AppRoute::Version(id, v), &Method::GET) => {
            let id = normalise_id(&id)?;
            if h.state.read().app(&id).is_none() {
                return Err(Refusal::app_not_found(&id));
            }
            let version = time::parse(&v)
                .ok_or_else(|| Refusal::not_found(format!("'{v}' is not a version")))?;
            let stored = h
                .records
                .version(&id, version)
                .await
                .map_err(|e| Refusal::unavailable(e.to_string()))?
                .ok_or_else(|| {
                    Refusal::not_found(format!("App '{id}' does not exist in version {v}"))
                })?;
            Ok(json_reply(200, &render::app_version(&stored)))
        }
        _ => Err(Refusal::new(
            405,
            format!("{method} is not allowed on /v2/apps{tail}"),
        )),
    }
}

/// `label=key==value`, `key!=value` or `key` (exists).
fn label_matches(labels: &std::collections::BTreeMap<String, String>, selector: &str) -> bool {
    if let Some((k, v)) = selector.split_once("==") {
        labels.get(k.trim()).is_some_and(|x| x == v.trim())
    } else if let Some((k, v)) = selector.split_once("!=") {
        labels.get(k.trim()).is_none_or(|x| x != v.trim())
    } else {
        labels.contains_key(selector.trim())
    }
}

async fn kill(
    h: &Handle,
    app: &str,
    tasks: Vec<String>,
    scale: bool,
    force: bool,
    single: bool,
) -> Result<Response, Refusal> {
    if scale {
        let (d, v) = h
            .ask_deploy(
                vec![AppChange::KillAndScale {
                    id: app.to_string(),
                    tasks,
                }],
                force,
            )
            .await?;
        return Ok(json_reply(200, &deployment_result(d, v)));
    }
    let targets: Vec<(String, String)> =
        tasks.iter().map(|t| (app.to_string(), t.clone())).collect();
    let killed = h
        .ask(|reply| Command::KillTasks {
            tasks: targets,
            reply,
        })
        .await?;
    let state = h.state.read();
    let rendered: Vec<_> = state
        .apps
        .get(app)
        .map(|a| {
            killed
                .iter()
                .filter_map(|(_, t)| a.instances.get(t))
                .map(|i| render::task(i, &a.current.definition))
                .collect()
        })
        .unwrap_or_default();
    if single {
        match rendered.into_iter().next() {
            Some(t) => Ok(json_reply(200, &json!({ "task": t }))),
            None => Err(Refusal::not_found(
                "the task ended before it could be killed",
            )),
        }
    } else {
        Ok(json_reply(200, &json!({ "tasks": rendered })))
    }
}

async fn tasks_delete(
    h: &Handle,
    q: &[(String, String)],
    body: Bytes,
) -> Result<Response, Refusal> {
    let value = validation::parse_json(&body)?;
    let ids: Vec<String> = match value.get("ids") {
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(n, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Refusal::invalid_at(&format!("/ids/{n}"), "a task id is a string")
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(Refusal::invalid_at(
                "/ids",
                "expected {\"ids\": [task ids]}",
            ));
        }
    };
    let scale = scale_flag(q)?;
    let force = flag(q, "force")?;
    // Group the ids by app; unknown ids are an error, as in Marathon.
    let mut by_app: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    {
        let state = h.state.read();
        for id in &ids {
            let app = state
                .visible_apps()
                .find(|a| a.instances.get(id).is_some_and(|i| i.is_active()))
                .ok_or_else(|| Refusal::not_found(format!("Task '{id}' does not exist")))?;
            by_app
                .entry(app.id().to_string())
                .or_default()
                .push(id.clone());
        }
    }
    if scale {
        let changes = by_app
            .into_iter()
            .map(|(id, tasks)| AppChange::KillAndScale { id, tasks })
            .collect();
        let (d, v) = h.ask_deploy(changes, force).await?;
        return Ok(json_reply(200, &deployment_result(d, v)));
    }
    let targets = by_app
        .into_iter()
        .flat_map(|(a, ts)| ts.into_iter().map(move |t| (a.clone(), t)))
        .collect();
    h.ask(|reply| Command::KillTasks {
        tasks: targets,
        reply,
    })
    .await?;
    Ok(json_reply(200, &json!({})))
}

/// `/v2/events`: Server-Sent Events (a keep-alive comment every 15 s),
/// `event_stream_attached` first.
fn event_stream(h: &Handle, types: BTreeSet<String>, remote: Option<SocketAddr>) -> Response {
    let remote = remote.map(|r| r.ip().to_string()).unwrap_or_default();
    // The others hear of it; this stream gets it first.
    h.events.publish(Event::stream_attached(&remote));
    h.events
        .reply(Event::stream_attached(&remote), move |kind| {
            types.is_empty() || types.contains(kind)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_like_marathons_clients_send_them() {
        let q = vec![
            ("force".to_string(), "False".to_string()),
            ("scale".to_string(), "True".to_string()),
        ];
        assert!(!flag(&q, "force").unwrap());
        assert!(flag(&q, "scale").unwrap());
        assert!(!flag(&q, "wipe").unwrap());
        assert!(scale_flag(&q).unwrap());
        let both = vec![
            ("scale".to_string(), "true".to_string()),
            ("wipe".to_string(), "true".to_string()),
        ];
        assert_eq!(scale_flag(&both).unwrap_err().status, 400);
        let wipe = vec![("wipe".to_string(), "1".to_string())];
        assert!(!scale_flag(&wipe).unwrap());
        let bad = vec![("wipe".to_string(), "perhaps".to_string())];
        assert_eq!(scale_flag(&bad).unwrap_err().status, 400);
        assert_eq!(
            flag(&[("force".into(), "maybe".into())], "force")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn app_routes_split_ids_and_actions() {
        let s = State::default();
        assert!(matches!(parse_app_route("", &s), AppRoute::List));
        assert!(matches!(parse_app_route("/web", &s), AppRoute::App(id) if id == "/web"));
        assert!(
            matches!(parse_app_route("/team/web/restart", &s), AppRoute::Restart(id) if id == "/team/web")
        );
        assert!(
            matches!(parse_app_route("team/web/tasks/t1", &s), AppRoute::Task(id, t) if id == "/team/web" && t == "t1")
        );
        assert!(
            matches!(parse_app_route("/web/versions", &s), AppRoute::Versions(id) if id == "/web")
        );
        assert!(
            matches!(parse_app_route("/web/versions/2020-01-01T00:00:00.000Z", &s), AppRoute::Version(id, _) if id == "/web")
        );
    }

    #[test]
    fn labels_select() {
        let labels = std::collections::BTreeMap::from([("team".to_string(), "web".to_string())]);
        assert!(label_matches(&labels, "team==web"));
        assert!(!label_matches(&labels, "team==db"));
        assert!(label_matches(&labels, "team!=db"));
        assert!(label_matches(&labels, "team"));
        assert!(!label_matches(&labels, "owner"));
    }
}
