//! What sealing one forwarded copy costs under each SRTP profile a receiver can negotiate:
//! AES-256-GCM and AES-128-GCM (every current browser), and AES-128-CM with HMAC-SHA1-80
//! (clients without the AEAD profiles). The core seals all three itself; the load tool's peers
//! always negotiate AES-256-GCM, so this is where the other two are measured.
//!
//!   cargo bench -p frontdesk-sfu --bench seal
//!
//! Timed per iteration: one RTP packet (a 12-byte header and a video-sized 1,100-byte or an
//! Opus-sized 160-byte payload) sealed into a reused buffer, as `Sfu` does for each copy.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use frontdesk_sfu::seal_bench::Sealer;

fn seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal");
    for len in [1_100usize, 160] {
        let payload = vec![0x5a; len];
        g.throughput(Throughput::Bytes(len as u64));
        for profile in ["aes256gcm", "aes128gcm", "aes128cm"] {
            let mut s = Sealer::new(profile).expect("a known profile");
            g.bench_with_input(BenchmarkId::new(profile, len), &payload, |b, p| {
                b.iter(|| s.seal(std::hint::black_box(p)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, seal);
criterion_main!(benches);
