//! Admin billing actions against a local fake of Stripe's HTTP API (Stripe cannot be reached
//! from here; it is the one thing faked): idempotency keys, pause and cancel, and a seat change
//! that is reverted at Stripe when the database refuses it.

mod common;

use axum::routing::get;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A write the fake received: (path, idempotency key, form pairs).
type Post = (String, String, Vec<(String, String)>);

#[derive(Default)]
struct Fake {
    quantity: u32,
    /// Every write: (path, idempotency key, form pairs).
    posts: Vec<Post>,
    /// Writes that succeed before the fake starts refusing; `None`: never refuse.
    ok_writes_left: Option<usize>,
    price_missing: bool,
}

async fn fake_stripe(state: Arc<Mutex<Fake>>) -> String {
    let s1 = state.clone();
    let s2 = state.clone();
    let s3 = state.clone();
    let app = axum::Router::new()
        .route(
            "/v1/prices/{id}",
            get(move |axum::extract::Path(id): axum::extract::Path<String>| async move {
                if s1.lock().unwrap().price_missing || id != "price_seat" {
                    (axum::http::StatusCode::NOT_FOUND, axum::Json(json!({"error": {"message": "No such price"}})))
                } else {
                    (axum::http::StatusCode::OK, axum::Json(json!({"id": id, "active": true})))
                }
            }),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(move |axum::extract::Path(id): axum::extract::Path<String>| async move {
                let q = s2.lock().unwrap().quantity;
                axum::Json(json!({"id": id, "items": {"data": [{"id": "si_1", "quantity": q, "price": {"id": "price_seat"}}]}}))
            })
            .post(move |axum::extract::Path(id): axum::extract::Path<String>, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut f = s3.lock().unwrap();
                f.posts.push((format!("/v1/subscriptions/{id}"), key, form.clone()));
                if let Some(left) = f.ok_writes_left.as_mut() {
                    if *left == 0 {
                        return (axum::http::StatusCode::PAYMENT_REQUIRED, axum::Json(json!({"error": {"message": "card declined"}})));
                    }
                    *left -= 1;
                }
                if let Some((_, q)) = form.iter().find(|(k, _)| k == "items[0][quantity]") {
                    f.quantity = q.parse().unwrap();
                }
                (axum::http::StatusCode::OK, axum::Json(json!({"id": id})))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

const SECRET: &[u8] = b"whsec_actions";

async fn setup() -> (TestServer, TestOrg, Arc<Mutex<Fake>>) {
    let fake = Arc::new(Mutex::new(Fake {
        quantity: 5,
        ..Fake::default()
    }));
    let base = fake_stripe(fake.clone()).await;
    let s = TestServer::start_with(Options {
        stripe_base: Some(base),
        webhook_secrets: vec![SECRET.to_vec()],
        ..Options::default()
    })
    .await;
    let org = s.org("acme", 5).await;
    let now = common::now_s() as i64;
    let body = json!({"id": "evt_link", "type": "customer.subscription.created", "created": now - 10,
        "data": {"object": {"id": "sub_1", "customer": "cus_1", "status": "active", "metadata": {"org_id": org.id()},
                            "items": {"data": [{"quantity": 5}]}}}})
    .to_string();
    let r = s
        .http
        .post(s.url("/v1/webhooks/stripe"))
        .header(
            "stripe-signature",
            frontdesk_billing::sign(SECRET, now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for _ in 0..250 {
        if s.get("/v1/billing", &org.admin_token).await.1["stripe_subscription_id"] == "sub_1" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (s, org, fake)
}

fn actions(log: &Value) -> Vec<String> {
    log.as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_seat_change_goes_to_stripe_first_with_an_idempotency_key_then_to_the_database() {
    let (s, org, fake) = setup().await;
    let t = &org.admin_token;
    let r = s
        .http
        .put(s.url("/v1/billing/seats"))
        .bearer_auth(t)
        .header("idempotency-key", "seats-try-1")
        .json(&json!({"seats": 8}))
        .send()
        .await
        .unwrap();
    let (st, v) = split(r).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["seat_limit"], 8);
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.quantity, 8);
        let (_, key, form) = f.posts.last().unwrap();
        assert!(key.ends_with("-seats-seats-try-1"), "{key}");
        assert!(
            form.contains(&("items[0][price]".into(), "price_seat".into())),
            "never another price"
        );
    }
    let (st, v) = s
        .send(
            Method::PUT,
            "/v1/billing/seats",
            t,
            Some(json!({"seats": 51})),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (422, Some("seats_out_of_range")));
    assert!(v["message"].as_str().unwrap().contains("50"));
    assert_eq!(fake.lock().unwrap().posts.len(), 1, "refused before Stripe");
    let (_, log) = s.get("/v1/audit-log?limit=200", t).await;
    let a = actions(&log);
    assert!(
        a.contains(&"billing.seats.attempt".into()) && a.contains(&"billing.seats.done".into()),
        "{a:?}"
    );
    s.stop().await;
}

/// Makes every change of `orgs.seat_limit` fail inside the database.
async fn break_seat_writes(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    if url.starts_with("sqlite") {
        sqlx::query("CREATE TRIGGER seat_fail BEFORE UPDATE OF seat_limit ON orgs BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
            .execute(&pool)
            .await
            .unwrap();
    } else {
        sqlx::query("CREATE FUNCTION seat_fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TRIGGER seat_fail BEFORE UPDATE OF seat_limit ON orgs FOR EACH ROW EXECUTE FUNCTION seat_fail()")
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn a_seat_change_the_database_refuses_is_reverted_at_stripe_and_a_failed_revert_is_counted() {
    let (s, org, fake) = setup().await;
    let t = &org.admin_token;
    break_seat_writes(&s.database_url).await;
    let (st, v) = s
        .send(
            Method::PUT,
            "/v1/billing/seats",
            t,
            Some(json!({"seats": 9})),
        )
        .await;
    assert_eq!(st, 500, "{v}");
    {
        let f = fake.lock().unwrap();
        let q: Vec<&str> = f
            .posts
            .iter()
            .filter_map(|(_, _, form)| {
                form.iter()
                    .find(|(k, _)| k == "items[0][quantity]")
                    .map(|(_, v)| v.as_str())
            })
            .collect();
        assert_eq!(q, ["9", "5"], "changed, then reverted");
        assert!(f.posts[1].1.ends_with("-revert"));
        assert_eq!(f.quantity, 5);
    }
    assert_eq!(s.get("/v1/org", t).await.1["seat_limit"], 5);
    let (_, log) = s.get("/v1/audit-log?limit=200", t).await;
    assert!(actions(&log).contains(&"billing.seats.reverted".into()));

    // Now the revert itself fails: logged at error level and counted.
    fake.lock().unwrap().ok_writes_left = Some(1);
    let (st, _) = s
        .send(
            Method::PUT,
            "/v1/billing/seats",
            t,
            Some(json!({"seats": 7})),
        )
        .await;
    assert_eq!(st, 500);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("frontdesk_stripe_revert_failures_total 1"),
        "{metrics}"
    );
    let (_, log) = s.get("/v1/audit-log?limit=200", t).await;
    assert!(actions(&log).contains(&"billing.seats.revert_failed".into()));
    s.stop().await;
}

#[tokio::test]
async fn pause_blocks_at_once_resume_unblocks_and_cancel_keeps_access_until_the_period_ends() {
    let (s, org, fake) = setup().await;
    let t = &org.admin_token;
    let resumes = frontdesk::now_ms() + 7 * 86_400_000;
    let (st, v) = s
        .send(
            Method::POST,
            "/v1/billing/pause",
            t,
            Some(json!({"resumes_at_ms": resumes})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["pause_collection"].as_bool()),
        (Some("paused"), Some(true))
    );
    {
        let f = fake.lock().unwrap();
        let form = &f.posts.last().unwrap().2;
        assert!(form.contains(&("pause_collection[behavior]".into(), "void".into())));
        assert!(form.contains(&(
            "pause_collection[resumes_at]".into(),
            (resumes / 1000).to_string()
        )));
    }
    let (st, v) = s
        .send(
            Method::POST,
            "/v1/billing/pause",
            t,
            Some(json!({"resumes_at_ms": 1})),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (422, Some("invalid_value")));
    let (_, v) = s.send(Method::POST, "/v1/billing/resume", t, None).await;
    assert_eq!(v["status"], "active");

    let (st, v) = s.send(Method::POST, "/v1/billing/cancel", t, None).await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["status"].as_str(), v["cancel_at_period_end"].as_bool()),
        (Some("active"), Some(true))
    );
    assert!(fake
        .lock()
        .unwrap()
        .posts
        .last()
        .unwrap()
        .2
        .contains(&("cancel_at_period_end".into(), "true".into())));
    let (_, v) = s
        .send(Method::POST, "/v1/billing/cancel/undo", t, None)
        .await;
    assert_eq!(v["cancel_at_period_end"], false);

    // Stripe refusing is a 502 and changes nothing here.
    fake.lock().unwrap().ok_writes_left = Some(0);
    let (st, v) = s
        .send(Method::POST, "/v1/billing/pause", t, Some(json!({})))
        .await;
    assert_eq!((st, v["code"].as_str()), (502, Some("stripe_error")));
    assert_eq!(s.get("/v1/billing", t).await.1["status"], "active");

    let other = s.org("globex", 5).await;
    let (st, v) = s
        .send(
            Method::POST,
            "/v1/billing/pause",
            &other.admin_token,
            Some(json!({})),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("no_subscription")));
    s.stop().await;
}

#[test]
fn a_missing_price_stops_the_start_with_a_clear_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = rt.block_on(async {
        fake_stripe(Arc::new(Mutex::new(Fake {
            price_missing: true,
            ..Fake::default()
        })))
        .await
    });
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frontdesk"))
        .arg("serve")
        .current_dir(dir.path())
        .env("FRONTDESK_LISTEN", "127.0.0.1:0")
        .env("FRONTDESK_STRIPE_API_KEY", "sk_test_x")
        .env("FRONTDESK_STRIPE_API_BASE", &base)
        .env("FRONTDESK_STRIPE_SEAT_PRICE_ID", "price_gone")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FRONTDESK_STRIPE_SEAT_PRICE_ID: price price_gone is not an active price"),
        "{err}"
    );
    assert!(!err.contains("sk_test_x"), "the key is never printed");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frontdesk"))
        .arg("serve")
        .current_dir(dir.path())
        .env("FRONTDESK_STRIPE_API_KEY", "sk_test_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FRONTDESK_STRIPE_SEAT_PRICE_ID: required")
    );
    drop(rt);
}
