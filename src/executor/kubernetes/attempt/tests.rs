use std::time::Duration;

use super::*;
use crate::domain::FailureCategory;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn machine() -> Machine {
    Machine::new(Rules {
        pending_budget: HumanDuration(secs(60)),
        image_pull_grace: HumanDuration(secs(30)),
        namespace: "jobs".into(),
        object_name: "wm-x-1".into(),
        local_queue: None,
        admission_budget: None,
    })
}

fn queued(budget: Option<u64>) -> Machine {
    Machine::new(Rules {
        pending_budget: HumanDuration(secs(60)),
        image_pull_grace: HumanDuration(secs(30)),
        namespace: "jobs".into(),
        object_name: "wm-x-1".into(),
        local_queue: Some("team-a".into()),
        admission_budget: budget.map(|s| HumanDuration(secs(s))),
    })
}

const QUOTA: &str = "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default, 200m more needed";

#[test]
fn waiting_for_kueue_is_noted_with_kueues_reason_once_and_unbounded_by_default() {
    let mut m = queued(None);
    let Action::Note(note) = m.step(secs(1), Event::NotAdmitted(Some(QUOTA.into()))) else {
        panic!("no note")
    };
    assert!(note.contains("LocalQueue `team-a`"), "{note}");
    assert!(note.contains(QUOTA), "{note}");
    assert_eq!(
        m.step(secs(2), Event::NotAdmitted(Some(QUOTA.into()))),
        Action::Wait
    );
    // Hours in the queue are normal: no budget, no failure.
    assert_eq!(
        m.step(secs(7200), Event::NotAdmitted(Some(QUOTA.into()))),
        Action::Wait
    );
}

#[test]
fn past_the_admission_budget_the_job_fails_naming_the_queue_and_the_setting() {
    let mut m = queued(Some(30));
    m.step(secs(1), Event::NotAdmitted(Some(QUOTA.into())));
    assert_eq!(
        m.step(secs(30), Event::NotAdmitted(Some(QUOTA.into()))),
        Action::Wait
    );
    let (failure, delete) = failed(m.step(secs(32), Event::NotAdmitted(Some(QUOTA.into()))));
    assert!(delete);
    assert_eq!(failure.category, FailureCategory::Unschedulable);
    assert_eq!(failure.name, "NotAdmitted");
    for part in ["`team-a`", "executor.admission_budget", QUOTA] {
        assert!(
            failure.message.contains(part),
            "{part}: {}",
            failure.message
        );
    }
}

#[test]
fn no_workload_is_quiet_at_first_then_asks_whether_kueue_runs() {
    let mut m = queued(None);
    assert_eq!(m.step(secs(1), Event::NotAdmitted(None)), Action::Wait);
    let Action::Note(note) = m.step(secs(12), Event::NotAdmitted(None)) else {
        panic!("no note")
    };
    assert!(note.contains("is Kueue running"), "{note}");
    assert!(
        note.contains("kubectl -n jobs get localqueue team-a"),
        "{note}"
    );
}

#[test]
fn the_pending_budget_and_the_no_pod_note_count_from_admission() {
    let mut m = queued(None);
    m.step(secs(1), Event::NotAdmitted(Some(QUOTA.into())));
    // Admitted after 100 s: no pod yet is normal for a while.
    assert_eq!(m.step(secs(100), Event::NoPod), Action::Wait);
    assert_eq!(m.step(secs(105), Event::NoPod), Action::Wait);
    assert!(matches!(m.step(secs(111), Event::NoPod), Action::Note(_)));
    let pending = || pod(PodState::Unschedulable("0/3 nodes".into()));
    assert!(matches!(m.step(secs(112), pending()), Action::Note(_)));
    assert_eq!(m.step(secs(170), pending()), Action::Wait);
    let (failure, _) = failed(m.step(secs(173), pending()));
    assert_eq!(failure.name, "Unschedulable");
}

fn pod(state: PodState) -> Event {
    Event::Pod {
        state,
        user_code_started: false,
    }
}

fn running_pod() -> Event {
    Event::Pod {
        state: PodState::Running,
        user_code_started: true,
    }
}

fn failed(action: Action) -> (JobFailure, bool) {
    match action {
        Action::Fail { failure, delete } => (failure, delete),
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn ticks_look_at_the_pod_log_lines_do_not_and_cancel_always_cancels() {
    let mut m = machine();
    assert_eq!(m.step(secs(1), Event::Tick), Action::Check);
    assert_eq!(m.step(secs(1), Event::LogLine), Action::Wait);
    for event in [
        pod(PodState::Unschedulable("0/1 nodes".into())),
        running_pod(),
        Event::NoPod,
    ] {
        m.step(secs(2), event);
        assert_eq!(m.step(secs(2), Event::Cancel), Action::Cancel);
    }
}

#[test]
fn waiting_for_capacity_is_noted_once_then_fails_past_the_pending_budget() {
    let mut m = machine();
    let pending = || {
        pod(PodState::Unschedulable(
            "0/3 nodes have enough memory".into(),
        ))
    };
    assert_eq!(
        m.step(secs(5), pending()),
        Action::Note("waiting for capacity: 0/3 nodes have enough memory".into())
    );
    assert_eq!(m.step(secs(30), pending()), Action::Wait, "noted once");
    assert_eq!(
        m.step(secs(65), pending()),
        Action::Wait,
        "the budget runs from the first sight"
    );
    let (failure, delete) = failed(m.step(secs(66), pending()));
    assert!(delete, "the pending pod is deleted");
    assert_eq!(
        (failure.category, failure.name.as_str()),
        (FailureCategory::Unschedulable, "Unschedulable")
    );
    assert!(failure.message.contains("0/3 nodes"), "{}", failure.message);
}

#[test]
fn the_pending_budget_starts_again_when_the_pod_was_scheduled_in_between() {
    let mut m = machine();
    let pending = || pod(PodState::Unschedulable("full".into()));
    m.step(secs(0), pending());
    m.step(
        secs(50),
        pod(PodState::Starting("ContainerCreating".into())),
    );
    assert_eq!(
        m.step(secs(100), pending()),
        Action::Note("waiting for capacity: full".into())
    );
    assert_eq!(m.step(secs(150), pending()), Action::Wait);
    assert!(matches!(m.step(secs(161), pending()), Action::Fail { .. }));
}

#[test]
fn an_image_pull_may_fail_for_its_grace_and_an_invalid_name_fails_at_once() {
    let mut m = machine();
    let pulling = || {
        pod(PodState::PullingImage {
            image: "nope:1".into(),
            message: "ErrImagePull".into(),
        })
    };
    assert_eq!(
        m.step(secs(1), pulling()),
        Action::Note("pulling image nope:1: ErrImagePull".into())
    );
    assert_eq!(m.step(secs(31), pulling()), Action::Wait);
    let (failure, delete) = failed(m.step(secs(32), pulling()));
    assert!(delete);
    assert_eq!(failure.name, "ImagePullError");
    assert!(failure.message.contains("`nope:1`"), "{}", failure.message);

    let mut m = machine();
    let (failure, delete) = failed(m.step(
        secs(1),
        pod(PodState::InvalidImage {
            image: "UPPER".into(),
            message: "bad".into(),
        }),
    ));
    assert!(delete);
    assert_eq!(failure.name, "InvalidImageName");
    let (failure, delete) =
        failed(machine().step(secs(1), pod(PodState::ConfigError("no secret x".into()))));
    assert!(delete);
    assert_eq!(
        (failure.category, failure.name.as_str()),
        (FailureCategory::ConfigError, "CreateContainerConfigError")
    );
}

#[test]
fn a_starting_pod_is_noted_once_per_reason() {
    let mut m = machine();
    let starting = |r: &str| pod(PodState::Starting(r.into()));
    assert_eq!(
        m.step(secs(1), starting("ContainerCreating")),
        Action::Note("pod starting: ContainerCreating".into())
    );
    assert_eq!(m.step(secs(2), starting("ContainerCreating")), Action::Wait);
    assert_eq!(
        m.step(secs(3), starting("PodInitializing")),
        Action::Note("pod starting: PodInitializing".into())
    );
}

#[test]
fn a_running_pod_is_followed_by_one_stream_reopened_after_it_breaks() {
    let mut m = machine();
    assert_eq!(m.step(secs(1), running_pod()), Action::OpenStream);
    // Opening failed: the next look opens again.
    assert_eq!(m.step(secs(2), Event::Tick), Action::Check);
    assert_eq!(m.step(secs(2), running_pod()), Action::OpenStream);
    assert_eq!(m.step(secs(2), Event::StreamOpened), Action::Wait);
    assert_eq!(m.step(secs(3), running_pod()), Action::Wait, "one stream");
    assert_eq!(
        m.step(secs(4), Event::StreamEnded { drained: false }),
        Action::Check
    );
    assert_eq!(m.step(secs(4), running_pod()), Action::OpenStream);
}

#[test]
fn a_log_read_to_its_end_is_not_opened_again_while_the_pod_still_looks_running() {
    let mut m = machine();
    assert_eq!(m.step(secs(1), running_pod()), Action::OpenStream);
    assert_eq!(m.step(secs(1), Event::StreamOpened), Action::Wait);
    // The stream ended with the trailer before the watch saw the container end.
    assert_eq!(
        m.step(secs(2), Event::StreamEnded { drained: true }),
        Action::Check
    );
    assert_eq!(m.step(secs(2), running_pod()), Action::Wait);
    assert_eq!(m.step(secs(3), running_pod()), Action::Wait);
    let ended = m.step(
        secs(3),
        pod(PodState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: String::new(),
        }),
    );
    assert!(matches!(ended, Action::Conclude(_)), "{ended:?}");
}

#[test]
fn a_terminated_container_concludes_with_its_end() {
    let mut m = machine();
    m.step(secs(1), running_pod());
    let action = m.step(
        secs(9),
        pod(PodState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: String::new(),
        }),
    );
    assert_eq!(
        action,
        Action::Conclude(Ended {
            exit_code: 0,
            reason: "Completed".into(),
            message: String::new(),
        })
    );
}

#[test]
fn a_disruption_retries_before_user_code_and_fails_after_it_once_the_log_is_read() {
    let disrupted = || {
        pod(PodState::Disrupted {
            reason: "Evicted".into(),
            message: "node pressure".into(),
        })
    };
    let mut m = machine();
    m.step(secs(1), pod(PodState::Starting("ContainerCreating".into())));
    assert_eq!(
        m.step(secs(2), disrupted()),
        Action::Retry("Evicted: node pressure".into())
    );
    // User code started in an earlier look: the disruption is the job's failure.
    let mut m = machine();
    m.step(secs(1), running_pod());
    match m.step(secs(2), disrupted()) {
        Action::FailAfterDrain(failure) => assert_eq!(failure.name, "Evicted"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_vanished_pod_retries_before_user_code_and_fails_after_it() {
    let mut m = machine();
    m.step(secs(1), pod(PodState::Starting("ContainerCreating".into())));
    assert_eq!(
        m.step(secs(2), Event::NoPod),
        Action::Retry("the pod was deleted before the script started".into())
    );
    let mut m = machine();
    m.step(secs(1), running_pod());
    let (failure, delete) = failed(m.step(secs(2), Event::NoPod));
    assert!(!delete, "nothing left to delete");
    assert_eq!(failure.name, "PodDeleted");
}

#[test]
fn a_job_without_a_pod_is_noted_after_a_while_and_only_once() {
    let mut m = machine();
    assert_eq!(m.step(secs(3), Event::NoPod), Action::Wait);
    match m.step(secs(11), Event::NoPod) {
        Action::Note(note) => assert!(
            note.contains("kubectl -n jobs describe job wm-x-1"),
            "{note}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.step(secs(12), Event::NoPod), Action::Wait);
}
