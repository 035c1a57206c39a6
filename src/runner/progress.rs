//! The live peak memory of the running program, printed as [`crate::trailer`] progress lines so
//! that the worker's heartbeat can show it in Windmill while the job runs (the final figure comes
//! from `getrusage` in the trailer).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::Mutex;

use crate::trailer;

/// How often the figure is read (and at most printed).
const EVERY: Duration = Duration::from_secs(1);

/// The runner's stdout, shared by the program's output pump and the progress lines: each writer
/// holds the lock for a whole line, so a progress line never lands inside a line of output.
#[derive(Clone)]
pub(super) struct Stdout(Arc<Mutex<Box<dyn AsyncWrite + Send + Unpin>>>);

impl Stdout {
    /// The process's own stdout.
    pub(super) fn process() -> Self {
        Self::of(Box::new(tokio::io::stdout()))
    }

    pub(super) fn of(writer: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Self(Arc::new(Mutex::new(writer)))
    }

    /// Writes whole lines and flushes them (errors are ignored: a closed stdout has no reader).
    pub(super) async fn write(&self, text: &[u8]) {
        let mut out = self.0.lock().await;
        let _ = out.write_all(text).await;
        let _ = out.flush().await;
    }
}

/// Prints a progress line every second in which the peak memory of the process tree under `root`
/// grew; runs until aborted.
pub(super) async fn report(root: u32, nonce: String, out: Stdout) {
    let mut printed = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        if let Some(kib) = tree_peak_kib(Path::new("/proc"), root).filter(|k| *k > printed) {
            printed = kib;
            out.write(trailer::encode_progress(&nonce, kib).as_bytes())
                .await;
        }
    }
}

/// Peak resident memory (`VmHWM`) of `root` and its descendants, KiB: the largest of them, as
/// `getrusage(RUSAGE_CHILDREN)` reports it at the end, so the live and the final figure agree.
/// `None` when `/proc` cannot be read (the trailer's figure still comes).
pub(super) fn tree_peak_kib(proc: &Path, root: u32) -> Option<u64> {
    // Parent of every process, from `/proc/<pid>/stat` (`pid (comm) state ppid ...`; comm may
    // hold spaces and parentheses, so the fields are read after the last `)`).
    let parents: Vec<(u32, u32)> = std::fs::read_dir(proc)
        .ok()?
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
            let (_, fields) = stat.rsplit_once(')')?;
            let parent = fields.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect();
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(parents.iter().filter(|(_, p)| *p == pid).map(|(c, _)| *c));
        next += 1;
    }
    tree.iter()
        .filter_map(|pid| high_water_mark_kib(&proc.join(pid.to_string()).join("status")))
        .max()
}

fn high_water_mark_kib(status: &Path) -> Option<u64> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_of_a_tree_is_its_largest_process() {
        let proc = std::env::temp_dir().join(format!("flext-proc-{}", uuid::Uuid::new_v4()));
        let process = |pid: u32, ppid: u32, hwm: u64| {
            let dir = proc.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), format!("{pid} (a (b) c) S {ppid} 1 1\n")).unwrap();
            std::fs::write(
                dir.join("status"),
                format!("Name:\tx\nVmHWM:\t  {hwm} kB\n"),
            )
            .unwrap();
        };
        process(10, 1, 500);
        process(11, 10, 70_000);
        process(12, 11, 900);
        process(20, 1, 999_999);
        assert_eq!(tree_peak_kib(&proc, 10), Some(70_000));
        assert_eq!(tree_peak_kib(&proc, 12), Some(900));
        assert_eq!(tree_peak_kib(&proc, 99), None);
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
