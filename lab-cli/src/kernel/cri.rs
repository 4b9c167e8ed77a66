//! The node's container runtime, over the Kubernetes CRI (gRPC on a unix
//! socket): which pod sandbox owns which network namespace and address.
//!
//! A kind node (any containerd node) names its pods' namespaces
//! `cni-UUID`; only the runtime knows that `cni-3f2a…` is `default/web`.
//! `ListPodSandbox` gives each sandbox's metadata (name, namespace, uid) and
//! state; `PodSandboxStatus` gives its addresses, and with `verbose` an
//! `info` JSON whose runtime spec names the sandbox's network namespace
//! (containerd, CRI-O) — that path's inode is what drop events carry.
//!
//! Sandboxes are cached by id for the life of the process: a rescan asks
//! the runtime for the list (one call) and for the status only of sandboxes
//! it has not seen, so names follow pods as they come and go without a
//! status call per pod per rescan. A whole rescan is bounded by [`TIMEOUT`]
//! (the statuses it got are kept for the next one); callers ask from
//! `lab::names`' background thread, never while serving.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::IpAddr,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ListPodSandboxRequest, NamespaceMode, PodSandboxState, PodSandboxStatusRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// containerd's socket: kind nodes and most containerd installs.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// A runtime that answers at all answers this fast on a local socket: each
/// call, and a whole [`sandboxes`] rescan.
pub const TIMEOUT: Duration = Duration::from_secs(3);

static SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Sets the socket every CRI call uses (`--cri-socket`); once, at start-up.
pub fn set_socket(path: PathBuf) {
    // A second call (tests calling the CLI twice in one process) keeps the
    // first: the option is process-wide by design.
    if SOCKET.set(path).is_err() {
        tracing::debug!("CRI socket already set");
    }
}

/// The CRI socket in use: `--cri-socket`, or containerd's.
pub fn socket() -> &'static Path {
    SOCKET.get_or_init(|| PathBuf::from(DEFAULT_SOCKET))
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(
        "no container runtime socket at {0} (labctl names Kubernetes pods through the node's CRI; point --cri-socket at it)"
    )]
    NoSocket(PathBuf),
    #[error("{0} is not a socket: pass the container runtime's CRI socket with --cri-socket")]
    NotSocket(PathBuf),
    #[error("cannot connect to the container runtime at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the container runtime at {socket} refused {call}: {message}")]
    Call {
        socket: PathBuf,
        call: &'static str,
        message: String,
    },
    #[error(
        "the container runtime at {0} did not answer within {TIMEOUT:?}: is it running (`ctr version`)?"
    )]
    Timeout(PathBuf),
    #[error("cannot start the CRI client: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The runtime's own name and version (CRI `Version`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeVersion {
    pub name: String,
    pub version: String,
    pub api: String,
}

/// A pod sandbox: the pod's identity and its network namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub ready: bool,
    /// The namespace file (`/var/run/netns/cni-UUID`); None for a
    /// host-network pod, whose namespace is the node's.
    pub netns_path: Option<PathBuf>,
    pub netns_ino: Option<u64>,
    pub ips: Vec<IpAddr>,
    /// The sandbox's labels: the pod's Kubernetes labels, and those kubelet
    /// adds (`io.kubernetes.pod.name`, `.namespace`, `.uid`). A sandbox's
    /// labels never change: kubelet relabels a pod in the API server
    /// only, so labels here are those the pod was created with.
    pub labels: BTreeMap<String, String>,
}

/// Runs `f` on a private single-thread runtime in its own thread, so that
/// callers need not care whether they already are inside a tokio runtime.
fn block_on<F>(f: F) -> Result<F::Output, CriError>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
    .map_err(CriError::Runtime)
}

fn check_socket(socket: &Path) -> Result<(), CriError> {
    match std::fs::metadata(socket) {
        Err(_) => Err(CriError::NoSocket(socket.to_owned())),
        Ok(m) if !m.file_type().is_socket() => Err(CriError::NotSocket(socket.to_owned())),
        Ok(_) => Ok(()),
    }
}

/// A CRI runtime client on `socket` (async: callers that need more than
/// [`version`] and [`sandboxes`], such as the tests' kubelet stand-in).
pub async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>, CriError> {
    let path = socket.to_owned();
    // The URI is a placeholder: the connector dials the unix socket.
    let channel = Endpoint::from_static("http://[::]:0")
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|source| CriError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    Ok(RuntimeServiceClient::new(channel))
}

fn call_error(socket: &Path, call: &'static str, status: tonic::Status) -> CriError {
    if status.code() == tonic::Code::Cancelled || status.code() == tonic::Code::DeadlineExceeded {
        return CriError::Timeout(socket.to_owned());
    }
    CriError::Call {
        socket: socket.to_owned(),
        call,
        message: status.message().to_owned(),
    }
}

/// The runtime behind `socket`: name, version, CRI API version.
pub fn version(socket: &Path) -> Result<RuntimeVersion, CriError> {
    check_socket(socket)?;
    block_on(async {
        let mut client = connect(socket).await?;
        let v = client
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|e| call_error(socket, "Version", e))?
            .into_inner();
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
            api: v.runtime_api_version,
        })
    })?
}

/// Sandboxes already asked about, by id (see the module docs).
static CACHE: Mutex<Option<HashMap<String, Sandbox>>> = Mutex::new(None);

/// Every pod sandbox of the runtime behind `socket`, ready or not.
pub fn sandboxes(socket: &Path) -> Result<Vec<Sandbox>, CriError> {
    check_socket(socket)?;
    let known: HashMap<String, Sandbox> = CACHE
        .lock()
        .map(|c| c.clone().unwrap_or_default())
        .unwrap_or_default();
    let rescan = async {
        let mut client = connect(socket).await?;
        let items = client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(|e| call_error(socket, "ListPodSandbox", e))?
            .into_inner()
            .items;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let ready = item.state == PodSandboxState::SandboxReady as i32;
            if let Some(cached) = known.get(&item.id)
                && (cached.ready == ready || !ready)
            {
                // A sandbox that stopped keeps its identity; its namespace
                // is gone (containerd removes it on StopPodSandbox).
                let mut s = cached.clone();
                if !ready {
                    s.ready = false;
                    s.netns_ino = None;
                }
                out.push(s);
                continue;
            }
            let meta = item.metadata.unwrap_or_default();
            let mut sandbox = Sandbox {
                id: item.id.clone(),
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                ready,
                netns_path: None,
                netns_ino: None,
                ips: Vec::new(),
                labels: item.labels.into_iter().collect(),
            };
            if ready {
                let status = client
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: item.id,
                        verbose: true,
                    })
                    .await;
                match status {
                    Ok(resp) => apply_status(&mut sandbox, resp.into_inner()),
                    // Gone between the list and the status: skip it.
                    Err(e) if e.code() == tonic::Code::NotFound => continue,
                    Err(e) => return Err(call_error(socket, "PodSandboxStatus", e)),
                }
                // Kept at once: a rescan cut short by TIMEOUT (a node with
                // many new pods) is carried on by the next.
                if let Ok(mut cache) = CACHE.lock() {
                    cache
                        .get_or_insert_with(HashMap::new)
                        .insert(sandbox.id.clone(), sandbox.clone());
                }
            }
            out.push(sandbox);
        }
        Ok(out)
    };
    let list = block_on(async {
        tokio::time::timeout(TIMEOUT, rescan)
            .await
            .unwrap_or_else(|_| Err(CriError::Timeout(socket.to_owned())))
    })??;
    if let Ok(mut cache) = CACHE.lock() {
        *cache = Some(list.iter().map(|s| (s.id.clone(), s.clone())).collect());
    }
    Ok(list)
}

fn apply_status(sandbox: &mut Sandbox, resp: k8s_cri::v1::PodSandboxStatusResponse) {
    let Some(status) = resp.status else { return };
    let host_network = status
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == NamespaceMode::Node as i32);
    if host_network {
        // Its namespace and address are the node's: naming them after one
        // pod would mislabel everything else the node does.
        return;
    }
    if let Some(net) = status.network {
        sandbox.ips = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|p| p.ip))
            .filter_map(|ip| ip.parse().ok())
            .collect();
    }
    let info = resp.info.get("info").map(String::as_str).unwrap_or("");
    let (path, pid) = netns_from_info(info);
    let path = path.or_else(|| pid.map(|p| PathBuf::from(format!("/proc/{p}/ns/net"))));
    if let Some(path) = path {
        sandbox.netns_ino = netns_inode(&path);
        sandbox.netns_path = Some(path);
    }
}

/// The network namespace path (runtime spec) and the sandbox's pid from a
/// verbose `info` JSON (containerd: `runtimeSpec.linux.namespaces`, `pid`).
pub fn netns_from_info(info: &str) -> (Option<PathBuf>, Option<u32>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(info) else {
        return (None, None);
    };
    let path = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array())
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
        })
        .and_then(|n| n.get("path"))
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let pid = v
        .get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0);
    (path, pid)
}

/// The inode of a namespace file, if it is one (nsfs); a path the runtime
/// gave that is anything else names nothing.
fn netns_inode(path: &Path) -> Option<u64> {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let fs = nix::sys::statfs::statfs(path).ok()?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return None;
    }
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_netns_path_comes_from_containerds_runtime_spec() {
        let info = r#"{"pid":4242,"processStatus":"running","netNamespaceClosed":false,
            "runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},
            {"type":"network","path":"/var/run/netns/cni-3f2a9c1e-0000-4000-8000-1234"}]}}}"#;
        assert_eq!(
            netns_from_info(info),
            (
                Some(PathBuf::from(
                    "/var/run/netns/cni-3f2a9c1e-0000-4000-8000-1234"
                )),
                Some(4242)
            )
        );
        assert_eq!(netns_from_info("not json"), (None, None));
        assert_eq!(netns_from_info(r#"{"pid":0}"#), (None, None));
    }

    #[test]
    fn a_missing_socket_is_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let err = sandboxes(&dir.path().join("nope.sock")).unwrap_err();
        assert!(matches!(err, CriError::NoSocket(_)), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(version(&file), Err(CriError::NotSocket(_))));
    }

    #[test]
    fn a_socket_nobody_answers_on_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(listener);
        assert!(matches!(
            sandboxes(&path),
            Err(CriError::Connect { .. } | CriError::Timeout(_))
        ));
    }

    #[test]
    fn a_runtime_that_accepts_and_never_answers_is_cut_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cri.sock");
        // Connections wait in the backlog: accepted by the kernel, never
        // answered.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let asked = std::time::Instant::now();
        let err = sandboxes(&path).unwrap_err();
        let took = asked.elapsed();
        assert!(matches!(err, CriError::Timeout(_)), "{err}");
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[test]
    fn only_namespace_files_have_an_inode_here() {
        assert!(netns_inode(Path::new("/proc/self/ns/net")).is_some());
        assert_eq!(netns_inode(Path::new("/proc/self/status")), None);
    }
}
