//! The browser clients as the server serves them: types, caching, the pages' CSP, the demo's
//! widget key, and nothing else under their paths.

mod common;

use common::TestServer;

struct Fetched {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn fetch(s: &TestServer, path: &str) -> Fetched {
    let r = s.http.get(s.url(path)).send().await.expect("request");
    Fetched {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.expect("body"),
    }
}

fn header<'a>(f: &'a Fetched, name: &str) -> &'a str {
    f.headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header"))
        .unwrap_or("")
}

#[tokio::test]
async fn every_asset_is_served_with_its_type_and_no_cache() {
    let s = TestServer::start().await;
    let org = s.org("webshop", 2).await;
    let key = org.created.widget_key.clone();
    let demo = format!("/demo?key={key}");
    let assets: [(&str, &str, &str); 11] = [
        (
            "/widget.js",
            "application/javascript",
            "document.currentScript",
        ),
        (
            "/web/rtc.js",
            "application/javascript",
            "export class MediaSession",
        ),
        (
            "/web/agent.js",
            "application/javascript",
            "frontdesk.agent_token",
        ),
        (
            "/web/login.js",
            "application/javascript",
            "frontdesk.agent_token",
        ),
        (
            "/web/cobrowse.js",
            "application/javascript",
            "export function startCapture",
        ),
        (
            "/web/viewer.js",
            "application/javascript",
            "export class Viewer",
        ),
        ("/web/style.css", "text/css", ".ring"),
        ("/web/demo.css", "text/css", ".product"),
        (&demo, "text/html", "Acme Shop"),
        ("/agent", "text/html", "id=\"fd-cobrowse\""),
        ("/agent/login", "text/html", "/web/login.js"),
    ];
    for (path, content_type, needle) in assets {
        let f = fetch(&s, path).await;
        assert_eq!(f.status, 200, "{path}");
        assert!(
            header(&f, "content-type").starts_with(content_type),
            "{path}: {}",
            header(&f, "content-type")
        );
        assert_eq!(header(&f, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&f, "x-content-type-options"), "nosniff", "{path}");
        assert!(f.body.contains(needle), "{path} lacks {needle:?}");
        let csp = header(&f, "content-security-policy");
        if content_type == "text/html" {
            for part in [
                "script-src 'self'",
                "style-src 'self'",
                "connect-src 'self' ws: wss:",
                "media-src 'self' blob: mediastream:",
                "frame-src 'self'",
            ] {
                assert!(csp.contains(part), "{path}: CSP lacks {part:?}: {csp}");
            }
            assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
            // No inline script: every <script> tag loads a file.
            for tag in f.body.split("<script").skip(1) {
                let open = &tag[..tag.find('>').expect("closed tag")];
                assert!(open.contains("src="), "{path}: inline script {open}");
            }
        }
        if content_type == "application/javascript" {
            // The widget runs on other sites and imports rtc.js from here as a module (CORS).
            assert_eq!(header(&f, "access-control-allow-origin"), "*", "{path}");
        }
    }
    // The demo page carries the key in its widget tag, and no placeholder is left.
    let f = fetch(&s, &demo).await;
    assert!(
        f.body.contains(&format!(
            "<script src=\"/widget.js\" data-key=\"{key}\"></script>"
        )),
        "{}",
        f.body
    );
    assert!(!f.body.contains("{{"), "a placeholder is left");
    // The co-browse viewer's frame: no script of any kind, no forms, only inside the console.
    let f = fetch(&s, "/agent/cobrowse-frame").await;
    assert_eq!(f.status, 200);
    let csp = header(&f, "content-security-policy");
    for part in [
        "default-src 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ] {
        assert!(csp.contains(part), "frame CSP lacks {part:?}: {csp}");
    }
    assert!(!csp.contains("script-src"), "{csp}");
    assert!(!f.body.contains("<script"), "{}", f.body);
    assert_eq!(header(&f, "referrer-policy"), "no-referrer");
    s.stop().await;
}

#[tokio::test]
async fn the_demo_refuses_a_key_that_could_leave_its_attribute() {
    let s = TestServer::start().await;
    for query in [
        "key=bad%22",
        "key=bad\"",
        "key=%3Cscript%3E",
        "key=wk%20x",
        "key=",
        &format!("key={}", "a".repeat(129)),
    ] {
        let f = fetch(&s, &format!("/demo?{query}")).await;
        assert_eq!(f.status, 400, "{query}: {}", f.body);
        let body: serde_json::Value = serde_json::from_str(&f.body).expect("JSON error");
        assert_eq!(body["code"], "invalid_value", "{query}");
        assert!(!f.body.contains("bad\""), "{query} is echoed: {}", f.body);
        assert!(!f.body.contains("<script"), "{query} is echoed: {}", f.body);
    }
    // Without a key, a server that runs no demo org has nothing to show.
    let f = fetch(&s, "/demo").await;
    assert_eq!(f.status, 404, "{}", f.body);
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_next_to_the_clients_are_not_found() {
    let s = TestServer::start().await;
    for path in [
        "/web/",
        "/web",
        "/web/nope.js",
        "/web/../Cargo.toml",
        "/web/%2e%2e/Cargo.toml",
        "/web/demo.html",
        "/web/agent.html",
        "/widget.js/x",
        "/agent/nope",
        "/agent/login/x",
    ] {
        let f = fetch(&s, path).await;
        assert_eq!(f.status, 404, "{path}: {}", f.body);
        let body: serde_json::Value = serde_json::from_str(&f.body).expect("JSON error");
        assert_eq!(body["code"], "no_route", "{path}");
    }
    // Pages and scripts are read-only.
    let r = s
        .http
        .post(s.url("/widget.js"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 405);
    s.stop().await;
}
