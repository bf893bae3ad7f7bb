//! The master's HTTP proxy: the browser talks to one origin (the master),
//! which forwards
//!
//! * `/frameworks/{id}/...`, and the short names `/services/...` and
//!   `/batch/...`, to the `webui_url` the framework announced when it
//!   subscribed (only a leading framework instance subscribes, so this is
//!   its leader), and
//! * `/tasks/{id}/logs?...` to the HTTP endpoint of the agent that runs or
//!   ran the task.
//!
//! Answers stream through as they come (Server-Sent Events too). A
//! framework that does not answer is a quick `502` (connection refused,
//! or nothing within [`CONNECT_TIMEOUT`]), one that accepts but does not
//! answer a `504` after [`HEADERS_TIMEOUT`]; both as a short HTML page for
//! a browser's navigation and as JSON `{"message"}` for API calls.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

/// How long connecting to a framework or agent may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a framework or agent may take to start its answer.
pub(crate) const HEADERS_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest request body forwarded.
pub(crate) const MAX_BODY: u64 = 8 * 1024 * 1024;

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An HTTP/1.1 client with short connect timeouts.
#[derive(Clone)]
pub(crate) struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: CancellationToken,
}

/// Where a request goes.
pub(crate) struct Upstream {
    /// The full URL to call.
    pub url: String,
    /// `http://authority[/prefix]` of the upstream, and the path under
    /// the master it is reached by (`/batch`, `/frameworks/{id}`):
    /// redirects into the upstream are rewritten to stay on the master.
    pub base: String,
    pub mount: String,
    /// What it is, for error pages: "framework agora-batch (id ...)".
    pub what: String,
}

/// The parts of the browser's request that are forwarded.
pub(crate) struct Forward {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address, for `X-Forwarded-For`.
    pub remote: Option<std::net::SocketAddr>,
}

/// Whether the client is a browser navigating (it wants an HTML page
/// rather than JSON).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// An error as the client wants it: a small HTML page or JSON.
pub(crate) fn gateway_error(status: StatusCode, message: &str, html: bool) -> Response {
    if !html {
        return crate::http::error(status, message);
    }
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} - Agora</title></head><body style=\"font-family:sans-serif;margin:2rem\">\
         <h1>{title}</h1><p>{}</p><p><a href=\"/\">Back to the cluster</a></p></body></html>",
        escape_html(message)
    );
    let mut r = warp::reply::html(page).into_response();
    *r.status_mut() = status;
    r
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Proxy {
    pub(crate) fn new(shutdown: CancellationToken) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Proxy { client, shutdown }
    }

    /// Sends `req` to `to` and streams the answer back.
    pub(crate) async fn forward(&self, to: &Upstream, req: Forward) -> Response {
        let html = wants_html(&req.headers);
        let mut builder = hyper::Request::builder()
            .method(req.method.clone())
            .uri(&to.url);
        for (name, value) in &req.headers {
            if HOP_BY_HOP.contains(&name.as_str())
                || name == header::HOST
                || name == header::CONTENT_LENGTH
            {
                continue;
            }
            builder = builder.header(name, value);
        }
        if let Some(remote) = req.remote {
            let ip = remote.ip().to_string();
            let fwd = match req
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(earlier) => format!("{earlier}, {ip}"),
                None => ip,
            };
            builder = builder.header("x-forwarded-for", fwd);
        }
        if let Some(host) = req.headers.get(header::HOST) {
            builder = builder.header("x-forwarded-host", host);
        }
        builder = builder.header("x-forwarded-prefix", to.mount.as_str());
        let request = match builder.body(Full::new(req.body)) {
            Ok(r) => r,
            Err(e) => {
                return gateway_error(
                    StatusCode::BAD_REQUEST,
                    &format!("the request cannot be forwarded to {}: {e}", to.what),
                    html,
                );
            }
        };
        let answer = tokio::time::timeout(HEADERS_TIMEOUT, self.client.request(request)).await;
        let upstream = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let why = if e.is_connect() {
                    let mut source: &dyn std::error::Error = &e;
                    while let Some(s) = source.source() {
                        source = s;
                    }
                    format!("cannot connect: {source}")
                } else {
                    e.to_string()
                };
                return gateway_error(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "{} does not answer at {} ({why}). It may be down or restarting; \
                         the master forwards to it again as soon as it answers.",
                        to.what, to.base
                    ),
                    html,
                );
            }
            Err(_) => {
                return gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "{} at {} accepted the request but did not answer within {} s.",
                        to.what,
                        to.base,
                        HEADERS_TIMEOUT.as_secs()
                    ),
                    html,
                );
            }
        };
        let (parts, body) = upstream.into_parts();
        let mut resp = self.stream(body).into_response();
        *resp.status_mut() = parts.status;
        let headers = resp.headers_mut();
        for (name, value) in &parts.headers {
            if HOP_BY_HOP.contains(&name.as_str()) || name == header::CONTENT_LENGTH {
                continue;
            }
            if name == header::LOCATION
                && let Some(v) = rewrite_location(value, &to.base, &to.mount)
            {
                headers.insert(header::LOCATION, v);
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        // Event streams must not be held back by a buffering proxy in
        // front of the master.
        headers.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        resp
    }

    /// The upstream's body as a reply that ends when it ends, when the
    /// client goes away, or when the master shuts down.
    fn stream(&self, mut body: hyper::body::Incoming) -> impl Reply {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = body.frame() => match frame {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data()
                                && tx.send(Ok(data)).await.is_err()
                            {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(Err(std::io::Error::other(e))).await;
                            break;
                        }
                        None => break,
                    },
                    _ = tx.closed() => break,
                    _ = shutdown.cancelled() => break,
                }
            }
        });
        warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// GETs `url` (an agent's endpoint) and returns status, headers and
    /// the whole body.
    pub(crate) async fn get(&self, url: &str) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let request = hyper::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(HEADERS_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {} s", HEADERS_TIMEOUT.as_secs()))?
            .map_err(|e| {
                let mut source: &dyn std::error::Error = &e;
                while let Some(s) = source.source() {
                    source = s;
                }
                source.to_string()
            })?;
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(HEADERS_TIMEOUT, body.collect())
            .await
            .map_err(|_| "the answer did not complete".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

/// A redirect into the upstream, rewritten to the same place under the
/// master's mount point. Redirects elsewhere are left alone.
fn rewrite_location(value: &HeaderValue, base: &str, mount: &str) -> Option<HeaderValue> {
    let v = value.to_str().ok()?;
    let rest = if let Some(rest) = v.strip_prefix(base) {
        rest
    } else if v.starts_with('/') && !v.starts_with("//") {
        // A path on the upstream.
        let (_, prefix) = base
            .strip_prefix("http://")
            .and_then(|b| b.find('/').map(|i| b.split_at(i)))
            .unwrap_or(("", ""));
        v.strip_prefix(prefix)?
    } else {
        return None;
    };
    let rest = if rest.is_empty() || rest.starts_with(['/', '?']) {
        rest.to_string()
    } else {
        return None;
    };
    HeaderValue::from_str(&format!("{mount}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_into_the_upstream_stay_on_the_master() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let r = |s: &str, base: &str| {
            rewrite_location(&v(s), base, "/batch").map(|h| h.to_str().unwrap().to_string())
        };
        assert_eq!(
            r("http://127.0.0.1:9000/v1/jobs/a", "http://127.0.0.1:9000").as_deref(),
            Some("/batch/v1/jobs/a")
        );
        assert_eq!(
            r("/v1/jobs?x=1", "http://127.0.0.1:9000").as_deref(),
            Some("/batch/v1/jobs?x=1")
        );
        assert_eq!(
            r("/base/v1", "http://h:1/base").as_deref(),
            Some("/batch/v1")
        );
        assert_eq!(r("http://other:1/v1", "http://127.0.0.1:9000"), None);
        assert_eq!(r("http://127.0.0.1:90001/x", "http://127.0.0.1:9000"), None);
    }

    #[test]
    fn errors_are_a_page_for_browsers_and_json_for_the_api() {
        let r = gateway_error(StatusCode::BAD_GATEWAY, "x <down>", true);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let r = gateway_error(StatusCode::BAD_GATEWAY, "x", false);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(escape_html("<a href='x'>"), "&lt;a href=&#39;x&#39;&gt;");
    }
}
