//! The allow-lists of `limits:`, which govern what a *script* may name (so they apply to
//! annotation values only), and the label prefixes no source may set. Both always reject.

use super::limits::{Limits, PROTECTED_PREFIXES, Rejection};
use super::names::shorten;
use super::pod::PodSettings;
use super::{Source, Volume};

/// Matches `text` against a pattern where `*` stands for any run of characters (including `/`
/// and `:`). Linear backtracking over the last star, so hostile patterns cannot blow up.
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, ti));
            pi += 1;
        } else if p.get(pi) == Some(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last star eat one more character and retry after it.
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi.min(p.len())..].iter().all(|&b| b == b'*')
}
/// A name checked against an allow-list; `None` means no list (anything goes), and for the
/// default-deny kinds the caller passes an empty list instead.
fn allow(
    key: &str,
    value: &str,
    source: &Source,
    list: Option<&[String]>,
    setting: &str,
    what: &str,
) -> Option<Rejection> {
    let list = list?;
    if list.iter().any(|pattern| glob_match(pattern, value)) {
        return None;
    }
    let violation = if list.is_empty() {
        format!("{setting} in the worker config is empty, so scripts may not name {what}")
    } else {
        format!(
            "`{}` matches none of {setting} in the worker config ({})",
            shorten(value),
            list.join(", ")
        )
    };
    Some(Rejection {
        key: key.to_owned(),
        hint: format!("{key}={}", shorten(value)),
        hint_source: source.clone(),
        setting: setting.to_owned(),
        violation,
        fix: format!("use an allowed value, or ask the worker's admin to add it to {setting}"),
    })
}

fn from_script(source: &Source) -> bool {
    matches!(source, Source::Annotation { .. })
}

/// Applies the allow-lists to the values that came from annotations: every value not allowed.
pub(super) fn check_allowed(pod: &PodSettings, limits: &Limits) -> Vec<Rejection> {
    let mut rejected = Vec::new();
    if from_script(&pod.image.source) {
        rejected.extend(allow(
            "image",
            &pod.image.value,
            &pod.image.source,
            limits.allowed_images.as_deref(),
            "limits.allowed_images",
            "images",
        ));
    }
    if let Some(allowed) = &limits.allowed_node_selectors {
        for (name, value) in &pod.node_selector {
            if !from_script(&value.source) {
                continue;
            }
            let patterns = allowed.get(name).map_or(&[][..], Vec::as_slice);
            let rejection = allow(
                &format!("node_selector.{name}"),
                &value.value,
                &value.source,
                Some(patterns),
                "limits.allowed_node_selectors",
                &format!("node selector {name}"),
            );
            rejected.extend(rejection.map(|mut r| {
                r.hint = format!("node_selector={name}:{}", shorten(&value.value));
                r
            }));
        }
    }
    for t in pod.tolerations.iter().filter(|t| from_script(&t.source)) {
        rejected.extend(
            allow(
                "toleration",
                &t.value.key,
                &t.source,
                limits.allowed_tolerations.as_deref(),
                "limits.allowed_tolerations",
                "tolerated taint keys",
            )
            .map(|mut r| {
                r.hint = format!("toleration={}", t.value);
                r
            }),
        );
    }
    rejected.extend(check_allowed_names(pod, limits));
    rejected
}

/// The allow-lists of object names: classes, the service account, Secrets, ConfigMaps, PVCs.
fn check_allowed_names(pod: &PodSettings, limits: &Limits) -> Vec<Rejection> {
    let mut rejected = Vec::new();
    let named = [
        (
            "priority_class",
            &pod.priority_class,
            limits.allowed_priority_classes.as_deref(),
            "limits.allowed_priority_classes",
            "priority classes",
        ),
        (
            "runtime_class",
            &pod.runtime_class,
            limits.allowed_runtime_classes.as_deref(),
            "limits.allowed_runtime_classes",
            "runtime classes",
        ),
        (
            "service_account",
            &pod.service_account,
            Some(limits.allowed_service_accounts.as_slice()),
            "limits.allowed_service_accounts",
            "service accounts",
        ),
        (
            "cluster",
            &pod.cluster,
            limits.allowed_clusters.as_deref(),
            "limits.allowed_clusters",
            "clusters",
        ),
        (
            "local_queue",
            &pod.local_queue,
            Some(limits.allowed_local_queues.as_slice()),
            "limits.allowed_local_queues",
            "Kueue LocalQueues",
        ),
    ];
    for (key, value, list, setting, what) in named {
        if let Some(v) = value.as_ref().filter(|v| from_script(&v.source)) {
            rejected.extend(allow(key, &v.value, &v.source, list, setting, what));
        }
    }
    let env_sources = [
        (
            "env_from_secret",
            &pod.env_from_secrets,
            &limits.allowed_secrets,
            "limits.allowed_secrets",
            "Secrets",
        ),
        (
            "env_from_configmap",
            &pod.env_from_configmaps,
            &limits.allowed_configmaps,
            "limits.allowed_configmaps",
            "ConfigMaps",
        ),
    ];
    for (key, values, list, setting, what) in env_sources {
        for v in values.iter().filter(|v| from_script(&v.source)) {
            rejected.extend(allow(key, &v.value, &v.source, Some(list), setting, what));
        }
    }
    for v in pod.volumes.iter().filter(|v| from_script(&v.source)) {
        if let Volume::Pvc { claim, .. } = &v.value {
            let pvcs = Some(limits.allowed_pvcs.as_slice());
            rejected.extend(
                allow(
                    "volume",
                    claim,
                    &v.source,
                    pvcs,
                    "limits.allowed_pvcs",
                    "PVCs",
                )
                .map(|mut r| {
                    r.hint = format!("volume={}", v.value);
                    r
                }),
            );
        }
    }
    rejected
}

/// Rejects labels and annotations under a protected prefix, whatever their source: each such
/// key once, in the order of the prefixes.
pub(super) fn check_protected(pod: &PodSettings, limits: &Limits) -> Vec<Rejection> {
    let prefixes = PROTECTED_PREFIXES
        .iter()
        .copied()
        .chain(limits.protected_prefixes.iter().map(String::as_str));
    let mut rejected: Vec<Rejection> = Vec::new();
    for prefix in prefixes {
        for (kind, map) in [("label", &pod.labels), ("annotation", &pod.annotations)] {
            for (key, value) in map.iter().filter(|(k, _)| k.starts_with(prefix)) {
                let hint = format!("{kind}.{key}={}", shorten(&value.value));
                if rejected.iter().any(|r| r.hint == hint) {
                    continue;
                }
                let owner = if PROTECTED_PREFIXES.contains(&prefix) {
                    "the worker's own bookkeeping (always part of limits.protected_prefixes)"
                } else {
                    "limits.protected_prefixes in the worker config"
                };
                rejected.push(Rejection {
                    key: format!("{kind}s"),
                    hint,
                    hint_source: value.source.clone(),
                    setting: "limits.protected_prefixes".into(),
                    violation: format!("keys starting with `{prefix}` are reserved by {owner}"),
                    fix: format!("use another {kind} key"),
                });
            }
        }
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_with_stars_anywhere() {
        for (pattern, text, matches) in [
            ("ghcr.io/acme/*", "ghcr.io/acme/etl:1.4", true),
            ("ghcr.io/acme/*", "ghcr.io/acme/team/etl:1", true),
            ("ghcr.io/acme/*", "ghcr.io/acmeevil/etl", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("python:3.*-slim", "python:3.12-slim", true),
            ("python:3.*-slim", "python:3.12", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**", "anything", true),
        ] {
            assert_eq!(glob_match(pattern, text), matches, "{pattern} vs {text}");
        }
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let pattern = "*a".repeat(500);
        let text = "a".repeat(5000) + "b";
        assert!(!glob_match(&pattern, &text));
    }
}
