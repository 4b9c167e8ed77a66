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

/// Attaches `prog` as [`attach`] does and keeps it attached after this
/// process: with tcx the link is pinned at `pin` (removing the pin
/// detaches it); with netlink the filter holds the program, and the link,
/// only a handle whose drop would detach it, is let go without dropping.
pub fn attach_pinned(
    ns: &NetNs,
    prog: &mut SchedClassifier,
    program: &'static str,
    iface: &str,
    dir: TcAttachType,
    mode: TcAttach,
    pin: &std::path::Path,
) -> Result<(), ProgramSetupError> {
    let id = attach(Some(ns), prog, program, iface, dir, mode)?;
    let link = prog
        .take_link(id)
        .map_err(|e| LoadError::attach(program, iface, e))?;
    if mode.uses_netlink() {
        std::mem::forget(link);
        return Ok(());
    }
    let fd = aya::programs::links::FdLink::try_from(link)
        .map_err(|source| ProgramSetupError::Link { program, source })?;
    fd.pin(pin)
        .map(drop)
        .map_err(|e| super::maps::pin_error(program, e))
}

/// What one BPF_PROG_TEST_RUN of a tc program returned.
#[derive(Debug, Clone)]
pub struct TestRunOutput {
    /// The program's return value (TC_ACT_*).
    pub verdict: i32,
    /// The kernel's average time per run, in nanoseconds.
    pub ns_per_run: u64,
    /// The frame after the program (the last run's).
    pub frame: Vec<u8>,
}

/// Runs loaded program `prog` (named `program`) `repeat` times on `frame`
/// through BPF_PROG_TEST_RUN.
pub fn test_run(
    prog: &mut SchedClassifier,
    program: &str,
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunOutput, ProgramSetupError> {
    use aya::programs::{TestRun as _, TestRunOptions};
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(|e| LoadError::Program {
            program: program.to_owned(),
            source: Box::new(e),
        })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutput {
        verdict: result.return_value as i32,
        ns_per_run: result.duration.as_nanos() as u64,
        frame: out,
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
