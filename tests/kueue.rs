//! Kueue admission on the Kubernetes test bed, with Kueue's real controller manager
//! (`scripts/kueue start`, which `scripts/test` runs): each test has its own `ClusterQueue` with a
//! small CPU quota and a `LocalQueue` in its namespace. A job over the free quota waits with
//! Kueue's own reason in its job log and runs when quota frees; a waiting job canceled or timed
//! out leaves neither its Job nor its Workload; past `executor.admission_budget` the job fails
//! naming the setting.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::bed::{Bed, LIMIT};
use common::tools::{kubectl, kubectl_ok};
use common::{WindmillJob, cancel, eventually, logs};
use k8s_openapi::api::batch::v1::Job as KubeJob;
use kube::api::ListParams;

/// Kueue's reason when the quota is there but in use.
const QUOTA_MESSAGE: &str = "insufficient unused quota for cpu in flavor default";
/// Kueue's reason when the request is larger than the whole quota.
const OVER_CAPACITY: &str = "insufficient quota for cpu in flavor default";

/// Refuses to run without Kueue's manager on the bed, saying how to start it.
fn kueue_must_run() {
    let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kueue"))
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Kueue's manager is not running on the test bed: run the tests with scripts/test, or `scripts/kueue start` \
         after scripts/testbed up ({})",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `kubectl apply` of `yaml` on the bed.
fn apply(yaml: &str) {
    let path = std::env::temp_dir().join(format!("kueue-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&path, yaml).unwrap();
    kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

/// The `ResourceFlavor` every test's `ClusterQueue` uses, made once: tests run side by side, and
/// two `kubectl apply` of one new object race (the second create is an `AlreadyExists`).
fn flavor() {
    static FLAVOR: std::sync::Once = std::sync::Once::new();
    FLAVOR.call_once(|| {
        apply("apiVersion: kueue.x-k8s.io/v1beta2\nkind: ResourceFlavor\nmetadata:\n  name: default\n");
    });
}

/// The test's `ClusterQueue` (`cpu` of quota, for its namespace only; it must cover every
/// resource the pods request, ephemeral storage included, or Kueue never admits them) and `LocalQueue` `lq`; the
/// `ClusterQueue`'s name.
fn queues(namespace: &str, cpu: &str) -> String {
    let cluster_queue = format!("cq-{namespace}");
    flavor();
    apply(&format!(
        r"apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata:
  name: {cluster_queue}
spec:
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {namespace}
  resourceGroups:
  - coveredResources: [cpu, memory, ephemeral-storage]
    flavors:
    - name: default
      resources:
      - name: cpu
        nominalQuota: {cpu}
      - name: memory
        nominalQuota: 4Gi
      - name: ephemeral-storage
        nominalQuota: 20Gi
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata:
  name: lq
  namespace: {namespace}
spec:
  clusterQueue: {cluster_queue}
"
    ));
    cluster_queue
}

fn remove(cluster_queue: &str) {
    let _ = kubectl(&[
        "delete",
        "clusterqueue",
        cluster_queue,
        "--wait=false",
        "--ignore-not-found",
    ]);
}

/// The Kueue Workloads in `namespace`, by name.
fn workloads(namespace: &str) -> Vec<String> {
    kubectl_ok(&["-n", namespace, "get", "workloads", "-o", "name"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A job sleeping `seconds`, asking `cpu`.
fn sleeper(cpu: &str, seconds: u32) -> WindmillJob {
    WindmillJob::preview(&format!(
        "# k8s: cpu={cpu}\nimport time\ndef main():\n    print('started', flush=True)\n    time.sleep({seconds})\n    return 'slept'\n"
    ))
}

/// The worker's profile puts every `k8s` job in `LocalQueue` `lq`.
const PROFILE: (&str, &str) = ("FLEXT__PROFILES", "{k8s: {local_queue: lq}}");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_the_quota_waits_with_kueues_reason_then_runs_when_quota_frees() {
    kueue_must_run();
    let bed = Bed::new(&[PROFILE]).await;
    let cluster_queue = queues(&bed.namespace, "1");
    let first = sleeper("600m", 6).push(&bed.db).await;
    // The first one admitted and running, the second cannot fit beside it: 600m + 600m > 1.
    eventually("the first job to run", LIMIT, || async {
        logs(&bed.db, first).await.contains("started").then_some(())
    })
    .await;
    let second = sleeper("600m", 1).push(&bed.db).await;
    let waiting = eventually(
        "the second job's log to say why it waits",
        LIMIT,
        || async {
            let log = logs(&bed.db, second).await;
            log.contains(QUOTA_MESSAGE).then_some(log)
        },
    )
    .await;
    assert!(
        waiting.contains("waiting for Kueue to admit the Job (LocalQueue `lq`): couldn't assign flavors to pod set main"),
        "{waiting}"
    );
    // Held back by Kueue: suspended, labelled with the queue, no pod.
    let jobs = bed.jobs();
    let job: KubeJob = jobs.get(&format!("wm-{second}-1")).await.unwrap();
    assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true));
    assert_eq!(
        job.metadata.labels.as_ref().unwrap()["kueue.x-k8s.io/queue-name"],
        "lq"
    );
    assert!(bed.pods_of(second).await.is_empty());

    for id in [first, second] {
        let done = bed.outcome(id).await;
        assert_eq!(done.status, "success", "{id}: {}", logs(&bed.db, id).await);
        assert_eq!(done.result, Some(serde_json::json!("slept")));
    }
    let log = logs(&bed.db, second).await;
    assert!(
        log.contains(&format!(
            "admitted by Kueue (ClusterQueue `{cluster_queue}`) after "
        )),
        "{log}"
    );
    let admitted = log.find("admitted by Kueue").unwrap();
    assert!(log[admitted..].contains("started"), "{log}");
    // Both Workloads go with their Jobs once the hand-back committed.
    eventually("the Workloads to be gone", LIMIT, || async {
        let left = workloads(&bed.namespace);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    remove(&cluster_queue);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_canceled_or_timed_out_leaves_no_job_and_no_workload() {
    kueue_must_run();
    let bed = Bed::new(&[PROFILE]).await;
    // 100m of quota: neither job is ever admitted.
    let cluster_queue = queues(&bed.namespace, "100m");
    let canceled = sleeper("600m", 1).push(&bed.db).await;
    let timed_out = sleeper("600m", 1).timeout(8).push(&bed.db).await;
    for id in [canceled, timed_out] {
        eventually("the job to wait for Kueue", LIMIT, || async {
            logs(&bed.db, id)
                .await
                .contains(OVER_CAPACITY)
                .then_some(())
        })
        .await;
    }
    assert_eq!(workloads(&bed.namespace).len(), 2);
    cancel(&bed.db, canceled, "alice").await;
    let done = bed.outcome(canceled).await;
    assert_eq!(done.status, "canceled");
    let done = bed.outcome(timed_out).await;
    assert_eq!(
        done.status,
        "canceled",
        "{}",
        logs(&bed.db, timed_out).await
    );
    assert_eq!(done.canceled_by.as_deref(), Some("timeout"));
    eventually("the Jobs and the Workloads to be gone", LIMIT, || async {
        let jobs = bed.jobs().list(&ListParams::default()).await.unwrap().items;
        let left = workloads(&bed.namespace);
        if jobs.is_empty() && left.is_empty() {
            Ok(())
        } else {
            Err(format!("{} Job(s), Workloads {left:?}", jobs.len()))
        }
    })
    .await;
    remove(&cluster_queue);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_admission_budget_the_job_fails_naming_the_budget_and_kueues_reason() {
    kueue_must_run();
    let bed = Bed::new(&[PROFILE, ("FLEXT__EXECUTOR__ADMISSION_BUDGET", "3s")]).await;
    let cluster_queue = queues(&bed.namespace, "100m");
    let id = sleeper("600m", 1).push(&bed.db).await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = done.result.unwrap().to_string();
    for part in [
        "NotAdmitted",
        "LocalQueue `lq`",
        "within 3s (executor.admission_budget)",
        OVER_CAPACITY,
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    eventually("the Job and its Workload to be gone", LIMIT, || async {
        let jobs = bed.jobs().list(&ListParams::default()).await.unwrap().items;
        (jobs.is_empty() && workloads(&bed.namespace).is_empty()).then_some(())
    })
    .await;
    // The pending budget (10m on the bed) is not what ended it, and no pod ever ran.
    assert!(bed.pods_of(id).await.is_empty());
    remove(&cluster_queue);
    bed.stop().await;
}

/// Without a running Kueue nothing would admit the Job; the check is about what we render, so it
/// needs no queue objects: `render` of a job in a queue shows the label and `suspend: true`.
#[test]
fn render_shows_the_queue_label_and_suspend() {
    let dir = std::env::temp_dir().join(format!("kueue-render-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "runtime:\n  type: kubernetes\n  config:\n    profiles: {k8s: {local_queue: lq}}\n",
    )
    .unwrap();
    let script = dir.join("main.py");
    std::fs::write(&script, "def main():\n    return 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flext-kubernetes"))
        .args(["render", "--config"])
        .arg(&config)
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("kueue.x-k8s.io/queue-name: lq"), "{text}");
    assert!(text.contains("suspend: true"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}
