//! frontdesk under load: the release binary started with a fresh SQLite database, or a server
//! already running elsewhere (`--target`); calls set up through the documented signaling
//! protocol (`docs/protocol.md`): agents go available, visitors request calls, agents accept,
//! both sides send `media_offer`, and the org's admin adds the extra subscribers of a call as
//! watchers (`watch_offer`).
//!
//! On a server it did not start, the tool works inside one existing organization, through its
//! admin API as one of its admins (`--org`, `--admin`, tokens signed with the server's
//! `FRONTDESK_JWT_SECRET` or `_FILE`): it makes a pool of its own that a routing rule for a
//! domain of its own sends its visitors to, a widget key, one agent per call and an admin
//! agent of its own for the watchers (so that no one's console is replaced by the tool's
//! signaling connection), and removes the agents and the pool and revokes the key when the
//! run ends or fails part way (`Drop`). On SIGINT, SIGTERM or SIGHUP it stops making
//! anything, deletes everything that carries its tag and exits (`clean_up_on_signals`). Only
//! a kill it cannot catch leaves them; they are named `load-<pid>-<4 hex>-<run>`, and the
//! tool prints that name as it starts each run.

use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{create_org, listening_addr, Jwt, JWT_SECRET};
use crate::peer::{direction, Peer, Role};
use crate::{Setup, Shape};

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");
/// How long one signaling answer may take.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long one admin API or `/metrics` request to a server may take.
const HTTP_PATIENCE: Duration = Duration::from_secs(10);

pub struct Frontdesk {
    /// The server the tool started (none with `--target`).
    child: Option<Child>,
    pub pid: Option<u32>,
    base: String,
    org: String,
    pool: String,
    widget_key: String,
    /// The org admin whose tokens the admin API calls carry, the admin agent whose signaling
    /// connection asks for the watchers (the tool's own on a server it did not start), and the
    /// prefix of its agents' user ids.
    admin: String,
    watcher_admin: String,
    agent_prefix: String,
    /// Where the tool's visitors say they are (the pool's routing rule matches it).
    page_url: String,
    jwt: Jwt,
    _dir: Option<tempfile::TempDir>,
    /// Media workers under a CPU budget (`--worker-budget`); dropped after the process is
    /// killed, which empties their cgroups.
    pub budget: Option<crate::budget::Budget>,
    /// What the tool made on a server it did not start, to remove when the run ends.
    made: Made,
    http: reqwest::Client,
}

/// Records the tool made through the admin API of a server it did not start.
#[derive(Default, Clone)]
struct Made {
    agents: Vec<String>,
    widget_key: Option<String>,
    pool: Option<String>,
}

/// Every record the tool makes on a server it did not start carries this tag: `load-`, this
/// process's id and four hex digits of the moment it started (two tools of the same pid on
/// two machines, or a killed run's leftovers, do not collide with it).
fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("load-{}-{:04x}", std::process::id(), nanos & 0xffff)
    })
}

/// The gate between the runs and a signal's cleanup (`clean_up_on_signals`). A call that
/// makes or removes records on a target counts itself in `BUSY` first, then looks at `CLOSED`;
/// the cleanup closes the gate first, then waits for `BUSY` to empty. So once it starts to
/// delete, nothing more is made, and every record that was being made is on the server to be
/// found by its tag.
static CLOSED: AtomicBool = AtomicBool::new(false);
static BUSY: AtomicUsize = AtomicUsize::new(0);
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// Holds a place in `BUSY` while a call makes or removes records; `None` once a signal's
/// cleanup has closed the gate.
struct Busy;

impl Busy {
    fn enter() -> Option<Busy> {
        BUSY.fetch_add(1, Ordering::AcqRel);
        if CLOSED.load(Ordering::Acquire) {
            BUSY.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Called before the tool exits: if a signal's cleanup is under way, it ends the process
/// itself when done, so this waits for it rather than cut it short.
pub fn before_exit() {
    if CLOSED.load(Ordering::Acquire) {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Frontdesk {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        // A server that stays up: remove what the run made there, on a thread and runtime
        // of their own (this may run while the run's task unwinds). After a signal the
        // cleanup removes everything with the tool's tag instead.
        let Some(busy) = Busy::enter() else { return };
        let (base, token, made) = (self.base.clone(), self.admin_token(), self.made.clone());
        let cleaned = std::thread::Builder::new()
            .name("load-cleanup".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                Some(rt.block_on(remove(&base, &token, &made)))
            })
            .ok()
            .and_then(|t| t.join().ok().flatten());
        drop(busy);
        report_cleanup(
            &self.base,
            cleaned.ok_or_else(|| "no thread or runtime for it".to_owned()),
        );
    }
}

/// Says what a cleanup on `base` could not remove, if anything.
fn report_cleanup(base: &str, outcome: Result<Vec<String>, String>) {
    match outcome {
        Ok(left) if left.is_empty() => {}
        Ok(left) => say(&format!(
            "media_load: could not remove from {base}: {} (remove them by hand)",
            left.join(", ")
        )),
        Err(e) => say(&format!(
            "media_load: could not clean up on {base} ({e}); remove what is named {}* by hand",
            process_tag()
        )),
    }
}

/// A line on stderr that cannot panic (after a hangup, stderr may be gone).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Deletes (and for a widget key, revokes) what `made` lists: agents, then the key, then the
/// pool with its rule. Returns what could not be; after a request that could not connect, the
/// rest are not tried (each would wait out its timeout too).
async fn remove(base: &str, admin: &str, made: &Made) -> Vec<String> {
    let paths: Vec<String> = made
        .agents
        .iter()
        .map(|a| format!("/v1/agents/{a}"))
        .chain(
            made.widget_key
                .iter()
                .map(|k| format!("/v1/widget-keys/{k}")),
        )
        .chain(made.pool.iter().map(|p| format!("/v1/pools/{p}")))
        .collect();
    delete_all(base, admin, paths).await
}

async fn delete_all(base: &str, admin: &str, paths: Vec<String>) -> Vec<String> {
    let http = http_client();
    let mut left = Vec::new();
    let mut paths = paths.into_iter();
    while let Some(path) = paths.next() {
        let r = http
            .delete(format!("http://{base}{path}"))
            .bearer_auth(admin)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {}
            Err(e) if e.is_connect() => {
                left.push(path);
                left.extend(paths);
                break;
            }
            _ => left.push(path),
        }
    }
    left
}

/// Everything on `t` that carries this process's tag: agents, live widget keys, pools, in
/// the order they are to be removed.
async fn tagged(t: &Target, admin: &str) -> Result<Vec<String>, String> {
    let http = http_client();
    let tag = process_tag();
    let mut paths = Vec::new();
    // Each list, and the field that carries the tag there.
    for (list, name) in [
        ("agents", "user_id"),
        ("widget-keys", "label"),
        ("pools", "name"),
    ] {
        let items: Vec<Value> = http
            .get(format!("http://{}/v1/{list}", t.base))
            .bearer_auth(admin)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("listing {list}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("listing {list}: {e}"))?;
        for item in items {
            let ours = item[name].as_str().is_some_and(|n| n.starts_with(tag));
            let live = item.get("revoked_at_ms").is_none_or(Value::is_null);
            if let (true, true, Some(id)) = (ours, live, item["id"].as_str()) {
                paths.push(format!("/v1/{list}/{id}"));
            }
        }
    }
    Ok(paths)
}

/// On SIGINT, SIGTERM or SIGHUP (those not ignored when the tool started), closes the gate
/// (`Busy`), waits for what is being made or removed, deletes everything on `t` that carries
/// the tool's tag, and ends the process as that signal would (exit 128 + its number). A
/// second signal meanwhile ends it at once, naming the tag. Without this an interrupted run
/// would leave its agents holding the org's seats. Returns once the handlers are in place, so
/// that no run starts before a signal would be caught.
pub fn clean_up_on_signals(t: &Target) {
    let t = t.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel::<bool>();
    let spawned = std::thread::Builder::new()
        .name("load-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send(false);
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                // A signal the tool was started with ignored (nohup, a background job) stays
                // ignored; each handler is in place as its stream is made.
                let mut streams = Vec::new();
                for (kind, n) in [
                    (SignalKind::interrupt(), libc::SIGINT),
                    (SignalKind::terminate(), libc::SIGTERM),
                    (SignalKind::hangup(), libc::SIGHUP),
                ] {
                    if ignored(n) {
                        continue;
                    }
                    match signal(kind) {
                        Ok(s) => streams.push((s, n)),
                        Err(_) => {
                            let _ = ready_tx.send(false);
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(true);
                let first = next_signal(&mut streams).await;
                CLOSED.store(true, Ordering::Release);
                say(&format!(
                    "media_load: interrupted; removing what this tool made on {} (named {}*)",
                    t.base,
                    process_tag()
                ));
                let cleanup = std::thread::Builder::new()
                    .name("load-cleanup".into())
                    .spawn(move || remove_tagged(&t, first));
                if cleanup.is_err() {
                    std::process::exit(128 + first);
                }
                let again = next_signal(&mut streams).await;
                say(&format!(
                    "media_load: interrupted again; records named {}* may be left on the server",
                    process_tag()
                ));
                std::process::exit(128 + again);
            });
        });
    let installed = spawned.is_ok() && ready.recv().unwrap_or(false);
    if !installed {
        say("media_load: cannot catch signals here; an interrupted run leaves what it made on the server");
    }
}

/// The signal's number, once one of `streams` has one.
async fn next_signal(streams: &mut [(tokio::signal::unix::Signal, i32)]) -> i32 {
    let waits = streams.iter_mut().map(|(s, n)| {
        let n = *n;
        Box::pin(async move {
            s.recv().await;
            n
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// Whether signal `n` is ignored in this process (as `nohup` leaves SIGHUP).
fn ignored(n: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(n, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The signal cleanup proper: waits (up to a minute) for what is being made or removed, then
/// deletes what carries the tag, and exits as signal `n` would.
fn remove_tagged(t: &Target, n: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while BUSY.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = t.jwt.token(&t.admin, &t.org, "admin");
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let paths = tagged(t, &token).await?;
                Ok(delete_all(&t.base, &token, paths).await)
            })
        });
    report_cleanup(&t.base, outcome);
    std::process::exit(128 + n);
}

/// The client for a server's admin API and `/metrics`: one per server, every request bounded.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(HTTP_PATIENCE)
        .build()
        .expect("an HTTP client")
}

/// `taskset -c CPUS` before a command, when CPUS is given.
pub fn pinned(cpus: Option<&str>, program: &str) -> Command {
    match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// Where and as whom to load a frontdesk that is already running (`--target`).
#[derive(Clone)]
pub struct Target {
    /// `host:port` of its HTTP listener.
    pub base: String,
    pub org: String,
    /// The user id (token `sub`) of an admin of `org`.
    pub admin: String,
    pub jwt: Jwt,
}

impl Frontdesk {
    /// Starts `frontdesk serve` on loopback (HTTP and media on ephemeral ports).
    pub fn start(cpus: Option<&str>, workers: Option<usize>, seats: usize) -> Frontdesk {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = format!("sqlite://{}/load.db", dir.path().display());
        let created = create_org(BIN, &db, "Media load", seats + 2);
        let mut cmd = pinned(cpus, BIN);
        cmd.args(["serve", "--log-format", "json"])
            .env("FRONTDESK_DATABASE_URL", &db)
            .env("FRONTDESK_LISTEN", "127.0.0.1:0")
            .env("FRONTDESK_MEDIA_UDP", "127.0.0.1:0")
            .env("FRONTDESK_JWT_SECRET", JWT_SECRET)
            .env("FRONTDESK_MEDIA_MAX_WATCHERS", "256")
            .env("RUST_LOG", "warn,frontdesk=info")
            .stderr(Stdio::piped());
        if let Some(w) = workers {
            cmd.env("FRONTDESK_MEDIA_WORKERS", w.to_string());
        }
        let mut child = cmd.spawn().expect("frontdesk serve starts");
        let pid = child.id();
        let base = listening_addr(&mut child);
        Frontdesk {
            child: Some(child),
            pid: Some(pid),
            base,
            org: created.org,
            pool: created.pool,
            widget_key: created.widget_key,
            admin: "admin".to_owned(),
            watcher_admin: "admin".to_owned(),
            agent_prefix: "agent-".to_owned(),
            page_url: "https://shop.load.example/".to_owned(),
            jwt: Jwt::local(),
            _dir: Some(dir),
            budget: None,
            made: Made::default(),
            http: http_client(),
        }
    }

    /// A server already running: makes, as `t.admin`, a pool of the tool's own with a routing
    /// rule for a domain of its own (so its visitors reach its agents and no one else's), a
    /// widget key and an admin agent of its own for the watchers. What it made is removed when
    /// this is dropped, or on a signal (`clean_up_on_signals`).
    pub async fn remote(t: &Target) -> Frontdesk {
        // Unique to this run: the tool's tag and the runs it made before.
        let tag = format!(
            "{}-{}",
            process_tag(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        );
        println!(
            "  on {}: the run's pool, widget key and agents are named {tag}",
            t.base
        );
        let mut f = Frontdesk {
            child: None,
            pid: None,
            base: t.base.clone(),
            org: t.org.clone(),
            pool: String::new(),
            widget_key: String::new(),
            admin: t.admin.clone(),
            watcher_admin: format!("{tag}-admin"),
            agent_prefix: format!("{tag}-agent-"),
            page_url: format!("https://{tag}.load.example/"),
            jwt: t.jwt.clone(),
            _dir: None,
            budget: None,
            made: Made::default(),
            http: http_client(),
        };
        let admin = f
            .admin_api(
                "POST",
                "/v1/agents",
                json!({"user_id": f.watcher_admin, "email": format!("{tag}-admin@load.example"),
                       "display_name": "Load tool admin", "role": "admin"}),
            )
            .await;
        f.made
            .agents
            .push(admin["id"].as_str().expect("an agent id").to_owned());
        let pool = f.admin_api("POST", "/v1/pools", json!({"name": tag})).await;
        f.pool = pool["id"].as_str().expect("a pool id").to_owned();
        f.made.pool = Some(f.pool.clone());
        f.admin_api(
            "POST",
            &format!("/v1/pools/{}/rules", f.pool),
            json!({"domain": format!("{tag}.load.example"), "priority": 1000}),
        )
        .await;
        let key = f
            .admin_api("POST", "/v1/widget-keys", json!({"label": tag}))
            .await;
        f.widget_key = key["key"].as_str().expect("a widget key").to_owned();
        f.made.widget_key = Some(key["id"].as_str().expect("a widget key id").to_owned());
        f
    }

    fn admin_token(&self) -> String {
        self.jwt.token(&self.admin, &self.org, "admin")
    }

    /// One call of the admin API that must succeed; its JSON answer.
    async fn admin_api(&self, method: &str, path: &str, body: Value) -> Value {
        // On a server the tool did not start, nothing is made once a signal's cleanup began.
        let _busy = self.child.is_none().then(|| {
            Busy::enter().unwrap_or_else(|| panic!("interrupted: not making anything more"))
        });
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let r = self
            .http
            .request(method.clone(), format!("http://{}{path}", self.base))
            .bearer_auth(self.admin_token())
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.base));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {path} on {}: {status} {text}",
            self.base
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// What the load tool reads from the server's `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let body = self
            .http
            .get(format!("http://{}/metrics", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/metrics on {}: {e}", self.base))
            .text()
            .await
            .unwrap_or_else(|e| panic!("/metrics on {}: {e}", self.base));
        let value = |name: &str| -> Option<f64> {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        let counter = |name: &str| value(name).map_or(0, |v| v as u64);
        Metrics {
            forward_delay: body
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("frontdesk_media_forward_delay_seconds_bucket{le=\"")
                })
                .filter_map(|l| {
                    let (le, n) = l.split_once("\"} ")?;
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse::<f64>().ok()? * 1e6
                    };
                    Some((le, n.trim().parse().ok()?))
                })
                .collect(),
            worker_calls: body
                .lines()
                .filter_map(|l| l.strip_prefix("frontdesk_media_worker_calls{worker=\""))
                .filter_map(|l| l.split_once("\"} ")?.1.trim().parse().ok())
                .collect(),
            slow_turns: SlowTurns {
                turns: counter("frontdesk_media_slow_turns_total"),
                seconds: value("frontdesk_media_slow_turn_seconds_total").unwrap_or(0.0),
                received: counter("frontdesk_media_slow_turn_datagrams_received_total"),
                sent: counter("frontdesk_media_slow_turn_datagrams_sent_total"),
            },
            coalesced: counter("frontdesk_media_datagrams_coalesced_total"),
            forwarded: counter("frontdesk_media_packets_forwarded_total"),
            process_cpu_s: value("process_cpu_seconds_total"),
            process_rss_bytes: value("process_resident_memory_bytes").map(|b| b as u64),
        }
    }

    /// Makes the agents the calls need (one per call) through the admin API.
    pub async fn agents(&mut self, n: usize) {
        for i in 0..n {
            let a = self
                .admin_api(
                    "POST",
                    "/v1/agents",
                    json!({"user_id": format!("{}{i}", self.agent_prefix),
                           "email": format!("a{i}@load.example"),
                           "display_name": format!("Load agent {i}"),
                           "pools": [{"pool_id": self.pool, "tier": 1}]}),
                )
                .await;
            if self.child.is_none() {
                self.made
                    .agents
                    .push(a["id"].as_str().expect("an agent id").to_owned());
            }
        }
    }

    /// Sets up every call of `shape`, each from `agent_available` to `media_answer`, and the
    /// watchers; returns the peers ready to run.
    pub async fn setup(
        &self,
        setup: &mut Setup,
        shape: Shape,
        epoch: Instant,
        rate: crate::peer::Rate,
    ) {
        let mut admin = Sig::connect(
            &self.base,
            json!({"agent_token": self.jwt.token(&self.watcher_admin, &self.org, "admin")}),
        )
        .await;
        for call in 0..shape.calls() {
            let mut agent = Sig::connect(
                &self.base,
                json!({"agent_token": self.jwt.token(&format!("{}{call}", self.agent_prefix), &self.org, "agent")}),
            )
            .await;
            agent
                .request(json!({"type": "set_presence", "presence": "available"}))
                .await;
            let mut visitor = Sig::connect(
                &self.base,
                json!({"widget_key": self.widget_key, "page_url": self.page_url}),
            )
            .await;
            let requested = visitor.request(json!({"type": "request_call"})).await;
            let call_id = requested["call_id"].as_str().expect("call_id").to_owned();
            agent.wait(|v| v["type"] == "ring").await;
            agent
                .request(json!({"type": "accept", "call_id": call_id}))
                .await;
            visitor.wait(|v| v["type"] == "media_config").await;
            agent.wait(|v| v["type"] == "media_config").await;

            let (visitor_role, agent_role) = match shape {
                Shape::Broadcast { .. } => (
                    Role::Publish {
                        n: setup.publisher(shape.subscribers()),
                        rate,
                    },
                    Role::Subscribe,
                ),
                Shape::Pairs { .. } => (
                    Role::Both {
                        n: setup.publisher(1),
                        rate,
                    },
                    Role::Both {
                        n: setup.publisher(1),
                        rate,
                    },
                ),
            };
            for (sig, role) in [(&mut visitor, visitor_role), (&mut agent, agent_role)] {
                let (mut peer, offer, pending) = Peer::offerer(epoch, direction(&role)).await;
                let answer = sig
                    .request(json!({"type": "media_offer", "call_id": call_id, "sdp": offer}))
                    .await;
                peer.accept_answer(pending, answer["sdp"].as_str().expect("sdp"))
                    .expect("the SFU's answer");
                setup.run(peer, role);
            }
            if let Shape::Broadcast { subscribers, .. } = shape {
                for w in 1..subscribers {
                    let (mut peer, offer, pending) =
                        Peer::offerer(epoch, direction(&Role::Subscribe)).await;
                    let answer = admin
                        .request(json!({"type": "watch_offer", "call_id": call_id,
                                        "watch_id": w, "sdp": offer}))
                        .await;
                    peer.accept_answer(pending, answer["sdp"].as_str().expect("sdp"))
                        .expect("the SFU's answer");
                    setup.run(peer, Role::Subscribe);
                }
            }
            setup.keep.push(Box::new(agent));
            setup.keep.push(Box::new(visitor));
        }
        setup.keep.push(Box::new(admin));
    }
}

/// A signaling connection: a task reads and writes the socket (so pings are answered), this
/// side sends requests and waits for messages.
pub struct Sig {
    out: mpsc::UnboundedSender<String>,
    inbox: mpsc::UnboundedReceiver<Value>,
    early: VecDeque<Value>,
    next_id: u64,
    /// Requests sent, to stay inside the server's rate limit (30 at once, then 10/s).
    sent: u32,
}

impl Sig {
    async fn connect(base: &str, credential: Value) -> Sig {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{base}/v1/signal"))
            .await
            .expect("/v1/signal accepts");
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, inbox) = mpsc::unbounded_channel();
        tokio::task::spawn_local(async move {
            let mut ws = ws;
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                                let _ = in_tx.send(v);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    o = out_rx.recv() => match o {
                        Some(t) => {
                            if ws.send(Message::Text(t.into())).await.is_err() {
                                return;
                            }
                        }
                        None => {
                            let _ = ws.close(None).await;
                            return;
                        }
                    },
                }
            }
        });
        let mut sig = Sig {
            out,
            inbox,
            early: VecDeque::new(),
            next_id: 1,
            sent: 0,
        };
        let mut auth = credential;
        auth["type"] = "auth".into();
        let welcome = sig.request(auth).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        sig
    }

    /// Sends a request and returns its answer; an error answer stops the run.
    async fn request(&mut self, mut msg: Value) -> Value {
        self.sent += 1;
        if self.sent > 20 {
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
        let id = self.next_id;
        self.next_id += 1;
        msg["id"] = id.into();
        let _ = self.out.send(msg.to_string());
        let v = self.wait(|v| v["re"] == id).await;
        if v["type"] == "error" {
            // Without its credentials and SDP: a token here may be a deployment's.
            for secret in ["agent_token", "widget_key", "sdp"] {
                if msg.get(secret).is_some() {
                    msg[secret] = "…".into();
                }
            }
            let message = v["message"].as_str().unwrap_or_default();
            if v["code"] == "too_many_watchers" && message.starts_with("the call already has") {
                panic!(
                    "the server refused a watcher ({v}): this shape needs FRONTDESK_MEDIA_MAX_WATCHERS \
                     of at least its subscribers per call less one on the server (the default is 8)"
                );
            }
            panic!("answer to {msg}: {v}");
        }
        v
    }

    /// The first message (kept or new) that matches.
    async fn wait(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.early.iter().position(&want) {
            return self.early.remove(i).expect("index just found");
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let v = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .expect("the server answered in time")
                .expect("the signaling connection stays open");
            if want(&v) {
                return v;
            }
            self.early.push_back(v);
            if self.early.len() > 256 {
                self.early.pop_front();
            }
        }
    }
}

/// Readings from frontdesk's `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// The forwarding-delay histogram (`frontdesk_media_forward_delay_seconds`): (upper bound
    /// in µs, cumulative count), the last bound infinite.
    pub forward_delay: Vec<(f64, u64)>,
    /// Calls each media worker holds (`frontdesk_media_worker_calls`), by worker.
    pub worker_calls: Vec<usize>,
    /// The media workers' loop turns that took over 1 ms (`frontdesk_media_slow_turn*`).
    pub slow_turns: SlowTurns,
    /// Datagrams sent as segments of UDP GSO sends.
    pub coalesced: u64,
    /// Packets forwarded.
    pub forwarded: u64,
    /// The server process's CPU time and resident memory (`process_cpu_seconds_total`,
    /// `process_resident_memory_bytes`): how the tool reads a server it did not start.
    pub process_cpu_s: Option<f64>,
    pub process_rss_bytes: Option<u64>,
}

/// The media workers' loop turns that took over 1 ms: how many, their wall time, and the
/// datagrams they received and sent (counters; a window's are the difference of two readings).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlowTurns {
    pub turns: u64,
    pub seconds: f64,
    pub received: u64,
    pub sent: u64,
}

impl SlowTurns {
    /// What was counted between `before` and `self`.
    pub fn since(&self, before: &SlowTurns) -> SlowTurns {
        SlowTurns {
            turns: self.turns.saturating_sub(before.turns),
            seconds: (self.seconds - before.seconds).max(0.0),
            received: self.received.saturating_sub(before.received),
            sent: self.sent.saturating_sub(before.sent),
        }
    }
}
