//! The admin API does what an org's admin needs, and every write lands in the audit log.

mod common;

use common::*;
use frontdesk_domain::Role;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn pools_rules_and_the_default_pool() {
    let s = TestServer::start().await;
    let org = s.org("acme", 5).await;
    let t = &org.admin_token;
    let (st, pools) = s.get("/v1/pools", t).await;
    assert_eq!(st, 200);
    assert_eq!(pools.as_array().unwrap().len(), 1);
    assert_eq!(pools[0]["is_default"], true);
    let default_id = pools[0]["id"].as_str().unwrap().to_owned();

    let (st, sales) = s
        .send(Method::POST, "/v1/pools", t, Some(json!({"name": "Sales"})))
        .await;
    assert_eq!(st, 201, "{sales}");
    let sales_id = sales["id"].as_str().unwrap().to_owned();
    let (st, body) = s
        .send(Method::POST, "/v1/pools", t, Some(json!({"name": "Sales"})))
        .await;
    assert_eq!((st, body["code"].as_str()), (409, Some("pool_exists")));

    let (st, rule) = s
        .send(
            Method::POST,
            &format!("/v1/pools/{sales_id}/rules"),
            t,
            Some(json!({"domain": "*.Shop.example", "path_prefix": "/checkout", "priority": 5})),
        )
        .await;
    assert_eq!(st, 201, "{rule}");
    assert_eq!(rule["domain"], "*.shop.example");
    let (st, body) = s
        .send(
            Method::POST,
            &format!("/v1/pools/{sales_id}/rules"),
            t,
            Some(json!({"domain": "not a host"})),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (422, Some("invalid_value")));

    // The default pool can be neither removed nor un-defaulted; moving the default works.
    let (st, body) = s
        .send(Method::DELETE, &format!("/v1/pools/{default_id}"), t, None)
        .await;
    assert_eq!((st, body["code"].as_str()), (409, Some("default_pool")));
    let (st, _) = s
        .send(
            Method::PATCH,
            &format!("/v1/pools/{default_id}"),
            t,
            Some(json!({"is_default": false})),
        )
        .await;
    assert_eq!(st, 409);
    let (st, moved) = s
        .send(
            Method::PATCH,
            &format!("/v1/pools/{sales_id}"),
            t,
            Some(json!({"is_default": true, "name": "Sales EU"})),
        )
        .await;
    assert_eq!(st, 200, "{moved}");
    assert_eq!(
        (moved["is_default"].as_bool(), moved["name"].as_str()),
        (Some(true), Some("Sales EU"))
    );
    let (_, old) = s.get(&format!("/v1/pools/{default_id}"), t).await;
    assert_eq!(old["is_default"], false);
    let (st, _) = s
        .send(Method::DELETE, &format!("/v1/pools/{default_id}"), t, None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = s.get(&format!("/v1/pools/{default_id}"), t).await;
    assert_eq!(st, 404, "a removed pool is gone from the API");

    let rule_id = rule["id"].as_str().unwrap();
    let path = format!("/v1/pools/{sales_id}/rules/{rule_id}");
    assert_eq!(s.send(Method::DELETE, &path, t, None).await.0, 204);
    assert_eq!(s.send(Method::DELETE, &path, t, None).await.0, 404);

    let (_, log) = s.get("/v1/audit-log?limit=200", t).await;
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "pool.create",
        "pool.rule.add",
        "pool.update",
        "pool.remove",
        "pool.rule.remove",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn seat_limit_is_enforced_and_orgs_over_it_are_grandfathered() {
    let s = TestServer::start().await;
    let org = s.org("acme", 3).await;
    let t = &org.admin_token;
    let add = |n: u32| {
        json!({"user_id": format!("agent-{n}"), "email": format!("a{n}@example.com"),
               "display_name": format!("Agent {n}")})
    };
    for n in 1..=2 {
        assert_eq!(
            s.send(Method::POST, "/v1/agents", t, Some(add(n))).await.0,
            201
        );
    }
    let (st, body) = s.send(Method::POST, "/v1/agents", t, Some(add(3))).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (409, Some("seat_limit")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("3 of its 3 seats"));

    // Billing lowers the limit below what the org uses: everyone keeps working, nobody is added.
    s.state
        .store
        .set_seat_limit(
            org.id(),
            1,
            frontdesk::store::Actor::System,
            frontdesk::now_ms(),
        )
        .await
        .unwrap();
    let (st, org_view) = s.get("/v1/org", t).await;
    assert_eq!(st, 200);
    assert_eq!(
        (
            org_view["seat_limit"].as_u64(),
            org_view["seats_used"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert_eq!(
        s.get("/v1/me", &hs256("agent-1", org.id(), Role::Agent))
            .await
            .0,
        200
    );
    assert_eq!(
        s.send(Method::POST, "/v1/agents", t, Some(add(4))).await.0,
        409
    );

    // Removing agents frees seats only down to the limit.
    let (_, agents) = s.get("/v1/agents", t).await;
    for a in agents
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["role"] == "agent")
    {
        let path = format!("/v1/agents/{}", a["id"].as_str().unwrap());
        assert_eq!(s.send(Method::DELETE, &path, t, None).await.0, 204);
    }
    assert_eq!(
        s.send(Method::POST, "/v1/agents", t, Some(add(5))).await.0,
        409
    );
    s.state
        .store
        .set_seat_limit(
            org.id(),
            2,
            frontdesk::store::Actor::System,
            frontdesk::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(
        s.send(Method::POST, "/v1/agents", t, Some(add(5))).await.0,
        201
    );
    s.stop().await;
}

#[tokio::test]
async fn concurrent_adds_cannot_overfill_the_seats() {
    let s = TestServer::start().await;
    let org = s.org("acme", 4).await;
    let mut tasks = Vec::new();
    for n in 0..12 {
        let http = s.http.clone();
        let url = s.url("/v1/agents");
        let token = org.admin_token.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(
                    &json!({"user_id": format!("u{n}"), "email": format!("u{n}@example.com"),
                              "display_name": "U"}),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => created += 1,
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 3, "4 seats, one taken by the admin");
    let (_, view) = s.get("/v1/org", &org.admin_token).await;
    assert_eq!(view["seats_used"], 4);
    s.stop().await;
}

#[tokio::test]
async fn agents_are_added_changed_moved_between_pools_and_removed() {
    let s = TestServer::start().await;
    let org = s.org("acme", 10).await;
    let t = &org.admin_token;
    let default_pool = org.created.default_pool.to_string();
    let (_, sales) = s
        .send(Method::POST, "/v1/pools", t, Some(json!({"name": "Sales"})))
        .await;
    let sales_id = sales["id"].as_str().unwrap();
    let (st, a) = s
        .send(
            Method::POST,
            "/v1/agents",
            t,
            Some(json!({"user_id": "sam", "email": "sam@example.com", "display_name": "Sam",
                        "pools": [{"pool_id": default_pool, "tier": 1}, {"pool_id": sales_id, "tier": 2}]})),
        )
        .await;
    assert_eq!(st, 201, "{a}");
    assert_eq!(a["role"], "agent");
    assert_eq!(a["pools"].as_array().unwrap().len(), 2);
    let path = format!("/v1/agents/{}", a["id"].as_str().unwrap());
    let (st, body) = s
        .send(
            Method::POST,
            "/v1/agents",
            t,
            Some(json!({"user_id": "sam", "email": "x@example.com", "display_name": "Dup"})),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (409, Some("agent_exists")));

    let (st, a2) = s
        .send(
            Method::PUT,
            &format!("{path}/pools"),
            t,
            Some(json!({"pools": [{"pool_id": sales_id, "tier": 1}]})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(a2["pools"], json!([{"pool_id": sales_id, "tier": 1}]));
    let (_, pool) = s.get(&format!("/v1/pools/{sales_id}"), t).await;
    assert_eq!(pool["members"][0]["agent_id"], a["id"]);
    let (st, _) = s
        .send(
            Method::PUT,
            &format!("{path}/pools"),
            t,
            Some(json!({"pools": [{"pool_id": sales_id, "tier": 11}]})),
        )
        .await;
    assert_eq!(st, 422, "tier out of range");

    let (st, a3) = s
        .send(
            Method::PATCH,
            &path,
            t,
            Some(json!({"role": "admin", "display_name": "Samantha"})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        (a3["role"].as_str(), a3["display_name"].as_str()),
        (Some("admin"), Some("Samantha"))
    );

    assert_eq!(s.send(Method::DELETE, &path, t, None).await.0, 204);
    assert_eq!(s.get(&path, t).await.0, 404);
    assert_eq!(
        s.get("/v1/me", &hs256("sam", org.id(), Role::Admin))
            .await
            .0,
        401,
        "a removed agent's tokens stop working at once"
    );
    // The user can be added again later: removal keeps history, not the seat.
    let (st, _) = s
        .send(
            Method::POST,
            "/v1/agents",
            t,
            Some(json!({"user_id": "sam", "email": "sam@example.com", "display_name": "Sam"})),
        )
        .await;
    assert_eq!(st, 201);
    s.stop().await;
}

#[tokio::test]
async fn the_last_admin_can_be_neither_demoted_nor_removed() {
    let s = TestServer::start().await;
    let org = s.org("acme", 5).await;
    let path = format!("/v1/agents/{}", org.created.admin_id);
    let (st, body) = s
        .send(
            Method::PATCH,
            &path,
            &org.admin_token,
            Some(json!({"role": "agent"})),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (409, Some("last_admin")));
    let (st, body) = s.send(Method::DELETE, &path, &org.admin_token, None).await;
    assert_eq!((st, body["code"].as_str()), (409, Some("last_admin")));
    s.stop().await;
}

#[tokio::test]
async fn settings_are_validated_and_stored() {
    let s = TestServer::start().await;
    let org = s.org("acme", 5).await;
    let t = &org.admin_token;
    let (_, o) = s.get("/v1/org", t).await;
    assert_eq!(
        o["settings"],
        json!({"ring_timeout_ms": 15000, "cobrowse_enabled": true, "recording_enabled": false,
               "retention_days": 30, "blocked_countries": [], "queue_when_unavailable": true})
    );
    assert_eq!(o["status"], "active");
    let (st, v) = s
        .send(
            Method::PATCH,
            "/v1/org/settings",
            t,
            Some(json!({"ring_timeout_ms": 20000, "recording_enabled": true, "blocked_countries": ["de", "US"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ring_timeout_ms"], 20000);
    assert_eq!(v["blocked_countries"], json!(["DE", "US"]));
    for bad in [
        json!({"ring_timeout_ms": 100}),
        json!({"retention_days": 0}),
        json!({"blocked_countries": ["Germany"]}),
    ] {
        let (st, body) = s
            .send(Method::PATCH, "/v1/org/settings", t, Some(bad.clone()))
            .await;
        assert_eq!(st, 422, "{bad} -> {body}");
    }
    let (_, o) = s.get("/v1/org", t).await;
    assert_eq!(
        o["settings"]["ring_timeout_ms"], 20000,
        "refused patches change nothing"
    );
    s.stop().await;
}

#[tokio::test]
async fn visitor_sessions_pick_the_pool_by_rule_and_revoked_keys_stop_working() {
    let s = TestServer::start().await;
    let org = s.org("acme", 5).await;
    let t = &org.admin_token;
    let (_, sales) = s
        .send(Method::POST, "/v1/pools", t, Some(json!({"name": "Sales"})))
        .await;
    let sales_id = sales["id"].as_str().unwrap();
    s.send(
        Method::POST,
        &format!("/v1/pools/{sales_id}/rules"),
        t,
        Some(json!({"domain": "shop.example", "path_prefix": "/pricing"})),
    )
    .await;
    let key = &org.created.widget_key;
    let start = |page: &str| {
        let body = json!({"widget_key": key, "page_url": page});
        let http = s.http.clone();
        let url = s.url("/v1/visitor/sessions");
        async move { split(http.post(url).json(&body).send().await.unwrap()).await }
    };
    let (st, v) = start("https://shop.example/pricing/team").await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["pool_id"], sales_id);
    let token = v["visitor_token"].as_str().unwrap();
    let claims = s
        .state
        .visitor_tokens
        .verify(token, frontdesk::now_ms())
        .expect("a fresh visitor token verifies");
    assert_eq!(claims.org, org.id());
    let (_, v) = start("https://shop.example/pricingx").await;
    assert_eq!(v["pool_id"], org.created.default_pool.to_string());
    let (st, _) = start("javascript:alert(1)").await;
    assert_eq!(st, 422);
    // Keys that cannot exist are refused before the database (PostgreSQL rejects NUL in text:
    // schemathesis found a 500 there).
    for bad in ["wk_\u{0}x", "wk_ x", "wk_ï", "'; --"] {
        let body = json!({"widget_key": bad, "page_url": "https://shop.example/"});
        let (st, v) = split(
            s.http
                .post(s.url("/v1/visitor/sessions"))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (401, Some("invalid_widget_key")),
            "{bad:?}: {v}"
        );
    }

    let (_, keys) = s.get("/v1/widget-keys", t).await;
    let key_id = keys[0]["id"].as_str().unwrap();
    assert_eq!(
        s.send(
            Method::DELETE,
            &format!("/v1/widget-keys/{key_id}"),
            t,
            None
        )
        .await
        .0,
        204
    );
    let (st, body) = start("https://shop.example/").await;
    assert_eq!(
        (st, body["code"].as_str()),
        (401, Some("invalid_widget_key"))
    );
    let (st, fresh) = s
        .send(
            Method::POST,
            "/v1/widget-keys",
            t,
            Some(json!({"label": "site"})),
        )
        .await;
    assert_eq!(st, 201);
    assert!(fresh["key"].as_str().unwrap().starts_with("wk_"));
    s.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/healthz", "").await, (200, json!({"status": "ok"})));
    assert_eq!(
        s.get("/readyz", "").await,
        (200, json!({"status": "ready"}))
    );
    let (st, doc) = s.get("/openapi.json", "").await;
    assert_eq!(st, 200);
    assert!(doc["paths"]["/v1/agents"]["post"].is_object());
    s.stop().await;
}
