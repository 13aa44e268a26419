//! Janus VideoRoom under the same load: Janus (Debian's `janus`) started by
//! `benches/janus/start-janus.sh` with a configuration the script writes (loopback only, HTTP
//! API, VideoRoom plugin), driven through Janus's own HTTP API: one session, one room per call,
//! a handle per publisher (`joinandconfigure` with our offer) and per subscriber (`join` as
//! subscriber of the feed, Janus offers, `start` with our answer). Events arrive on the
//! session's long poll.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::process::{Child, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::frontdesk::pinned;
use crate::peer::{direction, Peer, Rate, Role};
use crate::{Setup, Shape};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/janus/start-janus.sh");
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Janus {
    child: Child,
    pub pid: u32,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Janus {
    pub async fn start(cpus: Option<&str>) -> Janus {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("bound").port()
        };
        let child = pinned(cpus, "bash")
            .arg(SCRIPT)
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start-janus.sh runs (is the Debian package janus installed?)");
        let pid = child.id();
        let url = format!("http://127.0.0.1:{port}/janus");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let up = http
                .get(format!("{url}/info"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Janus did not answer on {url} within 30 s; see {}/janus.log",
                dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Janus {
            child,
            pid,
            url,
            _dir: dir,
        }
    }

    pub async fn setup(&self, setup: &mut Setup, shape: Shape, epoch: Instant, rate: Rate) {
        let api = Api::new(&self.url).await;
        for call in 0..shape.calls() {
            let room = 1000 + call as u64;
            let h = api.attach().await;
            let created = api
                .request(
                    h,
                    json!({"request": "create", "room": room, "publishers": 64,
                           "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0,
                           "fir_freq": 0, "notify_joining": false}),
                    None,
                )
                .await;
            assert_eq!(
                created["plugindata"]["data"]["videoroom"], "created",
                "{created}"
            );
            let publishers = match shape {
                Shape::Broadcast { .. } => 1,
                Shape::Pairs { .. } => 2,
            };
            let mut feeds = Vec::new();
            for _ in 0..publishers {
                let n = setup.publisher(shape.subscribers());
                let role = Role::Publish { n, rate };
                let h = api.attach().await;
                let (mut peer, offer, pending) = Peer::offerer(epoch, direction(&role)).await;
                let ev = api
                    .request(
                        h,
                        json!({"request": "joinandconfigure", "room": room, "ptype": "publisher",
                               "display": format!("pub {n}"), "audio": true, "video": true}),
                        Some(json!({"type": "offer", "sdp": offer})),
                    )
                    .await;
                let feed = ev["plugindata"]["data"]["id"].clone();
                let answer = ev["jsep"]["sdp"].as_str().unwrap_or_else(|| panic!("{ev}"));
                peer.accept_answer(pending, answer).expect("Janus's answer");
                api.trickle_done(h).await;
                feeds.push(feed);
                setup.run(peer, role);
                // A feed exists for subscribers only once its media is up.
                api.wait_event(|e| e["janus"] == "webrtcup" && e["sender"] == h)
                    .await;
            }
            // Broadcast: S subscribers of the one feed. Pairs: each side receives the other.
            let subscriptions: Vec<Value> = match shape {
                Shape::Broadcast { subscribers, .. } => vec![feeds[0].clone(); subscribers],
                Shape::Pairs { .. } => vec![feeds[1].clone(), feeds[0].clone()],
            };
            for feed in subscriptions {
                let h = api.attach().await;
                let ev = api
                    .request(
                        h,
                        json!({"request": "join", "room": room, "ptype": "subscriber",
                               "streams": [{"feed": feed}]}),
                        None,
                    )
                    .await;
                let offer = ev["jsep"]["sdp"].as_str().unwrap_or_else(|| panic!("{ev}"));
                let (peer, answer) = Peer::answerer(epoch, offer).await.expect("Janus's offer");
                let started = api
                    .request(
                        h,
                        json!({"request": "start", "room": room}),
                        Some(json!({"type": "answer", "sdp": answer})),
                    )
                    .await;
                assert_ne!(started["janus"], "error", "{started}");
                api.trickle_done(h).await;
                setup.run(peer, Role::Subscribe);
            }
        }
        setup.keep.push(Box::new(api));
    }
}

/// One Janus session over HTTP, with its long poll.
struct Api {
    http: reqwest::Client,
    session: String,
    events: Rc<RefCell<VecDeque<Value>>>,
    next: std::cell::Cell<u64>,
    _poll: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self._poll.abort();
    }
}

impl Api {
    async fn new(url: &str) -> Api {
        let http = reqwest::Client::new();
        let v: Value = http
            .post(url)
            .json(&json!({"janus": "create", "transaction": "create"}))
            .send()
            .await
            .expect("Janus answers")
            .json()
            .await
            .expect("JSON");
        let id = v["data"]["id"].as_u64().unwrap_or_else(|| panic!("{v}"));
        let session = format!("{url}/{id}");
        let events: Rc<RefCell<VecDeque<Value>>> = Rc::default();
        let poll = {
            let (http, session, events) = (http.clone(), session.clone(), events.clone());
            tokio::task::spawn_local(async move {
                loop {
                    let r = http
                        .get(format!("{session}?maxev=20"))
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await;
                    let Ok(r) = r else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(v) = r.json::<Value>().await else {
                        continue;
                    };
                    let mut q = events.borrow_mut();
                    match v {
                        Value::Array(list) => q.extend(list),
                        v => q.push_back(v),
                    }
                    while q.len() > 4096 {
                        q.pop_front();
                    }
                }
            })
        };
        Api {
            http,
            session,
            events,
            next: 1.into(),
            _poll: poll,
        }
    }

    fn transaction(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("t{n}")
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.session))
            .json(&body)
            .send()
            .await
            .expect("Janus answers")
            .json()
            .await
            .expect("JSON")
    }

    async fn attach(&self) -> u64 {
        let t = self.transaction();
        let v = self
            .post(
                "",
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": t}),
            )
            .await;
        v["data"]["id"].as_u64().unwrap_or_else(|| panic!("{v}"))
    }

    /// Sends a plugin message; returns the synchronous answer, or the event with the same
    /// transaction when Janus only acknowledged.
    async fn request(&self, handle: u64, body: Value, jsep: Option<Value>) -> Value {
        let t = self.transaction();
        let mut msg = json!({"janus": "message", "transaction": t, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let v = self.post(&format!("/{handle}"), msg).await;
        if v["janus"] != "ack" {
            return v;
        }
        self.wait_event(|e| e["transaction"] == t.as_str()).await
    }

    /// The first event from the long poll that matches.
    async fn wait_event(&self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = {
                let mut q = self.events.borrow_mut();
                let i = q.iter().position(&want);
                i.and_then(|i| q.remove(i))
            };
            if let Some(e) = found {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "an awaited Janus event never came"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Tells Janus that our candidates are all in the SDP.
    async fn trickle_done(&self, handle: u64) {
        let t = self.transaction();
        self.post(
            &format!("/{handle}"),
            json!({"janus": "trickle", "transaction": t, "candidate": {"completed": true}}),
        )
        .await;
    }
}
