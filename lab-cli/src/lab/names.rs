//! Lab members as namespace names: what a learner reads and types.
//!
//! Output names a lab's namespace `LAB/MEMBER` (`drops/pod-b`): stable
//! whichever other labs come and go. `--netns` accepts that, a bare member
//! (`pod-b`) when only one lab has it, and everything
//! [`netns::lookup`](crate::kernel::netns::lookup) accepts.

use std::collections::HashMap;

use super::{Lab, LabError, plan::validate_name, state::LabState};
use crate::kernel::netns::{self, NetNs, NetnsError};

/// `LAB/MEMBER` for every recorded lab namespace, by inode.
pub fn member_names() -> HashMap<u64, String> {
    let Ok(labs) = LabState::all() else {
        return HashMap::new();
    };
    labs.iter()
        .flat_map(|state| {
            let prefix = format!("{}-", state.lab);
            state.namespaces.iter().filter_map(move |r| {
                let member = r.name.strip_prefix(&prefix)?;
                (r.inode != 0).then(|| (r.inode, display(&state.lab, member)))
            })
        })
        .collect()
}

/// How output names member `member` of lab `lab`.
pub fn display(lab: &str, member: &str) -> String {
    format!("{lab}/{member}")
}

/// The namespace a user named with `--netns`: `LAB/MEMBER`, an `ip netns`
/// name, `host`, `pid:N`, an inode number, or a member of the one lab that
/// has it (`pod-a`).
pub fn lookup_netns(spec: &str) -> Result<NetNs, LabError> {
    if let Some((lab, member)) = spec.split_once('/') {
        validate_name(lab)?;
        return Lab::open(lab)?.netns(member);
    }
    match netns::lookup(spec) {
        Err(NetnsError::NotFound(_)) => {}
        found => return Ok(found?),
    }
    match Lab::find_member(None, spec) {
        Ok(lab) => lab.netns(spec),
        Err(e @ LabError::AmbiguousMember { .. }) => Err(e),
        Err(_) => Err(NetnsError::NotFound(spec.to_owned()).into()),
    }
}

/// `--netns` given (that namespace) or not (the caller's own: None).
pub fn lookup_netns_opt(spec: Option<&str>) -> Result<Option<NetNs>, LabError> {
    spec.map(lookup_netns).transpose()
}
