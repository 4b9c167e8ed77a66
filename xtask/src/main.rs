//! `cargo xtask`: setup, lint, test and demo orchestration for labctl.
//!
//! Privileged steps (the tests that load eBPF programs, the demo) run the
//! built binaries through `sudo -E` when we are not root, as aya's own
//! integration tests do; cargo itself never runs as root.

mod cmd;
mod docs;

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use cmd::{is_root, run, workspace_root};

#[derive(Parser)]
#[command(about = "labctl development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install everything a fresh machine needs (scripts/setup.sh).
    Setup {
        /// Only report what is missing.
        #[arg(long)]
        check: bool,
    },
    /// cargo fmt --check and clippy -D warnings (host crates, then lab-ebpf
    /// for its own BPF target).
    Lint,
    /// The whole test suite: setup if needed, lint, unit and privileged
    /// integration tests.
    Test {
        /// Skip the lint step.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks, printed as ratios against a baseline measured in the same run.
    Bench {
        /// What to measure: `trace`, `masq`, `conntrack`, `services`,
        /// `policy`.
        what: String,
    },
    /// The quick-start demo: setup if needed, build, `labctl doctor`, then
    /// a real program counting real drops.
    Demo,
    /// Man pages (from the clap definitions) into TARGET/man, shell
    /// completions into TARGET/completions, the command reference into
    /// docs/commands.md; then checks every relative link of the docs.
    Docs,
    /// labctl with the C library linked in statically, so it runs in any
    /// node image (what scripts/kind.sh copies into kind nodes); prints its
    /// path.
    Static {
        /// An optimized build (scripts/kind.sh); the tests use a debug one.
        #[arg(long)]
        release: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.task {
        Task::Setup { check } => setup(&root, check),
        Task::Lint => lint(&root),
        Task::Test { no_lint, args } => test(&root, no_lint, &args),
        Task::Docs => docs::docs(&root),
        Task::Demo => demo(&root),
        Task::Bench { what } => bench(&root, &what),
        Task::Static { release } => {
            println!("{}", static_labctl(&root, release)?.display());
            Ok(())
        }
    }
}

/// Builds a statically linked labctl (crt-static, for the host's target
/// triple: its own target directory, so the normal build is untouched).
fn static_labctl(root: &Path, release: bool) -> Result<std::path::PathBuf> {
    let triple = cmd::host_triple()?;
    let mut c = cmd::cargo(root);
    c.env("RUSTFLAGS", "-C target-feature=+crt-static").args([
        "build",
        "--package",
        "lab-cli",
        "--bin",
        "labctl",
        "--target",
        &triple,
    ]);
    if release {
        c.arg("--release");
    }
    run(&mut c).context("building a static labctl")?;
    let bin = cmd::target_dir(root)?
        .join(&triple)
        .join(if release { "release" } else { "debug" })
        .join("labctl");
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

fn setup(root: &Path, check: bool) -> Result<()> {
    let mut c = cmd::new(root.join("scripts/setup.sh"));
    if check {
        c.arg("--check");
    }
    run(&mut c)
}

/// Runs setup.sh only when its check says something is missing.
fn ensure_setup(root: &Path) -> Result<()> {
    let mut check = cmd::new(root.join("scripts/setup.sh"));
    check.arg("--check");
    if run(&mut check).is_err() {
        println!("xtask: installing what is missing");
        setup(root, false)?;
    }
    Ok(())
}

fn lint(root: &Path) -> Result<()> {
    run(cmd::cargo(root).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    run(cmd::cargo(root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))
        .context("clippy found problems in the host crates")?;
    // lab-ebpf is linted for the target it is built for.
    run(cmd::cargo(root).env("RUSTC_BOOTSTRAP", "1").args([
        "clippy",
        "--package",
        "lab-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems in lab-ebpf")
}

fn test(root: &Path, no_lint: bool, args: &[String]) -> Result<()> {
    ensure_setup(root)?;
    if !no_lint {
        lint(root)?;
    }
    // The kind-node test copies into its node what scripts/kind.sh copies.
    let node_bin = static_labctl(root, false)?;
    let mut c = cmd::cargo(root);
    c.args(["test", "--workspace", "--exclude", "lab-ebpf"]);
    // Privileged tests fail instead of skipping when they cannot run.
    c.env("LABCTL_REQUIRE_PRIVILEGED", "1");
    c.env("LABCTL_NODE_BIN", node_bin);
    if !is_root() {
        if cmd::sudo_works() {
            // Test binaries run as root; cargo and the build stay unprivileged.
            let triple = cmd::host_triple()?.to_uppercase().replace('-', "_");
            c.env(format!("CARGO_TARGET_{triple}_RUNNER"), "sudo -E");
        } else {
            bail!(
                "the privileged tests need root: run `cargo xtask test` as root or with passwordless sudo"
            );
        }
    }
    c.arg("--").args(args);
    let totals = cmd::run_tests(&mut c)?;
    // One plain closing line for the whole suite (cargo prints one per binary).
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    if totals.failed > 0 || !totals.success {
        bail!("tests failed");
    }
    Ok(())
}

fn demo(root: &Path) -> Result<()> {
    ensure_setup(root)?;
    run(cmd::cargo(root).args(["build", "--package", "lab-cli", "--bin", "labctl"]))?;
    let labctl = cmd::target_dir(root)?.join("debug/labctl");
    if !labctl.exists() {
        bail!("{} was not built", labctl.display());
    }
    for args in [&["doctor"][..], &["demo"][..]] {
        let mut c = cmd::privileged(&labctl);
        c.args(args);
        run(&mut c)?;
    }
    Ok(())
}

fn bench(root: &Path, what: &str) -> Result<()> {
    let example = match what {
        "trace" => "bench_trace",
        "masq" => "bench_masq",
        "conntrack" => "bench_conntrack",
        "services" => "bench_services",
        "policy" => "bench_policy",
        "cni" => "bench_cni",
        _ => {
            bail!(
                "unknown benchmark `{what}`: available: trace, masq, conntrack, services, policy, cni"
            )
        }
    };
    ensure_setup(root)?;
    run(cmd::cargo(root).args([
        "build",
        "--release",
        "--package",
        "lab-cli",
        "--bin",
        "labctl",
        "--example",
        example,
    ]))?;
    let release = cmd::target_dir(root)?.join("release");
    let mut c = cmd::privileged(&release.join("examples").join(example));
    c.env("LABCTL", release.join("labctl"));
    run(&mut c)
}
