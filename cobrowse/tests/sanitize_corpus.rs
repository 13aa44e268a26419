//! The sensitive-data corpus and the XSS corpus (`tests/corpus/*.txt`), plus focused cases.

mod common;

use common::*;

fn tokens<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let t = &rest[i..];
        let end = t
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(t.len());
        out.push(&t[..end]);
        rest = &t[end..];
    }
    out
}

#[test]
fn no_secret_survives_anywhere_in_the_sensitive_corpus() {
    let lines = corpus("sensitive.txt");
    assert!(lines.len() >= 50, "corpus too small");
    let mut secrets = 0;
    for line in &lines {
        let out = clean_stable(line);
        for s in tokens(line, "S3CR3T") {
            secrets += 1;
            assert!(
                !out.contains(s),
                "secret {s} survived in {out}\n(input {line})"
            );
        }
    }
    assert!(secrets >= 80, "only {secrets} secrets in the corpus");
}

#[test]
fn ordinary_content_survives_beside_the_masks() {
    for line in corpus("sensitive.txt") {
        let out = clean_stable(&line);
        for k in tokens(&line, "KEEP") {
            assert!(out.contains(k), "{k} lost in {out}\n(input {line})");
        }
    }
}

#[test]
fn the_whole_sensitive_corpus_as_one_page_leaks_nothing() {
    let lines = corpus("sensitive.txt");
    let page: String = lines.iter().map(|l| format!("<div>{l}</div>\n")).collect();
    let out = clean_stable(&page);
    for line in &lines {
        for s in tokens(line, "S3CR3T") {
            assert!(!out.contains(s), "secret {s} survived");
        }
    }
    assert!(unsafe_things(&out).is_empty());
}

#[test]
fn masked_fields_carry_a_fixed_length_mask() {
    for secret in ["a", "hunter2", &"x".repeat(500)] {
        let out = clean_stable(&format!(r#"<input type=password value="{secret}">"#));
        assert!(out.contains(&format!(r#"value="{MASK}""#)), "{out}");
    }
    // Emptiness does not leak either.
    let out = clean_stable("<input type=password>");
    assert!(out.contains(&format!(r#"value="{MASK}""#)), "{out}");
}

#[test]
fn masked_choices_do_not_reveal_which_option_or_box() {
    let out = clean_stable(
        "<div data-sensitive><select><option>A</option><option selected>B</option></select>\
         <input type=radio name=r><input type=radio name=r checked></div>",
    );
    assert!(!out.contains("selected"), "{out}");
    assert!(!out.contains("checked"), "{out}");
}

#[test]
fn masked_text_keeps_whitespace_only_nodes_short() {
    let out = clean_stable("<div data-sensitive>\n   <span>secret words</span>\n</div>");
    assert!(
        out.contains(&format!("<span data-fd-masked=\"\">{MASK}</span>")),
        "{out}"
    );
    assert!(!out.contains("secret"));
}

#[test]
fn xss_corpus_output_has_nothing_executable_after_reparse() {
    let lines = corpus("xss.txt");
    assert!(lines.len() >= 40);
    for line in &lines {
        let out = clean_stable(line);
        let problems = unsafe_things(&out);
        assert!(
            problems.is_empty(),
            "{problems:?}\ninput:  {line}\noutput: {out}"
        );
        let lower = out.to_ascii_lowercase();
        assert!(!lower.contains("<script"), "{out}");
        assert!(!lower.contains("javascript:"), "{out}");
        assert!(!lower.contains("vbscript:"), "{out}");
    }
}

#[test]
fn xss_corpus_round_trip_is_stable_from_the_second_pass_on() {
    let policy = Policy::default();
    for line in corpus("xss.txt") {
        let a = sanitize_document(&policy, &line).unwrap();
        let b = sanitize_document(&policy, a.as_str()).unwrap();
        let c = sanitize_document(&policy, b.as_str()).unwrap();
        assert_eq!(a, b, "input {line}");
        assert_eq!(b, c, "input {line}");
    }
}

#[test]
fn safe_links_images_classes_and_styles_survive() {
    let out = clean_stable(
        r##"<p class="lead big" id="intro" style="color: red; margin: 0 auto">Hi <a href="https://shop.example/p?id=1#x" title="Product">product</a>
        <img src="https://cdn.example/a.png" alt="A" width="10" height="20" srcset="https://cdn.example/a2.png 2x">
        <img src="data:image/png;base64,iVBORw0KGgo="><a href="mailto:help@shop.example">mail</a><a href="#top">top</a></p>"##,
    );
    for keep in [
        r#"class="lead big""#,
        r#"id="intro""#,
        r#"style="color:red;margin:0 auto""#,
        r#"href="https://shop.example/p?id=1#x""#,
        r#"title="Product""#,
        r#"src="https://cdn.example/a.png""#,
        r#"srcset="https://cdn.example/a2.png 2x""#,
        r#"src="data:image/png;base64,iVBORw0KGgo=""#,
        r#"href="mailto:help@shop.example""#,
        r##"href="#top""##,
        r#"width="10""#,
    ] {
        assert!(out.contains(keep), "{keep} lost in {out}");
    }
}

#[test]
fn relative_urls_are_dropped_without_base_and_resolved_with_one() {
    let html =
        r#"<a href="/cart">c</a><img src="img/a.png"><div style="background:url(bg.png)">x</div>"#;
    let out = clean_stable(html);
    assert!(
        !out.contains("cart") && !out.contains("img/a.png") && !out.contains("bg.png"),
        "{out}"
    );
    let policy = Policy::builder()
        .base_url(url::Url::parse("https://shop.example/dir/page").unwrap())
        .build();
    let out = sanitize_document(&policy, html).unwrap();
    let out = out.as_str();
    assert!(out.contains(r#"href="https://shop.example/cart""#), "{out}");
    assert!(
        out.contains(r#"src="https://shop.example/dir/img/a.png""#),
        "{out}"
    );
    assert!(
        out.contains("url('https://shop.example/dir/bg.png')"),
        "{out}"
    );
}

#[test]
fn iframes_are_emptied_and_sandboxed_and_srcdoc_is_sanitized_recursively() {
    let out = clean_stable(
        r#"<iframe src="https://x.example/" srcdoc="<b>ok</b><script>alert(1)</script>">fallback</iframe>"#,
    );
    assert!(out.contains(r#"sandbox="""#), "{out}");
    assert!(!out.contains("x.example"), "{out}");
    assert!(!out.contains("fallback"), "{out}");
    assert!(out.contains("&lt;b&gt;ok&lt;/b&gt;"), "{out}");
    assert!(!out.contains("script"), "{out}");
    let policy = Policy::builder()
        .srcdoc(frontdesk_cobrowse::SrcdocMode::Drop)
        .build();
    let out = sanitize_document(&policy, r#"<iframe srcdoc="<b>ok</b>"></iframe>"#).unwrap();
    assert!(!out.as_str().contains("srcdoc"), "{out}");
}

#[test]
fn deep_srcdoc_nesting_is_dropped_past_the_limit() {
    let mut html = "<p>core</p>".to_string();
    for _ in 0..6 {
        let escaped = html.replace('&', "&amp;").replace('"', "&quot;");
        html = format!(r#"<iframe srcdoc="{escaped}"></iframe>"#);
    }
    let out = clean_stable(&html);
    assert!(unsafe_things(&out).is_empty());
    assert!(
        !out.contains("core"),
        "nesting past the limit must be dropped"
    );
}

#[test]
fn stylesheet_links_follow_the_policy() {
    let html = r#"<link rel="stylesheet" href="https://cdn.example/s.css"><link rel="preload" href="https://cdn.example/x.js">"#;
    let out = clean_stable(html);
    assert!(out.contains(r#"href="https://cdn.example/s.css""#), "{out}");
    assert!(!out.contains("x.js"), "{out}");
    let strict = Policy::builder().stylesheet_links(false).build();
    let out = sanitize_document(&strict, html).unwrap();
    assert!(!out.as_str().contains("s.css"), "{out}");
}

#[test]
fn unknown_elements_become_spans_and_custom_elements_stay() {
    let out = clean_stable("<foo-bar class=a>x</foo-bar><blah>y</blah>");
    assert!(out.contains(r#"<foo-bar class="a">x</foo-bar>"#), "{out}");
    assert!(out.contains("<span>y</span>"), "{out}");
}

#[test]
fn svg_icons_survive_with_their_case() {
    let out = clean_stable(
        r##"<svg viewBox="0 0 10 10" width="10"><defs><linearGradient id="g"><stop offset="0"/></linearGradient></defs><path d="M0 0L10 10" fill="url(#g)"/><use href="#g"/></svg>"##,
    );
    assert!(out.contains(r#"viewBox="0 0 10 10""#), "{out}");
    assert!(out.contains("<linearGradient"), "{out}");
    assert!(out.contains(r#"d="M0 0L10 10""#), "{out}");
    assert!(out.contains(r##"<use href="#g">"##), "{out}");
}

#[test]
fn stats_count_masks_and_removals_without_content() {
    let (_, stats) = frontdesk_cobrowse::sanitize_document_with_stats(
        &Policy::default(),
        r#"<input type=password value=x><script>x</script><img src=x onerror=y>"#,
    )
    .unwrap();
    assert_eq!(stats.masked_elements, 1);
    assert_eq!(stats.removed_elements, 1);
    assert!(stats.removed_attributes >= 2);
}

#[test]
fn oversized_documents_are_a_typed_error() {
    let big = "a".repeat(frontdesk_cobrowse::MAX_SNAPSHOT_BYTES + 1);
    assert!(matches!(
        sanitize_document(&Policy::default(), &big),
        Err(frontdesk_cobrowse::Error::SnapshotTooLarge { .. })
    ));
    let deep = "<div>".repeat(frontdesk_cobrowse::MAX_DEPTH + 10);
    assert!(matches!(
        sanitize_document(&Policy::default(), &deep),
        Err(frontdesk_cobrowse::Error::TooDeep { .. })
    ));
}

#[test]
fn quirks_mode_input_is_normalized_to_what_the_viewer_parses() {
    // Without a doctype `<p><table>` nests in quirks mode; the viewer parses our output in
    // no-quirks mode, where the table closes the paragraph.
    let out = clean_stable("<p>a<table><tr><td>b</td></tr></table>");
    assert!(out.starts_with("<!DOCTYPE html>"));
    assert!(unsafe_things(&out).is_empty());
}
