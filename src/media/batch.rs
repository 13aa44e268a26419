//! Batched datagram IO for the media loop: `recvmmsg` and `sendmmsg` on Linux (up to [`BATCH`]
//! datagrams per syscall), one `recv_from`/`send_to` per datagram elsewhere. Both work on a
//! nonblocking socket and report `WouldBlock` like the single calls; the worker calls them
//! after its `epoll_wait` (mio) says the socket is readable, and [`wait_writable`] when the
//! send buffer is full.
//!
//! UDP GSO (`UDP_SEGMENT`) is not used: it sends several equal-sized segments to *one*
//! destination in one call, and the SFU's output is a fan-out — each packet in goes to a
//! different peer. Runs to one destination only happen when one batch holds several packets
//! from one sender, and their sizes are equal only by chance (RTP packetizers do not pad), so
//! GSO would rarely apply and would need reordering the queue by destination.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Most datagrams per `recvmmsg`/`sendmmsg`.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: above the SFU's 1,500-byte limit, so an oversized datagram
/// arrives whole enough to be counted and dropped by the core rather than cut to look valid.
const RECV_BUF: usize = 2048;

/// Control buffer per datagram: room for one `SCM_TIMESTAMPNS` message (a 16-byte header and
/// a 16-byte timespec on 64-bit Linux) with margin; u64s keep it aligned for `cmsghdr`.
#[cfg(target_os = "linux")]
const CONTROL_WORDS: usize = 8;

/// Buffers for one batch of received datagrams.
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    lens: Vec<usize>,
    sources: Vec<Option<SocketAddr>>,
    /// When the kernel received each datagram (wall clock since the Unix epoch), if the
    /// socket stamps them ([`enable_timestamps`]).
    stamps: Vec<Option<Duration>>,
    n: usize,
    #[cfg(target_os = "linux")]
    control: Vec<[u64; CONTROL_WORDS]>,
    #[cfg(target_os = "linux")]
    addrs: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    iovecs: Vec<libc::iovec>,
    #[cfg(target_os = "linux")]
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovecs` and `hdrs` only ever point into this struct's own
// vectors, are rebuilt before every syscall and are never dereferenced by Rust code.
#[cfg(target_os = "linux")]
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            lens: vec![0; BATCH],
            sources: vec![None; BATCH],
            stamps: vec![None; BATCH],
            n: 0,
            #[cfg(target_os = "linux")]
            control: vec![[0; CONTROL_WORDS]; BATCH],
            #[cfg(target_os = "linux")]
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            #[cfg(target_os = "linux")]
            iovecs: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            hdrs: Vec::with_capacity(BATCH),
        }
    }

    /// The datagrams of the last successful receive: (source, contents). A datagram whose
    /// source address is not IPv4 or IPv6 is skipped.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (0..self.n).filter_map(|i| Some((self.sources[i]?, &self.bufs[i][..self.lens[i]])))
    }

    /// When the kernel received the earliest datagram of the last receive (wall clock since
    /// the Unix epoch); `None` when the socket does not stamp.
    pub fn earliest_stamp(&self) -> Option<Duration> {
        self.stamps[..self.n].iter().flatten().min().copied()
    }

    /// Whether the last receive emptied the socket's queue: `recvmmsg` on a nonblocking
    /// socket returns fewer than it was asked for only when nothing more was queued. The
    /// fallback reads one datagram at a time and cannot tell.
    pub fn drained(&self) -> bool {
        cfg!(target_os = "linux") && self.n < BATCH
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many (at least 1) or
    /// `WouldBlock`.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.n = 0;
        self.iovecs.clear();
        self.hdrs.clear();
        for buf in self.bufs.iter_mut() {
            self.iovecs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
        }
        let slots = self
            .iovecs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.control.iter_mut());
        for ((iov, addr), control) in slots {
            // SAFETY: msghdr is plain old data; the fields that matter are set below.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = iov as *mut libc::iovec;
            h.msg_iovlen = 1;
            h.msg_control = control.as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of_val(control) as _;
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
        // SAFETY: `hdrs` holds BATCH valid headers whose name, iovec and control pointers
        // point into `addrs`, `iovecs`, `control` and `bufs`, which live (unmoved) for the
        // duration of the call and are large enough for what the headers say; the fd is the
        // socket's, open while borrowed.
        let r = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        for i in 0..n {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(RECV_BUF);
            self.sources[i] = from_sockaddr(&self.addrs[i]);
            self.stamps[i] = rx_stamp(&self.hdrs[i].msg_hdr);
        }
        self.n = n;
        Ok(n)
    }

    /// Receives one datagram without blocking (the portable fallback).
    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        self.n = 0;
        let (len, source) = socket.recv_from(&mut self.bufs[0])?;
        self.lens[0] = len;
        self.sources[0] = Some(source);
        self.stamps[0] = None;
        self.n = 1;
        Ok(1)
    }
}

/// The kernel's receive stamp in a received message's control data, if there is one.
#[cfg(target_os = "linux")]
fn rx_stamp(h: &libc::msghdr) -> Option<Duration> {
    // SAFETY: `h` is a header the kernel just filled: its control pointer and (updated)
    // length describe the control buffer it wrote, which the CMSG macros walk within.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let secs = u64::try_from(ts.tv_sec).ok()?;
                let nanos = u32::try_from(ts.tv_nsec)
                    .ok()
                    .filter(|&n| n < 1_000_000_000)?;
                return Some(Duration::new(secs, nanos));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// Asks the kernel to stamp each datagram `socket` receives with the time it arrived
/// (`SO_TIMESTAMPNS`, read by [`RecvBatch::earliest_stamp`]); false if it refuses.
#[cfg(target_os = "linux")]
pub fn enable_timestamps(socket: &std::net::UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    set_int(socket.as_raw_fd(), libc::SO_TIMESTAMPNS, 1)
}

#[cfg(not(target_os = "linux"))]
pub fn enable_timestamps(_socket: &std::net::UdpSocket) -> bool {
    false
}

/// Scratch space for sending one batch.
pub struct SendBatch {
    #[cfg(target_os = "linux")]
    addrs: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    iovecs: Vec<libc::iovec>,
    #[cfg(target_os = "linux")]
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for `RecvBatch`: the pointers are scratch, rebuilt before each syscall.
#[cfg(target_os = "linux")]
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            #[cfg(target_os = "linux")]
            addrs: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            iovecs: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            hdrs: Vec::with_capacity(BATCH),
        }
    }

    /// Sends the first up to [`BATCH`] of `items` (destination, contents) without blocking.
    /// Returns how many left (at least 1), `WouldBlock` when none could, or the error of the
    /// first datagram (the caller drops that one and goes on with the rest).
    #[cfg(target_os = "linux")]
    pub fn send<'a>(
        &mut self,
        socket: &mio::net::UdpSocket,
        items: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.addrs.clear();
        self.iovecs.clear();
        self.hdrs.clear();
        for (dest, data) in items.take(BATCH) {
            self.addrs.push(to_sockaddr(dest));
            self.iovecs.push(libc::iovec {
                // sendmmsg does not write through it; iovec has only a mutable pointer type.
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        if self.iovecs.is_empty() {
            return Ok(0);
        }
        for (iov, addr) in self.iovecs.iter_mut().zip(self.addrs.iter_mut()) {
            // SAFETY: msghdr is plain old data; the fields that matter are set below.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = sockaddr_len(addr);
            h.msg_iov = iov as *mut libc::iovec;
            h.msg_iovlen = 1;
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
        // SAFETY: every header points at an address in `addrs` and one iovec in `iovecs`, whose
        // buffer is borrowed from `items` for 'a (outliving this call); the kernel only reads
        // them. The fd is the socket's, open while borrowed.
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Sends the first of `items` without blocking (the portable fallback).
    #[cfg(not(target_os = "linux"))]
    pub fn send<'a>(
        &mut self,
        socket: &mio::net::UdpSocket,
        mut items: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        match items.next() {
            Some((dest, data)) => socket.send_to(data, dest).map(|_| 1),
            None => Ok(0),
        }
    }
}

/// Blocks until `socket` can take a datagram again, or `timeout` passes (the caller retries
/// its send either way). The send buffer only fills when the kernel cannot keep up, and then
/// nothing should be read that would only queue more.
#[cfg(target_os = "linux")]
pub fn wait_writable(socket: &mio::net::UdpSocket, timeout: std::time::Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, for the duration of the call; the fd is open while borrowed.
    let r = unsafe { libc::poll(&mut fd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Waits a little for room in the send buffer (the portable fallback: no `poll` here).
#[cfg(not(target_os = "linux"))]
pub fn wait_writable(
    _socket: &mio::net::UdpSocket,
    timeout: std::time::Duration,
) -> io::Result<()> {
    std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
    Ok(())
}

/// Kernel buffer asked for on each media socket, each way. A keyframe burst from several
/// publishers at once (hundreds of 1,100-byte packets within a frame) overflows Linux's
/// default 208 KiB receive buffer while the worker is busy forwarding the packets before
/// them; what overflows is lost before the SFU sees it. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max` (docs/operations.md).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Asks for `bytes` of receive and send buffer on `socket`; returns what the kernel granted
/// (receive, send), which Linux reports doubled for its bookkeeping.
#[cfg(unix)]
pub fn set_buffers(socket: &std::net::UdpSocket, bytes: usize) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let mut got = [0usize; 2];
    for (i, opt) in [libc::SO_RCVBUF, libc::SO_SNDBUF].into_iter().enumerate() {
        set_int(fd, opt, want);
        // SAFETY: a valid descriptor; pointers to a c_int and its length.
        unsafe {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
            {
                got[i] = usize::try_from(v).unwrap_or(0);
            }
        }
    }
    (got[0], got[1])
}

/// Sets one integer `SOL_SOCKET` option on `fd`; false if the kernel refuses it.
#[cfg(unix)]
fn set_int(fd: std::os::fd::RawFd, opt: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: the caller's open descriptor and a pointer to a c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

#[cfg(not(unix))]
pub fn set_buffers(_socket: &std::net::UdpSocket, _bytes: usize) -> (usize, usize) {
    (0, 0)
}

#[cfg(target_os = "linux")]
fn to_sockaddr(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    s
}

#[cfg(target_os = "linux")]
fn sockaddr_len(s: &libc::sockaddr_storage) -> libc::socklen_t {
    let len = if s.ss_family == libc::AF_INET as libc::sa_family_t {
        std::mem::size_of::<libc::sockaddr_in>()
    } else {
        std::mem::size_of::<libc::sockaddr_in6>()
    };
    len as libc::socklen_t
}

#[cfg(target_os = "linux")]
fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in; storage is aligned for it.
            let sin: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6; storage is aligned for it.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_survive_the_round_trip_through_sockaddr() {
        for a in [
            "127.0.0.1:7882",
            "[::1]:9",
            "[fe80::1%2]:5000",
            "10.1.2.3:65535",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(from_sockaddr(&to_sockaddr(a)), Some(a));
        }
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_in_order() {
        let rx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let tx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap();
        let msgs: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + i as usize]).collect();
        let mut send = SendBatch::new();
        let mut sent = 0;
        while sent < msgs.len() {
            let n = send
                .send(&tx, msgs[sent..].iter().map(|m| (to, &m[..])))
                .unwrap();
            assert!((1..=BATCH).contains(&n));
            sent += n;
        }
        let mut recv = RecvBatch::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < msgs.len() {
            // Loopback delivery is synchronous: everything sent is queued by now, so a
            // `WouldBlock` here would mean a datagram was lost.
            match recv.recv(&rx) {
                Ok(_) => got.extend(recv.datagrams().map(|(from, d)| {
                    assert_eq!(from, tx.local_addr().unwrap());
                    d.to_vec()
                })),
                Err(e) => panic!("{e} after {} datagrams", got.len()),
            }
        }
        assert_eq!(got, msgs);
        // The last receive emptied the queue, and says so.
        assert!(recv.drained());
    }

    #[test]
    fn a_stamping_socket_gives_each_batch_the_kernels_arrival_time() {
        let std_rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std_rx.set_nonblocking(true).unwrap();
        let stamps = enable_timestamps(&std_rx);
        assert_eq!(stamps, cfg!(target_os = "linux"));
        let rx = mio::net::UdpSocket::from_std(std_rx);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        let before = wall();
        for i in 0..3u8 {
            tx.send_to(&[i; 20], rx.local_addr().unwrap()).unwrap();
        }
        // Delivery may finish after the send returns (a deferred softirq), never after the
        // receive that reads it.
        let mut recv = RecvBatch::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < 3 {
            match recv.recv(&rx) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "datagrams lost");
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            let after = wall();
            match recv.earliest_stamp() {
                Some(at) => assert!(before <= at && at <= after, "{before:?} {at:?} {after:?}"),
                None => assert!(!stamps),
            }
        }
        // A socket that does not stamp gives none.
        let plain = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.send_to(&[9; 20], plain.local_addr().unwrap()).unwrap();
        while let Err(e) = recv.recv(&plain) {
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            assert!(std::time::Instant::now() < deadline, "datagram lost");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(recv.earliest_stamp(), None);
    }

    #[test]
    fn socket_buffers_grow_past_the_default_up_to_the_kernel_cap() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (rcv0, _) = set_buffers(&s, 0);
        let (rcv, snd) = set_buffers(&s, SOCKET_BUFFER);
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        // Linux reports twice what it grants (its bookkeeping overhead).
        assert!(
            rcv >= SOCKET_BUFFER.min(cap),
            "receive buffer {rcv} (cap {cap})"
        );
        assert!(rcv > rcv0 || cap <= rcv0 / 2, "{rcv0} -> {rcv}");
        assert!(snd > 0);
    }
}
