//! The crash test's worker: a delta sync of the connector `corp` (Active Directory), then of
//! `cloud` (the in-memory cloud's connector space), on the database given, pausing after each
//! batch for the milliseconds given so that the test can kill it half-way.
//!
//! `sync-worker <database> <pause-ms>`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::Duration;

use syncctl_core::SystemClock;
use syncctl_core::rules::RuleSet;
use syncctl_engine::{SyncConnector, SyncMode, SyncOptions, SyncProgress, run_sync};
use syncctl_store::Store;

struct Pause(Duration);

impl SyncProgress for Pause {
    fn advance(&self, _processed: u64, _total: u64) {
        std::thread::sleep(self.0);
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let db = args.get(1).expect("sync-worker <database> <pause-ms>");
    let pause: u64 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let store = Store::open(std::path::Path::new(db)).await.unwrap();
    let rules = RuleSet::defaults().unwrap();
    let corp = store.connector_id("corp").await.unwrap().expect("connector corp");
    let cloud = store.connector_id("cloud").await.unwrap().expect("connector cloud");
    let connectors = vec![
        SyncConnector {
            id: corp,
            name: "corp".into(),
            kind: "ldap-ad".into(),
            target: false,
            export_attributes: Default::default(),
        },
        SyncConnector {
            id: cloud,
            name: "cloud".into(),
            kind: "cloud-test".into(),
            target: true,
            export_attributes: Default::default(),
        },
    ];
    let options = SyncOptions { batch_size: 5, ..SyncOptions::default() };
    for c in &connectors {
        let r = run_sync(
            &store,
            &rules,
            c,
            &connectors,
            SyncMode::Delta,
            &options,
            &SystemClock,
            &Pause(Duration::from_millis(pause)),
        )
        .await
        .unwrap();
        println!("{} {} {}", r.connector, r.status, r.counts.processed);
    }
    store.close().await;
}
