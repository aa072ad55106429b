//! `syncctl assess` against the real Samba AD DC: the fixture users plus a duplicate
//! proxyAddress are flagged; the fix LDIF applied with the real `ldapmodify` makes them clean;
//! the undo LDIF puts every original value back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use syncctl_tests::*;

/// Runs `syncctl assess --json` with `args`; returns the exit code and the report.
fn assess(config: &Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new(syncctl_bin())
        .arg("--config")
        .arg(config)
        .args(["--json", "assess"])
        .args(args)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "assess did not print JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

/// The rules flagged per object (cn), errors and warnings only.
fn flagged(report: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in report["findings"].as_array().unwrap() {
        if f["severity"] == "info" || f["source"] != "corp" {
            continue;
        }
        out.entry(f["common_name"].as_str().unwrap().to_owned())
            .or_default()
            .insert(f["rule"].as_str().unwrap().to_owned());
    }
    out
}

/// Every value of the attributes assess checks, per entry of `ou`, as the real ldapsearch reads
/// them (values compared as sets, attribute names case-insensitively).
fn snapshot(peer: &Peer, ou: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<Vec<u8>>>> {
    let attrs = [
        "userPrincipalName",
        "mail",
        "proxyAddresses",
        "mailNickname",
        "displayName",
        "givenName",
        "sAMAccountName",
        "targetAddress",
    ];
    let mut args = vec!["-LLL", "-o", "ldif-wrap=no", "-b", ou, "(objectClass=*)"];
    args.extend(attrs);
    let text = String::from_utf8(ldapsearch(peer, &args)).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<Vec<u8>>>> = BTreeMap::new();
    for r in read_fixture_ldif(&text) {
        let entry = out.entry(r.dn.to_lowercase()).or_default();
        for (k, v) in r.attrs {
            entry.entry(k.to_lowercase()).or_default().insert(v);
        }
    }
    out
}

/// Every (dn, attribute, value) the report found something on: what must come back after undo.
fn flagged_values(report: &Value) -> BTreeSet<(String, String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["source"] == "corp")
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_owned();
            (s("dn"), s("attribute"), s("value"), s("rule"))
        })
        .collect()
}

#[tokio::test]
async fn fixture_users_are_flagged_fixed_with_ldapmodify_and_restored_with_the_undo_ldif() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let name = unique("assess");
    let ou = make_ou(&mut ldap, &peer.base, &name).await;
    let records = read_fixture_ldif(include_str!("../fixtures/ad-sample.ldif"));
    // A tag keeps this copy's UPNs unique in the shared Samba; each defect stays as written.
    let tag = &name[name.len() - 6..].replace('x', "");
    load_ad_sample(&mut ldap, &peer, &ou, &records, tag).await;
    // The duplicate proxyAddress: Carol also claims Alice's secondary address.
    add_value(
        &mut ldap,
        &format!("CN=Carol Space,{ou}"),
        "proxyAddresses",
        "smtp:alice.anders@corp.example.com",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncctl.toml");
    std::fs::write(
        &config,
        format!(
            "[[connectors]]\nname = \"corp\"\ntype = \"ldap\"\nflavor = \"ad\"\nurl = \"{}\"\nca_file = \"{}\"\nbind_dn = \"{}\"\npassword_file = \"{}\"\nbase_dn = \"{}\"\ninclude_ous = [\"{ou}\"]\n",
            peer.ldaps_url,
            peer.ca.display(),
            peer.bind_dn,
            peer.password_file.display(),
            peer.base
        ),
    )
    .unwrap();
    let fix = dir.path().join("fix.ldif");
    let csv = dir.path().join("findings.csv");
    let (code, before) =
        assess(&config, &["--fix-ldif", fix.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    assert_eq!(code, 2, "blocking errors exit 2: {before:#}");
    assert_eq!(before["verdict"], "errors");
    let flags = flagged(&before);
    let has = |cn: &str, rule: &str| flags.get(cn).is_some_and(|r| r.contains(rule));
    assert!(has("Bob Brown", "upn-suffix-non-routable"), "{flags:?}");
    assert!(has("Carol Space", "upn-invalid-character"), "{flags:?}");
    assert!(has("Dave Comma", "upn-invalid-character"), "{flags:?}");
    assert!(has("Frank Umlaut", "upn-diacritic"), "{flags:?}");
    assert!(has("Erin NoUPN", "upn-missing"), "{flags:?}");
    assert!(has("Alice Anders", "proxy-duplicate") && has("Carol Space", "proxy-duplicate"), "{flags:?}");
    // Nothing else: Alice is clean apart from the duplicate; the groups (Nested Group has no
    // mail, so IdFix skips it as a security group without mail) carry no finding.
    assert_eq!(flags.get("Alice Anders").map(BTreeSet::len), Some(1), "{flags:?}");
    assert!(!flags.contains_key("Sync Group") && !flags.contains_key("Nested Group"), "{flags:?}");
    let source = &before["sources"][0];
    assert_eq!((source["objects_read"].as_u64(), source["objects_assessed"].as_u64()), (Some(8), Some(7)));
    assert_eq!(source["skipped"]["security-group-without-mail"], 1);
    // The UPN suffix inventory knows the forest's suffixes.
    let suffixes: BTreeMap<&str, u64> = before["upn_suffixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["suffix"].as_str().unwrap(), s["users"].as_u64().unwrap()))
        .collect();
    assert_eq!(suffixes, BTreeMap::from([("corp.example.com", 4), ("corp.local", 1), ("(none)", 1)]));

    // The CSV speaks IdFix's columns, with the suggested update.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("DISTINGUISHEDNAME,COMMONNAME,OBJECTCLASS,ATTRIBUTE,ERROR,VALUE,UPDATE,ACTION")
    );
    let bob =
        lines.find(|l| l.starts_with(&format!("\"CN=Bob Brown,{ou}\""))).unwrap_or_else(|| panic!("{text}"));
    assert!(
        bob.ends_with(&format!(
            "userPrincipalName,topleveldomain,bob{tag}@corp.local,bob{tag}@corp.example.com,EDIT"
        )),
        "{bob}"
    );

    // The fix LDIF, applied by ldapmodify, makes every flagged object clean.
    let original = snapshot(&peer, &ou);
    let fix_text = std::fs::read_to_string(&fix).unwrap();
    assert!(
        fix_text.contains("changetype: modify") && fix_text.contains("delete: proxyAddresses"),
        "{fix_text}"
    );
    ldapmodify(&peer, &fix);
    let (code, after) = assess(&config, &[]);
    let flags_after = flagged(&after);
    assert!(flags_after.is_empty(), "still flagged after the fix: {flags_after:?}\n{fix_text}");
    assert_eq!(code, 0, "nothing but notes left: {after:#}");
    assert_eq!(after["verdict"], "ready");
    let fixed = snapshot(&peer, &ou);
    let value = |snap: &BTreeMap<String, BTreeMap<String, BTreeSet<Vec<u8>>>>, cn: &str, attr: &str| {
        snap[&format!("cn={cn},{ou}").to_lowercase()].get(attr).cloned().unwrap_or_default()
    };
    let one = |s: String| BTreeSet::from([s.into_bytes()]);
    assert_eq!(value(&fixed, "Bob Brown", "userprincipalname"), one(format!("bob{tag}@corp.example.com")));
    assert_eq!(
        value(&fixed, "Carol Space", "userprincipalname"),
        one(format!("carolsmith{tag}@corp.example.com"))
    );
    assert_eq!(
        value(&fixed, "Frank Umlaut", "userprincipalname"),
        one(format!("frank{tag}@corp.example.com"))
    );
    // Only the duplicate left Carol's proxyAddresses; Alice keeps hers.
    assert_eq!(value(&fixed, "Carol Space", "proxyaddresses"), BTreeSet::new());
    assert_eq!(
        value(&fixed, "Alice Anders", "proxyaddresses"),
        value(&original, "Alice Anders", "proxyaddresses")
    );

    // The undo LDIF puts back exactly what was there: the same findings on the same values.
    let undo = dir.path().join("fix.undo.ldif");
    ldapmodify(&peer, &undo);
    let (code, restored) = assess(&config, &[]);
    assert_eq!(code, 2);
    assert_eq!(flagged_values(&restored), flagged_values(&before));
    // Every value of every entry is back, not just the flagged ones.
    assert_eq!(snapshot(&peer, &ou), original);

    // Several sources at once: the live DC and an LDIF export of the sample. Duplicates are
    // found across them, case-insensitively, and name the other source.
    let export = workspace_root().join("examples/corp-export.ldif");
    let (_, both) = assess(&config, &["--connector", "corp", "--ldif", export.to_str().unwrap()]);
    let names: Vec<&str> =
        both["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["corp", "corp-export"]);
    let across = both["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["source"] == "corp"
                && f["common_name"] == "Alice Anders"
                && f["rule"] == "proxy-duplicate"
                && f["value"] == "SMTP:alice@corp.example.com"
        })
        .unwrap_or_else(|| panic!("no cross-source duplicate: {both:#}"));
    assert!(
        across["message"]
            .as_str()
            .unwrap()
            .contains("CN=Alice Anders,CN=Users,DC=corp,DC=example,DC=com (corp-export)"),
        "{across}"
    );
}

#[test]
fn the_rule_catalogue_prints_every_rule_and_exit_codes_are_documented() {
    let out = Command::new(syncctl_bin()).args(["assess", "--rules"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for id in [
        "upn-suffix-non-routable",
        "proxy-duplicate",
        "match-invalid-soft-match",
        "mail-sender-relay-mismatch",
    ] {
        assert!(text.contains(id), "{id} missing from:\n{text}");
    }
    let out = Command::new(syncctl_bin()).args(["assess", "--rules", "--json"]).output().unwrap();
    let rules: Value = serde_json::from_slice(&out.stdout).unwrap();
    let printed: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let catalogue: Vec<&str> = syncctl_assess::catalogue::ALL.iter().map(|r| r.id).collect();
    assert_eq!(printed, catalogue);
    for id in &catalogue {
        assert!(text.contains(id), "{id} missing from the table:\n{text}");
    }
    let help = Command::new(syncctl_bin()).args(["assess", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("0 ready, 1 warnings only, 2 blocking errors"), "{help}");
}
