//! The notification model as written in the config file (`[[sets]]`, `[[policies]]`,
//! `[[workflows]]`), and its validated form [`Workflows`].
//!
//! ```toml
//! [[sets]]
//! name = "sales"
//! object_type = "person"
//! criteria = 'department == "Sales"'
//!
//! [[policies]]
//! name = "joined-sales"
//! set = "sales"
//! transition = "in"
//! workflow = "welcome-to-sales"
//!
//! [[workflows]]
//! name = "welcome-to-sales"
//! [[workflows.activities]]
//! name = "tell the user and the manager"
//! recipients = ["target", "manager"]
//! subject = "Welcome to Sales, {{ target.displayName }}"
//! text = "Hello {{ target.givenName }}, ..."
//! ```
//!
//! Validation compiles every criterion (CEL) and template (minijinja), checks that every
//! policy names a configured set and workflow, and that fixed recipient addresses parse.

use std::sync::Arc;

use serde::Deserialize;
use syncctl_core::expr::Expr;
use syncctl_store::Transition;

use crate::error::{Result, WorkflowError};

/// `[[sets]]`: a named condition over metaverse objects.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// The set's name (letters, digits, `-`, `_`, `.`; unique).
    pub name: String,
    /// What it is for (shown by `syncctl requests`).
    #[serde(default)]
    pub description: String,
    /// Only metaverse objects of this type (`person`, `group`, `contact`). Default: any.
    pub object_type: Option<String>,
    /// A CEL condition over the object's metaverse attributes; `now` (milliseconds since the
    /// Unix epoch) and `nowFileTime` (Active Directory's 100-ns intervals since 1601, as in
    /// `accountExpires`) make time-based sets.
    pub criteria: String,
}

/// `[[policies]]`: a set transition that runs a workflow (FIM's set-transition MPR).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy's name (unique).
    pub name: String,
    /// The set it watches.
    pub set: String,
    /// `in` (an object enters the set) or `out` (it leaves, including by being deleted).
    pub transition: TransitionConfig,
    /// The workflow it runs.
    pub workflow: String,
    /// A disabled policy makes no request. Default: true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// `transition = "in" | "out"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransitionConfig {
    /// Entering.
    In,
    /// Leaving.
    Out,
}

impl From<TransitionConfig> for Transition {
    fn from(t: TransitionConfig) -> Self {
        match t {
            TransitionConfig::In => Transition::In,
            TransitionConfig::Out => Transition::Out,
        }
    }
}

/// `[[workflows]]`: what a policy runs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// The workflow's name (unique).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its activities, run in order.
    pub activities: Vec<ActivityConfig>,
}

/// `[[workflows.activities]]`: one notification.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActivityConfig {
    /// The activity's name (shown with each message). Default: `notification N`.
    pub name: Option<String>,
    /// The kind of activity: `notification` (the only one so far, and the default).
    #[serde(default = "notification", rename = "type")]
    pub kind: String,
    /// Who gets the mail: `target`, `manager` (the target's), `set:NAME` (every member of a
    /// configured set) or a fixed address. Each address gets one message.
    pub recipients: Vec<String>,
    /// The subject template (minijinja): `{{ target.displayName }}`, `{{ manager.mail }}`, ...
    pub subject: String,
    /// The plain-text body template.
    pub text: String,
    /// The HTML body template (values are HTML-escaped), sent beside the text when present.
    pub html: Option<String>,
}

fn notification() -> String {
    "notification".into()
}

/// Who a notification goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The object that made the transition.
    Target,
    /// Its manager (the metaverse object its `manager` attribute refers to).
    Manager,
    /// Every member of a set (after this transition).
    SetMembers(String),
    /// A fixed address.
    Address(String),
}

impl Recipient {
    /// Parses `target`, `manager`, `set:NAME` or an address (case-insensitive keywords).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("target") {
            return Ok(Self::Target);
        }
        if t.eq_ignore_ascii_case("manager") {
            return Ok(Self::Manager);
        }
        if let Some(set) = t.get(..4).filter(|p| p.eq_ignore_ascii_case("set:")).and_then(|_| t.get(4..)) {
            let set = set.trim();
            if set.is_empty() {
                return Err(format!("`{text}` names no set (set:NAME)"));
            }
            return Ok(Self::SetMembers(set.to_owned()));
        }
        match t.parse::<lettre::Address>() {
            Ok(a) => Ok(Self::Address(a.to_string())),
            Err(e) => {
                Err(format!("`{text}` is not `target`, `manager`, `set:NAME` nor a mail address ({e})"))
            }
        }
    }

    /// The role as stored with each message: `target`, `manager`, `set:NAME`, `address`.
    pub fn role(&self) -> String {
        match self {
            Self::Target => "target".into(),
            Self::Manager => "manager".into(),
            Self::SetMembers(s) => format!("set:{s}"),
            Self::Address(_) => "address".into(),
        }
    }
}

/// A validated set.
#[derive(Clone, Debug)]
pub struct Set {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Object type filter.
    pub object_type: Option<String>,
    /// The compiled criteria.
    pub criteria: Expr,
    /// True when the criteria read the time (`now`, `nowFileTime`).
    pub time_based: bool,
}

impl Set {
    /// What the stored membership was computed with: a change means a new baseline.
    pub fn fingerprint(&self) -> String {
        let text = format!("{}\u{0}{}", self.object_type.as_deref().unwrap_or("*"), self.criteria.source());
        blake3::hash(text.as_bytes()).to_hex()[..32].to_owned()
    }
}

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Its set.
    pub set: String,
    /// In or out.
    pub transition: Transition,
    /// Its workflow.
    pub workflow: String,
}

/// A validated notification activity.
#[derive(Clone, Debug)]
pub struct Activity {
    /// Name.
    pub name: String,
    /// Recipients.
    pub recipients: Vec<Recipient>,
    /// Subject template source.
    pub subject: String,
    /// Text template source.
    pub text: String,
    /// HTML template source.
    pub html: Option<String>,
}

/// A validated workflow.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// Name.
    pub name: String,
    /// Activities.
    pub activities: Vec<Activity>,
}

/// The validated notification model: sets, policies, workflows, and the sender.
#[derive(Clone, Debug)]
pub struct Workflows {
    /// Sets, in config order.
    pub sets: Vec<Set>,
    /// Enabled policies, in config order.
    pub policies: Vec<Policy>,
    /// Workflows, in config order.
    pub workflows: Vec<Workflow>,
    /// The `From` address of every notification.
    pub sender: String,
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(WorkflowError::config(
            format!("{kind} `{name}`"),
            "a name must be non-empty and use only letters, digits, `-`, `_` and `.`",
        ));
    }
    Ok(())
}

impl Workflows {
    /// Validates the configuration. `sender` is `[mail] sender`, required as soon as a
    /// workflow sends mail.
    pub fn compile(
        sets: &[SetConfig],
        policies: &[PolicyConfig],
        workflows: &[WorkflowConfig],
        sender: Option<&str>,
    ) -> Result<Self> {
        let mut out_sets: Vec<Set> = Vec::new();
        for s in sets {
            check_name("set", &s.name)?;
            if out_sets.iter().any(|o| o.name.eq_ignore_ascii_case(&s.name)) {
                return Err(WorkflowError::config(format!("set `{}`", s.name), "another set has this name"));
            }
            let criteria = Expr::compile(&s.criteria)
                .map_err(|e| WorkflowError::config(format!("set `{}` criteria", s.name), e.to_string()))?;
            let time_based = criteria_reads_time(&s.criteria);
            out_sets.push(Set {
                name: s.name.clone(),
                description: s.description.clone(),
                object_type: s.object_type.clone().filter(|t| !t.trim().is_empty()),
                criteria,
                time_based,
            });
        }
        let env = crate::render::environment();
        let mut out_workflows: Vec<Workflow> = Vec::new();
        for w in workflows {
            check_name("workflow", &w.name)?;
            if out_workflows.iter().any(|o| o.name.eq_ignore_ascii_case(&w.name)) {
                return Err(WorkflowError::config(
                    format!("workflow `{}`", w.name),
                    "another workflow has this name",
                ));
            }
            if w.activities.is_empty() {
                return Err(WorkflowError::config(format!("workflow `{}`", w.name), "it has no activity"));
            }
            let mut activities = Vec::new();
            for (i, a) in w.activities.iter().enumerate() {
                let what = format!("workflow `{}` activity {}", w.name, i + 1);
                if a.kind != "notification" {
                    return Err(WorkflowError::config(
                        what,
                        format!("unknown activity type `{}` (known: notification)", a.kind),
                    ));
                }
                if a.recipients.is_empty() {
                    return Err(WorkflowError::config(what, "no recipients"));
                }
                let mut recipients = Vec::new();
                for r in &a.recipients {
                    let r = Recipient::parse(r).map_err(|m| WorkflowError::config(&what, m))?;
                    if let Recipient::SetMembers(set) = &r
                        && !out_sets.iter().any(|s| &s.name == set)
                    {
                        return Err(WorkflowError::config(
                            &what,
                            format!("recipient set `{set}` is not configured"),
                        ));
                    }
                    if !recipients.contains(&r) {
                        recipients.push(r);
                    }
                }
                for (field, source) in
                    [("subject", Some(&a.subject)), ("text", Some(&a.text)), ("html", a.html.as_ref())]
                {
                    if let Some(source) = source {
                        env.template_from_str(source)
                            .map_err(|e| WorkflowError::config(format!("{what} {field}"), e.to_string()))?;
                    }
                }
                activities.push(Activity {
                    name: a.name.clone().unwrap_or_else(|| format!("notification {}", i + 1)),
                    recipients,
                    subject: a.subject.clone(),
                    text: a.text.clone(),
                    html: a.html.clone(),
                });
            }
            out_workflows.push(Workflow { name: w.name.clone(), activities });
        }
        let mut out_policies: Vec<Policy> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for p in policies {
            check_name("policy", &p.name)?;
            if names.iter().any(|n| n.eq_ignore_ascii_case(&p.name)) {
                return Err(WorkflowError::config(
                    format!("policy `{}`", p.name),
                    "another policy has this name",
                ));
            }
            names.push(&p.name);
            if !out_sets.iter().any(|s| s.name == p.set) {
                return Err(WorkflowError::config(
                    format!("policy `{}`", p.name),
                    format!("set `{}` is not configured", p.set),
                ));
            }
            if !out_workflows.iter().any(|w| w.name == p.workflow) {
                return Err(WorkflowError::config(
                    format!("policy `{}`", p.name),
                    format!("workflow `{}` is not configured", p.workflow),
                ));
            }
            if p.enabled {
                out_policies.push(Policy {
                    name: p.name.clone(),
                    set: p.set.clone(),
                    transition: p.transition.into(),
                    workflow: p.workflow.clone(),
                });
            }
        }
        let sender = match sender {
            Some(s) => s
                .parse::<lettre::Address>()
                .map_err(|e| {
                    WorkflowError::config("[mail] sender", format!("`{s}` is not a mail address ({e})"))
                })?
                .to_string(),
            None if !out_workflows.is_empty() => {
                return Err(WorkflowError::config(
                    "[[workflows]]",
                    "notification workflows need [mail] sender (and [mail.smtp] or a directory to deliver to)",
                ));
            }
            None => String::new(),
        };
        Ok(Self { sets: out_sets, policies: out_policies, workflows: out_workflows, sender })
    }

    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The set called `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// The workflow called `name`.
    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name == name)
    }

    /// True when a set's criteria read the time: membership can change without any metaverse
    /// change, so it is evaluated again over every object after each sync.
    pub fn has_time_based_sets(&self) -> bool {
        self.sets.iter().any(|s| s.time_based)
    }

    /// Shared, for the sync hook.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

/// Whether a CEL text mentions the time bindings (as identifiers, not inside strings).
fn criteria_reads_time(text: &str) -> bool {
    let mut in_string: Option<char> = None;
    let mut word = String::new();
    let mut found = false;
    let mut check = |word: &mut String| {
        if word == crate::sets::NOW || word == crate::sets::NOW_FILETIME {
            found = true;
        }
        word.clear();
    };
    for c in text.chars() {
        match in_string {
            Some(q) if c == q => in_string = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => {
                check(&mut word);
                in_string = Some(c);
            }
            None if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
            None => check(&mut word),
        }
    }
    check(&mut word);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        sets: Vec<SetConfig>,
        #[serde(default)]
        policies: Vec<PolicyConfig>,
        #[serde(default)]
        workflows: Vec<WorkflowConfig>,
    }

    const GOOD: &str = r#"
[[sets]]
name = "sales"
object_type = "person"
criteria = 'department == "Sales"'

[[sets]]
name = "expiring"
criteria = 'isPresent(accountExpires) && accountExpires > nowFileTime && accountExpires - nowFileTime < 14 * 864000000000'

[[sets]]
name = "helpdesk"
criteria = '"now" == title'

[[policies]]
name = "joined-sales"
set = "sales"
transition = "in"
workflow = "welcome"

[[policies]]
name = "left-sales"
set = "sales"
transition = "out"
workflow = "welcome"
enabled = false

[[workflows]]
name = "welcome"
[[workflows.activities]]
recipients = ["target", "Manager", "set:helpdesk", "it@corp.example.com", "target"]
subject = "Welcome {{ target.displayName }}"
text = "Hello"
html = "<p>Hello {{ target.givenName }}</p>"
"#;

    fn compile(text: &str) -> Result<Workflows> {
        let f: File = toml::from_str(text).map_err(|e| WorkflowError::config("toml", e.to_string()))?;
        Workflows::compile(&f.sets, &f.policies, &f.workflows, Some("syncctl@corp.example.com"))
    }

    #[test]
    fn a_good_configuration_compiles() {
        let w = compile(GOOD).unwrap();
        assert_eq!(w.sets.len(), 3);
        assert_eq!(w.policies.len(), 1, "the disabled policy makes no requests");
        assert_eq!(w.policies[0].transition, Transition::In);
        let a = &w.workflows[0].activities[0];
        assert_eq!(a.name, "notification 1");
        assert_eq!(
            a.recipients,
            vec![
                Recipient::Target,
                Recipient::Manager,
                Recipient::SetMembers("helpdesk".into()),
                Recipient::Address("it@corp.example.com".into())
            ],
            "duplicates dropped, keywords case-insensitive"
        );
        assert_eq!(
            w.sets.iter().map(|s| s.time_based).collect::<Vec<_>>(),
            [false, true, false],
            "`now` inside a string is not the clock"
        );
        assert!(w.has_time_based_sets());
        assert_ne!(w.sets[0].fingerprint(), w.sets[2].fingerprint());
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry() {
        let cases = [
            (GOOD.replace("criteria = 'department", "critera = 'department"), "unknown field `critera`"),
            (GOOD.replace("department == \"Sales\"", "department == "), "set `sales` criteria"),
            (
                GOOD.replace("workflow = \"welcome\"\n\n[[policies]]", "workflow = \"nope\"\n\n[[policies]]"),
                "workflow `nope` is not configured",
            ),
            (
                GOOD.replace("set = \"sales\"\ntransition = \"in\"", "set = \"sale\"\ntransition = \"in\""),
                "set `sale` is not configured",
            ),
            (GOOD.replace("transition = \"in\"", "transition = \"into\""), "unknown variant `into`"),
            (GOOD.replace("\"set:helpdesk\"", "\"set:nobody\""), "recipient set `nobody` is not configured"),
            (
                GOOD.replace("\"it@corp.example.com\"", "\"it at corp\""),
                "not `target`, `manager`, `set:NAME` nor a mail address",
            ),
            (
                GOOD.replace("Welcome {{ target.displayName }}", "Welcome {{ target.displayName "),
                "activity 1 subject",
            ),
            (GOOD.replace("<p>Hello {{ target.givenName }}</p>", "{% if %}"), "activity 1 html"),
            (GOOD.replace("name = \"helpdesk\"", "name = \"Sales\""), "another set has this name"),
            (GOOD.replace("name = \"helpdesk\"", "name = \"help desk\""), "set `help desk`"),
        ];
        for (text, want) in cases {
            let e = compile(&text).unwrap_err().to_string();
            assert!(e.contains(want), "want `{want}` in: {e}");
        }
        let f: File = toml::from_str(GOOD).unwrap();
        let e = Workflows::compile(&f.sets, &f.policies, &f.workflows, None).unwrap_err().to_string();
        assert!(e.contains("[mail] sender"), "{e}");
        let e = Workflows::compile(&f.sets, &f.policies, &f.workflows, Some("not an address"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[mail] sender"), "{e}");
    }

    #[test]
    fn recipients_parse() {
        assert_eq!(Recipient::parse(" TARGET ").unwrap(), Recipient::Target);
        assert_eq!(Recipient::parse("Set: sales").unwrap(), Recipient::SetMembers("sales".into()));
        assert!(Recipient::parse("set:").is_err());
        assert_eq!(Recipient::parse("ops@corp.example.com").unwrap().role(), "address");
        assert!(Recipient::parse("").is_err());
    }

    proptest::proptest! {
        /// Any text parses to a recipient or an error, never a panic; a valid local part and
        /// domain always parse to that address, and keywords never to an address.
        #[test]
        fn recipient_parsing_is_total(text in "\\PC{0,40}") {
            let _ = Recipient::parse(&text);
        }

        #[test]
        fn addresses_round_trip(local in "[a-z][a-z0-9.]{0,15}[a-z0-9]", domain in "[a-z][a-z0-9]{0,10}\\.(com|org|example)") {
            let text = format!("{local}@{domain}");
            let parsed = Recipient::parse(&text);
            if local.contains("..") {
                proptest::prop_assert!(parsed.is_err());
            } else {
                proptest::prop_assert_eq!(parsed.unwrap(), Recipient::Address(text));
            }
        }

        #[test]
        fn set_recipients_keep_their_name(name in "[A-Za-z0-9_.-]{1,20}") {
            proptest::prop_assert_eq!(Recipient::parse(&format!("set:{name}")).unwrap(), Recipient::SetMembers(name));
        }
    }
}
