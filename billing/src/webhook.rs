//! `Stripe-Signature` verification: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`,
//! possibly several `v1` (Stripe signs with every live secret while one rotates). Any `v1` that
//! matches any configured secret passes; comparison is constant-time (`ring::hmac::verify`);
//! the timestamp must be within the tolerance on either side of now.

/// Why a webhook was refused. None of these store anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("Stripe-Signature has no v1 signature")]
    NoSignature,
    #[error("webhook timestamp is outside the tolerance")]
    OutsideTolerance,
    #[error("no signature matches a configured secret")]
    Mismatch,
    #[error("webhook body is larger than 1 MiB")]
    TooLarge,
    #[error("webhook body is not a Stripe event: {0}")]
    NotAnEvent(String),
}

/// Default tolerance on the timestamp, in seconds.
pub const TOLERANCE_S: i64 = 300;

/// Verifies `header` over `body` against any of `secrets`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Vec<u8>],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingHeader)?;
    if header.len() > 4096 {
        return Err(WebhookError::Malformed);
    }
    if body.len() > crate::MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookError::TooLarge);
    }
    let mut t: Option<i64> = None;
    let mut sigs: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(WebhookError::Malformed)?;
        match k {
            "t" => t = Some(v.parse().map_err(|_| WebhookError::Malformed)?),
            "v1" => {
                if let Some(sig) = hex32(v) {
                    sigs.push(sig);
                }
            }
            _ => {} // v0 and future schemes are ignored, never trusted
        }
        if sigs.len() > 16 {
            return Err(WebhookError::Malformed);
        }
    }
    let t = t.ok_or(WebhookError::Malformed)?;
    if sigs.is_empty() {
        return Err(WebhookError::NoSignature);
    }
    if (now_s - t).abs() > tolerance_s {
        return Err(WebhookError::OutsideTolerance);
    }
    let mut signed = Vec::with_capacity(body.len() + 24);
    signed.extend_from_slice(t.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    for secret in secrets {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        for sig in &sigs {
            if ring::hmac::verify(&key, &signed, sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(WebhookError::Mismatch)
}

/// Signs like Stripe does; for tests and the fake Stripe of the test suite.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = t.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let tag = ring::hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"whsec_test";

    #[test]
    fn a_valid_signature_passes_and_any_tampering_fails() {
        let body = br#"{"id":"evt_1"}"#;
        let h = sign(S, 1000, body);
        assert_eq!(
            verify_signature(Some(&h), body, &[S.to_vec()], 1000, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(Some(&h), br#"{"id":"evt_2"}"#, &[S.to_vec()], 1000, 300),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&h), body, &[b"other".to_vec()], 1000, 300),
            Err(WebhookError::Mismatch)
        );
    }

    #[test]
    fn any_configured_secret_and_any_v1_may_match() {
        let body = b"{}";
        let new = sign(b"new", 10, body);
        let old = sign(b"old", 10, body);
        let both = format!("{},{}", old, new.split_once(',').unwrap().1);
        assert_eq!(
            verify_signature(
                Some(&new),
                body,
                &[b"old".to_vec(), b"new".to_vec()],
                10,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify_signature(Some(&both), body, &[b"new".to_vec()], 10, 300),
            Ok(())
        );
    }

    #[test]
    fn the_timestamp_must_be_within_tolerance_on_both_sides() {
        let h = sign(S, 1000, b"{}");
        assert_eq!(
            verify_signature(Some(&h), b"{}", &[S.to_vec()], 1301, 300),
            Err(WebhookError::OutsideTolerance)
        );
        assert_eq!(
            verify_signature(Some(&h), b"{}", &[S.to_vec()], 699, 300),
            Err(WebhookError::OutsideTolerance)
        );
        assert_eq!(
            verify_signature(Some(&h), b"{}", &[S.to_vec()], 1300, 300),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let k = [S.to_vec()];
        assert_eq!(
            verify_signature(None, b"", &k, 0, 300),
            Err(WebhookError::MissingHeader)
        );
        assert_eq!(
            verify_signature(Some("garbage"), b"", &k, 0, 300),
            Err(WebhookError::Malformed)
        );
        assert_eq!(
            verify_signature(Some("t=1"), b"", &k, 1, 300),
            Err(WebhookError::NoSignature)
        );
        assert_eq!(
            verify_signature(Some("t=1,v1=zz"), b"", &k, 1, 300),
            Err(WebhookError::NoSignature)
        );
        assert_eq!(
            verify_signature(Some("v1=00"), b"", &k, 1, 300),
            Err(WebhookError::Malformed)
        );
        let v0 = format!("t=1,v0={}", "a".repeat(64));
        assert_eq!(
            verify_signature(Some(&v0), b"", &k, 1, 300),
            Err(WebhookError::NoSignature)
        );
    }
}
