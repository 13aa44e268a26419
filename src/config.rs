//! Command line and environment. Every value is validated before the server starts; a bad one stops
//! the start with one line that names the variable and what is wrong. Secrets are read only from
//! the environment or from files, never from flags, which other users can read in `ps`.

use clap::{Args, Parser, Subcommand};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "frontdesk",
    version,
    about = "Live video customer engagement: SFU, signaling, co-browse and billing in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (zero configuration: ./frontdesk.db, 127.0.0.1:8080).
    Serve(ServerArgs),
    /// Run the server with a seeded demo organization and print how to try it.
    Demo(ServerArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Create an organization with its default pool, first admin and widget key.
    CreateOrg(CreateOrgArgs),
    /// Mint an agent token signed with the configured or local HS256 secret.
    Token(TokenArgs),
    /// Sanitize an HTML document from stdin to stdout with the default co-browse policy: the
    /// exact code the relay runs before anything reaches an agent.
    Sanitize,
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Database URL: sqlite://path or postgres://... [default: sqlite://frontdesk.db]
    #[arg(long, env = "FRONTDESK_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "FRONTDESK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Log format: human or json.
    #[arg(long, env = "FRONTDESK_LOG_FORMAT", default_value = "human")]
    pub log_format: String,
    /// URL of a JWKS with the ES256/RS256 keys that sign agent tokens.
    #[arg(long, env = "FRONTDESK_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// File holding a JWKS with the ES256/RS256 keys that sign agent tokens.
    #[arg(long, env = "FRONTDESK_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Expected `iss` of agent tokens.
    #[arg(long, env = "FRONTDESK_JWT_ISSUER", default_value = "frontdesk")]
    pub jwt_issuer: String,
    /// Expected `aud` of agent tokens.
    #[arg(long, env = "FRONTDESK_JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,
    /// Least time between two JWKS refreshes caused by unknown key ids, in seconds.
    #[arg(
        long,
        env = "FRONTDESK_JWKS_REFRESH_MIN_INTERVAL",
        default_value = "30"
    )]
    pub jwks_refresh_min_interval: String,
    /// Lifetime of a visitor token, in seconds.
    #[arg(long, env = "FRONTDESK_VISITOR_TOKEN_TTL", default_value = "43200")]
    pub visitor_token_ttl: String,
    /// Public base URL of this server, used in printed links.
    #[arg(long, env = "FRONTDESK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a visitor who dropped mid-call may rejoin it, in seconds.
    #[arg(
        long,
        env = "FRONTDESK_VISITOR_RECONNECT_SECONDS",
        default_value = "60"
    )]
    pub visitor_reconnect_seconds: String,
    /// On shutdown, how long live calls may go on before they are ended, in seconds.
    #[arg(long, env = "FRONTDESK_DRAIN_SECONDS", default_value = "30")]
    pub drain_seconds: String,
    /// How long an org with an unpaid invoice keeps taking calls, in seconds.
    #[arg(long, env = "FRONTDESK_BILLING_GRACE_SECONDS", default_value = "0")]
    pub billing_grace_seconds: String,
    /// Stripe's API base URL (tests point it at a local fake).
    #[arg(
        long,
        env = "FRONTDESK_STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,
    /// The Stripe price of one seat; required with FRONTDESK_STRIPE_API_KEY.
    #[arg(long, env = "FRONTDESK_STRIPE_SEAT_PRICE_ID")]
    pub stripe_seat_price_id: Option<String>,
    /// Most seats the plan allows.
    #[arg(long, env = "FRONTDESK_PLAN_MAX_SEATS", default_value = "50")]
    pub plan_max_seats: String,
    /// UDP address of the SFU, one port for every peer [default: the FRONTDESK_LISTEN IP, port
    /// 7882 (an ephemeral port when FRONTDESK_LISTEN's port is 0)].
    #[arg(long, env = "FRONTDESK_MEDIA_UDP")]
    pub media_udp: Option<String>,
    /// IP addresses the SFU advertises to browsers, comma-separated [default: the bound
    /// address, or, when bound to 0.0.0.0, this host's primary address and 127.0.0.1].
    #[arg(long, env = "FRONTDESK_MEDIA_PUBLIC_IPS")]
    pub media_public_ips: Option<String>,
    /// Media worker threads, each with its own SFU core and UDP socket (port + k); a call lives
    /// on one of them [default: the available parallelism, at most 16].
    #[arg(long, env = "FRONTDESK_MEDIA_WORKERS")]
    pub media_workers: Option<String>,
    /// TURN URLs handed to browsers, comma-separated (turn:host:3478?transport=udp,
    /// turn:host:3478?transport=tcp, turns:host:5349); needs FRONTDESK_TURN_SECRET.
    #[arg(long, env = "FRONTDESK_TURN_URLS")]
    pub turn_urls: Option<String>,
    /// Lifetime of the TURN credentials handed out at each join, in seconds.
    #[arg(long, env = "FRONTDESK_TURN_TTL", default_value = "28800")]
    pub turn_ttl: String,
    /// Most supervisors' watch peers (`watch_offer`) one call may have at once, 0 to 256.
    #[arg(long, env = "FRONTDESK_MEDIA_MAX_WATCHERS", default_value = "8")]
    pub media_max_watchers: String,
    /// Sender of notification emails.
    #[arg(
        long,
        env = "FRONTDESK_SMTP_FROM",
        default_value = "frontdesk <noreply@localhost>"
    )]
    pub smtp_from: String,
}

#[derive(Debug, Clone, Args)]
pub struct CreateOrgArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long)]
    pub name: String,
    /// The first admin's user id: the `sub` of the tokens your identity provider issues.
    #[arg(long)]
    pub admin_user_id: String,
    #[arg(long)]
    pub admin_email: String,
    #[arg(long, default_value = "Admin")]
    pub admin_name: String,
    #[arg(long, default_value_t = 5)]
    pub seat_limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long)]
    pub org_id: String,
    #[arg(long)]
    pub user_id: String,
    /// admin or agent
    #[arg(long, default_value = "agent")]
    pub role: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 43_200)]
    pub ttl: u64,
    #[arg(long, env = "FRONTDESK_JWT_ISSUER", default_value = "frontdesk")]
    pub jwt_issuer: String,
    #[arg(long, env = "FRONTDESK_JWT_AUDIENCE", default_value = "authenticated")]
    pub jwt_audience: String,
}

/// One invalid setting: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// A secret value: its `Debug` never shows it, so it cannot leak through a log line.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub enum JwksSource {
    Url(url::Url),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Shared HS256 secret; when neither it nor a JWKS is set, the server uses a local secret it
    /// generates and keeps in the database (see `frontdesk token`).
    pub secret: Option<Secret>,
    pub jwks: Option<JwksSource>,
    pub issuer: String,
    pub audience: String,
    pub jwks_refresh_min_interval: Duration,
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub log_format: LogFormat,
    pub jwt: JwtConfig,
    pub visitor_token_ttl: Duration,
    pub public_url: Option<url::Url>,
    pub visitor_reconnect: Duration,
    pub drain: Duration,
    pub billing: crate::billing::BillingConfig,
    pub stripe: Option<StripeConfig>,
    pub plan_max_seats: u32,
    pub media: MediaConfig,
}

/// The SFU's socket and the ICE servers handed to browsers.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where the first worker's socket binds; worker k binds the port + k (each an ephemeral
    /// port when the port is 0).
    pub udp: SocketAddr,
    /// Media worker threads (shards), 1 to [`MAX_MEDIA_WORKERS`].
    pub workers: usize,
    /// Advertised IPs; empty: derive them from `udp` once it is bound.
    pub public_ips: Vec<std::net::IpAddr>,
    pub turn_urls: Vec<String>,
    pub turn_secret: Option<Secret>,
    pub turn_ttl: Duration,
    /// Most watchers per call.
    pub max_watchers: usize,
}

/// Stripe's API, for admin billing actions.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub api_base: String,
    pub api_key: Secret,
    pub seat_price: String,
}

/// The SFU's UDP port when FRONTDESK_MEDIA_UDP is not set.
pub const DEFAULT_MEDIA_PORT: u16 = 7882;
/// The default number of media workers is the available parallelism, capped here.
pub const DEFAULT_MAX_MEDIA_WORKERS: usize = 16;
/// Most media workers FRONTDESK_MEDIA_WORKERS may ask for.
pub const MAX_MEDIA_WORKERS: usize = 64;
pub const DEFAULT_DATABASE_URL: &str = "sqlite://frontdesk.db";
pub const DEMO_DATABASE_URL: &str = "sqlite://frontdesk-demo.db";

/// Environment lookup, injectable so that validation is testable without touching the process.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    pub fn resolve(
        args: &ServerArgs,
        default_db: &str,
        env: Env<'_>,
    ) -> Result<Config, ConfigError> {
        let listen = args.listen.parse().map_err(|_| {
            bad(
                "FRONTDESK_LISTEN",
                format!(
                    "not an address such as 127.0.0.1:8080 (got {:?})",
                    args.listen
                ),
            )
        })?;
        let database_url = resolve_database_url(&args.db, default_db)?;
        let log_format = match args.log_format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "FRONTDESK_LOG_FORMAT",
                    format!("must be human or json (got {other:?})"),
                ))
            }
        };
        let secret = read_secret(env, "FRONTDESK_JWT_SECRET")?;
        if let Some(s) = &secret {
            if s.expose().len() < 32 {
                return Err(bad(
                    "FRONTDESK_JWT_SECRET",
                    "too short: an HS256 secret needs at least 32 bytes",
                ));
            }
        }
        let jwks = match (&args.jwks_url, &args.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "FRONTDESK_JWKS_URL",
                    "set either FRONTDESK_JWKS_URL or FRONTDESK_JWKS_FILE, not both",
                ))
            }
            (Some(u), None) => {
                let url = url::Url::parse(u)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        bad(
                            "FRONTDESK_JWKS_URL",
                            format!("not an http(s) URL (got {u:?})"),
                        )
                    })?;
                Some(JwksSource::Url(url))
            }
            (None, Some(f)) => {
                if !f.is_file() {
                    return Err(bad(
                        "FRONTDESK_JWKS_FILE",
                        format!("no such file: {}", f.display()),
                    ));
                }
                Some(JwksSource::File(f.clone()))
            }
            (None, None) => None,
        };
        if args.jwt_issuer.trim().is_empty() {
            return Err(bad("FRONTDESK_JWT_ISSUER", "must not be empty"));
        }
        if args.jwt_audience.trim().is_empty() {
            return Err(bad("FRONTDESK_JWT_AUDIENCE", "must not be empty"));
        }
        let jwks_refresh_min_interval = Duration::from_secs(parse_seconds(
            "FRONTDESK_JWKS_REFRESH_MIN_INTERVAL",
            &args.jwks_refresh_min_interval,
            0,
            86_400,
        )?);
        let visitor_token_ttl = Duration::from_secs(parse_seconds(
            "FRONTDESK_VISITOR_TOKEN_TTL",
            &args.visitor_token_ttl,
            60,
            30 * 86_400,
        )?);
        let public_url = match &args.public_url {
            None => None,
            Some(u) => Some(
                url::Url::parse(u)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        bad(
                            "FRONTDESK_PUBLIC_URL",
                            format!("not an http(s) URL (got {u:?})"),
                        )
                    })?,
            ),
        };
        let visitor_reconnect = Duration::from_secs(parse_seconds(
            "FRONTDESK_VISITOR_RECONNECT_SECONDS",
            &args.visitor_reconnect_seconds,
            5,
            3_600,
        )?);
        let drain = Duration::from_secs(parse_seconds(
            "FRONTDESK_DRAIN_SECONDS",
            &args.drain_seconds,
            0,
            3_600,
        )?);
        let webhook_secrets = read_secret(env, "FRONTDESK_STRIPE_WEBHOOK_SECRET")?
            .map(|s| {
                String::from_utf8_lossy(s.expose())
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| p.as_bytes().to_vec())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let smtp_url = read_secret(env, "FRONTDESK_SMTP_URL")?;
        if let Some(u) = &smtp_url {
            let text = String::from_utf8_lossy(u.expose());
            if !(text.starts_with("smtp://") || text.starts_with("smtps://")) {
                return Err(bad(
                    "FRONTDESK_SMTP_URL",
                    "must start with smtp:// or smtps:// (the value is not shown: it may hold a password)",
                ));
            }
        }
        if args.smtp_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(bad(
                "FRONTDESK_SMTP_FROM",
                format!(
                    "not a mailbox such as \"frontdesk <noreply@example.com>\" (got {:?})",
                    args.smtp_from
                ),
            ));
        }
        let billing = crate::billing::BillingConfig {
            webhook_secrets,
            grace_s: i64::try_from(parse_seconds(
                "FRONTDESK_BILLING_GRACE_SECONDS",
                &args.billing_grace_seconds,
                0,
                90 * 86_400,
            )?)
            .unwrap_or(0),
            smtp_url,
            smtp_from: args.smtp_from.clone(),
        };
        let stripe = match read_secret(env, "FRONTDESK_STRIPE_API_KEY")? {
            None => None,
            Some(api_key) => {
                let seat_price = args
                    .stripe_seat_price_id
                    .clone()
                    .filter(|p| !p.trim().is_empty())
                    .ok_or_else(|| {
                        bad(
                            "FRONTDESK_STRIPE_SEAT_PRICE_ID",
                            "required with FRONTDESK_STRIPE_API_KEY",
                        )
                    })?;
                let api_base = url::Url::parse(&args.stripe_api_base)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        bad(
                            "FRONTDESK_STRIPE_API_BASE",
                            format!("not an http(s) URL (got {:?})", args.stripe_api_base),
                        )
                    })?;
                Some(StripeConfig {
                    api_base: api_base.as_str().to_owned(),
                    api_key,
                    seat_price,
                })
            }
        };
        let plan_max_seats = u32::try_from(parse_seconds(
            "FRONTDESK_PLAN_MAX_SEATS",
            &args.plan_max_seats,
            1,
            100_000,
        )?)
        .unwrap_or(50);
        let media = resolve_media(args, listen, env)?;
        Ok(Config {
            media,
            stripe,
            plan_max_seats,
            billing,
            visitor_reconnect,
            drain,
            listen,
            database_url,
            log_format,
            jwt: JwtConfig {
                secret,
                jwks,
                issuer: args.jwt_issuer.clone(),
                audience: args.jwt_audience.clone(),
                jwks_refresh_min_interval,
            },
            visitor_token_ttl,
            public_url,
        })
    }

    /// The base URL printed in links: the public URL, else the listen address.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

pub fn resolve_database_url(args: &DbArgs, default_db: &str) -> Result<String, ConfigError> {
    let url = args.database_url.as_deref().unwrap_or(default_db);
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(url.to_owned())
    } else {
        Err(bad(
            "FRONTDESK_DATABASE_URL",
            "must start with sqlite:// or postgres:// (the value is not shown: it may hold a password)",
        ))
    }
}

fn resolve_media(
    args: &ServerArgs,
    listen: SocketAddr,
    env: Env<'_>,
) -> Result<MediaConfig, ConfigError> {
    let udp = match &args.media_udp {
        // An ephemeral HTTP port (tests, side-by-side instances) gets an ephemeral media port.
        None if listen.port() == 0 => SocketAddr::new(listen.ip(), 0),
        None => SocketAddr::new(listen.ip(), DEFAULT_MEDIA_PORT),
        Some(v) => v.trim().parse().map_err(|_| {
            bad(
                "FRONTDESK_MEDIA_UDP",
                format!("not an address such as 0.0.0.0:7882 (got {v:?})"),
            )
        })?,
    };
    let workers = match args.media_workers.as_deref().map(str::trim) {
        None => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(DEFAULT_MAX_MEDIA_WORKERS),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_MEDIA_WORKERS).contains(n))
            .ok_or_else(|| {
                bad(
                    "FRONTDESK_MEDIA_WORKERS",
                    format!("not a number from 1 to {MAX_MEDIA_WORKERS} (got {v:?})"),
                )
            })?,
    };
    if udp.port() != 0 && usize::from(udp.port()) + workers - 1 > usize::from(u16::MAX) {
        return Err(bad(
            "FRONTDESK_MEDIA_WORKERS",
            format!(
                "{workers} workers need the UDP ports {} to {}, past 65535",
                udp.port(),
                usize::from(udp.port()) + workers - 1
            ),
        ));
    }
    let public_ips = split_list(args.media_public_ips.as_deref())
        .map(|ip| {
            ip.parse().map_err(|_| {
                bad(
                    "FRONTDESK_MEDIA_PUBLIC_IPS",
                    format!("not an IP address: {ip:?}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let turn_urls: Vec<String> = split_list(args.turn_urls.as_deref())
        .map(|u| {
            let ok = (u.starts_with("turn:") || u.starts_with("turns:"))
                && u.len() <= 256
                && u.chars().all(|c| c.is_ascii_graphic());
            if ok {
                Ok(u.to_owned())
            } else {
                Err(bad(
                    "FRONTDESK_TURN_URLS",
                    format!("not a turn: or turns: URL: {u:?}"),
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    let turn_secret = read_secret(env, "FRONTDESK_TURN_SECRET")?;
    if !turn_urls.is_empty() && turn_secret.is_none() {
        return Err(bad(
            "FRONTDESK_TURN_SECRET",
            "required with FRONTDESK_TURN_URLS (coturn's static-auth-secret)",
        ));
    }
    if turn_secret.as_ref().is_some_and(|s| s.expose().len() < 16) {
        return Err(bad(
            "FRONTDESK_TURN_SECRET",
            "too short: use at least 16 bytes",
        ));
    }
    let turn_ttl = Duration::from_secs(parse_seconds(
        "FRONTDESK_TURN_TTL",
        &args.turn_ttl,
        60,
        7 * 86_400,
    )?);
    let max_watchers = args
        .media_max_watchers
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX_WATCHERS_LIMIT)
        .ok_or_else(|| {
            bad(
                "FRONTDESK_MEDIA_MAX_WATCHERS",
                format!(
                    "must be a whole number from 0 to {MAX_WATCHERS_LIMIT} (got {:?})",
                    args.media_max_watchers
                ),
            )
        })?;
    Ok(MediaConfig {
        udp,
        workers,
        public_ips,
        turn_urls,
        turn_secret,
        turn_ttl,
        max_watchers,
    })
}

fn split_list(v: Option<&str>) -> impl Iterator<Item = &str> {
    v.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Reads `NAME` or the file named by `NAME_FILE` (trailing newline trimmed); both set is an error.
pub fn read_secret(env: Env<'_>, name: &'static str) -> Result<Option<Secret>, ConfigError> {
    let file_var: &'static str = match name {
        "FRONTDESK_JWT_SECRET" => "FRONTDESK_JWT_SECRET_FILE",
        "FRONTDESK_STRIPE_WEBHOOK_SECRET" => "FRONTDESK_STRIPE_WEBHOOK_SECRET_FILE",
        "FRONTDESK_STRIPE_API_KEY" => "FRONTDESK_STRIPE_API_KEY_FILE",
        "FRONTDESK_SMTP_URL" => "FRONTDESK_SMTP_URL_FILE",
        "FRONTDESK_TURN_SECRET" => "FRONTDESK_TURN_SECRET_FILE",
        _ => return Ok(env(name).map(|v| Secret::new(v.into_bytes()))),
    };
    match (env(name), env(file_var)) {
        (Some(_), Some(_)) => Err(bad(
            name,
            format!("set either {name} or {file_var}, not both"),
        )),
        (Some(v), None) => Ok(Some(Secret::new(v.into_bytes()))),
        (None, Some(path)) => {
            let mut bytes = std::fs::read(&path)
                .map_err(|e| bad(file_var, format!("cannot read {path}: {e}")))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Ok(Some(Secret::new(bytes)))
        }
        (None, None) => Ok(None),
    }
}

/// The highest `FRONTDESK_MEDIA_MAX_WATCHERS` accepted.
const MAX_WATCHERS_LIMIT: usize = 256;

fn parse_seconds(var: &'static str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            bad(
                var,
                format!("must be a whole number of seconds from {min} to {max} (got {v:?})"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServerArgs {
        let cli = Cli::parse_from(["frontdesk", "serve"]);
        match cli.command {
            Command::Serve(a) => a,
            _ => unreachable!("parsed serve"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn zero_configuration_is_valid() {
        let c = Config::resolve(&args(), DEFAULT_DATABASE_URL, &no_env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://frontdesk.db");
        assert_eq!(c.jwt.audience, "authenticated");
        assert!(c.jwt.secret.is_none() && c.jwt.jwks.is_none());
        assert_eq!(c.media.udp.to_string(), "127.0.0.1:7882");
        assert!(c.media.turn_urls.is_empty() && c.media.turn_secret.is_none());
    }

    #[test]
    fn media_follows_the_listen_address_and_turn_needs_its_secret() {
        let mut a = args();
        a.listen = "127.0.0.1:0".into();
        let c = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap();
        assert_eq!(c.media.udp.to_string(), "127.0.0.1:0");
        a.turn_urls = Some("turn:t.example:3478".into());
        let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_TURN_SECRET");
        a.turn_urls = Some("http://t.example".into());
        let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_TURN_URLS");
        a.turn_urls = None;
        a.media_udp = Some("nope".into());
        let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_MEDIA_UDP");
    }

    #[test]
    fn media_workers_default_to_the_cores_and_must_fit_the_port_range() {
        let mut a = args();
        let c = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.media.workers, cores.min(DEFAULT_MAX_MEDIA_WORKERS));
        a.media_workers = Some("3".into());
        let c = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap();
        assert_eq!(c.media.workers, 3);
        for bad in ["0", "65", "two", "-1"] {
            a.media_workers = Some(bad.into());
            let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
            assert_eq!(e.var, "FRONTDESK_MEDIA_WORKERS", "{bad}");
        }
        // Ports port..port+workers-1 must exist; an ephemeral port has no such limit.
        a.media_workers = Some("2".into());
        a.media_udp = Some("0.0.0.0:65535".into());
        let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_MEDIA_WORKERS");
        a.media_udp = Some("0.0.0.0:0".into());
        assert_eq!(
            Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env)
                .unwrap()
                .media
                .workers,
            2
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let mut a = args();
        a.listen = "nowhere".into();
        let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_LISTEN");
        let mut a = args();
        a.db.database_url = Some("mysql://root:hunter2@x/db".into());
        let e = Config::resolve(&a, DEFAULT_DATABASE_URL, &no_env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_DATABASE_URL");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn a_short_jwt_secret_is_refused_without_showing_it() {
        let env = |n: &str| (n == "FRONTDESK_JWT_SECRET").then(|| "short-secret".to_owned());
        let e = Config::resolve(&args(), DEFAULT_DATABASE_URL, &env).unwrap_err();
        assert_eq!(e.var, "FRONTDESK_JWT_SECRET");
        assert!(!e.to_string().contains("short-secret"));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let env = |n: &str| {
            (n == "FRONTDESK_JWT_SECRET").then(|| "0123456789abcdef0123456789abcdef-xyz".to_owned())
        };
        let c = Config::resolve(&args(), DEFAULT_DATABASE_URL, &env).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
