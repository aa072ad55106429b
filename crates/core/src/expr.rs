//! [`Expr`]: CEL (Common Expression Language, crate `cel`) expressions evaluated against one
//! object, for sync-rule scopes, join sources and conditions, and attribute flows.
//!
//! This module owns how an object is bound to CEL variables and the functions the rules may
//! call; it must not do I/O, read the clock, or panic on any expression text or attribute value.
//!
//! # Bindings
//!
//! - Every identifier the expression references is bound to the object's attribute of that name
//!   (looked up case-insensitively), or to `null` when the object has no such attribute.
//! - `attr` is a map for names that are not CEL identifiers: `attr["mS-DS-ConsistencyGuid"]`.
//!   Its keys are the string literals and field names the expression spells; an absent
//!   attribute is `null` there too.
//! - `dn` (string or `null` for a metaverse object), `objectType` (string), `immutableId`
//!   (base64 string or `null`).
//!
//! # Value shapes
//!
//! An attribute listed as multi-valued (see [`MultiValued`]) is always a list when present, even
//! with one value; any other is its first value. An absent (or empty) attribute is `null`. Text, DN references and timestamps are strings, integers `int`, booleans `bool`,
//! binary values `bytes`.
//!
//! # Functions
//!
//! Each can be called as `f(x, ...)` or as a method `x.f(...)`. They are null-tolerant: a
//! `null` text argument gives `null` rather than an error.
//!
//! | function | result |
//! |---|---|
//! | `lower(s)`, `upper(s)`, `trim(s)` | the string changed; applied to each element of a list |
//! | `left(s, n)`, `right(s, n)` | the first / last `n` characters |
//! | `replace(s, old, new)` | every `old` replaced by `new` |
//! | `split(s, sep)`, `join(list, sep)` | a list of strings / one string |
//! | `coalesce(a, b, ...)` | the first argument that is present (not null, not `""`, not `[]`) |
//! | `isPresent(x)`, `isNull(x)` | whether `x` is present / absent in the sense of `coalesce` |
//! | `bitAnd(a, b)`, `bitOr(a, b)` | integer bit operations (CEL has none); `null` if an argument is `null` |
//! | `base64(b)` | standard base64 (with padding) of bytes (or of a string's UTF-8) |
//! | `primarySmtp(proxyAddresses)` | the address of the `SMTP:` value (uppercase prefix), or `null` |
//! | `AuthoritativeNull()` | a flow result that clears the attribute for good |
//! | `IgnoreThisFlow()` | a flow result that makes the flow do nothing |

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr, LiteralValue};
use cel::common::value::Val;
use cel::objects::{Key, Map, Opaque};
use cel::{Context, ExecutionError, FunctionContext, Program, Value};

use crate::attribute::AttrValues;
use crate::rules::ObjectView;

/// The names of the attributes that are always bound as lists, compared case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MultiValued(BTreeSet<String>);

impl MultiValued {
    /// A set from attribute names (any case).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        Self(names.into_iter().map(|n| n.as_ref().to_ascii_lowercase()).collect())
    }
    /// Whether `name` is multi-valued.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(&name.to_ascii_lowercase())
    }
    /// Adds the names of `other`.
    pub fn extend(&mut self, other: &MultiValued) {
        self.0.extend(other.0.iter().cloned());
    }
    /// The names, lowercase, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The multi-valued list of the embedded default rules (`schema/sync-rules.toml`), used by
/// [`Expr::compile`].
pub fn default_multi_valued() -> Arc<MultiValued> {
    static DEFAULT: LazyLock<Arc<MultiValued>> =
        LazyLock::new(|| Arc::new(crate::rules::embedded_multi_valued()));
    Arc::clone(&DEFAULT)
}

/// What went wrong compiling or evaluating an expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The text is not valid CEL.
    #[error("CEL expression `{expr}` does not parse: {message}")]
    Parse {
        /// The expression text.
        expr: String,
        /// The parser's message.
        message: String,
    },
    /// Evaluation failed (unknown function, wrong argument type, division by zero, ...).
    #[error("CEL expression `{expr}` failed on {object}: {message}")]
    Evaluation {
        /// The expression text.
        expr: String,
        /// The object, as `type `dn``.
        object: String,
        /// The interpreter's message.
        message: String,
    },
    /// The result has a type that the caller cannot use.
    #[error("CEL expression `{expr}` on {object} gave {got}, expected {want}")]
    ResultType {
        /// The expression text.
        expr: String,
        /// The object, as `type `dn``.
        object: String,
        /// What the expression gave.
        got: String,
        /// What was expected.
        want: &'static str,
    },
}

/// The result of an expression, detached from the interpreter.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprValue {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<ExprValue>),
    /// A map, entries sorted by key text.
    Map(Vec<(String, ExprValue)>),
    /// `AuthoritativeNull()`.
    AuthoritativeNull,
    /// `IgnoreThisFlow()`.
    IgnoreThisFlow,
}

impl ExprValue {
    /// The CEL type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::UInt(_) => "uint",
            Self::Double(_) => "double",
            Self::String(_) => "string",
            Self::Bytes(_) => "bytes",
            Self::List(_) => "list",
            Self::Map(_) => "map",
            Self::AuthoritativeNull => "AuthoritativeNull()",
            Self::IgnoreThisFlow => "IgnoreThisFlow()",
        }
    }
}

/// A compiled CEL expression and its source text. Cheap to clone.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    program: Arc<Program>,
    /// Identifiers to bind, sorted, reserved names excluded.
    variables: Arc<[String]>,
    /// Keys of the `attr` map, `None` when `attr` is not referenced.
    attr_keys: Option<Arc<[String]>>,
    multi_valued: Arc<MultiValued>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", &*self.source)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.multi_valued == other.multi_valued
    }
}

/// Names bound by the evaluator itself, or CEL's own type names, never read as attributes.
const RESERVED: &[&str] = &[
    "attr",
    "dn",
    "objectType",
    "immutableId",
    "null",
    "true",
    "false",
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "type",
    "null_type",
    "dyn",
];

impl Expr {
    /// Compiles `text` with the default multi-valued attribute list.
    pub fn compile(text: &str) -> Result<Expr, ExprError> {
        Self::compile_with(text, default_multi_valued())
    }

    /// Compiles `text`; `multi_valued` says which attributes are bound as lists.
    pub fn compile_with(text: &str, multi_valued: Arc<MultiValued>) -> Result<Expr, ExprError> {
        let refuse = |message: String| ExprError::Parse { expr: text.to_owned(), message };
        if text.len() > MAX_TEXT {
            return Err(refuse(format!(
                "the expression is too long ({} bytes, at most {MAX_TEXT})",
                text.len()
            )));
        }
        let program = Program::compile(text).map_err(|e| refuse(e.to_string()))?;
        if too_deep(program.expression(), 0) {
            return Err(refuse(format!("the expression is nested too deeply (at most {MAX_DEPTH} levels)")));
        }
        let refs = program.references();
        let mut variables: Vec<String> =
            refs.variables().into_iter().filter(|v| !RESERVED.contains(v)).map(str::to_owned).collect();
        variables.sort();
        let attr_keys: Option<Arc<[String]>> = if refs.has_variable("attr") {
            let mut keys = BTreeSet::new();
            collect_keys(program.expression(), &mut keys, 0);
            Some(keys.into_iter().collect::<Vec<_>>().into())
        } else {
            None
        };
        Ok(Expr {
            source: Arc::from(text),
            program: Arc::new(program),
            variables: variables.into(),
            attr_keys,
            multi_valued,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against one object.
    pub fn evaluate(&self, object: &dyn ObjectView) -> Result<ExprValue, ExprError> {
        let result = ROOT.with(|root| {
            let mut ctx = root.new_inner_scope();
            for name in self.variables.iter() {
                let value = attribute_value(object, name, &self.multi_valued);
                bind(&mut ctx, name, value)?;
            }
            if let Some(keys) = &self.attr_keys {
                let mut map = std::collections::HashMap::new();
                for key in keys.iter() {
                    map.insert(
                        Key::String(Arc::new(key.clone())),
                        attribute_value(object, key, &self.multi_valued),
                    );
                }
                bind(&mut ctx, "attr", Value::Map(Map { map: Arc::new(map) }))?;
            }
            bind(&mut ctx, "dn", object.dn().map_or(Value::Null, Value::from))?;
            bind(&mut ctx, "objectType", Value::from(object.object_type()))?;
            bind(&mut ctx, "immutableId", object.immutable_id().map_or(Value::Null, Value::from))?;
            self.program.execute(&ctx)
        });
        match result {
            Ok(v) => Ok(detach(&v)),
            Err(e) => Err(ExprError::Evaluation {
                expr: self.source.to_string(),
                object: describe(object),
                message: e.to_string(),
            }),
        }
    }

    /// Evaluates a condition: `true` or `false`; `null` counts as `false`; anything else is an
    /// error.
    pub fn evaluate_bool(&self, object: &dyn ObjectView) -> Result<bool, ExprError> {
        match self.evaluate(object)? {
            ExprValue::Bool(b) => Ok(b),
            ExprValue::Null => Ok(false),
            other => Err(self.type_error(object, &other, "bool")),
        }
    }

    /// An error saying this expression gave `got` on `object` where `want` was expected.
    pub fn type_error(&self, object: &dyn ObjectView, got: &ExprValue, want: &'static str) -> ExprError {
        ExprError::ResultType {
            expr: self.source.to_string(),
            object: describe(object),
            got: got.type_name().to_owned(),
            want,
        }
    }
}

/// `type `dn`` (or `type (no dn)`), for messages.
pub(crate) fn describe(object: &dyn ObjectView) -> String {
    match object.dn() {
        Some(dn) => format!("{} `{dn}`", object.object_type()),
        None => format!("{} (no dn)", object.object_type()),
    }
}

fn bind(ctx: &mut Context<'_, 'static>, name: &str, value: Value) -> Result<(), ExecutionError> {
    let val = Box::<dyn Val>::try_from(value)?;
    ctx.add_variable_as_val(name, val);
    Ok(())
}

/// The longest expression text accepted, in bytes.
pub const MAX_TEXT: usize = 8192;
/// The deepest expression tree accepted: evaluation recurses once per level, so this bounds the
/// stack an expression can use.
pub const MAX_DEPTH: usize = 64;

/// Whether the tree is deeper than [`MAX_DEPTH`] (the walk itself stops there).
fn too_deep(e: &IdedExpr, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    let d = depth + 1;
    match &e.expr {
        Ast::Unspecified | Ast::Ident(_) | Ast::Literal(_) => false,
        Ast::Call(call) => {
            call.target.as_deref().is_some_and(|t| too_deep(t, d)) || call.args.iter().any(|a| too_deep(a, d))
        }
        Ast::Comprehension(c) => [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
            .into_iter()
            .any(|x| too_deep(x, d)),
        Ast::List(l) => l.elements.iter().any(|x| too_deep(x, d)),
        Ast::Map(m) => m.entries.iter().any(|en| entry_too_deep(&en.expr, d)),
        Ast::Struct(s) => s.entries.iter().any(|en| entry_too_deep(&en.expr, d)),
        Ast::Select(s) => too_deep(&s.operand, d),
    }
}

fn entry_too_deep(entry: &EntryExpr, depth: usize) -> bool {
    match entry {
        EntryExpr::StructField(f) => too_deep(&f.value, depth),
        EntryExpr::MapEntry(m) => too_deep(&m.key, depth) || too_deep(&m.value, depth),
    }
}

/// Collects string literals and selected field names: the candidate keys of `attr`.
fn collect_keys(e: &IdedExpr, keys: &mut BTreeSet<String>, depth: usize) {
    if depth > 256 {
        return;
    }
    let d = depth + 1;
    match &e.expr {
        Ast::Unspecified | Ast::Ident(_) => {}
        Ast::Literal(LiteralValue::String(s)) => {
            keys.insert(s.inner().to_owned());
        }
        Ast::Literal(_) => {}
        Ast::Call(call) => {
            if let Some(t) = &call.target {
                collect_keys(t, keys, d);
            }
            for a in &call.args {
                collect_keys(a, keys, d);
            }
        }
        Ast::Comprehension(c) => {
            for x in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                collect_keys(x, keys, d);
            }
        }
        Ast::List(l) => {
            for x in &l.elements {
                collect_keys(x, keys, d);
            }
        }
        Ast::Map(m) => {
            for entry in &m.entries {
                collect_entry(&entry.expr, keys, d);
            }
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                collect_entry(&entry.expr, keys, d);
            }
        }
        Ast::Select(s) => {
            keys.insert(s.field.clone());
            collect_keys(&s.operand, keys, d);
        }
    }
}

fn collect_entry(entry: &EntryExpr, keys: &mut BTreeSet<String>, depth: usize) {
    match entry {
        EntryExpr::StructField(f) => collect_keys(&f.value, keys, depth),
        EntryExpr::MapEntry(m) => {
            collect_keys(&m.key, keys, depth);
            collect_keys(&m.value, keys, depth);
        }
    }
}

/// The CEL value of one attribute of `object`: a list when multi-valued, else the first value,
/// `null` when absent.
fn attribute_value(object: &dyn ObjectView, name: &str, multi: &MultiValued) -> Value {
    let Some(values) = object.attribute(name) else {
        return Value::Null;
    };
    let list: Vec<Value> = match values {
        AttrValues::String(v) | AttrValues::Reference(v) | AttrValues::Timestamp(v) => {
            v.iter().map(|s| Value::from(s.as_str())).collect()
        }
        AttrValues::Integer(v) => v.iter().map(|i| Value::Int(*i)).collect(),
        AttrValues::Boolean(v) => v.iter().map(|b| Value::Bool(*b)).collect(),
        AttrValues::Binary(v) => v.iter().map(|b| Value::Bytes(Arc::new(b.clone()))).collect(),
    };
    if list.is_empty() {
        Value::Null
    } else if multi.contains(name) {
        Value::List(Arc::new(list))
    } else {
        list.into_iter().next().unwrap_or(Value::Null)
    }
}

/// Converts an interpreter value into an [`ExprValue`].
fn detach(v: &Value) -> ExprValue {
    match v {
        Value::Null => ExprValue::Null,
        Value::Bool(b) => ExprValue::Bool(*b),
        Value::Int(i) => ExprValue::Int(*i),
        Value::UInt(u) => ExprValue::UInt(*u),
        Value::Float(f) => ExprValue::Double(*f),
        Value::String(s) => ExprValue::String(s.to_string()),
        Value::Bytes(b) => ExprValue::Bytes(b.to_vec()),
        Value::List(l) => ExprValue::List(l.iter().map(detach).collect()),
        Value::Map(m) => {
            let mut entries: Vec<(String, ExprValue)> =
                m.map.iter().map(|(k, v)| (key_text(k), detach(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            ExprValue::Map(entries)
        }
        Value::Opaque(o) => match o.downcast_ref::<Sentinel>() {
            Some(Sentinel::AuthoritativeNull) => ExprValue::AuthoritativeNull,
            Some(Sentinel::IgnoreThisFlow) => ExprValue::IgnoreThisFlow,
            None => ExprValue::String(format!("{:?}", o.as_debug())),
        },
        other => ExprValue::String(format!("{other:?}")),
    }
}

fn key_text(k: &Key) -> String {
    match k {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => s.to_string(),
    }
}

/// The flow sentinels, carried through CEL as opaque values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sentinel {
    AuthoritativeNull,
    IgnoreThisFlow,
}

impl Opaque for Sentinel {
    fn runtime_type_name(&self) -> &str {
        "syncctl.FlowSentinel"
    }
}

thread_local! {
    /// The root context with the custom functions; each evaluation binds its variables in a
    /// child scope of it. Per thread because CEL contexts are not `Sync`.
    static ROOT: Context<'static, 'static> = root_context();
}

type Args = Vec<Value>;
type FnResult = Result<Value, ExecutionError>;
/// A custom function: its name (for messages) and its arguments, the receiver first.
type Custom = fn(&str, Args) -> FnResult;

fn root_context() -> Context<'static, 'static> {
    let mut ctx = Context::default();
    let functions: &[(&str, Custom)] = &[
        ("lower", f_lower),
        ("upper", f_upper),
        ("trim", f_trim),
        ("left", f_left),
        ("right", f_right),
        ("replace", f_replace),
        ("split", f_split),
        ("join", f_join),
        ("coalesce", f_coalesce),
        ("isPresent", f_is_present),
        ("isNull", f_is_null),
        ("bitAnd", f_bit_and),
        ("bitOr", f_bit_or),
        ("base64", f_base64),
        ("primarySmtp", f_primary_smtp),
        ("AuthoritativeNull", f_authoritative_null),
        ("IgnoreThisFlow", f_ignore),
    ];
    for (name, f) in functions {
        let f = *f;
        let fname: &'static str = name;
        // A name clash with the standard library would be a programming error caught by the
        // tests (every function is exercised); it never depends on data.
        let _ = ctx.add_function(name, move |ftx: &FunctionContext<'_, '_>| -> FnResult {
            f(fname, collect_args(ftx)?)
        });
    }
    ctx
}

fn collect_args(ftx: &FunctionContext<'_, '_>) -> Result<Args, ExecutionError> {
    let mut out = Vec::with_capacity(ftx.args.len() + 1);
    if let Some(this) = &ftx.this {
        out.push(Value::try_from(this.as_ref())?);
    }
    for a in &ftx.args {
        out.push(Value::try_from(a.as_ref())?);
    }
    Ok(out)
}

fn arity(name: &str, args: &Args, n: usize) -> Result<(), ExecutionError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(ExecutionError::function_error(name, format!("expects {n} argument(s), got {}", args.len())))
    }
}

fn wrong_type(name: &str, v: &Value, want: &str) -> ExecutionError {
    ExecutionError::function_error(name, format!("expects {want}, got {}", v.type_of()))
}

/// Applies a string function to a string, each string of a list, or passes `null` through.
fn map_text(name: &str, v: &Value, f: &dyn Fn(&str) -> String) -> FnResult {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) => Ok(Value::from(f(s))),
        Value::List(l) => {
            let mut out = Vec::with_capacity(l.len());
            for x in l.iter() {
                out.push(map_text(name, x, f)?);
            }
            Ok(Value::List(Arc::new(out)))
        }
        other => Err(wrong_type(name, other, "a string or a list of strings")),
    }
}

fn first(args: &Args) -> &Value {
    args.first().unwrap_or(&Value::Null)
}

fn f_lower(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    map_text(name, first(&args), &|s| s.to_lowercase())
}
fn f_upper(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    map_text(name, first(&args), &|s| s.to_uppercase())
}
fn f_trim(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    map_text(name, first(&args), &|s| s.trim().to_owned())
}

fn int_arg(name: &str, v: Option<&Value>) -> Result<i64, ExecutionError> {
    match v {
        Some(Value::Int(i)) => Ok(*i),
        Some(Value::UInt(u)) => {
            i64::try_from(*u).map_err(|_| ExecutionError::function_error(name, "integer too large"))
        }
        Some(other) => Err(wrong_type(name, other, "an int")),
        None => Err(ExecutionError::function_error(name, "missing argument")),
    }
}

fn str_arg<'a>(name: &str, v: Option<&'a Value>) -> Result<&'a str, ExecutionError> {
    match v {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(other) => Err(wrong_type(name, other, "a string")),
        None => Err(ExecutionError::function_error(name, "missing argument")),
    }
}

fn f_left(name: &str, args: Args) -> FnResult {
    arity(name, &args, 2)?;
    let n = usize::try_from(int_arg(name, args.get(1))?.max(0)).unwrap_or(0);
    map_text(name, first(&args), &|s| s.chars().take(n).collect())
}
fn f_right(name: &str, args: Args) -> FnResult {
    arity(name, &args, 2)?;
    let n = usize::try_from(int_arg(name, args.get(1))?.max(0)).unwrap_or(0);
    map_text(name, first(&args), &|s| {
        let count = s.chars().count();
        s.chars().skip(count.saturating_sub(n)).collect()
    })
}
fn f_replace(name: &str, args: Args) -> FnResult {
    arity(name, &args, 3)?;
    let old = str_arg(name, args.get(1))?;
    let new = str_arg(name, args.get(2))?;
    if old.is_empty() {
        return Ok(first(&args).clone());
    }
    map_text(name, first(&args), &|s| s.replace(old, new))
}
fn f_split(name: &str, args: Args) -> FnResult {
    arity(name, &args, 2)?;
    let sep = str_arg(name, args.get(1))?;
    match first(&args) {
        Value::Null => Ok(Value::Null),
        Value::String(s) if sep.is_empty() => Ok(Value::List(Arc::new(vec![Value::from(s.as_str())]))),
        Value::String(s) => Ok(Value::List(Arc::new(s.split(sep).map(Value::from).collect()))),
        other => Err(wrong_type(name, other, "a string")),
    }
}
fn f_join(name: &str, args: Args) -> FnResult {
    arity(name, &args, 2)?;
    let sep = str_arg(name, args.get(1))?;
    match first(&args) {
        Value::Null => Ok(Value::Null),
        Value::String(s) => Ok(Value::String(s.clone())),
        Value::List(l) => {
            let mut parts = Vec::with_capacity(l.len());
            for x in l.iter() {
                match x {
                    Value::Null => {}
                    Value::String(s) => parts.push(s.as_str()),
                    other => return Err(wrong_type(name, other, "a list of strings")),
                }
            }
            Ok(Value::from(parts.join(sep)))
        }
        other => Err(wrong_type(name, other, "a list of strings")),
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Bytes(b) => !b.is_empty(),
        Value::Map(m) => !m.map.is_empty(),
        _ => true,
    }
}

fn f_coalesce(_name: &str, args: Args) -> FnResult {
    Ok(args.into_iter().find(present).unwrap_or(Value::Null))
}
fn f_is_present(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    Ok(Value::Bool(present(first(&args))))
}
fn f_is_null(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    Ok(Value::Bool(!present(first(&args))))
}
fn bit_op(name: &str, args: &Args, op: fn(i64, i64) -> i64) -> FnResult {
    arity(name, args, 2)?;
    if args.iter().any(|a| matches!(a, Value::Null)) {
        return Ok(Value::Null);
    }
    let a = int_arg(name, args.first())?;
    let b = int_arg(name, args.get(1))?;
    Ok(Value::Int(op(a, b)))
}
fn f_bit_and(name: &str, args: Args) -> FnResult {
    bit_op(name, &args, |a, b| a & b)
}
fn f_bit_or(name: &str, args: Args) -> FnResult {
    bit_op(name, &args, |a, b| a | b)
}
fn f_base64(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    match first(&args) {
        Value::Null => Ok(Value::Null),
        Value::Bytes(b) => Ok(Value::from(STANDARD.encode(b.as_slice()))),
        Value::String(s) => Ok(Value::from(STANDARD.encode(s.as_bytes()))),
        other => Err(wrong_type(name, other, "bytes")),
    }
}
fn f_primary_smtp(name: &str, args: Args) -> FnResult {
    arity(name, &args, 1)?;
    let pick = |s: &str| s.strip_prefix("SMTP:").filter(|a| !a.is_empty()).map(str::to_owned);
    match first(&args) {
        Value::Null => Ok(Value::Null),
        Value::String(s) => Ok(pick(s).map_or(Value::Null, Value::from)),
        Value::List(l) => Ok(l
            .iter()
            .find_map(|v| match v {
                Value::String(s) => pick(s),
                _ => None,
            })
            .map_or(Value::Null, Value::from)),
        other => Err(wrong_type(name, other, "a list of strings")),
    }
}
fn f_authoritative_null(name: &str, args: Args) -> FnResult {
    arity(name, &args, 0)?;
    Ok(Value::Opaque(Arc::new(Sentinel::AuthoritativeNull)))
}
fn f_ignore(name: &str, args: Args) -> FnResult {
    arity(name, &args, 0)?;
    Ok(Value::Opaque(Arc::new(Sentinel::IgnoreThisFlow)))
}
