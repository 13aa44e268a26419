//! An admin of org A can never see or touch org B: every org B resource answers 404, and nothing
//! of org B changes.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn an_admin_of_one_org_gets_404_on_every_resource_of_another() {
    let s = TestServer::start().await;
    let a = s.org("org-a", 5).await;
    let b = s.org("org-b", 5).await;
    let tb = &b.admin_token;
    let (_, pool_b) = s
        .send(
            Method::POST,
            "/v1/pools",
            tb,
            Some(json!({"name": "B-sales"})),
        )
        .await;
    let pool_b = pool_b["id"].as_str().unwrap().to_owned();
    let (_, rule_b) = s
        .send(
            Method::POST,
            &format!("/v1/pools/{pool_b}/rules"),
            tb,
            Some(json!({"domain": "b.example"})),
        )
        .await;
    let rule_b = rule_b["id"].as_str().unwrap().to_owned();
    let (_, agent_b) = s
        .send(
            Method::POST,
            "/v1/agents",
            tb,
            Some(
                json!({"user_id": "b-agent", "email": "b@example.com", "display_name": "B",
                        "pools": [{"pool_id": pool_b, "tier": 1}]}),
            ),
        )
        .await;
    let agent_b = agent_b["id"].as_str().unwrap().to_owned();
    let (_, keys_b) = s.get("/v1/widget-keys", tb).await;
    let key_b = keys_b[0]["id"].as_str().unwrap().to_owned();
    let default_b = b.created.default_pool.to_string();
    let admin_b = b.created.admin_id.to_string();

    let (_, before) = s.get("/v1/pools", tb).await;
    let (_, agents_before) = s.get("/v1/agents", tb).await;
    let (_, log_before) = s.get("/v1/audit-log?limit=200", tb).await;

    let ta = &a.admin_token;
    let calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/v1/pools/{pool_b}"), None),
        (Method::GET, format!("/v1/pools/{default_b}"), None),
        (
            Method::PATCH,
            format!("/v1/pools/{pool_b}"),
            Some(json!({"name": "stolen"})),
        ),
        (
            Method::PATCH,
            format!("/v1/pools/{pool_b}"),
            Some(json!({"is_default": true})),
        ),
        (Method::DELETE, format!("/v1/pools/{pool_b}"), None),
        (
            Method::POST,
            format!("/v1/pools/{pool_b}/rules"),
            Some(json!({"domain": "evil.example"})),
        ),
        (
            Method::DELETE,
            format!("/v1/pools/{pool_b}/rules/{rule_b}"),
            None,
        ),
        (Method::GET, format!("/v1/agents/{agent_b}"), None),
        (Method::GET, format!("/v1/agents/{admin_b}"), None),
        (
            Method::PATCH,
            format!("/v1/agents/{agent_b}"),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::PUT,
            format!("/v1/agents/{agent_b}/pools"),
            Some(json!({"pools": []})),
        ),
        (Method::DELETE, format!("/v1/agents/{agent_b}"), None),
        (Method::DELETE, format!("/v1/agents/{admin_b}"), None),
        (Method::DELETE, format!("/v1/widget-keys/{key_b}"), None),
    ];
    for (method, path, body) in calls {
        let (st, resp) = s.send(method.clone(), &path, ta, body).await;
        assert_eq!(st, 404, "{method} {path} -> {resp}");
        assert_eq!(resp["code"], "not_found", "{method} {path}");
    }
    // Org A cannot pull B's pools into its own agents either.
    let (_, own) = s
        .send(
            Method::POST,
            "/v1/agents",
            ta,
            Some(json!({"user_id": "a-agent", "email": "a@example.com", "display_name": "A"})),
        )
        .await;
    let own_path = format!("/v1/agents/{}/pools", own["id"].as_str().unwrap());
    let (st, _) = s
        .send(
            Method::PUT,
            &own_path,
            ta,
            Some(json!({"pools": [{"pool_id": pool_b, "tier": 1}]})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .send(
            Method::POST,
            "/v1/agents",
            ta,
            Some(
                json!({"user_id": "x", "email": "x@example.com", "display_name": "X",
                        "pools": [{"pool_id": default_b, "tier": 1}]}),
            ),
        )
        .await;
    assert_eq!(st, 404);

    // Lists only ever show the caller's org.
    for path in [
        "/v1/pools",
        "/v1/agents",
        "/v1/widget-keys",
        "/v1/audit-log",
    ] {
        let (st, list) = s.get(path, ta).await;
        assert_eq!(st, 200);
        let text = list.to_string();
        for foreign in [&pool_b, &agent_b, &key_b, &default_b, &admin_b] {
            assert!(!text.contains(foreign.as_str()), "{path} shows {foreign}");
        }
    }
    // A token naming org B but carrying org A's admin identity is not an agent of B.
    let (st, _) = s
        .get(
            "/v1/pools",
            &hs256("org-a-admin", b.id(), frontdesk_domain::Role::Admin),
        )
        .await;
    assert_eq!(st, 401);

    assert_eq!(s.get("/v1/pools", tb).await.1, before);
    assert_eq!(s.get("/v1/agents", tb).await.1, agents_before);
    assert_eq!(s.get("/v1/audit-log?limit=200", tb).await.1, log_before);
    s.stop().await;
}
