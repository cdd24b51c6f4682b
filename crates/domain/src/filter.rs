//! Payload filters: the subset of EventBridge's event patterns that an
//! endpoint may set (CONTRACT section 12), matched against the event body
//! exactly as its receiver gets it (`{"id", "type", "created_at", "data"}`).
//!
//! A pattern is a JSON object. A key whose value is an object matches a
//! nested object of the body; a key whose value is an array lists the
//! values the body's field may take (any one of them will do, and every
//! key must match). The values are:
//!
//! - exact JSON strings, numbers (compared as numbers: `1` matches `1.0`),
//!   `true`, `false` and `null`;
//! - `{"prefix": "us-"}`: a string that starts with it;
//! - `{"numeric": [">", 0, "<=", 5]}`: a number in the range (`<`, `<=`,
//!   `=`, `>`, `>=`; one bound, or a lower and an upper one);
//! - `{"exists": true | false}`: whether the field has a value;
//! - `{"anything-but": ...}`: any value except a string, a number, a list
//!   of strings or of numbers, or (`{"prefix": "x"}`) a string starting
//!   with `x`.
//!
//! As in EventBridge, matching looks at leaf values only: an object is not
//! a value (`exists: true` does not match a field holding an object), a
//! field whose value is an array matches when any of its elements does, a
//! nested pattern over an array of objects matches when one element matches
//! all of it, and only `exists: false` matches a missing field.
//!
//! Not supported (a 400 names them): `suffix`, `equals-ignore-case`,
//! `wildcard`, `cidr`, `$or`, and `anything-but` with anything but a value,
//! a list or a prefix.
//!
//! Limits, checked when a pattern is set: [`MAX_FILTER_BYTES`] of compact
//! JSON, [`MAX_FILTER_DEPTH`] levels of nested objects and
//! [`MAX_FILTER_VALUES`] match values. The fan-out matches every event of an
//! org against each of its endpoints' patterns, in a function all orgs
//! share: these bound the work of one match (at most the pattern's values
//! times the body's values along the pattern's paths) and the matcher's
//! recursion, whatever an org sets.

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Longest pattern, in bytes of compact JSON: EventBridge's own limit on a
/// rule's event pattern is of this order (4096 characters), and the
/// pattern is read with every endpoint listing the fan-out makes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of objects in a pattern (`{"data": {"a": ...}}` is 2).
pub const MAX_FILTER_DEPTH: usize = 10;
/// Most match values in one pattern (each exact value, each value an
/// `anything-but` lists, and each operator count one).
pub const MAX_FILTER_VALUES: usize = 100;

/// A validated payload filter. Cheap to clone: the fan-out hands one to
/// every event it matches.
#[derive(Clone)]
pub struct EventFilter {
    inner: Arc<Compiled>,
}

struct Compiled {
    /// The pattern as given, for reads and storage.
    source: Value,
    root: Fields,
}

/// Every key of an object pattern, each with what its field must match.
type Fields = Vec<(String, Node)>;

enum Node {
    /// A nested object pattern.
    Object(Fields),
    /// A list of match values: any one may match.
    Values(Vec<Matcher>),
}

enum Matcher {
    Exact(Scalar),
    Prefix(String),
    Numeric(Range),
    Exists(bool),
    AnythingBut(Exclusion),
}

/// A JSON leaf value.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
}

impl Scalar {
    fn of(v: &Value) -> Option<Scalar> {
        match v {
            Value::String(s) => Some(Scalar::String(s.clone())),
            Value::Number(n) => n.as_f64().map(Scalar::Number),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Null => Some(Scalar::Null),
            Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// Whether the body's leaf `v` is this value (numbers by value).
    fn equals(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::String(a), Value::String(b)) => a == b,
            (Scalar::Number(a), Value::Number(b)) => b.as_f64() == Some(*a),
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Null, Value::Null) => true,
            _ => false,
        }
    }
}

/// A numeric range; each bound is `(value, inclusive)`.
struct Range {
    lower: Option<(f64, bool)>,
    upper: Option<(f64, bool)>,
}

impl Range {
    fn contains(&self, n: f64) -> bool {
        let above = match self.lower {
            Some((l, true)) => n >= l,
            Some((l, false)) => n > l,
            None => true,
        };
        let below = match self.upper {
            Some((u, true)) => n <= u,
            Some((u, false)) => n < u,
            None => true,
        };
        above && below
    }
}

enum Exclusion {
    Values(Vec<Scalar>),
    Prefix(String),
}

impl Matcher {
    /// Whether this value matches one of the field's leaf values.
    fn matches(&self, leaves: &[&Value]) -> bool {
        match self {
            Matcher::Exists(wanted) => leaves.is_empty() != *wanted,
            Matcher::Exact(s) => leaves.iter().any(|v| s.equals(v)),
            Matcher::Prefix(p) => leaves
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.starts_with(p.as_str()))),
            Matcher::Numeric(r) => leaves
                .iter()
                .any(|v| v.as_f64().is_some_and(|n| r.contains(n))),
            Matcher::AnythingBut(Exclusion::Values(out)) => {
                leaves.iter().any(|v| !out.iter().any(|s| s.equals(v)))
            }
            Matcher::AnythingBut(Exclusion::Prefix(p)) => leaves
                .iter()
                .any(|v| !v.as_str().is_some_and(|s| s.starts_with(p.as_str()))),
        }
    }
}

/// Why a pattern was refused: where (`filter.data.amount[0].numeric`) and
/// what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FilterError {
    pub path: String,
    pub reason: String,
}

impl EventFilter {
    /// Checks a pattern (the value of an endpoint's `filter` field) and
    /// compiles it; the error names the offending place, from `filter`.
    pub fn parse(pattern: &Value) -> Result<EventFilter, FilterError> {
        let root_path = "filter".to_string();
        let text = serde_json::to_string(pattern).map_err(|e| FilterError {
            path: root_path.clone(),
            reason: format!("not serializable: {e}"),
        })?;
        if text.len() > MAX_FILTER_BYTES {
            return Err(FilterError {
                path: root_path,
                reason: format!(
                    "the pattern is {} bytes of JSON; the limit is {MAX_FILTER_BYTES}",
                    text.len()
                ),
            });
        }
        let Value::Object(fields) = pattern else {
            return Err(FilterError {
                path: root_path,
                reason: "must be a JSON object (an event pattern), or null for no filter"
                    .to_string(),
            });
        };
        let mut values = 0usize;
        let root = compile_object(fields, &root_path, 1, &mut values)?;
        Ok(EventFilter {
            inner: Arc::new(Compiled {
                source: pattern.clone(),
                root,
            }),
        })
    }

    /// Reads a stored pattern (its JSON text), checked as when it was set.
    pub fn from_json(text: &str) -> Result<EventFilter, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FilterError {
            path: "filter".to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        EventFilter::parse(&value)
    }

    /// The pattern as it was given.
    pub fn pattern(&self) -> &Value {
        &self.inner.source
    }

    /// The pattern as compact JSON text (how stores keep it).
    pub fn to_json(&self) -> String {
        self.inner.source.to_string()
    }

    /// Whether the event body `body` (`{"id", "type", "created_at",
    /// "data"}`, as [`crate::Event::filter_body`] makes it) matches.
    pub fn matches(&self, body: &Value) -> bool {
        match_object(&self.inner.root, Some(body))
    }
}

impl PartialEq for EventFilter {
    fn eq(&self, other: &Self) -> bool {
        self.inner.source == other.inner.source
    }
}

impl std::fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventFilter({})", self.inner.source)
    }
}

impl Serialize for EventFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.source.serialize(s)
    }
}

// ---- Matching -------------------------------------------------------------

/// Whether every field of `fields` matches in `node` (`None`: absent).
fn match_object(fields: &Fields, node: Option<&Value>) -> bool {
    fields.iter().all(|(key, pattern)| {
        let child = node.and_then(Value::as_object).and_then(|m| m.get(key));
        match pattern {
            Node::Object(nested) => {
                let candidates = elements(child);
                if candidates.is_empty() {
                    match_object(nested, None)
                } else {
                    candidates.iter().any(|c| match_object(nested, Some(c)))
                }
            }
            Node::Values(matchers) => {
                let leaves: Vec<&Value> = elements(child)
                    .into_iter()
                    .filter(|v| !v.is_object())
                    .collect();
                matchers.iter().any(|m| m.matches(&leaves))
            }
        }
    })
}

/// The values a field holds: none when absent, its elements when it is an
/// array (arrays inside arrays flattened, without recursion), else itself.
fn elements(value: Option<&Value>) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = value.into_iter().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().rev()),
            other => out.push(other),
        }
    }
    out
}

// ---- Compiling ------------------------------------------------------------

fn refuse(path: &str, reason: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// `path` with an object key appended: `.key`, or `["key"]` when the key
/// is not a plain name.
fn key_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_string()))
    }
}

/// Counts one more match value, refusing past the limit.
fn count_value(values: &mut usize, path: &str) -> Result<(), FilterError> {
    *values += 1;
    if *values > MAX_FILTER_VALUES {
        return Err(refuse(
            path,
            format!("the pattern lists more than {MAX_FILTER_VALUES} match values"),
        ));
    }
    Ok(())
}

fn compile_object(
    fields: &Map<String, Value>,
    path: &str,
    depth: usize,
    values: &mut usize,
) -> Result<Fields, FilterError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(refuse(
            path,
            format!("patterns nest at most {MAX_FILTER_DEPTH} objects deep"),
        ));
    }
    if fields.is_empty() {
        return Err(refuse(path, "must name at least one field"));
    }
    let mut out = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let here = key_path(path, key);
        if key == "$or" {
            return Err(refuse(&here, "$or is not supported"));
        }
        let node = match value {
            Value::Object(nested) => {
                Node::Object(compile_object(nested, &here, depth + 1, values)?)
            }
            Value::Array(items) => Node::Values(compile_values(items, &here, values)?),
            _ => {
                return Err(refuse(
                    &here,
                    "must be an array of match values or a nested object pattern",
                ))
            }
        };
        out.push((key.clone(), node));
    }
    Ok(out)
}

fn compile_values(
    items: &[Value],
    path: &str,
    values: &mut usize,
) -> Result<Vec<Matcher>, FilterError> {
    if items.is_empty() {
        return Err(refuse(path, "must list at least one match value"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let here = format!("{path}[{i}]");
            count_value(values, &here)?;
            match item {
                Value::Object(op) => compile_operator(op, &here, values),
                Value::Array(_) => Err(refuse(
                    &here,
                    "a match value is a string, number, boolean, null or an operator object, not an array",
                )),
                scalar => Scalar::of(scalar)
                    .map(Matcher::Exact)
                    .ok_or_else(|| refuse(&here, "not a usable number")),
            }
        })
        .collect()
}

/// The operators of this subset, for error messages.
const OPERATORS: &str = "prefix, numeric, exists, anything-but";

fn compile_operator(
    op: &Map<String, Value>,
    path: &str,
    values: &mut usize,
) -> Result<Matcher, FilterError> {
    let mut entries = op.iter();
    let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
        return Err(refuse(
            path,
            format!("an operator object holds exactly one operator ({OPERATORS})"),
        ));
    };
    let here = key_path(path, name);
    match name.as_str() {
        "prefix" => match arg {
            Value::String(p) => Ok(Matcher::Prefix(p.clone())),
            _ => Err(refuse(&here, "must be a string")),
        },
        "exists" => match arg {
            Value::Bool(b) => Ok(Matcher::Exists(*b)),
            _ => Err(refuse(&here, "must be true or false")),
        },
        "numeric" => compile_numeric(arg, &here).map(Matcher::Numeric),
        "anything-but" => compile_anything_but(arg, &here, values).map(Matcher::AnythingBut),
        "suffix" | "equals-ignore-case" | "wildcard" | "cidr" => Err(refuse(
            &here,
            format!("the {name} operator is not supported; use one of {OPERATORS}"),
        )),
        _ => Err(refuse(
            &here,
            format!("unknown operator; use one of {OPERATORS}"),
        )),
    }
}

/// A JSON number as a finite `f64`.
fn number(v: &Value) -> Option<f64> {
    v.as_f64().filter(|n| n.is_finite())
}

fn compile_numeric(arg: &Value, path: &str) -> Result<Range, FilterError> {
    let shape = || {
        refuse(
            path,
            "must be [OP, NUMBER] or [OP, NUMBER, OP, NUMBER] with OP one of <, <=, =, >, >=",
        )
    };
    let Value::Array(items) = arg else {
        return Err(shape());
    };
    if items.len() != 2 && items.len() != 4 {
        return Err(shape());
    }
    let mut range = Range {
        lower: None,
        upper: None,
    };
    for (i, pair) in items.chunks(2).enumerate() {
        let op_path = format!("{path}[{}]", 2 * i);
        let value_path = format!("{path}[{}]", 2 * i + 1);
        let op = pair[0].as_str().ok_or_else(|| {
            refuse(
                &op_path,
                "expected an operator: one of <, <=, =, >, >= (a string)",
            )
        })?;
        let n = number(&pair[1]).ok_or_else(|| refuse(&value_path, "expected a number"))?;
        let slot = match op {
            ">" | ">=" => &mut range.lower,
            "<" | "<=" => &mut range.upper,
            "=" if items.len() != 2 => {
                return Err(refuse(path, "= stands alone: [\"=\", NUMBER]"));
            }
            "=" => {
                range.lower = Some((n, true));
                range.upper = Some((n, true));
                continue;
            }
            _ => {
                return Err(refuse(
                    &op_path,
                    format!("unknown operator {op:?}; use one of <, <=, =, >, >="),
                ))
            }
        };
        if slot.is_some() {
            return Err(refuse(
                &op_path,
                "a range has at most one lower bound (> or >=) and one upper bound (< or <=)",
            ));
        }
        *slot = Some((n, op.ends_with('=')));
    }
    if let (Some((l, li)), Some((u, ui))) = (range.lower, range.upper) {
        if l > u || (l == u && !(li && ui)) {
            return Err(refuse(path, "the range is empty: no number is in it"));
        }
    }
    Ok(range)
}

fn compile_anything_but(
    arg: &Value,
    path: &str,
    values: &mut usize,
) -> Result<Exclusion, FilterError> {
    let usage =
        "takes a string, a number, a list of strings or of numbers, or {\"prefix\": STRING}";
    match arg {
        Value::String(s) => Ok(Exclusion::Values(vec![Scalar::String(s.clone())])),
        Value::Number(_) => number(arg)
            .map(|n| Exclusion::Values(vec![Scalar::Number(n)]))
            .ok_or_else(|| refuse(path, "not a usable number")),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(refuse(path, "must list at least one value"));
            }
            let strings = items.iter().all(Value::is_string);
            let numbers = items.iter().all(Value::is_number);
            if !strings && !numbers {
                return Err(refuse(
                    path,
                    "a list must hold only strings or only numbers",
                ));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let here = format!("{path}[{i}]");
                // The first value was counted with the operator.
                if i > 0 {
                    count_value(values, &here)?;
                }
                out.push(match item {
                    Value::String(s) => Scalar::String(s.clone()),
                    _ => Scalar::Number(
                        number(item).ok_or_else(|| refuse(&here, "not a usable number"))?,
                    ),
                });
            }
            Ok(Exclusion::Values(out))
        }
        Value::Object(op) => {
            let mut entries = op.iter();
            match (entries.next(), entries.next()) {
                (Some((name, Value::String(p))), None) if name == "prefix" => {
                    Ok(Exclusion::Prefix(p.clone()))
                }
                (Some((name, _)), None) if name == "prefix" => {
                    Err(refuse(&key_path(path, name), "must be a string"))
                }
                (Some((name, _)), None) => Err(refuse(
                    &key_path(path, name),
                    format!("anything-but {usage}; {name} is not supported"),
                )),
                _ => Err(refuse(path, usage)),
            }
        }
        _ => Err(refuse(path, usage)),
    }
}

#[cfg(test)]
mod tests;
