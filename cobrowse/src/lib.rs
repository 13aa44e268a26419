//! Co-browse core: the server-side sanitizer that masks every sensitive field and removes
//! everything that could run or navigate in the agent's browser — a pure function of a
//! [`Policy`] and its input, built on html5ever — and the sans-IO [`Relay`] that keeps one
//! call's node tree, with sticky per-node sensitivity, and turns the widget's snapshots and
//! change batches into [`AgentFrame`]s. Only a [`SanitizedHtml`], which nothing outside this
//! crate can construct, can be relayed to an agent. The wire formats are in `PROTOCOL.md`.
//!
//! ```
//! use frontdesk_cobrowse::{sanitize_document, Policy, MASK};
//!
//! let html = r#"<form><input type="password" value="hunter2"><script>steal()</script></form>"#;
//! let clean = sanitize_document(&Policy::default(), html).unwrap();
//! assert!(clean.as_str().contains(&format!(r#"value="{MASK}""#)));
//! assert!(!clean.as_str().contains("hunter2"));
//! assert!(!clean.as_str().contains("script"));
//! ```
//!
//! # What is masked
//!
//! A masked element has its whole subtree masked: every text node becomes [`MASK`] (a
//! whitespace-only one becomes a single space), every `input` gets `value` = [`MASK`] (even when
//! empty, so neither length nor emptiness leaks), a `textarea`'s content becomes [`MASK`], the
//! attributes `value`, `placeholder`, `title`, `alt`, `label`, `abbr`, `summary`, `content`,
//! `aria-*` and `data-*` become [`MASK`], `checked` and `selected` are dropped (which option or
//! box was chosen would leak), URL attributes and `srcdoc` are dropped, inline CSS keeps no
//! `url()`, and the element gets `data-fd-masked=""`. An element is masked when:
//!
//! - it is an `input` whose `type` is `password`, `tel` or `hidden` (trimmed, any case; entities
//!   are decoded by the parser, so `pass&#119;ord` counts);
//! - its `autocomplete` has a token `cc-*`, `current-password`, `new-password` or
//!   `one-time-code` (space-separated tokens, any case, so `section-a billing cc-number`
//!   counts);
//! - its `name`, `id` or `autocomplete` matches the **name heuristics**: the value is split into
//!   lowercase words (on every non-alphanumeric character, at `camelCase` humps, between letters
//!   and digits), and a word, or two or three adjacent words joined, is one of `cvv`, `cvc`,
//!   `csc`, `cvn`, `iban`, `ssn`, `cardnumber`, `cardnum`, `cardno`, `ccnumber`, `ccnum`, `ccno`,
//!   `creditcard`, `securitycode`, `socialsecurity`, `password`, `passwd`, `pwd`, `onetimecode`
//!   (or a word added with [`PolicyBuilder::sensitive_name`]). So `card-number`, `cardNumber`,
//!   `cc_number`, `cvv2` and `user[ssn]` match; `businessname` does not;
//! - it has `data-sensitive` with any value but `"false"`, or `data-fd-masked`;
//! - an ancestor is masked;
//! - (relay only) its node id was ever masked before in the call (sticky sensitivity).
//!
//! # What is removed
//!
//! - with their subtree, in every namespace: `script`, `noscript`, `base`, `meta`, `object`,
//!   `embed`, `applet`, `frame`, `frameset`, `noembed`, `noframes`, `xmp`, `plaintext`,
//!   `param`, `portal`, `fencedframe`, `selectedcontent`, `keygen`, `isindex`, `handler`,
//!   `listener`, `bgsound`, `permission`; comments, doctypes and processing instructions;
//! - SVG and MathML content that does not belong (DOMPurify's namespace rules): an `svg` only
//!   under HTML, a MathML text integration point or `annotation-xml`; a `math` only under HTML
//!   or an SVG HTML integration point; other SVG/MathML elements only under their own namespace
//!   and only if allow-listed; HTML elements under SVG only inside `foreignObject`/`desc`/
//!   `title`, under MathML only inside `mi`/`mo`/`mn`/`ms`/`mtext` or an HTML
//!   `annotation-xml`; an HTML element named like an SVG- or MathML-only element;
//! - unknown HTML elements that are not custom elements are written as `span` (same parsing),
//!   a `form` nested in a `form` as `div` (the parser would drop it: mXSS);
//! - attributes: every `on*` handler, `action`, `formaction`, `target`, `formtarget`, `ping`,
//!   `download`, `is`, `nonce`, `integrity`, `http-equiv`, `xmlns*`, `xml:base`, `sandbox`,
//!   `allow*`, `popovertarget`, `command(for)`, `shadowroot*`, `autofocus`, `data-fd-*` and a few
//!   legacy ones (see `rules.rs`); names with characters outside `[A-Za-z0-9_.:-]`; values over
//!   [`MAX_ATTRIBUTE_BYTES`];
//! - URLs in `href`, `xlink:href`, `src`, `srcset` (each candidate), `imagesrcset`, `poster`,
//!   `background`, `cite`, `longdesc`, SVG animation `values`/`to`/`from`/`by` targeting
//!   `href`/`src` (those targeting `on*` or `style` lose them), and CSS `url()`: only `http`,
//!   `https`, `#fragment`, `mailto:`/`tel:` for links, and `data:image/…` raster images where an
//!   image is loaded; never `javascript:`, `vbscript:`, `data:text/html`, `data:image/svg+xml`.
//!   Checks see what a browser sees: leading/trailing controls and spaces trimmed, tabs and
//!   newlines removed, any case. Relative URLs are resolved against the policy's base URL, or
//!   dropped when there is none. SVG `use` and other references allow `#fragment` only;
//! - CSS (in `style` attributes and `<style>`): see the `css` module — `@import`,
//!   `expression()`, `behavior`, `-moz-binding`, `javascript:` and unsafe `url()`s go; `<` never
//!   appears in a written style sheet;
//! - `iframe`: always written empty with `sandbox=""`; `src` dropped unless
//!   [`PolicyBuilder::iframe_src`]; `srcdoc` sanitized recursively with the same policy and
//!   re-embedded ([`SrcdocMode`]), up to [`MAX_SRCDOC_NESTING`] levels;
//! - `link`: keeps `href` only with `rel=stylesheet` (see [`PolicyBuilder::stylesheet_links`]).
//!
//! `template` contents are sanitized like any other content. Output is serialized for a viewer
//! that parses with scripting disabled, always starts with `<!DOCTYPE html>` and is stable:
//! sanitizing it again gives the same string. Whatever namespace or context a browser ends up
//! parsing an output element in, it stays harmless: no `<` in any raw text (`style` is the only
//! raw-text element written, `iframe` is always empty), attribute values escaped (`<` and `>`
//! included), no comments besides the relay's `<!--id-->` markers, and the URL/CSS checks apply
//! to an attribute whatever its element's namespace.
//!
//! # Relay
//!
//! [`Relay::new`] per call, then [`Relay::snapshot`] for each full page and [`Relay::changes`]
//! for each batch of mutations; both take the widget's JSON and return an [`AgentFrame`] to
//! serialize to the agent(s), with [`AgentFrame::stats`] for metrics. Formats and sticky
//! sensitivity are described in `PROTOCOL.md` and on [`Relay`].
//!
//! # Limits
//!
//! [`MAX_SNAPSHOT_BYTES`], [`MAX_CHANGE_BATCH_BYTES`], [`MAX_NODES`], [`MAX_DEPTH`],
//! [`MAX_ATTRIBUTE_BYTES`], [`MAX_ATTRIBUTES`], [`MAX_SRCDOC_NESTING`].

mod css;
mod dom;
mod error;
mod policy;
mod relay;
mod render;
mod rules;
mod url_check;

use std::fmt;

pub use error::Error;
/// The error of [`sanitize_document`] (the crate has one error type).
pub type SanitizeError = Error;
/// The error of [`Relay`] (the crate has one error type).
pub type RelayError = Error;
pub use policy::{Policy, PolicyBuilder, SrcdocMode};
pub use relay::{
    AgentFrame, AgentOp, FrameBody, PointerKind, Relay, SanitizedAttrs, SanitizedText,
};

/// Largest full page snapshot the relay accepts (and largest document [`sanitize_document`]
/// accepts).
pub const MAX_SNAPSHOT_BYTES: usize = 5 * 1024 * 1024;
/// Largest batch of incremental changes the relay accepts.
pub const MAX_CHANGE_BATCH_BYTES: usize = 256 * 1024;
/// Most nodes in one document or one relay tree.
pub const MAX_NODES: usize = 250_000;
/// Deepest element nesting: a snapshot or document deeper than this is an error; nodes a change
/// batch would add deeper are dropped.
pub const MAX_DEPTH: usize = 512;
/// Longest attribute value kept (longer ones are dropped), in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 64 * 1024;
/// Most attributes kept per relay node (further ones are dropped).
pub const MAX_ATTRIBUTES: usize = 256;
/// Deepest `iframe srcdoc` nesting that is sanitized and kept; deeper `srcdoc`s are dropped.
pub const MAX_SRCDOC_NESTING: usize = 3;
/// What every masked value becomes: eight bullets, whatever the original length.
pub const MASK: &str = "••••••••";

/// HTML that went through the sanitizer: the only thing that may be relayed to an agent. Only
/// this crate can make one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SanitizedHtml(String);

impl SanitizedHtml {
    pub(crate) fn new(html: String) -> Self {
        SanitizedHtml(html)
    }

    /// The HTML.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The HTML, as an owned string (for writing to a socket; it is no longer marked safe).
    pub fn into_string(self) -> String {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SanitizedHtml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SanitizedHtml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SanitizedHtml").field(&self.0).finish()
    }
}

impl AsRef<str> for SanitizedHtml {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for SanitizedHtml {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Counts of what was masked and removed — for metrics, never content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Elements written masked.
    pub masked_elements: u64,
    /// Text nodes (or `textarea`/`style`/`title` contents) replaced by the mask.
    pub masked_texts: u64,
    /// Attribute values replaced by the mask.
    pub masked_attributes: u64,
    /// Elements removed (each counts once, with its subtree).
    pub removed_elements: u64,
    /// Attributes removed.
    pub removed_attributes: u64,
    /// CSS declarations and rules removed.
    pub removed_css: u64,
    /// Relay only: changes not forwarded (unknown ids, selections in masked nodes, values of
    /// masked fields, malformed nodes…).
    pub dropped_changes: u64,
    /// Relay only: of `dropped_changes`, those that named a node id the relay does not have
    /// (target, `parent` or `prev`). The widget and the relay disagree about the page: the
    /// server asks the widget for a new snapshot.
    pub unknown_ids: u64,
}

impl Stats {
    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.masked_elements += other.masked_elements;
        self.masked_texts += other.masked_texts;
        self.masked_attributes += other.masked_attributes;
        self.removed_elements += other.removed_elements;
        self.removed_attributes += other.removed_attributes;
        self.removed_css += other.removed_css;
        self.dropped_changes += other.dropped_changes;
        self.unknown_ids += other.unknown_ids;
    }
}

/// Sanitize a whole HTML document with `policy`. The result always starts with
/// `<!DOCTYPE html>`; sanitizing it again returns the same string.
///
/// The document is parsed once (html5ever, scripting disabled), sanitized and serialized in one
/// walk. When the parse was irregular — quirks mode, foster parenting or misnested formatting
/// tags, or a removed container such as `noscript` that was open while later tags were parsed —
/// the output is parsed and sanitized again (at most 3 more times) until it no longer changes,
/// so that what is returned is exactly what the viewer will parse.
///
/// # Errors
///
/// [`Error::SnapshotTooLarge`] over [`MAX_SNAPSHOT_BYTES`], [`Error::TooManyNodes`] over
/// [`MAX_NODES`], [`Error::TooDeep`] over [`MAX_DEPTH`].
pub fn sanitize_document(policy: &Policy, html: &str) -> Result<SanitizedHtml, Error> {
    sanitize_document_with_stats(policy, html).map(|(h, _)| h)
}

/// [`sanitize_document`], also returning what was masked and removed.
///
/// # Errors
///
/// As [`sanitize_document`].
pub fn sanitize_document_with_stats(
    policy: &Policy,
    html: &str,
) -> Result<(SanitizedHtml, Stats), Error> {
    let (out, stats) = sanitize_nested(policy, html, 0)?;
    Ok((SanitizedHtml::new(out), stats))
}

/// Parse `html` with html5ever into the crate's arena DOM, without sanitizing (the baseline
/// of the `sanitize` bench). Returns the number of nodes.
#[doc(hidden)]
pub fn bench_parse_only(html: &str) -> usize {
    dom::parse_document(html).len()
}

pub(crate) fn sanitize_nested(
    policy: &Policy,
    html: &str,
    nesting: usize,
) -> Result<(String, Stats), Error> {
    if html.len() > MAX_SNAPSHOT_BYTES {
        return Err(Error::SnapshotTooLarge {
            len: html.len(),
            max: MAX_SNAPSHOT_BYTES,
        });
    }
    let (mut out, stats, irregular) = one_pass(policy, html, nesting)?;
    if irregular {
        // The parser was in quirks mode (the viewer parses our output in no-quirks mode: we
        // always write `<!DOCTYPE html>`), or restructured the tree (foster parenting, adoption
        // agency), or we removed a container that was open while later tags were parsed: such
        // output does not always parse back into the tree we sanitized. Sanitize what the
        // viewer will parse until it no longer changes.
        for _ in 0..MAX_EXTRA_PASSES {
            let (again, _, _) = one_pass(policy, &out, nesting)?;
            if again == out {
                break;
            }
            out = again;
        }
    }
    Ok((out, stats))
}

/// Most extra passes over an irregular document (see [`sanitize_nested`]).
const MAX_EXTRA_PASSES: usize = 3;

fn one_pass(policy: &Policy, html: &str, nesting: usize) -> Result<(String, Stats, bool), Error> {
    let dom = dom::parse_document(html);
    if dom.len() > MAX_NODES {
        return Err(Error::TooManyNodes { max: MAX_NODES });
    }
    let mut r =
        render::Renderer::<dom::Dom>::new(policy, html.len() + html.len() / 8 + 64, false, nesting);
    r.push_raw("<!DOCTYPE html>");
    r.children(&dom, dom::Dom::ROOT, render::Ctx::document())?;
    let done = r.finish();
    let irregular = dom.irregular || done.risky;
    Ok((done.html, done.stats, irregular))
}
