//! Fan-out: each new event becomes exactly one delivery per subscribed
//! endpoint, and each new delivery is queued for the sender.

use futures::stream::{self, StreamExt};
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use webhooks_domain::event::MIN_SETTLE_WINDOW;
use webhooks_domain::ids;
use webhooks_domain::queued::{self, assign_notes, message_tag, QueuedNote, NOTE_CAPACITY};
use webhooks_domain::{Delivery, Event, Payload, Subscriber};
use webhooks_ports::{
    Adapters, BackendError, Clock, DeliveryStore, OrgEndpoints, Queue, QueueMessage, SystemClock,
};

/// How many conditional creates run at once.
const CREATE_CONCURRENCY: usize = 64;
/// Deliveries a batch's list is sized for up front; an org with many
/// endpoints grows it past this as it goes.
const PREALLOCATED_DELIVERIES: usize = 2048;

/// The fan-out step.
pub struct FanOut {
    endpoints: Arc<dyn OrgEndpoints>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
}

/// What a fan-out of a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanOutReport {
    /// Deliveries created by this call (the sweeper's, and the stream's
    /// of late events).
    pub created: usize,
    /// Deliveries that already existed (a replayed event).
    pub existing: usize,
    /// Messages queued (one per new delivery; an existing one has its own).
    pub enqueued: usize,
    /// Deliveries queued and noted, without a record: their first
    /// attempt's outcome creates it.
    pub noted: usize,
    /// Of those, the ones its confirming read found in another note too
    /// (another fan-out of overlapping events at once): their messages make
    /// no attempt without a record.
    pub contested: usize,
    /// Index of the first event that could not be fully fanned out; it and
    /// the events after it must be offered again.
    pub first_failure: Option<usize>,
}

impl FanOut {
    /// The fan-out over a backend's adapters.
    pub fn from_adapters(adapters: &Adapters) -> Self {
        FanOut::new(
            adapters.endpoints.clone(),
            adapters.deliveries.clone(),
            adapters.queue.clone(),
        )
        .with_clock(adapters.clock.clone())
    }

    pub fn new(
        endpoints: Arc<dyn OrgEndpoints>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        FanOut {
            endpoints,
            deliveries,
            queue,
            clock: SystemClock::shared(),
        }
    }

    /// The same fan-out, stamping new deliveries with `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Fans out a batch of events handed over by the stream: a delivery of
    /// an event still young enough ([`notes_deadline`]) gets no record, but
    /// a line in a note of what this call queued ([`webhooks_domain::queued`],
    /// one write per org and minute of events), and its first attempt's
    /// outcome creates its record; a delivery of an older event (a late
    /// stream) is created as the sweeper's are. See [`FanOut::fan_out_swept`]
    /// for what every fan-out does.
    pub async fn fan_out(&self, events: &[Event]) -> FanOutReport {
        self.run(events, Source::Stream).await
    }

    /// Fans out a batch of events given in stream order (the sweeper's, of
    /// events the stream has most likely handed over already, older than
    /// the settle window). Safe to repeat: the deliveries and the notes are
    /// read first, and only the deliveries neither holds are queued (and
    /// created, or noted). One that exists or is noted is left alone,
    /// whatever its state: its message was sent before its record or note
    /// was written, and that message is on the queue still (waiting behind
    /// a backlog, deferred by its endpoint's limits), or SQS moved it to
    /// the dead-letter queue, where the redrive net finds it
    /// ([`crate::redrive`]). So a replay or a sweep never gives a delivery
    /// that merely waits a second message.
    ///
    /// The read is what makes a replay cheap now that messages go before
    /// records: without it every replay (Lambda retries a batch after a
    /// partial failure or a timeout, from the failed record on) would queue
    /// a message for every delivery of the batch again, whatever became of
    /// it, and a batch that keeps timing out after its sends would flood the
    /// queue with copies for as long as it is retried. When the read fails,
    /// nothing is queued or created: every event with a delivery to make is
    /// offered again.
    pub async fn fan_out_swept(&self, events: &[Event]) -> FanOutReport {
        self.run(events, Source::Sweep).await
    }

    async fn run(&self, events: &[Event], source: Source) -> FanOutReport {
        let mut report = FanOutReport::default();
        let mut failed = vec![false; events.len()];

        // The endpoints of each org in the batch, read once.
        let mut orgs: Vec<String> = events.iter().map(|e| e.org_id.clone()).collect();
        orgs.sort_unstable();
        orgs.dedup();
        let loaded: HashMap<String, Result<Vec<Subscriber>, BackendError>> =
            stream::iter(orgs.into_iter().map(|org| {
                let endpoints = self.endpoints.clone();
                async move {
                    let r = endpoints.list_all(&org).await;
                    (org, r)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;

        // One delivery per (endpoint, event).
        let now = self.clock.now();
        // Sized once for the usual batch: at most one delivery per event
        // and endpoint of its org (growing it a push at a time copied and
        // page-faulted the whole vector several times per batch).
        let most: usize = events
            .iter()
            .map(|e| match loaded.get(e.org_id.as_str()) {
                Some(Ok(endpoints)) => endpoints.len(),
                _ => 0,
            })
            .sum();
        let mut wanted: Vec<(usize, Delivery)> =
            Vec::with_capacity(most.min(PREALLOCATED_DELIVERIES));
        for (i, event) in events.iter().enumerate() {
            match loaded.get(event.org_id.as_str()) {
                Some(Ok(endpoints)) => {
                    for ep in targets(event, endpoints) {
                        wanted.push((
                            i,
                            Delivery::new_at(
                                &event.org_id,
                                &ep.id,
                                &event.id,
                                event.event_type,
                                now,
                            ),
                        ));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(event_id = %event.id, org_id = %event.org_id, error = %e, "could not read endpoints");
                    failed[i] = true;
                }
                None => failed[i] = true,
            }
        }
        // An event handed over twice in one batch makes one delivery.
        let mut seen = HashSet::new();
        wanted.retain(|(_, d)| seen.insert(d.id.clone()));

        // Noted (no record until the first attempt) only from the stream,
        // and only while the event is young enough that no sweep can read
        // it before the note is written.
        // Once per event (its id's time is parsed for it), not per delivery.
        let young: Vec<bool> = events
            .iter()
            .map(|e| source == Source::Stream && now < notes_deadline(e))
            .collect();
        let notable = |i: usize| young.get(i).copied().unwrap_or(false);

        // Read first: the deliveries that exist or are noted are left alone
        // (each has its own message); only the others are queued.
        if !wanted.is_empty() {
            match self.known(&wanted, notable).await {
                Ok(known) => {
                    let before = wanted.len();
                    wanted.retain(|(_, d)| !known.contains(&d.id));
                    report.existing += before - wanted.len();
                }
                Err(e) => {
                    // Queueing blind would give every delivery that exists
                    // a second message, finished ones too: the events are
                    // offered again instead.
                    tracing::warn!(error = %e, "could not read deliveries before queueing them; offered again");
                    for (i, _) in wanted.drain(..) {
                        failed[i] = true;
                    }
                }
            }
        }

        let keys: Vec<Option<String>> = {
            let noted: Vec<(usize, (&str, &str, &str))> = wanted
                .iter()
                .enumerate()
                .filter(|(_, (i, _))| notable(*i))
                .map(|(slot, (_, d))| {
                    (
                        slot,
                        (d.org_id.as_str(), d.event_id.as_str(), d.id.as_str()),
                    )
                })
                .collect();
            let items: Vec<(&str, &str, &str)> = noted.iter().map(|(_, item)| *item).collect();
            let mut keys = vec![None; wanted.len()];
            for ((slot, _), key) in noted.iter().zip(assign_notes(&items)) {
                keys[*slot] = Some(key);
            }
            keys
        };

        // Queued first, created or noted after: a delivery's record or note
        // never exists without its message having been sent (a crash in
        // between leaves a message whose record the sender creates), so a
        // delivery never attempted needs no index entry for the reconciler
        // to find it. Each event's payload is serialized once, however many
        // endpoints it goes to.
        let mut payloads: Vec<Option<Payload>> = vec![None; events.len()];
        let mut payload_of = |i: usize| -> Payload {
            payloads[i]
                .get_or_insert_with(|| Payload::of_event(&events[i]))
                .clone()
        };
        // Each message, in `wanted`'s order.
        let messages: Vec<QueueMessage> = wanted
            .iter()
            .zip(&keys)
            .map(|((i, d), key)| {
                let mut task = d.task(&events[*i], payload_of(*i));
                task.queued.clone_from(key);
                QueueMessage::task(&task)
            })
            .collect();
        let mut unsent = vec![false; events.len()];
        let ids = match self.queue.send_batch_ids(&messages).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not queue deliveries");
                vec![None; messages.len()]
            }
        };
        report.enqueued = ids.iter().flatten().count();
        // Each delivery is owned by its message from its creation: that
        // message's first attempt needs no lease (the sender's `fence`).
        for ((i, delivery), id) in wanted.iter_mut().zip(&ids) {
            match id {
                Some(id) => delivery.chain = Some(id.clone()),
                None => unsent[*i] = true,
            }
        }

        // An event whose messages did not all go is offered again, before
        // any of its deliveries is created or noted.
        // Usually every delivery is noted: sized for them all at once.
        let mut to_note: Vec<(usize, Delivery, String)> = Vec::with_capacity(wanted.len());
        let mut to_create: Vec<(usize, Delivery)> = Vec::new();
        let late = self.clock.now();
        for ((i, d), key) in wanted.into_iter().zip(keys) {
            if unsent[i] {
                continue;
            }
            match key {
                // The sends took so long that a sweep may read the event
                // before the note is written: created instead (its message
                // then finds the record).
                Some(key) if late < notes_deadline(&events[i]) => to_note.push((i, d, key)),
                _ => to_create.push((i, d)),
            }
        }
        let deadlines: Vec<chrono::DateTime<chrono::Utc>> =
            events.iter().map(confirm_deadline).collect();
        for (i, written, contested) in self.note(to_note, now, &deadlines).await {
            report.contested += usize::from(contested);
            match written {
                Some(true) => report.noted += 1,
                // Another fan-out of the same deliveries (the stream handed
                // the batch over twice at once) noted them first: its
                // messages carry them, and this call's give way.
                Some(false) => report.existing += 1,
                None => failed[i] = true,
            }
        }
        let created: Vec<(usize, Delivery, Result<Option<Delivery>, BackendError>)> =
            stream::iter(to_create.into_iter().map(|(i, d)| {
                let deliveries = self.deliveries.clone();
                async move {
                    let r = deliveries.create_if_absent(&d).await;
                    (i, d, r)
                }
            }))
            .buffer_unordered(CREATE_CONCURRENCY)
            .collect()
            .await;
        for (i, delivery, result) in created {
            match result {
                Ok(None) => report.created += 1,
                Ok(Some(_)) => report.existing += 1,
                Err(e) => {
                    tracing::warn!(delivery_id = %delivery.id, error = %e, "could not create delivery");
                    failed[i] = true;
                }
            }
        }
        for (f, u) in failed.iter_mut().zip(unsent) {
            *f |= u;
        }

        report.first_failure = failed.iter().position(|f| *f);
        report
    }

    /// The ids among `wanted` that have a record or a note. The records
    /// are read only for the deliveries of events that are not `notable`
    /// (by index): while an event is young enough to be noted, a record of
    /// its delivery exists only if a note lists it (the note's message
    /// created it by its first attempt), because every other maker of a
    /// record waits longer than that: a message whose note never came
    /// until the settle window is over, the sweeper until the event is
    /// older than it, a renewal or a retry until the delivery has been
    /// received many times or attempted. The one exception is a fan-out
    /// of the same event that began just past the notes' deadline and
    /// creates the record while this one runs. Created before this call
    /// would have read it, that record is read by this call's message too,
    /// before its first attempt, and the message gives way to the record's
    /// chain: a read here would only have spared a message. Created after,
    /// a read here would have missed it as well. A fresh batch, the
    /// stream's usual one, reads only notes: a strongly consistent read
    /// unit per delivery less (BENCHMARKS.md, "Stop 38").
    async fn known(
        &self,
        wanted: &[(usize, Delivery)],
        notable: impl Fn(usize) -> bool,
    ) -> Result<HashSet<String>, BackendError> {
        let ids: Vec<String> = wanted
            .iter()
            .filter(|(i, _)| !notable(*i))
            .map(|(_, d)| d.id.clone())
            .collect();
        let mut by_org: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, d) in wanted {
            by_org
                .entry(d.org_id.clone())
                .or_default()
                .push(d.id.clone());
        }
        let records = async {
            if ids.is_empty() {
                Ok(Vec::new())
            } else {
                self.deliveries.get_many(&ids).await
            }
        };
        let notes = stream::iter(by_org.into_iter().map(|(org, ids)| {
            let deliveries = self.deliveries.clone();
            async move {
                let notes = deliveries.noted(&org, &ids).await?;
                Ok::<_, BackendError>(queued::listed(&notes, &ids))
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>();
        let (records, notes) = futures::join!(records, notes);
        let mut known: HashSet<String> = records?.into_iter().map(|d| d.id).collect();
        for noted in notes {
            known.extend(noted?);
        }
        Ok(known)
    }

    /// Writes the notes of the deliveries queued under their keys, each
    /// naming the message sent for it (its `chain`), and confirms each one
    /// written ([`FanOut::confirm`]); each delivery's event index, whether
    /// its note was written (`Some(false)`: another fan-out wrote that note
    /// first; `None`: the write failed), and whether it was found
    /// contested. `deadlines` are the events' [`confirm_deadline`]s.
    async fn note(
        &self,
        queued: Vec<(usize, Delivery, String)>,
        now: chrono::DateTime<chrono::Utc>,
        deadlines: &[chrono::DateTime<chrono::Utc>],
    ) -> Vec<(usize, Option<bool>, bool)> {
        // Each note's lists as they are gathered: deliveries, their message
        // tags, and their events' indexes.
        type Gathered = (Vec<String>, Vec<String>, Vec<usize>);
        let mut gathered: BTreeMap<(String, String), Gathered> = BTreeMap::new();
        // Sized for a full note: grown a push at a time, the three lists
        // were copied five times each per note.
        let sized = || {
            (
                Vec::with_capacity(NOTE_CAPACITY),
                Vec::with_capacity(NOTE_CAPACITY),
                Vec::with_capacity(NOTE_CAPACITY),
            )
        };
        for (i, d, key) in queued {
            let (ids, messages, events) = gathered
                .entry((d.org_id.clone(), key))
                .or_insert_with(sized);
            messages.push(message_tag(d.chain.as_deref().unwrap_or_default()).to_string());
            ids.push(d.id);
            events.push(i);
        }
        let notes = gathered
            .into_iter()
            .map(|((org_id, key), (ids, messages, events))| {
                let note = QueuedNote {
                    org_id,
                    key,
                    delivery_ids: ids.into(),
                    messages: messages.into(),
                    created_at: now,
                    confirmed_at: None,
                    contested: Vec::new(),
                };
                (note, events)
            });
        let written: Vec<(QueuedNote, Vec<usize>, Option<bool>)> =
            stream::iter(notes.map(|(note, events)| {
                let deliveries = self.deliveries.clone();
                async move {
                    let written = deliveries.note_queued(&note).await;
                    let written = match written {
                        Ok(true) => Some(true),
                        Ok(false) => {
                            tracing::info!(org_id = %note.org_id, key = %note.key, "another fan-out of these deliveries noted them first; its messages carry them");
                            Some(false)
                        }
                        Err(e) => {
                            tracing::warn!(org_id = %note.org_id, key = %note.key, error = %e, "could not write the note of queued deliveries; offered again");
                            None
                        }
                    };
                    (note, events, written)
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        // The notes written, confirmed per org: one read of the notes of
        // all their deliveries.
        let mut by_org: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (n, (note, _, written)) in written.iter().enumerate() {
            if *written == Some(true) {
                by_org.entry(note.org_id.clone()).or_default().push(n);
            }
        }
        let contested: HashMap<usize, Vec<String>> =
            stream::iter(by_org.into_iter().map(|(org, indexes)| {
                let written = &written;
                async move {
                    let notes: Vec<(&QueuedNote, Option<chrono::DateTime<chrono::Utc>>)> = indexes
                        .iter()
                        .map(|n| {
                            let (note, events, _) = &written[*n];
                            let deadline = events
                                .iter()
                                .filter_map(|i| deadlines.get(*i))
                                .min()
                                .copied();
                            (note, deadline)
                        })
                        .collect();
                    let contested = self.confirm(&org, &notes).await;
                    indexes.into_iter().zip(contested).collect::<Vec<_>>()
                }
            }))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut out = Vec::with_capacity(written.iter().map(|(_, events, _)| events.len()).sum());
        out.extend(
            written
                .into_iter()
                .enumerate()
                .flat_map(|(n, (note, events, written))| {
                    let flags: Vec<bool> = note
                        .delivery_ids
                        .iter()
                        .map(|d| contested.get(&n).is_some_and(|c| c.contains(d)))
                        .collect();
                    events
                        .into_iter()
                        .enumerate()
                        .map(move |(k, i)| (i, written, flags.get(k).copied().unwrap_or(false)))
                }),
        );
        out
    }

    /// Confirms the notes of `org` just written: reads again the notes of
    /// all they list, once (strongly consistent, after their writes), and
    /// sets down in each which of its deliveries another note lists too
    /// ([`queued::Listings::contested`], one index of the read for all).
    /// Of two fan-outs of overlapping events at once, the one whose read
    /// comes second finds the other's note, so no delivery is left carried
    /// by two notes. A note is not confirmed past its deadline (a sender
    /// may by then have given up waiting for it and created the record),
    /// nor when the read or the write fails: its messages then make the
    /// confirming read themselves (the sender's `unrecorded`). Each note's
    /// contested deliveries, in order.
    async fn confirm(
        &self,
        org: &str,
        notes: &[(&QueuedNote, Option<chrono::DateTime<chrono::Utc>>)],
    ) -> Vec<Vec<String>> {
        let mut ids: Vec<String> =
            Vec::with_capacity(notes.iter().map(|(n, _)| n.delivery_ids.len()).sum());
        ids.extend(
            notes
                .iter()
                .flat_map(|(n, _)| n.delivery_ids.iter().cloned()),
        );
        let others = match self.deliveries.noted(org, &ids).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "could not read the notes again to confirm them; their messages read them");
                return vec![Vec::new(); notes.len()];
            }
        };
        let now = self.clock.now();
        let listings = queued::Listings::of(&others);
        let mut out = Vec::with_capacity(notes.len());
        for (note, deadline) in notes {
            let contested = listings.contested(note);
            if deadline.is_some_and(|d| now >= d) {
                tracing::warn!(org_id = %org, key = %note.key, "too late to confirm a note; its messages read the notes themselves");
                out.push(Vec::new());
                continue;
            }
            if !contested.is_empty() {
                tracing::info!(org_id = %org, key = %note.key, contested = contested.len(), "another fan-out noted some of these deliveries at once; their messages create their records");
            }
            match self
                .deliveries
                .confirm_note(org, &note.key, &contested, now)
                .await
            {
                Ok(true) => out.push(contested),
                Ok(false) => {
                    tracing::warn!(org_id = %org, key = %note.key, "the note to confirm is gone");
                    out.push(Vec::new());
                }
                Err(e) => {
                    tracing::warn!(org_id = %org, key = %note.key, error = %e, "could not confirm a note; its messages read the notes themselves");
                    out.push(Vec::new());
                }
            }
        }
        out
    }
}

/// Where a batch of events comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Stream,
    Sweep,
}

/// Until when the stream's fan-out may note an event's deliveries instead
/// of creating them: a settle window after the event's id was made, less
/// [`NOTE_MARGIN`] for the note's write. The sweeper reads an event only
/// once it is older than its settle window (at least
/// [`MIN_SETTLE_WINDOW`]), so it finds the note of any delivery noted.
pub fn notes_deadline(event: &Event) -> chrono::DateTime<chrono::Utc> {
    let made = ids::made_at(&event.id, "evt").unwrap_or(event.created_at);
    made + chrono::Duration::from_std(MIN_SETTLE_WINDOW).unwrap_or_default() - NOTE_MARGIN
}

/// What a note's write is given before a sweep may read its event.
pub const NOTE_MARGIN: chrono::Duration = chrono::Duration::seconds(20);

/// Until when a fan-out may confirm a note of an event's deliveries: half
/// of [`NOTE_MARGIN`] before the settle window ends, when a message whose
/// note is still unconfirmed stops waiting for it and creates the record.
pub fn confirm_deadline(event: &Event) -> chrono::DateTime<chrono::Utc> {
    notes_deadline(event) + NOTE_MARGIN / 2
}

/// The endpoints an event goes to: the one it targets (a test event,
/// whatever its subscription and filter say), or every enabled endpoint
/// subscribed to its type that existed when the event was published (an
/// old or swept event does not reach an endpoint created after it) and
/// whose payload filter, if it has one, matches the event's body. Stored
/// times keep whole seconds, so an event of the same second as the
/// endpoint goes to it.
///
/// An endpoint the filter leaves out costs no read, write or message: only
/// the match, in memory. The body is parsed once per event, and only when
/// an endpoint that wants the event has a filter.
fn targets<'a>(
    event: &'a Event,
    endpoints: &'a [Subscriber],
) -> impl Iterator<Item = &'a Subscriber> {
    let body: OnceCell<Option<serde_json::Value>> = OnceCell::new();
    endpoints
        .iter()
        .filter(move |ep| match &event.target_endpoint {
            Some(target) => &ep.id == target,
            None => {
                ep.wants(event.event_type)
                    && ep.created_at.timestamp() <= event.created_at.timestamp()
                    && ep.passes(|| body.get_or_init(|| filter_body(event)).as_ref())
            }
        })
}

/// The event's body for payload filters to match, once per event.
fn filter_body(event: &Event) -> Option<serde_json::Value> {
    let body = event.filter_body();
    if body.is_none() {
        tracing::warn!(event_id = %event.id, "event body unreadable as JSON; endpoints that filter skip it");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::time::Duration;
    use webhooks_domain::queued::NOTE_CAPACITY;
    use webhooks_domain::{
        DeliveryStatus, DeliveryTask, Endpoint, EventType, Secret, Subscription,
    };
    use webhooks_memory::{MemoryDeliveryStore, MemoryEndpointStore, MemoryQueue};
    use webhooks_ports::EndpointStore;

    struct TestSystem {
        endpoints: Arc<MemoryEndpointStore>,
        deliveries: Arc<MemoryDeliveryStore>,
        queue: Arc<MemoryQueue>,
        fanout: FanOut,
    }

    fn world() -> TestSystem {
        let endpoints = MemoryEndpointStore::new();
        let deliveries = MemoryDeliveryStore::new();
        let queue = MemoryQueue::new(Duration::from_secs(30));
        let fanout = FanOut::new(endpoints.clone(), deliveries.clone(), queue.clone());
        TestSystem {
            endpoints,
            deliveries,
            queue,
            fanout,
        }
    }

    async fn endpoint(w: &TestSystem, org: &str, types: &[&str]) -> Endpoint {
        let ep = Endpoint::new(
            org,
            "https://example.com/hook".into(),
            Subscription::parse(types).unwrap(),
            Secret::generate(),
        );
        // No limit: one test fans out to a thousand endpoints of one org.
        let created = w.endpoints.create(&ep, u32::MAX).await.unwrap();
        assert_eq!(created, webhooks_ports::Created::Written);
        ep
    }

    /// An endpoint made five minutes ago, so that events older than the
    /// notes' deadline go to it.
    async fn endpoint_before(w: &TestSystem, org: &str) -> Endpoint {
        let mut ep = Endpoint::new(
            org,
            "https://example.com/hook".into(),
            Subscription::All,
            Secret::generate(),
        );
        ep.created_at = chrono::Utc::now() - chrono::Duration::minutes(5);
        let created = w.endpoints.create(&ep, u32::MAX).await.unwrap();
        assert_eq!(created, webhooks_ports::Created::Written);
        ep
    }

    fn event(org: &str, t: EventType) -> Event {
        Event::new(org, t, RawValue::from_string(r#"{"n":1}"#.into()).unwrap())
    }

    /// An event whose id was made `secs` seconds ago.
    fn event_aged(org: &str, secs: i64) -> Event {
        let mut e = event(org, EventType::LeadWon);
        let made = chrono::Utc::now() - chrono::Duration::seconds(secs);
        e.id = ids::new_id_at("evt", made);
        e.created_at = made;
        e
    }

    impl TestSystem {
        /// The (endpoint, event) of every delivery made: each has its
        /// message, noted or recorded.
        fn made(&self) -> Vec<(String, String)> {
            let mut made: Vec<(String, String)> = self
                .queue
                .bodies()
                .iter()
                .map(|b| {
                    let task: DeliveryTask = serde_json::from_str(b).unwrap();
                    (task.endpoint_id, task.event_id)
                })
                .collect();
            made.sort();
            made
        }

        /// The delivery of `event_id` as its first attempt's outcome would
        /// leave it (the record created).
        async fn attempt_first(&self, delivery_id: &str, status: DeliveryStatus) {
            let (ep, evt) = webhooks_domain::delivery::parse_delivery_id(delivery_id).unwrap();
            let d = Delivery::new("a", &ep, &evt, EventType::LeadWon);
            let update = webhooks_ports::AttemptUpdate {
                attempt: webhooks_domain::Attempt {
                    number: 1,
                    at: chrono::Utc::now(),
                    status_code: Some(if status == DeliveryStatus::Delivered {
                        200
                    } else {
                        500
                    }),
                    error: None,
                    latency_ms: 1,
                    response_body: None,
                },
                status,
                next_attempt_at: None,
                last_error: None,
                unleased_by: None,
            };
            let created = self
                .deliveries
                .create_if_absent(&update.apply(&d))
                .await
                .unwrap();
            assert!(created.is_none());
        }
    }

    #[tokio::test]
    async fn one_delivery_per_subscribed_endpoint() {
        let w = world();
        let paid = endpoint(&w, "a", &["invoice.paid"]).await;
        let all = endpoint(&w, "a", &["*"]).await;
        let _leads = endpoint(&w, "a", &["lead_won"]).await;
        let _other_org = endpoint(&w, "b", &["*"]).await;
        let mut disabled = endpoint(&w, "a", &["*"]).await;
        disabled.enabled = false;
        w.endpoints.update(&disabled).await.unwrap();

        let e = event("a", EventType::InvoicePaid);
        let r = w.fanout.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.noted, r.created), (2, 0));
        assert_eq!(r.enqueued, 2);
        assert_eq!(r.first_failure, None);
        let mut targets: Vec<String> = w.made().into_iter().map(|(ep, _)| ep).collect();
        targets.sort();
        let mut expected = vec![paid.id, all.id];
        expected.sort();
        assert_eq!(targets, expected);
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        assert_eq!(task.payload, e.payload());
    }

    #[tokio::test]
    async fn each_swept_delivery_is_created_owned_by_the_message_sent_for_it() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "a", &["*"]).await;
        let r = w
            .fanout
            .fan_out_swept(&[event("a", EventType::LeadWon)])
            .await;
        assert_eq!((r.created, r.noted), (2, 0));
        let received = w.queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(received.len(), 2);
        for m in received {
            let task: DeliveryTask = serde_json::from_str(&m.body).unwrap();
            let d = w.deliveries.get(&task.delivery_id).await.unwrap().unwrap();
            assert_eq!(d.chain.as_deref(), Some(m.message_id.as_str()));
            assert_eq!(d.lease_until, None);
        }
    }

    /// Holds each call of `op` at a barrier: before it reaches the store,
    /// after it, or both; so two fan-outs over one store can be lined up.
    struct Meet {
        op: webhooks_faults::Op,
        before: Option<Arc<tokio::sync::Barrier>>,
        after: Option<Arc<tokio::sync::Barrier>>,
    }

    impl webhooks_faults::Policy for Meet {
        async fn before(&self, op: webhooks_faults::Op) -> webhooks_ports::Result<()> {
            if let (true, Some(b)) = (op == self.op, &self.before) {
                b.wait().await;
            }
            Ok(())
        }

        async fn after(&self, op: webhooks_faults::Op, _: bool) -> webhooks_ports::Result<()> {
            if let (true, Some(b)) = (op == self.op, &self.after) {
                b.wait().await;
            }
            Ok(())
        }
    }

    impl TestSystem {
        /// A fan-out of this world whose note writes wait at `meet`'s
        /// barriers.
        fn fanout_meeting(&self, meet: Meet) -> FanOut {
            let deliveries = Arc::new(webhooks_faults::Faulty::new(
                self.deliveries.clone(),
                Arc::new(meet),
            ));
            FanOut::new(self.endpoints.clone(), deliveries, self.queue.clone())
        }

        /// For each delivery of `events` to `ep`: how many
        /// notes carry it (confirmed, not contested) and how many list it.
        async fn carried(&self, ep: &Endpoint, events: &[Event]) -> Vec<(usize, usize)> {
            let (org, endpoints) = (ep.org_id.as_str(), [ep]);
            let mut ids = Vec::new();
            for e in events {
                for ep in endpoints {
                    ids.push(webhooks_domain::delivery::delivery_id(&ep.id, &e.id));
                }
            }
            let notes = self.deliveries.noted(org, &ids).await.unwrap();
            ids.iter()
                .map(|d| {
                    (
                        notes.iter().filter(|n| n.carries(d)).count(),
                        notes.iter().filter(|n| n.lists(d)).count(),
                    )
                })
                .collect()
        }
    }

    /// `n` events of `org` whose ids were made at one instant, now (so
    /// that each fan-out writes them one note).
    fn events_at_once(org: &str, n: usize) -> Vec<Event> {
        let made = chrono::Utc::now();
        (0..n)
            .map(|_| {
                let mut e = event(org, EventType::LeadWon);
                e.id = ids::new_id_at("evt", made);
                e.created_at = made;
                e
            })
            .collect()
    }

    /// Issue 22, seed 676: the stream hands a batch over again while its
    /// bisected retry runs. Both calls read before either's note exists,
    /// so both queue the shared deliveries, under notes of different keys.
    /// The call whose confirming read comes second finds the other's note
    /// and confirms them contested: one note carries each delivery.
    #[tokio::test]
    async fn of_two_overlapping_fan_outs_at_once_the_later_confirmation_is_contested() {
        let w = world();
        let ep = endpoint(&w, "a", &["*"]).await;
        let events = events_at_once("a", 3);
        // The whole batch stops before its note; the retry of its first two
        // events runs through (its read finds nothing), then the whole goes
        // on.
        let gate = Arc::new(tokio::sync::Barrier::new(2));
        let whole = w.fanout_meeting(Meet {
            op: webhooks_faults::Op::NoteQueued,
            before: Some(gate.clone()),
            after: None,
        });
        let (all, retry) = tokio::join!(whole.fan_out(&events), async {
            while w.queue.messages().len() < 3 {
                tokio::task::yield_now().await;
            }
            let r = w.fanout.fan_out(&events[..2]).await;
            gate.wait().await;
            r
        });
        assert_eq!((retry.noted, retry.contested), (2, 0), "confirmed first");
        assert_eq!((all.noted, all.contested), (3, 2), "found the retry's note");
        assert_eq!(w.queue.messages().len(), 5, "both queued the shared ones");
        assert_eq!(
            w.carried(&ep, &events).await,
            [(1, 2), (1, 2), (1, 1)],
            "one note carries each delivery"
        );
    }

    /// The same, with both notes written before either confirming read:
    /// both find the other's, and neither carries the shared deliveries
    /// (their messages wait, then create the record: the sender's
    /// `unrecorded`).
    #[tokio::test]
    async fn two_fan_outs_that_both_see_the_other_carry_neither() {
        let w = world();
        let ep = endpoint(&w, "a", &["*"]).await;
        let events = events_at_once("a", 2);
        let (noted, written) = (
            Arc::new(tokio::sync::Barrier::new(2)),
            Arc::new(tokio::sync::Barrier::new(2)),
        );
        let meet = || Meet {
            op: webhooks_faults::Op::NoteQueued,
            before: Some(noted.clone()),
            after: Some(written.clone()),
        };
        let (a, b) = (w.fanout_meeting(meet()), w.fanout_meeting(meet()));
        let (ra, rb) = tokio::join!(a.fan_out(&events), b.fan_out(&events[..1]));
        assert_eq!((ra.contested, rb.contested), (1, 1));
        assert_eq!(w.carried(&ep, &events).await, [(0, 2), (1, 1)]);
    }

    #[tokio::test]
    async fn a_young_events_deliveries_are_noted_and_each_message_names_its_note() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "b", &["*"]).await;
        let events = [
            event("a", EventType::LeadWon),
            event("b", EventType::LeadWon),
        ];
        let r = w.fanout.fan_out(&events).await;
        assert_eq!((r.noted, r.created, r.enqueued), (3, 0, 3));
        assert!(
            w.deliveries.all().is_empty(),
            "no record before the first attempt"
        );
        for m in w.queue.messages() {
            let task: DeliveryTask = serde_json::from_str(&m.body).unwrap();
            let key = task.queued.clone().expect("the message names its note");
            let notes = w
                .deliveries
                .notes(&[(task.org_id.clone(), key)])
                .await
                .unwrap();
            assert_eq!(notes.len(), 1);
            assert!(notes[0].lists(&task.delivery_id));
            assert_eq!(notes[0].org_id, task.org_id);
        }
        // One note per org and minute of events for the call.
        let a = w.deliveries.noted("a", &[]).await.unwrap();
        assert!(a.is_empty());
    }

    #[tokio::test]
    async fn an_event_too_old_to_note_is_created_even_from_the_stream() {
        let w = world();
        endpoint_before(&w, "a").await;
        // A sweep may read it before a note could be written.
        let old = event_aged("a", 45);
        let r = w.fanout.fan_out(std::slice::from_ref(&old)).await;
        assert_eq!((r.noted, r.created), (0, 1));
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        assert_eq!(task.queued, None);
        // Young enough: noted.
        let young = event_aged("a", 35);
        let r = w.fanout.fan_out(std::slice::from_ref(&young)).await;
        assert_eq!((r.noted, r.created), (1, 0));
    }

    #[tokio::test]
    async fn a_replay_or_a_sweep_gives_a_noted_delivery_no_second_message() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let e = event("a", EventType::LeadWon);
        w.fanout.fan_out(std::slice::from_ref(&e)).await;
        for _ in 0..2 {
            let r = w.fanout.fan_out(std::slice::from_ref(&e)).await;
            assert_eq!((r.noted, r.created, r.existing, r.enqueued), (0, 0, 1, 0));
            let r = w.fanout.fan_out_swept(std::slice::from_ref(&e)).await;
            assert_eq!((r.noted, r.created, r.existing, r.enqueued), (0, 0, 1, 0));
        }
        assert_eq!(w.queue.len(), 1);
        assert!(w.deliveries.all().is_empty());
    }

    #[tokio::test]
    async fn a_failed_note_offers_the_event_again_and_the_replay_notes_it() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let e = event("a", EventType::LeadWon);
        let unnoted = FanOut::new(
            w.endpoints.clone(),
            Arc::new(webhooks_faults::Faulty::new(
                w.deliveries.clone(),
                Arc::new(
                    webhooks_faults::Script::new().fail(webhooks_faults::Op::NoteQueued, ..=1),
                ),
            )),
            w.queue.clone(),
        );
        let r = unnoted.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.noted, r.enqueued, r.first_failure), (0, 1, Some(0)));
        // The replay finds nothing noted: a second message, noted this time.
        let r = unnoted.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.noted, r.enqueued, r.first_failure), (1, 1, None));
        let tasks: Vec<DeliveryTask> = w
            .queue
            .bodies()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        assert_eq!(tasks.len(), 2);
        // The same deliveries make the same key; the note names the
        // replay's message, and the first one gives way to it.
        assert_eq!(tasks[0].queued, tasks[1].queued);
        let received = w.queue.receive(10, Duration::ZERO).await.unwrap();
        let note = w
            .deliveries
            .notes(&[("a".to_string(), tasks[0].queued.clone().unwrap())])
            .await
            .unwrap();
        let named = received
            .iter()
            .filter(|m| note[0].names(&tasks[0].delivery_id, &m.message_id))
            .count();
        assert_eq!((received.len(), named), (2, 1), "one of the two named");
    }

    #[tokio::test]
    async fn every_message_carries_its_org_as_the_fair_queue_tenant() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "a", &["*"]).await;
        endpoint(&w, "b", &["*"]).await;
        let events = [
            event("a", EventType::LeadWon),
            event("b", EventType::LeadWon),
        ];
        let r = w.fanout.fan_out(&events).await;
        assert_eq!(r.enqueued, 3);
        let mut tenants: Vec<Option<String>> =
            w.queue.messages().into_iter().map(|m| m.tenant).collect();
        tenants.sort();
        let a = Some(webhooks_domain::tenant::org_tenant("a"));
        let b = Some(webhooks_domain::tenant::org_tenant("b"));
        assert_eq!(tenants, [a.clone(), a, b]);
    }

    #[tokio::test]
    async fn a_replayed_event_creates_nothing_new() {
        let w = world();
        endpoint_before(&w, "a").await;
        // Past the notes' deadline: the stream's replay reads the records.
        let e = event_aged("a", 45);
        w.fanout.fan_out_swept(std::slice::from_ref(&e)).await;
        let d = w.deliveries.all().remove(0);
        w.deliveries
            .record_attempt(
                &d.id,
                &webhooks_ports::AttemptUpdate {
                    attempt: webhooks_domain::Attempt {
                        number: 1,
                        at: chrono::Utc::now(),
                        status_code: Some(500),
                        error: None,
                        latency_ms: 1,
                        response_body: None,
                    },
                    status: DeliveryStatus::Pending,
                    next_attempt_at: None,
                    last_error: None,
                    unleased_by: None,
                },
            )
            .await
            .unwrap();
        // Attempted once: the replay (the event twice in it) must not queue
        // it again.
        let r = w.fanout.fan_out(&[e.clone(), e]).await;
        assert_eq!((r.created, r.existing, r.enqueued), (0, 1, 0));
        assert_eq!(w.deliveries.all().len(), 1);
        assert_eq!(w.queue.len(), 1);
    }

    /// A queue that refuses every send.
    struct Down;

    #[async_trait::async_trait]
    impl Queue for Down {
        async fn send_batch_ids(
            &self,
            _: &[QueueMessage],
        ) -> Result<Vec<Option<String>>, BackendError> {
            Err(BackendError::Transient("down".into()))
        }
        async fn receive(
            &self,
            _: usize,
            _: Duration,
        ) -> Result<Vec<webhooks_ports::ReceivedMessage>, BackendError> {
            Ok(vec![])
        }
        async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), BackendError> {
            Ok(())
        }
        async fn delete_batch(&self, _: &[String]) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_delivery_is_created_only_after_its_message_was_sent() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let down = FanOut::new(w.endpoints.clone(), w.deliveries.clone(), Arc::new(Down));
        let e = event("a", EventType::LeadWon);
        for swept in [false, true] {
            let r = if swept {
                down.fan_out_swept(std::slice::from_ref(&e)).await
            } else {
                down.fan_out(std::slice::from_ref(&e)).await
            };
            assert_eq!(r.first_failure, Some(0));
            assert_eq!((r.created, r.noted, r.enqueued), (0, 0, 0));
            assert!(w.deliveries.all().is_empty(), "no record without a message");
            assert!(w.deliveries.noted("a", &[]).await.unwrap().is_empty());
        }
        // Offered again once the queue is back.
        let r = w.fanout.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.noted, r.enqueued, r.first_failure), (1, 1, None));
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        let noted = w
            .deliveries
            .noted("a", std::slice::from_ref(&task.delivery_id))
            .await
            .unwrap();
        assert_eq!(noted.len(), 1, "noted once its message went");
    }

    #[tokio::test]
    async fn a_replay_gives_a_waiting_delivery_no_second_message() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let e = event("a", EventType::LeadWon);
        w.fanout.fan_out(std::slice::from_ref(&e)).await;
        // Pending, never attempted: its message waits on the queue (a
        // backlog, a deferral). A replay, or a sweep, leaves it alone.
        for _ in 0..3 {
            let r = w.fanout.fan_out(std::slice::from_ref(&e)).await;
            assert_eq!((r.created, r.existing, r.enqueued), (0, 1, 0));
            assert_eq!(r.first_failure, None);
        }
        assert_eq!(w.queue.len(), 1);
    }

    /// A faulty view of `w`'s deliveries whose records cannot be read.
    fn unreadable_records(w: &TestSystem) -> Arc<dyn DeliveryStore> {
        Arc::new(webhooks_faults::Faulty::new(
            w.deliveries.clone(),
            Arc::new(webhooks_faults::Script::new().fail(webhooks_faults::Op::GetDeliveries, ..)),
        ))
    }

    #[tokio::test]
    async fn a_young_events_fan_out_reads_no_records() {
        let w = world();
        endpoint(&w, "a", &["*"]).await;
        let blind = FanOut::new(w.endpoints.clone(), unreadable_records(&w), w.queue.clone());
        // A record of a delivery of an event this young exists only if a
        // note lists it, so its fan-out reads the notes alone: the records'
        // failing read does not stop it.
        let e = event("a", EventType::LeadWon);
        let r = blind.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.noted, r.enqueued, r.first_failure), (1, 1, None));
        // And the notes still keep a replay from a second message.
        let r = blind.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.existing, r.enqueued, r.first_failure), (1, 0, None));
        assert_eq!(w.queue.len(), 1);
        // Attempted since (its record created by its first attempt): still
        // one message.
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        w.attempt_first(&task.delivery_id, DeliveryStatus::Delivered)
            .await;
        let r = blind.fan_out(std::slice::from_ref(&e)).await;
        assert_eq!((r.existing, r.enqueued, r.first_failure), (1, 0, None));
        assert_eq!(w.queue.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_read_queues_nothing_and_offers_the_events_again() {
        let w = world();
        endpoint_before(&w, "a").await;
        endpoint_before(&w, "b").await;
        // Young: noted, then its first attempt delivered it. A blind send
        // would queue it again.
        let done = event("a", EventType::LeadWon);
        w.fanout.fan_out(std::slice::from_ref(&done)).await;
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[0]).unwrap();
        w.attempt_first(&task.delivery_id, DeliveryStatus::Delivered)
            .await;
        let queued = w.queue.len();
        // Past the notes' deadline, so their records are read.
        let quiet = event_aged("c", 45);
        let fresh = event_aged("b", 45);
        // Its reads of records (`get_many`) fail.
        let blind = FanOut::new(w.endpoints.clone(), unreadable_records(&w), w.queue.clone());
        let batch = [quiet, fresh.clone(), done];
        let r = blind.fan_out(&batch).await;
        assert_eq!((r.created, r.noted, r.existing, r.enqueued), (0, 0, 0, 0));
        // The first event has no endpoint: nothing to do, nothing to offer.
        assert_eq!(r.first_failure, Some(1));
        assert_eq!(w.queue.len(), queued, "nothing queued");
        assert_eq!(w.deliveries.all().len(), 1, "nothing created");
        // Offered again once the table answers: only the missing one goes.
        let r = w.fanout.fan_out(&batch[1..]).await;
        assert_eq!((r.created, r.existing, r.enqueued), (1, 1, 1));
        assert_eq!(r.first_failure, None);
        let task: DeliveryTask = serde_json::from_str(&w.queue.bodies()[queued]).unwrap();
        assert_eq!(task.event_id, fresh.id);
    }

    #[tokio::test]
    async fn test_events_go_to_their_target_only() {
        let w = world();
        let target = endpoint(&w, "a", &["lead_won"]).await;
        endpoint(&w, "a", &["*"]).await;
        let mut e = event("a", EventType::SurveySubmitted);
        e.target_endpoint = Some(target.id.clone());
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!(r.noted, 1);
        assert_eq!(w.made()[0].0, target.id);
    }

    async fn filtered_endpoint(w: &TestSystem, org: &str, pattern: serde_json::Value) -> Endpoint {
        let mut ep = Endpoint::new(
            org,
            "https://example.com/hook".into(),
            Subscription::All,
            Secret::generate(),
        );
        ep.filter = Some(webhooks_domain::EventFilter::parse(&pattern).unwrap());
        let created = w.endpoints.create(&ep, u32::MAX).await.unwrap();
        assert_eq!(created, webhooks_ports::Created::Written);
        ep
    }

    fn event_with(org: &str, t: EventType, data: &str) -> Event {
        Event::new(org, t, RawValue::from_string(data.into()).unwrap())
    }

    #[tokio::test]
    async fn an_event_goes_only_to_the_endpoints_whose_filter_matches_its_body() {
        let w = world();
        let big_eur = filtered_endpoint(
            &w,
            "a",
            serde_json::json!({"data": {"amount": [{"numeric": [">", 100]}], "currency": ["eur"]}}),
        )
        .await;
        let paid = filtered_endpoint(&w, "a", serde_json::json!({"type": ["invoice.paid"]})).await;
        let plain = endpoint(&w, "a", &["*"]).await;

        let small = event_with(
            "a",
            EventType::InvoicePaid,
            r#"{"amount":50,"currency":"eur"}"#,
        );
        let r = w.fanout.fan_out(std::slice::from_ref(&small)).await;
        assert_eq!((r.noted, r.enqueued), (2, 2));
        let big = event_with(
            "a",
            EventType::LeadWon,
            r#"{"amount":150,"currency":"eur"}"#,
        );
        let r = w.fanout.fan_out(std::slice::from_ref(&big)).await;
        assert_eq!((r.noted, r.enqueued), (2, 2));

        let got = w.made();
        let mut expected = vec![
            (paid.id.clone(), small.id.clone()),
            (plain.id.clone(), small.id.clone()),
            (big_eur.id.clone(), big.id.clone()),
            (plain.id.clone(), big.id.clone()),
        ];
        expected.sort();
        assert_eq!(got, expected);
        assert_eq!(w.queue.len(), 4, "no message for a filtered-out endpoint");
    }

    #[tokio::test]
    async fn a_test_event_reaches_its_endpoint_whatever_the_filter() {
        let w = world();
        let ep = filtered_endpoint(&w, "a", serde_json::json!({"data": {"never": ["x"]}})).await;
        let mut e = event("a", EventType::LeadWon);
        e.target_endpoint = Some(ep.id.clone());
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!(r.noted, 1);
    }

    #[tokio::test]
    async fn a_body_too_deep_to_read_reaches_only_endpoints_without_a_filter() {
        // The API keeps data as raw JSON, which may nest deeper than the
        // 128 levels serde_json parses into a value.
        let w = world();
        filtered_endpoint(
            &w,
            "a",
            serde_json::json!({"data": {"a": [{"exists": true}]}}),
        )
        .await;
        let plain = endpoint(&w, "a", &["*"]).await;
        let deep = format!(r#"{{"a":1,"b":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        let e = event_with("a", EventType::LeadWon, &deep);
        assert!(e.filter_body().is_none());
        let r = w.fanout.fan_out(&[e]).await;
        assert_eq!((r.noted, r.first_failure), (1, None));
        assert_eq!(w.made()[0].0, plain.id);
    }

    #[tokio::test]
    async fn one_event_to_a_thousand_endpoints_in_one_call() {
        let w = world();
        for _ in 0..1000 {
            endpoint(&w, "big", &["*"]).await;
        }
        let r = w
            .fanout
            .fan_out(&[event("big", EventType::ClientCreated)])
            .await;
        assert_eq!((r.noted, r.enqueued), (1000, 1000));
        assert_eq!(w.queue.len(), 1000);
        // 28 notes hold them all (36 a note): 28 writes, not a thousand.
        let mut keys: Vec<(String, String)> = w
            .queue
            .bodies()
            .iter()
            .map(|b| {
                let task: DeliveryTask = serde_json::from_str(b).unwrap();
                ("big".to_string(), task.queued.unwrap())
            })
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 1000_usize.div_ceil(NOTE_CAPACITY));
        assert_eq!(keys.len(), 28);
        let notes = w.deliveries.notes(&keys).await.unwrap();
        let listed: usize = notes.iter().map(|n| n.delivery_ids.len()).sum();
        assert_eq!(listed, 1000);
        assert!(notes.iter().all(|n| n.delivery_ids.len() <= NOTE_CAPACITY));
        let size = notes
            .iter()
            .map(webhooks_memory::note_item_size)
            .max()
            .unwrap();
        assert!(size <= 4096, "a note is read in one unit: {size} B");
    }
}
