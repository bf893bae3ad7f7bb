//! The OpenAPI 3 document served at `/openapi.json`: every route, with the
//! schemas of the app definition, tasks and validation errors (generated
//! from the Rust types by utoipa).

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    ResponseBuilder,
};

use crate::app::AppDefinition;
use crate::render::TaskJson;
use crate::validation::Violation;

/// (path, method, summary, body schema, success status)
const ROUTES: &[(&str, HttpMethod, &str, Option<&str>, &str)] = &[
    (
        "/ping",
        HttpMethod::Get,
        "Liveness: answers pong (also on standbys)",
        None,
        "200",
    ),
    (
        "/metrics",
        HttpMethod::Get,
        "Prometheus metrics (also on standbys)",
        None,
        "200",
    ),
    (
        "/openapi.json",
        HttpMethod::Get,
        "This document",
        None,
        "200",
    ),
    (
        "/v2/info",
        HttpMethod::Get,
        "Framework facts: version, leader, framework id, configuration (also on standbys)",
        None,
        "200",
    ),
    (
        "/v2/leader",
        HttpMethod::Get,
        "The leading instance's host:port (also on standbys)",
        None,
        "200",
    ),
    (
        "/v2/apps",
        HttpMethod::Get,
        "List apps; embed=apps.tasks|apps.counts|apps.deployments|apps.lastTaskFailure, cmd, id and label filters",
        None,
        "200",
    ),
    (
        "/v2/apps",
        HttpMethod::Post,
        "Create an app (201 with Location and Marathon-Deployment-Id; 409 if the id exists; 422 if invalid)",
        Some("AppDefinition"),
        "201",
    ),
    (
        "/v2/apps",
        HttpMethod::Put,
        "Partially update several apps (a JSON array; force=true overrides running deployments)",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}",
        HttpMethod::Get,
        "One app with its tasks, counts, deployments and last task failure",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}",
        HttpMethod::Put,
        "Partial update (creates the app if absent); {\"version\": v} rolls back to a stored version; force=true",
        Some("AppDefinition"),
        "200",
    ),
    (
        "/v2/apps/{appId}",
        HttpMethod::Delete,
        "Remove the app (kills its tasks)",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/restart",
        HttpMethod::Post,
        "Rolling restart of every instance",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/tasks",
        HttpMethod::Get,
        "The app's tasks",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/tasks",
        HttpMethod::Delete,
        "Kill the app's tasks (host filter; scale=true lowers instances instead of replacing; wipe accepted)",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/tasks/{taskId}",
        HttpMethod::Get,
        "One task",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/tasks/{taskId}",
        HttpMethod::Delete,
        "Kill one task (scale=true lowers instances instead of replacing it)",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/versions",
        HttpMethod::Get,
        "The app's stored versions, newest first",
        None,
        "200",
    ),
    (
        "/v2/apps/{appId}/versions/{version}",
        HttpMethod::Get,
        "The app as it was at a version",
        None,
        "200",
    ),
    (
        "/v2/tasks",
        HttpMethod::Get,
        "Every app's tasks (status=running|staging filter)",
        None,
        "200",
    ),
    (
        "/v2/tasks/delete",
        HttpMethod::Post,
        "Kill tasks by id: {\"ids\": [...]} (scale=true, force=true)",
        None,
        "200",
    ),
    (
        "/v2/deployments",
        HttpMethod::Get,
        "Running deployments (a bare JSON array)",
        None,
        "200",
    ),
    (
        "/v2/deployments/{deploymentId}",
        HttpMethod::Delete,
        "Roll a deployment back (a new deployment to the previous state); force=true stops it in place (202)",
        None,
        "200",
    ),
    (
        "/v2/groups",
        HttpMethod::Get,
        "The root group: every app by the groups its id forms",
        None,
        "200",
    ),
    (
        "/v2/groups",
        HttpMethod::Post,
        "Create a group with apps (ids relative to the group)",
        None,
        "201",
    ),
    (
        "/v2/groups/{groupId}",
        HttpMethod::Get,
        "One group",
        None,
        "200",
    ),
    (
        "/v2/groups/{groupId}",
        HttpMethod::Put,
        "Replace a group's apps, or scale them all (scaleBy)",
        None,
        "200",
    ),
    (
        "/v2/groups/{groupId}",
        HttpMethod::Delete,
        "Remove every app of a group",
        None,
        "200",
    ),
    (
        "/v2/queue",
        HttpMethod::Get,
        "Apps waiting for instances to launch: count, backoff delay, why offers did not fit (embed=lastUnusedOffers)",
        None,
        "200",
    ),
    (
        "/v2/queue/{appId}/delay",
        HttpMethod::Delete,
        "Reset an app's launch backoff",
        None,
        "204",
    ),
    (
        "/v2/events",
        HttpMethod::Get,
        "Server-Sent Events with Marathon's event types (event_type filter)",
        None,
        "200",
    ),
];

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut items: Vec<(&str, PathItem)> = Vec::new();
    for (path, method, summary, body, status) in ROUTES {
        let mut op = OperationBuilder::new().summary(Some(*summary));
        for p in path_params(path) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(p)
                    .parameter_in(ParameterIn::Path)
                    .required(utoipa::openapi::Required::True)
                    .description(Some(if p == "appId" {
                        "an app id such as team/web (slashes allowed)"
                    } else {
                        "an id"
                    })),
            );
        }
        if let Some(schema) = body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(*schema)))
                            .build(),
                    )
                    .build(),
            ));
        }
        op = op
            .response(*status, ResponseBuilder::new().description("success"))
            .response(
                "400",
                ResponseBuilder::new().description("malformed JSON or query: {\"message\"}"),
            );
        if matches!(method, HttpMethod::Post | HttpMethod::Put) {
            op = op.response(
                "422",
                ResponseBuilder::new()
                    .description(
                        "invalid: {\"message\":\"Object is not valid\",\"details\":[Violation]}",
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Violation")))
                            .build(),
                    ),
            );
        }
        if path.contains('{') {
            op = op.response(
                "404",
                ResponseBuilder::new().description("unknown id: {\"message\"}"),
            );
        }
        if !matches!(method, HttpMethod::Get) {
            op = op.response(
                "409",
                ResponseBuilder::new().description("locked by a running deployment (use force=true): {\"message\",\"deployments\"}"),
            );
        }
        let standby_safe = matches!(
            *path,
            "/ping" | "/metrics" | "/openapi.json" | "/v2/info" | "/v2/leader"
        );
        if !standby_safe {
            op = op.response(
                "307",
                ResponseBuilder::new().description(
                    "this instance is a standby: the same request at the leader (Location)",
                ),
            );
        }
        match items.iter_mut().find(|(p, _)| p == path) {
            Some((_, item)) => {
                let extra = PathItem::new(method.clone(), op);
                item.merge_operations(extra);
            }
            None => items.push((path, PathItem::new(method.clone(), op))),
        }
    }
    for (path, item) in items {
        paths = paths.path(path, item);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Agora services (Marathon v2 compatible)")
                .version(agora_proto::VERSION)
                .description(Some(
                    "Long-running apps on Agora. Differences from Marathon: docs/services.md",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<AppDefinition>()
                .schema_from::<TaskJson>()
                .schema_from::<Violation>()
                .build(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route_and_the_app_schema() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(
            doc["openapi"].as_str().map(|v| v.starts_with("3.")),
            Some(true)
        );
        for (path, ..) in ROUTES {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert!(doc["paths"]["/v2/apps"]["post"].is_object());
        assert!(doc["paths"]["/v2/apps"]["get"].is_object());
        let app = &doc["components"]["schemas"]["AppDefinition"]["properties"];
        for field in [
            "id",
            "cmd",
            "instances",
            "upgradeStrategy",
            "healthChecks",
            "portDefinitions",
        ] {
            assert!(app[field].is_object(), "AppDefinition.{field} missing");
        }
    }
}
