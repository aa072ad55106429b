//! The sync run profile: connector space -> metaverse -> pending exports.
//!
//! [`run_sync`] reads one connector's changed connector-space objects (every object for a full
//! sync, those changed since its sync mark for a delta), in batches. For each it applies the
//! inbound sync rules in scope: an object already linked stays linked; an unlinked one is joined
//! (ordered join groups: the first group that finds exactly one metaverse object wins, zero or
//! several fall through) or projected; an object deleted or out of scope is disconnected, and a
//! metaverse object left without any source is deleted. Every metaverse object touched is then
//! recomputed from all its linked objects (attribute flows, precedence per attribute, NULL,
//! authoritative NULL, apply once, references mapped to metaverse objects) and the outbound
//! rules of every target connector stage what the target needs as pending exports: an add, an
//! update with old and new values per attribute, or a delete of an object this engine
//! provisioned. A target object that a join rule finds (hard match on the ImmutableID, then
//! soft match where the rules allow it) is linked instead of provisioned.
//!
//! Each batch is written in one transaction with how far the run got, so a run killed at any
//! point resumes where it stopped and ends in the same state as an uninterrupted one. A batch's
//! transaction runs while the next batch is read and computed: a few batches share one
//! in-memory overlay ([`SyncOptions::batches_per_overlay`]), so the next batch sees what the one
//! being written did, and gets the same answers whether or not that write has landed (see
//! `SyncRun::ship`). A write that fails stops the run before the next batch is written.

mod reads;
mod tenant;
mod view;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use syncctl_core::rules::{FlowValue, InboundRule, LinkType, OutboundRule, RuleSet};
use syncctl_core::{AttrValues, Attributes, Clock};
use syncctl_store::{
    AttrProvenance, AttributeChange, ConnectorId, CsId, ExportOperation, LinkHow, MvId, MvLink, MvObject,
    MvWrite, PendingExport, RunCounts, RunError, RunId, Severity, Store, SyncBatch, SyncCsObject,
};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::background::Background;
use crate::closed_on_error;
use crate::error::Result;
use tenant::{Tenant, placeholder_seed};
pub(crate) use view::parse_mv_ref;
use view::{CsView, MvView, join_keys, key_attribute, key_texts, mv_ref, same_values};

/// A configured connector as sync needs it.
#[derive(Clone, Debug)]
pub struct SyncConnector {
    /// Its row id.
    pub id: ConnectorId,
    /// Its name.
    pub name: String,
    /// Its kind (`ldap-ad`, `ldap-openldap`, `ldif`, `graph`...): which default rules apply.
    pub kind: String,
    /// True for a connector that takes exports (outbound rules stage pending exports for it).
    pub target: bool,
    /// Its export schema ([`syncctl_core::Capabilities::export_attributes`]): per object type,
    /// the attributes it can write. An object type not listed: no limit.
    pub export_attributes: BTreeMap<String, Vec<String>>,
}

impl SyncConnector {
    /// False when the export schema lists `object_type` with no attribute: the target cannot
    /// create or change such objects (Graph's organizational contacts).
    pub fn writes_type(&self, object_type: &str) -> bool {
        self.export_attributes
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(object_type))
            .is_none_or(|(_, list)| !list.is_empty())
    }

    /// True when export can write `attribute` of `object_type` objects.
    pub fn writes(&self, object_type: &str, attribute: &str) -> bool {
        self.export_attributes
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(object_type))
            .is_none_or(|(_, list)| list.iter().any(|a| a.eq_ignore_ascii_case(attribute)))
    }
}

/// Full or delta sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// Every object of the connector space.
    Full,
    /// Objects changed since the last sync.
    Delta,
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full-sync",
            Self::Delta => "delta-sync",
        })
    }
}

/// Settings of a sync run.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// The run stops (`stopped-error-limit`) after this many per-object errors.
    pub error_limit: i64,
    /// Connector-space objects per batch (one transaction each).
    pub batch_size: i64,
    /// Told about every batch before it is written (the notification workflows: set
    /// membership, requests, mail), to add its rows to the batch's transaction.
    pub hook: Option<Arc<dyn BatchHook>>,
    /// Batches that share one in-memory overlay: each batch's write runs while the next batch
    /// of the same overlay is read and computed, and the overlay is dropped once the last of
    /// them is committed. 1 writes each batch before the next is read.
    pub batches_per_overlay: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self { error_limit: 5000, batch_size: 500, hook: None, batches_per_overlay: 4 }
    }
}

/// Sees each sync batch before it is written and adds its own rows to it
/// ([`SyncBatch::workflow`]), so that they commit in the batch's transaction or not at all.
///
/// The batch's metaverse changes are in `batch.mv_writes` (objects as they will be) and
/// `batch.mv_deletes`; everything else in the store is as the previous batch left it. An error
/// stops the run before the batch is written (the next run does the batch again); per-object
/// problems are the hook's to record, not to return. It runs while the sync computes the next
/// batch, which was told what this batch writes: it may add to `batch.workflow` only.
#[async_trait::async_trait]
pub trait BatchHook: Send + Sync + fmt::Debug {
    /// Called once per batch, before it is written.
    async fn before_write(
        &self,
        store: &Store,
        batch: &mut SyncBatch,
        run: RunId,
        now: i64,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// What a sync run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    /// Connector-space objects read.
    pub processed: i64,
    /// Metaverse objects projected.
    pub projected: i64,
    /// Connector-space objects joined (source and target).
    pub joined: i64,
    /// Connector-space objects disconnected (deleted or out of scope).
    pub disconnected: i64,
    /// Metaverse objects whose attributes changed.
    pub mv_updated: i64,
    /// Metaverse objects deleted.
    pub mv_deleted: i64,
    /// Pending adds staged or changed.
    pub export_adds: i64,
    /// Pending updates staged or changed.
    pub export_updates: i64,
    /// Pending deletes staged.
    pub export_deletes: i64,
    /// Pending exports withdrawn (nothing left to do).
    pub exports_withdrawn: i64,
    /// Per-object errors.
    pub errors: i64,
    /// Per-object warnings (a UPN rewritten to the tenant's initial domain, a duplicate value
    /// set aside): the object was processed, and run history says how.
    pub warnings: i64,
}

/// The outcome of [`run_sync`].
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    /// The run's id in run history.
    pub run_id: RunId,
    /// The connector.
    pub connector: String,
    /// What ran (a delta requested without a usable mark runs as a full sync).
    pub profile: SyncMode,
    /// The run status.
    pub status: String,
    /// What it did.
    pub counts: SyncCounts,
    /// Notes for run history.
    pub notes: Vec<String>,
}

/// Told after each batch a sync run writes.
pub trait SyncProgress: Send + Sync {
    /// `processed` connector-space objects are synchronized so far, of about `total`.
    fn advance(&self, processed: u64, total: u64);
}

impl SyncProgress for crate::NoProgress {
    fn advance(&self, _processed: u64, _total: u64) {}
}

/// Runs a sync of `source`. `connectors` lists every configured connector (targets included).
#[allow(clippy::too_many_arguments)]
pub async fn run_sync(
    store: &Store,
    rules: &RuleSet,
    source: &SyncConnector,
    connectors: &[SyncConnector],
    mode: SyncMode,
    options: &SyncOptions,
    clock: &dyn Clock,
    progress: &dyn SyncProgress,
) -> Result<SyncReport> {
    let span = info_span!("sync", connector = %source.name, kind = %source.kind);
    async {
        // The tenants' verified domains decide outbound UPNs as much as the rules do: either
        // changing makes the next sync a full one.
        let mut tenants = HashMap::new();
        let mut fingerprint = rules.fingerprint();
        for t in connectors.iter().filter(|c| c.target) {
            if let Some(tenant) = Tenant::from_domains(&store.cs_domains(t.id).await?) {
                fingerprint.push_str(&format!(";tenant {}={}", t.name, tenant.fingerprint()));
                tenants.insert(t.id, Arc::new(tenant));
            }
        }
        // What the targets can write decides what is staged: a flow to an attribute a target
        // cannot write is left out, and said once per run.
        let mut schema_notes = Vec::new();
        for t in connectors.iter().filter(|c| c.target && !c.export_attributes.is_empty()) {
            fingerprint.push_str(&format!(";schema {}={:?}", t.name, t.export_attributes));
            for rule in rules.outbound.iter().filter(|r| applies(&r.connectors, t)) {
                let skipped: Vec<&str> = rule
                    .flows
                    .iter()
                    .filter(|f| !t.writes(&rule.cs_object_type, &f.target))
                    .map(|f| f.target.as_str())
                    .collect();
                if !t.writes_type(&rule.cs_object_type) {
                    schema_notes.push(format!(
                        "rule `{}`: `{}` cannot write {} objects: not exported",
                        rule.name, t.name, rule.cs_object_type
                    ));
                } else if !skipped.is_empty() {
                    schema_notes.push(format!(
                        "rule `{}`: `{}` cannot write {} of a {}: not exported",
                        rule.name,
                        t.name,
                        skipped.join(", "),
                        rule.cs_object_type
                    ));
                }
            }
        }
        let mark = store.sync_mark(source.id).await?;
        let mut notes = Vec::new();
        let profile = match (mode, &mark) {
            (SyncMode::Delta, None) => {
                notes.push("no earlier sync: this delta sync ran as a full sync".to_owned());
                SyncMode::Full
            }
            (SyncMode::Delta, Some(m)) if m.rules_fingerprint != fingerprint => {
                notes.push(
                    "the sync rules or a tenant's verified domains changed since the last sync: \
                     this delta sync ran as a full sync"
                        .to_owned(),
                );
                SyncMode::Full
            }
            _ => mode,
        };
        let now = clock.now_ms();
        let run = store.start_run(&profile.to_string(), Some(source.id), &source.name, now).await?;
        let outcome: Result<SyncReport> = async {
            info!(run, profile = %profile, "sync started");
            let mut sync = SyncRun::new(store, rules, source, connectors, options, clock);
            sync.full = profile == SyncMode::Full;
            sync.tenants = tenants;
            sync.refresh_target_keys().await?;
            let mut seq = match profile {
                SyncMode::Full => 0,
                SyncMode::Delta => mark.as_ref().map_or(0, |m| m.change_seq),
            };
            let top = store.cs_top_seq(source.id).await?;
            let total = u64::try_from(store.cs_count_since(source.id, seq).await?).unwrap_or(0);
            let start_seq = seq;
            let mut status = "success";
            // A batch's write runs while the next batch is read and computed: batches share the
            // overlay until the last of them is committed (see `SyncRun::ship`).
            let mut writing: Background<()> = Background::new("the write of a sync batch");
            let mut sharing = 0;
            // A failure stops the run, but only once the write in flight has ended (committed
            // or failed): it never lands after the run is closed.
            let looped: Result<()> = async {
                while seq < top {
                    let objects = store.cs_changed_since(source.id, seq, options.batch_size).await?;
                    if objects.is_empty() {
                        break;
                    }
                    // The mark moves only past the objects processed (the error limit can stop a batch).
                    let Some(last) = sync.batch(objects).await? else { break };
                    let mut batch = std::mem::take(&mut sync.out);
                    batch.marks.push((source.id, last));
                    batch.counts = sync.run_counts_delta();
                    let write = sync.ship(run, batch).await?;
                    writing.start(write).await?;
                    sharing += 1;
                    // A batch that read much (a large group's members) ends its overlay at once,
                    // rather than holding what it read beside the next batches.
                    if sharing >= options.batches_per_overlay.max(1)
                        || sync.overlay_len() > sync.overlay_limit()
                    {
                        writing.settle().await?;
                        sync.reset_overlay();
                        sharing = 0;
                    }
                    seq = last;
                    progress.advance(u64::try_from(sync.counts.processed).unwrap_or(0), total);
                    if sync.counts.errors >= options.error_limit {
                        status = "stopped-error-limit";
                        notes.push(format!(
                            "stopped after {} errors (the error limit is {})",
                            sync.counts.errors, options.error_limit
                        ));
                        break;
                    }
                }
                Ok(())
            }
            .await;
            let settled = writing.settle().await;
            looped?;
            settled?;
            sync.reset_overlay();
            // Objects whose last sync failed are read again (a full sync read them anyway), after the
            // changes so that failures that keep failing never starve them.
            if profile == SyncMode::Delta && status == "success" {
                let retry_ids = store.sync_retries(source.id).await?;
                if !retry_ids.is_empty() {
                    let mut retry: Vec<SyncCsObject> = store
                        .cs_by_ids(&retry_ids)
                        .await?
                        .into_values()
                        .filter(|o| o.change_seq <= start_seq && o.connector_id == source.id)
                        .collect();
                    retry.sort_by_key(|o| o.change_seq);
                    notes.push(format!(
                        "{} objects whose last sync failed were synchronized again",
                        retry.len()
                    ));
                    for chunk in retry.chunks(usize::try_from(options.batch_size).unwrap_or(500).max(1)) {
                        sync.side_batch(chunk.to_vec(), run).await?;
                    }
                }
            }
            // Members of changed groups, for ISMEMBEROF scopes (a few rounds for nested groups).
            for _round in 0..5 {
                if status != "success" || sync.requeue.is_empty() {
                    break;
                }
                let ids: Vec<CsId> = std::mem::take(&mut sync.requeue).into_iter().collect();
                let mut again: Vec<SyncCsObject> = store.cs_by_ids(&ids).await?.into_values().collect();
                again.sort_by_key(|o| o.change_seq);
                for chunk in again.chunks(usize::try_from(options.batch_size).unwrap_or(500).max(1)) {
                    sync.side_batch(chunk.to_vec(), run).await?;
                }
            }
            // Objects whose references were still settling when the last batch ended.
            if status == "success" && !sync.dirty.is_empty() {
                sync.side_batch(Vec::new(), run).await?;
            }
            if status == "success" {
                store
                    .complete_sync(
                        source.id,
                        seq.max(top),
                        &fingerprint,
                        profile == SyncMode::Full,
                        clock.now_ms(),
                    )
                    .await?;
                if sync.counts.errors > 0 {
                    status = "completed-with-errors";
                }
            }
            notes.extend(schema_notes);
            let c = &sync.counts;
            notes.push(format!(
            "{} read, {} projected, {} joined, {} disconnected, {} metaverse updates, {} metaverse deletes; \
             pending exports: {} adds, {} updates, {} deletes staged, {} withdrawn",
            c.processed,
            c.projected,
            c.joined,
            c.disconnected,
            c.mv_updated,
            c.mv_deleted,
            c.export_adds,
            c.export_updates,
            c.export_deletes,
            c.exports_withdrawn
        ));
            store.finish_run(run, status, None, 0, &notes.join("; "), clock.now_ms()).await?;
            info!(run, status, "sync finished");
            Ok(SyncReport {
                run_id: run,
                connector: source.name.clone(),
                profile,
                status: status.to_owned(),
                counts: sync.counts.clone(),
                notes,
            })
        }
        .await;
        closed_on_error(store, run, outcome, clock).await
    }
    .instrument(span)
    .await
}

/// MV ids are allocated for this many batches at a time: an allocation is a write, and waits
/// for the batch being written (see [`SyncOptions::batches_per_overlay`]). Ids left over when
/// a run ends are not used.
const ID_ALLOCATION_BATCHES: usize = 4;

/// Connector-space objects and links per object of a batch that an overlay shared by several
/// batches may hold (see [`SyncRun::overlay_limit`]): batches of users with a manager come to
/// about six, a batch with a group of 50,000 members to hundreds.
const OVERLAY_ENTRIES_PER_OBJECT: usize = 32;

/// One contribution to an MV attribute (borrowed from the rules and connectors of the run, the
/// source object shared: only the winning contribution of each attribute becomes provenance).
struct Contribution<'a> {
    precedence: u32,
    rule: &'a str,
    connector: &'a str,
    connector_id: ConnectorId,
    source: Arc<SyncCsObject>,
    apply_once: bool,
    value: FlowValue,
}

/// A sync run in progress, with the batch's in-memory overlay over the store.
struct SyncRun<'a> {
    store: &'a Store,
    rules: &'a RuleSet,
    source: &'a SyncConnector,
    connectors: &'a [SyncConnector],
    clock: &'a dyn Clock,
    error_limit: i64,
    /// Join-key attributes of MV objects: `(attribute, case_insensitive)`.
    mv_keys: Vec<(String, bool)>,
    /// Join-key attributes of each target's objects.
    target_keys: HashMap<ConnectorId, Vec<(String, bool)>>,
    counts: SyncCounts,
    counted: SyncCounts,
    // The overlay of one batch.
    /// Shared, not copied: an object is read by every step of its batch.
    cs: HashMap<CsId, Arc<SyncCsObject>>,
    links_cs: HashMap<CsId, Option<MvLink>>,
    /// The CS objects `links_cs` has ever linked to each MV object in this batch (an index of
    /// it: each entry is checked against `links_cs`, which may have moved the link since).
    links_cs_by_mv: HashMap<MvId, Vec<CsId>>,
    links_mv: HashMap<MvId, Vec<MvLink>>,
    mv: HashMap<MvId, Option<Arc<MvObject>>>,
    new_keys: HashMap<(String, String), Vec<MvId>>,
    dirty: BTreeSet<MvId>,
    /// Target links of MV objects deleted in this batch (to deprovision).
    deleted_links: HashMap<MvId, (String, Vec<MvLink>)>,
    free_ids: Vec<MvId>,
    /// MV objects to compare with their targets again (a referenced object joined).
    redo: BTreeSet<MvId>,
    /// MV objects left for the next batch (references still settling).
    dirty_next: BTreeSet<MvId>,
    /// The MV objects of the outbound pass in progress.
    outbound_set: BTreeSet<MvId>,
    /// The MV object being recomputed or compared (errors are retried through its sources).
    current_mv: Option<MvId>,
    /// CS objects of the source to read again in this run (members of a changed group).
    requeue: BTreeSet<CsId>,
    /// True for a full sync.
    full: bool,
    /// MV objects given a new pending add in this pass: what refers to them is compared again.
    new_adds: Vec<MvId>,
    /// CS objects and MV objects whose sync failed in this batch.
    failed_cs: BTreeSet<CsId>,
    failed_mvs: BTreeSet<MvId>,
    /// Unique target values claimed in this batch: (target, attribute, lower-case value) -> MV.
    /// Kept per batch only: a claim of an earlier batch is a staged export by now, and the
    /// store's `pending_unique` answers for it (a whole run's claims were half a million
    /// entries at 100,000 objects).
    claimed: HashMap<(ConnectorId, &'static str, String), MvId>,
    /// Unique values of sent adds whose values changed since (target, attribute, lower-case
    /// value) -> MV: such an add is not staged again, so the store's staged values still name
    /// the old ones; these stay claimed for the whole run.
    held_claims: HashMap<(ConnectorId, &'static str, String), MvId>,
    /// True when a rule's scope needs group memberships.
    uses_member_of: bool,
    /// MV join candidates prefetched for the batch: (key attribute, value) -> MV ids.
    join_cache: HashMap<(String, String), Vec<MvId>>,
    /// Objects of the source newly linked in this batch: what refers to them is recomputed.
    newly_linked: Vec<(String, String)>,
    /// Targets that are cloud tenants (their connector space holds domains): outbound values
    /// get the directory-sync service's UPN rewrite and duplicate attribute resiliency.
    tenants: HashMap<ConnectorId, Arc<Tenant>>,
    /// Unique values of the object being compared that the directory-sync rewrites just found
    /// free (target, attribute, lower-case value): the unique check does not look them up again.
    checked_free: std::collections::HashSet<(ConnectorId, &'static str, String)>,
    /// Pending exports staged in this run (target, key, operation), to count each once.
    staged: std::collections::HashSet<(ConnectorId, String, &'static str)>,
    /// The batch hook of the options.
    hook: Option<Arc<dyn BatchHook>>,
    /// The warnings [`SyncRun::warn_once`] gave in this run: (MV object, hash of kind and
    /// message), 16 bytes each rather than the message.
    reported: std::collections::HashSet<(MvId, u64)>,
    reported_hasher: std::hash::RandomState,
    /// What the store answered in this batch (see [`reads`]).
    reads: reads::BatchReads,
    /// The (target, target key) of every export in `out.pending_writes`.
    out_keys: std::collections::HashSet<(ConnectorId, String)>,
    /// MV objects whose links this batch made or removed (see [`SyncRun::ship`]).
    links_touched: BTreeSet<MvId>,
    /// Connector-space objects per batch: MV ids are allocated for [`ID_ALLOCATION_BATCHES`]
    /// batches at a time.
    batch_size: usize,
    out: SyncBatch,
}

impl<'a> SyncRun<'a> {
    fn new(
        store: &'a Store,
        rules: &'a RuleSet,
        source: &'a SyncConnector,
        connectors: &'a [SyncConnector],
        options: &SyncOptions,
        clock: &'a dyn Clock,
    ) -> Self {
        let mut mv_keys = Vec::new();
        for rule in &rules.inbound {
            for group in &rule.join {
                for clause in &group.clauses {
                    mv_keys.push((clause.target_attribute.clone(), clause.case_insensitive));
                }
            }
        }
        mv_keys.sort();
        mv_keys.dedup();
        let mut target_keys: HashMap<ConnectorId, Vec<(String, bool)>> = HashMap::new();
        for t in connectors.iter().filter(|c| c.target) {
            let mut keys = Vec::new();
            for rule in rules.outbound.iter().filter(|r| applies(&r.connectors, t)) {
                for group in &rule.join {
                    for clause in &group.clauses {
                        keys.push((clause.target_attribute.clone(), clause.case_insensitive));
                    }
                }
            }
            keys.extend(UNIQUE_ATTRIBUTES.iter().map(|a| ((*a).to_owned(), true)));
            keys.sort();
            keys.dedup();
            target_keys.insert(t.id, keys);
        }
        Self {
            store,
            rules,
            source,
            connectors,
            clock,
            error_limit: options.error_limit,
            mv_keys,
            target_keys,
            counts: SyncCounts::default(),
            counted: SyncCounts::default(),
            cs: HashMap::new(),
            links_cs: HashMap::new(),
            links_cs_by_mv: HashMap::new(),
            links_mv: HashMap::new(),
            mv: HashMap::new(),
            new_keys: HashMap::new(),
            dirty: BTreeSet::new(),
            deleted_links: HashMap::new(),
            free_ids: Vec::new(),
            redo: BTreeSet::new(),
            dirty_next: BTreeSet::new(),
            outbound_set: BTreeSet::new(),
            current_mv: None,
            requeue: BTreeSet::new(),
            full: false,
            new_adds: Vec::new(),
            failed_cs: BTreeSet::new(),
            failed_mvs: BTreeSet::new(),
            claimed: HashMap::new(),
            held_claims: HashMap::new(),
            uses_member_of: rules.inbound.iter().any(|r| r.scope.uses_member_of())
                || rules.outbound.iter().any(|r| r.scope.uses_member_of()),
            newly_linked: Vec::new(),
            join_cache: HashMap::new(),
            tenants: HashMap::new(),
            checked_free: std::collections::HashSet::new(),
            staged: std::collections::HashSet::new(),
            hook: options.hook.clone(),
            reported: std::collections::HashSet::new(),
            reported_hasher: std::hash::RandomState::new(),
            reads: reads::BatchReads::default(),
            out_keys: std::collections::HashSet::new(),
            links_touched: BTreeSet::new(),
            batch_size: usize::try_from(options.batch_size).unwrap_or(500).max(1),
            out: SyncBatch::default(),
        }
    }

    /// How many connector-space objects and links the overlay holds.
    fn overlay_len(&self) -> usize {
        self.cs.len() + self.links_cs.len()
    }

    /// The most [`SyncRun::overlay_len`] that several batches may share.
    fn overlay_limit(&self) -> usize {
        self.batch_size * OVERLAY_ENTRIES_PER_OBJECT
    }

    /// Drops the overlay, once every batch written from it is committed: what the next batch
    /// reads comes from the store. What belonged to the last batch alone was ended when it was
    /// handed over ([`SyncRun::end_batch`]); what it left to settle goes on to the next.
    fn reset_overlay(&mut self) {
        self.reads = reads::BatchReads::default();
        self.links_touched.clear();
        self.join_cache.clear();
        self.cs.clear();
        self.links_cs.clear();
        self.links_cs_by_mv.clear();
        self.links_mv.clear();
        self.mv.clear();
        self.new_keys.clear();
        let next = std::mem::take(&mut self.dirty_next);
        self.dirty.extend(next);
    }

    /// Ends what belongs to one batch alone (its exports in `out`, its claims, its deletes to
    /// deprovision, what it had to recompute); what it left to settle is the next batch's.
    fn end_batch(&mut self) {
        self.out_keys.clear();
        self.claimed.clear();
        self.deleted_links.clear();
        self.dirty = std::mem::take(&mut self.dirty_next);
    }

    /// Records in the overlay that `cs` is linked to `link`'s MV object (or to none).
    fn set_link_cs(&mut self, cs: CsId, link: Option<MvLink>) {
        if let Some(l) = &link {
            self.links_cs_by_mv.entry(l.mv_id).or_default().push(cs);
        }
        self.links_cs.insert(cs, link);
    }

    /// The counters added since the last batch, in run-history terms.
    fn run_counts_delta(&mut self) -> RunCounts {
        let c = &self.counts;
        let p = &self.counted;
        let delta = RunCounts {
            adds: c.projected - p.projected,
            updates: c.mv_updated - p.mv_updated,
            renames: 0,
            deletes: c.mv_deleted - p.mv_deleted,
            unchanged: (c.processed - p.processed) - (c.projected - p.projected),
            errors: c.errors - p.errors,
            warnings: c.warnings - p.warnings,
        };
        self.counted = self.counts.clone();
        RunCounts { unchanged: delta.unchanged.max(0), ..delta }
    }

    fn connector(&self, id: ConnectorId) -> Option<&'a SyncConnector> {
        self.connectors.iter().find(|c| c.id == id)
    }

    fn error_at(&mut self, anchor: Option<String>, dn: Option<String>, kind: &str, message: String) {
        if let Some(mv) = self.current_mv {
            self.failed_mvs.insert(mv);
        }
        warn!(kind, anchor = anchor.as_deref(), "{message}");
        self.counts.errors += 1;
        self.out.errors.push(RunError { level: Severity::Error, anchor, dn, kind: kind.to_owned(), message });
    }

    /// Records a warning about the current object: processed, and run history says how.
    fn warn_at(&mut self, anchor: Option<String>, dn: Option<String>, kind: &str, message: String) {
        warn!(kind, anchor = anchor.as_deref(), "{message}");
        self.counts.warnings += 1;
        self.out.errors.push(RunError {
            level: Severity::Warning,
            anchor,
            dn,
            kind: kind.to_owned(),
            message,
        });
    }

    /// A warning about an MV object that a run gives once: an object compared again in the same
    /// run (a referenced object joined, a later round, a side batch) is not reported again for
    /// the same thing.
    fn warn_once(
        &mut self,
        mv: MvId,
        anchor: Option<String>,
        dn: Option<String>,
        kind: &'static str,
        message: String,
    ) {
        use std::hash::BuildHasher as _;
        if self.reported.insert((mv, self.reported_hasher.hash_one((kind, &message)))) {
            self.warn_at(anchor, dn, kind, message);
        }
    }

    fn error(&mut self, object: Option<&SyncCsObject>, kind: &str, message: String) {
        match object {
            Some(o) if o.connector_id == self.source.id => {
                self.failed_cs.insert(o.id);
            }
            // Another connector's object, or none: retried through the MV object's sources.
            _ => {
                if let Some(mv) = self.current_mv {
                    self.failed_mvs.insert(mv);
                }
            }
        }
        warn!(kind, dn = object.map(|o| o.dn.as_str()), "{message}");
        self.counts.errors += 1;
        self.out.errors.push(RunError {
            level: Severity::Error,
            anchor: object.map(|o| o.anchor.clone()),
            dn: object.map(|o| o.dn.clone()),
            kind: kind.to_owned(),
            message,
        });
    }

    /// Brings the join keys of every target's connector space up to date, so outbound joins
    /// see what the last import of each target brought.
    async fn refresh_target_keys(&mut self) -> Result<()> {
        for t in self.connectors.iter().filter(|c| c.target) {
            let wanted = self.target_keys.get(&t.id).cloned().unwrap_or_default();
            let fingerprint = wanted.iter().map(|(a, ci)| format!("{a}/{ci}")).collect::<Vec<_>>().join(",");
            let (mut seq, rebuild) = match self.store.cs_join_mark(t.id).await? {
                Some((seq, f)) if f == fingerprint => (seq, false),
                _ => (0, true),
            };
            let mut first = rebuild;
            loop {
                let objects = self.store.cs_changed_since(t.id, seq, 5000).await?;
                let Some(last) = objects.last().map(|o| o.change_seq) else {
                    if first {
                        self.store.write_cs_join_keys(t.id, &[], true, seq, &fingerprint).await?;
                    }
                    break;
                };
                let keys: Vec<(CsId, Vec<(String, String)>)> = objects
                    .iter()
                    .map(|o| (o.id, if o.present { join_keys(&o.attributes, &wanted) } else { Vec::new() }))
                    .collect();
                self.store.write_cs_join_keys(t.id, &keys, first, last, &fingerprint).await?;
                first = false;
                seq = last;
            }
        }
        Ok(())
    }

    /// Loads the links of these CS objects that the overlay does not know yet, in one query.
    async fn load_links(&mut self, ids: &[CsId]) -> Result<()> {
        let missing: Vec<CsId> = ids.iter().copied().filter(|c| !self.links_cs.contains_key(c)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut found = self.store.links_by_cs(&missing).await?;
        for cs in missing {
            self.set_link_cs(cs, found.remove(&cs));
        }
        Ok(())
    }

    async fn link_of_cs(&mut self, cs: CsId) -> Result<Option<MvLink>> {
        if let Some(l) = self.links_cs.get(&cs) {
            return Ok(l.clone());
        }
        let found = self.store.links_by_cs(&[cs]).await?.remove(&cs);
        self.set_link_cs(cs, found.clone());
        Ok(found)
    }

    async fn links_of_mv(&mut self, mv: MvId) -> Result<Vec<MvLink>> {
        if let Some(l) = self.links_mv.get(&mv) {
            return Ok(l.clone());
        }
        let stored = self.store.links_by_mv(&[mv]).await?;
        let found = self.merge_links(mv, stored);
        self.links_mv.insert(mv, found.clone());
        Ok(found)
    }

    /// The stored links of an MV object as this batch has changed them: links moved or removed
    /// in the overlay are left out, links made in this batch are added.
    fn merge_links(&mut self, mv: MvId, stored: Vec<MvLink>) -> Vec<MvLink> {
        let mut found: Vec<MvLink> = Vec::new();
        for l in stored {
            match self.links_cs.get(&l.cs_id) {
                None => {
                    self.set_link_cs(l.cs_id, Some(l.clone()));
                    found.push(l);
                }
                Some(Some(current)) if current.mv_id == mv => found.push(current.clone()),
                Some(_) => {}
            }
        }
        for cs in self.links_cs_by_mv.get(&mv).into_iter().flatten() {
            if let Some(Some(l)) = self.links_cs.get(cs)
                && l.mv_id == mv
                && !found.iter().any(|f| f.cs_id == l.cs_id)
            {
                found.push(l.clone());
            }
        }
        // In the store's order, whichever batch made them: the order decides between two
        // contributions of equal precedence.
        found.sort_by_key(|l| (l.connector_id, l.cs_id));
        found
    }

    /// Syncs objects outside the change order (retries, re-scoped members, references still
    /// settling) and writes them as one batch that moves no sync mark.
    async fn side_batch(&mut self, objects: Vec<SyncCsObject>, run: RunId) -> Result<()> {
        self.batch(objects).await?;
        let mut batch = std::mem::take(&mut self.out);
        batch.counts = self.run_counts_delta();
        self.ship(run, batch).await?.await?;
        self.reset_overlay();
        Ok(())
    }

    /// Hands a batch over to be written: returns its write (the hook, if any, adds its rows;
    /// then the store's transaction), to run while the next batch of the same overlay is read
    /// and computed.
    ///
    /// The next batch must get the same answers whether or not that write has landed when it
    /// asks. What the batch made (MV objects, links, join keys) stays in the overlay, which the
    /// lookups consult before the store; the answers the write changes in tables the overlay
    /// does not hold (pending exports, their claims on unique values, whether an MV object is
    /// linked to a target) are set to what the store will hold (see `reads::Shipped`); what
    /// belonged to this batch alone (its exports in `out`, its claims, its deletes to
    /// deprovision) is ended ([`SyncRun::end_batch`]).
    async fn ship(
        &mut self,
        run: RunId,
        batch: SyncBatch,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        self.reads.ship(&batch);
        // Whether the MV objects whose links this batch changed are linked to a present object
        // of each target, as the store will say once the write lands (the batches after it
        // change the overlay, not this answer).
        let touched: Vec<MvId> = std::mem::take(&mut self.links_touched).into_iter().collect();
        let mut linked: Vec<(MvId, Vec<CsId>)> = Vec::with_capacity(touched.len());
        for m in touched {
            let cs: Vec<CsId> = self.links_of_mv(m).await?.iter().map(|l| l.cs_id).collect();
            linked.push((m, cs));
        }
        let unknown: Vec<CsId> = linked
            .iter()
            .flat_map(|(_, cs)| cs.iter().copied())
            .filter(|c| !self.cs.contains_key(c))
            .collect();
        for (id, o) in self.store.cs_by_ids(&unknown).await? {
            self.cs.insert(id, Arc::new(o));
        }
        for t in self.connectors.iter().filter(|c| c.target) {
            for (m, cs) in &linked {
                let present =
                    cs.iter().filter_map(|c| self.cs.get(c)).any(|o| o.connector_id == t.id && o.present);
                self.reads.set_target_linked(t.id, *m, present);
            }
        }
        self.end_batch();
        let (store, hook, now) = (self.store.clone(), self.hook.clone(), self.clock.now_ms());
        Ok(async move {
            let mut batch = batch;
            if let Some(hook) = &hook {
                hook.before_write(&store, &mut batch, run, now)
                    .await
                    .map_err(|source| crate::EngineError::Hook { source })?;
            }
            store.write_sync_batch(run, &batch, now).await?;
            Ok(())
        })
    }

    /// Loads, in a few queries, the MV objects, their links and the linked CS objects that the
    /// rest of the batch will read one by one.
    async fn prefetch(&mut self, ids: impl IntoIterator<Item = MvId>) -> Result<()> {
        let ids: Vec<MvId> = ids
            .into_iter()
            .filter(|id| !self.mv.contains_key(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut objects = self.store.mv_by_ids(&ids).await?;
        let mut by_mv: HashMap<MvId, Vec<MvLink>> = HashMap::new();
        for l in self.store.links_by_mv(&ids).await? {
            by_mv.entry(l.mv_id).or_default().push(l);
        }
        let mut cs_ids = Vec::new();
        for id in &ids {
            self.mv.insert(*id, objects.remove(id).map(Arc::new));
            if self.links_mv.contains_key(id) {
                continue;
            }
            let found = self.merge_links(*id, by_mv.remove(id).unwrap_or_default());
            cs_ids.extend(found.iter().map(|l| l.cs_id).filter(|c| !self.cs.contains_key(c)));
            self.links_mv.insert(*id, found);
        }
        for (id, o) in self.store.cs_by_ids(&cs_ids).await? {
            self.cs.insert(id, Arc::new(o));
        }
        Ok(())
    }

    /// The join candidates every unlinked object of the batch will look up, in one query per
    /// join attribute (an expression that fails here fails again, with its error, in `inbound`).
    async fn prefetch_join_candidates(&mut self, objects: &[Arc<SyncCsObject>]) -> Result<()> {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in objects.iter().filter(|o| o.present && matches!(self.links_cs.get(&o.id), Some(None))) {
            let view = CsView { object: o, member_of: Vec::new() };
            for rule in self.rules.inbound_for(&self.source.kind, &self.source.name, &o.object_class) {
                for group in &rule.join {
                    if let Ok(Some(lookups)) = group.source_values(&view) {
                        for (attribute, values, ci) in lookups {
                            wanted.entry(key_attribute(&attribute, ci)).or_default().extend(values);
                        }
                    }
                }
            }
        }
        for (key, values) in wanted {
            let values: Vec<String> = values.into_iter().collect();
            let mut found: HashMap<String, Vec<MvId>> =
                values.iter().map(|v| (v.clone(), Vec::new())).collect();
            for (value, id) in self.store.mv_join_candidates_many(&key, &values).await? {
                found.entry(value).or_default().push(id);
            }
            for (value, ids) in found {
                self.join_cache.insert((key.clone(), value), ids);
            }
        }
        Ok(())
    }

    async fn mv_object(&mut self, mv: MvId) -> Result<Option<Arc<MvObject>>> {
        if let Some(o) = self.mv.get(&mv) {
            return Ok(o.clone());
        }
        let found = self.store.mv_by_ids(&[mv]).await?.remove(&mv).map(Arc::new);
        self.mv.insert(mv, found.clone());
        Ok(found)
    }

    async fn cs_object(&mut self, cs: CsId) -> Result<Option<Arc<SyncCsObject>>> {
        if let Some(o) = self.cs.get(&cs) {
            return Ok(Some(Arc::clone(o)));
        }
        let found = self.store.cs_by_ids(&[cs]).await?.remove(&cs).map(Arc::new);
        if let Some(o) = &found {
            self.cs.insert(cs, Arc::clone(o));
        }
        Ok(found)
    }

    async fn add_link(&mut self, link: MvLink) -> Result<()> {
        self.links_of_mv(link.mv_id).await?;
        self.links_touched.insert(link.mv_id);
        self.set_link_cs(link.cs_id, Some(link.clone()));
        let list = self.links_mv.entry(link.mv_id).or_default();
        list.retain(|l| l.cs_id != link.cs_id);
        list.push(link.clone());
        list.sort_by_key(|l| (l.connector_id, l.cs_id));
        self.out.link_deletes.retain(|c| *c != link.cs_id);
        self.out.link_writes.retain(|l| l.cs_id != link.cs_id);
        self.out.link_writes.push(link);
        Ok(())
    }

    async fn remove_link(&mut self, link: &MvLink) -> Result<()> {
        self.links_of_mv(link.mv_id).await?;
        self.links_touched.insert(link.mv_id);
        self.set_link_cs(link.cs_id, None);
        if let Some(list) = self.links_mv.get_mut(&link.mv_id) {
            list.retain(|l| l.cs_id != link.cs_id);
        }
        self.out.link_writes.retain(|l| l.cs_id != link.cs_id);
        self.out.link_deletes.push(link.cs_id);
        Ok(())
    }

    /// The groups listing `object`, read only when a rule's scope asks (ISMEMBEROF).
    async fn member_of(&self, object: &SyncCsObject) -> Result<Vec<String>> {
        if !self.uses_member_of {
            return Ok(Vec::new());
        }
        Ok(self.store.cs_member_of(object.connector_id, &object.dn_norm).await?)
    }

    /// One batch of the source's changed objects.
    async fn batch(&mut self, objects: Vec<SyncCsObject>) -> Result<Option<i64>> {
        let ids: Vec<CsId> = objects.iter().map(|o| o.id).collect();
        // An earlier batch of the overlay may have linked them (an outbound join).
        self.load_links(&ids).await?;
        let unlinked = ids.iter().filter(|id| matches!(self.links_cs.get(id), Some(None))).count();
        if unlinked > self.free_ids.len() {
            let wanted = (unlinked - self.free_ids.len()).max(self.batch_size * ID_ALLOCATION_BATCHES);
            let n = i64::try_from(wanted).unwrap_or(i64::MAX);
            let first = self.store.allocate_mv_ids(n).await?;
            // Handed out lowest first: the ids left over come before the new ones.
            let mut ids: Vec<MvId> = (first..first + n).rev().collect();
            ids.append(&mut self.free_ids);
            self.free_ids = ids;
        }
        let objects: Vec<Arc<SyncCsObject>> = objects.into_iter().map(Arc::new).collect();
        for o in &objects {
            self.cs.insert(o.id, Arc::clone(o));
        }
        // The MV objects of this batch's objects (the overlay also holds links of earlier
        // batches and of referenced objects).
        let linked: Vec<MvId> =
            ids.iter().filter_map(|id| self.links_cs.get(id).cloned().flatten()).map(|l| l.mv_id).collect();
        self.prefetch(linked).await?;
        self.prefetch_join_candidates(&objects).await?;
        self.prefetch_inbound(&objects).await?;
        self.prefetch_candidates().await?;
        let mut last = None;
        let mut processed = Vec::new();
        for o in objects {
            self.counts.processed += 1;
            processed.push(o.id);
            if let Err(e) = self.inbound(&o).await {
                self.error(Some(&o), "sync-failed", e.to_string());
            }
            last = Some(o.change_seq);
            if self.counts.errors >= self.error_limit {
                break;
            }
        }
        let linked = std::mem::take(&mut self.newly_linked);
        if !linked.is_empty() {
            let mut keys: Vec<String> = linked.into_iter().flat_map(|(dn, anchor)| [dn, anchor]).collect();
            keys.sort();
            keys.dedup();
            let referrers = self.store.cs_referrer_ids_many(self.source.id, &keys).await?;
            self.load_links(&referrers).await?;
            for cs in referrers {
                if let Some(link) = self.link_of_cs(cs).await? {
                    self.dirty.insert(link.mv_id);
                }
            }
        }
        let dirty: Vec<MvId> = std::mem::take(&mut self.dirty).into_iter().collect();
        self.prefetch(dirty.iter().copied()).await?;
        self.prefetch_references(&dirty).await?;
        for mv in &dirty {
            self.recompute(*mv).await?;
        }
        let deleted: Vec<MvId> = self.deleted_links.keys().copied().collect();
        let mut outbound: BTreeSet<MvId> = dirty.into_iter().collect();
        outbound.extend(deleted);
        // A target object joined here may be what another object's references name: those
        // are compared again once every join of the batch is made.
        for _round in 0..3 {
            self.outbound_set = outbound.clone();
            self.prefetch_outbound(&outbound).await?;
            for mv in std::mem::take(&mut outbound) {
                for t in self.connectors.iter().filter(|c| c.target) {
                    self.outbound(mv, t).await?;
                }
            }
            // Objects that now get an add may be what others refer to.
            let added = std::mem::take(&mut self.new_adds);
            for (mv, referrer) in self.mv_referrers_many(&added).await? {
                if referrer != mv {
                    self.redo.insert(referrer);
                }
            }
            outbound = std::mem::take(&mut self.redo);
            if outbound.is_empty() {
                break;
            }
        }
        if !outbound.is_empty() {
            warn!(
                left = outbound.len(),
                "references still settling after three rounds: compared again in the next batch"
            );
            self.dirty_next.extend(outbound);
        }
        self.current_mv = None;
        // What failed is read again by the next sync; what went through is not.
        let mut failed = std::mem::take(&mut self.failed_cs);
        for mv in std::mem::take(&mut self.failed_mvs) {
            for l in self.links_mv.get(&mv).into_iter().flatten() {
                if l.connector_id == self.source.id {
                    failed.insert(l.cs_id);
                }
            }
        }
        for id in processed {
            if !failed.contains(&id) {
                self.out.retries_clear.push((self.source.id, id));
            }
        }
        self.out.retries_add.extend(failed.into_iter().map(|c| (self.source.id, c)));
        Ok(last)
    }

    /// Inbound rules for one changed CS object of the source.
    async fn inbound(&mut self, object: &SyncCsObject) -> Result<()> {
        if !object.present {
            // A delete this engine exported is confirmed by the import that no longer sees it.
            let key = format!("cs:{}", object.id);
            if self.pending_of(object.connector_id, std::slice::from_ref(&key)).await?.contains_key(&key) {
                self.withdraw(object.connector_id, key, true);
            }
        }
        let link = self.link_of_cs(object.id).await?;
        if link.is_none() && self.source.target && object.present {
            // A target object being deprovisioned is not joined again.
            let key = format!("cs:{}", object.id);
            let pending = self.pending_of(object.connector_id, std::slice::from_ref(&key)).await?;
            if pending.get(&key).is_some_and(|p| p.operation == ExportOperation::Delete) {
                return Ok(());
            }
            // The object an exported add created, back in an import: its MV object is compared
            // again (a join confirms the add; out of scope, it is deprovisioned).
            if let Some(mv) = self.pending_add_by_created_anchor(object.connector_id, &object.anchor).await? {
                self.dirty.insert(mv);
            }
            // A target object that appears with a value a staged add claims (the same UPN, say)
            // is what that add waits for: its outbound join is tried again.
            for attribute in UNIQUE_ATTRIBUTES {
                let Some(values) = object.attributes.get(attribute) else { continue };
                for v in key_texts(values, true) {
                    let key = key_attribute(attribute, true);
                    for (holder, mv) in self.pending_unique_holders(object.connector_id, &key, &v).await? {
                        if let (true, Some(mv)) = (holder.starts_with("mv:"), mv) {
                            self.dirty.insert(mv);
                        }
                    }
                }
            }
        }
        let member_of = if object.present { self.member_of(object).await? } else { Vec::new() };
        // A group's members change their ISMEMBEROF scope without changing themselves: they are
        // read again in this run.
        if self.uses_member_of {
            let now: BTreeSet<String> = match object.attributes.get("member") {
                Some(AttrValues::Reference(members)) if object.present => {
                    members.iter().map(|d| dn_norm(d)).collect()
                }
                _ => BTreeSet::new(),
            };
            let before: BTreeSet<String> =
                self.store.sync_group_members(object.connector_id, object.id).await?.into_iter().collect();
            if now != before {
                // Added and removed members change scope: a delta sync reads them again in this
                // run (kept as retries too, should the run stop first); a full sync reads
                // everything anyway.
                if !self.full {
                    let changed: Vec<&str> = now.symmetric_difference(&before).map(String::as_str).collect();
                    let ids: Vec<CsId> =
                        self.cs_ids_by_dn(object.connector_id, &changed).await?.into_values().collect();
                    self.out.retries_add.extend(ids.iter().map(|c| (object.connector_id, *c)));
                    self.requeue.extend(ids);
                }
                self.out.group_members.push((object.connector_id, object.id, now.into_iter().collect()));
            }
        }
        let view = CsView { object, member_of };
        let mut in_scope: Vec<&'a InboundRule> = Vec::new();
        if object.present {
            for rule in self.rules.inbound_for(&self.source.kind, &self.source.name, &object.object_class) {
                match rule.scope.matches(&view) {
                    Ok(true) => in_scope.push(rule),
                    Ok(false) => {}
                    Err(e) => {
                        self.error(Some(object), "scope-failed", format!("rule `{}`: {e}", rule.name));
                        return Ok(());
                    }
                }
            }
        }
        if let Some(link) = link {
            let keeps = self.mv_object(link.mv_id).await?.is_some_and(|m| {
                in_scope.iter().any(|r| r.mv_object_type.eq_ignore_ascii_case(&m.object_type))
            });
            if keeps {
                self.dirty.insert(link.mv_id);
            } else {
                debug!(dn = %object.dn, "disconnected");
                self.disconnect(&link).await?;
            }
            if keeps || in_scope.is_empty() {
                return Ok(());
            }
        }
        if in_scope.is_empty() {
            return Ok(());
        }
        // Join: ordered groups; the first with exactly one candidate wins.
        let mut ambiguous: Vec<String> = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for rule in &in_scope {
            for (g, group) in rule.join.iter().enumerate() {
                let sources = match group.source_values(&view) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        self.error(
                            Some(object),
                            "join-failed",
                            format!("rule `{}`, join group {}: {e}", rule.name, g + 1),
                        );
                        return Ok(());
                    }
                };
                let mut candidates: Option<BTreeSet<MvId>> = None;
                for (attribute, values, ci) in &sources {
                    let key = key_attribute(attribute, *ci);
                    let mut found = BTreeSet::new();
                    for v in values {
                        let cached = self.join_cache.get(&(key.clone(), v.clone())).cloned();
                        let ids = match cached {
                            Some(ids) => ids,
                            None => self.store.mv_join_candidates(&key, v).await?,
                        };
                        found.extend(ids);
                        if let Some(ids) = self.new_keys.get(&(key.clone(), v.clone())) {
                            found.extend(ids.iter().copied());
                        }
                    }
                    candidates = Some(match candidates {
                        None => found,
                        Some(c) => c.intersection(&found).copied().collect(),
                    });
                }
                let mut matches = Vec::new();
                for id in candidates.unwrap_or_default() {
                    let Some(mv) = self.mv_object(id).await? else { continue };
                    if !mv.object_type.eq_ignore_ascii_case(&rule.mv_object_type) {
                        continue;
                    }
                    // The stored keys may be stale for an object changed in this batch.
                    let still = sources.iter().all(|(attribute, values, ci)| {
                        mv.attributes
                            .get(attribute)
                            .is_some_and(|v| key_texts(v, *ci).iter().any(|t| values.contains(t)))
                    });
                    if !still {
                        continue;
                    }
                    match group.candidate_allowed(&MvView { object: &mv }) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            self.error(
                                Some(object),
                                "join-failed",
                                format!("rule `{}`, join group {}: {e}", rule.name, g + 1),
                            );
                            return Ok(());
                        }
                    }
                    let links = self.links_of_mv(id).await?;
                    if let Some(other) =
                        links.iter().find(|l| l.connector_id == self.source.id && l.cs_id != object.id)
                    {
                        let other_dn =
                            self.cs_object(other.cs_id).await?.map(|o| o.dn.clone()).unwrap_or_default();
                        taken.push(format!("metaverse object {id} is already joined to {other_dn}"));
                        continue;
                    }
                    matches.push(id);
                }
                let shown = sources
                    .iter()
                    .map(|(a, v, _)| format!("{a} = {}", v.join(" | ")))
                    .collect::<Vec<_>>()
                    .join(", ");
                match matches.as_slice() {
                    [one] => {
                        let mv = *one;
                        // A target object created by this engine's export comes back here.
                        let add_key = format!("mv:{mv}");
                        let provisioned = self.source.target
                            && self
                                .pending_of(self.source.id, std::slice::from_ref(&add_key))
                                .await?
                                .get(&add_key)
                                .is_some_and(|p| p.operation == ExportOperation::Add && sent(p));
                        self.add_link(MvLink {
                            cs_id: object.id,
                            mv_id: mv,
                            connector_id: self.source.id,
                            rule: rule.name.clone(),
                            how: if provisioned { LinkHow::Provisioned } else { LinkHow::Joined },
                            detail: format!("join group {} of `{}`: {shown}", g + 1, rule.name),
                            linked_at: self.clock.now_ms(),
                        })
                        .await?;
                        self.counts.joined += 1;
                        self.dirty.insert(mv);
                        self.referrers_dirty(object).await?;
                        return Ok(());
                    }
                    [] => {}
                    many => ambiguous.push(format!(
                        "join group {} of `{}` ({shown}) matches {} metaverse objects ({})",
                        g + 1,
                        rule.name,
                        many.len(),
                        many.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
        if !ambiguous.is_empty() {
            self.error(
                Some(object),
                "ambiguous-join",
                format!("{}: not joined, not projected", ambiguous.join("; ")),
            );
            return Ok(());
        }
        if !taken.is_empty() {
            self.error(
                Some(object),
                "join-conflict",
                format!(
                    "{}: two objects of one connector cannot join one metaverse object",
                    taken.join("; ")
                ),
            );
            return Ok(());
        }
        let Some(rule) = in_scope.iter().find(|r| r.link_type == LinkType::Provision) else {
            return Ok(());
        };
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => self.store.allocate_mv_ids(1).await?,
        };
        let now = self.clock.now_ms();
        self.mv.insert(
            id,
            Some(Arc::new(MvObject {
                id,
                object_type: rule.mv_object_type.clone(),
                attributes: Attributes::new(),
                provenance: BTreeMap::new(),
                created_at: now,
                changed_at: now,
            })),
        );
        self.links_mv.insert(id, Vec::new());
        self.add_link(MvLink {
            cs_id: object.id,
            mv_id: id,
            connector_id: self.source.id,
            rule: rule.name.clone(),
            how: LinkHow::Projected,
            detail: "no join group found exactly one metaverse object".to_owned(),
            linked_at: now,
        })
        .await?;
        self.counts.projected += 1;
        self.dirty.insert(id);
        self.referrers_dirty(object).await?;
        Ok(())
    }

    /// Objects that refer to a newly linked object (groups listing it, reports naming it as
    /// manager) are recomputed, so their references now resolve.
    async fn referrers_dirty(&mut self, object: &SyncCsObject) -> Result<()> {
        // Looked up once for the whole batch (see `batch`).
        self.newly_linked.push((object.dn_norm.clone(), object.anchor.to_lowercase()));
        Ok(())
    }

    /// The MV objects linked to objects of the same connector that refer to `object`, by DN or
    /// (targets that refer by id) by anchor.
    async fn referrers(&mut self, object: &SyncCsObject) -> Result<BTreeSet<MvId>> {
        let mut ids = self.cs_referrer_ids(object.connector_id, &object.dn_norm).await?;
        let anchor = object.anchor.to_lowercase();
        if anchor != object.dn_norm {
            ids.extend(self.cs_referrer_ids(object.connector_id, &anchor).await?);
        }
        let mut out = BTreeSet::new();
        for cs in ids {
            if let Some(link) = self.link_of_cs(cs).await? {
                out.insert(link.mv_id);
            }
        }
        Ok(out)
    }

    /// Removes a link; a metaverse object left without any source connector goes too.
    async fn disconnect(&mut self, link: &MvLink) -> Result<()> {
        self.remove_link(link).await?;
        self.counts.disconnected += 1;
        let remaining = self.links_of_mv(link.mv_id).await?;
        let sourced = remaining.iter().any(|l| self.connector(l.connector_id).is_some_and(|c| !c.target));
        if sourced {
            self.dirty.insert(link.mv_id);
            return Ok(());
        }
        // No source left: the metaverse object is deleted; its target links are deprovisioned.
        for l in &remaining {
            self.set_link_cs(l.cs_id, None);
        }
        let object_type =
            self.mv_object(link.mv_id).await?.map(|o| o.object_type.clone()).unwrap_or_default();
        // What referred to it must drop the reference.
        if let Some(cs) = self.cs_object(link.cs_id).await? {
            self.referrers_dirty(&cs).await?;
        }
        self.deleted_links.insert(link.mv_id, (object_type, remaining));
        self.links_mv.insert(link.mv_id, Vec::new());
        self.mv.insert(link.mv_id, None);
        self.dirty.remove(&link.mv_id);
        self.out.mv_writes.retain(|w| w.object.id != link.mv_id);
        self.out.mv_deletes.push(link.mv_id);
        self.counts.mv_deleted += 1;
        Ok(())
    }

    /// Maps DN references of a connector to metaverse references (`mv:<id>`); references to
    /// objects not linked to the metaverse are dropped.
    async fn resolve_references(&mut self, connector: ConnectorId, dns: &[String]) -> Result<Vec<String>> {
        let norms: Vec<String> = dns.iter().map(|d| dn_norm(d)).collect();
        let refs: Vec<&str> = norms.iter().map(String::as_str).collect();
        let ids = self.cs_ids_by_dn(connector, &refs).await?;
        self.load_links(&ids.values().copied().collect::<Vec<_>>()).await?;
        let mut out = Vec::new();
        for n in &norms {
            let Some(cs) = ids.get(n) else { continue };
            if let Some(link) = self.link_of_cs(*cs).await? {
                out.push(mv_ref(link.mv_id));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Recomputes an MV object's attributes from every linked object (precedence per attribute).
    async fn recompute(&mut self, mv: MvId) -> Result<()> {
        self.current_mv = Some(mv);
        let Some(current) = self.mv_object(mv).await? else { return Ok(()) };
        let object = &*current;
        let is_new = object.attributes.is_empty() && object.provenance.is_empty();
        let links = self.links_of_mv(mv).await?;
        let mut contributions: BTreeMap<String, (String, Vec<Contribution<'a>>)> = BTreeMap::new();
        for link in &links {
            let Some(cs) = self.cs_object(link.cs_id).await? else { continue };
            let Some(connector) = self.connector(link.connector_id) else { continue };
            if !cs.present {
                continue;
            }
            let member_of = self.member_of(&cs).await?;
            let view = CsView { object: &cs, member_of };
            let rules: Vec<&InboundRule> = self
                .rules
                .inbound_for(&connector.kind, &connector.name, &cs.object_class)
                .filter(|r| r.mv_object_type.eq_ignore_ascii_case(&object.object_type))
                .collect();
            for rule in rules {
                match rule.scope.matches(&view) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        self.error(Some(&cs), "scope-failed", format!("rule `{}`: {e}", rule.name));
                        continue;
                    }
                }
                for flow in &rule.flows {
                    let value = match flow.evaluate(&view) {
                        Ok(v) => v,
                        Err(e) => {
                            self.error(
                                Some(&cs),
                                "flow-failed",
                                format!("rule `{}`, flow `{}`: {e}", rule.name, flow.target),
                            );
                            continue;
                        }
                    };
                    contributions
                        .entry(flow.target.to_ascii_lowercase())
                        .or_insert_with(|| (flow.target.clone(), Vec::new()))
                        .1
                        .push(Contribution {
                            precedence: rule.precedence,
                            rule: &rule.name,
                            connector: &connector.name,
                            connector_id: connector.id,
                            source: Arc::clone(&cs),
                            apply_once: flow.apply_once,
                            value,
                        });
                }
            }
        }
        let mut attributes = Attributes::new();
        let mut provenance = BTreeMap::new();
        for (_, (name, mut list)) in contributions {
            list.sort_by(|a, b| a.precedence.cmp(&b.precedence).then_with(|| a.rule.cmp(b.rule)));
            for c in list {
                if c.apply_once && !is_new {
                    // Apply once: the value set when the object was created stays.
                    if let Some(existing) = object.attributes.get(&name) {
                        attributes.insert(name.as_str(), existing.clone());
                        if let Some(p) = object.provenance.get(&name) {
                            provenance.insert(name.clone(), p.clone());
                        }
                        break;
                    }
                    continue;
                }
                match c.value {
                    FlowValue::Values(values) => {
                        let values = match values {
                            AttrValues::Reference(dns) => {
                                AttrValues::Reference(self.resolve_references(c.connector_id, &dns).await?)
                            }
                            v => v,
                        };
                        if values.is_empty() {
                            continue;
                        }
                        attributes.insert(name.as_str(), values);
                        provenance.insert(
                            name.clone(),
                            AttrProvenance {
                                rule: c.rule.to_owned(),
                                connector: c.connector.to_owned(),
                                anchor: c.source.anchor.clone(),
                                precedence: c.precedence,
                            },
                        );
                        break;
                    }
                    FlowValue::AuthoritativeNull => break,
                    FlowValue::Null | FlowValue::Ignore => {}
                }
            }
        }
        attributes.normalize();
        // The sourceAnchor (ImmutableID) of an object is for life: a change is refused.
        if let Some(before) = object.attributes.get(SOURCE_ANCHOR)
            && attributes.get(SOURCE_ANCHOR) != Some(before)
        {
            let after = attributes.get(SOURCE_ANCHOR).map(|v| v.display_values().join(", "));
            let from = provenance.get(SOURCE_ANCHOR).map(|p| (p.connector.clone(), p.anchor.clone()));
            let message = format!(
                "metaverse object {mv} ({}): its sourceAnchor would change from {} to {}{}; the ImmutableID of a \
                 synchronized object never changes, so the old value is kept (an object moved between forests keeps \
                 its anchor in mS-DS-ConsistencyGuid)",
                display_of(object),
                before.display_values().join(", "),
                after.as_deref().unwrap_or("nothing"),
                from.as_ref().map(|(c, a)| format!(" (from {c}, anchor {a})")).unwrap_or_default()
            );
            self.error_at(from.map(|(_, a)| a), None, "anchor-changed", message);
            attributes.insert(SOURCE_ANCHOR, before.clone());
            match object.provenance.get(SOURCE_ANCHOR) {
                Some(p) => provenance.insert(SOURCE_ANCHOR.to_owned(), p.clone()),
                None => provenance.remove(SOURCE_ANCHOR),
            };
        }
        // Stored attributes are normalized already: the copy to normalize is made only when they
        // differ as stored.
        let same = object.attributes == attributes || {
            let mut old = object.attributes.clone();
            old.normalize();
            old == attributes
        };
        if same && object.provenance == provenance && !is_new {
            return Ok(());
        }
        let changed_at = if !same {
            self.counts.mv_updated += 1;
            self.clock.now_ms()
        } else {
            object.changed_at
        };
        let object = MvObject {
            id: object.id,
            object_type: object.object_type.clone(),
            attributes,
            provenance,
            created_at: object.created_at,
            changed_at,
        };
        let keys = join_keys(&object.attributes, &self.mv_keys);
        for k in &keys {
            self.new_keys.entry(k.clone()).or_default().push(mv);
        }
        self.out.mv_writes.retain(|w| w.object.id != mv);
        self.out.mv_writes.push(MvWrite { object: object.clone(), join_keys: keys });
        self.mv.insert(mv, Some(Arc::new(object)));
        Ok(())
    }

    /// The target attributes the outbound rules want for an MV object: `Some(values)` to set,
    /// `None` to clear. Apply-once flows count only for an add.
    fn desired(
        &mut self,
        target: &SyncConnector,
        rules: &[&OutboundRule],
        object: &MvObject,
        for_add: bool,
    ) -> BTreeMap<String, Option<AttrValues>> {
        let (out, failures) = desired_values(target, rules, object, for_add);
        for f in failures {
            self.error(None, "flow-failed", format!("metaverse object {}: {f}", object.id));
        }
        out
    }

    /// Drops references to MV objects that will not exist in the target (neither linked to an
    /// object there nor staged to be added): the target can never hold them, and an export that
    /// waits for them would be sent again forever.
    async fn drop_unreachable_references(
        &mut self,
        target: &SyncConnector,
        mv: MvId,
        desired: &mut BTreeMap<String, Option<AttrValues>>,
    ) -> Result<()> {
        let mut ids: Vec<MvId> = Vec::new();
        for v in desired.values().flatten() {
            if let AttrValues::Reference(refs) = v {
                ids.extend(refs.iter().filter_map(|r| parse_mv_ref(r)));
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        let mut reachable: BTreeSet<MvId> = self.target_linked(target.id, &ids).await?;
        reachable.extend(self.pending_adds(target.id, &ids).await?);
        // Withdrawn in this batch: not reachable any more, unless linked or staged again below.
        for (c, key) in &self.out.pending_deletes {
            if *c == target.id
                && let Some(m) = parse_mv_ref(key)
            {
                reachable.remove(&m);
            }
        }
        // What this batch links or stages (only the referenced objects matter; the staged adds
        // are looked through only while one of them is still unreachable).
        for m in &ids {
            if self.links_mv.get(m).is_some_and(|links| links.iter().any(|l| l.connector_id == target.id)) {
                reachable.insert(*m);
            }
        }
        if ids.iter().any(|m| !reachable.contains(m)) {
            for p in &self.out.pending_writes {
                if p.connector_id == target.id
                    && p.operation == ExportOperation::Add
                    && let Some(m) = p.mv_id
                {
                    reachable.insert(m);
                }
            }
        }
        // A reference to an object handled later in this pass may become reachable: this object
        // is compared again once the pass is done.
        if ids.iter().any(|m| !reachable.contains(m) && self.outbound_set.contains(m)) {
            self.redo.insert(mv);
        }
        // An object that is in the target's scope will be added there: the reference waits for
        // it (export defers it until the add is done). Only deleted or out-of-scope objects go.
        for m in ids.iter().filter(|m| !reachable.contains(m)).copied().collect::<Vec<_>>() {
            let Some(o) = self.mv_object(m).await? else { continue };
            let view = MvView { object: &o };
            let in_scope = self
                .rules
                .outbound_for(&target.kind, &target.name, &o.object_type)
                .any(|r| r.link_type == LinkType::Provision && r.scope.matches(&view).unwrap_or(false));
            if in_scope {
                reachable.insert(m);
            }
        }
        for v in desired.values_mut() {
            if let Some(AttrValues::Reference(refs)) = v {
                refs.retain(|r| parse_mv_ref(r).is_none_or(|m| reachable.contains(&m)));
                if refs.is_empty() {
                    *v = None;
                }
            }
        }
        Ok(())
    }

    /// A target object's current values with references mapped to metaverse references where
    /// the referenced object is linked (others stay as written).
    async fn target_current(&mut self, target: &SyncConnector, object: &SyncCsObject) -> Result<Attributes> {
        let mut out = Attributes::new();
        for (name, values) in object.attributes.iter() {
            let mapped = match values {
                AttrValues::Reference(refs) => {
                    let mut mapped = Vec::new();
                    let norms: Vec<String> = refs.iter().map(|d| dn_norm(d)).collect();
                    let by_dn = self
                        .cs_ids_by_dn(target.id, &norms.iter().map(String::as_str).collect::<Vec<_>>())
                        .await?;
                    let by_anchor = self
                        .cs_ids_by_anchor(target.id, &refs.iter().map(String::as_str).collect::<Vec<_>>())
                        .await?;
                    let all: Vec<CsId> = by_dn.values().chain(by_anchor.values()).copied().collect();
                    self.load_links(&all).await?;
                    for (raw, norm) in refs.iter().zip(&norms) {
                        let cs = by_dn.get(norm).or_else(|| by_anchor.get(raw)).copied();
                        let link = match cs {
                            Some(cs) => self.link_of_cs(cs).await?,
                            None => None,
                        };
                        mapped.push(link.map_or_else(|| raw.clone(), |l| mv_ref(l.mv_id)));
                    }
                    AttrValues::Reference(mapped)
                }
                v => v.clone(),
            };
            out.insert(name.as_str(), mapped);
        }
        Ok(out)
    }

    /// Who else holds (or claimed) one value of a unique attribute in a target: a target
    /// object not linked to `object`, another MV object's pending export, or another MV object
    /// earlier in this run. Each holder as a phrase for messages; empty when the value is free.
    async fn unique_holders(
        &mut self,
        target: &SyncConnector,
        object: &MvObject,
        own: Option<CsId>,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<String>> {
        let key = key_attribute(attribute, true);
        let mut holders = Vec::new();
        for cs in self.cs_join_candidates(target.id, &key, value).await? {
            if Some(cs) == own {
                continue;
            }
            // Held by the target object of this same MV object (joined in this batch).
            let holder = self.link_of_cs(cs).await?;
            if holder.as_ref().is_some_and(|l| l.mv_id == object.id) {
                continue;
            }
            if let Some(o) = self.cs_object(cs).await?.filter(|o| o.present) {
                holders.push(format!("held by {} in `{}`", o.dn, target.name));
            }
        }
        for (holder_key, holder_mv) in self.pending_unique_holders(target.id, &key, value).await? {
            let withdrawn = self.out.pending_deletes.iter().any(|(c, k)| *c == target.id && *k == holder_key);
            if let Some(m) = holder_mv.filter(|m| *m != object.id)
                && !withdrawn
            {
                holders.push(format!("already claimed by the pending export of metaverse object {m}"));
            }
        }
        let claim = (target.id, attribute, value.to_owned());
        if let Some(other) =
            self.claimed.get(&claim).or_else(|| self.held_claims.get(&claim)).filter(|o| **o != object.id)
        {
            holders.push(format!("already claimed by metaverse object {other} for `{}`", target.name));
        }
        holders.sort();
        holders.dedup();
        Ok(holders)
    }

    /// True (and an error recorded) when an add or update would give the target a unique value
    /// that another target object holds, or that another object claimed earlier in this run.
    async fn unique_conflict(
        &mut self,
        target: &SyncConnector,
        object: &MvObject,
        own: Option<CsId>,
        changes: &[AttributeChange],
    ) -> Result<bool> {
        let mut conflicts = Vec::new();
        let mut claims = Vec::new();
        for (attribute, v) in unique_values(changes) {
            let checked = (target.id, attribute, v);
            if self.checked_free.contains(&checked) {
                claims.push(checked);
                continue;
            }
            let (_, _, v) = checked;
            let holders = self.unique_holders(target, object, own, attribute, &v).await?;
            if holders.is_empty() {
                claims.push((target.id, attribute, v));
            } else {
                conflicts.extend(holders.into_iter().map(|h| format!("{attribute} {v} is {h}")));
            }
        }
        if conflicts.is_empty() {
            for c in claims {
                self.claimed.insert(c, object.id);
            }
            return Ok(false);
        }
        conflicts.sort();
        conflicts.dedup();
        self.error_at(
            object.attributes.get(SOURCE_ANCHOR).and_then(|v| v.display_values().into_iter().next()),
            Some(display_of(object)),
            "AttributeValueMustBeUnique",
            format!("{}: {}; not exported", display_of(object), conflicts.join("; ")),
        );
        Ok(true)
    }

    /// For a target that is a cloud tenant, what Microsoft's directory-sync service would do to
    /// the values before they reach the directory: a UPN in a domain the tenant has not verified
    /// is rewritten to the initial domain; a UPN another object holds is replaced by a
    /// placeholder (the same one run after run); a proxy address another object holds is left
    /// out. Each case is a warning in run history, naming the object, the value and the holder.
    async fn directory_sync_rewrites(
        &mut self,
        target: &SyncConnector,
        object: &MvObject,
        own: Option<&SyncCsObject>,
        desired: &mut BTreeMap<String, Option<AttrValues>>,
    ) -> Result<()> {
        let Some(tenant) = self.tenants.get(&target.id).cloned() else { return Ok(()) };
        let anchor = object.attributes.get(SOURCE_ANCHOR).and_then(|v| v.display_values().into_iter().next());
        let who = display_of(object);
        let own_id = own.map(|o| o.id);
        let find = |d: &BTreeMap<String, Option<AttrValues>>, name: &str| {
            d.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
        };
        if let Some(key) = find(desired, "userPrincipalName")
            && let Some(Some(AttrValues::String(values))) = desired.get(&key)
            && let [upn] = values.as_slice()
        {
            let upn = upn.clone();
            let mut value = upn.clone();
            // The UPN the target object holds now (none for an add).
            let own_upn = own
                .and_then(|o| o.attributes.get("userPrincipalName"))
                .and_then(|v| v.texts().and_then(|t| t.first().cloned()));
            // The rewrite is said once the value to send is known (a placeholder may replace it),
            // and only when that value is to be sent.
            let mut rewrite_note = None;
            if let Some(rewritten) = tenant.rewrite_upn(&upn) {
                let domain = upn.rsplit_once('@').map_or("(none)", |(_, d)| d);
                rewrite_note = Some(format!(
                    "{who}: userPrincipalName {upn}: domain {domain} is not a verified domain of tenant {} in \
                     `{}`; exported as {rewritten}",
                    tenant.initial, target.name
                ));
                value = rewritten;
            }
            let holders = self
                .unique_holders(target, object, own_id, "userPrincipalName", &value.to_lowercase())
                .await?;
            let mut free = holders.is_empty();
            if !holders.is_empty() {
                let current = own_upn.clone().filter(|c| tenant.is_placeholder_of(c, &value));
                let mut placeholder = None;
                if let Some(c) = current
                    && self
                        .unique_holders(target, object, own_id, "userPrincipalName", &c.to_lowercase())
                        .await?
                        .is_empty()
                {
                    placeholder = Some(c);
                }
                let seed = placeholder_seed(anchor.as_deref().unwrap_or(&who));
                for i in 0..10_000u32 {
                    if placeholder.is_some() {
                        break;
                    }
                    let candidate = tenant.placeholder(&value, seed.wrapping_add(i));
                    if self
                        .unique_holders(
                            target,
                            object,
                            own_id,
                            "userPrincipalName",
                            &candidate.to_lowercase(),
                        )
                        .await?
                        .is_empty()
                    {
                        placeholder = Some(candidate);
                    }
                }
                // All 10,000 placeholders taken: leave the value; the unique check reports it.
                if let Some(p) = placeholder {
                    self.warn_once(
                        object.id,
                        anchor.clone(),
                        Some(who.clone()),
                        "duplicate-attribute-set-aside",
                        format!(
                            "{who}: userPrincipalName {value} is {}; exported as {p} until the conflict is resolved",
                            holders.join("; ")
                        ),
                    );
                    value = p;
                    free = true;
                }
            }
            if free {
                self.checked_free.insert((target.id, "userPrincipalName", value.to_lowercase()));
            }
            // To be sent: an add, or a target object holding anything else (a change of case
            // included: the export compares values exactly).
            let held = own_upn.is_some_and(|c| c == value);
            if let Some(note) = rewrite_note
                && !held
            {
                self.warn_once(object.id, anchor.clone(), Some(who.clone()), "upn-rewritten", note);
            }
            desired.insert(key, Some(AttrValues::String(vec![value])));
        }
        if let Some(key) = find(desired, "proxyAddresses")
            && let Some(Some(AttrValues::String(values))) = desired.get(&key)
        {
            let values = values.clone();
            let mut kept = Vec::with_capacity(values.len());
            for v in values {
                let holders =
                    self.unique_holders(target, object, own_id, "proxyAddresses", &v.to_lowercase()).await?;
                if holders.is_empty() {
                    self.checked_free.insert((target.id, "proxyAddresses", v.to_lowercase()));
                    kept.push(v);
                } else {
                    self.warn_once(
                        object.id,
                        anchor.clone(),
                        Some(who.clone()),
                        "duplicate-attribute-set-aside",
                        format!(
                            "{who}: proxyAddresses {v} is {}; left out until the conflict is resolved",
                            holders.join("; ")
                        ),
                    );
                }
            }
            desired.insert(key, (!kept.is_empty()).then_some(AttrValues::String(kept)));
        }
        Ok(())
    }

    fn stage(&mut self, export: PendingExport, existing: Option<&PendingExport>) {
        if let Some(e) = existing
            && e.operation == export.operation
            && (e.changes == export.changes || (e.operation == ExportOperation::Add && sent(e)))
        {
            // Unchanged: keep its status and attempts. An add already exported waits for the
            // import that confirms it (sending it again would create the object twice); what
            // changed since is staged as an update then. Its new unique values stay claimed for
            // the run: the store's staged values are the add's.
            if e.changes != export.changes
                && let Some(mv) = export.mv_id
            {
                for (attribute, v) in unique_values(&export.changes) {
                    self.held_claims.insert((export.connector_id, attribute, v), mv);
                }
            }
            return;
        }
        if export.operation == ExportOperation::Add
            && existing.is_none()
            && let Some(mv) = export.mv_id
        {
            self.new_adds.push(mv);
        }
        let key = (export.connector_id, export.target_key());
        // Counted once per target object and operation in a run (references settling restage it).
        if self.staged.insert((key.0, key.1.clone(), export.operation.as_str())) {
            match export.operation {
                ExportOperation::Add => self.counts.export_adds += 1,
                ExportOperation::Update => self.counts.export_updates += 1,
                ExportOperation::Delete => self.counts.export_deletes += 1,
            }
        }
        let pairs: Vec<(String, String)> =
            unique_values(&export.changes).into_iter().map(|(a, v)| (key_attribute(a, true), v)).collect();
        if self.out_keys.contains(&key) {
            self.out.pending_unique.retain(|(c, k, _, _)| (*c, k.as_str()) != (key.0, key.1.as_str()));
            self.out.pending_writes.retain(|p| (p.connector_id, p.target_key()) != key);
        }
        self.out.pending_unique.push((key.0, key.1.clone(), export.mv_id, pairs));
        self.out.pending_deletes.retain(|k| *k != key);
        self.out.pending_writes.push(export);
        self.out_keys.insert(key);
    }

    fn withdraw(&mut self, connector: ConnectorId, key: String, existing: bool) {
        let staged = (connector, key);
        if self.out_keys.remove(&staged) {
            let (connector, key) = (staged.0, staged.1.as_str());
            self.out.pending_writes.retain(|p| !(p.connector_id == connector && p.target_key() == key));
            self.out.pending_unique.retain(|(c, k, _, _)| !(*c == connector && k == key));
        }
        let (connector, key) = staged;
        if existing {
            self.counts.exports_withdrawn += 1;
            self.out.pending_deletes.push((connector, key));
        }
    }

    /// Withdraws the pending add of an MV object that no longer needs one. An add already
    /// exported (its object created, not yet confirmed by an import) becomes a delete of the
    /// created object when deprovisioning (`delete`), else it stays until the import links the
    /// object: it is never sent twice nor forgotten.
    async fn unsend_add(
        &mut self,
        target: &SyncConnector,
        mv: MvId,
        key: &str,
        existing: Option<&PendingExport>,
        delete: bool,
    ) -> Result<()> {
        let Some(e) = existing else {
            self.withdraw(target.id, key.to_owned(), false);
            return Ok(());
        };
        if e.operation == ExportOperation::Delete {
            // Already turned into the delete of what it created: that stays until exported.
            return Ok(());
        }
        if !(e.operation == ExportOperation::Add && sent(e)) {
            self.withdraw(target.id, key.to_owned(), true);
            return Ok(());
        }
        if e.status == "exporting" {
            // Sent when the process ended, result unknown: the object may exist in the target.
            self.withdraw(target.id, key.to_owned(), true);
            self.error_at(
                None,
                Some(e.display.clone()),
                "export-uncertain",
                format!(
                    "the add of {} was being sent to `{}` when syncctl stopped and is no longer wanted: if the object \
                     was created there, delete it by hand",
                    e.display, target.name
                ),
            );
            return Ok(());
        }
        if !delete {
            // Disconnect: once the created object has come back in an import, the add is done
            // and nothing more is owed to it.
            if let Some(anchor) = &e.created_anchor
                && !self.cs_ids_by_anchor(target.id, &[anchor.as_str()]).await?.is_empty()
            {
                self.withdraw(target.id, key.to_owned(), true);
            }
            return Ok(());
        }
        if e.created_anchor.is_some() {
            let now = self.clock.now_ms();
            let export = PendingExport {
                id: 0,
                connector_id: target.id,
                mv_id: Some(mv),
                cs_id: None,
                operation: ExportOperation::Delete,
                object_type: e.object_type.clone(),
                display: e.display.clone(),
                changes: Vec::new(),
                rule: e.rule.clone(),
                status: "pending".into(),
                attempts: 0,
                last_error: None,
                created_anchor: e.created_anchor.clone(),
                created_at: now,
                updated_at: now,
            };
            // Staged like any export: it replaces the add and the add's claims on unique values.
            self.stage(export, None);
        }
        Ok(())
    }

    /// Outbound rules of one target for one MV object (or a deleted one).
    async fn outbound(&mut self, mv: MvId, target: &'a SyncConnector) -> Result<()> {
        self.current_mv = Some(mv);
        self.checked_free.clear();
        let object = self.mv_object(mv).await?;
        let (deleted_type, links) = match self.deleted_links.get(&mv) {
            Some((t, l)) => (Some(t.clone()), l.clone()),
            None => (None, self.links_of_mv(mv).await?),
        };
        let link = links.into_iter().find(|l| l.connector_id == target.id);
        let add_key = format!("mv:{mv}");
        let mut keys = vec![add_key.clone()];
        if let Some(l) = &link {
            keys.push(format!("cs:{}", l.cs_id));
        }
        let existing = self.pending_of(target.id, &keys).await?;
        let mut rules: Vec<&'a OutboundRule> = Vec::new();
        if let Some(o) = &object {
            let view = MvView { object: o };
            for rule in self.rules.outbound_for(&target.kind, &target.name, &o.object_type) {
                match rule.scope.matches(&view) {
                    Ok(true) => rules.push(rule),
                    Ok(false) => {}
                    Err(e) => {
                        self.error(
                            None,
                            "scope-failed",
                            format!("metaverse object {mv}, rule `{}`: {e}", rule.name),
                        );
                        return Ok(());
                    }
                }
            }
        }
        let Some(object) = object.filter(|_| !rules.is_empty()) else {
            // Out of scope or deleted: deprovision the target object, as Entra Connect does for
            // every object joined to the cloud (provisioned, or matched and stamped with this
            // object's anchor). What to do is the `deprovision` of the first outbound rule (by
            // precedence) for this object type; without a rule, disconnect. An object another
            // engine masters is disconnected and reported, never deleted.
            let object_type =
                self.mv.get(&mv).and_then(|o| o.as_ref().map(|o| o.object_type.clone())).or(deleted_type);
            let deprovision_delete = object_type
                .and_then(|t| {
                    self.rules
                        .outbound_for(&target.kind, &target.name, &t)
                        .find(|r| r.link_type == LinkType::Provision)
                })
                .is_some_and(|r| r.deprovision == syncctl_core::rules::Deprovision::Delete);
            self.unsend_add(target, mv, &add_key, existing.get(&add_key), deprovision_delete).await?;
            if let Some(l) = link {
                let cs_key = format!("cs:{}", l.cs_id);
                let cs = self.cs_object(l.cs_id).await?;
                let elsewhere = cs.as_deref().is_some_and(synchronized_elsewhere);
                if deprovision_delete && elsewhere {
                    self.warn_at(
                        None,
                        cs.as_ref().map(|c| c.dn.clone()),
                        "synchronized-by-another-engine",
                        format!(
                            "{} in `{}` is synchronized from on-premises by another engine (onPremisesSyncEnabled): \
                             its source is gone, it is disconnected, not deleted",
                            cs.as_ref().map_or("-", |c| c.dn.as_str()),
                            target.name
                        ),
                    );
                }
                let delete = deprovision_delete
                    && matches!(l.how, LinkHow::Provisioned | LinkHow::Joined)
                    && !elsewhere;
                if delete {
                    let export = PendingExport {
                        id: 0,
                        connector_id: target.id,
                        mv_id: Some(mv),
                        cs_id: Some(l.cs_id),
                        operation: ExportOperation::Delete,
                        object_type: cs.as_ref().map(|c| c.object_class.clone()).unwrap_or_default(),
                        display: cs.as_ref().map(|c| c.dn.clone()).unwrap_or_default(),
                        changes: Vec::new(),
                        rule: l.rule.clone(),
                        status: "pending".into(),
                        attempts: 0,
                        last_error: None,
                        created_anchor: None,
                        created_at: self.clock.now_ms(),
                        updated_at: self.clock.now_ms(),
                    };
                    self.stage(export, existing.get(&cs_key));
                } else {
                    self.withdraw(target.id, cs_key.clone(), existing.contains_key(&cs_key));
                }
                if self.links_cs.get(&l.cs_id).is_none_or(Option::is_some) {
                    self.remove_link(&l).await?;
                    self.counts.disconnected += 1;
                }
            }
            return Ok(());
        };
        let Some(first) = rules.first().copied() else { return Ok(()) };
        let mut link = link;
        if link.is_none() {
            // Join an object the target already holds.
            'rules: for rule in &rules {
                for (g, group) in rule.join.iter().enumerate() {
                    let sources = match group.source_values(&MvView { object: &object }) {
                        Ok(Some(s)) => s,
                        Ok(None) => continue,
                        Err(e) => {
                            self.error(
                                None,
                                "join-failed",
                                format!("metaverse object {mv}, rule `{}`: {e}", rule.name),
                            );
                            return Ok(());
                        }
                    };
                    let mut candidates: Option<BTreeSet<CsId>> = None;
                    for (attribute, values, ci) in &sources {
                        let key = key_attribute(attribute, *ci);
                        let mut found = BTreeSet::new();
                        for v in values {
                            found.extend(self.cs_join_candidates(target.id, &key, v).await?);
                        }
                        candidates = Some(match candidates {
                            None => found,
                            Some(c) => c.intersection(&found).copied().collect(),
                        });
                    }
                    let mut matches = Vec::new();
                    for cs in candidates.unwrap_or_default() {
                        let Some(c) = self.cs_object(cs).await? else { continue };
                        if !c.present || !c.object_class.eq_ignore_ascii_case(&rule.cs_object_type) {
                            continue;
                        }
                        if self.link_of_cs(cs).await?.is_some() {
                            continue;
                        }
                        let view = CsView { object: &c, member_of: Vec::new() };
                        match group.candidate_allowed(&view) {
                            Ok(true) => matches.push(c),
                            Ok(false) => {}
                            Err(e) => {
                                self.error(Some(&c), "join-failed", format!("rule `{}`: {e}", rule.name));
                            }
                        }
                    }
                    let shown = sources
                        .iter()
                        .map(|(a, v, _)| format!("{a} = {}", v.join(" | ")))
                        .collect::<Vec<_>>()
                        .join(", ");
                    match matches.as_slice() {
                        [one] => {
                            // An object this engine is deleting, back in scope: the delete is
                            // withdrawn and the object stays provisioned.
                            let one_key = format!("cs:{}", one.id);
                            let deleting = self
                                .pending_of(target.id, std::slice::from_ref(&one_key))
                                .await?
                                .get(&one_key)
                                .is_some_and(|p| p.operation == ExportOperation::Delete);
                            if deleting {
                                self.withdraw(target.id, one_key, true);
                            }
                            let exported_add = deleting
                                || existing
                                    .get(&add_key)
                                    .is_some_and(|p| p.operation == ExportOperation::Add && sent(p));
                            let new_link = MvLink {
                                cs_id: one.id,
                                mv_id: mv,
                                connector_id: target.id,
                                rule: rule.name.clone(),
                                how: if exported_add { LinkHow::Provisioned } else { LinkHow::Joined },
                                detail: format!("join group {} of `{}`: {shown}", g + 1, rule.name),
                                linked_at: self.clock.now_ms(),
                            };
                            self.add_link(new_link.clone()).await?;
                            self.counts.joined += 1;
                            let referrers = self.referrers(one).await?;
                            self.redo.extend(referrers.into_iter().filter(|r| *r != mv));
                            self.withdraw(target.id, add_key.clone(), existing.contains_key(&add_key));
                            link = Some(new_link);
                            break 'rules;
                        }
                        [] => {}
                        many => {
                            self.error(
                                None,
                                "ambiguous-join",
                                format!(
                                    "metaverse object {mv} ({}): join group {} of `{}` ({shown}) matches {} objects in `{}`: {}",
                                    display_of(&object),
                                    g + 1,
                                    rule.name,
                                    many.len(),
                                    target.name,
                                    many.iter().map(|c| c.dn.as_str()).collect::<Vec<_>>().join("; ")
                                ),
                            );
                            return Ok(());
                        }
                    }
                }
            }
        }
        match link {
            None => {
                if first.link_type != LinkType::Provision || !target.writes_type(&first.cs_object_type) {
                    self.unsend_add(target, mv, &add_key, existing.get(&add_key), false).await?;
                    return Ok(());
                }
                let mut desired = self.desired(target, &rules, &object, true);
                self.drop_unreachable_references(target, mv, &mut desired).await?;
                self.directory_sync_rewrites(target, &object, None, &mut desired).await?;
                let changes: Vec<AttributeChange> = desired
                    .into_iter()
                    .filter_map(|(attribute, v)| {
                        v.map(|new| AttributeChange { attribute, old: None, new: Some(new) })
                    })
                    .collect();
                if self.unique_conflict(target, &object, None, &changes).await? {
                    return Ok(());
                }
                let now = self.clock.now_ms();
                let export = PendingExport {
                    id: 0,
                    connector_id: target.id,
                    mv_id: Some(mv),
                    cs_id: None,
                    operation: ExportOperation::Add,
                    object_type: first.cs_object_type.clone(),
                    display: display_of(&object),
                    changes,
                    rule: first.name.clone(),
                    status: "pending".into(),
                    attempts: 0,
                    last_error: None,
                    created_anchor: None,
                    created_at: now,
                    updated_at: now,
                };
                self.stage(export, existing.get(&add_key));
            }
            Some(l) => {
                let cs_key = format!("cs:{}", l.cs_id);
                let Some(cs) = self.cs_object(l.cs_id).await? else { return Ok(()) };
                if synchronized_elsewhere(&cs) {
                    // Mastered by another sync engine (Entra Connect still running for this
                    // tenant): the directory refuses changes to it. Reported, not fought.
                    self.withdraw(target.id, cs_key.clone(), existing.contains_key(&cs_key));
                    self.withdraw(target.id, add_key.clone(), existing.contains_key(&add_key));
                    let who = display_of(&object);
                    self.warn_at(
                        object
                            .attributes
                            .get(SOURCE_ANCHOR)
                            .and_then(|v| v.display_values().into_iter().next()),
                        Some(cs.dn.clone()),
                        "synchronized-by-another-engine",
                        format!(
                            "{who}: {} in `{}` is synchronized from on-premises by another engine \
                             (onPremisesSyncEnabled): joined, left unchanged; once directory \
                             synchronization is turned off for the tenant, syncctl manages it",
                            cs.dn, target.name
                        ),
                    );
                    return Ok(());
                }
                let mut desired = self.desired(target, &rules, &object, false);
                self.drop_unreachable_references(target, mv, &mut desired).await?;
                self.directory_sync_rewrites(target, &object, Some(&cs), &mut desired).await?;
                let current = self.target_current(target, &cs).await?;
                let mut changes = Vec::new();
                for (attribute, want) in desired {
                    let have = current.get(&attribute);
                    let differs = match &want {
                        Some(v) => !same_values(Some(v), have),
                        None => have.is_some_and(|h| !h.is_empty()),
                    };
                    if differs {
                        changes.push(AttributeChange {
                            old: cs.attributes.get(&attribute).cloned(),
                            attribute,
                            new: want,
                        });
                    }
                }
                if changes.is_empty() {
                    self.withdraw(target.id, cs_key.clone(), existing.contains_key(&cs_key));
                } else if self.unique_conflict(target, &object, Some(l.cs_id), &changes).await? {
                    return Ok(());
                } else {
                    let now = self.clock.now_ms();
                    let export = PendingExport {
                        id: 0,
                        connector_id: target.id,
                        mv_id: Some(mv),
                        cs_id: Some(l.cs_id),
                        operation: ExportOperation::Update,
                        object_type: cs.object_class.clone(),
                        display: cs.dn.clone(),
                        changes,
                        rule: l.rule.clone(),
                        status: "pending".into(),
                        attempts: 0,
                        last_error: None,
                        created_anchor: None,
                        created_at: now,
                        updated_at: now,
                    };
                    self.stage(export, existing.get(&cs_key));
                }
                self.withdraw(target.id, add_key.clone(), existing.contains_key(&add_key));
            }
        }
        Ok(())
    }
}

/// The target attributes the outbound rules want for an MV object (see `SyncRun::desired`), and
/// the flows that failed.
fn desired_values(
    target: &SyncConnector,
    rules: &[&OutboundRule],
    object: &MvObject,
    for_add: bool,
) -> (BTreeMap<String, Option<AttrValues>>, Vec<String>) {
    let view = MvView { object };
    let mut per: BTreeMap<String, (String, Vec<(u32, FlowValue)>)> = BTreeMap::new();
    let mut failures = Vec::new();
    for rule in rules {
        for flow in &rule.flows {
            if (flow.apply_once && !for_add) || !target.writes(&rule.cs_object_type, &flow.target) {
                continue;
            }
            match flow.evaluate(&view) {
                Ok(v) => per
                    .entry(flow.target.to_ascii_lowercase())
                    .or_insert_with(|| (flow.target.clone(), Vec::new()))
                    .1
                    .push((rule.precedence, v)),
                Err(e) => failures.push(format!("rule `{}`, flow `{}`: {e}", rule.name, flow.target)),
            }
        }
    }
    let mut out = BTreeMap::new();
    for (_, (name, mut list)) in per {
        list.sort_by_key(|(p, _)| *p);
        let mut decided: Option<Option<AttrValues>> = None;
        let mut opinion = false;
        for (_, v) in list {
            match v {
                FlowValue::Values(values) if !values.is_empty() => {
                    decided = Some(Some(values));
                    break;
                }
                FlowValue::Values(_) | FlowValue::Null => opinion = true,
                FlowValue::AuthoritativeNull => {
                    decided = Some(None);
                    break;
                }
                FlowValue::Ignore => {}
            }
        }
        match decided {
            Some(d) => {
                out.insert(name, d);
            }
            None if opinion => {
                out.insert(name, None);
            }
            None => {}
        }
    }
    (out, failures)
}

/// The unique values (userPrincipalName, onPremisesImmutableId, proxy addresses) an export's
/// changes would give its target: (attribute, lower-case value).
fn unique_values(changes: &[AttributeChange]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for c in changes {
        if let (Some(attribute), Some(values)) =
            (UNIQUE_ATTRIBUTES.iter().find(|a| a.eq_ignore_ascii_case(&c.attribute)), &c.new)
        {
            out.extend(key_texts(values, true).into_iter().map(|v| (*attribute, v)));
        }
    }
    out
}

/// True for a target object that another sync engine masters (`onPremisesSyncEnabled`).
fn synchronized_elsewhere(cs: &SyncCsObject) -> bool {
    match cs.attributes.get("onPremisesSyncEnabled") {
        Some(AttrValues::Boolean(v)) => v.first().copied().unwrap_or(false),
        Some(AttrValues::String(v)) => v.first().is_some_and(|s| s.eq_ignore_ascii_case("true")),
        _ => false,
    }
}

/// True for a pending export already sent (exported, or being sent when the process ended).
fn sent(p: &PendingExport) -> bool {
    p.status == "exported" || p.status == "exporting"
}

/// The sourceAnchor: the ImmutableID the metaverse keeps for an object's life.
const SOURCE_ANCHOR: &str = "sourceAnchor";

/// Target attributes whose values are unique across a target directory (Entra ID refuses a
/// second holder: AttributeValueMustBeUnique). Compared case-insensitively.
const UNIQUE_ATTRIBUTES: [&str; 3] = ["userPrincipalName", "onPremisesImmutableId", "proxyAddresses"];

/// Whether a rule's connector selector takes this connector.
fn applies(selector: &syncctl_core::rules::ConnectorSelector, c: &SyncConnector) -> bool {
    selector.matches(&c.kind, &c.name)
}

/// A DN as the connector space keys references: normalized, or lower-cased when it is not a
/// DN (targets that refer by id).
fn dn_norm(d: &str) -> String {
    syncctl_core::Dn::parse(d).map(|p| p.normalized().to_owned()).unwrap_or_else(|_| d.to_lowercase())
}

/// What a person recognizes an MV object by.
fn display_of(object: &MvObject) -> String {
    for name in ["userPrincipalName", "mail", "displayName", "sourceAnchor"] {
        if let Some(v) = object.attributes.get(name).and_then(|v| v.display_values().into_iter().next()) {
            return v;
        }
    }
    format!("metaverse object {}", object.id)
}
