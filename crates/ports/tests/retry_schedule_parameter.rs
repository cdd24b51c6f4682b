//! The template's `RetrySchedule` parameter accepts exactly the schedules the
//! sender accepts at start-up (`queue_settings::check_schedule`), within the
//! parameter's grammar (whole `s` up to 9999, `m` up to 720, `h` up to 12,
//! comma-separated, no spaces). A schedule the template let through and the
//! sender refused would deploy cleanly and then fail every sender start, so
//! every message would be redriven; one the sender takes and the template
//! refuses is a schedule nobody can deploy. Both directions are checked here,
//! against the template file itself.

use regex_lite::Regex;
use webhooks_domain::RetrySchedule;
use webhooks_ports::queue_settings::check_schedule;

/// The `AllowedPattern` of the `RetrySchedule` parameter, read from the
/// template's text (its YAML has CloudFormation tags no plain parser takes).
fn template_pattern() -> Regex {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let template = std::fs::read_to_string(path).expect("infra/template.yaml is readable");
    let section = template
        .split_once("\n  RetrySchedule:\n")
        .expect("the template has a RetrySchedule parameter")
        .1;
    let line = section
        .lines()
        .take_while(|l| !l.starts_with("  ") || l.starts_with("    "))
        .find_map(|l| l.trim().strip_prefix("AllowedPattern: "))
        .expect("RetrySchedule has an AllowedPattern");
    // A double-quoted YAML scalar: only `\\` escapes occur in it.
    let pattern = line.trim_matches('"').replace("\\\\", "\\");
    Regex::new(&pattern).expect("the pattern compiles")
}

fn sender_accepts(schedule: &str) -> bool {
    schedule
        .parse::<RetrySchedule>()
        .and_then(|s| check_schedule(&s))
        .is_ok()
}

/// Delays inside the parameter's grammar, from the shortest to the longest.
const IN_GRAMMAR: &[&str] = &[
    "0s", "1s", "5s", "59s", "9999s", "0m", "1m", "30m", "719m", "720m", "0h", "1h", "10h", "12h",
];

#[test]
fn the_template_accepts_exactly_the_schedules_the_sender_accepts() {
    let pattern = template_pattern();
    let mut checked = 0;
    let mut accepted = 0;
    for n in 0..=32 {
        // Every delay alike, and mixtures starting at each delay.
        let mut schedules: Vec<String> = IN_GRAMMAR.iter().map(|d| vec![*d; n].join(",")).collect();
        for start in 0..IN_GRAMMAR.len() {
            let mixed: Vec<&str> = (0..n)
                .map(|i| IN_GRAMMAR[(start + i * 5) % IN_GRAMMAR.len()])
                .collect();
            schedules.push(mixed.join(","));
        }
        for schedule in schedules {
            let template = pattern.is_match(&schedule);
            let sender = sender_accepts(&schedule);
            assert_eq!(
                template,
                sender,
                "{n} delays {schedule:?}: the template {} it, the sender {} it",
                if template { "accepts" } else { "refuses" },
                if sender { "accepts" } else { "refuses" },
            );
            checked += 1;
            accepted += usize::from(sender);
        }
    }
    // Both answers occur: the longest schedules are refused by both.
    assert!(
        accepted > 0 && accepted < checked,
        "{accepted} of {checked} accepted"
    );
    assert!(pattern.is_match("none"));
    assert!(sender_accepts("none"));
    assert!(sender_accepts(&RetrySchedule::default().to_string()));
}

#[test]
fn the_template_refuses_what_is_outside_its_grammar() {
    let pattern = template_pattern();
    for refused in [
        "13h", "721m", "10000s", "1d", "250ms", "5 s", "5s, 5m", "5s,", ",5s", "1.5h", "x", "5",
    ] {
        assert!(
            !pattern.is_match(refused),
            "the template accepts {refused:?}"
        );
    }
}
