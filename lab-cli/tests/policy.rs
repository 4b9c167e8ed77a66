//! Network policy on a live lab, through the `labctl` binary: the
//! starwars scenario with a policy mode, relabelled pods, policies applied,
//! listed, traced and deleted, bad input refused with nothing changed, and
//! nothing left after `lab down`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;
#[path = "common/policy.rs"]
mod matrix;

use std::process::{Command, Output};

use serde_json::Value;

fn labctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(args)
        .output()
        .expect("run labctl")
}

/// Runs labctl, expects exit 0, returns its JSON (one document, or one per
/// line as an array).
#[track_caller]
fn json(args: &[&str]) -> Value {
    let out = labctl(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        common::said(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => Value::Array(
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
        ),
    }
}

/// Runs labctl, expects exit 2 and `says` on stderr.
#[track_caller]
fn refused(args: &[&str], says: &str) {
    let out = labctl(args);
    let stderr = common::said(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: `{says}` not in: {stderr}");
}

/// Tears the lab down at the end, whatever happened.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        if lab_cli::lab::state::LabState::load(&self.0)
            .ok()
            .flatten()
            .is_some()
            && let Err(e) = lab_cli::lab::down(Some(&self.0))
        {
            eprintln!("tearing down {}: {e}", self.0);
        }
    }
}

const POLICIES: &str = r#"# Cilium's getting-started rule, and DNS for the xwing
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
spec:
  description: L3-L4 policy to restrict deathstar access to empire ships only
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: dns-only
spec:
  podSelector:
    matchLabels: {class: xwing}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
    ports: [{port: 53, protocol: UDP}]
"#;

fn record(lab: &str) -> String {
    std::fs::read_to_string(lab_cli::lab::state::LabState::path(lab)).unwrap()
}

fn trace(lab: &str, from: &str, to: &str, port: &str) -> Value {
    json(&[
        "policy", "trace", "--from", from, "--to", to, "--port", port, "--lab", lab, "-o", "json",
    ])
}

#[test]
fn starwars_records_its_policy_mode_labels_and_policies_and_leaves_nothing() {
    if !common::privileged(
        "starwars_records_its_policy_mode_labels_and_policies_and_leaves_nothing",
    ) {
        return;
    }
    let lab = common::lab_name("pol");
    let _down = Down(lab.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("starwars.yaml");
    std::fs::write(&file, POLICIES).unwrap();
    let file = file.display().to_string();

    // Up with a policy mode: recorded, shown by status.
    let up = json(&[
        "lab",
        "up",
        "starwars",
        "--name",
        &lab,
        "--policy-mode",
        "ebpf",
        "-o",
        "json",
    ]);
    assert_eq!(up["options"]["policy_mode"], "ebpf");
    let rec: Value = serde_json::from_str(&record(&lab)).unwrap();
    assert_eq!(rec["options"]["policy_mode"], "ebpf");
    let status = json(&["lab", "status", &lab, "-o", "json"]);
    assert_eq!(status[0]["policy_mode"], "ebpf");
    let member = |s: &Value, name: &str| {
        s[0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(member(&status, "coredns")["namespace"], "kube-system");
    assert_eq!(member(&status, "xwing")["labels"]["org"], "alliance");
    assert_eq!(
        member(&status, "deathstar-2")["labels"]["class"],
        "deathstar"
    );
    // A pod by LAB/NAMESPACE/POD, in another command.
    let out = labctl(&[
        "lab",
        "exec",
        &format!("{lab}/kube-system/coredns"),
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::said(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.244.2.4/24"));

    // Apply: both policies recorded, each with the pods it selects.
    let applied = json(&["policy", "apply", "-f", &file, "--lab", &lab, "-o", "json"]);
    let actions: Vec<(String, String)> = applied["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["policy"]["name"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("rule1".into(), "created".into()),
            ("dns-only".into(), "created".into())
        ]
    );
    assert_eq!(
        applied["applied"][0]["selects"],
        serde_json::json!([format!("{lab}/deathstar-1"), format!("{lab}/deathstar-2")])
    );
    let listed = json(&["policy", "list", "--lab", &lab, "-o", "json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dns-only", "rule1"]);
    assert_eq!(
        listed[0]["selects"],
        serde_json::json!([format!("{lab}/xwing")])
    );
    // Applying it again changes nothing.
    let again = json(&["policy", "apply", "-f", &file, "--lab", &lab, "-o", "json"]);
    assert!(
        again["applied"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged")
    );

    // Traces: the xwing is held by dns-only at its egress (and rule1
    // would turn it away at the deathstar), the tiefighter lands;
    // identities as Cilium numbers them.
    let t = trace(&lab, "xwing", "deathstar-1", "80");
    assert_eq!(t["verdict"]["allowed"], false);
    assert_eq!(t["verdict"]["drop_reason"], "POLICY_DENIED");
    assert_eq!(t["verdict"]["decided_by"], "egress");
    assert_eq!(t["verdict"]["ingress"]["outcome"], "default-denied");
    assert_eq!(t["verdict"]["ingress"]["selected_by"][0]["name"], "rule1");
    assert_eq!(
        (t["from"]["identity"].as_u64(), t["to"]["identity"].as_u64()),
        (Some(258), Some(256))
    );
    let t = trace(&lab, "tiefighter", "deathstar-2", "80/tcp");
    assert_eq!(t["verdict"]["allowed"], true);
    assert_eq!(t["verdict"]["ingress"]["rule"]["policy"]["name"], "rule1");
    let t = trace(
        &lab,
        "xwing",
        &format!("{lab}/kube-system/coredns"),
        "53/udp",
    );
    assert_eq!(t["verdict"]["allowed"], true);
    assert_eq!(t["verdict"]["egress"]["rule"]["policy"]["name"], "dns-only");
    let t = trace(&lab, "xwing", "203.0.113.10", "443");
    assert_eq!(t["verdict"]["decided_by"], "egress");
    assert_eq!(t["to"]["identity"], 2);

    // Bad input: exit 2, the record untouched.
    let before = record(&lab);
    let l7 = dir.path().join("l7.yaml");
    std::fs::write(&l7, POLICIES.replace("    - ports: [{port: \"80\", protocol: TCP}]\n", "    - ports: [{port: \"80\", protocol: TCP}]\n      rules:\n        http: [{method: POST, path: /v1/request-landing}]\n")).unwrap();
    refused(
        &["policy", "apply", "-f", l7.to_str().unwrap(), "--lab", &lab],
        "l7.yaml:15: spec.ingress[0].toPorts[0].rules is not supported",
    );
    let rebels = dir.path().join("rebels.yaml");
    std::fs::write(
        &rebels,
        POLICIES.replace(
            "  name: dns-only\n",
            "  name: dns-only\n  namespace: rebels\n",
        ),
    )
    .unwrap();
    refused(
        &[
            "policy",
            "apply",
            "-f",
            rebels.to_str().unwrap(),
            "--lab",
            &lab,
        ],
        "namespace `rebels` does not exist",
    );
    refused(
        &["lab", "pod", "label", "xwing", "org=empire", "--lab", &lab],
        "already has a value (alliance)",
    );
    refused(
        &["lab", "pod", "label", "xwing", "color-", "--lab", &lab],
        "has no label `color`",
    );
    refused(
        &[
            "lab",
            "pod",
            "label",
            &format!("{lab}/kube-system/xwing"),
            "a=b",
        ],
        "not a member",
    );
    refused(
        &["policy", "delete", "rule1", "no-such-policy", "--lab", &lab],
        "no policy `no-such-policy`",
    );
    refused(
        &[
            "policy",
            "trace",
            "--from",
            "10.1.0.0/16",
            "--to",
            "8.8.8.8",
            "--port",
            "80",
            "--lab",
            &lab,
        ],
        "needs a pod",
    );
    assert_eq!(record(&lab), before, "a refused command changed the record");

    // Relabel: the xwing defects; a new label set is a new identity, its
    // old one is released, and rule1 now lets it land.
    let r = json(&[
        "lab",
        "pod",
        "label",
        "xwing",
        "org=empire",
        "--overwrite",
        "--lab",
        &lab,
        "-o",
        "json",
    ]);
    assert_eq!(
        (r["identity_before"].as_u64(), r["identity_after"].as_u64()),
        (Some(258), Some(260))
    );
    assert_eq!(r["change"]["allocated"], serde_json::json!([260]));
    assert_eq!(r["change"]["released"], serde_json::json!([258]));
    assert_eq!(r["after"]["org"], "empire");
    let t = trace(&lab, "xwing", "deathstar-1", "80");
    assert_eq!(t["verdict"]["ingress"]["outcome"], "allowed");
    assert_eq!(t["verdict"]["decided_by"], "egress");
    let status = json(&["lab", "status", &lab, "-o", "json"]);
    assert_eq!(member(&status, "xwing")["labels"]["org"], "empire");
    // By LAB/NAMESPACE/POD, removing a label: the class goes, dns-only no
    // longer selects it; numbers are never reused.
    let r = json(&[
        "lab",
        "pod",
        "label",
        &format!("{lab}/default/xwing"),
        "class-",
        "-o",
        "json",
    ]);
    assert_eq!(r["identity_after"], 261);
    assert_eq!(r["selected_before"][0]["name"], "dns-only");
    assert_eq!(r["selected_after"], serde_json::json!([]));
    assert_eq!(
        trace(&lab, "xwing", "deathstar-1", "80")["verdict"]["allowed"],
        true
    );
    // Back to its first labels: the record forgets the override.
    json(&[
        "lab",
        "pod",
        "label",
        "xwing",
        "org=alliance",
        "class=xwing",
        "--overwrite",
        "--lab",
        &lab,
        "-o",
        "json",
    ]);
    let rec: Value = serde_json::from_str(&record(&lab)).unwrap();
    assert!(rec.get("labels").is_none(), "{rec}");
    assert_eq!(
        trace(&lab, "xwing", "deathstar-1", "80")["from"]["identity"],
        262
    );

    // Delete by name, then by kind/namespace/name.
    let d = json(&[
        "policy",
        "delete",
        "default/rule1",
        "--lab",
        &lab,
        "-o",
        "json",
    ]);
    assert_eq!(d["deleted"][0]["name"], "rule1");
    let t = trace(&lab, "xwing", "deathstar-1", "80");
    assert_eq!(t["verdict"]["ingress"]["outcome"], "not-selected");
    json(&[
        "policy",
        "delete",
        "netpol/default/dns-only",
        "--lab",
        &lab,
        "-o",
        "json",
    ]);
    assert_eq!(
        json(&["policy", "list", "--lab", &lab, "-o", "json"]),
        Value::Array(vec![])
    );
    // And -f: apply, delete what the file defines.
    json(&["policy", "apply", "-f", &file, "--lab", &lab, "-o", "json"]);
    let d = json(&["policy", "delete", "-f", &file, "--lab", &lab, "-o", "json"]);
    assert_eq!(d["deleted"].as_array().unwrap().len(), 2);

    // Down: no namespace, no record left.
    json(&["lab", "down", &lab, "-o", "json"]);
    assert!(lab_cli::lab::state::LabState::load(&lab).unwrap().is_none());
    let left: Vec<String> = std::fs::read_dir(lab_cli::kernel::netns::NETNS_RUN_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.starts_with(&format!("{lab}-"))),
        "left behind: {left:?}"
    );
}

/// The fixtures' NetworkPolicy sets, enforced by nft rules in the nodes:
/// real traffic gives each set's expected matrix, and connectivity comes
/// back when the set is deleted.
#[test]
fn netfilter_mode_gives_every_fixture_matrix_with_real_traffic() {
    if !common::privileged("netfilter_mode_gives_every_fixture_matrix_with_real_traffic") {
        return;
    }
    let ran = matrix::run_matrix(lab_cli::policy::PolicyMode::Netfilter, "pnm");
    // Every NetworkPolicy set (the CiliumNetworkPolicy ones are refused).
    assert_eq!(ran.len(), 8, "{ran:?}");
}
