//! The parts of Stripe events frontdesk reads. Everything else in the payload is ignored, and an
//! event of a type frontdesk does not handle parses as [`EventKind::Other`] (acknowledged, not
//! applied).

use crate::{Fact, SubStatus, WebhookError};
use frontdesk_domain::OrgId;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    InvoicePaymentFailed,
    InvoicePaid,
    SubscriptionCreated,
    SubscriptionUpdated,
    SubscriptionPaused,
    SubscriptionResumed,
    SubscriptionDeleted,
    Other(String),
}

impl EventKind {
    /// Stripe's spelling of the type.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::InvoicePaymentFailed => "invoice.payment_failed",
            EventKind::InvoicePaid => "invoice.paid",
            EventKind::SubscriptionCreated => "customer.subscription.created",
            EventKind::SubscriptionUpdated => "customer.subscription.updated",
            EventKind::SubscriptionPaused => "customer.subscription.paused",
            EventKind::SubscriptionResumed => "customer.subscription.resumed",
            EventKind::SubscriptionDeleted => "customer.subscription.deleted",
            EventKind::Other(s) => s,
        }
    }

    fn parse(s: &str) -> EventKind {
        match s {
            "invoice.payment_failed" => EventKind::InvoicePaymentFailed,
            "invoice.paid" => EventKind::InvoicePaid,
            "customer.subscription.created" => EventKind::SubscriptionCreated,
            "customer.subscription.updated" => EventKind::SubscriptionUpdated,
            "customer.subscription.paused" => EventKind::SubscriptionPaused,
            "customer.subscription.resumed" => EventKind::SubscriptionResumed,
            "customer.subscription.deleted" => EventKind::SubscriptionDeleted,
            other => EventKind::Other(other.chars().take(100).collect()),
        }
    }
}

/// A verified event, reduced to what entitlement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    pub id: String,
    pub kind: EventKind,
    /// Stripe's `created`, unix seconds: the order of facts about one subscription.
    pub created: i64,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    /// `metadata.org_id` of a subscription, when the checkout set it.
    pub org_hint: Option<OrgId>,
    /// What the event says about the subscription; `None` for types not applied.
    pub fact: Option<Fact>,
}

#[derive(Deserialize)]
struct Raw {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: RawObject,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawObject {
    id: Option<String>,
    customer: Option<String>,
    subscription: Option<serde_json::Value>,
    status: Option<String>,
    pause_collection: Option<serde_json::Value>,
    cancel_at_period_end: Option<bool>,
    current_period_end: Option<i64>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    items: Option<RawItems>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawItems {
    data: Vec<RawItem>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawItem {
    quantity: Option<u32>,
    current_period_end: Option<i64>,
}

fn id_str(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 255).then(|| s.to_owned())
}

/// Parses a (verified) event body.
pub fn parse_event(body: &[u8]) -> Result<StripeEvent, WebhookError> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| WebhookError::NotAnEvent(e.to_string()))?;
    if raw.id.is_empty() || raw.id.len() > 255 {
        return Err(WebhookError::NotAnEvent("bad id".into()));
    }
    let kind = EventKind::parse(&raw.kind);
    let o = raw.data.object;
    let subscription_of_invoice = match &o.subscription {
        Some(serde_json::Value::String(s)) => id_str(s),
        Some(serde_json::Value::Object(m)) => m.get("id").and_then(|v| v.as_str()).and_then(id_str),
        _ => None,
    };
    let is_subscription_event = matches!(
        kind,
        EventKind::SubscriptionCreated
            | EventKind::SubscriptionUpdated
            | EventKind::SubscriptionPaused
            | EventKind::SubscriptionResumed
            | EventKind::SubscriptionDeleted
    );
    let subscription = if is_subscription_event {
        o.id.as_deref().and_then(id_str)
    } else {
        subscription_of_invoice
    };
    let org_hint = o
        .metadata
        .as_ref()
        .and_then(|m| m.get("org_id"))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok());
    let created = raw.created;
    let period_end = o.current_period_end.or_else(|| {
        o.items
            .as_ref()
            .and_then(|i| i.data.iter().filter_map(|d| d.current_period_end).max())
    });
    let quantity = o
        .items
        .as_ref()
        .and_then(|i| i.data.first())
        .and_then(|d| d.quantity);
    let fact = match &kind {
        EventKind::InvoicePaymentFailed => Some(Fact::PaymentFailed { created }),
        EventKind::InvoicePaid => Some(Fact::InvoicePaid { created }),
        EventKind::SubscriptionDeleted => Some(Fact::Deleted { created }),
        EventKind::SubscriptionCreated
        | EventKind::SubscriptionUpdated
        | EventKind::SubscriptionPaused
        | EventKind::SubscriptionResumed => {
            let status =
                o.status.as_deref().map(SubStatus::parse).ok_or_else(|| {
                    WebhookError::NotAnEvent("subscription without status".into())
                })?;
            Some(Fact::Subscription {
                created,
                status,
                pause_collection: matches!(o.pause_collection, Some(serde_json::Value::Object(_))),
                pause_resumes_at: o
                    .pause_collection
                    .as_ref()
                    .and_then(|p| p.get("resumes_at"))
                    .and_then(|v| v.as_i64()),
                cancel_at_period_end: o.cancel_at_period_end.unwrap_or(false),
                period_end,
                quantity,
            })
        }
        EventKind::Other(_) => None,
    };
    Ok(StripeEvent {
        id: raw.id,
        kind,
        created,
        customer: o.customer.as_deref().and_then(id_str),
        subscription,
        org_hint,
        fact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_and_invoice_events_become_facts() {
        let e = parse_event(
            br#"{"id":"evt_1","type":"customer.subscription.updated","created":5,
            "data":{"object":{"id":"sub_1","customer":"cus_1","status":"past_due",
            "pause_collection":{"behavior":"void"},"cancel_at_period_end":true,
            "current_period_end":99,"metadata":{"org_id":"6f1c2a5e-3b1d-4d8e-9f00-0a1b2c3d4e5f"},
            "items":{"data":[{"quantity":7}]}}}}"#,
        )
        .unwrap();
        assert_eq!(e.subscription.as_deref(), Some("sub_1"));
        assert!(e.org_hint.is_some());
        assert_eq!(
            e.fact,
            Some(Fact::Subscription {
                created: 5,
                status: SubStatus::PastDue,
                pause_collection: true,
                pause_resumes_at: None,
                cancel_at_period_end: true,
                period_end: Some(99),
                quantity: Some(7),
            })
        );
        let i = parse_event(
            br#"{"id":"evt_2","type":"invoice.payment_failed","created":6,
            "data":{"object":{"id":"in_1","customer":"cus_1","subscription":"sub_1"}}}"#,
        )
        .unwrap();
        assert_eq!(
            (i.subscription.as_deref(), i.fact),
            (Some("sub_1"), Some(Fact::PaymentFailed { created: 6 }))
        );
    }

    #[test]
    fn unknown_types_parse_but_carry_no_fact_and_garbage_is_refused() {
        let e = parse_event(
            br#"{"id":"evt_3","type":"charge.refunded","created":1,"data":{"object":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            (e.kind, e.fact),
            (EventKind::Other("charge.refunded".into()), None)
        );
        assert!(parse_event(b"[]").is_err());
        assert!(parse_event(br#"{"id":"","type":"x","created":1,"data":{"object":{}}}"#).is_err());
    }
}
