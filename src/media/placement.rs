//! Which media worker holds each call.
//!
//! A call goes to the worker that holds the fewest calls when it first needs one (its first
//! `attach`, `media_offer` or watch), and stays there while that worker holds anything of it or
//! a command for it is on its way. A call id hashed modulo the worker count would need no
//! table, but splits small numbers of calls unevenly: 25 calls on two workers came out 17 / 8,
//! so the busier worker ran out of CPU at 68 % of what two balanced ones forward
//! (docs/benchmarks.md).
//!
//! The table is touched once per signaling command, never per packet. An entry goes only when
//! its worker, in its once-a-second sweep, finds it holds nothing of the call and no command
//! for it is queued (`in_flight` counts them under the same lock), so a command can never
//! reach a worker the call has left: the entry it was routed by is still there when it lands.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use frontdesk_domain::CallId;

/// Where each call's media lives, shared by the handle and every worker.
#[derive(Debug)]
pub struct Placement {
    inner: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    calls: HashMap<CallId, Placed>,
    /// Calls placed on each worker.
    load: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Placed {
    worker: usize,
    /// Commands routed to the worker and not yet handled by it.
    in_flight: u32,
}

impl Placement {
    pub fn new(workers: usize) -> Placement {
        Placement {
            inner: Mutex::new(Table {
                calls: HashMap::new(),
                load: vec![0; workers.max(1)],
            }),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock leaves the table consistent (every update is one
        // statement), so a poisoned lock is still good to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The worker a command for `call` goes to, counted as in flight until the worker calls
    /// [`Placement::handled`]. A call with no worker yet gets the least loaded one when
    /// `place` is set (the command creates state); otherwise there is no worker to ask.
    pub fn route(&self, call: CallId, place: bool) -> Option<usize> {
        let mut t = self.table();
        if let Some(p) = t.calls.get_mut(&call) {
            p.in_flight += 1;
            return Some(p.worker);
        }
        if !place {
            return None;
        }
        let worker = (0..t.load.len())
            .min_by_key(|&k| t.load[k])
            .expect("a placement has at least one worker");
        t.load[worker] += 1;
        t.calls.insert(
            call,
            Placed {
                worker,
                in_flight: 1,
            },
        );
        Some(worker)
    }

    /// The worker `call` is on, without routing anything to it.
    pub fn worker_of(&self, call: CallId) -> Option<usize> {
        self.table().calls.get(&call).map(|p| p.worker)
    }

    /// A command routed for `call` was handled (or never reached its worker).
    pub fn handled(&self, call: CallId) {
        if let Some(p) = self.table().calls.get_mut(&call) {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// Worker `worker`'s sweep: forgets its calls that are not in `held` and have no command
    /// on the way; returns how many it forgot.
    pub fn release_unheld(&self, worker: usize, held: &HashSet<CallId>) -> usize {
        let mut t = self.table();
        let before = t.calls.len();
        t.calls
            .retain(|c, p| p.worker != worker || p.in_flight > 0 || held.contains(c));
        let gone = before - t.calls.len();
        if let Some(l) = t.load.get_mut(worker) {
            *l = l.saturating_sub(gone);
        }
        gone
    }

    /// Calls placed on each worker.
    pub fn load(&self) -> Vec<usize> {
        self.table().load.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(n: usize) -> Vec<CallId> {
        (0..n).map(|_| CallId::new()).collect()
    }

    #[test]
    fn new_calls_go_to_the_worker_with_the_fewest_so_workers_differ_by_at_most_one() {
        let p = Placement::new(2);
        for c in calls(25) {
            p.route(c, true).unwrap();
        }
        assert_eq!(p.load(), vec![13, 12]);
        let p = Placement::new(3);
        for c in calls(10) {
            p.route(c, true).unwrap();
        }
        assert_eq!(p.load(), vec![4, 3, 3]);
    }

    #[test]
    fn a_call_stays_on_its_worker_and_only_placing_commands_give_it_one() {
        let p = Placement::new(4);
        let [a, b] = calls(2).try_into().unwrap();
        assert_eq!(
            p.route(a, false),
            None,
            "a detach for an unknown call goes nowhere"
        );
        let k = p.route(a, true).unwrap();
        for _ in 0..5 {
            assert_eq!(p.route(a, false), Some(k));
            assert_eq!(p.route(a, true), Some(k));
        }
        assert_ne!(p.route(b, true), Some(k), "the next call goes elsewhere");
        assert_eq!(p.worker_of(a), Some(k));
    }

    #[test]
    fn a_call_is_forgotten_only_once_its_worker_holds_nothing_and_no_command_is_on_its_way() {
        let p = Placement::new(2);
        let [a, b] = calls(2).try_into().unwrap();
        let ka = p.route(a, true).unwrap();
        let kb = p.route(b, true).unwrap();
        assert_ne!(ka, kb);
        let none = HashSet::new();
        // Routed, not handled yet: the worker may be about to create its state.
        assert_eq!(p.release_unheld(ka, &none), 0);
        p.handled(a);
        // Handled and still held.
        assert_eq!(p.release_unheld(ka, &HashSet::from([a])), 0);
        // Another worker's sweep never forgets it.
        assert_eq!(p.release_unheld(kb, &none), 0);
        assert_eq!(p.worker_of(a), Some(ka));
        assert_eq!(p.release_unheld(ka, &none), 1);
        assert_eq!(p.worker_of(a), None);
        assert_eq!(p.load()[ka], 0);
        // b is still in flight on its worker.
        assert_eq!(p.release_unheld(kb, &none), 0);
        p.handled(b);
        assert_eq!(p.release_unheld(kb, &none), 1);
        assert_eq!(p.load(), vec![0, 0]);
    }
}
