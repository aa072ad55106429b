//! `syncctl connectors`: the configured connectors, without secrets.

use serde_json::json;

use crate::config::Plan;
use crate::exit::{CmdResult, Code};
use crate::output;

/// Lists the connectors of the config file.
pub fn run(plan: &Plan, json: bool) -> CmdResult {
    if json {
        let list = plan
            .connectors
            .iter()
            .map(|c| json!({ "name": c.name, "type": c.type_name, "endpoint": c.endpoint, "files": c.files }))
            .collect();
        output::print_json(&serde_json::Value::Array(list))?;
    } else if plan.connectors.is_empty() {
        output::print(&format!("no connectors configured in {}\n", plan.source.display()))?;
    } else {
        let rows: Vec<Vec<String>> = plan
            .connectors
            .iter()
            .map(|c| vec![c.name.clone(), c.type_name.to_owned(), c.endpoint.clone()])
            .collect();
        output::print(&output::table(&["NAME", "TYPE", "ENDPOINT"], &rows))?;
    }
    Ok(Code::Success)
}
