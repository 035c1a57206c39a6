//! Policy plugins, built for `wasm32-wasip2` by `scripts/build-plugins` from `plugins/`: the
//! examples decide as documented, hostile ones (an endless loop, a memory bomb, a huge output, a
//! trap, a wrong interface, a patch that is not JSON) each give their clear error within the
//! deadline while the next job is decided normally, and, on the test bed, a changed job runs
//! with the change while a denied one ends in Windmill with the plugin's reason and nothing in
//! Kubernetes.
#![allow(clippy::unwrap_used, clippy::float_cmp)] // tests fail loudly by design; counts are whole numbers

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::bed::{Bed, LIMIT};
use common::{WindmillJob, logs};
use flext_kubernetes::domain::{FailureCategory, Job, JobFailure};
use flext_kubernetes::executor::kubernetes::{pod_settings, render};
use flext_kubernetes::plugins::{Applied, Plugins};
use serde_json::{Value, json};

/// The directory of the built plugins (`cost_center.wasm`, ...), built once per test process.
fn plugins_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(common::tools::built_plugins)
}

fn wasm(name: &str) -> String {
    let path = plugins_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "no {}", path.display());
    path.display().to_string()
}

/// A worker config with `plugins` (YAML, as in a config file).
fn config_with(plugins: &str) -> flext_kubernetes::config::Config {
    common::config(&[("FLEXT__PLUGINS", plugins)])
}

/// A sample job of `workspace` and `tag`, rendered; the plugins' verdict on it.
fn decide(
    plugins: &Plugins,
    config: &flext_kubernetes::config::Config,
    workspace: &str,
    tag: &str,
) -> (Result<Applied, JobFailure>, Value) {
    let mut job = Job::local(
        std::path::Path::new("sample.py"),
        "def main():\n    return 1\n".into(),
        "python3",
        json!({}),
        tag,
    );
    job.workspace = workspace.into();
    let pod = pod_settings(config, &job).unwrap();
    render::decide_first_attempt(plugins, &config.settings, &job, &pod)
}

fn load(plugins: &str) -> (Plugins, flext_kubernetes::config::Config) {
    let config = config_with(plugins);
    let loaded = Plugins::load(&config.settings.plugins, &config.settings.limits)
        .unwrap()
        .expect("plugins configured");
    (loaded, config)
}

#[test]
fn cost_center_labels_mapped_workspaces_and_denies_the_others() {
    let (plugins, config) = load(&format!(
        "[{{name: cost-center, path: '{}', config: {{finance: cc-4411}}}}]",
        wasm("cost_center")
    ));
    let (verdict, job) = decide(&plugins, &config, "finance", "k8s");
    let applied = verdict.unwrap();
    assert_eq!(applied.changes.len(), 1, "{applied:?}");
    assert_eq!(job["metadata"]["labels"]["cost-center"], "cc-4411", "{job}");
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["cost-center"],
        "cc-4411"
    );
    let (verdict, _) = decide(&plugins, &config, "marketing", "k8s");
    let failure = verdict.unwrap_err();
    assert_eq!(failure.category, FailureCategory::PolicyDenied);
    assert!(
        failure.message.contains("`cost-center`"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("marketing"), "{}", failure.message);
}

#[test]
fn plugins_run_in_order_each_seeing_the_previous_result() {
    let (plugins, config) = load(&format!(
        "[{{name: spot, path: '{}', config: {{tags: [k8s], node_selector: {{lifecycle: spot}},
             tolerations: [{{key: spot, operator: Exists, effect: NoSchedule}}]}}}},
          {{name: cost-center, path: '{}', config: {{local: cc-1}}}},
          {{name: registry, path: '{}', config: {{allowed: ['python:', 'ghcr.io/flext/']}}}}]",
        wasm("spot_for_batch"),
        wasm("cost_center"),
        wasm("image_registry")
    ));
    let (verdict, job) = decide(&plugins, &config, "local", "k8s");
    let applied = verdict.unwrap();
    let names: Vec<&str> = applied.changes.iter().map(|c| c.plugin.as_str()).collect();
    assert_eq!(names, ["spot", "cost-center"], "{applied:?}");
    let spec = &job["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"]["lifecycle"], "spot", "{job}");
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "spot"),
        "{job}"
    );
    assert_eq!(job["metadata"]["labels"]["cost-center"], "cc-1");
    // A tag the spot plugin does not list is left alone.
    let (verdict, job) = decide(&plugins, &config, "local", "k8s-gpu");
    assert_eq!(verdict.unwrap().changes.len(), 1);
    assert!(job["spec"]["template"]["spec"]["nodeSelector"]["lifecycle"].is_null());
}

#[test]
fn an_image_outside_the_allowed_prefixes_is_denied_naming_it() {
    let (plugins, config) = load(&format!(
        "[{{name: registry, path: '{}', config: {{allowed: ['registry.example.com/']}}}}]",
        wasm("image_registry")
    ));
    let failure = decide(&plugins, &config, "local", "k8s").0.unwrap_err();
    assert_eq!(failure.category, FailureCategory::PolicyDenied);
    assert!(
        failure.message.contains("registry.example.com/"),
        "{}",
        failure.message
    );
}

/// Each hostile plugin fails the job as `policy_error` with what went wrong, within its deadline;
/// with `on_error: allow` it is skipped and the next plugin decides normally.
#[test]
fn hostile_plugins_give_a_clear_error_within_the_deadline_and_the_next_job_runs() {
    // The endless loop meets the default deadline; the others get a roomy one, so that what
    // stops them is what they test (memory, output size, ...), even on a busy machine.
    for (plugin, timeout, expected) in [
        (
            "endless_loop",
            "100ms",
            "did not decide within its timeout of 100ms",
        ),
        ("memory_bomb", "5s", "needed more than its memory of 64MiB"),
        ("huge_output", "5s", "over its max_output of 1MiB"),
        ("trap", "5s", "trapped"),
        ("bad_patch", "5s", "not JSON"),
    ] {
        let (plugins, config) = load(&format!(
            "[{{name: hostile, path: '{}', timeout: {timeout}}}]",
            wasm(plugin)
        ));
        let started = Instant::now();
        let failure = decide(&plugins, &config, "local", "k8s").0.unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            failure.category,
            FailureCategory::PolicyError,
            "{plugin}: {failure:?}"
        );
        assert!(
            failure.message.contains("`hostile`"),
            "{plugin}: {}",
            failure.message
        );
        assert!(
            failure.message.contains(expected),
            "{plugin}: {}",
            failure.message
        );
        // Within the deadline, with room for the render and a busy machine: not a timing
        // assertion on speed, a bound on hanging.
        assert!(took < Duration::from_secs(10), "{plugin} took {took:?}");

        let (plugins, config) = load(&format!(
            "[{{name: hostile, path: '{}', timeout: {timeout}, on_error: allow}},
              {{name: cost-center, path: '{}', config: {{local: cc-2}}}}]",
            wasm(plugin),
            wasm("cost_center")
        ));
        // The same Plugins twice: a failed call leaves nothing behind for the next one.
        for _ in 0..2 {
            let (verdict, job) = decide(&plugins, &config, "local", "k8s");
            let applied = verdict.unwrap();
            assert!(
                applied.notes.iter().any(|n| n.contains("on_error: allow")),
                "{plugin}: {applied:?}"
            );
            assert_eq!(job["metadata"]["labels"]["cost-center"], "cc-2", "{plugin}");
        }
    }
}

/// A patch against the security baseline, the admin limits or the worker's own wiring is never
/// applied: the job fails naming what it changed and how to allow it; a lifted rule lets that
/// plugin (and only that rule) through.
#[test]
fn a_patch_against_the_baseline_fails_naming_the_field_unless_lifted() {
    for (mode, names) in [
        ("not-object", "not a JSON object"),
        (
            "host-network",
            "hostNetwork is true (baseline `host_namespaces`",
        ),
        ("privileged", "baseline `privilege_escalation`"),
        ("run-as-root", "baseline `run_as_root`"),
        ("service-account-token", "baseline `service_account_token`"),
        (
            "command",
            "container `main`.command (the worker's own, never changeable)",
        ),
        ("worker-label", "flext.dev/job-id (the worker's own"),
        ("name", "metadata.name (the worker's own"),
        ("limits", "baseline `admin_limits`"),
    ] {
        let plugins = format!(
            "[{{name: bad, path: '{}', timeout: 5s, config: {{mode: {mode}}}}}]",
            wasm("bad_patch")
        );
        let config = common::config(&[
            ("FLEXT__PLUGINS", plugins.as_str()),
            ("FLEXT__LIMITS__MAX_MEMORY", "64Gi"),
        ]);
        let loaded = Plugins::load(&config.settings.plugins, &config.settings.limits)
            .unwrap()
            .unwrap();
        let (verdict, job) = decide(&loaded, &config, "local", "k8s");
        let failure = verdict.unwrap_err();
        assert_eq!(failure.category, FailureCategory::PolicyError, "{mode}");
        assert!(
            failure.message.contains(names),
            "{mode}: {}",
            failure.message
        );
        assert!(
            job["spec"]["template"]["spec"]["hostNetwork"].is_null(),
            "{mode}: not applied"
        );
    }
    let (plugins, config) = load(&format!(
        "[{{name: bad, path: '{}', timeout: 5s, config: {{mode: host-network}}, lift: [host_namespaces]}}]",
        wasm("bad_patch")
    ));
    let (verdict, job) = decide(&plugins, &config, "local", "k8s");
    assert_eq!(verdict.unwrap().changes.len(), 1);
    assert_eq!(job["spec"]["template"]["spec"]["hostNetwork"], true);
}

#[test]
fn a_wrong_interface_or_a_wrong_checksum_is_refused_at_load() {
    let config = config_with(&format!(
        "[{{name: wrong, path: '{}'}}]",
        wasm("wrong_interface")
    ));
    let error = Plugins::load(&config.settings.plugins, &config.settings.limits).unwrap_err();
    assert!(error.to_string().contains("plugin `wrong`"), "{error}");
    assert!(error.to_string().contains("flext:policy"), "{error}");

    let config = config_with(&format!(
        "[{{name: cost-center, path: '{}', sha256: '{}'}}]",
        wasm("cost_center"),
        "0".repeat(64)
    ));
    let error = Plugins::load(&config.settings.plugins, &config.settings.limits).unwrap_err();
    assert!(error.to_string().contains("SHA-256"), "{error}");

    let config = config_with("[{name: missing, path: /nonexistent/plugin.wasm}]");
    let error = Plugins::load(&config.settings.plugins, &config.settings.limits).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/plugin.wasm"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_bed_a_changed_job_runs_with_the_change_and_a_denied_one_creates_nothing() {
    let plugins = format!(
        "[{{name: cost-center, path: '{}', config: {{demo: cc-4411}}}}]",
        wasm("cost_center")
    );
    let bed = Bed::new(&[("FLEXT__PLUGINS", plugins.as_str())]).await;
    let changed = WindmillJob::preview(
        "import time\ndef main():\n    time.sleep(3)\n    return 'labelled'\n",
    )
    .push(&bed.db)
    .await;
    let mut denied = WindmillJob::preview("def main():\n    return 'never'\n");
    denied.workspace = "marketing".into();
    let denied = denied.push(&bed.db).await;

    // The pod runs with the plugin's label.
    let label = common::eventually("the changed job's pod", LIMIT, || async {
        let pods = bed.pods_of(changed).await;
        let label = pods
            .first()
            .and_then(|pod| pod.metadata.labels.as_ref()?.get("cost-center").cloned());
        label.ok_or_else(|| format!("{} pods, none labelled yet", pods.len()))
    })
    .await;
    assert_eq!(label, "cc-4411");
    let done = bed.outcome(changed).await;
    assert_eq!(done.status, "success", "{:?}", done.result);
    assert_eq!(done.result, Some(json!("labelled")));
    let log = logs(&bed.db, changed).await;
    assert!(
        log.contains("policy plugin `cost-center` changed the Job"),
        "{log}"
    );

    let done = bed.outcome(denied).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["category"], "policy_denied", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("marketing"),
        "{error}"
    );
    assert!(bed.pods_of(denied).await.is_empty());
    assert!(
        bed.jobs()
            .get_opt(&format!("wm-{denied}-1"))
            .await
            .unwrap()
            .is_none(),
        "nothing created for a denied job"
    );
    // The decisions are counted, by plugin.
    let stop = tokio_util::sync::CancellationToken::new();
    let port = bed.serve_http(stop.clone()).await;
    let (_, metrics) = common::scrape::get(port, "/metrics").await;
    let scrape = common::scrape::Scrape::parse(&metrics);
    for decision in ["patch", "deny"] {
        assert_eq!(
            scrape.value(
                "flext_policy_decisions_total",
                &[("plugin", "cost-center"), ("decision", decision)]
            ),
            1.0,
            "{decision}"
        );
    }
    assert_eq!(
        scrape.value(
            "flext_policy_call_seconds_count",
            &[("plugin", "cost-center")]
        ),
        2.0
    );
    stop.cancel();
    bed.stop().await;
}

/// `hints`, `render` and `check` of the built binary with plugins configured: `hints` shows a
/// denial and its reason, `render` what a plugin changed, `check` loads every plugin and runs it
/// once, refusing one that does not load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_show_what_the_plugins_decide() {
    const BIN: &str = env!("CARGO_BIN_EXE_flext-kubernetes");
    let dir = std::env::temp_dir().join(format!("flext-plugins-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("etl.py");
    std::fs::write(&script, "def main():\n    return 1\n").unwrap();
    let config_file = |name: &str, plugins: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("runtime:\n  type: kubernetes\n  config:\n    windmill: {{tags: [k8s]}}\n    plugins: {plugins}\n"),
        )
        .unwrap();
        path
    };
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(BIN)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Local scripts run in workspace `local`: mapped, they are labelled; unmapped, denied.
    let labelled = config_file(
        "labelled.yaml",
        &format!(
            "[{{name: cost-center, path: '{}', config: {{local: cc-7}}}}]",
            wasm("cost_center")
        ),
    );
    let denied = config_file(
        "denied.yaml",
        &format!(
            "[{{name: cost-center, path: '{}', config: {{finance: cc-7}}}}]",
            wasm("cost_center")
        ),
    );
    let broken = config_file(
        "broken.yaml",
        &format!("[{{name: wrong, path: '{}'}}]", wasm("wrong_interface")),
    );

    let out = run(&[
        "hints".as_ref(),
        script.as_os_str(),
        "--config".as_ref(),
        denied.as_os_str(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("policy_denied"), "{}", text(&out));
    assert!(text(&out).contains("`local`"), "{}", text(&out));
    let out = run(&[
        "hints".as_ref(),
        script.as_os_str(),
        "--config".as_ref(),
        labelled.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("policy plugins (cost-center): allowed"),
        "{}",
        text(&out)
    );

    let out = run(&[
        "render".as_ref(),
        script.as_os_str(),
        "--config".as_ref(),
        labelled.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let rendered = text(&out);
    assert!(
        rendered.contains("# the policy plugin `cost-center` changed the Job"),
        "{rendered}"
    );
    assert!(rendered.contains("cost-center: cc-7"), "{rendered}");

    // `check` needs the database; the plugins come before the executor.
    let db = common::TestDb::new().await;
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&labelled)
        .env("FLEXT_DATABASE_URL", &db.url)
        .env("FLEXT__EXECUTOR__TYPE", "echo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("# policy plugins: cost-center loaded"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("on a sample job (Python, tag `k8s`): allowed"),
        "{}",
        text(&out)
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&broken)
        .env("FLEXT_DATABASE_URL", &db.url)
        .env("FLEXT__EXECUTOR__TYPE", "echo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("plugin `wrong`"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
