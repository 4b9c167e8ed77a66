//! The YAML reader: every supported field read into the model, every
//! refused one named with its line.

use ipnet::IpNet;

use super::*;
use crate::policy::model::{Labels, Section};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn one(text: &str) -> Policy {
    let mut p = parse("t.yaml", text).unwrap();
    assert_eq!(p.len(), 1);
    p.remove(0)
}

fn tcp(port: u16) -> PortRule {
    PortRule {
        protocol: Protocol::Tcp,
        port: Some(port),
        end_port: None,
    }
}

#[test]
fn every_network_policy_field_is_read() {
    let p = one(r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deathstar-landing
  namespace: default
  labels: {team: empire}
  annotations: {note: "from kubectl get -o yaml"}
  uid: 0b7f
  resourceVersion: "42"
  generation: 1
  creationTimestamp: "2024-01-01T00:00:00Z"
spec:
  podSelector:
    matchLabels:
      org: empire
    matchExpressions:
    - {key: class, operator: In, values: [deathstar]}
    - {key: debug, operator: DoesNotExist}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {org: empire}
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: kube-system}
    - namespaceSelector:
        matchExpressions:
        - {key: env, operator: NotIn, values: [prod, staging]}
      podSelector:
        matchExpressions:
        - {key: k8s-app, operator: Exists}
    - ipBlock:
        cidr: 172.18.0.0/16
        except: [172.18.0.2/32, 172.18.1.0/24]
    ports:
    - port: 80
    - {port: 8000, endPort: 8080, protocol: TCP}
    - {protocol: UDP}
    - {port: 2905, protocol: SCTP}
  - {}
  egress:
  - to:
    - ipBlock: {cidr: 0.0.0.0/0}
    ports:
    - {port: 53, protocol: UDP}
  - to: []
    ports: [{port: 443}]
"#);
    assert_eq!(p.kind, Kind::NetworkPolicy);
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str()),
        ("default", "deathstar-landing")
    );
    assert_eq!(
        p.subject,
        Selector {
            match_labels: labels(&[("org", "empire")]),
            match_expressions: vec![
                Requirement {
                    key: "class".into(),
                    operator: Operator::In,
                    values: vec!["deathstar".into()],
                },
                Requirement {
                    key: "debug".into(),
                    operator: Operator::DoesNotExist,
                    values: vec![],
                },
            ],
        }
    );
    let both = Directions {
        ingress: true,
        egress: true,
    };
    assert_eq!((p.applies, p.default_deny), (both, both));
    assert_eq!(
        p.ingress[0],
        Rule {
            peers: Some(vec![
                Peer::Pods {
                    namespaces: Namespaces::Own("default".into()),
                    pods: sel(&[("org", "empire")]),
                },
                Peer::Pods {
                    namespaces: Namespaces::Matching(sel(&[(
                        "kubernetes.io/metadata.name",
                        "kube-system"
                    )])),
                    pods: Selector::default(),
                },
                Peer::Pods {
                    namespaces: Namespaces::Matching(Selector {
                        match_labels: Labels::new(),
                        match_expressions: vec![Requirement {
                            key: "env".into(),
                            operator: Operator::NotIn,
                            values: vec!["prod".into(), "staging".into()],
                        }],
                    }),
                    pods: Selector {
                        match_labels: Labels::new(),
                        match_expressions: vec![Requirement {
                            key: "k8s-app".into(),
                            operator: Operator::Exists,
                            values: vec![],
                        }],
                    },
                },
                Peer::Cidr {
                    cidr: net("172.18.0.0/16"),
                    except: vec![net("172.18.0.2/32"), net("172.18.1.0/24")],
                },
            ]),
            ports: vec![
                tcp(80),
                PortRule {
                    protocol: Protocol::Tcp,
                    port: Some(8000),
                    end_port: Some(8080),
                },
                PortRule {
                    protocol: Protocol::Udp,
                    port: None,
                    end_port: None,
                },
                PortRule {
                    protocol: Protocol::Sctp,
                    port: Some(2905),
                    end_port: None,
                },
            ],
            line: 21,
        }
    );
    // `{}`: every source, every port.
    assert_eq!(
        p.ingress[1],
        Rule {
            peers: None,
            ports: vec![],
            line: 40,
        }
    );
    assert_eq!(
        p.egress[0].peers,
        Some(vec![Peer::Cidr {
            cidr: net("0.0.0.0/0"),
            except: vec![]
        }])
    );
    assert_eq!(
        p.egress[0].ports,
        [PortRule {
            protocol: Protocol::Udp,
            port: Some(53),
            end_port: None,
        }]
    );
    // `to: []` is every destination.
    assert_eq!(p.egress[1].peers, None);
    assert_eq!(p.egress[1].ports, [tcp(443)]);
    assert_eq!(
        p.origin,
        Origin {
            file: "t.yaml".into(),
            line: 1
        }
    );
}

#[test]
fn network_policy_defaults_are_the_api_server_s() {
    // No namespace: default. No policyTypes: Ingress, and Egress only
    // with egress rules. No ingress at all: deny every ingress.
    let p = one(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec:\n  podSelector: {}\n",
    );
    assert_eq!(p.namespace, "default");
    assert!(p.subject.is_empty());
    assert_eq!(
        p.applies,
        Directions {
            ingress: true,
            egress: false
        }
    );
    assert!(p.ingress.is_empty());
    let p = one(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: kube-system}\nspec:\n  podSelector: {}\n  egress:\n  - {}\n",
    );
    assert_eq!(p.namespace, "kube-system");
    assert_eq!(
        p.applies,
        Directions {
            ingress: true,
            egress: true
        }
    );
    // policyTypes: [Egress] only.
    let p = one(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    assert_eq!(
        p.default_deny,
        Directions {
            ingress: false,
            egress: true
        }
    );
}

#[test]
fn every_cilium_policy_field_is_read() {
    let p = one(r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
  namespace: default
spec:
  description: "L3-L4 policy to restrict deathstar access to empire ships only"
  endpointSelector:
    matchLabels:
      org: empire
      k8s:class: deathstar
  enableDefaultDeny:
    ingress: true
    egress: false
  ingress:
  - fromEndpoints:
    - matchLabels:
        any:org: empire
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s-app: kube-dns
    - {}
    fromCIDR: [203.0.113.0/24, 198.51.100.7]
    fromCIDRSet:
    - cidr: 10.0.0.0/8
      except: [10.96.0.0/12]
    fromEntities: [world, host, remote-node, cluster, all]
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      - port: 8000
        endPort: 8080
      - port: "0"
        protocol: UDP
  - toPorts:
    - ports: [{port: "443"}]
  - {}
  egress:
  - toEndpoints:
    - matchExpressions:
      - {key: org, operator: NotIn, values: [alliance]}
    toCIDR: [8.8.8.8/32]
    toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]
    toEntities: [kube-apiserver, health, init, unmanaged, ingress]
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {class: xwing}
  egressDeny:
  - toPorts:
    - ports: [{port: "25", protocol: TCP}]
"#);
    assert_eq!(p.kind, Kind::CiliumNetworkPolicy);
    assert_eq!(
        p.description.as_deref(),
        Some("L3-L4 policy to restrict deathstar access to empire ships only")
    );
    // Keys carry a source; the policy's namespace is part of the subject.
    assert_eq!(
        p.subject,
        sel(&[
            ("any:org", "empire"),
            ("k8s:class", "deathstar"),
            ("k8s:io.kubernetes.pod.namespace", "default"),
        ])
    );
    assert_eq!(
        p.applies,
        Directions {
            ingress: true,
            egress: true
        }
    );
    // enableDefaultDeny: egress rules that do not turn default deny on.
    assert_eq!(
        p.default_deny,
        Directions {
            ingress: true,
            egress: false
        }
    );
    let peers = p.ingress[0].peers.as_ref().unwrap();
    assert_eq!(
        peers[..3],
        [
            Peer::Endpoints {
                selector: sel(&[
                    ("any:org", "empire"),
                    ("k8s:io.kubernetes.pod.namespace", "default")
                ]),
            },
            // A selector naming a namespace keeps it.
            Peer::Endpoints {
                selector: sel(&[
                    ("any:k8s-app", "kube-dns"),
                    ("k8s:io.kubernetes.pod.namespace", "kube-system"),
                ]),
            },
            // `{}`: every pod of the policy's namespace.
            Peer::Endpoints {
                selector: sel(&[("k8s:io.kubernetes.pod.namespace", "default")]),
            },
        ]
    );
    assert_eq!(
        peers[3..6],
        [
            Peer::Cidr {
                cidr: net("203.0.113.0/24"),
                except: vec![]
            },
            Peer::Cidr {
                cidr: net("198.51.100.7/32"),
                except: vec![]
            },
            Peer::Cidr {
                cidr: net("10.0.0.0/8"),
                except: vec![net("10.96.0.0/12")]
            },
        ]
    );
    assert_eq!(
        peers[6..]
            .iter()
            .map(|p| match p {
                Peer::Entity { entity } => entity.as_str(),
                _ => "?",
            })
            .collect::<Vec<_>>(),
        ["world", "host", "remote-node", "cluster", "all"]
    );
    assert_eq!(
        p.ingress[0].ports,
        [
            tcp(80),
            PortRule {
                protocol: Protocol::Any,
                port: Some(8000),
                end_port: Some(8080)
            },
            // Port 0: every port.
            PortRule {
                protocol: Protocol::Udp,
                port: None,
                end_port: None
            },
        ]
    );
    // Only ports: every peer. Nothing: no peer (default deny only).
    assert_eq!(p.ingress[1].peers, None);
    assert_eq!(
        p.ingress[1].ports,
        [PortRule {
            protocol: Protocol::Any,
            port: Some(443),
            end_port: None
        }]
    );
    assert_eq!(
        (p.ingress[2].peers.clone(), p.ingress[2].line),
        (Some(vec![]), 38)
    );
    let egress = p.egress[0].peers.as_ref().unwrap();
    assert_eq!(egress.len(), 8);
    assert!(
        matches!(&egress[0], Peer::Endpoints { selector } if selector.match_expressions[0].key == "any:org")
    );
    assert_eq!(
        p.rules(Section::IngressDeny)[0].peers,
        Some(vec![Peer::Endpoints {
            selector: sel(&[
                ("any:class", "xwing"),
                ("k8s:io.kubernetes.pod.namespace", "default")
            ]),
        }])
    );
    assert_eq!(p.egress_deny[0].peers, None);
    assert_eq!(p.egress_deny[0].ports, [tcp(25)]);
}

#[test]
fn cilium_directions_follow_their_rules() {
    let p = one(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d}\nspec:\n  endpointSelector: {}\n  ingressDeny:\n  - fromEntities: [world]\n",
    );
    // A deny rule alone governs its direction, default deny included.
    assert_eq!(
        p.applies,
        Directions {
            ingress: true,
            egress: false
        }
    );
    assert_eq!(
        p.default_deny,
        Directions {
            ingress: true,
            egress: false
        }
    );
    let p = one(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d}\nspec:\n  endpointSelector: {}\n  ingress: []\n  egress:\n  - toEntities: [world]\n",
    );
    // `ingress: []`: no rules, not governed.
    assert_eq!(
        p.applies,
        Directions {
            ingress: false,
            egress: true
        }
    );
}

#[test]
fn several_documents_are_read_in_order_with_their_lines() {
    let text = "# policies for the deathstar\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n---\n---\n# nothing here\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n...\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: kube-system}\nspec: {podSelector: {}}\n";
    let p = parse("multi.yaml", text).unwrap();
    let got: Vec<(Kind, &str, &str, u32)> = p
        .iter()
        .map(|p| (p.kind, p.namespace.as_str(), p.name.as_str(), p.origin.line))
        .collect();
    assert_eq!(
        got,
        [
            (Kind::NetworkPolicy, "default", "a", 3),
            (Kind::CiliumNetworkPolicy, "default", "a", 11),
            (Kind::NetworkPolicy, "kube-system", "b", 19),
        ]
    );
    assert_eq!(p[1].ingress[0].line, 16);
    assert_eq!(
        parse("e.yaml", "# only a comment\n---\n"),
        Err(ParseError::Empty {
            file: "e.yaml".into()
        })
    );
    // The same policy twice: refused at the second.
    let twice = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n";
    let e = parse("d.yaml", twice).unwrap_err();
    assert_eq!(e.line(), Some(6));
    assert!(e.to_string().contains("defined twice"), "{e}");
}

const NP: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n";
const CNP: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {}\n";

/// The error for `head` + `tail`: its line and message.
fn refused(head: &str, tail: &str) -> (usize, String) {
    let e = parse("bad.yaml", &format!("{head}{tail}")).unwrap_err();
    (e.line().unwrap_or(0), e.to_string())
}

#[test]
fn every_unsupported_field_is_named_with_its_line() {
    // (document head, the rest from line 6 on, line, words the message has)
    let cases: &[(&str, &str, usize, &[&str])] = &[
        (
            CNP,
            "  ingress:\n  - toPorts:\n    - ports: [{port: \"80\"}]\n      rules:\n        http: [{method: GET}]\n",
            9,
            &["spec.ingress[0].toPorts[0].rules", "not supported", "L7"],
        ),
        (
            CNP,
            "  egress:\n  - toFQDNs: [{matchName: api.github.com}]\n",
            7,
            &["spec.egress[0].toFQDNs", "DNS"],
        ),
        (
            CNP,
            "  egress:\n  - toServices: [{k8sService: {serviceName: x}}]\n",
            7,
            &["toServices"],
        ),
        (
            CNP,
            "  egress:\n  - toGroups: [{aws: {}}]\n",
            7,
            &["toGroups"],
        ),
        (CNP, "  egress:\n  - toRequires: [{}]\n", 7, &["toRequires"]),
        (CNP, "  egress:\n  - toNodes: [{}]\n", 7, &["toNodes"]),
        (
            CNP,
            "  ingress:\n  - fromRequires: [{}]\n",
            7,
            &["fromRequires"],
        ),
        (CNP, "  ingress:\n  - fromNodes: [{}]\n", 7, &["fromNodes"]),
        (
            CNP,
            "  ingress:\n  - fromGroups: [{}]\n",
            7,
            &["fromGroups"],
        ),
        (
            CNP,
            "  ingress:\n  - icmps: [{fields: [{type: 8}]}]\n",
            7,
            &["icmps", "ICMP"],
        ),
        (
            CNP,
            "  ingress:\n  - authentication: {mode: required}\n",
            7,
            &["authentication"],
        ),
        (
            CNP,
            "  egress:\n  - toPorts:\n    - terminatingTLS: {secret: {name: x}}\n",
            8,
            &["terminatingTLS", "TLS"],
        ),
        (
            CNP,
            "  egress:\n  - toPorts:\n    - originatingTLS: {}\n",
            8,
            &["originatingTLS"],
        ),
        (
            CNP,
            "  egress:\n  - toPorts:\n    - serverNames: [a.example]\n",
            8,
            &["serverNames"],
        ),
        (
            CNP,
            "  egress:\n  - toPorts:\n    - listener: {name: x}\n",
            8,
            &["listener"],
        ),
        (
            CNP,
            "  ingress:\n  - fromCIDRSet:\n    - cidrGroupRef: office\n",
            8,
            &["cidrGroupRef"],
        ),
        (
            CNP,
            "  ingress:\n  - toPorts:\n    - ports: [{port: http}]\n",
            8,
            &["`http` is a named port"],
        ),
        (
            CNP,
            "  nodeSelector: {}\n",
            6,
            &["spec.nodeSelector", "host policies"],
        ),
        (CNP, "  labels: [{key: a}]\n", 6, &["spec.labels"]),
        (
            NP,
            "  ingress:\n  - ports: [{port: http}]\n",
            7,
            &["named port"],
        ),
        (
            NP,
            "  ingress:\n  - ports:\n    - port: \"80\"\n",
            8,
            &["port name", "without quotes"],
        ),
        (
            NP,
            "  ingres: []\n",
            6,
            &["`spec.ingres` is not a field", "did you mean `ingress`"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector: {}\n      ipBlock: {cidr: 10.0.0.0/8}\n",
            8,
            &["combines ipBlock"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - {}\n",
            8,
            &["a peer needs"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n",
            8,
            &["10.0.0.0/33", "not a CIDR"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.1}\n",
            8,
            &["not a CIDR"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.0.0.0/8\n        except: [192.168.0.0/16]\n",
            10,
            &["must lie inside 10.0.0.0/8"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {key: a, operator: Is, values: [b]}\n",
            10,
            &["In, NotIn, Exists or DoesNotExist"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {key: a, operator: In}\n",
            10,
            &["needs at least one of `values`"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {key: a, operator: Exists, values: [b]}\n",
            10,
            &["must have no `values`"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {\"-bad\": x}\n",
            9,
            &["`-bad` is not a valid label key"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {version: 2}\n",
            9,
            &["must be a string"],
        ),
        (
            NP,
            "  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {app: \"a b\"}\n",
            9,
            &["not a valid label value"],
        ),
        (
            NP,
            "  egress:\n  - {}\n  policyTypes: [Ingress]\n",
            7,
            &["policyTypes does not list Egress"],
        ),
        (NP, "  policyTypes: [Both]\n", 6, &["Ingress or Egress"]),
        (
            NP,
            "  ingress:\n  - ports:\n    - {port: 90, endPort: 80}\n",
            8,
            &["must not be below port 90"],
        ),
        (
            NP,
            "  ingress:\n  - ports:\n    - {endPort: 80}\n",
            8,
            &["needs a numeric `port`"],
        ),
        (
            NP,
            "  ingress:\n  - ports:\n    - {port: 80, protocol: tcp}\n",
            8,
            &["TCP, UDP or SCTP"],
        ),
        (
            NP,
            "  ingress:\n  - ports:\n    - {port: 70000}\n",
            8,
            &["not a port"],
        ),
        (
            CNP,
            "  ingress:\n  - fromEntities: [everything]\n",
            7,
            &["`everything` is not an entity", "world"],
        ),
        (
            CNP,
            "  ingress:\n  - fromEndpoints:\n    - matchLabels: {\"container:app\": x}\n",
            8,
            &["label source `container`"],
        ),
        (
            CNP,
            "  ingress:\n  - fromEndpoints:\n    - matchLabels: {\"reserved:moon\": \"\"}\n",
            8,
            &["reserved labels are"],
        ),
        (
            CNP,
            "  enableDefaultDeny: {ingress: yes}\n",
            6,
            &["true or false"],
        ),
        (
            CNP,
            "  ingress:\n  - toPorts:\n    - ports: [{port: \"80\", protocol: ICMP}]\n",
            8,
            &["TCP, UDP, SCTP or ANY"],
        ),
        (
            CNP,
            "  ingress:\n    fromEntities: [world]\n",
            7,
            &["must be a list"],
        ),
        (
            CNP,
            "  ingress:\n  - fromEntities: !mine [world]\n",
            7,
            &["YAML tag"],
        ),
    ];
    for (head, tail, line, words) in cases {
        let (got_line, msg) = refused(head, tail);
        assert_eq!(got_line, *line, "{tail}: {msg}");
        assert!(msg.starts_with(&format!("bad.yaml:{line}: ")), "{msg}");
        for w in *words {
            assert!(msg.contains(w), "{tail}: `{w}` not in: {msg}");
        }
    }
}

#[test]
fn bad_documents_say_what_is_wrong_and_where() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n",
            2,
            "`Service` is not a policy kind",
        ),
        (
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n",
            2,
            "cluster-wide policies",
        ),
        (
            "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n",
            1,
            "must be networking.k8s.io/v1",
        ),
        (
            "kind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}}\n",
            1,
            "no `apiVersion`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nmetadata: {name: a}\n",
            1,
            "no `kind`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n",
            3,
            "no `name`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad_Name}\nspec: {podSelector: {}}\n",
            3,
            "`Bad_Name`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: Kube}\nspec: {podSelector: {}}\n",
            3,
            "`Kube`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {generateName: a-}\nspec: {podSelector: {}}\n",
            3,
            "metadata.generateName is not supported",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {}\n",
            4,
            "no `podSelector`",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\n",
            1,
            "no `spec`",
        ),
        (
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspecs: []\n",
            4,
            "specs is not supported",
        ),
        ("- just\n- a list\n", 1, "is not a mapping"),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nkind: NetworkPolicy\n",
            3,
            "not valid YAML",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a\nspec: {}\n",
            4,
            "not valid YAML",
        ),
    ];
    for (text, line, words) in cases {
        let e = parse("bad.yaml", text).unwrap_err();
        assert_eq!(e.line(), Some(*line), "{text}: {e}");
        assert!(e.to_string().contains(words), "{text}: {e}");
    }
}

#[test]
fn anchors_and_aliases_are_read_as_kubectl_reads_them() {
    // saphyr expands aliases within a node budget (no "billion laughs").
    let p = one(&format!(
        "{CNP}  ingress:\n  - fromEntities: &w [world]\n  egress:\n  - toEntities: *w\n"
    ));
    assert_eq!(p.ingress[0].peers, p.egress[0].peers);
}

#[test]
fn label_arguments_are_checked_as_labels() {
    assert_eq!(check_label("org", "empire"), Ok(()));
    assert!(check_label("org", "a b").is_err());
    assert!(check_label("", "x").is_err());
}
