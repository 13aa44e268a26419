//! `cargo +nightly fuzz run sanitize` (from `cobrowse/`).
//!
//! For any UTF-8 input: no panic; the output sanitizes to itself (stable round trip); an
//! independent re-parse of the output has no script, event handler, dangerous URL or CSS; and a
//! marker (`FDMARK`) that only ever occurs in masked places of the input (under
//! `data-sensitive`, in a password input) never shows in the output. Seed it with the lines of
//! `tests/corpus/*.txt` and the dictionary `fuzz/sanitize.dict`.

#![no_main]

use frontdesk_cobrowse::{sanitize_document, Policy};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(html) = std::str::from_utf8(data) else {
        return;
    };
    let policy = Policy::default();
    // Typed errors (too large, too deep…) are fine; panics are not.
    let Ok(once) = sanitize_document(&policy, html) else {
        return;
    };
    let twice = sanitize_document(&policy, once.as_str()).expect("sanitized output must sanitize");
    assert_eq!(once.as_str(), twice.as_str(), "output is not stable");
    let problems = common::unsafe_things(once.as_str());
    assert!(problems.is_empty(), "{problems:?}");
    let (masked, unmasked) = common::marker_occurrences(html, "FDMARK");
    if masked > 0 && unmasked == 0 {
        assert!(!once.as_str().contains("FDMARK"), "masked marker leaked");
    }
});
