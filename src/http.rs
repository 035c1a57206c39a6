//! The worker's HTTP endpoint (`worker.http.listen`): `/healthz` (the process is alive),
//! `/readyz` (the database and the executor answer), `/metrics` (Prometheus), `/status` (JSON:
//! the worker, its jobs running now, the queue, the last failures) and `/` (the same as a small
//! read-only HTML page that refreshes itself; no script).

use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::queue::PgQueue;
use crate::worker::{WorkerProbe, WorkerStatus};

/// How long `/readyz`, `/metrics` and `/status` wait for the database or the API server.
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// What the endpoint answers from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The running worker.
    pub probe: WorkerProbe,
    /// Windmill's database, pinged by `/readyz`.
    pub queue: PgQueue,
    /// The executor, asked by `/readyz`.
    pub executor: Executor,
}

/// Jobs waiting on one tag.
#[derive(Debug, Clone, Serialize)]
pub struct Depth {
    /// The tag.
    pub tag: String,
    /// Claimable now.
    pub due: i64,
    /// Scheduled for later.
    pub later: i64,
}

/// `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Whether `/readyz` would answer 200.
    pub ready: bool,
    /// Why not, when not.
    pub problems: Vec<String>,
    /// Jobs queued on the worker's tags (empty when the database does not answer).
    pub queue: Vec<Depth>,
    /// The worker and its jobs.
    #[serde(flatten)]
    pub worker: WorkerStatus,
}

/// Serves the endpoint on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(endpoint);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

impl Endpoint {
    /// Why the worker is not ready (empty: ready); also sets `flext_ready`.
    async fn problems(&self) -> Vec<String> {
        let (database, executor) =
            tokio::join!(self.queue.ping(PROBE_LIMIT), self.executor.ready());
        let problems: Vec<String> = [database, executor]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        self.probe.metrics_handle().set_ready(problems.is_empty());
        problems
    }

    /// The queue on the worker's tags; also sets `flext_queue_depth`. Empty (and the gauges
    /// left as last read) when the database does not answer in time.
    async fn depth(&self) -> Vec<Depth> {
        let tags = self.probe.tags();
        match tokio::time::timeout(PROBE_LIMIT, self.queue.queue_depth(tags)).await {
            Ok(Ok(depth)) => {
                self.probe.metrics_handle().set_queue_depth(&depth);
                depth
                    .into_iter()
                    .map(|(tag, due, later)| Depth { tag, due, later })
                    .collect()
            }
            Ok(Err(error)) => {
                tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "reading the queue depth failed"
                );
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn status(&self) -> Status {
        let (problems, queue) = tokio::join!(self.problems(), self.depth());
        let mut worker = self.probe.status();
        if let crate::executor::Executor::Kubernetes(executor) = &self.executor {
            worker.clusters = executor.cluster_states();
        }
        Status {
            ready: problems.is_empty(),
            problems,
            queue,
            worker,
        }
    }
}

async fn readyz(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let problems = endpoint.problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    tokio::join!(endpoint.problems(), endpoint.depth());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoint.probe.metrics(),
    )
}

async fn status(State(endpoint): State<Endpoint>) -> Json<Status> {
    Json(endpoint.status().await)
}

async fn page(State(endpoint): State<Endpoint>) -> Html<String> {
    Html(render_page(&endpoint.status().await))
}

/// Text safe inside HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn human(seconds: f64) -> String {
    // Whole seconds are what a person on call reads.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The status page: what `/status` says, as tables.
#[must_use]
pub fn render_page(status: &Status) -> String {
    let w = &status.worker;
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>flext-kubernetes {worker}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}\
         .ok{{color:#186a3b}}.bad{{color:#a93226}}code{{font-size:.95em}}</style></head><body>\n\
         <h1>flext-kubernetes <code>{worker}</code></h1>\n",
        worker = escape(&w.worker)
    );
    let readiness = if status.ready {
        "<span class=\"ok\" id=\"ready\">ready</span>".to_owned()
    } else {
        format!(
            "<span class=\"bad\" id=\"ready\">not ready</span>: {}",
            escape(&status.problems.join("; "))
        )
    };
    let clusters: Vec<String> = w
        .clusters
        .iter()
        .map(|c| {
            let state = match (&c.not_ready_because, c.ready) {
                (_, true) => format!("ready, {} in flight", c.in_flight),
                (Some(why), false) => {
                    format!("<span class=\"bad\">not ready</span>: {}", escape(why))
                }
                (None, false) => "<span class=\"bad\">not ready</span>".to_owned(),
            };
            let mut warm = String::new();
            for p in &c.warm_pools {
                let _ = write!(
                    warm,
                    "; warm pool <code>{}</code>: {} of {} waiting, {} starting",
                    escape(&p.pool),
                    p.waiting,
                    p.size,
                    p.starting
                );
            }
            format!(
                "<span class=\"cluster\">{} (namespace {}; {state}{warm})</span>",
                escape(&c.name),
                escape(&c.namespace)
            )
        })
        .collect();
    let _ = writeln!(
        page,
        "<p>{readiness}. Group <code>{group}</code>, tags <code>{tags}</code>, clusters {clusters}; \
         {running} of {concurrency} slots busy; {handed} jobs handed back since start. \
         Also as <a href=\"/status\">JSON</a> and <a href=\"/metrics\">metrics</a>.</p>",
        group = escape(&w.group),
        tags = escape(&w.tags.join(", ")),
        clusters = clusters.join(", "),
        running = w.running.len(),
        concurrency = w.concurrency,
        handed = w.jobs_handed_back,
    );
    page.push_str("<h2>Running now</h2>\n");
    if w.running.is_empty() {
        page.push_str("<p id=\"running-none\">No job is running.</p>\n");
    } else {
        page.push_str(
            "<table id=\"running\"><tr><th>Windmill job</th><th>Path</th><th>Tag</th>\
             <th>Kubernetes Job</th><th>Phase</th><th>For</th></tr>\n",
        );
        for job in &w.running {
            let _ = writeln!(
                page,
                "<tr class=\"job\"><td><code>{id}</code><br>{ws}</td><td>{path}</td><td>{tag}</td>\
                 <td><code>{object}</code></td><td class=\"phase\">{phase}</td><td>{age}</td></tr>",
                id = job.id,
                ws = escape(&job.workspace),
                path = escape(job.path.as_deref().unwrap_or("(preview)")),
                tag = escape(&job.tag),
                object = match &job.cluster {
                    Some(cluster) => format!(
                        "{}</code> on <code class=\"cluster\">{}",
                        escape(job.kubernetes_job.as_deref().unwrap_or("not yet created")),
                        escape(cluster)
                    ),
                    None => escape(job.kubernetes_job.as_deref().unwrap_or("not yet created")),
                },
                phase = escape(&job.phase),
                age = human(job.for_seconds),
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>Queue</h2>\n");
    if status.queue.is_empty() {
        page.push_str("<p>The queue could not be read.</p>\n");
    } else {
        page.push_str(
            "<table id=\"queue\"><tr><th>Tag</th><th>Due now</th><th>Scheduled later</th></tr>\n",
        );
        for d in &status.queue {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.tag),
                d.due,
                d.later
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<h2>Last failures</h2>\n");
    if w.recent_failures.is_empty() {
        page.push_str("<p>No failure since start.</p>\n");
    } else {
        page.push_str(
            "<table id=\"failures\"><tr><th>When (UTC)</th><th>Windmill job</th><th>Path</th>\
             <th>Category</th><th>What happened, and the fix</th></tr>\n",
        );
        for f in &w.recent_failures {
            let _ = writeln!(
                page,
                "<tr><td>{at}</td><td><code>{id}</code></td><td>{path}</td><td>{category}<br>{name}</td><td>{hint}</td></tr>",
                at = f.at.format("%Y-%m-%d %H:%M:%S"),
                id = f.id,
                path = escape(f.path.as_deref().unwrap_or("(preview)")),
                category = escape(&f.category),
                name = escape(&f.name),
                hint = escape(&f.hint),
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_comes_from_windmill() {
        let status = Status {
            ready: false,
            problems: vec!["the database did not answer within 2s".into()],
            queue: vec![Depth {
                tag: "k8s".into(),
                due: 3,
                later: 1,
            }],
            worker: WorkerStatus {
                worker: "w<1>".into(),
                group: "k8s".into(),
                tags: vec!["k8s".into()],
                clusters: vec![crate::worker::ClusterStatus {
                    name: "default".into(),
                    namespace: "jobs".into(),
                    ready: true,
                    not_ready_because: None,
                    in_flight: 1,
                    warm_pools: vec![crate::worker::WarmPoolStatus {
                        pool: "k8s-python3".into(),
                        waiting: 2,
                        starting: 1,
                        size: 3,
                    }],
                }],
                concurrency: 4,
                jobs_handed_back: 7,
                running: vec![crate::worker::RunningStatus {
                    id: crate::domain::JobId::new_v4(),
                    workspace: "ws".into(),
                    path: Some("u/alice/<script>".into()),
                    tag: "k8s".into(),
                    kubernetes_job: None,
                    cluster: None,
                    phase: "pending: waiting for capacity".into(),
                    for_seconds: 75.0,
                }],
                recent_failures: Vec::new(),
            },
        };
        let page = render_page(&status);
        assert!(page.contains("u/alice/&lt;script&gt;"), "{page}");
        assert!(page.contains("w&lt;1&gt;"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("1m 15s"), "{page}");
        assert!(page.contains("not ready"), "{page}");
        assert!(
            page.contains("warm pool <code>k8s-python3</code>: 2 of 3 waiting, 1 starting"),
            "{page}"
        );
    }
}
