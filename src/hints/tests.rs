use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde::Deserialize;

use super::*;
use crate::testing::HINTS_CONFIG as CONFIG;
use crate::units::HumanDuration;

/// The worker-config sections hints read, owned and parsed from YAML written as in the config
/// file. The config module depends on this one, so these tests build the sections themselves,
/// with the config's defaults (`config::tests` checks the real ones give the same pod).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Sections {
    windmill: WindmillTimeouts,
    resources: Resources,
    job_template: JobTemplate,
    executor: Images,
    profiles: Profiles,
    limits: Limits,
}

#[derive(Deserialize)]
#[serde(default)]
struct WindmillTimeouts {
    default_timeout: HumanDuration,
    max_timeout: HumanDuration,
}

impl Default for WindmillTimeouts {
    fn default() -> Self {
        Self {
            default_timeout: HumanDuration(Duration::from_secs(900)),
            max_timeout: HumanDuration(Duration::from_secs(7 * 86400)),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct JobTemplate {
    image: String,
    system_retries: u32,
}

impl Default for JobTemplate {
    fn default() -> Self {
        Self {
            image: "ghcr.io/flext/flext-kubernetes:latest".into(),
            system_retries: 3,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct Images {
    images: BTreeMap<String, String>,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            images: BTreeMap::from([("python3".to_owned(), "python:3.12-slim".to_owned())]),
        }
    }
}

impl Sections {
    fn hints(&self) -> HintSettings<'_> {
        HintSettings {
            service_account: None,
            resources: &self.resources,
            image: &self.job_template.image,
            images: &self.executor.images,
            system_retries: self.job_template.system_retries,
            default_timeout: self.windmill.default_timeout.0,
            max_timeout: self.windmill.max_timeout.0,
            profiles: &self.profiles,
            limits: &self.limits,
        }
    }
}

fn settings(yaml: &str) -> Sections {
    let sections: Sections = if yaml.trim().is_empty() {
        Sections::default()
    } else {
        serde_yaml_ng::from_str(yaml).unwrap()
    };
    sections.hints().validate().unwrap();
    sections
}

fn resolve_py(settings: &Sections, tag: &str, code: &str) -> Result<PodSettings> {
    resolve(
        &settings.hints(),
        tag,
        "python3",
        code,
        WindmillFields::default(),
    )
}

fn parse_py(code: &str) -> Result<HintSet> {
    parse_annotations("python3", code.as_bytes())
}

// ---- parsing -------------------------------------------------------------------------------

#[test]
fn every_key_parses_from_annotations() {
    let code = r#"#!/usr/bin/env python3
# A nightly job.
# k8s: cpu=500m..2 memory=4Gi storage=20Gi gpu=1 image=ghcr.io/acme/etl:1.4 pull_policy=Always
#k8s: node_selector=pool:gpu,topology.kubernetes.io/zone:eu-west-1a toleration=nvidia.com/gpu:NoSchedule
# k8s: affinity=zone-spread,anti-affinity priority_class=batch service_account=etl runtime_class=gvisor
# k8s: env_from_secret=etl-db,etl-s3 env_from_configmap=etl-settings
# k8s: volume=pvc:datasets:/mnt/data:ro volume=empty:/scratch:1Gi,cache:/cache
# k8s: timeout=2h retries=5 label.team=data annotation.note="nightly run, owner: data"

import pandas
"#;
    let h = parse_py(code).unwrap();
    let cpu = h.cpu.unwrap();
    assert_eq!(cpu.value.request, Millicores(500));
    assert_eq!(cpu.value.limit, Millicores(2000));
    assert_eq!(cpu.source, Source::Annotation { line: 3 });
    assert_eq!(h.memory.unwrap().value, RequestLimit::exact(Bytes(4 << 30)));
    assert_eq!(h.storage.unwrap().value, Bytes(20 << 30));
    assert_eq!(h.gpu.unwrap().value, 1);
    assert_eq!(h.image.unwrap().value, "ghcr.io/acme/etl:1.4");
    assert_eq!(h.pull_policy.unwrap().value, PullPolicy::Always);
    assert_eq!(h.node_selector["pool"].value, "gpu");
    assert_eq!(
        h.node_selector["pool"].source,
        Source::Annotation { line: 4 }
    );
    assert_eq!(
        h.node_selector["topology.kubernetes.io/zone"].value,
        "eu-west-1a"
    );
    assert_eq!(
        h.tolerations[0].value.to_string(),
        "nvidia.com/gpu:NoSchedule"
    );
    assert_eq!(
        h.affinity.iter().map(|a| a.value).collect::<Vec<_>>(),
        [
            AffinityPreset::ZoneSpread,
            AffinityPreset::AntiAffinityByScript
        ]
    );
    assert_eq!(h.priority_class.unwrap().value, "batch");
    assert_eq!(h.service_account.unwrap().value, "etl");
    assert_eq!(h.runtime_class.unwrap().value, "gvisor");
    assert_eq!(h.env_from_secrets.len(), 2);
    assert_eq!(h.env_from_configmaps[0].value, "etl-settings");
    assert_eq!(
        h.volumes
            .iter()
            .map(|v| v.value.to_string())
            .collect::<Vec<_>>(),
        [
            "pvc:datasets:/mnt/data:ro",
            "empty:/scratch:1Gi",
            "cache:/cache"
        ]
    );
    assert_eq!(h.timeout.unwrap().value.0, Duration::from_secs(7200));
    assert_eq!(h.retries.unwrap().value, 5);
    assert_eq!(h.labels["team"].value, "data");
    assert_eq!(h.annotations["note"].value, "nightly run, owner: data");
    assert_eq!(h.annotations["note"].source, Source::Annotation { line: 8 });
}

#[test]
fn each_language_reads_its_own_comment_marker() {
    for (language, code) in [
        ("python3", "# k8s: cpu=2\n"),
        ("bash", "#!/bin/bash\n# k8s: cpu=2\nset -e\n"),
        ("bun", "// k8s: cpu=2\nexport async function main() {}\n"),
        ("deno", "#!/usr/bin/env -S deno run\n// k8s: cpu=2\n"),
        ("nativets", "  // k8s: cpu=2\n"),
        ("go", "// k8s: cpu=2\npackage inner\n"),
        ("postgresql", "-- k8s: cpu=2\nselect 1;\n"),
        ("python3", "\u{feff}# k8s: cpu=2\r\n\r\nimport os\r\n"),
    ] {
        let h = parse_annotations(language, code.as_bytes()).unwrap();
        assert_eq!(
            h.cpu.map(|c| c.value.limit),
            Some(Millicores(2000)),
            "{language}: {code:?}"
        );
    }
}

#[test]
fn only_the_leading_comment_block_counts() {
    for code in [
        "import os\n# k8s: cpu=2\n",
        "\"\"\"\nk8s: cpu=2\n\"\"\"\n",
        "x = 1  # k8s: cpu=2\n",
        "// k8s: cpu=2\n", // wrong marker for python: code, so the block ends
        "#!/usr/bin/env python3\nimport os\n# k8s: cpu=2\n",
    ] {
        assert_eq!(parse_py(code).unwrap(), HintSet::default(), "{code:?}");
    }
    // A shebang is skipped only on the first line; other comments and blanks may come first.
    let h = parse_py("#!/usr/bin/env python3\n\n# requirements:\n#   pandas\n\n# k8s: gpu=1\n")
        .unwrap();
    assert_eq!(h.gpu.unwrap().source, Source::Annotation { line: 6 });
    // In TypeScript a `#` line is code, except a shebang on line 1.
    let h = parse_annotations("bun", b"# k8s: cpu=2\n// k8s: gpu=1\n").unwrap();
    assert_eq!(h, HintSet::default());
}

/// A malformed or hostile script: the error variant and a fragment of its message.
#[test]
fn bad_annotations_are_errors_naming_line_and_key() {
    let huge = format!("# k8s: annotation.x={}\n", "a".repeat(1 << 20));
    let many: String = (0..300)
        .map(|i| format!("# k8s: label.l{i}=v\n"))
        .collect::<Vec<_>>()
        .concat();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            "# k8s: cpus=2\n".into(),
            "line 1: unknown hint key `cpus`; did you mean cpu?",
        ),
        ("typo", "# k8s: memroy=2Gi\n".into(), "did you mean memory?"),
        (
            "pod-spec spelling",
            "# k8s: nodeSelector=pool:gpu\n".into(),
            "did you mean node_selector?",
        ),
        (
            "separate limit key",
            "# k8s: memory_limit=4Gi\n".into(),
            "memory=REQUEST..LIMIT",
        ),
        (
            "admin-only key",
            "# k8s: gpu_resource=amd.com/gpu\n".into(),
            "worker's admin",
        ),
        (
            "gibberish key",
            "# k8s: zzzzzzzzzz=1\n".into(),
            "known keys: cpu, memory",
        ),
        (
            "bad cpu",
            "# k8s: cpu=two\n".into(),
            "line 1: bad value for `cpu`: `two` is not a CPU quantity",
        ),
        ("bad memory unit", "# k8s: memory=4GB\n".into(), "Gi"),
        (
            "negative",
            "# k8s: memory=-1Gi\n".into(),
            "bad value for `memory`",
        ),
        ("zero", "# k8s: cpu=0\n".into(), "more than 0"),
        ("inverted range", "# k8s: cpu=4..2\n".into(), "above limit"),
        ("bad gpu", "# k8s: gpu=1.5\n".into(), "gpu=1"),
        ("too many gpus", "# k8s: gpu=1000\n".into(), "more than 64"),
        (
            "bad image",
            "# k8s: image=ghcr.io/x/../y\n".into(),
            "image reference",
        ),
        (
            "bad pull policy",
            "# k8s: pull_policy=always\n".into(),
            "IfNotPresent",
        ),
        (
            "bad selector",
            "# k8s: node_selector=pool=gpu\n".into(),
            "label:value",
        ),
        (
            "bad toleration",
            "# k8s: toleration=x:Sometimes\n".into(),
            "taint effect",
        ),
        (
            "bad affinity",
            "# k8s: affinity=close\n".into(),
            "zone-spread",
        ),
        (
            "bad name",
            "# k8s: service_account=Admin\n".into(),
            "valid Kubernetes name",
        ),
        (
            "bad volume",
            "# k8s: volume=nfs:/x\n".into(),
            "pvc:NAME:/path",
        ),
        (
            "volume escaping",
            "# k8s: volume=pvc:data:/mnt/../etc\n".into(),
            "without `..`",
        ),
        ("bad timeout", "# k8s: timeout=soon\n".into(), "duration"),
        ("zero timeout", "# k8s: timeout=0s\n".into(), "more than 0"),
        (
            "too many retries",
            "# k8s: retries=1000\n".into(),
            "more than 100",
        ),
        (
            "bad label",
            "# k8s: label.team=has space\n".into(),
            "Syntax",
        ),
        (
            "bad label value",
            "# k8s: label.team=a/b\n".into(),
            "label value",
        ),
        (
            "bad label key",
            "# k8s: label.-x=y\n".into(),
            "not a valid key",
        ),
        (
            "no equals",
            "# k8s: cpu 2\n".into(),
            "line 1: `cpu` is not key=value",
        ),
        (
            "empty value",
            "# k8s: cpu=\n".into(),
            "empty value; e.g. cpu=2",
        ),
        (
            "open quote",
            "# k8s: annotation.a=\"x\n".into(),
            "quote is not closed",
        ),
        (
            "duplicate",
            "# k8s: cpu=1\n# k8s: memory=1Gi cpu=2\n".into(),
            "line 2: `cpu` is already set on line 1",
        ),
        (
            "duplicate selector",
            "# k8s: node_selector=pool:a,pool:b\n".into(),
            "`node_selector.pool` is already set",
        ),
        (
            "duplicate mount",
            "# k8s: volume=cache:/x volume=empty:/x:1Gi\n".into(),
            "volume at /x",
        ),
        (
            "duplicate label",
            "# k8s: label.a=1 label.a=2\n".into(),
            "`label.a` is already set",
        ),
        (
            "huge line",
            huge,
            "line 1: the `k8s:` hint line is 1048596 bytes, more than 4096",
        ),
        ("too many", many, "more than 256 hints"),
        (
            "NUL in value",
            "# k8s: image=ghcr.io/a\0b\n".into(),
            "line 1: the value of `image` contains control characters",
        ),
        (
            "escape in value",
            "# k8s: annotation.x=\"\u{1b}[2J\"\n".into(),
            "control characters",
        ),
        (
            "NUL in key",
            "# k8s: cp\0u=1\n".into(),
            "unknown hint key `cp\\0u`",
        ),
    ];
    for (name, code, expected) in cases {
        let err = parse_py(&code).expect_err(name);
        let text = format!("{err:?} {err}");
        assert!(text.contains(expected), "{name}: {text}");
    }
}

/// Someone fixing a script wants every problem at once, as a compiler lists them: one line each,
/// each with its fix, not only the first.
#[test]
fn every_bad_hint_is_reported_at_once_one_per_line() {
    let err = parse_py("# k8s: memory=-1 gpu=abc nonsense\n").unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("line 1: bad value for `memory`"),
        "{text}"
    );
    assert!(lines[0].contains("write it like"), "{text}");
    assert!(
        lines[1].starts_with("line 1: bad value for `gpu`"),
        "{text}"
    );
    assert!(lines[1].contains("write gpu=1"), "{text}");
    assert!(lines[2].contains("`nonsense` is not key=value"), "{text}");
    assert!(lines[2].contains("write hints like cpu=2"), "{text}");

    // Rejections by the limits are listed together too, after the hints that do not parse.
    let s = settings(CONFIG);
    let err = resolve_py(
        &s,
        "k8s",
        "# k8s: memory=64Gi gpu=abc\n# k8s: image=docker.io/evil:1\n",
    )
    .unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("line 1: bad value for `gpu`"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("limits.max_memory")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("limits.allowed_images")),
        "{text}"
    );
    let failure = err.to_job_failure();
    assert_eq!(failure.message, text);
}

/// A hostile script cannot make the report as long as itself.
#[test]
fn the_report_stops_after_max_problems() {
    let code = "# k8s: cpu=x\n".repeat(MAX_PROBLEMS * 3);
    let err = parse_py(&code).unwrap_err();
    assert_eq!(err.as_slice().len(), MAX_PROBLEMS + 1);
    assert_eq!(
        err.as_slice().last(),
        Some(&HintError::TooManyProblems {
            line: MAX_PROBLEMS + 1,
            max: MAX_PROBLEMS
        })
    );
}

#[test]
fn non_utf8_hint_lines_are_errors_but_other_bytes_are_not_read() {
    let err = parse_annotations("python3", b"# k8s: cpu=2\n# k8s: image=\xff\xfe\n").unwrap_err();
    assert_eq!(err.as_slice(), [HintError::NotUtf8 { line: 2 }]);
    // Latin-1 in an ordinary comment, or in the code below the block, is not our business.
    let h = parse_annotations("python3", b"# caf\xe9\n# k8s: gpu=1\nx = '\xff'\n").unwrap();
    assert_eq!(h.gpu.unwrap().value, 1);
}

#[test]
fn unknown_languages_are_named() {
    let err = parse_annotations("cobol", b"").unwrap_err();
    assert!(err.to_string().contains("cobol"), "{err}");
}

#[test]
fn a_long_ordinary_comment_block_is_fine() {
    let code = "# ".to_owned() + &"x".repeat(1 << 20) + "\n# k8s: cpu=1\n";
    assert!(parse_py(&code).unwrap().cpu.is_some());
}

// ---- precedence ----------------------------------------------------------------------------

#[test]
fn precedence_is_defaults_then_profile_then_annotations_then_windmill() {
    let s = settings(CONFIG);
    let code = "# k8s: memory=8Gi node_selector=pool:general timeout=1h\n# k8s: toleration=dedicated=ml:NoExecute:60 label.team=etl\n";
    let pod = resolve(
        &s.hints(),
        "k8s-gpu",
        "python3",
        code,
        WindmillFields {
            timeout: Some(Duration::from_secs(600)),
            priority: Some(7),
        },
    )
    .unwrap();
    let profile = Source::Profile("k8s-gpu".into());
    assert_eq!(
        (pod.storage.value, &pod.storage.source),
        (Bytes(10 << 30), &Source::Default)
    );
    assert_eq!(
        (pod.cpu.value.limit, &pod.cpu.source),
        (Millicores(4000), &profile)
    );
    assert_eq!((pod.gpu.value, &pod.gpu.source), (1, &profile));
    assert_eq!(pod.memory.value.limit, Bytes(8 << 30));
    assert_eq!(pod.memory.source, Source::Annotation { line: 1 });
    assert_eq!(pod.node_selector["pool"].value, "general");
    assert_eq!(pod.timeout.value, Duration::from_secs(600));
    assert_eq!(pod.timeout.source, Source::WindmillField);
    assert_eq!(pod.priority.as_ref().map(|p| p.value), Some(7));
    assert_eq!(pod.labels["team"].source, Source::Annotation { line: 2 });
    assert_eq!(pod.image.source, Source::Default);
    assert_eq!(pod.gpu_resource.value, "nvidia.com/gpu");
    // Lists add up, and the same toleration from two sources is kept once, with the first source.
    let tolerations: Vec<_> = pod
        .tolerations
        .iter()
        .map(|t| (t.value.to_string(), t.source.clone()))
        .collect();
    assert_eq!(
        tolerations,
        [
            ("nvidia.com/gpu:NoSchedule".to_owned(), profile.clone()),
            ("dedicated=ml:NoExecute:60".to_owned(), profile.clone()),
        ]
    );
}

#[test]
fn a_tag_without_a_profile_gets_the_defaults() {
    let s = settings(CONFIG);
    let pod = resolve_py(&s, "k8s", "").unwrap();
    let mut expected = PodSettings::defaults(&s.hints()).unwrap();
    // The language's image replaces the worker image as the default.
    expected.image = Sourced::new(s.executor.images["python3"].clone(), Source::Default);
    assert_eq!(pod, expected);
    assert_eq!(pod.image.value, "python:3.12-slim");
    assert_eq!(pod.cpu.value, RequestLimit::exact(Millicores(500)));
    assert_eq!(pod.timeout.value, Duration::from_secs(900));
    assert_eq!(pod.retries.value, 3);
    assert!(
        pod.rows()
            .iter()
            .all(|(_, _, source)| **source == Source::Default)
    );
}

#[test]
fn a_later_volume_at_the_same_path_replaces_the_earlier() {
    let s = settings(
        "limits: { allowed_pvcs: [big] }\nprofiles: { k8s: { volumes: [\"empty:/data:1Gi\", \"cache:/cache\"] } }\n",
    );
    let pod = resolve_py(&s, "k8s", "# k8s: volume=pvc:big:/data\n").unwrap();
    let volumes: Vec<_> = pod.volumes.iter().map(|v| v.value.to_string()).collect();
    assert_eq!(volumes, ["pvc:big:/data", "cache:/cache"]);
}

// ---- limits --------------------------------------------------------------------------------

#[test]
fn a_hint_beyond_a_maximum_is_rejected_with_the_limit_and_where_it_is_set() {
    let s = settings(CONFIG);
    let err = resolve_py(&s, "k8s", "# k8s: memory=64Gi\n").unwrap_err();
    let [HintError::Rejected(rejection)] = err.as_slice() else {
        panic!("{err:?}")
    };
    assert_eq!(rejection.setting, "limits.max_memory");
    assert_eq!(rejection.hint_source, Source::Annotation { line: 1 });
    assert_eq!(
        err.to_string(),
        "hint `memory=64Gi` (annotation, line 1) is not allowed: 64Gi is above limits.max_memory = 32Gi \
         in the worker config; ask for at most memory=32Gi, or ask the worker's admin to raise limits.max_memory"
    );
    let failure = err.to_job_failure();
    assert_eq!(
        failure.category,
        crate::domain::FailureCategory::ConfigError
    );
    assert_eq!(failure.name, "HintRejected");
}

#[test]
fn clamp_mode_lowers_numbers_and_says_so() {
    let s = settings(&format!("{CONFIG}  on_violation: clamp\n"));
    let pod = resolve(
        &s.hints(),
        "k8s",
        "python3",
        "# k8s: cpu=2..16 memory=64Gi gpu=4 storage=1Ti volume=empty:/s:100Gi\n",
        WindmillFields {
            timeout: Some(Duration::from_secs(86400)),
            priority: None,
        },
    )
    .unwrap();
    assert_eq!(
        pod.cpu.value,
        RequestLimit {
            request: Millicores(2000),
            limit: Millicores(8000)
        }
    );
    assert_eq!(
        pod.cpu.source,
        Source::Limit {
            setting: "limits.max_cpu".into(),
            asked: "16 by annotation, line 1".into()
        }
    );
    assert_eq!(pod.memory.value, RequestLimit::exact(Bytes(32 << 30)));
    assert_eq!(pod.gpu.value, 2);
    assert_eq!(pod.storage.value, Bytes(50 << 30));
    assert_eq!(pod.volumes[0].value.to_string(), "empty:/s:50Gi");
    assert_eq!(pod.timeout.value, Duration::from_secs(6 * 3600));
    assert!(
        matches!(&pod.timeout.source, Source::Limit { setting, .. } if setting == "windmill.max_timeout")
    );
    assert!(
        pod.to_string()
            .contains("clamped by limits.max_memory (asked 64Gi by annotation, line 1)")
    );
}

#[test]
fn names_outside_the_allow_lists_are_rejected_even_in_clamp_mode() {
    let s = settings(&format!("{CONFIG}  on_violation: clamp\n"));
    for (hint, setting) in [
        ("image=docker.io/evil:1", "limits.allowed_images"),
        ("node_selector=pool:secret", "limits.allowed_node_selectors"),
        (
            "node_selector=kubernetes.io/hostname:n1",
            "limits.allowed_node_selectors",
        ),
        (
            "toleration=node-role.kubernetes.io/control-plane:NoSchedule",
            "limits.allowed_tolerations",
        ),
        ("env_from_secret=windmill-db", "limits.allowed_secrets"),
        ("env_from_configmap=anything", "limits.allowed_configmaps"),
        ("service_account=default", "limits.allowed_service_accounts"),
        ("volume=pvc:other:/d", "limits.allowed_pvcs"),
        ("local_queue=team-a", "limits.allowed_local_queues"),
        ("label.flext.dev/job-id=x", "limits.protected_prefixes"),
        (
            "label.kueue.x-k8s.io/queue-name=other",
            "limits.protected_prefixes",
        ),
        (
            "annotation.app.kubernetes.io/managed-by=me",
            "limits.protected_prefixes",
        ),
        ("label.acme.com/billing=free", "limits.protected_prefixes"),
    ] {
        let err = resolve_py(&s, "k8s", &format!("# k8s: {hint}\n")).unwrap_err();
        let [HintError::Rejected(rejection)] = err.as_slice() else {
            panic!("{hint}: {err:?}")
        };
        assert_eq!(rejection.setting, setting, "{hint}");
        assert!(err.to_string().contains(setting), "{err}");
    }
    for hint in [
        "image=ghcr.io/acme/etl:1.4",
        "image=python:3.12-slim",
        "node_selector=topology.kubernetes.io/zone:eu-west-1",
        "toleration=nvidia.com/gpu",
        "env_from_secret=etl-db",
        "volume=pvc:datasets:/d:ro",
        "volume=cache:/c",
        "priority_class=anything",
    ] {
        resolve_py(&s, "k8s", &format!("# k8s: {hint}\n")).unwrap();
    }
}

#[test]
fn an_empty_default_deny_list_says_so() {
    let s = settings("");
    let err = resolve_py(&s, "k8s", "# k8s: env_from_secret=windmill-db\n").unwrap_err();
    assert!(
        err.to_string().contains(
            "limits.allowed_secrets in the worker config is empty, so scripts may not name Secrets"
        ),
        "{err}"
    );
    // Without lists, images, selectors and tolerations are open.
    resolve_py(
        &s,
        "k8s",
        "# k8s: image=docker.io/library/python:3 node_selector=a:b toleration=x\n",
    )
    .unwrap();
}

#[test]
fn profiles_are_trusted_by_the_allow_lists() {
    let s = settings(
        "profiles: { k8s: { service_account: etl, env_from_secrets: [etl-db], image: docker.io/x:1 } }\nlimits: { allowed_images: [ghcr.io/*] }\n",
    );
    let pod = resolve_py(&s, "k8s", "").unwrap();
    assert_eq!(pod.service_account.unwrap().value, "etl");
    assert_eq!(pod.image.value, "docker.io/x:1");
}

// ---- properties ----------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_parser_never_panics_on_bytes(code in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = parse_annotations("python3", &code);
    }

    #[test]
    fn the_parser_never_panics_on_hint_lines(
        lines in proptest::collection::vec("(#|//)? ?k8s:( [a-z_.=:/,0-9A-Z\"\\\\\\-\\.]{0,30}){0,6}", 0..8)
    ) {
        let code = lines.join("\n");
        let _ = parse_annotations("python3", code.as_bytes());
        let _ = parse_annotations("go", code.as_bytes());
    }

    #[test]
    fn rendered_hints_parse_back_to_the_same_values(hints in arbitrary_hints()) {
        let text = hints.render_annotations("#");
        let parsed = parse_annotations("python3", text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(strip(&parsed), strip(&hints), "{}", text);
    }

    #[test]
    fn resolve_never_panics_and_clamped_values_fit(code in "(# k8s: (cpu|memory|storage|gpu|retries|timeout)=[0-9]{1,6}(m|Gi|Ki|h|)\n){0,6}") {
        let s = settings(&format!("{CONFIG}  on_violation: clamp\n"));
        if let Ok(pod) = resolve_py(&s, "k8s-gpu", &code) {
            prop_assert!(pod.cpu.value.limit <= Millicores(8000));
            prop_assert!(pod.memory.value.limit <= Bytes(32 << 30));
            prop_assert!(pod.gpu.value <= 2);
            prop_assert!(pod.timeout.value <= Duration::from_secs(6 * 3600));
            prop_assert!(pod.cpu.value.request <= pod.cpu.value.limit);
        }
    }
}

/// Sources aside, for comparing a parsed set with the one it was rendered from.
fn strip(h: &HintSet) -> HintSet {
    let mut h = h.clone();
    h.cpu = h.cpu.map(|v| Sourced::new(v.value, Source::Default));
    h.memory = h.memory.map(|v| Sourced::new(v.value, Source::Default));
    h.storage = h.storage.map(|v| Sourced::new(v.value, Source::Default));
    h.gpu = h.gpu.map(|v| Sourced::new(v.value, Source::Default));
    h.image = h.image.map(|v| Sourced::new(v.value, Source::Default));
    h.pull_policy = h
        .pull_policy
        .map(|v| Sourced::new(v.value, Source::Default));
    h.priority_class = h
        .priority_class
        .map(|v| Sourced::new(v.value, Source::Default));
    h.service_account = h
        .service_account
        .map(|v| Sourced::new(v.value, Source::Default));
    h.runtime_class = h
        .runtime_class
        .map(|v| Sourced::new(v.value, Source::Default));
    h.local_queue = h
        .local_queue
        .map(|v| Sourced::new(v.value, Source::Default));
    h.cluster = h.cluster.map(|v| Sourced::new(v.value, Source::Default));
    h.timeout = h.timeout.map(|v| Sourced::new(v.value, Source::Default));
    h.retries = h.retries.map(|v| Sourced::new(v.value, Source::Default));
    for v in h
        .node_selector
        .values_mut()
        .chain(h.labels.values_mut())
        .chain(h.annotations.values_mut())
    {
        v.source = Source::Default;
    }
    for v in &mut h.tolerations {
        v.source = Source::Default;
    }
    for v in &mut h.affinity {
        v.source = Source::Default;
    }
    for v in h
        .env_from_secrets
        .iter_mut()
        .chain(h.env_from_configmaps.iter_mut())
    {
        v.source = Source::Default;
    }
    for v in &mut h.volumes {
        v.source = Source::Default;
    }
    h
}

fn d<T>(value: T) -> Sourced<T> {
    Sourced::new(value, Source::Default)
}

fn arbitrary_hints() -> impl Strategy<Value = HintSet> {
    let name = "[a-z][a-z0-9-]{0,10}[a-z0-9]";
    let label_value = "[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?";
    let cpu = (1u64..64_000, 0u64..64_000).prop_map(|(r, extra)| RequestLimit {
        request: Millicores(r),
        limit: Millicores(r + extra),
    });
    let memory = (1u64..1 << 40, 0u64..1 << 40).prop_map(|(r, extra)| RequestLimit {
        request: Bytes(r),
        limit: Bytes(r + extra),
    });
    let toleration = (
        name,
        proptest::option::of(label_value),
        proptest::option::of(0..3usize),
    )
        .prop_map(|(key, value, effect)| {
            let effect = effect.map(|i| {
                [
                    TaintEffect::NoSchedule,
                    TaintEffect::PreferNoSchedule,
                    TaintEffect::NoExecute,
                ][i]
            });
            Toleration {
                key,
                operator: if value.is_some() {
                    TolerationOperator::Equal
                } else {
                    TolerationOperator::Exists
                },
                value,
                effect,
                toleration_seconds: (effect == Some(TaintEffect::NoExecute)).then_some(30),
            }
        });
    let volume = prop_oneof![
        (name, any::<bool>()).prop_map(|(claim, read_only)| Volume::Pvc {
            mount_path: format!("/mnt/{claim}"),
            claim,
            read_only
        }),
        (1u64..1 << 40).prop_map(|size| Volume::EmptyDir {
            mount_path: "/scratch".into(),
            size: Bytes(size)
        }),
        Just(Volume::DependencyCache {
            mount_path: "/cache".into()
        }),
    ];
    let scalars = (
        proptest::option::of(cpu),
        proptest::option::of(memory),
        proptest::option::of((1u64..1 << 45).prop_map(Bytes)),
        proptest::option::of(0u32..=64),
        proptest::option::of("[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}(:[a-z0-9]{1,6})?"),
        proptest::option::of(prop_oneof![
            Just(PullPolicy::Always),
            Just(PullPolicy::IfNotPresent),
            Just(PullPolicy::Never)
        ]),
        proptest::option::of(name),
        proptest::option::of((1u64..86_400).prop_map(|s| HumanDuration(Duration::from_secs(s)))),
        proptest::option::of(0u32..=MAX_RETRIES),
    );
    let collections = (
        proptest::collection::btree_map(name, label_value, 0..3),
        proptest::collection::vec(toleration, 0..3),
        proptest::collection::btree_set(
            prop_oneof![
                Just(AffinityPreset::ZoneSpread),
                Just(AffinityPreset::AntiAffinityByScript)
            ],
            0..3,
        ),
        proptest::collection::btree_set(name, 0..3),
        proptest::collection::btree_map(
            volume.prop_map(|v| (v.mount_path().to_owned(), v)),
            Just(()),
            0..3,
        ),
        proptest::collection::btree_map(name, label_value, 0..3),
        proptest::collection::btree_map(name, "[ -~]{0,20}", 0..3),
    );
    (scalars, collections).prop_map(|(scalars, collections)| {
        let (cpu, memory, storage, gpu, image, pull_policy, account, timeout, retries) = scalars;
        let (selector, tolerations, affinity, secrets, volumes, labels, annotations) = collections;
        let mut tolerations: Vec<Toleration> = tolerations;
        tolerations.sort();
        tolerations.dedup();
        let mut seen_paths = std::collections::BTreeSet::new();
        HintSet {
            cpu: cpu.map(d),
            memory: memory.map(d),
            storage: storage.map(d),
            gpu: gpu.map(d),
            gpu_resource: None,
            image: image.map(d),
            pull_policy: pull_policy.map(d),
            node_selector: selector.into_iter().map(|(k, v)| (k, d(v))).collect(),
            tolerations: tolerations.into_iter().map(d).collect(),
            affinity: affinity.into_iter().map(d).collect(),
            priority_class: account.clone().map(d),
            service_account: account.clone().map(d),
            runtime_class: account.clone().map(d),
            local_queue: account.clone().map(d),
            cluster: account.map(d),
            env_from_secrets: secrets.iter().cloned().map(d).collect(),
            env_from_configmaps: secrets.into_iter().map(d).collect(),
            volumes: volumes
                .into_keys()
                .filter(|(path, _)| seen_paths.insert(path.clone()))
                .map(|(_, v)| d(v))
                .collect(),
            timeout: timeout.map(d),
            retries: retries.map(d),
            labels: labels.into_iter().map(|(k, v)| (k, d(v))).collect(),
            annotations: annotations.into_iter().map(|(k, v)| (k, d(v))).collect(),
        }
    })
}
