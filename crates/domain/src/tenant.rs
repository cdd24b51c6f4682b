//! Who a queue message belongs to, for the delivery queue's fairness.
//!
//! The delivery queue is an SQS fair queue: every message carries a tenant
//! (its `MessageGroupId`), and while one tenant holds more than its share
//! of the consumers, SQS hands out the other tenants' messages first. The
//! tenant is the **organization**: isolation is promised between orgs, and
//! an org with thousands of endpoints must count as one tenant, not as
//! thousands (an endpoint tenant would hand such an org a share per
//! endpoint). Within an org, the sender's per-endpoint limits keep one
//! endpoint from holding the others up.

use sha2::{Digest, Sha256};

/// The tenant of the platform's own operational notices (never an org's:
/// every org's tenant starts `org:` or `org#`).
pub const OPS_TENANT: &str = "ops";

/// Longest `MessageGroupId` SQS accepts.
pub const MAX_TENANT_CHARS: usize = 128;

/// Whether SQS accepts `id` as a `MessageGroupId`: 1 to 128 characters,
/// each a letter, a digit or ASCII punctuation.
pub fn is_valid_tenant(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TENANT_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b.is_ascii_punctuation())
}

/// The tenant of an org's messages: `org:<org_id>`, or, for an org id SQS
/// would not take as a group id (too long, or with other characters),
/// `org#<sha-256 of it, hex>`. Distinct orgs never share a tenant.
pub fn org_tenant(org_id: &str) -> String {
    let plain = format!("org:{org_id}");
    if is_valid_tenant(&plain) {
        plain
    } else {
        format!("org#{}", hex::encode(Sha256::digest(org_id.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_is_its_own_tenant() {
        assert_eq!(org_tenant("acme"), "org:acme");
        assert_ne!(org_tenant("acme"), org_tenant("globex"));
        assert!(is_valid_tenant(&org_tenant("acme")));
    }

    #[test]
    fn an_org_id_sqs_would_refuse_is_hashed_into_a_valid_tenant() {
        for org in ["a b", "ünïcode", &"x".repeat(200), "tab\there"] {
            let t = org_tenant(org);
            assert!(t.starts_with("org#"), "{t}");
            assert!(is_valid_tenant(&t), "{t}");
        }
        assert_ne!(org_tenant("a b"), org_tenant("a  b"));
    }

    #[test]
    fn group_ids_are_checked_as_sqs_checks_them() {
        assert!(is_valid_tenant("org:acme-1_2.3"));
        assert!(is_valid_tenant(OPS_TENANT));
        assert!(!is_valid_tenant(""));
        assert!(!is_valid_tenant("with space"));
        assert!(!is_valid_tenant("é"));
        assert!(!is_valid_tenant(&"x".repeat(129)));
        assert!(is_valid_tenant(&"x".repeat(128)));
    }

    #[test]
    fn no_org_shares_the_operators_tenant() {
        assert_ne!(org_tenant("ops"), OPS_TENANT);
        assert_ne!(org_tenant(""), OPS_TENANT);
    }
}
