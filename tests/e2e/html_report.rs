//! The HTML report of `syncctl assess` (`--html FILE`) loaded in headless Chromium (Debian's
//! `chromium`, installed by `tests/peers/chromium.sh`): the DOM after the page's script ran shows
//! the summary and the findings table, the `#q=` search filters the table, and a value made to
//! break out of the embedded JSON stays text. A screenshot is left in
//! `target/test-artifacts/assess-report.png` for a human to look at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use syncctl_tests::*;

/// One rendered row of the findings table: column (`severity`, `rule`, `dn`...) -> text.
type Row = BTreeMap<String, String>;

/// Runs `syncctl --json assess ARGS --html DIR/report.html` from the workspace root; returns the
/// page's path and the report that `--json` printed.
fn assess(dir: &Path, args: &[&str]) -> (PathBuf, Value) {
    let html = dir.join("report.html");
    let out = Command::new(syncctl_bin())
        .current_dir(workspace_root())
        .args(["--json", "assess"])
        .args(args)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0 ready, 1 warnings only, 2 blocking errors: any other code is a failure of the command.
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "syncctl assess {args:?} failed ({}): {stderr}",
        out.status
    );
    assert!(html.exists(), "syncctl assess {args:?} wrote no {}: {stderr}", html.display());
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("syncctl --json assess printed no JSON report ({e}): {stderr}"));
    let code = report["verdict"].as_str().map(|v| match v {
        "ready" => 0,
        "warnings" => 1,
        _ => 2,
    });
    assert_eq!(out.status.code(), code, "the exit code follows the verdict");
    (html, report)
}

/// `&lt;` and friends back to text (what Chromium's serializer escapes in text and attributes).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The text of an element without child elements, found by its id.
fn text_of(dom: &str, id: &str) -> String {
    let at = dom.find(&format!(" id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    unescape(&dom[start..end])
}

/// An attribute of the element with this id.
fn attr_of(dom: &str, id: &str, attr: &str) -> String {
    let at = dom.find(&format!(" id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let tag_start = dom[..at].rfind('<').unwrap();
    let tag = &dom[tag_start..at + dom[at..].find('>').unwrap()];
    let key = format!(" {attr}=\"");
    let v = tag.find(&key).unwrap_or_else(|| panic!("#{id} has no {attr}: {tag}")) + key.len();
    unescape(&tag[v..v + tag[v..].find('"').unwrap()])
}

/// The HTML inside the element with this id, up to `</close>`.
fn inner<'a>(dom: &'a str, id: &str, close: &str) -> &'a str {
    let at = dom.find(&format!(" id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id} in the DOM"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    &dom[start..start + dom[start..].find(close).unwrap()]
}

/// Text with the tags removed.
fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}

/// The `<td class="PREFIXname...">` cells of a `<tr>`: name -> text.
fn cells(tr: &str, prefix: &str) -> Row {
    let mut row = Row::new();
    let key = format!("<td class=\"{prefix}");
    for part in tr.split(&key).skip(1) {
        let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let content = &part[part.find('>').unwrap() + 1..part.find("</td>").unwrap()];
        row.insert(name, strip_tags(content));
    }
    row
}

/// The rows of the findings table as drawn.
fn finding_rows(dom: &str) -> Vec<Row> {
    inner(dom, "findings-body", "</tbody>")
        .split("<tr class=\"finding ")
        .skip(1)
        .map(|tr| cells(tr, "f-"))
        .collect()
}

/// The report's findings as table rows would show them (without the fix column).
fn json_findings(report: &Value) -> Vec<Row> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            ["severity", "rule", "source", "dn", "attribute", "value", "message"]
                .iter()
                .map(|k| ((*k).to_owned(), f[*k].as_str().unwrap().to_owned()))
                .collect()
        })
        .collect()
}

/// The "N of M findings" counter: (N, M), checked against its text.
fn counter(dom: &str) -> (usize, usize) {
    let shown: usize = attr_of(dom, "findings-count", "data-shown").parse().unwrap();
    let total: usize = attr_of(dom, "findings-count", "data-total").parse().unwrap();
    let group = |n: usize| {
        let digits = n.to_string();
        let mut groups: Vec<&str> =
            digits.as_bytes().rchunks(3).map(|g| std::str::from_utf8(g).unwrap()).collect();
        groups.reverse();
        groups.join(",")
    };
    assert_eq!(text_of(dom, "findings-count"), format!("{} of {} findings", group(shown), group(total)));
    (shown, total)
}

/// The findings the page's search should keep: a case-insensitive substring of any column.
fn matching(findings: &[Row], needle: &str) -> usize {
    let needle = needle.to_lowercase();
    findings.iter().filter(|r| r.values().any(|v| v.to_lowercase().contains(&needle))).count()
}

#[test]
fn html_report_of_the_examples_in_headless_chromium() {
    // Fails with how to install it when Chromium is missing.
    chromium();
    let dir = tempfile::tempdir().unwrap();
    let (html, report) =
        assess(dir.path(), &["--ldif", "examples/corp-export.ldif", "--tenant", "examples/tenant.json"]);
    let findings = json_findings(&report);
    let total = findings.len();
    assert!(total > 0, "the examples have findings");

    // The page as opened: summary, sources, suffixes and the first page of the table.
    let dom = chromium_dump_dom(&file_url(&html, ""));
    let verdict = report["verdict"].as_str().unwrap();
    assert_eq!(text_of(&dom, "verdict"), verdict);
    assert_eq!(attr_of(&dom, "verdict", "data-verdict"), verdict);
    assert_eq!(text_of(&dom, "generated-at"), report["generated_at"].as_str().unwrap());
    for (id, key) in [("total-errors", "errors"), ("total-warnings", "warnings"), ("total-infos", "infos")] {
        assert_eq!(text_of(&dom, id).replace(',', ""), report["totals"][key].to_string(), "#{id}");
    }
    let sources = inner(&dom, "sources", "</table>");
    for s in report["sources"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let tr = sources
            .split("<tr class=\"source\"")
            .find(|tr| tr.starts_with(&format!(" data-source=\"{name}\"")))
            .unwrap_or_else(|| panic!("no row for source {name} in {sources}"));
        let row = cells(tr, "source-");
        assert_eq!(row["read"].replace(',', ""), s["objects_read"].to_string(), "{row:?}");
        assert_eq!(row["assessed"].replace(',', ""), s["objects_assessed"].to_string(), "{row:?}");
        let skipped: u64 = s["skipped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(row["skipped"].replace(',', ""), skipped.to_string(), "{row:?}");
    }
    assert!(report["tenant"].is_object(), "--tenant was given");
    assert_eq!(
        text_of(&dom, "tenant-initial-domain"),
        report["tenant"]["initial_domain"].as_str().unwrap_or("(unknown)")
    );
    let domains = inner(&dom, "tenant-domains", "</ul>");
    for d in report["tenant"]["verified_domains"].as_array().unwrap() {
        assert!(domains.contains(&format!("data-domain=\"{}\"", d[0].as_str().unwrap())), "{d} in {domains}");
    }
    assert_eq!(text_of(&dom, "anchor-new").replace(',', ""), report["anchors"]["new"].to_string());
    let suffixes = inner(&dom, "upn-suffixes", "</table>");
    assert!(suffixes.contains("data-suffix=\"corp.local\""), "{suffixes}");
    assert!(dom.contains("id=\"chart-by-rule\"") && dom.contains("id=\"chart-by-suffix\""));

    let rows = finding_rows(&dom);
    assert_eq!(counter(&dom), (total, total));
    assert_eq!(rows.len(), total.min(200), "the first page");
    assert_eq!(rows[0]["rule"], findings[0]["rule"]);
    assert_eq!(rows[0]["dn"], findings[0]["dn"]);
    let bob = rows
        .iter()
        .find(|r| r["rule"] == "upn-suffix-non-routable" && r["value"] == "bob@corp.local")
        .unwrap_or_else(|| panic!("no upn-suffix-non-routable row for bob@corp.local: {rows:#?}"));
    assert_eq!(bob["severity"], "warning");
    assert!(bob["fix"].starts_with("EDIT"), "bob's suffix has a suggested fix: {bob:?}");
    assert!(
        rows.iter().any(|r| r["rule"] == "upn-diacritic" && r["value"] == "fr\u{e4}nk@corp.example.com"),
        "no upn-diacritic row for fr\u{e4}nk: {rows:#?}"
    );

    // #q=bob: only the rows with bob, bob@corp.local's non-routable suffix among them.
    let dom = chromium_dump_dom(&file_url(&html, "q=bob"));
    let rows = finding_rows(&dom);
    let expected = matching(&findings, "bob");
    assert!(expected > 0 && expected < total, "{expected} of {total} findings mention bob");
    assert_eq!(counter(&dom), (expected, total));
    assert_eq!(rows.len(), expected.min(200));
    for row in &rows {
        assert!(row.values().any(|v| v.to_lowercase().contains("bob")), "{row:?}");
    }
    assert!(
        rows.iter().any(|r| r["rule"] == "upn-suffix-non-routable" && r["value"] == "bob@corp.local"),
        "{rows:#?}"
    );

    // A search for ä (percent-encoded in the fragment) finds the diacritic in a UPN.
    let dom = chromium_dump_dom(&file_url(&html, "q=%C3%A4"));
    let rows = finding_rows(&dom);
    assert_eq!(counter(&dom), (matching(&findings, "\u{e4}"), total));
    assert!(rows.iter().any(|r| r["rule"] == "upn-diacritic" && r["value"].contains('\u{e4}')), "{rows:#?}");

    // The severity filter from the fragment.
    let dom = chromium_dump_dom(&file_url(&html, "severity=warning"));
    let warnings = findings.iter().filter(|f| f["severity"] == "warning").count();
    assert!(warnings > 0 && warnings < total);
    assert_eq!(counter(&dom), (warnings, total));
    let rows = finding_rows(&dom);
    assert_eq!(rows.len(), warnings.min(200));
    assert!(rows.iter().all(|r| r["severity"] == "warning"), "{rows:#?}");

    // A search that matches nothing, with a severity.
    let dom = chromium_dump_dom(&file_url(&html, "q=no-such-text-anywhere&severity=error"));
    assert_eq!(counter(&dom), (0, total));
    assert!(finding_rows(&dom).is_empty());
    assert_eq!(strip_tags(inner(&dom, "findings-body", "</tbody>")).trim(), "No finding matches.");

    // A screenshot for a human; a blank page compresses to a few kilobytes.
    let png = test_artifacts_dir().join("assess-report.png");
    chromium_screenshot(&file_url(&html, ""), &png, 1280, 2000);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {}", png.display());
    assert!(bytes.len() > 50_000, "{} is only {} bytes: an empty page?", png.display(), bytes.len());
}

#[test]
fn html_report_keeps_a_value_that_closes_the_script_element_as_text() {
    chromium();
    const PAYLOAD: &str = "</script><img src=x onerror=alert(1)>";
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let mail = format!("{PAYLOAD}@corp.example.com");
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("evil.ldif");
    std::fs::write(
        &ldif,
        format!(
            "dn: CN=Mallory,CN=Users,DC=corp,DC=example,DC=com\nobjectClass: top\nobjectClass: person\n\
             objectClass: organizationalPerson\nobjectClass: user\ncn: Mallory\n\
             objectGUID:: TWFsbG9yeS0xMjM0NTY3OA==\nuserAccountControl: 512\nsAMAccountName: mallory\n\
             userPrincipalName: mallory@corp.example.com\nmail:: {}\ndisplayName:: {}\n",
            b64(&mail),
            b64(PAYLOAD)
        ),
    )
    .unwrap();
    let (html, report) = assess(dir.path(), &["--ldif", ldif.to_str().unwrap()]);
    let findings = json_findings(&report);
    let flagged = findings.iter().filter(|f| f["value"] == mail).count();
    assert!(flagged > 0, "the mail value is flagged: {findings:#?}");

    let raw = std::fs::read_to_string(&html).unwrap();
    assert!(!raw.contains(PAYLOAD), "the payload is in the page as written");

    let dom = chromium_dump_dom(&file_url(&html, "q=onerror"));
    // The script ran past the payload and drew the rows; the payload made no element.
    assert_eq!(counter(&dom), (matching(&findings, "onerror"), findings.len()));
    let rows = finding_rows(&dom);
    assert_eq!(rows.iter().filter(|r| r["value"] == mail).count(), flagged, "{rows:#?}");
    assert!(
        !dom.contains("<img"),
        "an <img in the DOM: the payload became an element or is raw in the JSON block"
    );
    assert!(dom.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;@corp.example.com"));
}
