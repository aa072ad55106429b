//! Remediation LDIF: the suggested fixes as `changetype: modify` records for review and
//! `ldapmodify`, and the undo LDIF that puts every value back.
//!
//! proxyAddresses fixes are `delete` of the old value then `add` of the new one, so that other
//! values are untouched and ldapmodify fails (rather than overwriting) when the value changed
//! since the assessment; every other attribute is a `replace`. The undo reverses each change:
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

fn header(out: &mut String, what: &str, report: &Report) {
    out.push_str(&format!(
        "# syncctl assess {what}, generated {} by {}.\n",
        report.generated_at, report.generator
    ));
    out.push_str(
        "# Review every record, then apply with: ldapmodify -H ldaps://DC -D ACCOUNT -W -f THIS_FILE\n",
    );
    out.push_str("version: 1\n\n");
}

fn is_multi_valued(attribute: &str) -> bool {
    attribute.eq_ignore_ascii_case("proxyAddresses")
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

/// Writes the fix and undo LDIF of every remediation in the report.
pub fn to_fix_ldif(report: &Report) -> FixLdif {
    let mut result = FixLdif::default();
    header(&mut result.fix, "remediation LDIF", report);
    header(&mut result.undo, "undo LDIF (restores the values the remediation LDIF changes)", report);
    let mut i = 0;
    let list = &report.remediations;
    while let Some(first) = list.get(i) {
        let group: Vec<&Remediation> =
            list.iter().skip(i).take_while(|r| r.source == first.source && r.dn == first.dn).collect();
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
            if is_multi_valued(&r.attribute) {
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
            if is_multi_valued(&r.attribute) {
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
