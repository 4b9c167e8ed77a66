//! The command line: one module per subcommand with its arguments; every
//! variant of [`Command`] is `Variant(Args)`, and `commands::<variant>`
//! takes those Args.

pub mod cni;
pub mod conntrack;
pub mod demo;
pub mod doctor;
pub mod exercise;
pub mod explain;
pub mod lab;
pub mod masq;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod shell;
pub mod svc;
pub mod trace;
pub mod values;

use clap::{Parser, Subcommand};

pub use crate::output::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "labctl",
    version,
    about = "Hands-on eBPF and CNI networking labs: drops, conntrack, masquerade",
    propagate_version = true
)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The container runtime's CRI socket, through which pods are named
    /// (`NAMESPACE/NAME`) on a Kubernetes node [default: containerd's,
    /// /run/containerd/containerd.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub cri_socket: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that this machine can run labctl: privileges, BTF, tracefs,
    /// program types, ctnetlink.
    Doctor(doctor::DoctorArgs),
    /// Watch every packet the kernel drops: why, where, and what to do.
    Trace(trace::TraceArgs),
    /// What a drop reason means, its usual causes, and commands to confirm and fix it.
    Explain(explain::ExplainArgs),
    /// Connection tracking side by side: netfilter's table (ctnetlink),
    /// labctl's eBPF tracker, Cilium's CT maps.
    Conntrack(conntrack::ConntrackArgs),
    /// Masquerade per pod: connections, packets, bytes and ports, counted by
    /// an eBPF program from each packet's conntrack entry (or read from the
    /// eBPF masquerading's own maps); `masq nat-table` lists its mappings.
    Masq(masq::MasqTopArgs),
    /// Services side by side: kube-proxy's iptables and nftables chains,
    /// eBPF load balancing per packet and per socket; list and change them live.
    Svc(svc::SvcArgs),
    /// Flows as Hubble shows them: connections starting and ending
    /// (FORWARDED), drops with their reason (DROPPED), NAT, pod names, and
    /// every lost event.
    Observe(observe::ObserveArgs),
    /// Serve Prometheus metrics: drops by reason and namespace, conntrack
    /// fill and statistics, eBPF NAT and masquerade per pod.
    Metrics(metrics::MetricsArgs),
    /// Network policy: apply Kubernetes NetworkPolicy and Cilium
    /// CiliumNetworkPolicy YAML to a lab, list, delete, and trace what they
    /// decide.
    Policy(policy::PolicyArgs),
    /// labctl as a CNI plugin: called by the container runtime (as
    /// `labctl cni` or /opt/cni/bin/labctl-cni); `cni log` shows its calls.
    Cni(cni::CniArgs),
    /// Build CNI-style lab topologies (nodes, pods, bridge, veth, VXLAN,
    /// masquerade) in network namespaces.
    Lab(lab::LabArgs),
    /// The tour: bring up the drops lab, trace while each planted fault
    /// fires, print the summary with explanations, tear the lab down.
    Demo(demo::DemoArgs),
    /// Break-fix workshop exercises: a broken lab, a story, tasks checked
    /// against the live system.
    Exercise(exercise::ExerciseArgs),
    /// Print a shell completion script: labctl completions bash > /etc/bash_completion.d/labctl
    Completions(shell::CompletionsArgs),
    /// Print a man page (roff): labctl man | man -l -
    Man(shell::ManArgs),
}

impl Command {
    /// The subcommand's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Doctor(_) => "doctor",
            Command::Demo(_) => "demo",
            Command::Trace(_) => "trace",
            Command::Explain(_) => "explain",
            Command::Lab(_) => "lab",
            Command::Cni(_) => "cni",
            Command::Conntrack(_) => "conntrack",
            Command::Masq(_) => "masq",
            Command::Svc(_) => "svc",
            Command::Metrics(_) => "metrics",
            Command::Observe(_) => "observe",
            Command::Policy(_) => "policy",
            Command::Exercise(_) => "exercise",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let path = format!("{path} {}", cmd.get_name());
        if cmd.get_about().is_none() && cmd.get_name() != "labctl" {
            missing.push(format!("{path} (the subcommand)"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &path, missing);
        }
    }

    #[test]
    fn every_option_and_argument_has_a_help_line() {
        Cli::command().debug_assert();
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }

    #[test]
    fn every_command_that_prints_has_json_and_shared_options_mean_one_thing() {
        // Not printing data: a shell script, a man page, a child's own
        // output, a full-screen view, a schema (JSON already) or its page.
        const EXEMPT: [&str; 5] = ["completions", "man", "exec", "top", "schema"];
        fn leaves(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
            if cmd.get_subcommands().next().is_none() {
                out.push(cmd.clone());
            }
            for sub in cmd.get_subcommands() {
                leaves(sub, out);
            }
        }
        let mut all = Vec::new();
        leaves(&Cli::command(), &mut all);
        for cmd in &all {
            let name = cmd.get_name();
            let arg = |id: &str| cmd.get_arguments().find(|a| a.get_id() == id);
            if !EXEMPT.contains(&name) {
                let output = arg("output").unwrap_or_else(|| panic!("{name} has no -o"));
                assert_eq!(output.get_short(), Some('o'), "{name}");
            }
            if let Some(count) = arg("count") {
                assert_eq!(count.get_short(), Some('c'), "{name} --count");
            }
            if let Some(lab) = arg("lab") {
                assert_eq!(lab.get_long(), Some("lab"), "{name}");
            }
        }
    }
}
