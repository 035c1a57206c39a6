//! Running the user's program: its stdout and stderr copied line by line (the tail kept for a
//! failure's message), SIGTERM passed on, live memory reported, and its end read into an
//! [`Ended`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::progress::{self, Stdout};
use super::{Ended, runner_error};
use crate::trailer::Status;

/// Lines of output kept for the message of a failure without an error object.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 2048;

#[derive(Debug, Default)]
struct Seen {
    tail: Vec<String>,
    last_stdout: Option<String>,
}

/// What running the user's program needs besides its command.
pub(super) struct Program<'a> {
    pub language: &'a str,
    pub result_path: &'a Path,
    pub nonce: &'a str,
    pub stdout: &'a Stdout,
}

pub(super) async fn run_program(
    mut command: Command,
    program: &Program<'_>,
) -> Result<Ended, Ended> {
    let Program {
        language,
        result_path,
        nonce,
        stdout,
    } = *program;
    let mut child = command.spawn().map_err(|e| {
        runner_error(
            "RunnerError",
            format!("cannot start the {language} program: {e}"),
        )
    })?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, Some(stdout.clone()), seen.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, None, seen.clone())));
    let forward = tokio::spawn(forward_sigterm(child.id()));
    let progress = child
        .id()
        .map(|pid| tokio::spawn(progress::report(pid, nonce.to_owned(), stdout.clone())));
    let status = child.wait().await.map_err(|e| {
        runner_error(
            "RunnerError",
            format!("waiting for the program failed: {e}"),
        )
    })?;
    forward.abort();
    // No progress line after this: the trailer follows the program's last output.
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }
    for task in [out, err].into_iter().flatten() {
        let _ = task.await;
    }
    let seen = seen
        .lock()
        .map(|s| (s.tail.clone(), s.last_stdout.clone()))
        .unwrap_or_default();
    verdict(status, std::fs::read(result_path).ok(), seen, language)
}

/// How the program ended, from its exit status, the result (or error object) it wrote, and the
/// output seen (the tail, and stdout's last line).
fn verdict(
    status: std::process::ExitStatus,
    written: Option<Vec<u8>>,
    seen: (Vec<String>, Option<String>),
    language: &str,
) -> Result<Ended, Ended> {
    if status.success() {
        let payload = match written {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                runner_error(
                    "ResultInvalid",
                    format!("the program wrote a result that is not JSON: {e}"),
                )
            })?,
            // Bash: the last line of stdout, as JSON when it parses, else as a string.
            None if language == "bash" => seen.1.map_or(Value::Null, |line| {
                serde_json::from_str(&line).unwrap_or(Value::String(line))
            }),
            None => Value::Null,
        };
        return Ok(Ended {
            status: Status::Ok,
            payload,
        });
    }
    let code = status.code().map_or_else(
        || "killed by a signal".to_owned(),
        |c| format!("exit code {c}"),
    );
    if let Some(object) = written
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|v| v.get("name").is_some())
    {
        return Ok(Ended {
            status: Status::Error,
            payload: object,
        });
    }
    Ok(Ended {
        status: Status::Error,
        payload: json!({
            "name": "ExitCode",
            "message": format!("the program ended with {code}; last output:\n{}", tail_of(&seen.0.join("\n"))),
        }),
    })
}

/// Copies the program's stdout (into the shared `stdout`) or, when that is `None`, its stderr,
/// line by line.
async fn pump(stream: impl AsyncRead + Unpin, stdout: Option<Stdout>, seen: Arc<Mutex<Seen>>) {
    let stderr = stdout.is_none();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut err = tokio::io::stderr();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if let Some(out) = &stdout {
            out.write(&line).await;
        } else {
            let _ = err.write_all(&line).await;
            let _ = err.flush().await;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        if let Ok(mut seen) = seen.lock() {
            if !stderr && !text.is_empty() {
                seen.last_stdout = Some(text.clone());
            }
            seen.tail.push(text);
            if seen.tail.len() > TAIL_LINES {
                seen.tail.remove(0);
            }
        }
    }
}

/// Kubernetes stops a pod with SIGTERM to the container's first process: pass it on to the
/// program so it can clean up within the grace period.
async fn forward_sigterm(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    while term.recv().await.is_some() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

pub(super) fn tail_of(text: &str) -> String {
    let text = text.trim_end();
    if text.len() <= TAIL_BYTES {
        return text.to_owned();
    }
    let mut start = text.len() - TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}
