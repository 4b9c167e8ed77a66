//! The `labctl` binary: exit codes, JSON output, error messages.

mod common;

use std::process::Command;

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
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
    // Drop to `nobody` with no capabilities, as an unprivileged learner.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_labctl"))
        .arg("demo")
        .output();
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
}
