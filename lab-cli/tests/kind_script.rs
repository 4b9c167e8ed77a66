//! `scripts/kind.sh --cni` run against stand-ins for docker, kind, kubectl
//! and cargo (no container engine or registry here): the kind config it
//! creates the cluster with, the plugin and the conflist it installs on
//! every node (read back by labctl's own CNI config parser), and the routes
//! between nodes' pod CIDRs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first surprise"
)]

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

/// Writes an executable shell script `name` in `dir`.
fn shim(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    fs::write(
        &path,
        format!("#!/bin/sh\nset -eu\necho \"{name} $*\" >> \"$SHIMS/calls\"\n{body}\n"),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn kind_sh_cni_installs_labctl_as_the_plugin_on_every_node() {
    let d = tempfile::tempdir().unwrap();
    let shims = d.path();
    fs::write(shims.join("labctl-static"), "").unwrap();
    shim(
        shims,
        "kind",
        r#"case "$1 $2" in
  "get clusters") ;;
  "get nodes") printf 'lab-control-plane\nlab-worker\n' ;;
  "create cluster") cp "$6" "$SHIMS/kind-config.yaml" ;;
esac"#,
    );
    shim(shims, "cargo", r#"echo "$SHIMS/labctl-static""#);
    shim(
        shims,
        "kubectl",
        r#"case "$5" in
  lab-control-plane) echo 10.244.0.0/24 ;;
  lab-worker) echo 10.244.1.0/24 ;;
esac"#,
    );
    shim(
        shims,
        "docker",
        r#"case "$1" in
  exec) if [ "$2" = "-i" ]; then cat > "$SHIMS/$3.conflist"; fi ;;
  inspect) case "$4" in lab-control-plane) echo 172.18.0.2 ;; *) echo 172.18.0.3 ;; esac ;;
esac"#,
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kind.sh");
    let out = Command::new("sh")
        .arg(&script)
        .args(["--cni", "lab"])
        .env("SHIMS", shims)
        .env(
            "PATH",
            format!("{}:{}", shims.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kind.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The cluster, made without kindnet.
    let config = fs::read_to_string(shims.join("kind-config.yaml")).unwrap();
    assert!(config.contains("disableDefaultCNI: true"), "{config}");
    assert!(config.contains("podSubnet: 10.244.0.0/16"), "{config}");

    let calls = fs::read_to_string(shims.join("calls")).unwrap();
    for (node, cidr, other_cidr, other_addr) in [
        (
            "lab-control-plane",
            "10.244.0.0/24",
            "10.244.1.0/24",
            "172.18.0.3",
        ),
        ("lab-worker", "10.244.1.0/24", "10.244.0.0/24", "172.18.0.2"),
    ] {
        assert!(
            calls.contains(&format!(
                "docker cp {}/labctl-static {node}:/usr/local/bin/labctl",
                shims.display()
            )),
            "{calls}"
        );
        assert!(
            calls.contains(&format!(
                "docker exec {node} ln -sf /usr/local/bin/labctl /opt/cni/bin/labctl-cni"
            )),
            "{calls}"
        );
        assert!(
            calls.contains(&format!(
                "docker exec {node} ip route replace {other_cidr} via {other_addr}"
            )),
            "{calls}"
        );
        // The conflist, as containerd hands its first plugin to labctl:
        // the plugin entry with the list's name and version.
        let list: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(shims.join(format!("{node}.conflist"))).unwrap(),
        )
        .unwrap();
        assert_eq!(list["plugins"][0]["type"], "labctl-cni");
        let mut conf = list["plugins"][0].clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        let conf = lab_cli::cni::spec::parse(&conf).unwrap();
        let net = lab_cli::cni::spec::network(&conf).unwrap();
        assert_eq!(net.range.subnet.to_string(), cidr);
        assert_eq!(net.cluster.to_string(), "10.244.0.0/16");
        lab_cli::cni::spec::check_version(&net.version).unwrap();
    }
}
