//! The main container's environment, as a native Windmill worker builds a job's: the script's
//! `envs`, the reserved `WM_*` variables, the workspace's variables and the job token.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

use super::{Context, object_name};
use crate::domain::Job;

/// Windmill's job environment as a native worker builds it: the script's `envs` (values from the
/// Secret: they may hold credentials), the reserved `WM_*` variables with Windmill's values
/// (windmill-common `variables.rs`, `get_reserved_variables`: every one is set, empty when it does
/// not apply), the workspace's custom variables, and the job token from the Secret.
pub(super) fn environment(job: &Job, cx: &Context<'_>) -> Vec<EnvVar> {
    entries(job, cx)
        .into_iter()
        .map(|(name, value)| match value {
            Value::Plain(value) => EnvVar {
                name,
                value: Some(value),
                ..EnvVar::default()
            },
            Value::Secret { key, .. } => from_secret(job, cx, &name, &key),
        })
        .collect()
}

/// The same environment with every value in place, for a warm pod's hand-over (which is the
/// secret channel: nothing of it is in the pod's spec).
pub(super) fn values(job: &Job, cx: &Context<'_>) -> Vec<(String, String)> {
    entries(job, cx)
        .into_iter()
        .map(|(name, value)| match value {
            Value::Plain(value) | Value::Secret { value, .. } => (name, value),
        })
        .collect()
}

/// A variable's value: in the pod spec, or in the Secret under `key`.
enum Value {
    Plain(String),
    Secret { key: String, value: String },
}

fn entries(job: &Job, cx: &Context<'_>) -> Vec<(String, Value)> {
    let reserved = reserved_variables(job, cx);
    let mut env: Vec<(String, Value)> = Vec::new();
    for (name, value) in job.script_env_pairs().unwrap_or_default() {
        // A reserved name set by the script's envs loses to Windmill's value, as natively.
        if !reserved.contains_key(name.as_str()) {
            let key = super::script_env_key(&name);
            env.push((name, Value::Secret { key, value }));
        }
    }
    let workspace = job
        .context
        .workspace_envs
        .iter()
        .filter(|(name, _)| !reserved.contains_key(name.as_str()));
    let plain = reserved
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .chain(workspace.map(|(n, v)| (n.clone(), v.clone())));
    env.extend(plain.map(|(name, value)| (name, Value::Plain(value))));
    if let Some(token) = cx.token {
        env.push((
            "WM_TOKEN".to_owned(),
            Value::Secret {
                key: "token".to_owned(),
                value: token.to_owned(),
            },
        ));
    }
    env
}

fn from_secret(job: &Job, cx: &Context<'_>, name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: object_name(job, cx.attempt),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The reserved variables and their values, as Windmill computes them. `WM_OBJECT_PATH` takes its
/// timestamp from the claim (`started_at`), not the clock, so that rendering stays deterministic.
fn reserved_variables(job: &Job, cx: &Context<'_>) -> BTreeMap<&'static str, String> {
    let context = &job.context;
    let flow = job.flow.as_ref();
    let step_id = flow.and_then(|f| f.step_id.clone());
    let username = job.created_by.clone().unwrap_or_default();
    let text = |value: Option<String>| value.unwrap_or_default();
    let id = |value: Option<crate::domain::JobId>| value.map(|v| v.to_string());
    let root = flow
        .and_then(|f| f.root)
        .or(context.innermost_root)
        .or(flow.map(|f| f.parent))
        .unwrap_or(job.id);
    let base_url = context.base_url.as_deref().or(cx.base_url);
    BTreeMap::from([
        ("WM_WORKSPACE", job.workspace.clone()),
        ("WM_EMAIL", text(job.permissioned_as_email.clone())),
        ("WM_USERNAME", username.clone()),
        ("WM_BASE_URL", text(base_url.map(str::to_owned))),
        ("BASE_INTERNAL_URL", text(cx.base_url.map(str::to_owned))),
        ("WM_JOB_ID", job.id.to_string()),
        (
            "WM_SCHEDULED_FOR",
            text(
                context
                    .scheduled_for
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ),
        ),
        ("WM_JOB_PATH", text(job.path.clone())),
        ("WM_FLOW_JOB_ID", text(id(flow.map(|f| f.parent)))),
        ("WM_ROOT_FLOW_JOB_ID", text(id(context.innermost_root))),
        ("WM_ROOT_JOB_ID", root.to_string()),
        ("WM_FLOW_PATH", text(context.flow_path.clone())),
        ("WM_SCHEDULE_PATH", text(context.schedule_path.clone())),
        ("WM_PERMISSIONED_AS", text(job.permissioned_as.clone())),
        (
            "WM_STATE_PATH",
            state_path(job, step_id.as_deref(), &username),
        ),
        (
            "WM_STATE_PATH_NEW",
            state_path(job, step_id.as_deref(), &username),
        ),
        ("WM_FLOW_STEP_ID", text(step_id.clone())),
        ("WM_OBJECT_PATH", object_path(job, step_id.as_deref())),
        ("WM_WORKER_GROUP", cx.settings.windmill.worker_group.clone()),
        (
            "WM_RUNNABLE_ID",
            text(context.runnable_id.map(|h| h.to_string())),
        ),
        ("WM_END_USER_EMAIL", text(context.end_user_email.clone())),
        ("HOME", "/flext/work".into()),
    ])
}

/// `WM_STATE_PATH`: unique to a script (or flow step) and its trigger.
fn state_path(job: &Job, step_id: Option<&str>, username: &str) -> String {
    let trigger = if job.context.schedule_path.is_some() {
        username
    } else {
        "user"
    };
    match (&job.context.flow_path, &job.path) {
        (Some(flow_path), _) => format!("{flow_path}/{}_{trigger}", step_id.unwrap_or("nostep")),
        (None, Some(path)) if path.ends_with('/') => format!("{path}state/{trigger}"),
        (None, Some(path)) => format!("{path}/{trigger}"),
        (None, None) => format!("u/{username}/tmp_state"),
    }
}

/// `WM_OBJECT_PATH`: unique to one run of a script or flow step.
fn object_path(job: &Job, step_id: Option<&str>) -> String {
    let schedule = job
        .context
        .schedule_path
        .as_deref()
        .unwrap_or("manual")
        .replace('/', "_");
    let at = job.started_at.timestamp_millis();
    match &job.context.flow_path {
        Some(flow_path) => format!(
            "{}/{schedule}/{}/{at}_{}",
            flow_path.replace('/', "_"),
            step_id.unwrap_or_default(),
            job.id
        ),
        None => format!(
            "{}/{schedule}/{at}_{}",
            job.path.as_deref().unwrap_or_default().replace('/', "_"),
            job.id
        ),
    }
}
