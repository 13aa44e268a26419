//! Admin billing actions: cancel at period end (and undo), pause (and resume), change seats.
//! Stripe is asked first, with an idempotency key; only what Stripe confirmed is written to the
//! database. A seat change whose database write fails is reverted at Stripe; a failed revert is
//! logged at error level and counted (`frontdesk_stripe_revert_failures_total`).

use crate::error::{ApiError, ErrorBody, Json};
use crate::http::{Admin, AppState, Caller};
use crate::store::Actor;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use frontdesk_billing::Entitlement;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct BillingView {
    pub status: frontdesk_domain::OrgStatus,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub seat_limit: u32,
    pub seats_used: u32,
    /// Seats the plan allows at most.
    pub plan_max_seats: u32,
    pub pause_collection: bool,
    pub pause_resumes_at_ms: Option<i64>,
    /// Access continues until the period ends, then the subscription ends. Data is kept for 30
    /// days after that.
    pub cancel_at_period_end: bool,
    pub period_end_ms: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// When collection resumes by itself (unix ms, in the future); absent: until resumed.
    pub resumes_at_ms: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatsRequest {
    #[schema(minimum = 1)]
    pub seats: u32,
}

fn idempotency_key(headers: &HeaderMap, c: &Caller, action: &str) -> String {
    let given = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 100 && k.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(k) => format!("frontdesk-{}-{action}-{k}", c.org_id),
        None => format!("frontdesk-{}-{action}-{}", c.org_id, uuid::Uuid::new_v4()),
    }
}

fn stripe_error(e: crate::stripe::StripeError) -> ApiError {
    tracing::warn!(error = %e, "stripe refused a billing action");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "stripe_error",
        format!("Stripe did not accept the change: {e}"),
    )
}

/// The Stripe client and the org's subscription, or why the action cannot be taken.
async fn subscription(
    s: &AppState,
    c: &Caller,
) -> Result<(crate::stripe::Stripe, String), ApiError> {
    let stripe = s.stripe.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "billing_unavailable",
            "this server has no FRONTDESK_STRIPE_API_KEY",
        )
    })?;
    let (_, sub, _) = s.store.billing_state(c.org_id).await?;
    let sub = sub.ok_or_else(|| {
        ApiError::conflict("no_subscription", "the org has no Stripe subscription yet")
    })?;
    Ok((stripe, sub))
}

async fn view(s: &AppState, org: frontdesk_domain::OrgId) -> Result<BillingView, ApiError> {
    let (customer, sub, ent) = s.store.billing_state(org).await?;
    let o = s.store.org_view(org).await?;
    Ok(BillingView {
        status: o.status,
        stripe_customer_id: customer,
        stripe_subscription_id: sub,
        seat_limit: o.seat_limit,
        seats_used: o.seats_used,
        plan_max_seats: s.plan_max_seats,
        pause_collection: ent.paused_at(crate::now_ms() / 1000),
        pause_resumes_at_ms: ent.pause_resumes_at.map(|t| t * 1000),
        cancel_at_period_end: ent.cancel_at_period_end,
        period_end_ms: ent.period_end.map(|t| t * 1000),
    })
}

/// Applies a confirmed change to the entitlement and tells the hub when the status moved.
async fn record(
    s: &AppState,
    c: &Caller,
    action: &str,
    details: serde_json::Value,
    change: impl FnOnce(&mut Entitlement),
) -> Result<(), ApiError> {
    let t = s
        .store
        .update_entitlement(
            c.org_id,
            Actor::Agent(c.agent_id),
            action,
            details,
            change,
            s.billing.grace_s,
            crate::now_ms(),
        )
        .await?;
    if t.is_some() {
        s.hub.refresh_org(&s.store, c.org_id).await?;
        s.billing_wake.mail.notify_one();
    }
    Ok(())
}

/// The org's billing state.
#[utoipa::path(get, path = "/v1/billing", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = BillingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_billing(
    State(s): State<AppState>,
    Admin(c): Admin,
) -> Result<Json<BillingView>, ApiError> {
    Ok(Json(view(&s, c.org_id).await?))
}

async fn set_cancel(
    s: AppState,
    c: Caller,
    headers: HeaderMap,
    cancel: bool,
) -> Result<Json<BillingView>, ApiError> {
    let (stripe, sub) = subscription(&s, &c).await?;
    let action = if cancel {
        "billing.cancel"
    } else {
        "billing.cancel.undo"
    };
    stripe
        .update_subscription(
            &sub,
            &[("cancel_at_period_end", cancel.to_string())],
            &idempotency_key(&headers, &c, action),
        )
        .await
        .map_err(stripe_error)?;
    record(&s, &c, action, serde_json::json!({}), |e| {
        e.cancel_at_period_end = cancel
    })
    .await?;
    Ok(Json(view(&s, c.org_id).await?))
}

/// Cancels at the end of the period: access continues until then; data is kept 30 days after.
#[utoipa::path(post, path = "/v1/billing/cancel", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = BillingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn cancel(
    State(s): State<AppState>,
    Admin(c): Admin,
    headers: HeaderMap,
) -> Result<Json<BillingView>, ApiError> {
    set_cancel(s, c, headers, true).await
}

/// Undoes a pending cancellation.
#[utoipa::path(post, path = "/v1/billing/cancel/undo", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = BillingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn undo_cancel(
    State(s): State<AppState>,
    Admin(c): Admin,
    headers: HeaderMap,
) -> Result<Json<BillingView>, ApiError> {
    set_cancel(s, c, headers, false).await
}

/// Pauses collection; the org is paused at once (agents offline, calls end) until it resumes.
#[utoipa::path(post, path = "/v1/billing/pause", tag = "billing", security(("bearer" = [])),
    request_body = PauseRequest,
    responses((status = 200, body = BillingView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn pause(
    State(s): State<AppState>,
    Admin(c): Admin,
    headers: HeaderMap,
    Json(req): Json<PauseRequest>,
) -> Result<Json<BillingView>, ApiError> {
    let resumes_at = match req.resumes_at_ms {
        Some(ms) if ms <= crate::now_ms() => {
            return Err(ApiError::unprocessable(
                "resumes_at_ms must be in the future",
            ))
        }
        Some(ms) if ms > crate::now_ms() + 5 * 365 * 86_400_000 => {
            return Err(ApiError::unprocessable(
                "resumes_at_ms must be within 5 years",
            ))
        }
        Some(ms) => Some(ms / 1000),
        None => None,
    };
    let (stripe, sub) = subscription(&s, &c).await?;
    let mut params = vec![("pause_collection[behavior]", "void".to_owned())];
    if let Some(t) = resumes_at {
        params.push(("pause_collection[resumes_at]", t.to_string()));
    }
    stripe
        .update_subscription(&sub, &params, &idempotency_key(&headers, &c, "pause"))
        .await
        .map_err(stripe_error)?;
    record(
        &s,
        &c,
        "billing.pause",
        serde_json::json!({ "resumes_at": resumes_at }),
        |e| e.pause(resumes_at),
    )
    .await?;
    Ok(Json(view(&s, c.org_id).await?))
}

/// Resumes collection now; the org can take calls again at once.
#[utoipa::path(post, path = "/v1/billing/resume", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = BillingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn resume(
    State(s): State<AppState>,
    Admin(c): Admin,
    headers: HeaderMap,
) -> Result<Json<BillingView>, ApiError> {
    let (stripe, sub) = subscription(&s, &c).await?;
    stripe
        .update_subscription(
            &sub,
            &[("pause_collection", String::new())],
            &idempotency_key(&headers, &c, "resume"),
        )
        .await
        .map_err(stripe_error)?;
    record(
        &s,
        &c,
        "billing.resume",
        serde_json::json!({}),
        Entitlement::resume,
    )
    .await?;
    Ok(Json(view(&s, c.org_id).await?))
}

/// Changes the number of seats: Stripe first, then the database; reverted at Stripe if the
/// database write fails.
#[utoipa::path(put, path = "/v1/billing/seats", tag = "billing", security(("bearer" = [])),
    request_body = SeatsRequest,
    responses((status = 200, body = BillingView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 502, body = ErrorBody)))]
pub async fn set_seats(
    State(s): State<AppState>,
    Admin(c): Admin,
    headers: HeaderMap,
    Json(req): Json<SeatsRequest>,
) -> Result<Json<BillingView>, ApiError> {
    let max = s.plan_max_seats;
    if req.seats == 0 || req.seats > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "seats_out_of_range",
            format!("seats must be between 1 and {max}, the plan's maximum"),
        ));
    }
    let (stripe, sub) = subscription(&s, &c).await?;
    let actor = Actor::Agent(c.agent_id);
    let now = crate::now_ms();
    let key = idempotency_key(&headers, &c, "seats");
    s.store
        .audit_only(
            c.org_id,
            actor,
            "billing.seats.attempt",
            serde_json::json!({ "seats": req.seats }),
            now,
        )
        .await?;
    let item = stripe.subscription_item(&sub).await.map_err(stripe_error)?;
    let price = s.seat_price.clone().unwrap_or_default();
    let set = |q: u32| {
        vec![
            ("items[0][id]", item.item_id.clone()),
            ("items[0][price]", price.clone()),
            ("items[0][quantity]", q.to_string()),
            ("proration_behavior", "create_prorations".to_owned()),
        ]
    };
    if let Err(e) = stripe
        .update_subscription(&sub, &set(req.seats), &key)
        .await
    {
        let _ = s
            .store
            .audit_only(
                c.org_id,
                actor,
                "billing.seats.failed",
                serde_json::json!({ "seats": req.seats, "stage": "stripe" }),
                now,
            )
            .await;
        return Err(stripe_error(e));
    }
    if let Err(db) = s
        .store
        .set_seat_limit(c.org_id, req.seats, actor, now)
        .await
    {
        tracing::warn!(error = %db, "seat change not stored; reverting it at Stripe");
        match stripe
            .update_subscription(&sub, &set(item.quantity), &format!("{key}-revert"))
            .await
        {
            Ok(_) => {
                let _ = s
                    .store
                    .audit_only(
                        c.org_id,
                        actor,
                        "billing.seats.reverted",
                        serde_json::json!({ "seats": req.seats, "kept": item.quantity }),
                        now,
                    )
                    .await;
            }
            Err(e) => {
                s.stripe_revert_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(org_id = %c.org_id, error = %e, seats = req.seats, kept = item.quantity,
                    "seat change reached Stripe but not the database, and reverting it failed: reconcile by hand");
                let _ = s
                    .store
                    .audit_only(
                        c.org_id,
                        actor,
                        "billing.seats.revert_failed",
                        serde_json::json!({ "seats": req.seats, "kept": item.quantity }),
                        now,
                    )
                    .await;
            }
        }
        return Err(ApiError::internal(&db));
    }
    s.store
        .audit_only(
            c.org_id,
            actor,
            "billing.seats.done",
            serde_json::json!({ "seats": req.seats }),
            now,
        )
        .await?;
    Ok(Json(view(&s, c.org_id).await?))
}
