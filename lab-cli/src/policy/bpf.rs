//! `--policy-mode ebpf`: Cilium's identity-based policy (identities, an
//! ipcache, a policy map per endpoint, tc programs on the pods' veths).
//! (Being built: until then the mode records policies and refuses to
//! enforce them, saying so.)

use super::{
    PolicyError, PolicyMode,
    datapath::{Nodes, PolicyDatapath, PolicyPlan, Want},
};

/// What one target of an eBPF policy plan writes.
#[derive(Debug)]
pub enum Write {}

pub struct Ebpf {
    #[allow(dead_code, reason = "the datapath being built works on them")]
    nodes: Nodes,
}

impl Ebpf {
    pub fn new(nodes: Nodes) -> Self {
        Self { nodes }
    }
}

impl PolicyDatapath for Ebpf {
    fn mode(&self) -> PolicyMode {
        PolicyMode::Ebpf
    }

    fn check(&self) -> Result<(), PolicyError> {
        Err(PolicyError::NotEnforced("ebpf"))
    }

    fn unit(&self) -> &'static str {
        "ipcache and policy map entries"
    }

    fn plan(&self, _want: &Want<'_>) -> Result<PolicyPlan, PolicyError> {
        Err(PolicyError::NotEnforced("ebpf"))
    }

    fn apply(&self, _plan: &PolicyPlan) -> Result<(), PolicyError> {
        Err(PolicyError::NotEnforced("ebpf"))
    }

    fn teardown(&self) -> Result<(), PolicyError> {
        Ok(())
    }

    fn loads_programs(&self) -> bool {
        true
    }
}
