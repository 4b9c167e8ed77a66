//! `labctl trace --pcap FILE`: each traced drop's packet as pcapng, for
//! Wireshark and tshark. Written with the pcap-file crate.
//!
//! The tracer copies a packet from its network header (the link-layer
//! header is gone or not yet built where most drops happen), so every
//! packet gets a Linux "cooked" header (LINKTYPE_LINUX_SLL, what
//! `tcpdump -i any` writes) carrying the packet's EtherType: IPv4, IPv6 and
//! ARP all decode. One interface block per (netns, interface), named
//! `NETNS/IFNAME`; each packet's comment says why and where it was dropped.

use std::{borrow::Cow, collections::HashMap, io::Write, time::Duration};

use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

use crate::{
    drops::{
        record::DropRecord,
        session::{Sink, Summary},
    },
    ebpf::drop_tracer::Hook,
};

/// Length of the Linux cooked-capture (v1) header.
const SLL_LEN: usize = 16;
/// ARPHRD_ETHER: the header type in the cooked header.
const ARPHRD_ETHER: u16 = 1;
/// LINUX_SLL_HOST: "to us" (the direction is not known at a drop).
const PACKET_HOST: u16 = 0;

/// Writes pcapng for every drop and hands each event on to `inner` (the
/// text or JSON printer, or one that prints nothing when the pcap goes to
/// standard output).
pub struct PcapSink<S, W: Write> {
    inner: S,
    writer: PcapNgWriter<W>,
    snaplen: u32,
    /// (netns inode, ifindex) → interface id in the file.
    interfaces: HashMap<(u64, u32), u32>,
    /// Packets written.
    packets: u64,
}

impl<S: Sink, W: Write> PcapSink<S, W> {
    /// Starts the file (section header) on `out`.
    pub fn new(inner: S, out: W, snaplen: u32) -> std::io::Result<Self> {
        let writer = PcapNgWriter::new(out).map_err(pcap_error)?;
        Ok(Self {
            inner,
            writer,
            snaplen,
            interfaces: HashMap::new(),
            packets: 0,
        })
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    fn interface(&mut self, record: &DropRecord) -> std::io::Result<u32> {
        let key = (record.netns_ino, record.ifindex);
        if let Some(id) = self.interfaces.get(&key) {
            return Ok(*id);
        }
        let id = u32::try_from(self.interfaces.len()).unwrap_or(u32::MAX);
        let name = interface_name(record);
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::LINUX_SLL,
            snaplen: self.snaplen + SLL_LEN as u32,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(interface_description(
                    record,
                ))),
                // pcap-file writes timestamps in nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.writer.write_pcapng_block(idb).map_err(pcap_error)?;
        self.interfaces.insert(key, id);
        Ok(id)
    }
}

/// `NETNS/IFNAME` (or `NETNS/ifindex N` when the interface is gone, or
/// `NETNS/-` when the packet had no device: a local packet dropped before
/// it was given one, as the text line's interface column shows it).
fn interface_name(record: &DropRecord) -> String {
    match (&record.ifname, record.ifindex) {
        (Some(name), _) => format!("{}/{name}", record.netns),
        (None, 0) => format!("{}/-", record.netns),
        (None, i) => format!("{}/ifindex {i}", record.netns),
    }
}

/// The interface block's description: the namespace with its inode, and
/// the interface's index or that there was none.
fn interface_description(record: &DropRecord) -> String {
    let ns = format!(
        "network namespace {} (inode {})",
        record.netns, record.netns_ino
    );
    match record.ifindex {
        0 => format!("{ns}, no device (packets dropped before they had one)"),
        i => format!("{ns}, ifindex {i}"),
    }
}

/// The packet's comment: the reason, where the kernel dropped it, and
/// whose namespace it was in.
pub fn comment(record: &DropRecord) -> String {
    let mut s = format!(
        "drop reason {} at {} in netns {}",
        record.reason, record.location, record.netns
    );
    if let Some(pod) = &record.pod {
        s.push_str(&format!(" (pod {pod})"));
    }
    if let Some(frag) = record.fragment {
        s.push_str(&format!("; {frag} fragment"));
    }
    if let Some(p) = &record.policy {
        s.push_str(&format!(
            "; {} {}",
            p.direction,
            super::drops::policy_pieces(p).join(" ")
        ));
    }
    s
}

/// The cooked header and the copied bytes; the original length is the IP
/// header's total length where it is known (the skb's length counts only
/// from wherever the stack had pulled it to).
fn frame(record: &DropRecord) -> (Vec<u8>, u32) {
    let packet = record.packet.as_deref().unwrap_or(&[]);
    let mut data = Vec::with_capacity(SLL_LEN + packet.len());
    data.extend_from_slice(&PACKET_HOST.to_be_bytes());
    data.extend_from_slice(&ARPHRD_ETHER.to_be_bytes());
    data.extend_from_slice(&0u16.to_be_bytes()); // no link-layer address
    data.extend_from_slice(&[0u8; 8]);
    data.extend_from_slice(&record.ethertype.to_be_bytes());
    data.extend_from_slice(packet);
    let ip_len = match (record.ethertype, packet) {
        (0x0800, [_, _, hi, lo, ..]) => Some(u32::from(u16::from_be_bytes([*hi, *lo]))),
        (0x86dd, [_, _, _, _, hi, lo, ..]) => Some(40 + u32::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    };
    let original = ip_len
        .unwrap_or(record.len)
        .max(packet.len() as u32)
        .saturating_add(SLL_LEN as u32);
    (data, original)
}

impl<S: Sink, W: Write> Sink for PcapSink<S, W> {
    fn started(&mut self, hook: Hook) -> std::io::Result<()> {
        self.inner.started(hook)
    }

    fn drop_seen(&mut self, record: &DropRecord) -> std::io::Result<()> {
        let interface_id = self.interface(record)?;
        let (data, original_len) = frame(record);
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(record.ts_ns),
            original_len,
            data: Cow::Owned(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment(record)))],
        };
        self.writer.write_pcapng_block(epb).map_err(pcap_error)?;
        self.packets += 1;
        self.inner.drop_seen(record)
    }

    fn batch_done(&mut self) -> std::io::Result<()> {
        // A reader on a pipe (wireshark -k -i -) sees each batch as it comes.
        self.writer.get_mut().flush()?;
        self.inner.batch_done()
    }

    fn lost(&mut self, newly: u64) -> std::io::Result<()> {
        self.inner.lost(newly)
    }

    fn progress(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        self.inner.progress(summary, elapsed)
    }

    fn finished(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        self.writer.get_mut().flush()?;
        self.inner.finished(summary, elapsed)
    }
}

fn pcap_error(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => std::io::Error::other(other),
    }
}

/// A sink that shows nothing per drop (the pcap is the output) and the
/// final summary on `out` (standard error when the pcap is on stdout).
pub struct SummaryOnly<W: Write> {
    pub out: W,
}

impl<W: Write> Sink for SummaryOnly<W> {
    fn started(&mut self, hook: Hook) -> std::io::Result<()> {
        writeln!(
            self.out,
            "tracing packet drops ({}) into the pcap; Ctrl-C to stop",
            hook.describe()
        )
    }
    fn drop_seen(&mut self, _: &DropRecord) -> std::io::Result<()> {
        Ok(())
    }
    fn finished(&mut self, summary: &Summary, elapsed: Duration) -> std::io::Result<()> {
        super::drops::write_table(&mut self.out, summary, elapsed, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drops::record::tests::sample_udp;

    #[test]
    fn frames_carry_a_cooked_header_and_the_ip_length() {
        let mut rec = sample_udp();
        // An IPv4 header saying 60 bytes in all, of which 24 were copied.
        let mut ip = vec![0x45, 0, 0, 60];
        ip.resize(24, 0);
        rec.packet = Some(ip.clone());
        let (data, original) = frame(&rec);
        assert_eq!(
            &data[..SLL_LEN],
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0]
        );
        assert_eq!(&data[SLL_LEN..], &ip[..]);
        assert_eq!(original, 60 + SLL_LEN as u32);
        assert_eq!(
            comment(&rec),
            "drop reason NO_SOCKET at __udp4_lib_rcv+0x5a3 in netns labtest-a"
        );
        assert_eq!(interface_name(&rec), "labtest-a/lo");
        assert_eq!(
            interface_description(&rec),
            format!(
                "network namespace labtest-a (inode {}), ifindex 1",
                rec.netns_ino
            )
        );
    }

    #[test]
    fn comments_name_policy_drops_and_fragments() {
        let mut rec = sample_udp();
        rec.reason = "POLICY_DENY".into();
        rec.fragment = Some("first");
        rec.policy = Some(crate::drops::record::PolicyVerdict {
            direction: "egress",
            kernel_reason: "NETFILTER_DROP".into(),
            kernel_reason_code: 6,
            mark: "0x1ab50003".into(),
            names: None,
        });
        assert_eq!(
            comment(&rec),
            "drop reason POLICY_DENY at __udp4_lib_rcv+0x5a3 in netns labtest-a; first fragment; egress (kernel: NETFILTER_DROP)"
        );
    }

    #[test]
    fn a_packet_without_a_device_is_named_by_its_namespace_and_a_dash() {
        let mut rec = sample_udp();
        rec.ifname = None;
        rec.ifindex = 0;
        assert_eq!(interface_name(&rec), "labtest-a/-");
        assert!(
            interface_description(&rec)
                .ends_with("no device (packets dropped before they had one)"),
            "{}",
            interface_description(&rec)
        );
        rec.ifindex = 7;
        assert_eq!(interface_name(&rec), "labtest-a/ifindex 7");
    }

    #[test]
    fn one_interface_block_per_namespace_and_interface() {
        struct Nothing;
        impl Sink for Nothing {
            fn drop_seen(&mut self, _: &DropRecord) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut sink = PcapSink::new(Nothing, Vec::new(), 128).unwrap();
        let mut rec = sample_udp();
        rec.packet = Some(vec![0x45, 0, 0, 20]);
        sink.drop_seen(&rec).unwrap();
        sink.drop_seen(&rec).unwrap();
        rec.ifindex = 2;
        sink.drop_seen(&rec).unwrap();
        assert_eq!(sink.packets(), 3);
        let bytes = sink.writer.into_inner();
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut ids = Vec::new();
        while let Some(block) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = block.unwrap() {
                ids.push(p.interface_id);
            }
        }
        assert_eq!(ids, [0, 0, 1]);
        assert_eq!(reader.interfaces().len(), 2);
    }
}
