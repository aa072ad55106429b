//! The TOML form of a rule file, and its validation into the model of [`crate::rules`].
//!
//! It owns the file format (field names, which fields go together) and every load-time check:
//! unknown keys, unknown operators, empty or duplicate names, operands of the wrong shape, and
//! expressions that do not compile. Every error names the origin, the rule and the field.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use super::scope::{Operand, Scope, ScopeClause, ScopeGroup, ScopeOperator, ScopeValue};
use super::{
    ConnectorSelector, Deprovision, Flow, FlowKind, InboundRule, JoinClause, JoinGroup, LinkType,
    OutboundRule, RuleError,
};
use crate::attribute::AttrValues;
use crate::expr::{Expr, MultiValued};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    multi_valued: Option<RawMultiValued>,
    #[serde(default)]
    inbound: Vec<toml::Table>,
    #[serde(default)]
    outbound: Vec<toml::Table>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMultiValued {
    #[serde(default)]
    attributes: Vec<String>,
}

/// The fields both directions share.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    connector_kinds: Vec<String>,
    #[serde(default)]
    connectors: Vec<String>,
    #[serde(default)]
    cs_object_type: String,
    #[serde(default)]
    mv_object_type: String,
    #[serde(default)]
    link_type: Option<String>,
    #[serde(default)]
    precedence: Option<u32>,
    #[serde(default)]
    scope: RawScope,
    #[serde(default)]
    join: Vec<RawJoinGroup>,
    #[serde(default)]
    flows: Vec<RawFlow>,
    /// Outbound only.
    #[serde(default)]
    deprovision: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    groups: Vec<RawScopeGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopeGroup {
    clauses: Vec<RawScopeClause>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScopeClause {
    attribute: String,
    operator: String,
    #[serde(default)]
    value: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoinGroup {
    clauses: Vec<RawJoinClause>,
    #[serde(default)]
    condition: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoinClause {
    source: String,
    target: String,
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    target: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    constant: Option<toml::Value>,
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    apply_once: bool,
}

/// A validated file.
pub(super) struct Parsed {
    pub inbound: Vec<InboundRule>,
    pub outbound: Vec<OutboundRule>,
    pub disabled: Vec<String>,
    pub multi_valued: Arc<MultiValued>,
}

/// Builds errors for one origin / rule.
struct Ctx<'a> {
    origin: &'a str,
    rule: Option<&'a str>,
}

impl Ctx<'_> {
    fn err(&self, field: Option<String>, message: impl Into<String>) -> RuleError {
        RuleError {
            origin: self.origin.to_owned(),
            rule: self.rule.map(str::to_owned),
            field,
            message: message.into(),
        }
    }
    fn field(&self, field: impl Into<String>, message: impl Into<String>) -> RuleError {
        self.err(Some(field.into()), message)
    }
    fn expr(
        &self,
        field: impl Into<String>,
        text: &str,
        multi: &Arc<MultiValued>,
    ) -> Result<Expr, RuleError> {
        Expr::compile_with(text, Arc::clone(multi)).map_err(|e| self.field(field, e.to_string()))
    }
}

/// Only the `[multi_valued]` list (empty when the text does not parse).
pub(super) fn multi_valued_only(text: &str) -> MultiValued {
    toml::from_str::<RawFile>(text)
        .ok()
        .and_then(|f| f.multi_valued)
        .map(|m| MultiValued::new(m.attributes))
        .unwrap_or_default()
}

/// Parses and validates a whole file.
pub(super) fn parse(text: &str, origin: &str) -> Result<Parsed, RuleError> {
    let file_ctx = Ctx { origin, rule: None };
    let file: RawFile = toml::from_str(text).map_err(|e| file_ctx.err(None, e.to_string().trim_end()))?;
    let mut multi = (*crate::expr::default_multi_valued()).clone();
    if let Some(m) = &file.multi_valued {
        multi.extend(&MultiValued::new(&m.attributes));
    }
    let multi = Arc::new(multi);

    let mut names = BTreeSet::new();
    let mut disabled = Vec::new();
    let mut inbound = Vec::new();
    let mut outbound = Vec::new();
    for (direction, tables) in [(Direction::Inbound, file.inbound), (Direction::Outbound, file.outbound)] {
        for (index, table) in tables.into_iter().enumerate() {
            let label = table
                .get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{} #{}", direction.key(), index + 1));
            let ctx = Ctx { origin, rule: Some(&label) };
            let raw: RawRule = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ctx.err(None, e.to_string().trim_end()))?;
            if raw.name.trim().is_empty() {
                return Err(ctx.field("name", "the name is empty"));
            }
            if !names.insert(raw.name.clone()) {
                return Err(ctx.field("name", "another rule has the same name"));
            }
            if !raw.enabled {
                disabled.push(raw.name);
                continue;
            }
            match direction {
                Direction::Inbound => inbound.push(inbound_rule(raw, &ctx, &multi)?),
                Direction::Outbound => outbound.push(outbound_rule(raw, &ctx, &multi)?),
            }
        }
    }
    check_precedence(origin, &inbound, &outbound)?;
    Ok(Parsed { inbound, outbound, disabled, multi_valued: multi })
}

#[derive(Clone, Copy)]
enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn key(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

struct Common {
    connectors: ConnectorSelector,
    link_type: LinkType,
    precedence: u32,
    scope: Scope,
    join: Vec<JoinGroup>,
    flows: Vec<Flow>,
}

fn common(raw: &RawRule, ctx: &Ctx<'_>, multi: &Arc<MultiValued>) -> Result<Common, RuleError> {
    if raw.connector_kinds.is_empty() && raw.connectors.is_empty() {
        return Err(ctx.field(
            "connector_kinds",
            "the rule selects no connector: set `connector_kinds` or `connectors`",
        ));
    }
    if raw.cs_object_type.trim().is_empty() {
        return Err(ctx.field("cs_object_type", "missing or empty"));
    }
    if raw.mv_object_type.trim().is_empty() {
        return Err(ctx.field("mv_object_type", "missing or empty"));
    }
    let link_type = match raw.link_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("join") => LinkType::Join,
        Some("provision") => LinkType::Provision,
        Some(other) => {
            return Err(ctx
                .field("link_type", format!("unknown link type `{other}`: expected `join` or `provision`")));
        }
    };
    let precedence = raw.precedence.ok_or_else(|| ctx.field("precedence", "missing"))?;
    Ok(Common {
        connectors: ConnectorSelector { kinds: raw.connector_kinds.clone(), names: raw.connectors.clone() },
        link_type,
        precedence,
        scope: scope(&raw.scope, ctx, multi)?,
        join: join(&raw.join, ctx, multi)?,
        flows: flows(&raw.flows, ctx, multi)?,
    })
}

fn inbound_rule(raw: RawRule, ctx: &Ctx<'_>, multi: &Arc<MultiValued>) -> Result<InboundRule, RuleError> {
    if raw.deprovision.is_some() {
        return Err(ctx.field("deprovision", "only outbound rules deprovision"));
    }
    let c = common(&raw, ctx, multi)?;
    Ok(InboundRule {
        name: raw.name,
        description: raw.description,
        connectors: c.connectors,
        cs_object_type: raw.cs_object_type,
        mv_object_type: raw.mv_object_type,
        link_type: c.link_type,
        precedence: c.precedence,
        scope: c.scope,
        join: c.join,
        flows: c.flows,
    })
}

fn outbound_rule(raw: RawRule, ctx: &Ctx<'_>, multi: &Arc<MultiValued>) -> Result<OutboundRule, RuleError> {
    let c = common(&raw, ctx, multi)?;
    let deprovision = match raw.deprovision.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("delete") => Deprovision::Delete,
        Some("disconnect") => Deprovision::Disconnect,
        Some(other) => {
            return Err(
                ctx.field("deprovision", format!("unknown `{other}`: expected `delete` or `disconnect`"))
            );
        }
    };
    Ok(OutboundRule {
        name: raw.name,
        description: raw.description,
        connectors: c.connectors,
        mv_object_type: raw.mv_object_type,
        cs_object_type: raw.cs_object_type,
        link_type: c.link_type,
        precedence: c.precedence,
        scope: c.scope,
        join: c.join,
        flows: c.flows,
        deprovision,
    })
}

fn scope(raw: &RawScope, ctx: &Ctx<'_>, multi: &Arc<MultiValued>) -> Result<Scope, RuleError> {
    let expression = match &raw.expression {
        Some(text) => Some(ctx.expr("scope expression", text, multi)?),
        None => None,
    };
    let mut groups = Vec::with_capacity(raw.groups.len());
    for (g, group) in raw.groups.iter().enumerate() {
        if group.clauses.is_empty() {
            return Err(
                ctx.field(format!("scope group {}", g + 1), "a scoping group needs at least one clause")
            );
        }
        let mut clauses = Vec::with_capacity(group.clauses.len());
        for (c, clause) in group.clauses.iter().enumerate() {
            let field = format!("scope group {} clause {} (`{}`)", g + 1, c + 1, clause.attribute);
            clauses.push(scope_clause(clause, ctx, &field)?);
        }
        groups.push(ScopeGroup { clauses });
    }
    Ok(Scope { groups, expression })
}

fn scope_clause(raw: &RawScopeClause, ctx: &Ctx<'_>, field: &str) -> Result<ScopeClause, RuleError> {
    if raw.attribute.trim().is_empty() {
        return Err(ctx.field(field, "the attribute is empty"));
    }
    let operator = ScopeOperator::parse(&raw.operator).ok_or_else(|| {
        let known: Vec<&str> = ScopeOperator::ALL.iter().map(|(_, n)| *n).collect();
        ctx.field(field, format!("unknown operator `{}`: expected one of {}", raw.operator, known.join(", ")))
    })?;
    let shape_err = |want: &str| ctx.field(field, format!("`{}` takes {want}", operator.name()));
    let value = match (operator.operand(), &raw.value) {
        (Operand::None, None) => ScopeValue::None,
        (Operand::None, Some(_)) => return Err(shape_err("no value")),
        (_, None) => return Err(shape_err("a `value`")),
        (Operand::Scalar, Some(v)) => {
            scalar(v).ok_or_else(|| shape_err("a string, integer or boolean value"))?
        }
        (Operand::Integer, Some(v)) => match v {
            toml::Value::Integer(i) => ScopeValue::Integer(*i),
            _ => return Err(shape_err("an integer mask")),
        },
        (Operand::Dn, Some(v)) => match v {
            toml::Value::String(s) if crate::dn::Dn::parse(s).is_ok() => ScopeValue::Text(s.clone()),
            _ => return Err(shape_err("a group DN")),
        },
        (Operand::List, Some(v)) => match v {
            toml::Value::Array(items) => {
                let list: Option<Vec<ScopeValue>> = items.iter().map(scalar).collect();
                ScopeValue::List(list.ok_or_else(|| shape_err("a list of strings, integers or booleans"))?)
            }
            _ => return Err(shape_err("a list")),
        },
    };
    Ok(ScopeClause { attribute: raw.attribute.clone(), operator, value })
}

fn scalar(v: &toml::Value) -> Option<ScopeValue> {
    match v {
        toml::Value::String(s) => Some(ScopeValue::Text(s.clone())),
        toml::Value::Integer(i) => Some(ScopeValue::Integer(*i)),
        toml::Value::Boolean(b) => Some(ScopeValue::Boolean(*b)),
        _ => None,
    }
}

fn join(raw: &[RawJoinGroup], ctx: &Ctx<'_>, multi: &Arc<MultiValued>) -> Result<Vec<JoinGroup>, RuleError> {
    let mut groups = Vec::with_capacity(raw.len());
    for (g, group) in raw.iter().enumerate() {
        if group.clauses.is_empty() {
            return Err(ctx.field(format!("join group {}", g + 1), "a join group needs at least one clause"));
        }
        let mut clauses = Vec::with_capacity(group.clauses.len());
        for (c, clause) in group.clauses.iter().enumerate() {
            let field = format!("join group {} clause {} (`{}`)", g + 1, c + 1, clause.target);
            if clause.target.trim().is_empty() {
                return Err(ctx.field(field, "the target attribute is empty"));
            }
            clauses.push(JoinClause {
                source: ctx.expr(field, &clause.source, multi)?,
                target_attribute: clause.target.clone(),
                case_insensitive: clause.case_insensitive,
            });
        }
        let condition = match &group.condition {
            Some(text) => Some(ctx.expr(format!("join group {} condition", g + 1), text, multi)?),
            None => None,
        };
        groups.push(JoinGroup { clauses, condition });
    }
    Ok(groups)
}

fn flows(raw: &[RawFlow], ctx: &Ctx<'_>, multi: &Arc<MultiValued>) -> Result<Vec<Flow>, RuleError> {
    let mut out: Vec<Flow> = Vec::with_capacity(raw.len());
    for flow in raw {
        let field = format!("flow `{}`", flow.target);
        if flow.target.trim().is_empty() {
            return Err(ctx.field(field, "the target attribute is empty"));
        }
        if out.iter().any(|f| f.target.eq_ignore_ascii_case(&flow.target)) {
            return Err(ctx.field(field, "another flow of this rule has the same target"));
        }
        let kind = match (&flow.source, &flow.constant, &flow.expression) {
            (Some(source), None, None) if !source.trim().is_empty() => {
                FlowKind::Direct { source: source.clone() }
            }
            (Some(_), None, None) => return Err(ctx.field(field, "the source attribute is empty")),
            (None, Some(value), None) => FlowKind::Constant {
                value: constant(value).ok_or_else(|| {
                    ctx.field(
                        field.clone(),
                        "a constant is a string, integer, boolean or a list of one of them",
                    )
                })?,
            },
            (None, None, Some(text)) => FlowKind::Expression { expr: ctx.expr(field, text, multi)? },
            _ => {
                return Err(ctx.field(field, "a flow has exactly one of `source`, `constant`, `expression`"));
            }
        };
        out.push(Flow { target: flow.target.clone(), kind, apply_once: flow.apply_once });
    }
    Ok(out)
}

fn constant(v: &toml::Value) -> Option<AttrValues> {
    let items: Vec<&toml::Value> = match v {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let first = items.first()?;
    match first {
        toml::Value::String(_) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(AttrValues::String),
        toml::Value::Integer(_) => {
            items.iter().map(|i| i.as_integer()).collect::<Option<Vec<_>>>().map(AttrValues::Integer)
        }
        toml::Value::Boolean(_) => {
            items.iter().map(|i| i.as_bool()).collect::<Option<Vec<_>>>().map(AttrValues::Boolean)
        }
        _ => None,
    }
}

/// Two rules of one direction that can see the same connector and object type must not share
/// a precedence: the winner of an attribute would depend on their names.
fn check_precedence(
    origin: &str,
    inbound: &[InboundRule],
    outbound: &[OutboundRule],
) -> Result<(), RuleError> {
    for (i, a) in inbound.iter().enumerate() {
        for b in inbound.iter().skip(i + 1) {
            if a.precedence == b.precedence
                && a.cs_object_type.eq_ignore_ascii_case(&b.cs_object_type)
                && a.connectors.overlaps(&b.connectors)
            {
                return Err(precedence_clash(origin, &b.name, &a.name, a.precedence));
            }
        }
    }
    for (i, a) in outbound.iter().enumerate() {
        for b in outbound.iter().skip(i + 1) {
            if a.precedence == b.precedence
                && a.mv_object_type.eq_ignore_ascii_case(&b.mv_object_type)
                && a.connectors.overlaps(&b.connectors)
            {
                return Err(precedence_clash(origin, &b.name, &a.name, a.precedence));
            }
        }
    }
    Ok(())
}

fn precedence_clash(origin: &str, rule: &str, other: &str, precedence: u32) -> RuleError {
    RuleError {
        origin: origin.to_owned(),
        rule: Some(rule.to_owned()),
        field: Some("precedence".to_owned()),
        message: format!(
            "precedence {precedence} is also used by rule `{other}` for the same connectors and object type"
        ),
    }
}
