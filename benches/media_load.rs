//! Media load: P publishers, S subscribers each, as real WebRTC peers (ICE, DTLS-SRTP, str0m)
//! against frontdesk and against Janus VideoRoom, on this machine, in the same run, alternating.
//!
//! ```sh
//! cargo bench --bench media_load -- [--servers frontdesk,janus] [--shapes 1x10,1x50,10x10,25pairs]
//!     [--seconds 10] [--warmup 2] [--rounds 1] [--fps 30] [--packets-per-frame 5] [--audio 50]
//!     [--server-cpus 0] [--tool-cpus 1] [--workers N] [--worker-budget PCT]
//!     [--ramp 5,10,20,40] [--floor 5] [--pacing tick|precise|tokio] [--publishers own|shared]
//!     [--receiver-threads 1] [--receiver-gro on|off] [--json results.json] [--check]
//!     [--target http://HOST:PORT --org ORG_ID --admin USER_ID]
//! ```
//!
//! A shape `PxS` is P calls, each with one publisher and S subscribers (frontdesk: the
//! visitor publishes; the agent and S − 1 admin watchers subscribe. Janus: one room per call,
//! one publisher, S subscriber handles). `Npairs` is N one-to-one calls in which both sides
//! publish and receive the other (Janus: two publishers per room, each subscribing to the
//! other).
//!
//! Publishers send video at `fps` frames of `packets-per-frame` 1,100-byte packets (a keyframe
//! has three times as many; one at the start and one per PLI/FIR, at most every 0.5 s), paced
//! evenly over the frame, and Opus-sized audio at `audio` packets/s. Each payload carries its
//! send time (taken as the publisher writes it, before its SRTP seal); a receiver's arrival
//! time is the kernel's stamp of when the datagram reached its socket (`SO_TIMESTAMPNS`), not
//! when this tool got round to reading it — at a fan-out of 50 the last reader
//! would otherwise wait for the tool to decrypt 49 other copies first. So latency is the trip
//! publisher → server → subscriber's socket on loopback: the publisher's seal, the server's
//! whole work and both kernel paths. A subscriber has received a keyframe when every packet
//! from a keyframe's first to its last (the marker) has arrived, in any order (a jitter
//! buffer's view: a retransmitted packet completes the frame).
//!
//! For frontdesk it also reads the server's own share of that trip from `/metrics`
//! (`frontdesk_media_forward_delay_seconds`: the kernel's arrival stamp on the server's socket
//! to each copy leaving it), so a tail can be told apart: the server's, or the tool's and the
//! host's. It is an upper bound (a batch's copies are timed from its earliest arrival to the
//! end of the send call that carried them), and its quantiles are interpolated within the
//! histogram's buckets. It also prints the share of copies that left in UDP GSO runs
//! (`frontdesk_media_datagrams_coalesced_total` against the packets forwarded), and the media
//! workers' loop turns over 1 ms in the window (`frontdesk_media_slow_turn*`) with the share
//! of their time that the copies they sent explain at the run's cost per copy: a tail made of
//! turns that had the work is the server's load; one made of turns that did not, the worker
//! losing its CPU.
//!
//! Per run it reports: delivered (forwarded) packets/s and bytes/s measured at the
//! subscribers; the server's CPU (the exact sum of its threads' on-CPU time from
//! `/proc/<pid>/task/*/schedstat` when no thread came or went in the window, else the 10 ms
//! ticks of `/proc/<pid>/stat`, which are printed beside it; both scaled to the window when
//! the tool read them late) and each core's busy time with its softirq and steal shares
//! (`/proc/stat`; steal is time the hypervisor gave away, so a run with steal on the server's
//! cores has its latency tail from the host); delivered packets per server CPU-second;
//! latency p50/p99/max; loss (packets sent in the window that did not arrive at every
//! subscriber); the growth of the server's anonymous resident memory (`RssAnon`: heap, stacks,
//! buffers) per subscriber, and beside it that of all its resident memory (`VmRSS`), which
//! also counts the pages of the server's own code that the first call reads in from disk,
//! shared and bounded by the binary (the figures before 2026-12-06 23:40 UTC were that one);
//! and whether every subscriber received a complete keyframe after it joined.
//!
//! `--server-cpus 0 --tool-cpus 1` runs the server on core 0 and this tool on core 1
//! (`taskset`), so a run measures what one core of the server forwards. `--ramp` multiplies
//! the packets per frame through the list given, on the first shape, to find the most one
//! server forwards without loss; at the end it names that step, the first step past it that
//! lost packets and whether the tool was at its own limit there, and the packets per frame
//! that give half of the maximum.
//!
//! `--pacing` says when publishers wake (`media_load/pacer.rs`): `tick` (the default), all
//! together on an exact 1 ms grid; `precise` (or `--precise-pacing`), each packet at its own
//! time; `tokio`, on tokio's timer, whose late ticks send two milliseconds' packets at once
//! (the figures before 2026-12-06 18:57 UTC were taken so). `--publishers own` (the default)
//! runs the publishers on a thread of their own at real-time priority, so that reading the
//! subscribers' copies does not hold their sends back (`media_load/threads.rs`); `shared`
//! runs them beside the receivers (on the tool's main thread unless `--receiver-threads`
//! says otherwise), as the figures before 2026-12-06 19:46 UTC.
//!
//! `--receiver-threads N` deals the subscribers (and one-to-one participants) to N threads,
//! so that the tool can use N cores: one thread of receivers spends about as much per copy as
//! the server does forwarding it, and runs out first against a server of more than one core.
//! With `--tool-cpus` naming N CPUs and `--server-cpus` others, a larger machine measures what
//! several of the server's cores forward (this project's 2 vCPU machine cannot). A run counts
//! as the tool's limit when its busiest thread or all its CPUs are nearly full.
//!
//! `--receiver-gro on` (the default) sets `UDP_GRO` on the peers' sockets, so that a run of
//! copies the server sent to one receiver in one UDP GSO send reaches it as one buffer, which
//! the tool cuts up; without it loopback cuts the run into datagrams and queues each on the
//! receiver's socket on the server's core, which on a network is the receiver's own machine's
//! work (`media_load/rxstamp.rs`). `off` measures as the figures before 2026-12-07 01:14 UTC.
//!
//! `--target http://HOST:PORT --org ORG_ID --admin USER_ID` loads a frontdesk that is already
//! running, on this machine or another, instead of starting one: a deployment's own server,
//! over its own network. The tool calls the admin API as that admin of that org (tokens
//! signed with the server's `FRONTDESK_JWT_SECRET` or `_FILE`, read from the environment),
//! makes a pool, a routing rule, a widget key, one agent per call and an admin agent of its
//! own for the watchers there, and deletes them (revokes the key) when each run ends — also
//! when it fails part way or the tool is stopped by SIGINT, SIGTERM or SIGHUP (those it was
//! not started with ignored, as `nohup` and a script's background job leave some): then it
//! deletes everything carrying its tag and exits as the signal would. A SIGKILL leaves them,
//! named by the tag the tool prints (`media_load/frontdesk.rs`). The org needs a seat per
//! call and one for the tool's admin; each agent made queues the server's invitation email
//! (to `@load.example`); a shape of S subscribers a call needs the server's
//! `FRONTDESK_MEDIA_MAX_WATCHERS` at S − 1 or more (the default is 8), and the tool's one
//! admin connection asks for at most 256 watchers in all (calls × (S − 1)). The server's CPU
//! and memory then come from its `/metrics` (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`): the whole process, other orgs' calls included, and
//! resident rather than anonymous memory, which a server that has run calls before may reuse
//! (so per subscriber it is a lower bound). The per-core figures printed are the tool's
//! machine's, and the peers bind to the address this machine reaches the server from.
//! Latency is the trip over that network, and a failed run leaves the server running. No
//! floor, Janus, pinning or worker budget with it: those need the server to be the tool's
//! child.
//!
//! `--worker-budget PCT` (with `--workers N`) caps each of frontdesk's media workers at PCT %
//! of one CPU, each in a cgroup of its own, pinned one to a CPU of `--server-cpus`
//! (`media_load/budget.rs`): one worker against two at the same budget shows what a second
//! core adds, on a machine whose cores the tool also needs. The run prints each worker's CPU,
//! how often its budget held it back, and how many calls each worker held.
//!
//! A run that fails part way (a peer that does not connect in time, a server that stops
//! answering at a ramp's top step) is reported where it failed, with the reason; its server
//! is stopped and its peers told to stop, the other runs' figures are printed and written as
//! usual (the JSON lists the failed runs under `failed`), a ramp stops at that step, and the
//! tool exits with code 1. `--check` makes it exit with code 3 when a run lost packets or left
//! a subscriber without a complete keyframe: the test suite runs the tool so
//! (`scripts/test`), for a few seconds on small shapes, so that a change that breaks it or the
//! media path it measures fails there and not in a load tester's hands.
//!
//! `--json PATH` also writes every run's figures to PATH as JSON (the machine, the command
//! line, the floor, then one object per run in the order they ran; units in the field names),
//! for a load tester's own scripts and records.
//!
//! First, for `--floor` seconds (5; 0 skips it), the tool measures the machine's own floor
//! under the latency figures (`media_load/floor.rs`): the trip through a thread on the server's
//! CPUs that only echoes datagrams, and the cost of one hypervisor exit.

#[path = "media_load/budget.rs"]
mod budget;
mod common;
#[path = "media_load/floor.rs"]
mod floor;
#[path = "media_load/frontdesk.rs"]
mod frontdesk;
#[path = "media_load/janus.rs"]
mod janus;
#[path = "media_load/pacer.rs"]
mod pacer;
#[path = "media_load/peer.rs"]
mod peer;
#[path = "media_load/rxstamp.rs"]
mod rxstamp;
#[path = "media_load/threads.rs"]
mod threads;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{anon_rss_kib, cpu_ns, cpu_ticks, rss_kib};
use pacer::Pacing;
use peer::{Peer, Rate, Role, Totals};

/// The shape of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `calls` calls, each with one publisher and `subscribers` subscribers.
    Broadcast { calls: usize, subscribers: usize },
    /// `calls` one-to-one calls, both sides publishing.
    Pairs { calls: usize },
}

impl Shape {
    fn parse(s: &str) -> Option<Shape> {
        if let Some(n) = s.strip_suffix("pairs") {
            return Some(Shape::Pairs {
                calls: n.parse().ok().filter(|&n| n > 0)?,
            });
        }
        let (p, sub) = s.split_once('x')?;
        Some(Shape::Broadcast {
            calls: p.parse().ok().filter(|&n| n > 0)?,
            subscribers: sub.parse().ok().filter(|&n| n > 0)?,
        })
    }

    pub fn calls(&self) -> usize {
        match *self {
            Shape::Broadcast { calls, .. } | Shape::Pairs { calls } => calls,
        }
    }

    pub fn subscribers(&self) -> usize {
        match *self {
            Shape::Broadcast { subscribers, .. } => subscribers,
            Shape::Pairs { .. } => 1,
        }
    }

    fn label(&self) -> String {
        match *self {
            Shape::Broadcast { calls, subscribers } => format!("{calls}×{subscribers}"),
            Shape::Pairs { calls } => format!("{calls}×2 (1:1)"),
        }
    }
}

/// The peers of a run as they are set up (each runs from the moment its answer is in), and
/// whatever must live as long as they do (signaling connections, the Janus session).
pub struct Setup {
    pub totals: Rc<RefCell<Totals>>,
    /// The publishers' thread (`--publishers own`), else publishers run with the receivers.
    pub publishers: Option<threads::PeerThread>,
    /// The receivers' threads (`--receiver-threads N`, N ≥ 2), else they run on this one.
    receivers: Vec<threads::PeerThread>,
    /// Peers dealt to the receivers' threads so far (the next goes to this one, modulo).
    dealt: usize,
    pub keep: Vec<Box<dyn std::any::Any>>,
    pub peers: usize,
    pub subscribers: usize,
}

impl Drop for Setup {
    /// A run that stopped part way (a panic in its setup) must not leave its peers sending:
    /// the publishers' thread runs at real-time priority on the tool's CPU until told to stop.
    fn drop(&mut self) {
        if let Ok(t) = self.totals.try_borrow() {
            t.stop();
        }
    }
}

impl Setup {
    pub fn new(totals: Rc<RefCell<Totals>>, own_thread: bool, receiver_threads: usize) -> Setup {
        let (publishers, receivers) = {
            let t = totals.borrow();
            let start = |name: &str, publishers| {
                threads::PeerThread::start(name, publishers, t.epoch, t.shared.clone(), t.pacing)
            };
            let publishers = own_thread.then(|| start("publishers", true));
            let receivers = if receiver_threads > 1 {
                (0..receiver_threads)
                    .map(|k| start(&format!("receivers-{k}"), false))
                    .collect()
            } else {
                Vec::new()
            };
            (publishers, receivers)
        };
        Setup {
            totals,
            publishers,
            receivers,
            dealt: 0,
            keep: Vec::new(),
            peers: 0,
            subscribers: 0,
        }
    }

    /// Numbers a new publisher that `subscribers` peers receive.
    pub fn publisher(&mut self, subscribers: usize) -> usize {
        self.totals.borrow_mut().add_publisher(subscribers as u64)
    }

    /// Starts a negotiated peer: a publisher on the publishers' thread if there is one; any
    /// other peer (and a publisher without that thread, `--publishers shared`) on the next
    /// receivers' thread in turn if there are some, else on this one.
    pub fn run(&mut self, peer: Peer, role: Role) {
        self.peers += 1;
        if let (Some(p), Role::Publish { .. }) = (&self.publishers, role) {
            p.run(peer, role);
            return;
        }
        if !matches!(role, Role::Publish { .. }) {
            self.subscribers += 1;
        }
        if self.receivers.is_empty() {
            tokio::task::spawn_local(peer.run(role, self.totals.clone()));
        } else {
            self.receivers[self.dealt % self.receivers.len()].run(peer, role);
            self.dealt += 1;
        }
    }

    /// Stops every peer of the run and waits for the other threads, adding what they counted
    /// to the totals. Dropping a `Setup` (a run that failed part way) stops them too.
    pub fn stop(&mut self) {
        self.totals.borrow().stop();
        let mut totals = self.totals.borrow_mut();
        for t in self
            .publishers
            .take()
            .into_iter()
            .chain(self.receivers.drain(..))
        {
            t.finish(&mut totals);
        }
    }

    /// Waits until every peer started so far is connected.
    pub async fn connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.totals.borrow().connected() < self.peers {
            assert!(
                Instant::now() < deadline,
                "{} of {} peers connected within 30 s",
                self.totals.borrow().connected(),
                self.peers
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[derive(Clone)]
struct Args {
    servers: Vec<String>,
    shapes: Vec<Shape>,
    seconds: u64,
    warmup: u64,
    rounds: usize,
    rate: Rate,
    server_cpus: Option<String>,
    tool_cpus: Option<String>,
    workers: Option<usize>,
    worker_budget: Option<u32>,
    pacing: Pacing,
    /// Publishers on a thread of their own (`--publishers own`) or on the tool's main one.
    own_publisher_thread: bool,
    /// Threads the receivers are dealt to (`--receiver-threads`; 1: the tool's main one).
    receiver_threads: usize,
    ramp: Vec<u32>,
    floor_seconds: u64,
    /// Where to write every run's figures as JSON (`--json PATH`), besides the printed report.
    json: Option<std::path::PathBuf>,
    /// Exit 3 if a run lost packets or left a subscriber without a keyframe (`--check`).
    check: bool,
    /// A frontdesk already running, elsewhere or here (`--target`, `--org`, `--admin`).
    target: Option<frontdesk::Target>,
}

/// What `--help` prints: the options, each in a line (the figures are explained at the top of
/// `benches/media_load.rs`).
const HELP: &str = "\
media load: P publishers and S subscribers each as WebRTC peers, against frontdesk and Janus
usage: cargo bench --bench media_load -- [options]

  --servers frontdesk,janus      servers to run, alternating (both)
  --shapes 1x10,1x50,10x10,25pairs
                                 PxS: P calls of one publisher and S subscribers; Npairs: N
                                 one-to-one calls (all four)
  --seconds N                    measured window of each run (10)
  --warmup N                     seconds between all peers connected and the window (2)
  --rounds N                     rounds of every shape, servers alternating first (1)
  --fps N --packets-per-frame N --audio N
                                 publishers' rate: frames/s, 1,100-byte packets a frame, Opus
                                 packets/s (30, 5, 50)
  --server-cpus LIST --tool-cpus LIST
                                 pin the server and this tool (taskset lists, e.g. 0 and 1)
  --workers N                    frontdesk's media workers (the server's default: one per CPU)
  --worker-budget PCT            cap each media worker at PCT % of a CPU (needs --workers)
  --ramp K1,K2,...               packets a frame, step by step, on the first shape: the most
                                 each server forwards without loss, and half of it
  --floor N                      seconds measuring the machine's own latency floor first (5)
  --pacing tick|precise|tokio    when publishers wake (tick: a shared 1 ms grid)
  --publishers own|shared        publishers on a real-time thread of their own, or not (own)
  --receiver-threads N           subscribers dealt to N threads, to load a server of several
                                 cores (1: on the tool's main thread)
  --receiver-gro on|off          receivers take the server's UDP GSO runs whole (on)
  --json PATH                    also write every run's figures as JSON
  --target http://HOST:PORT --org ORG_ID --admin USER_ID
                                 load a frontdesk already running (here or on another
                                 machine) as an admin of ORG_ID, with the server's
                                 FRONTDESK_JWT_SECRET(_FILE) from the environment; its CPU and
                                 memory come from its /metrics
  --check                        exit 3 if a run lost packets or left a subscriber without a
                                 keyframe (a smoke test for CI; not with --ramp)
  --help                         this

Exit codes: 0 all runs done; 1 a run failed part way (its reason printed, the others'
figures kept); 2 a bad command line; 3 with --check, a run lost packets or keyframes.
";

/// Says what is wrong with the command line, and how it goes, and exits.
fn usage(problem: &str) -> ! {
    eprintln!("media_load: {problem}");
    eprintln!("usage: cargo bench --bench media_load -- [options]   (--help lists them)");
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        servers: vec!["frontdesk".into(), "janus".into()],
        shapes: ["1x10", "1x50", "10x10", "25pairs"]
            .iter()
            .filter_map(|s| Shape::parse(s))
            .collect(),
        seconds: 10,
        warmup: 2,
        rounds: 1,
        rate: Rate {
            fps: 30,
            packets_per_frame: 5,
            audio_pps: 50,
        },
        server_cpus: None,
        tool_cpus: None,
        workers: None,
        worker_budget: None,
        pacing: Pacing::Tick,
        own_publisher_thread: true,
        receiver_threads: 1,
        ramp: Vec::new(),
        floor_seconds: 5,
        json: None,
        check: false,
        target: None,
    };
    let (mut target, mut org, mut admin) = (None, None, None);
    // Whether --servers was given: the default (both) does not apply to --target.
    let mut servers_given = false;
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let name = v[i].as_str();
        // Flags without a value; `cargo bench` passes `--bench` itself.
        match name {
            "--bench" => {
                i += 1;
                continue;
            }
            "--precise-pacing" => {
                a.pacing = Pacing::Precise;
                i += 1;
                continue;
            }
            "--check" => {
                a.check = true;
                i += 1;
                continue;
            }
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => {}
        }
        // Read by the option that takes it, so that an unknown option at the end of the line
        // is named as unknown rather than as missing its value.
        let val = || -> String {
            v.get(i + 1)
                .cloned()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        let num = || -> u64 {
            let val = val();
            val.parse()
                .unwrap_or_else(|_| usage(&format!("{name} {val:?}: not a whole number")))
        };
        match name {
            "--servers" => {
                servers_given = true;
                a.servers = val().split(',').map(str::to_owned).collect();
                if let Some(bad) = a
                    .servers
                    .iter()
                    .find(|s| !["frontdesk", "janus"].contains(&s.as_str()))
                {
                    usage(&format!(
                        "--servers: unknown server {bad:?} (frontdesk or janus)"
                    ));
                }
            }
            "--shapes" => {
                a.shapes = val()
                    .split(',')
                    .map(|s| {
                        Shape::parse(s).unwrap_or_else(|| {
                            usage(&format!(
                                "--shapes: bad shape {s:?} (PxS such as 1x10, or Npairs)"
                            ))
                        })
                    })
                    .collect()
            }
            "--seconds" => a.seconds = num().max(1),
            "--warmup" => a.warmup = num(),
            "--rounds" => a.rounds = num().max(1) as usize,
            "--fps" => a.rate.fps = num().clamp(1, 120) as u32,
            "--packets-per-frame" => a.rate.packets_per_frame = num().clamp(1, 200) as u32,
            "--audio" => a.rate.audio_pps = num().min(100) as u32,
            "--server-cpus" => a.server_cpus = Some(val()),
            "--tool-cpus" => a.tool_cpus = Some(val()),
            "--workers" => a.workers = Some(num().max(1) as usize),
            "--worker-budget" => a.worker_budget = Some(num().clamp(1, 100) as u32),
            "--ramp" => {
                a.ramp = val()
                    .split(',')
                    .map(|x| {
                        x.parse().unwrap_or_else(|_| {
                            usage(&format!("--ramp: {x:?} is not a whole number"))
                        })
                    })
                    .collect()
            }
            "--floor" => a.floor_seconds = num(),
            "--pacing" => {
                let val = val();
                a.pacing = Pacing::parse(&val)
                    .unwrap_or_else(|| usage(&format!("--pacing {val:?}: tick, precise or tokio")))
            }
            "--publishers" => {
                let val = val();
                a.own_publisher_thread = match val.as_str() {
                    "own" => true,
                    "shared" => false,
                    _ => usage(&format!("--publishers {val:?}: own or shared")),
                }
            }
            "--receiver-threads" => a.receiver_threads = num().clamp(1, 64) as usize,
            "--receiver-gro" => {
                let val = val();
                let on = match val.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => usage(&format!("--receiver-gro {val:?}: on or off")),
                };
                rxstamp::RECEIVER_GRO.store(on, std::sync::atomic::Ordering::Relaxed);
            }
            "--json" => a.json = Some(val().into()),
            "--target" => target = Some(val()),
            "--org" => org = Some(val()),
            "--admin" => admin = Some(val()),
            _ => usage(&format!("unknown option {name:?}")),
        }
        i += 2;
    }
    if let Some(url) = target {
        if !servers_given {
            a.servers = vec!["frontdesk".into()];
        }
        a.target = Some(remote_target(&a, &url, org, admin));
        a.floor_seconds = 0;
    } else if org.is_some() || admin.is_some() {
        usage("--org and --admin go with --target");
    }
    if a.check && !a.ramp.is_empty() {
        usage("--check is for runs that must not lose packets; a --ramp is meant to");
    }
    if a.worker_budget.is_some() && a.workers.is_none() {
        usage("--worker-budget needs --workers (how many media workers to put under it)");
    }
    a
}

/// Checks `--target URL` and what goes with it: the org and its admin, the server's token
/// secret from the environment (never from the command line, which other users can read), and
/// no option that needs the server to be the tool's child.
fn remote_target(
    a: &Args,
    url: &str,
    org: Option<String>,
    admin: Option<String>,
) -> frontdesk::Target {
    let base = url
        .strip_prefix("http://")
        .unwrap_or_else(|| {
            usage(&format!(
                "--target {url:?}: an http:// URL of frontdesk's listener (TLS belongs to a proxy in front; load the server behind it)"
            ))
        })
        .trim_end_matches('/');
    if base.is_empty() || base.contains('/') {
        usage(&format!("--target {url:?}: http://HOST:PORT, no path"));
    }
    if a.servers.iter().any(|s| s != "frontdesk") {
        usage("--target loads frontdesk only (--servers frontdesk)");
    }
    if a.server_cpus.is_some() || a.workers.is_some() || a.worker_budget.is_some() {
        usage("--server-cpus, --workers and --worker-budget need a server the tool starts; not with --target");
    }
    let org =
        org.unwrap_or_else(|| usage("--target needs --org ORG_ID (the organization to load)"));
    let admin = admin
        .unwrap_or_else(|| usage("--target needs --admin USER_ID (an admin of that organization)"));
    let env = ::frontdesk::config::process_env;
    // Read by the server's own code: the variable's bytes, or its file's less a line end.
    let secret = ::frontdesk::config::read_secret(&env, "FRONTDESK_JWT_SECRET")
        .unwrap_or_else(|e| usage(&e.to_string()))
        .map(|s| s.expose().to_vec())
        .unwrap_or_else(|| {
            usage("--target needs the server's FRONTDESK_JWT_SECRET (or FRONTDESK_JWT_SECRET_FILE) in the environment, to sign its agents' tokens")
        });
    frontdesk::Target {
        base: base.to_owned(),
        org,
        admin,
        jwt: common::Jwt {
            secret,
            issuer: env("FRONTDESK_JWT_ISSUER").unwrap_or_else(|| "frontdesk".into()),
            audience: env("FRONTDESK_JWT_AUDIENCE").unwrap_or_else(|| "authenticated".into()),
        },
    }
}

/// One CPU's jiffies from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct CoreTicks {
    /// Everything but idle and iowait (steal included: the core was not ours to use).
    busy: u64,
    /// Time the hypervisor ran something else while this guest CPU wanted to run.
    steal: u64,
    /// Software interrupts; on loopback this is where a datagram is delivered to its socket,
    /// charged to the core but to no process.
    softirq: u64,
    total: u64,
}

/// One CPU's share of a window, each part as a fraction of the window.
#[derive(Debug, Clone, Copy, Default)]
struct CoreShare {
    busy: f64,
    steal: f64,
    softirq: f64,
}

impl CoreTicks {
    fn share_since(&self, before: &CoreTicks) -> CoreShare {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let part = |a: u64, b: u64| a.saturating_sub(b) as f64 / total;
        CoreShare {
            busy: part(self.busy, before.busy),
            steal: part(self.steal, before.steal),
            softirq: part(self.softirq, before.softirq),
        }
    }
}

/// The CPUs a `taskset -c` list names ("0", "0,2", "0-1"); none for a list it cannot read.
fn cpu_list(list: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in list.split(',') {
        let mut ends = part
            .trim()
            .splitn(2, '-')
            .map(|x| x.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => v.push(a),
            (Some(Ok(a)), Some(Ok(b))) if a <= b && b - a < 4096 => v.extend(a..=b),
            _ => return Vec::new(),
        }
    }
    v
}

/// Each CPU's jiffies, from `/proc/stat`.
fn cpu_times() -> Vec<CoreTicks> {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let at = |i: usize| f.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal
            let total: u64 = f.iter().take(8).sum();
            CoreTicks {
                busy: total - at(3) - at(4),
                steal: at(7),
                softirq: at(6),
                total,
            }
        })
        .collect()
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Outcome {
    server: String,
    /// Which round of `--rounds` (the two servers' runs of one round are paired).
    round: usize,
    shape: Shape,
    rate: Rate,
    peers: usize,
    subscribers: usize,
    seconds: f64,
    delivered_video: u64,
    delivered_audio: u64,
    bytes: u64,
    expected: u64,
    /// The server's CPU in the window: its threads' exact on-CPU time (`schedstat`) when no
    /// thread came or went meanwhile, else from `/proc/<pid>/stat`'s 10 ms ticks, which are
    /// also kept to print beside it.
    server_cpu_s: f64,
    server_cpu_ticks_s: f64,
    /// How long the CPU readings actually spanned; the CPU figures are scaled from it to the
    /// window.
    cpu_read_s: f64,
    cores: Vec<CoreShare>,
    /// Steal on the server's CPUs (all CPUs when it is not pinned), as a share of them.
    server_steal: f64,
    tool_cpu_s: f64,
    /// The most CPU any one of the tool's threads used in the window, and the CPUs the tool
    /// may run on: with receivers on several threads, either can be where the tool runs out.
    tool_busiest_thread_s: f64,
    tool_cpus: usize,
    /// Whether the server and the tool may run on the same CPUs (lists that overlap, or one
    /// not pinned): a limit found so is the machine's, not the server's cores'.
    cpus_shared: bool,
    /// A server the tool did not start (`--target`): its CPU and memory are from its
    /// `/metrics`, and the cores listed are this machine's, not the server's.
    remote: bool,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Growth of the server's anonymous resident memory over the run's setup and window, per
    /// subscriber (`RssAnon`).
    rss_per_subscriber_kib: f64,
    /// The same for all of its resident memory (`VmRSS`), which also counts the pages of its
    /// own code and of files that the first call's paths read in.
    all_rss_per_subscriber_kib: f64,
    keyframes: (usize, usize),
    keyframe_wait_p99_ms: f64,
    keyframes_sent: u64,
    /// Latency of each packet's first copy, and the spread from its first copy to its last.
    first_p50_us: f64,
    first_p99_us: f64,
    spread_p50_us: f64,
    spread_p99_us: f64,
    /// How late publishers wrote their packets against their schedule (the tool's own delay).
    late_p50_us: f64,
    late_p99_us: f64,
    /// The server's own share of the trip, from its `/metrics` (frontdesk only): arrival at
    /// its socket to the copies leaving it.
    own_p50_us: Option<f64>,
    own_p99_us: Option<f64>,
    /// Of the copies forwarded, the share sent as segments of UDP GSO sends (frontdesk only;
    /// approximate, as the workers publish their counters once a second).
    coalesced_share: Option<f64>,
    /// The server's media workers' loop turns over 1 ms in the window, from its `/metrics`
    /// (frontdesk only; approximate at the edges, as the workers publish once a second).
    slow_turns: Option<frontdesk::SlowTurns>,
    connect_s: f64,
    /// How many calls each media worker held at the window's end (frontdesk's
    /// `frontdesk_media_worker_calls`).
    calls_per_worker: Vec<usize>,
    /// Under `--worker-budget`: each worker's CPU and throttling in the window, the budget
    /// and each worker's CPU.
    worker_use: Vec<budget::WorkerUse>,
    budget: Option<(u32, Vec<Option<usize>>)>,
}

/// Publishers' lateness p99 past which a run is marked as the tool's: the latency target is
/// 1 ms at p99, and a tool a millisecond behind sends two ticks' packets at once.
const TOOL_LATE_P99_US: f64 = 1000.0;

impl Outcome {
    /// Whether the tool's publishers kept their schedule badly enough to shape the traffic.
    fn tool_behind(&self) -> bool {
        self.late_p99_us > TOOL_LATE_P99_US
    }
    fn pps(&self) -> f64 {
        (self.delivered_video + self.delivered_audio) as f64 / self.seconds
    }
    fn video_pps(&self) -> f64 {
        self.delivered_video as f64 / self.seconds
    }
    /// The work the slow turns' copies explain: their count at the run's server CPU per copy.
    fn slow_turn_work_s(&self) -> Option<f64> {
        let t = self.slow_turns?;
        Some(t.sent as f64 / self.per_cpu_s().max(1e-9))
    }
    fn per_cpu_s(&self) -> f64 {
        (self.delivered_video + self.delivered_audio) as f64 / self.server_cpu_s.max(1e-9)
    }
    fn loss(&self) -> f64 {
        let got = self.delivered_video + self.delivered_audio;
        1.0 - got as f64 / self.expected.max(1) as f64
    }
    /// The server's CPU as a share of one core over the window.
    fn server_share(&self) -> f64 {
        self.server_cpu_s / self.seconds
    }
    /// The tool's CPU as a share of one core over the window.
    fn tool_share(&self) -> f64 {
        self.tool_cpu_s / self.seconds
    }
    /// A ramp step that lost packets, for the summary: how much, at what rate, and the two
    /// CPU shares (the caller closes the parenthesis).
    fn lossy_step(&self) -> String {
        format!(
            "{:.3} % lost at {:.0} packets/s (server {:.1} %, tool {:.0} %",
            100.0 * self.loss(),
            self.pps(),
            100.0 * self.server_share(),
            100.0 * self.tool_share()
        )
    }
    /// The busiest of the tool's threads, as a share of one core over the window.
    fn tool_busiest_share(&self) -> f64 {
        self.tool_busiest_thread_s / self.seconds
    }
    /// Whether the tool, not the server, may have set this run's limit: one of its threads
    /// or its CPUs nearly full, or its publishers behind their schedule.
    fn tool_at_limit(&self) -> bool {
        self.tool_busiest_share() > 0.95
            || self.tool_share() > 0.95 * self.tool_cpus.max(1) as f64
            || self.tool_behind()
    }

    /// Every figure of the run, for `--json`: units in the names (`_us`, `_kib`, `_s`), shares
    /// as fractions (0.25 is a quarter of one core).
    fn json(&self) -> serde_json::Value {
        let (kind, per_call) = match self.shape {
            Shape::Broadcast { subscribers, .. } => ("broadcast", subscribers),
            Shape::Pairs { .. } => ("pairs", 1),
        };
        let mut v = serde_json::json!({
            "server": self.server,
            "round": self.round,
            "shape": {"label": self.shape.label(), "kind": kind, "calls": self.shape.calls(),
                      "subscribers_per_call": per_call},
            "rate": {"fps": self.rate.fps, "packets_per_frame": self.rate.packets_per_frame,
                     "audio_packets_per_s": self.rate.audio_pps},
            "peers": self.peers,
            "subscribers": self.subscribers,
            "connect_s": self.connect_s,
            "window_s": self.seconds,
            "delivered_packets_per_s": self.pps(),
            "delivered_video_packets_per_s": self.video_pps(),
            "delivered_bytes_per_s": self.bytes as f64 / self.seconds,
            "loss": self.loss(),
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_share": self.server_share(),
            "server_cpu_ticks_s": self.server_cpu_ticks_s,
            "cpu_read_s": self.cpu_read_s,
            "server_steal": self.server_steal,
            "cores": self.cores.iter().map(|c| serde_json::json!(
                {"busy": c.busy, "steal": c.steal, "softirq": c.softirq})).collect::<Vec<_>>(),
            "packets_per_server_cpu_s": self.per_cpu_s(),
            "tool_cpu_s": self.tool_cpu_s,
            "latency_us": {"p50": self.p50_us, "p99": self.p99_us, "max": self.max_us,
                           "first_copy_p50": self.first_p50_us, "first_copy_p99": self.first_p99_us,
                           "fan_out_p50": self.spread_p50_us, "fan_out_p99": self.spread_p99_us},
            "in_server_us": {"p50": self.own_p50_us, "p99": self.own_p99_us},
            "publishers_late_us": {"p50": self.late_p50_us, "p99": self.late_p99_us},
            "tool_behind": self.tool_behind(),
            "gso_share": self.coalesced_share,
            "slow_turns": self.slow_turns.map(|t| serde_json::json!(
                {"turns": t.turns, "seconds": t.seconds, "received": t.received, "sent": t.sent,
                 "work_s": self.slow_turn_work_s()})),
            "memory_kib_per_subscriber": {"anonymous": self.rss_per_subscriber_kib,
                                          "resident": self.all_rss_per_subscriber_kib},
            "keyframes": {"received_by": self.keyframes.0, "subscribers": self.keyframes.1,
                          "wait_p99_ms": self.keyframe_wait_p99_ms, "sent": self.keyframes_sent},
            "calls_per_worker": self.calls_per_worker,
            "worker_budget": self.budget.as_ref().map(|(pct, cpus)| serde_json::json!({
                "percent": pct,
                "workers": self.worker_use.iter().zip(cpus).map(|(w, cpu)| serde_json::json!(
                    {"cpu": cpu, "cpu_s": w.cpu_s, "periods": w.periods, "throttled": w.throttled}))
                    .collect::<Vec<_>>(),
            })),
        });
        // Apart from the rest: one `json!` of them all passes the macro's recursion limit.
        v["tool_busiest_thread_cpu_s"] = self.tool_busiest_thread_s.into();
        v["tool_cpus"] = self.tool_cpus.into();
        v["tool_at_limit"] = self.tool_at_limit().into();
        v["cpus_shared"] = self.cpus_shared.into();
        v["remote"] = self.remote.into();
        if self.remote {
            // Not known from outside: only the whole resident size and the CPU seconds are.
            v["memory_kib_per_subscriber"]["anonymous"] = serde_json::Value::Null;
            v["server_cpu_ticks_s"] = serde_json::Value::Null;
        }
        v
    }

    fn print(&self) {
        println!(
            "{} {} at {} fps × {} pkt + {} audio/s: {} peers, {} subscribers, connected in {:.1} s",
            self.server,
            self.shape.label(),
            self.rate.fps,
            self.rate.packets_per_frame,
            self.rate.audio_pps,
            self.peers,
            self.subscribers,
            self.connect_s
        );
        println!(
            "  delivered {:.0} packets/s ({:.0} video), {:.2} MB/s; loss {:.3} %",
            self.pps(),
            self.video_pps(),
            self.bytes as f64 / self.seconds / 1e6,
            100.0 * self.loss()
        );
        let cores: Vec<String> = self
            .cores
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "cpu{i} {:.0} % (softirq {:.1} %, steal {:.1} %)",
                    100.0 * c.busy,
                    100.0 * c.softirq,
                    100.0 * c.steal
                )
            })
            .collect();
        // A server the tool did not start: its CPU is from its /metrics, the cores are ours.
        let (source, here) = if self.remote {
            (", from its /metrics".to_owned(), "this machine: ")
        } else {
            (
                format!("; {:.2} s by clock ticks", self.server_cpu_ticks_s),
                "",
            )
        };
        println!(
            "  server CPU {:.3} s in {:.1} s ({:.1} % of one core{source}); {here}{} ; tool CPU {:.2} s (its busiest thread {:.0} % of a core)",
            self.server_cpu_s,
            self.seconds,
            100.0 * self.server_share(),
            cores.join(", "),
            self.tool_cpu_s,
            100.0 * self.tool_busiest_share(),
        );
        if (self.cpu_read_s - self.seconds).abs() > 0.02 * self.seconds {
            println!(
                "  (the CPU readings spanned {:.2} s, as this tool woke late; scaled to the {:.0} s window)",
                self.cpu_read_s, self.seconds
            );
        }
        println!(
            "  {:.0} delivered packets per server CPU-second ({:.2} µs each)",
            self.per_cpu_s(),
            1e6 / self.per_cpu_s()
        );
        let memory = if self.remote {
            format!(
                "{:.0} KiB per subscriber (resident, from its /metrics)",
                self.all_rss_per_subscriber_kib
            )
        } else {
            format!(
                "{:.0} KiB per subscriber (anonymous; {:.0} with the pages of code and files it read in)",
                self.rss_per_subscriber_kib, self.all_rss_per_subscriber_kib
            )
        };
        println!(
            "  latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; server memory {memory}",
            self.p50_us, self.p99_us, self.max_us
        );
        println!(
            "  per packet: first copy p50 {:.0} µs, p99 {:.0} µs; first to last copy (the fan-out) p50 {:.0} µs, p99 {:.0} µs",
            self.first_p50_us, self.first_p99_us, self.spread_p50_us, self.spread_p99_us
        );
        println!(
            "  publishers' own lateness (written after the time it was meant to leave): p50 {:.0} µs, p99 {:.0} µs",
            self.late_p50_us, self.late_p99_us
        );
        if let (Some(p50), Some(p99)) = (self.own_p50_us, self.own_p99_us) {
            println!(
                "  the server's own share (its socket's arrival stamp to each copy sent, from /metrics): p50 {p50:.0} µs, p99 {p99:.0} µs"
            );
        }
        if let (Some(t), Some(work)) = (self.slow_turns, self.slow_turn_work_s()) {
            if t.turns > 0 {
                println!(
                    "  the server's loop turns over 1 ms: {} ({:.0} ms in all, {:.1} % of the window), sending {} datagrams: {:.0} ms of work at this run's cost per copy, so {:.0} % of their time the worker was not running its own work",
                    t.turns,
                    t.seconds * 1e3,
                    t.seconds / self.seconds * 100.0,
                    t.sent,
                    work * 1e3,
                    (1.0 - work / t.seconds.max(1e-9)).max(0.0) * 100.0
                );
            }
        }
        if let Some(share) = self.coalesced_share {
            println!(
                "  copies sent in UDP GSO runs (several to one receiver in one send): about {:.0} %",
                share.min(1.0) * 100.0
            );
        }
        if self.calls_per_worker.len() > 1 {
            let split: Vec<String> = self
                .calls_per_worker
                .iter()
                .map(|n| n.to_string())
                .collect();
            println!("  calls per media worker: {}", split.join(" / "));
        }
        if let Some((pct, cpus)) = &self.budget {
            for (k, w) in self.worker_use.iter().enumerate() {
                let cpu = cpus
                    .get(k)
                    .copied()
                    .flatten()
                    .map_or("any CPU".to_owned(), |c| format!("CPU {c}"));
                println!(
                    "  media worker {k} ({cpu}, budget {pct} % of a core): {:.1} % of a core, held back by its budget in {:.0} % of its periods",
                    100.0 * w.cpu_s / self.seconds,
                    100.0 * w.throttled as f64 / w.periods.max(1) as f64
                );
            }
        }
        println!(
            "  keyframe after join: {} of {} subscribers (p99 wait {:.0} ms); keyframes sent in the window: {}",
            self.keyframes.0, self.keyframes.1, self.keyframe_wait_p99_ms, self.keyframes_sent
        );
    }
}

enum Server {
    Frontdesk(Box<frontdesk::Frontdesk>),
    Janus(janus::Janus),
}

impl Server {
    /// The server's process, when the tool started it.
    fn pid(&self) -> Option<u32> {
        match self {
            Server::Frontdesk(f) => f.pid,
            Server::Janus(j) => Some(j.pid),
        }
    }

    /// What frontdesk's `/metrics` says now (nothing for Janus).
    async fn metrics(&self) -> frontdesk::Metrics {
        match self {
            Server::Frontdesk(f) => f.metrics().await,
            Server::Janus(_) => Default::default(),
        }
    }

    /// The server's CPU time and memory now: from `/proc` when the tool started it, else from
    /// its `/metrics`.
    async fn reading(&self) -> Reading {
        match (self.pid(), self) {
            (Some(pid), _) => {
                let (ns, threads) = cpu_ns(pid);
                Reading {
                    at: Instant::now(),
                    ticks: cpu_ticks(pid),
                    ns,
                    threads,
                    anon_kib: anon_rss_kib(pid),
                    rss_kib: rss_kib(pid),
                }
            }
            (None, Server::Frontdesk(f)) => {
                let asked = Instant::now();
                let m = f.metrics().await;
                // The server read its clock somewhere between the question and the answer.
                let at = asked + asked.elapsed() / 2;
                let cpu_s = m.process_cpu_s.unwrap_or_else(|| {
                    panic!("the server's /metrics has no process_cpu_seconds_total (a frontdesk before 2026-12-07?)")
                });
                let rss_kib = m.process_rss_bytes.unwrap_or(0) / 1024;
                Reading {
                    at,
                    ticks: (cpu_s * 100.0) as u64,
                    ns: (cpu_s * 1e9) as u64,
                    threads: Vec::new(),
                    // Only the whole resident size is known from outside.
                    anon_kib: rss_kib,
                    rss_kib,
                }
            }
            (None, Server::Janus(_)) => unreachable!("Janus always runs as the tool's child"),
        }
    }

    fn budget(&self) -> Option<&budget::Budget> {
        match self {
            Server::Frontdesk(f) => f.budget.as_ref(),
            Server::Janus(_) => None,
        }
    }
}

/// The server's CPU time (10 ms ticks and ns, with the threads the ns are summed over) and
/// memory at one moment.
struct Reading {
    at: Instant,
    ticks: u64,
    ns: u64,
    threads: Vec<u32>,
    anon_kib: u64,
    rss_kib: u64,
}

async fn run_one(a: &Args, name: &str, shape: Shape, rate: Rate) -> Outcome {
    let epoch = Instant::now();
    let server = match (name, &a.target) {
        ("frontdesk", Some(t)) => {
            let mut f = frontdesk::Frontdesk::remote(t).await;
            f.agents(shape.calls()).await;
            Server::Frontdesk(Box::new(f))
        }
        ("frontdesk", None) => {
            let mut f =
                frontdesk::Frontdesk::start(a.server_cpus.as_deref(), a.workers, shape.calls());
            if let (Some(pct), Some(n)) = (a.worker_budget, a.workers) {
                let cpus = a.server_cpus.as_deref().map(cpu_list).unwrap_or_default();
                let pid = f.pid.expect("a server the tool started");
                f.budget = Some(
                    budget::Budget::apply(pid, n, pct, &cpus)
                        .unwrap_or_else(|e| panic!("--worker-budget {pct}: {e}")),
                );
            }
            f.agents(shape.calls()).await;
            Server::Frontdesk(Box::new(f))
        }
        ("janus", _) => Server::Janus(janus::Janus::start(a.server_cpus.as_deref()).await),
        (other, _) => panic!("unknown server {other:?} (frontdesk or janus)"),
    };
    let before = server.reading().await;
    let t_setup = Instant::now();
    let totals = Totals::new(epoch);
    totals.borrow_mut().pacing = a.pacing;
    let mut setup = Setup::new(totals.clone(), a.own_publisher_thread, a.receiver_threads);
    match &server {
        Server::Frontdesk(f) => f.setup(&mut setup, shape, epoch, rate).await,
        Server::Janus(j) => j.setup(&mut setup, shape, epoch, rate).await,
    };
    setup.connected().await;
    if let Some(p) = &setup.publishers {
        if !p.realtime.load(std::sync::atomic::Ordering::Relaxed) {
            println!("  (the publishers' thread runs at normal priority: SCHED_FIFO was refused)");
        }
    }
    let (n_peers, n_subs) = (setup.peers, setup.subscribers);
    let connect_s = t_setup.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;

    let stamp = |t: Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
    let metrics0 = server.metrics().await;
    // The window is set before it opens: the publishers' thread must not write a packet
    // stamped inside it before it knows of it (its subscribers would count it, it would not).
    let window = Duration::from_secs(a.seconds);
    let t0 = Instant::now() + Duration::from_millis(20);
    totals.borrow().set_window(stamp(t0), stamp(t0 + window));
    tokio::time::sleep_until(t0.into()).await;
    let (cores0, tool0) = (cpu_times(), cpu_ticks(std::process::id()));
    let s0 = server.reading().await;
    let threads0 = common::thread_times(std::process::id());
    let workers0 = server.budget().map(|b| b.ticks()).unwrap_or_default();
    tokio::time::sleep_until((t0 + window).into()).await;
    let (cores1, tool1) = (cpu_times(), cpu_ticks(std::process::id()));
    let s1 = server.reading().await;
    let threads1 = common::thread_times(std::process::id());
    // The readings are taken when this thread gets to them, and a saturated tool wakes late:
    // they can span more than the window (5.4 s of a 5 s window at 10×10's maximum, which
    // read as 108 % of a core for a server pinned to one). CPU is scaled to the window, to go
    // with the packets counted in it.
    let cpu_read_s = s1
        .at
        .saturating_duration_since(s0.at)
        .as_secs_f64()
        .max(1e-3);
    let scale = window.as_secs_f64() / cpu_read_s;
    // The exact per-thread sum when no thread came or went in the window, else the ticks.
    let server_cpu_s = scale
        * if s0.threads == s1.threads && s1.ns >= s0.ns {
            (s1.ns - s0.ns) as f64 / 1e9
        } else {
            s1.ticks.saturating_sub(s0.ticks) as f64 / 100.0
        };
    let worker_use: Vec<budget::WorkerUse> = server
        .budget()
        .map(|b| {
            b.ticks()
                .iter()
                .zip(&workers0)
                .map(|(n, w)| {
                    let mut u = n.since(w);
                    u.cpu_s *= scale;
                    u
                })
                .collect()
        })
        .unwrap_or_default();
    let budget_of = server.budget().map(|b| {
        (
            b.percent,
            b.workers.iter().map(|w| w.cpu).collect::<Vec<_>>(),
        )
    });
    let after = server.reading().await;
    let metrics1 = server.metrics().await;
    let own = bucket_delta(&metrics0.forward_delay, &metrics1.forward_delay);
    let forwarded = metrics1.forwarded.saturating_sub(metrics0.forwarded);
    let slow_turns = matches!(server, Server::Frontdesk(_))
        .then(|| metrics1.slow_turns.since(&metrics0.slow_turns));
    let coalesced_share = (forwarded > 0)
        .then(|| metrics1.coalesced.saturating_sub(metrics0.coalesced) as f64 / forwarded as f64);
    // What was sent in the window may still be on its way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    totals.borrow().stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The other threads' counts first: a packet's copies may have arrived on several.
    setup.stop();
    setup.keep.clear();
    totals.borrow_mut().finish_copies();

    let cores: Vec<CoreShare> = cores0
        .iter()
        .zip(&cores1)
        .map(|(a, b)| b.share_since(a))
        .collect();
    let server_cores: Vec<&CoreShare> = match a.server_cpus.as_deref().map(cpu_list) {
        Some(list) if !list.is_empty() => list.iter().filter_map(|&i| cores.get(i)).collect(),
        _ => cores.iter().collect(),
    };
    // Not known for a server the tool did not start: the cores here are this machine's.
    let server_steal = if a.target.is_some() {
        f64::NAN
    } else {
        server_cores.iter().map(|c| c.steal).sum::<f64>() / server_cores.len().max(1) as f64
    };
    let t = totals.borrow();
    let expected: u64 = (0..t.sent_video.len())
        .map(|p| (t.sent_video[p] + t.sent_audio[p]) * t.subscribers_of[p])
        .sum();
    let mut waits = t.keyframe_wait_us.clone();
    waits.sort_unstable();
    let max_us = t
        .latency_us
        .iter()
        .rposition(|&c| c > 0)
        .map(|i| i as f64)
        .unwrap_or(f64::NAN);
    let out = Outcome {
        server: name.to_owned(),
        round: 0,
        shape,
        rate,
        peers: n_peers,
        subscribers: n_subs,
        seconds: window.as_secs_f64(),
        delivered_video: t.recv_video.iter().sum(),
        delivered_audio: t.recv_audio.iter().sum(),
        bytes: t.recv_bytes,
        expected,
        server_cpu_s,
        server_cpu_ticks_s: scale * s1.ticks.saturating_sub(s0.ticks) as f64 / 100.0,
        cpu_read_s,
        cores,
        server_steal,
        tool_cpu_s: scale * (tool1 - tool0) as f64 / 100.0,
        tool_busiest_thread_s: scale
            * threads1
                .iter()
                .filter_map(|(tid, ns)| {
                    let (_, before) = threads0.iter().find(|(t, _)| t == tid)?;
                    Some(ns.saturating_sub(*before) as f64 / 1e9)
                })
                .fold(0.0, f64::max),
        tool_cpus: a
            .tool_cpus
            .as_deref()
            .map(|l| cpu_list(l).len())
            .filter(|&n| n > 0)
            // The CPUs this process may run on (its affinity and any cgroup quota).
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        remote: a.target.is_some(),
        // A target on this machine shares its CPUs as far as the tool can tell.
        cpus_shared: if a.target.is_some() {
            peer::target_is_here()
        } else {
            match (a.server_cpus.as_deref(), a.tool_cpus.as_deref()) {
                (Some(s), Some(t)) => {
                    let tool = cpu_list(t);
                    cpu_list(s).iter().any(|c| tool.contains(c))
                }
                _ => true,
            }
        },
        p50_us: t.latency_quantile(0.5),
        p99_us: t.latency_quantile(0.99),
        first_p50_us: peer::quantile(&t.first_copy_us, 0.5),
        first_p99_us: peer::quantile(&t.first_copy_us, 0.99),
        spread_p50_us: peer::quantile(&t.spread_us, 0.5),
        spread_p99_us: peer::quantile(&t.spread_us, 0.99),
        late_p50_us: peer::quantile(&t.late_us, 0.5),
        late_p99_us: peer::quantile(&t.late_us, 0.99),
        own_p50_us: bucket_quantile(&own, 0.5),
        own_p99_us: bucket_quantile(&own, 0.99),
        coalesced_share,
        slow_turns,
        max_us,
        rss_per_subscriber_kib: after.anon_kib.saturating_sub(before.anon_kib) as f64
            / n_subs.max(1) as f64,
        all_rss_per_subscriber_kib: after.rss_kib.saturating_sub(before.rss_kib) as f64
            / n_subs.max(1) as f64,
        keyframes: (t.keyframe_ok, n_subs),
        keyframe_wait_p99_ms: common::percentile(&waits, 0.99),
        keyframes_sent: t.keyframes_sent,
        connect_s,
        calls_per_worker: metrics1.worker_calls,
        worker_use,
        budget: budget_of,
    };
    drop(t);
    drop(server);
    out
}

/// What a cumulative histogram (upper bound, count) gained from `before` to `after`.
fn bucket_delta(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, u64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
            (le, n.saturating_sub(was))
        })
        .collect()
}

/// Quantile `p` of a cumulative histogram, interpolated within its bucket (as Prometheus's
/// `histogram_quantile`); in the open last bucket, its lower bound. None when it is empty.
fn bucket_quantile(h: &[(f64, u64)], p: f64) -> Option<f64> {
    let total = h.last()?.1;
    if total == 0 {
        return None;
    }
    let want = p * total as f64;
    let (mut lo, mut below) = (0.0, 0u64);
    for &(le, n) in h {
        if n as f64 >= want {
            if !le.is_finite() {
                return Some(lo);
            }
            let inside = (n - below).max(1) as f64;
            return Some(lo + (le - lo) * (want - below as f64) / inside);
        }
        (lo, below) = (le, n);
    }
    Some(lo)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn table(outcomes: &[Outcome]) {
    println!("\n| P × S | server | delivered pkt/s | MB/s | server CPU | steal | pkt per CPU-s | p50 / p99 µs | in the server, p50 / p99 µs | loss | KiB per sub | keyframes | tool CPU, late p99 |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut behind = false;
    for o in outcomes {
        let own = match (o.own_p50_us, o.own_p99_us) {
            (Some(a), Some(b)) => format!("{a:.0} / {b:.0}"),
            _ => "–".into(),
        };
        let late = o.tool_behind();
        behind |= late;
        let steal = if o.server_steal.is_nan() {
            "–".to_owned()
        } else {
            format!("{:.1} %", 100.0 * o.server_steal)
        };
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.1} % | {steal} | {:.0} | {:.0} / {:.0} | {own} | {:.3} % | {:.0} | {}/{} | {:.0} %, {:.0} µs{} |",
            o.shape.label(),
            o.server,
            o.pps(),
            o.bytes as f64 / o.seconds / 1e6,
            100.0 * o.server_share(),
            o.per_cpu_s(),
            o.p50_us,
            o.p99_us,
            100.0 * o.loss(),
            o.rss_per_subscriber_kib,
            o.keyframes.0,
            o.keyframes.1,
            100.0 * o.tool_share(),
            o.late_p99_us,
            if late { " †" } else { "" },
        );
    }
    if behind {
        println!(
            "\n† the tool fell behind its own schedule (publishers' lateness p99 over {} µs): its \
             packets left in bursts, so that run's latency measures the tool as much as the server.",
            TOOL_LATE_P99_US
        );
    }
    let mut shapes: Vec<Shape> = outcomes.iter().map(|o| o.shape).collect();
    shapes.dedup();
    let fd: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.server == "frontdesk")
        .collect();
    let ja: Vec<&Outcome> = outcomes.iter().filter(|o| o.server == "janus").collect();
    if fd.is_empty() || ja.is_empty() {
        return;
    }
    println!("\n| P × S | pkt per CPU-s, frontdesk / Janus | per round (min–max) | server CPU, Janus / frontdesk | p99, Janus / frontdesk | memory per sub, Janus / frontdesk |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for s in shapes {
        let mean = |v: &[&Outcome], f: &dyn Fn(&Outcome) -> f64| {
            let xs: Vec<f64> = v.iter().filter(|o| o.shape == s).map(|o| f(o)).collect();
            xs.iter().sum::<f64>() / xs.len().max(1) as f64
        };
        // The two servers' runs of one round ran minutes apart at most: their ratio is the
        // steadier figure on a noisy machine, and the spread over rounds shows that noise.
        let per_round: Vec<f64> = fd
            .iter()
            .filter(|f| f.shape == s)
            .filter_map(|f| {
                let j = ja.iter().find(|j| j.shape == s && j.round == f.round)?;
                let r = f.per_cpu_s() / j.per_cpu_s();
                r.is_finite().then_some(r)
            })
            .collect();
        let spread = match (
            per_round.iter().copied().reduce(f64::min),
            per_round.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) => format!("{lo:.2}–{hi:.2}× ({} rounds)", per_round.len()),
            _ => "–".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s.label(),
            ratio(mean(&fd, &|o| o.per_cpu_s()), mean(&ja, &|o| o.per_cpu_s())),
            spread,
            ratio(
                mean(&ja, &|o| o.server_cpu_s),
                mean(&fd, &|o| o.server_cpu_s)
            ),
            ratio(mean(&ja, &|o| o.p99_us), mean(&fd, &|o| o.p99_us)),
            ratio(
                mean(&ja, &|o| o.rss_per_subscriber_kib),
                mean(&fd, &|o| o.rss_per_subscriber_kib)
            ),
        );
    }
}

fn main() {
    let a = args();
    let json_path = a.json.clone();
    let ramp = !a.ramp.is_empty();
    let check = a.check;
    if let Some(t) = &a.target {
        match peer::bind_towards(&t.base) {
            Ok(ip) => println!(
                "loading frontdesk at {} (org {}), peers on {ip}",
                t.base, t.org
            ),
            Err(e) => usage(&format!("--target {}: {e}", t.base)),
        }
        frontdesk::clean_up_on_signals(t);
    }
    if let Some(cpus) = &a.tool_cpus {
        let ok = common::taskset_pid(&["-a"], cpus, std::process::id());
        assert!(ok, "taskset could not pin the tool to CPUs {cpus}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let local = tokio::task::LocalSet::new();
    let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let all = outcomes.clone();
    // Runs that failed part way: reported where they failed, the others' figures kept.
    let failed: Rc<RefCell<Vec<Failure>>> = Rc::default();
    let failures = failed.clone();
    let floor = local.block_on(&rt, async move {
        println!(
            "media load on {} CPUs, {}; server CPUs {}, tool CPUs {}; publishers paced on {}; receivers on {}, taking GSO runs {}",
            // Counted from /proc/stat: this process may itself be pinned to fewer.
            cpu_times().len(),
            cpu_model(),
            a.server_cpus.as_deref().unwrap_or("any"),
            a.tool_cpus.as_deref().unwrap_or("any"),
            a.pacing.name(),
            match a.receiver_threads {
                1 => "the main thread".to_owned(),
                n => format!("{n} threads"),
            },
            if rxstamp::RECEIVER_GRO.load(std::sync::atomic::Ordering::Relaxed) {
                "whole (UDP_GRO)"
            } else {
                "datagram by datagram"
            },
        );
        let floor = if a.floor_seconds > 0 {
            let f = floor::measure(a.server_cpus.as_deref(), 200, a.floor_seconds).await;
            f.print();
            Some(f)
        } else {
            None
        };
        if !a.ramp.is_empty() {
            let shape = a.shapes[0];
            for name in &a.servers {
                for &k in &a.ramp {
                    let rate = Rate {
                        packets_per_frame: k,
                        ..a.rate
                    };
                    match guarded(&a, name, shape, rate).await {
                        Ok(o) => {
                            o.print();
                            all.borrow_mut().push(o);
                        }
                        Err(e) => {
                            eprintln!(
                                "media_load: the {name} run at {} pkt a frame failed ({e}); its ramp stops here",
                                k
                            );
                            failures.borrow_mut().push(Failure {
                                server: name.clone(),
                                shape,
                                rate,
                                round: 0,
                                reason: e,
                            });
                            break;
                        }
                    }
                }
            }
            return floor;
        }
        for round in 0..a.rounds {
            for &shape in &a.shapes {
                // Alternate which server goes first, round by round.
                let mut order = a.servers.clone();
                if round % 2 == 1 {
                    order.reverse();
                }
                for name in &order {
                    match guarded(&a, name, shape, a.rate).await {
                        Ok(mut o) => {
                            o.round = round;
                            o.print();
                            all.borrow_mut().push(o);
                        }
                        Err(e) => {
                            eprintln!(
                                "media_load: the {name} run of {} in round {} failed ({e}); going on with the next",
                                shape.label(),
                                round + 1
                            );
                            failures.borrow_mut().push(Failure {
                                server: name.clone(),
                                shape,
                                rate: a.rate,
                                round,
                                reason: e,
                            });
                        }
                    }
                }
            }
        }
        floor
    });
    // Interrupted (`--target`): the signal's cleanup ends the process when it is done.
    frontdesk::before_exit();
    let mut v = outcomes.borrow().clone();
    v.sort_by_key(|o| (format!("{:?}", o.shape), o.server.clone()));
    table(&v);
    if ramp {
        ramp_summary(&outcomes.borrow());
    }
    if let Some(f) = &floor {
        println!();
        f.print();
    }
    if let Some(path) = json_path {
        let doc = report_json(&outcomes.borrow(), floor.as_ref(), &failed.borrow());
        let text = serde_json::to_string_pretty(&doc).expect("figures serialize");
        match std::fs::write(&path, text + "\n") {
            Ok(()) => println!("\nfigures written to {}", path.display()),
            Err(e) => {
                eprintln!("media_load: cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    // `--check`: a run that lost packets or keyframes, and also one that received more than
    // was sent (a count gone wrong) or sent nothing at all.
    let short: Vec<String> = if check {
        v.iter()
            .filter(|o| {
                o.expected == 0 || o.loss().abs() > LOSSLESS || o.keyframes.0 < o.keyframes.1
            })
            .map(|o| {
                format!(
                    "{} {} round {}: {:.3} % lost of {} expected, keyframes {}/{}",
                    o.server,
                    o.shape.label(),
                    o.round + 1,
                    100.0 * o.loss(),
                    o.expected,
                    o.keyframes.0,
                    o.keyframes.1
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    if !short.is_empty() {
        eprintln!("media_load: --check: {}", short.join("; "));
    }
    if !failed.borrow().is_empty() {
        eprintln!(
            "media_load: {} run(s) failed part way (above); the figures are those of the others",
            failed.borrow().len()
        );
        std::process::exit(1);
    }
    if !short.is_empty() {
        std::process::exit(3);
    }
}

/// A loss share this small is a packet or two at a window's edge, not the server's: a ramp
/// step under it counts as without loss.
const LOSSLESS: f64 = 1e-4;

/// For `--ramp`, per server: the highest step without loss (in the order the steps ran), the
/// first step past it that lost packets, whether the tool kept up there, any lower step that
/// lost packets (the maximum is then not to be trusted from one run), and the
/// `--packets-per-frame` that gives half of that maximum, for the latency target's half load.
fn ramp_summary(runs: &[Outcome]) {
    let mut servers: Vec<&str> = runs.iter().map(|o| o.server.as_str()).collect();
    servers.dedup();
    for server in servers {
        let steps: Vec<&Outcome> = runs.iter().filter(|o| o.server == server).collect();
        let Some(best) = steps
            .iter()
            .filter(|o| o.loss() <= LOSSLESS)
            .max_by(|x, y| x.pps().total_cmp(&y.pps()))
        else {
            println!("\n{server}: every step of the ramp lost packets; start it lower");
            continue;
        };
        println!(
            "\n{server} {}: most without loss {:.0} packets/s ({:.0} video) at {:.1} % of the server's CPU, \
             p99 {:.0} µs, the tool at {:.0} % of a core (its busiest thread {:.0} %){}",
            best.shape.label(),
            best.pps(),
            best.video_pps(),
            100.0 * best.server_share(),
            best.p99_us,
            100.0 * best.tool_share(),
            100.0 * best.tool_busiest_share(),
            if best.tool_behind() { ", behind its schedule †" } else { "" },
        );
        match steps
            .iter()
            .find(|o| o.loss() > LOSSLESS && o.pps() > best.pps())
        {
            Some(lost) => println!(
                "  past it: {}): {}",
                lost.lossy_step(),
                if lost.tool_at_limit() {
                    "the tool was at its limit there, so this maximum may be the tool's"
                } else if lost.cpus_shared {
                    "the server and the tool share CPUs (--server-cpus, --tool-cpus), so this is the machine's limit, not the server's cores'"
                } else {
                    "the server's limit"
                }
            ),
            None => println!(
                "  no step past it lost packets: the maximum lies past the ramp's last step; take it higher"
            ),
        }
        // A lower step that lost packets while a higher one did not: the ramp is not a clean
        // staircase (the host, or the tool at its limit), and the maximum wants a second run.
        for lost in steps
            .iter()
            .filter(|o| o.loss() > LOSSLESS && o.pps() < best.pps())
        {
            println!(
                "  but a lower step lost packets: {}{}); run the ramp again before relying on the maximum",
                lost.lossy_step(),
                if lost.tool_at_limit() {
                    ", at its limit"
                } else {
                    ""
                },
            );
        }
        // Delivered packets/s = subscribers × (fps × packets per frame + audio); half of the
        // maximum in packets per frame, at the same fps and audio.
        let r = best.rate;
        let per_frame = (best.pps() / 2.0 / best.subscribers.max(1) as f64
            - f64::from(r.audio_pps))
            / f64::from(r.fps.max(1));
        println!(
            "  half of it: about --packets-per-frame {:.0} (or --ramp {:.0}) at --fps {} --audio {}",
            per_frame.max(1.0),
            per_frame.max(1.0),
            r.fps,
            r.audio_pps
        );
    }
}

/// One run on a task of its own, so that a run that fails part way (a peer that does not
/// connect in time, a server that stops answering at a ramp's top step) is reported as such
/// and does not take the figures of the runs before it down with it. Its server is stopped
/// and its peers told to stop as the task unwinds.
async fn guarded(a: &Args, name: &str, shape: Shape, rate: Rate) -> Result<Outcome, String> {
    let (a, name) = (a.clone(), name.to_owned());
    tokio::task::spawn_local(async move { run_one(&a, &name, shape, rate).await })
        .await
        .map_err(|e| {
            if !e.is_panic() {
                return e.to_string();
            }
            let p = e.into_panic();
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
}

/// The whole run for `--json`: the machine, the command line, the floor, and each run in the
/// order it ran.
fn report_json(
    runs: &[Outcome],
    floor: Option<&floor::Floor>,
    failed: &[Failure],
) -> serde_json::Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::json!({
        "tool": "media_load",
        "finished_unix_s": unix_s,
        "machine": {"cpus": cpu_times().len(), "cpu_model": cpu_model(), "kernel": kernel.trim()},
        "args": std::env::args().skip(1).filter(|a| a != "--bench").collect::<Vec<_>>(),
        "floor": floor.map(|f| serde_json::json!({
            "echo_datagrams_per_s": f.rate, "samples": f.samples,
            "p50_us": f.p50_us, "p99_us": f.p99_us, "max_us": f.max_us, "cpuid_ns": f.cpuid_ns,
        })),
        "runs": runs.iter().map(Outcome::json).collect::<Vec<_>>(),
        "failed": failed.iter().map(|f| serde_json::json!({
            "server": f.server, "round": f.round,
            "shape": {"label": f.shape.label(), "calls": f.shape.calls()},
            "rate": {"fps": f.rate.fps, "packets_per_frame": f.rate.packets_per_frame,
                     "audio_packets_per_s": f.rate.audio_pps},
            "reason": f.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A run that failed part way, for the report.
struct Failure {
    server: String,
    shape: Shape,
    rate: Rate,
    /// Counted from 0, as the runs' `round`.
    round: usize,
    reason: String,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into())
}
