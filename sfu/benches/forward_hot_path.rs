//! The forwarding hot path of the SFU core, in memory: one SRTP datagram from a connected
//! publisher in, N SRTP-protected RTP packets out (one per receive-only subscriber).
//!
//!   cargo bench -p frontdesk-sfu --bench forward_hot_path
//!
//! No sockets and a fake clock, as in `tests/forward.rs`: one publisher and N subscribers are
//! str0m peers connected to the `Sfu` by handing datagrams across by hand. The publisher's str0m
//! client then writes ~1,100-byte VP8 RTP packets, and the datagrams it would send are kept in a
//! pool. SRTP replay protection rejects a datagram seen twice, so every iteration feeds a fresh
//! one; the pool is refilled outside the timed region when it runs out. The clock is frozen
//! while measuring, so no timer-driven output (RTCP, consent checks) mixes into the count.
//!
//! Timed per iteration: `Sfu::receive` (SRTP unprotect, demux, rewrite, `write_rtp` to N
//! streams, SRTP protect N times) and draining `poll_transmit` (handing the N datagrams'
//! buffers back with `Sfu::recycle`, as the server's loop does after sending them).
//!
//! The `shards` group runs 1 and 2 such cores (10 subscribers each) on as many threads at once
//! and reports the aggregate forwarded packets/s:
//!
//!   cargo bench -p frontdesk-sfu --bench forward_hot_path -- shards

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use frontdesk_sfu::{PeerId, RoomId, Sfu, SfuConfig, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Input, Output, Rtc};

const SFU_ADDR: &str = "10.0.0.1:7882";
const PAYLOAD: usize = 1_100;
/// Datagrams generated per refill of the pool.
const POOL: usize = 50_000;

struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    video: Mid,
    deadline: Instant,
}

struct Bench {
    now: Instant,
    sfu: Sfu,
    sfu_addr: SocketAddr,
    clients: Vec<Client>,
    connected: usize,
    /// Next RTP sequence number of the publisher.
    seq: u64,
    vp8: Pt,
    pool: Vec<Vec<u8>>,
    next: usize,
}

impl Bench {
    /// One publisher (client 0) and `subscribers` receive-only peers, all connected.
    fn new(subscribers: usize) -> Bench {
        let now = Instant::now();
        let sfu_addr: SocketAddr = SFU_ADDR.parse().unwrap();
        let mut sfu = Sfu::new(
            now,
            SfuConfig {
                candidates: vec![sfu_addr],
            },
        );
        let mut clients = Vec::new();
        for i in 0..=subscribers {
            let addr: SocketAddr = format!("10.0.{}.{}:5000", 1 + i / 200, 1 + i % 200)
                .parse()
                .unwrap();
            let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            let dir = if i == 0 {
                Direction::SendOnly
            } else {
                Direction::RecvOnly
            };
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, dir, None, None, None);
            let video = api.add_media(MediaKind::Video, dir, None, None, None);
            let (offer, pending) = api.apply().unwrap();
            let answer = sfu
                .offer(now, RoomId(1), PeerId(i as u64), &offer.to_sdp_string())
                .unwrap();
            rtc.sdp_api()
                .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
                .unwrap();
            clients.push(Client {
                rtc,
                addr,
                video,
                deadline: now,
            });
        }
        let vp8 = clients[0]
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        let mut b = Bench {
            now,
            sfu,
            sfu_addr,
            clients,
            connected: 0,
            seq: 1,
            vp8,
            pool: Vec::new(),
            next: 0,
        };
        let t0 = b.now;
        while b.connected < subscribers + 1 {
            b.step();
            b.now += Duration::from_millis(1);
            assert!(
                b.now - t0 < Duration::from_secs(10),
                "only {} of {} peers connected",
                b.connected,
                subscribers + 1
            );
        }
        // Let the handshakes settle, then send some video through the whole network so that
        // the SFU's one-off work (output binding, keyframe request) is done before measuring.
        b.run(Duration::from_millis(200));
        for _ in 0..20 {
            b.write_video(1);
            b.run(Duration::from_millis(10));
        }
        b.run(Duration::from_millis(100));
        // The clock stops here: whatever is due now is done now, so nothing falls due later.
        b.step();
        b
    }

    fn run(&mut self, dur: Duration) {
        let end = self.now + dur;
        while self.now < end {
            self.step();
            self.now += Duration::from_millis(1);
        }
    }

    /// One millisecond of the whole network: every client and the SFU, datagrams delivered.
    fn step(&mut self) {
        let now = self.now;
        for c in &mut self.clients {
            if c.deadline <= now {
                c.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
            loop {
                match c.rtc.poll_output().unwrap() {
                    Output::Timeout(t) => {
                        c.deadline = t;
                        break;
                    }
                    Output::Transmit(t) => {
                        self.sfu
                            .receive(now, Protocol::Udp, c.addr, self.sfu_addr, &t.contents)
                    }
                    Output::Event(_) => {}
                }
            }
        }
        self.sfu.timeout(now);
        while let Some(t) = self.sfu.poll_transmit() {
            let Some(c) = self.clients.iter_mut().find(|c| c.addr == t.destination) else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: self.sfu_addr,
                    destination: c.addr,
                    contents: (&t.contents[..]).try_into().unwrap(),
                },
            );
            c.rtc.handle_input(input).unwrap();
        }
        while let Some(e) = self.sfu.poll_event() {
            if matches!(e, SfuEvent::Connected(_)) {
                self.connected += 1;
            }
        }
    }

    /// The publisher writes `n` video packets (queued in its str0m, sent on the next poll).
    fn write_video(&mut self, n: usize) {
        let now = self.now;
        let c = &mut self.clients[0];
        let mut api = c.rtc.direct_api();
        let tx = api.stream_tx_by_mid(c.video, None).unwrap();
        for _ in 0..n {
            let seq = self.seq;
            self.seq += 1;
            let mut payload = vec![0u8; PAYLOAD];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            tx.write_rtp(
                RtpWrite::new(self.vp8, seq.into(), (seq * 3000) as u32, now, payload).marker(true),
            );
        }
    }

    /// Refills the pool with `POOL` fresh SRTP datagrams from the publisher, clock frozen.
    fn refill(&mut self) {
        self.pool.clear();
        self.next = 0;
        let now = self.now;
        while self.pool.len() < POOL {
            self.write_video(100);
            let c = &mut self.clients[0];
            let had = self.pool.len();
            // Queued RTP leaves str0m on the next timeout handling, at the same instant.
            c.rtc.handle_input(Input::Timeout(now)).unwrap();
            loop {
                match c.rtc.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        if is_rtp(&t.contents) {
                            self.pool.push(t.contents.to_vec());
                        } else {
                            // Anything else (RTCP, STUN) goes straight in, outside the timing.
                            self.sfu.receive(
                                now,
                                Protocol::Udp,
                                c.addr,
                                self.sfu_addr,
                                &t.contents,
                            );
                            while self.sfu.poll_transmit().is_some() {}
                        }
                    }
                    Output::Event(_) => {}
                }
            }
            assert_eq!(self.pool.len() - had, 100, "the publisher sent its packets");
        }
    }

    /// Feeds the next pooled datagram; returns how many datagrams the SFU sent out for it.
    #[inline]
    fn forward_one(&mut self) -> usize {
        let src = self.clients[0].addr;
        let d = &self.pool[self.next];
        self.next += 1;
        self.sfu
            .receive(self.now, Protocol::Udp, src, self.sfu_addr, d);
        // str0m's null pacer releases what `receive` queued for the subscribers on their next
        // timeout, due at once; the server's loop (src/media.rs) calls this right after.
        self.sfu.timeout(self.now);
        let mut out = 0;
        while let Some(t) = self.sfu.poll_transmit() {
            out += 1;
            // As the server's loop does once the datagram is sent.
            self.sfu.recycle(std::hint::black_box(t).contents.into());
        }
        out
    }
}

/// RTP, not RTCP (RFC 5761: payload types 64–95 with the marker bit are RTCP).
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..192).contains(&d[0]) && !(64..96).contains(&(d[1] & 0x7f))
}

fn forward_hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_hot_path");
    for n in [1usize, 10, 50] {
        let mut b = Bench::new(n);
        b.refill();
        // The first datagram on the stopped clock also sends one transport-cc feedback (due at
        // this instant) to the publisher; after a few, only forwarded media comes out.
        for _ in 0..10 {
            b.forward_one();
        }
        // Checked once, untimed: every packet in comes out once per subscriber, to each of them.
        let before = b.sfu.stats().packets_forwarded;
        for _ in 0..100 {
            let src = b.clients[0].addr;
            let d = b.pool[b.next].clone();
            b.next += 1;
            b.sfu.receive(b.now, Protocol::Udp, src, b.sfu_addr, &d);
            b.sfu.timeout(b.now);
            let mut dests: Vec<SocketAddr> = Vec::new();
            while let Some(t) = b.sfu.poll_transmit() {
                assert!(
                    t.contents.len() > PAYLOAD,
                    "{} bytes to {}",
                    t.contents.len(),
                    t.destination
                );
                dests.push(t.destination);
            }
            dests.sort();
            dests.dedup();
            assert_eq!(dests.len(), n, "one datagram to each subscriber");
            assert!(dests.iter().all(|a| *a != src));
        }
        assert_eq!(b.sfu.stats().packets_forwarded - before, 100 * n as u64);

        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |bencher| {
            bencher.iter_custom(|iters| {
                let mut left = iters;
                let mut spent = Duration::ZERO;
                while left > 0 {
                    if b.next == b.pool.len() {
                        b.refill();
                    }
                    let k = left.min((b.pool.len() - b.next) as u64);
                    let mut out = 0;
                    let start = Instant::now();
                    for _ in 0..k {
                        out += b.forward_one();
                    }
                    spent += start.elapsed();
                    assert_eq!(out as u64, k * n as u64, "lost or extra datagrams");
                    left -= k;
                }
                spent
            })
        });
    }
    group.finish();
}

/// Subscribers per shard in the scaling run.
const SHARD_SUBSCRIBERS: usize = 10;

/// Sharding as in the server (`src/media.rs`): K independent `Sfu` cores, each with its own
/// publisher and 10 subscribers, each driven by its own OS thread at the same time. One
/// iteration is one packet into every shard (K × 10 forwarded), so criterion's elements/s is
/// the aggregate forwarding rate; 2 shards on 2 threads against 1 on 1 shows how it scales.
fn shards(c: &mut Criterion) {
    let mut group = c.benchmark_group("shards");
    for k in [1usize, 2] {
        let mut benches: Vec<Bench> = (0..k)
            .map(|_| {
                let mut b = Bench::new(SHARD_SUBSCRIBERS);
                b.refill();
                for _ in 0..10 {
                    b.forward_one();
                }
                b
            })
            .collect();
        group.throughput(Throughput::Elements((k * SHARD_SUBSCRIBERS) as u64));
        group.bench_function(BenchmarkId::new("threads", k), |bencher| {
            bencher.iter_custom(|iters| {
                let mut left = iters;
                let mut spent = Duration::ZERO;
                while left > 0 {
                    for b in benches.iter_mut() {
                        if b.next == b.pool.len() {
                            b.refill();
                        }
                    }
                    let room = benches.iter().map(|b| b.pool.len() - b.next).min();
                    let chunk = left.min(room.unwrap_or(0) as u64);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for b in benches.iter_mut() {
                            s.spawn(move || {
                                let mut out = 0;
                                for _ in 0..chunk {
                                    out += b.forward_one();
                                }
                                assert_eq!(out as u64, chunk * SHARD_SUBSCRIBERS as u64);
                            });
                        }
                    });
                    spent += start.elapsed();
                    left -= chunk;
                }
                spent
            })
        });
    }
    group.finish();
}

/// Forwards `k` pooled packets, untimed: the unit of work for an instruction count under
/// callgrind (`--toggle-collect=*count_run*`), steadier than wall time on a shared machine.
#[inline(never)]
fn count_run(b: &mut Bench, k: usize) -> usize {
    (0..k).map(|_| b.forward_one()).sum()
}

/// `FORWARD_HOT_PATH_COUNT=N:K`: set up N subscribers, forward K packets and exit (for
/// `valgrind --tool=callgrind --toggle-collect=*count_run*`; divide the Ir by K).
fn counted() -> bool {
    let Ok(v) = std::env::var("FORWARD_HOT_PATH_COUNT") else {
        return false;
    };
    let (n, k) = v
        .split_once(':')
        .expect("FORWARD_HOT_PATH_COUNT=subscribers:packets");
    let (n, k): (usize, usize) = (n.parse().unwrap(), k.parse().unwrap());
    let mut b = Bench::new(n);
    b.refill();
    assert!(
        k + 10 <= b.pool.len(),
        "at most {} packets",
        b.pool.len() - 10
    );
    for _ in 0..10 {
        b.forward_one();
    }
    let out = count_run(&mut b, k);
    assert_eq!(out, k * n);
    println!("forwarded {k} packets to {n} subscribers");
    true
}

criterion_group!(benches, forward_hot_path, shards);

fn main() {
    if counted() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
