//! Errors of the LDIF connector's configuration; import faults are
//! [`syncctl_core::ConnectorFault`]s and malformed input is a [`crate::LdifError`].

/// A configuration problem, found before the file is read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdifConfigError {
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
pub type Result<T, E = LdifConfigError> = std::result::Result<T, E>;
