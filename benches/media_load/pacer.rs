//! Sub-millisecond wake-ups for publishers (`--precise-pacing`).
//!
//! tokio's timers tick in whole milliseconds, so every publisher of the tool wakes on the same
//! tick and the packets of all of them that fell due in that millisecond leave together: at
//! 10×10 and 140,000 packets/s about 14 packets, 140 copies, reach the server at once. Ten
//! browsers would not be in step like that. With this option each publisher sleeps on a
//! `timerfd` of its own (CLOCK_MONOTONIC, which `Instant` reads on Linux) and sends each
//! packet at its own time, as the spacing of `Rate` says.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// One publisher's timer.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: plain system call; the descriptor it returns is owned from here on.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd is open, and it stays open and the same descriptor for as long
        // as the AsyncFd that owns it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Timer { fd })
    }

    /// Waits until `at` (at once if it has passed).
    pub async fn sleep_until(&self, at: Instant) {
        // Zero would disarm the timer: a deadline that has passed waits 1 µs.
        let d = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a fully initialised itimerspec.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r != 0 {
            // Not expected; fall back to the coarse timer rather than spin.
            tokio::time::sleep(d).await;
            return;
        }
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into the buffer above.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return;
            }
            guard.clear_ready();
        }
    }
}

/// Waits until `at`: on `timer` when there is one, else on tokio's millisecond timer.
pub async fn sleep_until(timer: Option<&Timer>, at: Instant) {
    match timer {
        Some(t) => t.sleep_until(at).await,
        None => tokio::time::sleep_until(at.into()).await,
    }
}
