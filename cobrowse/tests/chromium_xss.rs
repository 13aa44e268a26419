//! The XSS corpus (`tests/corpus/xss.txt`) rendered in a real browser: every vector, sanitized
//! with the default policy, is opened in headless Chromium **with JavaScript enabled** (the
//! agent's viewer runs with scripts off; this is the stronger setting) and poked like a curious
//! user would (Tab through it, hover and click every element in every frame, follow links, submit
//! forms: `tests/browser/xss.mjs`). Nothing is judged by looking at the output: each vector is
//! rewritten so that running it, or letting it load what the policy forbids, makes a request to
//! a small HTTP server of this test, and the test asserts that no sanitized page made one.
//!
//! The rewriting, per vector N (the N-th line of the corpus that is not a comment) and mode M
//! (`raw` for the unsanitized control, `page` for the sanitized page):
//!
//! - every `alert(…)`, `prompt(…)`, `confirm(…)` and `msgbox(…)` becomes
//!   ``fetch(`http://127.0.0.1:PORT/js/M/N/`+6*7)`` (backticks, so that none of the vector's own
//!   quotes is broken), also inside `;base64,` data URLs (decoded, rewritten, encoded again). A
//!   request under `/js/` can only come from that code running (or from a URL that the sanitizer
//!   made out of script text, which would be as bad); one ending in `/42` proves that the
//!   expression was evaluated;
//! - `https://evil.example/` and `http://evil.example/` become `http://127.0.0.1:PORT/nav/M/N/`,
//!   `//evil.example/` becomes `//127.0.0.1:PORT/nav/M/N/`. In the corpus, evil.example stands
//!   for a URL that the default policy must never let the page load or navigate to: it only
//!   appears where the policy drops the URL (`meta` refresh, `iframe`/`frame`/`object`/`embed`/
//!   `script` sources, non-stylesheet `link`s, `base`, CSS `@import`, `ping`, form `action`s,
//!   external `use`, protocol-relative links…);
//! - `https://ok.example/` becomes `http://127.0.0.1:PORT/ok/M/N/`: a link or an image the
//!   policy keeps, so loading it or following it is legitimate. Such requests are counted, never
//!   failures.
//!
//! Other URLs the policy keeps (`http(s)` images, stylesheet links, CSS `url()`) are legitimate
//! loads: no vector points them at `/js/` or `/nav/`, so they can never count as a hit. The
//! verdict: no request under `/js/page/` or `/nav/page/`, every sanitized page loaded, and no
//! dialog opened by one.
//!
//! So that the test can fail, the same rewritten vectors are served unsanitized under `/raw/N`
//! to the same browser and harness: most of them must reach the beacon there (the thresholds
//! below), and so must one vector for each way the harness makes a vector act
//! ([`MUST_FIRE_RAW`]).
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules` (`./scripts/test` installs
//! them); without them the test says so on stderr and passes.

mod common;

use common::{sanitize_document, Policy};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the harness may take for the whole corpus before it is killed.
const HARNESS_DEADLINE: Duration = Duration::from_secs(240);
/// Least share of the script vectors whose unsanitized control must reach the beacon. Chromium
/// 148 runs 54 of the 88: the others are legacy (`vbscript:`, `expression()`, `javascript:` in
/// CSS, `object`/`embed`/`meta` refresh to `javascript:`…), inert (`template`, `textarea`…) or
/// mutation XSS that needs a sanitizer's serialize-and-parse round trip to come alive.
const MIN_RAW_JS_SHARE: f64 = 0.5;
/// Least share of the script-free load/navigation vectors whose control must reach the beacon
/// (23 of 25 in Chromium 148: not HTML imports and not `-moz-binding`).
const MIN_RAW_NAV_SHARE: f64 = 0.8;
/// Vectors whose unsanitized control must reach the beacon whatever else happens, one for each
/// way the harness makes a vector act (checked by content, not by number): an image error, a
/// click on a `javascript:` link, focus, hover, a click inside a `srcdoc` frame, a form submitted
/// by a click, a `meta` refresh, a frame's `src`.
const MUST_FIRE_RAW: [&str; 8] = [
    "<img src=x onerror=alert(1)>",
    r#"<a href="javascript:alert(1)">x</a>"#,
    "<input autofocus onfocus=alert(1)>",
    r#"<div onmouseover="alert(1)" style="width:100px;height:100px">x</div>"#,
    r#"<iframe srcdoc="<a href='javascript:alert(1)'>x</a>"></iframe>"#,
    r#"<form action="https://evil.example/form"><button>submit</button></form>"#,
    r#"<meta http-equiv="refresh" content="0;url=https://evil.example/refresh">"#,
    r#"<iframe src="https://evil.example/frame"></iframe>"#,
];

fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !harness_dir().join("node_modules/playwright-core").is_dir() {
        return Some("tests/browser/node_modules is missing (npm ci in tests/browser)".into());
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is missing (apt-get install nodejs)".into());
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Rewriting the vectors.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every `alert(…)`-like call (balanced parentheses) replaced by `payload`.
fn replace_calls(s: &str, payload: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    'outer: loop {
        let found = ["alert(", "prompt(", "confirm(", "msgbox("]
            .iter()
            .filter_map(|f| rest.find(f).map(|i| (i, f.len())))
            .min();
        let Some((i, len)) = found else { break };
        let mut depth = 1;
        for (j, c) in rest[i + len..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                out.push_str(&rest[..i]);
                out.push_str(payload);
                rest = &rest[i + len + j + 1..];
                continue 'outer;
            }
        }
        break;
    }
    out.push_str(rest);
    out
}

/// Base64 `data:` URL contents rewritten like the rest of the vector.
fn rewrite_base64(s: &str, payload: &str) -> String {
    const MARK: &str = ";base64,";
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(MARK) {
        let start = i + MARK.len();
        let len = rest[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
            .unwrap_or(rest.len() - start);
        let encoded = &rest[start..start + len];
        out.push_str(&rest[..start]);
        match b64_decode(encoded).and_then(|d| String::from_utf8(d).ok()) {
            Some(text) if replace_calls(&text, payload) != text => {
                out.push_str(&b64_encode(replace_calls(&text, payload).as_bytes()));
            }
            _ => out.push_str(encoded),
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// The vector with its payloads pointed at the beacon (see the module docs).
fn rewrite(vector: &str, origin: &str, mode: &str, n: usize) -> String {
    let payload = format!("fetch(`{origin}/js/{mode}/{n}/`+6*7)");
    let mut v = rewrite_base64(vector, &payload);
    v = replace_calls(&v, &payload);
    let nav = format!("{origin}/nav/{mode}/{n}/");
    let ok = format!("{origin}/ok/{mode}/{n}/");
    for scheme in ["https:", "http:"] {
        v = v.replace(&format!("{scheme}//evil.example/"), &nav);
        v = v.replace(&format!("{scheme}//ok.example/"), &ok);
    }
    // Protocol-relative URLs stay protocol-relative (the policy treats them as relative).
    let host = origin.trim_start_matches("http:");
    v = v.replace("//evil.example/", &format!("{host}/nav/{mode}/{n}/"));
    v.replace("//ok.example/", &format!("{host}/ok/{mode}/{n}/"))
}

fn document(n: usize, body: &str) -> String {
    // No `<body>` tag: an explicit one would make the parser ignore a `<frameset>`.
    format!("<!DOCTYPE html><html><head><title>vector {n}</title></head>{body}")
}

struct Vector {
    n: usize,
    original: String,
    /// Its payload makes a request under `/js/`.
    js: bool,
    /// It names a URL under `/nav/`.
    nav: bool,
    sanitized: String,
}

// ---------------------------------------------------------------------------------------------
// The beacon: serves the pages, records every request.

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    referer: String,
}

/// `(kind, mode, vector)` of a beacon path `/kind/mode/N/…`.
fn beacon_path(target: &str) -> Option<(&str, &str, usize)> {
    let mut parts = target.trim_start_matches('/').split('/');
    let kind = parts.next()?;
    let mode = parts.next()?;
    let n = parts.next()?.parse().ok()?;
    (matches!(kind, "js" | "nav" | "ok") && matches!(mode, "raw" | "page"))
        .then_some((kind, mode, n))
}

fn serve(listener: TcpListener, pages: HashMap<String, String>) -> Arc<Mutex<Vec<Request>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let pages = Arc::new(pages);
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (pages, log) = (pages.clone(), log2.clone());
            std::thread::spawn(move || answer(stream, &pages, &log));
        }
    });
    log
}

fn answer(mut s: TcpStream, pages: &HashMap<String, String>, log: &Mutex<Vec<Request>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return, // preconnected sockets that never ask anything
            Ok(k) => head.extend_from_slice(&chunk[..k]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let referer = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("referer"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or("").to_owned();
    log.lock().unwrap().push(Request {
        method,
        target,
        referer,
    });
    let (status, body) = match pages.get(&path) {
        Some(html) => ("200 OK", html.as_str()),
        // No content: a navigation there leaves the page where it is.
        None if beacon_path(&path).is_some() => ("204 No Content", ""),
        // Images with a relative `src` fail and fire their `onerror` (in the controls).
        None => ("404 Not Found", ""),
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// Runs `tests/browser/xss.mjs` over `paths`; returns its per-page lines and its final line.
fn run_harness(origin: &str, paths: &[String]) -> (Vec<Value>, Value) {
    let cfg = json!({ "base": origin, "paths": paths });
    let mut child = Command::new("node")
        .arg(harness_dir().join("xss.mjs"))
        .arg(cfg.to_string())
        .current_dir(harness_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().expect("piped");
    // Kept for the test's (captured) output: Debian's chromium wrapper is chatty.
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + HARNESS_DEADLINE;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    if v.get("error").is_some() {
                        println!("harness: {line}");
                    }
                    lines.push(v)
                }
                Err(_) => println!("harness: {line}"),
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the harness did not finish within {HARNESS_DEADLINE:?} ({} pages done)",
                    lines.len()
                );
            }
        }
    }
    let status = child.wait().expect("node exits");
    let errors = errors.join().unwrap_or_default();
    if !errors.trim().is_empty() {
        println!("harness stderr:\n{}", errors.trim_end());
    }
    let last = lines.pop().unwrap_or(Value::Null);
    assert!(
        status.success() && last["ok"] == true,
        "the harness failed ({status}): {last}"
    );
    (lines, last)
}

// ---------------------------------------------------------------------------------------------
// The test.

#[test]
fn xss_corpus_runs_nothing_in_chromium() {
    if let Some(why) = missing_prerequisite() {
        // Straight to stderr: the test harness does not capture it, so the skip is visible.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED xss_corpus_runs_nothing_in_chromium: {why}; ./scripts/test installs it"
        );
        return;
    }
    let started = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin = format!("http://{}", listener.local_addr().unwrap());

    let policy = Policy::default();
    let mut vectors = Vec::new();
    let mut pages = HashMap::new();
    for (i, original) in common::corpus("xss.txt").into_iter().enumerate() {
        let n = i + 1;
        let raw = document(n, &rewrite(&original, &origin, "raw", n));
        let page = document(n, &rewrite(&original, &origin, "page", n));
        let sanitized = sanitize_document(&policy, &page)
            .unwrap_or_else(|e| panic!("vector {n} does not sanitize: {e}\n{original}"))
            .into_string();
        vectors.push(Vector {
            n,
            js: page.contains(&format!("{origin}/js/")),
            nav: page.contains(&format!("{origin}/nav/")),
            original,
            sanitized: sanitized.clone(),
        });
        pages.insert(format!("/raw/{n}"), raw);
        pages.insert(format!("/page/{n}"), sanitized);
    }
    assert!(vectors.len() >= 80, "corpus too small");
    let log = serve(listener, pages);

    let paths: Vec<String> = vectors
        .iter()
        .flat_map(|v| [format!("/raw/{}", v.n), format!("/page/{}", v.n)])
        .collect();
    let (mut reports, last) = run_harness(&origin, &paths);
    // A sanitized page that did not load (a navigation timed out or was interrupted on a
    // loaded machine) proves nothing either way: it gets one more visit in a fresh browser.
    // Whatever it makes on that visit is logged with the rest and judged the same way.
    // So does a control that must fire and did not: its page or its click's navigation was
    // cut short the same way (this control then fails only if it misses twice).
    let fired_first: BTreeSet<usize> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| beacon_path(&r.target))
        .filter(|&(kind, mode, _)| kind != "ok" && mode == "raw")
        .map(|(_, _, n)| n)
        .collect();
    let unfired_controls = vectors
        .iter()
        .filter(|v| MUST_FIRE_RAW.contains(&v.original.as_str()) && !fired_first.contains(&v.n))
        .map(|v| format!("/raw/{}", v.n));
    let unloaded: Vec<String> = reports
        .iter()
        .filter(|r| r["loaded"] != true)
        .filter_map(|r| r["path"].as_str())
        .filter(|p| p.starts_with("/page/"))
        .map(str::to_owned)
        .chain(unfired_controls)
        .collect();
    if !unloaded.is_empty() {
        println!("visiting again, as they did not load (or, controls, did not fire): {unloaded:?}");
        let (again, _) = run_harness(&origin, &unloaded);
        reports.retain(|r| {
            !r["path"]
                .as_str()
                .is_some_and(|p| unloaded.iter().any(|u| u == p))
        });
        reports.extend(again);
    }
    let requests = log.lock().unwrap().clone();

    // Beacon requests per (mode, vector).
    let mut hits: BTreeMap<(&str, usize), Vec<&Request>> = BTreeMap::new();
    let mut ok_hits = 0;
    for r in &requests {
        if let Some((kind, mode, n)) = beacon_path(&r.target) {
            if kind == "ok" {
                ok_hits += 1;
            } else {
                hits.entry((mode, n)).or_default().push(r);
            }
        }
    }
    // Requests sanitized pages made besides themselves and the beacon (for the record: legitimate
    // loads, such as a form without `action` submitting to its own page).
    let other: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.referer.contains("/page/") && beacon_path(&r.target).is_none())
        .map(|r| format!("{} {} (from {})", r.method, r.target, r.referer))
        .collect();
    let report = |path: &str| reports.iter().find(|r| r["path"] == path);
    let by_n: BTreeMap<usize, &Vector> = vectors.iter().map(|v| (v.n, v)).collect();

    // What a sanitized page made: nothing, ever.
    let mut failures = Vec::new();
    for (&(mode, n), rs) in &hits {
        if mode == "page" {
            let v = by_n[&n];
            let targets: Vec<String> = rs
                .iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect();
            failures.push(format!(
                "vector {n} ran or loaded from its SANITIZED page: {targets:?}\n  input:     {}\n  sanitized: {}",
                v.original, v.sanitized
            ));
        }
    }
    for v in &vectors {
        let path = format!("/page/{}", v.n);
        match report(&path) {
            None => failures.push(format!("{path}: the harness did not report it")),
            Some(r) if r["loaded"] != true => failures.push(format!(
                "{path} did not load, so it proves nothing: {r}\n  sanitized: {}",
                v.sanitized
            )),
            Some(r) if r["dialogs"].as_u64() != Some(0) => failures.push(format!(
                "{path} opened a dialog: {r}\n  input:     {}\n  sanitized: {}",
                v.original, v.sanitized
            )),
            Some(_) => {}
        }
    }

    // The controls: the same vectors unsanitized, same browser, same harness.
    let fired: BTreeSet<usize> = hits
        .keys()
        .filter(|(mode, _)| *mode == "raw")
        .map(|&(_, n)| n)
        .collect();
    let js: Vec<&Vector> = vectors.iter().filter(|v| v.js).collect();
    let nav: Vec<&Vector> = vectors.iter().filter(|v| v.nav && !v.js).collect();
    let js_fired = js.iter().filter(|v| fired.contains(&v.n)).count();
    let nav_fired = nav.iter().filter(|v| fired.contains(&v.n)).count();
    let share = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    let not_fired = |set: &[&Vector]| -> Vec<usize> {
        set.iter()
            .filter(|v| !fired.contains(&v.n))
            .map(|v| v.n)
            .collect()
    };
    let clicks: u64 = reports.iter().filter_map(|r| r["clicks"].as_u64()).sum();
    let raw_dialogs: u64 = reports
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/raw/")))
        .filter_map(|r| r["dialogs"].as_u64())
        .sum();
    println!(
        "{} vectors ({} with script, {} with a load/navigation only) in {:.1} s ({} ms in the browser), {clicks} clicks\n\
         controls reaching the beacon unsanitized: {js_fired}/{} script vectors, {nav_fired}/{} load/navigation vectors, {raw_dialogs} dialogs\n\
         sanitized pages reaching the beacon: {} (legitimate loads and link navigations to ok.example: {ok_hits})\n\
         script controls that did not fire in this Chromium: {:?}\n\
         load/navigation controls that did not fire: {:?}\n\
         other requests from sanitized pages: {other:#?}",
        vectors.len(),
        js.len(),
        nav.len(),
        started.elapsed().as_secs_f64(),
        last["ms"],
        js.len(),
        nav.len(),
        hits.keys().filter(|(m, _)| *m == "page").count(),
        not_fired(&js),
        not_fired(&nav),
    );
    for must in MUST_FIRE_RAW {
        let v = vectors
            .iter()
            .find(|v| v.original == must)
            .unwrap_or_else(|| panic!("the corpus lost {must}"));
        if !fired.contains(&v.n) {
            failures.push(format!(
                "control: vector {} did not reach the beacon unsanitized: {must}",
                v.n
            ));
        }
    }
    if share(js_fired, js.len()) < MIN_RAW_JS_SHARE {
        failures.push(format!(
            "control: only {js_fired}/{} script vectors reached the beacon unsanitized",
            js.len()
        ));
    }
    if share(nav_fired, nav.len()) < MIN_RAW_NAV_SHARE {
        failures.push(format!(
            "control: only {nav_fired}/{} load/navigation vectors reached the beacon unsanitized",
            nav.len()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_rewriting_points_every_payload_at_the_beacon() {
    let o = "http://127.0.0.1:1";
    assert_eq!(
        rewrite("<img src=x onerror=alert(1)>", o, "page", 7),
        "<img src=x onerror=fetch(`http://127.0.0.1:1/js/page/7/`+6*7)>"
    );
    assert_eq!(
        rewrite("<a href=\"vbscript:msgbox(1)\">x</a>", o, "raw", 2),
        "<a href=\"vbscript:fetch(`http://127.0.0.1:1/js/raw/2/`+6*7)\">x</a>"
    );
    assert_eq!(
        rewrite("<img src=x:alert(alt) onerror=eval(src)>", o, "raw", 3),
        "<img src=x:fetch(`http://127.0.0.1:1/js/raw/3/`+6*7) onerror=eval(src)>"
    );
    assert_eq!(
        rewrite("x alert(document.domain) prompt((1)) y", o, "raw", 4),
        "x fetch(`http://127.0.0.1:1/js/raw/4/`+6*7) fetch(`http://127.0.0.1:1/js/raw/4/`+6*7) y"
    );
    // <script>alert(1)</script>, base64.
    let v = rewrite(
        "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">x</a>",
        o,
        "raw",
        5,
    );
    let encoded = v
        .split(";base64,")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(
        String::from_utf8(b64_decode(encoded).unwrap()).unwrap(),
        "<script>fetch(`http://127.0.0.1:1/js/raw/5/`+6*7)</script>"
    );
    // Base64 without a call stays as it was.
    let plain = "<use href=\"data:image/svg+xml;base64,PHN2ZyBpZD0ieCI+PC9zdmc+#x\"/>";
    assert_eq!(rewrite(plain, o, "raw", 6), plain);
    assert_eq!(
        rewrite(
            "<a href=\"https://ok.example/\" ping=\"https://evil.example/p\">",
            o,
            "page",
            8
        ),
        "<a href=\"http://127.0.0.1:1/ok/page/8/\" ping=\"http://127.0.0.1:1/nav/page/8/p\">"
    );
    assert_eq!(
        rewrite("<a href=\"//evil.example/\">", o, "page", 9),
        "<a href=\"//127.0.0.1:1/nav/page/9/\">"
    );
    for len in 0..8 {
        let data: Vec<u8> = (0..len).map(|i| i * 37 + 1).collect();
        assert_eq!(b64_decode(&b64_encode(&data)).unwrap(), data);
    }
    assert_eq!(b64_encode(b"<svg>"), "PHN2Zz4=");
    assert_eq!(beacon_path("/js/page/12/42"), Some(("js", "page", 12)));
    assert_eq!(beacon_path("/page/12"), None);
}
