//! Co-browse inside calls: one [`Relay`] per call and the call's `/v1/cobrowse` sockets.
//!
//! A participant of a connected call learns from its signaling connection (`cobrowse_config`)
//! whether the call has co-browse and a ticket for the call's co-browse socket. The decision is
//! taken once per call, by whichever participant's connection reaches [`Cobrowse::join`] first,
//! from the org's `cobrowse_enabled` at that moment; a later settings change applies to the next
//! call. The ticket is the only credential the socket takes: it was handed out on an
//! authenticated signaling connection to a member of that call, names the call and the side,
//! and dies with the call.
//!
//! The visitor's socket feeds the relay (snapshots up to 5 MiB, change batches up to 256 KiB;
//! anything larger gets a typed error and the call goes on). Every frame the relay returns is
//! serialized once and fanned out to the call's viewers (the agent's console; at most
//! [`MAX_VIEWERS`]). The relay work runs on the blocking pool for large inputs, under the call's
//! relay lock, so frames leave in `seq` order and a 5 MiB snapshot never stalls the runtime.
//!
//! Nothing here logs content: only ids, sizes, counts and error codes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use frontdesk_cobrowse::{AgentFrame, Policy, Relay};
use frontdesk_domain::{CallId, OrgId};
use frontdesk_signaling::wire::{ServerMessage, Side};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::http::AppState;

/// Largest WebSocket message the co-browse socket reads. Over the relay's own limits (5 MiB
/// snapshot, 256 KiB batch) so that those get their typed error; past this the socket closes
/// (1009).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Agent viewers per call.
pub const MAX_VIEWERS: usize = 4;
/// Frames queued for a viewer before it counts as too slow (it is closed and resyncs).
const VIEWER_QUEUE: usize = 256;
/// Messages queued for the visitor (requests, errors, counts: all small).
const VISITOR_QUEUE: usize = 32;
/// Inputs at or under this size are sanitized inline; larger ones on the blocking pool.
const INLINE_BYTES: usize = 64 * 1024;
/// A call whose participants all left their signaling connections is forgotten after this,
/// unless one comes back (a reconnect keeps the relay, and with it every sticky mask).
const ORPHAN_GRACE: Duration = Duration::from_secs(120);
/// At most one `desync` snapshot request per this interval.
const DESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Visitor message rate: a bucket of this many, refilled per second.
const RATE_BURST: f64 = 40.0;
const RATE_PER_S: f64 = 20.0;
/// Snapshots: a bucket of 4, one more every 2 s (a snapshot costs up to ~200 ms of CPU).
const SNAPSHOT_BURST: f64 = 4.0;
const SNAPSHOT_PER_S: f64 = 0.5;
/// Viewer `resync` requests: a bucket of 5, one per second.
const RESYNC_BURST: f64 = 5.0;
const RESYNC_PER_S: f64 = 1.0;
/// Ping interval, and silence after which a socket is closed.
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENT_AFTER: Duration = Duration::from_secs(30);

/// Close codes of the co-browse socket.
const CLOSE_POLICY: u16 = 1008;
const CLOSE_REPLACED: (u16, &str) = (4001, "replaced");
const CLOSE_CALL_ENDED: (u16, &str) = (4010, "call_ended");
const CLOSE_TOO_SLOW: (u16, &str) = (4011, "too_slow");

/// Counters for `/metrics`: what was relayed, masked and dropped. Never content.
#[derive(Default)]
pub struct Metrics {
    pub snapshots: AtomicU64,
    pub change_batches: AtomicU64,
    pub refused: AtomicU64,
    pub frames_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub masked: AtomicU64,
    pub removed: AtomicU64,
    pub dropped_changes: AtomicU64,
    pub desync_requests: AtomicU64,
    pub viewers_too_slow: AtomicU64,
    pub sockets_refused: AtomicU64,
}

/// Gauges for `/metrics`.
pub struct Gauges {
    pub sessions: usize,
    pub visitors: usize,
    pub viewers: usize,
}

/// Every call's co-browse state. One per server.
#[derive(Default)]
pub struct Cobrowse {
    sessions: Mutex<Sessions>,
    pub metrics: Metrics,
}

#[derive(Default)]
struct Sessions {
    calls: HashMap<CallId, Session>,
    tickets: HashMap<String, (CallId, Side)>,
    next_socket: u64,
}

struct Session {
    org: OrgId,
    enabled: bool,
    /// Visitor's, agent's.
    tickets: [String; 2],
    relay: Arc<tokio::sync::Mutex<Relay>>,
    visitor: Option<Peer>,
    viewers: Vec<Peer>,
    /// Signaling connections in this call right now.
    attached: u32,
    orphaned_at: Option<Instant>,
    last_desync_request: Option<Instant>,
}

/// A socket's outbox. Dropping the sender closes the socket with `closing`'s reason.
struct Peer {
    id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    closing: Arc<OnceLock<(u16, &'static str)>>,
}

impl Peer {
    fn close(self, reason: (u16, &'static str)) {
        let _ = self.closing.set(reason);
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Visitor => 0,
        Side::Agent => 1,
    }
}

fn json(v: &serde_json::Value) -> Utf8Bytes {
    Utf8Bytes::from(v.to_string())
}

fn error_msg(code: &str, message: &str) -> Utf8Bytes {
    json(&serde_json::json!({"type": "error", "code": code, "message": message}))
}

impl Cobrowse {
    /// A participant's signaling connection entered connected call `call`: the call's session
    /// (made now with `enabled` if this is the first participant) and this side's
    /// `cobrowse_config`.
    pub fn join(&self, call: CallId, org: OrgId, side: Side, enabled: bool) -> ServerMessage {
        let now = Instant::now();
        let mut st = self.lock();
        st.sweep(now);
        let Sessions { calls, tickets, .. } = &mut *st;
        let session = calls.entry(call).or_insert_with(|| {
            let t = [crate::auth::random_token(24), crate::auth::random_token(24)];
            tickets.insert(t[0].clone(), (call, Side::Visitor));
            tickets.insert(t[1].clone(), (call, Side::Agent));
            Session {
                org,
                enabled,
                tickets: t,
                relay: Arc::new(tokio::sync::Mutex::new(Relay::new(Policy::default()))),
                visitor: None,
                viewers: Vec::new(),
                attached: 0,
                orphaned_at: None,
                last_desync_request: None,
            }
        });
        session.attached += 1;
        session.orphaned_at = None;
        ServerMessage::CobrowseConfig {
            call_id: call,
            enabled: session.enabled,
            url: format!("/v1/cobrowse?ticket={}", session.tickets[side_index(side)]),
        }
    }

    /// A participant's signaling connection went away while in `call` (it may come back).
    pub fn detach(&self, call: CallId) {
        let mut st = self.lock();
        if let Some(s) = st.calls.get_mut(&call) {
            s.attached = s.attached.saturating_sub(1);
            if s.attached == 0 {
                s.orphaned_at = Some(Instant::now());
            }
        }
    }

    /// The call ended: its sockets close (4010) and its relay and tickets are gone.
    pub fn end(&self, call: CallId) {
        let mut st = self.lock();
        st.remove(call);
    }

    pub fn gauges(&self) -> Gauges {
        let st = self.lock();
        Gauges {
            sessions: st.calls.len(),
            visitors: st.calls.values().filter(|s| s.visitor.is_some()).count(),
            viewers: st.calls.values().map(|s| s.viewers.len()).sum(),
        }
    }

    /// Forgets calls orphaned longer than the grace period (called on joins and by the
    /// server's periodic sweep).
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding this lock would be a bug in the few lines below that take it;
        // the map itself stays consistent, so go on with it.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sessions {
    fn remove(&mut self, call: CallId) {
        if let Some(s) = self.calls.remove(&call) {
            for t in &s.tickets {
                self.tickets.remove(t);
            }
            if let Some(v) = s.visitor {
                v.close(CLOSE_CALL_ENDED);
            }
            for v in s.viewers {
                v.close(CLOSE_CALL_ENDED);
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let stale: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, s)| {
                s.orphaned_at
                    .is_some_and(|t| now.duration_since(t) >= ORPHAN_GRACE)
            })
            .map(|(c, _)| *c)
            .collect();
        for c in stale {
            self.remove(c);
        }
    }

    /// Sends `msg` to the call's visitor, if connected (dropped if its queue is full: these are
    /// requests and counts, and a newer one follows).
    fn to_visitor(&self, call: CallId, msg: Utf8Bytes) {
        if let Some(v) = self.calls.get(&call).and_then(|s| s.visitor.as_ref()) {
            let _ = v.tx.try_send(msg);
        }
    }

    fn to_viewers(&self, call: CallId, msg: &Utf8Bytes) {
        if let Some(s) = self.calls.get(&call) {
            for v in &s.viewers {
                let _ = v.tx.try_send(msg.clone());
            }
        }
    }
}

/// `GET /v1/cobrowse?ticket=…`: upgrades to the call's co-browse socket.
pub async fn socket(
    ws: WebSocketUpgrade,
    RawQuery(query): RawQuery,
    State(s): State<AppState>,
) -> Response {
    let ticket = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "ticket")
            .map(|(_, v)| v.into_owned())
    });
    ws.read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * MAX_MESSAGE_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| connection(s, socket, ticket))
}

async fn close(socket: &mut WebSocket, (code, reason): (u16, &'static str)) {
    crate::signal::close_with(socket, code, reason).await;
}

async fn refuse(s: &AppState, socket: &mut WebSocket, code: &'static str, message: &str) {
    bump(&s.cobrowse.metrics.sockets_refused, 1);
    let _ = socket.send(Message::Text(error_msg(code, message))).await;
    close(socket, (CLOSE_POLICY, code)).await;
}

/// What a registered socket is.
struct Registered {
    call: CallId,
    side: Side,
    id: u64,
    rx: mpsc::Receiver<Utf8Bytes>,
    closing: Arc<OnceLock<(u16, &'static str)>>,
    relay: Arc<tokio::sync::Mutex<Relay>>,
}

/// Checks the ticket and registers the socket with its call.
fn register(cb: &Cobrowse, ticket: Option<&str>) -> Result<Registered, (&'static str, String)> {
    let mut st = cb.lock();
    let Some(&(call, side)) = ticket.and_then(|t| st.tickets.get(t)) else {
        return Err((
            "invalid_ticket",
            "unknown or expired co-browse ticket (tickets end with their call)".into(),
        ));
    };
    st.next_socket += 1;
    let id = st.next_socket;
    let Some(session) = st.calls.get_mut(&call) else {
        // Tickets are removed with their session; a miss here would be a bug, refused anyway.
        return Err((
            "invalid_ticket",
            "unknown or expired co-browse ticket".into(),
        ));
    };
    if !session.enabled {
        return Err((
            "cobrowse_disabled",
            "co-browse is off for this call (the org's setting when it connected)".into(),
        ));
    }
    let closing = Arc::new(OnceLock::new());
    let (tx, rx) = match side {
        Side::Visitor => mpsc::channel(VISITOR_QUEUE),
        Side::Agent => mpsc::channel(VIEWER_QUEUE),
    };
    let peer = Peer {
        id,
        tx,
        closing: closing.clone(),
    };
    match side {
        Side::Visitor => {
            if let Some(old) = session.visitor.replace(peer) {
                old.close(CLOSE_REPLACED);
            }
        }
        Side::Agent => {
            if session.viewers.len() >= MAX_VIEWERS {
                return Err((
                    "too_many_viewers",
                    format!("at most {MAX_VIEWERS} viewers per call"),
                ));
            }
            session.viewers.push(peer);
        }
    }
    let relay = session.relay.clone();
    let (viewers, visitor_here) = (session.viewers.len(), session.visitor.is_some());
    let org = session.org;
    tracing::debug!(%call, %org, ?side, socket = id, "co-browse socket joined");
    let count = json(&serde_json::json!({"type": "viewers", "count": viewers}));
    let presence = json(&serde_json::json!({"type": "visitor", "connected": visitor_here}));
    match side {
        Side::Visitor => {
            st.to_visitor(call, count);
            st.to_viewers(call, &presence);
        }
        Side::Agent => {
            st.to_visitor(call, count);
            if visitor_here {
                st.to_visitor(
                    call,
                    json(
                        &serde_json::json!({"type": "snapshot_request", "reason": "viewer_joined"}),
                    ),
                );
            }
            if let Some(v) = st.calls.get(&call).and_then(|s| s.viewers.last()) {
                let _ = v.tx.try_send(presence);
            }
        }
    }
    Ok(Registered {
        call,
        side,
        id,
        rx,
        closing,
        relay,
    })
}

/// The socket `id` left: unregister it and tell the others.
fn unregister(cb: &Cobrowse, call: CallId, side: Side, id: u64) {
    let mut st = cb.lock();
    let Some(session) = st.calls.get_mut(&call) else {
        return;
    };
    match side {
        Side::Visitor => {
            if session.visitor.as_ref().is_some_and(|v| v.id == id) {
                session.visitor = None;
                let gone = json(&serde_json::json!({"type": "visitor", "connected": false}));
                st.to_viewers(call, &gone);
            }
        }
        Side::Agent => {
            session.viewers.retain(|v| v.id != id);
            let n = session.viewers.len();
            st.to_visitor(
                call,
                json(&serde_json::json!({"type": "viewers", "count": n})),
            );
        }
    }
}

/// A token bucket (adapter-side rate limits; tokio's clock).
struct Bucket {
    level: f64,
    burst: f64,
    per_s: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(burst: f64, per_s: f64) -> Bucket {
        Bucket {
            level: burst,
            burst,
            per_s,
            at: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        self.level =
            (self.level + now.duration_since(self.at).as_secs_f64() * self.per_s).min(self.burst);
        self.at = now;
        if self.level >= 1.0 {
            self.level -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

async fn connection(s: AppState, mut socket: WebSocket, ticket: Option<String>) {
    let reg = match register(&s.cobrowse, ticket.as_deref()) {
        Ok(r) => r,
        Err((code, message)) => return refuse(&s, &mut socket, code, &message).await,
    };
    let Registered {
        call,
        side,
        id,
        mut rx,
        closing,
        relay,
    } = reg;
    let mut messages = Bucket::new(RATE_BURST, RATE_PER_S);
    let mut snapshots = Bucket::new(SNAPSHOT_BURST, SNAPSHOT_PER_S);
    let mut resyncs = Bucket::new(RESYNC_BURST, RESYNC_PER_S);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                heard = tokio::time::Instant::now();
                let reply = match frame {
                    Message::Text(t) => match side {
                        Side::Visitor => {
                            visitor_message(&s, call, &relay, t, &mut messages, &mut snapshots).await
                        }
                        Side::Agent => viewer_message(&s, call, &t, &mut resyncs),
                    },
                    Message::Binary(_) => Some(error_msg("binary_not_supported", "send JSON text frames")),
                    Message::Ping(_) | Message::Pong(_) => None,
                    Message::Close(_) => break,
                };
                if let Some(r) = reply {
                    if socket.send(Message::Text(r)).await.is_err() {
                        break;
                    }
                }
            }
            out = rx.recv() => match out {
                Some(t) => {
                    if socket.send(Message::Text(t)).await.is_err() {
                        break;
                    }
                }
                None => {
                    let reason = closing.get().copied().unwrap_or(CLOSE_TOO_SLOW);
                    close(&mut socket, reason).await;
                    break;
                }
            },
            _ = ping.tick() => {
                if heard.elapsed() > SILENT_AFTER {
                    break;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    unregister(&s.cobrowse, call, side, id);
    tracing::debug!(%call, ?side, socket = id, "co-browse socket left");
}

/// A viewer's message: only `resync`.
fn viewer_message(s: &AppState, call: CallId, t: &str, resyncs: &mut Bucket) -> Option<Utf8Bytes> {
    match serde_json::from_str::<Kind>(t).ok().and_then(|k| k.kind) {
        Some(k) if k == "resync" => {
            if !resyncs.take() {
                return Some(error_msg("rate_limited", "at most one resync per second"));
            }
            s.cobrowse.lock().to_visitor(
                call,
                json(&serde_json::json!({"type": "snapshot_request", "reason": "viewer_asked"})),
            );
            None
        }
        _ => Some(error_msg(
            "unknown_type",
            "a viewer may only send {\"type\":\"resync\"}",
        )),
    }
}

/// A visitor's message: a snapshot or a change batch through the relay, out to the viewers.
/// Returns what to answer the visitor (an error), if anything.
async fn visitor_message(
    s: &AppState,
    call: CallId,
    relay: &Arc<tokio::sync::Mutex<Relay>>,
    t: Utf8Bytes,
    messages: &mut Bucket,
    snapshots: &mut Bucket,
) -> Option<Utf8Bytes> {
    let cb = &s.cobrowse;
    bump(&cb.metrics.bytes_received, t.len() as u64);
    if !messages.take() {
        bump(&cb.metrics.refused, 1);
        return Some(error_msg(
            "rate_limited",
            "too many co-browse messages; batch changes (at most every 100 ms)",
        ));
    }
    // The widget writes `type` first; only other writers cost a second parse of the message
    // (the relay parses it anyway, and a snapshot can be 5 MiB).
    let kind = if t.starts_with(r#"{"type":"snapshot","#) {
        Some("snapshot".to_owned())
    } else if t.starts_with(r#"{"type":"changes","#) {
        Some("changes".to_owned())
    } else {
        match serde_json::from_str::<Kind>(&t) {
            Ok(k) => k.kind,
            Err(e) if e.is_syntax() || e.is_eof() => {
                bump(&cb.metrics.refused, 1);
                // The position only: serde's own message may quote the input.
                let at = format!("malformed JSON at line {}, column {}", e.line(), e.column());
                return Some(error_msg("malformed", &at));
            }
            Err(_) => None,
        }
    };
    let snapshot = match kind {
        Some(k) if k == "snapshot" => true,
        Some(k) if k == "changes" => false,
        _ => {
            bump(&cb.metrics.refused, 1);
            return Some(error_msg(
                "unknown_type",
                "send {\"type\":\"snapshot\",…} or {\"type\":\"changes\",…}",
            ));
        }
    };
    if snapshot && !snapshots.take() {
        bump(&cb.metrics.refused, 1);
        return Some(error_msg(
            "rate_limited",
            "too many snapshots; send changes between them",
        ));
    }
    let len = t.len();
    let guard = relay.clone().lock_owned().await;
    let s2 = s.clone();
    let work = move || {
        let mut guard = guard;
        let result = if snapshot {
            guard.snapshot(t.as_bytes())
        } else {
            guard.changes(t.as_bytes())
        };
        // Fan out while the relay is still held, so frames leave in `seq` order.
        let out = result.map(|frame| fan_out(&s2, call, &frame));
        drop(guard);
        out
    };
    let result = if snapshot || len > INLINE_BYTES {
        match tokio::task::spawn_blocking(work).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%call, error = %e, "co-browse relay task failed");
                return Some(error_msg("internal", "the relay failed on this message"));
            }
        }
    } else {
        work()
    };
    if snapshot {
        bump(&cb.metrics.snapshots, 1);
    } else {
        bump(&cb.metrics.change_batches, 1);
    }
    match result {
        Ok(desync) => {
            if desync {
                let mut st = cb.lock();
                let now = Instant::now();
                let due = st.calls.get_mut(&call).is_some_and(|sess| {
                    let due = sess
                        .last_desync_request
                        .is_none_or(|t| now.duration_since(t) >= DESYNC_INTERVAL);
                    if due {
                        sess.last_desync_request = Some(now);
                    }
                    due
                });
                if due {
                    bump(&cb.metrics.desync_requests, 1);
                    return Some(json(
                        &serde_json::json!({"type": "snapshot_request", "reason": "desync"}),
                    ));
                }
            }
            None
        }
        Err(e) => {
            bump(&cb.metrics.refused, 1);
            tracing::debug!(%call, code = e.code(), "co-browse input refused");
            Some(error_msg(e.code(), &e.to_string()))
        }
    }
}

/// Counts the frame, sends it to every viewer (a viewer whose queue is full is closed: it
/// reconnects and resyncs) and says whether the relay saw ids it does not know.
fn fan_out(s: &AppState, call: CallId, frame: &AgentFrame) -> bool {
    let cb = &s.cobrowse;
    let st = frame.stats();
    bump(
        &cb.metrics.masked,
        st.masked_elements + st.masked_texts + st.masked_attributes,
    );
    bump(
        &cb.metrics.removed,
        st.removed_elements + st.removed_attributes + st.removed_css,
    );
    bump(&cb.metrics.dropped_changes, st.dropped_changes);
    let desync = st.unknown_ids > 0;
    if frame.is_empty() {
        return desync;
    }
    let text = match serde_json::to_string(frame) {
        Ok(t) => Utf8Bytes::from(t),
        Err(e) => {
            tracing::error!(%call, error = %e, "co-browse frame did not serialize");
            return desync;
        }
    };
    let mut sessions = cb.lock();
    let Some(session) = sessions.calls.get_mut(&call) else {
        return desync;
    };
    let mut slow = Vec::new();
    let mut sent = 0u64;
    for (i, v) in session.viewers.iter().enumerate() {
        match v.tx.try_send(text.clone()) {
            Ok(()) => sent += 1,
            Err(mpsc::error::TrySendError::Full(_)) => slow.push(i),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
    for i in slow.into_iter().rev() {
        session.viewers.remove(i).close(CLOSE_TOO_SLOW);
        bump(&cb.metrics.viewers_too_slow, 1);
    }
    drop(sessions);
    bump(&cb.metrics.frames_sent, sent);
    bump(&cb.metrics.bytes_sent, sent * text.len() as u64);
    desync
}
