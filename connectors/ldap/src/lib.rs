//! # syncctl-connector-ldap: Active Directory and generic LDAP
//!
//! Owns everything that speaks LDAP (through `ldap3` with rustls). [`LdapConnector`] implements
//! [`syncctl_core::Connector`] for two flavors:
//!
//! - **AD** (and Samba AD): objectGUID anchors (the ImmutableID), paged search, ranged retrieval
//!   of large `member` values, search references ignored, `isCriticalSystemObject` excluded.
//!   Delta import through the DirSync control with incremental membership values and deletes
//!   (`isDeleted`, show-deleted control), changed objects re-read by GUID, renamed OUs read
//!   again as a subtree; or `uSNChanged` polling, with deletes and OU moves found by listing the
//!   anchors in scope, when the account has no DirSync right. A watermark from another DC, or a
//!   cookie the DC refuses, asks the engine for a full import.
//! - **OpenLDAP**: entryUUID anchors, paged full import, delta through RFC 4533 refreshOnly with
//!   deletes (session log or present phase).
//!
//! Modules: `config` (settings), `client` (connect, TLS, bind, paged and ranged search, error
//! mapping), `entry` (panic-free decoding of search entries into CS objects), `controls` (the
//! DirSync, show-deleted and sync controls), `ad` and `openldap` (the import flows). `directory`
//! makes the entry decoding and the scope public, so that the LDIF connector turns an export of
//! a directory into the same connector-space objects as a live read of it.
//!
//! It must not write to the directory (export comes later) nor touch the database, and it must
//! never put the bind password in a log line or an error.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod ad;
mod client;
pub mod config;
mod controls;
pub mod directory;
mod entry;
mod error;
mod openldap;
pub mod schema;

use syncctl_core::{Capabilities, Connector, ConnectorFault, ImportBatch, ImportRequest, ImportSummary};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use config::{DeltaMethod, Flavor, LdapConfig, Secret, Security};
pub use error::{LdapError, Result};

/// One configured LDAP connector.
#[derive(Debug)]
pub struct LdapConnector {
    name: String,
    config: LdapConfig,
    scope: entry::Scope,
}

impl LdapConnector {
    /// Builds a connector from its validated settings (no connection yet).
    pub fn new(name: &str, config: LdapConfig) -> Result<Self> {
        config.validate(name)?;
        let scope = entry::Scope::new(&config)
            .map_err(|m| LdapError::Config { connector: name.into(), message: m })?;
        Ok(Self { name: name.to_owned(), config, scope })
    }

    /// `ldap-ad` or `ldap-openldap`: the connector kind recorded in the store.
    pub fn kind(&self) -> &'static str {
        match self.config.flavor {
            Flavor::Ad => "ldap-ad",
            Flavor::Openldap => "ldap-openldap",
        }
    }

    /// The settings.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Connector for LdapConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn endpoint(&self) -> String {
        self.config.url.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            full_import: true,
            delta_import: true,
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
        let span = tracing::info_span!("ldap", connector = %self.name, url = %self.config.url, flavor = ?self.config.flavor);
        async {
            let mut client = client::Client::connect(&self.name, &self.config).await?;
            let result = match self.config.flavor {
                Flavor::Ad => ad::import(&mut client, &self.config, &self.scope, request, &tx).await,
                Flavor::Openldap => {
                    openldap::import(&mut client, &self.config, &self.scope, request, &tx).await
                }
            };
            client.close().await;
            result
        }
        .instrument(span)
        .await
    }
}
