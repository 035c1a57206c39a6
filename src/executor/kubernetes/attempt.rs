//! One attempt of a job: create its objects (or adopt them), then follow its pod to an end.
//!
//! The decisions are a value: [`Machine::step`] takes what happened (the pod assessed or gone, a
//! log line, the log stream opened or broke, a tick, a cancel) at a time since the attempt began,
//! and says what to do (wait, look at the pod, note why the job waits, open the log, conclude, fail,
//! retry, cancel). Budgets are judged from those times, so unit tests drive every path without a
//! cluster or a clock. [`Inner::attempt`] carries the actions out.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::classify::{self, PodState};
use super::follow::{LineStream, LogFollower, next_line};
use super::kueue::Admission;
use super::objects::Created;
use super::outcome::{self, Ended, Lost};
use super::render::{self, Context};
use crate::config::{HumanDuration, Secret, Settings};
use crate::domain::{Completion, Job, JobFailure, Progress};
use crate::hints::PodSettings;
use crate::logs::LogSink;
use crate::trailer;

/// How long a Job may go without a pod before the job log says why it waits.
const NO_POD_NOTE_AFTER: Duration = Duration::from_secs(10);
/// How long a queued Job may go without a Kueue Workload before the job log asks whether Kueue
/// runs (it makes one within a second when it does).
const NO_WORKLOAD_NOTE_AFTER: Duration = Duration::from_secs(10);

/// What every attempt of one job works with.
pub(super) struct Run<'a> {
    pub job: &'a Job,
    pub pod: &'a PodSettings,
    /// The args, `$var:`/`$res:` resolved.
    pub args: &'a serde_json::Map<String, serde_json::Value>,
    /// The job's Windmill token, when one was minted.
    pub token: Option<&'a Secret>,
    pub cancel: &'a CancellationToken,
    pub logs: &'a LogSink,
    pub progress: &'a Progress,
    /// Woken by the shared watch when the job's pod changed.
    pub waker: &'a Notify,
}

/// How an attempt ended.
pub(super) enum Attempt {
    /// The job's outcome.
    Done(Completion),
    /// User code never started: try again as a new attempt.
    SystemRetry(String),
}

/// The limits and names the decisions use.
#[derive(Debug, Clone)]
pub struct Rules {
    /// How long the pod may stay unschedulable.
    pub pending_budget: HumanDuration,
    /// How long an image pull may keep failing.
    pub image_pull_grace: HumanDuration,
    /// The namespace, for the `kubectl` hint when no pod appears.
    pub namespace: String,
    /// The attempt's object name, likewise.
    pub object_name: String,
    /// The Kueue `LocalQueue` the Job waits in, if any.
    pub local_queue: Option<String>,
    /// How long Kueue may take to admit the Job; `None`: unbounded.
    pub admission_budget: Option<HumanDuration>,
}

impl Rules {
    /// The rules of one attempt of `job` in `namespace` under the worker's settings.
    #[must_use]
    pub fn of(settings: &Settings, namespace: &str, job: &Job, attempt: u32) -> Self {
        Self {
            pending_budget: settings.executor.pending_budget,
            image_pull_grace: settings.executor.image_pull_grace,
            namespace: namespace.to_owned(),
            object_name: render::object_name(job, attempt),
            local_queue: None,
            admission_budget: settings.executor.admission_budget,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The pod was looked at.
    Pod {
        /// What its status says.
        state: PodState,
        /// Whether user code ever started in it.
        user_code_started: bool,
    },
    /// The pod was looked for and is not there.
    NoPod,
    /// The Job waits in a Kueue `LocalQueue`, not admitted: Kueue's reason, or `None` when Kueue
    /// has not made its Workload yet (with why it cannot be read, if so).
    NotAdmitted(Option<String>),
    /// The watch said the pod changed, or a second passed.
    Tick,
    /// A log line arrived (and was taken by the follower).
    LogLine,
    /// The followed log stream is open.
    StreamOpened,
    /// The followed log stream ended or broke; `drained` when it reached its end with the
    /// result trailer complete (everything the runner prints is in: nothing to read again).
    StreamEnded {
        /// Whether the log is read to its end.
        drained: bool,
    },
    /// Windmill canceled the job.
    Cancel,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next event.
    Wait,
    /// Look at the pod.
    Check,
    /// Tell the job log why it waits, then wait.
    Note(String),
    /// Open the followed log stream.
    OpenStream,
    /// The container ended: read the rest of its log, then make the outcome.
    Conclude(Ended),
    /// End the job with this failure, deleting the attempt first when asked.
    Fail {
        /// The failure.
        failure: JobFailure,
        /// Whether the attempt's objects are deleted (they still hold a pod).
        delete: bool,
    },
    /// Read what the pod's log still has, then end the job with this failure.
    FailAfterDrain(JobFailure),
    /// Start a new attempt (user code never ran).
    Retry(String),
    /// Delete the attempt and end the job as canceled.
    Cancel,
}

/// Where the followed log of the pod stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogState {
    /// No stream open: a running pod's log is opened.
    Closed,
    /// A stream is open.
    Streaming,
    /// Read to its end, trailer and all: the pod's log is not opened again.
    Drained,
}

/// The decisions of one attempt.
#[derive(Debug)]
pub struct Machine {
    rules: Rules,
    seen_pod: bool,
    user_code_started: bool,
    pending_since: Option<Duration>,
    pulling_since: Option<Duration>,
    log: LogState,
    last_note: String,
    /// When Kueue was first seen not admitting the Job.
    admission_since: Option<Duration>,
    /// When the attempt was first seen past admission (the no-pod note counts from here).
    admitted_at: Option<Duration>,
}

impl Machine {
    /// A machine for an attempt whose objects were just created or adopted.
    #[must_use]
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            seen_pod: false,
            user_code_started: false,
            pending_since: None,
            pulling_since: None,
            log: LogState::Closed,
            last_note: String::new(),
            admission_since: None,
            admitted_at: None,
        }
    }

    /// What to do after `event`, `at` this long since the attempt began.
    pub fn step(&mut self, at: Duration, event: Event) -> Action {
        if self.admission_since.is_some()
            && self.admitted_at.is_none()
            && !matches!(event, Event::NotAdmitted(_))
        {
            self.admitted_at = Some(at);
        }
        match event {
            Event::NotAdmitted(reason) => self.not_admitted(at, reason),
            Event::Pod {
                state,
                user_code_started,
            } => self.pod(at, state, user_code_started),
            Event::NoPod if self.seen_pod => match outcome::deleted(self.user_code_started) {
                Lost::Retry(reason) => Action::Retry(reason),
                Lost::Failed(failure) => Action::Fail {
                    failure,
                    delete: false,
                },
            },
            // The Job exists but its controller made no pod: a quota or an admission policy
            // refuses it. Kubernetes retries; say so in the log instead of staying silent.
            Event::NoPod
                if at.saturating_sub(self.admitted_at.unwrap_or_default()) > NO_POD_NOTE_AFTER =>
            {
                self.note(format!(
                "waiting for the Job controller to create the pod (a quota or an admission policy may refuse it; see `kubectl -n {} describe job {}`)",
                self.rules.namespace, self.rules.object_name
            ))
            }
            Event::NoPod | Event::LogLine => Action::Wait,
            Event::Tick => Action::Check,
            Event::StreamOpened => {
                self.log = LogState::Streaming;
                Action::Wait
            }
            Event::StreamEnded { drained } => {
                if drained || self.log == LogState::Drained {
                    self.log = LogState::Drained;
                } else {
                    self.log = LogState::Closed;
                }
                Action::Check
            }
            Event::Cancel => Action::Cancel,
        }
    }

    fn pod(&mut self, at: Duration, state: PodState, user_code_started: bool) -> Action {
        self.seen_pod = true;
        self.user_code_started |= user_code_started;
        if !matches!(state, PodState::Unschedulable(_)) {
            self.pending_since = None;
        }
        if !matches!(state, PodState::PullingImage { .. }) {
            self.pulling_since = None;
        }
        let fail = |failure| Action::Fail {
            failure,
            delete: true,
        };
        match state {
            PodState::Unschedulable(message) => {
                let since = *self.pending_since.get_or_insert(at);
                if at.saturating_sub(since) > self.rules.pending_budget.0 {
                    return fail(outcome::unschedulable(&message, self.rules.pending_budget));
                }
                self.note(format!("waiting for capacity: {message}"))
            }
            PodState::PullingImage { image, message } => {
                let since = *self.pulling_since.get_or_insert(at);
                if at.saturating_sub(since) > self.rules.image_pull_grace.0 {
                    return fail(outcome::image_pull(
                        &image,
                        &message,
                        self.rules.image_pull_grace,
                    ));
                }
                self.note(format!("pulling image {image}: {message}"))
            }
            PodState::InvalidImage { image, message } => {
                fail(outcome::invalid_image(&image, &message))
            }
            PodState::ConfigError(message) => fail(outcome::container_config(&message)),
            PodState::Starting(reason) => self.note(format!("pod starting: {reason}")),
            // Streaming, or read to the end: the watch tells when the container has ended.
            PodState::Running if self.log != LogState::Closed => Action::Wait,
            PodState::Running => Action::OpenStream,
            PodState::Terminated {
                exit_code,
                reason,
                message,
            } => Action::Conclude(Ended {
                exit_code,
                reason,
                message,
            }),
            PodState::Disrupted { reason, message } => {
                match outcome::disrupted(&reason, &message, self.user_code_started) {
                    Lost::Retry(reason) => Action::Retry(reason),
                    Lost::Failed(failure) => Action::FailAfterDrain(failure),
                }
            }
        }
    }

    /// Kueue holds the Job back: say why, fail past the admission budget.
    fn not_admitted(&mut self, at: Duration, reason: Option<String>) -> Action {
        let since = *self.admission_since.get_or_insert(at);
        let waited = at.saturating_sub(since);
        let queue = self.rules.local_queue.clone().unwrap_or_default();
        let namespace = &self.rules.namespace;
        let reason = match reason {
            Some(reason) => reason,
            None if waited > NO_WORKLOAD_NOTE_AFTER => format!(
                "Kueue has made no Workload for the Job after {}s: is Kueue running in this cluster, and does LocalQueue `{queue}` exist in namespace `{namespace}`? (`kubectl -n {namespace} get localqueue {queue}`)",
                waited.as_secs()
            ),
            None => return Action::Wait,
        };
        if let Some(budget) = self.rules.admission_budget
            && waited > budget.0
        {
            return Action::Fail {
                failure: outcome::not_admitted(&queue, &reason, budget),
                delete: true,
            };
        }
        self.note(format!(
            "waiting for Kueue to admit the Job (LocalQueue `{queue}`): {reason}"
        ))
    }

    /// A note, unless it is the one given last.
    fn note(&mut self, message: String) -> Action {
        if self.last_note == message {
            return Action::Wait;
        }
        self.last_note.clone_from(&message);
        Action::Note(message)
    }
}

impl Inner {
    /// Runs one attempt: creates (or adopts) its objects and follows its pod to an end.
    pub(super) async fn attempt(&self, run: &Run<'_>, attempt: u32, nonce: &str) -> Attempt {
        let started = Instant::now();
        let (nonce, skip, queue) = match self.start(run, attempt, nonce).await {
            Ok(started_with) => started_with,
            Err(completion) => return Attempt::Done(completion),
        };
        let from = Followed {
            nonce: &nonce,
            skip,
            queue,
            delivered: None,
        };
        self.follow_pod(run, attempt, from, started).await
    }

    /// The first attempt on a waiting pod of a warm pool, when one matches the job and takes it;
    /// `None` (the job log says why) when the job takes the cold path.
    pub(super) async fn try_warm(&self, run: &Run<'_>) -> Option<Attempt> {
        let pools = self.warm.as_ref()?;
        let language = run.job.language.as_ref().map_or("", |l| l.as_str());
        let taken = match pools.take(&run.job.tag, language, run.pod) {
            Ok(taken) => taken,
            Err(why) => {
                run.logs.note(&format!("cold start: {why}"));
                self.metrics.job_started(false);
                return None;
            }
        };
        let started = Instant::now();
        let settings = &self.config.settings;
        let cx = Context {
            settings,
            namespace: &self.cluster.namespace,
            pod: run.pod,
            attempt: 1,
            nonce: &taken.nonce,
            args: run.args,
            token: run.token.map(Secret::expose),
            base_url: self.config.windmill_url.as_deref(),
        };
        let payload = render::handover_payload(run.job, &cx);
        let labels = render::labels(run.job, 1, settings);
        // The pod's deadline counts from its start: its wait so far, the job's timeout, a margin.
        let deadline = taken.age() + run.pod.timeout.value + Duration::from_secs(60);
        run.progress.set_phase("handing the job to a warm pod");
        if let Err(error) = pools.assign(&taken, labels, deadline, payload).await {
            run.logs.note(&format!(
                "cold start: warm pod {} could not take the job ({error})",
                taken.pod
            ));
            pools.delete(&taken.pod).await;
            self.metrics.job_started(false);
            return None;
        }
        self.metrics.job_started(true);
        self.lock_warm_jobs()
            .insert(run.job.id, (1, taken.pod.clone()));
        run.progress.record_job(&taken.pod, false);
        run.logs.note(&format!(
            "warm start: handed to pod {} of warm pool `{}`",
            taken.pod, taken.pool
        ));
        Some(
            self.follow_pod(
                run,
                1,
                Followed {
                    nonce: &taken.nonce,
                    skip: 0,
                    queue: None,
                    delivered: Some(&taken.delivered),
                },
                started,
            )
            .await,
        )
    }

    /// Follows an attempt a stopped worker handed to a warm pod (its nonce is in the pod's
    /// Secret). Whether its runner had the job is unknown: counted as started, so a lost pod is
    /// the job's failure and never a second run.
    pub(super) async fn adopt_warm(&self, run: &Run<'_>, attempt: u32, pod: &str) -> Attempt {
        let started = Instant::now();
        // A warm pod's Secret has its pod's name.
        let nonce = self.nonce_in(pod).await;
        self.lock_warm_jobs()
            .insert(run.job.id, (attempt, pod.to_owned()));
        run.progress.record_job(pod, true);
        let delivered = std::sync::atomic::AtomicBool::new(true);
        let from = Followed {
            nonce: &nonce,
            skip: run.job.prior_output_lines,
            queue: None,
            delivered: Some(&delivered),
        };
        self.follow_pod(run, attempt, from, started).await
    }

    /// Renders and creates (or adopts) the attempt's objects: the nonce its pod uses, how many
    /// output lines are already logged and the Kueue `LocalQueue` the Job waits in, or how the job
    /// ended meanwhile.
    async fn start(
        &self,
        run: &Run<'_>,
        attempt: u32,
        nonce: &str,
    ) -> Result<(String, usize, Option<String>), Completion> {
        let started = Instant::now();
        let mut objects = render::render(
            run.job,
            &Context {
                settings: &self.config.settings,
                namespace: &self.cluster.namespace,
                pod: run.pod,
                attempt,
                nonce,
                args: run.args,
                token: run.token.map(Secret::expose),
                base_url: self.config.windmill_url.as_deref(),
            },
        );
        // The objects' copy here is dropped on return: a job may wait for capacity for a long
        // time.
        if let Some(plugins) = &self.plugins {
            run.progress.set_phase("running the policy plugins");
            let applied = render::apply_plugins(plugins, run.job, run.pod, attempt, &mut objects)
                .await
                .map_err(|failure| Completion::failed(failure, started.elapsed()))?;
            for line in applied.log_lines() {
                run.logs.note(&line);
            }
        }
        let object = render::object_name(run.job, attempt);
        let queue = render::kueue_queue(&objects.job).map(str::to_owned);
        run.progress.set_phase("creating the Kubernetes Job");
        match self.create(&objects, run.cancel, run.logs).await {
            Created::Fresh => {
                run.progress.record_job(&object, false);
                if run.job.prior_output_lines > 0 {
                    run.logs.note("running the script again: the output above is from an earlier run that did not finish");
                }
                Ok((nonce.to_owned(), 0, queue))
            }
            // The output of this pod that a stopped worker already logged is not repeated.
            Created::Adopted(existing) => {
                run.progress.record_job(&object, true);
                Ok((existing, run.job.prior_output_lines, queue))
            }
            Created::Canceled => Err(Completion::canceled(started.elapsed())),
            Created::Failed(failure) => Err(Completion::failed(failure, started.elapsed())),
        }
    }

    /// Follows the attempt's pod to an end, carrying out what the [`Machine`] decides.
    async fn follow_pod(
        &self,
        run: &Run<'_>,
        attempt: u32,
        from: Followed<'_>,
        started: Instant,
    ) -> Attempt {
        let Followed {
            nonce,
            skip,
            queue,
            delivered,
        } = from;
        let settings = &self.config.settings;
        let decoder = trailer::Decoder::new(nonce, settings.executor.max_result_bytes.0);
        let mut follower = LogFollower::new(decoder, run.logs, run.progress);
        follower.skip = skip;
        let mut rules = Rules::of(settings, &self.cluster.namespace, run.job, attempt);
        rules.local_queue.clone_from(&queue);
        let mut machine = Machine::new(rules);
        let object = render::object_name(run.job, attempt);
        let mut kueue = AdmissionNotes::default();
        let id = run.job.id.to_string();
        let mut stream: Option<LineStream> = None;
        let mut pod: Option<Pod> = None;
        let mut action = Action::Check;
        loop {
            let event = match action {
                Action::Check => {
                    pod = self.watch.pod(&id, attempt);
                    match pod.as_ref() {
                        None if queue.is_some() => self.admission_event(run, &object, &mut kueue),
                        None => {
                            run.progress.set_phase("waiting for the Job's pod");
                            Event::NoPod
                        }
                        Some(pod) => {
                            if queue.is_some() && !kueue.admitted {
                                // Admitted (a pod exists) before a look at the Workload said so.
                                let cluster_queue = match self.kueue.admission(&object) {
                                    Admission::Admitted(cluster_queue) => cluster_queue,
                                    _ => String::new(),
                                };
                                kueue.note_admitted(run, &cluster_queue);
                            }
                            let state = classify::assess(pod);
                            // A warm pod's container runs before its job: its user code may
                            // run once the job is handed over.
                            let user_code_started = match delivered {
                                Some(delivered) => {
                                    delivered.load(std::sync::atomic::Ordering::Acquire)
                                }
                                None => classify::user_code_started(pod),
                            };
                            if user_code_started {
                                run.progress.record_user_code_started();
                            }
                            run.progress.set_phase(state.phase());
                            Event::Pod {
                                state,
                                user_code_started,
                            }
                        }
                    }
                }
                Action::Wait => next_event(run, &mut stream, &mut follower).await,
                Action::Note(message) => {
                    run.logs.note(&message);
                    next_event(run, &mut stream, &mut follower).await
                }
                Action::OpenStream => {
                    if let Some(pod) = &pod {
                        stream = self.open_log(pod, &mut follower, true).await;
                    }
                    if stream.is_some() {
                        Event::StreamOpened
                    } else {
                        next_event(run, &mut stream, &mut follower).await
                    }
                }
                Action::Conclude(ended) => {
                    run.progress.record_pod_terminated();
                    // Everything the container printed, then the verdict.
                    if let Some(pod) = &pod {
                        self.read_to_end(pod, stream.take(), &mut follower, ended.patience())
                            .await;
                    }
                    let memory_limit = run.pod.memory.value.limit.to_string();
                    let trailer = follower.decoder().finish();
                    return Attempt::Done(outcome::terminated(
                        &ended,
                        trailer,
                        &memory_limit,
                        started.elapsed(),
                    ));
                }
                Action::Fail { failure, delete } => {
                    if delete {
                        self.delete_attempt(run.job, attempt).await;
                    }
                    return Attempt::Done(Completion::failed(failure, started.elapsed()));
                }
                Action::FailAfterDrain(failure) => {
                    if let Some(pod) = &pod {
                        self.read_to_end(pod, stream.take(), &mut follower, Duration::ZERO)
                            .await;
                    }
                    return Attempt::Done(Completion::failed(failure, started.elapsed()));
                }
                Action::Retry(reason) => return Attempt::SystemRetry(reason),
                Action::Cancel => {
                    run.logs
                        .note("canceled: deleting the Kubernetes Job and its pod");
                    self.delete_attempt(run.job, attempt).await;
                    return Attempt::Done(Completion::canceled(started.elapsed()));
                }
            };
            action = machine.step(started.elapsed(), event);
        }
    }
}

/// What following an attempt's pod starts from.
struct Followed<'a> {
    /// The nonce its trailer is marked with.
    nonce: &'a str,
    /// Output lines already in the job log (an adopted attempt's).
    skip: usize,
    /// The Kueue `LocalQueue` its Job waits in.
    queue: Option<String>,
    /// A warm pod's: set once its runner has the job (user code may run from then on).
    delivered: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What the job log has said about Kueue's admission of one attempt.
#[derive(Debug, Default)]
struct AdmissionNotes {
    waiting_since: Option<Instant>,
    admitted: bool,
}

impl AdmissionNotes {
    /// The job-log line of the admission, once.
    fn note_admitted(&mut self, run: &Run<'_>, cluster_queue: &str) {
        if self.admitted {
            return;
        }
        self.admitted = true;
        let waited = self
            .waiting_since
            .map(|since| format!(" after {:.1}s", since.elapsed().as_secs_f64()))
            .unwrap_or_default();
        let queue = if cluster_queue.is_empty() {
            String::new()
        } else {
            format!(" (ClusterQueue `{cluster_queue}`)")
        };
        run.logs.note(&format!("admitted by Kueue{queue}{waited}"));
    }
}

impl Inner {
    /// A queued Job without a pod: where Kueue stands on it, and the job-log line when it has just
    /// been admitted.
    fn admission_event(&self, run: &Run<'_>, object: &str, notes: &mut AdmissionNotes) -> Event {
        match self.kueue.admission(object) {
            Admission::Admitted(cluster_queue) => {
                notes.note_admitted(run, &cluster_queue);
                run.progress.set_phase("waiting for the Job's pod");
                Event::NoPod
            }
            Admission::Waiting(reason) => {
                notes.waiting_since.get_or_insert_with(Instant::now);
                run.progress.set_phase("waiting for Kueue admission");
                Event::NotAdmitted(Some(reason))
            }
            Admission::Unknown(error) => {
                notes.waiting_since.get_or_insert_with(Instant::now);
                run.progress.set_phase("waiting for Kueue admission");
                Event::NotAdmitted(error.map(|error| {
                    format!(
                        "Kueue's Workloads cannot be read ({error}); is Kueue installed, and may the worker list and watch workloads.kueue.x-k8s.io (executor Role)?"
                    )
                }))
            }
        }
    }
}

/// Waits for the next thing to happen; a log line is handed to the follower on the way.
async fn next_event(
    run: &Run<'_>,
    stream: &mut Option<LineStream>,
    follower: &mut LogFollower<'_>,
) -> Event {
    tokio::select! {
        () = run.waker.notified() => Event::Tick,
        line = next_line(stream), if stream.is_some() => match line {
            Some(Ok(line)) => {
                follower.accept(&line);
                Event::LogLine
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "pod log stream broke; resuming from the last line seen");
                *stream = None;
                Event::StreamEnded { drained: false }
            }
            None => {
                *stream = None;
                follower.reached_end();
                Event::StreamEnded { drained: follower.drained() }
            }
        },
        () = tokio::time::sleep(Duration::from_secs(1)) => Event::Tick,
        () = run.cancel.cancelled() => Event::Cancel,
    }
}

#[cfg(test)]
mod tests;
