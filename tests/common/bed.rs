//! One end-to-end test's world on the Kubernetes test bed: its own database, namespace, worker
//! (the Kubernetes executor, in process) and stock-worker double.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flext_kubernetes::config::Config;
use flext_kubernetes::executor::{Executor, KubernetesExecutor};
use flext_kubernetes::worker::WorkerHandle;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::TestDb;
use super::stock::StockWorker;

/// How long an end-to-end step may take.
pub const LIMIT: Duration = Duration::from_secs(90);

/// One test's world: its own database, namespace, worker and stock-worker double.
pub struct Bed {
    pub db: TestDb,
    pub client: Client,
    pub namespace: String,
    pub worker: Option<WorkerHandle>,
    /// The running worker's executor (for its HTTP endpoint).
    pub executor: Option<Executor>,
    pub stock_stop: CancellationToken,
}

/// What to do when there is no bed, or not the bed.
const HOW: &str = "run the tests with scripts/test, or start the test bed first: \
                   scripts/testbed up && eval \"$(scripts/testbed env)\"";

/// Whether `kubeconfig` (`KUBECONFIG`) is the kubeconfig of the bed in `bed_dir`
/// (`FLEXT_TESTBED_DIR`); the error says what is wrong and what to do.
pub fn check_is_the_bed(kubeconfig: Option<&OsStr>, bed_dir: Option<&OsStr>) -> Result<(), String> {
    let kubeconfig = kubeconfig.ok_or_else(|| format!("KUBECONFIG is not set: {HOW}"))?;
    let dir = bed_dir.ok_or_else(|| format!("FLEXT_TESTBED_DIR is not set: {HOW}"))?;
    let beds = Path::new(dir).join("kubeconfig");
    if Path::new(kubeconfig) == beds {
        Ok(())
    } else {
        Err(format!(
            "KUBECONFIG is {}, not the test bed's ({}): {HOW}",
            Path::new(kubeconfig).display(),
            beds.display()
        ))
    }
}

/// The one way tests get a client for the bed. Refuses (panics, with instructions) when there is
/// no bed, and when `KUBECONFIG` is not the bed's: the tests create and delete namespaces, which
/// must never happen on a cluster someone else uses.
pub async fn client() -> Client {
    let kubeconfig = std::env::var_os("KUBECONFIG");
    let dir = std::env::var_os("FLEXT_TESTBED_DIR");
    if let Err(refused) = check_is_the_bed(kubeconfig.as_deref(), dir.as_deref()) {
        panic!("{refused}");
    }
    let client = Client::try_default()
        .await
        .unwrap_or_else(|e| panic!("cannot build a client from KUBECONFIG ({e}): {HOW}"));
    if let Err(e) = client.apiserver_version().await {
        panic!("the test bed's apiserver is not reachable ({e}): {HOW}");
    }
    client
}

/// A client from a kubeconfig file (another identity on the bed, or a second bed): callers make
/// sure the file is a bed's.
#[allow(dead_code)] // not every test binary uses it
pub async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

/// Settings every test worker gets, as `FLEXT__` overrides.
pub fn bed_settings(namespace: &str) -> Vec<(String, String)> {
    [
        ("FLEXT__CLUSTER__NAMESPACE", namespace),
        ("FLEXT__JOB_TEMPLATE__IMAGE", "flext-kubernetes:dev"),
        ("FLEXT__RESOURCES__DEFAULT_CPU", "10m"),
        ("FLEXT__RESOURCES__DEFAULT_MEMORY", "128Mi"),
        ("FLEXT__RESOURCES__DEFAULT_STORAGE", "1Gi"),
        ("FLEXT__EXECUTOR__IMAGE_PULL_GRACE", "3s"),
        // Tests share two small nodes: waiting for capacity is normal, not a failure.
        ("FLEXT__EXECUTOR__PENDING_BUDGET", "10m"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// A test worker's config on the bed: [`bed_settings`] for `namespace`, then `extra`.
pub fn bed_config(namespace: &str, extra: &[(&str, &str)]) -> Config {
    let base = bed_settings(namespace);
    let mut settings: Vec<(&str, &str)> =
        base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    settings.extend_from_slice(extra);
    super::config(&settings)
}

impl Bed {
    pub async fn new(extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let client = client().await;
        let namespace = format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        let stock_stop = CancellationToken::new();
        StockWorker::new(&db.pool).spawn(stock_stop.clone());
        let mut bed = Self {
            db,
            client,
            namespace,
            worker: None,
            executor: None,
            stock_stop,
        };
        let config = bed_config(&bed.namespace, extra);
        bed.start_worker(config).await;
        bed
    }

    /// Starts the worker (the Kubernetes executor, in process) with `config`, in place of the one
    /// running, which is shut down first.
    pub async fn start_worker(&mut self, config: Config) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
        let executor = KubernetesExecutor::connect(Arc::new(config.clone()))
            .await
            .expect("the executor connects to the bed");
        let executor = Executor::Kubernetes(executor);
        self.executor = Some(executor.clone());
        self.worker = Some(super::start_worker(&self.db.pool, config, executor));
    }

    /// Serves the running worker's HTTP endpoint (as `run` does) on a free loopback port, until
    /// `stop`; returns the port.
    pub async fn serve_http(&self, stop: CancellationToken) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let endpoint = flext_kubernetes::http::Endpoint {
            probe: self.worker.as_ref().expect("a worker runs").probe(),
            queue: self.db.queue(),
            executor: self.executor.clone().expect("a worker runs"),
        };
        tokio::spawn(flext_kubernetes::http::serve(listener, endpoint, stop));
        port
    }

    pub fn jobs(&self) -> Api<KubeJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub async fn pods_of(&self, id: flext_kubernetes::domain::JobId) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(&format!("flext.dev/job-id={id}")))
            .await
            .unwrap()
            .items
    }

    /// Waits for the job to complete in Windmill (and its fix-up when `fixed` holds).
    pub async fn outcome(&self, id: flext_kubernetes::domain::JobId) -> super::Completed {
        super::handed_back(&self.db, id, LIMIT).await
    }

    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await;
        }
        self.stock_stop.cancel();
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}
