//! The in-pod runner (`flext-kubernetes runner`): the first program of a job's main container.
//!
//! An init container copies the worker binary into the pod; the language image then runs it. It
//! prepares the work directory, installs the lock's dependencies into a cache directory, runs the
//! language wrapper (Windmill's contract: read args, call the entrypoint, write the result),
//! streams the program's stdout and stderr line by line (with a nonce-marked progress line each
//! second the program's peak memory grew, for the heartbeat), and finally prints the result (or
//! error object) as a [`crate::trailer`] marked with the job's nonce, with peak memory and run
//! time. Which languages it runs, and how, is [`crate::domain::LANGUAGES`].
//!
//! Pod layout (all paths configurable):
//! - `/flext/job` (the attempt's Secret, its code keys): `job.json` (language, entrypoint),
//!   `main.<ext>`, `lock`, wrapper.
//! - `/flext/secret` (the same Secret, its args keys): `args.json`, `nonce`.
//! - `/flext/work` (emptyDir): the working directory; `result.json` lands here.
//! - `/flext/cache` (emptyDir or a shared volume): installed dependencies, keyed by lock hash.

mod deps;
mod program;
mod progress;
pub mod signature;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::Command;

use self::deps::{install_bun_deps, install_python_deps};
use self::program::{Program, run_program};
use self::progress::Stdout;
use crate::domain::{LanguageInfo, RunnerKind};
use crate::trailer::{self, Status};

/// The Python wrapper, shipped in the job's Secret.
pub const PYTHON_WRAPPER: &str = include_str!("wrappers/python.py");
/// The TypeScript wrapper (Bun, Deno), shipped in the job's Secret.
pub const TYPESCRIPT_WRAPPER: &str = include_str!("wrappers/typescript.ts");

/// What the worker tells the runner about the job (`job.json` in the job's Secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Windmill's language name.
    pub language: String,
    /// The function to call (`main` unless overridden).
    pub entrypoint: String,
    /// File name of the code in the job directory (`main.py`, `main.sh`, `main.ts`).
    pub main_file: String,
    /// Largest result accepted, bytes.
    pub max_result_bytes: u64,
    /// Run the script's `preprocessor` first and call the entrypoint with what it returns
    /// (Windmill pushed the job with `preprocessed = false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preprocess: bool,
}

/// Where a wrapper writes what the script's `preprocessor` returned (the entrypoint's args).
const PREPROCESSED_ARGS: &str = "preprocessed_args.json";

/// The file name of a language's code in the pod, when the runner runs the language.
#[must_use]
pub fn main_file(language: &str) -> Option<&'static str> {
    LanguageInfo::of(language)?.runner.map(|(_, file)| file)
}

/// The wrapper a language's program is started through (file name and text), if any.
#[must_use]
pub fn wrapper(language: &str) -> Option<(&'static str, &'static str)> {
    match LanguageInfo::of(language)?.runner?.0 {
        RunnerKind::Python => Some(("wrapper.py", PYTHON_WRAPPER)),
        RunnerKind::Bun | RunnerKind::Deno => Some(("wrapper.ts", TYPESCRIPT_WRAPPER)),
        RunnerKind::Bash => None,
    }
}

/// Where things are in the pod.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The code mount.
    pub job: PathBuf,
    /// The args mount.
    pub secret: PathBuf,
    /// The working directory.
    pub work: PathBuf,
    /// The dependency cache.
    pub cache: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            job: "/flext/job".into(),
            secret: "/flext/secret".into(),
            work: "/flext/work".into(),
            cache: "/flext/cache".into(),
        }
    }
}

/// How the user's program ended, before it is framed into the trailer.
#[derive(Debug, Clone, PartialEq)]
struct Ended {
    status: Status,
    payload: Value,
}

/// Runs the job; returns the process exit code (0 success, 1 the job failed, 2 the runner could
/// not start the job).
pub async fn run(paths: &Paths) -> i32 {
    match read_nonce(paths) {
        Some(nonce) => run_with(paths, &nonce, &[]).await,
        None => 2,
    }
}

/// A warm pod's runner: waits for the worker to hand it a job ([`crate::handover`]), lays the
/// job's files out in the (writable) job directory and runs it as [`run`] does, with the job's
/// environment. Silent while it waits: the pod's log is the job's.
pub async fn run_warm(paths: &Paths) -> i32 {
    let Some(nonce) = read_nonce(paths) else {
        return 2;
    };
    let payload = match crate::handover::wait_for_job(&paths.secret).await {
        Ok(payload) => payload,
        Err(error) => {
            eprintln!("flext runner: no job was handed to this warm pod: {error}");
            return 2;
        }
    };
    // The files and args go where the cold path mounts them; the args beside the code.
    let laid_out = std::fs::create_dir_all(&paths.job).and_then(|()| {
        for (name, text) in &payload.files {
            if name.contains('/') || name.starts_with('.') {
                continue;
            }
            std::fs::write(paths.job.join(name), text)?;
        }
        std::fs::write(paths.job.join("args.json"), &payload.args)
    });
    let job_paths = Paths {
        secret: paths.job.clone(),
        ..paths.clone()
    };
    if let Err(e) = laid_out {
        let ended = runner_error(
            "RunnerError",
            format!("cannot write the job into {}: {e}", paths.job.display()),
        );
        return finish(
            &job_paths,
            &nonce,
            ended,
            u64::MAX,
            Instant::now(),
            &Stdout::process(),
        )
        .await;
    }
    run_with(&job_paths, &nonce, &payload.env).await
}

fn read_nonce(paths: &Paths) -> Option<String> {
    match std::fs::read_to_string(paths.secret.join("nonce")) {
        Ok(n) => Some(n.trim().to_owned()),
        Err(e) => {
            eprintln!(
                "flext runner: cannot read the job nonce from {}: {e}",
                paths.secret.display()
            );
            None
        }
    }
}

async fn run_with(paths: &Paths, nonce: &str, env: &[(String, String)]) -> i32 {
    let started = Instant::now();
    let stdout = Stdout::process();
    let (ended, max_result) = match prepare_and_run(paths, nonce, env, &stdout).await {
        Ok((ended, limit)) => (ended, limit),
        Err(ended) => (ended, u64::MAX),
    };
    finish(paths, nonce, ended, max_result, started, &stdout).await
}

/// Frames how the program ended into the trailer and prints it; the exit code.
async fn finish(
    paths: &Paths,
    nonce: &str,
    ended: Ended,
    max_result: u64,
    started: Instant,
    stdout: &Stdout,
) -> i32 {
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let peak = peak_memory_kib();
    let mut ended = ended;
    let size = ended.payload.to_string().len() as u64;
    if size > max_result {
        ended = Ended {
            status: Status::Error,
            payload: json!({
                "name": "ResultTooLarge",
                "message": format!("the result is {size} bytes, more than the limit of {max_result} bytes (executor.max_result_bytes in the worker config); return less data, or write it to storage and return a reference"),
            }),
        };
    }
    // Only a success records the preprocessor's args (Windmill keeps a failed job's args).
    let preprocessed_args = match ended.status {
        Status::Ok => std::fs::read_to_string(paths.work.join(PREPROCESSED_ARGS))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok()),
        Status::Error => None,
    };
    let text = trailer::encode(
        nonce,
        ended.status,
        &ended.payload,
        preprocessed_args.as_ref(),
        peak,
        duration_ms,
    );
    // The program's output always ends in a newline (the pump completes partial lines), so the
    // trailer starts on a line of its own.
    stdout.write(text.as_bytes()).await;
    match ended.status {
        Status::Ok => 0,
        Status::Error => 1,
    }
}

fn runner_error(name: &str, message: impl Into<String>) -> Ended {
    let message: String = message.into();
    Ended {
        status: Status::Error,
        payload: json!({"name": name, "message": message}),
    }
}

/// The job's files, laid out in the work directory.
struct Prepared {
    spec: JobSpec,
    code: String,
    main: PathBuf,
    result_path: PathBuf,
    args_path: PathBuf,
    lock: String,
}

/// Reads `job.json` and the code, and writes the code into the work directory.
fn prepare(paths: &Paths) -> Result<Prepared, Ended> {
    let spec_text = std::fs::read_to_string(paths.job.join("job.json")).map_err(|e| {
        runner_error(
            "RunnerError",
            format!("cannot read job.json in {}: {e}", paths.job.display()),
        )
    })?;
    let spec: JobSpec = serde_json::from_str(&spec_text)
        .map_err(|e| runner_error("RunnerError", format!("job.json is malformed: {e}")))?;
    let code = std::fs::read_to_string(paths.job.join(&spec.main_file)).map_err(|e| {
        runner_error(
            "RunnerError",
            format!("cannot read the code {}: {e}", spec.main_file),
        )
    })?;
    std::fs::create_dir_all(&paths.work).map_err(|e| {
        runner_error(
            "RunnerError",
            format!("cannot create {}: {e}", paths.work.display()),
        )
    })?;
    let main = paths.work.join(&spec.main_file);
    std::fs::write(&main, &code).map_err(|e| {
        runner_error(
            "RunnerError",
            format!("cannot write {}: {e}", main.display()),
        )
    })?;
    let result_path = paths.work.join("result.json");
    let _ = std::fs::remove_file(&result_path);
    let args_path = paths.secret.join("args.json");
    let lock = std::fs::read_to_string(paths.job.join("lock")).unwrap_or_default();

    Ok(Prepared {
        spec,
        code,
        main,
        result_path,
        args_path,
        lock,
    })
}

/// The command that runs the job's language, its dependencies installed first.
async fn language_command(paths: &Paths, job: &Prepared) -> Result<Command, Ended> {
    let Prepared {
        spec,
        code,
        main,
        args_path,
        lock,
        ..
    } = job;
    let runner = LanguageInfo::of(&spec.language).and_then(|l| l.runner);
    let wrapper = match wrapper(&spec.language) {
        Some((name, text)) => Some(write_wrapper(paths, name, text)?),
        None => None,
    };
    let command = match (runner, wrapper) {
        (Some((RunnerKind::Python, _)), Some(wrapper)) => {
            let mut c = Command::new("python3");
            c.arg("-u").arg(wrapper);
            if let Some(site) = install_python_deps(paths, lock).await? {
                let existing = std::env::var("PYTHONPATH").unwrap_or_default();
                let joined = if existing.is_empty() {
                    site.display().to_string()
                } else {
                    format!("{}:{existing}", site.display())
                };
                c.env("PYTHONPATH", joined);
            }
            c
        }
        (Some((RunnerKind::Bash, _)), _) => {
            let args = read_args(args_path)?;
            let mut c = Command::new("bash");
            c.arg(main);
            for name in signature::bash_arg_order(code) {
                c.arg(args.get(&name).map(bash_value).unwrap_or_default());
            }
            c
        }
        (Some((kind @ (RunnerKind::Bun | RunnerKind::Deno), _)), Some(wrapper)) => {
            let names = signature::ts_param_names(code, &spec.entrypoint);
            let mut c = if kind == RunnerKind::Deno {
                let mut c = Command::new("deno");
                c.args(["run", "--allow-all", "--quiet"]).arg(&wrapper);
                c
            } else {
                install_bun_deps(paths, lock).await?;
                let mut c = Command::new("bun");
                c.arg("run").arg(&wrapper);
                c
            };
            c.env(
                "FLEXT_ARG_NAMES",
                serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()),
            );
            let pre_names = signature::ts_param_names(code, "preprocessor");
            c.env(
                "FLEXT_PREPROCESSOR_ARG_NAMES",
                serde_json::to_string(&pre_names).unwrap_or_else(|_| "[]".into()),
            );
            c
        }
        _ => {
            return Err(runner_error(
                "UnsupportedLanguage",
                format!(
                    "the runner runs {}, not `{}`",
                    LanguageInfo::runnable().collect::<Vec<_>>().join(", "),
                    spec.language
                ),
            ));
        }
    };
    Ok(command)
}

async fn prepare_and_run(
    paths: &Paths,
    nonce: &str,
    env: &[(String, String)],
    stdout: &Stdout,
) -> Result<(Ended, u64), Ended> {
    let job = prepare(paths)?;
    let mut command = language_command(paths, &job).await?;
    let Prepared {
        spec,
        main,
        result_path,
        args_path,
        ..
    } = &job;
    command
        .current_dir(&paths.work)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("FLEXT_MAIN", main)
        .env("FLEXT_ARGS", args_path)
        .env("FLEXT_RESULT", result_path)
        .env("FLEXT_ENTRYPOINT", &spec.entrypoint)
        .env("FLEXT_PREPROCESS", if spec.preprocess { "1" } else { "" })
        .env(
            "FLEXT_PREPROCESSED_ARGS",
            paths.work.join(PREPROCESSED_ARGS),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = Program {
        language: &spec.language,
        result_path,
        nonce,
        stdout,
    };
    let ended = run_program(command, &program).await?;
    Ok((ended, spec.max_result_bytes))
}

fn write_wrapper(paths: &Paths, name: &str, fallback: &str) -> Result<PathBuf, Ended> {
    // The job's Secret carries the wrapper the worker shipped; the built-in copy is a fallback for
    // jobs rendered by an older worker.
    let shipped = paths.job.join(name);
    let text = std::fs::read_to_string(&shipped).unwrap_or_else(|_| fallback.to_owned());
    let target = paths.work.join(name);
    std::fs::write(&target, text).map_err(|e| {
        runner_error(
            "RunnerError",
            format!("cannot write {}: {e}", target.display()),
        )
    })?;
    Ok(target)
}

fn read_args(path: &Path) -> Result<serde_json::Map<String, Value>, Ended> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| runner_error("RunnerError", format!("cannot read the args: {e}")))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(runner_error(
            "InvalidArgs",
            "args.json is not a JSON object",
        )),
    }
}

/// Bash receives strings: JSON strings as their text, everything else as compact JSON.
fn bash_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Peak resident memory of the programs the runner waited for, KiB (Linux reports `ru_maxrss`
/// in KiB).
fn peak_memory_kib() -> Option<i64> {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .ok()
        .map(|usage| usage.max_rss())
        .filter(|kib| *kib > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Pod {
        root: PathBuf,
        paths: Paths,
    }

    impl Pod {
        fn new(language: &str, code: &str, args: &Value) -> Self {
            let root = std::env::temp_dir().join(format!("flext-runner-{}", uuid::Uuid::new_v4()));
            let paths = Paths {
                job: root.join("job"),
                secret: root.join("secret"),
                work: root.join("work"),
                cache: root.join("cache"),
            };
            for dir in [&paths.job, &paths.secret] {
                std::fs::create_dir_all(dir).unwrap();
            }
            let file = main_file(language).unwrap();
            let spec = JobSpec {
                language: language.into(),
                entrypoint: "main".into(),
                main_file: file.into(),
                max_result_bytes: 1 << 20,
                preprocess: false,
            };
            std::fs::write(
                paths.job.join("job.json"),
                serde_json::to_string(&spec).unwrap(),
            )
            .unwrap();
            std::fs::write(paths.job.join(file), code).unwrap();
            std::fs::write(paths.secret.join("args.json"), args.to_string()).unwrap();
            std::fs::write(paths.secret.join("nonce"), "testnonce\n").unwrap();
            Self { root, paths }
        }

        /// The job as Windmill pushes it with `preprocessed = false`.
        fn preprocessed(self) -> Self {
            let path = self.paths.job.join("job.json");
            let mut spec: JobSpec =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            spec.preprocess = true;
            std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
            self
        }

        async fn ended(&self) -> Ended {
            self.ended_with_output().await.0
        }

        /// How the program ended, and what the runner printed on stdout.
        async fn ended_with_output(&self) -> (Ended, String) {
            let captured = Capture::default();
            let stdout = Stdout::of(Box::new(captured.clone()));
            let ended = match prepare_and_run(&self.paths, "testnonce", &[], &stdout).await {
                Ok((ended, _)) | Err(ended) => ended,
            };
            let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
            (ended, text)
        }
    }

    /// An in-memory stdout.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl tokio::io::AsyncWrite for Capture {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl Drop for Pod {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[tokio::test]
    async fn python_main_gets_keyword_args_and_returns_json() {
        let pod = Pod::new(
            "python3",
            "def main(x, y=1):\n    print('adding')\n    return {'sum': x + y}\n",
            &json!({"x": 2, "y": 3}),
        );
        assert_eq!(
            pod.ended().await,
            Ended {
                status: Status::Ok,
                payload: json!({"sum": 5})
            }
        );
    }

    #[tokio::test]
    async fn a_python_preprocessor_runs_first_and_its_result_is_mains_args() {
        let code = "def preprocessor(event):\n    return {'x': event['body'] * 2}\n\ndef main(x):\n    return x + 1\n";
        let pod = Pod::new("python3", code, &json!({"event": {"body": 20}})).preprocessed();
        assert_eq!(
            pod.ended().await,
            Ended {
                status: Status::Ok,
                payload: json!(41)
            }
        );
        let args = std::fs::read_to_string(pod.paths.work.join(PREPROCESSED_ARGS)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"x": 40})
        );
        // Without `preprocessed = false`, main gets the args as pushed.
        let plain = Pod::new("python3", code, &json!({"x": 1}));
        assert_eq!(plain.ended().await.payload, json!(2));
        assert!(!plain.paths.work.join(PREPROCESSED_ARGS).exists());
    }

    #[tokio::test]
    async fn python_exception_becomes_an_error_object_with_name_message_and_stack() {
        let pod = Pod::new(
            "python3",
            "def main(x):\n    raise ValueError(f'bad x: {x}')\n",
            &json!({"x": -1}),
        );
        let ended = pod.ended().await;
        assert_eq!(ended.status, Status::Error);
        assert_eq!(ended.payload["name"], "ValueError");
        assert_eq!(ended.payload["message"], "bad x: -1");
        assert!(
            ended.payload["stack"].as_str().unwrap().contains("line 2"),
            "{}",
            ended.payload
        );
    }

    #[tokio::test]
    async fn bash_gets_positional_args_in_declared_order_and_returns_its_last_line() {
        let code = "second=\"$2\"\nfirst=\"$1\"\necho \"noise\"\necho \"$first-$second\"\n";
        let pod = Pod::new("bash", code, &json!({"second": "b", "first": "a"}));
        assert_eq!(
            pod.ended().await,
            Ended {
                status: Status::Ok,
                payload: json!("a-b")
            }
        );
    }

    #[tokio::test]
    async fn bash_failure_without_an_error_object_quotes_the_output_tail() {
        let pod = Pod::new("bash", "echo 'about to fail' >&2\nexit 3\n", &json!({}));
        let ended = pod.ended().await;
        assert_eq!(ended.status, Status::Error);
        let message = ended.payload["message"].as_str().unwrap();
        assert!(
            message.contains("exit code 3") && message.contains("about to fail"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_running_program_reports_its_growing_memory_peak_on_nonce_marked_lines() {
        let code = "import time\ndef main():\n    print('allocating', flush=True)\n    block = b'x' * (60 << 20)\n    time.sleep(2.5)\n    print('done', flush=True)\n    return len(block)\n";
        let pod = Pod::new("python3", code, &json!({}));
        let (ended, output) = pod.ended_with_output().await;
        assert_eq!(ended.status, Status::Ok, "{ended:?}");
        let mut decoder = trailer::Decoder::new("testnonce", 1 << 20);
        let mut peaks = Vec::new();
        let mut user = Vec::new();
        for line in output.lines() {
            match decoder.push(line).unwrap() {
                trailer::Line::Progress { memory_peak_kib } => peaks.push(memory_peak_kib),
                trailer::Line::Output => user.push(line),
                trailer::Line::Trailer => panic!("no trailer before the program ends: {line}"),
            }
        }
        assert_eq!(user, ["allocating", "done"], "{output}");
        assert!(
            peaks.last().is_some_and(|kib| *kib >= 50_000),
            "a live peak of the 60 MB block: {peaks:?}\n{output}"
        );
        assert!(
            peaks.windows(2).all(|w| w[0] < w[1]),
            "only when it grew: {peaks:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_entrypoint_is_named() {
        let pod = Pod::new("python3", "def run():\n    return 1\n", &json!({}));
        let ended = pod.ended().await;
        assert_eq!(ended.status, Status::Error);
        assert!(
            ended.payload["message"]
                .as_str()
                .unwrap()
                .contains("def main("),
            "{}",
            ended.payload
        );
    }
}
