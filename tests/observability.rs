//! The chart's monitoring checked by the tools that will read it: `promtool check rules` and
//! `promtool test rules` on `files/prometheus-rules.yaml` (the very text the `PrometheusRule` ships),
//! and every `flext_*` name the dashboard and the alerts use found in a real scrape of a running
//! worker's `/metrics`, parsed by prometheus-client's `OpenMetrics` parser. A panel or an alert on a
//! name the worker does not export shows nothing and never fires, without any error: only this
//! test notices.
//!
//! The scrape needs PostgreSQL (`eval "$(scripts/pg env)"`); promtool and prometheus-client come
//! from `scripts/tools` (built or installed once, then cached).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::tools::{chart, promtool, python_with_prometheus_client, text};
use common::{TestDb, WindmillJob, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_flext-kubernetes");

fn rules_file() -> String {
    chart()
        .join("files/prometheus-rules.yaml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_alerting_rules_pass_promtool_check_rules() {
    let rules = rules_file();
    let out = promtool(
        &["check", "rules", "--lint=all", "--lint-fatal", &rules],
        "",
    );
    assert!(
        out.status.success(),
        "promtool check rules {rules}:\n{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 5 rules found"),
        "{}",
        text(&out)
    );
}

/// `ci/prometheus-rules.test.yaml`: each alert fires on its synthetic series with the labels and
/// annotations written there, and not on the healthy ones or before its `for`.
#[test]
fn the_alerts_fire_on_synthetic_series_as_their_unit_tests_expect() {
    let tests = chart().join("ci/prometheus-rules.test.yaml");
    let out = promtool(&["test", "rules", tests.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "promtool test rules {}:\n{}",
        tests.display(),
        text(&out)
    );
    // Every alert of the file has a test: an untested alert could be quietly wrong.
    let tested = std::fs::read_to_string(&tests).unwrap();
    for alert in alert_names() {
        assert!(
            tested.contains(&format!("alertname: {alert}")),
            "no promtool test of {alert} in {}",
            tests.display()
        );
    }
}

fn alert_names() -> Vec<String> {
    let file: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    file["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

/// Every `flext_[a-z0-9_]+` word of `text`: the metric names a dashboard or a rule file uses
/// (in queries, and in the annotations that point the reader at one).
fn flext_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut at = 0;
    while let Some(found) = text[at..].find("flext_") {
        let start = at + found;
        let mut end = start + "flext_".len();
        while end < bytes.len() && is_name_char(bytes[end]) {
            end += 1;
        }
        // Part of a longer word (`my_flext_x`) is not a name of ours.
        let inside_a_word =
            start > 0 && (is_name_char(bytes[start - 1]) || bytes[start - 1].is_ascii_uppercase());
        if !inside_a_word && end > start + "flext_".len() {
            names.insert(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

#[test]
fn metric_names_are_found_in_queries_and_annotations_only_as_whole_words() {
    let names = flext_names(
        r#"rate(flext_jobs_claimed_total{tag="k8s"}[5m]) flext_ready==0 my_flext_x flext-kubernetes flext_"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["flext_jobs_claimed_total".into(), "flext_ready".into()])
    );
}

/// What prometheus-client's `OpenMetrics` parser makes of a scrape: each family's name and type,
/// and the names of its samples. A family with no samples yet (a labelled counter nothing has
/// incremented) is still declared by its `# TYPE` line, and listed.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(json.dumps({"name": family.name, "type": family.type,
                      "samples": sorted({s.name for s in family.samples})}))
"#;

/// The series names a family of `kind` named `name` gives in the `OpenMetrics` exposition (and so
/// in Prometheus): a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`, ...
fn series_names(name: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        _ => &[""],
    };
    suffixes.iter().map(|s| format!("{name}{s}")).collect()
}

/// The worker process, killed if the test fails before it stops it.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scrape of a real worker: `flext-kubernetes run` with the Kubernetes executor on the test
/// bed (its API requests are families too) and a fresh database, after it ran one job of tag
/// `k8s` so that the tag-labelled families carry samples too.
async fn scrape() -> String {
    let db = TestDb::new().await;
    WindmillJob::preview("def main():\n    return 1\n")
        .push(&db)
        .await;
    let client = common::bed::client().await;
    let namespace = format!("obs-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    let namespaces = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client);
    namespaces
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .expect("create the test namespace");
    let config =
        std::env::temp_dir().join(format!("flext-observability-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(
        &config,
        "runtime:
  type: kubernetes
  config:
    windmill: { worker_group: k8s, tags: [k8s] }
    worker: { poll_interval: 20ms, heartbeat_interval: 200ms }
",
    )
    .unwrap();
    let port = common::scrape::free_port();
    let _worker = Worker(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .envs(common::bed::bed_settings(&namespace))
            .env_remove("FLEXT_WINDMILL_TOKEN")
            .env_remove("RUST_LOG")
            .env("FLEXT_DATABASE_URL", &db.url)
            .env("FLEXT__WORKER__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = eventually(
        "the worker's /metrics after its first job",
        Duration::from_secs(90),
        || async {
            let Some((status, body)) = common::scrape::try_get(port, "/metrics").await else {
                return Err("not listening yet".to_owned());
            };
            if status == 200
                && body.contains(
                    r#"flext_jobs_completed_total{tag="k8s",outcome="success",category=""} 1"#,
                )
            {
                Ok(body)
            } else {
                Err(format!("{status}\n{body}"))
            }
        },
    )
    .await;
    let _ = std::fs::remove_file(&config);
    let _ = namespaces
        .delete(&namespace, &kube::api::DeleteParams::default())
        .await;
    body
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_in_a_real_scrape() {
    let body = scrape().await;
    let out = python_with_prometheus_client(PARSE, &body);
    assert!(
        out.status.success(),
        "prometheus-client's OpenMetrics parser refuses the worker's /metrics:\n{}\n--- /metrics\n{body}",
        text(&out)
    );
    // Series name -> the family that gives it, for the message.
    let mut exported = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let family: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = family["name"].as_str().unwrap();
        let kind = family["type"].as_str().unwrap();
        let samples = family["samples"].as_array().unwrap().iter();
        for series in series_names(name, kind)
            .into_iter()
            .chain(samples.map(|s| s.as_str().unwrap().to_owned()))
        {
            exported.insert(series, format!("{name} ({kind})"));
        }
    }
    assert!(
        exported.contains_key("flext_jobs_claimed_total"),
        "the parser found none of the worker's families: {exported:?}\n--- /metrics\n{body}"
    );

    let mut used: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let dashboard = std::fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap();
    let rules = std::fs::read_to_string(rules_file()).unwrap();
    for (file, text) in [
        ("files/grafana-dashboard.json", &dashboard),
        ("files/prometheus-rules.yaml", &rules),
    ] {
        for name in flext_names(text) {
            used.entry(name).or_default().push(file);
        }
    }
    assert!(used.len() > 15, "the names found: {used:?}");
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains_key(*name))
        .map(|(name, files)| format!("{name} (in {})", files.join(", ")))
        .collect();
    let families: BTreeSet<&String> = exported.values().collect();
    assert!(
        missing.is_empty(),
        "{} metric names the chart's dashboard and alerts use are not in the worker's /metrics: \
         register them in src/metrics.rs, or correct the chart's files:\n  {}\nfamilies exported: {families:?}",
        missing.len(),
        missing.join("\n  ")
    );
}
