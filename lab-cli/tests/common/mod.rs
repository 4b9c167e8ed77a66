//! Helpers shared by the privileged integration tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, UdpSocket};

use lab_cli::kernel::{netns::NetNs, rtnl};

/// True when the test may load programs; otherwise prints why it skips.
pub fn privileged(test: &str) -> bool {
    let missing = lab_cli::privilege::Privileges::current().missing();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "skipped {test}: needs root ({} missing); run `cargo xtask test` as root or with passwordless sudo",
        missing.join(", ")
    );
    false
}

/// A throwaway namespace with `lo` up; deleted when dropped, even on panic.
pub fn netns(prefix: &str) -> NetNs {
    let ns = NetNs::create(&lab_cli::kernel::netns::unique_name(prefix)).expect("create netns");
    ns.run(|| rtnl::Rtnl::current().and_then(|r| r.set_up("lo")))
        .expect("enter netns")
        .expect("set lo up");
    ns
}

/// Sends `n` UDP datagrams to 127.0.0.1:`port` from inside `ns`.
pub fn send_udp(ns: &NetNs, port: u16, n: u32) {
    let socket = ns
        .run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))
        .expect("enter netns")
        .expect("bind");
    for i in 0..n {
        socket
            .send_to(&i.to_be_bytes(), (Ipv4Addr::LOCALHOST, port))
            .expect("send");
    }
}
