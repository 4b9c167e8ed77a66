//! Attaching tc programs: the one place that decides between tcx (bpf
//! links, kernels >= 6.6) and a clsact qdisc with a netlink filter (every
//! kernel since 4.5, the only way before 6.6).
//!
//! A netlink filter lives in the interface's namespace, so attaching (and
//! detaching) runs there.

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
    util::KernelVersion,
};

use super::{error::ProgramSetupError, loader::LoadError};
use crate::kernel::netns::NetNs;

/// How tc programs are attached.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TcAttach {
    /// tcx where the kernel has it (6.6+), a clsact qdisc before.
    #[default]
    Auto,
    /// Always a clsact qdisc and a netlink filter, as before 6.6 (to try
    /// the older path on a new kernel).
    Netlink,
}

impl TcAttach {
    /// Whether this attach goes through a clsact qdisc and netlink.
    pub fn uses_netlink(self) -> bool {
        self == TcAttach::Netlink
            || KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0))
    }
}

/// Attaches loaded program `prog` (named `program`) to `iface` in
/// direction `dir`, inside `ns` (None: the caller's namespace). With
/// netlink the interface gets a clsact qdisc first (kept if it has one).
pub fn attach(
    ns: Option<&NetNs>,
    prog: &mut SchedClassifier,
    program: &str,
    iface: &str,
    dir: TcAttachType,
    mode: TcAttach,
) -> Result<SchedClassifierLinkId, ProgramSetupError> {
    let mut attach = || -> Result<SchedClassifierLinkId, LoadError> {
        let options = if mode.uses_netlink() {
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                // EEXIST is the usual answer; anything else shows in the
                // attach error that follows.
                tracing::debug!("clsact on {iface}: {e} (already there?)");
            }
            TcAttachOptions::Netlink(NlOptions::default())
        } else {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        };
        prog.attach_with_options(iface, dir, options)
            .map_err(|e| LoadError::attach(program, format!("{iface} {dir:?}"), e))
    };
    Ok(match ns {
        Some(ns) => ns.run(attach)??,
        None => attach()?,
    })
}

/// Removes the netlink filters named `program` from `iface` in `ns` (the
/// way a program attached with [`TcAttach::Netlink`] outlives labctl, and
/// goes again). Nothing attached is not an error.
pub fn detach_netlink(
    ns: &NetNs,
    program: &'static str,
    iface: &str,
    dir: TcAttachType,
) -> Result<(), ProgramSetupError> {
    match ns.run(|| tc::qdisc_detach_program(iface, dir, program))? {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProgramSetupError::Detach {
            program,
            target: format!("{iface} {dir:?}"),
            source: Box::new(e),
        }),
    }
}
