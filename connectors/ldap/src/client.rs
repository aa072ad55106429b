//! Connection handling: TLS, bind, searches with paging and range retrieval, and the mapping
//! of every failure to a [`ConnectorFault`] that names the endpoint.

use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError as Ldap3Error, LdapResult, ResultEntry,
    Scope as LdapScope,
};
use syncctl_core::{ConnectorFault, FaultKind};
use tracing::debug;

use crate::config::{LdapConfig, Security};
use crate::controls;
use crate::entry::{RawEntry, parse_entry, split_description};

/// An open, bound connection.
pub struct Client {
    ldap: Ldap,
    /// The URL, for messages.
    pub endpoint: String,
    timeout: Duration,
    /// Page size for paged searches.
    pub page_size: i32,
    /// Forced range size (0: the server's).
    pub range_size: u32,
    /// Pages read so far.
    pub pages: u64,
}

/// What one search returned.
pub struct SearchOutput {
    /// Entries (search references dropped).
    pub entries: Vec<ResultEntry>,
    /// Intermediate messages (RFC 4533 Sync Info).
    pub intermediates: Vec<ResultEntry>,
    /// The final result with its controls.
    pub result: LdapResult,
}

fn fault(kind: FaultKind, endpoint: &str, message: impl Into<String>) -> ConnectorFault {
    ConnectorFault::new(kind, endpoint, message)
}

/// Maps an `ldap3` error to a fault.
pub fn map_error(endpoint: &str, what: &str, e: Ldap3Error) -> ConnectorFault {
    let text = e.to_string();
    let kind = match &e {
        Ldap3Error::Io { source } if is_tls_io(source) => FaultKind::Tls,
        Ldap3Error::Rustls { .. } | Ldap3Error::DNSName { .. } => FaultKind::Tls,
        Ldap3Error::LdapResult { result } => return result_fault(endpoint, what, result),
        _ => FaultKind::Connectivity,
    };
    let message = match kind {
        FaultKind::Tls => format!(
            "{what}: TLS failed, the server's certificate was not verified or the handshake was refused ({text})"
        ),
        _ => format!("{what}: {text}"),
    };
    fault(kind, endpoint, message)
}

fn is_tls_io(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        || e.to_string().contains("certificate")
        || e.kind() == std::io::ErrorKind::InvalidData
}

/// Maps an LDAP result code to a fault.
pub fn result_fault(endpoint: &str, what: &str, r: &LdapResult) -> ConnectorFault {
    let kind = match r.rc {
        49 => FaultKind::Authentication,
        8 | 13 | 48 => FaultKind::Authentication,
        50 => FaultKind::Permission,
        51 | 52 | 81 => FaultKind::Connectivity,
        32 | 34 => FaultKind::Config,
        _ => FaultKind::Protocol,
    };
    let detail =
        if r.text.is_empty() { String::new() } else { format!(": {}", r.text.trim_end_matches('\0')) };
    let hint = match r.rc {
        49 => " (invalid credentials: check bind_dn and the password)",
        8 => " (the server requires a protected connection: use ldaps or starttls)",
        50 => " (insufficient access rights)",
        32 => " (the base DN does not exist)",
        _ => "",
    };
    fault(kind, endpoint, format!("{what}: LDAP result code {}{hint}{detail}", r.rc))
}

fn tls_config(config: &LdapConfig, endpoint: &str) -> Result<Arc<rustls::ClientConfig>, ConnectorFault> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                fault(FaultKind::Config, endpoint, format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let mut reader = std::io::Cursor::new(pem);
            let mut found = 0;
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(|e| {
                    fault(FaultKind::Config, endpoint, format!("ca_file {} is not PEM: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    fault(
                        FaultKind::Config,
                        endpoint,
                        format!("ca_file {} holds an unusable certificate: {e}", path.display()),
                    )
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(fault(
                    FaultKind::Config,
                    endpoint,
                    format!("ca_file {} holds no certificate", path.display()),
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fault(FaultKind::Tls, endpoint, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl Client {
    /// Connects (TLS as configured, verification always on) and binds.
    pub async fn connect(name: &str, config: &LdapConfig) -> Result<Self, ConnectorFault> {
        let endpoint = config.url.clone();
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let mut settings = LdapConnSettings::new().set_conn_timeout(timeout);
        match config.security() {
            Security::Plain => {}
            Security::Ldaps => settings = settings.set_config(tls_config(config, &endpoint)?),
            Security::Starttls => {
                settings = settings.set_config(tls_config(config, &endpoint)?).set_starttls(true)
            }
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &config.url)
            .await
            .map_err(|e| map_error(&endpoint, "connect", e))?;
        let drive_endpoint = endpoint.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                debug!(endpoint = %drive_endpoint, error = %e, "the LDAP connection ended");
            }
        });
        let password =
            config.password(name).map_err(|e| fault(FaultKind::Config, &endpoint, e.to_string()))?;
        ldap.with_timeout(timeout);
        let bound = ldap
            .simple_bind(&config.bind_dn, password.expose())
            .await
            .map_err(|e| map_error(&endpoint, "bind", e))?;
        if bound.rc != 0 {
            return Err(result_fault(&endpoint, &format!("bind as `{}`", config.bind_dn), &bound));
        }
        Ok(Self {
            ldap,
            endpoint,
            timeout,
            page_size: config.page_size,
            range_size: config.range_size,
            pages: 0,
        })
    }

    /// Unbinds (errors ignored: the import is already decided).
    pub async fn close(&mut self) {
        let _ = self.ldap.unbind().await;
    }

    /// One search with the given controls; every entry is collected, references dropped.
    pub async fn search(
        &mut self,
        base: &str,
        scope: LdapScope,
        filter: &str,
        attrs: &[String],
        ctrls: Vec<RawControl>,
    ) -> Result<SearchOutput, ConnectorFault> {
        let what = format!("search of `{base}`");
        self.ldap.with_timeout(self.timeout);
        if !ctrls.is_empty() {
            self.ldap.with_controls(ctrls);
        }
        let mut stream = self
            .ldap
            .streaming_search(base, scope, filter, attrs.to_vec())
            .await
            .map_err(|e| map_error(&self.endpoint, &what, e))?;
        let mut entries = Vec::new();
        let mut intermediates = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(re)) if re.is_ref() => continue,
                Ok(Some(re)) if re.is_intermediate() => intermediates.push(re),
                Ok(Some(re)) => entries.push(re),
                Ok(None) => break,
                Err(e) => {
                    let f = map_error(&self.endpoint, &what, e);
                    return Err(ConnectorFault::new(
                        f.kind,
                        f.endpoint,
                        format!("{} (the connection failed in the middle of a result page)", f.message),
                    ));
                }
            }
        }
        let result = stream.finish().await;
        // 10 = referral: AD answers that for a base outside its naming contexts.
        if result.rc == 80 && result.text.contains("stream") {
            return Err(fault(
                FaultKind::Connectivity,
                &self.endpoint,
                format!("{what}: the server closed the connection"),
            ));
        }
        Ok(SearchOutput { entries, intermediates, result })
    }

    /// Reads the next page of a paged search. `cookie` is empty for the first page; on return
    /// it holds the next page's cookie (empty when the search is complete).
    pub async fn next_page(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        cookie: &mut Vec<u8>,
        extra: Vec<RawControl>,
    ) -> Result<Vec<RawEntry>, ConnectorFault> {
        let mut ctrls = vec![controls::paged(self.page_size, cookie)];
        ctrls.extend(extra);
        let out = self.search(base, LdapScope::Subtree, filter, attrs, ctrls).await?;
        if out.result.rc != 0 {
            return Err(result_fault(&self.endpoint, &format!("paged search of `{base}`"), &out.result));
        }
        self.pages += 1;
        let next = match controls::paged_cookie(&out.result.ctrls) {
            Some(next) => next,
            // A server that ignores the (non-critical) control answers the whole search at once;
            // but without the control on a later page, the rest of the results would be lost and
            // a sweep would take the unread objects for deleted.
            None if cookie.is_empty() => Vec::new(),
            None => {
                return Err(fault(
                    FaultKind::Protocol,
                    &self.endpoint,
                    format!("paged search of `{base}`: a page came back without the paged-results control"),
                ));
            }
        };
        if !next.is_empty() && next == *cookie && out.entries.is_empty() {
            return Err(fault(
                FaultKind::Protocol,
                &self.endpoint,
                format!("paged search of `{base}`: the server returned the same cookie and no entry"),
            ));
        }
        *cookie = next;
        debug!(entries = out.entries.len(), more = !cookie.is_empty(), "page read");
        self.decode_entries(out.entries)
    }

    /// Decodes entries; an undecodable entry is a protocol fault (the whole page is suspect).
    pub fn decode_entries(&self, entries: Vec<ResultEntry>) -> Result<Vec<RawEntry>, ConnectorFault> {
        entries
            .into_iter()
            .map(|re| {
                parse_entry(re.0).map_err(|m| {
                    fault(FaultKind::Protocol, &self.endpoint, format!("malformed search entry: {m}"))
                })
            })
            .collect()
    }

    /// Reads one object by DN (base search); `None` when it no longer exists.
    pub async fn read(
        &mut self,
        dn: &str,
        attrs: &[String],
        ctrls: Vec<RawControl>,
    ) -> Result<Option<RawEntry>, ConnectorFault> {
        let out = self.search(dn, LdapScope::Base, "(objectClass=*)", attrs, ctrls).await?;
        match out.result.rc {
            0 => Ok(self.decode_entries(out.entries)?.into_iter().next()),
            32 => Ok(None),
            _ => Err(result_fault(&self.endpoint, &format!("read of `{dn}`"), &out.result)),
        }
    }

    /// Completes attributes returned in ranges (`member;range=0-1499`): asks for the following
    /// ranges of `attr` on `dn` until one ends in `*`, and returns the extra values.
    pub async fn read_remaining_range(
        &mut self,
        dn: &str,
        attr: &str,
        mut start: u64,
    ) -> Result<Vec<Vec<u8>>, ConnectorFault> {
        let mut values = Vec::new();
        for _ in 0..1_000_000 {
            let spec = if self.range_size > 0 {
                format!("{attr};range={start}-{}", start.saturating_add(u64::from(self.range_size) - 1))
            } else {
                format!("{attr};range={start}-*")
            };
            let Some(entry) = self.read(dn, &[spec], vec![]).await? else {
                // Renamed or deleted since its page was read: the values read so far are not the
                // whole set, and storing them as such would drop members.
                return Err(fault(
                    FaultKind::Protocol,
                    &self.endpoint,
                    format!("`{dn}` changed while the ranges of `{attr}` were read; run the import again"),
                ));
            };
            let mut next = None;
            let mut got_any = false;
            for (desc, vals) in entry.attrs {
                let (base, range) = split_description(&desc);
                if !base.eq_ignore_ascii_case(attr) {
                    continue;
                }
                got_any = true;
                values.extend(vals);
                next = match range {
                    Some(r) => r.high.and_then(|h| h.checked_add(1)),
                    None => None,
                };
            }
            match next {
                Some(n) if got_any && n > start => start = n,
                _ => return Ok(values),
            }
        }
        Err(fault(
            FaultKind::Protocol,
            &self.endpoint,
            format!("`{dn}`: range retrieval of `{attr}` did not end"),
        ))
    }

    /// Reads the root DSE.
    pub async fn root_dse(&mut self) -> Result<RawEntry, ConnectorFault> {
        let attrs: Vec<String> = [
            "defaultNamingContext",
            "dsServiceName",
            "highestCommittedUSN",
            "contextCSN",
            "namingContexts",
            "supportedControl",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let out = self.search("", LdapScope::Base, "(objectClass=*)", &attrs, vec![]).await?;
        if out.result.rc != 0 {
            return Err(result_fault(&self.endpoint, "read of the root DSE", &out.result));
        }
        self.decode_entries(out.entries)?
            .into_iter()
            .next()
            .ok_or_else(|| fault(FaultKind::Protocol, &self.endpoint, "the root DSE is not readable"))
    }
}

/// Hands a batch to the engine; a closed channel means the engine stopped reading.
pub async fn send(
    tx: &tokio::sync::mpsc::Sender<syncctl_core::ImportBatch>,
    endpoint: &str,
    batch: syncctl_core::ImportBatch,
) -> Result<(), ConnectorFault> {
    tx.send(batch).await.map_err(|_| fault(FaultKind::Cancelled, endpoint, "the engine stopped reading"))
}

/// The first value of an attribute as text.
pub fn text(entry: &RawEntry, name: &str) -> Option<String> {
    entry.values(name).and_then(|v| v.first()).and_then(|b| String::from_utf8(b.clone()).ok())
}
