//! The keys a `k8s:` line may use, an example of each, and the suggestion for a key we do not
//! know (a typo, or a pod-spec spelling).

/// Every key a script may use, for suggestions.
pub(super) const KEYS: &[&str] = &[
    "cpu",
    "memory",
    "storage",
    "gpu",
    "image",
    "pull_policy",
    "node_selector",
    "toleration",
    "affinity",
    "priority_class",
    "service_account",
    "runtime_class",
    "local_queue",
    "cluster",
    "env_from_secret",
    "env_from_configmap",
    "volume",
    "timeout",
    "retries",
    "label.NAME",
    "annotation.NAME",
];

/// Spellings people reach for, mostly from the pod spec.
const ALIASES: &[(&str, &str)] = &[
    ("mem", "memory"),
    ("ram", "memory"),
    ("cpus", "cpu"),
    ("gpus", "gpu"),
    ("cpu_limit", "cpu=REQUEST..LIMIT"),
    ("memory_limit", "memory=REQUEST..LIMIT"),
    ("cpu_request", "cpu=REQUEST..LIMIT"),
    ("memory_request", "memory=REQUEST..LIMIT"),
    ("ephemeral_storage", "storage"),
    ("ephemeral-storage", "storage"),
    ("disk", "storage"),
    ("nodeSelector", "node_selector"),
    ("tolerations", "toleration"),
    ("volumes", "volume"),
    ("imagePullPolicy", "pull_policy"),
    ("serviceAccount", "service_account"),
    ("serviceAccountName", "service_account"),
    ("priorityClassName", "priority_class"),
    ("runtimeClassName", "runtime_class"),
    ("label", "label.NAME"),
    ("labels", "label.NAME"),
    ("annotation", "annotation.NAME"),
    ("annotations", "annotation.NAME"),
    ("retry", "retries"),
    ("queue", "local_queue"),
    ("queue_name", "local_queue"),
    ("kueue", "local_queue"),
    ("localQueue", "local_queue"),
    ("clusters", "cluster"),
    ("context", "cluster"),
    ("timeout_seconds", "timeout"),
];

pub(super) fn suggestion(key: &str) -> String {
    if key == "gpu_resource" {
        return "; the GPU resource name is set by the worker's admin (resources.gpu_resource or a profile)".into();
    }
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == key) {
        return format!("; did you mean {to}?");
    }
    // Typos: the closest key within two edits.
    let closest = KEYS
        .iter()
        .map(|k| (edit_distance(key, k.trim_end_matches(".NAME")), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match closest {
        Some((_, k)) if key.len() <= 64 => format!("; did you mean {k}?"),
        _ => format!("; known keys: {}", KEYS.join(", ")),
    }
}

/// Levenshtein distance, for keys of at most 64 characters (longer ones get no suggestion).
fn edit_distance(a: &str, b: &str) -> usize {
    if a.len() > 64 {
        return usize::MAX;
    }
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// An example for each key, for messages.
pub(super) fn example(key: &str) -> &'static str {
    match key {
        "cpu" => "e.g. cpu=2 or cpu=500m..2",
        "memory" => "e.g. memory=4Gi or memory=2Gi..4Gi",
        "storage" => "e.g. storage=20Gi",
        "gpu" => "e.g. gpu=1",
        "image" => "e.g. image=ghcr.io/acme/etl:1.4",
        "pull_policy" => "e.g. pull_policy=IfNotPresent",
        "node_selector" => "e.g. node_selector=pool:gpu,topology.kubernetes.io/zone:eu-west-1a",
        "toleration" => "e.g. toleration=dedicated=gpu:NoSchedule",
        "affinity" => "e.g. affinity=zone-spread",
        "priority_class" => "e.g. priority_class=batch-low",
        "service_account" => "e.g. service_account=etl-reader",
        "runtime_class" => "e.g. runtime_class=gvisor",
        "local_queue" => "e.g. local_queue=team-a (a Kueue LocalQueue in the job namespace)",
        "cluster" => "e.g. cluster=gpu (a name from the worker's `clusters:`)",
        "env_from_secret" => "e.g. env_from_secret=etl-credentials",
        "env_from_configmap" => "e.g. env_from_configmap=etl-settings",
        "volume" => "e.g. volume=pvc:datasets:/mnt/data:ro",
        "timeout" => "e.g. timeout=2h",
        "retries" => "e.g. retries=3",
        _ => "see docs/hints.md",
    }
}
