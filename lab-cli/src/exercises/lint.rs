//! `labctl exercise lint`: everything that can be checked in an exercise
//! file without building its lab, for every draw of its parameters. The
//! shipped exercises pass it in the unit tests; `--dir` files are linted
//! whenever they are listed or started.

use std::{
    collections::{BTreeSet, HashSet},
    net::Ipv4Addr,
    path::Path,
};

use super::{
    catalog::{self, Source},
    model::{Action, Check, Exercise, PolicyParty, Probe, Traffic},
    template::{self, LAB},
};
use crate::lab::{
    plan::{MasqMode, Plan, WORLD},
    scenario::{self, Scenario},
    traffic::Proto,
};

/// The drop reasons the tracer names on the running kernel: the kernel's
/// own and the policy datapaths' (POLICY_DENIED, POLICY_DENY). None where
/// its BTF cannot be read: reason names are then not checked.
pub fn kernel_reasons() -> Option<Vec<String>> {
    use crate::drops::reasons::{DropReasons, POLICY_DENIED, POLICY_DENY};
    let btf = crate::kernel::btf::KernelBtf::from_sys().ok()?;
    let reasons = DropReasons::from_btf(&btf).ok()?;
    Some(
        reasons
            .iter()
            .map(|(_, n)| n.to_owned())
            .chain([POLICY_DENIED.to_owned(), POLICY_DENY.to_owned()])
            .collect(),
    )
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

fn valid_param(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `net.ipv4.conf.eth0.rp_filter`: words of letters, digits, `_` and `-`
/// only (no `/`, no `..`): a key can only name a file under
/// /proc/sys/net.
pub fn valid_sysctl_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() >= 2
        && parts[0] == "net"
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// An interface name the kernel would take: 1 to 15 bytes, no `/`, `:`
/// or whitespace.
fn valid_ifname(s: &str) -> bool {
    (1..16).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// `FAMILY NAME` of an nft table.
pub fn valid_table(table: &str) -> bool {
    let mut words = table.split_whitespace();
    let (Some(family), Some(name), None) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    ["ip", "ip6", "inet", "arp", "bridge", "netdev"].contains(&family)
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every problem of `source`, one sentence each (none: it is valid).
/// `reasons`: drop-reason names to accept, when known.
pub fn lint(source: &Source, reasons: Option<&[String]>) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    let h = &source.header;
    if !valid_id(&h.id) {
        problems.push(format!(
            "id `{}`: use lowercase letters, digits and `-` (at most 40)",
            h.id
        ));
    }
    if !source.shipped()
        && Path::new(&source.file).file_stem().and_then(|s| s.to_str()) != Some(h.id.as_str())
    {
        problems.push(format!(
            "the file's name must be the id: name it {}.toml",
            h.id
        ));
    }
    let mut used = BTreeSet::new();
    template::used(&source.template, &mut used);
    let mut defined: BTreeSet<String> = BTreeSet::from([LAB.to_owned()]);
    for (name, p) in &h.params {
        if name == LAB || !valid_param(name) {
            problems.push(format!(
                "parameter `{name}`: use lowercase letters, digits and `_` (and not `lab`)"
            ));
        }
        if p.choices.is_empty() {
            problems.push(format!("parameter `{name}` has no choices"));
        }
        for c in &p.choices {
            match c {
                super::model::Choice::Value(_) => {
                    defined.insert(name.clone());
                }
                super::model::Choice::Table(t) => {
                    for k in t.keys() {
                        if k == LAB || !valid_param(k) {
                            problems.push(format!(
                                "parameter `{name}` sets `{k}`: use lowercase letters, digits and `_` (and not `lab`)"
                            ));
                        }
                        defined.insert(k.clone());
                    }
                }
            }
        }
    }
    for name in defined.difference(&used) {
        if name != LAB {
            problems.push(format!(
                "parameter `{name}` is never used (no `{{{{{name}}}}}`)"
            ));
        }
    }
    for name in used.difference(&defined) {
        problems.push(format!("placeholder `{{{{{name}}}}}` has no parameter"));
    }
    if !problems.is_empty() {
        return problems;
    }
    for vars in template::variants(&h.params, "lint") {
        match catalog::instantiate(source, &vars) {
            Ok(ex) => lint_exercise(&ex, reasons, &mut problems),
            Err(catalog::CatalogError::Invalid { problems: p, .. }) => problems.extend(p),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut seen = HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    problems
}

struct Ctx<'a> {
    ex: &'a Exercise,
    sc: &'static Scenario,
    members: Vec<String>,
    pods: Vec<String>,
    problems: &'a mut Vec<String>,
}

impl Ctx<'_> {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn member(&mut self, m: &str, what: &str) {
        if !self.members.iter().any(|x| x == m) {
            let known = self.members.join(", ");
            self.problem(format!(
                "{what}: `{m}` is not a member of scenario {} ({known})",
                self.sc.name
            ));
        }
    }

    fn pod(&mut self, m: &str, what: &str) {
        if !self.pods.iter().any(|x| x == m) {
            let known = self.pods.join(", ");
            self.problem(format!(
                "{what}: `{m}` is not a pod of scenario {} ({known})",
                self.sc.name
            ));
        }
    }

    fn service(&mut self, s: &str, what: &str) -> bool {
        let known = self.sc.services.iter().any(|x| x.name == s);
        if !known {
            self.problem(format!(
                "{what}: scenario {} has no service `{s}`",
                self.sc.name
            ));
        }
        known
    }

    /// A member, or an IPv4 address.
    fn endpoint(&mut self, m: &str, what: &str) {
        if m.parse::<Ipv4Addr>().is_err() {
            self.member(m, what);
        }
    }

    fn probe(&mut self, p: &Probe, what: &str) {
        self.member(&p.from, what);
        let is_service = self.sc.services.iter().any(|s| s.name == p.to);
        if !is_service {
            self.endpoint(&p.to, what);
        }
        if let Some(seen) = &p.seen_as {
            self.endpoint(seen, what);
        }
        if let Some(backend) = &p.backend {
            match backend.split_once(':') {
                Some((m, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => self.member(m, what),
                _ => self.problem(format!("{what}: backend `{backend}` is not MEMBER:PORT")),
            }
        }
        if p.port == Some(0) || p.sport == Some(0) {
            self.problem(format!("{what}: port 0"));
        }
        if p.count == Some(0) {
            self.problem(format!("{what}: count 0 sends nothing"));
        }
    }

    fn action(&mut self, a: &Action, what: &str) {
        match a {
            Action::Run { member, command } => {
                self.member(member, what);
                if command.trim().is_empty() {
                    self.problem(format!("{what}: an empty command"));
                }
            }
            Action::NatPorts { ports } => {
                if super::observe::parse_ports(ports).is_none() {
                    self.problem(format!(
                        "{what}: nat-ports `{ports}` is not LO-HI (as 32768-60999)"
                    ));
                }
                if self.ex.options.masq != Some(MasqMode::Ebpf) {
                    self.problem(format!("{what}: nat-ports needs options.masq = \"ebpf\""));
                }
            }
            Action::Probe(p) => self.probe(p, what),
            Action::SvcBackends { service, pods } => {
                self.service(service, what);
                for p in pods {
                    self.pod(p, what);
                }
            }
            Action::Policy { yaml } => {
                if let Err(e) = crate::policy::yaml::parse("policy", yaml) {
                    self.problem(format!("{what}: {e}"));
                }
                if self.ex.options.policy_mode.is_none() {
                    self.problem(format!(
                        "{what}: a policy, but options.policy_mode is not set"
                    ));
                }
            }
            Action::PolicyDelete { name } => {
                if name.trim().is_empty() {
                    self.problem(format!("{what}: policy-delete names no policy"));
                }
            }
            Action::Answer { text } => {
                if !self.ex.asks() {
                    self.problem(format!(
                        "{what}: an answer, but no task has an `answer` or `wire` check"
                    ));
                }
                if text.trim().is_empty() {
                    self.problem(format!("{what}: an empty answer"));
                }
            }
        }
    }

    fn check(&mut self, c: &Check, what: &str, reasons: Option<&[String]>) {
        match c {
            Check::Probe(p) => self.probe(p, what),
            Check::Verdict {
                from, to, proto, ..
            } => {
                if self.ex.options.policy_mode.is_none() {
                    self.problem(format!(
                        "{what}: a verdict check, but options.policy_mode is not set"
                    ));
                }
                if !matches!(proto, Proto::Tcp | Proto::Udp) {
                    self.problem(format!("{what}: a verdict is for tcp or udp"));
                }
                for side in [from, to] {
                    match side {
                        PolicyParty::Member(m) => self.member(m, what),
                        PolicyParty::New { labels, .. } => {
                            for (k, v) in labels {
                                if let Err(e) = crate::policy::yaml::check_label(k, v) {
                                    self.problem(format!("{what}: {e}"));
                                }
                            }
                        }
                    }
                }
            }
            Check::Drops {
                member,
                during,
                reason,
                ..
            } => {
                self.member(member, what);
                if let (Some(r), Some(known)) = (reason, reasons)
                    && !known.iter().any(|k| k == r)
                {
                    self.problem(format!(
                        "{what}: drop reason `{r}` is not on this kernel (`labctl explain --list`)"
                    ));
                }
                match during {
                    Traffic::Probe(p) => self.probe(p, what),
                    Traffic::Spoofed { from, src, to, .. } => {
                        self.member(from, what);
                        for a in [src, to] {
                            if a.parse::<Ipv4Addr>().is_err() {
                                self.problem(format!("{what}: `{a}` is not an IPv4 address"));
                            }
                        }
                    }
                }
            }
            Check::Conntrack {
                member,
                proto,
                reply_src,
                at_least,
                at_most,
                ..
            } => {
                self.member(member, what);
                if let Some(r) = reply_src {
                    self.endpoint(r, what);
                }
                if let Some(p) = proto
                    && lab_common::proto::number(p).is_none()
                {
                    self.problem(format!("{what}: protocol `{p}` (tcp, udp, icmp)"));
                }
                if at_least.is_none() && at_most.is_none() {
                    self.problem(format!("{what}: give at_least or at_most"));
                }
            }
            Check::Sysctl {
                member,
                key,
                equals,
                at_least,
            } => {
                self.member(member, what);
                if !valid_sysctl_key(key) {
                    self.problem(format!(
                        "{what}: sysctl key `{key}` must be net.WORD.WORD... (letters, digits, `_`, `-`)"
                    ));
                }
                if equals.is_some() == at_least.is_some() {
                    self.problem(format!("{what}: give exactly one of equals and at_least"));
                }
            }
            Check::Route {
                member,
                to,
                dev,
                via,
                ..
            } => {
                self.member(member, what);
                self.endpoint(to, what);
                if let Some(v) = via
                    && v.parse::<Ipv4Addr>().is_err()
                {
                    self.problem(format!("{what}: via `{v}` is not an IPv4 address"));
                }
                if let Some(d) = dev
                    && !valid_ifname(d)
                {
                    self.problem(format!("{what}: `{d}` is not an interface name"));
                }
            }
            Check::Unchanged { member, table } => {
                self.member(member, what);
                if let Some(t) = table
                    && !valid_table(t)
                {
                    self.problem(format!(
                        "{what}: table `{t}` is not `FAMILY NAME` (as `ip hardening`)"
                    ));
                }
            }
            Check::Service { name, backends } => {
                self.service(name, what);
                for b in backends {
                    self.pod(b, what);
                }
            }
            Check::Answer { expect } => {
                if expect.trim().is_empty() {
                    self.problem(format!("{what}: an empty expected answer"));
                }
            }
            Check::Wire { from, to, .. } => {
                self.member(from, what);
                self.service(to, what);
            }
            Check::Script { member, command } => {
                self.member(member, what);
                if command.trim().is_empty() {
                    self.problem(format!("{what}: an empty command"));
                }
            }
        }
    }
}

fn lint_exercise(ex: &Exercise, reasons: Option<&[String]>, problems: &mut Vec<String>) {
    let Some(sc) = scenario::find(&ex.scenario) else {
        problems.push(format!(
            "scenario `{}` does not exist ({})",
            ex.scenario,
            scenario::names().join(", ")
        ));
        return;
    };
    let plan = match Plan::new("lint", sc, ex.lab_options()) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("options: {e}"));
            return;
        }
    };
    if ex.options.kube_proxy.is_some() && sc.services.is_empty() {
        problems.push(format!(
            "options.kube_proxy: scenario {} has no services",
            sc.name
        ));
    }
    let mut members: Vec<String> = plan.members().map(|(n, _, _)| n.to_owned()).collect();
    members.push(WORLD.to_owned());
    let pods = plan.pods.iter().map(|p| p.name.clone()).collect();
    let mut c = Ctx {
        ex,
        sc,
        members,
        pods,
        problems,
    };
    if ex.story.trim().is_empty() {
        c.problem("the story is empty".into());
    }
    if ex.tasks.is_empty() {
        c.problem("no tasks: an exercise needs at least one".into());
    }
    if ex.hints.is_empty() {
        c.problem("no hints: give at least one (symptom, concept, where to look, the tool)".into());
    }
    if ex.hints.iter().any(|h| h.trim().is_empty()) {
        c.problem("an empty hint".into());
    }
    if ex.solution.actions.is_empty() {
        c.problem(
            "solution.actions is empty: give the fix (or, for a question, the `answer`)".into(),
        );
    }
    if ex.asks()
        && !ex
            .solution
            .actions
            .iter()
            .any(|a| matches!(a, Action::Answer { .. }))
    {
        c.problem("the exercise asks a question: its solution needs an `answer` action".into());
    }
    match ex.max_answers {
        Some(0) => c.problem("max_answers = 0 allows no answer at all".into()),
        Some(_) if !ex.asks() => {
            c.problem("max_answers, but no task has an `answer` or `wire` check".into())
        }
        _ => {}
    }
    if !ex.shortcuts.is_empty() && ex.guards.is_empty() && !ex.tasks.iter().any(|t| t.why.is_some())
    {
        c.problem(
            "shortcuts are listed but no guard (nor a task with a `why`) can catch them".into(),
        );
    }
    if !ex.tasks.is_empty() && ex.tasks.iter().all(|t| t.keep_working) {
        c.problem("every task is keep_working: nothing is broken".into());
    }
    let mut ids = HashSet::new();
    for (i, t) in ex.tasks.iter().enumerate() {
        let what = format!("task `{}`", t.id);
        if !ids.insert(t.id.clone()) {
            c.problem(format!("{what}: the id is used twice"));
        }
        if t.checks.is_empty() {
            c.problem(format!("{what}: no checks"));
        }
        for need in &t.needs {
            if !ex.tasks[..i].iter().any(|o| &o.id == need) {
                c.problem(format!(
                    "{what} needs `{need}`, which is not a task listed before it"
                ));
            }
        }
        if t.keep_working && !t.needs.is_empty() {
            c.problem(format!("{what}: a keep_working task cannot need another"));
        }
        for check in &t.checks {
            c.check(check, &what, reasons);
        }
    }
    for (i, g) in ex.guards.iter().enumerate() {
        let what = format!("guard {} ({})", i + 1, g.title);
        if g.checks.is_empty() {
            c.problem(format!("{what}: no checks"));
        }
        if g.why.trim().is_empty() {
            c.problem(format!("{what}: say why it matters"));
        }
        for check in &g.checks {
            c.check(check, &what, reasons);
        }
    }
    for (i, a) in ex.breaks.iter().enumerate() {
        c.action(a, &format!("break action {}", i + 1));
    }
    for (i, a) in ex.solution.actions.iter().enumerate() {
        c.action(a, &format!("solution action {}", i + 1));
    }
    let mut names = HashSet::new();
    for f in &ex.alternatives {
        let what = format!("alternative `{}`", f.name);
        if !names.insert(f.name.clone()) {
            c.problem(format!("{what}: the name is used twice"));
        }
        if f.actions.is_empty() {
            c.problem(format!("{what}: no actions"));
        }
        for a in &f.actions {
            c.action(a, &what);
        }
    }
    for s in &ex.shortcuts {
        let what = format!("shortcut `{}`", s.name);
        if !names.insert(s.name.clone()) {
            c.problem(format!("{what}: the name is used twice"));
        }
        if s.actions.is_empty() {
            c.problem(format!("{what}: no actions"));
        }
        if s.why.trim().is_empty() {
            c.problem(format!("{what}: say why it is wrong"));
        }
        for a in &s.actions {
            c.action(a, &what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(id: &str) -> Source {
        catalog::shipped()
            .unwrap()
            .into_iter()
            .find(|s| s.id() == id)
            .unwrap()
    }

    fn edited(id: &str, from: &str, to: &str) -> Vec<String> {
        let s = shipped(id);
        assert!(s.text.contains(from), "{id} has `{from}`");
        let text = s.text.replace(from, to);
        match Source::parse(&s.file, &text) {
            Ok(s) => lint(&s, None),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn every_shipped_exercise_passes_the_lint_on_this_kernel() {
        let reasons = kernel_reasons();
        let sources = catalog::shipped().unwrap();
        assert!(sources.len() >= 12);
        for s in &sources {
            assert_eq!(
                lint(s, reasons.as_deref()),
                Vec::<String>::new(),
                "{}",
                s.id()
            );
            assert!(s.header.params.len() < 8);
        }
        let ids: BTreeSet<_> = sources.iter().map(Source::id).collect();
        assert_eq!(ids.len(), sources.len(), "ids are unique");
    }

    #[test]
    fn the_lint_finds_what_an_instructor_gets_wrong() {
        let has = |problems: Vec<String>, what: &str| {
            assert!(
                problems.iter().any(|p| p.contains(what)),
                "`{what}` not in {problems:#?}"
            );
        };
        has(
            edited("forwarding-off", "in = \"node1\"", "in = \"node9\""),
            "node9",
        );
        has(edited("forwarding-off", "{{lab}}", "{{nope}}"), "{{nope}}");
        has(edited("forwarding-off", "[[tasks]]", "[[taskz]]"), "taskz");
        has(
            edited(
                "stale-conntrack",
                "key = \"net.netfilter.nf_conntrack_udp_timeout\"",
                "key = \"../../../etc/hostname\"",
            ),
            "sysctl key",
        );
        has(
            edited("policy-allow-one", "choices = [8443", "choices = [0"),
            "port 0",
        );
        let s = shipped("forwarding-off");
        let text = s.text.replace("hints = [", "hints = [] \nold_hints = [");
        has(
            lint(&Source::parse(&s.file, &text).unwrap(), None),
            "old_hints",
        );
        // Parameters: unused, and a quote cannot break the file.
        let s = shipped("policy-allow-one");
        let text = format!("{}\n[params.spare]\nchoices = [\"x\"]\n", s.text);
        has(
            lint(&Source::parse(&s.file, &text).unwrap(), None),
            "never used",
        );
        let text = s
            .text
            .replace("choices = [8443", "choices = [\"a'b\\\"c\", 8443");
        has(
            lint(&Source::parse(&s.file, &text).unwrap(), None),
            "expected u16",
        );
    }

    #[test]
    fn keys_and_tables() {
        assert!(valid_sysctl_key("net.ipv4.conf.eth0.rp_filter"));
        assert!(!valid_sysctl_key("net.ipv4/../../x"));
        assert!(!valid_sysctl_key("kernel.hostname"));
        assert!(!valid_sysctl_key("net..x"));
        assert!(valid_table("ip hardening"));
        assert!(!valid_table("ip"));
        assert!(!valid_table("ipx t"));
        assert!(!valid_table("ip t;x"));
    }
}
