//! The `webhooks` commands that talk to the management API over HTTP
//! (CONTRACT section 9), so they work the same against `webhooks dev` and a
//! deployed stack. Exit status: 0 on success, 1 when the API answers an error
//! (its message on stderr) or cannot be reached, 2 on a usage error.

mod table;

use crate::client::{
    Client, ClientError, Delivery, EndpointUpdate, EventLogQuery, HeaderPairs, List, NewEndpoint,
    Reply,
};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use std::io::IsTerminal as _;
use table::Table;

/// Success.
pub const EXIT_OK: i32 = 0;
/// The API answered an error, or could not be reached.
pub const EXIT_API_ERROR: i32 = 1;
/// The command line was wrong (clap uses 2 as well).
pub const EXIT_USAGE: i32 = 2;

/// Options every API command shares.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Base URL of the management API.
    #[arg(
        long,
        env = "WEBHOOKS_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        help_heading = "API client options"
    )]
    pub api_url: String,
    /// Bearer token (for `webhooks dev`: `webhooks dev token --org ORG`).
    #[arg(
        long,
        env = "WEBHOOKS_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "API client options"
    )]
    pub token: Option<String>,
    /// table for people, json (the API's body as is) for scripts; default:
    /// table on a terminal, json otherwise.
    #[arg(long, value_enum, global = true, help_heading = "API client options")]
    pub output: Option<Output>,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The API commands.
#[derive(Subcommand, Debug)]
pub enum ApiCommand {
    /// List the event types endpoints can subscribe to.
    EventTypes,
    /// Register, list, change and delete endpoints.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
    /// Publish events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// See and retry deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Print a link that opens the org's portal in a browser.
    Portal {
        /// How long the link works, in seconds (default 3600, at most 86400).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// List the org's endpoints.
    List {
        /// Page size (1 to 250).
        #[arg(long)]
        limit: Option<u32>,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one endpoint.
    Get { id: String },
    /// Register an endpoint; prints its signing secret once.
    Create {
        /// Where deliveries are POSTed.
        #[arg(long)]
        url: String,
        /// Comma-separated event types, or `*` for all.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Most deliveries per second the endpoint takes (default: no limit).
        #[arg(long, value_name = "PER_SECOND")]
        rate_limit: Option<u32>,
        /// Only events whose body matches this EventBridge-style pattern,
        /// e.g. '{"data":{"currency":["eur"]}}': JSON, or @FILE.
        #[arg(long, value_name = "JSON|@FILE")]
        filter: Option<String>,
        /// A header sent with every delivery (repeat for more, at most 20);
        /// its value is stored encrypted and never shown again.
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// How deliveries authenticate: '{"type":"basic","username":"u",
        /// "password":"p"}' or '{"type":"oauth2_client_credentials",
        /// "token_url":"https://...","client_id":"c","client_secret":"s",
        /// "scope":"..."}': JSON, or @FILE (keeps the secret out of the
        /// shell's history).
        #[arg(long, value_name = "JSON|@FILE")]
        auth: Option<String>,
    },
    /// Change an endpoint.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        /// Comma-separated event types, or `*` for all.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        events: Option<Vec<String>>,
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        enabled: Option<bool>,
        #[arg(long)]
        description: Option<String>,
        /// Most deliveries per second the endpoint takes.
        #[arg(long, value_name = "PER_SECOND", conflicts_with = "no_rate_limit")]
        rate_limit: Option<u32>,
        /// Lift the endpoint's rate limit.
        #[arg(long)]
        no_rate_limit: bool,
        /// Replace the payload filter: an event pattern as JSON, or @FILE.
        #[arg(long, value_name = "JSON|@FILE", conflicts_with = "no_filter")]
        filter: Option<String>,
        /// Remove the payload filter.
        #[arg(long)]
        no_filter: bool,
        /// Replace the custom headers with these (repeat for more).
        #[arg(
            long = "header",
            value_name = "NAME=VALUE",
            conflicts_with = "no_headers"
        )]
        headers: Vec<String>,
        /// Remove every custom header.
        #[arg(long)]
        no_headers: bool,
        /// Replace the auth (write-only: give the password or client
        /// secret again): JSON, or @FILE.
        #[arg(long, value_name = "JSON|@FILE", conflicts_with = "no_auth")]
        auth: Option<String>,
        /// Remove the auth.
        #[arg(long)]
        no_auth: bool,
    },
    /// Delete an endpoint; its pending deliveries are canceled.
    Delete { id: String },
    /// Show an endpoint's signing secret.
    Secret { id: String },
    /// Replace an endpoint's signing secret (the old one signs for 24 h more).
    RotateSecret { id: String },
    /// Send a test event to this endpoint only.
    Test {
        id: String,
        #[arg(long)]
        event_type: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Publish an event of TYPE to the org's endpoints.
    Publish {
        /// The event type, e.g. invoice.paid.
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// The event's data: JSON, or @FILE to read it from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        data: String,
        /// Publishing again with the same key returns the first event's id.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The org's events, newest first.
    List {
        /// Only events of this type.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Only events created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events created before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Page size (1 to 250).
        #[arg(long)]
        limit: Option<u32>,
        /// The next_cursor of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One event: its data and where it went.
    Get { id: String },
}

#[derive(Subcommand, Debug)]
pub enum DeliveriesCommand {
    /// An endpoint's deliveries, newest first.
    List {
        endpoint_id: String,
        /// pending, delivered, dead_lettered or canceled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One delivery with its attempts.
    Get { id: String },
    /// Send a dead-lettered or canceled delivery again.
    Retry { id: String },
}

/// A usage error found after parsing (exit 2).
#[derive(Debug)]
struct Usage(String);

/// Runs `command`; returns the exit status.
pub async fn run(global: &GlobalArgs, command: ApiCommand) -> i32 {
    let output = global.output.unwrap_or(if std::io::stdout().is_terminal() {
        Output::Table
    } else {
        Output::Json
    });
    let client = match Client::new(&global.api_url, global.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_API_ERROR;
        }
    };
    match execute(&client, output, command).await {
        Ok(()) => EXIT_OK,
        Err(Failure::Usage(Usage(m))) => {
            eprintln!("error: {m}");
            EXIT_USAGE
        }
        Err(Failure::Client(e)) => {
            eprintln!("error: {e}");
            EXIT_API_ERROR
        }
    }
}

enum Failure {
    Usage(Usage),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

/// A page of deliveries as a table; a page with none says whether more
/// follow (a filtered page examines a bounded part of the log, so an empty
/// one can have more after it).
fn deliveries_table(l: &List<Delivery>) -> String {
    if l.data.is_empty() {
        return match &l.next_cursor {
            Some(c) => {
                format!("none among the deliveries this page examined\nmore: --cursor {c}\n")
            }
            None => "no deliveries\n".to_string(),
        };
    }
    let mut t = Table::new(&[
        "ID",
        "STATUS",
        "EVENT TYPE",
        "ATTEMPTS",
        "LAST RESULT",
        "CREATED",
    ]);
    for d in &l.data {
        t.row(vec![
            d.id.clone(),
            d.status.clone(),
            d.event_type.clone(),
            d.attempts.len().to_string(),
            d.attempts.last().map(attempt_result).unwrap_or_default(),
            d.created_at.clone(),
        ]);
    }
    let mut s = t.render();
    if let Some(c) = &l.next_cursor {
        s.push_str(&format!("more: --cursor {c}\n"));
    }
    s
}

/// Prints an answer: its raw body for json, else the table `render` makes.
fn print<T>(output: Output, reply: &Reply<T>, render: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => {
            if !reply.raw.is_empty() {
                println!("{}", reply.raw.trim_end());
            }
        }
        Output::Table => print!("{}", render(&reply.value)),
    }
}

async fn execute(client: &Client, output: Output, command: ApiCommand) -> Result<(), Failure> {
    match command {
        ApiCommand::EventTypes => {
            let r = client.event_types().await?;
            print(output, &r, |l| {
                let mut t = Table::new(&["NAME", "DESCRIPTION"]);
                for e in &l.data {
                    t.row(vec![e.name.clone(), e.description.clone()]);
                }
                t.render()
            });
        }
        ApiCommand::Endpoints(c) => endpoints(client, output, c).await?,
        ApiCommand::Events(c) => events(client, output, c).await?,
        ApiCommand::Deliveries(c) => deliveries(client, output, c).await?,
        ApiCommand::Portal { ttl } => {
            let r = client.portal_session(ttl).await?;
            print(output, &r, |s| {
                eprintln!("This link opens the portal until {}.", s.expires_at);
                format!("{}\n", s.url)
            });
        }
    }
    Ok(())
}

async fn events(client: &Client, output: Output, c: EventsCommand) -> Result<(), Failure> {
    match c {
        EventsCommand::Publish {
            event_type,
            data,
            idempotency_key,
        } => {
            let data = read_json("--data", &data).map_err(Failure::Usage)?;
            let r = client
                .publish(&event_type, &data, idempotency_key.as_deref())
                .await?;
            print(output, &r, |v| {
                format!("published {}\n", v["id"].as_str().unwrap_or("?"))
            });
        }
        EventsCommand::List {
            event_type,
            since,
            until,
            limit,
            cursor,
        } => {
            let r = client
                .list_events(&EventLogQuery {
                    event_type,
                    since,
                    until,
                    limit,
                    cursor,
                })
                .await?;
            print(output, &r, |l| {
                let mut s = if l.data.is_empty() {
                    "no events\n".to_string()
                } else {
                    let mut t = Table::new(&["ID", "TYPE", "CREATED"]);
                    for e in &l.data {
                        t.row(vec![
                            e.id.clone(),
                            e.event_type.clone(),
                            e.created_at.clone(),
                        ]);
                    }
                    t.render()
                };
                if let Some(c) = &l.next_cursor {
                    s.push_str(&format!("more: --cursor {c}\n"));
                }
                s
            });
        }
        EventsCommand::Get { id } => {
            let r = client.get_event(&id).await?;
            print(output, &r, |e| {
                let mut s = Table::pairs(&[
                    ("id", e.id.clone()),
                    ("type", e.event_type.clone()),
                    ("created", e.created_at.clone()),
                ]);
                s.push_str("\ndata:\n");
                s.push_str(&serde_json::to_string_pretty(&e.data).unwrap_or_default());
                s.push_str("\n\n");
                if e.deliveries.is_empty() {
                    s.push_str("no deliveries\n");
                } else {
                    let mut t = Table::new(&["DELIVERY", "ENDPOINT", "STATUS"]);
                    for d in &e.deliveries {
                        t.row(vec![d.id.clone(), d.endpoint_id.clone(), d.status.clone()]);
                    }
                    s.push_str(&t.render());
                }
                s
            });
        }
    }
    Ok(())
}

async fn endpoints(client: &Client, output: Output, c: EndpointsCommand) -> Result<(), Failure> {
    match c {
        EndpointsCommand::List { limit, cursor } => {
            let r = client.list_endpoints(limit, cursor.as_deref()).await?;
            print(output, &r, |l| {
                let mut t = Table::new(&["ID", "URL", "EVENTS", "STATUS", "CREATED"]);
                for e in &l.data {
                    t.row(vec![
                        e.id.clone(),
                        e.url.clone(),
                        e.event_types.join(","),
                        enabled_text(e.enabled, e.disabled_reason.as_deref()),
                        e.created_at.clone(),
                    ]);
                }
                let mut s = t.render();
                if l.data.is_empty() {
                    s = "no endpoints\n".to_string();
                }
                if let Some(c) = &l.next_cursor {
                    s.push_str(&format!("more: --cursor {c}\n"));
                }
                s
            });
        }
        EndpointsCommand::Get { id } => {
            let r = client.get_endpoint(&id).await?;
            print(output, &r, |e| endpoint_details(e, None));
        }
        EndpointsCommand::Create {
            url,
            events,
            description,
            rate_limit,
            filter,
            headers,
            auth,
        } => {
            let filter = filter
                .map(|f| read_json("--filter", &f))
                .transpose()
                .map_err(Failure::Usage)?;
            let headers = header_pairs(&headers).map_err(Failure::Usage)?;
            let auth = auth
                .map(|a| read_secret_json("--auth", &a))
                .transpose()
                .map_err(Failure::Usage)?;
            let r = client
                .create_endpoint(&NewEndpoint {
                    url,
                    event_types: trimmed(events),
                    description,
                    rate_limit,
                    filter,
                    headers: (!headers.0.is_empty()).then_some(headers),
                    auth,
                })
                .await?;
            print(output, &r, |e| endpoint_details(e, e.secret.as_deref()));
        }
        EndpointsCommand::Update {
            id,
            url,
            events,
            enabled,
            description,
            rate_limit,
            no_rate_limit,
            filter,
            no_filter,
            headers,
            no_headers,
            auth,
            no_auth,
        } => {
            let filter = match (filter, no_filter) {
                (_, true) => Some(Value::Null),
                (Some(f), false) => Some(read_json("--filter", &f).map_err(Failure::Usage)?),
                (None, false) => None,
            };
            let headers = match (header_pairs(&headers).map_err(Failure::Usage)?, no_headers) {
                (_, true) => Some(None),
                (h, false) if h.0.is_empty() => None,
                (h, false) => Some(Some(h)),
            };
            let auth = match (auth, no_auth) {
                (_, true) => Some(Value::Null),
                (Some(a), false) => Some(read_secret_json("--auth", &a).map_err(Failure::Usage)?),
                (None, false) => None,
            };
            let update = EndpointUpdate {
                filter,
                headers,
                auth,
                url,
                event_types: events.map(trimmed),
                enabled,
                description,
                rate_limit: if no_rate_limit {
                    Some(None)
                } else {
                    rate_limit.map(Some)
                },
            };
            let r = client.update_endpoint(&id, &update).await?;
            print(output, &r, |e| endpoint_details(e, None));
        }
        EndpointsCommand::Delete { id } => {
            let r = client.delete_endpoint(&id).await?;
            print(output, &r, |_| format!("deleted {id}\n"));
        }
        EndpointsCommand::Secret { id } => {
            let r = client.secret(&id).await?;
            print(output, &r, |s| format!("{}\n", s.secret));
        }
        EndpointsCommand::RotateSecret { id } => {
            let r = client.rotate_secret(&id).await?;
            print(output, &r, |s| {
                eprintln!("The previous secret keeps signing for 24 hours.");
                format!("{}\n", s.secret)
            });
        }
        EndpointsCommand::Test { id, event_type } => {
            let r = client.send_test(&id, event_type.as_deref()).await?;
            print(output, &r, |v| {
                format!(
                    "sent test {} event {}\n",
                    v["event_type"].as_str().unwrap_or("?"),
                    v["event_id"].as_str().unwrap_or("?")
                )
            });
        }
    }
    Ok(())
}

async fn deliveries(client: &Client, output: Output, c: DeliveriesCommand) -> Result<(), Failure> {
    match c {
        DeliveriesCommand::List {
            endpoint_id,
            status,
            limit,
            cursor,
        } => {
            let r = client
                .list_deliveries(&endpoint_id, status.as_deref(), limit, cursor.as_deref())
                .await?;
            print(output, &r, deliveries_table);
        }
        DeliveriesCommand::Get { id } => {
            let r = client.get_delivery(&id).await?;
            print(output, &r, |d| {
                let mut s = Table::pairs(&[
                    ("id", d.id.clone()),
                    ("status", d.status.clone()),
                    ("endpoint", d.endpoint_id.clone()),
                    ("event", format!("{} ({})", d.event_id, d.event_type)),
                    ("created", d.created_at.clone()),
                    (
                        "next attempt",
                        d.next_attempt_at.clone().unwrap_or_else(|| "-".into()),
                    ),
                    (
                        "last error",
                        d.last_error.clone().unwrap_or_else(|| "-".into()),
                    ),
                ]);
                if !d.attempts.is_empty() {
                    s.push('\n');
                    let mut t = Table::new(&["#", "AT", "RESULT", "LATENCY", "RESPONSE"]);
                    for a in &d.attempts {
                        t.row(vec![
                            a.number.to_string(),
                            a.at.clone(),
                            attempt_result(a),
                            format!("{} ms", a.latency_ms),
                            one_line(a.response_body.as_deref().unwrap_or("-"), 60),
                        ]);
                    }
                    s.push_str(&t.render());
                }
                s
            });
        }
        DeliveriesCommand::Retry { id } => {
            let r = client.retry_delivery(&id).await?;
            print(output, &r, |_| format!("queued {id} again\n"));
        }
    }
    Ok(())
}

/// A JSON argument (`--data`, `--filter`): inline JSON, or `@FILE`.
fn read_json(flag: &str, arg: &str) -> Result<Value, Usage> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Usage(format!("{flag}: cannot read {path}: {e}")))?,
            path.to_string(),
        ),
        None => (arg.to_string(), flag.to_string()),
    };
    serde_json::from_str(&text)
        .map_err(|e| Usage(format!("{flag}: {source} is not valid JSON: {e}")))
}

/// A JSON argument that holds a secret (`--auth`): inline JSON, or
/// `@FILE`. Its errors never quote the text.
fn read_secret_json(flag: &str, arg: &str) -> Result<Value, Usage> {
    let (text, source) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Usage(format!("{flag}: cannot read {path}: {e}")))?,
            path.to_string(),
        ),
        None => (arg.to_string(), flag.to_string()),
    };
    serde_json::from_str(&text).map_err(|e| {
        Usage(format!(
            "{flag}: {source} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// `--header NAME=VALUE` arguments, split at the first `=`, in order. An
/// error names the argument by its place, never its text (the value is a
/// secret).
fn header_pairs(args: &[String]) -> Result<HeaderPairs, Usage> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| match arg.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), value.to_string()))
            }
            _ => Err(Usage(format!(
                "--header must be NAME=VALUE (--header number {} is not)",
                i + 1
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(HeaderPairs)
}

fn trimmed(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn enabled_text(enabled: bool, reason: Option<&str>) -> String {
    match (enabled, reason) {
        (true, _) => "enabled".into(),
        (false, Some(r)) => format!("disabled: {r}"),
        (false, None) => "disabled".into(),
    }
}

fn attempt_result(a: &crate::client::Attempt) -> String {
    match (a.status_code, &a.error) {
        (Some(code), _) => format!("HTTP {code}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "-".into(),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

fn endpoint_details(e: &crate::client::Endpoint, secret: Option<&str>) -> String {
    let mut pairs = vec![
        ("id", e.id.clone()),
        ("url", e.url.clone()),
        ("events", e.event_types.join(",")),
        (
            "status",
            enabled_text(e.enabled, e.disabled_reason.as_deref()),
        ),
        ("description", e.description.clone()),
        (
            "rate limit",
            e.rate_limit
                .map_or("none".to_string(), |r| format!("{r}/s")),
        ),
        (
            "filter",
            e.filter
                .as_ref()
                .map_or("none".to_string(), Value::to_string),
        ),
        ("headers", headers_text(&e.headers)),
        ("auth", auth_text(e.auth.as_ref())),
        ("created", e.created_at.clone()),
    ];
    if let Some(s) = secret {
        pairs.push(("secret", s.to_string()));
    }
    Table::pairs(&pairs)
}

/// Custom headers as the API shows them: names, values masked.
fn headers_text(headers: &serde_json::Map<String, Value>) -> String {
    if headers.is_empty() {
        return "none".to_string();
    }
    headers
        .iter()
        .map(|(name, masked)| format!("{name}: {}", masked.as_str().unwrap_or("********")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Auth as the API shows it (no password or client secret is ever there).
fn auth_text(auth: Option<&Value>) -> String {
    let Some(auth) = auth else {
        return "none".to_string();
    };
    let field = |k: &str| auth.get(k).and_then(Value::as_str);
    match field("type") {
        Some("basic") => format!("basic (username {})", field("username").unwrap_or("?")),
        Some("oauth2_client_credentials") => {
            let mut s = format!(
                "oauth2_client_credentials (client_id {}, token_url {}",
                field("client_id").unwrap_or("?"),
                field("token_url").unwrap_or("?")
            );
            if let Some(scope) = field("scope") {
                s.push_str(&format!(", scope {scope}"));
            }
            s.push(')');
            s
        }
        other => other.unwrap_or("?").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_arguments_keep_their_order_and_never_show_a_value_in_an_error() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pairs = header_pairs(&args(&["X-Key=a=b", "X-Empty=", "X-Key=c"])).unwrap();
        assert_eq!(
            serde_json::to_string(&pairs).unwrap(),
            r#"{"X-Key":"a=b","X-Empty":"","X-Key":"c"}"#
        );
        let Usage(m) = header_pairs(&args(&["X-Ok=1", "sk_live_secret"])).unwrap_err();
        assert!(m.contains("number 2") && !m.contains("sk_live"), "{m}");
        assert!(header_pairs(&args(&["=v"])).is_err());
        let Usage(m) = read_secret_json("--auth", r#"{"password":"hunter2""#).unwrap_err();
        assert!(!m.contains("hunter2"), "{m}");
    }

    #[test]
    fn details_show_header_names_and_auth_without_secrets() {
        let mut headers = serde_json::Map::new();
        headers.insert("X-Api-Key".into(), Value::String("********".into()));
        assert_eq!(headers_text(&headers), "X-Api-Key: ********");
        assert_eq!(headers_text(&serde_json::Map::new()), "none");
        let basic = serde_json::json!({"type": "basic", "username": "hooks"});
        assert_eq!(auth_text(Some(&basic)), "basic (username hooks)");
        let oauth = serde_json::json!({"type": "oauth2_client_credentials",
            "token_url": "https://a.test/t", "client_id": "c", "scope": null});
        assert_eq!(
            auth_text(Some(&oauth)),
            "oauth2_client_credentials (client_id c, token_url https://a.test/t)"
        );
        assert_eq!(auth_text(None), "none");
    }

    #[test]
    fn an_empty_page_of_deliveries_says_whether_more_follow() {
        let page = |next: Option<&str>| List::<Delivery> {
            data: Vec::new(),
            next_cursor: next.map(str::to_string),
        };
        assert_eq!(deliveries_table(&page(None)), "no deliveries\n");
        let more = deliveries_table(&page(Some("abc")));
        assert!(more.ends_with("more: --cursor abc\n"), "{more}");
        assert!(!more.contains("no deliveries"), "{more}");
    }
}
