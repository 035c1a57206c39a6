//! The hand-over of a job to a warm pod: what a waiting runner receives from its worker, and how
//! it asks for it.
//!
//! A warm pod starts before any job exists, so nothing of a job can be in its spec. Its own
//! Secret holds a one-time credential, the worker's CA certificate (DER) and the pod's nonce. The
//! runner calls the worker over TLS, trusting that CA and nothing else, with the credential as a
//! bearer token and its pod name in [`POD_HEADER`]; the worker holds the call open until it
//! assigns the pod a job ([`POLL`] at most, then `204 No Content` and the runner calls again), and
//! answers with the job's [`Payload`] once: the credential is spent by the answer. `401` (not a
//! credential of this worker for this pod) and `410` (spent) end the runner. The server side is
//! `executor::kubernetes::warm`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The path of the hand-over call.
pub const PATH: &str = "/v1/handover";
/// The header naming the calling pod (from the downward API).
pub const POD_HEADER: &str = "x-flext-pod";
/// How long the worker holds a call open before answering `204`.
pub const POLL: Duration = Duration::from_secs(20);
/// The warm pod's Secret keys (mounted at `/flext/secret`).
pub const CREDENTIAL_KEY: &str = "credential";
/// The worker's CA certificate, DER.
pub const CA_KEY: &str = "worker-ca.der";
/// The environment variable with the worker's hand-over URL.
pub const URL_ENV: &str = "FLEXT_HANDOVER_URL";
/// The environment variable with the pod's name.
pub const POD_ENV: &str = "FLEXT_POD_NAME";
/// How long a waiting runner keeps trying to reach a worker that does not answer before it exits
/// (the pool replaces the pod; a restarted worker has a new CA and replaces it anyway).
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(60);

/// What a warm pod receives: the job's files, args and environment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The code files by name (`job.json`, `main.py`, `lock`, the wrapper), as the cold path's
    /// Secret has them.
    pub files: BTreeMap<String, String>,
    /// `args.json`.
    pub args: String,
    /// The job's environment: the reserved `WM_*` variables, the workspace's variables, the
    /// script's `envs` and `WM_TOKEN`.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Payload {
    // Never the args, values or token: they may be credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("args_bytes", &self.args.len())
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A fresh credential: 256 random bits, hex.
#[must_use]
pub fn new_credential() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// How a waiting runner's wait ended without a job.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The pod's Secret is incomplete.
    #[error("cannot read the hand-over credential or the worker's CA in {dir}: {source}")]
    Secret {
        /// The Secret's mount.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No URL or pod name in the environment.
    #[error("{0} is not set: this pod was not made by a worker's warm pool")]
    Environment(&'static str),
    /// The TLS client could not be built.
    #[error("cannot set up the hand-over client: {0}")]
    Client(String),
    /// The worker refused the credential.
    #[error("the worker refused the hand-over credential ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The worker's reason.
        message: String,
    },
    /// The worker did not answer for too long.
    #[error("the worker at {url} did not answer for {}s, last: {last}", UNREACHABLE_FOR.as_secs())]
    Unreachable {
        /// Where.
        url: String,
        /// The last error.
        last: String,
    },
}

/// Waits for this pod's job: calls the worker until it answers with a payload.
pub async fn wait_for_job(secret_dir: &Path) -> Result<Payload, WaitError> {
    let read = |key: &str| {
        std::fs::read(secret_dir.join(key)).map_err(|source| WaitError::Secret {
            dir: secret_dir.display().to_string(),
            source,
        })
    };
    let credential = String::from_utf8_lossy(&read(CREDENTIAL_KEY)?)
        .trim()
        .to_owned();
    let ca = read(CA_KEY)?;
    let url = std::env::var(URL_ENV).map_err(|_| WaitError::Environment(URL_ENV))?;
    let pod = std::env::var(POD_ENV).map_err(|_| WaitError::Environment(POD_ENV))?;
    let client = pinned_client(ca).map_err(WaitError::Client)?;
    let endpoint = format!("{}{PATH}", url.trim_end_matches('/'));
    let mut failing_since: Option<Instant> = None;
    loop {
        let response = client
            .post(&endpoint)
            .bearer_auth(&credential)
            .header(POD_HEADER, &pod)
            .send()
            .await;
        let last = match response {
            Ok(response) => match response.status().as_u16() {
                200 => {
                    return response
                        .json::<Payload>()
                        .await
                        .map_err(|e| WaitError::Refused {
                            status: 200,
                            message: format!("the payload is malformed: {e}"),
                        });
                }
                204 => {
                    failing_since = None;
                    continue;
                }
                status @ (401 | 403 | 410) => {
                    let message = response.text().await.unwrap_or_default();
                    return Err(WaitError::Refused { status, message });
                }
                status => format!("HTTP {status}"),
            },
            Err(error) => error.to_string(),
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > UNREACHABLE_FOR {
            return Err(WaitError::Unreachable { url, last });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A client that trusts the worker's CA and nothing else.
fn pinned_client(ca: Vec<u8>) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca))
        .map_err(|e| format!("the worker's CA certificate is unusable: {e}"))?;
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(POLL + Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())
}
