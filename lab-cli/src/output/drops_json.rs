//! A drop record as one NDJSON line, written by hand.
//!
//! Why not `serde_json::to_writer` (which the summary and every other
//! command use): in a drop storm `trace -o json` spends its time here, and
//! serde_json escapes every string byte by byte through its escape table,
//! field names included. Profiled on a 2-core VM under a 450,000 drops/s
//! storm, serde_json's `serialize_str` alone was 23 % of the tracer's CPU and
//! the whole record ~690 ns of CPU per drop; writing the field names as
//! literals and copying strings that need no escaping in one piece (the
//! common case: reasons, names, addresses, symbols) brings that down (see
//! `cargo xtask bench trace` and the README's figures). The bytes are the
//! same as serde's: `same_bytes_as_serde` checks every field and escape.

use std::io::{self, Write};

use crate::drops::record::DropRecord;

/// Writes `r` as serde_json would (`serde_json::to_writer`), without the
/// trailing newline.
pub fn write(out: &mut impl Write, r: &DropRecord) -> io::Result<()> {
    let mut n = itoa::Buffer::new();
    out.write_all(b"{\"type\":")?;
    string(out, r.kind)?;
    out.write_all(b",\"ts_ns\":")?;
    out.write_all(n.format(r.ts_ns).as_bytes())?;
    out.write_all(b",\"reason\":")?;
    string(out, &r.reason)?;
    out.write_all(b",\"reason_code\":")?;
    out.write_all(n.format(r.reason_code).as_bytes())?;
    out.write_all(b",\"netns\":")?;
    string(out, &r.netns)?;
    out.write_all(b",\"netns_ino\":")?;
    out.write_all(n.format(r.netns_ino).as_bytes())?;
    out.write_all(b",\"pod\":")?;
    opt_string(out, r.pod.as_deref())?;
    out.write_all(b",\"pod_namespace\":")?;
    opt_string(out, r.pod_namespace.as_deref())?;
    out.write_all(b",\"pod_uid\":")?;
    opt_string(out, r.pod_uid.as_deref())?;
    out.write_all(b",\"ifname\":")?;
    opt_string(out, r.ifname.as_deref())?;
    out.write_all(b",\"ifindex\":")?;
    out.write_all(n.format(r.ifindex).as_bytes())?;
    out.write_all(b",\"proto\":")?;
    string(out, &r.proto)?;
    out.write_all(b",\"src\":")?;
    opt_string(out, r.src.as_deref())?;
    out.write_all(b",\"dst\":")?;
    opt_string(out, r.dst.as_deref())?;
    out.write_all(b",\"sport\":")?;
    opt_number(out, &mut n, r.sport)?;
    out.write_all(b",\"dport\":")?;
    opt_number(out, &mut n, r.dport)?;
    out.write_all(b",\"len\":")?;
    out.write_all(n.format(r.len).as_bytes())?;
    out.write_all(b",\"location\":")?;
    string(out, &r.location)?;
    out.write_all(b",\"tcp_flags\":")?;
    opt_string(out, r.tcp_flags.as_deref())?;
    out.write_all(b",\"icmp_type\":")?;
    opt_number(out, &mut n, r.icmp_type)?;
    out.write_all(b",\"icmp_code\":")?;
    opt_number(out, &mut n, r.icmp_code)?;
    if let Some(f) = r.fragment {
        out.write_all(b",\"fragment\":")?;
        string(out, f)?;
    }
    // Rare (policy drops, --stack): serde writes these parts.
    if let Some(p) = &r.policy {
        out.write_all(b",\"policy\":")?;
        serde_json::to_writer(&mut *out, p)?;
    }
    if let Some(s) = &r.stack {
        out.write_all(b",\"stack\":")?;
        serde_json::to_writer(&mut *out, s)?;
    }
    out.write_all(b"}")
}

/// A JSON string: copied in one piece unless it holds a byte JSON escapes
/// (a control character, `"` or `\`), which serde_json then writes.
fn string(out: &mut impl Write, s: &str) -> io::Result<()> {
    if plain(s.as_bytes()) {
        out.write_all(b"\"")?;
        out.write_all(s.as_bytes())?;
        out.write_all(b"\"")
    } else {
        serde_json::to_writer(out, s).map_err(io::Error::from)
    }
}

/// Whether no byte of `s` needs escaping, eight bytes at a time (the
/// classic "has a byte less than n / equal to c" word tricks; each is exact
/// for the word as a whole). A byte-at-a-time check was 12 % of the
/// tracer's CPU in a drop storm after the rest of this module.
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn opt_string(out: &mut impl Write, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => string(out, s),
        None => out.write_all(b"null"),
    }
}

fn opt_number<I: itoa::Integer>(
    out: &mut impl Write,
    n: &mut itoa::Buffer,
    v: Option<I>,
) -> io::Result<()> {
    match v {
        Some(v) => out.write_all(n.format(v).as_bytes()),
        None => out.write_all(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::record::{PolicyNames, PolicyRef, PolicyVerdict, tests::sample_udp};

    fn fast(r: &DropRecord) -> String {
        let mut v = Vec::new();
        write(&mut v, r).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn same_bytes_as_serde() {
        let plain = sample_udp();
        let mut full = sample_udp();
        full.pod = Some("default/web-\"1\"".into());
        full.pod_namespace = Some("default".into());
        full.pod_uid = Some("0b1c\\2d".into());
        full.ifname = None;
        full.src = None;
        full.dst = Some("fd00::1".into());
        full.sport = None;
        full.tcp_flags = Some("SA".into());
        full.icmp_type = Some(3);
        full.icmp_code = Some(0);
        full.netns = "ns\twith\u{1}control\u{7f}é✓".into();
        full.fragment = Some("first");
        full.stack = Some(vec!["a+0x1".into(), "b\"c".into()]);
        full.policy = Some(PolicyVerdict {
            direction: "ingress",
            kernel_reason: "NETFILTER_DROP".into(),
            kernel_reason_code: 35,
            mark: "0x1ab50002".into(),
            names: Some(PolicyNames {
                lab: "l".into(),
                from: "l/a".into(),
                to: "10.0.0.1".into(),
                pod: Some("l/b".into()),
                policies: vec![PolicyRef {
                    kind: "NetworkPolicy",
                    namespace: "default".into(),
                    name: "p".into(),
                }],
                rule: None,
                src_identity: 256,
                dst_identity: 2,
                note: None,
            }),
        });
        let mut later = sample_udp();
        later.fragment = Some("later");
        later.ts_ns = u64::MAX;
        for r in [plain, full, later] {
            assert_eq!(fast(&r), serde_json::to_string(&r).unwrap());
        }
    }

    #[test]
    fn every_control_character_is_escaped_as_serde_does() {
        // At every position of a word and of the tail, beside any byte.
        for b in 0u8..0x80 {
            for at in 0..19 {
                for other in [b'a', 0x7f, 0x1f, b'"', 0xc3] {
                    let mut bytes = vec![b'x'; 19];
                    bytes[at] = b;
                    bytes[(at + 3) % 19] = other;
                    let Ok(text) = String::from_utf8(bytes) else {
                        continue;
                    };
                    let mut r = sample_udp();
                    r.reason = text;
                    assert_eq!(
                        fast(&r),
                        serde_json::to_string(&r).unwrap(),
                        "byte {b:#x} at {at}"
                    );
                }
            }
        }
        let mut r = sample_udp();
        r.location = "dev_qdisc_enqueue+0x4d \u{e9}\u{2713}".into();
        assert_eq!(fast(&r), serde_json::to_string(&r).unwrap());
    }
}
