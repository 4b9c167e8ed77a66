//! Rebuild the eBPF objects when the bpf-linker binary changes.
//!
//! Linking for the BPF target goes through the `bpf-linker` binary, a
//! dependency cargo cannot see (artifact dependencies are unstable). Keying the
//! build on the linker's path and mtime makes an upgraded linker rebuild us.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found in PATH; run scripts/setup.sh"),
    }
}
