//! The per-packet floor of a tc program: `noop_tc` (in the `probes`
//! object) does nothing and lets the packet go on. Attached beside a real
//! program on the same hook, it pays what every tc program pays (the call
//! through tcx or cls_bpf, the run-time statistics, a cold instruction
//! cache); the difference of the two run times per packet is the real
//! program's own work (`cargo xtask bench masq`).

use aya::programs::{SchedClassifier, TcAttachType};

use super::{
    error::ProgramSetupError,
    loader::{LoadError, load_object, program},
    objects,
    tc::{self, TcAttach},
};
use crate::kernel::netns::NetNs;

const OBJECT: &str = "probes";
pub const PROGRAM: &str = "noop_tc";

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
