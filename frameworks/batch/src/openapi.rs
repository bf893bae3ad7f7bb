//! The OpenAPI 3 document of the REST API (`GET /openapi.json`), made by
//! utoipa from the request and record types themselves.

#![allow(dead_code)] // The functions below only carry the path documentation.

use utoipa::OpenApi;

use crate::run::{Attempt, Run, RunStatus, Trigger};
use crate::spec::{
    ConcurrencyPolicy, ConstraintOperator, ConstraintSpec, Dependency, DockerParameter, DockerSpec,
    FieldError, JobSpec, Placement, Restart, RestartPolicy, RunSpec, ScheduleSpec, VolumeMode,
    VolumeSpec,
};

/// `{"message": ...}`, and for 422 the invalid fields.
#[derive(utoipa::ToSchema)]
pub struct ErrorBody {
    pub message: String,
    pub details: Option<Vec<FieldError>>,
}

#[utoipa::path(get, path = "/v1/jobs", params(("embed" = Option<String>, Query, description = "activeRuns, schedules, history, historySummary (comma-separated or repeated)")),
    responses((status = 200, description = "Every job", body = [JobSpec])))]
fn list_jobs() {}

#[utoipa::path(post, path = "/v1/jobs", request_body = JobSpec,
    responses((status = 201, description = "Created", body = JobSpec),
              (status = 400, description = "Not JSON", body = ErrorBody),
              (status = 409, description = "The job exists", body = ErrorBody),
              (status = 422, description = "Invalid values, unknown dependency or a dependency cycle", body = ErrorBody)))]
fn create_job() {}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path), ("embed" = Option<String>, Query)),
    responses((status = 200, body = JobSpec), (status = 404, body = ErrorBody)))]
fn get_job() {}

#[utoipa::path(put, path = "/v1/jobs/{id}", params(("id" = String, Path)), request_body = JobSpec,
    responses((status = 200, body = JobSpec), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
fn replace_job() {}

#[utoipa::path(delete, path = "/v1/jobs/{id}", params(("id" = String, Path), ("stopCurrentJobRuns" = Option<bool>, Query)),
    responses((status = 200, description = "Deleted with its schedules and runs"), (status = 404, body = ErrorBody),
              (status = 409, description = "Active runs, or jobs depend on it", body = ErrorBody)))]
fn delete_job() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/schedules", params(("id" = String, Path)),
    responses((status = 200, body = [ScheduleSpec]), (status = 404, body = ErrorBody)))]
fn list_schedules() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/schedules", params(("id" = String, Path)), request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleSpec), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
fn add_schedule() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/schedules/{scheduleId}", params(("id" = String, Path), ("scheduleId" = String, Path)),
    responses((status = 200, body = ScheduleSpec), (status = 404, body = ErrorBody)))]
fn get_schedule() {}

#[utoipa::path(put, path = "/v1/jobs/{id}/schedules/{scheduleId}", params(("id" = String, Path), ("scheduleId" = String, Path)), request_body = ScheduleSpec,
    responses((status = 200, body = ScheduleSpec), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
fn replace_schedule() {}

#[utoipa::path(delete, path = "/v1/jobs/{id}/schedules/{scheduleId}", params(("id" = String, Path), ("scheduleId" = String, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, body = ErrorBody)))]
fn delete_schedule() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/runs", params(("id" = String, Path)),
    responses((status = 200, description = "Active and kept runs, newest first", body = [Run]), (status = 404, body = ErrorBody)))]
fn list_runs() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/runs", params(("id" = String, Path)),
    responses((status = 201, description = "A run, started now", body = Run), (status = 404, body = ErrorBody)))]
fn start_run() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/runs/{runId}", params(("id" = String, Path), ("runId" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
fn get_run() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/runs/{runId}/actions/stop", params(("id" = String, Path), ("runId" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody), (status = 409, description = "The run has ended", body = ErrorBody)))]
fn stop_run() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/runs/{runId}/logs",
    params(("id" = String, Path), ("runId" = String, Path), ("stream" = Option<String>, Query, description = "stdout (default) or stderr"),
           ("offset" = Option<u64>, Query), ("attempt" = Option<u32>, Query, description = "default: the latest")),
    responses((status = 200, description = "The output from `offset` on; headers X-Agora-Log-Offset and X-Agora-Log-Size", content_type = "text/plain"),
              (status = 404, body = ErrorBody), (status = 502, description = "The agent cannot be reached", body = ErrorBody)))]
fn run_logs() {}

#[utoipa::path(get, path = "/v1/events",
    responses((status = 200, description = "Server-Sent Events: job_created, job_updated, job_deleted, run_update", content_type = "text/event-stream")))]
fn events() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora batch",
        description = "One-off and cron jobs in Metronome's shape: exactly one run per scheduled time."
    ),
    paths(
        list_jobs,
        create_job,
        get_job,
        replace_job,
        delete_job,
        list_schedules,
        add_schedule,
        get_schedule,
        replace_schedule,
        delete_schedule,
        list_runs,
        start_run,
        get_run,
        stop_run,
        run_logs,
        events
    ),
    components(schemas(
        JobSpec,
        RunSpec,
        DockerSpec,
        DockerParameter,
        VolumeSpec,
        VolumeMode,
        Placement,
        ConstraintSpec,
        ConstraintOperator,
        Restart,
        RestartPolicy,
        ScheduleSpec,
        ConcurrencyPolicy,
        Dependency,
        Run,
        RunStatus,
        Trigger,
        Attempt,
        FieldError,
        ErrorBody
    ))
)]
struct ApiDoc;

/// The document, as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
