//! Privileged: any kill or Ctrl-C at any moment, then the obvious next
//! command works; interrupts end with the documented exit code; nothing is
//! deleted that labctl cannot prove it created.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use lab_cli::{
    kernel::netns::{self, NETNS_RUN_DIR, NetNs},
    lab::{
        self,
        state::{LabState, NamespaceRecord},
        up::STEP_DELAY_ENV,
    },
};
use nix::sys::signal::Signal;

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

fn spawn(args: &[&str]) -> Child {
    labctl()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ready_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(netns::unique_name(tag))
}

#[test]
fn ctrl_c_or_sigterm_during_lab_up_rolls_back_and_exits_130() {
    if !common::privileged("ctrl_c_or_sigterm_during_lab_up_rolls_back_and_exits_130") {
        return;
    }
    for (tag, sig) in [("intr", Signal::SIGINT), ("term", Signal::SIGTERM)] {
        let name = common::lab_name(tag);
        let mut up = labctl()
            .args(["lab", "up", "two-node", "--name", &name])
            .env(STEP_DELAY_ENV, "100")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Half-way: two namespaces recorded, three to go.
        let deadline = Instant::now() + Duration::from_secs(20);
        while LabState::load(&name)
            .unwrap()
            .is_none_or(|s| s.namespaces.len() < 2)
        {
            assert!(Instant::now() < deadline, "up never got half-way");
            thread::sleep(Duration::from_millis(5));
        }
        common::signal(&up, sig);
        let status = common::wait_exit(&mut up, 30);
        let mut stderr = String::new();
        std::io::Read::read_to_string(up.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(130), "{sig}: {stderr}");
        assert!(
            common::said(stderr.as_bytes()).contains("everything built so far was removed"),
            "{stderr}"
        );
        for m in ["world", "node1", "node2", "pod-a", "pod-b"] {
            assert!(!common::netns_exists(&format!("{name}-{m}")), "{sig}: {m}");
        }
        assert!(LabState::load(&name).unwrap().is_none());
    }
}

/// The streams end normally on Ctrl-C: summary printed, exit 0. `lab
/// traffic` stopped early reports what it sent and exits 130.
#[test]
fn one_exit_code_rule_for_interrupts() {
    if !common::privileged("one_exit_code_rule_for_interrupts") {
        return;
    }
    let lab = common::lab("basic", "exit");
    let node = lab.plan.nodes[0].netns.clone();
    let streams: [(&str, Vec<&str>, &str); 4] = [
        ("trace", vec!["trace", "--netns", &node], "summary after"),
        (
            "watch",
            vec!["conntrack", "watch", "--netns", &node],
            "events,",
        ),
        (
            "track",
            vec!["conntrack", "track", "--netns", &node, "--iface", "eth0"],
            "tracker detached",
        ),
        ("masq", vec!["masq", "--netns", &node], "POD"),
    ];
    for (what, args, says) in streams {
        let ready = ready_path("labtest-intr");
        let mut args = args.clone();
        let ready_arg = ready.to_string_lossy().into_owned();
        args.extend(["--ready-file", &ready_arg]);
        let mut child = spawn(&args);
        common::wait_ready(&mut child, &ready);
        common::interrupt(&child);
        let status = common::wait_exit(&mut child, 20);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            status.code(),
            Some(0),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(says), "{what}: {stdout}");
        assert!(!ready.exists(), "{what} left its ready file");
    }
    let mut traffic = spawn(&[
        "lab",
        "traffic",
        "--lab",
        lab.name(),
        "pod-a",
        "world",
        "--duration",
        "60",
    ]);
    common::wait_for_signal_handler(&traffic);
    thread::sleep(Duration::from_millis(300));
    common::interrupt(&traffic);
    let status = common::wait_exit(&mut traffic, 20);
    let out = traffic.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stdout).contains("answered"));
}

#[test]
fn a_killed_tracker_is_replaced_and_never_reported_as_running() {
    if !common::privileged("a_killed_tracker_is_replaced_and_never_reported_as_running") {
        return;
    }
    let ns = common::netns("labtest-ktr");
    let track = |ready: &Path| {
        let ready = ready.to_string_lossy().into_owned();
        spawn(&[
            "conntrack",
            "track",
            "--netns",
            ns.name(),
            "--iface",
            "lo",
            "--ready-file",
            &ready,
        ])
    };
    let ready = ready_path("labtest-ktr");
    let mut first = track(&ready);
    common::wait_ready(&mut first, &ready);
    // A second tracker on the same interface is refused while one runs.
    let busy = labctl()
        .args(["conntrack", "track", "--netns", ns.name(), "--iface", "lo"])
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    assert!(common::said(&busy.stderr).contains("already running"));
    common::signal(&first, Signal::SIGKILL);
    first.wait().unwrap();
    let pin = lab_cli::ebpf::pins::tracker(ns.inode().unwrap(), "lo");
    assert!(pin.exists(), "SIGKILL leaves the pins");

    let list = labctl()
        .args(["conntrack", "list", "--netns", ns.name(), "--source", "bpf"])
        .output()
        .unwrap();
    let stderr = common::said(&list.stderr);
    assert_eq!(list.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no eBPF connection tracker is running"),
        "{stderr}"
    );
    assert!(!pin.exists(), "the stale table is removed");

    // Killed again, then the next `track` replaces the stale pins.
    std::fs::remove_file(&ready).ok();
    let mut second = track(&ready);
    common::wait_ready(&mut second, &ready);
    common::signal(&second, Signal::SIGKILL);
    second.wait().unwrap();
    std::fs::remove_file(&ready).ok();
    let mut third = track(&ready);
    common::wait_ready(&mut third, &ready);
    common::interrupt(&third);
    assert!(common::wait_exit(&mut third, 20).success());
    assert!(!pin.exists());
}

#[test]
fn empty_mount_points_left_by_a_kill_are_cleared_by_down_and_up() {
    if !common::privileged("empty_mount_points_left_by_a_kill_are_cleared_by_down_and_up") {
        return;
    }
    let name = common::lab_name("empty");
    lab::Lab::up(Some(&name), "basic", Default::default()).unwrap();
    // What a SIGKILL between unmount and unlink in `down` leaves.
    let victim = format!("{name}-pod-b");
    let path = Path::new(NETNS_RUN_DIR).join(&victim);
    nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(netns::entry(&path).unwrap(), netns::Entry::Leftover);
    let down = labctl().args(["lab", "down", &name]).output().unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!path.exists());
    assert!(LabState::load(&name).unwrap().is_none());

    // Without a record (killed after it was removed): `up` clears it too.
    std::fs::File::create(&path).unwrap();
    let up = labctl()
        .args(["lab", "up", "basic", "--name", &name])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(
        netns::entry(&path).unwrap(),
        netns::Entry::Namespace(NetNs::open(&victim).unwrap().inode().unwrap())
    );
    lab::down(Some(&name)).unwrap();
}

#[test]
fn a_namespace_with_no_recorded_inode_is_never_deleted() {
    if !common::privileged("a_namespace_with_no_recorded_inode_is_never_deleted") {
        return;
    }
    let name = common::lab_name("inode0");
    // Someone's namespace, with a name a lab record lists with inode 0 (as
    // an older labctl killed half-way through `up` could write).
    let foreign = NetNs::create(&format!("{name}-world")).unwrap();
    LabState {
        lab: name.clone(),
        scenario: "basic".into(),
        options: Default::default(),
        complete: false,
        namespaces: vec![NamespaceRecord {
            name: foreign.name().to_owned(),
            inode: 0,
        }],
        cgroups: Vec::new(),
        services: Vec::new(),
        policies: Vec::new(),
        labels: Default::default(),
        identities: None,
    }
    .save()
    .unwrap();
    let err = lab::down(Some(&name)).unwrap_err().to_string();
    assert!(err.contains("cannot prove"), "{err}");
    assert!(common::netns_exists(foreign.name()));
    drop(foreign);
    // Once it is gone, down finishes the record.
    lab::down(Some(&name)).unwrap();
    assert!(LabState::load(&name).unwrap().is_none());
}

#[test]
fn lab_exec_exits_127_and_126_as_shells_do() {
    if !common::privileged("lab_exec_exits_127_and_126_as_shells_do") {
        return;
    }
    let lab = common::lab("basic", "exec");
    let exec = |cmd: &str| {
        labctl()
            .args(["lab", "exec", "--lab", lab.name(), "pod-a", "--", cmd])
            .output()
            .unwrap()
    };
    let out = exec("labctl-no-such-command");
    assert_eq!(out.status.code(), Some(127));
    assert!(common::said(&out.stderr).contains("labctl-no-such-command"));
    let not_executable = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(
        exec(not_executable.path().to_str().unwrap()).status.code(),
        Some(126)
    );
    assert_eq!(exec("true").status.code(), Some(0));
    assert_eq!(exec("false").status.code(), Some(1));
}

/// Lines a child writes on a pipe, collected by a thread as they come.
struct Lines {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    /// Set once the pipe reached its end (the writer exited).
    eof: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lines {
    fn of(pipe: impl std::io::Read + Send + 'static) -> Self {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let eof = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, ended) = (text.clone(), eof.clone());
        thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut t = into.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
            ended.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Self { text, eof }
    }

    /// What has come so far.
    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Everything the child wrote, once it has exited: waits (5 s at most)
    /// for the reader to reach the pipe's end, since the last lines may
    /// still be on their way when the exit is seen (seen once under load:
    /// a view's exit read before its last line).
    fn all(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.eof.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the pipe never ended: {}",
                self.text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        self.text()
    }

    /// Waits (`secs` at most) until the text contains `what`.
    fn wait_for(&self, what: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !common::said(self.text().as_bytes()).contains(what) {
            assert!(
                Instant::now() < deadline,
                "never said `{what}`: {}",
                self.text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits for `child` to exit after a signal sent at `sent`; the exit
/// status and how long it took.
fn exit_after(child: &mut Child, sent: Instant) -> (std::process::ExitStatus, Duration) {
    let status = common::wait_exit(child, 20);
    (status, sent.elapsed())
}

#[test]
fn a_command_waiting_for_the_lab_lock_exits_130_on_ctrl_c_and_names_the_holder() {
    if !common::privileged(
        "a_command_waiting_for_the_lab_lock_exits_130_on_ctrl_c_and_names_the_holder",
    ) {
        return;
    }
    let name = common::lab_name("lockwait");
    // Held here, as a `lab up` in another terminal would hold it.
    let held = lab::state::LabLock::acquire().unwrap();
    let mut down = spawn(&["lab", "down", &name]);
    let stderr = Lines::of(down.stderr.take().unwrap());
    stderr.wait_for("waiting for another `labctl lab` command to finish", 20);
    stderr.wait_for(&format!("held by pid {}", std::process::id()), 5);
    let sent = Instant::now();
    common::interrupt(&down);
    let (status, took) = exit_after(&mut down, sent);
    drop(held);
    let said = common::said(stderr.all().as_bytes());
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after Ctrl-C"
    );
    eprintln!("lock wait: exit 130 {took:?} after SIGINT");
    assert!(
        said.contains("interrupted while waiting for the lab lock")
            && said.contains(&format!("(pid {})", std::process::id()))
            && said.contains("nothing was changed"),
        "{said}"
    );
    // SIGTERM too.
    let held = lab::state::LabLock::acquire().unwrap();
    let mut down = spawn(&["lab", "down", &name]);
    let stderr = Lines::of(down.stderr.take().unwrap());
    stderr.wait_for("waiting for another `labctl lab` command", 20);
    let sent = Instant::now();
    common::signal(&down, Signal::SIGTERM);
    let (status, took) = exit_after(&mut down, sent);
    drop(held);
    assert_eq!(status.code(), Some(130), "{}", stderr.all());
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM"
    );
}

/// Every stream, idle (no traffic), ends within a second of Ctrl-C with
/// its summary and exit 0.
#[test]
fn idle_streams_stop_within_a_second_of_ctrl_c() {
    if !common::privileged("idle_streams_stop_within_a_second_of_ctrl_c") {
        return;
    }
    let ns = common::netns("labtest-idle");
    let n = ns.name();
    let streams: [(&str, Vec<&str>, &str); 5] = [
        ("trace", vec!["trace", "--netns", n], "summary after"),
        ("watch", vec!["conntrack", "watch", "--netns", n], "events,"),
        (
            "track",
            vec!["conntrack", "track", "--netns", n, "--iface", "lo"],
            "tracker detached",
        ),
        ("masq", vec!["masq", "--netns", n, "--iface", "lo"], "POD"),
        ("observe", vec!["observe", "--netns", n], ""),
    ];
    let mut took_all = Vec::new();
    for (what, args, says) in streams {
        let ready = ready_path("labtest-idle");
        let ready_arg = ready.to_string_lossy().into_owned();
        let mut args = args.clone();
        args.extend(["--ready-file", &ready_arg]);
        let mut child = spawn(&args);
        common::wait_ready(&mut child, &ready);
        // Idle long enough for every loop to be deep in its wait.
        thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        common::interrupt(&child);
        let (status, took) = exit_after(&mut child, sent);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(0), "{what}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(says),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            took < Duration::from_secs(1),
            "{what} took {took:?} after Ctrl-C"
        );
        took_all.push(format!("{what} {} ms", took.as_millis()));
        std::fs::remove_file(&ready).ok();
    }
    eprintln!("exit after SIGINT: {}", took_all.join(", "));
}

/// Views of one lab or pod stop by themselves, saying why, when the lab
/// goes down; the node-wide view says so once and goes on.
#[test]
fn views_of_a_lab_stop_when_it_is_taken_down() {
    if !common::privileged("views_of_a_lab_stop_when_it_is_taken_down") {
        return;
    }
    // eBPF masquerading: `masq` reads its pinned counters, which go too.
    let lab = common::lab_with(
        "basic",
        "gone",
        lab::plan::LabOptions {
            masq: lab::plan::MasqMode::Ebpf,
            ..Default::default()
        },
    );
    let name = lab.name().to_owned();
    let pod = format!("{name}/pod-a");
    let node = format!("{name}/node1");
    let views: [(&str, Vec<&str>); 7] = [
        ("trace --netns", vec!["trace", "--netns", &pod]),
        ("trace --pod", vec!["trace", "--pod", &pod]),
        ("watch", vec!["conntrack", "watch", "--netns", &pod]),
        (
            "track",
            vec!["conntrack", "track", "--netns", &node, "--iface", "eth0"],
        ),
        ("masq", vec!["masq", "--netns", &node, "--watch"]),
        ("observe --lab", vec!["observe", "--lab", &name]),
        ("observe", vec!["observe"]),
    ];
    let mut running = Vec::new();
    for (what, args) in views {
        let ready = ready_path("labtest-gone");
        let ready_arg = ready.to_string_lossy().into_owned();
        let mut args = args.clone();
        args.extend(["--ready-file", &ready_arg]);
        let mut child = spawn(&args);
        common::wait_ready(&mut child, &ready);
        std::fs::remove_file(&ready).ok();
        let stderr = Lines::of(child.stderr.take().unwrap());
        let stdout = Lines::of(child.stdout.take().unwrap());
        running.push((what, child, stderr, stdout));
    }
    let down = Instant::now();
    lab.down().unwrap();
    let gone = format!("lab `{name}` was taken down");
    let (node_wide, scoped): (Vec<_>, Vec<_>) = running
        .into_iter()
        .partition(|(what, ..)| *what == "observe");
    for (what, mut child, stderr, stdout) in scoped {
        // Noticed within a refresh or two of the namespaces going.
        let status = common::wait_exit(&mut child, 10);
        let said = common::said(stderr.all().as_bytes());
        assert_eq!(status.code(), Some(0), "{what}: {said}");
        assert!(
            said.contains("stopped: ") && said.contains(&gone),
            "{what}: {said}"
        );
        assert!(!said.contains("WARN"), "{what}: {said}");
        eprintln!(
            "{what}: stopped {:?} after lab down: {said}",
            down.elapsed()
        );
        let out = stdout.all();
        match what {
            "trace --netns" | "trace --pod" => assert!(out.contains("summary after"), "{out}"),
            "watch" => assert!(out.contains("events,"), "{out}"),
            "track" => assert!(out.contains("tracker detached"), "{out}"),
            // Its counters went with the lab: no table at the end.
            "masq" => assert!(out.contains("counting masquerade"), "{out}"),
            _ => assert!(said.contains("flows,"), "{what}: {said}"),
        }
    }
    for (what, mut child, stderr, _) in node_wide {
        stderr.wait_for(&gone, 10);
        // Still running, and said once.
        thread::sleep(Duration::from_millis(1200));
        assert!(child.try_wait().unwrap().is_none(), "{what} stopped");
        let said = common::said(stderr.text().as_bytes());
        assert_eq!(said.matches(&gone).count(), 1, "{said}");
        assert!(said.contains("still watching the others"), "{said}");
        common::interrupt(&child);
        assert_eq!(common::wait_exit(&mut child, 20).code(), Some(0));
    }
}

/// A probe waiting for an answer that never comes (`--timeout 600`) ends
/// at Ctrl-C, reporting what was sent; `lab exec` passes SIGTERM on to its
/// command and exits as a shell reports it (128+15).
#[test]
fn blocking_waits_for_answers_and_children_end_at_a_signal() {
    if !common::privileged("blocking_waits_for_answers_and_children_end_at_a_signal") {
        return;
    }
    let lab = common::lab("basic", "block");
    for proto in ["icmp", "udp", "tcp"] {
        // TEST-NET-1: routed out of the lab, answered by nobody.
        let mut traffic = spawn(&[
            "lab",
            "traffic",
            "--lab",
            lab.name(),
            "pod-a",
            "192.0.2.1",
            "--proto",
            proto,
            "-c",
            "1",
            "--timeout",
            "600",
        ]);
        common::wait_for_signal_handler(&traffic);
        thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        common::interrupt(&traffic);
        let (status, took) = exit_after(&mut traffic, sent);
        let out = traffic.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(status.code(), Some(130), "{proto}: {stdout}");
        assert!(took < Duration::from_secs(1), "{proto}: {took:?}");
        assert!(
            stdout.contains("0/1 answered; 1× stopped"),
            "{proto}: {stdout}"
        );
        eprintln!(
            "traffic {proto}: exit 130 {} ms after SIGINT",
            took.as_millis()
        );
    }
    let mut exec = spawn(&[
        "lab",
        "exec",
        "--lab",
        lab.name(),
        "pod-a",
        "--",
        "sleep",
        "600",
    ]);
    // Its command started: labctl has a child.
    let children = format!("/proc/{0}/task/{0}/children", exec.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&children)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the command never started");
        thread::sleep(Duration::from_millis(5));
    }
    let sent = Instant::now();
    common::signal(&exec, Signal::SIGTERM);
    let (status, took) = exit_after(&mut exec, sent);
    assert_eq!(status.code(), Some(143));
    assert!(took < Duration::from_secs(1), "{took:?}");
    eprintln!("lab exec: exit 143 {} ms after SIGTERM", took.as_millis());
}
