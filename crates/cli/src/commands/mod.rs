//! The `webhooks` commands that talk to the management API over HTTP
//! (CONTRACT section 9), so they work the same against `webhooks dev` and a
//! deployed stack. Exit status: 0 on success, 1 when the API answers an error
//! (its message on stderr) or cannot be reached, 2 on a usage error.

mod table;

use crate::client::{
    Client, ClientError, Delivery, EndpointUpdate, EventLogQuery, List, NewEndpoint, Reply,
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
        } => {
            let filter = filter
                .map(|f| read_json("--filter", &f))
                .transpose()
                .map_err(Failure::Usage)?;
            let r = client
                .create_endpoint(&NewEndpoint {
                    url,
                    event_types: trimmed(events),
                    description,
                    rate_limit,
                    filter,
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
        } => {
            let filter = match (filter, no_filter) {
                (_, true) => Some(Value::Null),
                (Some(f), false) => Some(read_json("--filter", &f).map_err(Failure::Usage)?),
                (None, false) => None,
            };
            let update = EndpointUpdate {
                filter,
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
        ("created", e.created_at.clone()),
    ];
    if let Some(s) = secret {
        pairs.push(("secret", s.to_string()));
    }
    Table::pairs(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

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
