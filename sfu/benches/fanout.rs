//! One publisher to N subscribers over UDP on loopback: what one forwarded packet costs the SFU.
//!
//!   cargo bench -p frontdesk-sfu --bench fanout -- [--subscribers 10] [--seconds 10] [--fps 30]
//!
//! The SFU core runs on a thread of its own with one UDP socket, as in the server; the publisher
//! and subscribers are str0m peers (DTLS-SRTP, ICE) on another thread, each with its own socket.
//! The publisher sends video as ~1,100-byte RTP packets (≈1.2 Mbit/s at 30 fps) and Opus-sized
//! audio at 50 packets/s. The SFU thread's CPU time comes from /proc/thread-self/stat.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdesk_sfu::{PeerId, Protocol, RoomId, Sfu, SfuConfig};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::Receive;
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

const VIDEO_PACKET: usize = 1_100;
const VIDEO_PACKETS_PER_FRAME: usize = 5;

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    audio: Mid,
    video: Mid,
    received: u64,
    connected: bool,
}

/// Polls a client until it has nothing more to say.
fn drain(p: &mut Peer) {
    loop {
        match p.rtc.poll_output() {
            Ok(Output::Transmit(t)) => {
                let _ = p.socket.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(Event::RtpPacket(_))) => p.received += 1,
            Ok(Output::Event(Event::Connected)) => p.connected = true,
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) | Err(_) => return,
        }
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user + system) CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

fn main() {
    let subscribers = arg("--subscribers", 10) as usize;
    let seconds = arg("--seconds", 10);
    let fps = arg("--fps", 30);
    let now = Instant::now();

    let sfu_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sfu_addr = sfu_socket.local_addr().unwrap();
    let mut sfu = Sfu::new(
        now,
        SfuConfig {
            candidates: vec![sfu_addr],
        },
    );

    // Signaling in-process, before the clock starts.
    let mut peers = Vec::new();
    for i in 0..=subscribers {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let dir = if i == 0 {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, dir, None, None, None);
        let video = api.add_media(MediaKind::Video, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answer = sfu
            .offer(now, RoomId(1), PeerId(i as u64), &offer.to_sdp_string())
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        peers.push(Peer {
            rtc,
            socket,
            addr,
            audio,
            video,
            received: 0,
            connected: false,
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let sfu_thread = {
        let stop = stop.clone();
        let measuring = measuring.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut cpu_at_start = None;
            let mut forwarded_at_start = 0;
            let (mut dgram_in, mut dgram_out) = (0u64, 0u64);
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if cpu_at_start.is_none() && measuring.load(Ordering::Relaxed) {
                    cpu_at_start = Some((thread_cpu(), Instant::now()));
                    forwarded_at_start = sfu.stats().packets_forwarded;
                }
                let wait = sfu
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(10))
                    .clamp(Duration::from_micros(100), Duration::from_millis(10));
                sfu_socket.set_read_timeout(Some(wait)).unwrap();
                if let Ok((n, from)) = sfu_socket.recv_from(&mut buf) {
                    dgram_in += 1;
                    sfu.receive(Instant::now(), Protocol::Udp, from, sfu_addr, &buf[..n]);
                }
                sfu.timeout(Instant::now());
                while let Some(t) = sfu.poll_transmit() {
                    let _ = sfu_socket.send_to(&t.contents, t.destination);
                    dgram_out += 1;
                }
                while sfu.poll_event().is_some() {}
            }
            println!("  SFU socket: {dgram_in} datagrams in, {dgram_out} out (whole run)");
            let (cpu0, t0) = cpu_at_start.unwrap_or((thread_cpu(), Instant::now()));
            (
                thread_cpu() - cpu0,
                t0.elapsed(),
                sfu.stats().packets_forwarded - forwarded_at_start,
            )
        })
    };

    // Clients: connect, then publish at the set rate.
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut seq_v = 0u64;
    let mut seq_a = 0u64;
    let mut next_frame = start;
    let mut next_audio = start;
    let mut measure_from: Option<(Instant, u64)> = None;
    let payload_v: Arc<[u8]> = vec![0x90u8; VIDEO_PACKET].into();
    let payload_a: Arc<[u8]> = vec![0x11u8; 120].into();
    let end_setup = start + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        for p in peers.iter_mut() {
            // str0m wants its output drained after every input.
            let _ = p.rtc.handle_input(Input::Timeout(now));
            drain(p);
            while let Ok((n, from)) = p.socket.recv_from(&mut buf) {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: from,
                        destination: p.addr,
                        contents: (&buf[..n]).try_into().unwrap(),
                    },
                );
                let _ = p.rtc.handle_input(input);
                drain(p);
            }
        }
        let all_up = peers.iter().all(|p| p.connected);
        if !all_up {
            assert!(now < end_setup, "peers did not connect within 10 s");
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if measure_from.is_none() && now > start + Duration::from_secs(1) {
            measuring.store(true, Ordering::Relaxed);
            measure_from = Some((now, peers[1..].iter().map(|p| p.received).sum()));
        }
        if let Some((t0, _)) = measure_from {
            if now.duration_since(t0) >= Duration::from_secs(seconds) {
                break;
            }
        }
        let pub_ = &mut peers[0];
        let (vpt, apt) = {
            let cc = pub_.rtc.codec_config();
            let pt = |c: Codec| {
                cc.params()
                    .iter()
                    .find(|p| p.spec().codec == c)
                    .unwrap()
                    .pt()
            };
            (pt(Codec::Vp8), pt(Codec::Opus))
        };
        let (video, audio) = (pub_.video, pub_.audio);
        let mut api = pub_.rtc.direct_api();
        if now >= next_frame {
            next_frame += Duration::from_micros(1_000_000 / fps);
            let ts = (seq_v / VIDEO_PACKETS_PER_FRAME as u64 * (90_000 / fps)) as u32;
            if let Some(tx) = api.stream_tx_by_mid(video, None) {
                for k in 0..VIDEO_PACKETS_PER_FRAME {
                    seq_v += 1;
                    tx.write_rtp(
                        RtpWrite::new(vpt, seq_v.into(), ts, now, payload_v.clone())
                            .marker(k == VIDEO_PACKETS_PER_FRAME - 1)
                            .nackable(true),
                    );
                }
            }
        }
        if now >= next_audio {
            next_audio += Duration::from_millis(20);
            seq_a += 1;
            if let Some(tx) = api.stream_tx_by_mid(audio, None) {
                tx.write_rtp(RtpWrite::new(
                    apt,
                    seq_a.into(),
                    (seq_a * 960) as u32,
                    now,
                    payload_a.clone(),
                ));
            }
        }
        drain(&mut peers[0]);
        std::thread::sleep(Duration::from_micros(500));
    }
    let (t0, received0) = measure_from.unwrap();
    let received: u64 = peers[1..].iter().map(|p| p.received).sum::<u64>() - received0;
    let wall = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (cpu, sfu_wall, forwarded) = sfu_thread.join().unwrap();
    let sent =
        (seq_v + seq_a) as f64 * wall.as_secs_f64() / start.elapsed().as_secs_f64().max(1e-9);
    println!("one publisher → {subscribers} subscribers over UDP loopback, {seconds} s measured");
    println!(
        "  published ≈{:.0} packets/s (video {} fps × {} × {} B, audio 50/s)",
        sent / wall.as_secs_f64(),
        fps,
        VIDEO_PACKETS_PER_FRAME,
        VIDEO_PACKET
    );
    println!(
        "  forwarded {forwarded} packets ({:.0}/s); subscribers received {received} ({:.1} %)",
        forwarded as f64 / sfu_wall.as_secs_f64(),
        100.0 * received as f64 / forwarded.max(1) as f64
    );
    println!(
        "  SFU thread CPU {cpu:.2} s over {:.1} s ({:.1} % of a core): {:.2} µs per forwarded packet",
        sfu_wall.as_secs_f64(),
        100.0 * cpu / sfu_wall.as_secs_f64(),
        cpu * 1e6 / forwarded.max(1) as f64
    );
}
