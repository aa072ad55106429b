//! Sync rules: the data model of inbound (connector space -> metaverse) and outbound
//! (metaverse -> connector space) rules, their loading from TOML (`schema/sync-rules.toml`,
//! overridable by the user's config), and the evaluation of one rule's parts against one object:
//! [`Scope::matches`], [`JoinGroup::source_values`] / [`JoinGroup::candidate_allowed`] and
//! [`Flow::evaluate`].
//!
//! It owns what a rule *says*, not what the engine *does* with it: it must not look up
//! candidates, pick join partners, merge flows by precedence, or touch any store. No I/O: the
//! default rules are embedded with `include_str!` and user overrides arrive as text.
//!
//! The semantics follow Entra Connect Sync (see DESIGN.md section 5 and
//! `reference/sync-facts.md`): scoping groups are ORed and their clauses ANDed; join groups are
//! ordered and the engine takes the first one that finds exactly one candidate; flows are
//! direct, constant or expression, optionally apply-once, and an expression may give NULL,
//! AuthoritativeNull or IgnoreThisFlow; the lowest precedence number wins per attribute.

mod raw;
mod scope;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use scope::{Scope, ScopeClause, ScopeGroup, ScopeOperator, ScopeValue};

use crate::attribute::AttrValues;
use crate::expr::{Expr, ExprError, ExprValue, MultiValued};

/// The default rules, documented in the file itself.
pub const DEFAULT_RULES_TOML: &str = include_str!("../../../schema/sync-rules.toml");
/// The origin named in errors about the default rules.
pub const DEFAULT_RULES_ORIGIN: &str = "schema/sync-rules.toml";

/// A read-only view of one object for rule evaluation: a CS object (inbound) or an MV object
/// (outbound).
pub trait ObjectView {
    /// `user` / `group` / `contact` (CS) or `person` / `group` / `contact` (MV).
    fn object_type(&self) -> &str;
    /// The CS DN; `None` for MV objects.
    fn dn(&self) -> Option<&str>;
    /// The values of one attribute, the name compared case-insensitively.
    fn attribute(&self, name: &str) -> Option<&AttrValues>;
    /// The base64 ImmutableID of a CS object that has one.
    fn immutable_id(&self) -> Option<String> {
        None
    }
    /// Normalized (lowercase) DNs of the groups that list this object as a member, for
    /// `ISMEMBEROF`.
    fn member_of(&self) -> &[String] {
        &[]
    }
}

/// Why a rule file was refused: names the origin (file), the rule and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", context(.rule.as_deref(), .field.as_deref()))]
pub struct RuleError {
    /// The file (or other origin) the rules came from.
    pub origin: String,
    /// The rule's name, when the error concerns one rule.
    pub rule: Option<String>,
    /// The field of the rule (`flow `displayName``, `scope group 1 clause 2`...).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn context(rule: Option<&str>, field: Option<&str>) -> String {
    match (rule, field) {
        (Some(r), Some(f)) => format!(": rule `{r}`, {f}"),
        (Some(r), None) => format!(": rule `{r}`"),
        (None, Some(f)) => format!(": {f}"),
        (None, None) => String::new(),
    }
}

/// Which connectors a rule applies to: those whose type is in `kinds` or whose name is in
/// `names` (TOML: `connector_kinds = [...]`, `connectors = [...]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorSelector {
    /// Connector types (`ldap-ad`, `ldif`, `ldap-openldap`, `graph`, `cloud-test`).
    pub kinds: Vec<String>,
    /// Connector names from the user's config.
    pub names: Vec<String>,
}

impl ConnectorSelector {
    /// Whether a connector of this kind and name is selected (both compared
    /// case-insensitively).
    pub fn matches(&self, kind: &str, name: &str) -> bool {
        self.kinds.iter().any(|k| k.eq_ignore_ascii_case(kind))
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
    /// Whether some connector could be selected by both.
    pub fn overlaps(&self, other: &ConnectorSelector) -> bool {
        self.kinds.iter().any(|k| other.kinds.iter().any(|o| o.eq_ignore_ascii_case(k)))
            || self.names.iter().any(|n| other.names.iter().any(|o| o.eq_ignore_ascii_case(n)))
    }
}

/// What a rule does when no join is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// Join only: an object without a partner stays unlinked.
    Join,
    /// Inbound: project a new MV object when no join; outbound: create the target object.
    Provision,
}

/// What happens to a target object this engine provisioned when its MV object goes away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Deprovision {
    /// Delete the target object.
    #[default]
    Delete,
    /// Only break the link; the target object stays.
    Disconnect,
}

/// An inbound rule: CS object -> MV object.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundRule {
    /// Unique name (overrides replace by name).
    pub name: String,
    /// What the rule is for.
    pub description: String,
    /// The connectors it applies to.
    pub connectors: ConnectorSelector,
    /// The CS object type it reads (`user`, `group`, `contact`, `inetOrgPerson`...).
    pub cs_object_type: String,
    /// The MV object type it joins or projects (`person`, `group`, `contact`).
    pub mv_object_type: String,
    /// Join only, or project when there is no join.
    pub link_type: LinkType,
    /// Lower wins, per attribute.
    pub precedence: u32,
    /// Which CS objects the rule applies to.
    pub scope: Scope,
    /// Ordered join groups, evaluated on the CS object; candidates are MV objects.
    pub join: Vec<JoinGroup>,
    /// Attribute flows into the MV object.
    pub flows: Vec<Flow>,
}

/// An outbound rule: MV object -> CS object.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundRule {
    /// Unique name (overrides replace by name).
    pub name: String,
    /// What the rule is for.
    pub description: String,
    /// The target connectors.
    pub connectors: ConnectorSelector,
    /// The MV object type it reads.
    pub mv_object_type: String,
    /// The CS object type it writes.
    pub cs_object_type: String,
    /// Join only, or create the target object when there is no join.
    pub link_type: LinkType,
    /// Lower wins, per attribute.
    pub precedence: u32,
    /// Which MV objects the rule applies to.
    pub scope: Scope,
    /// Ordered join groups, evaluated on the MV object; candidates are CS objects of the target.
    pub join: Vec<JoinGroup>,
    /// Attribute flows into the target object.
    pub flows: Vec<Flow>,
    /// What happens to a provisioned target object when the MV object goes away.
    pub deprovision: Deprovision,
}

/// A join group: ALL clauses must match; `condition` (CEL) is evaluated on each candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinGroup {
    /// Clauses, ANDed.
    pub clauses: Vec<JoinClause>,
    /// A candidate is allowed only when this is true (e.g. soft match only on a cloud object
    /// without onPremisesImmutableId and without adminRoles).
    pub condition: Option<Expr>,
}

/// One join clause: candidates are objects whose `target_attribute` has a value equal to one
/// the `source` expression gives on the object seeking a partner.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinClause {
    /// Evaluated on the object seeking a partner.
    pub source: Expr,
    /// The candidate's attribute.
    pub target_attribute: String,
    /// Compare lower-cased.
    pub case_insensitive: bool,
}

/// The values one join clause looks up: (target attribute, values as text, case-insensitive).
pub type JoinLookup = (String, Vec<String>, bool);

impl JoinGroup {
    /// The lookups of every clause, or `None` when a clause yields nothing (null, empty,
    /// IgnoreThisFlow): the group cannot be used for this object. Values are text (integers in
    /// decimal, booleans `true`/`false`, bytes base64), lower-cased when case-insensitive.
    pub fn source_values(&self, object: &dyn ObjectView) -> Result<Option<Vec<JoinLookup>>, ExprError> {
        let mut out = Vec::with_capacity(self.clauses.len());
        for clause in &self.clauses {
            let value = clause.source.evaluate(object)?;
            let mut texts = Vec::new();
            collect_texts(&clause.source, object, &value, &mut texts)?;
            if clause.case_insensitive {
                for t in &mut texts {
                    *t = t.to_lowercase();
                }
            }
            texts.sort();
            texts.dedup();
            if texts.is_empty() {
                return Ok(None);
            }
            out.push((clause.target_attribute.clone(), texts, clause.case_insensitive));
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Whether `candidate` may be joined through this group.
    pub fn candidate_allowed(&self, candidate: &dyn ObjectView) -> Result<bool, ExprError> {
        match &self.condition {
            None => Ok(true),
            Some(c) => c.evaluate_bool(candidate),
        }
    }
}

fn collect_texts(
    expr: &Expr,
    object: &dyn ObjectView,
    value: &ExprValue,
    out: &mut Vec<String>,
) -> Result<(), ExprError> {
    use base64::Engine as _;
    match value {
        ExprValue::Null | ExprValue::AuthoritativeNull | ExprValue::IgnoreThisFlow => {}
        ExprValue::String(s) if s.is_empty() => {}
        ExprValue::String(s) => out.push(s.clone()),
        ExprValue::Int(i) => out.push(i.to_string()),
        ExprValue::UInt(u) => out.push(u.to_string()),
        ExprValue::Bool(b) => out.push(b.to_string()),
        ExprValue::Bytes(b) if b.is_empty() => {}
        ExprValue::Bytes(b) => out.push(base64::engine::general_purpose::STANDARD.encode(b)),
        ExprValue::List(items) => {
            for item in items {
                if matches!(item, ExprValue::List(_)) {
                    return Err(expr.type_error(object, item, "a scalar or a list of scalars"));
                }
                collect_texts(expr, object, item, out)?;
            }
        }
        other @ (ExprValue::Double(_) | ExprValue::Map(_)) => {
            return Err(expr.type_error(object, other, "a scalar or a list of scalars"));
        }
    }
    Ok(())
}

/// One attribute flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// The attribute written.
    pub target: String,
    /// Where the value comes from.
    pub kind: FlowKind,
    /// Set only when the target object is created (Entra's "apply once").
    pub apply_once: bool,
}

/// Where a flow's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowKind {
    /// The source attribute's values, unchanged (types kept: references stay references).
    Direct {
        /// The source attribute.
        source: String,
    },
    /// Always these values.
    Constant {
        /// The values.
        value: AttrValues,
    },
    /// A CEL expression's result.
    Expression {
        /// The expression.
        expr: Expr,
    },
}

/// What a flow contributes to its target attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowValue {
    /// These values.
    Values(AttrValues),
    /// Nothing: a lower-precedence rule may set the attribute.
    Null,
    /// The attribute is cleared and lower-precedence rules are not consulted.
    AuthoritativeNull,
    /// This flow does nothing (IgnoreThisFlow).
    Ignore,
}

impl Flow {
    /// The flow's value for `object`.
    pub fn evaluate(&self, object: &dyn ObjectView) -> Result<FlowValue, ExprError> {
        match &self.kind {
            FlowKind::Direct { source } => {
                if source.eq_ignore_ascii_case("dn") && object.attribute(source).is_none() {
                    return Ok(object.dn().map_or(FlowValue::Null, |dn| {
                        FlowValue::Values(AttrValues::String(vec![dn.to_owned()]))
                    }));
                }
                Ok(match object.attribute(source) {
                    Some(v) if !v.is_empty() => FlowValue::Values(v.clone()),
                    _ => FlowValue::Null,
                })
            }
            FlowKind::Constant { value } => {
                Ok(if value.is_empty() { FlowValue::Null } else { FlowValue::Values(value.clone()) })
            }
            FlowKind::Expression { expr } => {
                let v = expr.evaluate(object)?;
                to_flow_value(expr, object, v)
            }
        }
    }
}

/// Converts an expression result into a flow value (see the module docs of [`crate::expr`]).
fn to_flow_value(expr: &Expr, object: &dyn ObjectView, v: ExprValue) -> Result<FlowValue, ExprError> {
    const WANT: &str = "null, a string, int, bool, bytes or a list of one of them";
    Ok(match v {
        ExprValue::Null => FlowValue::Null,
        ExprValue::AuthoritativeNull => FlowValue::AuthoritativeNull,
        ExprValue::IgnoreThisFlow => FlowValue::Ignore,
        ExprValue::String(s) if s.is_empty() => FlowValue::Null,
        ExprValue::String(s) => FlowValue::Values(AttrValues::String(vec![s])),
        ExprValue::Int(i) => FlowValue::Values(AttrValues::Integer(vec![i])),
        ExprValue::UInt(u) => match i64::try_from(u) {
            Ok(i) => FlowValue::Values(AttrValues::Integer(vec![i])),
            Err(_) => return Err(expr.type_error(object, &ExprValue::UInt(u), "an integer below 2^63")),
        },
        ExprValue::Bool(b) => FlowValue::Values(AttrValues::Boolean(vec![b])),
        ExprValue::Bytes(b) if b.is_empty() => FlowValue::Null,
        ExprValue::Bytes(b) => FlowValue::Values(AttrValues::Binary(vec![b])),
        ExprValue::List(items) => {
            let items: Vec<ExprValue> = items
                .into_iter()
                .filter(|i| !matches!(i, ExprValue::Null) && *i != ExprValue::String(String::new()))
                .collect();
            let Some(first) = items.first() else {
                return Ok(FlowValue::Null);
            };
            let mut acc = match first {
                ExprValue::String(_) => AttrValues::String(Vec::new()),
                ExprValue::Int(_) => AttrValues::Integer(Vec::new()),
                ExprValue::Bool(_) => AttrValues::Boolean(Vec::new()),
                ExprValue::Bytes(_) => AttrValues::Binary(Vec::new()),
                other => return Err(expr.type_error(object, other, WANT)),
            };
            for item in items {
                match (&mut acc, item) {
                    (AttrValues::String(v), ExprValue::String(s)) => v.push(s),
                    (AttrValues::Integer(v), ExprValue::Int(i)) => v.push(i),
                    (AttrValues::Boolean(v), ExprValue::Bool(b)) => v.push(b),
                    (AttrValues::Binary(v), ExprValue::Bytes(b)) => v.push(b),
                    (_, other) => {
                        return Err(expr.type_error(object, &other, "a list whose values all have one type"));
                    }
                }
            }
            FlowValue::Values(acc)
        }
        other @ (ExprValue::Double(_) | ExprValue::Map(_)) => {
            return Err(expr.type_error(object, &other, WANT));
        }
    })
}

/// The effective rule set: defaults, possibly with the user's overrides applied.
#[derive(Clone, Debug)]
pub struct RuleSet {
    /// Inbound rules, sorted by precedence then name.
    pub inbound: Vec<InboundRule>,
    /// Outbound rules, sorted by precedence then name.
    pub outbound: Vec<OutboundRule>,
    /// Names of rules this file disables (`enabled = false`), applied by
    /// [`RuleSet::with_overrides`].
    disabled: Vec<String>,
    /// Attributes bound as lists in expressions.
    multi_valued: Arc<MultiValued>,
    fingerprint: String,
}

impl RuleSet {
    /// The embedded default rules (`schema/sync-rules.toml`).
    pub fn defaults() -> Result<RuleSet, RuleError> {
        Self::from_toml(DEFAULT_RULES_TOML, DEFAULT_RULES_ORIGIN)
    }

    /// Parses, validates and compiles every expression of a rule file. `origin` names the file in
    /// errors. Attributes listed under `[multi_valued]` are added to the defaults' list.
    pub fn from_toml(text: &str, origin: &str) -> Result<RuleSet, RuleError> {
        let parsed = raw::parse(text, origin)?;
        let mut set = RuleSet {
            inbound: parsed.inbound,
            outbound: parsed.outbound,
            disabled: parsed.disabled,
            multi_valued: parsed.multi_valued,
            fingerprint: String::new(),
        };
        set.finish();
        Ok(set)
    }

    /// Applies `overrides`: a rule with the same name replaces the current one (whatever its
    /// direction), a rule disabled there (`enabled = false`) is removed, new names are added.
    ///
    /// The overrides' `[multi_valued]` names join this set's list, but expressions keep the
    /// list they were compiled with: a rule of the defaults that must see a new multi-valued
    /// attribute as a list is overridden along with it.
    pub fn with_overrides(mut self, overrides: RuleSet) -> RuleSet {
        let replaced: Vec<&str> = overrides
            .inbound
            .iter()
            .map(|r| r.name.as_str())
            .chain(overrides.outbound.iter().map(|r| r.name.as_str()))
            .chain(overrides.disabled.iter().map(String::as_str))
            .collect();
        self.inbound.retain(|r| !replaced.contains(&r.name.as_str()));
        self.outbound.retain(|r| !replaced.contains(&r.name.as_str()));
        self.inbound.extend(overrides.inbound);
        self.outbound.extend(overrides.outbound);
        let mut multi = (*self.multi_valued).clone();
        multi.extend(&overrides.multi_valued);
        self.multi_valued = Arc::new(multi);
        for name in overrides.disabled {
            if !self.disabled.contains(&name) {
                self.disabled.push(name);
            }
        }
        self.finish();
        self
    }

    /// Sorts the rules and computes the fingerprint.
    fn finish(&mut self) {
        self.inbound.sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
        self.outbound.sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
        self.disabled.sort();
        // The Debug form is canonical here: every collection in the model is a Vec in a fixed
        // order (rules sorted above, clauses and flows in file order), expressions print their
        // source text, and no map is iterated. Descriptions change nothing a sync does, so they
        // are left out.
        let inbound: Vec<InboundRule> =
            self.inbound.iter().map(|r| InboundRule { description: String::new(), ..r.clone() }).collect();
        let outbound: Vec<OutboundRule> =
            self.outbound.iter().map(|r| OutboundRule { description: String::new(), ..r.clone() }).collect();
        let canonical =
            format!("{:?}\n{:?}\n{:?}", self.multi_valued.names().collect::<Vec<_>>(), inbound, outbound);
        self.fingerprint = blake3::hash(canonical.as_bytes()).to_hex().to_string();
    }

    /// A stable hex hash of the effective rules: a change forces a full sync.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The attributes bound as lists in this set's expressions.
    pub fn multi_valued(&self) -> &MultiValued {
        &self.multi_valued
    }

    /// The inbound rules for one connector and CS object type, by precedence then name.
    pub fn inbound_for(
        &self,
        connector_kind: &str,
        connector_name: &str,
        cs_object_type: &str,
    ) -> std::vec::IntoIter<&InboundRule> {
        self.inbound
            .iter()
            .filter(|r| {
                r.connectors.matches(connector_kind, connector_name)
                    && r.cs_object_type.eq_ignore_ascii_case(cs_object_type)
            })
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The outbound rules for one target connector and MV object type, by precedence then name.
    pub fn outbound_for(
        &self,
        connector_kind: &str,
        connector_name: &str,
        mv_object_type: &str,
    ) -> std::vec::IntoIter<&OutboundRule> {
        self.outbound
            .iter()
            .filter(|r| {
                r.connectors.matches(connector_kind, connector_name)
                    && r.mv_object_type.eq_ignore_ascii_case(mv_object_type)
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// The `[multi_valued]` list of the embedded defaults (empty if the file does not parse, which
/// the tests rule out).
pub(crate) fn embedded_multi_valued() -> MultiValued {
    raw::multi_valued_only(DEFAULT_RULES_TOML)
}
