//! OpenLDAP imports: full (paged) and delta through RFC 4533 refreshOnly content sync.

use std::collections::BTreeMap;

use ldap3::Scope as LdapScope;
use syncctl_core::{
    Anchor, ConnectorFault, FaultKind, ImportBatch, ImportChange, ImportMode, ImportRequest, ImportSummary,
    Watermark,
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::client::{Client, result_fault, send};
use crate::config::LdapConfig;
use crate::controls::{self, SyncInfo, SyncState};
use crate::entry::{Decoded, Scope, decode, parse_entry};

/// Changes per batch handed to the engine.
const BATCH: usize = 1000;
/// e-syncRefreshRequired (RFC 4533): the cookie is too old, a full reload is needed.
const SYNC_REFRESH_REQUIRED: u32 = 4096;

pub async fn import(
    client: &mut Client,
    config: &LdapConfig,
    scope: &Scope,
    request: ImportRequest,
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    let server = format!("{}/{}", config.url, scope.base.normalized());
    match request.mode {
        ImportMode::Full => full(client, scope, &server, tx).await,
        ImportMode::Delta => {
            let wm = request.watermark.ok_or_else(|| invalid(client, "there is no watermark"))?;
            if wm.kind != "syncrepl" {
                return Err(invalid(
                    client,
                    &format!("the watermark is of kind `{}`, not syncrepl", wm.kind),
                ));
            }
            if scope.anchor_attribute != "entryuuid" {
                return Err(invalid(
                    client,
                    "RFC 4533 reports deletes by entryUUID, and this connector's anchor is another attribute",
                ));
            }
            if wm.server != server {
                return Err(invalid(
                    client,
                    &format!("the watermark belongs to `{}`, not `{server}`", wm.server),
                ));
            }
            delta(client, scope, &server, &wm.value, tx).await
        }
    }
}

fn invalid(client: &Client, why: &str) -> ConnectorFault {
    ConnectorFault::new(
        FaultKind::WatermarkInvalid,
        &client.endpoint,
        format!("delta import impossible: {why}"),
    )
}

/// An organizationalUnit entry (not one of the object types).
fn is_ou(raw: &crate::entry::RawEntry) -> bool {
    let classes = raw.values("objectClass").unwrap_or(&[]);
    classes.iter().any(|c| c.eq_ignore_ascii_case(b"organizationalUnit"))
        && !classes
            .iter()
            .any(|c| c.eq_ignore_ascii_case(b"inetOrgPerson") || c.eq_ignore_ascii_case(b"groupOfNames"))
}

fn mark(server: &str, cookie: Vec<u8>) -> Watermark {
    Watermark { kind: "syncrepl".into(), value: cookie, server: server.to_owned(), extra: BTreeMap::new() }
}

/// A sync cookie for "now": a refreshOnly search that matches nothing ends with the server's
/// current cookie.
async fn bootstrap(client: &mut Client, scope: &Scope) -> Result<Vec<u8>, ConnectorFault> {
    let out = client
        .search(
            scope.base.as_str(),
            LdapScope::Subtree,
            "(&(objectClass=inetOrgPerson)(objectClass=groupOfNames))",
            &["entryUUID".to_owned()],
            vec![controls::sync_refresh_only(None)],
        )
        .await?;
    if out.result.rc != 0 {
        let f = result_fault(&client.endpoint, "content synchronization (RFC 4533)", &out.result);
        let hint = if out.result.rc == 12 { " (the server lacks the syncprov overlay)" } else { "" };
        return Err(ConnectorFault::new(f.kind, f.endpoint, format!("{}{hint}", f.message)));
    }
    let mut cookie = controls::sync_done(&out.result.ctrls).and_then(|(c, _)| c);
    for im in &out.intermediates {
        match controls::sync_info(&im.0) {
            Some(SyncInfo::NewCookie(c)) => cookie = Some(c),
            Some(SyncInfo::RefreshDone { cookie: Some(c) })
            | Some(SyncInfo::IdSet { cookie: Some(c), .. }) => cookie = Some(c),
            _ => {}
        }
    }
    cookie.ok_or_else(|| {
        ConnectorFault::new(FaultKind::Protocol, &client.endpoint, "the sync answer carries no cookie")
    })
}

async fn full(
    client: &mut Client,
    scope: &Scope,
    server: &str,
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    let cookie = bootstrap(client, scope).await?;
    let filter = scope.filter();
    let attrs = scope.requested.clone();
    let mut page_cookie = Vec::new();
    let base = scope.base.as_str().to_owned();
    loop {
        let raws = client.next_page(&base, &filter, &attrs, &mut page_cookie, vec![]).await?;
        let mut changes = Vec::with_capacity(raws.len());
        for raw in raws {
            match decode(raw, scope) {
                Decoded::Object { object, .. } => changes.push(ImportChange::Present(object)),
                Decoded::Invalid(e) => {
                    warn!(dn = %e.dn, "{}", e.message);
                    changes.push(ImportChange::Invalid(e));
                }
                Decoded::OutOfScope { .. } | Decoded::Deleted { .. } => {}
            }
        }
        send(tx, &client.endpoint, ImportBatch { changes, watermark: None }).await?;
        if page_cookie.is_empty() {
            break;
        }
    }
    Ok(ImportSummary {
        final_watermark: Some(mark(server, cookie)),
        sweep_unseen: true,
        method: "paged-search".into(),
        pages: client.pages,
        notes: vec![],
    })
}

/// The anchor of an entryUUID sent as 16 raw bytes; anything else is a protocol fault (skipping
/// it would let a sweep delete the object it names).
fn uuid_anchor(client: &Client, bytes: &[u8]) -> Result<Anchor, ConnectorFault> {
    uuid::Uuid::from_slice(bytes).ok().and_then(|u| Anchor::new(u.hyphenated().to_string()).ok()).ok_or_else(
        || {
            ConnectorFault::new(
                FaultKind::Protocol,
                &client.endpoint,
                format!("a sync message names an entryUUID of {} bytes", bytes.len()),
            )
        },
    )
}

async fn delta(
    client: &mut Client,
    scope: &Scope,
    server: &str,
    cookie: &[u8],
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    // OUs too: a renamed or moved OU is reported alone, not the entries whose DN changed with it.
    let filter = format!("(|{}(objectClass=organizationalUnit))", scope.filter());
    let out = client
        .search(
            scope.base.as_str(),
            LdapScope::Subtree,
            &filter,
            &scope.requested,
            vec![controls::sync_refresh_only(Some(cookie))],
        )
        .await?;
    if out.result.rc == SYNC_REFRESH_REQUIRED {
        return Err(invalid(client, "the server asks for a full reload (e-syncRefreshRequired)"));
    }
    if out.result.rc != 0 {
        return Err(result_fault(&client.endpoint, "content synchronization (RFC 4533)", &out.result));
    }
    client.pages += 1;
    let mut changes = Vec::new();
    let mut new_cookie: Option<Vec<u8>> = None;
    for re in out.entries {
        let state = controls::sync_state(&re.1);
        let raw = parse_entry(re.0).map_err(|m| {
            ConnectorFault::new(FaultKind::Protocol, &client.endpoint, format!("malformed search entry: {m}"))
        })?;
        match state {
            Some((SyncState::Present, uuid)) => {
                let anchor = uuid_anchor(client, &uuid)?;
                // The DN of a present entry tells a move with its parent apart.
                let dn = std::str::from_utf8(&raw.dn)
                    .ok()
                    .and_then(|t| syncctl_core::Dn::parse(t).ok())
                    .filter(|d| !d.is_empty());
                changes.push(ImportChange::Unchanged { anchor, dn });
            }
            Some((SyncState::Delete, uuid)) => {
                let anchor = uuid_anchor(client, &uuid)?;
                changes.push(ImportChange::Deleted { anchor, dn: None });
            }
            _ if is_ou(&raw) => {
                // Added, renamed or moved: read its subtree, so that what moved with it is diffed
                // (a rename for a known entry, an add when it came into scope, a delete when out).
                let base = raw.dn_lossy();
                let mut page_cookie = Vec::new();
                loop {
                    let raws = client
                        .next_page(&base, &scope.filter(), &scope.requested, &mut page_cookie, vec![])
                        .await?;
                    for raw in raws {
                        match decode(raw, scope) {
                            Decoded::Object { object, .. } => changes.push(ImportChange::Present(object)),
                            Decoded::OutOfScope { anchor: Some(anchor), dn } => {
                                changes.push(ImportChange::Deleted { anchor, dn })
                            }
                            Decoded::Invalid(e) => changes.push(ImportChange::Invalid(e)),
                            _ => {}
                        }
                    }
                    if page_cookie.is_empty() {
                        break;
                    }
                }
            }
            _ => match decode(raw, scope) {
                Decoded::Object { object, .. } => changes.push(ImportChange::Present(object)),
                Decoded::OutOfScope { anchor: Some(anchor), dn } => {
                    changes.push(ImportChange::Deleted { anchor, dn })
                }
                Decoded::OutOfScope { .. } => {}
                Decoded::Deleted { anchor, dn } => changes.push(ImportChange::Deleted { anchor, dn }),
                Decoded::Invalid(e) => changes.push(ImportChange::Invalid(e)),
            },
        }
        if changes.len() >= BATCH {
            send(
                tx,
                &client.endpoint,
                ImportBatch { changes: std::mem::take(&mut changes), watermark: None },
            )
            .await?;
        }
    }
    for im in &out.intermediates {
        match controls::sync_info(&im.0) {
            Some(SyncInfo::IdSet { cookie, refresh_deletes, uuids }) => {
                for u in uuids {
                    {
                        let anchor = uuid_anchor(client, &u)?;
                        changes.push(if refresh_deletes {
                            ImportChange::Deleted { anchor, dn: None }
                        } else {
                            ImportChange::Unchanged { anchor, dn: None }
                        });
                    }
                }
                if cookie.is_some() {
                    new_cookie = cookie;
                }
            }
            Some(SyncInfo::NewCookie(c)) => new_cookie = Some(c),
            Some(SyncInfo::RefreshDone { cookie: Some(c) }) => new_cookie = Some(c),
            _ => {}
        }
    }
    send(tx, &client.endpoint, ImportBatch { changes, watermark: None }).await?;
    let (done_cookie, refresh_deletes) = controls::sync_done(&out.result.ctrls).unwrap_or((None, true));
    let cookie = done_cookie.or(new_cookie).unwrap_or_else(|| cookie.to_vec());
    // In the present phase (refreshDeletes FALSE) every entry still there was reported, so the
    // rest are gone (RFC 4533 section 3.3.1). OpenLDAP answers TRUE when nothing changed.
    let sweep = !refresh_deletes;
    let mut notes = Vec::new();
    if sweep {
        notes.push(
            "the server answered with a present phase: objects it did not list were deleted".to_owned(),
        );
    }
    Ok(ImportSummary {
        final_watermark: Some(mark(server, cookie)),
        sweep_unseen: sweep,
        method: "syncrepl".into(),
        pages: client.pages,
        notes,
    })
}
