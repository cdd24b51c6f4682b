//! One attempt's POST: the endpoint's `Authorization` first (Basic, or a
//! bearer token kept or fetched), then the request; with OAuth 2.0, a 401
//! fetches a new token and POSTs once more within the same attempt.

use super::Sender;
use crate::http::HttpOutcome;
use chrono::{DateTime, Utc};
use webhooks_domain::delivery::AttemptResult;
use webhooks_domain::{DeliveryTask, Endpoint};

impl Sender {
    /// POSTs the attempt `number` of `task` to `endpoint`, its headers
    /// dated `at`. Never fails: no `Authorization` to be had is an
    /// [`AttemptResult::Failed`] (`auth_failed: ...`) without a POST.
    pub(super) async fn send(
        &self,
        task: &DeliveryTask,
        endpoint: &Endpoint,
        number: u32,
        at: DateTime<Utc>,
    ) -> HttpOutcome {
        let started = std::time::Instant::now();
        let now = || self.clock.now();
        let transport = self.transport.as_ref();
        let authorization = match self.tokens.authorization(endpoint, transport, now).await {
            Ok(a) => a,
            Err(error) => return auth_failure(error, started),
        };
        let first = self
            .post_once(task, endpoint, number, at, authorization.clone())
            .await;
        let refused = matches!(first.result, AttemptResult::Responded { status: 401, .. });
        let Some(used) = authorization.filter(|_| refused) else {
            return first;
        };
        match self.tokens.after_401(endpoint, &used, transport, now).await {
            Ok(Some(fresh)) => {
                tracing::info!(
                    "the receiver refused the token (401); POSTing once more with a new one"
                );
                self.post_once(task, endpoint, number, at, Some(fresh))
                    .await
            }
            Ok(None) => first,
            Err(error) => auth_failure(error, started),
        }
    }

    async fn post_once(
        &self,
        task: &DeliveryTask,
        endpoint: &Endpoint,
        number: u32,
        at: DateTime<Utc>,
        authorization: Option<String>,
    ) -> HttpOutcome {
        let headers = super::delivery_headers(task, endpoint, number, at, authorization);
        self.transport
            .post(&endpoint.url, &headers, task.payload.clone())
            .await
    }
}

fn auth_failure(error: String, started: std::time::Instant) -> HttpOutcome {
    HttpOutcome {
        result: AttemptResult::Failed { error },
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        response_body: None,
    }
}
