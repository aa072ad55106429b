//! The file formats on a small report: exact CSV and LDIF, reviewed by hand.

use syncctl_core::{Anchor, AttrValues, Attributes, CsObject, Dn, ImmutableId};

use crate::{AssessOptions, Assessor, Report};

fn user(n: u8, cn: &str, attrs: &[(&str, &[&str])]) -> CsObject {
    let mut attributes = Attributes::new();
    attributes.insert("cn", AttrValues::String(vec![cn.into()]));
    for (name, values) in attrs {
        attributes.insert(*name, AttrValues::String(values.iter().map(|v| (*v).to_owned()).collect()));
    }
    let id = ImmutableId::from_object_guid(&[n; 16]).unwrap();
    CsObject {
        anchor: Anchor::from(id),
        immutable_id: Some(id),
        dn: Dn::parse(&format!("CN={cn},CN=Users,DC=corp,DC=example,DC=com")).unwrap(),
        object_class: "user".into(),
        attributes,
    }
}

fn report() -> Report {
    let mut a = Assessor::new(AssessOptions::default());
    let s = a.begin_source("corp", "ldap-ad", "ldaps://dc1");
    a.observe(
        s,
        &user(
            1,
            "Alice",
            &[
                ("userPrincipalName", &["alice@corp.example.com"]),
                ("proxyAddresses", &["SMTP:alice@corp.example.com", "smtp:shared@corp.example.com"]),
            ],
        ),
    );
    a.observe(s, &user(2, "Bob", &[("userPrincipalName", &["bob@corp.local"])]));
    a.observe(
        s,
        &user(
            3,
            "Carol",
            &[
                ("userPrincipalName", &["carol smith@corp.example.com"]),
                ("proxyAddresses", &["SMTP:carol@corp.example.com", "smtp:shared@corp.example.com"]),
            ],
        ),
    );
    a.observe(s, &user(4, "Erin", &[("sAMAccountName", &["erin"])]));
    a.observe(s, &user(5, "Frank", &[("userPrincipalName", &["fränk@corp.example.com"])]));
    a.finish("2026-11-23T10:00:00Z".into(), "syncctl test".into())
}

#[test]
fn csv_has_idfix_columns_one_row_per_value_and_the_suggested_update() {
    let csv = super::csv::to_csv(&report()).unwrap();
    assert_eq!(
        csv,
        "DISTINGUISHEDNAME,COMMONNAME,OBJECTCLASS,ATTRIBUTE,ERROR,VALUE,UPDATE,ACTION\n\
         \"CN=Alice,CN=Users,DC=corp,DC=example,DC=com\",Alice,user,proxyAddresses,duplicate,smtp:shared@corp.example.com,,\n\
         \"CN=Bob,CN=Users,DC=corp,DC=example,DC=com\",Bob,user,userPrincipalName,topleveldomain,bob@corp.local,bob@corp.example.com,EDIT\n\
         \"CN=Carol,CN=Users,DC=corp,DC=example,DC=com\",Carol,user,proxyAddresses,duplicate,smtp:shared@corp.example.com,,REMOVE\n\
         \"CN=Carol,CN=Users,DC=corp,DC=example,DC=com\",Carol,user,userPrincipalName,character,carol smith@corp.example.com,carolsmith@corp.example.com,EDIT\n\
         \"CN=Erin,CN=Users,DC=corp,DC=example,DC=com\",Erin,user,userPrincipalName,blank,,erin@corp.example.com,EDIT\n\
         \"CN=Frank,CN=Users,DC=corp,DC=example,DC=com\",Frank,user,userPrincipalName,character,fränk@corp.example.com,frank@corp.example.com,EDIT\n"
    );
}

#[test]
fn fix_and_undo_ldif() {
    let ldif = super::ldif::to_fix_ldif(&report(), "corp");
    assert_eq!((ldif.objects, ldif.changes), (4, 5));
    let body = |text: &str| text.split_once("version: 1\n\n").map(|(_, b)| b.to_owned()).unwrap();
    assert_eq!(
        body(&ldif.fix),
        "# source corp: fixes upn-suffix-non-routable\n\
         dn: CN=Bob,CN=Users,DC=corp,DC=example,DC=com\n\
         changetype: modify\n\
         replace: userPrincipalName\n\
         userPrincipalName: bob@corp.example.com\n\
         -\n\
         \n\
         # source corp: fixes proxy-duplicate, upn-invalid-character\n\
         dn: CN=Carol,CN=Users,DC=corp,DC=example,DC=com\n\
         changetype: modify\n\
         delete: proxyAddresses\n\
         proxyAddresses: smtp:shared@corp.example.com\n\
         -\n\
         replace: userPrincipalName\n\
         userPrincipalName: carolsmith@corp.example.com\n\
         -\n\
         \n\
         # source corp: fixes upn-missing\n\
         dn: CN=Erin,CN=Users,DC=corp,DC=example,DC=com\n\
         changetype: modify\n\
         replace: userPrincipalName\n\
         userPrincipalName: erin@corp.example.com\n\
         -\n\
         \n\
         # source corp: fixes upn-diacritic\n\
         dn: CN=Frank,CN=Users,DC=corp,DC=example,DC=com\n\
         changetype: modify\n\
         replace: userPrincipalName\n\
         userPrincipalName: frank@corp.example.com\n\
         -\n\
         \n"
    );
    assert!(
        ldif.fix.starts_with(
            "# syncctl assess remediation LDIF, generated 2026-11-23T10:00:00Z by syncctl test.\n"
        )
    );
    let undo = body(&ldif.undo);
    assert!(
        undo.contains(
            "dn: CN=Carol,CN=Users,DC=corp,DC=example,DC=com\n\
         changetype: modify\n\
         replace: userPrincipalName\n\
         userPrincipalName: carol smith@corp.example.com\n\
         -\n\
         add: proxyAddresses\n\
         proxyAddresses: smtp:shared@corp.example.com\n\
         -\n"
        ),
        "{undo}"
    );
    // The missing UPN is deleted again; the umlaut goes back base64-encoded (RFC 2849).
    assert!(
        undo.contains("delete: userPrincipalName\nuserPrincipalName: erin@corp.example.com\n-\n"),
        "{undo}"
    );
    assert!(
        undo.contains(
            "replace: userPrincipalName\nuserPrincipalName:: ZnLDpG5rQGNvcnAuZXhhbXBsZS5jb20=\n-\n"
        ),
        "{undo}"
    );
}

#[test]
fn json_is_the_report() {
    let r = report();
    let v: serde_json::Value = serde_json::from_str(&super::to_json(&r).unwrap()).unwrap();
    assert_eq!(v["verdict"], "errors");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(r.findings.len()));
    assert_eq!(v["remediations"][0]["action"], "EDIT");
}
