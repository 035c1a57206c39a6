//! `flext-kubernetes hints FILE`: the effective pod settings of a script, through the built binary.
//! No database or cluster is needed.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flext-kubernetes");

const CONFIG: &str = r#"runtime:
  type: kubernetes
  config:
    windmill:
      tags: [k8s, k8s-gpu]
    resources:
      default_cpu: "500m"
      default_memory: "1Gi"
      default_storage: "10Gi"
    profiles:
      k8s-gpu: { gpu: 1, node_selector: { pool: gpu } }
    limits:
      max_cpu: "8"
      max_memory: "32Gi"
      allowed_images: ["ghcr.io/acme/*"]
"#;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("flext-hints-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hints(config: &Path, script: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("hints")
        .arg(script)
        .arg("--config")
        .arg(config)
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The SOURCE column of the row for `key`.
fn source_of<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let mut columns = line.split_whitespace();
        (columns.next() == Some(key)).then(|| {
            let rest = line
                .split_once(key)
                .map_or("", |(_, rest)| rest)
                .trim_start();
            rest.split_once("  ")
                .map_or(rest, |(_, source)| source.trim())
        })
    })
}

#[test]
fn prints_each_value_with_where_it_came_from() {
    let dir = Scratch::new();
    let config = dir.file("config.yaml", CONFIG.as_bytes());
    let script = dir.file(
        "etl.py",
        b"#!/usr/bin/env python3\n# k8s: memory=4Gi image=ghcr.io/acme/etl:1.4 timeout=2h\nimport os\n",
    );
    let out = hints(&config, &script, &["--tag", "k8s-gpu"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("as python3, tag `k8s-gpu`: profile `k8s-gpu`"),
        "{stdout}"
    );
    assert_eq!(
        source_of(&stdout, "cpu.request"),
        Some("default"),
        "{stdout}"
    );
    assert_eq!(
        source_of(&stdout, "gpu"),
        Some("profile k8s-gpu"),
        "{stdout}"
    );
    assert_eq!(
        source_of(&stdout, "node_selector.pool"),
        Some("profile k8s-gpu"),
        "{stdout}"
    );
    assert_eq!(
        source_of(&stdout, "memory.limit"),
        Some("annotation, line 2"),
        "{stdout}"
    );
    assert_eq!(
        source_of(&stdout, "image"),
        Some("annotation, line 2"),
        "{stdout}"
    );
    assert!(stdout.contains("ghcr.io/acme/etl:1.4"), "{stdout}");
    assert!(stdout.contains("nvidia.com/gpu"), "{stdout}");
}

#[test]
fn the_output_is_byte_identical_across_runs() {
    let dir = Scratch::new();
    let config = dir.file("config.yaml", CONFIG.as_bytes());
    let script = dir.file(
        "job.ts",
        b"// k8s: label.b=2 label.a=1 node_selector=zone:b,pool:x toleration=t2 toleration=t1\nexport function main() {}\n",
    );
    let first = hints(&config, &script, &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(first.stdout, hints(&config, &script, &[]).stdout);
    let stdout = text(&first.stdout);
    assert!(stdout.contains("as bun, tag `k8s`: no profile"), "{stdout}");
    let a = stdout.find("label.a").unwrap();
    let b = stdout.find("label.b").unwrap();
    assert!(a < b, "maps print sorted: {stdout}");
}

#[test]
fn a_rejected_hint_exits_non_zero_with_the_message_windmill_would_show() {
    let dir = Scratch::new();
    let config = dir.file("config.yaml", CONFIG.as_bytes());
    let script = dir.file("big.sh", b"#!/bin/bash\n# k8s: memory=64Gi\necho hi\n");
    let out = hints(&config, &script, &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing printed as effective: {}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("hint `memory=64Gi` (annotation, line 2) is not allowed: 64Gi is above limits.max_memory = 32Gi in the worker config"),
        "{stderr}"
    );

    let script = dir.file("image.py", b"# k8s: image=docker.io/evil:1\n");
    let stderr = text(&hints(&config, &script, &[]).stderr);
    assert!(stderr.contains("limits.allowed_images"), "{stderr}");
}

#[test]
fn malformed_hints_and_files_are_clear_errors() {
    let dir = Scratch::new();
    let config = dir.file("config.yaml", CONFIG.as_bytes());
    for (name, content, expected) in [
        (
            "typo.py",
            &b"# k8s: memroy=2Gi\n"[..],
            "line 1: unknown hint key `memroy`; did you mean memory?",
        ),
        (
            "bytes.py",
            b"# k8s: cpu=\xff\n",
            "line 1: the `k8s:` hint line is not valid UTF-8",
        ),
        (
            "nul.go",
            b"// k8s: image=a\0b\npackage main\n",
            "contains control characters",
        ),
        ("unknown.xyz", b"# k8s: cpu=1\n", "pass --lang"),
    ] {
        let script = dir.file(name, content);
        let out = hints(&config, &script, &[]);
        assert!(!out.status.success(), "{name}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    // --lang overrides the extension.
    let script = dir.file("script.txt", b"-- k8s: cpu=2\nselect 1;\n");
    let out = hints(&config, &script, &["--lang", "postgresql"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        source_of(&text(&out.stdout), "cpu.limit"),
        Some("annotation, line 1")
    );
}

#[test]
fn a_bad_config_names_the_field() {
    let dir = Scratch::new();
    let config = dir.file(
        "config.yaml",
        b"runtime:\n  type: kubernetes\n  config:\n    profiles:\n      k8s: { cpu: lots }\n",
    );
    let script = dir.file("a.py", b"");
    let out = hints(&config, &script, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("runtime.config.profiles.k8s.cpu"),
        "{stderr}"
    );
}

#[test]
fn every_bad_hint_is_reported_at_once_each_on_its_own_line() {
    let dir = Scratch::new();
    let config = dir.file("config.yaml", CONFIG.as_bytes());
    let script = dir.file("many.py", b"# k8s: memory=-1 gpu=abc nonsense\nimport os\n");
    let out = hints(&config, &script, &[]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (line, expected) in lines.iter().zip([
        "line 1: bad value for `memory`",
        "line 1: bad value for `gpu`",
        "line 1: `nonsense` is not key=value",
    ]) {
        assert!(line.starts_with("error: "), "{stderr}");
        assert!(
            line.contains("many.py"),
            "each line names the file: {stderr}"
        );
        assert!(line.contains(expected), "{expected}: {stderr}");
    }
}

/// With several clusters `hints` says where the script would run and what comes next; a hint
/// naming a cluster that does not serve the tag is refused with the cluster's tags.
#[test]
fn with_several_clusters_hints_show_where_the_job_runs_and_why() {
    let dir = Scratch::new();
    let config = dir.file(
        "config.yaml",
        b"runtime:\n  type: kubernetes\n  config:\n    windmill: {tags: [k8s, k8s-gpu]}\n    clusters:\n      - {name: general, tags: [k8s]}\n      - {name: gpu}\n    limits: {allowed_clusters: [general, gpu]}\n",
    );
    let plain = dir.file("plain.py", b"def main():\n    return 1\n");
    let out = hints(&config, &plain, &["--tag", "k8s"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("# runs on cluster `general` (the first ready cluster serving tag `k8s`, in config order (general, gpu)); if it is not ready or full: gpu"),
        "{stdout}"
    );
    let pinned = dir.file(
        "pinned.py",
        b"# k8s: cluster=general\ndef main():\n    return 1\n",
    );
    let out = hints(&config, &pinned, &["--tag", "k8s-gpu"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ClusterDoesNotServeTag"), "{stderr}");
    assert!(stderr.contains("its tags: k8s"), "{stderr}");
    let out = hints(&config, &pinned, &["--tag", "k8s"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("# runs on cluster `general` (cluster=general (annotation, line 1))"),
        "{stdout}"
    );
}
