//! Exit codes, and the error that carries one.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the run completed with per-object errors |
//! | 2 | the run stopped (`stopped-*`), or the command could not finish (database failure) |
//! | 3 | configuration or usage error |
//! | 4 | not found (`show`, `runs --errors`, a file named on the command line) |
//!
//! `syncctl assess` speaks its own dialect for its findings: 0 ready, 1 warnings only, 2
//! blocking errors; 3 configuration or usage error, 4 a file not found, 5 a source could not be
//! read or a report could not be written.

use std::fmt;

/// How syncctl ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 0.
    Success,
    /// 1: completed with per-object errors.
    CompletedWithErrors,
    /// 2: stopped or failed.
    Stopped,
    /// 3: configuration or usage error.
    Usage,
    /// 4: not found.
    NotFound,
    /// 5: `assess` could not read a source or write a report.
    AssessFailed,
}

impl Code {
    /// The process exit status.
    pub fn status(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::CompletedWithErrors => 1,
            Self::Stopped => 2,
            Self::Usage => 3,
            Self::NotFound => 4,
            Self::AssessFailed => 5,
        }
    }

    /// The code an assessment's verdict ends the process with: 0 ready, 1 warnings only, 2
    /// blocking errors.
    pub fn for_verdict(verdict: syncctl_assess::Verdict) -> Self {
        match verdict {
            syncctl_assess::Verdict::Ready => Self::Success,
            syncctl_assess::Verdict::Warnings => Self::CompletedWithErrors,
            syncctl_assess::Verdict::Errors => Self::Stopped,
        }
    }

    /// The code a run status ends the process with.
    pub fn for_run_status(status: &str) -> Self {
        match status {
            "success" => Self::Success,
            "completed-with-errors" => Self::CompletedWithErrors,
            _ => Self::Stopped,
        }
    }
}

/// An error that ends the command, with the exit code it ends it with.
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// What went wrong (printed with its causes on stderr).
    pub error: anyhow::Error,
}

impl Failure {
    /// A configuration or usage error (exit 3).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self { code: Code::Usage, error: error.into() }
    }
    /// Something was not found (exit 4).
    pub fn not_found(error: impl Into<anyhow::Error>) -> Self {
        Self { code: Code::NotFound, error: error.into() }
    }
    /// `assess` could not read a source or write a report (exit 5).
    pub fn assess_failed(error: impl Into<anyhow::Error>) -> Self {
        Self { code: Code::AssessFailed, error: error.into() }
    }
    /// The command could not finish (exit 2).
    pub fn stopped(error: impl Into<anyhow::Error>) -> Self {
        Self { code: Code::Stopped, error: error.into() }
    }
}

/// Any other error (database, I/O) stops the command with exit 2.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::stopped(error)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (exit {})", self.error, self.code.status())
    }
}

/// What a command returns.
pub type CmdResult = Result<Code, Failure>;
