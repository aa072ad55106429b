//! The self-contained HTML page of the report (`syncctl assess --html FILE`).
//!
//! One file, nothing fetched: the CSS, the script and the charts (inline SVG drawn here from the
//! report) are in the page, and a Content-Security-Policy forbids any network access, so the page
//! works from `file://` and from a mail attachment alike. The template is
//! `templates/report.html` (minijinja, HTML auto-escaping on).
//!
//! The summary, the UPN suffix table, the charts and the worst objects are rendered as HTML.
//! The findings, which can number in the hundreds of thousands, are embedded once as JSON in a
//! `<script type="application/json" id="findings-data">` block (one array per finding, in
//! [`FINDING_COLUMNS`] order, the suggested fix from the report's remediations included) and a
//! small inline script draws the table from it: paginated, searchable (case-insensitive
//! substring over every column; `#q=TEXT` in the URL sets the search, `&severity=error` the
//! severity filter) and sortable. Every `<`, `>` and `&` in that JSON is written as a `\u00XX`
//! escape, so that no value can close the script element.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use minijinja::Environment;
use serde::Serialize;

use crate::catalogue::{self, Severity};
use crate::report::{
    Action, AnchorCounts, Federation, Finding, ObjectScore, Remediation, Report, SourceSummary, SuffixRow,
    TenantSummary, Totals,
};

/// The template's name: its `.html` extension turns HTML auto-escaping on.
const TEMPLATE_NAME: &str = "report.html";
/// The template.
const TEMPLATE: &str = include_str!("../../templates/report.html");

/// The columns of each finding in the embedded JSON, in order.
pub const FINDING_COLUMNS: [&str; 8] =
    ["severity", "rule", "source", "dn", "attribute", "value", "message", "fix"];

/// Rows per page of the findings table.
const PAGE_SIZE: usize = 200;

/// Bars shown per chart; the rest are summed up in one line under the chart.
const MAX_BARS: usize = 25;

/// Chart geometry (SVG user units).
const CHART_WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 260.0;
const BAR_AREA: f64 = 420.0;
const ROW_HEIGHT: f64 = 22.0;
const BAR_HEIGHT: f64 = 15.0;
/// Longest label drawn in full; longer ones are cut, the full text is in the bar's tooltip.
const MAX_LABEL_CHARS: usize = 36;

/// Renders the report as one self-contained HTML page.
pub fn to_html(report: &Report) -> crate::Result<String> {
    let mut env = Environment::new();
    env.add_filter("num", group_digits);
    env.add_template(TEMPLATE_NAME, TEMPLATE).map_err(render_error)?;
    let template = env.get_template(TEMPLATE_NAME).map_err(render_error)?;
    let page = Page::new(report)?;
    template.render(&page).map_err(render_error)
}

fn render_error(e: impl std::fmt::Display) -> crate::AssessError {
    crate::AssessError::Render { format: "html", message: e.to_string() }
}

/// What the template reads. The findings themselves only go in as the JSON string.
#[derive(Serialize)]
struct Page<'a> {
    generated_at: &'a str,
    generator: &'a str,
    verdict: &'static str,
    sources: Vec<SourceView<'a>>,
    tenant: Option<&'a TenantSummary>,
    totals: &'a Totals,
    rules: Vec<RuleView>,
    upn_suffixes: Vec<SuffixView<'a>>,
    federation: &'a Federation,
    federation_notes: Vec<&'a Finding>,
    anchors: &'a AnchorCounts,
    worst_objects: Vec<WorstView<'a>>,
    finding_count: usize,
    remediation_count: usize,
    severity_counts: SeverityCounts,
    /// Findings by rule, then findings by UPN suffix.
    charts: [Chart; 2],
    page_size: usize,
    /// The findings as JSON, already escaped for a script element (the template marks it safe).
    findings_json: String,
    /// Rule id -> [severity, summary, fix], for the tooltips of the table's rule column.
    rules_json: String,
}

#[derive(Serialize)]
struct SourceView<'a> {
    #[serde(flatten)]
    source: &'a SourceSummary,
    skipped_total: u64,
}

#[derive(Serialize)]
struct SuffixView<'a> {
    #[serde(flatten)]
    row: &'a SuffixRow,
    link: String,
}

#[derive(Serialize)]
struct WorstView<'a> {
    #[serde(flatten)]
    object: &'a ObjectScore,
    link: String,
}

#[derive(Serialize)]
struct RuleView {
    rule: String,
    severity: &'static str,
    attribute: String,
    summary: String,
    fix: String,
    count: u64,
    link: String,
}

/// Findings per severity, counted from the findings themselves (for the severity filter).
#[derive(Default, Serialize)]
struct SeverityCounts {
    error: u64,
    warning: u64,
    info: u64,
}

impl SeverityCounts {
    fn add(&mut self, severity: Severity) {
        match severity {
            Severity::Error => self.error += 1,
            Severity::Warning => self.warning += 1,
            Severity::Info => self.info += 1,
        }
    }

    fn total(&self) -> u64 {
        self.error + self.warning + self.info
    }
}

/// A horizontal bar chart, laid out for an SVG.
#[derive(Serialize)]
struct Chart {
    /// The element id (`chart-by-rule`, `chart-by-suffix`).
    id: &'static str,
    /// What it shows (the SVG's accessible name).
    title: &'static str,
    /// The line under it.
    caption: &'static str,
    width: f64,
    height: f64,
    /// Where labels end (they are right-aligned before the bars).
    label_x: f64,
    bar_height: f64,
    bars: Vec<Bar>,
    /// Categories left out of the chart, and their findings.
    more: usize,
    more_count: u64,
}

#[derive(Serialize)]
struct Bar {
    /// The label drawn (cut to [`MAX_LABEL_CHARS`]).
    label: String,
    /// The full category name.
    name: String,
    /// `#q=...`: filters the findings table on this category.
    link: String,
    total: u64,
    /// Top of the bar.
    y: f64,
    /// Baseline of the label and count text.
    text_y: f64,
    /// Where the count is written (after the bar).
    count_x: f64,
    segments: Vec<Segment>,
}

#[derive(Serialize)]
struct Segment {
    severity: &'static str,
    count: u64,
    x: f64,
    width: f64,
}

impl<'a> Page<'a> {
    fn new(report: &'a Report) -> crate::Result<Self> {
        let fixes = FixIndex::new(&report.remediations);
        let mut severity_counts = SeverityCounts::default();
        let mut rows: Vec<[&str; 8]> = Vec::with_capacity(report.findings.len());
        for f in &report.findings {
            severity_counts.add(f.severity);
            rows.push([
                f.severity.as_str(),
                f.rule,
                &f.source,
                &f.dn,
                &f.attribute,
                &f.value,
                &f.message,
                fixes.get(f).unwrap_or(""),
            ]);
        }
        let findings_json = script_json(&rows)?;
        drop(rows);

        let rule_meta: BTreeMap<&str, [&str; 3]> =
            catalogue::ALL.iter().map(|r| (r.id, [r.severity.as_str(), r.summary, r.fix])).collect();
        let rules_json = script_json(&rule_meta)?;

        let rules = report
            .by_rule
            .iter()
            .map(|r| RuleView {
                rule: r.rule.to_owned(),
                severity: r.severity.as_str(),
                attribute: r.attribute.to_owned(),
                summary: r.summary.to_owned(),
                fix: catalogue::rule(r.rule).map(|c| c.fix).unwrap_or("").to_owned(),
                count: r.count,
                link: query_link(r.rule),
            })
            .collect();

        Ok(Self {
            generated_at: &report.generated_at,
            generator: &report.generator,
            verdict: report.verdict.as_str(),
            sources: report
                .sources
                .iter()
                .map(|s| SourceView { source: s, skipped_total: s.skipped.values().sum() })
                .collect(),
            tenant: report.tenant.as_ref(),
            totals: &report.totals,
            rules,
            upn_suffixes: report
                .upn_suffixes
                .iter()
                .map(|row| SuffixView { row, link: query_link(&format!("@{}", row.suffix)) })
                .collect(),
            federation: &report.federation,
            federation_notes: report
                .findings
                .iter()
                .filter(|f| catalogue::rule(f.rule).is_some_and(|r| r.idfix == "federation"))
                .collect(),
            anchors: &report.anchors,
            worst_objects: report
                .worst_objects
                .iter()
                .map(|object| WorstView { object, link: query_link(&object.dn) })
                .collect(),
            finding_count: report.findings.len(),
            remediation_count: report.remediations.len(),
            severity_counts,
            charts: [chart_by_rule(&report.findings), chart_by_suffix(&report.findings)],
            page_size: PAGE_SIZE,
            findings_json,
            rules_json,
        })
    }
}

/// The suggested fix of each value: remediations by source, DN, attribute (case-insensitive)
/// and value (a missing value matches a finding's empty value).
struct FixIndex<'a> {
    by_value: HashMap<(&'a str, &'a str, String, &'a str), String>,
}

impl<'a> FixIndex<'a> {
    fn new(remediations: &'a [Remediation]) -> Self {
        let mut by_value = HashMap::with_capacity(remediations.len());
        for r in remediations {
            let key = (
                r.source.as_str(),
                r.dn.as_str(),
                r.attribute.to_ascii_lowercase(),
                r.value.as_deref().unwrap_or(""),
            );
            by_value.entry(key).or_insert_with(|| describe_fix(r));
        }
        Self { by_value }
    }

    fn get(&self, f: &'a Finding) -> Option<&str> {
        if self.by_value.is_empty() {
            return None;
        }
        let key = (f.source.as_str(), f.dn.as_str(), f.attribute.to_ascii_lowercase(), f.value.as_str());
        self.by_value.get(&key).map(String::as_str)
    }
}

/// `EDIT → new value` or `REMOVE`, IdFix's action words.
fn describe_fix(r: &Remediation) -> String {
    match (r.action, &r.update) {
        (Action::Edit, Some(update)) => format!("EDIT \u{2192} {update}"),
        (Action::Edit, None) => "EDIT".to_owned(),
        (Action::Remove, _) => "REMOVE".to_owned(),
    }
}

/// JSON for a `<script type="application/json">` element: `<`, `>` and `&` (which JSON only
/// has inside strings) become `\u003c`, `\u003e` and `\u0026`, so `</script>` or `<!--` in a
/// value cannot end or disturb the element; U+2028 and U+2029 are escaped too.
fn script_json<T: Serialize + ?Sized>(value: &T) -> crate::Result<String> {
    let raw = serde_json::to_string(value).map_err(render_error)?;
    let mut out = String::with_capacity(raw.len() + raw.len() / 64);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `#q=TEXT` with TEXT percent-encoded (what the page's script reads back with
/// `decodeURIComponent`).
fn query_link(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("#q=");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `1234567` -> `1,234,567` (the template's `num` filter).
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> =
        digits.as_bytes().rchunks(3).filter_map(|group| std::str::from_utf8(group).ok()).collect();
    groups.reverse();
    groups.join(",")
}

/// Counts per category and severity, in first-seen order.
#[derive(Default)]
struct Tally {
    index: HashMap<String, usize>,
    rows: Vec<(String, SeverityCounts)>,
}

impl Tally {
    fn add(&mut self, category: &str, severity: Severity) {
        let i = match self.index.get(category) {
            Some(&i) => i,
            None => {
                self.index.insert(category.to_owned(), self.rows.len());
                self.rows.push((category.to_owned(), SeverityCounts::default()));
                self.rows.len() - 1
            }
        };
        if let Some((_, counts)) = self.rows.get_mut(i) {
            counts.add(severity);
        }
    }
}

/// Findings by rule, most findings first (catalogue order among equals).
fn chart_by_rule(findings: &[Finding]) -> Chart {
    let mut tally = Tally::default();
    for f in findings {
        tally.add(f.rule, f.severity);
    }
    let position = |id: &str| catalogue::ALL.iter().position(|r| r.id == id).unwrap_or(usize::MAX);
    let mut rows = tally.rows;
    rows.sort_by(|(a, ca), (b, cb)| cb.total().cmp(&ca.total()).then_with(|| position(a).cmp(&position(b))));
    let mut chart = layout(rows, query_link);
    chart.id = "chart-by-rule";
    chart.title = "Findings by rule";
    chart.caption = "Findings by rule, most first. Click a rule to list its findings.";
    chart
}

/// Findings by the UPN suffix of the user they are about (any attribute), most findings first;
/// forest-wide findings about a suffix count for it; `(none)` is the users without a UPN.
/// Findings on groups, contacts and settings have no suffix and are left out.
fn chart_by_suffix(findings: &[Finding]) -> Chart {
    let mut tally = Tally::default();
    for f in findings.iter().filter(|f| !f.upn_suffix.is_empty()) {
        tally.add(&f.upn_suffix, f.severity);
    }
    let mut rows = tally.rows;
    rows.sort_by(|(a, ca), (b, cb)| cb.total().cmp(&ca.total()).then_with(|| a.cmp(b)));
    let mut chart =
        layout(
            rows,
            |suffix| if suffix == "(none)" { String::new() } else { query_link(&format!("@{suffix}")) },
        );
    chart.id = "chart-by-suffix";
    chart.title = "Findings by UPN suffix";
    chart.caption = "Findings on users by the suffix of their UPN, most first. Click a suffix to list them.";
    chart
}

fn layout(rows: Vec<(String, SeverityCounts)>, link: impl Fn(&str) -> String) -> Chart {
    let max = rows.first().map(|(_, c)| c.total()).unwrap_or(0).max(1);
    let more = rows.len().saturating_sub(MAX_BARS);
    let more_count = rows.iter().skip(MAX_BARS).map(|(_, c)| c.total()).sum();
    let scale = BAR_AREA / max as f64;
    let bars: Vec<Bar> = rows
        .into_iter()
        .take(MAX_BARS)
        .enumerate()
        .map(|(i, (name, counts))| {
            let y = i as f64 * ROW_HEIGHT + 4.0;
            let mut x = LABEL_WIDTH;
            let mut segments = Vec::new();
            for (severity, count) in
                [("error", counts.error), ("warning", counts.warning), ("info", counts.info)]
            {
                if count == 0 {
                    continue;
                }
                // At least one unit wide, so that a single finding next to 100k still shows.
                let width = round1((count as f64 * scale).max(1.0));
                segments.push(Segment { severity, count, x: round1(x), width });
                x += width;
            }
            let label = if name.chars().count() > MAX_LABEL_CHARS {
                let cut: String = name.chars().take(MAX_LABEL_CHARS - 1).collect();
                format!("{cut}\u{2026}")
            } else {
                name.clone()
            };
            Bar {
                label,
                link: link(&name),
                name,
                total: counts.total(),
                y: round1(y),
                text_y: round1(y + BAR_HEIGHT - 3.0),
                count_x: round1(x + 6.0),
                segments,
            }
        })
        .collect();
    Chart {
        id: "",
        title: "",
        caption: "",
        width: CHART_WIDTH,
        height: round1(bars.len() as f64 * ROW_HEIGHT + 8.0),
        label_x: LABEL_WIDTH - 8.0,
        bar_height: BAR_HEIGHT,
        bars,
        more,
        more_count,
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        AnchorCounts, Federation, ObjectScore, RuleCount, SourceSummary, SuffixRow, TenantSummary, Totals,
        Verdict,
    };

    const XSS: &str = "</script><img src=x onerror=alert(1)>";

    fn finding(rule: &catalogue::Rule, dn: &str, attribute: &str, value: &str, message: &str) -> Finding {
        Finding {
            rule: rule.id,
            severity: rule.severity,
            idfix: rule.idfix,
            source: "corp".to_owned(),
            dn: dn.to_owned(),
            common_name: dn.split(',').next().unwrap_or("").trim_start_matches("CN=").to_owned(),
            object_class: "user".to_owned(),
            attribute: attribute.to_owned(),
            value: value.to_owned(),
            message: message.to_owned(),
            // As the assessor sets it for these tests' users: the UPN's suffix, the suffix
            // itself for a forest-wide finding, `(none)` for a UPN without one.
            upn_suffix: match value.rsplit_once('@') {
                _ if !attribute.eq_ignore_ascii_case("userPrincipalName") => String::new(),
                Some((_, s)) if !s.is_empty() => s.to_lowercase(),
                None if !value.is_empty() && value == dn => value.to_lowercase(),
                _ => "(none)".to_owned(),
            },
        }
    }

    fn report() -> Report {
        let bob = "CN=Bob,OU=People,DC=corp,DC=local";
        let jorg = "CN=J\u{f6}rg,OU=People,DC=corp,DC=local";
        let evil = "CN=Evil,OU=People,DC=corp,DC=local";
        let findings = vec![
            finding(
                &catalogue::UPN_SUFFIX_NON_ROUTABLE,
                bob,
                "userPrincipalName",
                "bob@corp.local",
                "corp.local is not routable",
            ),
            finding(
                &catalogue::UPN_DIACRITIC,
                jorg,
                "userPrincipalName",
                "j\u{f6}rg@example.com",
                "\u{f6} is not ASCII",
            ),
            finding(&catalogue::MAIL_INVALID_CHARACTER, evil, "mail", XSS, "contains < and >"),
            finding(
                &catalogue::FEDERATION_MULTIPLE_DOMAINS,
                "example.com, example.org",
                "userPrincipalName",
                "",
                "users under 2 top-level domains",
            ),
        ];
        let remediations = vec![
            Remediation {
                source: "corp".to_owned(),
                dn: bob.to_owned(),
                common_name: "Bob".to_owned(),
                object_class: "user".to_owned(),
                attribute: "userPrincipalName".to_owned(),
                value: Some("bob@corp.local".to_owned()),
                update: Some("bob@example.com".to_owned()),
                action: Action::Edit,
                error: "topleveldomain".to_owned(),
                rules: vec![catalogue::UPN_SUFFIX_NON_ROUTABLE.id],
                multi_valued: false,
            },
            Remediation {
                source: "corp".to_owned(),
                dn: evil.to_owned(),
                common_name: "Evil".to_owned(),
                object_class: "user".to_owned(),
                attribute: "mail".to_owned(),
                value: Some(XSS.to_owned()),
                update: None,
                action: Action::Remove,
                error: "character".to_owned(),
                rules: vec![catalogue::MAIL_INVALID_CHARACTER.id],
                multi_valued: false,
            },
        ];
        let by_rule = [
            &catalogue::UPN_DIACRITIC,
            &catalogue::UPN_SUFFIX_NON_ROUTABLE,
            &catalogue::MAIL_INVALID_CHARACTER,
            &catalogue::FEDERATION_MULTIPLE_DOMAINS,
        ]
        .iter()
        .map(|r| RuleCount {
            rule: r.id,
            severity: r.severity,
            attribute: r.attribute,
            summary: r.summary,
            count: 1,
        })
        .collect();
        Report {
            generated_at: "2025-01-02T03:04:05Z".to_owned(),
            generator: "syncctl 0.1.0".to_owned(),
            verdict: Verdict::Errors,
            sources: vec![SourceSummary {
                name: "corp".to_owned(),
                kind: "ldif".to_owned(),
                endpoint: "corp-export.ldif".to_owned(),
                objects_read: 1234,
                objects_assessed: 1200,
                skipped: BTreeMap::from([("disabled".to_owned(), 30), ("system".to_owned(), 4)]),
                unreadable: 0,
            }],
            tenant: Some(TenantSummary {
                initial_domain: Some("contoso.onmicrosoft.com".to_owned()),
                verified_domains: vec![("example.com".to_owned(), "Managed".to_owned())],
                users: 7,
                groups: 2,
                contacts: 1,
            }),
            totals: Totals {
                objects: 1200,
                objects_with_errors: 2,
                objects_with_warnings: 1,
                errors: 2,
                warnings: 1,
                infos: 1,
                skipped: 34,
            },
            by_rule,
            upn_suffixes: vec![
                SuffixRow {
                    suffix: "corp.local".to_owned(),
                    users: 1,
                    routable: false,
                    reason: "local is not a public top-level domain".to_owned(),
                    registrable_domain: None,
                    verified: Some(false),
                    authentication: None,
                    cloud_suffix: "contoso.onmicrosoft.com".to_owned(),
                },
                SuffixRow {
                    suffix: "example.com".to_owned(),
                    users: 1,
                    routable: true,
                    reason: "routable".to_owned(),
                    registrable_domain: Some("example.com".to_owned()),
                    verified: Some(true),
                    authentication: Some("Managed".to_owned()),
                    cloud_suffix: "example.com".to_owned(),
                },
            ],
            federation: Federation {
                top_level_domains: vec!["example.com".to_owned(), "example.org".to_owned()],
                subdomains: vec![],
                forests: vec!["DC=corp,DC=local".to_owned()],
            },
            anchors: AnchorCounts {
                compared_with_tenant: true,
                hard_match: 3,
                soft_match: 2,
                new: 1190,
                conflict: 1,
                no_anchor: 4,
            },
            worst_objects: vec![ObjectScore {
                source: "corp".to_owned(),
                dn: evil.to_owned(),
                errors: 1,
                warnings: 0,
            }],
            findings,
            remediations,
            anchor_audit: vec![],
        }
    }

    /// The text of the `<script type="application/json" id="ID">` element.
    fn json_block<'a>(html: &'a str, id: &str) -> &'a str {
        let open = format!("<script type=\"application/json\" id=\"{id}\">");
        let start = html.find(&open).unwrap_or_else(|| panic!("no {open} in the page")) + open.len();
        let len = html[start..].find("</script>").unwrap();
        &html[start..start + len]
    }

    #[test]
    fn renders_the_summary_suffixes_charts_and_worst_objects() {
        let html = to_html(&report()).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..40]);
        assert!(html.contains(r#"id="verdict" class="verdict verdict-errors" data-verdict="errors""#));
        assert!(html.contains("2025-01-02T03:04:05Z"));
        assert!(html.contains(r#"<td class="source-read num">1,234</td>"#), "grouped digits");
        assert!(html.contains(r#"<td class="source-assessed num">1,200</td>"#));
        assert!(html.contains("disabled: 30"));
        assert!(html.contains(r#"id="total-errors">2<"#));
        assert!(html.contains(r#"id="tenant-initial-domain">contoso.onmicrosoft.com<"#));
        assert!(html.contains(r#"id="anchor-new">1,190<"#));
        assert!(html.contains(r#"data-suffix="corp.local""#));
        assert!(html.contains("users under 2 top-level domains"), "federation notes");
        // Both charts have a bar per category, and a segment per severity.
        let by_rule = &html[html.find(r#"id="chart-by-rule""#).unwrap()..];
        let by_rule = &by_rule[..by_rule.find("</svg>").unwrap()];
        assert_eq!(by_rule.matches("<rect class=\"bar ").count(), 4, "{by_rule}");
        assert!(by_rule.contains("upn-suffix-non-routable"));
        let by_suffix = &html[html.find(r#"id="chart-by-suffix""#).unwrap()..];
        let by_suffix = &by_suffix[..by_suffix.find("</svg>").unwrap()];
        assert!(by_suffix.contains(">corp.local<") && by_suffix.contains(">example.com<"), "{by_suffix}");
        assert!(by_suffix.contains("bar sev-warning") && by_suffix.contains("bar sev-error"));
        assert!(html.contains(r#"id="findings-count""#));
    }

    #[test]
    fn a_report_without_tenant_or_findings_renders() {
        let mut r = report();
        r.tenant = None;
        r.findings.clear();
        r.remediations.clear();
        r.by_rule.clear();
        r.verdict = Verdict::Ready;
        r.anchors.compared_with_tenant = false;
        let html = to_html(&r).unwrap();
        assert!(html.contains(r#"data-verdict="ready""#));
        assert!(html.contains(r#"id="tenant-none""#));
        assert!(!html.contains(r#"id="tenant-initial-domain""#));
        assert_eq!(json_block(&html, "findings-data"), "[]");
    }

    #[test]
    fn values_are_escaped_in_html_and_in_the_json_block() {
        let mut r = report();
        r.sources[0].endpoint = "<b>ldif</b>".to_owned();
        r.worst_objects[0].dn = format!("CN={XSS}");
        let html = to_html(&r).unwrap();
        assert!(!html.contains("<img"), "an unescaped tag made it into the page");
        assert!(!html.contains("<b>ldif"), "endpoint not escaped");
        assert!(html.contains("&lt;b&gt;ldif&lt;&#x2f;b&gt;"));
        let block = json_block(&html, "findings-data");
        assert!(!block.contains('<') && !block.contains('>') && !block.contains('&'), "{block}");
        assert!(block.contains(r"\u003c/script\u003e\u003cimg src=x onerror=alert(1)\u003e"), "{block}");
        // Only the two JSON blocks and the one script close a script element.
        assert_eq!(html.matches("</script>").count(), 3);
    }

    #[test]
    fn the_json_block_round_trips_with_the_suggested_fixes() {
        let r = report();
        let html = to_html(&r).unwrap();
        let rows: Vec<Vec<String>> = serde_json::from_str(json_block(&html, "findings-data")).unwrap();
        assert_eq!(rows.len(), r.findings.len());
        for (row, f) in rows.iter().zip(&r.findings) {
            assert_eq!(
                row[..7],
                [f.severity.as_str(), f.rule, &f.source, &f.dn, &f.attribute, &f.value, &f.message]
            );
        }
        assert_eq!(rows[0][7], "EDIT \u{2192} bob@example.com");
        assert_eq!(rows[1][7], "", "no remediation for this value");
        assert_eq!(rows[2][5], XSS);
        assert_eq!(rows[2][7], "REMOVE");
        let rules: HashMap<String, [String; 3]> =
            serde_json::from_str(json_block(&html, "rules-data")).unwrap();
        assert_eq!(rules.len(), catalogue::ALL.len());
        assert_eq!(rules["upn-diacritic"][0], "error");
        assert_eq!(rules["upn-diacritic"][2], catalogue::UPN_DIACRITIC.fix);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = to_html(&report()).unwrap();
        let lower = html.to_ascii_lowercase();
        for attr in ["src=", "href="] {
            for quote in ["\"", "'", ""] {
                for scheme in ["http:", "https:", "//"] {
                    let needle = format!("{attr}{quote}{scheme}");
                    assert!(!lower.contains(&needle), "found {needle}");
                }
            }
        }
        assert!(
            !lower.contains("<link rel=\"stylesheet\"")
                && !lower.contains("@import")
                && !lower.contains("url(")
        );
        assert!(lower.contains("content-security-policy") && lower.contains("default-src 'none'"));
    }

    #[test]
    fn the_script_reads_the_columns_the_json_is_written_in() {
        let cols: Vec<String> = FINDING_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
        let line = format!("var COLS = [{}];", cols.join(", "));
        assert!(TEMPLATE.contains(&line), "the template's script has no `{line}`");
        for (i, c) in FINDING_COLUMNS.iter().enumerate() {
            assert!(TEMPLATE.contains(&format!("<th data-col=\"{i}\" class=\"f-{c}\">")), "column {c}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(query_link("CN=J\u{f6}rg,DC=x"), "#q=CN%3DJ%C3%B6rg%2CDC%3Dx");
        assert_eq!(query_link("@corp.local"), "#q=@corp.local");
        assert_eq!(script_json("a\u{2028}<&>").unwrap(), r#""a\u2028\u003c\u0026\u003e""#);
    }

    #[test]
    fn charts_scale_to_the_largest_bar_and_cap_the_number_of_bars() {
        let mut findings = Vec::new();
        for i in 0..30 {
            for _ in 0..=i {
                findings.push(finding(
                    &catalogue::UPN_SUFFIX_NON_ROUTABLE,
                    "CN=x",
                    "userPrincipalName",
                    &format!("x@s{i}.local"),
                    "",
                ));
            }
        }
        let chart = chart_by_suffix(&findings);
        assert_eq!(chart.bars.len(), MAX_BARS);
        assert_eq!(chart.more, 5);
        assert_eq!(chart.more_count, 1 + 2 + 3 + 4 + 5);
        assert_eq!(chart.bars[0].name, "s29.local");
        assert_eq!(chart.bars[0].segments[0].width, BAR_AREA);
        assert!(chart.bars[1].segments[0].width < BAR_AREA);
        assert_eq!(chart.bars[0].link, "#q=@s29.local");

        // A forest-wide finding about a suffix counts for it; a UPN without suffix does not.
        let findings = [
            finding(
                &catalogue::FEDERATION_SUBDOMAIN,
                "eu.example.com",
                "userPrincipalName",
                "eu.example.com",
                "",
            ),
            finding(&catalogue::UPN_FORMAT, "CN=x", "userPrincipalName", "x.example.com", ""),
            finding(&catalogue::UPN_DIACRITIC, "CN=y", "userPrincipalName", "\u{e4}@EU.example.com", ""),
            finding(&catalogue::MAIL_DIACRITIC, "CN=y", "mail", "\u{e4}@example.com", ""),
        ];
        let chart = chart_by_suffix(&findings);
        let bars: Vec<(&str, u64)> = chart.bars.iter().map(|b| (b.name.as_str(), b.total)).collect();
        assert_eq!(bars, [("eu.example.com", 2), ("(none)", 1)]);
        assert_eq!(chart.bars[1].link, "", "(none) links nowhere");
        let by_rule = chart_by_rule(&findings);
        assert_eq!(by_rule.bars.len(), 4);
        assert_eq!(by_rule.bars[0].name, "upn-diacritic", "catalogue order among equals");
    }
}
