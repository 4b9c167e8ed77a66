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
    os::unix::{fs::OpenOptionsExt as _, process::CommandExt as _},
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
    // Hubble's API has no authentication: loopback unless asked.
    let out = labctl_unprivileged(&["observe", "--serve", "0.0.0.0:4245"]);
    let stderr = common::said(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--serve-non-loopback"), "{stderr}");
    usage_error(&["observe", "--serve-non-loopback"], "--serve");
    usage_error(
        &["observe", "--serve", "example.org:4245"],
        "localhost:PORT",
    );
    usage_error(&["metrics", "--listen", "localhost"], "localhost");
    // Host names other than localhost are not looked up.
    usage_error(
        &["metrics", "--listen", "example.org:9477"],
        "localhost:PORT",
    );
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
        (
            &[
                "lab", "traffic", "pod-a", "pod-b", "-p", "udp", "-s", "70000",
            ],
            "does not fit",
        ),
        (
            &[
                "svc", "backend", "set", "web", "web-1", "web-1", "--lab", "x",
            ],
            "more than once",
        ),
        (&["trace", "--pcap", "-", "-o", "json"], "standard output"),
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
    // --namespace is checked as --pod is.
    usage_error(
        &["observe", "--namespace", "nolab"],
        "no pods in namespace `nolab`",
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
fn sizes_addresses_and_backends_once_accepted_are_refused() {
    // Sizes: bounded at parse time (no allocation failure), then by what
    // one datagram carries for icmp and udp.
    usage_error(
        &["lab", "traffic", "pod-a", "pod-b", "-s", "99999999999999"],
        "too large",
    );
    usage_error(
        &["lab", "traffic", "pod-a", "pod-b", "-p", "tcp", "-s", "2G"],
        "at most 1073741824",
    );
    usage_error(
        &["lab", "traffic", "pod-a", "pod-b", "-s", "1.5"],
        "not a size",
    );
    usage_error(
        &["lab", "traffic", "pod-a", "pod-b", "-s", "65508"],
        "does not fit in one icmp datagram",
    );
    usage_error(
        &["lab", "traffic", "pod-a", "pod-b", "-p", "udp", "-s", "64K"],
        "does not fit in one udp datagram",
    );
    // Service addresses: in the CIDR, not its network or broadcast address.
    usage_error(
        &["svc", "add", "api", "--vip", "10.96.0.0"],
        "network address",
    );
    usage_error(
        &["svc", "add", "api", "--vip", "10.111.255.255"],
        "broadcast address",
    );
    usage_error(
        &["svc", "add", "api", "--vip", "10.112.0.1"],
        "not in the service CIDR",
    );
    // Backends: each pod once, and this lab's (checked before the lab is
    // even opened: `nolab` is not up).
    for cmd in [
        &[
            "svc", "backend", "set", "web", "web-1", "web-1", "web-2", "--lab", "nolab",
        ][..],
        &[
            "svc",
            "add",
            "api",
            "--lab",
            "nolab",
            "-b",
            "web-1",
            "-b",
            "nolab/web-1",
        ],
    ] {
        usage_error(cmd, "pod `web-1` is given more than once");
    }
    for cmd in [
        &["svc", "add", "api", "--lab", "nolab", "-b", "other/web-1"][..],
        &[
            "svc",
            "backend",
            "add",
            "web",
            "other/web-1",
            "--lab",
            "nolab",
        ],
        &[
            "svc",
            "backend",
            "set",
            "web",
            "other/web-1",
            "--lab",
            "nolab",
        ],
    ] {
        usage_error(
            cmd,
            "is a pod of lab `other`, but the service is in lab `nolab`",
        );
    }
    // A pcap on standard output shares it with nothing, and --force has
    // nothing to replace there.
    usage_error(
        &["trace", "--pcap", "-", "-o", "json"],
        "both write to standard output",
    );
    usage_error(&["trace", "--pcap", "-", "--force"], "--force");
    usage_error(&["trace", "--force"], "--pcap");
}

/// A pseudo-terminal: (the side a terminal emulator holds, the side a
/// program sees as its terminal).
fn pty() -> (std::os::fd::OwnedFd, std::fs::File) {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(master >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a descriptor just opened, owned by nothing else.
    let master = unsafe { std::os::fd::OwnedFd::from_raw_fd(master) };
    // SAFETY: grantpt and unlockpt take an open pty master.
    assert_eq!(unsafe { libc::grantpt(master.as_raw_fd()) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::unlockpt(master.as_raw_fd()) }, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the buffer is writable and its length given.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    assert_eq!(rc, 0);
    // SAFETY: ptsname_r wrote a NUL-terminated string into the buffer.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .unwrap();
    (master, slave)
}

#[test]
fn a_pcap_is_never_written_onto_a_terminal() {
    let (_master, terminal) = pty();
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["trace", "--pcap", "-", "--duration", "1"])
        .stdout(terminal)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("standard output, which is a terminal"),
        "{stderr}"
    );
}

#[test]
fn a_pcap_file_that_exists_is_replaced_only_with_force() {
    if !common::privileged("a_pcap_file_that_exists_is_replaced_only_with_force") {
        return;
    }
    let ns = common::netns("labtest-pf");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("drops.pcapng");
    std::fs::write(&pcap, b"keep me").unwrap();
    let path = pcap.to_str().unwrap();
    let trace = |force: &[&str]| {
        let mut args = vec![
            "trace",
            "--netns",
            ns.name(),
            "--pcap",
            path,
            "--duration",
            "1",
        ];
        args.extend_from_slice(force);
        labctl(&args)
    };
    let out = trace(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&pcap).unwrap(), b"keep me");

    // Another name for the old file keeps its content: the file is
    // replaced, not written into.
    let other = dir.path().join("other");
    std::fs::hard_link(&pcap, &other).unwrap();
    let out = trace(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read(&pcap).unwrap();
    // A pcapng starts with its section header block.
    assert_eq!(written[..4], [0x0a, 0x0d, 0x0d, 0x0a]);
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&pcap).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o644);
}

/// Removes a planted link when the test ends, however it ends.
struct Planted(std::path::PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

#[test]
fn a_link_planted_in_the_records_directory_does_not_redirect_lab_up() {
    if !common::privileged("a_link_planted_in_the_records_directory_does_not_redirect_lab_up") {
        return;
    }
    let name = common::lab_name("plant");
    let records = std::path::Path::new(lab_cli::lab::state::RUN_DIR).join("labs");
    lab_cli::kernel::safefile::Dir::private(&records, 0o755).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    // Where the old code wrote before renaming: NAME.json.tmp.
    let planted = Planted(records.join(format!("{name}.json.tmp")));
    std::os::unix::fs::symlink(&victim, &planted.0).unwrap();

    let lab = common::lab("basic", "plant");
    assert_eq!(lab.name(), name);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let record = records.join(format!("{name}.json"));
    let meta = std::fs::symlink_metadata(&record).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o644
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(json["lab"], name.as_str());
    // The planted link is left as it was, never written through.
    assert!(std::fs::symlink_metadata(&planted.0).unwrap().is_symlink());
    lab.down().unwrap();
    assert!(!record.exists());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

#[test]
fn svc_list_reads_a_namespace_given_by_its_path() {
    if !common::privileged("svc_list_reads_a_namespace_given_by_its_path") {
        return;
    }
    let ns = common::netns("labtest-svcp");
    let by_name = labctl(&["svc", "list", "--netns", ns.name(), "-o", "json"]);
    let path = format!("/run/netns/{}", ns.name());
    let by_path = labctl(&["svc", "list", "--netns", &path, "-o", "json"]);
    assert!(
        by_path.status.success(),
        "{}",
        String::from_utf8_lossy(&by_path.stderr)
    );
    assert!(by_name.status.success());
    assert_eq!(by_path.stdout, by_name.stdout);
    let here = labctl(&["svc", "list", "--netns", "/proc/self/ns/net", "-o", "json"]);
    assert!(
        here.status.success(),
        "{}",
        String::from_utf8_lossy(&here.stderr)
    );
    usage_error(
        &["svc", "list", "--netns", "/etc/passwd"],
        "not a network namespace file",
    );
    usage_error(
        &["svc", "list", "--netns", "/proc/self/ns/mnt"],
        "not a network namespace file",
    );
    usage_error(
        &["svc", "list", "--netns", "/labctl-no-such-file"],
        "does not exist",
    );
}

#[test]
fn a_tcp_probe_bigger_than_the_socket_buffers_is_echoed_whole() {
    if !common::privileged("a_tcp_probe_bigger_than_the_socket_buffers_is_echoed_whole") {
        return;
    }
    let lab = common::lab("basic", "bigtcp");
    // 16 MB each way: the client writing it all before reading used to
    // deadlock against the echo server blocked on its own send.
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["lab", "traffic", "--lab", lab.name(), "pod-a", "pod-b"])
        .args(["-p", "tcp", "-s", "16000000", "-c", "2", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_exit(&mut child, 60);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["sent"], 2, "{report}");
    assert_eq!(report["answered"], 2, "{report}");
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
    // The Markdown reference is the checked-in docs/commands.md, byte for byte.
    let out = labctl(&["man", "--markdown"]);
    assert!(out.status.success());
    let checked_in =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/commands.md")).unwrap();
    assert!(
        out.stdout == checked_in,
        "labctl man --markdown differs from docs/commands.md: run `cargo xtask docs`"
    );
    usage_error(
        &["man", "--markdown", "labctl-trace"],
        "cannot be used with",
    );
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
    std::os::unix::fs::symlink(&victim, dir.path().join("rp-filter.handout.md")).unwrap();
    // The directory is created.
    let out_dir = dir.path().join("room");
    std::fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("rp-filter.handout.md")).unwrap();
    let out = labctl(&["exercise", "export", out_dir.to_str().unwrap(), "--hints"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let handout = std::fs::read_to_string(out_dir.join("rp-filter.handout.md")).unwrap();
    assert!(handout.starts_with("# ") && handout.contains("## Hints"));
    assert!(
        !handout.contains("labctl lab exec"),
        "no solution in a handout"
    );
    let notes = std::fs::read_to_string(out_dir.join("rp-filter.instructor.md")).unwrap();
    assert!(notes.contains("labctl lab exec") && notes.contains("Shortcuts"));
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        2 * ids.len(),
        "a handout and instructor notes per exercise"
    );
    let fresh = dir.path().join("new/handouts");
    let out = labctl(&["exercise", "export", fresh.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fresh.join("find-the-drop.instructor.md").is_file());
}

/// A file in a fresh directory, for `-f`.
fn policy_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn bad_policy_files_are_refused_with_their_field_and_line_before_anything() {
    const HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: rule1}\nspec:\n  endpointSelector: {matchLabels: {class: deathstar}}\n";
    let cases: &[(String, &str)] = &[
        (
            format!("{HEAD}  ingress:\n  - toPorts:\n    - ports: [{{port: \"80\"}}]\n      rules:\n        http: [{{method: POST}}]\n"),
            "policy.yaml:9: spec.ingress[0].toPorts[0].rules is not supported",
        ),
        (
            format!("{HEAD}  egress:\n  - toFQDNs: [{{matchName: api.github.com}}]\n"),
            "policy.yaml:7: spec.egress[0].toFQDNs is not supported",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n".into(),
            "policy.yaml:2: kind `Pod` is not a policy kind",
        ),
        (
            format!("{HEAD}  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - {{key: org, operator: Equals, values: [x]}}\n"),
            "policy.yaml:9: spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator must be In, NotIn",
        ),
        (
            format!("{HEAD}  ingress:\n  - fromCIDR: [10.0.0.0/40]\n"),
            "`10.0.0.0/40` is not a CIDR",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: http}]\n".into(),
            "policy.yaml:7: spec.ingress[0].ports[0].port `http` is a named port",
        ),
        ("# nothing\n".into(), "holds no policy"),
    ];
    for (text, says) in cases {
        let (_dir, path) = policy_file(text);
        for cmd in [
            &["policy", "apply", "-f", &path][..],
            &["policy", "delete", "-f", &path, "--lab", "no-such-lab"],
        ] {
            // As nobody: refused before privileges, so before any lab is
            // read or changed.
            let out = labctl_unprivileged(cmd);
            let stderr = common::said(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
            assert!(stderr.contains(says), "{cmd:?}: `{says}` not in: {stderr}");
            assert!(
                stderr.contains("nothing was changed") || says.contains("no policy"),
                "{stderr}"
            );
            assert!(out.stdout.is_empty());
        }
    }
    usage_error(
        &["policy", "apply", "-f", "/nonexistent/p.yaml"],
        "cannot read /nonexistent/p.yaml",
    );
    usage_error(
        &["policy", "apply", "-f", "/dev/null"],
        "not a regular file",
    );
    usage_error(&["policy", "apply"], "--file");
    usage_error(&["policy", "delete"], "NAMES");
    usage_error(
        &["policy", "delete", "a", "-f", "x.yaml"],
        "cannot be used with",
    );
}

#[test]
fn policy_and_label_arguments_are_checked_at_parse_time() {
    for (cmd, says) in [
        (
            &[
                "policy",
                "trace",
                "--from",
                "xwing",
                "--to",
                "deathstar-1",
                "--port",
                "0",
            ][..],
            "not a port",
        ),
        (
            &[
                "policy",
                "trace",
                "--from",
                "xwing",
                "--to",
                "deathstar-1",
                "--port",
                "80/icmp",
            ],
            "tcp, udp or sctp",
        ),
        (
            &["policy", "trace", "--from", "xwing", "--to", "deathstar-1"],
            "--port",
        ),
        (
            &[
                "policy",
                "trace",
                "--from",
                "xwing",
                "--to",
                "deathstar-1",
                "--port",
                "80",
                "--port",
                "53/udp",
            ],
            "only with --all",
        ),
        (
            &[
                "policy", "trace", "--all", "--from", "xwing", "--port", "80",
            ],
            "--from",
        ),
        (&["policy", "trace", "--all"], "--port"),
        (&["policy", "trace", "--port", "80"], "--from"),
        (
            &["policy", "trace", "--all", "--node", "--port", "80"],
            "--node",
        ),
        (
            &["lab", "pod", "label", "xwing", "org"],
            "neither KEY=VALUE",
        ),
        (
            &["lab", "pod", "label", "xwing", "org=no way"],
            "not a valid label value",
        ),
        (
            &["lab", "pod", "label", "xwing", "ba d=x"],
            "not a valid label key",
        ),
        (&["lab", "pod", "label", "xwing"], "<CHANGES>"),
        (
            &["lab", "up", "starwars", "--policy-mode", "calico"],
            "invalid value 'calico'",
        ),
        (
            &["lab", "up", "policy", "--policy-mode", "ebpf"],
            "writes its own netfilter rules",
        ),
        (&["policy", "list", "--lab", "Bad"], "is not valid"),
    ] {
        let out = labctl_unprivileged(cmd);
        let stderr = common::said(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(stderr.contains(says), "{cmd:?}: `{says}` not in {stderr}");
        assert!(!stderr.contains("sudo"), "{cmd:?}: {stderr}");
    }
}

#[test]
fn policy_map_views_refuse_conflicts_and_bad_lab_names() {
    usage_error(&["policy", "map", "7", "--cilium", "--lab", "a"], "--lab");
    usage_error(&["policy", "endpoints", "--cilium", "--lab", "a"], "--lab");
    usage_error(&["policy", "identities", "--cilium", "--lab", "a"], "--lab");
    usage_error(&["policy", "map"], "POD");
    for cmd in [
        &["policy", "identities", "--lab", "../x"][..],
        &["policy", "endpoints", "--lab", "a/b"],
        &["policy", "map", "deathstar-1", "--lab", ".."],
    ] {
        usage_error(cmd, "is not valid");
    }
}

#[test]
fn policy_drop_reasons_are_explained_and_listed_with_cilium_s_numbers() {
    let out = labctl_unprivileged(&["explain", "policy_denied", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::said(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["reason"].as_str(), v["code"].as_u64()),
        (Some("POLICY_DENIED"), Some(133))
    );
    assert!(v["meaning"].as_str().unwrap().contains("default deny"));
    let out = labctl_unprivileged(&["explain", "POLICY_DENY"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("POLICY_DENY (Cilium's code 181"), "{text}");
    let out = labctl_unprivileged(&["explain", "--list", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let listed: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| {
            v["name"].as_str().is_some_and(|n| n.starts_with("POLICY_"))
        })
        .collect();
    assert_eq!(
        listed,
        [
            serde_json::json!({"code": 133, "name": "POLICY_DENIED", "explained": true}),
            serde_json::json!({"code": 181, "name": "POLICY_DENY", "explained": true}),
        ]
    );
}

#[test]
fn cni_refuses_bad_options_and_answers_a_bare_call_with_a_cni_error() {
    usage_error(&["cni", "log", "--last", "0"], "0");
    usage_error(&["cni", "log", "-o", "yaml"], "yaml");
    usage_error(&["cni", "frob"], "frob");
    // Called by hand without the contract: a CNI error object (code 4) on
    // stdout, exit 1, at once (stdin is not read).
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .arg("cni")
        .env_remove("CNI_COMMAND")
        .env("LABCTL_CNI_LOG_DIR", "/nonexistent-c28/log")
        .stdin(std::process::Stdio::piped())
        .output()
        .expect("run labctl");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["code"], 4);
    assert!(
        v["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("CNI_COMMAND")
    );
}
