//! `syncctl requests [--status S] [--object X]`: the requests set transitions made, with their
//! status derived from their mail (FIM's "Search Requests").

use serde_json::json;
use syncctl_store::{RequestFilter, RequestRecord};

use crate::cli::RequestsArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code};
use crate::output;

/// Lists requests, newest first.
pub async fn run(plan: &Plan, args: &RequestsArgs, json: bool) -> CmdResult {
    let store = super::open_store(plan).await?;
    let filter =
        RequestFilter { status: args.status.clone(), object: args.object.clone(), limit: args.limit };
    let found = store.requests(&filter).await;
    store.close().await;
    let found = found?;
    if json {
        output::print_json(&serde_json::Value::Array(found.iter().map(request_json).collect()))?;
    } else if found.is_empty() {
        output::print("no request matches\n")?;
    } else {
        output::print(&table(&found))?;
    }
    Ok(Code::Success)
}

fn request_json(r: &RequestRecord) -> serde_json::Value {
    json!({
        "id": r.id,
        "object": r.object,
        "mv_id": r.mv_id,
        "set": r.set_name,
        "transition": r.transition,
        "policy": r.policy,
        "workflow": r.workflow,
        "status": r.status,
        "messages": r.messages,
        "delivered": r.delivered,
        "error": r.error,
        "run_id": r.run_id,
        "created": output::rfc3339(r.created_at),
        "updated": output::rfc3339(r.updated_at),
    })
}

fn table(found: &[RequestRecord]) -> String {
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                output::rfc3339(r.created_at),
                format!("{} (mv:{})", r.object, r.mv_id),
                format!("{} {}", r.transition.as_str(), r.set_name),
                r.policy.clone(),
                r.workflow.clone(),
                r.status.clone(),
                format!("{}/{}", r.delivered, r.messages),
                output::rfc3339(r.updated_at),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "CREATED",
            "OBJECT",
            "TRANSITION",
            "POLICY",
            "WORKFLOW",
            "STATUS",
            "MAIL",
            "UPDATED",
            "ERROR",
        ],
        &rows,
    )
}
