//! Bad input to the admin API gets a 4xx JSON error, never a 500, and writes nothing.

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

async fn raw(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = s.http.request(method, s.url(path)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    split(req.send().await.unwrap()).await
}

/// name, method, path, token, content type, body, expected status, expected code
type Case<'a> = (
    &'a str,
    Method,
    String,
    Option<&'a str>,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_requests_get_typed_4xx_errors_and_change_nothing() {
    let s = TestServer::start().await;
    let org = s.org("acme", 5).await;
    let t = org.admin_token.as_str();
    let json_ct = Some("application/json");
    let pool = org.created.default_pool;
    let (_, log_before) = s.get("/v1/audit-log?limit=200", t).await;
    let (_, pools_before) = s.get("/v1/pools", t).await;
    let (_, agents_before) = s.get("/v1/agents", t).await;

    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(1024 * 1024 + 10));
    let cases: Vec<Case> = vec![
        (
            "unknown field",
            Method::POST,
            "/v1/pools".into(),
            Some(t),
            json_ct,
            br#"{"name": "x", "evil": true}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "array instead of an object",
            Method::POST,
            "/v1/widget-keys".into(),
            Some(t),
            json_ct,
            b"[]".to_vec(),
            400,
            "invalid_body",
        ),
        (
            "array with the fields in order",
            Method::PATCH,
            format!("/v1/pools/{pool}"),
            Some(t),
            json_ct,
            br#"["Renamed", null]"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "control character",
            Method::POST,
            "/v1/widget-keys".into(),
            Some(t),
            json_ct,
            br#"{"label": "ab\rc"}"#.to_vec(),
            422,
            "invalid_value",
        ),
        (
            "wrong type",
            Method::POST,
            "/v1/pools".into(),
            Some(t),
            json_ct,
            br#"{"name": 42}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "wrong type in a patch",
            Method::PATCH,
            "/v1/org/settings".into(),
            Some(t),
            json_ct,
            br#"{"ring_timeout_ms": "soon"}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "negative number",
            Method::PATCH,
            "/v1/org/settings".into(),
            Some(t),
            json_ct,
            br#"{"retention_days": -1}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "not JSON",
            Method::POST,
            "/v1/agents".into(),
            Some(t),
            json_ct,
            b"{not json".to_vec(),
            400,
            "invalid_body",
        ),
        (
            "missing field",
            Method::POST,
            "/v1/agents".into(),
            Some(t),
            json_ct,
            br#"{"user_id": "x"}"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "unknown role",
            Method::POST,
            "/v1/agents".into(),
            Some(t),
            json_ct,
            br#"{"user_id": "x", "email": "x@example.com", "display_name": "X", "role": "owner"}"#
                .to_vec(),
            400,
            "invalid_body",
        ),
        (
            "bad email",
            Method::POST,
            "/v1/agents".into(),
            Some(t),
            json_ct,
            br#"{"user_id": "x", "email": "nope", "display_name": "X"}"#.to_vec(),
            422,
            "invalid_value",
        ),
        (
            "empty name",
            Method::POST,
            "/v1/pools".into(),
            Some(t),
            json_ct,
            br#"{"name": "   "}"#.to_vec(),
            422,
            "invalid_value",
        ),
        (
            "body over 1 MiB",
            Method::POST,
            "/v1/pools".into(),
            Some(t),
            json_ct,
            huge.into_bytes(),
            413,
            "body_too_large",
        ),
        (
            "no content type",
            Method::POST,
            "/v1/pools".into(),
            Some(t),
            None,
            br#"{"name": "x"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "invalid id",
            Method::GET,
            "/v1/pools/not-a-uuid".into(),
            Some(t),
            None,
            vec![],
            400,
            "invalid_path",
        ),
        (
            "invalid id in a delete",
            Method::DELETE,
            "/v1/agents/1234".into(),
            Some(t),
            None,
            vec![],
            400,
            "invalid_path",
        ),
        (
            "invalid second id",
            Method::DELETE,
            format!("/v1/pools/{pool}/rules/zzz"),
            Some(t),
            None,
            vec![],
            400,
            "invalid_path",
        ),
        (
            "bad query",
            Method::GET,
            "/v1/audit-log?limit=9999".into(),
            Some(t),
            None,
            vec![],
            400,
            "invalid_query",
        ),
        (
            "bad query type",
            Method::GET,
            "/v1/audit-log?limit=many".into(),
            Some(t),
            None,
            vec![],
            400,
            "invalid_query",
        ),
        (
            "missing auth",
            Method::POST,
            "/v1/pools".into(),
            None,
            json_ct,
            br#"{"name": "x"}"#.to_vec(),
            401,
            "missing_token",
        ),
        (
            "empty bearer",
            Method::GET,
            "/v1/pools".into(),
            Some(""),
            None,
            vec![],
            401,
            "missing_token",
        ),
        (
            "unknown route",
            Method::GET,
            "/v1/nothing".into(),
            Some(t),
            None,
            vec![],
            404,
            "no_route",
        ),
        (
            "wrong method",
            Method::PUT,
            "/v1/pools".into(),
            Some(t),
            None,
            vec![],
            405,
            "method_not_allowed",
        ),
    ];
    for (name, method, path, token, ct, body, status, code) in cases {
        let (st, resp) = raw(&s, method, &path, token, ct, body).await;
        assert_eq!(st, status, "{name}: {resp}");
        assert_eq!(resp["code"], code, "{name}: {resp}");
        assert!(
            resp["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    // A malformed Authorization header is a 401, not a 500.
    let r = s
        .http
        .get(s.url("/v1/pools"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    assert_eq!(s.get("/v1/audit-log?limit=200", t).await.1, log_before);
    assert_eq!(s.get("/v1/pools", t).await.1, pools_before);
    assert_eq!(s.get("/v1/agents", t).await.1, agents_before);
    s.stop().await;
}
