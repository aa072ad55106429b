use std::fmt::Write as _;
use std::path::Path;

use syncctl_core::ldif::{push_attr_value, push_dn};
use syncctl_core::{AttrValues, ImmutableId, ImportChange, ImportMode, Watermark};

use super::*;

const GUID: [u8; 16] =
    [0x72, 0x7b, 0x53, 0xee, 0xb5, 0x9e, 0x4a, 0x47, 0x82, 0x86, 0x43, 0x13, 0x09, 0x13, 0x3f, 0xd9];

fn guid(n: u32) -> [u8; 16] {
    let mut g = GUID;
    g[12..].copy_from_slice(&n.to_be_bytes());
    g
}

fn user(out: &mut String, dn: &str, n: u32) {
    push_dn(out, dn);
    out.push_str(
        "objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\n",
    );
    push_attr_value(out, "objectGUID", &guid(n));
    let cn = dn.split(',').next().unwrap_or_default().trim_start_matches("CN=");
    push_attr_value(out, "cn", cn.as_bytes());
    push_attr_value(out, "userPrincipalName", format!("u{n}@corp.example.com").as_bytes());
    out.push_str("userAccountControl: 512\nuSNChanged: 4711\nwhenCreated: 20260101000000.0Z\n\n");
}

fn connector(path: &Path, extra: &str) -> LdifConnector {
    let config: LdifConfig =
        toml::from_str(&format!("path = \"{}\"\n{extra}", path.display())).unwrap_or_else(|e| panic!("{e}"));
    LdifConnector::new("file", config).unwrap()
}

struct Outcome {
    batches: Vec<ImportBatch>,
    result: std::result::Result<ImportSummary, ConnectorFault>,
}

impl Outcome {
    fn changes(&self) -> Vec<&ImportChange> {
        self.batches.iter().flat_map(|b| &b.changes).collect()
    }
    fn objects(&self) -> Vec<&syncctl_core::CsObject> {
        self.changes()
            .into_iter()
            .filter_map(|c| match c {
                ImportChange::Present(o) => Some(o),
                _ => None,
            })
            .collect()
    }
    fn errors(&self) -> Vec<&syncctl_core::ObjectError> {
        self.changes()
            .into_iter()
            .filter_map(|c| match c {
                ImportChange::Invalid(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

async fn run(c: &mut LdifConnector, mode: ImportMode, watermark: Option<Watermark>) -> Outcome {
    let (tx, mut rx) = mpsc::channel(4);
    let collect = async move {
        let mut batches = Vec::new();
        while let Some(b) = rx.recv().await {
            batches.push(b);
        }
        batches
    };
    let (result, batches) = tokio::join!(c.import(ImportRequest { mode, watermark }, tx), collect);
    Outcome { batches, result }
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("export.ldif");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_full_import_sends_the_objects_in_scope() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("version: 1\n\n# corp\n");
    user(&mut text, "CN=Alice Anders,OU=Staff,DC=corp,DC=example,DC=com", 1);
    user(&mut text, "CN=Old,OU=Gone,OU=Staff,DC=corp,DC=example,DC=com", 2);
    user(&mut text, "CN=Other,DC=elsewhere,DC=com", 3);
    text.push_str(
        "dn: CN=PC1,OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: user\nobjectClass: computer\n",
    );
    push_attr_value(&mut text, "objectGUID", &guid(4));
    text.push_str("\ndn: OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: organizationalUnit\n\n");
    text.push_str(
        "dn: CN=krbtgt,OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: user\nisCriticalSystemObject: TRUE\n",
    );
    push_attr_value(&mut text, "objectGUID", &guid(5));
    text.push_str("\ndn: CN=Team,OU=Staff,DC=corp,DC=example,DC=com\nobjectClass: group\n");
    push_attr_value(&mut text, "objectGUID", &guid(6));
    text.push_str(
        "member;range=0-1: CN=Alice Anders,OU=Staff,DC=corp,DC=example,DC=com\n\
         member;range=0-1: CN=Old,OU=Gone,OU=Staff,DC=corp,DC=example,DC=com\n\
         member;range=2-*: CN=Other,DC=elsewhere,DC=com\n\n\
         # search result\nsearch: 2\nresult: 0 Success\n",
    );
    let path = write(dir.path(), &text);
    let mut c = connector(
        &path,
        "base_dn = \"DC=corp,DC=example,DC=com\"\nexclude_ous = [\"OU=Gone,OU=Staff,DC=corp,DC=example,DC=com\"]\n",
    );
    assert_eq!(c.kind(), "ldif");
    assert_eq!(c.endpoint(), path.display().to_string());
    let caps = c.capabilities();
    assert!(caps.full_import && !caps.delta_import && !caps.export);
    assert_eq!(caps.object_types, ["user", "group", "contact"]);

    let out = run(&mut c, ImportMode::Full, None).await;
    let summary = out.result.as_ref().unwrap();
    assert!(summary.sweep_unseen);
    assert_eq!((summary.method.as_str(), summary.pages), ("ldif", 7));
    let mark = summary.final_watermark.clone().unwrap();
    assert_eq!((mark.kind.as_str(), mark.server.as_str()), ("ldif", path.display().to_string().as_str()));
    assert_eq!(mark.value, blake3::hash(text.as_bytes()).to_hex().as_bytes());

    let objects = out.objects();
    let dns: Vec<&str> = objects.iter().map(|o| o.dn.as_str()).collect();
    assert_eq!(
        dns,
        ["CN=Alice Anders,OU=Staff,DC=corp,DC=example,DC=com", "CN=Team,OU=Staff,DC=corp,DC=example,DC=com"]
    );
    let alice = objects[0];
    assert_eq!(alice.anchor.as_str(), ImmutableId::from_object_guid(&guid(1)).unwrap().to_base64());
    assert_eq!(alice.immutable_id, Some(ImmutableId::from_object_guid(&guid(1)).unwrap()));
    assert_eq!(alice.object_class, "user");
    assert_eq!(alice.attributes.get("userAccountControl"), Some(&AttrValues::Integer(vec![512])));
    assert!(alice.attributes.get("uSNChanged").is_none(), "bookkeeping attributes are not kept");
    let team = objects[1];
    assert_eq!(
        team.attributes.get("member").map(AttrValues::len),
        Some(3),
        "ranges are merged into one attribute: {:?}",
        team.attributes
    );
    assert!(out.errors().is_empty());
}

#[tokio::test]
async fn batches_hold_a_thousand_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for n in 0..2500 {
        user(&mut text, &format!("CN=User {n},CN=Users,DC=corp,DC=com"), n);
    }
    let path = write(dir.path(), &text);
    let out = run(&mut connector(&path, ""), ImportMode::Full, None).await;
    let sizes: Vec<usize> = out.batches.iter().map(|b| b.changes.len()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert!(out.batches.iter().all(|b| b.watermark.is_none()));
    assert_eq!(out.result.unwrap().pages, 2500);
}

#[tokio::test]
async fn entries_the_decoder_refuses_are_per_object_errors_naming_the_dn() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    text.push_str("dn: CN=Short,CN=Users,DC=corp,DC=com\nobjectClass: user\n");
    push_attr_value(&mut text, "objectGUID", &GUID[..15]);
    text.push_str("\ndn: CN=NoGuid,CN=Users,DC=corp,DC=com\nobjectClass: user\n\n");
    text.push_str("dn: CN=Text,CN=Users,DC=corp,DC=com\nobjectClass: user\n");
    push_attr_value(&mut text, "objectGUID", &guid(1));
    push_attr_value(&mut text, "displayName", b"\xc3\x28");
    text.push('\n');
    text.push_str("dn: CN=Big,CN=Users,DC=corp,DC=com\nobjectClass: group\n");
    push_attr_value(&mut text, "objectGUID", &guid(2));
    text.push_str("member;range=0-1: CN=a,DC=corp,DC=com\nmember;range=0-1: CN=b,DC=corp,DC=com\n\n");
    user(&mut text, "CN=Fine,CN=Users,DC=corp,DC=com", 3);
    let path = write(dir.path(), &text);
    let out = run(&mut connector(&path, ""), ImportMode::Full, None).await;
    assert!(out.result.is_ok());
    let errors = out.errors();
    let seen: Vec<(&str, &str)> = errors.iter().map(|e| (e.dn.as_str(), e.kind.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("CN=Short,CN=Users,DC=corp,DC=com", "invalid-anchor"),
            ("CN=NoGuid,CN=Users,DC=corp,DC=com", "missing-anchor"),
            ("CN=Text,CN=Users,DC=corp,DC=com", "invalid-value"),
            ("CN=Big,CN=Users,DC=corp,DC=com", "incomplete-value"),
        ]
    );
    assert_eq!(
        errors[0].message,
        "CN=Short,CN=Users,DC=corp,DC=com: objectGUID must be exactly 16 bytes, got 15 (line 1)"
    );
    assert_eq!(
        errors[2].message,
        "CN=Text,CN=Users,DC=corp,DC=com: a value of `displayName` is not valid UTF-8 (line 8)"
    );
    assert!(errors[2].anchor.is_some(), "a bad value keeps the stored copy of its object");
    assert!(errors[3].anchor.is_some());
    assert!(errors[3].message.contains("only some values of `member` (ranges 0-1)"), "{}", errors[3].message);
    assert_eq!(out.objects().len(), 1);
}

#[tokio::test]
async fn a_malformed_file_stops_the_import_naming_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for n in 0..1200 {
        user(&mut text, &format!("CN=User {n},CN=Users,DC=corp,DC=com"), n);
    }
    let bad_line = text.matches('\n').count() + 3;
    text.push_str("dn: CN=Bad,CN=Users,DC=corp,DC=com\nobjectClass: user\nobjectGUID:: not*base64\n\n");
    user(&mut text, "CN=After,CN=Users,DC=corp,DC=com", 5000);
    let path = write(dir.path(), &text);
    let out = run(&mut connector(&path, ""), ImportMode::Full, None).await;
    let fault = out.result.clone().unwrap_err();
    assert_eq!(fault.kind, FaultKind::Protocol);
    assert_eq!(fault.endpoint, path.display().to_string());
    assert_eq!(
        fault.to_string(),
        format!(
            "{}: line {bad_line}: CN=Bad,CN=Users,DC=corp,DC=com: the value of `objectGUID` is not valid base64 \
             (Invalid symbol 42, offset 3.)",
            path.display()
        )
    );
    // The first full batch went out before the error; the rest did not.
    assert_eq!(out.batches.len(), 1);
    assert_eq!(out.objects().len(), 1000);
}

#[tokio::test]
async fn a_missing_file_is_a_configuration_fault_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.ldif");
    let out = run(&mut connector(&path, ""), ImportMode::Full, None).await;
    let fault = out.result.clone().unwrap_err();
    assert_eq!(fault.kind, FaultKind::Config);
    assert!(
        fault.to_string().starts_with(&format!("{}: cannot open the LDIF file: ", path.display())),
        "{fault}"
    );
    assert!(out.batches.is_empty());
}

#[tokio::test]
async fn change_records_stop_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "dn: CN=A,DC=corp,DC=com\nchangetype: modify\nreplace: cn\ncn: B\n-\n");
    let fault = run(&mut connector(&path, ""), ImportMode::Full, None).await.result.unwrap_err();
    assert!(fault.to_string().contains("line 2: CN=A,DC=corp,DC=com: change records"), "{fault}");
}

#[tokio::test]
async fn a_delta_reads_nothing_for_the_same_file_and_everything_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    user(&mut text, "CN=A,CN=Users,DC=corp,DC=com", 1);
    let path = write(dir.path(), &text);
    let mut c = connector(&path, "");
    let full = run(&mut c, ImportMode::Full, None).await.result.unwrap();
    let mark = full.final_watermark.unwrap();

    let same = run(&mut c, ImportMode::Delta, Some(mark.clone())).await;
    assert!(same.batches.is_empty());
    let summary = same.result.unwrap();
    assert!(!summary.sweep_unseen && summary.final_watermark.is_none());
    assert!(summary.notes[0].contains("unchanged"), "{:?}", summary.notes);

    // Another scope: the same file is read again.
    let mut narrower = connector(&path, "object_types = [\"group\"]\n");
    let other = run(&mut narrower, ImportMode::Delta, Some(mark.clone())).await;
    assert!(other.result.unwrap().sweep_unseen);

    writeln!(text).unwrap();
    user(&mut text, "CN=B,CN=Users,DC=corp,DC=com", 2);
    std::fs::write(&path, &text).unwrap();
    let changed = run(&mut c, ImportMode::Delta, Some(mark.clone())).await;
    assert_eq!(changed.objects().len(), 2);
    let summary = changed.result.unwrap();
    assert!(summary.sweep_unseen, "a delta that read the whole file lets the engine sweep");
    assert!(summary.notes[0].contains("no change log"), "{:?}", summary.notes);
    assert_ne!(summary.final_watermark.unwrap().value, mark.value);

    // A delta without a watermark reads the file too.
    let none = run(&mut c, ImportMode::Delta, None).await;
    assert!(none.result.unwrap().sweep_unseen);
}

#[tokio::test]
async fn an_engine_that_stops_reading_cancels_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for n in 0..3000 {
        user(&mut text, &format!("CN=User {n},CN=Users,DC=corp,DC=com"), n);
    }
    let path = write(dir.path(), &text);
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let fault = connector(&path, "")
        .import(ImportRequest { mode: ImportMode::Full, watermark: None }, tx)
        .await
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Cancelled);
}

#[test]
fn bad_settings_are_refused_when_the_connector_is_built() {
    let config: LdifConfig = toml::from_str("path = \"x\"\nobject_types = [\"printer\"]\n").unwrap();
    let e = LdifConnector::new("file", config).unwrap_err();
    assert!(e.to_string().starts_with("connector `file`: object type `printer`"), "{e}");
}

#[tokio::test]
async fn the_shipped_corp_export_imports_without_errors() {
    // examples/corp-export.ldif: a real ldapsearch export of the AD sample (the sample that
    // `syncctl assess` demos read).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/corp-export.ldif");
    let out =
        run(&mut connector(&path, "base_dn = \"DC=corp,DC=example,DC=com\"\n"), ImportMode::Full, None).await;
    assert_eq!(out.result.as_ref().unwrap().pages, 8);
    assert!(out.errors().is_empty(), "{:?}", out.errors());
    let objects = out.objects();
    assert_eq!(objects.len(), 8);
    assert!(objects.iter().all(|o| o.immutable_id.is_some()));
    let upn = |cn: &str| {
        objects
            .iter()
            .find(|o| o.dn.rdn().map(|r| r.value()) == Some(cn))
            .and_then(|o| o.attributes.first_text("userPrincipalName"))
            .map(str::to_owned)
    };
    assert_eq!(upn("Frank Umlaut").as_deref(), Some("fränk@corp.example.com"));
    assert_eq!(upn("Carol Space").as_deref(), Some("carol smith@corp.example.com"));
    assert_eq!(upn("Erin NoUPN"), None);
    let groups = objects.iter().filter(|o| o.object_class == "group").count();
    assert_eq!(groups, 2);
}
