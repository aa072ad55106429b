//! Errors of the LDAP connector (configuration); import faults are
//! [`syncctl_core::ConnectorFault`]s.

/// A configuration problem, found before any connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapError {
    /// The connector's settings cannot work.
    #[error("connector `{connector}`: {message}")]
    Config {
        /// The connector's name.
        connector: String,
        /// What is wrong.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = LdapError> = std::result::Result<T, E>;
