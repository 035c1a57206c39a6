//! Installing the worker on a cluster, on the test bed with RBAC enforced: the worker's Role is
//! enough to run jobs end to end and grants nothing else, and `check`/`run` name a missing rule.

// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::bed::{LIMIT, bed_settings, client, client_from};
use common::stock::StockWorker;
use common::tools::text;
use common::{TestDb, WindmillJob, eventually, handed_back};
use flext_kubernetes::executor::kubernetes::access;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_flext-kubernetes");

/// A namespace of the bed, deleted when dropped (in the background).
struct TestNamespace {
    name: String,
}

impl TestNamespace {
    async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create a namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    /// Synchronously (the test's runtime may be gone before a spawned task ran), without waiting
    /// for the namespace to empty.
    fn drop(&mut self) {
        let _ = common::tools::kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Creates (or replaces) the worker's `Role` with `rules`, and its `ServiceAccount` and `RoleBinding`.
async fn grant(client: &Client, namespace: &str, rules: Vec<PolicyRule>) {
    let role_api: Api<Role> = Api::namespaced(client.clone(), namespace);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "flext-worker"},
        "rules": rules,
    }))
    .unwrap();
    if let Some(existing) = role_api.get_opt("flext-worker").await.unwrap() {
        let mut role = role;
        role.metadata.resource_version = existing.metadata.resource_version;
        role_api
            .replace("flext-worker", &PostParams::default(), &role)
            .await
            .unwrap();
    } else {
        role_api
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "flext-worker"}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "flext-worker"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "flext-worker"},
            "subjects": [{"kind": "ServiceAccount", "name": "flext-worker", "namespace": namespace}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
}

/// A kubeconfig for the bed's apiserver that authenticates as `namespace/flext-worker` with a
/// bound token from the `TokenRequest` API, as the worker's pod would.
async fn service_account_kubeconfig(client: &Client, namespace: &str, dir: &Path) -> PathBuf {
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    });
    let answer: serde_json::Value = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_subresource("token", "flext-worker", &PostParams::default(), &request)
        .await
        .expect("a token for the worker's ServiceAccount");
    let token = answer["status"]["token"].as_str().unwrap().to_owned();
    let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
    let mut kubeconfig: serde_yaml_ng::Value = serde_yaml_ng::from_str(&admin).unwrap();
    kubeconfig["users"] = serde_yaml_ng::from_str(&format!(
        "[{{name: flext-worker, user: {{token: {token}}}}}]"
    ))
    .unwrap();
    for context in kubeconfig["contexts"].as_sequence_mut().unwrap() {
        context["context"]["user"] = "flext-worker".into();
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

/// The worker's config for `namespace` on the bed, in a file.
fn worker_config(dir: &Path, namespace: &str, kubeconfig: &Path, tag: &str) -> PathBuf {
    let config = format!(
        "runtime:\n  type: kubernetes\n  config:\n    windmill:\n      worker_group: install\n      tags: [{tag}]\n    \
         cluster:\n      namespace: {namespace}\n      kubeconfig: {}\n    worker:\n      poll_interval: 50ms\n      \
         heartbeat_interval: 1s\n",
        kubeconfig.display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn flext(args: &[&str], config: &Path, db_url: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env("FLEXT_DATABASE_URL", db_url)
        .env_remove("FLEXT_WINDMILL_TOKEN")
        .env_remove("RUST_LOG")
        .env("FLEXT__WORKER__HTTP__LISTEN", "127.0.0.1:0");
    for (key, value) in bed_settings("") {
        if key != "FLEXT__CLUSTER__NAMESPACE" {
            command.env(key, value);
        }
    }
    command
}

fn is_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// The worker's Role, exactly as `access::REQUIRED` lists it, runs a job end to end; the same
/// identity cannot read Secrets elsewhere, create bare Pods or list Nodes; with one rule removed,
/// `check` and `run` name it and the rule that grants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_role_runs_jobs_and_grants_nothing_else() {
    let admin = client().await;
    let jobs = TestNamespace::new(&admin, "rbac").await;
    let other = TestNamespace::new(&admin, "rbac-other").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "not-yours"}, "stringData": {"k": "v"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &other.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    grant(&admin, &jobs.name, access::role_rules(&jobs.name)).await;
    let dir = tempdir();
    let kubeconfig = service_account_kubeconfig(&admin, &jobs.name, &dir).await;
    let worker = client_from(&kubeconfig).await;

    // Nothing beyond the Role.
    assert!(is_forbidden(
        Api::<Secret>::namespaced(worker.clone(), &other.name)
            .get("not-yours")
            .await
    ));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
    }))
    .unwrap();
    assert!(is_forbidden(
        Api::<Pod>::namespaced(worker.clone(), &jobs.name)
            .create(&PostParams::default(), &pod)
            .await
    ));
    assert!(is_forbidden(
        Api::<Node>::all(worker.clone())
            .list(&ListParams::default())
            .await
    ));

    // Enough for `check`, and for a job end to end (create, watch, logs, delete).
    let db = TestDb::new().await;
    let tag = "k8s-rbac";
    let config = worker_config(&dir, &jobs.name, &kubeconfig, tag);
    let out = flext(&["check"], &config, &db.url).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stop = CancellationToken::new();
    StockWorker::new(&db.pool).spawn(stop.clone());
    let mut run = flext(&["run"], &config, &db.url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = WindmillJob::script(
        "u/alice/rbac",
        "def main():\n    print('as the worker SA')\n    return 7\n",
    )
    .tag(tag)
    .push(&db)
    .await;
    let done = handed_back(&db, id, LIMIT).await;
    let _ = nix_term(&mut run);
    stop.cancel();
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!(7)));

    // One rule fewer: `check` and `run` refuse, naming it.
    let without_logs: Vec<PolicyRule> = access::role_rules(&jobs.name)
        .into_iter()
        .filter(|r| r.resources.as_deref() != Some(&["pods/log".to_owned()][..]))
        .collect();
    grant(&admin, &jobs.name, without_logs).await;
    let rule = r#"{apiGroups: [""], resources: [pods/log], verbs: [get]}"#;
    let out = eventually(
        "check to notice the removed rule",
        Duration::from_secs(30),
        || {
            let out = flext(&["check"], &config, &db.url).output().unwrap();
            async move { (!out.status.success()).then_some(out) }
        },
    )
    .await;
    let report = text(&out);
    assert!(report.contains("lacks 1 permission(s)"), "{report}");
    assert!(
        report.contains("get pods/log (core)") && report.contains(rule),
        "{report}"
    );
    let out = flext(&["run"], &config, &db.url).output().unwrap();
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("get pods/log (core)") && report.contains(rule),
        "{report}"
    );
}

fn nix_term(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    let pid = i32::try_from(child.id()).unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
    child.wait()
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flext-install-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The worker image `scripts/test` built and pushed to the bed's registry
/// (`FLEXT_TEST_WORKER_IMAGE`, `<registry>/<repository>:<tag>[@sha256:<digest>]`, as
/// `scripts/build-image --push` prints it) as the chart's `image.*` values.
fn worker_image() -> Vec<String> {
    let image = std::env::var("FLEXT_TEST_WORKER_IMAGE").unwrap_or_else(|_| {
        panic!(
            "FLEXT_TEST_WORKER_IMAGE is not set: run the tests with scripts/test (it builds the worker image and \
             pushes it to the test bed's registry), or set it to the `pushed` line of `scripts/build-image --push`"
        )
    });
    let (reference, digest) = match image.split_once('@') {
        Some((reference, digest)) => (reference, Some(digest)),
        None => (image.as_str(), None),
    };
    let slash = reference.rfind('/').unwrap_or(0);
    let (repository, tag) = match reference[slash..].rfind(':') {
        Some(colon) => (&reference[..slash + colon], &reference[slash + colon + 1..]),
        None => (reference, "latest"),
    };
    let mut values = vec![
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
    ];
    values.extend(digest.map(|d| format!("image.digest={d}")));
    values
}

/// The pods of `namespace` that a `NetworkPolicy`'s `podSelector` (`matchLabels`) selects.
async fn selected(client: &Client, namespace: &str, policy: &str) -> Vec<String> {
    let policy: serde_json::Value = serde_json::from_str(&common::tools::kubectl_ok(&[
        "get",
        "networkpolicy",
        policy,
        "-n",
        namespace,
        "-o",
        "json",
    ]))
    .unwrap();
    let selector: Vec<String> = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector.join(",")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// The chart installs the worker as a pod from the real image (pulled from the bed's registry),
/// with in-cluster config and its ServiceAccount's token under the chart's Role; it runs a
/// Windmill job end to end; job pods' init container runs from the same pulled image; the
/// `NetworkPolicies` select the pods they should; and when the worker pod is deleted mid-job, its
/// replacement (same name) adopts the job, which completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_a_worker_that_runs_jobs_and_survives_its_pod() {
    let image = worker_image();
    let admin = client().await;
    let ns = TestNamespace::new(&admin, "install").await;
    let db = TestDb::new().await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "windmill-db"}, "stringData": {"url": db.url}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    StockWorker::new(&db.pool).spawn(stop.clone());
    let job_tag = "k8s-install";
    // Pods share the host's network on the bed: a port free now, not the chart's 9464.
    let port = common::scrape::free_port();
    let config = json!({
        "windmill": {"worker_group": "install", "tags": [job_tag]},
        "resources": {"default_cpu": "10m", "default_memory": "128Mi", "default_storage": "1Gi"},
        "executor": {"image_pull_grace": "3s", "pending_budget": "10m"},
        "worker": {"poll_interval": "50ms", "heartbeat_interval": "1s", "shutdown_grace": "2s",
                   "http": {"listen": format!("127.0.0.1:{port}")}},
    })
    .to_string();
    let chart = common::tools::chart();
    let out = common::tools::helm(&[
        "install",
        "flext-kubernetes",
        chart.to_str().unwrap(),
        "--namespace",
        &ns.name,
        "--set",
        &image.join(","),
        "--set",
        "database.existingSecret=windmill-db",
        "--set-json",
        &format!("config={config}"),
    ]);
    assert!(out.status.success(), "helm install:\n{}", text(&out));
    let worker = "wk-install-flext-kubernetes-0";
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns.name);

    // A job end to end, claimed by the worker pod.
    let id = WindmillJob::script("u/alice/installed", "def main(x):\n    return x + 1\n")
        .tag(job_tag)
        .args(json!({"x": 41}))
        .push(&db)
        .await;
    let done = handed_back(&db, id, LIMIT * 2).await;
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!(42)));
    assert_eq!(done.worker.as_deref(), Some(worker));
    let first = pods.get("flext-kubernetes-0").await.unwrap();
    let status = first.status.clone().unwrap().container_statuses.unwrap();
    assert!(
        status[0].image_id.contains("@sha256:"),
        "the worker runs from the pulled image: {status:?}"
    );

    // A longer job: the worker pod is deleted while it runs.
    let code = "import time\ndef main():\n    print('long job starts', flush=True)\n    time.sleep(10)\n    print('long job ends', flush=True)\n    return 'done'\n";
    let id = WindmillJob::script("u/alice/long", code)
        .tag(job_tag)
        .push(&db)
        .await;
    let job_pod = eventually("the job's pod to run its code", LIMIT, || async {
        let log = common::logs(&db, id).await;
        if !log.contains("long job starts") {
            return None;
        }
        pods.list(&ListParams::default().labels(&format!("flext.dev/job-id={id}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    let init = &job_pod
        .status
        .clone()
        .unwrap()
        .init_container_statuses
        .unwrap()[0];
    assert!(
        init.image_id.contains("@sha256:")
            && init
                .image
                .starts_with(image[0].trim_start_matches("image.repository=")),
        "the runner comes from the pulled worker image: {init:?}"
    );
    let job_pod_name = job_pod.metadata.name.clone().unwrap();
    let jobs_selected = selected(&admin, &ns.name, "flext-kubernetes-jobs").await;
    let worker_selected = selected(&admin, &ns.name, "flext-kubernetes-worker").await;
    // The first job's pod may still be going away: every selected pod is a job's, this one too.
    assert!(
        jobs_selected.contains(&job_pod_name) && jobs_selected.iter().all(|p| p.starts_with("wm-")),
        "{jobs_selected:?}"
    );
    assert_eq!(worker_selected, ["flext-kubernetes-0"]);

    pods.delete("flext-kubernetes-0", &DeleteParams::default())
        .await
        .unwrap();
    let done = handed_back(&db, id, LIMIT * 2).await;
    stop.cancel();
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!("done")));
    assert_eq!(done.worker.as_deref(), Some(worker));
    let second = pods.get("flext-kubernetes-0").await.unwrap();
    assert_ne!(
        second.metadata.uid, first.metadata.uid,
        "a new worker pod finished the job"
    );
    // Uninstalled before the test ends: no worker outlives it (its database sessions would too).
    let out = common::tools::helm(&[
        "uninstall",
        "flext-kubernetes",
        "--namespace",
        &ns.name,
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "helm uninstall:\n{}", text(&out));
    let log = common::logs(&db, id).await;
    assert_eq!(log.matches("long job starts").count(), 1, "{log}");
    assert_eq!(log.matches("long job ends").count(), 1, "{log}");
}
