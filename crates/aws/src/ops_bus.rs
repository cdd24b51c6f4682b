//! An EventBridge bus behind the `OpsBus` port: operational notifications
//! for operators who route with AWS (rules to SNS, Slack, PagerDuty, ...).

use crate::error::backend_error;
use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use webhooks_domain::ops::OpsNotice;
use webhooks_ports::{BackendError, OpsBus, Result};

/// The `source` of every event this platform puts on the bus.
pub const SOURCE: &str = "devsphere.webhooks";

/// One EventBridge bus, by name.
#[derive(Clone)]
pub struct EventBridgeOpsBus {
    client: crate::Lazy<Client>,
    bus: String,
}

impl EventBridgeOpsBus {
    pub fn new(client: impl Into<crate::Lazy<Client>>, bus: impl Into<String>) -> Self {
        EventBridgeOpsBus {
            client: client.into(),
            bus: bus.into(),
        }
    }

    /// The bus named `bus`, through the SDK configuration `config` (the
    /// client made with the first notice).
    pub fn with_config(config: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        EventBridgeOpsBus::new(crate::Lazy::from_config(config, Client::new), bus)
    }
}

#[async_trait]
impl OpsBus for EventBridgeOpsBus {
    /// One event: `detail-type` the notice's type (`endpoint.disabled`),
    /// `detail` its body, as the operator's webhook gets it.
    async fn publish(&self, notice: &OpsNotice) -> Result<()> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(&notice.event_type)
            .detail(&notice.payload)
            .build();
        let out = self
            .client
            .get()
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| backend_error("PutEvents", e))?;
        match out.failed_entry_count {
            0 => Ok(()),
            _ => {
                let code = out
                    .entries
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|e| e.error_code)
                    .unwrap_or_default();
                Err(BackendError::Transient(format!(
                    "PutEvents: entry refused ({code})"
                )))
            }
        }
    }
}
