//! The queue depth KEDA scales the workers on (`files/keda-queue-depth.sql` of the chart), run on
//! the Windmill schema fixture in a real PostgreSQL exactly as `helm template` writes it into the
//! `ScaledObject`: it counts the jobs a claim of ours would take plus those running on our tags,
//! nothing scheduled later, canceled, failed before start, on other tags or of a kind we never
//! claim; no tag can break out of its quoting; and a role that cannot see `v2_job` (row-level
//! security) still counts the due jobs instead of none.

// Tests fail loudly by design.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tools::{chart, helm, text};
use common::{TestDb, WindmillJob};
use flext_kubernetes::domain::JobKind;
use flext_kubernetes::queue::Queue;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;

/// The query of the `ScaledObject` the chart renders with KEDA on and `tags` as the worker's tags.
fn rendered_query(tags: &[&str]) -> String {
    let chart = chart();
    let config = json!({"windmill": {"tags": tags}}).to_string();
    let config = format!("config={config}");
    let out = helm(&[
        "template",
        "flext",
        chart.to_str().unwrap(),
        "--namespace",
        "flext-system",
        "--set",
        "database.existingSecret=windmill-db",
        "--set",
        "autoscaling.keda.enabled=true",
        "--set-json",
        &config,
        "--show-only",
        "templates/scaledobject.yaml",
    ]);
    assert!(out.status.success(), "helm template:\n{}", text(&out));
    let object = Value::deserialize(serde_yaml_ng::Deserializer::from_slice(&out.stdout)).unwrap();
    let trigger = &object["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "postgresql", "{object}");
    trigger["metadata"]["query"].as_str().unwrap().to_owned()
}

/// What KEDA reads: the query's one integer.
async fn depth(pool: &PgPool, query: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{query}"))
}

fn tags() -> Vec<String> {
    vec!["k8s".into(), "k8s-gpu".into()]
}

#[tokio::test]
async fn the_keda_query_counts_what_a_claim_would_take_plus_what_runs() {
    let db = TestDb::new().await;
    let query = rendered_query(&["k8s", "k8s-gpu"]);

    // Due on our tags: what a claim takes.
    for _ in 0..3 {
        WindmillJob::preview("x").tag("k8s").push(&db).await;
    }
    WindmillJob::preview("x").tag("k8s-gpu").push(&db).await;
    WindmillJob::script("u/alice/etl", "x")
        .tag("k8s")
        .push(&db)
        .await;
    let due = 5;
    // Not counted: later, another tag, canceled, failed before start, same-worker, and every kind
    // we never claim.
    WindmillJob::preview("x")
        .scheduled_in(Duration::from_secs(3600))
        .push(&db)
        .await;
    WindmillJob::preview("x").tag("python3").push(&db).await;
    WindmillJob::preview("x")
        .canceled_by("alice")
        .push(&db)
        .await;
    WindmillJob::preview("x")
        .pre_run_error("no such resource")
        .push(&db)
        .await;
    WindmillJob::preview("x").same_worker().push(&db).await;
    for kind in JobKind::NEVER_CLAIMED {
        WindmillJob::kind(kind).tag("k8s").push(&db).await;
    }
    // Running elsewhere: a stock worker's job on its own tag.
    let elsewhere = WindmillJob::preview("x").tag("python3").push(&db).await;
    db.exec(&format!(
        "UPDATE v2_job_queue SET running = true, worker = 'wk-default-1' WHERE id = '{}'",
        elsewhere.0
    ))
    .await;
    assert_eq!(depth(&db.pool, &query).await, due);

    // The file itself, with the tags bound as its parameter, says the same.
    let file = std::fs::read_to_string(chart().join("files/keda-queue-depth.sql")).unwrap();
    let bound: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(file))
        .bind(tags())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(bound, due);

    // Claimed jobs still count while they run: no scale-down under them.
    let queue = Queue::Postgres(db.queue());
    let first = queue.claim("wk-k8s-a", &tags()).await.unwrap().unwrap();
    queue.claim("wk-k8s-a", &tags()).await.unwrap().unwrap();
    assert_eq!(depth(&db.pool, &query).await, due);

    // "Due" is what a claim takes: claiming until nothing is left takes exactly the due jobs, and
    // the count does not move.
    let mut claimed = 2;
    while queue.claim("wk-k8s-b", &tags()).await.unwrap().is_some() {
        claimed += 1;
    }
    assert_eq!(claimed, due);
    assert_eq!(depth(&db.pool, &query).await, due);

    // A job that ends leaves the count (its queue row is deleted at completion).
    db.exec(&format!(
        "DELETE FROM v2_job_queue WHERE id = '{}'",
        first.id.0
    ))
    .await;
    assert_eq!(depth(&db.pool, &query).await, due - 1);

    // Another worker group's tags see none of ours.
    assert_eq!(depth(&db.pool, &rendered_query(&["k8s-other"])).await, 0);
}

#[tokio::test]
async fn no_tag_can_break_out_of_the_rendered_query() {
    let db = TestDb::new().await;
    let tags = [
        "k8s",
        "it's",
        r"back\slash",
        r"x\'); DROP TABLE v2_job; --",
        "$1",
    ];
    for tag in tags {
        WindmillJob::preview("x").tag(tag).push(&db).await;
    }
    WindmillJob::preview("x").tag("it").push(&db).await;
    let query = rendered_query(&tags);
    assert_eq!(depth(&db.pool, &query).await, 5, "{query}");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM v2_job")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 6);
}

/// KEDA may connect with a read-only role of its own. Without a way past `v2_job`'s row-level
/// security it cannot see job kinds or errors, but it must still see the queue: an autoscaler that
/// reads 0 never adds the first worker.
#[tokio::test]
async fn a_role_that_cannot_see_v2_job_still_counts_the_due_jobs() {
    let db = TestDb::new().await;
    let role = format!("flext_keda_{}", &db.name[11..19]);
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN; GRANT SELECT ON v2_job_queue, v2_job TO {role};"
    ))
    .await;
    let url = common::url_for(&db.name).replacen("postgres@", &format!("{role}@"), 1);
    let weak = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let query = rendered_query(&["k8s"]);
    WindmillJob::preview("x").push(&db).await;
    WindmillJob::preview("x").push(&db).await;
    WindmillJob::kind("flow").tag("k8s").push(&db).await;
    WindmillJob::preview("x")
        .scheduled_in(Duration::from_secs(3600))
        .push(&db)
        .await;
    WindmillJob::preview("x")
        .canceled_by("alice")
        .push(&db)
        .await;
    assert_eq!(
        depth(&db.pool, &query).await,
        2,
        "exact with the worker's role"
    );
    // The flow job is counted until the worker re-tags it; later and canceled jobs are not.
    assert_eq!(depth(&weak, &query).await, 3, "the queue alone");
    weak.close().await;
}
