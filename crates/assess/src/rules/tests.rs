//! One table per rule: values that must pass and values that must be flagged, including IdFix's
//! false positives (which must pass here) and what IdFix misses (which must be flagged).

use std::collections::BTreeSet;

use syncctl_core::{Anchor, AttrValues, Attributes, CsObject, Dn};

use super::*;
use crate::tenant::TenantSnapshot;

fn object(class: &str, attrs: &[(&str, &[&str])]) -> CsObject {
    let mut attributes = Attributes::new();
    for (name, values) in attrs {
        attributes.insert(*name, AttrValues::String(values.iter().map(|v| (*v).to_owned()).collect()));
    }
    CsObject {
        anchor: Anchor::new("a").unwrap(),
        immutable_id: None,
        dn: Dn::parse("CN=Test,CN=Users,DC=corp,DC=example,DC=com").unwrap(),
        object_class: class.into(),
        attributes,
    }
}

/// Rule ids hit, with their severity, for one value of one attribute (a group for attributes a
/// user would need a UPN for, so that `upn-missing` does not get in the way).
fn hits_with(
    class: &str,
    attr: &str,
    value: &str,
    tenant: Option<&TenantSnapshot>,
) -> BTreeSet<(String, Severity)> {
    let mut attrs: Vec<(&str, &[&str])> = vec![(attr, std::slice::from_ref(&value))];
    if class == "user" && attr != "userPrincipalName" {
        attrs.push(("userPrincipalName", &["someone@corp.example.com"]));
    }
    let ctx = RuleContext { tenant };
    check_object(&object(class, &attrs), &ctx)
        .into_iter()
        .flat_map(|i| i.hits.into_iter().map(|h| (h.rule.id.to_owned(), h.severity)))
        .collect()
}

fn ids(class: &str, attr: &str, value: &str) -> BTreeSet<String> {
    hits_with(class, attr, value, None).into_iter().map(|(id, _)| id).collect()
}

/// Every `valid` value passes without error or warning; every `(value, rule)` is flagged by
/// that rule.
fn table(class: &str, attr: &str, valid: &[&str], invalid: &[(&str, &str)]) {
    for v in valid {
        let bad: Vec<(String, Severity)> =
            hits_with(class, attr, v, None).into_iter().filter(|(_, s)| *s != Severity::Info).collect();
        assert!(bad.is_empty(), "{attr} {v:?} should be valid, got {bad:?}");
    }
    for (v, rule) in invalid {
        let got = ids(class, attr, v);
        assert!(got.contains(*rule), "{attr} {v:?} should hit {rule}, got {got:?}");
    }
}

#[test]
fn user_principal_name() {
    let local65 = format!("{}@corp.example.com", "a".repeat(65));
    let local64 = format!("{}@corp.example.com", "a".repeat(64));
    let domain49 = format!("x@{}.example.com", "d".repeat(37));
    let total114 = format!("{}@{}.{}.example.com", "a".repeat(60), "b".repeat(20), "c".repeat(20));
    table(
        "user",
        "userPrincipalName",
        &[
            "alice@corp.example.com",
            // IdFix false positives: the apostrophe is allowed; these are real TLDs.
            "o'brien@corp.example.com",
            "x@contoso.cloud",
            "x@bank.swiss",
            "x@shop.africa",
            "x@uni.edu.au",
            "a.b-c_d!#^~@contoso.com",
            &local64,
        ],
        &[
            ("carol smith@corp.example.com", "upn-invalid-character"),
            ("dave,x@corp.example.com", "upn-invalid-character"),
            ("a%b@corp.example.com", "upn-invalid-character"),
            ("a$b@corp.example.com", "upn-invalid-character"),
            ("a\tb@corp.example.com", "upn-invalid-character"),
            ("fränk@corp.example.com", "upn-diacritic"),
            // Diacritics beyond the six IdFix knows (äëïöüÿ).
            ("ñandu@corp.example.com", "upn-diacritic"),
            ("søren@corp.example.com", "upn-diacritic"),
            ("łukasz@corp.example.com", "upn-diacritic"),
            ("josé@corp.example.com", "upn-diacritic"),
            ("bob@corp.local", "upn-suffix-non-routable"),
            // What IdFix misses: .int, single label, IP literal.
            ("x@corp.int", "upn-suffix-non-routable"),
            ("x@corp", "upn-suffix-non-routable"),
            ("x@10.0.0.1", "upn-suffix-non-routable"),
            ("x@[10.0.0.1]", "upn-invalid-character"),
            ("x@ad.lan", "upn-suffix-non-routable"),
            ("x@contoso.con", "upn-suffix-non-routable"),
            (&local65, "upn-local-part-too-long"),
            (&domain49, "upn-domain-too-long"),
            (&total114, "upn-too-long"),
            ("alice.corp.example.com", "upn-format"),
            ("a@b@corp.example.com", "upn-format"),
            ("@corp.example.com", "upn-format"),
            (".alice@corp.example.com", "upn-local-part"),
            ("alice.@corp.example.com", "upn-local-part"),
            ("al..ice@corp.example.com", "upn-local-part"),
            ("x@corp_x.example.com", "upn-domain-part"),
            ("x@-corp.example.com", "upn-domain-part"),
        ],
    );
    assert_eq!(total114.len(), 114);
    assert_eq!(domain49.split('@').nth(1).map(str::len), Some(49));
}

#[test]
fn upn_missing_only_for_users_and_federation_characters_are_informational() {
    let user = object("user", &[("sAMAccountName", &["erin"])]);
    let ctx = RuleContext { tenant: None };
    let issues = check_object(&user, &ctx);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].hits[0].rule.id, "upn-missing");
    assert_eq!(issues[0].proposal, Proposal::Upn { local: "erin".into(), domain: None });
    assert!(check_object(&object("group", &[("sAMAccountName", &["g"])]), &ctx).is_empty());
    assert!(check_object(&object("contact", &[("mail", &["c@corp.example.com"])]), &ctx).is_empty());
    let hits = hits_with("user", "userPrincipalName", "o'brien@corp.example.com", None);
    assert_eq!(hits, BTreeSet::from([("upn-federation-character".to_owned(), Severity::Info)]));
    // Raised to a warning when the tenant says the domain is federated.
    let tenant = TenantSnapshot::from_graph_json(
        r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true, "authenticationType": "Federated"}]}}"#,
    )
    .unwrap();
    let hits = hits_with("user", "userPrincipalName", "o'brien@corp.example.com", Some(&tenant));
    assert_eq!(hits, BTreeSet::from([("upn-federation-character".to_owned(), Severity::Warning)]));
}

#[test]
fn upn_suffixes_against_the_tenant() {
    let tenant = TenantSnapshot::from_graph_json(
        r#"{"domains": {"value": [
            {"id": "contoso.onmicrosoft.com", "isVerified": true, "isInitial": true},
            {"id": "corp.example.com", "isVerified": true},
            {"id": "corp.int", "isVerified": true}]}}"#,
    )
    .unwrap();
    let got = |v: &str| -> BTreeSet<String> {
        hits_with("user", "userPrincipalName", v, Some(&tenant)).into_iter().map(|(id, _)| id).collect()
    };
    assert!(got("alice@corp.example.com").is_empty());
    assert_eq!(got("x@fabrikam.com"), BTreeSet::from(["upn-suffix-unverified".to_owned()]));
    // A non-routable suffix the tenant verified is fine (corp.int).
    assert!(got("x@corp.int").is_empty());
    assert_eq!(got("x@corp.local"), BTreeSet::from(["upn-suffix-non-routable".to_owned()]));
    // A fix of another defect keeps a verified domain, even one that is not routable on the
    // internet: the tenant accepts it.
    let ctx = RuleContext { tenant: Some(&tenant) };
    assert_eq!(
        check_upn("john doe@corp.int", &ctx).map(|i| i.proposal),
        Some(Proposal::Upn { local: "johndoe".into(), domain: Some("corp.int".into()) })
    );
    let ctx = RuleContext { tenant: None };
    assert_eq!(
        check_upn("john doe@corp.int", &ctx).map(|i| i.proposal),
        Some(Proposal::Upn { local: "johndoe".into(), domain: None })
    );
}

#[test]
fn upn_fix_proposals() {
    let ctx = RuleContext { tenant: None };
    let p = |v: &str| check_upn(v, &ctx).map(|i| i.proposal);
    let upn =
        |l: &str, d: Option<&str>| Some(Proposal::Upn { local: l.into(), domain: d.map(str::to_owned) });
    assert_eq!(p("carol smith@corp.example.com"), upn("carolsmith", Some("corp.example.com")));
    assert_eq!(p("dave,x@corp.example.com"), upn("davex", Some("corp.example.com")));
    assert_eq!(p("fränk@corp.example.com"), upn("frank", Some("corp.example.com")));
    assert_eq!(p("bob@corp.local"), upn("bob", None));
    assert_eq!(p(".a..b.@corp.example.com"), upn("a.b", Some("corp.example.com")));
    assert_eq!(p("erin"), upn("erin", None));
    assert_eq!(p("alice@corp.example.com"), None);
    assert_eq!(sanitize_upn_local(&"x".repeat(70)).len(), 64);
}

#[test]
fn proxy_addresses() {
    let long = format!("smtp:{}@corp.example.com", "a".repeat(240));
    table(
        "user",
        "proxyAddresses",
        &[
            "SMTP:alice@corp.example.com",
            "smtp:a.b@contoso.cloud",
            // IdFix false positive: X500 with spaces and parentheses is valid.
            "X500:/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=5a1b-Alice",
            "x500:/o=Contoso/ou=First Administrative Group/cn=Recipients/cn=o'brien",
            "X400:c=US;a= ;p=Contoso;o=Exchange;s=Anders;g=Alice;",
            "sip:alice@corp.example.com",
            "eum:1234;phone-context=dialplan.corp.example.com",
        ],
        &[
            ("smtp:al ice@corp.example.com", "proxy-invalid-character"),
            ("smtp:alice@corp.example.com;", "proxy-invalid-character"),
            ("smtp:<alice>@corp.example.com", "proxy-invalid-character"),
            ("smtp:älice@corp.example.com", "proxy-diacritic"),
            ("alice@corp.example.com", "proxy-format"),
            ("smtp:", "proxy-format"),
            ("smtp::alice@corp.example.com", "proxy-format"),
            ("smtp:alice@corp.local", "address-domain-non-routable"),
            ("smtp:alice@corp.int", "address-domain-non-routable"),
            ("sip:jörg@corp.example.com", "proxy-diacritic"),
            ("smtp:alice", "proxy-format"),
            ("X500:/o=[Contoso]/cn=x", "proxy-invalid-character"),
            ("X500:/o=\"Contoso\"/cn=x", "proxy-invalid-character"),
            ("sip:a b@corp.example.com", "proxy-invalid-character"),
            (&long, "proxy-too-long"),
        ],
    );
    let ctx = RuleContext { tenant: None };
    let two = object(
        "user",
        &[
            ("userPrincipalName", &["a@corp.example.com"]),
            ("proxyAddresses", &["SMTP:a@corp.example.com", "SMTP:b@corp.example.com"]),
        ],
    );
    let ids: Vec<&str> =
        check_object(&two, &ctx).iter().flat_map(|i| i.hits.iter().map(|h| h.rule.id)).collect();
    assert_eq!(ids, ["proxy-multiple-primary"]);
    let tenant = TenantSnapshot::from_graph_json(
        r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true}]}}"#,
    )
    .unwrap();
    let got = hits_with("user", "proxyAddresses", "smtp:a@fabrikam.com", Some(&tenant));
    assert_eq!(got, BTreeSet::from([("address-domain-unverified".to_owned(), Severity::Warning)]));
    // Contacts hold other organizations' addresses: their domains are not the tenant's.
    assert!(hits_with("contact", "proxyAddresses", "SMTP:ext@fabrikam.com", Some(&tenant)).is_empty());
    assert!(hits_with("contact", "mail", "ext@fabrikam.com", Some(&tenant)).is_empty());
    // Non-routable and unverified domains are warnings (Exchange Online drops the address).
    let got = hits_with("user", "mail", "a@corp.local", None);
    assert_eq!(got, BTreeSet::from([("address-domain-non-routable".to_owned(), Severity::Warning)]));
    assert_eq!(
        check_proxy("smtp:al ice@corp.example.com", false, &ctx).map(|i| i.proposal),
        Some(Proposal::Edit("smtp:alice@corp.example.com".into()))
    );
    // An address on an IP literal is flagged, and no fix is guessed: it needs a real domain.
    for v in ["smtp:al ice@[10.0.0.1]", "smtp:al ice@10.0.0.1"] {
        let issue = check_proxy(v, false, &ctx).unwrap();
        assert!(!issue.hits.is_empty(), "{v}");
        assert_eq!(issue.proposal, Proposal::None, "{v}");
    }
    let issue = check_mail("al ice@[10.0.0.1]", false, &ctx).unwrap();
    assert_eq!(issue.proposal, Proposal::None);
}

#[test]
fn mail() {
    let long = format!("{}@corp.example.com", "a".repeat(250));
    table(
        "contact",
        "mail",
        &["alice@corp.example.com", "o'brien+tag@contoso.cloud"],
        &[
            ("al ice@corp.example.com", "mail-invalid-character"),
            ("alice@corp.example.com,", "mail-invalid-character"),
            ("älice@corp.example.com", "mail-diacritic"),
            ("al..ice@corp.example.com", "mail-format"),
            ("alice", "mail-format"),
            ("alice@corp_x.example.com", "mail-format"),
            (&long, "mail-too-long"),
        ],
    );
}

#[test]
fn mail_nickname_display_name_given_name() {
    table(
        "group",
        "mailNickname",
        &["alice", "a.b"],
        &[
            (".alice", "mailnickname-leading-period"),
            (&"n".repeat(65), "mailnickname-too-long"),
            ("zoë", "non-ascii"),
        ],
    );
    table(
        "group",
        "displayName",
        &["Zoë Ågren", &"d".repeat(256)],
        &[(" ", "displayname-blank"), (&"d".repeat(257), "displayname-too-long")],
    );
    table("group", "givenName", &[&"g".repeat(64)], &[(&"g".repeat(65), "givenname-too-long")]);
    let ctx = RuleContext { tenant: None };
    let blank = object("group", &[("displayName", &["  "]), ("cn", &["Sales"])]);
    assert_eq!(check_object(&blank, &ctx)[0].proposal, Proposal::Edit("Sales".into()));
}

#[test]
fn sam_account_name_and_target_address() {
    table(
        "user",
        "sAMAccountName",
        &["alice", &"s".repeat(20)],
        &[
            (&"s".repeat(21), "samaccountname-too-long"),
            ("a/b", "samaccountname-invalid-character"),
            ("o'neil", "samaccountname-invalid-character"),
            ("a[1]", "samaccountname-invalid-character"),
            ("zoë", "non-ascii"),
        ],
    );
    // The 20-character limit is for users only.
    assert!(ids("group", "sAMAccountName", &"s".repeat(21)).is_empty());
    table(
        "contact",
        "targetAddress",
        &["SMTP:alice@contoso.mail.onmicrosoft.com"],
        &[
            ("SMTP:alice@corp.example.com;", "targetaddress-invalid-character"),
            ("SMTP:<alice>@corp.example.com", "targetaddress-invalid-character"),
            (&format!("SMTP:{}@x.com", "t".repeat(250)), "targetaddress-too-long"),
            ("SMTP:zoë@corp.example.com", "non-ascii"),
        ],
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn errors_and_warnings(value: &str) -> Vec<&'static str> {
        let ctx = RuleContext { tenant: None };
        check_upn(value, &ctx)
            .map(|i| i.hits.into_iter().filter(|h| h.severity != Severity::Info).map(|h| h.rule.id).collect())
            .unwrap_or_default()
    }

    proptest! {
        /// Whatever the UPN, a suggested fix is itself clean: no error or warning.
        #[test]
        fn a_suggested_upn_is_clean(
            local in "[a-zA-Z0-9 .,'&%!#^~_äöüéñø()<>\\[\\]-]{0,80}",
            domain in prop_oneof![
                Just("corp.example.com".to_owned()),
                Just("corp.local".to_owned()),
                Just("corp".to_owned()),
                Just("corp_x.example.com".to_owned()),
                "[a-z]{1,10}\\.(com|net|swiss|local|int)",
            ],
        ) {
            let upn = format!("{local}@{domain}");
            let ctx = RuleContext { tenant: None };
            if let Some(ValueIssue { proposal: Proposal::Upn { local, domain }, .. }) = check_upn(&upn, &ctx) {
                let fixed = format!("{local}@{}", domain.unwrap_or_else(|| "corp.example.com".into()));
                prop_assert!(errors_and_warnings(&fixed).is_empty(), "{upn} -> {fixed}: {:?}", errors_and_warnings(&fixed));
            }
        }

        /// The rules never panic, whatever the value and attribute.
        #[test]
        fn rules_take_any_text(value in "\\PC{0,300}", attr in prop_oneof![
            Just("userPrincipalName"), Just("mail"), Just("proxyAddresses"), Just("mailNickname"),
            Just("sAMAccountName"), Just("targetAddress"), Just("displayName"), Just("givenName"),
        ]) {
            let _ = ids("user", attr, &value);
        }
    }
}
