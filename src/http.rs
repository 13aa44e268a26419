//! HTTP routes: health, the admin REST API under `/v1`, the visitor session endpoint and the
//! OpenAPI document generated from these handlers.

use crate::auth::{AuthError, JwtVerifier, VisitorClaims, VisitorTokens};
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::model::*;
use crate::store::{Actor, Store};
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use frontdesk_domain::{AgentId, OrgId, PoolId, Role, RuleId, VisitorSessionId, WidgetKeyId};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// Largest request body, for every route.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub jwt: JwtVerifier,
    pub visitor_tokens: VisitorTokens,
    pub visitor_token_ttl: Duration,
    pub hub: crate::signal::HubHandle,
    pub media: crate::media::MediaHandle,
    pub cobrowse: crate::cobrowse::Cobrowse,
    pub drain: Duration,
    pub billing: crate::billing::BillingConfig,
    pub billing_wake: crate::billing::BillingWake,
    pub stripe: Option<crate::stripe::Stripe>,
    pub seat_price: Option<String>,
    pub plan_max_seats: u32,
    pub stripe_revert_failures: std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A verified agent of a live org, from `Authorization: Bearer <jwt>`.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub org_id: OrgId,
    pub agent_id: AgentId,
    /// Admin only when both the token and the agent's record say so.
    pub role: Role,
}

impl Caller {
    fn actor(&self) -> Actor {
        Actor::Agent(self.agent_id)
    }
}

fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let v = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let v = v.trim();
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = match bearer(parts) {
            Ok(token) => state.jwt.verify(token).await,
            Err(e) => Err(e),
        }
        .map_err(|e| {
            tracing::debug!(reason = %e, "agent token refused");
            ApiError::unauthorized(e.code(), e.to_string())
        })?;
        let agent = state
            .store
            .agent_by_user(claims.org_id, &claims.sub)
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "not_an_agent",
                    "this user is not an agent of the organization named in the token",
                )
            })?;
        let role = if claims.role == Role::Admin && agent.role == Role::Admin {
            Role::Admin
        } else {
            Role::Agent
        };
        Ok(Caller {
            org_id: agent.org_id,
            agent_id: agent.id,
            role,
        })
    }
}

/// A [`Caller`] with the admin role.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let c = Caller::from_request_parts(parts, state).await?;
        if c.role != Role::Admin {
            return Err(ApiError::forbidden("this action needs the admin role"));
        }
        Ok(Admin(c))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
        .route("/v1/signal", get(crate::signal::signal))
        .route("/v1/cobrowse", get(crate::cobrowse::socket))
        .route("/v1/me", get(me))
        .route("/v1/org", get(get_org))
        .route("/v1/org/settings", axum::routing::patch(patch_settings))
        .route("/v1/pools", get(list_pools).post(create_pool))
        .route(
            "/v1/pools/{pool_id}",
            get(get_pool).patch(patch_pool).delete(delete_pool),
        )
        .route("/v1/pools/{pool_id}/rules", post(add_rule))
        .route(
            "/v1/pools/{pool_id}/rules/{rule_id}",
            axum::routing::delete(delete_rule),
        )
        .route("/v1/agents", get(list_agents).post(add_agent))
        .route(
            "/v1/agents/{agent_id}",
            get(get_agent).patch(patch_agent).delete(remove_agent),
        )
        .route("/v1/agents/{agent_id}/pools", put(set_agent_pools))
        .route(
            "/v1/widget-keys",
            get(list_widget_keys).post(create_widget_key),
        )
        .route(
            "/v1/widget-keys/{key_id}",
            axum::routing::delete(revoke_widget_key),
        )
        .route("/v1/audit-log", get(audit_log))
        .route("/v1/visitor/sessions", post(create_visitor_session))
        .route("/v1/webhooks/stripe", post(crate::billing::stripe_webhook))
        .route("/v1/billing", get(crate::billing_api::get_billing))
        .route("/v1/billing/cancel", post(crate::billing_api::cancel))
        .route(
            "/v1/billing/cancel/undo",
            post(crate::billing_api::undo_cancel),
        )
        .route("/v1/billing/pause", post(crate::billing_api::pause))
        .route("/v1/billing/resume", post(crate::billing_api::resume))
        .route("/v1/billing/seats", put(crate::billing_api::set_seats))
        .route("/v1/notifications", get(list_notifications))
        .route(
            "/v1/notifications/{notification_id}/resend",
            post(resend_notification),
        )
        .merge(crate::web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    tracing::info_span!("http", method = %req.method(), route = %route)
                },
            ),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><meta charset=utf-8><title>frontdesk</title>",
        "<h1>frontdesk</h1><p>The server is running.</p><ul>",
        "<li><a href=\"/openapi.json\">OpenAPI document</a></li>",
        "<li><a href=\"/healthz\">/healthz</a> and <a href=\"/readyz\">/readyz</a></li></ul>"
    ))
}

fn now_ms() -> i64 {
    crate::now_ms()
}

// ---- operations --------------------------------------------------------------------------

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The process can serve: its database answers within 2 s.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), s.store.ping()).await {
        Ok(Ok(())) => Ok(Json(Health {
            status: "ready".into(),
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database error");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "database_unavailable",
        "the database does not answer",
    )
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document is plain data and always serializes"),
    )
        .into_response()
}

// ---- org ---------------------------------------------------------------------------------

/// The calling agent.
#[utoipa::path(get, path = "/v1/me", tag = "org", security(("bearer" = [])),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody)))]
async fn me(State(s): State<AppState>, c: Caller) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(s.store.agent(c.org_id, c.agent_id).await?))
}

/// The caller's organization, its status, seats and settings.
#[utoipa::path(get, path = "/v1/org", tag = "org", security(("bearer" = [])),
    responses((status = 200, body = OrgView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_org(State(s): State<AppState>, Admin(c): Admin) -> Result<Json<OrgView>, ApiError> {
    Ok(Json(s.store.org_view(c.org_id).await?))
}

/// Changes org settings; they apply from the next call.
#[utoipa::path(patch, path = "/v1/org/settings", tag = "org", security(("bearer" = [])),
    request_body = SettingsPatch,
    responses((status = 200, body = SettingsView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn patch_settings(
    State(s): State<AppState>,
    Admin(c): Admin,
    Json(patch): Json<SettingsPatch>,
) -> Result<Json<SettingsView>, ApiError> {
    let view = s
        .store
        .update_settings(c.org_id, &patch, c.actor(), now_ms())
        .await?;
    s.hub.refresh_org(&s.store, c.org_id).await?;
    Ok(Json(view))
}

async fn tell_hub_pools(s: &AppState, org: OrgId, agent: AgentId) -> Result<(), ApiError> {
    let pools = s.store.agent_pools(org, agent).await?;
    s.hub
        .input(frontdesk_signaling::Input::AgentPoolsChanged { org, agent, pools })
        .await;
    Ok(())
}

/// Prometheus text: hub counters, presence, connections.
async fn metrics(State(s): State<AppState>) -> Response {
    use std::fmt::Write;
    let snap = s.hub.snapshot().await;
    let mut out = String::new();
    let st = &snap.stats;
    for (name, help, v) in [
        (
            "frontdesk_calls_requested_total",
            "Calls requested by visitors.",
            st.calls_requested,
        ),
        (
            "frontdesk_calls_connected_total",
            "Calls answered by an agent.",
            st.calls_connected,
        ),
        (
            "frontdesk_calls_ended_total",
            "Calls ended, for any reason.",
            st.calls_ended,
        ),
        ("frontdesk_rings_total", "Rings sent to agents.", st.rings),
        (
            "frontdesk_ring_no_answer_total",
            "Rings that timed out.",
            st.ring_no_answer,
        ),
        (
            "frontdesk_heartbeat_timeouts_total",
            "Connections closed as silent.",
            st.heartbeat_timeouts,
        ),
        (
            "frontdesk_records_failed_total",
            "Hub records the database refused.",
            snap.records_failed,
        ),
        (
            "frontdesk_stripe_revert_failures_total",
            "Seat changes stored at Stripe whose revert failed.",
            s.stripe_revert_failures
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP frontdesk_signal_connections Open signaling connections.\n# TYPE frontdesk_signal_connections gauge\nfrontdesk_signal_connections {}",
        snap.connections
    );
    let _ = writeln!(
        out,
        "# HELP frontdesk_open_calls Calls not yet ended.\n# TYPE frontdesk_open_calls gauge\nfrontdesk_open_calls {}",
        snap.open_calls
    );
    let m = &s.media.metrics;
    forward_delay(&mut out, &m.forward_delay);
    slow_turn_seconds(&mut out, &m.slow_turns);
    let _ = writeln!(
        out,
        "# HELP frontdesk_media_worker_calls Calls whose media a worker holds (a new call goes to the worker with the fewest).\n# TYPE frontdesk_media_worker_calls gauge"
    );
    for (k, n) in s.media.calls_per_worker().iter().enumerate() {
        let _ = writeln!(out, "frontdesk_media_worker_calls{{worker=\"{k}\"}} {n}");
    }
    let cm = &s.cobrowse.metrics;
    let g = s.cobrowse.gauges();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for (name, kind, help, v) in [
        (
            "frontdesk_media_peers",
            "gauge",
            "WebRTC peers in the SFU.",
            load(&m.peers),
        ),
        (
            "frontdesk_media_rooms",
            "gauge",
            "Calls with media in the SFU.",
            load(&m.rooms),
        ),
        (
            "frontdesk_media_packets_in_total",
            "counter",
            "Datagrams a peer accepted.",
            load(&m.packets_in),
        ),
        (
            "frontdesk_media_packets_forwarded_total",
            "counter",
            "RTP packets forwarded.",
            load(&m.packets_forwarded),
        ),
        (
            "frontdesk_media_bytes_forwarded_total",
            "counter",
            "RTP payload bytes forwarded.",
            load(&m.bytes_forwarded),
        ),
        (
            "frontdesk_media_datagrams_unmatched_total",
            "counter",
            "Datagrams no peer accepted.",
            load(&m.datagrams_unmatched),
        ),
        (
            "frontdesk_media_keyframe_requests_total",
            "counter",
            "Keyframe requests sent to senders.",
            load(&m.keyframe_requests),
        ),
        (
            "frontdesk_media_packets_sealed_by_core_total",
            "counter",
            "Of the packets forwarded, those the SFU core sealed itself rather than str0m.",
            load(&m.packets_sealed_by_core),
        ),
        (
            "frontdesk_media_packets_resent_total",
            "counter",
            "Packets resent on receivers' NACKs from what the SFU core sealed.",
            load(&m.packets_resent),
        ),
        (
            "frontdesk_media_send_errors_total",
            "counter",
            "Datagrams the media socket refused to send (dropped).",
            load(&m.send_errors),
        ),
        (
            "frontdesk_media_datagrams_coalesced_total",
            "counter",
            "Datagrams sent as segments of UDP GSO sends (a run to one receiver sent as one).",
            load(&m.datagrams_coalesced),
        ),
        (
            "frontdesk_media_slow_turns_total",
            "counter",
            "Media workers' loop turns that took over 1 ms (a wake-up to the next wait).",
            load(&m.slow_turns.turns),
        ),
        (
            "frontdesk_media_slow_turn_datagrams_received_total",
            "counter",
            "Datagrams received in the media workers' loop turns that took over 1 ms.",
            load(&m.slow_turns.received),
        ),
        (
            "frontdesk_media_slow_turn_datagrams_sent_total",
            "counter",
            "Datagrams sent in the media workers' loop turns that took over 1 ms.",
            load(&m.slow_turns.sent),
        ),
        (
            "frontdesk_cobrowse_sessions",
            "gauge",
            "Calls with a co-browse relay.",
            g.sessions as u64,
        ),
        (
            "frontdesk_cobrowse_visitors",
            "gauge",
            "Visitors capturing their page.",
            g.visitors as u64,
        ),
        (
            "frontdesk_cobrowse_viewers",
            "gauge",
            "Agent viewers watching a page.",
            g.viewers as u64,
        ),
        (
            "frontdesk_cobrowse_snapshots_total",
            "counter",
            "Page snapshots received (accepted or refused).",
            load(&cm.snapshots),
        ),
        (
            "frontdesk_cobrowse_change_batches_total",
            "counter",
            "Change batches received (accepted or refused).",
            load(&cm.change_batches),
        ),
        (
            "frontdesk_cobrowse_refused_total",
            "counter",
            "Visitor messages refused with a typed error (size, format, rate).",
            load(&cm.refused),
        ),
        (
            "frontdesk_cobrowse_masked_total",
            "counter",
            "Elements, texts and attribute values the relay masked.",
            load(&cm.masked),
        ),
        (
            "frontdesk_cobrowse_removed_total",
            "counter",
            "Elements, attributes and CSS the relay removed as unsafe.",
            load(&cm.removed),
        ),
        (
            "frontdesk_cobrowse_dropped_changes_total",
            "counter",
            "Changes the relay did not forward (unknown ids, masked fields).",
            load(&cm.dropped_changes),
        ),
        (
            "frontdesk_cobrowse_desync_requests_total",
            "counter",
            "New snapshots asked of the visitor after changes named unknown nodes.",
            load(&cm.desync_requests),
        ),
        (
            "frontdesk_cobrowse_frames_sent_total",
            "counter",
            "Frames sent to viewers.",
            load(&cm.frames_sent),
        ),
        (
            "frontdesk_cobrowse_bytes_received_total",
            "counter",
            "Bytes received from visitors.",
            load(&cm.bytes_received),
        ),
        (
            "frontdesk_cobrowse_bytes_sent_total",
            "counter",
            "Bytes sent to viewers.",
            load(&cm.bytes_sent),
        ),
        (
            "frontdesk_cobrowse_viewers_too_slow_total",
            "counter",
            "Viewers closed because they fell behind.",
            load(&cm.viewers_too_slow),
        ),
        (
            "frontdesk_cobrowse_sockets_refused_total",
            "counter",
            "Co-browse sockets refused (bad ticket, co-browse off, too many viewers).",
            load(&cm.sockets_refused),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
    let _ = writeln!(out, "# HELP frontdesk_agents Agents known to the hub by presence.\n# TYPE frontdesk_agents gauge");
    for (p, n) in &snap.presence {
        let _ = writeln!(out, "frontdesk_agents{{presence=\"{p}\"}} {n}");
    }
    process_metrics(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The process's own CPU time and resident memory, under Prometheus's standard names: what a
/// load tool on another machine reads to size the server (`benches/media_load.rs --target`),
/// and what an operator graphs beside the rest. Left out where the OS does not say.
#[cfg(target_os = "linux")]
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    // SAFETY: getrusage writes into the zeroed struct it is given; RUSAGE_SELF is valid.
    let cpu = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0).then(|| {
            let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
            t(u.ru_utime) + t(u.ru_stime)
        })
    };
    if let Some(cpu) = cpu {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time the process has spent, in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
        );
    }
    // /proc/self/statm: sizes in pages, the second one resident.
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if let (Some(pages), true) = (rss_pages, page > 0) {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory of the process, in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            pages * page as u64
        );
    }
}

/// Elsewhere than Linux the process figures are left out (`libc` is a Linux dependency here).
#[cfg(not(target_os = "linux"))]
fn process_metrics(_out: &mut String) {}

/// The media workers' forwarding delay as a Prometheus histogram (cumulative buckets).
fn forward_delay(out: &mut String, h: &crate::media::ForwardDelay) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let name = "frontdesk_media_forward_delay_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a datagram's arrival at a media socket to each datagram it caused leaving the server.\n# TYPE {name} histogram"
    );
    let mut total = 0u64;
    for (i, b) in h.buckets.iter().enumerate() {
        total += b.load(Relaxed);
        match crate::media::DELAY_BOUNDS_US.get(i) {
            Some(&us) => {
                let le = us as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
            }
        }
    }
    let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
}

/// The wall time of the media workers' loop turns that took over 1 ms (a float, so not in the
/// table of integer counters).
fn slow_turn_seconds(out: &mut String, t: &crate::media::SlowTurns) {
    use std::fmt::Write;
    let name = "frontdesk_media_slow_turn_seconds_total";
    let s = t.ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(
        out,
        "# HELP {name} Wall time of the media workers' loop turns that took over 1 ms.\n# TYPE {name} counter\n{name} {s}"
    );
}

// ---- pools -------------------------------------------------------------------------------

/// Every live pool of the org, with its rules and members.
#[utoipa::path(get, path = "/v1/pools", tag = "pools", security(("bearer" = [])),
    responses((status = 200, body = Vec<PoolView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_pools(
    State(s): State<AppState>,
    Admin(c): Admin,
) -> Result<Json<Vec<PoolView>>, ApiError> {
    Ok(Json(s.store.pools(c.org_id).await?))
}

/// Creates a pool.
#[utoipa::path(post, path = "/v1/pools", tag = "pools", security(("bearer" = [])),
    request_body = NewPool,
    responses((status = 201, body = PoolView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_pool(
    State(s): State<AppState>,
    Admin(c): Admin,
    Json(new): Json<NewPool>,
) -> Result<(StatusCode, Json<PoolView>), ApiError> {
    let p = s
        .store
        .create_pool(c.org_id, &new, c.actor(), now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// One pool.
#[utoipa::path(get, path = "/v1/pools/{pool_id}", tag = "pools", security(("bearer" = [])),
    params(("pool_id" = uuid::Uuid, Path)),
    responses((status = 200, body = PoolView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_pool(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(pool_id): Path<PoolId>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(s.store.pool(c.org_id, pool_id).await?))
}

/// Renames a pool or makes it the default.
#[utoipa::path(patch, path = "/v1/pools/{pool_id}", tag = "pools", security(("bearer" = [])),
    params(("pool_id" = uuid::Uuid, Path)), request_body = PoolPatch,
    responses((status = 200, body = PoolView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn patch_pool(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(pool_id): Path<PoolId>,
    Json(patch): Json<PoolPatch>,
) -> Result<Json<PoolView>, ApiError> {
    Ok(Json(
        s.store
            .update_pool(c.org_id, pool_id, &patch, c.actor(), now_ms())
            .await?,
    ))
}

/// Removes a pool (not the default). Its call history is kept.
#[utoipa::path(delete, path = "/v1/pools/{pool_id}", tag = "pools", security(("bearer" = [])),
    params(("pool_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_pool(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(pool_id): Path<PoolId>,
) -> Result<StatusCode, ApiError> {
    let members = s.store.pool_member_ids(c.org_id, pool_id).await?;
    s.store
        .remove_pool(c.org_id, pool_id, c.actor(), now_ms())
        .await?;
    for agent in members {
        tell_hub_pools(&s, c.org_id, agent).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a routing rule to a pool.
#[utoipa::path(post, path = "/v1/pools/{pool_id}/rules", tag = "pools", security(("bearer" = [])),
    params(("pool_id" = uuid::Uuid, Path)), request_body = NewRule,
    responses((status = 201, body = RuleView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn add_rule(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(pool_id): Path<PoolId>,
    Json(new): Json<NewRule>,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    let r = s
        .store
        .add_rule(c.org_id, pool_id, &new, c.actor(), now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Removes a routing rule.
#[utoipa::path(delete, path = "/v1/pools/{pool_id}/rules/{rule_id}", tag = "pools", security(("bearer" = [])),
    params(("pool_id" = uuid::Uuid, Path), ("rule_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_rule(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path((pool_id, rule_id)): Path<(PoolId, RuleId)>,
) -> Result<StatusCode, ApiError> {
    s.store
        .remove_rule(c.org_id, pool_id, rule_id, c.actor(), now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- agents ------------------------------------------------------------------------------

/// Every live agent of the org.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = Vec<AgentView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_agents(
    State(s): State<AppState>,
    Admin(c): Admin,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    Ok(Json(s.store.agents(c.org_id).await?))
}

/// Adds an agent; refused with `seat_limit` when every seat is taken.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", security(("bearer" = [])),
    request_body = NewAgent,
    responses((status = 201, body = AgentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn add_agent(
    State(s): State<AppState>,
    Admin(c): Admin,
    Json(new): Json<NewAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let a = s
        .store
        .add_agent(c.org_id, &new, c.actor(), now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

/// One agent.
#[utoipa::path(get, path = "/v1/agents/{agent_id}", tag = "agents", security(("bearer" = [])),
    params(("agent_id" = uuid::Uuid, Path)),
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_agent(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(agent_id): Path<AgentId>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(s.store.agent(c.org_id, agent_id).await?))
}

/// Changes an agent's email, name or role (the last admin cannot be demoted).
#[utoipa::path(patch, path = "/v1/agents/{agent_id}", tag = "agents", security(("bearer" = [])),
    params(("agent_id" = uuid::Uuid, Path)), request_body = AgentPatch,
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn patch_agent(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(agent_id): Path<AgentId>,
    Json(patch): Json<AgentPatch>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(
        s.store
            .update_agent(c.org_id, agent_id, &patch, c.actor(), now_ms())
            .await?,
    ))
}

/// Replaces an agent's pool memberships.
#[utoipa::path(put, path = "/v1/agents/{agent_id}/pools", tag = "agents", security(("bearer" = [])),
    params(("agent_id" = uuid::Uuid, Path)), request_body = AgentPools,
    responses((status = 200, body = AgentView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn set_agent_pools(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(agent_id): Path<AgentId>,
    Json(body): Json<AgentPools>,
) -> Result<Json<AgentView>, ApiError> {
    let view = s
        .store
        .set_agent_pools(c.org_id, agent_id, &body.pools, c.actor(), now_ms())
        .await?;
    tell_hub_pools(&s, c.org_id, agent_id).await?;
    Ok(Json(view))
}

/// Removes an agent (soft: call history keeps it). The last admin cannot be removed.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}", tag = "agents", security(("bearer" = [])),
    params(("agent_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_agent(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(agent_id): Path<AgentId>,
) -> Result<StatusCode, ApiError> {
    s.store
        .remove_agent(c.org_id, agent_id, c.actor(), now_ms())
        .await?;
    // A removed agent in a call: the call ends gracefully and its connections close.
    s.hub
        .input(frontdesk_signaling::Input::AgentRemoved {
            org: c.org_id,
            agent: agent_id,
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- widget keys -------------------------------------------------------------------------

/// Every widget key of the org, revoked ones included.
#[utoipa::path(get, path = "/v1/widget-keys", tag = "widget keys", security(("bearer" = [])),
    responses((status = 200, body = Vec<WidgetKeyView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_widget_keys(
    State(s): State<AppState>,
    Admin(c): Admin,
) -> Result<Json<Vec<WidgetKeyView>>, ApiError> {
    Ok(Json(s.store.widget_keys(c.org_id).await?))
}

/// Creates a widget key.
#[utoipa::path(post, path = "/v1/widget-keys", tag = "widget keys", security(("bearer" = [])),
    request_body = NewWidgetKey,
    responses((status = 201, body = WidgetKeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_widget_key(
    State(s): State<AppState>,
    Admin(c): Admin,
    Json(new): Json<NewWidgetKey>,
) -> Result<(StatusCode, Json<WidgetKeyView>), ApiError> {
    let key = new_widget_key();
    let k = s
        .store
        .create_widget_key(c.org_id, &new.label, &key, c.actor(), now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(k)))
}

/// A fresh public widget key value.
pub fn new_widget_key() -> String {
    format!("wk_{}", crate::auth::random_token(18))
}

/// Revokes a widget key: new visitor sessions can no longer start with it.
#[utoipa::path(delete, path = "/v1/widget-keys/{key_id}", tag = "widget keys", security(("bearer" = [])),
    params(("key_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_widget_key(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(key_id): Path<WidgetKeyId>,
) -> Result<StatusCode, ApiError> {
    s.store
        .revoke_widget_key(c.org_id, key_id, c.actor(), now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- audit -------------------------------------------------------------------------------

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Only entries strictly older than this time (unix ms), for paging.
    before_ms: Option<i64>,
}

/// The org's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit-log", tag = "org", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn audit_log(
    State(s): State<AppState>,
    Admin(c): Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 200",
        ));
    }
    Ok(Json(s.store.audit_log(c.org_id, limit, q.before_ms).await?))
}

// ---- notifications -------------------------------------------------------------------

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// The org's notification emails, newest first, with their delivery status.
#[utoipa::path(get, path = "/v1/notifications", tag = "billing", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = Vec<NotificationView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_notifications(
    State(s): State<AppState>,
    Admin(c): Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<NotificationView>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 200",
        ));
    }
    Ok(Json(s.store.notifications(c.org_id, limit).await?))
}

/// Queues a notification again (after a failure, or to send it once more).
#[utoipa::path(post, path = "/v1/notifications/{notification_id}/resend", tag = "billing", security(("bearer" = [])),
    params(("notification_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn resend_notification(
    State(s): State<AppState>,
    Admin(c): Admin,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    s.store
        .resend_notification(c.org_id, &id.to_string(), c.actor(), now_ms())
        .await?;
    s.billing_wake.mail.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

// ---- visitors ----------------------------------------------------------------------------

/// Starts a visitor session from the org's public widget key and the page the widget runs on.
/// The page picks the pool (by the org's rules, else its default pool).
#[utoipa::path(post, path = "/v1/visitor/sessions", tag = "visitors",
    request_body = NewVisitorSession,
    responses((status = 201, body = VisitorSessionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_visitor_session(
    State(s): State<AppState>,
    Json(new): Json<NewVisitorSession>,
) -> Result<(StatusCode, Json<VisitorSessionView>), ApiError> {
    let (view, _) = start_visitor_session(&s, &new).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Checks the widget key, matches the page to a pool and issues the visitor token.
pub async fn start_visitor_session(
    s: &AppState,
    new: &NewVisitorSession,
) -> Result<(VisitorSessionView, OrgId), ApiError> {
    // Keys are URL-safe base64 with a prefix; anything else (a NUL byte, which PostgreSQL
    // refuses in text, included) is not a key and never reaches the database.
    let key_chars = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if new.widget_key.len() > 100 || !new.widget_key.chars().all(key_chars) {
        return Err(invalid_widget_key());
    }
    if new.page_url.len() > 2048 {
        return Err(ApiError::unprocessable(
            "page_url is longer than 2048 bytes",
        ));
    }
    let page = url::Url::parse(&new.page_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| ApiError::unprocessable("page_url must be an absolute http(s) URL"))?;
    let (org_id, key_id) = s
        .store
        .widget_key_lookup(&new.widget_key)
        .await?
        .ok_or_else(invalid_widget_key)?;
    let rules = s.store.rules(org_id).await?;
    let pool_id = match frontdesk_domain::match_pool(&rules, &page) {
        Some(p) => p,
        None => s.store.default_pool(org_id).await?,
    };
    let now = now_ms();
    let expires_at_ms = now + i64::try_from(s.visitor_token_ttl.as_millis()).unwrap_or(i64::MAX);
    let session_id = VisitorSessionId::new();
    s.store
        .create_visitor_session(
            session_id,
            org_id,
            key_id,
            pool_id,
            page.as_str(),
            now,
            expires_at_ms,
        )
        .await?;
    let visitor_token = s.visitor_tokens.issue(&VisitorClaims {
        sid: session_id,
        org: org_id,
        exp_ms: expires_at_ms,
    });
    Ok((
        VisitorSessionView {
            session_id,
            visitor_token,
            expires_at_ms,
            pool_id,
        },
        org_id,
    ))
}

fn invalid_widget_key() -> ApiError {
    ApiError::unauthorized("invalid_widget_key", "unknown or revoked widget key")
}

// ---- OpenAPI -----------------------------------------------------------------------------

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "frontdesk", description = "Admin and visitor HTTP API of frontdesk. Errors are `{code, message}` with a stable code."),
    paths(healthz, readyz, me, get_org, patch_settings, list_pools, create_pool, get_pool, patch_pool,
          delete_pool, add_rule, delete_rule, list_agents, add_agent, get_agent, patch_agent,
          set_agent_pools, remove_agent, list_widget_keys, create_widget_key, revoke_widget_key,
          audit_log, create_visitor_session, list_notifications, resend_notification,
          crate::billing::stripe_webhook, crate::billing_api::get_billing, crate::billing_api::cancel,
          crate::billing_api::undo_cancel, crate::billing_api::pause, crate::billing_api::resume,
          crate::billing_api::set_seats),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
