//! Pods named without the CRI: from the cgroup of a process in the pod's
//! network namespace and kubelet's log directories.
//!
//! kubelet puts every pod in a cgroup that carries the pod's UID, and keeps
//! its logs in `/var/log/pods/NAMESPACE_NAME_UID`: together they name a
//! pod when the runtime's socket cannot be reached (another runtime, a
//! socket elsewhere, a runtime too old for CRI v1). Layouts understood:
//!
//! - systemd driver: `…/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b_…​.slice/cri-containerd-ID.scope`
//!   (kind: `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-podUID.slice/…`)
//! - cgroupfs driver: `…/kubepods/besteffort/podUID/ID` (Guaranteed pods
//!   have no QoS level: `…/kubepods/podUID/ID`)
//! - either seen from the host, below the node container's own cgroup
//!   (`/system.slice/docker-NODE.scope/…`): only the pod segment counts.
//!
//! No address is known this way (conntrack rows are not named by it).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// kubelet's pod log directories.
pub const POD_LOG_DIR: &str = "/var/log/pods";

/// The pod UID and container id found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    pub uid: String,
    pub container: Option<String>,
}

/// Parses one cgroup path (see the module docs); None when it is not a
/// pod's.
pub fn parse(path: &str) -> Option<PodCgroup> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (i, uid) = segments.iter().enumerate().find_map(|(i, seg)| {
        // systemd: `…-podUID.slice`, with the UID's dashes as underscores.
        if let Some(slice) = seg.strip_suffix(".slice")
            && let Some((_, uid)) = slice.rsplit_once("-pod")
            && looks_like_uid(&uid.replace('_', "-"))
            && slice.contains("kubepods")
        {
            return Some((i, uid.replace('_', "-")));
        }
        // cgroupfs: `podUID` right below `kubepods` or its QoS level.
        let uid = seg.strip_prefix("pod")?;
        let parent = segments.get(i.checked_sub(1)?)?;
        let grand = i.checked_sub(2).and_then(|g| segments.get(g));
        let under_kubepods = *parent == "kubepods"
            || (matches!(*parent, "besteffort" | "burstable") && grand == Some(&"kubepods"));
        (under_kubepods && looks_like_uid(uid)).then(|| (i, uid.to_owned()))
    })?;
    let container = segments.get(i + 1).map(|seg| {
        let id = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = ["cri-containerd-", "crio-", "docker-", "containerd-"]
            .iter()
            .find_map(|p| id.strip_prefix(p))
            .unwrap_or(id);
        id.to_owned()
    });
    Some(PodCgroup { uid, container })
}

/// A Kubernetes UID: 36 characters of hex and dashes.
fn looks_like_uid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// `NAMESPACE_NAME_UID` → (namespace, name, uid). Neither a namespace nor
/// a pod name may contain `_`, so the split is unambiguous.
pub fn parse_log_dir(name: &str) -> Option<(String, String, String)> {
    let (ns, rest) = name.split_once('_')?;
    let (pod, uid) = rest.rsplit_once('_')?;
    (!ns.is_empty() && !pod.is_empty() && looks_like_uid(uid))
        .then(|| (ns.to_owned(), pod.to_owned(), uid.to_owned()))
}

/// A pod found this way: its identity and its namespace's inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub netns_ino: u64,
    /// A handle to enter the namespace (a process's ns file).
    pub netns_path: PathBuf,
}

/// The pods whose namespaces are among `inodes`, named through the cgroup
/// of a process in each and kubelet's log directories under `log_dir`.
pub fn pods(inodes: &std::collections::BTreeSet<u64>, log_dir: &Path) -> Vec<FoundPod> {
    let mut by_uid: HashMap<String, (String, String)> = HashMap::new();
    for entry in fs::read_dir(log_dir).into_iter().flatten().flatten() {
        if let Some((ns, name, uid)) = entry.file_name().to_str().and_then(parse_log_dir) {
            by_uid.insert(uid, (ns, name));
        }
    }
    if by_uid.is_empty() {
        return Vec::new();
    }
    let mut found: HashMap<u64, FoundPod> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let ns_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let Ok(ino) = fs::metadata(&ns_path).map(|m| m.ino()) else {
            continue;
        };
        if !inodes.contains(&ino) || found.contains_key(&ino) {
            continue;
        }
        let Ok(cgroups) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let pod = cgroups
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .find_map(parse);
        if let Some(pod) = pod
            && let Some((ns, name)) = by_uid.get(&pod.uid)
        {
            found.insert(
                ino,
                FoundPod {
                    namespace: ns.clone(),
                    name: name.clone(),
                    uid: pod.uid,
                    netns_ino: ino,
                    netns_path: ns_path,
                },
            );
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    #[test]
    fn kubelets_cgroup_layouts_name_the_pod_and_container() {
        let u = UID.replace('-', "_");
        let want = |c: &str| {
            Some(PodCgroup {
                uid: UID.into(),
                container: Some(c.into()),
            })
        };
        // kind: systemd driver below cgroupRoot /kubelet.
        assert_eq!(
            parse(&format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-abc123.scope"
            )),
            want("abc123")
        );
        // systemd, Guaranteed (no QoS slice).
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod{u}.slice/crio-def456.scope"
            )),
            want("def456")
        );
        // cgroupfs, with and without QoS level.
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/789abc")),
            want("789abc")
        );
        assert_eq!(parse(&format!("/kubepods/pod{UID}/789abc")), want("789abc"));
        // Seen from the host, below the node container's cgroup.
        assert_eq!(
            parse(&format!(
                "/system.slice/docker-5f2e.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{u}.slice/cri-containerd-abc123.scope"
            )),
            want("abc123")
        );
        // The pod's own cgroup (no container below it).
        assert_eq!(
            parse(&format!("/kubepods/besteffort/pod{UID}")),
            Some(PodCgroup {
                uid: UID.into(),
                container: None
            })
        );
    }

    #[test]
    fn other_cgroups_are_not_pods() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods/besteffort",
            "/kubepods.slice/kubepods-besteffort.slice",
            // `pod` followed by something that is not a UID.
            "/kubepods/besteffort/podcast/abc",
            // A podUID not below kubepods.
            &format!("/elsewhere/pod{UID}/abc"),
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }

    #[test]
    fn log_directories_split_into_namespace_name_uid() {
        assert_eq!(
            parse_log_dir(&format!("kube-system_coredns-5d78c9869d-x2k8p_{UID}")),
            Some((
                "kube-system".into(),
                "coredns-5d78c9869d-x2k8p".into(),
                UID.into()
            ))
        );
        assert_eq!(parse_log_dir("default_web"), None);
        assert_eq!(parse_log_dir(&format!("_web_{UID}")), None);
        assert_eq!(parse_log_dir("default_web_not-a-uid"), None);
    }
}
