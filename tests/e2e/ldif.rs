//! LDIF: exports of the Samba AD DC made with the real `ldapsearch` read by the LDIF connector
//! give the connector space a live LDAP read gives; a malformed file stops the run cleanly; what
//! the core LDIF writer writes, the real `ldapmodify` applies.

use std::path::Path;

use syncctl_connector_ldif::{LdifConfig, LdifReader};
use syncctl_core::ImportMode;
use syncctl_core::ldif::{push_attr_value, push_dn};
use syncctl_store::Store;
use syncctl_tests::*;

/// Every CS object of a connector, as comparable rows: anchor, ImmutableID, DN, class,
/// attributes, content hash, state.
async fn space(store: &Store, connector: &str) -> Vec<String> {
    let id = store.connector_id(connector).await.unwrap().unwrap();
    let mut rows: Vec<String> = store
        .cs_objects(id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            format!(
                "{} {:?} {} {} {} {} {}",
                o.anchor,
                o.immutable_id,
                o.dn,
                o.object_class,
                serde_json::to_string(&o.attributes).unwrap(),
                o.content_hash.to_hex(),
                o.state
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A record without its line: DN and attributes.
type Entry = (Vec<u8>, Vec<(String, Vec<Vec<u8>>)>);

/// The records of an export, lines left out, sorted by DN, attributes sorted by name.
fn records(export: &[u8]) -> Vec<Entry> {
    let mut all: Vec<_> = LdifReader::new(export)
        .map(|r| {
            let mut r = r.unwrap();
            r.attrs.sort();
            (r.dn, r.attrs)
        })
        .collect();
    all.sort();
    all
}

fn ldif_config(path: &Path, extra: &str) -> LdifConfig {
    let text = format!("path = \"{}\"\n{extra}", path.display());
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Loads the AD sample (`tests/fixtures/ad-sample.ldif`) into `ou` instead of `CN=Users`:
/// member references follow, sAMAccountNames get a unique suffix and UPNs a unique tag before
/// the `@` (Samba keeps both unique), so that the load runs beside the other tests that load the
/// sample. Returns the DNs in file order.
/// The shipped sample in `ou`, its UPNs tagged so that copies can live side by side.
async fn load_sample(ldap: &mut ldap3::Ldap, peer: &Peer, ou: &str) -> Vec<String> {
    let records = read_fixture_ldif(include_str!("../fixtures/ad-sample.ldif"));
    load_ad_sample(ldap, peer, ou, &records, &unique(".")).await
}

#[tokio::test]
async fn ldapsearch_exports_import_as_the_live_directory_does() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("ldif")).await;
    let dns = load_sample(&mut ldap, &peer, &ou).await;
    // A long value (folded by ldapsearch), values ldapsearch base64-encodes, a contact, and an
    // excluded OU whose user must stay out of both connector spaces.
    let long = format!("{} <not a url> : not base64 #", "A long description, longer than a line. ".repeat(4));
    replace(&mut ldap, &dns[0], "description", &[&long]).await;
    replace(&mut ldap, &dns[1], "displayName", &[" Bøb Brown "]).await;
    add(
        &mut ldap,
        &format!("CN=Zoë Contact,{ou}"),
        &[("objectClass", &["contact"]), ("mail", &["zoe@partner.example.org"]), ("displayName", &["Zoë"])],
    )
    .await;
    let old = make_ou(&mut ldap, &ou, "Old").await;
    let sam = unique("o");
    add(
        &mut ldap,
        &format!("CN=Old User,{old}"),
        &[("objectClass", &["user"]), ("sAMAccountName", &[&sam[sam.len().saturating_sub(18)..]])],
    )
    .await;
    let exclude = format!("exclude_ous = [\"{old}\"]\n");

    let dir = tempfile::tempdir().unwrap();
    // One export as most people make it: -LLL, no wrapping, every user attribute and the GUID.
    let plain =
        ldapsearch(&peer, &["-LLL", "-o", "ldif-wrap=no", "-b", &ou, "(objectClass=*)", "*", "objectGUID"]);
    // One with ldapsearch's defaults: comments, lines folded at 78 columns, and (paged, two
    // entries a page) a result trailer after every page.
    let wrapped = ldapsearch(&peer, &["-E", "pr=2/noprompt", "-b", &ou, "(objectClass=*)", "*"]);
    let wrapped_text = String::from_utf8_lossy(&wrapped);
    assert!(wrapped_text.contains("\n "), "the default export folds long lines");
    assert!(wrapped_text.matches("result: 0 Success").count() >= 2, "{wrapped_text}");
    assert!(wrapped_text.starts_with("# extended LDIF"));
    assert!(!String::from_utf8_lossy(&plain).contains("\n "));
    let plain_path = dir.path().join("plain.ldif");
    let wrapped_path = dir.path().join("wrapped.ldif");
    std::fs::write(&plain_path, &plain).unwrap();
    std::fs::write(&wrapped_path, &wrapped).unwrap();
    // Both hold every entry of the OU (the OUs too), with the same values, whatever the form.
    let entries = records(&plain);
    assert_eq!(entries.len(), dns.len() + 4, "sample, contact, 2 OUs, old user");
    assert_eq!(records(&wrapped), entries);

    let store = Store::open_in_memory().await.unwrap();
    let live = import(&store, "live", &ad_config(&peer, &ou, &exclude), ImportMode::Full).await;
    assert_eq!((live.status.as_str(), live.counts.adds, live.counts.errors), ("success", 9, 0), "{live:?}");
    // Without base_dn every DN in the file is in the base; with it, the same objects.
    let from_plain =
        import_ldif(&store, "plain", &ldif_config(&plain_path, &exclude), ImportMode::Full).await;
    let scoped = format!("{exclude}base_dn = \"{ou}\"\n");
    let from_wrapped =
        import_ldif(&store, "wrapped", &ldif_config(&wrapped_path, &scoped), ImportMode::Full).await;
    for r in [&from_plain, &from_wrapped] {
        assert_eq!((r.status.as_str(), r.counts.adds, r.counts.errors), ("success", 9, 0), "{r:?}");
        assert_eq!((r.method.as_str(), r.pages), ("ldif", entries.len() as u64));
    }
    let live_space = space(&store, "live").await;
    assert_eq!(live_space.len(), 9);
    assert_eq!(space(&store, "plain").await, live_space);
    assert_eq!(space(&store, "wrapped").await, live_space);
    // The anchors are the ImmutableIDs ldapsearch prints.
    for dn in &dns {
        let guid = ldapsearch_object_guid(&peer, dn);
        assert!(live_space.iter().any(|row| row.starts_with(&format!("{guid} "))), "{dn}: {guid}");
    }

    // Imported again, unchanged: nothing to write.
    let again = import_ldif(&store, "wrapped", &ldif_config(&wrapped_path, &scoped), ImportMode::Full).await;
    assert_eq!((again.status.as_str(), again.counts.changes()), ("success", 0), "{again:?}");
    // A delta of an unchanged file reads nothing; of a changed one, reads it all and sweeps.
    let delta = import_ldif(&store, "wrapped", &ldif_config(&wrapped_path, &scoped), ImportMode::Delta).await;
    assert_eq!(
        (delta.status.as_str(), delta.profile, delta.counts.changes()),
        ("success", ImportMode::Delta, 0)
    );
    assert!(delta.notes.iter().any(|n| n.contains("unchanged")), "{delta:?}");
    // Carol's entry taken out of the plain export: the delta reads the whole file and the sweep
    // deletes her.
    let plain_text = String::from_utf8(plain.clone()).unwrap();
    let without: Vec<&str> =
        plain_text.split("\n\n").filter(|block| !block.starts_with("dn: CN=Carol Space,")).collect();
    assert_eq!(without.len() + 1, plain_text.split("\n\n").count());
    std::fs::write(&plain_path, without.join("\n\n")).unwrap();
    let delta = import_ldif(&store, "plain", &ldif_config(&plain_path, &exclude), ImportMode::Delta).await;
    assert_eq!(
        (delta.status.as_str(), delta.profile, delta.counts.deletes, delta.counts.changes()),
        ("success", ImportMode::Delta, 1, 1),
        "{delta:?}"
    );
    assert!(delta.notes.iter().any(|n| n.contains("no change log")), "{delta:?}");
    store.check_integrity().await.unwrap();
}

#[tokio::test]
async fn a_malformed_export_stops_the_run_naming_the_file_and_the_line_and_a_fixed_one_goes_through() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("ldifbad")).await;
    let dns = load_sample(&mut ldap, &peer, &ou).await;
    let good = ldapsearch(&peer, &["-LLL", "-b", &ou, "(objectClass=*)", "*"]);
    let good = String::from_utf8(good).unwrap();
    // Break the objectGUID of the fourth entry: a bad base64 value in the middle of the file.
    let (at, line) = good
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("objectGUID:: "))
        .nth(3)
        .map(|(i, l)| (i + 1, l.to_owned()))
        .unwrap();
    let bad = good.replacen(&line, "objectGUID:: not*base64", 1);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corp export.ldif");
    std::fs::write(&file, &bad).unwrap();
    let config = dir.path().join("syncctl.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"s.db\"\n\n[[connectors]]\nname = \"export\"\ntype = \"ldif\"\npath = \"corp export.ldif\"\n",
    )
    .unwrap();
    let syncctl = |args: &[&str]| {
        std::process::Command::new(syncctl_bin()).arg("--config").arg(&config).args(args).output().unwrap()
    };
    let out = syncctl(&["import", "--connector", "export", "--full"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a stopped run: {stderr}");
    assert!(stderr.contains(&file.display().to_string()), "the file is named: {stderr}");
    assert!(stderr.contains(&format!("line {at}: ")), "the line is named: {stderr}");
    assert!(stderr.contains("objectGUID") && stderr.contains("not valid base64"), "{stderr}");

    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let runs = store.runs(Some("export"), 5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "stopped-server-error");
    assert!(runs[0].notes.contains(&format!("line {at}")), "{runs:?}");
    store.check_integrity().await.unwrap();
    store.close().await;

    std::fs::write(&file, &good).unwrap();
    let out = syncctl(&["import", "--connector", "export", "--full"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    let runs = store.runs(Some("export"), 5).await.unwrap();
    assert_eq!((runs[0].status.as_str(), runs[0].counts.adds), ("success", dns.len() as i64), "{runs:?}");
    assert_eq!(runs[1].status, "stopped-server-error");
    assert_eq!(present_snapshot(&store, "export").await.len(), dns.len());
    store.check_integrity().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn what_the_core_ldif_writer_writes_ldapmodify_applies() {
    let peer = samba();
    let mut ldap = admin(&peer).await;
    let ou = make_ou(&mut ldap, &peer.base, &unique("ldifw")).await;
    let dn = format!("CN=Zoë Writer,{ou}");
    add(&mut ldap, &dn, &[("objectClass", &["contact"]), ("description", &["before"])]).await;

    let long = format!("{}end", "a:b <c> ".repeat(30));
    let values: [(&str, &[u8]); 3] = [
        ("description", long.as_bytes()),
        ("displayName", " Zoë, with spaces around ".as_bytes()),
        ("streetAddress", b"line one\nline two"),
    ];
    let mut text = String::new();
    push_dn(&mut text, &dn);
    text.push_str("changetype: modify\n");
    for (attr, value) in values {
        text.push_str(&format!("replace: {attr}\n"));
        push_attr_value(&mut text, attr, value);
        text.push_str("-\n");
    }
    assert!(text.starts_with("dn:: "), "a non-ASCII DN is base64: {text}");
    assert!(text.contains("\n "), "the long value is folded: {text}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fix.ldif");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("ldapmodify")
        .env("LDAPTLS_CACERT", &peer.ca)
        .args(["-x", "-H", &peer.ldaps_url, "-D", &peer.bind_dn, "-y"])
        .arg(&peer.password_file)
        .arg("-f")
        .arg(&file)
        .output()
        .expect("ldapmodify (ldap-utils) must be installed");
    assert!(out.status.success(), "ldapmodify: {}\n{text}", String::from_utf8_lossy(&out.stderr));

    let export = ldapsearch(
        &peer,
        &["-LLL", "-s", "base", "-b", &dn, "(objectClass=*)", "description", "displayName", "streetAddress"],
    );
    let records = LdifReader::new(&export[..]).collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].dn, dn.as_bytes());
    for (attr, value) in values {
        let got = records[0].attrs.iter().find(|(a, _)| a.eq_ignore_ascii_case(attr)).map(|(_, v)| v.clone());
        assert_eq!(got, Some(vec![value.to_vec()]), "{attr}");
    }
}
