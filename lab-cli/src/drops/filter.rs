//! Turning the command line's filters into the tracer's in-kernel config.

use std::net::IpAddr;

use lab_common::trace::{TraceConfig, flags, policy_reasons};
use thiserror::Error;

use super::{
    reasons::{DropReasons, policy_reason},
    record::host_key,
};
use crate::kernel::netns::NetNs;

#[derive(Debug, Error)]
pub enum FilterError {
    #[error("{0}")]
    Netns(String),
    #[error("interface `{iface}` does not exist in {netns} (see `ip link`)")]
    NoInterface { iface: String, netns: String },
    #[error("unknown protocol `{0}`: use tcp, udp, icmp, icmpv6 or an IP protocol number")]
    Proto(String),
    #[error("unknown drop reason `{0}` on this kernel; `labctl explain --list` shows them")]
    Reason(String),
    #[error("--reason and --exclude-reason cannot be combined")]
    ReasonBoth,
}

/// The filters, as given on the command line (the namespace already
/// looked up: see `kernel::netns::lookup` and `lab::lookup_netns`).
#[derive(Debug, Default)]
pub struct Filters {
    pub netns: Option<NetNs>,
    pub iface: Option<String>,
    pub proto: Option<String>,
    pub host: Option<IpAddr>,
    pub port: Option<u16>,
    pub reasons: Vec<String>,
    pub exclude_reasons: Vec<String>,
}

pub fn proto_number(p: &str) -> Result<u8, FilterError> {
    lab_common::proto::number(p).ok_or_else(|| FilterError::Proto(p.into()))
}

impl Filters {
    pub fn to_config(&self, reasons: &DropReasons) -> Result<TraceConfig, FilterError> {
        let mut c = TraceConfig::ZERO;
        if let Some(ns) = &self.netns {
            let ino = ns.inode().map_err(|e| FilterError::Netns(e.to_string()))?;
            // The kernel's netns inode numbers (proc_inum) are 32-bit.
            c.netns_ino = u32::try_from(ino)
                .map_err(|_| FilterError::Netns(format!("namespace inode {ino} is not 32-bit")))?;
        }
        if let Some(iface) = &self.iface {
            let lookup = || nix::net::if_::if_nametoindex(iface.as_str()).ok();
            // The interface is looked up in the namespace it lives in.
            let index = match &self.netns {
                Some(ns) => ns
                    .run(lookup)
                    .map_err(|e| FilterError::Netns(e.to_string()))?,
                None => lookup(),
            };
            c.ifindex = index.ok_or_else(|| FilterError::NoInterface {
                iface: iface.clone(),
                netns: self
                    .netns
                    .as_ref()
                    .map_or("the current namespace".into(), |n| {
                        format!("namespace {}", n.name())
                    }),
            })?;
        }
        if let Some(p) = &self.proto {
            c.l4proto = proto_number(p)?;
        }
        if let Some(host) = self.host {
            c.flags |= flags::HOST;
            c.host = host_key(host);
        }
        c.port = self.port.unwrap_or(0);
        if !self.reasons.is_empty() && !self.exclude_reasons.is_empty() {
            return Err(FilterError::ReasonBoth);
        }
        if !self.reasons.is_empty() {
            c.flags |= flags::REASON_INCLUDE;
        }
        for r in self.reasons.iter().chain(&self.exclude_reasons) {
            // A policy drop is filtered by its mark's name, not the
            // kernel's generic reason.
            if let Some(deny) = policy_reason(r) {
                c.policy_reasons |= if deny {
                    policy_reasons::DENY
                } else {
                    policy_reasons::DENIED
                };
                continue;
            }
            let code = reasons
                .value(r)
                .ok_or_else(|| FilterError::Reason(r.clone()))?;
            c.set_reason_bit(code);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons() -> DropReasons {
        DropReasons::from_values(
            vec![
                ("SKB_DROP_REASON_NOT_SPECIFIED".into(), 2),
                ("SKB_DROP_REASON_NO_SOCKET".into(), 3),
            ],
            vec![],
        )
    }

    #[test]
    fn builds_the_kernel_filter() {
        let f = Filters {
            proto: Some("UDP".into()),
            host: Some("10.0.0.1".parse().unwrap()),
            port: Some(53),
            exclude_reasons: vec!["not_specified".into()],
            ..Default::default()
        };
        let c = f.to_config(&reasons()).unwrap();
        assert_eq!((c.l4proto, c.port), (17, 53));
        assert_eq!(c.flags & flags::HOST, flags::HOST);
        assert_eq!(&c.host[10..], &[0xff, 0xff, 10, 0, 0, 1]);
        assert!(!c.reason_allowed(2));
        assert!(c.reason_allowed(3));
    }

    #[test]
    fn policy_reasons_are_filtered_by_name() {
        let f = Filters {
            reasons: vec!["policy_denied".into()],
            ..Default::default()
        };
        let c = f.to_config(&reasons()).unwrap();
        assert!(c.policy_allowed(false));
        assert!(!c.policy_allowed(true));
        // Only the policy drop: every kernel reason is left out.
        assert!(!c.reason_allowed(3) && !c.reason_allowed(2));
        let f = Filters {
            exclude_reasons: vec!["POLICY_DENY".into(), "NO_SOCKET".into()],
            ..Default::default()
        };
        let c = f.to_config(&reasons()).unwrap();
        assert!(c.policy_allowed(false) && !c.policy_allowed(true));
        assert!(!c.reason_allowed(3) && c.reason_allowed(2));
    }

    #[test]
    fn bad_filters_are_one_sentence_errors() {
        let r = reasons();
        let err = |f: Filters| f.to_config(&r).unwrap_err().to_string();
        assert!(
            err(Filters {
                proto: Some("sctpx".into()),
                ..Default::default()
            })
            .contains("unknown protocol")
        );
        assert!(
            err(Filters {
                reasons: vec!["NOPE".into()],
                ..Default::default()
            })
            .contains("unknown drop reason `NOPE`")
        );
        // The namespace is looked up before the filters are built.
        assert!(
            crate::kernel::netns::lookup("labctl-no-such-ns")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(
            err(Filters {
                reasons: vec!["NO_SOCKET".into()],
                exclude_reasons: vec!["NOT_SPECIFIED".into()],
                ..Default::default()
            })
            .contains("cannot be combined")
        );
    }
}
