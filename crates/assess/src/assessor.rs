//! The assessor: takes objects one at a time from any number of sources, runs the per-object
//! rules at once, and keeps only what the whole-population checks need (duplicates, tenant
//! matching, suffix inventory, federation), which run in [`Assessor::finish`].

use std::collections::{BTreeMap, BTreeSet};

use syncctl_core::{AttrValues, CsObject, ImmutableId, ObjectError};

use crate::address::{self, DomainClass};
use crate::catalogue::{self as cat, Rule, Severity};
use crate::report::{
    AnchorCounts, AnchorOutcome, Federation, Finding, MatchOutcome, ObjectScore, Remediation, Report,
    RuleCount, SourceSummary, Subject, SuffixRow, TenantSummary, Totals, Verdict,
};
use crate::rules::{self, RuleContext, ValueIssue};
use crate::tenant::{CloudKind, TenantSnapshot};

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
    /// The ImmutableID the cloud will know it by: mS-DS-ConsistencyGuid when it holds 16
    /// bytes (Entra Connect's sourceAnchor when configured so, and on new installs), else the
    /// objectGUID.
    immutable_id: Option<ImmutableId>,
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
    /// The primary SMTP proxy address as written (`SMTP:a@b`).
    fn primary_proxy(&self) -> Option<&str> {
        self.proxies.iter().find(|p| p.starts_with("SMTP:")).map(String::as_str)
    }
    fn immutable_base64(&self) -> String {
        self.immutable_id.map(|i| i.to_base64()).unwrap_or_default()
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
            immutable_id: match object.attributes.get("mS-DS-ConsistencyGuid") {
                Some(AttrValues::Binary(v)) => {
                    v.first().and_then(|g| ImmutableId::from_object_guid(g).ok()).or(object.immutable_id)
                }
                _ => object.immutable_id,
            },
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
        let mut extra: Vec<Finding> = Vec::new();
        let mut removals: Vec<(usize, String, &'static Rule)> = Vec::new();
        let indexes = Indexes::build(&self.objects, tenant.as_ref());
        self.duplicates(&indexes, &mut extra, &mut removals);
        let targets = self.match_tenant(&indexes, tenant.as_ref(), &mut extra);
        let remediations = self.remediations(&indexes, tenant.as_ref(), &targets, removals);
        drop(indexes);
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
        findings.extend(extra);
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
        // Federation findings matter once a domain is federated: then they are warnings.
        let federated = suffixes
            .iter()
            .any(|s| s.authentication.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("federated")));
        let raise = |mut f: Finding| {
            if federated
                && f.severity == crate::catalogue::Severity::Info
                && f.rule != cat::FEDERATION_SUBDOMAIN.id
            {
                f.severity = crate::catalogue::Severity::Warning;
            }
            f
        };
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
            findings.push(raise(Finding::new(
                &cat::FEDERATION_SUBDOMAINS_AND_MULTIPLE_DOMAINS,
                &forest_subject("UPN suffixes"),
                "userPrincipalName",
                &subdomains.join(", "),
                format!("sub-domains {} with {} top-level domains", subdomains.join(", "), top.len()),
            )));
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
            findings.push(raise(Finding::new(
                &cat::FEDERATION_MULTIPLE_FORESTS,
                &forest_subject("sources"),
                "-",
                &forests.join(", "),
                format!("{} AD domain trees: {}", forests.len(), forests.join(", ")),
            )));
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

mod population;
#[cfg(test)]
mod tests;

use population::Indexes;
