//! Helpers shared by the load tools in `benches/`: reading the server's CPU and memory from
//! `/proc`, minting agent tokens, percentiles.
#![allow(dead_code)]

use serde_json::json;

/// The HS256 secret the load tools start the server with.
pub const JWT_SECRET: &str = "load-test-secret-0123456789abcdefghijklmnop";

/// Resident memory of a process, KiB: everything it has in RAM, its code and the files it
/// mapped included.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Resident anonymous memory of a process, KiB (`RssAnon`: heap, stacks, private buffers).
/// What grows with the peers a server holds; the pages of its own code it reads in when a
/// path first runs (`RssFile`) are shared, bounded by the binary, and not per anything.
pub fn anon_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second).
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// On-CPU time of every thread of a process, in nanoseconds (the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`), and the threads it was summed over, in order. Exact
/// where `cpu_ticks` counts 10 ms ticks (at 2 % of a core a 10 s window is 20 ticks, so one
/// tick is 5 %), but a thread that ends takes its time with it: a caller compares the thread
/// sets of its two readings before it trusts their difference.
pub fn cpu_ns(pid: u32) -> (u64, Vec<u32>) {
    let threads = thread_times(pid);
    (
        threads.iter().map(|&(_, ns)| ns).sum(),
        threads.into_iter().map(|(tid, _)| tid).collect(),
    )
}

/// Each thread of a process, in order, and its on-CPU time in nanoseconds.
pub fn thread_times(pid: u32) -> Vec<(u32, u64)> {
    thread_ids(pid)
        .into_iter()
        .map(|tid| (tid, thread_cpu_ns(pid, tid)))
        .collect()
}

/// The thread ids of a process, ascending (the order they were started in, short of wrap).
pub fn thread_ids(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// One thread's on-CPU time in nanoseconds (0 once it is gone).
pub fn thread_cpu_ns(pid: u32, tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `taskset -p -c CPUS ID` (add `-a` in `extra` for every thread of a process); true if it
/// worked.
pub fn taskset_pid(extra: &[&str], cpus: &str, id: u32) -> bool {
    std::process::Command::new("taskset")
        .args(extra)
        .args(["-p", "-c", cpus, &id.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// How a server checks its tokens: its HS256 secret, issuer and audience.
#[derive(Clone)]
pub struct Jwt {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
}

impl Jwt {
    /// What the servers the benches start use.
    pub fn local() -> Jwt {
        Jwt {
            secret: JWT_SECRET.as_bytes().to_vec(),
            issuer: "frontdesk".to_owned(),
            audience: "authenticated".to_owned(),
        }
    }

    /// A token for `sub` in `org` with `role`, valid two hours.
    pub fn token(&self, sub: &str, org: &str, role: &str) -> String {
        let claims = json!({"sub": sub, "aud": self.audience, "iss": self.issuer, "exp": now_s() + 7200,
                            "app_metadata": {"org_id": org, "role": role}});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
        .expect("HS256 encoding of plain claims")
    }
}

/// An agent token for the default issuer and audience, valid two hours.
pub fn token(sub: &str, org: &str, role: &str) -> String {
    Jwt::local().token(sub, org, role)
}

/// The `p` percentile of sorted microseconds, in milliseconds.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// What `frontdesk create-org` printed.
pub struct CreatedOrg {
    pub org: String,
    pub pool: String,
    pub widget_key: String,
}

/// Runs `BIN create-org` on `db` with an admin `admin` and room for `seats` agents.
pub fn create_org(bin: &str, db: &str, name: &str, seats: usize) -> CreatedOrg {
    let out = std::process::Command::new(bin)
        .args(["create-org", "--name", name, "--admin-user-id", "admin"])
        .args(["--admin-email", "a@load.example", "--seat-limit"])
        .arg(seats.to_string())
        .env("FRONTDESK_DATABASE_URL", db)
        .output()
        .expect("frontdesk create-org runs");
    assert!(
        out.status.success(),
        "create-org: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .expect("create-org output")
    };
    CreatedOrg {
        org: field("org_id"),
        pool: field("default_pool"),
        widget_key: field("widget_key"),
    }
}

/// Reads a `frontdesk serve --log-format json` child's stderr until it says where it listens;
/// the rest of its output is drained on a thread. Returns the HTTP address.
pub fn listening_addr(server: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stderr = server.stderr.take().expect("the server's stderr is piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let l = lines
            .next()
            .expect("the server exited before listening")
            .expect("server output");
        if l.contains("\"listening\"") {
            let v: serde_json::Value = serde_json::from_str(&l).expect("a JSON log line");
            break v["addr"].as_str().expect("listening addr").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}
