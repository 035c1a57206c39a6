//! Installing a job's lock before its program runs: Python requirements with uv or pip, Bun's
//! `package.json` and lockfile with `bun install`, each into the cache directory.

use std::path::PathBuf;

use serde_json::Value;
use tokio::process::Command;

use super::program::tail_of;
use super::{Ended, Paths, runner_error};

/// Installs a Python lock (requirements lines) into `<cache>/python/<hash>` once, with uv when
/// present, else pip. Returns the directory to put on `PYTHONPATH`.
pub(super) async fn install_python_deps(
    paths: &Paths,
    lock: &str,
) -> Result<Option<PathBuf>, Ended> {
    let requirements: Vec<&str> = lock
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if requirements.is_empty() {
        return Ok(None);
    }
    let key = crate::runner::signature::short_hash(&requirements.join("\n"));
    let target = paths.cache.join("python").join(key);
    if target.join(".complete").exists() {
        return Ok(Some(target));
    }
    let lock_file = paths.work.join("requirements.txt");
    std::fs::write(&lock_file, requirements.join("\n"))
        .map_err(|e| runner_error("RunnerError", format!("cannot write requirements.txt: {e}")))?;
    let uv = which("uv");
    let mut command = if let Some(uv) = uv {
        let mut c = Command::new(uv);
        c.args([
            "pip", "install", "--quiet", "--python", "python3", "--target",
        ])
        .arg(&target)
        .arg("-r")
        .arg(&lock_file);
        c
    } else {
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
        ])
        .arg(&target)
        .arg("-r")
        .arg(&lock_file);
        c
    };
    println!(
        "[flext runner] installing {} Python requirement(s)",
        requirements.len()
    );
    let output = install(&mut command, "the installer").await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(runner_error(
            "DependencyInstallError",
            format!(
                "installing the script's requirements failed: {}",
                tail_of(&stderr)
            ),
        ));
    }
    let _ = std::fs::write(target.join(".complete"), "");
    Ok(Some(target))
}

/// Installs a Bun lock — Windmill's form: `package.json`, then `//bun.lock` (or `//bun.lockb`,
/// base64) and the lockfile, `<empty>` when there is none — into the work directory, with Bun's
/// package cache in the cache directory. Deno needs no step: it fetches imports as it runs.
pub(super) async fn install_bun_deps(paths: &Paths, lock: &str) -> Result<(), Ended> {
    let lock = lock.replace("\r\n", "\n");
    let (package_json, lockfile) = match (
        lock.split_once("\n//bun.lock\n"),
        lock.split_once("\n//bun.lockb\n"),
    ) {
        (Some((p, l)), _) => (
            p.to_owned(),
            Some(("bun.lock", l.trim().as_bytes().to_vec())),
        ),
        (None, Some((p, l))) => {
            let binary =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, l.trim()).ok();
            (p.to_owned(), binary.map(|b| ("bun.lockb", b)))
        }
        (None, None) => (lock.clone(), None),
    };
    let manifest: Value = match serde_json::from_str(package_json.trim()) {
        Ok(manifest) => manifest,
        Err(_) if package_json.trim().is_empty() => return Ok(()),
        Err(e) => {
            return Err(runner_error(
                "DependencyInstallError",
                format!("the script's lock does not start with a package.json: {e}"),
            ));
        }
    };
    if manifest
        .get("dependencies")
        .and_then(Value::as_object)
        .is_none_or(serde_json::Map::is_empty)
    {
        return Ok(());
    }
    std::fs::write(paths.work.join("package.json"), package_json.trim())
        .map_err(|e| runner_error("RunnerError", format!("cannot write package.json: {e}")))?;
    let mut command = Command::new("bun");
    command
        .arg("install")
        .current_dir(&paths.work)
        .env("BUN_INSTALL_CACHE_DIR", paths.cache.join("bun"));
    if let Some((name, bytes)) =
        lockfile.filter(|(_, b)| !b.is_empty() && b.as_slice() != b"<empty>")
    {
        std::fs::write(paths.work.join(name), bytes)
            .map_err(|e| runner_error("RunnerError", format!("cannot write {name}: {e}")))?;
        command.arg("--frozen-lockfile");
    }
    println!("[flext runner] installing the script's npm dependencies with bun");
    let output = install(&mut command, "bun install").await?;
    if !output.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        return Err(runner_error(
            "DependencyInstallError",
            format!("bun install failed: {}", tail_of(&text)),
        ));
    }
    Ok(())
}

/// Runs an installer to its end; `what` names it when it cannot start.
async fn install(command: &mut Command, what: &str) -> Result<std::process::Output, Ended> {
    command
        .output()
        .await
        .map_err(|e| runner_error("DependencyInstallError", format!("cannot run {what}: {e}")))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
