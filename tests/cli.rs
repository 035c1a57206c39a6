//! The `flext-kubernetes` binary: `check` and `run` against a real PostgreSQL.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestDb, WindmillJob, eventually, queue_row};

const BIN: &str = env!("CARGO_BIN_EXE_flext-kubernetes");

fn flext(db_url: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("FLEXT_DATABASE_URL")
        .env_remove("FLEXT_WINDMILL_TOKEN")
        .env_remove("RUST_LOG");
    if let Some(url) = db_url {
        command.env("FLEXT_DATABASE_URL", url);
    }
    command
}

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(text)
}

/// A file removed on drop (no extra dependency for one helper).
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn with(text: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("flext-cli-{}.yaml", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

const CONFIG: &str = "runtime:
  type: kubernetes
  config:
    windmill:
      worker_group: k8s
      tags: [k8s]
    executor:
      type: echo
    worker:
      poll_interval: 20ms
      heartbeat_interval: 200ms
";

#[tokio::test]
async fn check_validates_connects_and_prints_redacted_settings() {
    let db = TestDb::new().await;
    WindmillJob::preview("x").push(&db).await;
    let url_with_password = db.url.replacen("postgres@", "postgres:topsecret@", 1);
    let config = write_config(CONFIG);
    let out = flext(Some(&url_with_password))
        .args(["check", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("worker_group: k8s"), "{stdout}");
    assert!(stdout.contains("Windmill schema OK"), "{stdout}");
    assert!(stdout.contains("1 job(s) waiting"), "{stdout}");
    assert!(stdout.contains("postgres:***@"), "{stdout}");
    assert!(!stdout.contains("topsecret") && !stderr.contains("topsecret"));
}

#[test]
fn check_names_the_bad_field() {
    let config = write_config(
        "runtime:\n  type: kubernetes\n  config:\n    worker:\n      concurrency: 0\n",
    );
    let out = flext(Some("postgres://x@127.0.0.1:1/db"))
        .args(["check", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runtime.config.worker.concurrency") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

/// Each layer of an error chain adds its context once: the OS error is not repeated.
#[test]
fn a_missing_config_file_prints_the_os_error_once() {
    let out = flext(None)
        .args(["check", "--config", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/x.yaml"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn check_without_a_database_url_says_what_to_set() {
    let config = write_config(CONFIG);
    let out = flext(None)
        .args(["check", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FLEXT_DATABASE_URL"), "{stderr}");
}

#[test]
fn check_reports_an_unreachable_database() {
    let config = write_config(CONFIG);
    let out = flext(Some("postgres://windmill:pw@127.0.0.1:1/windmill"))
        .args(["check", "--config"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "cannot reach Windmill's database at postgres://windmill:***@127.0.0.1:1/windmill"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_claims_hands_back_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("print(1)").push(&db).await;
    let config = write_config(CONFIG);
    let port = common::scrape::free_port();
    let mut child = flext(Some(&db.url))
        .args(["run", "--config"])
        .arg(&config.0)
        .env("FLEXT__TELEMETRY__FORMAT", "json")
        .env("FLEXT__WORKER__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let handed_back = eventually("the hand-back", Duration::from_secs(30), || async {
        queue_row(&db, id).await.filter(|r| !r.0 && r.2 == "flow")
    })
    .await;
    assert_eq!(handed_back.1, None);
    // The HTTP endpoint: alive, ready (database and executor answer), and the job counted.
    assert!(get(port, "/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = get(port, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready\n"),
        "{ready}"
    );
    let metrics = eventually("the job in /metrics", Duration::from_secs(10), || async {
        let text = get(port, "/metrics").await;
        text.contains(r#"flext_jobs_completed_total{tag="k8s",outcome="success",category=""} 1"#)
            .then_some(text)
    })
    .await;
    for line in [
        r#"flext_jobs_claimed_total{tag="k8s"} 1"#,
        r#"flext_job_run_seconds_count{tag="k8s"} 1"#,
        "flext_jobs_in_flight 0",
        "# EOF",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
    // JSON process logs with the job span's fields.
    let handed = status
        .1
        .lines()
        .find(|l| l.contains("job handed back"))
        .unwrap_or_else(|| panic!("{}", status.1));
    let line: serde_json::Value = serde_json::from_str(handed).unwrap();
    assert_eq!(line["span"]["job.id"], id.to_string());
    assert_eq!(line["span"]["windmill.workspace"], "demo");
    assert_eq!(line["outcome"], "success");
}

#[tokio::test]
async fn render_prints_a_queued_jobs_objects_with_secrets_hidden_and_creates_nothing() {
    let db = TestDb::new().await;
    let id = WindmillJob::preview("# k8s: memory=512Mi\ndef main(password):\n    return 1\n")
        .args(serde_json::json!({"password": "hunter2"}))
        .push(&db)
        .await;
    let render = || {
        flext(Some(&db.url))
            .args(["render", &id.to_string()])
            .output()
            .unwrap()
    };
    let out = render();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("kind: ConfigMap")
            && stdout.contains("kind: Secret")
            && stdout.contains("kind: Job"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("flext.dev/job-id: {id}")),
        "{stdout}"
    );
    assert!(stdout.contains("memory: 512Mi"), "{stdout}");
    assert!(
        !stdout.contains("hunter2") && stdout.contains("--show-secrets"),
        "secret values are hidden:\n{stdout}"
    );
    assert_eq!(
        render().stdout,
        out.stdout,
        "the same job renders byte-identical objects"
    );
    let shown = flext(Some(&db.url))
        .args(["render", &id.to_string(), "--show-secrets"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("hunter2"));
    let (running, ..) = queue_row(&db, id).await.unwrap();
    assert!(!running, "rendering claims nothing");
}

/// `GET path` on 127.0.0.1:`port`: the whole response, status line first.
/// The raw response to `GET path` (status line, headers, body).
async fn get(port: u16, path: &str) -> String {
    let (status, body) = common::scrape::get(port, path).await;
    format!("HTTP/1.1 {status}\r\n\r\n{body}")
}
