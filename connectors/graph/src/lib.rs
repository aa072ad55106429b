//! # syncctl-connector-graph: Microsoft Graph (Entra ID) as a connected directory
//!
//! Owns [`GraphConnector`], which implements [`syncctl_core::Connector`] over Microsoft Graph
//! v1.0: the OAuth2 client-credentials token (cached until near expiry, renewed once on a 401),
//! full import of users (with the names of the directory roles they hold, `adminRoles`) and
//! groups (with `members` as references to member ids), delta import through `/users/delta` and
//! `/groups/delta` with both deltaLinks as the watermark, the tenant's verified domains
//! ([`GraphConnector::verified_domains`]), and export (POST / PATCH / DELETE, members through
//! `$ref`) behind a client-side pacer that stays under the write budget, honours 429
//! `Retry-After` and retries 5xx and cut connections with bounded exponential backoff.
//!
//! Connector-space objects: anchor = Graph `id`; DN = `CN=<id>,CN=users` for users,
//! `CN=<id>,CN=groups` for groups (Graph has no DNs; these only name objects in messages);
//! object classes `user` and `group`; attributes under their Graph names.
//!
//! It must not hold or print the client secret anywhere but in the token request (the settings
//! only name an environment variable or a file; `Debug` redacts it), nor the access token or
//! generated passwords in logs or errors. Plain `http://` is accepted only to loopback hosts
//! (the emulator); HTTPS certificates are always verified (rustls with ring, system roots).
//! It never touches the database and does not apply the directory-sync service's rewrites
//! (UPN suffix, duplicate attribute resiliency): the engine does that before export.
//!
//! Not done yet: `$batch`, contacts (export refuses them), role changes seen by a delta import
//! only when the user changed too.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod client;
pub mod config;
mod error;
pub mod export;
pub mod import;

use serde_json::Value;
use syncctl_core::{
    Capabilities, Connector, ConnectorFault, ExportItem, ExportOutcome, FaultKind, ImportBatch, ImportMode,
    ImportRequest, ImportSummary,
};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use client::Counters;
pub use config::{GraphConfig, MAX_PAGE_SIZE, Secret};
pub use error::{GraphError, Result};

use crate::client::GraphClient;
use crate::import::DeltaLinks;

/// A domain of the tenant (`GET /domains`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// The domain name.
    pub name: String,
    /// Verified in the tenant.
    pub verified: bool,
    /// The tenant's initial `onmicrosoft.com` domain.
    pub initial: bool,
    /// The default domain.
    pub default: bool,
    /// `Managed` or `Federated`.
    pub authentication_type: String,
}

/// One configured Graph connector.
pub struct GraphConnector {
    name: String,
    client: GraphClient,
}

impl std::fmt::Debug for GraphConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphConnector")
            .field("name", &self.name)
            .field("config", self.client.config())
            .finish()
    }
}

impl GraphConnector {
    /// Builds a connector: validates the settings and reads the secret from its source.
    pub fn new(name: &str, config: GraphConfig) -> Result<Self> {
        config.validate()?;
        let secret = config.load_secret()?;
        Self::with_secret(name, config, secret)
    }

    /// Builds a connector with a secret obtained elsewhere (tests, a vault).
    pub fn with_secret(name: &str, config: GraphConfig, secret: Secret) -> Result<Self> {
        config.validate()?;
        Ok(Self { name: name.to_owned(), client: GraphClient::new(config, secret)? })
    }

    /// Retries and throttling met so far.
    pub fn counters(&self) -> &Counters {
        &self.client.counters
    }

    /// The tenant's domains (`GET /domains`); filter on `verified` for the UPN suffixes Graph accepts.
    pub async fn domains(&mut self) -> Result<Vec<Domain>> {
        let list = self.client.get_all("/domains").await?;
        Ok(list
            .iter()
            .filter_map(|d| {
                Some(Domain {
                    name: d.get("id").and_then(Value::as_str)?.to_owned(),
                    verified: d.get("isVerified").and_then(Value::as_bool).unwrap_or(false),
                    initial: d.get("isInitial").and_then(Value::as_bool).unwrap_or(false),
                    default: d.get("isDefault").and_then(Value::as_bool).unwrap_or(false),
                    authentication_type: d
                        .get("authenticationType")
                        .and_then(Value::as_str)
                        .unwrap_or("Managed")
                        .to_owned(),
                })
            })
            .collect())
    }

    /// The names of the verified domains.
    pub async fn verified_domains(&mut self) -> Result<Vec<String>> {
        Ok(self.domains().await?.into_iter().filter(|d| d.verified).map(|d| d.name).collect())
    }

    async fn run_import(
        &mut self,
        request: ImportRequest,
        tx: mpsc::Sender<ImportBatch>,
    ) -> Result<ImportSummary> {
        let server = self.client.config().graph_url.clone();
        let mut progress = import::Progress::default();
        let mut notes = Vec::new();
        let stored = match (request.mode, &request.watermark) {
            (ImportMode::Delta, Some(w)) => match DeltaLinks::from_watermark(w, &server) {
                Some(l) => Some(l),
                None => {
                    return Err(GraphError::Http {
                        status: 410,
                        code: "syncStateNotFound".into(),
                        message: "the stored watermark is not a Graph deltaLink pair of this endpoint".into(),
                        detail: None,
                    });
                }
            },
            (ImportMode::Delta, None) => {
                notes.push("no watermark stored: full import instead of delta".into());
                None
            }
            (ImportMode::Full, _) => None,
        };
        match stored {
            Some(links) => {
                let links = import::delta(&mut self.client, links, &tx, &mut progress).await?;
                let w = links.to_watermark(&server)?;
                Ok(ImportSummary {
                    final_watermark: Some(w),
                    sweep_unseen: false,
                    method: "graph-delta".into(),
                    pages: progress.pages,
                    notes,
                })
            }
            None => {
                // Delta links first: what changes during the full read shows up in the next delta.
                let users = import::initial_delta_link(
                    &mut self.client,
                    &format!("/users/delta?$select={}", import::USER_SELECT.join(",")),
                )
                .await?;
                let groups = import::initial_delta_link(
                    &mut self.client,
                    &format!("/groups/delta?$select={},members", import::GROUP_SELECT.join(",")),
                )
                .await?;
                import::full(&mut self.client, &tx, &mut progress).await?;
                let w = DeltaLinks { users, groups }.to_watermark(&server)?;
                Ok(ImportSummary {
                    final_watermark: Some(w),
                    sweep_unseen: true,
                    method: "graph-full".into(),
                    pages: progress.pages,
                    notes,
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl Connector for GraphConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn endpoint(&self) -> String {
        self.client.config().graph_url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            full_import: true,
            delta_import: true,
            export: true,
            object_types: vec!["user".into(), "group".into()],
            export_attributes: export::schema(),
        }
    }

    async fn import(
        &mut self,
        request: ImportRequest,
        tx: mpsc::Sender<ImportBatch>,
    ) -> std::result::Result<ImportSummary, ConnectorFault> {
        let span = tracing::info_span!("graph_import", connector = %self.name, mode = %request.mode);
        let endpoint = self.endpoint();
        let closed = tx.clone();
        match self.run_import(request, tx).instrument(span).await {
            Ok(s) => Ok(s),
            Err(_) if closed.is_closed() => {
                Err(ConnectorFault::new(FaultKind::Cancelled, endpoint, "the engine stopped reading"))
            }
            Err(e) => Err(e.into_fault(&endpoint)),
        }
    }

    async fn export(
        &mut self,
        items: Vec<ExportItem>,
    ) -> std::result::Result<Vec<ExportOutcome>, ConnectorFault> {
        let span = tracing::info_span!("graph_export", connector = %self.name, items = items.len());
        async {
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                let result = export::apply(&mut self.client, item).await;
                if let Err(f) = &result {
                    tracing::warn!(export = item.id, kind = %f.kind, "export refused: {}", f.message);
                }
                out.push(ExportOutcome::new(item.id, result));
            }
            Ok(out)
        }
        .instrument(span)
        .await
    }
}
