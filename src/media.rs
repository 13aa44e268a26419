//! The SFU's UDP loops: N media workers (FRONTDESK_MEDIA_WORKERS), each a thread that owns one
//! UDP socket and one [`Sfu`] core, tells it the time and hands it datagrams in batches
//! (`recvmmsg`/`sendmmsg`, [`batch`]). A call lives on one worker, the least loaded when the
//! call first needs one ([`placement`]), so every peer of a call shares a core and forwarding
//! takes no lock and no channel hop. Signaling
//! connections reach a call's worker over that worker's bounded channel ([`MediaHandle`]) and
//! hear about their call's media over a channel of their own ([`Notice`]).
//!
//! A peer is one participant (visitor or agent) of one call. It lives from its first
//! `media_offer` until the call ends, the same side offers afresh (a reloaded page), its
//! browser closes the connection, or its media has been down for [`DOWN_LIMIT`].

use crate::config::{MediaConfig, Secret};
use frontdesk_domain::{CallId, OrgId};
use frontdesk_sfu::{
    PeerId, Protocol, RoomId, Sfu, SfuConfig, SfuError, SfuEvent, SfuStats, Transmit,
};
use frontdesk_signaling::wire::{IceServer, Side};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

// Public only so that tests/load_tool.rs can send with the server's own batches.
#[doc(hidden)]
pub mod batch;
mod placement;
use placement::Placement;

/// A peer whose media stayed down this long is removed.
pub const DOWN_LIMIT: Duration = Duration::from_secs(90);
/// Commands the loop may have queued before callers are told it is busy.
const QUEUE: usize = 1024;

/// What a signaling connection hears about its call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Reconnecting {
        side: Side,
        attempt: u8,
    },
    Reconnected {
        side: Side,
    },
    Failed {
        side: Side,
    },
    /// The SFU lost consent to this connection's browser: it should restart ICE.
    RestartRequest,
    /// Both sides' media is connected (for the first time in this call).
    BothConnected,
    /// A watch of this connection is over (its call ended); its peer is gone.
    WatchEnded {
        watch: u32,
    },
}

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Sfu(#[from] SfuError),
    #[error("the media server is not running or is overloaded")]
    Unavailable,
    #[error("the call already has {0} watchers, the most allowed")]
    TooManyWatchers(usize),
}

impl MediaError {
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::Sfu(e) => e.code(),
            MediaError::Unavailable => "media_unavailable",
            MediaError::TooManyWatchers(_) => "too_many_watchers",
        }
    }
}

/// Why a command did not reach a worker.
enum Unsent {
    /// The call is on no worker, and the command would not place it.
    NoWorker,
    /// The worker's queue is full or the worker is gone.
    Refused,
}

/// Where a connection hears its call's notices.
pub type NoticeTx = mpsc::Sender<(CallId, Notice)>;
pub type NoticeRx = mpsc::Receiver<(CallId, Notice)>;

type Reply<T> = oneshot::Sender<Result<T, MediaError>>;

enum Cmd {
    Offer {
        call: CallId,
        side: Side,
        sdp: String,
        restart: bool,
        attempt: u8,
        reply: Reply<String>,
    },
    Candidate {
        call: CallId,
        side: Side,
        candidate: String,
        reply: Reply<()>,
    },
    Keyframe {
        call: CallId,
        side: Side,
        mid: String,
        reply: Reply<()>,
    },
    Failed {
        call: CallId,
        side: Side,
    },
    /// A connection entered the call: it hears the call's notices from now on. Its org is
    /// the call's, which watchers must share.
    Attach {
        call: CallId,
        org: OrgId,
        side: Side,
        token: u64,
        notices: NoticeTx,
    },
    /// A connection of `org` (a supervisor) watches the call: a receive-only peer of its own,
    /// named by the connection's `token` and its `watch` number. An offer for an existing
    /// watch renegotiates it.
    Watch {
        call: CallId,
        org: OrgId,
        token: u64,
        watch: u32,
        sdp: String,
        notices: NoticeTx,
        reply: Reply<String>,
    },
    /// The watch is over (the supervisor stopped it or its connection closed).
    Unwatch {
        call: CallId,
        token: u64,
        watch: u32,
    },
    /// The connection closed: it stops hearing notices (the peer stays: the page may be back).
    Detach {
        call: CallId,
        side: Side,
        token: u64,
    },
    /// The call ended: its peers go.
    CallOver {
        call: CallId,
    },
}

impl Cmd {
    fn call(&self) -> CallId {
        match *self {
            Cmd::Offer { call, .. }
            | Cmd::Candidate { call, .. }
            | Cmd::Keyframe { call, .. }
            | Cmd::Failed { call, .. }
            | Cmd::Attach { call, .. }
            | Cmd::Watch { call, .. }
            | Cmd::Unwatch { call, .. }
            | Cmd::Detach { call, .. }
            | Cmd::CallOver { call } => call,
        }
    }
}

/// Counters for `/metrics`, summed over the media workers: each adds what changed in its own
/// core since it last published (about once a second).
#[derive(Debug, Default)]
pub struct MediaMetrics {
    pub peers: AtomicU64,
    pub rooms: AtomicU64,
    pub packets_in: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub datagrams_unmatched: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Of `packets_forwarded`, those the core sealed itself (the rest str0m sealed).
    pub packets_sealed_by_core: AtomicU64,
    /// Packets resent on receivers' NACKs from what the core sealed.
    pub packets_resent: AtomicU64,
    /// Datagrams the socket refused to send (a real error, not a full buffer); dropped.
    pub send_errors: AtomicU64,
    /// Datagrams sent as segments of UDP GSO sends (runs to one destination sent as one).
    pub datagrams_coalesced: AtomicU64,
    /// How long what a received datagram caused waited in the server (see [`ForwardDelay`]).
    pub forward_delay: ForwardDelay,
    /// Workers' loop turns that took longer than [`SLOW_TURN`] (see [`SlowTurns`]).
    pub slow_turns: SlowTurns,
}

/// A worker's loop turn (from its wake-up to its next wait) longer than this is counted in
/// [`SlowTurns`]: at a millisecond, every datagram that came meanwhile has waited longer than
/// the forwarding path is meant to take.
pub const SLOW_TURN: Duration = Duration::from_millis(1);

/// Loop turns of the media workers that took longer than [`SLOW_TURN`]: how many, the wall
/// time they took, and the datagrams they received and sent. Set against the worker's usual
/// cost per datagram, they tell a turn that had that much work from one whose thread lost the
/// CPU meanwhile (to an interrupt, another task, or on a VM to the host), which is where the
/// tail of the forwarding delay comes from when the work does not explain it. (A turn that
/// starts a call's media, an offer or a DTLS handshake, does more than its datagrams show.)
#[derive(Debug, Default)]
pub struct SlowTurns {
    pub turns: AtomicU64,
    pub ns: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

/// A worker's [`SlowTurns`] since it last published them, and the turn under way.
#[derive(Debug, Default)]
struct TurnCounts {
    /// Slow turns not yet published: how many, their nanoseconds, datagrams in and out.
    slow: [u64; 4],
    /// The turn under way: datagrams received and sent so far.
    now_received: u64,
    now_sent: u64,
}

impl TurnCounts {
    /// Ends a turn that took `took`.
    fn end(&mut self, took: Duration) {
        if took > SLOW_TURN {
            let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            for (a, n) in self
                .slow
                .iter_mut()
                .zip([1, ns, self.now_received, self.now_sent])
            {
                *a = a.saturating_add(n);
            }
        }
        self.now_received = 0;
        self.now_sent = 0;
    }

    /// Adds the slow turns counted since the last publish to `to` (the turn under way stays).
    fn publish(&mut self, to: &SlowTurns) {
        let slow = std::mem::take(&mut self.slow);
        if slow[0] > 0 {
            for (a, n) in [&to.turns, &to.ns, &to.received, &to.sent]
                .into_iter()
                .zip(slow)
            {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// Upper bounds, in microseconds, of the [`ForwardDelay`] histogram's buckets (a last one
/// counts everything above): fine below a millisecond, where the SFU's own work lies.
pub const DELAY_BOUNDS_US: [u64; 14] = [
    50, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_500, 2_000, 5_000, 10_000, 50_000,
];

/// The server's own share of a packet's trip: from the kernel receiving a datagram on a media
/// socket (its `SO_TIMESTAMPNS` stamp) to the worker handing each datagram that it caused (a
/// forwarded copy, a NACK answered) back to the kernel, one count per datagram sent. An upper
/// bound: each datagram a receive batch caused is timed from the batch's earliest arrival to
/// the return of the `sendmmsg` that carried it. It holds
/// the wait for the worker to wake or finish what it was doing, the core's work, and the
/// sends before it in the same batch (on loopback a send also delivers to the receiving
/// socket). A load tool's end-to-end figure adds both kernels' paths and its own timing.
/// Both ends are read on the wall clock, so a clock step during a measurement misfiles it.
#[derive(Debug, Default)]
pub struct ForwardDelay {
    /// Not cumulative: bucket `i` counts delays above bound `i − 1` up to bound `i`.
    pub buckets: [AtomicU64; DELAY_BOUNDS_US.len() + 1],
    pub sum_ns: AtomicU64,
}

/// A worker's [`ForwardDelay`] counts since it last published them.
#[derive(Debug, Default)]
struct DelayCounts {
    buckets: [u64; DELAY_BOUNDS_US.len() + 1],
    sum_ns: u64,
}

impl DelayCounts {
    /// `n` datagrams sent `delay` after the datagram that caused them arrived.
    fn record(&mut self, delay: Duration, n: usize) {
        if n == 0 {
            return;
        }
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        let i = DELAY_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i] += n as u64;
        let ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(n as u64));
    }

    fn publish(&mut self, to: &ForwardDelay) {
        for (a, n) in to.buckets.iter().zip(self.buckets) {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
        to.sum_ns.fetch_add(self.sum_ns, Ordering::Relaxed);
        *self = DelayCounts::default();
    }
}

/// The wall-clock time since the Unix epoch (what the kernel's receive stamps count in).
fn wall_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The way into the media workers.
#[derive(Clone)]
pub struct MediaHandle {
    /// One command queue per worker; a call's commands all go to the worker `placement`
    /// gives it.
    shards: Arc<[Shard]>,
    placement: Arc<Placement>,
    /// The address the first worker's socket is bound to.
    pub local_addr: SocketAddr,
    /// Every worker's socket address, by worker.
    pub local_addrs: Vec<SocketAddr>,
    /// The host candidates the first worker advertises (each worker advertises its own port).
    pub candidates: Vec<SocketAddr>,
    pub metrics: Arc<MediaMetrics>,
    turn_urls: Vec<String>,
    turn_secret: Option<Secret>,
    turn_ttl: Duration,
    next_token: Arc<AtomicU64>,
}

/// A worker's command queue and the waker that interrupts its `epoll_wait` when a command
/// is queued (the worker sleeps in the kernel, not in an async runtime).
struct Shard {
    /// Always `Some` until the shard drops (then taken, so the worker sees the queue close).
    tx: Option<mpsc::Sender<Cmd>>,
    waker: Arc<mio::Waker>,
}

impl Shard {
    /// Queues `cmd` and wakes the worker; false if the queue is full or the worker is gone.
    fn send(&self, cmd: Cmd) -> bool {
        if self.tx.as_ref().is_none_or(|tx| tx.try_send(cmd).is_err()) {
            return false;
        }
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "could not wake a media worker");
        }
        true
    }
}

impl Drop for Shard {
    /// The last handle is gone: close the queue, then wake the worker so that it sees the
    /// close and stops.
    fn drop(&mut self) {
        drop(self.tx.take());
        let _ = self.waker.wake();
    }
}

/// The watchers a call may have at once unless configured otherwise.
pub const DEFAULT_MAX_WATCHERS: usize = 8;

impl MediaHandle {
    /// Binds one socket per worker (the configured port + k, or an ephemeral port each) and
    /// starts each worker on a thread of its own.
    pub fn start(config: &MediaConfig) -> std::io::Result<MediaHandle> {
        let metrics = Arc::new(MediaMetrics::default());
        let workers = config.workers.max(1);
        let mut sockets = Vec::with_capacity(workers);
        for k in 0..workers {
            let mut addr = config.udp;
            if addr.port() != 0 {
                let port = u16::try_from(usize::from(addr.port()) + k).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "media worker port past 65535",
                    )
                })?;
                addr.set_port(port);
            }
            let std_socket = std::net::UdpSocket::bind(addr)?;
            std_socket.set_nonblocking(true)?;
            if !batch::enable_timestamps(&std_socket) && k == 0 {
                tracing::debug!("media socket does not stamp arrivals; forward delay unmeasured");
            }
            let (rcv, snd) = batch::set_buffers(&std_socket, batch::SOCKET_BUFFER);
            if k == 0 && rcv < batch::SOCKET_BUFFER {
                tracing::warn!(
                    granted = rcv,
                    wanted = batch::SOCKET_BUFFER,
                    "media socket receive buffer capped by net.core.rmem_max; keyframe bursts may be lost (docs/operations.md)"
                );
            }
            tracing::debug!(rcv, snd, "media socket buffers");
            sockets.push(std_socket);
        }
        let max_watchers = config.max_watchers;
        let placement = Arc::new(Placement::new(workers));
        let mut shards = Vec::with_capacity(workers);
        let mut local_addrs = Vec::with_capacity(workers);
        let mut first_candidates = Vec::new();
        for (k, std_socket) in sockets.into_iter().enumerate() {
            let local_addr = std_socket.local_addr()?;
            let candidates = advertised(config, local_addr);
            let (tx, rx) = mpsc::channel(QUEUE);
            let sfu = Sfu::new(
                Instant::now(),
                SfuConfig {
                    candidates: candidates.clone(),
                },
            );
            let loop_metrics = metrics.clone();
            let loop_placement = (k, placement.clone());
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
            let mut socket = mio::net::UdpSocket::from_std(std_socket);
            poll.registry()
                .register(&mut socket, SOCKET, mio::Interest::READABLE)?;
            std::thread::Builder::new()
                .name(format!("frontdesk-media-{k}"))
                .spawn(move || {
                    run(
                        sfu,
                        max_watchers,
                        socket,
                        poll,
                        rx,
                        loop_metrics,
                        loop_placement,
                    )
                })?;
            tracing::info!(
                worker = k,
                %local_addr,
                ?candidates,
                gso = batch::gso_supported(),
                "media (SFU) listening on UDP"
            );
            if k == 0 {
                first_candidates = candidates;
            }
            shards.push(Shard {
                tx: Some(tx),
                waker,
            });
            local_addrs.push(local_addr);
        }
        Ok(MediaHandle {
            shards: shards.into(),
            placement,
            local_addr: local_addrs[0],
            local_addrs,
            candidates: first_candidates,
            metrics,
            turn_urls: config.turn_urls.clone(),
            turn_secret: config.turn_secret.clone(),
            turn_ttl: config.turn_ttl,
            next_token: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Queues `cmd` on the worker that holds its call; `place` gives a call that is on no
    /// worker yet the least loaded one (the command creates state there), else such a command
    /// is not sent, as no worker has anything of the call.
    fn send(&self, cmd: Cmd, place: bool) -> Result<(), Unsent> {
        let call = cmd.call();
        let k = self.placement.route(call, place).ok_or(Unsent::NoWorker)?;
        if self.shards[k].send(cmd) {
            Ok(())
        } else {
            self.placement.handled(call);
            Err(Unsent::Refused)
        }
    }

    /// The socket address of the worker that holds `call`'s media, if one does.
    pub fn local_addr_of(&self, call: CallId) -> Option<SocketAddr> {
        Some(self.local_addrs[self.placement.worker_of(call)?])
    }

    /// Calls on each media worker.
    pub fn calls_per_worker(&self) -> Vec<usize> {
        self.placement.load()
    }

    /// A token that identifies one signaling connection's attachment.
    pub fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// ICE servers for one join: the TURN URLs with credentials valid for the configured TTL.
    pub fn ice_servers(&self, call: CallId, side: Side, now_unix: u64) -> Vec<IceServer> {
        let Some(secret) = &self.turn_secret else {
            return Vec::new();
        };
        if self.turn_urls.is_empty() {
            return Vec::new();
        }
        let side = match side {
            Side::Visitor => "v",
            Side::Agent => "a",
        };
        let c = frontdesk_sfu::turn::turn_credential(
            secret.expose(),
            &format!("{call}-{side}"),
            now_unix + self.turn_ttl.as_secs(),
        );
        vec![IceServer {
            urls: self.turn_urls.clone(),
            username: Some(c.username),
            credential: Some(c.credential),
        }]
    }

    /// Sends a command that answers and waits for the answer; `unplaced` is the answer when
    /// the call is on no worker and the command would not place it.
    async fn ask<T>(
        &self,
        place: bool,
        unplaced: impl FnOnce() -> MediaError,
        make: impl FnOnce(Reply<T>) -> Cmd,
    ) -> Result<T, MediaError> {
        let (reply, rx) = oneshot::channel();
        match self.send(make(reply), place) {
            Ok(()) => {}
            Err(Unsent::NoWorker) => return Err(unplaced()),
            Err(Unsent::Refused) => return Err(MediaError::Unavailable),
        }
        rx.await.map_err(|_| MediaError::Unavailable)?
    }

    pub async fn offer(
        &self,
        call: CallId,
        side: Side,
        sdp: String,
        restart: bool,
        attempt: u8,
    ) -> Result<String, MediaError> {
        self.ask(
            true,
            || MediaError::Unavailable,
            |reply| Cmd::Offer {
                call,
                side,
                sdp,
                restart,
                attempt,
                reply,
            },
        )
        .await
    }

    pub async fn candidate(
        &self,
        call: CallId,
        side: Side,
        candidate: String,
    ) -> Result<(), MediaError> {
        let unplaced =
            || SfuError::InvalidCandidate("no media_offer yet for this call".into()).into();
        self.ask(false, unplaced, |reply| Cmd::Candidate {
            call,
            side,
            candidate,
            reply,
        })
        .await
    }

    pub async fn keyframe(&self, call: CallId, side: Side, mid: String) -> Result<(), MediaError> {
        let unplaced = SfuError::UnknownTrack(mid.chars().take(16).collect()).into();
        self.ask(
            false,
            || unplaced,
            |reply| Cmd::Keyframe {
                call,
                side,
                mid,
                reply,
            },
        )
        .await
    }

    pub fn failed(&self, call: CallId, side: Side) {
        let _ = self.send(Cmd::Failed { call, side }, false);
    }

    pub fn attach(&self, call: CallId, org: OrgId, side: Side, token: u64, notices: NoticeTx) {
        let _ = self.send(
            Cmd::Attach {
                call,
                org,
                side,
                token,
                notices,
            },
            true,
        );
    }

    /// Starts or renegotiates watch `watch` of connection `token` on `call`, which must be a
    /// call of `org` whose participants are in it; returns the SDP answer.
    pub async fn watch(
        &self,
        call: CallId,
        org: OrgId,
        token: u64,
        watch: u32,
        sdp: String,
        notices: NoticeTx,
    ) -> Result<String, MediaError> {
        // A watch never places a call: it joins one whose participants are on a worker.
        self.ask(
            false,
            || SfuError::UnknownPeer.into(),
            |reply| Cmd::Watch {
                call,
                org,
                token,
                watch,
                sdp,
                notices,
                reply,
            },
        )
        .await
    }

    pub fn unwatch(&self, call: CallId, token: u64, watch: u32) {
        let _ = self.send(Cmd::Unwatch { call, token, watch }, false);
    }

    pub fn detach(&self, call: CallId, side: Side, token: u64) {
        let _ = self.send(Cmd::Detach { call, side, token }, false);
    }

    pub fn call_over(&self, call: CallId) {
        let _ = self.send(Cmd::CallOver { call }, false);
    }
}

/// The host candidates: the configured public IPs, else the bound IP, else (bound to every
/// interface) this host's primary address and loopback.
fn advertised(config: &MediaConfig, bound: SocketAddr) -> Vec<SocketAddr> {
    let port = bound.port();
    let mut ips: Vec<IpAddr> = if !config.public_ips.is_empty() {
        config.public_ips.clone()
    } else if !bound.ip().is_unspecified() {
        vec![bound.ip()]
    } else {
        let mut v = Vec::new();
        if let Some(ip) = primary_ip() {
            v.push(ip);
        }
        v.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        v
    };
    ips.dedup();
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The address of the interface that routes outward (no packet is sent).
fn primary_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[derive(Default)]
struct PeerState {
    call: Option<CallId>,
    side: Option<Side>,
    /// A watcher's connection token and watch number (`side` is then `None`).
    watch: Option<(u64, u32)>,
    connected_once: bool,
    /// Media is down (consent failed) or an ICE restart is under way, since then.
    down_since: Option<Instant>,
}

struct Loop {
    sfu: Sfu,
    next_peer: u64,
    by_side: HashMap<(CallId, Side), PeerId>,
    peers: HashMap<PeerId, PeerState>,
    listeners: HashMap<(CallId, Side), (u64, NoticeTx)>,
    /// Calls whose both sides have been connected (the recording badge was sent).
    both: std::collections::HashSet<CallId>,
    /// The org of each call a participant's connection entered.
    call_org: HashMap<CallId, OrgId>,
    /// Watchers: (call, connection token, watch number) → the peer and where its connection
    /// hears that the watch ended.
    watchers: HashMap<(CallId, u64, u32), (PeerId, NoticeTx)>,
    max_watchers: usize,
    /// This worker's number, and the table that says which calls are on it.
    worker: usize,
    placement: Arc<Placement>,
}

impl Loop {
    fn notify(&self, call: CallId, notice: Notice) {
        for side in [Side::Visitor, Side::Agent] {
            self.notify_side(call, side, notice);
        }
    }

    fn notify_side(&self, call: CallId, side: Side, notice: Notice) {
        if let Some((_, tx)) = self.listeners.get(&(call, side)) {
            let _ = tx.try_send((call, notice));
        }
    }

    fn remove(&mut self, peer: PeerId) {
        self.sfu.remove_peer(peer);
        self.forget(peer);
    }

    /// Drops what the loop knows of a peer the core no longer has.
    fn forget(&mut self, peer: PeerId) {
        if let Some(st) = self.peers.remove(&peer) {
            if let (Some(call), Some(side)) = (st.call, st.side) {
                if self.by_side.get(&(call, side)) == Some(&peer) {
                    self.by_side.remove(&(call, side));
                }
            }
            if let (Some(call), Some((token, watch))) = (st.call, st.watch) {
                if let Some((_, tx)) = self.watchers.remove(&(call, token, watch)) {
                    let _ = tx.try_send((call, Notice::WatchEnded { watch }));
                }
            }
        }
    }

    fn watch(
        &mut self,
        now: Instant,
        (call, org, token, watch): (CallId, OrgId, u64, u32),
        sdp: &str,
        notices: NoticeTx,
    ) -> Result<String, MediaError> {
        // Only a call whose participants are here, and only within its own org: another org's
        // call is indistinguishable from one that does not exist.
        if self.call_org.get(&call) != Some(&org) {
            return Err(SfuError::UnknownPeer.into());
        }
        let room = RoomId(call.0.as_u128());
        if let Some((peer, _)) = self.watchers.get(&(call, token, watch)) {
            return Ok(self.sfu.offer_watcher(now, room, *peer, sdp)?);
        }
        let count = self.watchers.keys().filter(|(c, _, _)| *c == call).count();
        if count >= self.max_watchers {
            return Err(MediaError::TooManyWatchers(self.max_watchers));
        }
        self.next_peer += 1;
        let peer = PeerId(self.next_peer);
        let answer = self.sfu.offer_watcher(now, room, peer, sdp)?;
        self.peers.insert(
            peer,
            PeerState {
                call: Some(call),
                watch: Some((token, watch)),
                ..PeerState::default()
            },
        );
        self.watchers.insert((call, token, watch), (peer, notices));
        Ok(answer)
    }

    fn command(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Offer {
                call,
                side,
                sdp,
                restart,
                attempt,
                reply,
            } => {
                let existing = self.by_side.get(&(call, side)).copied();
                // A fresh offer from a side that already has a peer is a new page: replace it.
                if let (Some(old), false) = (existing, restart) {
                    self.remove(old);
                }
                let peer = match (existing, restart) {
                    (Some(p), true) => p,
                    _ => {
                        self.next_peer += 1;
                        PeerId(self.next_peer)
                    }
                };
                let result = self.sfu.offer(now, RoomId(call.0.as_u128()), peer, &sdp);
                if result.is_ok() {
                    self.by_side.insert((call, side), peer);
                    let st = self.peers.entry(peer).or_default();
                    st.call = Some(call);
                    st.side = Some(side);
                    if restart {
                        st.down_since.get_or_insert(now);
                        tracing::info!(%call, ?side, attempt, "ICE restart");
                        self.notify(call, Notice::Reconnecting { side, attempt });
                    }
                }
                let _ = reply.send(result.map_err(MediaError::from));
            }
            Cmd::Candidate {
                call,
                side,
                candidate,
                reply,
            } => {
                let r = match self.by_side.get(&(call, side)) {
                    Some(&p) => self.sfu.add_candidate(p, &candidate),
                    None => Err(SfuError::InvalidCandidate(
                        "no media_offer yet for this call".into(),
                    )),
                };
                let _ = reply.send(r.map_err(MediaError::from));
            }
            Cmd::Keyframe {
                call,
                side,
                mid,
                reply,
            } => {
                let r = match self.by_side.get(&(call, side)) {
                    Some(&p) => self.sfu.request_keyframe(now, p, &mid),
                    None => Err(SfuError::UnknownTrack(mid.chars().take(16).collect())),
                };
                let _ = reply.send(r.map_err(MediaError::from));
            }
            Cmd::Failed { call, side } => {
                tracing::warn!(%call, ?side, "client gave up restarting ICE");
                self.notify(call, Notice::Failed { side });
            }
            Cmd::Attach {
                call,
                org,
                side,
                token,
                notices,
            } => {
                self.call_org.insert(call, org);
                self.listeners.insert((call, side), (token, notices));
            }
            Cmd::Watch {
                call,
                org,
                token,
                watch,
                sdp,
                notices,
                reply,
            } => {
                let r = self.watch(now, (call, org, token, watch), &sdp, notices);
                let _ = reply.send(r);
            }
            Cmd::Unwatch { call, token, watch } => {
                if let Some((peer, _)) = self.watchers.remove(&(call, token, watch)) {
                    self.remove(peer);
                }
            }
            Cmd::Detach { call, side, token } => {
                if self
                    .listeners
                    .get(&(call, side))
                    .is_some_and(|(t, _)| *t == token)
                {
                    self.listeners.remove(&(call, side));
                }
            }
            Cmd::CallOver { call } => {
                for side in [Side::Visitor, Side::Agent] {
                    self.listeners.remove(&(call, side));
                    if let Some(p) = self.by_side.get(&(call, side)).copied() {
                        self.remove(p);
                    }
                }
                let watching: Vec<PeerId> = self
                    .watchers
                    .iter()
                    .filter(|((c, _, _), _)| *c == call)
                    .map(|(_, (p, _))| *p)
                    .collect();
                for p in watching {
                    self.remove(p);
                }
                self.both.remove(&call);
                self.call_org.remove(&call);
            }
        }
    }

    fn event(&mut self, e: SfuEvent) {
        let now = Instant::now();
        match e {
            SfuEvent::Connected(p) => {
                let Some(st) = self.peers.get_mut(&p) else {
                    return;
                };
                let was_down = st.down_since.take().is_some();
                // A watcher's media is nobody else's business.
                let (Some(call), Some(side)) = (st.call, st.side) else {
                    return;
                };
                st.connected_once = true;
                if was_down {
                    tracing::info!(%call, ?side, "media reconnected");
                    self.notify(call, Notice::Reconnected { side });
                }
                let other = match side {
                    Side::Visitor => Side::Agent,
                    Side::Agent => Side::Visitor,
                };
                let other_up = self
                    .by_side
                    .get(&(call, other))
                    .and_then(|o| self.peers.get(o))
                    .is_some_and(|o| o.connected_once);
                if other_up && self.both.insert(call) {
                    self.notify(call, Notice::BothConnected);
                }
            }
            SfuEvent::Disconnected(p) => {
                let Some(st) = self.peers.get_mut(&p) else {
                    return;
                };
                st.down_since.get_or_insert(now);
                let (Some(call), Some(side)) = (st.call, st.side) else {
                    return;
                };
                tracing::info!(%call, ?side, "media consent failed; asking for an ICE restart");
                self.notify(call, Notice::Reconnecting { side, attempt: 0 });
                self.notify_side(call, side, Notice::RestartRequest);
            }
            // The core already dropped it.
            SfuEvent::Closed(p) => self.forget(p),
        }
    }

    /// Removes peers whose media stayed down too long.
    fn sweep(&mut self, now: Instant) {
        let stale: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, st)| {
                st.down_since
                    .is_some_and(|t| now.saturating_duration_since(t) > DOWN_LIMIT)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            tracing::info!(peer = p.0, "removing a peer whose media stayed down");
            self.remove(p);
        }
        // A call whose end never reached this loop (nobody was connected to hear it) is
        // forgotten once none of its peers or listeners is left.
        if self.call_org.len() > self.listeners.len() + self.peers.len() {
            let live: std::collections::HashSet<CallId> = self
                .peers
                .values()
                .filter_map(|st| st.call)
                .chain(self.listeners.keys().map(|(c, _)| *c))
                .collect();
            self.call_org.retain(|c, _| live.contains(c));
        }
        // Calls this worker holds nothing of leave the placement table (unless a command for
        // one is on its way), so the next call may come here.
        let held: std::collections::HashSet<CallId> = self
            .call_org
            .keys()
            .copied()
            .chain(self.peers.values().filter_map(|st| st.call))
            .chain(self.listeners.keys().map(|(c, _)| *c))
            .collect();
        self.placement.release_unheld(self.worker, &held);
    }

    /// Adds what changed in this worker's core since `last` to the shared counters.
    fn publish(&self, m: &MediaMetrics, last: &mut SfuStats) {
        let now = self.sfu.stats();
        let SfuStats {
            peers,
            rooms,
            packets_in,
            packets_forwarded,
            bytes_forwarded,
            datagrams_unmatched,
            keyframe_requests,
            packets_sealed_by_core,
            packets_resent,
        } = now;
        // Gauges go up and down: adding the wrapped difference moves the sum either way.
        let add = |a: &AtomicU64, new: u64, old: u64| {
            if new != old {
                a.fetch_add(new.wrapping_sub(old), Ordering::Relaxed);
            }
        };
        add(&m.peers, peers as u64, last.peers as u64);
        add(&m.rooms, rooms as u64, last.rooms as u64);
        add(&m.packets_in, packets_in, last.packets_in);
        add(
            &m.packets_forwarded,
            packets_forwarded,
            last.packets_forwarded,
        );
        add(&m.bytes_forwarded, bytes_forwarded, last.bytes_forwarded);
        add(
            &m.datagrams_unmatched,
            datagrams_unmatched,
            last.datagrams_unmatched,
        );
        add(
            &m.keyframe_requests,
            keyframe_requests,
            last.keyframe_requests,
        );
        add(
            &m.packets_sealed_by_core,
            packets_sealed_by_core,
            last.packets_sealed_by_core,
        );
        add(&m.packets_resent, packets_resent, last.packets_resent);
        *last = now;
    }
}

/// Receive batches handled per wake-up before commands and timers get their turn.
const RECV_ROUNDS: usize = 8;

/// Receivers driven (their forwarded packets sealed) between two sends. At a fan-out of 50,
/// sealing every copy before sending any made the first copy wait for the last (≈0.3 ms on
/// the bench machine); slices of 8 cost a `sendmmsg` per 8 copies, which measured no dearer
/// per packet than 16 or 64 and had the lower latency (docs/benchmarks.md).
const DRIVE_SLICE: usize = 8;

/// How late a worker may serve a peer's timer. Nothing on the forwarding path waits for a
/// timer (a forwarded packet leaves in the call that brought it in); what does — RTCP
/// reports, NACK and TWCC feedback, consent checks, DTLS retransmits — works in tens of
/// milliseconds to seconds. Waking this much after the earliest deadline lets every timer due
/// in the window run in one wake-up, and lets timers ride on the wake-ups that datagrams cause
/// anyway: with peers whose timers fall at unrelated instants, one wake-up per timer was as
/// many wake-ups as datagrams at 1×10 (docs/benchmarks.md).
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// Peers whose timers run between two looks at the socket (`Sfu::timeout_some`).
const TIMER_SLICE: usize = 8;

/// The poll token of a worker's socket.
const SOCKET: mio::Token = mio::Token(0);
/// The poll token of a worker's command waker.
const WAKE: mio::Token = mio::Token(1);

/// Fan-outs up to this many receivers are sealed and sent in one `sendmmsg`; larger ones in
/// slices of [`DRIVE_SLICE`]. At 1×10, two sends per packet cost a second syscall and, more
/// often than not, a second wake-up of the receiving side (docs/benchmarks.md).
const ONE_SEND_FANOUT: usize = 16;

/// One media worker: its own socket, core and command queue; nothing shared with the other
/// workers but the metrics' atomics. It sleeps in `epoll_wait` (mio) until a datagram, a
/// command (the shard's waker) or its next timer, with no async runtime between the kernel
/// and the core: at a few hundred datagrams a second per call, the runtime's readiness
/// futures, task wake-ups and timer wheel were a measurable share of each wake-up.
fn run(
    sfu: Sfu,
    max_watchers: usize,
    socket: mio::net::UdpSocket,
    mut poll: mio::Poll,
    mut rx: mpsc::Receiver<Cmd>,
    metrics: Arc<MediaMetrics>,
    (worker, placement): (usize, Arc<Placement>),
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "media socket has no address");
            return;
        }
    };
    let mut lp = Loop {
        sfu,
        next_peer: 0,
        by_side: HashMap::new(),
        peers: HashMap::new(),
        listeners: HashMap::new(),
        both: Default::default(),
        call_org: HashMap::new(),
        watchers: HashMap::new(),
        max_watchers,
        worker,
        placement,
    };
    let mut events = mio::Events::with_capacity(4);
    let mut recv = batch::RecvBatch::new();
    let mut out = Outbox::default();
    let mut published = SfuStats::default();
    let mut delay = DelayCounts::default();
    let mut turns = TurnCounts::default();
    let mut last_sweep = Instant::now();
    // Datagrams may still be queued (the last round stopped at RECV_ROUNDS full batches):
    // the socket's edge-triggered readiness will not say so again, so look without waiting.
    let mut unread = false;
    loop {
        let start = Instant::now();
        let deadline = lp
            .sfu
            .next_deadline()
            .unwrap_or(start + Duration::from_secs(1))
            .min(start + Duration::from_secs(1));
        // Work that is already due (pending input) runs at once; a future timer a little late.
        let wake = if deadline <= start || unread {
            start
        } else {
            deadline + TIMER_SLACK
        };
        if let Err(e) = poll.poll(&mut events, Some(wake.saturating_duration_since(start))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "media worker cannot poll; stopping");
                return;
            }
        }
        let woke = Instant::now();
        let readable = std::mem::take(&mut unread) || events.iter().any(|e| e.token() == SOCKET);
        // Commands: looked for on every turn (one atomic load when there are none), so that
        // none waits for the next wake-up should a waker write race with this loop.
        loop {
            match rx.try_recv() {
                Ok(cmd) => {
                    let call = cmd.call();
                    lp.command(cmd);
                    lp.placement.handled(call);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                // Every handle is gone: the server is shutting down.
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        if readable {
            // Until a receive finds the queue empty (or fails): after that no datagram is
            // stranded, as the next one raises a new edge.
            unread = true;
            for _ in 0..RECV_ROUNDS {
                match recv.recv(&socket) {
                    Ok(n) => turns.now_received += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::WouldBlock {
                            tracing::debug!(error = %e, "media recv failed");
                        }
                        unread = false;
                        break;
                    }
                }
                let now = Instant::now();
                let arrived = recv.earliest_stamp();
                lp.sfu.ingest(now, Protocol::Udp, local, recv.datagrams());
                // Small fan-outs in one send; large ones in slices, so that the first
                // receivers' copies leave while the core seals the rest.
                let slice = if lp.sfu.pending() <= ONE_SEND_FANOUT {
                    ONE_SEND_FANOUT
                } else {
                    DRIVE_SLICE
                };
                loop {
                    let more = lp.sfu.drive_pending(now, slice);
                    out.take_from(&mut lp.sfu);
                    let sent = out.pending.len();
                    turns.now_sent += sent as u64;
                    out.flush(&socket, &metrics, &mut lp.sfu);
                    if let Some(at) = arrived {
                        delay.record(wall_now().saturating_sub(at), sent);
                    }
                    if !more {
                        break;
                    }
                }
                // A short batch emptied the queue (any datagram after it raises a new edge).
                if recv.drained() {
                    unread = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        // A datagram or command already drove the peers it touched; the rest wait for their
        // deadline.
        if now >= deadline {
            // A slice; the rest are due at once, so the next turn polls without waiting and
            // serves datagrams that came meanwhile before the next slice.
            lp.sfu.timeout_some(now, TIMER_SLICE);
        }
        out.take_from(&mut lp.sfu);
        turns.now_sent += out.pending.len() as u64;
        out.flush(&socket, &metrics, &mut lp.sfu);
        while let Some(e) = lp.sfu.poll_event() {
            lp.event(e);
        }
        if now.saturating_duration_since(last_sweep) >= Duration::from_secs(1) {
            last_sweep = now;
            lp.sweep(now);
            lp.publish(&metrics, &mut published);
            delay.publish(&metrics.forward_delay);
            turns.publish(&metrics.slow_turns);
        }
        turns.end(woke.elapsed());
    }
}

/// Datagrams the core produced, on their way out in batches.
#[derive(Default)]
struct Outbox {
    pending: VecDeque<Transmit>,
    send: Option<batch::SendBatch>,
}

impl Outbox {
    fn take_from(&mut self, sfu: &mut Sfu) {
        while let Some(t) = sfu.poll_transmit() {
            self.pending.push_back(t);
        }
    }

    /// Sends everything pending. A full socket buffer waits for room (nothing is dropped for
    /// it); a datagram the kernel refuses is counted in `send_errors` and dropped.
    /// The buffers of what was sent go back to `sfu` for its next copies.
    fn flush(&mut self, socket: &mio::net::UdpSocket, metrics: &MediaMetrics, sfu: &mut Sfu) {
        let send = self.send.get_or_insert_with(batch::SendBatch::new);
        while !self.pending.is_empty() {
            let pending = self.pending.make_contiguous();
            let r = send.send(socket, pending, |t| (t.destination, &t.contents[..]));
            match r {
                Ok(n) => {
                    let joined = send.take_coalesced();
                    if joined > 0 {
                        metrics
                            .datagrams_coalesced
                            .fetch_add(joined, Ordering::Relaxed);
                    }
                    for t in self.pending.drain(..n.min(self.pending.len())) {
                        sfu.recycle(t.contents.into());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = batch::wait_writable(socket, Duration::from_millis(100)) {
                        tracing::debug!(error = %e, "media socket not writable");
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let t = self.pending.pop_front();
                    metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, to = ?t.map(|t| t.destination), "media send failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_delays_land_in_the_bucket_whose_bound_they_do_not_pass() {
        let us = Duration::from_micros;
        let mut d = DelayCounts::default();
        d.record(us(0), 1);
        d.record(us(50), 2); // on a bound: that bucket
        d.record(us(51), 1);
        d.record(us(999), 4);
        d.record(us(1_000), 1);
        d.record(Duration::from_secs(3), 1); // past the last bound
        d.record(us(10), 0); // nothing sent: nothing counted
        let h = ForwardDelay::default();
        d.publish(&h);
        let got: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut want = vec![0; DELAY_BOUNDS_US.len() + 1];
        want[0] = 3;
        want[1] = 1;
        want[8] = 5;
        want[DELAY_BOUNDS_US.len()] = 1;
        assert_eq!(got, want);
        let sum = 2 * 50 + 51 + 4 * 999 + 1_000 + 3_000_000;
        assert_eq!(h.sum_ns.load(Ordering::Relaxed), sum * 1_000);
        // Publishing emptied the worker's counts; a second publish adds to the first.
        assert_eq!(d.buckets, [0; DELAY_BOUNDS_US.len() + 1]);
        d.record(us(120), 1);
        d.publish(&h);
        assert_eq!(h.buckets[2].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 3);
    }

    #[test]
    fn only_turns_over_a_millisecond_are_counted_with_what_they_did() {
        let mut t = TurnCounts {
            now_received: 3,
            now_sent: 30,
            ..TurnCounts::default()
        };
        t.end(SLOW_TURN); // at the bound: not slow
        t.now_received = 8;
        t.now_sent = 80;
        t.end(Duration::from_micros(2_500));
        let slow = SlowTurns::default();
        // A publish in the middle of a turn keeps that turn's counts for its end.
        t.now_received = 1;
        t.now_sent = 10;
        t.publish(&slow);
        t.end(Duration::from_micros(1_001));
        let read = |s: &SlowTurns| {
            [&s.turns, &s.ns, &s.received, &s.sent].map(|a| a.load(Ordering::Relaxed))
        };
        assert_eq!(read(&slow), [1, 2_500_000, 8, 80]);
        t.publish(&slow);
        assert_eq!(read(&slow), [2, 3_501_000, 9, 90]);
        // Nothing counted since: publishing again adds nothing.
        t.publish(&slow);
        assert_eq!(read(&slow), [2, 3_501_000, 9, 90]);
    }
}
