//! Names for what events carry as numbers: network namespace inodes and
//! interface indexes (which are only unique within their namespace).

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::kernel::netns::{NETNS_RUN_DIR, NetNs};

/// Where a namespace can be entered, and what to call it.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    path: PathBuf,
}

/// How long a looked-up name is trusted. Labs delete and recreate
/// namespaces and links all the time, and the kernel reuses both netns
/// inodes and ifindexes, so a name cached forever would turn wrong.
const NAME_TTL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Names {
    netns: HashMap<u64, Known>,
    scanned: Instant,
    ifnames: HashMap<(u64, u32), (Option<String>, Instant)>,
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    pub fn new() -> Self {
        let mut n = Self {
            netns: HashMap::new(),
            scanned: Instant::now(),
            ifnames: HashMap::new(),
        };
        n.rescan();
        n
    }

    /// Named namespaces (`ip netns`), then the host's, then any process's.
    fn rescan(&mut self) {
        self.netns.clear();
        self.scanned = Instant::now();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let path = entry.path().join("ns/net");
                if let Ok(m) = fs::metadata(&path) {
                    self.netns.entry(m.ino()).or_insert(Known {
                        name: format!("pid:{pid}"),
                        path,
                    });
                }
            }
        }
        if let Ok(m) = fs::metadata("/proc/1/ns/net") {
            self.netns.insert(
                m.ino(),
                Known {
                    name: "host".into(),
                    path: "/proc/1/ns/net".into(),
                },
            );
        }
        if let Ok(dir) = fs::read_dir(NETNS_RUN_DIR) {
            for entry in dir.flatten() {
                if let Ok(m) = fs::metadata(entry.path()) {
                    self.netns.insert(
                        m.ino(),
                        Known {
                            name: entry.file_name().to_string_lossy().into_owned(),
                            path: entry.path(),
                        },
                    );
                }
            }
        }
    }

    /// `ip netns` name, `host`, `pid:N`, or the inode number.
    pub fn netns(&mut self, ino: u64) -> String {
        if ino == 0 {
            return "?".into();
        }
        if !self.netns.contains_key(&ino) || self.scanned.elapsed() > NAME_TTL {
            self.rescan();
        }
        self.netns
            .get(&ino)
            .map(|k| k.name.clone())
            .unwrap_or_else(|| ino.to_string())
    }

    /// The interface's name inside its namespace, when it can be found.
    pub fn ifname(&mut self, netns_ino: u64, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        if let Some((cached, at)) = self.ifnames.get(&(netns_ino, ifindex))
            && at.elapsed() <= NAME_TTL
        {
            return cached.clone();
        }
        self.netns(netns_ino);
        let name = self.netns.get(&netns_ino).and_then(|k| {
            let ns = NetNs::at(&k.name, &k.path);
            ns.run(|| index_to_name(ifindex)).ok().flatten()
        });
        self.ifnames
            .insert((netns_ino, ifindex), (name.clone(), Instant::now()));
        name
    }
}

/// if_indextoname(3) in the calling thread's namespace.
pub fn index_to_name(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
}
