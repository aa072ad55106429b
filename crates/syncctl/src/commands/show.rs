//! `syncctl show <DN | anchor | ImmutableID>`: one object as each connector space holds it, and
//! its metaverse object explained: which objects are linked to it, by which rule and why, which
//! rule set each attribute, and what is pending for it.

use std::fmt::Write as _;

use anyhow::anyhow;
use serde_json::json;
use syncctl_core::{Dn, ImmutableId};
use syncctl_store::{CsLookup, MvLink, MvObject, PendingExport, Store, StoredCsObject};

use crate::cli::ShowArgs;
use crate::config::Plan;
use crate::exit::{CmdResult, Code, Failure};
use crate::output;

/// Finds the object and prints it.
pub async fn run(plan: &Plan, args: &ShowArgs, json: bool) -> CmdResult {
    let key = args.key.trim();
    if key.is_empty() {
        return Err(Failure::usage(anyhow!("give a DN, an anchor or an ImmutableID to show")));
    }
    let store = super::open_store(plan).await?;
    let mut found = Vec::new();
    let mut tried = Vec::new();
    for (how, lookup) in lookups(key) {
        if !tried.contains(&how) {
            tried.push(how);
        }
        match store.find_cs_objects(&lookup).await {
            Ok(objects) if objects.is_empty() => {}
            Ok(objects) => {
                tracing::info!(how, count = objects.len(), "found `{key}`");
                found = objects;
                break;
            }
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        }
    }
    let explained = if found.is_empty() { Vec::new() } else { explain(&store, &found).await? };
    store.close().await;
    if found.is_empty() {
        if json {
            output::print_json(&json!([]))?;
        }
        return Err(Failure::not_found(anyhow!(
            "no object matches `{key}` in any connector space of {} (looked up as {})",
            plan.store_path.display(),
            tried.join(", ")
        )));
    }
    if json {
        let list = found
            .iter()
            .zip(&explained)
            .map(|(o, mv)| {
                let mut j = object_json(o);
                if let Some(obj) = j.as_object_mut() {
                    obj.insert(
                        "metaverse".into(),
                        mv.as_ref().map_or(serde_json::Value::Null, metaverse_json),
                    );
                }
                j
            })
            .collect();
        output::print_json(&serde_json::Value::Array(list))?;
    } else {
        let mut text: Vec<String> = found.iter().map(object_text).collect();
        let mut shown = Vec::new();
        for mv in explained.iter().flatten() {
            if !shown.contains(&mv.object.id) {
                shown.push(mv.object.id);
                text.push(metaverse_text(mv));
            }
        }
        output::print(&text.join("\n"))?;
    }
    Ok(Code::Success)
}

/// An MV object with everything that explains it.
struct Explained {
    object: MvObject,
    /// (connector, DN, link).
    links: Vec<(String, String, MvLink)>,
    pending: Vec<(String, PendingExport)>,
}

/// For each CS object, its MV object (if it is linked), with its links and pending exports.
async fn explain(store: &Store, found: &[StoredCsObject]) -> Result<Vec<Option<Explained>>, Failure> {
    let mut out = Vec::with_capacity(found.len());
    for o in found {
        let Some(connector) = store.connector_id(&o.connector).await? else {
            out.push(None);
            continue;
        };
        let ids = store.cs_ids_by_anchor(connector, &[o.anchor.as_str()]).await?;
        let Some(cs) = ids.get(&o.anchor).copied() else {
            out.push(None);
            continue;
        };
        let Some(link) = store.links_by_cs(&[cs]).await?.remove(&cs) else {
            out.push(None);
            continue;
        };
        let Some(object) = store.mv_by_ids(&[link.mv_id]).await?.remove(&link.mv_id) else {
            out.push(None);
            continue;
        };
        let links = store.links_by_mv(&[object.id]).await?;
        let linked = store.cs_by_ids(&links.iter().map(|l| l.cs_id).collect::<Vec<_>>()).await?;
        let mut names = std::collections::HashMap::new();
        for l in &links {
            if let std::collections::hash_map::Entry::Vacant(e) = names.entry(l.connector_id) {
                e.insert(store.connector_name(l.connector_id).await?.unwrap_or_default());
            }
        }
        let links = links
            .into_iter()
            .map(|l| {
                let name = names.get(&l.connector_id).cloned().unwrap_or_default();
                let dn = linked.get(&l.cs_id).map(|c| c.dn.clone()).unwrap_or_default();
                (name, dn, l)
            })
            .collect();
        let mut pending = Vec::new();
        for p in store.pending_for_mv(object.id).await? {
            let name = match names.get(&p.connector_id) {
                Some(n) => n.clone(),
                None => store.connector_name(p.connector_id).await?.unwrap_or_default(),
            };
            pending.push((name, p));
        }
        out.push(Some(Explained { object, links, pending }));
    }
    Ok(out)
}

fn metaverse_json(mv: &Explained) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = mv
        .object
        .attributes
        .iter()
        .map(|(name, values)| {
            let p = mv.object.provenance.get(name.as_str());
            (
                name.as_str().to_owned(),
                json!({
                    "values": values.display_values(),
                    "rule": p.map(|p| p.rule.clone()),
                    "connector": p.map(|p| p.connector.clone()),
                    "precedence": p.map(|p| p.precedence),
                }),
            )
        })
        .collect();
    json!({
        "id": mv.object.id,
        "object_type": mv.object.object_type,
        "created": output::rfc3339(mv.object.created_at),
        "changed": output::rfc3339(mv.object.changed_at),
        "links": mv.links.iter().map(|(c, dn, l)| json!({
            "connector": c, "dn": dn, "how": l.how, "rule": l.rule, "why": l.detail,
            "linked": output::rfc3339(l.linked_at),
        })).collect::<Vec<_>>(),
        "attributes": attributes,
        "pending_exports": mv.pending.iter().map(|(c, p)| json!({
            "connector": c, "operation": p.operation, "object": p.display, "status": p.status,
            "changes": p.changes,
        })).collect::<Vec<_>>(),
    })
}

fn metaverse_text(mv: &Explained) -> String {
    let mut s = String::new();
    let o = &mv.object;
    let _ = writeln!(s, "metaverse object {} ({})", o.id, o.object_type);
    let _ =
        writeln!(s, "  created {}, changed {}", output::rfc3339(o.created_at), output::rfc3339(o.changed_at));
    let _ = writeln!(s, "linked objects");
    for (c, dn, l) in &mv.links {
        let _ = writeln!(s, "  {c}: {dn}\n    {} by `{}`: {}", l.how.as_str(), l.rule, l.detail);
    }
    let _ = writeln!(s, "attributes (value <- rule, connector, precedence)");
    for (name, values) in o.attributes.iter() {
        let from = o
            .provenance
            .get(name.as_str())
            .map(|p| format!("<- `{}`, {}, {}", p.rule, p.connector, p.precedence))
            .unwrap_or_default();
        let v = values.display_values().join("; ");
        let _ = writeln!(s, "  {:<24} {v}  {from}", name.as_str());
    }
    if mv.pending.is_empty() {
        let _ = writeln!(s, "pending exports: none");
    } else {
        let _ = writeln!(s, "pending exports");
        for (c, p) in &mv.pending {
            let _ = writeln!(s, "  {} {} [{c}] ({})", p.operation.as_str(), p.display, p.status);
            for ch in &p.changes {
                let old = ch.old.as_ref().map(|v| v.display_values().join("; ")).unwrap_or_default();
                let new = ch
                    .new
                    .as_ref()
                    .map(|v| v.display_values().join("; "))
                    .unwrap_or_else(|| "(cleared)".into());
                if old.is_empty() {
                    let _ = writeln!(s, "    {:<22} {new}", ch.attribute);
                } else {
                    let _ = writeln!(s, "    {:<22} {old} -> {new}", ch.attribute);
                }
            }
        }
    }
    s
}

/// How `key` is looked up, in order: as a DN (when it is one), as an ImmutableID (base64, hex
/// or GUID string), as an anchor (as given, then lowercase: entryUUIDs are stored lowercase).
/// Each lookup is tried in turn until one finds something.
fn lookups(key: &str) -> Vec<(&'static str, CsLookup)> {
    let mut out = Vec::new();
    if key.contains('=')
        && let Ok(dn) = Dn::parse(key)
        && !dn.is_empty()
    {
        out.push(("DN", CsLookup::Dn(dn)));
    }
    if let Ok(id) = ImmutableId::parse_any(key) {
        out.push(("ImmutableID", CsLookup::ImmutableId(id.to_base64())));
    }
    out.push(("anchor", CsLookup::Anchor(key.to_owned())));
    let lower = key.to_ascii_lowercase();
    if lower != key && !key.contains('=') {
        out.push(("anchor", CsLookup::Anchor(lower)));
    }
    out
}

fn guid_of(o: &StoredCsObject) -> Option<String> {
    o.immutable_id.as_deref().and_then(|b| ImmutableId::from_base64(b).ok()).map(|id| id.to_guid_string())
}

fn object_json(o: &StoredCsObject) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = o
        .attributes
        .iter()
        .map(|(name, values)| (name.as_str().to_owned(), json!(values.display_values())))
        .collect();
    json!({
        "connector": o.connector,
        "anchor": o.anchor,
        "immutable_id": o.immutable_id,
        "guid": guid_of(o),
        "dn": o.dn,
        "object_class": o.object_class,
        "state": o.state,
        "created": output::rfc3339(o.created_at),
        "changed": output::rfc3339(o.changed_at),
        "change_seq": o.change_seq,
        "attributes": attributes,
    })
}

fn object_text(o: &StoredCsObject) -> String {
    let mut s = String::new();
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(s, "{name:<14}{value}");
    };
    field("connector", &o.connector);
    field("anchor", &o.anchor);
    field("ImmutableID", o.immutable_id.as_deref().unwrap_or("-"));
    field("GUID", guid_of(o).as_deref().unwrap_or("-"));
    field("DN", &o.dn);
    field("object class", &o.object_class);
    field("state", &o.state);
    field("created", &output::rfc3339(o.created_at));
    field("changed", &format!("{} (change {})", output::rfc3339(o.changed_at), o.change_seq));
    let _ = writeln!(s, "attributes");
    let width = o.attributes.iter().map(|(n, _)| n.as_str().chars().count()).max().unwrap_or(0).min(30);
    for (name, values) in o.attributes.iter() {
        let mut label = name.as_str().to_owned();
        for v in values.display_values() {
            let _ = writeln!(s, "  {label:<width$}  {v}");
            label.clear();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncctl_core::{AttrValues, Attributes, ContentHash};

    #[test]
    fn lookup_order() {
        let kinds = |k: &str| lookups(k).into_iter().map(|(h, _)| h).collect::<Vec<_>>();
        assert_eq!(kinds("CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com"), ["DN", "anchor"]);
        assert_eq!(kinds("cntT7rWeSkeChkMTCRM/2Q=="), ["ImmutableID", "anchor"]);
        assert_eq!(kinds("ee537b72-9eb5-474a-8286-431309133fd9"), ["ImmutableID", "anchor"]);
        assert_eq!(kinds("727B53EEB59E4A478286431309133FD9"), ["ImmutableID", "anchor", "anchor"]);
        assert_eq!(kinds("no such thing"), ["anchor"]);
        match lookups("ee537b72-9eb5-474a-8286-431309133fd9").first() {
            Some((_, CsLookup::ImmutableId(b64))) => assert_eq!(b64, "cntT7rWeSkeChkMTCRM/2Q=="),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn object_rendering() {
        let mut attributes = Attributes::new();
        attributes.insert("proxyAddresses", AttrValues::String(vec!["SMTP:a@x".into(), "smtp:b@x".into()]));
        attributes.insert("cn", AttrValues::String(vec!["Alice".into()]));
        let o = StoredCsObject {
            connector: "corp-ad".into(),
            anchor: "cntT7rWeSkeChkMTCRM/2Q==".into(),
            immutable_id: Some("cntT7rWeSkeChkMTCRM/2Q==".into()),
            dn: "CN=Alice,DC=x".into(),
            object_class: "user".into(),
            attributes,
            content_hash: ContentHash([0; 32]),
            state: "present".into(),
            created_at: 0,
            changed_at: 1000,
            change_seq: 4,
        };
        let t = object_text(&o);
        assert!(t.contains("GUID          ee537b72-9eb5-474a-8286-431309133fd9\n"), "{t}");
        assert!(t.contains("  proxyAddresses  SMTP:a@x\n                  smtp:b@x\n"), "{t}");
        assert!(t.contains("changed       1970-01-01T00:00:01Z (change 4)"), "{t}");
        let j = object_json(&o);
        assert_eq!(j["guid"], "ee537b72-9eb5-474a-8286-431309133fd9");
        assert_eq!(j["attributes"]["proxyAddresses"][1], "smtp:b@x");
    }
}
