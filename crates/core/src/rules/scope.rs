//! Scoping filters: Entra Connect's operators (`EQUAL`, `NOTSTARTSWITH`, `ISBITSET`,
//! `ISMEMBEROF`...) over one object's attributes, plus an optional CEL condition.
//!
//! It owns the operator semantics only; which objects get evaluated is the engine's business.
//!
//! - String comparisons are case-insensitive, as in Entra.
//! - A multi-valued attribute matches a positive operator (`EQUAL`, `CONTAINS`, `STARTSWITH`,
//!   ...) when any value does; each negative operator (`NOTEQUAL`, `NOTCONTAINS`, ...) is the
//!   negation of its positive, so an absent attribute is `NOTEQUAL` anything.
//! - `LESSTHAN` and friends compare as integers when both sides read as integers, else as
//!   lower-cased text.
//! - `ISBITSET` is true when all bits of the mask are set in some value.
//! - `ISMEMBEROF` compares the normalized group DN with [`ObjectView::member_of`].
//! - The attribute name `dn` means the object's DN unless the object has a `dn` attribute.

use std::cmp::Ordering;

use crate::attribute::AttrValues;
use crate::dn::Dn;
use crate::expr::{Expr, ExprError};
use crate::rules::ObjectView;

/// A scoping filter: groups ORed, clauses within a group ANDed, and the optional CEL
/// expression ANDed with the result. No group and no expression: everything is in scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    /// Scoping groups, ORed.
    pub groups: Vec<ScopeGroup>,
    /// A CEL condition, ANDed.
    pub expression: Option<Expr>,
}

impl Scope {
    /// True when a clause needs the object's group memberships (ISMEMBEROF, ISNOTMEMBEROF).
    pub fn uses_member_of(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| &g.clauses)
            .any(|c| matches!(c.operator, ScopeOperator::IsMemberOf | ScopeOperator::IsNotMemberOf))
    }
}

/// One scoping group: clauses ANDed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScopeGroup {
    /// The clauses.
    pub clauses: Vec<ScopeClause>,
}

/// One scoping clause: `attribute OPERATOR value`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeClause {
    /// The attribute (or `dn`).
    pub attribute: String,
    /// The operator.
    pub operator: ScopeOperator,
    /// The operand, of the shape the operator takes.
    pub value: ScopeValue,
}

/// A scoping clause's operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeValue {
    /// `ISNULL` / `ISNOTNULL` take none.
    None,
    /// Text (compared case-insensitively).
    Text(String),
    /// An integer (also the `ISBITSET` mask).
    Integer(i64),
    /// A boolean (matches `TRUE`/`FALSE` values of boolean attributes).
    Boolean(bool),
    /// `ISIN` / `ISNOTIN` take a list.
    List(Vec<ScopeValue>),
}

/// Entra Connect's scoping-filter operators (TOML spelling: `EQUAL`, `NOTSTARTSWITH`,
/// `LESSTHAN_OR_EQUAL`...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeOperator {
    /// `EQUAL`
    Equal,
    /// `NOTEQUAL`
    NotEqual,
    /// `LESSTHAN`
    LessThan,
    /// `LESSTHAN_OR_EQUAL`
    LessThanOrEqual,
    /// `GREATERTHAN`
    GreaterThan,
    /// `GREATERTHAN_OR_EQUAL`
    GreaterThanOrEqual,
    /// `CONTAINS`
    Contains,
    /// `NOTCONTAINS`
    NotContains,
    /// `STARTSWITH`
    StartsWith,
    /// `NOTSTARTSWITH`
    NotStartsWith,
    /// `ENDSWITH`
    EndsWith,
    /// `NOTENDSWITH`
    NotEndsWith,
    /// `ISNULL`
    IsNull,
    /// `ISNOTNULL`
    IsNotNull,
    /// `ISIN`
    IsIn,
    /// `ISNOTIN`
    IsNotIn,
    /// `ISBITSET`
    IsBitSet,
    /// `ISNOTBITSET`
    IsNotBitSet,
    /// `ISMEMBEROF`
    IsMemberOf,
    /// `ISNOTMEMBEROF`
    IsNotMemberOf,
}

/// What operand an operator takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operand {
    None,
    Scalar,
    List,
    Integer,
    Dn,
}

impl ScopeOperator {
    /// Every operator with its TOML spelling.
    pub const ALL: [(ScopeOperator, &'static str); 20] = [
        (Self::Equal, "EQUAL"),
        (Self::NotEqual, "NOTEQUAL"),
        (Self::LessThan, "LESSTHAN"),
        (Self::LessThanOrEqual, "LESSTHAN_OR_EQUAL"),
        (Self::GreaterThan, "GREATERTHAN"),
        (Self::GreaterThanOrEqual, "GREATERTHAN_OR_EQUAL"),
        (Self::Contains, "CONTAINS"),
        (Self::NotContains, "NOTCONTAINS"),
        (Self::StartsWith, "STARTSWITH"),
        (Self::NotStartsWith, "NOTSTARTSWITH"),
        (Self::EndsWith, "ENDSWITH"),
        (Self::NotEndsWith, "NOTENDSWITH"),
        (Self::IsNull, "ISNULL"),
        (Self::IsNotNull, "ISNOTNULL"),
        (Self::IsIn, "ISIN"),
        (Self::IsNotIn, "ISNOTIN"),
        (Self::IsBitSet, "ISBITSET"),
        (Self::IsNotBitSet, "ISNOTBITSET"),
        (Self::IsMemberOf, "ISMEMBEROF"),
        (Self::IsNotMemberOf, "ISNOTMEMBEROF"),
    ];

    /// Reads Entra's spelling (case-insensitive; `LESSTHANOREQUAL` without underscores too).
    pub fn parse(text: &str) -> Option<ScopeOperator> {
        let t = text.trim().replace('_', "").to_ascii_uppercase();
        Self::ALL.iter().find(|(_, name)| name.replace('_', "") == t).map(|(op, _)| *op)
    }

    /// Entra's spelling.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(op, _)| *op == self).map_or("?", |(_, n)| n)
    }

    pub(crate) fn operand(self) -> Operand {
        use ScopeOperator::*;
        match self {
            IsNull | IsNotNull => Operand::None,
            IsIn | IsNotIn => Operand::List,
            IsBitSet | IsNotBitSet => Operand::Integer,
            IsMemberOf | IsNotMemberOf => Operand::Dn,
            _ => Operand::Scalar,
        }
    }

    /// The positive operator this one negates, if it is a negation.
    fn positive(self) -> Option<ScopeOperator> {
        use ScopeOperator::*;
        Some(match self {
            NotEqual => Equal,
            NotContains => Contains,
            NotStartsWith => StartsWith,
            NotEndsWith => EndsWith,
            IsNotNull => IsNull,
            IsNotIn => IsIn,
            IsNotBitSet => IsBitSet,
            IsNotMemberOf => IsMemberOf,
            _ => return None,
        })
    }
}

impl Scope {
    /// Whether `object` is in scope.
    pub fn matches(&self, object: &dyn ObjectView) -> Result<bool, ExprError> {
        let groups_ok = self.groups.is_empty() || self.groups.iter().any(|g| g.matches(object));
        if !groups_ok {
            return Ok(false);
        }
        match &self.expression {
            None => Ok(true),
            Some(e) => e.evaluate_bool(object),
        }
    }
}

impl ScopeGroup {
    /// Whether every clause matches.
    pub fn matches(&self, object: &dyn ObjectView) -> bool {
        self.clauses.iter().all(|c| c.matches(object))
    }
}

/// One attribute value, as the scoping filter sees it.
enum Item<'a> {
    Text(&'a str),
    Int(i64),
    Bool(bool),
    Other(String),
}

impl Item<'_> {
    fn text(&self) -> String {
        match self {
            Item::Text(s) => s.to_lowercase(),
            Item::Int(i) => i.to_string(),
            Item::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
            Item::Other(s) => s.to_lowercase(),
        }
    }
    fn int(&self) -> Option<i64> {
        match self {
            Item::Int(i) => Some(*i),
            Item::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

fn items<'a>(object: &'a dyn ObjectView, attribute: &str) -> Vec<Item<'a>> {
    match object.attribute(attribute) {
        Some(AttrValues::String(v) | AttrValues::Reference(v) | AttrValues::Timestamp(v)) => {
            v.iter().map(|s| Item::Text(s)).collect()
        }
        Some(AttrValues::Integer(v)) => v.iter().map(|i| Item::Int(*i)).collect(),
        Some(AttrValues::Boolean(v)) => v.iter().map(|b| Item::Bool(*b)).collect(),
        Some(values @ AttrValues::Binary(_)) => {
            values.display_values().into_iter().map(Item::Other).collect()
        }
        None if attribute.eq_ignore_ascii_case("dn") => object.dn().map(Item::Text).into_iter().collect(),
        None => Vec::new(),
    }
}

fn operand_text(v: &ScopeValue) -> String {
    match v {
        ScopeValue::None => String::new(),
        ScopeValue::Text(s) => s.to_lowercase(),
        ScopeValue::Integer(i) => i.to_string(),
        ScopeValue::Boolean(b) => b.to_string(),
        ScopeValue::List(_) => String::new(),
    }
}

fn operand_int(v: &ScopeValue) -> Option<i64> {
    match v {
        ScopeValue::Integer(i) => Some(*i),
        ScopeValue::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn equal(item: &Item<'_>, v: &ScopeValue) -> bool {
    match (item.int(), operand_int(v)) {
        (Some(a), Some(b)) => a == b,
        _ => item.text() == operand_text(v),
    }
}

fn order(item: &Item<'_>, v: &ScopeValue) -> Ordering {
    match (item.int(), operand_int(v)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => item.text().cmp(&operand_text(v)),
    }
}

impl ScopeClause {
    /// Whether the clause holds for `object`.
    pub fn matches(&self, object: &dyn ObjectView) -> bool {
        if let Some(positive) = self.operator.positive() {
            return !self.eval(positive, object);
        }
        self.eval(self.operator, object)
    }

    fn eval(&self, op: ScopeOperator, object: &dyn ObjectView) -> bool {
        use ScopeOperator::*;
        let v = &self.value;
        if op == IsMemberOf {
            let wanted = match v {
                ScopeValue::Text(t) => {
                    Dn::parse(t).map(|d| d.normalized().to_owned()).unwrap_or_else(|_| t.to_lowercase())
                }
                _ => return false,
            };
            return object.member_of().iter().any(|g| g.eq_ignore_ascii_case(&wanted));
        }
        let values = items(object, &self.attribute);
        if op == IsNull {
            return values.iter().all(|i| i.text().is_empty());
        }
        values.iter().any(|item| match op {
            Equal => equal(item, v),
            LessThan => order(item, v) == Ordering::Less,
            LessThanOrEqual => order(item, v) != Ordering::Greater,
            GreaterThan => order(item, v) == Ordering::Greater,
            GreaterThanOrEqual => order(item, v) != Ordering::Less,
            Contains => item.text().contains(&operand_text(v)),
            StartsWith => item.text().starts_with(&operand_text(v)),
            EndsWith => item.text().ends_with(&operand_text(v)),
            IsIn => match v {
                ScopeValue::List(list) => list.iter().any(|x| equal(item, x)),
                _ => false,
            },
            IsBitSet => match (item.int(), operand_int(v)) {
                (Some(a), Some(mask)) => a & mask == mask,
                _ => false,
            },
            _ => false,
        })
    }
}
