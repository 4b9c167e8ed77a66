//! A view scoped to one namespace, pod or lab (`trace --netns LAB/pod-a`,
//! `observe --lab LAB`, `conntrack watch --netns ...`) stops when what it
//! watches goes away (`lab down`, a pod deleted), saying so, instead of
//! running on silently: these are the checks it stops with (see
//! `kernel::interrupt::Gone`).

use std::collections::HashMap;

use crate::kernel::{
    interrupt::Gone,
    netns::{NetNs, NetnsError},
};

use super::{Lab, names};

/// The lab of every recorded lab namespace, by inode.
pub fn labs_by_netns() -> HashMap<u64, String> {
    Lab::all()
        .unwrap_or_default()
        .iter()
        .flat_map(|lab| {
            lab.state
                .namespaces
                .iter()
                .filter(|r| r.inode != 0)
                .map(|r| (r.inode, lab.name().to_owned()))
        })
        .collect()
}

/// The lab and member a namespace belongs to, from the labs' records.
pub fn member_of(ino: u64) -> Option<(String, Option<String>)> {
    let labs = Lab::all().ok()?;
    labs.iter().find_map(|lab| {
        let record = lab.state.namespaces.iter().find(|r| r.inode == ino)?;
        let member = lab
            .plan
            .members()
            .find(|(_, _, netns)| *netns == record.name)
            .map(|(m, _, _)| m.to_owned());
        Some((lab.name().to_owned(), member))
    })
}

/// What `ns` is, in a sentence's words: a lab member `LAB/pod-a`, else
/// `what` (`pod NS/NAME`, `namespace NAME`).
fn described(ino: u64, what: &str) -> (Option<String>, String) {
    match member_of(ino) {
        Some((lab, Some(member))) => {
            let shown = format!("`{}`", names::display(&lab, &member));
            (Some(lab), shown)
        }
        Some((lab, None)) => (Some(lab), what.to_owned()),
        None => (None, what.to_owned()),
    }
}

/// Gone once `ns` is: its name leads nowhere, or to another namespace (its
/// lab taken down, and maybe up again). `what` names it for the sentence
/// when it is not a lab's (`pod default/web`, `namespace blue`).
pub fn netns(ns: &NetNs, what: &str) -> Result<Gone, NetnsError> {
    let ino = ns.inode()?;
    let (lab, shown) = described(ino, what);
    let sentence = match lab {
        Some(lab) => format!("lab `{lab}` was taken down: {shown} is gone"),
        None => format!("{shown} is gone: its network namespace was deleted"),
    };
    let now = NetNs::at(ns.name(), ns.path());
    Ok(Gone::new(move || {
        (now.inode().ok() != Some(ino)).then(|| sentence.clone())
    }))
}

/// Gone once every one of the namespaces `all` (with what they are) is;
/// `lab`: they are that lab's, and the sentence says it was taken down.
pub fn every_netns(all: &[(NetNs, String)], lab: Option<&str>) -> Result<Gone, NetnsError> {
    let each = all
        .iter()
        .map(|(ns, what)| netns(ns, what))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = all.iter().map(|(_, what)| what.clone()).collect();
    let sentence = match lab {
        Some(lab) => format!("lab `{lab}` was taken down: its namespaces are gone"),
        None if names.len() == 1 => {
            format!("{} is gone: its network namespace was deleted", names[0])
        }
        None => format!(
            "the namespaces watched are gone ({}): deleted, or their lab taken down",
            names.join(", ")
        ),
    };
    Ok(Gone::all(each, move || sentence.clone()))
}

/// Gone once lab `lab` is (its record removed by `lab down`).
pub fn lab(lab: &str) -> Gone {
    let lab = lab.to_owned();
    Gone::new(move || {
        matches!(super::state::LabState::load(&lab), Ok(None))
            .then(|| format!("lab `{lab}` was taken down"))
    })
}
