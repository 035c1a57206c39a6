//! The Kubernetes permissions the worker needs, each with the code path that needs it, and the
//! check that asks the API server for them (`SelfSubjectAccessReview`) before anything runs.
//!
//! [`REQUIRED`] is the one list: `check` and `run` ask for exactly these, and the Helm chart's Role
//! (`deploy/helm/flext-kubernetes/files/rbac-rules.yaml`) is compared with it by a test. All of
//! them are in the job namespace: the worker needs no cluster-wide permission. Asking is allowed to
//! every authenticated identity (Kubernetes' default `system:basic-user` `ClusterRole` grants
//! `create` on `selfsubjectaccessreviews`).

use std::fmt;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::PostParams;
use kube::{Api, Client};

/// One verb on one resource in the job namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` is the core group).
    pub group: &'static str,
    /// Resource, with its subresource after a `/` (`pods/log`).
    pub resource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// Only the job namespace's own object (`resourceNames: [<namespace>]`).
    pub own_namespace_only: bool,
    /// The code path that makes the request.
    pub why: &'static str,
}

const fn allow(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    why: &'static str,
) -> Permission {
    Permission {
        group,
        resource,
        verb,
        own_namespace_only: false,
        why,
    }
}

/// Every request the worker makes to the Kubernetes API, by the code that makes it.
pub const REQUIRED: &[Permission] = &[
    Permission {
        group: "",
        resource: "namespaces",
        verb: "get",
        own_namespace_only: true,
        why: "KubernetesExecutor::connect: the job namespace exists",
    },
    allow(
        "",
        "pods",
        "list",
        "watch::PodWatch: the shared pod watch lists the worker group's pods",
    ),
    allow(
        "",
        "pods",
        "watch",
        "watch::PodWatch: the shared pod watch follows them",
    ),
    allow(
        "",
        "pods/log",
        "get",
        "follow: streaming a job pod's output into the Windmill job log",
    ),
    allow(
        "batch",
        "jobs",
        "create",
        "objects::create_once: each attempt's Job",
    ),
    allow(
        "batch",
        "jobs",
        "get",
        "objects::create_once: a 409 on the attempt's name adopts the existing Job",
    ),
    allow(
        "batch",
        "jobs",
        "list",
        "watch::JobIndex: the shared watch of the group's Jobs lists them (and objects::list_jobs before it has synced)",
    ),
    allow(
        "batch",
        "jobs",
        "watch",
        "watch::JobIndex: the shared watch of the group's Jobs follows their metadata",
    ),
    allow(
        "batch",
        "jobs",
        "delete",
        "objects::delete_attempt: an attempt before its retry, and cancellation",
    ),
    allow(
        "batch",
        "jobs",
        "deletecollection",
        "objects::delete_all: every Job of a finished job, by label",
    ),
    allow(
        "",
        "secrets",
        "create",
        "objects::create_once: the attempt's code, args, job token and nonce",
    ),
    allow(
        "",
        "secrets",
        "get",
        "objects::create_once: the nonce of an adopted attempt",
    ),
];

/// What a worker whose jobs may wait in Kueue `LocalQueues` needs besides [`REQUIRED`]
/// ([`crate::config::Settings::uses_kueue`]); the chart grants it with `rbac.kueue`
/// (`files/rbac-rules-kueue.yaml`).
pub const KUEUE: &[Permission] = &[
    allow(
        super::kueue::GROUP,
        "workloads",
        "list",
        "kueue::AdmissionWatch: the shared watch of Kueue's Workloads lists them",
    ),
    allow(
        super::kueue::GROUP,
        "workloads",
        "watch",
        "kueue::AdmissionWatch: why a queued Job waits, from its Workload's conditions",
    ),
];

/// What a worker with `warm_pools:` needs besides [`REQUIRED`]: it makes, labels and deletes
/// its waiting pods itself (they belong to no Job); the chart grants it whenever
/// `config.warm_pools` names a pool (`files/rbac-rules-warm.yaml`).
pub const WARM: &[Permission] = &[
    allow(
        "",
        "pods",
        "create",
        "warm::Pools::create: a warm pool's waiting pods",
    ),
    allow(
        "",
        "pods",
        "patch",
        "warm::Pools::assign: the job's labels on the warm pod it is handed to",
    ),
    allow(
        "",
        "pods",
        "delete",
        "warm::Pools::delete, objects::delete_pod: a warm pod after its job, or replaced",
    ),
];

/// Every permission a worker with these settings needs: [`REQUIRED`], [`KUEUE`] when its jobs
/// may name a `LocalQueue`, [`WARM`] with warm pools.
#[must_use]
pub fn needed(kueue: bool, warm: bool) -> Vec<Permission> {
    let mut all = REQUIRED.to_vec();
    if kueue {
        all.extend_from_slice(KUEUE);
    }
    if warm {
        all.extend_from_slice(WARM);
    }
    all
}

impl Permission {
    fn attributes(&self, namespace: &str) -> ResourceAttributes {
        let (resource, subresource) = match self.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_owned())),
            None => (self.resource, None),
        };
        ResourceAttributes {
            group: Some(self.group.to_owned()),
            resource: Some(resource.to_owned()),
            subresource,
            verb: Some(self.verb.to_owned()),
            namespace: Some(namespace.to_owned()),
            name: self.own_namespace_only.then(|| namespace.to_owned()),
            ..ResourceAttributes::default()
        }
    }

    /// The Role rule that grants this permission, as one line of YAML.
    #[must_use]
    pub fn rule(&self, namespace: &str) -> String {
        let names = if self.own_namespace_only {
            format!(", resourceNames: [{namespace}]")
        } else {
            String::new()
        };
        format!(
            "{{apiGroups: [\"{}\"], resources: [{}], verbs: [{}]{names}}}",
            self.group, self.resource, self.verb
        )
    }
}

/// [`REQUIRED`] as the rules of a Role in `namespace`: one rule per resource (and per name
/// restriction), its verbs in [`REQUIRED`]'s order.
#[must_use]
pub fn role_rules(namespace: &str) -> Vec<PolicyRule> {
    rules_of(REQUIRED, namespace)
}

/// `permissions` as the rules of a Role in `namespace`, grouped as [`role_rules`] does.
#[must_use]
pub fn rules_of(permissions: &[Permission], namespace: &str) -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = Vec::new();
    for p in permissions {
        let names = p.own_namespace_only.then(|| vec![namespace.to_owned()]);
        let same = |r: &PolicyRule| {
            r.api_groups.as_deref() == Some(&[p.group.to_owned()][..])
                && r.resources.as_deref() == Some(&[p.resource.to_owned()][..])
                && r.resource_names == names
        };
        if let Some(rule) = rules.iter_mut().find(|r| same(r)) {
            rule.verbs.push(p.verb.to_owned());
        } else {
            rules.push(PolicyRule {
                api_groups: Some(vec![p.group.to_owned()]),
                resources: Some(vec![p.resource.to_owned()]),
                resource_names: names,
                verbs: vec![p.verb.to_owned()],
                ..PolicyRule::default()
            });
        }
    }
    rules
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)
    }
}

/// Permissions the API server denied, and the namespace they were asked for in.
#[derive(Debug)]
pub struct Missing {
    /// The job namespace.
    pub namespace: String,
    /// The denied permissions, in [`REQUIRED`]'s order, each with the API server's reason.
    pub denied: Vec<(Permission, String)>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the worker's Kubernetes identity lacks {} permission(s) in namespace `{}`; add these rules to its Role \
             (the Helm chart's Role has them all):",
            self.denied.len(),
            self.namespace
        )?;
        for (permission, reason) in &self.denied {
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!("; the API server says: {reason}")
            };
            writeln!(
                f,
                "  {permission}, for {}: {}{reason}",
                permission.why,
                permission.rule(&self.namespace)
            )?;
        }
        Ok(())
    }
}

/// Asks the API server whether this identity may make every request in `permissions` (see
/// [`needed`]) in `namespace`: `Ok(None)` when it may, else the denied ones.
pub async fn review(
    client: &Client,
    namespace: &str,
    permissions: &[Permission],
) -> Result<Option<Missing>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asks = permissions.iter().map(|permission| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(permission.attributes(namespace)),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let api = api.clone();
        async move {
            let answer = api.create(&PostParams::default(), &review).await?;
            let status = answer.status.unwrap_or_default();
            Ok::<_, kube::Error>((
                *permission,
                status.allowed,
                status.reason.unwrap_or_default(),
            ))
        }
    });
    let mut denied = Vec::new();
    for answer in futures::future::join_all(asks).await {
        let (permission, allowed, reason) = answer?;
        if !allowed {
            denied.push((permission, reason));
        }
    }
    Ok((!denied.is_empty()).then(|| Missing {
        namespace: namespace.to_owned(),
        denied,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subresource_is_asked_for_as_one() {
        let log = REQUIRED.iter().find(|p| p.resource == "pods/log").unwrap();
        let attributes = log.attributes("jobs");
        assert_eq!(attributes.resource.as_deref(), Some("pods"));
        assert_eq!(attributes.subresource.as_deref(), Some("log"));
        assert_eq!(attributes.namespace.as_deref(), Some("jobs"));
        assert_eq!(attributes.name, None);
    }

    #[test]
    fn the_namespace_check_asks_for_its_own_namespace_only() {
        let namespace = REQUIRED
            .iter()
            .find(|p| p.resource == "namespaces")
            .unwrap();
        assert_eq!(namespace.attributes("jobs").name.as_deref(), Some("jobs"));
        assert_eq!(
            namespace.rule("jobs"),
            r#"{apiGroups: [""], resources: [namespaces], verbs: [get], resourceNames: [jobs]}"#
        );
    }

    #[test]
    fn role_rules_group_the_verbs_by_resource() {
        let rules = role_rules("jobs");
        assert_eq!(rules.len(), 5, "{rules:?}");
        let jobs = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["jobs".to_owned()][..]))
            .unwrap();
        assert_eq!(
            jobs.verbs,
            [
                "create",
                "get",
                "list",
                "watch",
                "delete",
                "deletecollection"
            ]
        );
        assert_eq!(jobs.api_groups.as_deref(), Some(&["batch".to_owned()][..]));
        let namespaces = &rules[0];
        assert_eq!(
            namespaces.resource_names.as_deref(),
            Some(&["jobs".to_owned()][..])
        );
        let verbs: usize = rules.iter().map(|r| r.verbs.len()).sum();
        assert_eq!(verbs, REQUIRED.len());
    }

    /// The chart's Role is this list: same rules, same verbs, nothing more.
    #[test]
    fn the_helm_charts_role_has_exactly_these_rules() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/helm/flext-kubernetes/files/rbac-rules.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let text = text.replace(
            r#"'{{ include "flext-kubernetes.jobNamespace" . }}'"#,
            "the-job-namespace",
        );
        let chart: Vec<PolicyRule> = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(chart, role_rules("the-job-namespace"));
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/helm/flext-kubernetes/files/rbac-rules-kueue.yaml"
        );
        let kueue: Vec<PolicyRule> =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(kueue, rules_of(KUEUE, "the-job-namespace"));
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/helm/flext-kubernetes/files/rbac-rules-warm.yaml"
        );
        let warm: Vec<PolicyRule> =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(warm, rules_of(WARM, "the-job-namespace"));
    }

    #[test]
    fn the_report_names_each_missing_permission_with_its_rule() {
        let missing = Missing {
            namespace: "jobs".into(),
            denied: vec![(REQUIRED[4], String::new())],
        };
        let text = missing.to_string();
        assert!(
            text.contains("lacks 1 permission(s) in namespace `jobs`"),
            "{text}"
        );
        assert!(
            text.contains(r#"create jobs (batch), for objects::create_once: each attempt's Job: {apiGroups: ["batch"], resources: [jobs], verbs: [create]}"#),
            "{text}"
        );
    }
}
