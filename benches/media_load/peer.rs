//! One load peer: a str0m `Rtc` (ICE, DTLS-SRTP, RTP mode) on a UDP socket of its own, driven
//! by a task on the current-thread runtime of one of the tool's threads
//! (`media_load/threads.rs`). Publishers send paced VP8-shaped video and Opus-sized audio;
//! subscribers count what arrives, time it and check keyframes.
//!
//! Every media payload carries the sender's clock at write time (nanoseconds since the tool's
//! epoch, bytes 16..24 of video and 0..8 of audio) and the publisher's index, so a receiver knows
//! the forwarding latency and whose packet it is without any lookup. Both ends are this process,
//! so both read the same clock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::Interest;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Bytes of one video RTP payload (≈1,130-byte datagrams with the RTP header and SRTP tag).
pub const VIDEO_PAYLOAD: usize = 1_100;
/// Bytes of one Opus-sized audio payload (≈64 kbit/s at 50 packets/s, with headers).
pub const AUDIO_PAYLOAD: usize = 120;
/// Where the send time sits in a video payload (after the VP8 descriptor and frame header).
const VIDEO_STAMP_AT: usize = 16;
/// Latency histogram: 1 µs buckets up to this many µs; later arrivals share the last bucket.
pub const HIST_US: usize = 50_000;
/// Least time between two keyframes a publisher sends on request.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// How a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub fps: u32,
    /// Video packets in a delta frame; a keyframe has three times as many.
    pub packets_per_frame: u32,
    /// Opus packets per second (0: no audio).
    pub audio_pps: u32,
}

impl Rate {
    pub fn video_pps(&self) -> u32 {
        self.fps * self.packets_per_frame
    }
}

/// What the tool's threads share for a run: the window, the stop, the connected count and
/// the publishers numbered so far.
#[derive(Default)]
pub struct Shared {
    /// Packets whose send time falls in `[start, end)` (ns since the epoch) are counted;
    /// none while `end` is 0.
    window_start: AtomicU64,
    window_end: AtomicU64,
    stop: AtomicBool,
    connected: AtomicUsize,
    /// How many subscribers each publisher numbered so far has (the main thread numbers them
    /// as it sets calls up; another thread's totals learn of one when its first copy arrives).
    subscribers_of: Mutex<Vec<u64>>,
}

/// What every peer of one thread of the tool adds to (`Rc<RefCell>`); each other thread of
/// peers (`media_load/threads.rs`) keeps its own, merged in at the end of a run.
pub struct Totals {
    pub epoch: Instant,
    pub shared: Arc<Shared>,
    pub sent_video: Vec<u64>,
    pub sent_audio: Vec<u64>,
    /// Packets received per publisher (video, audio), and datagram bytes received.
    pub recv_video: Vec<u64>,
    pub recv_audio: Vec<u64>,
    pub recv_bytes: u64,
    /// How many subscribers each publisher has (for the expected count).
    pub subscribers_of: Vec<u64>,
    pub latency_us: Vec<u32>,
    /// Per packet of the window, over its copies: the first copy's latency and the spread
    /// from the first copy to the last (the server's fan-out), µs histograms.
    pub first_copy_us: Vec<u32>,
    pub spread_us: Vec<u32>,
    /// How late each packet in the window was written against the time it was meant to leave
    /// (its frame's start plus its share of the frame, or its audio slot; with the 1 ms tick,
    /// the first tick from then): the tool's own delay, which a late publisher pays back as a
    /// burst.
    pub late_us: Vec<u32>,
    /// Copies of a packet seen so far, by (publisher, send stamp): least and greatest
    /// latency (ns) and how many; removed when every subscriber has its copy (on this
    /// thread: with receivers on several, what each saw is joined at the end).
    copies: HashMap<(u32, u64), Copies>,
    /// On a receivers' thread (`media_load/threads.rs`): its own subscribers of each
    /// publisher, counted as each gets its first copy, at which a packet is whole *here* and
    /// moves from `copies` to `closed`, to be joined with the other threads' at the end.
    /// Without it every packet of the window would stay in `copies` (no thread sees them all).
    joins_later: bool,
    local_subscribers: Vec<u64>,
    closed: Vec<((u32, u64), Copies)>,
    pub keyframe_ok: usize,
    /// From a subscriber's connection to its first complete keyframe, µs.
    pub keyframe_wait_us: Vec<u64>,
    /// Keyframes publishers began in the window (each is a burst of three frames' packets,
    /// which is what a latency tail is made of).
    pub keyframes_sent: u64,
    /// When publishers wake.
    pub pacing: crate::pacer::Pacing,
}

impl Totals {
    /// Counts a packet written at `now` that was due at `due` (see `late_us`).
    fn record_late(&mut self, due: Instant, now: Instant) {
        let meant = crate::pacer::release(self.pacing, self.epoch, due);
        self.late_us[bucket(now.saturating_duration_since(meant).as_nanos() as u64)] += 1;
    }

    pub fn new(epoch: Instant) -> Rc<RefCell<Totals>> {
        Totals::with_shared(epoch, Arc::default(), crate::pacer::Pacing::Tick)
    }

    /// Totals for another thread of the same run.
    pub fn with_shared(
        epoch: Instant,
        shared: Arc<Shared>,
        pacing: crate::pacer::Pacing,
    ) -> Rc<RefCell<Totals>> {
        Rc::new(RefCell::new(Totals {
            epoch,
            shared,
            sent_video: Vec::new(),
            sent_audio: Vec::new(),
            recv_video: Vec::new(),
            recv_audio: Vec::new(),
            recv_bytes: 0,
            subscribers_of: Vec::new(),
            latency_us: vec![0; HIST_US + 1],
            first_copy_us: vec![0; HIST_US + 1],
            spread_us: vec![0; HIST_US + 1],
            late_us: vec![0; HIST_US + 1],
            copies: HashMap::new(),
            joins_later: false,
            local_subscribers: Vec::new(),
            closed: Vec::new(),
            keyframe_ok: 0,
            keyframe_wait_us: Vec::new(),
            keyframes_sent: 0,
            pacing,
        }))
    }

    /// Totals for a receivers' thread, whose packets are joined with the others' at the end
    /// (`joins_later`).
    pub fn for_receivers(
        epoch: Instant,
        shared: Arc<Shared>,
        pacing: crate::pacer::Pacing,
    ) -> Rc<RefCell<Totals>> {
        let t = Totals::with_shared(epoch, shared, pacing);
        t.borrow_mut().joins_later = true;
        t
    }

    /// Counts packets whose send time falls in `[start, end)` from now on.
    pub fn set_window(&self, start: u64, end: u64) {
        self.shared.window_start.store(start, Ordering::Relaxed);
        self.shared.window_end.store(end, Ordering::Release);
    }

    /// Tells every peer of every thread to stop.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Peers connected so far, in every thread.
    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Acquire)
    }

    fn count_connected(&self) {
        self.shared.connected.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds what another thread of the same run counted: what its publishers sent, how late,
    /// the keyframes they began, and what its receivers got. Publishers are numbered across
    /// threads, so index `i` is the same one everywhere. A packet whose copies arrived on
    /// several threads is complete only once their counts are joined here.
    pub fn merge(&mut self, other: Totals) {
        let n = other.sent_video.len().max(other.recv_video.len());
        if n > 0 {
            self.make_room(n - 1);
        }
        let add = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        add(&mut self.sent_video, &other.sent_video);
        add(&mut self.sent_audio, &other.sent_audio);
        add(&mut self.recv_video, &other.recv_video);
        add(&mut self.recv_audio, &other.recv_audio);
        self.recv_bytes += other.recv_bytes;
        for (mine, theirs) in [
            (&mut self.late_us, &other.late_us),
            (&mut self.latency_us, &other.latency_us),
            (&mut self.first_copy_us, &other.first_copy_us),
            (&mut self.spread_us, &other.spread_us),
        ] {
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
        self.keyframes_sent += other.keyframes_sent;
        self.keyframe_ok += other.keyframe_ok;
        self.keyframe_wait_us.extend(other.keyframe_wait_us);
        for ((from, stamp), c) in other.copies.into_iter().chain(other.closed) {
            self.copies_arrived(from as usize, stamp, c);
        }
    }

    /// Makes room for publisher `n`'s counts (another thread's totals learn of a publisher
    /// as it sends, or as its copies arrive).
    fn make_room(&mut self, n: usize) {
        if n >= self.sent_video.len() {
            self.sent_video.resize(n + 1, 0);
            self.sent_audio.resize(n + 1, 0);
        }
        if n >= self.recv_video.len() {
            self.recv_video.resize(n + 1, 0);
            self.recv_audio.resize(n + 1, 0);
            self.local_subscribers.resize(n + 1, 0);
        }
    }

    /// Whether publisher `from` is known here, learning of it from the run's shared list if
    /// this thread has not yet.
    fn knows(&mut self, from: usize) -> bool {
        if from < self.subscribers_of.len() {
            return true;
        }
        let all = lock(&self.shared.subscribers_of).clone();
        if from >= all.len() {
            return false;
        }
        self.make_room(all.len() - 1);
        self.subscribers_of = all;
        true
    }

    /// A new publisher that `subscribers` peers receive; returns its number.
    pub fn add_publisher(&mut self, subscribers: u64) -> usize {
        self.sent_video.push(0);
        self.sent_audio.push(0);
        self.recv_video.push(0);
        self.recv_audio.push(0);
        self.local_subscribers.push(0);
        self.subscribers_of.push(subscribers);
        lock(&self.shared.subscribers_of).push(subscribers);
        self.subscribers_of.len() - 1
    }

    fn in_window(&self, stamp: u64) -> bool {
        let end = self.shared.window_end.load(Ordering::Acquire);
        end != 0 && stamp >= self.shared.window_start.load(Ordering::Relaxed) && stamp < end
    }

    /// The `p` quantile of the latency histogram, in µs.
    pub fn latency_quantile(&self, p: f64) -> f64 {
        quantile(&self.latency_us, p)
    }

    /// One copy of packet (`from`, `stamp`) arrived `lat_ns` after it was sent.
    fn copy_arrived(&mut self, from: usize, stamp: u64, lat_ns: u64) {
        self.copies_arrived(
            from,
            stamp,
            Copies {
                first_ns: lat_ns,
                last_ns: lat_ns,
                n: 1,
            },
        );
    }

    /// Copies of packet (`from`, `stamp`) arrived: one here, or what another thread saw.
    fn copies_arrived(&mut self, from: usize, stamp: u64, c: Copies) {
        let all = if self.joins_later {
            self.local_subscribers.get(from).copied()
        } else {
            self.subscribers_of.get(from).copied()
        }
        .unwrap_or(u64::MAX);
        let e = self.copies.entry((from as u32, stamp)).or_insert(Copies {
            first_ns: u64::MAX,
            last_ns: 0,
            n: 0,
        });
        e.first_ns = e.first_ns.min(c.first_ns);
        e.last_ns = e.last_ns.max(c.last_ns);
        e.n += c.n;
        if e.n >= all {
            let done = *e;
            self.copies.remove(&(from as u32, stamp));
            if self.joins_later {
                self.closed.push(((from as u32, stamp), done));
            } else {
                self.first_copy_us[bucket(done.first_ns)] += 1;
                self.spread_us[bucket(done.last_ns - done.first_ns)] += 1;
            }
        }
    }

    /// Counts the packets some copy of which was lost: their first copy is known, their
    /// spread is not.
    pub fn finish_copies(&mut self) {
        for (_, c) in self.copies.drain() {
            self.first_copy_us[bucket(c.first_ns)] += 1;
        }
    }
}

/// What one thread saw of one packet's copies: the least and greatest latency, and how many.
#[derive(Debug, Clone, Copy)]
struct Copies {
    first_ns: u64,
    last_ns: u64,
    n: u64,
}

/// The list behind `m`, even if a thread panicked while holding it (a plain list of counts).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The 1 µs histogram bucket of a latency in ns (the last bucket holds everything longer).
fn bucket(ns: u64) -> usize {
    ((ns / 1_000) as usize).min(HIST_US)
}

/// The `p` quantile of a histogram of 1 µs buckets, in µs.
pub fn quantile(hist: &[u32], p: f64) -> f64 {
    let n: u64 = hist.iter().map(|&c| c as u64).sum();
    if n == 0 {
        return f64::NAN;
    }
    let want = ((n as f64 - 1.0) * p).round() as u64;
    let mut seen = 0u64;
    for (us, &c) in hist.iter().enumerate() {
        seen += c as u64;
        if seen > want {
            return us as f64;
        }
    }
    HIST_US as f64
}

/// A peer before it runs.
pub struct Peer {
    rtc: Rtc,
    socket: tokio::net::UdpSocket,
    addr: SocketAddr,
    mids: Vec<Mid>,
}

/// A negotiated peer on its way to another thread's runtime (its socket out of this one's).
pub struct Parts {
    rtc: Rtc,
    socket: std::net::UdpSocket,
    addr: SocketAddr,
    mids: Vec<Mid>,
}

impl Peer {
    /// Takes the peer out of this thread's runtime.
    pub fn into_parts(self) -> std::io::Result<Parts> {
        Ok(Parts {
            rtc: self.rtc,
            socket: self.socket.into_std()?,
            addr: self.addr,
            mids: self.mids,
        })
    }

    /// The peer again, in the calling thread's runtime.
    pub fn from_parts(p: Parts) -> std::io::Result<Peer> {
        Ok(Peer {
            rtc: p.rtc,
            socket: tokio::net::UdpSocket::from_std(p.socket)?,
            addr: p.addr,
            mids: p.mids,
        })
    }
}

/// What a peer does once connected.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Publisher number `n`, at `rate`.
    Publish {
        n: usize,
        rate: Rate,
    },
    Subscribe,
    /// A participant of a one-to-one call: publishes as `n` and receives the other one.
    Both {
        n: usize,
        rate: Rate,
    },
}

fn rtc(now: Instant) -> Rtc {
    Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(now)
}

/// The address peers bind to and offer as their host candidate: loopback, or with `--target`
/// the one this machine reaches the server from.
static BIND_IP: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

/// Whether the `--target` server runs on this machine (its address is one of this machine's).
static TARGET_IS_HERE: AtomicBool = AtomicBool::new(false);

pub fn target_is_here() -> bool {
    TARGET_IS_HERE.load(Ordering::Relaxed)
}

/// Binds every peer from now on to the address this machine reaches `host:port` from (IPv4 if
/// the name has one: `localhost` often gives `::1` first, and a server's media address is
/// more often IPv4).
pub fn bind_towards(target: &str) -> std::io::Result<std::net::IpAddr> {
    use std::net::ToSocketAddrs;
    let all: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    let to = all
        .iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
        })?;
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    // Connecting a UDP socket sends nothing: it asks the kernel for the route.
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(to)?;
    let ip = probe.local_addr()?.ip();
    // The route to an address of this machine leaves from that address (or from loopback).
    TARGET_IS_HERE.store(to.ip().is_loopback() || to.ip() == ip, Ordering::Relaxed);
    let _ = BIND_IP.set(ip);
    Ok(ip)
}

/// The address peers bind to (loopback unless `bind_towards` said otherwise).
pub fn bound_ip() -> std::net::IpAddr {
    *BIND_IP.get_or_init(|| std::net::Ipv4Addr::LOCALHOST.into())
}

impl Peer {
    async fn bind(now: Instant) -> Peer {
        let ip = bound_ip();
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .expect("a UDP socket to receive media on");
        let addr = socket.local_addr().expect("bound socket has an address");
        crate::rxstamp::enable(&socket);
        let mut rtc = rtc(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a host candidate"));
        Peer {
            rtc,
            socket,
            addr,
            mids: Vec::new(),
        }
    }

    /// A peer that offers one audio and one video m-line in `dir`; the offer carries its
    /// candidate.
    pub async fn offerer(now: Instant, dir: Direction) -> (Peer, String, SdpPendingOffer) {
        let mut p = Peer::bind(now).await;
        let mut api = p.rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = api.apply().expect("a change with two m-lines");
        p.mids = vec![audio, video];
        (p, offer.to_sdp_string(), pending)
    }

    pub fn accept_answer(&mut self, pending: SdpPendingOffer, sdp: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())
    }

    /// A peer that answers a server's offer (Janus offers to its subscribers).
    pub async fn answerer(now: Instant, offer: &str) -> Result<(Peer, String), String> {
        let mut p = Peer::bind(now).await;
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| e.to_string())?;
        let answer = p
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        let answer = answer.to_sdp_string();
        p.mids = answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=mid:"))
            .map(|m| Mid::from(m.trim()))
            .collect();
        Ok((p, answer))
    }

    /// Runs until `totals.stop`.
    pub async fn run(mut self, role: Role, totals: Rc<RefCell<Totals>>) {
        let epoch = totals.borrow().epoch;
        let mut st = State::new(&mut self.rtc, role, epoch, std::mem::take(&mut self.mids));
        let mut buf = crate::rxstamp::buffer();
        // A publisher paces on a timer of its own (`media_load/pacer.rs`).
        let pacing = totals.borrow().pacing;
        let timer = st
            .rate()
            .and_then(|_| crate::pacer::Timer::for_pacing(pacing, epoch));
        self.drain(&mut st, &totals, None);
        loop {
            if totals.borrow().stopped() {
                self.rtc.disconnect();
                return;
            }
            let wake = st
                .next_wake()
                .min(Instant::now() + Duration::from_millis(100));
            tokio::select! {
                r = self.socket.async_io(Interest::READABLE, || crate::rxstamp::recv(&self.socket, &mut buf)) => {
                    let Ok(r) = r else { continue };
                    self.take_all(&mut st, &totals, &buf, r);
                    // More that already arrived, without going back to the reactor.
                    while let Ok(r) = self.socket.try_io(Interest::READABLE, || crate::rxstamp::recv(&self.socket, &mut buf)) {
                        self.take_all(&mut st, &totals, &buf, r);
                    }
                }
                () = crate::pacer::sleep_until(timer.as_ref(), wake) => {
                    let now = Instant::now();
                    if now >= st.rtc_deadline {
                        let _ = self.rtc.handle_input(Input::Timeout(now));
                    }
                    if st.publish(&mut self.rtc, now, &totals) {
                        // str0m's pacer hands out what was just written only after it is told
                        // the time: tell it now, so the packet leaves with its send stamp.
                        let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                    }
                    self.drain(&mut st, &totals, None);
                }
            }
        }
    }

    /// Hands each datagram of one read (a GSO run is several) to the `Rtc`.
    fn take_all(
        &mut self,
        st: &mut State,
        totals: &Rc<RefCell<Totals>>,
        buf: &[u8],
        r: crate::rxstamp::Received,
    ) {
        for d in r.datagrams(buf) {
            self.take(st, totals, d, r.from, r.at);
        }
    }

    /// Hands one datagram, which reached the socket at `at`, to the `Rtc` and polls it.
    fn take(
        &mut self,
        st: &mut State,
        totals: &Rc<RefCell<Totals>>,
        datagram: &[u8],
        from: SocketAddr,
        at: Instant,
    ) {
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        // str0m is told the time it runs at (its clock must not go back); the arrival
        // stamp goes to the latency figures.
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.addr,
                contents,
            },
        );
        if self.rtc.handle_input(input).is_ok() {
            self.drain(st, totals, Some((at, datagram.len())));
        }
    }

    /// Polls the `Rtc` until it waits; `arrived` is the datagram just handed in (when, size).
    fn drain(
        &mut self,
        st: &mut State,
        totals: &Rc<RefCell<Totals>>,
        arrived: Option<(Instant, usize)>,
    ) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => {
                    st.rtc_deadline = t;
                    return;
                }
                Ok(Output::Event(e)) => st.event(&mut self.rtc, e, totals, arrived),
                Err(_) => return,
            }
        }
    }
}

/// A subscriber's view of the keyframes it is sent, order-independent: the first keyframe
/// whose every packet, first to marker, has arrived completes it.
#[derive(Debug, Default)]
struct Keyframe {
    done: bool,
    /// Recent video sequence numbers that arrived, and which of them carried the marker.
    seen: std::collections::BTreeSet<u64>,
    markers: std::collections::BTreeSet<u64>,
    /// The newest keyframe start seen.
    start: Option<u64>,
}

/// Sequence numbers remembered behind the newest (a keyframe is at most a few hundred).
const KEYFRAME_WINDOW: u64 = 4096;

impl Keyframe {
    /// One video packet; true when it completes the first keyframe.
    fn packet(&mut self, seq: u64, starts_key: bool, marker: bool) -> bool {
        if self.done {
            return false;
        }
        self.seen.insert(seq);
        if marker {
            self.markers.insert(seq);
        }
        if starts_key && self.start.is_none_or(|s| seq > s) {
            self.start = Some(seq);
        }
        if self.seen.len() as u64 > 2 * KEYFRAME_WINDOW {
            let newest = self.seen.last().copied().unwrap_or(seq);
            let floor = newest.saturating_sub(KEYFRAME_WINDOW);
            self.seen = self.seen.split_off(&floor);
            self.markers = self.markers.split_off(&floor);
        }
        let Some(start) = self.start else {
            return false;
        };
        let Some(&end) = self.markers.range(start..).next() else {
            return false;
        };
        if self.seen.range(start..=end).count() as u64 == end - start + 1 {
            self.done = true;
            self.seen.clear();
            self.markers.clear();
        }
        self.done
    }
}

struct State {
    role: Role,
    epoch: Instant,
    rtc_deadline: Instant,
    connected_at: Option<Instant>,
    video: Option<(Mid, Pt)>,
    audio: Option<(Mid, Pt)>,
    video_pts: Vec<Pt>,
    mids: Vec<Mid>,
    // Publisher.
    /// When the next frame starts.
    next_frame: Instant,
    next_audio: Instant,
    /// The current frame: when it started, packets sent and in all, the gap between them.
    frame_at: Instant,
    frame_sent: u32,
    frame_total: u32,
    frame_gap: Duration,
    key_frame: bool,
    key_pending: bool,
    last_key: Option<Instant>,
    seq_v: u64,
    seq_a: u64,
    frames: u64,
    // Subscriber.
    keyframe: Keyframe,
    /// The publishers this peer has had a copy from (counted once each in the thread's
    /// `local_subscribers`).
    receives_from: Vec<usize>,
}

impl State {
    fn new(rtc: &mut Rtc, role: Role, epoch: Instant, mids: Vec<Mid>) -> State {
        let now = Instant::now();
        let video_pts = rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .collect();
        State {
            role,
            epoch,
            rtc_deadline: now,
            connected_at: None,
            video: None,
            audio: None,
            video_pts,
            mids,
            next_frame: now,
            next_audio: now,
            frame_at: now,
            frame_sent: 0,
            frame_total: 0,
            frame_gap: Duration::ZERO,
            key_frame: false,
            key_pending: true,
            last_key: None,
            seq_v: 0,
            seq_a: 0,
            frames: 0,
            keyframe: Keyframe::default(),
            receives_from: Vec::new(),
        }
    }

    fn rate(&self) -> Option<(usize, Rate)> {
        match self.role {
            Role::Publish { n, rate } | Role::Both { n, rate } => Some((n, rate)),
            Role::Subscribe => None,
        }
    }

    fn receives(&self) -> bool {
        !matches!(self.role, Role::Publish { .. })
    }

    fn next_wake(&self) -> Instant {
        let mut t = self.rtc_deadline;
        if self.connected_at.is_some() {
            if let Some((_, rate)) = self.rate() {
                t = t.min(if self.frame_sent < self.frame_total {
                    self.frame_at + self.frame_gap * self.frame_sent
                } else {
                    self.next_frame
                });
                if rate.audio_pps > 0 {
                    t = t.min(self.next_audio);
                }
            }
        }
        t
    }

    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Learns the negotiated m-lines and payload types once connected.
    fn learn(&mut self, rtc: &mut Rtc) {
        let params: Vec<(Pt, Codec)> = rtc
            .codec_config()
            .params()
            .iter()
            .map(|p| (p.pt(), p.spec().codec))
            .collect();
        for mid in self.mids.clone() {
            let Some(m) = rtc.media(mid) else { continue };
            let kind = m.kind();
            let remote = m.remote_pts().to_vec();
            let want = if kind == MediaKind::Video {
                Codec::Vp8
            } else {
                Codec::Opus
            };
            let pt = params
                .iter()
                .find(|(pt, c)| *c == want && remote.contains(pt))
                .map(|(pt, _)| *pt);
            if let Some(pt) = pt {
                if kind == MediaKind::Video {
                    self.video = Some((mid, pt));
                } else {
                    self.audio = Some((mid, pt));
                }
            }
        }
    }

    fn event(
        &mut self,
        rtc: &mut Rtc,
        e: Event,
        totals: &Rc<RefCell<Totals>>,
        arrived: Option<(Instant, usize)>,
    ) {
        match e {
            Event::MediaAdded(m) if !self.mids.contains(&m.mid) => self.mids.push(m.mid),
            Event::Connected if self.connected_at.is_none() => {
                let now = Instant::now();
                self.connected_at = Some(now);
                self.next_frame = now;
                self.next_audio = now;
                self.learn(rtc);
                totals.borrow().count_connected();
            }
            // PLI or FIR: the next frame is a keyframe.
            Event::KeyframeRequest(_) => self.key_pending = true,
            Event::RtpPacket(pkt) if self.receives() => {
                let Some((at, size)) = arrived else { return };
                let video = self.video_pts.contains(&pkt.header.payload_type);
                let p = &pkt.payload;
                let (stamp_at, from_at) = if video {
                    (VIDEO_STAMP_AT, VIDEO_STAMP_AT + 8)
                } else {
                    (0, 8)
                };
                if p.len() < from_at + 4 {
                    return;
                }
                let stamp = u64::from_be_bytes(p[stamp_at..stamp_at + 8].try_into().unwrap());
                let from = u32::from_be_bytes(p[from_at..from_at + 4].try_into().unwrap()) as usize;
                if video {
                    self.keyframe_progress(*pkt.seq_no, p, pkt.header.marker, at, totals);
                }
                let mut t = totals.borrow_mut();
                if !t.knows(from) {
                    return;
                }
                if !self.receives_from.contains(&from) {
                    self.receives_from.push(from);
                    t.local_subscribers[from] += 1;
                }
                if !t.in_window(stamp) {
                    return;
                }
                if video {
                    t.recv_video[from] += 1;
                } else {
                    t.recv_audio[from] += 1;
                }
                t.recv_bytes += size as u64;
                let lat_ns = self.stamp(at).saturating_sub(stamp);
                t.latency_us[bucket(lat_ns)] += 1;
                t.copy_arrived(from, stamp, lat_ns);
            }
            _ => {}
        }
    }

    fn keyframe_progress(
        &mut self,
        seq: u64,
        p: &[u8],
        marker: bool,
        at: Instant,
        totals: &Rc<RefCell<Totals>>,
    ) {
        let starts_key = p[0] & 0x10 != 0 && p[0] & 0x07 == 0 && p[1] & 0x01 == 0;
        if self.keyframe.packet(seq, starts_key, marker) {
            let mut t = totals.borrow_mut();
            t.keyframe_ok += 1;
            let since = self.connected_at.unwrap_or(at);
            t.keyframe_wait_us
                .push(at.saturating_duration_since(since).as_micros() as u64);
        }
    }

    /// Writes the packets that are due.
    fn publish(&mut self, rtc: &mut Rtc, now: Instant, totals: &Rc<RefCell<Totals>>) -> bool {
        let Some((n, rate)) = self.rate() else {
            return false;
        };
        if self.connected_at.is_none() {
            return false;
        }
        let mut wrote = false;
        let fps = rate.fps.max(1);
        let frame = Duration::from_nanos(1_000_000_000 / fps as u64);
        if let Some((mid, pt)) = self.video {
            // Each frame's packets are spread evenly over the frame interval (a paced sender).
            loop {
                if self.frame_sent == self.frame_total {
                    if now < self.next_frame {
                        break;
                    }
                    let key = self.key_pending
                        && self.last_key.is_none_or(|t| {
                            now.saturating_duration_since(t) >= KEYFRAME_MIN_INTERVAL
                        });
                    if key {
                        self.key_pending = false;
                        self.last_key = Some(now);
                        let mut t = totals.borrow_mut();
                        let stamp = self.stamp(now);
                        if t.in_window(stamp) {
                            t.keyframes_sent += 1;
                        }
                    }
                    self.key_frame = key;
                    self.frame_at = self.next_frame;
                    self.next_frame += frame;
                    if now >= self.next_frame + frame {
                        // Far behind (the tool stalled): skip ahead rather than burst.
                        self.frame_at = now;
                        self.next_frame = now + frame;
                    }
                    self.frame_total = rate.packets_per_frame * if key { 3 } else { 1 };
                    self.frame_sent = 0;
                    self.frame_gap = frame / self.frame_total.max(1);
                    self.frames += 1;
                }
                let due = self.frame_at + self.frame_gap * self.frame_sent;
                if now < due {
                    break;
                }
                let first = self.frame_sent == 0;
                let last = self.frame_sent + 1 == self.frame_total;
                let stamp = self.stamp(Instant::now());
                let mut payload = vec![0u8; VIDEO_PAYLOAD];
                // VP8 payload descriptor: S bit on a frame's first packet, partition 0.
                payload[0] = if first { 0x10 } else { 0x00 };
                if first {
                    // VP8 frame tag: P = 0 (keyframe) or 1, show_frame; a keyframe's start code
                    // and 640×480.
                    payload[1] = if self.key_frame { 0x10 } else { 0x11 };
                    if self.key_frame {
                        payload[4..11].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
                    }
                }
                payload[VIDEO_STAMP_AT..VIDEO_STAMP_AT + 8].copy_from_slice(&stamp.to_be_bytes());
                payload[VIDEO_STAMP_AT + 8..VIDEO_STAMP_AT + 12]
                    .copy_from_slice(&(n as u32).to_be_bytes());
                self.seq_v += 1;
                self.frame_sent += 1;
                let ts = (self.frames * (90_000 / fps as u64)) as u32;
                let mut api = rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                    tx.write_rtp(
                        RtpWrite::new(pt, self.seq_v.into(), ts, now, payload)
                            .marker(last)
                            .nackable(true),
                    );
                    wrote = true;
                    let mut t = totals.borrow_mut();
                    if t.in_window(stamp) {
                        t.make_room(n);
                        t.sent_video[n] += 1;
                        t.record_late(due, now);
                    }
                }
            }
        }
        if rate.audio_pps > 0 {
            if let Some((mid, pt)) = self.audio {
                let gap = Duration::from_nanos(1_000_000_000 / rate.audio_pps as u64);
                if now >= self.next_audio {
                    let stamp = self.stamp(Instant::now());
                    let mut payload = vec![0x11u8; AUDIO_PAYLOAD];
                    payload[0..8].copy_from_slice(&stamp.to_be_bytes());
                    payload[8..12].copy_from_slice(&(n as u32).to_be_bytes());
                    self.seq_a += 1;
                    let ts = (self.seq_a * (48_000 / rate.audio_pps as u64)) as u32;
                    let mut api = rtc.direct_api();
                    if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                        tx.write_rtp(RtpWrite::new(pt, self.seq_a.into(), ts, now, payload));
                        wrote = true;
                        let mut t = totals.borrow_mut();
                        if t.in_window(stamp) {
                            t.make_room(n);
                            t.sent_audio[n] += 1;
                            t.record_late(self.next_audio, now);
                        }
                    }
                    self.next_audio += gap;
                    if now >= self.next_audio + gap * 5 {
                        self.next_audio = now + gap;
                    }
                }
            }
        }
        wrote
    }
}

/// The direction a role offers.
pub fn direction(role: &Role) -> Direction {
    match role {
        Role::Publish { .. } => Direction::SendOnly,
        Role::Subscribe => Direction::RecvOnly,
        Role::Both { .. } => Direction::SendRecv,
    }
}

/// Run through `tests/load_tool.rs`, which includes this file (benches are not run as tests).
#[cfg(test)]
mod tests {
    #[test]
    fn copies_of_one_packet_read_on_several_threads_are_joined_at_the_end() {
        // Here and not at the module's top: the bench target (no test harness) leaves the
        // test out and would find the import unused.
        use super::*;
        let main = Totals::new(Instant::now());
        let (epoch, shared) = {
            let t = main.borrow();
            (t.epoch, t.shared.clone())
        };
        let a = Totals::for_receivers(epoch, shared.clone(), crate::pacer::Pacing::Tick);
        let b = Totals::for_receivers(epoch, shared, crate::pacer::Pacing::Tick);
        // A thread learns of a publisher from the run's list, not before it is numbered.
        assert!(!a.borrow_mut().knows(0));
        assert_eq!(main.borrow_mut().add_publisher(3), 0);
        assert!(a.borrow_mut().knows(0) && b.borrow_mut().knows(0));
        // Two of the publisher's three subscribers are on thread a, one on b.
        a.borrow_mut().local_subscribers[0] = 2;
        b.borrow_mut().local_subscribers[0] = 1;

        // Packet 100: two copies on one thread, the third on the other. Packet 200: two of
        // its three copies arrive, on different threads; the third is lost.
        a.borrow_mut().copy_arrived(0, 100, 50_000);
        a.borrow_mut().copy_arrived(0, 100, 80_000);
        b.borrow_mut().copy_arrived(0, 100, 200_000);
        a.borrow_mut().copy_arrived(0, 200, 30_000);
        b.borrow_mut().copy_arrived(0, 200, 40_000);
        a.borrow_mut().recv_video[0] += 3;
        b.borrow_mut().recv_video[0] += 2;
        b.borrow_mut().keyframe_ok += 1;
        // A thread keeps open only what its own subscribers have not all had: packet 200 on a.
        assert_eq!(a.borrow().copies.len(), 1);
        assert_eq!(a.borrow().closed.len(), 1);
        assert_eq!(b.borrow().copies.len(), 0);
        assert_eq!(b.borrow().closed.len(), 2);

        let mut m = main.borrow_mut();
        for t in [a, b] {
            m.merge(Rc::into_inner(t).expect("one owner").into_inner());
        }
        assert_eq!(m.recv_video, vec![5]);
        assert_eq!(m.keyframe_ok, 1);
        // Packet 100 is whole: first copy 50 µs, the last 150 µs after it.
        assert_eq!(m.first_copy_us[50], 1);
        assert_eq!(m.spread_us[150], 1);
        assert_eq!(m.spread_us.iter().sum::<u32>(), 1);
        // Packet 200 is not: its first copy counts once the run ends, its spread never.
        assert_eq!(m.first_copy_us[30], 0);
        m.finish_copies();
        assert_eq!(m.first_copy_us[30], 1);
        assert_eq!(m.first_copy_us.iter().sum::<u32>(), 2);
        assert_eq!(m.spread_us.iter().sum::<u32>(), 1);
    }
}
