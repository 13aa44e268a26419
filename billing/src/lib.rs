//! Billing: Stripe webhook verification, the entitlement machine that turns subscription facts
//! into an org status (pure, told the time), and the shapes of the Stripe objects frontdesk reads.
//! Billing never imports the signaling hub: the server applies the status this crate computes and
//! tells the hub, which obeys.
//!
//! ```
//! use frontdesk_billing::{Entitlement, Fact, SubStatus};
//! use frontdesk_domain::OrgStatus;
//!
//! let mut e = Entitlement::default();
//! e.apply(&Fact::PaymentFailed { created: 100 });
//! assert_eq!(e.org_status(100, 0), OrgStatus::PastDue);
//! e.apply(&Fact::InvoicePaid { created: 200 });
//! assert_eq!(e.org_status(200, 0), OrgStatus::Active);
//! # let _ = SubStatus::Active;
//! ```

mod entitlement;
mod event;
mod webhook;

pub use entitlement::*;
pub use event::*;
pub use webhook::*;

/// Largest Stripe webhook body accepted.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;
