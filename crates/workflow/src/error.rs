//! Errors of the workflow crate. None of them ever carries a password: SMTP errors are built
//! from the server's replies and the connection's own errors, never from what was sent for AUTH.

use std::fmt;

/// A configuration or runtime failure of the notification workflows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The `[[sets]]`, `[[policies]]` or `[[workflows]]` configuration is not valid.
    #[error("{what}: {message}")]
    Config {
        /// The entry (`set `sales``, `workflow `welcome` activity 1`).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] syncctl_store::StoreError),
    /// Delivery could not be set up (a CA file that cannot be read, a bad sender address).
    #[error("mail delivery: {0}")]
    Delivery(String),
}

impl WorkflowError {
    pub(crate) fn config(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { what: what.into(), message: message.into() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = WorkflowError> = std::result::Result<T, E>;

/// What went wrong talking to the SMTP relay (or writing to the directory sink), with the
/// server's reply when there is one. Its text explains the likely cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpError {
    /// The kind of failure.
    pub kind: SmtpErrorKind,
    /// The relay, `host:port`.
    pub relay: String,
    /// The server's reply (`550 5.7.1 ...`) or the connection's error.
    pub detail: String,
}

/// Kinds of [`SmtpError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SmtpErrorKind {
    /// No connection (refused, unreachable, timed out, cut).
    Connect,
    /// The TLS handshake failed (most often: the certificate does not verify).
    Tls,
    /// STARTTLS is required and the server does not offer it.
    NoStartTls,
    /// Credentials are configured and the server offers no AUTH PLAIN or LOGIN.
    NoAuth,
    /// The server refused the credentials.
    AuthFailed,
    /// A 4xx reply: try again later.
    Transient,
    /// A 5xx reply: the server refuses this message.
    Permanent,
    /// The directory sink could not write the message.
    Directory,
    /// The message could not be built (an address that does not parse).
    Message,
}

impl SmtpError {
    /// True for a refusal that retrying will not change by itself (5xx, bad message).
    pub fn is_permanent(&self) -> bool {
        matches!(self.kind, SmtpErrorKind::Permanent | SmtpErrorKind::Message)
    }

    /// True when the whole connection failed (every message of the pass is affected).
    pub fn is_connection(&self) -> bool {
        matches!(
            self.kind,
            SmtpErrorKind::Connect
                | SmtpErrorKind::Tls
                | SmtpErrorKind::NoStartTls
                | SmtpErrorKind::NoAuth
                | SmtpErrorKind::AuthFailed
                | SmtpErrorKind::Directory
        )
    }

    /// The likely cause and what to change, for people.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            SmtpErrorKind::Connect => {
                "the relay did not answer: check [mail.smtp] host and port, and that the relay is up and reachable"
            }
            SmtpErrorKind::Tls => {
                "the TLS handshake failed: if the server's certificate does not verify, set [mail.smtp] ca_file to the \
                 CA that signs it (certificate verification cannot be turned off); with security = \"tls\" the port \
                 must speak TLS from the first byte (usually 465)"
            }
            SmtpErrorKind::NoStartTls => {
                "the server does not offer STARTTLS and security = \"starttls\" requires it: use the submission port \
                 (587), or security = \"tls\" for a port that speaks TLS from the first byte; \"plain\" sends the \
                 password in the clear and must be written out"
            }
            SmtpErrorKind::NoAuth => {
                "the server offers no AUTH PLAIN or LOGIN on this connection: Office 365 offers AUTH only after \
                 STARTTLS, and only when SMTP AUTH is enabled for the account"
            }
            SmtpErrorKind::AuthFailed => {
                "the relay refused the account: check [mail.smtp] username and the password its password_env or \
                 password_file holds (Office 365: SMTP AUTH must be enabled for the mailbox, and security defaults \
                 block it)"
            }
            SmtpErrorKind::Transient => "the relay asked to try again later: the message stays queued",
            SmtpErrorKind::Permanent => {
                "the relay refused the message: if it says the client may not send as this sender, the sender must \
                 be in the relay account's own domain (run `syncctl assess` or `syncctl mail test`)"
            }
            SmtpErrorKind::Directory => {
                "the directory sink could not write: check [mail] directory and its permissions"
            }
            SmtpErrorKind::Message => "the message could not be built: an address does not parse",
        }
    }
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            SmtpErrorKind::Connect => "cannot connect to",
            SmtpErrorKind::Tls => "TLS handshake failed with",
            SmtpErrorKind::NoStartTls => "STARTTLS is not offered by",
            SmtpErrorKind::NoAuth => "AUTH PLAIN or LOGIN is not offered by",
            SmtpErrorKind::AuthFailed => "authentication refused by",
            SmtpErrorKind::Transient => "temporary refusal from",
            SmtpErrorKind::Permanent => "permanent refusal from",
            SmtpErrorKind::Directory => "cannot write the message to",
            SmtpErrorKind::Message => "cannot build the message for",
        };
        write!(f, "{what} {}: {}", self.relay, self.detail)
    }
}

impl std::error::Error for SmtpError {}
