//! What the pipeline needs from storage and queues, one small trait per need.
//! Two adapters stand behind each: DynamoDB/SQS (`webhooks-aws`) and memory
//! (`webhooks-memory`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use webhooks_domain::queued::QueuedNote;
use webhooks_domain::{
    Attempt, Delivery, DeliveryStatus, Endpoint, EndpointSummary, Event, Subscriber,
};

/// A failure of a backend call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Throttling, a network error, a timeout: the same call may succeed later.
    #[error("transient backend error: {0}")]
    Transient(String),
    /// The call can never succeed as made (bad request, missing resource).
    #[error("backend error: {0}")]
    Permanent(String),
    /// A pagination cursor that this backend did not hand out.
    #[error("invalid cursor")]
    InvalidCursor,
}

impl BackendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// Pagination cursors are opaque to callers: the last key of a page,
/// base64url-encoded.
pub mod cursor {
    use super::BackendError;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    /// Wraps the last key of a page.
    pub fn encode(key: &str) -> String {
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    }

    /// Unwraps a cursor made by [`encode`] whose key starts with `prefix`.
    pub fn decode(cursor: &str, prefix: &str) -> Result<String, BackendError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| BackendError::InvalidCursor)?;
        let key = String::from_utf8(bytes).map_err(|_| BackendError::InvalidCursor)?;
        if key.starts_with(prefix) && key.len() <= 256 {
            Ok(key)
        } else {
            Err(BackendError::InvalidCursor)
        }
    }

    /// Wraps a key of two parts, neither holding a space (an index's sort
    /// key and the item's id).
    pub fn encode_pair(first: &str, second: &str) -> String {
        encode(&format!("{first} {second}"))
    }

    /// Unwraps a cursor made by [`encode_pair`].
    pub fn decode_pair(cursor: &str) -> Result<(String, String), BackendError> {
        let key = decode(cursor, "")?;
        key.split_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or(BackendError::InvalidCursor)
    }
}

pub mod event_log;
pub mod queue_limits;

pub use event_log::{EventLogQuery, EventSummary};

/// What time it is. Every step of the pipeline asks this instead of the
/// system clock, so a simulation can run days of retries on a virtual one.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock: what every deployed function uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

impl SystemClock {
    /// The system clock behind the [`Clock`] port.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }
}

/// How the delivery queues are set up, the same in the SAM template, in
/// `--create-resources` and in the memory queue that stands in for SQS.
pub mod queue_settings {
    /// Receives of one message before SQS moves it to the dead-letter queue. The
    /// sender dead-letters explicitly after its schedule; this is the net under it.
    pub const MAX_RECEIVE_COUNT: u32 = 30;
    /// Visibility timeout of the delivery queue, in seconds (six times the
    /// sender's 30 s function timeout).
    pub const DELIVERY_QUEUE_VISIBILITY_SECS: u32 = 180;
    /// Retention of both queues: the SQS maximum, 14 days.
    pub const QUEUE_RETENTION_SECS: u32 = 1_209_600;

    /// Refuses a retry schedule these queues cannot carry (more receives
    /// than [`MAX_RECEIVE_COUNT`], or longer than [`QUEUE_RETENTION_SECS`]).
    pub fn check_schedule(
        schedule: &webhooks_domain::RetrySchedule,
    ) -> Result<(), webhooks_domain::retry::ScheduleError> {
        schedule.check_fits_queue(
            MAX_RECEIVE_COUNT,
            std::time::Duration::from_secs(u64::from(QUEUE_RETENTION_SECS)),
        )
    }
}

/// How long the tables keep what their TTL removes, the same in DynamoDB
/// (the items' `expires_at`) and in the memory backend that stands in for it.
pub mod table_retention {
    /// Events, from their creation; deliveries, from their creation, their
    /// last move to pending, or their last attempt recorded while pending,
    /// whichever is latest (so a delivery being retried never expires).
    pub const RECORD_DAYS: i64 = 30;
    /// Inbound records and messages, from their receipt.
    pub const INBOUND_DAYS: i64 = 90;
    /// Each endpoint's hourly stats bucket, from its hour.
    pub const STATS_DAYS: i64 = 35;
}

/// Most deliveries one call of [`DeliveryStore::list_for_endpoint`]
/// examines, matching its status filter or not: the bound on one request's
/// reads, however many deliveries the endpoint has. A filtered page can end
/// short of its limit, empty even, with a `next_cursor` to carry on from.
pub const DELIVERIES_EXAMINED_PER_PAGE: usize = 1000;

/// One page of a listing; `next_cursor` fetches the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page of a listing read with one item more than `limit`: that
    /// extra item tells whether another page exists, and the cursor is the
    /// `key` of the last item kept.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> &str) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|item| cursor::encode(key(item)))
        } else {
            None
        };
        Page { items, next_cursor }
    }

    /// The page of a listing that stopped examining keys at
    /// `last_examined` (`None`: at the end of the listing), keeping the
    /// matches `items`, read for one more than `limit`: a full page goes on
    /// after its last kept item, a short one after the last key examined.
    pub fn from_examined(
        items: Vec<T>,
        limit: usize,
        key: impl Fn(&T) -> &str,
        last_examined: Option<&str>,
    ) -> Self {
        if items.len() > limit {
            return Page::from_overfetch(items, limit, key);
        }
        Page {
            items,
            next_cursor: last_examined.map(cursor::encode),
        }
    }
}

/// One adapter behind every port: what a backend provides, and all that the
/// functions and `webhooks dev` are built from. `webhooks_aws::adapters` and
/// `webhooks_memory::MemoryBackend` make one each.
#[derive(Clone)]
pub struct Adapters {
    pub events: Arc<dyn EventStore>,
    pub endpoints: Arc<dyn EndpointStore>,
    pub deliveries: Arc<dyn DeliveryStore>,
    pub cursors: Arc<dyn CursorStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub inbound: Arc<dyn InboundStore>,
    /// Each endpoint's hourly delivery figures.
    pub stats: Arc<dyn EndpointStatsStore>,
    /// The delivery queue that the sender consumes.
    pub queue: Arc<dyn Queue>,
    /// Where the messages of dead-lettered deliveries go.
    pub dead_letters: Arc<dyn Queue>,
    /// The time the steps go by (the system clock, but in simulations).
    pub clock: Arc<dyn Clock>,
}

/// A stored item of the event stream that is no event this code can read
/// (damaged, or written by a version that stores events otherwise). A
/// listing names it by its id, in its place, so that a reader can pass over
/// it instead of stopping there for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    pub event_id: String,
    /// What made it unreadable.
    pub error: String,
}

/// One item of an org's event stream as listed: an event, or one that
/// cannot be read.
pub type Listed = std::result::Result<Event, Undecodable>;

/// The event stream: every platform event, per organization, in id order.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Writes the event unless one with its id exists; `false` if it did.
    async fn put_if_absent(&self, event: &Event) -> Result<bool>;
    async fn get(&self, org_id: &str, event_id: &str) -> Result<Option<Event>>;
    /// Several of the org's events at once (the reconciler's, for a page of
    /// deliveries), in no particular order: missing ones are left out, one
    /// that cannot be read is listed as [`Undecodable`].
    async fn get_many(&self, org_id: &str, event_ids: &[String]) -> Result<Vec<Listed>>;
    /// The org's events with ids greater than `after`, in id order, at most
    /// `limit` (fewer only at the end of the stream). An item that cannot
    /// be read is listed in its place as [`Undecodable`]; the call fails
    /// only when the listing itself does.
    async fn list_after(&self, org_id: &str, after: &str, limit: usize) -> Result<Vec<Listed>>;
    /// A page of the org's event log, newest first: one read of at most
    /// [`EventLogQuery::read_budget`] events (and [`QUERY_PAGE_BYTES`]) in
    /// [`EventLogQuery::id_range`], paged by [`EventLogQuery::page`].
    ///
    /// [`QUERY_PAGE_BYTES`]: event_log::QUERY_PAGE_BYTES
    async fn log_page(&self, org_id: &str, query: &EventLogQuery) -> Result<Page<EventSummary>>;
}

/// Reads one endpoint (the sender, the requeue use cases).
#[async_trait]
pub trait EndpointLookup: Send + Sync {
    async fn get(&self, org_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>>;
}

/// Every endpoint of an org: the fan-out's view, without URLs or secrets.
#[async_trait]
pub trait OrgEndpoints: Send + Sync {
    async fn list_all(&self, org_id: &str) -> Result<Vec<Subscriber>>;
}

/// What deliveries teach about an endpoint's health (the sender).
#[async_trait]
pub trait EndpointHealth: Send + Sync {
    /// Turns an enabled endpoint off with a reason, leaving everything else
    /// as it is; `true` only for the write that turned it off (one
    /// conditional write: `false` when it was already disabled or is gone).
    async fn disable(&self, org_id: &str, endpoint_id: &str, reason: &str) -> Result<bool>;
    /// Records the start of a run of failures (kept if one is already open),
    /// or its end (`None`).
    async fn set_failing_since(
        &self,
        org_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<()>;
}

/// Registered endpoints, per organization: all the API manages. The
/// pipeline's steps ask only for the narrower traits above.
#[async_trait]
pub trait EndpointStore: EndpointLookup + OrgEndpoints + EndpointHealth {
    /// Stores a new endpoint unless its org already has `max_per_org`
    /// endpoints: then [`Created::LimitReached`] and nothing is written.
    /// The count and the write are one atomic step, so concurrent creates
    /// never take an org past the limit; a delete frees a slot. Another
    /// org's endpoints never count.
    async fn create(&self, endpoint: &Endpoint, max_per_org: u32) -> Result<Created>;
    /// A page of the org's endpoints, oldest first, without their secrets:
    /// no secret is opened, so one that does not open cannot fail it.
    async fn list(
        &self,
        org_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<EndpointSummary>>;
    /// One of the org's endpoints without its secrets, opening none: what
    /// the reads that show no secret (and the checks that an endpoint is
    /// the caller's) need.
    async fn summary(&self, org_id: &str, endpoint_id: &str) -> Result<Option<EndpointSummary>>;
    /// Replaces a stored endpoint read at `endpoint.version`, storing it
    /// with the next version; refused ([`Updated::Conflict`], nothing
    /// written) when another write came in since that read.
    async fn update(&self, endpoint: &Endpoint) -> Result<Updated>;
    /// Removes an endpoint, freeing its slot in the org's count; `false` if
    /// there was none.
    async fn delete(&self, org_id: &str, endpoint_id: &str) -> Result<bool>;
}

/// What [`EndpointStore::create`] did: a refusal must not pass for success.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Stored; it counts toward its org's endpoints.
    Written,
    /// Not stored: the org already has the most endpoints allowed.
    LimitReached,
}

/// What a versioned update of an endpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// Written; the stored version is now the one read plus one.
    Written,
    /// The endpoint no longer exists.
    NotFound,
    /// The endpoint was written since it was read: read it again.
    Conflict,
}

/// The fence of one attempt: what [`DeliveryStore::lease`] answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Lease {
    /// The caller holds the delivery's attempt `attempts_made + 1` until the
    /// lease ends; the delivery as it now stands.
    Granted(Delivery),
    /// Not taken: the delivery as it stands (`None` if it is gone). It is
    /// finished, another attempt holds a live lease, its attempt count moved
    /// on, or another queue message owns its retry chain.
    Refused(Option<Delivery>),
}

/// Deliveries: exactly one per (endpoint, event).
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Creates the delivery unless its (endpoint, event) already has one, in
    /// which case the existing one is returned and nothing is written.
    async fn create_if_absent(&self, delivery: &Delivery) -> Result<Option<Delivery>>;
    async fn get(&self, delivery_id: &str) -> Result<Option<Delivery>>;
    /// Several deliveries at once; missing ones are left out.
    async fn get_many(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>>;
    /// [`DeliveryStore::get_many`], read eventually consistently: half
    /// the read units in DynamoDB, and it may not see a write of the last
    /// second or so (a record just created may be left out, one just
    /// updated read as it was). Only for a read whose caller states what
    /// such a miss can cost (the sender's first receive of a noted
    /// message). Stores without the distinction read as `get_many` does,
    /// which an eventually consistent read may always do.
    async fn get_many_eventually(&self, delivery_ids: &[String]) -> Result<Vec<Delivery>> {
        self.get_many(delivery_ids).await
    }
    /// Takes the lease on a pending delivery's next attempt for the queue
    /// message `chain`, one conditional write: granted only if the delivery
    /// is pending, has `attempts_made` attempts, no live lease (none, or one
    /// ended before `now`), and its chain is unset, is `chain`, or is stale
    /// (the next attempt overdue since before `stale_before`: the owning
    /// message was lost). The lease makes `chain` the owner.
    async fn lease(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Lease>;
    /// Appends attempt number `n` and moves a pending delivery to `status`,
    /// releasing the lease. `false` (and nothing written) unless the delivery
    /// is pending with exactly `n - 1` attempts: attempt numbers run 1, 2, 3
    /// without gaps or repeats. Keeps the last [`MAX_KEPT_ATTEMPTS`] attempts.
    /// A delivery left pending has its time to live renewed from the
    /// attempt's time.
    ///
    /// An attempt made without a lease ([`AttemptUpdate::unleased_by`] set)
    /// also needs the delivery's chain to be that message. Such an update
    /// to [`DeliveryStatus::Canceled`] records an attempt whose delivery
    /// was canceled (its endpoint deleted) while it was made: it needs the
    /// delivery canceled instead of pending, and leaves it canceled, with
    /// the attempt in its log and its error as the last.
    ///
    /// [`MAX_KEPT_ATTEMPTS`]: webhooks_domain::delivery::MAX_KEPT_ATTEMPTS
    async fn record_attempt(&self, delivery_id: &str, update: &AttemptUpdate) -> Result<bool>;
    /// Hands a never-attempted delivery's retry chain from the queue
    /// message `from` to `to`, a copy of it sent to renew it, one
    /// conditional write: only if the delivery is pending, never attempted,
    /// its chain is `from` and it holds no live lease at `now`. The chain
    /// moves with a lease until `until`, so that no attempt of `to` starts
    /// while one made by `from` without a lease may still run. `false`
    /// (and nothing written) otherwise.
    async fn hand_over(
        &self,
        delivery_id: &str,
        from: &str,
        to: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Moves a delivery whose status is one of `from` to `to`; returns it as
    /// updated, or `None` if it was not in one of those states.
    ///
    /// A live lease (one not ended before now) is an attempt under way, and
    /// is never taken from it: a pending delivery under a live lease is not
    /// moved out of `pending` (`None`), so the attempt can record its
    /// outcome. Moving to `pending` clears the chain and an ended lease, so
    /// the next queue message starts a new chain (and any older message
    /// finds it owned); a live lease stays, with its chain, and its attempt
    /// carries the delivery on. Moving to `pending` also schedules the next
    /// attempt now and renews the delivery's time to live (its
    /// `table_retention::RECORD_DAYS` start again).
    async fn transition(
        &self,
        delivery_id: &str,
        from: &[DeliveryStatus],
        to: DeliveryStatus,
    ) -> Result<Option<Delivery>>;
    /// A page of the ids of the org's pending deliveries whose next attempt
    /// was due before `before`, most overdue first, at most `limit`, after
    /// the page that handed out `cursor`: what the reconciler checks for a
    /// lost queue message. The cursor holds the last id's place in the
    /// index, so the next page follows it even if that delivery has left
    /// the index meanwhile.
    async fn overdue(
        &self,
        org_id: &str,
        before: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<String>>;
    /// Notes that a new queue message was sent for a pending delivery that
    /// lost its own, one conditional write: only if the delivery is still
    /// pending with `attempts_made` attempts, still overdue (due before
    /// `stale_before`: no attempt was recorded since it was read) and holds
    /// no live lease at `now`. Its next attempt becomes `now`, so it is
    /// overdue again only if the new message is lost too, and its chain is
    /// cleared, so the new message's lease takes the chain over (and the
    /// old message, if it turns up after all, races it for the lease as
    /// before: one of them wins). `false` (and nothing written) otherwise.
    async fn mark_requeued(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool>;
    /// Notes that the queue message `chain` of a delivery with
    /// `attempts_made` attempts was deferred by its endpoint's limits until
    /// `until`, one conditional write, on the same condition as
    /// [`DeliveryStore::lease`]: the delivery's next attempt becomes
    /// `until` and `chain` owns it. A message waiting its turn in a long
    /// line (an endpoint's `rate_limit` under a backlog) is then not taken
    /// for lost by the reconciler, which would queue a copy of it that
    /// joins the same line. `false` (and nothing written) otherwise.
    async fn postpone(
        &self,
        delivery_id: &str,
        attempts_made: u32,
        chain: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool>;
    /// A page of an endpoint's deliveries, newest first, optionally of one
    /// status. Examines at most [`DELIVERIES_EXAMINED_PER_PAGE`] deliveries
    /// (beyond `limit + 1`), matching or not: a filtered page may hold fewer
    /// than `limit`, none even, and still have a `next_cursor`.
    async fn list_for_endpoint(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>>;
    /// Writes a note of deliveries the stream's fan-out queued without a
    /// record ([`webhooks_domain::queued`]), one conditional write, which
    /// expires with the records (`table_retention::RECORD_DAYS` from its
    /// creation). `false` (and nothing written) if the org has a note of
    /// that key already: another fan-out of the same deliveries wrote it.
    async fn note_queued(&self, note: &QueuedNote) -> Result<bool>;
    /// `org_id`'s notes that list one of `delivery_ids` (deliveries of its
    /// events), each once, in key order: read by the seconds of their
    /// events ([`webhooks_domain::queued::noted_ranges`]: one range per
    /// minute, from a note's span before the first to the last), strongly
    /// consistent. What it reads grows with the deliveries asked about,
    /// not with the org's rate.
    async fn noted(&self, org_id: &str, delivery_ids: &[String]) -> Result<Vec<QueuedNote>>;
    /// Confirms `org_id`'s note `key` at `at`, setting down the deliveries
    /// it lists that another note lists too (`contested`), one conditional
    /// write: `false` (and nothing written) if there is no such note.
    async fn confirm_note(
        &self,
        org_id: &str,
        key: &str,
        contested: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// The notes of these `(org, key)`s that exist, strongly consistent.
    async fn notes(&self, keys: &[(String, String)]) -> Result<Vec<QueuedNote>>;
    /// `org_id`'s notes of the minutes `from` to `to`, both included
    /// (`YYYYMMDDHHMM`, [`webhooks_domain::queued::minute_of_event`]), in
    /// key order, at most `limit` (`more`: there may be more). To go on,
    /// pass the last note's key as `from`: a `from` that is a whole key
    /// starts just after that note. What the API shows of deliveries
    /// without a record.
    async fn notes_between(
        &self,
        org_id: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<NotesPage>;
}

/// A page of notes ([`DeliveryStore::notes_between`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotesPage {
    pub notes: Vec<QueuedNote>,
    /// More notes are left in the range.
    pub more: bool,
}

/// What an attempt changes on its delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptUpdate {
    pub attempt: Attempt,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The queue message that made this attempt without a lease: a fresh
    /// delivery's first, by the message that owns its chain from its
    /// creation ([`DeliveryStore::record_attempt`]). `None`: made under the
    /// delivery's lease.
    pub unleased_by: Option<String>,
}

impl AttemptUpdate {
    /// `delivery` as the update leaves it: the attempt appended (the last
    /// [`MAX_KEPT_ATTEMPTS`] kept), its status, next attempt and last error
    /// set, and its lease released. What [`DeliveryStore::record_attempt`]
    /// writes, and what the first attempt of a delivery without a record
    /// creates it as.
    ///
    /// [`MAX_KEPT_ATTEMPTS`]: webhooks_domain::delivery::MAX_KEPT_ATTEMPTS
    pub fn apply(&self, delivery: &Delivery) -> Delivery {
        let mut next = delivery.clone();
        next.attempts.push(self.attempt.clone());
        let excess = next
            .attempts
            .len()
            .saturating_sub(webhooks_domain::delivery::MAX_KEPT_ATTEMPTS);
        next.attempts.drain(..excess);
        next.attempt_count = self.attempt.number;
        next.status = self.status;
        next.next_attempt_at = self.next_attempt_at;
        next.last_error.clone_from(&self.last_error);
        next.updated_at = self.attempt.at;
        next.lease_until = None;
        next
    }
}

/// Each endpoint's delivery figures in hourly buckets (by the hour its
/// deliveries were created), added to by the writes that change them, so
/// the figures are read without reading deliveries.
#[async_trait]
pub trait EndpointStatsStore: Send + Sync {
    /// Adds `delta` to the endpoint's bucket of `hour` (one atomic write).
    async fn add(
        &self,
        endpoint_id: &str,
        hour: DateTime<Utc>,
        delta: &webhooks_domain::stats::StatsDelta,
    ) -> Result<()>;
    /// The endpoint's buckets from `from_hour` on, oldest first.
    async fn read(
        &self,
        endpoint_id: &str,
        from_hour: DateTime<Utc>,
    ) -> Result<Vec<webhooks_domain::stats::HourBucket>>;
}

/// Each organization's low-water mark in its event stream: every event whose
/// id is at or below the cursor has been fanned out (or was published
/// before the org had an endpoint). Only the sweeper moves it, over events
/// it has checked once they are older than its settle window: ids are made
/// before their write commits, so a later id may commit first, and only
/// after the window can no earlier id still appear. That holds because every
/// event is written within `MIN_SETTLE_WINDOW` of its id being made, a
/// repeated keyed request included: one that comes later writes an id of
/// its own instead (`webhooks_pipeline::publish`).
#[async_trait]
pub trait CursorStore: Send + Sync {
    async fn get(&self, org_id: &str) -> Result<Option<String>>;
    /// Moves the org's cursor to `to` if that is further along; never back.
    async fn advance(&self, org_id: &str, to: &str) -> Result<()>;
    /// Creates the org's cursor at `event_id` unless it has one.
    async fn ensure(&self, org_id: &str, event_id: &str) -> Result<()>;
    /// Every organization's cursor.
    async fn list(&self) -> Result<Vec<(String, String)>>;
    /// The org the sweeper's next pass starts with, where the last pass ran
    /// out of time before it (`None`: from the first). Kept beside the
    /// cursors, and never listed among them.
    async fn resume_at(&self) -> Result<Option<String>>;
    /// Sets (or, with `None`, clears) where the next pass starts.
    async fn set_resume_at(&self, org_id: Option<&str>) -> Result<()>;
}

/// Keys seen before, for idempotent writes.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Remembers `key -> value` for `ttl` unless the key is known; returns the
    /// value stored first when it is.
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>>;
}

/// A message to put on a queue: its body and the tenant it belongs to.
/// The delivery queue is an SQS fair queue; the tenant is the message's
/// `MessageGroupId` (see [`webhooks_domain::tenant`]), and a message
/// without one counts as a tenant of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub tenant: Option<String>,
}

impl QueueMessage {
    /// A message of `tenant`.
    pub fn new(body: impl Into<String>, tenant: impl Into<String>) -> Self {
        QueueMessage {
            body: body.into(),
            tenant: Some(tenant.into()),
        }
    }

    /// A message of no tenant (a tenant of its own on a fair queue).
    pub fn untagged(body: impl Into<String>) -> Self {
        QueueMessage {
            body: body.into(),
            tenant: None,
        }
    }

    /// A delivery task's message, of the task's org.
    pub fn task(task: &webhooks_domain::DeliveryTask) -> Self {
        QueueMessage {
            body: task.to_message(),
            tenant: Some(task.tenant()),
        }
    }

    /// The same message again (a renewal, a move to the dead-letter
    /// queue), with its tenant.
    pub fn again(message: &ReceivedMessage) -> Self {
        QueueMessage {
            body: message.body.clone(),
            tenant: message.tenant.clone(),
        }
    }
}

/// A message taken from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub body: String,
    /// Its tenant (`MessageGroupId`), when it was sent with one.
    pub tenant: Option<String>,
    pub receipt_handle: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// How long ago the queue first took the message (SQS `SentTimestamp`),
    /// when known.
    pub age: Option<Duration>,
}

/// A queue with SQS semantics: at-least-once, invisible while being worked
/// on, visible again when the visibility timeout ends.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends the messages, batching as the queue allows; returns, in the
    /// order given, the queue's id of each message it accepted (SQS's
    /// `MessageId`, the id its receives carry) and `None` for each it did
    /// not accept. The fan-out makes a new delivery's first message the
    /// owner of its retry chain by this id.
    async fn send_batch_ids(&self, messages: &[QueueMessage]) -> Result<Vec<Option<String>>>;
    /// [`Queue::send_batch_ids`], answering only the indexes of the
    /// messages that were not accepted. Wrappers implement
    /// `send_batch_ids`, never this.
    async fn send_batch(&self, messages: &[QueueMessage]) -> Result<Vec<usize>> {
        Ok(rejected(&self.send_batch_ids(messages).await?))
    }
    /// Up to `max` visible messages, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>>;
    /// Hides a received message for `delay` from now.
    async fn change_visibility(&self, receipt_handle: &str, delay: Duration) -> Result<()>;
    /// Removes received messages.
    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()>;
}

/// The indexes of the messages a [`Queue::send_batch_ids`] answer says
/// were not accepted.
pub fn rejected(ids: &[Option<String>]) -> Vec<usize> {
    ids.iter()
        .enumerate()
        .filter_map(|(i, id)| id.is_none().then_some(i))
        .collect()
}

/// Where operational notifications are also published for AWS-native
/// routing (an EventBridge bus), besides the operator's webhook.
#[async_trait]
pub trait OpsBus: Send + Sync {
    async fn publish(&self, notice: &webhooks_domain::ops::OpsNotice) -> Result<()>;
}

/// A provider's event or message as it arrived at an inbound route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// `stripe`, `twilio` or `whatsapp`.
    pub provider: String,
    /// The provider's id: Stripe event id, Twilio `MessageSid`, WhatsApp message id.
    pub provider_id: String,
    /// The organization it was routed to, if any.
    pub org_id: Option<String>,
    /// The Stripe event type (`invoice.paid`), or [`InboundRecord::MESSAGE`].
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub text: Option<String>,
    /// The raw request body, or the message's JSON.
    pub raw: String,
    pub received_at: DateTime<Utc>,
}

impl InboundRecord {
    /// The `kind` of an inbound text/media message (Twilio, WhatsApp).
    pub const MESSAGE: &'static str = "message";

    /// Whether this record is listed among its org's messages: a message
    /// routed to an org.
    pub fn is_org_message(&self) -> bool {
        self.org_id.is_some() && self.kind == Self::MESSAGE
    }
}

/// Provider events and messages received on the inbound routes, and which
/// org owns each receiving address.
#[async_trait]
pub trait InboundStore: Send + Sync {
    /// Records a provider's raw event/message once: false if (provider,
    /// provider_id) was recorded before.
    async fn record(&self, record: &InboundRecord) -> Result<bool>;
    /// Which org owns a receiving address (Twilio number "+15550001111",
    /// WhatsApp phone_number_id).
    async fn route(&self, provider: &str, address: &str) -> Result<Option<String>>;
    async fn set_route(&self, provider: &str, address: &str, org_id: &str) -> Result<()>;
    /// Messages recorded for an org, newest first (for the sales flows and tests).
    async fn messages(&self, org_id: &str, limit: usize) -> Result<Vec<InboundRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overfetched_listing_pages_by_its_last_kept_key() {
        let keys = |p: &Page<String>| p.items.clone();
        let items: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let full = Page::from_overfetch(items, 2, |s: &String| s.as_str());
        assert_eq!(keys(&full), ["a", "b"]);
        let next = full.next_cursor.expect("another page");
        assert_eq!(cursor::decode(&next, "").unwrap(), "b");
        let last = Page::from_overfetch(vec!["c".to_string()], 2, |s: &String| s.as_str());
        assert_eq!(last.next_cursor, None);
        assert_eq!(keys(&last), ["c"]);
    }

    #[test]
    fn a_short_page_goes_on_after_the_last_key_examined() {
        let keep = |items: Vec<&'static str>, examined| {
            Page::from_examined(items, 2, |s: &&str| s, examined)
        };
        let cut = keep(vec!["a"], Some("q"));
        assert_eq!(cut.items, ["a"]);
        assert_eq!(
            cursor::decode(&cut.next_cursor.expect("more"), "").unwrap(),
            "q"
        );
        assert_eq!(keep(vec![], None).next_cursor, None);
        let full = keep(vec!["a", "b", "c"], Some("q"));
        assert_eq!(
            cursor::decode(&full.next_cursor.expect("more"), "").unwrap(),
            "b"
        );
    }
}
