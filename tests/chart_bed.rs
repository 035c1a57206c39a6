//! The Helm chart on the Kubernetes test bed: the manifests rendered with the default values and
//! with `ci/full-values.yaml` are accepted by a real kube-apiserver (server-side apply, each into
//! fresh namespaces), and the worker's ServiceAccount may do every call of the Role's rules in the
//! job namespace (the `get` of its own Namespace object through a namespaced `RoleBinding`
//! included) and none of a sample of others; the jobs' ServiceAccount may do nothing. Fails,
//! never skips, without the bed (`tests/common/bed.rs`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::Path;

use common::tools::{chart, helm, kubectl, kubectl_ok, text};
use serde_json::Value;

fn helm_template(release_namespace: &str, values: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "flext",
        chart.to_str().unwrap(),
        "--namespace",
        release_namespace,
    ];
    args.extend_from_slice(values);
    let out = helm(&args);
    assert!(out.status.success(), "helm {args:?}:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Namespaces deleted when the test ends, however it ends.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in &self.0 {
            let _ = kubectl(&["delete", "namespace", namespace, "--wait=false"]);
        }
    }
}

/// Applies `manifests` server-side; every object must be accepted.
fn apply(manifests: &str, scratch: &Path) -> usize {
    let file = scratch.join(format!("{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, manifests).unwrap();
    let out = kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=chart-test",
        "-f",
        file.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&file);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().all(|l| l.ends_with("serverside-applied")),
        "{out}"
    );
    lines.len()
}

/// The manifests without the Prometheus Operator's kinds (`PrometheusRule`, `ServiceMonitor`),
/// and how many there were: the bed has no operator, so no CRDs for them, and installing CRDs
/// of another project only to accept any object would check nothing. tests/chart.rs and
/// tests/observability.rs check those two objects instead (and promtool their rules).
fn without_prometheus_operator_kinds(manifests: &str) -> (String, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    for document in manifests.split("\n---\n") {
        let kind = document
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .map(str::trim);
        if matches!(kind, Some("PrometheusRule" | "ServiceMonitor")) {
            dropped += 1;
        } else {
            kept.push(document);
        }
    }
    (kept.join("\n---\n"), dropped)
}

/// `kubectl auth can-i` as `user` in `namespace`: yes or no.
fn can(user: &str, namespace: &str, verb: &str, resource: &str, subresource: Option<&str>) -> bool {
    let as_user = format!("--as={user}");
    let mut args = vec!["auth", "can-i", verb, resource, "-n", namespace, &as_user];
    let sub;
    if let Some(s) = subresource {
        sub = format!("--subresource={s}");
        args.push(&sub);
    }
    let out = kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// The rules file as (verb, resource as kubectl names it, subresource) triples.
fn granted(job_namespace: &str) -> Vec<(String, String, Option<String>)> {
    let file = std::fs::read_to_string(chart().join("files/rbac-rules.yaml")).unwrap();
    let rules: Value = serde_yaml_ng::from_str(&file).unwrap();
    let mut triples = Vec::new();
    for rule in rules.as_array().unwrap() {
        let group = rule["apiGroups"][0].as_str().unwrap();
        for resource in rule["resources"].as_array().unwrap() {
            let (resource, subresource) = match resource.as_str().unwrap().split_once('/') {
                Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
                None => (resource.as_str().unwrap().to_owned(), None),
            };
            let mut name = if group.is_empty() {
                resource
            } else {
                format!("{resource}.{group}")
            };
            if rule.get("resourceNames").is_some() {
                name = format!("{name}/{job_namespace}");
            }
            for verb in rule["verbs"].as_array().unwrap() {
                triples.push((
                    verb.as_str().unwrap().to_owned(),
                    name.clone(),
                    subresource.clone(),
                ));
            }
        }
    }
    triples
}

#[test]
fn the_rendered_chart_is_accepted_by_the_apiserver_and_grants_what_the_role_says() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let default_ns = format!("chart-{}", &id[..8]);
    let full_ns = format!("chart-{}-full", &id[..8]);
    let jobs_ns = format!("chart-{}-jobs", &id[..8]);
    // Registered before they exist: a failure half-way still removes them.
    let _cleanup = Namespaces(vec![default_ns.clone(), full_ns.clone(), jobs_ns.clone()]);
    kubectl_ok(&["create", "namespace", &default_ns]);
    kubectl_ok(&["create", "namespace", &full_ns]);
    let scratch = std::env::temp_dir();

    let default = helm_template(
        &default_ns,
        &["--set", "database.existingSecret=windmill-db"],
    );
    assert_eq!(apply(&default, &scratch), 10);
    let full_values = chart().join("ci/full-values.yaml");
    let full = helm_template(
        &full_ns,
        &[
            "-f",
            full_values.to_str().unwrap(),
            "--set",
            &format!("jobs.namespace={jobs_ns}"),
            // The dashboard's ConfigMap in a namespace of the test, not the shared `monitoring`.
            "--set",
            &format!("metrics.dashboard.namespace={full_ns}"),
        ],
    );
    // The Namespace first, then what goes in it: kubectl applies in that order. The full values
    // include the HorizontalPodAutoscaler and the dashboard's ConfigMap; not KEDA's objects nor
    // the Prometheus Operator's, whose CRDs the bed lacks.
    let (full, operator_kinds) = without_prometheus_operator_kinds(&full);
    assert_eq!(
        operator_kinds, 2,
        "the PrometheusRule and the ServiceMonitor"
    );
    assert_eq!(apply(&full, &scratch), 13);

    for (release_ns, job_ns, sa) in [
        (&default_ns, &default_ns, "flext-flext-kubernetes"),
        (&full_ns, &jobs_ns, "flext-gpu-worker"),
    ] {
        let worker = format!("system:serviceaccount:{release_ns}:{sa}");
        for (verb, resource, subresource) in granted(job_ns) {
            assert!(
                can(&worker, job_ns, &verb, &resource, subresource.as_deref()),
                "{worker} cannot {verb} {resource} {subresource:?} in {job_ns}"
            );
        }
        // A real request, impersonated: the startup check of the job namespace.
        let as_worker = format!("--as={worker}");
        kubectl_ok(&["get", "namespace", job_ns, &as_worker, "-o", "name"]);
        for (verb, resource) in [
            ("create", "pods"),
            ("get", "configmaps"),
            ("list", "secrets"),
            ("update", "jobs.batch"),
            ("get", "namespaces/default"),
            ("list", "namespaces"),
        ] {
            assert!(
                !can(&worker, job_ns, verb, resource, None),
                "{worker} may {verb} {resource} in {job_ns}"
            );
        }
        if release_ns != job_ns {
            assert!(!can(&worker, release_ns, "create", "jobs.batch", None));
        }
        // The jobs' ServiceAccount has no permissions at all.
        let jobs_sa = if sa == "flext-gpu-worker" {
            "flext-gpu-job-runner"
        } else {
            "flext-flext-kubernetes-jobs"
        };
        let jobs = format!("system:serviceaccount:{job_ns}:{jobs_sa}");
        assert!(!can(&jobs, job_ns, "list", "pods", None));
        assert!(!can(&jobs, job_ns, "get", "secrets", None));
    }
}

/// The notes of an install (`helm install --dry-run=client` asks the bed its version, nothing
/// else) say how to check it, with the binary itself (no shell in the image).
#[test]
fn the_install_notes_say_how_to_check_the_install() {
    // Only the bed, as everywhere here.
    kubectl_ok(&["version", "-o", "json"]);
    let chart = chart();
    let out = helm(&[
        "install",
        "flext",
        chart.to_str().unwrap(),
        "--namespace",
        "flext",
        "--dry-run=client",
        "--set",
        "database.existingSecret=windmill-db",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let notes = String::from_utf8(out.stdout).unwrap();
    let notes = &notes[notes.find("NOTES:").expect("notes")..];
    for line in [
        "kubectl -n flext exec sts/flext-flext-kubernetes -c worker -- /usr/local/bin/flext-kubernetes check --config /etc/flext/config.yaml",
        "custom_tags",
        "BYPASSRLS",
        "networkPolicy.jobs.extraEgress",
    ] {
        assert!(notes.contains(line), "no `{line}` in\n{notes}");
    }
}
