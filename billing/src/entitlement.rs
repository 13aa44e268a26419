//! The entitlement machine: what Stripe has said about an org's subscription, folded into a state
//! that gives the org's status at any time. Pure and told the time; the server stores the state
//! with the org and applies each event once.
//!
//! | subscription | org status |
//! | --- | --- |
//! | `active`, `trialing` | `active` |
//! | `past_due`, `unpaid`, `incomplete`, or an unpaid invoice | `past_due` once the grace period (default 0) has run |
//! | `paused`, or `pause_collection` set | `paused` |
//! | `canceled`, `incomplete_expired`, deleted, or `cancel_at_period_end` past its period end | `cancelled` |
//!
//! Facts carry Stripe's `created`; a fact older than the newest one applied is ignored, so events
//! that arrive out of order never move the state backwards.

use frontdesk_domain::OrgStatus;
use serde::{Deserialize, Serialize};

/// Stripe's subscription status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubStatus {
    /// No subscription yet, or one in good standing.
    #[default]
    Active,
    Trialing,
    PastDue,
    Unpaid,
    Incomplete,
    IncompleteExpired,
    Paused,
    Canceled,
}

impl SubStatus {
    /// Stripe's spelling; anything unknown is treated as not paid (fail closed).
    pub fn parse(s: &str) -> SubStatus {
        match s {
            "active" => SubStatus::Active,
            "trialing" => SubStatus::Trialing,
            "past_due" => SubStatus::PastDue,
            "unpaid" => SubStatus::Unpaid,
            "incomplete" => SubStatus::Incomplete,
            "incomplete_expired" => SubStatus::IncompleteExpired,
            "paused" => SubStatus::Paused,
            "canceled" => SubStatus::Canceled,
            _ => SubStatus::Unpaid,
        }
    }

    fn unpaid(self) -> bool {
        matches!(
            self,
            SubStatus::PastDue | SubStatus::Unpaid | SubStatus::Incomplete
        )
    }
}

/// One thing Stripe told us, with its `created` time (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    PaymentFailed {
        created: i64,
    },
    InvoicePaid {
        created: i64,
    },
    Subscription {
        created: i64,
        status: SubStatus,
        pause_collection: bool,
        /// `pause_collection.resumes_at`, unix seconds.
        pause_resumes_at: Option<i64>,
        cancel_at_period_end: bool,
        period_end: Option<i64>,
        quantity: Option<u32>,
    },
    Deleted {
        created: i64,
    },
}

impl Fact {
    pub fn created(&self) -> i64 {
        match self {
            Fact::PaymentFailed { created }
            | Fact::InvoicePaid { created }
            | Fact::Subscription { created, .. }
            | Fact::Deleted { created } => *created,
        }
    }
}

/// Whether a fact changed the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Older than what was already applied: ignored.
    Stale,
}

/// An org's subscription as far as entitlement is concerned. Stored as JSON with the org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Entitlement {
    pub status: SubStatus,
    pub pause_collection: bool,
    /// When a pause ends by itself (unix seconds); `None`: paused until resumed.
    pub pause_resumes_at: Option<i64>,
    pub cancel_at_period_end: bool,
    pub period_end: Option<i64>,
    /// When the subscription first became unpaid, for the grace period.
    pub unpaid_since: Option<i64>,
    /// `created` of the newest fact applied.
    pub last_applied: i64,
    pub seats: Option<u32>,
}

impl Entitlement {
    pub fn apply(&mut self, fact: &Fact) -> Applied {
        let created = fact.created();
        if created < self.last_applied {
            return Applied::Stale;
        }
        self.last_applied = created;
        match fact {
            Fact::PaymentFailed { created } => {
                if !matches!(
                    self.status,
                    SubStatus::Canceled | SubStatus::IncompleteExpired
                ) {
                    if !self.status.unpaid() {
                        self.status = SubStatus::PastDue;
                    }
                    self.unpaid_since.get_or_insert(*created);
                }
            }
            Fact::InvoicePaid { .. } => {
                if self.status.unpaid() {
                    self.status = SubStatus::Active;
                }
                self.unpaid_since = None;
            }
            Fact::Subscription {
                created,
                status,
                pause_collection,
                pause_resumes_at,
                cancel_at_period_end,
                period_end,
                quantity,
            } => {
                self.status = *status;
                self.pause_collection = *pause_collection;
                self.pause_resumes_at = if *pause_collection {
                    *pause_resumes_at
                } else {
                    None
                };
                self.cancel_at_period_end = *cancel_at_period_end;
                self.period_end = *period_end;
                if quantity.is_some() {
                    self.seats = *quantity;
                }
                if status.unpaid() {
                    self.unpaid_since.get_or_insert(*created);
                } else {
                    self.unpaid_since = None;
                }
            }
            Fact::Deleted { .. } => {
                self.status = SubStatus::Canceled;
                self.pause_collection = false;
            }
        }
        Applied::Applied
    }

    /// The org's status at `now_s` with a grace period of `grace_s` for unpaid subscriptions.
    pub fn org_status(&self, now_s: i64, grace_s: i64) -> OrgStatus {
        let period_over =
            self.cancel_at_period_end && self.period_end.is_some_and(|end| now_s >= end);
        match self.status {
            SubStatus::Canceled | SubStatus::IncompleteExpired => OrgStatus::Cancelled,
            _ if period_over => OrgStatus::Cancelled,
            SubStatus::Paused => OrgStatus::Paused,
            _ if self.paused_at(now_s) => OrgStatus::Paused,
            s if s.unpaid() => match self.unpaid_since {
                Some(since) if now_s < since.saturating_add(grace_s) => OrgStatus::Active,
                _ => OrgStatus::PastDue,
            },
            _ => OrgStatus::Active,
        }
    }

    /// Paused collection, and its `resumes_at` (if any) not yet reached.
    pub fn paused_at(&self, now_s: i64) -> bool {
        self.pause_collection && self.pause_resumes_at.is_none_or(|t| now_s < t)
    }

    /// Records a pause the admin asked for (Stripe confirmed it); applies at once.
    pub fn pause(&mut self, resumes_at: Option<i64>) {
        self.pause_collection = true;
        self.pause_resumes_at = resumes_at;
    }

    /// Records a resume the admin asked for (Stripe confirmed it).
    pub fn resume(&mut self) {
        self.pause_collection = false;
        self.pause_resumes_at = None;
    }

    /// Admins are told this long before a pause ends by itself.
    pub const PAUSE_NOTICE_S: i64 = 86_400;

    /// When the status may change without a new fact (grace ends, a cancelled period ends, a
    /// pause ends), or when the pause-ending notice is due.
    pub fn next_change(&self, now_s: i64, grace_s: i64) -> Option<i64> {
        let grace_end = self
            .unpaid_since
            .filter(|_| self.status.unpaid())
            .map(|s| s.saturating_add(grace_s))
            .filter(|t| *t > now_s);
        let period_end = self
            .period_end
            .filter(|_| self.cancel_at_period_end)
            .filter(|t| *t > now_s);
        let pause = self
            .pause_resumes_at
            .filter(|_| self.pause_collection)
            .into_iter()
            .flat_map(|t| [t - Self::PAUSE_NOTICE_S, t])
            .filter(|t| *t > now_s)
            .min();
        [grace_end, period_end, pause].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(created: i64, status: SubStatus) -> Fact {
        Fact::Subscription {
            created,
            status,
            pause_collection: false,
            pause_resumes_at: None,
            cancel_at_period_end: false,
            period_end: None,
            quantity: None,
        }
    }

    #[test]
    fn a_pause_with_a_resume_date_ends_by_itself_and_the_notice_comes_a_day_before() {
        let mut e = Entitlement::default();
        e.pause(Some(200_000));
        assert_eq!(e.org_status(100, 0), OrgStatus::Paused);
        assert_eq!(
            e.next_change(100, 0),
            Some(200_000 - Entitlement::PAUSE_NOTICE_S)
        );
        assert_eq!(
            e.next_change(200_000 - Entitlement::PAUSE_NOTICE_S, 0),
            Some(200_000)
        );
        assert_eq!(e.org_status(200_000, 0), OrgStatus::Active);
    }

    #[test]
    fn each_subscription_status_maps_to_its_org_status() {
        for (s, want) in [
            (SubStatus::Active, OrgStatus::Active),
            (SubStatus::Trialing, OrgStatus::Active),
            (SubStatus::PastDue, OrgStatus::PastDue),
            (SubStatus::Unpaid, OrgStatus::PastDue),
            (SubStatus::Incomplete, OrgStatus::PastDue),
            (SubStatus::Paused, OrgStatus::Paused),
            (SubStatus::Canceled, OrgStatus::Cancelled),
            (SubStatus::IncompleteExpired, OrgStatus::Cancelled),
        ] {
            let mut e = Entitlement::default();
            e.apply(&sub(10, s));
            assert_eq!(e.org_status(10, 0), want, "{s:?}");
        }
        assert_eq!(
            SubStatus::parse("something_new"),
            SubStatus::Unpaid,
            "unknown fails closed"
        );
    }

    #[test]
    fn pause_collection_pauses_and_resuming_restores() {
        let mut e = Entitlement::default();
        e.apply(&Fact::Subscription {
            created: 1,
            status: SubStatus::Active,
            pause_collection: true,
            pause_resumes_at: None,
            cancel_at_period_end: false,
            period_end: None,
            quantity: Some(5),
        });
        assert_eq!(e.org_status(1, 0), OrgStatus::Paused);
        assert_eq!(e.seats, Some(5));
        e.apply(&sub(2, SubStatus::Active));
        assert_eq!(e.org_status(2, 0), OrgStatus::Active);
    }

    #[test]
    fn payment_failure_respects_the_grace_period_and_payment_clears_it() {
        let mut e = Entitlement::default();
        e.apply(&Fact::PaymentFailed { created: 100 });
        assert_eq!(e.org_status(100, 0), OrgStatus::PastDue, "grace 0: at once");
        assert_eq!(
            e.org_status(150, 86_400),
            OrgStatus::Active,
            "inside a day's grace"
        );
        assert_eq!(e.next_change(150, 86_400), Some(86_500));
        assert_eq!(e.org_status(86_500, 86_400), OrgStatus::PastDue);
        e.apply(&Fact::InvoicePaid { created: 200 });
        assert_eq!(e.org_status(200, 0), OrgStatus::Active);
        assert_eq!(e.unpaid_since, None);
    }

    #[test]
    fn an_older_fact_never_moves_the_state_backwards() {
        let mut e = Entitlement::default();
        assert_eq!(
            e.apply(&Fact::InvoicePaid { created: 200 }),
            Applied::Applied
        );
        assert_eq!(
            e.apply(&Fact::PaymentFailed { created: 100 }),
            Applied::Stale
        );
        assert_eq!(e.org_status(300, 0), OrgStatus::Active);
        e.apply(&Fact::Deleted { created: 300 });
        assert_eq!(e.apply(&sub(250, SubStatus::Active)), Applied::Stale);
        assert_eq!(e.org_status(400, 0), OrgStatus::Cancelled);
    }

    #[test]
    fn cancel_at_period_end_keeps_access_until_the_period_ends() {
        let mut e = Entitlement::default();
        e.apply(&Fact::Subscription {
            created: 1,
            status: SubStatus::Active,
            pause_collection: false,
            pause_resumes_at: None,
            cancel_at_period_end: true,
            period_end: Some(1_000),
            quantity: None,
        });
        assert_eq!(e.org_status(999, 0), OrgStatus::Active);
        assert_eq!(e.next_change(999, 0), Some(1_000));
        assert_eq!(e.org_status(1_000, 0), OrgStatus::Cancelled);
    }

    #[test]
    fn applying_the_same_fact_twice_changes_nothing() {
        let mut e = Entitlement::default();
        e.apply(&Fact::PaymentFailed { created: 5 });
        let once = e.clone();
        e.apply(&Fact::PaymentFailed { created: 5 });
        assert_eq!(e, once);
    }
}
