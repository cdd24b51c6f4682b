//! When a failed delivery is tried again: a schedule of delays, jitter, and
//! `Retry-After` within bounds.

use rand::Rng;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest `Retry-After` honoured: 12 hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);

/// The longest the sender hides a message from one receive: SQS refuses to
/// hide a message for more than 12 h from its receipt, and the receipt
/// happened up to a minute before the sender saw it (batching window,
/// invocation). A longer delay takes more than one receive: the message is
/// hidden again, without an attempt, each time it comes back early.
pub const MAX_HIDE_PER_RECEIVE: Duration = Duration::from_secs(43_200 - 60);

/// What one receive is counted to cover when checking that a schedule fits
/// the queue: [`MAX_HIDE_PER_RECEIVE`] less a minute for the handler's own
/// work before it hides the message.
const PLANNED_HOP: Duration = Duration::from_secs(43_200 - 120);

/// The most a delay grows with jitter (+20 %).
const MAX_JITTER: f64 = 1.2;

/// The delays before each retry. `1s,2s,4s` means four attempts in all: the
/// first, then one after each delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// A schedule string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry schedule '{input}': {reason}")]
pub struct ScheduleError {
    input: String,
    reason: String,
}

impl Default for RetrySchedule {
    /// About three days of attempts: 12 in all.
    fn default() -> Self {
        "5s,5m,30m,2h,5h,10h,12h,12h,12h,12h,8h"
            .parse()
            .expect("the default schedule is valid")
    }
}

impl RetrySchedule {
    /// A schedule from explicit delays.
    pub fn new(delays: Vec<Duration>) -> Self {
        RetrySchedule { delays }
    }

    /// How many attempts the schedule allows, the first included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// The delays, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The delay after attempt `attempt` (1-based) failed, before jitter; `None`
    /// when that was the last attempt.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.delays.get(index).copied()
    }

    /// The total of all delays: how long a delivery can stay pending.
    pub fn total(&self) -> Duration {
        self.delays.iter().sum()
    }

    /// The longest each wait can be: the delay with +20 % jitter, or a
    /// `Retry-After` of up to [`MAX_RETRY_AFTER`] if that is longer.
    fn worst_waits(&self) -> impl Iterator<Item = Duration> + '_ {
        self.delays
            .iter()
            .map(|d| d.mul_f64(MAX_JITTER).max(MAX_RETRY_AFTER))
    }

    /// The most receives of one queue message a delivery can take: one per
    /// attempt, and one more for each time a wait longer than one receive
    /// can hide it ([`MAX_HIDE_PER_RECEIVE`]) brings it back early.
    pub fn max_receives(&self) -> u32 {
        let hop = PLANNED_HOP.as_secs_f64();
        let receives: f64 = self
            .worst_waits()
            .map(|w| (w.as_secs_f64() / hop).ceil().max(1.0))
            .sum();
        // At most a few hundred delays fit a u32 with room to spare; a
        // schedule so long fails the check anyway.
        u32::try_from(receives as u64 + 1).unwrap_or(u32::MAX)
    }

    /// The longest a delivery's message can stay on the queue: every wait
    /// at its longest.
    pub fn max_span(&self) -> Duration {
        self.worst_waits().sum()
    }

    /// Refuses a schedule the queue cannot carry: one whose attempts and
    /// re-hides need more receives than the redrive's `max_receive_count`
    /// (SQS would move the message to the dead-letter queue with the delivery
    /// still pending), or whose waits outlast the queue's `retention` (SQS
    /// would drop the message).
    pub fn check_fits_queue(
        &self,
        max_receive_count: u32,
        retention: Duration,
    ) -> Result<(), ScheduleError> {
        let err = |reason: String| ScheduleError {
            input: self.to_string(),
            reason,
        };
        let receives = self.max_receives();
        if receives > max_receive_count {
            return Err(err(format!(
                "it can take {receives} receives of a message ({} attempts, and one more each time a wait longer than SQS can hide a message at once, up to 12 h per Retry-After, comes back early), more than the queue's maxReceiveCount of {max_receive_count}",
                self.max_attempts()
            )));
        }
        let span = self.max_span();
        if span > retention {
            return Err(err(format!(
                "its waits can add up to {:.1} days (delays +20 % jitter, or 12 h per Retry-After), more than the queue's retention of {:.1} days",
                span.as_secs_f64() / 86400.0,
                retention.as_secs_f64() / 86400.0
            )));
        }
        Ok(())
    }
}

/// Spreads a delay over ±20 % so that endpoints that failed together are not
/// retried together. Delays longer than SQS can hide a message at once are
/// kept: the sender hides the message again each time it comes back early.
pub fn with_jitter(delay: Duration, rng: &mut impl Rng) -> Duration {
    let factor: f64 = rng.random_range(0.8..=MAX_JITTER);
    delay.mul_f64(factor)
}

/// The delay to use when the receiver said `Retry-After`: at least the
/// scheduled delay, and the asked delay up to [`MAX_RETRY_AFTER`].
pub fn honour_retry_after(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.clamp(scheduled, MAX_RETRY_AFTER.max(scheduled)),
        None => scheduled,
    }
}

/// Reads a `Retry-After` header: delay-seconds, or an HTTP-date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`) taken as the time from `now` (zero
/// when it has passed). Anything else is treated as absent.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

impl FromStr for RetrySchedule {
    type Err = ScheduleError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ScheduleError {
            input: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed == "none" {
            return Ok(RetrySchedule { delays: Vec::new() });
        }
        let mut delays = Vec::new();
        for part in trimmed.split(',') {
            let d = parse_duration(part.trim()).map_err(|e| err(e.to_string()))?;
            delays.push(d);
        }
        Ok(RetrySchedule { delays })
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.delays.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// A text that is not a duration; each names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("'{0}' is not a duration like 5s, 10m or 2h")]
    NotANumber(String),
    #[error("'{0}' has an unknown unit (use ms, s, m, h or d)")]
    UnknownUnit(String),
    #[error("'{0}' is out of range")]
    OutOfRange(String),
}

/// Reads `250ms`, `5s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(DurationError::UnknownUnit(s.to_string())),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(DurationError::OutOfRange(s.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn three_delays_mean_four_attempts() {
        let s: RetrySchedule = "1s,2s,4s".parse().unwrap();
        assert_eq!(s.max_attempts(), 4);
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(1)));
        assert_eq!(s.delay_after(3), Some(Duration::from_secs(4)));
        assert_eq!(s.delay_after(4), None);
        assert_eq!(s.delay_after(0), None);
        assert_eq!(s.to_string(), "1s,2s,4s");
    }

    #[test]
    fn default_is_about_three_days_and_fits_the_queue() {
        let s = RetrySchedule::default();
        let days = s.total().as_secs_f64() / 86400.0;
        assert!((2.9..=3.2).contains(&days), "{days} days");
        // 12 attempts; the 10 h and 12 h delays (up to 14.4 h with jitter),
        // and any wait stretched by a 12 h Retry-After, take two receives.
        assert_eq!(s.max_receives(), 23);
        // Every wait at its longest: 141.6 h.
        assert!((s.max_span().as_secs_f64() - 509_760.0).abs() < 1.0);
        s.check_fits_queue(30, Duration::from_secs(1_209_600))
            .expect("the default schedule fits maxReceiveCount 30 and 14 days");
        // Exponential at first: each early delay is longer than the last.
        assert!(s.delays().windows(2).take(5).all(|w| w[1] > w[0]));
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        let e = "1s,soon".parse::<RetrySchedule>().unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
        let long: RetrySchedule = "1d".parse().unwrap();
        assert_eq!(long.delays(), [Duration::from_secs(86400)]);
        assert!("5x".parse::<RetrySchedule>().is_err());
        assert_eq!(
            "250ms".parse::<RetrySchedule>().unwrap().delays()[0],
            Duration::from_millis(250)
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent_however_long_the_delay() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_secs(100);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = with_jitter(base, &mut rng);
            assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(120));
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 100, "jitter must vary");
        // Long delays are not cut at SQS's 12 h: they take several receives.
        let day = Duration::from_secs(86400);
        let d = with_jitter(day, &mut rng);
        assert!(d >= day.mul_f64(0.8) && d <= day.mul_f64(1.2), "{d:?}");
    }

    #[test]
    fn schedules_the_queue_cannot_carry_are_refused_naming_the_limit() {
        let retention = Duration::from_secs(1_209_600);
        // Fifteen waits that a 12 h Retry-After can stretch: two receives each.
        let many: RetrySchedule = vec!["1s"; 15].join(",").parse().unwrap();
        let e = many.check_fits_queue(30, retention).unwrap_err();
        assert!(e.to_string().contains("maxReceiveCount of 30"), "{e}");
        assert!(e.to_string().contains("31 receives"), "{e}");
        // With SQS's 14 days, 30 receives run out first; a shorter
        // retention shows the other check.
        let long: RetrySchedule = "2d,2d".parse().unwrap();
        let e = long
            .check_fits_queue(30, Duration::from_secs(4 * 86400))
            .unwrap_err();
        assert!(e.to_string().contains("retention of 4.0 days"), "{e}");
        let fits: RetrySchedule = "1d,2d".parse().unwrap();
        assert_eq!(fits.max_receives(), 1 + 3 + 5);
        fits.check_fits_queue(30, retention).expect("fits");
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let s = Duration::from_secs(5);
        assert_eq!(honour_retry_after(s, None), s);
        assert_eq!(
            honour_retry_after(s, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(honour_retry_after(s, Some(Duration::from_secs(1))), s);
        assert_eq!(
            honour_retry_after(s, Some(Duration::from_secs(999_999))),
            MAX_RETRY_AFTER
        );
        let now = chrono::DateTime::parse_from_rfc3339("2026-10-21T07:26:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO),
            "a date that has passed means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
