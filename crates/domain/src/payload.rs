//! A delivery's request body, shared rather than copied from the fan-out to
//! the POST, and carried in the task message as the JSON it is.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// The exact body of a delivery's requests (what is signed and sent):
/// JSON text, shared by every clone (a reference count, not a copy), so
/// one event's payload serves every endpoint it goes to and the POST sends
/// the bytes the task was read into.
///
/// In a task message it is written as raw JSON (`"payload":{"id":...}`),
/// not as a string holding escaped JSON: nothing is escaped on the way in
/// or unescaped on the way out, and the bytes read back are the bytes
/// written. A payload that is not a JSON object, or that holds a character
/// SQS does not carry (U+FFFE, U+FFFF; `DeliveryTask::to_message` escapes
/// those, which only a string decodes back), is written as a string, as
/// every payload was before; both forms are read.
#[derive(Clone)]
pub struct Payload(Arc<Text>);

/// The text, held as the raw form carries it when it can: a JSON object
/// known valid and with no character SQS refuses (decided once per
/// payload, however many task messages carry it).
enum Text {
    Raw(Box<RawValue>),
    /// The raw form as a framed task message carries it
    /// ([`crate::DeliveryTask::from_message`]): one JSON object by the
    /// fan-out's word, taken from where the frame says it lies, not parsed
    /// again.
    Framed(Box<str>),
    Plain(Box<str>),
}

impl Payload {
    /// The body of `event`'s deliveries ([`crate::Event::payload`]), made
    /// once and shared by every endpoint it goes to; JSON by construction,
    /// so the raw form needs no check of it.
    pub fn of_event(event: &crate::Event) -> Payload {
        let json = event.payload_json();
        if carried_by_sqs(json.get()) {
            Payload(Arc::new(Text::Raw(json)))
        } else {
            Payload(Arc::new(Text::Plain(Box::<str>::from(json))))
        }
    }

    /// The payload a framed task message carries between `{` and `}`
    /// (`text`), taken as the fan-out wrote it: the fan-out writes the
    /// raw form only for a JSON object SQS carries as it is.
    pub(crate) fn framed(text: &str) -> Payload {
        Payload(Arc::new(Text::Framed(Box::from(text))))
    }

    /// Whether a task message carries it as raw JSON (the form a framed
    /// message needs), not as a string.
    pub(crate) fn is_raw(&self) -> bool {
        !matches!(&*self.0, Text::Plain(_))
    }

    pub fn as_str(&self) -> &str {
        match &*self.0 {
            Text::Raw(json) => json.get(),
            Text::Framed(text) | Text::Plain(text) => text,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

/// Whether SQS carries every character of `text` (nearly always: ASCII).
fn carried_by_sqs(text: &str) -> bool {
    text.is_ascii() || text.chars().all(crate::delivery::sqs_carries)
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::ops::Deref for Payload {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// The bytes to send: lets an HTTP body share the payload
/// (`bytes::Bytes::from_owner`).
impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<String> for Payload {
    /// Raw when it is one JSON object, nothing around it, and nothing SQS
    /// refuses (which only a string's escape carries); else plain.
    fn from(text: String) -> Self {
        let raw = text.starts_with('{')
            && text.ends_with('}')
            && carried_by_sqs(&text)
            && serde_json::from_str::<&RawValue>(&text).is_ok_and(|r| r.get().len() == text.len());
        if raw {
            if let Ok(json) = RawValue::from_string(text.clone()) {
                return Payload(Arc::new(Text::Raw(json)));
            }
        }
        Payload(Arc::new(Text::Plain(text.into_boxed_str())))
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload::from(text.to_string())
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Payload {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Payload {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Payload {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &*self.0 {
            // Written verbatim.
            Text::Raw(json) => json.serialize(s),
            // Only a renewal writes a framed payload again: checked then,
            // and written as a string should it not be JSON after all.
            Text::Framed(text) => match RawValue::from_string(text.to_string()) {
                Ok(json) => json.serialize(s),
                Err(_) => s.serialize_str(text),
            },
            Text::Plain(text) => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(d)?;
        let text = json.get();
        if text.starts_with('"') {
            // The string form: the JSON text, escaped.
            return serde_json::from_str::<String>(text)
                .map(|t| Payload(Arc::new(Text::Plain(t.into_boxed_str()))))
                .map_err(serde::de::Error::custom);
        }
        if !text.starts_with('{') {
            return Err(serde::de::Error::custom(
                "a payload is a JSON object or a string holding one",
            ));
        }
        // One JSON object, as it was read: kept, not copied or checked again.
        Ok(Payload(Arc::new(Text::Raw(json))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Carrier {
        payload: Payload,
    }

    fn round_trip(text: &str) -> (String, Payload) {
        let json = serde_json::to_string(&Carrier {
            payload: Payload::from(text),
        })
        .unwrap();
        let back: Carrier = serde_json::from_str(&json).unwrap();
        (json, back.payload)
    }

    #[test]
    fn an_object_travels_raw_and_reads_back_byte_for_byte() {
        let text = r#"{"id":"evt_1","data":{"q":"say \"hi\"\\","n":[1, 2.50,  3e2],"é":"\u2028"}}"#;
        let (json, back) = round_trip(text);
        assert_eq!(json, format!(r#"{{"payload":{text}}}"#), "nothing escaped");
        assert_eq!(back, text);
        assert_eq!(back.as_bytes(), text.as_bytes());
    }

    #[test]
    fn what_sqs_does_not_carry_or_what_is_not_an_object_travels_as_a_string() {
        for text in [
            "{\"x\":\"\u{FFFF}\"}",
            "{\"x\":\"\u{FFFE}\"}",
            "[1,2]",
            "\"a string\"",
            "not json {",
            "{\"unclosed\":",
            " {\"a\":1}",
            "{\"a\":1} ",
            "",
        ] {
            let (json, back) = round_trip(text);
            assert!(json.starts_with(r#"{"payload":""#), "{text:?}: {json}");
            assert_eq!(back, text, "{json}");
        }
    }

    #[test]
    fn messages_of_before_with_the_payload_as_a_string_still_read() {
        let old = r#"{"payload":"{\"id\":\"evt_1\",\"data\":{\"a\":\"\\\"\"}}"}"#;
        let back: Carrier = serde_json::from_str(old).unwrap();
        assert_eq!(back.payload, r#"{"id":"evt_1","data":{"a":"\""}}"#);
    }

    #[test]
    fn a_payload_that_is_neither_form_is_refused() {
        for body in [
            r#"{"payload":1}"#,
            r#"{"payload":[1]}"#,
            r#"{"payload":null}"#,
        ] {
            assert!(serde_json::from_str::<Carrier>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn an_events_payload_is_its_body_raw_unless_sqs_refuses_a_character() {
        let event = crate::Event::new(
            "org",
            crate::EventType::InvoicePaid,
            RawValue::from_string(r#"{"a": [1, "é"]}"#.into()).unwrap(),
        );
        let p = Payload::of_event(&event);
        assert_eq!(p, event.payload());
        let json = serde_json::to_string(&Carrier { payload: p }).unwrap();
        assert_eq!(json, format!(r#"{{"payload":{}}}"#, event.payload()));
        let odd = crate::Event::new(
            "org",
            crate::EventType::InvoicePaid,
            RawValue::from_string("{\"a\":\"\u{FFFF}\"}".into()).unwrap(),
        );
        let p = Payload::of_event(&odd);
        let json = serde_json::to_string(&Carrier { payload: p.clone() }).unwrap();
        assert!(json.starts_with(r#"{"payload":""#), "{json}");
        let back: Carrier = serde_json::from_str(&json).unwrap();
        assert_eq!(back.payload, odd.payload());
    }

    #[test]
    fn clones_share_the_text() {
        let p = Payload::from(String::from("{}"));
        let q = p.clone();
        assert!(std::ptr::eq(p.as_str(), q.as_str()));
    }
}
