//! When publishers wake (`--pacing`).
//!
//! Each publisher sleeps on a `timerfd` of its own (CLOCK_MONOTONIC, which `Instant` reads on
//! Linux), so it wakes within microseconds of the time it asks for:
//!
//! - [`Pacing::Tick`] (the default): on a grid of whole milliseconds from the run's epoch,
//!   shared by every publisher, so all of them wake together each millisecond and send what
//!   fell due since (at 10×10 and 140,000 packets/s about 14 packets, 140 copies, reach the
//!   server at once, every millisecond).
//! - [`Pacing::Precise`]: each packet at its own time, as the spacing of `Rate` says; ten
//!   browsers are not in step, and neither are these publishers.
//! - [`Pacing::Tokio`]: tokio's own timer, as the figures before 2026-12-06 18:57 UTC were
//!   taken. It rounds a deadline up to its millisecond tick and looks at its timers only
//!   when the tool's one thread gets round to it, so a tick the thread spent reading copies
//!   is taken late and the next one's packets go with it: two milliseconds' packets in one
//!   burst, irregularly (seen in `perf sched timehist` of the server's worker at 10×10, half
//!   load: idle 1.2–1.5 ms, then busy a millisecond, where a steady 14 packets a millisecond
//!   keep it busy half of each).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

/// How publishers are woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    Tick,
    Precise,
    Tokio,
}

impl Pacing {
    pub fn parse(s: &str) -> Option<Pacing> {
        match s {
            "tick" => Some(Pacing::Tick),
            "precise" => Some(Pacing::Precise),
            "tokio" => Some(Pacing::Tokio),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pacing::Tick => "1 ms tick",
            Pacing::Precise => "per packet",
            Pacing::Tokio => "tokio's timer",
        }
    }
}

/// The grid [`Pacing::Tick`] wakes on.
const TICK: Duration = Duration::from_millis(1);

/// One publisher's timer.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
    /// With [`Pacing::Tick`], the epoch the grid counts from.
    grid: Option<Instant>,
    /// The deadline the timer is armed for and has not yet been seen to pass. A peer's loop
    /// asks for its next wake-up again after every datagram it reads; on a VM each
    /// `timerfd_settime` reprograms the CPU's timer through the hypervisor, and re-arming for
    /// the same deadline after every read cost the tool 16 % of its core at 25 one-to-one
    /// calls (docs/benchmarks.md), so an unchanged deadline is left armed.
    armed: std::cell::Cell<Option<Instant>>,
}

impl Timer {
    /// A timer for `pacing` (none for [`Pacing::Tokio`]); `epoch` is the run's, shared by
    /// every publisher.
    pub fn for_pacing(pacing: Pacing, epoch: Instant) -> Option<Timer> {
        let grid = match pacing {
            Pacing::Tokio => return None,
            Pacing::Tick => Some(epoch),
            Pacing::Precise => None,
        };
        Timer::new(grid).ok()
    }

    fn new(grid: Option<Instant>) -> io::Result<Timer> {
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
        Ok(Timer {
            fd,
            grid,
            armed: std::cell::Cell::new(None),
        })
    }

    /// Waits until `at` (at once if it has passed), or on the grid, until the first tick at or
    /// after `at`.
    pub async fn sleep_until(&self, at: Instant) {
        let at = match self.grid {
            Some(epoch) => on_grid(epoch, at),
            None => at,
        };
        if self.armed.get() != Some(at) {
            if let Err(d) = self.arm(at) {
                // Not expected; fall back to the coarse timer rather than spin.
                tokio::time::sleep(d).await;
                return;
            }
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
                self.armed.set(None);
                return;
            }
            guard.clear_ready();
        }
    }

    /// Arms the timer for `at` (which resets its count of expirations); if the kernel
    /// refuses, the wait it would have been.
    fn arm(&self, at: Instant) -> Result<(), Duration> {
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
        if r == 0 {
            self.armed.set(Some(at));
            Ok(())
        } else {
            self.armed.set(None);
            Err(d)
        }
    }
}

/// When a packet due at `at` is meant to leave: on [`Pacing::Tick`] the first tick of the
/// grid at or after it, else `at` itself (what tokio adds to it is its lateness).
pub fn release(pacing: Pacing, epoch: Instant, at: Instant) -> Instant {
    match pacing {
        Pacing::Tick => on_grid(epoch, at),
        Pacing::Precise | Pacing::Tokio => at,
    }
}

/// The first tick of the grid from `epoch` at or after `at`.
fn on_grid(epoch: Instant, at: Instant) -> Instant {
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick = TICK.as_nanos();
    let ticks = since.div_ceil(tick);
    epoch + Duration::from_nanos((ticks * tick) as u64)
}

/// Waits until `at`: on `timer` when there is one, else on tokio's millisecond timer.
pub async fn sleep_until(timer: Option<&Timer>, at: Instant) {
    match timer {
        Some(t) => t.sleep_until(at).await,
        None => tokio::time::sleep_until(at.into()).await,
    }
}
