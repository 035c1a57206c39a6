//! One worker on two clusters at once: the test bed (`one`) and a second bed with its own
//! apiserver, etcd, state and ports (`two`, `FLEXT_TESTBED2_DIR`; `scripts/test` starts both).
//! Jobs go where their tag, profile or `cluster=` hint says; when `two`'s apiserver stops, jobs
//! not yet created go to `one` and a job only `two` serves waits for it; a worker killed while
//! jobs run on both is replaced by one that follows each job on its own cluster; no job runs
//! twice.
//!
//! One test: stopping `two`'s apiserver must not surprise a test running beside it.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::bed::{LIMIT, bed_settings};
use common::stock::StockWorker;
use common::{TestDb, WindmillJob, eventually, handed_back, logs};
use flext_kubernetes::config::Config;
use flext_kubernetes::executor::{Executor, KubernetesExecutor};
use flext_kubernetes::worker::WorkerHandle;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// The second bed's state directory, refusing anything that is not a running bed.
fn second_bed() -> PathBuf {
    let Some(dir) = std::env::var_os("FLEXT_TESTBED2_DIR").map(PathBuf::from) else {
        panic!(
            "FLEXT_TESTBED2_DIR is not set: run the tests with scripts/test, or start a second bed: \
             FLEXT_TESTBED_DIR=/tmp/flext-testbed-2 scripts/testbed up && export FLEXT_TESTBED2_DIR=/tmp/flext-testbed-2"
        )
    };
    assert!(
        dir.join("ready").exists() && dir.join("kubeconfig").exists(),
        "no test bed running in {}: FLEXT_TESTBED_DIR={} scripts/testbed up",
        dir.display(),
        dir.display()
    );
    assert_ne!(
        Some(dir.join("kubeconfig").into_os_string()),
        std::env::var_os("KUBECONFIG"),
        "the second bed must not be the first"
    );
    dir
}

async fn namespace_on(client: &Client) -> String {
    let name = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name
}

/// `scripts/testbed ARG` on the second bed.
fn second_bed_ctl(dir: &Path, arg: &str) {
    let status =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed"))
            .arg(arg)
            .env("FLEXT_TESTBED_DIR", dir)
            .status()
            .unwrap();
    assert!(
        status.success(),
        "scripts/testbed {arg} on {}",
        dir.display()
    );
}

/// Starts the second bed's apiserver again when dropped, also when the test fails while it is
/// stopped (the bed outlives the test).
struct StartOnDrop<'a>(&'a Path);

impl Drop for StartOnDrop<'_> {
    fn drop(&mut self) {
        second_bed_ctl(self.0, "start-apiserver");
    }
}

/// A worker on both clusters: `two` first for tag `k8s` (and alone for `k8s-gpu`), `one` second.
fn config(one: (&str, &str), two: (&str, &str), name: &str) -> Config {
    let clusters = format!(
        "[{{name: two, kubeconfig: {}, namespace: {}}}, {{name: one, kubeconfig: {}, namespace: {}, tags: [k8s]}}]",
        two.0, two.1, one.0, one.1
    );
    let mut env: Vec<(String, String)> = bed_settings("unused")
        .into_iter()
        .filter(|(k, _)| k != "FLEXT__CLUSTER__NAMESPACE")
        .collect();
    env.extend(
        [
            ("FLEXT__CLUSTERS", clusters.as_str()),
            ("FLEXT__LIMITS__ALLOWED_CLUSTERS", "[one, two]"),
            ("FLEXT__WORKER__NAME", name),
            ("FLEXT__WORKER__SHUTDOWN_GRACE", "1s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::config(&env)
}

async fn start(db: &TestDb, config: Config) -> (WorkerHandle, KubernetesExecutor) {
    let executor = KubernetesExecutor::connect(Arc::new(config.clone()))
        .await
        .expect("the executor connects to both beds");
    let worker = common::start_worker(&db.pool, config, Executor::Kubernetes(executor.clone()));
    (worker, executor)
}

/// A job printing ticks for about `seconds`, then returning "done".
fn ticking(head: &str, seconds: u32) -> String {
    format!(
        "{head}import time\ndef main():\n    for i in range({n}):\n        print(f'tick {{i}}', flush=True)\n        time.sleep(0.5)\n    return 'done'\n",
        n = seconds * 2
    )
}

/// Waits until the Kubernetes Job of the job's first attempt exists in `namespace` of `client`.
async fn job_on(client: &Client, namespace: &str, id: flext_kubernetes::domain::JobId) {
    let jobs: Api<KubeJob> = Api::namespaced(client.clone(), namespace);
    eventually("the job's Kubernetes Job on its cluster", LIMIT, || async {
        jobs.get_opt(&format!("wm-{id}-1")).await.ok().flatten()
    })
    .await;
}

async fn succeeded_once(db: &TestDb, id: flext_kubernetes::domain::JobId) -> String {
    let done = handed_back(db, id, LIMIT).await;
    let log = logs(db, id).await;
    assert_eq!(done.status, "success", "{log}");
    assert_eq!(done.result, Some(serde_json::json!("done")), "{log}");
    for line in log.lines().filter(|l| l.starts_with("tick ")) {
        assert_eq!(
            log.matches(&format!("{line}\n")).count(),
            1,
            "{line} twice:\n{log}"
        );
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_where_their_tag_and_hints_say_fail_over_while_a_cluster_is_down_and_are_adopted_on_both()
 {
    let two_dir = second_bed();
    let one_kubeconfig = std::env::var("KUBECONFIG").unwrap();
    let two_kubeconfig = two_dir.join("kubeconfig");
    let one_client = common::bed::client().await;
    let two_client = common::bed::client_from(&two_kubeconfig).await;
    let one_ns = namespace_on(&one_client).await;
    let two_ns = namespace_on(&two_client).await;
    let db = TestDb::new().await;
    let stock_stop = CancellationToken::new();
    StockWorker::new(&db.pool).spawn(stock_stop.clone());
    let two_path = two_kubeconfig.to_str().unwrap().to_owned();
    let config = || {
        config(
            (&one_kubeconfig, &one_ns),
            (&two_path, &two_ns),
            "wk-two-clusters",
        )
    };
    // `check`: one line per cluster when all can be used; each cluster's own state when not.
    let check = |clusters: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flext-kubernetes"))
            .arg("check")
            .env("FLEXT_DATABASE_URL", &db.url)
            .env("FLEXT__WINDMILL__TAGS", "[k8s, k8s-gpu]")
            .env("FLEXT__CLUSTERS", clusters)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let both = format!(
        "[{{name: two, kubeconfig: {two_path}, namespace: {two_ns}}}, {{name: one, kubeconfig: {one_kubeconfig}, namespace: {one_ns}, tags: [k8s]}}]"
    );
    let (ok, text) = check(&both);
    assert!(ok, "{text}");
    for (name, ns) in [("two", &two_ns), ("one", &one_ns)] {
        assert!(
            text.contains(&format!("# cluster `{name}`: reachable, namespace `{ns}` exists, every permission the worker needs is granted")),
            "{text}"
        );
    }
    let broken = format!(
        "[{{name: two, kubeconfig: {two_path}, namespace: no-such-ns}}, {{name: one, kubeconfig: {one_kubeconfig}, namespace: {one_ns}, tags: [k8s]}}]"
    );
    let (ok, text) = check(&broken);
    assert!(!ok, "{text}");
    assert!(text.contains("1 of 2 cluster(s) cannot be used"), "{text}");
    assert!(
        text.contains("cluster `two`: namespace `no-such-ns` does not exist"),
        "{text}"
    );
    assert!(
        text.contains("cluster `one`: reachable, namespace exists, permissions granted"),
        "{text}"
    );

    let (worker, executor) = start(&db, config()).await;

    // Routing: the tag's first cluster; a hint; the only cluster serving a tag.
    let first = WindmillJob::preview(&ticking("", 3)).push(&db).await;
    let hinted = WindmillJob::preview(&ticking("# k8s: cluster=one\n", 3))
        .push(&db)
        .await;
    let gpu = WindmillJob::preview(&ticking("", 3))
        .tag("k8s-gpu")
        .push(&db)
        .await;
    job_on(&two_client, &two_ns, first).await;
    job_on(&one_client, &one_ns, hinted).await;
    job_on(&two_client, &two_ns, gpu).await;
    let log = succeeded_once(&db, first).await;
    assert!(
        log.contains("running on cluster `two` (the first ready cluster serving tag `k8s`"),
        "{log}"
    );
    let log = succeeded_once(&db, hinted).await;
    assert!(
        log.contains("running on cluster `one` (cluster=one (annotation, line 1))"),
        "{log}"
    );
    let log = succeeded_once(&db, gpu).await;
    assert!(log.contains("running on cluster `two`"), "{log}");

    // `two`'s apiserver stops: new `k8s` jobs go to `one`; a `k8s-gpu` job waits for `two`.
    second_bed_ctl(&two_dir, "stop-apiserver");
    let restart = StartOnDrop(&two_dir);
    eventually("cluster `two` to be seen not ready", LIMIT, || async {
        let states = executor.cluster_states();
        (!states.iter().find(|c| c.name == "two").unwrap().ready).then_some(())
    })
    .await;
    let failed_over = WindmillJob::preview(&ticking("", 3)).push(&db).await;
    let waiting = WindmillJob::preview(&ticking("", 1))
        .tag("k8s-gpu")
        .push(&db)
        .await;
    job_on(&one_client, &one_ns, failed_over).await;
    let log = succeeded_once(&db, failed_over).await;
    assert!(
        log.contains("running on cluster `one` (1 skipped: cluster `two`: "),
        "{log}"
    );
    eventually("the k8s-gpu job to wait for `two`", LIMIT, || async {
        let log = logs(&db, waiting).await;
        log.contains("waiting for a cluster: none of two can take the job now")
            .then_some(())
    })
    .await;
    drop(restart);
    let log = succeeded_once(&db, waiting).await;
    assert!(log.contains("running on cluster `two`"), "{log}");

    // Jobs running on both clusters when the worker dies are followed where they run.
    let on_one = WindmillJob::preview(&ticking("# k8s: cluster=one\n", 6))
        .push(&db)
        .await;
    let on_two = WindmillJob::preview(&ticking("", 6))
        .tag("k8s-gpu")
        .push(&db)
        .await;
    for id in [on_one, on_two] {
        eventually("the job to tick", LIMIT, || async {
            logs(&db, id).await.contains("tick 2").then_some(())
        })
        .await;
    }
    worker.abandon();
    worker.wait().await;
    drop(executor);
    let (worker, _executor) = start(&db, config()).await;
    eventually("the status to show each job's cluster", LIMIT, || async {
        let running = worker.probe().status().running;
        let cluster_of = |id| {
            running
                .iter()
                .find(|r| r.id == id)
                .and_then(|r| r.cluster.clone())
        };
        let seen = (cluster_of(on_one), cluster_of(on_two));
        if seen == (Some("one".to_owned()), Some("two".to_owned())) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    let log = succeeded_once(&db, on_one).await;
    assert!(
        log.contains("following the job's work on cluster `one`"),
        "{log}"
    );
    assert!(!log.contains("running the script again"), "{log}");
    let log = succeeded_once(&db, on_two).await;
    assert!(
        log.contains("following the job's work on cluster `two`"),
        "{log}"
    );
    assert!(!log.contains("running the script again"), "{log}");

    // A worker starting while `two` is down starts on `one` alone and connects `two` when it
    // answers: a restart does not wait for every cluster.
    worker.shutdown().await;
    second_bed_ctl(&two_dir, "stop-apiserver");
    let restart = StartOnDrop(&two_dir);
    let (worker, executor) = start(&db, config()).await;
    let two = || {
        executor
            .cluster_states()
            .into_iter()
            .find(|c| c.name == "two")
            .unwrap()
    };
    let state = two();
    assert!(!state.ready, "{state:?}");
    assert!(
        state
            .not_ready_because
            .as_deref()
            .unwrap_or_default()
            .starts_with("not connected yet: cannot reach the Kubernetes API"),
        "{state:?}"
    );
    let early = WindmillJob::preview(&ticking("", 1)).push(&db).await;
    let log = succeeded_once(&db, early).await;
    assert!(
        log.contains("running on cluster `one` (1 skipped: cluster `two`: not connected yet"),
        "{log}"
    );
    let later = WindmillJob::preview(&ticking("", 1))
        .tag("k8s-gpu")
        .push(&db)
        .await;
    eventually("the k8s-gpu job to wait for `two`", LIMIT, || async {
        logs(&db, later)
            .await
            .contains("waiting for a cluster")
            .then_some(())
    })
    .await;
    drop(restart);
    let log = succeeded_once(&db, later).await;
    assert!(log.contains("running on cluster `two`"), "{log}");
    assert!(two().ready);

    worker.shutdown().await;
    stock_stop.cancel();
    for (client, ns) in [(&one_client, &one_ns), (&two_client, &two_ns)] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
}
