#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

use super::*;

fn rule(ports: &[(&str, u16, u16)], action: Action) -> Rule {
    Rule {
        peers: Some((Direction::Ingress, "peers-0a1b2c3d".into())),
        ports: ports
            .iter()
            .map(|(p, a, b)| ((*p).into(), *a, *b))
            .collect(),
        action,
        log: None,
        comment: "default/web ingress[0]".into(),
    }
}

#[test]
fn rules_read_as_nft_writes_them() {
    assert_eq!(
        rule(&[("tcp", 80, 80)], Action::Return).text(),
        "ip saddr @peers-0a1b2c3d meta l4proto tcp th dport 80 counter return comment \"default/web ingress[0]\""
    );
    assert_eq!(
        rule(&[("tcp", 80, 80), ("udp", 53, 60)], Action::Return).text(),
        "ip saddr @peers-0a1b2c3d meta l4proto . th dport { tcp . 80, udp . 53-60 } counter return comment \"default/web ingress[0]\""
    );
    assert_eq!(
        rule(
            &[("sctp", 0, 65535)],
            Action::Drop(lab_common::verdict::mark(false, false))
        )
        .text(),
        "ip saddr @peers-0a1b2c3d meta l4proto sctp counter meta mark set 0x1ab50000 drop comment \"default/web ingress[0]\""
    );
}

#[test]
fn ip_blocks_lose_their_exceptions_and_elements_are_prefixes_when_they_can_be() {
    let net: IpNet = "10.0.0.0/8".parse().unwrap();
    let except: Vec<IpNet> = vec!["10.244.1.0/24".parse().unwrap()];
    let r = block_ranges(&net, &except);
    let shown: Vec<String> = r.iter().map(|(a, b)| element(*a, *b)).collect();
    assert_eq!(
        shown,
        ["10.0.0.0-10.244.0.255", "10.244.2.0-10.255.255.255"]
    );
    assert_eq!(element(0x0a00_0000, 0x0aff_ffff), "10.0.0.0/8");
    assert_eq!(element(0x0a00_0001, 0x0a00_0001), "10.0.0.1");
    assert_eq!(element(0, u32::MAX), "0.0.0.0/0");
    assert_eq!(
        parse_elem(&serde_json::json!({"prefix": {"addr": "0.0.0.0", "len": 0}})).unwrap(),
        (0, u32::MAX)
    );
    // A pod inside a block is merged into it; neighbours stay apart.
    assert_eq!(
        merge(vec![(5, 5), (1, 10), (11, 11), (12, 12)]),
        [(1, 10), (11, 11), (12, 12)]
    );
}

#[test]
fn chain_names_are_single_nft_words() {
    assert_eq!(
        chain_name(Direction::Ingress, "lab/deathstar-1"),
        "ingress-deathstar-1"
    );
    assert_eq!(chain_name(Direction::Egress, "lab/fwd"), "egress-fwd");
    let odd = chain_name(Direction::Egress, "lab/Odd_Name");
    assert!(
        odd.starts_with("egress-") && odd.len() == "egress-".len() + 8,
        "{odd}"
    );
}

#[test]
fn namesakes_of_a_node_get_chains_of_their_own() {
    let port = |name: &str, last: u8| crate::policy::datapath::PodPort {
        name: name.to_owned(),
        addr: Ipv4Addr::new(10, 244, 1, last),
        veth: format!("veth{last}"),
    };
    let node = Node {
        name: "kind-worker".to_owned(),
        ns: crate::kernel::netns::NetNs::at(
            "kind-worker",
            std::path::Path::new("/proc/self/ns/net"),
        ),
        pods: vec![
            port("default/web", 2),
            port("shop/web", 3),
            port("default/db", 4),
        ],
    };
    let web = pod_chain(Direction::Ingress, "default/web", &node);
    let shop = pod_chain(Direction::Ingress, "shop/web", &node);
    assert_ne!(web, shop);
    assert!(
        web.starts_with("ingress-") && web.len() == "ingress-".len() + 8,
        "{web}"
    );
    assert_eq!(
        pod_chain(Direction::Egress, "default/db", &node),
        "egress-db"
    );
}

fn table() -> Table {
    let mut t = Table::default();
    t.sets.insert(
        "peers-0a1b2c3d".into(),
        PeerSet {
            comment: "default/web ingress[0] peers".into(),
            ranges: vec![(0x0af4_0102, 0x0af4_0102), (0x0af4_0203, 0x0af4_0203)],
        },
    );
    t.chains.insert(
        "ingress-web".into(),
        vec![
            rule(&[("tcp", 80, 80)], Action::Return),
            Rule {
                peers: None,
                ports: Vec::new(),
                action: Action::Drop(lab_common::verdict::mark(false, false)),
                log: Some("lp DI0 default deny: web ingress (selected by default/web)".into()),
                comment: "default deny: web ingress (selected by default/web)".into(),
            },
        ],
    );
    t.ingress
        .insert("10.244.1.5".parse().unwrap(), "ingress-web".into());
    t
}

#[test]
fn a_first_sync_writes_everything_and_a_second_nothing() {
    let t = table();
    let (lines, changes) = transaction(None, &t, false, "lab");
    assert_eq!(changes, 2 + 2 + 1);
    assert_eq!(changes, t.size());
    assert!(
        lines[0].starts_with("add table ip labctl-policy"),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"add element ip labctl-policy peers-0a1b2c3d { 10.244.1.2, 10.244.2.3 }".to_owned()
        ),
        "{lines:?}"
    );
    assert!(lines.contains(&"add chain ip labctl-policy forward { type filter hook forward priority filter; policy accept; }".to_owned()));
    let (again, none) = transaction(Some(&t), &t, false, "lab");
    assert_eq!((again.len(), none), (0, 0), "{again:?}");
}

#[test]
fn a_new_pod_writes_one_element_and_a_gone_chain_is_removed_after_its_jump() {
    let before = table();
    let mut after = before.clone();
    after
        .sets
        .get_mut("peers-0a1b2c3d")
        .unwrap()
        .ranges
        .push((0x0af4_0104, 0x0af4_0104));
    let (lines, changes) = transaction(Some(&before), &after, false, "lab");
    assert_eq!(
        lines,
        ["add element ip labctl-policy peers-0a1b2c3d { 10.244.1.4 }"]
    );
    assert_eq!(changes, 1);
    let (lines, changes) = transaction(Some(&before), &Table::default(), false, "lab");
    assert_eq!(changes, 2 + 2 + 1);
    let jump = lines
        .iter()
        .position(|l| l.starts_with("delete element ip labctl-policy ingress-pods"))
        .unwrap();
    let chain = lines
        .iter()
        .position(|l| l == "delete chain ip labctl-policy ingress-web")
        .unwrap();
    let set = lines
        .iter()
        .position(|l| l == "delete set ip labctl-policy peers-0a1b2c3d")
        .unwrap();
    assert!(jump < chain && chain < set, "{lines:?}");
}

/// What nft 1.0.6 printed for a table this module wrote (`nft -j list
/// table ip labctl-policy`), abridged to one pod.
const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "ip", "name": "labctl-policy", "handle": 3}},
 {"set": {"family": "ip", "name": "peers-0a1b2c3d", "table": "labctl-policy", "type": "ipv4_addr", "handle": 5, "comment": "default/web ingress[0] peers", "flags": ["interval"], "elem": ["10.244.1.2", "10.244.2.3"]}},
 {"map": {"family": "ip", "name": "ingress-pods", "table": "labctl-policy", "type": "ipv4_addr", "handle": 6, "map": "verdict", "elem": [["10.244.1.5", {"jump": {"target": "ingress-web"}}]]}},
 {"map": {"family": "ip", "name": "egress-pods", "table": "labctl-policy", "type": "ipv4_addr", "handle": 7, "map": "verdict"}},
 {"chain": {"family": "ip", "table": "labctl-policy", "name": "ingress-web", "handle": 1}},
 {"chain": {"family": "ip", "table": "labctl-policy", "name": "forward", "handle": 3, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
 {"chain": {"family": "ip", "table": "labctl-policy", "name": "input", "handle": 4, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "ingress-web", "handle": 8, "comment": "default/web ingress[0]", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@peers-0a1b2c3d"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"counter": {"packets": 3, "bytes": 180}}, {"return": null}]}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "ingress-web", "handle": 11, "comment": "default deny: web ingress (selected by default/web)", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"log": {"prefix": "lp DI0 default deny: web ingress (selected by default/web)", "group": 6837}}, {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 448069632}}, {"drop": null}]}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "forward", "handle": 13, "expr": []}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "forward", "handle": 14, "expr": []}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "forward", "handle": 15, "expr": []}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "input", "handle": 16, "expr": []}},
 {"rule": {"family": "ip", "table": "labctl-policy", "chain": "input", "handle": 17, "expr": []}}
]}"#;

#[test]
fn what_nft_lists_reads_back_as_what_was_written() {
    let listing: Value = serde_json::from_str(LISTING).unwrap();
    assert_eq!(held(&listing).unwrap(), table());
    // A table missing a base rule is not ours to patch: rebuilt.
    let cut = LISTING.replace(
        r#" {"rule": {"family": "ip", "table": "labctl-policy", "chain": "input", "handle": 17, "expr": []}}"#,
        r#" {"metainfo": {}}"#,
    );
    assert!(held(&serde_json::from_str(&cut).unwrap()).is_err());
    let concat: Value = serde_json::json!({"expr": [
        {"match": {"op": "==", "left": {"concat": [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]},
          "right": {"set": [{"concat": ["tcp", 80]}, {"concat": ["udp", {"range": [53, 60]}]}]}}},
        {"counter": null}, {"return": null}]});
    assert_eq!(
        parse_rule(&concat).unwrap().ports,
        [("tcp".to_owned(), 80, 80), ("udp".to_owned(), 53, 60)]
    );
}

#[test]
fn rule_counters_are_summed_by_policy_direction_and_verdict() {
    let counter = |packets: u64, bytes: u64| serde_json::json!({"counter": {"packets": packets, "bytes": bytes}});
    let rule = |chain: &str, comment: &str, exprs: Vec<Value>| {
        serde_json::json!({"rule": {"family": "ip", "table": TABLE, "chain": chain,
            "handle": 1, "comment": comment, "expr": exprs}})
    };
    let listing = serde_json::json!({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        // A base chain's rule: no counter, no policy.
        rule("forward", "", vec![serde_json::json!({"accept": null})]),
        rule("ingress-deathstar-1", "default/web ingress[0]",
            vec![counter(3, 120), serde_json::json!({"return": null})]),
        rule("ingress-deathstar-2", "default/web ingress[0]",
            vec![counter(2, 80), serde_json::json!({"return": null})]),
        rule("ingress-deathstar-1", "default/web ingressDeny[0]",
            vec![counter(1, 40), serde_json::json!({"drop": null})]),
        rule("ingress-deathstar-1",
            "default deny: deathstar-1 ingress (selected by default/web, default/other)",
            vec![counter(5, 200), serde_json::json!({"drop": null})]),
        rule("egress-xwing", "default deny: xwing egress (selected by default/out)",
            vec![counter(0, 0), serde_json::json!({"drop": null})]),
    ]});
    let mut counts = VerdictCounts::new();
    count_rules(&listing, "lab/node1", &mut counts);
    let rows: Vec<(String, Direction, CountedVerdict, u64, u64)> = count_rows(counts)
        .into_iter()
        .map(|c| (c.policy, c.direction, c.verdict, c.packets, c.bytes))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "default/out".into(),
                Direction::Egress,
                CountedVerdict::DefaultDenied,
                0,
                0
            ),
            (
                "default/web".into(),
                Direction::Ingress,
                CountedVerdict::Allowed,
                5,
                200
            ),
            (
                "default/web".into(),
                Direction::Ingress,
                CountedVerdict::Denied,
                1,
                40
            ),
            (
                "default/web,default/other".into(),
                Direction::Ingress,
                CountedVerdict::DefaultDenied,
                5,
                200
            ),
        ]
    );
}

#[test]
fn log_prefixes_name_verdict_direction_match_and_rule_and_read_back() {
    use lab_common::policy::{MATCH_L3_L4, MATCH_NONE};
    let v = LogVerdict {
        allowed: true,
        deny_rule: false,
        direction: Direction::Ingress,
        match_type: MATCH_L3_L4,
        rule: "default/web ingress[0]".into(),
    };
    assert_eq!(log_prefix(&v), "lp AI2 default/web ingress[0]");
    assert_eq!(parse_log_prefix(&log_prefix(&v)), Some(v));
    let d = LogVerdict {
        allowed: false,
        deny_rule: false,
        direction: Direction::Egress,
        match_type: MATCH_NONE,
        rule: "x".repeat(300),
    };
    let p = log_prefix(&d);
    assert_eq!(p.len(), 127, "cut to what nft keeps");
    assert!(p.starts_with("lp DE0 xxx"));
    assert!(parse_log_prefix(&p).is_some_and(|r| !r.allowed && !r.deny_rule));
    assert_eq!(parse_log_prefix("other prefix"), None);
    assert_eq!(parse_log_prefix("lp QI2 r"), None);
    // The shapes of rules, in Cilium's words.
    let tcp80 = [("tcp".to_owned(), 80, 80)];
    let tcp_all = [("tcp".to_owned(), 0, 65535)];
    assert_eq!(match_type(true, &tcp80), MATCH_L3_L4);
    assert_eq!(match_type(true, &[]), lab_common::policy::MATCH_L3_ONLY);
    assert_eq!(match_type(false, &tcp80), lab_common::policy::MATCH_L4_ONLY);
    assert_eq!(match_type(false, &[]), lab_common::policy::MATCH_ALL);
    assert_eq!(
        match_type(true, &tcp_all),
        lab_common::policy::MATCH_L3_PROTO
    );
    assert_eq!(
        match_type(false, &tcp_all),
        lab_common::policy::MATCH_PROTO_ONLY
    );
    // A logged rule in nft's syntax.
    let mut r = rule(&[("tcp", 80, 80)], Action::Return);
    r.log = Some("lp AI2 default/web ingress[0]".into());
    assert_eq!(
        r.text(),
        "ip saddr @peers-0a1b2c3d meta l4proto tcp th dport 80 counter log prefix \"lp AI2 default/web ingress[0]\" group 6837 return comment \"default/web ingress[0]\""
    );
}
