//! `CursorStore`: a per-org low-water mark that only moves forward.

use super::on_both_backends;
use webhooks_ports::Adapters;

async fn cursors_contract(a: Adapters) {
    let c = a.cursors;
    assert_eq!(c.get("o").await.unwrap(), None);
    c.ensure("o", "evt_b").await.unwrap();
    c.ensure("o", "evt_a").await.unwrap();
    assert_eq!(
        c.get("o").await.unwrap().as_deref(),
        Some("evt_b"),
        "ensure keeps the first"
    );
    c.advance("o", "evt_d").await.unwrap();
    assert_eq!(c.get("o").await.unwrap().as_deref(), Some("evt_d"));
    c.advance("o", "evt_c").await.unwrap();
    assert_eq!(
        c.get("o").await.unwrap().as_deref(),
        Some("evt_d"),
        "never back"
    );
    c.advance("new", "evt_x").await.unwrap();
    let mut all = c.list().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        [
            ("new".to_string(), "evt_x".to_string()),
            ("o".to_string(), "evt_d".to_string())
        ]
    );
    // Where the sweeper's next pass starts: kept beside the cursors, never
    // listed among them.
    assert_eq!(c.resume_at().await.unwrap(), None);
    c.set_resume_at(Some("o")).await.unwrap();
    assert_eq!(c.resume_at().await.unwrap().as_deref(), Some("o"));
    assert_eq!(c.list().await.unwrap().len(), 2, "not an org's cursor");
    c.set_resume_at(None).await.unwrap();
    assert_eq!(c.resume_at().await.unwrap(), None);
    assert_eq!(c.list().await.unwrap().len(), 2);
}

on_both_backends!(cursors_contract, memory_cursors, moto_cursors);
