//! The assessor: takes objects one at a time from any number of sources, runs the per-object
//! rules at once, and keeps only what the whole-population checks need (duplicates, tenant
//! matching, suffix inventory, federation), which run in [`Assessor::finish`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use syncctl_core::{AttrValues, CsObject, ObjectError};

use crate::address::{self, DomainClass};
use crate::catalogue::{self as cat, Rule, Severity};
use crate::report::{
    Action, AnchorCounts, AnchorOutcome, Federation, Finding, MatchOutcome, ObjectScore, Remediation, Report,
    RuleCount, SourceSummary, Subject, SuffixRow, TenantSummary, Totals, Verdict,
};
use crate::rules::{self, Proposal, RuleContext, ValueIssue};
use crate::tenant::{CloudKind, CloudObject, TenantSnapshot};

/// The notification-mail settings to check (the `[mail]` section of the config).
#[derive(Clone, Debug, Default)]
pub struct MailSettings {
    /// The sender address.
    pub sender: String,
    /// The SMTP relay account (its UPN), if any.
    pub relay_account: Option<String>,
    /// The relay's host.
    pub relay_host: Option<String>,
    /// The relay's port.
    pub relay_port: Option<u16>,
    /// The relay's security (`starttls`, `tls`, `plain`).
    pub relay_security: Option<String>,
}

/// What an assessment compares with and checks besides the objects.
#[derive(Clone, Debug, Default)]
pub struct AssessOptions {
    /// Tenant data.
    pub tenant: Option<TenantSnapshot>,
    /// Notification-mail settings.
    pub mail: Option<MailSettings>,
    /// How many objects the worst-objects list shows (10 when 0).
    pub worst_objects: usize,
}

/// A source registered with [`Assessor::begin_source`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceId(usize);

/// IdFix's skip list: `cn` prefixes of system and service accounts.
const SKIPPED_CN_PREFIXES: &[&str] = &[
    "admini",
    "cas_{",
    "discoverysearchmailbox",
    "federatedemail",
    "guest",
    "httpconnector",
    "krbtgt",
    "iusr_",
    "iwam",
    "msol",
    "support_",
    "systemmailbox",
    "wwioadmini",
    "healthmailbox",
    "exchange online-applicationaccount",
];
/// IdFix's skip list: sAMAccountName prefixes of service users.
const SKIPPED_SAM_PREFIXES: &[&str] = &["cas_", "support_", "msol_"];

/// One assessed object, reduced to what the population checks need.
#[derive(Clone, Debug)]
struct Obj {
    source: usize,
    dn: String,
    cn: String,
    class: String,
    immutable_id: Option<String>,
    upn: Option<String>,
    sam: Option<String>,
    mail: Option<String>,
    mail_nickname: Option<String>,
    proxies: Vec<String>,
    when_created: Option<String>,
    dc_root: String,
}

impl Obj {
    fn subject(&self, sources: &[SourceSummary]) -> Subject {
        Subject {
            source: sources.get(self.source).map(|s| s.name.clone()).unwrap_or_default(),
            dn: self.dn.clone(),
            common_name: self.cn.clone(),
            object_class: self.class.clone(),
            upn_suffix: if rules::is_user(&self.class) {
                match self.upn.as_deref().map(address::split_address) {
                    None => "(none)".to_owned(),
                    Some(Ok((_, d))) => d.to_lowercase(),
                    Some(Err(_)) => "(invalid)".to_owned(),
                }
            } else {
                String::new()
            },
        }
    }
    fn primary_smtp(&self) -> Option<String> {
        self.proxies
            .iter()
            .find_map(|p| p.strip_prefix("SMTP:"))
            .or(self.mail.as_deref())
            .map(str::to_lowercase)
    }
    fn smtp_addresses(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .proxies
            .iter()
            .filter_map(|p| p.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("smtp")).map(|(_, a)| a))
            .map(str::to_lowercase)
            .collect();
        out.extend(self.mail.as_deref().map(str::to_lowercase));
        out
    }
    fn cloud_kind(&self) -> CloudKind {
        match self.class.to_ascii_lowercase().as_str() {
            "group" | "groupofnames" => CloudKind::Group,
            "contact" => CloudKind::Contact,
            _ => CloudKind::User,
        }
    }
    fn when_created_key(&self) -> String {
        self.when_created.clone().unwrap_or_else(|| "~".into())
    }
}

/// Collects objects and produces the [`Report`].
pub struct Assessor {
    options: AssessOptions,
    sources: Vec<SourceSummary>,
    objects: Vec<Obj>,
    issues: Vec<(usize, ValueIssue)>,
    findings: Vec<Finding>,
    audit: Vec<AnchorOutcome>,
}

impl Assessor {
    /// An empty assessment.
    pub fn new(options: AssessOptions) -> Self {
        Self {
            options,
            sources: Vec::new(),
            objects: Vec::new(),
            issues: Vec::new(),
            findings: Vec::new(),
            audit: Vec::new(),
        }
    }

    /// Registers a source; its objects follow through [`Assessor::observe`].
    pub fn begin_source(&mut self, name: &str, kind: &str, endpoint: &str) -> SourceId {
        self.sources.push(SourceSummary {
            name: name.to_owned(),
            kind: kind.to_owned(),
            endpoint: endpoint.to_owned(),
            objects_read: 0,
            objects_assessed: 0,
            skipped: BTreeMap::new(),
            unreadable: 0,
        });
        SourceId(self.sources.len() - 1)
    }

    /// Runs the per-object rules on one object and keeps what the population checks need.
    pub fn observe(&mut self, source: SourceId, object: &CsObject) {
        let Some(summary) = self.sources.get_mut(source.0) else { return };
        summary.objects_read += 1;
        if let Some(reason) = skip_reason(object) {
            *summary.skipped.entry(reason.to_owned()).or_default() += 1;
            return;
        }
        summary.objects_assessed += 1;
        let first = |name: &str| object.attributes.first_text(name).map(str::to_owned);
        let texts = |name: &str| match object.attributes.get(name) {
            Some(AttrValues::String(v)) => v.clone(),
            _ => Vec::new(),
        };
        let index = self.objects.len();
        let ctx = RuleContext { tenant: self.options.tenant.as_ref() };
        for issue in rules::check_object(object, &ctx) {
            self.issues.push((index, issue));
        }
        self.objects.push(Obj {
            source: source.0,
            dn: object.dn.as_str().to_owned(),
            cn: first("cn")
                .unwrap_or_else(|| object.dn.rdn().map(|r| r.value().to_owned()).unwrap_or_default()),
            class: object.object_class.clone(),
            immutable_id: object.immutable_id.map(|i| i.to_base64()),
            upn: first("userPrincipalName"),
            sam: first("sAMAccountName"),
            mail: first("mail"),
            mail_nickname: first("mailNickname"),
            proxies: texts("proxyAddresses"),
            when_created: object
                .attributes
                .get("whenCreated")
                .and_then(|v| v.display_values().into_iter().next()),
            dc_root: dc_root(object.dn.as_str()),
        });
    }

    /// Records an object the source could not deliver (no usable anchor, a value that cannot be
    /// read): it will not synchronize.
    pub fn observe_unreadable(&mut self, source: SourceId, error: &ObjectError) {
        let Some(summary) = self.sources.get_mut(source.0) else { return };
        summary.objects_read += 1;
        summary.unreadable += 1;
        let subject = Subject {
            source: summary.name.clone(),
            dn: error.dn.clone(),
            common_name: leaf_value(&error.dn),
            ..Subject::default()
        };
        let (rule, attribute) = if error.kind.contains("anchor") {
            (&cat::ANCHOR_MISSING, "objectGUID")
        } else {
            (&cat::OBJECT_UNREADABLE, "-")
        };
        self.findings.push(Finding::new(
            rule,
            &subject,
            attribute,
            "",
            format!("{} ({})", error.message, error.kind),
        ));
        self.audit.push(AnchorOutcome {
            source: subject.source,
            dn: error.dn.clone(),
            object_class: String::new(),
            immutable_id: None,
            outcome: MatchOutcome::NoAnchor,
            cloud_id: None,
            detail: error.message.clone(),
        });
    }

    /// Runs the population checks and returns the report. `generated_at` and `generator` are
    /// stamped on it as given.
    pub fn finish(mut self, generated_at: String, generator: String) -> Report {
        let tenant = self.options.tenant.take();
        let mail = self.options.mail.take();
        let mut extra: Vec<(usize, Finding)> = Vec::new();
        let mut removals: Vec<(usize, String, &'static Rule)> = Vec::new();
        self.duplicates(&mut extra, &mut removals);
        let targets = self.match_tenant(tenant.as_ref(), &mut extra);
        let remediations = self.remediations(tenant.as_ref(), &targets, removals);
        // Findings: per-value hits, population findings, forest-wide findings.
        let mut findings = std::mem::take(&mut self.findings);
        for (index, issue) in &self.issues {
            let Some(obj) = self.objects.get(*index) else { continue };
            let subject = obj.subject(&self.sources);
            for hit in &issue.hits {
                let mut f = Finding::new(
                    hit.rule,
                    &subject,
                    issue.attribute,
                    issue.value.as_deref().unwrap_or(""),
                    hit.message.clone(),
                );
                f.severity = hit.severity;
                findings.push(f);
            }
        }
        findings.extend(extra.into_iter().map(|(_, f)| f));
        let upn_suffixes = self.suffix_inventory(tenant.as_ref());
        let federation = self.federation(&upn_suffixes, &mut findings);
        if let Some(mail) = &mail {
            check_mail_settings(mail, tenant.as_ref(), &mut findings);
        }
        findings.sort_by(|a, b| {
            (&a.source, &a.dn, &a.attribute, &a.value, a.rule).cmp(&(
                &b.source,
                &b.dn,
                &b.attribute,
                &b.value,
                b.rule,
            ))
        });
        let mut audit = std::mem::take(&mut self.audit);
        audit.sort_by(|a, b| (&a.source, &a.dn).cmp(&(&b.source, &b.dn)));
        self.report(
            generated_at,
            generator,
            tenant.as_ref(),
            findings,
            remediations,
            audit,
            upn_suffixes,
            federation,
        )
    }

    fn source_name(&self, index: usize) -> String {
        self.sources.get(index).map(|s| s.name.clone()).unwrap_or_default()
    }

    /// The holders of a value other than `except`, at most three by name, then how many more
    /// (`others` counts every holder but `except`): linear in the names shown, not in the
    /// holders, so that a value held by thousands stays cheap.
    fn describe(&self, holders: &[usize], except: usize, others: usize) -> String {
        let mut names: Vec<String> = holders
            .iter()
            .filter(|h| **h != except)
            .take(3)
            .filter_map(|i| self.objects.get(*i))
            .map(|o| format!("{} ({})", o.dn, self.source_name(o.source)))
            .collect();
        if others > 3 {
            names.push(format!("and {} more", others - 3));
        }
        names.join("; ")
    }

    /// Duplicates among the sources, case-insensitive, per attribute; and UPNs that equal
    /// another object's SMTP address. Proxy-address duplicates get a removal on every holder
    /// but one.
    fn duplicates(
        &self,
        extra: &mut Vec<(usize, Finding)>,
        removals: &mut Vec<(usize, String, &'static Rule)>,
    ) {
        let mut upn: HashMap<String, Vec<usize>> = HashMap::new();
        let mut mail: HashMap<String, Vec<usize>> = HashMap::new();
        let mut nick: HashMap<String, Vec<usize>> = HashMap::new();
        let mut sam: HashMap<String, Vec<usize>> = HashMap::new();
        let mut proxy: HashMap<String, Vec<(usize, String)>> = HashMap::new();
        let mut smtp: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, o) in self.objects.iter().enumerate() {
            if let Some(v) = &o.upn {
                upn.entry(v.to_lowercase()).or_default().push(i);
            }
            if let Some(v) = &o.mail {
                mail.entry(v.to_lowercase()).or_default().push(i);
            }
            if let Some(v) = &o.mail_nickname {
                nick.entry(v.to_lowercase()).or_default().push(i);
            }
            if o.upn.is_none()
                && let Some(v) = &o.sam
            {
                sam.entry(v.to_lowercase()).or_default().push(i);
            }
            for p in &o.proxies {
                let holders = proxy.entry(p.to_lowercase()).or_default();
                if !holders.iter().any(|(h, _)| *h == i) {
                    holders.push((i, p.clone()));
                }
            }
            for a in o.smtp_addresses() {
                smtp.entry(a).or_default().push(i);
            }
        }
        let mut report = |index: &HashMap<String, Vec<usize>>,
                          rule: &'static Rule,
                          attr: &str,
                          value_of: &dyn Fn(&Obj) -> Option<String>| {
            let mut groups: Vec<&Vec<usize>> = index.values().filter(|h| h.len() > 1).collect();
            groups.sort();
            for holders in groups {
                for &i in holders {
                    let Some(o) = self.objects.get(i) else { continue };
                    let value = value_of(o).unwrap_or_default();
                    let f = Finding::new(
                        rule,
                        &o.subject(&self.sources),
                        attr,
                        &value,
                        format!("also held by {}", self.describe(holders, i, holders.len() - 1)),
                    );
                    extra.push((i, f));
                }
            }
        };
        report(&upn, &cat::UPN_DUPLICATE, "userPrincipalName", &|o| o.upn.clone());
        report(&mail, &cat::MAIL_DUPLICATE, "mail", &|o| o.mail.clone());
        report(&nick, &cat::MAILNICKNAME_DUPLICATE, "mailNickname", &|o| o.mail_nickname.clone());
        report(&sam, &cat::SAMACCOUNTNAME_DUPLICATE, "sAMAccountName", &|o| o.sam.clone());
        let mut groups: Vec<&Vec<(usize, String)>> = proxy.values().filter(|h| h.len() > 1).collect();
        groups.sort();
        for holders in groups {
            let keeper = holders
                .iter()
                .min_by_key(|(i, value)| {
                    let o = self.objects.get(*i);
                    let primary = value.starts_with("SMTP:");
                    let is_mail = o
                        .and_then(|o| o.mail.as_deref())
                        .zip(value.split_once(':').map(|(_, a)| a))
                        .is_some_and(|(m, a)| m.eq_ignore_ascii_case(a));
                    (!primary, !is_mail, o.map(Obj::when_created_key), o.map(|o| (o.source, o.dn.clone())))
                })
                .map(|(i, _)| *i);
            let ids: Vec<usize> = holders.iter().map(|(h, _)| *h).collect();
            for (i, value) in holders {
                let Some(o) = self.objects.get(*i) else { continue };
                let f = Finding::new(
                    &cat::PROXY_DUPLICATE,
                    &o.subject(&self.sources),
                    "proxyAddresses",
                    value,
                    format!("also held by {}", self.describe(&ids, *i, ids.len() - 1)),
                );
                extra.push((*i, f));
                if Some(*i) != keeper {
                    removals.push((*i, value.clone(), &cat::PROXY_DUPLICATE));
                }
            }
        }
        for (i, o) in self.objects.iter().enumerate() {
            let Some(u) = &o.upn else { continue };
            let Some(holders) = smtp.get(&u.to_lowercase()) else { continue };
            let others: Vec<usize> = holders.iter().copied().filter(|h| *h != i).collect();
            if others.is_empty() {
                continue;
            }
            let f = Finding::new(
                &cat::ADDRESS_CONFLICT,
                &o.subject(&self.sources),
                "userPrincipalName",
                u,
                format!("equals an SMTP address of {}", self.describe(&others, i, others.len())),
            );
            extra.push((i, f));
        }
    }

    /// The anchor audit against the tenant, with duplicates between sources and tenant.
    /// Returns the cloud object each on-premises object will join (by object index).
    fn match_tenant(
        &mut self,
        tenant: Option<&TenantSnapshot>,
        extra: &mut Vec<(usize, Finding)>,
    ) -> HashMap<usize, usize> {
        let mut targets = HashMap::new();
        // ImmutableIDs claimed twice among the sources.
        let mut by_anchor: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, o) in self.objects.iter().enumerate() {
            if let Some(id) = &o.immutable_id {
                by_anchor.entry(id.as_str()).or_default().push(i);
            }
        }
        for holders in by_anchor.values().filter(|h| h.len() > 1) {
            for &i in holders {
                let Some(o) = self.objects.get(i) else { continue };
                extra.push((
                    i,
                    Finding::new(
                        &cat::ANCHOR_DUPLICATE,
                        &o.subject(&self.sources),
                        "objectGUID",
                        o.immutable_id.as_deref().unwrap_or(""),
                        format!("the same ImmutableID as {}", self.describe(holders, i, holders.len() - 1)),
                    ),
                ));
            }
        }
        let Some(tenant) = tenant else {
            for o in &self.objects {
                self.audit.push(AnchorOutcome {
                    source: self.sources.get(o.source).map(|s| s.name.clone()).unwrap_or_default(),
                    dn: o.dn.clone(),
                    object_class: o.class.clone(),
                    immutable_id: o.immutable_id.clone(),
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
        let mut by_upn: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_primary: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_proxy: HashMap<String, Vec<usize>> = HashMap::new();
        for (c, obj) in cloud.iter().enumerate() {
            if let Some(id) = &obj.immutable_id {
                by_immutable.insert(id.as_str(), c);
            }
            if let Some(u) = &obj.upn {
                by_upn.entry(u.to_lowercase()).or_default().push(c);
            }
            if let Some(p) = obj.primary_smtp() {
                by_primary.entry(p).or_default().push(c);
            }
            for p in &obj.proxy_addresses {
                by_proxy.entry(p.to_lowercase()).or_default().push(c);
            }
        }
        for (i, o) in self.objects.iter().enumerate() {
            let subject = o.subject(&self.sources);
            let kind = o.cloud_kind();
            let mut row = AnchorOutcome {
                source: subject.source.clone(),
                dn: o.dn.clone(),
                object_class: o.class.clone(),
                immutable_id: o.immutable_id.clone(),
                outcome: MatchOutcome::New,
                cloud_id: None,
                detail: String::new(),
            };
            let mut conflict = |rule: &'static Rule,
                                c: &CloudObject,
                                attr: &str,
                                value: &str,
                                why: String,
                                row: &mut AnchorOutcome| {
                row.outcome = MatchOutcome::Conflict;
                row.cloud_id = Some(c.id.clone());
                row.detail = why.clone();
                extra.push((i, Finding::new(rule, &subject, attr, value, why)));
            };
            let hard =
                o.immutable_id.as_deref().and_then(|id| by_immutable.get(id)).and_then(|c| cloud.get(*c));
            let mut target = None;
            let mut ambiguous: Vec<String> = Vec::new();
            if o.immutable_id.is_none() {
                row.outcome = MatchOutcome::NoAnchor;
            } else if let Some(c) = hard {
                if c.kind != kind {
                    conflict(
                        &cat::MATCH_OBJECT_TYPE_MISMATCH,
                        c,
                        "objectClass",
                        &o.class,
                        format!(
                            "hard match on the ImmutableID with the cloud {} {} ({})",
                            c.kind.as_str(),
                            label(c),
                            c.id
                        ),
                        &mut row,
                    );
                } else {
                    row.outcome = MatchOutcome::HardMatch;
                    row.cloud_id = Some(c.id.clone());
                    row.detail = format!("onPremisesImmutableId of {}", label(c));
                    target = Some(c);
                }
            } else {
                let upn_hits: Vec<usize> = match (kind, &o.upn) {
                    (CloudKind::User, Some(u)) => by_upn.get(&u.to_lowercase()).cloned().unwrap_or_default(),
                    _ => Vec::new(),
                };
                let smtp_hits: Vec<usize> = match (kind, o.primary_smtp()) {
                    (CloudKind::User, Some(p)) => by_primary.get(&p).cloned().unwrap_or_default(),
                    // Mail-enabled groups and contacts soft-match on proxyAddresses.
                    (_, Some(p)) => by_proxy.get(&format!("smtp:{p}")).cloned().unwrap_or_default(),
                    (_, None) => Vec::new(),
                };
                let mut all: Vec<usize> = upn_hits.iter().chain(&smtp_hits).copied().collect();
                all.sort_unstable();
                all.dedup();
                let via_upn = !upn_hits.is_empty();
                let (attr, value) = if via_upn {
                    ("userPrincipalName", o.upn.clone().unwrap_or_default())
                } else {
                    ("proxyAddresses", o.primary_smtp().unwrap_or_default())
                };
                match all.as_slice() {
                    [] => {
                        row.detail =
                            "no cloud object with its ImmutableID, UPN or primary SMTP address".into()
                    }
                    [c] => {
                        if let Some(c) = cloud.get(*c) {
                            if c.kind != kind {
                                conflict(
                                    &cat::MATCH_OBJECT_TYPE_MISMATCH,
                                    c,
                                    attr,
                                    &value,
                                    format!(
                                        "soft match with the cloud {} {} ({})",
                                        c.kind.as_str(),
                                        label(c),
                                        c.id
                                    ),
                                    &mut row,
                                );
                            } else if c.immutable_id.is_some() || c.sync_enabled {
                                conflict(
                                    &cat::MATCH_INVALID_SOFT_MATCH,
                                    c,
                                    attr,
                                    &value,
                                    format!(
                                        "InvalidSoftMatch: the cloud {} {} ({}) is already synchronized with ImmutableID {}",
                                        c.kind.as_str(),
                                        label(c),
                                        c.id,
                                        c.immutable_id.as_deref().unwrap_or("(set by another engine)")
                                    ),
                                    &mut row,
                                );
                            } else if !c.admin_roles.is_empty() {
                                conflict(
                                    &cat::MATCH_ADMIN_ROLE,
                                    c,
                                    attr,
                                    &value,
                                    format!(
                                        "the cloud user {} ({}) holds {}: it is never soft-matched, so a second account would be created",
                                        label(c),
                                        c.id,
                                        c.admin_roles.join(", ")
                                    ),
                                    &mut row,
                                );
                            } else {
                                row.outcome = if via_upn {
                                    MatchOutcome::SoftMatchUpn
                                } else {
                                    MatchOutcome::SoftMatchSmtp
                                };
                                row.cloud_id = Some(c.id.clone());
                                row.detail = format!(
                                    "same {} as the cloud {} {}",
                                    if via_upn { "UPN" } else { "primary SMTP address" },
                                    c.kind.as_str(),
                                    label(c)
                                );
                                extra.push((
                                    i,
                                    Finding::new(
                                        &cat::MATCH_SOFT,
                                        &subject,
                                        attr,
                                        &value,
                                        format!(
                                            "will take over the cloud {} {} ({})",
                                            c.kind.as_str(),
                                            label(c),
                                            c.id
                                        ),
                                    ),
                                ));
                                target = Some(c);
                            }
                        }
                    }
                    many => {
                        ambiguous = many.iter().filter_map(|c| cloud.get(*c)).map(|c| c.id.clone()).collect();
                        let names: Vec<String> = many
                            .iter()
                            .filter_map(|c| cloud.get(*c))
                            .map(|c| format!("{} ({})", label(c), c.id))
                            .collect();
                        if let Some(first) = many.first().and_then(|c| cloud.get(*c)) {
                            conflict(
                                &cat::MATCH_AMBIGUOUS,
                                first,
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
            let target_id = target.map(|t| t.id.as_str());
            if let Some(t) = target.and_then(|t| cloud.iter().position(|c| c.id == t.id)) {
                targets.insert(i, t);
            }
            // Values the tenant already holds on another object.
            let involved = row.cloud_id.clone();
            let not_ours = |c: &&CloudObject| {
                Some(c.id.as_str()) != target_id
                    && Some(&c.id) != involved.as_ref()
                    && !ambiguous.contains(&c.id)
            };
            if let Some(u) = &o.upn
                && let Some(holders) = by_upn.get(&u.to_lowercase())
            {
                for c in holders.iter().filter_map(|c| cloud.get(*c)).filter(not_ours) {
                    extra.push((
                        i,
                        Finding::new(
                            &cat::UPN_DUPLICATE,
                            &subject,
                            "userPrincipalName",
                            u,
                            format!("the tenant's {} {} ({}) has it", c.kind.as_str(), label(c), c.id),
                        ),
                    ));
                }
            }
            for p in &o.proxies {
                let Some(holders) = by_proxy.get(&p.to_lowercase()) else { continue };
                for c in holders.iter().filter_map(|c| cloud.get(*c)).filter(not_ours) {
                    extra.push((
                        i,
                        Finding::new(
                            &cat::PROXY_DUPLICATE,
                            &subject,
                            "proxyAddresses",
                            p,
                            format!("the tenant's {} {} ({}) has it", c.kind.as_str(), label(c), c.id),
                        ),
                    ));
                }
            }
            self.audit.push(row);
        }
        targets
    }

    /// The UPN suffix that fixes use in each source: the most used verified suffix (with tenant
    /// data) or the most used routable one.
    fn target_suffixes(&self, tenant: Option<&TenantSnapshot>) -> HashMap<usize, String> {
        let mut counts: HashMap<usize, BTreeMap<String, u64>> = HashMap::new();
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

    fn remediations(
        &self,
        tenant: Option<&TenantSnapshot>,
        targets: &HashMap<usize, usize>,
        removals: Vec<(usize, String, &'static Rule)>,
    ) -> Vec<Remediation> {
        let suffixes = self.target_suffixes(tenant);
        // Every UPN and SMTP address in use, and who holds it (usize::MAX for the tenant).
        let mut taken: HashMap<String, usize> = HashMap::new();
        for (i, o) in self.objects.iter().enumerate() {
            for v in o.upn.iter().map(|u| u.to_lowercase()).chain(o.smtp_addresses()) {
                taken.entry(v).or_insert(i);
            }
        }
        if let Some(t) = tenant {
            let matched: BTreeSet<usize> = targets.values().copied().collect();
            for (_, obj) in t.objects.iter().enumerate().filter(|(c, _)| !matched.contains(c)) {
                for v in obj.upn.iter().map(|u| u.to_lowercase()) {
                    taken.entry(v).or_insert(usize::MAX);
                }
            }
        }
        let mut out: BTreeMap<(usize, &'static str, Option<String>), Remediation> = BTreeMap::new();
        for (index, issue) in &self.issues {
            let Some(o) = self.objects.get(*index) else { continue };
            let update = match &issue.proposal {
                Proposal::None => continue,
                Proposal::Edit(v) => Some(v.clone()),
                Proposal::Upn { local, domain } => {
                    let Some(domain) = domain.clone().or_else(|| suffixes.get(&o.source).cloned()) else {
                        continue;
                    };
                    let Some(v) = unique_upn(local, &domain, *index, &mut taken) else { continue };
                    Some(v)
                }
            };
            if update.as_deref() == issue.value.as_deref() {
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
            let action = if update.is_some() { Action::Edit } else { Action::Remove };
            out.insert(
                (*index, issue.attribute, issue.value.clone()),
                Remediation {
                    source: self.source_name(o.source),
                    dn: o.dn.clone(),
                    common_name: o.cn.clone(),
                    object_class: o.class.clone(),
                    attribute: issue.attribute.to_owned(),
                    value: issue.value.clone(),
                    update,
                    action,
                    error: kinds.join(","),
                    rules: ids,
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

    fn suffix_inventory(&self, tenant: Option<&TenantSnapshot>) -> Vec<SuffixRow> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for o in self.objects.iter().filter(|o| rules::is_user(&o.class)) {
            let key = match o.upn.as_deref().map(address::split_address) {
                None => "(none)".to_owned(),
                Some(Ok((_, d))) => d.to_lowercase(),
                Some(Err(_)) => "(invalid)".to_owned(),
            };
            *counts.entry(key).or_default() += 1;
        }
        let fallback = tenant
            .and_then(|t| t.initial_domain())
            .map(str::to_owned)
            .unwrap_or_else(|| "<tenant>.onmicrosoft.com".into());
        let mut rows: Vec<SuffixRow> = counts
            .into_iter()
            .map(|(suffix, users)| {
                let verified_domain = tenant.and_then(|t| t.verified_domain(&suffix));
                let class = address::classify_domain(&suffix);
                let (routable, reason, registrable) = match (&class, verified_domain) {
                    _ if suffix.starts_with('(') => (false, "no usable UPN".to_owned(), None),
                    (DomainClass::Routable { registrable }, _) => {
                        (true, "routable".to_owned(), Some(registrable.clone()))
                    }
                    (_, Some(_)) => (true, "verified in the tenant".to_owned(), None),
                    (DomainClass::NonRoutable { reason }, None)
                    | (DomainClass::Malformed { reason }, None) => (false, reason.clone(), None),
                };
                let cloud_suffix = match (tenant, verified_domain) {
                    (_, Some(d)) => d.name.clone(),
                    (None, None) if routable => suffix.clone(),
                    _ => fallback.clone(),
                };
                SuffixRow {
                    users,
                    routable,
                    reason,
                    registrable_domain: registrable,
                    verified: tenant.map(|_| verified_domain.is_some()),
                    authentication: verified_domain.map(|d| d.authentication.clone()),
                    cloud_suffix,
                    suffix,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.users.cmp(&a.users).then_with(|| a.suffix.cmp(&b.suffix)));
        rows
    }

    fn federation(&self, suffixes: &[SuffixRow], findings: &mut Vec<Finding>) -> Federation {
        let forest_subject = |dn: &str| Subject { source: "all".into(), dn: dn.into(), ..Subject::default() };
        let routable: Vec<&SuffixRow> =
            suffixes.iter().filter(|s| s.routable && !s.suffix.ends_with(".onmicrosoft.com")).collect();
        let top: BTreeSet<String> = routable.iter().filter_map(|s| s.registrable_domain.clone()).collect();
        let subdomains: Vec<String> = routable
            .iter()
            .filter(|s| s.registrable_domain.as_deref().is_some_and(|r| r != s.suffix))
            .map(|s| s.suffix.clone())
            .collect();
        if top.len() > 1 {
            let list = top.iter().cloned().collect::<Vec<_>>().join(", ");
            findings.push(Finding::new(
                &cat::FEDERATION_MULTIPLE_DOMAINS,
                &forest_subject("UPN suffixes"),
                "userPrincipalName",
                &list,
                format!("{} top-level domains: {list}", top.len()),
            ));
        }
        for s in &subdomains {
            let parent = routable
                .iter()
                .find(|r| r.suffix == *s)
                .and_then(|r| r.registrable_domain.clone())
                .unwrap_or_default();
            findings.push(Finding::new(
                &cat::FEDERATION_SUBDOMAIN,
                &Subject { upn_suffix: s.clone(), ..forest_subject(s) },
                "userPrincipalName",
                s,
                format!("{s} is a sub-domain of {parent}"),
            ));
        }
        if top.len() > 1 && !subdomains.is_empty() {
            findings.push(Finding::new(
                &cat::FEDERATION_SUBDOMAINS_AND_MULTIPLE_DOMAINS,
                &forest_subject("UPN suffixes"),
                "userPrincipalName",
                &subdomains.join(", "),
                format!("sub-domains {} with {} top-level domains", subdomains.join(", "), top.len()),
            ));
        }
        // Forests: the DC roots of the objects, a child domain folded into its parent.
        let roots: BTreeSet<&str> =
            self.objects.iter().map(|o| o.dc_root.as_str()).filter(|r| !r.is_empty()).collect();
        let forests: Vec<String> = roots
            .iter()
            .filter(|r| !roots.iter().any(|p| p != *r && r.ends_with(&format!(".{p}"))))
            .map(|r| (*r).to_owned())
            .collect();
        if forests.len() > 1 {
            findings.push(Finding::new(
                &cat::FEDERATION_MULTIPLE_FORESTS,
                &forest_subject("sources"),
                "-",
                &forests.join(", "),
                format!("{} forests: {}", forests.len(), forests.join(", ")),
            ));
        }
        Federation { top_level_domains: top.into_iter().collect(), subdomains, forests }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        generated_at: String,
        generator: String,
        tenant: Option<&TenantSnapshot>,
        findings: Vec<Finding>,
        remediations: Vec<Remediation>,
        anchor_audit: Vec<AnchorOutcome>,
        upn_suffixes: Vec<SuffixRow>,
        federation: Federation,
    ) -> Report {
        let mut totals = Totals::default();
        let mut per_rule: BTreeMap<&str, u64> = BTreeMap::new();
        let mut per_object: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        for f in &findings {
            *per_rule.entry(f.rule).or_default() += 1;
            let entry = per_object.entry((f.source.as_str(), f.dn.as_str())).or_default();
            match f.severity {
                Severity::Error => {
                    totals.errors += 1;
                    entry.0 += 1;
                }
                Severity::Warning => {
                    totals.warnings += 1;
                    entry.1 += 1;
                }
                Severity::Info => totals.infos += 1,
            }
        }
        // Objects are what the anchor audit lists (assessed and unreadable ones); forest-wide
        // subjects (suffixes, settings) are not.
        let object_keys: BTreeSet<(&str, &str)> =
            anchor_audit.iter().map(|a| (a.source.as_str(), a.dn.as_str())).collect();
        for (key, (e, w)) in &per_object {
            if !object_keys.contains(key) {
                continue;
            }
            if *e > 0 {
                totals.objects_with_errors += 1;
            } else if *w > 0 {
                totals.objects_with_warnings += 1;
            }
        }
        totals.objects = self.objects.len() as u64;
        totals.skipped = self.sources.iter().map(|s| s.skipped.values().sum::<u64>()).sum();
        let by_rule = cat::ALL
            .iter()
            .filter_map(|r| {
                per_rule.get(r.id).map(|count| RuleCount {
                    rule: r.id,
                    severity: r.severity,
                    attribute: r.attribute,
                    summary: r.summary,
                    count: *count,
                })
            })
            .collect();
        let limit = if self.options.worst_objects == 0 { 10 } else { self.options.worst_objects };
        let mut worst: Vec<ObjectScore> = per_object
            .iter()
            .filter(|(_, (e, w))| e + w > 0)
            .map(|((source, dn), (e, w))| ObjectScore {
                source: (*source).to_owned(),
                dn: (*dn).to_owned(),
                errors: *e,
                warnings: *w,
            })
            .collect();
        worst.sort_by(|a, b| {
            (b.errors, b.warnings).cmp(&(a.errors, a.warnings)).then_with(|| a.dn.cmp(&b.dn))
        });
        worst.truncate(limit);
        let mut anchors = AnchorCounts { compared_with_tenant: tenant.is_some(), ..AnchorCounts::default() };
        for a in &anchor_audit {
            match a.outcome {
                MatchOutcome::HardMatch => anchors.hard_match += 1,
                MatchOutcome::SoftMatchUpn | MatchOutcome::SoftMatchSmtp => anchors.soft_match += 1,
                MatchOutcome::New => anchors.new += 1,
                MatchOutcome::Conflict => anchors.conflict += 1,
                MatchOutcome::NoAnchor => anchors.no_anchor += 1,
                MatchOutcome::NotCompared => {}
            }
        }
        let verdict = if totals.errors > 0 {
            Verdict::Errors
        } else if totals.warnings > 0 {
            Verdict::Warnings
        } else {
            Verdict::Ready
        };
        Report {
            generated_at,
            generator,
            verdict,
            sources: self.sources.clone(),
            tenant: tenant.map(|t| TenantSummary {
                initial_domain: t.initial_domain().map(str::to_owned),
                verified_domains: t
                    .domains
                    .iter()
                    .filter(|d| d.verified)
                    .map(|d| (d.name.clone(), d.authentication.clone()))
                    .collect(),
                users: t.objects.iter().filter(|o| o.kind == CloudKind::User).count() as u64,
                groups: t.objects.iter().filter(|o| o.kind == CloudKind::Group).count() as u64,
                contacts: t.objects.iter().filter(|o| o.kind == CloudKind::Contact).count() as u64,
            }),
            totals,
            by_rule,
            upn_suffixes,
            federation,
            anchors,
            worst_objects: worst,
            findings,
            remediations,
            anchor_audit,
        }
    }
}

fn label(c: &CloudObject) -> String {
    c.upn
        .clone()
        .or_else(|| c.mail.clone())
        .or_else(|| c.display_name.clone())
        .unwrap_or_else(|| c.id.clone())
}

/// `local@domain`, made unique against every UPN and SMTP address held by another object by
/// appending 2, 3, ... to the local part.
fn unique_upn(local: &str, domain: &str, owner: usize, taken: &mut HashMap<String, usize>) -> Option<String> {
    for n in 1..1000u32 {
        let candidate_local = if n == 1 {
            local.to_owned()
        } else {
            let digits = n.to_string();
            let keep = 64usize.saturating_sub(digits.len());
            format!("{}{digits}", local.chars().take(keep).collect::<String>())
        };
        let candidate = format!("{candidate_local}@{domain}");
        let key = candidate.to_lowercase();
        match taken.get(&key) {
            Some(h) if *h != owner => continue,
            _ => {
                taken.insert(key, owner);
                return Some(candidate);
            }
        }
    }
    None
}

/// Why IdFix would leave this object out, if it would.
fn skip_reason(object: &CsObject) -> Option<&'static str> {
    let a = &object.attributes;
    let cn = a
        .first_text("cn")
        .map(str::to_owned)
        .unwrap_or_else(|| object.dn.rdn().map(|r| r.value().to_owned()).unwrap_or_default());
    let lower = cn.to_lowercase();
    if lower.ends_with('$') {
        return Some("cn-ends-with-dollar");
    }
    if SKIPPED_CN_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Some("system-account-name");
    }
    if object.dn.as_str().to_ascii_uppercase().contains("\\0ACNF:") || cn.contains("\nCNF:") {
        return Some("replication-conflict");
    }
    if matches!(a.get("isCriticalSystemObject"), Some(AttrValues::Boolean(v)) if v.first() == Some(&true)) {
        return Some("critical-system-object");
    }
    let class = object.object_class.to_ascii_lowercase();
    if class == "user"
        && let Some(sam) = a.first_text("sAMAccountName")
    {
        let sam = sam.to_lowercase();
        if SKIPPED_SAM_PREFIXES.iter().any(|p| sam.starts_with(p)) {
            return Some("service-account");
        }
    }
    if class == "group" {
        let group_type = match a.get("groupType") {
            Some(AttrValues::Integer(v)) => v.first().copied(),
            _ => None,
        };
        // AD's default group (no groupType read) is a global security group.
        let security = group_type.is_none_or(|t| t & 0x8000_0000 != 0);
        if security && !a.contains("mail") {
            return Some("security-group-without-mail");
        }
        if !security && !a.contains("proxyAddresses") {
            return Some("distribution-group-without-proxy-addresses");
        }
    }
    None
}

/// `corp.example.com` for `CN=x,OU=y,DC=corp,DC=example,DC=com`.
fn dc_root(dn: &str) -> String {
    syncctl_core::Dn::parse(dn)
        .ok()
        .map(|d| {
            d.rdns()
                .iter()
                .filter(|r| r.attr_type().eq_ignore_ascii_case("dc"))
                .map(|r| r.value().to_lowercase())
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default()
}

fn leaf_value(dn: &str) -> String {
    syncctl_core::Dn::parse(dn).ok().and_then(|d| d.rdn().map(|r| r.value().to_owned())).unwrap_or_default()
}

fn check_mail_settings(mail: &MailSettings, tenant: Option<&TenantSnapshot>, findings: &mut Vec<Finding>) {
    let subject = Subject { source: "config".into(), dn: "[mail]".into(), ..Subject::default() };
    let sender = mail.sender.trim();
    let Ok((_, domain)) = address::split_address(sender) else {
        findings.push(Finding::new(
            &cat::MAIL_SENDER_INVALID,
            &subject,
            "sender",
            sender,
            "not an SMTP address".into(),
        ));
        return;
    };
    if address::dot_atom_problem(sender.split('@').next().unwrap_or("")).is_some()
        || address::domain_syntax_problem(domain).is_some()
    {
        findings.push(Finding::new(
            &cat::MAIL_SENDER_INVALID,
            &subject,
            "sender",
            sender,
            "not a deliverable SMTP address".into(),
        ));
    }
    match tenant {
        Some(t) if t.verified_domain(domain).is_none() => findings.push(Finding::new(
            &cat::MAIL_SENDER_UNVERIFIED,
            &subject,
            "sender",
            sender,
            format!("{} is not a verified domain of the tenant", domain.to_lowercase()),
        )),
        None if !address::classify_domain(domain).is_routable() => findings.push(Finding::new(
            &cat::MAIL_SENDER_UNVERIFIED,
            &subject,
            "sender",
            sender,
            format!("{} is not routable, so it cannot be a verified domain", domain.to_lowercase()),
        )),
        _ => {}
    }
    if let Some(account) = &mail.relay_account {
        let relay_domain = address::split_address(account).map(|(_, d)| d.to_lowercase()).unwrap_or_default();
        if !relay_domain.eq_ignore_ascii_case(domain) {
            findings.push(Finding::new(
                &cat::MAIL_SENDER_RELAY_MISMATCH,
                &subject,
                "sender",
                sender,
                format!(
                    "the sender's domain {} differs from the relay account {account}'s domain {}",
                    domain.to_lowercase(),
                    if relay_domain.is_empty() { "(none)" } else { relay_domain.as_str() }
                ),
            ));
        }
    }
    let mut problems = Vec::new();
    if let Some(p) = mail.relay_port
        && p != 587
    {
        problems.push(format!("port {p} (Office 365 expects 587)"));
    }
    if let Some(s) = &mail.relay_security
        && !s.eq_ignore_ascii_case("starttls")
    {
        problems.push(format!("security {s} (Office 365 expects starttls)"));
    }
    if mail.relay_port.is_some() && mail.relay_account.is_none() {
        problems.push("no relay account (Office 365 requires AUTH)".into());
    }
    if !problems.is_empty() {
        let subject = Subject { source: "config".into(), dn: "[mail.smtp]".into(), ..Subject::default() };
        let relay =
            format!("{}:{}", mail.relay_host.as_deref().unwrap_or("?"), mail.relay_port.unwrap_or(587));
        findings.push(Finding::new(&cat::MAIL_RELAY_INSECURE, &subject, "smtp", &relay, problems.join("; ")));
    }
}

#[cfg(test)]
mod tests;
