//! Cilium's service maps, read from their pins under /sys/fs/bpf/tc/globals,
//! as `cilium bpf lb list` does.
//!
//! Layout (Cilium v1.16, `bpf/lib/common.h`), all little-endian hosts:
//!
//! - `cilium_lb4_services_v2`: key `struct lb4_key` (12 bytes): `address`
//!   (__be32), `dport` (__be16), `backend_slot` (u16, host order; 0 is the
//!   frontend), `proto` (u8; 0 = any in v1.16), `scope` (u8), 2 pad bytes.
//!   Value `struct lb4_service` (12 bytes): `backend_id` (u32; in the
//!   frontend entry an affinity timeout or L7 proxy port instead), `count`
//!   (u16, backend slots), `rev_nat_index` (u16, network order), `flags`,
//!   `flags2` (u8), `qcount` (u16).
//! - `cilium_lb4_backends_v3`: key backend id (u32), value `struct
//!   lb4_backend` (12 bytes): `address` (__be32), `port` (__be16), `proto`,
//!   `flags` (u8), `cluster_id` (u16), `zone`, pad (u8).
//!
//! These are the layouts of `lab_common::lb`, which our own maps share.

use std::{collections::BTreeMap, path::Path};

use lab_common::lb::{Lb4Backend, Lb4Key, Lb4Service};

use super::ebpf::{MapFrontend, frontends};
use crate::ebpf::{error::ProgramSetupError, maps};

pub const SERVICES: &str = "/sys/fs/bpf/tc/globals/cilium_lb4_services_v2";
pub const BACKENDS: &str = "/sys/fs/bpf/tc/globals/cilium_lb4_backends_v3";

/// Whether Cilium's service map is pinned here.
pub fn present() -> bool {
    Path::new(SERVICES).exists()
}

/// Cilium's frontends and backends (no connection counts: Cilium keeps
/// none per backend).
pub fn read() -> Result<Vec<MapFrontend>, ProgramSetupError> {
    let services: Vec<(Lb4Key, Lb4Service)> =
        maps::pinned_hash_rows::<12, 12>(Path::new(SERVICES), "cilium_lb4_services_v2")?
            .into_iter()
            .map(|(k, v)| {
                (
                    bytemuck::pod_read_unaligned(&k),
                    bytemuck::pod_read_unaligned(&v),
                )
            })
            .collect();
    let backends: BTreeMap<u32, Lb4Backend> =
        maps::pinned_hash_rows::<4, 12>(Path::new(BACKENDS), "cilium_lb4_backends_v3")?
            .into_iter()
            .map(|(k, v)| (u32::from_ne_bytes(k), bytemuck::pod_read_unaligned(&v)))
            .collect();
    Ok(frontends(&services, &backends, |_| None))
}
