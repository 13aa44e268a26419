//! Generated tag soup (deterministic): a local stand-in for the cargo-fuzz target. Every output
//! must be stable under a second pass, pass the safety checks on an independent re-parse, and
//! never show a marker that only ever occurred in masked places.

mod common;

use common::*;

const PIECES: &[&str] = &[
    "<p>",
    "</p>",
    "<div>",
    "</div>",
    "<b>",
    "</b>",
    "<i>",
    "<a href=\"https://ok.example/\">",
    "</a>",
    "<table>",
    "<tr>",
    "<td>",
    "</td>",
    "</table>",
    "<caption>",
    "<colgroup>",
    "<tbody>",
    "<svg>",
    "</svg>",
    "<math>",
    "</math>",
    "<mtext>",
    "<mi>",
    "<mglyph>",
    "<malignmark>",
    "<style>",
    "</style>",
    "<form>",
    "</form>",
    "<template>",
    "</template>",
    "<noscript>",
    "</noscript>",
    "<select>",
    "<option>",
    "<optgroup>",
    "<textarea>",
    "</textarea>",
    "<title>",
    "</title>",
    "<iframe srcdoc=\"<b>x</b><input type=password value=FDMARK>\">",
    "</iframe>",
    "<foreignObject>",
    "</foreignObject>",
    "<desc>",
    "<annotation-xml encoding=\"text/html\">",
    "</annotation-xml>",
    "<img src=x onerror=alert(1)>",
    "<a href=\"javascript:alert(1)\">",
    "<a href=\"jav&#x09;ascript:alert(1)\">",
    "<div data-sensitive>",
    "<span data-sensitive=\"\">",
    "<input type=password value=FDMARK>",
    "<input type=password placeholder=\"FDMARK\">",
    "<div data-sensitive title=FDMARK>FDMARK</div>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<xmp>",
    "</xmp>",
    "<plaintext>",
    "<pre>",
    "\n",
    "text",
    "&lt;",
    "&amp;",
    "<li>",
    "<ul>",
    "</ul>",
    "<h1>",
    "</h1>",
    "<button>",
    "</button>",
    "<keygen>",
    "<image src=x>",
    "<p title=\"</p><img src=x onerror=alert(1)>\">",
    "<style>a{b:url(javascript:x)}</style>",
    "<svg><style>x{}</style>",
    "<body onload=alert(1)>",
    "<head>",
    "<html>",
    "<frameset>",
    "<frame>",
    "<object data=x>",
    "<embed src=x>",
    "<script>alert(1)</script>",
    "<script>",
    "</script>",
    "<noembed>",
    "</noembed>",
    "<a>",
    "<nobr>",
    "<marquee>",
    "<listing>",
    "<dd>",
    "<dt>",
    "<ruby><rt>",
    "<svg><a xlink:href=\"javascript:x\">",
    "<svg><animate attributeName=href values=javascript:x>",
    "<math href=javascript:x>",
    "<base href=javascript:x>",
    "<meta http-equiv=refresh content=0>",
    "<input>",
    "<input value=\"plain\">",
    "<br>",
    "<hr>",
    "<wbr>",
    "<area href=javascript:x>",
    "<my-element>",
    "</my-element>",
    "<foo>",
    "</foo>",
    "<svg><p>",
    "<math><p>",
    "<table><svg>",
    "<select><svg>",
    "<option><math>",
    "<template><tr>",
    "<td><template>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
];

fn soup(rng: &mut Rng) -> String {
    let n = 1 + rng.below(40);
    let mut s = String::new();
    if rng.below(3) == 0 {
        s.push_str("<!DOCTYPE html>");
    }
    for _ in 0..n {
        s.push_str(PIECES[rng.below(PIECES.len())]);
    }
    s
}

#[test]
fn generated_soup_is_stable_safe_and_keeps_masked_markers_hidden() {
    let policy = Policy::default();
    // SOUP_CASES / SOUP_SEED widen the search locally; the defaults keep the test quick.
    let cases: usize = std::env::var("SOUP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("SOUP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_1234);
    let mut rng = Rng(seed);
    let mut checked_markers = 0;
    for i in 0..cases {
        let input = soup(&mut rng);
        let Ok(once) = sanitize_document(&policy, &input) else {
            continue;
        };
        let twice = sanitize_document(&policy, once.as_str()).expect("sanitize again");
        assert_eq!(
            once.as_str(),
            twice.as_str(),
            "case {i}: unstable\ninput: {input:?}"
        );
        let problems = unsafe_things(once.as_str());
        assert!(
            problems.is_empty(),
            "case {i}: {problems:?}\ninput: {input:?}\noutput: {once}"
        );
        let (masked, unmasked) = marker_occurrences(&input, "FDMARK");
        if masked > 0 && unmasked == 0 {
            checked_markers += 1;
            assert!(
                !once.as_str().contains("FDMARK"),
                "case {i}: marker leaked\ninput: {input:?}\noutput: {once}"
            );
        }
    }
    assert!(
        checked_markers > cases / 10,
        "only {checked_markers} cases checked markers"
    );
}
