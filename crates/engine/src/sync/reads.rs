//! The store reads of one sync batch, made in a few set-based queries instead of one query per
//! object.
//!
//! Nothing a batch does reaches the store before the batch is written (its links, metaverse
//! changes and pending exports live in the overlay of [`SyncRun`] until then), so each answer is
//! kept for the rest of the batch, and before a pass over many objects (inbound, recompute,
//! outbound) the values that pass will look up are read in one query per kind and attribute. A
//! value the prefetch did not foresee (a placeholder UPN being tried, say) is read on its own,
//! as before.
//!
//! A few batches share one overlay, each written while the next is read (see
//! `SyncRun::ship`): a write in flight may land between two reads. The answers it changes are
//! set, when the batch is handed over, to what the store holds once it lands ([`Shipped`]), so
//! the next batch gets the same answer before and after. The caches are dropped with the
//! overlay once its last batch is committed.
//!
//! Must not: answer from a cache across a store write it does not know of, or give an answer
//! that depends on whether a write in flight has landed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use syncctl_core::AttrValues;
use syncctl_store::{ConnectorId, CsId, ExportOperation, MvId, PendingExport, SyncBatch, SyncCsObject};

use super::view::{MvView, key_attribute, key_texts, mv_ref, parse_mv_ref};
use super::{SyncConnector, SyncRun, UNIQUE_ATTRIBUTES, desired_values, dn_norm};
use crate::error::Result;

/// The staged exports claiming a unique value: (target key, mv id).
type Claims = Vec<(String, Option<MvId>)>;

/// One unique value an export claims: (key attribute, value, mv id).
type Claim = (String, String, Option<MvId>);

/// How [`SyncRun::cs_ids_by`] finds connector-space objects.
#[derive(Clone, Copy)]
enum Lookup {
    Dn,
    Anchor,
}

/// What the store answered in this batch, by question.
#[derive(Default)]
pub(super) struct BatchReads {
    /// Pending exports: (target, target key) -> the export, if any.
    pending: HashMap<(ConnectorId, String), Option<PendingExport>>,
    /// Whether an MV object has a pending add on a target: (target, mv) -> staged. What a
    /// reference to it needs (a group of 50,000 members must not read 50,000 whole adds).
    pending_add: HashMap<(ConnectorId, MvId), bool>,
    /// Target join keys: (target, key attribute, value) -> CS objects holding it.
    cs_keys: HashMap<(ConnectorId, String, String), Vec<CsId>>,
    /// Staged unique values: (target, key attribute, value) -> (target key, mv id) claiming it.
    unique: HashMap<(ConnectorId, String, String), Claims>,
    /// Present CS objects by normalized DN: (connector, dn) -> id.
    by_dn: HashMap<(ConnectorId, String), Option<CsId>>,
    /// Present CS objects by anchor: (connector, anchor) -> id.
    by_anchor: HashMap<(ConnectorId, String), Option<CsId>>,
    /// Exported adds by the anchor of what they created: (target, anchor) -> MV object.
    created: HashMap<(ConnectorId, String), Option<MvId>>,
    /// Whether an MV object is linked to a present object of a target: (target, mv) -> linked.
    target_linked: HashMap<(ConnectorId, MvId), bool>,
    /// Objects referring to a DN or anchor: (connector, key) -> CS objects.
    referrers: HashMap<(ConnectorId, String), Vec<CsId>>,
    /// What the batches handed over from this overlay wrote.
    shipped: Shipped,
}

/// What the batches handed over from this overlay wrote to tables the overlay does not hold,
/// for the lookups whose answers those writes change. The pending exports themselves go into
/// [`BatchReads::pending`] and [`BatchReads::pending_add`] as the store will hold them.
#[derive(Default)]
struct Shipped {
    /// Pending exports written or withdrawn: (target, target key).
    pending: HashSet<(ConnectorId, String)>,
    /// The unique values the exports written or withdrawn claim now: (target, target key) ->
    /// (key attribute, value, mv). A withdrawn export claims nothing.
    claims: HashMap<(ConnectorId, String), Vec<Claim>>,
    /// (target, key attribute, value) -> the target keys above that claimed it when written.
    claimants: HashMap<(ConnectorId, String, String), BTreeSet<String>>,
}

impl BatchReads {
    /// Records what a batch handed over writes (see [`Shipped`]).
    pub(super) fn ship(&mut self, batch: &SyncBatch) {
        for (c, k) in &batch.pending_deletes {
            if let Some(m) = parse_mv_ref(k) {
                self.pending_add.insert((*c, m), false);
            }
            self.pending.insert((*c, k.clone()), None);
            self.shipped.pending.insert((*c, k.clone()));
            self.shipped.claims.insert((*c, k.clone()), Vec::new());
        }
        for p in &batch.pending_writes {
            let k = p.target_key();
            if let Some(m) = parse_mv_ref(&k) {
                let add = p.operation == ExportOperation::Add && p.mv_id == Some(m);
                self.pending_add.insert((p.connector_id, m), add);
            }
            self.shipped.pending.insert((p.connector_id, k.clone()));
            self.pending.insert((p.connector_id, k), Some(p.clone()));
        }
        for (c, k, mv, pairs) in &batch.pending_unique {
            for (a, v) in pairs {
                self.shipped.claimants.entry((*c, a.clone(), v.clone())).or_default().insert(k.clone());
            }
            let claims = pairs.iter().map(|(a, v)| (a.clone(), v.clone(), *mv)).collect();
            self.shipped.claims.insert((*c, k.clone()), claims);
        }
    }

    /// Whether an MV object is linked to a present object of a target, as a batch handed over
    /// leaves it.
    pub(super) fn set_target_linked(&mut self, connector: ConnectorId, mv: MvId, linked: bool) {
        self.target_linked.insert((connector, mv), linked);
    }

    /// The store's claims on a unique value as they are once the writes handed over land: the
    /// claims of the exports they wrote or withdrew are theirs, not the store's.
    fn with_shipped_claims(
        &self,
        connector: ConnectorId,
        key: &str,
        value: &str,
        mut holders: Claims,
    ) -> Claims {
        let shipped = &self.shipped;
        if shipped.claims.is_empty() {
            return holders;
        }
        holders.retain(|(k, _)| !shipped.claims.contains_key(&(connector, k.clone())));
        for k in shipped.claimants.get(&(connector, key.to_owned(), value.to_owned())).into_iter().flatten() {
            let claims = shipped.claims.get(&(connector, k.clone())).into_iter().flatten();
            for (_, _, mv) in claims.filter(|(a, v, _)| a == key && v == value) {
                holders.push((k.clone(), *mv));
            }
        }
        holders.sort();
        holders.dedup();
        holders
    }
}

impl SyncRun<'_> {
    /// The pending exports of a target with these target keys.
    pub(super) async fn pending_of(
        &mut self,
        connector: ConnectorId,
        keys: &[String],
    ) -> Result<HashMap<String, PendingExport>> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| !self.reads.pending.contains_key(&(connector, (*k).clone())))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let mut found = self.store.pending_for_targets(connector, &missing).await?;
            for k in missing {
                let p = found.remove(&k);
                self.reads.pending.insert((connector, k), p);
            }
        }
        Ok(keys
            .iter()
            .filter_map(|k| {
                let p = self.reads.pending.get(&(connector, k.clone()))?.clone()?;
                Some((k.clone(), p))
            })
            .collect())
    }

    /// Of these MV objects, those the store holds a pending add for on a target.
    pub(super) async fn pending_adds(
        &mut self,
        connector: ConnectorId,
        ids: &[MvId],
    ) -> Result<BTreeSet<MvId>> {
        let missing = unasked(&self.reads.pending_add, connector, ids);
        if !missing.is_empty() {
            let found = self.store.pending_add_mvs(connector, &missing).await?;
            for m in missing {
                self.reads.pending_add.insert((connector, m), found.contains(&m));
            }
        }
        Ok(flagged(&self.reads.pending_add, connector, ids))
    }

    /// Target CS objects whose join key `key` (see [`key_attribute`]) has `value`.
    pub(super) async fn cs_join_candidates(
        &mut self,
        connector: ConnectorId,
        key: &str,
        value: &str,
    ) -> Result<Vec<CsId>> {
        let k = (connector, key.to_owned(), value.to_owned());
        if let Some(found) = self.reads.cs_keys.get(&k) {
            return Ok(found.clone());
        }
        let found = self.store.cs_join_candidates(connector, key, value).await?;
        self.reads.cs_keys.insert(k, found.clone());
        Ok(found)
    }

    /// Reads the target join keys of many values of one key attribute.
    async fn prefetch_cs_keys(
        &mut self,
        connector: ConnectorId,
        key: &str,
        values: BTreeSet<String>,
    ) -> Result<()> {
        let missing: Vec<String> = values
            .into_iter()
            .filter(|v| !self.reads.cs_keys.contains_key(&(connector, key.to_owned(), v.clone())))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut found: HashMap<String, Vec<CsId>> = HashMap::new();
        for (value, cs) in self.store.cs_join_candidates_many(connector, key, &missing).await? {
            found.entry(value).or_default().push(cs);
        }
        for v in missing {
            let ids = found.remove(&v).unwrap_or_default();
            self.reads.cs_keys.insert((connector, key.to_owned(), v), ids);
        }
        Ok(())
    }

    /// The staged exports of a target that claim this unique value: `(target key, mv id)`.
    pub(super) async fn pending_unique_holders(
        &mut self,
        connector: ConnectorId,
        key: &str,
        value: &str,
    ) -> Result<Claims> {
        let k = (connector, key.to_owned(), value.to_owned());
        let found = match self.reads.unique.get(&k) {
            Some(found) => found.clone(),
            None => {
                let found = self.store.pending_unique_holders(connector, key, value).await?;
                self.reads.unique.insert(k, found.clone());
                found
            }
        };
        Ok(self.reads.with_shipped_claims(connector, key, value, found))
    }

    /// Reads the staged claims and the target holders of many values of one unique attribute.
    async fn prefetch_unique(
        &mut self,
        connector: ConnectorId,
        key: &str,
        values: BTreeSet<String>,
    ) -> Result<()> {
        self.prefetch_claims(connector, key, &values).await?;
        self.prefetch_cs_keys(connector, key, values).await
    }

    /// Reads the staged claims on many values of one unique attribute.
    async fn prefetch_claims(
        &mut self,
        connector: ConnectorId,
        key: &str,
        values: &BTreeSet<String>,
    ) -> Result<()> {
        let missing: Vec<String> = values
            .iter()
            .filter(|v| !self.reads.unique.contains_key(&(connector, key.to_owned(), (*v).clone())))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut found: HashMap<String, Claims> = HashMap::new();
        for (value, target_key, mv) in
            self.store.pending_unique_holders_many(connector, key, &missing).await?
        {
            found.entry(value).or_default().push((target_key, mv));
        }
        for v in missing {
            let holders = found.remove(&v).unwrap_or_default();
            self.reads.unique.insert((connector, key.to_owned(), v), holders);
        }
        Ok(())
    }

    /// Present CS objects of a connector with these normalized DNs: dn -> id.
    pub(super) async fn cs_ids_by_dn(
        &mut self,
        connector: ConnectorId,
        dns: &[&str],
    ) -> Result<HashMap<String, CsId>> {
        self.cs_ids_by(Lookup::Dn, connector, dns).await
    }

    /// Present CS objects of a connector with these anchors: anchor -> id.
    pub(super) async fn cs_ids_by_anchor(
        &mut self,
        connector: ConnectorId,
        anchors: &[&str],
    ) -> Result<HashMap<String, CsId>> {
        self.cs_ids_by(Lookup::Anchor, connector, anchors).await
    }

    /// Present CS objects of a connector by DN or anchor, the store asked only for what this
    /// batch has not asked yet.
    async fn cs_ids_by(
        &mut self,
        by: Lookup,
        connector: ConnectorId,
        keys: &[&str],
    ) -> Result<HashMap<String, CsId>> {
        let known = match by {
            Lookup::Dn => &self.reads.by_dn,
            Lookup::Anchor => &self.reads.by_anchor,
        };
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !known.contains_key(&(connector, (*k).to_owned())))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let mut found = match by {
                Lookup::Dn => self.store.cs_ids_by_dn(connector, &missing).await?,
                Lookup::Anchor => self.store.cs_ids_by_anchor(connector, &missing).await?,
            };
            let known = match by {
                Lookup::Dn => &mut self.reads.by_dn,
                Lookup::Anchor => &mut self.reads.by_anchor,
            };
            for k in missing {
                known.insert((connector, k.to_owned()), found.remove(k));
            }
        }
        let known = match by {
            Lookup::Dn => &self.reads.by_dn,
            Lookup::Anchor => &self.reads.by_anchor,
        };
        Ok(keys
            .iter()
            .filter_map(|k| Some(((*k).to_owned(), (*known.get(&(connector, (*k).to_owned()))?)?)))
            .collect())
    }

    /// The MV object whose exported add created the target object with this anchor.
    pub(super) async fn pending_add_by_created_anchor(
        &mut self,
        connector: ConnectorId,
        anchor: &str,
    ) -> Result<Option<MvId>> {
        let k = (connector, anchor.to_owned());
        let found = match self.reads.created.get(&k) {
            Some(found) => *found,
            None => {
                let found = self.store.pending_add_by_created_anchor(connector, anchor).await?;
                self.reads.created.insert(k, found);
                found
            }
        };
        // An add written or withdrawn by a batch handed over is as that batch left it.
        Ok(found.filter(|m| {
            let key = (connector, mv_ref(*m));
            !self.reads.shipped.pending.contains(&key)
                || matches!(self.reads.pending.get(&key), Some(Some(p))
                    if p.operation == ExportOperation::Add && p.created_anchor.as_deref() == Some(anchor))
        }))
    }

    /// Of these MV objects, those linked to a present object of the target.
    pub(super) async fn target_linked(
        &mut self,
        connector: ConnectorId,
        ids: &[MvId],
    ) -> Result<BTreeSet<MvId>> {
        let missing = unasked(&self.reads.target_linked, connector, ids);
        if !missing.is_empty() {
            let found = self.store.target_anchors(connector, &missing).await?;
            for m in missing {
                self.reads.target_linked.insert((connector, m), found.contains_key(&m));
            }
        }
        Ok(flagged(&self.reads.target_linked, connector, ids))
    }

    /// Before the inbound pass over a batch of a target's objects (the confirming import of
    /// what export created): their pending exports, the adds that created them, and who claims
    /// their unique values; and the pending adds of the metaverse objects they may join.
    pub(super) async fn prefetch_inbound(&mut self, objects: &[Arc<SyncCsObject>]) -> Result<()> {
        if !self.source.target {
            return Ok(());
        }
        let source = self.source.id;
        let mut keys: Vec<String> = objects.iter().map(|o| format!("cs:{}", o.id)).collect();
        let unlinked: Vec<&SyncCsObject> = objects
            .iter()
            .map(|o| &**o)
            .filter(|o| o.present && matches!(self.links_cs.get(&o.id), Some(None)))
            .collect();
        let anchors: Vec<&str> = unlinked
            .iter()
            .map(|o| o.anchor.as_str())
            .filter(|a| !self.reads.created.contains_key(&(source, (*a).to_owned())))
            .collect();
        if !anchors.is_empty() {
            let mut found = self.store.pending_adds_by_created_anchors(source, &anchors).await?;
            for a in anchors {
                let mv = found.remove(a);
                self.reads.created.insert((source, a.to_owned()), mv);
            }
        }
        let mut unique: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in &unlinked {
            for attribute in UNIQUE_ATTRIBUTES {
                if let Some(values) = o.attributes.get(attribute) {
                    unique.entry(key_attribute(attribute, true)).or_default().extend(key_texts(values, true));
                }
            }
        }
        for (key, values) in unique {
            self.prefetch_claims(source, &key, &values).await?;
        }
        // The adds of the metaverse objects the join candidates name (a join confirms an add).
        keys.extend(self.join_cache.values().flatten().map(|m| format!("mv:{m}")));
        self.pending_of(source, &keys).await?;
        Ok(())
    }

    /// Before the inbound pass: the metaverse objects the join candidates and the exported
    /// adds name, with their links and linked objects, in a few queries.
    pub(super) async fn prefetch_candidates(&mut self) -> Result<()> {
        let mut ids: BTreeSet<MvId> = self.join_cache.values().flatten().copied().collect();
        ids.extend(self.reads.created.values().flatten().copied());
        self.prefetch(ids).await
    }

    /// Before recomputing these MV objects: the connector-space objects their linked objects
    /// refer to (a manager, a group's members), and the links of those.
    pub(super) async fn prefetch_references(&mut self, mvs: &[MvId]) -> Result<()> {
        let missing: Vec<CsId> = mvs
            .iter()
            .flat_map(|mv| self.links_mv.get(mv).into_iter().flatten())
            .map(|l| l.cs_id)
            .filter(|c| !self.cs.contains_key(c))
            .collect();
        if !missing.is_empty() {
            for (id, o) in self.store.cs_by_ids(&missing).await? {
                self.cs.insert(id, Arc::new(o));
            }
        }
        let mut wanted: BTreeMap<ConnectorId, BTreeSet<String>> = BTreeMap::new();
        for mv in mvs {
            for link in self.links_mv.get(mv).into_iter().flatten() {
                let Some(cs) = self.cs.get(&link.cs_id).filter(|c| c.present) else { continue };
                for (_, values) in cs.attributes.iter() {
                    if let AttrValues::Reference(dns) = values {
                        wanted.entry(cs.connector_id).or_default().extend(dns.iter().map(|d| dn_norm(d)));
                    }
                }
            }
        }
        for (connector, dns) in wanted {
            let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
            let ids: Vec<CsId> = self.cs_ids_by_dn(connector, &dns).await?.into_values().collect();
            self.load_links(&ids).await?;
        }
        Ok(())
    }

    /// Before an outbound pass over these MV objects, for every target: their pending exports,
    /// the target objects their join rules and unique values look up (with the claims staged on
    /// those values), what their references point to, and the referenced objects of their
    /// target objects.
    pub(super) async fn prefetch_outbound(&mut self, mvs: &BTreeSet<MvId>) -> Result<()> {
        self.prefetch(mvs.iter().copied()).await?;
        let targets: Vec<&SyncConnector> = self.connectors.iter().filter(|c| c.target).collect();
        for target in targets {
            let tenant = self.tenants.get(&target.id).cloned();
            let mut keys: Vec<String> = Vec::with_capacity(mvs.len() * 2);
            let mut join: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut unique: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut refs: BTreeSet<MvId> = BTreeSet::new();
            let mut target_refs: BTreeSet<String> = BTreeSet::new();
            for mv in mvs {
                keys.push(format!("mv:{mv}"));
                let link = self.links_mv.get(mv).and_then(|l| l.iter().find(|l| l.connector_id == target.id));
                let linked = link.map(|l| l.cs_id);
                if let Some(cs) = linked {
                    keys.push(format!("cs:{cs}"));
                    if let Some(o) = self.cs.get(&cs) {
                        for (_, values) in o.attributes.iter() {
                            if let AttrValues::Reference(r) = values {
                                target_refs.extend(r.iter().cloned());
                            }
                        }
                    }
                }
                let Some(Some(object)) = self.mv.get(mv) else { continue };
                let view = MvView { object };
                let rules: Vec<_> = self
                    .rules
                    .outbound_for(&target.kind, &target.name, &object.object_type)
                    .filter(|r| r.scope.matches(&view).unwrap_or(false))
                    .collect();
                if rules.is_empty() {
                    continue;
                }
                if linked.is_none() {
                    for rule in &rules {
                        for group in &rule.join {
                            if let Ok(Some(sources)) = group.source_values(&view) {
                                for (attribute, values, ci) in sources {
                                    join.entry(key_attribute(&attribute, ci)).or_default().extend(values);
                                }
                            }
                        }
                    }
                }
                let (desired, _) = desired_values(target, &rules, object, linked.is_none());
                for (name, values) in &desired {
                    let Some(values) = values else { continue };
                    if let AttrValues::Reference(r) = values {
                        refs.extend(r.iter().filter_map(|v| parse_mv_ref(v)));
                    }
                    let Some(attribute) = UNIQUE_ATTRIBUTES.iter().find(|a| a.eq_ignore_ascii_case(name))
                    else {
                        continue;
                    };
                    let set = unique.entry(key_attribute(attribute, true)).or_default();
                    for v in key_texts(values, true) {
                        if let Some(t) = &tenant
                            && attribute.eq_ignore_ascii_case("userPrincipalName")
                            && let Some(rewritten) = t.rewrite_upn(&v)
                        {
                            set.insert(rewritten.to_lowercase());
                        }
                        set.insert(v);
                    }
                }
            }
            let refs: Vec<MvId> = refs.into_iter().collect();
            self.pending_of(target.id, &keys).await?;
            self.pending_adds(target.id, &refs).await?;
            let mut candidates: BTreeSet<CsId> = BTreeSet::new();
            for (key, values) in join {
                self.prefetch_cs_keys(target.id, &key, values.clone()).await?;
                for v in values {
                    if let Some(ids) = self.reads.cs_keys.get(&(target.id, key.clone(), v)) {
                        candidates.extend(ids.iter().copied());
                    }
                }
            }
            self.prefetch_join_targets(target.id, candidates).await?;
            for (key, values) in unique {
                self.prefetch_unique(target.id, &key, values).await?;
            }
            if !target_refs.is_empty() {
                let norms: Vec<String> = target_refs.iter().map(|d| dn_norm(d)).collect();
                let by_dn = self
                    .cs_ids_by_dn(target.id, &norms.iter().map(String::as_str).collect::<Vec<_>>())
                    .await?;
                let raw: Vec<&str> = target_refs.iter().map(String::as_str).collect();
                let by_anchor = self.cs_ids_by_anchor(target.id, &raw).await?;
                let ids: Vec<CsId> = by_dn.values().chain(by_anchor.values()).copied().collect();
                self.load_links(&ids).await?;
            }
            // The objects referenced that the pass reads to see whether they are in scope: those
            // neither linked to the target nor staged to be added there.
            let linked = self.target_linked(target.id, &refs).await?;
            let unknown: Vec<MvId> = refs
                .into_iter()
                .filter(|m| !linked.contains(m) && !self.mv.contains_key(m))
                .filter(|m| self.reads.pending_add.get(&(target.id, *m)) != Some(&true))
                .collect();
            if !unknown.is_empty() {
                let mut found = self.store.mv_by_ids(&unknown).await?;
                for m in unknown {
                    let o = found.remove(&m);
                    self.mv.insert(m, o.map(Arc::new));
                }
            }
        }
        Ok(())
    }

    /// The MV objects whose source objects refer to (list, name as manager) each of these MV
    /// objects' source objects: `(referenced, referrer)`, in one query per connector.
    pub(super) async fn mv_referrers_many(&mut self, mvs: &[MvId]) -> Result<Vec<(MvId, MvId)>> {
        self.prefetch(mvs.iter().copied()).await?;
        let mut wanted: BTreeMap<ConnectorId, HashMap<String, BTreeSet<MvId>>> = BTreeMap::new();
        for mv in mvs {
            for l in self.links_of_mv(*mv).await? {
                if self.connector(l.connector_id).is_none_or(|c| c.target) {
                    continue;
                }
                let Some(cs) = self.cs_object(l.cs_id).await? else { continue };
                let keys = wanted.entry(cs.connector_id).or_default();
                keys.entry(cs.dn_norm.clone()).or_default().insert(*mv);
                keys.entry(cs.anchor.to_lowercase()).or_default().insert(*mv);
            }
        }
        let mut out = Vec::new();
        for (connector, keys) in wanted {
            let list: Vec<String> = keys.keys().cloned().collect();
            let pairs = self.store.cs_referrers_by_key(connector, &list).await?;
            let ids: Vec<CsId> = pairs.iter().map(|(_, id)| *id).collect();
            self.load_links(&ids).await?;
            for (key, id) in pairs {
                let Some(referrer) = self.link_of_cs(id).await?.map(|l| l.mv_id) else { continue };
                for mv in keys.get(&key).into_iter().flatten() {
                    out.push((*mv, referrer));
                }
            }
        }
        Ok(out)
    }

    /// The target objects an outbound join may link, with what a join reads of them: the
    /// objects, their links and pending exports, what refers to them, and what they refer to.
    async fn prefetch_join_targets(&mut self, target: ConnectorId, candidates: BTreeSet<CsId>) -> Result<()> {
        if candidates.is_empty() {
            return Ok(());
        }
        let ids: Vec<CsId> = candidates.into_iter().collect();
        let missing: Vec<CsId> = ids.iter().copied().filter(|c| !self.cs.contains_key(c)).collect();
        if !missing.is_empty() {
            for (id, o) in self.store.cs_by_ids(&missing).await? {
                self.cs.insert(id, Arc::new(o));
            }
        }
        self.load_links(&ids).await?;
        let keys: Vec<String> = ids.iter().map(|c| format!("cs:{c}")).collect();
        self.pending_of(target, &keys).await?;
        let mut lookups: BTreeSet<String> = BTreeSet::new();
        let mut refs: BTreeSet<String> = BTreeSet::new();
        for id in &ids {
            let Some(o) = self.cs.get(id) else { continue };
            lookups.insert(o.dn_norm.clone());
            lookups.insert(o.anchor.to_lowercase());
            for (_, values) in o.attributes.iter() {
                if let AttrValues::Reference(r) = values {
                    refs.extend(r.iter().cloned());
                }
            }
        }
        let lookups: Vec<String> = lookups
            .into_iter()
            .filter(|k| !self.reads.referrers.contains_key(&(target, k.clone())))
            .collect();
        if !lookups.is_empty() {
            let mut found: HashMap<String, Vec<CsId>> = HashMap::new();
            for (key, id) in self.store.cs_referrers_by_key(target, &lookups).await? {
                found.entry(key).or_default().push(id);
            }
            let all: Vec<CsId> = found.values().flatten().copied().collect();
            self.load_links(&all).await?;
            for k in lookups {
                let ids = found.remove(&k).unwrap_or_default();
                self.reads.referrers.insert((target, k), ids);
            }
        }
        if !refs.is_empty() {
            let norms: Vec<String> = refs.iter().map(|d| dn_norm(d)).collect();
            let by_dn =
                self.cs_ids_by_dn(target, &norms.iter().map(String::as_str).collect::<Vec<_>>()).await?;
            let raw: Vec<&str> = refs.iter().map(String::as_str).collect();
            let by_anchor = self.cs_ids_by_anchor(target, &raw).await?;
            let linked: Vec<CsId> = by_dn.values().chain(by_anchor.values()).copied().collect();
            self.load_links(&linked).await?;
        }
        Ok(())
    }

    /// The CS objects of a connector that refer to this key (a normalized DN or an anchor).
    pub(super) async fn cs_referrer_ids(&mut self, connector: ConnectorId, key: &str) -> Result<Vec<CsId>> {
        if let Some(found) = self.reads.referrers.get(&(connector, key.to_owned())) {
            return Ok(found.clone());
        }
        let found = self.store.cs_referrer_ids(connector, key).await?;
        self.reads.referrers.insert((connector, key.to_owned()), found.clone());
        Ok(found)
    }
}

/// Of `ids`, those a per-(target, MV object) answer of this batch does not cover yet, sorted and
/// once each.
fn unasked(known: &HashMap<(ConnectorId, MvId), bool>, connector: ConnectorId, ids: &[MvId]) -> Vec<MvId> {
    let missing: BTreeSet<MvId> =
        ids.iter().copied().filter(|m| !known.contains_key(&(connector, *m))).collect();
    missing.into_iter().collect()
}

/// Of `ids`, those the answers of this batch say yes to.
fn flagged(
    known: &HashMap<(ConnectorId, MvId), bool>,
    connector: ConnectorId,
    ids: &[MvId],
) -> BTreeSet<MvId> {
    ids.iter().copied().filter(|m| known.get(&(connector, *m)) == Some(&true)).collect()
}
