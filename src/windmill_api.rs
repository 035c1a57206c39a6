//! Windmill's public HTTP API, for what the database does not give: a short-lived token for the
//! job's user (`WM_TOKEN`), and the values behind `$var:` and `$res:` arguments, read with that
//! token so that the user's own permissions apply. [`prepare`] does both for a job before it runs
//! and [`release`] deletes the token after, so an executor only sees resolved args and a token.
//!
//! Endpoints (Windmill's published API): `POST /api/users/tokens/impersonate` (201, the token as
//! text), `DELETE /api/users/tokens/delete/{prefix}`, `GET /api/w/{ws}/variables/get_value/{path}`,
//! `GET /api/w/{ws}/resources/get_value_interpolated/{path}`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::Secret;
use crate::domain::{FailureCategory, Job, JobFailure};

/// Length of the token prefix Windmill deletes tokens by.
const TOKEN_PREFIX_LEN: usize = 10;

/// What went wrong talking to Windmill's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not get an answer.
    #[error("cannot reach Windmill's API at {url}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// Windmill answered with an error status.
    #[error("Windmill's API answered {status} to {what}: {body}")]
    Status {
        /// What we asked.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body (shortened).
        body: String,
    },
}

/// What a job gets from Windmill's side before it runs.
#[derive(Debug)]
pub struct JobAccess {
    /// The args, `$var:`/`$res:` values resolved.
    pub args: Map<String, Value>,
    /// A token for the job's user, when the API is configured and the job has a user.
    pub token: Option<Secret>,
}

/// Prepares a job: through `api`, when one is configured and the job has a user to act as, a
/// token for the job valid for `valid_for` and the args resolved with it; else the args as they
/// are (a failure saying what to configure when they need the API).
///
/// How this token differs from a native worker's: Windmill's pull mints a token that carries the
/// job's permission snapshot (`job_perms`, taken at push), signed with the instance's secret; no
/// public API mints one. Impersonating `permissioned_as_email` gives the user's permissions as
/// they are now. A job permissioned as a group (`g/...`) would get its creator's permissions
/// instead of the group's, so it gets no token (and `$var:`/`$res:` args fail, saying why).
pub async fn prepare(
    api: Option<&WindmillApi>,
    job: &Job,
    valid_for: Duration,
) -> Result<JobAccess, JobFailure> {
    match api {
        Some(api) if job.permissioned_as_email.is_some() && !acts_as_group(job) => {
            api.prepare(job, valid_for).await
        }
        _ => Ok(JobAccess {
            args: unresolved_args(job, api.is_some())?,
            token: None,
        }),
    }
}

/// Whether the job is permissioned as a group, which impersonation cannot act as.
fn acts_as_group(job: &Job) -> bool {
    job.permissioned_as
        .as_deref()
        .is_some_and(|p| p.starts_with("g/"))
}

/// Deletes the token [`prepare`] minted, if any.
pub async fn release(api: Option<&WindmillApi>, access: &JobAccess) {
    if let (Some(api), Some(token)) = (api, &access.token) {
        api.forget(token).await;
    }
}

/// The job's args when no `$var:`/`$res:` value can be resolved (no API, or no user to act as;
/// `api_configured` tells which): the args, or the failure saying what to configure.
pub fn unresolved_args(job: &Job, api_configured: bool) -> Result<Map<String, Value>, JobFailure> {
    let args = job.args_object()?;
    let needs = needs_resolution(&args);
    if !needs.is_empty() {
        let why = if acts_as_group(job) {
            "the job runs as a group (permissioned_as g/...), and Windmill's API can only mint tokens for users, \
             so the worker does not resolve them; run it as a user, or on a stock Windmill worker"
        } else if api_configured {
            "the job has no user email (v2_job.permissioned_as_email) to read them as"
        } else {
            "set FLEXT_WINDMILL_URL and FLEXT_WINDMILL_TOKEN so the worker can resolve them through Windmill's API"
        };
        return Err(JobFailure::new(
            FailureCategory::ConfigError,
            "UnresolvedArgs",
            format!(
                "argument(s) {} reference Windmill variables or resources ($var:/$res:); {why}",
                needs.join(", ")
            ),
        ));
    }
    Ok(args)
}

impl Error {
    /// The message with its cause, for a job's failure message and the log, which show one line
    /// and no chain.
    #[must_use]
    pub fn with_cause(&self) -> String {
        match self {
            Self::Unreachable { source, .. } => format!("{self}: {source}"),
            Self::Status { .. } => self.to_string(),
        }
    }
}

/// A client of Windmill's API, with the superadmin token the worker is configured with.
#[derive(Debug, Clone)]
pub struct WindmillApi {
    base: String,
    token: Secret,
    http: reqwest::Client,
}

impl WindmillApi {
    /// A client for `base` (`https://windmill.example.com`).
    pub fn new(base: &str, token: Secret) -> Result<Self, reqwest::Error> {
        // rustls needs a process-wide crypto provider; kube uses ring too. A second install is a
        // no-op error we can ignore.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let response = request.send().await.map_err(|source| Error::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(300);
        Err(Error::Status {
            what: what.to_owned(),
            status: status.as_u16(),
            body,
        })
    }

    /// Mints a token for the job's user, valid a little longer than the job may run.
    pub async fn impersonate(&self, job: &Job, valid_for: Duration) -> Result<Secret, Error> {
        let email = job.permissioned_as_email.clone().unwrap_or_default();
        let expiration = chrono::Utc::now()
            + chrono::Duration::from_std(valid_for).unwrap_or(chrono::TimeDelta::MAX);
        let body = json!({
            "impersonate_email": email,
            "label": format!("flext-kubernetes job {}", job.id),
            "expiration": expiration.to_rfc3339(),
            "workspace_id": job.workspace,
        });
        let request = self
            .http
            .post(format!("{}/api/users/tokens/impersonate", self.base))
            .bearer_auth(self.token.expose())
            .json(&body);
        let text = self
            .send("minting a job token", request)
            .await?
            .text()
            .await
            .map_err(|source| Error::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        // The token comes as text; tolerate a JSON string too.
        let token = serde_json::from_str::<String>(&text)
            .unwrap_or(text)
            .trim()
            .to_owned();
        Ok(Secret::new(token))
    }

    /// Mints the job's token and resolves its args with it; on failure no token is left behind.
    async fn prepare(&self, job: &Job, valid_for: Duration) -> Result<JobAccess, JobFailure> {
        let token = self.impersonate(job, valid_for).await.map_err(|error| {
            JobFailure::new(
                FailureCategory::ConfigError,
                "JobTokenError",
                format!(
                    "{}; check FLEXT_WINDMILL_URL and that FLEXT_WINDMILL_TOKEN is a superadmin token",
                    error.with_cause()
                ),
            )
        })?;
        let args = match job.args_object() {
            Ok(args) => self.resolve(&job.workspace, &args, &token).await,
            Err(failure) => Err(failure),
        };
        match args {
            Ok(args) => Ok(JobAccess {
                args,
                token: Some(token),
            }),
            Err(failure) => {
                self.forget(&token).await;
                Err(failure)
            }
        }
    }

    /// Deletes a job's token, logging (not failing) when that does not work: it expires anyway.
    async fn forget(&self, token: &Secret) {
        if let Err(error) = self.delete_token(token).await {
            tracing::warn!(error = %error.with_cause(), "deleting the job's token failed; it expires by itself");
        }
    }

    /// Deletes a token minted for a job.
    pub async fn delete_token(&self, token: &Secret) -> Result<(), Error> {
        let prefix: String = token.expose().chars().take(TOKEN_PREFIX_LEN).collect();
        let request = self
            .http
            .delete(format!("{}/api/users/tokens/delete/{prefix}", self.base))
            .bearer_auth(self.token.expose());
        self.send("deleting a job token", request).await.map(|_| ())
    }

    /// Resolves `$var:` and `$res:` argument values with the job's token.
    pub async fn resolve(
        &self,
        workspace: &str,
        args: &Map<String, Value>,
        token: &Secret,
    ) -> Result<Map<String, Value>, JobFailure> {
        let mut out = args.clone();
        for (name, value) in &mut out {
            let Some(text) = value.as_str() else { continue };
            let (kind, path, url) = if let Some(path) = text.strip_prefix("$var:") {
                (
                    "variable",
                    path,
                    format!("{}/api/w/{workspace}/variables/get_value/{path}", self.base),
                )
            } else if let Some(path) = text.strip_prefix("$res:") {
                (
                    "resource",
                    path,
                    format!(
                        "{}/api/w/{workspace}/resources/get_value_interpolated/{path}",
                        self.base
                    ),
                )
            } else {
                continue;
            };
            let what = format!("reading {kind} `{path}` for argument `{name}`");
            let response = self
                .send(&what, self.http.get(url).bearer_auth(token.expose()))
                .await
                .map_err(|error| {
                    JobFailure::new(
                        FailureCategory::ConfigError,
                        "ArgResolutionError",
                        format!(
                            "{}; check that the {kind} exists and that the job's user may read it",
                            error.with_cause()
                        ),
                    )
                })?;
            *value = response.json().await.map_err(|e| {
                JobFailure::new(
                    FailureCategory::ConfigError,
                    "ArgResolutionError",
                    format!("{what}: the answer is not JSON: {e}"),
                )
            })?;
        }
        Ok(out)
    }
}

/// Whether any argument refers to a Windmill variable or resource.
#[must_use]
pub fn needs_resolution(args: &Map<String, Value>) -> Vec<&str> {
    args.iter()
        .filter(|(_, v)| {
            v.as_str()
                .is_some_and(|s| s.starts_with("$var:") || s.starts_with("$res:"))
        })
        .map(|(k, _)| k.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[tokio::test]
    async fn a_job_run_as_a_group_gets_no_impersonated_token() {
        // Nothing listens on port 1: asking the API would fail the job.
        let api = WindmillApi::new("http://127.0.0.1:1", Secret::new("t")).unwrap();
        let mut job = crate::testing::job();
        job.permissioned_as = Some("g/data-team".into());
        let access = prepare(Some(&api), &job, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(access.token.is_none());
        job.args = json!({"db": "$res:f/data/pg"});
        let failure = prepare(Some(&api), &job, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            failure.message.contains("runs as a group"),
            "{}",
            failure.message
        );
    }

    #[tokio::test]
    async fn an_unreachable_api_says_its_cause_once() {
        // Nothing listens on port 1.
        let api = WindmillApi::new("http://127.0.0.1:1", Secret::new("t")).unwrap();
        let error = api.delete_token(&Secret::new("token")).await.unwrap_err();
        assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
        let cause = error.source().map(ToString::to_string).unwrap_or_default();
        assert!(!error.to_string().contains(&cause), "said twice: {error}");
        assert_eq!(
            error.with_cause(),
            format!("cannot reach Windmill's API at http://127.0.0.1:1: {cause}")
        );
    }
}
