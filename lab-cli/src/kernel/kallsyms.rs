//! Kernel text addresses to `symbol+offset`, from /proc/kallsyms.

use std::fs;

/// Text symbols sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms; empty (addresses shown raw) when unreadable or
    /// when kptr_restrict hides the addresses.
    pub fn load() -> Self {
        fs::read_to_string("/proc/kallsyms")
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_owned()))
            })
            .collect();
        syms.sort_unstable();
        Self { syms }
    }

    /// `name+0xoff`, or the raw address when no symbol covers it.
    pub fn describe(&self, addr: u64) -> String {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        match i.checked_sub(1).map(|i| &self.syms[i]) {
            Some((start, name)) if addr - start < 1 << 20 => format!("{name}+{:#x}", addr - start),
            _ => format!("{addr:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_enclosing_symbol() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81a00000 t __udp4_lib_rcv\nffffffff81a01000 T udp_rcv\nffffffff82000000 D some_data\n",
        );
        assert_eq!(k.describe(0xffffffff81a005a3), "__udp4_lib_rcv+0x5a3");
        assert_eq!(k.describe(0xffffffff81a01000), "udp_rcv+0x0");
        assert_eq!(k.describe(0x1000), "0x1000");
    }
}
