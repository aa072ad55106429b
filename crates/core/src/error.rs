//! Errors of the core model.

/// What went wrong while building or converting a model value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// An objectGUID (or other ImmutableID source) was not exactly 16 bytes.
    #[error("objectGUID must be exactly 16 bytes, got {len}")]
    GuidLength {
        /// The number of bytes that were given.
        len: usize,
    },
    /// A text could not be read as an ImmutableID in any accepted form.
    #[error("`{input}` is not an ImmutableID: expected base64 of 16 bytes, 32 hex digits or a GUID string")]
    ImmutableIdSyntax {
        /// The text that was given.
        input: String,
    },
    /// A distinguished name did not follow RFC 4514.
    #[error("`{input}` is not a valid DN: {reason}")]
    DnSyntax {
        /// The text that was given.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An anchor was empty.
    #[error("empty anchor")]
    EmptyAnchor,
}

/// Result alias of this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
