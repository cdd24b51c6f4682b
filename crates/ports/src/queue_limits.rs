//! What SQS refuses, in one place: the SQS adapter cuts its batches by these
//! rules and checks each message before sending, and the memory queue refuses
//! exactly what they forbid, so that what works in `webhooks dev` and in the
//! tests also works on AWS.

use crate::QueueMessage;
use std::time::Duration;

/// Entries in one `SendMessageBatch` or `DeleteMessageBatch` call.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Bytes (UTF-8) of one message body. SQS has accepted 1 MiB since 2025, but
/// LocalStack and older regions stop at 256 KiB; the smaller limit holds
/// everywhere.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Bytes of all message bodies of one `SendMessageBatch` call.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The longest a message can stay hidden, counted from its receipt:
/// `ChangeMessageVisibility` refuses to take it further.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// Whether SQS accepts `c` in a message body: #x9 #xA #xD #x20-#xD7FF
/// #xE000-#xFFFD #x10000-#x10FFFF.
pub fn allowed_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Why SQS would refuse one message body, if it would.
pub fn check_message(body: &str) -> Result<(), String> {
    if body.is_empty() {
        return Err("the message body is empty".into());
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is {} bytes, more than the {MAX_MESSAGE_BYTES} SQS accepts",
            body.len()
        ));
    }
    // Bodies are JSON, nearly always ASCII: every printable ASCII byte is
    // allowed, so only a body with a control or non-ASCII byte needs the
    // scan by character (the sender's profile had this check at 3 %).
    // In blocks without an early exit, so that the compiler vectorizes it; a
    // tab or line break takes the scan by character, which allows them.
    let plain_ascii = body.as_bytes().chunks(64).all(|block| {
        block
            .iter()
            .fold(true, |ok, b| ok & (0x20..0x80).contains(b))
    });
    if plain_ascii {
        return Ok(());
    }
    if let Some((at, c)) = body.char_indices().find(|(_, c)| !allowed_char(*c)) {
        return Err(format!(
            "the message has the character U+{:04X} at byte {at}, which SQS does not accept",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Why SQS would refuse one message with its group id, if it would.
pub fn check_entry(message: &QueueMessage) -> Result<(), String> {
    check_message(&message.body)?;
    match &message.tenant {
        Some(t) if !webhooks_domain::tenant::is_valid_tenant(t) => Err(format!(
            "the MessageGroupId {t:?} is not 1 to {} letters, digits or punctuation, which SQS requires",
            webhooks_domain::tenant::MAX_TENANT_CHARS
        )),
        _ => Ok(()),
    }
}

/// Why SQS would refuse one `SendMessageBatch` request, if it would. Takes
/// the messages or references to them.
pub fn check_batch<M: std::borrow::Borrow<QueueMessage>>(messages: &[M]) -> Result<(), String> {
    if messages.is_empty() {
        return Err("a batch needs at least one message".into());
    }
    if messages.len() > MAX_BATCH_ENTRIES {
        return Err(format!(
            "{} entries in one batch, more than the {MAX_BATCH_ENTRIES} SQS accepts",
            messages.len()
        ));
    }
    let total: usize = messages.iter().map(|m| m.borrow().body.len()).sum();
    if total > MAX_BATCH_BYTES {
        return Err(format!(
            "the batch is {total} bytes, more than the {MAX_BATCH_BYTES} SQS accepts"
        ));
    }
    messages.iter().try_for_each(|m| check_entry(m.borrow()))
}

/// How a list of bodies is sent: the indexes of bodies SQS would refuse
/// whatever the batch, and the rest cut into batches SQS accepts (at most
/// ten entries and 1 MiB each, in order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchPlan {
    pub refused: Vec<(usize, String)>,
    pub batches: Vec<Vec<usize>>,
}

/// Cuts `messages` into batches by count and by bytes.
pub fn plan_batches(messages: &[QueueMessage]) -> BatchPlan {
    let mut plan = BatchPlan::default();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, message) in messages.iter().enumerate() {
        if let Err(reason) = check_entry(message) {
            plan.refused.push((i, reason));
            continue;
        }
        let body = &message.body;
        if current.len() == MAX_BATCH_ENTRIES || bytes + body.len() > MAX_BATCH_BYTES {
            plan.batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += body.len();
    }
    if !current.is_empty() {
        plan.batches.push(current);
    }
    plan
}

/// How long ago a message was sent, from SQS's `SentTimestamp` attribute
/// (epoch milliseconds); `None` if it does not read as one.
pub fn age_of_sent_timestamp(sent_ms: &str) -> Option<std::time::Duration> {
    let sent = sent_ms.parse::<i64>().ok()?;
    let now = chrono::Utc::now().timestamp_millis();
    u64::try_from(now.saturating_sub(sent))
        .ok()
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged(bodies: &[String]) -> Vec<QueueMessage> {
        bodies.iter().map(QueueMessage::untagged).collect()
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        let small = untagged(&(0..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
        let plan = plan_batches(&small);
        assert!(plan.refused.is_empty());
        assert_eq!(
            plan.batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let big = untagged(&vec!["x".repeat(MAX_MESSAGE_BYTES); 9]);
        let plan = plan_batches(&big);
        assert_eq!(
            plan.batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [4, 4, 1]
        );
        for batch in &plan.batches {
            let messages: Vec<QueueMessage> = batch.iter().map(|i| big[*i].clone()).collect();
            check_batch(&messages).expect("a planned batch is accepted");
        }
    }

    #[test]
    fn over_size_and_forbidden_characters_are_refused_alone() {
        let bodies = untagged(&[
            "ok".to_string(),
            "x".repeat(MAX_MESSAGE_BYTES + 1),
            "bad \u{FFFF}".to_string(),
            "nul \u{0}".to_string(),
            "fine \u{FFFD} \u{10FFFF} \t\r\n".to_string(),
        ]);
        let plan = plan_batches(&bodies);
        assert_eq!(
            plan.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(
            plan.refused[1].1.contains("U+FFFF"),
            "{}",
            plan.refused[1].1
        );
        assert_eq!(plan.batches, vec![vec![0, 4]]);
        assert!(check_batch(&untagged(&vec!["a".to_string(); 11])).is_err());
    }

    #[test]
    fn a_group_id_sqs_would_refuse_is_refused_alone() {
        let messages = vec![
            QueueMessage::new("a", "org:acme"),
            QueueMessage::new("b", "has space"),
            QueueMessage::new("c", ""),
            QueueMessage::new("d", "x".repeat(129)),
            QueueMessage::untagged("e"),
        ];
        let plan = plan_batches(&messages);
        assert_eq!(
            plan.refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(
            plan.refused[0].1.contains("MessageGroupId"),
            "{}",
            plan.refused[0].1
        );
        assert_eq!(plan.batches, vec![vec![0, 4]]);
        assert!(check_batch(&messages).is_err());
    }

    #[test]
    fn every_character_is_judged_as_sqs_judges_it_in_ascii_and_beyond() {
        // The ASCII fast path and the scan by character agree: each
        // character alone, and after plain ASCII, is accepted exactly when
        // SQS accepts it.
        let chars = (0u32..0x3000)
            .chain(0xD000..0xE100)
            .chain(0xFFF0..0x10010)
            .chain(0x10FFF0..=0x10FFFF)
            .filter_map(char::from_u32);
        for c in chars {
            for body in [c.to_string(), format!("{{\"k\":\"v\"}} {c} tail")] {
                assert_eq!(
                    check_message(&body).is_ok(),
                    allowed_char(c),
                    "U+{:04X} in {body:?}",
                    u32::from(c)
                );
            }
        }
        let err = check_message("plain ascii then \u{1F}").unwrap_err();
        assert!(err.contains("U+001F at byte 17"), "{err}");
    }

    #[test]
    fn a_sent_timestamp_gives_the_message_age() {
        let sent = (chrono::Utc::now().timestamp_millis() - 1500).to_string();
        let age = age_of_sent_timestamp(&sent).expect("an age");
        assert!(age >= std::time::Duration::from_millis(1500), "{age:?}");
        assert!(age < std::time::Duration::from_secs(60), "{age:?}");
        assert_eq!(age_of_sent_timestamp("soon"), None);
    }
}
