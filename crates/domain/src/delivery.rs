//! One event on its way to one endpoint: its status, its attempts, and what
//! happens after each attempt.

use crate::event_type::EventType;
use crate::ids;
use crate::retry::{honour_retry_after, with_jitter, RetrySchedule};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Most of a response body kept in the attempt log.
pub const MAX_LOGGED_RESPONSE: usize = 1024;

/// How many of its latest attempts a delivery keeps in its log; older ones
/// are dropped (`attempt_count` still counts them), so a delivery retried by
/// hand again and again stays far below DynamoDB's 400 KB item limit.
pub const MAX_KEPT_ATTEMPTS: usize = 50;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Every attempt failed (or the endpoint answered 410); terminal until
    /// retried by hand.
    DeadLettered,
    /// Its endpoint was deleted; terminal until retried by hand.
    Canceled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::DeadLettered => "dead_lettered",
            DeliveryStatus::Canceled => "canceled",
        }
    }

    /// No further attempt happens on its own.
    pub fn is_terminal(self) -> bool {
        !matches!(self, DeliveryStatus::Pending)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status '{0}' (expected pending, delivered, dead_lettered or canceled)")]
pub struct UnknownStatus(pub String);

impl FromStr for DeliveryStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "delivered" => Ok(DeliveryStatus::Delivered),
            "dead_lettered" => Ok(DeliveryStatus::DeadLettered),
            "canceled" => Ok(DeliveryStatus::Canceled),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// One HTTP attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub response_body: Option<String>,
}

/// The delivery of one event to one endpoint. Exactly one exists per
/// (endpoint, event).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// `dlv_` + the endpoint's and the event's id bodies: unique per pair.
    pub id: String,
    pub org_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    /// The latest attempts, oldest first, at most [`MAX_KEPT_ATTEMPTS`].
    pub attempts: Vec<Attempt>,
    /// Every attempt ever recorded: the number of the last one.
    pub attempt_count: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The fence against a second retry chain: the queue message that owns
    /// this delivery's attempts (the SQS message id, stable across receives),
    /// and until when its current attempt holds the lease.
    pub chain: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
}

impl Delivery {
    /// A pending delivery of `event_id` to `endpoint_id`, due now.
    pub fn new(org_id: &str, endpoint_id: &str, event_id: &str, event_type: EventType) -> Delivery {
        Delivery::new_at(org_id, endpoint_id, event_id, event_type, Utc::now())
    }

    /// A pending delivery of `event_id` to `endpoint_id`, created and due at
    /// `now`. No retry is scheduled (`next_attempt_at` is unset until an
    /// attempt fails or it is queued again by hand), so the stores' index of
    /// scheduled retries is written only for deliveries that need one.
    pub fn new_at(
        org_id: &str,
        endpoint_id: &str,
        event_id: &str,
        event_type: EventType,
        now: DateTime<Utc>,
    ) -> Delivery {
        Delivery {
            id: delivery_id(endpoint_id, event_id),
            org_id: org_id.to_string(),
            endpoint_id: endpoint_id.to_string(),
            event_id: event_id.to_string(),
            event_type,
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            attempt_count: 0,
            next_attempt_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            chain: None,
            lease_until: None,
        }
    }
}

/// A pending delivery whose next attempt is this far overdue has lost its
/// queue message (SQS redrove it while the deliveries table was down, say)
/// and may be sent again by hand.
pub const STUCK_AFTER: chrono::Duration = chrono::Duration::minutes(15);

/// How a delivery is sent again by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Dead-lettered or canceled: it becomes pending and is queued again.
    Requeue,
    /// Pending but overdue by [`STUCK_AFTER`]: only its lost queue message is
    /// sent again.
    Unstick,
}

/// Why a delivery cannot be sent again by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the delivery is {status}; only dead_lettered or canceled deliveries, or pending ones overdue by {} minutes, can be retried", STUCK_AFTER.num_minutes())]
pub struct NotRetryable {
    pub status: DeliveryStatus,
}

impl Delivery {
    /// Whether another message than `message_id` owns this delivery's retry
    /// chain and can still carry it on at `now`: a chain whose next attempt
    /// is overdue by [`STUCK_AFTER`] has lost its message, and the next
    /// message's lease takes it over (the adapters' lease condition says the
    /// same in DynamoDB's terms).
    pub fn chain_live_elsewhere(&self, message_id: &str, now: DateTime<Utc>) -> bool {
        self.chain.as_deref().is_some_and(|c| c != message_id) && self.due_at() >= now - STUCK_AFTER
    }

    /// When its next attempt is due: the scheduled retry, or for one never
    /// attempted, its creation.
    pub fn due_at(&self) -> DateTime<Utc> {
        self.next_attempt_at.unwrap_or(self.created_at)
    }
}

impl Delivery {
    /// Whether, and how, this delivery may be sent again by hand at `now`.
    pub fn resend(&self, now: DateTime<Utc>) -> Result<Resend, NotRetryable> {
        match self.status {
            DeliveryStatus::DeadLettered | DeliveryStatus::Canceled => Ok(Resend::Requeue),
            DeliveryStatus::Pending if self.due_at() < now - STUCK_AFTER => Ok(Resend::Unstick),
            status => Err(NotRetryable { status }),
        }
    }

    /// The queue message that makes the sender attempt this delivery of
    /// `event`, whose request body is `payload` (`event.payload()`, made once
    /// when one event goes to many endpoints).
    pub fn task(&self, event: &crate::Event, payload: impl Into<crate::Payload>) -> DeliveryTask {
        DeliveryTask {
            delivery_id: self.id.clone(),
            org_id: self.org_id.clone(),
            endpoint_id: self.endpoint_id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type,
            payload: payload.into(),
            trace_id: event.trace_id.clone(),
            redriven: false,
            queued: None,
            stands_for: None,
        }
    }
}

/// The id of the delivery of `event_id` to `endpoint_id`.
pub fn delivery_id(endpoint_id: &str, event_id: &str) -> String {
    let ep = ids::body(endpoint_id, "ep").unwrap_or(endpoint_id);
    let evt = ids::body(event_id, "evt").unwrap_or(event_id);
    format!("dlv_{ep}{evt}")
}

/// The endpoint and event ids inside a delivery id, if it has the right shape.
pub fn parse_delivery_id(id: &str) -> Option<(String, String)> {
    let (ep, evt) = delivery_id_bodies(id)?;
    Some((format!("ep_{ep}"), format!("evt_{evt}")))
}

/// The 26-character body of a delivery's event id (what follows `evt_`),
/// read from the delivery's id without a copy, when the id is one.
pub fn event_body_of_delivery(id: &str) -> Option<&str> {
    delivery_id_bodies(id).map(|(_, evt)| evt)
}

/// The bodies of a delivery id's endpoint and event ids.
fn delivery_id_bodies(id: &str) -> Option<(&str, &str)> {
    let rest = id.strip_prefix("dlv_")?;
    if rest.len() != 52 || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(rest.split_at(26))
}

/// A queued instruction to attempt a delivery. It carries the payload, so
/// the sender need not read the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: String,
    pub org_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: EventType,
    /// The publishing request's X-Ray trace, for the sender's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Set on the message the redrive net sends for a delivery whose
    /// message SQS moved to the dead-letter queue: a second redrive
    /// dead-letters the delivery instead (`pipeline::redrive`). Renewals
    /// copy it with the body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redriven: bool,
    /// The key of the stream fan-out's note that lists this delivery
    /// ([`crate::queued`]): set on the message the stream's fan-out sent
    /// for a delivery it made no record of. That message alone makes the
    /// delivery's first attempt without a record, once the note is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<String>,
    /// Set on a copy sent for a message of a delivery without a record (a
    /// renewal's whose record could not be made first, the redrive net's):
    /// the id of the message that copy stands for, the one a note may name
    /// for the delivery. The copy decides by the note as that message
    /// would have, but never attempts without a record: it creates the
    /// record first (`pipeline::sender::unrecorded`). Copies of copies
    /// keep the first one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stands_for: Option<String>,
    /// The exact request body (raw JSON in the message: [`Payload`]). Last,
    /// so that a framed message ends with it ([`DeliveryTask::to_message`]).
    pub payload: crate::Payload,
}

/// A task message in the framed form: the payload's length first, then
/// the task, whose payload comes last ([`DeliveryTask::to_message`]).
#[derive(Serialize)]
struct Framed<'a> {
    payload_bytes: usize,
    #[serde(flatten)]
    task: &'a DeliveryTask,
}

/// How a framed task message begins: its payload's length follows.
const FRAME_START: &str = "{\"payload_bytes\":";
/// What stands right before a framed message's payload.
const PAYLOAD_KEY: &str = ",\"payload\":";

impl DeliveryTask {
    /// Makes this task a copy's that stands for the message `message_id`
    /// (see [`DeliveryTask::stands_for`]): a copy of a copy keeps the
    /// message the first one stood for.
    pub fn stand_for(&mut self, message_id: &str) {
        self.stands_for
            .get_or_insert_with(|| message_id.to_string());
    }

    /// The queue tenant of this task's message: its org
    /// ([`crate::tenant::org_tenant`]).
    pub fn tenant(&self) -> String {
        crate::tenant::org_tenant(&self.org_id)
    }

    /// The queue message's body: the task as JSON, the payload raw
    /// ([`crate::Payload`]), with every character SQS does not carry
    /// written as a `\uXXXX` escape. serde_json escapes the control
    /// characters but leaves U+FFFE and U+FFFF as they are; a payload that
    /// holds one is written as a string, so they can only stand inside a
    /// JSON string here, and the escape decodes back to the same payload,
    /// byte for byte.
    ///
    /// A raw payload (nearly all) is framed: the message begins with
    /// `{"payload_bytes":N,` and ends with `"payload":` and those N bytes,
    /// so the sender takes the payload from where it lies instead of
    /// reading it through again ([`DeliveryTask::from_message`]): that read
    /// was the sender's largest cost after the POST, once per delivery.
    /// The frame is still one JSON object of the task's fields, which any
    /// reader of task messages reads as before (an unknown field is
    /// ignored), and the sender reads a message without it as before.
    pub fn to_message(&self) -> String {
        let json = if self.payload.is_raw() {
            serde_json::to_string(&Framed {
                payload_bytes: self.payload.len(),
                task: self,
            })
        } else {
            serde_json::to_string(self)
        }
        .expect("a task of strings and a unit enum always serializes");
        // serde_json escapes every control character, so ASCII JSON (nearly
        // every task) is carried as it is; the check is a vectorized byte
        // scan, the character scan below only runs for the rest.
        if json.is_ascii() || json.chars().all(sqs_carries) {
            return json;
        }
        let mut out = String::with_capacity(json.len() + 16);
        for c in json.chars() {
            if sqs_carries(c) {
                out.push(c);
            } else {
                // Every character outside SQS's ranges is in the BMP.
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
        }
        out
    }

    /// The task a queue message carries. A framed message
    /// ([`DeliveryTask::to_message`]) is read without its payload (put
    /// back as `{}`), and the payload taken from where the frame says it
    /// lies; any other message is read whole, as every message was before
    /// the frame.
    pub fn from_message(body: &str) -> serde_json::Result<DeliveryTask> {
        match framed_payload(body) {
            Some(start) => {
                let (head, payload) = body.split_at(start);
                let mut task: DeliveryTask = serde_json::from_str(&format!("{head}{{}}}}"))?;
                task.payload = crate::Payload::framed(&payload[..payload.len() - 1]);
                Ok(task)
            }
            None => serde_json::from_str(body),
        }
    }
}

/// The delivery a task message is for, read off the front of the message
/// (its first field, after a frame's count) without reading the rest: for
/// those that follow messages by delivery without handling them.
pub fn delivery_of_message(body: &str) -> Option<&str> {
    let fields = match frame(body) {
        Some((_, fields)) => fields,
        None => body.strip_prefix('{')?,
    };
    let rest = fields.strip_prefix("\"delivery_id\":\"")?;
    rest.find('"').map(|end| &rest[..end])
}

/// A framed task message's count of payload bytes, and its fields after
/// the count; `None` unless `body` begins with the frame.
fn frame(body: &str) -> Option<(usize, &str)> {
    let rest = body.strip_prefix(FRAME_START)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (count, fields) = rest.split_at(digits);
    Some((count.parse().ok()?, fields.strip_prefix(',')?))
}

/// Where the payload of a framed task message starts: at `{`, its
/// `payload_bytes` before the final `}`, right after the `"payload":` key.
/// `None` for any other message.
fn framed_payload(body: &str) -> Option<usize> {
    let (len, fields) = frame(body)?;
    let end = body.len().checked_sub(1)?;
    let start = end.checked_sub(len)?;
    let payload = body.get(start..end)?;
    let framed = body.ends_with('}')
        && payload.starts_with('{')
        && payload.ends_with('}')
        && start > body.len() - fields.len()
        && body.get(..start)?.ends_with(PAYLOAD_KEY);
    framed.then_some(start)
}

/// Whether SQS carries `c` in a message body: #x9 #xA #xD #x20-#xD7FF
/// #xE000-#xFFFD #x10000-#x10FFFF.
pub(crate) fn sqs_carries(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// What came of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered (a redirect counts as an answer, not followed).
    Responded {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: timeout, refused connection, reset, TLS failure, ...
    Failed { error: String },
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    /// Try again after this delay.
    RetryAfter(Duration),
    /// The schedule is exhausted.
    DeadLetter,
    /// The receiver answered 410 Gone: disable the endpoint, dead-letter now.
    Gone,
}

/// Decides what follows attempt number `attempt` (1-based).
pub fn next_step(
    attempt: u32,
    result: &AttemptResult,
    schedule: &RetrySchedule,
    rng: &mut impl Rng,
) -> NextStep {
    let retry_after = match result {
        AttemptResult::Responded { status, .. } if (200..300).contains(status) => {
            return NextStep::Delivered
        }
        AttemptResult::Responded { status: 410, .. } => return NextStep::Gone,
        AttemptResult::Responded {
            status: 429 | 503,
            retry_after,
        } => *retry_after,
        _ => None,
    };
    match schedule.delay_after(attempt) {
        None => NextStep::DeadLetter,
        Some(delay) => {
            NextStep::RetryAfter(honour_retry_after(with_jitter(delay, rng), retry_after))
        }
    }
}

/// Cuts a response body to the logged length, on a character boundary.
pub fn truncate_body(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_LOGGED_RESPONSE)];
    let text = String::from_utf8_lossy(cut);
    text.trim_end_matches('\u{FFFD}').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_live_elsewhere_until_it_is_overdue_by_stuck_after() {
        let now = Utc::now();
        let ep = crate::ids::new_id("ep");
        let evt = crate::ids::new_id("evt");
        let mut d = Delivery::new("org", &ep, &evt, EventType::LeadWon);
        assert!(!d.chain_live_elsewhere("m2", now), "no chain yet");
        d.chain = Some("m1".into());
        d.next_attempt_at = Some(now + chrono::Duration::hours(1));
        assert!(d.chain_live_elsewhere("m2", now));
        assert!(!d.chain_live_elsewhere("m1", now), "its own chain");
        d.next_attempt_at = Some(now - STUCK_AFTER - chrono::Duration::seconds(1));
        assert!(
            !d.chain_live_elsewhere("m2", now),
            "a lost chain is taken over"
        );
    }

    #[test]
    fn resend_is_for_finished_failures_and_stuck_pending_deliveries() {
        let now = Utc::now();
        let ep = crate::ids::new_id("ep");
        let evt = crate::ids::new_id("evt");
        let mut d = Delivery::new("org", &ep, &evt, EventType::LeadWon);
        d.next_attempt_at = Some(now);
        assert_eq!(
            d.resend(now),
            Err(NotRetryable {
                status: DeliveryStatus::Pending
            })
        );
        d.next_attempt_at = Some(now - STUCK_AFTER - chrono::Duration::seconds(1));
        assert_eq!(d.resend(now), Ok(Resend::Unstick));
        // Never attempted: due since its creation.
        d.next_attempt_at = None;
        d.created_at = now;
        assert!(d.resend(now).is_err(), "just queued");
        d.created_at = now - STUCK_AFTER - chrono::Duration::seconds(1);
        assert_eq!(d.resend(now), Ok(Resend::Unstick));
        for s in [DeliveryStatus::DeadLettered, DeliveryStatus::Canceled] {
            d.status = s;
            assert_eq!(d.resend(now), Ok(Resend::Requeue));
        }
        d.status = DeliveryStatus::Delivered;
        let e = d.resend(now).unwrap_err();
        assert!(
            e.to_string().starts_with("the delivery is delivered;"),
            "{e}"
        );
    }

    #[test]
    fn a_task_carries_the_delivery_and_the_exact_payload() {
        let event = crate::Event::new(
            "org",
            EventType::InvoicePaid,
            serde_json::value::RawValue::from_string(r#"{"a":1}"#.into()).unwrap(),
        );
        let ep = crate::ids::new_id("ep");
        let d = Delivery::new("org", &ep, &event.id, event.event_type);
        let task = d.task(&event, event.payload());
        let message = task.to_message();
        // Raw: the payload's JSON as it is, nothing escaped.
        assert!(
            message.contains(&format!(r#""payload":{}"#, event.payload())),
            "{message}"
        );
        let back: DeliveryTask = serde_json::from_str(&message).unwrap();
        assert_eq!(back, task);
        assert_eq!(back.delivery_id, d.id);
        assert_eq!(back.payload, event.payload());
    }
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_publishing_trace_rides_the_task_and_is_left_out_when_absent() {
        let mut task = task_with_data("{}");
        assert!(!task.to_message().contains("trace_id"));
        task.trace_id = crate::event::trace_root(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        );
        assert_eq!(
            task.trace_id.as_deref(),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        let back: DeliveryTask = serde_json::from_str(&task.to_message()).unwrap();
        assert_eq!(back, task);
        assert_eq!(crate::event::trace_root("Root=<script>"), None);
        assert_eq!(crate::event::trace_root("Parent=1"), None);
    }

    fn task_with_data(data: &str) -> DeliveryTask {
        let raw = serde_json::value::RawValue::from_string(data.to_string()).unwrap();
        crate::event::validate_data(&raw).expect("data within the API's limit");
        let event = crate::Event::new("org_1", crate::EventType::InvoicePaid, raw);
        let d = Delivery::new(
            "org_1",
            &crate::ids::new_id("ep"),
            &event.id,
            event.event_type,
        );
        d.task(&event, event.payload())
    }

    #[test]
    fn only_the_redrive_nets_task_carries_its_mark() {
        let mut task = task_with_data(r#"{"a":1}"#);
        assert!(!task.redriven);
        assert!(!task.to_message().contains("redriven"), "absent unless set");
        task.redriven = true;
        let back: DeliveryTask = serde_json::from_str(&task.to_message()).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn a_task_message_escapes_what_sqs_refuses_and_decodes_to_the_same_payload() {
        let task = task_with_data("{\"x\":\"a\u{FFFE}b\u{FFFF}c\u{FFFD}\u{10FFFF}\"}");
        let message = task.to_message();
        assert!(message.chars().all(sqs_carries), "{message:?}");
        assert!(message.contains("\\ufffe") && message.contains("\\uffff"));
        let back: DeliveryTask = serde_json::from_str(&message).unwrap();
        assert_eq!(back.payload.as_bytes(), task.payload.as_bytes());
        assert!(back.payload.contains('\u{FFFF}'));
    }

    /// `task`'s message read by the sender and by a reader that knows
    /// nothing of the frame: both find `task`.
    fn reads_back(task: &DeliveryTask, message: &str) {
        assert_eq!(
            &DeliveryTask::from_message(message).unwrap(),
            task,
            "{message}"
        );
        let whole: DeliveryTask = serde_json::from_str(message).unwrap();
        assert_eq!(&whole, task, "{message}");
        assert_eq!(whole.payload.as_bytes(), task.payload.as_bytes());
    }

    #[test]
    fn a_raw_payload_is_framed_and_taken_from_where_the_frame_says() {
        let mut task = task_with_data(r#"{"a":",\"payload\":{}}","b":[1,{"c":null}]}"#);
        task.trace_id = Some("1-5759e988-bd862e3fe1be46a994272793".into());
        task.queued = Some("202612061931#04.0011223344556677.0".into());
        let message = task.to_message();
        let payload = task.payload.as_str();
        assert!(
            message.starts_with(&format!("{FRAME_START}{},", payload.len())),
            "{message}"
        );
        assert!(
            message.ends_with(&format!("{PAYLOAD_KEY}{payload}}}")),
            "{message}"
        );
        assert_eq!(
            framed_payload(&message),
            Some(message.len() - 1 - payload.len())
        );
        reads_back(&task, &message);
        // A renewal writes the payload it read out of a frame as it was.
        let renewed = DeliveryTask::from_message(&message).unwrap().to_message();
        assert_eq!(renewed, message);
    }

    #[test]
    fn a_message_without_the_frame_or_with_a_frame_that_does_not_fit_is_read_whole() {
        let task = task_with_data(r#"{"a":"}","b":{"c":"{"}}"#);
        let payload = task.payload.as_str();
        // As every message was written before the frame: the payload first.
        let unframed = serde_json::to_string(&task).unwrap();
        let old = format!(
            "{{\"payload\":{payload},{}",
            unframed
                .strip_prefix('{')
                .and_then(|m| m.strip_suffix(&format!("{PAYLOAD_KEY}{payload}}}")))
                .unwrap()
        ) + "}";
        assert_eq!(framed_payload(&old), None);
        reads_back(&task, &old);
        // A count that does not land on the payload, or is no count.
        let framed = task.to_message();
        let n = payload.len();
        for count in [
            (n - 1).to_string(),
            (n + 1).to_string(),
            (n * 100).to_string(),
            "0".into(),
            usize::MAX.to_string() + "0",
        ] {
            let told = framed.replacen(
                &format!("{FRAME_START}{n},"),
                &format!("{FRAME_START}{count},"),
                1,
            );
            assert_eq!(framed_payload(&told), None, "{count}");
            reads_back(&task, &told);
        }
        // A payload a task message carries as a string is not framed.
        let plain = task_with_data("{\"x\":\"\u{FFFE}\"}");
        assert!(!plain.to_message().starts_with(FRAME_START));
        reads_back(&plain, &plain.to_message());
        // Not a task at all: the error of reading it whole.
        assert!(DeliveryTask::from_message(&format!("{FRAME_START}2,\"payload\":{{}}}}")).is_err());
        assert!(DeliveryTask::from_message("").is_err());
    }

    #[test]
    fn a_messages_delivery_is_read_off_its_front_framed_or_not() {
        let task = task_with_data(r#"{"a":1}"#);
        let framed = task.to_message();
        let whole = serde_json::to_string(&task).unwrap();
        assert_ne!(framed, whole);
        for message in [&framed, &whole] {
            assert_eq!(
                delivery_of_message(message),
                Some(task.delivery_id.as_str())
            );
        }
        assert_eq!(delivery_of_message(r#"{"ops_notice":{}}"#), None);
        assert_eq!(delivery_of_message(""), None);
    }

    #[test]
    fn any_task_reads_back_from_its_message_framed_or_not() {
        use rand::seq::IndexedRandom;
        let mut rng = StdRng::seed_from_u64(24);
        let pieces = [
            "\"a\"",
            "1",
            "-2.5e3",
            "true",
            "null",
            "[]",
            "{}",
            "\"}\"",
            "\"{\"",
            "\",\\\"payload\\\":{\"",
            "\"\\u00e9\"",
            "\"é€😀\"",
            "\"\u{FFFD}\"",
            "\"\u{FFFF}\"",
            "[{\"k\":[]}]",
            "\" \\n \"",
        ];
        for i in 0..500 {
            let fields: Vec<String> = (0..rng.random_range(0..6))
                .map(|f| format!("\"f{f}\":{}", pieces.choose(&mut rng).unwrap()))
                .collect();
            let space = if i % 7 == 0 { "\n " } else { "" };
            let mut task = task_with_data(&format!("{{{space}{}{space}}}", fields.join(",")));
            task.redriven = rng.random_bool(0.3);
            task.stands_for = rng.random_bool(0.3).then(|| format!("msg-{i}"));
            task.queued = rng.random_bool(0.5).then(|| format!("x#0{i}.ab.0"));
            let message = task.to_message();
            assert!(message.chars().all(sqs_carries), "{message:?}");
            reads_back(&task, &message);
        }
    }

    #[test]
    fn a_64_kib_event_of_the_worst_characters_fits_one_queue_message() {
        // Each of these doubles in the task's JSON: a quote or a backslash
        // (escaped again), a newline between tokens, U+FFFE (3 bytes, then
        // 6 as an escape). SQS takes 256 KiB per message.
        const SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;
        let limit = crate::event::MAX_DATA_BYTES;
        for unit in ["\\\"", "\\\\", "\u{FFFE}", "\u{FFFF}"] {
            let head = "{\"x\":\"";
            let tail = "\"}";
            let n = (limit - head.len() - tail.len()) / unit.len();
            let data = format!("{head}{}{tail}", unit.repeat(n));
            let task = task_with_data(&data);
            let message = task.to_message();
            assert!(
                message.len() <= SQS_MAX_MESSAGE_BYTES,
                "{} bytes for {unit:?}",
                message.len()
            );
            assert!(message.chars().all(sqs_carries));
        }
        let newlines = format!("{{{}\"x\":1}}", "\n".repeat(limit - 7));
        assert!(task_with_data(&newlines).to_message().len() <= SQS_MAX_MESSAGE_BYTES);
    }

    fn responded(status: u16) -> AttemptResult {
        AttemptResult::Responded {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn ids_are_unique_per_pair_and_parse_back() {
        let ep = ids::new_id("ep");
        let evt = ids::new_id("evt");
        let id = delivery_id(&ep, &evt);
        assert_eq!(parse_delivery_id(&id), Some((ep.clone(), evt.clone())));
        assert_ne!(id, delivery_id(&ep, &ids::new_id("evt")));
        assert_eq!(parse_delivery_id("dlv_nope"), None);
        assert_eq!(parse_delivery_id(&id.replace("dlv_", "dlx_")), None);
    }

    #[test]
    fn outcomes_follow_the_contract() {
        let s: RetrySchedule = "1s,2s,4s".parse().unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            next_step(1, &responded(204), &s, &mut rng),
            NextStep::Delivered
        );
        assert_eq!(next_step(1, &responded(410), &s, &mut rng), NextStep::Gone);
        assert!(matches!(
            next_step(1, &responded(500), &s, &mut rng),
            NextStep::RetryAfter(d) if d >= Duration::from_millis(800) && d <= Duration::from_millis(1200)
        ));
        // A redirect is a failure, not followed.
        assert!(matches!(
            next_step(3, &responded(302), &s, &mut rng),
            NextStep::RetryAfter(_)
        ));
        assert_eq!(
            next_step(4, &responded(500), &s, &mut rng),
            NextStep::DeadLetter
        );
        let failed = AttemptResult::Failed {
            error: "timeout".into(),
        };
        assert!(matches!(
            next_step(2, &failed, &s, &mut rng),
            NextStep::RetryAfter(_)
        ));
        assert_eq!(next_step(4, &failed, &s, &mut rng), NextStep::DeadLetter);
    }

    #[test]
    fn retry_after_applies_to_429_and_503_only() {
        let s: RetrySchedule = "1s".parse().unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for status in [429, 503] {
            let r = AttemptResult::Responded {
                status,
                retry_after: Some(Duration::from_secs(30)),
            };
            assert_eq!(
                next_step(1, &r, &s, &mut rng),
                NextStep::RetryAfter(Duration::from_secs(30))
            );
        }
        let r = AttemptResult::Responded {
            status: 500,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert!(
            matches!(next_step(1, &r, &s, &mut rng), NextStep::RetryAfter(d) if d < Duration::from_secs(2))
        );
    }

    #[test]
    fn bodies_are_cut_to_one_kib() {
        assert_eq!(truncate_body(&[b'a'; 5000]).len(), 1024);
        let mut s = "a".repeat(1023).into_bytes();
        s.extend("é".as_bytes());
        assert_eq!(truncate_body(&s), "a".repeat(1023));
        assert_eq!(
            DeliveryStatus::from_str("dead_lettered"),
            Ok(DeliveryStatus::DeadLettered)
        );
        assert!(DeliveryStatus::from_str("done").is_err());
    }
}
