//! The selective forwarding unit: WebRTC peers (ICE, DTLS-SRTP by [str0m]) grouped in rooms, RTP
//! forwarded between them without decoding, keyframe requests relayed from the receiver to the
//! sender, ICE restarts by renegotiation, and TURN REST credentials ([`turn`]). It is a sans-IO
//! core: the UDP loop of the `frontdesk` binary owns the socket and the clock, hands datagrams in
//! with [`Sfu::receive`], time in with [`Sfu::timeout`], and sends what [`Sfu::poll_transmit`]
//! returns. It never imports the signaling hub or billing.
//!
//! Each peer has one audio and one video m-line (usually `sendrecv`). What a peer sends on a
//! media kind goes out on the first sending m-line of that kind of every other peer in its room:
//! two peers make a one-to-one call, one sender and N `recvonly` peers a broadcast.
//!
//! str0m receives every packet (SRTP, RTCP, keyframe requests, reports). What is forwarded to a
//! receiver, the core seals itself with keys from that receiver's handshake (module `srtp`:
//! AES-GCM or AES-CM, whichever it negotiated), and answers NACKs for it; str0m sends one
//! packet per track every 500 ms so that its sender reports stay current, and the core adds its
//! own packets to the counts in those reports. ARCHITECTURE.md has the reasoning.
//!
//! ```
//! use frontdesk_sfu::{Sfu, SfuConfig, PeerId, RoomId, SfuError};
//! use std::time::Instant;
//!
//! let mut sfu = Sfu::new(Instant::now(), SfuConfig { candidates: vec!["127.0.0.1:7882".parse().unwrap()] });
//! let err = sfu.offer(Instant::now(), RoomId(1), PeerId(1), "not sdp").unwrap_err();
//! assert_eq!(err.code(), "invalid_sdp");
//! assert_eq!(sfu.stats().peers, 0);
//! ```

mod dtls;
mod srtp;
pub mod turn;

pub use str0m::net::{Protocol, Transmit};

#[doc(hidden)]
pub use srtp::bench as seal_bench;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::CodecSpec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::Receive;
use str0m::rtp::{Extension, ExtensionMap, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// The core's maps, looked up for every packet in (the sender's address, its room): foldhash
/// rather than SipHash saves about 500 of the 19,400 instructions of a 1:1 packet (callgrind,
/// forward_hot_path). Still seeded at random per process, so keys a peer picks (its address)
/// cannot be aimed at one bucket from outside.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Largest UDP payload the SFU accepts or sends; larger datagrams are dropped at the edge.
pub const MAX_UDP_PAYLOAD: usize = 1500;
/// Largest SDP offer accepted.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// Largest ICE candidate line accepted.
pub const MAX_CANDIDATE_BYTES: usize = 512;
/// Most m-lines in one offer (one audio and one video are used; a little room for extras).
pub const MAX_MEDIA_LINES: usize = 4;
/// Most remote candidates per peer.
pub const MAX_REMOTE_CANDIDATES: usize = 32;
/// Least time between two keyframe requests sent to one incoming track.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);
/// Longest wait between two consent checks to a peer.
const CONSENT_MAX_RTO: Duration = Duration::from_millis(1000);
/// Unanswered consent checks before the peer counts as disconnected.
const CONSENT_MAX_RETRANSMITS: usize = 3;
/// Gap added to the RTP time when a forwarded track switches to a new source.
const SOURCE_SWITCH_TIME_GAP: u32 = 3_000;
/// On a forwarded track the core seals itself ([`srtp`]), one packet in this interval still
/// goes through str0m, so that the sender reports str0m writes for the track map its RTP time
/// to the wall clock from a recent packet (receivers synchronize audio and video by them), and
/// so that str0m's own packets keep the peer's path current after an ICE change.
const VIA_STR0M_INTERVAL: Duration = Duration::from_millis(500);
/// Sealed video packets kept per receiver for retransmission on a NACK: at most this many...
const RESEND_HISTORY: usize = 512;
/// ...and none older than this (a NACK comes within a round trip or two).
const RESEND_MAX_AGE: Duration = Duration::from_secs(1);
/// Times one packet is resent at most, however often it is asked for...
const MAX_RESENDS: u8 = 2;
/// ...and not again sooner than this (a receiver repeats a NACK about once a round trip).
const RESEND_SPACING: Duration = Duration::from_millis(20);
/// Sent datagrams' buffers kept for reuse ([`Sfu::recycle`]): a fan-out of 50 from a batch of
/// 32 datagrams in, with room to spare (at most about 2.5 MB).
pub const MAX_SPARE_BUFFERS: usize = 2048;
/// Smaller buffers are not kept: a video copy would outgrow them.
const MIN_SPARE_CAPACITY: usize = 1024;
/// Sequence numbers read from one RTCP datagram's NACKs at most (a datagram can list
/// thousands; a receiver missing more than this needs a keyframe, not resends).
const MAX_NACKED_PER_REPORT: usize = 256;

/// Identifies a peer; chosen by the caller, unique per [`Sfu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// Identifies a room (a call); chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u128);

/// Why a request to the SFU was refused. Network input never produces one: bad datagrams are
/// counted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    #[error("invalid SDP offer: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("no such peer")]
    UnknownPeer,
    #[error("no receiving video track with mid {0:?}")]
    UnknownTrack(String),
    #[error("the peer belongs to another room")]
    WrongRoom,
}

impl SfuError {
    /// Stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            SfuError::InvalidSdp(_) => "invalid_sdp",
            SfuError::InvalidCandidate(_) => "invalid_candidate",
            SfuError::UnknownPeer => "not_in_call",
            SfuError::UnknownTrack(_) => "unknown_track",
            SfuError::WrongRoom => "not_in_call",
        }
    }
}

/// What happened to a peer, for the signaling side to tell the people in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SfuEvent {
    /// Media is flowing (ICE and DTLS up), first time or again after [`SfuEvent::Disconnected`].
    Connected(PeerId),
    /// ICE consent to the peer failed: nothing heard for several seconds.
    Disconnected(PeerId),
    /// The peer's connection is over (closed by the remote or broken); it has been removed.
    Closed(PeerId),
}

/// Static configuration.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Host candidates the SFU advertises (the addresses its UDP socket is reachable at).
    pub candidates: Vec<SocketAddr>,
}

/// Counters since start, and current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    pub peers: usize,
    pub rooms: usize,
    pub packets_in: u64,
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    /// Datagrams no peer accepted (unknown source, stray or malformed).
    pub datagrams_unmatched: u64,
    pub keyframe_requests: u64,
    /// Of `packets_forwarded`, those the core sealed itself (module `srtp`) rather than str0m.
    pub packets_sealed_by_core: u64,
    /// Packets resent on a receiver's NACK from what the core sealed.
    pub packets_resent: u64,
}

/// A track the peer receives from the SFU (an m-line the SFU sends on).
#[derive(Debug)]
struct OutSlot {
    mid: Mid,
    kind: MediaKind,
    /// The incoming track it forwards: (source peer, source mid).
    source: Option<(PeerId, Mid)>,
    rewrite: SeqRewrite,
    /// Incoming payload type → outgoing one (None: the receiver did not negotiate that codec).
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// What the core's own sealing needs to know of the track, learned on first use.
    fast: Option<FastOut>,
    /// Until when the core seals this track's copies: [`VIA_STR0M_INTERVAL`] after a packet
    /// of it last went through str0m (a deadline, so each copy compares rather than subtracts).
    via_str0m_until: Option<Instant>,
    /// Video the core sealed itself, for NACKs (oldest first).
    sent: VecDeque<Sent>,
    /// RTP packets (resends included) and payload octets the core sent on the track, modulo
    /// 2^32 as RTCP counts them: added to str0m's sender reports, which count only str0m's.
    core_sent: (u32, u32),
}

/// An outgoing track's SSRC and the header extension ids its receiver negotiated (one-byte
/// form, 1–14) for what the core writes.
#[derive(Debug, Clone, Copy)]
struct FastOut {
    ssrc: u32,
    mid_id: Option<u8>,
    /// The MID's bytes, read once: str0m's `Mid` trims its padding on every read.
    mid: [u8; 16],
    mid_len: u8,
    audio_level_id: Option<u8>,
    orientation_id: Option<u8>,
}

/// A packet the core sealed, kept for retransmission: not the sealed bytes but what they were
/// sealed from, so a resend seals it again. Sealing is deterministic, so the resend is the
/// same datagram (the same nonce never seals a different header or payload); the payload is
/// the one all receivers' copies share, so the history costs no copy of it.
#[derive(Debug)]
struct Sent {
    at: Instant,
    resends: u8,
    /// When it was last resent (or first sent).
    last_sent: Instant,
    copy: Outgoing,
    info: FastOut,
}

/// Work queued by [`Sfu::ingest`] for [`Sfu::drive_pending`], receiver by receiver (each one's in arrival order).
#[derive(Debug)]
enum Work {
    /// Tell the peer the time and poll it (str0m has input for it).
    Drive(usize),
    /// Seal one forwarded packet for one receiver.
    Seal(Outgoing),
}

impl Work {
    fn slot(&self) -> usize {
        match self {
            Work::Drive(s) => *s,
            Work::Seal(c) => c.slot,
        }
    }
}

/// One forwarded packet for one receiver the core seals itself.
#[derive(Debug)]
struct Outgoing {
    slot: usize,
    peer: PeerId,
    mid: Mid,
    pt: Pt,
    seq: u64,
    time: u32,
    marker: bool,
    /// Audio level and voice activity, video orientation (as received).
    audio_level: Option<(i8, bool)>,
    orientation: Option<u8>,
    payload: Arc<[u8]>,
}

/// Numbers an outgoing track's packets: sequence numbers (extended, so rollover counter ‖
/// sequence number: the SRTP index) and RTP time, continuous when the track's source changes.
///
/// Each (SSRC, index) is sealed once (an AEAD nonce must never repeat with other plaintext),
/// so no outgoing index is ever given to two packets: each source's run of packets (an
/// epoch) is numbered from one past the highest index issued before it, and a packet that
/// would land below that — one that arrives after the first packet of its epoch yet was sent
/// before it — is dropped rather than numbered into a previous epoch's range. Within an epoch
/// incoming sequence numbers map one to one (SRTP's replay check already refused duplicates).
#[derive(Debug, Default)]
struct SeqRewrite {
    ssrc: Option<Ssrc>,
    /// The incoming index that began the current epoch, and the outgoing one it got.
    start_in: u64,
    start_out: u64,
    time_offset: u32,
    last_seq: Option<u64>,
    last_time: u32,
}

/// SRTP indexes are 48 bits (RFC 3711 §3.3.1).
const MAX_SRTP_INDEX: u64 = (1 << 48) - 1;

impl SeqRewrite {
    /// The outgoing (index, RTP time) for an incoming packet, or `None` to drop it.
    fn map(&mut self, ssrc: Ssrc, seq: u64, time: u32) -> Option<(u64, u32)> {
        if self.ssrc != Some(ssrc) {
            self.start_in = seq;
            match self.last_seq {
                Some(last) => {
                    self.start_out = last.checked_add(1)?;
                    self.time_offset = self
                        .last_time
                        .wrapping_add(SOURCE_SWITCH_TIME_GAP)
                        .wrapping_sub(time);
                }
                // A receiver's SRTP starts at rollover counter 0 (RFC 3711 §3.3.1) and only
                // learns of rollovers it sees: however long the source has been sending, the
                // track starts in the first 2^16.
                None => self.start_out = seq & 0xffff,
            }
            self.ssrc = Some(ssrc);
        }
        let out_seq = self
            .start_out
            .checked_add(seq.checked_sub(self.start_in)?)
            .filter(|&s| s <= MAX_SRTP_INDEX)?;
        let out_time = time.wrapping_add(self.time_offset);
        if self.last_seq.is_none_or(|l| out_seq > l) {
            self.last_seq = Some(out_seq);
            self.last_time = out_time;
        }
        Some((out_seq, out_time))
    }
}

#[derive(Debug)]
struct InTrack {
    mid: Mid,
    kind: MediaKind,
    last_keyframe_request: Option<Instant>,
    /// Payload type → codec, learned from the negotiated codecs on first use.
    specs: Vec<(Pt, Option<CodecSpec>)>,
}

struct Peer {
    id: PeerId,
    room: RoomId,
    rtc: Rtc,
    deadline: Instant,
    /// ICE and DTLS are up and consent holds.
    media_up: bool,
    dtls_up: bool,
    outs: Vec<OutSlot>,
    ins: Vec<InTrack>,
    /// Incoming SSRC → index in `ins`, learned from str0m's receive streams.
    ssrc_in: Vec<(Ssrc, usize)>,
    remote_candidates: usize,
    /// A watcher (a supervisor listening in): receives the room's media, and whatever it
    /// sends is never forwarded.
    watch_only: bool,
    /// Queued to be driven (so that it is queued once, however many packets it was given).
    dirty: bool,
    /// The SRTP keys its DTLS handshake exports ([`dtls`]), until they are taken.
    keying: Option<dtls::KeyingSlot>,
    /// The core's own SRTP for it, once DTLS is up.
    fast: Option<srtp::FastSrtp>,
    /// Protocol, local and remote address of the path str0m last sent DTLS or SRTP on.
    route: Option<(Protocol, SocketAddr, SocketAddr)>,
}

/// The SFU core. See the crate documentation.
pub struct Sfu {
    config: SfuConfig,
    /// str0m's crypto with one DTLS configuration for every peer ([`dtls`]).
    crypto: std::sync::Arc<str0m::crypto::CryptoProvider>,
    cert: Option<DtlsCert>,
    /// Slots; a removed peer leaves `None` for reuse.
    peers: Vec<Option<Peer>>,
    free: Vec<usize>,
    by_id: Map<PeerId, usize>,
    rooms: Map<RoomId, Vec<usize>>,
    /// Remote address → slot, learned when a peer accepts a datagram from it.
    by_addr: Map<SocketAddr, usize>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    /// Peers with input since they were last polled (each once: see `Peer::dirty`) and
    /// copies to seal, in the order they arose.
    work: VecDeque<Work>,
    /// Scratch: an RTP header being written; an SRTCP packet opened.
    header: Vec<u8>,
    rtcp: Vec<u8>,
    /// Buffers of sent datagrams handed back ([`Sfu::recycle`]), for the next copies the core
    /// seals: a 1.1 KB allocation and free per copy otherwise, past the allocator's fast path.
    spare: Vec<Vec<u8>>,
    stats: SfuStats,
    /// The latest time the caller told the core.
    last_now: Instant,
    /// Keyframe requests held back by [`KEYFRAME_REQUEST_INTERVAL`]: (sender, its track, when
    /// the request may go). Sent from [`Sfu::timeout`]; one per track at most.
    deferred_keyframes: Vec<(PeerId, Mid, Instant)>,
}

impl Sfu {
    pub fn new(now: Instant, config: SfuConfig) -> Sfu {
        // One DTLS certificate for every peer: generating a key per peer would cost a few ms each.
        let crypto = std::sync::Arc::new(dtls::crypto_provider());
        let cert = crypto.dtls_provider.generate_certificate();
        if cert.is_none() {
            tracing::warn!("could not generate a DTLS certificate; each peer will make its own");
        }
        Sfu {
            config,
            crypto,
            cert,
            peers: Vec::new(),
            free: Vec::new(),
            by_id: Map::default(),
            rooms: Map::default(),
            by_addr: Map::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            work: VecDeque::new(),
            header: Vec::with_capacity(64),
            rtcp: Vec::new(),
            spare: Vec::new(),
            stats: SfuStats::default(),
            last_now: now,
            deferred_keyframes: Vec::new(),
        }
    }

    pub fn stats(&self) -> SfuStats {
        SfuStats {
            peers: self.by_id.len(),
            rooms: self.rooms.len(),
            ..self.stats
        }
    }

    /// Whether `peer` exists.
    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.by_id.contains_key(&peer)
    }

    /// Answers an SDP offer from `peer` in `room`: creates the peer on its first offer, and
    /// renegotiates (ICE restart included) on later ones. Returns the answer SDP.
    pub fn offer(
        &mut self,
        now: Instant,
        room: RoomId,
        peer: PeerId,
        sdp: &str,
    ) -> Result<String, SfuError> {
        self.negotiate(now, room, peer, sdp, false)
    }

    /// Like [`Sfu::offer`], for a watcher: a peer that receives what the room's participants
    /// send and whose own media (if it sends any) reaches no one. A peer is a watcher or a
    /// participant from its first offer on; an offer of the other kind for it is refused.
    pub fn offer_watcher(
        &mut self,
        now: Instant,
        room: RoomId,
        peer: PeerId,
        sdp: &str,
    ) -> Result<String, SfuError> {
        self.negotiate(now, room, peer, sdp, true)
    }

    fn negotiate(
        &mut self,
        now: Instant,
        room: RoomId,
        peer: PeerId,
        sdp: &str,
        watch_only: bool,
    ) -> Result<String, SfuError> {
        let offer = validate_offer(sdp)?;
        let slot = match self.by_id.get(&peer) {
            Some(&slot) => {
                let p = self.peers[slot]
                    .as_ref()
                    .expect("by_id points at a live slot");
                if p.room != room || p.watch_only != watch_only {
                    return Err(SfuError::WrongRoom);
                }
                slot
            }
            None => self.insert_peer(now, room, peer, watch_only)?,
        };
        let fresh = self.peers[slot]
            .as_ref()
            .is_some_and(|p| p.outs.is_empty() && p.ins.is_empty() && !p.dtls_up);
        let p = self.peers[slot].as_mut().expect("slot was just checked");
        let answer = match p.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                if fresh {
                    self.remove_slot(slot);
                }
                return Err(SfuError::InvalidSdp(e.to_string()));
            }
        };
        let answer = answer.to_sdp_string();
        // Learn the m-lines now (str0m announces them as events only once connected), so that
        // requests naming a track work from the answer on.
        if let Some(p) = self.peers[slot].as_mut() {
            for mid in answer.lines().filter_map(|l| l.strip_prefix("a=mid:")) {
                let mid = Mid::from(mid.trim());
                let media = p.rtc.media(mid).map(|m| (m.kind(), m.direction()));
                if let Some((kind, dir)) = media {
                    p.add_media(mid, kind, dir);
                }
            }
        }
        if !fresh {
            // A renegotiation (an ICE restart): the peer counts as connected again only when
            // media or a nominated pair proves the new path, so that the caller hears
            // `Connected` after every restart, also one over a path that never broke.
            if let Some(p) = self.peers[slot].as_mut() {
                p.media_up = false;
                // str0m takes the next packet of each track (the path may change) and the
                // track's SSRC and extension ids are looked up again.
                p.via_str0m_next();
                for out in &mut p.outs {
                    out.fast = None;
                }
            }
        }
        if !has_usable_media(&answer) {
            if fresh {
                self.remove_slot(slot);
            }
            return Err(SfuError::InvalidSdp(
                "no audio or video m-line with a codec the SFU forwards (Opus, VP8, H.264)".into(),
            ));
        }
        self.drive(slot, now);
        Ok(answer)
    }

    /// Adds a trickled remote candidate (`candidate:…`, with or without `a=`). An empty string
    /// (end of candidates) is accepted and ignored.
    pub fn add_candidate(&mut self, peer: PeerId, candidate: &str) -> Result<(), SfuError> {
        let slot = *self.by_id.get(&peer).ok_or(SfuError::UnknownPeer)?;
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        if line.len() > MAX_CANDIDATE_BYTES {
            return Err(SfuError::InvalidCandidate("longer than 512 bytes".into()));
        }
        let c = Candidate::from_sdp_string(line)
            .map_err(|e| SfuError::InvalidCandidate(e.to_string()))?;
        let p = self.peers[slot]
            .as_mut()
            .expect("by_id points at a live slot");
        if p.remote_candidates >= MAX_REMOTE_CANDIDATES {
            return Err(SfuError::InvalidCandidate(
                "too many candidates for one peer".into(),
            ));
        }
        p.remote_candidates += 1;
        p.rtc.add_remote_candidate(c);
        self.mark_dirty(slot);
        Ok(())
    }

    /// Asks the sender of what `peer` receives on m-line `mid` for a keyframe.
    pub fn request_keyframe(
        &mut self,
        now: Instant,
        peer: PeerId,
        mid: &str,
    ) -> Result<(), SfuError> {
        let slot = *self.by_id.get(&peer).ok_or(SfuError::UnknownPeer)?;
        let p = self.peers[slot]
            .as_ref()
            .expect("by_id points at a live slot");
        let out = p
            .outs
            .iter()
            .find(|o| o.kind == MediaKind::Video && &*o.mid == mid)
            .ok_or_else(|| SfuError::UnknownTrack(mid.chars().take(16).collect()))?;
        if let Some((src, src_mid)) = out.source {
            self.keyframe_from(now, src, src_mid, KeyframeRequestKind::Pli, true);
        }
        Ok(())
    }

    /// Removes a peer at once (the call ended or the participant left).
    pub fn remove_peer(&mut self, peer: PeerId) {
        if let Some(&slot) = self.by_id.get(&peer) {
            self.remove_slot(slot);
        }
    }

    /// Hands in one datagram received on the SFU's socket.
    pub fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) {
        self.receive_batch(now, proto, destination, [(source, datagram)]);
    }

    /// Hands in datagrams received together (one `recvmmsg`). What they bring is forwarded
    /// once all are in: a receiver that several of them are forwarded to is told the time and
    /// polled once for all of them, not once per datagram.
    pub fn receive_batch<'a>(
        &mut self,
        now: Instant,
        proto: Protocol,
        destination: SocketAddr,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    ) {
        self.ingest(now, proto, destination, datagrams);
        self.drain_dirty(now);
    }

    /// Like [`Sfu::receive_batch`], but what the datagrams bring is only queued at its
    /// receivers: [`Sfu::drive_pending`] sends it, a few receivers at a time, so a caller
    /// can send the first receivers' packets while the core seals the rest (at a fan-out of
    /// 50, the first copy need not wait for the fiftieth).
    pub fn ingest<'a>(
        &mut self,
        now: Instant,
        proto: Protocol,
        destination: SocketAddr,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    ) {
        for (source, datagram) in datagrams {
            if datagram.len() > MAX_UDP_PAYLOAD {
                self.stats.datagrams_unmatched += 1;
                continue;
            }
            let Ok(contents) = datagram.try_into() else {
                self.stats.datagrams_unmatched += 1;
                continue;
            };
            let receive = Receive {
                proto,
                source,
                destination,
                contents,
            };
            self.take(now, source, Input::Receive(now, receive), datagram);
        }
        // Receiver by receiver, each one's in arrival order: the copies of several packets
        // for one receiver then leave one after the other, which the UDP loop sends as one
        // (GSO) instead of one send per copy.
        let work = self.work.make_contiguous();
        if !work.is_sorted_by_key(Work::slot) {
            work.sort_by_key(Work::slot);
        }
    }

    /// How many receivers wait to be driven by [`Sfu::drive_pending`] (the fan-out of what
    /// [`Sfu::ingest`] queued).
    pub fn pending(&self) -> usize {
        let mut slots = self.work.iter().map(Work::slot);
        let first = slots.next();
        slots
            .scan(first, |last, s| {
                let new = *last != Some(s);
                *last = Some(s);
                Some(new)
            })
            .filter(|&new| new)
            .count()
            + usize::from(first.is_some())
    }

    /// Drives up to `max` of the receivers given input since they were last polled (see
    /// [`Sfu::ingest`]): seals or polls out everything queued for each; true while more wait.
    pub fn drive_pending(&mut self, now: Instant, max: usize) -> bool {
        let (mut last, mut driven) = (None, 0);
        while let Some(next) = self.work.front().map(Work::slot) {
            if last != Some(next) {
                if driven == max {
                    return true;
                }
                driven += 1;
                last = Some(next);
            }
            if !self.work_one(now) {
                break;
            }
        }
        false
    }

    /// One datagram into the peer that accepts it, and that peer polled; the peers it
    /// forwarded to are left dirty for the caller to drain.
    fn take(&mut self, now: Instant, source: SocketAddr, input: Input<'_>, datagram: &[u8]) {
        let known = self.by_addr.get(&source).copied().filter(|&slot| {
            self.peers[slot]
                .as_ref()
                .is_some_and(|p| p.rtc.accepts(&input))
        });
        let slot = match known {
            Some(slot) => slot,
            None => {
                let found = self.peers.iter().position(|p| {
                    p.as_ref()
                        .is_some_and(|p| p.rtc.is_alive() && p.rtc.accepts(&input))
                });
                let Some(slot) = found else {
                    self.stats.datagrams_unmatched += 1;
                    return;
                };
                self.by_addr.insert(source, slot);
                slot
            }
        };
        self.stats.packets_in += 1;
        if is_rtcp(datagram) {
            self.on_srtcp(slot, now, datagram);
        }
        let p = self.peers[slot].as_mut().expect("slot was just matched");
        if let Err(e) = p.rtc.handle_input(input) {
            tracing::debug!(peer = p.id.0, error = %e, "peer input failed; closing it");
            p.rtc.disconnect();
        }
        self.poll_peer(slot, now);
    }

    /// Drives every peer whose deadline has passed (and any with pending input).
    pub fn timeout(&mut self, now: Instant) {
        self.timeout_some(now, usize::MAX);
    }

    /// Like [`Sfu::timeout`], but drives at most `max` of the peers whose deadline has passed;
    /// true while more are due. A caller that also receives datagrams runs timers a slice at a
    /// time between receives, so a packet that arrives meanwhile waits for a few peers' timers
    /// rather than for every peer's (at 50 peers a whole round took up to 250 µs).
    pub fn timeout_some(&mut self, now: Instant, max: usize) -> bool {
        self.last_now = self.last_now.max(now);
        if self.deferred_keyframes.iter().any(|d| d.2 <= now) {
            let mut due = Vec::new();
            self.deferred_keyframes.retain(|&(src, mid, at)| {
                if at <= now {
                    due.push((src, mid));
                }
                at > now
            });
            for (src, mid) in due {
                self.keyframe_from(now, src, mid, KeyframeRequestKind::Pli, true);
            }
        }
        let (mut driven, mut more) = (0, false);
        for slot in 0..self.peers.len() {
            let due = self.peers[slot].as_ref().is_some_and(|p| p.deadline <= now);
            if due {
                if driven == max {
                    more = true;
                    break;
                }
                driven += 1;
                let p = self.peers[slot].as_mut().expect("checked above");
                if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(peer = p.id.0, error = %e, "peer timeout failed; closing it");
                    p.rtc.disconnect();
                }
                self.drive(slot, now);
            }
        }
        self.drain_dirty(now);
        more
    }

    /// When [`Sfu::timeout`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Pending input (a trickled candidate, a keyframe request): due at the last time told.
        if !self.work.is_empty() {
            return Some(self.last_now);
        }
        let peers = self.peers.iter().flatten().map(|p| p.deadline);
        peers
            .chain(self.deferred_keyframes.iter().map(|d| d.2))
            .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Hands back the buffer of a datagram [`Sfu::poll_transmit`] gave out, once it is sent,
    /// for the core to seal a later copy into. Optional: a buffer not handed back is freed.
    /// At most [`MAX_SPARE_BUFFERS`] are kept, and only those of a media datagram's size.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare.len() < MAX_SPARE_BUFFERS
            && (MIN_SPARE_CAPACITY..=MAX_UDP_PAYLOAD + 64).contains(&buffer.capacity())
        {
            self.spare.push(buffer);
        }
    }

    /// The next peer event.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    fn insert_peer(
        &mut self,
        now: Instant,
        room: RoomId,
        id: PeerId,
        watch_only: bool,
    ) -> Result<usize, SfuError> {
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_crypto_provider(self.crypto.clone());
        if let Some(cert) = &self.cert {
            config = config.set_dtls_cert(cert.clone());
        }
        // RTP header extensions: only what someone reads. The core runs no bandwidth
        // estimation of its own, so abs-send-time (for receive-side estimation) is never
        // read, and transport-wide sequence numbers serve only the browser's estimate of
        // what it *sends*: a watcher sends nothing, so for it they would be a per-packet
        // cost on both sides (a sequence number on every forwarded packet, a record of every
        // send, feedback every few tens of ms to parse) for nothing.
        let mut exts = ExtensionMap::empty();
        for (id, ext) in config.extension_map().iter() {
            let unread = *ext == Extension::AbsoluteSendTime
                || (watch_only && *ext == Extension::TransportSequenceNumber);
            if !unread {
                exts.set(id, ext.clone());
            }
        }
        config = config.set_extension_map(exts);
        // Consent checks every second at most, three unanswered → disconnected (a few seconds
        // after the path breaks, not the default half minute).
        config.set_max_stun_rto(CONSENT_MAX_RTO);
        config.set_max_stun_retransmits(CONSENT_MAX_RETRANSMITS);
        // The DTLS instance `build` makes leaves its SRTP keys in a slot taken here ([`dtls`]).
        dtls::take_created();
        let mut rtc = config.build(now);
        let keying = dtls::take_created();
        for addr in &self.config.candidates {
            let c = Candidate::host(*addr, "udp")
                .map_err(|e| SfuError::InvalidSdp(format!("bad local candidate: {e}")))?;
            rtc.add_local_candidate(c);
        }
        let peer = Peer {
            id,
            room,
            rtc,
            deadline: now,
            media_up: false,
            dtls_up: false,
            outs: Vec::new(),
            ins: Vec::new(),
            ssrc_in: Vec::new(),
            remote_candidates: 0,
            watch_only,
            dirty: false,
            keying,
            fast: None,
            route: None,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.peers[s] = Some(peer);
                s
            }
            None => {
                self.peers.push(Some(peer));
                self.peers.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        self.rooms.entry(room).or_default().push(slot);
        Ok(slot)
    }

    fn remove_slot(&mut self, slot: usize) {
        let Some(mut p) = self.peers[slot].take() else {
            return;
        };
        p.rtc.disconnect();
        self.free.push(slot);
        self.by_id.remove(&p.id);
        self.by_addr.retain(|_, s| *s != slot);
        self.work.retain(|w| w.slot() != slot);
        self.deferred_keyframes.retain(|d| d.0 != p.id);
        if let Some(members) = self.rooms.get_mut(&p.room) {
            members.retain(|s| *s != slot);
            if members.is_empty() {
                self.rooms.remove(&p.room);
            } else {
                // Whoever forwarded this peer's tracks may take another source.
                for &other in members.iter() {
                    if let Some(o) = self.peers[other].as_mut() {
                        for out in &mut o.outs {
                            if out.source.is_some_and(|(src, _)| src == p.id) {
                                out.source = None;
                                out.pt_map.clear();
                                out.sent.clear();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Queues `slot` to be driven once more before the core returns.
    fn mark_dirty(&mut self, slot: usize) {
        if let Some(p) = self.peers[slot].as_mut() {
            if !p.dirty {
                p.dirty = true;
                self.work.push_back(Work::Drive(slot));
            }
        }
    }

    /// Drives every peer that was given input (forwarded RTP, a keyframe request, a
    /// candidate). Each is told the time first: str0m's pacer releases queued RTP on a timeout,
    /// so the forwarded packets leave now, in the call that brought them in, rather than on the
    /// next `timeout` (a second round of polling every receiver per packet).
    fn drain_dirty(&mut self, now: Instant) {
        while self.work_one(now) {}
    }

    /// Does the oldest queued work: tells a dirty peer the time and polls it, or seals a
    /// copy; false if nothing was queued.
    fn work_one(&mut self, now: Instant) -> bool {
        while let Some(work) = self.work.pop_front() {
            let slot = match work {
                Work::Drive(slot) => slot,
                Work::Seal(copy) => {
                    self.seal(now, copy);
                    return true;
                }
            };
            let Some(p) = self.peers[slot].as_mut() else {
                continue;
            };
            p.dirty = false;
            if let Err(e) = p.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(peer = p.id.0, error = %e, "peer timeout failed; closing it");
                p.rtc.disconnect();
            }
            self.poll_peer(slot, now);
            return true;
        }
        false
    }

    /// Polls one peer until it has nothing more to say, then every peer that was given input
    /// meanwhile.
    fn drive(&mut self, slot: usize, now: Instant) {
        self.poll_peer(slot, now);
        self.drain_dirty(now);
    }

    /// Polls one peer until it has nothing more to say; forwards what it received (marking
    /// the receivers dirty).
    fn poll_peer(&mut self, slot: usize, now: Instant) {
        self.last_now = self.last_now.max(now);
        loop {
            let Some(p) = self.peers[slot].as_mut() else {
                return;
            };
            if !p.rtc.is_alive() {
                let id = p.id;
                self.remove_slot(slot);
                self.events.push_back(SfuEvent::Closed(id));
                return;
            }
            let output = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(peer = p.id.0, error = %e, "peer output failed; closing it");
                    p.rtc.disconnect();
                    continue;
                }
            };
            match output {
                Output::Timeout(t) => {
                    p.deadline = t;
                    break;
                }
                Output::Transmit(mut t) => {
                    // A sender report str0m wrote counts only the packets str0m sent: add
                    // what the core sent on each stream (module `srtp`).
                    if let Some(fast) = p.fast.as_mut().filter(|_| is_rtcp(&t.contents)) {
                        let outs = &p.outs;
                        let mut d: Vec<u8> = t.contents.into();
                        fast.add_to_sender_reports(&mut d, &mut self.rtcp, |ssrc| {
                            outs.iter()
                                .find(|o| o.fast.is_some_and(|f| f.ssrc == ssrc))
                                .map(|o| o.core_sent)
                        });
                        t.contents = d.into();
                    }
                    // DTLS (20–63) or SRTP/SRTCP (128–191) go on the selected path only; STUN
                    // also probes the others.
                    if matches!(t.contents.first(), Some(20..=63 | 128..=191)) {
                        let route = Some((t.proto, t.source, t.destination));
                        if p.route != route {
                            // A new path (a re-nomination needs no ICE state change): str0m
                            // takes each track's next packet, which confirms it.
                            p.route = route;
                            p.via_str0m_next();
                        }
                    }
                    self.transmits.push_back(t)
                }
                Output::Event(e) => self.on_event(slot, now, e),
            }
        }
    }

    fn on_event(&mut self, slot: usize, now: Instant, event: Event) {
        let p = self.peers[slot].as_mut().expect("caller holds a live slot");
        if matches!(event, Event::IceConnectionStateChange(_)) {
            // The path may change: str0m's next packet on each track shows it (`route`).
            p.via_str0m_next();
        }
        match event {
            Event::Connected => {
                p.dtls_up = true;
                // SRTP is keyed by now (str0m reports DTLS connected after it has keyed its own
                // contexts, and after it has checked the peer's certificate fingerprint).
                let keying = p.keying.take();
                let keying = keying
                    .as_ref()
                    .and_then(|k| k.lock().unwrap_or_else(|e| e.into_inner()).take());
                if let Some(k) = keying {
                    p.fast = srtp::FastSrtp::new(&self.crypto, &k);
                }
                if !p.media_up {
                    p.media_up = true;
                    self.events.push_back(SfuEvent::Connected(p.id));
                    self.on_peer_up(slot, now);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) if p.media_up => {
                p.media_up = false;
                self.events.push_back(SfuEvent::Disconnected(p.id));
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) if p.dtls_up && !p.media_up => {
                p.media_up = true;
                self.events.push_back(SfuEvent::Connected(p.id));
                self.on_peer_up(slot, now);
            }
            Event::MediaAdded(m) => {
                p.add_media(m.mid, m.kind, m.direction);
            }
            Event::MediaChanged(m) => {
                let kind = p.rtc.media(m.mid).map(|x| x.kind());
                if let Some(kind) = kind {
                    p.add_media(m.mid, kind, m.direction);
                }
            }
            Event::RtpPacket(pkt) => {
                // Media from a peer whose consent had failed: it is back (after an ICE
                // restart the ICE state may stay `checking` while the new path already works).
                if p.dtls_up && !p.media_up {
                    p.media_up = true;
                    self.events.push_back(SfuEvent::Connected(p.id));
                    self.on_peer_up(slot, now);
                }
                self.forward(slot, now, pkt)
            }
            Event::KeyframeRequest(req) => {
                let source = p
                    .outs
                    .iter()
                    .find(|o| o.mid == req.mid)
                    .and_then(|o| o.source);
                if let Some((src, src_mid)) = source {
                    self.keyframe_from(now, src, src_mid, req.kind, false);
                }
            }
            _ => {}
        }
    }

    /// A peer's media came up: ask every source it receives for a keyframe, so it can decode
    /// at once.
    fn on_peer_up(&mut self, slot: usize, now: Instant) {
        let sources: Vec<(PeerId, Mid)> = self.peers[slot]
            .as_ref()
            .map(|p| {
                p.outs
                    .iter()
                    .filter(|o| o.kind == MediaKind::Video)
                    .filter_map(|o| o.source)
                    .collect()
            })
            .unwrap_or_default();
        for (src, mid) in sources {
            self.keyframe_from(now, src, mid, KeyframeRequestKind::Pli, false);
        }
    }

    fn keyframe_from(
        &mut self,
        now: Instant,
        src: PeerId,
        src_mid: Mid,
        kind: KeyframeRequestKind,
        force: bool,
    ) {
        let Some(&slot) = self.by_id.get(&src) else {
            return;
        };
        let p = self.peers[slot]
            .as_mut()
            .expect("by_id points at a live slot");
        let Some(track) = p.ins.iter_mut().find(|t| t.mid == src_mid) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        if !force {
            if let Some(last) = track.last_keyframe_request {
                if now.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL {
                    // Too soon after the last one, which may already have been answered
                    // before this receiver was forwarded to (and a receiver that missed the
                    // keyframe sees nothing until the next): ask again once the interval
                    // has passed.
                    let at = last + KEYFRAME_REQUEST_INTERVAL;
                    if !self
                        .deferred_keyframes
                        .iter()
                        .any(|d| d.0 == src && d.1 == src_mid)
                    {
                        self.deferred_keyframes.push((src, src_mid, at));
                    }
                    return;
                }
            }
        }
        track.last_keyframe_request = Some(now);
        // This request covers any deferred one.
        self.deferred_keyframes
            .retain(|d| !(d.0 == src && d.1 == src_mid));
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(src_mid, None) {
            rx.request_keyframe(kind);
            self.stats.keyframe_requests += 1;
            self.mark_dirty(slot);
        }
    }

    /// Sends one incoming RTP packet of peer `slot` to every other peer of its room.
    fn forward(&mut self, slot: usize, now: Instant, pkt: RtpPacket) {
        let p = self.peers[slot].as_mut().expect("caller holds a live slot");
        if p.watch_only {
            return;
        }
        let src_id = p.id;
        let ssrc = pkt.header.ssrc;
        let in_idx = match p.ssrc_in.iter().find(|(s, _)| *s == ssrc) {
            Some(&(_, i)) => i,
            None => {
                let mid = p.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid());
                let Some(i) = mid.and_then(|m| p.ins.iter().position(|t| t.mid == m)) else {
                    return;
                };
                p.ssrc_in.push((ssrc, i));
                i
            }
        };
        let src_mid = p.ins[in_idx].mid;
        let kind = p.ins[in_idx].kind;
        let in_pt = pkt.header.payload_type;
        // The codec of the incoming payload type, looked up once per track and type.
        let in_spec = match p.ins[in_idx].specs.iter().find(|(pt, _)| *pt == in_pt) {
            Some(&(_, spec)) => spec,
            None => {
                let spec = p
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|c| c.pt() == in_pt)
                    .map(|c| c.spec());
                p.ins[in_idx].specs.push((in_pt, spec));
                spec
            }
        };
        let room = p.room;
        // Taken out while its members are written to (forwarding never changes a room), so
        // that each member can be borrowed mutably; put back below.
        let Some(members) = self.rooms.get_mut(&room).map(std::mem::take) else {
            return;
        };
        let mut need_keyframe = false;
        for &t in &members {
            if t == slot {
                continue;
            }
            let Some(dst) = self.peers[t].as_mut() else {
                continue;
            };
            if !dst.media_up {
                continue;
            }
            let Some(out) = dst
                .outs
                .iter_mut()
                .find(|o| o.kind == kind && o.source.is_none_or(|s| s == (src_id, src_mid)))
            else {
                continue;
            };
            if out.source.is_none() {
                out.source = Some((src_id, src_mid));
                need_keyframe = true;
            }
            let out_pt = match out.pt_map.iter().find(|(i, _)| *i == in_pt) {
                Some(&(_, o)) => o,
                None => {
                    let o = in_spec.and_then(|spec| match_pt(&dst.rtc, out.mid, spec));
                    out.pt_map.push((in_pt, o));
                    o
                }
            };
            let Some(out_pt) = out_pt else {
                continue;
            };
            let Some((seq, time)) = out.rewrite.map(ssrc, *pkt.seq_no, pkt.header.timestamp) else {
                continue;
            };
            let out_mid = out.mid;
            // Sealed by the core when it can (its receiver is keyed for it, the track's path
            // and SSRC are known) and str0m has had a packet of the track recently.
            if dst.fast.is_some() && dst.route.is_some() {
                if out.fast.is_none() {
                    out.fast = fast_out(&mut dst.rtc, out_mid, kind);
                }
                let recent = out.via_str0m_until.is_some_and(|until| now < until);
                if recent && out.fast.is_some() {
                    let ev = &pkt.header.ext_vals;
                    self.work.push_back(Work::Seal(Outgoing {
                        slot: t,
                        peer: dst.id,
                        mid: out_mid,
                        pt: out_pt,
                        seq,
                        time,
                        marker: pkt.header.marker,
                        audio_level: ev.audio_level.zip(ev.voice_activity),
                        orientation: ev.video_orientation.map(|o| o as u8),
                        payload: pkt.payload.clone(),
                    }));
                    continue;
                }
                out.via_str0m_until = now.checked_add(VIA_STR0M_INTERVAL);
            }
            let mut api = dst.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(out_pt, seq.into(), time, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .ext_vals(pkt.header.ext_vals.clone())
                    .nackable(kind == MediaKind::Video),
            );
            // Counted once written: a copy the core seals is counted when sealed.
            self.stats.packets_forwarded += 1;
            self.stats.bytes_forwarded += pkt.payload.len() as u64;
            // Driven in arrival order: queued again if it already was, should copies the core
            // seals have been queued since (str0m releases its packet when driven).
            if !dst.dirty || dst.fast.is_some() {
                dst.dirty = true;
                self.work.push_back(Work::Drive(t));
            }
        }
        if let Some(m) = self.rooms.get_mut(&room) {
            *m = members;
        }
        if need_keyframe {
            self.keyframe_from(now, src_id, src_mid, KeyframeRequestKind::Pli, false);
        }
    }
}

impl Sfu {
    /// Seals one forwarded packet for its receiver and queues it, keeping video for NACKs.
    fn seal(&mut self, now: Instant, c: Outgoing) {
        let Some(p) = self.peers.get_mut(c.slot).and_then(|p| p.as_mut()) else {
            return;
        };
        if p.id != c.peer || !p.media_up {
            return;
        }
        let (Some(fast), Some((proto, source, destination))) = (p.fast.as_mut(), p.route) else {
            return;
        };
        let Some(out) = p.outs.iter_mut().find(|o| o.mid == c.mid) else {
            return;
        };
        let Some(info) = out.fast else {
            return;
        };
        let datagram = seal_copy(fast, &mut self.header, &mut self.spare, &c, &info);
        if datagram.is_empty() {
            return;
        }
        let len = c.payload.len();
        if out.kind == MediaKind::Video {
            while let Some(front) = out.sent.front() {
                let full = out.sent.len() >= RESEND_HISTORY;
                if !full && now.saturating_duration_since(front.at) <= RESEND_MAX_AGE {
                    break;
                }
                out.sent.pop_front();
            }
            out.sent.push_back(Sent {
                at: now,
                resends: 0,
                last_sent: now,
                copy: c,
                info,
            });
        }
        out.core_sent.0 = out.core_sent.0.wrapping_add(1);
        out.core_sent.1 = out.core_sent.1.wrapping_add(len as u32);
        self.transmits.push_back(Transmit {
            proto,
            source,
            destination,
            contents: datagram.into(),
        });
        self.stats.packets_sealed_by_core += 1;
        self.stats.packets_forwarded += 1;
        self.stats.bytes_forwarded += len as u64;
    }

    /// Reads an SRTCP datagram from a peer the core seals for, and answers the NACKs in it
    /// from what the core sealed (str0m, which gets the datagram too, answers for its own).
    fn on_srtcp(&mut self, slot: usize, now: Instant, datagram: &[u8]) {
        let Some(p) = self.peers[slot].as_mut() else {
            return;
        };
        let (Some(fast), Some((proto, source, destination))) = (p.fast.as_mut(), p.route) else {
            return;
        };
        if fast.open_rtcp(datagram, &mut self.rtcp).is_err() {
            return;
        }
        let transmits = &mut self.transmits;
        let header = &mut self.header;
        let spare = &mut self.spare;
        let (mut asked, mut resent) = (0usize, 0u64);
        srtp::for_each_nack(&self.rtcp, |ssrc, seq| {
            asked += 1;
            if asked > MAX_NACKED_PER_REPORT {
                return;
            }
            let Some(out) = p
                .outs
                .iter_mut()
                .find(|o| o.fast.is_some_and(|f| f.ssrc == ssrc))
            else {
                return;
            };
            let Some(sent) = out.sent.iter_mut().rev().find(|s| s.copy.seq as u16 == seq) else {
                return;
            };
            if sent.resends >= MAX_RESENDS
                || now.saturating_duration_since(sent.at) > RESEND_MAX_AGE
                || now.saturating_duration_since(sent.last_sent) < RESEND_SPACING
            {
                return;
            }
            let datagram = seal_copy(fast, header, spare, &sent.copy, &sent.info);
            if datagram.is_empty() {
                return;
            }
            sent.resends += 1;
            sent.last_sent = now;
            resent += 1;
            out.core_sent.0 = out.core_sent.0.wrapping_add(1);
            out.core_sent.1 = out.core_sent.1.wrapping_add(sent.copy.payload.len() as u32);
            transmits.push_back(Transmit {
                proto,
                source,
                destination,
                contents: datagram.into(),
            });
        });
        self.stats.packets_resent += resent;
    }
}

/// Whether a datagram on a peer's path is RTCP (RFC 5761 §4): RTP version 2 and a second
/// byte of 192–223, where RTCP's packet types 200–206 fall.
fn is_rtcp(d: &[u8]) -> bool {
    d.len() >= 8 && (128..=191).contains(&d[0]) && (192..=223).contains(&d[1])
}

/// Seals one copy for its receiver: the RTP header (into `header`, scratch) and the payload
/// under the receiver's keys, into a spare buffer if there is one. Empty if sealing failed.
fn seal_copy(
    fast: &mut srtp::FastSrtp,
    header: &mut Vec<u8>,
    spare: &mut Vec<Vec<u8>>,
    c: &Outgoing,
    info: &FastOut,
) -> Vec<u8> {
    write_header(header, c, info);
    let mut datagram = spare.pop().unwrap_or_default();
    fast.seal_rtp(header, &c.payload, info.ssrc, c.seq, &mut datagram);
    datagram
}

/// Writes the RTP header of a copy the core seals: fixed header, then the one-byte-form
/// extensions the receiver negotiated and the copy has values for (MID, audio level, video
/// orientation).
fn write_header(h: &mut Vec<u8>, c: &Outgoing, info: &FastOut) {
    h.clear();
    h.push(0x80);
    h.push(u8::from(c.marker) << 7 | (*c.pt & 0x7f));
    h.extend_from_slice(&(c.seq as u16).to_be_bytes());
    h.extend_from_slice(&c.time.to_be_bytes());
    h.extend_from_slice(&info.ssrc.to_be_bytes());
    let ext = h.len();
    h.extend_from_slice(&[0xbe, 0xde, 0, 0]);
    if let Some(id) = info.mid_id {
        let mid = &info.mid[..usize::from(info.mid_len)];
        h.push(id << 4 | (mid.len() - 1) as u8);
        h.extend_from_slice(mid);
    }
    if let (Some(id), Some((level, voice))) = (info.audio_level_id, c.audio_level) {
        h.push(id << 4);
        h.push(if voice { 0x80 } else { 0 } | (level.unsigned_abs() & 0x7f));
    }
    if let (Some(id), Some(o)) = (info.orientation_id, c.orientation) {
        h.push(id << 4);
        h.push(o);
    }
    if h.len() == ext + 4 {
        h.truncate(ext);
        return;
    }
    while (h.len() - ext) % 4 != 0 {
        h.push(0);
    }
    let words = ((h.len() - ext - 4) / 4) as u16;
    h[ext + 2..ext + 4].copy_from_slice(&words.to_be_bytes());
    h[0] |= 0x10;
}

/// What sealing needs of receiver `rtc`'s outgoing track `mid`: its SSRC and the ids of
/// the extensions the core writes, where negotiated in the one-byte form.
fn fast_out(rtc: &mut Rtc, mid: Mid, kind: MediaKind) -> Option<FastOut> {
    let ssrc = {
        let mut api = rtc.direct_api();
        *api.stream_tx_by_mid(mid, None)?.ssrc()
    };
    let exts = rtc.media(mid)?.remote_extmap();
    let id = |e: Extension| exts.id_of(e).filter(|id| (1..=14).contains(id));
    let mut bytes = [0u8; 16];
    let len = mid.len().min(16);
    bytes[..len].copy_from_slice(&mid.as_bytes()[..len]);
    Some(FastOut {
        ssrc,
        mid_id: id(Extension::RtpMid).filter(|_| (1..=16).contains(&mid.len())),
        mid: bytes,
        mid_len: len as u8,
        audio_level_id: id(Extension::AudioLevel).filter(|_| kind == MediaKind::Audio),
        orientation_id: id(Extension::VideoOrientation).filter(|_| kind == MediaKind::Video),
    })
}

impl Peer {
    /// Sends the next packet of each of its tracks through str0m ([`VIA_STR0M_INTERVAL`]).
    fn via_str0m_next(&mut self) {
        for out in &mut self.outs {
            out.via_str0m_until = None;
        }
    }

    fn add_media(&mut self, mid: Mid, kind: MediaKind, dir: Direction) {
        if kind != MediaKind::Audio && kind != MediaKind::Video {
            return;
        }
        // The direction is ours: sending means the peer receives on this m-line.
        let sending = dir.is_sending();
        let receiving = dir.is_receiving();
        match self.outs.iter().position(|o| o.mid == mid) {
            Some(i) if !sending => {
                self.outs.remove(i);
            }
            None if sending => self.outs.push(OutSlot {
                mid,
                kind,
                source: None,
                rewrite: SeqRewrite::default(),
                pt_map: Vec::new(),
                fast: None,
                via_str0m_until: None,
                sent: VecDeque::new(),
                core_sent: (0, 0),
            }),
            _ => {}
        }
        match self.ins.iter().position(|t| t.mid == mid) {
            Some(i) if !receiving => {
                self.ins.remove(i);
                self.ssrc_in.clear();
            }
            None if receiving => self.ins.push(InTrack {
                mid,
                kind,
                last_keyframe_request: None,
                specs: Vec::new(),
            }),
            _ => {}
        }
    }
}

/// The payload type `rtc` negotiated on `mid` for `spec` (same codec, clock rate and format
/// parameters; for H.264 the same packetization mode is enough).
fn match_pt(rtc: &Rtc, mid: Mid, spec: CodecSpec) -> Option<Pt> {
    let media = rtc.media(mid)?;
    let remote = media.remote_pts();
    let params = rtc.codec_config().params();
    let negotiated = || params.iter().filter(|c| remote.contains(&c.pt()));
    negotiated()
        .find(|c| c.spec() == spec)
        .or_else(|| {
            negotiated().find(|c| {
                let s = c.spec();
                s.codec == spec.codec
                    && s.clock_rate == spec.clock_rate
                    && s.format.packetization_mode == spec.format.packetization_mode
            })
        })
        .map(|c| c.pt())
}

fn validate_offer(sdp: &str) -> Result<SdpOffer, SfuError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(SfuError::InvalidSdp("longer than 32 KiB".into()));
    }
    let m_lines = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if m_lines == 0 {
        return Err(SfuError::InvalidSdp("no m-line".into()));
    }
    if m_lines > MAX_MEDIA_LINES {
        return Err(SfuError::InvalidSdp(format!(
            "{m_lines} m-lines; at most {MAX_MEDIA_LINES}"
        )));
    }
    if !sdp.contains("a=ice-ufrag:") || !sdp.contains("a=fingerprint:") {
        return Err(SfuError::InvalidSdp(
            "no ICE credentials or DTLS fingerprint".into(),
        ));
    }
    SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))
}

/// Whether an answer accepts at least one audio or video m-line (port not 0).
fn has_usable_media(answer: &str) -> bool {
    answer.lines().any(|l| {
        (l.starts_with("m=audio ") || l.starts_with("m=video "))
            && l.split(' ').nth(1).is_some_and(|port| port != "0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_buffers_are_kept_only_at_a_datagrams_size_and_up_to_the_cap() {
        let mut sfu = Sfu::new(Instant::now(), SfuConfig { candidates: vec![] });
        sfu.recycle(Vec::with_capacity(64));
        sfu.recycle(Vec::with_capacity(1 << 20));
        assert!(sfu.spare.is_empty(), "too small or too large: freed");
        for _ in 0..MAX_SPARE_BUFFERS + 10 {
            sfu.recycle(Vec::with_capacity(MAX_UDP_PAYLOAD));
        }
        assert_eq!(sfu.spare.len(), MAX_SPARE_BUFFERS);
    }

    fn feed(r: &mut SeqRewrite, ssrc: u32, seqs: &[u64]) -> Vec<Option<u64>> {
        seqs.iter()
            .map(|&s| r.map(Ssrc::from(ssrc), s, 0).map(|(o, _)| o))
            .collect()
    }

    #[test]
    fn no_outgoing_index_is_given_twice_across_source_switches_and_reordering() {
        let mut r = SeqRewrite::default();
        let mut issued = std::collections::HashSet::new();
        let mut take = |out: Vec<Option<u64>>| {
            for o in out.into_iter().flatten() {
                assert!(issued.insert(o), "index {o} issued twice");
            }
        };
        take(feed(&mut r, 1, &(100..=200).collect::<Vec<_>>()));
        // B's 5001 arrives before its 5000: 5000 would land on A's 200, so it is dropped.
        let b = feed(&mut r, 2, &[5001, 5000, 5002]);
        assert_eq!(b, vec![Some(201), None, Some(202)]);
        take(b);
        // Back to A, with a late packet of A's first run: dropped too.
        let a = feed(&mut r, 1, &[201, 150, 203, 202]);
        assert_eq!(
            a,
            vec![Some(203), None, Some(205), Some(204)],
            "reordering within a run keeps its numbers"
        );
        take(a);
        // Far in the past for the new run (an extended seq below its first): dropped, no
        // wrap to 2^64.
        assert_eq!(feed(&mut r, 3, &[70_000, 3]), vec![Some(206), None]);
    }

    #[test]
    fn a_track_starts_at_rollover_counter_zero_however_long_its_source_has_sent() {
        let mut r = SeqRewrite::default();
        let late = 5 * 65_536 + 1_234;
        assert_eq!(
            feed(&mut r, 1, &[late, late + 1]),
            vec![Some(1_234), Some(1_235)]
        );
        // Near the top of the first 2^16 it rolls over as the receiver expects.
        let mut r = SeqRewrite::default();
        assert_eq!(
            feed(&mut r, 1, &[65_535, 65_536, 65_537]),
            vec![Some(65_535), Some(65_536), Some(65_537)]
        );
        // The index never passes 48 bits.
        let mut r = SeqRewrite::default();
        r.map(Ssrc::from(1), 0, 0);
        assert_eq!(r.map(Ssrc::from(1), MAX_SRTP_INDEX + 1, 0), None);
    }
}
