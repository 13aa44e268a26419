//! The media load tool's receive path (`benches/media_load/rxstamp.rs`) against the server's
//! send path (`src/media/batch.rs`) on the kernel: with `--receiver-gro on`, a run the server
//! sends to one receiver as one UDP GSO send is read as one buffer and must come back out as
//! the datagrams that were sent, in order, none lost or merged; a datagram sent on its own
//! still reads on its own. And the tool's count of a packet's copies when they arrive on
//! several of its threads (`peer.rs`'s own tests, included from here).

#![cfg(target_os = "linux")]

#[path = "../benches/media_load/rxstamp.rs"]
#[allow(dead_code)]
mod rxstamp;
// The tool's counting (its unit tests run here: a bench target's never run as tests).
#[path = "../benches/media_load/pacer.rs"]
#[allow(dead_code)]
mod pacer;
#[path = "../benches/media_load/peer.rs"]
#[allow(dead_code)]
mod peer;

use std::time::{Duration, Instant};

use tokio::io::Interest;

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
fn run_of_four() -> Vec<Vec<u8>> {
    [1_100, 1_100, 1_100, 400]
        .iter()
        .enumerate()
        .map(|(i, &n)| vec![i as u8 + 1; n])
        .collect()
}

#[tokio::test]
async fn a_gso_run_is_read_whole_and_cut_back_into_its_datagrams() {
    rxstamp::RECEIVER_GRO.store(true, std::sync::atomic::Ordering::Relaxed);
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    rxstamp::enable(&rx);
    let tx = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let to = rx.local_addr().unwrap();
    let want = run_of_four();
    let mut batch = frontdesk::media::batch::SendBatch::new();
    let sent = batch.send(&tx, &want, |d| (to, &d[..])).unwrap();
    assert_eq!(sent, want.len(), "the server's batch sent the run");
    assert_eq!(
        batch.take_coalesced(),
        4,
        "the server sent it as one GSO send"
    );
    // And one datagram on its own after it.
    let lone = [vec![9u8; 160]];
    batch.send(&tx, &lone, |d| (to, &d[..])).unwrap();

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
