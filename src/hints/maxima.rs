//! The numeric maxima of `limits:` (and `windmill.max_timeout`): a value beyond one is lowered
//! to it (`clamp`) or rejected, whatever its source.

use std::fmt::Display;
use std::time::Duration;

use super::limits::{Limits, OnViolation, Rejection};
use super::pod::PodSettings;
use super::quantity::Bytes;
use super::values::{QuantityKind, RequestLimit};
use super::{Source, Sourced, Volume};
use crate::units::HumanDuration;

fn asked<T: Display>(value: &T, source: &Source) -> String {
    format!("{value} by {source}")
}

/// Caps one value at `max`, or rejects it.
fn cap<T: Ord + Copy + Display>(
    key: &str,
    value: &mut Sourced<T>,
    max: Option<T>,
    setting: &str,
    mode: OnViolation,
) -> Option<Rejection> {
    let max = max?;
    if value.value <= max {
        return None;
    }
    match mode {
        OnViolation::Clamp => {
            let source = Source::Limit {
                setting: setting.to_owned(),
                asked: asked(&value.value, &value.source),
            };
            *value = Sourced::new(max, source);
            None
        }
        OnViolation::Reject => Some(Rejection {
            key: key.to_owned(),
            hint: format!("{key}={}", value.value),
            hint_source: value.source.clone(),
            setting: setting.to_owned(),
            violation: format!(
                "{} is above {setting} = {max} in the worker config",
                value.value
            ),
            fix: format!(
                "ask for at most {key}={max}, or ask the worker's admin to raise {setting}"
            ),
        }),
    }
}

/// Caps a request..limit pair at `max` (the limit is the larger, so it decides).
fn cap_range<T: QuantityKind>(
    key: &str,
    value: &mut Sourced<RequestLimit<T>>,
    max: Option<T>,
    setting: &str,
    mode: OnViolation,
) -> Option<Rejection> {
    let mut limit = Sourced::new(value.value.limit, value.source.clone());
    if let Some(rejection) = cap(key, &mut limit, max, setting, mode) {
        return Some(rejection);
    }
    if limit.value != value.value.limit {
        value.source = limit.source;
        value.value = RequestLimit {
            request: value.value.request.min(limit.value),
            limit: limit.value,
        };
    }
    None
}

/// Applies the numeric maxima (and `windmill.max_timeout`) in `mode`: every value beyond one,
/// rejected, or none when clamping.
pub(super) fn enforce_numeric(
    pod: &mut PodSettings,
    limits: &Limits,
    max_timeout: Duration,
    mode: OnViolation,
) -> Vec<Rejection> {
    let mut timeout = Sourced::new(HumanDuration(pod.timeout.value), pod.timeout.source.clone());
    let mut rejected: Vec<Rejection> = [
        cap_range("cpu", &mut pod.cpu, limits.max_cpu, "limits.max_cpu", mode),
        cap_range(
            "memory",
            &mut pod.memory,
            limits.max_memory,
            "limits.max_memory",
            mode,
        ),
        cap(
            "storage",
            &mut pod.storage,
            limits.max_storage,
            "limits.max_storage",
            mode,
        ),
        cap("gpu", &mut pod.gpu, limits.max_gpu, "limits.max_gpu", mode),
        cap(
            "retries",
            &mut pod.retries,
            limits.max_retries,
            "limits.max_retries",
            mode,
        ),
        cap(
            "timeout",
            &mut timeout,
            Some(HumanDuration(max_timeout)),
            "windmill.max_timeout",
            mode,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    pod.timeout = Sourced::new(timeout.value.0, timeout.source);
    for volume in &mut pod.volumes {
        rejected.extend(cap_empty_dir(volume, limits.max_storage, mode));
    }
    rejected
}

/// Caps the size of an emptyDir volume at `limits.max_storage` (it counts toward the pod's
/// ephemeral storage).
fn cap_empty_dir(
    volume: &mut Sourced<Volume>,
    max_storage: Option<Bytes>,
    mode: OnViolation,
) -> Option<Rejection> {
    let Volume::EmptyDir { mount_path, size } = &volume.value else {
        return None;
    };
    let mut sized = Sourced::new(*size, volume.source.clone());
    if let Some(mut r) = cap(
        "volume",
        &mut sized,
        max_storage,
        "limits.max_storage",
        mode,
    ) {
        r.hint = format!("volume={}", volume.value);
        r.fix = format!(
            "ask for an emptyDir of at most {}, or ask the worker's admin to raise limits.max_storage",
            max_storage.unwrap_or(Bytes(0))
        );
        return Some(r);
    }
    if sized.value != *size {
        volume.value = Volume::EmptyDir {
            mount_path: mount_path.clone(),
            size: sized.value,
        };
        volume.source = sized.source;
    }
    None
}
