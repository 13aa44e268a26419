//! Sanitizer throughput against `ammonia::clean` and html5ever's bare parse (into the crate's
//! own arena sink, no sanitizing), on generated pages of ~50 KiB, ~500 KiB and ~2 MiB; and a
//! typical change batch through the relay (with a p50/p99 printout).
//!
//! Quick run: `cargo bench -j 1 -p frontdesk-cobrowse --bench sanitize -- --quick`

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use frontdesk_cobrowse::{sanitize_document, Policy, Relay};

/// A realistic shop page of about `target` bytes: nested divs, tables, forms with inputs
/// (some sensitive), links, images, inline styles, text. Deterministic.
fn page(target: usize) -> String {
    let mut s = String::with_capacity(target + 4096);
    s.push_str(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Shop — checkout</title>\
         <link rel=\"stylesheet\" href=\"https://cdn.example/site.css\">\
         <style>body{font-family:system-ui,sans-serif;margin:0}.card{border:1px solid #ddd;border-radius:4px}\
         .hero{background:url(https://cdn.example/hero.jpg) center/cover}@media (max-width:600px){.col{width:100%}}</style>\
         </head><body><header class=\"top\"><nav><ul class=\"menu\">",
    );
    for i in 0..8 {
        let _ = write!(
            s,
            "<li><a href=\"https://shop.example/c/{i}\" class=\"menu-item\">Category {i}</a></li>"
        );
    }
    s.push_str("</ul></nav></header><main id=\"main\">");
    let mut i = 0usize;
    while s.len() < target {
        let _ = write!(
            s,
            "<section class=\"section s{i}\" id=\"sec{i}\"><div class=\"row\"><div class=\"col card\" style=\"padding:8px 12px;color:#333;background-color:#fafafa\">\
             <h2 class=\"title\">Section {i}</h2><p>Lorem ipsum dolor sit amet, <a href=\"https://shop.example/p/{i}?ref=home&amp;x=1\" title=\"Product {i}\">product {i}</a> \
             consectetur <b>adipiscing</b> elit, sed do <em>eiusmod</em> tempor incididunt ut labore et dolore magna aliqua.\
             <img src=\"https://cdn.example/img/{i}.png\" srcset=\"https://cdn.example/img/{i}@2x.png 2x\" alt=\"Item {i}\" width=\"120\" height=\"80\" loading=\"lazy\"></p>\
             <div class=\"meta\"><span class=\"price\" data-price=\"{i}.99\">€{i}.99</span> <span class=\"stock\">In stock</span></div></div></div>"
        );
        if i % 3 == 0 {
            s.push_str("<table class=\"specs\"><thead><tr><th>Name</th><th>Value</th><th>Notes</th></tr></thead><tbody>");
            for r in 0..6 {
                let _ = write!(
                    s,
                    "<tr class=\"r{r}\"><td>Spec {r}</td><td style=\"text-align:right\">{}</td><td><a href=\"https://shop.example/help#s{r}\">help</a></td></tr>",
                    r * i
                );
            }
            s.push_str("</tbody></table>");
        }
        if i % 4 == 0 {
            let _ = write!(
                s,
                "<form class=\"checkout\" method=\"post\" action=\"/pay\"><fieldset><legend>Payment</legend>\
                 <label for=\"email{i}\">Email</label><input id=\"email{i}\" name=\"email\" type=\"email\" value=\"user{i}@example.com\" autocomplete=\"email\">\
                 <label for=\"pw{i}\">Password</label><input id=\"pw{i}\" name=\"password\" type=\"password\" value=\"hunter{i}\">\
                 <input name=\"cardnumber\" autocomplete=\"cc-number\" value=\"4111 1111 1111 1111\" placeholder=\"Card number\">\
                 <input name=\"cvc\" autocomplete=\"cc-csc\" value=\"123\"><input type=\"hidden\" name=\"csrf\" value=\"tok{i}\">\
                 <select name=\"country\"><option value=\"fr\" selected>France</option><option value=\"de\">Germany</option><option value=\"es\">Spain</option></select>\
                 <textarea name=\"notes\" rows=\"3\">Leave at the door, #{i}</textarea>\
                 <div data-sensitive class=\"saved-card\"><span>Visa ending 4242</span> <span>exp 12/29</span></div>\
                 <button type=\"submit\" class=\"btn primary\">Pay now</button></fieldset></form>"
            );
        }
        s.push_str("</section>\n");
        i += 1;
    }
    s.push_str("</main><footer><p>© Shop</p></footer></body></html>");
    s
}

fn documents(c: &mut Criterion) {
    let policy = Policy::default();
    let mut g = c.benchmark_group("document");
    for (label, size) in [
        ("50KiB", 50 * 1024),
        ("500KiB", 500 * 1024),
        ("2MiB", 2 * 1024 * 1024),
    ] {
        let html = page(size);
        g.throughput(Throughput::Bytes(html.len() as u64));
        if size > 1024 * 1024 {
            g.sample_size(10);
        } else {
            g.sample_size(20);
        }
        g.bench_with_input(
            BenchmarkId::new("cobrowse_sanitize", label),
            &html,
            |b, h| b.iter(|| sanitize_document(&policy, black_box(h)).expect("sanitize")),
        );
        g.bench_with_input(BenchmarkId::new("ammonia_clean", label), &html, |b, h| {
            b.iter(|| ammonia::clean(black_box(h)))
        });
        g.bench_with_input(
            BenchmarkId::new("html5ever_parse_only", label),
            &html,
            |b, h| b.iter(|| frontdesk_cobrowse::bench_parse_only(black_box(h))),
        );
    }
    g.finish();
}

/// A relay snapshot of ~600 nodes: a form with inputs and a list of items.
fn relay_snapshot() -> String {
    let mut nodes = vec![
        r#"{"id":1,"tag":"html"}"#.to_string(),
        r#"{"id":2,"parent":1,"tag":"body"}"#.to_string(),
        r#"{"id":3,"parent":2,"tag":"form"}"#.to_string(),
        r#"{"id":4,"parent":3,"tag":"input","attrs":{"type":"password","name":"pw"},"value":"hunter2"}"#.to_string(),
        r#"{"id":5,"parent":3,"tag":"input","attrs":{"name":"q","class":"search"},"value":""}"#.to_string(),
        r#"{"id":6,"parent":2,"tag":"ul","attrs":{"class":"items"}}"#.to_string(),
    ];
    let mut id = 100;
    for i in 0..200 {
        nodes.push(format!(
            r#"{{"id":{id},"parent":6,"tag":"li","attrs":{{"class":"item i{i}","data-i":"{i}"}}}}"#
        ));
        nodes.push(format!(r#"{{"id":{},"parent":{id},"tag":"a","attrs":{{"href":"https://shop.example/p/{i}"}}}}"#, id + 1));
        nodes.push(format!(
            r#"{{"id":{},"parent":{},"text":"Product number {i}"}}"#,
            id + 2,
            id + 1
        ));
        id += 3;
    }
    format!(
        r#"{{"baseUrl":"https://shop.example/","nodes":[{}]}}"#,
        nodes.join(",")
    )
}

const BATCH: &str = r#"{"changes":[
  {"type":"attr","id":100,"name":"class","value":"item i0 active"},
  {"type":"attr","id":103,"name":"class","value":"item i1"},
  {"type":"text","id":102,"text":"Product number 0 — now 20% off"},
  {"type":"value","id":5,"value":"running shoes"},
  {"type":"value","id":4,"value":"hunter22"},
  {"type":"pointer","x":412,"y":230},
  {"type":"scroll","x":0,"y":1200}
]}"#;

fn relay_batch(c: &mut Criterion) {
    let mut relay = Relay::new(Policy::default());
    relay
        .snapshot(relay_snapshot().as_bytes())
        .expect("snapshot");
    c.bench_function("relay/typical_change_batch", |b| {
        b.iter(|| relay.changes(black_box(BATCH.as_bytes())).expect("batch"))
    });
    // Latency distribution (criterion reports means): time single batches.
    let mut times: Vec<Duration> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            black_box(relay.changes(BATCH.as_bytes()).expect("batch"));
            t.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "relay/typical_change_batch latency over {} runs: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        at(0.50),
        at(0.99),
        times[times.len() - 1]
    );
}

criterion_group!(benches, documents, relay_batch);

/// Time this thread has spent on a CPU, in ns (Linux `schedstat`): unlike wall-clock time, it
/// does not count the time other processes hold the CPU.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `COBROWSE_BENCH_ONE=<ours|ammonia|parse>:<bytes>:<iterations>` runs just that, without
/// criterion, and prints its throughput by wall-clock and by on-CPU time (for `valgrind
/// --tool=callgrind`, whose instruction counts do not depend on how busy the machine is, and
/// for a busy machine); otherwise the criterion benches.
///
/// `COBROWSE_BENCH_DUMP=<out_dir>:<input>...` writes the sanitized form (or the error) of every
/// generated page, every line of each input that is a file, and every file of each input that
/// is a directory, one file each in `out_dir`: diff two builds' dumps to prove that an
/// optimization changed no output.
fn main() {
    if let Ok(spec) = std::env::var("COBROWSE_BENCH_DUMP") {
        let mut it = spec.split(':');
        let out = std::path::PathBuf::from(it.next().expect("out dir"));
        std::fs::create_dir_all(&out).expect("out dir");
        let mut inputs: Vec<(String, String)> = [50 * 1024, 500 * 1024, 2 * 1024 * 1024]
            .iter()
            .map(|&n| (format!("page-{n}"), page(n)))
            .collect();
        for input in it {
            let path = std::path::Path::new(input);
            let stem = path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into());
            if path.is_dir() {
                let mut files: Vec<_> = std::fs::read_dir(path)
                    .expect("input dir")
                    .map(|e| e.expect("dir entry").path())
                    .collect();
                files.sort();
                for f in files {
                    let bytes = std::fs::read(&f).expect("input file");
                    let name = f.file_name().expect("file name").to_string_lossy();
                    inputs.push((
                        format!("{stem}-{name}"),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ));
                }
            } else {
                let text = std::fs::read_to_string(path).expect("input file");
                for (i, line) in text.lines().enumerate() {
                    inputs.push((format!("{stem}-{i}"), line.to_string()));
                }
            }
        }
        let policy = Policy::default();
        for (name, html) in &inputs {
            let got = match sanitize_document(&policy, html) {
                Ok(h) => h.into_string(),
                Err(e) => format!("ERROR {e}"),
            };
            std::fs::write(out.join(name), got).expect("write output");
        }
        eprintln!("{} outputs in {}", inputs.len(), out.display());
        return;
    }
    if let Ok(spec) = std::env::var("COBROWSE_BENCH_ONE") {
        let mut it = spec.split(':');
        let which = it.next().unwrap_or("ours").to_string();
        let size: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(500 * 1024);
        let iters: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(1);
        let html = page(size);
        let policy = Policy::default();
        let t = Instant::now();
        let cpu = thread_cpu_ns();
        let mut out = 0usize;
        for _ in 0..iters {
            out += match which.as_str() {
                "ammonia" => ammonia::clean(black_box(&html)).len(),
                "parse" => frontdesk_cobrowse::bench_parse_only(black_box(&html)),
                _ => sanitize_document(&policy, black_box(&html))
                    .expect("sanitize")
                    .len(),
            };
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu_secs = thread_cpu_ns().zip(cpu).map(|(b, a)| (b - a) as f64 / 1e9);
        let mibs = |s: f64| (html.len() * iters) as f64 / s / (1024.0 * 1024.0);
        eprintln!(
            "{which} {} bytes x {iters}: {:.1} MiB/s wall, {} MiB/s on-CPU (output {out})",
            html.len(),
            mibs(secs),
            cpu_secs.map_or_else(|| "?".to_string(), |c| format!("{:.1}", mibs(c)))
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
