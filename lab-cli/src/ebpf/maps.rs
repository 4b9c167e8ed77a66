//! A program's maps by name, as aya's typed maps, and the sums of per-CPU
//! values: what every program module reads its results with.

use std::path::Path;

use aya::{
    Ebpf, Pod,
    maps::{Map, MapData, MapError, PerCpuHashMap, PerCpuValues},
};
use lab_common::{ct::CtCounters, masq::MasqStats, policy::MetricsValue};

use super::{error::ProgramSetupError, loader::LoadError};

/// Map `name` of `object`, borrowed as type `T` (e.g. `PerCpuArray<_, u64>`).
pub fn get<'a, T>(
    ebpf: &'a Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<T, ProgramSetupError>
where
    T: TryFrom<&'a Map, Error = MapError>,
{
    let map = ebpf
        .map(name)
        .ok_or(LoadError::MissingMap { object, map: name })?;
    T::try_from(map).map_err(|source| ProgramSetupError::Map { map: name, source })
}

/// As [`get`], for maps the caller writes.
pub fn get_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<T, ProgramSetupError>
where
    T: TryFrom<&'a mut Map, Error = MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or(LoadError::MissingMap { object, map: name })?;
    T::try_from(map).map_err(|source| ProgramSetupError::Map { map: name, source })
}

/// Map `name` of `object`, taken out of it as type `T` (e.g. a `RingBuf`).
pub fn take<T>(
    ebpf: &mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<T, ProgramSetupError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(LoadError::MissingMap { object, map: name })?;
    T::try_from(map).map_err(|source| ProgramSetupError::Map { map: name, source })
}

/// Pins map `name` of `object` at `path`.
pub fn pin(
    ebpf: &mut Ebpf,
    object: &'static str,
    name: &'static str,
    path: &Path,
) -> Result<(), ProgramSetupError> {
    ebpf.map_mut(name)
        .ok_or(LoadError::MissingMap { object, map: name })?
        .pin(path)
        .map_err(|error| pin_error(name, error))
}

/// Creates pin directory `dir` (under labctl's root, made safe first) and
/// pins each `(map, file)` of `object` there.
pub fn pin_all(
    ebpf: &mut Ebpf,
    object: &'static str,
    dir: &Path,
    maps: &[(&'static str, &str)],
) -> Result<(), ProgramSetupError> {
    super::pins::ensure_root()?;
    std::fs::create_dir_all(dir).map_err(|source| ProgramSetupError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for (name, file) in maps {
        pin(ebpf, object, name, &dir.join(file))?;
    }
    Ok(())
}

/// The error of pinning `name` (a map or a link).
pub fn pin_error(name: &'static str, error: aya::pin::PinError) -> ProgramSetupError {
    ProgramSetupError::Map {
        map: name,
        source: MapError::PinError {
            name: Some(name.into()),
            error,
        },
    }
}

/// A map pinned at `path` by another labctl process, as type `T`; `kind`
/// says which map type it is (`Map::LruHashMap`, ...).
pub fn from_pin<T>(
    path: &Path,
    name: &'static str,
    kind: fn(MapData) -> Map,
) -> Result<T, ProgramSetupError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let err = |source| ProgramSetupError::Map { map: name, source };
    T::try_from(kind(MapData::from_pin(path).map_err(err)?)).map_err(err)
}

/// A record of a map as raw key and value bytes.
pub type RawRow<const K: usize, const V: usize> = ([u8; K], [u8; V]);

/// Every record of a hash map pinned at `path` by someone else (e.g.
/// Cilium), as raw key and value bytes: the caller knows the layout.
pub fn pinned_hash_rows<const K: usize, const V: usize>(
    path: &Path,
    name: &'static str,
) -> Result<Vec<RawRow<K, V>>, ProgramSetupError> {
    let err = |source| ProgramSetupError::Map { map: name, source };
    let map: aya::maps::HashMap<_, [u8; K], [u8; V]> = from_pin(path, name, Map::HashMap)?;
    map.iter().map(|item| item.map_err(err)).collect()
}

/// A record of an LPM trie as its prefix length and raw key and value
/// bytes (the key after its prefix length).
pub type LpmRow<const K: usize, const V: usize> = (u32, [u8; K], [u8; V]);

/// Every record of an LPM trie pinned at `path` by someone else (e.g.
/// Cilium's ipcache and policy maps), as raw bytes: the caller knows the
/// layout. A map whose key or value has another size is an error.
pub fn pinned_lpm_rows<const K: usize, const V: usize>(
    path: &Path,
    name: &'static str,
) -> Result<Vec<LpmRow<K, V>>, ProgramSetupError> {
    let err = |source| ProgramSetupError::Map { map: name, source };
    let map: aya::maps::LpmTrie<_, [u8; K], [u8; V]> = from_pin(path, name, Map::LpmTrie)?;
    map.iter()
        .map(|item| {
            let (k, v) = item.map_err(err)?;
            Ok((k.prefix_len(), k.data(), v))
        })
        .collect()
}

/// A value kept per CPU that adds up to one total.
pub trait PerCpuTotal: Pod + Default {
    fn add(&mut self, other: &Self);
}

impl PerCpuTotal for u64 {
    fn add(&mut self, other: &Self) {
        *self += other;
    }
}

impl PerCpuTotal for MetricsValue {
    fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Adds per-direction [original, reply] counts.
fn add_directions(sum: &mut [u64; 2], other: &[u64; 2]) {
    for (s, o) in sum.iter_mut().zip(other) {
        *s += o;
    }
}

impl PerCpuTotal for CtCounters {
    fn add(&mut self, other: &Self) {
        add_directions(&mut self.packets, &other.packets);
        add_directions(&mut self.bytes, &other.bytes);
    }
}

/// Counts add up; the port range is the lowest and highest of any CPU.
impl PerCpuTotal for MasqStats {
    fn add(&mut self, c: &Self) {
        self.connections += c.connections;
        add_directions(&mut self.packets, &c.packets);
        add_directions(&mut self.bytes, &c.bytes);
        if c.port_max != 0 {
            self.port_min = if self.port_min == 0 {
                c.port_min
            } else {
                self.port_min.min(c.port_min)
            };
            self.port_max = self.port_max.max(c.port_max);
        }
    }
}

/// The total of one per-CPU value.
pub fn total<V: PerCpuTotal>(values: &PerCpuValues<V>) -> V {
    let mut sum = V::default();
    for v in values.iter() {
        sum.add(v);
    }
    sum
}

/// Every key of a per-CPU hash with its total over the CPUs.
pub fn totals<T, K, V>(
    map: &PerCpuHashMap<T, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, ProgramSetupError>
where
    T: std::borrow::Borrow<MapData>,
    K: Pod,
    V: PerCpuTotal,
{
    map.iter()
        .map(|item| {
            let (k, values) =
                item.map_err(|source| ProgramSetupError::Map { map: name, source })?;
            Ok((k, total(&values)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_slots_add_up() {
        let a = MasqStats {
            connections: 2,
            packets: [3, 1],
            bytes: [300, 60],
            port_min: 40010,
            port_max: 40020,
            _pad: 0,
        };
        let b = MasqStats {
            connections: 1,
            packets: [1, 1],
            bytes: [84, 84],
            port_min: 0,
            port_max: 0,
            _pad: 0,
        };
        let c = MasqStats {
            port_min: 39000,
            port_max: 39001,
            ..b
        };
        let mut s = MasqStats::default();
        for x in [a, b, c] {
            s.add(&x);
        }
        assert_eq!(s.connections, 4);
        assert_eq!(s.packets, [5, 3]);
        assert_eq!((s.port_min, s.port_max), (39000, 40020));
    }
}
