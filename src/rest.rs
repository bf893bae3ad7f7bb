//! What the CLI's REST commands share (`agora jobs`, `agora apps`,
//! `agora deployments`): a client that turns error answers into messages
//! (Marathon's `details` included), JSON files, tables and times.

use std::time::Duration;

use anyhow::{Context, bail};
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

/// A client of a framework's REST API.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// What it talks to, for messages ("the batch framework").
    what: &'static str,
    /// The flag that names its address ("--batch").
    flag: &'static str,
}

impl Client {
    pub fn new(base: &str, what: &'static str, flag: &'static str) -> anyhow::Result<Client> {
        let b = base.trim().trim_end_matches('/');
        let base = if b.starts_with("http://") || b.starts_with("https://") {
            b.to_string()
        } else {
            format!("http://{b}")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            base,
            http,
            what,
            flag,
        })
    }

    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach {} at {}; is it running? ({})",
                self.what, self.base, self.flag
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .map(|v| {
                let mut m = v["message"].as_str().unwrap_or(&body).to_string();
                for d in v["details"].as_array().into_iter().flatten() {
                    let errors: Vec<&str> = d["errors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    m.push_str(&format!(
                        "\n  {}: {}",
                        d["path"].as_str().unwrap_or(""),
                        errors.join("; ")
                    ));
                }
                m
            })
            .unwrap_or(body);
        bail!("{what}: {status}: {message}")
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .send(self.http.get(&url), &format!("GET {path}"))
            .await?;
        Ok(resp.json().await?)
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req, &format!("{method} {path}")).await?;
        Ok(resp.json().await.unwrap_or(Value::Null))
    }
}

pub fn read_json(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading JSON from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file} is not valid JSON"))
}

pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    t
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2025-03-01T02:00:00.123Z` shortened to the second.
pub fn time(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s
            .split('.')
            .next()
            .unwrap_or(s)
            .trim_end_matches('Z')
            .replace('T', " "),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shortened() {
        assert_eq!(
            time(&Value::from("2025-03-01T02:00:00.123Z")),
            "2025-03-01 02:00:00"
        );
        assert_eq!(time(&Value::Null), "-");
    }
}
