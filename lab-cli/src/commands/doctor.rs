//! `labctl doctor`: can this machine run labctl?

use std::io::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::{
    conntrack::netlink as ctnetlink,
    drops::reasons::DropReasons,
    ebpf::{loader::load_object, objects, program_types},
    kernel::{
        bpffs,
        btf::{KernelBtf, VMLINUX_BTF},
        cri, node,
        privilege::Privileges,
        tracefs,
    },
    output::{OutputFormat, exit::Outcome, width},
};

/// One line of doctor's report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// Core commands need it; a failed optional check does not fail doctor.
    pub required: bool,
    pub seen: String,
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &str, seen: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            required: true,
            seen: seen.into(),
            fix: None,
        }
    }

    fn fail(name: &str, seen: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: false,
            required: true,
            seen: seen.into(),
            fix: Some(fix.into()),
        }
    }

    fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub kernel: String,
    pub checks: Vec<Check>,
}

pub fn run(output: OutputFormat) -> anyhow::Result<Outcome> {
    let report = collect();
    let mut out = anstream::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        OutputFormat::Text => print_text(&mut out, &report)?,
    }
    Ok(if report.ok {
        Outcome::Success
    } else {
        Outcome::EnvironmentNotReady
    })
}

/// Runs every check. Never fails: a failure is a ✗ line.
pub fn collect() -> Report {
    let mut checks = vec![privileges()];
    checks.extend(btf());
    checks.extend(tracefs());
    checks.extend(ebpf());
    checks.push(ctnetlink());
    checks.push(nft());
    checks.push(service_modes());
    checks.push(memlock());
    checks.extend(node());
    let ok = checks.iter().all(|c| c.ok || !c.required);
    Report {
        ok,
        kernel: kernel_release(),
        checks,
    }
}

fn privileges() -> Check {
    let privileges = Privileges::current();
    let missing = privileges.missing();
    if missing.is_empty() {
        Check::pass("privileges", privileges.describe())
    } else {
        Check::fail(
            "privileges",
            format!("{}; missing {}", privileges.describe(), missing.join(" + ")),
            "run as root: sudo labctl doctor",
        )
    }
}

/// Kernel BTF and the drop-reason enum in it.
fn btf() -> Vec<Check> {
    let btf = match KernelBtf::from_sys() {
        Ok(btf) => btf,
        Err(e) => {
            return vec![Check::fail(
                "kernel BTF",
                e.to_string(),
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4)",
            )];
        }
    };
    let size = std::fs::metadata(VMLINUX_BTF)
        .map(|m| m.len() / 1024)
        .unwrap_or(0);
    vec![
        Check::pass("kernel BTF", format!("{VMLINUX_BTF} ({size} KiB)")),
        match DropReasons::from_btf(&btf) {
            Ok(r) => Check::pass(
                "skb_drop_reason enum",
                format!("{} reasons in BTF", r.len()),
            ),
            Err(e) => Check::fail(
                "skb_drop_reason enum",
                e.to_string(),
                "drop reasons need kernel >= 5.17; upgrade the kernel",
            ),
        },
    ]
}

/// tracefs (mounted by labctl when it is not) and the kfree_skb tracepoint.
fn tracefs() -> Vec<Check> {
    let t = match tracefs::ensure_mounted() {
        Ok(t) => t,
        Err(e) => {
            return vec![Check::fail(
                "tracefs",
                e.to_string(),
                format!("mount -t tracefs tracefs {}", tracefs::TRACEFS),
            )];
        }
    };
    let how = if t.mounted_now {
        "was not mounted: labctl mounted it"
    } else {
        "mounted"
    };
    vec![
        Check::pass("tracefs", format!("{} ({how})", t.root.display())),
        match tracefs::EventFormat::read(&t.root, "skb", "kfree_skb")
            .and_then(|f| f.field("reason").map(|r| r.offset))
        {
            Ok(off) => Check::pass(
                "skb:kfree_skb tracepoint",
                format!("present, `reason` field at offset {off}"),
            ),
            Err(e) => Check::fail(
                "skb:kfree_skb tracepoint",
                e.to_string(),
                "the `reason` field needs kernel >= 5.17; upgrade the kernel",
            ),
        },
    ]
}

/// The bpf() syscall and every program type labctl uses.
fn ebpf() -> Vec<Check> {
    let mut ebpf = match load_object("probes", objects::PROBES, |_| {}) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            return vec![Check::fail(
                "bpf() syscall",
                crate::output::exit::one_line(&e),
                "run as root (sudo labctl doctor); in a container, grant CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
            )];
        }
    };
    let types = program_types::probe_all(&mut ebpf);
    let syscall = if types.iter().any(|t| t.result.is_ok()) {
        Check::pass("bpf() syscall", "loads programs")
    } else {
        Check::fail(
            "bpf() syscall",
            "no program type loads",
            "run as root and check kernel.unprivileged_bpf_disabled / lockdown",
        )
    };
    std::iter::once(syscall)
        .chain(types.into_iter().map(|t| {
            let name = format!("program type {}", t.name);
            match t.result {
                Ok(seen) => Check::pass(&name, seen),
                Err(seen) if t.required => Check::fail(
                    &name,
                    seen,
                    "needs a kernel with this program type (>= 5.10)",
                ),
                Err(seen) => Check::fail(
                    &name,
                    seen,
                    "optional: labctl degrades to BTF tracepoints without it",
                )
                .optional(),
            }
        }))
        .collect()
}

fn ctnetlink() -> Check {
    match ctnetlink::Ctnetlink::open().and_then(|mut ct| ct.table_size()) {
        Ok(size) => Check::pass(
            "ctnetlink",
            format!(
                "reachable, conntrack table {} / {} entries",
                size.entries, size.max
            ),
        ),
        Err(e) => Check::fail("ctnetlink", e.to_string(), "modprobe nf_conntrack_netlink"),
    }
}

fn nft() -> Check {
    match which::which("nft") {
        Ok(path) => Check::pass("nft (labs)", path.display().to_string()),
        Err(_) => Check::fail(
            "nft (labs)",
            "not found",
            "apt-get install nftables   # labctl lab loads its masquerade and policy rules with nft",
        ),
    }
}

/// Which `--kube-proxy` modes the `service` lab can use here (optional:
/// the other labs need none of them).
fn service_modes() -> Check {
    use clap::ValueEnum as _;

    use crate::services::{KubeProxyMode, check_mode};
    let mut ok = Vec::new();
    let mut missing = Vec::new();
    for mode in KubeProxyMode::value_variants() {
        match check_mode(*mode) {
            Ok(()) => ok.push(mode.as_str()),
            Err(e) => missing.push(format!(
                "{mode}: {}",
                e.to_string().split(':').next().unwrap_or_default()
            )),
        }
    }
    let seen = if missing.is_empty() {
        ok.join(", ")
    } else {
        format!("{} (not: {})", ok.join(", "), missing.join("; "))
    };
    if ok.is_empty() {
        Check::fail(
            "service modes",
            seen,
            "apt-get install iptables nftables (scripts/setup.sh)",
        )
        .optional()
    } else {
        Check::pass("service modes", seen)
    }
}

/// Where labctl runs: a host, or a node container (kind), and what a node
/// needs: its own bpffs (tracefs is checked for every machine), its
/// cgroup namespace, and the container runtime's CRI for pod names.
fn node() -> Vec<Check> {
    let Some(runtime) = node::container() else {
        return vec![
            Check::pass(
                "where",
                "on a host (not in a container): `trace` sees every namespace",
            )
            .optional(),
        ];
    };
    let mut checks = vec![Check::pass(
        "where",
        format!(
            "in a {runtime} container (a kind node?): `trace` shows this node's namespaces ({}) unless `--scope all`",
            node::scope().len()
        ),
    )];
    checks.push(match bpffs::ensure_mounted() {
        Ok(()) => Check::pass("bpffs (node)", format!("{} mounted", bpffs::BPFFS)),
        Err(e) => Check::fail(
            "bpffs (node)",
            e.to_string(),
            "the node's /sys is read-only: run labctl with `docker exec --privileged`, or mount bpffs in the node first",
        ),
    });
    checks.push(
        Check::pass(
            "cgroup (node)",
            match node::cgroup_path() {
                Some(p) if p == "/" => {
                    "private cgroup namespace (this node's cgroup is its root)".to_owned()
                }
                Some(p) => format!("cgroup {p} (the host's cgroup namespace)"),
                None => "no cgroup v2 membership found".to_owned(),
            },
        )
        .optional(),
    );
    let socket = cri::socket();
    checks.push(
        match cri::version(socket).and_then(|v| Ok((v, cri::sandboxes(socket)?))) {
            Ok((v, pods)) => Check::pass(
                "container runtime",
                format!(
                    "{} {} on {} (CRI {}): {} pod sandboxes, {} named NAMESPACE/NAME by their netns",
                    v.name,
                    v.version,
                    socket.display(),
                    v.api,
                    pods.len(),
                    pods.iter().filter(|p| p.ready && p.netns_ino.is_some()).count()
                ),
            ),
            Err(e) => Check::fail(
                "container runtime",
                e.to_string(),
                "optional: pods are named through the node's CRI (containerd); outside a Kubernetes node there are none",
            )
            .optional(),
        },
    );
    checks
}

fn memlock() -> Check {
    use nix::sys::resource::{Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) => {
            let limit = if soft == u64::MAX {
                "unlimited".to_owned()
            } else {
                format!("{} KiB", soft / 1024)
            };
            // Since 5.11 BPF memory is charged to the memory cgroup instead.
            Check::pass(
                "memlock rlimit",
                format!("{limit} (labctl raises it; only kernels < 5.11 use it for BPF)"),
            )
        }
        Err(e) => Check::fail("memlock rlimit", e.to_string(), "ulimit -l unlimited").optional(),
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The report as text: a line per check (what was seen filled under its
/// column), its fix below, and the verdict.
pub(crate) fn print_text(out: &mut impl std::io::Write, report: &Report) -> std::io::Result<()> {
    let green = Style::new().fg_color(Some(AnsiColor::Green.into())).bold();
    let red = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
    let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
    let dim = Style::new().dimmed();
    width::write_fill(
        out,
        &format!("labctl doctor — kernel {}", report.kernel),
        "",
        "  ",
    )?;
    let name_w = report
        .checks
        .iter()
        .map(|c| width::width(&c.name))
        .max()
        .unwrap_or(0);
    let hang = " ".repeat(name_w + 4);
    for c in &report.checks {
        let (mark, style) = match (c.ok, c.required) {
            (true, _) => ("✓", green),
            (false, true) => ("✗", red),
            (false, false) => ("–", yellow),
        };
        let first = format!("{style}{mark}{style:#} {}  ", width::pad(&c.name, name_w));
        width::write_fill(out, &c.seen, &first, &hang)?;
        if let Some(fix) = &c.fix {
            let fix = width::fill(&format!("fix: {fix}"), &hang, &format!("{hang}     "));
            for line in fix.lines() {
                let text = line.trim_start();
                let indent = &line[..line.len() - text.len()];
                writeln!(out, "{indent}{dim}{text}{dim:#}")?;
            }
        }
    }
    if report.ok {
        writeln!(
            out,
            "{green}ready{green:#}: everything the core commands need is here"
        )?;
    } else {
        writeln!(out, "{red}not ready{red:#}: fix the ✗ lines above")?;
    }
    Ok(())
}
