//! The report's file formats: CSV in IdFix's columns, remediation LDIF with its undo, and the
//! self-contained HTML page. JSON is the report itself, serialized.

pub mod csv;
pub mod html;
pub mod ldif;

use crate::report::Report;

/// The report as pretty JSON.
pub fn to_json(report: &Report) -> crate::Result<String> {
    serde_json::to_string_pretty(report)
        .map_err(|e| crate::AssessError::Render { format: "json", message: e.to_string() })
}

#[cfg(test)]
mod tests;
