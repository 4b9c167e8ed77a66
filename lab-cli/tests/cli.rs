//! The `labctl` binary: exit codes, JSON output, error messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::process::Command;

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

/// Runs labctl as `nobody` with no capabilities, as an unprivileged learner.
fn unprivileged(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_labctl"))
        .args(args)
        .output()
}

#[test]
fn bad_usage_exits_2() {
    let out = labctl().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn doctor_json_reports_every_core_check_ok_here() {
    if !common::privileged("doctor_json_reports_every_core_check_ok_here") {
        return;
    }
    let out = labctl()
        .args(["doctor", "--output", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["required"] == true && c["ok"] != true)
        .collect();
    assert!(failed.is_empty(), "failed core checks: {failed:#?}");
    assert_eq!(report["ok"], true);
    assert_eq!(out.status.code(), Some(0));
    // Optional program types are reported either way, never crash doctor.
    for name in [
        "program type kprobe",
        "program type fentry",
        "program type tp_btf",
    ] {
        assert!(checks.iter().any(|c| c["name"] == name), "{name} missing");
    }
}

#[test]
fn without_privileges_demo_says_what_is_missing_and_exits_3() {
    if !common::privileged("without_privileges_demo_says_what_is_missing_and_exits_3") {
        return;
    }
    let out = unprivileged(&["demo"]);
    let Ok(out) = out else {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(
        stderr.contains("needs CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON"),
        "{stderr}"
    );
    assert!(stderr.contains("try: sudo labctl demo"), "{stderr}");
    // The lab commands name what they need too, and build nothing.
    let out = unprivileged(&["lab", "up", "basic", "--name", "nopriv"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("needs CAP_SYS_ADMIN + CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert!(!common::netns_exists("nopriv-world"));
}

#[test]
fn lab_bad_input_is_one_sentence_and_exit_2() {
    if !common::privileged("lab_bad_input_is_one_sentence_and_exit_2") {
        return;
    }
    let out = labctl().args(["lab", "up", "no-such"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "unknown scenario `no-such`; the scenarios are: basic, two-node, overlay, drops, policy"
        ),
        "{stderr}"
    );
    let out = labctl()
        .args(["lab", "up", "basic", "--name", "Bad_Name"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lab name `Bad_Name` is not valid"));
    let out = labctl()
        .args(["lab", "status", "no-such-lab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lab `no-such-lab` is not up"));
}

#[test]
fn lab_cli_round_trip_with_exec_exit_codes_and_json_status() {
    if !common::privileged("lab_cli_round_trip_with_exec_exit_codes_and_json_status") {
        return;
    }
    let name = common::lab_name("cli");
    let up = labctl()
        .args(["lab", "up", "basic", "--name", &name])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let exec = |args: &[&str]| {
        labctl()
            .args(["lab", "exec", "--lab", &name, "pod-a", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let addr = exec(&["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&addr.stdout).trim(), "1500");
    assert_eq!(exec(&["sh", "-c", "exit 7"]).status.code(), Some(7));
    let traffic = labctl()
        .args([
            "lab", "traffic", "--lab", &name, "pod-a", "world", "-p", "udp", "-o", "json",
        ])
        .output()
        .unwrap();
    assert_eq!(traffic.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&traffic.stdout).unwrap();
    assert_eq!(report["answered"], 3);
    assert_eq!(report["server_saw"]["172.18.0.2"], 3);
    // Unanswered probes: exit 1, like ping.
    let refused = labctl()
        .args([
            "lab",
            "traffic",
            "--lab",
            &name,
            "pod-a",
            "198.51.100.1",
            "--timeout",
            "0.2",
            "-c",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let status = labctl()
        .args(["lab", "status", &name, "-o", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let members = status[0]["members"].as_array().unwrap();
    let node = members.iter().find(|m| m["name"] == "node1").unwrap();
    assert!(node["ruleset"].as_str().unwrap().contains("masquerade"));
    let down = labctl().args(["lab", "down", &name]).output().unwrap();
    assert!(down.status.success());
    assert!(!common::netns_exists(&format!("{name}-pod-a")));
}

#[test]
fn demo_traces_every_planted_fault_and_leaves_nothing() {
    if !common::privileged("demo_traces_every_planted_fault_and_leaves_nothing") {
        return;
    }
    let out = labctl().args(["demo", "--count", "7"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (fault, reason) in [
        ("closed-port", "NO_SOCKET"),
        ("policy", "NETFILTER_DROP"),
        ("rp-filter", "IP_RPFILTER"),
        ("no-route", "IP_INNOROUTES"),
        ("too-big", "PKT_TOO_BIG"),
        ("bad-csum", "TCP_CSUM"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!(" {fault} ")) && l.contains("kernel counted"))
            .unwrap_or_else(|| panic!("no verdict for {fault}:\n{stdout}"));
        assert!(line.contains('✓') && line.contains(reason), "{line}");
        assert!(line.contains("sent   7"), "{line}");
        // The explanation of each reason is printed.
        assert!(
            stdout.contains(&format!("{reason} len")),
            "{reason} never traced"
        );
    }
    assert!(stdout.contains("what: "));
    for member in ["world", "node1", "pod-a", "pod-b"] {
        assert!(!common::netns_exists(&format!("labctl-demo-{member}")));
    }
}

#[test]
fn lab_up_without_nft_says_how_to_install_it_and_builds_nothing() {
    if !common::privileged("lab_up_without_nft_says_how_to_install_it_and_builds_nothing") {
        return;
    }
    let name = common::lab_name("nonft");
    let out = labctl()
        .args(["lab", "up", "basic", "--name", &name])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the `nft` command was not found; install nftables"),
        "{stderr}"
    );
    assert!(!common::netns_exists(&format!("{name}-world")));
}
