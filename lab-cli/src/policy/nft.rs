//! `--policy-mode netfilter`: NetworkPolicy as nft rules, as Calico and
//! kube-router write them (per-pod chains, sets of peer addresses).
//! (Being built: until then the mode records policies and refuses to
//! enforce them, saying so.)

use super::{
    PolicyError, PolicyMode,
    datapath::{Nodes, PolicyDatapath, PolicyPlan, Want},
};

pub struct Netfilter {
    #[allow(dead_code, reason = "the datapath being built works on them")]
    nodes: Nodes,
}

impl Netfilter {
    pub fn new(nodes: Nodes) -> Self {
        Self { nodes }
    }
}

impl PolicyDatapath for Netfilter {
    fn mode(&self) -> PolicyMode {
        PolicyMode::Netfilter
    }

    fn check(&self) -> Result<(), PolicyError> {
        Err(PolicyError::NotEnforced("netfilter"))
    }

    fn unit(&self) -> &'static str {
        "nft rules and set elements"
    }

    fn plan(&self, _want: &Want<'_>) -> Result<PolicyPlan, PolicyError> {
        Err(PolicyError::NotEnforced("netfilter"))
    }

    fn apply(&self, _plan: &PolicyPlan) -> Result<(), PolicyError> {
        Err(PolicyError::NotEnforced("netfilter"))
    }

    fn teardown(&self) -> Result<(), PolicyError> {
        Ok(())
    }
}
