//! DTLS for the SFU's peers: str0m's own DTLS stack (dimpl over aws-lc-rs), with its
//! configuration built once per process rather than once per peer.
//!
//! str0m's aws-lc-rs provider builds a fresh `dimpl::Config` for every `Rtc`, and building one
//! validates the crypto provider: an ECDH agreement and signature checks per key-exchange
//! group, about 11.3 M instructions (callgrind) — nine tenths of what answering a peer's offer
//! cost, and several times its whole DTLS handshake. The configuration holds only settings and
//! the provider (no per-connection state, no RNG seed), so one validated copy serves every peer.
//! Everything else (certificate generation, the handshake, SRTP keying) is unchanged.
//!
//! Each instance also keeps a copy of the SRTP keying material the handshake exports, for the
//! core's own forwarding path ([`crate::srtp`]): str0m derives its SRTP contexts from the same
//! export and does not hand them out. The core collects the copy with [`take_created`] right
//! after it builds a peer's `Rtc` (which is when str0m asks for the instance).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// str0m's default crypto provider with [`SharedConfigDtls`] as its DTLS provider.
pub(crate) fn crypto_provider() -> CryptoProvider {
    static DTLS: SharedConfigDtls = SharedConfigDtls {
        config: OnceLock::new(),
    };
    CryptoProvider {
        dtls_provider: &DTLS,
        ..str0m::crypto::from_feature_flags()
    }
}

/// The SRTP keys one DTLS handshake exported.
pub(crate) struct Keying {
    pub(crate) profile: SrtpProfile,
    /// RFC 5764 §4.2 order: client key, server key, client salt, server salt.
    pub(crate) material: Vec<u8>,
    /// This side was the DTLS client (its keys are the client's).
    pub(crate) active: bool,
}

impl Drop for Keying {
    fn drop(&mut self) {
        // The derived session keys live on in the ciphers regardless.
        zeroize::Zeroize::zeroize(&mut self.material);
    }
}

impl std::fmt::Debug for Keying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Keying")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where one instance leaves its exported keys.
pub(crate) type KeyingSlot = Arc<Mutex<Option<Keying>>>;

thread_local! {
    /// The slot of the instance this thread's provider made last.
    static CREATED: RefCell<Option<KeyingSlot>> = const { RefCell::new(None) };
}

/// The keying slot of the DTLS instance made last on this thread (by the `Rtc` just built).
pub(crate) fn take_created() -> Option<KeyingSlot> {
    CREATED.with(|c| c.borrow_mut().take())
}

/// A DTLS provider whose instances share one validated configuration.
#[derive(Debug)]
struct SharedConfigDtls {
    /// The configuration for the MTU the first peer asked for (all peers of an `Sfu` share
    /// one `RtcConfig`, so in practice every peer).
    config: OnceLock<(Option<usize>, Arc<dimpl::Config>)>,
}

impl SharedConfigDtls {
    fn build(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        // As str0m's provider: ICE has proven return routability before DTLS starts, so a
        // server cookie round trip would add a flight and nothing else.
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        builder
            .build()
            .map(Arc::new)
            .map_err(|e| CryptoError::Other(format!("DTLS configuration refused: {e}")))
    }

    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        if let Some((m, c)) = self.config.get() {
            if *m == mtu {
                return Ok(c.clone());
            }
            // Another MTU than the first peer's: correct, only not shared.
            return Self::build(mtu);
        }
        let built = Self::build(mtu)?;
        Ok(self.config.get_or_init(|| (mtu, built)).1.clone())
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other:?}"
                )))
            }
        };
        let keying = KeyingSlot::default();
        CREATED.with(|c| *c.borrow_mut() = Some(keying.clone()));
        Ok(Box::new(Instance {
            dtls,
            keying,
            active: false,
        }))
    }
}

/// One peer's DTLS connection.
struct Instance {
    dtls: dimpl::Dtls,
    keying: KeyingSlot,
    active: bool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dtls::Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.active = active;
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.dtls.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            let keying = Keying {
                profile: *profile,
                material: km.to_vec(),
                active: self.active,
            };
            // A poisoned slot only means another thread panicked holding it: the keys are
            // still ours to replace.
            *self.keying.lock().unwrap_or_else(|e| e.into_inner()) = Some(keying);
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_share_one_validated_configuration() {
        let p = crypto_provider();
        let cert = p
            .dtls_provider
            .generate_certificate()
            .expect("aws-lc-rs makes certificates");
        let now = Instant::now();
        for _ in 0..2 {
            p.dtls_provider
                .new_dtls(&cert, now, DtlsVersion::Dtls12, Some(1150))
                .expect("a peer's DTLS instance on the shared configuration");
        }
        let shared = SharedConfigDtls {
            config: OnceLock::new(),
        };
        let c1 = shared.config(Some(1150)).unwrap();
        let c2 = shared.config(Some(1150)).unwrap();
        assert!(Arc::ptr_eq(&c1, &c2), "the second peer reuses the first's");
        let other = shared.config(Some(1000)).unwrap();
        assert!(!Arc::ptr_eq(&c1, &other));
        assert_eq!(other.mtu(), 1000);
    }
}
