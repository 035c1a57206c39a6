//! A test double of a stock Windmill worker, written by us from the queue contract: it serves the
//! finalize tag, completes `identity`, `pre_run_error` and canceled jobs the way Windmill does,
//! starts linear flows and advances them when a step completes. It also plays Windmill's zombie
//! monitor (re-queue jobs whose ping is stale).

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct StockWorker {
    pub pool: PgPool,
    pub tag: String,
    pub name: String,
}

impl StockWorker {
    pub fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            tag: "flow".into(),
            name: "wk-default-stock".into(),
        }
    }

    /// Runs until `stop`, polling every 20 ms.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match self.run_once().await {
                    Ok(Some(_)) => {}
                    Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => panic!("stock worker double failed: {e}"),
                }
            }
        })
    }

    /// Pulls and completes one job on its tag; returns its id.
    pub async fn run_once(&self) -> Result<Option<Uuid>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(
            "UPDATE v2_job_queue q SET running = true, started_at = coalesce(started_at, now()), worker = $2
             WHERE q.id = (SELECT id FROM v2_job_queue WHERE running = false AND tag = $1 AND scheduled_for <= now()
                           ORDER BY priority DESC NULLS LAST, scheduled_for FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING q.id, q.canceled_by, q.canceled_reason, q.started_at",
        )
        .bind(&self.tag)
        .bind(&self.name)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let id: Uuid = row.get("id");
        let canceled_by: Option<String> = row.get("canceled_by");
        let canceled_reason: Option<String> = row.get("canceled_reason");
        let job = sqlx::query("SELECT kind::text AS kind, args, pre_run_error, raw_flow, parent_job, flow_step_id FROM v2_job WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let kind: String = job.get("kind");
        let args: Option<Value> = job.get("args");
        let pre_run_error: Option<String> = job.get("pre_run_error");
        let parent: Option<Uuid> = job.get("parent_job");
        let step_id: Option<String> = job.get("flow_step_id");

        if let Some(by) = canceled_by {
            let message = format!(
                "Job canceled: {} by {by}",
                canceled_reason.clone().unwrap_or_default()
            );
            self.complete(
                &mut tx,
                id,
                "canceled",
                json!({"error": {"name": "Canceled", "message": message}}),
                Some((by, canceled_reason)),
            )
            .await?;
        } else if let Some(message) = pre_run_error {
            self.complete(
                &mut tx,
                id,
                "failure",
                json!({"error": {"name": "ExecutionErr", "message": message}}),
                None,
            )
            .await?;
        } else if kind == "identity" {
            let result = args
                .as_ref()
                .and_then(|a| a.get("previous_result"))
                .cloned()
                .unwrap_or(Value::Null);
            self.complete(&mut tx, id, "success", result, None).await?;
        } else if kind == "flow" {
            let raw_flow: Value = job.get("raw_flow");
            push_step(&mut tx, id, &raw_flow, 0, args.unwrap_or(json!({}))).await?;
            tx.commit().await?;
            return Ok(Some(id));
        } else {
            let message = format!("the stock worker double does not run kind {kind}");
            self.complete(
                &mut tx,
                id,
                "failure",
                json!({"error": {"name": "ExecutionErr", "message": message}}),
                None,
            )
            .await?;
        }
        if let (Some(parent), Some(_)) = (parent, step_id) {
            // As Windmill's `handle_flow`: the step that completed is the parent's
            // `flow_status->'step'` (push writes no `v2_job.flow_step`).
            let step: i32 = sqlx::query_scalar(
                "SELECT (flow_status->>'step')::int FROM v2_job_status WHERE id = $1",
            )
            .bind(parent)
            .fetch_one(&mut *tx)
            .await?;
            self.advance_flow(&mut tx, parent, step, id).await?;
        }
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn complete(
        &self,
        tx: &mut sqlx::PgConnection,
        id: Uuid,
        status: &str,
        result: Value,
        canceled: Option<(String, Option<String>)>,
    ) -> Result<(), sqlx::Error> {
        let (canceled_by, canceled_reason) = canceled.map_or((None, None), |(b, r)| (Some(b), r));
        sqlx::query(
            "INSERT INTO v2_job_completed (id, workspace_id, duration_ms, result, status, started_at, completed_at,
                                           worker, canceled_by, canceled_reason, flow_status, memory_peak)
             SELECT q.id, q.workspace_id, 3, $2, $3::job_status, q.started_at, now(), $4, $5, $6, s.flow_status, NULL
             FROM v2_job_queue q LEFT JOIN v2_job_status s ON s.id = q.id WHERE q.id = $1",
        )
        .bind(id)
        .bind(&result)
        .bind(status)
        .bind(&self.name)
        .bind(canceled_by)
        .bind(canceled_reason)
        .execute(&mut *tx)
        .await?;
        // As Windmill's `commit_completed_job`, in the same transaction: a job with a concurrency
        // key leaves its key's admitted jobs and its key row records when it ended.
        sqlx::query(
            "UPDATE concurrency_counter c SET job_uuids = c.job_uuids - $1::uuid::text
             FROM concurrency_key k WHERE k.job_id = $1::uuid AND c.concurrency_id = k.key",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE concurrency_key SET ended_at = now() WHERE job_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM v2_job_queue WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Records the step's outcome in the parent flow, then pushes the next step or completes the flow.
    async fn advance_flow(
        &self,
        tx: &mut sqlx::PgConnection,
        flow: Uuid,
        step: i32,
        step_job: Uuid,
    ) -> Result<(), sqlx::Error> {
        let done = sqlx::query(
            "SELECT status::text AS status, result FROM v2_job_completed WHERE id = $1",
        )
        .bind(step_job)
        .fetch_one(&mut *tx)
        .await?;
        let status: String = done.get("status");
        let result: Option<Value> = done.get("result");
        // Windmill's per-step retry (`retry.constant.attempts`): a failed step runs again with
        // the same args. Our double also passes the retry number in `args.attempt`, so that a
        // demo step can fail once on purpose; Windmill itself does not.
        let raw_flow: Value = sqlx::query("SELECT raw_flow FROM v2_job WHERE id = $1")
            .bind(flow)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let index = usize::try_from(step).unwrap_or(usize::MAX);
        let allowed = raw_flow["modules"][index]["retry"]["constant"]["attempts"]
            .as_i64()
            .unwrap_or(0);
        if status != "success" {
            let args: Value =
                sqlx::query("SELECT coalesce(args, '{}'::jsonb) FROM v2_job WHERE id = $1")
                    .bind(step_job)
                    .fetch_one(&mut *tx)
                    .await?
                    .get(0);
            let attempt = args["attempt"].as_i64().unwrap_or(0);
            if attempt < allowed {
                let mut retry_args = args.clone();
                retry_args["attempt"] = json!(attempt + 1);
                if let Some(map) = retry_args.as_object_mut() {
                    map.remove("_flext_fixup");
                }
                push_step(tx, flow, &raw_flow, index, retry_args).await?;
                return Ok(());
            }
        }
        let module_type = match status.as_str() {
            "success" => "Success",
            _ => "Failure",
        };
        sqlx::query(
            "UPDATE v2_job_status SET flow_status = jsonb_set(jsonb_set(flow_status,
                 ARRAY['modules', $2::text], (flow_status #> ARRAY['modules', $2::text]) || jsonb_build_object('type', $3::text, 'job', $4::text)),
                 ARRAY['step'], to_jsonb($2 + 1))
             WHERE id = $1",
        )
        .bind(flow)
        .bind(step)
        .bind(module_type)
        .bind(step_job.to_string())
        .execute(&mut *tx)
        .await?;
        let steps = raw_flow["modules"].as_array().map_or(0, Vec::len);
        let next = usize::try_from(step + 1).unwrap_or(usize::MAX);
        if status == "success" && next < steps {
            push_step(
                tx,
                flow,
                &raw_flow,
                next,
                json!({ "previous_result": result.unwrap_or(Value::Null) }),
            )
            .await?;
        } else {
            self.complete(
                tx,
                flow,
                if status == "success" {
                    "success"
                } else {
                    "failure"
                },
                result.unwrap_or(Value::Null),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Windmill's zombie monitor: re-queue running jobs whose ping is older than `threshold`.
    pub async fn requeue_zombies(&self, threshold: Duration) -> Result<Vec<Uuid>, sqlx::Error> {
        let rows = sqlx::query(
            "UPDATE v2_job_queue q SET running = false, worker = NULL, started_at = NULL
             FROM v2_job_runtime r
             WHERE r.id = q.id AND q.running AND r.ping < now() - make_interval(secs => $1)
             RETURNING q.id",
        )
        .bind(threshold.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Queues step `index` of a flow as Windmill does for an inline step: kind `flowscript`, the step's
/// tag, pointing at its `flow_node`, with the parent flow and the step's module id; the index goes
/// into the parent's `flow_status.step`.
async fn push_step(
    tx: &mut sqlx::PgConnection,
    flow: Uuid,
    raw_flow: &Value,
    index: usize,
    args: Value,
) -> Result<(), sqlx::Error> {
    let module = &raw_flow["modules"][index];
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO v2_job (id, workspace_id, kind, tag, script_lang, runnable_id, runnable_path, args, created_by,
                             permissioned_as, permissioned_as_email, parent_job, root_job, flow_step_id)
         VALUES ($1, 'demo', 'flowscript', $2, $3::script_lang, $4, 'f/demo/flow/' || $7, $5, 'alice', 'u/alice',
                 'alice@example.com', $6, $6, $7)",
    )
    .bind(id)
    .bind(module["value"]["tag"].as_str().unwrap_or("flow"))
    .bind(module["value"]["language"].as_str().unwrap_or("python3"))
    .bind(module["value"]["id"].as_i64())
    .bind(&args)
    .bind(flow)
    .bind(module["id"].as_str().unwrap_or("?"))
    .execute(&mut *tx)
    .await?;
    // As Windmill's `push_next_flow_job`: the parent's `flow_status.step` names the step pushed.
    sqlx::query("UPDATE v2_job_status SET flow_status = jsonb_set(flow_status, ARRAY['step'], to_jsonb($2)) WHERE id = $1")
        .bind(flow)
        .bind(i32::try_from(index).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO v2_job_queue (id, workspace_id, scheduled_for, tag) VALUES ($1, 'demo', now(), $2)")
        .bind(id)
        .bind(module["value"]["tag"].as_str().unwrap_or("flow"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO v2_job_runtime (id) VALUES ($1)")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
