//! labctl's eBPF connection tracker as conntrack entries: its raw rows
//! (from `ebpf::ct_tracker`) named, aged and expired the way netfilter
//! does, so both views can be compared line for line.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use thiserror::Error;

use lab_common::{
    ct::{CtCounters, CtKey, CtValue, ORIG, REPLY, tcp_state},
    proto,
};

use super::entry::{Counters, CtEntry, Source, TCP_STATES, Tuple, proto_name};
use crate::{
    ebpf::{
        ct_tracker::{CtRow, CtTrackerProgram},
        error::ProgramSetupError,
        pins::{self, PinLock},
    },
    kernel::{clock, netns::NetNs},
};

#[derive(Debug, Error)]
pub enum TrackerError {
    #[error(
        "a tracker is already running on {iface} in this namespace (its table is pinned at {pin}); list it with `labctl conntrack list --source bpf`, or stop that `conntrack track` first"
    )]
    Busy { iface: String, pin: PathBuf },
    #[error("cannot remove the stale tracker table {pin}: {source}")]
    Stale {
        pin: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Setup(#[from] ProgramSetupError),
}

/// The tracker attached to one interface. Dropping it detaches, unpins
/// and then releases the lock on its pin directory (fields drop in order).
pub struct CtTracker {
    program: CtTrackerProgram,
    lock: Option<PinLock>,
}

impl CtTracker {
    /// Loads the tracker and attaches it to both directions of `iface` in
    /// `ns` (None: the caller's namespace).
    pub fn attach(ns: Option<&NetNs>, iface: &str) -> Result<Self, ProgramSetupError> {
        Ok(Self {
            program: CtTrackerProgram::attach(ns, iface)?,
            lock: None,
        })
    }

    pub fn iface(&self) -> &str {
        self.program.iface()
    }

    /// The live flows of the table, as conntrack entries.
    pub fn entries(&self) -> Result<Vec<CtEntry>, ProgramSetupError> {
        Ok(to_entries(self.program.rows()?, clock::monotonic_ns()))
    }

    /// Pins the table for `conntrack list --source bpf` (in the namespace
    /// with inode `netns_ino`), holding the pin directory's lock while the
    /// tracker lives. A directory nobody holds was left by a killed tracker
    /// and is replaced; one a live tracker holds is refused.
    pub fn publish(&mut self, netns_ino: u64) -> Result<PathBuf, TrackerError> {
        pins::ensure_root()?;
        let iface = self.program.iface().to_owned();
        let dir = pins::tracker(netns_ino, &iface);
        let busy = || TrackerError::Busy {
            iface: iface.clone(),
            pin: dir.clone(),
        };
        if std::fs::symlink_metadata(&dir).is_ok() {
            if pins::is_held(&dir) {
                return Err(busy());
            }
            remove_stale(&dir)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ProgramSetupError::Io {
                path: dir.clone(),
                source,
            })?;
        // Lock before pinning, so no reader ever sees an unlocked table.
        self.lock = Some(pins::lock(&dir)?.ok_or_else(busy)?);
        self.program.pin(&dir)?;
        Ok(dir)
    }
}

fn remove_stale(dir: &Path) -> Result<(), TrackerError> {
    tracing::info!(
        "replacing {}, left by a tracker that was killed",
        dir.display()
    );
    std::fs::remove_dir_all(dir).map_err(|source| TrackerError::Stale {
        pin: dir.to_owned(),
        source,
    })
}

/// The pin directories of the trackers running in the namespace with inode
/// `netns_ino`; tables left by killed trackers are removed on the way.
pub fn running(netns_ino: u64) -> Result<Vec<PathBuf>, TrackerError> {
    let mut live = Vec::new();
    for dir in pins::trackers(netns_ino)? {
        if pins::is_held(&dir) {
            live.push(dir);
        } else {
            remove_stale(&dir)?;
        }
    }
    Ok(live)
}

/// The entries of a tracker pinned by `conntrack track` in `dir`.
pub fn read_pinned(dir: &Path) -> Result<Vec<CtEntry>, ProgramSetupError> {
    Ok(to_entries(
        crate::ebpf::ct_tracker::read_pinned(dir)?,
        clock::monotonic_ns(),
    ))
}

/// How long an idle flow lives, by protocol and state, in seconds: the
/// netfilter defaults (nf_conntrack_*_timeout*), so both views age alike.
pub fn lifetime_s(proto: u8, state: u8, seen_reply: bool) -> u64 {
    match (proto, state) {
        (proto::TCP, tcp_state::ESTABLISHED) => 432_000,
        (proto::TCP, tcp_state::SYN_SENT | tcp_state::SYN_RECV) => 120,
        (proto::TCP, tcp_state::FIN_WAIT | tcp_state::CLOSE_WAIT | tcp_state::TIME_WAIT) => 120,
        (proto::TCP, tcp_state::LAST_ACK) => 30,
        (proto::TCP, tcp_state::CLOSE) => 10,
        (proto::TCP, _) => 300,
        (proto::UDP, _) if seen_reply => 120,
        (proto::UDP, _) => 30,
        _ => 30,
    }
}

/// Table rows to entries, leaving out flows idle past their lifetime.
pub fn to_entries(raw: Vec<CtRow>, now_ns: u64) -> Vec<CtEntry> {
    let mut out: Vec<CtEntry> = raw
        .into_iter()
        .filter_map(|(k, v, c)| {
            let idle_s = now_ns.saturating_sub(v.last_ns) / 1_000_000_000;
            let life = lifetime_s(k.proto, v.state, v.seen_reply != 0);
            (idle_s < life).then(|| entry(&k, &v, &c, now_ns, life - idle_s))
        })
        .collect();
    out.sort_by_key(CtEntry::key);
    out
}

fn entry(k: &CtKey, v: &CtValue, c: &CtCounters, now_ns: u64, timeout: u64) -> CtEntry {
    let addr = |a: u32| IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes()));
    let port = |p: u16| u16::from_be(p);
    let icmp = k.proto == proto::ICMP;
    let tuple = |src, dst, sport, dport, echo_type: u8| Tuple {
        src,
        dst,
        sport: (!icmp).then_some(sport),
        dport: (!icmp).then_some(dport),
        icmp_type: icmp.then_some(echo_type),
        icmp_code: icmp.then_some(0),
        icmp_id: icmp.then_some(sport),
    };
    let (s, d, sp, dp) = (addr(k.saddr), addr(k.daddr), port(k.sport), port(k.dport));
    let mut flags = Vec::new();
    if v.seen_reply != 0 {
        flags.push("SEEN_REPLY");
    }
    CtEntry {
        source: Source::Bpf,
        family: "ipv4",
        proto: proto_name(k.proto, false),
        proto_num: k.proto,
        state: (k.proto == proto::TCP).then(|| {
            TCP_STATES
                .get(usize::from(v.state))
                .map_or_else(|| v.state.to_string(), |s| (*s).to_owned())
        }),
        orig: tuple(s, d, sp, dp, 8),
        reply: tuple(d, s, dp, sp, 0),
        timeout: Some(u32::try_from(timeout).unwrap_or(u32::MAX)),
        flags,
        mark: 0,
        zone: 0,
        orig_counters: Some(Counters {
            packets: c.packets[ORIG],
            bytes: c.bytes[ORIG],
        }),
        reply_counters: Some(Counters {
            packets: c.packets[REPLY],
            bytes: c.bytes[REPLY],
        }),
        id: None,
        age_s: Some(now_ns.saturating_sub(v.first_ns) / 1_000_000_000),
        idle_s: Some(now_ns.saturating_sub(v.last_ns) / 1_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(proto: u8, state: u8, last_ns: u64) -> (CtKey, CtValue, CtCounters) {
        (
            CtKey::new(
                u32::from_ne_bytes([10, 244, 1, 2]),
                u32::from_ne_bytes([10, 244, 1, 3]),
                40000u16.to_be(),
                8080u16.to_be(),
                proto,
            ),
            CtValue {
                first_ns: 0,
                last_ns,
                state,
                fin_dir: 0,
                seen_reply: 1,
                _pad: [0; 5],
            },
            CtCounters {
                packets: [3, 2],
                bytes: [180, 120],
            },
        )
    }

    #[test]
    fn rows_become_entries_in_host_order_and_expire() {
        let now = 100 * 1_000_000_000;
        let entries = to_entries(vec![raw(6, tcp_state::ESTABLISHED, now)], now);
        let e = &entries[0];
        assert_eq!(e.orig.describe(), "10.244.1.2:40000 → 10.244.1.3:8080");
        assert_eq!(e.reply.describe(), "10.244.1.3:8080 → 10.244.1.2:40000");
        assert_eq!(e.state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(
            e.orig_counters,
            Some(Counters {
                packets: 3,
                bytes: 180
            })
        );
        assert_eq!(e.age_s, Some(100));
        assert_eq!(e.timeout, Some(432_000));
        // A replied UDP flow idle for 121 s has expired.
        assert!(to_entries(vec![raw(17, 0, 0)], 121 * 1_000_000_000).is_empty());
        assert_eq!(
            to_entries(vec![raw(17, 0, 0)], 20 * 1_000_000_000)[0].timeout,
            Some(100)
        );
    }
}
