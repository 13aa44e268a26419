//! The `frontdesk` server: the only place with tokio, sockets, axum and sqlx. It wires the cores
//! (`frontdesk-domain`, `-signaling`, `-sfu`, `-cobrowse`, `-billing`) to the network and the
//! database. Tests start it exactly as `main` does: [`prepare`] then [`run`] on a listener bound to
//! port 0, with the shutdown signal passed in.
//!
//! ```no_run
//! # async fn example(config: frontdesk::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let state = frontdesk::prepare(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! frontdesk::run(listener, state, frontdesk::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod billing;
pub mod billing_api;
pub mod billing_store;
pub mod cobrowse;
pub mod config;
pub mod demo;
pub mod error;
pub mod http;
pub mod media;
pub mod model;
pub mod signal;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod web;

use crate::auth::{JwtVerifier, VisitorTokens};
use crate::config::{Config, Secret};
use crate::http::{AppState, Inner};
use crate::store::{Store, StoreError};
use base64::Engine;
use std::future::Future;
use std::sync::Arc;

/// Wall-clock time in unix milliseconds. Only `src/` reads the clock; cores are told the time.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Keys(String),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("media: cannot bind the SFU's UDP socket (FRONTDESK_MEDIA_UDP): {0}")]
    Media(std::io::Error),
}

/// Name of the server-generated HS256 secret used when no JWT key is configured.
pub const LOCAL_JWT_SECRET: &str = "local_jwt_secret";
const VISITOR_TOKEN_KEY: &str = "visitor_token_key";

/// The HS256 secret agent tokens are verified with: the configured one, else (when no JWKS is
/// configured either) the local one the server keeps in its database.
pub async fn hs256_secret(store: &Store, config: &Config) -> Result<Option<Secret>, StartError> {
    if let Some(s) = &config.jwt.secret {
        return Ok(Some(s.clone()));
    }
    if config.jwt.jwks.is_some() {
        return Ok(None);
    }
    local_secret(store).await.map(Some)
}

pub async fn local_secret(store: &Store) -> Result<Secret, StartError> {
    let v = store
        .server_secret(LOCAL_JWT_SECRET, &auth::random_token(32), now_ms())
        .await?;
    decode_secret(&v)
}

fn decode_secret(v: &str) -> Result<Secret, StartError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v)
        .map(Secret::new)
        .map_err(|_| StartError::Keys("a stored server secret is corrupt".into()))
}

/// Connects the database, applies migrations, closes calls a previous process left open, loads
/// keys. Everything a server needs before it accepts a connection.
pub async fn prepare(config: &Config) -> Result<AppState, StartError> {
    let store = Store::connect(&config.database_url).await?;
    let ended = store
        .end_open_calls(frontdesk_domain::EndReason::ServerRestart, now_ms())
        .await?;
    if ended > 0 {
        tracing::warn!(calls = ended, "ended calls left open by a previous run");
    }
    let hs = hs256_secret(&store, config).await?;
    if config.jwt.secret.is_none() && config.jwt.jwks.is_none() {
        tracing::warn!(
            "no FRONTDESK_JWT_SECRET or JWKS configured: agent tokens are verified with a local \
             secret kept in the database; mint them with `frontdesk token`"
        );
    }
    let jwt = JwtVerifier::new(&config.jwt, hs.as_ref())
        .await
        .map_err(StartError::Keys)?;
    let vt_key = store
        .server_secret(VISITOR_TOKEN_KEY, &auth::random_token(32), now_ms())
        .await?;
    let visitor_tokens = VisitorTokens::new(decode_secret(&vt_key)?.expose());
    let hub = signal::HubHandle::spawn(
        frontdesk_signaling::HubConfig {
            visitor_reconnect_ms: u64::try_from(config.visitor_reconnect.as_millis())
                .unwrap_or(60_000),
            ..frontdesk_signaling::HubConfig::default()
        },
        store.clone(),
    );
    let billing_wake = billing::spawn(store.clone(), hub.clone(), config.billing.clone());
    let media = media::MediaHandle::start(&config.media).map_err(StartError::Media)?;
    // Every required price is checked now: a missing one stops the start, never a fallback.
    let stripe = match &config.stripe {
        None => None,
        Some(sc) => {
            let client = stripe::Stripe::new(&sc.api_base, sc.api_key.clone())
                .map_err(|e| StartError::Keys(e.to_string()))?;
            match client.price_active(&sc.seat_price).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(StartError::Keys(format!(
                        "FRONTDESK_STRIPE_SEAT_PRICE_ID: price {} is not an active price at Stripe",
                        sc.seat_price
                    )))
                }
                Err(e) => {
                    return Err(StartError::Keys(format!(
                        "checking FRONTDESK_STRIPE_SEAT_PRICE_ID: {e}"
                    )))
                }
            }
            Some(client)
        }
    };
    let state = AppState(Arc::new(Inner {
        media,
        cobrowse: Default::default(),
        stripe,
        seat_price: config.stripe.as_ref().map(|s| s.seat_price.clone()),
        plan_max_seats: config.plan_max_seats,
        stripe_revert_failures: Default::default(),
        billing: config.billing.clone(),
        billing_wake,
        store,
        jwt,
        visitor_tokens,
        visitor_token_ttl: config.visitor_token_ttl,
        hub,
        drain: config.drain,
    }));
    // Calls whose participants all vanished without the call ending here are forgotten.
    let weak = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            inner.cobrowse.sweep();
        }
    });
    Ok(state)
}

/// Serves until `shutdown` resolves, then stops accepting, lets requests in flight finish, and
/// closes the database.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let (hub, drain) = (state.hub.clone(), state.drain);
    tracing::info!(addr = %listener.local_addr()?, "listening");
    // Drain first: no new calls, live ones may finish (up to the drain time), then every
    // signaling connection is closed and the HTTP server stops.
    let shutdown = async move {
        shutdown.await;
        hub.shutdown(drain).await;
    };
    // Signaling frames are small and latency-bound: never let Nagle hold one back waiting for
    // the peer's delayed ACK (that alone added ~40 ms to every ring).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("stopped accepting; closing the database");
    store.close().await;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
