//! The human table of conntrack entries (comfy-table, no borders, like
//! `conntrack -L` but with NAT and counters in their own columns).

use comfy_table::{ContentArrangement, Table, presets::NOTHING};

use crate::conntrack::entry::{CtEntry, Source};

fn counters(e: &CtEntry) -> (String, String) {
    match (e.orig_counters, e.reply_counters) {
        (Some(o), Some(r)) => (
            format!("{} ⇄ {}", o.packets, r.packets),
            format!("{} ⇄ {}", o.bytes, r.bytes),
        ),
        _ => ("-".into(), "-".into()),
    }
}

/// Renders entries; `seen_by` (with `--source all`) adds a column.
pub fn render(rows: &[(&CtEntry, Option<&[Source]>)]) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    let joined = rows.iter().any(|(_, s)| s.is_some());
    let mut header = vec![
        "PROTO", "STATE", "ORIGINAL", "REPLY", "NAT", "TIMEOUT", "FLAGS", "MARK", "ZONE",
        "PACKETS", "BYTES",
    ];
    if joined {
        header.push("SEEN BY");
    }
    table.set_header(header);
    for (e, seen) in rows {
        let (packets, bytes) = counters(e);
        let mut row = vec![
            e.proto.clone(),
            e.state.clone().unwrap_or_else(|| "-".into()),
            e.orig.describe(),
            e.reply.describe(),
            e.nat().unwrap_or_else(|| "-".into()),
            e.timeout.map_or_else(|| "-".into(), |t| t.to_string()),
            if e.flags.is_empty() {
                "-".into()
            } else {
                e.flags.join(",")
            },
            e.mark.to_string(),
            e.zone.to_string(),
            packets,
            bytes,
        ];
        if joined {
            let names: Vec<String> = seen
                .unwrap_or_default()
                .iter()
                .map(|s| format!("{s:?}").to_lowercase())
                .collect();
            row.push(if names.len() == 1 {
                format!("{} only", names[0])
            } else {
                names.join("+")
            });
        }
        table.add_row(row);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::entry::tests::udp_snat;

    #[test]
    fn rows_spell_out_nat_and_missing_counters() {
        let e = udp_snat();
        let text = render(&[(&e, None)]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.contains("10.244.1.2:40000 → 1.1.1.1:53"), "{row}");
        assert!(row.contains("SNAT as 172.18.0.2:40000"), "{row}");
        assert!(row.contains("SEEN_REPLY,CONFIRMED,SRC_NAT_DONE"), "{row}");
        let joined = render(&[(&e, Some(&[Source::Netfilter][..]))]);
        assert!(
            joined
                .lines()
                .nth(1)
                .unwrap()
                .trim_end()
                .ends_with("netfilter only"),
            "{joined}"
        );
    }
}
