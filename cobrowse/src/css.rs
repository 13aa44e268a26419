//! A small, strict CSS sanitizer for `style` attributes and `<style>` elements.
//!
//! It is not a full CSS parser: it splits style sheets into rules and declarations (respecting
//! strings, parentheses and braces), and then **drops** every declaration or rule it finds
//! dangerous, keeping the rest verbatim (comments become a space):
//!
//! - `@import`, `@namespace`, `@charset` and unknown at-rules;
//! - the properties `behavior`, `-ms-behavior`, `binding`, `-moz-binding`;
//! - any value that, with CSS escapes decoded, case folded and whitespace removed, contains
//!   `expression(`, `javascript:`, `vbscript:`, `livescript:`, `-moz-binding` or `behavior:`;
//! - any `url(…)` (escaped spellings like `\75 rl(` included) or URL string in `image-set()`,
//!   `image()`, `src()`, `cross-fade()` whose URL the policy refuses. Kept URLs are rewritten as
//!   `url("…")` with quotes, backslashes, angle brackets, parentheses and whitespace
//!   percent-encoded;
//! - inside a masked element, every declaration that loads a URL.

use crate::policy::Policy;
use crate::url_check::{self, UrlUse};
use crate::Stats;

/// Nesting of blocks deeper than this is dropped.
const MAX_CSS_NESTING: usize = 16;

pub(crate) struct CssCtx<'p> {
    pub(crate) policy: &'p Policy,
    /// `false` inside masked elements: no URL may be loaded.
    pub(crate) allow_urls: bool,
}

/// Sanitize the value of a `style` attribute into `out`: the cleaned declarations joined by `;`.
pub(crate) fn sanitize_declarations_into(
    input: &str,
    ctx: &CssCtx<'_>,
    stats: &mut Stats,
    out: &mut String,
) {
    let text = strip_comments(input, false);
    let start = out.len();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let j = scan(b, i, false);
        let stmt = trim_ws(&text[i..j]);
        i = j + 1;
        if stmt.is_empty() {
            continue;
        }
        let before = out.len();
        if out.len() > start {
            out.push(';');
        }
        if !declaration(stmt, ctx, out) {
            out.truncate(before);
            stats.removed_css += 1;
        }
    }
}

/// [`sanitize_declarations_into`] a new string.
#[cfg(test)]
pub(crate) fn sanitize_declarations(input: &str, ctx: &CssCtx<'_>, stats: &mut Stats) -> String {
    let mut out = String::new();
    sanitize_declarations_into(input, ctx, stats, &mut out);
    out
}

/// Sanitize a style sheet (the text of a `<style>` element).
pub(crate) fn sanitize_stylesheet(input: &str, ctx: &CssCtx<'_>, stats: &mut Stats) -> String {
    let text = strip_comments(input, true);
    let mut out = String::with_capacity(text.len());
    items(&text, true, 0, ctx, stats, &mut out);
    out
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// `s` without leading and trailing CSS whitespace ([`is_ws`], all ASCII).
fn trim_ws(s: &str) -> &str {
    let b = s.as_bytes();
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let mut i = 0;
    let mut j = b.len();
    while i < j && ws(b[i]) {
        i += 1;
    }
    while j > i && ws(b[j - 1]) {
        j -= 1;
    }
    // Both ends are next to ASCII bytes, so on character boundaries.
    &s[i..j]
}

/// Replace comments (and, in style sheets, `<!--`/`-->`) by one space, outside strings.
fn strip_comments(input: &str, sheet: bool) -> std::borrow::Cow<'_, str> {
    // A byte search first: most values have no `/`, and a substring search costs more to set up
    // than the whole value takes to scan.
    let maybe = input.as_bytes().contains(&b'/') && input.contains("/*");
    if !maybe && !(sheet && (input.contains("<!--") || input.contains("-->"))) {
        return std::borrow::Cow::Borrowed(input);
    }
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => i = skip_string(b, i, q),
            b'\\' => i += 2,
            b'/' if b.get(i + 1) == Some(&b'*') => {
                out.push_str(&input[last..i]);
                out.push(' ');
                i = match input[i + 2..].find("*/") {
                    Some(k) => i + 2 + k + 2,
                    None => b.len(),
                };
                last = i;
            }
            b'<' if sheet && input[i..].starts_with("<!--") => {
                out.push_str(&input[last..i]);
                out.push(' ');
                i += 4;
                last = i;
            }
            b'-' if sheet && input[i..].starts_with("-->") => {
                out.push_str(&input[last..i]);
                out.push(' ');
                i += 3;
                last = i;
            }
            _ => i += 1,
        }
    }
    if last < b.len() {
        out.push_str(&input[last.min(b.len())..]);
    }
    std::borrow::Cow::Owned(out)
}

/// Index just past a string starting at `i` (quote `q`); strings end at the quote, a newline or
/// the end.
fn skip_string(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'\n' => return i + 1,
            c if c == q => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Index of the first `;` (or, when `braces`, `{` or `}`) at parenthesis depth 0 outside strings,
/// or the length.
fn scan(b: &[u8], mut i: usize, braces: bool) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        // Skip the bytes that need no attention in one tight loop.
        if !SCAN_STOP[usize::from(b[i])] {
            i += 1;
            continue;
        }
        match b[i] {
            q @ (b'"' | b'\'') => {
                i = skip_string(b, i, q);
                continue;
            }
            b'\\' => {
                i += 2;
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => return i,
            b'{' | b'}' if braces => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The bytes [`scan`] acts on.
static SCAN_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let stops = *b"\"'\\()[];{}";
    let mut i = 0;
    while i < stops.len() {
        t[stops[i] as usize] = true;
        i += 1;
    }
    t
};

/// Index of the `}` closing the block opened at `open`, or the length.
fn block_end(b: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i = skip_string(b, i, q);
                continue;
            }
            b'\\' => {
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

fn items(
    s: &str,
    top: bool,
    nesting: usize,
    ctx: &CssCtx<'_>,
    stats: &mut Stats,
    out: &mut String,
) {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b';') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let j = scan(b, i, true);
        match b.get(j) {
            Some(b'{') => {
                let end = block_end(b, j);
                let prelude = trim_ws(&s[i..j]);
                let block = &s[j + 1..end.max(j + 1)];
                i = end + 1;
                if nesting >= MAX_CSS_NESTING || !rule(prelude, block, nesting, ctx, stats, out) {
                    stats.removed_css += 1;
                }
            }
            Some(b'}') => {
                // A stray `}`: what precedes it is junk.
                if !trim_ws(&s[i..j]).is_empty() {
                    stats.removed_css += 1;
                }
                i = j + 1;
            }
            _ => {
                let stmt = trim_ws(&s[i..j]);
                i = j + 1;
                if top {
                    // Statement at-rules (`@import`, `@charset`, `@namespace`…) and junk.
                    match layer_statement(stmt) {
                        Some(()) => {
                            out.push_str(stmt);
                            out.push(';');
                        }
                        None => stats.removed_css += 1,
                    }
                } else {
                    let before = out.len();
                    if declaration(stmt, ctx, out) {
                        out.push(';');
                    } else {
                        out.truncate(before);
                        stats.removed_css += 1;
                    }
                }
            }
        }
    }
}

/// `@layer a, b.c;` is the only statement at-rule kept.
fn layer_statement(stmt: &str) -> Option<()> {
    let rest = stmt.strip_prefix("@layer")?;
    (rest.starts_with(is_ws)
        && rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b',' | b'.' | b'-' | b'_')))
    .then_some(())
}

/// Emit one rule; `false` if it was dropped.
fn rule(
    prelude: &str,
    block: &str,
    nesting: usize,
    ctx: &CssCtx<'_>,
    stats: &mut Stats,
    out: &mut String,
) -> bool {
    if prelude.is_empty() || dangerous(prelude) || has_url_function(prelude) {
        return false;
    }
    if let Some(at) = prelude.strip_prefix('@') {
        let name_len = at
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'-')
            .count();
        let name = at[..name_len].to_ascii_lowercase();
        let keep = matches!(
            name.as_str(),
            "media"
                | "supports"
                | "container"
                | "layer"
                | "scope"
                | "starting-style"
                | "font-face"
                | "page"
                | "counter-style"
                | "property"
                | "font-palette-values"
                | "font-feature-values"
                | "view-transition"
                | "position-try"
                | "keyframes"
                | "-webkit-keyframes"
                | "-moz-keyframes"
        );
        if !keep {
            return false;
        }
    }
    out.push_str(prelude);
    out.push('{');
    items(block, false, nesting + 1, ctx, stats, out);
    out.push('}');
    true
}

/// Are the parentheses and brackets of a declaration closed, and its strings and escapes
/// complete? An open `(` swallows the `;` after it, so an unbalanced declaration would grow by
/// one `;` at every pass (a fuzzer found the output was not stable): it is dropped instead.
fn balanced(b: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                // The string must end at its own quote (not a newline, not the end).
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => return false,
                        Some(b'\\') => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'\\' if i + 1 >= b.len() => return false,
            b'\\' => i += 1,
            b'(' | b'[' => depth += 1,
            b')' | b']' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

/// Append one `name: value` declaration, cleaned; `false` drops it (the caller truncates).
fn declaration(stmt: &str, ctx: &CssCtx<'_>, d: &mut String) -> bool {
    declaration_inner(stmt, ctx, d).is_some()
}

fn declaration_inner(stmt: &str, ctx: &CssCtx<'_>, d: &mut String) -> Option<()> {
    if !balanced(stmt.as_bytes()) {
        return None;
    }
    let colon = stmt.bytes().position(|c| c == b':')?;
    let name = trim_ws(&stmt[..colon]);
    let value = trim_ws(&stmt[colon + 1..]);
    let nb = name.as_bytes();
    // At most two leading dashes (`--custom`, `-vendor-x`), then a letter or `_` (or anything
    // valid after `--`), and only `[A-Za-z0-9_-]`.
    let dashes = nb.iter().take_while(|&&c| c == b'-').count();
    let body = &nb[dashes..];
    let custom = dashes == 2;
    if dashes > 2
        || body.is_empty()
        || !(custom || body[0].is_ascii_alphabetic() || body[0] == b'_')
        || !nb
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
    {
        return None;
    }
    if matches!(nb.len(), 7 | 8 | 12)
        && ["behavior", "-ms-behavior", "binding", "-moz-binding"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
    {
        return None;
    }
    d.push_str(name);
    d.push(':');
    // Every dangerous construct needs one of these bytes (`url(`, `expression(`, `javascript:`,
    // `@import`, an escape): without them the value is kept as it is.
    if !value
        .bytes()
        .any(|b| matches!(b, b'\\' | b'(' | b':' | b'@'))
    {
        d.push_str(value);
        return Some(());
    }
    let value = rewrite_value(value, ctx)?;
    if dangerous(&value) {
        return None;
    }
    d.push_str(&value);
    Some(())
}

/// Decode CSS escapes, fold ASCII case, drop whitespace and control characters.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            let mut hex = String::new();
            while hex.len() < 6 {
                match it.peek() {
                    Some(h) if h.is_ascii_hexdigit() => {
                        hex.push(*h);
                        it.next();
                    }
                    _ => break,
                }
            }
            if hex.is_empty() {
                if let Some(n) = it.next() {
                    out.extend(n.to_lowercase());
                }
            } else {
                if it.peek().is_some_and(|c| is_ws(*c)) {
                    it.next();
                }
                let cp = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
                let ch = char::from_u32(cp)
                    .filter(|c| *c != '\0')
                    .unwrap_or('\u{FFFD}');
                out.extend(ch.to_lowercase());
            }
        } else if c > ' ' && c != '\u{7f}' {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn dangerous(s: &str) -> bool {
    let n = normalize(s);
    [
        "expression(",
        "javascript:",
        "vbscript:",
        "livescript:",
        "-moz-binding",
        "behavior:",
        "@import",
    ]
    .iter()
    .any(|p| n.contains(p))
}

/// Does a selector or at-rule prelude call `url()` (or an escaped spelling of it)?
fn has_url_function(s: &str) -> bool {
    normalize(s).contains("url(")
}

/// Decode the escapes of an identifier or string body.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let mut hex = String::new();
        while hex.len() < 6 {
            match it.peek() {
                Some(h) if h.is_ascii_hexdigit() => {
                    hex.push(*h);
                    it.next();
                }
                _ => break,
            }
        }
        if hex.is_empty() {
            match it.next() {
                Some('\n') | None => {}
                Some(n) => out.push(n),
            }
        } else {
            if it.peek().is_some_and(|c| is_ws(*c)) {
                it.next();
            }
            let cp = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
            out.push(
                char::from_u32(cp)
                    .filter(|c| *c != '\0')
                    .unwrap_or('\u{FFFD}'),
            );
        }
    }
    out
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80
}

/// Copy `value`, checking and canonicalizing every URL it loads. `None`: drop the declaration.
fn rewrite_value(value: &str, ctx: &CssCtx<'_>) -> Option<String> {
    let b = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    // For each open parenthesis: are strings directly inside it URLs?
    let mut funcs: Vec<bool> = Vec::new();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            let end = skip_string(b, i, c);
            if funcs.last() == Some(&true) {
                if end - 1 <= i || b[end - 1] != c {
                    return None;
                }
                let url = unescape(&value[i + 1..end - 1]);
                out.push_str(&value[last..i]);
                push_url(&mut out, &url, ctx, false)?;
                last = end;
            }
            i = end;
            continue;
        }
        if c == b'\\' || is_ident_byte(c) {
            // An identifier (possibly a function name).
            let start = i;
            while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'\\') {
                if b[i] == b'\\' {
                    i += 1;
                    // A hex escape may be followed by one whitespace; another escape is one
                    // character.
                    let hs = i;
                    while i < b.len() && i - hs < 6 && b[i].is_ascii_hexdigit() {
                        i += 1;
                    }
                    if i == hs || (i < b.len() && b[i].is_ascii_whitespace()) {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
            let i2 = i.min(b.len());
            if b.get(i2) == Some(&b'(') {
                let name = unescape(&value[start..i2]).to_ascii_lowercase();
                if name == "url" {
                    let (url, end) = url_argument(value, i2 + 1)?;
                    out.push_str(&value[last..start]);
                    push_url(&mut out, &url, ctx, true)?;
                    i = end;
                    last = end;
                    continue;
                }
                funcs.push(matches!(
                    name.as_str(),
                    "image-set"
                        | "-webkit-image-set"
                        | "image"
                        | "src"
                        | "cross-fade"
                        | "-webkit-cross-fade"
                ));
                i = i2 + 1;
                continue;
            }
            i = i2;
            continue;
        }
        match c {
            b'(' => funcs.push(false),
            b')' => {
                funcs.pop();
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&value[last.min(b.len())..]);
    Some(out)
}

/// Parse the argument of `url(` starting at `i`; returns the decoded URL and the index after `)`.
fn url_argument(value: &str, mut i: usize) -> Option<(String, usize)> {
    let b = value.as_bytes();
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let url;
    if let Some(&q) = b.get(i).filter(|c| **c == b'"' || **c == b'\'') {
        let end = skip_string(b, i, q);
        if end > b.len() || b.get(end - 1) != Some(&q) || end - 1 == i {
            return None;
        }
        url = unescape(&value[i + 1..end - 1]);
        i = end;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
    } else {
        let start = i;
        while i < b.len() && b[i] != b')' {
            if matches!(b[i], b'"' | b'\'' | b'(') || b[i] <= b' ' {
                break;
            }
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        let i2 = i.min(b.len());
        url = unescape(&value[start..i2]);
        i = i2;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
    }
    (b.get(i) == Some(&b')')).then_some((url, i + 1))
}

/// Check a CSS URL and append it canonically (`url('…')` or `'…'`).
fn push_url(out: &mut String, url: &str, ctx: &CssCtx<'_>, func: bool) -> Option<()> {
    if !ctx.allow_urls {
        return None;
    }
    let ok = url_check::check(url, UrlUse::Resource { image: true }, ctx.policy)?;
    if ok.is_empty() {
        return None;
    }
    if func {
        out.push_str("url('");
    } else {
        out.push('\'');
    }
    for ch in ok.chars() {
        match ch {
            '"' | '\'' | '\\' | '<' | '>' | '(' | ')' | '&' => {
                out.push_str(&format!("%{:02X}", ch as u32));
            }
            c if c <= ' ' || c == '\u{7f}' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    if func {
        out.push(')');
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(s: &str) -> String {
        let p = Policy::default();
        let ctx = CssCtx {
            policy: &p,
            allow_urls: true,
        };
        sanitize_declarations(s, &ctx, &mut Stats::default())
    }

    fn sheet(s: &str) -> String {
        let p = Policy::default();
        let ctx = CssCtx {
            policy: &p,
            allow_urls: true,
        };
        sanitize_stylesheet(s, &ctx, &mut Stats::default())
    }

    #[test]
    fn safe_declarations_survive() {
        assert_eq!(decl("color: red; margin:0 auto"), "color:red;margin:0 auto");
        assert_eq!(
            decl("background: url(https://a.example/bg.png) no-repeat"),
            "background:url('https://a.example/bg.png') no-repeat"
        );
        assert_eq!(
            decl("--brand: #333; font-family: 'Inter', sans-serif"),
            "--brand:#333;font-family:'Inter', sans-serif"
        );
    }

    #[test]
    fn dangerous_declarations_are_dropped() {
        for bad in [
            "background:url(javascript:alert(1))",
            "background:url( 'javascript:alert(1)' )",
            "background:\\75 rl(javascript:alert(1))",
            "background:u\\rl(javascript:alert(1))",
            "width:expression(alert(1))",
            "width:expr/**/ession(alert(1))",
            "width:\\65 xpression(alert(1))",
            "behavior:url(x.htc)",
            "-moz-binding:url(https://a.example/x.xml#x)",
            "background-image:image-set('javascript:alert(1)' 1x)",
            "background:url(data:image/svg+xml,<svg onload=alert(1)>)",
            "background:url(/relative.png)",
            "content:'javascript:alert(1)'",
        ] {
            assert_eq!(decl(bad), "", "{bad}");
        }
    }

    #[test]
    fn style_sheets_drop_imports_and_keep_rules() {
        let out = sheet(
            "@import url(https://evil.example/x.css); @charset 'utf-8';\n\
             body { color: red; background: url(javascript:alert(1)) }\n\
             @media (max-width: 600px) { .a { display: none } }\n\
             p::after{content:'</style><script>alert(1)</script>'}",
        );
        assert!(!out.contains("@import"), "{out}");
        assert!(!out.contains("javascript"), "{out}");
        assert!(out.contains("body{color:red;}"), "{out}");
        assert!(
            out.contains("@media (max-width: 600px){.a{display:none;}}"),
            "{out}"
        );
    }

    #[test]
    fn sanitizing_twice_changes_nothing() {
        for s in [
            "a{b:c} /* x */ @media print { p { color : red !important } } <!-- --> d{e:url( 'https://x.example/a b' )}",
            "x{background:image-set(\"https://a.example/1.png\" 1x, 'https://a.example/2.png' 2x)}",
        ] {
            let once = sheet(s);
            assert_eq!(sheet(&once), once);
        }
    }
}
