//! Privileged: the drop counter program, loaded and attached for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use lab_cli::{demo::counter as drop_demo, drops::counter::DropCounter, kernel::netns};

/// Counts for one netns, by reason name, once `expected` are in (or 3 s).
fn counts_for(counter: &DropCounter, ino: u64, expected: u64) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let counts: Vec<(String, u64)> = counter
            .counts()
            .unwrap()
            .into_iter()
            .filter(|(k, _)| u64::from(k.netns_ino) == ino)
            .map(|(k, n)| (counter.reasons().name(k.reason), n))
            .collect();
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        if total >= expected || Instant::now() > deadline {
            return counts;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn demo_counts_exactly_n_no_socket_drops_and_cleans_up() {
    if !common::privileged("demo_counts_exactly_n_no_socket_drops_and_cleans_up") {
        return;
    }
    let name = netns::unique_name("labtest-demo");
    let outcome = drop_demo::run(&name, 1000).unwrap();
    assert_eq!(outcome.sent, 1000);
    assert_eq!(
        outcome.count("NO_SOCKET"),
        1000,
        "by reason: {:?}",
        outcome.by_reason
    );
    assert_eq!(outcome.by_reason.values().sum::<u64>(), 1000);
    assert!(!Path::new(netns::NETNS_RUN_DIR).join(&name).exists());
}

#[test]
fn counter_filtered_to_one_netns_ignores_the_others() {
    if !common::privileged("counter_filtered_to_one_netns_ignores_the_others") {
        return;
    }
    let a = common::netns("labtest-a");
    let b = common::netns("labtest-b");
    let ino_a = a.inode().unwrap();
    let ino_b = b.inode().unwrap();
    let only_a = DropCounter::attach(Some(ino_a as u32)).unwrap();
    let all = DropCounter::attach(None).unwrap();

    common::send_udp(&b, 9, 70);
    common::send_udp(&a, 9, 30);

    assert_eq!(
        counts_for(&only_a, ino_a, 30),
        vec![("NO_SOCKET".to_owned(), 30)]
    );
    assert_eq!(counts_for(&only_a, ino_b, 0), vec![]);
    assert_eq!(
        counts_for(&all, ino_a, 30),
        vec![("NO_SOCKET".to_owned(), 30)]
    );
    assert_eq!(
        counts_for(&all, ino_b, 70),
        vec![("NO_SOCKET".to_owned(), 70)]
    );
}

#[test]
fn a_listening_socket_means_no_drop() {
    if !common::privileged("a_listening_socket_means_no_drop") {
        return;
    }
    let ns = common::netns("labtest-open");
    let ino = ns.inode().unwrap();
    let server = ns
        .run(|| std::net::UdpSocket::bind("127.0.0.1:7777"))
        .unwrap()
        .unwrap();
    let counter = DropCounter::attach(Some(ino as u32)).unwrap();
    common::send_udp(&ns, 7777, 10);
    let mut buf = [0u8; 16];
    for _ in 0..10 {
        server.recv(&mut buf).unwrap();
    }
    common::send_udp(&ns, 7778, 5);
    assert_eq!(
        counts_for(&counter, ino, 5),
        vec![("NO_SOCKET".to_owned(), 5)]
    );
}

#[test]
fn a_namespace_is_removed_when_its_owner_panics() {
    if !common::privileged("a_namespace_is_removed_when_its_owner_panics") {
        return;
    }
    let name = netns::unique_name("labtest-panic");
    let path = Path::new(netns::NETNS_RUN_DIR).join(&name);
    let result = std::panic::catch_unwind(|| {
        let _ns = netns::NetNs::create(&name).unwrap();
        assert!(path.exists());
        panic!("boom");
    });
    assert!(result.is_err());
    assert!(!path.exists(), "{} left behind", path.display());
}

/// Drops on the way out have no device yet: the counter counts them in
/// their namespace (by their socket: UDP over IPv4 and IPv6; by their
/// route's device: the resets a reject rule sends), and its in-kernel
/// netns filter keeps them, exactly as nft counted.
#[test]
fn local_out_drops_count_in_their_namespace() {
    if !common::privileged("local_out_drops_count_in_their_namespace") {
        return;
    }
    use std::net::{Ipv4Addr, Ipv6Addr};
    let ns = common::netns("labtest-out");
    let other = common::netns("labtest-out2");
    let ino = ns.inode().unwrap();
    for n in [&ns, &other] {
        common::drop_udp_out(n, 5001);
    }
    common::reject_and_drop_resets(&ns, 81);
    let counter = DropCounter::attach(Some(ino as u32)).unwrap();
    common::send_udp_dropped_out(&other, (Ipv4Addr::LOCALHOST, 5001).into(), 9);
    common::send_udp_dropped_out(&ns, (Ipv4Addr::LOCALHOST, 5001).into(), 7);
    common::send_udp_dropped_out(&ns, (Ipv6Addr::LOCALHOST, 5001).into(), 4);
    // Each SYN is dropped by the reject rule (on lo), its reset on the way
    // out (no socket, no device).
    common::send_unanswered_syns(&ns, 81, 3);
    let nft = common::nft_counted(&ns, "ip", "labtest_out")
        + common::nft_counted(&ns, "ip6", "labtest_out")
        + common::nft_counted(&ns, "ip", "labtest_rst");
    assert_eq!(nft, 7 + 4 + 3 + 3);
    assert_eq!(
        counts_for(&counter, ino, nft),
        vec![("NETFILTER_DROP".to_owned(), nft)]
    );
    assert_eq!(counts_for(&counter, other.inode().unwrap(), 0), vec![]);
}
