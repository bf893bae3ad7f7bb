//! The web UI: the static files of the top-level `ui/` folder, embedded in
//! the binary at build time (rust-embed), served at `/` (the page) and
//! `/ui/...` (its scripts, styles and images).
//!
//! The page is one HTML document whose ES modules read the master's JSON
//! endpoints and, through the master's proxy (`crate::proxy`), the
//! frameworks' APIs: one origin, no CORS. A standby master redirects `/`
//! to the leader like every other path, so the UI follows the leader.

use rust_embed::RustEmbed;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::http::error;

#[derive(RustEmbed)]
#[folder = "../ui/"]
struct Assets;

/// The Content-Security-Policy of every UI file: scripts, styles and
/// requests only from this origin; nothing inline.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// The content type of a UI file, from its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The file at `path` (relative to `ui/`), or 404. `if_none_match`: the
/// client's cached ETag; a match answers 304 without a body.
pub(crate) fn file(path: &str, if_none_match: Option<&str>) -> Response {
    let Some(f) = Assets::get(path) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("the web UI has no file `{path}`"),
        );
    };
    let etag = format!(
        "\"{}\"",
        f.metadata
            .sha256_hash()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut resp = if if_none_match == Some(etag.as_str()) {
        let mut r = Response::new(bytes::Bytes::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(f.data.into_owned().into());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Always revalidated: a new binary serves new files at the same paths.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_embedded() {
        let page = file("index.html", None);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert!(page.headers().contains_key("content-security-policy"));
        let js = file("app.js", None);
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(
            js.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        let etag = js.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(
            file("app.js", Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(file("nope.js", None).status(), StatusCode::NOT_FOUND);
    }
}
