//! `cargo xtask bench cni`: a pod sandbox made ready through CRI, as
//! kubelet asks containerd for one, with labctl as the node's CNI plugin
//! and with Debian's reference plugins (ptp + host-local, as kindnet) on
//! the same flow: two one-node kind-like clusters (see
//! `tests/common/kind.rs`), rounds interleaved; each round creates a pod
//! in each (RunPodSandbox until PodSandboxStatus has its address) and
//! removes it. Reported: the median time to ready (ms) with its interval,
//! and labctl's time as a ratio to the reference's of the same round.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly at the first surprise"
)]

mod common;
#[path = "../tests/common/kind.rs"]
mod kind;

use std::time::Instant;

use common::Spread;
use kind::{Cluster, Cni};

const ROUNDS: usize = 9;

/// Milliseconds from RunPodSandbox to an address, then removes the pod.
fn one_pod(cluster: &mut Cluster, round: usize) -> f64 {
    let t = Instant::now();
    let pod = cluster.nodes[0].run_pod("default", &format!("p{round}"));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    cluster.nodes[0].remove_pod(&pod);
    ms
}

fn main() {
    let labctl = std::env::var_os("LABCTL").expect("LABCTL: the labctl binary (cargo xtask bench)");
    let mut reference = Cluster::up("bcr", 1);
    let mut ours = Cluster::up_with(
        "bcl",
        1,
        &Cni::Labctl {
            binary: labctl.into(),
            conflist: kind::labctl_conflist,
        },
    );
    // A first pod in each: images unpacked, plugins paged in.
    one_pod(&mut reference, 100);
    one_pod(&mut ours, 100);
    let (mut r, mut l, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (a, b) = if round % 2 == 0 {
            let a = one_pod(&mut reference, round);
            (a, one_pod(&mut ours, round))
        } else {
            let b = one_pod(&mut ours, round);
            (one_pod(&mut reference, round), b)
        };
        r.push(a);
        l.push(b);
        ratio.push(b / a);
    }
    let (r, l, ratio) = (Spread::of(&r), Spread::of(&l), Spread::of(&ratio));
    println!(
        "pod sandbox ready through CRI (RunPodSandbox → address), {ROUNDS} interleaved rounds, ms"
    );
    println!("  ptp + host-local (reference)  {}", r.show(1));
    println!("  labctl-cni                    {}", l.show(1));
    let verdict = match ratio.called() {
        Some(true) => "labctl slower",
        Some(false) => "labctl faster",
        None => "within ×2: no difference called",
    };
    println!(
        "  labctl / reference            ×{}  {verdict}",
        ratio.show(2)
    );
    let mut left = reference.down();
    left.extend(ours.down());
    assert!(left.is_empty(), "teardown left: {left:#?}");
}
