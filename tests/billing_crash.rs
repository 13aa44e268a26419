//! The webhook queue survives a `kill -9` mid-processing: after a restart every stored event is
//! applied exactly once.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");
const SECRET: &[u8] = b"whsec_crash";

fn cmd(db: &str) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("FRONTDESK_") {
            c.env_remove(k);
        }
    }
    c.env("FRONTDESK_DATABASE_URL", db)
        .env(
            "FRONTDESK_STRIPE_WEBHOOK_SECRET",
            std::str::from_utf8(SECRET).unwrap(),
        )
        .env("RUST_LOG", "info");
    c
}

/// Kills the server when the test ends, passing or failing: no orphan outlives the test.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(db: &str) -> (Server, String) {
    let mut child = cmd(db)
        .args(["serve", "--log-format", "json"])
        .env("FRONTDESK_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(Instant::now() < deadline, "server did not start");
        let line = lines.next().expect("server output").unwrap();
        if line.contains("\"listening\"") {
            let v: Value = serde_json::from_str(&line).unwrap();
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Server(child), format!("http://{addr}"))
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Vec<u8> {
    json!({"id": id, "type": kind, "created": created, "data": {"object": object}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn every_stored_event_is_applied_exactly_once_across_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/crash.db", dir.path().display());
    let out = cmd(&db)
        .args([
            "create-org",
            "--name",
            "Acme",
            "--admin-user-id",
            "admin",
            "--admin-email",
            "ops@acme.example",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let org = text
        .lines()
        .find_map(|l| l.strip_prefix("org_id"))
        .unwrap()
        .trim()
        .to_owned();
    let out = cmd(&db)
        .args([
            "token",
            "--org-id",
            &org,
            "--user-id",
            "admin",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let (server, base) = serve(&db);
    let http = reqwest::Client::new();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let post = |body: Vec<u8>| {
        let sig = frontdesk_billing::sign(SECRET, now, &body);
        http.post(format!("{base}/v1/webhooks/stripe"))
            .header("stripe-signature", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let link = event(
        "evt_link",
        "customer.subscription.created",
        now - 1000,
        json!({"id": "sub_1", "customer": "cus_1", "status": "active", "metadata": {"org_id": org}}),
    );
    assert_eq!(post(link).await.unwrap().status().as_u16(), 200);
    // 60 events, each flipping the org between past_due and active: 40 over HTTP...
    const N: i64 = 60;
    for i in 0..40 {
        let kind = if i % 2 == 0 {
            "invoice.payment_failed"
        } else {
            "invoice.paid"
        };
        let body = event(
            &format!("evt_{i:03}"),
            kind,
            now - 900 + i,
            json!({"id": format!("in_{i}"), "customer": "cus_1", "subscription": "sub_1"}),
        );
        assert_eq!(post(body).await.unwrap().status().as_u16(), 200);
    }
    // Every event is stored (each got its 200); kill the process while it applies them.
    drop(server);
    // ...and 20 more stored as a dead process leaves them, the earliest queued one claimed
    // (`processing`, with a lock that has not expired: recovery cannot wait for it to run out).
    // One customer's events are applied one at a time, so a process holds at most one of them.
    {
        let store = frontdesk::store::Store::connect(&db).await.unwrap();
        for i in 40..N {
            let kind = if i % 2 == 0 {
                "invoice.payment_failed"
            } else {
                "invoice.paid"
            };
            let body = event(
                &format!("evt_{i:03}"),
                kind,
                now - 900 + i,
                json!({"id": format!("in_{i}"), "customer": "cus_1", "subscription": "sub_1"}),
            );
            let ev = frontdesk_billing::parse_event(&body).unwrap();
            let at = frontdesk::now_ms();
            assert!(store
                .insert_stripe_event(&ev, kind, std::str::from_utf8(&body).unwrap(), at)
                .await
                .unwrap());
        }
        // The kill may already have left one in processing; if not, hold one here.
        let _ = store.claim_stripe_event(frontdesk::now_ms()).await.unwrap();
        assert!(
            store
                .claim_stripe_event(frontdesk::now_ms())
                .await
                .unwrap()
                .is_none(),
            "the customer's next event waits for the one in processing"
        );
        store.close().await;
    }

    let (_server, base) = serve(&db);
    let changes = |log: &Value| {
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "billing.status")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let log: Value = http
            .get(format!("{base}/v1/audit-log?limit=200"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if changes(&log) >= N as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a duplicate application the time to show, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log: Value = http
        .get(format!("{base}/v1/audit-log?limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut queue = Vec::new();
    {
        let store = frontdesk::store::Store::connect(&db).await.unwrap();
        for i in 0..N {
            queue.push((
                i,
                store
                    .stripe_event_status(&format!("evt_{i:03}"))
                    .await
                    .unwrap(),
            ));
        }
    }
    assert_eq!(
        changes(&log),
        N as usize,
        "each event changed the status exactly once; queue: {queue:?}"
    );
    let notes: Value = http
        .get(format!("{base}/v1/notifications?limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        notes.as_array().unwrap().len(),
        (N / 2) as usize,
        "one email per failure"
    );
    let org_view: Value = http
        .get(format!("{base}/v1/org"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(org_view["status"], "active", "the last event was a payment");
}
