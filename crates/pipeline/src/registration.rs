//! Registering an endpoint: the org's sweep must start no later than its
//! first endpoint, so its cursor is made before the endpoint is stored.

use webhooks_domain::{ids, Endpoint};
use webhooks_ports::{BackendError, Created, CursorStore, EndpointStore};

/// Stores `endpoint` unless its org already has `max_per_org` endpoints,
/// after making sure its org has a cursor at or before the endpoint's
/// creation (the sweeper then checks every event that can reach it). An
/// org at its limit has an endpoint, hence a cursor already: a refused
/// create writes nothing.
pub async fn register_endpoint(
    cursors: &dyn CursorStore,
    endpoints: &dyn EndpointStore,
    endpoint: &Endpoint,
    max_per_org: u32,
) -> Result<Created, BackendError> {
    cursors
        .ensure(
            &endpoint.org_id,
            &ids::id_floor_at("evt", endpoint.created_at),
        )
        .await?;
    endpoints.create(endpoint, max_per_org).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_domain::{Secret, Subscription};
    use webhooks_memory::MemoryBackend;
    use webhooks_ports::EndpointLookup;

    #[tokio::test]
    async fn the_org_gets_a_cursor_no_later_than_its_endpoint() {
        let m = MemoryBackend::new();
        let ep = Endpoint::new(
            "org",
            "https://x.test".into(),
            Subscription::All,
            Secret::generate(),
        );
        let created = register_endpoint(m.cursors.as_ref(), m.endpoints.as_ref(), &ep, 1)
            .await
            .unwrap();
        assert_eq!(created, Created::Written);
        let cursor = m.cursors.get("org").await.unwrap().expect("a cursor");
        assert!(cursor <= ids::id_floor_at("evt", ep.created_at));
        assert!(m.endpoints.get("org", &ep.id).await.unwrap().is_some());
    }
}
