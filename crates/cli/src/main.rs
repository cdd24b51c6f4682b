//! `webhooks`: the local runner and its tools.

// mimalloc, set up by `webhooks_alloc::small_pages` first thing in `main`.
#[global_allocator]
static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use webhooks::backend::{
    Backend, Settings, DEFAULT_JWT_SECRET, DEFAULT_ORG_SLOW_LANE_CAP, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETENTION, DEFAULT_SLOW_LANE_CAP,
};
use webhooks_domain::retry::parse_duration;
use webhooks_domain::RetrySchedule;
use webhooks_fn_inbound::InboundConfig;
use webhooks_memory::Retention;

#[derive(Parser)]
#[command(
    name = "webhooks",
    version,
    about = "DevSphere webhooks: run the whole system locally, and manage endpoints, events and deliveries through the API"
)]
struct Cli {
    #[command(flatten)]
    global: webhooks::commands::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, inbound routes, fan-out, sender and sweeper in one process.
    Dev(Box<DevArgs>),
    /// One-off migrations of a deployed stack's tables (AWS credentials).
    #[command(subcommand)]
    Migrate(webhooks::migrate::MigrateCommand),
    #[command(flatten)]
    Api(webhooks::commands::ApiCommand),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DevArgs {
    #[command(subcommand)]
    command: Option<DevCommand>,
    /// Address to serve on: loopback unless you give it another. Beyond
    /// loopback it needs a --jwt-secret of your own.
    #[arg(long, env = "WEBHOOKS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// memory (embedded, nothing to install) or aws (the AWS SDK's default
    /// configuration; AWS_ENDPOINT_URL points it at LocalStack or moto).
    #[arg(long, env = "WEBHOOKS_BACKEND", value_enum, default_value = "memory")]
    backend: BackendKind,
    /// With --backend aws: create the tables and queues first.
    #[arg(long, env = "WEBHOOKS_CREATE_RESOURCES")]
    create_resources: bool,
    /// With --backend aws: resource names are PREFIX-events, PREFIX-deliveries, ...
    #[arg(long, env = "WEBHOOKS_RESOURCE_PREFIX", default_value = "webhooks-dev")]
    resource_prefix: String,
    /// Secret that verifies the HS256 bearer tokens (see `webhooks dev token`).
    #[arg(
        long,
        env = "WEBHOOKS_JWT_SECRET",
        default_value = DEFAULT_JWT_SECRET,
        hide_env_values = true
    )]
    jwt_secret: String,
    #[command(flatten)]
    jwt: JwtAudienceArgs,
    /// Delays before each retry, e.g. 1s,2s,4s (four attempts in all).
    #[arg(long, env = "WEBHOOKS_RETRY_SCHEDULE")]
    retry_schedule: Option<String>,
    /// Time limit of one delivery attempt.
    #[arg(long, env = "WEBHOOKS_REQUEST_TIMEOUT", default_value = DEFAULT_REQUEST_TIMEOUT)]
    request_timeout: String,
    /// Refuse loopback, private and link-local endpoints, as in production.
    #[arg(long, env = "WEBHOOKS_BLOCK_PRIVATE_ENDPOINTS")]
    block_private_endpoints: bool,
    /// Public URL of this server, for Twilio signatures (default: http://LISTEN).
    #[arg(long, env = "WEBHOOKS_PUBLIC_BASE_URL")]
    public_base_url: Option<String>,
    /// Route inbound messages to an org: PROVIDER:ADDRESS=ORG, e.g.
    /// twilio:+15550001111=org_a or whatsapp:1234567890=org_a. Repeatable.
    #[arg(long = "inbound-route", value_name = "PROVIDER:ADDRESS=ORG")]
    inbound_routes: Vec<String>,
    /// Operator URL that receives the operational notifications
    /// (endpoint.disabled, endpoint.enabled, delivery.dead_lettered), signed
    /// with --ops-webhook-secret.
    #[arg(
        long,
        env = "WEBHOOKS_OPS_WEBHOOK_URL",
        requires = "ops_webhook_secret"
    )]
    ops_webhook_url: Option<String>,
    /// The operator webhook's signing secret (whsec_ + base64 of 24 to 64 bytes).
    #[arg(
        long,
        env = "WEBHOOKS_OPS_WEBHOOK_SECRET",
        hide_env_values = true,
        requires = "ops_webhook_url"
    )]
    ops_webhook_secret: Option<String>,
    /// Print a one-line summary of the sender's figures (attempts by
    /// outcome, dead letters by cause, latency p50/p95) this often, e.g. 60s.
    #[arg(long, env = "WEBHOOKS_STATS_EVERY")]
    stats_every: Option<String>,
    /// Most requests in flight at once to an endpoint whose requests take
    /// over 2 s, or that has not answered yet (the slow lane); further
    /// messages for it wait on the queue. 0: no slow lane (and no org
    /// share), so one endpoint that never answers can hold every poller
    /// (README, Noisy neighbours).
    #[arg(long, env = "WEBHOOKS_SLOW_LANE_CAP", default_value_t = DEFAULT_SLOW_LANE_CAP.unwrap_or(0))]
    slow_lane_cap: u32,
    /// Most slow-lane requests in flight at once to all of one org's
    /// endpoints together, while another org has work waiting. 0: no org
    /// share.
    #[arg(long, env = "WEBHOOKS_ORG_SLOW_LANE_CAP", default_value_t = DEFAULT_ORG_SLOW_LANE_CAP.unwrap_or(0))]
    org_slow_lane_cap: u32,
    /// Most endpoints one organization may have (at least 1); POST
    /// /v1/endpoints past it answers 422 limit_exceeded and writes nothing.
    #[arg(
        long,
        env = "WEBHOOKS_MAX_ENDPOINTS_PER_ORG",
        default_value_t = webhooks_domain::endpoint::DEFAULT_MAX_ENDPOINTS_PER_ORG,
        value_parser = webhooks_fn_api::parse_max_endpoints_per_org
    )]
    max_endpoints_per_org: u32,
    /// With --backend memory: how long events and finished deliveries are
    /// kept, as the tables' TTL keeps them (pending deliveries always are).
    #[arg(long, env = "WEBHOOKS_RETENTION", default_value = DEFAULT_RETENTION)]
    retention: String,
    /// With --backend memory: keep at most this many finished deliveries,
    /// and this many events (the oldest go first), so memory stays bounded
    /// however many are published.
    #[arg(long, env = "WEBHOOKS_RETAIN_DELIVERIES", default_value_t = Retention::DEFAULT_MAX_KEPT)]
    retain_deliveries: usize,
}

/// The `iss` and `aud` of management-API tokens, as the template's
/// `JwtIssuer` and `JwtAudience` give them to API Gateway's authorizer.
#[derive(Args)]
struct JwtAudienceArgs {
    /// Issuer (`iss`) that tokens must carry; unset: any.
    #[arg(long, env = "WEBHOOKS_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Audiences, comma-separated: a token's `aud` (or, without one, its
    /// `client_id`) must be one of them; unset: any.
    #[arg(long, env = "WEBHOOKS_JWT_AUDIENCE", value_delimiter = ',')]
    jwt_audience: Vec<String>,
}

impl JwtAudienceArgs {
    fn audience(&self) -> webhooks::token::Audience {
        webhooks::token::Audience {
            issuer: self.jwt_issuer.clone().filter(|i| !i.trim().is_empty()),
            audience: self
                .jwt_audience
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
        }
    }
}

#[derive(Subcommand)]
enum DevCommand {
    /// Print a bearer token for `webhooks dev`.
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The organization (tenant) the token acts for.
    #[arg(long)]
    org: String,
    /// Space-separated scopes, e.g. "webhooks:manage events:write".
    #[arg(long, default_value = "webhooks:manage events:write")]
    scope: String,
    /// A role claim; `admin` grants every scope within the org.
    #[arg(long)]
    role: Option<String>,
    /// Must match the server's --jwt-secret.
    #[arg(
        long,
        env = "WEBHOOKS_JWT_SECRET",
        default_value = DEFAULT_JWT_SECRET,
        hide_env_values = true
    )]
    jwt_secret: String,
    /// The token's `iss` and `aud`: as the server's, to be accepted.
    #[command(flatten)]
    jwt: JwtAudienceArgs,
    /// How long the token is valid.
    #[arg(long, default_value = "24h")]
    ttl: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendKind {
    Memory,
    Aws,
}

fn parse_route(s: &str) -> anyhow::Result<(String, String, String)> {
    let (lhs, org) = s
        .split_once('=')
        .with_context(|| format!("--inbound-route '{s}' must look like PROVIDER:ADDRESS=ORG"))?;
    let (provider, address) = lhs
        .split_once(':')
        .with_context(|| format!("--inbound-route '{s}' must look like PROVIDER:ADDRESS=ORG"))?;
    anyhow::ensure!(
        matches!(provider, "twilio" | "whatsapp"),
        "--inbound-route provider must be twilio or whatsapp, not '{provider}'"
    );
    Ok((provider.to_string(), address.to_string(), org.to_string()))
}

/// The operator's webhook from its flags: a URL endpoints could have, and a
/// secret of the contract's shape (never echoed in an error).
fn ops_webhook(
    url: &str,
    secret: &str,
    allow_private: bool,
) -> anyhow::Result<webhooks_pipeline::OpsEndpoint> {
    let policy = webhooks_domain::EndpointUrlPolicy {
        allow_http: true,
        allow_private,
    };
    let url = policy
        .check(url.trim())
        .map_err(|e| anyhow::anyhow!("--ops-webhook-url: {e}"))?;
    let secret = webhooks_domain::Secret::parse(secret)
        .map_err(|e| anyhow::anyhow!("--ops-webhook-secret: {e}"))?;
    Ok(webhooks_pipeline::OpsEndpoint {
        url: url.to_string(),
        secret,
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn",
        )
    });
    let _ = tracing_subscriber::fmt()
        .compact()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    if let Some(DevCommand::Token(t)) = args.command {
        let ttl = parse_duration(&t.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
        let token = webhooks::token::issue_for(
            &t.jwt_secret,
            &t.org,
            &t.scope,
            t.role.as_deref(),
            ttl,
            &t.jwt.audience(),
        )
        .map_err(anyhow::Error::msg)?;
        println!("{token}");
        return Ok(());
    }
    check_listen(args.listen, &args.jwt_secret)?;
    init_logging();
    let schedule = match &args.retry_schedule {
        Some(s) => s
            .parse::<RetrySchedule>()
            .map_err(|e| anyhow::anyhow!("--retry-schedule: {e}"))?,
        None => RetrySchedule::default(),
    };
    webhooks_ports::queue_settings::check_schedule(&schedule)
        .map_err(|e| anyhow::anyhow!("--retry-schedule: {e}"))?;
    let request_timeout = parse_duration(&args.request_timeout)
        .map_err(|e| anyhow::anyhow!("--request-timeout: {e}"))?;
    let routes = args
        .inbound_routes
        .iter()
        .map(|r| parse_route(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ops_webhook = match (&args.ops_webhook_url, &args.ops_webhook_secret) {
        (Some(url), Some(secret)) => Some(ops_webhook(url, secret, !args.block_private_endpoints)?),
        _ => None,
    };
    let stats_every = args
        .stats_every
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--stats-every: {e}"))?;
    if stats_every.is_some_and(|d| d.is_zero()) {
        anyhow::bail!("--stats-every must be longer than zero");
    }
    let retention = webhooks::backend::retention(&args.retention, args.retain_deliveries)?;
    let backend = match args.backend {
        BackendKind::Memory => Backend::Memory,
        BackendKind::Aws => Backend::Aws {
            prefix: args.resource_prefix.clone(),
            create_resources: args.create_resources,
        },
    };
    let settings = Settings {
        backend,
        schedule,
        request_timeout,
        slow_lane_cap: Some(args.slow_lane_cap).filter(|c| *c > 0),
        org_slow_lane_cap: Some(args.org_slow_lane_cap).filter(|c| *c > 0),
        allow_private: !args.block_private_endpoints,
        max_endpoints_per_org: args.max_endpoints_per_org,
        inbound: InboundConfig {
            stripe_webhook_secret: optional_env("STRIPE_WEBHOOK_SECRET").map(Into::into),
            twilio_auth_token: optional_env("TWILIO_AUTH_TOKEN").map(Into::into),
            whatsapp_verify_token: optional_env("WHATSAPP_VERIFY_TOKEN").map(Into::into),
            whatsapp_app_secret: optional_env("WHATSAPP_APP_SECRET").map(Into::into),
            public_base_url: Some(
                args.public_base_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", args.listen)),
            ),
            ..InboundConfig::default()
        },
        portal_secret: Some(webhooks_fn_api::portal::DevSigningSecret(
            args.jwt_secret.clone(),
        )),
        ops_webhook,
        stats_every,
        retention,
        ..Settings::dev_defaults()
    };
    let tokens = webhooks::token::Verifier::new(args.jwt_secret, args.jwt.audience());
    webhooks::dev::run(args.listen, tokens, settings, routes).await
}

/// Refuses to serve beyond loopback with the well-known default secret,
/// with which anyone who reaches the server could sign tokens for any org.
fn check_listen(listen: SocketAddr, jwt_secret: &str) -> anyhow::Result<()> {
    if listen.ip().to_canonical().is_loopback() || jwt_secret != DEFAULT_JWT_SECRET {
        return Ok(());
    }
    anyhow::bail!(
        "refusing --listen {listen} with the default --jwt-secret: anyone who can reach \
         {listen} could sign tokens for any org with it. Give a secret of your own \
         (--jwt-secret or WEBHOOKS_JWT_SECRET), or listen on loopback (--listen 127.0.0.1:8080)"
    )
}

#[tokio::main]
async fn main() {
    webhooks_alloc::small_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev(*args).await,
        Command::Migrate(command) => std::process::exit(webhooks::migrate::run(command).await),
        Command::Api(command) => {
            std::process::exit(webhooks::commands::run(&cli.global, command).await)
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_listens_on_loopback_by_default() {
        let cli = Cli::try_parse_from(["webhooks", "dev"]).unwrap();
        let Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        // The environment may set WEBHOOKS_LISTEN; the default is loopback.
        if std::env::var_os("WEBHOOKS_LISTEN").is_none() {
            assert!(args.listen.ip().is_loopback(), "{}", args.listen);
        }
    }

    #[test]
    fn beyond_loopback_a_secret_of_ones_own_is_needed() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for loopback in [
            "127.0.0.1:8080",
            "127.0.0.2:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(
                check_listen(addr(loopback), DEFAULT_JWT_SECRET).is_ok(),
                "{loopback}"
            );
        }
        for open in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.168.1.2:8080",
            "[::ffff:10.0.0.1]:80",
        ] {
            let e = check_listen(addr(open), DEFAULT_JWT_SECRET)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--listen") && e.contains("--jwt-secret"), "{e}");
            assert!(
                check_listen(addr(open), "a-secret-of-my-own").is_ok(),
                "{open}"
            );
        }
    }
}
