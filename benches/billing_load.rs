//! Billing enforcement load: a Stripe webhook forcing N online agents away, and verified webhook
//! ingest, against a real `frontdesk serve` process.
//!
//! ```sh
//! cargo bench --bench billing_load -- --agents 1000 --rounds 20 --events 5000 --concurrency 32
//! ```
//!
//! It starts the server (release build, fresh SQLite, loopback, a known webhook secret), creates
//! an org with N agents through the admin API, connects every agent over `/v1/signal` and sets it
//! available, then links the org to Stripe customer `cus_1` with a signed
//! `customer.subscription.created` (its `metadata.org_id` names the org).
//!
//! 1. **Enforcement.** Each round POSTs a signed `invoice.payment_failed` for `cus_1` and waits
//!    until every agent has received `presence` `away` with reason `payment_failed`. An agent's
//!    latency is from just before the POST to its receipt of that message, both on this process's
//!    clock; the round's maximum is the "last agent told". Then a signed `invoice.paid` (a later
//!    `created`) makes the org `active` again, every agent chooses `available` again, and the
//!    next round starts once the server is idle (so one round's persistence does not spill into
//!    the next). One warm-up round runs first and is not counted.
//! 2. **Ingest.** M distinct signed `charge.refunded` events (a type frontdesk acknowledges and
//!    ignores) are POSTed with a bounded number in flight; every one must answer 200 and be new.
//!    Throughput is M over the time to the last answer. The processor's queue is then watched
//!    until it has drained.
//!
//! Server CPU comes from `/proc/<pid>/stat` (utime + stime).

mod common;

use common::{cpu_ticks, now_s, percentile, token, JWT_SECRET};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

const WEBHOOK_SECRET: &str = "whsec_load_test_0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");
/// How long any one wait (every agent told, queue drained) may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(120);

struct Args {
    agents: usize,
    rounds: usize,
    events: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        agents: 1000,
        rounds: 20,
        events: 5000,
        concurrency: 32,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let val = v.get(i + 1).and_then(|s| s.parse::<usize>().ok());
        match (v[i].as_str(), val) {
            ("--agents", Some(n)) => a.agents = n.max(1),
            ("--rounds", Some(n)) => a.rounds = n.max(1),
            ("--events", Some(n)) => a.events = n.max(1),
            ("--concurrency", Some(n)) => a.concurrency = n.max(1),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// A Stripe event body, as in `tests/billing.rs`.
fn event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    json!({"id": id, "object": "event", "type": kind, "created": created, "data": {"object": object}})
        .to_string()
        .into_bytes()
}

fn invoice() -> Value {
    json!({"id": "in_1", "object": "invoice", "customer": "cus_1", "subscription": "sub_1"})
}

/// A valid `Stripe-Signature` for `body`, timestamped now.
fn signature(body: &[u8]) -> String {
    frontdesk_billing::sign(WEBHOOK_SECRET.as_bytes(), now_s(), body)
}

/// POSTs a signed webhook; returns the status and the answer's body.
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>, sig: String) -> (u16, String) {
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(body)
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// POSTs a signed webhook that must be accepted as new.
async fn deliver(http: &reqwest::Client, url: &str, body: Vec<u8>, sig: String) {
    let (st, text) = post(http, url, body, sig).await;
    assert!(
        st == 200 && text.contains("\"duplicate\":false"),
        "{st}: {text}"
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, agent_token: String) -> Ws {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{base}/v1/signal"), None, true)
            .await
            .expect("connect");
    let auth = json!({"type": "auth", "id": 1, "agent_token": agent_token});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["re"] == 1 {
                assert_eq!(v["type"], "welcome", "{v}");
                return ws;
            }
        }
    }
}

/// What an agent saw that the bench waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// `presence` `away`, reason `payment_failed`.
    Away,
    /// `org_status` `active`.
    Active,
    /// The reply to our `set_presence` `available`.
    Available,
}

/// (agent index, what it saw or an error frame, when it was received).
type Report = (usize, Result<Seen, String>, Instant);

/// One agent's connection: reports what it receives, and chooses `available` (with the request
/// id sent on `go`) whenever told to.
async fn agent(
    i: usize,
    mut ws: Ws,
    mut go: watch::Receiver<u64>,
    tx: mpsc::UnboundedSender<Report>,
) {
    loop {
        tokio::select! {
            m = ws.next() => {
                let Some(Ok(m)) = m else {
                    let _ = tx.send((i, Err("connection closed".into()), Instant::now()));
                    return;
                };
                let at = Instant::now();
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                let seen = match (v["type"].as_str(), v["presence"].as_str()) {
                    (Some("presence"), Some("away")) if v["reason"] == "payment_failed" => {
                        Ok(Seen::Away)
                    }
                    (Some("presence"), Some("available")) if v["re"].is_u64() => Ok(Seen::Available),
                    (Some("org_status"), _) if v["status"] == "active" => Ok(Seen::Active),
                    (Some("error"), _) => Err(t.to_string()),
                    _ => continue,
                };
                if tx.send((i, seen, at)).is_err() {
                    return;
                }
            }
            changed = go.changed() => {
                if changed.is_err() {
                    return;
                }
                let id = *go.borrow_and_update();
                let msg = json!({"type": "set_presence", "presence": "available", "id": id});
                if ws.send(Message::Text(msg.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits until every one of the `n` agents has seen `want`; returns when each saw it.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Report>, n: usize, want: Seen) -> Vec<Instant> {
    let mut at: Vec<Option<Instant>> = vec![None; n];
    let mut left = n;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while left > 0 {
        let Ok(Some((i, seen, t))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            panic!("{left} of {n} agents never saw {want:?}");
        };
        match seen {
            Ok(s) if s == want => {
                assert!(at[i].is_none(), "agent {i} saw {want:?} twice");
                at[i] = Some(t);
                left -= 1;
            }
            Ok(s) => panic!("agent {i} saw {s:?} while the bench waited for {want:?}"),
            Err(e) => panic!("agent {i}: {e}"),
        }
    }
    at.into_iter().flatten().collect()
}

/// Waits until the server has used at most 2 ticks of CPU in a quarter second.
async fn settle(pid: u32) {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        let c = cpu_ticks(pid);
        tokio::time::sleep(Duration::from_millis(250)).await;
        if cpu_ticks(pid) - c <= 2 {
            return;
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

#[tokio::main]
async fn main() {
    let a = args();
    let n = a.agents;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/billing.db", dir.path().display());
    let created = common::create_org(BIN, &db, "Billing load", n + 1);
    let (org, pool) = (created.org, created.pool);

    let mut server = Command::new(BIN)
        .args(["serve", "--log-format", "json"])
        .env("FRONTDESK_DATABASE_URL", &db)
        .env("FRONTDESK_LISTEN", "127.0.0.1:0")
        .env("FRONTDESK_JWT_SECRET", JWT_SECRET)
        .env("FRONTDESK_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("RUST_LOG", "warn,frontdesk=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = server.id();
    let base = common::listening_addr(&mut server);
    let hook = format!("http://{base}/v1/webhooks/stripe");
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();

    // Agents, through the admin API, 16 requests in flight.
    let admin = token("admin", &org, "admin");
    let t0 = Instant::now();
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(16) {
        let reqs = chunk.iter().map(|i| {
            http.post(format!("http://{base}/v1/agents"))
                .bearer_auth(&admin)
                .json(&json!({"user_id": format!("agent-{i}"), "email": format!("a{i}@load.example"),
                              "display_name": format!("Agent {i}"), "pools": [{"pool_id": pool, "tier": 1}]}))
                .send()
        });
        for r in futures_util::future::join_all(reqs).await {
            assert_eq!(r.unwrap().status().as_u16(), 201);
        }
    }
    eprintln!("created {n} agents in {:.1} s", t0.elapsed().as_secs_f64());

    // Every agent online and available.
    let t0 = Instant::now();
    let (go, _) = watch::channel(0u64);
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    for chunk in ids.chunks(100) {
        let conns = chunk
            .iter()
            .map(|i| connect(&base, token(&format!("agent-{i}"), &org, "agent")));
        let conns = futures_util::future::join_all(conns).await;
        for (i, ws) in chunk.iter().zip(conns) {
            tokio::spawn(agent(*i, ws, go.subscribe(), tx.clone()));
        }
    }
    let mut request_id = 2;
    go.send_replace(request_id);
    collect(&mut rx, n, Seen::Available).await;
    eprintln!(
        "{n} agents connected and available in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Link the org to customer cus_1. Every `created` below is later than the one before.
    let mut created = now_s() - 86_400;
    let link = event(
        "evt_link",
        "customer.subscription.created",
        created,
        json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
               "cancel_at_period_end": false, "metadata": {"org_id": org}}),
    );
    let sig = signature(&link);
    deliver(&http, &hook, link, sig).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle(pid).await;

    // Phase 1: payment failed -> every agent away; paid -> active, available again.
    let mut all = Vec::with_capacity(n * a.rounds);
    let mut last = Vec::with_capacity(a.rounds);
    let mut answered = Vec::with_capacity(a.rounds);
    let (mut window, mut window_ticks) = (Duration::ZERO, 0u64);
    let (mut phase_ticks, mut phase_time) = (0u64, Duration::ZERO);
    for round in 0..=a.rounds {
        let (phase_cpu0, phase_t0) = (cpu_ticks(pid), Instant::now());
        created += 10;
        let body = event(
            &format!("evt_fail_{round}"),
            "invoice.payment_failed",
            created,
            invoice(),
        );
        let sig = signature(&body);
        let cpu0 = cpu_ticks(pid);
        let posted = Instant::now();
        deliver(&http, &hook, body, sig).await;
        let acked = micros(posted.elapsed());
        let lat: Vec<u64> = collect(&mut rx, n, Seen::Away)
            .await
            .iter()
            .map(|t| micros(t.duration_since(posted)))
            .collect();
        let max = lat.iter().copied().max().unwrap_or(0);
        let ticks = cpu_ticks(pid) - cpu0;

        created += 10;
        let body = event(
            &format!("evt_paid_{round}"),
            "invoice.paid",
            created,
            invoice(),
        );
        let sig = signature(&body);
        deliver(&http, &hook, body, sig).await;
        collect(&mut rx, n, Seen::Active).await;
        request_id += 1;
        go.send_replace(request_id);
        collect(&mut rx, n, Seen::Available).await;
        settle(pid).await;

        if round == 0 {
            eprintln!(
                "warm-up round (not counted): last agent told after {:.2} ms",
                max as f64 / 1000.0
            );
            continue;
        }
        eprintln!(
            "round {round}: webhook answered after {:.2} ms, last agent told after {:.2} ms",
            acked as f64 / 1000.0,
            max as f64 / 1000.0
        );
        all.extend(lat);
        last.push(max);
        answered.push(acked);
        window += Duration::from_micros(max);
        window_ticks += ticks;
        phase_ticks += cpu_ticks(pid) - phase_cpu0;
        phase_time += phase_t0.elapsed();
    }

    // Phase 2: verified ingest.
    created += 10;
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let results: Vec<(u16, String, u64)> = futures_util::stream::iter(0..a.events)
        .map(|i| {
            let (http, hook) = (&http, &hook);
            async move {
                let body = event(
                    &format!("evt_ingest_{i}"),
                    "charge.refunded",
                    created + i as i64,
                    json!({"id": format!("ch_{i}"), "object": "charge"}),
                );
                let sig = signature(&body);
                let start = Instant::now();
                let (st, text) = post(http, hook, body, sig).await;
                (st, text, micros(start.elapsed()))
            }
        })
        .buffer_unordered(a.concurrency)
        .collect()
        .await;
    let ingest_time = t0.elapsed().as_secs_f64();
    let ingest_ticks = cpu_ticks(pid) - cpu0;
    let refused: Vec<&(u16, String, u64)> = results
        .iter()
        .filter(|(st, text, _)| *st != 200 || !text.contains("\"duplicate\":false"))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} webhooks not accepted as new, e.g. {:?}",
        refused.len(),
        a.events,
        refused[0]
    );
    let mut ingest_lat: Vec<u64> = results.iter().map(|r| r.2).collect();
    ingest_lat.sort_unstable();

    // The processor works through the stored events after (and while) they are answered.
    let store = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db)
        .await
        .unwrap();
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut queued: i64 = -1;
    while t0.elapsed() < PATIENCE {
        queued = sqlx::query_scalar(
            "SELECT count(*) FROM stripe_events WHERE status IN ('pending', 'processing')",
        )
        .fetch_one(&store)
        .await
        .unwrap();
        if queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_time = t0.elapsed().as_secs_f64();
    let drain_ticks = cpu_ticks(pid) - cpu0;
    store.close().await;

    all.sort_unstable();
    last.sort_unstable();
    answered.sort_unstable();
    println!(
        "billing_load: {n} agents, {} rounds (+1 warm-up); {} webhooks at {} in flight",
        a.rounds, a.events, a.concurrency
    );
    println!(
        "  forced away (payment_failed POST start -> presence away received), every agent: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} agent-rounds",
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        all.len()
    );
    println!(
        "  last agent told, per round: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} rounds \
         (target p99 < 200 ms)",
        percentile(&last, 0.50),
        percentile(&last, 0.99),
        percentile(&last, 1.0),
        last.len()
    );
    println!(
        "  webhook answered (POST start -> 200): p50 {:.2} ms, max {:.2} ms",
        percentile(&answered, 0.50),
        percentile(&answered, 1.0)
    );
    println!(
        "  server CPU: {:.2} s in the enforcement windows ({:.2} s summed, POST -> last agent told); \
         {:.2} s over {:.1} s for the whole rounds (with paid, available again and settling)",
        window_ticks as f64 / 100.0,
        window.as_secs_f64(),
        phase_ticks as f64 / 100.0,
        phase_time.as_secs_f64()
    );
    println!(
        "  webhook ingest: {} verified events in {:.2} s = {:.0}/s (target >= 2000/s); \
         request p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        a.events,
        ingest_time,
        a.events as f64 / ingest_time,
        percentile(&ingest_lat, 0.50),
        percentile(&ingest_lat, 0.99),
        percentile(&ingest_lat, 1.0)
    );
    println!(
        "  server CPU during ingest: {:.2} s over {:.2} s ({:.0}% of one core)",
        ingest_ticks as f64 / 100.0,
        ingest_time,
        ingest_ticks as f64 / ingest_time
    );
    if queued == 0 {
        println!(
            "  processor queue drained {drain_time:.2} s after the last answer (server CPU {:.2} s)",
            drain_ticks as f64 / 100.0
        );
    } else {
        println!(
            "  processor queue NOT drained: {queued} events still queued {drain_time:.0} s after the last answer"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
