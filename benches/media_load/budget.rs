//! A CPU budget per media worker (`--worker-budget PCT`): each of frontdesk's
//! `frontdesk-media-k` threads goes into a cgroup of its own (the cgroup v1 `cpu` controller)
//! whose CFS quota is PCT % of one CPU, over a 10 ms period, and is pinned to a CPU of its own
//! when `--server-cpus` names several.
//!
//! This is how the tool shows what a second core adds on a machine too small to give the
//! server two whole cores and the tool cores of its own: one worker with a budget of B against
//! two workers with B each. If the workers share nothing on the data path, two forward twice
//! what one does at the same loss; any lock, shared queue or cache line between them would
//! show as less. The tool needs far less than the rest of the machine, so it is not the limit.
//!
//! The cgroups are made under the `cpu` controller's mount and removed when the server exits.
//! cgroup v2 (a unified hierarchy with the `cpu` controller) is not supported: the tool says so
//! and stops rather than run without the budget it was asked for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CFS period of each worker's cgroup: short, so that a throttled worker waits at most
/// this long (a 100 ms default would hold a budget of 25 % off its CPU for 75 ms at a time).
const PERIOD_US: u64 = 10_000;
/// The name each media worker thread carries (its `comm`, cut to 15 bytes by the kernel).
const WORKER_COMM: &str = "frontdesk-media";

/// One worker under its budget.
pub struct Worker {
    pub tid: u32,
    pub cpu: Option<usize>,
    dir: PathBuf,
}

/// What one worker did in a window: CPU time, and how often its budget held it back.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerUse {
    pub cpu_s: f64,
    pub periods: u64,
    pub throttled: u64,
}

/// Counters of one worker at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerTicks {
    cpu_ns: u64,
    periods: u64,
    throttled: u64,
}

impl WorkerTicks {
    pub fn since(&self, before: &WorkerTicks) -> WorkerUse {
        WorkerUse {
            cpu_s: self.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e9,
            periods: self.periods.saturating_sub(before.periods),
            throttled: self.throttled.saturating_sub(before.throttled),
        }
    }
}

/// The media workers of one server process, each in its own capped cgroup.
pub struct Budget {
    pid: u32,
    pub percent: u32,
    pub workers: Vec<Worker>,
}

impl Budget {
    /// Finds `workers` media threads of `pid` (waiting up to 10 s for them to start), puts
    /// each into a new cgroup capped at `percent` % of one CPU, and pins worker k to
    /// `cpus[k % cpus.len()]` when `cpus` has more than one entry.
    pub fn apply(pid: u32, workers: usize, percent: u32, cpus: &[usize]) -> Result<Budget, String> {
        let root = cpu_controller_mount()
            .ok_or("no cgroup v1 `cpu` controller is mounted; --worker-budget needs one")?;
        let tids = media_threads(pid, workers)?;
        let mut budget = Budget {
            pid,
            percent,
            workers: Vec::new(),
        };
        for (k, tid) in tids.into_iter().enumerate() {
            let dir = root.join(format!("frontdesk-media-load-{pid}-{k}"));
            std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            // Pushed at once, so that a failure below still removes what was made.
            budget.workers.push(Worker {
                tid,
                cpu: None,
                dir: dir.clone(),
            });
            write(&dir.join("cpu.cfs_period_us"), PERIOD_US)?;
            write(
                &dir.join("cpu.cfs_quota_us"),
                PERIOD_US * u64::from(percent) / 100,
            )?;
            write(&dir.join("tasks"), u64::from(tid))?;
            if cpus.len() > 1 {
                let cpu = cpus[k % cpus.len()];
                pin(tid, cpu)?;
                budget.workers[k].cpu = Some(cpu);
            }
        }
        Ok(budget)
    }

    /// Each worker's counters now.
    pub fn ticks(&self) -> Vec<WorkerTicks> {
        self.workers
            .iter()
            .map(|w| {
                let stat = std::fs::read_to_string(w.dir.join("cpu.stat")).unwrap_or_default();
                let field = |name: &str| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                        .unwrap_or(0)
                };
                WorkerTicks {
                    cpu_ns: crate::common::thread_cpu_ns(self.pid, w.tid),
                    periods: field("nr_periods"),
                    throttled: field("nr_throttled"),
                }
            })
            .collect()
    }
}

impl Drop for Budget {
    /// Removes the cgroups; they are empty once the server has exited (its owner kills and
    /// reaps it first), and a cgroup that is not empty yet gets a moment.
    fn drop(&mut self) {
        for w in &self.workers {
            let until = Instant::now() + Duration::from_secs(2);
            while std::fs::remove_dir(&w.dir).is_err() && w.dir.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn write(path: &Path, value: u64) -> Result<(), String> {
    std::fs::write(path, value.to_string()).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Where the cgroup v1 `cpu` controller is mounted, from `/proc/self/mountinfo`.
fn cpu_controller_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // "... mount-point options - fstype source super-options"
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let (fstype, _source, options) = (r.next()?, r.next()?, r.next()?);
        let has_cpu = options.split(',').any(|o| o == "cpu");
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup" && has_cpu).then(|| PathBuf::from(mount_point))
    })
}

/// The thread ids of `pid`'s media workers in the order they were started (ascending ids),
/// once there are `want` of them.
fn media_threads(pid: u32, want: usize) -> Result<Vec<u32>, String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let tids: Vec<u32> = crate::common::thread_ids(pid)
            .into_iter()
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .is_ok_and(|c| c.trim_end() == WORKER_COMM)
            })
            .collect();
        if tids.len() >= want {
            return Ok(tids);
        }
        if Instant::now() >= until {
            return Err(format!(
                "the server runs {} media workers, {want} expected",
                tids.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pins one thread to one CPU.
fn pin(tid: u32, cpu: usize) -> Result<(), String> {
    crate::common::taskset_pid(&[], &cpu.to_string(), tid)
        .then_some(())
        .ok_or_else(|| format!("taskset could not pin media worker {tid} to CPU {cpu}"))
}
