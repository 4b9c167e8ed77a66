//! A datapath's plan as text (`svc ... --show-plan`, `--dry-run`): each
//! target's changes, counted, then its lines in the mode's own units, each
//! filled to 80 columns with its continuation indented.

use super::width;
use crate::kernel::datapath::Shown;

pub fn render(plan: &Shown) -> String {
    let mut out = String::new();
    for part in &plan.parts {
        let head = format!("{}: {} {}", part.target, part.changes, plan.unit);
        out.push_str(&width::fill(&head, "", "  "));
        out.push('\n');
        for line in &part.lines {
            out.push_str(&width::fill(line, "  ", "      "));
            out.push('\n');
        }
    }
    out
}
