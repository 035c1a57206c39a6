//! Jobs run as Kubernetes Jobs on the test bed (a real kube-apiserver, the Job controller and the
//! process-running node agent), claimed from a real PostgreSQL and completed by the stock-worker
//! double: `scripts/test` starts both.

// Tests fail loudly by design.
#![allow(clippy::unwrap_used, clippy::format_collect)]

mod common;

use std::ffi::OsStr;

use common::bed::{Bed, LIMIT, bed_config, bed_settings, check_is_the_bed};
use common::{WindmillJob, completed, eventually, logs, queue_row};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

/// Every test here creates and deletes namespaces: it must refuse any cluster but the bed.
#[test]
fn the_bed_client_refuses_a_kubeconfig_that_is_not_the_beds() {
    let dir = OsStr::new("/tmp/flext-testbed");
    assert_eq!(
        check_is_the_bed(Some(OsStr::new("/tmp/flext-testbed/kubeconfig")), Some(dir)),
        Ok(())
    );
    let other = check_is_the_bed(Some(OsStr::new("/root/.kube/config")), Some(dir)).unwrap_err();
    assert!(
        other.contains("/root/.kube/config") && other.contains("scripts/testbed up"),
        "{other}"
    );
    let unset = check_is_the_bed(None, Some(dir)).unwrap_err();
    assert!(unset.contains("KUBECONFIG is not set"), "{unset}");
    let no_bed = check_is_the_bed(Some(OsStr::new("/root/.kube/config")), None).unwrap_err();
    assert!(no_bed.contains("FLEXT_TESTBED_DIR is not set"), "{no_bed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_job_with_args_returns_its_result_and_complete_logs() {
    let bed = Bed::new(&[]).await;
    let code = "def main(x, name='world'):\n    for i in range(50):\n        print(f'line {i}')\n    print('hello', name)\n    return {'double': x * 2}\n";
    let id = WindmillJob::script("u/alice/double", code)
        .args(json!({"x": 21, "name": "k8s"}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!({"double": 42})));
    assert!(
        done.memory_peak.is_some_and(|kib| kib > 1000),
        "memory peak from the runner: {:?}",
        done.memory_peak
    );
    let log = logs(&bed.db, id).await;
    let expected: String =
        (0..50).map(|i| format!("line {i}\n")).collect::<String>() + "hello k8s\n";
    assert!(log.contains(&expected), "all lines, in order, once:\n{log}");
    assert!(
        !log.contains("--flext-result"),
        "the trailer is not user output:\n{log}"
    );
    eventually(
        "the Job to be deleted after the hand-back",
        LIMIT,
        || async {
            bed.jobs()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_exception_fails_the_job_with_its_name_and_message() {
    let bed = Bed::new(&[]).await;
    let id = WindmillJob::preview(
        "def main(x):\n    raise ValueError(f'x must be positive, got {x}')\n",
    )
    .args(json!({"x": -3}))
    .push(&bed.db)
    .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["name"], "ValueError");
    assert_eq!(error["message"], "x must be positive, got -3");
    assert_eq!(error["category"], "user_error");
    assert!(
        error["stack"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_gets_positional_args_and_returns_its_last_line() {
    let bed = Bed::new(&[]).await;
    let code = "name=\"$1\"\ncount=\"$2\"\necho \"starting\"\necho \"{\\\"greeting\\\": \\\"hi $name\\\", \\\"count\\\": $count}\"\n";
    let id = WindmillJob::preview(code)
        .lang("bash")
        .args(json!({"count": 3, "name": "bob"}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{:?}\n{}",
        done,
        logs(&bed.db, id).await
    );
    assert_eq!(done.result, Some(json!({"greeting": "hi bob", "count": 3})));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_over_its_memory_hint_is_oom_killed_and_named() {
    let bed = Bed::new(&[]).await;
    let code = "# k8s: memory=64Mi\ndef main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(8 << 20))\n";
    let id = WindmillJob::preview(code).push(&bed.db).await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["name"], "OOMKilled", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("64Mi"),
        "{error}"
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_fails_with_its_name() {
    let bed = Bed::new(&[]).await;
    let id = WindmillJob::preview(
        "# k8s: image=registry.example/no-such-image:1\ndef main():\n    return 1\n",
    )
    .push(&bed.db)
    .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["category"], "image_pull", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("registry.example/no-such-image:1"),
        "{error}"
    );
    assert!(
        logs(&bed.db, id).await.contains("pulling image"),
        "the wait was logged"
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_job_logs_the_wait_then_fails_after_the_budget() {
    let bed = Bed::new(&[("FLEXT__EXECUTOR__PENDING_BUDGET", "4s")]).await;
    let id = WindmillJob::preview("# k8s: memory=900Gi\ndef main():\n    return 1\n")
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["category"], "unschedulable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient memory"),
        "{error}"
    );
    assert!(
        logs(&bed.db, id).await.contains("waiting for capacity"),
        "{}",
        logs(&bed.db, id).await
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_pending_and_while_running_deletes_the_job() {
    let bed = Bed::new(&[]).await;
    let pending = WindmillJob::preview("# k8s: memory=900Gi\ndef main():\n    return 1\n")
        .push(&bed.db)
        .await;
    let running = WindmillJob::preview(
        "import time\ndef main():\n    print('working', flush=True)\n    time.sleep(300)\n",
    )
    .push(&bed.db)
    .await;
    eventually(
        "the first pod Pending and the second running",
        LIMIT,
        || async {
            let log = logs(&bed.db, running).await;
            (log.contains("working")
                && logs(&bed.db, pending)
                    .await
                    .contains("waiting for capacity"))
            .then_some(())
        },
    )
    .await;
    for id in [pending, running] {
        common::cancel(&bed.db, id, "alice").await;
    }
    for id in [pending, running] {
        let done = eventually("the cancel", LIMIT, || async {
            completed(&bed.db, id).await
        })
        .await;
        assert_eq!(
            (done.status.as_str(), done.canceled_by.as_deref()),
            ("canceled", Some("alice"))
        );
        eventually("the pods gone", LIMIT, || async {
            bed.pods_of(id).await.is_empty().then_some(())
        })
        .await;
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windmill_timeout_cancels_the_job_as_timeout() {
    let bed = Bed::new(&[]).await;
    let id = WindmillJob::preview("import time\ndef main():\n    time.sleep(300)\n")
        .timeout(3)
        .push(&bed.db)
        .await;
    let done = eventually("the timeout", LIMIT, || async {
        completed(&bed.db, id).await
    })
    .await;
    assert_eq!(
        (done.status.as_str(), done.canceled_by.as_deref()),
        ("canceled", Some("timeout"))
    );
    eventually("the pods gone", LIMIT, || async {
        bed.pods_of(id).await.is_empty().then_some(())
    })
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_its_script_runs_fails_the_job_without_a_retry() {
    let bed = Bed::new(&[]).await;
    let id = WindmillJob::preview(
        "import time\ndef main():\n    print('started', flush=True)\n    time.sleep(300)\n",
    )
    .push(&bed.db)
    .await;
    eventually("the script to start", LIMIT, || async {
        logs(&bed.db, id).await.contains("started").then_some(())
    })
    .await;
    for pod in bed.pods_of(id).await {
        bed.pods()
            .delete(&pod.metadata.name.unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["category"], "pod_lost", "{error}");
    let attempts = bed
        .jobs()
        .list(&ListParams::default().labels(&format!("flext.dev/job-id={id},flext.dev/attempt=2")))
        .await
        .unwrap();
    assert!(
        attempts.items.is_empty(),
        "no second attempt once user code ran"
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_at_once_through_one_worker_each_complete_once() {
    let bed = Bed::new(&[("FLEXT__WORKER__CONCURRENCY", "100")]).await;
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            WindmillJob::preview("n=\"$1\"\necho \"$n\"\n")
                .lang("bash")
                .args(json!({"n": i}))
                .push(&bed.db)
                .await,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let done = bed.outcome(*id).await;
        assert_eq!(done.status, "success", "job {i}: {done:?}");
        assert_eq!(done.result, Some(json!(i)));
        assert!(queue_row(&bed.db, *id).await.is_none());
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_on_bun_gets_positional_args_in_signature_order() {
    let bed = Bed::new(&[]).await;
    let code = "export async function main(count: number, label: string = \"none\") {\n  console.log(\"bun says\", label);\n  return { next: count + 1, label };\n}\n";
    let id = WindmillJob::preview(code)
        .lang("bun")
        .args(json!({"label": "ts", "count": 41}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{:?}\n{}",
        done,
        logs(&bed.db, id).await
    );
    assert_eq!(done.result, Some(json!({"next": 42, "label": "ts"})));
    assert!(logs(&bed.db, id).await.contains("bun says ts"));
    bed.stop().await;
}

/// The node a job's pod was bound to, read while the script runs.
async fn node_of(bed: &Bed, id: flext_kubernetes::domain::JobId) -> String {
    eventually("the pod to be bound", LIMIT, || async {
        bed.pods_of(id)
            .await
            .into_iter()
            .find_map(|p| p.spec.and_then(|s| s.node_name))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_script_runs_only_on_a_node_with_gpus_and_waits_when_none_fits() {
    let bed = Bed::new(&[]).await;
    let sleepy = "import time\ndef main():\n    time.sleep(3)\n    return 'done'\n";
    let gpu = WindmillJob::preview(&format!(
        "# k8s: gpu=1 toleration=nvidia.com/gpu:NoSchedule\n{sleepy}"
    ))
    .push(&bed.db)
    .await;
    let general = WindmillJob::preview(&format!(
        "# k8s: node_selector=flext.dev/pool:general\n{sleepy}"
    ))
    .push(&bed.db)
    .await;
    let too_many = WindmillJob::preview(&format!(
        "# k8s: gpu=3 toleration=nvidia.com/gpu:NoSchedule\n{sleepy}"
    ))
    .push(&bed.db)
    .await;
    assert_eq!(node_of(&bed, gpu).await, "gpu-1");
    assert_eq!(
        node_of(&bed, general).await,
        "node-1",
        "the node selector took effect"
    );
    assert_eq!(bed.outcome(gpu).await.status, "success");
    let waiting = eventually("the wait to be logged", LIMIT, || async {
        let log = logs(&bed.db, too_many).await;
        log.contains("waiting for capacity").then_some(log)
    })
    .await;
    assert!(
        waiting.contains("nvidia.com/gpu"),
        "the scheduler's reason is quoted:\n{waiting}"
    );
    assert!(
        completed(&bed.db, too_many).await.is_none(),
        "waiting for capacity is not a failure"
    );
    common::cancel(&bed.db, too_many, "test").await;
    eventually("the cancel", LIMIT, || async {
        completed(&bed.db, too_many).await
    })
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_beyond_the_limits_fails_the_job_and_creates_nothing() {
    let bed = Bed::new(&[("FLEXT__LIMITS__MAX_MEMORY", "2Gi")]).await;
    let id = WindmillJob::preview("# k8s: memory=64Gi\ndef main():\n    return 1\n")
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["name"], "HintRejected", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("64Gi")
            && message.contains("2Gi")
            && message.contains("limits.max_memory"),
        "{message}"
    );
    assert!(
        bed.jobs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no Job was created"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(bed.client.clone(), &bed.namespace);
    let ours = secrets
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=flext-kubernetes"))
        .await
        .unwrap();
    assert!(ours.items.is_empty(), "no Secret was created");
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_adopts_the_job_after_restart_and_it_completes_once() {
    let mut bed = Bed::new(&[]).await;
    // This test drives the real binary instead of the in-process worker.
    if let Some(worker) = bed.worker.take() {
        worker.abandon();
        worker.wait().await;
    }
    let code = "import time\ndef main():\n    for i in range(12):\n        print(f'tick {i}', flush=True)\n        time.sleep(0.5)\n    return 'finished'\n";
    let id = WindmillJob::preview(code).push(&bed.db).await;
    let spawn = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flext-kubernetes"));
        command
            .arg("run")
            .env("FLEXT_DATABASE_URL", &bed.db.url)
            .env("FLEXT__WORKER__NAME", "wk-restarted")
            .env("FLEXT__WORKER__HTTP__LISTEN", "127.0.0.1:0")
            .env("FLEXT__WORKER__HEARTBEAT_INTERVAL", "500ms")
            .env("FLEXT__WORKER__POLL_INTERVAL", "50ms")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in bed_settings(&bed.namespace) {
            command.env(k, v);
        }
        command.spawn().unwrap()
    };
    let mut first = spawn();
    eventually("a few ticks", LIMIT, || async {
        logs(&bed.db, id).await.contains("tick 3").then_some(())
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no hand-back, no cleanup
    first.wait().unwrap();
    let mut second = spawn();
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!("finished")));
    let log = logs(&bed.db, id).await;
    for i in 0..12 {
        assert_eq!(
            log.matches(&format!("tick {i}\n")).count(),
            1,
            "tick {i} logged exactly once:\n{log}"
        );
    }
    assert!(
        !log.contains("running the script again"),
        "the running attempt was adopted, not restarted:\n{log}"
    );
    second.kill().unwrap();
    second.wait().unwrap();
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn var_and_res_args_are_resolved_with_a_job_token_that_is_deleted_afterwards() {
    let windmill = common::windmill_api::FakeWindmill::start(
        json!({"u/alice/password": "s3cr3t"}),
        json!({"u/alice/db": {"host": "db.internal", "port": 5432}}),
    )
    .await;
    let mut bed = Bed::new(&[]).await;
    // A worker that knows Windmill's API, in place of the default one.
    let mut config = bed_config(&bed.namespace, &[]);
    config.windmill_url = Some(windmill.url.clone());
    config.windmill_token = Some(flext_kubernetes::config::Secret::new(
        common::windmill_api::SUPERADMIN_TOKEN,
    ));
    bed.start_worker(config).await;

    let code = "import os\ndef main(password, db, plain):\n    return {'password_len': len(password), 'host': db['host'], 'plain': plain, 'token': bool(os.environ.get('WM_TOKEN'))}\n";
    let id = WindmillJob::preview(code)
        .args(
            json!({"password": "$var:u/alice/password", "db": "$res:u/alice/db", "plain": "as is"}),
        )
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{done:?}\n{}",
        logs(&bed.db, id).await
    );
    assert_eq!(
        done.result,
        Some(json!({"password_len": 6, "host": "db.internal", "plain": "as is", "token": true}))
    );
    let log = logs(&bed.db, id).await;
    assert!(
        !log.contains("s3cr3t"),
        "resolved secrets never reach the log"
    );
    {
        let seen = windmill.seen.lock().unwrap();
        assert_eq!(seen.minted.len(), 1, "one token for the job");
        let (token, request) = seen.minted.iter().next().unwrap();
        assert_eq!(request["impersonate_email"], "alice@example.com");
        assert_eq!(request["workspace_id"], "demo");
        assert!(
            seen.reads.iter().all(|(_, used)| used == token),
            "values are read as the job's user"
        );
        assert_eq!(
            seen.deleted,
            vec![token[..10].to_owned()],
            "the token is deleted after the job"
        );
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn var_args_without_windmill_api_settings_fail_saying_what_to_configure() {
    let bed = Bed::new(&[]).await;
    let id = WindmillJob::preview("def main(password):\n    return 1\n")
        .args(json!({"password": "$var:u/alice/password"}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "failure");
    let message = done.result.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("FLEXT_WINDMILL_URL") && message.contains("password"),
        "{message}"
    );
    assert!(
        bed.jobs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was created"
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lost_before_the_script_started_is_retried_as_a_new_attempt() {
    let bed = Bed::new(&[]).await;
    let id = WindmillJob::preview("# k8s: memory=900Gi\ndef main():\n    return 1\n")
        .push(&bed.db)
        .await;
    eventually("the wait for capacity", LIMIT, || async {
        logs(&bed.db, id)
            .await
            .contains("waiting for capacity")
            .then_some(())
    })
    .await;
    for pod in bed.pods_of(id).await {
        bed.pods()
            .delete(&pod.metadata.name.unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    let second = format!("flext.dev/job-id={id},flext.dev/attempt=2");
    eventually("a second attempt", LIMIT, || async {
        (!bed
            .jobs()
            .list(&ListParams::default().labels(&second))
            .await
            .unwrap()
            .items
            .is_empty())
        .then_some(())
    })
    .await;
    let log = logs(&bed.db, id).await;
    assert!(log.contains("attempt 1 did not run the script"), "{log}");
    assert!(
        completed(&bed.db, id).await.is_none(),
        "a system failure does not fail the job"
    );
    common::cancel(&bed.db, id, "test").await;
    eventually("the cancel", LIMIT, || async {
        completed(&bed.db, id).await
    })
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_left_for_a_job_windmill_no_longer_has_is_cleaned_up_at_start() {
    let mut bed = Bed::new(&[]).await;
    let id = WindmillJob::preview("# k8s: memory=900Gi\ndef main():\n    return 1\n")
        .push(&bed.db)
        .await;
    let selector = format!("flext.dev/job-id={id}");
    eventually("the Kubernetes Job", LIMIT, || async {
        (!bed
            .jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty())
        .then_some(())
    })
    .await;
    // The worker dies; meanwhile the job is deleted in Windmill.
    let worker = bed.worker.take().unwrap();
    worker.abandon();
    worker.wait().await;
    sqlx::query("DELETE FROM v2_job_queue WHERE id = $1")
        .bind(id.0)
        .execute(&bed.db.pool)
        .await
        .unwrap();
    assert!(
        !bed.jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty(),
        "left behind"
    );
    // The next worker of the group removes what was left.
    let config = bed_config(&bed.namespace, &[]);
    bed.start_worker(config).await;
    eventually("the cleanup", LIMIT, || async {
        bed.jobs()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_on_deno_runs_too() {
    let bed = Bed::new(&[]).await;
    let code = "export async function main(name: string) {\n  console.log(`deno ${Deno.version.deno}`);\n  return `hello ${name}`;\n}\n";
    let id = WindmillJob::preview(code)
        .lang("deno")
        .args(json!({"name": "deno"}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{:?}\n{}",
        done,
        logs(&bed.db, id).await
    );
    assert_eq!(done.result, Some(json!("hello deno")));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_lock_is_installed_before_the_script_runs() {
    let bed = Bed::new(&[]).await;
    let mut job = WindmillJob::preview("import six\ndef main():\n    return six.__version__\n");
    job.lock = Some("# generated by Windmill\nsix==1.16.0\n".into());
    let id = job.push(&bed.db).await;
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{:?}\n{}",
        done,
        logs(&bed.db, id).await
    );
    assert_eq!(done.result, Some(json!("1.16.0")));
    assert!(
        logs(&bed.db, id)
            .await
            .contains("installing 1 Python requirement")
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bun_lock_is_installed_before_the_script_runs() {
    let bed = Bed::new(&[]).await;
    let code = "import isNumber from \"is-number\";\nexport async function main(x: string) {\n  return isNumber(x);\n}\n";
    let mut job = WindmillJob::preview(code)
        .lang("bun")
        .args(json!({"x": "42"}));
    job.lock =
        Some("{\n  \"dependencies\": {\"is-number\": \"7.0.0\"}\n}\n//bun.lock\n<empty>".into());
    let id = job.push(&bed.db).await;
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{:?}\n{}",
        done,
        logs(&bed.db, id).await
    );
    assert_eq!(done.result, Some(json!(true)));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pvc_hint_mounts_the_claim_and_its_data_outlives_the_job() {
    let bed = Bed::new(&[("FLEXT__LIMITS__ALLOWED_PVCS", "[shared-data]")]).await;
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "shared-data"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    Api::namespaced(bed.client.clone(), &bed.namespace)
        .create(&kube::api::PostParams::default(), &claim)
        .await
        .unwrap();
    let writer = WindmillJob::preview(
        "# k8s: volume=pvc:shared-data:/mnt/data\ndef main(text):\n    open('/mnt/data/note.txt', 'w').write(text)\n    return 'written'\n",
    )
    .args(json!({"text": "kept on the claim"}))
    .push(&bed.db)
    .await;
    assert_eq!(bed.outcome(writer).await.status, "success");
    let reader = WindmillJob::preview("# k8s: volume=pvc:shared-data:/mnt/data:ro\ndef main():\n    return open('/mnt/data/note.txt').read()\n")
        .push(&bed.db)
        .await;
    let done = bed.outcome(reader).await;
    assert_eq!(
        done.status,
        "success",
        "{:?}\n{}",
        done,
        logs(&bed.db, reader).await
    );
    assert_eq!(done.result, Some(json!("kept on the claim")));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exceeded_quota_is_back_pressure_and_the_job_runs_once_it_lifts() {
    let bed = Bed::new(&[]).await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-jobs"},
        "spec": {"hard": {"count/jobs.batch": "0"}}
    }))
    .unwrap();
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(bed.client.clone(), &bed.namespace);
    quotas
        .create(&kube::api::PostParams::default(), &quota)
        .await
        .unwrap();
    // Quota admission only counts once the quota controller has computed its usage.
    eventually("the quota to be synced", LIMIT, || async {
        quotas
            .get("no-jobs")
            .await
            .unwrap()
            .status
            .and_then(|s| s.used)
            .map(|_| ())
    })
    .await;
    let id = WindmillJob::preview("def main():\n    return 'ran'\n")
        .push(&bed.db)
        .await;
    let log = eventually("the wait for quota", LIMIT, || async {
        let log = logs(&bed.db, id).await;
        log.contains("waiting for quota").then_some(log)
    })
    .await;
    assert!(log.contains("exceeded quota"), "{log}");
    assert!(
        completed(&bed.db, id).await.is_none(),
        "back-pressure, not a failure"
    );
    quotas
        .delete("no-jobs", &DeleteParams::default())
        .await
        .unwrap();
    let done = bed.outcome(id).await;
    assert_eq!(
        (done.status.as_str(), done.result),
        ("success", Some(json!("ran")))
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_arrives_whole_and_one_past_the_limit_fails_naming_it() {
    let bed = Bed::new(&[("FLEXT__EXECUTOR__MAX_RESULT_BYTES", "4MiB")]).await;
    let big = WindmillJob::preview("def main(n):\n    return ['x' * 1000 for _ in range(n)]\n")
        .args(json!({"n": 3000}))
        .push(&bed.db)
        .await;
    let too_big = WindmillJob::preview("def main(n):\n    return ['x' * 1000 for _ in range(n)]\n")
        .args(json!({"n": 5000}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(big).await;
    assert_eq!(done.status, "success");
    let items = done.result.unwrap();
    assert_eq!(
        items.as_array().unwrap().len(),
        3000,
        "all of a 3 MB result"
    );
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_str().unwrap().len() == 1000)
    );
    let done = bed.outcome(too_big).await;
    assert_eq!(done.status, "failure");
    let error = &done.result.unwrap()["error"];
    assert_eq!(error["name"], "ResultTooLarge", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("4194304 bytes"),
        "{error}"
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_reports_a_running_jobs_memory_peak_while_it_runs() {
    let bed = Bed::new(&[("FLEXT__WORKER__HEARTBEAT_INTERVAL", "1s")]).await;
    let code = "import time\ndef main():\n    block = b'x' * (60 << 20)\n    print('allocated', flush=True)\n    time.sleep(20)\n    return len(block)\n";
    let id = WindmillJob::preview(code).push(&bed.db).await;
    let peak = eventually("a live memory peak while the job runs", LIMIT, || async {
        let peak: Option<i32> =
            sqlx::query_scalar("SELECT memory_peak FROM v2_job_runtime WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&bed.db.pool)
                .await
                .unwrap()
                .flatten();
        peak.filter(|kib| *kib >= 50_000)
    })
    .await;
    assert!(
        completed(&bed.db, id).await.is_none(),
        "the peak ({peak} KiB) is seen while the job runs, not only after"
    );
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "success", "{done:?}");
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_gets_its_envs_and_windmills_reserved_variables() {
    let bed = Bed::new(&[]).await;
    bed.db
        .exec(
            "INSERT INTO workspace_env (workspace_id, name, value) VALUES ('demo', 'TEAM', 'platform');
             INSERT INTO global_settings (name, value) VALUES ('base_url', '\"https://windmill.example.com\"')",
        )
        .await;
    let code = "import os\ndef main():\n    names = ['GREETING', 'TEAM', 'WM_WORKSPACE', 'WM_JOB_ID', 'WM_JOB_PATH', 'WM_SCHEDULE_PATH', 'WM_STATE_PATH', 'WM_USERNAME', 'WM_EMAIL', 'WM_PERMISSIONED_AS', 'WM_BASE_URL', 'WM_WORKER_GROUP', 'WM_SCHEDULED_FOR', 'WM_OBJECT_PATH', 'WM_ROOT_JOB_ID', 'WM_FLOW_JOB_ID']\n    return {n: os.environ.get(n) for n in names}\n";
    let id = WindmillJob::script("u/alice/env", code)
        .envs(&["GREETING=hello=world"])
        .scheduled_by("u/alice/every_minute")
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "success", "{done:?}");
    let env = done.result.unwrap();
    assert_eq!(
        env["GREETING"], "hello=world",
        "split at the first `=`: {env}"
    );
    assert_eq!(env["TEAM"], "platform", "workspace_env: {env}");
    assert_eq!(env["WM_WORKSPACE"], "demo");
    assert_eq!(env["WM_JOB_ID"], id.to_string());
    assert_eq!(env["WM_ROOT_JOB_ID"], id.to_string());
    assert_eq!(env["WM_JOB_PATH"], "u/alice/env");
    assert_eq!(env["WM_SCHEDULE_PATH"], "u/alice/every_minute");
    assert_eq!(
        env["WM_STATE_PATH"], "u/alice/env/alice",
        "scheduled: the trigger is the user"
    );
    assert_eq!(env["WM_USERNAME"], "alice");
    assert_eq!(env["WM_EMAIL"], "alice@example.com");
    assert_eq!(env["WM_PERMISSIONED_AS"], "u/alice");
    assert_eq!(env["WM_BASE_URL"], "https://windmill.example.com");
    assert_eq!(env["WM_FLOW_JOB_ID"], "", "set, and empty outside a flow");
    let scheduled_for = env["WM_SCHEDULED_FOR"].as_str().unwrap();
    assert!(
        scheduled_for.ends_with('Z') && scheduled_for.len() == 20,
        "RFC 3339 in UTC, whole seconds: {scheduled_for}"
    );
    let object_path = env["WM_OBJECT_PATH"].as_str().unwrap();
    assert!(
        object_path.starts_with("u_alice_env/u_alice_every_minute/")
            && object_path.ends_with(&format!("_{id}")),
        "{object_path}"
    );
    // The script's envs travel in the Secret, never in the Job spec.
    let jobs = bed.jobs().list(&ListParams::default()).await.unwrap();
    for job in jobs.items {
        let spec = serde_json::to_string(&job.spec).unwrap();
        assert!(!spec.contains("hello=world"), "{spec}");
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_by_a_worker_killed_before_its_kubernetes_job_existed_runs_once_after_restart()
 {
    let mut bed = Bed::new(&[]).await;
    if let Some(worker) = bed.worker.take() {
        worker.abandon();
        worker.wait().await;
    }
    let name = format!("wk-restarted-{}", &bed.namespace[4..]);
    let id = WindmillJob::preview("def main():\n    print('ran', flush=True)\n    return 'once'\n")
        .push(&bed.db)
        .await;
    // The killed worker's claim: the row is running under its name, nothing exists in Kubernetes.
    let claimed = flext_kubernetes::queue::Queue::Postgres(bed.db.queue())
        .claim(&name, &["k8s".to_owned()])
        .await
        .unwrap();
    assert_eq!(claimed.map(|j| j.id), Some(id));
    let config = bed_config(&bed.namespace, &[("FLEXT__WORKER__NAME", &name)]);
    bed.start_worker(config).await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!("once")));
    assert_eq!(logs(&bed.db, id).await.matches("ran\n").count(), 1);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preprocessor_runs_first_in_the_same_pod_and_windmill_records_its_args() {
    let bed = Bed::new(&[]).await;
    let python = "def preprocessor(event):\n    print('preprocessing', event['kind'])\n    return {'x': event['body'] * 2}\n\ndef main(x):\n    return x + 1\n";
    let id = WindmillJob::script("u/alice/webhook", python)
        .through_preprocessor()
        .args(json!({"event": {"kind": "webhook", "body": 20}}))
        .push(&bed.db)
        .await;
    let typescript = "export async function preprocessor(event: any) {\n  return { name: event.who, n: 2 };\n}\nexport async function main(n: number, name: string) {\n  return `${name} x${n}`;\n}\n";
    let ts = WindmillJob::script("u/alice/route", typescript)
        .lang("bun")
        .through_preprocessor()
        .args(json!({"event": {"who": "ada"}}))
        .push(&bed.db)
        .await;
    let done = bed.outcome(id).await;
    assert_eq!(done.status, "success", "{done:?}");
    assert_eq!(done.result, Some(json!(41)));
    assert!(logs(&bed.db, id).await.contains("preprocessing webhook"));
    let done_ts = bed.outcome(ts).await;
    assert_eq!(done_ts.result, Some(json!("ada x2")), "{done_ts:?}");
    // As Windmill's worker records it: the args main ran with, and preprocessed = true.
    for (job, args) in [(id, json!({"x": 40})), (ts, json!({"name": "ada", "n": 2}))] {
        let row = eventually("the fix-up", LIMIT, || async {
            let (kind, args, preprocessed): (String, Option<serde_json::Value>, Option<bool>) =
                sqlx::query_as("SELECT kind::text, args, preprocessed FROM v2_job WHERE id = $1")
                    .bind(job.0)
                    .fetch_one(&bed.db.pool)
                    .await
                    .unwrap();
            (kind == "script").then_some((args, preprocessed))
        })
        .await;
        assert_eq!(row, (Some(args), Some(true)));
    }
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_script_limited_to_one_never_runs_as_two_pods() {
    let bed = Bed::new(&[]).await;
    let code = "import time\ndef main():\n    time.sleep(2)\n    return 'trained'\n";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = WindmillJob::script("u/alice/train", code)
            .hash(31337)
            .concurrency_limit(1, 0)
            .push(&bed.db)
            .await;
        ids.push(id);
    }
    let mut runs = Vec::new();
    for id in &ids {
        let done = bed.outcome(*id).await;
        assert_eq!(done.status, "success", "{done:?}");
        let (started, ended): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
            sqlx::query_as("SELECT started_at, completed_at FROM v2_job_completed WHERE id = $1")
                .bind(id.0)
                .fetch_one(&bed.db.pool)
                .await
                .unwrap();
        runs.push((started, ended));
    }
    runs.sort();
    assert!(
        runs[0].1 <= runs[1].0,
        "the second run started before the first ended: {runs:?}"
    );
    let mut waited = false;
    for id in &ids {
        waited |= logs(&bed.db, *id)
            .await
            .contains("due to concurrency limits");
    }
    assert!(waited, "the second job's log says why it waited");
    bed.stop().await;
}
