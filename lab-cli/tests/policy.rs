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
    assert_eq!(ran.len(), 10, "{ran:?}");
}

#[test]
fn ebpf_mode_gives_every_fixture_matrix_with_real_traffic() {
    if !common::privileged("ebpf_mode_gives_every_fixture_matrix_with_real_traffic") {
        return;
    }
    let ran = matrix::run_matrix(lab_cli::policy::PolicyMode::Ebpf, "pem");
    // Every set: NetworkPolicy and CiliumNetworkPolicy alike.
    assert_eq!(ran.len(), 14, "{ran:?}");
}

/// `nft` in a lab node: its output, or None when nft refused.
fn nft_in(ns: &lab_cli::kernel::netns::NetNs, args: &[&str]) -> Option<String> {
    lab_cli::kernel::tool::run(ns, "nft", args, None).ok()
}

fn node_ns(lab: &lab_cli::lab::Lab, i: usize) -> lab_cli::kernel::netns::NetNs {
    lab_cli::kernel::netns::NetNs::open(&lab.plan.nodes[i].netns).unwrap()
}

/// The policy table of every node, as nft lists it (None: no table).
fn tables(lab: &lab_cli::lab::Lab) -> Vec<Option<String>> {
    (0..lab.plan.nodes.len())
        .map(|i| nft_in(&node_ns(lab, i), &["list", "table", "ip", "labctl-policy"]))
        .collect()
}

/// The default deny of chain `chain`: the mark it sets and its packets.
fn default_deny(ns: &lab_cli::kernel::netns::NetNs, chain: &str) -> (u64, u64) {
    let text = nft_in(ns, &["-j", "list", "chain", "ip", "labctl-policy", chain]).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let rule = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("rule"))
        .next_back()
        .unwrap();
    let exprs = rule["expr"].as_array().unwrap();
    let mark = exprs
        .iter()
        .find_map(|e| e.get("mangle"))
        .expect("the default deny sets the mark")["value"]
        .as_u64()
        .unwrap();
    let packets = exprs.iter().find_map(|e| e.get("counter")).unwrap()["packets"]
        .as_u64()
        .unwrap();
    assert!(exprs.iter().any(|e| e.get("drop").is_some()), "{rule}");
    (mark, packets)
}

/// Sends `n` UDP datagrams from pod `from` to `to`:`port`, once each.
fn send_udp(lab: &lab_cli::lab::Lab, from: &str, to: &str, port: u16, n: usize) {
    let (ns, _) = matrix::pod(lab, from);
    let (_, addr) = matrix::pod(lab, to);
    ns.run(|| {
        let s = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        for _ in 0..n {
            s.send_to(b"denied", (addr, port)).unwrap();
        }
    })
    .unwrap();
}

/// Waits (2 s at most) until the default deny of `chain` counted `want`.
#[track_caller]
fn wait_denied(ns: &lab_cli::kernel::netns::NetNs, chain: &str, want: u64) -> (u64, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let got = default_deny(ns, chain);
        if got.1 >= want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Everything around the matrix in netfilter mode: the plan (shown, dry
/// run, JSON), what one relabelled pod rewrites on every node and how its
/// verdicts follow, the verdict mark on denied packets (counted exactly),
/// bad YAML refused with no rule changed, `policy apply` killed between
/// two nodes (the record claims nothing; the next apply writes only what
/// is missing), a removed table restored by the next command, and nothing
/// left after `lab down`.
#[test]
fn netfilter_mode_plans_relabels_marks_refuses_and_recovers() {
    if !common::privileged("netfilter_mode_plans_relabels_marks_refuses_and_recovers") {
        return;
    }
    use lab_cli::policy::PolicyMode;
    let lab = matrix::starwars(PolicyMode::Netfilter, "pnf");
    let name = lab.name().to_owned();
    let _servers = matrix::Servers::start(&lab);
    let fx = |f: &str| {
        matrix::fixtures_dir()
            .join(format!("{f}.yaml"))
            .display()
            .to_string()
    };
    let expected_row = |f: &str, row: &str| {
        matrix::fixture(std::path::Path::new(&fx(f)))
            .expected(PolicyMode::Netfilter)
            .unwrap()
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap()
            .to_owned()
            + "\n"
    };
    let open_row = |row: &str| {
        matrix::open_matrix()
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap()
            .to_owned()
            + "\n"
    };
    let lab_up_tables = tables(&lab);
    assert!(
        lab_up_tables
            .iter()
            .all(|t| t.as_deref().is_some_and(|t| t.contains("chain forward"))),
        "lab up installs the table in every node: {lab_up_tables:?}"
    );

    // A dry run prints the plan and changes nothing.
    let and = fx("04-and-in-one-peer");
    let out = labctl(&["policy", "apply", "-f", &and, "--lab", &name, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::said(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("add rule ip labctl-policy ingress-deathstar-1 ip saddr @peers-")
            && text.contains("dry run"),
        "{text}"
    );
    assert_eq!(tables(&lab), lab_up_tables, "a dry run changed rules");
    assert!(json(&["policy", "list", "--lab", &name, "-o", "json"]) == Value::Array(vec![]));

    // Applied: one transaction per node, in nft's syntax, counted.
    let applied = json(&["policy", "apply", "-f", &and, "--lab", &name, "-o", "json"]);
    assert_eq!(applied["enforced"], true);
    assert_eq!(applied["unit"], "nft rules and set elements");
    let parts = applied["plan"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (part, pod) in parts.iter().zip(["deathstar-1", "deathstar-2"]) {
        let lines: Vec<&str> = part["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        // A set (xwing's address), a chain of two rules, a jump.
        assert_eq!(part["changes"], 1 + 2 + 1, "{lines:?}");
        assert!(
            lines.contains(&format!("add chain ip labctl-policy ingress-{pod}").as_str()),
            "{lines:?}"
        );
        eprintln!(
            "{}: {} changes\n  {}",
            part["target"],
            part["changes"],
            lines.join("\n  ")
        );
    }
    assert_eq!(
        matrix::observe_rows(&lab, &["tf"]),
        expected_row("04-and-in-one-peer", "tf")
    );
    // `policy trace` names the rule that dropped those probes, and its
    // counter saw them.
    let t = trace(&name, "tiefighter", "deathstar-1", "80/tcp");
    assert_eq!(t["verdict"]["allowed"], false);
    let ingress = &t["datapath"][1];
    assert_eq!(
        ingress["place"],
        "table ip labctl-policy chain ingress-deathstar-1"
    );
    assert!(
        ingress["entry"]
            .as_str()
            .unwrap()
            .starts_with("rule \"default deny: deathstar-1 ingress")
            && ingress["allows"] == false
            && ingress["packets"].as_u64().unwrap() > 0,
        "{t}"
    );
    let t = trace(&name, "xwing", "deathstar-2", "80/tcp");
    assert_eq!(t["verdict"]["allowed"], true);
    assert_eq!(
        t["datapath"][1]["entry"],
        "rule \"default/xwing-only ingress[0]\""
    );
    assert_eq!(t["datapath"][1]["present"], true);
    // The same again writes nothing.
    let again = json(&["policy", "apply", "-f", &and, "--lab", &name, "-o", "json"]);
    assert_eq!(again["changes"], 0, "{again}");

    // Relabelled, the tiefighter is an xwing to the policy: the set of
    // peers changes on every node that holds a deathstar.
    let r = json(&[
        "lab",
        "pod",
        "label",
        "tiefighter",
        "class=xwing",
        "--overwrite",
        "--lab",
        &name,
        "-o",
        "json",
    ]);
    let churn: Vec<u64> = r["enforced"]["plan"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["changes"].as_u64().unwrap())
        .collect();
    eprintln!(
        "relabel churn per node: {churn:?} {}",
        r["enforced"]["plan"]
    );
    assert_eq!(churn, [1, 1], "one set element on each node");
    let mut row = expected_row("04-and-in-one-peer", "tf");
    // Now allowed to both deathstars (columns 0 and 1 of each block).
    row = row
        .trim_end()
        .split(' ')
        .map(|b| {
            if b.len() == 5 {
                format!("AA{}", &b[2..])
            } else {
                b.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        + "\n";
    assert_eq!(matrix::observe_rows(&lab, &["tf"]), row);
    json(&[
        "lab",
        "pod",
        "label",
        "tiefighter",
        "class=tiefighter",
        "--overwrite",
        "--lab",
        &name,
        "-o",
        "json",
    ]);
    assert_eq!(
        matrix::observe_rows(&lab, &["tf"]),
        expected_row("04-and-in-one-peer", "tf")
    );

    // Denied packets carry the verdict mark: N datagrams, N counted by
    // the default deny that marks them (ingress here).
    let node2 = node_ns(&lab, 1);
    let (mark, before) = default_deny(&node2, "ingress-deathstar-2");
    assert_eq!(mark, u64::from(lab_common::verdict::mark(false, false)));
    send_udp(&lab, "coredns", "deathstar-2", 80, 3);
    assert_eq!(
        wait_denied(&node2, "ingress-deathstar-2", before + 3).1,
        before + 3
    );
    json(&["policy", "delete", "-f", &and, "--lab", &name, "-o", "json"]);
    // And egress.
    let egress = fx("06-match-expressions-egress");
    json(&[
        "policy", "apply", "-f", &egress, "--lab", &name, "-o", "json",
    ]);
    let node1 = node_ns(&lab, 0);
    let (mark, before) = default_deny(&node1, "egress-tiefighter");
    assert_eq!(mark, u64::from(lab_common::verdict::mark(true, false)));
    send_udp(&lab, "tiefighter", "xwing", 80, 4);
    assert_eq!(
        wait_denied(&node1, "egress-tiefighter", before + 4).1,
        before + 4
    );

    // Bad YAML: exit 2, no rule changed on any node.
    let held = tables(&lab);
    let dir = tempfile::tempdir().unwrap();
    let np = |spec: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad}}\nspec:\n{spec}"
        )
    };
    for (file, yaml) in [
        ("kind.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicies\nmetadata: {name: bad}\nspec: {podSelector: {}}\n".to_owned()),
        ("named-port.yaml", np("  podSelector: {}\n  ingress:\n  - ports: [{port: http}]\n")),
        ("selector.yaml", np("  podSelector:\n    matchExpressions: [{key: org, operator: Maybe, values: [x]}]\n")),
        ("cidr.yaml", np("  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n")),
        ("cnp.yaml", std::fs::read_to_string(fx("03-cilium-rule1")).unwrap()),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        let out = labctl(&["policy", "apply", "-f", path.to_str().unwrap(), "--lab", &name]);
        let said = common::said(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {said}");
        assert!(said.contains(file), "{file}: the sentence names the file: {said}");
        eprintln!("{file}: {said}");
    }
    assert_eq!(tables(&lab), held, "refused YAML changed a rule");

    // Killed between its two nodes' transactions: node1 holds the change,
    // node2 does not, the record claims nothing; the next apply writes
    // only what node2 misses.
    json(&[
        "policy", "delete", "-f", &egress, "--lab", &name, "-o", "json",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["policy", "apply", "-f", &and, "--lab", &name])
        .env(lab_cli::policy::nft::NODE_DELAY_ENV, "5000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tables(&lab)[0]
        .as_deref()
        .is_some_and(|t| t.contains("chain ingress-deathstar-1"))
    {
        assert!(std::time::Instant::now() < deadline, "node1 never written");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    common::signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    assert!(
        !tables(&lab)[1]
            .as_deref()
            .unwrap()
            .contains("chain ingress-deathstar-2"),
        "killed before node2"
    );
    assert_eq!(
        json(&["policy", "list", "--lab", &name, "-o", "json"]),
        Value::Array(vec![]),
        "the record claims nothing"
    );
    let recovered = json(&["policy", "apply", "-f", &and, "--lab", &name, "-o", "json"]);
    let per_node: Vec<u64> = recovered["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["changes"].as_u64().unwrap())
        .collect();
    assert_eq!(per_node, [0, 4], "only what node2 missed: {recovered}");
    assert_eq!(
        matrix::observe_rows(&lab, &["tf"]),
        expected_row("04-and-in-one-peer", "tf")
    );

    // A node's table removed behind labctl's back: the next command
    // rebuilds it whole.
    let nodes = lab_cli::lab::policy::nodes(&lab.plan).unwrap();
    use lab_cli::policy::datapath::PolicyDatapath as _;
    lab_cli::policy::nft::Netfilter::new(nodes)
        .teardown()
        .unwrap();
    assert_eq!(tables(&lab), [None, None], "teardown leaves no table");
    assert_eq!(matrix::observe_rows(&lab, &["tf"]), open_row("tf"));
    json(&["policy", "apply", "-f", &and, "--lab", &name, "-o", "json"]);
    assert_eq!(
        matrix::observe_rows(&lab, &["tf"]),
        expected_row("04-and-in-one-peer", "tf")
    );

    // A node that refuses its transaction (an `nft` that fails for
    // node2's chain): exit 1, nothing recorded, node1 set back.
    json(&["policy", "delete", "-f", &and, "--lab", &name, "-o", "json"]);
    let before = tables(&lab);
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("nft");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ninput=$(cat)\nif [ \"$1\" = -f ] && printf '%s' \"$input\" | grep -q ingress-deathstar-2; then echo 'Error: refused by the test' >&2; exit 1; fi\nprintf '%s' \"$input\" | exec {} \"$@\"\n",
            which::which("nft").unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args(["policy", "apply", "-f", &and, "--lab", &name])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    let said = common::said(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("refused by the test")
            && said
                .contains("nothing was recorded, and the nodes hold the previous policies again"),
        "{said}"
    );
    assert_eq!(tables(&lab), before, "node1 set back");
    assert_eq!(
        json(&["policy", "list", "--lab", &name, "-o", "json"]),
        Value::Array(vec![])
    );

    // Down: nothing left.
    let namespaces: Vec<String> = lab
        .plan
        .namespaces()
        .into_iter()
        .map(str::to_owned)
        .collect();
    drop(_servers);
    lab.down().unwrap();
    for ns in namespaces {
        assert!(!common::netns_exists(&ns), "{ns} left behind");
    }
}

/// `lab up --policy-mode netfilter` killed once its nodes have their
/// policy table: `lab down` removes everything.
#[test]
fn netfilter_lab_up_killed_is_taken_down_whole() {
    if !common::privileged("netfilter_lab_up_killed_is_taken_down_whole") {
        return;
    }
    let name = common::lab_name("pnk");
    let _down = Down(name.clone());
    let mut up = Command::new(env!("CARGO_BIN_EXE_labctl"))
        .args([
            "lab",
            "up",
            "starwars",
            "--policy-mode",
            "netfilter",
            "--name",
            &name,
        ])
        .env(lab_cli::lab::up::STEP_DELAY_ENV, "50")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node1 = format!("{name}-node1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let table = common::netns_exists(&node1)
            && lab_cli::kernel::netns::NetNs::open(&node1)
                .ok()
                .and_then(|ns| nft_in(&ns, &["list", "table", "ip", "labctl-policy"]))
                .is_some();
        if table {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "up never wrote its policy table"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    common::signal(&up, nix::sys::signal::Signal::SIGKILL);
    common::wait_exit(&mut up, 10);
    let out = labctl(&["lab", "down", &name]);
    assert_eq!(out.status.code(), Some(0), "{}", common::said(&out.stderr));
    for m in [
        "world",
        "node1",
        "node2",
        "deathstar-1",
        "deathstar-2",
        "tiefighter",
        "xwing",
        "coredns",
    ] {
        assert!(!common::netns_exists(&format!("{name}-{m}")), "{m} left");
    }
    assert!(
        lab_cli::lab::state::LabState::load(&name)
            .unwrap()
            .is_none()
    );
}
