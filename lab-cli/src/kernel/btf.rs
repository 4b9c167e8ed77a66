//! The running kernel's BTF: struct member offsets and enum values.
//!
//! Rust eBPF has no CO-RE relocations, so the offsets our programs need are
//! computed here at load time and passed to them as globals. Parsing is done
//! by the `btf-rs` crate; this module only walks the types it returns.

use std::path::Path;

use btf_rs::{Btf, Type};
use thiserror::Error;

/// Where the kernel exposes its own BTF (CONFIG_DEBUG_INFO_BTF=y).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path} ({source}); labctl needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF has no member `{member}` in struct `{strukt}`")]
    NoMember { strukt: String, member: String },
    #[error("member `{strukt}.{path}` is a bitfield, not byte-addressable")]
    Bitfield { strukt: String, path: String },
    #[error("kernel BTF has no enum `{0}`")]
    NoEnum(String),
    #[error("kernel BTF is malformed: {0}")]
    Malformed(#[from] btf_rs::Error),
}

/// The kernel's BTF, parsed.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Parses /sys/kernel/btf/vmlinux.
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of `path` (dot-separated members, e.g. `nd_net.net`)
    /// inside `struct strukt`, looking through anonymous structs and unions.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut ty = self.struct_named(strukt)?;
        let mut bits = 0u32;
        let mut walked = strukt.to_owned();
        for member in path.split('.') {
            let (off, member_ty) =
                self.find_member(&ty, member)?
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: walked.clone(),
                        member: member.into(),
                    })?;
            bits += off;
            ty = member_ty;
            walked = format!("{walked}.{member}");
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                strukt: strukt.into(),
                path: path.into(),
            });
        }
        Ok(bits / 8)
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<usize, BtfError> {
        match self.struct_named(name)? {
            Type::Struct(s) | Type::Union(s) => Ok(s.size()),
            _ => Err(BtfError::NoStruct(name.into())),
        }
    }

    /// All (name, value) pairs of `enum name`, in declaration order.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, u64)>, BtfError> {
        for ty in self.btf.resolve_types_by_name(name).unwrap_or_default() {
            match ty {
                Type::Enum(e) => {
                    return e
                        .members
                        .iter()
                        .map(|m| Ok((self.btf.resolve_name(m)?, u64::from(m.val()))))
                        .collect();
                }
                Type::Enum64(e) => {
                    return e
                        .members
                        .iter()
                        .map(|m| Ok((self.btf.resolve_name(m)?, m.val())))
                        .collect();
                }
                _ => {}
            }
        }
        Err(BtfError::NoEnum(name.into()))
    }

    fn struct_named(&self, name: &str) -> Result<Type, BtfError> {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| BtfError::NoStruct(name.into()))
    }

    /// Finds `name` among the members of `ty` (after typedefs and
    /// qualifiers); returns its bit offset and type. Anonymous struct/union
    /// members are searched recursively, adding their own offset.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>, BtfError> {
        let (Type::Struct(s) | Type::Union(s)) = self.strip(ty.clone())? else {
            return Ok(None);
        };
        for m in &s.members {
            let member_name = self.btf.resolve_name(m)?;
            let member_ty = self.btf.resolve_chained_type(m)?;
            if member_name == name {
                return Ok(Some((m.bit_offset(), member_ty)));
            }
            if member_name.is_empty()
                && let Some((off, t)) = self.find_member(&member_ty, name)?
            {
                return Ok(Some((m.bit_offset() + off, t)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and const/volatile/restrict/type-tag to the real type.
    fn strip(&self, mut ty: Type) -> Result<Type, BtfError> {
        loop {
            ty = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t)?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t)?,
                _ => return Ok(ty),
            };
        }
    }

    /// Whether a function or tracepoint target named `name` exists.
    pub fn has_func(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> Option<KernelBtf> {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} is not present on this kernel");
            return None;
        }
        Some(KernelBtf::from_sys().expect("parse vmlinux BTF"))
    }

    #[test]
    fn sk_buff_offsets_look_like_a_real_sk_buff() {
        let Some(btf) = kernel() else { return };
        // `dev` sits in an anonymous union inside an anonymous struct right
        // after next/prev: offset 16 on every 64-bit kernel since 4.x.
        assert_eq!(btf.member_offset("sk_buff", "dev").unwrap(), 16);
        let len = btf.member_offset("sk_buff", "len").unwrap();
        let head = btf.member_offset("sk_buff", "head").unwrap();
        let size = btf.struct_size("sk_buff").unwrap() as u32;
        assert!(len > 16 && len < size, "len at {len}");
        assert!(head > len && head < size, "head at {head}");
        // network_header is a u16 inside the (anonymous) headers group.
        let nh = btf.member_offset("sk_buff", "network_header").unwrap();
        assert!(nh < head);
    }

    #[test]
    fn nested_paths_add_offsets() {
        let Some(btf) = kernel() else { return };
        let ns = btf.member_offset("net", "ns").unwrap();
        let inum_in_ns = btf.member_offset("ns_common", "inum").unwrap();
        assert_eq!(
            btf.member_offset("net", "ns.inum").unwrap(),
            ns + inum_in_ns
        );
        // possible_net_t is a struct holding one pointer.
        let nd_net = btf.member_offset("net_device", "nd_net").unwrap();
        assert_eq!(
            btf.member_offset("net_device", "nd_net.net").unwrap(),
            nd_net
        );
    }

    #[test]
    fn missing_things_are_errors() {
        let Some(btf) = kernel() else { return };
        assert!(matches!(
            btf.member_offset("sk_buff", "no_such_member"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.enum_values("no_such_enum"),
            Err(BtfError::NoEnum(_))
        ));
    }

    #[test]
    fn skb_drop_reason_enum_is_read() {
        let Some(btf) = kernel() else { return };
        let values = btf.enum_values("skb_drop_reason").unwrap();
        let get = |n: &str| values.iter().find(|(name, _)| name == n).map(|(_, v)| *v);
        assert_eq!(get("SKB_NOT_DROPPED_YET"), Some(0));
        assert_eq!(get("SKB_CONSUMED"), Some(1));
        assert_eq!(get("SKB_DROP_REASON_NOT_SPECIFIED"), Some(2));
        assert!(get("SKB_DROP_REASON_NO_SOCKET").is_some());
    }
}
