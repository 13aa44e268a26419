//! The machine's own floor under the latency figures, measured before the servers run.
//!
//! A thread on the server's CPUs that does nothing but read a datagram and write it back
//! (blocking calls, no crypto, no state) is sent stamped datagrams at a gentle rate from the
//! tool's CPUs; the trip from the send to the kernel's stamp of the echo's arrival at the
//! tool's socket is what any server adds at the least on this machine: waking its core,
//! one read and one write, both loopback paths. A forwarding server's "added latency" cannot
//! be below this. It also times `CPUID`, which a hypervisor always intercepts: its cost is the
//! price of one VM exit here (tens of nanoseconds on bare metal), which every interrupt,
//! wake-up IPI and timer reprogramming also pays.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;

/// What the floor probe measured.
pub struct Floor {
    pub rate: u32,
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// One `CPUID`, ns (x86-64 only).
    pub cpuid_ns: Option<f64>,
}

impl Floor {
    pub fn print(&self) {
        println!(
            "machine floor: a do-nothing echo on the server CPUs, {} datagrams/s: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} samples)",
            self.rate, self.p50_us, self.p99_us, self.max_us, self.samples
        );
        if let Some(ns) = self.cpuid_ns {
            println!("machine floor: CPUID (a hypervisor exit under virtualization) {ns:.0} ns");
        }
    }
}

/// Pins the calling thread to the CPUs of a list such as `0`, `0,1` or `0-1`.
#[cfg(target_os = "linux")]
fn pin_thread(cpus: &str) {
    // SAFETY: all-zero is an empty cpu_set_t; CPU_SET stays inside it for ids below
    // CPU_SETSIZE; sched_setaffinity(0) applies to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for part in cpus.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) else {
                panic!("bad CPU list {cpus:?}");
            };
            for c in a..=b.min(libc::CPU_SETSIZE as usize - 1) {
                libc::CPU_SET(c, &mut set);
            }
        }
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(r, 0, "could not pin the echo thread to CPUs {cpus}");
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_thread(_cpus: &str) {}

fn cpuid_ns() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        const N: u32 = 2_000;
        let t = Instant::now();
        for _ in 0..N {
            // CPUID exists on every x86-64 CPU; leaf 0 only reads identification.
            std::hint::black_box(std::arch::x86_64::__cpuid(0));
        }
        Some(t.elapsed().as_nanos() as f64 / N as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Runs the echo on `server_cpus` and sends it `rate` datagrams/s for `seconds`.
pub async fn measure(server_cpus: Option<&str>, rate: u32, seconds: u64) -> Floor {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("bind the echo socket");
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("echo read timeout");
    let echo_addr = echo.local_addr().expect("echo address");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_echo = stop.clone();
    let cpus = server_cpus.map(str::to_owned);
    let thread = std::thread::spawn(move || {
        if let Some(cpus) = &cpus {
            pin_thread(cpus);
        }
        let mut buf = [0u8; 64];
        while !stop_echo.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind the probe socket");
    crate::rxstamp::enable(&socket);
    let n = (rate as u64 * seconds) as usize;
    let gap = Duration::from_nanos(1_000_000_000 / rate.max(1) as u64);
    let mut sent = vec![None::<Instant>; n];
    let mut trips = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    let start = Instant::now();
    let end = start + gap * n as u32 + Duration::from_millis(200);
    let mut next = 0usize;
    loop {
        let due = start + gap * next as u32;
        if next == n && Instant::now() >= end {
            break;
        }
        let wake = if next < n { due } else { end };
        tokio::select! {
            r = socket.async_io(Interest::READABLE, || crate::rxstamp::recv(&socket, &mut buf)) => {
                if let Ok(crate::rxstamp::Received { len, at, .. }) = r {
                    if len == 8 {
                        let i = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                        if let Some(t) = sent.get_mut(i).and_then(Option::take) {
                            trips.push(at.saturating_duration_since(t).as_nanos() as u64);
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if next < n {
                    sent[next] = Some(Instant::now());
                    let _ = socket.send_to(&(next as u64).to_be_bytes(), echo_addr).await;
                    next += 1;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = thread.join();
    trips.sort_unstable();
    Floor {
        rate,
        samples: trips.len(),
        p50_us: crate::common::percentile(&trips, 0.5),
        p99_us: crate::common::percentile(&trips, 0.99),
        max_us: trips.last().map_or(f64::NAN, |&ns| ns as f64 / 1e3),
        cpuid_ns: cpuid_ns(),
    }
}
