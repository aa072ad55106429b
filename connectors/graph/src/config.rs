//! Settings of a Graph connector, validated before any request.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{GraphError, Result};

/// Graph's largest page (`$top`).
pub const MAX_PAGE_SIZE: u32 = 999;

/// The settings of one Graph connector (TOML `[connectors.<name>]` minus the `kind`).
///
/// The client secret itself is never part of the settings: it is read from the environment
/// variable named by `client_secret_env` or from the file named by `client_secret_file`.
/// A `client_secret` key is refused (unknown field).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// The tenant: its id or a domain (`contoso.onmicrosoft.com`).
    pub tenant: String,
    /// The application (client) id.
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// File holding the client secret (surrounding whitespace ignored).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The token authority; the token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// The Graph base URL, version included.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// The OAuth2 scope asked for.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// `$top` of list requests (1..=999).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Writes allowed per `write_window_seconds` (client-side pacer).
    #[serde(default = "default_write_budget")]
    pub write_budget: u32,
    /// Length of the pacer's sliding window, in seconds.
    #[serde(default = "default_write_window")]
    pub write_window_seconds: u64,
    /// `$batch` requests in flight at once during an export, and during a full import's reads of
    /// groups' members (1 sends them one after another). Graph runs the requests of separate
    /// batches independently; the pacer still holds the writes of all of them to `write_budget`
    /// (reads are not paced).
    #[serde(default = "default_concurrent_batches")]
    pub concurrent_batches: u32,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_scope() -> String {
    "https://graph.microsoft.com/.default".into()
}
fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}
fn default_write_budget() -> u32 {
    3000
}
fn default_write_window() -> u64 {
    150
}
fn default_concurrent_batches() -> u32 {
    4
}
/// Most `$batch` requests a client keeps in flight.
pub const MAX_CONCURRENT_BATCHES: u32 = 16;

impl GraphConfig {
    /// Settings with defaults for everything but the identity of the app.
    pub fn new(tenant: &str, client_id: &str) -> Self {
        Self {
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret_env: None,
            client_secret_file: None,
            authority: default_authority(),
            graph_url: default_graph_url(),
            scope: default_scope(),
            page_size: default_page_size(),
            write_budget: default_write_budget(),
            write_window_seconds: default_write_window(),
            concurrent_batches: default_concurrent_batches(),
        }
    }

    /// Checks the settings: one secret source, usable URLs (HTTPS, or plain HTTP to a loopback
    /// address only, for the emulator), page size and budget in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraphError::Config(m));
        if self.tenant.trim().is_empty() || self.tenant.contains('/') {
            return bad("`tenant` must be a tenant id or domain".into());
        }
        if self.client_id.trim().is_empty() {
            return bad("`client_id` is empty".into());
        }
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                return bad("set only one of `client_secret_env` and `client_secret_file`".into());
            }
            (None, None) => {
                return bad("set `client_secret_env` or `client_secret_file` (the secret itself is never in the settings)".into());
            }
            _ => {}
        }
        check_url("authority", &self.authority)?;
        check_url("graph_url", &self.graph_url)?;
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return bad(format!("`page_size` must be 1..={MAX_PAGE_SIZE}, not {}", self.page_size));
        }
        if self.write_budget == 0 || self.write_window_seconds == 0 {
            return bad("`write_budget` and `write_window_seconds` must be positive".into());
        }
        if self.concurrent_batches == 0 || self.concurrent_batches > MAX_CONCURRENT_BATCHES {
            return bad(format!(
                "`concurrent_batches` must be 1..={MAX_CONCURRENT_BATCHES}, not {}",
                self.concurrent_batches
            ));
        }
        Ok(())
    }

    /// Reads the client secret from its environment variable or file.
    pub fn load_secret(&self) -> Result<Secret> {
        let text = if let Some(var) = &self.client_secret_env {
            std::env::var(var).map_err(|_| {
                GraphError::Config(format!("environment variable `{var}` (client secret) is not set"))
            })?
        } else if let Some(path) = &self.client_secret_file {
            std::fs::read_to_string(path)
                .map_err(|e| GraphError::Config(format!("client secret file {}: {e}", path.display())))?
        } else {
            return Err(GraphError::Config("no client secret source".into()));
        };
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err(GraphError::Config("the client secret is empty".into()));
        }
        Ok(Secret(text))
    }
}

/// `https://` anywhere; `http://` only to a loopback host (the emulator).
fn check_url(key: &str, text: &str) -> Result<()> {
    let url =
        reqwest::Url::parse(text).map_err(|e| GraphError::Config(format!("`{key}` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(GraphError::Config(format!(
            "`{key}` uses plain http:// to a non-loopback host; use https://"
        ))),
        other => Err(GraphError::Config(format!("`{key}` has unsupported scheme `{other}`"))),
    }
}

/// True for a URL whose host is a loopback address or `localhost`.
pub(crate) fn loopback_url(text: &str) -> bool {
    reqwest::Url::parse(text).is_ok_and(|u| is_loopback(&u))
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A client secret: never shown by `Debug` or `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret from its text (tests).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
