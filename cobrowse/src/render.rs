//! The single pass that sanitizes and serializes a tree: every element is checked (namespace,
//! name), every attribute filtered or masked, every text escaped or masked, while the output is
//! written. Both parsed documents ([`crate::dom::Dom`]) and the relay's node tree go through it.

use crate::css::{self, CssCtx};
use crate::policy::{Policy, SrcdocMode};
use crate::rules::{self, with_lower, HtmlClass, Ns};
use crate::url_check::{self, UrlUse};
use crate::{Error, Stats, MASK, MAX_DEPTH, MAX_SRCDOC_NESTING};

/// An attribute's namespace prefix, as serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrPrefix {
    None,
    XLink,
    Xml,
    XmlNs,
}

impl AttrPrefix {
    fn as_str(self) -> &'static str {
        match self {
            AttrPrefix::None => "",
            AttrPrefix::XLink => "xlink:",
            AttrPrefix::Xml => "xml:",
            AttrPrefix::XmlNs => "xmlns:",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct AttrView<'a> {
    pub(crate) prefix: AttrPrefix,
    /// The local name, as it should be written (SVG names keep their camelCase).
    pub(crate) local: &'a str,
    pub(crate) value: &'a str,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ElemView<'a> {
    pub(crate) ns: Ns,
    pub(crate) local: &'a str,
    /// A MathML `annotation-xml` whose children are HTML.
    pub(crate) annotation_html: bool,
}

pub(crate) enum NodeView<'a> {
    Element(ElemView<'a>),
    Text(&'a str),
    Other,
}

/// The live state of a form control (the relay's `value`/`checked`), never an attribute.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Live<'a> {
    pub(crate) value: Option<&'a str>,
    pub(crate) checked: Option<bool>,
}

/// A tree the renderer can walk.
pub(crate) trait Source {
    type Id: Copy;
    type Children<'a>: Iterator<Item = Self::Id>
    where
        Self: 'a;
    type Attrs<'a>: Iterator<Item = AttrView<'a>> + Clone
    where
        Self: 'a;

    fn node(&self, id: Self::Id) -> NodeView<'_>;
    fn attrs(&self, id: Self::Id) -> Self::Attrs<'_>;
    fn children(&self, id: Self::Id) -> Self::Children<'_>;
    /// Where a template's contents hang (html5ever keeps them in a separate fragment).
    fn content_root(&self, id: Self::Id) -> Self::Id {
        id
    }
    fn live(&self, _id: Self::Id) -> Live<'_> {
        Live::default()
    }
    /// The relay's node id, written as `data-fd-id` / a `<!--id-->` marker before text.
    fn wire_id(&self, _id: Self::Id) -> Option<u64> {
        None
    }
    /// Sticky sensitivity (the relay's memory of ids masked before).
    fn sticky(&self, _id: Self::Id) -> bool {
        false
    }
}

/// How an element's content is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The document (or the relay's virtual root): only elements.
    Document,
    Normal,
    /// `pre`, `listing`: a leading newline must be doubled.
    PreLike,
    /// Void element: no end tag, no children.
    Void,
    /// `iframe`: never any child (its children are raw text to a browser).
    Empty,
    /// `style`: the text children are a style sheet.
    Style,
    /// `title`, `textarea`: text only, escaped.
    Rcdata,
    /// `template`: children come from the template contents.
    Template,
}

/// What an element's parent tells about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Other,
    /// SVG `foreignObject`, `desc`, `title`: children are HTML.
    SvgIntegration,
    /// MathML `mi`, `mo`, `mn`, `ms`, `mtext`.
    MathText,
    /// MathML `annotation-xml` (`html`: its `encoding` makes it an HTML integration point).
    AnnotationXml {
        html: bool,
    },
    /// The HTML `html` element.
    HtmlRoot,
}

/// The context an element's children are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ctx {
    pub(crate) ns: Ns,
    pub(crate) role: Role,
    pub(crate) kind: Kind,
    pub(crate) masked: bool,
    pub(crate) in_form: bool,
    pub(crate) depth: usize,
}

impl Ctx {
    pub(crate) fn document() -> Ctx {
        Ctx {
            ns: Ns::Html,
            role: Role::Other,
            kind: Kind::Document,
            masked: false,
            in_form: false,
            depth: 0,
        }
    }

    /// Children of this context may be written (text and elements alike).
    pub(crate) fn has_children(&self) -> bool {
        !matches!(self.kind, Kind::Void | Kind::Empty)
    }

    /// Text children are written inline, each with its own `<!--id-->` marker.
    pub(crate) fn text_inline(&self) -> bool {
        matches!(self.kind, Kind::Normal | Kind::PreLike | Kind::Template)
    }
}

/// What to do with an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Remove,
    Keep {
        /// Written under another name (`span` for unknown HTML elements, `div` for nested forms).
        rename: Option<&'static str>,
        kind: Kind,
        role: Role,
    },
}

/// The namespace an element created under `parent` gets (the parser's rules, simplified: used
/// for the relay's trees, whose namespaces are inferred, never trusted).
pub(crate) fn infer_ns(parent: &Ctx, lower: &str) -> Ns {
    let html_rule = || match lower {
        "svg" => Ns::Svg,
        "math" => Ns::MathMl,
        _ => Ns::Html,
    };
    match parent.ns {
        Ns::Html | Ns::Other => html_rule(),
        Ns::Svg => match parent.role {
            Role::SvgIntegration => html_rule(),
            _ => Ns::Svg,
        },
        Ns::MathMl => match parent.role {
            Role::MathText if !matches!(lower, "mglyph" | "malignmark") => html_rule(),
            Role::AnnotationXml { .. } if lower == "svg" => Ns::Svg,
            _ => Ns::MathMl,
        },
    }
}

/// Keep or remove an element of namespace `ns` and lowercase name `lower` under `parent`.
pub(crate) fn decide(parent: &Ctx, ns: Ns, lower: &str, annotation_html: bool) -> Decision {
    if !parent.has_children() || matches!(parent.kind, Kind::Style | Kind::Rcdata) {
        return Decision::Remove;
    }
    if lower == "frameset" && ns == Ns::Html && parent.role == Role::HtmlRoot {
        // A frameset document: the frames go, an empty body stays (a document always has one).
        return Decision::Keep {
            rename: Some("body"),
            kind: Kind::Empty,
            role: Role::Other,
        };
    }
    if ns != Ns::Html && rules::always_removed(lower) {
        return Decision::Remove;
    }
    let keep = |kind, role| Decision::Keep {
        rename: None,
        kind,
        role,
    };
    match ns {
        Ns::Html => {
            let ok_parent = match parent.ns {
                Ns::Html => true,
                Ns::Svg => parent.role == Role::SvgIntegration,
                Ns::MathMl => matches!(
                    parent.role,
                    Role::MathText | Role::AnnotationXml { html: true }
                ),
                Ns::Other => false,
            };
            if !ok_parent {
                return Decision::Remove;
            }
            let kind = match rules::html_class(lower) {
                HtmlClass::Removed => return Decision::Remove,
                HtmlClass::Void => Kind::Void,
                HtmlClass::Normal => Kind::Normal,
                HtmlClass::PreLike => Kind::PreLike,
                HtmlClass::Empty => Kind::Empty,
                HtmlClass::Style => Kind::Style,
                HtmlClass::Rcdata => Kind::Rcdata,
                HtmlClass::Template => Kind::Template,
                HtmlClass::Unknown => {
                    return if rules::foreign_only_name(lower) {
                        Decision::Remove
                    } else if rules::is_custom_element(lower) {
                        keep(Kind::Normal, Role::Other)
                    } else if rules::is_safe_tag_name(lower) {
                        Decision::Keep {
                            rename: Some("span"),
                            kind: Kind::Normal,
                            role: Role::Other,
                        }
                    } else {
                        Decision::Remove
                    };
                }
            };
            match lower {
                "form" if parent.in_form => Decision::Keep {
                    rename: Some("div"),
                    kind: Kind::Normal,
                    role: Role::Other,
                },
                "html" => keep(kind, Role::HtmlRoot),
                _ => keep(kind, Role::Other),
            }
        }
        Ns::Svg => {
            let ok = match parent.ns {
                Ns::Html => lower == "svg",
                Ns::MathMl => {
                    lower == "svg"
                        && matches!(parent.role, Role::AnnotationXml { .. } | Role::MathText)
                }
                Ns::Svg => rules::svg_allowed(lower),
                Ns::Other => false,
            };
            if !ok {
                return Decision::Remove;
            }
            let kind = if lower == "style" {
                Kind::Style
            } else {
                Kind::Normal
            };
            let role = if rules::svg_html_integration(lower) {
                Role::SvgIntegration
            } else {
                Role::Other
            };
            keep(kind, role)
        }
        Ns::MathMl => {
            let ok = match parent.ns {
                Ns::Html => lower == "math",
                Ns::Svg => lower == "math" && parent.role == Role::SvgIntegration,
                Ns::MathMl => rules::mathml_allowed(lower) && lower != "math",
                Ns::Other => false,
            };
            if !ok {
                return Decision::Remove;
            }
            let role = if rules::mathml_text_integration(lower) {
                Role::MathText
            } else if lower == "annotation-xml" {
                Role::AnnotationXml {
                    html: annotation_html,
                }
            } else {
                Role::Other
            };
            keep(Kind::Normal, role)
        }
        Ns::Other => Decision::Remove,
    }
}

/// The context for the children of a kept element.
pub(crate) fn child_ctx(
    parent: &Ctx,
    ns: Ns,
    lower: &str,
    kind: Kind,
    role: Role,
    masked: bool,
) -> Ctx {
    Ctx {
        ns,
        role,
        kind,
        masked,
        in_form: match kind {
            Kind::Template => false,
            _ => parent.in_form || (ns == Ns::Html && lower == "form"),
        },
        depth: parent.depth + 1,
    }
}

/// What an element's attributes say about it, read before any is written.
#[derive(Default)]
struct Facts {
    sensitive: bool,
    input_image: bool,
    link_stylesheet: bool,
    anim: Anim,
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum Anim {
    /// Not an animation, or one that animates a harmless attribute.
    #[default]
    Harmless,
    /// Animates `href`/`src`: its values must be safe URLs.
    Url,
    /// Animates an event handler or `style`: values are dropped.
    Forbidden,
}

/// Own sensitivity markers of an element (see the crate docs for the list).
pub(crate) fn own_sensitive<'a>(
    ns: Ns,
    lower: &str,
    attrs: impl Iterator<Item = AttrView<'a>>,
    policy: &Policy,
) -> bool {
    facts(ns, lower, attrs, policy).sensitive
}

/// Every attribute name [`facts`] matches: keep in step with its `match`.
const FACT_NAMES: [&str; 8] = [
    "data-sensitive",
    "data-fd-masked",
    "type",
    "autocomplete",
    "name",
    "id",
    "rel",
    "attributename",
];

/// Could a name of `len` bytes be one of [`FACT_NAMES`]?
fn fact_name_len(len: usize) -> bool {
    const MASK: u64 = {
        let mut m = 0u64;
        let mut i = 0;
        while i < FACT_NAMES.len() {
            m |= 1 << FACT_NAMES[i].len();
            i += 1;
        }
        m
    };
    len < 64 && MASK >> len & 1 == 1
}

fn facts<'a>(
    ns: Ns,
    lower: &str,
    attrs: impl Iterator<Item = AttrView<'a>>,
    policy: &Policy,
) -> Facts {
    let mut f = Facts::default();
    let is_input = ns == Ns::Html && lower == "input";
    let is_anim = ns == Ns::Svg
        && matches!(
            lower,
            "animate" | "set" | "animatemotion" | "animatetransform"
        );
    // An animation that does not (yet) name its target is checked as if it animated a URL: a
    // later `attributeName` must not turn a kept `to="javascript:…"` live. (Found by the
    // fuzzer: an `animate` whose `attributeName` was mangled kept its `to`.)
    if is_anim {
        f.anim = Anim::Url;
    }
    let is_link = ns == Ns::Html && lower == "link";
    let extra = &policy.extra_sensitive_names;
    for a in attrs {
        // Only names of these lengths can match below (most attributes are skipped unread).
        if a.prefix != AttrPrefix::None || !fact_name_len(a.local.len()) {
            continue;
        }
        with_lower(a.local, |name| match name {
            "data-sensitive" => f.sensitive |= rules::data_sensitive(a.value),
            "data-fd-masked" => f.sensitive = true,
            "type" if is_input => {
                f.sensitive |= rules::input_type_sensitive(a.value);
                f.input_image = a.value.trim().eq_ignore_ascii_case("image");
            }
            "autocomplete" => {
                f.sensitive |=
                    rules::autocomplete_sensitive(a.value) || rules::name_sensitive(a.value, extra)
            }
            "name" | "id" => f.sensitive |= rules::name_sensitive(a.value, extra),
            "rel" if is_link => {
                f.link_stylesheet = a
                    .value
                    .split_ascii_whitespace()
                    .any(|t| t.eq_ignore_ascii_case("stylesheet"))
            }
            "attributename" if is_anim => {
                let t = a.value.trim().to_ascii_lowercase();
                let t = t.strip_prefix("xlink:").unwrap_or(&t);
                f.anim = if t == "href" || t == "src" {
                    Anim::Url
                } else if rules::animatable_harmless(t) {
                    Anim::Harmless
                } else {
                    // Event handlers, `style`, and any name not known to be harmless
                    // (a fuzzer found `attributeName="hre'"` kept `values="javascript:…"`).
                    Anim::Forbidden
                };
            }
            _ => {}
        });
    }
    f
}

/// `<` in a style sheet, as a CSS escape of all six hex digits (complete without a space).
const LT_ESCAPE: &str = "\\00003c";

/// Escape text content.
pub(crate) fn escape_text(out: &mut String, s: &str) {
    escape(out, s, false)
}

/// Escape an attribute value (without the quotes).
pub(crate) fn escape_attr(out: &mut String, s: &str) {
    escape(out, s, true)
}

/// Bytes the serializer must look at: `&`, `<`, `>`, NUL, 0xC2 (first byte of NBSP), and `"` in
/// attribute values.
static SPECIAL: [[bool; 256]; 2] = {
    let mut t = [[false; 256]; 2];
    let mut k = 0;
    while k < 2 {
        t[k][b'&' as usize] = true;
        t[k][b'<' as usize] = true;
        t[k][b'>' as usize] = true;
        t[k][0] = true;
        t[k][0xC2] = true;
        k += 1;
    }
    t[1][b'"' as usize] = true;
    t
};

/// Does a 16-byte block hold a `SPECIAL` byte? (Written with `|` on every byte so that LLVM
/// compares the whole block at once.)
fn block_has_special<const ATTR: bool>(block: &[u8; 16]) -> bool {
    let mut m = 0u8;
    for &c in block {
        m |= ((c == b'&')
            | (c == b'<')
            | (c == b'>')
            | (c == 0)
            | (c == 0xC2)
            | (ATTR & (c == b'"'))) as u8;
    }
    m != 0
}

fn escape(out: &mut String, s: &str, attr: bool) {
    if attr {
        escape_with::<true>(out, s)
    } else {
        escape_with::<false>(out, s)
    }
}

fn escape_with<const ATTR: bool>(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let table = &SPECIAL[usize::from(ATTR)];
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        // Skip whole blocks without a special byte, then find the next one byte by byte within
        // at most one block.
        while let Some(block) = b.get(i..i + 16) {
            let block: &[u8; 16] = block.try_into().expect("a 16-byte slice");
            if block_has_special::<ATTR>(block) {
                break;
            }
            i += 16;
        }
        let end = b.len().min(i + 16);
        let Some(k) = b[i..end].iter().position(|&c| table[usize::from(c)]) else {
            i = end;
            continue;
        };
        i += k;
        let (rep, len) = match b[i] {
            b'&' => ("&amp;", 1),
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'"' => ("&quot;", 1),
            b'\0' => ("\u{FFFD}", 1),
            0xC2 if b.get(i + 1) == Some(&0xA0) => ("&nbsp;", 2),
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        i += len;
        last = i;
    }
    out.push_str(&s[last..]);
}

/// The result of one rendering pass.
pub(crate) struct Rendered<Id> {
    pub(crate) html: String,
    /// An element was removed or renamed whose absence may make the output parse into another
    /// tree than the one sanitized (an open container influences how later tags are parsed).
    pub(crate) risky: bool,
    pub(crate) stats: Stats,
    /// Ids of the nodes written masked (only when collecting, for the relay's stickiness).
    pub(crate) masked: Vec<Id>,
}

struct Frame<'s, I> {
    children: I,
    /// The end tag's name.
    close: Option<&'s str>,
    ctx: Ctx,
    first: bool,
    /// The masked text just written in this frame, if nothing but text (or removed elements)
    /// came since: where it starts in the output, and whether it was the mask (not a space).
    /// Adjacent texts parse back as one node, so they must mask as one.
    run: Option<(usize, bool)>,
}

pub(crate) struct Renderer<'p, S: Source> {
    pub(crate) policy: &'p Policy,
    srcdoc_nesting: usize,
    collect_masked: bool,
    out: String,
    stats: Stats,
    masked: Vec<S::Id>,
    risky: bool,
    /// Reused buffer (inline CSS).
    scratch: String,
    /// When set, attributes are collected here (name, unescaped value) instead of written.
    attr_list: Option<Vec<(String, String)>>,
}

impl<'p, S: Source> Renderer<'p, S> {
    pub(crate) fn new(
        policy: &'p Policy,
        capacity: usize,
        collect_masked: bool,
        srcdoc_nesting: usize,
    ) -> Self {
        Renderer {
            policy,
            srcdoc_nesting,
            collect_masked,
            out: String::with_capacity(capacity),
            stats: Stats::default(),
            masked: Vec::new(),
            risky: false,
            scratch: String::new(),
            attr_list: None,
        }
    }

    /// The sanitized attributes `id` would get as a child of `parent` (`None`: removed).
    pub(crate) fn attrs_only(
        &mut self,
        src: &S,
        id: S::Id,
        parent: &Ctx,
    ) -> Result<Option<Vec<(String, String)>>, Error> {
        let NodeView::Element(e) = src.node(id) else {
            return Ok(None);
        };
        let lower = e.local.to_ascii_lowercase();
        if let Decision::Remove = decide(parent, e.ns, &lower, e.annotation_html) {
            return Ok(None);
        }
        let f = facts(e.ns, &lower, src.attrs(id), self.policy);
        let masked = parent.masked || src.sticky(id) || f.sensitive;
        self.attr_list = Some(Vec::new());
        let r = self.attributes(src, id, e, &lower, &f, masked);
        let list = self.attr_list.take();
        r.map(|()| list)
    }

    pub(crate) fn finish(self) -> Rendered<S::Id> {
        Rendered {
            html: self.out,
            risky: self.risky,
            stats: self.stats,
            masked: self.masked,
        }
    }

    pub(crate) fn push_raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Write the children of `id` in context `ctx` (the node itself is not written).
    pub(crate) fn children(&mut self, src: &S, id: S::Id, ctx: Ctx) -> Result<(), Error> {
        self.walk(
            src,
            Frame {
                children: src.children(id),
                close: None,
                ctx,
                first: true,
                run: None,
            },
        )
    }

    /// Write `id` itself (and its subtree), as a child of context `parent`.
    pub(crate) fn node(&mut self, src: &S, id: S::Id, parent: Ctx) -> Result<(), Error> {
        match src.node(id) {
            NodeView::Text(t) => {
                self.text(src, id, t, &parent, false, &mut None);
                Ok(())
            }
            NodeView::Element(e) => {
                let mut first = true;
                match self.open(src, id, e, &parent, &mut first)? {
                    Some(frame) => self.walk(src, frame),
                    None => Ok(()),
                }
            }
            NodeView::Other => Ok(()),
        }
    }

    fn walk<'s>(&mut self, src: &'s S, root: Frame<'s, S::Children<'s>>) -> Result<(), Error> {
        let mut stack: Vec<Frame<'s, S::Children<'s>>> = Vec::with_capacity(32);
        stack.push(root);
        while let Some(top) = stack.last_mut() {
            let Some(child) = top.children.next() else {
                let close = top.close;
                stack.pop();
                if let Some(c) = close {
                    self.close(c);
                }
                continue;
            };
            let ctx = top.ctx;
            let mut first = top.first;
            match src.node(child) {
                NodeView::Text(t) => {
                    top.first = false;
                    self.text(src, child, t, &ctx, first, &mut top.run);
                }
                NodeView::Element(e) => {
                    let before = self.out.len();
                    let frame = self.open(src, child, e, &ctx, &mut first)?;
                    if let Some(top) = stack.last_mut() {
                        if self.out.len() != before {
                            // An element was written: the text run is broken.
                            top.run = None;
                        }
                        top.first = first;
                    }
                    if let Some(f) = frame {
                        if stack.len() >= MAX_DEPTH {
                            return Err(Error::TooDeep { max: MAX_DEPTH });
                        }
                        stack.push(f);
                    }
                }
                NodeView::Other => {}
            }
        }
        Ok(())
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    fn mark_masked(&mut self, id: S::Id) {
        if self.collect_masked {
            self.masked.push(id);
        }
    }

    fn text(
        &mut self,
        src: &S,
        id: S::Id,
        t: &str,
        ctx: &Ctx,
        first: bool,
        run: &mut Option<(usize, bool)>,
    ) {
        if !ctx.text_inline() {
            // Text directly under the document (or a void element) is not written.
            return;
        }
        if t.is_empty() {
            return;
        }
        let wire = src.wire_id(id);
        if let Some(w) = wire {
            self.out.push_str("<!--");
            self.out.push_str(&w.to_string());
            self.out.push_str("-->");
        }
        if ctx.masked || src.sticky(id) {
            self.mark_masked(id);
            self.stats.masked_texts += 1;
            let blank = t
                .bytes()
                .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'));
            match (*run, wire) {
                // Joined to the previous text: one mask for the whole run.
                (Some((_, true)), None) => {}
                (Some((at, false)), None) => {
                    if !blank {
                        self.out.truncate(at);
                        self.out.push_str(MASK);
                        *run = Some((at, true));
                    }
                }
                _ => {
                    let at = self.out.len();
                    self.out.push_str(if blank { " " } else { MASK });
                    *run = Some((at, !blank));
                }
            }
            return;
        }
        *run = None;
        if first && wire.is_none() && ctx.kind == Kind::PreLike && t.starts_with('\n') {
            self.out.push('\n');
        }
        escape_text(&mut self.out, t);
    }

    /// Write an element's start tag (and, for elements without walked children, everything up
    /// to its end tag). Returns the frame for its children, if they are walked.
    fn open<'s>(
        &mut self,
        src: &'s S,
        id: S::Id,
        e: ElemView<'s>,
        parent: &Ctx,
        first: &mut bool,
    ) -> Result<Option<Frame<'s, S::Children<'s>>>, Error> {
        let lower_owned;
        let lower: &str = if e.local.bytes().any(|b| b.is_ascii_uppercase()) {
            lower_owned = e.local.to_ascii_lowercase();
            &lower_owned
        } else {
            e.local
        };
        let (rename, kind, role) = match decide(parent, e.ns, lower, e.annotation_html) {
            Decision::Remove => {
                self.stats.removed_elements += 1;
                // Raw-text and void elements cannot hold other tags open; anything else may
                // have influenced how later tags were parsed.
                let harmless = e.ns == Ns::Html
                    && (rules::is_void(lower)
                        || matches!(
                            lower,
                            "script" | "xmp" | "plaintext" | "noembed" | "noframes"
                        ));
                self.risky |= !harmless;
                return Ok(None);
            }
            Decision::Keep { rename, kind, role } => {
                self.risky |= rename.is_some() && rename != Some("span");
                (rename, kind, role)
            }
        };
        *first = false;
        let f = facts(e.ns, lower, src.attrs(id), self.policy);
        let masked = parent.masked || src.sticky(id) || f.sensitive;
        if masked {
            self.stats.masked_elements += 1;
            self.mark_masked(id);
        }
        let ctx = child_ctx(parent, e.ns, lower, kind, role, masked);
        let name: &'s str = match rename {
            Some(r) => r,
            None => elem_name(e),
        };
        self.out.push('<');
        self.out.push_str(name);
        self.attributes(src, id, e, lower, &f, masked)?;
        self.out.push('>');
        let close = name;
        match kind {
            Kind::Void => Ok(None),
            Kind::Empty => {
                self.close(close);
                Ok(None)
            }
            Kind::Style | Kind::Rcdata => {
                self.raw_content(src, id, e, lower, kind, masked);
                self.close(close);
                Ok(None)
            }
            Kind::Template => Ok(Some(Frame {
                children: src.children(src.content_root(id)),
                close: Some(close),
                ctx,
                first: true,
                run: None,
            })),
            Kind::Normal | Kind::PreLike | Kind::Document => Ok(Some(Frame {
                children: src.children(id),
                close: Some(close),
                ctx,
                first: true,
                run: None,
            })),
        }
    }

    /// The text of a `style`, `title` or `textarea`.
    fn raw_content(
        &mut self,
        src: &S,
        id: S::Id,
        e: ElemView<'_>,
        lower: &str,
        kind: Kind,
        masked: bool,
    ) {
        let live = if lower == "textarea" {
            src.live(id).value
        } else {
            None
        };
        let mut text = String::new();
        let mut any = false;
        for c in src.children(id) {
            if let NodeView::Text(t) = src.node(c) {
                any = true;
                if masked || src.sticky(c) {
                    self.mark_masked(c);
                }
                if live.is_none() {
                    text.push_str(t);
                }
            }
        }
        if let Some(v) = live {
            any = true;
            text.push_str(v);
        }
        if masked {
            if any || lower == "textarea" {
                self.stats.masked_texts += 1;
                if kind == Kind::Style && e.ns == Ns::Html {
                    self.out.push_str(MASK);
                } else {
                    escape_text(&mut self.out, MASK);
                }
            }
            return;
        }
        match kind {
            Kind::Style => {
                let ctx = CssCtx {
                    policy: self.policy,
                    allow_urls: true,
                };
                let css = css::sanitize_stylesheet(&text, &ctx, &mut self.stats);
                if e.ns == Ns::Html {
                    // Raw text: `<` can never appear, so nothing can close the element early
                    // or become markup in another namespace. The six-digit escape needs no
                    // terminating space, which a later pass could trim (`\3c {` became
                    // `\3c{`: a fuzzer found the round trip unstable).
                    if css.contains('<') {
                        self.out.push_str(&css.replace('<', LT_ESCAPE));
                    } else {
                        self.out.push_str(&css);
                    }
                } else {
                    escape_text(&mut self.out, &css.replace('<', LT_ESCAPE));
                }
            }
            _ => {
                if lower == "textarea" && text.starts_with('\n') {
                    self.out.push('\n');
                }
                escape_text(&mut self.out, &text);
            }
        }
    }

    fn attributes(
        &mut self,
        src: &S,
        id: S::Id,
        e: ElemView<'_>,
        lower: &str,
        f: &Facts,
        masked: bool,
    ) -> Result<(), Error> {
        let html = e.ns == Ns::Html;
        let is_input = html && lower == "input";
        let live = if html && matches!(lower, "input" | "textarea" | "select") {
            src.live(id)
        } else {
            Live::default()
        };
        for a in src.attrs(id) {
            // Fast path: the commonest attributes, which no rule below changes on an unmasked
            // element (see `rules::plain_attr` and its test).
            if !masked
                && a.prefix == AttrPrefix::None
                && rules::plain_attr(a.local)
                && a.value.len() <= crate::MAX_ATTRIBUTE_BYTES
            {
                self.write_attr(a, a.value);
                continue;
            }
            let Some(upper) = rules::attr_name_shape(a.local)
                .filter(|_| a.value.len() <= crate::MAX_ATTRIBUTE_BYTES)
            else {
                self.stats.removed_attributes += 1;
                continue;
            };
            let key_owned;
            let mut qname_buf;
            let key: &str = if a.prefix == AttrPrefix::None && !upper {
                a.local
            } else {
                qname_buf = [0u8; 80];
                let p = a.prefix.as_str();
                let total = p.len() + a.local.len();
                if total <= qname_buf.len() {
                    qname_buf[..p.len()].copy_from_slice(p.as_bytes());
                    qname_buf[p.len()..total].copy_from_slice(a.local.as_bytes());
                    qname_buf[..total].make_ascii_lowercase();
                    std::str::from_utf8(&qname_buf[..total])
                        .expect("attribute names were checked to be ASCII")
                } else {
                    key_owned = format!("{p}{}", a.local).to_ascii_lowercase();
                    &key_owned
                }
            };
            if rules::always_dropped_attr(key) {
                self.stats.removed_attributes += 1;
                continue;
            }
            if is_input
                && ((key == "value" && (masked || live.value.is_some()))
                    || (key == "checked" && live.checked.is_some()))
            {
                continue;
            }
            if html && lower == "textarea" && key == "value" {
                continue;
            }
            if masked {
                if matches!(key, "checked" | "selected") || is_url_attr(key) || key == "srcdoc" {
                    self.stats.removed_attributes += 1;
                    continue;
                }
                if rules::maskable_attr(key) && !key.starts_with("data-fd-") {
                    self.stats.masked_attributes += 1;
                    self.write_attr(a, MASK);
                    continue;
                }
                if key == "style" {
                    self.style_attr(a, false);
                    continue;
                }
                self.write_attr(a, a.value);
                continue;
            }
            match key {
                "href" | "xlink:href" => {
                    let use_ = href_use(e.ns, lower, f, self.policy);
                    match use_.and_then(|u| url_check::check(a.value, u, self.policy)) {
                        Some(v) => self.write_attr(a, &v),
                        None => self.stats.removed_attributes += 1,
                    }
                }
                "src" => {
                    let ok = if html && lower == "iframe" {
                        if self.policy.iframe_src {
                            url_check::check(
                                a.value,
                                UrlUse::Resource { image: false },
                                self.policy,
                            )
                        } else {
                            None
                        }
                    } else {
                        let image = (html && matches!(lower, "img" | "source"))
                            || (is_input && f.input_image)
                            || (e.ns == Ns::MathMl && lower == "mglyph");
                        url_check::check(a.value, UrlUse::Resource { image }, self.policy)
                    };
                    match ok {
                        Some(v) => self.write_attr(a, &v),
                        None => self.stats.removed_attributes += 1,
                    }
                }
                "srcset" | "imagesrcset" => {
                    let image = html && matches!(lower, "img" | "source" | "link");
                    match url_check::check_srcset(a.value, image, self.policy) {
                        Some(v) => self.write_attr(a, &v),
                        None => self.stats.removed_attributes += 1,
                    }
                }
                "poster" | "background" => {
                    match url_check::check(a.value, UrlUse::Resource { image: true }, self.policy) {
                        Some(v) => self.write_attr(a, &v),
                        None => self.stats.removed_attributes += 1,
                    }
                }
                "cite" | "longdesc" | "definitionurl" => {
                    match url_check::check(a.value, UrlUse::Link, self.policy) {
                        Some(v) => self.write_attr(a, &v),
                        None => self.stats.removed_attributes += 1,
                    }
                }
                "style" => self.style_attr(a, true),
                "srcdoc" => {
                    let keep = html
                        && lower == "iframe"
                        && self.policy.srcdoc == SrcdocMode::Sanitize
                        && self.srcdoc_nesting < MAX_SRCDOC_NESTING;
                    if keep {
                        let inner =
                            crate::sanitize_nested(self.policy, a.value, self.srcdoc_nesting + 1)?;
                        self.stats.add(&inner.1);
                        self.write_attr(a, &inner.0);
                    } else {
                        self.stats.removed_attributes += 1;
                    }
                }
                "values" | "to" | "from" | "by" if f.anim != Anim::Harmless => {
                    let ok = f.anim == Anim::Url
                        && a.value.split(';').all(|v| {
                            let v = v.trim();
                            v.is_empty()
                                || url_check::check(v, UrlUse::Link, self.policy).as_deref()
                                    == Some(v)
                        });
                    if ok {
                        self.write_attr(a, a.value);
                    } else {
                        self.stats.removed_attributes += 1;
                    }
                }
                _ => self.write_attr(a, a.value),
            }
        }
        if is_input {
            if masked {
                self.emit_attr("", "value", MASK);
            } else {
                if let Some(v) = live.value {
                    self.emit_attr("", "value", v);
                }
                if live.checked == Some(true) {
                    self.emit_attr("", "checked", "");
                }
            }
        }
        if html && lower == "iframe" {
            self.emit_attr("", "sandbox", "");
        }
        if masked {
            self.emit_attr("", "data-fd-masked", "");
        }
        if let Some(w) = src.wire_id(id) {
            self.emit_attr("", "data-fd-id", &w.to_string());
        }
        Ok(())
    }

    fn style_attr(&mut self, a: AttrView<'_>, allow_urls: bool) {
        let ctx = CssCtx {
            policy: self.policy,
            allow_urls,
        };
        let mut css = std::mem::take(&mut self.scratch);
        css.clear();
        css::sanitize_declarations_into(a.value, &ctx, &mut self.stats, &mut css);
        self.write_attr(a, &css);
        self.scratch = css;
    }

    fn write_attr(&mut self, a: AttrView<'_>, value: &str) {
        self.emit_attr(a.prefix.as_str(), a.local, value);
    }

    fn emit_attr(&mut self, prefix: &str, local: &str, value: &str) {
        if let Some(list) = &mut self.attr_list {
            list.push((format!("{prefix}{local}"), value.to_owned()));
            return;
        }
        self.out
            .reserve(prefix.len() + local.len() + value.len() + 4);
        self.out.push(' ');
        if !prefix.is_empty() {
            self.out.push_str(prefix);
        }
        self.out.push_str(local);
        self.out.push_str("=\"");
        escape_attr(&mut self.out, value);
        self.out.push('"');
    }
}

/// Attributes that hold a URL (dropped on masked elements).
pub(crate) fn is_url_attr(key: &str) -> bool {
    matches!(
        key,
        "href"
            | "xlink:href"
            | "src"
            | "srcset"
            | "imagesrcset"
            | "poster"
            | "background"
            | "cite"
            | "longdesc"
            | "definitionurl"
            | "values"
            | "to"
            | "from"
            | "by"
    )
}

/// How an element's `href` is checked; `None` drops it.
fn href_use(ns: Ns, lower: &str, f: &Facts, policy: &Policy) -> Option<UrlUse> {
    match ns {
        Ns::Html => match lower {
            "link" => (policy.stylesheet_links && f.link_stylesheet)
                .then_some(UrlUse::Resource { image: false }),
            _ => Some(UrlUse::Link),
        },
        Ns::Svg => match lower {
            "a" => Some(UrlUse::Link),
            "image" | "feimage" => Some(UrlUse::Resource { image: true }),
            _ => Some(UrlUse::Fragment),
        },
        Ns::MathMl => Some(UrlUse::Link),
        Ns::Other => None,
    }
}

/// The name an element is written with (SVG names keep the parser's camelCase).
fn elem_name(e: ElemView<'_>) -> &str {
    if e.ns == Ns::Svg {
        with_lower(e.local, rules::svg_element_case).unwrap_or(e.local)
    } else {
        e.local
    }
}
