//! Real browsers on both ends of a call: headless Chromium (Debian's `chromium`, fake camera and
//! microphone) driven by Playwright through `tests/browser/call.mjs`, the visitor on the demo
//! page's widget and the agent in the console, media through the SFU. Also through a real
//! coturn (relay only, good and bad credentials), across ICE restarts, and with aiortc as an
//! independent WebRTC implementation publishing to Chromium.
//!
//! `./scripts/test` installs chromium, coturn, the harness's node modules and aiortc.

mod common;

use common::{Options, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One browser call at a time: two Chromiums and the server share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TURN_SECRET: &str = "coturn-shared-secret-for-tests";

struct Site {
    s: TestServer,
    key: String,
    agent_token: String,
    admin_token: String,
}

async fn site(opts: Options) -> Site {
    let s = TestServer::start_with(opts).await;
    let (org, agent_token) = s.org_with_agent("browsers", "b1", "Sam Support").await;
    Site {
        key: org.created.widget_key.clone(),
        agent_token,
        admin_token: org.admin_token.clone(),
        s,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the harness with `cfg`; its JSON lines arrive on the returned reader.
fn harness(
    cfg: &Value,
) -> (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser (./scripts/test does it)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "install Debian's chromium (./scripts/test does it)"
    );
    let mut child = Command::new("node")
        .arg(dir.join("call.mjs"))
        .arg(cfg.to_string())
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    (child, lines)
}

/// Runs the harness to its end; returns the final line and the per-side lines.
async fn call(cfg: Value) -> (Value, Vec<Value>) {
    call_with(cfg, async |_: &Value| {}).await
}

/// Runs the harness to its end, handing each JSON line to `on_line` as it arrives (the harness
/// waits on the runner at its `phase` lines); returns the final line and the others.
async fn call_with(cfg: Value, mut on_line: impl AsyncFnMut(&Value)) -> (Value, Vec<Value>) {
    let (mut child, mut lines) = harness(&cfg);
    let mut all = Vec::new();
    while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
        .await
        .expect("the harness answers within 3 minutes")
    {
        println!("{l}");
        if let Ok(v) = serde_json::from_str::<Value>(&l) {
            on_line(&v).await;
            all.push(v);
        }
    }
    let _ = child.wait().await;
    let last = all.pop().expect("a final line");
    (last, all)
}

fn config(site: &Site, extra: Value) -> Value {
    let mut cfg = json!({
        "base_url": site.s.base,
        "agent_token": site.agent_token,
        "widget_key": site.key,
        "seconds": 3,
    });
    for (k, v) in extra.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    cfg
}

fn side<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["side"] == name)
        .unwrap_or_else(|| panic!("no line for {name}: {lines:?}"))
}

/// framesDecoded / audioPacketsReceived grew between the harness's two samples.
fn grew(line: &Value, field: &str) -> bool {
    let v = &line[field];
    v[1].as_u64().unwrap_or(0) > v[0].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn visitor_and_agent_see_and_hear_each_other_through_the_sfu() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let (last, lines) = call(config(&site, json!({}))).await;
    assert_eq!(last["ok"], true, "{last}");
    for name in ["agent", "visitor"] {
        let l = side(&lines, name);
        assert!(grew(l, "framesDecoded"), "{name}: {l}");
        assert!(grew(l, "audioPacketsReceived"), "{name}: {l}");
        // The media went to one of the SFU's sockets, not browser to browser.
        let ports: Vec<u16> = site
            .s
            .state
            .media
            .local_addrs
            .iter()
            .map(|a| a.port())
            .collect();
        let port = l["candidate"]["remote"]["port"].as_u64().unwrap_or(0);
        assert!(ports.iter().any(|p| u64::from(*p) == port), "{l}");
        let events: Vec<&str> = l["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(events.contains(&"media_config") && events.contains(&"media_answer"));
        assert!(!events.contains(&"recording"), "the org does not record");
        // The server's sender reports count the copies its core sealed (about 19 in 20),
        // not only str0m's: a report lags by at most a second of video.
        let received = l["videoPacketsReceived"][1].as_u64().unwrap_or(0);
        let reported = l["videoPacketsReported"][1].as_u64().unwrap_or(0);
        assert!(
            reported * 2 >= received && reported <= received + received / 10 + 100,
            "{name}: sender reports say {reported} sent, {received} received"
        );
    }
    assert_eq!(last["countdown_s"], 15);
    let m = &site.s.state.media.metrics;
    let forwarded = m
        .packets_forwarded
        .load(std::sync::atomic::Ordering::Relaxed);
    let sealed = m
        .packets_sealed_by_core
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(forwarded > 0);
    // Chromium negotiates AES-GCM, so the core sealed most copies itself (str0m takes one
    // per track every 500 ms): the frames Chromium decoded were made of those.
    assert!(
        sealed * 10 >= forwarded * 8,
        "sealed by the core: {sealed} of {forwarded}"
    );
    // Every copy the core sealed left in answer to a datagram the kernel stamped, so the
    // forwarding-delay histogram counted it: cumulative buckets ending at the count.
    let body = site.s.metrics().await;
    let buckets: Vec<f64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("frontdesk_media_forward_delay_seconds_bucket{le="))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        buckets.len() > 2 && buckets.windows(2).all(|w| w[0] <= w[1]),
        "{buckets:?}"
    );
    let count = site
        .s
        .metric("frontdesk_media_forward_delay_seconds_count")
        .await;
    assert!(
        count >= buckets[buckets.len() - 1] && count >= sealed as f64,
        "{count} < {sealed}"
    );
    assert!(
        site.s
            .metric("frontdesk_media_forward_delay_seconds_sum")
            .await
            > 0.0
    );
}

#[tokio::test]
async fn cobrowse_shows_the_visitors_page_to_the_agent_with_every_secret_masked() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let (last, _) = call(config(
        &site,
        json!({"cobrowse": true, "cobrowse_seconds": 10, "seconds": 1}),
    ))
    .await;
    // The harness checks the viewer (name shown; card and password masked, also after the
    // show-password toggle), the iframe sandbox, and every frame the agent page received.
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["cobrowse_viewer"]["name"]["value"], "Ada Lovelace");
    assert_eq!(last["cobrowse_leaks"], 0);
    assert!(
        last["cobrowse_kb_per_min"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    // Names, labels and help text of /metrics, and any value that is not a number: where page
    // content could show. Numeric values are left out: a CPU time or a byte count may hold
    // the digits 4242 by chance.
    let m: String = site
        .s
        .metrics()
        .await
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((rest, v)) if !l.starts_with('#') && v.parse::<f64>().is_ok() => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    for secret in ["hunter2", "4242"] {
        assert!(!m.contains(secret), "{secret} in /metrics:\n{m}");
    }
    assert!(site.s.metric("frontdesk_cobrowse_masked_total").await >= 2.0);
    assert!(site.s.metric("frontdesk_cobrowse_snapshots_total").await >= 1.0);
    assert!(
        site.s
            .metric("frontdesk_cobrowse_change_batches_total")
            .await
            >= 3.0
    );
}

/// Runs `tests/browser/cobrowse_dev.mjs` with `args`; asserts every check passed.
async fn cobrowse_harness(args: &[&str]) {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser"
    );
    let out = Command::new("node")
        .arg(dir.join("cobrowse_dev.mjs"))
        .args(args)
        .current_dir(&dir)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the co-browse harness ends within 4 minutes")
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let last: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a final line");
    assert!(out.status.success() && last["ok"] == true, "{last}");
}

#[tokio::test]
async fn cobrowse_capture_and_viewer_agree_through_random_mutations_offline() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Capture and viewer against a protocol-checking stand-in of the relay: snapshot shape,
    // widget-side masking, every viewer op, and 300 random DOM mutations per seed after which
    // the relay's tree equals a fresh snapshot and the viewer's DOM equals the relay's tree.
    cobrowse_harness(&["--seeds", "4"]).await;
}

#[tokio::test]
async fn cobrowse_random_mutations_reach_the_viewer_intact_through_the_real_relay() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let cfg = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(cfg.path(), config(&site, json!({})).to_string()).expect("write config");
    cobrowse_harness(&["--server", cfg.path().to_str().unwrap()]).await;
    assert_eq!(
        site.s
            .metric("frontdesk_cobrowse_desync_requests_total")
            .await,
        0.0
    );
}

#[tokio::test]
async fn recording_orgs_show_the_badge_once_both_sides_are_connected() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let (st, body) = site
        .s
        .send(
            Method::PATCH,
            "/v1/org/settings",
            &site.admin_token,
            Some(json!({"recording_enabled": true})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (last, lines) = call(config(&site, json!({}))).await;
    assert_eq!(last["ok"], true, "{last}");
    for name in ["agent", "visitor"] {
        let events = side(&lines, name)["events"].to_string();
        assert!(events.contains("\"recording\""), "{name}: {events}");
    }
}

#[tokio::test]
async fn a_forced_ice_restart_resumes_video_and_both_sides_hear_of_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let (last, lines) = call(config(&site, json!({"restart": "page"}))).await;
    assert_eq!(last["ok"], true, "{last}");
    assert!(last["restart_ms"].as_u64().unwrap() < 5000, "{last}");
    for name in ["agent", "visitor"] {
        let events = side(&lines, name)["events"].to_string();
        assert!(
            events.contains("media_reconnecting") && events.contains("media_reconnected"),
            "{name}: {events}"
        );
    }
}

/// A coturn on loopback with `use-auth-secret`, killed when dropped.
struct Coturn {
    child: Child,
    port: u16,
    args: Vec<String>,
}

fn free_port() -> u16 {
    // A UDP and TCP port both free at the time of asking.
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Coturn {
    async fn start() -> Coturn {
        let port = free_port();
        let relay_min = 40_000 + (port % 200) * 100;
        let args: Vec<String> = [
            "-n".to_owned(),
            "--listening-ip=127.0.0.1".into(),
            "--relay-ip=127.0.0.1".into(),
            format!("--listening-port={port}"),
            "--use-auth-secret".into(),
            format!("--static-auth-secret={TURN_SECRET}"),
            "--realm=frontdesk.test".into(),
            "--allow-loopback-peers".into(),
            "--no-cli".into(),
            "--no-tls".into(),
            "--no-dtls".into(),
            format!("--min-port={relay_min}"),
            format!("--max-port={}", relay_min + 99),
            "--log-file=stdout".into(),
            "--simple-log".into(),
        ]
        .into();
        let mut c = Coturn {
            child: Self::spawn(&args),
            port,
            args,
        };
        c.wait_ready().await;
        c
    }

    fn spawn(args: &[String]) -> Child {
        Command::new("turnserver")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver (Debian's coturn) runs")
    }

    /// Until coturn answers a STUN binding request.
    async fn wait_ready(&mut self) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(b"frontdesk-tx");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = sock.send_to(&req, ("127.0.0.1", self.port)).await;
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
            {
                if n >= 20 && buf[0..2] == [0x01, 0x01] {
                    return;
                }
            }
        }
        panic!("coturn did not answer on 127.0.0.1:{}", self.port);
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    async fn restart(&mut self) {
        self.child = Self::spawn(&self.args);
        self.wait_ready().await;
    }
}

async fn relay_site(turn: &Coturn) -> Site {
    site(Options {
        turn_urls: vec![
            format!("turn:127.0.0.1:{}?transport=udp", turn.port),
            format!("turn:127.0.0.1:{}?transport=tcp", turn.port),
        ],
        turn_secret: Some(TURN_SECRET.into()),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn relay_only_calls_flow_through_coturn_with_the_servers_credentials() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let turn = Coturn::start().await;
    let site = relay_site(&turn).await;
    let (last, lines) = call(config(&site, json!({"relay": true}))).await;
    assert_eq!(last["ok"], true, "{last}");
    for name in ["agent", "visitor"] {
        let l = side(&lines, name);
        assert_eq!(l["candidate"]["local"]["type"], "relay", "{name}: {l}");
        assert!(grew(l, "framesDecoded"), "{name}: {l}");
    }
}

#[tokio::test]
async fn coturn_refuses_wrong_credentials_so_a_relay_only_call_gets_no_media() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let turn = Coturn::start().await;
    let site = relay_site(&turn).await;
    let wrong =
        frontdesk_sfu::turn::turn_credential(b"not-the-secret-at-all", "x", common::now_s() + 600);
    let (last, _) = call(config(
        &site,
        json!({"relay": true, "turn": {
            "urls": [format!("turn:127.0.0.1:{}?transport=udp", turn.port)],
            "username": wrong.username, "credential": wrong.credential}}),
    ))
    .await;
    assert_eq!(last["ok"], false, "{last}");
    assert_eq!(last["failed_at"], "media connects", "{last}");
}

#[tokio::test]
async fn breaking_the_path_mid_call_restarts_ice_and_video_resumes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut turn = Coturn::start().await;
    let site = relay_site(&turn).await;
    let mut broken_for = None;
    let cfg = config(
        &site,
        json!({"relay": true, "restart": "path", "seconds": 3}),
    );
    let (last, all) = call_with(cfg, async |v: &Value| {
        if v["phase"] == "flowing" {
            // Every relayed packet goes through coturn: stop it, then bring it back empty (its
            // allocations are gone, so the browsers must restart ICE to get new ones).
            let t = Instant::now();
            turn.stop().await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            turn.restart().await;
            broken_for = Some(t.elapsed());
        }
    })
    .await;
    assert_eq!(last["ok"], true, "{last}");
    let outage = Duration::from_millis(last["outage_ms"].as_u64().unwrap());
    let broken_for = broken_for.expect("the path was broken");
    println!(
        "path broken for {broken_for:?}; video stalled for {outage:?}; {}",
        last["restarts"]
    );
    // The clients notice that no RTP arrives within 2 s, restart ICE (again after 1 s while
    // the path is still down), and video flows again soon after the path comes back: at worst
    // an attempt that started while it was down times out (3 s), the next follows after its
    // backoff, and ICE + DTLS complete (measured 3.0 s on a quiet machine, 6.0 s with a
    // fuzzer and a second CI run beside it). A path that never recovers fails the harness.
    assert!(
        outage < broken_for + Duration::from_secs(10),
        "video stalled {outage:?} for a path broken {broken_for:?}"
    );
    for name in ["agent", "visitor"] {
        let events = side(&all, name)["events"].to_string();
        assert!(events.contains("media_reconnecting"), "{name}: {events}");
        let r = &last["restarts"][name];
        assert_eq!(r["connected"], true, "{name}: {r}");
        assert!(
            r["restart_to_connected_ms"].as_u64().unwrap() < 5000,
            "{name}: {r}"
        );
    }
}

/// A call between an aiortc visitor (`tests/peers/aiortc_visitor.py`, with `extra` in its
/// config) and the console in Chromium; returns aiortc's final line and the harness's lines.
async fn aiortc_call(site: &Site, extra: Value) -> (Value, Vec<Value>) {
    let python = std::env::var("FRONTDESK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let cfg = config(site, json!({"external_visitor": true, "seconds": 3}));
    let mut peer = cfg.clone();
    let mut aiortc = Value::Null;
    let (last, all) = call_with(cfg, async |v: &Value| {
        if v["phase"] == "agent_ready" {
            let mut cfg = json!({"base_url": site.s.base, "widget_key": site.key, "seconds": 8});
            for (k, v) in extra.as_object().expect("object") {
                cfg[k] = v.clone();
            }
            peer = cfg.clone();
            // The peer runs while the console measures.
            let out = Command::new(&python)
                .arg(repo().join("tests/peers/aiortc_visitor.py"))
                .arg(cfg.to_string())
                .kill_on_drop(true)
                .output()
                .await
                .expect("aiortc peer runs");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            println!("aiortc: {text}");
            assert!(
                out.status.success(),
                "aiortc peer failed ({python}; set FRONTDESK_TEST_PYTHON to a python with \
                 aiortc, as ./scripts/test does): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            aiortc = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        }
    })
    .await;
    assert_eq!(last["ok"], true, "{last}");
    assert!(
        aiortc["frames_sent"].as_u64().unwrap_or(0) > 100,
        "{peer}: {aiortc}"
    );
    let agent = side(&all, "agent");
    assert!(grew(agent, "framesDecoded"), "{agent}");
    assert!(grew(agent, "audioPacketsReceived"), "{agent}");
    (aiortc, all)
}

#[tokio::test]
async fn an_aiortc_visitor_publishes_through_the_sfu_and_chromium_decodes_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let (aiortc, _) = aiortc_call(&site, json!({})).await;
    // aiortc offers the AEAD profiles first, as browsers do.
    assert_eq!(aiortc["srtp"], "SRTP_AEAD_AES_256_GCM", "{aiortc}");
}

/// A client that offers only AES-CM/HMAC-SHA1 (RFC 3711) gets what the SFU forwards protected
/// that way, by the core's own sealing like every other receiver, and libsrtp (aiortc's) takes
/// it: the agent's video and audio decode on the aiortc side.
#[tokio::test]
async fn an_aes_cm_only_visitor_gets_the_forwarded_media_sealed_by_the_core() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let site = site(Options::default()).await;
    let forwarded0 = site
        .s
        .metric("frontdesk_media_packets_forwarded_total")
        .await;
    let sealed0 = site
        .s
        .metric("frontdesk_media_packets_sealed_by_core_total")
        .await;
    let (aiortc, _) = aiortc_call(&site, json!({"srtp": "aes_cm"})).await;
    assert_eq!(aiortc["srtp"], "SRTP_AES128_CM_SHA1_80", "{aiortc}");
    // 8 s of the console's 30 fps camera and 50 packets/s of audio: most of it decoded.
    let video = aiortc["video_frames_received"].as_u64().unwrap_or(0);
    let audio = aiortc["audio_frames_received"].as_u64().unwrap_or(0);
    assert!(video > 60 && audio > 150, "{aiortc}");
    let forwarded = site
        .s
        .metric("frontdesk_media_packets_forwarded_total")
        .await
        - forwarded0;
    let sealed = site
        .s
        .metric("frontdesk_media_packets_sealed_by_core_total")
        .await
        - sealed0;
    // Both directions (Chromium's on AES-GCM, aiortc's on AES-CM) go through the core's own
    // sealing but for the first packets of each stream, before the core knows its route.
    assert!(
        forwarded > 500.0 && sealed >= 0.9 * forwarded,
        "{sealed} of {forwarded} copies sealed by the core"
    );
}
