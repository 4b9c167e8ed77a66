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
