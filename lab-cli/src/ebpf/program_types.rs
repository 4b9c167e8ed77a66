//! Which eBPF program types load and attach on this kernel.
//!
//! Each type is tried for real with a trivial program from the `probes`
//! object: loaded, attached to a harmless target, then detached. Network
//! attachments (tc, xdp) go to `lo` of a throwaway namespace, cgroup_skb to a
//! throwaway cgroup, so nothing on the host is touched.

use std::fs;

use aya::{
    Btf, Ebpf,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, KProbe,
        ProgramError, RawTracePoint, SchedClassifier, TcAttachType, TracePoint, Xdp, XdpMode, tc,
    },
};

use crate::kernel::netns::{self, NetNs};

/// The outcome of trying one program type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramType {
    pub name: &'static str,
    /// The core commands need it; otherwise it is only used when present.
    pub required: bool,
    pub result: Result<String, String>,
}

/// Attach target of the kprobe and fentry probes: present in every kernel
/// with IPv4, and not `notrace`.
const TRACED_FUNCTION: &str = "tcp_v4_rcv";

pub fn probe_all(ebpf: &mut Ebpf) -> Vec<ProgramType> {
    let btf = Btf::from_sys_fs().map_err(|e| e.to_string());
    let mut out = vec![
        one("tracepoint", true, tracepoint(ebpf)),
        one("tp_btf", true, tp_btf(ebpf, &btf)),
        one("raw_tracepoint", true, raw_tracepoint(ebpf)),
    ];
    let (tc, xdp) = network(ebpf);
    out.push(one("tc (clsact)", true, tc));
    out.push(one("xdp", true, xdp));
    out.push(one("cgroup_skb", true, cgroup_skb(ebpf)));
    out.push(one("kprobe", false, kprobe(ebpf)));
    out.push(one("fentry", false, fentry(ebpf, &btf)));
    out
}

fn one(name: &'static str, required: bool, result: Result<String, String>) -> ProgramType {
    ProgramType {
        name,
        required,
        result,
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the probes object"))?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())
}

/// A load/attach error in one line: the OS error is the useful part.
fn short(e: ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, .. } => format!("load refused: {io_error}"),
        ProgramError::SyscallError(e) => format!("{}: {}", e.call, e.io_error),
        e => e.to_string(),
    }
}

fn tracepoint(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut TracePoint = program(ebpf, "probe_tracepoint")?;
    p.load().map_err(short)?;
    let link = p.attach("skb", "kfree_skb").map_err(short)?;
    p.detach(link).map_err(short)?;
    Ok("attached to skb:kfree_skb".into())
}

fn tp_btf(ebpf: &mut Ebpf, btf: &Result<Btf, String>) -> Result<String, String> {
    let btf = btf.as_ref().map_err(|e| format!("no kernel BTF: {e}"))?;
    let p: &mut BtfTracePoint = program(ebpf, "probe_tp_btf")?;
    p.load("kfree_skb", btf).map_err(short)?;
    let link = p.attach().map_err(short)?;
    p.detach(link).map_err(short)?;
    Ok("attached to kfree_skb".into())
}

fn raw_tracepoint(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut RawTracePoint = program(ebpf, "probe_raw_tp")?;
    p.load().map_err(short)?;
    let link = p.attach("kfree_skb").map_err(short)?;
    p.detach(link).map_err(short)?;
    Ok("attached to kfree_skb".into())
}

fn kprobe(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut KProbe = program(ebpf, "probe_kprobe")?;
    p.load().map_err(short)?;
    // Without CONFIG_KPROBES the kprobe PMU is missing from sysfs.
    let link = p.attach(TRACED_FUNCTION, 0).map_err(|e| {
        if e.to_string().contains("event_source/devices/kprobe") {
            "no kprobe PMU: the kernel is built without CONFIG_KPROBES".to_owned()
        } else {
            short(e)
        }
    })?;
    p.detach(link).map_err(short)?;
    Ok(format!("attached to {TRACED_FUNCTION}"))
}

fn fentry(ebpf: &mut Ebpf, btf: &Result<Btf, String>) -> Result<String, String> {
    let btf = btf.as_ref().map_err(|e| format!("no kernel BTF: {e}"))?;
    let p: &mut FEntry = program(ebpf, "probe_fentry")?;
    p.load(TRACED_FUNCTION, btf).map_err(short)?;
    let link = p.attach().map_err(short)?;
    p.detach(link).map_err(short)?;
    Ok(format!("attached to {TRACED_FUNCTION}"))
}

/// tc and xdp, both on `lo` of a throwaway namespace.
fn network(ebpf: &mut Ebpf) -> (Result<String, String>, Result<String, String>) {
    let tc_loaded =
        program::<SchedClassifier>(ebpf, "probe_tc").and_then(|p| p.load().map_err(short));
    let xdp_loaded = program::<Xdp>(ebpf, "probe_xdp").and_then(|p| p.load().map_err(short));
    let ns = match NetNs::create(&netns::unique_name("labctl-doctor")) {
        Ok(ns) => ns,
        Err(e) => {
            let err = format!("loaded, but no namespace to attach in: {e}");
            return (tc_loaded.and(Err(err.clone())), xdp_loaded.and(Err(err)));
        }
    };
    let tc = tc_loaded.and_then(|()| {
        let p: &mut SchedClassifier = program(ebpf, "probe_tc")?;
        ns.run(|| -> Result<String, String> {
            // EEXIST: the qdisc is already there, which is fine.
            if let Err(e) = tc::qdisc_add_clsact("lo")
                && !e.to_string().contains("exists")
            {
                return Err(format!("adding clsact qdisc: {e}"));
            }
            let link = p.attach("lo", TcAttachType::Ingress).map_err(short)?;
            p.detach(link).map_err(short)?;
            Ok("attached to lo ingress (clsact) in a throwaway netns".into())
        })
        .map_err(|e| e.to_string())?
    });
    let xdp = xdp_loaded.and_then(|()| {
        let p: &mut Xdp = program(ebpf, "probe_xdp")?;
        ns.run(|| -> Result<String, String> {
            let link = p.attach("lo", XdpMode::Default).map_err(short)?;
            p.detach(link).map_err(short)?;
            Ok("attached to lo in a throwaway netns".into())
        })
        .map_err(|e| e.to_string())?
    });
    if let Err(e) = ns.delete() {
        tracing::warn!("{e}");
    }
    (tc, xdp)
}

fn cgroup_skb(ebpf: &mut Ebpf) -> Result<String, String> {
    let p: &mut CgroupSkb = program(ebpf, "probe_cgroup_skb")?;
    p.load().map_err(short)?;
    let root = crate::kernel::cgroup::cgroup2_root()
        .ok_or("loaded; no cgroup2 hierarchy is mounted to attach to")?;
    let dir = root.join(netns::unique_name("labctl-doctor"));
    fs::create_dir(&dir)
        .map_err(|e| format!("loaded; cannot create cgroup {}: {e}", dir.display()))?;
    let attached = fs::File::open(&dir)
        .map_err(|e| e.to_string())
        .and_then(|cgroup| {
            let link = p
                .attach(
                    cgroup,
                    CgroupSkbAttachType::Ingress,
                    CgroupAttachMode::Single,
                )
                .map_err(short)?;
            p.detach(link).map_err(short)
        });
    let removed = fs::remove_dir(&dir).map_err(|e| format!("removing {}: {e}", dir.display()));
    attached?;
    removed?;
    Ok("attached to a throwaway cgroup".into())
}
