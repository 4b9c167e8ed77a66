//! Builds the eBPF programs in `lab-ebpf` for the BPF target and puts the
//! objects in OUT_DIR, where `src/ebpf/objects.rs` embeds them.
//!
//! This works on the machine's stable toolchain: `-Z build-std=core` is
//! enabled for the nested eBPF build only, through RUSTC_BOOTSTRAP=1 (the way
//! the Linux kernel builds its Rust). A nightly toolchain can be chosen with
//! LABCTL_EBPF_TOOLCHAIN=nightly.
//!
//! It also generates Hubble's messages and Observer service from
//! `lab-cli/proto` (protoc), with the descriptor set `flows::hubble` parses
//! JSON against.

use std::{env, path::Path, process::Command};

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LABCTL_EBPF_TOOLCHAIN");
    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("lab-cli has no parent directory"))?;
    let ebpf_dir = root.join("lab-ebpf");
    // aya-build watches lab-ebpf; lab-common is compiled into the objects too.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("lab-common").display()
    );

    embed_exercises(root)?;
    compile_hubble(Path::new(&manifest_dir))?;

    let toolchain = env::var("LABCTL_EBPF_TOOLCHAIN")
        .or_else(|_| env::var("RUSTUP_TOOLCHAIN"))
        .unwrap_or_else(|_| "stable".to_owned());
    check_bpf_linker()?;
    if !toolchain.starts_with("nightly") {
        // SAFETY: build scripts are single-threaded here; the variable is read
        // by aya-build and inherited by the nested `cargo build` only.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    }

    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("the lab-ebpf path is not UTF-8"))?;
    aya_build::build_ebpf(
        [Package {
            name: "lab-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .context(
        "building the eBPF programs in lab-ebpf failed (run scripts/setup.sh if a tool is missing)",
    )
}

/// Every `exercises/*.toml`, embedded: `src/exercises/catalog.rs` includes
/// the generated list, so a new exercise is one new file.
fn embed_exercises(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("exercises");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    let mut code = String::from("pub const EXERCISES: &[(&str, &str)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{} is not a UTF-8 name", path.display()))?;
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&env::var("OUT_DIR")?).join("exercises.rs");
    std::fs::write(&out, code).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Hubble's flow, relay and observer protos: prost messages, the tonic
/// client and server, and `hubble.bin`, their descriptor set (with the
/// google/protobuf types they import).
fn compile_hubble(manifest_dir: &Path) -> anyhow::Result<()> {
    let proto = manifest_dir.join("proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let out = Path::new(&env::var("OUT_DIR")?).join("hubble.bin");
    let files = [
        "flow/flow.proto",
        "relay/relay.proto",
        "observer/observer.proto",
    ]
    .map(|f| proto.join(f));
    // Type names (prost::Name) let the codec find each message's
    // descriptor and refuse fields the schema does not know.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::flows::hubble::codec::StrictCodec")
        .file_descriptor_set_path(&out)
        .compile_with_config(config, &files, std::slice::from_ref(&proto))
        .context("compiling Hubble's protos in lab-cli/proto failed (protoc and libprotobuf-dev come from scripts/setup.sh)")
}

/// bpf-linker must exist and its LLVM must be at least as new as rustc's:
/// it reads the bitcode rustc emits, and older LLVMs reject newer bitcode.
fn check_bpf_linker() -> anyhow::Result<()> {
    let fix = "install it with scripts/setup.sh (cargo install bpf-linker --version 0.13.0 \
               --no-default-features --features llvm-22, with LLVM_PREFIX=/usr/lib/llvm-22)";
    let linker = which::which("bpf-linker")
        .map_err(|_| anyhow!("bpf-linker was not found in PATH: {fix}"))?;
    println!("cargo:rerun-if-changed={}", linker.display());
    let Some(rustc_llvm) = rustc_llvm_major()? else {
        return Ok(());
    };
    // bpf-linker links libLLVM dynamically (llvm-NN feature): ldd names it.
    let Ok(ldd) = Command::new("ldd").arg(&linker).output() else {
        return Ok(());
    };
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let Some(linker_llvm) = ldd
        .split_whitespace()
        .find_map(|word| word.strip_prefix("libLLVM.so."))
        .or_else(|| {
            ldd.split_whitespace()
                .find_map(|w| w.strip_prefix("libLLVM-"))
        })
        .and_then(|v| v.split(['.', '-']).next())
        .and_then(|v| v.parse::<u32>().ok())
    else {
        println!(
            "cargo:warning=could not tell which LLVM bpf-linker uses; assuming it is >= {rustc_llvm}"
        );
        return Ok(());
    };
    if linker_llvm < rustc_llvm {
        bail!(
            "bpf-linker uses LLVM {linker_llvm} but rustc emits LLVM {rustc_llvm} bitcode: \
             rebuild bpf-linker against LLVM >= {rustc_llvm} ({fix})"
        );
    }
    Ok(())
}

fn rustc_llvm_major() -> anyhow::Result<Option<u32>> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok()))
}
