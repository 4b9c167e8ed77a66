//! `labctl explain REASON`.

use std::io::Write as _;

use anyhow::bail;

use crate::{
    drops::{explain, reasons::DropReasons},
    kernel::btf::KernelBtf,
    output::{drops::write_explanation, exit::Outcome},
};

pub fn run(reason: Option<&str>, list: bool) -> anyhow::Result<Outcome> {
    let mut out = anstream::stdout().lock();
    // Names and codes come from this kernel; explanations work without BTF.
    let reasons = KernelBtf::from_sys()
        .ok()
        .and_then(|b| DropReasons::from_btf(&b).ok());
    if list {
        match &reasons {
            Some(r) => {
                for (code, name) in r.iter() {
                    let mark = if explain::lookup(name).is_some() {
                        "explained"
                    } else {
                        ""
                    };
                    writeln!(out, "{code:>5}  {name:<32} {mark}")?;
                }
            }
            None => {
                for e in explain::all() {
                    writeln!(out, "{}", e.reason)?;
                }
            }
        }
        return Ok(Outcome::Success);
    }
    let Some(reason) = reason else {
        bail!("name a reason, e.g. `labctl explain NO_SOCKET`, or use --list");
    };
    let code = reasons.as_ref().and_then(|r| r.value(reason));
    let name = code
        .and_then(|c| reasons.as_ref().map(|r| r.name(c)))
        .or_else(|| explain::lookup(reason).map(|e| e.reason.to_owned()));
    let Some(name) = name else {
        bail!("`{reason}` is not a drop reason on this kernel; `labctl explain --list` shows them");
    };
    match code {
        Some(c) => writeln!(out, "{name} (code {c} on this kernel)")?,
        None => writeln!(out, "{name} (not defined by this kernel)")?,
    }
    write_explanation(&mut out, &name, "  ")?;
    Ok(Outcome::Success)
}
