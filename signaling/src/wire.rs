//! The JSON messages of `/v1/signal`, version [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
//! Every message is an object with a `type`; a request that wants an answer carries a numeric
//! `id`, and its answer carries `re` with the same number. `docs/protocol.md` documents each one.

use frontdesk_domain::{
    AgentId, CallId, CallState, EndReason, OrgStatus, PoolId, Presence, VisitorSessionId,
};
use serde::{Deserialize, Serialize};

/// Correlates a request with its answer.
pub type RequestId = u64;

/// Largest text frame accepted; larger ones close the connection with `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// What a client may send. `auth` is handled by the server's adapter before the hub sees the
/// connection; everything else goes to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message of every connection: exactly one of the three credentials.
    Auth {
        agent_token: Option<String>,
        widget_key: Option<String>,
        page_url: Option<String>,
        visitor_token: Option<String>,
    },
    /// Agent: choose `available` or `away`.
    SetPresence { presence: Presence },
    /// Agent: take the call this connection is being rung for.
    Accept { call_id: CallId },
    /// Agent: decline the ring; the call rings the next agent of its pool.
    Reject { call_id: CallId },
    /// Agent or visitor: end (or, before it connects, cancel) a call.
    EndCall { call_id: CallId },
    /// Visitor: ask for a call in the session's pool.
    RequestCall {},
    /// Either: application-level liveness probe; answered with `pong`.
    Ping {},
    /// Media negotiation of a connected call. The server's adapter answers these itself (they
    /// concern the SFU, not the hub); the hub ignores them.
    #[serde(skip)]
    Media(MediaMessage),
}

/// Media messages (client → server), see the "Media" section of `docs/protocol.md`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MediaMessage {
    /// An SDP offer for the call (first offer, or a renegotiation such as an ICE restart).
    MediaOffer {
        call_id: CallId,
        sdp: String,
        #[serde(default)]
        restart: bool,
        #[serde(default)]
        attempt: u8,
    },
    /// A trickled ICE candidate; an empty `candidate` ends the candidates.
    IceCandidate {
        call_id: CallId,
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
        #[serde(default)]
        sdp_m_line_index: Option<u32>,
    },
    /// Ask the sender of the video received on `mid` for a keyframe.
    RequestKeyframe { call_id: CallId, mid: String },
    /// The client gave up restarting ICE.
    MediaFailed { call_id: CallId },
    /// Admin: watch a connected call of the org (listen in, receive only). `watch_id` is the
    /// client's name for this watch, unique on its connection; a new offer for the same id
    /// renegotiates it. The offer carries the client's candidates (no trickle for watches).
    WatchOffer {
        call_id: CallId,
        watch_id: u32,
        sdp: String,
    },
    /// Admin: stop watching.
    WatchEnd { call_id: CallId, watch_id: u32 },
}

/// Whose media a media event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Visitor,
    Agent,
}

/// One entry of `RTCPeerConnection`'s `iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("frame is larger than 64 KiB")]
    TooLarge,
    #[error("frame is not a JSON object: {0}")]
    Malformed(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid {kind} message: {detail}")]
    Invalid { kind: String, detail: String },
}

impl WireError {
    pub fn code(&self) -> &'static str {
        match self {
            WireError::TooLarge => "frame_too_large",
            WireError::Malformed(_) => "malformed",
            WireError::UnknownType(_) => "unknown_type",
            WireError::Invalid { .. } => "invalid_message",
        }
    }
}

/// Reads one client frame into its request id (if any) and message. The `id` is returned even
/// when the message itself is invalid, so the error can answer the request.
pub fn parse_client(text: &str) -> (Option<RequestId>, Result<ClientMessage, WireError>) {
    if text.len() > MAX_FRAME_BYTES {
        return (None, Err(WireError::TooLarge));
    }
    let mut value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return (None, Err(WireError::Malformed(e.to_string()))),
    };
    let Some(obj) = value.as_object_mut() else {
        return (None, Err(WireError::Malformed("not an object".into())));
    };
    let id = match obj.remove("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                return (
                    None,
                    Err(WireError::Invalid {
                        kind: "request".into(),
                        detail: "id must be a non-negative integer".into(),
                    }),
                )
            }
        },
    };
    let kind = match obj.get("type").and_then(|t| t.as_str()) {
        Some(t) => t.to_owned(),
        None => return (id, Err(WireError::Malformed("missing \"type\"".into()))),
    };
    const KNOWN: &[&str] = &[
        "auth",
        "set_presence",
        "accept",
        "reject",
        "end_call",
        "request_call",
        "ping",
    ];
    const MEDIA: &[&str] = &[
        "media_offer",
        "ice_candidate",
        "request_keyframe",
        "media_failed",
        "watch_offer",
        "watch_end",
    ];
    if MEDIA.contains(&kind.as_str()) {
        let msg = serde_json::from_value(value)
            .map(ClientMessage::Media)
            .map_err(|e| WireError::Invalid {
                kind,
                detail: e.to_string(),
            });
        return (id, msg);
    }
    if !KNOWN.contains(&kind.as_str()) {
        return (
            id,
            Err(WireError::UnknownType(kind.chars().take(64).collect())),
        );
    }
    let msg = serde_json::from_value(value).map_err(|e| WireError::Invalid {
        kind,
        detail: e.to_string(),
    });
    (id, msg)
}

/// A call as the agent sees it on a ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RingInfo {
    pub call_id: CallId,
    pub pool_id: PoolId,
    pub visitor_session_id: VisitorSessionId,
    /// The org's ring timeout when the call was requested; the console's countdown.
    pub ring_timeout_ms: u64,
}

/// The call an agent or visitor is part of, in `welcome` and `call_resumed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallSummary {
    pub call_id: CallId,
    pub state: CallState,
}

/// Why the hub moved an agent's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceReason {
    /// The agent chose it.
    Chosen,
    /// A ring went unanswered.
    NoAnswer,
    /// The org's payment failed.
    PaymentFailed,
    /// The org's subscription is paused or cancelled.
    OrgBlocked,
    /// The connection dropped.
    Disconnected,
    /// A call started or ended.
    Call,
}

/// Everything the server sends. Answers carry `re`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection.
    Hello { protocol: u32, heartbeat_ms: u64 },
    /// Answer to `auth`: who you are and where you stand.
    Welcome {
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<RequestId>,
        role: WelcomeRole,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_id: Option<AgentId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        presence: Option<Presence>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<VisitorSessionId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        visitor_token: Option<String>,
        org_status: OrgStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        call: Option<CallSummary>,
    },
    /// An agent's presence changed (answer to `set_presence`, or moved by the hub).
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<RequestId>,
        presence: Presence,
        reason: PresenceReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Agent: a call is ringing for you.
    Ring(RingInfo),
    /// Agent: the ring stopped (answered elsewhere, cancelled, timed out, blocked).
    RingCancelled {
        call_id: CallId,
        reason: RingCancelReason,
    },
    /// Visitor: your request was taken.
    CallRequested {
        re: Option<RequestId>,
        call_id: CallId,
    },
    /// Visitor: an agent is being rung.
    Ringing { call_id: CallId },
    /// Visitor: nobody is free; you wait at `position` (1 is next).
    Queued { call_id: CallId, position: u32 },
    /// Visitor: nobody can take a call now.
    Unavailable {
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<RequestId>,
        reason: UnavailableReason,
        message: String,
    },
    /// Both: the call is connected.
    CallConnected {
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<RequestId>,
        call_id: CallId,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_name: Option<String>,
    },
    /// Both: the call ended.
    CallEnded {
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<RequestId>,
        call_id: CallId,
        reason: EndReason,
        message: String,
    },
    /// Agent: the visitor dropped; the call ends unless it returns within `remaining_ms`.
    VisitorReconnecting { call_id: CallId, remaining_ms: u64 },
    /// Agent: the visitor is back.
    VisitorReconnected { call_id: CallId },
    /// Visitor: the agent dropped; the call ends unless it returns within `remaining_ms`.
    AgentReconnecting { call_id: CallId, remaining_ms: u64 },
    /// Visitor: the agent is back.
    AgentReconnected { call_id: CallId },
    /// Either side on rejoin: the call you are part of, as it stands.
    CallResumed { call_id: CallId, state: CallState },
    /// Agent: the org's entitlement changed.
    OrgStatus { status: OrgStatus, message: String },
    /// Answer to `reject`.
    Rejected {
        re: Option<RequestId>,
        call_id: CallId,
    },
    /// Answer to `ping`.
    Pong { re: Option<RequestId> },
    /// Both, after `call_connected`: how to build the peer connection.
    MediaConfig {
        call_id: CallId,
        ice_servers: Vec<IceServer>,
        ice_transport_policy: &'static str,
        recording: bool,
    },
    /// Answer to `media_offer`.
    MediaAnswer {
        re: Option<RequestId>,
        call_id: CallId,
        sdp: String,
    },
    /// Answer to `request_keyframe`.
    KeyframeRequested { re: Option<RequestId> },
    /// Answer to `watch_offer`.
    WatchAnswer {
        re: Option<RequestId>,
        call_id: CallId,
        watch_id: u32,
        sdp: String,
    },
    /// Answer to `watch_end`.
    WatchStopped {
        re: Option<RequestId>,
        call_id: CallId,
        watch_id: u32,
    },
    /// Admin: a watch is over because its call ended.
    WatchEnded { call_id: CallId, watch_id: u32 },
    /// Both: `side`'s media is reconnecting (ICE restart attempt `attempt`; 0 = the SFU noticed).
    MediaReconnecting {
        call_id: CallId,
        side: Side,
        attempt: u8,
    },
    /// Both: `side`'s media flows again.
    MediaReconnected { call_id: CallId, side: Side },
    /// Both: `side` gave up reconnecting its media.
    MediaFailed { call_id: CallId, side: Side },
    /// The SFU lost consent to this client: restart ICE.
    IceRestartRequest { call_id: CallId },
    /// Both: the call is being recorded (sent once both sides' media is connected).
    Recording { call_id: CallId, active: bool },
    /// Both, after `media_config`: whether the call has co-browse (the org's setting when the
    /// call connected) and where its co-browse socket is.
    CobrowseConfig {
        call_id: CallId,
        enabled: bool,
        url: String,
    },
    /// A request failed; the connection stays open.
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<RequestId>,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeRole {
    Agent,
    Visitor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RingCancelReason {
    NoAnswer,
    VisitorLeft,
    Disconnected,
    OrgBlocked,
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableReason {
    NoAgents,
    OrgBlocked,
    QueueFull,
    ServerRestarting,
}

/// Why the server closes a connection (sent as the close frame's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    HeartbeatTimeout,
    Replaced,
    AgentRemoved,
    FrameTooLarge,
    RateLimited,
    AuthTimeout,
    AuthFailed,
    ServerShutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::Replaced => "replaced",
            CloseReason::AgentRemoved => "agent_removed",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::ServerShutdown => "server_shutdown",
        }
    }

    /// WebSocket close code: 1008 policy, 1009 too big, 1001 going away, 4000+ application.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::FrameTooLarge => 1009,
            CloseReason::RateLimited | CloseReason::AuthFailed => 1008,
            CloseReason::ServerShutdown => 1001,
            CloseReason::HeartbeatTimeout => 4000,
            CloseReason::Replaced => 4001,
            CloseReason::AgentRemoved => 4002,
            CloseReason::AuthTimeout => 4003,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_id() {
        let (id, msg) = parse_client(r#"{"type":"set_presence","id":7,"presence":"available"}"#);
        assert_eq!(id, Some(7));
        assert_eq!(
            msg,
            Ok(ClientMessage::SetPresence {
                presence: Presence::Available
            })
        );
        let (id, msg) = parse_client(r#"{"type":"request_call"}"#);
        assert_eq!((id, msg), (None, Ok(ClientMessage::RequestCall {})));
    }

    #[test]
    fn bad_frames_get_typed_errors_and_keep_their_id() {
        assert_eq!(parse_client("nope").1.unwrap_err().code(), "malformed");
        assert_eq!(parse_client("[1]").1.unwrap_err().code(), "malformed");
        let (id, r) = parse_client(r#"{"type":"fly","id":3}"#);
        assert_eq!((id, r.unwrap_err().code()), (Some(3), "unknown_type"));
        let (id, r) = parse_client(r#"{"type":"accept","id":4,"call_id":"x"}"#);
        assert_eq!((id, r.unwrap_err().code()), (Some(4), "invalid_message"));
        let (_, r) = parse_client(r#"{"type":"ping","extra":1}"#);
        assert_eq!(r.unwrap_err().code(), "invalid_message");
        let (_, r) = parse_client(r#"{"type":"ping","id":-1}"#);
        assert_eq!(r.unwrap_err().code(), "invalid_message");
        let big = format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(parse_client(&big).1.unwrap_err(), WireError::TooLarge);
    }

    #[test]
    fn server_messages_are_tagged_snake_case() {
        let m = ServerMessage::Queued {
            call_id: CallId(Default::default()),
            position: 2,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "queued");
        assert_eq!(v["position"], 2);
    }
}
