//! Kernel receive timestamps for the load tool's sockets (`SO_TIMESTAMPNS`), their receive
//! buffers, and UDP GRO on them (`--receiver-gro`).
//!
//! One thread of the tool serves many receivers, so at a wide fan-out the last subscriber reads
//! its copy of a packet only after the thread has decrypted the copies of the others: the
//! time the tool *reads* a datagram includes the tool's own queueing, which is not the
//! server's latency. The kernel stamps each datagram when it reaches the socket; that is the
//! arrival time the latency figures use. Elsewhere than Linux, the read time stands in.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic instant of a kernel stamp on the wall clock (seconds, nanoseconds since the
/// epoch): now, less the stamp's age read on the wall clock now. Both clocks are read at each
/// datagram, so a step of the wall clock (this VM's host steps it by tens of milliseconds at
/// times) misplaces only datagrams that were queued across it; a mapping taken once at a
/// peer's start misplaced every later datagram by the whole step (the runs of 2026-12-06 01:39
/// read 35–41 ms p50 latency for both servers while frontdesk's own histogram read 0.1 ms).
fn instant_of(stamp: Duration) -> Instant {
    let mono = Instant::now();
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    mono.checked_sub(real.saturating_sub(stamp)).unwrap_or(mono)
}

/// `SOL_UDP` and `UDP_GRO` (linux/udp.h; the libc crate lacks the latter for glibc).
#[cfg(target_os = "linux")]
const SOL_UDP: libc::c_int = 17;
#[cfg(target_os = "linux")]
const UDP_GRO: libc::c_int = 104;

/// Whether peers' sockets take a UDP GSO run whole (`--receiver-gro on`, the default).
///
/// A server that sends several datagrams to one receiver as one UDP GSO send hands loopback
/// one buffer; a socket without `UDP_GRO` has the kernel cut it back into datagrams and queue
/// each on its own, on the *server's* core, as the send's last step. That delivery is the
/// receiver's work: on a network its kernel does it on its own machine. A socket with
/// `UDP_GRO` takes the run as it was sent (one queueing, one wake-up) and the tool cuts it
/// up, so the server's figures hold what it does itself. Datagrams sent one by one (all of
/// Janus's, and frontdesk's where a receiver has one copy in a send) are delivered as before.
pub static RECEIVER_GRO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The buffer a peer reads into: a whole GSO run (at most 64 KiB) with `--receiver-gro on`,
/// else one datagram.
pub fn buffer() -> Vec<u8> {
    let gro = RECEIVER_GRO.load(std::sync::atomic::Ordering::Relaxed);
    vec![0u8; if gro { 65_536 } else { 2_048 }]
}

/// Asks the kernel to stamp every datagram `socket` receives and, with
/// [`RECEIVER_GRO`], to hand over GSO runs whole.
#[cfg(target_os = "linux")]
pub fn enable(socket: &tokio::net::UdpSocket) {
    set_int(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).expect("SO_TIMESTAMPNS");
    // Room for a whole keyframe burst at the ramp's top rates while its thread of the tool is
    // busy with other peers (capped by net.core.rmem_max, so a refusal is not an error).
    let _ = set_int(socket, libc::SOL_SOCKET, libc::SO_RCVBUF, 2 << 20);
    if RECEIVER_GRO.load(std::sync::atomic::Ordering::Relaxed) {
        if let Err(e) = set_int(socket, SOL_UDP, UDP_GRO, 1) {
            // A kernel without it (before 5.0): receive datagram by datagram from here on.
            // Peers already set up keep their runs whole; their larger buffers are harmless.
            if RECEIVER_GRO.swap(false, std::sync::atomic::Ordering::Relaxed) {
                eprintln!("media_load: UDP_GRO refused ({e}); receivers take GSO runs datagram by datagram");
            }
        }
    }
}

/// One integer socket option.
#[cfg(target_os = "linux")]
fn set_int(
    socket: &tokio::net::UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub fn enable(_socket: &tokio::net::UdpSocket) {}

/// What one read took from a socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Bytes read: one datagram, or with `UDP_GRO` a run of them.
    pub len: usize,
    /// The datagrams' length in a run (the last may be shorter); `len` when it was one.
    pub segment: usize,
    pub from: SocketAddr,
    /// When it reached the socket (the kernel's stamp where there is one, else now).
    pub at: Instant,
}

impl Received {
    /// The datagrams in `buf[..len]`.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> std::slice::Chunks<'a, u8> {
        buf[..self.len].chunks(self.segment.max(1))
    }
}

/// Receives one datagram (or a GSO run, see [`RECEIVER_GRO`]) without blocking.
#[cfg(target_os = "linux")]
pub fn recv(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s for the alignment cmsghdr wants; room for a timespec and a GRO segment size.
    let mut control = [0u64; 12];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at the buffers above, which outlive the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::other("datagram larger than the read buffer"));
    }
    let mut at = None;
    let mut segment = None;
    // SAFETY: the CMSG_* walk stays inside msg_control as the kernel filled it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                at = Some(instant_of(Duration::new(
                    ts.tv_sec as u64,
                    ts.tv_nsec as u32,
                )));
            } else if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                // The kernel writes the segment size as an int.
                let size: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                segment = usize::try_from(size).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let from = match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((&addr as *const libc::sockaddr_storage).cast()) };
            SocketAddr::from((
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(sin.sin_port),
            ))
        }
        _ => return Err(io::Error::other("not an IPv4 source")),
    };
    let len = n as usize;
    Ok(Received {
        len,
        segment: segment.filter(|&s| s > 0).unwrap_or(len),
        from,
        at: at.unwrap_or_else(Instant::now),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn recv(socket: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let (len, from) = socket.try_recv_from(buf)?;
    Ok(Received {
        len,
        segment: len,
        from,
        at: Instant::now(),
    })
}
