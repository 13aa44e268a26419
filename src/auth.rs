//! Authentication. Agent JWTs are verified before anything in them is believed: the header's
//! `alg` and `kid` only pick the key, each key admits exactly one algorithm, and `exp`, `aud`,
//! `iss` and `sub` are required. HS256 uses the shared secret; ES256 and RS256 use keys from a
//! JWKS (file or URL), cached and refreshed when a token names an unknown `kid` (at most once per
//! configured interval, so unknown ids cannot hammer the identity provider). `none` and every other
//! algorithm are refused. Visitor tokens are HMAC-SHA256 signed by the server and verified in
//! constant time.

use crate::config::{JwksSource, JwtConfig, Secret};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use frontdesk_domain::{OrgId, Role, VisitorSessionId};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// Longest token we look at; anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest JWKS document we accept.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("token is malformed")]
    Malformed,
    #[error("token is too long")]
    TooLong,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token has no key id")]
    MissingKid,
    #[error("token key id is unknown")]
    UnknownKid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token audience is wrong")]
    WrongAudience,
    #[error("token issuer is wrong")]
    WrongIssuer,
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// Stable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "token_expired",
            _ => "invalid_token",
        }
    }
}

/// What a verified agent token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentClaims {
    pub sub: String,
    pub org_id: OrgId,
    pub role: Role,
    pub exp: u64,
}

#[derive(Debug, Deserialize, Serialize)]
struct RawClaims {
    sub: String,
    exp: u64,
    app_metadata: AppMetadata,
}

#[derive(Debug, Deserialize, Serialize)]
struct AppMetadata {
    org_id: OrgId,
    role: Role,
}

struct KeyEntry {
    key: DecodingKey,
    alg: Algorithm,
}

struct Jwks {
    source: JwksSource,
    keys: RwLock<HashMap<String, KeyEntry>>,
    last_refresh: Mutex<Option<Instant>>,
    min_interval: Duration,
    http: reqwest::Client,
}

pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: String,
    audience: String,
}

impl JwtVerifier {
    /// Builds the verifier and loads the JWKS once; an unreadable JWKS at start is an error.
    pub async fn new(cfg: &JwtConfig, hs_secret: Option<&Secret>) -> Result<Self, String> {
        let jwks = match &cfg.jwks {
            None => None,
            Some(source) => {
                let jwks = Jwks {
                    source: source.clone(),
                    keys: RwLock::new(HashMap::new()),
                    last_refresh: Mutex::new(None),
                    min_interval: cfg.jwks_refresh_min_interval,
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .map_err(|e| format!("http client: {e}"))?,
                };
                jwks.refresh(true).await?;
                Some(jwks)
            }
        };
        Ok(JwtVerifier {
            hs256: hs_secret.map(|s| DecodingKey::from_secret(s.expose())),
            jwks,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
        })
    }

    pub async fn verify(&self, token: &str) -> Result<AgentClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        // Reading the header picks the key; nothing in the payload is read before verification.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => (
                self.hs256.clone().ok_or(AuthError::AlgorithmNotAllowed)?,
                Algorithm::HS256,
            ),
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::AlgorithmNotAllowed)?;
                let kid = header.kid.as_deref().ok_or(AuthError::MissingKid)?;
                let (key, alg) = jwks.key(kid).await?;
                if alg != header.alg {
                    return Err(AuthError::AlgorithmNotAllowed);
                }
                (key, alg)
            }
            _ => return Err(AuthError::AlgorithmNotAllowed),
        };
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_audience(&[&self.audience]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        v.leeway = 30;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key, &v).map_err(map_jwt_error)?;
        let c = data.claims;
        if c.sub.is_empty() || c.sub.len() > 200 {
            return Err(AuthError::InvalidClaims("sub".into()));
        }
        Ok(AgentClaims {
            sub: c.sub,
            org_id: c.app_metadata.org_id,
            role: c.app_metadata.role,
            exp: c.exp,
        })
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => AuthError::BadSignature,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
        K::MissingRequiredClaim(c) => AuthError::InvalidClaims(format!("missing {c}")),
        K::Json(_) => AuthError::InvalidClaims("missing or mistyped claim".into()),
        _ => AuthError::Malformed,
    }
}

impl Jwks {
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        if let Some(k) = self.keys.read().await.get(kid) {
            return Ok((k.key.clone(), k.alg));
        }
        if let Err(e) = self.refresh(false).await {
            tracing::warn!(error = %e, "JWKS refresh failed");
        }
        self.keys
            .read()
            .await
            .get(kid)
            .map(|k| (k.key.clone(), k.alg))
            .ok_or(AuthError::UnknownKid)
    }

    /// Reloads the key set, unless another reload happened within `min_interval` (`force` skips
    /// that check, for the first load).
    async fn refresh(&self, force: bool) -> Result<(), String> {
        let mut last = self.last_refresh.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let bytes = match &self.source {
            JwksSource::File(path) => {
                let b = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("FRONTDESK_JWKS_FILE {}: {e}", path.display()))?;
                if b.len() > MAX_JWKS_BYTES {
                    return Err("FRONTDESK_JWKS_FILE: larger than 256 KiB".into());
                }
                b
            }
            JwksSource::Url(url) => fetch_bounded(&self.http, url.clone())
                .await
                .map_err(|e| format!("FRONTDESK_JWKS_URL: {e}"))?,
        };
        let set: JwkSet =
            serde_json::from_slice(&bytes).map_err(|e| format!("JWKS is not valid: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let inferred = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => continue,
            };
            let declared = match jwk.common.key_algorithm {
                None => inferred,
                Some(KeyAlgorithm::ES256) => Algorithm::ES256,
                Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                Some(_) => continue,
            };
            if declared != inferred {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, KeyEntry { key, alg: declared });
                }
                Err(e) => tracing::warn!(kid = %kid, error = %e, "skipping unusable JWK"),
            }
        }
        tracing::info!(keys = keys.len(), "JWKS loaded");
        *self.keys.write().await = keys;
        Ok(())
    }
}

async fn fetch_bounded(http: &reqwest::Client, url: url::Url) -> Result<Vec<u8>, String> {
    let mut resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err("larger than 256 KiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Signs an agent token with an HS256 secret (for `frontdesk token` and the demo).
#[allow(clippy::too_many_arguments)]
pub fn mint_agent_token(
    secret: &Secret,
    issuer: &str,
    audience: &str,
    sub: &str,
    org_id: OrgId,
    role: Role,
    now_s: u64,
    ttl_s: u64,
) -> String {
    #[derive(Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        aud: &'a str,
        iss: &'a str,
        iat: u64,
        exp: u64,
        role: &'static str,
        app_metadata: AppMetadata,
    }
    let claims = Claims {
        sub,
        aud: audience,
        iss: issuer,
        iat: now_s,
        exp: now_s + ttl_s,
        role: "authenticated",
        app_metadata: AppMetadata { org_id, role },
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.expose()),
    )
    .expect("encoding HS256 claims into a JWT cannot fail: the claims are plain serializable data")
}

/// What a visitor token proves: this session of this org, until `exp_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorClaims {
    pub sid: VisitorSessionId,
    pub org: OrgId,
    pub exp_ms: i64,
}

/// Issues and verifies visitor tokens: `vt1.<payload>.<HMAC-SHA256(key, "vt1.<payload>")>`.
pub struct VisitorTokens {
    key: ring::hmac::Key,
}

const VT_PREFIX: &str = "vt1.";

impl VisitorTokens {
    pub fn new(secret: &[u8]) -> Self {
        VisitorTokens {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    pub fn issue(&self, claims: &VisitorClaims) -> String {
        let payload = B64.encode(
            serde_json::to_vec(claims).expect("visitor claims are plain data and always serialize"),
        );
        let signed = format!("{VT_PREFIX}{payload}");
        let tag = ring::hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", B64.encode(tag.as_ref()))
    }

    pub fn verify(&self, token: &str, now_ms: i64) -> Result<VisitorClaims, AuthError> {
        if token.len() > 1024 {
            return Err(AuthError::TooLong);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let payload = signed.strip_prefix(VT_PREFIX).ok_or(AuthError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| AuthError::Malformed)?;
        ring::hmac::verify(&self.key, signed.as_bytes(), &tag)
            .map_err(|_| AuthError::BadSignature)?;
        let bytes = B64.decode(payload).map_err(|_| AuthError::Malformed)?;
        let claims: VisitorClaims =
            serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
        if claims.exp_ms <= now_ms {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// Fresh random bytes, base64url: for secrets and public keys.
pub fn random_token(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random source is available");
    B64.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_ms: i64) -> VisitorClaims {
        VisitorClaims {
            sid: VisitorSessionId::new(),
            org: OrgId::new(),
            exp_ms,
        }
    }

    #[test]
    fn visitor_token_round_trips_until_it_expires() {
        let t = VisitorTokens::new(b"k".repeat(32).as_slice());
        let c = claims(10_000);
        let tok = t.issue(&c);
        assert_eq!(t.verify(&tok, 9_999), Ok(c));
        assert_eq!(t.verify(&tok, 10_000), Err(AuthError::Expired));
    }

    #[test]
    fn visitor_token_from_another_key_or_tampered_is_refused() {
        let a = VisitorTokens::new(b"a".repeat(32).as_slice());
        let b = VisitorTokens::new(b"b".repeat(32).as_slice());
        let tok = a.issue(&claims(10_000));
        assert_eq!(b.verify(&tok, 0), Err(AuthError::BadSignature));
        let (signed, tag) = tok.rsplit_once('.').unwrap();
        let other = B64.encode(serde_json::to_vec(&claims(i64::MAX)).unwrap());
        let forged = format!("{VT_PREFIX}{other}.{tag}");
        assert_eq!(a.verify(&forged, 0), Err(AuthError::BadSignature));
        assert!(a.verify(signed, 0).is_err());
        assert!(a.verify("", 0).is_err());
        assert!(a.verify(&"x".repeat(5000), 0).is_err());
    }
}
