//! End-to-end tests. Those in `pipeline_on_moto` run the Lambda handlers
//! against a real AWS emulator (moto server, started by `make test` and
//! reached through `AWS_ENDPOINT_URL`) and a real HTTP receiver on 127.0.0.1.

mod pipeline_on_moto;
mod support;
