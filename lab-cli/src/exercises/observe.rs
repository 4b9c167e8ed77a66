//! Running an exercise against a live lab: its actions (break, solution),
//! and its checks, each observed with labctl's own instruments. A check
//! only sends its probes; it never changes the lab.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use serde::Serialize;
use thiserror::Error;

use super::{
    attempt::{Attempt, Snapshot},
    model::{Action, Check, Exercise, Probe, Traffic},
};
use crate::{
    conntrack::netlink::Ctnetlink,
    drops::{
        filter::Filters,
        record::DropRecord,
        session::{self, Sink, TraceOptions},
    },
    kernel::{netns::NetNs, sysctl},
    lab::{
        self, Endpoint, Lab, LabError, faults,
        firewall::{self, FirewallError},
        traffic::{self, Proto, TrafficSpec},
    },
};

#[derive(Debug, Error)]
pub enum ObserveError {
    #[error("`{run}` in {member} failed ({status}): {stderr}")]
    Action {
        member: String,
        run: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{run}` in {member}: {source}")]
    Spawn {
        member: String,
        run: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// Runs each action: a command with `sh -c` inside its member's namespace,
/// or a setting of the running lab.
pub fn apply(lab: &Lab, actions: &[Action]) -> Result<(), ObserveError> {
    for a in actions {
        if let Some(ports) = &a.nat_ports {
            let range = parse_ports(ports).ok_or_else(|| ObserveError::Action {
                member: a.member.clone(),
                run: format!("nat_ports = {ports}"),
                status: "invalid".into(),
                stderr: "not a port range such as 32768-60999".into(),
            })?;
            lab::reconfigure_nat(lab.name(), Some(range), None)?;
            continue;
        }
        if let Some(b) = &a.svc_backends {
            let mut words = b.split_whitespace().map(str::to_owned);
            let service = words.next().unwrap_or_default();
            lab::services::change(
                lab.name(),
                lab::services::Change::SetBackends {
                    service,
                    pods: words.collect(),
                },
            )?;
            continue;
        }
        if let Some(p) = &a.probe {
            let ctx = Ctx {
                lab,
                attempt: &Attempt::new("", lab.name(), 0, Default::default(), None),
            };
            // Only the state it leaves matters, not whether it was answered.
            if let Err(e) = ctx.send(p) {
                tracing::debug!("exercise traffic: {e}");
            }
            continue;
        }
        let Some(run) = &a.run else {
            continue;
        };
        let ns = lab.netns(&a.member)?;
        let spawn = |source| ObserveError::Spawn {
            member: a.member.clone(),
            run: run.clone(),
            source,
        };
        let out = ns
            .run(|| Command::new("sh").arg("-c").arg(run).output())
            .map_err(LabError::from)?
            .map_err(spawn)?;
        if !out.status.success() {
            return Err(ObserveError::Action {
                member: a.member.clone(),
                run: run.clone(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// `LO-HI`.
pub fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo > 0 && lo <= hi).then_some((lo, hi))
}

/// `cmd` (a shell line) inside `ns`: its stdout, or None when it failed.
fn output(ns: &NetNs, cmd: &str) -> Option<String> {
    let out = ns
        .run(|| Command::new("sh").arg("-c").arg(cmd).output())
        .ok()?
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `unchanged` compares: the ruleset without counters, and routes.
pub fn snapshot(lab: &Lab, member: &str) -> Result<Snapshot, ObserveError> {
    let ns = lab.netns(member)?;
    Ok(Snapshot {
        nft: output(&ns, "nft -s list ruleset").unwrap_or_default(),
        routes: output(&ns, "ip -4 route show table all").unwrap_or_default(),
    })
}

/// Members whose state an `unchanged` check compares.
pub fn watched_members(ex: &Exercise) -> Vec<String> {
    let mut out: Vec<String> = ex
        .tasks
        .iter()
        .flat_map(|t| &t.checks)
        .chain(ex.guards.iter().flat_map(|g| &g.checks))
        .filter_map(|c| match c {
            Check::Unchanged { member } => Some(member.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One task's or guard's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub title: String,
    pub passed: bool,
    /// Not checked: a task it needs did not pass.
    pub skipped: bool,
    /// What was observed, one sentence per failed check.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub exercise: String,
    pub lab: String,
    pub tasks: Vec<Outcome>,
    pub guards: Vec<Outcome>,
    pub passed: bool,
    pub elapsed_ms: u64,
}

/// Runs every task's checks (in order, honouring `needs`) and every guard.
pub fn check(lab: &Lab, attempt: &Attempt, ex: &Exercise) -> CheckReport {
    let started = Instant::now();
    let ctx = Ctx { lab, attempt };
    let mut tasks: Vec<Outcome> = Vec::new();
    for t in &ex.tasks {
        let blocked: Vec<&String> = t
            .needs
            .iter()
            .filter(|n| !tasks.iter().any(|o| &o.id == *n && o.passed))
            .collect();
        if !blocked.is_empty() {
            tasks.push(Outcome {
                id: t.id.clone(),
                title: t.title.clone(),
                passed: false,
                skipped: true,
                failures: vec![format!(
                    "not checked yet: it needs {} first",
                    blocked
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )],
            });
            continue;
        }
        let failures: Vec<String> = t.checks.iter().filter_map(|c| ctx.run(c).err()).collect();
        tasks.push(Outcome {
            id: t.id.clone(),
            title: t.title.clone(),
            passed: failures.is_empty(),
            skipped: false,
            failures,
        });
    }
    let guards: Vec<Outcome> = ex
        .guards
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let failures: Vec<String> = g.checks.iter().filter_map(|c| ctx.run(c).err()).collect();
            Outcome {
                id: format!("guard-{}", i + 1),
                title: g.title.clone(),
                passed: failures.is_empty(),
                skipped: false,
                failures,
            }
        })
        .collect();
    let passed = tasks.iter().all(|t| t.passed) && guards.iter().all(|g| g.passed);
    CheckReport {
        exercise: ex.id.clone(),
        lab: lab.name().to_owned(),
        tasks,
        guards,
        passed,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

struct Ctx<'a> {
    lab: &'a Lab,
    attempt: &'a Attempt,
}

/// A trace sink that keeps nothing: the check reads the kernel's counts.
struct CountOnly;

impl Sink for CountOnly {
    fn drop_seen(&mut self, _: &DropRecord) -> std::io::Result<()> {
        Ok(())
    }
}

impl Ctx<'_> {
    fn endpoint(&self, name: &str) -> Result<Endpoint, String> {
        if let Some(e) = self.lab.endpoint(name) {
            return Ok(e);
        }
        name.parse::<Ipv4Addr>()
            .map(|addr| Endpoint {
                name: name.to_owned(),
                netns: None,
                addr,
            })
            .map_err(|_| format!("`{name}` is neither a member of the lab nor an address"))
    }

    fn netns(&self, member: &str) -> Result<NetNs, String> {
        self.lab.netns(member).map_err(|e| e.to_string())
    }

    /// Ok, or one sentence saying what was observed.
    fn run(&self, check: &Check) -> Result<(), String> {
        match check {
            Check::Probe(p) => self.probe(p),
            Check::Drops {
                at,
                during,
                reason,
                at_least,
            } => self.drops(at, during, reason.as_deref(), *at_least),
            Check::Conntrack {
                member,
                proto,
                dport,
                snat,
                at_least,
                at_most,
            } => self.conntrack(
                member,
                proto.as_deref(),
                dport.as_deref(),
                *snat,
                *at_least,
                *at_most,
            ),
            Check::Sysctl {
                member,
                key,
                equals,
            } => {
                let ns = self.netns(member)?;
                let parts: Vec<&str> = key.split('.').collect();
                let value = ns
                    .run(|| sysctl::read(&parts))
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot read {key} in {member}: {e}"))?;
                if &value == equals {
                    Ok(())
                } else {
                    Err(format!("{key} is {value} in {member}"))
                }
            }
            Check::Nft {
                member,
                contains,
                present,
            } => {
                let ns = self.netns(member)?;
                let rules = firewall::list(&ns).map_err(|e| e.to_string())?;
                let found = rules.lines().any(|l| l.contains(contains.as_str()));
                match (found, present) {
                    (true, true) | (false, false) => Ok(()),
                    (false, true) => Err(format!(
                        "{member}'s nft ruleset has no rule with `{contains}` any more"
                    )),
                    (true, false) => Err(format!("{member}'s nft ruleset still has `{contains}`")),
                }
            }
            Check::Route {
                member,
                to,
                dev,
                reachable,
            } => self.route(member, to, dev.as_deref(), *reachable),
            Check::Unchanged { member } => {
                let before = self
                    .attempt
                    .snapshots
                    .get(member)
                    .ok_or_else(|| format!("no snapshot of {member} was taken at the start"))?;
                let now = snapshot(self.lab, member).map_err(|e| e.to_string())?;
                if now.nft != before.nft {
                    Err(format!(
                        "{member}'s nft ruleset is not what it was at the start"
                    ))
                } else if now.routes != before.routes {
                    Err(format!(
                        "{member}'s routes are not what they were at the start"
                    ))
                } else {
                    Ok(())
                }
            }
            Check::Wire { from, to, expect } => self.wire(from, to, expect),
            Check::Answer { expect } => {
                let words = |s: &str| {
                    let mut w: Vec<String> = s
                        .split(|c: char| c.is_whitespace() || c == ',')
                        .filter(|w| !w.is_empty())
                        .map(|w| w.to_ascii_uppercase())
                        .collect();
                    w.sort();
                    w
                };
                match &self.attempt.answer {
                    None => Err("no answer yet: `labctl exercise answer ...`".into()),
                    Some(a) if words(a) == words(expect) => Ok(()),
                    Some(a) => Err(format!("the answer `{a}` is not what the lab shows")),
                }
            }
        }
    }

    fn spec(&self, p: &Probe) -> Result<TrafficSpec, String> {
        let mut spec = TrafficSpec {
            proto: p.proto,
            ..TrafficSpec::default()
        };
        if let Some(sport) = &p.sport {
            spec.source_port = Some(
                sport
                    .parse()
                    .map_err(|_| format!("`{sport}` is not a port"))?,
            );
        }
        if let Some(backend) = &p.backend {
            let (member, port) = backend
                .split_once(':')
                .ok_or_else(|| format!("`{backend}` is not MEMBER:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("`{port}` is not a port"))?;
            spec.servers = vec![(self.endpoint(member)?, port)];
        }
        if let Some(port) = &p.port {
            spec.port = port
                .parse()
                .map_err(|_| format!("`{port}` is not a port"))?;
        }
        if let Some(c) = p.count {
            spec.count = c;
        }
        if let Some(s) = p.size {
            spec.size = s;
        }
        if p.proto == Proto::TcpStream {
            spec.duration = Some(Duration::from_secs_f64(p.seconds.unwrap_or(2.0)));
        }
        Ok(spec)
    }

    fn send(&self, p: &Probe) -> Result<traffic::TrafficReport, String> {
        let mut spec = self.spec(p)?;
        let from = self.endpoint(&p.from)?;
        // A service (unless the probe names its own backend server).
        let service = match p.backend {
            None => self.lab.service_traffic(&p.to, &mut spec, p.port.is_some()),
            Some(_) => None,
        };
        let to = match service {
            Some(to) => to,
            None => self.endpoint(&p.to)?,
        };
        // Under socket-LB the pod's sockets are made in its cgroup.
        let _as_pod = self
            .lab
            .pod_cgroup(&p.from)
            .map(|c| crate::kernel::cgroup::Joined::enter(&c))
            .transpose()
            .map_err(|e| format!("cannot act as pod {}: {e}", p.from))?;
        traffic::run(&from, &to, &spec)
            .map_err(|e| format!("cannot send from {} to {}: {e}", p.from, p.to))
    }

    /// The [`Check::Wire`] check.
    fn wire(&self, from: &str, to: &str, expect: &str) -> Result<(), String> {
        let vip = self
            .lab
            .service(to)
            .map(|(vip, _)| vip)
            .ok_or_else(|| format!("`{to}` is not a service of this lab"))?;
        let probe = Probe {
            from: from.to_owned(),
            to: to.to_owned(),
            proto: Proto::Tcp,
            port: None,
            count: Some(3),
            size: None,
            seconds: None,
            answered: true,
            seen_as: None,
            min_bytes: None,
            sport: None,
            backend: None,
            backends_at_least: None,
        };
        let mut sent = Ok(());
        let dsts = lab::services::capture_syn_destinations(self.lab, from, || {
            sent = self.send(&probe).map(drop);
        })
        .map_err(|e| e.to_string())?;
        sent?;
        let kinds: std::collections::BTreeSet<&str> = dsts
            .iter()
            .map(|d| if *d == vip { "vip" } else { "backend" })
            .collect();
        let seen = match kinds.into_iter().collect::<Vec<_>>()[..] {
            [one] => one,
            [] => return Err(format!("no SYN from {from} to {to} was captured")),
            _ => "both",
        };
        if !seen.eq_ignore_ascii_case(expect) {
            return Err(format!(
                "a capture on {from}'s eth0 shows the {seen} address, where this lab should show the {expect}"
            ));
        }
        match &self.attempt.answer {
            None => Err("no answer yet: `labctl exercise answer vip` or `... backend`".into()),
            Some(a) if a.trim().eq_ignore_ascii_case(seen) => Ok(()),
            Some(a) => Err(format!("the answer `{a}` is not what the wire shows")),
        }
    }

    fn probe(&self, p: &Probe) -> Result<(), String> {
        let r = self.send(p)?;
        let what = format!(
            "{} from {} to {}{}",
            p.proto,
            p.from,
            p.to,
            r.port
                .map(|port| format!(" port {port}"))
                .unwrap_or_default()
        );
        if p.proto == Proto::TcpStream {
            let bytes = r.bytes.unwrap_or(0);
            let min = p.min_bytes.unwrap_or(1);
            return if (bytes >= min) == p.answered {
                Ok(())
            } else {
                Err(format!(
                    "{what}: {bytes} bytes arrived in {:.0} s",
                    p.seconds.unwrap_or(2.0)
                ))
            };
        }
        let answered = if p.answered {
            r.all_answered()
        } else {
            r.answered == 0
        };
        if !answered {
            let errors: Vec<String> = r.errors.iter().map(|(e, n)| format!("{n}× {e}")).collect();
            return Err(format!(
                "{what}: {} of {} answered{}",
                r.answered,
                r.sent,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", errors.join(", "))
                }
            ));
        }
        if let Some(n) = p.backends_at_least
            && r.backends.len() < n
        {
            let by: Vec<String> = r
                .backends
                .iter()
                .map(|(b, c)| format!("{b} ×{c}"))
                .collect();
            return Err(format!(
                "{what}: answered by {} backend(s) ({}), not at least {n}",
                r.backends.len(),
                if by.is_empty() {
                    "none named".into()
                } else {
                    by.join(", ")
                }
            ));
        }
        if let Some(seen) = &p.seen_as {
            let want = self.endpoint(seen)?.addr;
            let saw: Vec<Ipv4Addr> = r.server_saw.keys().copied().collect();
            if saw.is_empty() || saw.iter().any(|a| *a != want) {
                let saw: Vec<String> = saw.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "{what}: the server saw the source as {}",
                    if saw.is_empty() {
                        "nothing".to_owned()
                    } else {
                        saw.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }

    fn drops(
        &self,
        at: &str,
        during: &Traffic,
        reason: Option<&str>,
        at_least: Option<u64>,
    ) -> Result<(), String> {
        let ns = self.netns(at)?;
        let opts = TraceOptions {
            filters: Filters {
                netns: Some(ns),
                ..Filters::default()
            },
            // Counts only: the kernel's per-reason counters are exact.
            summary: true,
            interval: Duration::from_secs(3600),
            duration: Some(Duration::from_secs(60)),
            ring_bytes: 1 << 16,
            ..TraceOptions::default()
        };
        let tracer = session::start(opts, CountOnly)
            .map_err(|e| format!("cannot trace drops in {at}: {e:#}"))?;
        let sent = match during {
            Traffic::Probe(p) => self.send(p).map(|_| ()),
            Traffic::Spoofed {
                from,
                src,
                to,
                count,
            } => {
                let parse = |a: &str| {
                    a.parse::<Ipv4Addr>()
                        .map_err(|_| format!("`{a}` is not an IPv4 address"))
                };
                faults::send_spoofed(self.lab, from, parse(src)?, parse(to)?, count.unwrap_or(5))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        let summary = tracer
            .stop()
            .map_err(|e| format!("cannot trace drops in {at}: {e:#}"))?;
        sent?;
        let total = summary.total();
        match reason {
            None if total == 0 => Ok(()),
            None => Err(format!(
                "{at} dropped {total} packets ({})",
                summary
                    .by_reason
                    .iter()
                    .map(|(r, n)| format!("{n}× {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(r) => {
                let n = summary.by_reason.get(r).copied().unwrap_or(0);
                let want = at_least.unwrap_or(1);
                if n >= want {
                    Ok(())
                } else {
                    Err(format!(
                        "the tracer saw {n} {r} drops in {at} (expected at least {want})"
                    ))
                }
            }
        }
    }

    fn conntrack(
        &self,
        member: &str,
        proto: Option<&str>,
        dport: Option<&str>,
        snat: Option<bool>,
        at_least: Option<u64>,
        at_most: Option<u64>,
    ) -> Result<(), String> {
        let ns = self.netns(member)?;
        let entries = Ctnetlink::open_in(Some(&ns))
            .and_then(|mut c| c.dump(None))
            .map_err(|e| format!("cannot read {member}'s conntrack table: {e}"))?;
        let proto = proto.map(|p| lab_common::proto::number(p).unwrap_or(0));
        let dport = dport.and_then(|p| p.parse::<u16>().ok());
        let n = entries
            .iter()
            .filter(|e| proto.is_none_or(|p| e.proto_num == p))
            .filter(|e| dport.is_none_or(|d| e.orig.dport == Some(d)))
            .filter(|e| snat.is_none_or(|s| e.is_snat() == s))
            .count() as u64;
        if at_least.is_some_and(|m| n < m) || at_most.is_some_and(|m| n > m) {
            Err(format!(
                "{member}'s conntrack table has {n} such entries{}",
                if snat == Some(true) {
                    " (source-NATed)"
                } else {
                    ""
                }
            ))
        } else {
            Ok(())
        }
    }

    fn route(
        &self,
        member: &str,
        to: &str,
        dev: Option<&str>,
        reachable: bool,
    ) -> Result<(), String> {
        let ns = self.netns(member)?;
        let addr = self.endpoint(to)?.addr;
        let got = output(&ns, &format!("ip -o -4 route get {addr}"));
        let via_dev = got.as_deref().and_then(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "dev")?;
            words.next().map(str::to_owned)
        });
        match (reachable, &got) {
            (false, None) => return Ok(()),
            (false, Some(line)) => {
                return Err(format!("{member} now has a route to {to}: {}", line.trim()));
            }
            (true, None) => return Err(format!("{member} has no route to {to}")),
            (true, Some(_)) => {}
        }
        match (dev, via_dev) {
            (Some(want), Some(d)) if d != want => Err(format!(
                "{member} sends traffic for {to} out of {d}, not {want}"
            )),
            _ => Ok(()),
        }
    }
}
