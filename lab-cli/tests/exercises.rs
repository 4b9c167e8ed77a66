//! Privileged: every shipped exercise, end to end on real labs, for every
//! draw of its parameters (`exercise selftest`'s protocol: broken fails,
//! the solution and every alternative pass, every shortcut is caught,
//! reset breaks it again, stop leaves nothing), plus what a room relies on
//! around it: answers judged fairly and capped, records changed under a
//! lock, killed and interrupted commands recovered, `--dir` files.
//!
//! The trials are made at run time from the catalog (libtest-mimic), so
//! adding an exercise is adding its file: nothing to list here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lab_cli::{
    exercises::{
        self, ExerciseError,
        attempt::{Attempt, AttemptError, Phase},
        catalog::{self, Source},
        selftest, template,
    },
    lab::state::LabState,
};
use libtest_mimic::{Arguments, Failed, Trial};

fn shipped(id: &str) -> Source {
    catalog::find(&catalog::shipped().unwrap(), id).unwrap()
}

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

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

/// Stops whatever runs in `lab` (a failed test's leftovers).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(run) = exercises::running(Some(&self.0))
            && let Err(e) = exercises::stop(&run)
        {
            eprintln!("cleaning up {}: {e}", self.0);
        }
        if let Err(e) = lab_cli::lab::down(Some(&self.0))
            && !matches!(e, lab_cli::lab::LabError::NotUp(_))
        {
            eprintln!("cleaning up {}: {e}", self.0);
        }
    }
}

/// The whole protocol on draw `n` of exercise `id`.
fn protocol(id: &str, n: usize) {
    if !common::privileged(id) {
        return;
    }
    let source = shipped(id);
    let short: String = id.chars().filter(|c| *c != '-').take(6).collect();
    let lab = common::lab_name(&format!("x{short}{n}"));
    let _cleanup = Cleanup(lab.clone());
    let vars = template::variants(&source.header.params, &lab).remove(n);
    let mut steps = Vec::new();
    let report = selftest::run(&source, vars, &lab, &mut |s| steps.push(s.clone())).unwrap();
    assert!(
        report.passed,
        "{id} [{}]: {:#?}",
        report.variant, report.steps
    );
    assert!(report.steps.len() >= 5, "{report:#?}");
}

fn start(id: &str, lab: &str) -> exercises::Running {
    let run = exercises::start(&shipped(id), Some(lab), Some(7), None).unwrap();
    // The record holds the answer: root's only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(format!("/run/labctl/exercises/{lab}.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "attempt record mode");
    run
}

fn one_exercise_per_lab_and_clear_errors_for_the_rest() {
    if !common::privileged("one_exercise_per_lab") {
        return;
    }
    let lab = common::lab_name("exone");
    let _cleanup = Cleanup(lab.clone());
    let run = start("forwarding-off", &lab);
    let namespaces = names(&lab);
    let busy = exercises::start(&shipped("no-masquerade"), Some(&lab), Some(7), None)
        .err()
        .unwrap();
    assert!(
        busy.is_usage() && busy.to_string().contains("already runs"),
        "{busy}"
    );
    // Hints come one at a time, then the last one again, saying so.
    let mut r = exercises::running(Some(&lab)).unwrap();
    let total = r.exercise.hints.len();
    for n in 1..=total + 1 {
        let h = exercises::hint(&mut r).unwrap();
        assert_eq!(
            (h.number, h.total, h.repeated),
            (n.min(total), total, n > total)
        );
    }
    // A question-less exercise refuses answers, saying what to do.
    let e = exercises::answer(&mut r, "node1").unwrap_err();
    assert!(
        e.is_usage() && e.to_string().contains("asks no question"),
        "{e}"
    );
    exercises::stop(&run).unwrap();
    assert_gone(&lab, &namespaces);
}

/// find-the-drop: every name labctl prints for a member is accepted, any
/// case; an answer of the wrong kind is refused uncounted; wrong answers
/// are recorded; the cap holds.
fn answers_are_judged_fairly_and_capped() {
    if !common::privileged("answers") {
        return;
    }
    let lab = common::lab_name("exans");
    let _cleanup = Cleanup(lab.clone());
    let mut run = start("find-the-drop", &lab);
    let member = run.attempt.vars["member"].text();
    let other = if member == "node1" { "node2" } else { "node1" };
    // Not an answer it can judge: refused, not counted, with the forms.
    let e = exercises::answer(&mut run, "the firewall").unwrap_err();
    assert!(matches!(e, ExerciseError::Unjudgeable(_)), "{e}");
    assert!(e.to_string().contains("member"), "{e}");
    assert!(Attempt::load(&lab).unwrap().unwrap().answers.is_empty());
    // Wrong, then right by LAB/MEMBER, in lowercase.
    assert!(!exercises::answer(&mut run, &format!("{other} NETFILTER_DROP")).unwrap());
    assert!(!exercises::check(&mut run).unwrap().passed);
    assert!(exercises::answer(&mut run, &format!("{lab}/{member} netfilter_drop")).unwrap());
    assert!(exercises::check(&mut run).unwrap().passed);
    // The namespace's own name, reason first.
    assert!(exercises::answer(&mut run, &format!("NETFILTER_DROP {lab}-{member}")).unwrap());
    // The cap (3): a fourth answer is refused, and status shows them all.
    let e = exercises::answer(&mut run, &format!("{member} NETFILTER_DROP")).unwrap_err();
    assert!(
        matches!(
            e,
            ExerciseError::Attempt(AttemptError::NoAnswersLeft { used: 3, max: 3 })
        ),
        "{e}"
    );
    let a = Attempt::load(&lab).unwrap().unwrap();
    assert_eq!(a.answers.len(), 3);
    assert_eq!(a.wrong_answers(), 1);
    let out = labctl()
        .args(["exercise", "status", "--lab", &lab, "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wrong_answers"], 1, "{v}");
    assert_eq!(v["answers"].as_array().unwrap().len(), 3);
    // A reset does not give the answers back.
    exercises::reset(&mut run).unwrap();
    assert!(exercises::answer(&mut run, &format!("{member} NETFILTER_DROP")).is_err());
    exercises::stop(&run).unwrap();
}

/// socket-lb-wire: the address the wire shows is as good as the word.
fn the_wire_answer_may_be_the_address() {
    if !common::privileged("wire") {
        return;
    }
    let lab = common::lab_name("exwire");
    let _cleanup = Cleanup(lab.clone());
    let source = shipped("socket-lb-wire");
    for vars in template::variants(&source.header.params, &lab) {
        let mut run = exercises::start(&source, Some(&lab), None, Some(vars)).unwrap();
        let wire = run.attempt.vars["wire"].text();
        let e = exercises::answer(&mut run, "the pod").unwrap_err();
        assert!(e.to_string().contains("vip"), "{e}");
        let addr = if wire == "vip" {
            "10.96.0.10".to_owned()
        } else {
            // A backend's address, whichever the capture shows.
            run.attempt.vars["wire_addr"].text()
        };
        assert!(
            exercises::answer(&mut run, &addr).unwrap(),
            "{wire}: {addr}"
        );
        let report = exercises::check(&mut run).unwrap();
        assert!(report.passed, "{wire}: {report:#?}");
        // The lab's status does not give the mode away.
        let out = labctl()
            .args(["lab", "status", &lab, "-o", "json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("ebpf"), "{text}");
        exercises::stop(&run).unwrap();
    }
}

/// A hint asked while a check runs is not lost when the check saves.
fn a_hint_during_a_check_is_kept() {
    if !common::privileged("lost_update") {
        return;
    }
    let lab = common::lab_name("exlock");
    let _cleanup = Cleanup(lab.clone());
    let mut run = start("missing-route", &lab);
    let lab2 = lab.clone();
    let checker = std::thread::spawn(move || {
        let mut mine = exercises::running(Some(&lab2)).unwrap();
        exercises::check(&mut mine).unwrap()
    });
    // Wait until the check holds its lock, then ask for a hint.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy = lab_cli::lab::state::Records::private("exercises")
            .try_lock_named(&lab, "check")
            .unwrap()
            .is_none();
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "the check never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    exercises::hint(&mut run).unwrap();
    exercises::hint(&mut run).unwrap();
    let report = checker.join().unwrap();
    assert!(!report.passed);
    let a = Attempt::load(&lab).unwrap().unwrap();
    assert_eq!(a.hints_used, 2, "hints lost");
    assert_eq!(a.checks_run, 1);
    exercises::stop(&run).unwrap();
}

/// Waits until the attempt in `lab` is in `phase`.
fn wait_phase(lab: &str, phase: Phase) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Attempt::load(lab).ok().flatten().map(|a| a.phase) != Some(phase) {
        assert!(Instant::now() < deadline, "{lab} never reached {phase:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILL during `start` and `reset`: `check` asks for a reset instead of
/// judging, `reset` and `stop` recover, nothing is left.
fn killed_start_and_reset_are_recovered() {
    if !common::privileged("killed") {
        return;
    }
    let lab = common::lab_name("exkill");
    let _cleanup = Cleanup(lab.clone());
    let mut child = labctl()
        .args(["exercise", "start", "forwarding-off", "--lab", &lab])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_phase(&lab, Phase::Starting);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = labctl()
        .args(["exercise", "check", "--lab", &lab])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not in a known state") && err.contains("reset"),
        "{err}"
    );
    let again = labctl()
        .args(["exercise", "start", "forwarding-off", "--lab", &lab])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("exercise stop"));
    // The way out: reset rebuilds it.
    let out = labctl()
        .args(["exercise", "reset", "--lab", &lab])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = exercises::running(Some(&lab)).unwrap();
    assert!(!exercises::check(&mut run).unwrap().passed);
    // Killed during a reset: the same.
    let mut child = labctl()
        .args(["exercise", "reset", "--lab", &lab])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_phase(&lab, Phase::Resetting);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut run = exercises::running(Some(&lab)).unwrap();
    let e = exercises::check(&mut run).err().unwrap();
    assert!(e.is_usage() && e.to_string().contains("reset"), "{e}");
    // stop works from any phase, and leaves nothing.
    let namespaces = [
        format!("{lab}-node1"),
        format!("{lab}-pod-a"),
        format!("{lab}-pod-b"),
    ];
    let out = labctl()
        .args(["exercise", "stop", "--lab", &lab])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone(&lab, &namespaces);
}

/// Ctrl-C during `check`: exit 130, nothing recorded, no accusation.
fn an_interrupted_check_records_nothing() {
    if !common::privileged("interrupted_check") {
        return;
    }
    let lab = common::lab_name("exint");
    let _cleanup = Cleanup(lab.clone());
    let run = start("mtu-overlay", &lab);
    let mut child = labctl()
        .args(["exercise", "check", "--lab", &lab])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_signal_handler(&child);
    // The bulk transfer takes 2 s: interrupt it in the middle.
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab_cli::lab::state::Records::private("exercises")
        .try_lock_named(&lab, "check")
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "the check never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    common::interrupt(&child);
    let status = common::wait_exit(&mut child, 30);
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("shortcut") && !text.contains("not yet"),
        "{text}"
    );
    assert_eq!(Attempt::load(&lab).unwrap().unwrap().checks_run, 0);
    exercises::stop(&run).unwrap();
}

/// A participant's own listener on the probe's port: the check says who
/// holds it instead of "Address already in use".
fn a_taken_port_is_named() {
    if !common::privileged("taken_port") {
        return;
    }
    let lab = common::lab_name("export");
    let _cleanup = Cleanup(lab.clone());
    let mut run = start("forwarding-off", &lab);
    exercises::apply_solution(&mut run).unwrap();
    let world = lab_cli::lab::Lab::open(&lab)
        .unwrap()
        .netns("world")
        .unwrap();
    let mine = world
        .run(|| std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 5001)))
        .unwrap()
        .unwrap();
    let report = exercises::check(&mut run).unwrap();
    let text = format!("{report:?}");
    assert!(
        text.contains("5001/tcp") && text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    drop(mine);
    assert!(exercises::check(&mut run).unwrap().passed);
    exercises::stop(&run).unwrap();
}

/// `--dir`: a relative directory works from anywhere afterwards, a broken
/// file beside it does not block `stop`, invalid files are refused with
/// the lint's words, and a file that runs commands says so.
fn exercises_from_a_directory() {
    if !common::privileged("dir") {
        return;
    }
    let lab = common::lab_name("exdir");
    let _cleanup = Cleanup(lab.clone());
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("room");
    std::fs::create_dir(&dir).unwrap();
    let text = shipped("forwarding-off").text;
    std::fs::write(dir.join("forwarding-off.toml"), &text).unwrap();
    // Invalid: no tasks.
    let bad = dir.join("empty-tasks.toml");
    std::fs::write(
        &bad,
        text.replace("id = \"forwarding-off\"", "id = \"empty-tasks\"")
            .split("[[tasks]]")
            .next()
            .unwrap()
            .to_owned()
            + "tasks = []\n[solution]\nexplanation = \"x\"\nactions = []\n",
    )
    .unwrap();
    let out = labctl()
        .current_dir(base.path())
        .args([
            "exercise",
            "start",
            "forwarding-off",
            "--dir",
            "room",
            "--lab",
            &lab,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let said = common::said(&out.stderr);
    assert!(
        said.contains("empty-tasks") && said.contains("no tasks"),
        "{err}"
    );
    let lint = labctl()
        .args(["exercise", "lint", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(lint.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&lint.stdout).contains("no tasks"));
    std::fs::remove_file(&bad).unwrap();
    let out = labctl()
        .current_dir(base.path())
        .args([
            "exercise",
            "start",
            "forwarding-off",
            "--dir",
            "room",
            "--lab",
            &lab,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        common::said(&out.stderr).contains("runs shell commands as root"),
        "{err}"
    );
    // Elsewhere, with a broken file beside it: status and stop still work.
    std::fs::write(dir.join("broken.toml"), "id = [").unwrap();
    let status = labctl()
        .current_dir("/")
        .args(["exercise", "status", "--lab", &lab])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stop = labctl()
        .current_dir("/")
        .args(["exercise", "stop", "--lab", &lab])
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(Attempt::load(&lab).unwrap().is_none());
}

/// find-the-drop as a participant plays it: the tracer run as the hints
/// say (`labctl trace --proto udp --port 5001`, default scope) while the
/// story's traffic is sent names the member where the rule sits, for every
/// draw; that name is accepted as the answer.
fn find_the_drop_with_its_own_hints() {
    if !common::privileged("find_the_drop_hints") {
        return;
    }
    let source = shipped("find-the-drop");
    for (n, vars) in template::variants(&source.header.params, "x")
        .into_iter()
        .enumerate()
    {
        let lab = common::lab_name(&format!("exftdh{n}"));
        let _cleanup = Cleanup(lab.clone());
        let mut run = exercises::start(&source, Some(&lab), None, Some(vars)).unwrap();
        let member = run.attempt.vars["member"].text();
        let ready = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::remove_file(&ready).unwrap();
        let mut tracer = labctl()
            .args(["trace", "--proto", "udp", "--port", "5001", "-o", "json"])
            .args(["--duration", "60", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::wait_ready(&mut tracer, Path::new(&ready));
        let traffic = labctl()
            .args([
                "lab", "traffic", "--lab", &lab, "pod-a", "pod-b", "--proto", "udp",
            ])
            .output()
            .unwrap();
        assert!(!traffic.status.success(), "the drop is planted");
        // Stopped after the traffic; what the kernel counted is printed.
        common::interrupt(&tracer);
        common::wait_exit(&mut tracer, 40);
        let out = tracer.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let named: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // Other tests' drops to port 5001 may show too.
            .filter(|v| {
                v["netns"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{lab}/")))
            })
            .map(|v| format!("{} {}", v["netns"].as_str().unwrap_or("?"), v["reason"]))
            .collect();
        let want = format!("{lab}/{member} \"NETFILTER_DROP\"");
        assert!(
            named.len() == 3 && named.iter().all(|n| *n == want),
            "draw {member}: the tracer named {named:?}, not {want}:\n{text}"
        );
        let seen = named[0].split(' ').next().unwrap();
        assert!(exercises::answer(&mut run, &format!("{seen} NETFILTER_DROP")).unwrap());
        assert!(exercises::check(&mut run).unwrap().passed);
        exercises::stop(&run).unwrap();
    }
}

fn trial(name: &str, f: fn()) -> Trial {
    Trial::test(name, move || run(f))
}

fn run(f: impl FnOnce() + std::panic::UnwindSafe) -> Result<(), Failed> {
    std::panic::catch_unwind(f).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into());
        Failed::from(msg)
    })
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        trial(
            "one_exercise_per_lab_and_clear_errors_for_the_rest",
            one_exercise_per_lab_and_clear_errors_for_the_rest,
        ),
        trial(
            "answers_are_judged_fairly_and_capped",
            answers_are_judged_fairly_and_capped,
        ),
        trial(
            "the_wire_answer_may_be_the_address",
            the_wire_answer_may_be_the_address,
        ),
        trial(
            "a_hint_during_a_check_is_kept",
            a_hint_during_a_check_is_kept,
        ),
        trial(
            "killed_start_and_reset_are_recovered",
            killed_start_and_reset_are_recovered,
        ),
        trial(
            "an_interrupted_check_records_nothing",
            an_interrupted_check_records_nothing,
        ),
        trial("exercises_from_a_directory", exercises_from_a_directory),
        trial("a_taken_port_is_named", a_taken_port_is_named),
        trial(
            "find_the_drop_with_its_own_hints",
            find_the_drop_with_its_own_hints,
        ),
    ];
    // One trial per draw of every shipped exercise: the whole protocol.
    for source in catalog::shipped().unwrap() {
        let draws = template::variants(&source.header.params, "x");
        for (n, vars) in draws.iter().enumerate() {
            let id = source.id().to_owned();
            trials.push(Trial::test(
                format!(
                    "selftest::{id}::{n}::{}",
                    template::describe(vars).replace(' ', ",")
                ),
                move || run(move || protocol(&id, n)),
            ));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
