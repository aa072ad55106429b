//! The population checks: duplicates across sources, the skip list, tenant matching, the UPN
//! suffix inventory, federation, the mail settings, and the fixes they lead to.

use syncctl_core::{Anchor, AttrValues, Attributes, CsObject, Dn, ImmutableId};

use super::*;
use crate::report::Action;

fn guid(n: u8) -> ImmutableId {
    ImmutableId::from_object_guid(&[n; 16]).unwrap()
}

fn obj(n: u8, dn: &str, class: &str, attrs: &[(&str, &[&str])]) -> CsObject {
    let mut attributes = Attributes::new();
    for (name, values) in attrs {
        attributes.insert(*name, AttrValues::String(values.iter().map(|v| (*v).to_owned()).collect()));
    }
    CsObject {
        anchor: Anchor::from(guid(n)),
        immutable_id: Some(guid(n)),
        dn: Dn::parse(dn).unwrap(),
        object_class: class.into(),
        attributes,
    }
}

fn user(n: u8, cn: &str, upn: Option<&str>, extra: &[(&str, &[&str])]) -> CsObject {
    let dn = format!("CN={cn},CN=Users,DC=corp,DC=example,DC=com");
    let sam = cn.to_lowercase().replace(' ', "");
    let sam = sam.as_str();
    let mut attrs: Vec<(&str, &[&str])> =
        vec![("cn", std::slice::from_ref(&cn)), ("sAMAccountName", std::slice::from_ref(&sam))];
    let upn_values;
    if let Some(u) = upn {
        upn_values = [u];
        attrs.push(("userPrincipalName", &upn_values));
    }
    attrs.extend_from_slice(extra);
    obj(n, &dn, "user", &attrs)
}

fn assess(objects: &[CsObject], options: AssessOptions) -> Report {
    let mut a = Assessor::new(options);
    let s = a.begin_source("corp-ad", "ldap-ad", "ldaps://dc1");
    for o in objects {
        a.observe(s, o);
    }
    a.finish("2026-11-23T00:00:00Z".into(), "syncctl test".into())
}

fn rules_of<'a>(report: &'a Report, cn: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> =
        report.findings.iter().filter(|f| f.dn.starts_with(&format!("CN={cn},"))).map(|f| f.rule).collect();
    v.sort_unstable();
    v
}

fn tenant(json: &str) -> Option<TenantSnapshot> {
    Some(TenantSnapshot::from_graph_json(json).unwrap())
}

#[test]
fn duplicates_are_case_insensitive_and_proxy_duplicates_are_removed_from_all_holders_but_one() {
    let report = assess(
        &[
            user(
                1,
                "Alice",
                Some("alice@corp.example.com"),
                &[
                    ("mail", &["alice@corp.example.com"]),
                    ("proxyAddresses", &["SMTP:alice@corp.example.com", "smtp:shared@corp.example.com"]),
                ],
            ),
            user(
                2,
                "Carol",
                Some("ALICE@corp.example.com"),
                &[("proxyAddresses", &["SMTP:carol@corp.example.com", "smtp:Shared@corp.example.com"])],
            ),
            user(3, "Erin", None, &[]),
            obj(
                4,
                "CN=Erin2,CN=Users,DC=corp,DC=example,DC=com",
                "contact",
                &[("sAMAccountName", &["ERIN"])],
            ),
        ],
        AssessOptions::default(),
    );
    assert_eq!(rules_of(&report, "Alice"), ["proxy-duplicate", "upn-duplicate"]);
    // Alice's mail and primary address equal Carol's UPN too: the UPN duplicate says it once.
    assert_eq!(rules_of(&report, "Carol"), ["proxy-duplicate", "upn-duplicate"]);
    // sAMAccountName duplicates count only for objects without a UPN.
    assert_eq!(rules_of(&report, "Erin"), ["samaccountname-duplicate", "upn-missing"]);
    assert_eq!(rules_of(&report, "Erin2"), ["samaccountname-duplicate"]);
    // Both holders are flagged; the removal goes to the holder for which it is not primary/mail
    // (neither), then the younger (no whenCreated: DN order keeps Alice's).
    let removals: Vec<(&str, &str)> = report
        .remediations
        .iter()
        .filter(|r| r.action == Action::Remove)
        .map(|r| (r.common_name.as_str(), r.value.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(removals, [("Carol", "smtp:Shared@corp.example.com")]);
    let f = report.findings.iter().find(|f| f.rule == "upn-duplicate" && f.common_name == "Alice").unwrap();
    assert!(f.message.contains("CN=Carol,CN=Users,DC=corp,DC=example,DC=com (corp-ad)"), "{}", f.message);
}

#[test]
fn the_primary_holder_keeps_a_duplicate_proxy_address() {
    let report = assess(
        &[
            user(
                1,
                "Old",
                Some("old@corp.example.com"),
                &[
                    ("proxyAddresses", &["SMTP:old@corp.example.com", "smtp:x@corp.example.com"]),
                    ("whenCreated", &["20200101000000.0Z"]),
                ],
            ),
            user(
                2,
                "Young",
                Some("young@corp.example.com"),
                &[("proxyAddresses", &["SMTP:x@corp.example.com"]), ("whenCreated", &["20250101000000.0Z"])],
            ),
        ],
        AssessOptions::default(),
    );
    let removals: Vec<&str> = report
        .remediations
        .iter()
        .filter(|r| r.action == Action::Remove)
        .map(|r| r.common_name.as_str())
        .collect();
    assert_eq!(removals, ["Old"]);
}

#[test]
fn idfix_skip_list() {
    let grp = |n: u8, cn: &str, attrs: &[(&str, &[&str])]| {
        obj(n, &format!("CN={cn},CN=Users,DC=corp,DC=example,DC=com"), "group", attrs)
    };
    let objects = vec![
        user(1, "WS01$", None, &[]),
        user(2, "Administrator", None, &[]),
        user(3, "HealthMailbox0123", None, &[]),
        user(4, "krbtgt", None, &[]),
        obj(5, "CN=Bob\\0ACNF:1234,CN=Users,DC=corp,DC=example,DC=com", "user", &[]),
        user(6, "Msol Service", None, &[]),
        user(7, "Svc", None, &[("sAMAccountName", &["SUPPORT_388945a0"])]),
        grp(8, "Secure", &[]),
        grp(9, "Dist", &[("groupType", &["2"])]),
        grp(10, "Mailsec", &[("mail", &["ms@corp.example.com"])]),
        user(11, "Real", None, &[]),
    ];
    let mut objects = objects;
    // groupType is an integer attribute, as the connectors type it.
    objects[8].attributes.insert("groupType", AttrValues::Integer(vec![2]));
    let mut crit = user(12, "Crit", None, &[]);
    crit.attributes.insert("isCriticalSystemObject", AttrValues::Boolean(vec![true]));
    objects.push(crit);
    let report = assess(&objects, AssessOptions::default());
    let skipped = &report.sources[0].skipped;
    let expect = [
        ("cn-ends-with-dollar", 1),
        ("critical-system-object", 1),
        ("distribution-group-without-proxy-addresses", 1),
        ("replication-conflict", 1),
        ("security-group-without-mail", 1),
        ("service-account", 1),
        ("system-account-name", 4),
    ];
    assert_eq!(skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(), expect);
    assert_eq!(report.sources[0].objects_assessed, 2, "Real and Mailsec");
    assert_eq!(report.totals.skipped, 10);
}

const TENANT: &str = r#"{
  "domains": {"value": [
    {"id": "contoso.onmicrosoft.com", "isVerified": true, "isInitial": true},
    {"id": "corp.example.com", "isVerified": true, "authenticationType": "Managed"}]},
  "users": {"value": [
    {"id": "c-hard", "userPrincipalName": "renamed@corp.example.com", "onPremisesImmutableId": "AQEBAQEBAQEBAQEBAQEBAQ=="},
    {"id": "c-soft", "userPrincipalName": "bob@corp.example.com"},
    {"id": "c-smtp", "userPrincipalName": "cara@contoso.onmicrosoft.com", "proxyAddresses": ["SMTP:carol@corp.example.com"]},
    {"id": "c-other", "userPrincipalName": "dave@corp.example.com", "onPremisesImmutableId": "ZZZZZZZZZZZZZZZZZZZZZZ=="},
    {"id": "c-admin", "userPrincipalName": "erin@corp.example.com"},
    {"id": "c-amb1", "userPrincipalName": "frank@corp.example.com"},
    {"id": "c-amb2", "userPrincipalName": "f2@contoso.onmicrosoft.com", "proxyAddresses": ["SMTP:frank.f@corp.example.com"]},
    {"id": "c-dup", "userPrincipalName": "zed@contoso.onmicrosoft.com", "proxyAddresses": ["smtp:grace.alias@corp.example.com"]}]},
  "groups": {"value": [{"id": "c-group", "displayName": "Hank", "mailEnabled": true, "proxyAddresses": ["SMTP:hank@corp.example.com"]}]},
  "directoryRoles": {"value": [{"id": "r", "displayName": "Global Administrator", "members": [{"id": "c-admin"}]}]}
}"#;

#[test]
fn anchor_audit_predicts_each_outcome_against_the_tenant() {
    let report = assess(
        &[
            user(1, "Alice", Some("alice@corp.example.com"), &[]),
            user(2, "Bob", Some("Bob@corp.example.com"), &[]),
            user(
                3,
                "Carol",
                Some("carol@corp.example.com"),
                &[("proxyAddresses", &["SMTP:carol@corp.example.com"])],
            ),
            user(4, "Dave", Some("dave@corp.example.com"), &[]),
            user(5, "Erin", Some("erin@corp.example.com"), &[]),
            user(
                6,
                "Frank",
                Some("frank@corp.example.com"),
                &[("proxyAddresses", &["SMTP:frank.f@corp.example.com"])],
            ),
            user(
                7,
                "Grace",
                Some("grace@corp.example.com"),
                &[("proxyAddresses", &["SMTP:grace@corp.example.com", "smtp:grace.alias@corp.example.com"])],
            ),
            user(
                8,
                "Hank",
                Some("hank@corp.example.com"),
                &[("proxyAddresses", &["SMTP:hank@corp.example.com"])],
            ),
        ],
        AssessOptions { tenant: tenant(TENANT), ..AssessOptions::default() },
    );
    let outcome = |cn: &str| {
        let a = report.anchor_audit.iter().find(|a| a.dn.starts_with(&format!("CN={cn},"))).unwrap();
        (a.outcome, a.cloud_id.clone().unwrap_or_default())
    };
    // Alice's objectGUID is 01 01 ... = AQEBAQEBAQEBAQEBAQEBAQ==.
    assert_eq!(outcome("Alice"), (MatchOutcome::HardMatch, "c-hard".into()));
    assert_eq!(outcome("Bob"), (MatchOutcome::SoftMatchUpn, "c-soft".into()));
    assert_eq!(outcome("Carol"), (MatchOutcome::SoftMatchSmtp, "c-smtp".into()));
    assert_eq!(outcome("Dave"), (MatchOutcome::Conflict, "c-other".into()));
    assert_eq!(outcome("Erin"), (MatchOutcome::Conflict, "c-admin".into()));
    assert_eq!(outcome("Frank").0, MatchOutcome::Conflict);
    assert_eq!(outcome("Grace"), (MatchOutcome::New, String::new()));
    assert_eq!(outcome("Hank"), (MatchOutcome::Conflict, "c-group".into()));
    assert_eq!(
        rules_of(&report, "Alice"),
        Vec::<&str>::new(),
        "a hard match keeps its cloud UPN without conflict"
    );
    assert_eq!(rules_of(&report, "Bob"), ["match-soft"]);
    assert_eq!(rules_of(&report, "Dave"), ["match-invalid-soft-match"]);
    assert_eq!(rules_of(&report, "Erin"), ["match-admin-role"]);
    assert_eq!(rules_of(&report, "Frank"), ["match-ambiguous"]);
    assert_eq!(rules_of(&report, "Grace"), ["proxy-duplicate"], "the tenant's c-dup holds grace.alias");
    assert_eq!(rules_of(&report, "Hank"), ["match-object-type-mismatch"]);
    let a = &report.anchors;
    assert_eq!((a.hard_match, a.soft_match, a.new, a.conflict), (1, 2, 1, 4));
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.rule == "match-admin-role" && f.message.contains("Global Administrator"))
    );
}

#[test]
fn fixes_use_the_main_routable_suffix_and_stay_unique() {
    let report = assess(
        &[
            user(1, "Alice", Some("alice@corp.example.com"), &[]),
            user(2, "Bob", Some("bob@corp.local"), &[]),
            user(3, "Carol", Some("carol smith@corp.example.com"), &[]),
            user(4, "Erin", None, &[]),
            user(5, "Frank", Some("fränk@corp.example.com"), &[]),
            // "alice" is taken, so a second alice gets alice2.
            user(6, "Alice Two", Some("alice@corp.local"), &[]),
            user(7, "Dave", Some("dave,x@corp.example.com"), &[]),
        ],
        AssessOptions::default(),
    );
    let fixes: Vec<(&str, Option<&str>, Option<&str>)> = report
        .remediations
        .iter()
        .map(|r| (r.common_name.as_str(), r.value.as_deref(), r.update.as_deref()))
        .collect();
    assert_eq!(
        fixes,
        [
            ("Alice Two", Some("alice@corp.local"), Some("alice2@corp.example.com")),
            ("Bob", Some("bob@corp.local"), Some("bob@corp.example.com")),
            ("Carol", Some("carol smith@corp.example.com"), Some("carolsmith@corp.example.com")),
            ("Dave", Some("dave,x@corp.example.com"), Some("davex@corp.example.com")),
            ("Erin", None, Some("erin@corp.example.com")),
            ("Frank", Some("fränk@corp.example.com"), Some("frank@corp.example.com")),
        ]
    );
    let carol = report.remediations.iter().find(|r| r.common_name == "Carol").unwrap();
    assert_eq!((carol.error.as_str(), carol.action), ("character", Action::Edit));
    let suffixes: Vec<(&str, u64, bool)> =
        report.upn_suffixes.iter().map(|s| (s.suffix.as_str(), s.users, s.routable)).collect();
    assert_eq!(suffixes, [("corp.example.com", 4, true), ("corp.local", 2, false), ("(none)", 1, false)]);
    assert_eq!(report.upn_suffixes[1].cloud_suffix, "<tenant>.onmicrosoft.com");
    assert_eq!(report.verdict, Verdict::Errors);
}

#[test]
fn federation_readiness() {
    let mut a = Assessor::new(AssessOptions::default());
    let s1 = a.begin_source("corp", "ldap-ad", "x");
    let s2 = a.begin_source("fabrikam", "ldif", "y");
    a.observe(s1, &user(1, "A", Some("a@corp.example.com"), &[]));
    a.observe(s1, &user(2, "B", Some("b@example.com"), &[]));
    a.observe(
        s1,
        &obj(
            3,
            "CN=C,OU=X,DC=emea,DC=corp,DC=example,DC=com",
            "user",
            &[("userPrincipalName", &["c@contoso.co.uk"])],
        ),
    );
    a.observe(s2, &obj(4, "CN=D,DC=fabrikam,DC=com", "user", &[("userPrincipalName", &["d@fabrikam.com"])]));
    let r = a.finish(String::new(), String::new());
    assert_eq!(r.federation.top_level_domains, ["contoso.co.uk", "example.com", "fabrikam.com"]);
    assert_eq!(r.federation.subdomains, ["corp.example.com"]);
    assert_eq!(
        r.federation.forests,
        ["corp.example.com", "fabrikam.com"],
        "emea.corp.example.com is a child domain"
    );
    let rules: Vec<&str> = r.findings.iter().filter(|f| f.source == "all").map(|f| f.rule).collect();
    assert_eq!(
        rules,
        // Sorted by subject: "UPN suffixes", then the sub-domain, then "sources".
        [
            "federation-multiple-domains",
            "federation-subdomains-and-multiple-domains",
            "federation-subdomain",
            "federation-multiple-forests"
        ]
    );
}

#[test]
fn anchors_claimed_twice_and_unreadable_objects() {
    let mut a = Assessor::new(AssessOptions::default());
    let s1 = a.begin_source("one", "ldap-ad", "x");
    let s2 = a.begin_source("two", "ldif", "y");
    a.observe(s1, &user(1, "A", Some("a@corp.example.com"), &[]));
    a.observe(
        s2,
        &obj(
            1,
            "CN=A copy,DC=corp,DC=example,DC=com",
            "user",
            &[("userPrincipalName", &["a2@corp.example.com"])],
        ),
    );
    a.observe_unreadable(
        s2,
        &syncctl_core::ObjectError {
            anchor: None,
            dn: "CN=Broken,DC=corp,DC=example,DC=com".into(),
            kind: "invalid-anchor".into(),
            message: "CN=Broken,DC=corp,DC=example,DC=com: objectGUID is 15 bytes, not 16".into(),
        },
    );
    let r = a.finish(String::new(), String::new());
    let dup: Vec<&str> =
        r.findings.iter().filter(|f| f.rule == "anchor-duplicate").map(|f| f.source.as_str()).collect();
    assert_eq!(dup, ["one", "two"]);
    let broken = r.findings.iter().find(|f| f.rule == "anchor-missing").unwrap();
    assert_eq!(
        (broken.dn.as_str(), broken.common_name.as_str(), broken.attribute.as_str()),
        ("CN=Broken,DC=corp,DC=example,DC=com", "Broken", "objectGUID")
    );
    assert!(broken.message.contains("15 bytes"));
    assert_eq!((r.sources[1].objects_read, r.sources[1].unreadable), (2, 1));
    assert_eq!(r.anchors.no_anchor, 1);
    assert_eq!(r.totals.objects_with_errors, 3);
}

#[test]
fn notification_sender_and_relay() {
    let check = |sender: &str,
                 account: Option<&str>,
                 port: Option<u16>,
                 security: Option<&str>,
                 tenant_json: Option<&str>| {
        let options = AssessOptions {
            tenant: tenant_json.and_then(tenant),
            mail: Some(MailSettings {
                sender: sender.into(),
                relay_account: account.map(str::to_owned),
                relay_host: Some("smtp.office365.com".into()),
                relay_port: port,
                relay_security: security.map(str::to_owned),
            }),
            ..AssessOptions::default()
        };
        let r = assess(&[], options);
        r.findings.iter().map(|f| f.rule).collect::<Vec<_>>()
    };
    let t = Some(r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true}]}}"#);
    assert!(
        check("syncctl@corp.example.com", Some("svc@corp.example.com"), Some(587), Some("starttls"), t)
            .is_empty()
    );
    assert_eq!(
        check("syncctl@other.example.net", Some("svc@corp.example.com"), Some(587), Some("starttls"), t),
        ["mail-sender-relay-mismatch", "mail-sender-unverified"]
    );
    assert_eq!(check("not an address", None, None, None, t), ["mail-sender-invalid"]);
    assert_eq!(check("a@corp.local", None, None, None, None), ["mail-sender-unverified"]);
    assert_eq!(check("a@corp.example.com", None, Some(25), Some("plain"), t), ["mail-relay-insecure"]);
}

#[test]
fn a_clean_directory_is_ready() {
    let r = assess(
        &[user(
            1,
            "Alice",
            Some("alice@corp.example.com"),
            &[("mail", &["alice@corp.example.com"]), ("proxyAddresses", &["SMTP:alice@corp.example.com"])],
        )],
        AssessOptions::default(),
    );
    // corp.example.com is a sub-domain of example.com: an informational note only.
    assert_eq!(r.findings.iter().map(|f| f.rule).collect::<Vec<_>>(), ["federation-subdomain"]);
    assert_eq!(r.verdict, Verdict::Ready);
    assert_eq!(r.totals.objects_with_errors + r.totals.objects_with_warnings, 0);
}

/// Every rule of the catalogue fires on an example made for it: no rule is dead, and the
/// catalogue lists every rule the assessor can raise (a finding's rule must be in it).
#[test]
fn every_rule_in_the_catalogue_fires_on_its_example() {
    let long = |n: usize| "x".repeat(n);
    let l65 = format!("{}@corp.example.com", long(65));
    let d49 = format!("a@{}.example.com", "d".repeat(37));
    let t114 = format!("{}@{}.{}.example.com", long(60), long(20), long(20));
    let m257 = format!("{}@corp.example.com", long(240));
    let p257 = format!("smtp:{}@corp.example.com", long(240));
    let g65 = long(65);
    let d257 = long(257);
    let s21 = long(21);
    let t257 = format!("SMTP:{}@x.com", long(250));
    let n65 = long(65);
    type Attrs<'a> = Vec<(&'a str, Vec<&'a str>)>;
    let users: Vec<(&str, Option<&str>, Attrs<'_>)> = vec![
        ("NoUpn", None, vec![]),
        ("TooLong", Some(&t114), vec![]),
        ("LocalLong", Some(&l65), vec![]),
        ("DomainLong", Some(&d49), vec![]),
        ("Space", Some("a b@corp.example.com"), vec![]),
        ("Umlaut", Some("ä@corp.example.com"), vec![]),
        ("NoAt", Some("plain.corp.example.com"), vec![]),
        ("Dots", Some("a..b@corp.example.com"), vec![]),
        ("BadDomain", Some("a@corp_x.example.com"), vec![]),
        ("Local", Some("a@corp.local"), vec![]),
        ("Unverified", Some("a@fabrikam.com"), vec![]),
        ("Apostrophe", Some("o'brien@corp.example.com"), vec![]),
        ("Dup1", Some("dup@corp.example.com"), vec![]),
        ("Dup2", Some("DUP@corp.example.com"), vec![]),
        ("Conflict", Some("mailholder@corp.example.com"), vec![]),
        ("MailHolder", Some("mh@corp.example.com"), vec![("mail", vec!["mailholder@corp.example.com"])]),
        ("MailLong", Some("ml@corp.example.com"), vec![("mail", vec![&m257])]),
        ("MailChar", Some("mc@corp.example.com"), vec![("mail", vec!["m c@corp.example.com"])]),
        ("MailUml", Some("mu@corp.example.com"), vec![("mail", vec!["mü@corp.example.com"])]),
        ("MailFmt", Some("mf@corp.example.com"), vec![("mail", vec!["mf@corp_x.example.com"])]),
        ("MailDup1", Some("md1@corp.example.com"), vec![("mail", vec!["md@corp.example.com"])]),
        ("MailDup2", Some("md2@corp.example.com"), vec![("mail", vec!["MD@corp.example.com"])]),
        ("Nick", Some("n1@corp.example.com"), vec![("mailNickname", vec![&n65])]),
        ("NickDot", Some("n2@corp.example.com"), vec![("mailNickname", vec![".n2"])]),
        ("NickDup1", Some("n3@corp.example.com"), vec![("mailNickname", vec!["same"])]),
        ("NickDup2", Some("n4@corp.example.com"), vec![("mailNickname", vec!["Same"])]),
        ("NickUml", Some("n5@corp.example.com"), vec![("mailNickname", vec!["zoë"])]),
        ("ProxyLong", Some("p1@corp.example.com"), vec![("proxyAddresses", vec![&p257])]),
        (
            "ProxyChar",
            Some("p2@corp.example.com"),
            vec![("proxyAddresses", vec!["smtp:p 2@corp.example.com"])],
        ),
        ("ProxyUml", Some("p3@corp.example.com"), vec![("proxyAddresses", vec!["smtp:pä@corp.example.com"])]),
        ("ProxyFmt", Some("p4@corp.example.com"), vec![("proxyAddresses", vec!["p4@corp.example.com"])]),
        (
            "ProxyTwo",
            Some("p5@corp.example.com"),
            vec![("proxyAddresses", vec!["SMTP:p5@corp.example.com", "SMTP:p5b@corp.example.com"])],
        ),
        (
            "ProxyDup1",
            Some("p6@corp.example.com"),
            vec![("proxyAddresses", vec!["smtp:pd@corp.example.com"])],
        ),
        (
            "ProxyDup2",
            Some("p7@corp.example.com"),
            vec![("proxyAddresses", vec!["smtp:pd@corp.example.com"])],
        ),
        ("ProxyUnv", Some("p8@corp.example.com"), vec![("proxyAddresses", vec!["smtp:p8@fabrikam.com"])]),
        ("ProxyLocal", Some("p9@corp.example.com"), vec![("proxyAddresses", vec!["smtp:p9@corp.local"])]),
        ("Blank", Some("b1@corp.example.com"), vec![("displayName", vec![" "])]),
        ("DispLong", Some("b2@corp.example.com"), vec![("displayName", vec![&d257])]),
        ("Given", Some("b3@corp.example.com"), vec![("givenName", vec![&g65])]),
        ("SamLong", Some("s1@corp.example.com"), vec![("sAMAccountName", vec![&s21])]),
        ("SamChar", Some("s2@corp.example.com"), vec![("sAMAccountName", vec!["s/2"])]),
        ("SamDup1", None, vec![("sAMAccountName", vec!["samdup"])]),
        ("SamDup2", None, vec![("sAMAccountName", vec!["SAMDUP"])]),
        ("TargetLong", Some("t1@corp.example.com"), vec![("targetAddress", vec![&t257])]),
        ("TargetChar", Some("t2@corp.example.com"), vec![("targetAddress", vec!["SMTP:t2@x.com;"])]),
        // Tenant matching.
        ("Soft", Some("soft@corp.example.com"), vec![]),
        ("Invalid", Some("taken@corp.example.com"), vec![]),
        ("Admin", Some("admin@corp.example.com"), vec![]),
        (
            "Ambiguous",
            Some("amb@corp.example.com"),
            vec![("proxyAddresses", vec!["SMTP:amb2@corp.example.com"])],
        ),
        ("TypeMismatch", Some("tm@corp.example.com"), vec![("mail", vec!["grp@corp.example.com"])]),
    ];
    let tenant_json = r#"{
      "domains": {"value": [{"id": "corp.example.com", "isVerified": true}, {"id": "corp.onmicrosoft.com", "isVerified": true, "isInitial": true}]},
      "users": {"value": [
        {"id": "s", "userPrincipalName": "soft@corp.example.com"},
        {"id": "t", "userPrincipalName": "taken@corp.example.com", "onPremisesImmutableId": "AAAAAAAAAAAAAAAAAAAAAA=="},
        {"id": "a", "userPrincipalName": "admin@corp.example.com"},
        {"id": "b1", "userPrincipalName": "amb@corp.example.com"},
        {"id": "b2", "userPrincipalName": "b2@corp.onmicrosoft.com", "proxyAddresses": ["SMTP:amb2@corp.example.com"]}]},
      "groups": {"value": [{"id": "g", "displayName": "G", "mailEnabled": true, "proxyAddresses": ["SMTP:grp@corp.example.com"]}]},
      "directoryRoles": {"value": [{"id": "r", "displayName": "Global Administrator", "members": [{"id": "a"}]}]}
    }"#;
    let run = |mail: MailSettings| {
        let mut a =
            Assessor::new(AssessOptions { tenant: tenant(tenant_json), mail: Some(mail), worst_objects: 0 });
        let corp = a.begin_source("corp", "ldap-ad", "x");
        let fab = a.begin_source("fab", "ldif", "y");
        for (n, (cn, upn, extra)) in users.iter().enumerate() {
            let extra: Vec<(&str, &[&str])> = extra.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            a.observe(corp, &user(u8::try_from(n + 1).unwrap(), cn, *upn, &extra));
        }
        // Another forest, with a copy of an object (same ImmutableID) and a mail-enabled group.
        let other = |cn: &str, upn: &str| {
            obj(1, &format!("CN={cn},DC=fabrikam,DC=com"), "user", &[("userPrincipalName", &[upn])])
        };
        a.observe(fab, &other("Copy", "copy@corp.example.com"));
        a.observe(
            fab,
            &obj(200, "CN=Grp,DC=fabrikam,DC=com", "group", &[("mail", &["soft@corp.example.com"])]),
        );
        let error = |kind: &str| syncctl_core::ObjectError {
            anchor: None,
            dn: "CN=Broken,DC=fabrikam,DC=com".into(),
            kind: kind.into(),
            message: "broken".into(),
        };
        a.observe_unreadable(fab, &error("missing-anchor"));
        a.observe_unreadable(fab, &error("invalid-value"));
        a.finish(String::new(), String::new())
    };
    let first = run(MailSettings {
        sender: "syncctl@fabrikam.com".into(),
        relay_account: Some("svc@corp.example.com".into()),
        relay_host: Some("smtp.office365.com".into()),
        relay_port: Some(25),
        relay_security: Some("plain".into()),
    });
    let second = run(MailSettings { sender: "not an address".into(), ..MailSettings::default() });
    let fired: BTreeSet<&str> = first.findings.iter().chain(&second.findings).map(|f| f.rule).collect();
    let all: BTreeSet<&str> = cat::ALL.iter().map(|r| r.id).collect();
    let missing: Vec<&&str> = all.difference(&fired).collect();
    assert!(missing.is_empty(), "rules that never fired: {missing:?}");
    assert_eq!(fired, all, "findings with rules outside the catalogue");
}

#[test]
fn one_object_read_twice_is_one_identity_not_a_duplicate() {
    let mut a = Assessor::new(AssessOptions::default());
    let s1 = a.begin_source("forest", "ldap-ad", "x");
    let s2 = a.begin_source("export", "ldif", "y");
    let alice = user(
        1,
        "Alice",
        Some("alice@corp.example.com"),
        &[
            ("mail", &["alice@corp.example.com"]),
            ("proxyAddresses", &["SMTP:alice@corp.example.com", "smtp:a.anders@corp.example.com"]),
            ("mailNickname", &["alice"]),
        ],
    );
    a.observe(s1, &alice);
    a.observe(s2, &alice);
    let r = a.finish(String::new(), String::new());
    let rules: BTreeSet<&str> = r.findings.iter().filter(|f| f.source != "all").map(|f| f.rule).collect();
    assert_eq!(rules, BTreeSet::from(["anchor-duplicate"]));
    assert!(r.remediations.is_empty(), "{:?}", r.remediations);
}

#[test]
fn fixes_never_collide_with_a_value_in_use_or_with_each_other() {
    let report = assess(
        &[
            // The fixed value would equal the object's own primary address: dropped.
            user(
                1,
                "C1",
                Some("c1@corp.example.com"),
                &[("proxyAddresses", &["SMTP:c1@corp.example.com", "smtp:c 1@corp.example.com"])],
            ),
            // Two values fix to the same address: only the first is fixed.
            user(
                2,
                "F1",
                Some("f1@corp.example.com"),
                &[("proxyAddresses", &["smtp:f 2@corp.example.com", "smtp:f2 @corp.example.com"])],
            ),
            // The fixed value is another object's primary address: dropped.
            user(3, "D1", Some("d1@corp.example.com"), &[("proxyAddresses", &["smtp:e 1@corp.example.com"])]),
            user(4, "E1", Some("e1@corp.example.com"), &[("proxyAddresses", &["SMTP:e1@corp.example.com"])]),
            // mail and mailNickname fixes that would duplicate another object's value: dropped.
            user(
                5,
                "H1",
                Some("h1x@corp.example.com"),
                &[("mail", &["h 1@corp.example.com"]), ("mailNickname", &[&"n".repeat(70)])],
            ),
            user(
                6,
                "H2",
                Some("h2@corp.example.com"),
                &[("mail", &["h1@corp.example.com"]), ("mailNickname", &[&"n".repeat(64)])],
            ),
        ],
        AssessOptions::default(),
    );
    let fixes: Vec<(&str, &str, Option<&str>)> = report
        .remediations
        .iter()
        .map(|r| (r.common_name.as_str(), r.attribute.as_str(), r.update.as_deref()))
        .collect();
    assert_eq!(fixes, [("F1", "proxyAddresses", Some("smtp:f2@corp.example.com"))]);
}

#[test]
fn upn_fixes_keep_only_a_routable_domain_as_written() {
    let report = assess(
        &[
            user(1, "Main", Some("main@contoso.com"), &[]),
            user(2, "Main2", Some("main2@contoso.com"), &[]),
            user(3, "Us", Some("u s@corp_x.example.com"), &[]),
            user(4, "Mu", Some("u3@münchen.de"), &[]),
            user(5, "Sp", Some("s p@fabrikam.com"), &[]),
        ],
        AssessOptions::default(),
    );
    let fixes: Vec<(&str, Option<&str>)> =
        report.remediations.iter().map(|r| (r.common_name.as_str(), r.update.as_deref())).collect();
    assert_eq!(
        fixes,
        [("Mu", Some("u3@contoso.com")), ("Sp", Some("sp@fabrikam.com")), ("Us", Some("us@contoso.com"))]
    );
    // With the tenant, a routable but unverified suffix alone is not fixed here: verifying the
    // domain is the fix.
    let t = tenant(r#"{"domains": {"value": [{"id": "contoso.com", "isVerified": true}]}}"#);
    let report = assess(
        &[user(1, "Main", Some("main@contoso.com"), &[]), user(2, "F", Some("f@fabrikam.com"), &[])],
        AssessOptions { tenant: t, ..AssessOptions::default() },
    );
    assert_eq!(rules_of(&report, "F"), ["upn-suffix-unverified"]);
    assert!(report.remediations.is_empty());
}

#[test]
fn several_values_of_an_attribute_are_fixed_one_by_one() {
    let report = assess(
        &[obj(
            1,
            "CN=Multi,DC=corp,DC=example,DC=com",
            "contact",
            &[("mail", &["john doe@example.com", "jdoe@example.com"])],
        )],
        AssessOptions::default(),
    );
    let fix = report.remediations.first().unwrap();
    assert_eq!((fix.update.as_deref(), fix.multi_valued), (Some("johndoe@example.com"), true));
    let ldif = crate::render::ldif::to_fix_ldif(&report, "corp-ad");
    assert!(
        ldif.fix.contains(
            "delete: mail\nmail: john doe@example.com\n-\nadd: mail\nmail: johndoe@example.com\n-\n"
        ),
        "{}",
        ldif.fix
    );
    assert!(
        ldif.undo.contains(
            "delete: mail\nmail: johndoe@example.com\n-\nadd: mail\nmail: john doe@example.com\n-\n"
        ),
        "{}",
        ldif.undo
    );
}

#[test]
fn a_primary_address_is_never_removed_automatically() {
    let report = assess(
        &[
            user(1, "G1", Some("g1@corp.example.com"), &[("proxyAddresses", &["SMTP:dup@corp.example.com"])]),
            user(2, "G2", Some("g2@corp.example.com"), &[("proxyAddresses", &["SMTP:Dup@corp.example.com"])]),
        ],
        AssessOptions::default(),
    );
    assert_eq!(rules_of(&report, "G1"), ["proxy-duplicate"]);
    assert_eq!(rules_of(&report, "G2"), ["proxy-duplicate"]);
    assert!(report.remediations.is_empty());
}

#[test]
fn addresses_are_one_namespace_across_attributes_and_with_the_tenant() {
    let t = tenant(
        r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true}]},
            "users": {"value": [{"id": "u4", "userPrincipalName": "u4@contoso.onmicrosoft.com", "proxyAddresses": ["smtp:mou.cloud@corp.example.com"]}]}}"#,
    );
    let report = assess(
        &[
            user(1, "A1", Some("a1@corp.example.com"), &[("mail", &["shared@corp.example.com"])]),
            user(
                2,
                "B1",
                Some("b1@corp.example.com"),
                &[("proxyAddresses", &["smtp:shared@corp.example.com"])],
            ),
            user(3, "Mou", Some("mou@corp.example.com"), &[("mail", &["mou.cloud@corp.example.com"])]),
        ],
        AssessOptions { tenant: t, ..AssessOptions::default() },
    );
    assert_eq!(rules_of(&report, "A1"), ["address-conflict"]);
    assert_eq!(rules_of(&report, "B1"), ["address-conflict"]);
    assert_eq!(rules_of(&report, "Mou"), ["mail-duplicate"]);
    let f = report.findings.iter().find(|f| f.common_name == "Mou").unwrap();
    assert!(f.message.contains("u4") && f.message.contains("proxyAddresses"), "{}", f.message);
}

#[test]
fn groups_match_on_proxy_addresses_only_and_the_consistency_guid_is_the_anchor() {
    let t = tenant(
        r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true}]},
            "users": {"value": [{"id": "moved", "userPrincipalName": "x@corp.example.com", "onPremisesImmutableId": "CQkJCQkJCQkJCQkJCQkJCQ=="}]},
            "groups": {"value": [{"id": "g", "displayName": "Sales", "mailEnabled": true, "proxyAddresses": ["SMTP:sales@corp.example.com"]}]}}"#,
    );
    let security =
        obj(1, "CN=Sales,DC=corp,DC=example,DC=com", "group", &[("mail", &["sales@corp.example.com"])]);
    let mut moved = user(2, "Moved", Some("moved@corp.example.com"), &[]);
    // Moved from another forest: its objectGUID changed, its consistency GUID (09 09 ...) did not.
    moved.attributes.insert("mS-DS-ConsistencyGuid", AttrValues::Binary(vec![vec![9; 16]]));
    let report = assess(&[security, moved], AssessOptions { tenant: t, ..AssessOptions::default() });
    let outcome = |cn: &str| {
        report
            .anchor_audit
            .iter()
            .find(|a| a.dn.starts_with(&format!("CN={cn},")))
            .map(|a| (a.outcome, a.detail.clone()))
            .unwrap()
    };
    let (o, detail) = outcome("Sales");
    assert_eq!(o, MatchOutcome::New);
    assert!(detail.contains("non-mail"), "{detail}");
    assert_eq!(outcome("Moved").0, MatchOutcome::HardMatch);
}

#[test]
fn federation_notes_are_warnings_only_once_a_domain_is_federated() {
    let objects = [
        user(1, "A", Some("a@contoso.com"), &[]),
        obj(2, "CN=B,DC=fabrikam,DC=com", "user", &[("userPrincipalName", &["b@fabrikam.com"])]),
    ];
    let severity = |json: &str| {
        let r = assess(&objects, AssessOptions { tenant: tenant(json), ..AssessOptions::default() });
        r.findings.iter().find(|f| f.rule == "federation-multiple-forests").map(|f| f.severity).unwrap()
    };
    let domains = |auth: &str| {
        format!(
            r#"{{"domains": {{"value": [{{"id": "contoso.com", "isVerified": true, "authenticationType": "{auth}"}}, {{"id": "fabrikam.com", "isVerified": true}}]}}}}"#
        )
    };
    assert_eq!(severity(&domains("Managed")), Severity::Info);
    assert_eq!(severity(&domains("Federated")), Severity::Warning);
}

#[test]
fn an_object_may_propose_one_address_for_its_upn_mail_and_primary_address() {
    let report = assess(
        &[user(
            1,
            "John",
            Some("john doe@contoso.com"),
            &[("mail", &["john doe@contoso.com"]), ("proxyAddresses", &["SMTP:john doe@contoso.com"])],
        )],
        AssessOptions::default(),
    );
    let fixes: Vec<(&str, Option<&str>)> =
        report.remediations.iter().map(|r| (r.attribute.as_str(), r.update.as_deref())).collect();
    assert_eq!(
        fixes,
        [
            ("mail", Some("johndoe@contoso.com")),
            ("proxyAddresses", Some("SMTP:johndoe@contoso.com")),
            ("userPrincipalName", Some("johndoe@contoso.com")),
        ]
    );
}

#[test]
fn an_object_read_from_two_sources_gets_the_same_fix_in_each() {
    let mut a = Assessor::new(AssessOptions::default());
    let s1 = a.begin_source("forest", "ldap-ad", "x");
    let s2 = a.begin_source("export", "ldif", "y");
    let john =
        user(1, "John", Some("john doe@contoso.com"), &[("proxyAddresses", &["smtp:j d@contoso.com"])]);
    a.observe(s1, &john);
    a.observe(s2, &john);
    let r = a.finish(String::new(), String::new());
    let fixes: Vec<(&str, &str, Option<&str>)> = r
        .remediations
        .iter()
        .map(|r| (r.source.as_str(), r.attribute.as_str(), r.update.as_deref()))
        .collect();
    assert_eq!(
        fixes,
        [
            ("export", "proxyAddresses", Some("smtp:jd@contoso.com")),
            ("export", "userPrincipalName", Some("johndoe@contoso.com")),
            ("forest", "proxyAddresses", Some("smtp:jd@contoso.com")),
            ("forest", "userPrincipalName", Some("johndoe@contoso.com")),
        ]
    );
}

#[test]
fn a_cloud_object_holding_a_value_in_several_attributes_is_one_finding() {
    let t = tenant(
        r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true}]},
            "users": {"value": [{"id": "u9", "userPrincipalName": "taken@corp.example.com", "mail": "taken@corp.example.com",
                                 "proxyAddresses": ["SMTP:taken@corp.example.com"], "onPremisesImmutableId": "AQEBAQEBAQEBAQEBAQEBAQ=="}]}}"#,
    );
    let report = assess(
        &[user(
            2,
            "Other",
            Some("other@corp.example.com"),
            &[("proxyAddresses", &["smtp:Taken@corp.example.com"])],
        )],
        AssessOptions { tenant: t, ..AssessOptions::default() },
    );
    let found: Vec<&Finding> = report.findings.iter().filter(|f| f.common_name == "Other").collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule, "proxy-duplicate");
    assert!(
        found[0].message.contains("(u9) has it as its userPrincipalName, mail and proxyAddresses"),
        "{}",
        found[0].message
    );
}

#[test]
fn two_objects_soft_matching_one_cloud_object_are_ambiguous() {
    let t = tenant(
        r#"{"domains": {"value": [{"id": "corp.example.com", "isVerified": true}]},
            "users": {"value": [{"id": "c1", "userPrincipalName": "shared@corp.example.com", "mail": "shared@corp.example.com"}]}}"#,
    );
    let report = assess(
        &[
            user(1, "ByUpn", Some("shared@corp.example.com"), &[]),
            user(2, "ByMail", Some("bymail@corp.example.com"), &[("mail", &["shared@corp.example.com"])]),
        ],
        AssessOptions { tenant: t, ..AssessOptions::default() },
    );
    for cn in ["ByUpn", "ByMail"] {
        let rules = rules_of(&report, cn);
        assert!(rules.contains(&"match-ambiguous"), "{cn}: {rules:?}");
        assert!(!rules.contains(&"match-soft"), "{cn}: {rules:?}");
        let row = report.anchor_audit.iter().find(|a| a.dn.starts_with(&format!("CN={cn},"))).unwrap();
        assert_eq!(row.outcome, MatchOutcome::Conflict, "{cn}");
        assert!(row.detail.contains("c1") && row.detail.contains("would be soft-matched"), "{}", row.detail);
    }
    let f =
        report.findings.iter().find(|f| f.rule == "match-ambiguous" && f.common_name == "ByMail").unwrap();
    assert_eq!((f.attribute.as_str(), f.value.as_str()), ("mail", "shared@corp.example.com"));
    assert!(f.message.contains("CN=ByUpn,"), "{}", f.message);
}

#[test]
fn an_only_smtp_address_counts_as_primary_and_is_never_removed() {
    let report = assess(
        &[
            user(
                1,
                "Keeper",
                Some("keeper@corp.example.com"),
                &[
                    ("proxyAddresses", &["SMTP:keeper@corp.example.com", "smtp:team@corp.example.com"]),
                    ("whenCreated", &["20200101000000.0Z"]),
                ],
            ),
            obj(
                2,
                "CN=Team,DC=corp,DC=example,DC=com",
                "contact",
                &[
                    ("proxyAddresses", &["smtp:team@corp.example.com"]),
                    ("whenCreated", &["20240101000000.0Z"]),
                ],
            ),
        ],
        AssessOptions::default(),
    );
    assert_eq!(rules_of(&report, "Team"), ["proxy-duplicate"]);
    // The contact's only address counts as its primary: it keeps it, though it is younger.
    let removals: Vec<(&str, Option<&str>)> = report
        .remediations
        .iter()
        .filter(|r| r.action == Action::Remove)
        .map(|r| (r.common_name.as_str(), r.value.as_deref()))
        .collect();
    assert_eq!(removals, [("Keeper", Some("smtp:team@corp.example.com"))]);
    // Two holders for which it is the only address: neither loses it.
    let contact = |n: u8, cn: &str| {
        obj(
            n,
            &format!("CN={cn},DC=corp,DC=example,DC=com"),
            "contact",
            &[("proxyAddresses", &["smtp:x@corp.example.com"])],
        )
    };
    let report = assess(&[contact(1, "X1"), contact(2, "X2")], AssessOptions::default());
    assert_eq!(rules_of(&report, "X1"), ["proxy-duplicate"]);
    assert!(report.remediations.is_empty(), "{:?}", report.remediations);
}

#[test]
fn holders_are_named_once_per_identity() {
    let mut a = Assessor::new(AssessOptions::default());
    let sources: Vec<SourceId> = (0..5).map(|n| a.begin_source(&format!("export{n}"), "ldif", "x")).collect();
    let dup = |n: u8, cn: &str| {
        user(n, cn, Some(&format!("{}@corp.example.com", cn.to_lowercase())), &[("mailNickname", &["dup"])])
    };
    // One identity read from five sources, and five others.
    for s in &sources {
        a.observe(*s, &dup(1, "Many"));
    }
    for (n, cn) in [(2, "B"), (3, "C"), (4, "D"), (5, "E"), (6, "F")] {
        a.observe(sources[0], &dup(n, cn));
    }
    let r = a.finish(String::new(), String::new());
    let f = r.findings.iter().find(|f| f.rule == "mailnickname-duplicate" && f.common_name == "B").unwrap();
    assert_eq!(
        f.message,
        "also held by CN=Many,CN=Users,DC=corp,DC=example,DC=com (export0); \
         CN=C,CN=Users,DC=corp,DC=example,DC=com (export0); \
         CN=D,CN=Users,DC=corp,DC=example,DC=com (export0); and 2 more"
    );
    let many =
        r.findings.iter().filter(|f| f.rule == "mailnickname-duplicate" && f.common_name == "Many").count();
    assert_eq!(many, 5, "each read of the identity is reported in its source");
}
