//! `lab down`: remove a lab's namespaces (and with them every link, route and
//! rule inside), collecting every error instead of stopping at the first, as
//! netavark does, so one stuck object does not leave the rest behind.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{plan::UPLINK, state::LabState};
use crate::{
    ebpf::error::ProgramSetupError,
    kernel::netns::{self, Entry, NETNS_RUN_DIR, NetNs, NetnsError},
    masq::nat,
};

#[derive(Debug, Error)]
pub enum TeardownError {
    #[error(
        "network namespace `{name}` is not the one this lab created (inode {found}, expected {expected}); left it alone"
    )]
    NotOurs {
        name: String,
        found: u64,
        expected: u64,
    },
    #[error(
        "network namespace `{name}` was created by an interrupted `lab up` that never recorded its inode, so labctl cannot prove it is this lab's and left it alone; if it is, delete it with `ip netns del {name}`"
    )]
    Unproven { name: String },
    #[error("{path} is not a network namespace; left it alone")]
    NotANamespace { path: PathBuf },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot remove eBPF masquerading: {0}")]
    Nat(Box<ProgramSetupError>),
    #[error("{0}")]
    Services(String),
    #[error("{0}")]
    Policy(String),
    #[error("cannot inspect or remove {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Deletes every namespace recorded for the lab, newest first. Returns what
/// could not be removed (empty: all gone).
pub fn teardown(state: &LabState) -> Vec<TeardownError> {
    // Which recorded namespaces are still this lab's.
    let mut refused = Vec::new();
    let mut ours = Vec::new();
    for record in state.namespaces.iter().rev() {
        let path = Path::new(NETNS_RUN_DIR).join(&record.name);
        let found = match netns::entry(&path) {
            Ok(Entry::Missing) => continue,
            Ok(Entry::Namespace(ino)) => ino,
            // An interrupted create or delete: no namespace, only its file.
            Ok(Entry::Leftover) => {
                if let Err(e) = netns::remove_leftover(&record.name) {
                    refused.push(e.into());
                }
                continue;
            }
            Ok(Entry::Other) => {
                refused.push(TeardownError::NotANamespace { path });
                continue;
            }
            Err(source) => {
                refused.push(TeardownError::Stat { path, source });
                continue;
            }
        };
        // Inode 0: `up` stopped between creating the namespace and recording
        // its inode. Nothing proves the namespace now there is that one.
        if record.inode == 0 {
            refused.push(TeardownError::Unproven {
                name: record.name.clone(),
            });
            continue;
        }
        // Any other mismatch means someone else's namespace has this name now.
        if found != record.inode {
            refused.push(TeardownError::NotOurs {
                name: record.name.clone(),
                found,
                expected: record.inode,
            });
            continue;
        }
        ours.push((record, NetNs::at(&record.name, &path)));
    }
    // The services' datapath (its pinned programs and maps outlive the
    // namespaces unless removed; socket-LB's hang on the lab's cgroup), the
    // pods' cgroups and the policy datapath first.
    let handles: Vec<NetNs> = ours.iter().map(|(_, ns)| ns.handle()).collect();
    let mut errors: Vec<TeardownError> = super::services::teardown(state, &handles)
        .into_iter()
        .map(TeardownError::Services)
        .collect();
    errors.extend(
        super::policy::teardown(state, &handles)
            .into_iter()
            .map(TeardownError::Policy),
    );
    errors.extend(refused);
    for (record, ns) in &ours {
        // eBPF masquerading pins (links and maps) outlive the namespace
        // unless removed; removing them detaches the programs.
        if let Err(e) = nat::detach(ns, record.inode, UPLINK) {
            errors.push(TeardownError::Nat(Box::new(e)));
        }
        if let Err(e) = netns::remove(&record.name, ns.path()) {
            errors.push(e.into());
        }
    }
    errors
}
