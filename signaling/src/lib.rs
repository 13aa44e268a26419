//! The signaling hub: presence, pool routing, ring-no-answer, the call lifecycle and reconnection,
//! as a sans-IO core. The WebSocket adapter in the `frontdesk` binary feeds it inputs together with
//! the current time and carries out the outputs it returns; the hub itself never reads a clock,
//! opens a socket or spawns a task. This crate also owns the wire types of `/v1/signal`.
//!
//! ```
//! assert_eq!(frontdesk_signaling::PROTOCOL_VERSION, 1);
//! ```

/// Version of the signaling protocol, in the URL (`/v1/signal`) and in the first server message.
pub const PROTOCOL_VERSION: u32 = 1;
