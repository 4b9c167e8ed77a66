//! Every text view fits 80 columns: each is rendered here from data, with
//! the longest content a workshop meets (16-character lab names, pods as
//! `LAB/pod-a`, IPv6 addresses, long nft rules and reason names, counts in
//! the millions), and [`fits`] fails on any line wider than 80 display
//! columns (styles stripped). No kernel, no privileges.
//!
//! `LABCTL_SHOW_VIEWS=1 cargo test -p lab-cli --lib views -- --nocapture`
//! prints every view as rendered, to look at them.
//!
//! To add a view: one call in a test here (or a new `#[test]`),
//! `fits("NAME", |out| render_it(out, &data));` where the closure writes
//! the view to `out` (a `Vec<u8>`) and returns `io::Result<()>`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use crate::{
    commands,
    conntrack::{
        entry::{CtEntry, Source, tests::udp_snat},
        netlink::{CpuStats, EventKind, TableSize},
    },
    drops::{record::DropRecord, session::Summary},
    ebpf::drop_tracer::Hook,
    flows::{self, Item, Lost, Origin, Verdict},
    kernel::{
        names::PodRef,
        rtnl::{LinkInfoSummary, RouteSummary},
    },
    lab::{
        self, Lab,
        faults::TriggerReport,
        plan::{LabOptions, Plan, Role},
        scenario::SCENARIOS,
        state::LabState,
        status::{LabStatus, MemberStatus},
        traffic::{Proto, TrafficReport},
    },
    masq::{
        MasqRow,
        nat::{NatDir, NatRow, NatSummary, NatTable},
    },
    output,
    services::{
        self, BackendView, Endpoint, Frontend, FrontendView, KubeProxyMode, L4, ServiceSpec,
    },
};

pub(crate) use output::width::check::fits;

/// A lab name as long as `lab up --name` allows.
const LAB: &str = "workshop-team-07";
const V6_A: &str = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff";
const V6_B: &str = "fd00:10:244:1234:5678:9abc:def0:1234";

fn pod(name: &str) -> String {
    format!("{LAB}/{name}")
}

fn drop_record(reason: &str) -> DropRecord {
    let mut r = crate::drops::record::tests::sample_udp();
    r.netns = pod("client");
    r.pod = Some(pod("client"));
    r.ifname = Some("veth-client-01".into());
    r.proto = "TCP".into();
    r.tcp_flags = Some("SA".into());
    r.src = Some("10.244.1.2".into());
    r.dst = Some("10.244.2.3".into());
    r.sport = Some(40_000);
    r.dport = Some(8080);
    r.reason = reason.into();
    r.len = 1500;
    r.location = "__netif_receive_skb_one_core+0x1a5".into();
    r
}

fn v6_record(reason: &str) -> DropRecord {
    let mut r = drop_record(reason);
    r.proto = "ICMPv6".into();
    r.tcp_flags = None;
    r.sport = None;
    r.dport = None;
    r.icmp_type = Some(128);
    r.icmp_code = Some(0);
    r.src = Some(V6_A.into());
    r.dst = Some(V6_B.into());
    r
}

/// A policy drop with long names: a deny rule, the kernel's reason, the
/// two ends and their identities, and the note when the policies do not
/// explain it.
fn policy_record() -> DropRecord {
    use crate::drops::record::{PolicyNames, PolicyRef, PolicyVerdict};
    let mut r = drop_record("POLICY_DENY");
    r.policy = Some(PolicyVerdict {
        direction: "ingress",
        kernel_reason: "NETFILTER_DROP".into(),
        kernel_reason_code: 12,
        mark: "0x1ab50002".into(),
        names: Some(PolicyNames {
            lab: LAB.into(),
            from: pod("client-with-a-long-deployment-name-7d9f8b6c5d-x2x4z"),
            to: pod("web-3"),
            pod: Some(pod("web-3")),
            policies: vec![PolicyRef {
                kind: "CiliumNetworkPolicy",
                namespace: "a-namespace-with-a-long-name".into(),
                name: "deny-everything-from-the-outer-rim-territories".into(),
            }],
            rule: Some("a-namespace-with-a-long-name/deny-everything-from-the-outer-rim-territories ingressDeny[12] (/home/learner/policies/outer-rim.yaml:123)".into()),
            src_identity: 65_535,
            dst_identity: 16_777_217,
            note: Some("the lab's policies do not deny this ingress (no policy turns default deny on): the drop is not theirs".into()),
        }),
    });
    r
}

fn summary() -> Summary {
    let mut s = Summary {
        kind: "summary",
        events: 1_234_560,
        lost: 7,
        not_shown: 123,
        ..Default::default()
    };
    for (reason, n) in [
        ("IP_INNOHDRERRORS", 1_234_000),
        ("TCP_LISTEN_OVERFLOW", 456),
        ("NETFILTER_DROP", 111),
        (
            "SKB_UCOPY_FAULT_AND_A_NAME_FROM_A_FUTURE_KERNEL_THAT_IS_LONG",
            1,
        ),
    ] {
        s.by_reason.insert(reason.into(), n);
    }
    for (loc, n) in [
        ("__netif_receive_skb_one_core+0x1a5", 1_234_000),
        ("nft_do_chain+0x4f2", 111),
        (
            "a_symbol_from_an_out_of_tree_module_with_a_long_name+0x1234 [module_name]",
            1,
        ),
    ] {
        s.by_location.insert(loc.into(), n);
    }
    s
}

#[test]
fn trace_fits_80_columns() {
    use crate::drops::session::Sink as _;
    let text = fits("trace stream, summary and --explain", |out| {
        let mut sink = output::drops::TextSink::new(&mut *out, false, true);
        sink.started(Hook::Tracepoint)?;
        let mut with_stack = drop_record("NETFILTER_DROP");
        with_stack.stack = Some(vec![
            "nft_do_chain+0x4f2".into(),
            "a_symbol_from_an_out_of_tree_module_with_a_long_name+0x1234 [module_name]".into(),
        ]);
        for r in [
            drop_record("NO_SOCKET"),
            with_stack,
            v6_record("IP_INNOHDRERRORS"),
            v6_record("PKT_TOO_BIG"),
            drop_record("SOCKET_RCVBUFF"),
            policy_record(),
        ] {
            sink.drop_seen(&r)?;
        }
        sink.progress(&summary(), Duration::from_secs_f64(12_345.6))?;
        sink.finished(&summary(), Duration::from_secs_f64(12_345.6))
    });
    assert!(text.contains("summary after 12345.6s"), "{text}");
    assert!(
        text.contains("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff →"),
        "{text}"
    );
    assert!(text.contains("what:") && text.contains("try:"), "{text}");
    // `--summary` and the pcap's summary use the same table.
    fits("trace --summary", |out| {
        let mut sink = output::drops::TextSink::new(&mut *out, true, false);
        sink.progress(&summary(), Duration::from_secs(1))
    });
    // Every explanation, as `labctl explain` and `trace --explain` show it.
    fits("explain (every reason)", |out| {
        for e in crate::drops::explain::all() {
            writeln!(out, "{} (code 123 on this kernel)", e.reason)?;
            output::drops::write_explanation(out, e.reason, "  ")?;
            output::drops::write_explanation(out, e.reason, "    ")?;
        }
        output::drops::write_explanation(out, "IP_INNOHDRERRORS", "    ")
    });
    fits("explain --list", |out| {
        for name in [
            "NO_SOCKET",
            "SKB_UCOPY_FAULT_AND_A_NAME_FROM_A_FUTURE_KERNEL_THAT_IS_LONG",
        ] {
            writeln!(
                out,
                "{}",
                commands::explain::list_line(Some(123), name, true)
            )?;
        }
        Ok(())
    });
    let note = fits("trace --pod-namespace note", |out| {
        output::drops::write_pod_namespace_note(out, LAB, &[])?;
        output::drops::write_pod_namespace_note(out, LAB, &["node1".into()])?;
        output::drops::write_pod_namespace_note(
            out,
            LAB,
            &["node1".into(), "node2".into(), "node3".into()],
        )
    });
    assert!(note.contains(&format!("--netns {LAB}/node1")), "{note}");
}

fn frontend(source: &str, object: &str, backend_object: &str, p: Option<f64>) -> FrontendView {
    FrontendView {
        service: Some(pod("web")),
        vip: Ipv4Addr::new(10, 96, 0, 10),
        port: 8080,
        proto: Some(L4::Tcp),
        source: source.into(),
        object: object.into(),
        backends: (1..=3)
            .map(|i| BackendView {
                addr: Some(Ipv4Addr::new(10, 244, 2, 100 + i)),
                port: Some(65_000),
                pod: Some(pod(&format!("web-{i}"))),
                connections: Some(123_456),
                probability: p,
                object: backend_object.into(),
            })
            .collect(),
    }
}

#[test]
fn services_fit_80_columns() {
    let mut empty = frontend("ebpf-socket", "rev-nat 1", "backend 1", None);
    empty.backends.clear();
    let views = [
        frontend(
            "iptables",
            "KUBE-SVC-IN5KDXNPASQUNRUW",
            "KUBE-SEP-SBJTBP5WO463M5Q2",
            Some(0.33),
        ),
        frontend(
            "nftables",
            "service-VEQX3XDD-workshop-team-07/web/tcp/http",
            "endpoint-V744RZVL-workshop-team-07/web/tcp/http__10.244.2.101/65000",
            None,
        ),
        frontend("ebpf-socket", "rev-nat 1", "backend 1", None),
        empty,
    ];
    let text = fits("svc list", |out| {
        write!(out, "{}", output::services::render(&views))
    });
    assert!(text.contains("KUBE-SEP-SBJTBP5WO463M5Q2"), "{text}");
    let flow = |node: Option<&str>, socket: Option<u64>| services::Flow {
        table: if node.is_some() {
            "conntrack"
        } else {
            "LB4_REVERSE_SK"
        },
        node: node.map(str::to_owned),
        proto: Some(L4::Tcp),
        client: Some(Ipv4Addr::new(10, 244, 1, 2)),
        client_port: socket.is_none().then_some(45_216),
        client_pod: Some(pod("client")),
        socket,
        vip: Ipv4Addr::new(10, 96, 0, 10),
        port: 8080,
        backend: Ipv4Addr::new(10, 244, 2, 103),
        backend_port: 65_000,
        backend_pod: Some(pod("web-3")),
    };
    fits("svc flows", |out| {
        write!(
            out,
            "{}",
            output::services::render_flows(&[
                flow(Some(&pod("node1")), None),
                flow(None, Some(18_446_744_073_709_551_615)),
            ])
        )
    });
}

#[test]
fn service_plans_fit_80_columns() {
    use crate::kernel::datapath::{Shown, ShownPart};
    let long = Frontend {
        namespace: "workshop-team-07".into(),
        service: "web-frontend-of-the-team-with-a-long-name".into(),
        vip: Ipv4Addr::new(10, 111, 255, 254),
        port: 65_000,
        proto: L4::Udp,
        backends: (100..103)
            .map(|h| Endpoint {
                addr: Ipv4Addr::new(10, 244, 2, h),
                port: 65_000,
            })
            .collect(),
    };
    let fronts = std::slice::from_ref(&long);
    let (nft, nft_changes) = services::nftables::sync_input(fronts, "10.244.0.0/16", None);
    let ipt = services::iptables::plan_node(fronts, "10.244.0.0/16", "");
    let maps = services::ebpf::plan_maps(&services::ebpf::MapRows::default(), fronts);
    let shown = |unit, lines: Vec<String>, changes| Shown {
        unit,
        changes,
        parts: vec![ShownPart {
            target: pod("node1"),
            changes,
            lines,
        }],
    };
    for (view, plan) in [
        (
            "svc plan (nftables)",
            shown(
                services::nftables::UNIT,
                nft.lines().map(|l| l.replace('\t', "  ")).collect(),
                nft_changes,
            ),
        ),
        (
            "svc plan (iptables)",
            shown(services::iptables::UNIT, ipt.lines, ipt.changes),
        ),
        (
            "svc plan (ebpf)",
            shown(
                services::ebpf::UNIT,
                maps.iter().map(ToString::to_string).collect(),
                maps.len(),
            ),
        ),
    ] {
        let text = fits(view, |out| write!(out, "{}", output::plan::render(&plan)));
        assert!(text.starts_with(&format!("{}: ", pod("node1"))), "{text}");
    }
}

/// A lab of `scenario` named [`LAB`], as its plan says (no kernel).
fn plan_lab(scenario: &str, options: LabOptions) -> Lab {
    let plan = Plan::new(LAB, lab::scenario::find(scenario).unwrap(), options.clone()).unwrap();
    Lab {
        plan,
        state: LabState {
            lab: LAB.into(),
            scenario: scenario.into(),
            options,
            complete: true,
            namespaces: Vec::new(),
            cgroups: Vec::new(),
            services: Vec::new(),
            policies: Vec::new(),
            labels: Default::default(),
            identities: None,
        },
    }
}

fn member(name: &str, role: Role) -> MemberStatus {
    let link =
        |name: &str, kind: &str, addresses: Vec<String>, master: Option<&str>| LinkInfoSummary {
            name: name.into(),
            index: 7,
            kind: Some(kind.into()),
            mtu: 65_535,
            up: true,
            master: master.map(str::to_owned),
            alias: None,
            mac: None,
            addresses,
        };
    MemberStatus {
        name: name.into(),
        role,
        display: pod(name),
        pod: (role == Role::Pod).then(|| pod(name)),
        namespace: (role == Role::Pod).then(|| "kube-node-lease".into()),
        labels: (role == Role::Pod).then(|| {
            (1..=5)
                .map(|i| (format!("app.kubernetes.io/component-{i}"), "deathstar-landing-bay".into()))
                .collect()
        }),
        netns: format!("{LAB}-{name}"),
        links: vec![
            link(
                "veth-client-01",
                "vxlan",
                vec![
                    "10.244.1.2/24".into(),
                    format!("{V6_A}/64"),
                    format!("{V6_B}/128"),
                ],
                Some("underlay0"),
            ),
            link("eth0", "veth", vec!["10.244.1.2/24".into()], None),
        ],
        routes: vec![RouteSummary {
            dst: "10.244.128.0/17".into(),
            via: Some(Ipv4Addr::new(172, 18, 255, 254)),
            dev: Some("veth-client-01".into()),
            scope_link: false,
        }],
        ruleset: (role == Role::Node).then(|| {
            "table ip labctl-nat {\n\tchain postrouting {\n\t\tip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 oifname \"eth0\" counter packets 123456789 bytes 123456789012 masquerade comment \"pods to the world: SNAT to the node address\"\n\t\tmeta l4proto udp counter packets 0 bytes 0 dnat to 10.244.2.3:8080\n\t}\n}\n".into()
        }),
        ebpf_nat: (role == Role::Node).then_some(NatSummary {
            used: 65_536,
            capacity: 65_536,
            allocated: 1_234_567_890,
            collisions: 123_456,
            alloc_failed: 999,
            table_full: 1_234_567_890,
        }),
    }
}

#[test]
fn labs_fit_80_columns() {
    fits("lab list", |out| commands::lab::write_list(out, SCENARIOS));
    for s in SCENARIOS {
        for masq in [lab::plan::MasqMode::Netfilter, lab::plan::MasqMode::Ebpf] {
            let options = LabOptions {
                masq,
                kube_proxy: (!s.services.is_empty()).then_some(KubeProxyMode::EbpfSocket),
                ..Default::default()
            };
            let l = plan_lab(s.name, options);
            fits(&format!("lab up {}", s.name), |out| {
                commands::lab::write_up(out, &l, &lab::hints::hints(&l, true))
            });
        }
    }
    let status = LabStatus {
        lab: LAB.into(),
        scenario: "service".into(),
        complete: false,
        members: vec![
            member("client", Role::Pod),
            member("node1", Role::Node),
            member("world", Role::World),
        ],
        kube_proxy: Some(KubeProxyMode::EbpfSocket),
        services: vec![ServiceSpec {
            name: "web-frontend".into(),
            vip: Ipv4Addr::new(10, 96, 100, 100),
            port: 65_535,
            target_port: 65_535,
            protocols: vec![L4::Tcp, L4::Udp],
            backends: (1..=12).map(|i| format!("web-{i}")).collect(),
        }],
        mode_hidden_by: None,
        policy_mode: Some(crate::policy::PolicyMode::Netfilter),
        policies: (1..=6)
            .map(|i| crate::policy::PolicyKey {
                kind: crate::policy::Kind::CiliumNetworkPolicy,
                namespace: "kube-node-lease".into(),
                name: format!("allow-the-deathstar-landing-bay-{i}"),
            })
            .collect(),
    };
    let text = fits("lab status", |out| {
        commands::lab::status_view::write_status(out, &[status])
    });
    assert!(text.contains("nft: ip saddr 10.244.0.0/16"), "{text}");
    fits("lab trigger", |out| {
        commands::lab::write_trigger(
            out,
            &TriggerReport {
                fault: "rp-filter-strict".into(),
                sent: 1_000_000,
                src: Ipv4Addr::new(203, 0, 113, 100),
                dst: Ipv4Addr::new(10, 244, 255, 254),
                proto: Proto::Udp,
                sport: 65_535,
                dport: 65_535,
                reason: "IP_INNOHDRERRORS".into(),
                at: pod("node1"),
                netns: format!("{LAB}-node1"),
                iface: "veth-client-01".into(),
            },
        )
    });
    let report = TrafficReport {
        from: "client".into(),
        to: "web".into(),
        src: Ipv4Addr::new(10, 244, 1, 2),
        dst: Ipv4Addr::new(10, 96, 0, 10),
        proto: Proto::Tcp,
        port: Some(8080),
        sent: 1_000_000,
        answered: 999_999,
        rtt_min_us: Some(282),
        rtt_avg_us: Some(466),
        rtt_max_us: Some(1_234_801),
        server_saw: BTreeMap::from([(Ipv4Addr::new(172, 18, 0, 2), 999_999)]),
        backends: (1..=3).map(|i| (format!("web-{i}"), 333_333)).collect(),
        replies_from: BTreeMap::new(),
        errors: BTreeMap::from([("connection refused (os error 111)".into(), 1)]),
        bytes: None,
        mbit_per_s: None,
    };
    fits("lab traffic", |out| {
        commands::lab::write_traffic(out, &report)
    });
}

fn v6_entry() -> CtEntry {
    let mut e = udp_snat();
    let a = |s: &str| s.parse::<IpAddr>().unwrap();
    e.family = "ipv6";
    e.proto = "tcp".into();
    e.state = Some("ESTABLISHED".into());
    e.orig.src = a(V6_A);
    e.orig.dst = a(V6_B);
    e.orig.sport = Some(65_535);
    e.orig.dport = Some(65_535);
    e.reply.src = a(V6_B);
    e.reply.dst = a("2001:db8::2");
    e.reply.sport = Some(8080);
    e
}

#[test]
fn conntrack_fits_80_columns() {
    let pods: HashMap<Ipv4Addr, PodRef> = [
        (Ipv4Addr::new(10, 244, 1, 2), "client"),
        (Ipv4Addr::new(1, 1, 1, 1), "world-dns"),
    ]
    .into_iter()
    .map(|(a, name)| {
        (
            a,
            PodRef {
                namespace: LAB.into(),
                name: name.into(),
                uid: None,
            },
        )
    })
    .collect();
    let mut named = udp_snat();
    named.state = Some("SYN_SENT".into());
    let mut icmp = udp_snat();
    icmp.proto = "icmp".into();
    icmp.orig.sport = None;
    icmp.orig.dport = None;
    icmp.orig.icmp_type = Some(8);
    icmp.orig.icmp_code = Some(0);
    icmp.orig.icmp_id = Some(65_535);
    let entries = [udp_snat(), named, icmp, v6_entry()];
    for joined in [false, true] {
        fits("conntrack list", |out| {
            let mut t = output::conntrack::TableWriter::new(
                &mut *out,
                output::conntrack::Layout::Compact,
                joined,
            )?
            .with_pods(pods.clone());
            for e in &entries {
                t.row(e, joined.then_some(&[Source::Netfilter, Source::Bpf][..]))?;
            }
            Ok(())
        });
    }
    fits("conntrack watch", |out| {
        for e in &entries {
            for kind in [EventKind::New, EventKind::Update, EventKind::Destroy] {
                output::conntrack::write_event(out, kind, e, true, &pods)?;
            }
        }
        Ok(())
    });
    let counters = [
        "found",
        "invalid",
        "insert",
        "insert_failed",
        "drop",
        "early_drop",
        "error",
        "search_restart",
        "clash_resolve",
        "chaintoolong",
    ];
    fits("conntrack stats", |out| {
        output::conntrack::write_stats(
            out,
            Some(&pod("node1")),
            &TableSize {
                entries: 262_144,
                max: 4_294_967_295,
            },
            &(0..3)
                .map(|cpu| CpuStats {
                    cpu,
                    counters: counters.iter().map(|c| (*c, 4_294_967_295)).collect(),
                })
                .collect::<Vec<_>>(),
        )
    });
}

#[test]
fn masq_fits_80_columns() {
    let row = |i: u8, node: Ipv4Addr| MasqRow {
        pod: Ipv4Addr::new(10, 244, 1, i),
        node,
        connections: 123_456,
        packets_out: 1_234_567,
        packets_in: 7_654_321,
        bytes_out: 1_234_567_890,
        bytes_in: 9_876_543_210,
        port_min: Some(32_768),
        port_max: Some(60_999),
        pod_name: Some(pod(&format!("client-{i}"))),
    };
    let node = Ipv4Addr::new(172, 18, 0, 2);
    // 3-digit counts: a table.
    let small = |i: u8| MasqRow {
        connections: 123,
        packets_out: 456,
        packets_in: 789,
        bytes_out: 65_432,
        bytes_in: 98_765,
        ..row(i, node)
    };
    let table = fits("masq (workshop counts)", |out| {
        write!(out, "{}", commands::masq::render(&[small(2), small(3)]))
    });
    assert!(table.contains("POD") && table.contains("PORTS"), "{table}");
    // Counts in the billions: a record per pod.
    fits("masq", |out| {
        write!(
            out,
            "{}",
            commands::masq::render(&[row(2, node), row(3, node)])
        )
    });
    fits("masq (two node addresses)", |out| {
        write!(
            out,
            "{}",
            commands::masq::render(&[row(2, node), row(3, Ipv4Addr::new(172, 18, 0, 3))])
        )
    });
    let nat_row = |dir: NatDir, closing: bool| NatRow {
        dir,
        proto: "icmp".into(),
        src: Ipv4Addr::new(10, 244, 1, 2),
        sport: 65_535,
        dst: Ipv4Addr::new(203, 0, 113, 10),
        dport: 65_535,
        xlate_addr: node,
        xlate_port: 65_535,
        closing,
        age_s: 604_800,
        idle_s: 604_800,
        src_pod: Some(pod("client")),
        dst_pod: Some(pod("world")),
    };
    let table = NatTable {
        entries: vec![nat_row(NatDir::Out, true), nat_row(NatDir::In, false)],
        used: 65_536,
        capacity: 65_536,
        allocated: 1_234_567_890,
        collisions: 123_456,
        alloc_failed: 999,
        table_full: 1_234_567_890,
        reclaimed: 1_234_567_890,
        sweeps: 1_234_567,
        xlate_out: 1_234_567_890,
        xlate_in: 1_234_567_890,
        expired: 1_234_567_890,
    };
    fits("masq nat-table", |out| {
        commands::masq::write_nat_table(out, &table)
    });
}

#[test]
fn doctor_fits_80_columns() {
    use commands::doctor::{Check, Report};
    let check = |name: &str, ok: bool, required: bool, seen: &str, fix: Option<&str>| Check {
        name: name.into(),
        ok,
        required,
        seen: seen.into(),
        fix: fix.map(str::to_owned),
    };
    let report = Report {
        ok: false,
        kernel: "6.18.0-0.rc4.20251106git1234abcd.38.fc44.x86_64+debug".into(),
        checks: vec![
            check(
                "privileges",
                true,
                true,
                "root, CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN",
                None,
            ),
            check(
                "service modes",
                true,
                true,
                "iptables, nftables, ebpf, ebpf-socket (not: ipvs: this kernel has no IPVS (no /proc/net/ip_vs; `modprobe ip_vs` fails or it is not built))",
                None,
            ),
            check(
                "skb:kfree_skb tracepoint",
                false,
                true,
                "/sys/kernel/tracing/events/skb/kfree_skb/format: No such file or directory (os error 2)",
                Some("the `reason` field needs kernel >= 5.17; upgrade the kernel"),
            ),
            check(
                "container runtime",
                false,
                false,
                "no container runtime socket at /run/containerd/containerd.sock (labctl names Kubernetes pods through the node's CRI; point --cri-socket at it)",
                Some(
                    "optional: pods are named through the node's CRI (containerd); outside a Kubernetes node there are none",
                ),
            ),
        ],
    };
    fits("doctor", |out| commands::doctor::print_text(out, &report));
}

#[test]
fn observe_fits_80_columns() {
    let endpoint = |ip: &str, port: Option<u16>, name: Option<&str>| flows::Endpoint {
        ip: Some(ip.parse().unwrap()),
        port,
        pod: name.map(|n| PodRef {
            namespace: LAB.into(),
            name: n.into(),
            uid: None,
        }),
    };
    let flow = |origin: Origin, verdict: Verdict, src: flows::Endpoint, dst: flows::Endpoint| {
        Item::Flow(Box::new(flows::Flow {
            time_ns: 1_700_003_723_000_456_000,
            verdict,
            drop_reason: (verdict == Verdict::Dropped).then(|| "IP_INNOHDRERRORS".into()),
            policy: (verdict == Verdict::Dropped)
                .then(|| policy_record().policy)
                .flatten(),
            fragment: None,
            source: src,
            destination: dst,
            l4: flows::L4::Tcp(Some(0x12)),
            node: pod("node1"),
            nat: Some("SNAT as 172.18.0.2:65535, DNAT to 10.244.2.3:65535".into()),
            source_xlated: None,
            state: Some("SYN_RECV".into()),
            origin,
        }))
    };
    let items = [
        flow(
            Origin::Conntrack {
                event: EventKind::Update,
                resync: true,
            },
            Verdict::Forwarded,
            endpoint("10.244.1.2", Some(65_535), Some("client")),
            endpoint("10.244.2.3", Some(65_535), Some("web-3")),
        ),
        flow(
            Origin::Drop {
                location: "__netif_receive_skb_one_core+0x1a5".into(),
                ifname: Some("eth0".into()),
            },
            Verdict::Dropped,
            endpoint(V6_A, Some(65_535), None),
            endpoint(V6_B, Some(65_535), None),
        ),
        Item::Lost(Lost {
            time_ns: 0,
            source: flows::LostSource::CtnetlinkBuffer,
            count: 18_446_744_073_709_551_615,
            node: "drop tracer".into(),
        }),
    ];
    let verdict = |allowed: bool| {
        let packet = flows::VerdictPacket {
            src: "10.244.1.2".parse().unwrap(),
            dst: "10.244.2.3".parse().unwrap(),
            sport: 65_535,
            dport: 65_535,
            proto: 6,
            info: 0x02,
        };
        let event = flows::PolicyEvent {
            source: flows::PolicySource::Nflog,
            direction: "ingress",
            match_type: if allowed { 6 } else { 0 },
            entry: "rule".into(),
            src_identity: Some(u32::MAX),
            dst_identity: Some(u32::MAX),
            names: Some(lab::policy::VerdictNames {
                lab: LAB.into(),
                pod: Some(pod("web-3")),
                policies: vec![
                    crate::drops::record::PolicyRef {
                        kind: "CiliumNetworkPolicy",
                        namespace: "x".repeat(63),
                        name: "y".repeat(63),
                    };
                    2
                ],
                rule: allowed.then(|| {
                    format!(
                        "{}/{} ingress[0] (p.yaml:9)",
                        "x".repeat(63),
                        "y".repeat(63)
                    )
                }),
                src_identity: u32::MAX,
                dst_identity: u32::MAX,
                src_labels: Vec::new(),
                dst_labels: Vec::new(),
            }),
        };
        struct LongPods;
        impl flows::PodsByAddr for LongPods {
            fn pod(&mut self, _: u64, _: IpAddr) -> Option<PodRef> {
                Some(PodRef {
                    namespace: LAB.into(),
                    name: "z".repeat(63),
                    uid: None,
                })
            }
        }
        let mut pods = LongPods;
        Item::Flow(Box::new(flows::Flow::from_policy(
            &packet,
            (!allowed).then_some("POLICY_DENIED"),
            &pod("node1"),
            0,
            1_700_003_723_000_456_000,
            event,
            &mut pods,
        )))
    };
    let items: Vec<Item> = items
        .into_iter()
        .chain([verdict(true), verdict(false)])
        .collect();
    fits("observe", |out| {
        for item in &items {
            writeln!(out, "{}", output::flows::compact(item))?;
        }
        Ok(())
    });
}

#[test]
fn metrics_and_error_reports_fit_80_columns() {
    fits("metrics", |out| {
        writeln!(
            out,
            "{}",
            commands::metrics::serving_line(&format!("http://[{V6_A}]:65535/metrics"))
        )?;
        let any = std::net::SocketAddr::new(V6_A.parse().map_err(std::io::Error::other)?, 65535);
        writeln!(out, "{}", commands::metrics::no_auth_warning(any))
    });
    let teardown = lab::LabError::Teardown {
        lab: LAB.into(),
        errors: vec![
            format!(
                "network namespace `{LAB}-node1` is not the one this lab created (inode 4026532245, expected 4026532999); left it alone"
            ),
            "/run/netns/a-very-long-name-somebody-planted-here-to-see-what-happens-with-paths is not a network namespace; left it alone".into(),
        ],
    };
    let err = anyhow::Error::new(teardown).context("cannot tear the lab down");
    let text = fits("error report", |out| output::exit::write_report(out, &err));
    assert_eq!(text.matches("left things behind").count(), 1, "{text}");
}

/// Every exercise view, for every shipped exercise: list, start (story,
/// tasks, footer), a check with every task and guard failing with long
/// observations, status with answers, each hint, the solution with its
/// long shell lines, selftest steps and lint problems.
#[test]
fn exercises_fit_80_columns() {
    use crate::exercises::{
        Hint,
        attempt::{AnswerRecord, Attempt},
        catalog, selftest, template,
    };
    use output::exercises as view;
    let sources = catalog::shipped().unwrap();
    fits("exercise list", |out| view::list(out, &sources));
    for s in &sources {
        for vars in template::variants(&s.header.params, LAB) {
            let ex = catalog::instantiate(s, &vars).unwrap();
            let id = &ex.id;
            fits(&format!("exercise start {id}"), |out| {
                view::started(out, &ex, LAB, true)
            });
            fits(&format!("exercise solution {id}"), |out| {
                view::solution(out, &ex, LAB)
            });
            for (i, text) in ex.hints.iter().enumerate() {
                let h = Hint {
                    number: i + 1,
                    total: ex.hints.len(),
                    text: text.clone(),
                    repeated: i + 1 == ex.hints.len(),
                };
                fits(&format!("exercise hint {id} {}", i + 1), |out| {
                    view::hint(out, &h)
                });
            }
            let failing = |title: &str, why: Option<&String>| crate::exercises::observe::Outcome {
                id: "t".into(),
                title: title.into(),
                passed: false,
                skipped: false,
                keep_working: true,
                failures: vec![format!(
                    "tcp-stream from {} to {} port 5001: 0 bytes arrived in 2 s; the server saw the source as {V6_A}",
                    pod("client"),
                    pod("web-1")
                )],
                why: why.cloned(),
            };
            let report = crate::exercises::observe::CheckReport {
                exercise: id.clone(),
                lab: LAB.into(),
                tasks: ex
                    .tasks
                    .iter()
                    .map(|t| failing(&t.title, t.why.as_ref()))
                    .collect(),
                guards: ex
                    .guards
                    .iter()
                    .map(|g| {
                        let mut o = failing(&g.title, Some(&g.why));
                        o.id = "guard-1".into();
                        o
                    })
                    .collect(),
                passed: false,
                elapsed_ms: 123_456,
            };
            fits(&format!("exercise check {id}"), |out| {
                view::report(out, &report)
            });
            let mut a = Attempt::new(id, LAB, 7, vars.clone(), &s.file, &s.text);
            a.answers = vec![AnswerRecord {
                text: format!("{} NETFILTER_DROP {V6_B}", pod("node2")),
                unix: 0,
                correct: false,
            }];
            fits(&format!("exercise status {id}"), |out| {
                view::status(out, &a, &ex)
            });
            let step = selftest::Step {
                name: format!(
                    "alternative: {}",
                    ex.alternatives.first().map_or("none", |f| f.name.as_str())
                ),
                ok: false,
                detail: report
                    .tasks
                    .iter()
                    .flat_map(|t| t.failures.clone())
                    .collect(),
                elapsed_ms: 12_345,
            };
            fits(&format!("exercise selftest {id}"), |out| {
                view::selftest_head(out, id, &template::describe(&vars), LAB)?;
                view::selftest_step(out, &step)
            });
        }
    }
    fits("exercise lint", |out| {
        view::lint(
            out,
            "/home/instructor/workshops/2026-12/exercises/my-own-exercise.toml",
            &[
                "guard 1 (the firewall is untouched): `node9` is not a member of scenario two-node (pod-a, pod-b, node1, node2, world)".into(),
            ],
        )
    });
}

/// Policies that exercise every line of the policy views.
const STARWARS_POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1-allow-the-empire-to-land-on-the-deathstar
spec:
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
  ingressDeny:
  - fromCIDR: [10.244.0.0/16]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: xwing-may-only-resolve-names
spec:
  podSelector:
    matchLabels: {class: xwing}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
      podSelector:
        matchLabels: {k8s-app: kube-dns}
    ports: [{port: 53, protocol: UDP}]
  - to:
    - ipBlock: {cidr: 172.18.0.0/16, except: [172.18.0.2/32]}
"#;

#[test]
fn policy_views_fit_80_columns() {
    use crate::{
        lab::policy::{self as lab_policy, Action, Applied},
        policy::{PolicyMode, model::Protocol, yaml},
    };
    let mut l = plan_lab(
        "starwars",
        LabOptions {
            policy_mode: Some(PolicyMode::Ebpf),
            ..Default::default()
        },
    );
    l.state.policies = yaml::parse(
        "/home/learner/workshop/policies/starwars-deathstar-landing.yaml",
        STARWARS_POLICIES,
    )
    .unwrap();
    let cases = [
        ("xwing", "deathstar-1", 80, Protocol::Tcp),
        ("tiefighter", "deathstar-2", 80, Protocol::Tcp),
        ("xwing", "coredns", 53, Protocol::Udp),
        ("xwing", "tiefighter", 8080, Protocol::Tcp),
        ("tiefighter", "deathstar-1", 8080, Protocol::Tcp),
        ("203.0.113.10", "deathstar-1", 80, Protocol::Tcp),
        ("xwing", "172.18.0.0/24", 443, Protocol::Tcp),
        ("xwing", "node1", 443, Protocol::Tcp),
        ("node1", "deathstar-1", 80, Protocol::Tcp),
    ];
    for (from, to, port, proto) in cases {
        let mut t = lab_policy::trace(&l, from, to, port, proto).unwrap();
        fits(&format!("policy trace {from} {to}"), |out| {
            commands::policy::write_trace(out, &t)
        });
        // As the netfilter datapath explains it, with long names.
        t.policy_mode = Some(PolicyMode::Netfilter);
        t.datapath = [crate::policy::model::Direction::Egress, crate::policy::model::Direction::Ingress]
            .map(|direction| crate::policy::datapath::Decision {
                direction,
                pod: format!("{LAB}/deathstar-{}", "9".repeat(40)),
                node: format!("{LAB}/node1"),
                place: format!("table ip labctl-policy chain ingress-deathstar-{}", "9".repeat(40)),
                entry: format!(
                    "rule \"default deny: deathstar-1 ingress (selected by default/{})\" (meta mark set 0x1ab50000 drop)",
                    "x".repeat(60)
                ),
                allows: false,
                packets: Some(u64::MAX),
                present: Some(true),
                map_entry: None,
            })
            .to_vec();
        fits(&format!("policy trace {from} {to} (netfilter)"), |out| {
            commands::policy::write_trace(out, &t)
        });
    }
    let ports = [
        (80, Protocol::Tcp),
        (80, Protocol::Udp),
        (53, Protocol::Tcp),
        (65535, Protocol::Sctp),
    ];
    let m = lab_policy::trace_all(&l, &ports).unwrap();
    assert_eq!(
        m.cells.len(),
        5 * 4 * 4,
        "every pod to every other, each port"
    );
    fits("policy trace --all", |out| {
        commands::policy::write_matrix(out, &m)
    });
    let applied: Vec<Applied> = l
        .state
        .policies
        .iter()
        .map(|p| Applied {
            policy: p.key(),
            action: Action::Configured,
            selects: (1..=9).map(|i| format!("{LAB}/deathstar-{i}")).collect(),
        })
        .collect();
    let enforced = |policy_mode, plan: Option<crate::kernel::datapath::Shown>, dry_run| {
        lab::policy::Enforced {
            policy_mode,
            enforced: plan.is_some(),
            plan,
            nodes: 2,
            dry_run,
        }
    };
    let shown = crate::kernel::datapath::Shown {
        unit: "nft rules and set elements",
        changes: 12_345,
        parts: vec![crate::kernel::datapath::ShownPart {
            target: format!("{LAB}/node1"),
            changes: 12_345,
            lines: vec![format!(
                "add rule ip labctl-policy ingress-deathstar-1 ip saddr @peers-0123abcd meta l4proto . th dport {{ tcp . 80, udp . 53-60 }} counter return comment \"default/{} ingress[0]\"",
                "x".repeat(60)
            )],
        }],
    };
    fits("policy apply", |out| {
        commands::policy::write_applied(out, &applied)?;
        for e in [
            enforced(Some(PolicyMode::Netfilter), None, false),
            enforced(None, None, false),
            enforced(Some(PolicyMode::Netfilter), Some(shown.clone()), false),
            enforced(Some(PolicyMode::Netfilter), Some(shown.clone()), true),
        ] {
            commands::policy::write_enforced(out, LAB, &e, true)?;
        }
        Ok(())
    });
    let listed: Vec<commands::policy::Listed> = l
        .state
        .policies
        .iter()
        .map(|p| commands::policy::Listed {
            lab: Some(LAB.into()),
            node: None,
            policy: p.key(),
            selects: (1..=9).map(|i| format!("{LAB}/deathstar-{i}")).collect(),
            spec: p.clone(),
        })
        .collect();
    fits("policy list", |out| {
        commands::policy::write_list(
            out,
            &[
                (format!("lab {LAB}"), Some(PolicyMode::Ebpf), listed),
                (format!("node {}", "n".repeat(63)), None, Vec::new()),
            ],
        )
    });
    let r = lab::policy::Relabelled {
        lab: LAB.into(),
        pod: format!("{LAB}/deathstar-1"),
        namespace: "kube-node-lease".into(),
        before: (1..=4)
            .map(|i| (format!("app.kubernetes.io/part-{i}"), "deathstar".into()))
            .collect(),
        after: (1..=5)
            .map(|i| (format!("app.kubernetes.io/part-{i}"), "tiefighter".into()))
            .collect(),
        identity_before: 16_777_215,
        identity_after: 16_777_216,
        change: crate::policy::identity::IdentityChange {
            allocated: vec![16_777_216],
            released: vec![16_777_215],
        },
        selected_before: l.state.policies.iter().map(|p| p.key()).collect(),
        selected_after: Vec::new(),
        enforced: enforced(Some(PolicyMode::Ebpf), None, false),
    };
    fits("lab pod label", |out| {
        commands::lab::write_relabelled(out, &r)
    });
}

#[test]
fn policy_map_views_fit_80_columns() {
    use crate::{
        commands::policy_maps,
        lab::policy_bpf::{EndpointRow, EndpointsView, IdentityRow, IpcacheRow, MapRow, MapView},
        policy::model::Direction,
    };
    let long_labels: Vec<String> = [
        "k8s:app.kubernetes.io/name=deathstar-landing-control",
        "k8s:class=deathstar",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
        "k8s:io.cilium.k8s.policy.cluster=default",
        "k8s:io.kubernetes.pod.namespace=kube-node-lease",
        "k8s:org=empire",
    ]
    .map(String::from)
    .to_vec();
    let ids = vec![
        IdentityRow {
            identity: 1,
            labels: vec!["reserved:host".into()],
            pods: Vec::new(),
        },
        IdentityRow {
            identity: 16_777_217,
            labels: vec!["cidr:203.0.113.128/25".into()],
            pods: Vec::new(),
        },
        IdentityRow {
            identity: 65_535,
            labels: long_labels.clone(),
            pods: (1..=3).map(|i| format!("{LAB}/deathstar-{i}")).collect(),
        },
    ];
    fits("policy identities", |out| {
        policy_maps::write_identities(out, &ids)
    });
    let eps = EndpointsView {
        lab: Some(LAB.into()),
        node: None,
        endpoints: (1..=3)
            .map(|i| EndpointRow {
                endpoint: 4000 + i,
                pod: format!("{LAB}/deathstar-landing-{i}"),
                node: format!("{LAB}/node{}", i % 2 + 1),
                ifindex: 1_000_000,
                address: Ipv4Addr::new(10, 244, 1, 200),
                identity: 16_777_217,
                enforcing: vec![Direction::Ingress, Direction::Egress],
                policy_entries: 65_536,
            })
            .collect(),
        ipcache: vec![
            IpcacheRow {
                prefix: "255.255.255.255/32".parse().unwrap(),
                identity: 16_777_217,
                nodes: vec![format!("{LAB}/node1")],
            },
            IpcacheRow {
                prefix: "0.0.0.0/0".parse().unwrap(),
                identity: 2,
                nodes: (1..=2).map(|i| format!("{LAB}/node{i}")).collect(),
            },
        ],
    };
    fits("policy endpoints", |out| {
        policy_maps::write_endpoints(out, &eps)
    });
    let row = |policy, identity, port_proto: &str, labels: Vec<String>| MapRow {
        policy,
        direction: Direction::Ingress,
        identity,
        labels,
        port_proto: port_proto.into(),
        bytes: 12_345_678_901,
        packets: 123_456_789,
        prefix: 24,
    };
    let map = MapView {
        default_deny: Vec::new(),
        pod: format!("{LAB}/deathstar-landing-1"),
        node: format!("{LAB}/node1"),
        endpoint: 4095,
        identity: 16_777_217,
        entries: vec![
            row("Allow", 0, "ANY", vec!["ANY".into()]),
            row("Deny", 16_777_217, "10000-10255/SCTP", long_labels.clone()),
            row("Allow", 65_535, "65535/TCP", long_labels),
        ],
    };
    fits("policy map", |out| policy_maps::write_map(out, &map));
    let empty = MapView {
        entries: Vec::new(),
        ..map
    };
    fits("policy map (empty)", |out| {
        policy_maps::write_map(out, &empty)
    });
}

#[test]
fn cni_log_fits_80_columns() {
    use crate::cni::calllog::Record;
    let conf = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": "kind-worker-network-with-a-long-name",
        "type": "labctl-cni",
        "mtu": 1450,
        "ipam": {"type": "labctl", "subnet": "10.244.123.0/24", "dataDir": "/var/lib/cni/labctl"},
        "labctl": {"masquerade": "netfilter"},
    });
    let id = "5f1c2d0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
    let record =
        |verb: &str, result: Option<serde_json::Value>, error: Option<serde_json::Value>| Record {
            time: "2026-12-06T10:22:01.123Z".into(),
            verb: verb.into(),
            container_id: id.into(),
            netns: format!("/var/run/netns/cni-{id}"),
            ifname: "eth0".into(),
            args: BTreeMap::from([
                ("K8S_POD_NAMESPACE".to_owned(), "kube-system".to_owned()),
                (
                    "K8S_POD_NAME".to_owned(),
                    "coredns-7db6d8ff4d-2x9qz".to_owned(),
                ),
                ("K8S_POD_INFRA_CONTAINER_ID".to_owned(), id.to_owned()),
            ]),
            config: conf.clone(),
            result,
            error,
            duration_ms: 12_345.6,
            pid: 4_194_304,
        };
    let add = serde_json::json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lc0123456789", "mac": "02:42:ac:11:00:02", "mtu": 1450},
                       {"name": "eth0", "mac": "02:42:ac:11:00:03", "mtu": 1450, "sandbox": format!("/var/run/netns/cni-{id}")}],
        "ips": [{"address": "10.244.123.254/32", "gateway": "10.244.123.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.123.1"}],
        "dns": {},
    });
    let err = serde_json::json!({
        "cniVersion": "1.1.0", "code": 102,
        "msg": "no pod address is left: every address of range 10.244.123.0/24 (10.244.123.1-10.244.123.254) is taken",
        "details": "every address of range 10.244.123.0/24 (10.244.123.1-10.244.123.254) is taken",
    });
    let records = vec![
        record("ADD", Some(add), None),
        record("ADD", None, Some(err)),
        record("DEL", None, None),
        record(
            "VERSION",
            Some(serde_json::json!({"cniVersion": "1.1.0"})),
            None,
        ),
    ];
    fits("cni log", |out| commands::cni::render(out, &records, false));
    fits("cni log -d", |out| {
        commands::cni::render(out, &records, true)
    });
}
