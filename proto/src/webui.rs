//! A framework's web address (`FrameworkInfo.webui_url`): what the master
//! accepts, and how it splits it for its proxy. Pure, no I/O.

/// The longest `webui_url` accepted.
pub const MAX_WEBUI_URL_LEN: usize = 2048;

/// A checked `webui_url`: `http://authority[/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebUiUrl {
    /// `host:port` (or `host`, meaning port 80; IPv6 in brackets).
    pub authority: String,
    /// The path prefix, without a trailing `/` (empty for the root).
    pub prefix: String,
}

impl WebUiUrl {
    /// The URL of `path` (which starts with `/`) and `query` under this
    /// address.
    pub fn join(&self, path: &str, query: Option<&str>) -> String {
        let mut url = format!("http://{}{}{}", self.authority, self.prefix, path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q);
        }
        url
    }
}

/// Parses a `webui_url`. Empty means none (`Ok(None)`). Only `http://` is
/// accepted: the master's proxy speaks plain HTTP to frameworks (put TLS in
/// front of the master, not between it and the frameworks).
pub fn parse_webui_url(url: &str) -> Result<Option<WebUiUrl>, String> {
    if url.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Err(format!("framework_info.webui_url `{url}` {why}"));
    if url.len() > MAX_WEBUI_URL_LEN {
        return bad(&format!(
            "is {} characters long; at most {MAX_WEBUI_URL_LEN} are allowed",
            url.len()
        ));
    }
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return bad(&format!("contains {c:?}"));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return bad("must start with http:// (for example http://10.0.0.5:8080)");
    };
    if rest.contains(['?', '#']) {
        return bad("must not have a query or a fragment");
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return bad("names no host");
    }
    if authority.contains('@') {
        return bad("must not carry a user name or password");
    }
    // The port, when given, must be a number 1-65535.
    let host_end = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => i + 1,
            None => return bad("has an unclosed `[` in its host"),
        }
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let host = &authority[..host_end];
    if host.is_empty() || host == "[]" {
        return bad("names no host");
    }
    match &authority[host_end..] {
        "" => {}
        port => match port.strip_prefix(':').map(str::parse::<u16>) {
            Some(Ok(p)) if p > 0 => {}
            _ => return bad("has a port that is not a number from 1 to 65535"),
        },
    }
    Ok(Some(WebUiUrl {
        authority: authority.to_string(),
        prefix: path.trim_end_matches('/').to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_addresses_and_joins_paths() {
        let u = parse_webui_url("http://10.0.0.5:8080").unwrap().unwrap();
        assert_eq!(u.authority, "10.0.0.5:8080");
        assert_eq!(
            u.join("/v2/apps", Some("embed=apps.tasks")),
            "http://10.0.0.5:8080/v2/apps?embed=apps.tasks"
        );
        let u = parse_webui_url("http://svc.example/base/")
            .unwrap()
            .unwrap();
        assert_eq!(u.prefix, "/base");
        assert_eq!(u.join("/ping", None), "http://svc.example/base/ping");
        let u = parse_webui_url("http://[::1]:9000/").unwrap().unwrap();
        assert_eq!(u.join("/", Some("")), "http://[::1]:9000/");
        assert_eq!(parse_webui_url("").unwrap(), None);
    }

    #[test]
    fn refuses_what_the_proxy_cannot_reach_and_says_why() {
        for (url, why) in [
            ("https://a:1", "http://"),
            ("ftp://a", "http://"),
            ("http://", "no host"),
            ("http:///x", "no host"),
            ("http://a:0", "port"),
            ("http://a:99999", "port"),
            ("http://a:x", "port"),
            ("http://u:p@a:1", "user name"),
            ("http://a:1/x?y=1", "query"),
            ("http://a b", "contains"),
            ("http://[::1", "unclosed"),
        ] {
            let err = parse_webui_url(url).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        let long = format!("http://a/{}", "x".repeat(MAX_WEBUI_URL_LEN));
        assert!(parse_webui_url(&long).unwrap_err().contains("at most"));
    }
}
