//! The `ringgate` command: run a gateway node, check a config file, mint a test token.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use ringgate::auth::token::{self, Claims};
use ringgate::config::{AuthMode, LogFormat};
use ringgate::{Config, Gateway, listener};

#[derive(Parser)]
#[command(name = "ringgate", version, about = "Thread-per-core io_uring long-connection gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway node.
    Run {
        /// Config file; defaults to config/ringgate.toml.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the reference backend (echo, rooms, pushes) on a TCP listener, for trials and tests.
    ReferenceBackend {
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: std::net::SocketAddr,
        /// Backend id, sent in HelloAck and answered to `whoami`.
        #[arg(long, default_value = "reference")]
        id: String,
        /// Most unacknowledged Upstreams accepted per link.
        #[arg(long, default_value_t = 4096)]
        window: u32,
        /// Redis URL of the location registry: pushes to a user then go only to the nodes
        /// holding the user (docs/registry.md). Without it they go to every node.
        #[arg(long)]
        redis: Option<String>,
        #[arg(long, default_value = "rg")]
        redis_prefix: String,
    },
    /// Check this machine against what a planned connection count needs; exits 1 on a FAIL.
    Doctor {
        /// Take the planned count from this config's limits.max_connections.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Planned connections on this machine (overrides the config).
        #[arg(long)]
        connections: Option<u64>,
        /// Check as a load generator opening connections to this many destinations.
        #[arg(long)]
        loadgen: Option<u64>,
        /// Source addresses the load generator spreads over.
        #[arg(long, default_value_t = 1)]
        sources: u64,
    },
    /// Check a config file; prints every problem and exits non-zero if there is one.
    CheckConfig { file: PathBuf },
    /// Write a self-signed certificate and key (PEM) for trials and tests; production uses a
    /// certificate from your CA.
    Cert {
        /// Directory to write cert.pem and key.pem into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Names the certificate is for.
        #[arg(long = "name", default_values_t = ["localhost".to_owned()])]
        names: Vec<String>,
    },
    /// Push through a node's server API (docs/api.md): to a user, a connection, a room or
    /// everyone. Prints the API's answer; exits 1 unless it is 200.
    Push {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long, conflicts_with_all = ["room", "broadcast", "conn"])]
        user: Option<String>,
        /// Only these devices of the user (repeatable).
        #[arg(long = "device", requires = "user")]
        devices: Vec<String>,
        /// Only these platforms of the user (repeatable).
        #[arg(long = "platform", requires = "user")]
        platforms: Vec<String>,
        #[arg(long, conflicts_with_all = ["broadcast", "conn"])]
        room: Option<String>,
        /// A connection id (from AuthOk or presence), on `--node`.
        #[arg(long, conflicts_with = "broadcast")]
        conn: Option<u64>,
        #[arg(long, requires = "conn")]
        node: Option<String>,
        #[arg(long)]
        broadcast: bool,
        /// The payload as text (sent as its UTF-8 bytes).
        #[arg(long, conflicts_with = "base64")]
        text: Option<String>,
        /// The payload in base64.
        #[arg(long)]
        base64: Option<String>,
    },
    /// Where a user is connected, through a node's server API.
    Presence {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
    },
    /// Mint a signed client token with a key from a config file (for testing).
    Token {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "default")]
        device: String,
        #[arg(long, default_value = "unspecified")]
        platform: String,
        /// Key id; the first configured key by default.
        #[arg(long)]
        kid: Option<String>,
        /// Lifetime, like "24h" or "30m".
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// Where the server API is and the key to call it with.
#[derive(clap::Args)]
struct ApiArgs {
    /// The node's listen.api address.
    #[arg(long, default_value = "127.0.0.1:9200")]
    api: String,
    /// One of the node's [api] keys.
    #[arg(long, env = "RINGGATE_API_KEY", hide_env_values = true)]
    key: String,
}

type LogHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter: RINGGATE_LOG when set (then config changes do not touch it), else the
/// config's log.level, reloadable on SIGHUP.
static LOG: std::sync::OnceLock<(LogHandle, bool)> = std::sync::OnceLock::new();

fn set_log_level(level: &str) {
    if let Some((handle, false)) = LOG.get()
        && let Ok(filter) = tracing_subscriber::EnvFilter::try_new(level)
    {
        let _ = handle.reload(filter);
    }
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // `run` starts logging once its config says how (log.format); everything else logs text.
    if !matches!(command, Command::Run { .. }) {
        init_logging(LogFormat::Text);
    }
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if JSON_LOGS.get().is_some() => {
            // A log pipeline parses every line; the reason the node stopped is one of them.
            tracing::error!(error = %e, "ringgate stopped");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ringgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set once logging writes JSON lines.
static JSON_LOGS: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Logs go to stderr: text (ANSI colours only on a terminal) or one JSON object per line.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = tracing_subscriber::EnvFilter::try_from_env("RINGGATE_LOG").ok();
    let pinned = from_env.is_some();
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info")));
    let _ = LOG.set((handle, pinned));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))).init(),
        // An event's fields sit beside timestamp, level and target (flattened); spans are left
        // out, as the gateway puts what a line is about in its own fields.
        LogFormat::Json => {
            let _ = JSON_LOGS.set(());
            registry.with(layer.json().flatten_event(true).with_current_span(false).with_span_list(false)).init()
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Run { config } => {
            let path = config.unwrap_or_else(|| PathBuf::from("config/ringgate.toml"));
            let config = Config::load(&path)?;
            init_logging(config.log_format);
            serve(config, &path)
        }
        Command::ReferenceBackend { listen, id, window, redis, redis_prefix } => {
            let lookups =
                redis.map(|url| ringgate::backend::server::spawn_registry_lookups(url, redis_prefix)).transpose()?;
            reference_backend(listen, id, window, lookups)
        }
        Command::Doctor { config, connections, loadgen, sources } => {
            let planned = match (connections, config) {
                (Some(n), _) => n,
                (None, Some(path)) => Config::load(&path)?.max_connections as u64,
                (None, None) => 100_000,
            };
            let role = match loadgen {
                Some(destinations) => ringgate::doctor::Role::LoadGen { destinations, sources },
                None => ringgate::doctor::Role::Gateway,
            };
            let findings = ringgate::doctor::diagnose(&ringgate::doctor::read_system(), planned, role);
            // A closed pipe (`| head`) is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ringgate doctor: {planned} connections planned");
            for f in &findings {
                let _ = writeln!(out, "{f}");
            }
            if findings.iter().any(|f| f.severity == ringgate::doctor::Severity::Fail) {
                return Err("this machine cannot hold the planned connections; see FAIL lines".into());
            }
            Ok(())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            if let Some(settings) = &config.tls {
                ringgate::transport::tls::Certs::load(settings)?;
            }
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Cert { out, names } => {
            let (cert, key) = ringgate::transport::tls::self_signed(&names)?;
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("cert.pem"), cert)?;
            std::fs::write(out.join("key.pem"), key)?;
            println!("wrote {0}/cert.pem and {0}/key.pem for {names:?}", out.display());
            Ok(())
        }
        Command::Push { api, user, devices, platforms, room, conn, node, broadcast, text, base64 } => {
            use base64::Engine;
            let payload = match (text, base64) {
                (Some(text), _) => base64::engine::general_purpose::STANDARD.encode(text),
                (None, Some(b64)) => b64,
                (None, None) => return Err("give the payload with --text or --base64".into()),
            };
            let mut body = serde_json::json!({ "payload": payload });
            match (user, room, conn, broadcast) {
                (Some(user), ..) => {
                    body["user"] = user.into();
                    body["devices"] = devices.into();
                    body["platforms"] = platforms.into();
                }
                (None, Some(room), ..) => body["room"] = room.into(),
                (None, None, Some(conn), _) => {
                    body["conn"] = conn.into();
                    if let Some(node) = node {
                        body["node"] = node.into();
                    }
                }
                (None, None, None, true) => body["broadcast"] = true.into(),
                _ => return Err("give a target: --user, --room, --conn or --broadcast".into()),
            }
            api_call(&api, "POST", "/v1/push", Some(body.to_string()))
        }
        Command::Presence { api, user } => {
            let path = format!("/v1/presence/{}", percent_encode(&user));
            api_call(&api, "GET", &path, None)
        }
        Command::Token { config, user, device, platform, kid, ttl } => {
            let config = Config::load(&config)?;
            let AuthMode::Token(rules) = &config.auth else {
                return Err("auth.mode is \"none\": no token needed".into());
            };
            let keys = &rules.secrets;
            let (kid, secret) = match kid {
                Some(kid) => keys.get_key_value(&kid).ok_or_else(|| format!("no key {kid:?} in auth.keys"))?,
                None => keys.iter().next().ok_or("no keys in auth.keys")?,
            };
            let ttl = ringgate::config::parse_duration(&ttl)?;
            let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + ttl.as_secs();
            println!("{}", token::mint(kid, secret, &Claims { sub: user, dev: device, plat: platform, exp }));
            Ok(())
        }
    }
}

/// Calls the API; prints its answer; an answer other than 200 is an error.
fn api_call(api: &ApiArgs, method: &str, path: &str, body: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let (status, text) = ringgate::api::client::call(&api.api, &api.key, method, path, body)?;
    println!("{text}");
    if status != 200 {
        return Err(format!("the API answered {status}").into());
    }
    Ok(())
}

fn percent_encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn serve(config: Config, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    if config.auth == AuthMode::None {
        tracing::warn!(
            "auth.mode = \"none\": ANY client is accepted as the user it claims; never use this in production"
        );
    }
    set_log_level(&config.log_level);
    // Built before the gateway starts, so "listening" means fully up.
    let signals = compio::runtime::Runtime::new()?;
    let listeners = listener::bind_group(config.listen_tcp, config.workers, 65_535)?;
    let gateway = Gateway::start(config, listeners)?;
    tracing::info!(addr = %gateway.local_addr(), driver = gateway.driver(), "listening; Ctrl-C or SIGTERM to stop");
    let drain = signals.block_on(wait_for_stop(&gateway, path));
    if drain {
        let report = gateway.drain();
        tracing::info!(
            connections = report.connections,
            left_at_deadline = report.left_at_deadline,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "drained"
        );
    }
    tracing::info!("shutting down");
    gateway.shutdown();
    Ok(())
}

/// Serves SIGHUP reloads until SIGINT (returns false: stop now) or SIGTERM / POST /drain
/// (returns true: drain first).
async fn wait_for_stop(gateway: &Gateway, path: &std::path::Path) -> bool {
    let mut int = std::pin::pin!(compio::signal::ctrl_c());
    let admin_drain = async {
        while !gateway.is_draining() {
            compio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let mut term = std::pin::pin!(first_of(compio::signal::unix::signal(libc::SIGTERM), admin_drain));
    loop {
        let mut hup = std::pin::pin!(compio::signal::unix::signal(libc::SIGHUP));
        let event = std::future::poll_fn(|cx| {
            if int.as_mut().poll(cx).is_ready() {
                std::task::Poll::Ready(Some(false))
            } else if term.as_mut().poll(cx).is_ready() {
                std::task::Poll::Ready(Some(true))
            } else if hup.as_mut().poll(cx).is_ready() {
                std::task::Poll::Ready(None)
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        match event {
            Some(drain) => return drain,
            None => reload(gateway, path),
        }
    }
}

fn reload(gateway: &Gateway, path: &std::path::Path) {
    match Config::load(path) {
        Err(errors) => tracing::error!("reload refused, config unchanged:\n{errors}"),
        Ok(config) => {
            set_log_level(&config.log_level);
            let restart = gateway.reload(config);
            if restart.is_empty() {
                tracing::info!("config reloaded");
            } else {
                tracing::warn!(?restart, "config reloaded; these changes need a restart and were not applied");
            }
        }
    }
}

fn reference_backend(
    listen: std::net::SocketAddr,
    id: String,
    window: u32,
    lookups: Option<ringgate::backend::server::LookupTx>,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = compio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let std_listener = listener::bind_group(listen, 1, 4096)?.remove(0);
        let listener = compio::net::TcpListener::from_std(std_listener)?;
        tracing::info!(addr = %listener.local_addr()?, %id, "reference backend listening");
        let server = ringgate::backend::server::serve(listener, id, window, lookups);
        first_of(server, compio::signal::ctrl_c()).await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// Completes when either future does.
async fn first_of(a: impl std::future::Future, b: impl std::future::Future) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
