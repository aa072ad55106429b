//! # syncctl-connector-graph: Microsoft Graph (Entra ID) as a connected directory
//!
//! Owns [`GraphConnector`], which implements [`syncctl_core::Connector`] over Microsoft Graph
//! v1.0: the OAuth2 client-credentials token (cached until near expiry, renewed once on a 401),
//! full import of users (with the names of the directory roles they hold, `adminRoles`) and
//! groups (with `members` as references to member ids, read 20 groups to a `POST /$batch`,
//! several batches in flight), delta import through `/users/delta` and `/groups/delta` with both
//! deltaLinks as the watermark, the tenant's domains as connector-space objects, and export
//! through `POST /$batch` behind a client-side pacer.
//!
//! Connector-space objects: anchor = Graph `id`; DN = `CN=<id>,CN=users` for users,
//! `CN=<id>,CN=groups` for groups (Graph has no DNs; these only name objects in messages);
//! object classes `user` and `group`; attributes under their Graph names.
//!
//! Domains: every import (full and delta) reads `GET /domains` first and emits each domain as an
//! object of class `domain` with anchor = the domain name in lower case, DN
//! `CN=<name in lower case>,CN=domains` and exactly these attributes: `id` (String, the name as
//! Graph gives it), `isVerified`, `isInitial`, `isDefault` (Boolean each; `false` when Graph omits
//! one) and `authenticationType` (String, `Managed` or `Federated`; absent when Graph omits it).
//! The engine reads them to rewrite UPN suffixes that are not verified. In a full import they take
//! part in the sweep like users and groups, so a domain removed from the tenant disappears; a
//! delta import emits them all again as present (Graph has no delta for domains), so a domain
//! removed since the last full import stays in the connector space until the next full import.
//! When Graph refuses `/domains` with 403 (the app may not read domains) the import goes on
//! without domain objects and says so in its notes (a full import then sweeps those it had).
//!
//! Export: the writes of one call go through `POST /$batch`, at most 20 requests per batch, in two
//! rounds: the creates (`POST /users`, `POST /groups`), then one `PATCH` per object with every
//! changed attribute, member changes through `$ref` (`POST /groups/{id}/members/$ref` with
//! `@odata.id`, `DELETE /groups/{id}/members/{member}/$ref`) and `DELETE`s; nothing in the second
//! round depends on a create of the first, so no `dependsOn` is used (the engine never puts an
//! item in the same call as the add of an object it references). Each request of a batch counts
//! as one write for the pacer (default 3,000 per 150 s). Each request is handled like a single
//! one: a 429 waits its own `Retry-After` (from its headers inside the batch; fractions of a
//! second honoured), a 5xx is retried with bounded backoff (its Retry-After when it has one), a
//! cut connection re-sends the idempotent writes and looks a create up by its
//! `onPremisesImmutableId` before sending it again; other refusals become Entra's error names
//! (`AttributeValueMustBeUnique`, `IdentityDataValidationFailed`, `ObjectNotFound`,
//! `ObjectSynchronizedByAnotherEngine`, ...). Each item gets one outcome: an update or delete
//! succeeds only if all its requests do; an add succeeds once its object is created (a failed
//! member change of a new group is a note, and the engine exports it again after the next import).
//! An add flagged uncertain is looked up by its `onPremisesImmutableId` before it is sent. Every
//! retry and lookup is a note of its item's [`syncctl_core::ExportOutcome`], naming the request and
//! the cause (`POST /users: 429 Too Many Requests, Retry-After 2 s, retried`).
//!
//! An object that another directory-sync engine masters (`onPremisesSyncEnabled: true`, with an
//! `onPremisesImmutableId` that is not the one exported) is refused by Graph; that refusal is
//! reported as `ObjectSynchronizedByAnotherEngine` (not retryable): reported, not fought.
//!
//! It must not hold or print the client secret anywhere but in the token request (the settings
//! only name an environment variable or a file; `Debug` redacts it), nor the access token or
//! generated passwords in logs, errors or notes. Plain `http://` is accepted only to loopback hosts
//! (the emulator); HTTPS certificates are always verified (rustls with ring, system roots).
//! It never touches the database and does not apply the directory-sync service's rewrites
//! (UPN suffix, duplicate attribute resiliency): the engine does that before export.
//!
//! Out of scope: contacts (the export refuses them with `ObjectTypeNotSupported`). Not done yet:
//! role changes seen by a delta import only when the user changed too.

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
        // The domains first, in full and delta imports alike (Graph has no delta for them).
        import::domains(&mut self.client, &tx, &mut progress, &mut notes, stored.is_none()).await?;
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
            object_types: vec!["user".into(), "group".into(), import::DOMAIN_CLASS.into()],
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
        Ok(export::export_all(&mut self.client, &items).instrument(span).await)
    }
}
