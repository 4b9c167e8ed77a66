//! Where labctl runs: on a host, or inside a container such as a kind node
//! (whose kernel it shares with every other node and the host).

use std::{collections::BTreeSet, fs, os::unix::fs::MetadataExt as _, path::Path};

use super::netns;

/// The container labctl runs in, if it can tell: `docker`, `podman`, ...
/// (systemd's `container=` convention, or the runtimes' marker files).
pub fn container() -> Option<String> {
    container_at(Path::new("/"))
}

/// [`container`] with the file system rooted at `root` (tests).
pub fn container_at(root: &Path) -> Option<String> {
    if let Ok(env) = fs::read(root.join("proc/1/environ")) {
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"container=") {
                return Some(String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    if root.join(".dockerenv").exists() {
        return Some("docker".into());
    }
    if root.join("run/.containerenv").exists() {
        return Some("podman".into());
    }
    None
}

/// This process's cgroup v2 path (`0::PATH` in /proc/self/cgroup): `/` in
/// a node with a private cgroup namespace (kind's `--cgroupns=private`).
pub fn cgroup_path() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// This node's namespaces: its own (`host`, PID 1's) and every named one
/// (`/run/netns`: on a containerd node the pods', `cni-UUID`).
pub fn scope() -> BTreeSet<u64> {
    let mut set = BTreeSet::new();
    if let Ok(ino) = netns::host().inode() {
        set.insert(ino);
    }
    if let Ok(dir) = fs::read_dir(netns::NETNS_RUN_DIR) {
        for entry in dir.flatten() {
            if let Ok(m) = fs::metadata(entry.path()) {
                set.insert(m.ino());
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_recognised_by_their_markers() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(container_at(root.path()), None);
        fs::create_dir_all(root.path().join("proc/1")).unwrap();
        fs::write(
            root.path().join("proc/1/environ"),
            b"PATH=/usr/bin\0container=docker\0HOME=/\0",
        )
        .unwrap();
        assert_eq!(container_at(root.path()).as_deref(), Some("docker"));
        let podman = tempfile::tempdir().unwrap();
        fs::create_dir_all(podman.path().join("run")).unwrap();
        fs::write(podman.path().join("run/.containerenv"), "").unwrap();
        assert_eq!(container_at(podman.path()).as_deref(), Some("podman"));
    }

    #[test]
    fn the_scope_holds_this_namespace() {
        let own = netns::current_inode().unwrap();
        // On a host PID 1 shares our namespace, or it cannot be read and
        // `host` falls back to ours.
        if netns::host().inode().unwrap() == own {
            assert!(scope().contains(&own));
        }
    }
}
