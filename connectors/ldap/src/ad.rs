//! Active Directory imports: full (paged, ranged) and delta (DirSync or uSNChanged).

use std::collections::BTreeMap;

use ldap3::Scope as LdapScope;
use syncctl_core::{
    Anchor, AttrName, AttrValues, ConnectorFault, CsObject, FaultKind, ImmutableId, ImportBatch,
    ImportChange, ImportMode, ImportRequest, ImportSummary, ValueDelta, Watermark,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::client::{Client, result_fault, send, text};
use crate::config::{DeltaMethod, LdapConfig};
use crate::controls;
use crate::entry::{Decoded, RawEntry, Scope, anchor_of, decode, split_description, typed_values};
use crate::schema;

/// Flags sent with every DirSync request: membership changes as increments.
const DIRSYNC_FLAGS: i64 = controls::DIRSYNC_INCREMENTAL_VALUES;
/// GUIDs per re-read search after a DirSync round.
const REREAD_CHUNK: usize = 200;

pub async fn import(
    client: &mut Client,
    config: &LdapConfig,
    scope: &Scope,
    request: ImportRequest,
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    let dse = client.root_dse().await?;
    let nc = text(&dse, "defaultNamingContext").unwrap_or_else(|| config.base_dn.clone());
    let server = text(&dse, "dsServiceName").unwrap_or_else(|| client.endpoint.clone());
    match request.mode {
        ImportMode::Full => full(client, config, scope, &dse, &nc, &server, tx).await,
        ImportMode::Delta => {
            let Some(wm) = request.watermark else {
                return Err(invalid_mark(client, "there is no watermark"));
            };
            if wm.server != server {
                return Err(invalid_mark(
                    client,
                    &format!(
                        "the watermark belongs to `{}` but `{server}` answered (watermarks are per domain controller)",
                        wm.server
                    ),
                ));
            }
            match wm.kind.as_str() {
                "dirsync" => dirsync_delta(client, scope, &nc, &server, wm.value, tx).await,
                "usn" => usn_delta(client, scope, &dse, &nc, &server, &wm, tx).await,
                other => {
                    Err(invalid_mark(client, &format!("the watermark is of kind `{other}`, not an AD one")))
                }
            }
        }
    }
}

fn invalid_mark(client: &Client, why: &str) -> ConnectorFault {
    ConnectorFault::new(
        FaultKind::WatermarkInvalid,
        &client.endpoint,
        format!("delta import impossible: {why}"),
    )
}

fn usn_mark(dse: &RawEntry, server: &str, client: &Client) -> Result<Watermark, ConnectorFault> {
    let usn = text(dse, "highestCommittedUSN").and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
        ConnectorFault::new(FaultKind::Protocol, &client.endpoint, "the root DSE has no highestCommittedUSN")
    })?;
    Ok(Watermark {
        kind: "usn".into(),
        value: usn.to_string().into_bytes(),
        server: server.to_owned(),
        extra: BTreeMap::new(),
    })
}

/// The attribute list of a search, with `member` asked in forced ranges when configured.
fn search_attrs(client: &Client, scope: &Scope, extra: &[&str]) -> Vec<String> {
    let mut attrs: Vec<String> = scope
        .requested
        .iter()
        .map(|a| {
            if client.range_size > 0 && a.eq_ignore_ascii_case("member") {
                format!("member;range=0-{}", client.range_size - 1)
            } else {
                a.clone()
            }
        })
        .collect();
    attrs.extend(extra.iter().map(|s| (*s).to_owned()));
    attrs
}

#[allow(clippy::too_many_arguments)]
async fn full(
    client: &mut Client,
    config: &LdapConfig,
    scope: &Scope,
    dse: &RawEntry,
    nc: &str,
    server: &str,
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    let mut notes = Vec::new();
    // The watermark is taken before the objects are read, so that a change made while the full
    // import runs is delivered again by the next delta rather than lost.
    let watermark = match config.delta {
        DeltaMethod::Usn => usn_mark(dse, server, client)?,
        _ => match dirsync_bootstrap(client, nc, server).await {
            Ok(w) => w,
            Err(f) if f.kind == FaultKind::Permission && config.delta == DeltaMethod::Auto => {
                let note = format!(
                    "the account may not use DirSync ({}); delta imports will poll uSNChanged instead",
                    f.message
                );
                warn!("{note}");
                notes.push(note);
                usn_mark(dse, server, client)?
            }
            Err(f) => return Err(f),
        },
    };
    let attrs = search_attrs(client, scope, &[]);
    let filter = scope.filter();
    let mut cookie = Vec::new();
    let base = scope.base.as_str().to_owned();
    loop {
        let raws = client.next_page(&base, &filter, &attrs, &mut cookie, vec![]).await?;
        let changes = decode_full(client, scope, raws).await?;
        send(tx, &client.endpoint, ImportBatch { changes, watermark: None }).await?;
        if cookie.is_empty() {
            break;
        }
    }
    info!(pages = client.pages, method = %watermark.kind, "full import read");
    Ok(ImportSummary {
        final_watermark: Some(watermark),
        sweep_unseen: true,
        method: "paged-search".into(),
        pages: client.pages,
        notes,
    })
}

/// Decodes a page of a full (or uSNChanged) search, completing ranged attributes. Objects out
/// of scope are left out (a full import's sweep deletes them) unless `report_out_of_scope`.
async fn decode_page(
    client: &mut Client,
    scope: &Scope,
    raws: Vec<RawEntry>,
    report_out_of_scope: bool,
) -> Result<Vec<ImportChange>, ConnectorFault> {
    let mut changes = Vec::with_capacity(raws.len());
    for raw in raws {
        match decode(raw, scope) {
            Decoded::Object { mut object, open_ranges } => {
                complete_ranges(client, &mut object, open_ranges).await?;
                changes.push(ImportChange::Present(object));
            }
            Decoded::OutOfScope { anchor: Some(anchor), dn } if report_out_of_scope => {
                changes.push(ImportChange::Deleted { anchor, dn })
            }
            Decoded::OutOfScope { .. } => {}
            Decoded::Deleted { anchor, dn } => changes.push(ImportChange::Deleted { anchor, dn }),
            Decoded::Invalid(e) => {
                warn!(dn = %e.dn, "{}", e.message);
                changes.push(ImportChange::Invalid(e));
            }
        }
    }
    Ok(changes)
}

async fn decode_full(
    client: &mut Client,
    scope: &Scope,
    raws: Vec<RawEntry>,
) -> Result<Vec<ImportChange>, ConnectorFault> {
    let mut changes = decode_page(client, scope, raws, false).await?;
    // A paged full search never returns tombstones; drop any the server sent anyway.
    changes.retain(|c| !matches!(c, ImportChange::Deleted { .. }));
    Ok(changes)
}

async fn complete_ranges(
    client: &mut Client,
    object: &mut CsObject,
    open: Vec<(String, u64)>,
) -> Result<(), ConnectorFault> {
    for (attr, start) in open {
        let more = client.read_remaining_range(object.dn.as_str(), &attr, start).await?;
        let syntax = schema::syntax_of(&attr);
        let typed = match typed_values(&attr, syntax, more) {
            Ok(t) => t,
            Err(m) => {
                return Err(ConnectorFault::new(
                    FaultKind::Protocol,
                    &client.endpoint,
                    format!("{}: {m}", object.dn),
                ));
            }
        };
        let name = AttrName::new(crate::entry::canonical_name(&attr));
        match object.attributes.get_mut(&name) {
            Some(values) => {
                values.apply_delta(&typed, &AttrValues::empty(syntax));
            }
            None => object.attributes.insert(name, typed),
        }
    }
    Ok(())
}

/// The DirSync response control of an answer: (more rounds pending, cookie).
fn dirsync_answer(client: &Client, result: &ldap3::LdapResult) -> Result<(bool, Vec<u8>), ConnectorFault> {
    controls::dirsync_response(&result.ctrls).ok_or_else(|| {
        ConnectorFault::new(
            FaultKind::Protocol,
            &client.endpoint,
            "DirSync: the answer has no DirSync control",
        )
    })
}

/// A DirSync cookie for "now", read before a full import: a DirSync round whose filter matches
/// no object returns no entry but a cookie at the DC's current position.
async fn dirsync_bootstrap(client: &mut Client, nc: &str, server: &str) -> Result<Watermark, ConnectorFault> {
    let mut cookie = Vec::new();
    let attrs = vec!["objectGUID".to_owned()];
    for _ in 0..10_000 {
        let out = client
            .search(
                nc,
                LdapScope::Subtree,
                "(&(objectClass=user)(objectClass=group))",
                &attrs,
                vec![controls::dirsync(DIRSYNC_FLAGS, 0, &cookie)],
            )
            .await?;
        if out.result.rc != 0 {
            return Err(result_fault(&client.endpoint, "DirSync", &out.result));
        }
        let (more, next) = dirsync_answer(client, &out.result)?;
        cookie = next;
        if !more {
            return Ok(Watermark {
                kind: "dirsync".into(),
                value: cookie,
                server: server.to_owned(),
                extra: BTreeMap::new(),
            });
        }
    }
    Err(ConnectorFault::new(FaultKind::Protocol, &client.endpoint, "DirSync: the server never finished"))
}

async fn dirsync_delta(
    client: &mut Client,
    scope: &Scope,
    nc: &str,
    server: &str,
    mut cookie: Vec<u8>,
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    // Tombstones lose objectCategory, so DirSync filters on objectClass only; types are
    // narrowed when the entry is decoded.
    // Containers too: when an OU is renamed or moved, DirSync reports the OU alone, not the
    // objects under it whose DN changed with it.
    let filter = "(|(objectClass=user)(objectClass=group)(objectClass=contact)(objectClass=organizationalUnit)(objectClass=container))";
    let mut attrs = scope.requested.clone();
    attrs.push("isDeleted".into());
    // A rename or move changes only the RDN: Samba reports it through `name` alone.
    attrs.push("name".into());
    loop {
        let out = client
            .search(
                nc,
                LdapScope::Subtree,
                filter,
                &attrs,
                vec![controls::dirsync(DIRSYNC_FLAGS, 0, &cookie), controls::show_deleted()],
            )
            .await?;
        match out.result.rc {
            0 => {}
            // A cookie the DC cannot use: Samba answers 12 ("Unable to unmarshall cookie"), AD
            // protocolError or unwillingToPerform. Anything else (rights, busy, unavailable,
            // server errors) stops the run instead of costing a full import.
            2 | 12 | 53 => {
                let f = result_fault(&client.endpoint, "DirSync", &out.result);
                return Err(ConnectorFault::new(
                    FaultKind::WatermarkInvalid,
                    &client.endpoint,
                    format!("the domain controller refused the DirSync cookie ({})", f.message),
                ));
            }
            _ => return Err(result_fault(&client.endpoint, "DirSync", &out.result)),
        }
        client.pages += 1;
        let (more, next) = dirsync_answer(client, &out.result)?;
        if more && next == cookie && out.entries.is_empty() {
            return Err(ConnectorFault::new(
                FaultKind::Protocol,
                &client.endpoint,
                "DirSync: the server asked for another round with the same cookie and no entry",
            ));
        }
        let raws = client.decode_entries(out.entries)?;
        tracing::debug!(entries = raws.len(), more, sent = cookie.len(), got = next.len(), dns = ?raws.iter().map(RawEntry::dn_lossy).collect::<Vec<_>>(), "DirSync round");
        let changes = dirsync_changes(client, scope, nc, raws).await?;
        let watermark = Watermark {
            kind: "dirsync".into(),
            value: next.clone(),
            server: server.to_owned(),
            extra: BTreeMap::new(),
        };
        send(tx, &client.endpoint, ImportBatch { changes, watermark: Some(watermark) }).await?;
        cookie = next;
        if !more {
            break;
        }
    }
    Ok(ImportSummary {
        final_watermark: None,
        sweep_unseen: false,
        method: "dirsync".into(),
        pages: client.pages,
        notes: vec![],
    })
}

/// An OU or container (and not one of the object types).
fn is_container(raw: &RawEntry) -> bool {
    let classes = raw.values("objectClass").unwrap_or(&[]);
    let has = |c: &str| classes.iter().any(|v| v.eq_ignore_ascii_case(c.as_bytes()));
    (has("organizationalUnit") || has("container")) && !(has("user") || has("group") || has("contact"))
}

/// What DirSync said about one object.
struct DirsyncEntry {
    id: ImmutableId,
    /// DirSync listed `name`: the object was created, renamed or moved.
    named: bool,
    added: Vec<Vec<u8>>,
    removed: Vec<Vec<u8>>,
    incremental: bool,
}

/// Turns one DirSync round into changes: tombstones become deletes; every other object is
/// re-read by GUID (DirSync returns only changed attributes) and, for groups, membership
/// increments are kept as increments.
async fn dirsync_changes(
    client: &mut Client,
    scope: &Scope,
    nc: &str,
    raws: Vec<RawEntry>,
) -> Result<Vec<ImportChange>, ConnectorFault> {
    let mut changes = Vec::new();
    let mut changed: Vec<DirsyncEntry> = Vec::new();
    for raw in raws {
        let (anchor, id) = match anchor_of(&raw, scope) {
            Ok((a, Some(id))) => (a, id),
            Ok((_, None)) => continue,
            Err(e) => {
                changes.push(ImportChange::Invalid(e));
                continue;
            }
        };
        if raw.is_true("isDeleted") {
            let dn = syncctl_core::Dn::parse(&raw.dn_lossy()).ok();
            changes.push(ImportChange::Deleted { anchor, dn });
            continue;
        }
        // Created, renamed or moved: re-read in full, `member` included, rather than applying
        // increments to stored values that may not exist (it may come into scope now).
        let named = raw.values("name").is_some();
        let mut entry = DirsyncEntry { id, named, added: vec![], removed: vec![], incremental: false };
        for (desc, values) in &raw.attrs {
            let (name, range) = split_description(desc);
            if !name.eq_ignore_ascii_case("member") {
                continue;
            }
            match range {
                Some(r) if r.low == 1 && r.high == Some(1) => {
                    entry.incremental = true;
                    entry.added.extend(values.iter().cloned());
                }
                Some(r) if r.low == 0 && r.high == Some(0) => {
                    entry.incremental = true;
                    entry.removed.extend(values.iter().cloned());
                }
                _ => {}
            }
        }
        changed.push(entry);
    }
    for chunk in changed.chunks(REREAD_CHUNK) {
        let mut by_id = reread(client, scope, nc, chunk).await?;
        tracing::debug!(asked = chunk.len(), found = by_id.len(), "objects re-read by GUID");
        let missing: Vec<ImmutableId> =
            chunk.iter().map(|e| e.id).filter(|id| !by_id.contains_key(id)).collect();
        let tombstones = if missing.is_empty() {
            Default::default()
        } else {
            find_tombstones(client, nc, &missing).await?
        };
        for e in chunk {
            let anchor = Anchor::from(e.id);
            let Some(raw) = by_id.remove(&e.id) else {
                // Deleted since DirSync listed it: a delete now (DirSync repeats it later, which
                // changes nothing). Otherwise not readable by the bind account (DirSync ignores
                // read rights, a search does not): the change would be lost, so it is an error.
                if tombstones.contains(&e.id) {
                    changes.push(ImportChange::Deleted { anchor, dn: None });
                    continue;
                }
                changes.push(ImportChange::Invalid(syncctl_core::ObjectError {
                    anchor: Some(anchor.clone()),
                    dn: e.id.to_guid_string(),
                    kind: "not-readable".into(),
                    message: format!(
                        "<GUID={}>: DirSync reported a change, but the object could not be read back \
                         (deleted meanwhile, or not readable by the bind account)",
                        e.id.to_guid_string()
                    ),
                }));
                continue;
            };
            if is_container(&raw) {
                if e.named {
                    // Created, renamed or moved: the objects under it changed DN without DirSync
                    // reporting them. Read that subtree: what is in scope is diffed as usual (a
                    // rename for a known object, an add for one that came into scope), and what
                    // is not is reported gone (ignored for objects the connector space never had).
                    let base = raw.dn_lossy();
                    let attrs = search_attrs(client, scope, &[]);
                    let mut cookie = Vec::new();
                    loop {
                        let raws =
                            client.next_page(&base, &scope.filter(), &attrs, &mut cookie, vec![]).await?;
                        changes.extend(decode_page(client, scope, raws, true).await?);
                        if cookie.is_empty() {
                            break;
                        }
                    }
                }
                continue;
            }
            match decode(raw, scope) {
                Decoded::Object { mut object, open_ranges } => {
                    if e.incremental && !e.named {
                        object.attributes.remove("member");
                        let add = typed_values("member", schema::syntax_of("member"), e.added.clone());
                        let remove = typed_values("member", schema::syntax_of("member"), e.removed.clone());
                        match (add, remove) {
                            (Ok(add), Ok(remove)) => {
                                let deltas =
                                    BTreeMap::from([(AttrName::new("member"), ValueDelta { add, remove })]);
                                changes.push(ImportChange::Incremental { object, value_deltas: deltas });
                            }
                            (Err(m), _) | (_, Err(m)) => {
                                changes.push(ImportChange::Invalid(syncctl_core::ObjectError {
                                    anchor: Some(object.anchor.clone()),
                                    dn: object.dn.to_string(),
                                    kind: "invalid-value".into(),
                                    message: format!("{}: {m}", object.dn),
                                }))
                            }
                        }
                    } else {
                        complete_ranges(client, &mut object, open_ranges).await?;
                        changes.push(ImportChange::Present(object));
                    }
                }
                Decoded::OutOfScope { dn, .. } => changes.push(ImportChange::Deleted { anchor, dn }),
                Decoded::Deleted { anchor, dn } => changes.push(ImportChange::Deleted { anchor, dn }),
                Decoded::Invalid(err) => changes.push(ImportChange::Invalid(err)),
            }
        }
    }
    Ok(changes)
}

/// Which of these objectGUIDs are tombstones (deleted objects, read with the show-deleted control).
async fn find_tombstones(
    client: &mut Client,
    nc: &str,
    ids: &[ImmutableId],
) -> Result<std::collections::BTreeSet<ImmutableId>, ConnectorFault> {
    let filter = format!(
        "(&(isDeleted=TRUE)(|{}))",
        ids.iter().map(|id| format!("(objectGUID={})", id.to_ldap_filter_value())).collect::<String>()
    );
    let attrs = vec!["objectGUID".to_owned(), "isDeleted".to_owned()];
    let out = client.search(nc, LdapScope::Subtree, &filter, &attrs, vec![controls::show_deleted()]).await?;
    let mut found = std::collections::BTreeSet::new();
    if out.result.rc == 0 {
        for raw in client.decode_entries(out.entries)? {
            if let Some(Ok(id)) =
                raw.values("objectGUID").and_then(|v| v.first()).map(|g| ImmutableId::from_object_guid(g))
            {
                found.insert(id);
            }
        }
    }
    Ok(found)
}

/// Reads whole objects by objectGUID. Entries whose membership came as increments are read
/// without `member` (the increments are applied to the stored values instead).
async fn reread(
    client: &mut Client,
    scope: &Scope,
    nc: &str,
    entries: &[DirsyncEntry],
) -> Result<BTreeMap<ImmutableId, RawEntry>, ConnectorFault> {
    let mut out = BTreeMap::new();
    for incremental in [false, true] {
        let ids: Vec<&DirsyncEntry> =
            entries.iter().filter(|e| (e.incremental && !e.named) == incremental).collect();
        if ids.is_empty() {
            continue;
        }
        let filter = format!(
            "(|{})",
            ids.iter().map(|e| format!("(objectGUID={})", e.id.to_ldap_filter_value())).collect::<String>()
        );
        let attrs: Vec<String> = if incremental {
            scope.requested.iter().filter(|a| !a.eq_ignore_ascii_case("member")).cloned().collect()
        } else {
            search_attrs(client, scope, &[])
        };
        let mut cookie = Vec::new();
        loop {
            let raws = client.next_page(nc, &filter, &attrs, &mut cookie, vec![]).await?;
            for raw in raws {
                if let Ok((_, Some(id))) = anchor_of(&raw, scope) {
                    out.insert(id, raw);
                }
            }
            if cookie.is_empty() {
                break;
            }
        }
    }
    Ok(out)
}

async fn usn_delta(
    client: &mut Client,
    scope: &Scope,
    dse: &RawEntry,
    nc: &str,
    server: &str,
    wm: &Watermark,
    tx: &mpsc::Sender<ImportBatch>,
) -> Result<ImportSummary, ConnectorFault> {
    let from: i64 = std::str::from_utf8(&wm.value)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| invalid_mark(client, "the stored uSNChanged watermark is not a number"))?;
    // The new mark is read first: anything committed after it is seen by the next delta.
    let next = usn_mark(dse, server, client)?;
    let mut notes = Vec::new();
    let filter = format!(
        "(&(|(objectClass=user)(objectClass=group)(objectClass=contact))(uSNChanged>={}))",
        from.saturating_add(1)
    );
    let attrs = search_attrs(client, scope, &[]);
    let mut cookie = Vec::new();
    loop {
        let raws = client.next_page(nc, &filter, &attrs, &mut cookie, vec![]).await?;
        let changes = decode_page(client, scope, raws, true).await?;
        send(tx, &client.endpoint, ImportBatch { changes, watermark: None }).await?;
        if cookie.is_empty() {
            break;
        }
    }
    // Deletes. Tombstones in the Deleted Objects container are invisible to an account without
    // rights (the search answers empty rather than failing), and this method is the one for
    // such accounts; so deletes are found by listing every anchor in scope (four attributes
    // per object) and letting the engine mark the unlisted ones deleted.
    notes.push(
        "deletes were found by listing the anchors in scope (uSNChanged polling cannot see tombstones)"
            .to_owned(),
    );
    let filter = scope.filter();
    let attrs: Vec<String> =
        schema::required_attributes(scope.flavor).iter().map(|s| (*s).to_owned()).collect();
    let mut cookie = Vec::new();
    loop {
        let raws = client.next_page(scope.base.as_str(), &filter, &attrs, &mut cookie, vec![]).await?;
        let mut changes = Vec::new();
        for raw in raws {
            if let Decoded::Object { object, .. } = decode(raw, scope) {
                changes.push(ImportChange::Unchanged { anchor: object.anchor, dn: Some(object.dn) });
            }
        }
        send(tx, &client.endpoint, ImportBatch { changes, watermark: None }).await?;
        if cookie.is_empty() {
            break;
        }
    }
    let sweep = true;
    Ok(ImportSummary {
        final_watermark: Some(next),
        sweep_unseen: sweep,
        method: "usn".into(),
        pages: client.pages,
        notes,
    })
}
