//! The population checks: duplicates across every source and the tenant, the anchor audit
//! (matching against the tenant), and the fixes, each checked against every value in use.
//!
//! Two objects with the same ImmutableID are one identity read twice (two exports of one forest,
//! a forest and its LDIF): they never count as each other's duplicate, and a fix never removes a
//! value from one because the other holds it. UPNs and SMTP addresses (mail, smtp proxy
//! addresses) are one namespace of unique values, as in the cloud.

use std::collections::{HashMap, HashSet};

use super::{Assessor, Obj};
use crate::address;
use crate::catalogue::{self as cat, Rule};
use crate::report::{Action, AnchorOutcome, Finding, MatchOutcome, Remediation};
use crate::rules::{self, Proposal};
use crate::tenant::{CloudKind, CloudObject, TenantSnapshot};

/// Which attribute holds an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// userPrincipalName.
    Upn,
    /// mail.
    Mail,
    /// An smtp proxy address.
    Proxy,
}

impl Held {
    fn attribute(self) -> &'static str {
        match self {
            Self::Upn => "userPrincipalName",
            Self::Mail => "mail",
            Self::Proxy => "proxyAddresses",
        }
    }
    /// The same-attribute duplicate rule.
    fn duplicate_rule(self) -> &'static Rule {
        match self {
            Self::Upn => &cat::UPN_DUPLICATE,
            Self::Mail => &cat::MAIL_DUPLICATE,
            Self::Proxy => &cat::PROXY_DUPLICATE,
        }
    }
}

/// One holding of a value: the object, the attribute, the value as written.
#[derive(Clone, Debug)]
pub(super) struct Holding {
    obj: usize,
    held: Held,
    value: String,
}

/// Every value in use, lower-cased, and who holds it.
#[derive(Default)]
pub(super) struct Indexes {
    /// The identity of each object: the first object with its ImmutableID (itself if none).
    pub identity: Vec<usize>,
    /// UPNs and SMTP addresses (mail, smtp proxy addresses), by address.
    smtp: HashMap<String, Vec<Holding>>,
    /// Other proxy addresses (x500, sip...), by the whole value.
    other_proxies: HashMap<String, Vec<Holding>>,
    /// mailNickname.
    nick: HashMap<String, Vec<usize>>,
    /// sAMAccountName of every object, and of objects without a UPN (IdFix compares only those).
    sam: HashMap<String, Vec<usize>>,
    /// The tenant's UPNs and SMTP addresses: cloud object index and attribute.
    cloud_smtp: HashMap<String, Vec<(usize, Held)>>,
    /// The tenant's other proxy addresses.
    cloud_other: HashMap<String, Vec<usize>>,
}

fn push_unique<T>(v: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) {
    if !v.last().is_some_and(|last| same(last, &item)) {
        v.push(item);
    }
}

/// The address of an smtp proxy value (`smtp:a@b` -> `a@b`), if it is one.
fn smtp_address(proxy: &str) -> Option<&str> {
    proxy.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("smtp")).map(|(_, a)| a)
}

impl Indexes {
    pub(super) fn build(objects: &[Obj], tenant: Option<&TenantSnapshot>) -> Self {
        let mut ix = Self::default();
        let mut first_with_id: HashMap<syncctl_core::ImmutableId, usize> = HashMap::new();
        for (i, o) in objects.iter().enumerate() {
            let id = o.immutable_id.map_or(i, |id| *first_with_id.entry(id).or_insert(i));
            ix.identity.push(id);
            let mut add = |value: &str, held: Held| {
                let holders = ix.smtp.entry(value.to_lowercase()).or_default();
                push_unique(holders, Holding { obj: i, held, value: value.to_owned() }, |a, b| {
                    a.obj == b.obj && a.held == b.held
                });
            };
            if let Some(u) = &o.upn {
                add(u, Held::Upn);
            }
            if let Some(m) = &o.mail {
                add(m, Held::Mail);
            }
            for p in &o.proxies {
                match smtp_address(p) {
                    Some(a) => {
                        let holders = ix.smtp.entry(a.to_lowercase()).or_default();
                        push_unique(
                            holders,
                            Holding { obj: i, held: Held::Proxy, value: p.clone() },
                            |a, b| a.obj == b.obj && a.held == b.held,
                        );
                    }
                    None => {
                        let holders = ix.other_proxies.entry(p.to_lowercase()).or_default();
                        push_unique(
                            holders,
                            Holding { obj: i, held: Held::Proxy, value: p.clone() },
                            |a, b| a.obj == b.obj,
                        );
                    }
                }
            }
            if let Some(n) = &o.mail_nickname {
                push_unique(ix.nick.entry(n.to_lowercase()).or_default(), i, |a, b| a == b);
            }
            if let Some(s) = &o.sam {
                push_unique(ix.sam.entry(s.to_lowercase()).or_default(), i, |a, b| a == b);
            }
        }
        if let Some(t) = tenant {
            for (c, obj) in t.objects.iter().enumerate() {
                let mut add = |value: &str, held: Held| {
                    let holders = ix.cloud_smtp.entry(value.to_lowercase()).or_default();
                    push_unique(holders, (c, held), |a, b| a == b);
                };
                if let Some(u) = &obj.upn {
                    add(u, Held::Upn);
                }
                if let Some(m) = &obj.mail {
                    add(m, Held::Mail);
                }
                for p in &obj.proxy_addresses {
                    match smtp_address(p) {
                        Some(a) => add(a, Held::Proxy),
                        None => {
                            push_unique(ix.cloud_other.entry(p.to_lowercase()).or_default(), c, |a, b| a == b)
                        }
                    }
                }
            }
        }
        ix
    }

    fn identity_of(&self, obj: usize) -> usize {
        self.identity.get(obj).copied().unwrap_or(obj)
    }

    /// Number of distinct identities among `objs`.
    fn identities(&self, objs: impl Iterator<Item = usize>) -> usize {
        let mut ids: Vec<usize> = objs.map(|o| self.identity_of(o)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

impl Assessor {
    /// "X (source); Y (source); and N more" for the identities other than `me`'s, given the
    /// group's representatives (one holder of each of its first identities, from
    /// [`representatives`]) and how many identities the group has. The representatives are
    /// found once per group, so a value held by a hundred thousand objects (even reads of one
    /// identity) stays linear; an identity read from several sources is named once.
    fn others(&self, ix: &Indexes, me: usize, reps: &[usize], identities: usize) -> String {
        let mine = ix.identity_of(me);
        let mut names = Vec::new();
        for h in reps.iter().copied().filter(|h| ix.identity_of(*h) != mine).take(3) {
            if let Some(o) = self.objects.get(h) {
                names.push(format!("{} ({})", o.dn, self.source_name(o.source)));
            }
        }
        let more = identities.saturating_sub(1).saturating_sub(names.len());
        if more > 0 {
            names.push(format!("and {more} more"));
        }
        names.join("; ")
    }

    /// Duplicates among the sources, case-insensitive: per attribute (UPN, mail, smtp and other
    /// proxy addresses, mailNickname, sAMAccountName of objects without a UPN), and across the
    /// UPN / SMTP namespace (`address-conflict`). Proxy-address duplicates get a removal on every
    /// holder but one, never of a holder's primary address or of one it cannot do without.
    pub(super) fn duplicates(
        &self,
        ix: &Indexes,
        extra: &mut Vec<Finding>,
        removals: &mut Vec<(usize, String, &'static Rule)>,
    ) {
        let mut groups: Vec<(&String, &Vec<Holding>)> = ix.smtp.iter().filter(|(_, h)| h.len() > 1).collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (_, holders) in groups {
            if ix.identities(holders.iter().map(|h| h.obj)) < 2 {
                continue;
            }
            // Identities that share this address in the same attribute with another identity:
            // that duplicate is their finding; an address conflict would say it again.
            let mut in_duplicate: HashSet<usize> = HashSet::new();
            for held in [Held::Upn, Held::Mail, Held::Proxy] {
                let same = holders.iter().filter(|h| h.held == held);
                if ix.identities(same.clone().map(|h| h.obj)) > 1 {
                    in_duplicate.extend(same.map(|h| ix.identity_of(h.obj)));
                }
            }
            for held in [Held::Upn, Held::Mail, Held::Proxy] {
                let same: Vec<&Holding> = holders.iter().filter(|h| h.held == held).collect();
                let several = ix.identities(same.iter().map(|h| h.obj)) > 1;
                let same_objs: Vec<usize> = same.iter().map(|h| h.obj).collect();
                let identities = if several { ix.identities(same_objs.iter().copied()) } else { 0 };
                let reps = if several { representatives(ix, &same_objs) } else { Vec::new() };
                let mut conflict: Option<(Vec<String>, String)> = None;
                for h in holders.iter().filter(|h| h.held == held) {
                    let Some(o) = self.objects.get(h.obj) else { continue };
                    let subject = o.subject(&self.sources);
                    if several {
                        let others = self.others(ix, h.obj, &reps, identities);
                        extra.push(Finding::new(
                            held.duplicate_rule(),
                            &subject,
                            held.attribute(),
                            &h.value,
                            format!("also held by {others}"),
                        ));
                        continue;
                    }
                    // Held only by this identity in this attribute: another attribute elsewhere?
                    // (The same for every holder of this attribute, so it is worked out once.)
                    let mine = ix.identity_of(h.obj);
                    if in_duplicate.contains(&mine) {
                        continue;
                    }
                    let (names, more) = conflict.get_or_insert_with(|| {
                        let elsewhere: Vec<&Holding> = holders
                            .iter()
                            .filter(|x| x.held != held && ix.identity_of(x.obj) != mine)
                            .collect();
                        let names: Vec<String> = elsewhere
                            .iter()
                            .take(3)
                            .filter_map(|x| {
                                self.objects.get(x.obj).map(|e| {
                                    format!(
                                        "{} of {} ({})",
                                        x.held.attribute(),
                                        e.dn,
                                        self.source_name(e.source)
                                    )
                                })
                            })
                            .collect();
                        let more = if elsewhere.len() > 3 {
                            format!("; and {} more", elsewhere.len() - 3)
                        } else {
                            String::new()
                        };
                        (names, more)
                    });
                    if names.is_empty() {
                        continue;
                    }
                    extra.push(Finding::new(
                        &cat::ADDRESS_CONFLICT,
                        &subject,
                        held.attribute(),
                        &h.value,
                        format!("the same address is the {}{more}", names.join("; ")),
                    ));
                }
                if held == Held::Proxy && several {
                    self.proxy_removals(ix, holders, &same, removals);
                }
            }
        }
        let mut groups: Vec<(&String, &Vec<Holding>)> =
            ix.other_proxies.iter().filter(|(_, h)| h.len() > 1).collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        for (_, holders) in groups {
            if ix.identities(holders.iter().map(|h| h.obj)) < 2 {
                continue;
            }
            let same: Vec<&Holding> = holders.iter().collect();
            let objs: Vec<usize> = holders.iter().map(|h| h.obj).collect();
            let identities = ix.identities(objs.iter().copied());
            let reps = representatives(ix, &objs);
            for h in holders {
                let Some(o) = self.objects.get(h.obj) else { continue };
                let others = self.others(ix, h.obj, &reps, identities);
                extra.push(Finding::new(
                    &cat::PROXY_DUPLICATE,
                    &o.subject(&self.sources),
                    "proxyAddresses",
                    &h.value,
                    format!("also held by {others}"),
                ));
            }
            self.proxy_removals(ix, holders, &same, removals);
        }
        let nick_groups = sorted_groups(&ix.nick);
        for holders in nick_groups {
            self.simple_duplicates(
                ix,
                holders,
                &cat::MAILNICKNAME_DUPLICATE,
                "mailNickname",
                |o| o.mail_nickname.clone(),
                extra,
            );
        }
        let without_upn: HashMap<&String, Vec<usize>> = ix
            .sam
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    v.iter()
                        .copied()
                        .filter(|i| self.objects.get(*i).is_some_and(|o| o.upn.is_none()))
                        .collect(),
                )
            })
            .collect();
        let mut sam_groups: Vec<(&&String, &Vec<usize>)> =
            without_upn.iter().filter(|(_, v)| v.len() > 1).collect();
        sam_groups.sort_by(|a, b| a.0.cmp(b.0));
        for (_, holders) in sam_groups {
            self.simple_duplicates(
                ix,
                holders,
                &cat::SAMACCOUNTNAME_DUPLICATE,
                "sAMAccountName",
                |o| o.sam.clone(),
                extra,
            );
        }
    }

    fn simple_duplicates(
        &self,
        ix: &Indexes,
        holders: &[usize],
        rule: &'static Rule,
        attribute: &str,
        value_of: impl Fn(&Obj) -> Option<String>,
        extra: &mut Vec<Finding>,
    ) {
        if ix.identities(holders.iter().copied()) < 2 {
            return;
        }
        let identities = ix.identities(holders.iter().copied());
        let reps = representatives(ix, holders);
        for &i in holders {
            let Some(o) = self.objects.get(i) else { continue };
            let others = self.others(ix, i, &reps, identities);
            extra.push(Finding::new(
                rule,
                &o.subject(&self.sources),
                attribute,
                &value_of(o).unwrap_or_default(),
                format!("also held by {others}"),
            ));
        }
    }

    /// Removals for a proxy address held by several identities: the keeper is the identity for
    /// which it is primary, else its mail, else the oldest, else the first by source and DN. A
    /// holder's primary (`SMTP:`) or only SMTP address is never removed automatically: that is
    /// a decision.
    fn proxy_removals(
        &self,
        ix: &Indexes,
        all: &[Holding],
        proxies: &[&Holding],
        removals: &mut Vec<(usize, String, &'static Rule)>,
    ) {
        let mail_holders: HashSet<usize> =
            all.iter().filter(|x| x.held == Held::Mail).map(|x| ix.identity_of(x.obj)).collect();
        // The only address of a holder that has no other SMTP address, no mail and no UPN (a
        // group or contact with only an `smtp:` value) is its address in all but name: it counts
        // as primary. A user keeps its UPN (and mail) as addresses without it.
        let sole = |h: &Holding| {
            smtp_address(&h.value).is_some()
                && self.objects.get(h.obj).is_some_and(|o| {
                    o.upn.is_none()
                        && o.mail.is_none()
                        && !o
                            .proxies
                            .iter()
                            .any(|p| smtp_address(p).is_some() && !p.eq_ignore_ascii_case(&h.value))
                })
        };
        let keeper = proxies
            .iter()
            .min_by_key(|h| {
                let o = self.objects.get(h.obj);
                // Its primary first, then its only address, then its mail.
                let rank = if h.value.starts_with("SMTP:") {
                    0
                } else if sole(h) {
                    1
                } else {
                    2
                };
                let is_mail = mail_holders.contains(&ix.identity_of(h.obj));
                (rank, !is_mail, o.map(Obj::when_created_key), o.map(|o| (o.source, o.dn.clone())))
            })
            .map(|h| ix.identity_of(h.obj));
        for h in proxies {
            // Never a primary or only address: taking it would leave the holder without an
            // address, which is a decision.
            if Some(ix.identity_of(h.obj)) != keeper && !h.value.starts_with("SMTP:") && !sole(h) {
                removals.push((h.obj, h.value.clone(), &cat::PROXY_DUPLICATE));
            }
        }
    }

    /// The anchor audit against the tenant, and duplicates between the sources and the tenant.
    /// Returns the cloud object each on-premises object will join (by object index).
    pub(super) fn match_tenant(
        &mut self,
        ix: &Indexes,
        tenant: Option<&TenantSnapshot>,
        extra: &mut Vec<Finding>,
    ) -> HashMap<usize, usize> {
        let mut targets = HashMap::new();
        // ImmutableIDs claimed twice among the sources.
        let mut by_anchor: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, id) in ix.identity.iter().enumerate() {
            if self.objects.get(i).is_some_and(|o| o.immutable_id.is_some()) {
                by_anchor.entry(*id).or_default().push(i);
            }
        }
        let mut claimed: Vec<&Vec<usize>> = by_anchor.values().filter(|h| h.len() > 1).collect();
        claimed.sort();
        for holders in claimed {
            for &i in holders {
                let Some(o) = self.objects.get(i) else { continue };
                let names: Vec<String> = holders
                    .iter()
                    .filter(|h| **h != i)
                    .take(3)
                    .filter_map(|h| self.objects.get(*h))
                    .map(|x| format!("{} ({})", x.dn, self.source_name(x.source)))
                    .collect();
                extra.push(Finding::new(
                    &cat::ANCHOR_DUPLICATE,
                    &o.subject(&self.sources),
                    "objectGUID",
                    &o.immutable_base64(),
                    format!("the same ImmutableID as {}", names.join("; ")),
                ));
            }
        }
        let Some(tenant) = tenant else {
            for o in &self.objects {
                self.audit.push(AnchorOutcome {
                    source: self.source_name(o.source),
                    dn: o.dn.clone(),
                    object_class: o.class.clone(),
                    immutable_id: o.immutable_id.map(|i| i.to_base64()),
                    outcome: if o.immutable_id.is_some() {
                        MatchOutcome::NotCompared
                    } else {
                        MatchOutcome::NoAnchor
                    },
                    cloud_id: None,
                    detail: String::new(),
                });
            }
            return targets;
        };
        let cloud = &tenant.objects;
        let mut by_immutable: HashMap<&str, usize> = HashMap::new();
        let mut by_primary: HashMap<String, Vec<usize>> = HashMap::new();
        for (c, obj) in cloud.iter().enumerate() {
            if let Some(id) = &obj.immutable_id {
                by_immutable.insert(id.as_str(), c);
            }
            if let Some(p) = obj.primary_smtp() {
                by_primary.entry(p).or_default().push(c);
            }
        }
        let mut rows = Vec::with_capacity(self.objects.len());
        let mut soft: Vec<(usize, Finding)> = Vec::new();
        for (i, o) in self.objects.iter().enumerate() {
            let subject = o.subject(&self.sources);
            let kind = o.cloud_kind();
            let immutable = o.immutable_id.map(|id| id.to_base64());
            let mut row = AnchorOutcome {
                source: subject.source.clone(),
                dn: o.dn.clone(),
                object_class: o.class.clone(),
                immutable_id: immutable.clone(),
                outcome: MatchOutcome::New,
                cloud_id: None,
                detail: String::new(),
            };
            let mut involved: Vec<usize> = Vec::new();
            let mut conflict = |rule: &'static Rule,
                                c: usize,
                                attr: &str,
                                value: &str,
                                why: String,
                                row: &mut AnchorOutcome| {
                row.outcome = MatchOutcome::Conflict;
                row.cloud_id = cloud.get(c).map(|x| x.id.clone());
                row.detail = why.clone();
                extra.push(Finding::new(rule, &subject, attr, value, why));
            };
            let hard = immutable.as_deref().and_then(|id| by_immutable.get(id)).copied();
            if immutable.is_none() {
                row.outcome = MatchOutcome::NoAnchor;
            } else if let Some((c, x)) = hard.and_then(|c| cloud.get(c).map(|x| (c, x))) {
                involved.push(c);
                if x.kind != kind {
                    conflict(
                        &cat::MATCH_OBJECT_TYPE_MISMATCH,
                        c,
                        "objectClass",
                        &o.class,
                        format!(
                            "hard match on the ImmutableID with the cloud {} {} ({})",
                            x.kind.as_str(),
                            label(x),
                            x.id
                        ),
                        &mut row,
                    );
                } else {
                    row.outcome = MatchOutcome::HardMatch;
                    row.cloud_id = Some(x.id.clone());
                    row.detail = format!("onPremisesImmutableId of {}", label(x));
                    targets.insert(i, c);
                }
            } else {
                // Soft match: users on UPN, then on the primary SMTP address (the SMTP: proxy,
                // else mail); mail-enabled groups and contacts on their proxy addresses only;
                // groups without proxy addresses never match.
                let upn_hits: Vec<usize> = match (kind, &o.upn) {
                    (CloudKind::User, Some(u)) => ix
                        .cloud_smtp
                        .get(&u.to_lowercase())
                        .into_iter()
                        .flatten()
                        .filter(|(c, held)| {
                            *held == Held::Upn && cloud.get(*c).is_some_and(|x| x.kind == CloudKind::User)
                        })
                        .map(|(c, _)| *c)
                        .collect(),
                    _ => Vec::new(),
                };
                let (smtp_attr, smtp_value, smtp_hits): (&str, String, Vec<usize>) = match kind {
                    CloudKind::User => match o.primary_proxy().or(o.mail.as_deref()) {
                        Some(v) => {
                            let addr = smtp_address(v).unwrap_or(v).to_lowercase();
                            let attr = if v.contains(':') { "proxyAddresses" } else { "mail" };
                            (attr, v.to_owned(), by_primary.get(&addr).cloned().unwrap_or_default())
                        }
                        None => ("mail", String::new(), Vec::new()),
                    },
                    _ => match o.primary_proxy() {
                        Some(v) => {
                            let addr = smtp_address(v).unwrap_or(v).to_lowercase();
                            let hits = ix
                                .cloud_smtp
                                .get(&addr)
                                .into_iter()
                                .flatten()
                                .filter(|(_, held)| *held == Held::Proxy)
                                .map(|(c, _)| *c)
                                .collect();
                            ("proxyAddresses", v.to_owned(), hits)
                        }
                        None => ("proxyAddresses", String::new(), Vec::new()),
                    },
                };
                let mut all: Vec<usize> = upn_hits.iter().chain(&smtp_hits).copied().collect();
                all.sort_unstable();
                all.dedup();
                involved.extend(all.iter().copied());
                let via_upn = !upn_hits.is_empty();
                let (attr, value) = if via_upn {
                    ("userPrincipalName", o.upn.clone().unwrap_or_default())
                } else {
                    (smtp_attr, smtp_value)
                };
                match all.as_slice() {
                    [] => {
                        row.detail = if kind != CloudKind::User && o.primary_proxy().is_none() {
                            "no proxy addresses: a non-mail object is never soft-matched".into()
                        } else {
                            "no cloud object with its ImmutableID, UPN or primary SMTP address".into()
                        }
                    }
                    [c] => {
                        let c = *c;
                        if let Some(x) = cloud.get(c) {
                            if x.kind != kind {
                                conflict(
                                    &cat::MATCH_OBJECT_TYPE_MISMATCH,
                                    c,
                                    attr,
                                    &value,
                                    format!(
                                        "soft match with the cloud {} {} ({})",
                                        x.kind.as_str(),
                                        label(x),
                                        x.id
                                    ),
                                    &mut row,
                                );
                            } else if x.immutable_id.is_some() || x.sync_enabled {
                                conflict(
                                    &cat::MATCH_INVALID_SOFT_MATCH,
                                    c,
                                    attr,
                                    &value,
                                    format!(
                                        "InvalidSoftMatch: the cloud {} {} ({}) is already synchronized with ImmutableID {}",
                                        x.kind.as_str(),
                                        label(x),
                                        x.id,
                                        x.immutable_id.as_deref().unwrap_or("(set by another engine)")
                                    ),
                                    &mut row,
                                );
                            } else if !x.admin_roles.is_empty() {
                                conflict(
                                    &cat::MATCH_ADMIN_ROLE,
                                    c,
                                    attr,
                                    &value,
                                    format!(
                                        "the cloud user {} ({}) holds {}: it is never soft-matched, so a second account would be created",
                                        label(x),
                                        x.id,
                                        x.admin_roles.join(", ")
                                    ),
                                    &mut row,
                                );
                            } else {
                                row.outcome = if via_upn {
                                    MatchOutcome::SoftMatchUpn
                                } else {
                                    MatchOutcome::SoftMatchSmtp
                                };
                                row.cloud_id = Some(x.id.clone());
                                row.detail = format!(
                                    "same {} as the cloud {} {}",
                                    if via_upn { "UPN" } else { "primary SMTP address" },
                                    x.kind.as_str(),
                                    label(x)
                                );
                                soft.push((
                                    i,
                                    Finding::new(
                                        &cat::MATCH_SOFT,
                                        &subject,
                                        attr,
                                        &value,
                                        format!(
                                            "will take over the cloud {} {} ({})",
                                            x.kind.as_str(),
                                            label(x),
                                            x.id
                                        ),
                                    ),
                                ));
                                targets.insert(i, c);
                            }
                        }
                    }
                    many => {
                        let names: Vec<String> = many
                            .iter()
                            .filter_map(|c| cloud.get(*c))
                            .map(|x| format!("{} ({})", label(x), x.id))
                            .collect();
                        if let Some(first) = many.first() {
                            conflict(
                                &cat::MATCH_AMBIGUOUS,
                                *first,
                                attr,
                                &value,
                                format!(
                                    "its UPN and primary SMTP address match different cloud objects: {}",
                                    names.join(", ")
                                ),
                                &mut row,
                            );
                        }
                    }
                }
            }
            // Values the tenant already holds on another object (not the one this object joins
            // or is in conflict with: that conflict is the finding).
            let mine: Vec<(Held, &str)> = o
                .upn
                .iter()
                .map(|u| (Held::Upn, u.as_str()))
                .chain(o.mail.iter().map(|m| (Held::Mail, m.as_str())))
                .chain(o.proxies.iter().map(|p| (Held::Proxy, p.as_str())))
                .collect();
            for (held, value) in mine {
                let key = smtp_address(value).unwrap_or(value).to_lowercase();
                let cloud_holders: Vec<(usize, &'static str)> = if held == Held::Proxy
                    && smtp_address(value).is_none()
                {
                    ix.cloud_other
                        .get(&value.to_lowercase())
                        .into_iter()
                        .flatten()
                        .map(|c| (*c, "proxyAddresses"))
                        .collect()
                } else {
                    ix.cloud_smtp.get(&key).into_iter().flatten().map(|(c, h)| (*c, h.attribute())).collect()
                };
                // One finding per cloud object, naming every attribute of it that holds the value.
                let mut by_object: Vec<(usize, Vec<&'static str>)> = Vec::new();
                for (c, attribute) in cloud_holders {
                    if involved.contains(&c) {
                        continue;
                    }
                    match by_object.iter_mut().find(|(x, _)| *x == c) {
                        Some((_, attributes)) if !attributes.contains(&attribute) => {
                            attributes.push(attribute)
                        }
                        Some(_) => {}
                        None => by_object.push((c, vec![attribute])),
                    }
                }
                for (c, attributes) in by_object {
                    let Some(x) = cloud.get(c) else { continue };
                    extra.push(Finding::new(
                        held.duplicate_rule(),
                        &subject,
                        held.attribute(),
                        value,
                        format!(
                            "the tenant's {} {} ({}) has it as its {}",
                            x.kind.as_str(),
                            label(x),
                            x.id,
                            and_list(&attributes)
                        ),
                    ));
                }
            }
            rows.push(row);
        }
        // Several identities soft-matching one cloud object: none of them may take it over.
        let mut claimants: HashMap<usize, Vec<usize>> = HashMap::new();
        for (&i, &c) in &targets {
            claimants.entry(c).or_default().push(i);
        }
        let mut ambiguous: HashSet<usize> = HashSet::new();
        let mut contested: Vec<(usize, Vec<usize>)> =
            claimants.into_iter().filter(|(_, objs)| ix.identities(objs.iter().copied()) > 1).collect();
        contested.sort_unstable();
        let soft_of: HashMap<usize, usize> = soft.iter().enumerate().map(|(k, (i, _))| (*i, k)).collect();
        for (c, mut objs) in contested {
            objs.sort_unstable();
            let Some(x) = cloud.get(c) else { continue };
            let reps = representatives(ix, &objs);
            let identities = ix.identities(objs.iter().copied());
            for &i in &objs {
                let Some(o) = self.objects.get(i) else { continue };
                let why = format!(
                    "the cloud {} {} ({}) would be soft-matched by this object and by {}",
                    x.kind.as_str(),
                    label(x),
                    x.id,
                    self.others(ix, i, &reps, identities)
                );
                if let Some(row) = rows.get_mut(i) {
                    row.outcome = MatchOutcome::Conflict;
                    row.detail = why.clone();
                }
                let (attr, value) = soft_of
                    .get(&i)
                    .and_then(|k| soft.get(*k))
                    .map(|(_, f)| (f.attribute.clone(), f.value.clone()))
                    .unwrap_or_default();
                extra.push(Finding::new(
                    &cat::MATCH_AMBIGUOUS,
                    &o.subject(&self.sources),
                    &attr,
                    &value,
                    why,
                ));
                targets.remove(&i);
                ambiguous.insert(i);
            }
        }
        extra.extend(soft.into_iter().filter(|(i, _)| !ambiguous.contains(i)).map(|(_, f)| f));
        self.audit.extend(rows);
        targets
    }

    /// The UPN suffix that fixes use in each source: the most used verified suffix (with tenant
    /// data) or the most used routable one; with tenant data and no verified suffix in use, the
    /// tenant's default verified domain.
    fn target_suffixes(&self, tenant: Option<&TenantSnapshot>) -> HashMap<usize, String> {
        let mut counts: HashMap<usize, std::collections::BTreeMap<String, u64>> = HashMap::new();
        for o in self.objects.iter().filter(|o| rules::is_user(&o.class)) {
            if let Some((_, d)) = o.upn.as_deref().and_then(|u| address::split_address(u).ok()) {
                *counts.entry(o.source).or_default().entry(d.to_lowercase()).or_default() += 1;
            }
        }
        let mut out = HashMap::new();
        for s in 0..self.sources.len() {
            let usable = |d: &str| match tenant {
                Some(t) => t.verified_domain(d).is_some_and(|v| !v.initial),
                None => address::classify_domain(d).is_routable(),
            };
            let best = counts
                .get(&s)
                .into_iter()
                .flatten()
                .filter(|(d, _)| usable(d))
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(d, _)| d.clone())
                .or_else(|| {
                    tenant.and_then(|t| {
                        t.domains
                            .iter()
                            .find(|d| d.verified && d.default && !d.initial)
                            .map(|d| d.name.clone())
                    })
                });
            if let Some(b) = best {
                out.insert(s, b);
            }
        }
        out
    }

    /// The suggested fixes. Each proposed value is checked against every value in use (the
    /// sources, the tenant except the object's own match, the object's other values, and the
    /// fixes proposed before it for another identity): a colliding UPN is numbered (`alice2@...`), any other
    /// colliding fix is dropped (which address an object keeps is a decision).
    pub(super) fn remediations(
        &self,
        ix: &Indexes,
        tenant: Option<&TenantSnapshot>,
        targets: &HashMap<usize, usize>,
        removals: Vec<(usize, String, &'static Rule)>,
    ) -> Vec<Remediation> {
        let suffixes = self.target_suffixes(tenant);
        // Every value proposed so far ("namespace\0value"), and the identity that proposed it: an
        // identity may propose one value for several of its attributes (its UPN, mail and
        // primary SMTP address are often the same address), no other identity may take it.
        let mut proposed: HashMap<String, usize> = HashMap::new();
        // Proxy addresses proposed per identity: two of its values must not become one.
        let mut own_proxies: HashSet<(usize, String)> = HashSet::new();
        // The decision per identity, attribute and current value: an identity read from several
        // sources gets the same fix in each.
        let mut decided: HashMap<(usize, &'static str, Option<String>), Option<String>> = HashMap::new();
        let claimed = |key: String, mine: usize, proposed: &HashMap<String, usize>| {
            proposed.get(&key).is_some_and(|by| *by != mine)
        };
        // True when `address` (lower case) is held by another identity, by a cloud object this
        // object does not join, or proposed by another identity.
        let smtp_taken = |address: &str, i: usize, proposed: &HashMap<String, usize>| {
            let mine = ix.identity_of(i);
            ix.smtp.get(address).is_some_and(|h| h.iter().any(|x| ix.identity_of(x.obj) != mine))
                || ix
                    .cloud_smtp
                    .get(address)
                    .is_some_and(|h| h.iter().any(|(c, _)| targets.get(&i) != Some(c)))
                || claimed(format!("smtp\0{address}"), mine, proposed)
        };
        let mut out: std::collections::BTreeMap<(usize, &'static str, Option<String>), Remediation> =
            std::collections::BTreeMap::new();
        for (index, issue) in &self.issues {
            let i = *index;
            let Some(o) = self.objects.get(i) else { continue };
            let mine = ix.identity_of(i);
            let key = (mine, issue.attribute, issue.value.clone());
            let decision = match decided.get(&key) {
                Some(d) => d.clone(),
                None => {
                    let d = match &issue.proposal {
                        Proposal::None => None,
                        Proposal::Upn { local, domain } => domain
                            .clone()
                            .or_else(|| suffixes.get(&o.source).cloned())
                            .and_then(|domain| {
                                (1..1000u32)
                                    .map(|n| numbered(local, n, &domain))
                                    .find(|c| !smtp_taken(&c.to_lowercase(), i, &proposed))
                            })
                            .inspect(|v| {
                                proposed.insert(format!("smtp\0{}", v.to_lowercase()), mine);
                            }),
                        Proposal::Edit(v) => {
                            let lower = v.to_lowercase();
                            let free = match issue.attribute {
                                "mail" => !smtp_taken(&lower, i, &proposed),
                                "proxyAddresses" => {
                                    let own = o.proxies.iter().any(|p| p.eq_ignore_ascii_case(v))
                                        || own_proxies.contains(&(mine, lower.clone()));
                                    let others =
                                        match smtp_address(v) {
                                            Some(a) => smtp_taken(&a.to_lowercase(), i, &proposed),
                                            None => {
                                                ix.other_proxies.get(&lower).is_some_and(|h| {
                                                    h.iter().any(|x| ix.identity_of(x.obj) != mine)
                                                }) || ix.cloud_other.get(&lower).is_some_and(|h| {
                                                    h.iter().any(|c| targets.get(&i) != Some(c))
                                                }) || claimed(format!("proxy\0{lower}"), mine, &proposed)
                                            }
                                        };
                                    !own && !others
                                }
                                "mailNickname" => {
                                    !ix.nick
                                        .get(&lower)
                                        .is_some_and(|h| h.iter().any(|x| ix.identity_of(*x) != mine))
                                        && !claimed(format!("nick\0{lower}"), mine, &proposed)
                                }
                                "sAMAccountName" => {
                                    !ix.sam
                                        .get(&lower)
                                        .is_some_and(|h| h.iter().any(|x| ix.identity_of(*x) != mine))
                                        && !claimed(format!("sam\0{lower}"), mine, &proposed)
                                }
                                _ => true,
                            };
                            if free {
                                let namespace = match issue.attribute {
                                    "mail" => "smtp",
                                    "proxyAddresses" if smtp_address(v).is_some() => "smtp",
                                    "proxyAddresses" => "proxy",
                                    "mailNickname" => "nick",
                                    "sAMAccountName" => "sam",
                                    _ => "",
                                };
                                if !namespace.is_empty() {
                                    let key = if namespace == "smtp" {
                                        smtp_address(v).unwrap_or(v).to_lowercase()
                                    } else {
                                        lower.clone()
                                    };
                                    proposed.insert(format!("{namespace}\0{key}"), mine);
                                }
                                if issue.attribute == "proxyAddresses" {
                                    own_proxies.insert((mine, lower));
                                }
                                Some(v.clone())
                            } else {
                                None
                            }
                        }
                    };
                    decided.insert(key, d.clone());
                    d
                }
            };
            let Some(update) = decision else { continue };
            if Some(update.as_str()) == issue.value.as_deref() {
                continue;
            }
            let mut kinds: Vec<&'static str> = Vec::new();
            let mut ids: Vec<&'static str> = Vec::new();
            for h in &issue.hits {
                if !kinds.contains(&h.rule.idfix) {
                    kinds.push(h.rule.idfix);
                }
                if !ids.contains(&h.rule.id) {
                    ids.push(h.rule.id);
                }
            }
            out.insert(
                (i, issue.attribute, issue.value.clone()),
                Remediation {
                    source: self.source_name(o.source),
                    dn: o.dn.clone(),
                    common_name: o.cn.clone(),
                    object_class: o.class.clone(),
                    attribute: issue.attribute.to_owned(),
                    value: issue.value.clone(),
                    update: Some(update),
                    action: Action::Edit,
                    error: kinds.join(","),
                    rules: ids,
                    multi_valued: issue.multi_valued,
                },
            );
        }
        for (index, value, rule) in removals {
            let Some(o) = self.objects.get(index) else { continue };
            let entry =
                out.entry((index, "proxyAddresses", Some(value.clone()))).or_insert_with(|| Remediation {
                    source: self.source_name(o.source),
                    dn: o.dn.clone(),
                    common_name: o.cn.clone(),
                    object_class: o.class.clone(),
                    attribute: "proxyAddresses".into(),
                    value: Some(value.clone()),
                    update: None,
                    action: Action::Remove,
                    error: String::new(),
                    rules: Vec::new(),
                    multi_valued: true,
                });
            entry.update = None;
            entry.action = Action::Remove;
            if !entry.rules.contains(&rule.id) {
                entry.rules.push(rule.id);
            }
            if !entry.error.split(',').any(|k| k == rule.idfix) {
                if !entry.error.is_empty() {
                    entry.error.push(',');
                }
                entry.error.push_str(rule.idfix);
            }
        }
        let mut list: Vec<Remediation> = out.into_values().collect();
        list.sort_by(|a, b| {
            (&a.source, &a.dn, &a.attribute, &a.value).cmp(&(&b.source, &b.dn, &b.attribute, &b.value))
        });
        list
    }
}

/// `local@domain`, or with `n` appended to the local part (kept within 64 characters).
fn numbered(local: &str, n: u32, domain: &str) -> String {
    if n == 1 {
        return format!("{local}@{domain}");
    }
    let digits = n.to_string();
    let keep = 64usize.saturating_sub(digits.len());
    format!("{}{digits}@{domain}", local.chars().take(keep).collect::<String>())
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// One holder of each of the first four identities among `holders`: enough to name three
/// holders other than any one identity.
fn representatives(ix: &Indexes, holders: &[usize]) -> Vec<usize> {
    let mut reps: Vec<usize> = Vec::with_capacity(4);
    for &h in holders {
        let id = ix.identity_of(h);
        if !reps.iter().any(|r| ix.identity_of(*r) == id) {
            reps.push(h);
            if reps.len() == 4 {
                break;
            }
        }
    }
    reps
}

fn sorted_groups(index: &HashMap<String, Vec<usize>>) -> Vec<&Vec<usize>> {
    let mut groups: Vec<(&String, &Vec<usize>)> = index.iter().filter(|(_, v)| v.len() > 1).collect();
    groups.sort_by(|a, b| a.0.cmp(b.0));
    groups.into_iter().map(|(_, v)| v).collect()
}

/// A cloud object as people know it.
pub(super) fn label(c: &CloudObject) -> String {
    c.upn
        .clone()
        .or_else(|| c.mail.clone())
        .or_else(|| c.display_name.clone())
        .unwrap_or_else(|| c.id.clone())
}
