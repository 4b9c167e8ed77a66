//! An exercise as data: what a TOML file under `exercises/` declares.
//!
//! Strings may hold `{name}` placeholders for the attempt's randomized
//! parameters (and `{lab}`); they are filled in before anything runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lab::{plan::LabOptions, traffic::Proto};

impl Exercise {
    /// The lab's options, `kube_proxy` included.
    pub fn lab_options(&self) -> Result<LabOptions, String> {
        let mut options = self.options.clone();
        if let Some(mode) = &self.kube_proxy {
            options.kube_proxy = Some(
                <crate::services::KubeProxyMode as clap::ValueEnum>::from_str(mode, true)
                    .map_err(|_| format!("kube_proxy `{mode}` is not a mode"))?,
            );
        }
        Ok(options)
    }
}

/// One exercise file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    pub id: String,
    pub title: String,
    /// The concept it teaches (one line).
    pub concept: String,
    pub difficulty: Difficulty,
    /// About how long a learner needs.
    pub minutes: u32,
    /// The lab scenario to build, and its options.
    pub scenario: String,
    #[serde(default)]
    pub options: LabOptions,
    /// Who implements the scenario's services (`iptables`, `nftables`,
    /// `ebpf`, `ebpf-socket`): a string, so a parameter can choose it.
    #[serde(default)]
    pub kube_proxy: Option<String>,
    /// Randomized per attempt: each picks one of its choices.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// What `start` (and `reset`) does to the lab to break it.
    #[serde(rename = "break")]
    pub breaks: Vec<Action>,
    /// Symptoms as a learner meets them, never the cause.
    pub story: String,
    pub tasks: Vec<Task>,
    /// Shortcuts that make the tasks pass without fixing the problem.
    #[serde(default)]
    pub guards: Vec<Guard>,
    /// Progressive: symptom, concept, where to look, the tool.
    pub hints: Vec<String>,
    /// The reference solution: prose, then the commands.
    pub solution: Solution,
    /// A destructive shortcut a guard must catch (run by the tests).
    #[serde(default)]
    pub shortcut: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
}

/// A randomized parameter: one choice per attempt. A choice is a value, or
/// a table setting several placeholders at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub choices: Vec<Choice>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Choice {
    Value(ChoiceValue),
    Table(BTreeMap<String, ChoiceValue>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ChoiceValue {
    Int(i64),
    Str(String),
}

impl ChoiceValue {
    pub fn text(&self) -> String {
        match self {
            ChoiceValue::Int(i) => i.to_string(),
            ChoiceValue::Str(s) => s.clone(),
        }
    }
}

/// A change to the lab: a shell command run inside a member's namespace
/// (as `labctl lab exec MEMBER -- sh -c RUN`), or a labctl setting of the
/// running lab (`nat_ports`: as `labctl masq config --nat-ports`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "in")]
    pub member: String,
    #[serde(default)]
    pub run: Option<String>,
    /// eBPF masquerading's port range for the whole lab, e.g. `32768-60999`.
    #[serde(default)]
    pub nat_ports: Option<String>,
    /// Traffic to send (to leave state behind, e.g. a conntrack entry); its
    /// result is not checked.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// A service's backend set, as `labctl svc backend set`: `SERVICE
    /// [POD...]` (no pods: no endpoints).
    #[serde(default)]
    pub svc_backends: Option<String>,
}

impl Action {
    /// The command a learner would type for it.
    pub fn command_line(&self, lab: &str) -> String {
        if let Some(p) = &self.probe {
            return format!(
                "sudo labctl lab traffic --lab {lab} {} {} --proto {}{}",
                p.from,
                p.to,
                p.proto,
                p.port
                    .as_ref()
                    .map(|x| format!(" --port {x}"))
                    .unwrap_or_default()
            );
        }
        if let Some(b) = &self.svc_backends {
            return format!("sudo labctl svc backend set --lab {lab} {b}");
        }
        match (&self.run, &self.nat_ports) {
            (Some(run), _) => format!(
                "sudo labctl lab exec --lab {lab} {} -- sh -c '{}'",
                self.member,
                run.replace('\'', "'\\''")
            ),
            (None, Some(ports)) => {
                format!("sudo labctl masq config --lab {lab} --nat-ports {ports}")
            }
            (None, None) => String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub id: String,
    pub title: String,
    /// Tasks that must pass before this one is checked.
    #[serde(default)]
    pub needs: Vec<String>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub title: String,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Solution {
    pub explanation: String,
    pub commands: Vec<Action>,
}

/// What a check observes, with labctl's own instruments, on the live lab.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Check {
    /// Traffic between members (`lab traffic`): answered or not, and the
    /// source address the receiving server saw.
    Probe(Probe),
    /// Drops the tracer sees in one member while traffic is sent.
    Drops {
        /// The member whose namespace is traced.
        at: String,
        during: Traffic,
        /// A drop reason (`IP_RPFILTER`), or none: no drops at all.
        #[serde(default)]
        reason: Option<String>,
        /// At least this many drops with the reason (default 1); with no
        /// reason the check passes when nothing is dropped.
        #[serde(default)]
        at_least: Option<u64>,
    },
    /// Conntrack entries in a member's table.
    Conntrack {
        #[serde(rename = "in")]
        member: String,
        #[serde(default)]
        proto: Option<String>,
        #[serde(default)]
        dport: Option<String>,
        /// Only source-NATed entries (true) or only untranslated ones (false).
        #[serde(default)]
        snat: Option<bool>,
        #[serde(default)]
        at_least: Option<u64>,
        #[serde(default)]
        at_most: Option<u64>,
    },
    /// A sysctl's value in a member (`net.ipv4.ip_forward`).
    Sysctl {
        #[serde(rename = "in")]
        member: String,
        key: String,
        equals: String,
    },
    /// Whether a member's nft ruleset has a line containing `contains`.
    Nft {
        #[serde(rename = "in")]
        member: String,
        contains: String,
        #[serde(default = "yes")]
        present: bool,
    },
    /// How a member routes to an address (`ip route get`): through `dev`,
    /// or not at all (`reachable = false`).
    Route {
        #[serde(rename = "in")]
        member: String,
        to: String,
        #[serde(default)]
        dev: Option<String>,
        #[serde(default = "yes")]
        reachable: bool,
    },
    /// A member's nft ruleset (without counters) and routes are as they
    /// were right after the exercise broke the lab.
    Unchanged {
        #[serde(rename = "in")]
        member: String,
    },
    /// The learner's `exercise answer`, compared word by word (any order,
    /// any case) with the expected text.
    Answer { expect: String },
    /// What the wire shows: TCP SYNs from `from` to `to` (a service) are
    /// captured on `from`'s eth0 with tcpdump; their destination is `vip`
    /// or `backend`. Passes when the capture shows `expect` and the
    /// learner's answer says the same.
    Wire {
        from: String,
        to: String,
        expect: String,
    },
}

fn yes() -> bool {
    true
}

/// Traffic sent during a `drops` check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "send", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Traffic {
    /// As a `probe` check sends it (its expectations are ignored here).
    Probe(Probe),
    /// UDP datagrams with a forged source address, from a member.
    Spoofed {
        from: String,
        src: String,
        to: String,
        #[serde(default)]
        count: Option<u32>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub from: String,
    /// A member, or an IPv4 address.
    pub to: String,
    pub proto: Proto,
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub count: Option<u32>,
    /// Payload bytes (ICMP: with Don't Fragment).
    #[serde(default)]
    pub size: Option<usize>,
    /// tcp-stream: seconds to stream.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Whether every probe must be answered (true) or none (false).
    #[serde(default = "yes")]
    pub answered: bool,
    /// The source the server must have seen: a member's address (`node1`,
    /// `pod-a`) or an IPv4 address.
    #[serde(default)]
    pub seen_as: Option<String>,
    /// tcp-stream: at least this many bytes must arrive.
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// UDP: the source port of every datagram (one flow).
    #[serde(default)]
    pub sport: Option<String>,
    /// Where the echo server runs when `to` is a Service address: MEMBER:PORT.
    #[serde(default)]
    pub backend: Option<String>,
    /// To a service of the lab: at least this many of its backends must
    /// have answered.
    #[serde(default)]
    pub backends_at_least: Option<usize>,
}
