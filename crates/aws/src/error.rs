//! SDK errors mapped to the ports' transient/permanent split.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use webhooks_ports::BackendError;

const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
    "KMSThrottlingException",
    "RequestThrottled",
];

/// Whether the error is a failed condition of a conditional write.
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// Maps an SDK error: throttling, timeouts, network and 5xx errors are
/// transient; the rest are permanent.
pub(crate) fn backend_error<E>(op: &str, e: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            BackendError::Transient(format!(
                "{op}: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ))
        }
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("Unknown");
            let msg = err.message().unwrap_or("");
            let text = format!("{op}: {code}: {msg}");
            if TRANSIENT_CODES.contains(&code) || s.raw().status().is_server_error() {
                BackendError::Transient(text)
            } else {
                BackendError::Permanent(text)
            }
        }
        _ => BackendError::Permanent(format!(
            "{op}: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        )),
    }
}

pub(crate) fn decode_error(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent(format!("stored {what} is malformed: {e}"))
}
