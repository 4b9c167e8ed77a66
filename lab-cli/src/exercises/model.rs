//! An exercise as data: what a TOML file under `exercises/` declares.
//!
//! Any string may hold `{{name}}` placeholders for the attempt's randomized
//! parameters (and `{{lab}}`, the lab's name). They are filled in after the
//! file is parsed, value by value (`template`): a string that is exactly one
//! placeholder takes the parameter's own type (a number stays a number, a
//! list stays a list), and no value can break the file. The JSON Schema
//! (`exercises/exercise.schema.json`) and `docs/exercise-format.md` are
//! generated from these types and their comments (`schema`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    lab::{plan::LabOptions, plan::MasqMode, traffic::Proto},
    policy::PolicyMode,
    services::KubeProxyMode,
};

/// One break-fix exercise: a lab, what breaks it, the story a participant
/// reads, the tasks a check observes, and for instructors the solution,
/// the other fixes that must pass and the shortcuts that must not.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "labctl exercise")]
pub struct Exercise {
    /// What `labctl exercise start ID` takes: lowercase letters, digits and
    /// `-`, the file's name without `.toml`.
    pub id: String,
    /// One line, shown by `exercise list` and `start`.
    pub title: String,
    /// The concept it teaches, in one line (instructors' table).
    pub concept: String,
    pub difficulty: Difficulty,
    /// About how long a participant needs, in minutes.
    pub minutes: u32,
    /// The lab scenario it runs in (`labctl lab up --help` lists them).
    pub scenario: String,
    /// How the lab is built.
    #[serde(default)]
    pub options: LabSettings,
    /// Randomized per attempt: each parameter takes one of its choices, and
    /// `{{name}}` anywhere in the file is replaced by it.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// What `start` (and `reset`) does to the lab to break it, in order.
    #[serde(rename = "break", default)]
    pub breaks: Vec<Action>,
    /// The symptoms as a participant meets them, never the cause:
    /// participants read it.
    pub story: String,
    /// What must work at the end; `check` observes each from the live lab.
    pub tasks: Vec<Task>,
    /// What must still hold, so that a shortcut does not pass (a guard that
    /// fails says why, in one sentence from the story).
    #[serde(default)]
    pub guards: Vec<Guard>,
    /// Progressive hints: symptom, concept, where to look, the tool.
    pub hints: Vec<String>,
    /// The reference solution: the cause, then what fixes it.
    pub solution: Solution,
    /// Other legitimate fixes a colleague would choose: each must pass
    /// (`labctl exercise selftest` proves it).
    #[serde(default)]
    pub alternatives: Vec<Fix>,
    /// Tempting shortcuts: each must fail a guard (`selftest` proves it).
    #[serde(default)]
    pub shortcuts: Vec<Shortcut>,
    /// For exercises that ask a question: how many answers a participant
    /// may give in all (guessing is capped; every answer is recorded).
    #[serde(default)]
    pub max_answers: Option<u32>,
    /// Hide the lab's service mode from `labctl lab status` while this
    /// exercise runs (when the mode is the answer).
    #[serde(default)]
    pub conceal_mode: bool,
    /// Common wrong turns, for the instructor notes.
    #[serde(default)]
    pub wrong_turns: Vec<String>,
    /// What to discuss with the room afterwards, for the instructor notes.
    #[serde(default)]
    pub debrief: Vec<String>,
}

impl Exercise {
    /// The lab's options.
    pub fn lab_options(&self) -> LabOptions {
        let o = &self.options;
        LabOptions {
            mtu: o.mtu,
            masq: o.masq.unwrap_or_default(),
            nat_udp_timeout: o.nat_udp_timeout,
            nat_ports: o.nat_ports.map(|[lo, hi]| (lo, hi)),
            kube_proxy: o.kube_proxy,
            policy_mode: o.policy_mode,
            ..LabOptions::default()
        }
    }

    /// Every check of every task and guard.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.tasks
            .iter()
            .flat_map(|t| &t.checks)
            .chain(self.guards.iter().flat_map(|g| &g.checks))
    }

    /// Every action the file declares: break, solution, alternatives,
    /// shortcuts.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.breaks
            .iter()
            .chain(&self.solution.actions)
            .chain(self.alternatives.iter().flat_map(|f| &f.actions))
            .chain(self.shortcuts.iter().flat_map(|s| &s.actions))
    }

    /// Whether the exercise asks a question (`answer` or `wire` checks).
    pub fn asks(&self) -> bool {
        self.checks()
            .any(|c| matches!(c, Check::Answer { .. } | Check::Wire { .. }))
    }
}

/// How the lab is built (as `labctl lab up`'s options).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabSettings {
    /// The pods' MTU (default: the scenario's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Who masquerades pod traffic leaving the node.
    #[serde(default)]
    pub masq: Option<MasqMode>,
    /// eBPF masquerading: the translated port range, `[LO, HI]`.
    #[serde(default)]
    pub nat_ports: Option<[u16; 2]>,
    /// eBPF masquerading: idle lifetime of UDP mappings, in seconds.
    #[serde(default)]
    pub nat_udp_timeout: Option<u32>,
    /// Who implements the scenario's services (scenarios with services).
    #[serde(default)]
    pub kube_proxy: Option<KubeProxyMode>,
    /// Who enforces the scenario's network policies (scenarios with
    /// Kubernetes namespaces and labels, such as `starwars`).
    #[serde(default)]
    pub policy_mode: Option<PolicyMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Easy,
    Medium,
    Hard,
}

/// A randomized parameter: one choice per attempt.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// A value each (`{{name}}` becomes it), or a table each, setting
    /// several placeholders at once (`{{key}}` for each key).
    pub choices: Vec<Choice>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Choice {
    Value(Value),
    Table(BTreeMap<String, Value>),
}

/// A parameter's value.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

impl Value {
    /// As it reads inside a longer string.
    pub fn text(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => s.clone(),
            Value::List(l) => l.join(" "),
        }
    }
}

/// A change to the lab: what `break`, a solution, an alternative or a
/// shortcut does.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// A shell command (`sh -c`), as root, inside a member's namespace:
    /// what `labctl lab exec MEMBER -- sh -c COMMAND` does.
    Run {
        /// The member it runs in (`node1`, `pod-a`, `world`...).
        #[serde(rename = "in")]
        member: String,
        command: String,
    },
    /// eBPF masquerading's port range for the whole lab, `LO-HI`: what
    /// `labctl masq config --nat-ports LO-HI` does.
    NatPorts { ports: String },
    /// Traffic that leaves state behind (a conntrack entry, say); whether
    /// it is answered is not checked.
    Probe(Probe),
    /// A service's backend set: what `labctl svc backend set SERVICE
    /// POD...` does (no pods: no endpoints).
    SvcBackends {
        service: String,
        #[serde(default)]
        pods: Vec<String>,
    },
    /// The participant's answer: what `labctl exercise answer TEXT` records.
    Answer { text: String },
    /// NetworkPolicy / CiliumNetworkPolicy YAML, as `kubectl apply` takes
    /// it: what `labctl policy apply -f FILE` does with the file.
    Policy { yaml: String },
    /// Removes a policy: what `labctl policy delete NAME` does (`NAME`,
    /// `NAMESPACE/NAME`, `netpol/…` or `cnp/…`, as `policy list` prints).
    PolicyDelete { name: String },
}

impl Action {
    /// The command a participant would type for it.
    pub fn command_line(&self, lab: &str) -> String {
        match self {
            Action::Probe(p) => {
                let mut s = format!(
                    "sudo labctl lab traffic --lab {lab} {} {} --proto {}",
                    p.from, p.to, p.proto
                );
                if let Some(port) = p.port {
                    s.push_str(&format!(" --port {port}"));
                }
                if let Some(sport) = p.sport {
                    s.push_str(&format!(" --source-port {sport}"));
                }
                s
            }
            Action::SvcBackends { service, pods } => {
                let mut s = format!("sudo labctl svc backend set --lab {lab} {service}");
                for p in pods {
                    s.push(' ');
                    s.push_str(p);
                }
                s
            }
            Action::Run { member, command } => format!(
                "sudo labctl lab exec --lab {lab} {member} -- sh -c '{}'",
                command.replace('\'', "'\\''")
            ),
            Action::NatPorts { ports } => {
                format!("sudo labctl masq config --lab {lab} --nat-ports {ports}")
            }
            Action::Answer { text } => {
                let opt = if lab == super::DEFAULT_LAB {
                    String::new()
                } else {
                    format!(" --lab {lab}")
                };
                format!("labctl exercise answer{opt} {text}")
            }
            Action::Policy { yaml } => format!(
                "sudo labctl policy apply --lab {lab} -f - <<'EOF'\n{}\nEOF",
                yaml.trim_end()
            ),
            Action::PolicyDelete { name } => {
                format!("sudo labctl policy delete --lab {lab} {name}")
            }
        }
    }
}

/// One side of a `verdict` check: a member (`coredns`), or a pod that does
/// not exist yet.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PolicyParty {
    Member(String),
    /// A pod that does not exist yet, with its Kubernetes namespace and
    /// labels.
    New {
        namespace: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
}

impl std::fmt::Display for PolicyParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyParty::Member(m) => f.write_str(m),
            PolicyParty::New { namespace, labels } => {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "a new pod in {namespace}")?;
                if !l.is_empty() {
                    write!(f, " with {}", l.join(","))?;
                }
                Ok(())
            }
        }
    }
}

/// Something that must work at the end.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// A short name (`needs` refers to it).
    pub id: String,
    /// What the participant reads.
    pub title: String,
    /// Tasks that must pass before this one is checked.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Something that works in the broken lab too and must keep working
    /// (marked as such): `selftest` checks that it passes before any fix,
    /// and that every other task fails then.
    #[serde(default)]
    pub keep_working: bool,
    /// Why it matters, shown when it fails: a task that catches a shortcut
    /// (as a guard does, but one the broken lab fails too) says why.
    #[serde(default)]
    pub why: Option<String>,
    /// All must pass.
    pub checks: Vec<Check>,
}

/// Something a fix must not break.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// What must still hold.
    pub title: String,
    /// Why, in one sentence from the story: shown when the guard fails.
    pub why: String,
    /// All must pass.
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Solution {
    /// The cause, and why the fix works (instructors, and `exercise
    /// solution`).
    pub explanation: String,
    /// What fixes it (for a question: the `answer`), with this attempt's
    /// values.
    pub actions: Vec<Action>,
}

/// Another legitimate fix.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fix {
    /// What it is, in a few words.
    pub name: String,
    pub actions: Vec<Action>,
}

/// A tempting fix that must not pass.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shortcut {
    /// What it is, in a few words.
    pub name: String,
    /// Why it is wrong (instructor notes).
    pub why: String,
    pub actions: Vec<Action>,
}

/// What a check observes, with labctl's own instruments, on the live lab.
/// A check never changes the lab; it may send traffic.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Check {
    /// Traffic between members, as `labctl lab traffic` sends it:
    /// answered or not, and the source address the server saw.
    Probe(Probe),
    /// Drops the tracer counts in one member's namespace while traffic is
    /// sent.
    Drops {
        /// The member whose namespace is traced.
        #[serde(rename = "in")]
        member: String,
        /// The traffic sent meanwhile.
        during: Traffic,
        /// A kernel drop reason (`IP_RPFILTER`); none: no drops at all.
        #[serde(default)]
        reason: Option<String>,
        /// At least this many drops with the reason (default 1).
        #[serde(default)]
        at_least: Option<u64>,
    },
    /// The number of entries in a member's conntrack table that match.
    Conntrack {
        #[serde(rename = "in")]
        member: String,
        /// `tcp`, `udp`, `icmp`.
        #[serde(default)]
        proto: Option<String>,
        /// The original direction's source port.
        #[serde(default)]
        sport: Option<u16>,
        /// The original direction's destination port.
        #[serde(default)]
        dport: Option<u16>,
        /// The reply direction's source: where a DNAT sent the flow (an
        /// IPv4 address or a member).
        #[serde(default)]
        reply_src: Option<String>,
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
        /// The value, exactly.
        #[serde(default)]
        equals: Option<String>,
        /// A number at least this big.
        #[serde(default)]
        at_least: Option<i64>,
    },
    /// How a member routes to an address (`ip route get`): out of `dev`,
    /// via gateway `via`, or not at all (`reachable = false`).
    Route {
        #[serde(rename = "in")]
        member: String,
        /// A member (its address) or an IPv4 address.
        to: String,
        #[serde(default)]
        dev: Option<String>,
        /// The next hop: an IPv4 address.
        #[serde(default)]
        via: Option<String>,
        #[serde(default = "yes")]
        reachable: bool,
    },
    /// A member's state is as it was right after the break: one nft table
    /// (`table = "ip hardening"`: its rules, sets and chains, without
    /// counters), or without `table` the whole nft ruleset and the routes.
    Unchanged {
        #[serde(rename = "in")]
        member: String,
        /// `FAMILY NAME`, as `nft list table FAMILY NAME` takes it.
        #[serde(default)]
        table: Option<String>,
    },
    /// Whether the lab's network policies let a new connection through,
    /// judged as `labctl policy trace` judges it (the datapaths agree with
    /// it: tested). Either side may be a pod that does not exist yet,
    /// `{ namespace = "…", labels = { … } }`: how the policies treat the
    /// next replica or a newcomer, which traffic between today's pods
    /// cannot show (a policy pinned to addresses, or one that selects too
    /// much).
    Verdict {
        from: PolicyParty,
        to: PolicyParty,
        /// `tcp` or `udp`.
        proto: Proto,
        port: u16,
        /// Whether it must be allowed (true) or denied (false).
        allowed: bool,
    },
    /// A service's backends, read from the kernel in the lab's own
    /// datapath (kube-proxy's chains, or the eBPF maps): exactly these pods.
    Service {
        /// The service's name in the lab (`web`).
        name: String,
        backends: Vec<String>,
    },
    /// The participant's `exercise answer`, word by word (any order, any
    /// case). A member may be named as labctl prints it anywhere (`pod-a`,
    /// `LAB/pod-a`, the namespace `LAB-pod-a`).
    Answer { expect: String },
    /// What the wire shows: TCP SYNs from `from` to the service `to` are
    /// captured on `from`'s eth0 with tcpdump; their destination is the
    /// service's address (`vip`) or a backend's (`backend`). Passes when
    /// the capture shows `expect` and the answer says the same (the word,
    /// or the address the capture shows).
    Wire {
        from: String,
        to: String,
        expect: WireSide,
    },
    /// The escape hatch: a shell command in a member; exit status 0
    /// passes, and its output is shown when it fails.
    Script {
        #[serde(rename = "in")]
        member: String,
        command: String,
    },
}

fn yes() -> bool {
    true
}

/// Which address a capture shows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WireSide {
    Vip,
    Backend,
}

impl WireSide {
    pub fn as_str(self) -> &'static str {
        match self {
            WireSide::Vip => "vip",
            WireSide::Backend => "backend",
        }
    }
}

/// Traffic sent during a `drops` check.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "send", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Traffic {
    /// As a `probe` check sends it (its expectations are ignored here).
    Probe(Probe),
    /// UDP datagrams with a forged source address, from a member (a raw
    /// socket; the member's routes choose the link they leave by).
    Spoofed {
        from: String,
        /// The forged source address.
        src: String,
        /// The destination address.
        to: String,
        /// Datagrams (default 5).
        #[serde(default)]
        count: Option<u32>,
    },
}

/// Traffic as `labctl lab traffic` sends it, and what must come of it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The member that sends.
    pub from: String,
    /// A member, a service of the lab (name or address), or an IPv4 address.
    pub to: String,
    pub proto: Proto,
    /// Destination port (default 5001, or the service's port).
    #[serde(default)]
    pub port: Option<u16>,
    /// Probes (default 3).
    #[serde(default)]
    pub count: Option<u32>,
    /// Payload bytes (ICMP: sent with Don't Fragment).
    #[serde(default)]
    pub size: Option<usize>,
    /// tcp-stream: seconds to stream (default 2).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Whether every probe must be answered (true) or none (false).
    #[serde(default = "yes")]
    pub answered: bool,
    /// The source the server must have seen: a member (its address) or an
    /// IPv4 address.
    #[serde(default)]
    pub seen_as: Option<String>,
    /// tcp-stream: at least this many bytes must arrive.
    #[serde(default)]
    pub min_bytes: Option<u64>,
    /// UDP: the source port of every datagram (one flow).
    #[serde(default)]
    pub sport: Option<u16>,
    /// Where the echo server runs when `to` is an address no member has:
    /// `MEMBER:PORT`.
    #[serde(default)]
    pub backend: Option<String>,
    /// To a service: at least this many of its backends must have answered.
    #[serde(default)]
    pub backends_at_least: Option<usize>,
}
