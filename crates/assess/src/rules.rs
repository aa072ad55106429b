//! The per-object rules: each attribute value of one object against IdFix's rules and
//! Microsoft's attribute table. Duplicates, tenant matching and forest-wide checks need every
//! object and live in the assessor.

use syncctl_core::{AttrValues, CsObject};

use crate::address::{self, DomainClass};
use crate::catalogue::{self as cat, Rule, Severity};
use crate::tenant::TenantSnapshot;

/// A finding before it knows its object: rule, severity, message.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The rule.
    pub rule: &'static Rule,
    /// The severity (the rule's unless raised).
    pub severity: Severity,
    /// What exactly is wrong.
    pub message: String,
}

/// What fixing a value would take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// Nothing can be suggested.
    None,
    /// Replace with this value.
    Edit(String),
    /// A UPN rebuilt from this local part and domain; `domain: None` means the suffix must be
    /// replaced by the forest's target suffix.
    Upn {
        /// Local part.
        local: String,
        /// Domain, or None to use the target suffix.
        domain: Option<String>,
    },
}

/// The findings on one value of one attribute, and how to fix them.
#[derive(Clone, Debug)]
pub struct ValueIssue {
    /// Attribute (schema spelling).
    pub attribute: &'static str,
    /// The value (None when the attribute is missing).
    pub value: Option<String>,
    /// The findings.
    pub hits: Vec<Hit>,
    /// The suggested fix.
    pub proposal: Proposal,
    /// True when the object holds several values of the attribute (or it is proxyAddresses):
    /// a fix must then delete and add this value rather than replace the attribute.
    pub multi_valued: bool,
}

impl ValueIssue {
    fn new(attribute: &'static str, value: Option<&str>) -> Self {
        Self {
            attribute,
            value: value.map(str::to_owned),
            hits: Vec::new(),
            proposal: Proposal::None,
            multi_valued: attribute == "proxyAddresses",
        }
    }
    fn hit(&mut self, rule: &'static Rule, message: impl Into<String>) {
        self.hits.push(Hit { rule, severity: rule.severity, message: message.into() });
    }
    fn hit_as(&mut self, rule: &'static Rule, severity: Severity, message: impl Into<String>) {
        self.hits.push(Hit { rule, severity, message: message.into() });
    }
}

/// Characters the cloud refuses in a UPN (besides whitespace and non-ASCII).
const UPN_FORBIDDEN: &str = "\\%&*+/=?{}|<>();:,[]\"";
/// Characters Microsoft allows in a UPN besides ASCII letters and digits (and the @).
const UPN_ALLOWED_PUNCT: &str = "'.-_!#^~";
/// Forbidden in smtp proxy addresses and mail (besides whitespace).
const SMTP_FORBIDDEN: &str = "<>();,[]\"";
/// Forbidden in x400 / x500 proxy addresses (besides control characters).
const X500_FORBIDDEN: &str = "[]\"";
/// Forbidden in other proxy address types (besides whitespace).
const OTHER_PROXY_FORBIDDEN: &str = "<>(),[]\"";
/// Forbidden in sAMAccountName (Microsoft's table and IdFix's together).
const SAM_FORBIDDEN: &str = "[]\\\"|,/:<>+=;?*'";
/// Forbidden in targetAddress.
const TARGET_FORBIDDEN: &str = "\\<>();,[]\"";

fn chars_in(value: &str, forbidden: &str, whitespace: bool) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if (forbidden.contains(c) || (whitespace && c.is_whitespace())) && !out.contains(c) {
            out.push(c);
        }
    }
    out
}

fn shown(chars: &str) -> String {
    chars
        .chars()
        .map(|c| if c == ' ' { "space".to_owned() } else { format!("`{}`", c.escape_default()) })
        .collect::<Vec<_>>()
        .join(", ")
}

fn strip(value: &str, forbidden: &str, whitespace: bool) -> String {
    value.chars().filter(|c| !(forbidden.contains(*c) || (whitespace && c.is_whitespace()))).collect()
}

fn truncate(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

fn len(value: &str) -> usize {
    value.chars().count()
}

/// The settings rules read from outside the object.
pub struct RuleContext<'a> {
    /// Tenant data, when given.
    pub tenant: Option<&'a TenantSnapshot>,
}

impl RuleContext<'_> {
    fn verified(&self, domain: &str) -> Option<bool> {
        self.tenant.map(|t| t.verified_domain(domain).is_some())
    }
    fn federated(&self, domain: &str) -> bool {
        self.tenant
            .and_then(|t| t.verified_domain(domain))
            .is_some_and(|d| d.authentication.eq_ignore_ascii_case("federated"))
    }
}

/// True for the object types that carry a sign-in name.
pub fn is_user(object_class: &str) -> bool {
    object_class.eq_ignore_ascii_case("user")
}

/// Checks every attribute of one object.
pub fn check_object(object: &CsObject, ctx: &RuleContext<'_>) -> Vec<ValueIssue> {
    let mut out = Vec::new();
    let attrs = &object.attributes;
    let texts = |name: &str| -> Vec<String> {
        match attrs.get(name) {
            Some(AttrValues::String(v)) => v.clone(),
            Some(other) => other.display_values(),
            None => Vec::new(),
        }
    };
    let user = is_user(&object.object_class);
    // Contacts and mail users (targetAddress) hold addresses of other organizations: their
    // domains are not the tenant's to verify.
    let external = object.object_class.eq_ignore_ascii_case("contact") || attrs.contains("targetAddress");
    let start = out.len();
    let upns = texts("userPrincipalName");
    if user && upns.is_empty() {
        let mut issue = ValueIssue::new("userPrincipalName", None);
        issue.hit(&cat::UPN_MISSING, "the user has no userPrincipalName");
        if let Some(sam) = texts("sAMAccountName").first() {
            let local = sanitize_upn_local(sam);
            if !local.is_empty() {
                issue.proposal = Proposal::Upn { local, domain: None };
            }
        }
        out.push(issue);
    }
    for upn in &upns {
        if let Some(issue) = check_upn(upn, ctx) {
            out.push(issue);
        }
    }
    for mail in texts("mail") {
        if let Some(issue) = check_mail(&mail, external, ctx) {
            out.push(issue);
        }
    }
    for nick in texts("mailNickname") {
        let mut issue = ValueIssue::new("mailNickname", Some(&nick));
        let mut fixed = nick.clone();
        if len(&nick) > 64 {
            issue.hit(&cat::MAILNICKNAME_TOO_LONG, format!("{} characters (at most 64)", len(&nick)));
            fixed = truncate(&fixed, 64);
        }
        if nick.starts_with('.') {
            issue.hit(&cat::MAILNICKNAME_LEADING_PERIOD, "starts with a period");
            fixed = fixed.trim_start_matches('.').to_owned();
        }
        if !nick.is_ascii() {
            issue.hit(&cat::NON_ASCII, format!("non-ASCII {}", address::non_ascii_chars(&nick)));
            fixed = address::to_ascii(&fixed);
        }
        push_edit(&mut out, issue, fixed);
    }
    let mut primaries = Vec::new();
    for proxy in texts("proxyAddresses") {
        if proxy.starts_with("SMTP:") {
            primaries.push(proxy.clone());
        }
        if let Some(issue) = check_proxy(&proxy, external, ctx) {
            out.push(issue);
        }
    }
    if primaries.len() > 1 {
        let mut issue = ValueIssue::new("proxyAddresses", Some(&primaries.join("; ")));
        issue.hit(&cat::PROXY_MULTIPLE_PRIMARY, format!("{} values start with SMTP:", primaries.len()));
        out.push(issue);
    }
    for dn in texts("displayName") {
        let mut issue = ValueIssue::new("displayName", Some(&dn));
        if dn.trim().is_empty() {
            issue.hit(&cat::DISPLAYNAME_BLANK, "the displayName is blank");
            let cn = texts("cn")
                .into_iter()
                .next()
                .unwrap_or_else(|| object.dn.rdn().map(|r| r.value().to_owned()).unwrap_or_default());
            issue.proposal = if cn.trim().is_empty() { Proposal::None } else { Proposal::Edit(cn) };
            out.push(issue);
        } else if len(&dn) > 256 {
            issue.hit(&cat::DISPLAYNAME_TOO_LONG, format!("{} characters (at most 256)", len(&dn)));
            issue.proposal = Proposal::Edit(truncate(&dn, 256));
            out.push(issue);
        }
    }
    for given in texts("givenName") {
        if len(&given) > 64 {
            let mut issue = ValueIssue::new("givenName", Some(&given));
            issue.hit(&cat::GIVENNAME_TOO_LONG, format!("{} characters (at most 64)", len(&given)));
            issue.proposal = Proposal::Edit(truncate(&given, 64));
            out.push(issue);
        }
    }
    for sam in texts("sAMAccountName") {
        let mut issue = ValueIssue::new("sAMAccountName", Some(&sam));
        let mut fixed = sam.clone();
        if user && len(&sam) > 20 {
            issue.hit(
                &cat::SAMACCOUNTNAME_TOO_LONG,
                format!("{} characters (at most 20 for a user)", len(&sam)),
            );
        }
        let bad = chars_in(&sam, SAM_FORBIDDEN, false);
        if !bad.is_empty() {
            issue.hit(&cat::SAMACCOUNTNAME_INVALID_CHARACTER, format!("contains {}", shown(&bad)));
            fixed = strip(&fixed, SAM_FORBIDDEN, false);
        }
        if !sam.is_ascii() {
            issue.hit(&cat::NON_ASCII, format!("non-ASCII {}", address::non_ascii_chars(&sam)));
            fixed = address::to_ascii(&fixed);
        }
        // A sAMAccountName that is still too long is a decision, not an automatic fix.
        if user && len(&fixed) > 20 {
            fixed = sam.clone();
        }
        push_edit(&mut out, issue, fixed);
    }
    for target in texts("targetAddress") {
        let mut issue = ValueIssue::new("targetAddress", Some(&target));
        let mut fixed = target.clone();
        if len(&target) > 256 {
            issue.hit(&cat::TARGETADDRESS_TOO_LONG, format!("{} characters (at most 256)", len(&target)));
        }
        let bad = chars_in(&target, TARGET_FORBIDDEN, false);
        if !bad.is_empty() {
            issue.hit(&cat::TARGETADDRESS_INVALID_CHARACTER, format!("contains {}", shown(&bad)));
            fixed = strip(&fixed, TARGET_FORBIDDEN, false);
        }
        if !target.is_ascii() {
            issue.hit(&cat::NON_ASCII, format!("non-ASCII {}", address::non_ascii_chars(&target)));
            fixed = address::to_ascii(&fixed);
        }
        if len(&fixed) > 256 {
            fixed = target.clone();
        }
        push_edit(&mut out, issue, fixed);
    }
    for issue in out.iter_mut().skip(start) {
        if attrs.get(issue.attribute).is_some_and(|v| v.len() > 1) {
            issue.multi_valued = true;
        }
    }
    out
}

/// Keeps `issue` when it has findings, proposing `fixed` when it differs from the value.
fn push_edit(out: &mut Vec<ValueIssue>, mut issue: ValueIssue, fixed: String) {
    if issue.hits.is_empty() {
        return;
    }
    if issue.value.as_deref() != Some(fixed.as_str()) && !fixed.is_empty() {
        issue.proposal = Proposal::Edit(fixed);
    }
    out.push(issue);
}

/// The local part of a UPN made valid: transliterated, only allowed characters, no leading,
/// trailing or doubled periods, at most 64 characters.
pub fn sanitize_upn_local(local: &str) -> String {
    let ascii = address::to_ascii(local);
    let kept: String =
        ascii.chars().filter(|c| c.is_ascii_alphanumeric() || UPN_ALLOWED_PUNCT.contains(*c)).collect();
    let mut out = String::with_capacity(kept.len());
    for c in kept.chars() {
        if c == '.' && (out.is_empty() || out.ends_with('.')) {
            continue;
        }
        out.push(c);
    }
    let mut out = truncate(&out, 64);
    while out.ends_with('.') {
        out.pop();
    }
    out
}

/// Checks one userPrincipalName.
pub fn check_upn(upn: &str, ctx: &RuleContext<'_>) -> Option<ValueIssue> {
    let mut issue = ValueIssue::new("userPrincipalName", Some(upn));
    if len(upn) > 113 {
        issue.hit(&cat::UPN_TOO_LONG, format!("{} characters (at most 113)", len(upn)));
    }
    let bad = chars_in(upn, UPN_FORBIDDEN, true);
    if !bad.is_empty() {
        issue.hit(&cat::UPN_INVALID_CHARACTER, format!("contains {}", shown(&bad)));
    }
    if !upn.is_ascii() {
        issue.hit(&cat::UPN_DIACRITIC, format!("contains {}", address::non_ascii_chars(upn)));
    }
    let (local, domain) = match address::split_address(upn) {
        Ok(parts) => parts,
        Err(why) => {
            issue.hit(&cat::UPN_FORMAT, why);
            // `name` alone (no @): propose it with the target suffix.
            if !upn.contains('@') {
                let local = sanitize_upn_local(upn);
                if !local.is_empty() {
                    issue.proposal = Proposal::Upn { local, domain: None };
                }
            }
            return Some(issue);
        }
    };
    let others: String = local
        .chars()
        .filter(|c| {
            c.is_ascii()
                && !c.is_ascii_alphanumeric()
                && !UPN_ALLOWED_PUNCT.contains(*c)
                && !UPN_FORBIDDEN.contains(*c)
                && !c.is_whitespace()
        })
        .collect();
    if !others.is_empty() {
        issue.hit(&cat::UPN_INVALID_CHARACTER, format!("contains {}", shown(&others)));
    }
    if len(local) > 64 {
        issue.hit(
            &cat::UPN_LOCAL_PART_TOO_LONG,
            format!("{} characters before the @ (at most 64)", len(local)),
        );
    }
    if len(domain) > 48 {
        issue.hit(&cat::UPN_DOMAIN_TOO_LONG, format!("{} characters after the @ (at most 48)", len(domain)));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") || local.ends_with('&') {
        issue.hit(
            &cat::UPN_LOCAL_PART,
            if local.contains("..") {
                "two periods in a row before the @"
            } else if local.ends_with('&') {
                "the part before the @ ends with &"
            } else {
                "the part before the @ starts or ends with a period"
            },
        );
    }
    let mut replace_domain = false;
    let domain_ascii_ok = domain.is_ascii();
    if domain_ascii_ok {
        let verified = ctx.verified(domain);
        match address::classify_domain(domain) {
            DomainClass::Malformed { reason } => {
                // Forbidden characters were already reported; do not report them twice.
                if chars_in(domain, UPN_FORBIDDEN, true).is_empty() {
                    issue.hit(&cat::UPN_DOMAIN_PART, reason);
                }
            }
            DomainClass::NonRoutable { reason } => {
                if verified != Some(true) {
                    issue.hit(&cat::UPN_SUFFIX_NON_ROUTABLE, format!("@{}: {reason}", domain.to_lowercase()));
                    replace_domain = true;
                }
            }
            DomainClass::Routable { .. } => {
                if verified == Some(false) {
                    issue.hit(
                        &cat::UPN_SUFFIX_UNVERIFIED,
                        format!("{} is not a verified domain of the tenant", domain.to_lowercase()),
                    );
                }
            }
        }
    }
    let federation: String = local
        .chars()
        .filter(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || ".-_".contains(*c)))
        .filter(|c| !UPN_FORBIDDEN.contains(*c) && !c.is_whitespace())
        .collect();
    if !federation.is_empty() {
        let (severity, note) = if ctx.federated(domain) {
            (Severity::Warning, "its domain is federated")
        } else {
            (Severity::Info, "only if its domain is federated")
        };
        issue.hit_as(
            &cat::UPN_FEDERATION_CHARACTER,
            severity,
            format!("contains {} ({note})", shown(&federation)),
        );
    }
    if issue.hits.is_empty() {
        return None;
    }
    // Propose a valid local part, keeping the domain only when it is a routable domain as
    // written (case aside) or one the tenant verified: a domain that would need cleaning (`corp_x`, `münchen`) is not the
    // same domain, so the forest's target suffix replaces it. A UPN whose only findings are
    // informational or an unverified (but routable) suffix gets no proposal: verifying the
    // domain is the fix.
    let needs_fix = issue
        .hits
        .iter()
        .any(|h| h.rule.id != cat::UPN_FEDERATION_CHARACTER.id && h.rule.id != cat::UPN_SUFFIX_UNVERIFIED.id);
    if needs_fix {
        let local_fixed = sanitize_upn_local(local);
        let keep_domain = !replace_domain
            && domain.is_ascii()
            && domain.len() <= 48
            && (address::classify_domain(domain).is_routable() || ctx.verified(domain) == Some(true));
        if !local_fixed.is_empty() {
            let domain = keep_domain.then(|| domain.to_owned());
            issue.proposal = Proposal::Upn { local: local_fixed, domain };
        }
    }
    Some(issue)
}

/// What is wrong with an SMTP address's syntax: a local dot-atom, a domain of labels. Whether
/// the domain routes is [`domain_hit`]'s question.
fn smtp_format_problem(addr: &str) -> Option<String> {
    let (local, domain) = match address::split_address(addr) {
        Ok(p) => p,
        Err(e) => return Some(e),
    };
    if let Some(p) = address::dot_atom_problem(local) {
        return Some(p);
    }
    if address::is_ip_literal(domain) {
        return None;
    }
    address::domain_syntax_problem(domain)
}

/// True when `cleaned` is a fix worth proposing for the SMTP address `original`: valid, and
/// neither of them on an IP address (an address on `[10.0.0.1]` needs a real domain, which only
/// its owner can choose).
fn fixable_smtp(original: &str, cleaned: &str) -> bool {
    let on_ip = |a: &str| {
        a.rsplit_once('@').is_some_and(|(_, d)| {
            address::is_ip_literal(d)
                || address::is_ip_literal(d.trim_start_matches('[').trim_end_matches(']'))
        })
    };
    smtp_format_problem(cleaned).is_none() && !on_ip(original) && !on_ip(cleaned)
}

/// The routability finding for an SMTP address's domain: not routable (`.local`, `.int`, an
/// unknown top-level domain, an IP address) unless the tenant verified it, or (with tenant data)
/// routable but not verified. External addresses (contacts, mail users) are not the tenant's.
fn domain_hit(addr: &str, external: bool, ctx: &RuleContext<'_>) -> Option<(&'static Rule, String)> {
    let (_, domain) = address::split_address(addr).ok()?;
    if external || address::domain_syntax_problem(domain).is_some() && !address::is_ip_literal(domain) {
        return None;
    }
    let lower = domain.to_lowercase();
    let verified = ctx.verified(domain);
    match address::classify_domain(domain) {
        DomainClass::NonRoutable { reason } if verified != Some(true) => {
            Some((&cat::ADDRESS_DOMAIN_NON_ROUTABLE, format!("@{lower}: {reason}")))
        }
        DomainClass::Routable { .. } if verified == Some(false) => {
            Some((&cat::ADDRESS_DOMAIN_UNVERIFIED, format!("{lower} is not a verified domain of the tenant")))
        }
        _ => None,
    }
}

/// Checks one mail value.
pub fn check_mail(mail: &str, external: bool, ctx: &RuleContext<'_>) -> Option<ValueIssue> {
    let mut issue = ValueIssue::new("mail", Some(mail));
    if len(mail) > 256 {
        issue.hit(&cat::MAIL_TOO_LONG, format!("{} characters (at most 256)", len(mail)));
    }
    let bad = chars_in(mail, "<>();,[]\\\"", true);
    if !bad.is_empty() {
        issue.hit(&cat::MAIL_INVALID_CHARACTER, format!("contains {}", shown(&bad)));
    }
    if !mail.is_ascii() {
        issue.hit(&cat::MAIL_DIACRITIC, format!("contains {}", address::non_ascii_chars(mail)));
    }
    let cleaned = address::to_ascii(&strip(mail, "<>();,[]\\\"", true));
    if bad.is_empty()
        && mail.is_ascii()
        && let Some(p) = smtp_format_problem(mail)
    {
        issue.hit(&cat::MAIL_FORMAT, p);
    }
    if let Some((rule, message)) = domain_hit(mail, external, ctx) {
        issue.hit(rule, message);
    }
    if issue.hits.is_empty() {
        return None;
    }
    if cleaned != mail && fixable_smtp(mail, &cleaned) && len(&cleaned) <= 256 {
        issue.proposal = Proposal::Edit(cleaned);
    }
    Some(issue)
}

/// Checks one proxyAddresses value.
pub fn check_proxy(proxy: &str, external: bool, ctx: &RuleContext<'_>) -> Option<ValueIssue> {
    let mut issue = ValueIssue::new("proxyAddresses", Some(proxy));
    if len(proxy) > 256 {
        issue.hit(&cat::PROXY_TOO_LONG, format!("{} characters (at most 256)", len(proxy)));
    }
    let Some((prefix, addr)) = proxy.split_once(':') else {
        issue.hit(&cat::PROXY_FORMAT, "no address type (such as smtp:) before the address");
        return Some(issue);
    };
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        issue.hit(&cat::PROXY_FORMAT, format!("`{prefix}` is not an address type"));
        return Some(issue);
    }
    if addr.is_empty() {
        issue.hit(&cat::PROXY_FORMAT, "the address after the type is empty");
        return Some(issue);
    }
    if addr.starts_with(':') {
        issue.hit(&cat::PROXY_FORMAT, "a colon right after the address type");
        return Some(issue);
    }
    // Microsoft's table: no letters with diacritics, whatever the address type.
    if !addr.is_ascii() {
        issue.hit(&cat::PROXY_DIACRITIC, format!("contains {}", address::non_ascii_chars(addr)));
    }
    let kind = prefix.to_ascii_lowercase();
    let (forbidden, whitespace) = match kind.as_str() {
        "smtp" => (SMTP_FORBIDDEN, true),
        "x500" | "x400" => (X500_FORBIDDEN, false),
        _ => (OTHER_PROXY_FORBIDDEN, true),
    };
    let mut bad = chars_in(addr, forbidden, whitespace);
    if let Some(c) = addr.chars().find(|c| c.is_control())
        && !bad.contains(c)
    {
        bad.push(c);
    }
    if !bad.is_empty() {
        issue.hit(&cat::PROXY_INVALID_CHARACTER, format!("contains {}", shown(&bad)));
    }
    let cleaned: String =
        address::to_ascii(&strip(addr, forbidden, whitespace)).chars().filter(|c| !c.is_control()).collect();
    if kind == "smtp" {
        if bad.is_empty()
            && addr.is_ascii()
            && let Some(p) = smtp_format_problem(addr)
        {
            issue.hit(&cat::PROXY_FORMAT, p);
        }
        if let Some((rule, message)) = domain_hit(addr, external, ctx) {
            issue.hit(rule, message);
        }
        if cleaned != addr && fixable_smtp(addr, &cleaned) {
            issue.proposal = Proposal::Edit(format!("{prefix}:{cleaned}"));
        }
    } else if cleaned != addr && !cleaned.is_empty() {
        issue.proposal = Proposal::Edit(format!("{prefix}:{cleaned}"));
    }
    if issue.hits.is_empty() {
        return None;
    }
    if len(proxy) > 256 {
        issue.proposal = Proposal::None;
    }
    Some(issue)
}

#[cfg(test)]
mod tests;
