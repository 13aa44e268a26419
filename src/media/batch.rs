//! Batched datagram IO for the media loop: `recvmmsg` and `sendmmsg` on Linux (up to [`BATCH`]
//! datagrams per syscall), one `recv_from`/`send_to` per datagram elsewhere. Both work on a
//! nonblocking socket and report `WouldBlock` like the single calls; the worker calls them
//! after its `epoll_wait` (mio) says the socket is readable, and [`wait_writable`] when the
//! send buffer is full.
//!
//! Sends join runs of datagrams to one destination into one UDP GSO send where the kernel
//! offers it ([`SendBatch`]).

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

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch::new()
    }
}

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
    set_int(
        socket.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        1,
    )
}

#[cfg(not(target_os = "linux"))]
pub fn enable_timestamps(_socket: &std::net::UdpSocket) -> bool {
    false
}

/// Most segments in one GSO send. Linux took 64 (`UDP_MAX_SEGMENTS`) until 6.9, 128 since.
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: it is one UDP datagram until the kernel cuts it, so its
/// length must fit UDP's 16-bit field with the headers.
#[cfg(target_os = "linux")]
const GSO_MAX_BYTES: usize = 60_000;
/// `SOL_UDP` and `UDP_SEGMENT` (linux/udp.h; the libc crate lacks the latter for glibc).
#[cfg(target_os = "linux")]
const SOL_UDP: libc::c_int = 17;
#[cfg(target_os = "linux")]
const UDP_SEGMENT: libc::c_int = 103;
/// Control buffer per GSO send: one `UDP_SEGMENT` message (a 16-byte header, a 2-byte
/// segment size, padded to 8).
#[cfg(target_os = "linux")]
const GSO_CONTROL_WORDS: usize = 3;

/// Whether this kernel can send several datagrams to one destination as one (UDP GSO,
/// Linux 4.18 and later). Asked once, of a throwaway socket: a kernel that predates the
/// option would not refuse the control message, it would ignore it and send the segments
/// joined as one datagram, so the control message is never sent without this.
#[cfg(target_os = "linux")]
pub fn gso_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: plain socket(2); a valid result is owned (and closed) by `OwnedFd` at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return false;
        }
        // SAFETY: `fd` is a fresh descriptor no one else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_int(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            SOL_UDP,
            UDP_SEGMENT,
            1200,
        )
    })
}

#[cfg(not(target_os = "linux"))]
pub fn gso_supported() -> bool {
    false
}

/// Scratch space for sending one batch.
///
/// Datagrams that follow one another to one destination go out as one GSO send (UDP
/// segmentation offload, `UDP_SEGMENT`) when the kernel offers it: the kernel builds, routes
/// and queues one packet and cuts it into the datagrams only at the device (or, on loopback,
/// at the receiving socket), instead of doing all of that once per datagram. The core sends
/// a batch's copies destination by destination for this (`Sfu::ingest`). A GSO send's
/// segments must all be as long as the first except the last, which may be shorter; a run
/// that breaks the rule starts a new send. Should the kernel refuse a GSO send (a device
/// without checksum offload, a path MTU below the segment size), GSO is turned off for this
/// batch's socket and the datagrams go out one by one: none is dropped for it.
pub struct SendBatch {
    /// Whether runs to one destination are joined into GSO sends.
    gso: bool,
    /// Datagrams sent as segments of a GSO send (of two or more), since the last
    /// [`SendBatch::take_coalesced`].
    coalesced: u64,
    #[cfg(target_os = "linux")]
    addrs: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    iovecs: Vec<libc::iovec>,
    /// Per send: how many datagrams (iovecs) it carries.
    #[cfg(target_os = "linux")]
    segments: Vec<usize>,
    #[cfg(target_os = "linux")]
    control: Vec<[u64; GSO_CONTROL_WORDS]>,
    #[cfg(target_os = "linux")]
    hdrs: Vec<libc::mmsghdr>,
}

impl Default for SendBatch {
    fn default() -> SendBatch {
        SendBatch::new()
    }
}

// SAFETY: as for `RecvBatch`: the pointers are scratch, rebuilt before each syscall.
#[cfg(target_os = "linux")]
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Scratch space that joins runs to one destination when the kernel can
    /// ([`gso_supported`]).
    pub fn new() -> SendBatch {
        SendBatch::with_gso(gso_supported())
    }

    /// Scratch space that joins runs only if `gso` (and the kernel can).
    pub fn with_gso(gso: bool) -> SendBatch {
        SendBatch {
            gso: gso && gso_supported(),
            coalesced: 0,
            #[cfg(target_os = "linux")]
            addrs: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            iovecs: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            segments: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            control: vec![[0; GSO_CONTROL_WORDS]; BATCH],
            #[cfg(target_os = "linux")]
            hdrs: Vec::with_capacity(BATCH),
        }
    }

    /// Whether runs to one destination are joined (false once the kernel refused one).
    #[cfg(test)]
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Datagrams sent as segments of GSO sends since the last call.
    pub fn take_coalesced(&mut self) -> u64 {
        std::mem::take(&mut self.coalesced)
    }

    /// Sends the first of `items` (up to [`BATCH`] sends; with GSO a send may carry several
    /// datagrams) without blocking; `datagram` gives an item's destination and contents.
    /// Returns how many items left (at least 1), `WouldBlock` when none could, or the error
    /// of the first datagram (the caller drops that one and goes on with the rest).
    #[cfg(target_os = "linux")]
    pub fn send<T>(
        &mut self,
        socket: &mio::net::UdpSocket,
        items: &[T],
        datagram: impl Fn(&T) -> (SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            self.gather(items, &datagram);
            if self.hdrs.is_empty() {
                return Ok(0);
            }
            // SAFETY: every header points at an address in `addrs`, its run of iovecs in
            // `iovecs` and (for a GSO send) its control buffer in `control`, none of which
            // moves until the call returns; the iovecs point into `items`' contents, borrowed
            // for the call. The kernel only reads them. The fd is the socket's, open while
            // borrowed.
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r >= 0 {
                let sent = &self.segments[..r as usize];
                self.coalesced += sent.iter().filter(|&&n| n > 1).sum::<usize>() as u64;
                return Ok(sent.iter().sum());
            }
            let e = io::Error::last_os_error();
            // What a kernel says of a GSO send it will not make (no checksum offload on the
            // device, a segment above the path MTU, a socket without UDP checksums).
            let refused = matches!(
                e.raw_os_error(),
                Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::EOPNOTSUPP)
            );
            if refused && self.segments[0] > 1 {
                // A kernel that has GSO may still refuse it for this socket or path: send
                // them one by one from now on, starting with these.
                tracing::warn!(error = %e, "the kernel refused a UDP GSO send; sending datagrams one by one");
                self.gso = false;
                continue;
            }
            return Err(e);
        }
    }

    /// Builds the headers for the first sends of `items`: each run to one destination
    /// whose lengths GSO can carry is one send.
    #[cfg(target_os = "linux")]
    fn gather<T>(&mut self, items: &[T], datagram: &impl Fn(&T) -> (SocketAddr, &[u8])) {
        self.addrs.clear();
        self.iovecs.clear();
        self.segments.clear();
        self.hdrs.clear();
        // The open send: its destination, segment size, bytes, and whether a shorter (last)
        // segment closed it.
        let mut open: Option<(SocketAddr, usize, usize, bool)> = None;
        for item in items {
            let (dest, data) = datagram(item);
            let joins = self.gso
                && open.is_some_and(|(to, size, bytes, closed)| {
                    to == dest
                        && !closed
                        && (1..=size).contains(&data.len())
                        && bytes + data.len() <= GSO_MAX_BYTES
                        && self.segments.last().is_some_and(|&n| n < GSO_MAX_SEGMENTS)
                });
            if joins {
                if let (Some(open), Some(n)) = (open.as_mut(), self.segments.last_mut()) {
                    open.2 += data.len();
                    open.3 = data.len() < open.1;
                    *n += 1;
                }
            } else {
                if self.segments.len() == BATCH {
                    break;
                }
                self.addrs.push(to_sockaddr(dest));
                self.segments.push(1);
                open = Some((dest, data.len(), data.len(), false));
            }
            self.iovecs.push(libc::iovec {
                // sendmmsg does not write through it; iovec has only a mutable pointer type.
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            });
        }
        let mut first = 0;
        for (i, (&n, addr)) in self.segments.iter().zip(self.addrs.iter_mut()).enumerate() {
            // SAFETY: msghdr is plain old data; the fields that matter are set below.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = sockaddr_len(addr);
            h.msg_iov = self.iovecs[first..].as_mut_ptr();
            h.msg_iovlen = n as _;
            if n > 1 {
                let control = &mut self.control[i];
                h.msg_control = control.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is arithmetic.
                h.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
                let size = self.iovecs[first].iov_len as u16;
                // SAFETY: the control buffer is CMSG_SPACE(2) bytes or more and aligned for
                // cmsghdr (u64s), so the first header and its 2 data bytes lie within it.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
                }
            }
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
            first += n;
        }
    }

    /// Sends the first of `items` without blocking (the portable fallback).
    #[cfg(not(target_os = "linux"))]
    pub fn send<T>(
        &mut self,
        socket: &mio::net::UdpSocket,
        items: &[T],
        datagram: impl Fn(&T) -> (SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        match items.first().map(datagram) {
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
        set_int(fd, libc::SOL_SOCKET, opt, want);
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
fn set_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> bool {
    // SAFETY: the caller's open descriptor and a pointer to a c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            level,
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
            let n = send.send(&tx, &msgs[sent..], |m| (to, &m[..])).unwrap();
            assert!((1..=BATCH).contains(&n));
            sent += n;
        }
        // Each is longer than the one before: no GSO send can carry two of them.
        assert_eq!(send.take_coalesced(), 0);
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

    /// Sends `msgs` (receiver index, contents) through `send` and reads what each receiver
    /// got, in order.
    fn send_all(
        send: &mut SendBatch,
        tx: &mio::net::UdpSocket,
        rxs: &[mio::net::UdpSocket],
        msgs: &[(usize, Vec<u8>)],
    ) -> Vec<Vec<Vec<u8>>> {
        let to: Vec<SocketAddr> = rxs.iter().map(|r| r.local_addr().unwrap()).collect();
        let mut sent = 0;
        while sent < msgs.len() {
            sent += send
                .send(tx, &msgs[sent..], |(i, m)| (to[*i], &m[..]))
                .unwrap();
        }
        let mut recv = RecvBatch::new();
        rxs.iter()
            .map(|rx| {
                let mut got = Vec::new();
                // Loopback delivery is synchronous: a `WouldBlock` means all is read.
                while recv.recv(rx).is_ok() {
                    got.extend(recv.datagrams().map(|(_, d)| d.to_vec()));
                }
                got
            })
            .collect()
    }

    #[test]
    fn runs_to_one_receiver_go_as_one_gso_send_and_arrive_as_the_datagrams_they_were() {
        if !gso_supported() {
            eprintln!("this kernel has no UDP GSO; nothing to test");
            return;
        }
        let tx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let rxs: Vec<_> = (0..3)
            .map(|_| mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let d = |i: usize, len: usize, tag: u8| (i, vec![tag; len]);
        let msgs = vec![
            // A run of equal lengths closed by a shorter one: one send of three.
            d(0, 1100, 1),
            d(0, 1100, 2),
            d(0, 900, 3),
            // Closed: this one starts a send of its own, and a longer one after it another.
            d(0, 900, 4),
            d(0, 1000, 5),
            // Another receiver between runs to the same one.
            d(1, 1200, 6),
            d(0, 1000, 7),
            d(2, 50, 8),
            d(2, 50, 9),
        ];
        let mut send = SendBatch::new();
        assert!(send.gso());
        let got = send_all(&mut send, &tx, &rxs, &msgs);
        for (i, got) in got.iter().enumerate() {
            let want: Vec<Vec<u8>> = msgs
                .iter()
                .filter(|(to, _)| *to == i)
                .map(|(_, m)| m.clone())
                .collect();
            assert_eq!(got, &want, "receiver {i}");
        }
        // Joined: 1-2-3, 5 with nothing (7 follows another receiver's), 8-9.
        assert_eq!(send.take_coalesced(), 5);
        // Without GSO the same datagrams arrive the same way, none joined.
        let mut plain = SendBatch::with_gso(false);
        assert_eq!(send_all(&mut plain, &tx, &rxs, &msgs), got);
        assert_eq!(plain.take_coalesced(), 0);
    }

    #[test]
    fn a_refused_gso_send_turns_gso_off_and_loses_nothing() {
        if !gso_supported() {
            eprintln!("this kernel has no UDP GSO; nothing to test");
            return;
        }
        // A socket that sends without UDP checksums cannot use GSO (the kernel says EINVAL).
        const SO_NO_CHECK: libc::c_int = 11;
        let tx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        use std::os::fd::AsRawFd;
        assert!(set_int(tx.as_raw_fd(), libc::SOL_SOCKET, SO_NO_CHECK, 1));
        let rxs = vec![mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()];
        let msgs: Vec<(usize, Vec<u8>)> = (0..10u8).map(|i| (0, vec![i; 700])).collect();
        let mut send = SendBatch::new();
        let got = send_all(&mut send, &tx, &rxs, &msgs);
        let want: Vec<Vec<u8>> = msgs.into_iter().map(|(_, m)| m).collect();
        assert_eq!(got[0], want);
        assert!(!send.gso());
        assert_eq!(send.take_coalesced(), 0);
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
