//! Tiny OCI images built without Docker and pushed to the test bed's registry
//! (`FLEXT_TESTBED_REGISTRY`) through the distribution API: an uncompressed layer tar written
//! here, an image config and an OCI manifest.

use serde_json::json;
use sha2::{Digest, Sha256};

/// A file of a layer.
pub struct File {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
}

impl File {
    pub fn new(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            path: path.to_owned(),
            content: content.into(),
            mode,
            uid: 0,
        }
    }
}

/// An image to push: one layer, and the config's `Entrypoint`, `Cmd`, `Env`, `User`.
pub struct Image {
    pub files: Vec<File>,
    /// Directories (owner uid = gid, mode 0755) created before the files.
    pub dirs: Vec<(String, u32)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
}

/// What a push made: the reference and the manifest's digest (`sha256:...`).
pub struct Pushed {
    pub reference: String,
    pub digest: String,
}

/// The bed's registry, `127.0.0.1:PORT`, from `scripts/testbed env`.
pub fn registry() -> String {
    std::env::var("FLEXT_TESTBED_REGISTRY").unwrap_or_else(|_| {
        panic!(
            "FLEXT_TESTBED_REGISTRY is not set: start the test bed and use its environment: \
             scripts/testbed up && eval \"$(scripts/testbed env)\""
        )
    })
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// One ustar header block.
fn tar_header(path: &str, size: usize, mode: u32, uid: u32, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(path.len() < 100, "test layer paths are short: {path}");
    h[..path.len()].copy_from_slice(path.as_bytes());
    let mut octal = |at: usize, width: usize, value: u64| {
        let s = format!("{value:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(100, 8, u64::from(mode));
    octal(108, 8, u64::from(uid));
    octal(116, 8, u64::from(uid));
    octal(124, 12, size as u64);
    octal(136, 12, 0); // mtime: the epoch, so that the same files make the same digest
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn layer_tar(image: &Image) -> Vec<u8> {
    let mut out = Vec::new();
    for (dir, uid) in &image.dirs {
        out.extend_from_slice(&tar_header(&format!("{dir}/"), 0, 0o755, *uid, b'5'));
    }
    for f in &image.files {
        out.extend_from_slice(&tar_header(&f.path, f.content.len(), f.mode, f.uid, b'0'));
        out.extend_from_slice(&f.content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0); // two empty blocks end the archive
    out
}

async fn put_blob(http: &reqwest::Client, base: &str, data: Vec<u8>) -> String {
    let digest = sha256(&data);
    let exists = http
        .head(format!("{base}/blobs/{digest}"))
        .send()
        .await
        .expect("ask the registry for a blob");
    if exists.status().is_success() {
        return digest;
    }
    // A monolithic upload: POST with the digest and the whole blob.
    let resp = http
        .post(format!("{base}/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .expect("upload a blob");
    assert!(
        resp.status().is_success(),
        "blob upload: {}: {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    digest
}

/// Pushes `image` as `<registry>/<repo>:<tag>`.
pub async fn push(repo: &str, tag: &str, image: &Image) -> Pushed {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let registry = registry();
    let base = format!("http://{registry}/v2/{repo}");
    let layer = layer_tar(image);
    let layer_size = layer.len();
    let layer_digest = put_blob(&http, &base, layer).await;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": image.entrypoint, "Cmd": image.cmd, "Env": image.env, "User": image.user},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .expect("a JSON config");
    let config_size = config.len();
    let config_digest = put_blob(&http, &base, config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    }))
    .expect("a JSON manifest");
    let digest = sha256(&manifest);
    let resp = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .expect("put the manifest");
    assert!(
        resp.status().is_success(),
        "manifest upload: {}: {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    Pushed {
        reference: format!("{registry}/{repo}:{tag}"),
        digest,
    }
}
