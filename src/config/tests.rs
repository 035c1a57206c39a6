use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::hints::Millicores;
use crate::testing::HINTS_CONFIG;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const FLEXCORE: &str = r#"
runtime:
  type: kubernetes
  config:
    windmill:
      worker_group: k8s
      tags: [k8s, k8s-gpu]
      finalize_tag: flow
    cluster:
      kubeconfig: ~/.kube/config
      context: production-cluster
      namespace: flext-runtime
    resources:
      default_cpu: "500m"
      default_memory: "1Gi"
      default_storage: "10Gi"
    job_template:
      image: ghcr.io/flext/flext-kubernetes:latest
      restart_policy: Never
      backoff_limit: 0
    profiles:
      k8s-gpu: { gpu: 1, node_selector: { pool: gpu } }
    limits:
      max_cpu: "8"
      max_memory: "32Gi"
"#;

#[test]
fn accepts_the_flexcore_runtime_schema() {
    let config = Config::from_yaml(FLEXCORE, &env(&[])).unwrap();
    assert_eq!(config.settings.windmill.tags, ["k8s", "k8s-gpu"]);
    assert_eq!(
        config.settings.cluster.context.as_deref(),
        Some("production-cluster")
    );
    assert!(config.settings.profiles.contains_key("k8s-gpu"));
}

#[test]
fn env_overrides_file_values() {
    let e = env(&[
        ("FLEXT__WORKER__CONCURRENCY", "8"),
        ("FLEXT__WINDMILL__TAGS", "[a, b]"),
    ]);
    let config = Config::from_yaml(FLEXCORE, &e).unwrap();
    assert_eq!(config.settings.worker.concurrency, 8);
    assert_eq!(config.settings.windmill.tags, ["a", "b"]);
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let err = Config::from_yaml(
        "runtime:\n  type: kubernetes\n  config:\n    worker:\n      concurency: 3\n",
        &env(&[]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("runtime.config.worker"), "{text}");
    assert!(text.contains("concurency"), "{text}");
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let err = Config::from_yaml("worker:\n  concurrency: many\n", &env(&[])).unwrap_err();
    assert!(
        err.to_string()
            .contains("runtime.config.worker.concurrency"),
        "{err}"
    );
}

#[test]
fn finalize_tag_among_our_tags_is_rejected() {
    let err = Config::from_yaml("windmill:\n  tags: [k8s, flow]\n", &env(&[])).unwrap_err();
    assert!(err.to_string().contains("finalize_tag"), "{err}");
}

#[test]
fn other_runtime_types_are_rejected() {
    let err = Config::from_yaml("runtime:\n  type: docker\n", &env(&[])).unwrap_err();
    assert!(err.to_string().contains("runtime.type"), "{err}");
}

#[test]
fn secrets_come_from_env_or_files_and_are_redacted() {
    let dir = std::env::temp_dir().join(format!("flext-secret-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    let e = env(&[
        (
            "FLEXT_DATABASE_URL",
            "postgres://windmill:hunter2@db:5432/windmill?password=hunter2",
        ),
        ("FLEXT_WINDMILL_TOKEN_FILE", token_file.to_str().unwrap()),
    ]);
    let config = Config::from_yaml("", &e).unwrap();
    assert_eq!(
        config.windmill_token.as_ref().unwrap().expose(),
        "s3cr3t-token"
    );
    let shown = format!("{}\n{:?}", config.to_redacted_yaml(), config);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("postgres://windmill:***@db:5432/windmill"),
        "{shown}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn heartbeat_slower_than_the_zombie_window_is_rejected() {
    let err = Config::from_yaml("worker:\n  heartbeat_interval: 90s\n", &env(&[])).unwrap_err();
    assert!(err.to_string().contains("heartbeat_interval"), "{err}");
}

// ---- hint sections: checked by `hints`, named with their path here --------------------------------------------------------------------------------

#[test]
fn config_errors_name_the_field() {
    for (yaml, field) in [
        (
            "resources: { default_cpu: lots }",
            "runtime.config.resources.default_cpu",
        ),
        (
            "resources: { default_memory: 0 }",
            "runtime.config.resources.default_memory",
        ),
        (
            "resources: { gpu_resource: 'a b' }",
            "runtime.config.resources.gpu_resource",
        ),
        (
            "limits: { max_cpu: eight }",
            "runtime.config.limits.max_cpu",
        ),
        (
            "limits: { max_memory: 0 }",
            "runtime.config.limits.max_memory",
        ),
        ("limits: { max_cpu: 100m }", "runtime.config.limits.max_cpu"),
        (
            "limits: { on_violation: ignore }",
            "runtime.config.limits.on_violation",
        ),
        (
            "limits: { allowed_images: [''] }",
            "runtime.config.limits.allowed_images",
        ),
        (
            "limits: { allowed_node_selectors: { 'bad key': [x] } }",
            "runtime.config.limits.allowed_node_selectors.bad key",
        ),
        ("limits: { maxcpu: 1 }", "runtime.config.limits"),
        (
            "profiles: { k8s-gpu: { gpus: 1 } }",
            "runtime.config.profiles.k8s-gpu",
        ),
        (
            "profiles: { k8s-gpu: { cpu: 2x } }",
            "runtime.config.profiles.k8s-gpu.cpu",
        ),
        (
            "profiles: { k8s-gpu: { image: 'a b' } }",
            "runtime.config.profiles.k8s-gpu.image",
        ),
        (
            "profiles: { k8s-gpu: { tolerations: [{ key: x, colour: red }] } }",
            "runtime.config.profiles.k8s-gpu.tolerations",
        ),
        (
            "profiles: { k8s-gpu: { gpu: 9 } }\nlimits: { max_gpu: 1 }",
            "runtime.config.profiles.k8s-gpu.gpu",
        ),
        (
            "profiles: { k8s-gpu: { labels: { flext.dev/attempt: '9' } } }",
            "runtime.config.profiles.k8s-gpu.labels",
        ),
        (
            "profiles: { k8s: { timeout: 30d } }",
            "runtime.config.profiles.k8s.timeout",
        ),
        (
            "job_template: { system_retries: 1000 }",
            "runtime.config.job_template.system_retries",
        ),
    ] {
        let err = Config::from_yaml(yaml, &BTreeMap::new())
            .expect_err(yaml)
            .to_string();
        assert!(err.contains(&format!("`{field}")), "{yaml}: {err}");
    }
}

#[test]
fn typed_sections_survive_the_effective_config_printout() {
    let config = Config::from_yaml(HINTS_CONFIG, &BTreeMap::new()).unwrap();
    let shown = config.to_redacted_yaml();
    // `check` prints `secrets:` next to `runtime:`; drop it and the rest must parse back.
    let shown_runtime = shown.split("\nsecrets:").next().unwrap();
    let reparsed = Config::from_yaml(shown_runtime, &BTreeMap::new()).unwrap();
    assert_eq!(reparsed.settings.profiles, config.settings.profiles);
    assert_eq!(reparsed.settings.limits, config.settings.limits);
}

#[test]
fn limits_can_come_from_the_environment() {
    let env: BTreeMap<String, String> =
        [("FLEXT__LIMITS__MAX_CPU".to_owned(), "4".to_owned())].into();
    let config = Config::from_yaml("", &env).unwrap();
    assert_eq!(config.settings.limits.max_cpu, Some(Millicores(4000)));
}

/// `hints` tests build their own copy of these sections; this is the check that the config's
/// real defaults give the pod those tests expect.
#[test]
fn the_default_settings_give_the_documented_pod() {
    let config = Config::from_yaml("", &BTreeMap::new()).unwrap();
    let pod = crate::hints::resolve(
        &config.settings.hints(),
        "k8s",
        "python3",
        "",
        crate::hints::WindmillFields::default(),
    )
    .unwrap();
    assert_eq!(pod.image.value, "python:3.12-slim");
    assert_eq!(pod.cpu.value.limit, Millicores(500));
    assert_eq!(pod.memory.value.limit, crate::hints::Bytes(1 << 30));
    assert_eq!(pod.storage.value, crate::hints::Bytes(10 << 30));
    assert_eq!(pod.gpu_resource.value, "nvidia.com/gpu");
    assert_eq!(pod.timeout.value, Duration::from_secs(900));
    assert_eq!(pod.retries.value, 3);
}

#[test]
fn warm_pools_name_a_claimed_tag_a_runnable_language_a_size_and_where_pods_reach_the_worker() {
    let base = "windmill: {tags: [k8s]}\nworker: {handover: {listen: '127.0.0.1:0'}}\n";
    let ok = Config::from_yaml(
        &format!("{base}warm_pools: [{{tag: k8s, language: python3, size: 2}}]"),
        &env(&[]),
    )
    .unwrap();
    assert_eq!(ok.settings.warm_pools[0].name(), "k8s-python3");
    for (pools, extra, wanted) in [
        ("[{tag: other, size: 1}]", "", "is not one of windmill.tags"),
        ("[{tag: k8s, language: bash, size: 0}]", "", "out of range"),
        ("[{tag: k8s, size: 1}]", "", "add `language:`"),
        (
            "[{tag: k8s, language: cobol, size: 1}]",
            "",
            "does not run `cobol`",
        ),
        (
            "[{tag: k8s, language: bash, size: 1}, {tag: k8s, language: bash, size: 2}]",
            "",
            "a second pool for `k8s-bash`",
        ),
        (
            "[{tag: k8s, language: bash, size: 1}]",
            "profiles: {k8s: {affinity: [anti-affinity]}}\n",
            "scheduling preset",
        ),
    ] {
        let error = Config::from_yaml(&format!("{base}{extra}warm_pools: {pools}"), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains(wanted), "{pools}: {error}");
    }
    let everywhere = Config::from_yaml(
        "windmill: {tags: [k8s]}\nwarm_pools: [{tag: k8s, language: bash, size: 1}]",
        &env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        everywhere.contains("worker.handover.advertise") && everywhere.contains("POD_IP"),
        "{everywhere}"
    );
}
