//! What the API asks of the controller (the one writer of the state).

use tokio::sync::oneshot;

use crate::refusal::Refusal;
use crate::state::AppChange;
use crate::time::Millis;

/// A request from the API to the controller.
pub enum Command {
    Deploy {
        changes: Vec<AppChange>,
        force: bool,
        reply: oneshot::Sender<Result<(String, Millis), Refusal>>,
    },
    /// Kill tasks (to be replaced); answers the ones being killed.
    KillTasks {
        tasks: Vec<(String, String)>,
        reply: oneshot::Sender<Result<Vec<(String, String)>, Refusal>>,
    },
    /// Roll back (`Some(new deployment)`) or, with `force`, just stop (`None`).
    CancelDeployment {
        id: String,
        force: bool,
        reply: oneshot::Sender<Result<Option<(String, Millis)>, Refusal>>,
    },
    ResetDelay {
        app: String,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
}
