//! The media half of the signaling protocol through real WebSocket clients: media_config, typed
//! errors for bad SDP, candidates and track ids, TURN credentials, and cleanup of peers that
//! vanish (1,000 join/leave cycles, measured).

mod common;

use common::ws::Ws;
use common::{Options, TestServer};
use serde_json::{json, Value};
use std::time::Instant;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// A browser-like offer: one audio and one video m-line, sendrecv.
fn offer() -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

struct Call {
    s: TestServer,
    key: String,
    admin_token: String,
    agent_token: String,
    agent: Ws,
    /// Cycles run by [`cycle`].
    cycles: usize,
}

async fn setup(opts: Options) -> Call {
    let s = TestServer::start_with(opts).await;
    let (org, agent_token) = s.org_with_agent("media", "m1", "Mo").await;
    let (mut agent, _) = Ws::agent(&s.base, &agent_token).await;
    agent.available().await;
    Call {
        key: org.created.widget_key.clone(),
        admin_token: org.admin_token.clone(),
        s,
        agent_token,
        agent,
        cycles: 0,
    }
}

impl Call {
    /// A visitor in a connected call; returns it, the call id and both media_config messages.
    async fn connect(&mut self) -> (Ws, String, Value, Value) {
        let (mut v, _) = Ws::visitor(&self.s.base, &self.key, "https://shop.example/").await;
        v.request(json!({"type": "request_call"})).await;
        let ring = self.agent.wait_type("ring").await;
        let call = ring["call_id"].as_str().unwrap().to_owned();
        let r = self
            .agent
            .request(json!({"type": "accept", "call_id": call}))
            .await;
        assert_eq!(r["type"], "call_connected", "{r}");
        let agent_cfg = self.agent.wait_type("media_config").await;
        v.wait_type("call_connected").await;
        let visitor_cfg = v.wait_type("media_config").await;
        (v, call, visitor_cfg, agent_cfg)
    }
}

fn code(m: &Value) -> &str {
    assert_eq!(m["type"], "error", "{m}");
    m["code"].as_str().unwrap()
}

#[tokio::test]
async fn media_config_arrives_on_connect_and_offers_are_answered() {
    let mut c = setup(Options::default()).await;
    let (mut v, call, vcfg, acfg) = c.connect().await;
    for cfg in [&vcfg, &acfg] {
        assert_eq!(cfg["call_id"], call.as_str());
        assert_eq!(cfg["ice_servers"], json!([]));
        assert_eq!(cfg["ice_transport_policy"], "all");
        assert_eq!(cfg["recording"], false);
    }
    let a = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": offer()}))
        .await;
    assert_eq!(a["type"], "media_answer", "{a}");
    let sdp = a["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("a=candidate:") && sdp.contains("127.0.0.1"),
        "{sdp}"
    );
    assert!(sdp.contains("a=fingerprint:"));
    // The server's candidate is the real UDP port of the worker that owns the call.
    let port =
        c.s.state
            .media
            .local_addr_of(call.parse().unwrap())
            .expect("the call is on a worker once it has offered")
            .port()
            .to_string();
    assert!(sdp.contains(&format!(" {port} typ host")), "{sdp}");
    // Trickled candidates are taken; an empty one (end of candidates) too.
    v.send(json!({"type": "ice_candidate", "call_id": call,
                  "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdp_mid": "0"}))
        .await;
    v.send(json!({"type": "ice_candidate", "call_id": call, "candidate": ""}))
        .await;
    v.assert_none(|m| m["type"] == "error").await;
}

#[tokio::test]
async fn bad_sdp_bad_candidates_and_unknown_tracks_get_typed_errors() {
    let mut c = setup(Options::default()).await;
    let (mut v, call, _, _) = c.connect().await;
    let other = frontdesk_domain::CallId::new().to_string();
    // Not this connection's call.
    let r = v
        .request(json!({"type": "media_offer", "call_id": other, "sdp": offer()}))
        .await;
    assert_eq!(code(&r), "not_in_call");
    // Candidates before any offer.
    let r = v
        .request(json!({"type": "ice_candidate", "call_id": call,
                        "candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host"}))
        .await;
    assert_eq!(code(&r), "invalid_candidate");
    for sdp in [
        json!(""),
        json!("v=0\r\n"),
        json!("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"),
        json!(offer().replace("a=fingerprint:", "a=x-fingerprint:")),
        json!(offer()
            .replace("m=audio", "m=text")
            .replace("m=video", "m=text")),
        json!("x".repeat(40_000)),
    ] {
        let r = v
            .request(json!({"type": "media_offer", "call_id": call, "sdp": sdp}))
            .await;
        assert_eq!(code(&r), "invalid_sdp", "{r}");
    }
    // Wrong shapes are refused before the SFU sees them.
    let r = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": 5}))
        .await;
    assert_eq!(code(&r), "invalid_message");
    let r = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": "v=0", "extra": 1}))
        .await;
    assert_eq!(code(&r), "invalid_message");

    let a = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": offer()}))
        .await;
    assert_eq!(a["type"], "media_answer", "{a}");
    for cand in [
        "candidate:garbage",
        "candidate:1 1 udp notanumber 127.0.0.1 5 typ host",
        &format!(
            "candidate:1 1 udp 1 127.0.0.1 5 typ host {}",
            "x".repeat(600)
        ),
    ] {
        let r = v
            .request(json!({"type": "ice_candidate", "call_id": call, "candidate": cand}))
            .await;
        assert_eq!(code(&r), "invalid_candidate", "{cand:.40}");
    }
    let answer = a["sdp"].as_str().unwrap();
    let mid_of = |kind: &str| {
        let section = answer
            .split("\r\nm=")
            .find(|m| m.starts_with(kind))
            .unwrap();
        section
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .unwrap()
            .to_owned()
    };
    let (audio_mid, video_mid) = (mid_of("audio"), mid_of("video"));
    for mid in [audio_mid.as_str(), "nope", "", "x"] {
        // The audio m-line does not count: keyframes are for video.
        let r = v
            .request(json!({"type": "request_keyframe", "call_id": call, "mid": mid}))
            .await;
        assert_eq!(code(&r), "unknown_track", "{mid}");
    }
    let r = v
        .request(json!({"type": "request_keyframe", "call_id": call, "mid": video_mid}))
        .await;
    assert_eq!(r["type"], "keyframe_requested", "{r}");
    // After the call, media messages are refused.
    v.request(json!({"type": "end_call", "call_id": call}))
        .await;
    let r = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": offer()}))
        .await;
    assert_eq!(code(&r), "not_in_call");
}

#[tokio::test]
async fn each_join_gets_time_limited_turn_credentials_in_the_turn_rest_scheme() {
    let secret = "turn-shared-secret-0123456789";
    let mut c = setup(Options {
        turn_urls: vec![
            "turn:127.0.0.1:3478?transport=udp".into(),
            "turns:turn.example:5349".into(),
        ],
        turn_secret: Some(secret.into()),
        ..Options::default()
    })
    .await;
    let (_v, call, vcfg, acfg) = c.connect().await;
    let now = common::now_s();
    for cfg in [&vcfg, &acfg] {
        let server = &cfg["ice_servers"][0];
        assert_eq!(
            server["urls"],
            json!([
                "turn:127.0.0.1:3478?transport=udp",
                "turns:turn.example:5349"
            ])
        );
        let user = server["username"].as_str().unwrap();
        let (expiry, id) = user.split_once(':').unwrap();
        let expiry: u64 = expiry.parse().unwrap();
        assert!(
            expiry > now + 3000 && expiry <= now + 3601,
            "{expiry} vs {now}"
        );
        assert!(id.starts_with(&call));
        let expected = frontdesk_sfu::turn::turn_credential(secret.as_bytes(), id, expiry);
        assert_eq!(server["credential"], expected.credential.as_str());
    }
    assert_ne!(
        vcfg["ice_servers"][0]["username"],
        acfg["ice_servers"][0]["username"]
    );
}

/// One call with media: the visitor joins, offers, and either ends normally or vanishes
/// (no close frame, no end_call) before the agent ends the call.
async fn cycle(c: &mut Call, sdp: &str, vanish: bool) {
    c.cycles += 1;
    // The agent sends two messages a cycle; a fresh connection now and then keeps it under the
    // per-connection rate limit (a burst of 30) without slowing the loop down.
    if c.cycles % 12 == 0 {
        let (mut agent, _) = Ws::agent(&c.s.base, &c.agent_token).await;
        agent.available().await;
        c.agent = agent;
    }
    let trace = std::env::var("FRONTDESK_MEDIA_TRACE").is_ok();
    if trace {
        eprintln!("connect");
    }
    let (mut v, call, _, _) = c.connect().await;
    if trace {
        eprintln!("offer");
    }
    let a = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": sdp}))
        .await;
    assert_eq!(a["type"], "media_answer", "{a}");
    if trace {
        eprintln!("vanish {vanish}");
    }
    if vanish {
        drop(v);
        c.agent.wait_type("visitor_reconnecting").await;
    }
    let r = c
        .agent
        .request(json!({"type": "end_call", "call_id": call}))
        .await;
    assert_eq!(r["type"], "call_ended", "{r}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_vanish_are_cleaned_up_across_a_thousand_joins_and_leaves() {
    let mut c = setup(Options::default()).await;
    let sdp = offer();
    // Warm up, then measure.
    for i in 0..20 {
        cycle(&mut c, &sdp, i % 2 == 0).await;
    }
    let rt = tokio::runtime::Handle::current().metrics();
    let (fds0, rss0, tasks0) = (open_fds(), rss_kib(), rt.num_alive_tasks());
    let t0 = Instant::now();
    let cycles: usize = std::env::var("FRONTDESK_MEDIA_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..cycles {
        if i % 100 == 0 || std::env::var("FRONTDESK_MEDIA_TRACE").is_ok() {
            println!("cycle {i} after {:?}", t0.elapsed());
        }
        cycle(&mut c, &sdp, i % 2 == 0).await;
    }
    let elapsed = t0.elapsed();
    // The media loop publishes its gauges once a second.
    let mut peers = f64::MAX;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        peers = c.s.metric("frontdesk_media_peers").await;
        if peers == 0.0 {
            break;
        }
    }
    // And every call leaves the table of which worker holds it (each worker's sweep, once a
    // second, forgets the calls it holds nothing of).
    let mut placed = usize::MAX;
    for _ in 0..30 {
        placed = c.s.state.media.calls_per_worker().iter().sum();
        if placed == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (fds1, rss1, tasks1) = (open_fds(), rss_kib(), rt.num_alive_tasks());
    println!(
        "{cycles} join/leave cycles in {elapsed:?}: peers {peers}, fds {fds0} -> {fds1}, \
         RSS {rss0} -> {rss1} KiB, tasks {tasks0} -> {tasks1}"
    );
    assert_eq!(peers, 0.0, "SFU peers left behind");
    assert_eq!(placed, 0, "calls left placed on a media worker");
    assert_eq!(c.s.metric("frontdesk_media_rooms").await, 0.0);
    assert!(fds1 <= fds0 + 4, "file descriptors grew: {fds0} -> {fds1}");
    assert!(tasks1 <= tasks0 + 4, "tasks grew: {tasks0} -> {tasks1}");
    // Allocator noise aside, 1,000 peers (each a DTLS context, buffers, SRTP state) must not
    // stay: a leak of one peer each would be tens of MiB.
    assert!(rss1 < rss0 + 16 * 1024, "RSS grew: {rss0} -> {rss1} KiB");
}

fn watch(call: &str, watch_id: u32) -> Value {
    json!({"type": "watch_offer", "call_id": call, "watch_id": watch_id, "sdp": offer()})
}

#[tokio::test]
async fn an_admin_watches_calls_of_its_own_org_only_and_watches_end_with_the_call() {
    let mut c = setup(Options::default()).await;
    let (mut v, call, _, _) = c.connect().await;
    let (mut admin, _) = Ws::agent(&c.s.base, &c.admin_token).await;

    let r = admin.request(watch(&call, 1)).await;
    assert_eq!(r["type"], "watch_answer", "{r}");
    assert_eq!(r["watch_id"], 1);
    assert!(r["sdp"].as_str().unwrap().contains("a=fingerprint:"));
    // An offer for the same watch renegotiates that peer: an unrelated one is refused as such.
    assert_eq!(code(&admin.request(watch(&call, 1)).await), "invalid_sdp");

    // An agent who is not an admin may not watch, not even its own call.
    assert_eq!(code(&c.agent.request(watch(&call, 1)).await), "forbidden");
    // Another org's admin cannot tell the call exists.
    let other = c.s.org("other", 5).await;
    let (mut outsider, _) = Ws::agent(&c.s.base, &other.admin_token).await;
    assert_eq!(
        code(&outsider.request(watch(&call, 1)).await),
        "not_in_call"
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        code(&admin.request(watch(&unknown, 2)).await),
        "not_in_call"
    );
    let mut bad = watch(&call, 2);
    bad["sdp"] = "v=0".into();
    assert_eq!(code(&admin.request(bad).await), "invalid_sdp");

    // Watchers per call are bounded (8 by default).
    for w in 2..=8 {
        let r = admin.request(watch(&call, w)).await;
        assert_eq!(r["type"], "watch_answer", "watch {w}: {r}");
    }
    assert_eq!(
        code(&admin.request(watch(&call, 9)).await),
        "too_many_watchers"
    );
    let r = admin
        .request(json!({"type": "watch_end", "call_id": call, "watch_id": 8}))
        .await;
    assert_eq!(r["type"], "watch_stopped", "{r}");
    let r = admin
        .request(json!({"type": "watch_end", "call_id": call, "watch_id": 8}))
        .await;
    assert_eq!(code(&r), "not_in_call");
    let r = admin.request(watch(&call, 9)).await;
    assert_eq!(
        r["type"], "watch_answer",
        "a stopped watch frees its place: {r}"
    );
    let start = Instant::now();
    while c.s.metric("frontdesk_media_peers").await < 8.0 {
        assert!(
            start.elapsed().as_secs() < 5,
            "the watch peers never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The call ends: every watch of it ends, and its peers go.
    v.request(json!({"type": "end_call", "call_id": call}))
        .await;
    let mut ended = std::collections::BTreeSet::new();
    while ended.len() < 8 {
        let m = admin.wait_type("watch_ended").await;
        assert_eq!(m["call_id"], call.as_str());
        ended.insert(m["watch_id"].as_u64().unwrap());
    }
    assert_eq!(ended, (1..=7).chain([9]).collect());
    let start = Instant::now();
    while c.s.metric("frontdesk_media_peers").await > 0.0 {
        assert!(start.elapsed().as_secs() < 5, "watch peers left behind");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(code(&admin.request(watch(&call, 1)).await), "not_in_call");
}

/// `/metrics` carries the process's own CPU time and resident memory (Prometheus's standard
/// names), which a load tool on another machine reads in place of `/proc`. The test server
/// runs in this process, so the figures must lie between this process's own readings taken
/// just before and just after: right units, right process, and CPU that grows with work. The
/// media workers' slow-turn counters are there too, and agree with one another.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_process_cpu_and_memory_and_slow_media_turns_are_in_the_metrics() {
    fn cpu_s() -> f64 {
        // SAFETY: getrusage writes into the zeroed struct it is given.
        let u = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
            u
        };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }
    fn rss_bytes() -> f64 {
        let pages: f64 = std::fs::read_to_string("/proc/self/statm")
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        // SAFETY: sysconf only reads a configuration value.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64
    }
    /// The server's CPU seconds, which must lie between this process's just before and after.
    async fn server_cpu_s(s: &TestServer) -> f64 {
        let (before, theirs, after) = (
            cpu_s(),
            s.metric("process_cpu_seconds_total").await,
            cpu_s(),
        );
        assert!(
            (before..=after).contains(&theirs),
            "{before} ≤ {theirs} ≤ {after}"
        );
        theirs
    }
    let mut c = setup(Options::default()).await;
    let theirs0 = server_cpu_s(&c.s).await;
    let (mut v, call, _, _) = c.connect().await;
    for _ in 0..20 {
        let a = v
            .request(json!({"type": "media_offer", "call_id": call, "sdp": offer()}))
            .await;
        assert_eq!(a["type"], "media_answer", "{a}");
    }
    let theirs1 = server_cpu_s(&c.s).await;
    assert!(theirs1 > theirs0, "CPU time {theirs0} s then {theirs1} s");
    // Memory moves between readings; the units may not: within a factor of two.
    let (a, rss, b) = (
        rss_bytes(),
        c.s.metric("process_resident_memory_bytes").await,
        rss_bytes(),
    );
    assert!(
        rss >= a.min(b) / 2.0 && rss <= a.max(b) * 2.0,
        "resident memory {rss} bytes, this process {a}–{b}"
    );
    // The media workers' slow turns (the unit test in src/media.rs counts them): all four
    // exported (`metric` fails on a missing one), and each turn counted took over 1 ms.
    let turns = c.s.metric("frontdesk_media_slow_turns_total").await;
    let seconds = c.s.metric("frontdesk_media_slow_turn_seconds_total").await;
    for name in [
        "frontdesk_media_slow_turn_datagrams_received_total",
        "frontdesk_media_slow_turn_datagrams_sent_total",
    ] {
        c.s.metric(name).await;
    }
    assert!(
        seconds >= turns * 0.001,
        "{turns} slow turns in {seconds} s"
    );
}

/// A datagram the kernel refuses (here: to the broadcast address, which needs `SO_BROADCAST`)
/// is counted in `/metrics` and dropped; the worker goes on serving the call.
#[tokio::test]
async fn datagrams_the_kernel_refuses_are_counted_and_the_worker_goes_on() {
    let mut c = setup(Options::default()).await;
    let (mut v, call, _, _) = c.connect().await;
    assert_eq!(c.s.metric("frontdesk_media_send_errors_total").await, 0.0);
    let a = v
        .request(json!({"type": "media_offer", "call_id": call, "sdp": offer()}))
        .await;
    assert_eq!(a["type"], "media_answer", "{a}");
    // The server checks connectivity to every remote candidate it is given.
    v.send(json!({"type": "ice_candidate", "call_id": call,
                  "candidate": "candidate:1 1 udp 2122260223 255.255.255.255 9 typ host", "sdp_mid": "0"}))
        .await;
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut errors = 0.0;
    while Instant::now() < deadline {
        errors = c.s.metric("frontdesk_media_send_errors_total").await;
        if errors > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(errors > 0.0, "a refused send was not counted");
    // The worker still answers: the agent's offer for the same call is answered.
    let a = c
        .agent
        .request(json!({"type": "media_offer", "call_id": call, "sdp": offer()}))
        .await;
    assert_eq!(a["type"], "media_answer", "{a}");
    v.assert_none(|m| m["type"] == "error").await;
}
