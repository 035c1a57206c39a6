//! The Helm chart (`deploy/helm/flext-kubernetes`): `helm lint` and `helm template` with the
//! default values and with `ci/full-values.yaml`, and what they render checked against the
//! worker: the objects and their labels, the Role against `files/rbac-rules.yaml`, the grace
//! period against `worker.shutdown_grace`, the jobs `NetworkPolicy` against the labels of a job pod
//! the built worker renders from the chart's own config, no secret values anywhere, and bad
//! values failing with the field's name, and the autoscalers (KEDA's queue query, the HPA's
//! metric, never both). Helm comes from `scripts/tools helm` (built once from
//! the Go module proxy, then cached); no cluster is needed.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

mod common;

use common::tools::{chart, helm, promtool, text};
use serde::Deserialize;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_flext-kubernetes");
/// The release the tests install, and its namespace.
const RELEASE: &str = "flext";
const NAMESPACE: &str = "flext-system";

fn full_values() -> String {
    chart()
        .join("ci/full-values.yaml")
        .to_string_lossy()
        .into_owned()
}

/// `helm template` of the chart with `values` (`--set`, `-f` ... arguments): the objects, or
/// helm's error output.
fn try_template(values: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(values);
    let out = helm(&args);
    if !out.status.success() {
        return Err(text(&out));
    }
    let yaml = String::from_utf8(out.stdout).unwrap();
    Ok(documents(&yaml))
}

fn template(values: &[&str]) -> Vec<Value> {
    try_template(values).unwrap_or_else(|e| panic!("helm template {values:?} failed:\n{e}"))
}

/// The YAML documents of a stream that are objects (comment-only documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The two value sets every check runs with.
const DEFAULT: &[&str] = &["--set", "database.existingSecret=windmill-db"];
fn full() -> Vec<String> {
    vec!["-f".into(), full_values()]
}
fn both() -> Vec<(&'static str, Vec<Value>)> {
    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    vec![("default", template(DEFAULT)), ("full", template(&full))]
}

fn one<'a>(objects: &'a [Value], kind: &str, name_suffix: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(name_suffix))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named *{name_suffix}: {found:?}");
    found[0]
}

fn kinds(objects: &[Value]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for object in objects {
        *kinds
            .entry(object["kind"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    kinds
}

fn namespace_of(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or("")
}

/// The worker config the chart renders (its ConfigMap's `config.yaml`), as YAML text.
fn config_text(objects: &[Value]) -> String {
    let with_config: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" && o["data"]["config.yaml"].is_string())
        .collect();
    assert_eq!(with_config.len(), 1, "one worker config: {with_config:?}");
    with_config[0]["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn settings(objects: &[Value]) -> Value {
    let config: Value = serde_yaml_ng::from_str(&config_text(objects)).unwrap();
    config["runtime"]["config"].clone()
}

fn worker_container(objects: &[Value]) -> &Value {
    &one(objects, "StatefulSet", "")["spec"]["template"]["spec"]["containers"][0]
}

fn env_var<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name} in {container}"))
}

#[test]
fn helm_lint_passes_with_the_required_secret_and_with_every_option() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let full = full_values();
    for args in [
        vec![
            "lint",
            "--strict",
            chart,
            "--set",
            "database.existingSecret=x",
        ],
        vec!["lint", "--strict", chart, "-f", &full],
        vec![
            "lint",
            "--strict",
            chart,
            "--set",
            "database.existingSecret=x",
            "--set",
            "autoscaling.keda.enabled=true",
        ],
    ] {
        let out = helm(&args);
        assert!(out.status.success(), "helm {args:?}:\n{}", text(&out));
    }
}

#[test]
fn default_values_render_the_worker_and_its_jobs_side_in_the_release_namespace() {
    let objects = template(DEFAULT);
    assert_eq!(
        kinds(&objects),
        BTreeMap::from([
            ("ConfigMap".to_owned(), 1),
            ("NetworkPolicy".to_owned(), 2),
            ("PodDisruptionBudget".to_owned(), 1),
            ("Role".to_owned(), 1),
            ("RoleBinding".to_owned(), 1),
            ("Service".to_owned(), 1),
            ("ServiceAccount".to_owned(), 2),
            ("StatefulSet".to_owned(), 1),
        ])
    );
    assert_eq!(objects.len(), 10);
    // No autoscaler: replicaCount sets the count.
    assert_eq!(one(&objects, "StatefulSet", "")["spec"]["replicas"], 1);
    for object in &objects {
        assert_eq!(namespace_of(object), NAMESPACE, "{object}");
    }
    assert_eq!(settings(&objects)["cluster"]["namespace"], NAMESPACE);
    assert_eq!(settings(&objects)["windmill"]["worker_group"], "k8s");
    assert_eq!(
        settings(&objects)["job_template"]["service_account"],
        "flext-flext-kubernetes-jobs"
    );
}

#[test]
fn full_values_put_the_jobs_side_in_the_jobs_namespace() {
    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let objects = template(&full);
    let mut expected = kinds(&template(DEFAULT));
    expected.insert("Namespace".into(), 1);
    expected.insert("HorizontalPodAutoscaler".into(), 1);
    // The monitoring: the dashboard's ConfigMap, the alerts, the scrape.
    *expected.get_mut("ConfigMap").unwrap() += 1;
    expected.insert("PrometheusRule".into(), 1);
    expected.insert("ServiceMonitor".into(), 1);
    assert_eq!(kinds(&objects), expected);
    assert_eq!(objects.len(), 15);
    let jobs_ns = "flext-gpu-jobs";
    assert_eq!(one(&objects, "Namespace", "")["metadata"]["name"], jobs_ns);
    for (kind, name) in [
        ("Role", "flext-gpu"),
        ("RoleBinding", "flext-gpu"),
        ("ServiceAccount", "flext-gpu-job-runner"),
        ("NetworkPolicy", "flext-gpu-jobs"),
    ] {
        assert_eq!(namespace_of(one(&objects, kind, name)), jobs_ns, "{kind}");
    }
    for (kind, name) in [
        ("ServiceAccount", "flext-gpu-worker"),
        ("StatefulSet", "flext-gpu"),
        ("ConfigMap", "flext-gpu"),
        ("NetworkPolicy", "flext-gpu-worker"),
        ("PrometheusRule", "flext-gpu"),
        ("ServiceMonitor", "flext-gpu"),
    ] {
        assert_eq!(namespace_of(one(&objects, kind, name)), NAMESPACE, "{kind}");
    }
    // Where the Grafana sidecar looks.
    assert_eq!(
        namespace_of(one(&objects, "ConfigMap", "flext-gpu-dashboard")),
        "monitoring"
    );
    let binding = one(&objects, "RoleBinding", "");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "flext-gpu-worker", "namespace": NAMESPACE}])
    );
    let settings = settings(&objects);
    assert_eq!(settings["cluster"]["namespace"], jobs_ns);
    assert_eq!(
        settings["job_template"]["service_account"],
        "flext-gpu-job-runner"
    );
    // Merged over the defaults: the chart's keys stay, the given ones win.
    assert_eq!(settings["windmill"]["worker_group"], "gpu");
    assert_eq!(settings["worker"]["concurrency"], 32);
    assert_eq!(
        settings["windmill"]["tags"],
        serde_json::json!(["k8s-gpu", "k8s-gpu-large"]),
        "a list replaces the default"
    );
    // The HPA owns the count: replicaCount (3) is not rendered.
    let sts = one(&objects, "StatefulSet", "");
    assert!(sts["spec"].get("replicas").is_none(), "{}", sts["spec"]);
    let hpa = one(&objects, "HorizontalPodAutoscaler", "flext-gpu");
    assert_eq!(
        (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
        (&serde_json::json!(2), &serde_json::json!(8))
    );
    assert_eq!(
        worker_container(&objects)["image"],
        "registry.example.com/mirror/flext-kubernetes@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
}

#[test]
fn every_object_carries_the_standard_labels() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let chart_label = format!(
        "{}-{}",
        chart["name"].as_str().unwrap(),
        chart["version"].as_str().unwrap()
    );
    for (values, objects) in both() {
        for object in &objects {
            let labels = &object["metadata"]["labels"];
            let what = format!(
                "{values}: {} {}",
                object["kind"], object["metadata"]["name"]
            );
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{what}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{what}");
            assert_eq!(
                labels["app.kubernetes.io/version"], chart["appVersion"],
                "{what}"
            );
            assert_eq!(labels["helm.sh/chart"], chart_label.as_str(), "{what}");
            assert!(labels["app.kubernetes.io/name"].is_string(), "{what}");
        }
        let pod = &one(&objects, "StatefulSet", "")["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod["app.kubernetes.io/managed-by"], "Helm", "{values}");
        assert_eq!(pod["app.kubernetes.io/component"], "worker", "{values}");
    }
}

#[test]
fn app_version_is_the_crate_version_and_the_default_image_tag() {
    let chart: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    for (values, objects) in both() {
        let image = worker_container(&objects)["image"].clone();
        // Every job pod's init container copies the runner out of the worker's own image.
        assert_eq!(
            settings(&objects)["job_template"]["image"],
            image,
            "{values}"
        );
    }
    let objects = template(DEFAULT);
    assert_eq!(
        worker_container(&objects)["image"],
        format!(
            "ghcr.io/flext/flext-kubernetes:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(
        worker_container(&objects)["imagePullPolicy"],
        "IfNotPresent"
    );
}

#[test]
fn the_worker_pod_is_named_stably_hardened_and_rolled_on_config_changes() {
    for (values, objects) in both() {
        let sts = one(&objects, "StatefulSet", "");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        let service = one(&objects, "Service", "");
        assert_eq!(sts["spec"]["serviceName"], service["metadata"]["name"]);
        assert_eq!(service["spec"]["clusterIP"], "None");
        // A port only for the ServiceMonitor's scrapes (the full values have one).
        if values == "default" {
            assert!(service["spec"].get("ports").is_none(), "{values}: no ports");
        } else {
            assert_eq!(
                service["spec"]["ports"],
                serde_json::json!([{"name": "http", "port": 9464, "targetPort": "http", "protocol": "TCP"}])
            );
        }
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], true);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(pod["securityContext"]["fsGroup"], 65532);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let container = worker_container(&objects);
        assert_eq!(
            container["args"],
            serde_json::json!(["run", "--config", "/etc/flext/config.yaml"])
        );
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(container["resources"]["requests"]["memory"].is_string());
        // POD_NAME first: Kubernetes expands $(POD_NAME) only from variables defined before.
        let env = container["env"].as_array().unwrap();
        assert_eq!(env[0]["name"], "POD_NAME");
        assert_eq!(
            env[0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let group = settings(&objects)["windmill"]["worker_group"].clone();
        assert_eq!(
            env_var(container, "FLEXT__WORKER__NAME")["value"],
            format!("wk-{}-$(POD_NAME)", group.as_str().unwrap())
        );
        let spread = pod["topologySpreadConstraints"].as_array().unwrap();
        assert_eq!(spread[0]["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(spread[0]["whenUnsatisfiable"], "ScheduleAnyway");
        assert_eq!(
            spread[0]["labelSelector"]["matchLabels"],
            sts["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(
            one(&objects, "PodDisruptionBudget", "")["spec"]["selector"],
            sts["spec"]["selector"]
        );
    }
    let checksum = |objects: &[Value]| {
        one(objects, "StatefulSet", "")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    let base = template(DEFAULT);
    assert!(checksum(&base).is_string());
    let mut changed = DEFAULT.to_vec();
    changed.extend(["--set", "config.worker.concurrency=8"]);
    assert_ne!(checksum(&base), checksum(&template(&changed)));
    let mut other_labels = DEFAULT.to_vec();
    other_labels.extend(["--set", "podLabels.team=data"]);
    assert_eq!(checksum(&base), checksum(&template(&other_labels)));
}

/// The grace period: `shutdown_grace` + 15 s by default, a given one must exceed it.
#[test]
fn the_termination_grace_period_exceeds_the_shutdown_grace() {
    let grace = |extra: &[&str]| {
        let mut values = DEFAULT.to_vec();
        values.extend_from_slice(extra);
        one(&template(&values), "StatefulSet", "")["spec"]["template"]["spec"]
            ["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(grace(&[]), 30 + 15);
    assert_eq!(grace(&["--set", "config.worker.shutdown_grace=90s"]), 105);
    assert_eq!(grace(&["--set", "config.worker.shutdown_grace=2m"]), 135);
    assert_eq!(grace(&["--set", "config.worker.shutdown_grace=1500ms"]), 17);
    assert_eq!(grace(&["--set", "config.worker.shutdown_grace=1h"]), 3615);
    assert_eq!(grace(&["--set", "config.worker.shutdown_grace=20"]), 35);
    assert_eq!(grace(&["--set", "terminationGracePeriodSeconds=31"]), 31);
    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let objects = template(&full);
    let given = one(&objects, "StatefulSet", "")["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(given > 120, "full values: {given} > shutdown_grace 2m");

    for extra in [
        vec!["--set", "terminationGracePeriodSeconds=30"],
        vec![
            "--set",
            "config.worker.shutdown_grace=5m",
            "--set",
            "terminationGracePeriodSeconds=120",
        ],
    ] {
        let mut values = DEFAULT.to_vec();
        values.extend(extra);
        let error = try_template(&values).unwrap_err();
        assert!(error.contains("terminationGracePeriodSeconds"), "{error}");
        assert!(error.contains("shutdown_grace"), "{error}");
    }
    let mut values = DEFAULT.to_vec();
    values.extend(["--set", "config.worker.shutdown_grace=soon"]);
    let error = try_template(&values).unwrap_err();
    assert!(error.contains("config.worker.shutdown_grace"), "{error}");
}

/// The Role's rules are `files/rbac-rules.yaml` (the job namespace filled in), and there is no
/// cluster-wide grant.
#[test]
fn the_role_grants_exactly_the_rules_file_in_the_job_namespace() {
    let file = std::fs::read_to_string(chart().join("files/rbac-rules.yaml")).unwrap();
    for (values, objects) in both() {
        let role = one(&objects, "Role", "");
        let job_namespace = namespace_of(role);
        let expected: Value = serde_yaml_ng::from_str(&file.replace(
            "{{ include \"flext-kubernetes.jobNamespace\" . }}",
            job_namespace,
        ))
        .unwrap();
        assert_eq!(role["rules"], expected, "{values}");
        assert_eq!(
            settings(&objects)["cluster"]["namespace"],
            job_namespace,
            "{values}"
        );
        let namespaces = &role["rules"][0];
        assert_eq!(namespaces["resources"], serde_json::json!(["namespaces"]));
        assert_eq!(
            namespaces["resourceNames"],
            serde_json::json!([job_namespace])
        );
        let binding = one(&objects, "RoleBinding", "");
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(namespace_of(binding), job_namespace);
        let worker_sa =
            &one(&objects, "StatefulSet", "")["spec"]["template"]["spec"]["serviceAccountName"];
        assert_eq!(binding["subjects"][0]["name"], *worker_sa, "{values}");
        for kind in ["ClusterRole", "ClusterRoleBinding"] {
            assert!(!kinds(&objects).contains_key(kind), "{values}: {kind}");
        }
    }
}

/// `rbac.kueue` adds exactly `files/rbac-rules-kueue.yaml` after the base rules.
#[test]
fn rbac_kueue_adds_the_workload_watch_to_the_role() {
    let base: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("files/rbac-rules.yaml"))
            .unwrap()
            .replace("{{ include \"flext-kubernetes.jobNamespace\" . }}", "x"),
    )
    .unwrap();
    let kueue: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("files/rbac-rules-kueue.yaml")).unwrap(),
    )
    .unwrap();
    let mut values = DEFAULT.to_vec();
    values.extend(["--set", "rbac.kueue=true"]);
    let objects = template(&values);
    let rules = one(&objects, "Role", "")["rules"]
        .as_array()
        .unwrap()
        .clone();
    let base = base.as_array().unwrap();
    assert_eq!(rules.len(), base.len() + 1);
    assert_eq!(rules[base.len()..], kueue.as_array().unwrap()[..]);
    assert_eq!(
        rules[base.len()]["apiGroups"],
        serde_json::json!(["kueue.x-k8s.io"])
    );
    let plain = template(DEFAULT);
    assert_eq!(
        one(&plain, "Role", "")["rules"].as_array().unwrap().len(),
        base.len()
    );
}

/// The jobs ServiceAccount has no token; the worker's has one.
#[test]
fn only_the_worker_service_account_mounts_a_token() {
    for (values, objects) in both() {
        let jobs_sa = settings(&objects)["job_template"]["service_account"].clone();
        let worker_sa =
            one(&objects, "StatefulSet", "")["spec"]["template"]["spec"]["serviceAccountName"]
                .clone();
        for sa in objects.iter().filter(|o| o["kind"] == "ServiceAccount") {
            let name = &sa["metadata"]["name"];
            if *name == jobs_sa {
                assert_eq!(sa["automountServiceAccountToken"], false, "{values}");
            } else {
                assert_eq!(*name, worker_sa, "{values}");
                assert_eq!(sa["automountServiceAccountToken"], true, "{values}");
            }
        }
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("flext-chart-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The labels of a job pod as the built worker renders it with the chart's config.
fn job_pod(objects: &[Value]) -> Value {
    let config: Value = serde_yaml_ng::from_str(&config_text(objects)).unwrap();
    let scratch = Scratch::new();
    let config_path = scratch.0.join("config.yaml");
    std::fs::write(&config_path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let script = scratch.0.join("hello.py");
    std::fs::write(&script, "def main(name: str = 'x'):\n    return name\n").unwrap();
    let out = Command::new(BIN)
        .arg("render")
        .arg(&script)
        .arg("--config")
        .arg(&config_path)
        .env_remove("FLEXT_DATABASE_URL")
        .env_remove("FLEXT_WINDMILL_URL")
        .env_remove("FLEXT_WINDMILL_TOKEN")
        // As the chart's pod sets it (from status.podIP); read only with warm pools.
        .env("FLEXT__WORKER__HANDOVER__ADVERTISE", "10.0.0.7")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the worker refuses the chart's config:\n{}",
        text(&out)
    );
    let rendered = documents(&String::from_utf8(out.stdout).unwrap());
    let job = rendered
        .iter()
        .find(|o| o["kind"] == "Job")
        .unwrap()
        .clone();
    assert_eq!(
        job["spec"]["template"]["spec"]["serviceAccountName"],
        config["runtime"]["config"]["job_template"]["service_account"]
    );
    job["spec"]["template"].clone()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels[k] == *v)
}

/// The jobs `NetworkPolicy` selects the pods the worker creates, and only those: not the worker,
/// whose own policy in turn does not select the job pods.
#[test]
fn the_jobs_network_policy_selects_the_job_pods_the_worker_renders() {
    for (values, objects) in both() {
        let pod = job_pod(&objects);
        let jobs_policy = one(&objects, "NetworkPolicy", "-jobs");
        let worker_policy = one(&objects, "NetworkPolicy", "-worker");
        let job_labels = &pod["metadata"]["labels"];
        let worker_labels =
            &one(&objects, "StatefulSet", "")["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&jobs_policy["spec"]["podSelector"], job_labels),
            "{values}: {} does not select a job pod labelled {job_labels}",
            jobs_policy["spec"]["podSelector"]
        );
        assert!(
            !selects(&jobs_policy["spec"]["podSelector"], worker_labels),
            "{values}"
        );
        assert!(
            selects(&worker_policy["spec"]["podSelector"], worker_labels),
            "{values}"
        );
        assert!(
            !selects(&worker_policy["spec"]["podSelector"], job_labels),
            "{values}"
        );
        assert_eq!(
            namespace_of(jobs_policy),
            settings(&objects)["cluster"]["namespace"],
            "{values}"
        );
        // The init container of every job pod is the worker's own image.
        assert_eq!(
            pod["spec"]["initContainers"][0]["image"],
            worker_container(&objects)["image"],
            "{values}"
        );
        assert_eq!(jobs_policy["spec"]["ingress"], serde_json::json!([]));
        for policy in [jobs_policy, worker_policy] {
            assert_eq!(
                policy["spec"]["policyTypes"],
                serde_json::json!(["Ingress", "Egress"])
            );
            let dns = &policy["spec"]["egress"][0];
            assert_eq!(dns["ports"][0]["port"], 53, "{values}");
        }
        // No ingress to the job pods ever; to the worker only its HTTP port (any source by
        // default; the full values' Prometheus).
        assert_eq!(jobs_policy["spec"]["ingress"], serde_json::json!([]));
        let worker_ingress = &worker_policy["spec"]["ingress"];
        if values == "default" {
            assert_eq!(
                *worker_ingress,
                serde_json::json!([{"ports": [{"port": 9464, "protocol": "TCP"}]}])
            );
        } else {
            assert_eq!(
                *worker_ingress,
                serde_json::json!([{
                    "from": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                    }],
                    "ports": [{"port": 9464, "protocol": "TCP"}],
                }])
            );
        }
    }
}

/// The worker admits scrapes on its HTTP port only, from `networkPolicy.metrics` (any source when
/// empty), without a `ServiceMonitor` too; with the endpoint off, nothing.
#[test]
fn the_worker_admits_scrapes_on_its_http_port_only() {
    let ingress =
        |extra: &[&str]| one(&with(extra), "NetworkPolicy", "-worker")["spec"]["ingress"].clone();
    assert_eq!(
        ingress(&[]),
        serde_json::json!([{"ports": [{"port": 9464, "protocol": "TCP"}]}])
    );
    assert_eq!(
        ingress(&[
            "--set",
            "networkPolicy.metrics.namespaceSelector.matchLabels.team=monitoring"
        ])[0]["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}])
    );
    assert_eq!(
        ingress(&["--set", "config.worker.http.listen=null"]),
        serde_json::json!([])
    );
}

/// Extra volumes (policy plugin files, for one) reach the worker pod and its container, after the
/// chart's own.
#[test]
fn extra_volumes_are_mounted_in_the_worker() {
    let objects = with(&[
        "--set-json",
        r#"extraVolumes=[{"name":"plugins","configMap":{"name":"flext-plugins"}}]"#,
        "--set-json",
        r#"extraVolumeMounts=[{"name":"plugins","mountPath":"/etc/flext/plugins","readOnly":true}]"#,
    ]);
    let pod = &one(&objects, "StatefulSet", "")["spec"]["template"]["spec"];
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["config", "tmp", "plugins"]);
    let mounts = worker_container(&objects)["volumeMounts"]
        .as_array()
        .unwrap();
    assert_eq!(mounts.last().unwrap()["mountPath"], "/etc/flext/plugins");
}

/// Destinations: CIDRs and selectors become peers; none means the ports to any address.
#[test]
fn network_policy_destinations_render_as_peers() {
    let objects = template(DEFAULT);
    let egress = &one(&objects, "NetworkPolicy", "-worker")["spec"]["egress"];
    // DNS, database, apiserver, Windmill.
    assert_eq!(egress.as_array().unwrap().len(), 4);
    assert_eq!(
        egress[0]["to"],
        serde_json::json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }])
    );
    assert!(egress[1].get("to").is_none(), "database: any address");
    assert_eq!(
        egress[1]["ports"],
        serde_json::json!([{"port": 5432, "protocol": "TCP"}])
    );
    assert!(egress[2].get("to").is_none(), "apiserver: any address");

    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let objects = template(&full);
    let egress = &one(&objects, "NetworkPolicy", "-worker")["spec"]["egress"];
    assert_eq!(egress.as_array().unwrap().len(), 5, "plus extraEgress");
    assert_eq!(
        egress[1]["to"],
        serde_json::json!([{"ipBlock": {"cidr": "10.20.0.0/24"}}])
    );
    assert_eq!(
        egress[2]["to"],
        serde_json::json!([{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}])
    );
    let jobs = &one(&objects, "NetworkPolicy", "-jobs")["spec"]["egress"];
    assert_eq!(
        jobs.as_array().unwrap().len(),
        3,
        "DNS, Windmill, extraEgress"
    );
    assert_eq!(jobs[2]["to"][0]["ipBlock"]["cidr"], "10.40.0.5/32");

    let mut off = DEFAULT.to_vec();
    off.extend(["--set", "networkPolicy.enabled=false"]);
    assert!(!kinds(&template(&off)).contains_key("NetworkPolicy"));
}

/// Secrets are referenced, never rendered: no Secret object, the env reads them from the
/// existing Secrets, and nothing that looks like a credential appears anywhere.
#[test]
fn no_secret_values_are_rendered() {
    for (values, objects) in both() {
        assert!(!kinds(&objects).contains_key("Secret"), "{values}");
        let container = worker_container(&objects);
        let database = env_var(container, "FLEXT_DATABASE_URL");
        assert!(database.get("value").is_none(), "{values}");
        assert!(database["valueFrom"]["secretKeyRef"]["name"].is_string());
        let all = serde_json::to_string(&objects).unwrap();
        for needle in ["postgres://", "postgresql://", "password"] {
            assert!(!all.contains(needle), "{values}: `{needle}` rendered");
        }
    }
    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let objects = template(&full);
    let container = worker_container(&objects);
    assert_eq!(
        env_var(container, "FLEXT_DATABASE_URL")["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "windmill-db", "key": "database-url"})
    );
    assert_eq!(
        env_var(container, "FLEXT_WINDMILL_TOKEN")["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "windmill-superadmin", "key": "api-token"})
    );
    assert_eq!(
        env_var(container, "FLEXT_WINDMILL_URL")["value"],
        "http://windmill-app.windmill.svc:8000"
    );
    // No value can carry one: the schema has no such keys.
    let mut values = DEFAULT.to_vec();
    values.extend([
        "--set",
        "database.url=postgres://windmill:hunter2@db/windmill",
    ]);
    let error = try_template(&values).unwrap_err();
    assert!(error.contains("'url' not allowed"), "{error}");
}

/// Each bad value fails `helm template` (and so `install`) with the field's name.
#[test]
fn bad_values_fail_with_the_field_name() {
    let cases: &[(&[&str], &str)] = &[
        // A typo at the top level and in a nested object.
        (&["--set", "replicaCont=2"], "replicaCont"),
        (&["--set", "networkPolicy.enabeld=false"], "enabeld"),
        (&["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (&["--set-string", "replicaCount=two"], "replicaCount"),
        (&["--set", "replicaCount=-1"], "replicaCount"),
        (
            &["--set", "podDisruptionBudget.maxUnavailable=half"],
            "maxUnavailable",
        ),
        (&["--set", "jobs.namespace=Not_A_Namespace"], "namespace"),
        (&["--set", "windmill.url=windmill:8000"], "url"),
        (
            &["--set", "networkPolicy.database.cidrs[0]=10.0.0.1"],
            "cidrs",
        ),
        (
            &["--set", "config.cluster.namespace=elsewhere"],
            "jobs.namespace",
        ),
        (
            &["--set", "config.job_template.service_account=other"],
            "jobs.serviceAccount.name",
        ),
        (&["--set", "config.worker.name=fixed"], "config.worker.name"),
        (
            &["--set", "config.windmill.worker_group=has space"],
            "worker_group",
        ),
        (&["--set", "windmill.existingSecret=token"], "windmill.url"),
        (
            &["--set", "jobs.createNamespace=true"],
            "jobs.createNamespace",
        ),
        (&["--set", "autoscaling.maxReplicas=0"], "maxReplicas"),
        (&["--set", "autoscaling.keda.enabeld=true"], "enabeld"),
        (
            &[
                "--set",
                "autoscaling.hpa.enabled=true",
                "--set",
                "autoscaling.minReplicas=0",
            ],
            "minReplicas 0 needs KEDA",
        ),
        (
            &[
                "--set",
                "autoscaling.keda.enabled=true",
                "--set",
                "autoscaling.minReplicas=5",
                "--set",
                "autoscaling.maxReplicas=3",
            ],
            "autoscaling.maxReplicas (3) is below autoscaling.minReplicas (5)",
        ),
        (
            &[
                "--set",
                "metrics.prometheusRule.thresholds.queueWaitP99Seconds=-1",
            ],
            "queueWaitP99Seconds",
        ),
        (
            &[
                "--set",
                "metrics.prometheusRule.thresholds.heartbeatLagSecs=9",
            ],
            "heartbeatLagSecs",
        ),
        (
            &["--set", "metrics.dashboard.labelKey=has space"],
            "labelKey",
        ),
        (
            &["--set", "metrics.serviceMonitor.interval=soon"],
            "interval",
        ),
    ];
    for (extra, field) in cases {
        let mut values = DEFAULT.to_vec();
        values.extend_from_slice(extra);
        let error = try_template(&values)
            .map(|_| String::new())
            .expect_err(&format!("{extra:?} rendered"));
        assert!(
            error.contains(field),
            "{extra:?}: no `{field}` in:\n{error}"
        );
    }
    // Without the database Secret: install and lint fail naming it.
    let error = try_template(&[]).unwrap_err();
    assert!(error.contains("existingSecret"), "{error}");
    let chart = chart();
    let out = helm(&["lint", chart.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("existingSecret"), "{}", text(&out));
}

/// The worker's HTTP endpoint: on `0.0.0.0:9464` by default, named `http`, probed at `/healthz`
/// and `/readyz`; a port the probes cannot reach, or probes without an endpoint, fail the install.
#[test]
fn the_probes_reach_the_workers_http_endpoint() {
    let objects = template(DEFAULT);
    assert_eq!(
        settings(&objects)["worker"]["http"]["listen"],
        "0.0.0.0:9464"
    );
    let container = worker_container(&objects);
    assert_eq!(
        container["ports"],
        serde_json::json!([{"name": "http", "containerPort": 9464, "protocol": "TCP"}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");

    let moved = template(&[
        "--set",
        "database.existingSecret=x",
        "--set-json",
        r#"config={"worker":{"http":{"listen":"127.0.0.1:9500"}}}"#,
    ]);
    assert_eq!(worker_container(&moved)["ports"][0]["containerPort"], 9500);

    let any_port = try_template(&[
        "--set",
        "database.existingSecret=x",
        "--set-json",
        r#"config={"worker":{"http":{"listen":"0.0.0.0:0"}}}"#,
    ])
    .unwrap_err();
    assert!(any_port.contains("needs a fixed port"), "{any_port}");
    // The endpoint off: no port and no default probes; an httpGet probe given is refused.
    let off = template(&[
        "--set",
        "database.existingSecret=x",
        "--set-json",
        r#"config={"worker":{"http":{"listen":null}}}"#,
    ]);
    let container = worker_container(&off);
    assert!(container.get("ports").is_none() && container.get("livenessProbe").is_none());
    let refused = try_template(&[
        "--set",
        "database.existingSecret=x",
        "--set-json",
        r#"config={"worker":{"http":{"listen":null}}}"#,
        "--set-json",
        r#"probes={"liveness":{"httpGet":{"path":"/healthz","port":"http"}}}"#,
    ])
    .unwrap_err();
    assert!(
        refused.contains("probes.liveness uses httpGet, but config.worker.http.listen is null")
            && refused.contains("(probes.liveness: {})"),
        "{refused}"
    );
    // `{}` turns a default probe off.
    let no_liveness = template(&[
        "--set",
        "database.existingSecret=x",
        "--set-json",
        r#"probes={"liveness":{}}"#,
    ]);
    let container = worker_container(&no_liveness);
    assert!(container.get("livenessProbe").is_none() && container.get("readinessProbe").is_some());
}

/// The objects with `DEFAULT` and `extra` values.
fn with(extra: &[&str]) -> Vec<Value> {
    let mut values = DEFAULT.to_vec();
    values.extend_from_slice(extra);
    template(&values)
}

/// The autoscaler objects the chart may render, by kind.
const AUTOSCALER_KINDS: [&str; 3] = [
    "ScaledObject",
    "TriggerAuthentication",
    "HorizontalPodAutoscaler",
];

/// KEDA: a `ScaledObject` on the `StatefulSet` whose PostgreSQL trigger runs the chart's query file
/// with the worker's tags written in, over the worker's concurrency, connecting through a
/// `TriggerAuthentication` that names a Secret key (the worker's by default), never a password.
#[test]
fn keda_scales_the_workers_on_the_queue_query_of_their_tags() {
    let objects = with(&[
        "--set",
        "autoscaling.keda.enabled=true",
        "--set-json",
        r#"config={"windmill":{"tags":["k8s","k8s-gpu"]},"worker":{"concurrency":16}}"#,
        "--set",
        "autoscaling.minReplicas=0",
        "--set",
        "autoscaling.maxReplicas=12",
    ]);
    let mut expected = kinds(&template(DEFAULT));
    expected.insert("ScaledObject".into(), 1);
    expected.insert("TriggerAuthentication".into(), 1);
    assert_eq!(kinds(&objects), expected);
    let sts = one(&objects, "StatefulSet", "");
    assert!(
        sts["spec"].get("replicas").is_none(),
        "KEDA owns the count: {}",
        sts["spec"]
    );
    let scaled = one(&objects, "ScaledObject", "");
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(namespace_of(scaled), NAMESPACE);
    assert_eq!(
        scaled["spec"]["scaleTargetRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]})
    );
    assert_eq!(scaled["spec"]["minReplicaCount"], 0);
    assert_eq!(scaled["spec"]["maxReplicaCount"], 12);
    assert_eq!(scaled["spec"]["pollingInterval"], 15);
    assert_eq!(scaled["spec"]["cooldownPeriod"], 300);
    assert_eq!(
        scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    let triggers = scaled["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 1);
    let trigger = &triggers[0];
    assert_eq!(trigger["type"], "postgresql");
    assert_eq!(trigger["metadata"]["targetQueryValue"], "16");
    let file = std::fs::read_to_string(chart().join("files/keda-queue-depth.sql")).unwrap();
    assert_eq!(
        trigger["metadata"]["query"],
        file.trim()
            .replace("ANY($1)", "ANY(ARRAY[E'k8s', E'k8s-gpu']::text[])")
    );
    let auth = one(&objects, "TriggerAuthentication", "");
    assert_eq!(
        trigger["authenticationRef"]["name"],
        auth["metadata"]["name"]
    );
    assert_eq!(namespace_of(auth), NAMESPACE);
    assert_eq!(
        auth["spec"],
        serde_json::json!({"secretTargetRef": [{"parameter": "connection", "name": "windmill-db", "key": "url"}]})
    );

    // Another Secret (a read-only role for KEDA), and the worker's default concurrency.
    let objects = with(&[
        "--set",
        "autoscaling.keda.enabled=true",
        "--set",
        "autoscaling.keda.database.existingSecret=keda-db",
        "--set",
        "autoscaling.keda.database.key=dsn",
        "--set",
        "autoscaling.keda.pollingInterval=5",
    ]);
    assert_eq!(
        one(&objects, "TriggerAuthentication", "")["spec"]["secretTargetRef"][0],
        serde_json::json!({"parameter": "connection", "name": "keda-db", "key": "dsn"})
    );
    let scaled = one(&objects, "ScaledObject", "");
    assert_eq!(scaled["spec"]["pollingInterval"], 5);
    let worker_default = flext_kubernetes::config::Config::from_yaml("", &BTreeMap::new())
        .unwrap()
        .settings
        .worker
        .concurrency;
    assert_eq!(
        scaled["spec"]["triggers"][0]["metadata"]["targetQueryValue"],
        worker_default.to_string(),
        "the chart's fallback is the worker's default concurrency"
    );
    assert!(
        scaled["spec"]["triggers"][0]["metadata"]["query"]
            .as_str()
            .unwrap()
            .contains("ANY(ARRAY[E'k8s']::text[])")
    );
}

/// Without KEDA: an `autoscaling/v2` HPA on the External metric `flext_queue_depth` of the
/// worker's tags (`when: due`) and the in-flight Pods metric, each over the worker's concurrency.
#[test]
fn the_hpa_scales_the_workers_on_the_due_queue_depth_metric() {
    let objects = with(&[
        "--set",
        "autoscaling.hpa.enabled=true",
        "--set-json",
        r#"config={"windmill":{"tags":["k8s","k8s-gpu"]},"worker":{"concurrency":8}}"#,
    ]);
    let mut expected = kinds(&template(DEFAULT));
    expected.insert("HorizontalPodAutoscaler".into(), 1);
    assert_eq!(kinds(&objects), expected);
    let sts = one(&objects, "StatefulSet", "");
    assert!(sts["spec"].get("replicas").is_none(), "{}", sts["spec"]);
    let hpa = one(&objects, "HorizontalPodAutoscaler", "");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(hpa["spec"]["maxReplicas"], 10);
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    assert_eq!(
        hpa["spec"]["metrics"],
        serde_json::json!([
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": "flext_queue_depth",
                        "selector": {
                            "matchLabels": {"when": "due"},
                            "matchExpressions": [{"key": "tag", "operator": "In", "values": ["k8s", "k8s-gpu"]}],
                        },
                    },
                    "target": {"type": "AverageValue", "averageValue": "8"},
                },
            },
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "flext_jobs_in_flight"},
                    "target": {"type": "AverageValue", "averageValue": "8"},
                },
            },
        ])
    );
    let objects = with(&[
        "--set",
        "autoscaling.hpa.enabled=true",
        "--set",
        "autoscaling.hpa.inFlightMetric=",
    ]);
    let metrics = &one(&objects, "HorizontalPodAutoscaler", "")["spec"]["metrics"];
    assert_eq!(metrics.as_array().unwrap().len(), 1, "{metrics}");
}

/// KEDA makes an HPA of its own: two would fight over the replicas, so both at once fail.
#[test]
fn keda_and_the_hpa_together_fail_the_install_naming_both() {
    let mut values = DEFAULT.to_vec();
    values.extend([
        "--set",
        "autoscaling.keda.enabled=true",
        "--set",
        "autoscaling.hpa.enabled=true",
    ]);
    let error = try_template(&values).unwrap_err();
    assert!(
        error.contains("autoscaling.keda.enabled and autoscaling.hpa.enabled are both true")
            && error.contains("enable one"),
        "{error}"
    );
}

/// Off by default: no autoscaler object with the default values; the full values' HPA comes
/// without KEDA's objects.
#[test]
fn no_autoscaler_is_rendered_by_default() {
    let objects = template(DEFAULT);
    for kind in AUTOSCALER_KINDS {
        assert!(!kinds(&objects).contains_key(kind), "{kind}");
    }
    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let objects = template(&full);
    assert!(!kinds(&objects).contains_key("ScaledObject"));
    assert!(!kinds(&objects).contains_key("TriggerAuthentication"));
}

/// The monitoring objects (dashboard, alerts, scrape) need Grafana's sidecar and the Prometheus
/// Operator's CRDs: none is rendered unless asked for, each one alone when asked for.
#[test]
fn the_dashboard_rule_and_service_monitor_render_only_when_enabled() {
    let monitoring = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| {
                o["kind"] == "PrometheusRule"
                    || o["kind"] == "ServiceMonitor"
                    || (o["kind"] == "ConfigMap" && o["data"]["flext-kubernetes.json"].is_string())
            })
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(monitoring(&template(DEFAULT)), Vec::<String>::new());
    for (key, kind) in [
        ("metrics.dashboard.enabled=true", "ConfigMap"),
        ("metrics.prometheusRule.enabled=true", "PrometheusRule"),
        ("metrics.serviceMonitor.enabled=true", "ServiceMonitor"),
    ] {
        let mut values = DEFAULT.to_vec();
        values.extend(["--set", key]);
        assert_eq!(
            monitoring(&template(&values)),
            vec![kind.to_owned()],
            "{key}"
        );
    }
}

/// The dashboard's `ConfigMap` carries the label Grafana's sidecar selects (configurable) and the
/// dashboard file as it is: JSON that Grafana imports, every panel querying the data source the
/// viewer picks.
#[test]
fn the_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard_json() {
    let file = std::fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap();
    let mut values = DEFAULT.to_vec();
    values.extend(["--set", "metrics.dashboard.enabled=true"]);
    let objects = template(&values);
    let map = one(&objects, "ConfigMap", "-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(namespace_of(map), NAMESPACE);
    let json = map["data"]["flext-kubernetes.json"].as_str().unwrap();
    assert_eq!(json.trim_end(), file.trim_end(), "the file as it is");
    let dashboard: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("files/grafana-dashboard.json is not JSON: {e}"));
    assert_eq!(
        dashboard["uid"], "flext-kubernetes",
        "a stable uid: links survive updates"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "tag"]);
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeMap::new();
    let mut queries = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        *ids.entry(panel["id"].as_i64().unwrap()).or_insert(0) += 1;
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["description"].is_string(),
            "{title}: says what it shows"
        );
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_i64().unwrap() + grid["w"].as_i64().unwrap() <= 24,
            "{title}"
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("flext_"), "{title}: {expr}");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            queries += 1;
        }
    }
    assert!(ids.values().all(|n| *n == 1), "panel ids unique: {ids:?}");
    assert!(queries >= 20, "{queries} queries");

    // The sidecar's label is the one its chart was given.
    values.extend([
        "--set",
        "metrics.dashboard.labelKey=grafana.example.com/dashboard",
        "--set",
        "metrics.dashboard.labelValue=flext",
        "--set",
        "metrics.dashboard.namespace=monitoring",
    ]);
    let objects = template(&values);
    let map = one(&objects, "ConfigMap", "-dashboard");
    assert_eq!(
        map["metadata"]["labels"]["grafana.example.com/dashboard"],
        "flext"
    );
    assert!(map["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(namespace_of(map), "monitoring");
}

/// The `PrometheusRule`'s groups are `files/prometheus-rules.yaml` (which promtool checks and
/// unit-tests) with the thresholds of values: equal to the file with the defaults, and with other
/// thresholds still rules promtool accepts.
#[test]
fn the_prometheus_rule_is_the_checked_rules_file_with_the_thresholds_of_values() {
    let file: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    let mut values = DEFAULT.to_vec();
    values.extend(["--set", "metrics.prometheusRule.enabled=true"]);
    let objects = template(&values);
    let rule = one(&objects, "PrometheusRule", "");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["spec"], file, "the defaults are the file's numbers");

    let full = full();
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    let objects = template(&full);
    let rule = one(&objects, "PrometheusRule", "");
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let expr = |alert: &str| {
        rules.iter().find(|r| r["alert"] == alert).unwrap()["expr"]
            .as_str()
            .unwrap()
            .trim()
            .to_owned()
    };
    for (alert, threshold) in [
        ("FlextQueueWaitHigh", "> 600"),
        ("FlextSystemFailuresRising", "> 5"),
        ("FlextKubeApiErrors", "> 0.5"),
        ("FlextHeartbeatLagHigh", "> 20"),
    ] {
        assert!(expr(alert).ends_with(threshold), "{alert}: {}", expr(alert));
    }
    assert_eq!(expr("FlextWorkerNotReady"), "flext_ready == 0");
    for rule in rules {
        assert_eq!(
            rule["labels"]["team"], "data",
            "ruleLabels on {}",
            rule["alert"]
        );
        assert!(rule["labels"]["severity"].is_string());
    }
    // What the operator loads must be valid rules too, not only the file.
    let scratch = Scratch::new();
    let path = scratch.0.join("rendered-rules.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "promtool check rules (rendered):\n{}",
        text(&out)
    );
}

/// The `ServiceMonitor` reaches `/metrics` of every worker pod: it selects the headless Service,
/// whose `http` port is the container's; without the endpoint it fails the install.
#[test]
fn the_service_monitor_scrapes_each_workers_http_port() {
    let mut values = DEFAULT.to_vec();
    values.extend(["--set", "metrics.serviceMonitor.enabled=true"]);
    let objects = template(&values);
    let monitor = one(&objects, "ServiceMonitor", "");
    let service = one(&objects, "Service", "");
    assert!(
        selects(&monitor["spec"]["selector"], &service["metadata"]["labels"]),
        "{} does not select the Service labelled {}",
        monitor["spec"]["selector"],
        service["metadata"]["labels"]
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!([NAMESPACE])
    );
    assert_eq!(
        monitor["spec"]["endpoints"],
        serde_json::json!([{"port": "http", "path": "/metrics"}])
    );
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(worker_container(&objects)["ports"][0]["name"], "http");
    // The worker's NetworkPolicy lets the scrapes in, to that port only (any source by default).
    assert_eq!(
        one(&objects, "NetworkPolicy", "-worker")["spec"]["ingress"],
        serde_json::json!([{"ports": [{"port": 9464, "protocol": "TCP"}]}])
    );

    values.extend([
        "--set-json",
        r#"config={"worker":{"http":{"listen":null}}}"#,
    ]);
    let error = try_template(&values).unwrap_err();
    assert!(
        error.contains("metrics.serviceMonitor.enabled needs config.worker.http.listen"),
        "{error}"
    );
}

/// With `config.warm_pools`: the Role adds the warm pods' rules, the worker pod advertises its IP
/// for the hand-over and exposes its port, the worker's policy admits the job pods to that port
/// only, and the job pods may reach that port of the workers; the worker accepts the config.
#[test]
fn warm_pools_add_the_pod_rules_the_hand_over_port_and_its_network_path() {
    let mut values = DEFAULT.to_vec();
    values.extend([
        "--set-json",
        r#"config.warm_pools=[{"tag":"k8s","language":"python3","size":2}]"#,
    ]);
    let objects = template(&values);
    let warm: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart().join("files/rbac-rules-warm.yaml")).unwrap(),
    )
    .unwrap();
    let rules = one(&objects, "Role", "")["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rules.last(), warm.as_array().unwrap().last());
    let plain = template(DEFAULT);
    assert_eq!(
        one(&plain, "Role", "")["rules"].as_array().unwrap().len() + 1,
        rules.len()
    );
    let container = worker_container(&objects);
    assert_eq!(
        env_var(container, "FLEXT__WORKER__HANDOVER__ADVERTISE")["value"],
        "$(POD_IP)"
    );
    assert_eq!(
        env_var(container, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "handover" && p["containerPort"] == 9443),
        "{container}"
    );
    let pod = job_pod(&objects);
    let job_labels = &pod["metadata"]["labels"];
    let worker_labels = &one(&objects, "StatefulSet", "")["spec"]["template"]["metadata"]["labels"];
    let ingress = one(&objects, "NetworkPolicy", "-worker")["spec"]["ingress"]
        .as_array()
        .unwrap()
        .clone();
    let handover = ingress
        .iter()
        .find(|rule| rule["ports"][0]["port"] == 9443)
        .unwrap();
    assert_eq!(handover["ports"].as_array().unwrap().len(), 1);
    assert!(selects(&handover["from"][0]["podSelector"], job_labels));
    assert!(!selects(&handover["from"][0]["podSelector"], worker_labels));
    let egress = one(&objects, "NetworkPolicy", "-jobs")["spec"]["egress"]
        .as_array()
        .unwrap()
        .clone();
    let to_worker = egress
        .iter()
        .find(|rule| rule["ports"][0]["port"] == 9443)
        .unwrap();
    assert!(selects(&to_worker["to"][0]["podSelector"], worker_labels));
    // Without pools, none of it.
    assert!(
        one(&plain, "NetworkPolicy", "-worker")["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .all(|rule| rule["ports"][0]["port"] != 9443)
    );
}
