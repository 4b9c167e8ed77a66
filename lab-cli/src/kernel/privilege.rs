//! Does this process hold what loading eBPF programs and changing network
//! namespaces requires?

use caps::{CapSet, Capability};
use thiserror::Error;

#[derive(Debug, Error)]
#[error(
    "labctl {command} needs {missing} (to load eBPF programs and manage network namespaces); try: sudo labctl {command}"
)]
pub struct PrivilegeError {
    pub command: String,
    pub missing: String,
}

/// The privileges that matter to labctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub root: bool,
    pub cap_bpf: bool,
    pub cap_net_admin: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
}

impl Privileges {
    pub fn current() -> Self {
        let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
        Self {
            root: nix::unistd::geteuid().is_root(),
            cap_bpf: has(Capability::CAP_BPF),
            cap_net_admin: has(Capability::CAP_NET_ADMIN),
            cap_perfmon: has(Capability::CAP_PERFMON),
            cap_sys_admin: has(Capability::CAP_SYS_ADMIN),
        }
    }

    /// Capabilities still missing. CAP_SYS_ADMIN stands in for CAP_BPF and
    /// CAP_PERFMON (kernels before 5.8 only know CAP_SYS_ADMIN).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !(self.cap_bpf || self.cap_sys_admin) {
            missing.push("CAP_BPF");
        }
        if !self.cap_net_admin {
            missing.push("CAP_NET_ADMIN");
        }
        if !(self.cap_perfmon || self.cap_sys_admin) {
            missing.push("CAP_PERFMON");
        }
        missing
    }

    /// A short description for doctor's table.
    pub fn describe(&self) -> String {
        let held: Vec<&str> = [
            (self.cap_bpf, "CAP_BPF"),
            (self.cap_net_admin, "CAP_NET_ADMIN"),
            (self.cap_perfmon, "CAP_PERFMON"),
            (self.cap_sys_admin, "CAP_SYS_ADMIN"),
        ]
        .iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, name)| *name)
        .collect();
        let who = if self.root { "root" } else { "not root" };
        if held.is_empty() {
            format!("{who}, no relevant capabilities")
        } else {
            format!("{who}, {}", held.join(" "))
        }
    }
}

/// Fails with a one-sentence error naming what is missing for `command`.
/// For commands that build network namespaces but load no eBPF: mounting
/// under /run/netns needs CAP_SYS_ADMIN, links and routes CAP_NET_ADMIN.
pub fn require_netns_admin(command: &str) -> Result<(), PrivilegeError> {
    let p = Privileges::current();
    let missing: Vec<&str> = [
        (p.cap_sys_admin, "CAP_SYS_ADMIN"),
        (p.cap_net_admin, "CAP_NET_ADMIN"),
    ]
    .iter()
    .filter(|(held, _)| !held)
    .map(|(_, name)| *name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PrivilegeError {
        command: command.to_owned(),
        missing: missing.join(" + "),
    })
}

pub fn require(command: &str) -> Result<(), PrivilegeError> {
    let missing = Privileges::current().missing();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PrivilegeError {
        command: command.to_owned(),
        missing: missing.join(" + "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let p = Privileges {
            root: false,
            cap_bpf: false,
            cap_net_admin: true,
            cap_perfmon: false,
            cap_sys_admin: true,
        };
        assert!(p.missing().is_empty());
    }

    #[test]
    fn lists_every_missing_capability() {
        let p = Privileges {
            root: false,
            cap_bpf: false,
            cap_net_admin: false,
            cap_perfmon: true,
            cap_sys_admin: false,
        };
        assert_eq!(p.missing(), vec!["CAP_BPF", "CAP_NET_ADMIN"]);
        let err = PrivilegeError {
            command: "trace".into(),
            missing: p.missing().join(" + "),
        };
        assert_eq!(
            err.to_string(),
            "labctl trace needs CAP_BPF + CAP_NET_ADMIN (to load eBPF programs and manage network namespaces); try: sudo labctl trace"
        );
    }
}
