//! The command-line tools tests drive: `helm` (from `scripts/tools helm`, built once and cached)
//! and `kubectl` (the bed's, on `PATH` after `eval "$(scripts/testbed env)"`), with their output
//! as one text for assertion messages.

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

/// The helm binary, from `scripts/tools helm` (once per test process: the tests run in parallel,
/// and the first call may build it).
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(Path::new(ROOT).join("scripts/tools"))
            .arg("helm")
            .output()
            .expect("running scripts/tools helm");
        assert!(
            out.status.success(),
            "scripts/tools helm failed:\n{}",
            text(&out)
        );
        let dir = String::from_utf8(out.stdout).unwrap();
        Path::new(dir.trim()).join("helm")
    })
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
