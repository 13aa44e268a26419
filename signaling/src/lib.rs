//! The signaling hub: presence, pool routing, ring-no-answer, the call lifecycle and reconnection,
//! as a sans-IO core. The WebSocket adapter in the `frontdesk` binary feeds it inputs together with
//! the current time and carries out the outputs it returns; the hub itself never reads a clock,
//! opens a socket or spawns a task. This crate also owns the wire types of `/v1/signal`.
//!
//! ```
//! use frontdesk_signaling::{Hub, HubConfig, Input, OrgFacts, Output};
//! use frontdesk_domain::*;
//!
//! let mut hub = Hub::new(HubConfig::default());
//! let (org, pool, agent) = (OrgId::new(), PoolId::new(), AgentId::new());
//! let facts = OrgFacts { status: OrgStatus::Active, ring_timeout_ms: 15_000, queue_when_unavailable: true };
//! hub.handle(0, Input::AgentConnected {
//!     conn: 1, re: None, org, agent, role: Role::Agent, display_name: "Sam".into(),
//!     pools: vec![(pool, 1)], facts,
//! });
//! // The agent is welcomed on its connection.
//! assert!(matches!(hub.poll_output(), Some(Output::Record(_)) | Some(Output::Send { conn: 1, .. })));
//! ```

mod hub;
pub mod wire;

pub use hub::*;

/// Version of the signaling protocol, in the URL (`/v1/signal`) and in the first server message.
pub const PROTOCOL_VERSION: u32 = 1;
