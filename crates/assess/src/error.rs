//! Errors of the assess crate.

/// What can go wrong while reading tenant data or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum AssessError {
    /// Tenant data that is not Graph-shaped JSON.
    #[error("tenant data: {0}")]
    Tenant(String),
    /// A report could not be rendered.
    #[error("rendering the {format} report: {message}")]
    Render {
        /// `csv`, `html`, `json`, `ldif`.
        format: &'static str,
        /// What failed.
        message: String,
    },
}

/// Result of this crate.
pub type Result<T, E = AssessError> = std::result::Result<T, E>;
