//! Tests of the rule model, the default rules and the CEL bindings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

use super::*;
use crate::attribute::Attributes;
use crate::expr::{Expr, ExprError, ExprValue};
use crate::immutable_id::ImmutableId;

/// A test object.
#[derive(Clone, Debug, Default)]
struct Obj {
    ty: String,
    dn: Option<String>,
    attrs: Attributes,
    id: Option<String>,
    member_of: Vec<String>,
}

impl Obj {
    fn new(ty: &str) -> Self {
        Obj { ty: ty.into(), ..Default::default() }
    }
    fn dn(mut self, dn: &str) -> Self {
        self.dn = Some(dn.into());
        self
    }
    fn s(mut self, name: &str, values: &[&str]) -> Self {
        self.attrs.insert(name, AttrValues::String(values.iter().map(|v| v.to_string()).collect()));
        self
    }
    fn i(mut self, name: &str, values: &[i64]) -> Self {
        self.attrs.insert(name, AttrValues::Integer(values.to_vec()));
        self
    }
    fn b(mut self, name: &str, value: bool) -> Self {
        self.attrs.insert(name, AttrValues::Boolean(vec![value]));
        self
    }
    fn bin(mut self, name: &str, value: &[u8]) -> Self {
        self.attrs.insert(name, AttrValues::Binary(vec![value.to_vec()]));
        self
    }
    fn r(mut self, name: &str, values: &[&str]) -> Self {
        self.attrs.insert(name, AttrValues::Reference(values.iter().map(|v| v.to_string()).collect()));
        self
    }
    fn id(mut self, id: &str) -> Self {
        self.id = Some(id.into());
        self
    }
}

impl ObjectView for Obj {
    fn object_type(&self) -> &str {
        &self.ty
    }
    fn dn(&self) -> Option<&str> {
        self.dn.as_deref()
    }
    fn attribute(&self, name: &str) -> Option<&AttrValues> {
        self.attrs.get(name)
    }
    fn immutable_id(&self) -> Option<String> {
        self.id.clone()
    }
    fn member_of(&self) -> &[String] {
        &self.member_of
    }
}

fn eval(text: &str, o: &Obj) -> Result<ExprValue, ExprError> {
    Expr::compile(text).unwrap().evaluate(o)
}

fn s(v: &str) -> ExprValue {
    ExprValue::String(v.into())
}

/// GUID fcc7e67f-fec6-4a65-b821-2f40a292d185 in LDAP byte order.
const GUID_BYTES: [u8; 16] =
    [0x7f, 0xe6, 0xc7, 0xfc, 0xc6, 0xfe, 0x65, 0x4a, 0xb8, 0x21, 0x2f, 0x40, 0xa2, 0x92, 0xd1, 0x85];
const GUID_IMMUTABLE_ID: &str = "f+bH/Mb+ZUq4IS9AopLRhQ==";

// ---------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------

#[test]
fn bindings_attributes_attr_map_dn_type_and_immutable_id() {
    let o = Obj::new("user")
        .dn("CN=Ann,OU=Staff,DC=corp,DC=example,DC=com")
        .s("displayName", &["Ann"])
        .s("proxyAddresses", &["SMTP:ann@x.com"])
        .s("description", &["first", "second"])
        .bin("mS-DS-ConsistencyGuid", &GUID_BYTES)
        .id("cntT7rWeSkeChkMTCRM/2Q==");
    assert_eq!(eval("displayName", &o).unwrap(), s("Ann"));
    // case-insensitive attribute names
    assert_eq!(eval("DISPLAYNAME", &o).unwrap(), s("Ann"));
    // a multi-valued attribute is a list even with one value; another is its first value
    assert_eq!(eval("proxyAddresses", &o).unwrap(), ExprValue::List(vec![s("SMTP:ann@x.com")]));
    assert_eq!(eval("description", &o).unwrap(), s("first"));
    // absent attributes are null, also in `attr`
    assert_eq!(eval("mail", &o).unwrap(), ExprValue::Null);
    assert_eq!(eval("otherMailbox", &o).unwrap(), ExprValue::Null);
    assert_eq!(eval(r#"attr["no-such"] == null"#, &o).unwrap(), ExprValue::Bool(true));
    assert_eq!(eval(r#"attr["mS-DS-ConsistencyGuid"]"#, &o).unwrap(), ExprValue::Bytes(GUID_BYTES.to_vec()));
    assert_eq!(eval(r#"attr["ms-ds-consistencyguid"].size()"#, &o).unwrap(), ExprValue::Int(16));
    assert_eq!(eval(r#"dn.endsWith("DC=corp,DC=example,DC=com")"#, &o).unwrap(), ExprValue::Bool(true));
    assert_eq!(eval("objectType", &o).unwrap(), s("user"));
    assert_eq!(eval("immutableId", &o).unwrap(), s("cntT7rWeSkeChkMTCRM/2Q=="));
    let mv = Obj::new("person");
    assert_eq!(eval("dn", &mv).unwrap(), ExprValue::Null);
    assert_eq!(eval("immutableId", &mv).unwrap(), ExprValue::Null);
    // DESIGN.md's examples
    let o = o.s("objectClass", &["top", "person", "user"]).s("userPrincipalName", &["Ann@X.com"]);
    assert_eq!(
        eval(r#""user" in objectClass && !(dn.endsWith("OU=Disabled,DC=corp,DC=example,DC=com"))"#, &o)
            .unwrap(),
        ExprValue::Bool(true)
    );
    assert_eq!(eval("userPrincipalName.lower()", &o).unwrap(), s("ann@x.com"));
}

#[test]
fn value_types_are_bound_by_syntax() {
    let o = Obj::new("user")
        .i("userAccountControl", &[514])
        .b("isCriticalSystemObject", false)
        .r("manager", &["CN=Boss,DC=x"])
        .bin("objectGUID", &GUID_BYTES);
    assert_eq!(eval("userAccountControl + 1", &o).unwrap(), ExprValue::Int(515));
    assert_eq!(eval("!isCriticalSystemObject", &o).unwrap(), ExprValue::Bool(true));
    assert_eq!(eval("manager", &o).unwrap(), s("CN=Boss,DC=x"));
    assert_eq!(eval("base64(objectGUID)", &o).unwrap(), s(GUID_IMMUTABLE_ID));
}

#[test]
fn custom_functions() {
    let o = Obj::new("user")
        .s("proxyAddresses", &["smtp:alias@x.com", "SMTP:Primary@X.com", "X500:/o=x"])
        .s("cn", &["  Ann Lee  "])
        .i("groupType", &[-2147483646]);
    let cases: &[(&str, ExprValue)] = &[
        (r#"lower("ÀB")"#, s("àb")),
        (r#""ab".upper()"#, s("AB")),
        ("trim(cn)", s("Ann Lee")),
        ("cn.trim()", s("Ann Lee")),
        (
            "lower(proxyAddresses)",
            ExprValue::List(vec![s("smtp:alias@x.com"), s("smtp:primary@x.com"), s("x500:/o=x")]),
        ),
        ("lower(mail)", ExprValue::Null),
        (r#"left("abcdef", 3)"#, s("abc")),
        (r#"left("ab", 5)"#, s("ab")),
        (r#"right("abcdef", 2)"#, s("ef")),
        (r#"replace("a b c", " ", "")"#, s("abc")),
        (r#"split("a,b", ",")"#, ExprValue::List(vec![s("a"), s("b")])),
        (r#"join(["a", "b"], "; ")"#, s("a; b")),
        (r#"coalesce(mail, "", [], "x", "y")"#, s("x")),
        ("coalesce(mail)", ExprValue::Null),
        ("isPresent(mail)", ExprValue::Bool(false)),
        (r#"isPresent("")"#, ExprValue::Bool(false)),
        ("isNull(mail)", ExprValue::Bool(true)),
        ("isPresent(proxyAddresses)", ExprValue::Bool(true)),
        ("bitAnd(514, 2)", ExprValue::Int(2)),
        ("bitAnd(512, 2) == 0", ExprValue::Bool(true)),
        ("bitOr(512, 2)", ExprValue::Int(514)),
        ("bitAnd(groupType, 2147483648) != 0", ExprValue::Bool(true)),
        ("bitAnd(userAccountControl, 2)", ExprValue::Null),
        (r#"base64(b"\x01\x02")"#, s("AQI=")),
        ("primarySmtp(proxyAddresses)", s("Primary@X.com")),
        (r#"primarySmtp(["smtp:a@x"])"#, ExprValue::Null),
        ("primarySmtp(mail)", ExprValue::Null),
        ("AuthoritativeNull()", ExprValue::AuthoritativeNull),
        ("IgnoreThisFlow()", ExprValue::IgnoreThisFlow),
        (r#"matches("abc", "^a.c$")"#, ExprValue::Bool(true)),
    ];
    for (text, want) in cases {
        assert_eq!(&eval(text, &o).unwrap(), want, "{text}");
    }
}

#[test]
fn errors_name_the_expression_and_the_object() {
    let e = Expr::compile("displayName +").unwrap_err();
    assert!(matches!(e, ExprError::Parse { .. }), "{e}");
    assert!(e.to_string().contains("`displayName +`"), "{e}");
    let o = Obj::new("user").dn("CN=Ann,DC=x");
    for text in ["1 / 0", "size(mail)", "lower(1)", "nosuch(1)", "bitAnd(1)"] {
        let e = eval(text, &o).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("`{text}`")) && msg.contains("user `CN=Ann,DC=x`"), "{msg}");
    }
    let e = Expr::compile("1").unwrap().evaluate_bool(&o).unwrap_err();
    assert!(matches!(e, ExprError::ResultType { want: "bool", .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Scoping filters
// ---------------------------------------------------------------------------------------------

fn clause(attribute: &str, op: &str, value: ScopeValue) -> ScopeClause {
    ScopeClause { attribute: attribute.into(), operator: ScopeOperator::parse(op).unwrap(), value }
}

fn t(v: &str) -> ScopeValue {
    ScopeValue::Text(v.into())
}

#[test]
fn scope_operators() {
    let mut o = Obj::new("user")
        .dn("CN=Ann,OU=Staff,DC=corp,DC=com")
        .s("sAMAccountName", &["Ann.Lee"])
        .s("proxyAddresses", &["SMTP:ann@x.com", "smtp:al@y.com"])
        .i("userAccountControl", &[514])
        .i("employeeNumber", &[42])
        .s("extensionAttribute1", &["10"])
        .b("isCriticalSystemObject", false);
    o.member_of = vec!["cn=pilot,ou=groups,dc=corp,dc=com".into()];
    use ScopeValue::{Boolean, Integer, List};
    let cases: Vec<(ScopeClause, bool)> = vec![
        (clause("sAMAccountName", "EQUAL", t("ann.lee")), true),
        (clause("SAMACCOUNTNAME", "EQUAL", t("ANN.LEE")), true),
        (clause("sAMAccountName", "EQUAL", t("bob")), false),
        (clause("sAMAccountName", "NOTEQUAL", t("bob")), true),
        (clause("sAMAccountName", "NOTEQUAL", t("Ann.Lee")), false),
        (clause("mail", "EQUAL", t("x")), false),
        (clause("mail", "NOTEQUAL", t("x")), true),
        (clause("isCriticalSystemObject", "EQUAL", Boolean(false)), true),
        (clause("isCriticalSystemObject", "NOTEQUAL", Boolean(true)), true),
        (clause("isCriticalSystemObject", "EQUAL", t("FALSE")), true),
        (clause("employeeNumber", "EQUAL", Integer(42)), true),
        (clause("employeeNumber", "LESSTHAN", Integer(43)), true),
        (clause("employeeNumber", "LESSTHAN", Integer(42)), false),
        (clause("employeeNumber", "LESSTHAN_OR_EQUAL", Integer(42)), true),
        (clause("employeeNumber", "GREATERTHAN", Integer(41)), true),
        (clause("employeeNumber", "GREATERTHAN", Integer(42)), false),
        (clause("employeeNumber", "GREATERTHAN_OR_EQUAL", Integer(42)), true),
        // text holding a number compares numerically ("10" > 9), other text lexically
        (clause("extensionAttribute1", "GREATERTHAN", Integer(9)), true),
        (clause("sAMAccountName", "LESSTHAN", t("b")), true),
        (clause("sAMAccountName", "CONTAINS", t("N.L")), true),
        (clause("sAMAccountName", "NOTCONTAINS", t("n.l")), false),
        (clause("sAMAccountName", "STARTSWITH", t("ann")), true),
        (clause("sAMAccountName", "NOTSTARTSWITH", t("MSOL_")), true),
        (clause("sAMAccountName", "ENDSWITH", t("LEE")), true),
        (clause("sAMAccountName", "NOTENDSWITH", t("$")), true),
        (clause("adminDescription", "NOTSTARTSWITH", t("User_")), true),
        (clause("adminDescription", "STARTSWITH", t("User_")), false),
        // multi-valued: any value
        (clause("proxyAddresses", "EQUAL", t("smtp:al@y.com")), true),
        (clause("proxyAddresses", "STARTSWITH", t("SMTP:ann")), true),
        (clause("proxyAddresses", "ENDSWITH", t("@z.com")), false),
        (clause("proxyAddresses", "NOTCONTAINS", t("@y.com")), false),
        (clause("mail", "ISNULL", ScopeValue::None), true),
        (clause("mail", "ISNOTNULL", ScopeValue::None), false),
        (clause("proxyAddresses", "ISNOTNULL", ScopeValue::None), true),
        (clause("sAMAccountName", "ISIN", List(vec![t("bob"), t("ANN.LEE")])), true),
        (clause("sAMAccountName", "ISNOTIN", List(vec![t("bob")])), true),
        (clause("employeeNumber", "ISIN", List(vec![Integer(1), Integer(42)])), true),
        (clause("userAccountControl", "ISBITSET", Integer(2)), true),
        (clause("userAccountControl", "ISBITSET", Integer(512 | 2)), true),
        (clause("userAccountControl", "ISBITSET", Integer(16)), false),
        (clause("userAccountControl", "ISNOTBITSET", Integer(16)), true),
        (clause("userAccountControl", "ISNOTBITSET", Integer(2)), false),
        (clause("pwdLastSet", "ISBITSET", Integer(1)), false),
        (clause("x", "ISMEMBEROF", t("CN=Pilot,OU=Groups,DC=corp,DC=com")), true),
        (clause("x", "ISMEMBEROF", t("CN=Other,DC=corp,DC=com")), false),
        (clause("x", "ISNOTMEMBEROF", t("CN=Other,DC=corp,DC=com")), true),
        (clause("dn", "ENDSWITH", t("ou=staff,dc=corp,dc=com")), true),
        (clause("dn", "CONTAINS", t("OU=Disabled")), false),
    ];
    for (c, want) in &cases {
        assert_eq!(c.matches(&o), *want, "{} {} {:?}", c.attribute, c.operator.name(), c.value);
    }
    // every operator is covered
    for (op, name) in ScopeOperator::ALL {
        assert!(cases.iter().any(|(c, _)| c.operator == op), "{name} untested");
        assert_eq!(ScopeOperator::parse(name), Some(op));
        assert_eq!(ScopeOperator::parse(&name.to_lowercase()), Some(op));
    }
    assert_eq!(ScopeOperator::parse("LESSTHANOREQUAL"), Some(ScopeOperator::LessThanOrEqual));
    assert_eq!(ScopeOperator::parse("EQUALS"), None);
}

#[test]
fn scope_groups_or_clauses_and_expression() {
    let yes = clause("a", "EQUAL", t("1"));
    let no = clause("a", "EQUAL", t("2"));
    let o = Obj::new("user").s("a", &["1"]).s("b", &["x"]);
    let g = |cs: Vec<ScopeClause>| ScopeGroup { clauses: cs };
    let scope = |groups, expression: Option<&str>| Scope {
        groups,
        expression: expression.map(|e| Expr::compile(e).unwrap()),
    };
    assert!(scope(vec![], None).matches(&o).unwrap());
    assert!(scope(vec![g(vec![yes.clone()])], None).matches(&o).unwrap());
    assert!(!scope(vec![g(vec![yes.clone(), no.clone()])], None).matches(&o).unwrap());
    assert!(scope(vec![g(vec![no.clone()]), g(vec![yes.clone()])], None).matches(&o).unwrap());
    assert!(!scope(vec![g(vec![yes.clone()])], Some(r#"b == "y""#)).matches(&o).unwrap());
    assert!(scope(vec![g(vec![yes.clone()])], Some(r#"b == "x""#)).matches(&o).unwrap());
    assert!(scope(vec![], Some(r#"b == "x""#)).matches(&o).unwrap());
    assert!(!scope(vec![], Some("mail")).matches(&o).unwrap(), "null counts as false");
    assert!(scope(vec![], Some("b")).matches(&o).is_err(), "a string is not a condition");
}

// ---------------------------------------------------------------------------------------------
// Flows
// ---------------------------------------------------------------------------------------------

fn expr_flow(text: &str) -> Flow {
    Flow {
        target: "t".into(),
        kind: FlowKind::Expression { expr: Expr::compile(text).unwrap() },
        apply_once: false,
    }
}

#[test]
fn flow_kinds_and_results() {
    let o = Obj::new("user").r("manager", &["CN=Boss,DC=x"]).s("cn", &["Ann"]).bin("photo", &[1, 2]);
    let direct = Flow {
        target: "manager".into(),
        kind: FlowKind::Direct { source: "manager".into() },
        apply_once: false,
    };
    assert_eq!(
        direct.evaluate(&o).unwrap(),
        FlowValue::Values(AttrValues::Reference(vec!["CN=Boss,DC=x".into()]))
    );
    let absent =
        Flow { target: "x".into(), kind: FlowKind::Direct { source: "title".into() }, apply_once: false };
    assert_eq!(absent.evaluate(&o).unwrap(), FlowValue::Null);
    let constant = Flow {
        target: "usageLocation".into(),
        kind: FlowKind::Constant { value: AttrValues::String(vec!["US".into()]) },
        apply_once: true,
    };
    assert_eq!(constant.evaluate(&o).unwrap(), FlowValue::Values(AttrValues::String(vec!["US".into()])));
    let str_values =
        |v: &[&str]| FlowValue::Values(AttrValues::String(v.iter().map(|x| x.to_string()).collect()));
    let cases: &[(&str, FlowValue)] = &[
        ("cn", str_values(&["Ann"])),
        (r#"["a", "b"]"#, str_values(&["a", "b"])),
        (r#"["a", null, ""]"#, str_values(&["a"])),
        ("42", FlowValue::Values(AttrValues::Integer(vec![42]))),
        ("42u", FlowValue::Values(AttrValues::Integer(vec![42]))),
        ("[1, 2]", FlowValue::Values(AttrValues::Integer(vec![1, 2]))),
        ("true", FlowValue::Values(AttrValues::Boolean(vec![true]))),
        ("photo", FlowValue::Values(AttrValues::Binary(vec![vec![1, 2]]))),
        ("manager", str_values(&["CN=Boss,DC=x"])),
        ("null", FlowValue::Null),
        ("mail", FlowValue::Null),
        (r#""""#, FlowValue::Null),
        ("[]", FlowValue::Null),
        (r#"b"""#, FlowValue::Null),
        ("AuthoritativeNull()", FlowValue::AuthoritativeNull),
        ("IgnoreThisFlow()", FlowValue::Ignore),
        (r#"isPresent(mail) ? mail : AuthoritativeNull()"#, FlowValue::AuthoritativeNull),
    ];
    for (text, want) in cases {
        assert_eq!(&expr_flow(text).evaluate(&o).unwrap(), want, "{text}");
    }
    for bad in
        ["1.5", r#"{"a": 1}"#, r#"["a", 1]"#, "[[1]]", "[AuthoritativeNull()]", "18446744073709551615u"]
    {
        let e = expr_flow(bad).evaluate(&o).unwrap_err();
        assert!(matches!(e, ExprError::ResultType { .. }), "{bad}: {e}");
    }
}

#[test]
fn flows_from_toml_carry_kind_and_apply_once() {
    let text = r#"
[[inbound]]
name = "r"
connectors = ["hr"]
cs_object_type = "user"
mv_object_type = "person"
precedence = 1
flows = [
    { target = "a", source = "x" },
    { target = "b", constant = "US", apply_once = true },
    { target = "c", constant = [1, 2] },
    { target = "d", expression = "lower(x)" },
]
"#;
    let set = RuleSet::from_toml(text, "test.toml").unwrap();
    let rule = set.inbound_for("ldap-ad", "HR", "USER").next().unwrap();
    assert_eq!(rule.link_type, LinkType::Join);
    let f = &rule.flows;
    assert!(matches!(&f[0].kind, FlowKind::Direct { source } if source == "x") && !f[0].apply_once);
    assert!(
        matches!(&f[1].kind, FlowKind::Constant { value } if *value == AttrValues::String(vec!["US".into()]))
    );
    assert!(f[1].apply_once);
    assert!(matches!(&f[2].kind, FlowKind::Constant { value } if *value == AttrValues::Integer(vec![1, 2])));
    assert!(matches!(&f[3].kind, FlowKind::Expression { expr } if expr.source() == "lower(x)"));
}

// ---------------------------------------------------------------------------------------------
// The default rules
// ---------------------------------------------------------------------------------------------

fn rule_in<'a>(set: &'a RuleSet, name: &str) -> &'a InboundRule {
    set.inbound.iter().find(|r| r.name == name).unwrap()
}
fn rule_out<'a>(set: &'a RuleSet, name: &str) -> &'a OutboundRule {
    set.outbound.iter().find(|r| r.name == name).unwrap()
}
fn flow_map(flows: &[Flow], o: &Obj) -> std::collections::BTreeMap<String, FlowValue> {
    flows.iter().map(|f| (f.target.clone(), f.evaluate(o).unwrap())).collect()
}
fn text(v: &str) -> FlowValue {
    FlowValue::Values(AttrValues::String(vec![v.into()]))
}

fn sample_ad_user() -> Obj {
    let guid = ImmutableId::from_object_guid(&GUID_BYTES).unwrap();
    Obj::new("user")
        .dn("CN=Ann Lee,OU=Staff,DC=corp,DC=example,DC=com")
        .bin("objectGUID", &GUID_BYTES)
        .id(&guid.to_base64())
        .s("cn", &["Ann Lee"])
        .s("sAMAccountName", &["alee"])
        .s("userPrincipalName", &["ann.lee@corp.example.com"])
        .s("mail", &["ann.lee@example.com"])
        .s("proxyAddresses", &["SMTP:ann.lee@example.com", "smtp:alee@example.com"])
        .s("givenName", &["Ann"])
        .s("sn", &["Lee"])
        .i("userAccountControl", &[514])
        .r("manager", &["CN=Boss,OU=Staff,DC=corp,DC=example,DC=com"])
}

#[test]
fn default_rules_load_sorted_and_select_by_connector() {
    let set = RuleSet::defaults().unwrap();
    let names: Vec<&str> = set.inbound_for("ldap-ad", "corp", "user").map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["In from AD - User Join"]);
    assert_eq!(set.inbound_for("ldif", "x", "contact").count(), 1);
    assert_eq!(set.inbound_for("ldap-openldap", "x", "inetOrgPerson").count(), 1);
    assert_eq!(set.inbound_for("ldap-openldap", "x", "groupOfNames").count(), 1);
    let cloud: Vec<&InboundRule> = set.inbound_for("graph", "tenant", "user").collect();
    assert_eq!(cloud.len(), 1);
    assert_eq!(cloud[0].link_type, LinkType::Join);
    assert_eq!(cloud[0].precedence, 500);
    for kind in ["graph", "cloud-test"] {
        for (mv, cs) in [("person", "user"), ("group", "group"), ("contact", "contact")] {
            let rules: Vec<&OutboundRule> = set.outbound_for(kind, "t", mv).collect();
            assert_eq!(rules.len(), 1, "{kind} {mv}");
            assert_eq!(rules[0].cs_object_type, cs);
            assert_eq!(rules[0].link_type, LinkType::Provision);
            assert_eq!(rules[0].deprovision, Deprovision::Delete);
        }
    }
    assert_eq!(set.outbound_for("ldap-ad", "corp", "person").count(), 0);
    for w in set.inbound.windows(2) {
        assert!((w[0].precedence, &w[0].name) < (w[1].precedence, &w[1].name));
    }
    assert!(set.multi_valued().contains("PROXYADDRESSES"));
    // the embedded list is what Expr::compile uses
    assert_eq!(&*crate::expr::default_multi_valued(), set.multi_valued());
}

#[test]
fn default_ad_user_rule_on_a_sample_user() {
    let set = RuleSet::defaults().unwrap();
    let rule = rule_in(&set, "In from AD - User Join");
    assert_eq!(rule.link_type, LinkType::Provision);
    let user = sample_ad_user();
    assert!(rule.scope.matches(&user).unwrap());
    let flows = flow_map(&rule.flows, &user);
    assert_eq!(flows["sourceAnchor"], text(GUID_IMMUTABLE_ID));
    assert_eq!(flows["accountEnabled"], FlowValue::Values(AttrValues::Boolean(vec![false])));
    assert_eq!(flows["displayName"], text("Ann Lee"), "displayName falls back to cn");
    assert_eq!(flows["mailNickname"], text("alee"), "mailNickname falls back to sAMAccountName");
    assert_eq!(flows["userPrincipalName"], text("ann.lee@corp.example.com"));
    assert_eq!(
        flows["manager"],
        FlowValue::Values(AttrValues::Reference(vec!["CN=Boss,OU=Staff,DC=corp,DC=example,DC=com".into()]))
    );
    assert_eq!(flows["title"], FlowValue::Null);
    assert_eq!(flows["distinguishedName"], text("CN=Ann Lee,OU=Staff,DC=corp,DC=example,DC=com"));
    // join on the same anchor
    let lookups = rule.join[0].source_values(&user).unwrap().unwrap();
    assert_eq!(lookups, vec![("sourceAnchor".to_string(), vec![GUID_IMMUTABLE_ID.to_string()], false)]);

    // an enabled user with its own displayName and mailNickname
    let enabled = sample_ad_user()
        .i("userAccountControl", &[512])
        .s("displayName", &["Ann"])
        .s("mailNickname", &["ann"]);
    let flows = flow_map(&rule.flows, &enabled);
    assert_eq!(flows["accountEnabled"], FlowValue::Values(AttrValues::Boolean(vec![true])));
    assert_eq!(flows["displayName"], text("Ann"));
    assert_eq!(flows["mailNickname"], text("ann"));

    // mS-DS-ConsistencyGuid wins over objectGUID; a value that is not 16 bytes does not
    let other = ImmutableId::from_hex("727b53eeb59e4a478286431309133fd9").unwrap();
    let moved = sample_ad_user().bin("mS-DS-ConsistencyGuid", other.as_bytes());
    assert_eq!(flow_map(&rule.flows, &moved)["sourceAnchor"], text("cntT7rWeSkeChkMTCRM/2Q=="));
    let broken = sample_ad_user().bin("mS-DS-ConsistencyGuid", &[1, 2, 3]);
    assert_eq!(flow_map(&rule.flows, &broken)["sourceAnchor"], text(GUID_IMMUTABLE_ID));
}

#[test]
fn default_ad_user_scope_filters_system_accounts() {
    let set = RuleSet::defaults().unwrap();
    let rule = rule_in(&set, "In from AD - User Join");
    let out_of_scope = [
        sample_ad_user().b("isCriticalSystemObject", true),
        sample_ad_user().s("sAMAccountName", &["krbtgt"]),
        sample_ad_user().s("sAMAccountName", &["SUPPORT_388945a0"]),
        sample_ad_user().s("sAMAccountName", &["MSOL_0123abcd"]),
        sample_ad_user().s("sAMAccountName", &["WS01$"]),
        sample_ad_user().s("adminDescription", &["User_hidden"]),
    ];
    for o in &out_of_scope {
        assert!(!rule.scope.matches(o).unwrap(), "{:?}", o.attrs);
    }
    assert!(rule.scope.matches(&sample_ad_user().b("isCriticalSystemObject", false)).unwrap());
}

#[test]
fn default_group_and_contact_rules() {
    let set = RuleSet::defaults().unwrap();
    let rule = rule_in(&set, "In from AD - Group Join");
    let group = Obj::new("group")
        .dn("CN=Sales,DC=x")
        .id(GUID_IMMUTABLE_ID)
        .s("cn", &["Sales"])
        .i("groupType", &[-2147483646])
        .r("member", &["CN=Ann,DC=x", "CN=Bob,DC=x"]);
    assert!(rule.scope.matches(&group).unwrap());
    let flows = flow_map(&rule.flows, &group);
    assert_eq!(flows["securityEnabled"], FlowValue::Values(AttrValues::Boolean(vec![true])));
    assert_eq!(flows["mailEnabled"], FlowValue::Values(AttrValues::Boolean(vec![false])));
    assert_eq!(flows["displayName"], text("Sales"));
    assert_eq!(
        flows["member"],
        FlowValue::Values(AttrValues::Reference(vec!["CN=Ann,DC=x".into(), "CN=Bob,DC=x".into()]))
    );
    let distribution = group.clone().i("groupType", &[2]).s("mail", &["sales@x.com"]);
    let flows = flow_map(&rule.flows, &distribution);
    assert_eq!(flows["securityEnabled"], FlowValue::Values(AttrValues::Boolean(vec![false])));
    assert_eq!(flows["mailEnabled"], FlowValue::Values(AttrValues::Boolean(vec![true])));
    assert!(!rule.scope.matches(&group.clone().i("groupType", &[-2147483643])).unwrap(), "builtin group");

    let contact_rule = rule_in(&set, "In from AD - Contact Join");
    let contact = Obj::new("contact").dn("CN=Ext,DC=x").id(GUID_IMMUTABLE_ID).s("cn", &["Ext"]);
    assert!(!contact_rule.scope.matches(&contact).unwrap(), "no mail: out of scope");
    assert!(contact_rule.scope.matches(&contact.clone().s("mail", &["e@y.com"])).unwrap());
    assert!(contact_rule.scope.matches(&contact.clone().s("proxyAddresses", &["SMTP:e@y.com"])).unwrap());

    let ldap = rule_in(&set, "In from OpenLDAP - Person Join");
    let person = Obj::new("inetOrgPerson")
        .dn("uid=ann,ou=people,dc=x")
        .s("entryUUID", &["0f5a1e2c-1111-2222-3333-444455556666"])
        .s("uid", &["ann"])
        .s("cn", &["Ann Lee"]);
    let flows = flow_map(&ldap.flows, &person);
    assert_eq!(flows["sourceAnchor"], text("0f5a1e2c-1111-2222-3333-444455556666"));
    assert_eq!(flows["userPrincipalName"], text("ann"));
    assert_eq!(flows["mailNickname"], text("ann"));
    let flows = flow_map(&ldap.flows, &person.clone().s("mail", &["ann@x.com"]).id("abc"));
    assert_eq!(flows["userPrincipalName"], text("ann@x.com"));
    assert_eq!(flows["sourceAnchor"], text("abc"));
}

#[test]
fn default_outbound_user_join_groups_and_soft_match_conditions() {
    let set = RuleSet::defaults().unwrap();
    let rule = rule_out(&set, "Out to AAD - User Identity");
    let mv = Obj::new("person")
        .s("sourceAnchor", &[GUID_IMMUTABLE_ID])
        .s("userPrincipalName", &["Ann.Lee@Example.com"])
        .s("proxyAddresses", &["smtp:alee@example.com", "SMTP:Ann.Lee@Example.com"])
        .s("sn", &["Lee"])
        .s("title", &["Engineer"]);
    assert!(rule.scope.matches(&mv).unwrap());
    assert!(!rule.scope.matches(&Obj::new("person").s("sourceAnchor", &["x"])).unwrap(), "no UPN");
    assert_eq!(rule.join.len(), 3);
    let hard = rule.join[0].source_values(&mv).unwrap().unwrap();
    assert_eq!(hard, vec![("onPremisesImmutableId".into(), vec![GUID_IMMUTABLE_ID.into()], false)]);
    let upn = rule.join[1].source_values(&mv).unwrap().unwrap();
    assert_eq!(upn, vec![("userPrincipalName".into(), vec!["ann.lee@example.com".into()], true)]);
    let smtp = rule.join[2].source_values(&mv).unwrap().unwrap();
    assert_eq!(smtp, vec![("mail".into(), vec!["ann.lee@example.com".into()], true)]);
    // without proxyAddresses, mail; without either, the group cannot be used
    let plain = Obj::new("person").s("mail", &["A@x.com"]);
    assert_eq!(rule.join[2].source_values(&plain).unwrap().unwrap()[0].1, vec!["a@x.com".to_string()]);
    assert_eq!(rule.join[2].source_values(&Obj::new("person")).unwrap(), None);
    assert_eq!(rule.join[0].source_values(&Obj::new("person")).unwrap(), None);

    // candidates
    let cloud_only = Obj::new("user").s("userPrincipalName", &["ann.lee@example.com"]).s("id", &["c1"]);
    let admin = cloud_only.clone().s("adminRoles", &["Global Administrator"]);
    let anchored = cloud_only.clone().s("onPremisesImmutableId", &["other=="]);
    let synced = cloud_only.clone().b("onPremisesSyncEnabled", true);
    let not_synced = cloud_only.clone().b("onPremisesSyncEnabled", false);
    assert!(rule.join[0].candidate_allowed(&anchored).unwrap(), "the hard match has no condition");
    for soft in [&rule.join[1], &rule.join[2]] {
        assert!(soft.candidate_allowed(&cloud_only).unwrap());
        assert!(soft.candidate_allowed(&not_synced).unwrap());
        assert!(!soft.candidate_allowed(&admin).unwrap(), "admins are never soft-matched");
        assert!(
            !soft.candidate_allowed(&anchored).unwrap(),
            "a cloud object with an ImmutableID is not soft-matched"
        );
        assert!(!soft.candidate_allowed(&synced).unwrap());
    }

    let flows = flow_map(&rule.flows, &mv);
    assert_eq!(flows["onPremisesImmutableId"], text(GUID_IMMUTABLE_ID));
    assert_eq!(flows["surname"], text("Lee"));
    assert_eq!(flows["jobTitle"], text("Engineer"));
}

#[test]
fn default_outbound_group_soft_match_only_for_mail_enabled() {
    let set = RuleSet::defaults().unwrap();
    let rule = rule_out(&set, "Out to AAD - Group Identity");
    let security =
        Obj::new("group").s("sourceAnchor", &["a"]).b("securityEnabled", true).b("mailEnabled", false);
    assert!(rule.scope.matches(&security).unwrap());
    assert_eq!(rule.join[1].source_values(&security).unwrap(), None);
    let mail = Obj::new("group")
        .s("sourceAnchor", &["a"])
        .b("securityEnabled", false)
        .b("mailEnabled", true)
        .s("proxyAddresses", &["SMTP:Sales@X.com"])
        .r("member", &["CN=Ann,DC=x"]);
    assert!(rule.scope.matches(&mail).unwrap());
    assert_eq!(
        rule.join[1].source_values(&mail).unwrap().unwrap(),
        vec![("proxyAddresses".into(), vec!["smtp:sales@x.com".into()], true)]
    );
    let neither =
        Obj::new("group").s("sourceAnchor", &["a"]).b("securityEnabled", false).b("mailEnabled", false);
    assert!(!rule.scope.matches(&neither).unwrap());
    let flows = flow_map(&rule.flows, &mail);
    assert_eq!(flows["members"], FlowValue::Values(AttrValues::Reference(vec!["CN=Ann,DC=x".into()])));

    let contact = rule_out(&set, "Out to AAD - Contact Identity");
    let c = Obj::new("contact").s("sourceAnchor", &["a"]).s("mail", &["E@Y.com"]);
    assert_eq!(contact.join[1].source_values(&c).unwrap().unwrap()[0].1, vec!["smtp:e@y.com".to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Overrides, fingerprint, errors
// ---------------------------------------------------------------------------------------------

#[test]
fn overrides_replace_disable_and_add() {
    let defaults = RuleSet::defaults().unwrap();
    let overrides = RuleSet::from_toml(
        r#"
[[inbound]]
name = "In from AD - User Join"
connector_kinds = ["ldap-ad"]
cs_object_type = "user"
mv_object_type = "person"
link_type = "provision"
precedence = 100
flows = [{ target = "displayName", expression = "upper(cn)" }]

[[inbound]]
name = "In from AD - Contact Join"
enabled = false

[[outbound]]
name = "Out to HR"
connectors = ["hr-db"]
mv_object_type = "person"
cs_object_type = "employee"
precedence = 10
deprovision = "disconnect"
"#,
        "config.toml",
    )
    .unwrap();
    let set = defaults.clone().with_overrides(overrides);
    let user = rule_in(&set, "In from AD - User Join");
    assert_eq!(user.flows.len(), 1);
    assert_eq!(user.connectors.kinds, ["ldap-ad"]);
    assert!(set.inbound.iter().all(|r| r.name != "In from AD - Contact Join"));
    assert_eq!(set.inbound_for("ldap-ad", "corp", "contact").count(), 0);
    let hr = rule_out(&set, "Out to HR");
    assert_eq!(hr.deprovision, Deprovision::Disconnect);
    assert_eq!(hr.link_type, LinkType::Join);
    assert_eq!(set.outbound_for("anything", "HR-DB", "person").count(), 1);
    assert_eq!(set.inbound.len(), defaults.inbound.len() - 1);
    assert_eq!(set.outbound.len(), defaults.outbound.len() + 1);
    assert_ne!(set.fingerprint(), defaults.fingerprint());
}

#[test]
fn fingerprint_is_stable_and_changes_with_an_edit() {
    let a = RuleSet::defaults().unwrap();
    let b = RuleSet::defaults().unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 64);
    assert!(a.fingerprint().chars().all(|c| c.is_ascii_hexdigit()));
    // the same rules in another order and layout give the same fingerprint
    let one = "[[inbound]]\nname = \"a\"\nconnectors = [\"c\"]\ncs_object_type = \"u\"\nmv_object_type = \"p\"\nprecedence = 1\n";
    let two = "[[inbound]]\nname = \"b\"\nconnectors = [\"c\"]\ncs_object_type = \"u\"\nmv_object_type = \"p\"\nprecedence = 2\n";
    let ab = RuleSet::from_toml(&format!("{one}\n{two}"), "x").unwrap();
    let ba = RuleSet::from_toml(&format!("# comment\n{two}\n{one}"), "y").unwrap();
    assert_eq!(ab.fingerprint(), ba.fingerprint());
    let edited =
        DEFAULT_RULES_TOML.replace("coalesce(displayName, cn)", "coalesce(displayName, cn, sAMAccountName)");
    assert_ne!(edited, DEFAULT_RULES_TOML);
    let c = RuleSet::from_toml(&edited, "edited.toml").unwrap();
    assert_ne!(a.fingerprint(), c.fingerprint());
    // a description does not change what the rules do, so it does not force a full sync
    let redescribed = DEFAULT_RULES_TOML.replace("AD users: join", "Users from AD: join");
    assert_ne!(redescribed, DEFAULT_RULES_TOML);
    assert_eq!(a.fingerprint(), RuleSet::from_toml(&redescribed, "x").unwrap().fingerprint());
    let reprecedenced = DEFAULT_RULES_TOML.replace("precedence = 500", "precedence = 499");
    assert_ne!(a.fingerprint(), RuleSet::from_toml(&reprecedenced, "x").unwrap().fingerprint());
}

fn load_err(text: &str) -> RuleError {
    RuleSet::from_toml(text, "config/rules.toml").unwrap_err()
}

const HEAD: &str = "[[inbound]]\nname = \"My Rule\"\nconnectors = [\"c\"]\ncs_object_type = \"user\"\nmv_object_type = \"person\"\nprecedence = 1\n";

#[test]
fn errors_name_origin_rule_and_field() {
    let e =
        load_err(&format!("{HEAD}flows = [{{ target = \"displayName\", expression = \"coalesce(cn,\" }}]\n"));
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "config/rules.toml: rule `My Rule`, flow `displayName`: CEL expression `coalesce(cn,`"
        ),
        "{msg}"
    );
    assert_eq!(e.rule.as_deref(), Some("My Rule"));

    let e = load_err(&format!(
        "{HEAD}[[inbound.scope.groups]]\nclauses = [{{ attribute = \"cn\", operator = \"EQUAL\", value = \"a\" }}, {{ attribute = \"sn\", operator = \"LIKE\", value = \"a\" }}]\n"
    ));
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "config/rules.toml: rule `My Rule`, scope group 1 clause 2 (`sn`): unknown operator `LIKE`"
        ),
        "{msg}"
    );

    let e = load_err(&format!("{HEAD}colour = \"blue\"\n"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("config/rules.toml: rule `My Rule`: ") && msg.contains("unknown field `colour`"),
        "{msg}"
    );
    let e = load_err(&format!("{HEAD}flows = [{{ target = \"a\", sorce = \"b\" }}]\n"));
    assert!(e.to_string().contains("unknown field `sorce`"), "{e}");
    let e = load_err("[[inbond]]\nname = \"x\"\n");
    assert!(e.to_string().starts_with("config/rules.toml: ") && e.to_string().contains("inbond"), "{e}");

    let e =
        load_err(&format!("{HEAD}[[inbound.join]]\nclauses = [{{ source = \"a +\", target = \"b\" }}]\n"));
    assert_eq!(e.field.as_deref(), Some("join group 1 clause 1 (`b`)"), "{e}");
    let e = load_err(&format!(
        "{HEAD}[[inbound.join]]\nclauses = [{{ source = \"a\", target = \"b\" }}]\ncondition = \")\"\n"
    ));
    assert_eq!(e.field.as_deref(), Some("join group 1 condition"), "{e}");
    let e = load_err(&format!("{HEAD}[inbound.scope]\nexpression = \"((\"\n"));
    assert_eq!(e.field.as_deref(), Some("scope expression"), "{e}");
}

#[test]
fn validation_refusals() {
    let cases: &[(&str, &str)] = &[
        (&format!("{HEAD}{HEAD}"), "same name"),
        (
            "[[inbound]]\nname = \" \"\nconnectors = [\"c\"]\ncs_object_type = \"u\"\nmv_object_type = \"p\"\nprecedence = 1\n",
            "name is empty",
        ),
        (
            "[[inbound]]\nname = \"x\"\ncs_object_type = \"u\"\nmv_object_type = \"p\"\nprecedence = 1\n",
            "selects no connector",
        ),
        (
            "[[inbound]]\nname = \"x\"\nconnectors = [\"c\"]\nmv_object_type = \"p\"\nprecedence = 1\n",
            "cs_object_type",
        ),
        (
            "[[inbound]]\nname = \"x\"\nconnectors = [\"c\"]\ncs_object_type = \"u\"\nmv_object_type = \"p\"\n",
            "precedence",
        ),
        (&format!("{HEAD}link_type = \"merge\"\n"), "unknown link type"),
        (&format!("{HEAD}deprovision = \"delete\"\n"), "only outbound"),
        (
            &format!("{HEAD}flows = [{{ target = \"a\", source = \"b\", expression = \"c\" }}]\n"),
            "exactly one of",
        ),
        (&format!("{HEAD}flows = [{{ target = \"a\" }}]\n"), "exactly one of"),
        (
            &format!(
                "{HEAD}flows = [{{ target = \"a\", source = \"b\" }}, {{ target = \"A\", source = \"c\" }}]\n"
            ),
            "same target",
        ),
        (&format!("{HEAD}flows = [{{ target = \"a\", constant = 1.5 }}]\n"), "a constant is"),
        (&format!("{HEAD}flows = [{{ target = \"a\", constant = [\"x\", 1] }}]\n"), "a constant is"),
        (
            &format!(
                "{HEAD}[[inbound.scope.groups]]\nclauses = [{{ attribute = \"a\", operator = \"ISNULL\", value = 1 }}]\n"
            ),
            "takes no value",
        ),
        (
            &format!(
                "{HEAD}[[inbound.scope.groups]]\nclauses = [{{ attribute = \"a\", operator = \"EQUAL\" }}]\n"
            ),
            "takes a `value`",
        ),
        (
            &format!(
                "{HEAD}[[inbound.scope.groups]]\nclauses = [{{ attribute = \"a\", operator = \"ISIN\", value = \"x\" }}]\n"
            ),
            "takes a list",
        ),
        (
            &format!(
                "{HEAD}[[inbound.scope.groups]]\nclauses = [{{ attribute = \"a\", operator = \"ISBITSET\", value = \"2\" }}]\n"
            ),
            "integer mask",
        ),
        (
            &format!(
                "{HEAD}[[inbound.scope.groups]]\nclauses = [{{ attribute = \"a\", operator = \"ISMEMBEROF\", value = \"not a dn\" }}]\n"
            ),
            "group DN",
        ),
        (&format!("{HEAD}[[inbound.scope.groups]]\nclauses = []\n"), "at least one clause"),
        (&format!("{HEAD}[[inbound.join]]\nclauses = []\n"), "at least one clause"),
        (
            &format!(
                "{HEAD}[[inbound]]\nname = \"Other\"\nconnectors = [\"C\"]\ncs_object_type = \"USER\"\nmv_object_type = \"person\"\nprecedence = 1\n"
            ),
            "precedence 1 is also used",
        ),
    ];
    for (text, want) in cases {
        let e = load_err(text);
        assert!(e.to_string().contains(want), "want `{want}`, got: {e}");
    }
    // a provision rule without join is fine, and a disabled rule needs nothing but its name
    let ok = format!("{HEAD}link_type = \"provision\"\n[[outbound]]\nname = \"Gone\"\nenabled = false\n");
    let set = RuleSet::from_toml(&ok, "x").unwrap();
    assert_eq!(set.inbound.len(), 1);
    assert!(set.outbound.is_empty());
}

#[test]
fn rule_sets_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<RuleSet>();
    shareable::<Expr>();
    let set = std::sync::Arc::new(RuleSet::defaults().unwrap());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let set = std::sync::Arc::clone(&set);
            std::thread::spawn(move || {
                let rule = rule_in(&set, "In from AD - User Join");
                flow_map(&rule.flows, &sample_ad_user())["sourceAnchor"].clone()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), text(GUID_IMMUTABLE_ID));
    }
}

// ---------------------------------------------------------------------------------------------
// Never panics
// ---------------------------------------------------------------------------------------------

fn arb_values() -> impl Strategy<Value = AttrValues> {
    prop_oneof![
        proptest::collection::vec(".{0,12}", 0..3).prop_map(AttrValues::String),
        proptest::collection::vec(any::<i64>(), 0..3).prop_map(AttrValues::Integer),
        proptest::collection::vec(any::<bool>(), 0..3).prop_map(AttrValues::Boolean),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..3)
            .prop_map(AttrValues::Binary),
        proptest::collection::vec(".{0,12}", 0..3).prop_map(AttrValues::Reference),
    ]
}

const NAMES: &[&str] =
    &["cn", "mail", "proxyAddresses", "userAccountControl", "mS-DS-ConsistencyGuid", "member"];

fn arb_object() -> impl Strategy<Value = Obj> {
    (proptest::collection::vec((0..NAMES.len(), arb_values()), 0..6), proptest::option::of(".{0,20}"))
        .prop_map(|(attrs, id)| {
            let mut o = Obj::new("user").dn("CN=x,DC=y");
            for (i, v) in attrs {
                o.attrs.insert(NAMES[i], v);
            }
            o.id = id;
            o
        })
}

/// Expression text built from the pieces the rules use, so that many candidates parse.
fn arb_expression() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("cn".to_owned()),
        Just("mail".to_owned()),
        Just("proxyAddresses".to_owned()),
        Just("userAccountControl".to_owned()),
        Just(r#"attr["mS-DS-ConsistencyGuid"]"#.to_owned()),
        Just("member".to_owned()),
        Just("immutableId".to_owned()),
        Just("dn".to_owned()),
        Just("null".to_owned()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[a-z ]{0,5}".prop_map(|s| format!("{s:?}")),
    ];
    atom.prop_recursive(4, 24, 3, |inner| {
        let f = prop_oneof![
            Just("lower"),
            Just("upper"),
            Just("trim"),
            Just("coalesce"),
            Just("isPresent"),
            Just("isNull"),
            Just("bitAnd"),
            Just("bitOr"),
            Just("base64"),
            Just("primarySmtp"),
            Just("size"),
            Just("join"),
            Just("left"),
            Just("right"),
            Just("split"),
            Just("replace"),
            Just("string"),
            Just("int"),
        ];
        prop_oneof![
            (f, proptest::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (
                inner.clone(),
                prop_oneof![Just("+"), Just("=="), Just("&&"), Just("/"), Just("%"), Just("<"), Just("in")],
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(a, b, c)| format!("({a} ? {b} : {c})")),
            inner.clone().prop_map(|a| format!("[{a}]")),
            inner.prop_map(|a| format!("{a}[0]")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,60}", o in arb_object()) {
        if let Ok(e) = Expr::compile(&text) {
            let _ = e.evaluate(&o);
            let f = Flow { target: "t".into(), kind: FlowKind::Expression { expr: e }, apply_once: false };
            let _ = f.evaluate(&o);
        }
    }

    #[test]
    fn arbitrary_expressions_never_panic(text in arb_expression(), o in arb_object()) {
        let e = Expr::compile(&text);
        prop_assert!(e.is_ok(), "{}: {:?}", text, e.err());
        if let Ok(e) = e {
            let _ = e.evaluate(&o);
            let _ = e.evaluate_bool(&o);
            let group = JoinGroup { clauses: vec![JoinClause { source: e.clone(), target_attribute: "x".into(), case_insensitive: true }], condition: Some(e.clone()) };
            let _ = group.source_values(&o);
            let _ = group.candidate_allowed(&o);
            let f = Flow { target: "t".into(), kind: FlowKind::Expression { expr: e }, apply_once: false };
            let _ = f.evaluate(&o);
        }
    }

    #[test]
    fn default_rules_never_panic_on_arbitrary_objects(o in arb_object()) {
        let set = RuleSet::defaults().unwrap();
        for rule in &set.inbound {
            let _ = rule.scope.matches(&o);
            for g in &rule.join {
                let _ = g.source_values(&o);
                let _ = g.candidate_allowed(&o);
            }
            for f in &rule.flows {
                let _ = f.evaluate(&o);
            }
        }
        for rule in &set.outbound {
            let _ = rule.scope.matches(&o);
            for g in &rule.join {
                let _ = g.source_values(&o);
                let _ = g.candidate_allowed(&o);
            }
            for f in &rule.flows {
                let _ = f.evaluate(&o);
            }
        }
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(Expr::compile(&deep).is_err());
    let deep_list = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    assert!(Expr::compile(&deep_list).is_err());
    let chain = std::iter::repeat_n("1", 3000).collect::<Vec<_>>().join(" + ");
    assert!(Expr::compile(&chain).unwrap_err().to_string().contains("too"));
    let long = format!("\"{}\"", "a".repeat(20_000));
    assert!(Expr::compile(&long).unwrap_err().to_string().contains("too long"));
    // the default rules' shapes stay well within the limits
    let chain = std::iter::repeat_n("1", 40).collect::<Vec<_>>().join(" + ");
    assert_eq!(Expr::compile(&chain).unwrap().evaluate(&Obj::new("user")).unwrap(), ExprValue::Int(40));
}

#[test]
fn base64_matches_the_engine_encoding() {
    // the ImmutableID the default rules compute equals ImmutableId::to_base64
    let id = ImmutableId::from_object_guid(&GUID_BYTES).unwrap();
    assert_eq!(STANDARD.encode(GUID_BYTES), id.to_base64());
    assert_eq!(id.to_guid_string(), "fcc7e67f-fec6-4a65-b821-2f40a292d185");
}
