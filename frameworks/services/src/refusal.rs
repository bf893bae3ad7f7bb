//! "Your request was refused": what the REST API answers for bad input,
//! unknown ids and conflicts, in Marathon's shapes. (Failures of the
//! framework itself are [`crate::ServicesError`].)

use serde_json::{Value, json};

use crate::validation::{Rejection, Violation};

/// An HTTP status and a JSON body saying what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            body: json!({ "message": message.into() }),
        }
    }

    /// 400: the body is not JSON (or a query parameter is malformed).
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(400, message)
    }

    /// 422: Marathon's `{"message":"Object is not valid","details":[...]}`.
    pub fn invalid(details: Vec<Violation>) -> Refusal {
        Refusal {
            status: 422,
            body: json!({ "message": "Object is not valid", "details": details }),
        }
    }

    pub fn invalid_at(path: &str, error: impl Into<String>) -> Refusal {
        Refusal::invalid(vec![Violation {
            path: path.into(),
            errors: vec![error.into()],
        }])
    }

    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(404, message)
    }

    pub fn app_not_found(id: &str) -> Refusal {
        Refusal::not_found(format!("App '{id}' does not exist"))
    }

    /// 409: the apps are locked by running deployments.
    pub fn locked(deployments: &[String]) -> Refusal {
        Refusal {
            status: 409,
            body: json!({
                "message": format!(
                    "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.",
                    deployments.first().map(String::as_str).unwrap_or_default()
                ),
                "deployments": deployments.iter().map(|d| json!({"id": d})).collect::<Vec<_>>(),
            }),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Refusal {
        Refusal::new(409, message)
    }

    /// 503: the framework cannot act right now (store unreachable, not
    /// leading any more).
    pub fn unavailable(message: impl Into<String>) -> Refusal {
        Refusal::new(503, message)
    }
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Refusal {
        match r {
            Rejection::BadJson(m) => Refusal::bad_request(m),
            Rejection::Invalid(v) => Refusal::invalid(v),
        }
    }
}
