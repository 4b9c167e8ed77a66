//! Cilium's connection-tracking maps (`--source cilium`), read from their
//! pins under /sys/fs/bpf/tc/globals, as `cilium bpf ct list global` does.
//!
//! Layout (Cilium v1.16, `bpf/lib/common.h`; the sizes have been stable
//! since v1.10, v1.16 renamed the first two counters to reserved0 and
//! backend_id and keeps one packets/bytes pair):
//!
//! - key `struct ipv4_ct_tuple`, 14 bytes, packed: `daddr`, `saddr` (__be32),
//!   `dport`, `sport` (__be16), `nexthdr`, `flags` (u8). Cilium's own CLI
//!   (Go `TupleKey4`) reads the fields as DestAddr, SourceAddr, SourcePort,
//!   DestPort and prints `SourceAddr:SourcePort -> DestAddr:DestPort`; we
//!   show them the same way. `struct ipv6_ct_tuple` is the same with 16-byte
//!   addresses (38 bytes).
//! - value `struct ct_entry`, 56 bytes: reserved0, backend_id, packets,
//!   bytes (u64); lifetime (u32, seconds of bpf_mono_now()); a u16 of flag
//!   bits (rx_closing, tx_closing, ...); rev_nat_index, ifindex (u16);
//!   tx_flags_seen, rx_flags_seen (u8); src_sec_id, last_tx_report,
//!   last_rx_report (u32).
//! - tuple flags: TUPLE_F_OUT 0, TUPLE_F_IN 1, TUPLE_F_RELATED 2,
//!   TUPLE_F_SERVICE 4.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use thiserror::Error;

use super::entry::{Counters, CtEntry, Source, Tuple, proto_name};
use crate::ebpf::{error::ProgramSetupError, maps};

pub const MAPS: [&str; 4] = [
    "/sys/fs/bpf/tc/globals/cilium_ct4_global",
    "/sys/fs/bpf/tc/globals/cilium_ct_any4_global",
    "/sys/fs/bpf/tc/globals/cilium_ct6_global",
    "/sys/fs/bpf/tc/globals/cilium_ct_any6_global",
];

const V4_KEY: usize = 14;
const V6_KEY: usize = 38;
const VALUE: usize = 56;

#[derive(Debug, Error)]
pub enum CiliumError {
    #[error(
        "Cilium's CT maps are not on this machine (looked for {}); Cilium is not running here, or bpffs is not mounted at /sys/fs/bpf",
        MAPS[0]
    )]
    Absent,
    #[error("cannot read {path}")]
    Map {
        path: String,
        #[source]
        source: Box<ProgramSetupError>,
    },
}

/// Every entry of every Cilium CT map present.
pub fn read_all() -> Result<Vec<CtEntry>, CiliumError> {
    let present: Vec<&str> = MAPS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    if present.is_empty() {
        return Err(CiliumError::Absent);
    }
    let now_s = crate::kernel::clock::monotonic_ns() / 1_000_000_000;
    let mut out = Vec::new();
    for path in present {
        let err = |source| CiliumError::Map {
            path: path.to_owned(),
            source: Box::new(source),
        };
        if path.ends_with("4_global") {
            let rows = maps::pinned_hash_rows::<V4_KEY, VALUE>(Path::new(path), "cilium_ct4")
                .map_err(err)?;
            out.extend(rows.iter().filter_map(|(k, v)| decode(k, v, now_s)));
        } else {
            let rows = maps::pinned_hash_rows::<V6_KEY, VALUE>(Path::new(path), "cilium_ct6")
                .map_err(err)?;
            out.extend(rows.iter().filter_map(|(k, v)| decode(k, v, now_s)));
        }
    }
    Ok(out)
}

/// One map record (a v4 or v6 key) as an entry.
pub fn decode(key: &[u8], value: &[u8; VALUE], now_s: u64) -> Option<CtEntry> {
    let alen = match key.len() {
        V4_KEY => 4,
        V6_KEY => 16,
        _ => return None,
    };
    let addr = |b: &[u8]| -> IpAddr {
        if alen == 4 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[..16]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    };
    let dst = addr(&key[0..alen]);
    let src = addr(&key[alen..2 * alen]);
    let p = 2 * alen;
    let sport = u16::from_be_bytes([key[p], key[p + 1]]);
    let dport = u16::from_be_bytes([key[p + 2], key[p + 3]]);
    let nexthdr = key[p + 4];
    let tuple_flags = key[p + 5];
    let u64_at = |o: usize| u64::from_ne_bytes(value[o..o + 8].try_into().unwrap_or([0; 8]));
    let lifetime = u32::from_ne_bytes(value[32..36].try_into().unwrap_or([0; 4]));
    let bits = u16::from_ne_bytes([value[36], value[37]]);
    let icmp = matches!(nexthdr, 1 | 58);
    let mut flags = vec![match tuple_flags & 0x3 {
        0 => "OUT",
        1 => "IN",
        _ => "RELATED",
    }];
    if tuple_flags & 4 != 0 {
        flags.push("SERVICE");
    }
    if bits & 1 != 0 {
        flags.push("RX_CLOSING");
    }
    if bits & 2 != 0 {
        flags.push("TX_CLOSING");
    }
    if bits & (1 << 4) != 0 {
        flags.push("SEEN_NON_SYN");
    }
    if bits & (1 << 5) != 0 {
        flags.push("NODE_PORT");
    }
    let tuple = |src, dst, sport: u16, dport: u16| Tuple {
        src,
        dst,
        sport: (!icmp).then_some(sport),
        dport: (!icmp).then_some(dport),
        icmp_type: None,
        icmp_code: None,
        icmp_id: icmp.then_some(sport),
    };
    Some(CtEntry {
        source: Source::Cilium,
        family: if alen == 4 { "ipv4" } else { "ipv6" },
        proto: proto_name(nexthdr, alen == 16),
        proto_num: nexthdr,
        state: None,
        orig: tuple(src, dst, sport, dport),
        reply: tuple(dst, src, dport, sport),
        timeout: Some(u64::from(lifetime).saturating_sub(now_s) as u32),
        flags,
        mark: 0,
        zone: 0,
        orig_counters: Some(Counters {
            packets: u64_at(16),
            bytes: u64_at(24),
        }),
        reply_counters: None,
        id: None,
        age_s: None,
        idle_s: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v4_record_reads_as_cilium_prints_it() {
        // 10.0.0.2:80 <- 10.0.0.1:48000, TCP, TUPLE_F_OUT.
        let mut key = [0u8; V4_KEY];
        key[0..4].copy_from_slice(&[10, 0, 0, 2]);
        key[4..8].copy_from_slice(&[10, 0, 0, 1]);
        key[8..10].copy_from_slice(&48000u16.to_be_bytes());
        key[10..12].copy_from_slice(&80u16.to_be_bytes());
        key[12] = 6;
        let mut value = [0u8; VALUE];
        value[16..24].copy_from_slice(&12u64.to_ne_bytes());
        value[24..32].copy_from_slice(&3000u64.to_ne_bytes());
        value[32..36].copy_from_slice(&1100u32.to_ne_bytes());
        value[36] = 1 << 4;
        let e = decode(&key, &value, 1000).unwrap();
        assert_eq!(e.orig.describe(), "10.0.0.1:48000 → 10.0.0.2:80");
        assert_eq!(e.proto, "tcp");
        assert_eq!(e.timeout, Some(100));
        assert_eq!(e.flags, ["OUT", "SEEN_NON_SYN"]);
        assert_eq!(
            e.orig_counters,
            Some(Counters {
                packets: 12,
                bytes: 3000
            })
        );
        assert!(decode(&key[..10], &value, 0).is_none());
    }
}
