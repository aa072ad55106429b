//! Errors of the Graph connector. None carries a secret or a token.

use syncctl_core::{ConnectorFault, FaultKind};

/// What went wrong talking to Graph.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GraphError {
    /// The settings cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The token endpoint refused the app.
    #[error("authentication: {0}")]
    Auth(String),
    /// Graph answered with an error.
    #[error("HTTP {status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Graph's `error.code`.
        code: String,
        /// Graph's `error.message`, plus the first detail code when there is one.
        message: String,
        /// `error.details[0].code` (`ObjectConflict`...).
        detail: Option<String>,
    },
    /// The request did not complete (connection refused or dropped, timeout).
    #[error("transport: {0}")]
    Transport(String),
    /// The answer could not be understood.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Result with [`GraphError`].
pub type Result<T> = std::result::Result<T, GraphError>;

impl GraphError {
    /// The connector fault this error ends an import or export with.
    pub fn into_fault(self, endpoint: &str) -> ConnectorFault {
        let kind = match &self {
            Self::Config(_) => FaultKind::Config,
            Self::Auth(_) => FaultKind::Authentication,
            Self::Http { status: 401, .. } => FaultKind::Authentication,
            Self::Http { status: 403, .. } => FaultKind::Permission,
            Self::Http { code, .. } if code == "syncStateNotFound" => FaultKind::WatermarkInvalid,
            Self::Http { status: 410, .. } => FaultKind::WatermarkInvalid,
            Self::Http { .. } | Self::Protocol(_) => FaultKind::Protocol,
            Self::Transport(m) if m.contains("certificate") || m.contains("tls") => FaultKind::Tls,
            Self::Transport(_) => FaultKind::Connectivity,
        };
        ConnectorFault::new(kind, endpoint, self.to_string())
    }
}

/// Transport error text, without the URL (which could carry a skip token).
pub(crate) fn transport(e: &reqwest::Error) -> GraphError {
    let mut text = e.without_url_ref_text();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    GraphError::Transport(text)
}

trait WithoutUrl {
    fn without_url_ref_text(&self) -> String;
}
impl WithoutUrl for reqwest::Error {
    fn without_url_ref_text(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connect() {
            "connection failed".into()
        } else if self.is_body() || self.is_decode() {
            "reading the answer failed".into()
        } else {
            "request failed".into()
        }
    }
}
