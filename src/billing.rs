//! Billing at the edge: the Stripe webhook endpoint, the task that applies stored events from
//! the durable queue, and the mailer that drains the notifications outbox over SMTP.
//!
//! The endpoint verifies, stores and answers at once; it never applies anything itself. The
//! processor claims one due event at a time (oldest Stripe `created` first), applies it in one
//! transaction with its emails, and tells the hub when the org's status changed — the hub then
//! forces agents away or offline and ends or keeps calls. Failures back off exponentially and end
//! in the `dead` state after [`MAX_EVENT_ATTEMPTS`](crate::billing_store::MAX_EVENT_ATTEMPTS).

use crate::error::ApiError;
use crate::http::AppState;
use crate::signal::HubHandle;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use frontdesk_billing::{parse_event, verify_signature, WebhookError, TOLERANCE_S};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What billing needs from the configuration.
#[derive(Clone, Default)]
pub struct BillingConfig {
    /// Every live webhook signing secret (rotation: old and new at once).
    pub webhook_secrets: Vec<Vec<u8>>,
    /// How long an unpaid subscription keeps access, in seconds (default 0).
    pub grace_s: i64,
    /// `smtp://` or `smtps://` URL of the mail relay; without it emails stay queued.
    pub smtp_url: Option<crate::config::Secret>,
    pub smtp_from: String,
}

impl std::fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingConfig")
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("grace_s", &self.grace_s)
            .field("smtp", &self.smtp_url.is_some())
            .field("smtp_from", &self.smtp_from)
            .finish()
    }
}

/// Wakes the background tasks when there is new work.
#[derive(Clone, Default)]
pub struct BillingWake {
    pub events: Arc<Notify>,
    pub mail: Arc<Notify>,
}

/// Starts the event processor and the mailer.
pub fn spawn(store: Store, hub: HubHandle, cfg: BillingConfig) -> BillingWake {
    let wake = BillingWake::default();
    tokio::spawn(processor(store.clone(), hub, cfg.grace_s, wake.clone()));
    tokio::spawn(mailer(store, cfg, wake.mail.clone()));
    wake
}

fn now() -> i64 {
    crate::now_ms()
}

/// `POST /v1/webhooks/stripe`.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "billing",
    request_body(content = String, content_type = "application/json", description = "A Stripe event, signed"),
    responses((status = 200, body = WebhookReceipt), (status = 400, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody)))]
pub async fn stripe_webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<crate::error::Json<WebhookReceipt>, ApiError> {
    if s.billing.webhook_secrets.is_empty() {
        return Err(ApiError::not_found(
            "billing (no FRONTDESK_STRIPE_WEBHOOK_SECRET)",
        ));
    }
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "webhook body is larger than 1 MiB",
            )
        } else {
            ApiError::bad_request("invalid_body", r.body_text())
        }
    })?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    verify_signature(
        header,
        &body,
        &s.billing.webhook_secrets,
        now() / 1000,
        TOLERANCE_S,
    )
    .map_err(|e| {
        tracing::warn!(reason = %e, "stripe webhook refused");
        let code = match e {
            WebhookError::TooLarge => "body_too_large",
            _ => "invalid_signature",
        };
        ApiError::bad_request(code, e.to_string())
    })?;
    let ev =
        parse_event(&body).map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_event", "body is not UTF-8"))?;
    let kind = ev.kind.as_str();
    let inserted = s
        .store
        .insert_stripe_event(&ev, kind, payload, now())
        .await?;
    if inserted {
        s.billing_wake.events.notify_one();
    }
    tracing::info!(event = %ev.id, kind = %kind, duplicate = !inserted, "stripe event stored");
    Ok(crate::error::Json(WebhookReceipt {
        received: true,
        duplicate: !inserted,
    }))
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// True when this event id was already stored: it is not processed again.
    pub duplicate: bool,
}

async fn processor(store: Store, hub: HubHandle, grace_s: i64, wake: BillingWake) {
    // Events a killed process was applying go back to the queue. Applying is idempotent and
    // transactional, so even an event another node still holds is safe to take again.
    match store.release_stuck_events(i64::MAX).await {
        Ok(n) if n > 0 => tracing::warn!(events = n, "re-queued stripe events left in processing"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot re-queue stripe events"),
    }
    loop {
        loop {
            let claimed = match store.claim_stripe_event(now()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a stripe event");
                    break;
                }
            };
            let Some((id, payload, attempts)) = claimed else {
                break;
            };
            process_one(&store, &hub, grace_s, &id, &payload, attempts, &wake).await;
        }
        match store.recheck_billing(grace_s, now()).await {
            Ok(transitions) => {
                for t in transitions {
                    tracing::info!(org_id = %t.org, from = %t.before, to = %t.after, "billing status changed with time");
                    let _ = hub.refresh_org(&store, t.org).await;
                    wake.mail.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, "billing recheck failed"),
        }
        let due = store.next_stripe_event_due().await.ok().flatten();
        let wait = due
            .map(|t| Duration::from_millis(u64::try_from(t - now()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        tokio::select! {
            () = wake.events.notified() => {},
            () = tokio::time::sleep(wait) => {},
        }
    }
}

async fn process_one(
    store: &Store,
    hub: &HubHandle,
    grace_s: i64,
    id: &str,
    payload: &str,
    attempts: i64,
    wake: &BillingWake,
) {
    let ev = match parse_event(payload.as_bytes()) {
        Ok(ev) => ev,
        Err(e) => {
            // A stored event that no longer parses will not parse later either.
            let _ = store
                .fail_stripe_event(id, i64::MAX, &e.to_string(), now())
                .await;
            tracing::error!(event = id, error = %e, "stripe event dead-lettered");
            return;
        }
    };
    match store.apply_stripe_event(id, &ev, grace_s, now()).await {
        Ok(Some(t)) => {
            tracing::info!(event = id, org_id = %t.org, from = %t.before, to = %t.after, "billing status changed");
            if let Err(e) = hub.refresh_org(store, t.org).await {
                tracing::error!(error = %e, "cannot tell the hub");
            }
            wake.mail.notify_one();
        }
        Ok(None) => {}
        Err(e) => {
            let dead = store
                .fail_stripe_event(id, attempts, &e.to_string(), now())
                .await
                .unwrap_or(false);
            if dead {
                tracing::error!(event = id, error = %e, "stripe event dead-lettered after retries");
            } else {
                tracing::warn!(event = id, attempt = attempts, error = %e, "stripe event will be retried");
            }
        }
    }
}

async fn mailer(store: Store, cfg: BillingConfig, wake: Arc<Notify>) {
    use lettre::AsyncTransport;
    let transport = match &cfg.smtp_url {
        None => None,
        Some(url) => {
            let url = String::from_utf8_lossy(url.expose()).into_owned();
            match lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&url) {
                Ok(b) => Some(b.timeout(Some(Duration::from_secs(10))).build()),
                Err(e) => {
                    tracing::error!(error = %e, "FRONTDESK_SMTP_URL is unusable; emails stay queued");
                    None
                }
            }
        }
    };
    let Some(transport) = transport else {
        tracing::info!("no FRONTDESK_SMTP_URL: notifications are queued, not sent");
        return;
    };
    let from: lettre::message::Mailbox = match cfg.smtp_from.parse() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "FRONTDESK_SMTP_FROM is not a mailbox; emails stay queued");
            return;
        }
    };
    let _ = store.release_stuck_notifications().await;
    loop {
        while let Ok(Some(n)) = store.claim_notification(now()).await {
            let msg =
                n.to.parse::<lettre::message::Mailbox>()
                    .map_err(|e| e.to_string())
                    .and_then(|to| {
                        lettre::Message::builder()
                            .from(from.clone())
                            .to(to)
                            .subject(n.subject.clone())
                            .body(n.body.clone())
                            .map_err(|e| e.to_string())
                    });
            let result = match msg {
                Ok(m) => transport
                    .send(m)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    let _ = store.notification_sent(&n.id, now()).await;
                }
                Err(e) => {
                    tracing::warn!(notification = %n.id, attempt = n.attempts, error = %e, "email not sent");
                    let _ = store.notification_failed(&n, &e, now()).await;
                }
            }
        }
        let due = store.next_notification_due().await.ok().flatten();
        let wait = due
            .map(|t| Duration::from_millis(u64::try_from(t - now()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(5))
            .min(Duration::from_secs(5));
        tokio::select! {
            () = wake.notified() => {},
            () = tokio::time::sleep(wait) => {},
        }
    }
}
