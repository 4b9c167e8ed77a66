//! `--source all`: netfilter's entries and the eBPF tracker's, joined on
//! the flow. The tracker sees packets at one interface, where a flow may
//! already be translated (after SNAT on the uplink), so a tracker entry
//! matches a netfilter entry by its original tuple or by the reply tuple
//! turned around.

use super::entry::{CtEntry, Source, Tuple};

fn reversed(t: &Tuple) -> Tuple {
    Tuple {
        src: t.dst,
        dst: t.src,
        sport: t.dport,
        dport: t.sport,
        icmp_type: t.icmp_type,
        icmp_code: t.icmp_code,
        icmp_id: t.icmp_id,
    }
}

/// Ports and ICMP id only: the tracker does not record ICMP type/code per
/// direction the way netfilter does.
fn same_flow(a: &Tuple, b: &Tuple) -> bool {
    a.src == b.src
        && a.dst == b.dst
        && a.sport == b.sport
        && a.dport == b.dport
        && a.icmp_id == b.icmp_id
}

/// Every netfilter entry, then every tracker entry no netfilter entry
/// matched; each with the views it appears in. A matched netfilter entry
/// takes the tracker's counters when it has none of its own.
pub fn join(netfilter: Vec<CtEntry>, bpf: Vec<CtEntry>) -> Vec<(CtEntry, Vec<Source>)> {
    let mut used = vec![false; bpf.len()];
    let mut out = Vec::new();
    for mut nf in netfilter {
        let hit = bpf.iter().enumerate().position(|(i, b)| {
            !used[i]
                && b.proto_num == nf.proto_num
                && (same_flow(&b.orig, &nf.orig) || same_flow(&b.orig, &reversed(&nf.reply)))
        });
        let mut seen = vec![Source::Netfilter];
        if let Some(i) = hit {
            used[i] = true;
            seen.push(Source::Bpf);
            if nf.orig_counters.is_none() {
                nf.orig_counters = bpf[i].orig_counters;
                nf.reply_counters = bpf[i].reply_counters;
            }
        }
        out.push((nf, seen));
    }
    for (i, b) in bpf.into_iter().enumerate() {
        if !used[i] {
            out.push((b, vec![Source::Bpf]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::entry::tests::udp_snat;

    #[test]
    fn translated_flows_join_through_the_reply_tuple() {
        let nf = udp_snat();
        // What the tracker sees on the uplink, after SNAT.
        let mut on_uplink = nf.clone();
        on_uplink.source = Source::Bpf;
        on_uplink.orig = reversed(&nf.reply);
        let mut other = nf.clone();
        other.source = Source::Bpf;
        other.orig.dport = Some(54);
        let joined = join(vec![nf], vec![on_uplink, other]);
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].1, [Source::Netfilter, Source::Bpf]);
        assert_eq!(joined[1].1, [Source::Bpf]);
    }
}
