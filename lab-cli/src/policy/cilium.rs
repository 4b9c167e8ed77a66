//! Cilium's own policy maps, read from their pins under
//! /sys/fs/bpf/tc/globals, as `cilium bpf ipcache list` and `cilium bpf
//! policy get EPID` read them (`labctl policy endpoints|identities|map
//! --cilium`).
//!
//! Layouts (`bpf/lib/maps.h`, `bpf/lib/eps.h`; little-endian hosts):
//!
//! - `cilium_ipcache` (v1.16) / `cilium_ipcache_v2` (v1.17+): LPM trie;
//!   key `struct ipcache_key` after the 4-byte prefix length (20 bytes):
//!   `cluster_id` (u16), `pad1` (u8), `family` (u8: 1 IPv4, 2 IPv6), the
//!   address (16 bytes, IPv4 in the first 4, network order); the prefix
//!   length counts from `cluster_id`, so an IPv4 /N is 32 + N. Value
//!   `struct remote_endpoint_info`: `sec_identity` (u32) first, then the
//!   tunnel endpoint, key and flags: 12 bytes with an IPv4 tunnel
//!   endpoint, 24 where it may be IPv6. Only `sec_identity` is read, from
//!   either.
//! - `cilium_policy_<EPID>` (v1.16, EPID zero-padded to 5 digits) /
//!   `cilium_policy_v2_<EPID>` (v1.17+): LPM trie, one per endpoint; key
//!   `struct policy_key` after the prefix length (8 bytes): `sec_label`
//!   (u32, 0 any), `egress` (u8), `protocol` (u8, 0 any), `dport` (__be16);
//!   the prefix length counts from `sec_label` (`POLICY_FULL_PREFIX` 64),
//!   so the protocol-and-port prefix is the prefix length minus 40. Value
//!   `struct policy_entry` (24 bytes): `proxy_port` (__be16), a flags byte
//!   whose bit 0 is `deny` and bits 3-7 the protocol-and-port prefix length,
//!   `auth_type` (u8), 4 bytes (padding, or v2's precedence), `packets`
//!   and `bytes` (u64).
//!
//! labctl's own maps (`lab_common::policy`) share these layouts, with the
//! endpoint id in front of the policy key.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::ebpf::{error::ProgramSetupError, maps::pinned_lpm_rows as lpm_rows};

/// Where Cilium pins its maps.
pub const GLOBALS: &str = "/sys/fs/bpf/tc/globals";
const IPCACHE: [&str; 2] = ["cilium_ipcache_v2", "cilium_ipcache"];

/// Cilium's ipcache in `dir`, if it has one.
pub fn ipcache_path(dir: &Path) -> Option<PathBuf> {
    IPCACHE.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

/// Every IPv4 entry of Cilium's ipcache: block → identity.
pub fn ipcache(dir: &Path) -> Result<Vec<(Ipv4Net, u32)>, ProgramSetupError> {
    let Some(path) = ipcache_path(dir) else {
        return Err(ProgramSetupError::Io {
            path: dir.join(IPCACHE[0]),
            source: std::io::ErrorKind::NotFound.into(),
        });
    };
    // The value grew from 12 to 24 bytes; the identity leads both.
    match lpm_rows::<20, 24>(&path, "cilium_ipcache") {
        Ok(rows) => Ok(ipcache_rows(rows.iter().map(|(p, k, v)| (*p, k, &v[..])))),
        Err(_) => {
            let rows = lpm_rows::<20, 12>(&path, "cilium_ipcache")?;
            Ok(ipcache_rows(rows.iter().map(|(p, k, v)| (*p, k, &v[..]))))
        }
    }
}

fn ipcache_rows<'a>(
    rows: impl Iterator<Item = (u32, &'a [u8; 20], &'a [u8])>,
) -> Vec<(Ipv4Net, u32)> {
    let mut out: Vec<(Ipv4Net, u32)> = rows
        .filter(|(_, k, _)| k[3] == 1)
        .filter_map(|(prefix, k, v)| {
            let len = u8::try_from(prefix.checked_sub(32)?).ok()?;
            let addr = Ipv4Addr::new(k[4], k[5], k[6], k[7]);
            let id = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
            Some((Ipv4Net::new(addr, len).ok()?.trunc(), id))
        })
        .collect();
    out.sort();
    out
}

/// Cilium's endpoint policy maps in `dir`: endpoint id → path.
pub fn policy_maps(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_prefix("cilium_policy_v2_")
                .or_else(|| name.strip_prefix("cilium_policy_"))?;
            Some((id.parse().ok()?, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// One entry of an endpoint's policy map, with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CiliumEntry {
    pub identity: u32,
    pub egress: bool,
    pub protocol: u8,
    /// Host order.
    pub dport: u16,
    /// The protocol-and-port prefix length (0-24).
    pub prefix: u32,
    pub deny: bool,
    pub packets: u64,
    pub bytes: u64,
}

/// The entries of Cilium's policy map at `path`.
pub fn policy_entries(path: &Path) -> Result<Vec<CiliumEntry>, ProgramSetupError> {
    Ok(lpm_rows::<8, 24>(path, "cilium_policy")?
        .into_iter()
        .map(|(prefix, k, v)| {
            let u64_at = |i: usize| {
                u64::from_ne_bytes([
                    v[i],
                    v[i + 1],
                    v[i + 2],
                    v[i + 3],
                    v[i + 4],
                    v[i + 5],
                    v[i + 6],
                    v[i + 7],
                ])
            };
            CiliumEntry {
                identity: u32::from_ne_bytes([k[0], k[1], k[2], k[3]]),
                egress: k[4] != 0,
                protocol: k[5],
                dport: u16::from_be_bytes([k[6], k[7]]),
                prefix: prefix.saturating_sub(40),
                deny: v[2] & 1 != 0,
                packets: u64_at(8),
                bytes: u64_at(16),
            }
        })
        .collect())
}

/// `80/TCP`, `TCP`, `ANY`, `8080-8083/TCP`, as for labctl's entries.
pub fn port_proto(e: &CiliumEntry) -> String {
    let key = lab_common::policy::PolicyKey {
        endpoint: 0,
        sec_label: e.identity,
        egress: u8::from(e.egress),
        protocol: e.protocol,
        dport: e.dport.to_be(),
        pad: 0,
    };
    super::bpf::port_proto(lab_common::policy::POLICY_STATIC_PREFIX + e.prefix, &key)
}
