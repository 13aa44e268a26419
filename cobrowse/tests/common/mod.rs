//! Shared test helpers: an independent re-parse (html5ever's reference `RcDom`, not the crate's
//! own sink) and the safety checks every sanitized output must pass.

#![allow(dead_code, unused_imports)]

use html5ever::tendril::TendrilSink;
use html5ever::tree_builder::TreeBuilderOpts;
use html5ever::ParseOpts;
use markup5ever_rcdom::{Handle, NodeData, RcDom};

pub use frontdesk_cobrowse::{sanitize_document, Policy, MASK};

/// Lines of a corpus file (comments and blank lines skipped).
pub fn corpus(name: &str) -> Vec<String> {
    let path = format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Parse like the agent's viewer: scripting disabled.
pub fn reparse(html: &str) -> RcDom {
    let opts = ParseOpts {
        tree_builder: TreeBuilderOpts {
            scripting_enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    html5ever::parse_document(RcDom::default(), opts).one(html)
}

fn squash(v: &str) -> String {
    v.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A URL the viewer could execute or that would load a document.
pub fn dangerous_url(v: &str) -> bool {
    let s = squash(v);
    s.starts_with("javascript:")
        || s.starts_with("vbscript:")
        || s.starts_with("livescript:")
        || s.starts_with("data:text")
        || s.starts_with("data:image/svg")
        || s.starts_with("data:application")
}

/// Attributes whose value some browser loads, follows or submits to, on any element and in any
/// namespace (a superset of what the sanitizer treats as URLs).
pub fn is_url_attribute(name: &str) -> bool {
    matches!(
        name,
        "href"
            | "src"
            | "action"
            | "formaction"
            | "poster"
            | "background"
            | "data"
            | "codebase"
            | "cite"
            | "longdesc"
            | "usemap"
            | "dynsrc"
            | "lowsrc"
            | "ping"
            | "manifest"
            | "icon"
            | "profile"
            | "classid"
            | "archive"
    )
}

/// Dangerous CSS.
///
/// Where each construct can act: a script scheme as a value (after `(`, a quote or `:`, as in
/// `url(javascript:…)`, never as a property name like `vbscript:ex`), `expression(`, `@import`,
/// the `-moz-binding`/`behavior` properties, and escapes of `url(`. (The fuzzer found that plain
/// substring checks flagged inert text such as the unknown property `usht: e-moz-bindingi`.)
pub fn dangerous_css(v: &str) -> bool {
    let s = squash(v);
    let scheme_as_value = ["javascript:", "vbscript:", "livescript:"].iter().any(|p| {
        s.match_indices(p).any(|(i, _)| {
            matches!(
                s[..i].chars().next_back(),
                Some('(' | '\'' | '"' | ':' | ',')
            )
        })
    });
    let property = |name: &str| {
        s.match_indices(name).any(|(i, _)| {
            s[i + name.len()..].starts_with(':')
                && (i == 0 || matches!(s[..i].chars().next_back(), Some(';' | '{')))
        })
    };
    scheme_as_value
        || s.contains("expression(")
        || s.contains("@import")
        || property("-moz-binding")
        || property("behavior")
        || property("-ms-behavior")
        || s.contains("\\75rl(")
        || s.contains("\\55rl(")
}

/// Everything that must never be in a sanitized output, checked on an independent parse of it
/// (template contents and `srcdoc` documents included). Returns the problems found.
pub fn unsafe_things(html: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dom = reparse(html);
    walk(&dom.document, &mut problems, 0);
    problems
}

fn walk(node: &Handle, problems: &mut Vec<String>, nesting: usize) {
    if let NodeData::Element {
        name,
        attrs,
        template_contents,
        ..
    } = &node.data
    {
        let local = name.local.to_string().to_ascii_lowercase();
        if matches!(
            local.as_str(),
            "script"
                | "noscript"
                | "object"
                | "embed"
                | "applet"
                | "base"
                | "meta"
                | "frame"
                | "frameset"
                | "xmp"
                | "plaintext"
                | "noembed"
                | "noframes"
        ) {
            problems.push(format!("element <{local}>"));
        }
        for a in attrs.borrow().iter() {
            let an = a.name.local.to_string().to_ascii_lowercase();
            let v: &str = &a.value;
            if an.starts_with("on") {
                problems.push(format!("event handler {an}"));
            }
            if matches!(
                an.as_str(),
                "action" | "formaction" | "target" | "formtarget" | "ping" | "http-equiv"
            ) {
                problems.push(format!("attribute {an}"));
            }
            if an == "style" && dangerous_css(v) {
                problems.push(format!("css in style: {v}"));
            }
            if an == "srcdoc" {
                if nesting > 5 {
                    problems.push("srcdoc nested too deep".into());
                }
                let inner = reparse(v);
                walk(&inner.document, problems, nesting + 1);
                continue;
            }
            // Only where a browser takes the value as a URL: `title="javascript:…"` is text.
            // (A fuzzer found that this check on every attribute flagged inert text.)
            if is_url_attribute(&an) && dangerous_url(v) {
                problems.push(format!("dangerous url in {an}: {v}"));
            }
            if an == "srcset" && v.split(',').any(dangerous_url) {
                problems.push(format!("dangerous srcset {v}"));
            }
            let animation = matches!(
                local.as_str(),
                "animate" | "set" | "animatemotion" | "animatetransform"
            );
            if animation
                && matches!(an.as_str(), "values" | "to" | "from" | "by")
                && squash(v).contains("javascript:")
            {
                problems.push(format!("animation value {v}"));
            }
        }
        if local == "iframe" && attrs.borrow().iter().any(|a| &*a.name.local == "src") {
            problems.push("iframe src".into());
        }
        if local == "style" {
            let text: String = node
                .children
                .borrow()
                .iter()
                .filter_map(|c| match &c.data {
                    NodeData::Text { contents } => Some(contents.borrow().to_string()),
                    _ => None,
                })
                .collect();
            if dangerous_css(&text) {
                problems.push(format!("css in <style>: {text}"));
            }
            if !node
                .children
                .borrow()
                .iter()
                .all(|c| matches!(c.data, NodeData::Text { .. }))
            {
                problems.push("markup inside <style>".into());
            }
        }
        if let Some(t) = template_contents.borrow().as_ref() {
            walk(t, problems, nesting);
        }
    }
    for c in node.children.borrow().iter() {
        walk(c, problems, nesting);
    }
}

/// Sanitize with the default policy, asserting the result is stable under a second pass.
pub fn clean_stable(html: &str) -> String {
    let policy = Policy::default();
    let once = sanitize_document(&policy, html).expect("sanitize");
    let twice = sanitize_document(&policy, once.as_str()).expect("sanitize again");
    assert_eq!(
        once.as_str(),
        twice.as_str(),
        "not stable for input {html:?}"
    );
    once.into_string()
}

/// Where `marker` occurs in the (independently parsed) input: `(masked, unmasked)` counts.
/// Masked means: a text node under an element with `data-sensitive` (not `"false"`) or an
/// `input type=password`, or a maskable attribute (`value`, `placeholder`, `title`, `alt`,
/// `label`, `aria-*`, `data-*`) of such an element — a subset of the crate's rules, so a marker
/// found only there must never reach the output.
pub fn marker_occurrences(input: &str, marker: &str) -> (usize, usize) {
    let dom = reparse(input);
    let mut counts = (0, 0);
    occurrences(&dom.document, marker, false, &mut counts);
    counts
}

fn occurrences(node: &Handle, marker: &str, masked: bool, counts: &mut (usize, usize)) {
    let mut masked = masked;
    match &node.data {
        NodeData::Text { contents } if contents.borrow().contains(marker) => {
            if masked {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        NodeData::Comment { contents } if contents.contains(marker) => counts.1 += 1,
        NodeData::Element {
            name,
            attrs,
            template_contents,
            ..
        } => {
            let attrs = attrs.borrow();
            let get = |n: &str| {
                attrs
                    .iter()
                    .find(|a| &*a.name.local == n)
                    .map(|a| a.value.to_string())
            };
            if get("data-sensitive").is_some_and(|v| !v.trim().eq_ignore_ascii_case("false")) {
                masked = true;
            }
            if &*name.local == "input"
                && get("type").is_some_and(|t| t.trim().eq_ignore_ascii_case("password"))
            {
                masked = true;
            }
            for a in attrs.iter() {
                if !a.value.contains(marker) {
                    continue;
                }
                let n = a.name.local.to_string().to_ascii_lowercase();
                let maskable = matches!(
                    n.as_str(),
                    "value" | "placeholder" | "title" | "alt" | "label"
                ) || n.starts_with("aria-")
                    || n.starts_with("data-");
                if masked && maskable && a.name.prefix.is_none() {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
            if let Some(t) = template_contents.borrow().as_ref() {
                occurrences(t, marker, masked, counts);
            }
        }
        _ => {}
    }
    for c in node.children.borrow().iter() {
        occurrences(c, marker, masked, counts);
    }
}

/// A small deterministic PRNG (xorshift64*), for generated inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
