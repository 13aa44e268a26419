//! Billing's tables: the durable Stripe event queue, each org's entitlement state, and the
//! notifications outbox. Applying an event, changing the org's status, queueing its emails and
//! marking the event done happen in one transaction: a crash at any point leaves either all of it
//! or none, so every stored event takes effect exactly once.

use crate::store::{audit, lock_org, org_from_row, parse_enum, parse_id, Actor, Store, StoreError};
use frontdesk_billing::{Applied, Entitlement, StripeEvent};
use frontdesk_domain::{OrgId, OrgStatus};
use sqlx::Row;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attempts before an event is dead-lettered.
pub const MAX_EVENT_ATTEMPTS: i64 = 10;
/// Attempts before a notification is given up.
pub const MAX_NOTIFICATION_ATTEMPTS: i64 = 3;

/// What applying an event did to an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub org: OrgId,
    pub before: OrgStatus,
    pub after: OrgStatus,
}

/// A queued email.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
}

impl Store {
    /// Stores a verified event once. Returns false for a duplicate.
    pub async fn insert_stripe_event(
        &self,
        ev: &StripeEvent,
        kind: &str,
        payload: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO stripe_events (id, type, created, payload, next_attempt_at, received_at, customer)
             VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ev.id)
        .bind(kind)
        .bind(ev.created)
        .bind(payload)
        .bind(now)
        .bind(&ev.customer)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Events a dead process was working on go back to the queue.
    pub async fn release_stuck_events(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE stripe_events SET status = 'pending', locked_until = NULL
             WHERE status = 'processing' AND (locked_until IS NULL OR locked_until <= $1)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Takes the oldest due event for this process (older Stripe `created` first), or `None`.
    /// An event whose customer has an earlier event still queued (pending, possibly backing off,
    /// or processing) waits for it: one customer's facts are applied in order, so a retry never
    /// lets a later fact overtake an earlier one. Dead events no longer hold anything up.
    pub async fn claim_stripe_event(&self, now: i64) -> Result<Option<(String, String, i64)>> {
        loop {
            let row = sqlx::query(
                "SELECT e.id FROM stripe_events e
                 WHERE e.status = 'pending' AND e.next_attempt_at <= $1
                   AND NOT EXISTS (
                     SELECT 1 FROM stripe_events b
                     WHERE b.customer = e.customer AND b.status IN ('pending', 'processing')
                       AND (b.created < e.created
                            OR (b.created = e.created AND b.received_at < e.received_at)
                            OR (b.created = e.created AND b.received_at = e.received_at AND b.id < e.id)))
                 ORDER BY e.created, e.received_at, e.id LIMIT 1",
            )
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let id: String = row.try_get("id")?;
            let claimed = sqlx::query(
                "UPDATE stripe_events SET status = 'processing', locked_until = $2, attempts = attempts + 1
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(&id)
            .bind(now + 60_000)
            .execute(&self.pool)
            .await?;
            if claimed.rows_affected() == 1 {
                let row = sqlx::query("SELECT payload, attempts FROM stripe_events WHERE id = $1")
                    .bind(&id)
                    .fetch_one(&self.pool)
                    .await?;
                return Ok(Some((
                    id,
                    row.try_get("payload")?,
                    row.try_get("attempts")?,
                )));
            }
            // Another node took it; look again.
        }
    }

    /// When the next pending event is due, if any.
    pub async fn next_stripe_event_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS t FROM stripe_events WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?)
    }

    pub async fn finish_stripe_event(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE stripe_events SET status = 'done', processed_at = $2, locked_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts a failed event back with exponential backoff, or dead-letters it.
    pub async fn fail_stripe_event(
        &self,
        id: &str,
        attempts: i64,
        error: &str,
        now: i64,
    ) -> Result<bool> {
        let dead = attempts >= MAX_EVENT_ATTEMPTS;
        let backoff_ms = 1_000i64 << attempts.clamp(0, 12);
        sqlx::query(
            "UPDATE stripe_events SET status = $2, next_attempt_at = $3, last_error = $4, locked_until = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(if dead { "dead" } else { "pending" })
        .bind(now + backoff_ms.min(3_600_000))
        .bind(error.chars().take(500).collect::<String>())
        .execute(&self.pool)
        .await?;
        Ok(dead)
    }

    /// (status, attempts) of a stored event, for tests and operators.
    pub async fn stripe_event_status(&self, id: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query("SELECT status, attempts FROM stripe_events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("status")?, r.try_get("attempts")?)))
            .transpose()
    }

    /// Applies one event to its org, in one transaction with its notifications and its `done`
    /// mark. `Ok(None)`: nothing to apply (unknown type, stale). Err(NotFound): no org yet.
    pub async fn apply_stripe_event(
        &self,
        event_id: &str,
        ev: &StripeEvent,
        grace_s: i64,
        now: i64,
    ) -> Result<Option<Transition>> {
        let Some(fact) = &ev.fact else {
            self.finish_stripe_event(event_id, now).await?;
            return Ok(None);
        };
        // Find the org before the transaction, then start the transaction with a write (the
        // org's lock): SQLite refuses to turn a read transaction into a write one under contention.
        let by_customer = match &ev.customer {
            Some(c) => sqlx::query("SELECT id FROM orgs WHERE stripe_customer_id = $1")
                .bind(c)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| parse_id::<OrgId>(&r, "id"))
                .transpose()?,
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        let org_id = match (by_customer, ev.org_hint) {
            (Some(o), _) => o,
            (None, Some(hint)) => {
                // First sight of this customer: link it to the org its subscription names, if that
                // org has no customer yet. Never re-link an org to another customer.
                let linked = sqlx::query(
                    "UPDATE orgs SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL",
                )
                .bind(hint.to_string())
                .bind(&ev.customer)
                .execute(&mut *tx)
                .await?;
                if linked.rows_affected() == 0 || ev.customer.is_none() {
                    return Err(StoreError::NotFound("org for this Stripe customer"));
                }
                hint
            }
            (None, None) => return Err(StoreError::NotFound("org for this Stripe customer")),
        };
        lock_org(&mut tx, org_id, now).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            crate::store::org_columns!(),
            ", entitlement, stripe_customer_id FROM orgs WHERE id = $1"
        ))
        .bind(org_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let org = org_from_row(&row)?;
        // Under the lock: the org still belongs to this customer.
        let linked: Option<String> = row.try_get("stripe_customer_id")?;
        if ev.customer.is_some() && linked != ev.customer {
            return Err(StoreError::NotFound("org for this Stripe customer"));
        }
        let text: String = row.try_get("entitlement")?;
        let mut ent: Entitlement =
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now_s = now / 1000;
        let applied = ent.apply(fact);
        let after = ent.org_status(now_s, grace_s);
        let before = org.status;
        if applied == Applied::Applied {
            sqlx::query(
                "UPDATE orgs SET entitlement = $2, status = $3, billing_next_check = $4,
                        stripe_subscription_id = COALESCE($5, stripe_subscription_id),
                        plan = CASE WHEN $3 = 'cancelled' THEN 'free' ELSE plan END
                 WHERE id = $1",
            )
            .bind(org_id.to_string())
            .bind(serde_json::to_string(&ent).unwrap_or_else(|_| "{}".into()))
            .bind(after.as_str())
            .bind(ent.next_change(now_s, grace_s).map(|t| t * 1000))
            .bind(&ev.subscription)
            .execute(&mut *tx)
            .await?;
            if before != after {
                audit(
                    &mut tx,
                    org_id,
                    Actor::System,
                    "billing.status",
                    "org",
                    &org_id.to_string(),
                    serde_json::json!({ "from": before, "to": after, "event": event_id }),
                    now,
                )
                .await?;
                queue_status_emails(&mut tx, org_id, &org.name, after, event_id, now).await?;
            }
        }
        sqlx::query(
            "UPDATE stripe_events SET status = 'done', processed_at = $2, locked_until = NULL, org_id = $3
             WHERE id = $1",
        )
        .bind(event_id)
        .bind(now)
        .bind(org_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(
            (applied == Applied::Applied && before != after).then_some(Transition {
                org: org_id,
                before,
                after,
            }),
        )
    }

    /// Orgs whose status may have changed with time alone (grace or a cancelled period ended).
    pub async fn recheck_billing(&self, grace_s: i64, now: i64) -> Result<Vec<Transition>> {
        let rows = sqlx::query(
            "SELECT id FROM orgs WHERE billing_next_check IS NOT NULL AND billing_next_check <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let org_id: OrgId = parse_id(&r, "id")?;
            let mut tx = self.pool.begin().await?;
            lock_org(&mut tx, org_id, now).await?;
            let row = sqlx::query("SELECT name, status, entitlement FROM orgs WHERE id = $1")
                .bind(org_id.to_string())
                .fetch_one(&mut *tx)
                .await?;
            let before = parse_enum(&row, "status", OrgStatus::parse)?;
            let name: String = row.try_get("name")?;
            let ent: Entitlement = serde_json::from_str(&row.try_get::<String, _>("entitlement")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let after = ent.org_status(now / 1000, grace_s);
            sqlx::query("UPDATE orgs SET status = $2, billing_next_check = $3 WHERE id = $1")
                .bind(org_id.to_string())
                .bind(after.as_str())
                .bind(ent.next_change(now / 1000, grace_s).map(|t| t * 1000))
                .execute(&mut *tx)
                .await?;
            if let Some(end) = ent.pause_resumes_at.filter(|_| ent.pause_collection) {
                let left = end - now / 1000;
                if left > 0 && left <= Entitlement::PAUSE_NOTICE_S {
                    let when = format!("in about {} hours", (left + 1800) / 3600);
                    queue_admin_email(&mut tx, org_id, "pause_ending",
                        &format!("{name}: your pause ends {when}"),
                        "Your subscription's pause ends soon: collection resumes and your agents can take \
                         calls again. If the payment fails, calls stop again until it is paid.",
                        &format!("pause_ending:{end}"), now).await?;
                }
            }
            if before != after {
                let cause = format!("recheck:{now}");
                audit(
                    &mut tx,
                    org_id,
                    Actor::System,
                    "billing.status",
                    "org",
                    &org_id.to_string(),
                    serde_json::json!({ "from": before, "to": after, "cause": cause }),
                    now,
                )
                .await?;
                queue_status_emails(&mut tx, org_id, &name, after, &cause, now).await?;
                out.push(Transition {
                    org: org_id,
                    before,
                    after,
                });
            }
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Changes the org's entitlement state after Stripe confirmed an admin's action (pause,
    /// resume, cancel at period end), recomputes the status at once, audits and queues emails.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_entitlement(
        &self,
        org_id: OrgId,
        actor: Actor,
        action: &str,
        details: serde_json::Value,
        change: impl FnOnce(&mut Entitlement),
        grace_s: i64,
        now: i64,
    ) -> Result<Option<Transition>> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org_id, now).await?;
        let row = sqlx::query("SELECT name, status, entitlement FROM orgs WHERE id = $1")
            .bind(org_id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let before = parse_enum(&row, "status", OrgStatus::parse)?;
        let name: String = row.try_get("name")?;
        let mut ent: Entitlement = serde_json::from_str(&row.try_get::<String, _>("entitlement")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        change(&mut ent);
        let after = ent.org_status(now / 1000, grace_s);
        sqlx::query(
            "UPDATE orgs SET entitlement = $2, status = $3, billing_next_check = $4 WHERE id = $1",
        )
        .bind(org_id.to_string())
        .bind(serde_json::to_string(&ent).unwrap_or_else(|_| "{}".into()))
        .bind(after.as_str())
        .bind(ent.next_change(now / 1000, grace_s).map(|t| t * 1000))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            org_id,
            actor,
            action,
            "org",
            &org_id.to_string(),
            details,
            now,
        )
        .await?;
        if before != after {
            audit(
                &mut tx,
                org_id,
                actor,
                "billing.status",
                "org",
                &org_id.to_string(),
                serde_json::json!({ "from": before, "to": after, "cause": action }),
                now,
            )
            .await?;
            queue_status_emails(
                &mut tx,
                org_id,
                &name,
                after,
                &format!("{action}:{now}"),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok((before != after).then_some(Transition {
            org: org_id,
            before,
            after,
        }))
    }

    /// The org's Stripe subscription and entitlement, for the billing API.
    pub async fn billing_state(
        &self,
        org_id: OrgId,
    ) -> Result<(Option<String>, Option<String>, Entitlement)> {
        let row = sqlx::query("SELECT stripe_customer_id, stripe_subscription_id, entitlement FROM orgs WHERE id = $1")
            .bind(org_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("org"))?;
        let ent = serde_json::from_str(&row.try_get::<String, _>("entitlement")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((
            row.try_get("stripe_customer_id")?,
            row.try_get("stripe_subscription_id")?,
            ent,
        ))
    }

    /// An audit entry on its own (billing attempts that must be recorded whatever happens next).
    pub async fn audit_only(
        &self,
        org_id: OrgId,
        actor: Actor,
        action: &str,
        details: serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        audit(
            &mut tx,
            org_id,
            actor,
            action,
            "org",
            &org_id.to_string(),
            details,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- notifications -------------------------------------------------------------------

    pub async fn claim_notification(&self, now: i64) -> Result<Option<Outgoing>> {
        loop {
            let row = sqlx::query(
                "SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT 1",
            )
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let id: String = row.try_get("id")?;
            let claimed = sqlx::query(
                "UPDATE notifications SET status = 'sending', attempts = attempts + 1
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(&id)
            .execute(&self.pool)
            .await?;
            if claimed.rows_affected() == 1 {
                let r = sqlx::query(
                    "SELECT to_addr, subject, body, attempts FROM notifications WHERE id = $1",
                )
                .bind(&id)
                .fetch_one(&self.pool)
                .await?;
                return Ok(Some(Outgoing {
                    id,
                    to: r.try_get("to_addr")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                }));
            }
        }
    }

    pub async fn release_stuck_notifications(&self) -> Result<()> {
        sqlx::query("UPDATE notifications SET status = 'pending' WHERE status = 'sending'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn notification_sent(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE notifications SET status = 'sent', sent_at = $2, last_error = NULL WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Retries with backoff (2 s, 4 s) until the third attempt, then `failed`.
    pub async fn notification_failed(&self, n: &Outgoing, error: &str, now: i64) -> Result<()> {
        let failed = n.attempts >= MAX_NOTIFICATION_ATTEMPTS;
        sqlx::query("UPDATE notifications SET status = $2, next_attempt_at = $3, last_error = $4 WHERE id = $1")
            .bind(&n.id)
            .bind(if failed { "failed" } else { "pending" })
            .bind(now + (2_000i64 << n.attempts.clamp(0, 10)))
            .bind(error.chars().take(500).collect::<String>())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn next_notification_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS t FROM notifications WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("t")?)
    }

    pub async fn notifications(
        &self,
        org_id: OrgId,
        limit: u32,
    ) -> Result<Vec<crate::model::NotificationView>> {
        let rows = sqlx::query(
            "SELECT id, kind, to_addr, subject, status, attempts, last_error, created_at, sent_at
             FROM notifications WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(org_id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::model::NotificationView {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    to: r.try_get("to_addr")?,
                    subject: r.try_get("subject")?,
                    status: r.try_get("status")?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    last_error: r.try_get("last_error")?,
                    created_at_ms: r.try_get("created_at")?,
                    sent_at_ms: r.try_get("sent_at")?,
                })
            })
            .collect()
    }

    /// Queues a notification of this org again, whatever its state.
    pub async fn resend_notification(
        &self,
        org_id: OrgId,
        id: &str,
        actor: Actor,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = $3, last_error = NULL
             WHERE org_id = $1 AND id = $2 AND status <> 'sending'",
        )
        .bind(org_id.to_string())
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("notification"));
        }
        audit(
            &mut tx,
            org_id,
            actor,
            "notification.resend",
            "notification",
            id,
            serde_json::json!({}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Queues one email; `dedup_key` makes it happen once per cause and recipient.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn queue_email(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    org_id: OrgId,
    kind: &str,
    to: &str,
    subject: &str,
    body: &str,
    dedup_key: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO notifications (id, org_id, kind, to_addr, subject, body, next_attempt_at, dedup_key, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(org_id.to_string())
    .bind(kind)
    .bind(to)
    .bind(subject)
    .bind(body)
    .bind(now)
    .bind(dedup_key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues one email to each admin of the org; `cause` makes it happen once per cause.
#[allow(clippy::too_many_arguments)]
async fn queue_admin_email(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    org_id: OrgId,
    kind: &str,
    subject: &str,
    body: &str,
    cause: &str,
    now: i64,
) -> Result<()> {
    let admins = sqlx::query(
        "SELECT id, email FROM agents WHERE org_id = $1 AND role = 'admin' AND removed_at IS NULL",
    )
    .bind(org_id.to_string())
    .fetch_all(&mut **tx)
    .await?;
    for a in admins {
        let admin_id: String = a.try_get("id")?;
        let email: String = a.try_get("email")?;
        queue_email(
            tx,
            org_id,
            kind,
            &email,
            subject,
            body,
            &format!("{cause}:{kind}:{admin_id}"),
            now,
        )
        .await?;
    }
    Ok(())
}

/// Emails the org's admins about a status they must act on.
async fn queue_status_emails(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    org_id: OrgId,
    org_name: &str,
    status: OrgStatus,
    cause: &str,
    now: i64,
) -> Result<()> {
    let (kind, subject, body) = match status {
        OrgStatus::PastDue => (
            "payment_failed",
            format!("{org_name}: payment failed — calls are paused"),
            "We could not charge your payment method. Until the invoice is paid, your agents cannot \
             take calls. Update the payment method in your billing settings to restore service at once."
                .to_owned(),
        ),
        OrgStatus::Cancelled => (
            "subscription_cancelled",
            format!("{org_name}: subscription ended"),
            "Your subscription has ended and your agents can no longer take calls. Your data is kept \
             for 30 days; subscribe again within that time to keep it."
                .to_owned(),
        ),
        _ => return Ok(()),
    };
    queue_admin_email(tx, org_id, kind, &subject, &body, cause, now).await
}
