//! `/v2/groups`: apps by the groups their ids form (`/team/web` lies in
//! `/team`). Groups are implied by app ids: a group exists while an app
//! lies in it.

use bytes::Bytes;
use serde_json::{Value, json};
use warp::reply::Response;

use crate::api::{Handle, json_reply};
use crate::path_id::PathId;
use crate::refusal::Refusal;
use crate::render::{self, Embed};
use crate::state::AppChange;
use crate::time;
use crate::validation::{self, Rejection, Violation};

/// Parses the apps of a group body (`apps`, and `groups` recursively),
/// ids relative to their group, with paths such as `/groups/0/apps/1/cpus`.
fn collect_apps(
    h: &Handle,
    body: &Value,
    group: &PathId,
    path: &str,
    out: &mut Vec<crate::app::AppDefinition>,
) -> Result<(), Refusal> {
    let Some(obj) = body.as_object() else {
        return Err(Refusal::invalid_at(
            if path.is_empty() { "/" } else { path },
            "expected a JSON object",
        ));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "id" | "apps"
                | "groups"
                | "dependencies"
                | "version"
                | "scaleBy"
                | "enforceRole"
                | "pods"
        ) {
            return Err(Refusal::invalid_at(
                &format!("{path}/{key}"),
                format!("unknown field `{key}`"),
            ));
        }
    }
    let here = match obj.get("id").and_then(Value::as_str) {
        Some(id) if !path.is_empty() => PathId::parse_in(id, group)
            .map_err(|e| Refusal::invalid_at(&format!("{path}/id"), e))?,
        _ => group.clone(),
    };
    if let Some(apps) = obj.get("apps") {
        let list = apps
            .as_array()
            .ok_or_else(|| Refusal::invalid_at(&format!("{path}/apps"), "expected an array"))?;
        for (i, app) in list.iter().enumerate() {
            let at = format!("{path}/apps/{i}");
            match validation::parse_app(app.clone(), &here, &h.ctx) {
                Ok(def) => out.push(def),
                Err(Rejection::Invalid(v)) => {
                    return Err(Refusal::invalid(
                        v.into_iter()
                            .map(|v| Violation {
                                path: if v.path == "/" {
                                    at.clone()
                                } else {
                                    format!("{at}{}", v.path)
                                },
                                errors: v.errors,
                            })
                            .collect(),
                    ));
                }
                Err(r) => return Err(r.into()),
            }
        }
    }
    if let Some(groups) = obj.get("groups") {
        let list = groups
            .as_array()
            .ok_or_else(|| Refusal::invalid_at(&format!("{path}/groups"), "expected an array"))?;
        for (i, g) in list.iter().enumerate() {
            let at = format!("{path}/groups/{i}");
            if g.get("id").and_then(Value::as_str).is_none() {
                return Err(Refusal::invalid_at(
                    &format!("{at}/id"),
                    "a group needs an id",
                ));
            }
            collect_apps(h, g, &here, &at, out)?;
        }
    }
    Ok(())
}

fn apps_within(h: &Handle, group: &PathId) -> Vec<(String, i64)> {
    let state = h.state.read();
    state
        .visible_apps()
        .filter(|a| PathId::parse(a.id()).is_ok_and(|p| p.is_within(group) && p != *group))
        .map(|a| (a.id().to_string(), a.current.definition.instances))
        .collect()
}

fn result(d: String, v: time::Millis) -> Value {
    json!({"deploymentId": d, "version": time::format(v)})
}

pub async fn route(
    h: &Handle,
    tail: &str,
    method: &warp::http::Method,
    q: &[(String, String)],
    body: Bytes,
) -> Result<Response, Refusal> {
    use warp::http::Method;
    let force = q
        .iter()
        .any(|(k, v)| k == "force" && matches!(v.to_ascii_lowercase().as_str(), "true" | "1"));
    let id = PathId::parse(tail).map_err(|e| Refusal::invalid_at("/id", e))?;
    match *method {
        Method::GET => {
            let embed = Embed {
                tasks: q
                    .iter()
                    .any(|(k, v)| k == "embed" && v.ends_with("apps.tasks")),
                ..Embed::default()
            };
            let state = h.state.read();
            let group = render::group(&state, &id, embed)
                .ok_or_else(|| Refusal::not_found(format!("Group '{id}' does not exist")))?;
            Ok(json_reply(200, &group))
        }
        Method::POST => {
            let value = validation::parse_json(&body)?;
            let group = match value.get("id").and_then(Value::as_str) {
                Some(gid) => {
                    PathId::parse_in(gid, &id).map_err(|e| Refusal::invalid_at("/id", e))?
                }
                None => id.clone(),
            };
            if group.is_root() {
                return Err(Refusal::invalid_at("/id", "give the new group an id"));
            }
            if !apps_within(h, &group).is_empty() {
                return Err(Refusal::conflict(format!(
                    "Group {group} is already created. Use PUT to change this group."
                )));
            }
            let mut apps = Vec::new();
            collect_apps(h, &value, &group, "", &mut apps)?;
            let changes = apps.into_iter().map(AppChange::Create).collect();
            let (d, v) = h.ask_deploy(changes, force).await?;
            Ok(json_reply(201, &result(d, v)))
        }
        Method::PUT => {
            let value = validation::parse_json(&body)?;
            if let Some(scale) = value.get("scaleBy") {
                let factor = scale
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| Refusal::invalid_at("/scaleBy", "must be a number >= 0"))?;
                let current = apps_within(h, &id);
                if current.is_empty() {
                    return Err(Refusal::not_found(format!("Group '{id}' does not exist")));
                }
                let changes = current
                    .into_iter()
                    .map(|(app, n)| AppChange::Patch {
                        id: app,
                        body: json!({"instances": ((n as f64) * factor).ceil() as i64}),
                    })
                    .collect();
                let (d, v) = h.ask_deploy(changes, force).await?;
                return Ok(json_reply(200, &result(d, v)));
            }
            if value.get("version").is_some() {
                return Err(Refusal::invalid_at(
                    "/version",
                    "rolling a whole group back is not supported by Agora; roll back its apps (PUT /v2/apps/{id} {\"version\": ...})",
                ));
            }
            let mut apps = Vec::new();
            collect_apps(h, &value, &id, "", &mut apps)?;
            let wanted: std::collections::BTreeSet<String> =
                apps.iter().map(|a| a.id.clone()).collect();
            let mut changes: Vec<AppChange> = apps.into_iter().map(AppChange::Put).collect();
            if value.get("apps").is_some() || value.get("groups").is_some() {
                // The body is the group's new content: apps not in it go.
                for (app, _) in apps_within(h, &id) {
                    if !wanted.contains(&app) {
                        changes.push(AppChange::Remove(app));
                    }
                }
            }
            let (d, v) = h.ask_deploy(changes, force).await?;
            Ok(json_reply(200, &result(d, v)))
        }
        Method::DELETE => {
            let apps = apps_within(h, &id);
            if apps.is_empty() {
                return Err(Refusal::not_found(format!("Group '{id}' does not exist")));
            }
            let changes = apps
                .into_iter()
                .map(|(a, _)| AppChange::Remove(a))
                .collect();
            let (d, v) = h.ask_deploy(changes, force).await?;
            Ok(json_reply(200, &result(d, v)))
        }
        _ => Err(Refusal::new(
            405,
            format!("{method} is not allowed on /v2/groups"),
        )),
    }
}
