//! Every fault a run injects, by the name its figures count it under.

/// The receiver answered 500.
pub(super) const RECEIVER_500: &str = "receiver_500";
/// The receiver answered 429 with `Retry-After`.
pub(super) const RECEIVER_429: &str = "receiver_429_retry_after";
/// The receiver held the request past the client's timeout.
pub(super) const RECEIVER_TIMEOUT: &str = "receiver_timeout";
/// The receiver closed the connection without answering.
pub(super) const RECEIVER_RESET: &str = "receiver_connection_reset";
/// The receiver sent its body slowly.
pub(super) const RECEIVER_SLOW_BODY: &str = "receiver_slow_body";
/// A request to an (endpoint, event) pair that always fails.
pub(super) const RECEIVER_POISONED: &str = "receiver_always_failing_pair";
/// The sender was killed in the middle of a batch.
pub(super) const SENDER_CRASH: &str = "sender_crash_mid_batch";
/// The fan-out died between creating deliveries and queueing them (its
/// invocation timed out), and the stream batch was retried.
pub(super) const FAN_OUT_CRASH: &str = "fanout_crash_between_create_and_enqueue";
/// A fan-out's `SendMessageBatch` failed as a whole: the deliveries were
/// created and not queued.
pub(super) const ENQUEUE_FAILED: &str = "fanout_enqueue_failed_after_create";
/// Some entries of a fan-out's `SendMessageBatch` were refused.
pub(super) const ENQUEUE_PARTIALLY_REJECTED: &str = "fanout_enqueue_entries_rejected";
/// A send to the dead-letter queue failed.
pub(super) const DEAD_LETTER_SEND_FAILED: &str = "dlq_send_failed";
/// `ChangeMessageVisibility` failed.
pub(super) const VISIBILITY_CHANGE_FAILED: &str = "sqs_change_visibility_failed";
/// `DeleteMessageBatch` failed.
pub(super) const DELETE_FAILED: &str = "sqs_delete_failed";
/// A stream batch handed to the fan-out again.
pub(super) const DUPLICATED_STREAM_BATCH: &str = "duplicated_stream_batch";
/// A delivery-store write failed before it applied.
pub(super) const STORE_WRITE_FAILED: &str = "delivery_store_write_failed";
/// A delivery-store write applied, and the caller was told it failed.
pub(super) const STORE_WRITE_ACK_LOST: &str = "delivery_store_write_applied_but_failed";
/// A delivery-store read failed.
pub(super) const STORE_READ_FAILED: &str = "delivery_store_read_failed";
