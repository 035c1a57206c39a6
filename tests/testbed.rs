//! Tests of the Kubernetes test bed itself (`scripts/testbed`, `testbed/README.md`): the real
//! kube-apiserver, the real Job and garbage-collector controllers, and the node agent that runs
//! pods as local processes, observed through `kube` exactly as the worker observes a cluster.
//!
//! They need a running bed and fail (never skip) without one:
//!
//! ```text
//! scripts/testbed up && eval "$(scripts/testbed env)" && cargo test --test testbed
//! ```
//!
//! Each test works in a namespace of its own, so they run in parallel; every wait polls with a
//! deadline, none sleeps for a fixed time.

// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerState, Namespace, Pod, ServiceAccount};
use k8s_openapi::serde_json::{self, json};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};

use common::bed::client;
use common::eventually;

/// How long any single condition may take to appear on an idle bed.
const WAIT: Duration = Duration::from_secs(60);

/// A fresh namespace for one test, ready for pods (its default `ServiceAccount` exists: the
/// `ServiceAccount` admission plugin rejects pods until then, as on any cluster).
async fn namespace(client: &Client, test: &str) -> String {
    let name = format!("tb-{test}-{:08x}", rand_u32());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a valid Namespace");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the test namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    eventually("the namespace's default ServiceAccount", WAIT, || async {
        match sas.get_opt("default").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    name
}

/// Random enough for namespace names (std's hasher keys are random per process and instance).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() >> 32) as u32
}

async fn cleanup(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(ns, &DeleteParams::background()).await;
}

/// A Job with one container and `restartPolicy: Never`, `backoffLimit: 0`, as the worker makes them.
fn job(name: &str, container: &serde_json::Value, extra_spec: &serde_json::Value) -> Job {
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container]}}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            if k == "template" {
                let pod = spec["template"]["spec"]
                    .as_object_mut()
                    .expect("the template has a pod spec");
                let extra_pod = v["spec"]
                    .as_object()
                    .expect("extra template has a pod spec");
                for (pk, pv) in extra_pod {
                    pod.insert(pk.clone(), pv.clone());
                }
            } else {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("a valid Job")
}

async fn job_pods(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits for the Job to carry condition `type_` = True and returns its reason.
async fn job_condition(jobs: &Api<Job>, name: &str, type_: &str) -> Option<String> {
    eventually(&format!("Job {name} to be {type_}"), WAIT, || async {
        let job = jobs.get(name).await.map_err(|e| e.to_string())?;
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map(|c| c.reason.clone())
            .ok_or_else(|| format!("{:?}", job.status))
    })
    .await
}

/// Phase Running with the (first) container running, as a kubelet reports a started pod.
fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && main_state(pod).is_some_and(|s| s.running.is_some())
}

fn main_state(pod: &Pod) -> Option<ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .clone()
}

/// The only pod of a Job, once it satisfies `ready`.
async fn the_pod<F>(pods: &Api<Pod>, job: &str, what: &str, ready: F) -> Pod
where
    F: Fn(&Pod) -> bool,
{
    eventually(
        &format!("the pod of Job {job} to be {what}"),
        WAIT,
        || async {
            let list = job_pods(pods, job).await;
            match list.as_slice() {
                [pod] if ready(pod) => Ok(pod.clone()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(|p| &p.status).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await
}

#[tokio::test]
async fn job_whose_pod_prints_lines_is_followed_through_log_stream_and_completes() {
    let client = client().await;
    let ns = namespace(&client, "logs").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let script = "import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n    time.sleep(0.3)\n";
    jobs.create(
        &PostParams::default(),
        &job(
            "printer",
            &json!({"name": "main", "image": "python:3.12", "command": ["python3", "-c", script]}),
            &json!({}),
        ),
    )
    .await
    .unwrap();

    // Follow from as soon as the container has started, as the worker does.
    let pod = the_pod(
        &pods,
        "printer",
        "started",
        |p| matches!(main_state(p), Some(s) if s.running.is_some() || s.terminated.is_some()),
    )
    .await;
    let name = pod.metadata.name.clone().unwrap();
    let stream = pods
        .log_stream(
            &name,
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<String> = tokio::time::timeout(WAIT, stream.lines().try_collect())
        .await
        .expect("a followed log stream must end when the container exits")
        .unwrap();
    assert_eq!(lines, ["line 0", "line 1", "line 2", "line 3", "line 4"]);

    assert_eq!(
        job_condition(&jobs, "printer", "Complete").await.as_deref(),
        Some("CompletionsReached")
    );
    let pod = pods.get(&name).await.unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    let terminated = main_state(&pod).unwrap().terminated.unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn logs_honour_timestamps_tail_lines_limit_bytes_and_since_time() {
    let client = client().await;
    let ns = namespace(&client, "logparams").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let script = "for i in $(seq 1 10); do echo \"line $i\"; done; sleep 1.5; echo late";
    jobs.create(
        &PostParams::default(),
        &job(
            "lines",
            &json!({"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    job_condition(&jobs, "lines", "Complete").await;
    let name = job_pods(&pods, "lines").await[0]
        .metadata
        .name
        .clone()
        .unwrap();

    let all = pods
        .logs(
            &name,
            &LogParams {
                timestamps: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let stamped: Vec<(k8s_openapi::jiff::Timestamp, &str)> = all
        .lines()
        .map(|l| {
            let (ts, text) = l.split_once(' ').unwrap();
            (
                ts.parse()
                    .unwrap_or_else(|e| panic!("bad timestamp {ts:?}: {e}")),
                text,
            )
        })
        .collect();
    assert_eq!(stamped.len(), 11);
    assert_eq!(stamped[10].1, "late");

    let tail = pods
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(2),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "line 10\nlate\n");

    let limited = pods
        .logs(
            &name,
            &LogParams {
                limit_bytes: Some(10),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(limited, "line 1\nlin");

    // sinceTime has second precision: "late" came 1.5 s after the burst, so the whole second
    // nearest to 0.5 s before it lies strictly between them.
    let since = stamped[10]
        .0
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_millis(500))
        .unwrap();
    let since = since.round(k8s_openapi::jiff::Unit::Second).unwrap();
    assert!(
        since > stamped[9].0 && since <= stamped[10].0,
        "{since} vs {stamped:?}"
    );
    let recent = pods
        .logs(
            &name,
            &LogParams {
                since_time: Some(since),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(recent, "late\n");
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn failing_pod_makes_the_job_failed() {
    let client = client().await;
    let ns = namespace(&client, "fail").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "failing",
            &json!({"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "echo 'it broke' >&2; exit 3"],
                   "terminationMessagePolicy": "FallbackToLogsOnError"}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        job_condition(&jobs, "failing", "Failed").await.as_deref(),
        Some("BackoffLimitExceeded")
    );
    let pod = the_pod(&pods, "failing", "terminated", |p| {
        main_state(p).is_some_and(|s| s.terminated.is_some())
    })
    .await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let t = main_state(&pod).unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(
        t.message.as_deref(),
        Some("it broke\n"),
        "FallbackToLogsOnError takes the log tail"
    );
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn active_deadline_fails_the_job_with_deadline_exceeded_and_stops_its_pod() {
    let client = client().await;
    let ns = namespace(&client, "deadline").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            &json!({"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}),
            &json!({"activeDeadlineSeconds": 2}),
        ),
    )
    .await
    .unwrap();
    the_pod(&pods, "slow", "running", is_running).await;
    assert_eq!(
        job_condition(&jobs, "slow", "Failed").await.as_deref(),
        Some("DeadlineExceeded")
    );
    // The job controller deletes the pod; the node agent stops it and confirms the deletion.
    eventually(
        "the deadline-exceeded Job's pod to be deleted",
        WAIT,
        || async {
            let left = job_pods(&pods, "slow").await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pod(s) left", left.len()))
            }
        },
    )
    .await;
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn impossible_request_stays_unschedulable_with_the_schedulers_message() {
    let client = client().await;
    let ns = namespace(&client, "unsched").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "huge",
            &json!({"name": "main", "image": "busybox:1.36", "command": ["true"],
                   "resources": {"requests": {"memory": "1Ti"}}}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    let pod = the_pod(&pods, "huge", "Unschedulable", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    })
    .await;
    let status = pod.status.unwrap();
    let cond = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    let message = cond.message.unwrap();
    assert!(
        message.starts_with("0/") && message.contains(" nodes are available: "),
        "{message}"
    );
    assert!(message.contains("Insufficient memory"), "{message}");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert!(pod.spec.unwrap().node_name.is_none());
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn unknown_image_reports_err_image_pull_then_image_pull_back_off() {
    let client = client().await;
    let ns = namespace(&client, "pull").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "unknown",
            &json!({"name": "main", "image": "registry.invalid/nope:1"}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &job(
            "invalid",
            &json!({"name": "main", "image": "Not A Valid Image"}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    let waiting = |reason: &'static str| {
        move |p: &Pod| {
            main_state(p)
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
                .as_deref()
                == Some(reason)
        }
    };
    let pod = the_pod(&pods, "unknown", "ErrImagePull", waiting("ErrImagePull")).await;
    let msg = main_state(&pod).unwrap().waiting.unwrap().message.unwrap();
    assert!(msg.contains("registry.invalid/nope:1"), "{msg}");
    the_pod(
        &pods,
        "unknown",
        "ImagePullBackOff",
        waiting("ImagePullBackOff"),
    )
    .await;
    let pod = the_pod(
        &pods,
        "invalid",
        "InvalidImageName",
        waiting("InvalidImageName"),
    )
    .await;
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn process_over_its_memory_limit_is_oom_killed() {
    let client = client().await;
    let ns = namespace(&client, "oom").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let hog = "import time\nblocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n    time.sleep(0.01)\n";
    jobs.create(
        &PostParams::default(),
        &job(
            "hog",
            &json!({"name": "main", "image": "python:3.12", "command": ["python3", "-c", hog],
                   "resources": {"limits": {"memory": "64Mi"}}}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    let pod = the_pod(&pods, "hog", "terminated", |p| {
        main_state(p).is_some_and(|s| s.terminated.is_some())
    })
    .await;
    let t = main_state(&pod).unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    job_condition(&jobs, "hog", "Failed").await;
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn foreground_deletion_of_a_running_job_removes_its_pods() {
    let client = client().await;
    let ns = namespace(&client, "fgdelete").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "victim",
            &json!({"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    the_pod(&pods, "victim", "running", is_running).await;
    jobs.delete("victim", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the Job and its pods to be gone", WAIT, || async {
        let job = jobs.get_opt("victim").await.map_err(|e| e.to_string())?;
        let left = job_pods(&pods, "victim").await;
        if job.is_none() && left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "job present: {}, pods left: {}",
                job.is_some(),
                left.len()
            ))
        }
    })
    .await;
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn init_containers_env_and_volumes_are_laid_out_as_on_a_node() {
    let client = client().await;
    let ns = namespace(&client, "volumes").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "code"}, "data": {"main.py": "print('from configmap')", "GREETING": "hello"}
    })).unwrap()).await.unwrap();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "args"}, "stringData": {"token": "s3cret"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let main = json!({
        "name": "main", "image": "python:3.12", "workingDir": "/work/dir",
        "command": ["sh", "-c", "cat /shared/from-init; python3 /code/main.py; cat /args/token; echo; echo $GREETING $(pwd) $MY_POD; echo done > /dev/termination-log"],
        "envFrom": [{"configMapRef": {"name": "code"}}],
        "env": [{"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "volumeMounts": [
            {"name": "shared", "mountPath": "/shared"},
            {"name": "code", "mountPath": "/code", "readOnly": true},
            {"name": "args", "mountPath": "/args", "readOnly": true}
        ]
    });
    let extra = json!({"template": {"spec": {
        "initContainers": [{"name": "setup", "image": "busybox:1.36", "command": ["sh", "-c", "echo prepared > /shared/from-init"],
                            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
        "volumes": [
            {"name": "shared", "emptyDir": {}},
            {"name": "code", "configMap": {"name": "code"}},
            {"name": "args", "secret": {"secretName": "args"}}
        ]
    }}});
    jobs.create(&PostParams::default(), &job("layout", &main, &extra))
        .await
        .unwrap();
    assert_eq!(
        job_condition(&jobs, "layout", "Complete").await.as_deref(),
        Some("CompletionsReached")
    );
    let pod = job_pods(&pods, "layout").await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let log = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert_eq!(
        log,
        format!("prepared\nfrom configmap\ns3cret\nhello /work/dir {name}\n")
    );
    let t = main_state(&pod).unwrap().terminated.unwrap();
    assert_eq!(t.message.as_deref(), Some("done\n"));
    let init = &pod.status.unwrap().init_container_statuses.unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    cleanup(&client, &ns).await;
}

/// Runs `scripts/testbed ARGS` against the bed named by `FLEXT_TESTBED_DIR` (from `env`).
fn testbed(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
    let out = std::process::Command::new(script)
        .args(args)
        .output()
        .expect("run scripts/testbed");
    assert!(
        out.status.success(),
        "scripts/testbed {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Brings the lost node back even when the test fails half-way.
struct RestoreNode(&'static str);

impl Drop for RestoreNode {
    fn drop(&mut self) {
        testbed(&["node-restore", self.0]);
    }
}

/// Only pods tolerating the GPU taint land on `gpu-1`, so losing it leaves the other tests alone.
#[tokio::test]
async fn pods_of_a_lost_node_are_failed_and_removed_by_the_pod_gc() {
    let client = client().await;
    let ns = namespace(&client, "nodelost").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &job(
            "stranded",
            &json!({"name": "main", "image": "busybox:1.36", "command": ["sleep", "600"]}),
            &json!({"template": {"spec": {
                "nodeSelector": {"flext.dev/pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            }}}),
        ),
    )
    .await
    .unwrap();
    let pod = the_pod(&pods, "stranded", "running", is_running).await;
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("gpu-1"));

    testbed(&["node-lost", "gpu-1"]);
    let _restore = RestoreNode("gpu-1");
    // The pod GC waits 40 s for a vanished node to come back, then checks every 20 s.
    assert_eq!(
        eventually(
            "the Job to fail once its pod is collected",
            Duration::from_secs(120),
            || async {
                let job = jobs.get("stranded").await.map_err(|e| e.to_string())?;
                let conditions = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                conditions
                    .iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
                    .map(|c| c.reason.clone())
                    .ok_or_else(|| format!("{:?}", job.status))
            }
        )
        .await
        .as_deref(),
        Some("BackoffLimitExceeded")
    );
    eventually("the stranded pod to be deleted", WAIT, || async {
        let left = job_pods(&pods, "stranded").await;
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", left[0].status))
        }
    })
    .await;
    cleanup(&client, &ns).await;
}

/// A one-file image of the bed's own static `kubectl` (at `/kubectl`, its entrypoint), with an
/// `/etc/passwd` naming user 65532 and `KUBECONFIG` in its env: a program that can show, through
/// the files it writes and the API calls it makes, who it runs as and what it was given. Pushed to
/// the bed's registry under a tag of its own, so that nothing of it is cached yet.
async fn kubectl_image(user: &str, cmd: &[&str]) -> common::oci::Pushed {
    use common::oci::{File, Image, push};
    let dir =
        std::env::var("FLEXT_TESTBED_DIR").expect("FLEXT_TESTBED_DIR, from scripts/testbed env");
    let kubectl = std::fs::read(format!("{dir}/tools/kubectl")).expect("the bed's kubectl");
    let image = Image {
        dirs: vec![
            ("etc".into(), 0),
            ("home".into(), 0),
            ("home/nonroot".into(), 65532),
        ],
        files: vec![
            File::new("kubectl", kubectl, 0o755),
            File::new(
                "etc/passwd",
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
                0o644,
            ),
            File::new("etc/group", "root:x:0:\nnonroot:x:65532:\n", 0o644),
        ],
        entrypoint: vec!["/kubectl".into()],
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        env: vec!["PATH=/".into(), "KUBECONFIG=/shared/kubeconfig".into()],
        user: user.into(),
    };
    push(
        "flext-test/kubectl",
        &format!(
            "{}-{:08x}",
            if user.is_empty() { "root" } else { "user" },
            rand_u32()
        ),
        &image,
    )
    .await
}

fn container_status<'a>(
    pod: &'a Pod,
    name: &str,
) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    let status = pod.status.as_ref().expect("a pod status");
    status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for container {name}: {status:?}"))
}

#[tokio::test]
async fn pulled_image_runs_with_its_entrypoint_env_and_user_and_can_read_its_volumes() {
    let client = client().await;
    let ns = namespace(&client, "image").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let image = kubectl_image(
        "65532",
        &[
            "config",
            "set-cluster",
            "from-cmd",
            "--server=https://cmd.invalid",
        ],
    )
    .await;
    let kubeconfig = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster: {{server: \"https://{name}.invalid\"}}\n"
        )
    };
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "kc"}, "data": {"config": kubeconfig("configmap")}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "kc"}, "stringData": {"config": kubeconfig("secret")}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let shared = json!([{"name": "shared", "mountPath": "/shared"}]);
    let init = json!([
        // No command, no args: the image's Entrypoint and Cmd; its env's KUBECONFIG says where.
        {"name": "from-image", "image": image.reference, "volumeMounts": shared},
        // args replace the Cmd only; runAsUser replaces the image's user.
        {"name": "run-as", "image": image.reference, "securityContext": {"runAsUser": 4242}, "volumeMounts": shared,
         "args": ["config", "set-cluster", "from-args", "--server=https://args.invalid", "--kubeconfig=/shared/run-as"]},
        // In-cluster: the service account token and CA, read as 65532 (the container's env wins
        // over the image's KUBECONFIG, and a missing file means in-cluster configuration).
        {"name": "in-cluster", "image": image.reference, "env": [{"name": "KUBECONFIG", "value": "/none"}],
         "args": ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]},
        // A ConfigMap file, and a Secret file of mode 0400 readable through the pod's fsGroup.
        {"name": "configs", "image": image.reference,
         "env": [{"name": "KUBECONFIG", "value": "/etc/cm/config:/etc/secret/config"}],
         "args": ["config", "view", "-o", "jsonpath={.clusters[*].cluster.server}"],
         "volumeMounts": [{"name": "cm", "mountPath": "/etc/cm"}, {"name": "secret", "mountPath": "/etc/secret"}]}
    ]);
    let main = json!({
        "name": "check", "image": "busybox:1.36", "volumeMounts": shared,
        "command": ["sh", "-c", "stat -c '%u:%g %n' /shared/kubeconfig /shared/run-as; grep -h server: /shared/kubeconfig /shared/run-as"]
    });
    let extra = json!({"template": {"spec": {
        "initContainers": init,
        "securityContext": {"fsGroup": 2000},
        "volumes": [
            {"name": "shared", "emptyDir": {}},
            {"name": "cm", "configMap": {"name": "kc"}},
            {"name": "secret", "secret": {"secretName": "kc", "defaultMode": 0o400}}
        ]
    }}});
    jobs.create(&PostParams::default(), &job("pulled", &main, &extra))
        .await
        .unwrap();
    let done = job_condition(&jobs, "pulled", "Complete").await;
    let pod = job_pods(&pods, "pulled").await.remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let logs = |container: &'static str| {
        let pods = pods.clone();
        let name = name.clone();
        async move {
            pods.logs(
                &name,
                &LogParams {
                    container: Some(container.into()),
                    ..LogParams::default()
                },
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(
        done.as_deref(),
        Some("CompletionsReached"),
        "{:?}",
        pod.status
    );
    assert_eq!(
        logs("check").await,
        "65532:2000 /shared/kubeconfig\n4242:2000 /shared/run-as\n    server: https://cmd.invalid\n    server: https://args.invalid\n",
        "files written in the emptyDir belong to the image's user (65532) and to runAsUser (4242); \
         the group is the fsGroup, the emptyDir being setgid as on a node"
    );
    assert_eq!(
        logs("in-cluster").await,
        format!("system:serviceaccount:{ns}:default\n")
    );
    assert_eq!(
        logs("configs").await,
        "https://configmap.invalid https://secret.invalid\n"
    );
    let registry = common::oci::registry();
    let status = container_status(&pod, "from-image");
    assert_eq!(status.image, image.reference);
    assert_eq!(
        status.image_id,
        format!("{registry}/flext-test/kubectl@{}", image.digest)
    );
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn pulled_image_has_its_own_root_without_the_hosts_programs() {
    let client = client().await;
    let ns = namespace(&client, "imageroot").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let image = kubectl_image("65532", &[]).await;
    jobs.create(
        &PostParams::default(),
        &job("nosh", &json!({"name": "main", "image": image.reference, "command": ["/bin/sh", "-c", "true"]}), &json!({})),
    )
    .await
    .unwrap();
    let pod = the_pod(&pods, "nosh", "terminated", |p| {
        main_state(p).is_some_and(|s| s.terminated.is_some())
    })
    .await;
    let t = main_state(&pod).unwrap().terminated.unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError")),
        "{t:?}"
    );
    assert_eq!(
        t.message.as_deref(),
        Some(r#"exec: "/bin/sh": stat /bin/sh: no such file or directory"#),
        "the host's /bin/sh must not be visible in the image's root"
    );
    cleanup(&client, &ns).await;
}

/// The container's waiting state once its reason is `reason`.
async fn waiting_for(pods: &Api<Pod>, job: &str, reason: &'static str) -> String {
    let pod = the_pod(pods, job, reason, |p| {
        main_state(p)
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .as_deref()
            == Some(reason)
    })
    .await;
    main_state(&pod)
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap_or_default()
}

#[tokio::test]
async fn run_as_non_root_with_a_root_image_is_a_create_container_config_error() {
    let client = client().await;
    let ns = namespace(&client, "nonroot").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let root = kubectl_image("", &["version", "--client"]).await;
    jobs.create(
        &PostParams::default(),
        &job(
            "root",
            &json!({"name": "main", "image": root.reference, "securityContext": {"runAsNonRoot": true}}),
            &json!({}),
        ),
    )
    .await
    .unwrap();
    let msg = waiting_for(&pods, "root", "CreateContainerConfigError").await;
    let pod = job_pods(&pods, "root").await.remove(0);
    let (name, uid) = (pod.metadata.name.unwrap(), pod.metadata.uid.unwrap());
    assert_eq!(
        msg,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"{name}_{ns}({uid})\", container: main)"
        )
    );
    cleanup(&client, &ns).await;
}

#[tokio::test]
async fn never_pulled_and_unknown_images_wait_with_the_kubelets_reasons() {
    let client = client().await;
    let ns = namespace(&client, "policy").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // On the registry, but never pulled on this node.
    let fresh = kubectl_image("65532", &["version", "--client"]).await;
    let unknown = format!("{}/flext-test/kubectl:no-such-tag", common::oci::registry());
    for (name, image, policy) in [
        ("never", &fresh.reference, "Never"),
        ("unknown", &unknown, "IfNotPresent"),
    ] {
        jobs.create(
            &PostParams::default(),
            &job(
                name,
                &json!({"name": "main", "image": image, "imagePullPolicy": policy}),
                &json!({}),
            ),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        waiting_for(&pods, "never", "ErrImageNeverPull").await,
        format!(
            "Container image \"{}\" is not present with pull policy of Never",
            fresh.reference
        )
    );
    let msg = waiting_for(&pods, "unknown", "ErrImagePull").await;
    assert!(
        msg.starts_with(&format!("Failed to pull image \"{unknown}\": ")),
        "{msg}"
    );
    assert!(
        msg.contains("MANIFEST_UNKNOWN"),
        "the registry's answer: {msg}"
    );
    waiting_for(&pods, "unknown", "ImagePullBackOff").await;
    cleanup(&client, &ns).await;
}
