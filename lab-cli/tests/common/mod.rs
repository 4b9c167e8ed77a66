//! Helpers shared by the privileged integration tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixtures"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use lab_cli::kernel::{netns::NetNs, rtnl};

/// What a command printed, as one line: text views fill to 80 columns, so
/// a sentence may be broken across lines (and indented) anywhere a space was.
pub fn said(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when the test may load programs; otherwise prints why it skips.
pub fn privileged(test: &str) -> bool {
    let missing = lab_cli::kernel::privilege::Privileges::current().missing();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test} needs root ({} missing); run `cargo xtask test` as root or with passwordless sudo",
        missing.join(", ")
    );
    // Under `cargo xtask test` a privileged test that cannot run fails.
    assert!(
        std::env::var_os("LABCTL_REQUIRE_PRIVILEGED").is_none(),
        "{why}"
    );
    eprintln!("skipped {why}");
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

/// `nsenter --net=NS PROGRAM`: a command in `ns`, whether it is named or
/// reached through a path (a kind pod's, inside its node).
fn in_netns(ns: &NetNs, program: &str) -> std::process::Command {
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display())).arg(program);
    c
}

/// Runs an nft script (`nft -f -`) in `ns`.
pub fn nft(ns: &NetNs, script: &str) {
    use std::io::Write as _;
    let mut child = in_netns(ns, "nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "nft in {}: {script}", ns.name());
}

/// Drops UDP to `port` on its way out of `ns`, before it has a device: an
/// OUTPUT-hook rule with a counter in an `ip` and an `ip6` table, both
/// named `labtest_out`.
pub fn drop_udp_out(ns: &NetNs, port: u16) {
    nft(
        ns,
        &format!(
            "table ip labtest_out {{ chain out {{ type filter hook output priority 0; udp dport {port} counter drop; }}; }}\n\
             table ip6 labtest_out {{ chain out {{ type filter hook output priority 0; udp dport {port} counter drop; }}; }}\n"
        ),
    );
}

/// The packets counted by the counters of nft table `family` `table` in
/// `ns`, summed (`nft -j list table`).
pub fn nft_counted(ns: &NetNs, family: &str, table: &str) -> u64 {
    let out = in_netns(ns, "nft")
        .args(["-j", "list", "table"])
        .args([family, table])
        .output()
        .expect("run nft");
    assert!(out.status.success(), "nft -j list table {family} {table}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum()
}

/// Turns IPv6 back on for `lo` in a lab member (labs are IPv4-only), so
/// that `::1` can be sent to.
pub fn enable_ipv6_on_lo(ns: &NetNs) {
    ns.run(|| lab_cli::kernel::sysctl::write(&["net", "ipv6", "conf", "lo", "disable_ipv6"], "0"))
        .expect("enter netns")
        .expect("enable IPv6 on lo");
}

/// Sends `n` UDP datagrams from inside `ns` to `to`, each of which an
/// OUTPUT rule must drop: the kernel says so to the sender (EPERM).
pub fn send_udp_dropped_out(ns: &NetNs, to: SocketAddr, n: u32) {
    let any: IpAddr = match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = ns
        .run(|| UdpSocket::bind((any, 0)))
        .expect("enter netns")
        .expect("bind");
    for i in 0..n {
        let err = socket
            .send_to(&i.to_be_bytes(), to)
            .expect_err("an OUTPUT rule drops it");
        assert_eq!(
            err.raw_os_error(),
            Some(nix::errno::Errno::EPERM as i32),
            "sending to {to}: {err}"
        );
    }
}

/// Makes `ns` answer TCP SYNs to `port` with a reset built without a
/// socket (an nft `reject with tcp reset` rule: the SYN itself is dropped,
/// on its interface), and drops that reset on its way out, before it has a
/// device; table `ip labtest_rst`, a counter on each rule.
pub fn reject_and_drop_resets(ns: &NetNs, port: u16) {
    nft(
        ns,
        &format!(
            "table ip labtest_rst {{\n\
             chain in {{ type filter hook input priority 0; tcp dport {port} counter reject with tcp reset; }}\n\
             chain out {{ type filter hook output priority 0; tcp sport {port} tcp flags rst counter drop; }}\n\
             }}\n"
        ),
    );
}

/// Sends `n` TCP SYNs from inside `ns` to 127.0.0.1:`port`, none of which is
/// answered (see [`reject_and_drop_resets`]): each connect times out and
/// its socket is closed before the first retransmission (1 s).
pub fn send_unanswered_syns(ns: &NetNs, port: u16, n: u32) {
    for _ in 0..n {
        let attempt = ns
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    std::time::Duration::from_millis(100),
                )
            })
            .expect("enter netns");
        let err = attempt.expect_err("the reset is dropped: no answer");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    }
}

/// A lab built for one test, torn down when dropped (even on panic).
pub struct TestLab(Option<lab_cli::lab::Lab>);

/// Builds `scenario` under a lab name unique to this test process.
pub fn lab(scenario: &str, tag: &str) -> TestLab {
    lab_with(scenario, tag, Default::default())
}

pub fn lab_with(scenario: &str, tag: &str, options: lab_cli::lab::plan::LabOptions) -> TestLab {
    let name = lab_name(tag);
    let lab = lab_cli::lab::Lab::up(Some(&name), scenario, options).unwrap_or_else(|e| {
        panic!(
            "lab up {scenario} as {name}: {}",
            lab_cli::output::exit::one_line(&e)
        )
    });
    TestLab(Some(lab))
}

/// `t<pid>-<tag>`: unique per test process, valid as a lab name.
pub fn lab_name(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id() % 100_000)
}

impl TestLab {
    /// Tears down now, returning the error instead of printing it.
    pub fn down(mut self) -> Result<(), lab_cli::lab::LabError> {
        match self.0.take() {
            Some(lab) => lab.down(),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for TestLab {
    type Target = lab_cli::lab::Lab;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("lab already down")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take()
            && let Err(e) = lab.down()
        {
            eprintln!(
                "tearing down the test lab: {}",
                lab_cli::output::exit::one_line(&e)
            );
        }
    }
}

/// Whether /run/netns/NAME exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new(lab_cli::kernel::netns::NETNS_RUN_DIR)
        .join(name)
        .exists()
}

/// Sends SIGINT (Ctrl-C) to a child labctl.
pub fn interrupt(child: &std::process::Child) {
    signal(child, nix::sys::signal::Signal::SIGINT);
}

pub fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Waits until `child` handles SIGINT (labctl installed its Ctrl-C
/// handler), so a signal sent now is handled, not fatal.
pub fn wait_for_signal_handler(child: &std::process::Child) {
    let status = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let caught = std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .unwrap_or(0);
        // SIGINT is signal 2: bit 1.
        if caught & (1 << 1) != 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no Ctrl-C handler");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Waits (20 s at most) until a child labctl wrote its `--ready-file`,
/// failing at once if it exits first; returns what it wrote (a URL, ...).
pub fn wait_ready(child: &mut std::process::Child, ready: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("labctl exited before it was ready: {status}");
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::read_to_string(ready)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits for `child` to exit, at most `secs` seconds.
pub fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("labctl did not exit within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
