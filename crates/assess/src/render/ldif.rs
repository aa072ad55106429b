//! Remediation LDIF: the suggested fixes as `changetype: modify` records for review and
//! `ldapmodify`, and the undo LDIF that puts every value back.
//!
//! proxyAddresses fixes (and fixes of any attribute of which the object holds several values,
//! as OpenLDAP allows for mail or givenName) are `delete` of the old value then `add` of the new
//! one, so that other values are untouched and ldapmodify fails (rather than overwriting) when
//! the value changed since the assessment; every other attribute is a `replace`. The undo reverses each change:
//! `delete` of the new value and `add` of the old one, `replace` with the old value, or
//! `delete` of the new value when the attribute was missing before.

use syncctl_core::ldif::{push_attr_value, push_dn};

use crate::report::{Remediation, Report};

/// The fix and undo LDIF.
#[derive(Clone, Debug, Default)]
pub struct FixLdif {
    /// The fixes.
    pub fix: String,
    /// What puts the values back.
    pub undo: String,
    /// Objects changed.
    pub objects: usize,
    /// Values changed.
    pub changes: usize,
}

fn header(out: &mut String, what: &str, report: &Report, source: &str) {
    let endpoint =
        report.sources.iter().find(|s| s.name == source).map(|s| s.endpoint.as_str()).unwrap_or("");
    out.push_str(&format!(
        "# syncctl assess {what}, generated {} by {}.\n",
        report.generated_at, report.generator
    ));
    out.push_str(&format!("# For source {source} ({endpoint}): apply it to that directory only.\n"));
    out.push_str(
        "# Review every record, then apply with: ldapmodify -H ldaps://DC -D ACCOUNT -W -f THIS_FILE\n",
    );
    out.push_str("version: 1\n\n");
}

fn push_change(out: &mut String, op: &str, attribute: &str, value: Option<&str>) {
    out.push_str(op);
    out.push_str(": ");
    out.push_str(attribute);
    out.push('\n');
    if let Some(v) = value {
        push_attr_value(out, attribute, v.as_bytes());
    }
    out.push_str("-\n");
}

/// The sources with at least one remediation, in report order.
pub fn sources_with_fixes(report: &Report) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in &report.remediations {
        if !out.contains(&r.source.as_str()) {
            out.push(&r.source);
        }
    }
    out
}

/// Writes the fix and undo LDIF of the remediations of one source (each source is its own
/// directory: its fixes go to its own file).
pub fn to_fix_ldif(report: &Report, source: &str) -> FixLdif {
    let mut result = FixLdif::default();
    header(&mut result.fix, "remediation LDIF", report, source);
    header(&mut result.undo, "undo LDIF (restores the values the remediation LDIF changes)", report, source);
    let mut i = 0;
    let list: Vec<&Remediation> = report.remediations.iter().filter(|r| r.source == source).collect();
    while let Some(first) = list.get(i) {
        let group: Vec<&Remediation> =
            list.iter().skip(i).take_while(|r| r.dn == first.dn).copied().collect();
        i += group.len();
        result.objects += 1;
        result.changes += group.len();
        for (out, label) in [(&mut result.fix, "fixes"), (&mut result.undo, "undoes")] {
            out.push_str(&format!("# source {}: {label} ", first.source));
            let rules: Vec<&str> = group.iter().flat_map(|r| r.rules.iter().copied()).collect();
            out.push_str(&rules.join(", "));
            out.push('\n');
            push_dn(out, &first.dn);
            out.push_str("changetype: modify\n");
        }
        for r in &group {
            let old = r.value.as_deref();
            let new = r.update.as_deref();
            if r.multi_valued {
                if let Some(o) = old {
                    push_change(&mut result.fix, "delete", &r.attribute, Some(o));
                }
                if let Some(n) = new {
                    push_change(&mut result.fix, "add", &r.attribute, Some(n));
                }
            } else {
                push_change(&mut result.fix, "replace", &r.attribute, new);
            }
        }
        for r in group.iter().rev() {
            let old = r.value.as_deref();
            let new = r.update.as_deref();
            if r.multi_valued {
                if let Some(n) = new {
                    push_change(&mut result.undo, "delete", &r.attribute, Some(n));
                }
                if let Some(o) = old {
                    push_change(&mut result.undo, "add", &r.attribute, Some(o));
                }
            } else if old.is_none() {
                // The attribute was missing: delete the value the fix set (`replace` with no
                // value is refused by AD for some attributes, such as userPrincipalName).
                push_change(&mut result.undo, "delete", &r.attribute, new);
            } else {
                push_change(&mut result.undo, "replace", &r.attribute, old);
            }
        }
        result.fix.push('\n');
        result.undo.push('\n');
    }
    result
}
