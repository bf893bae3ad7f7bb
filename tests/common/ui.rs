//! The web UI in tests: `agora dev` as a process (its printed URLs), and
//! headless Chromium through `agora_bench::browser` with small waiting
//! helpers (conditions with deadlines, never fixed sleeps).

use std::time::Duration;

use agora_bench::browser::Browser;
use fantoccini::Locator;

use super::{DEADLINE, Proc};

/// A running `agora dev` and the addresses it printed.
pub struct Dev {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` of the master (and the UI).
    pub url: String,
    /// `http://127.0.0.1:PORT` of the batch framework.
    pub batch: String,
    /// `http://127.0.0.1:PORT` of the services framework.
    pub services: String,
    pub dir: tempfile::TempDir,
}

fn url_in(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in: {line}"))
        .trim_end_matches('/')
        .to_string()
}

impl Dev {
    /// `agora dev` on free ports with a process-only agent.
    pub async fn start(resources: &str) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let proc = Proc::spawn(
            &[
                "dev",
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
                "--batch-listen",
                "127.0.0.1:0",
                "--services-listen",
                "127.0.0.1:0",
                "--containerizers",
                "process",
                "--resources",
                resources,
            ],
            &[],
        );
        let url = url_in(&proc.wait_line("web UI:").await);
        let batch = url_in(&proc.wait_line("batch (jobs):").await);
        let services = url_in(&proc.wait_line("services (apps):").await);
        Dev {
            proc,
            url,
            batch,
            services,
            dir,
        }
    }
}

/// A browser for a test, or `None` (after saying how to get one) when
/// Chromium is not installed and the run is not strict. Under
/// `AGORA_TEST_STRICT=1` (scripts/test) a missing browser fails the test.
pub async fn browser_or_skip(test: &str) -> Option<Browser> {
    if let Err(e) = agora_bench::browser::available() {
        if std::env::var("AGORA_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("{test}: {e}");
        }
        eprintln!("SKIPPED {test}: {e}");
        return None;
    }
    Some(
        Browser::start(1280, 900)
            .await
            .unwrap_or_else(|e| panic!("{test}: {e}")),
    )
}

/// Waits until the element at `css` exists and its text contains `needle`;
/// returns the text.
pub async fn wait_text(b: &Browser, css: &str, needle: &str) -> String {
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        if let Ok(el) = b.client().find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        if tokio::time::Instant::now() >= until {
            let url = b.client().current_url().await.map(|u| u.to_string());
            let console = b.console().await.unwrap_or_default();
            let page = b
                .client()
                .execute("return document.body.innerText.slice(0, 3000);", vec![])
                .await
                .unwrap_or_default();
            panic!(
                "timed out after {DEADLINE:?} waiting for `{needle}` in `{css}` on {url:?}; its text \
                 was:\n{last}\nconsole: {console:#?}\npage: {}",
                page.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the element at `css` and clicks it.
pub async fn click(b: &Browser, css: &str) {
    let el = b
        .client()
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element `{css}`: {e}"));
    el.click()
        .await
        .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
}

/// Sets a form field's value as a paste would (an `input` event follows).
pub async fn paste(b: &Browser, css: &str, value: &str) {
    b.client()
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element `{css}`: {e}"));
    b.client()
        .execute(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1]; \
             el.dispatchEvent(new Event('input', {bubbles: true}));",
            vec![serde_json::json!(css), serde_json::json!(value)],
        )
        .await
        .unwrap_or_else(|e| panic!("setting `{css}`: {e}"));
}

/// Console messages at level SEVERE or WARNING, but for failed requests
/// the test made on purpose (`expected` substrings of their messages).
pub async fn console_problems(b: &Browser, expected: &[&str]) -> Vec<String> {
    b.console()
        .await
        .expect("the browser's console log")
        .into_iter()
        .filter(|(level, _, _)| level == "SEVERE" || level == "WARNING")
        .filter(|(_, _, msg)| !expected.iter().any(|e| msg.contains(e)))
        .map(|(level, source, msg)| format!("{level} {source}: {msg}"))
        .collect()
}
