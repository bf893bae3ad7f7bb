//! Marathon's event stream (`/v2/events`): what happened, as
//! `{"eventType": ..., "timestamp": ..., ...}` objects. Only event types the
//! Python `marathon` client knows are sent (its stream stops at any other).

use serde_json::{Value, json};

use crate::deployment::Deployment;
use crate::instance::Instance;
use crate::render;
use crate::time;

/// One event: its type (the SSE `event:` line) and its JSON (the `data:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub data: Value,
}

impl Event {
    fn new(kind: &'static str, mut fields: Value) -> Event {
        if let Value::Object(m) = &mut fields {
            m.insert("eventType".into(), json!(kind));
            m.insert("timestamp".into(), json!(time::format(time::now_millis())));
        }
        Event { kind, data: fields }
    }

    /// An app was created or changed over the API.
    pub fn api_post(client_ip: &str, uri: &str, app: Value) -> Event {
        Event::new(
            "api_post_event",
            json!({"clientIp": client_ip, "uri": uri, "appDefinition": app}),
        )
    }

    /// A task changed state.
    pub fn status_update(i: &Instance, message: &str) -> Event {
        Event::new(
            "status_update_event",
            json!({
                "slaveId": i.agent_id,
                "taskId": i.task_id,
                "taskStatus": i.state.as_str_name(),
                "message": message,
                "appId": i.app_id,
                "host": i.host,
                "ipAddresses": [],
                "ports": i.ports,
                "version": time::format(i.version),
            }),
        )
    }

    /// An instance's condition changed (Marathon's newer event).
    pub fn instance_changed(i: &Instance) -> Event {
        let condition = match i.state.as_str_name().strip_prefix("TASK_") {
            Some(s) => {
                let mut c = s.to_lowercase();
                if let Some(first) = c.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                c
            }
            None => i.state.as_str_name().to_string(),
        };
        Event::new(
            "instance_changed_event",
            json!({
                "instanceId": i.task_id,
                "slaveId": i.agent_id,
                "condition": condition,
                "host": i.host,
                "runSpecId": i.app_id,
                "runSpecVersion": time::format(i.version),
            }),
        )
    }

    /// A task's health checks' verdict changed.
    pub fn health_changed(i: &Instance, alive: bool) -> Event {
        Event::new(
            "health_status_changed_event",
            json!({
                "appId": i.app_id,
                "taskId": i.task_id,
                "instanceId": i.task_id,
                "version": time::format(i.version),
                "alive": alive,
            }),
        )
    }

    pub fn deployment_info(d: &Deployment) -> Event {
        Event::new(
            "deployment_info",
            json!({"plan": render::plan_json(d), "currentStep": step_json(d)}),
        )
    }

    pub fn deployment_step_success(d: &Deployment) -> Event {
        Event::new(
            "deployment_step_success",
            json!({"plan": render::plan_json(d), "currentStep": step_json(d)}),
        )
    }

    pub fn deployment_success(d: &Deployment) -> Event {
        Event::new(
            "deployment_success",
            json!({"id": d.id, "plan": render::plan_json(d)}),
        )
    }

    pub fn deployment_failed(d: &Deployment) -> Event {
        Event::new(
            "deployment_failed",
            json!({"id": d.id, "plan": render::plan_json(d)}),
        )
    }

    pub fn group_change_success(group: &str, version: time::Millis) -> Event {
        Event::new(
            "group_change_success",
            json!({"groupId": group, "version": time::format(version)}),
        )
    }

    pub fn app_terminated(app: &str) -> Event {
        Event::new("app_terminated_event", json!({"appId": app}))
    }

    pub fn stream_attached(remote: &str) -> Event {
        Event::new("event_stream_attached", json!({"remoteAddress": remote}))
    }

    pub fn stream_detached(remote: &str) -> Event {
        Event::new("event_stream_detached", json!({"remoteAddress": remote}))
    }
}

fn step_json(d: &Deployment) -> Value {
    json!({
        "actions": d.current_actions().iter().map(|a| json!({"action": a.kind.name(), "app": a.app})).collect::<Vec<_>>()
    })
}

/// Fans events out to every `/v2/events` subscriber (the framework kit's
/// bus: a subscriber that cannot keep up is told so and its stream ends,
/// rather than slowing the framework down).
#[derive(Clone)]
pub struct EventBus {
    bus: agora_framework_kit::http::EventBus<Value>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus {
            bus: agora_framework_kit::http::EventBus::new(4096),
        }
    }

    pub fn publish(&self, event: Event) {
        self.bus.publish(event.kind, &event.data);
    }

    /// Whether anyone listens (to skip building events nobody reads).
    pub fn has_subscribers(&self) -> bool {
        self.bus.subscribers() > 0
    }

    /// A new `/v2/events` stream: `first` to this subscriber only, then
    /// every event whose type `wanted` accepts.
    pub fn reply(
        &self,
        first: Event,
        wanted: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> warp::reply::Response {
        use warp::Reply;
        self.bus
            .reply_filtered(vec![(first.kind.to_string(), first.data)], wanted)
            .into_response()
    }
}
