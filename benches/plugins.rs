//! `scripts/bench plugins`: what a policy plugin costs per job. Each example plugin of `plugins/`
//! (built for `wasm32-wasip2` by `scripts/build-plugins`) decides about a rendered sample job in a
//! fresh sandbox, as the worker calls it; the table gives p50 and p99 of warm calls (after the
//! first), and the whole chain of three. No database or cluster is needed: claim → Job created
//! with and without plugins on the bed is in `scripts/bench k8s`.
#![allow(clippy::unwrap_used)] // the shared test fixtures fail loudly by design

#[path = "../tests/common/mod.rs"]
mod common;
use std::time::{Duration, Instant};

use flext_kubernetes::config::Config;
use flext_kubernetes::domain::Job;
use flext_kubernetes::executor::kubernetes::{pod_settings, render};
use flext_kubernetes::plugins::Plugins;
use serde_json::{Value, json};

const CALLS: usize = 2000;

fn plugins_dir() -> String {
    common::tools::built_plugins().display().to_string()
}

fn config(plugins: &str) -> Config {
    let env: std::collections::BTreeMap<String, String> = [
        ("FLEXT__WINDMILL__TAGS", "[batch]".to_owned()),
        ("FLEXT__PLUGINS", plugins.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Config::from_yaml("", &env).expect("bench config")
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

/// p50 and p99 of `CALLS` warm decisions by `plugins` about a rendered sample job.
fn time(plugins: &str) -> (Duration, Duration, Duration) {
    let config = config(plugins);
    let loaded = Plugins::load(&config.settings.plugins, &config.settings.limits)
        .expect("the plugins load")
        .expect("plugins configured");
    let mut job = Job::local(
        std::path::Path::new("etl.py"),
        "def main():\n    return 1\n".into(),
        "python3",
        json!({}),
        "batch",
    );
    job.workspace = "finance".into();
    let pod = pod_settings(&config, &job).expect("pod settings");
    let args = serde_json::Map::new();
    let cx = render::Context {
        settings: &config.settings,
        namespace: &config.settings.cluster.namespace,
        pod: &pod,
        attempt: 1,
        nonce: "n",
        args: &args,
        token: None,
        base_url: None,
    };
    let objects = render::render(&job, &cx);
    let context = flext_kubernetes::plugins::context(&job, &pod, 1);
    let rendered = serde_json::to_value(&objects.job).expect("the Job as JSON");
    let first = {
        let started = Instant::now();
        let mut value: Value = rendered.clone();
        loaded
            .apply(&context, &mut value, "nvidia.com/gpu")
            .expect("the sample job is allowed");
        started.elapsed()
    };
    let mut samples: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let mut value = rendered.clone();
            let started = Instant::now();
            loaded
                .apply(&context, &mut value, "nvidia.com/gpu")
                .expect("the sample job is allowed");
            started.elapsed()
        })
        .collect();
    (
        first,
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    )
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let dir = plugins_dir();
    let cost_center = format!(
        "{{name: cost-center, path: '{dir}/cost_center.wasm', config: {{finance: cc-4411}}}}"
    );
    let spot = format!(
        "{{name: spot, path: '{dir}/spot_for_batch.wasm', config: {{tags: [batch], node_selector: {{lifecycle: spot}}, \
         tolerations: [{{key: spot, operator: Exists, effect: NoSchedule}}]}}}}"
    );
    let registry = format!(
        "{{name: registry, path: '{dir}/image_registry.wasm', config: {{allowed: ['python:', 'ghcr.io/flext/']}}}}"
    );
    println!(
        "Policy plugins: {CALLS} warm calls each on a rendered sample job (Python, tag `batch`, workspace `finance`), \
         a fresh sandbox per call, {} cores\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "| plugin | decision | first call | p50 (warm) | p99 (warm) |\n|---|---|---:|---:|---:|"
    );
    for (name, plugin, decision) in [
        ("cost-center", &cost_center, "patch (labels)"),
        (
            "spot-for-batch",
            &spot,
            "patch (node selector, tolerations)",
        ),
        ("image-registry", &registry, "allow"),
    ] {
        let (first, p50, p99) = time(&format!("[{plugin}]"));
        println!(
            "| {name} | {decision} | {} | {} | {} |",
            us(first),
            us(p50),
            us(p99)
        );
    }
    let (first, p50, p99) = time(&format!("[{spot}, {cost_center}, {registry}]"));
    println!(
        "| all three, in order | 2 patches, allow | {} | {} | {} |",
        us(first),
        us(p50),
        us(p99)
    );
}
