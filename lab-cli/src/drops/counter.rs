//! The drop counter with reason names: counts per (netns, reason, policy
//! verdict) in the kernel, named from this kernel's BTF, a policy
//! datapath's drops by their mark (`labctl demo --counter`, `metrics`).

use std::collections::BTreeMap;

use lab_common::DropCountKey;

use super::reasons::DropReasons;
use crate::{
    ebpf::{drop_counter::DropCounterProgram, error::ProgramSetupError},
    kernel::btf::KernelBtf,
};

/// The attached counter. Dropping it detaches the program.
pub struct DropCounter {
    program: DropCounterProgram,
    reasons: DropReasons,
}

impl DropCounter {
    /// Loads and attaches the counter; `netns_ino` restricts it to one netns.
    pub fn attach(netns_ino: Option<u32>) -> Result<Self, ProgramSetupError> {
        let btf = KernelBtf::from_sys()?;
        let reasons = DropReasons::from_btf(&btf)?;
        let consumed = reasons.value("CONSUMED").unwrap_or(1);
        Ok(Self {
            program: DropCounterProgram::attach(&btf, consumed, netns_ino)?,
            reasons,
        })
    }

    /// Current counts, summed over CPUs.
    pub fn counts(&self) -> Result<BTreeMap<DropCountKey, u64>, ProgramSetupError> {
        Ok(self.program.counts()?.into_iter().collect())
    }

    /// Drops the kernel side could not count (its map was full).
    pub fn uncounted(&self) -> Result<u64, ProgramSetupError> {
        self.program.uncounted()
    }

    pub fn reasons(&self) -> &DropReasons {
        &self.reasons
    }

    /// The name of a count's reason: `POLICY_DENIED`/`POLICY_DENY` for a
    /// policy datapath's drop, else the kernel's.
    pub fn name(&self, key: &DropCountKey) -> String {
        super::reasons::drop_name(&self.reasons, key.reason, key.policy)
    }
}
