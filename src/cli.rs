//! The command line: `check` and `run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ExecutorKind, ProcessEnv};
use crate::domain::{LANGUAGES, LanguageInfo};
use crate::executor::{Executor, InProcessExecutor, KubernetesExecutor};
use crate::queue::{PgQueue, Queue, schema};
use crate::worker::Worker;

/// Runs Windmill jobs as Kubernetes Jobs.
#[derive(Debug, Parser)]
#[command(name = "flext-kubernetes", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config, connect to Windmill's database, check its schema and our role, and print
    /// the effective settings (secrets redacted).
    Check {
        /// The worker config (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the worker until SIGTERM/SIGINT (a second signal exits at once).
    Run {
        /// The worker config (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the pod settings a script would get (resources, image, scheduling, volumes,
    /// timeout), each with its source: default, profile, annotation, Windmill field or limit.
    Hints {
        /// The script file; its `k8s:` comment lines are read.
        file: PathBuf,
        /// The job's tag, which picks the profile (default: the first of `windmill.tags`).
        #[arg(long, short)]
        tag: Option<String>,
        /// The worker config (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Windmill's language (python3, bash, bun, deno, nativets, go, ...); default from the
        /// file extension.
        #[arg(long, short)]
        lang: Option<String>,
    },
    /// Print the Kubernetes objects (Secret, Job) a job would get, without creating
    /// anything: a queued job by id (needs `FLEXT_DATABASE_URL`), or a local script file.
    Render {
        /// A Windmill job id, or a script file (`.py`, `.sh`, `.ts`).
        target: String,
        /// Args for a script file, as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The tag for a script file (default: the first of `windmill.tags`).
        #[arg(long, short)]
        tag: Option<String>,
        /// The worker config (YAML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the Secret's values instead of their sizes.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Copy this binary into DIR (the init container that brings the runner into a job's pod).
    InstallRunner {
        /// Where to put `flext-kubernetes`.
        dir: PathBuf,
    },
    /// Run a job inside its pod (the first program of the main container; see `runner`).
    Runner {
        /// The job's code mount (the Secret's code keys).
        #[arg(long, default_value = "/flext/job")]
        job_dir: PathBuf,
        /// The job's args mount (the Secret's args keys).
        #[arg(long, default_value = "/flext/secret")]
        secret_dir: PathBuf,
        /// The working directory.
        #[arg(long, default_value = "/flext/work")]
        work_dir: PathBuf,
        /// The dependency cache.
        #[arg(long, default_value = "/flext/cache")]
        cache_dir: PathBuf,
        /// A warm pod: wait for the worker to hand over a job (its credential, the worker's CA
        /// and the nonce in the secret directory), write it into the job directory, run it.
        #[arg(long)]
        warm: bool,
    },
}

/// How `main` prints a failed command: the error and each of its causes once, joined by `: `.
/// Every error type adds only its own context and leaves its cause (`#[source]`) to this walk.
/// Each line of the result is an `error:` line of its own, so that a list of problems (the
/// `hints` command's) reads as a compiler's.
#[must_use]
pub fn report(error: &anyhow::Error) -> String {
    let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut report = String::new();
    for line in chain.join(": ").lines() {
        report.push_str("error: ");
        report.push_str(line);
        report.push('\n');
    }
    report
}

/// Loads the config for a command, with the file named in errors.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path, &ProcessEnv).with_context(|| match path {
        Some(p) => format!("config {}", p.display()),
        None => "config (no file; defaults and environment)".to_owned(),
    })
}

/// Connects and runs the startup checks: unreachable database, wrong schema, weak role.
pub async fn connect_checked(config: &Config) -> anyhow::Result<PgQueue> {
    let url = config.require_database_url()?;
    let db = &config.settings.database;
    let queue = PgQueue::connect(url, db.max_connections, db.connect_timeout.0).await?;
    schema::check_schema(queue.pool()).await?;
    schema::check_role(queue.pool()).await?;
    Ok(queue)
}

async fn executor_for(config: &Config) -> anyhow::Result<Executor> {
    match config.settings.executor.kind {
        // The echo takes what the Kubernetes executor would, so a smoke test claims the same jobs.
        ExecutorKind::Echo => Ok(Executor::InProcess(InProcessExecutor::echo(
            &LanguageInfo::runnable().collect::<Vec<_>>(),
        ))),
        ExecutorKind::Kubernetes => {
            let executor = KubernetesExecutor::connect(std::sync::Arc::new(config.clone()))
                .await
                .context("the Kubernetes executor cannot start")?;
            Ok(Executor::Kubernetes(executor))
        }
    }
}

/// `check`.
pub async fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path.as_deref())?;
    print!("{}", config.to_redacted_yaml());
    let queue = connect_checked(&config).await?;
    let queued = queue.queued_count(&config.settings.windmill.tags).await?;
    println!("# database: reachable, Windmill schema OK, role may claim and hand back jobs");
    println!(
        "# would run as worker `{}` in group `{}`",
        config.worker_name(),
        config.settings.windmill.worker_group
    );
    println!(
        "# would claim tags {:?} ({queued} job(s) waiting now), hand back on tag `{}`",
        config.settings.windmill.tags, config.settings.windmill.finalize_tag
    );
    check_plugins(&config)?;
    // `run` would refuse to start without the executor: so does `check`, after the rest.
    let executor = executor_for(&config).await;
    match &executor {
        Ok(Executor::Kubernetes(executor)) => {
            let mut unreachable = Vec::new();
            for cluster in executor.cluster_states() {
                match &cluster.not_ready_because {
                    None => println!(
                        "# cluster `{}`: reachable, namespace `{}` exists, every permission the worker needs is granted",
                        cluster.name, cluster.namespace
                    ),
                    Some(why) => {
                        println!(
                            "# cluster `{}`: NOT reachable: {why}; `run` starts without it and connects it when it answers",
                            cluster.name
                        );
                        unreachable.push(cluster.name);
                    }
                }
            }
            if !unreachable.is_empty() {
                anyhow::bail!(
                    "cluster(s) {} cannot be reached now: check their kubeconfig or context, the network, and their API servers",
                    unreachable.join(", ")
                );
            }
        }
        Ok(executor) => println!("# executor: {executor:?}"),
        Err(_) => println!("# executor: cannot start (below)"),
    }
    if config.windmill_url.is_some() && config.windmill_token.is_some() {
        println!(
            "# job tokens (WM_TOKEN): impersonation of the job's user through Windmill's API: the user's permissions \
             now, not the job_perms snapshot a native worker's token carries; jobs run as a group (g/...) get none"
        );
    } else {
        println!(
            "# job tokens (WM_TOKEN): none; set FLEXT_WINDMILL_URL and FLEXT_WINDMILL_TOKEN for them and for $var:/$res: args"
        );
    }
    executor.map(drop)
}

/// Loads every plugin and runs the chain once on a sample job (a Python preview on the first tag):
/// a plugin that fails there (`policy_error`) fails `check`; a denial of the sample is reported.
fn check_plugins(config: &Config) -> anyhow::Result<()> {
    let settings = &config.settings;
    let Some(plugins) = crate::plugins::Plugins::load(&settings.plugins, &settings.limits)? else {
        return Ok(());
    };
    let tag = &settings.windmill.tags[0];
    let code = "def main():\n    return 1\n";
    let job = crate::domain::Job::local(
        std::path::Path::new("sample.py"),
        code.to_owned(),
        "python3",
        serde_json::json!({}),
        tag,
    );
    let pod = crate::executor::kubernetes::pod_settings(config, &job)
        .map_err(|f| anyhow::anyhow!("{}: {}", f.name, f.message))?;
    println!("# policy plugins: {} loaded", plugins.names().join(", "));
    match policy_verdict(&plugins, config, &job, &pod) {
        Ok(lines) => {
            println!("# policy plugins on a sample job (Python, tag `{tag}`): allowed");
            for line in lines {
                println!("#   {line}");
            }
        }
        Err(failure) if failure.category == crate::domain::FailureCategory::PolicyDenied => {
            println!(
                "# policy plugins on a sample job (Python, tag `{tag}`): denied: {}",
                failure.message
            );
        }
        Err(failure) => anyhow::bail!("{}: {}", failure.name, failure.message),
    }
    Ok(())
}

/// `run`.
pub async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path.as_deref())?;
    crate::telemetry::init(&config.settings.telemetry);
    let queue = connect_checked(&config).await?;
    let executor = executor_for(&config).await?;
    let http = config.settings.worker.http.address()?;
    let listener = match http {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await.with_context(|| {
            format!("worker.http.listen: cannot listen on {address}; choose a free port, or null to turn it off")
        })?),
        None => None,
    };
    let ping = queue.clone();
    let handle = Worker::new(config, Queue::Postgres(queue), executor.clone()).spawn();
    let http_stop = tokio_util::sync::CancellationToken::new();
    if let Some(listener) = listener {
        tracing::info!(address = %listener.local_addr()?, "HTTP endpoint: / (status page) /status /healthz /readyz /metrics");
        let endpoint = crate::http::Endpoint {
            probe: handle.probe(),
            queue: ping,
            executor,
        };
        tokio::spawn(crate::http::serve(listener, endpoint, http_stop.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(
        "signal received: no new claims; running jobs get the shutdown grace (signal again to leave them now)"
    );
    handle.stop();
    let control = handle.control();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("second signal: leaving running jobs to the next worker");
        control.abandon();
    });
    handle.wait().await;
    http_stop.cancel();
    Ok(())
}

/// The Windmill language of a script file, from its extension.
fn language_of(file: &std::path::Path) -> Option<&'static str> {
    LanguageInfo::of_extension(file.extension()?.to_str()?).map(|l| l.name)
}

/// `hints`: resolves a script's pod settings as the executor would, and prints them with their
/// sources. A rejected hint is an error (non-zero exit) with the message Windmill would show.
pub fn hints(
    file: &std::path::Path,
    tag: Option<&str>,
    config: Option<&std::path::Path>,
    lang: Option<&str>,
) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let settings = &config.settings;
    let code = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let language = match lang {
        Some(lang) => lang,
        None => language_of(file).with_context(|| {
            format!(
                "cannot tell the language of {} from its extension; pass --lang {}",
                file.display(),
                LANGUAGES
                    .iter()
                    .map(|l| l.name)
                    .collect::<Vec<_>>()
                    .join("|")
            )
        })?,
    };
    let tag = tag
        .or_else(|| settings.windmill.tags.first().map(String::as_str))
        .unwrap_or_default();
    let pod = crate::hints::resolve_bytes(
        &settings.hints(),
        tag,
        language,
        &code,
        crate::hints::WindmillFields::default(),
    )
    .map_err(|problems| {
        // One line per problem, each naming the file, as a compiler lists its errors.
        let lines: Vec<String> = problems
            .as_slice()
            .iter()
            .map(|problem| format!("{}: {problem}", file.display()))
            .collect();
        anyhow::anyhow!(lines.join("\n"))
    })?;
    let profile = if settings.profiles.contains_key(tag) {
        format!("profile `{tag}`")
    } else {
        "no profile".to_owned()
    };
    let claimed = if settings.windmill.tags.iter().any(|t| t == tag) {
        ""
    } else {
        " (not a tag this worker claims)"
    };
    println!(
        "# {} as {language}, tag `{tag}`{claimed}: {profile}",
        file.display()
    );
    print!("{pod}");
    if settings.clusters().len() > 1 || pod.cluster.is_some() {
        match crate::executor::kubernetes::clusters::placement(settings, tag, &pod) {
            Ok(placement) => println!("# runs on {}", placement.describe()),
            Err(failure) => {
                anyhow::bail!("{}: {}: {}", file.display(), failure.name, failure.message)
            }
        }
    }
    if let Some(plugins) = crate::plugins::Plugins::load(&settings.plugins, &settings.limits)? {
        let job = crate::domain::Job::local(
            file,
            String::from_utf8_lossy(&code).into_owned(),
            language,
            serde_json::json!({}),
            tag,
        );
        match policy_verdict(&plugins, &config, &job, &pod) {
            Ok(lines) => {
                println!("# policy plugins ({}): allowed", plugins.names().join(", "));
                for line in lines {
                    println!("#   {line}");
                }
            }
            Err(failure) => anyhow::bail!(
                "{}: {} ({}): {}",
                file.display(),
                failure.name,
                failure.category,
                failure.message
            ),
        }
    }
    Ok(())
}

/// What the plugins decide about `job` with `pod`, on its rendered first attempt: the log lines of
/// their changes, or the job's failure.
fn policy_verdict(
    plugins: &crate::plugins::Plugins,
    config: &Config,
    job: &crate::domain::Job,
    pod: &crate::hints::PodSettings,
) -> Result<Vec<String>, crate::domain::JobFailure> {
    crate::executor::kubernetes::render::decide_first_attempt(plugins, &config.settings, job, pod)
        .0
        .map(|applied| applied.log_lines())
}

/// `install-runner`: copies this executable into `dir` (no shell or `cp` needed in the image).
pub fn install_runner(dir: &std::path::Path) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("finding this executable")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join("flext-kubernetes");
    std::fs::copy(&me, &target)
        .with_context(|| format!("copying {} to {}", me.display(), target.display()))?;
    let mut permissions = std::fs::metadata(&target)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&target, permissions)?;
    Ok(())
}

/// `render`.
pub async fn render(
    target: &str,
    args: &str,
    tag: Option<&str>,
    config_path: Option<&std::path::Path>,
    show_secrets: bool,
) -> anyhow::Result<()> {
    use crate::executor::kubernetes::{self, render};
    let config = load_config(config_path)?;
    let job = if let Ok(id) = target.parse::<uuid::Uuid>() {
        let queue = connect_checked(&config).await?;
        queue
            .load(crate::domain::JobId(id))
            .await?
            .with_context(|| format!("no job {id} in Windmill's queue"))?
    } else {
        let path = std::path::Path::new(target);
        let code =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let language = language_of(path).with_context(|| {
            format!(
                "cannot tell the language of {}: use a .py, .sh or .ts file",
                path.display()
            )
        })?;
        let args: serde_json::Value = serde_json::from_str(args)
            .context("--args must be a JSON object, e.g. '{\"x\": 1}'")?;
        crate::domain::Job::local(
            path,
            code,
            language,
            args,
            tag.unwrap_or(&config.settings.windmill.tags[0]),
        )
    };
    let pod = kubernetes::pod_settings(&config, &job)
        .map_err(|f| anyhow::anyhow!("{}: {}", f.name, f.message))?;
    let api_configured = config.windmill_url.is_some() && config.windmill_token.is_some();
    let args = crate::windmill_api::unresolved_args(&job, api_configured)
        .map_err(|f| anyhow::anyhow!("{}: {}", f.name, f.message))?;
    let (cluster, placement) = kubernetes::clusters::first_choice(&config.settings, &job.tag, &pod)
        .map_err(|f| anyhow::anyhow!("{}: {}", f.name, f.message))?;
    if config.settings.clusters().len() > 1 || pod.cluster.is_some() {
        println!("# runs on {}", placement.describe());
    }
    if !config.settings.warm_pools.is_empty() {
        let language = job.language.as_ref().map_or("", |l| l.as_str());
        println!(
            "# start: {}",
            kubernetes::warm::path_for(&config.settings, &job.tag, language, &pod)
        );
    }
    let cx = render::Context {
        settings: &config.settings,
        namespace: &cluster.namespace,
        pod: &pod,
        attempt: 1,
        nonce: "<nonce: random per attempt>",
        args: &args,
        token: None,
        base_url: config.windmill_url.as_deref(),
    };
    let mut objects = render::render(&job, &cx);
    let plugins = crate::plugins::Plugins::load(&config.settings.plugins, &config.settings.limits)?;
    if let Some(plugins) = &plugins {
        // What the plugins did goes first, as comments: the YAML stays what would be created.
        match render::apply_plugins(plugins, &job, &pod, 1, &mut objects).await {
            Ok(applied) => {
                println!("# policy plugins, in order: {}", plugins.names().join(", "));
                if applied.changes.is_empty() && applied.notes.is_empty() {
                    println!("# no plugin changed the Job");
                }
                for line in applied.log_lines() {
                    println!("# {line}");
                }
            }
            Err(failure) => anyhow::bail!(
                "{} ({}): {}; nothing would be created",
                failure.name,
                failure.category,
                failure.message
            ),
        }
    }
    // Shown as stringData, readable; values hidden unless asked for.
    if let Some(data) = objects.secret.data.take() {
        let shown = data
            .into_iter()
            .map(|(key, value)| {
                let text = if show_secrets {
                    String::from_utf8_lossy(&value.0).into_owned()
                } else {
                    format!("<{} bytes; --show-secrets to print>", value.0.len())
                };
                (key, text)
            })
            .collect();
        objects.secret.string_data = Some(shown);
    }
    print!("{}", render::to_yaml(&objects)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_shows_each_cause_once_and_each_problem_on_its_own_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let error = anyhow::Error::new(io)
            .context("cannot read config file x.yaml")
            .context("config x.yaml");
        assert_eq!(
            super::report(&error),
            "error: config x.yaml: cannot read config file x.yaml: No such file or directory\n"
        );
        let problems = anyhow::anyhow!("a.py: line 1: one\na.py: line 2: two");
        assert_eq!(
            super::report(&problems),
            "error: a.py: line 1: one\nerror: a.py: line 2: two\n"
        );
    }
}
