//! The pod of one attempt: its containers (the runner's init container, then the job's main
//! container), volumes, resources, environment and placement, from the job's pod settings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecretVolumeSource, SecurityContext,
    Toleration, TopologySpreadConstraint, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{
    Context, LABEL_MANAGED_BY, LABEL_SCRIPT, MAIN_CONTAINER, MANAGER, RUNNER_CONTAINER,
    SECRET_FILES, object_name,
};
use crate::config::Settings;
use crate::domain::Job;
use crate::hints::{self, AffinityPreset, PodSettings};
use crate::runner;

/// The uid and gid jobs run as (non-root).
const RUN_AS: i64 = 65532;

/// The pod template of one attempt; `labels` and `annotations` are the attempt's own (ours win
/// over the hints'); `code_keys` are the Secret's keys of `/flext/job`.
pub(super) fn template(
    job: &Job,
    cx: &Context<'_>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    code_keys: &[String],
) -> PodTemplateSpec {
    let settings = cx.settings;
    let pod = cx.pod;
    let mut pod_labels = values(&pod.labels);
    // Ours last: the hints never override them (they are rejected earlier too).
    pod_labels.extend(labels.clone());
    pod_labels.insert(LABEL_SCRIPT.to_owned(), script_label(job));
    let mut pod_annotations = values(&pod.annotations);
    pod_annotations.extend(annotations.clone());

    let code = Code::Secret {
        name: object_name(job, cx.attempt),
        keys: code_keys,
    };
    let (volumes, mounts) = volumes(&code, pod);
    let main = main_container(cx.pod, &[], super::env::environment(job, cx), mounts);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some(settings.job_template.restart_policy.clone()),
            affinity: affinity(job, pod),
            topology_spread_constraints: zone_spread(job, pod),
            containers: vec![main],
            ..spec_around(settings, pod, volumes)
        }),
    }
}

/// What every pod of ours has, cold or warm: no service-account token or service links unless
/// asked, the placement and identity the settings give, non-root under `RuntimeDefault`
/// seccomp, the runner's init container and `volumes`. The caller adds the main container.
fn spec_around(settings: &Settings, pod: &PodSettings, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        service_account_name: pod.service_account.as_ref().map(|s| s.value.clone()),
        priority_class_name: pod.priority_class.as_ref().map(|s| s.value.clone()),
        runtime_class_name: pod.runtime_class.as_ref().map(|s| s.value.clone()),
        node_selector: (!pod.node_selector.is_empty()).then(|| values(&pod.node_selector)),
        tolerations: (!pod.tolerations.is_empty()).then(|| {
            pod.tolerations
                .iter()
                .map(|t| toleration(&t.value))
                .collect()
        }),
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
        init_containers: Some(vec![runner_container(settings)]),
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// A warm pod of a pool: the pod a job with settings `pod` would get, made before any job, its
/// runner waiting for the worker at `url` (`crate::handover`). `labels` are the pool's; no job's
/// labels, annotations, environment or deadline: the job brings those when it is handed over.
pub fn warm_pod(
    settings: &Settings,
    pod: &PodSettings,
    name: &str,
    labels: BTreeMap<String, String>,
    url: &str,
) -> Pod {
    let mut pod_labels = values(&pod.labels);
    pod_labels.extend(labels);
    let (volumes, mounts) = volumes(
        &Code::Warm {
            secret: name.to_owned(),
        },
        pod,
    );
    let plain = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
    let env = vec![
        plain("HOME", "/flext/work"),
        plain(crate::handover::URL_ENV, url),
        EnvVar {
            name: crate::handover::POD_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ];
    let main = main_container(pod, &["--warm"], env, mounts);
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(pod_labels),
            annotations: Some(values(&pod.annotations)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![main],
            ..spec_around(settings, pod, volumes)
        }),
        ..Pod::default()
    }
}

/// A map of hint values without their sources.
fn values(map: &BTreeMap<String, hints::Sourced<String>>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

/// Where a pod's job comes from.
enum Code<'a> {
    /// The attempt's Secret, as two volumes: its code keys at `/flext/job`, its args and nonce
    /// at `/flext/secret`.
    Secret {
        /// The Secret's name.
        name: String,
        /// Its code keys.
        keys: &'a [String],
    },
    /// A warm pod: its own Secret (credential, the worker's CA, nonce) at `/flext/secret`, and
    /// `/flext/job` an empty directory the runner writes the handed-over job into.
    Warm {
        /// The pod's Secret.
        secret: String,
    },
}

/// The volumes of the pod, and the main container's mounts of them.
fn volumes(code: &Code<'_>, pod: &PodSettings) -> (Vec<Volume>, Vec<VolumeMount>) {
    let keys = |volume: &str, name: &str, keys: Option<Vec<&str>>| Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_owned()),
            items: keys.map(|keys| {
                keys.into_iter()
                    .map(|key| KeyToPath {
                        key: key.to_owned(),
                        path: key.to_owned(),
                        mode: None,
                    })
                    .collect()
            }),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let (job_volume, secret_volume, job_read_only) = match code {
        Code::Secret { name, keys: code } => (
            keys("job", name, Some(code.iter().map(String::as_str).collect())),
            keys("secret", name, Some(SECRET_FILES.to_vec())),
            true,
        ),
        Code::Warm { secret } => (empty_dir("job", None), keys("secret", secret, None), false),
    };
    let mut volumes = vec![
        job_volume,
        secret_volume,
        empty_dir("bin", None),
        empty_dir("work", None),
        empty_dir("tmp", None),
    ];
    let mut mounts = vec![
        mount("job", "/flext/job", job_read_only),
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

    (volumes, mounts)
}

/// Requests and limits: cpu, memory, ephemeral storage, and GPUs when asked for.
fn resources(pod: &PodSettings) -> ResourceRequirements {
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

    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

/// Environment from the Secrets and ConfigMaps the hints name.
fn env_from(pod: &PodSettings) -> Vec<EnvFromSource> {
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

    env_from
}

/// No privileges, no root.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// Where the worker image keeps its binary (`scripts/build-image`, the Dockerfile).
pub const RUNNER_BINARY: &str = "/usr/local/bin/flext-kubernetes";

/// The init container that copies the runner out of the worker image.
fn runner_container(settings: &Settings) -> Container {
    Container {
        name: RUNNER_CONTAINER.into(),
        image: Some(settings.job_template.image.clone()),
        // By path: the worker image has no shell and sets no PATH lookup we should rely on.
        command: Some(vec![
            RUNNER_BINARY.into(),
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
        security_context: Some(restricted()),
        ..Container::default()
    }
}

/// The job's own container: the language image, started by the runner with `runner_args`
/// (`--warm` on a warm pod) and `env`.
fn main_container(
    pod: &PodSettings,
    runner_args: &[&str],
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let env_from = env_from(pod);
    let mut command = vec![
        "/flext/bin/flext-kubernetes".to_owned(),
        "runner".to_owned(),
    ];
    command.extend(runner_args.iter().map(|a| (*a).to_owned()));
    Container {
        name: MAIN_CONTAINER.into(),
        image: Some(pod.image.value.clone()),
        image_pull_policy: pod
            .pull_policy
            .as_ref()
            .map(|p| p.value.as_str().to_owned()),
        command: Some(command),
        working_dir: Some("/flext/work".into()),
        env: Some(env),
        env_from: (!env_from.is_empty()).then_some(env_from),
        resources: Some(resources(pod)),
        volume_mounts: Some(mounts),
        security_context: Some(restricted()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
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
