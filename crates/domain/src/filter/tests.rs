//! The matcher against the examples of Amazon EventBridge's documentation
//! ("Content filtering in Amazon EventBridge event patterns", "Arrays in
//! event patterns"), written out here from it, then the validation and a
//! seeded fuzz loop.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn filter(pattern: Value) -> EventFilter {
    EventFilter::parse(&pattern).unwrap_or_else(|e| panic!("{pattern} refused: {e}"))
}

fn refused(pattern: Value) -> FilterError {
    match EventFilter::parse(&pattern) {
        Ok(f) => panic!("{pattern} accepted as {f:?}"),
        Err(e) => e,
    }
}

/// The EC2 state-change event the documentation's examples filter.
fn ec2_event(detail: Value) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "111122223333",
        "time": "2017-10-02T18:43:48Z",
        "region": "us-west-1",
        "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
        "detail": detail
    })
}

#[test]
fn exact_values_and_the_and_of_fields() {
    let f = filter(json!({
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["running", "pending"]}
    }));
    assert!(f.matches(&ec2_event(json!({"state": "pending"}))));
    assert!(f.matches(&ec2_event(json!({"state": "running"}))));
    assert!(!f.matches(&ec2_event(json!({"state": "stopped"}))));
    assert!(!f.matches(&ec2_event(json!({}))), "a missing field");
    // Case-sensitive, character by character.
    assert!(!f.matches(&ec2_event(json!({"state": "Running"}))));
}

#[test]
fn prefix_matching() {
    let f = filter(json!({"time": [{"prefix": "2017-10-02"}]}));
    assert!(f.matches(&ec2_event(json!({}))));
    let f = filter(json!({"time": [{"prefix": "2017-10-03"}]}));
    assert!(!f.matches(&ec2_event(json!({}))));
    // Prefix matches strings only.
    let f = filter(json!({"detail": {"n": [{"prefix": "1"}]}}));
    assert!(!f.matches(&ec2_event(json!({"n": 12}))));
    assert!(f.matches(&ec2_event(json!({"n": "12"}))));
}

#[test]
fn anything_but_a_string_a_number_and_lists_of_either() {
    let f = filter(json!({"detail": {"state": [{"anything-but": "initializing"}]}}));
    assert!(f.matches(&ec2_event(json!({"state": "pending"}))));
    assert!(!f.matches(&ec2_event(json!({"state": "initializing"}))));
    assert!(
        !f.matches(&ec2_event(json!({}))),
        "anything-but needs a value"
    );

    let f = filter(json!({"detail": {"x-limit": [{"anything-but": 123}]}}));
    assert!(f.matches(&ec2_event(json!({"x-limit": 301.8}))));
    assert!(!f.matches(&ec2_event(json!({"x-limit": 123}))));
    assert!(
        !f.matches(&ec2_event(json!({"x-limit": 123.0}))),
        "numbers by value"
    );

    let f = filter(json!({"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}));
    assert!(f.matches(&ec2_event(json!({"state": "pending"}))));
    assert!(!f.matches(&ec2_event(json!({"state": "stopped"}))));
    assert!(!f.matches(&ec2_event(json!({"state": "overloaded"}))));

    let f = filter(json!({"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}));
    assert!(f.matches(&ec2_event(json!({"x-limit": 301.8}))));
    assert!(!f.matches(&ec2_event(json!({"x-limit": 200}))));
}

#[test]
fn anything_but_a_prefix() {
    let f = filter(json!({"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}));
    assert!(f.matches(&ec2_event(json!({"state": "pending"}))));
    assert!(!f.matches(&ec2_event(json!({"state": "initializing"}))));
    assert!(!f.matches(&ec2_event(json!({}))));
    let f = filter(json!({"region": [{"anything-but": {"prefix": "us-"}}]}));
    assert!(!f.matches(&ec2_event(json!({}))), "us-west-1 is in the US");
}

#[test]
fn numeric_ranges() {
    // The documentation's example, and the event it matches.
    let f = filter(json!({
        "detail": {
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"numeric": ["=", 3.018e2]}]
        }
    }));
    let event = ec2_event(json!({"c-count": 5, "d-count": 7, "x-limit": 301.8}));
    assert!(f.matches(&event));
    for (field, value) in [
        ("c-count", json!(0)),
        ("c-count", json!(5.000001)),
        ("d-count", json!(10)),
        ("x-limit", json!(301.81)),
        ("c-count", json!("5")),
    ] {
        let mut e = event.clone();
        e["detail"][field] = value.clone();
        assert!(!f.matches(&e), "{field} = {value}");
    }
    let at_least = filter(json!({"n": [{"numeric": [">=", -1.5]}]}));
    assert!(at_least.matches(&json!({"n": -1.5})));
    assert!(!at_least.matches(&json!({"n": -1.6})));
    // Bounds in either order.
    let between = filter(json!({"n": [{"numeric": ["<", 10, ">", 0]}]}));
    assert!(between.matches(&json!({"n": 9})));
    assert!(!between.matches(&json!({"n": 10})));
}

#[test]
fn exists_matches_leaves_only() {
    let present = filter(json!({"detail": {"state": [{"exists": true}]}}));
    let absent = filter(json!({"detail": {"state": [{"exists": false}]}}));
    let with_state = ec2_event(json!({"state": "initializing"}));
    let without = ec2_event(json!({"instance-id": "i-1"}));
    assert!(present.matches(&with_state) && !present.matches(&without));
    assert!(absent.matches(&without) && !absent.matches(&with_state));
    // A missing parent: the field does not exist either.
    assert!(absent.matches(&json!({"source": "aws.ec2"})));
    // null is a value.
    assert!(present.matches(&ec2_event(json!({"state": null}))));
    // Not on intermediate nodes: an object is not a leaf value.
    let detail_exists = filter(json!({"detail": [{"exists": true}]}));
    assert!(!detail_exists.matches(&with_state));
    // An empty array holds no value.
    assert!(absent.matches(&ec2_event(json!({"state": []}))));
}

#[test]
fn empty_strings_and_null_are_values() {
    let f = filter(json!({
        "detail": {"eventVersion": [""], "responseElements": [null]}
    }));
    assert!(f.matches(&ec2_event(
        json!({"eventVersion": "", "responseElements": null})
    )));
    assert!(!f.matches(&ec2_event(
        json!({"eventVersion": "", "responseElements": "x"})
    )));
    assert!(
        !f.matches(&ec2_event(json!({"eventVersion": ""}))),
        "null is not a missing field"
    );
    let booleans = filter(json!({"ok": [true]}));
    assert!(booleans.matches(&json!({"ok": true})) && !booleans.matches(&json!({"ok": "true"})));
}

#[test]
fn an_array_field_matches_when_any_element_does() {
    // "Arrays in EventBridge event patterns": the intersection of the
    // pattern's values and the event's array must not be empty.
    let f = filter(json!({
        "resources": [
            "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
            "arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"
        ]
    }));
    assert!(f.matches(&ec2_event(json!({}))));
    let f =
        filter(json!({"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}));
    assert!(!f.matches(&ec2_event(json!({}))));
    // Any element, for every operator; nested arrays are flattened.
    let tags = filter(json!({"data": {"tags": [{"prefix": "vip-"}]}}));
    assert!(tags.matches(&json!({"data": {"tags": ["a", ["b", "vip-gold"]]}})));
    assert!(!tags.matches(&json!({"data": {"tags": ["a", "b"]}})));
    // A nested pattern over an array of objects: one element matches all of it.
    let lines = filter(json!({"data": {"lines": {"sku": ["A"], "qty": [{"numeric": [">", 1]}]}}}));
    assert!(lines
        .matches(&json!({"data": {"lines": [{"sku": "B", "qty": 5}, {"sku": "A", "qty": 2}]}})));
    assert!(!lines
        .matches(&json!({"data": {"lines": [{"sku": "B", "qty": 5}, {"sku": "A", "qty": 1}]}})));
}

#[test]
fn the_contracts_example_over_a_delivery_body() {
    let f = filter(json!({"data": {"amount": [{"numeric": [">", 100]}], "currency": ["eur"]}}));
    let body = |amount: Value, currency: &str| {
        json!({
            "id": "evt_1", "type": "invoice.paid", "created_at": "2026-11-27T06:00:00Z",
            "data": {"amount": amount, "currency": currency}
        })
    };
    assert!(f.matches(&body(json!(150), "eur")));
    assert!(!f.matches(&body(json!(100), "eur")));
    assert!(!f.matches(&body(json!(150), "usd")));
    let by_type = filter(json!({"type": ["invoice.paid"]}));
    assert!(by_type.matches(&body(json!(1), "eur")));
}

#[test]
fn invalid_patterns_are_refused_naming_their_path() {
    let cases = [
        (
            json!({"data": {"amount": [{"numeric": [">", "100"]}]}}),
            "filter.data.amount[0].numeric[1]",
        ),
        (
            json!({"data": {"amount": [{"numeric": ["!", 1]}]}}),
            "filter.data.amount[0].numeric[0]",
        ),
        (
            json!({"data": {"amount": [{"numeric": [">", 1, ">", 2]}]}}),
            "filter.data.amount[0].numeric[2]",
        ),
        (
            json!({"data": {"amount": [{"numeric": [">", 5, "<", 1]}]}}),
            "filter.data.amount[0].numeric",
        ),
        (
            json!({"data": {"amount": [{"numeric": ["=", 5, "<", 9]}]}}),
            "filter.data.amount[0].numeric",
        ),
        (
            json!({"data": {"amount": [{"numeric": [">"]}]}}),
            "filter.data.amount[0].numeric",
        ),
        (json!({"data": {"amount": 100}}), "filter.data.amount"),
        (json!({"data": {"amount": []}}), "filter.data.amount"),
        (json!({"data": {}}), "filter.data"),
        (json!({}), "filter"),
        (json!(["x"]), "filter"),
        (json!({"a": [["x"]]}), "filter.a[0]"),
        (
            json!({"a": ["x", {"suffix": ".png"}]}),
            "filter.a[1].suffix",
        ),
        (json!({"a": [{"wildcard": "*"}]}), "filter.a[0].wildcard"),
        (json!({"a": [{"nope": 1}]}), "filter.a[0].nope"),
        (
            json!({"a": [{"prefix": "x", "exists": true}]}),
            "filter.a[0]",
        ),
        (json!({"a": [{"prefix": 1}]}), "filter.a[0].prefix"),
        (json!({"a": [{"exists": "yes"}]}), "filter.a[0].exists"),
        (
            json!({"a": [{"anything-but": ["x", 1]}]}),
            "filter.a[0].anything-but",
        ),
        (
            json!({"a": [{"anything-but": []}]}),
            "filter.a[0].anything-but",
        ),
        (
            json!({"a": [{"anything-but": true}]}),
            "filter.a[0].anything-but",
        ),
        (
            json!({"a": [{"anything-but": {"suffix": "x"}}]}),
            "filter.a[0].anything-but.suffix",
        ),
        (
            json!({"a": [{"anything-but": {"prefix": 3}}]}),
            "filter.a[0].anything-but.prefix",
        ),
        (json!({"$or": [{"a": ["x"]}]}), "filter.$or"),
        (json!({"a b": {"c.d": 1}}), r#"filter["a b"]["c.d"]"#),
    ];
    for (pattern, path) in cases {
        let e = refused(pattern.clone());
        assert_eq!(e.path, path, "{pattern}: {e}");
        assert!(e.to_string().starts_with(path), "{e}");
    }
}

#[test]
fn patterns_are_bounded_in_size_depth_and_values() {
    let mut deep = json!({"x": ["y"]});
    for _ in 0..MAX_FILTER_DEPTH - 1 {
        deep = json!({ "a": deep });
    }
    filter(deep.clone());
    let too_deep = json!({ "a": deep });
    let e = refused(too_deep);
    assert!(e.reason.contains("deep"), "{e}");
    assert_eq!(e.path.matches(".a").count(), MAX_FILTER_DEPTH);

    let values: Vec<Value> = (0..MAX_FILTER_VALUES).map(|i| json!(i)).collect();
    filter(json!({ "n": values }));
    let values: Vec<Value> = (0..=MAX_FILTER_VALUES).map(|i| json!(i)).collect();
    let e = refused(json!({ "n": values }));
    assert_eq!(e.path, format!("filter.n[{MAX_FILTER_VALUES}]"));

    let big = "x".repeat(MAX_FILTER_BYTES);
    let e = refused(json!({ "s": [big] }));
    assert_eq!(e.path, "filter");
    assert!(e.reason.contains(&MAX_FILTER_BYTES.to_string()), "{e}");
}

#[test]
fn stored_patterns_read_back_equal() {
    let f = filter(json!({"data": {"amount": [{"numeric": [">", 100]}], "currency": ["eur"]}}));
    let back = EventFilter::from_json(&f.to_json()).unwrap();
    assert_eq!(back, f);
    assert_eq!(serde_json::to_value(&back).unwrap(), *f.pattern());
    assert!(EventFilter::from_json("{").is_err());
}

// ---- Fuzzing ----------------------------------------------------------------

/// A random JSON value of at most `depth` levels, drawn from a small
/// alphabet so patterns and bodies meet.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    let keys = [
        "a",
        "b",
        "data",
        "prefix",
        "numeric",
        "exists",
        "anything-but",
        "$or",
    ];
    let strings = ["", "a", "ab", "eur", ">", "<=", "=", "init", "x"];
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!(rng.random_range(-5i64..=5)),
        3 => json!(rng.random_range(-10.0..10.0)),
        4 => json!(strings[rng.random_range(0..strings.len())]),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..4))
                .map(|_| {
                    (
                        keys[rng.random_range(0..keys.len())].to_string(),
                        random_value(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

/// A random pattern: mostly well-formed, with garbage (any value) in a
/// tenth of its places.
fn random_pattern(rng: &mut StdRng, depth: u32) -> Value {
    if rng.random_range(0..10) == 0 {
        return random_value(rng, depth);
    }
    let keys = ["a", "b", "data"];
    let fields = (0..rng.random_range(1..3))
        .map(|_| {
            let key = keys[rng.random_range(0..keys.len())].to_string();
            let value = if depth > 0 && rng.random_bool(0.3) {
                random_pattern(rng, depth - 1)
            } else {
                Value::Array(
                    (0..rng.random_range(1..4))
                        .map(|_| random_match_value(rng))
                        .collect(),
                )
            };
            (key, value)
        })
        .collect();
    Value::Object(fields)
}

fn random_match_value(rng: &mut StdRng) -> Value {
    let scalar = |rng: &mut StdRng| random_value(rng, 0);
    match rng.random_range(0..8) {
        0 => json!({"prefix": scalar(rng)}),
        1 => json!({"exists": rng.random_bool(0.5)}),
        2 => {
            let ops = [">", ">=", "<", "<=", "=", "!"];
            let mut args = vec![
                json!(ops[rng.random_range(0..ops.len())]),
                json!(rng.random_range(-5..5)),
            ];
            if rng.random_bool(0.5) {
                args.push(json!(ops[rng.random_range(0..ops.len())]));
                args.push(scalar(rng));
            }
            json!({ "numeric": args })
        }
        3 => json!({"anything-but": scalar(rng)}),
        4 => json!({"anything-but": [scalar(rng), scalar(rng)]}),
        5 => json!({"anything-but": {"prefix": scalar(rng)}}),
        _ => scalar(rng),
    }
}

#[test]
fn random_patterns_and_bodies_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f11e);
    let mut accepted = 0;
    let mut matched = 0;
    for _ in 0..20_000 {
        let pattern = random_pattern(&mut rng, 3);
        let body = random_value(&mut rng, 5);
        if let Ok(f) = EventFilter::parse(&pattern) {
            accepted += 1;
            if f.matches(&body) {
                matched += 1;
            }
            // What is accepted reads back the same.
            assert_eq!(EventFilter::from_json(&f.to_json()).as_ref(), Ok(&f));
        }
    }
    // The loop explores both sides of each decision (4556 and 676 with
    // this seed).
    assert!(accepted > 1_000, "accepted {accepted}");
    assert!(
        matched > 100 && matched < accepted,
        "matched {matched} of {accepted}"
    );
}

/// A path through nested objects of `body` to a scalar leaf, if it has one.
fn random_leaf_path(rng: &mut StdRng, body: &Value) -> Option<(Vec<String>, Value)> {
    let mut path = Vec::new();
    let mut here = body;
    loop {
        match here {
            Value::Object(m) if !m.is_empty() => {
                let (k, v) = m.iter().nth(rng.random_range(0..m.len()))?;
                path.push(k.clone());
                here = v;
            }
            Value::Object(_) | Value::Array(_) => return None,
            leaf => return Some((path, leaf.clone())),
        }
    }
}

/// `{"p1": {"p2": [value]}}` for the path `[p1, p2]`.
fn pattern_at(path: &[String], value: Value) -> Value {
    path.iter().rev().fold(
        Value::Array(vec![value]),
        |inner, key| json!({ key.clone(): inner }),
    )
}

#[test]
fn a_body_matches_its_own_values_and_not_their_exclusion() {
    let mut rng = StdRng::seed_from_u64(0xbad_5eed);
    let mut checked = 0;
    for _ in 0..20_000 {
        let body = random_value(&mut rng, 5);
        let Some((path, leaf)) = random_leaf_path(&mut rng, &body) else {
            continue;
        };
        if path.is_empty() || path.len() > MAX_FILTER_DEPTH || path.iter().any(|k| k == "$or") {
            continue;
        }
        checked += 1;
        let exact = filter(pattern_at(&path, leaf.clone()));
        assert!(exact.matches(&body), "{body} against {exact:?}");
        let exists = filter(pattern_at(&path, json!({"exists": true})));
        assert!(exists.matches(&body), "{body} against {exists:?}");
        let missing = filter(pattern_at(&path, json!({"exists": false})));
        assert!(!missing.matches(&body), "{body} against {missing:?}");
        if leaf.is_string() || leaf.is_number() {
            let but = filter(pattern_at(&path, json!({ "anything-but": leaf })));
            assert!(!but.matches(&body), "{body} against {but:?}");
        }
    }
    assert!(checked > 1_000, "checked {checked}");
}

#[test]
fn deep_and_wide_bodies_are_matched_without_recursion_or_blow_up() {
    // Arrays nested far deeper than a pattern (or serde_json's parser)
    // allows: flattened iteratively.
    let mut deep = json!("vip-1");
    for _ in 0..5_000 {
        deep = Value::Array(vec![deep]);
    }
    let body = json!({ "data": { "tags": deep } });
    let f = filter(json!({"data": {"tags": [{"prefix": "vip-"}]}}));
    assert!(f.matches(&body));
    // Dropped piece by piece: serde_json's own drop recurses.
    let mut body = body;
    let mut v = body["data"]["tags"].take();
    while let Value::Array(mut items) = v {
        v = items.pop().unwrap_or(Value::Null);
    }

    // A wide body and the largest pattern: bounded work (values x leaves).
    let leaves: Vec<Value> = (0..20_000).map(|i| json!(format!("v{i}"))).collect();
    let body = json!({"data": {"tags": leaves, "lines": (0..2_000).map(|i| json!({"sku": i})).collect::<Vec<_>>()}});
    let values: Vec<Value> = (0..MAX_FILTER_VALUES / 2)
        .map(|i| json!(format!("w{i}")))
        .collect();
    let f = filter(json!({"data": {"tags": values, "lines": {"sku": [{"numeric": [">", 1e9]}]}}}));
    let started = std::time::Instant::now();
    assert!(!f.matches(&body));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
