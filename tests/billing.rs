//! Stripe webhooks: only verified events are stored, each is applied once, and the org's agents
//! and visitors feel the result at once through the hub.

mod common;

use common::ws::Ws;
use common::*;
use frontdesk_domain::Role;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"whsec_current";
const OLD_SECRET: &[u8] = b"whsec_previous";

fn now_s() -> i64 {
    common::now_s() as i64
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    json!({"id": id, "object": "event", "type": kind, "created": created, "data": {"object": object}})
        .to_string()
        .into_bytes()
}

fn subscription(org: frontdesk_domain::OrgId, status: &str, paused: bool) -> Value {
    json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
           "pause_collection": if paused { json!({"behavior": "void"}) } else { Value::Null },
           "cancel_at_period_end": false, "metadata": {"org_id": org}})
}

fn invoice() -> Value {
    json!({"id": "in_1", "object": "invoice", "customer": "cus_1", "subscription": "sub_1"})
}

async fn post(s: &TestServer, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut req = s
        .http
        .post(s.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    split(req.send().await.unwrap()).await
}

async fn deliver(s: &TestServer, body: &[u8]) {
    let (st, r) = post(
        s,
        body,
        Some(frontdesk_billing::sign(SECRET, now_s(), body)),
    )
    .await;
    assert_eq!(st, 200, "{r}");
}

/// Waits until the stored event reaches `status`.
async fn processed(s: &TestServer, id: &str, status: &str) {
    for _ in 0..250 {
        if let Some((st, _)) = s.state.store.stripe_event_status(id).await.unwrap() {
            if st == status {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("event {id} never became {status}");
}

async fn org_status(s: &TestServer, org: &TestOrg) -> String {
    s.get("/v1/org", &org.admin_token).await.1["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn server() -> (TestServer, TestOrg) {
    let s = TestServer::start_with(Options {
        webhook_secrets: vec![OLD_SECRET.to_vec(), SECRET.to_vec()],
        ..Options::default()
    })
    .await;
    let org = s.org("acme", 10).await;
    // The first subscription event links the org to its Stripe customer through its metadata.
    deliver(
        &s,
        &event(
            "evt_link",
            "customer.subscription.created",
            now_s() - 100,
            subscription(org.id(), "active", false),
        ),
    )
    .await;
    processed(&s, "evt_link", "done").await;
    (s, org)
}

#[tokio::test]
async fn only_verified_events_are_stored_and_each_is_applied_once() {
    let (s, org) = server().await;
    let t = now_s();
    // Stamps a minute past the tolerance on either side. The server reads its own clock
    // later than `t` was taken: a stamp one second into the future (the tolerance + 1) read
    // as inside it whenever a second boundary fell in between (a CI run on 2026-12-07). The
    // exact boundary is the webhook module's unit test, on a fixed clock.
    let outside = frontdesk_billing::TOLERANCE_S + 60;
    let body = event("evt_fail", "invoice.payment_failed", t, invoice());
    let cases: Vec<(&str, Vec<u8>, Option<String>, u16)> = vec![
        (
            "tampered body",
            event("evt_x1", "invoice.paid", t, invoice()),
            Some(frontdesk_billing::sign(SECRET, t, &body)),
            400,
        ),
        (
            "wrong secret",
            body.clone(),
            Some(frontdesk_billing::sign(b"whsec_other", t, &body)),
            400,
        ),
        (
            "expired",
            body.clone(),
            Some(frontdesk_billing::sign(SECRET, t - outside, &body)),
            400,
        ),
        (
            "from the future",
            body.clone(),
            Some(frontdesk_billing::sign(SECRET, t + outside, &body)),
            400,
        ),
        ("missing header", body.clone(), None, 400),
        (
            "malformed header",
            body.clone(),
            Some("t=abc,v1=zz".into()),
            400,
        ),
        (
            "v0 only",
            body.clone(),
            Some(format!("t={t},v0={}", "a".repeat(64))),
            400,
        ),
    ];
    for (name, b, sig, want) in cases {
        let (st, r) = post(&s, &b, sig).await;
        assert_eq!(st, want, "{name}: {r}");
        assert_eq!(r["code"], "invalid_signature", "{name}");
    }
    for id in ["evt_fail", "evt_x1"] {
        assert_eq!(
            s.state.store.stripe_event_status(id).await.unwrap(),
            None,
            "nothing stored"
        );
    }
    let huge = vec![b' '; 1024 * 1024 + 1];
    let (st, _) = post(&s, &huge, Some(frontdesk_billing::sign(SECRET, t, &huge))).await;
    assert_eq!(st, 413);
    assert_eq!(org_status(&s, &org).await, "active");

    // Signed with the previous secret, during rotation: accepted.
    let (st, r) = post(
        &s,
        &body,
        Some(frontdesk_billing::sign(OLD_SECRET, t, &body)),
    )
    .await;
    assert_eq!((st, r["duplicate"].as_bool()), (200, Some(false)));
    processed(&s, "evt_fail", "done").await;
    assert_eq!(org_status(&s, &org).await, "past_due");
    // The same event again: 200, not processed again.
    let (st, r) = post(&s, &body, Some(frontdesk_billing::sign(SECRET, t, &body))).await;
    assert_eq!((st, r["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(
        s.state.store.stripe_event_status("evt_fail").await.unwrap(),
        Some(("done".into(), 1))
    );

    // Out of order: an older "paid" after the newer failure does not move the state back.
    deliver(
        &s,
        &event("evt_old_paid", "invoice.paid", t - 50, invoice()),
    )
    .await;
    processed(&s, "evt_old_paid", "done").await;
    assert_eq!(org_status(&s, &org).await, "past_due");
    // Unknown types are acknowledged and change nothing.
    deliver(
        &s,
        &event(
            "evt_refund",
            "charge.refunded",
            t + 1,
            json!({"id": "ch_1"}),
        ),
    )
    .await;
    processed(&s, "evt_refund", "done").await;
    deliver(&s, &event("evt_paid", "invoice.paid", t + 2, invoice())).await;
    processed(&s, "evt_paid", "done").await;
    assert_eq!(org_status(&s, &org).await, "active");

    let (_, log) = s.get("/v1/audit-log?limit=200", &org.admin_token).await;
    let changes = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "billing.status")
        .count();
    assert_eq!(changes, 2, "past_due once, active once: {log}");
    s.stop().await;
}

#[tokio::test]
async fn an_event_for_an_unknown_customer_is_retried_then_applied_once_linked() {
    let (s, org) = server().await;
    let body = event(
        "evt_other",
        "invoice.payment_failed",
        now_s(),
        json!({"id": "in_9", "customer": "cus_unknown", "subscription": "sub_9"}),
    );
    deliver(&s, &body).await;
    for _ in 0..100 {
        if s.state
            .store
            .stripe_event_status("evt_other")
            .await
            .unwrap()
            .is_some_and(|(st, a)| st == "pending" && a >= 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, attempts) = s
        .state
        .store
        .stripe_event_status("evt_other")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st, "pending", "waiting for a retry with backoff");
    assert!(attempts >= 1);
    assert_eq!(
        org_status(&s, &org).await,
        "active",
        "another customer never touches this org"
    );
    s.stop().await;
}

struct Floor {
    s: TestServer,
    org: TestOrg,
    agents: Vec<Ws>,
    visitor: Ws,
    call: String,
}

/// Three agents online; the first in a connected call.
async fn floor() -> Floor {
    let (s, org) = server().await;
    let pool = org.created.default_pool.to_string();
    let mut agents = Vec::new();
    for user in ["b1", "b2", "b3"] {
        let (st, _) = s
            .send(Method::POST, "/v1/agents", &org.admin_token,
                Some(json!({"user_id": user, "email": format!("{user}@example.com"), "display_name": user,
                            "pools": [{"pool_id": pool, "tier": 1}]})))
            .await;
        assert_eq!(st, 201);
        let (mut ws, _) = Ws::agent(&s.base, &hs256(user, org.id(), Role::Agent)).await;
        ws.available().await;
        agents.push(ws);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut visitor, _) =
        Ws::visitor(&s.base, &org.created.widget_key, "https://acme.example/").await;
    let r = visitor.request(json!({"type": "request_call"})).await;
    let call = r["call_id"].as_str().unwrap().to_owned();
    let ring = agents[0].wait_type("ring").await;
    assert_eq!(ring["call_id"], call.as_str());
    agents[0]
        .request(json!({"type": "accept", "call_id": call}))
        .await;
    visitor.wait_type("call_connected").await;
    Floor {
        s,
        org,
        agents,
        visitor,
        call,
    }
}

#[tokio::test]
async fn payment_failure_forces_every_online_agent_away_and_payment_restores_them() {
    let mut f = floor().await;
    deliver(
        &f.s,
        &event("evt_pf", "invoice.payment_failed", now_s(), invoice()),
    )
    .await;
    for (i, a) in f.agents.iter_mut().enumerate() {
        let st = a.wait_type("org_status").await;
        assert_eq!(st["status"], "past_due");
        assert!(
            st["message"]
                .as_str()
                .unwrap()
                .contains("contact your admin"),
            "{st}"
        );
        if i > 0 {
            let p = a
                .wait(|m| m["type"] == "presence" && m["presence"] == "away")
                .await;
            assert_eq!(p["reason"], "payment_failed");
        }
        let r = a
            .request(json!({"type": "set_presence", "presence": "available"}))
            .await;
        assert_eq!(
            r["code"],
            if i == 0 {
                "invalid_state"
            } else {
                "org_blocked"
            }
        );
    }
    // The connected call goes on; a new visitor finds nobody.
    f.visitor.assert_none(|m| m["type"] == "call_ended").await;
    let (mut late, _) = Ws::visitor(
        &f.s.base,
        &f.org.created.widget_key,
        "https://acme.example/",
    )
    .await;
    let r = late.request(json!({"type": "request_call"})).await;
    assert_eq!(
        (r["type"].as_str(), r["reason"].as_str()),
        (Some("unavailable"), Some("org_blocked"))
    );
    // The call ends normally; its agent goes away, not available.
    f.agents[0]
        .request(json!({"type": "end_call", "call_id": f.call}))
        .await;
    let p = f.agents[0]
        .wait(|m| m["type"] == "presence" && m["presence"] == "away")
        .await;
    assert_eq!(p["reason"], "payment_failed");

    deliver(
        &f.s,
        &event("evt_paid", "invoice.paid", now_s() + 1, invoice()),
    )
    .await;
    for a in f.agents.iter_mut() {
        assert_eq!(
            a.wait(|m| m["type"] == "org_status" && m["status"] == "active")
                .await["status"],
            "active"
        );
        a.available().await;
    }
    // The admins were emailed about the failure (queued; no SMTP configured here).
    let (_, n) = f.s.get("/v1/notifications", &f.org.admin_token).await;
    let all = n.as_array().unwrap();
    let n: Vec<&Value> = all
        .iter()
        .filter(|m| m["kind"] == "payment_failed")
        .collect();
    assert_eq!(n.len(), 1, "{all:?}");
    assert_eq!(n[0]["status"], "pending");
    let invites = all.iter().filter(|m| m["kind"] == "agent_invite").count();
    assert_eq!(invites, 3, "each added agent was invited");
    f.s.stop().await;
}

#[tokio::test]
async fn pausing_forces_agents_offline_and_ends_the_connected_call_gracefully() {
    let mut f = floor().await;
    let body = event(
        "evt_pause",
        "customer.subscription.paused",
        now_s(),
        subscription(f.org.id(), "paused", false),
    );
    deliver(&f.s, &body).await;
    let ended = f.visitor.wait_type("call_ended").await;
    assert_eq!(ended["reason"], "org_blocked");
    assert!(ended["message"]
        .as_str()
        .unwrap()
        .contains("temporarily unavailable"));
    for a in f.agents.iter_mut() {
        assert_eq!(
            a.wait(|m| m["type"] == "org_status").await["status"],
            "paused"
        );
        a.wait(|m| m["type"] == "presence" && m["presence"] == "offline")
            .await;
    }
    assert_eq!(org_status(&f.s, &f.org).await, "paused");
    let (mut late, _) = Ws::visitor(
        &f.s.base,
        &f.org.created.widget_key,
        "https://acme.example/",
    )
    .await;
    let r = late.request(json!({"type": "request_call"})).await;
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("temporarily unavailable"));
    // Resumed: unblocked at once.
    deliver(
        &f.s,
        &event(
            "evt_resume",
            "customer.subscription.resumed",
            now_s() + 1,
            subscription(f.org.id(), "active", false),
        ),
    )
    .await;
    f.agents[1]
        .wait(|m| m["type"] == "org_status" && m["status"] == "active")
        .await;
    f.agents[1].available().await;
    f.s.stop().await;
}

#[tokio::test]
async fn the_payment_failed_email_reaches_a_real_smtp_server() {
    let python = std::env::var("FRONTDESK_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut smtp = std::process::Command::new(&python)
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(dir.path().join("mbox"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("aiosmtpd runs (scripts/test installs it; FRONTDESK_TEST_PYTHON names its python)");
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        if let Ok(Some(status)) = smtp.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            let _ = smtp.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("aiosmtpd exited ({status}); run through scripts/test or set FRONTDESK_TEST_PYTHON: {err}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "aiosmtpd did not listen within 5 s");
    let s = TestServer::start_with(Options {
        webhook_secrets: vec![SECRET.to_vec()],
        smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
        ..Options::default()
    })
    .await;
    let org = s.org("acme", 10).await;
    deliver(
        &s,
        &event(
            "evt_link",
            "customer.subscription.created",
            now_s() - 10,
            subscription(org.id(), "active", false),
        ),
    )
    .await;
    deliver(
        &s,
        &event("evt_pf", "invoice.payment_failed", now_s(), invoice()),
    )
    .await;
    let mut sent = None;
    for _ in 0..250 {
        let (_, n) = s.get("/v1/notifications", &org.admin_token).await;
        if n[0]["status"] == "sent" {
            sent = Some(n[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = sent.expect("the email is marked sent");
    assert_eq!(sent["to"], "acme@example.com");
    let mut mbox = String::new();
    for _ in 0..100 {
        mbox = std::fs::read_dir(dir.path().join("mbox").join("new"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if !mbox.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mbox.contains("To: acme@example.com"), "{mbox}");
    assert!(mbox.contains("payment failed"), "{mbox}");
    let _ = smtp.kill();
    let _ = smtp.wait();
    s.stop().await;
}

#[tokio::test]
async fn a_resend_queues_the_email_again() {
    let (s, org) = server().await;
    deliver(
        &s,
        &event("evt_pf", "invoice.payment_failed", now_s(), invoice()),
    )
    .await;
    processed(&s, "evt_pf", "done").await;
    let (_, n) = s.get("/v1/notifications", &org.admin_token).await;
    let id = n[0]["id"].as_str().unwrap().to_owned();
    let (st, _) = s
        .send(
            Method::POST,
            &format!("/v1/notifications/{id}/resend"),
            &org.admin_token,
            None,
        )
        .await;
    assert_eq!(st, 204);
    let other = s.org("globex", 5).await;
    let (st, _) = s
        .send(
            Method::POST,
            &format!("/v1/notifications/{id}/resend"),
            &other.admin_token,
            None,
        )
        .await;
    assert_eq!(st, 404, "another org's notification");
    s.stop().await;
}
