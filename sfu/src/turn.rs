//! Time-limited TURN credentials in the "TURN REST" scheme that coturn checks with
//! `use-auth-secret` / `static-auth-secret`: `username = "<expiry unix seconds>:<id>"` and
//! `password = base64(HMAC-SHA1(secret, username))`. The TURN server needs only the shared secret;
//! nothing is stored per credential.

use base64::Engine as _;

/// One credential pair for `RTCPeerConnection`'s `iceServers`.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
}

impl std::fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential is a bearer secret until it expires: never print it.
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Credentials for `id` valid until `expires_unix` (seconds since the epoch). `id` must not
/// contain `:` (coturn splits on the first one); any `:` is replaced by `_`.
pub fn turn_credential(secret: &[u8], id: &str, expires_unix: u64) -> TurnCredential {
    let username = format!("{expires_unix}:{}", id.replace(':', "_"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, username.as_bytes());
    TurnCredential {
        credential: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        username,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_matches_the_turn_rest_scheme() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = turn_credential(b"secret", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn colons_in_the_id_cannot_shift_the_expiry() {
        let c = turn_credential(b"s", "a:b", 5);
        assert_eq!(c.username, "5:a_b");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = turn_credential(b"s", "a", 5);
        assert!(!format!("{c:?}").contains(&c.credential));
    }
}
