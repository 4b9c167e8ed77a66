//! Running a netfilter tool (`nft`, `iptables-restore`, `iptables-save`)
//! inside a network namespace: no well-kept Rust crate builds nftables
//! rules (expressions, sets, NAT) over netlink, and these tools are what a
//! learner uses to look at the same objects.

use std::io;

use thiserror::Error;

use super::netns::{NetNs, NetnsError};

#[derive(Debug, Error)]
pub enum ToolError {
    #[error("cannot run {program} in network namespace `{netns}`: {source}")]
    Run {
        program: &'static str,
        netns: String,
        source: io::Error,
    },
    #[error("{program} refused the rules for network namespace `{netns}`: {stderr}")]
    Refused {
        program: &'static str,
        netns: String,
        stderr: String,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Runs `program ARGS` in `ns` with `stdin`: its standard output, or its
/// complaint as an error.
pub fn run(
    ns: &NetNs,
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, ToolError> {
    let netns = ns.name().to_owned();
    let output = ns
        .output(program, args, stdin)?
        .map_err(|source| ToolError::Run {
            program,
            netns: netns.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ToolError::Refused {
            program,
            netns,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
