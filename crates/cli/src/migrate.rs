//! `webhooks migrate ...`: one-off data migrations an operator runs against
//! a deployed stack's tables, with the AWS SDK's default configuration and
//! credentials (`AWS_PROFILE`, `AWS_REGION`; `AWS_ENDPOINT_URL` for an
//! emulator). Each is idempotent: run it again after a failure.

use clap::{Args, Subcommand};
use std::io::Write;
use std::sync::Arc;
use webhooks_aws::envelope::EnvelopeCipher;
use webhooks_aws::seal_migration::{SealMigration, SealReport, DEFAULT_PAGE_SIZE};
use webhooks_aws::AwsClients;

/// Success: every endpoint is sealed with its version.
pub const EXIT_OK: i32 = 0;
/// Some endpoints were left as they were (listed on stderr), or the table
/// could not be read.
pub const EXIT_INCOMPLETE: i32 = 1;

/// The migrations.
#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// Seal every endpoint signing secret still stored in plaintext, or
    /// sealed without its endpoint's version: the API and the sender refuse
    /// such endpoints until this has run. Pages through the endpoints table
    /// and reports counts; idempotent.
    SealSecrets(SealSecretsArgs),
}

/// Where the endpoints are, and how to go through them.
#[derive(Args, Debug, Clone)]
pub struct SealSecretsArgs {
    /// The endpoints table: the stack's `EndpointsTableName` output
    /// (`webhooks dev --backend aws`: `<prefix>-endpoints`).
    #[arg(long, env = "ENDPOINTS_TABLE")]
    pub endpoints_table: String,
    /// The KMS key that seals endpoint secrets: the stack's
    /// `EndpointSecretsKeyArn` output (`webhooks dev --backend aws`:
    /// `alias/<prefix>-endpoint-secrets`).
    #[arg(long, env = "ENDPOINT_SECRETS_KEY_ARN")]
    pub kms_key: String,
    /// Items read per Scan page.
    #[arg(long, default_value_t = DEFAULT_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// Report what would be sealed, and check that it opens; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `command`; the exit status.
pub async fn run(command: MigrateCommand) -> i32 {
    let config = webhooks_aws::sdk_config().await;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match command {
        MigrateCommand::SealSecrets(args) => seal_secrets(&config, &args, &mut out, &mut err).await,
    }
}

/// `webhooks migrate seal-secrets` over `config`'s account: progress and
/// the endpoints left as they were on `err`, the counts on `out`.
pub async fn seal_secrets(
    config: &aws_config::SdkConfig,
    args: &SealSecretsArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let clients = AwsClients::from_config(config);
    let cipher = Arc::new(EnvelopeCipher::new(clients.kms, args.kms_key.clone()));
    let migration = SealMigration::new(clients.dynamodb, args.endpoints_table.clone(), cipher)
        .page_size(args.page_size)
        .dry_run(args.dry_run);
    let report = migration
        .run(|so_far| {
            let _ = writeln!(err, "page {}: {so_far}", so_far.pages);
        })
        .await;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            let _ = writeln!(
                err,
                "error: {e}; what was sealed stays sealed: run the command again"
            );
            return EXIT_INCOMPLETE;
        }
    };
    print_report(&report, args.dry_run, out, err);
    if report.complete() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    }
}

fn print_report(report: &SealReport, dry_run: bool, out: &mut impl Write, err: &mut impl Write) {
    for (org_id, endpoint_id, why) in &report.failed {
        let _ = writeln!(
            err,
            "left as it was: endpoint {endpoint_id} of org {org_id}: {why}"
        );
    }
    let prefix = if dry_run {
        "dry run, nothing written: "
    } else {
        ""
    };
    let _ = writeln!(out, "{prefix}{report}");
}
