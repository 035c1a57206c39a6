//! Warm pools: runner pods that wait for a job, so that a matching job starts without a pod
//! start. One job per pod, always: after its job the pod ends and is deleted, and the pool makes
//! another.
//!
//! Each pool (`warm_pools:` in the config) resolves its pod settings once, from the tag's profile
//! and the language's image, and keeps up to `size` pods of exactly those settings waiting
//! ([`crate::executor::kubernetes::render::warm_pod`]). Each pod has a Secret of its own with a
//! one-time credential, this worker's CA certificate and the pod's nonce; its runner calls this
//! worker's hand-over endpoint ([`Handover`], TLS with a CA made at start, so a restarted worker
//! replaces the pods of the one before) and waits there. A claimed job whose resolved pod
//! settings are exactly a pool's is handed to one of its waiting pods: the pod is labelled with
//! the job and attempt (recorded in Kubernetes first, so a restarted worker follows it instead of
//! starting the job again), then the waiting call is answered with the job ([`Payload`]) and the
//! credential is spent. From there the pod is followed like a cold one. Any other job, or one that
//! finds no waiting pod, takes the cold path, and the job log says why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::ratelimit::RateLimiter;
use super::render::{self, LABEL_WARM_OWNER, LABEL_WARM_POOL};
use super::watch::PodWatch;
use crate::config::Settings;
use crate::handover::{self, Payload};
use crate::hints::PodSettings;

/// How long after its last call a waiting pod still counts as waiting (its runner calls again
/// at once after each `204`).
const STILL_WAITING: Duration = Duration::from_secs(3);
/// How long a warm pod may take to make its first call before it is replaced.
const START_BUDGET: Duration = Duration::from_secs(300);
/// How many pods one pool creates per refill round.
const CREATES_PER_ROUND: usize = 8;

/// The worker's TLS identity for the hand-over: a CA made at start, and a server certificate it
/// signed for the advertised host.
struct Identity {
    ca_der: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
}

fn identity(host: &str) -> Result<Identity, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fail = |e: rcgen::Error| format!("cannot make the hand-over certificate: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "flext-kubernetes hand-over CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(fail)?;
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "flext-kubernetes hand-over");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).map_err(fail)?;
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], private)
        .map_err(|e| format!("cannot use the hand-over certificate: {e}"))?;
    Ok(Identity {
        ca_der: ca.der().to_vec(),
        server: Arc::new(server),
    })
}

/// Where a warm pod stands.
#[derive(Debug)]
enum Stage {
    /// Waiting for a job (once its runner calls).
    Waiting,
    /// Taken for a job, which is being recorded on the pod.
    Reserved,
    /// Its job is ready for its runner's next call.
    Assigned(Box<Payload>),
    /// Its job was handed over: the credential is spent.
    Spent,
}

/// One warm pod, as the hand-over knows it.
#[derive(Debug)]
struct Slot {
    pod: String,
    pool: String,
    nonce: String,
    stage: Stage,
    /// Calls of its runner now open.
    calls: usize,
    /// When a call last ended (or began).
    last_call: Option<Instant>,
    created: Instant,
    wake: Arc<tokio::sync::Notify>,
    delivered: Arc<AtomicBool>,
}

/// The hand-over endpoint's state: every warm pod this worker made, by credential.
#[derive(Debug)]
pub(super) struct Handover {
    slots: Mutex<HashMap<String, Slot>>,
    ca_der: Vec<u8>,
    /// `https://host:port`, as the pods call it.
    url: String,
}

/// A warm pod taken for a job.
#[derive(Debug, Clone)]
pub(super) struct Taken {
    /// The pod.
    pub pod: String,
    /// Its pool.
    pub pool: String,
    /// Its nonce (in its Secret): the attempt's.
    pub nonce: String,
    credential: String,
    /// Set once its runner has the job: from then on user code may have run.
    pub delivered: Arc<AtomicBool>,
    created: Instant,
}

impl Taken {
    /// How long ago the pod was made.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }
}

impl Handover {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts serving at `listen` over TLS until `stop`; pods call it at `advertise` (else the
    /// listening IP) and the bound port.
    pub(super) async fn start(
        listen: &str,
        advertise: Option<&str>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let address: SocketAddr = listen
            .parse()
            .map_err(|e| format!("worker.handover.listen `{listen}`: {e}"))?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address} for the warm pods' hand-over: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("the hand-over listener has no address: {e}"))?;
        let host = advertise.map_or_else(|| bound.ip().to_string(), str::to_owned);
        let identity = identity(&host)?;
        let url = if host.contains(':') && !host.starts_with('[') {
            format!("https://[{host}]:{}", bound.port())
        } else {
            format!("https://{host}:{}", bound.port())
        };
        let this = Arc::new(Self {
            slots: Mutex::new(HashMap::new()),
            ca_der: identity.ca_der,
            url,
        });
        let router = axum::Router::new()
            .route(handover::PATH, axum::routing::post(call))
            .with_state(this.clone());
        tokio::spawn(serve(listener, identity.server, router, stop));
        Ok(this)
    }

    /// The URL warm pods call.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    fn register(&self, pod: &str, pool: &str, credential: &str, nonce: &str) {
        self.lock().insert(
            credential.to_owned(),
            Slot {
                pod: pod.to_owned(),
                pool: pool.to_owned(),
                nonce: nonce.to_owned(),
                stage: Stage::Waiting,
                calls: 0,
                last_call: None,
                created: Instant::now(),
                wake: Arc::new(tokio::sync::Notify::new()),
                delivered: Arc::new(AtomicBool::new(false)),
            },
        );
    }

    fn forget(&self, pod: &str) {
        self.lock().retain(|_, slot| slot.pod != pod);
    }

    /// A waiting pod of `pool`, reserved for a job.
    fn take(&self, pool: &str) -> Option<Taken> {
        let mut slots = self.lock();
        let (credential, slot) = slots.iter_mut().find(|(_, s)| {
            s.pool == pool
                && matches!(s.stage, Stage::Waiting)
                && (s.calls > 0 || s.last_call.is_some_and(|t| t.elapsed() < STILL_WAITING))
        })?;
        slot.stage = Stage::Reserved;
        Some(Taken {
            pod: slot.pod.clone(),
            pool: slot.pool.clone(),
            nonce: slot.nonce.clone(),
            credential: credential.clone(),
            delivered: slot.delivered.clone(),
            created: slot.created,
        })
    }

    /// Gives a reserved pod its job: its runner's open (or next) call answers with it.
    pub(super) fn assign(&self, taken: &Taken, payload: Payload) {
        if let Some(slot) = self.lock().get_mut(&taken.credential) {
            slot.stage = Stage::Assigned(Box::new(payload));
            slot.wake.notify_one();
        }
    }

    /// How many of `pool`'s pods wait, and how many are still starting.
    fn counts(&self, pool: &str) -> (usize, usize) {
        let slots = self.lock();
        let mine = slots
            .values()
            .filter(|s| s.pool == pool && matches!(s.stage, Stage::Waiting));
        let (mut waiting, mut starting) = (0, 0);
        for slot in mine {
            if slot.last_call.is_some() {
                waiting += 1;
            } else {
                starting += 1;
            }
        }
        (waiting, starting)
    }

    /// The pods of `pool` not handed a job, with whether each has ever called and when it was made.
    fn unassigned(&self, pool: &str) -> Vec<(String, bool, Instant)> {
        self.lock()
            .values()
            .filter(|s| s.pool == pool && matches!(s.stage, Stage::Waiting | Stage::Reserved))
            .map(|s| (s.pod.clone(), s.last_call.is_some(), s.created))
            .collect()
    }

    /// Gives a reserved pod back to its pool (recording the job on it failed).
    fn release(&self, taken: &Taken) {
        if let Some(slot) = self.lock().get_mut(&taken.credential)
            && matches!(slot.stage, Stage::Reserved)
        {
            slot.stage = Stage::Waiting;
        }
    }
}

/// Counts an open call of a pod's runner, until dropped.
struct OpenCall<'a> {
    handover: &'a Handover,
    credential: String,
}

impl Drop for OpenCall<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.handover.lock().get_mut(&self.credential) {
            slot.calls = slot.calls.saturating_sub(1);
            slot.last_call = Some(Instant::now());
        }
    }
}

/// What one call gets now, or what it waits on.
enum Answer {
    Now(Response),
    Wait(Arc<tokio::sync::Notify>),
}

fn answer(handover: &Handover, credential: &str, pod: &str) -> Answer {
    let refuse =
        |status: StatusCode, why: &str| Answer::Now((status, why.to_owned()).into_response());
    let mut slots = handover.lock();
    let Some(slot) = slots.get_mut(credential) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "not a hand-over credential of this worker (a restarted worker replaces the pods of the one before)",
        );
    };
    if slot.pod != pod {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this credential belongs to another pod",
        );
    }
    slot.last_call = Some(Instant::now());
    match std::mem::replace(&mut slot.stage, Stage::Spent) {
        Stage::Assigned(payload) => {
            slot.delivered.store(true, Ordering::Release);
            Answer::Now((StatusCode::OK, axum::Json(*payload)).into_response())
        }
        Stage::Spent => refuse(StatusCode::GONE, "this credential was used already"),
        stage @ (Stage::Waiting | Stage::Reserved) => {
            slot.stage = stage;
            Answer::Wait(slot.wake.clone())
        }
    }
}

/// `POST /v1/handover`: the job, once, to the pod whose credential it is.
async fn call(State(handover): State<Arc<Handover>>, headers: HeaderMap) -> Response {
    let credential = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let pod = headers
        .get(handover::POD_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let wake = match answer(&handover, &credential, &pod) {
        Answer::Now(response) => return response,
        Answer::Wait(wake) => wake,
    };
    let _open = {
        if let Some(slot) = handover.lock().get_mut(&credential) {
            slot.calls += 1;
        }
        OpenCall {
            handover: &handover,
            credential: credential.clone(),
        }
    };
    let _ = tokio::time::timeout(handover::POLL, wake.notified()).await;
    match answer(&handover, &credential, &pod) {
        Answer::Now(response) => response,
        Answer::Wait(_) => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Accepts TLS connections and serves `router` on each, until `stop`.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// One pool: its settings resolved once.
#[derive(Debug, Clone)]
struct Pool {
    name: String,
    tag: String,
    language: Option<String>,
    pod: PodSettings,
    size: u32,
}

/// The pod settings a job's pod is made of, by field, for comparing a job's with a pool's
/// (timeout, retries and priority are the job's own: they do not shape the pod).
fn shape(pod: &PodSettings) -> Vec<(&'static str, String)> {
    let list = |items: Vec<String>| items.join(", ");
    vec![
        ("image", pod.image.value.clone()),
        (
            "pull_policy",
            format!("{:?}", pod.pull_policy.as_ref().map(|p| &p.value)),
        ),
        ("cpu", pod.cpu.value.to_string()),
        ("memory", pod.memory.value.to_string()),
        ("storage", pod.storage.value.to_string()),
        (
            "gpu",
            format!("{} {}", pod.gpu.value, pod.gpu_resource.value),
        ),
        (
            "node_selector",
            format!(
                "{:?}",
                pod.node_selector
                    .iter()
                    .map(|(k, v)| (k, &v.value))
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "tolerations",
            list(
                pod.tolerations
                    .iter()
                    .map(|t| format!("{:?}", t.value))
                    .collect(),
            ),
        ),
        (
            "affinity",
            list(
                pod.affinity
                    .iter()
                    .map(|a| format!("{:?}", a.value))
                    .collect(),
            ),
        ),
        (
            "priority_class",
            format!("{:?}", pod.priority_class.as_ref().map(|v| &v.value)),
        ),
        (
            "service_account",
            format!("{:?}", pod.service_account.as_ref().map(|v| &v.value)),
        ),
        (
            "runtime_class",
            format!("{:?}", pod.runtime_class.as_ref().map(|v| &v.value)),
        ),
        (
            "local_queue",
            format!("{:?}", pod.local_queue.as_ref().map(|v| &v.value)),
        ),
        (
            "env_from_secrets",
            list(
                pod.env_from_secrets
                    .iter()
                    .map(|v| v.value.clone())
                    .collect(),
            ),
        ),
        (
            "env_from_configmaps",
            list(
                pod.env_from_configmaps
                    .iter()
                    .map(|v| v.value.clone())
                    .collect(),
            ),
        ),
        (
            "volumes",
            list(
                pod.volumes
                    .iter()
                    .map(|v| format!("{:?}", v.value))
                    .collect(),
            ),
        ),
        (
            "labels",
            format!(
                "{:?}",
                pod.labels
                    .iter()
                    .map(|(k, v)| (k, &v.value))
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "annotations",
            format!(
                "{:?}",
                pod.annotations
                    .iter()
                    .map(|(k, v)| (k, &v.value))
                    .collect::<Vec<_>>()
            ),
        ),
    ]
}

/// The first fields where `job` differs from `pool`, for the job log.
fn differences(job: &PodSettings, pool: &PodSettings) -> Vec<String> {
    shape(job)
        .into_iter()
        .zip(shape(pool))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((field, a), (_, b))| format!("{field} {a} (the pool's: {b})"))
        .collect()
}

/// Where the pools of one cluster stand, and what they need to make pods.
pub(super) struct Pools {
    list: Vec<Pool>,
    handover: Arc<Handover>,
    owner: String,
    settings: Arc<crate::config::Config>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    watch: PodWatch,
    limiter: Arc<RateLimiter>,
    metrics: crate::metrics::KubeMetrics,
}

/// What the pools use of their cluster's executor.
pub(super) struct Kube {
    pub pods: Api<Pod>,
    pub secrets: Api<Secret>,
    pub watch: PodWatch,
    pub limiter: Arc<RateLimiter>,
    pub metrics: crate::metrics::KubeMetrics,
}

/// A label value from a worker name: at most 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at
/// both ends.
fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

impl Pools {
    /// The pools of `settings` that run on cluster `cluster`, or `None` without any.
    pub(super) fn new(
        config: Arc<crate::config::Config>,
        cluster: &str,
        handover: Arc<Handover>,
        kube: Kube,
    ) -> Option<Self> {
        let settings = &config.settings;
        let pools: Vec<Pool> = settings
            .warm_pools
            .iter()
            .filter_map(|p| {
                let pod = crate::hints::resolve(
                    &settings.hints(),
                    &p.tag,
                    p.language.as_deref().unwrap_or_default(),
                    "",
                    crate::hints::WindmillFields::default(),
                )
                .ok()?;
                let here = super::clusters::first_choice(settings, &p.tag, &pod)
                    .is_ok_and(|(c, _)| c.name == cluster);
                here.then(|| Pool {
                    name: label_value(&p.name()),
                    tag: p.tag.clone(),
                    language: p.language.clone(),
                    pod,
                    size: p.size,
                })
            })
            .collect();
        if pools.is_empty() {
            return None;
        }
        let Kube {
            pods,
            secrets,
            watch,
            limiter,
            metrics,
        } = kube;
        Some(Self {
            list: pools,
            handover,
            owner: label_value(&config.worker_name()),
            settings: config,
            pods,
            secrets,
            watch,
            limiter,
            metrics,
        })
    }

    /// Keeps the pools full until `stop`: first removes the unassigned pods a worker of this
    /// name left (their credentials died with it), then every half second replaces pods that
    /// ended or never called, and makes the missing ones.
    pub(super) fn spawn(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            self.watch.synced().await;
            for pod in self.watch.warm_pods() {
                if owner_of(&pod) == Some(self.owner.as_str())
                    && let Some(name) = &pod.metadata.name
                {
                    self.delete(name).await;
                }
            }
            loop {
                // One look at the watch a round, for every pool.
                let seen: HashMap<String, Pod> = self
                    .watch
                    .warm_pods()
                    .into_iter()
                    .filter_map(|p| Some((p.metadata.name.clone()?, p)))
                    .collect();
                for pool in &self.list {
                    self.refill(pool, &seen).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stop.cancelled() => break,
                }
            }
            // Waiting pods go with the worker: the next one cannot use them.
            for pool in &self.list {
                for (pod, _, _) in self.handover.unassigned(&pool.name) {
                    self.delete(&pod).await;
                }
            }
        });
    }

    /// Replaces `pool`'s pods that ended, vanished from `seen` (the watch's unassigned warm pods)
    /// or never called, and makes the missing ones.
    async fn refill(&self, pool: &Pool, seen: &HashMap<String, Pod>) {
        let mut live = 0usize;
        for (name, called, created) in self.handover.unassigned(&pool.name) {
            let ended = seen.get(&name).is_some_and(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
            });
            let vanished = !seen.contains_key(&name) && created.elapsed() > Duration::from_secs(30);
            let stuck = !called && created.elapsed() > START_BUDGET;
            if ended || vanished || stuck {
                tracing::info!(pod = %name, pool = %pool.name, ended, vanished, stuck, "replacing a warm pod");
                self.delete(&name).await;
                continue;
            }
            live += 1;
        }
        let (waiting, starting) = self.handover.counts(&pool.name);
        self.metrics.set_warm_pods(&pool.name, waiting, starting);
        let missing = (pool.size as usize).saturating_sub(live);
        for _ in 0..missing.min(CREATES_PER_ROUND) {
            if let Err(error) = self.create(pool).await {
                tracing::warn!(pool = %pool.name, %error, "creating a warm pod failed; retrying");
                break;
            }
        }
    }

    async fn create(&self, pool: &Pool) -> Result<(), kube::Error> {
        let settings = &self.settings.settings;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!(
            "wm-warm-{}-{}",
            pool.name
                .chars()
                .take(40)
                .collect::<String>()
                .to_lowercase()
                .replace(['_', '.'], "-"),
            &suffix[..10]
        );
        let labels = std::collections::BTreeMap::from([
            (
                render::LABEL_MANAGED_BY.to_owned(),
                render::MANAGER.to_owned(),
            ),
            (
                render::LABEL_WORKER_GROUP.to_owned(),
                settings.windmill.worker_group.clone(),
            ),
            (LABEL_WARM_POOL.to_owned(), pool.name.clone()),
            (LABEL_WARM_OWNER.to_owned(), self.owner.clone()),
        ]);
        let pod = render::warm_pod(
            settings,
            &pool.pod,
            &name,
            labels.clone(),
            self.handover.url(),
        );
        self.limiter.acquire().await;
        let created = self.pods.create(&PostParams::default(), &pod).await?;
        let credential = handover::new_credential();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        self.handover
            .register(&name, &pool.name, &credential, &nonce);
        // The pod owns its Secret: deleting the pod removes it.
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: name.clone(),
                    uid: created.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(false),
                    block_owner_deletion: Some(false),
                }]),
                ..ObjectMeta::default()
            },
            data: Some(std::collections::BTreeMap::from([
                (
                    handover::CREDENTIAL_KEY.to_owned(),
                    ByteString(credential.into_bytes()),
                ),
                (
                    handover::CA_KEY.to_owned(),
                    ByteString(self.handover.ca_der.clone()),
                ),
                ("nonce".to_owned(), ByteString(nonce.into_bytes())),
            ])),
            type_: Some("Opaque".to_owned()),
            immutable: Some(true),
            ..Secret::default()
        };
        self.limiter.acquire().await;
        if let Err(error) = self.secrets.create(&PostParams::default(), &secret).await {
            self.delete(&name).await;
            return Err(error);
        }
        Ok(())
    }

    /// Each pool's waiting and starting pods.
    pub(super) fn states(&self) -> Vec<crate::worker::WarmPoolStatus> {
        self.list
            .iter()
            .map(|pool| {
                let (waiting, starting) = self.handover.counts(&pool.name);
                crate::worker::WarmPoolStatus {
                    pool: pool.name.clone(),
                    waiting,
                    starting,
                    size: pool.size,
                }
            })
            .collect()
    }

    /// Forgets a warm pod that is being deleted: its credential, and a job it never fetched.
    pub(super) fn forget(&self, pod: &str) {
        self.handover.forget(pod);
    }

    /// Deletes a warm pod (its Secret goes with it) and forgets it.
    pub(super) async fn delete(&self, pod: &str) {
        self.handover.forget(pod);
        self.limiter.acquire().await;
        match self.pods.delete(pod, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(error) => tracing::warn!(%error, pod, "deleting a warm pod failed"),
        }
    }

    /// Takes a waiting pod whose settings are exactly `pod`'s for a job of `tag` in `language`;
    /// else why the job takes the cold path.
    pub(super) fn take(
        &self,
        tag: &str,
        language: &str,
        pod: &PodSettings,
    ) -> Result<Taken, String> {
        let of_tag: Vec<&Pool> = self.list.iter().filter(|p| p.tag == tag).collect();
        if of_tag.is_empty() {
            return Err(format!("no warm pool serves tag `{tag}`"));
        }
        let mut why = Vec::new();
        for pool in of_tag {
            if let Some(pool_language) = &pool.language
                && pool_language != language
            {
                why.push(format!(
                    "pool `{}` is for {pool_language}, the job is {language}",
                    pool.name
                ));
                continue;
            }
            let differs = differences(pod, &pool.pod);
            if !differs.is_empty() {
                why.push(format!(
                    "the job's pod settings differ from pool `{}`: {}",
                    pool.name,
                    differs.join("; ")
                ));
                continue;
            }
            return self.handover.take(&pool.name).ok_or_else(|| {
                let (_, starting) = self.handover.counts(&pool.name);
                format!(
                    "pool `{}` has no waiting pod ({starting} starting, size {})",
                    pool.name, pool.size
                )
            });
        }
        Err(why.join("; "))
    }

    /// Records the job on a taken pod (its labels, and a deadline as the backstop of the job's
    /// timeout) and hands it the job. `Err`: the pod is gone, the job takes the cold path.
    pub(super) async fn assign(
        &self,
        taken: &Taken,
        labels: std::collections::BTreeMap<String, String>,
        deadline: Duration,
        payload: Payload,
    ) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "metadata": {"labels": labels},
            "spec": {"activeDeadlineSeconds": deadline.as_secs().max(1)},
        });
        self.limiter.acquire().await;
        if let Err(error) = self
            .pods
            .patch(&taken.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            self.handover.release(taken);
            return Err(error);
        }
        self.handover.assign(taken, payload);
        Ok(())
    }
}

fn owner_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(LABEL_WARM_OWNER)
        .map(String::as_str)
}

/// The settings of the pools, for `render`: which pool a job's pod matches, or why none does.
#[must_use]
pub fn path_for(settings: &Settings, tag: &str, language: &str, pod: &PodSettings) -> String {
    let mut why = Vec::new();
    for p in settings.warm_pools.iter().filter(|p| p.tag == tag) {
        if let Some(l) = &p.language
            && l != language
        {
            why.push(format!("pool `{}` is for {l}", p.name()));
            continue;
        }
        let Ok(pool) = crate::hints::resolve(
            &settings.hints(),
            &p.tag,
            p.language.as_deref().unwrap_or_default(),
            "",
            crate::hints::WindmillFields::default(),
        ) else {
            continue;
        };
        let differs = differences(pod, &pool);
        if differs.is_empty() {
            return format!(
                "warm: a waiting pod of pool `{}` takes it, with the code, args and environment below (the Job below is the cold path, taken when no pod waits)",
                p.name()
            );
        }
        why.push(format!(
            "differs from pool `{}`: {}",
            p.name(),
            differs.join("; ")
        ));
    }
    if why.is_empty() {
        return format!("cold: no warm pool serves tag `{tag}`");
    }
    format!("cold: {}", why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(code: &str, tag: &str) -> PodSettings {
        let config =
            crate::config::Config::from_yaml("", &std::collections::BTreeMap::new()).unwrap();
        crate::hints::resolve(
            &config.settings.hints(),
            tag,
            "python3",
            code,
            crate::hints::WindmillFields::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_job_without_hints_has_its_pools_shape_and_a_hint_names_the_difference() {
        let pool = resolved("", "k8s");
        assert!(differences(&resolved("def main(): pass\n", "k8s"), &pool).is_empty());
        let hinted = resolved("# k8s: memory=768Mi\ndef main(): pass\n", "k8s");
        let differs = differences(&hinted, &pool);
        assert_eq!(differs.len(), 1, "{differs:?}");
        assert!(differs[0].starts_with("memory "), "{differs:?}");
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("wk-k8s-host.example"), "wk-k8s-host.example");
        assert_eq!(label_value("-a b/c-"), "a-b-c");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }

    #[tokio::test]
    async fn a_credential_is_answered_once_and_only_for_its_pod() {
        let stop = CancellationToken::new();
        let handover = Handover::start("127.0.0.1:0", None, stop.clone())
            .await
            .unwrap();
        handover.register("pod-a", "pool", "cred-a", "n");
        // Another pod with this credential, and an unknown credential, are refused.
        assert!(
            matches!(answer(&handover, "cred-a", "pod-b"), Answer::Now(r) if r.status() == StatusCode::UNAUTHORIZED)
        );
        assert!(
            matches!(answer(&handover, "nope", "pod-a"), Answer::Now(r) if r.status() == StatusCode::UNAUTHORIZED)
        );
        assert!(matches!(
            answer(&handover, "cred-a", "pod-a"),
            Answer::Wait(_)
        ));
        let taken = handover.take("pool").unwrap();
        assert!(
            handover.take("pool").is_none(),
            "a reserved pod is not taken twice"
        );
        let payload = Payload {
            files: std::collections::BTreeMap::new(),
            args: "{}".into(),
            env: vec![],
        };
        handover.assign(&taken, payload);
        assert!(
            matches!(answer(&handover, "cred-a", "pod-a"), Answer::Now(r) if r.status() == StatusCode::OK)
        );
        assert!(taken.delivered.load(Ordering::Acquire));
        assert!(
            matches!(answer(&handover, "cred-a", "pod-a"), Answer::Now(r) if r.status() == StatusCode::GONE)
        );
        // A deleted pod's credential is forgotten with it.
        handover.forget("pod-a");
        assert!(
            matches!(answer(&handover, "cred-a", "pod-a"), Answer::Now(r) if r.status() == StatusCode::UNAUTHORIZED)
        );
        stop.cancel();
    }
}
