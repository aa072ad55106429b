//! The workflow crash test's worker: a delta sync of the connector `corp` (an LDIF connector)
//! with the notification workflows of the config file given (its `[[sets]]`, `[[policies]]`,
//! `[[workflows]]` and `[mail] sender`), two objects per batch, pausing after each batch for
//! the milliseconds given so that the test can kill it between a transition and its delivery.
//!
//! `workflow-worker <database> <config> <pause-ms>`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use syncctl_core::rules::RuleSet;
use syncctl_core::{Clock as _, SystemClock};
use syncctl_engine::{SyncConnector, SyncMode, SyncOptions, SyncProgress, run_sync};
use syncctl_store::Store;
use syncctl_workflow::{PolicyConfig, SetConfig, WorkflowConfig, WorkflowHook, Workflows};

struct Pause(Duration);

impl SyncProgress for Pause {
    fn advance(&self, _processed: u64, _total: u64) {
        std::thread::sleep(self.0);
    }
}

#[derive(Deserialize)]
struct Mail {
    sender: String,
}

/// The parts of a syncctl config this worker needs; the rest is ignored.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    sets: Vec<SetConfig>,
    #[serde(default)]
    policies: Vec<PolicyConfig>,
    #[serde(default)]
    workflows: Vec<WorkflowConfig>,
    mail: Option<Mail>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "workflow-worker <database> <config> <pause-ms>";
    let db = args.get(1).expect(usage);
    let config = args.get(2).expect(usage);
    let pause: u64 = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(0);
    let file: File = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let workflows = Workflows::compile(
        &file.sets,
        &file.policies,
        &file.workflows,
        file.mail.as_ref().map(|m| m.sender.as_str()),
    )
    .unwrap()
    .shared();
    let store = Store::open(std::path::Path::new(db)).await.unwrap();
    syncctl_workflow::prepare_sets(&store, &workflows, SystemClock.now_ms()).await.unwrap();
    let rules = RuleSet::defaults().unwrap();
    let corp = store.connector_id("corp").await.unwrap().expect("connector corp");
    let connectors = vec![SyncConnector {
        id: corp,
        name: "corp".into(),
        kind: "ldif".into(),
        target: false,
        export_attributes: Default::default(),
    }];
    let options = SyncOptions {
        batch_size: 2,
        hook: Some(Arc::new(WorkflowHook::new(workflows))),
        ..SyncOptions::default()
    };
    let r = run_sync(
        &store,
        &rules,
        &connectors[0],
        &connectors,
        SyncMode::Delta,
        &options,
        &SystemClock,
        &Pause(Duration::from_millis(pause)),
    )
    .await
    .unwrap();
    println!("{} {} {}", r.connector, r.status, r.counts.processed);
    store.close().await;
}
