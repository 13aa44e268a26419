//! The signaling hub through real WebSocket clients against a real server: two pools, several
//! agents, visitors placing calls.

mod common;

use common::ws::Ws;
use common::*;
use frontdesk_domain::Role;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

struct Site {
    s: TestServer,
    org: TestOrg,
    sales: String,
}

/// An org with a Default pool and a Sales pool for pages under shop.example/sales, and agents
/// `a1` (Default) and `a2`, `a3` (Sales).
async fn site(opts: Options) -> Site {
    let s = TestServer::start_with(opts).await;
    let org = s.org("acme", 20).await;
    let t = &org.admin_token;
    let (_, sales) = s
        .send(Method::POST, "/v1/pools", t, Some(json!({"name": "Sales"})))
        .await;
    let sales = sales["id"].as_str().unwrap().to_owned();
    s.send(
        Method::POST,
        &format!("/v1/pools/{sales}/rules"),
        t,
        Some(json!({"domain": "shop.example", "path_prefix": "/sales"})),
    )
    .await;
    let default = org.created.default_pool.to_string();
    for (user, pool) in [("a1", &default), ("a2", &sales), ("a3", &sales)] {
        let (st, body) = s
            .send(
                Method::POST,
                "/v1/agents",
                t,
                Some(
                    json!({"user_id": user, "email": format!("{user}@example.com"),
                            "display_name": user, "pools": [{"pool_id": pool, "tier": 1}]}),
                ),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    Site { s, org, sales }
}

impl Site {
    async fn agent(&self, user: &str) -> Ws {
        let (ws, welcome) = Ws::agent(&self.s.base, &hs256(user, self.org.id(), Role::Agent)).await;
        assert_eq!(welcome["presence"], "away");
        ws
    }

    async fn visitor(&self, page: &str) -> (Ws, Value) {
        Ws::visitor(&self.s.base, &self.org.created.widget_key, page).await
    }

    async fn agent_id(&self, user: &str) -> String {
        let (_, agents) = self.s.get("/v1/agents", &self.org.admin_token).await;
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["user_id"] == user)
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .unwrap()
    }
}

/// The stored call once it reaches `state` (records are written behind the hub, in order).
async fn stored_call(
    site: &Site,
    call: &str,
    state: &str,
) -> (String, Option<String>, Option<String>) {
    let call_id = call.parse().unwrap();
    for _ in 0..250 {
        let row = site
            .s
            .state
            .store
            .call_row(site.org.id(), call_id)
            .await
            .unwrap();
        if let Some(r) = row.filter(|r| r.0 == state) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("call {call} never stored as {state}");
}

async fn request_call(v: &mut Ws) -> String {
    let r = v.request(json!({"type": "request_call"})).await;
    assert_eq!(r["type"], "call_requested", "{r}");
    r["call_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn routing_stays_in_the_visitors_pool() {
    let site = site(Options::default()).await;
    let mut a1 = site.agent("a1").await;
    let mut a2 = site.agent("a2").await;
    a1.available().await;
    a2.available().await;
    let (mut v, welcome) = site.visitor("https://shop.example/sales/pricing").await;
    assert!(welcome["visitor_token"].as_str().is_some());
    let call = request_call(&mut v).await;
    let ring = a2.wait_type("ring").await;
    assert_eq!(ring["call_id"], call.as_str());
    assert_eq!(ring["pool_id"], site.sales.as_str());
    assert_eq!(ring["ring_timeout_ms"], 15000);
    a1.assert_none(|m| m["type"] == "ring").await;
    let r = a2.request(json!({"type": "accept", "call_id": call})).await;
    assert_eq!(r["type"], "call_connected");
    let c = v.wait_type("call_connected").await;
    assert_eq!(c["agent_name"], "a2");
    // The other pool's visitor goes to the other pool's agent.
    let (mut v2, _) = site.visitor("https://shop.example/help").await;
    let call2 = request_call(&mut v2).await;
    assert_eq!(a1.wait_type("ring").await["call_id"], call2.as_str());
    site.s.stop().await;
}

#[tokio::test]
async fn ring_no_answer_sets_away_re_rings_with_the_org_timeout_and_re_routes_waiting_visitors() {
    let site = site(Options::default()).await;
    let (st, _) = site
        .s
        .send(
            Method::PATCH,
            "/v1/org/settings",
            &site.org.admin_token,
            Some(json!({"ring_timeout_ms": 5000})),
        )
        .await;
    assert_eq!(st, 200);
    let mut a2 = site.agent("a2").await;
    a2.available().await;
    let (mut v1, _) = site.visitor("https://shop.example/sales/").await;
    let (mut v2, _) = site.visitor("https://shop.example/sales/x").await;
    let first = request_call(&mut v1).await;
    let second = request_call(&mut v2).await;
    let ring = a2.wait_type("ring").await;
    assert_eq!(
        (ring["call_id"].as_str(), ring["ring_timeout_ms"].as_u64()),
        (Some(first.as_str()), Some(5000))
    );
    assert_eq!(v2.wait_type("queued").await["position"], 1);
    let mut a3 = site.agent("a3").await;
    // a2 lets it ring out.
    let away = a2
        .wait(|m| m["type"] == "presence" && m["presence"] == "away")
        .await;
    assert_eq!(away["reason"], "no_answer");
    // Nobody free: both wait, the older request first.
    assert_eq!(v1.wait_type("queued").await["position"], 1);
    a3.available().await;
    let ring = a3.wait_type("ring").await;
    assert_eq!(
        (ring["call_id"].as_str(), ring["ring_timeout_ms"].as_u64()),
        (Some(first.as_str()), Some(5000))
    );
    a3.request(json!({"type": "accept", "call_id": first}))
        .await;
    a3.request(json!({"type": "end_call", "call_id": first}))
        .await;
    let ring = a3.wait_type("ring").await;
    assert_eq!(
        ring["call_id"],
        second.as_str(),
        "the away agent's other visitor is served"
    );
    a2.assert_none(|m| m["type"] == "ring").await;
    site.s.stop().await;
}

#[tokio::test]
async fn queue_positions_are_told_and_advance() {
    let site = site(Options::default()).await;
    let mut visitors = Vec::new();
    for i in 0..3 {
        let (mut v, _) = site
            .visitor(&format!("https://shop.example/sales/{i}"))
            .await;
        request_call(&mut v).await;
        assert_eq!(v.wait_type("queued").await["position"], i + 1);
        visitors.push(v);
    }
    let mut a2 = site.agent("a2").await;
    a2.available().await;
    a2.wait_type("ring").await;
    assert_eq!(visitors[1].wait_type("queued").await["position"], 1);
    assert_eq!(visitors[2].wait_type("queued").await["position"], 2);
    site.s.stop().await;
}

#[tokio::test]
async fn only_the_rung_agent_can_accept() {
    let site = site(Options::default()).await;
    let mut a2 = site.agent("a2").await;
    let mut a3 = site.agent("a3").await;
    a2.available().await;
    let (mut v, _) = site.visitor("https://shop.example/sales").await;
    let call = request_call(&mut v).await;
    a2.wait_type("ring").await;
    let r = a3.request(json!({"type": "accept", "call_id": call})).await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_rung"))
    );
    let r = v.request(json!({"type": "accept", "call_id": call})).await;
    assert_eq!(r["code"], "not_allowed");
    let r = a2.request(json!({"type": "accept", "call_id": call})).await;
    assert_eq!(r["type"], "call_connected");
    site.s.stop().await;
}

#[tokio::test]
async fn a_visitor_who_reloads_rejoins_the_same_call_and_after_the_window_it_ends() {
    let site = site(Options {
        visitor_reconnect: Some(Duration::from_secs(5)),
        ..Options::default()
    })
    .await;
    let mut a2 = site.agent("a2").await;
    a2.available().await;
    let (mut v, welcome) = site.visitor("https://shop.example/sales").await;
    let token = welcome["visitor_token"].as_str().unwrap().to_owned();
    let call = request_call(&mut v).await;
    a2.wait_type("ring").await;
    a2.request(json!({"type": "accept", "call_id": call})).await;
    drop(v); // the page reloads
    let r = a2.wait_type("visitor_reconnecting").await;
    assert_eq!(r["remaining_ms"], 5000);
    let mut v = Ws::connect(&site.s.base).await;
    let w = v
        .request(json!({"type": "auth", "visitor_token": token}))
        .await;
    assert_eq!(w["call"]["call_id"], call.as_str());
    assert_eq!(v.wait_type("call_resumed").await["state"], "connected");
    a2.wait_type("visitor_reconnected").await;
    // Gone for good this time: the window runs out.
    drop(v);
    a2.wait_type("visitor_reconnecting").await;
    let ended = a2.wait_type("call_ended").await;
    assert_eq!(ended["reason"], "reconnect_expired");
    let row = stored_call(&site, &call, "ended").await;
    assert_eq!(row.2.as_deref(), Some("reconnect_expired"));
    site.s.stop().await;
}

#[tokio::test]
async fn removing_an_agent_mid_call_ends_it_and_closes_its_connection() {
    let site = site(Options::default()).await;
    let mut a2 = site.agent("a2").await;
    a2.available().await;
    let (mut v, _) = site.visitor("https://shop.example/sales").await;
    let call = request_call(&mut v).await;
    a2.wait_type("ring").await;
    a2.request(json!({"type": "accept", "call_id": call})).await;
    let id = site.agent_id("a2").await;
    let (st, _) = site
        .s
        .send(
            Method::DELETE,
            &format!("/v1/agents/{id}"),
            &site.org.admin_token,
            None,
        )
        .await;
    assert_eq!(st, 204);
    let ended = v.wait_type("call_ended").await;
    assert_eq!(ended["reason"], "agent_removed");
    assert!(ended["message"].as_str().unwrap().contains("new call"));
    assert_eq!(a2.wait_closed().await, (4002, "agent_removed".into()));
    let (_, log) = site.s.get("/v1/audit-log", &site.org.admin_token).await;
    assert!(log
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "agent.remove" && e["target_id"] == id.as_str()));
    // Its token no longer opens a connection.
    let mut again = Ws::connect(&site.s.base).await;
    let r = again
        .request(json!({"type": "auth", "agent_token": hs256("a2", site.org.id(), Role::Agent)}))
        .await;
    assert_eq!(r["code"], "not_an_agent");
    site.s.stop().await;
}

#[tokio::test]
async fn an_agent_of_one_org_can_never_see_or_touch_another_orgs_calls() {
    let site = site(Options::default()).await;
    let other = site.s.org("globex", 5).await;
    let (mut foreign, _) = Ws::agent(&site.s.base, &other.admin_token).await;
    foreign.available().await;
    let mut a2 = site.agent("a2").await;
    a2.available().await;
    let (mut v, _) = site.visitor("https://shop.example/sales").await;
    let call = request_call(&mut v).await;
    a2.wait_type("ring").await;
    for msg in [
        json!({"type": "accept", "call_id": call}),
        json!({"type": "reject", "call_id": call}),
        json!({"type": "end_call", "call_id": call}),
    ] {
        let r = foreign.request(msg.clone()).await;
        assert_eq!(r["type"], "error", "{msg} -> {r}");
    }
    foreign.assert_none(|m| m["type"] == "ring").await;
    // Org B's visitor never reaches org A's agents either.
    let (mut vb, _) = Ws::visitor(
        &site.s.base,
        &other.created.widget_key,
        "https://globex.example/",
    )
    .await;
    let call_b = request_call(&mut vb).await;
    assert_eq!(foreign.wait_type("ring").await["call_id"], call_b.as_str());
    let r = a2
        .request(json!({"type": "accept", "call_id": call_b}))
        .await;
    assert_eq!(r["code"], "not_rung");
    site.s.stop().await;
}

#[tokio::test]
async fn bad_frames_get_typed_errors_and_floods_and_giants_are_closed() {
    let site = site(Options::default()).await;
    let mut a1 = site.agent("a1").await;
    a1.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        "{nope".into(),
    ))
    .await;
    assert_eq!(a1.wait_type("error").await["code"], "malformed");
    let r = a1.request(json!({"type": "teleport"})).await;
    assert_eq!(r["code"], "unknown_type");
    let r = a1
        .request(json!({"type": "set_presence", "presence": "in_call"}))
        .await;
    assert_eq!(r["code"], "invalid_presence");
    let r = a1
        .request(json!({"type": "accept", "call_id": "not-a-uuid"}))
        .await;
    assert_eq!(r["code"], "invalid_message");
    let r = a1
        .request(json!({"type": "end_call", "call_id": uuid::Uuid::new_v4()}))
        .await;
    assert_eq!(r["code"], "not_in_call");
    let r = a1.request(json!({"type": "request_call"})).await;
    assert_eq!(r["code"], "not_allowed");
    assert_eq!(
        a1.request(json!({"type": "ping"})).await["type"],
        "pong",
        "the connection stays"
    );

    let mut big = site.agent("a2").await;
    let giant = json!({"type": "ping", "pad": "x".repeat(70 * 1024)});
    big.send(giant).await;
    assert_eq!(big.wait_closed().await, (1009, "frame_too_large".into()));

    let mut flood = site.agent("a3").await;
    for _ in 0..200 {
        flood
            .send_raw(tokio_tungstenite::tungstenite::Message::Text(
                r#"{"type":"ping"}"#.into(),
            ))
            .await;
    }
    assert_eq!(flood.wait_closed().await.0, 1008);
    assert!(flood.wait(|m| m["code"] == "rate_limited").await["message"].is_string());

    // Unauthenticated connections: bad credentials and silence.
    let mut anon = Ws::connect(&site.s.base).await;
    let r = anon
        .request(json!({"type": "set_presence", "presence": "available"}))
        .await;
    assert_eq!(r["code"], "not_authenticated");
    let mut bad = Ws::connect(&site.s.base).await;
    let r = bad
        .request(json!({"type": "auth", "agent_token": "x.y.z"}))
        .await;
    assert_eq!(r["code"], "invalid_token");
    assert_eq!(bad.wait_closed().await.0, 1008);
    let mut vis = Ws::connect(&site.s.base).await;
    let r = vis
        .request(json!({"type": "auth", "widget_key": "wk_nope", "page_url": "https://x.example/"}))
        .await;
    assert_eq!(r["code"], "invalid_widget_key");
    site.s.stop().await;
}

#[tokio::test]
async fn calls_are_persisted_and_a_restart_leaves_none_open() {
    let site = site(Options::default()).await;
    let mut a2 = site.agent("a2").await;
    a2.available().await;
    let (mut v, _) = site.visitor("https://shop.example/sales").await;
    let call = request_call(&mut v).await;
    a2.wait_type("ring").await;
    a2.request(json!({"type": "accept", "call_id": call})).await;
    let call_id = call.parse().unwrap();
    let org = site.org.id();
    let row = stored_call(&site, &call, "connected").await;
    let a2_id = site.agent_id("a2").await;
    assert_eq!(row, ("connected".into(), Some(a2_id), None));
    // The process dies with the call open; the next start closes it.
    let url = site.s.abort();
    let s2 = TestServer::start_with(Options {
        database_url: Some(url),
        ..Options::default()
    })
    .await;
    let row = s2
        .state
        .store
        .call_row(org, call_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.0.as_str(), row.2.as_deref()),
        ("ended", Some("server_restart"))
    );
    s2.stop().await;
}

#[tokio::test]
async fn a_blocked_org_cannot_go_available_and_its_visitors_are_told() {
    let site = site(Options::default()).await;
    let mut a2 = site.agent("a2").await;
    site.s
        .state
        .store
        .set_status_for_tests(site.org.id(), frontdesk_domain::OrgStatus::PastDue)
        .await
        .unwrap();
    // Entitlement is read from the database when access is asked for, not only when told.
    let r = a2
        .request(json!({"type": "set_presence", "presence": "available"}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("org_blocked"))
    );
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("contact your admin"));
    let (mut v, _) = site.visitor("https://shop.example/sales").await;
    let r = v.request(json!({"type": "request_call"})).await;
    assert_eq!(
        (r["type"].as_str(), r["reason"].as_str()),
        (Some("unavailable"), Some("org_blocked"))
    );
    site.s.stop().await;
}
