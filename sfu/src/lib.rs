//! The selective forwarding unit: WebRTC peers, RTP forwarding without decoding, keyframe
//! requests, ICE restart, TURN credentials and recording taps, as a sans-IO core driven by the UDP
//! loop of the `frontdesk` binary. It never imports the signaling hub or billing.
//!
//! ```
//! assert!(frontdesk_sfu::MAX_UDP_PAYLOAD >= 1200);
//! ```

/// Largest UDP payload the SFU accepts or sends; larger datagrams are dropped at the edge.
pub const MAX_UDP_PAYLOAD: usize = 1500;
