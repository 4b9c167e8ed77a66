//! `labctl demo --counter`, the first demo of a real program: count the drops of UDP datagrams sent
//! to a closed port inside a throwaway network namespace.
//!
//! Traffic stays on the loopback interface of a namespace created for the
//! run, which is deleted afterwards (also on error and panic).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    drops::counter::DropCounter,
    kernel::{interrupt::Stop, netns::NetNs, rtnl},
};

/// The port the datagrams go to: nothing listens on it in a fresh netns.
pub const CLOSED_PORT: u16 = 9;

/// What one demo run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOutcome {
    pub netns: String,
    pub netns_ino: u64,
    pub sent: u32,
    /// Drops counted in the demo's netns, by reason name.
    pub by_reason: BTreeMap<String, u64>,
}

impl DemoOutcome {
    pub fn count(&self, reason: &str) -> u64 {
        self.by_reason.get(reason).copied().unwrap_or(0)
    }
}

/// Creates namespace `netns_name`, attaches the drop counter to it, sends
/// `count` datagrams to a closed port, and returns what the counter saw.
pub fn run(netns_name: &str, count: u32) -> anyhow::Result<DemoOutcome> {
    let ns = NetNs::create(netns_name)?;
    let outcome = run_in(&ns, count);
    let deleted = ns.delete().context("deleting the demo network namespace");
    let outcome = outcome?;
    deleted?;
    Ok(outcome)
}

fn run_in(ns: &NetNs, count: u32) -> anyhow::Result<DemoOutcome> {
    let netns_ino = ns.inode()?;
    let socket = ns.run(|| -> anyhow::Result<UdpSocket> {
        rtnl::Rtnl::current()
            .and_then(|r| r.set_up("lo"))
            .context("setting lo up in the demo namespace")?;
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP socket")
    })??;
    let counter =
        DropCounter::attach(Some(netns_ino as u32)).context("attaching the drop counter")?;
    let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, CLOSED_PORT);
    for i in 0..count {
        socket
            .send_to(&i.to_be_bytes(), target)
            .with_context(|| format!("sending datagram {i} to {target}"))?;
    }
    let counts = wait_for_counts(&counter, u64::from(count))?;
    let by_reason = counts
        .into_iter()
        .map(|(key, n)| (counter.name(&key), n))
        .fold(BTreeMap::new(), |mut acc, (name, n)| {
            *acc.entry(name).or_insert(0) += n;
            acc
        });
    Ok(DemoOutcome {
        netns: ns.name().to_owned(),
        netns_ino,
        sent: count,
        by_reason,
    })
}

/// Polls until `expected` drops are counted or the count stops moving.
fn wait_for_counts(
    counter: &DropCounter,
    expected: u64,
) -> anyhow::Result<BTreeMap<lab_common::DropCountKey, u64>> {
    // At most 3 s once the count stops moving; Ctrl-C ends it (the
    // caller reports the interruption).
    let stop = Stop::new().duration(Some(Duration::from_secs(3)));
    let mut last_total = u64::MAX;
    loop {
        let counts = counter.counts()?;
        let total: u64 = counts.values().sum();
        if total >= expected || (total == last_total && stop.stopped()) {
            return Ok(counts);
        }
        last_total = total;
        stop.wait(Duration::from_millis(50));
    }
}
