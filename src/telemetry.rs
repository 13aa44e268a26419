//! Structured logs with `tracing`: human-readable by default, JSON with `--log-format json`.
//! `RUST_LOG` overrides the default filter. Secrets and co-browse content are never logged: they
//! travel in types whose `Debug` hides them, and no handler logs bodies or headers.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests that start several servers) keeps the first subscriber.
    let _ = result;
}
