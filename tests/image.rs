//! The worker image (`scripts/build-image`), built around a small stand-in binary so that no
//! release build is needed: two builds give the same digest, the config is the worker's, the one
//! layer holds exactly the worker's files (no shell), and the layout pushes to a registry and
//! reads back with a standard tool (crane, `scripts/tools crane`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What `scripts/build-image` printed.
struct Built {
    digest: String,
    layout: PathBuf,
    stdout: String,
}

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A few bytes standing in for the worker binary (the image does not look inside it).
const STAND_IN: &[u8] = b"\x7fELF stand-in for flext-kubernetes\n";

fn build_image(name: &str, args: &[&str], env: &[(&str, &str)]) -> Built {
    let output = tmp(name);
    // Each build its own copy: the binary's path is not part of the image.
    let binary = tmp(&format!("{name}.bin"));
    std::fs::write(&binary, STAND_IN).unwrap();
    let out = Command::new(format!("{ROOT}/scripts/build-image"))
        .arg("--binary")
        .arg(&binary)
        .arg("--output")
        .arg(&output)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "scripts/build-image failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` line in {stdout}"))
            .trim()
            .to_owned()
    };
    let digest = field("digest ");
    let layout = PathBuf::from(field("layout ").split(" (tag").next().unwrap());
    assert_eq!(layout, output);
    Built {
        digest,
        layout,
        stdout,
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A blob of the layout, checked against its digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        sha256(&bytes),
        digest,
        "blob {digest} does not match its digest"
    );
    bytes
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

/// The entries of a tar file (gzipped or not), read by Python's tarfile: name, type, mode,
/// owner, mtime and the sha256 of a file's content.
fn tar_entries(path: &Path) -> Vec<Value> {
    let script = r#"
import hashlib, json, sys, tarfile
out = []
with tarfile.open(sys.argv[1]) as tar:
    for m in tar:
        data = tar.extractfile(m).read() if m.isfile() else None
        out.append({
            "name": m.name, "type": "dir" if m.isdir() else "file" if m.isfile() else "other",
            "mode": oct(m.mode), "uid": m.uid, "gid": m.gid, "uname": m.uname, "gname": m.gname,
            "mtime": m.mtime, "sha256": "sha256:" + hashlib.sha256(data).hexdigest() if data is not None else None,
        })
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn git_head() -> String {
    let out = Command::new("git")
        .args(["-C", ROOT, "rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The files the worker needs and nothing else: (name, type, mode, owner).
fn expected_files() -> Vec<(&'static str, &'static str, &'static str, u64)> {
    vec![
        ("etc", "dir", "0o755", 0),
        ("etc/flext", "dir", "0o755", 0),
        ("etc/group", "file", "0o644", 0),
        ("etc/passwd", "file", "0o644", 0),
        ("etc/ssl", "dir", "0o755", 0),
        ("etc/ssl/certs", "dir", "0o755", 0),
        ("etc/ssl/certs/ca-certificates.crt", "file", "0o644", 0),
        ("home", "dir", "0o755", 0),
        ("home/nonroot", "dir", "0o755", 65532),
        ("tmp", "dir", "0o1777", 0),
        ("usr", "dir", "0o755", 0),
        ("usr/local", "dir", "0o755", 0),
        ("usr/local/bin", "dir", "0o755", 0),
        ("usr/local/bin/flext-kubernetes", "file", "0o755", 0),
    ]
}

/// The layer's files, their owners and modes, and the binary and CA bundle in it.
fn assert_worker_files(entries: &[Value], created: Option<i64>) {
    let names = |e: &Value| e["name"].as_str().unwrap().to_owned();
    let seen: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                names(e),
                e["type"].as_str().unwrap().to_owned(),
                e["mode"].as_str().unwrap().to_owned(),
                e["uid"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<_> = expected_files()
        .into_iter()
        .map(|(n, t, m, u)| (n.to_owned(), t.to_owned(), m.to_owned(), u))
        .collect();
    assert_eq!(seen, expected);
    assert!(
        !seen
            .iter()
            .any(|(n, ..)| n.starts_with("bin") || n.ends_with("/sh")),
        "a shell in the image"
    );
    let file = |name: &str| {
        entries
            .iter()
            .find(|e| names(e) == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(
        file("usr/local/bin/flext-kubernetes")["sha256"],
        json!(sha256(STAND_IN))
    );
    assert_eq!(
        file("etc/ssl/certs/ca-certificates.crt")["sha256"],
        json!(sha256(&std::fs::read(CA_BUNDLE).unwrap()))
    );
    for entry in entries {
        assert_eq!(entry["uid"], entry["gid"], "{entry}");
        if let Some(created) = created {
            assert_eq!(entry["mtime"], json!(created), "{entry}");
        }
    }
}

fn assert_worker_config(config: &Value) {
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/flext-kubernetes"]));
    assert_eq!(
        c["Cmd"],
        json!(["run", "--config", "/etc/flext/config.yaml"])
    );
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));
    // The init container of job pods starts `flext-kubernetes install-runner` through PATH.
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap();
    assert!(path.split(':').any(|dir| dir == "/usr/local/bin"), "{path}");
    let labels = &c["Labels"];
    let label = |key: &str| labels[format!("org.opencontainers.image.{key}")].clone();
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"));
    assert_eq!(label("title"), "flext-kubernetes");
    assert_eq!(label("source"), "https://github.com/flext/flext-kubernetes");
    let revision = label("revision");
    let revision = revision.as_str().unwrap();
    assert_eq!(revision.trim_end_matches("-dirty"), git_head());
}

#[test]
fn two_builds_give_one_digest_and_the_worker_image() {
    let first = build_image("image-first", &[], &[]);
    let second = build_image("image-second", &[], &[]);
    assert_eq!(
        first.digest, second.digest,
        "the image build is not reproducible"
    );
    assert!(first.stdout.contains("size "), "{}", first.stdout);

    let layout = &first.layout;
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout, json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let [entry] = index["manifests"].as_array().unwrap().as_slice() else {
        panic!("one manifest expected: {index}");
    };
    assert_eq!(entry["digest"], json!(first.digest));
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );

    let manifest = json_blob(layout, &first.digest);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json_blob(layout, manifest["config"]["digest"].as_str().unwrap());
    assert_worker_config(&config);
    assert_eq!(manifest["annotations"], config["config"]["Labels"]);
    let [layer] = manifest["layers"].as_array().unwrap().as_slice() else {
        panic!("one layer expected: {manifest}");
    };
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_digest = layer["digest"].as_str().unwrap();
    blob(layout, layer_digest);

    // The config names the uncompressed layer (its diff_id); every time is the commit's.
    let hex = layer_digest.strip_prefix("sha256:").unwrap();
    let tar = tmp("image-first-layer.tar");
    let out = Command::new("python3")
        .args(["-c", "import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], 'wb'))"])
        .arg(layout.join("blobs/sha256").join(hex))
        .arg(&tar)
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([sha256(&std::fs::read(&tar).unwrap())])
    );
    let created = Command::new("git")
        .args(["-C", ROOT, "log", "-1", "--format=%ct"])
        .output()
        .unwrap();
    let created: i64 = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_worker_files(&tar_entries(&tar), Some(created));

    let passwd = String::from_utf8(blob_file(&tar, "etc/passwd")).unwrap();
    assert!(
        passwd.contains("\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
        "{passwd}"
    );
    let group = String::from_utf8(blob_file(&tar, "etc/group")).unwrap();
    assert!(group.contains("\nnonroot:x:65532:\n"), "{group}");
}

/// One file's content out of a tar.
fn blob_file(tar: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, tarfile; sys.stdout.buffer.write(tarfile.open(sys.argv[1]).extractfile(sys.argv[2]).read())",
        ])
        .arg(tar)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "no {name} in {}", tar.display());
    out.stdout
}

/// `crane registry serve` on a free loopback port, stopped on drop.
struct Registry {
    child: Child,
    address: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crane_bin() -> PathBuf {
    let out = Command::new(format!("{ROOT}/scripts/tools"))
        .arg("crane")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/tools crane failed");
    Path::new(String::from_utf8(out.stdout).unwrap().trim()).join("crane")
}

fn crane(crane: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(crane).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "crane {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn the_image_pushes_and_reads_back_with_crane() {
    let crane_path = crane_bin();
    let port = common::scrape::free_port();
    let address = format!("127.0.0.1:{port}");
    let registry = Registry {
        child: Command::new(&crane_path)
            .args(["registry", "serve", "--address", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        address,
    };
    common::eventually(
        "the registry to listen",
        Duration::from_secs(20),
        || async { TcpStream::connect(&registry.address).ok() },
    )
    .await;

    // The default reference: the test bed's registry.
    let built = build_image(
        "image-pushed",
        &["--push"],
        &[("FLEXT_TESTBED_REGISTRY", &registry.address)],
    );
    let reference = format!(
        "{}/flext/flext-kubernetes:{}",
        registry.address,
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        built
            .stdout
            .contains(&format!("pushed   {reference}@{}", built.digest)),
        "{}",
        built.stdout
    );

    let digest = String::from_utf8(crane(&crane_path, &["digest", &reference])).unwrap();
    assert_eq!(digest.trim(), built.digest);
    crane(&crane_path, &["validate", "--remote", &reference]);
    let config: Value =
        serde_json::from_slice(&crane(&crane_path, &["config", &reference])).unwrap();
    assert_worker_config(&config);
    let manifest: Value =
        serde_json::from_slice(&crane(&crane_path, &["manifest", &reference])).unwrap();
    assert_eq!(manifest["annotations"], config["config"]["Labels"]);

    // The file system a runtime would see.
    let exported = tmp("image-exported.tar");
    crane(
        &crane_path,
        &["export", &reference, exported.to_str().unwrap()],
    );
    assert_worker_files(&tar_entries(&exported), None);
}
