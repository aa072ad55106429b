//! Logs on stderr (tracing-subscriber), and the progress bar that shares stderr with them.
//!
//! The filter comes from `RUST_LOG` when it is set, else from `-v` (default `warn`, `-v`
//! `info`, `-vv` `debug`, `-vvv` `trace`). While a progress bar is drawn, log lines are written
//! with the bar suspended, so they do not tear it.

use std::io::{IsTerminal as _, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use syncctl_engine::ImportProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// The progress bar being drawn, if any (log lines suspend it).
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active_bar() -> Option<ProgressBar> {
    ACTIVE_BAR.lock().ok().and_then(|g| g.clone())
}

fn set_active_bar(bar: Option<ProgressBar>) {
    if let Ok(mut g) = ACTIVE_BAR.lock() {
        *g = bar;
    }
}

/// Installs the global subscriber. Called once, before anything logs. `quiet`: without `-v`,
/// only errors (`syncctl demo`, whose report says what the warnings would).
pub fn init(verbose: u8, format: LogFormat, quiet: bool) {
    let default = match verbose {
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let (filter, bad_env) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(default), Some(format!("ignoring RUST_LOG `{v}`: {e}"))),
        },
        _ => (EnvFilter::new(default), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(StderrLines)
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: cannot install the logger: {e}");
    }
    if let Some(msg) = bad_env {
        tracing::warn!("{msg}");
    }
}

/// Makes one buffered line writer per log event.
struct StderrLines;

impl<'a> MakeWriter<'a> for StderrLines {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::with_capacity(256))
    }
}

/// Collects one event and writes it to stderr when dropped, around the progress bar.
struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let write = || {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&self.0);
            let _ = err.flush();
        };
        match active_bar() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// The import progress spinner: objects processed, objects/s and changes. Drawn only when
/// stderr is a terminal and the output is not JSON; otherwise it does nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
}

impl Progress {
    /// A spinner labelled `label`, if `wanted` and stderr is a terminal.
    pub fn new(wanted: bool, label: &str) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Self { bar: None, start: Instant::now() };
        }
        // Hidden until styled and labelled, so that no half-made frame is drawn.
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner:.green} {prefix}: {human_pos} objects, {msg} [{elapsed}]")
        {
            bar.set_style(style);
        }
        bar.set_message("0 objects/s, 0 changes");
        bar.set_prefix(label.to_owned());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(120));
        set_active_bar(Some(bar.clone()));
        Self { bar: Some(bar), start: Instant::now() }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            set_active_bar(None);
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl ImportProgress for Progress {
    fn advance(&self, objects: u64, changes: u64) {
        if let Some(bar) = &self.bar {
            let secs = self.start.elapsed().as_secs_f64();
            let rate = if secs > 0.0 { objects as f64 / secs } else { 0.0 };
            bar.set_position(objects);
            bar.set_message(format!("{rate:.0} objects/s, {changes} changes"));
        }
    }
}

impl syncctl_engine::SyncProgress for Progress {
    fn advance(&self, processed: u64, total: u64) {
        if let Some(bar) = &self.bar {
            let secs = self.start.elapsed().as_secs_f64();
            let rate = if secs > 0.0 { processed as f64 / secs } else { 0.0 };
            bar.set_position(processed);
            bar.set_message(format!("{rate:.0} objects/s, of {total}"));
        }
    }
}
