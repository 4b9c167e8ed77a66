//! Privileged: every shipped exercise, end to end on a real lab. After
//! `start` the check fails; the reference solution makes it pass; the
//! exercise's shortcut is caught by a guard; `stop` leaves nothing behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use lab_cli::{
    exercises::{self, attempt::Attempt, catalog},
    lab::state::LabState,
};

/// A seed per test, fixed: the randomized parameters are the same each run.
const SEED: u64 = 7;

fn names(lab: &str) -> Vec<String> {
    LabState::load(lab)
        .unwrap()
        .map(|s| s.namespaces.into_iter().map(|n| n.name).collect())
        .unwrap_or_default()
}

fn assert_gone(lab: &str, namespaces: &[String]) {
    assert!(
        LabState::load(lab).unwrap().is_none(),
        "{lab}: lab record left"
    );
    assert!(Attempt::load(lab).unwrap().is_none(), "{lab}: attempt left");
    for ns in namespaces {
        assert!(!common::netns_exists(ns), "{ns} left behind");
    }
}

fn exercise(id: &str, tag: &str) {
    if !common::privileged(id) {
        return;
    }
    let lab = common::lab_name(tag);
    // Broken: the check fails on a task.
    let mut run = exercises::start(id, Some(&lab), None, Some(SEED)).unwrap();
    let namespaces = names(&lab);
    // The attempt's record holds the answer: root's only.
    let record = std::fs::symlink_metadata(Attempt::path(&lab)).unwrap();
    assert!(record.is_file());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&record.permissions()) & 0o7777,
        0o600,
        "{id}: the attempt record is readable by others"
    );
    let report = exercises::check(&mut run).unwrap();
    assert!(!report.passed, "{id}: passes before any fix: {report:#?}");
    assert!(
        report
            .tasks
            .iter()
            .any(|t| !t.passed && !t.failures.is_empty()),
        "{id}: {report:#?}"
    );
    // Fixed by the reference solution (or the answer, for questions).
    exercises::apply_solution(&run).unwrap();
    if let Some(expect) = run
        .exercise
        .tasks
        .iter()
        .flat_map(|t| &t.checks)
        .find_map(|c| match c {
            exercises::model::Check::Answer { expect }
            | exercises::model::Check::Wire { expect, .. } => Some(expect.clone()),
            _ => None,
        })
    {
        exercises::answer(&mut run, "world NO_SUCH_REASON").unwrap();
        assert!(
            !exercises::check(&mut run).unwrap().passed,
            "{id}: a wrong answer passes"
        );
        exercises::answer(&mut run, &expect.to_lowercase()).unwrap();
    }
    let report = exercises::check(&mut run).unwrap();
    assert!(
        report.passed,
        "{id}: the solution does not pass: {report:#?}"
    );
    assert!(Attempt::load(&lab).unwrap().unwrap().solved_unix.is_some());
    // Reset: broken again, same parameters.
    exercises::reset(&mut run).unwrap();
    let again = exercises::running(Some(&lab)).unwrap();
    assert_eq!(again.attempt.vars, run.attempt.vars);
    let mut again = again;
    assert!(
        !exercises::check(&mut again).unwrap().passed,
        "{id}: reset did not break it"
    );
    // The shortcut: a guard catches it.
    if !again.exercise.shortcut.is_empty() {
        exercises::apply_shortcut(&again).unwrap();
        let report = exercises::check(&mut again).unwrap();
        assert!(
            report.guards.iter().any(|g| !g.passed),
            "{id}: no guard caught the shortcut: {report:#?}"
        );
    }
    exercises::stop(&again).unwrap();
    assert_gone(&lab, &namespaces);
}

#[test]
fn service_no_endpoints() {
    exercise("service-no-endpoints", "exsne");
}

#[test]
fn socket_lb_wire() {
    exercise("socket-lb-wire", "exslw");
}

#[test]
fn no_masquerade() {
    exercise("no-masquerade", "exnm");
}

#[test]
fn forwarding_off() {
    exercise("forwarding-off", "exfo");
}

#[test]
fn missing_route() {
    exercise("missing-route", "exmr");
}

#[test]
fn mtu_overlay() {
    exercise("mtu-overlay", "exmtu");
}

#[test]
fn rp_filter() {
    exercise("rp-filter", "exrp");
}

#[test]
fn policy_allow_one() {
    exercise("policy-allow-one", "expol");
}

#[test]
fn find_the_drop() {
    exercise("find-the-drop", "exftd");
}

#[test]
fn nat_exhaustion() {
    exercise("nat-exhaustion", "exnat");
}

#[test]
fn stale_conntrack() {
    exercise("stale-conntrack", "exsc");
}

#[test]
fn conntrack_invalid() {
    exercise("conntrack-invalid", "exci");
}

#[test]
fn every_shipped_exercise_has_a_test_here() {
    let tested = [
        "no-masquerade",
        "forwarding-off",
        "missing-route",
        "mtu-overlay",
        "rp-filter",
        "policy-allow-one",
        "find-the-drop",
        "nat-exhaustion",
        "stale-conntrack",
        "conntrack-invalid",
        "service-no-endpoints",
        "socket-lb-wire",
    ];
    let shipped: Vec<String> = catalog::load(None)
        .unwrap()
        .into_iter()
        .map(|s| s.exercise.id)
        .collect();
    assert_eq!(shipped, tested);
}

#[test]
fn one_exercise_per_lab_and_clear_errors_for_the_rest() {
    if !common::privileged("one_exercise_per_lab_and_clear_errors_for_the_rest") {
        return;
    }
    let lab = common::lab_name("exone");
    let run = exercises::start("forwarding-off", Some(&lab), None, Some(SEED)).unwrap();
    let namespaces = names(&lab);
    let busy = exercises::start("no-masquerade", Some(&lab), None, Some(SEED))
        .err()
        .unwrap();
    assert!(
        busy.is_usage() && busy.to_string().contains("already runs"),
        "{busy}"
    );
    let unknown = exercises::start("no-such", Some("exnone"), None, None)
        .err()
        .unwrap();
    assert!(unknown.is_usage() && unknown.to_string().contains("no-masquerade"));
    // Hints come one at a time, then the last one again.
    let mut r = exercises::running(Some(&lab)).unwrap();
    let total = r.exercise.hints.len();
    for n in 1..=total + 1 {
        let (i, of, _) = exercises::hint(&mut r).unwrap();
        assert_eq!((i, of), (n.min(total), total));
    }
    exercises::stop(&run).unwrap();
    assert_gone(&lab, &namespaces);
}
