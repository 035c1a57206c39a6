use super::*;

/// The message of `error` and of each of its sources, joined as a chain printer (anyhow's `{:#}`,
/// tracing's `error.sources`) shows them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn an_error_chain_names_its_cause_once() {
    let cause = sqlx::Error::PoolTimedOut.to_string();
    let errors = [
        Error::Unreachable {
            url: "postgres://windmill:***@127.0.0.1:1/windmill".into(),
            source: sqlx::Error::PoolTimedOut,
        },
        Error::db("claiming a job")(sqlx::Error::PoolTimedOut),
    ];
    for error in &errors {
        let text = chain(error);
        assert_eq!(text.matches(&cause).count(), 1, "{text}");
    }
    assert_eq!(
        chain(&errors[0]),
        format!(
            "cannot reach Windmill's database at postgres://windmill:***@127.0.0.1:1/windmill \
             (check FLEXT_DATABASE_URL and that Postgres is up): {cause}"
        )
    );
    assert_eq!(chain(&errors[1]), format!("claiming a job: {cause}"));
}

#[test]
fn output_lines_leave_out_the_workers_notes() {
    let log = format!("one\n{NOTE_PREFIX}waiting for capacity\ntwo\n");
    assert_eq!(output_lines(&log), 2);
}
