//! The core's own SRTP: sealing forwarded RTP and reading the SRTCP its receivers send back,
//! for every profile str0m negotiates: AEAD_AES_256_GCM and AEAD_AES_128_GCM (RFC 7714), and
//! AES128_CM_HMAC_SHA1_80 (RFC 3711).
//!
//! Why it exists: given a packet to forward, str0m's send path queues it per receiver, must be
//! told the time before its pacer lets it go, then writes the header, copies the packet into
//! its retransmission cache and seals it — about 70 % of a forwarded copy's instructions in
//! the in-memory bench, where the sealing itself is a quarter. Sealing here, from the keys the
//! DTLS handshake exported ([`crate::dtls`]), is the header, the AEAD and nothing else.
//!
//! Sharing the keys with str0m is safe because a nonce (the AEAD's, or AES-CM's counter block)
//! is (SSRC, rollover counter, sequence number) for RTP and (SSRC, SRTCP index) for SRTCP, and
//! no nonce seals two plaintexts that both leave: for a forwarded stream the core picks every
//! sequence number and gives each to exactly one of the two paths. This module *opens* the
//! receivers' SRTCP — with its own context, str0m opening the same datagram with its own — to
//! read the NACKs that ask for packets str0m never saw. And it rewrites str0m's sender
//! reports before they leave ([`FastSrtp::add_to_sender_reports`]): their packet and octet
//! counts are str0m's own, about one packet in twenty of a track the core seals, so the core
//! opens the report, adds what it sent, and seals it again under str0m's index. That nonce
//! seals two plaintexts, but the first sealing is replaced in memory and never sent, so only
//! one is ever seen.
//!
//! Every current browser offers the GCM profiles and str0m prefers them; AES-CM/HMAC-SHA1
//! (`AES128_CM_SHA1_80`) is what a client without them gets (libsrtp builds without OpenSSL,
//! some native and gateway clients). Its packets carry a 10-byte HMAC-SHA1 tag after the
//! (counter-mode) encrypted payload, and an SRTCP datagram its index before the tag rather
//! than after it.

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80,
    Aes128CmSha1_80Cipher, CryptoError, CryptoProvider, SrtpProvider,
};

use aws_lc_rs::{constant_time, hmac};

use crate::dtls::Keying;

/// The AEAD tag length of both GCM profiles.
pub(crate) const TAG_LEN: usize = 16;
/// The HMAC-SHA1 tag length of AES128_CM_SHA1_80 (80 bits).
const CM_TAG_LEN: usize = Aes128CmSha1_80::HMAC_TAG_LEN;
/// Master salt lengths: the GCM profiles' (RFC 7714 §12) and AES-CM's (RFC 3711 §8.2).
const GCM_SALT_LEN: usize = 12;
const CM_SALT_LEN: usize = 14;
/// SRTCP's trailing E flag and 31-bit index.
const SRTCP_INDEX_LEN: usize = 4;
/// Key derivation labels (RFC 3711 §4.3.2).
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
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

/// One direction's AES-CM/HMAC-SHA1: session key (in the cipher), salt and authentication key
/// (in the HMAC key, whose keyed state aws-lc computes once here rather than once a packet, and
/// wipes when it is dropped).
struct Cm {
    cipher: Box<dyn Aes128CmSha1_80Cipher>,
    salt: [u8; 14],
    auth: hmac::Key,
}

/// One direction's context, for the profile the peer negotiated. An AES-CM context is boxed:
/// its HMAC key holds aws-lc's keyed state (over a kilobyte), and most peers use AES-GCM.
enum Ctx {
    Gcm(Aead),
    Cm(Box<Cm>),
}

/// A peer's SRTP as the core's forwarding path needs it: sealing RTP to the peer, opening
/// SRTCP from it.
pub(crate) struct FastSrtp {
    rtp_out: Ctx,
    rtcp_in: Ctx,
    /// This side's SRTCP (str0m seals it), opened and sealed again to amend sender reports.
    rtcp_out_open: Ctx,
    rtcp_out_seal: Ctx,
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
    /// The contexts for `keying`, or `None` if its profile is one this does not know or its
    /// material is not that profile's length.
    pub(crate) fn new(crypto: &CryptoProvider, keying: &Keying) -> Option<FastSrtp> {
        let [rtp_out, rtcp_in, rtcp_out_open, rtcp_out_seal] = match keying.profile {
            SrtpProfile::AEAD_AES_128_GCM => {
                contexts::<16>(crypto.srtp_provider, keying)?.map(Ctx::Gcm)
            }
            SrtpProfile::AEAD_AES_256_GCM => {
                contexts::<32>(crypto.srtp_provider, keying)?.map(Ctx::Gcm)
            }
            SrtpProfile::AES128_CM_SHA1_80 => {
                cm_contexts(crypto, keying)?.map(|c| Ctx::Cm(Box::new(c)))
            }
            _ => return None,
        };
        Some(FastSrtp {
            rtp_out,
            rtcp_in,
            rtcp_out_open,
            rtcp_out_seal,
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
        // Header, room for the payload, room for the tag; each profile fills the last two.
        let tag = match self.rtp_out {
            Ctx::Gcm(_) => TAG_LEN,
            Ctx::Cm(_) => CM_TAG_LEN,
        };
        out.clear();
        out.reserve(header.len() + payload.len() + tag);
        out.extend_from_slice(header);
        out.resize(header.len() + payload.len() + tag, 0);
        let sealed = match &mut self.rtp_out {
            Ctx::Gcm(a) => a.seal_rtp(out, header.len(), payload, ssrc, index),
            Ctx::Cm(c) => c.seal_rtp(out, header.len(), payload, ssrc, index),
        };
        if sealed.is_err() {
            // aws-lc refuses only malformed lengths, which the sizes rule out; never send a
            // packet that was not sealed.
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
        let (ssrc, index) = self
            .rtcp_in
            .srtcp_header(datagram)
            .ok_or(OpenError::Malformed)?;
        let seen = self.rtcp_seen.iter().position(|(s, _)| *s == ssrc);
        if let Some(i) = seen {
            if index <= self.rtcp_seen[i].1 {
                return Err(OpenError::Replayed);
            }
        }
        if self.rtcp_in.open_srtcp(datagram, out).is_none() {
            out.clear();
            return Err(OpenError::Forged);
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

    /// Adds what the core sealed to the sender reports (RTCP SR, RFC 3550 §6.4.1) in an SRTCP
    /// datagram str0m sealed for this peer, and seals it again under the same index. `sent`
    /// gives, for a stream's SSRC, the (packets, payload octets) the core sent on it; str0m
    /// counted only its own. `plain` is scratch. Returns whether the datagram changed: one
    /// that does not open, holds no report on such a stream or is not encrypted is left as
    /// it was.
    pub(crate) fn add_to_sender_reports(
        &mut self,
        datagram: &mut [u8],
        plain: &mut Vec<u8>,
        sent: impl Fn(u32) -> Option<(u32, u32)>,
    ) -> bool {
        // A compound packet starts with its SR, if it has one; the first header is in clear.
        if datagram.get(1) != Some(&200) || self.rtcp_out_open.open_srtcp(datagram, plain).is_none()
        {
            return false;
        }
        let mut changed = false;
        let mut rest = &mut plain[..];
        while rest.len() >= 4 && rest[0] >> 6 == 2 {
            let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
            if len > rest.len() {
                break;
            }
            let (packet, tail) = std::mem::take(&mut rest).split_at_mut(len);
            // SR: header, sender SSRC, NTP time (8), RTP time, packet count, octet count.
            if packet[1] == 200 && packet.len() >= 28 {
                let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
                if let Some((packets, octets)) = sent(ssrc) {
                    for (at, add) in [(20, packets), (24, octets)] {
                        let f = &mut packet[at..at + 4];
                        let v = u32::from_be_bytes([f[0], f[1], f[2], f[3]]).wrapping_add(add);
                        f.copy_from_slice(&v.to_be_bytes());
                    }
                    changed = true;
                }
            }
            rest = tail;
        }
        changed && self.rtcp_out_seal.seal_srtcp(plain, datagram)
    }
}

/// The contexts for `keying`, with `K`-byte master keys: outgoing RTP (sealing), incoming
/// RTCP (opening), outgoing RTCP (opening, then sealing). Our keys are the client's if we
/// were the DTLS client (RFC 5764 §4.2).
fn contexts<const K: usize>(srtp: &dyn SrtpProvider, keying: &Keying) -> Option<[Aead; 4]> {
    let ours = master::<K>(&keying.material, keying.active, GCM_SALT_LEN)?;
    let theirs = master::<K>(&keying.material, !keying.active, GCM_SALT_LEN)?;
    Some([
        Aead::new(srtp, &ours, LABEL_RTP_KEY, LABEL_RTP_SALT, true)?,
        Aead::new(srtp, &theirs, LABEL_RTCP_KEY, LABEL_RTCP_SALT, false)?,
        Aead::new(srtp, &ours, LABEL_RTCP_KEY, LABEL_RTCP_SALT, false)?,
        Aead::new(srtp, &ours, LABEL_RTCP_KEY, LABEL_RTCP_SALT, true)?,
    ])
}

/// The AES-CM contexts for `keying`, in the order and with the keys of [`contexts`].
fn cm_contexts(crypto: &CryptoProvider, keying: &Keying) -> Option<[Cm; 4]> {
    let ours = master::<16>(&keying.material, keying.active, CM_SALT_LEN)?;
    let theirs = master::<16>(&keying.material, !keying.active, CM_SALT_LEN)?;
    let rtp = (LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT);
    let rtcp = (LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT);
    Some([
        Cm::new(crypto, &ours, rtp, true),
        Cm::new(crypto, &theirs, rtcp, false),
        Cm::new(crypto, &ours, rtcp, false),
        Cm::new(crypto, &ours, rtcp, true),
    ])
}

impl Ctx {
    /// An encrypted SRTCP datagram's sender SSRC and SRTCP index; `None` if it is shorter
    /// than header, index and tag, or not encrypted (the E flag clear).
    fn srtcp_header(&self, datagram: &[u8]) -> Option<(u32, u32)> {
        match self {
            Ctx::Gcm(_) => gcm_srtcp_header(datagram),
            Ctx::Cm(_) => cm_srtcp_header(datagram),
        }
    }

    fn open_srtcp(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Option<()> {
        match self {
            Ctx::Gcm(a) => a.open_srtcp(datagram, out),
            Ctx::Cm(c) => c.open_srtcp(datagram, out),
        }
    }

    fn seal_srtcp(&mut self, plain: &[u8], datagram: &mut [u8]) -> bool {
        match self {
            Ctx::Gcm(a) => a.seal_srtcp(plain, datagram),
            Ctx::Cm(c) => c.seal_srtcp(plain, datagram),
        }
    }
}

impl Cm {
    /// The session key, authentication key and salt under these (key, auth, salt) labels,
    /// for sealing (`seal`) or opening.
    fn new(crypto: &CryptoProvider, m: &Master<16>, labels: (u8, u8, u8), seal: bool) -> Cm {
        let srtp = crypto.srtp_provider;
        let mut key = [0u8; 16];
        m.derive(srtp, labels.0, &mut key);
        let mut auth = [0u8; 20];
        m.derive(srtp, labels.1, &mut auth);
        let mut salt = [0u8; 14];
        m.derive(srtp, labels.2, &mut salt);
        let cipher = srtp.aes_128_cm_sha1_80().create_cipher(key, seal);
        zeroize::Zeroize::zeroize(&mut key);
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth);
        zeroize::Zeroize::zeroize(&mut auth);
        Cm {
            cipher,
            salt,
            auth: hmac_key,
        }
    }

    /// HMAC-SHA1 under the authentication key over `parts`, one after another.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut ctx = hmac::Context::with_key(&self.auth);
        for p in parts {
            ctx.update(p);
        }
        let mut tag = [0u8; 20];
        tag.copy_from_slice(ctx.sign().as_ref());
        tag
    }

    /// Seals `payload` into `out`, which holds the `hlen`-byte header and room for payload
    /// and tag (RFC 3711 §3.1: `header ‖ AES-CM(payload) ‖ HMAC-SHA1(header ‖ encrypted ‖
    /// ROC)[..10]`, the counter block from the salt, SSRC and packet index, §4.1.1).
    fn seal_rtp(
        &mut self,
        out: &mut [u8],
        hlen: usize,
        payload: &[u8],
        ssrc: u32,
        index: u64,
    ) -> Result<(), CryptoError> {
        let end = out.len() - CM_TAG_LEN;
        let iv = Aes128CmSha1_80::rtp_iv(self.salt, ssrc, index);
        self.cipher.encrypt(&iv, payload, &mut out[hlen..end])?;
        let roc = ((index >> 16) as u32).to_be_bytes();
        let tag = self.mac(&[&out[..end], &roc]);
        out[end..].copy_from_slice(&tag[..CM_TAG_LEN]);
        Ok(())
    }

    /// Opens an SRTCP datagram (RFC 3711 §3.4: header, encrypted rest, E flag and index, tag;
    /// everything but the tag authenticated) into `out` (cleared first), the first header
    /// included. `None` if it is too short, not encrypted, or its tag does not verify (compared
    /// in constant time).
    fn open_srtcp(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        let (ssrc, index) = cm_srtcp_header(datagram)?;
        let n = datagram.len();
        let (authed, tag) = datagram.split_at(n - CM_TAG_LEN);
        let expected = self.mac(&[authed]);
        constant_time::verify_slices_are_equal(&expected[..CM_TAG_LEN], tag).ok()?;
        let sealed = &datagram[8..n - CM_TAG_LEN - SRTCP_INDEX_LEN];
        let iv = Aes128CmSha1_80::rtp_iv(self.salt, ssrc, u64::from(index));
        out.extend_from_slice(&datagram[..8]);
        out.resize(8 + sealed.len(), 0);
        if self.cipher.decrypt(&iv, sealed, &mut out[8..]).is_err() {
            out.clear();
            return None;
        }
        Some(())
    }

    /// Seals the plain compound packet `plain` (first header included) into `datagram`, an
    /// SRTCP datagram of the same length whose first header and index are kept, and tags it
    /// again. False, and `datagram` unchanged, if the sizes do not match.
    fn seal_srtcp(&mut self, plain: &[u8], datagram: &mut [u8]) -> bool {
        let Some((ssrc, index)) = cm_srtcp_header(datagram) else {
            return false;
        };
        let n = datagram.len();
        let body = n - CM_TAG_LEN - SRTCP_INDEX_LEN;
        if plain.len() != body || plain[..8] != datagram[..8] {
            return false;
        }
        let iv = Aes128CmSha1_80::rtp_iv(self.salt, ssrc, u64::from(index));
        // Counter mode fails only on unequal lengths, which the check above rules out, so
        // `datagram` is left as it was whenever this returns false.
        if self
            .cipher
            .encrypt(&iv, &plain[8..], &mut datagram[8..body])
            .is_err()
        {
            return false;
        }
        let tag = self.mac(&[&datagram[..n - CM_TAG_LEN]]);
        datagram[n - CM_TAG_LEN..].copy_from_slice(&tag[..CM_TAG_LEN]);
        true
    }
}

impl Aead {
    /// Seals `payload` into `out`, which holds the `hlen`-byte header and room for payload
    /// and tag (RFC 7714 §8: the header is authenticated, the payload encrypted).
    fn seal_rtp(
        &mut self,
        out: &mut [u8],
        hlen: usize,
        payload: &[u8],
        ssrc: u32,
        index: u64,
    ) -> Result<(), CryptoError> {
        let (aad, body) = out.split_at_mut(hlen);
        let iv = self.rtp_iv(ssrc, index);
        self.seal(&iv, aad, payload, body)
    }

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

    /// Opens an SRTCP datagram (RFC 7714 §9: the first 8 bytes and the trailing E flag and
    /// index authenticated, the rest encrypted) into `out` (cleared first), the first header
    /// included. `None` if it is too short, not encrypted, or does not verify.
    fn open_srtcp(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        let (aad, iv, sealed) = srtcp_parts(&self.salt, datagram)?;
        out.extend_from_slice(&datagram[..8]);
        out.resize(8 + sealed.len() - TAG_LEN, 0);
        let len = self.open(&iv, &aad, sealed, &mut out[8..]).ok()?;
        out.truncate(8 + len);
        Some(())
    }

    /// Seals the plain compound packet `plain` (first header included) into `datagram`, an
    /// SRTCP datagram of the same length whose first header and trailer are kept: the same
    /// index, so the same IV. False, and `datagram` unchanged, if the sizes do not match.
    fn seal_srtcp(&mut self, plain: &[u8], datagram: &mut [u8]) -> bool {
        let Some((aad, iv, sealed)) = srtcp_parts(&self.salt, datagram) else {
            return false;
        };
        if plain.len() < 8
            || plain[..8] != datagram[..8]
            || sealed.len() != plain.len() - 8 + TAG_LEN
        {
            return false;
        }
        let mut out = vec![0u8; sealed.len()];
        if self.seal(&iv, &aad, &plain[8..], &mut out).is_err() {
            return false;
        }
        let n = datagram.len();
        datagram[8..n - SRTCP_INDEX_LEN].copy_from_slice(&out);
        true
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

/// An encrypted SRTCP datagram's sender SSRC and SRTCP index under the GCM profiles (RFC 7714
/// §9: the tag is part of the sealed data and the E flag and index come last); `None` if it is
/// shorter than header, tag and index, or not encrypted (the E flag clear).
fn gcm_srtcp_header(datagram: &[u8]) -> Option<(u32, u32)> {
    let n = datagram.len();
    if n < 8 + TAG_LEN + SRTCP_INDEX_LEN {
        return None;
    }
    srtcp_header(datagram, n - SRTCP_INDEX_LEN)
}

/// As [`gcm_srtcp_header`] under AES-CM (RFC 3711 §3.4: the E flag and index, then the tag).
fn cm_srtcp_header(datagram: &[u8]) -> Option<(u32, u32)> {
    let n = datagram.len();
    if n < 8 + SRTCP_INDEX_LEN + CM_TAG_LEN {
        return None;
    }
    srtcp_header(datagram, n - CM_TAG_LEN - SRTCP_INDEX_LEN)
}

/// An SRTCP datagram's sender SSRC and SRTCP index, the E flag and index being the 4 bytes at
/// `index_at` (which the caller has checked lie within it, after the first 8); `None` if it
/// is not encrypted (the E flag clear).
fn srtcp_header(datagram: &[u8], index_at: usize) -> Option<(u32, u32)> {
    let t = &datagram[index_at..index_at + SRTCP_INDEX_LEN];
    let e_and_index = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
    if e_and_index & 0x8000_0000 == 0 {
        return None;
    }
    let ssrc = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    Some((ssrc, e_and_index & 0x7fff_ffff))
}

/// An encrypted SRTCP datagram's authenticated data (first header, E flag and index), IV, and
/// sealed part (ciphertext and tag); `None` as for [`gcm_srtcp_header`].
fn srtcp_parts<'a>(salt: &[u8; 12], datagram: &'a [u8]) -> Option<([u8; 12], [u8; 12], &'a [u8])> {
    let n = datagram.len();
    let (ssrc, index) = gcm_srtcp_header(datagram)?;
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&datagram[..8]);
    aad[8..].copy_from_slice(&datagram[n - SRTCP_INDEX_LEN..]);
    // The IV formula is the same for both key sizes (RFC 7714 §9.1).
    let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
    Some((aad, iv, &datagram[8..n - SRTCP_INDEX_LEN]))
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
/// material laid out key, key, salt, salt (RFC 5764 §4.2), salts `salt_len` bytes (12 for the GCM
/// profiles, RFC 7714 §12; 14 for AES-CM, RFC 3711 §8.2).
fn master<const K: usize>(material: &[u8], client: bool, salt_len: usize) -> Option<Master<K>> {
    if salt_len > 14 || material.len() != 2 * K + 2 * salt_len {
        return None;
    }
    let (k, s) = if client {
        (0, 2 * K)
    } else {
        (K, 2 * K + salt_len)
    };
    let mut m = Master {
        key: [0; K],
        salt: [0; 14],
        salt_len,
    };
    m.key.copy_from_slice(&material[k..k + K]);
    m.salt[..salt_len].copy_from_slice(&material[s..s + salt_len]);
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

/// Sealing one copy under each profile, for `benches/seal.rs` (what a receiver's SRTP profile
/// costs per copy); not an API. The keys are fixed bytes, never a session's.
#[doc(hidden)]
pub mod bench {
    use super::*;

    /// One receiver's RTP sealing context and a buffer.
    pub struct Sealer {
        fast: FastSrtp,
        out: Vec<u8>,
        index: u64,
    }

    impl Sealer {
        /// `profile`: `aes256gcm`, `aes128gcm` or `aes128cm` (AES-CM with HMAC-SHA1-80).
        pub fn new(profile: &str) -> Option<Sealer> {
            let (profile, key, salt) = match profile {
                "aes256gcm" => (SrtpProfile::AEAD_AES_256_GCM, 32, GCM_SALT_LEN),
                "aes128gcm" => (SrtpProfile::AEAD_AES_128_GCM, 16, GCM_SALT_LEN),
                "aes128cm" => (SrtpProfile::AES128_CM_SHA1_80, 16, CM_SALT_LEN),
                _ => return None,
            };
            let keying = Keying {
                profile,
                material: (0..(2 * key + 2 * salt) as u8).collect(),
                active: false,
            };
            let crypto = str0m::crypto::from_feature_flags();
            Some(Sealer {
                fast: FastSrtp::new(&crypto, &keying)?,
                out: Vec::with_capacity(1500),
                index: 0,
            })
        }

        /// Seals `payload` behind a 12-byte RTP header as the next packet of one stream;
        /// returns the sealed length.
        pub fn seal(&mut self, payload: &[u8]) -> usize {
            self.index += 1;
            let mut header = [0x80, 96, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
            header[2..4].copy_from_slice(&(self.index as u16).to_be_bytes());
            self.fast
                .seal_rtp(&header, payload, 0x1234_5678, self.index, &mut self.out);
            self.out.len()
        }
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

    const PROFILES: [SrtpProfile; 3] = [
        SrtpProfile::AEAD_AES_128_GCM,
        SrtpProfile::AEAD_AES_256_GCM,
        SrtpProfile::AES128_CM_SHA1_80,
    ];

    /// Test keying for `profile`: material of its length, numbered bytes; `active` says which
    /// side's keys are ours.
    fn keying(profile: SrtpProfile, active: bool) -> Keying {
        let len = match profile {
            SrtpProfile::AEAD_AES_128_GCM => 2 * 16 + 2 * GCM_SALT_LEN,
            SrtpProfile::AEAD_AES_256_GCM => 2 * 32 + 2 * GCM_SALT_LEN,
            _ => 2 * 16 + 2 * CM_SALT_LEN,
        };
        Keying {
            profile,
            material: (0..len as u8).collect(),
            active,
        }
    }

    /// (client, server) of one handshake.
    fn pair(profile: SrtpProfile) -> (FastSrtp, FastSrtp) {
        let crypto = str0m::crypto::from_feature_flags();
        (
            FastSrtp::new(&crypto, &keying(profile, true)).unwrap(),
            FastSrtp::new(&crypto, &keying(profile, false)).unwrap(),
        )
    }

    /// The tag length of `profile`.
    fn tag_len(profile: SrtpProfile) -> usize {
        match profile {
            SrtpProfile::AES128_CM_SHA1_80 => CM_TAG_LEN,
            _ => TAG_LEN,
        }
    }

    /// `keying`'s side's context for RTP (`rtcp` false) or RTCP, for sealing or opening, built
    /// the way a peer would build its own.
    fn peer_ctx(keying: &Keying, rtcp: bool, seal: bool) -> Ctx {
        let crypto = str0m::crypto::from_feature_flags();
        let (m, active) = (&keying.material, keying.active);
        let (k, a, sl) = if rtcp {
            (LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)
        } else {
            (LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT)
        };
        let srtp = crypto.srtp_provider;
        match keying.profile {
            SrtpProfile::AEAD_AES_128_GCM => Ctx::Gcm(
                Aead::new(
                    srtp,
                    &master::<16>(m, active, GCM_SALT_LEN).unwrap(),
                    k,
                    sl,
                    seal,
                )
                .unwrap(),
            ),
            SrtpProfile::AEAD_AES_256_GCM => Ctx::Gcm(
                Aead::new(
                    srtp,
                    &master::<32>(m, active, GCM_SALT_LEN).unwrap(),
                    k,
                    sl,
                    seal,
                )
                .unwrap(),
            ),
            _ => Ctx::Cm(Box::new(Cm::new(
                &crypto,
                &master::<16>(m, active, CM_SALT_LEN).unwrap(),
                (k, a, sl),
                seal,
            ))),
        }
    }

    /// Opens RTP that `keying`'s side sealed, as its peer would: verify, then decrypt.
    fn open_rtp(
        keying: &Keying,
        sealed: &[u8],
        hlen: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<Vec<u8>> {
        match peer_ctx(keying, false, false) {
            Ctx::Gcm(mut aead) => {
                let mut out = vec![0u8; sealed.len() - hlen - TAG_LEN];
                let iv = aead.rtp_iv(ssrc, index);
                aead.open(&iv, &sealed[..hlen], &sealed[hlen..], &mut out)
                    .ok()?;
                Some(out)
            }
            Ctx::Cm(mut cm) => {
                let (authed, tag) = sealed.split_at(sealed.len() - CM_TAG_LEN);
                let roc = ((index >> 16) as u32).to_be_bytes();
                if cm.mac(&[authed, &roc])[..CM_TAG_LEN] != *tag {
                    return None;
                }
                let mut out = vec![0u8; authed.len() - hlen];
                let iv = Aes128CmSha1_80::rtp_iv(cm.salt, ssrc, index);
                cm.cipher.decrypt(&iv, &authed[hlen..], &mut out).ok()?;
                Some(out)
            }
        }
    }

    #[test]
    fn sealed_rtp_opens_with_the_senders_keys_and_not_with_another_index() {
        for profile in PROFILES {
            let (mut client, _server) = pair(profile);
            let header = [0x80, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
            let mut sealed = Vec::new();
            client.seal_rtp(&header, b"payload", 0xdeadbeef, 0x1_1234, &mut sealed);
            assert_eq!(sealed.len(), 12 + 7 + tag_len(profile), "{profile:?}");
            assert_eq!(&sealed[..12], &header, "the header stays in the clear");
            assert_ne!(&sealed[12..19], b"payload");
            let keying = keying(profile, true);
            assert_eq!(
                open_rtp(&keying, &sealed, 12, 0xdeadbeef, 0x1_1234).as_deref(),
                Some(&b"payload"[..]),
                "{profile:?}"
            );
            assert_eq!(
                open_rtp(&keying, &sealed, 12, 0xdeadbeef, 0x2_1234),
                None,
                "{profile:?}: another rollover counter must not open it"
            );
            let mut flipped = sealed.clone();
            flipped[14] ^= 1;
            assert_eq!(
                open_rtp(&keying, &flipped, 12, 0xdeadbeef, 0x1_1234),
                None,
                "{profile:?}: a flipped bit must not open"
            );
        }
    }

    /// AES-CM's keystream for a packet is AES-CTR from RFC 3711 §4.1.1's counter block: the
    /// session salt ⊕ SSRC ⊕ index, as in the worked example of RFC 3711 Appendix B.2.
    #[test]
    fn aes_cm_keystream_matches_rfc_3711_appendix_b2() {
        let srtp = str0m::crypto::from_feature_flags().srtp_provider;
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let iv = Aes128CmSha1_80::rtp_iv(salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut cipher = srtp.aes_128_cm_sha1_80().create_cipher(key, true);
        let mut keystream = [0u8; 48];
        cipher.encrypt(&iv, &[0u8; 48], &mut keystream).unwrap();
        assert_eq!(
            keystream.to_vec(),
            hex(concat!(
                "E03EAD0935C95E80E166B16DD92B4EB4",
                "D23513162B02D0F72A43A2FE4A5F97AB",
                "41E95B3BB0A2E8DD477901E4FCA894C0"
            ))
        );
    }

    /// Seals SRTCP as a peer would with `keying`'s side's RTCP keys: RFC 7714 §9.1 under the
    /// GCM profiles, RFC 3711 §3.4 under AES-CM.
    fn seal_rtcp(keying: &Keying, plain: &[u8], index: u32) -> Vec<u8> {
        let ssrc = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        let e_index = (0x8000_0000u32 | index).to_be_bytes();
        match peer_ctx(keying, true, true) {
            Ctx::Gcm(mut aead) => {
                let mut aad = plain[..8].to_vec();
                aad.extend_from_slice(&e_index);
                let mut out = plain[..8].to_vec();
                out.resize(plain.len() + TAG_LEN, 0);
                let iv = AeadAes128Gcm::rtcp_iv(aead.salt, ssrc, index);
                aead.seal(&iv, &aad, &plain[8..], &mut out[8..]).unwrap();
                out.extend_from_slice(&e_index);
                out
            }
            Ctx::Cm(mut cm) => {
                let mut out = plain[..8].to_vec();
                out.resize(plain.len(), 0);
                let iv = Aes128CmSha1_80::rtp_iv(cm.salt, ssrc, u64::from(index));
                cm.cipher.encrypt(&iv, &plain[8..], &mut out[8..]).unwrap();
                out.extend_from_slice(&e_index);
                let tag = cm.mac(&[&out]);
                out.extend_from_slice(&tag[..CM_TAG_LEN]);
                out
            }
        }
    }

    #[test]
    fn a_receivers_nack_opens_once_and_lists_every_packet_it_asks_for() {
        for profile in [
            SrtpProfile::AEAD_AES_128_GCM,
            SrtpProfile::AES128_CM_SHA1_80,
        ] {
            a_receivers_nack(profile);
        }
    }

    fn a_receivers_nack(profile: SrtpProfile) {
        let (_client, mut server) = pair(profile);
        // The client (DTLS active) sends a NACK: PID 100 and BLP bits 0 and 15.
        let mut nack = vec![0x81, 205, 0, 3, 0, 0, 0, 7, 0, 0, 0, 42];
        nack.extend_from_slice(&100u16.to_be_bytes());
        nack.extend_from_slice(&0x8001u16.to_be_bytes());
        let client = keying(profile, true);
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
        // The tag itself, and the index (authenticated under both profiles).
        let mut forged = seal_rtcp(&client, &nack, 6);
        let n = forged.len();
        forged[n - 1] ^= 1;
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

    /// Garbage of every length up to a few hundred bytes, and sealed datagrams cut short or
    /// grown: refused (or left as they were), under every profile, and never a panic.
    #[test]
    fn garbage_and_truncated_srtcp_is_refused_without_a_panic() {
        // A small deterministic generator (xorshift): the same bytes on every run.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for profile in PROFILES {
            let (_client, mut server) = pair(profile);
            let mut plain = Vec::new();
            for len in 0..300 {
                let mut d: Vec<u8> = (0..len).map(|_| byte()).collect();
                if len > 1 {
                    // Half of them look like sender reports, so the amending path opens them.
                    d[1] = if len % 2 == 0 { 200 } else { d[1] };
                }
                assert!(
                    server.open_rtcp(&d, &mut plain).is_err(),
                    "{profile:?} {len}"
                );
                let before = d.clone();
                assert!(!server.add_to_sender_reports(&mut d, &mut plain, |_| Some((1, 1))));
                assert_eq!(d, before);
            }
            let sealed = seal_rtcp(&keying(profile, true), &sr(42, 1, 100), 3);
            for cut in 0..sealed.len() {
                assert!(server.open_rtcp(&sealed[..cut], &mut plain).is_err());
            }
            let mut grown = sealed.clone();
            grown.push(0);
            assert!(server.open_rtcp(&grown, &mut plain).is_err());
            server.open_rtcp(&sealed, &mut plain).unwrap();
        }
    }

    /// A sender report (RFC 3550 §6.4.1) for `ssrc` with these counts.
    fn sr(ssrc: u32, packets: u32, octets: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x30, 0x39]);
        p.extend_from_slice(&packets.to_be_bytes());
        p.extend_from_slice(&octets.to_be_bytes());
        p
    }

    #[test]
    fn sender_reports_gain_the_cores_counts_and_still_open_under_the_same_index() {
        for profile in [
            SrtpProfile::AEAD_AES_128_GCM,
            SrtpProfile::AES128_CM_SHA1_80,
        ] {
            sender_reports(profile);
        }
    }

    fn sender_reports(profile: SrtpProfile) {
        let (mut client, mut server) = pair(profile);
        let server_keys = keying(profile, false);
        // What str0m would send: an SR on a stream the core seals (42), one it does not (43),
        // and a receiver report.
        let mut plain = sr(42, 5, 500);
        plain.extend(sr(43, 7, 700));
        plain.extend([0x80, 201, 0, 1, 0, 0, 0, 42]);
        let core = |ssrc| match ssrc {
            42 => Some((100, 10_000)),
            _ => None,
        };
        let mut datagram = seal_rtcp(&server_keys, &plain, 9);
        // The index (and, under AES-CM, the tag after it) are the datagram's last bytes.
        let index_at = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => datagram.len() - 4 - CM_TAG_LEN,
            _ => datagram.len() - 4,
        };
        let trailer = datagram[index_at..index_at + 4].to_vec();
        let mut scratch = Vec::new();
        assert!(server.add_to_sender_reports(&mut datagram, &mut scratch, core));
        assert_eq!(datagram[index_at..index_at + 4], trailer[..], "same index");
        let mut want = sr(42, 105, 10_500);
        want.extend(sr(43, 7, 700));
        want.extend([0x80, 201, 0, 1, 0, 0, 0, 42]);
        let mut opened = Vec::new();
        client.open_rtcp(&datagram, &mut opened).unwrap();
        assert_eq!(opened, want);

        // Counts wrap as RTCP's 32-bit fields do.
        let mut datagram = seal_rtcp(&server_keys, &sr(42, u32::MAX - 9, 0), 10);
        assert!(server.add_to_sender_reports(&mut datagram, &mut scratch, core));
        client.open_rtcp(&datagram, &mut opened).unwrap();
        assert_eq!(opened, sr(42, 90, 10_000));

        // Left exactly as they were: a report on no stream of the core's, a forged datagram,
        // one that starts with a receiver report, one that is not ours, a short one.
        let only_43 = seal_rtcp(&server_keys, &sr(43, 7, 700), 11);
        let mut forged = seal_rtcp(&server_keys, &plain, 12);
        forged[12] ^= 1;
        let rr_first = seal_rtcp(&server_keys, &[0x80, 201, 0, 1, 0, 0, 0, 42], 13);
        let client_keys = keying(profile, true);
        let theirs = seal_rtcp(&client_keys, &plain, 14);
        for d in [only_43, forged, rr_first, theirs, vec![0x80, 200, 0, 6]] {
            let mut amended = d.clone();
            assert!(!server.add_to_sender_reports(&mut amended, &mut scratch, core));
            assert_eq!(amended, d);
        }
    }
}
