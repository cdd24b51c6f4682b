//! The webhook receiver the end-to-end benchmarks deliver to: testkit's, in
//! its process mode (answers 204, keeps only a count, `GET /count`), run as
//! a child process (`webhooks-bench receiver`) so its CPU time is not
//! counted as the pipeline's.

use anyhow::Context as _;
use std::process::Command;
pub use webhooks_testkit::receiver::process::ReceiverProcess;

/// The child's side: serves until the parent exits.
pub fn run(port: u16, threads: usize) -> anyhow::Result<()> {
    webhooks_testkit::receiver::process::run(port, threads).context("running the receiver")
}

/// Starts `webhooks-bench receiver --port 0 --threads <threads>` and reads
/// its port.
pub fn spawn(threads: usize) -> anyhow::Result<ReceiverProcess> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut command = Command::new(exe);
    command.args(["receiver", "--port", "0", "--threads", &threads.to_string()]);
    ReceiverProcess::spawn(command).context("starting the receiver process")
}
