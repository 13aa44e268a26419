//! The media load tool's receive path (`benches/media_load/rxstamp.rs`) against the kernel:
//! with `--receiver-gro on`, a run the server sent to one receiver as one UDP GSO send is read
//! as one buffer and must come back out as the datagrams that were sent, in order, none lost
//! or merged; a datagram sent on its own still reads on its own.

#![cfg(target_os = "linux")]

#[path = "../benches/media_load/rxstamp.rs"]
#[allow(dead_code)]
mod rxstamp;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tokio::io::Interest;

/// Sends `payload` to `to` as one UDP GSO send of `segment`-byte datagrams (linux/udp.h's
/// `UDP_SEGMENT`), as the server's send batch does for a run to one receiver.
fn send_gso(socket: &std::net::UdpSocket, to: SocketAddr, payload: &[u8], segment: u16) {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the call, and the
    // one control message fits the buffer (CMSG_SPACE(2) is 24 bytes of its 32).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&addr as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(2) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = 17; // SOL_UDP
        (*c).cmsg_type = 103; // UDP_SEGMENT
        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    assert_eq!(
        sent,
        payload.len() as isize,
        "GSO send: {}",
        std::io::Error::last_os_error()
    );
}

/// Reads until `want` datagrams have come out of the receiver's reads (or a second passes);
/// returns them and how many reads it took.
async fn read_datagrams(socket: &tokio::net::UdpSocket, want: usize) -> (Vec<Vec<u8>>, usize) {
    let mut buf = rxstamp::buffer();
    let mut got = Vec::new();
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(1);
    while got.len() < want && Instant::now() < deadline {
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            socket.async_io(Interest::READABLE, || rxstamp::recv(socket, &mut buf)),
        )
        .await;
        let Ok(Ok(r)) = r else { continue };
        reads += 1;
        assert!(r.at <= Instant::now(), "an arrival stamp in the future");
        got.extend(r.datagrams(&buf).map(<[u8]>::to_vec));
    }
    (got, reads)
}

/// Three whole 1,100-byte datagrams and a short last one, each byte saying which it is.
fn run_of_four() -> (Vec<u8>, Vec<Vec<u8>>) {
    let sizes = [1_100, 1_100, 1_100, 400];
    let datagrams: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![i as u8 + 1; n])
        .collect();
    (datagrams.concat(), datagrams)
}

#[tokio::test]
async fn a_gso_run_is_read_whole_and_cut_back_into_its_datagrams() {
    rxstamp::RECEIVER_GRO.store(true, std::sync::atomic::Ordering::Relaxed);
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    rxstamp::enable(&rx);
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (run, want) = run_of_four();
    send_gso(&tx, rx.local_addr().unwrap(), &run, 1_100);
    // And one datagram on its own after it.
    tx.send_to(&[9; 160], rx.local_addr().unwrap()).unwrap();

    let (got, reads) = read_datagrams(&rx, 5).await;
    let mut want = want;
    want.push(vec![9; 160]);
    // Each datagram as (its length, whether it is all one byte, which).
    let shape = |d: &Vec<Vec<u8>>| -> Vec<(usize, bool, u8)> {
        d.iter()
            .map(|d| (d.len(), d.iter().all(|&b| b == d[0]), d[0]))
            .collect()
    };
    assert_eq!(shape(&got), shape(&want), "the datagrams sent, in order");
    assert_eq!(
        reads, 2,
        "the run in one read, the lone datagram in another"
    );
}

#[test]
fn a_read_of_one_datagram_is_that_datagram() {
    let buf = [7u8; 300];
    let one = rxstamp::Received {
        len: 200,
        segment: 200,
        from: "127.0.0.1:9".parse().unwrap(),
        at: Instant::now(),
    };
    let got: Vec<&[u8]> = one.datagrams(&buf).collect();
    assert_eq!(got, vec![&buf[..200]]);
    // A run whose length is a whole number of segments has no short last one.
    let run = rxstamp::Received {
        len: 300,
        segment: 100,
        ..one
    };
    assert_eq!(
        run.datagrams(&buf).map(<[u8]>::len).collect::<Vec<_>>(),
        [100; 3]
    );
}
