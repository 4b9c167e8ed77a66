//! Conntrack accounting (net.netfilter.nf_conntrack_acct): without it the
//! kernel counts no packets or bytes per flow, and every counter reads 0.

use crate::kernel::{
    netns::{NetNs, NetnsError},
    sysctl::{self, SysctlError},
};

const KEY: [&str; 3] = ["net", "netfilter", "nf_conntrack_acct"];

#[derive(Debug, thiserror::Error)]
pub enum AcctError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error("cannot read net.netfilter.nf_conntrack_acct: {0}")]
    Read(std::io::Error),
}

fn in_ns<R: Send>(ns: Option<&NetNs>, f: impl FnOnce() -> R + Send) -> Result<R, AcctError> {
    Ok(match ns {
        Some(ns) => ns.run(f)?,
        None => f(),
    })
}

/// Whether accounting is on in `ns` (None: this namespace).
pub fn enabled(ns: Option<&NetNs>) -> Result<bool, AcctError> {
    let value = in_ns(ns, || sysctl::read(&KEY))?.map_err(AcctError::Read)?;
    Ok(value != "0")
}

/// Turns accounting on or off in `ns`.
pub fn set(ns: Option<&NetNs>, on: bool) -> Result<(), AcctError> {
    in_ns(ns, || sysctl::write(&KEY, if on { "1" } else { "0" }))??;
    Ok(())
}

/// Accounting turned on for as long as this lives, then put back off
/// (only if it was off before).
pub struct AcctGuard<'a> {
    ns: Option<&'a NetNs>,
    restore: bool,
}

impl<'a> AcctGuard<'a> {
    pub fn enable(ns: Option<&'a NetNs>) -> Result<Self, AcctError> {
        let was_on = enabled(ns)?;
        if !was_on {
            set(ns, true)?;
        }
        Ok(Self {
            ns,
            restore: !was_on,
        })
    }

    /// Whether this view turned accounting on (older flows show no counts).
    pub fn turned_on(&self) -> bool {
        self.restore
    }
}

impl Drop for AcctGuard<'_> {
    fn drop(&mut self) {
        if self.restore
            && let Err(e) = set(self.ns, false)
        {
            tracing::warn!("cannot turn conntrack accounting back off: {e}");
        }
    }
}
