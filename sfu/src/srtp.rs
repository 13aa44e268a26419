//! The core's own SRTP: sealing forwarded RTP and reading the SRTCP its receivers send back,
//! for peers that negotiated an AEAD (AES-GCM, RFC 7714) profile.
//!
//! Why it exists: given a packet to forward, str0m's send path queues it per receiver, must be
//! told the time before its pacer lets it go, then writes the header, copies the packet into
//! its retransmission cache and seals it — about 70 % of a forwarded copy's instructions in
//! the in-memory bench, where the sealing itself is a quarter. Sealing here, from the keys the
//! DTLS handshake exported ([`crate::dtls`]), is the header, the AEAD and nothing else.
//!
//! Sharing the keys with str0m is safe because an AEAD nonce is (SSRC, rollover counter,
//! sequence number) for RTP and (SSRC, SRTCP index) for SRTCP, and the two never seal the
//! same one: for a forwarded stream the core picks every sequence number and gives each to
//! exactly one of the two paths, and this module never sends RTCP. It only *opens* the
//! receivers' SRTCP — with its own context, str0m opening the same datagram with its own — to
//! read the NACKs that ask for packets str0m never saw.
//!
//! AES-CM/HMAC-SHA1 (`AES128_CM_SHA1_80`) peers keep str0m's path: every current browser
//! offers the GCM profiles and str0m prefers them.

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256GcmCipher, CryptoError, CryptoProvider,
    SrtpProvider,
};

use crate::dtls::Keying;

/// The AEAD tag length of both GCM profiles.
pub(crate) const TAG_LEN: usize = 16;
/// SRTCP's trailing E flag and 31-bit index.
const SRTCP_INDEX_LEN: usize = 4;
/// Key derivation labels (RFC 3711 §4.3.2).
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_SALT: u8 = 5;
/// Remote senders of SRTCP whose last index is remembered (a receiver sends from one or two).
const MAX_RTCP_SENDERS: usize = 8;

enum Cipher {
    Aes128(Box<dyn AeadAes128GcmCipher>),
    Aes256(Box<dyn AeadAes256GcmCipher>),
}

/// One direction's AEAD: session key (in the cipher) and salt.
struct Aead {
    cipher: Cipher,
    salt: [u8; 12],
}

/// A peer's SRTP as the core's forwarding path needs it: sealing RTP to the peer, opening
/// SRTCP from it.
pub(crate) struct FastSrtp {
    rtp_out: Aead,
    rtcp_in: Aead,
    /// (sender SSRC, highest SRTCP index accepted): a replayed or reordered report is
    /// ignored here (str0m still gets it and judges it by its own window).
    rtcp_seen: Vec<(u32, u32)>,
}

impl std::fmt::Debug for FastSrtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastSrtp")
    }
}

/// Why an SRTCP datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Shorter than header, tag and index; or not encrypted (the E flag clear).
    Malformed,
    /// The tag did not verify.
    Forged,
    /// Index not above the last accepted from that sender.
    Replayed,
}

impl FastSrtp {
    /// The contexts for `keying`, or `None` if its profile is not an AEAD one.
    pub(crate) fn new(crypto: &CryptoProvider, keying: &Keying) -> Option<FastSrtp> {
        let (rtp_out, rtcp_in) = match keying.profile {
            SrtpProfile::AEAD_AES_128_GCM => contexts::<16>(crypto.srtp_provider, keying)?,
            SrtpProfile::AEAD_AES_256_GCM => contexts::<32>(crypto.srtp_provider, keying)?,
            _ => return None,
        };
        Some(FastSrtp {
            rtp_out,
            rtcp_in,
            rtcp_seen: Vec::new(),
        })
    }

    /// Seals the RTP packet `header ‖ payload` (RFC 7714 §8: the header is authenticated, the
    /// payload encrypted) into `out`, which is cleared first. `index` is the packet's extended
    /// sequence number (rollover counter ‖ sequence number); `ssrc` must be the header's.
    pub(crate) fn seal_rtp(
        &mut self,
        header: &[u8],
        payload: &[u8],
        ssrc: u32,
        index: u64,
        out: &mut Vec<u8>,
    ) {
        let hlen = header.len();
        out.clear();
        out.reserve(hlen + payload.len() + TAG_LEN);
        out.extend_from_slice(header);
        out.resize(hlen + payload.len() + TAG_LEN, 0);
        let (aad, body) = out.split_at_mut(hlen);
        let iv = self.rtp_out.rtp_iv(ssrc, index);
        if self.rtp_out.seal(&iv, aad, payload, body).is_err() {
            // aws-lc refuses only malformed lengths, which the sizes above rule out; never
            // send a packet that was not sealed.
            out.clear();
        }
    }

    /// Opens an SRTCP datagram (RFC 7714 §9) into `out` (cleared first): the plain compound
    /// packet, first header included.
    pub(crate) fn open_rtcp(
        &mut self,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        out.clear();
        let n = datagram.len();
        if n < 8 + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(OpenError::Malformed);
        }
        let trailer = &datagram[n - SRTCP_INDEX_LEN..];
        let e_and_index = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        if e_and_index & 0x8000_0000 == 0 {
            return Err(OpenError::Malformed);
        }
        let index = e_and_index & 0x7fff_ffff;
        let ssrc = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        let seen = self.rtcp_seen.iter().position(|(s, _)| *s == ssrc);
        if let Some(i) = seen {
            if index <= self.rtcp_seen[i].1 {
                return Err(OpenError::Replayed);
            }
        }
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&datagram[..8]);
        aad[8..].copy_from_slice(trailer);
        let sealed = &datagram[8..n - SRTCP_INDEX_LEN];
        out.extend_from_slice(&datagram[..8]);
        out.resize(8 + sealed.len() - TAG_LEN, 0);
        // The IV formula is the same for both key sizes (RFC 7714 §9.1).
        let iv = AeadAes128Gcm::rtcp_iv(self.rtcp_in.salt, ssrc, index);
        match self.rtcp_in.open(&iv, &aad, sealed, &mut out[8..]) {
            Ok(len) => out.truncate(8 + len),
            Err(_) => {
                out.clear();
                return Err(OpenError::Forged);
            }
        }
        match seen {
            Some(i) => self.rtcp_seen[i].1 = index,
            None => {
                if self.rtcp_seen.len() == MAX_RTCP_SENDERS {
                    self.rtcp_seen.remove(0);
                }
                self.rtcp_seen.push((ssrc, index));
            }
        }
        Ok(())
    }
}

/// The outgoing RTP and incoming RTCP contexts for `keying`, with `K`-byte master keys. Our
/// keys are the client's if we were the DTLS client (RFC 5764 §4.2).
fn contexts<const K: usize>(srtp: &dyn SrtpProvider, keying: &Keying) -> Option<(Aead, Aead)> {
    let ours = master::<K>(&keying.material, keying.active)?;
    let theirs = master::<K>(&keying.material, !keying.active)?;
    Some((
        Aead::new(srtp, &ours, LABEL_RTP_KEY, LABEL_RTP_SALT, true)?,
        Aead::new(srtp, &theirs, LABEL_RTCP_KEY, LABEL_RTCP_SALT, false)?,
    ))
}

impl Aead {
    /// The session key and salt under these labels, for sealing (`seal`) or opening; `None`
    /// unless the master key is AES-128 or AES-256 sized.
    fn new<const K: usize>(
        srtp: &dyn SrtpProvider,
        m: &Master<K>,
        key_label: u8,
        salt_label: u8,
        seal: bool,
    ) -> Option<Aead> {
        let mut key = [0u8; K];
        m.derive(srtp, key_label, &mut key);
        let mut salt = [0u8; 12];
        m.derive(srtp, salt_label, &mut salt);
        let cipher = if let Ok(k) = <[u8; 16]>::try_from(&key[..]) {
            Some(Cipher::Aes128(
                srtp.aead_aes_128_gcm().create_cipher(k, seal),
            ))
        } else if let Ok(k) = <[u8; 32]>::try_from(&key[..]) {
            Some(Cipher::Aes256(
                srtp.aead_aes_256_gcm().create_cipher(k, seal),
            ))
        } else {
            None
        };
        zeroize::Zeroize::zeroize(&mut key);
        Some(Aead {
            cipher: cipher?,
            salt,
        })
    }

    /// The RTP IV for extended sequence number `index` (RFC 7714 §8.1; the same formula for
    /// both key sizes).
    fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        AeadAes128Gcm::rtp_iv(self.salt, ssrc, (index >> 16) as u32, index as u16)
    }

    fn seal(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        match &mut self.cipher {
            Cipher::Aes128(c) => c.encrypt(iv, aad, input, output),
            Cipher::Aes256(c) => c.encrypt(iv, aad, input, output),
        }
    }

    fn open(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, CryptoError> {
        match &mut self.cipher {
            Cipher::Aes128(c) => c.decrypt(iv, &[aad], input, output),
            Cipher::Aes256(c) => c.decrypt(iv, &[aad], input, output),
        }
    }
}

/// One side's master key and 96-bit master salt.
struct Master<const K: usize> {
    key: [u8; K],
    salt: [u8; 14],
    salt_len: usize,
}

impl<const K: usize> Drop for Master<K> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

/// The client's (`client` true) or server's master key and salt from DTLS-SRTP keying
/// material laid out key, key, salt, salt (RFC 5764 §4.2), salts 12 bytes (RFC 7714 §12).
fn master<const K: usize>(material: &[u8], client: bool) -> Option<Master<K>> {
    const SALT: usize = 12;
    if material.len() != 2 * K + 2 * SALT {
        return None;
    }
    let (k, s) = if client {
        (0, 2 * K)
    } else {
        (K, 2 * K + SALT)
    };
    let mut m = Master {
        key: [0; K],
        salt: [0; 14],
        salt_len: SALT,
    };
    m.key.copy_from_slice(&material[k..k + K]);
    m.salt[..SALT].copy_from_slice(&material[s..s + SALT]);
    Some(m)
}

impl<const K: usize> Master<K> {
    /// RFC 3711 §4.3.3's key derivation (key derivation rate 0): AES in counter mode keyed
    /// with the master key, over (master salt ⊕ label at byte 7) ‖ block counter, the salt
    /// left-aligned in the 14 bytes before the counter (as libsrtp and str0m do for the
    /// 12-byte GCM salts).
    fn derive(&self, srtp: &dyn SrtpProvider, label: u8, out: &mut [u8]) {
        let mut input = [0u8; 16];
        input[..self.salt_len].copy_from_slice(&self.salt[..self.salt_len]);
        input[7] ^= label;
        let mut block = [0u8; 32];
        for (round, chunk) in out.chunks_mut(16).enumerate() {
            input[14..].copy_from_slice(&(round as u16).to_be_bytes());
            match K {
                16 => srtp.srtp_aes_128_ecb_round(&self.key, &input, &mut block),
                _ => srtp.srtp_aes_256_ecb_round(&self.key, &input, &mut block),
            }
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        zeroize::Zeroize::zeroize(&mut block);
        zeroize::Zeroize::zeroize(&mut input);
    }
}

/// Calls `nack` with (media SSRC, sequence number) for every packet a plain RTCP compound
/// packet's generic NACKs (RFC 4585 §6.2.1) ask for. Stops at the first malformed packet.
pub(crate) fn for_each_nack(rtcp: &[u8], mut nack: impl FnMut(u32, u16)) {
    let mut rest = rtcp;
    while rest.len() >= 4 {
        if rest[0] >> 6 != 2 {
            return;
        }
        let fmt = rest[0] & 0x1f;
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return;
        }
        let packet = &rest[..len];
        // RTPFB (205), FMT 1: sender SSRC, media SSRC, then (PID, BLP) pairs.
        if pt == 205 && fmt == 1 && packet.len() >= 12 {
            let media = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
            for fci in packet[12..].chunks_exact(4) {
                let pid = u16::from_be_bytes([fci[0], fci[1]]);
                let blp = u16::from_be_bytes([fci[2], fci[3]]);
                nack(media, pid);
                for bit in 0..16u16 {
                    if blp & (1 << bit) != 0 {
                        nack(media, pid.wrapping_add(bit + 1));
                    }
                }
            }
        }
        rest = &rest[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn key_derivation_matches_rfc_3711_appendix_b3() {
        let srtp = str0m::crypto::from_feature_flags().srtp_provider;
        let mut m = Master::<16> {
            key: [0; 16],
            salt: [0; 14],
            salt_len: 14,
        };
        m.key
            .copy_from_slice(&hex("E1F97A0D3E018BE0D64FA32C06DE4139"));
        m.salt.copy_from_slice(&hex("0EC675AD498AFEEBB6960B3AABE6"));
        let mut key = [0u8; 16];
        m.derive(srtp, LABEL_RTP_KEY, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        m.derive(srtp, LABEL_RTP_SALT, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // More than one block of output (the 160-bit authentication key).
        let mut auth = [0u8; 20];
        m.derive(srtp, 1, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    fn pair(profile: SrtpProfile, key_len: usize) -> (FastSrtp, FastSrtp) {
        let crypto = str0m::crypto::from_feature_flags();
        let material: Vec<u8> = (0..(2 * key_len + 24) as u8).collect();
        let side = |active| Keying {
            profile,
            material: material.clone(),
            active,
        };
        (
            FastSrtp::new(&crypto, &side(true)).unwrap(),
            FastSrtp::new(&crypto, &side(false)).unwrap(),
        )
    }

    /// Opens RTP that `keying`'s side sealed: a test-only opener from the same derivation.
    fn open_rtp(
        keying: &Keying,
        sealed: &[u8],
        hlen: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<Vec<u8>> {
        let srtp = str0m::crypto::from_feature_flags().srtp_provider;
        let (m, active) = (&keying.material, keying.active);
        let mut aead = match keying.profile {
            SrtpProfile::AEAD_AES_128_GCM => Aead::new(
                srtp,
                &master::<16>(m, active)?,
                LABEL_RTP_KEY,
                LABEL_RTP_SALT,
                false,
            ),
            _ => Aead::new(
                srtp,
                &master::<32>(m, active)?,
                LABEL_RTP_KEY,
                LABEL_RTP_SALT,
                false,
            ),
        }?;
        let mut out = vec![0u8; sealed.len() - hlen - TAG_LEN];
        let iv = aead.rtp_iv(ssrc, index);
        aead.open(&iv, &sealed[..hlen], &sealed[hlen..], &mut out)
            .ok()?;
        Some(out)
    }

    #[test]
    fn sealed_rtp_opens_with_the_senders_keys_and_not_with_another_index() {
        for (profile, key_len) in [
            (SrtpProfile::AEAD_AES_128_GCM, 16),
            (SrtpProfile::AEAD_AES_256_GCM, 32),
        ] {
            let (mut client, _server) = pair(profile, key_len);
            let header = [0x80, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
            let mut sealed = Vec::new();
            client.seal_rtp(&header, b"payload", 0xdeadbeef, 0x1_1234, &mut sealed);
            assert_eq!(sealed.len(), 12 + 7 + TAG_LEN);
            assert_eq!(&sealed[..12], &header, "the header stays in the clear");
            assert_ne!(&sealed[12..19], b"payload");
            let keying = Keying {
                profile,
                material: (0..(2 * key_len + 24) as u8).collect(),
                active: true,
            };
            assert_eq!(
                open_rtp(&keying, &sealed, 12, 0xdeadbeef, 0x1_1234).as_deref(),
                Some(&b"payload"[..])
            );
            assert_eq!(
                open_rtp(&keying, &sealed, 12, 0xdeadbeef, 0x2_1234),
                None,
                "another rollover counter must not open it"
            );
        }
    }

    /// Seals SRTCP as a peer would (RFC 7714 §9.1) with `side`'s RTCP keys.
    fn seal_rtcp(keying: &Keying, plain: &[u8], index: u32) -> Vec<u8> {
        let srtp = str0m::crypto::from_feature_flags().srtp_provider;
        let m = master::<16>(&keying.material, keying.active).unwrap();
        let mut aead = Aead::new(srtp, &m, LABEL_RTCP_KEY, LABEL_RTCP_SALT, true).unwrap();
        let ssrc = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        let e_index = (0x8000_0000u32 | index).to_be_bytes();
        let mut aad = plain[..8].to_vec();
        aad.extend_from_slice(&e_index);
        let mut out = plain[..8].to_vec();
        out.resize(plain.len() + TAG_LEN, 0);
        let iv = AeadAes128Gcm::rtcp_iv(aead.salt, ssrc, index);
        aead.seal(&iv, &aad, &plain[8..], &mut out[8..]).unwrap();
        out.extend_from_slice(&e_index);
        out
    }

    #[test]
    fn a_receivers_nack_opens_once_and_lists_every_packet_it_asks_for() {
        let (_client, mut server) = pair(SrtpProfile::AEAD_AES_128_GCM, 16);
        // The client (DTLS active) sends a NACK: PID 100 and BLP bits 0 and 15.
        let mut nack = vec![0x81, 205, 0, 3, 0, 0, 0, 7, 0, 0, 0, 42];
        nack.extend_from_slice(&100u16.to_be_bytes());
        nack.extend_from_slice(&0x8001u16.to_be_bytes());
        let client = Keying {
            profile: SrtpProfile::AEAD_AES_128_GCM,
            material: (0..56u8).collect(),
            active: true,
        };
        let sealed = seal_rtcp(&client, &nack, 5);
        let mut plain = Vec::new();
        server.open_rtcp(&sealed, &mut plain).unwrap();
        assert_eq!(plain, nack);
        let mut asked = Vec::new();
        for_each_nack(&plain, |ssrc, seq| asked.push((ssrc, seq)));
        assert_eq!(asked, vec![(42, 100), (42, 101), (42, 116)]);
        // The same datagram again, an older index, a flipped bit, garbage: refused.
        assert_eq!(
            server.open_rtcp(&sealed, &mut plain),
            Err(OpenError::Replayed)
        );
        assert_eq!(
            server.open_rtcp(&seal_rtcp(&client, &nack, 4), &mut plain),
            Err(OpenError::Replayed)
        );
        let mut forged = seal_rtcp(&client, &nack, 6);
        forged[10] ^= 1;
        assert_eq!(
            server.open_rtcp(&forged, &mut plain),
            Err(OpenError::Forged)
        );
        assert_eq!(
            server.open_rtcp(&[0x81, 205, 0, 1], &mut plain),
            Err(OpenError::Malformed)
        );
        // A newer index still opens after the refusals.
        server
            .open_rtcp(&seal_rtcp(&client, &nack, 7), &mut plain)
            .unwrap();
        // Truncated or nonsense compounds end the walk without a panic.
        for_each_nack(&plain[..10], |_, _| panic!("nothing in a truncated packet"));
        for_each_nack(&[0x81, 205, 0xff, 0xff, 0, 0], |_, _| {
            panic!("oversized length")
        });
    }
}
