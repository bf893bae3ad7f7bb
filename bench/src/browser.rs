//! Headless Chromium for the UI's benchmark and browser tests: Debian's
//! `chromium` driven through its `chromedriver` (WebDriver) with
//! fantoccini.
//!
//! chromedriver runs in a process group of its own, and Chromium's
//! processes are its children in that group: [`Browser`] kills the whole
//! group when it is dropped (or closed), so a test that fails or panics
//! leaves no browser behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// Why the browser could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver or chromium is not installed.
    #[error(
        "{0} is not installed: apt-get install -y --no-install-recommends chromium chromium-driver \
         (scripts/test does)"
    )]
    Missing(String),
    #[error("chromedriver did not start: {0}")]
    Driver(String),
    #[error("cannot open a browser session: {0}")]
    Session(String),
}

/// Where chromedriver is: `$AGORA_CHROMEDRIVER`, else `chromedriver` on the
/// PATH.
fn chromedriver() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGORA_CHROMEDRIVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// Where Chromium is: `$AGORA_CHROMIUM`, else Debian's `/usr/bin/chromium`.
fn chromium() -> Option<PathBuf> {
    let p = std::env::var_os("AGORA_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    p.is_file().then_some(p)
}

/// Whether the browser can be started here (both programs installed).
pub fn available() -> Result<(), BrowserError> {
    chromedriver().ok_or_else(|| BrowserError::Missing("chromedriver".into()))?;
    chromium().ok_or_else(|| BrowserError::Missing("chromium".into()))?;
    Ok(())
}

/// A headless Chromium session; the browser dies with this value.
pub struct Browser {
    client: Option<Client>,
    driver: std::process::Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of
    /// `width` x `height` pixels.
    pub async fn start(width: u32, height: u32) -> Result<Browser, BrowserError> {
        let driver_bin =
            chromedriver().ok_or_else(|| BrowserError::Missing("chromedriver".into()))?;
        let chromium_bin = chromium().ok_or_else(|| BrowserError::Missing("chromium".into()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BrowserError::Driver(format!("no free port: {e}")))?
            .port();
        let mut cmd = std::process::Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that Drop can end it with every
        // Chromium process it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .map_err(|e| BrowserError::Driver(format!("{}: {e}", driver_bin.display())))?;
        let mut browser = Browser {
            client: None,
            driver,
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = browser.driver.try_wait() {
                return Err(BrowserError::Driver(format!("it exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(BrowserError::Driver(format!(
                    "it did not listen on port {port} within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_bin,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps: serde_json::Map<String, Value> = match caps {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .map_err(|e| BrowserError::Session(e.to_string()))?;
        browser.client = Some(client);
        Ok(browser)
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a session while the browser lives")
    }

    /// Everything logged to the browser's console since the last call, as
    /// `(level, source, message)`.
    pub async fn console(&self) -> Result<Vec<(String, String, String)>, String> {
        let v = self
            .client()
            .issue_cmd(BrowserLog)
            .await
            .map_err(|e| e.to_string())?;
        Ok(v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                        (s("level"), s("source"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Ends the session (Chromium quits), then chromedriver.
    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
        }
        // Drop kills what is left.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// chromedriver's browser log (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}
