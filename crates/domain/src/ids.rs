//! Identifiers: a short prefix naming the kind, then a time-ordered ULID, so
//! ids sort by creation time (the per-org cursor relies on that).

use ulid::Ulid;
use uuid::Uuid;

/// A new time-ordered id with the given prefix, e.g. `evt_01jd...`.
pub fn new_id(prefix: &str) -> String {
    // UUIDv7 from the uuid crate is monotonic within this process, which
    // keeps ids made in the same millisecond in creation order.
    let ulid = Ulid::from(Uuid::now_v7().as_u128());
    format!("{prefix}_{}", ulid.to_string().to_lowercase())
}

/// An id made at `t` with the given 80 bits of `entropy` (the low bits are
/// used): what a simulation on a virtual clock makes, so that a seed
/// determines every id.
pub fn id_at(prefix: &str, t: chrono::DateTime<chrono::Utc>, entropy: u128) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let ulid = Ulid::from_parts(ms, entropy & ((1u128 << 80) - 1));
    format!("{prefix}_{}", ulid.to_string().to_lowercase())
}

/// A new id made at `t`, the time a step's clock reads (a simulation's
/// virtual time too), with 80 random bits: ids made in one millisecond are
/// in no set order.
pub fn new_id_at(prefix: &str, t: chrono::DateTime<chrono::Utc>) -> String {
    id_at(prefix, t, rand::random::<u128>())
}

/// When an id with this prefix was made (to the millisecond), if it is one.
pub fn made_at(id: &str, prefix: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    body_made_at(body(id, prefix)?)
}

/// When an id's 26-character body (a ULID) was made. Crockford's base32
/// reads either case, so the lower-case bodies of our ids are decoded as
/// they are, without a copy.
pub fn body_made_at(body: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let ulid = Ulid::from_string(body).ok()?;
    chrono::DateTime::from_timestamp_millis(i64::try_from(ulid.timestamp_ms()).ok()?)
}

/// The smallest id with this prefix created at or after `t`; events after a
/// cursor made from it are those created at or after `t`.
pub fn id_floor_at(prefix: &str, t: chrono::DateTime<chrono::Utc>) -> String {
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0);
    let ulid = Ulid::from_parts(ms, 0);
    format!("{prefix}_{}", ulid.to_string().to_lowercase())
}

/// The 26-character body of an id after its prefix, when it has the
/// expected shape.
pub fn body<'a>(id: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = id.strip_prefix(prefix)?.strip_prefix('_')?;
    (rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("evt")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids[0].starts_with("evt_"));
        assert_eq!(ids[0].len(), 30);
    }

    #[test]
    fn floor_sorts_before_ids_made_after_it() {
        let floor = id_floor_at("evt", chrono::Utc::now() - chrono::Duration::seconds(1));
        assert!(floor < new_id("evt"));
    }

    #[test]
    fn ids_made_at_a_time_sort_by_it() {
        let t = chrono::Utc::now();
        let early = id_at("evt", t, u128::MAX);
        let late = id_at("evt", t + chrono::Duration::milliseconds(1), 0);
        assert!(id_floor_at("evt", t) <= early && early < late);
        assert_eq!(body(&early, "evt").map(str::len), Some(26));
    }

    #[test]
    fn an_id_tells_when_it_was_made() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00.123Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let id = new_id_at("evt", t);
        assert_eq!(made_at(&id, "evt"), Some(t));
        assert!(
            id_floor_at("evt", t) <= id
                && id < id_floor_at("evt", t + chrono::Duration::milliseconds(1))
        );
        assert_ne!(new_id_at("evt", t), id, "random below the millisecond");
        assert!(made_at(&new_id("evt"), "evt").is_some());
        assert_eq!(made_at(&id, "ep"), None);
        assert_eq!(made_at("evt_not-an-id", "evt"), None);
    }

    #[test]
    fn body_checks_shape() {
        let id = new_id("ep");
        assert_eq!(body(&id, "ep").map(str::len), Some(26));
        assert_eq!(body(&id, "evt"), None);
        assert_eq!(body("ep_short", "ep"), None);
    }
}
