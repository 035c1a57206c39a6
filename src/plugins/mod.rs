//! Policy plugins: WebAssembly components (the `flext:policy` world in `wit/policy.wit`) that see a
//! claimed job's Windmill context, its resolved hints and its rendered Job, and allow it, refuse
//! it (`policy_denied`) or patch the Job, in config order, each seeing the previous one's result.
//!
//! The sandbox (after kubewarden's policy-server): one [`wasmtime::Engine`]; each plugin compiled
//! once at load and pre-linked ([`PolicyPre`]); a fresh [`Store`] per call, with an epoch deadline
//! (`timeout`), a memory cap through a [`ResourceLimiter`] (`memory`) and a cap on what it
//! returns (`max_output`). WASI is linked because components built for `wasm32-wasip2` import it,
//! but with nothing behind it: no preopened directory, no environment, no arguments, no socket,
//! stdout and stderr discarded, and clocks frozen at the epoch unless `clock: true`.
//!
//! Precompiled code is not cached on disk: loading it back (`Component::deserialize`) is
//! `unsafe`, which this crate forbids; compiling takes a moment once per plugin at start.
//!
//! A patch is applied as a JSON merge patch and the result checked again ([`baseline`]); a trap,
//! a timeout, an oversized or invalid output, or a patch that breaks the baseline fails the job
//! as `policy_error` naming the plugin — unless the plugin is `on_error: allow`, when its
//! decision is skipped with a line in the job log. The worker never stops for a plugin.

pub mod baseline;
pub mod merge;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use self::baseline::Rule;
use crate::domain::{FailureCategory, JobFailure};
use crate::hints::Limits;
use crate::units::{ByteSize, HumanDuration};

wasmtime::component::bindgen!({
    path: "wit/policy.wit",
    world: "policy",
});

/// How often the engine's epoch advances: the granularity of the per-call deadline.
const TICK: Duration = Duration::from_millis(2);

/// What to do when a plugin fails (traps, times out, returns what cannot be used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The job fails as `policy_error`.
    #[default]
    Deny,
    /// The plugin's decision is skipped (logged in the job log); the job goes on.
    Allow,
}

/// One entry of `plugins:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Its name, in messages and in `lift:` decisions (`[a-z0-9-]`).
    pub name: String,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// Its SHA-256 (hex); checked at load when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `deny` (default) or `allow`.
    #[serde(default)]
    pub on_error: OnError,
    /// How long one call may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How much memory one call may use.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// The most a call may return (a denial's reason, or a patch).
    #[serde(default = "default_max_output")]
    pub max_output: ByteSize,
    /// Handed to the plugin (as JSON) with every call.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Baseline rules this plugin's patches may break ([`Rule`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lift: Vec<Rule>,
    /// Give the plugin the real clocks (frozen at the epoch otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock: bool,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}
fn default_memory() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_output() -> ByteSize {
    ByteSize(1 << 20)
}
fn empty_object() -> Value {
    json!({})
}

impl PluginSettings {
    /// Checks one entry; `at` is its place (`runtime.config.plugins[0]`).
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let bad = |field: &str, why: String| Err((format!("{at}.{field}"), why));
        if self.name.is_empty()
            || self.name.len() > 63
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(
                "name",
                format!(
                    "`{}` must be 1 to 63 characters of a-z, 0-9 and -",
                    self.name
                ),
            );
        }
        if let Some(sum) = &self.sha256
            && (sum.len() != 64 || !sum.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return bad(
                "sha256",
                format!("`{sum}` is not a SHA-256 in hex (64 characters)"),
            );
        }
        if self.timeout.0 < Duration::from_millis(1) || self.timeout.0 > Duration::from_secs(10) {
            return bad("timeout", format!("{} is outside 1ms..10s", self.timeout));
        }
        if self.memory.0 < (1 << 20) || self.memory.0 > (4 << 30) {
            return bad("memory", format!("{} is outside 1MiB..4GiB", self.memory));
        }
        if self.max_output.0 < 1024 || self.max_output.0 > self.memory.0 {
            return bad(
                "max_output",
                format!("{} is outside 1KiB..memory", self.max_output),
            );
        }
        Ok(())
    }
}

/// A plugin that cannot be used: refused at start, by `check` and `run`.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{name}` ({path}): {problem}")]
pub struct LoadError {
    name: String,
    path: String,
    problem: String,
}

/// The state of one call.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps each linear memory at `max` bytes and remembers that a growth was refused.
struct MemoryCap {
    max: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Clocks frozen at the Unix epoch: a plugin without `clock: true` cannot tell the time.
struct Frozen;

impl wasmtime_wasi::HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

struct Loaded {
    settings: PluginSettings,
    config: String,
    pre: PolicyPre<State>,
}

/// Advances the engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("flext-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the plugins' epoch thread");
        Self { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Inner {
    engine: Engine,
    plugins: Vec<Loaded>,
    limits: Limits,
    metrics: Option<crate::metrics::KubeMetrics>,
    _ticker: Ticker,
}

/// The loaded plugins, in config order; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.inner.plugins.iter().map(|p| &p.settings.name))
            .finish()
    }
}

/// One plugin's change to a job's Job.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The plugin.
    pub plugin: String,
    /// Its merge patch.
    pub patch: Value,
}

/// What the plugins made of one job.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// Lines for the job log (a plugin skipped with `on_error: allow`).
    pub notes: Vec<String>,
    /// How long each plugin took, in order.
    pub took: Vec<(String, Duration)>,
}

impl Applied {
    /// What the job log says: each change, then each skipped plugin.
    #[must_use]
    pub fn log_lines(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|c| {
                format!(
                    "the policy plugin `{}` changed the Job: {}",
                    c.plugin, c.patch
                )
            })
            .chain(self.notes.iter().cloned())
            .collect()
    }
}

/// How one call went wrong.
enum CallError {
    Timeout(Duration),
    Memory(ByteSize),
    Trap(String),
    Output(String),
    Reported(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(limit) => write!(
                f,
                "did not decide within its timeout of {}",
                HumanDuration(*limit)
            ),
            Self::Memory(cap) => write!(f, "needed more than its memory of {cap}"),
            Self::Trap(message) => write!(f, "trapped: {message}"),
            Self::Output(message) => write!(f, "returned an unusable decision: {message}"),
            Self::Reported(message) => write!(f, "reported an error: {message}"),
        }
    }
}

impl Plugins {
    /// Loads every plugin of `settings` (compiles, checks the checksum and the interface), or
    /// `None` when there are none. Patched Jobs are checked against `limits`.
    pub fn load(settings: &[PluginSettings], limits: &Limits) -> Result<Option<Self>, LoadError> {
        if settings.is_empty() {
            return Ok(None);
        }
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| LoadError {
            name: settings[0].name.clone(),
            path: settings[0].path.display().to_string(),
            problem: format!("the WebAssembly engine does not start: {e}"),
        })?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| LoadError {
            name: settings[0].name.clone(),
            path: settings[0].path.display().to_string(),
            problem: format!("linking WASI: {e}"),
        })?;
        // Each distinct file is compiled once, whoever names it.
        let mut compiled: HashMap<String, Component> = HashMap::new();
        let mut plugins = Vec::with_capacity(settings.len());
        for plugin in settings {
            let fail = |problem: String| LoadError {
                name: plugin.name.clone(),
                path: plugin.path.display().to_string(),
                problem,
            };
            let bytes = std::fs::read(&plugin.path)
                .map_err(|e| fail(format!("cannot read the file: {e}")))?;
            let sum = hex(&Sha256::digest(&bytes));
            if let Some(expected) = &plugin.sha256
                && !expected.eq_ignore_ascii_case(&sum)
            {
                return Err(fail(format!(
                    "its SHA-256 is {sum}, not the configured {expected}: the file changed, or the checksum is stale"
                )));
            }
            let component = if let Some(component) = compiled.get(&sum) {
                component.clone()
            } else {
                let component = Component::new(&engine, &bytes).map_err(|e| {
                    fail(format!(
                        "not a WebAssembly component (build it for wasm32-wasip2, see docs/plugins.md): {e:#}"
                    ))
                })?;
                compiled.insert(sum, component.clone());
                component
            };
            let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
                fail(format!(
                    "imports what the worker does not provide (only WASI and nothing else): {e:#}"
                ))
            })?;
            let pre = PolicyPre::new(instance_pre).map_err(|e| {
                fail(format!(
                    "does not implement the flext:policy world of wit/policy.wit (export `decide`): {e:#}"
                ))
            })?;
            plugins.push(Loaded {
                config: plugin.config.to_string(),
                settings: plugin.clone(),
                pre,
            });
        }
        Ok(Some(Self {
            inner: Arc::new(Inner {
                _ticker: Ticker::start(&engine),
                engine,
                plugins,
                limits: limits.clone(),
                metrics: None,
            }),
        }))
    }

    /// The same plugins, counting their decisions and call times into `metrics`
    /// (`flext_policy_decisions_total`, `flext_policy_call_seconds`). Call before sharing them.
    #[must_use]
    pub fn counting(mut self, metrics: crate::metrics::KubeMetrics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = Some(metrics);
        }
        self
    }

    fn count(&self, plugin: &str, decision: &str, took: Duration) {
        if let Some(metrics) = &self.inner.metrics {
            metrics.policy_decision(plugin, decision, took);
        }
    }

    /// The plugins' names, in order.
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.inner
            .plugins
            .iter()
            .map(|p| p.settings.name.clone())
            .collect()
    }

    /// Runs every plugin on `job` (the rendered `batch/v1` Job as JSON, patched in place),
    /// handing each `context` (the job's Windmill context, hints and other objects) with the
    /// Job as it stands. A denial, or a failure of an `on_error: deny` plugin, is the job's
    /// failure. `gpu_resource` names the job's GPUs for the admin limits. Blocking (CPU-bound,
    /// within each plugin's timeout): call from a blocking thread.
    pub fn apply(
        &self,
        context: &Value,
        job: &mut Value,
        gpu_resource: &str,
    ) -> Result<Applied, JobFailure> {
        let mut applied = Applied::default();
        for plugin in &self.inner.plugins {
            let name = &plugin.settings.name;
            let mut input = context.clone();
            input["plugin"] = json!(name);
            input["objects"]["job"] = job.clone();
            let started = Instant::now();
            let decision = self.call(plugin, &input.to_string());
            let took = started.elapsed();
            applied.took.push((name.clone(), took));
            let problem = match decision {
                Ok(Decision::Allow) => {
                    self.count(name, "allow", took);
                    continue;
                }
                Ok(Decision::Deny(reason)) => {
                    self.count(name, "deny", took);
                    return Err(JobFailure::new(
                        FailureCategory::PolicyDenied,
                        "PolicyDenied",
                        format!("the policy plugin `{name}` refused this job: {reason}"),
                    ));
                }
                Ok(Decision::Patch(text)) => match self.patched(plugin, job, &text, gpu_resource) {
                    Ok(patch) => {
                        self.count(name, "patch", took);
                        applied.changes.push(Change {
                            plugin: name.clone(),
                            patch,
                        });
                        continue;
                    }
                    Err(problem) => problem,
                },
                Err(error) => error.to_string(),
            };
            match plugin.settings.on_error {
                OnError::Deny => {
                    self.count(name, "error", took);
                    return Err(JobFailure::new(
                        FailureCategory::PolicyError,
                        "PolicyError",
                        format!(
                            "the policy plugin `{name}` {problem}; fix the plugin or its config, or set `on_error: allow` \
                             for it to run jobs without its decision"
                        ),
                    ));
                }
                OnError::Allow => {
                    self.count(name, "skipped", took);
                    tracing::warn!(plugin = %name, %problem, "policy plugin failed; on_error: allow skips its decision");
                    applied.notes.push(format!(
                        "the policy plugin `{name}` {problem}; its decision is skipped (on_error: allow)"
                    ));
                }
            }
        }
        Ok(applied)
    }

    /// Applies a plugin's patch text to `job` once the result passes the baseline; the patch,
    /// or what is wrong with it (and `job` untouched).
    fn patched(
        &self,
        plugin: &Loaded,
        job: &mut Value,
        text: &str,
        gpu_resource: &str,
    ) -> Result<Value, String> {
        let patch: Value = serde_json::from_str(text)
            .map_err(|e| format!("returned a patch that is not JSON ({e})"))?;
        if !patch.is_object() {
            return Err(
                "returned a patch that is not a JSON object (a merge patch of the Job)".into(),
            );
        }
        let mut after = job.clone();
        merge::merge(&mut after, &patch);
        let broken: Vec<String> = baseline::check(job, &after, &self.inner.limits, gpu_resource)
            .into_iter()
            .filter(|v| {
                v.rule
                    .is_none_or(|rule| !plugin.settings.lift.contains(&rule))
            })
            .map(|v| match v.rule {
                Some(rule) => format!(
                    "{} (baseline `{rule}`; lift it for this plugin with `lift: [{rule}]`)",
                    v.what
                ),
                None => format!("{} (the worker's own, never changeable)", v.what),
            })
            .collect();
        if !broken.is_empty() {
            return Err(format!("patched what it may not: {}", broken.join("; ")));
        }
        if let Err(e) = serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(after.clone()) {
            return Err(format!(
                "patched the Job into something that is not a batch/v1 Job ({e})"
            ));
        }
        *job = after;
        Ok(patch)
    }

    /// One call in a fresh sandbox.
    fn call(&self, plugin: &Loaded, input: &str) -> Result<Decision, CallError> {
        let settings = &plugin.settings;
        let mut wasi = WasiCtxBuilder::new();
        if !settings.clock {
            wasi.wall_clock(Frozen).monotonic_clock(Frozen);
        }
        let state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryCap {
                max: usize::try_from(settings.memory.0).unwrap_or(usize::MAX),
                hit: false,
            },
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        let ticks = settings.timeout.0.as_nanos().div_ceil(TICK.as_nanos()) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        let result = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|policy| policy.call_decide(&mut store, &plugin.config, input));
        let decision = match result {
            Ok(Ok(decision)) => decision,
            Ok(Err(message)) => return Err(CallError::Reported(cap_text(&message, 2000))),
            Err(error) => {
                return Err(if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    CallError::Timeout(settings.timeout.0)
                } else if store.data().limiter.hit {
                    CallError::Memory(settings.memory)
                } else {
                    CallError::Trap(cap_text(&format!("{error:#}"), 2000))
                });
            }
        };
        let size = match &decision {
            Decision::Allow => 0,
            Decision::Deny(text) | Decision::Patch(text) => text.len() as u64,
        };
        if size > settings.max_output.0 {
            return Err(CallError::Output(format!(
                "{} is over its max_output of {}",
                ByteSize(size),
                settings.max_output
            )));
        }
        Ok(decision)
    }
}

/// What every plugin is handed about one attempt of `job` besides the Job itself: its Windmill
/// context and its resolved hints with their sources (never the Secret with the code and args).
#[must_use]
pub fn context(job: &crate::domain::Job, pod: &crate::hints::PodSettings, attempt: u32) -> Value {
    let hints: Vec<Value> = pod
        .rows()
        .into_iter()
        .map(|(key, value, source)| json!({"key": key, "value": value, "source": source.to_string()}))
        .collect();
    json!({
        "job": {
            "id": job.id.to_string(),
            "workspace": job.workspace,
            "path": job.path,
            "kind": job.kind.to_string(),
            "language": job.language.as_ref().map(crate::domain::Language::as_str),
            "tag": job.tag,
            "permissioned_as": job.permissioned_as,
            "permissioned_as_email": job.permissioned_as_email,
            "created_by": job.created_by,
            "parent_flow": job.flow.as_ref().map(|f| f.parent.to_string()),
            "flow_path": job.context.flow_path,
            "schedule": job.context.schedule_path,
            "attempt": attempt,
        },
        "hints": hints,
        "objects": {},
    })
}

fn cap_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
