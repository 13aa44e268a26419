//! `/v1/signal`: the WebSocket adapter and the task that drives the hub.
//!
//! One task owns the [`Hub`]; connection tasks talk to it over a bounded channel and receive
//! what to send on a bounded outbox each. The hub task tells the hub the time, arms one sleep
//! for the hub's next deadline, serializes each outgoing message once, and hands records to a
//! persistence task so the database never slows the hub down. A connection whose outbox is full
//! (a client that stopped reading) is dropped rather than buffered without bound.

use crate::auth::AuthError;
use crate::http::AppState;
use crate::media::{MediaHandle, Notice};
use crate::model::NewVisitorSession;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use frontdesk_domain::{CallId, CallState, OrgId, Presence, Role};
use frontdesk_signaling::wire::{
    parse_client, CallSummary, ClientMessage, CloseReason, MediaMessage, RequestId, ServerMessage,
    Side, MAX_FRAME_BYTES,
};
use frontdesk_signaling::{ConnId, Hub, HubConfig, HubStats, Input, OrgFacts, Output, Record};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Messages a connection may queue before it counts as not reading.
const OUTBOX: usize = 256;
/// Time a new connection has to authenticate.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection rate limit: a bucket of this many messages, refilled at `RATE_PER_S`.
const RATE_BURST: f64 = 30.0;
const RATE_PER_S: f64 = 10.0;
/// Messages refused for rate before the connection is closed.
const RATE_STRIKES: u32 = 20;

pub enum Outgoing {
    Text(Utf8Bytes),
    Close(CloseReason),
    /// The connection's participant is now in this connected call (media may start).
    InCall(CallId),
    /// The call ended (its media goes).
    CallOver(CallId),
}

/// What a message tells the connection about its call, for the media side.
fn call_change(msg: &ServerMessage) -> Option<Outgoing> {
    match msg {
        ServerMessage::CallConnected { call_id, .. } => Some(Outgoing::InCall(*call_id)),
        ServerMessage::CallResumed { call_id, state } if *state == CallState::Connected => {
            Some(Outgoing::InCall(*call_id))
        }
        ServerMessage::Welcome {
            call: Some(CallSummary { call_id, state }),
            ..
        } if *state == CallState::Connected => Some(Outgoing::InCall(*call_id)),
        ServerMessage::CallEnded { call_id, .. } => Some(Outgoing::CallOver(*call_id)),
        _ => None,
    }
}

enum Cmd {
    Register {
        conn: ConnId,
        outbox: mpsc::Sender<Outgoing>,
    },
    Input(Input),
    Snapshot(oneshot::Sender<Snapshot>),
    Shutdown {
        drain: Duration,
        done: oneshot::Sender<()>,
    },
}

/// What `/metrics` shows of the hub.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: HubStats,
    pub connections: usize,
    pub open_calls: usize,
    pub presence: Vec<(Presence, usize)>,
    pub records_failed: u64,
}

/// The handle the rest of the server uses to reach the hub.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Cmd>,
    next_conn: std::sync::Arc<AtomicU64>,
    heartbeat_interval: Duration,
}

impl HubHandle {
    /// Starts the hub task and its persistence task.
    pub fn spawn(cfg: HubConfig, store: crate::store::Store) -> HubHandle {
        let (tx, rx) = mpsc::channel(8192);
        let heartbeat_interval = Duration::from_millis(cfg.heartbeat_interval_ms);
        tokio::spawn(run_hub(Hub::new(cfg), rx, store));
        HubHandle {
            tx,
            next_conn: std::sync::Arc::new(AtomicU64::new(1)),
            heartbeat_interval,
        }
    }

    pub async fn input(&self, input: Input) {
        // The hub task only stops at shutdown; an input sent after it is moot.
        let _ = self.tx.send(Cmd::Input(input)).await;
    }

    /// Tells the hub the org's entitlement and settings, fresh from the database: at login,
    /// `available` and call requests, after settings changes and after billing changes.
    pub async fn refresh_org(
        &self,
        store: &crate::store::Store,
        org: OrgId,
    ) -> Result<(), crate::store::StoreError> {
        let row = store.org(org).await?;
        self.input(Input::OrgUpdated {
            org,
            facts: facts(&row),
        })
        .await;
        Ok(())
    }

    pub async fn snapshot(&self) -> Snapshot {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Snapshot(tx)).await.is_err() {
            return Snapshot::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Refuses new calls, waits up to `drain` for live calls to end, then ends the rest and
    /// closes every connection.
    pub async fn shutdown(&self, drain: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown { drain, done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}

pub fn facts(org: &crate::store::OrgRow) -> OrgFacts {
    OrgFacts {
        status: org.status,
        ring_timeout_ms: u64::from(org.settings.ring_timeout_ms),
        queue_when_unavailable: org.settings.queue_when_unavailable,
    }
}

fn now() -> u64 {
    u64::try_from(crate::now_ms()).unwrap_or_default()
}

async fn run_hub(mut hub: Hub, mut rx: mpsc::Receiver<Cmd>, store: crate::store::Store) {
    let (rec_tx, rec_rx) = mpsc::unbounded_channel::<Record>();
    let failed = std::sync::Arc::new(AtomicU64::new(0));
    let persist = tokio::spawn(persist(store, rec_rx, failed.clone()));
    let mut outboxes: HashMap<ConnId, mpsc::Sender<Outgoing>> = HashMap::new();
    let mut stopping: Option<(tokio::time::Instant, oneshot::Sender<()>)> = None;
    loop {
        let wake = hub
            .next_deadline()
            .map(|d| tokio::time::Instant::now() + Duration::from_millis(d.saturating_sub(now())));
        let wake = match (&stopping, wake) {
            (Some((until, _)), Some(w)) => Some(w.min(*until)),
            (Some((until, _)), None) => Some(*until),
            (None, w) => w,
        };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Register { conn, outbox }) => {
                    outboxes.insert(conn, outbox);
                }
                Some(Cmd::Input(input)) => {
                    if let Input::Disconnected { conn } = &input {
                        outboxes.remove(conn);
                    }
                    hub.handle(now(), input);
                }
                Some(Cmd::Snapshot(reply)) => {
                    let _ = reply.send(Snapshot {
                        stats: hub.stats().clone(),
                        connections: hub.connections(),
                        open_calls: hub.open_calls(),
                        presence: hub.presence_counts(),
                        records_failed: failed.load(Ordering::Relaxed),
                    });
                }
                Some(Cmd::Shutdown { drain, done }) => {
                    tracing::info!(open_calls = hub.open_calls(), "draining: no new calls");
                    hub.handle(now(), Input::Drain);
                    stopping = Some((tokio::time::Instant::now() + drain, done));
                }
            },
            () = sleep_until(wake) => hub.handle(now(), Input::Tick),
        }
        // Deliver what the hub decided. A client that cannot keep up is disconnected.
        // Dropping one may tell others (the agent of a dropped visitor): deliver that too, now.
        loop {
            let dropped = deliver(&mut hub, &mut outboxes, &rec_tx);
            if dropped.is_empty() {
                break;
            }
            for conn in dropped {
                tracing::info!(conn, "closing a connection that stopped reading");
                hub.handle(now(), Input::Disconnected { conn });
            }
        }
        if let Some((until, _)) = &stopping {
            if hub.open_calls() == 0 || tokio::time::Instant::now() >= *until {
                hub.handle(now(), Input::Shutdown);
                deliver(&mut hub, &mut outboxes, &rec_tx);
                let (_, done) = stopping.take().expect("checked above");
                drop(rec_tx);
                let _ = persist.await;
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Carries out the hub's outputs: messages go to their connection's outbox (serialized once),
/// closes to the connection, records to the persistence task. Returns the connections whose
/// outbox was full: they stopped reading and are dropped.
fn deliver(
    hub: &mut Hub,
    outboxes: &mut HashMap<ConnId, mpsc::Sender<Outgoing>>,
    rec_tx: &mpsc::UnboundedSender<Record>,
) -> Vec<ConnId> {
    let mut dropped = Vec::new();
    while let Some(out) = hub.poll_output() {
        match out {
            Output::Send { conn, msg } => {
                if let Some(ob) = outboxes.get(&conn) {
                    let text = serde_json::to_string(&msg)
                        .expect("server messages are plain data and always serialize");
                    let sent = ob.try_send(Outgoing::Text(text.into())).is_ok()
                        && call_change(&msg).is_none_or(|c| ob.try_send(c).is_ok());
                    if !sent {
                        outboxes.remove(&conn);
                        dropped.push(conn);
                    }
                }
            }
            Output::Close { conn, reason } => {
                if let Some(ob) = outboxes.remove(&conn) {
                    let _ = ob.try_send(Outgoing::Close(reason));
                }
            }
            Output::Record(r) => {
                let _ = rec_tx.send(r);
            }
        }
    }
    dropped
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes the hub's records in order. A failed write is logged and counted, never retried in
/// a way that would reorder the history.
async fn persist(
    store: crate::store::Store,
    mut rx: mpsc::UnboundedReceiver<Record>,
    failed: std::sync::Arc<AtomicU64>,
) {
    while let Some(r) = rx.recv().await {
        if let Err(e) = store.apply_record(&r).await {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, record = ?r, "could not persist a hub record");
        }
    }
}

/// `GET /v1/signal`: upgrades to the signaling WebSocket.
pub async fn signal(ws: WebSocketUpgrade, State(s): State<AppState>) -> Response {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(2 * MAX_FRAME_BYTES)
        .max_frame_size(2 * MAX_FRAME_BYTES)
        .on_upgrade(move |socket| connection(s, socket))
}

fn text(msg: &ServerMessage) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .expect("server messages are plain data and always serialize")
            .into(),
    )
}

fn error(re: Option<RequestId>, code: &str, message: impl Into<String>) -> Message {
    text(&ServerMessage::Error {
        re,
        code: code.to_owned(),
        message: message.into(),
    })
}

/// Sends the close frame, then reads (and drops) what the client still sends until it answers
/// the close, for at most a second: dropping the socket with unread data would reset the TCP
/// connection and the client would never see the reason.
async fn close(socket: &mut WebSocket, reason: CloseReason) {
    close_with(socket, reason.code(), reason.as_str()).await;
}

/// [`close`] with any code and reason (the co-browse socket has its own).
pub(crate) async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if socket.send(frame).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Who a connection turned out to be.
struct Authed {
    input: Input,
    org: OrgId,
}

async fn connection(s: AppState, mut socket: WebSocket) {
    let conn = s.hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let hello = ServerMessage::Hello {
        protocol: frontdesk_signaling::PROTOCOL_VERSION,
        heartbeat_ms: u64::try_from(s.hub.heartbeat_interval.as_millis()).unwrap_or(5_000),
    };
    if socket.send(text(&hello)).await.is_err() {
        return;
    }
    let authed = match tokio::time::timeout(AUTH_TIMEOUT, authenticate(&s, conn, &mut socket)).await
    {
        Ok(Some(a)) => a,
        Ok(None) => return close(&mut socket, CloseReason::AuthFailed).await,
        Err(_) => return close(&mut socket, CloseReason::AuthTimeout).await,
    };
    let (otx, mut orx) = mpsc::channel(OUTBOX);
    if s.hub
        .tx
        .send(Cmd::Register { conn, outbox: otx })
        .await
        .is_err()
    {
        return close(&mut socket, CloseReason::ServerShutdown).await;
    }
    let (side, admin) = match authed.input {
        Input::AgentConnected { role, .. } => (Side::Agent, role == Role::Admin),
        _ => (Side::Visitor, false),
    };
    s.hub.input(authed.input).await;
    let mut media = MediaLink {
        handle: s.media.clone(),
        side,
        org: authed.org,
        token: s.media.token(),
        call: None,
        recording: false,
        notices: mpsc::channel(64),
        admin,
        watches: Vec::new(),
    };
    let mut ping = tokio::time::interval(s.hub.heartbeat_interval);
    ping.tick().await;
    let mut bucket = RATE_BURST;
    let mut last_refill = tokio::time::Instant::now();
    let mut strikes = 0u32;
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                match frame {
                    Message::Text(t) => {
                        if t.len() > MAX_FRAME_BYTES {
                            close(&mut socket, CloseReason::FrameTooLarge).await;
                            break;
                        }
                        let elapsed = last_refill.elapsed().as_secs_f64();
                        last_refill = tokio::time::Instant::now();
                        bucket = (bucket + elapsed * RATE_PER_S).min(RATE_BURST);
                        if bucket < 1.0 {
                            strikes += 1;
                            if strikes >= RATE_STRIKES {
                                close(&mut socket, CloseReason::RateLimited).await;
                                break;
                            }
                            let _ = socket.send(error(None, "rate_limited", "too many messages; slow down")).await;
                            continue;
                        }
                        bucket -= 1.0;
                        match parse_client(&t) {
                            (re, Ok(ClientMessage::Media(m))) => {
                                s.hub.input(Input::Heartbeat { conn }).await;
                                if let Some(reply) = media.message(re, m).await {
                                    if socket.send(text(&reply)).await.is_err() {
                                        break;
                                    }
                                }
                            }
                            (re, Ok(msg)) => {
                                // Entitlement comes from the database where access is granted.
                                let refresh = matches!(
                                    msg,
                                    ClientMessage::SetPresence { presence: Presence::Available }
                                        | ClientMessage::RequestCall {}
                                );
                                if refresh {
                                    if let Err(e) = s.hub.refresh_org(&s.store, authed.org).await {
                                        tracing::warn!(error = %e, "entitlement refresh failed");
                                    }
                                }
                                s.hub.input(Input::Message { conn, re, msg }).await;
                            }
                            (re, Err(e)) => {
                                s.hub.input(Input::Heartbeat { conn }).await;
                                let _ = socket.send(error(re, e.code(), e.to_string())).await;
                            }
                        }
                    }
                    Message::Binary(_) => {
                        let _ = socket.send(error(None, "binary_not_supported", "send JSON text frames")).await;
                    }
                    Message::Pong(_) | Message::Ping(_) => s.hub.input(Input::Heartbeat { conn }).await,
                    Message::Close(_) => break,
                }
            }
            out = orx.recv() => match out {
                Some(Outgoing::Text(t)) => {
                    if socket.send(Message::Text(t)).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Close(reason)) => {
                    close(&mut socket, reason).await;
                    break;
                }
                Some(Outgoing::InCall(call)) => {
                    let mut gone = false;
                    for cfg in media.enter(&s, call).await {
                        if socket.send(text(&cfg)).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    if gone {
                        break;
                    }
                }
                Some(Outgoing::CallOver(call)) => media.leave(&s, call),
                None => {
                    close(&mut socket, CloseReason::RateLimited).await;
                    break;
                }
            },
            Some((call, notice)) = media.notices.1.recv() => {
                if let Some(msg) = media.notice(call, notice) {
                    if socket.send(text(&msg)).await.is_err() {
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    media.detach(&s);
    s.hub.input(Input::Disconnected { conn }).await;
}

/// One connection's side of the media: which call it is in, and its notices from the SFU loop.
struct MediaLink {
    handle: MediaHandle,
    side: Side,
    org: OrgId,
    token: u64,
    call: Option<CallId>,
    /// Whether the org recorded calls when this call's media started.
    recording: bool,
    notices: (crate::media::NoticeTx, crate::media::NoticeRx),
    /// An admin of the org: may watch its calls.
    admin: bool,
    /// This connection's watches: (call, watch id).
    watches: Vec<(CallId, u32)>,
}

/// Most calls (or watches of one call) a connection may watch at once.
const MAX_WATCHES_PER_CONNECTION: usize = 256;

impl MediaLink {
    /// The participant is in a connected call: listen to its media and say how to connect
    /// (`media_config`, then `cobrowse_config`).
    async fn enter(&mut self, s: &AppState, call: CallId) -> Vec<ServerMessage> {
        if self.call == Some(call) {
            return Vec::new();
        }
        self.call = Some(call);
        self.handle.attach(
            call,
            self.org,
            self.side,
            self.token,
            self.notices.0.clone(),
        );
        let now_unix = u64::try_from(crate::now_ms() / 1000).unwrap_or_default();
        // One read of the org's settings decides both; unreadable → neither (fail closed).
        let (recording, cobrowse) = match s.store.org(self.org).await {
            Ok(org) => (
                org.settings.recording_enabled,
                org.settings.cobrowse_enabled,
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the org's call settings");
                (false, false)
            }
        };
        self.recording = recording;
        vec![
            ServerMessage::MediaConfig {
                call_id: call,
                ice_servers: self.handle.ice_servers(call, self.side, now_unix),
                ice_transport_policy: "all",
                recording,
            },
            s.cobrowse.join(call, self.org, self.side, cobrowse),
        ]
    }

    fn leave(&mut self, s: &AppState, call: CallId) {
        if self.call == Some(call) {
            self.call = None;
        }
        self.handle.call_over(call);
        s.cobrowse.end(call);
    }

    fn detach(&mut self, s: &AppState) {
        for (call, watch) in self.watches.drain(..) {
            self.handle.unwatch(call, self.token, watch);
        }
        if let Some(call) = self.call.take() {
            self.handle.detach(call, self.side, self.token);
            s.cobrowse.detach(call);
        }
    }

    /// Answers a media message; `None` when there is nothing to say.
    async fn message(&mut self, re: Option<RequestId>, m: MediaMessage) -> Option<ServerMessage> {
        let call_id = match &m {
            MediaMessage::MediaOffer { call_id, .. }
            | MediaMessage::IceCandidate { call_id, .. }
            | MediaMessage::RequestKeyframe { call_id, .. }
            | MediaMessage::MediaFailed { call_id } => *call_id,
            MediaMessage::WatchOffer { .. } | MediaMessage::WatchEnd { .. } => {
                return Some(self.watch_message(re, m).await)
            }
        };
        if self.call != Some(call_id) {
            return Some(ServerMessage::Error {
                re,
                code: "not_in_call".into(),
                message: "you are not in a connected call with that id".into(),
            });
        }
        let result = match m {
            MediaMessage::MediaOffer {
                sdp,
                restart,
                attempt,
                ..
            } => self
                .handle
                .offer(call_id, self.side, sdp, restart, attempt.min(3))
                .await
                .map(|sdp| Some(ServerMessage::MediaAnswer { re, call_id, sdp })),
            MediaMessage::IceCandidate { candidate, .. } => self
                .handle
                .candidate(call_id, self.side, candidate)
                .await
                .map(|()| None),
            MediaMessage::RequestKeyframe { mid, .. } => self
                .handle
                .keyframe(call_id, self.side, mid)
                .await
                .map(|()| Some(ServerMessage::KeyframeRequested { re })),
            MediaMessage::MediaFailed { .. } => {
                self.handle.failed(call_id, self.side);
                Ok(None)
            }
            MediaMessage::WatchOffer { .. } | MediaMessage::WatchEnd { .. } => Ok(None),
        };
        match result {
            Ok(reply) => reply,
            Err(e) => Some(ServerMessage::Error {
                re,
                code: e.code().into(),
                message: e.to_string(),
            }),
        }
    }

    /// `watch_offer` and `watch_end`: only an admin, only a call of the admin's org.
    async fn watch_message(&mut self, re: Option<RequestId>, m: MediaMessage) -> ServerMessage {
        let err = |code: &str, message: String| ServerMessage::Error {
            re,
            code: code.into(),
            message,
        };
        if !self.admin {
            return err(
                "forbidden",
                "only an admin of the org may watch calls".into(),
            );
        }
        match m {
            MediaMessage::WatchOffer {
                call_id,
                watch_id,
                sdp,
            } => {
                let known = self.watches.contains(&(call_id, watch_id));
                if !known && self.watches.len() >= MAX_WATCHES_PER_CONNECTION {
                    return err(
                        "too_many_watchers",
                        format!("at most {MAX_WATCHES_PER_CONNECTION} watches per connection"),
                    );
                }
                let r = self
                    .handle
                    .watch(
                        call_id,
                        self.org,
                        self.token,
                        watch_id,
                        sdp,
                        self.notices.0.clone(),
                    )
                    .await;
                match r {
                    Ok(sdp) => {
                        if !known {
                            self.watches.push((call_id, watch_id));
                        }
                        ServerMessage::WatchAnswer {
                            re,
                            call_id,
                            watch_id,
                            sdp,
                        }
                    }
                    Err(e) => err(e.code(), e.to_string()),
                }
            }
            MediaMessage::WatchEnd { call_id, watch_id } => {
                let Some(i) = self.watches.iter().position(|w| *w == (call_id, watch_id)) else {
                    return err("not_in_call", "no such watch on this connection".into());
                };
                self.watches.swap_remove(i);
                self.handle.unwatch(call_id, self.token, watch_id);
                ServerMessage::WatchStopped {
                    re,
                    call_id,
                    watch_id,
                }
            }
            _ => err("invalid_message", "not a watch message".into()),
        }
    }

    fn notice(&mut self, call: CallId, n: Notice) -> Option<ServerMessage> {
        if let Notice::WatchEnded { watch } = n {
            let i = self.watches.iter().position(|w| *w == (call, watch))?;
            self.watches.swap_remove(i);
            return Some(ServerMessage::WatchEnded {
                call_id: call,
                watch_id: watch,
            });
        }
        if self.call != Some(call) {
            return None;
        }
        Some(match n {
            Notice::Reconnecting { side, attempt } => ServerMessage::MediaReconnecting {
                call_id: call,
                side,
                attempt,
            },
            Notice::Reconnected { side } => ServerMessage::MediaReconnected {
                call_id: call,
                side,
            },
            Notice::Failed { side } => ServerMessage::MediaFailed {
                call_id: call,
                side,
            },
            Notice::RestartRequest => ServerMessage::IceRestartRequest { call_id: call },
            Notice::WatchEnded { .. } => return None,
            Notice::BothConnected => {
                if !self.recording {
                    return None;
                }
                ServerMessage::Recording {
                    call_id: call,
                    active: true,
                }
            }
        })
    }
}

/// Reads the `auth` message and checks its credential. On failure the client gets a typed error
/// (answering the request id) and `None`.
async fn authenticate(s: &AppState, conn: ConnId, socket: &mut WebSocket) -> Option<Authed> {
    loop {
        let frame = socket.recv().await?.ok()?;
        let t = match frame {
            Message::Text(t) => t,
            Message::Ping(_) | Message::Pong(_) => continue,
            _ => return None,
        };
        let (re, parsed) = parse_client(&t);
        let refuse = |code: &str, message: &str| error(re, code, message);
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                let _ = socket.send(refuse(e.code(), &e.to_string())).await;
                return None;
            }
        };
        let ClientMessage::Auth {
            agent_token,
            widget_key,
            page_url,
            visitor_token,
        } = msg
        else {
            let _ = socket
                .send(refuse("not_authenticated", "send auth first"))
                .await;
            return None;
        };
        let result = match (agent_token, widget_key, visitor_token) {
            (Some(token), None, None) => agent(s, conn, re, &token).await,
            (None, Some(key), None) => {
                let new = NewVisitorSession {
                    widget_key: key,
                    page_url: page_url.unwrap_or_default(),
                };
                first_visit(s, conn, re, &new).await
            }
            (None, None, Some(token)) => rejoin(s, conn, re, &token).await,
            _ => Err((
                "invalid_message",
                "auth takes exactly one of agent_token, widget_key (with page_url), visitor_token"
                    .to_owned(),
            )),
        };
        return match result {
            Ok(a) => Some(a),
            Err((code, message)) => {
                let _ = socket.send(refuse(code, &message)).await;
                None
            }
        };
    }
}

type AuthResult = Result<Authed, (&'static str, String)>;

fn auth_error(e: AuthError) -> (&'static str, String) {
    (e.code(), e.to_string())
}

fn api_error(e: crate::error::ApiError) -> (&'static str, String) {
    (e.code, e.message)
}

async fn agent(s: &AppState, conn: ConnId, re: Option<RequestId>, token: &str) -> AuthResult {
    let claims = s.jwt.verify(token).await.map_err(auth_error)?;
    let row = s
        .store
        .agent_by_user(claims.org_id, &claims.sub)
        .await
        .map_err(|e| api_error(e.into()))?
        .ok_or((
            "not_an_agent",
            "this user is not an agent of the organization named in the token".to_owned(),
        ))?;
    let org = s
        .store
        .org(row.org_id)
        .await
        .map_err(|e| api_error(e.into()))?;
    let (display_name, pools) = s
        .store
        .agent_for_hub(row.org_id, row.id)
        .await
        .map_err(|e| api_error(e.into()))?;
    let role = if claims.role == frontdesk_domain::Role::Admin
        && row.role == frontdesk_domain::Role::Admin
    {
        frontdesk_domain::Role::Admin
    } else {
        frontdesk_domain::Role::Agent
    };
    Ok(Authed {
        input: Input::AgentConnected {
            conn,
            re,
            org: row.org_id,
            agent: row.id,
            role,
            display_name,
            pools,
            facts: facts(&org),
        },
        org: row.org_id,
    })
}

async fn first_visit(
    s: &AppState,
    conn: ConnId,
    re: Option<RequestId>,
    new: &NewVisitorSession,
) -> AuthResult {
    let (view, org_id) = crate::http::start_visitor_session(s, new)
        .await
        .map_err(api_error)?;
    let org = s.store.org(org_id).await.map_err(|e| api_error(e.into()))?;
    Ok(Authed {
        input: Input::VisitorConnected {
            conn,
            re,
            org: org_id,
            session: view.session_id,
            pool: view.pool_id,
            visitor_token: Some(view.visitor_token),
            facts: facts(&org),
        },
        org: org_id,
    })
}

async fn rejoin(s: &AppState, conn: ConnId, re: Option<RequestId>, token: &str) -> AuthResult {
    let claims = s
        .visitor_tokens
        .verify(token, crate::now_ms())
        .map_err(auth_error)?;
    let (org_id, pool) = s
        .store
        .visitor_session(claims.sid, crate::now_ms())
        .await
        .map_err(|e| api_error(e.into()))?
        .filter(|(org, _)| *org == claims.org)
        .ok_or((
            "invalid_token",
            "the visitor session has expired".to_owned(),
        ))?;
    let org = s.store.org(org_id).await.map_err(|e| api_error(e.into()))?;
    Ok(Authed {
        input: Input::VisitorConnected {
            conn,
            re,
            org: org_id,
            session: claims.sid,
            pool,
            visitor_token: None,
            facts: facts(&org),
        },
        org: org_id,
    })
}
