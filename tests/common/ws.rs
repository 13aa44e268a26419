//! A signaling client for black-box tests: real WebSocket frames over loopback.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    stream: Stream,
    next_id: u64,
    /// Messages read but not yet asked for.
    pending: Vec<Value>,
    pub closed: Option<(u16, String)>,
}

impl Ws {
    pub async fn connect(base: &str) -> Ws {
        let url = format!("{}/v1/signal", base.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut ws = Ws {
            stream,
            next_id: 100,
            pending: Vec::new(),
            closed: None,
        };
        let hello = ws.next().await.expect("hello");
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["protocol"], 1);
        ws
    }

    /// A co-browse socket at `path` (the `url` of `cobrowse_config`), which sends no hello.
    pub async fn cobrowse(base: &str, path: &str) -> Ws {
        let url = format!("{}{path}", base.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Ws {
            stream,
            next_id: 100,
            pending: Vec::new(),
            closed: None,
        }
    }

    pub async fn agent(base: &str, token: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(base).await;
        let welcome = ws
            .request(json!({"type": "auth", "agent_token": token}))
            .await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (ws, welcome)
    }

    pub async fn visitor(base: &str, key: &str, page: &str) -> (Ws, Value) {
        let mut ws = Ws::connect(base).await;
        let welcome = ws
            .request(json!({"type": "auth", "widget_key": key, "page_url": page}))
            .await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (ws, welcome)
    }

    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        let _ = self.stream.send(m).await;
    }

    /// Sends with a fresh id and waits for the message that answers it.
    pub async fn request(&mut self, mut v: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        v["id"] = json!(id);
        self.send(v).await;
        self.wait(|m| m["re"] == json!(id)).await
    }

    /// The next frame from the server, within 10 s; `None` once closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("a message within 10 s");
            match frame {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("JSON")),
                Some(Ok(Message::Close(f))) => {
                    self.closed = Some(
                        f.map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    if self.closed.is_none() {
                        self.closed = Some((1006, String::new()));
                    }
                    return None;
                }
            }
        }
    }

    /// Every message read so far and not yet asked for.
    pub fn take_pending(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.pending)
    }

    /// The first message (pending or new) that matches, within 10 s.
    pub async fn wait(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        loop {
            let m = self
                .next()
                .await
                .unwrap_or_else(|| panic!("closed: {:?}; pending {:?}", self.closed, self.pending));
            if pred(&m) {
                return m;
            }
            self.pending.push(m);
        }
    }

    pub async fn wait_type(&mut self, ty: &str) -> Value {
        self.wait(|m| m["type"] == ty).await
    }

    /// Proves that nothing matching arrived: a ping's pong comes back first.
    pub async fn assert_none(&mut self, pred: impl Fn(&Value) -> bool) {
        self.request(json!({"type": "ping"})).await;
        assert!(
            !self.pending.iter().any(&pred),
            "unexpected: {:?}",
            self.pending
        );
    }

    /// Waits for the server to close the connection; returns (code, reason).
    pub async fn wait_closed(&mut self) -> (u16, String) {
        while self.closed.is_none() {
            if let Some(m) = self.next().await {
                self.pending.push(m);
            }
        }
        self.closed.clone().expect("closed")
    }

    pub async fn available(&mut self) {
        let r = self
            .request(json!({"type": "set_presence", "presence": "available"}))
            .await;
        assert_eq!(r["type"], "presence", "{r}");
        assert_eq!(r["presence"], "available");
    }
}
