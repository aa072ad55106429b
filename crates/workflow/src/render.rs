//! Rendering notification templates (minijinja) and finding recipients' addresses.
//!
//! A template sees:
//!
//! | name | value |
//! |---|---|
//! | `target` | the object that made the transition: its metaverse attributes, looked up case-insensitively (`target.displayName`, `target.DisplayName`), plus `id` and `objectType` |
//! | `manager` | the target's manager, the same way (undefined when it has none: it renders empty) |
//! | `set.name`, `set.description` | the set |
//! | `transition` | `in` or `out` |
//! | `policy`, `workflow`, `activity` | their names |
//! | `recipient.address`, `recipient.role` | who this copy is for (`target`, `manager`, `set:NAME`, `address`) |
//! | `now` | when the transition was seen, `YYYY-MM-DD HH:MM UTC` |
//!
//! A multi-valued attribute is a list, any other its single value, as in sync-rule
//! expressions; binary values are base64. The HTML body is HTML-escaped, the subject and the
//! text body are not; a subject never holds a line break.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use minijinja::value::{Enumerator, Object, Value};
use minijinja::{Environment, UndefinedBehavior};
use syncctl_core::AttrValues;
use syncctl_store::{MvObject, Transition};

use crate::config::{Activity, Set};

/// The environment every template is compiled and rendered with.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `{{ manager.mail }}` for an object without a manager renders empty instead of failing.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
}

/// A metaverse object as templates see it.
#[derive(Debug)]
struct ObjectValue {
    /// lower-case name -> (name as spelled, value)
    attrs: BTreeMap<String, (String, Value)>,
}

impl ObjectValue {
    fn new(object: &MvObject) -> Self {
        let multi = syncctl_core::expr::default_multi_valued();
        let mut attrs = BTreeMap::new();
        for (name, values) in object.attributes.iter() {
            let list: Vec<Value> = match values {
                AttrValues::String(v) | AttrValues::Reference(v) | AttrValues::Timestamp(v) => {
                    v.iter().map(|s| Value::from(s.as_str())).collect()
                }
                AttrValues::Integer(v) => v.iter().map(|i| Value::from(*i)).collect(),
                AttrValues::Boolean(v) => v.iter().map(|b| Value::from(*b)).collect(),
                AttrValues::Binary(v) => v
                    .iter()
                    .map(|b| Value::from(base64::engine::general_purpose::STANDARD.encode(b)))
                    .collect(),
            };
            let value = if multi.contains(name.as_str()) {
                Value::from(list)
            } else {
                list.into_iter().next().unwrap_or(Value::UNDEFINED)
            };
            attrs.insert(name.as_str().to_ascii_lowercase(), (name.as_str().to_owned(), value));
        }
        attrs.insert("id".into(), ("id".into(), Value::from(object.id)));
        attrs.insert("objecttype".into(), ("objectType".into(), Value::from(object.object_type.as_str())));
        Self { attrs }
    }
}

impl Object for ObjectValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|k| self.attrs.get(&k.to_ascii_lowercase())).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.attrs.values().map(|(name, _)| Value::from(name.as_str())).collect())
    }
}

/// What a notification is rendered from.
#[derive(Clone, Copy, Debug)]
pub struct RenderInput<'a> {
    /// The object that made the transition.
    pub target: &'a MvObject,
    /// Its manager, if it has one in the metaverse.
    pub manager: Option<&'a MvObject>,
    /// The set.
    pub set: &'a Set,
    /// In or out.
    pub transition: Transition,
    /// The policy.
    pub policy: &'a str,
    /// The workflow.
    pub workflow: &'a str,
    /// When (ms).
    pub now_ms: i64,
}

/// A rendered notification for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Subject, on one line.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML.
    pub html: Option<String>,
}

/// Renders `activity` for one recipient; the error names the template that failed.
pub fn render(
    env: &Environment<'_>,
    activity: &Activity,
    input: &RenderInput<'_>,
    recipient: &str,
    role: &str,
) -> Result<Rendered, String> {
    let ctx = minijinja::context! {
        target => Value::from_object(ObjectValue::new(input.target)),
        manager => input.manager.map(|m| Value::from_object(ObjectValue::new(m))).unwrap_or(Value::UNDEFINED),
        set => minijinja::context! { name => input.set.name.as_str(), description => input.set.description.as_str() },
        transition => input.transition.as_str(),
        policy => input.policy,
        workflow => input.workflow,
        activity => activity.name.as_str(),
        recipient => minijinja::context! { address => recipient, role => role },
        now => utc_minutes(input.now_ms),
    };
    let one = |name: &str, source: &str| {
        env.render_named_str(name, source, &ctx)
            .map_err(|e| format!("activity `{}`, {name}: {e}", activity.name))
    };
    let subject = one_line(&one("subject.txt", &activity.subject)?);
    let text = one("text.txt", &activity.text)?;
    let html = match &activity.html {
        Some(h) => Some(one("body.html", h)?),
        None => None,
    };
    Ok(Rendered { subject, text, html })
}

/// Control characters (line breaks included) become spaces; runs of spaces collapse.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// The mail address of a metaverse object: `mail`, else the primary SMTP address of
/// `proxyAddresses`; `None` when it has neither, or they do not parse.
pub fn address_of(object: &MvObject) -> Option<String> {
    let parse = |s: &str| s.trim().parse::<lettre::Address>().ok().map(|a| a.to_string());
    if let Some(a) = object.attributes.first_text("mail").and_then(parse) {
        return Some(a);
    }
    match object.attributes.get("proxyAddresses") {
        Some(AttrValues::String(v)) => v.iter().find_map(|p| p.strip_prefix("SMTP:")).and_then(parse),
        _ => None,
    }
}

/// A person's name for an object: displayName, else userPrincipalName, mail, `mv:<id>`.
pub fn display_of(object: &MvObject) -> String {
    ["displayName", "userPrincipalName", "mail", "cn"]
        .iter()
        .find_map(|a| object.attributes.first_text(a).map(str::to_owned))
        .unwrap_or_else(|| format!("mv:{}", object.id))
}

/// A `Message-ID` (without angle brackets) from the parts that make a message unique, in the
/// sender's domain.
pub fn message_id(sender: &str, parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    let domain = sender.rsplit_once('@').map_or("syncctl.invalid", |(_, d)| d);
    format!("{}.syncctl@{domain}", &h.finalize().to_hex()[..32])
}

/// `YYYY-MM-DD HH:MM UTC` for milliseconds since the epoch.
pub fn utc_minutes(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use syncctl_core::Attributes;
    use syncctl_core::expr::Expr;

    use super::*;

    fn person(id: i64, attrs: &[(&str, AttrValues)]) -> MvObject {
        let mut attributes = Attributes::new();
        for (k, v) in attrs {
            attributes.insert(*k, v.clone());
        }
        MvObject {
            id,
            object_type: "person".into(),
            attributes,
            provenance: Default::default(),
            created_at: 0,
            changed_at: 0,
        }
    }

    fn text(v: &[&str]) -> AttrValues {
        AttrValues::String(v.iter().map(|s| (*s).to_owned()).collect())
    }

    fn activity(subject: &str, body: &str, html: Option<&str>) -> Activity {
        Activity {
            name: "tell".into(),
            recipients: vec![],
            subject: subject.into(),
            text: body.into(),
            html: html.map(Into::into),
        }
    }

    fn set() -> Set {
        Set {
            name: "sales".into(),
            description: "The sales team".into(),
            object_type: None,
            criteria: Expr::compile("true").unwrap(),
            time_based: false,
        }
    }

    #[test]
    fn templates_see_the_target_its_manager_and_the_transition() {
        let alice = person(
            7,
            &[
                ("displayName", text(&["Alice <Anders>"])),
                ("givenName", text(&["Alice"])),
                ("proxyAddresses", text(&["SMTP:alice@corp.example.com"])),
                ("employeeNumber", AttrValues::Integer(vec![42])),
            ],
        );
        let bob = person(8, &[("displayName", text(&["Bob Brown"]))]);
        let s = set();
        let input = RenderInput {
            target: &alice,
            manager: Some(&bob),
            set: &s,
            transition: Transition::In,
            policy: "joined",
            workflow: "welcome",
            now_ms: 1_767_225_600_000,
        };
        let a = activity(
            "Welcome to {{ set.name }},\r\n {{ target.DISPLAYNAME }}",
            "{{ target.givenName }} ({{ target.id }}, #{{ target.employeeNumber }}) joined {{ set.description }}; \
             manager {{ manager.displayName }}; {{ transition }} by {{ policy }}/{{ workflow }}/{{ activity }}; \
             to {{ recipient.address }} as {{ recipient.role }} at {{ now }}; {{ target.proxyAddresses | join(',') }}",
            Some("<p>{{ target.displayName }}</p>"),
        );
        let env = environment();
        let r = render(&env, &a, &input, "bob@corp.example.com", "manager").unwrap();
        assert_eq!(r.subject, "Welcome to sales, Alice <Anders>");
        assert_eq!(
            r.text,
            "Alice (7, #42) joined The sales team; manager Bob Brown; in by joined/welcome/tell; \
             to bob@corp.example.com as manager at 2026-01-01 00:00 UTC; SMTP:alice@corp.example.com"
        );
        assert_eq!(r.html.as_deref(), Some("<p>Alice &lt;Anders&gt;</p>"));
        // Without a manager the lookups render empty.
        let no_manager = RenderInput { manager: None, ..input };
        let r =
            render(&env, &activity("x", "[{{ manager.displayName }}]", None), &no_manager, "a@b.c", "target")
                .unwrap();
        assert_eq!(r.text, "[]");
        // A template that fails at render time names the activity and the part.
        let e = render(
            &env,
            &activity("x", "{{ target.displayName | nosuchfilter }}", None),
            &input,
            "a@b.c",
            "target",
        )
        .unwrap_err();
        assert!(e.contains("activity `tell`, text.txt"), "{e}");
    }

    #[test]
    fn addresses_and_names() {
        assert_eq!(
            address_of(&person(1, &[("mail", text(&["a@corp.example.com"]))])).as_deref(),
            Some("a@corp.example.com")
        );
        assert_eq!(
            address_of(&person(
                1,
                &[("proxyAddresses", text(&["smtp:old@x.example", "SMTP:new@x.example"]))]
            ))
            .as_deref(),
            Some("new@x.example")
        );
        assert_eq!(address_of(&person(1, &[("mail", text(&["not an address"]))])), None);
        assert_eq!(address_of(&person(1, &[])), None);
        assert_eq!(display_of(&person(3, &[])), "mv:3");
        assert_eq!(display_of(&person(3, &[("userPrincipalName", text(&["u@x"]))])), "u@x");
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let a = message_id("syncctl@corp.example.com", &["1", "7", "sales"]);
        assert_eq!(a, message_id("syncctl@corp.example.com", &["1", "7", "sales"]));
        assert!(a.ends_with(".syncctl@corp.example.com"), "{a}");
        assert_ne!(a, message_id("syncctl@corp.example.com", &["1", "7sales"]));
        assert_ne!(a, message_id("syncctl@corp.example.com", &["1", "8", "sales"]));
    }

    #[test]
    fn utc_minutes_matches_known_dates() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minutes(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minutes(1_767_225_599_000), "2025-12-31 23:59 UTC");
        assert_eq!(utc_minutes(-60_000), "1969-12-31 23:59 UTC");
    }

    proptest::proptest! {
        /// A subject never holds a control character, never starts or ends with a space.
        #[test]
        fn subjects_are_one_clean_line(s in "\\PC{0,30}[\\r\\n\\t]{0,3}\\PC{0,30}") {
            let line = one_line(&s);
            proptest::prop_assert!(!line.chars().any(char::is_control));
            proptest::prop_assert!(!line.starts_with(' ') && !line.ends_with(' '));
            proptest::prop_assert!(!line.contains("  "));
        }
    }
}
