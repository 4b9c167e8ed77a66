//! `lab exec`: run a command inside a lab member's namespace, as
//! `ip netns exec` does (including a private /sys for that namespace, so
//! tools reading /sys/class/net see the member's interfaces).

use std::{
    io,
    os::unix::process::CommandExt as _,
    process::{Command, ExitStatus},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};
use thiserror::Error;

use crate::kernel::netns::NetNs;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("cannot run the command in the pod's cgroup: {0}")]
    Cgroup(#[from] crate::kernel::cgroup::CgroupError),
    #[error("no command given; usage: labctl lab exec MEMBER -- COMMAND [ARGS...]")]
    NoCommand,
    #[error("cannot open network namespace `{netns}`: {source}")]
    Open { netns: String, source: io::Error },
    #[error("cannot run `{program}` in `{netns}`: {source}")]
    Spawn {
        program: String,
        netns: String,
        source: io::Error,
    },
}

impl ExecError {
    /// The exit code a shell gives when it cannot run a command: 127 when
    /// it does not exist, 126 when it is not executable.
    pub fn shell_code(&self) -> Option<u8> {
        match self {
            ExecError::Spawn { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => Some(127),
                io::ErrorKind::PermissionDenied => Some(126),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Runs `argv` in `ns` (and in cgroup `cgroup`, a pod's under socket-LB)
/// and waits for it.
pub fn run(
    ns: &NetNs,
    cgroup: Option<&std::path::Path>,
    argv: &[String],
) -> Result<ExitStatus, ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::NoCommand)?;
    let file = std::fs::File::open(ns.path()).map_err(|source| ExecError::Open {
        netns: ns.name().to_owned(),
        source,
    })?;
    let procs = cgroup.map(crate::kernel::cgroup::procs_file).transpose()?;
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // system calls (setns, unshare, mount), which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if let Some(procs) = &procs {
                // "0": the writing process itself (write(2) only).
                nix::unistd::write(procs, b"0\n")?;
            }
            setns(&file, CloneFlags::CLONE_NEWNET)?;
            unshare(CloneFlags::CLONE_NEWNS)?;
            // Keep our mount changes private, then give the child a sysfs
            // that belongs to the new network namespace.
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )?;
            umount2("/sys", MntFlags::MNT_DETACH)?;
            mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            )?;
            Ok(())
        });
    }
    command
        .spawn()
        .and_then(|mut child| crate::kernel::child::wait_forwarding(&mut child))
        .map_err(|source| ExecError::Spawn {
            program: program.clone(),
            netns: ns.name().to_owned(),
            source,
        })
}
