//! The fixed tables: which elements are kept, which attributes are dropped or checked, and what
//! marks a field as sensitive.

/// An element's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    Html,
    Svg,
    MathMl,
    /// Anything else (never kept).
    Other,
}

/// Call `f` with the ASCII-lowercase form of `s`, without allocating for short names.
pub(crate) fn with_lower<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(s);
    }
    let mut buf = [0u8; 64];
    if s.len() <= buf.len() {
        let b = &mut buf[..s.len()];
        b.copy_from_slice(s.as_bytes());
        b.make_ascii_lowercase();
        // Lowercasing ASCII bytes keeps UTF-8 valid.
        let lowered = std::str::from_utf8(b).expect("ASCII lowercasing keeps UTF-8 valid");
        f(lowered)
    } else {
        f(&s.to_ascii_lowercase())
    }
}

/// Elements removed with their whole subtree, in every namespace.
pub(crate) fn always_removed(lower: &str) -> bool {
    matches!(
        lower,
        "script"
            | "noscript"
            | "base"
            | "meta"
            | "object"
            | "embed"
            | "applet"
            | "frame"
            | "frameset"
            | "noembed"
            | "noframes"
            | "xmp"
            | "plaintext"
            | "param"
            | "portal"
            | "fencedframe"
            | "selectedcontent"
            | "keygen"
            | "isindex"
            | "handler"
            | "listener"
            | "bgsound"
            | "permission"
    )
}

/// HTML elements kept as they are.
pub(crate) fn html_allowed(lower: &str) -> bool {
    matches!(
        lower,
        "a" | "abbr"
            | "acronym"
            | "address"
            | "area"
            | "article"
            | "aside"
            | "audio"
            | "b"
            | "basefont"
            | "bdi"
            | "bdo"
            | "big"
            | "blink"
            | "blockquote"
            | "body"
            | "br"
            | "button"
            | "canvas"
            | "caption"
            | "center"
            | "cite"
            | "code"
            | "col"
            | "colgroup"
            | "data"
            | "datalist"
            | "dd"
            | "del"
            | "details"
            | "dfn"
            | "dialog"
            | "dir"
            | "div"
            | "dl"
            | "dt"
            | "em"
            | "fieldset"
            | "figcaption"
            | "figure"
            | "font"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "head"
            | "header"
            | "hgroup"
            | "hr"
            | "html"
            | "i"
            | "iframe"
            | "img"
            | "input"
            | "ins"
            | "kbd"
            | "label"
            | "legend"
            | "li"
            | "link"
            | "listing"
            | "main"
            | "map"
            | "mark"
            | "marquee"
            | "menu"
            | "meter"
            | "nav"
            | "nobr"
            | "ol"
            | "optgroup"
            | "option"
            | "output"
            | "p"
            | "picture"
            | "pre"
            | "progress"
            | "q"
            | "rb"
            | "rp"
            | "rt"
            | "rtc"
            | "ruby"
            | "s"
            | "samp"
            | "search"
            | "section"
            | "select"
            | "slot"
            | "small"
            | "source"
            | "span"
            | "strike"
            | "strong"
            | "style"
            | "sub"
            | "summary"
            | "sup"
            | "table"
            | "tbody"
            | "td"
            | "template"
            | "textarea"
            | "tfoot"
            | "th"
            | "thead"
            | "time"
            | "title"
            | "tr"
            | "track"
            | "tt"
            | "u"
            | "ul"
            | "var"
            | "video"
            | "wbr"
    )
}

/// HTML void elements: no end tag, no children.
pub(crate) fn is_void(lower: &str) -> bool {
    matches!(
        lower,
        "area"
            | "base"
            | "basefont"
            | "bgsound"
            | "br"
            | "col"
            | "embed"
            | "frame"
            | "hr"
            | "img"
            | "input"
            | "keygen"
            | "link"
            | "meta"
            | "param"
            | "source"
            | "track"
            | "wbr"
    )
}

/// One lookup for an HTML element name: removed, kept (with its content model), or unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HtmlClass {
    Removed,
    Void,
    Normal,
    PreLike,
    Empty,
    Style,
    Rcdata,
    Template,
    Unknown,
}

pub(crate) fn html_class(lower: &str) -> HtmlClass {
    match lower {
        "div" | "span" | "a" | "p" | "li" | "td" | "tr" | "b" | "i" | "em" | "strong" | "ul"
        | "ol" | "table" | "tbody" | "thead" | "tfoot" | "th" | "section" | "article"
        | "header" | "footer" | "nav" | "main" | "label" | "button" | "form" | "select"
        | "option" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "html" | "head" | "body" => {
            HtmlClass::Normal
        }
        "img" | "input" | "br" | "hr" | "link" | "source" | "wbr" | "col" | "area" | "track"
        | "basefont" => HtmlClass::Void,
        "pre" | "listing" => HtmlClass::PreLike,
        "iframe" => HtmlClass::Empty,
        "style" => HtmlClass::Style,
        "title" | "textarea" => HtmlClass::Rcdata,
        "template" => HtmlClass::Template,
        _ if always_removed(lower) => HtmlClass::Removed,
        _ if html_allowed(lower) => HtmlClass::Normal,
        _ => HtmlClass::Unknown,
    }
}

/// SVG elements kept (lowercased names).
pub(crate) fn svg_allowed(lower: &str) -> bool {
    matches!(
        lower,
        "svg"
            | "a"
            | "animate"
            | "animatemotion"
            | "animatetransform"
            | "circle"
            | "clippath"
            | "defs"
            | "desc"
            | "ellipse"
            | "feblend"
            | "fecolormatrix"
            | "fecomponenttransfer"
            | "fecomposite"
            | "feconvolvematrix"
            | "fediffuselighting"
            | "fedisplacementmap"
            | "fedistantlight"
            | "fedropshadow"
            | "feflood"
            | "fefunca"
            | "fefuncb"
            | "fefuncg"
            | "fefuncr"
            | "fegaussianblur"
            | "feimage"
            | "femerge"
            | "femergenode"
            | "femorphology"
            | "feoffset"
            | "fepointlight"
            | "fespecularlighting"
            | "fespotlight"
            | "fetile"
            | "feturbulence"
            | "filter"
            | "foreignobject"
            | "g"
            | "image"
            | "line"
            | "lineargradient"
            | "marker"
            | "mask"
            | "metadata"
            | "mpath"
            | "path"
            | "pattern"
            | "polygon"
            | "polyline"
            | "radialgradient"
            | "rect"
            | "set"
            | "stop"
            | "style"
            | "switch"
            | "symbol"
            | "text"
            | "textpath"
            | "title"
            | "tspan"
            | "use"
            | "view"
    )
}

/// MathML elements kept.
pub(crate) fn mathml_allowed(lower: &str) -> bool {
    matches!(
        lower,
        "math"
            | "maction"
            | "annotation"
            | "annotation-xml"
            | "menclose"
            | "merror"
            | "mfenced"
            | "mfrac"
            | "mglyph"
            | "mi"
            | "mlabeledtr"
            | "mmultiscripts"
            | "mn"
            | "mo"
            | "mover"
            | "mpadded"
            | "mphantom"
            | "mprescripts"
            | "mroot"
            | "mrow"
            | "ms"
            | "mspace"
            | "msqrt"
            | "mstyle"
            | "msub"
            | "msubsup"
            | "msup"
            | "mtable"
            | "mtd"
            | "mtext"
            | "mtr"
            | "munder"
            | "munderover"
            | "none"
            | "semantics"
    )
}

/// Names that exist only in SVG or MathML: an HTML-namespace element with such a name is a
/// namespace confusion and is removed (DOMPurify's rule).
pub(crate) fn foreign_only_name(lower: &str) -> bool {
    (svg_allowed(lower) || mathml_allowed(lower))
        && !matches!(lower, "a" | "style" | "title" | "image" | "font")
}

/// SVG elements whose children are parsed as HTML (HTML integration points).
pub(crate) fn svg_html_integration(lower: &str) -> bool {
    matches!(lower, "foreignobject" | "desc" | "title")
}

/// MathML text integration points.
pub(crate) fn mathml_text_integration(lower: &str) -> bool {
    matches!(lower, "mi" | "mo" | "mn" | "ms" | "mtext")
}

/// A valid custom element name (`my-widget`): ASCII lowercase letter first, a hyphen, and only
/// ASCII letters, digits, `-`, `_`, `.` (a strict subset of the HTML rule).
pub(crate) fn is_custom_element(lower: &str) -> bool {
    lower.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && lower.contains('-')
        && lower.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
        && !matches!(
            lower,
            "annotation-xml"
                | "color-profile"
                | "font-face"
                | "font-face-src"
                | "font-face-uri"
                | "font-face-format"
                | "font-face-name"
                | "missing-glyph"
        )
}

/// An element name the serializer can write without changing its meaning.
pub(crate) fn is_safe_tag_name(name: &str) -> bool {
    name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `Some` for an attribute name the serializer can write without changing its meaning (an ASCII
/// letter or `_`, then `[A-Za-z0-9_.:-]`, at most 256 bytes), telling whether it has an ASCII
/// uppercase letter; `None` for any other name.
pub(crate) fn attr_name_shape(name: &str) -> Option<bool> {
    let b = name.as_bytes();
    if !b
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        || b.len() > 256
    {
        return None;
    }
    let mut upper = false;
    for &c in b {
        upper |= c.is_ascii_uppercase();
        if !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':')) {
            return None;
        }
    }
    Some(upper)
}

/// Attributes dropped on every element (lowercased names; `on*` is handled separately).
pub(crate) fn always_dropped_attr(lower: &str) -> bool {
    lower.starts_with("on")
        || lower.starts_with("data-fd-")
        || lower.starts_with("xmlns")
        || lower.starts_with("shadowroot")
        || matches!(
            lower,
            "action"
                | "formaction"
                | "target"
                | "formtarget"
                | "ping"
                | "download"
                | "is"
                | "nonce"
                | "integrity"
                | "http-equiv"
                | "xml:base"
                | "xlink:base"
                | "dynsrc"
                | "lowsrc"
                | "datasrc"
                | "datafld"
                | "dataformatas"
                | "codebase"
                | "classid"
                | "archive"
                | "manifest"
                | "profile"
                | "icon"
                | "data"
                | "popovertarget"
                | "popovertargetaction"
                | "command"
                | "commandfor"
                | "interestfor"
                | "autofocus"
                | "itemtype"
                | "itemid"
                | "sandbox"
                | "allow"
                | "allowfullscreen"
                | "allowpaymentrequest"
                | "csp"
                | "credentialless"
                | "attributionsrc"
                | "formmethod"
                | "formenctype"
                | "formnovalidate"
                | "method"
                | "enctype"
                | "behavior"
                | "style-src"
                | "xlink:actuate"
                | "xlink:show"
                | "xlink:role"
                | "xlink:arcrole"
        )
}

/// Common attributes that are written as they are on an unmasked element of any namespace:
/// safe names, never dropped, no URL, no CSS, no form state, no animation target (checked by a
/// test against the rules).
pub(crate) fn plain_attr(name: &str) -> bool {
    matches!(
        name,
        "class"
            | "id"
            | "width"
            | "height"
            | "type"
            | "name"
            | "for"
            | "rel"
            | "lang"
            | "dir"
            | "role"
            | "colspan"
            | "rowspan"
            | "loading"
            | "tabindex"
            | "title"
            | "alt"
            | "placeholder"
            | "label"
    )
}

/// Presentation and geometry attributes an SVG animation may animate with its values kept
/// (`attributeName`, lower case). Anything else but `href`/`src` (checked as URLs) loses its
/// `values`/`to`/`from`/`by`.
pub(crate) fn animatable_harmless(lower: &str) -> bool {
    matches!(
        lower,
        "x" | "y"
            | "x1"
            | "y1"
            | "x2"
            | "y2"
            | "cx"
            | "cy"
            | "r"
            | "rx"
            | "ry"
            | "d"
            | "dx"
            | "dy"
            | "points"
            | "width"
            | "height"
            | "opacity"
            | "fill"
            | "fill-opacity"
            | "stroke"
            | "stroke-width"
            | "stroke-opacity"
            | "stroke-dasharray"
            | "stroke-dashoffset"
            | "stop-color"
            | "stop-opacity"
            | "offset"
            | "color"
            | "visibility"
            | "display"
            | "transform"
            | "gradienttransform"
            | "patterntransform"
            | "viewbox"
            | "font-size"
            | "letter-spacing"
            | "startoffset"
            | "rotate"
            | "pathlength"
    )
}

/// Attribute values replaced by the mask on a masked element (besides `aria-*` and `data-*`).
pub(crate) fn maskable_attr(lower: &str) -> bool {
    matches!(
        lower,
        "value" | "placeholder" | "title" | "alt" | "label" | "abbr" | "summary" | "content"
    ) || lower.starts_with("aria-")
        || lower.starts_with("data-")
}

/// `autocomplete` tokens that always mask: any `cc-*`, `current-password`, `new-password`,
/// `one-time-code` (any case, anywhere among the space-separated tokens, so `section-x billing
/// cc-number` counts).
pub(crate) fn autocomplete_sensitive(value: &str) -> bool {
    value.split_ascii_whitespace().any(|t| {
        // Bytes, not `&t[..3]`: a token may start with a multi-byte character (a fuzzer
        // found the panic).
        (t.len() > 3 && t.as_bytes()[..3].eq_ignore_ascii_case(b"cc-"))
            || t.eq_ignore_ascii_case("current-password")
            || t.eq_ignore_ascii_case("new-password")
            || t.eq_ignore_ascii_case("one-time-code")
    })
}

/// The words of the name heuristics (see the crate docs).
pub(crate) const SENSITIVE_WORDS: [&str; 19] = [
    "cvv",
    "cvc",
    "csc",
    "cvn",
    "iban",
    "ssn",
    "cardnumber",
    "cardnum",
    "cardno",
    "ccnumber",
    "ccnum",
    "ccno",
    "creditcard",
    "securitycode",
    "socialsecurity",
    "password",
    "passwd",
    "pwd",
    "onetimecode",
];

/// Split a `name`/`id`/`autocomplete` value into word tokens (byte ranges): on every character
/// that is not an ASCII letter or digit, between a lowercase letter and an uppercase one
/// (`cardNumber`), before the last capital of a capital run followed by a lowercase letter
/// (`CCNumber`), and between letters and digits (`cvv2`). At most `out.len()` tokens.
fn tokens(b: &[u8], out: &mut [(usize, usize)]) -> usize {
    let mut n = 0;
    let mut start: Option<usize> = None;
    for (i, &c) in b.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if let Some(s) = start.take() {
                if n == out.len() {
                    return n;
                }
                out[n] = (s, i);
                n += 1;
            }
            continue;
        }
        if let Some(s) = start {
            let p = b[i - 1];
            let next_lower = b.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            let split = (p.is_ascii_lowercase() && c.is_ascii_uppercase())
                || (p.is_ascii_uppercase() && c.is_ascii_uppercase() && next_lower)
                || (p.is_ascii_alphabetic() != c.is_ascii_alphabetic());
            if split {
                if n == out.len() {
                    return n;
                }
                out[n] = (s, i);
                n += 1;
                start = Some(i);
            }
        } else {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        if n < out.len() {
            out[n] = (s, b.len());
            n += 1;
        }
    }
    n
}

/// Do the tokens, joined, spell `word` (ASCII case-insensitively)?
fn joined_eq(b: &[u8], toks: &[(usize, usize)], word: &[u8]) -> bool {
    let total: usize = toks.iter().map(|(s, e)| e - s).sum();
    if total != word.len() {
        return false;
    }
    let mut at = 0;
    toks.iter().all(|&(s, e)| {
        let ok = b[s..e].eq_ignore_ascii_case(&word[at..at + (e - s)]);
        at += e - s;
        ok
    })
}

/// The name heuristics: does a token, or two or three adjacent tokens joined, equal one of
/// [`SENSITIVE_WORDS`] or one of the policy's extra words? Allocation-free.
pub(crate) fn name_sensitive(value: &str, extra: &[String]) -> bool {
    if value.is_empty() || value.len() > 512 {
        return false;
    }
    // Every built-in word starts with one of these letter pairs: skip the tokenizer when none
    // occurs.
    let maybe = !extra.is_empty()
        || value.as_bytes().windows(2).any(|w| {
            matches!(
                [w[0].to_ascii_lowercase(), w[1].to_ascii_lowercase()],
                [b'c', b'v' | b's' | b'a' | b'c' | b'r']
                    | [b'i', b'b']
                    | [b's', b's' | b'e' | b'o']
                    | [b'p', b'a' | b'w']
                    | [b'o', b'n']
            )
        });
    if !maybe {
        return false;
    }
    let b = value.as_bytes();
    let mut toks = [(0usize, 0usize); 64];
    let n = tokens(b, &mut toks);
    let toks = &toks[..n];
    let longest = extra
        .iter()
        .map(String::len)
        .fold(LONGEST_SENSITIVE_WORD, usize::max);
    for i in 0..n {
        // The joined length of the run grows with `k`: only words of exactly that length can
        // match, and none is longer than `longest`.
        let mut total = 0;
        for k in 1..=3.min(n - i) {
            let (s, e) = toks[i + k - 1];
            total += e - s;
            if total > longest {
                break;
            }
            let run = &toks[i..i + k];
            let first = b[run[0].0].to_ascii_lowercase();
            let matches = |w: &str| {
                w.len() == total && w.as_bytes()[0] == first && joined_eq(b, run, w.as_bytes())
            };
            if sensitive_words_of_len(total).iter().any(|w| matches(w))
                || extra.iter().any(|w| matches(w))
            {
                return true;
            }
        }
    }
    false
}

/// The [`SENSITIVE_WORDS`] of length `len` (a test checks that this is the same list).
fn sensitive_words_of_len(len: usize) -> &'static [&'static str] {
    match len {
        3 => &["cvv", "cvc", "csc", "cvn", "ssn", "pwd"],
        4 => &["iban", "ccno"],
        5 => &["ccnum"],
        6 => &["cardno", "passwd"],
        7 => &["cardnum"],
        8 => &["ccnumber", "password"],
        10 => &["cardnumber", "creditcard"],
        11 => &["onetimecode"],
        12 => &["securitycode"],
        14 => &["socialsecurity"],
        _ => &[],
    }
}

/// The length of the longest of [`SENSITIVE_WORDS`].
const LONGEST_SENSITIVE_WORD: usize = {
    let mut i = 0;
    let mut m = 0;
    while i < SENSITIVE_WORDS.len() {
        if SENSITIVE_WORDS[i].len() > m {
            m = SENSITIVE_WORDS[i].len();
        }
        i += 1;
    }
    m
};

/// `input` types that mask: `password`, `tel`, `hidden` (trimmed, any case).
pub(crate) fn input_type_sensitive(value: &str) -> bool {
    let t = value.trim_matches(|c: char| c.is_ascii_whitespace());
    t.eq_ignore_ascii_case("password")
        || t.eq_ignore_ascii_case("tel")
        || t.eq_ignore_ascii_case("hidden")
}

/// `data-sensitive` marks a subtree unless its value is `"false"` (trimmed, any case).
pub(crate) fn data_sensitive(value: &str) -> bool {
    !value
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .eq_ignore_ascii_case("false")
}

/// SVG element names in their camelCase form (the HTML parser's adjustment table).
pub(crate) fn svg_element_case(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "altglyph" => "altGlyph",
        "altglyphdef" => "altGlyphDef",
        "altglyphitem" => "altGlyphItem",
        "animatecolor" => "animateColor",
        "animatemotion" => "animateMotion",
        "animatetransform" => "animateTransform",
        "clippath" => "clipPath",
        "feblend" => "feBlend",
        "fecolormatrix" => "feColorMatrix",
        "fecomponenttransfer" => "feComponentTransfer",
        "fecomposite" => "feComposite",
        "feconvolvematrix" => "feConvolveMatrix",
        "fediffuselighting" => "feDiffuseLighting",
        "fedisplacementmap" => "feDisplacementMap",
        "fedistantlight" => "feDistantLight",
        "fedropshadow" => "feDropShadow",
        "feflood" => "feFlood",
        "fefunca" => "feFuncA",
        "fefuncb" => "feFuncB",
        "fefuncg" => "feFuncG",
        "fefuncr" => "feFuncR",
        "fegaussianblur" => "feGaussianBlur",
        "feimage" => "feImage",
        "femerge" => "feMerge",
        "femergenode" => "feMergeNode",
        "femorphology" => "feMorphology",
        "feoffset" => "feOffset",
        "fepointlight" => "fePointLight",
        "fespecularlighting" => "feSpecularLighting",
        "fespotlight" => "feSpotLight",
        "fetile" => "feTile",
        "feturbulence" => "feTurbulence",
        "foreignobject" => "foreignObject",
        "glyphref" => "glyphRef",
        "lineargradient" => "linearGradient",
        "radialgradient" => "radialGradient",
        "textpath" => "textPath",
        _ => return None,
    })
}

/// SVG attribute names in their camelCase form (the HTML parser's adjustment table).
pub(crate) fn svg_attr_case(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "attributename" => "attributeName",
        "attributetype" => "attributeType",
        "basefrequency" => "baseFrequency",
        "baseprofile" => "baseProfile",
        "calcmode" => "calcMode",
        "clippathunits" => "clipPathUnits",
        "diffuseconstant" => "diffuseConstant",
        "edgemode" => "edgeMode",
        "filterunits" => "filterUnits",
        "glyphref" => "glyphRef",
        "gradienttransform" => "gradientTransform",
        "gradientunits" => "gradientUnits",
        "kernelmatrix" => "kernelMatrix",
        "kernelunitlength" => "kernelUnitLength",
        "keypoints" => "keyPoints",
        "keysplines" => "keySplines",
        "keytimes" => "keyTimes",
        "lengthadjust" => "lengthAdjust",
        "limitingconeangle" => "limitingConeAngle",
        "markerheight" => "markerHeight",
        "markerunits" => "markerUnits",
        "markerwidth" => "markerWidth",
        "maskcontentunits" => "maskContentUnits",
        "maskunits" => "maskUnits",
        "numoctaves" => "numOctaves",
        "pathlength" => "pathLength",
        "patterncontentunits" => "patternContentUnits",
        "patterntransform" => "patternTransform",
        "patternunits" => "patternUnits",
        "pointsatx" => "pointsAtX",
        "pointsaty" => "pointsAtY",
        "pointsatz" => "pointsAtZ",
        "preservealpha" => "preserveAlpha",
        "preserveaspectratio" => "preserveAspectRatio",
        "primitiveunits" => "primitiveUnits",
        "refx" => "refX",
        "refy" => "refY",
        "repeatcount" => "repeatCount",
        "repeatdur" => "repeatDur",
        "requiredextensions" => "requiredExtensions",
        "requiredfeatures" => "requiredFeatures",
        "specularconstant" => "specularConstant",
        "specularexponent" => "specularExponent",
        "spreadmethod" => "spreadMethod",
        "startoffset" => "startOffset",
        "stddeviation" => "stdDeviation",
        "stitchtiles" => "stitchTiles",
        "surfacescale" => "surfaceScale",
        "systemlanguage" => "systemLanguage",
        "tablevalues" => "tableValues",
        "targetx" => "targetX",
        "targety" => "targetY",
        "textlength" => "textLength",
        "viewbox" => "viewBox",
        "viewtarget" => "viewTarget",
        "xchannelselector" => "xChannelSelector",
        "ychannelselector" => "yChannelSelector",
        "zoomandpan" => "zoomAndPan",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_heuristics_match_documented_words() {
        for v in [
            "cvv",
            "cc_cvv2",
            "cardNumber",
            "card-number",
            "card_number",
            "CCNumber",
            "cc-number",
            "billing[iban]",
            "ssn",
            "user.SSN",
            "creditCardNumber",
            "new_password",
            "securityCode",
        ] {
            assert!(name_sensitive(v, &[]), "{v}");
        }
        for v in [
            "businessname",
            "classnames",
            "card",
            "number",
            "email",
            "pin",
            "lessons",
        ] {
            assert!(!name_sensitive(v, &[]), "{v}");
        }
        assert!(name_sensitive("loyalty_pin", &["pin".to_string()]));
    }

    #[test]
    fn plain_attributes_are_untouched_by_every_rule() {
        for name in [
            "class",
            "id",
            "width",
            "height",
            "type",
            "name",
            "for",
            "rel",
            "lang",
            "dir",
            "role",
            "colspan",
            "rowspan",
            "loading",
            "tabindex",
            "title",
            "alt",
            "placeholder",
            "label",
        ] {
            assert!(plain_attr(name), "{name}");
            assert_eq!(attr_name_shape(name), Some(false), "{name}");
            assert!(!always_dropped_attr(name), "{name}");
            assert!(!crate::render::is_url_attr(name), "{name}");
            assert!(
                !matches!(
                    name,
                    "style" | "srcdoc" | "value" | "checked" | "selected" | "values" | "to"
                ),
                "{name}"
            );
        }
        for name in [
            "value", "style", "href", "src", "onclick", "Class", "data-x",
        ] {
            assert!(!plain_attr(name), "{name}");
        }
    }

    #[test]
    fn words_by_length_are_the_sensitive_words() {
        let mut by_len: Vec<&str> = (0..=LONGEST_SENSITIVE_WORD + 1)
            .flat_map(|n| sensitive_words_of_len(n).iter().copied())
            .collect();
        let mut words = SENSITIVE_WORDS.to_vec();
        by_len.sort_unstable();
        words.sort_unstable();
        assert_eq!(by_len, words);
        for n in 0..=LONGEST_SENSITIVE_WORD + 1 {
            assert!(sensitive_words_of_len(n).iter().all(|w| w.len() == n));
        }
        assert!(SENSITIVE_WORDS
            .iter()
            .all(|w| w.bytes().all(|c| c.is_ascii_lowercase())));
    }

    #[test]
    fn autocomplete_tokens() {
        for v in [
            "cc-number",
            "CC-EXP",
            "section-pay billing cc-csc",
            "shipping  cc-name",
            "current-password",
            "New-Password",
            "one-time-code",
        ] {
            assert!(autocomplete_sensitive(v), "{v}");
        }
        for v in ["email", "off", "cc", "username", "billing street-address"] {
            assert!(!autocomplete_sensitive(v), "{v}");
        }
    }
}
