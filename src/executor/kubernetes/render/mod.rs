//! Renders one attempt of a job into its Kubernetes objects: a Secret (code, lock, wrapper,
//! `job.json`, args, nonce, job token) and a `batch/v1` Job. One object for code and args, so an
//! attempt costs two creates: the code is no less private than the args it runs with, and the pod
//! mounts the code keys and the args keys as two directories. Pure and deterministic:
//! the same job, attempt and nonce give byte-identical objects (maps are ordered, nothing reads
//! the clock). The pod inside the Job is rendered by `pod`.

mod env;
mod pod;

pub use pod::warm_pod;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job as KubeJob, JobSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::Settings;
use crate::domain::Job;
use crate::hints::PodSettings;
use crate::runner::{self, JobSpec as RunnerSpec};

/// Label: the Windmill job id.
pub const LABEL_JOB_ID: &str = "flext.dev/job-id";
/// Label: the attempt number.
pub const LABEL_ATTEMPT: &str = "flext.dev/attempt";
/// Label: the worker group.
pub const LABEL_WORKER_GROUP: &str = "flext.dev/worker-group";
/// Label: who manages the objects.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "flext-kubernetes";
/// Label: a hash of the script path, for spreading one script's pods.
pub const LABEL_SCRIPT: &str = "flext.dev/script";
/// Label on a Job: the Kueue `LocalQueue` it waits in (Kueue's `constants.QueueLabel`).
pub const LABEL_KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Label on a warm pod: its pool.
pub const LABEL_WARM_POOL: &str = "flext.dev/warm-pool";
/// Label on a warm pod: the worker whose pool made it (only that worker can hand it a job).
pub const LABEL_WARM_OWNER: &str = "flext.dev/warm-owner";
/// Name of the job's main container.
pub const MAIN_CONTAINER: &str = "main";
/// Name of the init container that brings the runner.
pub const RUNNER_CONTAINER: &str = "flext-runner";
/// Seconds past Windmill's timeout after which Kubernetes itself stops the Job (a backstop: the
/// worker cancels first).
const DEADLINE_MARGIN_S: u64 = 60;

/// One attempt's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// Code, lock, wrapper and `job.json`; args, nonce, job token and the script's `envs`.
    pub secret: Secret,
    /// The Job.
    pub job: KubeJob,
}

/// Runs the policy plugins on an attempt's rendered objects (on a blocking thread: plugins are
/// CPU-bound), replacing its Job with theirs; what they changed, or the job's failure.
pub async fn apply_plugins(
    plugins: &crate::plugins::Plugins,
    job: &Job,
    pod: &crate::hints::PodSettings,
    attempt: u32,
    objects: &mut Objects,
) -> Result<crate::plugins::Applied, crate::domain::JobFailure> {
    use crate::domain::{FailureCategory, JobFailure};
    let internal = |what: String| {
        JobFailure::new(
            FailureCategory::Internal,
            "PolicyPluginInternal",
            format!(
                "running the policy plugins failed: {what}; this is a bug in the worker: report it with its log"
            ),
        )
    };
    let context = crate::plugins::context(job, pod, attempt);
    let mut value = serde_json::to_value(&objects.job).map_err(|e| internal(e.to_string()))?;
    let gpu_resource = pod.gpu_resource.value.clone();
    let plugins = plugins.clone();
    let (value, applied) = tokio::task::spawn_blocking(move || {
        plugins
            .apply(&context, &mut value, &gpu_resource)
            .map(|applied| (value, applied))
    })
    .await
    .map_err(|e| internal(e.to_string()))??;
    objects.job = serde_json::from_value(value).map_err(|e| internal(e.to_string()))?;
    suspend_for_kueue(&mut objects.job);
    Ok(applied)
}

/// The first attempt of `job` rendered (without args, token or nonce) and run through `plugins`
/// on this thread: their verdict, and the Job as JSON as they left it. For `hints`, `check`,
/// tests and benches; the executor uses [`apply_plugins`].
pub fn decide_first_attempt(
    plugins: &crate::plugins::Plugins,
    settings: &crate::config::Settings,
    job: &Job,
    pod: &crate::hints::PodSettings,
) -> (
    Result<crate::plugins::Applied, crate::domain::JobFailure>,
    serde_json::Value,
) {
    let args = serde_json::Map::new();
    let namespace = super::clusters::first_choice(settings, &job.tag, pod).map_or_else(
        |_| settings.clusters()[0].namespace.clone(),
        |(cluster, _)| cluster.namespace,
    );
    let cx = Context {
        settings,
        namespace: &namespace,
        pod,
        attempt: 1,
        nonce: "<nonce>",
        args: &args,
        token: None,
        base_url: None,
    };
    let objects = render(job, &cx);
    let context = crate::plugins::context(job, pod, 1);
    let mut value = serde_json::to_value(&objects.job).unwrap_or_default();
    let verdict = plugins.apply(&context, &mut value, &pod.gpu_resource.value);
    (verdict, value)
}

/// What rendering needs besides the job.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The worker's settings.
    pub settings: &'a Settings,
    /// The namespace of the cluster the job runs on.
    pub namespace: &'a str,
    /// The job's pod settings, from the hints.
    pub pod: &'a PodSettings,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The per-attempt nonce that marks the result trailer.
    pub nonce: &'a str,
    /// The job's args, `$var:`/`$res:` resolved.
    pub args: &'a serde_json::Map<String, serde_json::Value>,
    /// The job's Windmill token, when one was minted.
    pub token: Option<&'a str>,
    /// Windmill's public URL, for `WM_BASE_URL`.
    pub base_url: Option<&'a str>,
}

/// `wm-<job id>-<attempt>`: the name of every object of one attempt.
#[must_use]
pub fn object_name(job: &Job, attempt: u32) -> String {
    format!("wm-{}-{attempt}", job.id)
}

/// The labels every object of one attempt carries.
#[must_use]
pub fn labels(job: &Job, attempt: u32, settings: &Settings) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_JOB_ID.to_owned(), job.id.to_string()),
        (LABEL_ATTEMPT.to_owned(), attempt.to_string()),
        (
            LABEL_WORKER_GROUP.to_owned(),
            settings.windmill.worker_group.clone(),
        ),
    ])
}

/// The label selector of all objects of this worker group.
#[must_use]
pub fn group_selector(settings: &Settings) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGER},{LABEL_WORKER_GROUP}={}",
        settings.windmill.worker_group
    )
}

/// Renders the objects of one attempt.
#[must_use]
pub fn render(job: &Job, cx: &Context<'_>) -> Objects {
    let settings = cx.settings;
    let name = object_name(job, cx.attempt);
    let namespace = cx.namespace.to_owned();
    let labels = labels(job, cx.attempt, settings);
    let mut annotations = BTreeMap::from([
        ("flext.dev/windmill-tag".to_owned(), job.tag.clone()),
        (
            "flext.dev/windmill-workspace".to_owned(),
            job.workspace.clone(),
        ),
    ]);
    if let Some(path) = &job.path {
        annotations.insert("flext.dev/windmill-path".to_owned(), path.clone());
    }
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        ..ObjectMeta::default()
    };

    let code = code_files(job, settings);
    let code_keys: Vec<String> = code.keys().cloned().collect();
    let secret = secret(job, cx, meta.clone(), code);
    let mut job_meta = meta;
    if let Some(queue) = &cx.pod.local_queue {
        job_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_KUEUE_QUEUE.to_owned(), queue.value.clone());
    }
    let mut job_object = KubeJob {
        metadata: job_meta,
        spec: Some(JobSpec {
            backoff_limit: Some(settings.job_template.backoff_limit),
            active_deadline_seconds: Some(
                i64::try_from(cx.pod.timeout.value.as_secs() + DEADLINE_MARGIN_S)
                    .unwrap_or(i64::MAX),
            ),
            ttl_seconds_after_finished: Some(
                i32::try_from(settings.executor.ttl_after_finished.0.as_secs()).unwrap_or(i32::MAX),
            ),
            template: pod::template(job, cx, &labels, &annotations, &code_keys),
            ..JobSpec::default()
        }),
        ..KubeJob::default()
    };
    suspend_for_kueue(&mut job_object);
    Objects {
        secret,
        job: job_object,
    }
}

/// The Kueue `LocalQueue` a rendered Job waits in, if it has one.
#[must_use]
pub fn kueue_queue(job: &KubeJob) -> Option<&str> {
    job.metadata
        .labels
        .as_ref()?
        .get(LABEL_KUEUE_QUEUE)
        .map(String::as_str)
}

/// A Job with a Kueue queue is created suspended: Kueue unsuspends it on admission. Where
/// Kueue's webhook runs it would suspend the Job itself; where it does not, a Job created
/// running starts its pod at once and Kueue stops it again (docs/kueue-on-the-bed.md). Applied
/// at render and again after the policy plugins, so a plugin that names a queue gets it too.
pub fn suspend_for_kueue(job: &mut KubeJob) {
    if kueue_queue(job).is_some()
        && let Some(spec) = job.spec.as_mut()
    {
        spec.suspend = Some(true);
    }
}

/// The files of `/flext/job`: `job.json` for the runner, the code, the lock and the language's
/// wrapper, by their Secret key (also their file name).
pub(super) fn code_files(job: &Job, settings: &Settings) -> BTreeMap<String, String> {
    let language = job.language.as_ref().map_or("", |l| l.as_str());
    let main_file = runner::main_file(language).unwrap_or("main.txt");
    let spec = RunnerSpec {
        language: language.to_owned(),
        entrypoint: job.entrypoint.clone().unwrap_or_else(|| "main".to_owned()),
        main_file: main_file.to_owned(),
        max_result_bytes: settings.executor.max_result_bytes.0,
        preprocess: job.preprocess,
    };
    let mut data = BTreeMap::from([
        (
            "job.json".to_owned(),
            serde_json::to_string(&spec).unwrap_or_default(),
        ),
        (main_file.to_owned(), job.code.clone().unwrap_or_default()),
    ]);
    if let Some(lock) = job.lock.as_ref().filter(|l| !l.trim().is_empty()) {
        data.insert("lock".to_owned(), lock.clone());
    }
    if let Some((file, text)) = runner::wrapper(language) {
        data.insert(file.to_owned(), text.to_owned());
    }
    data
}

/// The Secret's key of one of the script's `envs`.
fn script_env_key(name: &str) -> String {
    format!("env.{name}")
}

/// What a warm pod receives for one attempt of `job`: the code files, args and environment the
/// cold path puts in the attempt's Secret and pod spec.
#[must_use]
pub fn handover_payload(job: &Job, cx: &Context<'_>) -> crate::handover::Payload {
    crate::handover::Payload {
        files: code_files(job, cx.settings),
        args: serde_json::Value::Object(cx.args.clone()).to_string(),
        env: env::values(job, cx),
    }
}

/// The Secret keys the pod mounts at `/flext/secret` (the others reach it as environment).
pub(super) const SECRET_FILES: [&str; 2] = ["args.json", "nonce"];

/// The Secret: the code files, args, nonce, the job token and the script's `envs`.
fn secret(
    job: &Job,
    cx: &Context<'_>,
    metadata: ObjectMeta,
    code: BTreeMap<String, String>,
) -> Secret {
    let mut secret_data: BTreeMap<String, ByteString> = code
        .into_iter()
        .map(|(key, text)| (key, ByteString(text.into_bytes())))
        .collect();
    secret_data.extend([
        (
            "args.json".to_owned(),
            ByteString(
                serde_json::Value::Object(cx.args.clone())
                    .to_string()
                    .into_bytes(),
            ),
        ),
        ("nonce".to_owned(), ByteString(cx.nonce.as_bytes().to_vec())),
    ]);
    if let Some(token) = cx.token {
        secret_data.insert("token".to_owned(), ByteString(token.as_bytes().to_vec()));
    }
    for (name, value) in job.script_env_pairs().unwrap_or_default() {
        secret_data.insert(script_env_key(&name), ByteString(value.into_bytes()));
    }
    Secret {
        metadata,
        data: Some(secret_data),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// The objects as one YAML stream (Secret, Job), for `flext-kubernetes render`.
pub fn to_yaml(objects: &Objects) -> Result<String, serde_yaml_ng::Error> {
    Ok(format!(
        "{}---\n{}",
        serde_yaml_ng::to_string(&objects.secret)?,
        serde_yaml_ng::to_string(&objects.job)?
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::hints;

    fn rendered(code: &str, nonce: &str) -> (Objects, String) {
        let mut job = crate::testing::job();
        job.id = crate::domain::JobId(uuid::Uuid::from_u128(0x1234));
        // The same job: claimed once (WM_OBJECT_PATH carries the claim's time).
        job.started_at = chrono::DateTime::UNIX_EPOCH;
        job.code = Some(code.into());
        job.args = json!({"x": 1, "b": [1, 2]});
        let objects = render_with(&job, 2, nonce, Some("tok"), None);
        let yaml = to_yaml(&objects).unwrap();
        (objects, yaml)
    }

    /// A Python job's objects with the default config.
    fn render_with(
        job: &Job,
        attempt: u32,
        nonce: &str,
        token: Option<&str>,
        base_url: Option<&str>,
    ) -> Objects {
        let config = Config::from_yaml("", &std::collections::BTreeMap::new()).unwrap();
        render_in(&config, job, attempt, nonce, token, base_url)
    }

    /// A Python job's objects with `config`.
    fn render_in(
        config: &Config,
        job: &Job,
        attempt: u32,
        nonce: &str,
        token: Option<&str>,
        base_url: Option<&str>,
    ) -> Objects {
        let pod = hints::resolve(
            &config.settings.hints(),
            &job.tag,
            "python3",
            job.code.as_deref().unwrap_or_default(),
            hints::WindmillFields::default(),
        )
        .unwrap();
        let args = job.args_object().unwrap();
        let cx = Context {
            settings: &config.settings,
            namespace: &config.settings.cluster.namespace,
            pod: &pod,
            attempt,
            nonce,
            args: &args,
            token,
            base_url,
        };
        render(job, &cx)
    }

    #[test]
    fn a_job_in_a_kueue_queue_is_labelled_and_created_suspended() {
        let mut job = crate::testing::job();
        job.code = Some("# k8s: local_queue=team-a\ndef main(): pass\n".into());
        let config = Config::from_yaml(
            "limits: {allowed_local_queues: [team-*]}",
            &std::collections::BTreeMap::new(),
        )
        .unwrap();
        let objects = render_in(&config, &job, 1, "n", None, None);
        assert_eq!(kueue_queue(&objects.job), Some("team-a"));
        assert_eq!(objects.job.spec.as_ref().unwrap().suspend, Some(true));
        // Only the Job carries the queue: Kueue reads it there; the pod's labels are ours.
        let pod_labels = objects
            .job
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(
            !pod_labels.contains_key(LABEL_KUEUE_QUEUE),
            "{pod_labels:?}"
        );
        assert!(
            !objects
                .secret
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(LABEL_KUEUE_QUEUE)
        );
        // Without a queue nothing changes.
        let (plain, _) = rendered("def main(): pass", "n");
        assert_eq!(kueue_queue(&plain.job), None);
        assert_eq!(plain.job.spec.as_ref().unwrap().suspend, None);
        // A queue set later (by a policy plugin) suspends the Job too.
        let mut later = plain.job;
        later
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_KUEUE_QUEUE.into(), "q".into());
        suspend_for_kueue(&mut later);
        assert_eq!(later.spec.unwrap().suspend, Some(true));
    }

    /// The main container's environment: plain values, and the Secret keys of the others.
    fn environment_of(objects: &Objects) -> BTreeMap<String, String> {
        let pod = objects
            .job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let main = pod
            .containers
            .iter()
            .find(|c| c.name == MAIN_CONTAINER)
            .unwrap();
        main.env
            .iter()
            .flatten()
            .map(|e| {
                let value = e.value.clone().unwrap_or_else(|| {
                    let key = &e
                        .value_from
                        .as_ref()
                        .unwrap()
                        .secret_key_ref
                        .as_ref()
                        .unwrap()
                        .key;
                    format!("secret:{key}")
                });
                (e.name.clone(), value)
            })
            .collect()
    }

    #[test]
    fn a_scheduled_flow_step_gets_windmills_reserved_variables_and_its_envs_from_the_secret() {
        let mut job = crate::testing::job();
        job.created_by = Some("bob".into());
        job.script_envs = vec!["API_KEY=s3cr=t".into(), "WM_JOB_ID=spoofed".into()];
        job.flow = Some(crate::domain::FlowStep {
            parent: crate::domain::JobId(uuid::Uuid::from_u128(1)),
            root: None,
            index: Some(2),
            step_id: Some("c".into()),
        });
        job.context.flow_path = Some("f/etl/daily".into());
        job.context.schedule_path = Some("f/etl/nightly".into());
        job.context.scheduled_for =
            chrono::DateTime::parse_from_rfc3339("2026-12-01T02:00:00.250Z")
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc));
        let objects = render_with(&job, 1, "n", None, Some("http://windmill:8000"));
        let env = environment_of(&objects);
        assert_eq!(env["WM_STATE_PATH"], "f/etl/daily/c_bob", "{env:?}");
        assert_eq!(env["WM_FLOW_PATH"], "f/etl/daily");
        assert_eq!(env["WM_SCHEDULE_PATH"], "f/etl/nightly");
        assert_eq!(env["WM_SCHEDULED_FOR"], "2026-12-01T02:00:00Z");
        assert_eq!(
            env["WM_ROOT_JOB_ID"],
            job.flow.as_ref().unwrap().parent.to_string()
        );
        assert_eq!(env["WM_ROOT_FLOW_JOB_ID"], "");
        assert_eq!(
            env["WM_USERNAME"], "bob",
            "Windmill's username is created_by"
        );
        assert_eq!(env["BASE_INTERNAL_URL"], "http://windmill:8000");
        assert!(
            env["WM_OBJECT_PATH"].starts_with("f_etl_daily/f_etl_nightly/c/"),
            "{}",
            env["WM_OBJECT_PATH"]
        );
        assert_eq!(
            env["API_KEY"], "secret:env.API_KEY",
            "a script env comes from the Secret"
        );
        assert_eq!(env["WM_JOB_ID"], job.id.to_string(), "reserved names win");
        let secret = objects.secret.data.as_ref().unwrap();
        assert_eq!(secret["env.API_KEY"].0, b"s3cr=t");
        let spec = serde_json::to_string(&objects.job).unwrap();
        assert!(!spec.contains("s3cr=t"), "no env value in the Job spec");
    }

    #[test]
    fn the_same_job_renders_byte_identical_objects() {
        let (_, first) = rendered("def main(x, b):\n    return x\n", "n1");
        let (_, second) = rendered("def main(x, b):\n    return x\n", "n1");
        assert_eq!(first, second);
    }

    #[test]
    fn pods_are_locked_down_by_default() {
        let (objects, _) = rendered("# k8s: memory=512Mi\ndef main(x, b):\n    return x\n", "n");
        let job = objects.job.spec.unwrap();
        assert_eq!(job.backoff_limit, Some(0));
        assert_eq!(job.active_deadline_seconds, Some(900 + 60));
        assert!(job.ttl_seconds_after_finished.is_some());
        let pod = job.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        for container in pod.init_containers.unwrap().iter().chain(&pod.containers) {
            let sc = container.security_context.as_ref().unwrap();
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{}",
                container.name
            );
        }
        let main = &pod.containers[0];
        assert_eq!(
            main.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
            "512Mi"
        );
        assert_eq!(main.image.as_deref(), Some("python:3.12-slim"));
        // Secrets stay in the Secret: the token reaches the pod by reference, never by value.
        let env = main.env.as_ref().unwrap();
        let token = env.iter().find(|e| e.name == "WM_TOKEN").unwrap();
        assert!(token.value.is_none() && token.value_from.is_some());
        let secret = objects.secret.data.unwrap();
        assert_eq!(secret["args.json"].0, br#"{"b":[1,2],"x":1}"#);
        assert_eq!(objects.secret.immutable, Some(true));
    }

    #[test]
    fn every_object_carries_the_names_and_labels_that_find_it_again() {
        let (objects, _) = rendered("def main(x, b):\n    return x\n", "n");
        let name = objects.job.metadata.name.clone().unwrap();
        assert!(name.starts_with("wm-") && name.ends_with("-2"), "{name}");
        for meta in [&objects.job.metadata, &objects.secret.metadata] {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[LABEL_MANAGED_BY], MANAGER);
            assert_eq!(labels[LABEL_ATTEMPT], "2");
            assert_eq!(meta.name.as_ref(), Some(&name));
        }
        let data = objects.secret.data.unwrap();
        assert!(
            data.contains_key("main.py")
                && data.contains_key("wrapper.py")
                && data.contains_key("job.json")
        );
    }
}
