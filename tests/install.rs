//! Installing the worker on a cluster, on the test bed with RBAC enforced: the worker's Role is
//! enough to run jobs end to end and grants nothing else, and `check`/`run` name a missing rule.

// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::bed::{LIMIT, bed_settings, client};
use common::stock::StockWorker;
use common::{TestDb, WindmillJob, completed, eventually};
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
    client: Client,
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
        Self {
            client: client.clone(),
            name,
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let api = Api::<Namespace>::all(self.client.clone());
        let name = self.name.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { api.delete(&name, &DeleteParams::default()).await });
        }
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

async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
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
        .env_remove("RUST_LOG");
    for (key, value) in bed_settings("") {
        if key != "FLEXT__CLUSTER__NAMESPACE" {
            command.env(key, value);
        }
    }
    command
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
    let done = eventually("the job to complete in Windmill", LIMIT, || async {
        completed(&db, id)
            .await
            .filter(|c| c.worker.as_deref() != Some("wk-default-stock"))
    })
    .await;
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
