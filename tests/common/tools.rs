//! The command-line tools tests drive: `helm` and `promtool` (from `scripts/tools`, built once
//! and cached), prometheus-client's `OpenMetrics` parser (likewise), headless `chromium`
//! (Debian's) and `kubectl` (the bed's, on
//! `PATH` after `eval "$(scripts/testbed env)"`), with their output as one text for assertion
//! messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The chart's directory.
pub fn chart() -> PathBuf {
    Path::new(ROOT).join("deploy/helm/flext-kubernetes")
}

/// A command's status, stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The path `scripts/tools <tool>` prints (a directory, or for `chromium` the binary),
/// installing the tool on first use.
fn tool_dir(tool: &str) -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("scripts/tools"))
        .arg(tool)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/tools {tool}: {e}"));
    assert!(
        out.status.success(),
        "scripts/tools {tool} failed:\n{}",
        text(&out)
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(dir.trim())
}

/// The helm binary, from `scripts/tools helm` (once per test process: the tests run in parallel,
/// and the first call may build it).
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tool_dir("helm").join("helm"))
}

/// `promtool ARGS` (from `scripts/tools promtool`, built on first use), with `input` on stdin.
pub fn promtool(args: &[&str], input: &str) -> Output {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    let bin = PROMTOOL.get_or_init(|| tool_dir("promtool").join("promtool"));
    with_stdin(Command::new(bin).args(args), input)
}

/// `python3 -c SCRIPT` with prometheus-client (from `scripts/tools prometheus-client`) importable,
/// and `input` on stdin.
pub fn python_with_prometheus_client(script: &str, input: &str) -> Output {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| tool_dir("prometheus-client"));
    with_stdin(
        Command::new("python3")
            .args(["-c", script])
            .env("PYTHONPATH", path)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        input,
    )
}

/// The directory of the policy plugins of `plugins/`, built for `wasm32-wasip2` by
/// `scripts/build-plugins` (quick once built).
pub fn built_plugins() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("scripts/build-plugins"))
        .output()
        .unwrap_or_else(|e| panic!("running scripts/build-plugins: {e}"));
    assert!(
        out.status.success(),
        "scripts/build-plugins failed:\n{}",
        text(&out)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Debian's `chromium` (from `scripts/tools chromium`, installed by apt-get when missing).
pub fn chromium_bin() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| tool_dir("chromium")).clone()
}

/// Runs `command` with `input` written to its stdin; its output.
fn with_stdin(command: &mut Command, input: &str) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    // Written from another thread: a child that answers before reading all of a long input
    // would otherwise block both ends.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    // A child that exits without reading its input is its own error, shown by `out`.
    let _ = writer.join();
    out
}

/// `helm ARGS` with no user or repository state (the chart has no dependencies).
pub fn helm(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("flext-chart-helm");
    Command::new(helm_bin())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("running helm")
}

/// `kubectl ARGS` against the bed, refusing any other cluster (tests create and delete
/// namespaces).
pub fn kubectl(args: &[&str]) -> Output {
    let kubeconfig = std::env::var_os("KUBECONFIG");
    let dir = std::env::var_os("FLEXT_TESTBED_DIR");
    if let Err(refused) = super::bed::check_is_the_bed(kubeconfig.as_deref(), dir.as_deref()) {
        panic!("{refused}");
    }
    Command::new("kubectl")
        .args(args)
        .output()
        .expect("running kubectl (on PATH after `eval \"$(scripts/testbed env)\"`)")
}

/// `kubectl ARGS`, which must succeed; its stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(out.status.success(), "kubectl {args:?}:\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}
