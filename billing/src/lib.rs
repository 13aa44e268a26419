//! Billing: Stripe webhook verification, the entitlement machine that turns subscription facts into
//! an org status (pure, told the time), and the adapter to Stripe's API. Billing never imports the
//! signaling hub: it emits entitlement changes on a bus that the hub obeys.
//!
//! ```
//! assert_eq!(frontdesk_billing::MAX_WEBHOOK_BODY_BYTES, 1024 * 1024);
//! ```

/// Largest Stripe webhook body accepted.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;
