//! Warm pools on the test bed: jobs handed to waiting runner pods over the worker's TLS
//! hand-over, one job per pod, the pool refilled; everything else cold, as before.

// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::bed::{Bed, LIMIT, bed_config};
use common::{WindmillJob, completed, eventually, logs};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A worker with one warm Python pod for tag `k8s`, the hand-over on a free loopback port.
const POOL: &[(&str, &str)] = &[
    (
        "FLEXT__WARM_POOLS",
        "[{tag: k8s, language: python3, size: 1}]",
    ),
    ("FLEXT__WORKER__HANDOVER__LISTEN", "127.0.0.1:0"),
];

const POOL_NAME: &str = "k8s-python3";

/// The pool's pods not handed a job (names), from the apiserver.
async fn waiting_pods(bed: &Bed) -> BTreeSet<String> {
    bed.pods()
        .list(&ListParams::default().labels(&format!("flext.dev/warm-pool={POOL_NAME}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            !labels.contains_key("flext.dev/job-id") && p.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// `flext_warm_pods{state=...}` of the pool, from the worker's `/metrics`.
async fn warm_gauge(port: u16, state: &str) -> Option<f64> {
    let (_, body) = common::scrape::try_get(port, "/metrics").await?;
    body.lines()
        .find(|l| {
            l.starts_with("flext_warm_pods{")
                && l.contains(&format!("pool=\"{POOL_NAME}\""))
                && l.contains(&format!("state=\"{state}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the pool's pod calls the worker for a job (the worker's gauge says so): the
/// waiting pod's name.
async fn pool_ready(bed: &Bed, port: u16) -> String {
    eventually("a warm pod waiting for a job", LIMIT, || async {
        let waiting = warm_gauge(port, "waiting").await?;
        let pods = waiting_pods(bed).await;
        (waiting >= 1.0 && pods.len() == 1).then(|| pods.into_iter().next().unwrap())
    })
    .await
}

async fn warm_bed() -> (Bed, u16, CancellationToken) {
    let bed = Bed::new(POOL).await;
    let stop = CancellationToken::new();
    let port = bed.serve_http(stop.clone()).await;
    (bed, port, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_job_runs_on_a_warm_pod_and_the_pool_refills() {
    let (bed, port, stop) = warm_bed().await;
    let warm = pool_ready(&bed, port).await;
    let code = "import os\ndef main(x):\n    print('in', os.environ['WM_JOB_ID'], flush=True)\n    return {'double': x * 2}\n";
    let id = WindmillJob::script("u/alice/double", code)
        .args(json!({"x": 21}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    let log = logs(&bed.db, id).await;
    assert_eq!(done.status, "success", "{done:?}\n{log}");
    assert_eq!(done.result, Some(json!({"double": 42})));
    assert!(
        log.contains(&format!(
            "warm start: handed to pod {warm} of warm pool `{POOL_NAME}`"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("in {id}\n")),
        "the job's environment:\n{log}"
    );
    // No Kubernetes Job was made for it.
    assert!(
        bed.jobs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // One job per pod: the used pod goes, a new one waits.
    let next = pool_ready(&bed, port).await;
    assert_ne!(next, warm, "a fresh pod, not the used one");
    eventually("the used pod deleted", LIMIT, || async {
        bed.pods()
            .get_opt(&warm)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    stop.cancel();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_pod_settings_differ_from_the_pools_goes_cold_and_says_why() {
    let (bed, port, stop) = warm_bed().await;
    let warm = pool_ready(&bed, port).await;
    let id = WindmillJob::preview("# k8s: memory=256Mi\ndef main():\n    return 7\n")
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    let log = logs(&bed.db, id).await;
    assert_eq!(done.status, "success", "{done:?}\n{log}");
    assert_eq!(done.result, Some(json!(7)));
    assert!(
        log.contains(&format!(
            "cold start: the job's pod settings differ from pool `{POOL_NAME}`: memory"
        )),
        "{log}"
    );
    let bash = WindmillJob::preview("echo hi\n")
        .lang("bash")
        .push(&bed.db)
        .await;
    assert_eq!(bed.outcome(bash).await.status, "success");
    let bash_log = logs(&bed.db, bash).await;
    assert!(
        bash_log.contains(&format!(
            "pool `{POOL_NAME}` is for python3, the job is bash"
        )),
        "{bash_log}"
    );
    // The waiting pod was not used.
    assert_eq!(waiting_pods(&bed).await, BTreeSet::from([warm]));
    stop.cancel();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pod_killed_while_waiting_is_replaced_and_the_next_job_runs_warm() {
    let (bed, port, stop) = warm_bed().await;
    let first = pool_ready(&bed, port).await;
    bed.pods()
        .delete(&first, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let second = eventually("a replacement waiting", LIMIT, || async {
        let pods = waiting_pods(&bed).await;
        let waiting = warm_gauge(port, "waiting").await?;
        (waiting >= 1.0 && pods.len() == 1 && !pods.contains(&first))
            .then(|| pods.into_iter().next().unwrap())
    })
    .await;
    let id = WindmillJob::preview("def main():\n    return 'ok'\n")
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    let log = logs(&bed.db, id).await;
    assert_eq!(done.status, "success", "{log}");
    assert!(log.contains(&format!("handed to pod {second}")), "{log}");
    stop.cancel();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_timeout_on_a_warm_pod_delete_it() {
    let (bed, port, stop) = warm_bed().await;
    pool_ready(&bed, port).await;
    let running = WindmillJob::preview(
        "import time\ndef main():\n    print('working', flush=True)\n    time.sleep(300)\n",
    )
    .push(&bed.db)
    .await;
    eventually("the job running on the warm pod", LIMIT, || async {
        logs(&bed.db, running)
            .await
            .contains("working")
            .then_some(())
    })
    .await;
    assert!(logs(&bed.db, running).await.contains("warm start"));
    common::cancel(&bed.db, running, "alice").await;
    let done = eventually("the cancel", LIMIT, || async {
        completed(&bed.db, running).await
    })
    .await;
    assert_eq!(
        (done.status.as_str(), done.canceled_by.as_deref()),
        ("canceled", Some("alice"))
    );
    eventually("its pod gone", LIMIT, || async {
        bed.pods_of(running).await.is_empty().then_some(())
    })
    .await;
    pool_ready(&bed, port).await;
    let slow = WindmillJob::preview("import time\ndef main():\n    time.sleep(300)\n")
        .timeout(3)
        .push(&bed.db)
        .await;
    let done = eventually("the timeout", LIMIT, || async {
        completed(&bed.db, slow).await
    })
    .await;
    assert_eq!(
        (done.status.as_str(), done.canceled_by.as_deref()),
        ("canceled", Some("timeout"))
    );
    assert!(logs(&bed.db, slow).await.contains("warm start"));
    eventually("its pod gone", LIMIT, || async {
        bed.pods_of(slow).await.is_empty().then_some(())
    })
    .await;
    stop.cancel();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_while_a_warm_pod_runs_its_job_follows_it_to_the_end_once() {
    let name = format!(
        "wk-warm-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut settings = POOL.to_vec();
    settings.push(("FLEXT__WORKER__NAME", &name));
    let mut bed = Bed::new(&settings).await;
    let stop = CancellationToken::new();
    let port = bed.serve_http(stop.clone()).await;
    let warm = pool_ready(&bed, port).await;
    let id = WindmillJob::preview(
        "import time\ndef main():\n    print('before', flush=True)\n    time.sleep(6)\n    print('after', flush=True)\n    return 'done'\n",
    )
    .push(&bed.db)
    .await;
    eventually("the job running on the warm pod", LIMIT, || async {
        logs(&bed.db, id).await.contains("before").then_some(())
    })
    .await;
    // The worker dies (no hand-back, no cleanup); one of the same name starts and adopts.
    if let Some(worker) = bed.worker.take() {
        worker.abandon();
        worker.wait().await;
    }
    bed.start_worker(bed_config(&bed.namespace, &settings))
        .await;
    let done = bed.outcome(id).await;
    let log = logs(&bed.db, id).await;
    assert_eq!(done.status, "success", "{log}");
    assert_eq!(done.result, Some(json!("done")));
    assert_eq!(log.matches("before\n").count(), 1, "once:\n{log}");
    assert_eq!(log.matches("after\n").count(), 1, "once:\n{log}");
    eventually("the adopted warm pod deleted", LIMIT, || async {
        bed.pods()
            .get_opt(&warm)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    stop.cancel();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_over_refuses_another_pods_call_and_a_spent_credential() {
    let (bed, port, stop) = warm_bed().await;
    let pod = pool_ready(&bed, port).await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.namespace);
    let secret = secrets.get(&pod).await.unwrap();
    let data = secret.data.unwrap();
    let credential = String::from_utf8(data["credential"].0.clone()).unwrap();
    let ca = data["worker-ca.der"].0.clone();
    let spec = bed.pods().get(&pod).await.unwrap().spec.unwrap();
    let url = spec.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "FLEXT_HANDOVER_URL")
        .and_then(|e| e.value.clone())
        .unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca))
        .unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let call = |who: &str, credential: &str| {
        client
            .post(format!("{url}/v1/handover"))
            .bearer_auth(credential)
            .header("x-flext-pod", who)
            .send()
    };
    // Pinned to the worker's CA, so TLS works; the credential is the pod's and no other's.
    let other = call("another-pod", &credential).await.unwrap();
    assert_eq!(other.status(), 401);
    assert!(other.text().await.unwrap().contains("another pod"));
    assert_eq!(call(&pod, "not-a-credential").await.unwrap().status(), 401);
    // Without the CA, no TLS at all.
    let unpinned = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        unpinned
            .post(format!("{url}/v1/handover"))
            .send()
            .await
            .is_err()
    );
    // The pod takes a job; its credential is spent with it.
    let id = WindmillJob::preview("import time\ndef main():\n    time.sleep(2)\n    return 1\n")
        .push(&bed.db)
        .await;
    eventually("the job handed over", LIMIT, || async {
        logs(&bed.db, id).await.contains("warm start").then_some(())
    })
    .await;
    let spent = eventually("the runner to have its job", LIMIT, || async {
        let response = call(&pod, &credential).await.ok()?;
        (response.status() != 204).then_some(response.status())
    })
    .await;
    assert!(spent == 410 || spent == 401, "spent: {spent}");
    assert_eq!(bed.outcome(id).await.status, "success");
    stop.cancel();
    bed.stop().await;
}

/// `render` says which path a script takes and, for the cold one, why.
#[test]
fn render_says_which_path_a_script_takes_and_why() {
    let dir = std::env::temp_dir().join(format!("warm-render-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "runtime:\n  type: kubernetes\n  config:\n    warm_pools: [{tag: k8s, language: python3, size: 2}]\n    worker: {handover: {advertise: 10.0.0.7}}\n",
    )
    .unwrap();
    let render = |name: &str, code: &str| {
        let script = dir.join(name);
        std::fs::write(&script, code).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flext-kubernetes"))
            .args(["render", "--config"])
            .arg(&config)
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let warm = render("plain.py", "def main():\n    return 1\n");
    assert!(
        warm.contains("# start: warm: a waiting pod of pool `k8s-python3` takes it"),
        "{warm}"
    );
    let cold = render("big.py", "# k8s: cpu=2\ndef main():\n    return 1\n");
    assert!(
        cold.contains("# start: cold: differs from pool `k8s-python3`: cpu"),
        "{cold}"
    );
    let bash = render("job.sh", "echo hi\n");
    assert!(
        bash.contains("# start: cold: pool `k8s-python3` is for python3"),
        "{bash}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_job_over_the_pools_memory_is_oom_killed_and_status_shows_the_pool() {
    let (bed, port, stop) = warm_bed().await;
    pool_ready(&bed, port).await;
    let (_, status) = common::scrape::get(port, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let pools = &status["clusters"][0]["warm_pools"];
    assert_eq!(pools[0]["pool"], POOL_NAME, "{status}");
    assert_eq!(pools[0]["size"], 1, "{status}");
    // The bed's pods get 128Mi (tests/common/bed.rs): the pool's, so this job matches it.
    let code = "def main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(8 << 20))\n";
    let id = WindmillJob::preview(code).push(&bed.db).await;
    let done = bed.outcome(id).await;
    let log = logs(&bed.db, id).await;
    assert!(log.contains("warm start"), "{log}");
    assert_eq!(done.status, "failure", "{log}");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["name"], "OOMKilled", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("128Mi"),
        "{error}"
    );
    stop.cancel();
    bed.stop().await;
}
