//! Timestamps as the platform shows them: RFC 3339, UTC, whole seconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats a time the way every API response and payload shows it
/// (`2026-11-27T06:00:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 time with any offset into UTC.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde helpers for `DateTime<Utc>` as RFC 3339 strings.
pub mod serde_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }

    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::rfc3339(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => super::super::parse_rfc3339(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_with_z() {
        let t = parse_rfc3339("2026-11-27T07:00:00.123+01:00").unwrap();
        assert_eq!(rfc3339(t), "2026-11-27T06:00:00Z");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
