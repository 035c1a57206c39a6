//! Counts every request of the Kubernetes client by verb, resource and status code
//! (`flext_kube_requests_total`): a tower layer on the client's service stack, so that nothing
//! the client sends — the shared watch, log streams, access reviews — goes uncounted.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use tower::{Layer, Service};

use crate::metrics::KubeMetrics;

/// Wraps the client's service in [`Counted`].
#[derive(Debug, Clone)]
pub struct CountLayer(pub KubeMetrics);

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The client's service, counting what it sends and how it was answered.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: KubeMetrics,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = response.as_ref().ok().map(|r| r.status().as_u16());
            metrics.request(verb, &resource, code);
            response
        })
    }
}

/// The Kubernetes verb and resource of a request, from its method and path: `/api/v1/…` and
/// `/apis/<group>/<version>/…`, namespaced or not, with a subresource (`pods/log`). Other paths
/// (`/version`, discovery) are named by their first segment. Names of objects never become labels.
#[must_use]
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] if !rest.is_empty() => rest,
        _ => {
            let resource = segments.first().copied().unwrap_or("root");
            // Non-resource paths are read whole: a GET of one is a `get`.
            return (verb(method, true, false), resource.to_owned());
        }
    };
    let rest = match rest {
        ["namespaces", _namespace, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let resource = match rest {
        [plural, _name, sub, ..] => format!("{plural}/{sub}"),
        [plural, ..] => (*plural).to_owned(),
        [] => String::new(),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    (verb(method, rest.len() >= 2, watch), resource)
}

fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &Method, uri: &str) -> (&'static str, String) {
        classify(method, &uri.parse().expect("a URI"))
    }

    #[test]
    fn verbs_and_resources_come_from_the_path_never_an_object_name() {
        let cases = [
            (
                Method::POST,
                "/apis/batch/v1/namespaces/ns/jobs?fieldManager=x",
                "create",
                "jobs",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?labelSelector=a%3Db",
                "list",
                "pods",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1",
                "watch",
                "pods",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/ns/pods/flext-abc/log?follow=true",
                "get",
                "pods/log",
            ),
            (
                Method::DELETE,
                "/apis/batch/v1/namespaces/ns/jobs/flext-abc",
                "delete",
                "jobs",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns/configmaps?labelSelector=x",
                "deletecollection",
                "configmaps",
            ),
            (Method::GET, "/api/v1/namespaces/ns", "get", "namespaces"),
            (
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "create",
                "selfsubjectaccessreviews",
            ),
            (Method::GET, "/version", "get", "version"),
        ];
        for (method, uri, verb, resource) in cases {
            assert_eq!(of(&method, uri), (verb, resource.to_owned()), "{uri}");
        }
    }
}
