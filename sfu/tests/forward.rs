//! The SFU core driven in memory: str0m clients stand in for browsers, datagrams are shuffled
//! by hand, and time only moves when the test moves it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use frontdesk_sfu::{PeerId, RoomId, Sfu, SfuConfig, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

const SFU_ADDR: &str = "10.0.0.1:7882";

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    received: Vec<(Mid, u16, Vec<u8>)>,
    /// What the last sender report on each received track said was sent: (mid, packets, bytes).
    reported: Vec<(Mid, u64, u64)>,
    keyframe_requests: usize,
    video: Option<Mid>,
    deadline: Instant,
}

impl Client {
    fn new(now: Instant, addr: &str) -> Client {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Client {
            rtc,
            addr,
            received: Vec::new(),
            reported: Vec::new(),
            keyframe_requests: 0,
            video: None,
            deadline: now,
        }
    }

    /// An offer with one audio and one video m-line in `dir`.
    fn offer(&mut self, dir: Direction) -> (String, str0m::change::SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        api.add_media(MediaKind::Audio, dir, None, None, None);
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        self.video = Some(video);
        (offer.to_sdp_string(), pending)
    }

    fn video_mid(&self) -> Mid {
        self.video.expect("offer() was called")
    }
}

struct World {
    now: Instant,
    sfu: Sfu,
    clients: Vec<Client>,
    events: Vec<SfuEvent>,
    /// Drop everything to and from this client index (a broken path).
    cut: Option<usize>,
    /// Hand each step's datagrams to the SFU in one `receive_batch` (as the UDP loop does
    /// with one `recvmmsg`) rather than one `receive` each.
    batched: bool,
    /// What clients sent while handling the SFU's datagrams; delivered on the next step.
    to_sfu: Vec<(SocketAddr, Vec<u8>)>,
    /// Drop the next this many SRTP (not SRTCP) datagrams to this client index (loss).
    lose_rtp_to: Option<(usize, usize)>,
    /// The SRTP datagrams dropped by `lose_rtp_to`, and those delivered to that client after.
    lost: Vec<Vec<u8>>,
    delivered_after_loss: Vec<Vec<u8>>,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        World {
            now,
            sfu: Sfu::new(
                now,
                SfuConfig {
                    candidates: vec![SFU_ADDR.parse().unwrap()],
                },
            ),
            clients: Vec::new(),
            events: Vec::new(),
            cut: None,
            batched: false,
            to_sfu: Vec::new(),
            lose_rtp_to: None,
            lost: Vec::new(),
            delivered_after_loss: Vec::new(),
        }
    }

    /// One publisher (client 0) and `receivers` receive-only peers in `room`, connected.
    fn broadcast(room: u128, receivers: usize) -> World {
        let mut w = World::new();
        w.join(room, Direction::SendOnly);
        for _ in 0..receivers {
            w.join(room, Direction::RecvOnly);
        }
        w.run(Duration::from_millis(1500));
        w
    }

    fn join(&mut self, room: u128, dir: Direction) -> usize {
        self.join_as(room, dir, false)
    }

    fn join_as(&mut self, room: u128, dir: Direction, watcher: bool) -> usize {
        let i = self.clients.len();
        let mut c = Client::new(self.now, &format!("10.0.1.{}:5000", i + 1));
        let (offer, pending) = c.offer(dir);
        let (room, peer) = (RoomId(room), PeerId(i as u64));
        let answer = if watcher {
            self.sfu.offer_watcher(self.now, room, peer, &offer)
        } else {
            self.sfu.offer(self.now, room, peer, &offer)
        }
        .unwrap();
        c.rtc
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        self.clients.push(c);
        i
    }

    /// Runs the network until `until`, in 1 ms steps.
    fn run(&mut self, dur: Duration) {
        let end = self.now + dur;
        while self.now < end {
            self.step();
            self.now += Duration::from_millis(1);
        }
    }

    fn step(&mut self) {
        let now = self.now;
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        // Datagrams clients sent while handling the SFU's last output go first.
        let mut batch = std::mem::take(&mut self.to_sfu);
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.deadline <= now {
                c.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
            self.poll_client(i, &mut batch);
        }
        if self.batched {
            self.sfu.receive_batch(
                now,
                Protocol::Udp,
                sfu_addr,
                batch.iter().map(|(a, d)| (*a, &d[..])),
            );
        } else {
            for (a, d) in &batch {
                self.sfu.receive(now, Protocol::Udp, *a, sfu_addr, d);
            }
        }
        self.sfu.timeout(now);
        let mut replies = Vec::new();
        while let Some(t) = self.sfu.poll_transmit() {
            let Some(i) = self.clients.iter().position(|c| c.addr == t.destination) else {
                continue;
            };
            if self.cut == Some(i) {
                continue;
            }
            let rtp = matches!(t.contents.first(), Some(128..=191))
                && !matches!(t.contents.get(1), Some(192..=223));
            if let Some((to, n)) = self.lose_rtp_to {
                if to == i && n > 0 && rtp {
                    self.lose_rtp_to = (n > 1).then_some((to, n - 1));
                    self.lost.push(t.contents.to_vec());
                    continue;
                }
            }
            if !self.lost.is_empty() && rtp {
                self.delivered_after_loss.push(t.contents.to_vec());
            }
            let c = &mut self.clients[i];
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: sfu_addr,
                    destination: c.addr,
                    contents: (&t.contents[..]).try_into().unwrap(),
                },
            );
            c.rtc.handle_input(input).unwrap();
            // str0m wants polling after every input (it holds one event at a time).
            self.poll_client(i, &mut replies);
        }
        self.to_sfu = replies;
        while let Some(e) = self.sfu.poll_event() {
            self.events.push(e);
        }
    }

    /// Polls client `i` until it waits; what it sends goes to `out` (unless its path is cut).
    fn poll_client(&mut self, i: usize, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let cut = self.cut == Some(i);
        let c = &mut self.clients[i];
        loop {
            match c.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    c.deadline = t;
                    break;
                }
                Output::Transmit(t) => {
                    if !cut {
                        out.push((c.addr, t.contents.to_vec()));
                    }
                }
                Output::Event(Event::RtpPacket(p)) => {
                    let mid = c
                        .rtc
                        .direct_api()
                        .stream_rx(&p.header.ssrc)
                        .map(|s| s.mid())
                        .unwrap();
                    c.received
                        .push((mid, p.header.sequence_number, p.payload.to_vec()));
                }
                Output::Event(Event::KeyframeRequest(_)) => c.keyframe_requests += 1,
                Output::Event(Event::MediaIngressStats(s)) => {
                    if let Some(r) = s.remote {
                        c.reported.retain(|(m, _, _)| *m != s.mid);
                        c.reported.push((s.mid, r.packets, r.bytes));
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn send_video(&mut self, from: usize, seq: u64, payload: &[u8]) {
        let now = self.now;
        let c = &mut self.clients[from];
        let mid = c.video_mid();
        let pt = c
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .unwrap()
            .pt();
        let mut api = c.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).unwrap();
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), (seq * 3000) as u32, now, payload.to_vec()).marker(true),
        );
    }

    /// Hands what client `i` sends now to the SFU as one batch, without driving the
    /// receivers (`Sfu::ingest`).
    fn ingest_from(&mut self, i: usize) {
        let now = self.now;
        let mut batch = Vec::new();
        self.clients[i]
            .rtc
            .handle_input(Input::Timeout(now))
            .unwrap();
        self.poll_client(i, &mut batch);
        assert!(!batch.is_empty());
        self.sfu.ingest(
            now,
            Protocol::Udp,
            SFU_ADDR.parse().unwrap(),
            batch.iter().map(|(a, d)| (*a, &d[..])),
        );
    }

    /// The payloads client `i` received, in order, as text.
    fn payloads(&self, i: usize) -> Vec<String> {
        self.clients[i]
            .received
            .iter()
            .map(|(_, _, p)| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    fn connected(&self, peer: u64) -> bool {
        self.events.contains(&SfuEvent::Connected(PeerId(peer)))
    }
}

fn two_party_call() -> World {
    let mut w = World::new();
    w.join(7, Direction::SendRecv);
    w.join(7, Direction::SendRecv);
    w.run(Duration::from_millis(1500));
    assert!(w.connected(0) && w.connected(1), "events: {:?}", w.events);
    w
}

#[test]
fn video_from_one_participant_reaches_the_other_and_only_the_other() {
    let mut w = two_party_call();
    for seq in 1..=20 {
        w.send_video(0, seq, format!("frame {seq}").as_bytes());
        w.run(Duration::from_millis(33));
    }
    let got: Vec<_> = w.clients[1]
        .received
        .iter()
        .filter(|(mid, _, _)| *mid == w.clients[1].video_mid())
        .collect();
    assert!(got.len() >= 19, "received {} of 20", got.len());
    assert!(got.iter().any(|(_, _, p)| p == b"frame 20"));
    assert!(
        w.clients[0].received.is_empty(),
        "echoed back to the sender"
    );
    let stats = w.sfu.stats();
    assert!(stats.packets_forwarded >= 19);
}

#[test]
fn a_new_receiver_makes_the_sender_send_a_keyframe() {
    let mut w = two_party_call();
    w.send_video(0, 1, b"x");
    w.run(Duration::from_millis(50));
    assert!(
        w.clients[0].keyframe_requests >= 1,
        "the SFU asks the sender for a keyframe when it starts forwarding to someone"
    );
    let before = w.clients[0].keyframe_requests;
    let mid = w.clients[1].video_mid().to_string();
    w.sfu
        .request_keyframe(w.now + Duration::from_secs(1), PeerId(1), &mid)
        .unwrap();
    w.run(Duration::from_millis(50));
    assert!(w.clients[0].keyframe_requests > before);
}

#[test]
fn broadcast_reaches_every_receive_only_peer() {
    let mut w = World::broadcast(9, 5);
    for seq in 1..=10 {
        w.send_video(0, seq, b"v");
        w.run(Duration::from_millis(20));
    }
    for c in &w.clients[1..] {
        assert!(
            c.received.len() >= 9,
            "a subscriber got {}",
            c.received.len()
        );
    }
}

#[test]
fn a_watcher_receives_the_call_and_what_it_sends_reaches_no_one() {
    let mut w = two_party_call();
    let watcher = w.join_as(7, Direction::SendRecv, true);
    w.run(Duration::from_millis(1500));
    assert!(w.connected(watcher as u64), "events: {:?}", w.events);
    for seq in 1..=10 {
        w.send_video(0, seq, b"participant");
        w.send_video(watcher, seq, b"watcher");
        w.run(Duration::from_millis(20));
    }
    let from = |c: &Client, p: &[u8]| c.received.iter().filter(|(_, _, x)| x == p).count();
    assert!(from(&w.clients[watcher], b"participant") >= 9);
    assert!(from(&w.clients[1], b"participant") >= 9);
    for c in &w.clients {
        assert_eq!(from(c, b"watcher"), 0, "a watcher's media was forwarded");
    }
    // A watcher stays one: its id cannot be reused as a participant's.
    let (offer, _) = Client::new(w.now, "10.0.9.1:5000").offer(Direction::SendRecv);
    assert!(w
        .sfu
        .offer(w.now, RoomId(7), PeerId(watcher as u64), &offer)
        .is_err());
}

#[test]
fn rooms_do_not_leak_into_each_other() {
    let mut w = World::new();
    w.join(1, Direction::SendRecv);
    w.join(2, Direction::SendRecv);
    w.run(Duration::from_millis(1500));
    for seq in 1..=5 {
        w.send_video(0, seq, b"secret");
        w.run(Duration::from_millis(20));
    }
    assert!(w.clients[1].received.is_empty());
}

#[test]
fn ice_restart_renegotiates_and_media_flows_again() {
    let mut w = two_party_call();
    // Break the path to the visitor until the SFU's consent checks give up on it.
    w.cut = Some(0);
    let t0 = w.now;
    while !w.events.contains(&SfuEvent::Disconnected(PeerId(0))) {
        w.run(Duration::from_millis(100));
        assert!(w.now - t0 < Duration::from_secs(20), "consent never failed");
    }
    w.cut = None;
    let c = &mut w.clients[0];
    let mut api = c.rtc.sdp_api();
    api.ice_restart(false);
    let (offer, pending) = api.apply().unwrap();
    let answer = w
        .sfu
        .offer(w.now, RoomId(7), PeerId(0), &offer.to_sdp_string())
        .unwrap();
    w.clients[0]
        .rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    let n = w.clients[1].received.len();
    for seq in 100..110 {
        w.send_video(0, seq, b"after");
        w.run(Duration::from_millis(50));
    }
    assert!(w.clients[1].received.len() >= n + 9);
    assert_eq!(
        w.events.last(),
        Some(&SfuEvent::Connected(PeerId(0))),
        "events: {:?}",
        w.events
    );
}

#[test]
fn bad_offers_and_candidates_get_typed_errors() {
    let mut w = two_party_call();
    let now = w.now;
    let cases = [
        "",
        "v=0",
        "garbage\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        &"x".repeat(40_000),
    ];
    for sdp in cases {
        let e = w.sfu.offer(now, RoomId(3), PeerId(50), sdp).unwrap_err();
        assert_eq!(e.code(), "invalid_sdp", "{sdp:.40}");
    }
    // Five m-lines is over the limit.
    let mut c = Client::new(now, "10.0.9.9:1");
    let mut api = c.rtc.sdp_api();
    for _ in 0..5 {
        api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    }
    let (offer, _) = api.apply().unwrap();
    let e = w
        .sfu
        .offer(now, RoomId(3), PeerId(51), &offer.to_sdp_string())
        .unwrap_err();
    assert_eq!(e.code(), "invalid_sdp");
    assert!(!w.sfu.has_peer(PeerId(50)) && !w.sfu.has_peer(PeerId(51)));

    for cand in [
        "candidate:nonsense",
        "candidate:1 1 udp x 1.2.3.4 5 typ host",
    ] {
        let e = w.sfu.add_candidate(PeerId(0), cand).unwrap_err();
        assert_eq!(e.code(), "invalid_candidate");
    }
    assert!(w.sfu.add_candidate(PeerId(0), "").is_ok());
    assert_eq!(
        w.sfu
            .add_candidate(PeerId(99), "candidate:1 1 udp 1 1.2.3.4 5 typ host")
            .unwrap_err()
            .code(),
        "not_in_call"
    );
    assert_eq!(
        w.sfu
            .request_keyframe(now, PeerId(0), "7")
            .unwrap_err()
            .code(),
        "unknown_track"
    );
    // The same peer id cannot move to another room.
    let (offer, _) = Client::new(now, "10.0.9.8:1").offer(Direction::SendRecv);
    assert_eq!(
        w.sfu
            .offer(now, RoomId(8), PeerId(0), &offer)
            .unwrap_err()
            .code(),
        "not_in_call"
    );
}

#[test]
fn garbage_datagrams_are_counted_and_dropped() {
    let mut w = two_party_call();
    let before = w.sfu.stats().datagrams_unmatched;
    let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
    for junk in [&b""[..], b"\x00\x01", &[0x80; 1600], &[0x16; 40]] {
        w.sfu.receive(
            w.now,
            Protocol::Udp,
            "10.9.9.9:9".parse().unwrap(),
            sfu_addr,
            junk,
        );
    }
    assert_eq!(w.sfu.stats().datagrams_unmatched, before + 4);
}

#[test]
fn a_thousand_joins_and_leaves_leave_nothing_behind() {
    let mut w = World::new();
    let now = w.now;
    let (offer, _) = Client::new(now, "10.0.5.5:5").offer(Direction::SendRecv);
    for i in 0..1000u64 {
        w.sfu
            .offer(now, RoomId(u128::from(i / 2)), PeerId(i), &offer)
            .unwrap();
        if i % 2 == 1 {
            w.sfu.remove_peer(PeerId(i - 1));
            w.sfu.remove_peer(PeerId(i));
        }
    }
    let s = w.sfu.stats();
    assert_eq!((s.peers, s.rooms), (0, 0));
    assert!(w.sfu.next_deadline().is_none());
}

#[test]
fn a_receiver_forwarded_to_just_after_a_keyframe_request_still_gets_one_of_its_own() {
    let mut w = World::new();
    w.join(11, Direction::SendOnly);
    w.join(11, Direction::RecvOnly);
    w.run(Duration::from_millis(1500));
    w.send_video(0, 1, b"v");
    w.run(Duration::from_millis(500));
    // A second receiver comes up (nothing is forwarded to it yet).
    w.join(11, Direction::RecvOnly);
    while !w.connected(2) {
        w.run(Duration::from_millis(5));
    }
    // The first receiver asks for a keyframe (its decoder lost one, say): the request goes.
    let before = w.clients[0].keyframe_requests;
    let mid = w.clients[1].video_mid().to_string();
    w.sfu.request_keyframe(w.now, PeerId(1), &mid).unwrap();
    w.run(Duration::from_millis(5));
    let asked = w.clients[0].keyframe_requests;
    assert_eq!(
        asked,
        before + 1,
        "the receiver's request was not passed on"
    );
    // Forwarding to the second receiver starts inside the request interval: its request is
    // held back (the sender may have answered the first before it was forwarded to)...
    w.send_video(0, 2, b"v");
    w.run(Duration::from_millis(20));
    assert_eq!(
        w.clients[0].keyframe_requests, asked,
        "a second request went out inside the interval"
    );
    // ...and sent once the interval has passed, once.
    w.run(Duration::from_millis(400));
    assert_eq!(
        w.clients[0].keyframe_requests,
        asked + 1,
        "the held-back request was dropped or sent twice"
    );
}

#[test]
fn a_batch_of_datagrams_is_forwarded_whole_and_in_order() {
    let mut w = World::broadcast(12, 3);
    w.batched = true;
    // Eight packets per step reach the SFU as one batch each.
    let mut seq = 1;
    for _ in 0..10 {
        for _ in 0..8 {
            w.send_video(0, seq, format!("p{seq}").as_bytes());
            seq += 1;
        }
        w.run(Duration::from_millis(20));
    }
    for c in &w.clients[1..] {
        let got: Vec<&[u8]> = c.received.iter().map(|(_, _, p)| &p[..]).collect();
        let want: Vec<String> = (1..seq).map(|s| format!("p{s}")).collect();
        let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(got, want, "a subscriber's packets");
        let seqs: Vec<u16> = c.received.iter().map(|(_, s, _)| *s).collect();
        assert!(
            seqs.windows(2).all(|p| p[1] == p[0].wrapping_add(1)),
            "sequence numbers out of order or with gaps: {seqs:?}"
        );
    }
}

#[test]
fn answers_carry_only_the_header_extensions_someone_reads() {
    let now = Instant::now();
    let mut sfu = Sfu::new(
        now,
        SfuConfig {
            candidates: vec![SFU_ADDR.parse().unwrap()],
        },
    );
    let mut offer = |peer: u64, watcher: bool| {
        let mut c = Client::new(now, &format!("10.0.2.{}:5000", peer + 1));
        let (sdp, _) = c.offer(Direction::SendRecv);
        assert!(sdp.contains("abs-send-time") && sdp.contains("transport-wide-cc"));
        if watcher {
            sfu.offer_watcher(now, RoomId(1), PeerId(peer), &sdp)
        } else {
            sfu.offer(now, RoomId(1), PeerId(peer), &sdp)
        }
        .unwrap()
    };
    // A participant publishes: its browser estimates its send rate from transport-wide
    // feedback, so that stays; nothing reads abs-send-time.
    let participant = offer(0, false);
    assert!(participant.contains("transport-wide-cc"), "{participant}");
    assert!(participant.contains("urn:ietf:params:rtp-hdrext:sdes:mid"));
    assert!(!participant.contains("abs-send-time"), "{participant}");
    // A watcher sends nothing: no transport-wide sequence numbers either.
    let watcher = offer(1, true);
    assert!(!watcher.contains("transport-wide-cc"), "{watcher}");
    assert!(!watcher.contains("abs-send-time"), "{watcher}");
    assert!(watcher.contains("urn:ietf:params:rtp-hdrext:sdes:mid"));
}

#[test]
fn ingested_packets_go_out_a_slice_of_receivers_at_a_time() {
    let mut w = World::broadcast(13, 5);
    // One packet from the publisher, handed in without driving its receivers.
    w.send_video(0, 1, b"sliced");
    let now = w.now;
    w.ingest_from(0);
    // Nothing reaches a receiver until it is driven; two at a time, five receivers take at
    // least three slices, each sending to no more receivers than it drove.
    let publisher = w.clients[0].addr;
    while let Some(t) = w.sfu.poll_transmit() {
        assert_eq!(
            t.destination, publisher,
            "sent to a receiver before being driven"
        );
    }
    let mut slices = Vec::new();
    loop {
        let more = w.sfu.drive_pending(now, 2);
        let mut to = std::collections::HashSet::new();
        while let Some(t) = w.sfu.poll_transmit() {
            if t.destination != publisher {
                to.insert(t.destination);
            }
        }
        slices.push(to.len());
        if !more {
            break;
        }
    }
    // (A slice may also drive the publisher, dirty with feedback of its own.)
    assert!(
        slices.iter().all(|&n| n <= 2),
        "receivers per slice: {slices:?}"
    );
    assert_eq!(
        slices.iter().sum::<usize>(),
        5,
        "receivers per slice: {slices:?}"
    );
    assert!(slices.len() >= 3, "receivers per slice: {slices:?}");
}

#[test]
fn a_batchs_copies_go_out_receiver_by_receiver_each_in_arrival_order() {
    let mut w = World::broadcast(15, 4);
    // Past the first packets of the track, which str0m sends.
    for seq in 1..=5u64 {
        w.send_video(0, seq, format!("w{seq}").as_bytes());
        w.run(Duration::from_millis(10));
    }
    // Three packets from the publisher, handed in as one batch.
    for seq in 6..=8u64 {
        w.send_video(0, seq, format!("b{seq}").as_bytes());
    }
    let now = w.now;
    w.ingest_from(0);
    assert_eq!(w.sfu.pending(), 4, "receivers waiting");
    let publisher = w.clients[0].addr;
    let mut order = Vec::new();
    let mut sent = Vec::new();
    loop {
        let more = w.sfu.drive_pending(now, 2);
        let mut slice = std::collections::HashSet::new();
        while let Some(t) = w.sfu.poll_transmit() {
            let rtp = matches!(t.contents.first(), Some(128..=191))
                && !matches!(t.contents.get(1), Some(192..=223));
            if t.destination != publisher && rtp {
                order.push(t.destination);
                slice.insert(t.destination);
            }
            sent.push(t);
        }
        assert!(
            slice.len() <= 2,
            "a slice sent to {} receivers",
            slice.len()
        );
        if !more {
            break;
        }
    }
    // Each receiver's three copies one after the other, four receivers.
    let runs: Vec<(SocketAddr, usize)> = order
        .chunk_by(|a, b| a == b)
        .map(|r| (r[0], r.len()))
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|&(_, n)| n == 3), "{runs:?}");
    // And in the order they came: every receiver gets them intact, in sequence.
    for t in sent {
        let Some(i) = w.clients.iter().position(|c| c.addr == t.destination) else {
            continue;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: t.source,
                destination: t.destination,
                contents: (&t.contents[..]).try_into().unwrap(),
            },
        );
        w.clients[i].rtc.handle_input(input).unwrap();
        let mut replies = Vec::new();
        w.poll_client(i, &mut replies);
    }
    let want: Vec<String> = (1..=5)
        .map(|s| format!("w{s}"))
        .chain((6..=8).map(|s| format!("b{s}")))
        .collect();
    for i in 1..w.clients.len() {
        assert_eq!(w.payloads(i), want);
    }
}

#[test]
fn the_core_seals_most_copies_and_str0m_still_sends_some_of_each_track() {
    let mut w = World::broadcast(14, 2);
    let before = w.sfu.stats();
    for seq in 1..=200u64 {
        w.send_video(0, seq, format!("v{seq}").as_bytes());
        w.run(Duration::from_millis(10));
    }
    let forwarded = w.sfu.stats().packets_forwarded - before.packets_forwarded;
    let sealed = w.sfu.stats().packets_sealed_by_core - before.packets_sealed_by_core;
    assert_eq!(forwarded, 400);
    // 2 s at one packet per 0.5 s through str0m per receiver: about 4 of each 200.
    assert!(
        (380..400).contains(&sealed),
        "sealed by the core: {sealed} of {forwarded}"
    );
    let want: Vec<String> = (1..=200).map(|s| format!("v{s}")).collect();
    for i in 1..w.clients.len() {
        assert_eq!(w.payloads(i), want, "every packet, in order, intact");
    }
}

#[test]
fn sender_reports_count_the_copies_the_core_sealed_as_well_as_str0ms() {
    let mut w = World::broadcast(16, 2);
    let mut bytes = 0;
    for seq in 1..=300u64 {
        let payload = format!("video packet {seq}");
        bytes += payload.len() as u64;
        w.send_video(0, seq, payload.as_bytes());
        w.run(Duration::from_millis(10));
    }
    // str0m sent about 1 in 20 of these; its next reports (every second or so) must count
    // all 300.
    w.run(Duration::from_millis(2500));
    let sealed = w.sfu.stats().packets_sealed_by_core;
    assert!(sealed > 500, "the core sealed {sealed} of 600");
    for c in &w.clients[1..] {
        let video = c.video.unwrap();
        let got = c.received.iter().filter(|(m, _, _)| *m == video).count();
        assert_eq!(got, 300);
        let report = c.reported.iter().find(|(m, _, _)| *m == video);
        assert_eq!(
            report.map(|r| (r.1, r.2)),
            Some((300, bytes)),
            "the last sender report's packet and octet counts"
        );
    }
}

#[test]
fn a_lost_copy_the_core_sealed_is_resent_on_the_receivers_nack() {
    let mut w = World::broadcast(15, 1);
    for seq in 1..=20u64 {
        w.send_video(0, seq, format!("v{seq}").as_bytes());
        w.run(Duration::from_millis(10));
    }
    // The next two copies to the subscriber are lost on the way.
    w.lose_rtp_to = Some((1, 2));
    for seq in 21..=40u64 {
        w.send_video(0, seq, format!("v{seq}").as_bytes());
        w.run(Duration::from_millis(10));
    }
    w.run(Duration::from_millis(500));
    assert_eq!(w.lose_rtp_to, None, "two copies were dropped");
    let stats = w.sfu.stats();
    assert!(
        stats.packets_resent >= 2,
        "resent on NACK: {}",
        stats.packets_resent
    );
    let mut got: Vec<String> = w.clients[1]
        .received
        .iter()
        .map(|(_, _, p)| String::from_utf8_lossy(p).into_owned())
        .collect();
    got.sort_by_key(|p| p[1..].parse::<u32>().unwrap());
    got.dedup();
    let want: Vec<String> = (1..=40).map(|s| format!("v{s}")).collect();
    assert_eq!(got, want, "the lost copies arrive after all");
    // A resend is sealed again from what the core kept: the very datagram that was lost (one
    // nonce never seals two different packets).
    assert_eq!(w.lost.len(), 2);
    for lost in &w.lost {
        assert!(
            w.delivered_after_loss.contains(lost),
            "a resend differs from the lost datagram"
        );
    }
}

#[test]
fn timers_run_a_slice_of_peers_at_a_time_until_none_is_due() {
    let mut w = World::broadcast(18, 10);
    let later = w.now + Duration::from_millis(1500);
    assert!(w.sfu.next_deadline().unwrap() <= later);
    // One peer per call: each call but the last says more are due, and when one says none
    // is, none is.
    let mut slices = 0;
    while w.sfu.timeout_some(later, 1) {
        slices += 1;
        assert!(slices <= 11, "a slice drove no peer");
    }
    assert!(
        slices >= 1,
        "several of the 11 peers were due, so one peer was not all"
    );
    assert!(
        w.sfu.next_deadline().unwrap() > later,
        "a due peer was left"
    );
    // And the whole round at once reports nothing left.
    let much_later = later + Duration::from_millis(1500);
    assert!(!w.sfu.timeout_some(much_later, usize::MAX));
}
