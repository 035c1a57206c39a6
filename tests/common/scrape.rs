//! Reading the worker's HTTP endpoint as its users' tools do: plain HTTP GETs, `/metrics`
//! parsed by the Python `prometheus-client`'s `OpenMetrics` parser (not by anything of ours), and
//! the status page rendered by headless Chromium.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    try_get(port, path)
        .await
        .unwrap_or_else(|| panic!("nothing answers HTTP on 127.0.0.1:{port}"))
}

/// [`get`], or `None` while nothing listens there (or the answer is not HTTP).
pub async fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// One sample of a scrape.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: the families' names and types, and every sample.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families, samples = {}, []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
json.dump({"families": families, "samples": samples}, sys.stdout)
"#;

impl Scrape {
    /// Parses `/metrics` text with the real parser; panics with its error on invalid text.
    pub fn parse(text: &str) -> Self {
        let out = super::tools::python_with_prometheus_client(PARSE, text);
        assert!(
            out.status.success(),
            "the OpenMetrics parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let families = parsed["families"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let samples = parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_owned(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect();
        Self { families, samples }
    }

    /// The value of `name` with exactly these `labels` (0 when absent: a counter not yet moved).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map_or(0.0, |s| s.value)
    }

    /// The sum of `name` over every sample whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// The DOM headless Chromium builds from `url` (Debian's `chromium`, via `scripts/tools`).
pub fn chromium_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("flext-chromium-{}", uuid::Uuid::new_v4()));
    let out = Command::new(super::tools::chromium_bin())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
