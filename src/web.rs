//! The browser clients in `web/`, embedded in the binary: the visitor widget (`/widget.js`, one
//! tag on any site), the demo host page (`/demo`), the agent console (`/agent`) and its sign-in
//! page (`/agent/login`). Plain files, no build step; every response says `no-cache` so an
//! upgraded server is picked up at the next load.

use crate::error::ApiError;
use axum::extract::RawQuery;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

const WIDGET_JS: &str = include_str!("../web/widget.js");
const RTC_JS: &str = include_str!("../web/rtc.js");
const COBROWSE_JS: &str = include_str!("../web/cobrowse.js");
const VIEWER_JS: &str = include_str!("../web/viewer.js");
const VIEWER_FRAME_HTML: &str = include_str!("../web/viewer-frame.html");
const AGENT_JS: &str = include_str!("../web/agent.js");
const LOGIN_JS: &str = include_str!("../web/login.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
const DEMO_CSS: &str = include_str!("../web/demo.css");
const DEMO_HTML: &str = include_str!("../web/demo.html");
const AGENT_HTML: &str = include_str!("../web/agent.html");
const LOGIN_HTML: &str = include_str!("../web/login.html");

/// Where `demo.html` names its widget key.
const KEY_PLACEHOLDER: &str = "{{WIDGET_KEY}}";

/// The policy of every page: scripts and styles only from this server (no inline script),
/// signaling over WebSocket, camera streams in `<video>`.
fn csp(frame_ancestors: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; frame-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors {frame_ancestors}"
    )
}

/// The policy of the co-browse viewer's frame (`/agent/cobrowse-frame`): an empty page the
/// console writes the visitor's sanitized page into. The console sandboxes it without scripts;
/// this policy lets that page render (images, fonts and style sheets from anywhere, inline
/// styles) and nothing else. A `srcdoc` frame would inherit the console's policy instead, which
/// blocks every inline style of the visitor's page.
const VIEWER_FRAME_CSP: &str = "default-src 'none'; img-src https: http: data:; \
     style-src 'unsafe-inline' https: http:; font-src https: http: data:; media-src https: http:; \
     form-action 'none'; base-uri 'none'; frame-ancestors 'self'";

/// The widget key `/demo` uses when the URL names none: the demo org's, once `frontdesk demo`
/// has seeded it in this process.
static DEMO_WIDGET_KEY: OnceLock<String> = OnceLock::new();

pub fn set_demo_widget_key(key: &str) {
    if valid_widget_key(key) {
        let _ = DEMO_WIDGET_KEY.set(key.to_owned());
    }
}

/// Widget keys are `wk_` and URL-safe base64: nothing that could leave an HTML attribute.
pub fn valid_widget_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The routes of the browser clients; they need no state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/widget.js", get(|| async { script(WIDGET_JS) }))
        .route("/web/rtc.js", get(|| async { script(RTC_JS) }))
        .route("/web/cobrowse.js", get(|| async { script(COBROWSE_JS) }))
        .route("/web/viewer.js", get(|| async { script(VIEWER_JS) }))
        .route("/web/agent.js", get(|| async { script(AGENT_JS) }))
        .route("/web/login.js", get(|| async { script(LOGIN_JS) }))
        .route("/web/style.css", get(|| async { stylesheet(STYLE_CSS) }))
        .route("/web/demo.css", get(|| async { stylesheet(DEMO_CSS) }))
        .route("/demo", get(demo))
        .route(
            "/agent",
            get(|| async { page(AGENT_HTML.to_owned(), "'none'") }),
        )
        .route(
            "/agent/login",
            get(|| async { page(LOGIN_HTML.to_owned(), "'none'") }),
        )
        .route("/agent/cobrowse-frame", get(|| async { viewer_frame() }))
}

fn respond(content_type: &'static str, body: String, extra: &[(HeaderName, String)]) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    r
}

/// Scripts may be loaded by any site that embeds the widget: `widget.js` imports `rtc.js` as a
/// module, which browsers fetch with CORS.
fn script(body: &'static str) -> Response {
    respond(
        "application/javascript; charset=utf-8",
        body.to_owned(),
        &[
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned()),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                "cross-origin".to_owned(),
            ),
        ],
    )
}

fn stylesheet(body: &'static str) -> Response {
    respond("text/css; charset=utf-8", body.to_owned(), &[])
}

fn page(body: String, frame_ancestors: &str) -> Response {
    respond(
        "text/html; charset=utf-8",
        body,
        &[
            (header::CONTENT_SECURITY_POLICY, csp(frame_ancestors)),
            (header::REFERRER_POLICY, "same-origin".to_owned()),
        ],
    )
}

fn viewer_frame() -> Response {
    respond(
        "text/html; charset=utf-8",
        VIEWER_FRAME_HTML.to_owned(),
        &[
            (header::CONTENT_SECURITY_POLICY, VIEWER_FRAME_CSP.to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
    )
}

/// The demo shop with the widget of `?key=`, else of the demo org.
async fn demo(RawQuery(query): RawQuery) -> Response {
    let asked = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "key")
            .map(|(_, v)| v.into_owned())
    });
    let key = match asked {
        Some(k) if valid_widget_key(&k) => k,
        Some(_) => {
            return ApiError::bad_request(
                "invalid_value",
                "key must be a widget key: 1 to 128 letters, digits, '_' or '-'",
            )
            .into_response()
        }
        None => match DEMO_WIDGET_KEY.get() {
            Some(k) => k.clone(),
            None => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_demo",
                    "this server runs no demo organization: open /demo?key=<widget key>",
                )
                .into_response()
            }
        },
    };
    page(DEMO_HTML.replace(KEY_PLACEHOLDER, &key), "'self'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widget_keys_cannot_leave_an_attribute() {
        assert!(valid_widget_key("wk_AbC-9_z"));
        for bad in [
            "",
            "wk\"",
            "wk'",
            "wk<",
            "wk>",
            "wk&",
            "wk key",
            "wk/",
            &"a".repeat(129),
        ] {
            assert!(!valid_widget_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_demo_page_has_one_key_placeholder_and_no_inline_script() {
        assert_eq!(DEMO_HTML.matches(KEY_PLACEHOLDER).count(), 1);
        for html in [DEMO_HTML, AGENT_HTML, LOGIN_HTML] {
            for tag in html.split("<script").skip(1) {
                let open = &tag[..tag.find('>').expect("a closed tag")];
                assert!(open.contains("src="), "inline script in a page: {open}");
            }
            assert!(!html.contains("<style"), "inline style in a page");
        }
    }
}
