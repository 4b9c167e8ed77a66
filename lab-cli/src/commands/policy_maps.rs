//! `labctl policy identities | endpoints | map POD`: `--policy-mode ebpf`'s
//! maps read back from the nodes' pins (the work is in
//! `crate::lab::policy_bpf`), as `cilium identity list`, `cilium endpoint
//! list` with `cilium bpf ipcache list`, and `cilium bpf policy get` show
//! them.

use std::{
    io::{self, Write},
    net::Ipv4Addr,
    path::Path,
};

use super::policy::on_node;
use crate::{
    cli::policy::{PolicyMapArgs, PolicyViewArgs},
    kernel::privilege,
    lab::{
        Lab,
        policy::pick_lab,
        policy_bpf::{self, EndpointsView, IdentityRow, MapView},
        policy_node,
    },
    output::{OutputFormat, exit::Outcome as Exit, width},
    policy::{PolicyError, cilium, identity, maps::FIRST_CIDR_IDENTITY, model::Direction},
};

/// Cilium's ipcache in `dir`, or the error that says there is none.
fn cilium_ipcache(dir: &Path) -> Result<Vec<(ipnet::Ipv4Net, u32)>, PolicyError> {
    if cilium::ipcache_path(dir).is_none() {
        return Err(PolicyError::NoCiliumMaps(dir.display().to_string()));
    }
    Ok(cilium::ipcache(dir)?)
}

/// Labels Cilium's maps alone tell: reserved names and CIDR blocks (a
/// workload's labels are in Cilium's identity store: `cilium identity get`).
fn cilium_labels(id: u32, cache: &[(ipnet::Ipv4Net, u32)]) -> Vec<String> {
    if id == 0 {
        return vec!["ANY".to_owned()];
    }
    if let Some(l) = identity::reserved(id) {
        return identity::display(&l);
    }
    if id >= FIRST_CIDR_IDENTITY {
        return cache
            .iter()
            .filter(|(_, i)| *i == id)
            .map(|(b, _)| format!("cidr:{b}"))
            .collect();
    }
    Vec::new()
}

/// `policy identities --cilium`: each identity of Cilium's ipcache, with
/// the addresses it holds (/32 entries) in place of pods.
pub fn cilium_identities(dir: &Path) -> Result<Vec<IdentityRow>, PolicyError> {
    let cache = cilium_ipcache(dir)?;
    let mut ids: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for (block, id) in &cache {
        let pods = ids.entry(*id).or_default();
        if block.prefix_len() == 32 && *id < FIRST_CIDR_IDENTITY {
            pods.push(block.addr().to_string());
        }
    }
    Ok(ids
        .into_iter()
        .map(|(identity, pods)| IdentityRow {
            identity,
            labels: cilium_labels(identity, &cache),
            pods,
        })
        .collect())
}

/// `policy endpoints --cilium`: Cilium's endpoint policy maps and its
/// ipcache.
pub fn cilium_endpoints(dir: &Path) -> Result<EndpointsView, PolicyError> {
    let cache = cilium_ipcache(dir)?;
    let mut endpoints = Vec::new();
    for (id, path) in cilium::policy_maps(dir) {
        let entries = cilium::policy_entries(&path)?;
        endpoints.push(policy_bpf::EndpointRow {
            endpoint: id,
            pod: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            node: "cilium".to_owned(),
            ifindex: 0,
            address: Ipv4Addr::UNSPECIFIED,
            identity: 0,
            enforcing: Vec::new(),
            policy_entries: entries.len(),
        });
    }
    Ok(EndpointsView {
        lab: Some("cilium".to_owned()),
        node: None,
        endpoints,
        ipcache: cache
            .into_iter()
            .map(|(prefix, identity)| policy_bpf::IpcacheRow {
                prefix,
                identity,
                nodes: vec!["cilium".to_owned()],
            })
            .collect(),
    })
}

/// `policy map --cilium EPID`.
pub fn cilium_map(dir: &Path, epid: &str) -> Result<MapView, PolicyError> {
    let maps = cilium::policy_maps(dir);
    let known = || {
        let ids: Vec<String> = maps.iter().map(|(i, _)| i.to_string()).collect();
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        }
    };
    let Some((id, path)) = epid
        .parse::<u32>()
        .ok()
        .and_then(|e| maps.iter().find(|(i, _)| *i == e))
    else {
        return Err(PolicyError::NoCiliumEndpoint(epid.to_owned(), known()));
    };
    let cache = cilium::ipcache_path(dir)
        .map(|_| cilium::ipcache(dir))
        .transpose()?
        .unwrap_or_default();
    let mut entries: Vec<policy_bpf::MapRow> = cilium::policy_entries(path)?
        .into_iter()
        .map(|e| policy_bpf::MapRow {
            policy: if e.deny { "Deny" } else { "Allow" },
            direction: if e.egress {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            identity: e.identity,
            labels: cilium_labels(e.identity, &cache),
            port_proto: cilium::port_proto(&e),
            bytes: e.bytes,
            packets: e.packets,
            prefix: e.prefix,
        })
        .collect();
    entries.sort_by(|a, b| {
        (a.direction, a.policy, a.identity, &a.port_proto).cmp(&(
            b.direction,
            b.policy,
            b.identity,
            &b.port_proto,
        ))
    });
    Ok(MapView {
        default_deny: Vec::new(),
        pod: path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        node: "this node".to_owned(),
        endpoint: *id,
        identity: 0,
        entries,
    })
}

/// Cilium's bookkeeping labels (service account, cluster, namespace
/// labels) are left to `-o json`.
fn shown_labels(labels: &[String]) -> Vec<String> {
    labels
        .iter()
        .filter(|l| {
            !l.starts_with(&format!("k8s:{}", identity::NAMESPACE_LABELS_PREFIX))
                && !l.starts_with(&format!("k8s:{}", identity::SERVICE_ACCOUNT_LABEL))
                && !l.starts_with(&format!("k8s:{}", identity::CLUSTER_LABEL))
        })
        .cloned()
        .collect()
}

pub fn identities(args: PolicyViewArgs) -> anyhow::Result<Exit> {
    privilege::require("policy identities")?;
    let (name, rows) = if args.cilium {
        (
            "cilium".to_owned(),
            cilium_identities(Path::new(cilium::GLOBALS))?,
        )
    } else if on_node(args.node, args.lab.as_deref()) {
        let seen = policy_node::synced()?.seen()?;
        let rows = policy_bpf::identity_rows(&seen)?;
        let mut out = anstream::stdout().lock();
        match args.output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                serde_json::json!({ "node": seen.name, "identities": rows })
            )?,
            OutputFormat::Text => write_identities(&mut out, &rows)?,
        }
        return Ok(Exit::Success);
    } else {
        let lab = pick_lab(args.lab.as_deref())?;
        (
            lab.name().to_owned(),
            policy_bpf::identity_rows(&policy_bpf::Seen::of_lab(&lab)?)?,
        )
    };
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            serde_json::json!({ "lab": name, "identities": rows })
        )?,
        OutputFormat::Text => write_identities(&mut out, &rows)?,
    }
    Ok(Exit::Success)
}

/// One column's lines beside another's: row `i` of each, padded.
fn side_by_side(
    out: &mut impl Write,
    first: &str,
    columns: &[(&[String], usize)],
) -> io::Result<()> {
    let rows = columns
        .iter()
        .map(|(c, _)| c.len())
        .max()
        .unwrap_or(0)
        .max(1);
    for i in 0..rows {
        let mut line = if i == 0 {
            width::pad(first, 10)
        } else {
            " ".repeat(10)
        };
        for (col, w) in columns {
            let cell = col.get(i).map_or(String::new(), |c| width::elide(c, *w));
            line.push_str(&width::pad(&cell, *w + 2));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub(crate) fn write_identities(out: &mut impl Write, rows: &[IdentityRow]) -> io::Result<()> {
    writeln!(out, "{:<10}{:<42}PODS", "IDENTITY", "LABELS")?;
    for r in rows {
        side_by_side(
            out,
            &r.identity.to_string(),
            &[(&shown_labels(&r.labels), 40), (&r.pods, 26)],
        )?;
    }
    Ok(())
}

pub fn endpoints(args: PolicyViewArgs) -> anyhow::Result<Exit> {
    privilege::require("policy endpoints")?;
    let view = if args.cilium {
        cilium_endpoints(Path::new(cilium::GLOBALS))?
    } else if on_node(args.node, args.lab.as_deref()) {
        policy_bpf::endpoints(&policy_node::synced()?.seen()?)?
    } else {
        policy_bpf::endpoints(&policy_bpf::Seen::of_lab(&pick_lab(args.lab.as_deref())?)?)?
    };
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&view)?)?,
        OutputFormat::Text => write_endpoints(&mut out, &view)?,
    }
    Ok(Exit::Success)
}

fn directions(d: &[Direction]) -> String {
    if d.is_empty() {
        "-".to_owned()
    } else {
        d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",")
    }
}

pub(crate) fn write_endpoints(out: &mut impl Write, v: &EndpointsView) -> io::Result<()> {
    writeln!(
        out,
        "{:<10}{:<30}{:<10}{:<16}ENTRIES",
        "ENDPOINT", "POD", "IDENTITY", "ENFORCING"
    )?;
    let mut node = None;
    for e in &v.endpoints {
        if node != Some(&e.node) {
            writeln!(out, "{}:", e.node)?;
            node = Some(&e.node);
        }
        writeln!(
            out,
            "{:<10}{}{:<10}{:<16}{}",
            e.endpoint,
            width::pad(&width::elide(&e.pod, 28), 30),
            e.identity,
            directions(&e.enforcing),
            e.policy_entries
        )?;
    }
    writeln!(out)?;
    writeln!(out, "IPCACHE")?;
    writeln!(out, "{:<20}{:<10}NODES", "PREFIX", "IDENTITY")?;
    let all: std::collections::BTreeSet<&String> =
        v.ipcache.iter().flat_map(|r| r.nodes.iter()).collect();
    for r in &v.ipcache {
        let nodes = if r.nodes.len() == all.len() {
            "all".to_owned()
        } else {
            r.nodes.join(", ")
        };
        writeln!(
            out,
            "{:<20}{:<10}{}",
            r.prefix.to_string(),
            r.identity,
            width::elide(&nodes, 50)
        )?;
    }
    Ok(())
}

pub fn map(args: PolicyMapArgs) -> anyhow::Result<Exit> {
    privilege::require("policy map")?;
    let view = if args.cilium {
        cilium_map(Path::new(cilium::GLOBALS), &args.pod)?
    } else if on_node(args.node, args.lab.as_deref()) {
        policy_node::synced()?.map(&args.pod)?
    } else {
        let (lab, pod) = Lab::split_member(args.lab.as_deref(), &args.pod);
        let lab = match lab {
            Some(l) => Lab::open(l)?,
            None => pick_lab(None)?,
        };
        policy_bpf::map(&lab, pod)?
    };
    let mut out = anstream::stdout().lock();
    match args.output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string(&view)?)?,
        OutputFormat::Text => write_map(&mut out, &view)?,
    }
    Ok(Exit::Success)
}

/// As `cilium bpf policy get`, the labels last (one per line, cut to
/// what is left of 80 columns; `-o json` has them whole, and Cilium's
/// bookkeeping ones). Columns are as wide as their widest value.
pub fn write_map(out: &mut impl Write, v: &MapView) -> io::Result<()> {
    // Cilium's maps alone do not say an endpoint's identity (0).
    let identity = if v.identity == 0 {
        String::new()
    } else {
        format!(", identity {}", v.identity)
    };
    width::write_fill(
        out,
        &format!("{}: endpoint {} on {}{identity}", v.pod, v.endpoint, v.node),
        "",
        "  ",
    )?;
    if v.entries.is_empty() {
        return match v.default_deny.as_slice() {
            [] => writeln!(out, "(no entries: no policy selects this pod)"),
            dirs => {
                let dirs: Vec<String> = dirs.iter().map(|d| d.to_string()).collect();
                writeln!(
                    out,
                    "(no entries: default deny in {}, and nothing allowed there)",
                    dirs.join(" and ")
                )
            }
        };
    }
    let rows: Vec<[String; 6]> = v
        .entries
        .iter()
        .map(|e| {
            [
                e.policy.to_owned(),
                match e.direction {
                    Direction::Ingress => "Ingress".to_owned(),
                    Direction::Egress => "Egress".to_owned(),
                },
                if e.identity == 0 {
                    "ANY".to_owned()
                } else {
                    e.identity.to_string()
                },
                e.port_proto.clone(),
                e.bytes.to_string(),
                e.packets.to_string(),
            ]
        })
        .collect();
    let head = [
        "POLICY",
        "DIRECTION",
        "IDENTITY",
        "PORT/PROTO",
        "BYTES",
        "PACKETS",
    ];
    let mut widths = head.map(width::width);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(width::width(c));
        }
    }
    let used: usize = widths.iter().map(|w| w + 2).sum();
    let room = 80usize.saturating_sub(used).max(8);
    let line = |cells: [&str; 6], labels: &str| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            // Counts right-aligned.
            if i >= 4 {
                l.push_str(&format!("{}{c}  ", " ".repeat(w - width::width(c))));
            } else {
                l.push_str(&width::pad(c, w + 2));
            }
        }
        l.push_str(&width::elide(labels, room));
        l.trim_end().to_owned()
    };
    writeln!(out, "{}", line(head, "LABELS"))?;
    for (e, r) in v.entries.iter().zip(&rows) {
        let labels = shown_labels(&e.labels);
        let cells = [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]].map(String::as_str);
        writeln!(
            out,
            "{}",
            line(cells, labels.first().map_or("", String::as_str))
        )?;
        for l in labels.iter().skip(1) {
            writeln!(out, "{}{}", " ".repeat(used), width::elide(l, room))?;
        }
    }
    Ok(())
}
