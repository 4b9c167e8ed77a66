//! The evaluator against hand-written matrices: every pod of the Star
//! Wars cluster to every other, on TCP and UDP 80 and 53, under a dozen
//! policy sets. `A` allowed, `d` POLICY_DENIED (default deny), `D`
//! POLICY_DENY (a deny rule), `.` the pod itself (not judged).

use super::*;
use crate::policy::{
    identity::Identities,
    model::{Kind, Protocol},
    yaml::parse,
};

const NAMES: [&str; 5] = ["ds1", "ds2", "tf", "xw", "dns"];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Cilium's demo on two nodes: deathstar ×2, tiefighter, xwing in
/// `default`, coredns in `kube-system`.
fn starwars() -> Cluster {
    let pod = |name: &str, ns: &str, l: &[(&str, &str)], node: &str, addr: [u8; 4]| Pod {
        name: name.into(),
        namespace: ns.into(),
        labels: labels(l),
        addr: Ipv4Addr::from(addr),
        node: node.into(),
        service_account: "default".into(),
    };
    let ds = &[("org", "empire"), ("class", "deathstar")];
    Cluster {
        namespaces: vec![Namespace::named("default"), Namespace::named("kube-system")],
        pods: vec![
            pod("ds1", "default", ds, "node1", [10, 244, 1, 2]),
            pod("ds2", "default", ds, "node2", [10, 244, 2, 2]),
            pod(
                "tf",
                "default",
                &[("org", "empire"), ("class", "tiefighter")],
                "node1",
                [10, 244, 1, 3],
            ),
            pod(
                "xw",
                "default",
                &[("org", "alliance"), ("class", "xwing")],
                "node2",
                [10, 244, 2, 3],
            ),
            pod(
                "dns",
                "kube-system",
                &[("k8s-app", "kube-dns")],
                "node2",
                [10, 244, 2, 4],
            ),
        ],
        nodes: vec![
            Node {
                name: "node1".into(),
                addr: Ipv4Addr::new(172, 18, 0, 2),
            },
            Node {
                name: "node2".into(),
                addr: Ipv4Addr::new(172, 18, 0, 3),
            },
        ],
    }
}

fn policies(yaml: &str) -> Vec<Policy> {
    if yaml.trim().is_empty() {
        Vec::new()
    } else {
        parse("t.yaml", yaml).unwrap()
    }
}

/// The matrix the evaluator gives: a row per source, `NAME` then four
/// blocks (tcp/80 udp/80 tcp/53 udp/53) of one letter per destination.
fn matrix(cluster: &Cluster, policies: &[Policy], flavor: Flavor) -> String {
    let (ids, _) = cluster.identities(&Identities::default());
    let eval = Evaluator::new(cluster, ids, policies, flavor);
    let combos = [
        (Protocol::Tcp, 80),
        (Protocol::Udp, 80),
        (Protocol::Tcp, 53),
        (Protocol::Udp, 53),
    ];
    let mut out = String::new();
    for (from, name) in NAMES.iter().enumerate() {
        out.push_str(name);
        for (protocol, port) in combos {
            out.push(' ');
            for to in 0..NAMES.len() {
                if from == to {
                    out.push('.');
                    continue;
                }
                let v = eval.evaluate(&Query {
                    from: Party::Pod(from),
                    to: Party::Pod(to),
                    port,
                    protocol,
                });
                out.push(match v.drop_reason {
                    None => 'A',
                    Some(DropReason::PolicyDenied) => 'd',
                    Some(DropReason::PolicyDeny) => 'D',
                });
            }
        }
        out.push('\n');
    }
    out
}

/// `want`, one row per line (leading spaces and comment lines dropped).
fn rows(want: &str) -> String {
    want.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| format!("{}\n", l.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// A fixture of tests/fixtures/policy: its policies (the YAML) and the
/// matrices it expects, by flavor (`# matrix netfilter`, then one comment
/// line per source pod).
fn fixture(text: &str) -> (Vec<Policy>, Vec<(Flavor, String)>) {
    let mut matrices: Vec<(Flavor, String)> = Vec::new();
    let mut current = 0;
    for line in text.lines() {
        let Some(c) = line.strip_prefix('#') else {
            continue;
        };
        let words: Vec<&str> = c.split_whitespace().collect();
        match words.as_slice() {
            ["matrix", flavors @ ..] if !flavors.is_empty() => {
                // One header may name both flavors: the same matrix for each.
                current = flavors.len();
                for f in flavors {
                    matrices.push((
                        match *f {
                            "netfilter" => Flavor::Netfilter,
                            "cilium" => Flavor::Cilium,
                            other => panic!("`# matrix {other}`: netfilter or cilium"),
                        },
                        String::new(),
                    ));
                }
            }
            [name, blocks @ ..] if NAMES.contains(name) && blocks.len() == 4 => {
                assert!(current > 0, "a row before `# matrix`");
                let n = matrices.len();
                for (_, rows) in &mut matrices[n - current..] {
                    rows.push_str(&format!("{name} {}\n", blocks.join(" ")));
                }
            }
            _ => {}
        }
    }
    let yaml = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    (if yaml { policies(text) } else { Vec::new() }, matrices)
}

fn check_fixture(text: &str) {
    let (policies, matrices) = fixture(text);
    assert!(!matrices.is_empty(), "no `# matrix` in:\n{text}");
    for (flavor, want) in matrices {
        assert_eq!(
            want.lines().count(),
            NAMES.len(),
            "{flavor:?}: a row per pod"
        );
        let got = matrix(&starwars(), &policies, flavor);
        assert_eq!(got, want, "{flavor:?}\n{text}");
    }
}

#[test]
fn no_policy_allows_everything() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/01-no-policy.yaml"
    ));
}

#[test]
fn a_namespace_default_deny_closes_its_pods_only() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/02-namespace-default-deny.yaml"
    ));
}

/// Cilium's getting-started rule1, as a CiliumNetworkPolicy.
const RULE1: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: rule1}
spec:
  description: L3-L4 policy to restrict deathstar access to empire ships only
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: \"80\", protocol: TCP}]
";

#[test]
fn cilium_rule1_lets_only_the_empire_land_on_tcp_80() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/03-cilium-rule1.yaml"
    ));
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_and() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/04-and-in-one-peer.yaml"
    ));
}

#[test]
fn separate_peers_are_or_and_ports_restrict_them_all() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/05-or-separate-peers.yaml"
    ));
}

#[test]
fn match_expressions_select_and_egress_rules_each_allow_their_ports() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/06-match-expressions-egress.yaml"
    ));
}

#[test]
fn an_ipblock_matches_pod_addresses_in_netfilter_but_not_in_cilium() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/07-ipblock-except.yaml"
    ));
}

#[test]
fn a_cilium_deny_rule_wins_over_an_allow_all() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/08-cilium-deny-wins.yaml"
    ));
}

#[test]
fn an_empty_cilium_rule_denies_and_egress_reaches_dns_in_another_namespace() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/09-cilium-empty-rule.yaml"
    ));
}

#[test]
fn a_deny_without_default_deny_leaves_the_rest_open() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/10-cilium-deny-without-default-deny.yaml"
    ));
}

#[test]
fn egress_default_deny_with_a_dns_exception_meets_an_ingress_policy_at_dns() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/11-egress-deny-with-dns.yaml"
    ));
}

#[test]
fn port_ranges_and_several_policies_add_up() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/12-port-ranges.yaml"
    ));
}

#[test]
fn an_ingress_rule_with_ports_only_admits_everyone_and_notin_selects_other_namespaces() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/13-ports-only-and-notin.yaml"
    ));
}

#[test]
fn an_empty_pod_selector_is_the_own_namespace_an_empty_namespace_selector_all() {
    check_fixture(include_str!(
        "../../tests/fixtures/policy/14-empty-selectors.yaml"
    ));
}

#[test]
fn cilium_selectors_see_only_identity_labels() {
    // A NetworkPolicy selecting by a per-pod label: netfilter engines see
    // it, Cilium's identities do not carry it.
    let mut cluster = starwars();
    cluster.pods[0]
        .labels
        .insert("pod-template-hash".into(), "6fb5694d4c".into());
    let p = policies(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: by-hash}
spec:
  podSelector:
    matchLabels: {pod-template-hash: 6fb5694d4c}
  policyTypes: [Ingress]
",
    );
    assert_eq!(
        matrix(&cluster, &p, Flavor::Netfilter),
        rows(
            "
        ds1    .AAAA  .AAAA  .AAAA  .AAAA
        ds2    d.AAA  d.AAA  d.AAA  d.AAA
        tf     dA.AA  dA.AA  dA.AA  dA.AA
        xw     dAA.A  dAA.A  dAA.A  dAA.A
        dns    dAAA.  dAAA.  dAAA.  dAAA.
        "
        )
    );
    assert_eq!(
        matrix(&cluster, &p, Flavor::Cilium),
        matrix(&cluster, &[], Flavor::Cilium)
    );
}

fn eval_with<'a>(cluster: &'a Cluster, p: &'a [Policy], flavor: Flavor) -> Evaluator<'a> {
    Evaluator::new(
        cluster,
        cluster.identities(&Identities::default()).0,
        p,
        flavor,
    )
}

#[test]
fn a_verdict_names_the_direction_the_policy_and_the_rule() {
    let cluster = starwars();
    let p = policies(RULE1);
    let e = eval_with(&cluster, &p, Flavor::Cilium);
    let q = |from, to, port| Query {
        from: Party::Pod(from),
        to: Party::Pod(to),
        port,
        protocol: Protocol::Tcp,
    };
    let key = PolicyKey {
        kind: Kind::CiliumNetworkPolicy,
        namespace: "default".into(),
        name: "rule1".into(),
    };
    let v = e.evaluate(&q(2, 0, 80));
    assert!(v.allowed);
    assert_eq!(v.drop_reason, None);
    assert_eq!(v.egress.outcome, Outcome::NotSelected);
    assert_eq!(
        v.ingress,
        Hop {
            direction: Direction::Ingress,
            pod: Some("ds1".into()),
            selected_by: vec![key.clone()],
            enforced: true,
            outcome: Outcome::Allowed {
                rule: RuleRef {
                    policy: key.clone(),
                    section: Section::Ingress,
                    index: 0,
                    file: "t.yaml".into(),
                    line: 9,
                },
            },
            notes: vec![],
        }
    );
    let v = e.evaluate(&q(3, 1, 80));
    assert!(!v.allowed);
    assert_eq!(v.decided_by, Some(Direction::Ingress));
    assert_eq!(v.drop_reason, Some(DropReason::PolicyDenied));
    assert_eq!(v.deciding().outcome, Outcome::DefaultDenied);
    assert_eq!(
        (
            DropReason::PolicyDenied.code(),
            DropReason::PolicyDeny.code()
        ),
        (133, 181)
    );
    // The identities: one per label set, the replicas share one.
    assert_eq!(
        e.identity(Party::Pod(0), None),
        e.identity(Party::Pod(1), None)
    );
    assert_eq!(
        [0, 2, 3, 4].map(|i| e.identity(Party::Pod(i), None)),
        [256, 257, 258, 259]
    );
}

#[test]
fn addresses_outside_the_pods_are_world_host_or_remote_node() {
    let cluster = starwars();
    let p = policies(
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: edge}
spec:
  endpointSelector:
    matchLabels: {class: deathstar}
  ingress:
  - fromCIDRSet:
    - cidr: 203.0.113.0/24
      except: [203.0.113.128/25]
  egress:
  - toEntities: [world]
  - toEntities: [remote-node]
    toPorts:
    - ports: [{port: \"10250\", protocol: TCP}]
",
    );
    let e = eval_with(&cluster, &p, Flavor::Cilium);
    let net = |s: &str| cluster.party(s.parse().unwrap());
    let judge = |from: Party, to: Party, port| {
        e.evaluate(&Query {
            from,
            to,
            port,
            protocol: Protocol::Tcp,
        })
    };
    // From the world: a /32 inside the set, one in its hole, a /26 inside.
    assert!(judge(net("203.0.113.10/32"), Party::Pod(0), 80).allowed);
    assert!(!judge(net("203.0.113.200/32"), Party::Pod(0), 80).allowed);
    assert!(judge(net("203.0.113.0/26"), Party::Pod(0), 80).allowed);
    // A block only half inside the set is not allowed as a whole.
    assert!(!judge(net("203.0.112.0/23"), Party::Pod(0), 80).allowed);
    // The pod's own node may always reach it; another node may not.
    let v = judge(net("172.18.0.2/32"), Party::Pod(0), 80);
    assert_eq!(v.ingress.outcome, Outcome::AllowedHost);
    assert!(!judge(net("172.18.0.3/32"), Party::Pod(0), 80).allowed);
    // To the world: any address outside; to nodes only as remote-node.
    assert!(judge(Party::Pod(0), net("8.8.8.8/32"), 443).allowed);
    assert!(
        !judge(Party::Pod(0), net("172.18.0.2/32"), 10250).allowed,
        "host is not remote-node"
    );
    assert!(judge(Party::Pod(0), net("172.18.0.3/32"), 10250).allowed);
    assert!(!judge(Party::Pod(0), net("172.18.0.3/32"), 22).allowed);
    // A pod's address is that pod; its identity is the pod's.
    assert_eq!(net("10.244.2.3/32"), Party::Pod(3));
    assert_eq!(e.identity(net("8.8.8.8/32"), Some(0)), identity::WORLD);
    assert_eq!(e.identity(net("172.18.0.2/32"), Some(0)), identity::HOST);
    assert_eq!(
        e.identity(net("172.18.0.2/32"), Some(1)),
        identity::REMOTE_NODE
    );
}
