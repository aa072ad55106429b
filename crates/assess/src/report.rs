//! The report: what an assessment found, in the form every renderer reads.
//!
//! Everything here is plain data (serde `Serialize`): `--json` prints it as is, and the CSV,
//! HTML and LDIF renderers read nothing else.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalogue::{Rule, Severity};

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The syncctl version that made it.
    pub generator: String,
    /// `ready`, `warnings` or `errors`.
    pub verdict: Verdict,
    /// What was read.
    pub sources: Vec<SourceSummary>,
    /// The tenant data it was compared with, if any.
    pub tenant: Option<TenantSummary>,
    /// Counts.
    pub totals: Totals,
    /// Finding counts per rule, catalogue order, rules without findings left out.
    pub by_rule: Vec<RuleCount>,
    /// Every UPN suffix with its users.
    pub upn_suffixes: Vec<SuffixRow>,
    /// Federation readiness.
    pub federation: Federation,
    /// Anchor audit counts.
    pub anchors: AnchorCounts,
    /// The objects with the most errors, then warnings.
    pub worst_objects: Vec<ObjectScore>,
    /// Every finding, by source, DN, attribute and rule.
    pub findings: Vec<Finding>,
    /// Suggested fixes, one per object, attribute and value.
    pub remediations: Vec<Remediation>,
    /// The anchor audit: one row per object assessed.
    pub anchor_audit: Vec<AnchorOutcome>,
}

/// Ready, warnings only, or blocking errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No error and no warning.
    Ready,
    /// Warnings, no error.
    Warnings,
    /// At least one error.
    Errors,
}

impl Verdict {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Warnings => "warnings",
            Self::Errors => "errors",
        }
    }
}

/// One source (a connector) as read.
#[derive(Clone, Debug, Serialize)]
pub struct SourceSummary {
    /// The connector's name.
    pub name: String,
    /// Its kind (`ldap-ad`, `ldap-openldap`, `ldif`).
    pub kind: String,
    /// Where it read from (no secret).
    pub endpoint: String,
    /// Objects the source delivered.
    pub objects_read: u64,
    /// Objects the rules ran on.
    pub objects_assessed: u64,
    /// Objects left out as IdFix leaves them out, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Objects that could not be read (see `anchor-missing` findings).
    pub unreadable: u64,
}

/// The tenant data compared with.
#[derive(Clone, Debug, Serialize)]
pub struct TenantSummary {
    /// The initial `*.onmicrosoft.com` domain.
    pub initial_domain: Option<String>,
    /// Verified domains, with `Managed` / `Federated`.
    pub verified_domains: Vec<(String, String)>,
    /// Cloud users, groups and contacts.
    pub users: u64,
    /// Cloud groups.
    pub groups: u64,
    /// Cloud contacts.
    pub contacts: u64,
}

/// Counts over the whole report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    /// Objects the rules ran on.
    pub objects: u64,
    /// Objects with at least one error.
    pub objects_with_errors: u64,
    /// Objects with warnings but no error.
    pub objects_with_warnings: u64,
    /// Findings by severity.
    pub errors: u64,
    /// Warnings.
    pub warnings: u64,
    /// Infos.
    pub infos: u64,
    /// Objects skipped (all sources).
    pub skipped: u64,
}

/// Findings of one rule.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCount {
    /// The rule.
    pub rule: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// Its attribute.
    pub attribute: &'static str,
    /// Its one-line explanation.
    pub summary: &'static str,
    /// How many findings.
    pub count: u64,
}

/// One UPN suffix.
#[derive(Clone, Debug, Serialize)]
pub struct SuffixRow {
    /// The suffix, lower case (`(none)` for users without a UPN).
    pub suffix: String,
    /// Users with it.
    pub users: u64,
    /// Routable on the internet.
    pub routable: bool,
    /// Why not, or `routable`.
    pub reason: String,
    /// Its registrable domain (`example.com` for `corp.example.com`), when routable.
    pub registrable_domain: Option<String>,
    /// Verified in the tenant (None without tenant data).
    pub verified: Option<bool>,
    /// `Managed` / `Federated` when verified.
    pub authentication: Option<String>,
    /// The suffix the cloud would give these users.
    pub cloud_suffix: String,
}

/// Federation readiness.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Federation {
    /// Registrable (top-level) domains among routable suffixes.
    pub top_level_domains: Vec<String>,
    /// Suffixes that are sub-domains of another domain in use.
    pub subdomains: Vec<String>,
    /// AD forests (DC roots) among the sources.
    pub forests: Vec<String>,
}

/// Anchor audit counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnchorCounts {
    /// True when tenant data was given (otherwise every object is `not-compared`).
    pub compared_with_tenant: bool,
    /// Hard matches.
    pub hard_match: u64,
    /// Soft matches.
    pub soft_match: u64,
    /// New cloud objects.
    pub new: u64,
    /// Conflicts (errors).
    pub conflict: u64,
    /// Objects without a usable anchor.
    pub no_anchor: u64,
}

/// An object and how bad it is.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectScore {
    /// Source name.
    pub source: String,
    /// DN.
    pub dn: String,
    /// Error findings.
    pub errors: u64,
    /// Warning findings.
    pub warnings: u64,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The rule id.
    pub rule: &'static str,
    /// Its severity (the rule's, or raised for this case).
    pub severity: Severity,
    /// IdFix's error kind.
    pub idfix: &'static str,
    /// The source (connector) name; `tenant` or `config` for findings that belong there.
    pub source: String,
    /// The object's DN, or the suffix / domain / setting a forest-wide finding is about.
    pub dn: String,
    /// The object's cn (or the last RDN value).
    pub common_name: String,
    /// Its object type (`user`, `group`, `contact`...).
    pub object_class: String,
    /// The attribute.
    pub attribute: String,
    /// The value concerned (empty when missing).
    pub value: String,
    /// What exactly is wrong with this value.
    pub message: String,
    /// The UPN suffix of the user the finding is about, lower case (`(none)` for a user
    /// without a UPN); for a forest-wide finding about a suffix, that suffix; empty otherwise.
    pub upn_suffix: String,
}

impl Finding {
    /// A finding of `rule` with the rule's severity.
    pub fn new(rule: &Rule, subject: &Subject, attribute: &str, value: &str, message: String) -> Self {
        Self {
            rule: rule.id,
            severity: rule.severity,
            idfix: rule.idfix,
            source: subject.source.clone(),
            dn: subject.dn.clone(),
            common_name: subject.common_name.clone(),
            object_class: subject.object_class.clone(),
            attribute: attribute.to_owned(),
            value: value.to_owned(),
            message,
            upn_suffix: subject.upn_suffix.clone(),
        }
    }
}

/// What a finding is about.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// Source name.
    pub source: String,
    /// DN or forest-wide subject.
    pub dn: String,
    /// cn.
    pub common_name: String,
    /// Object type.
    pub object_class: String,
    /// The user's UPN suffix (see [`Finding::upn_suffix`]).
    pub upn_suffix: String,
}

/// A suggested action on one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Replace the value with `update`.
    Edit,
    /// Remove the value.
    Remove,
}

/// A suggested fix for one value of one object.
#[derive(Clone, Debug, Serialize)]
pub struct Remediation {
    /// Source name.
    pub source: String,
    /// DN.
    pub dn: String,
    /// cn.
    pub common_name: String,
    /// Object type.
    pub object_class: String,
    /// The attribute (schema spelling).
    pub attribute: String,
    /// The current value (None when the attribute is missing).
    pub value: Option<String>,
    /// The suggested value (None for a removal).
    pub update: Option<String>,
    /// Edit or remove.
    pub action: Action,
    /// IdFix error kinds of the findings on this value, joined with `,`.
    pub error: String,
    /// The rules whose findings this fixes.
    pub rules: Vec<&'static str>,
    /// The object holds several values of the attribute (or it is proxyAddresses): the LDIF
    /// deletes and adds this value instead of replacing the attribute.
    pub multi_valued: bool,
}

/// The predicted outcome of one object against the tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchOutcome {
    /// onPremisesImmutableId equal.
    HardMatch,
    /// Same UPN.
    SoftMatchUpn,
    /// Same primary SMTP address.
    SoftMatchSmtp,
    /// A new cloud object.
    New,
    /// An export error (see the finding).
    Conflict,
    /// No tenant data was given.
    NotCompared,
    /// No usable anchor.
    NoAnchor,
}

/// One row of the anchor audit.
#[derive(Clone, Debug, Serialize)]
pub struct AnchorOutcome {
    /// Source name.
    pub source: String,
    /// DN.
    pub dn: String,
    /// Object type.
    pub object_class: String,
    /// The ImmutableID (base64), when the object has one.
    pub immutable_id: Option<String>,
    /// The predicted outcome.
    pub outcome: MatchOutcome,
    /// The cloud object matched or in conflict (its `id`).
    pub cloud_id: Option<String>,
    /// Why.
    pub detail: String,
}
