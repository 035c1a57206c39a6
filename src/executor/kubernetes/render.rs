//! Renders one attempt of a job into its Kubernetes objects: a ConfigMap (code, lock, wrapper,
//! `job.json`), a Secret (args, nonce, job token) and a `batch/v1` Job. Pure and deterministic:
//! the same job, attempt and nonce give byte-identical objects (maps are ordered, nothing reads
//! the clock).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job as KubeJob, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::config::Settings;
use crate::domain::Job;
use crate::hints::{self, AffinityPreset, PodSettings};
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
/// Name of the job's main container.
pub const MAIN_CONTAINER: &str = "main";
/// Name of the init container that brings the runner.
pub const RUNNER_CONTAINER: &str = "flext-runner";
/// Seconds past Windmill's timeout after which Kubernetes itself stops the Job (a backstop: the
/// worker cancels first).
const DEADLINE_MARGIN_S: u64 = 60;
/// The uid and gid jobs run as (non-root).
const RUN_AS: i64 = 65532;

/// One attempt's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// Code, lock, wrapper and `job.json`.
    pub config_map: ConfigMap,
    /// Args, nonce, job token.
    pub secret: Secret,
    /// The Job.
    pub job: KubeJob,
}

/// What rendering needs besides the job.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The worker's settings.
    pub settings: &'a Settings,
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
    let namespace = settings.cluster.namespace.clone();
    let labels = labels(job, cx.attempt, settings);
    let language = job.language.as_ref().map_or("", |l| l.as_str());
    let main_file = runner::main_file(language).unwrap_or("main.txt");
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

    let spec = RunnerSpec {
        language: language.to_owned(),
        entrypoint: job.entrypoint.clone().unwrap_or_else(|| "main".to_owned()),
        main_file: main_file.to_owned(),
        max_result_bytes: settings.executor.max_result_bytes.0,
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
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(data),
        ..ConfigMap::default()
    };

    let mut secret_data = BTreeMap::from([
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
    let secret = Secret {
        metadata: meta.clone(),
        data: Some(secret_data),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        ..Secret::default()
    };

    let job_object = KubeJob {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(settings.job_template.backoff_limit),
            active_deadline_seconds: Some(
                i64::try_from(cx.pod.timeout.value.as_secs() + DEADLINE_MARGIN_S)
                    .unwrap_or(i64::MAX),
            ),
            ttl_seconds_after_finished: Some(
                i32::try_from(settings.executor.ttl_after_finished.0.as_secs()).unwrap_or(i32::MAX),
            ),
            template: pod_template(job, cx, &name, &labels, &annotations),
            ..JobSpec::default()
        }),
        ..KubeJob::default()
    };
    Objects {
        config_map,
        secret,
        job: job_object,
    }
}

fn pod_template(
    job: &Job,
    cx: &Context<'_>,
    name: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> PodTemplateSpec {
    let settings = cx.settings;
    let pod = cx.pod;
    let mut pod_labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    // Ours last: the hints never override them (they are rejected earlier too).
    pod_labels.extend(labels.clone());
    pod_labels.insert(LABEL_SCRIPT.to_owned(), script_label(job));
    let mut pod_annotations: BTreeMap<String, String> = pod
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    pod_annotations.extend(annotations.clone());

    let mut volumes = vec![
        Volume {
            name: "job".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("bin", None),
        empty_dir("work", None),
        empty_dir("tmp", None),
    ];
    let mut mounts = vec![
        mount("job", "/flext/job", true),
        mount("secret", "/flext/secret", true),
        mount("bin", "/flext/bin", true),
        mount("work", "/flext/work", false),
        mount("tmp", "/tmp", false),
    ];
    let mut has_cache = false;
    for (i, volume) in pod.volumes.iter().enumerate() {
        let volume_name = format!("v{i}");
        match &volume.value {
            hints::Volume::Pvc {
                claim,
                mount_path,
                read_only,
            } => {
                volumes.push(Volume {
                    name: volume_name.clone(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: Some(*read_only),
                    }),
                    ..Volume::default()
                });
                mounts.push(mount(&volume_name, mount_path, *read_only));
            }
            hints::Volume::EmptyDir { mount_path, size } => {
                volumes.push(empty_dir(&volume_name, Some(Quantity(size.to_string()))));
                mounts.push(mount(&volume_name, mount_path, false));
            }
            hints::Volume::DependencyCache { mount_path } => {
                has_cache = true;
                volumes.push(empty_dir(&volume_name, None));
                mounts.push(mount(&volume_name, mount_path, false));
                mounts.push(mount(&volume_name, "/flext/cache", false));
            }
        }
    }
    if !has_cache {
        volumes.push(empty_dir("cache", None));
        mounts.push(mount("cache", "/flext/cache", false));
    }

    let mut requests = BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity(pod.cpu.value.request.to_string()),
        ),
        (
            "memory".to_owned(),
            Quantity(pod.memory.value.request.to_string()),
        ),
        (
            "ephemeral-storage".to_owned(),
            Quantity(pod.storage.value.to_string()),
        ),
    ]);
    let mut limits = BTreeMap::from([
        ("cpu".to_owned(), Quantity(pod.cpu.value.limit.to_string())),
        (
            "memory".to_owned(),
            Quantity(pod.memory.value.limit.to_string()),
        ),
        (
            "ephemeral-storage".to_owned(),
            Quantity(pod.storage.value.to_string()),
        ),
    ]);
    if pod.gpu.value > 0 {
        requests.insert(
            pod.gpu_resource.value.clone(),
            Quantity(pod.gpu.value.to_string()),
        );
        limits.insert(
            pod.gpu_resource.value.clone(),
            Quantity(pod.gpu.value.to_string()),
        );
    }

    let mut env_from = Vec::new();
    for secret in &pod.env_from_secrets {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.value.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    for config_map in &pod.env_from_configmaps {
        env_from.push(EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map.value.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }

    let restricted = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    };
    let init = Container {
        name: RUNNER_CONTAINER.into(),
        image: Some(settings.job_template.image.clone()),
        command: Some(vec![
            "flext-kubernetes".into(),
            "install-runner".into(),
            "/flext/bin".into(),
        ]),
        volume_mounts: Some(vec![mount("bin", "/flext/bin", false)]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("10m".into())),
                ("memory".to_owned(), Quantity("16Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("64Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(restricted.clone()),
        ..Container::default()
    };
    let main = Container {
        name: MAIN_CONTAINER.into(),
        image: Some(pod.image.value.clone()),
        image_pull_policy: pod
            .pull_policy
            .as_ref()
            .map(|p| p.value.as_str().to_owned()),
        command: Some(vec!["/flext/bin/flext-kubernetes".into(), "runner".into()]),
        working_dir: Some("/flext/work".into()),
        env: Some(environment(job, cx)),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        security_context: Some(restricted),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some(settings.job_template.restart_policy.clone()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            service_account_name: pod.service_account.as_ref().map(|s| s.value.clone()),
            priority_class_name: pod.priority_class.as_ref().map(|s| s.value.clone()),
            runtime_class_name: pod.runtime_class.as_ref().map(|s| s.value.clone()),
            node_selector: (!pod.node_selector.is_empty()).then(|| {
                pod.node_selector
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect()
            }),
            tolerations: (!pod.tolerations.is_empty()).then(|| {
                pod.tolerations
                    .iter()
                    .map(|t| toleration(&t.value))
                    .collect()
            }),
            affinity: affinity(job, pod),
            topology_spread_constraints: zone_spread(job, pod),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![init]),
            containers: vec![main],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// Windmill's job environment (`WM_*`), the job token from the Secret when there is one.
fn environment(job: &Job, cx: &Context<'_>) -> Vec<EnvVar> {
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("WM_WORKSPACE", job.workspace.clone());
    vars.insert("WM_JOB_ID", job.id.to_string());
    vars.insert("WM_WORKER_GROUP", cx.settings.windmill.worker_group.clone());
    vars.insert("HOME", "/flext/work".into());
    if let Some(path) = &job.path {
        vars.insert("WM_JOB_PATH", path.clone());
    }
    if let Some(flow) = &job.flow {
        vars.insert("WM_FLOW_JOB_ID", flow.parent.to_string());
        vars.insert(
            "WM_ROOT_FLOW_JOB_ID",
            flow.root.unwrap_or(flow.parent).to_string(),
        );
        if let Some(step) = &flow.step_id {
            vars.insert("WM_FLOW_STEP_ID", step.clone());
        }
    }
    if let Some(who) = &job.permissioned_as {
        vars.insert("WM_PERMISSIONED_AS", who.clone());
        if let Some(user) = who.strip_prefix("u/") {
            vars.insert("WM_USERNAME", user.to_owned());
        }
    }
    if let Some(email) = &job.permissioned_as_email {
        vars.insert("WM_EMAIL", email.clone());
    }
    if let Some(url) = cx.base_url {
        vars.insert("WM_BASE_URL", url.to_owned());
        vars.insert("BASE_INTERNAL_URL", url.to_owned());
    }
    let mut env: Vec<EnvVar> = vars
        .into_iter()
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            ..EnvVar::default()
        })
        .collect();
    if cx.token.is_some() {
        env.push(EnvVar {
            name: "WM_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: object_name(job, cx.attempt),
                    key: "token".into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env
}

fn empty_dir(name: &str, size: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: size,
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn toleration(t: &hints::Toleration) -> Toleration {
    Toleration {
        key: Some(t.key.clone()),
        operator: Some(t.operator.as_str().to_owned()),
        value: t.value.clone(),
        effect: t.effect.map(|e| e.as_str().to_owned()),
        toleration_seconds: t.toleration_seconds,
    }
}

/// Label: a hash of the script path, for spreading one script's pods.
pub const LABEL_SCRIPT: &str = "flext.dev/script";

fn script_label(job: &Job) -> String {
    runner::signature::short_hash(job.path.as_deref().unwrap_or_default())
}

fn script_selector(job: &Job) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
            (LABEL_SCRIPT.to_owned(), script_label(job)),
        ])),
        ..LabelSelector::default()
    }
}

fn affinity(job: &Job, pod: &PodSettings) -> Option<Affinity> {
    pod.affinity
        .iter()
        .any(|a| a.value == AffinityPreset::AntiAffinityByScript)
        .then(|| Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(script_selector(job)),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..PodAffinityTerm::default()
                        },
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        })
}

fn zone_spread(job: &Job, pod: &PodSettings) -> Option<Vec<TopologySpreadConstraint>> {
    pod.affinity
        .iter()
        .any(|a| a.value == AffinityPreset::ZoneSpread)
        .then(|| {
            vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(script_selector(job)),
                ..TopologySpreadConstraint::default()
            }]
        })
}

/// The objects as one YAML stream (ConfigMap, Secret, Job), for `flext-kubernetes render`.
pub fn to_yaml(objects: &Objects) -> Result<String, serde_yaml_ng::Error> {
    Ok(format!(
        "{}---\n{}---\n{}",
        serde_yaml_ng::to_string(&objects.config_map)?,
        serde_yaml_ng::to_string(&objects.secret)?,
        serde_yaml_ng::to_string(&objects.job)?
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    fn rendered(code: &str, nonce: &str) -> (Objects, String) {
        let config = Config::from_yaml("", &std::collections::BTreeMap::new()).unwrap();
        let mut job = crate::testing::job();
        job.id = crate::domain::JobId(uuid::Uuid::from_u128(0x1234));
        job.code = Some(code.into());
        job.args = json!({"x": 1, "b": [1, 2]});
        let pod = hints::resolve(
            &config.settings,
            &job.tag,
            "python3",
            code,
            hints::WindmillFields::default(),
        )
        .unwrap();
        let args = job.args_object().unwrap();
        let cx = Context {
            settings: &config.settings,
            pod: &pod,
            attempt: 2,
            nonce,
            args: &args,
            token: Some("tok"),
            base_url: None,
        };
        let objects = render(&job, &cx);
        let yaml = to_yaml(&objects).unwrap();
        (objects, yaml)
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
        for meta in [
            &objects.job.metadata,
            &objects.config_map.metadata,
            &objects.secret.metadata,
        ] {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[LABEL_MANAGED_BY], MANAGER);
            assert_eq!(labels[LABEL_ATTEMPT], "2");
            assert_eq!(meta.name.as_ref(), Some(&name));
        }
        let data = objects.config_map.data.unwrap();
        assert!(
            data.contains_key("main.py")
                && data.contains_key("wrapper.py")
                && data.contains_key("job.json")
        );
    }
}
