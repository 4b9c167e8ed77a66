//! `labctl explain REASON`.

use std::io::Write as _;

use anyhow::bail;

use crate::{
    drops::{
        explain,
        reasons::{DropReasons, PolicyDrop, policy_reason},
    },
    kernel::btf::KernelBtf,
    output::{
        OutputFormat,
        drops::write_explanation,
        exit::{Outcome, UsageError},
        width,
    },
};

/// A policy datapath's reason: Cilium's name and number.
fn policy(
    p: PolicyDrop,
    output: OutputFormat,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Outcome> {
    let e = explain::lookup(p.name());
    if output == OutputFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "reason": p.name(),
                "code": p.code(),
                "meaning": e.map(|e| e.meaning),
                "causes": e.map(|e| e.causes),
                "commands": e.map(|e| e.commands),
            })
        )?;
        return Ok(Outcome::Success);
    }
    writeln!(
        out,
        "{} (Cilium's code {}, read from the packet's mark)",
        p.name(),
        p.code()
    )?;
    write_explanation(out, p.name(), "  ")?;
    Ok(Outcome::Success)
}

pub fn run(reason: Option<&str>, list: bool, output: OutputFormat) -> anyhow::Result<Outcome> {
    let mut out = anstream::stdout().lock();
    // Names and codes come from this kernel; explanations work without BTF.
    let reasons = KernelBtf::from_sys()
        .ok()
        .and_then(|b| DropReasons::from_btf(&b).ok());
    if list {
        let mut rows: Vec<(Option<u32>, String)> = match &reasons {
            Some(r) => r.iter().map(|(c, n)| (Some(c), n.to_owned())).collect(),
            None => explain::all()
                .iter()
                .filter(|e| policy_reason(e.reason).is_none())
                .map(|e| (None, e.reason.to_owned()))
                .collect(),
        };
        // A policy datapath's reasons (read from the packet's mark), with
        // Cilium's numbers: they are not the kernel's.
        rows.extend(
            [false, true]
                .map(|deny| PolicyDrop {
                    egress: false,
                    deny,
                })
                .map(|p| (Some(p.code()), p.name().to_owned())),
        );
        for (code, name) in rows {
            let explained = explain::lookup(&name).is_some();
            match output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"code": code, "name": name, "explained": explained})
                )?,
                OutputFormat::Text => writeln!(out, "{}", list_line(code, &name, explained))?,
            }
        }
        return Ok(Outcome::Success);
    }
    let Some(reason) = reason else {
        bail!(UsageError(
            "name a reason, e.g. `labctl explain NO_SOCKET`, or use --list".into()
        ));
    };
    if let Some(deny) = policy_reason(reason) {
        return policy(
            PolicyDrop {
                egress: false,
                deny,
            },
            output,
            &mut out,
        );
    }
    let code = reasons.as_ref().and_then(|r| r.value(reason));
    let name = code
        .and_then(|c| reasons.as_ref().map(|r| r.name(c)))
        .or_else(|| explain::lookup(reason).map(|e| e.reason.to_owned()));
    let Some(name) = name else {
        bail!(UsageError(format!(
            "`{reason}` is not a drop reason on this kernel; `labctl explain --list` shows them"
        )));
    };
    if output == OutputFormat::Json {
        let e = explain::lookup(&name);
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "reason": name,
                "code": code,
                "meaning": e.map(|e| e.meaning),
                "causes": e.map(|e| e.causes),
                "commands": e.map(|e| e.commands),
            })
        )?;
        return Ok(Outcome::Success);
    }
    match code {
        Some(c) => writeln!(out, "{name} (code {c} on this kernel)")?,
        None => writeln!(out, "{name} (not defined by this kernel)")?,
    }
    write_explanation(&mut out, &name, "  ")?;
    Ok(Outcome::Success)
}

/// A line of `explain --list`: code, name, and whether it is explained.
pub(crate) fn list_line(code: Option<u32>, name: &str, explained: bool) -> String {
    let line = format!(
        "{:>5}  {} {}",
        code.map(|c| c.to_string()).unwrap_or_default(),
        width::pad(&width::elide(name, 62), 32),
        if explained { "explained" } else { "" }
    );
    line.trim_end().to_owned()
}
