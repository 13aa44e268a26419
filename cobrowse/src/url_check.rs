//! URL checks shared by HTML attributes and CSS `url()`.

use std::borrow::Cow;

use crate::policy::Policy;

/// Where a URL is used, which decides the schemes it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlUse {
    /// A link the agent could follow: `http`, `https`, `mailto`, `tel`, `#fragment`.
    Link,
    /// Something the viewer fetches: `http`, `https`, `#fragment`, and `data:image/…` (not SVG)
    /// when `image` is true and the policy allows data images.
    Resource { image: bool },
    /// Only `#fragment` (SVG `use`, `textPath`, gradients…: references inside the document).
    Fragment,
}

/// Strip what a browser's URL parser strips: leading/trailing C0 controls and spaces, and every
/// ASCII tab and newline anywhere (`java\tscript:` is `javascript:` to a browser).
pub(crate) fn clean(raw: &str) -> Cow<'_, str> {
    // Bytes up to 0x20 are ASCII (UTF-8 never uses them inside a character): trimming them
    // byte-wise is trimming the characters `<= ' '`.
    let b = raw.as_bytes();
    let mut i = 0;
    let mut j = b.len();
    while i < j && b[i] <= b' ' {
        i += 1;
    }
    while j > i && b[j - 1] <= b' ' {
        j -= 1;
    }
    let t = &raw[i..j];
    if has_tab_or_newline(t.as_bytes()) {
        Cow::Owned(
            t.chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
                .collect(),
        )
    } else {
        Cow::Borrowed(t)
    }
}

/// Does `b` hold an ASCII tab, LF or CR? (16-byte blocks are compared at once.)
fn has_tab_or_newline(b: &[u8]) -> bool {
    let is = |c: u8| (c == b'\t') | (c == b'\n') | (c == b'\r');
    let mut blocks = b.chunks_exact(16);
    for block in &mut blocks {
        let block: &[u8; 16] = block.try_into().expect("a 16-byte chunk");
        if block.iter().fold(0u8, |m, &c| m | u8::from(is(c))) != 0 {
            return true;
        }
    }
    blocks.remainder().iter().any(|&c| is(c))
}

/// The scheme of a cleaned URL (as written, not lowercased), or `None` for a relative URL.
pub(crate) fn scheme(cleaned: &str) -> Option<&str> {
    let b = cleaned.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    for (i, &c) in b.iter().enumerate() {
        if c == b':' {
            return Some(&cleaned[..i]);
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) {
            return None;
        }
    }
    None
}

/// `rest` is what follows `data:`: is it a raster image (never SVG)?
pub(crate) fn is_data_image(rest: &str) -> bool {
    let Some(comma) = rest.find(',') else {
        return false;
    };
    let meta = &rest[..comma];
    let mime = meta.split(';').next().unwrap_or("").trim();
    const OK: [&str; 10] = [
        "image/png",
        "image/apng",
        "image/jpeg",
        "image/jpg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    ];
    OK.iter().any(|m| m.eq_ignore_ascii_case(mime))
}

/// Check one URL; `Some` is the URL to emit (cleaned, normalized or resolved), `None` means drop.
pub(crate) fn check<'a>(raw: &'a str, use_: UrlUse, policy: &Policy) -> Option<Cow<'a, str>> {
    let cleaned = clean(raw);
    if cleaned.starts_with('#') {
        return Some(cleaned);
    }
    if use_ == UrlUse::Fragment {
        return None;
    }
    match scheme(&cleaned) {
        // Any `http`/`https` URL is harmless as it is (a browser parses the same scheme): it is
        // kept verbatim, which also keeps the output stable.
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            Some(cleaned)
        }
        Some(s)
            if use_ == UrlUse::Link
                && (s.eq_ignore_ascii_case("mailto") || s.eq_ignore_ascii_case("tel")) =>
        {
            Some(cleaned)
        }
        Some(s) if s.eq_ignore_ascii_case("data") => match use_ {
            UrlUse::Resource { image: true }
                if policy.data_images && is_data_image(&cleaned[5..]) =>
            {
                Some(cleaned)
            }
            _ => None,
        },
        Some(_) => None,
        None => {
            let base = policy.base_url.as_ref()?;
            let u = base.join(&cleaned).ok()?;
            matches!(u.scheme(), "http" | "https").then(|| Cow::Owned(String::from(u)))
        }
    }
}

/// Check every candidate of a `srcset`; returns the rebuilt attribute, or `None` if no candidate
/// survived. Candidates are `URL [descriptor]`, separated by commas (HTML's algorithm, simplified:
/// a descriptor runs to the next comma outside parentheses).
pub(crate) fn check_srcset(raw: &str, image: bool, policy: &Policy) -> Option<String> {
    let s = raw.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    loop {
        while i < s.len() && (ws(s[i]) || s[i] == b',') {
            i += 1;
        }
        if i >= s.len() {
            break;
        }
        let start = i;
        while i < s.len() && !ws(s[i]) {
            i += 1;
        }
        let mut url = &raw[start..i];
        let mut descriptor = "";
        if url.ends_with(',') {
            url = url.trim_end_matches(',');
        } else {
            let dstart = i;
            let mut depth = 0u32;
            while i < s.len() {
                match s[i] {
                    b'(' => depth += 1,
                    b')' => depth = depth.saturating_sub(1),
                    b',' if depth == 0 => break,
                    _ => {}
                }
                i += 1;
            }
            descriptor = raw[dstart..i].trim_matches(|c: char| c.is_ascii_whitespace());
            i += 1;
        }
        if url.is_empty()
            || !descriptor.bytes().all(|b| {
                b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+' || b == b' '
            })
        {
            continue;
        }
        if let Some(u) = check(url, UrlUse::Resource { image }, policy) {
            if u.is_empty() || u.ends_with(',') || u.bytes().any(|c| c.is_ascii_whitespace()) {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&u);
            if !descriptor.is_empty() {
                out.push(' ');
                out.push_str(descriptor);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Policy {
        Policy::default()
    }

    #[test]
    fn scheme_checks_survive_obfuscation() {
        for bad in [
            "javascript:alert(1)",
            " JaVaScRiPt:alert(1)",
            "\u{1}\u{8}javascript:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:alert(1)",
            "jav\r\nascript:alert(1)",
            "vbscript:msgbox(1)",
            "data:text/html,<script>alert(1)</script>",
            "data:image/svg+xml;base64,PHN2Zz4=",
            "DATA:IMAGE/SVG+XML,<svg onload=alert(1)>",
            "file:///etc/passwd",
            "blob:https://x/1",
            "relative/path",
            "/absolute/path",
            "//evil.example/x",
            "",
        ] {
            assert_eq!(
                check(bad, UrlUse::Resource { image: true }, &p()),
                None,
                "{bad:?}"
            );
            assert_eq!(check(bad, UrlUse::Link, &p()), None, "{bad:?}");
        }
    }

    #[test]
    fn good_urls_are_kept() {
        assert_eq!(
            check(" https://a.example/x\ty ", UrlUse::Link, &p()).as_deref(),
            Some("https://a.example/xy")
        );
        assert_eq!(
            check("#top", UrlUse::Fragment, &p()).as_deref(),
            Some("#top")
        );
        assert_eq!(
            check("mailto:a@b.c", UrlUse::Link, &p()).as_deref(),
            Some("mailto:a@b.c")
        );
        assert_eq!(
            check("mailto:a@b.c", UrlUse::Resource { image: true }, &p()),
            None
        );
        let png = "data:image/png;base64,iVBORw0KGgo=";
        assert_eq!(
            check(png, UrlUse::Resource { image: true }, &p()).as_deref(),
            Some(png)
        );
        assert_eq!(check(png, UrlUse::Resource { image: false }, &p()), None);
        assert_eq!(check(png, UrlUse::Link, &p()), None);
    }

    #[test]
    fn relative_urls_resolve_against_the_base_only() {
        let base = Policy::builder()
            .base_url(url::Url::parse("https://shop.example/a/b").unwrap())
            .build();
        assert_eq!(
            check("c?d=1", UrlUse::Link, &base).as_deref(),
            Some("https://shop.example/a/c?d=1")
        );
        assert_eq!(check("javascript:x", UrlUse::Link, &base), None);
    }

    #[test]
    fn srcset_candidates_are_checked_one_by_one() {
        let got = check_srcset(
            "https://a.example/1.png 1x, javascript:alert(1) 2x,data:image/png;base64,AAAA 3x, https://a.example/w.png 480w",
            true,
            &p(),
        );
        assert_eq!(
            got.as_deref(),
            Some("https://a.example/1.png 1x, data:image/png;base64,AAAA 3x, https://a.example/w.png 480w")
        );
        assert_eq!(check_srcset("javascript:alert(1)", true, &p()), None);
    }
}
