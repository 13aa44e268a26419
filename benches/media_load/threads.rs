//! Threads of the tool besides its main one, each running peers handed to it on a
//! current-thread runtime of its own, with totals of its own that are added in at the run's
//! end.
//!
//! **The publishers' thread** (`--publishers own`, the default). On the tool's main thread, a
//! publisher's timer is served only when the thread gets round to it: with the subscribers'
//! copies to read (most of the tool's work), a publisher fell behind its 1 ms grid and paid the
//! delay back as a burst — the server then saw two or more ticks' packets at once, and its
//! latency tail measured the tool. Here publishers run on a thread of their own, at real-time
//! priority (`SCHED_FIFO`) where the tool may set it, so their timers preempt the receivers on
//! the tool's CPU: they write on time for as long as the tool's CPU has time at all.
//! Participants of one-to-one calls both publish and receive on one connection and stay with
//! the receivers.
//!
//! **Receiver threads** (`--receiver-threads N`, N ≥ 2). Reading and decrypting copies is most
//! of the tool's work, about as much per copy as the server spends forwarding it, so one
//! thread of receivers runs out before a server with more than one core does. With N threads
//! the subscribers (and one-to-one participants) are dealt to them in turn, and the tool can
//! use N cores (`--tool-cpus`). A packet's copies then arrive on several threads: each keeps
//! what it saw of each packet (first and last copy, how many) and the run's end joins them,
//! so the fan-out figures are those of every copy (`Totals::merge`).

use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::pacer::Pacing;
use crate::peer::{Parts, Peer, Role, Shared, Totals};

/// One thread of peers for one run.
pub struct PeerThread {
    tx: Option<mpsc::UnboundedSender<(Box<Parts>, Role)>>,
    thread: Option<JoinHandle<Totals>>,
    /// Whether the thread runs at real-time priority.
    pub realtime: Arc<std::sync::atomic::AtomicBool>,
}

impl PeerThread {
    /// Starts a thread named `name`: the publishers' under `SCHED_FIFO` (where allowed), a
    /// receivers' with totals whose packets are joined with the others' at the end.
    pub fn start(
        name: &str,
        publishers: bool,
        epoch: Instant,
        shared: Arc<Shared>,
        pacing: Pacing,
    ) -> PeerThread {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Box<Parts>, Role)>();
        let rt_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_rt = rt_flag.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if publishers {
                    is_rt.store(set_realtime(), std::sync::atomic::Ordering::Relaxed);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for a thread of peers");
                let local = tokio::task::LocalSet::new();
                let totals = if publishers {
                    Totals::with_shared(epoch, shared, pacing)
                } else {
                    Totals::for_receivers(epoch, shared, pacing)
                };
                let t = totals.clone();
                local.block_on(&rt, async move {
                    while let Some((parts, role)) = rx.recv().await {
                        match Peer::from_parts(*parts) {
                            Ok(peer) => {
                                tokio::task::spawn_local(peer.run(role, t.clone()));
                            }
                            Err(e) => eprintln!("a peer could not move threads: {e}"),
                        }
                    }
                });
                // Every peer runs until the run's stop.
                rt.block_on(local);
                Rc::into_inner(totals)
                    .expect("every peer's task ended with the LocalSet")
                    .into_inner()
            })
            .expect("a thread for peers");
        PeerThread {
            tx: Some(tx),
            thread: Some(thread),
            realtime: rt_flag,
        }
    }

    /// Hands a negotiated peer to the thread.
    pub fn run(&self, peer: Peer, role: Role) {
        let parts = peer
            .into_parts()
            .map(Box::new)
            .unwrap_or_else(|e| panic!("a peer's socket cannot leave the runtime: {e}"));
        let sent = self.tx.as_ref().map(|tx| tx.send((parts, role)));
        assert!(
            matches!(sent, Some(Ok(()))),
            "a thread of peers is gone before the run's end"
        );
    }

    /// Waits for the thread (after the run's stop) and adds what it counted to `into`.
    pub fn finish(mut self, into: &mut Totals) {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return;
        };
        match thread.join() {
            Ok(theirs) => into.merge(theirs),
            // Its counts are gone: the run's figures would be wrong, so the run fails.
            Err(_) => panic!("a thread of peers panicked; the run's counts are incomplete"),
        }
    }
}

/// Puts the calling thread under `SCHED_FIFO` (priority 10); false where it may not.
fn set_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}
