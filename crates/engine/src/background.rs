//! Store work handed to a task of its own while the run goes on: an import batch's write while
//! the next batch is diffed, an export chunk's results and the next chunk's reads while a chunk is
//! out at the target. At most one piece of work per [`Background`]; whoever starts the next one
//! settles the last first, so writes keep their order.
//!
//! Must not: let a failure pass unnoticed (settling returns the task's error, or says it
//! panicked), or outlive its run (dropping a `Background` aborts the task; a write aborted
//! before its commit is rolled back whole).

use std::future::Future;

use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};

/// One piece of work in a task of its own, or none.
pub(crate) struct Background<T> {
    /// What it is, for the error should the task stop before it finished.
    what: &'static str,
    handle: Option<JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Background<T> {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, handle: None }
    }

    /// Starts `work` in a task of its own, in the current span. The work in flight, if any, is
    /// settled first: its error is returned and `work` is not started.
    pub(crate) async fn start(
        &mut self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<()> {
        self.settle().await?;
        self.handle = Some(tokio::spawn(tracing::Instrument::in_current_span(work)));
        Ok(())
    }

    /// Waits for the work in flight: its result, or `None` when there was none.
    pub(crate) async fn settle(&mut self) -> Result<Option<T>> {
        match self.handle.take() {
            None => Ok(None),
            Some(handle) => match handle.await {
                Ok(result) => result.map(Some),
                Err(e) => Err(EngineError::Task { what: self.what, detail: e.to_string() }),
            },
        }
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settling_returns_the_work_s_result_or_its_error() {
        let mut b: Background<u32> = Background::new("a test's work");
        assert!(b.settle().await.unwrap().is_none());
        b.start(async { Ok(7) }).await.unwrap();
        assert_eq!(b.settle().await.unwrap(), Some(7));
        b.start(async { Err(EngineError::Task { what: "inner", detail: "failed".into() }) }).await.unwrap();
        // The next start settles the failed work first and reports its error.
        let err = b.start(async { Ok(8) }).await.unwrap_err();
        assert!(err.to_string().contains("inner"), "{err}");
        assert!(b.settle().await.unwrap().is_none(), "the work after a failure was not started");
    }

    async fn boom() -> Result<()> {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_task_that_panics_is_an_error_that_names_the_work() {
        let mut b: Background<()> = Background::new("the write of a test batch");
        b.start(boom()).await.unwrap();
        let err = b.settle().await.unwrap_err();
        assert!(err.to_string().starts_with("the write of a test batch stopped before it finished"), "{err}");
    }
}
