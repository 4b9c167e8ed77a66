//! What every datapath shares, whichever axis it implements (the services'
//! `--kube-proxy` modes; network policy next): a [`Plan`] of what a sync
//! changes, in the mode's own units (nft or iptables-restore lines, eBPF
//! map entries), made apart from writing it, so a command can print it, or
//! print it and write nothing (`--dry-run`); writing a plan part by part
//! ([`Plan::apply`]), with [`ApplyError`] naming the part that failed and
//! those written before it; and [`ToolRun`], the write of the netfilter
//! modes (one tool transaction in a node's namespace).
//!
//! Each axis is a trait of its own (`services::ServiceDatapath`), one
//! implementation per mode, built from the mode in one place; each plans
//! into `Plan<W>`, `W` being what its applier writes.

use std::error::Error;

use serde::Serialize;
use thiserror::Error;

use super::{
    netns::NetNs,
    tool::{self, ToolError},
};

/// What one sync changes, target by target (a node, a set of pinned
/// maps), and what writing it takes (`W`).
#[derive(Debug)]
pub struct Plan<W> {
    unit: &'static str,
    parts: Vec<Part<W>>,
}

/// The changes on one target.
#[derive(Debug)]
pub struct Part<W> {
    /// Where they are written, as output names it (`lab/node1`).
    pub target: String,
    /// What changes, one line each, in the mode's own units: the lines of
    /// an `nft -f` transaction, iptables rules, eBPF map entries.
    pub lines: Vec<String>,
    /// How many changes (rules, elements, entries written or deleted):
    /// what the summary counts (a line may declare or flush a chain,
    /// which counts for nothing, or add several map elements).
    pub changes: usize,
    /// What the applier writes (a tool's input, map operations).
    pub write: W,
}

/// A plan without what writing it takes: what commands print (`-o json`
/// has it as `plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shown {
    pub unit: &'static str,
    pub changes: usize,
    pub parts: Vec<ShownPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShownPart {
    pub target: String,
    pub changes: usize,
    pub lines: Vec<String>,
}

impl<W> Plan<W> {
    /// An empty plan whose changes are counted in `unit` (plural: `nft
    /// rules and map elements`).
    pub fn new(unit: &'static str) -> Self {
        Self {
            unit,
            parts: Vec::new(),
        }
    }

    pub fn push(&mut self, part: Part<W>) {
        self.parts.push(part);
    }

    pub fn unit(&self) -> &'static str {
        self.unit
    }

    pub fn parts(&self) -> &[Part<W>] {
        &self.parts
    }

    /// The changes on every target together.
    pub fn changes(&self) -> usize {
        self.parts.iter().map(|p| p.changes).sum()
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.changes() == 0
    }

    /// Every line of every part, in order.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .flat_map(|p| p.lines.iter().map(String::as_str))
    }

    /// `4 nft rules and map elements`.
    pub fn summary(&self) -> String {
        format!("{} {}", self.changes(), self.unit)
    }

    pub fn shown(&self) -> Shown {
        Shown {
            unit: self.unit,
            changes: self.changes(),
            parts: self
                .parts
                .iter()
                .map(|p| ShownPart {
                    target: p.target.clone(),
                    changes: p.changes,
                    lines: p.lines.clone(),
                })
                .collect(),
        }
    }

    /// Writes each part in order with `write`. The first failure stops
    /// the rest and is reported with its target and the targets written
    /// before it.
    pub fn apply<E>(&self, mut write: impl FnMut(&W) -> Result<(), E>) -> Result<(), ApplyError>
    where
        E: Error + Send + Sync + 'static,
    {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                crate::kernel::interrupt::test_delay(PART_DELAY_ENV);
            }
            write(&part.write).map_err(|e| ApplyError {
                target: part.target.clone(),
                written: self.parts[..i].iter().map(|p| p.target.clone()).collect(),
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

/// Milliseconds to wait between two parts of a plan (tests that kill a
/// command between two nodes' writes only; 5 s at most, Ctrl-C ends it).
pub const PART_DELAY_ENV: &str = "LABCTL_TEST_PART_DELAY_MS";

/// Writing one part of a plan failed.
#[derive(Debug, Error)]
#[error("cannot write the changes for {target}{}: {source}", written_note(.written))]
pub struct ApplyError {
    pub target: String,
    /// The targets written before it (their changes stay).
    pub written: Vec<String>,
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
}

fn written_note(written: &[String]) -> String {
    if written.is_empty() {
        String::new()
    } else {
        format!(
            " (those for {} are written; once this is fixed, run the command again: it writes only what is missing)",
            written.join(", ")
        )
    }
}

/// A netfilter tool's input, written in one transaction in a namespace
/// (`nft -f -`, `iptables-restore`).
#[derive(Debug)]
pub struct ToolRun {
    pub ns: NetNs,
    pub program: &'static str,
    pub args: &'static [&'static str],
    pub input: String,
}

impl ToolRun {
    pub fn write(&self) -> Result<(), ToolError> {
        tool::run(&self.ns, self.program, self.args, Some(&self.input)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(target: &str, lines: &[&str], changes: usize) -> Part<u8> {
        Part {
            target: target.into(),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            changes,
            write: 0,
        }
    }

    #[test]
    fn a_plan_counts_and_lists_its_parts() {
        let mut plan = Plan::new("eBPF map entries");
        assert!(plan.is_empty());
        plan.push(part("lab/node1", &["a", "b"], 2));
        plan.push(part("lab/node2", &["flush chain x"], 0));
        assert!(!plan.is_empty());
        assert_eq!(plan.summary(), "2 eBPF map entries");
        assert_eq!(
            plan.lines().collect::<Vec<_>>(),
            ["a", "b", "flush chain x"]
        );
        let shown = plan.shown();
        assert_eq!(shown.parts[1].target, "lab/node2");
        assert_eq!(
            serde_json::to_value(&shown).unwrap()["parts"][0]["lines"],
            serde_json::json!(["a", "b"])
        );
    }

    #[test]
    fn a_failed_part_names_itself_and_what_was_written() {
        let mut plan = Plan::new("nft rules and map elements");
        for n in 1..=3 {
            plan.push(part(&format!("lab/node{n}"), &["x"], 1));
        }
        let mut written = Vec::new();
        let err = plan
            .apply(|w| {
                written.push(*w);
                match written.len() {
                    2 => Err(std::io::Error::other("refused")),
                    _ => Ok(()),
                }
            })
            .unwrap_err();
        assert_eq!(written.len(), 2, "stops at the first failure");
        assert_eq!(err.target, "lab/node2");
        assert_eq!(err.written, ["lab/node1"]);
        let text = err.to_string();
        assert!(
            text.starts_with("cannot write the changes for lab/node2 (those for lab/node1")
                && text.ends_with(": refused"),
            "{text}"
        );
        assert!(plan.apply(|_| Ok::<(), std::io::Error>(())).is_ok());
    }
}
