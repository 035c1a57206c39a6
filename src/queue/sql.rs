//! Every statement we send to Windmill's database, one `.sql` file each in `sql/`, written by us
//! from the tables and columns of `windmill/schema/` (our fixture of the part of Windmill's schema
//! we touch; the startup checks in `schema.rs` verify a real database has the same shape). Each
//! file starts with what it does and what its parameters are.

// The queue proper (`postgres.rs`).
pub(super) const CLAIM: &str = concat!(
    include_str!("sql/claim.sql"),
    include_str!("sql/job_projection.sql")
);
pub(super) const ADOPT: &str = concat!(
    include_str!("sql/adopt.sql"),
    include_str!("sql/job_projection.sql")
);
pub(super) const LOAD_JOB: &str = concat!(
    include_str!("sql/load_job.sql"),
    include_str!("sql/job_projection.sql")
);
pub(super) const IN_QUEUE: &str = include_str!("sql/in_queue.sql");
pub(super) const QUEUED_COUNT: &str = include_str!("sql/queued_count.sql");
pub(super) const QUEUE_DEPTH: &str = include_str!("sql/queue_depth.sql");
pub(super) const HEARTBEAT: &str = include_str!("sql/heartbeat.sql");
pub(super) const TIMEOUT: &str = include_str!("sql/timeout.sql");
pub(super) const APPEND_LOGS: &str = include_str!("sql/append_logs.sql");
pub(super) const ROUTE_ELSEWHERE: &str = include_str!("sql/route_elsewhere.sql");
pub(super) const OWNED_JOBS: &str = include_str!("sql/owned_jobs.sql");
pub(super) const ADMIT: &str = include_str!("sql/admit.sql");
pub(super) const DEBOUNCE: &str = include_str!("sql/debounce.sql");
pub(super) const CACHE_LOOKUP: &str = include_str!("sql/cache_lookup.sql");
pub(super) const CACHE_SAVE: &str = include_str!("sql/cache_save.sql");
pub(super) const RESTART_PERPETUAL: &str = include_str!("sql/restart_perpetual.sql");
pub(super) const RESCHEDULE_FOR_CONCURRENCY: &str =
    include_str!("sql/reschedule_for_concurrency.sql");
pub(super) const LOCK_FOR_HAND_BACK: &str = include_str!("sql/lock_for_hand_back.sql");
pub(super) const HAND_BACK_SUCCESS: &str = include_str!("sql/hand_back_success.sql");
pub(super) const HAND_BACK_FAILURE: &str = include_str!("sql/hand_back_failure.sql");
pub(super) const REQUEUE_FOR_FINALIZE: &str = include_str!("sql/requeue_for_finalize.sql");
pub(super) const FIX_UP: &str = include_str!("sql/fix_up.sql");
pub(super) const PENDING_FIX_UPS: &str = include_str!("sql/pending_fix_ups.sql");
pub(super) const REGISTER: &str = include_str!("sql/register.sql");
pub(super) const PING: &str = include_str!("sql/ping.sql");

// The startup checks (`schema.rs`).
pub(super) const CHECK_COLUMNS: &str = include_str!("sql/check_columns.sql");
pub(super) const CHECK_ENUM_LABELS: &str = include_str!("sql/check_enum_labels.sql");
pub(super) const CURRENT_DATABASE: &str = include_str!("sql/current_database.sql");
pub(super) const CHECK_ROLE: &str = include_str!("sql/check_role.sql");
pub(super) const CHECK_ROW_SECURITY: &str = include_str!("sql/check_row_security.sql");
pub(super) const CHECK_PRIVILEGE: &str = include_str!("sql/check_privilege.sql");

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Rust files under `dir`, recursively.
    fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// SQL is the contract with Windmill: a statement written inline in Rust would escape review
    /// of `sql/` (and this module's list of what we send).
    #[test]
    fn every_statement_lives_in_a_sql_file() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut inline = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read a source file");
            // A call and its string argument may be split across lines by rustfmt.
            let flat: String = text.split_whitespace().collect::<Vec<_>>().join("");
            for call in ["query(\"", "query_scalar(\"", "query_as(\"", "raw_sql(\""] {
                if flat.contains(&format!("sqlx::{call}")) {
                    inline.push(format!("{}: sqlx::{call}...", file.display()));
                }
            }
        }
        assert!(inline.is_empty(), "inline SQL: {inline:#?}");
    }

    #[test]
    fn every_sql_file_is_sent() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/queue/sql");
        let listed = include_str!("sql.rs");
        for entry in std::fs::read_dir(&dir).expect("read src/queue/sql") {
            let name = entry.expect("a directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                listed.contains(&format!("include_str!(\"sql/{name}\")")),
                "sql/{name} is not included by src/queue/sql.rs"
            );
        }
    }
}
