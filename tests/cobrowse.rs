//! Co-browse inside calls, through real sockets: the ticket handed out on signaling, the
//! visitor's snapshot and changes through the relay to the agent's viewer with every secret
//! masked, typed errors for oversized and malformed input (the call goes on), desync and viewer
//! snapshot requests, the org's `cobrowse_enabled` decided at call start and enforced by the
//! server, sockets closed when the call ends, and metrics that count without content.

mod common;

use common::ws::Ws;
use common::{TestOrg, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRETS: [&str; 4] = [
    "hunter2-secret",
    "4242424242424242",
    "hunter2-again",
    "hunter2-typed",
];

struct Call {
    s: TestServer,
    org: TestOrg,
    agent: Ws,
    visitor: Ws,
    call: String,
    /// `cobrowse_config` of the visitor and of the agent.
    vcfg: Value,
    acfg: Value,
}

async fn server() -> (TestServer, TestOrg, Ws) {
    let s = TestServer::start().await;
    let (org, token) = s.org_with_agent("cb", "a1", "Ada").await;
    let (mut agent, _) = Ws::agent(&s.base, &token).await;
    agent.available().await;
    (s, org, agent)
}

/// A visitor in a connected call with the org's agent.
async fn call_in(s: &TestServer, org: &TestOrg, agent: &mut Ws) -> (Ws, String, Value, Value) {
    let (mut v, _) = Ws::visitor(&s.base, &org.created.widget_key, "https://shop.example/").await;
    v.request(json!({"type": "request_call"})).await;
    let ring = agent.wait_type("ring").await;
    let call = ring["call_id"].as_str().unwrap().to_owned();
    let r = agent
        .request(json!({"type": "accept", "call_id": call}))
        .await;
    assert_eq!(r["type"], "call_connected", "{r}");
    let acfg = agent.wait_type("cobrowse_config").await;
    let vcfg = v.wait_type("cobrowse_config").await;
    (v, call, vcfg, acfg)
}

async fn connected() -> Call {
    let (s, org, mut agent) = server().await;
    let (visitor, call, vcfg, acfg) = call_in(&s, &org, &mut agent).await;
    Call {
        s,
        org,
        agent,
        visitor,
        call,
        vcfg,
        acfg,
    }
}

fn page() -> Value {
    json!({"type": "snapshot", "baseUrl": "https://shop.example/checkout/", "nodes": [
        {"id": 1, "tag": "html"},
        {"id": 2, "parent": 1, "tag": "head"},
        {"id": 3, "parent": 1, "tag": "body"},
        {"id": 4, "parent": 3, "tag": "input", "attrs": {"type": "password", "name": "pw"}, "value": SECRETS[0]},
        {"id": 5, "parent": 3, "tag": "input", "attrs": {"autocomplete": "cc-number", "name": "card"}, "value": SECRETS[1]},
        {"id": 6, "parent": 3, "tag": "input", "attrs": {"name": "city"}, "value": "Lisbon"},
        {"id": 7, "parent": 3, "tag": "p"},
        {"id": 8, "parent": 7, "text": "Checkout"},
        {"id": 9, "parent": 3, "tag": "script"},
        {"id": 10, "parent": 9, "text": "steal()"},
        {"id": 11, "parent": 3, "tag": "a", "attrs": {"href": "javascript:steal()"}},
        {"id": 12, "parent": 11, "text": "help"},
        {"id": 13, "parent": 3, "tag": "img", "attrs": {"src": "logo.png"}}
    ]})
}

async fn open(c: &Call, cfg: &Value) -> Ws {
    Ws::cobrowse(&c.s.base, cfg["url"].as_str().expect("url")).await
}

fn assert_no_secret(frames: &[Value]) {
    for f in frames {
        let text = f.to_string();
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "secret {secret} reached the agent: {text}"
            );
        }
    }
}

fn code(m: &Value) -> &str {
    assert_eq!(m["type"], "error", "{m}");
    m["code"].as_str().unwrap()
}

#[tokio::test]
async fn the_agent_sees_the_page_live_and_never_a_secret() {
    let mut c = connected().await;
    for cfg in [&c.vcfg, &c.acfg] {
        assert_eq!(cfg["call_id"], c.call.as_str());
        assert_eq!(cfg["enabled"], true);
    }
    assert_ne!(c.vcfg["url"], c.acfg["url"], "each side has its own ticket");
    let mut viewer = open(&c, &c.acfg).await;
    assert_eq!(viewer.wait_type("visitor").await["connected"], false);
    let mut visitor = open(&c, &c.vcfg).await;
    assert_eq!(visitor.wait_type("viewers").await["count"], 1);
    assert_eq!(viewer.wait_type("visitor").await["connected"], true);

    visitor.send(page()).await;
    let snap = viewer.wait(|m| m["type"] == "snapshot").await;
    assert_eq!(snap["seq"], 1);
    let html = snap["html"].as_str().unwrap();
    assert!(
        html.contains("Lisbon") && html.contains("Checkout"),
        "{html}"
    );
    assert!(html.contains("••••••••"), "{html}");
    assert!(
        html.contains("https://shop.example/checkout/logo.png"),
        "{html}"
    );
    assert!(
        !html.contains("steal") && !html.contains("<script"),
        "{html}"
    );

    // Typing, the show-password toggle, moving and re-adding the field: nothing leaks.
    visitor
        .send(json!({"type": "changes", "changes": [
            {"type": "value", "id": 6, "value": "Porto"},
            {"type": "value", "id": 4, "value": SECRETS[3]},
            {"type": "attr", "id": 4, "name": "type", "value": "text"},
            {"type": "value", "id": 4, "value": SECRETS[2]},
            {"type": "add", "parent": 7, "prev": 8, "nodes": [
                {"id": 4, "tag": "input", "attrs": {"type": "text"}, "value": SECRETS[2]}]},
            {"type": "value", "id": 5, "value": SECRETS[1]},
            {"type": "scroll", "id": null, "x": 0, "y": 120},
            {"type": "pointer", "x": 10, "y": 20, "kind": "move"}
        ]}))
        .await;
    let batch = viewer.wait(|m| m["type"] == "changes").await;
    assert_eq!(batch["seq"], 2);
    let ops = batch["ops"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|o| o["op"] == "value" && o["id"] == 6 && o["value"] == "Porto"),
        "{batch}"
    );
    assert!(ops.iter().any(|o| o["op"] == "scroll"), "{batch}");
    let mut seen = vec![snap, batch];
    seen.extend(viewer.take_pending());
    assert_no_secret(&seen);

    // Counted, without content.
    let metrics = c.s.metrics().await;
    for secret in SECRETS {
        assert!(!metrics.contains(secret));
    }
    assert!(c.s.metric("frontdesk_cobrowse_masked_total").await >= 2.0);
    assert!(c.s.metric("frontdesk_cobrowse_removed_total").await >= 2.0);
    assert!(c.s.metric("frontdesk_cobrowse_dropped_changes_total").await >= 1.0);
    assert_eq!(c.s.metric("frontdesk_cobrowse_snapshots_total").await, 1.0);
    assert_eq!(c.s.metric("frontdesk_cobrowse_viewers").await, 1.0);

    // The call ends: both sockets close with call_ended, and the tickets die with it.
    let r = c
        .agent
        .request(json!({"type": "end_call", "call_id": c.call}))
        .await;
    assert_eq!(r["type"], "call_ended", "{r}");
    assert_eq!(viewer.wait_closed().await, (4010, "call_ended".into()));
    assert_eq!(visitor.wait_closed().await, (4010, "call_ended".into()));
    let mut late = open(&c, &c.vcfg).await;
    assert_eq!(code(&late.wait_type("error").await), "invalid_ticket");
    assert_eq!(late.wait_closed().await.0, 1008);
    assert_eq!(c.s.metric("frontdesk_cobrowse_sessions").await, 0.0);
    let _ = &c.org;
    let _ = &mut c.visitor;
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_the_call_goes_on() {
    let c = connected().await;
    let mut viewer = open(&c, &c.acfg).await;
    let mut visitor = open(&c, &c.vcfg).await;
    visitor.wait_type("viewers").await;

    // Changes before any snapshot.
    visitor
        .send(json!({"type": "changes", "changes": []}))
        .await;
    assert_eq!(code(&visitor.wait_type("error").await), "no_snapshot");
    visitor.send(page()).await;
    viewer.wait(|m| m["type"] == "snapshot").await;

    // A snapshot over 5 MiB and a batch over 256 KiB: typed errors, nothing applied.
    let pad = "x".repeat(5 * 1024 * 1024);
    let mut big = page();
    big["nodes"][7]["text"] = json!(pad);
    visitor.send(big).await;
    let e = visitor.wait_type("error").await;
    assert_eq!(code(&e), "snapshot_too_large");
    let mut batch = json!({"type": "changes", "changes": [{"type": "text", "id": 8, "text": ""}]});
    batch["changes"][0]["text"] = json!("y".repeat(300 * 1024));
    visitor.send(batch).await;
    assert_eq!(
        code(&visitor.wait_type("error").await),
        "change_batch_too_large"
    );
    // Malformed JSON (the error names a position, never the text), an unknown type, binary.
    visitor
        .send_raw(Message::Text(
            r#"{"type":"changes","changes":[{"type":"text","id":8,"text":"hunter2-secret"#.into(),
        ))
        .await;
    let e = visitor.wait_type("error").await;
    assert_eq!(code(&e), "malformed");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    visitor.send(json!({"type": "navigate", "url": "x"})).await;
    assert_eq!(code(&visitor.wait_type("error").await), "unknown_type");
    visitor
        .send_raw(Message::Binary(vec![1, 2, 3].into()))
        .await;
    assert_eq!(
        code(&visitor.wait_type("error").await),
        "binary_not_supported"
    );

    // Still relaying: a valid batch reaches the viewer, with the next seq.
    visitor
        .send(json!({"type": "changes", "changes": [{"type": "text", "id": 8, "text": "Still here"}]}))
        .await;
    let f = viewer.wait(|m| m["type"] == "changes").await;
    assert_eq!(f["seq"], 2, "refused input used no seq: {f}");
    assert_eq!(f["ops"][0]["text"], "Still here");
    assert!(c.s.metric("frontdesk_cobrowse_refused_total").await >= 5.0);

    // A viewer may only ask for a resync.
    viewer.send(json!({"type": "snapshot", "nodes": []})).await;
    assert_eq!(code(&viewer.wait_type("error").await), "unknown_type");
}

#[tokio::test]
async fn viewers_and_desyncs_ask_the_visitor_for_a_new_snapshot() {
    let c = connected().await;
    let mut visitor = open(&c, &c.vcfg).await;
    assert_eq!(visitor.wait_type("viewers").await["count"], 0);
    visitor.send(page()).await;
    // A viewer joining after the snapshot asks for a fresh one.
    let mut viewer = open(&c, &c.acfg).await;
    let r = visitor.wait_type("snapshot_request").await;
    assert_eq!(r["reason"], "viewer_joined");
    assert_eq!(visitor.wait_type("viewers").await["count"], 1);
    visitor.send(page()).await;
    // (The first snapshot may still have been on its way when the viewer joined.)
    let snap = viewer
        .wait(|m| m["type"] == "snapshot" && m["seq"] == 2)
        .await;
    assert!(snap["html"].as_str().unwrap().contains("Lisbon"));
    // The viewer asks.
    viewer.send(json!({"type": "resync"})).await;
    assert_eq!(
        visitor.wait_type("snapshot_request").await["reason"],
        "viewer_asked"
    );
    // A change naming a node the relay does not know: dropped, and the visitor asked again.
    visitor
        .send(json!({"type": "changes", "changes": [{"type": "text", "id": 999, "text": "?"}]}))
        .await;
    assert_eq!(
        visitor.wait_type("snapshot_request").await["reason"],
        "desync"
    );
    assert_eq!(
        c.s.metric("frontdesk_cobrowse_desync_requests_total").await,
        1.0
    );
    // A second viewer, a reconnecting visitor replacing the first socket.
    let _second = open(&c, &c.acfg).await;
    assert_eq!(visitor.wait_type("viewers").await["count"], 2);
    let mut again = open(&c, &c.vcfg).await;
    assert_eq!(visitor.wait_closed().await, (4001, "replaced".into()));
    again.wait_type("viewers").await;
    again.send(page()).await;
    let snap = viewer
        .wait(|m| m["type"] == "snapshot" && m["seq"] == 3)
        .await;
    assert!(snap["html"].as_str().unwrap().contains("••••••••"));
    // Garbage tickets.
    for path in [
        "/v1/cobrowse",
        "/v1/cobrowse?ticket=",
        "/v1/cobrowse?ticket=nope",
    ] {
        let mut w = Ws::cobrowse(&c.s.base, path).await;
        assert_eq!(code(&w.wait_type("error").await), "invalid_ticket");
    }
}

#[tokio::test]
async fn an_org_without_cobrowse_gets_none_decided_at_call_start() {
    let (s, org, mut agent) = server().await;
    let set = async |on: bool| {
        let (st, body) = s
            .send(
                reqwest::Method::PATCH,
                "/v1/org/settings",
                &org.admin_token,
                Some(json!({"cobrowse_enabled": on})),
            )
            .await;
        assert_eq!(st, 200, "{body}");
    };
    set(false).await;
    let (mut v, call, vcfg, acfg) = call_in(&s, &org, &mut agent).await;
    assert_eq!(vcfg["enabled"], false);
    assert_eq!(acfg["enabled"], false);
    // A widget that ignores the setting is refused by the server.
    let mut w = Ws::cobrowse(&s.base, vcfg["url"].as_str().unwrap()).await;
    assert_eq!(code(&w.wait_type("error").await), "cobrowse_disabled");
    assert_eq!(w.wait_closed().await, (1008, "cobrowse_disabled".into()));
    // Turning it on mid-call changes nothing for this call…
    set(true).await;
    let mut w = Ws::cobrowse(&s.base, vcfg["url"].as_str().unwrap()).await;
    assert_eq!(code(&w.wait_type("error").await), "cobrowse_disabled");
    assert!(s.metric("frontdesk_cobrowse_sockets_refused_total").await >= 2.0);
    // …and applies from the next call; turning it off mid-call leaves that one on.
    let r = v
        .request(json!({"type": "end_call", "call_id": call}))
        .await;
    assert_eq!(r["type"], "call_ended", "{r}");
    agent.wait_type("call_ended").await;
    let (_v2, _call2, vcfg2, _) = call_in(&s, &org, &mut agent).await;
    assert_eq!(vcfg2["enabled"], true);
    set(false).await;
    let mut ok = Ws::cobrowse(&s.base, vcfg2["url"].as_str().unwrap()).await;
    assert_eq!(ok.wait_type("viewers").await["count"], 0);
}
