//! The exercises: the ones shipped in `exercises/` (embedded in the binary)
//! or an instructor's own directory, instantiated per attempt.

use std::{collections::BTreeMap, path::Path};

use thiserror::Error;

use super::model::{Check, Choice, Exercise, Probe, Traffic};
use crate::lab::{
    plan::{Plan, WORLD},
    scenario,
};

/// The shipped exercises, in the order `exercise list` shows them.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "no-masquerade",
        include_str!("../../../exercises/no-masquerade.toml"),
    ),
    (
        "forwarding-off",
        include_str!("../../../exercises/forwarding-off.toml"),
    ),
    (
        "missing-route",
        include_str!("../../../exercises/missing-route.toml"),
    ),
    (
        "mtu-overlay",
        include_str!("../../../exercises/mtu-overlay.toml"),
    ),
    (
        "rp-filter",
        include_str!("../../../exercises/rp-filter.toml"),
    ),
    (
        "policy-allow-one",
        include_str!("../../../exercises/policy-allow-one.toml"),
    ),
    (
        "find-the-drop",
        include_str!("../../../exercises/find-the-drop.toml"),
    ),
    (
        "nat-exhaustion",
        include_str!("../../../exercises/nat-exhaustion.toml"),
    ),
    (
        "stale-conntrack",
        include_str!("../../../exercises/stale-conntrack.toml"),
    ),
    (
        "conntrack-invalid",
        include_str!("../../../exercises/conntrack-invalid.toml"),
    ),
    (
        "service-no-endpoints",
        include_str!("../../../exercises/service-no-endpoints.toml"),
    ),
    (
        "socket-lb-wire",
        include_str!("../../../exercises/socket-lb-wire.toml"),
    ),
];

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("exercise file {file} is not valid")]
    Parse {
        file: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("exercise `{id}` is broken: {problem}")]
    Invalid { id: String, problem: String },
    #[error("unknown exercise `{id}`; the exercises are: {known} (see `labctl exercise list`)")]
    Unknown { id: String, known: String },
    #[error("cannot read the exercise directory {dir}: {source}")]
    Dir { dir: String, source: std::io::Error },
}

impl CatalogError {
    pub fn is_usage(&self) -> bool {
        matches!(self, CatalogError::Unknown { .. })
    }
}

/// An exercise as written: its file's text and the parsed declaration
/// (placeholders still in).
#[derive(Debug, Clone)]
pub struct Source {
    pub text: String,
    pub exercise: Exercise,
}

/// The shipped exercises, or those of `dir` (`*.toml`, by file name).
pub fn load(dir: Option<&Path>) -> Result<Vec<Source>, CatalogError> {
    let files: Vec<(String, String)> = match dir {
        None => EMBEDDED
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect(),
        Some(dir) => {
            let err = |source| CatalogError::Dir {
                dir: dir.display().to_string(),
                source,
            };
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(err)? {
                let path = entry.map_err(err)?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).map_err(err)?;
                    files.push((path.display().to_string(), text));
                }
            }
            files.sort();
            files
        }
    };
    files
        .into_iter()
        .map(|(file, text)| {
            let exercise = parse(&file, &text)?;
            Ok(Source { text, exercise })
        })
        .collect()
}

fn parse(file: &str, text: &str) -> Result<Exercise, CatalogError> {
    toml::from_str(text).map_err(|e| CatalogError::Parse {
        file: file.to_owned(),
        source: Box::new(e),
    })
}

/// The exercise `id` of the catalog.
pub fn find(sources: &[Source], id: &str) -> Result<Source, CatalogError> {
    sources
        .iter()
        .find(|s| s.exercise.id == id)
        .cloned()
        .ok_or_else(|| CatalogError::Unknown {
            id: id.to_owned(),
            known: sources
                .iter()
                .map(|s| s.exercise.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Picks one choice of every parameter with `seed`: the placeholders of
/// one attempt (plus `lab`).
pub fn choose(ex: &Exercise, lab: &str, seed: u64) -> BTreeMap<String, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut vars = BTreeMap::from([("lab".to_owned(), lab.to_owned())]);
    for (name, param) in &ex.params {
        if param.choices.is_empty() {
            continue;
        }
        match &param.choices[rng.usize(..param.choices.len())] {
            Choice::Value(v) => {
                vars.insert(name.clone(), v.text());
            }
            Choice::Table(t) => {
                for (k, v) in t {
                    vars.insert(k.clone(), v.text());
                }
            }
        }
    }
    vars
}

/// The exercise with every `{{name}}` filled in.
pub fn instantiate(
    source: &Source,
    vars: &BTreeMap<String, String>,
) -> Result<Exercise, CatalogError> {
    let mut text = source.text.clone();
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(at) = text.find("{{") {
        let rest: String = text[at..].chars().take(30).collect();
        return Err(CatalogError::Invalid {
            id: source.exercise.id.clone(),
            problem: format!("a placeholder has no parameter: {rest}"),
        });
    }
    parse(&source.exercise.id, &text)
}

/// Checks what can be checked without a lab: the scenario exists, every
/// member named exists in it, tasks' `needs` exist, every choice of every
/// parameter instantiates. (`reasons` checks drop-reason names when given.)
pub fn validate(source: &Source, reasons: Option<&[String]>) -> Result<(), CatalogError> {
    let ex = &source.exercise;
    let invalid = |problem: String| CatalogError::Invalid {
        id: ex.id.clone(),
        problem,
    };
    let sc = scenario::find(&ex.scenario)
        .ok_or_else(|| invalid(format!("scenario `{}` does not exist", ex.scenario)))?;
    let plan = Plan::new("x", sc, ex.options.clone()).map_err(|e| invalid(e.to_string()))?;
    if ex.kube_proxy.is_some() && sc.services.is_empty() {
        return Err(invalid(format!(
            "scenario {} has no services for kube_proxy",
            sc.name
        )));
    }
    if ex.hints.is_empty() || ex.tasks.is_empty() {
        return Err(invalid("it needs at least one hint and one task".into()));
    }
    // Every combination is too many; every choice of each parameter, with
    // the first choice of the others, covers each value.
    let mut variants = vec![choose(ex, "x", 0)];
    for (name, param) in &ex.params {
        for choice in &param.choices {
            let mut vars = choose(ex, "x", 0);
            match choice {
                Choice::Value(v) => {
                    vars.insert(name.clone(), v.text());
                }
                Choice::Table(t) => {
                    for (k, v) in t {
                        vars.insert(k.clone(), v.text());
                    }
                }
            }
            variants.push(vars);
        }
    }
    for vars in &variants {
        let ex = instantiate(source, vars)?;
        ex.lab_options().map_err(invalid)?;
        let member = |m: &str| -> Result<(), CatalogError> {
            let known = plan.members().any(|(name, _, _)| name == m) || m == WORLD;
            if known {
                Ok(())
            } else {
                Err(invalid(format!(
                    "member `{m}` is not in scenario {}",
                    ex.scenario
                )))
            }
        };
        let endpoint = |m: &str| {
            if m.parse::<std::net::Ipv4Addr>().is_ok() {
                Ok(())
            } else {
                member(m)
            }
        };
        let probe = |p: &Probe| -> Result<(), CatalogError> {
            member(&p.from)?;
            endpoint(&p.to)?;
            if let Some(port) = &p.port {
                port.parse::<u16>()
                    .map_err(|_| invalid(format!("`{port}` is not a port")))?;
            }
            if let Some(seen) = &p.seen_as {
                endpoint(seen)?;
            }
            if let Some(backend) = &p.backend {
                let (m, port) = backend
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("`{backend}` is not MEMBER:PORT")))?;
                member(m)?;
                port.parse::<u16>()
                    .map_err(|_| invalid(format!("`{port}` is not a port")))?;
            }
            Ok(())
        };
        let reason_ok = |r: &str| match reasons {
            Some(known) if !known.iter().any(|k| k == r) => {
                Err(invalid(format!("drop reason `{r}` is not on this kernel")))
            }
            _ => Ok(()),
        };
        let all_actions = ex
            .breaks
            .iter()
            .chain(&ex.solution.commands)
            .chain(&ex.shortcut);
        for a in all_actions {
            member(&a.member)?;
            match (&a.run, &a.nat_ports, &a.probe, &a.svc_backends) {
                (Some(_), None, None, None) => {}
                (None, Some(p), None, None) if super::observe::parse_ports(p).is_some() => {}
                (None, None, Some(p), None) => probe(p)?,
                (None, None, None, Some(b)) => {
                    let mut words = b.split_whitespace();
                    let service = words.next().unwrap_or_default();
                    if !sc.services.iter().any(|s| s.name == service) {
                        return Err(invalid(format!(
                            "svc_backends names service `{service}`, which scenario {} does not have",
                            sc.name
                        )));
                    }
                    for pod in words {
                        member(pod)?;
                    }
                }
                _ => {
                    return Err(invalid(format!(
                        "an action in {} needs exactly one of `run`, a valid `nat_ports`, `probe` or `svc_backends`",
                        a.member
                    )));
                }
            }
        }
        let checks = ex
            .tasks
            .iter()
            .flat_map(|t| &t.checks)
            .chain(ex.guards.iter().flat_map(|g| &g.checks));
        for check in checks {
            match check {
                Check::Probe(p) => probe(p)?,
                Check::Drops {
                    at, during, reason, ..
                } => {
                    member(at)?;
                    if let Some(r) = reason {
                        reason_ok(r)?;
                    }
                    match during {
                        Traffic::Probe(p) => probe(p)?,
                        Traffic::Spoofed { from, src, to, .. } => {
                            member(from)?;
                            for a in [src, to] {
                                a.parse::<std::net::Ipv4Addr>().map_err(|_| {
                                    invalid(format!("`{a}` is not an IPv4 address"))
                                })?;
                            }
                        }
                    }
                }
                Check::Conntrack { member: m, .. }
                | Check::Sysctl { member: m, .. }
                | Check::Nft { member: m, .. }
                | Check::Route { member: m, .. }
                | Check::Unchanged { member: m } => member(m)?,
                Check::Answer { .. } => {}
                Check::Wire { from, to, expect } => {
                    member(from)?;
                    if !sc.services.iter().any(|s| s.name == *to) {
                        return Err(invalid(format!(
                            "wire check: `{to}` is not a service of scenario {}",
                            sc.name
                        )));
                    }
                    if !["vip", "backend"].contains(&expect.as_str()) {
                        return Err(invalid(format!(
                            "wire check: expect `vip` or `backend`, not `{expect}`"
                        )));
                    }
                }
            }
        }
        for t in &ex.tasks {
            for need in &t.needs {
                if !ex.tasks.iter().any(|o| &o.id == need) {
                    return Err(invalid(format!("task `{}` needs unknown `{need}`", t.id)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_exercise_is_valid_on_this_kernel() {
        // Reason names come from this kernel's BTF when it can be read.
        let reasons: Option<Vec<String>> = crate::kernel::btf::KernelBtf::from_sys()
            .ok()
            .and_then(|b| crate::drops::reasons::DropReasons::from_btf(&b).ok())
            .map(|r| r.iter().map(|(_, n)| n.to_owned()).collect());
        let sources = load(None).unwrap();
        assert!(sources.len() >= 7);
        for s in &sources {
            validate(s, reasons.as_deref()).unwrap();
            assert!(
                s.exercise.hints.len() >= 3,
                "{}: progressive hints",
                s.exercise.id
            );
        }
        let ids: std::collections::BTreeSet<_> = sources.iter().map(|s| &s.exercise.id).collect();
        assert_eq!(ids.len(), sources.len(), "ids are unique");
    }

    #[test]
    fn a_broken_exercise_cannot_ship() {
        let good = load(None).unwrap().remove(0);
        let mut bad = good.clone();
        bad.text = bad.text.replace("in = \"node1\"", "in = \"node9\"");
        bad.exercise = parse("bad", &bad.text).unwrap();
        assert!(
            validate(&bad, None)
                .unwrap_err()
                .to_string()
                .contains("node9")
        );
        let mut bad = good.clone();
        bad.text = bad.text.replace("{{lab}}", "{{nope}}");
        assert!(
            validate(&bad, None)
                .unwrap_err()
                .to_string()
                .contains("placeholder")
        );
        assert!(parse("x", "id = 1").is_err());
    }

    #[test]
    fn parameters_are_seeded() {
        let s = load(None)
            .unwrap()
            .into_iter()
            .find(|s| !s.exercise.params.is_empty())
            .unwrap();
        assert_eq!(choose(&s.exercise, "l", 3), choose(&s.exercise, "l", 3));
        let all: std::collections::BTreeSet<_> =
            (0..50).map(|seed| choose(&s.exercise, "l", seed)).collect();
        assert!(all.len() > 1, "50 seeds pick more than one variant");
    }
}
