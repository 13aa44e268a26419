//! Every input the fuzzer (`cobrowse/fuzz`, target `sanitize`) ever failed on, replayed through
//! the same checks: no panic, a stable round trip, nothing executable after an independent
//! re-parse, no masked marker in the output. New findings go into `tests/corpus/fuzz/`.

use frontdesk_cobrowse::{sanitize_document, Policy};

mod common;

#[test]
fn every_past_fuzz_finding_passes_the_fuzz_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/fuzz");
    let mut failures = Vec::new();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/corpus/fuzz") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        let Ok(html) = std::str::from_utf8(&data) else {
            continue;
        };
        n += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = std::panic::catch_unwind(|| {
            let policy = Policy::default();
            let Ok(once) = sanitize_document(&policy, html) else {
                return Vec::new();
            };
            let twice = sanitize_document(&policy, once.as_str()).expect("output sanitizes");
            let mut problems = common::unsafe_things(once.as_str());
            if once.as_str() != twice.as_str() {
                problems.push("output is not stable".into());
            }
            let (masked, unmasked) = common::marker_occurrences(html, "FDMARK");
            if masked > 0 && unmasked == 0 && once.as_str().contains("FDMARK") {
                problems.push("masked marker leaked".into());
            }
            problems
        });
        match outcome {
            Ok(p) if p.is_empty() => {}
            Ok(p) => failures.push(format!("{name}: {p:?}")),
            Err(_) => failures.push(format!("{name}: panicked")),
        }
    }
    assert!(n > 0, "no inputs in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {n}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
