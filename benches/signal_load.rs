//! Signaling load: N agents and M visitors against a real `frontdesk serve` process.
//!
//! ```sh
//! cargo bench --bench signal_load -- --agents 10000 --visitors 500 --rate 500 --seconds 20
//! ```
//!
//! It starts the server (release build, fresh SQLite, loopback), creates an org with N agents
//! through the admin API, connects every agent over `/v1/signal` and sets it available, then
//! measures the server's resident memory per idle connection (`/proc/<pid>/status`). Then M
//! visitors place calls at the given rate; agents accept and end each call at once. Ring latency
//! is the time from a visitor sending `request_call` to its agent receiving `ring`, both on this
//! process's clock. Server CPU comes from `/proc/<pid>/stat`.

mod common;

use common::{cpu_ticks, percentile, rss_kib, token, JWT_SECRET};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");

struct Args {
    agents: usize,
    visitors: usize,
    rate: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        agents: 1000,
        visitors: 200,
        rate: 200,
        seconds: 10,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let val = v.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (v[i].as_str(), val) {
            ("--agents", Some(n)) => a.agents = n as usize,
            ("--visitors", Some(n)) => a.visitors = n as usize,
            ("--rate", Some(n)) => a.rate = n,
            ("--seconds", Some(n)) => a.seconds = n,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, auth: Value) -> (Ws, Value) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{base}/v1/signal"), None, true)
            .await
            .expect("connect");
    let mut auth = auth;
    auth["id"] = json!(1);
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["re"] == 1 {
                assert_eq!(v["type"], "welcome", "{v}");
                return (ws, v);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/load.db", dir.path().display());
    let created = common::create_org(BIN, &db, "Load", a.agents + 1);
    let (org, pool, key) = (created.org, created.pool, created.widget_key);

    let mut server = Command::new(BIN)
        .args(["serve", "--log-format", "json"])
        .env("FRONTDESK_DATABASE_URL", &db)
        .env("FRONTDESK_LISTEN", "127.0.0.1:0")
        .env("FRONTDESK_JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "warn,frontdesk=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = server.id();
    let base = common::listening_addr(&mut server);

    // Agents, through the admin API.
    let http = reqwest::Client::new();
    let admin = token("admin", &org, "admin");
    let t0 = Instant::now();
    let ids: Vec<usize> = (0..a.agents).collect();
    for chunk in ids.chunks(16) {
        let mut reqs = Vec::new();
        for i in chunk {
            reqs.push(
                http.post(format!("http://{base}/v1/agents"))
                    .bearer_auth(&admin)
                    .json(&json!({"user_id": format!("agent-{i}"), "email": format!("a{i}@load.example"),
                                  "display_name": format!("Agent {i}"), "pools": [{"pool_id": pool, "tier": 1}]}))
                    .send(),
            );
        }
        for r in futures_util::future::join_all(reqs).await {
            assert_eq!(r.unwrap().status().as_u16(), 201);
        }
    }
    eprintln!(
        "created {} agents in {:.1} s",
        a.agents,
        t0.elapsed().as_secs_f64()
    );

    let rss_before = rss_kib(pid);
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let t0 = Instant::now();
    let mut agents = Vec::new();
    for chunk in ids.chunks(100) {
        let mut conns = Vec::new();
        for i in chunk {
            let t = token(&format!("agent-{i}"), &org, "agent");
            conns.push(connect(&base, json!({"type": "auth", "agent_token": t})));
        }
        agents.extend(futures_util::future::join_all(conns).await);
    }
    // Available, and answering: accept each ring, end the call at once.
    let ready = Arc::new(AtomicU64::new(0));
    for (mut ws, _) in agents {
        let (sent_at, latencies, ready) = (sent_at.clone(), latencies.clone(), ready.clone());
        tokio::spawn(async move {
            ws.send(Message::Text(
                json!({"type": "set_presence", "presence": "available", "id": 2})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("presence") if v["re"] == 2 => {
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("ring") => {
                        let session = v["visitor_session_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if let Some(at) = sent_at.lock().unwrap().remove(&session) {
                            latencies
                                .lock()
                                .unwrap()
                                .push(at.elapsed().as_micros() as u64);
                        }
                        let call = v["call_id"].clone();
                        let _ = ws
                            .send(Message::Text(
                                json!({"type": "accept", "call_id": call})
                                    .to_string()
                                    .into(),
                            ))
                            .await;
                        let _ = ws
                            .send(Message::Text(
                                json!({"type": "end_call", "call_id": call})
                                    .to_string()
                                    .into(),
                            ))
                            .await;
                    }
                    _ => {}
                }
            }
        });
    }
    while ready.load(Ordering::Relaxed) < a.agents as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    let per_conn = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / a.agents as f64;
    eprintln!(
        "{} agents connected and available in {:.1} s; server RSS {} -> {} KiB",
        a.agents,
        t0.elapsed().as_secs_f64(),
        rss_before,
        rss_idle
    );

    // Visitors: each places a call when told to, then waits for it to end.
    let (tx, rx) = async_channel();
    let requested = Arc::new(AtomicU64::new(0));
    let mut sessions = Vec::new();
    for i in 0..a.visitors {
        let page = format!("https://load.example/{i}");
        sessions.push(connect(
            &base,
            json!({"type": "auth", "widget_key": key, "page_url": page}),
        ));
    }
    let visitors = futures_util::future::join_all(sessions).await;
    for (mut ws, welcome) in visitors {
        let session = welcome["session_id"].as_str().unwrap().to_owned();
        let (rx, sent_at, requested) = (rx.clone(), sent_at.clone(), requested.clone());
        tokio::spawn(async move {
            loop {
                if rx.lock().await.recv().await.is_none() {
                    return;
                }
                sent_at
                    .lock()
                    .unwrap()
                    .insert(session.clone(), Instant::now());
                requested.fetch_add(1, Ordering::Relaxed);
                if ws
                    .send(Message::Text(r#"{"type":"request_call"}"#.into()))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        if t.contains("\"call_ended\"") || t.contains("\"unavailable\"") {
                            break;
                        }
                    }
                }
            }
        });
    }
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
    let mut next = tokio::time::Instant::now();
    let mut skipped = 0u64;
    while t0.elapsed() < Duration::from_secs(a.seconds) {
        next += interval;
        tokio::time::sleep_until(next).await;
        if tx.try_send(()).is_err() {
            skipped += 1;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let n = requested.load(Ordering::Relaxed);
    println!(
        "signal_load: {} agents, {} visitors, target {} calls/s for {} s",
        a.agents, a.visitors, a.rate, a.seconds
    );
    println!(
        "  memory per idle agent connection: {:.1} KiB (server RSS delta {} KiB)",
        per_conn / 1024.0,
        rss_idle - rss_before
    );
    println!(
        "  call requests: {n} ({:.0}/s achieved, {skipped} skipped: every visitor busy)",
        n as f64 / elapsed
    );
    println!(
        "  ring latency (request_call sent -> ring received): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} rings",
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        percentile(&l, 1.0),
        l.len()
    );
    println!(
        "  server CPU: {:.2} s over {:.1} s ({:.0}% of one core)",
        cpu,
        elapsed,
        100.0 * cpu / elapsed
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// A work queue: a bounded channel whose receiver visitors share.
fn async_channel() -> (
    tokio::sync::mpsc::Sender<()>,
    Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}
