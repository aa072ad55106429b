//! From metaverse changes to requests: set membership recomputed for the objects a sync batch
//! changes (inside that batch's transaction, through [`WorkflowHook`]), each transition turned
//! into a request by the policies that watch it, and each request's notifications rendered
//! into the outbox.
//!
//! Also the two passes outside sync batches: [`prepare_sets`] (a new or changed set starts
//! from what is true now, without requests) and [`evaluate_time_based`] (sets whose criteria
//! read the time are evaluated again over every object).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use syncctl_core::AttrValues;
use syncctl_engine::BatchHook;
use syncctl_store::{
    MvId, MvObject, NewMessage, NewRequest, RunId, Store, SyncBatch, Transition, WorkflowWrites,
};
use tracing::{debug, info, warn};

use crate::config::{Recipient, Set, Workflows};
use crate::error::Result;
use crate::render::{self, RenderInput};
use crate::sets::is_member;

/// The sync batch hook: recomputes set membership of the batch's changed and deleted
/// metaverse objects and adds the transitions, requests and rendered mail to the batch.
#[derive(Debug, Clone)]
pub struct WorkflowHook {
    workflows: Arc<Workflows>,
}

impl WorkflowHook {
    /// A hook for these workflows. Call [`prepare_sets`] before the first sync that uses it.
    pub fn new(workflows: Arc<Workflows>) -> Self {
        Self { workflows }
    }
}

#[async_trait::async_trait]
impl BatchHook for WorkflowHook {
    async fn before_write(
        &self,
        store: &Store,
        batch: &mut SyncBatch,
        run: RunId,
        now: i64,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.workflows.sets.is_empty() {
            return Ok(());
        }
        let written: Vec<MvObject> = batch.mv_writes.iter().map(|w| w.object.clone()).collect();
        let sets: Vec<&Set> = self.workflows.sets.iter().collect();
        let w =
            transitions(store, &self.workflows, &sets, &written, &batch.mv_deletes, Some(run), now).await?;
        if !w.requests.is_empty() || !w.entered.is_empty() || !w.left.is_empty() {
            debug!(
                run,
                entered = w.entered.len(),
                left = w.left.len(),
                requests = w.requests.len(),
                "set transitions of the batch"
            );
        }
        let out = &mut batch.workflow;
        out.entered.extend(w.entered);
        out.left.extend(w.left);
        out.requests.extend(w.requests);
        Ok(())
    }
}

/// Reads metaverse objects once per pass.
struct Objects<'a> {
    store: &'a Store,
    /// Objects as this batch writes them (they win over the store).
    overlay: HashMap<MvId, MvObject>,
    cache: HashMap<MvId, Option<MvObject>>,
}

impl Objects<'_> {
    async fn get(&mut self, id: MvId) -> Result<Option<MvObject>> {
        if let Some(o) = self.overlay.get(&id) {
            return Ok(Some(o.clone()));
        }
        if let Some(o) = self.cache.get(&id) {
            return Ok(o.clone());
        }
        let found = self.store.mv_by_ids(&[id]).await?.remove(&id);
        self.cache.insert(id, found.clone());
        Ok(found)
    }
}

/// The members of a set once this pass's transitions apply.
async fn members_after(store: &Store, set: &str, w: &WorkflowWrites) -> Result<Vec<MvId>> {
    let mut members: BTreeSet<MvId> = store.set_members(set).await?.into_iter().collect();
    for (s, id) in &w.left {
        if s == set {
            members.remove(id);
        }
    }
    for (s, id) in &w.entered {
        if s == set {
            members.insert(*id);
        }
    }
    Ok(members.into_iter().collect())
}

/// Membership changes of `sets` for `written` objects (as they will be) and `deleted` ones,
/// with the requests the policies make of them.
pub(crate) async fn transitions(
    store: &Store,
    workflows: &Workflows,
    sets: &[&Set],
    written: &[MvObject],
    deleted: &[MvId],
    run: Option<RunId>,
    now: i64,
) -> Result<WorkflowWrites> {
    let mut out = WorkflowWrites::default();
    let ids: Vec<MvId> = written.iter().map(|o| o.id).chain(deleted.iter().copied()).collect();
    if ids.is_empty() || sets.is_empty() {
        return Ok(out);
    }
    let mut current: BTreeMap<MvId, BTreeSet<String>> = BTreeMap::new();
    for (id, set) in store.memberships_of(&ids).await? {
        current.entry(id).or_default().insert(set);
    }
    let mut objects = Objects {
        store,
        overlay: written.iter().map(|o| (o.id, o.clone())).collect(),
        cache: HashMap::new(),
    };
    // (object, set, transition), in a stable order: written objects by id, then deleted ones.
    let mut moves: Vec<(MvObject, &Set, Transition)> = Vec::new();
    let mut sorted: Vec<&MvObject> = written.iter().collect();
    sorted.sort_by_key(|o| o.id);
    for o in sorted {
        let was_in = current.get(&o.id);
        for set in sets {
            let was = was_in.is_some_and(|s| s.contains(&set.name));
            let is = match is_member(set, o, now) {
                Ok(b) => b,
                Err(e) => {
                    warn!(set = %set.name, object = o.id, error = %e, "set criteria failed: membership left as it was");
                    was
                }
            };
            match (was, is) {
                (false, true) => {
                    out.entered.push((set.name.clone(), o.id));
                    moves.push((o.clone(), set, Transition::In));
                }
                (true, false) => {
                    out.left.push((set.name.clone(), o.id));
                    moves.push((o.clone(), set, Transition::Out));
                }
                _ => {}
            }
        }
    }
    let mut gone: Vec<MvId> = deleted.to_vec();
    gone.sort_unstable();
    gone.dedup();
    for id in gone {
        let Some(in_sets) = current.get(&id) else { continue };
        // The object as it was: the batch deleting it is not written yet.
        let old = objects.get(id).await?.unwrap_or_else(|| MvObject {
            id,
            object_type: String::new(),
            attributes: Default::default(),
            provenance: Default::default(),
            created_at: 0,
            changed_at: 0,
        });
        for set in sets.iter().filter(|s| in_sets.contains(&s.name)) {
            out.left.push((set.name.clone(), id));
            moves.push((old.clone(), set, Transition::Out));
        }
    }
    if moves.is_empty() {
        return Ok(out);
    }
    let env = render::environment();
    let mut members: HashMap<String, Vec<MvId>> = HashMap::new();
    for (target, set, transition) in &moves {
        for policy in workflows.policies.iter().filter(|p| p.set == set.name && p.transition == *transition) {
            let Some(workflow) = workflows.workflow(&policy.workflow) else { continue };
            let mut errors: Vec<String> = Vec::new();
            let mut messages: Vec<NewMessage> = Vec::new();
            // The target's manager, when a recipient or a template may need it.
            let manager_ref = match target.attributes.get("manager") {
                Some(AttrValues::Reference(v)) => {
                    v.first().and_then(|r| r.strip_prefix("mv:")?.parse::<MvId>().ok())
                }
                _ => None,
            };
            let manager = match manager_ref {
                Some(id) => objects.get(id).await?,
                None => None,
            };
            let input = RenderInput {
                target,
                manager: manager.as_ref(),
                set,
                transition: *transition,
                policy: &policy.name,
                workflow: &workflow.name,
                now_ms: now,
            };
            let who = render::display_of(target);
            for (index, activity) in workflow.activities.iter().enumerate() {
                let mut sent_to: BTreeSet<String> = BTreeSet::new();
                for recipient in &activity.recipients {
                    let role = recipient.role();
                    let addresses: Vec<String> = match recipient {
                        Recipient::Target => match render::address_of(target) {
                            Some(a) => vec![a],
                            None => {
                                errors.push(format!("{who} has no mail address"));
                                vec![]
                            }
                        },
                        Recipient::Manager => match &manager {
                            Some(m) => match render::address_of(m) {
                                Some(a) => vec![a],
                                None => {
                                    errors.push(format!(
                                        "the manager of {who} ({}) has no mail address",
                                        render::display_of(m)
                                    ));
                                    vec![]
                                }
                            },
                            None => {
                                errors.push(format!("{who} has no manager in the metaverse"));
                                vec![]
                            }
                        },
                        Recipient::SetMembers(name) => {
                            if !members.contains_key(name) {
                                let list = members_after(store, name, &out).await?;
                                members.insert(name.clone(), list);
                            }
                            let mut list = Vec::new();
                            let mut without = 0;
                            for id in members.get(name).cloned().unwrap_or_default() {
                                match objects.get(id).await?.as_ref().and_then(render::address_of) {
                                    Some(a) => list.push(a),
                                    None => without += 1,
                                }
                            }
                            if without > 0 {
                                errors.push(format!(
                                    "{without} member(s) of set `{name}` have no mail address"
                                ));
                            }
                            list
                        }
                        Recipient::Address(a) => vec![a.clone()],
                    };
                    for address in addresses {
                        if !sent_to.insert(address.to_lowercase()) {
                            continue;
                        }
                        match render::render(&env, activity, &input, &address, &role) {
                            Ok(r) => messages.push(NewMessage {
                                activity: activity.name.clone(),
                                recipient_role: role.clone(),
                                sender: workflows.sender.clone(),
                                recipient: address.clone(),
                                message_id: render::message_id(
                                    &workflows.sender,
                                    &[
                                        &run.unwrap_or(0).to_string(),
                                        &now.to_string(),
                                        &target.id.to_string(),
                                        &set.name,
                                        transition.as_str(),
                                        &policy.name,
                                        &index.to_string(),
                                        &address.to_lowercase(),
                                    ],
                                ),
                                subject: r.subject,
                                text_body: r.text,
                                html_body: r.html,
                            }),
                            Err(e) => {
                                if !errors.contains(&e) {
                                    errors.push(e);
                                }
                            }
                        }
                    }
                }
            }
            if !errors.is_empty() {
                warn!(policy = %policy.name, object = target.id, errors = %errors.join("; "), "a workflow could not do everything");
            }
            out.requests.push(NewRequest {
                mv_id: target.id,
                object: who,
                set_name: set.name.clone(),
                transition: *transition,
                policy: policy.name.clone(),
                workflow: workflow.name.clone(),
                error: if errors.is_empty() { None } else { Some(errors.join("; ")) },
                messages,
            });
        }
    }
    Ok(out)
}

/// Brings the stored sets in line with the configuration before a sync: a set that is new or
/// whose criteria changed is evaluated over every metaverse object and its membership stored
/// without any request (what is true when a set is defined is its starting point, not a
/// transition); a set no longer configured is forgotten; memberships of objects deleted
/// meanwhile are dropped. Returns notes for the operator.
pub async fn prepare_sets(store: &Store, workflows: &Workflows, now: i64) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let stored: BTreeMap<String, String> = store.set_definitions().await?.into_iter().collect();
    for (name, _) in stored.iter().filter(|(n, _)| workflows.set(n).is_none()) {
        store.drop_set(name).await?;
        notes.push(format!("set `{name}` is no longer configured: its membership was dropped"));
    }
    let pruned = store.prune_set_members().await?;
    if pruned > 0 {
        notes.push(format!("{pruned} memberships of deleted metaverse objects dropped"));
    }
    for set in &workflows.sets {
        let fingerprint = set.fingerprint();
        if stored.get(&set.name) == Some(&fingerprint) {
            continue;
        }
        let mut members = Vec::new();
        let mut failed = 0usize;
        let mut after = 0;
        loop {
            let ids = store.mv_ids_after(after, 1000).await?;
            let Some(last) = ids.last().copied() else { break };
            let objects = store.mv_by_ids(&ids).await?;
            for id in &ids {
                let Some(o) = objects.get(id) else { continue };
                match is_member(set, o, now) {
                    Ok(true) => members.push(*id),
                    Ok(false) => {}
                    Err(_) => failed += 1,
                }
            }
            after = last;
        }
        store.replace_set(&set.name, &fingerprint, &members, now).await?;
        let what = if stored.contains_key(&set.name) { "changed criteria" } else { "new" };
        let mut note =
            format!("set `{}` ({what}): {} members, evaluated without requests", set.name, members.len());
        if failed > 0 {
            note.push_str(&format!("; its criteria failed on {failed} objects (not members)"));
        }
        info!(set = %set.name, members = members.len(), failed, "set evaluated in full");
        notes.push(note);
    }
    Ok(notes)
}

/// What [`evaluate_time_based`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Objects evaluated.
    pub objects: usize,
    /// Transitions found.
    pub transitions: usize,
    /// Requests made.
    pub requests: usize,
}

/// Evaluates the sets whose criteria read the time over every metaverse object at `now`
/// (membership can change without any metaverse change: an account comes within 14 days of
/// expiring); transitions and their requests are written in one transaction per chunk.
pub async fn evaluate_time_based(store: &Store, workflows: &Workflows, now: i64) -> Result<Evaluation> {
    let sets: Vec<&Set> = workflows.sets.iter().filter(|s| s.time_based).collect();
    let mut report = Evaluation::default();
    if sets.is_empty() {
        return Ok(report);
    }
    let mut after = 0;
    loop {
        let ids = store.mv_ids_after(after, 500).await?;
        let Some(last) = ids.last().copied() else { break };
        let mut objects: Vec<MvObject> = store.mv_by_ids(&ids).await?.into_values().collect();
        objects.sort_by_key(|o| o.id);
        report.objects += objects.len();
        let w = transitions(store, workflows, &sets, &objects, &[], None, now).await?;
        report.transitions += w.entered.len() + w.left.len();
        report.requests += w.requests.len();
        if !w.is_empty() {
            store.write_workflow(&w, None, now).await?;
        }
        after = last;
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
