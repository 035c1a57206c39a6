//! The worker riding out trouble on the Kubernetes test bed: the API server restarting under a
//! running job. A separate test binary, so that the restart does not disturb other tests (cargo
//! runs test binaries one after another).

// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::bed::{Bed, LIMIT};
use common::{WindmillJob, eventually, logs};
use serde_json::json;

fn testbed(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed");
    let status = Command::new(script)
        .arg(command)
        .status()
        .expect("run scripts/testbed");
    assert!(status.success(), "scripts/testbed {command} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_once_with_its_whole_log_across_an_apiserver_restart() {
    let bed = Bed::new(&[]).await;
    let code = "import time\ndef main():\n    for i in range(16):\n        print(f'tick {i}', flush=True)\n        time.sleep(0.5)\n    return 'survived'\n";
    let id = WindmillJob::preview(code).push(&bed.db).await;
    eventually("a few ticks", LIMIT, || async {
        logs(&bed.db, id).await.contains("tick 2").then_some(())
    })
    .await;
    testbed("stop-apiserver");
    tokio::time::sleep(Duration::from_secs(3)).await;
    testbed("start-apiserver");
    let done = bed.outcome(id).await;
    assert_eq!(
        done.status,
        "success",
        "{done:?}\n{}",
        logs(&bed.db, id).await
    );
    assert_eq!(done.result, Some(json!("survived")));
    let log = logs(&bed.db, id).await;
    for i in 0..16 {
        assert_eq!(
            log.matches(&format!("tick {i}\n")).count(),
            1,
            "tick {i} exactly once:\n{log}"
        );
    }
    bed.stop().await;
}
