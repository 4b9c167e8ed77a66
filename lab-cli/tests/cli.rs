//! The command line as a learner (or a hostile tester) meets it: bad input
//! is one clear sentence and exit code 2 at parse time, before privileges
//! are checked or anything is touched; names never lead out of our
//! directories; generated completions and man pages work.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output},
};

fn labctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(args)
        .output()
        .expect("run labctl")
}

/// Runs labctl as `nobody`, to show what is checked before privileges.
fn labctl_unprivileged(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_labctl"));
    c.args(args);
    if nix::unistd::geteuid().is_root() {
        c.uid(65534).gid(65534);
    }
    c.output().expect("run labctl")
}

/// Exit code 2, a message naming what was wrong, no panic, nothing printed
/// on stdout.
#[track_caller]
fn usage_error(args: &[&str], says: &str) {
    let out = labctl(args);
    let stderr = common::said(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: `{says}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
}

#[test]
fn bad_durations_are_refused_at_parse_time_everywhere() {
    for bad in ["1e30", "-1", "inf", "NaN", "0", "forever"] {
        for cmd in [
            &["trace", "--duration", bad][..],
            &["conntrack", "watch", "--duration", bad],
            &["conntrack", "track", "--iface", "lo", "--duration", bad],
            &["masq", "--duration", bad],
            &["lab", "traffic", "pod-a", "pod-b", "--duration", bad],
            &["lab", "traffic", "pod-a", "pod-b", "--timeout", bad],
            &["conntrack", "top", "--interval", bad],
        ] {
            usage_error(cmd, bad);
        }
    }
}

#[test]
fn ring_sizes_ports_counts_and_timeouts_have_one_rule_each() {
    usage_error(&["trace", "--ring-size", "1073741824"], "power of two");
    usage_error(&["trace", "--ring-size", "5000"], "power of two");
    usage_error(&["conntrack", "watch", "--buffer-size", "0"], "4K to 256M");
    for cmd in [
        &["trace", "--port", "0"][..],
        &["conntrack", "list", "--sport", "0"],
        &["conntrack", "watch", "--dport", "0"],
        &["lab", "traffic", "pod-a", "pod-b", "--port", "0"],
        &["svc", "add", "api", "--port", "0"],
        &["svc", "add", "api", "--target-port", "0"],
    ] {
        usage_error(cmd, "not a port");
    }
    for cmd in [
        &["trace", "--count", "0"][..],
        &["conntrack", "watch", "--count", "0"],
        &["lab", "traffic", "pod-a", "pod-b", "-c", "0"],
        &["lab", "trigger", "policy", "-c", "0"],
        &["demo", "--count", "0"],
    ] {
        usage_error(cmd, "0");
    }
    usage_error(
        &[
            "lab",
            "up",
            "basic",
            "--masq",
            "ebpf",
            "--nat-udp-timeout",
            "0",
        ],
        "timeout",
    );
    usage_error(&["lab", "up", "basic", "--nat-ports", "9-2"], "empty");
    usage_error(&["lab", "up", "overlay", "--mtu", "100"], "MTU");
    usage_error(
        &["trace", "--pcap", "x", "--snaplen", "0"],
        "not a valid snaplen",
    );
    usage_error(
        &["trace", "--pcap", "x", "--snaplen", "4096"],
        "from 1 to 2048",
    );
    usage_error(&["observe", "--ring-size", "5000"], "power of two");
    usage_error(&["observe", "--verdict", "MAYBE"], "MAYBE");
    usage_error(&["observe", "--port", "0"], "not a port");
    usage_error(&["metrics", "--listen", "localhost"], "localhost");
}

#[test]
fn conflicting_or_ignored_flags_are_refused() {
    for (cmd, says) in [
        (&["masq", "--duration", "5", "nat-table"][..], "nat-table"),
        (&["trace", "--summary", "--stack"], "--stack"),
        (&["trace", "--interval", "2"], "--summary"),
        (&["masq", "--interval", "2"], "--watch"),
        (
            &[
                "lab",
                "traffic",
                "pod-a",
                "pod-b",
                "-c",
                "3",
                "--duration",
                "2",
            ],
            "--duration",
        ),
        (&["explain", "NO_SOCKET", "--list"], "--list"),
        (&["conntrack", "list", "--snat", "--dnat"], "--dnat"),
        (&["conntrack", "list", "--snat", "--any-nat"], "--any-nat"),
        (&["trace", "--scope", "all", "--netns", "x"], "--netns"),
        (&["trace", "--pod", "a/b", "--netns", "x"], "--netns"),
        (&["trace", "--pod-namespace", "a", "--pod", "a/b"], "--pod"),
        (&["trace", "--snaplen", "64"], "--pcap"),
        (&["trace", "--summary", "--pcap", "x"], "--pcap"),
        (&["observe", "--lab", "a", "--netns", "x"], "--netns"),
    ] {
        usage_error(cmd, says);
    }
}

#[test]
fn lab_names_are_checked_before_any_file_is_read() {
    // A record planted outside /run/labctl/labs would name namespaces to delete.
    for cmd in [
        &["lab", "down", "../../../tmp/x"][..],
        &["lab", "status", "../x"],
        &["lab", "exec", "--lab", "a/b", "pod-a", "--", "true"],
        &["lab", "traffic", "--lab", "..", "pod-a", "pod-b"],
        &["lab", "traffic", "../pod-a", "pod-b"],
        &["lab", "exec", "A/pod-a", "--", "true"],
        &["lab", "trigger", "--lab", "A", "policy"],
        &["lab", "up", "basic", "--name", "../evil"],
    ] {
        usage_error(cmd, "is not valid");
    }
    let err = lab_cli::lab::state::LabState::load("../../../tmp/x").unwrap_err();
    assert!(err.to_string().contains("is not valid"), "{err}");
}

#[test]
fn input_is_validated_before_privileges_are_asked_for() {
    // As nobody: a typo is a typo (exit 2), not "try: sudo" (exit 3).
    for (cmd, says) in [
        (&["lab", "up", "no-such-scenario"][..], "unknown scenario"),
        (&["trace", "--duration", "-1"], "out of range"),
        (&["lab", "down", "../x"], "is not valid"),
        (&["exercise", "start", "no-such"], "unknown exercise"),
        (&["trace", "--proto", "xyz"], "unknown protocol"),
        (&["conntrack", "list", "--state", "FOO"], "not a TCP state"),
        (&["conntrack", "list", "--src", "1.2.3"], "not an address"),
        (&["lab", "trigger", "nosuch"], "unknown fault"),
        (
            &["lab", "traffic", "pod-a", "pod-b", "--backend", "x"],
            "MEMBER:PORT",
        ),
        (
            &["exercise", "start", "no-masquerade", "--lab", "A"],
            "is not valid",
        ),
    ] {
        let out = labctl_unprivileged(cmd);
        let stderr = common::said(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(stderr.contains(says), "{cmd:?}: {stderr}");
        assert!(!stderr.contains("sudo"), "{cmd:?}: {stderr}");
    }
    // And a valid command without privileges says how to get them (exit 3).
    if nix::unistd::geteuid().is_root() {
        let out = labctl_unprivileged(&["trace", "--duration", "1"]);
        assert_eq!(out.status.code(), Some(3));
        assert!(common::said(&out.stderr).contains("sudo"));
    }
}

#[test]
fn namespaces_that_do_not_exist_are_named_in_the_error() {
    // No namespace has inode 1 (the first proc inodes are far larger).
    usage_error(
        &["trace", "--netns", "1", "--duration", "1"],
        "does not exist",
    );
    usage_error(
        &["trace", "--netns", "pid:abc", "--duration", "1"],
        "does not exist",
    );
    usage_error(
        &["conntrack", "list", "--netns", "labctl-no-such-ns"],
        "does not exist",
    );
    usage_error(&["masq", "nat-table", "--netns", "nolab/pod-a"], "not up");
    usage_error(
        &["trace", "--pod", "nolab/pod-a", "--duration", "1"],
        "no pod `nolab/pod-a`",
    );
    usage_error(
        &["trace", "--pod-namespace", "nolab", "--duration", "1"],
        "no pods in namespace `nolab`",
    );
    usage_error(
        &["conntrack", "list", "--pod", "kube-system/coredns"],
        "no pod `kube-system/coredns`",
    );
    usage_error(
        &["observe", "--to-pod", "nolab/pod-a"],
        "no pod `nolab/pod-a`",
    );
    usage_error(
        &["metrics", "--netns", "labctl-no-such-ns"],
        "does not exist",
    );
}

#[test]
fn a_pcap_path_that_is_a_symlink_is_refused_not_followed() {
    if !common::privileged("a_pcap_path_that_is_a_symlink_is_refused_not_followed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("victim");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("drops.pcapng");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = labctl(&["trace", "--pcap", link.to_str().unwrap(), "--duration", "1"]);
    let stderr = common::said(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definitions() {
    let out = labctl(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("labctl") && script.contains("--ready-file"));
    let out = labctl(&["man", "--list"]);
    let pages = String::from_utf8(out.stdout).unwrap();
    assert!(
        pages.lines().any(|p| p == "labctl-conntrack-list"),
        "{pages}"
    );
    let out = labctl(&["man", "labctl-trace"]);
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH labctl-trace") && page.contains("ring\\-size"));
    usage_error(&["man", "labctl-nope"], "no man page");
}

#[test]
fn exercises_are_listed_and_exported_without_privileges() {
    let out = labctl_unprivileged(&["exercise", "list", "-o", "json"]);
    assert!(out.status.success());
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for id in [
        "no-masquerade",
        "forwarding-off",
        "missing-route",
        "mtu-overlay",
        "rp-filter",
        "policy-allow-one",
        "conntrack-invalid",
        "stale-conntrack",
        "find-the-drop",
        "nat-exhaustion",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    // A link planted where a handout goes is replaced, not followed.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("rp-filter.md")).unwrap();
    let out = labctl(&[
        "exercise",
        "export",
        "--markdown",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let md = std::fs::read_to_string(dir.path().join("rp-filter.md")).unwrap();
    assert!(md.starts_with("# ") && md.contains("## Hints") && md.contains("labctl lab exec"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        ids.len() + 1,
        "one handout per exercise, and the victim"
    );
}
