//! Only validly signed, unexpired tokens for this issuer and audience, naming an org, get in.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use frontdesk_domain::{OrgId, Role};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::time::Duration;

struct EcKey {
    encoding: EncodingKey,
    jwk: Value,
    public_pem_like: Vec<u8>,
}

fn ec_key(kid: &str) -> EcKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let public = pair.public_key().as_ref().to_vec();
    assert_eq!(public.len(), 65, "uncompressed P-256 point");
    EcKey {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                    "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..])}),
        public_pem_like: public,
    }
}

/// An RSA key made by openssl for this run: (encoding key, public JWK).
fn rsa_key(dir: &std::path::Path, kid: &str) -> (EncodingKey, Value) {
    let path = dir.join("rsa.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl genpkey");
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path)
        .output()
        .expect("openssl rsa");
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().strip_prefix("Modulus=").expect("modulus line");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let pem = std::fs::read(&path).unwrap();
    (
        EncodingKey::from_rsa_pem(&pem).expect("PKCS#8 RSA key"),
        json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": B64.encode(n), "e": "AQAB"}),
    )
}

fn claims(sub: &str, org: OrgId, role: Role) -> Value {
    let now = now_s();
    json!({"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 600,
           "app_metadata": {"org_id": org, "role": role}})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        claims,
    )
}

async fn me(s: &TestServer, token: &str) -> (u16, Value) {
    s.get("/v1/me", token).await
}

#[tokio::test]
async fn only_valid_tokens_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let es = ec_key("es-1");
    let (rsa, rsa_jwk) = rsa_key(dir.path(), "rs-1");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [es.jwk, rsa_jwk]}).to_string()).unwrap();
    let s = TestServer::start_with(Options {
        jwks_file: Some(jwks_path.clone()),
        ..Options::default()
    })
    .await;
    let org = s.org("acme", 5).await;
    let sub = "acme-admin";
    let good = claims(sub, org.id(), Role::Admin);

    // Accepted: HS256 with the shared secret, ES256 and RS256 through the JWKS.
    for token in [
        hs(&good),
        sign(Algorithm::ES256, Some("es-1"), &es.encoding, &good),
        sign(Algorithm::RS256, Some("rs-1"), &rsa, &good),
    ] {
        let (status, body) = me(&s, &token).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], sub);
    }

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = json!(now_s() - 3600);
    cases.push(("expired", hs(&expired), "token_expired"));
    let mut aud = good.clone();
    aud["aud"] = json!("someone-else");
    cases.push(("wrong aud", hs(&aud), "invalid_token"));
    let mut iss = good.clone();
    iss["iss"] = json!("https://evil.test/auth/v1");
    cases.push(("wrong iss", hs(&iss), "invalid_token"));
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = B64.encode(good.to_string());
    cases.push((
        "alg none",
        format!("{none_header}.{payload}."),
        "invalid_token",
    ));
    cases.push((
        "alg none with a signature",
        format!("{none_header}.{payload}.{}", B64.encode(b"sig")),
        "invalid_token",
    ));
    // Algorithm confusion: HS256 "signed" with the public key material of the ES256 key.
    cases.push((
        "HS256 with the public key",
        sign(
            Algorithm::HS256,
            Some("es-1"),
            &EncodingKey::from_secret(&es.public_pem_like),
            &good,
        ),
        "invalid_token",
    ));
    cases.push((
        "HS256 with the JWK text",
        sign(
            Algorithm::HS256,
            Some("es-1"),
            &EncodingKey::from_secret(es.jwk.to_string().as_bytes()),
            &good,
        ),
        "invalid_token",
    ));
    let valid = hs(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    let mut forged = good.clone();
    forged["app_metadata"]["org_id"] = json!(OrgId::new());
    cases.push((
        "tampered payload",
        format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(forged.to_string()),
            parts[2]
        ),
        "invalid_token",
    ));
    let mut no_org = good.clone();
    no_org["app_metadata"] = json!({"role": "admin"});
    cases.push(("missing org claim", hs(&no_org), "invalid_token"));
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push(("missing exp", hs(&no_exp), "invalid_token"));
    let stranger = ec_key("unknown-kid");
    cases.push((
        "unknown kid",
        sign(
            Algorithm::ES256,
            Some("unknown-kid"),
            &stranger.encoding,
            &good,
        ),
        "invalid_token",
    ));
    cases.push((
        "ES256 without kid",
        sign(Algorithm::ES256, None, &es.encoding, &good),
        "invalid_token",
    ));
    cases.push((
        "RS256 header naming the EC key",
        sign(Algorithm::RS256, Some("es-1"), &rsa, &good),
        "invalid_token",
    ));
    cases.push((
        "HS512 is not on the list",
        sign(
            Algorithm::HS512,
            None,
            &EncodingKey::from_secret(SECRET),
            &good,
        ),
        "invalid_token",
    ));
    cases.push((
        "HS256 signed with another secret",
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(b"another-secret-0123456789-abcdefghijk"),
            &good,
        ),
        "invalid_token",
    ));
    cases.push(("garbage", "not.a.jwt".into(), "invalid_token"));
    cases.push(("oversized", "a".repeat(10_000), "invalid_token"));

    for (name, token, code) in &cases {
        let (status, body) = me(&s, token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["code"], *code, "{name}: {body}");
    }

    let (status, body) = s
        .http
        .get(s.url("/v1/me"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map(|st| (st, ()))
        .unwrap();
    assert_eq!(status, 401, "missing auth {body:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_verified_token_still_needs_a_live_agent_and_the_admin_role_needs_both_sides() {
    let s = TestServer::start().await;
    let org = s.org("acme", 5).await;
    // Signed correctly, but nobody with this sub is an agent of the org.
    let (status, body) = me(&s, &hs256("stranger", org.id(), Role::Admin)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("not_an_agent")));
    // An agent whose token claims admin is still an agent: the org's record decides too.
    let (status, _) = s
        .send(
            reqwest::Method::POST,
            "/v1/agents",
            &org.admin_token,
            Some(json!({"user_id": "bob", "email": "bob@example.com", "display_name": "Bob"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = s
        .get("/v1/pools", &hs256("bob", org.id(), Role::Admin))
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    // And an admin record with an agent-role token is only an agent.
    let (status, _) = s
        .get("/v1/pools", &hs256("acme-admin", org.id(), Role::Agent))
        .await;
    assert_eq!(status, 403);
    let (status, _) = me(&s, &hs256("bob", org.id(), Role::Agent)).await;
    assert_eq!(status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_rotated_jwks_is_picked_up_on_an_unknown_kid() {
    let dir = tempfile::tempdir().unwrap();
    let old = ec_key("old");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [old.jwk]}).to_string()).unwrap();
    let s = TestServer::start_with(Options {
        jwks_file: Some(jwks_path.clone()),
        jwks_refresh_min_interval: Duration::ZERO,
        no_hs_secret: true,
        ..Options::default()
    })
    .await;
    let org = s.org("acme", 5).await;
    let good = claims("acme-admin", org.id(), Role::Admin);
    let new = ec_key("new");
    let token = sign(Algorithm::ES256, Some("new"), &new.encoding, &good);
    assert_eq!(me(&s, &token).await.0, 401, "not yet published");
    std::fs::write(&jwks_path, json!({"keys": [old.jwk, new.jwk]}).to_string()).unwrap();
    assert_eq!(
        me(&s, &token).await.0,
        200,
        "published: refreshed on the unknown kid"
    );
    // With no shared secret configured, HS256 is refused outright.
    assert_eq!(me(&s, &hs(&good)).await.0, 401);
    s.stop().await;
}
