//! Kernel receive timestamps for the load tool's sockets (`SO_TIMESTAMPNS`), and their
//! receive buffers.
//!
//! The tool is one thread serving every peer, so at a wide fan-out the last subscriber reads
//! its copy of a packet only after the tool has decrypted the copies of all the others: the
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

/// Asks the kernel to stamp every datagram `socket` receives.
#[cfg(target_os = "linux")]
pub fn enable(socket: &tokio::net::UdpSocket) {
    set_int(socket, libc::SO_TIMESTAMPNS, 1).expect("SO_TIMESTAMPNS");
    // Room for a whole keyframe burst at the ramp's top rates while the tool's one thread is
    // busy with other peers (capped by net.core.rmem_max, so a refusal is not an error).
    let _ = set_int(socket, libc::SO_RCVBUF, 2 << 20);
}

/// One integer `SOL_SOCKET` option.
#[cfg(target_os = "linux")]
fn set_int(socket: &tokio::net::UdpSocket, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
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

/// Receives one datagram without blocking: its length, source and arrival time (the kernel's
/// stamp where there is one, else now).
#[cfg(target_os = "linux")]
pub fn recv(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Instant)> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s for the alignment cmsghdr wants; room for one timespec control message.
    let mut control = [0u64; 8];
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
    let mut at = None;
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
    Ok((n as usize, from, at.unwrap_or_else(Instant::now)))
}

#[cfg(not(target_os = "linux"))]
pub fn recv(
    socket: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Instant)> {
    let (n, from) = socket.try_recv_from(buf)?;
    Ok((n, from, Instant::now()))
}
