//! # syncctl-connector-ldif: LDIF files as a source
//!
//! Owns reading RFC 2849 LDIF content records, as `ldapsearch` (any `-L` level, wrapped or
//! not) and `ldifde -f` write them, and [`LdifConnector`], which implements
//! [`syncctl_core::Connector`] over such a file so that `assess`, demos and tests work
//! offline from an export of a directory.
//!
//! Modules: `parser` (a streaming, panic-free reader: [`LdifReader`] yields one [`LdifRecord`]
//! at a time and reports malformed input as an [`LdifError`] naming the line), `config`
//! (settings), `import` (the full import: records to batches).
//!
//! **Why it depends on the LDAP connector.** An LDIF export of a directory and a live LDAP read
//! of the same directory must give identical connector-space objects (anchors, DNs, typed
//! attributes, hashes), or moving between the two would look like changes to every object. So
//! this crate does not decode entries itself: it hands each record to the LDAP connector's
//! decoding (`syncctl_connector_ldap::directory`: scope, object classification, anchors,
//! attribute syntaxes from `schema/attributes.toml`, range options merged), exactly as the LDAP
//! connector does with a search entry.
//!
//! It must not write files or the directory, nor touch the database; it never loads the whole
//! file in memory, and nothing read from the file can make it panic.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod config;
mod error;
mod import;
pub mod parser;

use std::sync::Arc;

use syncctl_connector_ldap::directory::Scope;
use syncctl_core::{
    Capabilities, Connector, ConnectorFault, FaultKind, ImportBatch, ImportRequest, ImportSummary,
};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use config::LdifConfig;
pub use error::{LdifConfigError, Result};
pub use parser::{LdifError, LdifErrorKind, LdifReader, LdifRecord};

/// Changes per batch sent to the engine.
pub const BATCH_SIZE: usize = 1000;

/// One configured LDIF connector.
#[derive(Debug)]
pub struct LdifConnector {
    name: String,
    config: LdifConfig,
    scope: Arc<Scope>,
}

impl LdifConnector {
    /// Builds a connector from its validated settings (the file is read at import time).
    pub fn new(name: &str, config: LdifConfig) -> Result<Self> {
        config.validate(name)?;
        let scope = Scope::from_settings(&config.scope_settings())
            .map_err(|message| LdifConfigError::Config { connector: name.to_owned(), message })?;
        Ok(Self { name: name.to_owned(), config, scope: Arc::new(scope) })
    }

    /// `ldif`: the connector kind recorded in the store.
    pub fn kind(&self) -> &'static str {
        "ldif"
    }

    /// The settings.
    pub fn config(&self) -> &LdifConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Connector for LdifConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn endpoint(&self) -> String {
        self.config.path.display().to_string()
    }

    /// Full import only: an LDIF file has no change log. A delta request (from the engine's
    /// API) still works: it reads the whole file and has the engine sweep what it no longer
    /// holds, or reads nothing when the file is the one last imported.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            full_import: true,
            delta_import: false,
            export: false,
            object_types: self.scope.object_types.clone(),
            export_attributes: Default::default(),
        }
    }

    async fn import(
        &mut self,
        request: ImportRequest,
        tx: mpsc::Sender<ImportBatch>,
    ) -> std::result::Result<ImportSummary, ConnectorFault> {
        let endpoint = self.endpoint();
        let span = tracing::info_span!("ldif", connector = %self.name, path = %endpoint);
        let job = import::Job {
            path: self.config.path.clone(),
            endpoint: endpoint.clone(),
            scope: Arc::clone(&self.scope),
            fingerprint: import::fingerprint(&self.config),
        };
        async move {
            // File reads and decoding are blocking work: they run on the blocking pool and hand
            // batches over the channel as the LDAP connector does.
            let inner = tracing::Span::current();
            tokio::task::spawn_blocking(move || inner.in_scope(|| job.run(request, &tx)))
                .await
                .unwrap_or_else(|e| {
                    Err(ConnectorFault::new(
                        FaultKind::Protocol,
                        endpoint,
                        format!("the LDIF reader stopped: {e}"),
                    ))
                })
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests;
