//! The CSV report in IdFix's columns: DISTINGUISHEDNAME, COMMONNAME, OBJECTCLASS, ATTRIBUTE,
//! ERROR, VALUE, UPDATE, ACTION.
//!
//! One row per object, attribute and value with at least one error or warning. ERROR joins
//! IdFix's error kinds of the findings on that value (`character,topleveldomain`); UPDATE and
//! ACTION (`EDIT` / `REMOVE`) carry the suggested fix, and are empty when none is suggested.
//! Informational findings (soft matches, federation notes) are in the JSON and HTML reports.

use std::collections::BTreeMap;

use crate::catalogue::Severity;
use crate::report::{Action, Report};

/// IdFix's columns, in its order.
pub const COLUMNS: [&str; 8] =
    ["DISTINGUISHEDNAME", "COMMONNAME", "OBJECTCLASS", "ATTRIBUTE", "ERROR", "VALUE", "UPDATE", "ACTION"];

/// (source, DN, attribute, value): one CSV row.
type RowKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// The report as CSV.
pub fn to_csv(report: &Report) -> crate::Result<String> {
    let err = |e: csv::Error| crate::AssessError::Render { format: "csv", message: e.to_string() };
    // row -> (cn, class, IdFix kinds)
    let mut rows: BTreeMap<RowKey<'_>, (&str, &str, Vec<&str>)> = BTreeMap::new();
    for f in report.findings.iter().filter(|f| f.severity != Severity::Info) {
        if f.source == "all" || f.source == "config" {
            continue;
        }
        let row = rows
            .entry((f.source.as_str(), f.dn.as_str(), f.attribute.as_str(), f.value.as_str()))
            .or_insert((f.common_name.as_str(), f.object_class.as_str(), Vec::new()));
        if !row.2.contains(&f.idfix) {
            row.2.push(f.idfix);
        }
    }
    let fixes: BTreeMap<RowKey<'_>, (&str, Action)> = report
        .remediations
        .iter()
        .map(|r| {
            (
                (r.source.as_str(), r.dn.as_str(), r.attribute.as_str(), r.value.as_deref().unwrap_or("")),
                (r.update.as_deref().unwrap_or(""), r.action),
            )
        })
        .collect();
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(COLUMNS).map_err(err)?;
    for (key, (cn, class, kinds)) in &rows {
        let (_, dn, attribute, value) = *key;
        let (update, action) = match fixes.get(key) {
            Some((u, Action::Edit)) => (*u, "EDIT"),
            Some((_, Action::Remove)) => ("", "REMOVE"),
            None => ("", ""),
        };
        w.write_record([dn, cn, class, attribute, kinds.join(",").as_str(), value, update, action])
            .map_err(err)?;
    }
    let bytes =
        w.into_inner().map_err(|e| crate::AssessError::Render { format: "csv", message: e.to_string() })?;
    String::from_utf8(bytes).map_err(|e| crate::AssessError::Render { format: "csv", message: e.to_string() })
}
