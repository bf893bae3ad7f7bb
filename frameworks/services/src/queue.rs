//! `/v2/queue`: apps with instances waiting to launch, their backoff and
//! why offers did not fit.

use serde_json::{Value, json};

use crate::render::{self, Embed};
use crate::state::State;
use crate::time::{self, Millis};

pub fn render(state: &State, embed_offers: bool, now: Millis) -> Value {
    let queue: Vec<Value> = state
        .visible_apps()
        .filter(|a| a.launch.wanted > 0)
        .map(|a| {
            let l = &a.launch;
            let left = (l.delay_until - now).max(0);
            let reasons: Vec<Value> = l
                .reasons
                .iter()
                .map(|(reason, n)| json!({"reason": reason, "declined": n, "processed": n}))
                .collect();
            let mut summary = json!({
                "processedOffersCount": l.processed_offers,
                "unusedOffersCount": l.unused_offers,
                "rejectSummaryLastOffers": reasons,
                "rejectSummaryLaunchAttempt": reasons,
            });
            if let Some(t) = l.last_unused_at {
                summary["lastUnusedOfferAt"] = json!(time::format(t));
            }
            if let Some(t) = l.last_used_at {
                summary["lastUsedOfferAt"] = json!(time::format(t));
            }
            let mut item = json!({
                "app": render::app(state, a, Embed::default()),
                "count": l.wanted,
                "delay": {"timeLeftSeconds": left / 1000, "overdue": left == 0},
                "since": time::format(l.since.unwrap_or(now)),
                "processedOffersSummary": summary,
            });
            if embed_offers {
                item["lastUnusedOffers"] = l
                    .last_unused
                    .iter()
                    .map(|u| {
                        json!({
                            "offer": {"id": u.offer_id, "agentId": u.agent_id, "hostname": u.hostname},
                            "reason": [u.reason],
                            "timestamp": time::format(u.at),
                        })
                    })
                    .collect();
            }
            item
        })
        .collect();
    json!({ "queue": queue })
}
