//! Per-packet floors: programs that do nothing (in the `probes` object),
//! attached beside a real program on the same hook. They pay what every
//! program there pays (the call through tcx or the tracepoint, the run-time
//! statistics, a cold instruction cache); the difference of the run times
//! per packet is the real program's own work (`cargo xtask bench masq`).

use aya::programs::{BtfTracePoint, SchedClassifier, TcAttachType};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program, vmlinux_btf},
    objects,
    tc::{self, TcAttach},
};
use crate::kernel::netns::NetNs;

const OBJECT: &str = "probes";
/// The tc floor's program name (for its run-time statistics).
pub const PROGRAM: &str = "noop_tc";
/// The transmit tracepoint floor's (the masquerade counter's hook).
pub const XMIT_PROGRAM: &str = "noop_xmit";

/// `noop_xmit` on `tp_btf/net_dev_start_xmit`, detached when dropped.
pub struct NoopXmit {
    _ebpf: aya::Ebpf,
}

impl NoopXmit {
    pub fn attach() -> Result<Self, ProgramSetupError> {
        let mut ebpf = load_object(OBJECT, objects::PROBES, |_| {})?;
        let vmlinux = vmlinux_btf(XMIT_PROGRAM)?;
        let p: &mut BtfTracePoint = program(&mut ebpf, OBJECT, XMIT_PROGRAM)?;
        p.load("net_dev_start_xmit", &vmlinux)
            .map_err(|e| LoadError::load(XMIT_PROGRAM, e))?;
        p.attach()
            .map_err(|e| LoadError::attach(XMIT_PROGRAM, "tp_btf/net_dev_start_xmit", e))?;
        Ok(Self { _ebpf: ebpf })
    }
}

/// `noop_tc` on both directions of an interface, detached when dropped.
pub struct NoopTc {
    _ebpf: aya::Ebpf,
}

impl NoopTc {
    pub fn attach(ns: &NetNs, iface: &str) -> Result<Self, ProgramSetupError> {
        let mut ebpf = load_object(OBJECT, objects::PROBES, |_| {})?;
        let prog: &mut SchedClassifier = program(&mut ebpf, OBJECT, PROGRAM)?;
        prog.load().map_err(|e| LoadError::load(PROGRAM, e))?;
        for dir in [TcAttachType::Egress, TcAttachType::Ingress] {
            tc::attach(Some(ns), prog, PROGRAM, iface, dir, TcAttach::Auto)?;
        }
        Ok(Self { _ebpf: ebpf })
    }
}
