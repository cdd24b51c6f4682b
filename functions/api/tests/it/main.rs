//! The management API end to end over memory adapters: every route's
//! success, validation, authorization and isolation, and that no input,
//! however malformed, produces a 5xx.

mod auth;
mod backend;
mod deliveries;
mod endpoint_auth;
mod endpoint_headers;
mod endpoints;
mod event_log;
mod events;
mod filters;
mod lambda_event;
mod malformed;
mod noted;
mod openapi;
mod portal;
mod portal_tokens;
mod races;
mod replay;
mod support;
